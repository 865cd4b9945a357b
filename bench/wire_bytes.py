"""Bytes on the wire per agent-hour, push against scraping (part 2 of bench/collector_ingest.py).

A real ``commune-agent`` pushes through a counting TCP proxy to the collector while a real
Prometheus scrapes the same agent through counting proxies, as plain text and gzip-compressed.
"""
from __future__ import annotations

import asyncio
import gzip
import sys
import threading
import time
from pathlib import Path

import yaml

from contract import remote_write
from collector.state import Store
from lab.procs import Proc, agent_command, collector_command, free_port, http_get, wait_until
from lab.stores import prom_query, start_prometheus

VENV_BIN = Path(sys.executable).parent



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
                "profile": {"enabled": False},  # no profile fetches through the counting proxy
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
    if not requests:
        print("   push: no request within the window (the agent batches for push.batch_delay): run longer")
        return per_hour
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
