"""Real processes for the fleet bench (bench/fleet_sim.py, bench/fleet_capture.py): the stores, the
collector replicas, the balancer, vmalert, snmpsim as the fleet bench configures them, each on a
free loopback port with its own directory, always stopped (processes: :mod:`lab.procs`)."""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import yaml

from bench.procstat import proc_cpu_seconds, proc_rss_mb
from lab.procs import VENV_BIN, Proc, free_port, http_get, need_binary, wait_until

__all__ = ["Proc", "free_port", "http_get", "wait_until", "need", "proc_cpu_seconds", "proc_rss_mb"]



def need(name: str) -> str:
    """A program on PATH, or a console script of this venv (commune-collector, snmpsim)."""
    path = shutil.which(name) or (str(VENV_BIN / name) if (VENV_BIN / name).exists() else None)
    return path or need_binary(name)


def _started(proc: Proc, url: str, ready: str) -> Tuple[Proc, str]:
    try:
        proc.wait_http(url + ready)
    except BaseException:
        proc.stop()
        raise
    return proc, url


def start_victoria_metrics(tmp: Path, scrape_config: Optional[Path] = None) -> Tuple[Proc, str]:
    port = free_port()
    data = tmp / "vm-data"
    data.mkdir(parents=True, exist_ok=True)
    args = [need("victoria-metrics"), f"-storageDataPath={data}", f"-httpListenAddr=127.0.0.1:{port}",
            "-search.latencyOffset=0s", "-search.disableCache", "-loggerLevel=WARN", "-retentionPeriod=2y"]
    if scrape_config:
        args += [f"-promscrape.config={scrape_config}"]
    return _started(Proc(args, tmp / "vm.log"), f"http://127.0.0.1:{port}", "/health")


def start_prometheus(tmp: Path, rule_files: Sequence[Path] = (), scrape_configs: Optional[list] = None,
                     evaluation_interval: str = "1m", alertmanager: str = "") -> Tuple[Proc, str]:
    port = free_port()
    (tmp / "prom-data").mkdir(parents=True, exist_ok=True)
    cfg = {"global": {"scrape_interval": "15s", "evaluation_interval": evaluation_interval},
           "storage": {"tsdb": {"out_of_order_time_window": "7d"}},
           "scrape_configs": scrape_configs or [], "rule_files": [str(p) for p in rule_files]}
    if alertmanager:
        cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager.split("//", 1)[1]]}]}]}
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    args = [need("prometheus"), f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver", "--log.level=warn",
            "--storage.tsdb.retention.time=400d"]
    return _started(Proc(args, tmp / "prometheus.log"), f"http://127.0.0.1:{port}", "/-/ready")


def start_collector(tmp: Path, name: str, upstreams: Sequence[str], credentials: dict,
                    fleet_file: Optional[Path] = None, port: int = 0) -> Tuple[Proc, str]:
    """``commune-collector serve`` with signed credentials; samples up to 2 days old accepted (the
    simulator's compressed clock runs behind the wall clock)."""
    port = port or free_port()
    cfg = {"log_level": "warning", "web": {"listen_address": f"127.0.0.1:{port}"},
           "upstreams": [{"url": u, "timeout": "30s"} for u in upstreams], "upstream_check_interval": "1s",
           "state": {"dir": str(tmp / f"{name}-state")}, "credentials": credentials,
           "enrollment": {"enabled": False}, "limits": {"max_sample_age": "2d", "max_concurrent_requests": 256}}
    if fleet_file:
        cfg["fleet_file"] = str(fleet_file)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    script = VENV_BIN / "commune-collector"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "collector"]
    return _started(Proc(cmd + ["serve", "-c", str(path)], tmp / f"{name}.log"), f"http://127.0.0.1:{port}",
                    "/-/ready")


def start_haproxy(tmp: Path, replicas: Sequence[str]) -> Tuple[Proc, str]:
    """haproxy spreading writes round robin over the replicas whose /-/ready answers, retrying a
    request a dead replica refused on another (a write is idempotent), as tests/test_replicas.py."""
    port = free_port()
    servers = "\n".join(f"    server r{i} {u.split('//', 1)[1]} check inter 1s fall 2 rise 2"
                        for i, u in enumerate(replicas))
    cfg = f"""global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    option redispatch
    retries 3
    retry-on conn-failure empty-response response-timeout
frontend agents
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /-/ready
{servers}
"""
    (tmp / "haproxy.cfg").write_text(cfg)
    return _started(Proc([need("haproxy"), "-db", "-f", str(tmp / "haproxy.cfg")], tmp / "haproxy.log"),
                    f"http://127.0.0.1:{port}", "/-/ready")


def start_alertmanager(tmp: Path) -> Tuple[Proc, str]:
    """Alertmanager with one receiver that sends nothing: where both rule engines send alerts."""
    port = free_port()
    (tmp / "am-data").mkdir(parents=True, exist_ok=True)
    (tmp / "alertmanager.yml").write_text("route: {receiver: none}\nreceivers: [{name: none}]\n")
    args = [need("prometheus-alertmanager"), f"--config.file={tmp / 'alertmanager.yml'}",
            f"--storage.path={tmp / 'am-data'}", f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]
    return _started(Proc(args, tmp / "alertmanager.log"), f"http://127.0.0.1:{port}", "/-/ready")


def start_vmalert(tmp: Path, rule_files: Sequence[Path], vm: str, alertmanager: str,
                  interval: str = "1m") -> Tuple[Proc, str]:
    port = free_port()
    args = [need("vmalert"), *[f"-rule={p}" for p in rule_files], f"-datasource.url={vm}",
            f"-remoteWrite.url={vm}", f"-remoteRead.url={vm}", f"-evaluationInterval={interval}",
            f"-httpListenAddr=127.0.0.1:{port}", f"-notifier.url={alertmanager}", "-loggerLevel=WARN"]
    return _started(Proc(args, tmp / "vmalert.log"), f"http://127.0.0.1:{port}", "/health")


def start_snmpsim(tmp: Path, recordings: dict) -> Tuple[Proc, int]:
    """snmpsim serving ``{community: recording path}`` on 127.0.0.1; returns (process, UDP port)."""
    import socket

    data, cache = tmp / "snmp-data", tmp / "snmp-cache"
    data.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    for community, path in recordings.items():
        shutil.copyfile(path, data / f"{community}.snmprec")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = Proc([need("snmpsim-command-responder"), f"--data-dir={data}", f"--cache-dir={cache}",
                 f"--agent-udpv4-endpoint=127.0.0.1:{port}"], tmp / "snmpsim.log",
                env=dict(os.environ, SNMPSIM_ALLOW_ROOT="true"))
    try:
        wait_until(lambda: "Listening at UDP/IPv4 endpoint" in proc.log(), 60, what="snmpsim")
    except BaseException:
        proc.stop()
        raise
    return proc, port


def stop_all(procs: List[Proc]) -> None:
    for p in reversed(procs):
        with contextlib.suppress(Exception):
            p.stop()
