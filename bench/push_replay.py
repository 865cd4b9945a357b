#!/usr/bin/env python3
"""Backlog replay: how fast a queued outage drains into real Prometheus, and what the queue costs.

Fills a fresh push queue with a simulated outage of one typical agent (``--hours`` of
collections, one batch of ``--samples`` samples every ``--interval`` seconds, all with the
timestamps they would have had), then ships it with the real shipper to a real Prometheus
(Debian package, free loopback port, out-of-order window on, stopped afterwards) and reports:

- appends per second into the queue and its size on disk (payload and SQLite file);
- replay: wall time, samples per second, requests, and how many times faster than real time;
- CPU seconds of this process for the replay (encode, compress, HTTP) per 1,000 samples.

Every sample is checked in Prometheus at the end (count over the whole window).

    .venv/bin/python bench/push_replay.py [--hours 6] [--interval 30] [--samples 250]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from contract import remote_write  # noqa: E402
from agent.queue import Entry, Queue  # noqa: E402
from agent.shipper import HttpClient, Shipper, TokenSource  # noqa: E402
from lab.stores import prom_query, start_prometheus  # noqa: E402


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hours", type=float, default=6)
    p.add_argument("--interval", type=float, default=30)
    p.add_argument("--samples", type=int, default=250, help="samples per collection")
    p.add_argument("--max-samples-per-request", type=int, default=2000)
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="push-bench-") as tmp:
        tmp = Path(tmp)
        prom, url = start_prometheus(tmp / "prom")
        try:
            q = Queue(tmp / "queue.db")
            n = int(args.hours * 3600 / args.interval)
            end_ms = int(time.time() * 1000)
            start_ms = end_ms - int(n * args.interval * 1000)
            t0, c0 = time.perf_counter(), cpu()
            for i in range(n):
                ts = start_ms + int(i * args.interval * 1000)
                series = [({"__name__": "commune_bench_value", "i": str(j)}, [(float(i + j), ts)])
                          for j in range(args.samples)]
                q.append([Entry(ts, args.samples, remote_write.encode(series))])
            fill_s, fill_cpu = time.perf_counter() - t0, cpu() - c0
            q.checkpoint()
            st = q.stats()
            file_bytes = sum(os.path.getsize(f) for f in tmp.glob("queue.db*"))
            print(f"queued {n} batches, {st.samples} samples ({args.hours:g}h of collections every "
                  f"{args.interval:g}s): {n / fill_s:.0f} appends/s, {fill_cpu / n * 1000:.2f} ms CPU each; "
                  f"payload {st.bytes / 1e6:.1f} MB, SQLite files {file_bytes / 1e6:.1f} MB")

            sh = Shipper(q, HttpClient(url + "/api/v1/write"), TokenSource(), args.max_samples_per_request,
                         require_token=False)  # straight to Prometheus, which needs none
            t0, c0 = time.perf_counter(), cpu()
            requests = 0
            while sh.ship_once() == 0.0:
                requests += 1
            wall, used = time.perf_counter() - t0, cpu() - c0
            assert q.stats().batches == 0 and not any(sh.failed.values()), sh.failed
            print(f"replayed {sh.sent_samples} samples in {requests} requests: {wall:.1f}s, "
                  f"{sh.sent_samples / wall:.0f} samples/s, {args.hours * 3600 / wall:.0f}x real time, "
                  f"{used / sh.sent_samples * 1000 * 1000:.1f} ms CPU per 1,000 samples (this process)")
            window = int(args.hours * 3600 + 120)
            res = prom_query(url, f'count(count_over_time(commune_bench_value[{window}s]))', time_s=end_ms / 1000 + 1)
            total = prom_query(url, f'sum(count_over_time(commune_bench_value[{window}s]))', time_s=end_ms / 1000 + 1)
            print(f"Prometheus holds {res[0]['value'][1]} series, {total[0]['value'][1]} samples")
            assert int(float(total[0]["value"][1])) == st.samples
        finally:
            prom.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
