#!/usr/bin/env python3
"""Cost of host metrics: the agent (host input only) against Debian's prometheus-node-exporter.

Both run as real processes on free loopback ports and are stopped afterwards; CPU time and RSS are
read from /proc for each process (never the benchmark's own).

- Agent, per collection: the host input runs every ``--interval`` with no one scraping; the CPU
  time the agent process used over N collections (counted from the runner's own
  ``commune_agent_input_last_run_timestamp_seconds``), divided by N.
- Agent, per scrape of /metrics: M back-to-back scrapes while collections go on; the CPU of the
  collections that fell in that window is subtracted, the rest divided by M.
- node_exporter, per scrape (it collects when scraped): CPU over M scrapes, one every
  ``--interval`` like the agent's collections (idle time between them counted for both), divided
  by M, once with
  its default collectors and once with only the collectors that cover what the host input reports
  (cpu, stat, loadavg, meminfo, filesystem, diskstats, netdev, hwmon, powersupplyclass).

    .venv/bin/python bench/host_vs_node_exporter.py [--cycles 200] [--interval 0.25]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procstat import free_port, proc_cpu_seconds, proc_rss_mb  # noqa: E402

import yaml

REPO = Path(__file__).resolve().parent.parent
NODE_SAME_SCOPE = ["cpu", "stat", "loadavg", "meminfo", "filesystem", "diskstats", "netdev", "hwmon",
                   "powersupplyclass"]








def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def wait_http(url: str, proc: subprocess.Popen, what: str) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            get(url)
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not answer on {url}")


def last_run(text: str) -> float:
    key = 'commune_agent_input_last_run_timestamp_seconds{input="host"} '
    for line in text.splitlines():
        if line.startswith(key):
            return float(line[len(key):])
    return 0.0


def agent_command() -> list:
    script = Path(sys.executable).parent / "commune-agent"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent"]


def agent_config(tmp: Path, port: int, interval: float) -> Path:
    sys.path.insert(0, str(REPO))
    from agent import inputs  # the sections that exist now; all but host are switched off

    cfg = {"agent": {"state_dir": str(tmp / "state"), "interval": "1h", "log_level": "warning"},
           "web": {"listen_address": f"127.0.0.1:{port}"},
           "host": {"interval": f"{interval}s", "timeout": f"{interval}s"}}
    for name, cls in ((m.NAME, m.Config) for m in inputs.INPUTS):
        if name != "host" and "enabled" in getattr(cls, "__dataclass_fields__", {}):
            cfg[name] = {"enabled": False}
    path = tmp / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def bench_agent(cycles: int, interval: float) -> dict:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = agent_config(tmp, port, interval)
        log = open(tmp / "agent.log", "wb")
        proc = subprocess.Popen(agent_command() + ["-c", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            wait_http(url, proc, "commune-agent")
            while not last_run(get(url)):
                time.sleep(interval)
            rss_start = proc_rss_mb(proc.pid)
            time.sleep(3 * interval)  # warm-up collections (first disk info, sensors, imports)
            # collections, nobody scraping
            t0, c0 = last_run(get(url)), proc_cpu_seconds(proc.pid)
            time.sleep(cycles * interval)
            c1, t1 = proc_cpu_seconds(proc.pid), last_run(get(url))
            collections = round((t1 - t0) / interval)
            per_collection = (c1 - c0) / collections
            # scrapes while collections go on
            t2, c2 = last_run(get(url)), proc_cpu_seconds(proc.pid)
            size = 0
            for _ in range(cycles):
                size = len(get(url))
            c3, t3 = proc_cpu_seconds(proc.pid), last_run(get(url))
            during = round((t3 - t2) / interval)
            per_scrape = max(0.0, (c3 - c2) - during * per_collection) / (cycles + 1)
            return {"collections": collections, "per_collection": per_collection, "per_scrape": per_scrape,
                    "rss_start": rss_start, "rss": proc_rss_mb(proc.pid), "bytes": size}
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()


def bench_node(cycles: int, collectors: "list | None", interval: float) -> dict:
    binary = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if not binary:
        raise SystemExit("prometheus-node-exporter is not installed (apt-get install prometheus-node-exporter)")
    port = free_port()
    args = [binary, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    if collectors is not None:
        args.append("--collector.disable-defaults")
        args += [f"--collector.{c}" for c in collectors]
    with tempfile.TemporaryDirectory() as tmp:
        log = open(Path(tmp) / "node.log", "wb")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            wait_http(url, proc, "node_exporter")
            rss_start = proc_rss_mb(proc.pid)
            for _ in range(3):
                get(url)  # warm-up
            c0 = proc_cpu_seconds(proc.pid)
            size = 0
            for _ in range(cycles):  # at the agent's cadence: caches as cold as the agent's
                size = len(get(url))
                time.sleep(interval)
            per_scrape = (proc_cpu_seconds(proc.pid) - c0) / cycles
            return {"per_scrape": per_scrape, "rss_start": rss_start, "rss": proc_rss_mb(proc.pid), "bytes": size}
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cycles", type=int, default=200, help="collections and scrapes per measurement")
    p.add_argument("--interval", type=float, default=0.25, help="host input interval during the run, seconds")
    args = p.parse_args()
    agent = bench_agent(args.cycles, args.interval)
    node_same = bench_node(args.cycles, NODE_SAME_SCOPE, args.interval)
    node_full = bench_node(args.cycles, None, args.interval)
    ms = lambda s: s * 1000
    print(f"cycles: {args.cycles} (agent: {agent['collections']} collections counted, host interval {args.interval}s)")
    print(f"{'':44} {'CPU ms':>8} {'RSS MB':>7} {'(at start)':>10} {'/metrics':>9}")
    print(f"{'agent, per host collection':44} {ms(agent['per_collection']):8.2f} {agent['rss']:7.1f} "
          f"{agent['rss_start']:10.1f} {agent['bytes']:9d}")
    print(f"{'agent, per /metrics scrape (render only)':44} {ms(agent['per_scrape']):8.2f}")
    both = agent["per_collection"] + agent["per_scrape"]
    print(f"{'agent, collection + scrape':44} {ms(both):8.2f}")
    print(f"{'node_exporter, per scrape, same scope':44} {ms(node_same['per_scrape']):8.2f} {node_same['rss']:7.1f} "
          f"{node_same['rss_start']:10.1f} {node_same['bytes']:9d}")
    print(f"{'node_exporter, per scrape, default collectors':44} {ms(node_full['per_scrape']):8.2f} "
          f"{node_full['rss']:7.1f} {node_full['rss_start']:10.1f} {node_full['bytes']:9d}")
    for label, node in (("same scope", node_same), ("default collectors", node_full)):
        if node["per_scrape"] > 0:
            print(f"ratio agent collection / node_exporter scrape ({label}): "
                  f"{agent['per_collection'] / node['per_scrape']:.2f}; "
                  f"collection + scrape: {both / node['per_scrape']:.2f}; "
                  f"RSS agent / node_exporter: {agent['rss'] / node['rss']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
