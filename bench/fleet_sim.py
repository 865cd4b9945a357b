#!/usr/bin/env python3
"""Simulated communes pushing through a balancer to collector replicas into VictoriaMetrics.

Each simulated PC replays what a real agent pushed in two minutes (bench/fleet_templates.json,
recorded by bench/fleet_capture.py: the host, inventory, ICMP, probe and the agent's own series of
a PC; a printer, a 24-port router and a UPS as polled by the site poller), with the identity of its
own signed token (collector.credentials, minted with the replicas' key file as the issuing replica
does). The first PC of each commune is its site poller and also carries its printers, routers and
UPSes, each renamed (``target``, ``address``). A PC sends one 2-minute batch at a time, packed into
requests of at most 2,000 samples (push.max_samples_per_request), snappy remote-write encoded as
contract/remote_write.py does, at its own phase in the 2 minutes (jitter), through haproxy to
``--replicas`` ``commune-collector serve`` replicas into one VictoriaMetrics single-node.

Time is compressed by ``--speedup`` K: a PC's consecutive 2-minute batches (timestamps 2 minutes
apart, starting in the past so that none is ahead of the wall clock) are sent 120/K s apart, so
the stack sees the sample rate of K times as many PCs at 2-minute batching while the store holds
the series of the simulated PCs only. Reported per fleet size: samples/s accepted, CPU per 1,000
samples of the replicas (and of haproxy and VictoriaMetrics), RSS per replica, the store's disk
per sample after a flush, the push latency and how far the senders fell behind their schedule.
Then the slope over the sizes is extrapolated to a province and to the nation (bench/fleet_report.py,
which also re-prints a report from saved --json runs). The stack itself is bench/fleet_stack.py.

    .venv/bin/python bench/fleet_sim.py [--sizes 10,20,40] [--speedup 4] [--duration 60] [--rules]
"""
from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from contract import remote_write  # noqa: E402
from bench import fleet_procs as fp  # noqa: E402
from bench.fleet_stack import Stack  # noqa: E402,F401  (tests and fleet_rules take it from here)
from collector.credentials import KeyRing  # noqa: E402

TEMPLATES = REPO / "bench" / "fleet_templates.json"
WINDOW_MS = 120_000        # push.batch_delay: one request set per PC every 2 minutes
MAX_SAMPLES = 2000         # push.max_samples_per_request
KINDS = ("printer", "router", "ups")


@dataclass
class Shape:
    """One commune's office: PCs (the first is the site poller) and the SNMP devices it polls."""
    pcs: int = 15
    printer: int = 25
    router: int = 2
    ups: int = 3

    @property
    def devices(self) -> int:
        return self.printer + self.router + self.ups


@dataclass
class PC:
    commune: str
    agent: str
    token: str
    phase_ms: int
    devices: List[Tuple[str, str, str]] = field(default_factory=list)  # (kind, target, address)
    entries: list = field(default_factory=list)  # (offset_ms, labels, drift, value, noise, digits) in push order


def _label_bytes(labels: Dict[str, str]) -> bytes:
    """The Label messages of a series exactly as remote_write.serialize writes them (sorted, empty
    values left out); checked against remote_write.encode by tests/test_fleet_sim.py."""
    ld = remote_write._len_delimited
    return b"".join(ld(b"\x0a", ld(b"\x0a", n.encode()) + ld(b"\x12", v.encode()))
                    for n, v in sorted(labels.items()) if v != "")


def _decimals(value: float) -> int:
    """Decimal places of a captured value (at most 6): 0 for byte counts, 2 for psutil's CPU seconds."""
    text = repr(float(value))
    if "e-" in text:
        return 6
    if "e" in text:
        return 0
    return min(len(text.split(".")[1].rstrip("0")), 6)


def _drift(name: str, points: list) -> float:
    """How much a series rises per 2-minute window: counters at their captured rate (the SNMP
    recordings are static: a small made-up rate then), timestamps with time, gauges not at all."""
    if name.endswith("_timestamp_seconds"):
        return WINDOW_MS / 1000
    if not name.endswith("_total"):
        return 0.0
    first, last = points[0][1], points[-1][1]
    if len(points) > 1 and last > first:
        return (last - first) * len(points) / (len(points) - 1)
    return 1e6 if ("octets" in name or "bytes" in name) else 10.0


