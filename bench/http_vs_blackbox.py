#!/usr/bin/env python3
"""CPU cost of HTTP probing: the agent's http prober against Debian's blackbox_exporter.

Both probe the same loopback targets: ``--servers`` stdlib HTTP servers (``python -m
http.server`` in their own processes, so their CPU is charged to nobody) serving a small and a
~20 KB page each. Our side runs the real ``probes`` input (all targets of a round concurrently on
one event loop, as the runner does) in a fresh child process that imports only what the agent
imports; it is charged its own CPU time and reports its RSS. Blackbox (module ``http_2xx``, IPv4)
runs on a free loopback port and is charged the CPU time of its process (from /proc), not that
of the HTTP client asking it to probe.

    .venv/bin/python bench/http_vs_blackbox.py [--rounds 100] [--servers 5]
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procstat import free_port, proc_cpu_seconds, proc_rss_mb  # noqa: E402

REPO = Path(__file__).resolve().parent.parent








def wait_http(url: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


def agent_side(urls: list, rounds: int) -> dict:
    """Runs in the child: the real probes input over ``urls``; CPU per round and RSS."""
    sys.path.insert(0, str(REPO))
    from agent.inputs import probes
    from contract.schema import load_model

    section = load_model(probes.Config, {
        "timeout": "5s", "interval": "10s",
        "modules": {"http_2xx": {"prober": "http", "timeout": "4s", "ip_protocol": "ip4"}},
        "targets": [{"name": f"t{i}", "module": "http_2xx", "url": u} for i, u in enumerate(urls)]})
    [inp] = probes.build(section, None)

    async def run() -> float:
        for _ in range(3):  # warm up: imports, TLS context, code paths
            await inp.collect()
        t0 = time.process_time()
        for _ in range(rounds):
            samples = await inp.collect()
            failed = [s.labels["target"] for s in samples if s.name == "probe_success" and s.value != 1]
            if failed:
                raise SystemExit(f"agent probe failed for {failed}")
        return time.process_time() - t0

    cpu = asyncio.run(run())
    return {"cpu_per_round": cpu / rounds, "rss_mb": proc_rss_mb(os.getpid())}


def blackbox_side(binary: str, tmp: Path, urls: list, rounds: int) -> dict:
    cfg = tmp / "blackbox.yml"
    cfg.write_text("modules:\n  http_2xx:\n    prober: http\n    timeout: 4s\n"
                   "    http:\n      preferred_ip_protocol: ip4\n")
    port = free_port()
    log = open(tmp / "blackbox.log", "wb")
    proc = subprocess.Popen([binary, f"--config.file={cfg}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/-/healthy")

        def probe(url: str) -> None:
            q = urllib.parse.urlencode({"target": url, "module": "http_2xx"})
            body = urllib.request.urlopen(f"{base}/probe?{q}", timeout=10).read().decode()
            if "\nprobe_success 1" not in body:
                raise SystemExit(f"blackbox probe failed for {url}:\n{body}")

        with concurrent.futures.ThreadPoolExecutor(len(urls)) as pool:
            for _ in range(3):
                list(pool.map(probe, urls))
            c0 = proc_cpu_seconds(proc.pid)
            for _ in range(rounds):
                list(pool.map(probe, urls))
            cpu = proc_cpu_seconds(proc.pid) - c0
        return {"cpu_per_round": cpu / rounds, "rss_mb": proc_rss_mb(proc.pid)}
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--servers", type=int, default=5)
    ap.add_argument("--agent-side", help=argparse.SUPPRESS)  # internal: JSON list of URLs
    args = ap.parse_args()
    if args.agent_side:
        print(json.dumps(agent_side(json.loads(args.agent_side), args.rounds)))
        return 0

    binary = shutil.which("prometheus-blackbox-exporter")
    if not binary:
        print("prometheus-blackbox-exporter is not installed (apt-get install prometheus-blackbox-exporter)")
        return 1
    servers = []
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp_name:
        tmp = Path(tmp_name)
        site = tmp / "site"
        site.mkdir()
        (site / "index.html").write_text("<html><body>Dịch vụ công trực tuyến</body></html>\n", encoding="utf-8")
        (site / "big.html").write_text("<p>thủ tục hành chính</p>\n" * 700, encoding="utf-8")
        urls = []
        try:
            for _ in range(args.servers):
                port = free_port()
                servers.append(subprocess.Popen(
                    [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(site), str(port)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL))
                wait_http(f"http://127.0.0.1:{port}/")
                urls += [f"http://127.0.0.1:{port}/index.html", f"http://127.0.0.1:{port}/big.html"]
            child = subprocess.run([sys.executable, __file__, "--rounds", str(args.rounds),
                                    "--agent-side", json.dumps(urls)], capture_output=True, text=True, check=True)
            ours = json.loads(child.stdout.strip().splitlines()[-1])
            theirs = blackbox_side(binary, tmp, urls, args.rounds)
        finally:
            for s in servers:
                s.terminate()
                s.wait(10)
    n = len(urls)
    print(f"{n} loopback HTTP targets ({args.servers} servers x 2 pages), {args.rounds} rounds, after 3 warm-up rounds")
    print(f"{'':24}{'CPU s/round':>12}{'CPU ms/probe':>14}{'RSS MB':>9}")
    for label, r in (("agent (probes input)", ours), ("blackbox_exporter 0.23", theirs)):
        print(f"{label:24}{r['cpu_per_round']:12.4f}{r['cpu_per_round'] / n * 1000:14.2f}{r['rss_mb']:9.1f}")
    ratio = ours["cpu_per_round"] / theirs["cpu_per_round"] if theirs["cpu_per_round"] else float("inf")
    print(f"ratio agent / blackbox CPU: {ratio:.2f}")
    print("(agent RSS: the whole child process, interpreter + agent.inputs.probes + asyncio)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
