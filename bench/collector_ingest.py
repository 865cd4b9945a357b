#!/usr/bin/env python3
"""Collector ingest: throughput against Prometheus' own receiver, and bytes on the wire per agent-hour.

1. Throughput. Recorded payloads (real collections of this host by the agent's host input, as
   ``--agents`` agents each sending ``--requests`` requests of two collections, stamped with
   commune/agent as the collector would) are sent, the same bytes, (a) straight to Prometheus'
   remote-write receiver and (b) to ``commune-collector serve``, which authenticates, decodes,
   checks, stamps, re-encodes and forwards them to another, fresh Prometheus. The collector is
   pinned to one core (taskset), Prometheus to the other with GOMAXPROCS=1; ``--concurrency``
   requests are in flight. Reported: samples/s each way, the ratio, and CPU seconds per 1,000
   samples of the collector and of Prometheus. Target: the collector's CPU per sample at most 1.5x
   Prometheus' receiver's on one core. Then the same with ``workers: 2`` (one worker on each core,
   the second sharing its core with Prometheus): how throughput grows with the processes.

2. Bytes per agent-hour. A real ``commune-agent`` (host input at 15 s, its defaults otherwise) pushes
   through a counting TCP proxy to the collector while a real Prometheus scrapes the same agent
   every 15 s through counting proxies, once as plain text and once gzip-compressed (a small front
   that compresses like client_golang when Prometheus asks for it). Every byte both ways of every
   connection is counted (HTTP headers included, no TLS). Target: push at most 1/5 of gzip scraping.

    .venv/bin/python bench/collector_ingest.py [--agents 40] [--requests 25] [--duration 180]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
import yaml  # noqa: E402

from contract import remote_write  # noqa: E402
from agent.inputs.host import Config as HostConfig, HostInput  # noqa: E402
from collector.state import Store  # noqa: E402
from lab.procs import Proc, collector_command, free_port, need_binary, wait_until  # noqa: E402
from lab.stores import prom_query, start_prometheus  # noqa: E402
from bench.wire_bytes import wire_bytes  # noqa: E402

VENV_BIN = Path(sys.executable).parent


def pin(pid: int, cpu: int) -> None:
    """Every thread of ``pid`` onto one CPU (taskset -a), if there is more than one CPU."""
    if (os.cpu_count() or 1) > 1 and shutil.which("taskset"):
        subprocess.run(["taskset", "-a", "-cp", str(cpu), str(pid)], check=True, capture_output=True)


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def cpu_split(pid: int) -> Tuple[float, float]:
    t = psutil.Process(pid).cpu_times()
    return t.user, t.system


# ---------------------------------------------------------------- 1. throughput

def record_payloads(agents: int, requests: int) -> Tuple[List[bytes], int]:
    """Real collections of this host, two per request, as ``agents`` agents; returns (bodies, samples)."""
    host = HostInput(HostConfig())
    collections = []
    for _ in range(4):
        collections.append(host.collect())
        time.sleep(0.25)
    step_ms = 15_000
    start_ms = int(time.time() * 1000) - requests * 2 * step_ms - 60_000
    bodies, total = [], 0
    for j in range(requests):
        for a in range(agents):
            series = {}
            for k in range(2):
                ts = start_ms + (j * 2 + k) * step_ms
                for s in collections[(j * 2 + k) % len(collections)]:
                    labels = dict(s.labels, __name__=s.name, commune=f"{10000 + a // 10:05d}", agent=f"pc-{a:03d}")
                    key = tuple(sorted(labels.items()))
                    series.setdefault(key, (labels, []))[1].append((s.value, ts))
            payload = list(series.values())
            total += sum(len(v) for _, v in payload)
            bodies.append(remote_write.encode(payload))
    return bodies, total


async def send_all(url: str, bodies: List[Tuple[bytes, str]], concurrency: int) -> float:
    """POST every body (with its bearer token, if any) over ``concurrency`` keep-alive connections;
    seconds taken. A minimal HTTP/1.1 client on asyncio streams (about a fifth of aiohttp's CPU per
    request): the load generator shares the two CPUs with what it measures."""
    host, _, rest = url.split("//", 1)[1].partition(":")
    port, _, path = rest.partition("/")
    fixed = (f"POST /{path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
             + "".join(f"{k}: {v}\r\n" for k, v in remote_write.HEADERS.items())).encode()
    queue = list(reversed(bodies))
    errors: List[str] = []

    async def worker():
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while queue:
                body, token = queue.pop()
                auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
                writer.write(b"%s%sContent-Length: %d\r\n\r\n%s" % (fixed, auth, len(body), body))
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                text = await reader.readexactly(length) if length else b""
                if status != 204:
                    errors.append(f"{status} {text[:200].decode(errors='replace')}")
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, first: {errors[0]}")
    return elapsed


def start_pinned_prometheus(tmp: Path, cpu: int):
    os.environ["GOMAXPROCS"] = "1"
    try:
        proc, url = start_prometheus(tmp, ooo_window="1d")
    finally:
        del os.environ["GOMAXPROCS"]
    pin(proc.pid, cpu)
    return proc, url


def direct_round(tmp: Path, bodies: List[bytes], concurrency: int) -> Tuple[float, float]:
    """Seconds to send every body straight to a fresh Prometheus, and Prometheus' CPU seconds."""
    prom, url = start_pinned_prometheus(tmp, 1)
    try:
        c0 = cpu_seconds(prom.pid)
        elapsed = asyncio.run(send_all(url + "/api/v1/write", [(b, "") for b in bodies], concurrency))
        cpu = cpu_seconds(prom.pid) - c0
        assert prom_query(url, "count({__name__=~'node_.+'})"), "nothing arrived in Prometheus"
    finally:
        prom.stop()
    return elapsed, cpu


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and of its children (the collector's workers)."""
    proc = psutil.Process(pid)
    total = cpu_seconds(pid)
    for child in proc.children(recursive=True):
        try:
            total += cpu_seconds(child.pid)
        except psutil.NoSuchProcess:
            pass
    return total


def collector_round(tmp: Path, bodies: List[bytes], state: Path, tokens: List[str],
                    concurrency: int, workers: int = 1) -> Tuple[float, float, float]:
    """Seconds to send every body through the collector to a fresh Prometheus; CPU of both.

    One worker is pinned to CPU 0 (Prometheus has CPU 1); with more, worker i is pinned to CPU
    i modulo the CPUs (on two cores the second worker shares CPU 1 with Prometheus)."""
    prom, url = start_pinned_prometheus(tmp / "prom", 1)
    port = free_port()
    cfg = tmp / "collector.yaml"
    cfg.write_text(yaml.safe_dump({
        "log_level": "warning", "web": {"listen_address": f"127.0.0.1:{port}"},
        "upstreams": [{"url": url + "/api/v1/write"}], "state": {"dir": str(state)},
        "limits": {"max_sample_age": "2d"}, "workers": workers}))
    coll = Proc(collector_command() + ["serve", "-c", str(cfg)], tmp / "collector.log")
    try:
        coll.wait_http(f"http://127.0.0.1:{port}/-/ready")
        if workers == 1:
            pin(coll.pid, 0)
        else:
            wait_until(lambda: len(psutil.Process(coll.pid).children()) == workers, what="workers")
            for i, child in enumerate(psutil.Process(coll.pid).children()):
                pin(child.pid, i % (os.cpu_count() or 1))
        items = [(b, tokens[i % len(tokens)]) for i, b in enumerate(bodies)]
        asyncio.run(send_all(f"http://127.0.0.1:{port}/api/v1/write", items[:len(items) // 10], concurrency))  # warm
        c0, p0 = tree_cpu(coll.pid), cpu_seconds(prom.pid)
        elapsed = asyncio.run(send_all(f"http://127.0.0.1:{port}/api/v1/write", items, concurrency))
        ccpu, pcpu = tree_cpu(coll.pid) - c0, cpu_seconds(prom.pid) - p0
        assert prom_query(url, "count({__name__=~'node_.+'})"), "nothing arrived through the collector"
    finally:
        coll.stop()
        prom.stop()
    return elapsed, ccpu, pcpu


def throughput(tmp: Path, agents: int, requests: int, concurrency: int, rounds: int,
               worker_counts: Tuple[int, ...] = (1, 2)) -> dict:
    import statistics

    bodies, samples = record_payloads(agents, requests)
    wire = sum(len(b) for b in bodies)
    print(f"payloads: {len(bodies)} requests, {samples} samples, {wire / len(bodies):.0f} bytes/request "
          f"compressed, {samples / len(bodies):.0f} samples/request; {rounds} rounds each way, alternating")
    state = tmp / "collector-state"
    store = Store(str(state))
    tokens = [store.add_token(f"{10000 + a // 10:05d}", f"pc-{a:03d}")[1] for a in range(agents)]
    direct: list = []
    through: dict = {w: [] for w in worker_counts}
    for r in range(rounds):
        direct.append(direct_round(tmp / f"direct-{r}", bodies, concurrency))
        for w in worker_counts:
            through[w].append(collector_round(tmp / f"through-{r}-{w}", bodies, state, tokens, concurrency, w))
    ms = lambda cpu: 1e6 * cpu / samples  # noqa: E731  CPU ms per 1,000 samples
    med = statistics.median
    d_t, d_cpu = med(t for t, _ in direct), med(c for _, c in direct)
    print("\n1. ingest throughput (Prometheus GOMAXPROCS=1 pinned to CPU 1; one collector worker pinned to "
          f"CPU 0, two: one on each CPU; {concurrency} requests in flight; medians of {rounds} rounds, "
          "CPU ms per 1,000 samples)")
    print(f"   straight to Prometheus:        {samples / d_t:10,.0f} samples/s   Prometheus {ms(d_cpu):.2f} "
          f"(rounds: {', '.join(f'{ms(c):.2f}' for _, c in direct)})")
    result = {"samples": samples, "direct_sps": samples / d_t, "direct_cpu_ms": ms(d_cpu)}
    for w in worker_counts:
        rows = through[w]
        c_t, c_cpu, c_pcpu = med(t for t, _, _ in rows), med(c for _, c, _ in rows), med(p for _, _, p in rows)
        print(f"   through the collector, {w} worker{'s' if w > 1 else ' '}: {samples / c_t:10,.0f} samples/s   "
              f"collector {ms(c_cpu):.2f} (rounds: {', '.join(f'{ms(c):.2f}' for _, c, _ in rows)}), "
              f"Prometheus behind it {ms(c_pcpu):.2f}")
        result[f"collector_{w}_sps"], result[f"collector_{w}_cpu_ms"] = samples / c_t, ms(c_cpu)
    w1 = result.get("collector_1_cpu_ms")
    if w1:
        print(f"   collector CPU per sample / Prometheus' receiver CPU per sample (1 worker): {w1 / ms(d_cpu):.2f}x"
              "   (target <= 1.5x)")
        print(f"   time through the collector / time direct (1 worker): "
              f"{result['direct_sps'] / result['collector_1_sps']:.2f}x")
    for w in worker_counts:
        if w > 1 and w1:
            print(f"   {w} workers / 1 worker: throughput {result[f'collector_{w}_sps'] / result['collector_1_sps']:.2f}x, "
                  f"CPU per sample {result[f'collector_{w}_cpu_ms'] / w1:.2f}x")
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--agents", type=int, default=40)
    p.add_argument("--requests", type=int, default=25, help="requests per agent")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3, help="throughput rounds each way (median reported)")
    p.add_argument("--duration", type=float, default=330, help="seconds of traffic for the wire comparison")
    p.add_argument("--only", choices=["throughput", "wire"])
    p.add_argument("--workers", default="1,2", help="collector worker counts to measure, comma-separated")
    args = p.parse_args()
    need_binary("prometheus")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="collector-bench-") as tmp:
        tmp = Path(tmp)
        if args.only in (None, "throughput"):
            throughput(tmp, args.agents, args.requests, args.concurrency, args.rounds,
                       tuple(int(w) for w in args.workers.split(",")))
        if args.only in (None, "wire"):
            wire_bytes(tmp, args.duration)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
