#!/usr/bin/env python3
"""Collector soak: does the collector keep its memory under hostile traffic, and its scraper fast?

The real ``commune-collector serve`` (basic auth on /metrics with a bcrypt hash of cost 10, as
``htpasswd -nBC 10`` makes; limits.max_body_size 2MB) forwards to a real Prometheus. Over four
keep-alive connections it is sent, in alternating phases of ``--phase`` requests:

- hostile requests (``--refused``, mixed at random): 1 MB metric names, 100 KB label names, 100 KB
  label values, garbage bodies, unknown tokens, bodies over max_body_size, junk basic-auth
  passwords on /metrics, and a cardinality attack (every request new unique series within the
  limits: accepted data, so counted as accepted);
- agent-like requests (``--accepted``): 100-300 node_* series of 3 samples each, from 50 tokens.

Every ``--every`` requests: the collector's RSS, Prometheus' RSS and the collector's own counters
(rejected requests by reason, samples dropped), scraped from /metrics with the good password.
Reported: RSS after warm-up, max, end, quarter medians ("RSS flat" when the last quarter is within
10 % or 15 MiB of the second and the whole rise stays under the stamped-series cache bound, else
"RSS GROWS"); Prometheus' RSS for the same traffic as context. A scraper thread
times /metrics with the good password all along; at the end, rounds of agent writes with and
without a burst of junk passwords give write and scrape latency (median, p95) both ways.

    .venv/bin/python bench/collector_soak.py [--refused 10000] [--accepted 10000]
"""
from __future__ import annotations

import argparse
import base64
import http.client
import itertools
import os
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import bcrypt  # noqa: E402
import yaml  # noqa: E402

from contract import remote_write  # noqa: E402
from bench.procstat import proc_rss_mb  # noqa: E402
from collector.state import Store  # noqa: E402
from collector.ingest import SERIES_CACHE_BYTES  # noqa: E402
from lab.procs import Proc, free_port, http_get, need_binary  # noqa: E402
from lab.stores import prom_query, start_prometheus  # noqa: E402

AGENTS, CONNECTIONS, USER, PASSWORD = 50, 4, "prometheus", "soak-" + secrets.token_hex(8)
GOOD_AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
MAX_BODY = 2_000_000
HOSTILE = {  # kind: statuses expected ("reset": the collector closed while the body was sent)
    "name_1MB": {400}, "label_name_100KB": {400}, "label_value_100KB": {400}, "garbage": {400},
    "unknown_token": {401}, "over_max_body": {413, "reset"}, "junk_password": {401}, "cardinality": {204}}
_NAME_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
_TABLE = bytes(_NAME_CHARS[i % len(_NAME_CHARS)] for i in range(256))


def rand_name(n: int) -> str:
    """A valid metric or label name of ``n`` random characters."""
    return "x" + os.urandom(n - 1).translate(_TABLE).decode()