class Templates:
    def __init__(self, path: Path = TEMPLATES):
        doc = json.loads(path.read_text())
        self.doc = doc
        self.pc = self._entries(doc["pc"], {})
        self.devices = {k: doc["devices"][k] for k in KINDS}

    @staticmethod
    def _entries(series: list, subst: Dict[str, str]) -> list:
        out = []
        for labels, points in series:
            labels = {k: subst.get(v, v) for k, v in labels.items()}
            lb = _label_bytes(labels)
            drift = _drift(labels["__name__"], points)
            values = [v for _o, v in points]
            if drift:  # a counter's rise per window varies by up to what keeps it from ever falling
                captured = values[-1] - values[0]
                amp = drift / len(points) if captured > 0 else drift
            else:  # a gauge that moved in the capture moves by as much again, at random, in every window
                amp = 0.0 if len(set(values)) == 1 else (max(values) - min(values)) / 2
            digits = max(_decimals(v) for v in values)  # as precise as the source gave them, no more
            out += [(off, lb, drift, value, amp, digits) for off, value in points]
        return out

    def series(self, kind: str = "pc") -> int:
        return len(self.doc["pc"] if kind == "pc" else self.devices[kind])

    def samples(self, kind: str = "pc") -> int:
        return sum(len(p) for _l, p in (self.doc["pc"] if kind == "pc" else self.devices[kind]))

    def per_commune(self, shape: Shape) -> Tuple[int, int]:
        """(series, samples per 2 minutes) of one commune."""
        series = shape.pcs * self.series() + sum(getattr(shape, k) * self.series(k) for k in KINDS)
        samples = shape.pcs * self.samples() + sum(getattr(shape, k) * self.samples(k) for k in KINDS)
        return series, samples

    def prepare(self, pc: PC) -> None:
        entries = list(self.pc)
        for kind, target, address in pc.devices:
            entries += self._entries(self.devices[kind], {"$TARGET": target, "$ADDRESS": address})
        entries.sort(key=lambda e: e[0])  # collections in time order, series order kept within
        pc.entries = entries


def build_fleet(communes: int, shape: Shape, keyring: KeyRing, templates: Templates, seed: int = 1) -> List[PC]:
    rng = random.Random(seed)
    fleet = []
    for c in range(communes):
        code = f"{20000 + c:05d}"
        for i in range(shape.pcs):
            agent = f"pc-{i + 1:02d}"
            token = keyring.sign(f"t-{code}-{agent}", code, agent, time.time())[0]
            pc = PC(code, agent, token, rng.randrange(WINDOW_MS))
            if i == 0:  # the site poller
                n = 0
                for kind in KINDS:
                    for j in range(getattr(shape, kind)):
                        n += 1
                        pc.devices.append((kind, f"{kind}-{j + 1:02d}", f"192.168.1.{10 + n}"))
            templates.prepare(pc)
            fleet.append(pc)
    return fleet


def batch_bodies(pc: PC, window: int, t0_ms: int) -> Tuple[List[bytes], int]:
    """The remote-write bodies of ``pc``'s ``window``-th 2-minute batch and their sample count."""
    ld, sample = remote_write._len_delimited, remote_write._sample
    base = t0_ms + pc.phase_ms + window * WINDOW_MS
    rng = random.Random(f"{pc.commune}/{pc.agent}/{window}")  # the same batch every time it is built
    rand, step = rng.random, {}
    bodies, chunk = [], []
    for off, lb, drift, value, noise, digits in pc.entries:
        if drift:  # counters: their rate plus up to ``noise`` more (one draw per series and window)
            r = step.get(lb)
            if r is None:
                r = step[lb] = rand()
            value += drift * window + noise * r
        elif noise:
            value += noise * (2 * rand() - 1)
        if noise:
            value = round(value, digits)
        chunk.append(ld(b"\x0a", lb + ld(b"\x12", sample(value, base + off, 0))))
        if len(chunk) == MAX_SAMPLES:
            bodies.append(remote_write.compress(b"".join(chunk)))
            chunk = []
    if chunk:
        bodies.append(remote_write.compress(b"".join(chunk)))
    return bodies, len(pc.entries)


