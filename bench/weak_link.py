#!/usr/bin/env python3
"""Weak link: our agent against vmagent and Prometheus in agent mode on the same emulated office link.

Three senders run side by side, each with its own emulated link (lab/linkemu.py: ``--bps``
bandwidth each way, ``--rtt`` round trip, every connection cut every ``--cut`` seconds), all
writing to the same receiver, a real VictoriaMetrics on loopback (it keeps old samples, so a
backlog is accepted whole, and ``/api/v1/export`` returns every raw sample):

- **ours**: ``commune-agent`` with the host input (and its self metrics), pushing with its
  defaults (batch delay, backoff) through the link to the real ``commune-collector``, which
  forwards to VictoriaMetrics: the production path;
- **vmagent** (Debian ``victoria-metrics``): scrapes a second ``commune-agent`` in pull mode with
  the same inputs and interval, remote-writes through its link, buffering on disk;
- **prom-agent**: ``prometheus --enable-feature=agent`` scraping the same pull agent, remote-writing
  through its link, its WAL on disk.

The run: ``--steady`` seconds of normal work, then every link goes down for ``--outage`` seconds
(a 10-minute outage by default); halfway through it each sender is stopped and started again;
then the links come back and the backlog drains. Printed, side by side and as ratios to ours:

- bytes on the wire per sample: every byte the link carried both ways over the whole run
  (retries after cuts included) / the distinct samples of that sender the receiver holds;
- samples lost: collections (node_load1, one per interval) missing at the receiver between the
  start and the end of the outage, not counting the seconds the sender itself was stopped
  (nothing is collected then), times the sender's series per collection;
- drain: seconds from the link's return until the last outage sample arrived, and the share of
  the link's upstream capacity used from the first byte after the return to that moment;
- the time a 24-hour backlog (one collection every ``--backlog-interval`` s, the sender's series)
  would take at the drain rate measured: an extrapolation, printed as one.

    .venv/bin/python bench/weak_link.py [--bps 256000] [--rtt 0.3] [--cut 20] [--outage 600]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from lab.linkemu import LinkEmulator  # noqa: E402
from lab.procs import Proc, free_port, http_get, need_binary  # noqa: E402
from lab.stores import start_victoria_metrics  # noqa: E402
from lab.collector import add_token, start_collector  # noqa: E402
from lab.agent import QUIET, Agent  # noqa: E402

SENDERS = ("ours", "vmagent", "prom-agent")
REF = "node_load1"


def agent_yaml(tmp: Path, name: str, interval: float, push: dict | None) -> Path:
    cfg = {"agent": {"id": "pc-bench", "state_dir": str(tmp / f"{name}-state"), "interval": f"{interval:g}s",
                     "log_level": "info"},
           "web": {"listen_address": f"127.0.0.1:{free_port()}"},
           "host": {"interval": f"{interval:g}s", "timeout": f"{interval:g}s"},
           **QUIET}
    if push:
        cfg["push"] = {"enabled": True, "require_token": True, **push}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Sender:
    """One sender, its link and its restart times; ``match`` selects its series at the receiver."""

    def __init__(self, name: str, link: LinkEmulator, match: str, start):
        self.name, self.link, self.match, self._start = name, link, match, start
        self.proc = start()
        self.stopped_at = self.started_at = 0.0
        self.up_samples: list = []   # (time, bytes upstream) polled every second

    def restart(self) -> None:
        self.stopped_at = time.time()
        self.proc.stop(timeout=60)
        self.proc = self._start()
        self.started_at = time.time()

    def stop(self) -> None:
        self.proc.stop(timeout=60)
        self.link.stop()


def export(vm: str, match: str, start: float, end: float) -> list:
    """Every raw sample the receiver holds for ``match``: [(labels, [timestamps in s])]."""
    query = urllib.parse.urlencode({"match[]": match, "start": f"{start:.3f}", "end": f"{end:.3f}"})
    out = []
    for line in http_get(f"{vm}/api/v1/export?{query}", timeout=60).decode().splitlines():
        if line.strip():
            row = json.loads(line)
            out.append((row["metric"], sorted({t / 1000 for t in row["timestamps"]})))
    return out


def ref_times(vm: str, sender: Sender, start: float, end: float) -> list:
    rows = export(vm, REF + sender.match, start, end)
    return sorted({t for _, times in rows for t in times})


def missing(times: list, start: float, end: float, interval: float, excused: tuple) -> int:
    """Collections missing between start and end (a step over 1.5 intervals is one or more),
    leaving out the seconds in ``excused`` (the sender stopped: nothing was collected)."""
    points = [start] + [t for t in times if start < t < end] + [end]
    lost = 0
    for a, b in zip(points, points[1:]):
        gap = b - a
        lo, hi = excused
        overlap = max(0.0, min(b, hi) - max(a, lo))
        gap -= overlap
        if gap > 1.5 * interval:
            lost += round(gap / interval) - 1
    return lost


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bps", type=int, default=256_000, help="link bandwidth each way, bit/s")
    p.add_argument("--rtt", type=float, default=0.3, help="round trip added by the link, s")
    p.add_argument("--cut", type=float, default=20, help="every connection is cut every this many s")
    p.add_argument("--interval", type=float, default=1.0, help="collection / scrape interval, s")
    p.add_argument("--steady", type=float, default=180, help="seconds of normal work before the outage")
    p.add_argument("--outage", type=float, default=600, help="seconds the links are down")
    p.add_argument("--drain-timeout", type=float, default=900)
    p.add_argument("--backlog-interval", type=float, default=15, help="interval for the 24-hour extrapolation")
    args = p.parse_args()
    link_opts = dict(bandwidth_bps=args.bps, latency=args.rtt / 2, cut_every=(args.cut, args.cut))

    with tempfile.TemporaryDirectory(prefix="weak-link-") as tmpdir:
        tmp = Path(tmpdir)
        vm_proc, vm = start_victoria_metrics(tmp / "vm")
        collector, curl, state = start_collector(tmp, [vm + "/api/v1/write"])
        token = add_token(state, "09667", "pc-bench")
        senders: dict = {}
        pull = None
        try:
            # ours: agent -> link -> collector -> VictoriaMetrics
            link = LinkEmulator(("127.0.0.1", int(curl.rsplit(":", 1)[1])), seed=1, **link_opts).start()
            ours_cfg = agent_yaml(tmp, "ours", args.interval,
                                  {"url": f"http://127.0.0.1:{link.port}/api/v1/write", "bearer_token": token})
            senders["ours"] = Sender("ours", link, '{agent="pc-bench"}',
                                     lambda: Agent(tmp, ours_cfg, "ours").proc)
            # the peers scrape a pull agent with the same inputs
            pull_cfg = agent_yaml(tmp, "pull", args.interval, None)
            pull = Agent(tmp, pull_cfg, "pull").proc
            target = yaml.safe_load(pull_cfg.read_text())["web"]["listen_address"]
            vm_port = int(vm.rsplit(":", 1)[1])
            scrape = {"scrape_configs": [{"job_name": "office", "scrape_interval": f"{args.interval:g}s",
                                          "static_configs": [{"targets": [target]}]}]}

            link = LinkEmulator(("127.0.0.1", vm_port), seed=2, **link_opts).start()
            (tmp / "vmagent.yaml").write_text(yaml.safe_dump(scrape))
            vport = free_port()
            vargs = [need_binary("vmagent"), f"-promscrape.config={tmp / 'vmagent.yaml'}",
                     f"-remoteWrite.url=http://127.0.0.1:{link.port}/api/v1/write",
                     "-remoteWrite.label=sender=vmagent", f"-remoteWrite.tmpDataPath={tmp / 'vmagent-data'}",
                     f"-httpListenAddr=127.0.0.1:{vport}", "-loggerLevel=WARN"]

            def start_vmagent(vargs=vargs, vport=vport):
                proc = Proc(vargs, tmp / "vmagent.log")
                proc.wait_http(f"http://127.0.0.1:{vport}/health")
                return proc
            senders["vmagent"] = Sender("vmagent", link, '{sender="vmagent"}', start_vmagent)

            link = LinkEmulator(("127.0.0.1", vm_port), seed=3, **link_opts).start()
            prom_cfg = {"global": {"scrape_interval": f"{args.interval:g}s",
                                   "external_labels": {"sender": "prom-agent"}},
                        **scrape, "remote_write": [{"url": f"http://127.0.0.1:{link.port}/api/v1/write"}]}
            (tmp / "prom-agent.yaml").write_text(yaml.safe_dump(prom_cfg))
            pport = free_port()
            pargs = [need_binary("prometheus"), "--enable-feature=agent", f"--config.file={tmp / 'prom-agent.yaml'}",
                     f"--storage.agent.path={tmp / 'prom-agent-data'}", f"--web.listen-address=127.0.0.1:{pport}",
                     "--log.level=warn"]

            def start_prom(pargs=pargs, pport=pport):
                proc = Proc(pargs, tmp / "prom-agent.log")
                proc.wait_http(f"http://127.0.0.1:{pport}/-/ready")
                return proc
            senders["prom-agent"] = Sender("prom-agent", link, '{sender="prom-agent"}', start_prom)

            t_begin = time.time()
            print(f"link: {args.bps / 1000:g} kbit/s each way, {args.rtt * 1000:g} ms round trip, cut every "
                  f"{args.cut:g} s; interval {args.interval:g} s; steady {args.steady:g} s, outage {args.outage:g} s "
                  f"with every sender restarted halfway", flush=True)

            def poll_until(deadline: float, on_tick=None) -> None:
                while time.time() < deadline:
                    now = time.time()
                    for s in senders.values():
                        s.up_samples.append((now, s.link.counters.bytes_upstream))
                    if on_tick and on_tick():
                        return
                    time.sleep(1)

            poll_until(t_begin + args.steady)
            t_down = time.time()
            for s in senders.values():
                s.link.down()
            print(f"outage begins at +{t_down - t_begin:.0f} s", flush=True)
            poll_until(t_down + args.outage / 2)
            restarts = [threading.Thread(target=s.restart) for s in senders.values()]
            for t in restarts:
                t.start()
            for t in restarts:
                t.join()
            print("every sender restarted: " + ", ".join(
                f"{s.name} down {s.started_at - s.stopped_at:.1f} s" for s in senders.values()), flush=True)
            poll_until(t_down + args.outage)
            t_up = time.time()
            for s in senders.values():
                s.link.up()
            print(f"links back at +{t_up - t_begin:.0f} s; draining", flush=True)

            # drained: every sender has a sample collected after t_up and the count of outage
            # samples has not changed for 30 s (the retry backoff is at most 60 s: wait 90 s)
            last_count = {n: (-1, t_up) for n in senders}

            def all_drained() -> bool:
                now = time.time()
                done = True
                for n, s in senders.items():
                    times = ref_times(vm, s, t_down, now)
                    count = sum(1 for t in times if t <= t_up)
                    if count != last_count[n][0]:
                        last_count[n] = (count, now)
                    if not (times and times[-1] > t_up and now - last_count[n][1] > 90):
                        done = False
                return done
            poll_until(t_up + args.drain_timeout, lambda: time.time() - t_up > 5 and all_drained())
            t_end = time.time()

            print(f"\n{'':<46}" + "".join(f"{n:>14}" for n in SENDERS))
            rows = {}
            for n, s in senders.items():
                every = export(vm, s.match, t_begin - 60, t_end)
                samples = sum(len(ts) for _, ts in every)
                ref = ref_times(vm, s, t_begin, t_end)
                steady = [t for t in ref if t_begin + 30 < t < t_down]
                per_collection = samples / max(1, len(ref))
                c = s.link.counters
                lost_collections = missing(ref, t_down, t_up, args.interval, (s.stopped_at, s.started_at))
                drained_at = last_count[n][1]
                # the drain, on the link: from the first poll after the return that saw bytes go
                # up to the last poll before the last outage sample arrived that did
                after = [(t, b) for t, b in s.up_samples if t_up <= t <= drained_at + 1]
                moving = [(t0, b0, t1, b1) for (t0, b0), (t1, b1) in zip(after, after[1:]) if b1 > b0]
                if moving:
                    first, b_first, last, b_last = moving[0][0], moving[0][1], moving[-1][2], moving[-1][3]
                    share = (b_last - b_first) * 8 / (args.bps * max(1e-9, last - first))
                else:
                    first, share = drained_at, float("nan")
                outage_samples = sum(1 for t in ref if t_down <= t <= t_up) * per_collection
                rate = outage_samples / (drained_at - first) if outage_samples and drained_at > first else float("nan")
                backlog = per_collection * 86400 / args.backlog_interval
                rows[n] = {
                    "series per collection": per_collection,
                    "distinct samples received": samples,
                    "collections received (steady phase)": len(steady),
                    "bytes on the wire (both ways)": c.bytes_upstream + c.bytes_downstream,
                    "bytes per sample": (c.bytes_upstream + c.bytes_downstream) / max(1, samples),
                    "connections cut": c.connections_cut,
                    "collections lost in the outage": lost_collections,
                    "samples lost in the outage": lost_collections * per_collection,
                    "drain: s from link back to last sample": drained_at - t_up,
                    "drain: link share from first byte": share,
                    "drain rate, samples/s": rate,
                    "24 h backlog drain, h (extrapolated)": backlog / rate / 3600,
                }
            for key in rows["ours"]:
                print(f"{key:<46}" + "".join(
                    f"{rows[n][key]:>14.3f}" if isinstance(rows[n][key], float) and not rows[n][key] >= 100
                    else f"{rows[n][key]:>14,.0f}" for n in SENDERS))
            print("\nratios, peer / ours (above 1: the peer spends or loses more):")
            for key in ("bytes per sample", "samples lost in the outage", "drain: s from link back to last sample",
                        "drain: link share from first byte"):
                o = rows["ours"][key]
                print(f"   {key:<44}" + "".join(
                    f"{n}: {rows[n][key] / o:.2f}   " if o else f"{n}: {rows[n][key]:g} vs 0   "
                    for n in SENDERS[1:]))
            print(f"\nrun took {t_end - t_begin:.0f} s")
        finally:
            for s in senders.values():
                s.stop()
            if pull:
                pull.stop()
            collector.stop()
            vm_proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