def pct(values, q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else (values or [float("nan")])[0]


def ms(values) -> str:
    return f"median {1000 * statistics.median(values):6.1f} ms, p95 {1000 * pct(values, 95):6.1f} ms (n={len(values)})"


# ---------------------------------------------------------------- bodies

def agent_series(a: int) -> list:
    """The label sets of agent ``a``: like a host input's collection, 100-300 series."""
    rng = random.Random(a)
    want = rng.randint(100, 300)
    cpus = rng.choice([c for c in (2, 4, 8, 16, 24) if 8 * c <= want - 40])
    out = [{"__name__": "node_cpu_seconds_total", "cpu": str(c), "mode": m} for c in range(cpus)
           for m in ("idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user")]
    out += [{"__name__": f"node_memory_{m}_bytes"} for m in ("MemTotal", "MemFree", "MemAvailable", "Buffers",
                                                            "Cached", "SwapTotal", "SwapFree", "Dirty")]
    out += [{"__name__": f"node_load{n}"} for n in (1, 5, 15)] + [{"__name__": "node_boot_time_seconds"}]
    for i in itertools.takewhile(lambda _: len(out) < want, itertools.count()):
        dev = f"sd{chr(97 + i % 4)}{i // 4}"
        for m in ("reads_completed", "writes_completed", "read_bytes", "written_bytes", "io_time_seconds"):
            out.append({"__name__": f"node_disk_{m}_total", "device": dev})
        for m in ("receive_bytes", "transmit_bytes", "receive_packets", "transmit_packets", "receive_errs"):
            out.append({"__name__": f"node_network_{m}_total", "device": f"eth{i}"})
        for m in ("avail", "size", "free"):
            out.append({"__name__": f"node_filesystem_{m}_bytes", "device": f"/dev/{dev}",
                        "fstype": "ext4", "mountpoint": f"/srv/{i}"})
    return out[:want]


class Bodies:
    """Request bodies: agent collections with advancing timestamps, and every hostile kind."""

    def __init__(self, t0_ms: int):
        self.series = [agent_series(a) for a in range(AGENTS)]
        self.t0_ms, self.n, self.lock = t0_ms, 0, threading.Lock()
        self.oversize = os.urandom(MAX_BODY + 100_000)

    def accepted(self):
        """(body, agent index): the next collection of the next agent, 3 samples 15 s apart."""
        with self.lock:
            i, self.n = self.n, self.n + 1
        a, j = i % AGENTS, i // AGENTS
        stamps = [self.t0_ms + (3 * j + k) * 15_000 for k in range(3)]
        payload = [(labels, [(float(s * 7 + n), t) for n, t in enumerate(stamps)])
                   for s, labels in enumerate(self.series[a])]
        return remote_write.encode(payload), a

    @staticmethod
    def raw(series) -> bytes:
        """A WriteRequest built with the protobuf classes (encode() refuses over-limit labels)."""
        req, now = remote_write.WriteRequest(), int(time.time() * 1000)
        for labels in series:
            ts = req.timeseries.add()
            for name, value in sorted(labels.items()):
                ts.labels.add(name=name, value=value)
            ts.samples.add(value=1.0, timestamp=now)
        return remote_write.compress(req.SerializeToString())

    def hostile(self, kind: str) -> bytes:
        if kind == "name_1MB":
            return self.raw([{"__name__": rand_name(2**20), "job": "x"}])
        if kind == "label_name_100KB":
            return self.raw([{"__name__": "node_load1", rand_name(100_000): "1"}])
        if kind == "label_value_100KB":
            return self.raw([{"__name__": "node_load1", "path": rand_name(100_000)}])
        if kind == "garbage":
            junk = os.urandom(random.randint(1, 65536))
            return random.choice([b"\x10" + junk, remote_write.compress(junk), b""])
        if kind == "over_max_body":
            return self.oversize
        if kind == "cardinality":  # new series every time, each within every limit
            now = int(time.time() * 1000)
            return remote_write.encode([({"__name__": "app_requests_total", "session": secrets.token_hex(16),
                                          "path": "/" + rand_name(random.randint(20, 200)),
                                          "user": rand_name(random.randint(8, 64))}, [(1.0, now)])
                                        for _ in range(200)])
        return self.accepted()[0]  # unknown_token: a valid body


# ---------------------------------------------------------------- client

class Client:
    """Requests over keep-alive connections, one per thread; returns (status or "reset", seconds)."""

    def __init__(self, port: int):
        self.port, self.local = port, threading.local()

    def send(self, method: str, path: str, body=None, headers=None):
        conn = getattr(self.local, "conn", None) or http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        self.local.conn = conn
        start = time.perf_counter()
        try:
            try:
                conn.request(method, path, body=body, headers=headers or {})
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before the body was sent whole: the answer may still be there
            resp = conn.getresponse()
            resp.read()
            status = resp.status
            if resp.will_close:
                conn.close()
                self.local.conn = None
        except (OSError, http.client.HTTPException):
            conn.close()
            self.local.conn = None
            status = "reset"
        return status, time.perf_counter() - start

    def write(self, body: bytes, token: str):
        return self.send("POST", "/api/v1/write", body, {**remote_write.HEADERS, "Authorization": f"Bearer {token}"})

    def scrape(self, auth: str = GOOD_AUTH):
        return self.send("GET", "/metrics", headers={"Authorization": auth})


def junk_auth() -> str:
    return "Basic " + base64.b64encode(f"{USER}:{secrets.token_urlsafe(12)}".encode()).decode()


def counters(port: int) -> dict:
    """The collector's rejected requests and dropped samples by reason, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = http_get(f"http://127.0.0.1:{port}/metrics", timeout=60, headers={"Authorization": GOOD_AUTH}).decode()
    out: dict = {"rejected": {}, "dropped": {}}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            kind = {"commune_collector_rejected_requests_total": "rejected",
                    "commune_collector_samples_dropped_total": "dropped"}.get(s.name)
            if kind:
                out[kind][s.labels["reason"]] = s.value
    return out


class Scraper(threading.Thread):
    """Scrapes /metrics with the good password every ``interval`` s; latencies by the current tag."""

    def __init__(self, port: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.client, self.interval, self.tag = Client(port), interval, "warm-up"
        self.times: dict = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            tag = self.tag
            status, secs = self.client.scrape()
            self.times.setdefault(tag if status == 200 else f"{tag} FAILED {status}", []).append(secs)


# ---------------------------------------------------------------- the soak

class Soak:
    """Requests by kind over CONNECTIONS keep-alive connections, with the answers tallied by kind."""

    def __init__(self, port: int, tokens, coll: Proc, prom: Proc, pool: ThreadPoolExecutor):
        self.port, self.tokens, self.coll, self.prom, self.pool = port, tokens, coll, prom, pool
        self.client = Client(port)
        self.bodies = Bodies(int(time.time() * 1000) - 4 * 3600_000)  # agent history: 45 s per request
        self.outcomes: dict = {}  # kind -> {status: count}

    def one(self, kind: str):
        if kind == "junk_password":
            status, secs = self.client.scrape(junk_auth())
        elif kind == "accepted":
            body, a = self.bodies.accepted()
            status, secs = self.client.write(body, self.tokens[a])
        else:
            body = self.bodies.hostile(kind)
            token = "cmt_" + secrets.token_urlsafe(32) if kind == "unknown_token" else random.choice(self.tokens)
            status, secs = self.client.write(body, token)
        return kind, status, secs

    def run(self, kinds) -> list:
        """Send requests of these kinds; the latencies of those answered as expected."""
        lat = []
        for kind, status, secs in self.pool.map(self.one, kinds):
            counts = self.outcomes.setdefault(kind, {})
            counts[status] = counts.get(status, 0) + 1
            if status in HOSTILE.get(kind, {204}):
                lat.append(secs)
        return lat

    def checkpoint(self) -> dict:
        return {"rss": proc_rss_mb(self.coll.pid), "prom": proc_rss_mb(self.prom.pid), **counters(self.port)}

    def phases(self, refused: int, accepted: int, phase: int, every: int, scraper: "Scraper") -> list:
        """Hostile and agent phases in turn; a checkpoint row every ``every`` requests."""
        print(f"{'requests':>8} {'phase':<8} {'RSS MiB':>8} {'prom MiB':>9} | rejected requests by reason: "
              f"{'unauth':>6} {'too_big':>7} {'malformed':>9} {'invalid':>7} {'other':>5} | samples dropped")
        left, rows, done, kind = {"hostile": refused, "accepted": accepted}, [], 0, "hostile"
        while any(left.values()):
            if not left[kind]:
                kind = "accepted" if kind == "hostile" else "hostile"
            todo = min(phase, left[kind])
            left[kind] -= todo
            scraper.tag = kind
            while todo:
                n = min(every, todo)
                todo -= n
                self.run(random.choices(list(HOSTILE), k=n) if kind == "hostile" else ["accepted"] * n)
                done += n
                row = self.checkpoint()
                rows.append(row)
                rej = row["rejected"]
                other = sum(v for r, v in rej.items() if r not in ("unauthorized", "body_too_large", "malformed",
                                                                    "invalid"))
                dropped = ", ".join(f"{r} {v:.0f}" for r, v in row["dropped"].items() if v)
                print(f"{done:>8} {kind:<8} {row['rss']:>8.1f} {row['prom']:>9.1f} | {'':28}"
                      f"{rej.get('unauthorized', 0):>6.0f} {rej.get('body_too_large', 0):>7.0f} "
                      f"{rej.get('malformed', 0):>9.0f} {rej.get('invalid', 0):>7.0f} {other:>5.0f} | "
                      f"{dropped or '0'}", flush=True)
            kind = "accepted" if kind == "hostile" else "hostile"
        return rows

    def latency(self, writes: int, scraper: "Scraper") -> None:
        """Agent writes in rounds without and with 4 threads sending junk passwords to /metrics."""
        writes_by, junk_lat, stop = {"quiet": [], "junk": []}, [], threading.Event()

        def junk_loop():
            c = Client(self.port)
            while not stop.is_set():
                junk_lat.append(c.scrape(junk_auth())[1])

        scraper.times.clear()
        for cond in ("quiet", "junk", "quiet", "junk"):
            scraper.tag = cond
            stop.clear()
            junkers = [threading.Thread(target=junk_loop) for _ in range(4 if cond == "junk" else 0)]
            for t in junkers:
                t.start()
            try:
                writes_by[cond] += self.run(["accepted"] * writes)
            finally:
                stop.set()
                for t in junkers:
                    t.join()
        print(f"\nlatency: {writes} agent writes x 2 rounds each way over {CONNECTIONS} connections, without "
              "(quiet) and with (junk) 4 more threads sending junk passwords to /metrics")
        for cond in ("quiet", "junk"):
            print(f"   write, {cond:<5}:                {ms(writes_by[cond])}")
        for cond in ("quiet", "junk"):
            print(f"   good /metrics scrape, {cond:<5}: {ms(scraper.times.get(cond, []))}")
        print(f"   junk-password answers (401):  {ms(junk_lat)}")
        ratio = statistics.median(writes_by["junk"]) / statistics.median(writes_by["quiet"])
        print(f"   median write latency, junk / quiet: {ratio:.2f}x;  collector RSS after: "
              f"{proc_rss_mb(self.coll.pid):.1f} MiB")


def report(soak: Soak, start: dict, rows: list, every: int, prom_url: str) -> None:
    end = rows[-1]
    got = prom_query(prom_url, 'count(last_over_time({__name__=~"node_.+"}[5h]))')
    print(f"\nPrometheus holds {got[0]['value'][1] if got else 0} node_* series")
    print("\nrequests by kind: status: count [expected]")
    for kind, counts in soak.outcomes.items():
        want = HOSTILE.get(kind, {204})
        print(f"   {kind:<18} {sum(counts.values()):>6}   " + ", ".join(
            f"{s}: {n}" for s, n in sorted(counts.items(), key=str)) + f"   [{', '.join(map(str, want))}]"
            + ("" if set(counts) <= want else "   UNEXPECTED"))
    rss = [r["rss"] for r in rows]
    q = max(1, len(rss) // 4)
    first, second, last = (statistics.median(rss[:q]), statistics.median(rss[q:2 * q]),
                           statistics.median(rss[-q:]))
    late = last - second
    # The collector's bounded caches (stamped series up to SERIES_CACHE_BYTES, names) fill during
    # the first half under the cardinality attack and the agents' distinct series; what is asked
    # is that RSS then stays flat, and that the whole rise stays under those bounds.
    bound = SERIES_CACHE_BYTES / 2**20
    print(f"\ncollector RSS: start {start['rss']:.1f} MiB (after warm-up), max {max(rss):.1f}, end "
          f"{end['rss']:.1f}; quarter medians {first:.1f} / {second:.1f} / ... / {last:.1f}; "
          f"second to last quarter {late:+.1f} MiB; whole rise {max(rss) - start['rss']:+.1f} MiB "
          f"(stamped-series cache bound {bound:.0f} MiB)")
    if abs(late) <= max(0.10 * second, 15) and max(rss) - start["rss"] <= bound + 30:
        print("RSS flat (after the bounded caches fill)")
    else:
        print(f"RSS GROWS: second-quarter median {second:.1f} MiB -> last-quarter median {last:.1f} MiB "
              f"({late:+.1f} MiB) over {len(rss) * every} requests")
    print(f"Prometheus RSS (context, not a criterion: it stores what the collector forwards): "
          f"start {start['prom']:.1f} MiB, end {end['prom']:.1f} MiB")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--refused", type=int, default=10_000, help="hostile requests")
    p.add_argument("--accepted", type=int, default=10_000, help="agent-like requests")
    p.add_argument("--phase", type=int, default=1000, help="requests per phase (hostile, agents, ...)")
    p.add_argument("--every", type=int, default=500, help="requests between RSS checkpoints")
    p.add_argument("--burst-writes", type=int, default=500, help="writes per latency round (2 rounds each way)")
    args = p.parse_args()
    need_binary("prometheus")
    random.seed(1)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="collector-soak-") as tmp:
        tmp = Path(tmp)
        store = Store(str(tmp / "state"))
        tokens = [store.add_token(f"{10000 + a // 10:05d}", f"pc-{a:03d}")[1] for a in range(AGENTS)]
        prom, prom_url = start_prometheus(tmp / "prom")
        coll = scraper = None
        pool = ThreadPoolExecutor(CONNECTIONS)
        try:
            port = free_port()
            cfg = tmp / "collector.yaml"
            cfg.write_text(yaml.safe_dump({
                "log_level": "warning", "web": {"listen_address": f"127.0.0.1:{port}", "basic_auth_users": {
                    USER: bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()}},
                "upstreams": [{"url": prom_url + "/api/v1/write"}], "state": {"dir": str(tmp / "state")},
                "limits": {"max_body_size": MAX_BODY}}))
            coll = Proc([str(Path(sys.executable).parent / "commune-collector"), "serve", "-c", str(cfg)],
                        tmp / "collector.log")
            coll.wait_http(f"http://127.0.0.1:{port}/-/ready")
            soak = Soak(port, tokens, coll, prom, pool)
            scraper = Scraper(port)
            scraper.start()
            soak.run(["accepted"] * 2 * AGENTS + [k for k in HOSTILE for _ in range(8)])  # warm-up: every path
            time.sleep(1)
            start = soak.checkpoint()
            print(f"warm-up done: collector RSS {start['rss']:.1f} MiB, Prometheus RSS {start['prom']:.1f} MiB\n")
            rows = soak.phases(args.refused, args.accepted, args.phase, args.every, scraper)
            report(soak, start, rows, args.every, prom_url)
            print("\n/metrics with the good password, scraped every 0.2 s during the soak:")
            for tag, times in scraper.times.items():
                print(f"   during {tag} phases: {ms(times)}")
            soak.latency(args.burst_writes, scraper)
        finally:
            if scraper is not None:
                scraper.stop.set()
                scraper.join()
            pool.shutdown(wait=True, cancel_futures=True)
            for proc in (coll, prom):
                if proc is not None:
                    proc.stop()
        log = (tmp / "collector.log").read_text(errors="replace")
        if "Traceback" in log:
            print("\nTraceback in the collector's log:\n" + log[log.index("Traceback"):][:3000])
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