@dataclass
class SendStats:
    requests: int = 0
    samples: int = 0
    body_bytes: int = 0
    retries: int = 0
    failed: int = 0
    latencies: list = field(default_factory=list)
    lags: list = field(default_factory=list)
    cpu_s: float = 0.0
    errors: list = field(default_factory=list)


async def run_fleet(url: str, fleet: List[PC], t0_ms: int, speedup: float, duration: float,
                    concurrency: int = 128, windows: Optional[int] = None) -> SendStats:
    """Every PC sends its batches on its schedule (phase, then every 120/K s) for ``duration`` wall
    seconds (or exactly ``windows`` batches each); 429/5xx and connection errors are retried."""
    import aiohttp

    stats = SendStats()
    sem = asyncio.Semaphore(concurrency)
    start = time.monotonic()
    cpu0 = time.process_time()
    heap = [(pc.phase_ms / 1000 / speedup, i, 0) for i, pc in enumerate(fleet)]
    heapq.heapify(heap)
    tasks = set()

    async def send(session, pc: PC, window: int, due: float):
        async with sem:
            stats.lags.append(time.monotonic() - start - due)
            bodies, n = batch_bodies(pc, window, t0_ms)
            headers = dict(remote_write.HEADERS, Authorization=f"Bearer {pc.token}")
            for body in bodies:
                for attempt in range(8):
                    t = time.monotonic()
                    try:
                        async with session.post(url, data=body, headers=headers) as resp:
                            await resp.read()
                            status = resp.status
                    except aiohttp.ClientError as exc:
                        status = f"{type(exc).__name__}"
                    if status == 204:
                        stats.latencies.append(time.monotonic() - t)
                        break
                    stats.retries += 1
                    if len(stats.errors) < 5:
                        stats.errors.append(str(status))
                    await asyncio.sleep(0.5 * (attempt + 1))
                else:
                    stats.failed += 1
                stats.requests += 1
                stats.body_bytes += len(body)
            stats.samples += n

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        while heap:
            due, i, window = heapq.heappop(heap)
            if windows is None and due > duration:
                break
            delay = due - (time.monotonic() - start)
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.ensure_future(send(session, fleet[i], window, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if windows is None or window + 1 < windows:
                heapq.heappush(heap, (due + WINDOW_MS / 1000 / speedup, i, window + 1))
        if tasks:
            await asyncio.gather(*tasks)
    stats.cpu_s = time.process_time() - cpu0
    return stats


def sim_t0_ms(speedup: float, duration: float, windows: int = 0) -> int:
    """Where the compressed clock starts: far enough back that no batch is ahead of the wall clock."""
    span = windows * WINDOW_MS if windows else speedup * duration * 1000
    return int(time.time() * 1000) - int(span) - 2 * WINDOW_MS


def measure(tmp: Path, communes: int, shape: Shape, templates: Templates, speedup: float, duration: float,
            replicas: int) -> dict:
    """One fleet size on a fresh stack: what it cost, per sample."""
    stack = Stack(tmp, replicas)
    try:
        fleet = build_fleet(communes, shape, stack.keyring, templates)
        cpu0, t0 = stack.cpu(), time.monotonic()
        rss_max: Dict[str, float] = {}

        async def with_rss_sampling():
            async def sample_rss():
                while True:
                    for k, v in stack.rss().items():
                        rss_max[k] = max(rss_max.get(k, 0.0), v)
                    await asyncio.sleep(2)
            sampler = asyncio.ensure_future(sample_rss())
            try:
                return await run_fleet(stack.lb + "/api/v1/write", fleet, sim_t0_ms(speedup, duration), speedup,
                                       duration)
            finally:
                sampler.cancel()

        stats = asyncio.run(with_rss_sampling())
        wall = time.monotonic() - t0
        cpu1 = stack.cpu()
        fp.wait_until(lambda: stack.vm_metric("vm_rows_inserted_total", type="promremotewrite") >= stats.samples,
                      60, interval=0.5, what="every sample in VictoriaMetrics")
        disk = stack.vm_disk_bytes(merge=True)
        series = json.loads(fp.http_get(stack.vm + "/api/v1/series/count"))["data"][0]
        cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
    finally:
        stack.stop()
    coll_cpu = sum(v for k, v in cpu.items() if k.startswith("replica-"))
    lat, lag = sorted(stats.latencies) or [0.0], sorted(stats.lags) or [0.0]
    per_commune = templates.per_commune(shape)
    return {
        "communes": communes, "pcs": communes * shape.pcs, "devices": communes * shape.devices,
        "speedup": speedup, "pcs_sustained": communes * shape.pcs * speedup,
        "communes_sustained": communes * speedup, "wall_s": wall, "samples": stats.samples,
        "requests": stats.requests, "body_bytes": stats.body_bytes, "retries": stats.retries,
        "failed": stats.failed, "errors": stats.errors, "samples_per_s": stats.samples / wall,
        "collector_cpu_ms_per_1k": 1e6 * coll_cpu / stats.samples,
        "haproxy_cpu_ms_per_1k": 1e6 * cpu["haproxy"] / stats.samples,
        "vm_cpu_ms_per_1k": 1e6 * cpu["vm"] / stats.samples,
        "sender_cpu_ms_per_1k": 1e6 * stats.cpu_s / stats.samples,
        "collector_cores": coll_cpu / wall, "vm_cores": cpu["vm"] / wall,
        "replica_rss_mb": {k: v for k, v in rss_max.items() if k.startswith("replica-")},
        "vm_rss_mb": rss_max.get("vm", 0.0), "vm_series": int(series), "expected_series": communes * per_commune[0],
        "vm_disk_bytes_per_sample": disk[0] / stats.samples, "vm_index_bytes_per_series": disk[1] / max(series, 1),
        "latency_p50_s": lat[len(lat) // 2], "latency_p99_s": lat[int(len(lat) * 0.99)],
        "lag_p99_s": lag[int(len(lag) * 0.99)], "lag_max_s": lag[-1],
        "load_avg": os.getloadavg()[0],
    }


def main() -> int:
    from bench import fleet_report

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="10,20,40", help="fleet sizes in communes, comma-separated")
    p.add_argument("--speedup", type=float, default=4.0, help="time compression K (batches every 120/K s)")
    p.add_argument("--duration", type=float, default=60.0, help="wall seconds of load per size")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--pcs", type=int, default=15, help="PCs per commune")
    p.add_argument("--printers", type=int, default=25)
    p.add_argument("--routers", type=int, default=2)
    p.add_argument("--ups", type=int, default=3)
    p.add_argument("--rules", action="store_true", help="then the rules and dashboard queries at the largest size")
    p.add_argument("--rules-minutes", type=float, default=4.0, help="how long the rule engines run")
    p.add_argument("--rules-communes", type=int, help="fleet size of the rules phase (default: the largest size)")
    p.add_argument("--json", type=Path, help="write every figure here")
    args = p.parse_args()
    shape = Shape(args.pcs, args.printers, args.routers, args.ups)
    templates = Templates()
    print(fleet_report.describe_templates(templates, shape))
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (shared with other work)")
    results = []
    with tempfile.TemporaryDirectory(prefix="fleet-sim-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            r = measure(Path(tmp) / f"size-{n}", n, shape, templates, args.speedup, args.duration, args.replicas)
            print(fleet_report.size_line(r), flush=True)
            results.append(r)
        rules = None
        if args.rules:
            from bench import fleet_rules
            size = args.rules_communes or max(int(s) for s in args.sizes.split(","))
            rules = fleet_rules.run(Path(tmp) / "rules", size, shape, templates, args.replicas, args.rules_minutes)
    print(fleet_report.report(results, rules, templates, shape))
    if args.json:
        args.json.write_text(json.dumps({"sizes": results, "rules": rules, "shape": shape.__dict__}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
