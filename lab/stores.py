"""Debian's Prometheus and VictoriaMetrics on free loopback ports, and instant queries."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from lab.procs import Proc, free_port, http_get, need_binary


def start_prometheus(tmp: Path, *, scrape_configs: Optional[list] = None, rule_files: Sequence[Path] = (),
                     alertmanager: Optional[str] = None, extra: Optional[dict] = None,
                     evaluation_interval: str = "1s", ooo_window: str = "7d",
                     retention: Optional[str] = None) -> "tuple[Proc, str]":
    """Debian's Prometheus on a free loopback port with the remote-write receiver on.

    ``retention`` is ``--storage.tsdb.retention.time``: Prometheus's default (15d) deletes older data
    as soon as it is compacted into blocks, so a test writing older history must raise it.
    Returns (process, base URL). The caller stops the process (or use ``prometheus`` below).
    """
    import yaml

    binary = need_binary("prometheus")
    port = free_port()
    tmp = Path(tmp)
    (tmp / "prom-data").mkdir(parents=True, exist_ok=True)
    cfg = {
        "global": {"scrape_interval": "1s", "evaluation_interval": evaluation_interval},
        "storage": {"tsdb": {"out_of_order_time_window": ooo_window}},
        "scrape_configs": scrape_configs or [],
        "rule_files": [str(p) for p in rule_files],
    }
    if alertmanager:
        cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    cfg.update(extra or {})
    cfg_path = tmp / "prometheus.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    proc = Proc([binary, f"--config.file={cfg_path}", f"--storage.tsdb.path={tmp / 'prom-data'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver",
                 "--web.enable-lifecycle", "--rules.alert.resend-delay=1s", "--log.level=warn",
                 *([f"--storage.tsdb.retention.time={retention}"] if retention else [])],
                tmp / "prometheus.log")
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_http(url + "/-/ready")
    except BaseException:
        proc.stop()
        raise
    return proc, url


def prom_query(url: str, query: str, time_s: Optional[float] = None) -> list:
    """Instant query; returns the result vector (list of {metric, value})."""
    import json
    import urllib.parse

    params = {"query": query}
    if time_s is not None:
        params["time"] = str(time_s)
    body = json.loads(http_get(f"{url}/api/v1/query?{urllib.parse.urlencode(params)}", timeout=10))
    if body.get("status") != "success":
        raise AssertionError(f"query {query!r} failed: {body}")
    return body["data"]["result"]


def start_victoria_metrics(tmp: Path) -> "tuple[Proc, str]":
    binary = need_binary("victoria-metrics")
    port = free_port()
    data = Path(tmp) / "vm-data"
    data.mkdir(parents=True, exist_ok=True)
    proc = Proc([binary, f"-storageDataPath={data}", f"-httpListenAddr=127.0.0.1:{port}",
                 "-search.latencyOffset=0s", "-search.disableCache", "-loggerLevel=WARN"],
                Path(tmp) / "vm.log")
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_http(url + "/health")
    except BaseException:
        proc.stop()
        raise
    return proc, url
