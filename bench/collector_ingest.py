#!/usr/bin/env python3
"""Collector ingest: throughput against Prometheus' own receiver, and bytes on the wire per agent-hour.

1. Throughput. Recorded payloads (real collections of this host by the agent's host input, as
   ``--agents`` agents each sending ``--requests`` requests of two collections, stamped with
   commune/agent as the collector would) are sent, the same bytes, (a) straight to Prometheus'
   remote-write receiver and (b) to ``commune-collector serve``, which authenticates, decodes,
   checks, stamps, re-encodes and forwards them to another, fresh Prometheus. The collector is
   pinned to one core (taskset), Prometheus to the other with GOMAXPROCS=1; ``--concurrency``
   requests are in flight. Reported: samples/s each way, the ratio, and CPU seconds per 1,000
   samples of the collector and of Prometheus. Target: the collector costs at most 2x.

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
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import threading
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
from lab.procs import Proc, agent_command, free_port, http_get, need_binary, wait_until  # noqa: E402
from lab.stores import prom_query, start_prometheus  # noqa: E402

VENV_BIN = Path(sys.executable).parent


def collector_command() -> List[str]:
    script = VENV_BIN / "commune-collector"
    return [str(script)] if script.exists() else [sys.executable, "-m", "collector"]


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
    import aiohttp

    queue: asyncio.Queue = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    errors: List[str] = []

    async def worker(session):
        while not queue.empty():
            body, token = queue.get_nowait()
            headers = dict(remote_write.HEADERS)
            if token:
                headers["Authorization"] = f"Bearer {token}"
            async with session.post(url, data=body, headers=headers) as resp:
                if resp.status != 204:
                    errors.append(f"{resp.status} {(await resp.text())[:200]}")
                await resp.read()

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
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


def collector_round(tmp: Path, bodies: List[bytes], state: Path, tokens: List[str],
                    concurrency: int) -> Tuple[float, float, float]:
    """Seconds to send every body through the collector to a fresh Prometheus; CPU of both."""
    prom, url = start_pinned_prometheus(tmp / "prom", 1)
    port = free_port()
    cfg = tmp / "collector.yaml"
    cfg.write_text(yaml.safe_dump({
        "log_level": "warning", "web": {"listen_address": f"127.0.0.1:{port}"},
        "upstreams": [{"url": url + "/api/v1/write"}], "state": {"dir": str(state)},
        "limits": {"max_sample_age": "2d"}}))
    coll = Proc(collector_command() + ["serve", "-c", str(cfg)], tmp / "collector.log")
    try:
        coll.wait_http(f"http://127.0.0.1:{port}/-/ready")
        pin(coll.pid, 0)
        c0, p0, s0 = cpu_seconds(coll.pid), cpu_seconds(prom.pid), cpu_split(coll.pid)
        items = [(b, tokens[i % len(tokens)]) for i, b in enumerate(bodies)]
        elapsed = asyncio.run(send_all(f"http://127.0.0.1:{port}/api/v1/write", items, concurrency))
        ccpu, pcpu = cpu_seconds(coll.pid) - c0, cpu_seconds(prom.pid) - p0
        s1 = cpu_split(coll.pid)
        print(f"   (collector round: user {s1[0] - s0[0]:.2f} s, system {s1[1] - s0[1]:.2f} s)")
        assert prom_query(url, "count({__name__=~'node_.+'})"), "nothing arrived through the collector"
    finally:
        coll.stop()
        prom.stop()
    return elapsed, ccpu, pcpu


def throughput(tmp: Path, agents: int, requests: int, concurrency: int, rounds: int) -> dict:
    import statistics

    bodies, samples = record_payloads(agents, requests)
    wire = sum(len(b) for b in bodies)
    print(f"payloads: {len(bodies)} requests, {samples} samples, {wire / len(bodies):.0f} bytes/request "
          f"compressed, {samples / len(bodies):.0f} samples/request; {rounds} rounds each way, alternating")
    state = tmp / "collector-state"
    store = Store(str(state))
    tokens = [store.add_token(f"{10000 + a // 10:05d}", f"pc-{a:03d}")[1] for a in range(agents)]
    direct, through = [], []
    for r in range(rounds):
        direct.append(direct_round(tmp / f"direct-{r}", bodies, concurrency))
        through.append(collector_round(tmp / f"through-{r}", bodies, state, tokens, concurrency))
    d_t = statistics.median(t for t, _ in direct)
    c_t = statistics.median(t for t, _, _ in through)
    d_cpu = statistics.median(c for _, c in direct)
    c_cpu = statistics.median(c for _, c, _ in through)
    c_pcpu = statistics.median(p for _, _, p in through)
    ms = lambda cpu: 1e6 * cpu / samples  # noqa: E731  CPU ms per 1,000 samples
    print("\n1. ingest throughput (collector pinned to CPU 0, Prometheus GOMAXPROCS=1 pinned to CPU 1, "
          f"{concurrency} requests in flight; medians)")
    print(f"   straight to Prometheus:  {samples / d_t:10,.0f} samples/s   Prometheus {ms(d_cpu):.1f} CPU ms "
          "per 1,000 samples")
    print(f"   through the collector:   {samples / c_t:10,.0f} samples/s   collector {ms(c_cpu):.1f}, "
          f"Prometheus {ms(c_pcpu):.1f} CPU ms per 1,000 samples")
    print(f"   per round, direct / through: " + ", ".join(
        f"{samples / d:,.0f} / {samples / c:,.0f}" for (d, _), (c, _, _) in zip(direct, through)))
    print(f"   ratio, time through the collector / time direct: {c_t / d_t:.2f}x   (target <= 2x)")
    print(f"   collector CPU per sample / Prometheus CPU per sample: {c_cpu / d_cpu:.2f}x")
    return {"samples": samples, "direct_sps": samples / d_t, "collector_sps": samples / c_t, "ratio": c_t / d_t}


# ---------------------------------------------------------------- 2. bytes on the wire

class CountingProxy:
    """A TCP proxy on loopback that counts every byte in both directions."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.up = 0    # client -> server
        self.down = 0  # server -> client
        self.connections = 0

    async def _pipe(self, reader, writer, attr):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                setattr(self, attr, getattr(self, attr) + len(data))
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, creader, cwriter):
        self.connections += 1
        try:
            sreader, swriter = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            cwriter.close()
            return
        await asyncio.gather(self._pipe(creader, swriter, "up"), self._pipe(sreader, cwriter, "down"))

    async def start(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    @property
    def total(self) -> int:
        return self.up + self.down


def run_loop_in_thread():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    return loop


async def start_front(agent_port: int, compress: bool):
    """/metrics of the agent, gzip-compressed when asked (as client_golang does) if ``compress``."""
    from aiohttp import web

    async def metrics(request):
        body = await asyncio.get_running_loop().run_in_executor(
            None, lambda: http_get(f"http://127.0.0.1:{agent_port}/metrics"))
        headers = {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        if compress and "gzip" in request.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, compresslevel=6)  # Go's gzip.DefaultCompression
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return port


def wire_bytes(tmp: Path, duration: float) -> dict:
    loop = run_loop_in_thread()
    call = lambda coro: asyncio.run_coroutine_threadsafe(coro, loop).result(30)  # noqa: E731

    prom_w, prom_w_url = start_prometheus(tmp / "prom-sink")  # where the collector forwards
    coll_port = free_port()
    state = tmp / "wire-state"
    token = Store(str(state)).add_token("09667", "pc-wire")[1]
    cfg = tmp / "collector-wire.yaml"
    cfg.write_text(yaml.safe_dump({"log_level": "warning", "web": {"listen_address": f"127.0.0.1:{coll_port}"},
                                   "upstreams": [{"url": prom_w_url + "/api/v1/write"}],
                                   "state": {"dir": str(state)}}))
    coll = Proc(collector_command() + ["serve", "-c", str(cfg)], tmp / "collector-wire.log")
    agent = scraper = None
    try:
        coll.wait_http(f"http://127.0.0.1:{coll_port}/-/healthy")
        push_proxy = CountingProxy(coll_port)
        call(push_proxy.start())

        from agent import inputs

        agent_port = free_port()
        acfg = {"agent": {"id": "pc-wire", "state_dir": str(tmp / "agent-state")},
                "web": {"listen_address": f"127.0.0.1:{agent_port}"},
                "push": {"enabled": True, "url": f"http://127.0.0.1:{push_proxy.port}/api/v1/write",
                         "bearer_token": token}}
        for name in (m.NAME for m in inputs.INPUTS):  # host and push as configured; others off (no targets here)
            if name != "host":
                acfg[name] = {"enabled": False}
        apath = tmp / "agent-wire.yaml"
        apath.write_text(yaml.safe_dump(acfg))
        agent = Proc(agent_command() + ["-c", str(apath)], tmp / "agent-wire.log")
        agent.wait_http(f"http://127.0.0.1:{agent_port}/metrics")

        plain_port = call(start_front(agent_port, compress=False))
        gzip_port = call(start_front(agent_port, compress=True))
        plain_proxy, gzip_proxy = CountingProxy(plain_port), CountingProxy(gzip_port)
        call(plain_proxy.start())
        call(gzip_proxy.start())
        scraper, scraper_url = start_prometheus(tmp / "prom-scraper", scrape_configs=[
            {"job_name": "plain", "scrape_interval": "15s", "static_configs": [
                {"targets": [f"127.0.0.1:{plain_proxy.port}"]}]},
            {"job_name": "gzip", "scrape_interval": "15s", "static_configs": [
                {"targets": [f"127.0.0.1:{gzip_proxy.port}"]}]}])
        # count from the first successful push and scrape on
        # (the agent's first push comes after its push.batch_delay, 2 minutes by default)
        wait_until(lambda: push_proxy.total and plain_proxy.total and gzip_proxy.total, 300, what="traffic")
        base = {p: (p.total, p.connections) for p in (push_proxy, plain_proxy, gzip_proxy)}
        t0 = time.time()
        time.sleep(duration)
        elapsed = time.time() - t0
        push_proxy_total_all = push_proxy.total
        got = {name: p.total - base[p][0] for name, p in
               (("push", push_proxy), ("plain", plain_proxy), ("gzip", gzip_proxy))}
        series_pushed = prom_query(prom_w_url, 'count({agent="pc-wire"})')
        cm = http_get(f"http://127.0.0.1:{coll_port}/metrics").decode()
        body_bytes = _metric(cm, "commune_collector_received_bytes_total")
        requests = _metric(cm, "commune_collector_requests_total", handler="write", code="204")
        collections = raw_collections(prom_w_url, int(time.time() - t0) + 30)
        series_scraped = prom_query(scraper_url, 'count({job="plain"})')
    finally:
        for p in (scraper, agent, coll, prom_w):
            if p is not None:
                p.stop()
        loop.call_soon_threadsafe(loop.stop)

    per_hour = {k: v * 3600 / elapsed for k, v in got.items()}
    print(f"\n2. bytes on the wire per agent-hour (measured over {elapsed:.0f} s; series: "
          f"{series_pushed[0]['value'][1] if series_pushed else '?'} pushed, "
          f"{series_scraped[0]['value'][1] if series_scraped else '?'} scraped incl. up/scrape_*)")
    print(f"   push (remote write, protobuf+snappy): {per_hour['push'] / 1e6:8.3f} MB")
    print(f"   scrape, plain text every 15 s:        {per_hour['plain'] / 1e6:8.3f} MB")
    print(f"   scrape, gzip text every 15 s:         {per_hour['gzip'] / 1e6:8.3f} MB")
    print(f"   push / gzip scrape: {per_hour['push'] / per_hour['gzip']:.3f}   target <= 0.2;  "
          f"push / plain scrape: {per_hour['push'] / per_hour['plain']:.3f}")
    # what batching on the agent would change: the same pushed samples, re-encoded in windows
    overhead = (push_proxy_total_all - body_bytes) / requests if requests else 0.0
    span = (max(collections) - min(collections)) / 1000 + 15 if collections else 1.0
    print(f"   push: {requests:.0f} requests, {body_bytes / requests:.0f} body bytes and {overhead:.0f} bytes of "
          "HTTP headers each (one request per collection: the shipper sends as soon as a batch is queued)")
    for window in (60, 120, 300):
        total, n = 0, 0
        buckets: dict = {}
        for ts, series in collections.items():
            buckets.setdefault(ts // (window * 1000), []).append(series)
        for group in buckets.values():
            merged: dict = {}
            for series in group:
                for key, (labels, samples) in series.items():
                    merged.setdefault(key, (labels, []))[1].extend(samples)
            total += len(remote_write.encode(sorted(merged.values(), key=lambda x: sorted(x[0].items())))) + overhead
            n += 1
        hourly = total * 3600 / span
        print(f"   push batched every {window:>4d} s (estimate from the same samples): {hourly / 1e6:8.3f} MB, "
              f"push / gzip scrape {hourly / per_hour['gzip']:.3f}")
    return per_hour


def _metric(text: str, name: str, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def raw_collections(prom_url: str, seconds: int) -> dict:
    """The samples the agent pushed, as {timestamp_ms: {series key: (labels, [(value, ts)])}},
    without the identity labels the collector stamped (the agent does not send them)."""
    out: dict = {}
    for r in prom_query(prom_url, f'{{agent="pc-wire"}}[{seconds}s]'):
        labels = {k: v for k, v in r["metric"].items() if k not in ("commune", "agent")}
        key = tuple(sorted(labels.items()))
        for t, v in r["values"]:
            ts = int(round(float(t) * 1000))
            out.setdefault(ts, {})[key] = (labels, [(float(v), ts)])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--agents", type=int, default=40)
    p.add_argument("--requests", type=int, default=25, help="requests per agent")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3, help="throughput rounds each way (median reported)")
    p.add_argument("--duration", type=float, default=330, help="seconds of traffic for the wire comparison")
    p.add_argument("--only", choices=["throughput", "wire"])
    args = p.parse_args()
    need_binary("prometheus")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="collector-bench-") as tmp:
        tmp = Path(tmp)
        if args.only in (None, "throughput"):
            throughput(tmp, args.agents, args.requests, args.concurrency, args.rounds)
        if args.only in (None, "wire"):
            wire_bytes(tmp, args.duration)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
