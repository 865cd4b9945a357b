#!/usr/bin/env python3
"""Alert replay: one synthetic month of a province through the real rules and the real
Alertmanager, counting the notifications sent per incident (issue 18).

    .venv/bin/python bench/alert_replay.py [--days 30] [--communes 5] [--start 2027-02-01]
                                           [--compression 4320]

1. The month (bench/replay_month.py: PCs on in office hours by the real working calendar, a power
   cut, a flaky link, a maintenance day, a failing disk, the Tết week of collector/calendar.yaml) is
   written as OpenMetrics and backfilled into a fresh TSDB with ``promtool tsdb create-blocks-from
   openmetrics``; a real Prometheus (Debian 2.42, loopback, retention 100 years) serves it.
2. The recording rules the alerts read (commune:calendar_open:bool, ...) are backfilled with
   ``promtool tsdb create-blocks-from rules`` (Prometheus' rule engine), level by level.
3. Every alerting rule of collector/rules/*.yml is evaluated over the month with
   ``/api/v1/query_range`` at its evaluation interval and put through the pending/firing/resolved
   state machine (bench/replay_rules.py); the alerts over ALERTS (the escalation) in a second pass.
4. A real Alertmanager (0.25) with collector/alertmanager/alertmanager.yml, its timings divided by
   the compression factor and its receivers pointed at a loopback webhook, gets the alerts at
   their compressed instants; the maintenance silence is made with ``commune-collector silence
   add`` when the window is declared (bench/replay_am.py).
5. Each incident's notifications, counted per receiver, are compared with what is expected
   (bench/replay_verdict.py). Exit status 1 on any mismatch.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from contract.schema import parse_duration  # noqa: E402
from bench import replay_am as am  # noqa: E402
from bench import replay_rules as rr  # noqa: E402
from bench.replay_month import Province, province  # noqa: E402
from lab.procs import Proc, free_port  # noqa: E402
from bench.replay_verdict import Expectation, attribute, table  # noqa: E402
from collector.calendar import load_calendar  # noqa: E402

RULES = REPO / "collector" / "rules"
ALERTMANAGER_YML = REPO / "collector" / "alertmanager" / "alertmanager.yml"
PROMETHEUS_YML = REPO / "collector" / "prometheus" / "prometheus.yml"


class Prometheus:
    def __init__(self, work: Path):
        self.work, self.data, self.proc = work, work / "prom-data", None
        (work / "prometheus.yml").write_text("global: {scrape_interval: 1m}\n", encoding="utf-8")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = Proc(["prometheus", f"--config.file={self.work / 'prometheus.yml'}",
                                f"--storage.tsdb.path={self.data}", f"--web.listen-address=127.0.0.1:{self.port}",
                                "--storage.tsdb.retention.time=100y", "--query.max-samples=200000000"],
                               self.work / "prometheus.log")
        self.proc.wait_http(f"{self.url}/-/ready")

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()
            self.proc = None


def walk_routes(route: dict) -> List[dict]:
    return [route] + [r for child in route.get("routes", []) for r in walk_routes(child)]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def replay(p: Province, work: Path, factor: float, min_group_wait: float = am.MIN_GROUP_WAIT,
           rules_dir: Path = RULES) -> Dict[str, object]:
    """The whole replay; returns expected and counted notifications per incident and figures."""
    interval = float(parse_duration(yaml.safe_load(PROMETHEUS_YML.read_text())["global"]["evaluation_interval"]))
    alerts, records = rr.load_rules(rules_dir, interval)
    first_pass = [a for a in alerts if "ALERTS" not in a.expr]
    second_pass = [a for a in alerts if "ALERTS" in a.expr]

    log("writing the month as OpenMetrics")
    om = work / "month.om"
    with open(om, "w", encoding="utf-8") as f:
        lines = 0
        for line in p.openmetrics():
            f.write(line)
            lines += 1
    log(f"{lines:,} lines; promtool tsdb create-blocks-from openmetrics")
    prom = Prometheus(work)
    rr.backfill_openmetrics(om, prom.data, work)
    om.unlink()
    levels = rr.needed_levels(alerts, records)
    try:
        prom.start()
        skipped, ran = [], set()
        for n, level in enumerate(levels):
            present = rr.names_with_data(prom.url, p.start - 86400, p.end)
            run = [r for r in level if rr.reads_data(r, present)]
            skipped += [r["record"] for r in level if r not in run]
            ran |= {r["record"] for r in run}
            if not run:
                continue
            log(f"recording rules, level {n}: {', '.join(sorted({r['record'] for r in run}))} "
                "(promtool tsdb create-blocks-from rules)")
            rr.backfill_rules(run, prom.url, p.start - 86400, p.end, prom.data, work, str(n))
            prom.stop()
            prom.start()
        skipped = sorted(set(skipped) - ran)
        log(f"skipped {len(skipped)} recording rules reading no series of the replay: {', '.join(skipped)}")
        found: Dict[str, List[rr.Episode]] = {}
        log(f"evaluating {len(first_pass)} alerting rules over {p.days} days (query_range)")
        for rule in first_pass:
            found[rule.name] = rr.evaluate(prom.url, rule, p.start, p.end)
        (work / "alerts.om").write_text(rr.alerts_series(first_pass, found, p.end), encoding="utf-8")
        prom.stop()
        rr.backfill_openmetrics(work / "alerts.om", prom.data, work)
        prom.start()
        log(f"second pass over ALERTS: {', '.join(r.name for r in second_pass)}")
        for rule in second_pass:
            found[rule.name] = rr.evaluate(prom.url, rule, p.start, p.end)
    finally:
        prom.stop()
    fired = [(name, ep) for name, eps in found.items() for ep in eps]
    log(f"{len(fired)} firing episodes: " + ", ".join(f"{k} {v}" for k, v in
                                                     sorted(Counter(n for n, _ in fired).items())))
    return drive(p, work, factor, fired, min_group_wait)


def drive(p: Province, work: Path, factor: float, fired, min_group_wait: float) -> Dict[str, object]:
    clock = am.Clock(p.start, factor)
    hook = am.Counter(clock)
    config = am.compressed_config(ALERTMANAGER_YML, hook.url, factor, min_group_wait)
    am_yml = work / "alertmanager.yml"
    am_yml.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    shipped = yaml.safe_load(ALERTMANAGER_YML.read_text(encoding="utf-8"))
    repeat = float(parse_duration(shipped["route"]["repeat_interval"]))
    cache: Dict[tuple, List[str]] = {}

    def routes(labels: Dict[str, str]) -> List[str]:
        key = tuple(sorted((k, v) for k, v in labels.items() if k in ("alertname", "severity", "scope")))
        if key not in cache:
            cache[key] = am.routes_test(am_yml, dict(key))
        return cache[key]

    resolved = {r["name"]: r["webhook_configs"][0]["send_resolved"] for r in config["receivers"]}
    waits = [float(parse_duration(r["group_wait"])) * factor for r in walk_routes(config["route"]) if "group_wait" in r]
    expect = Expectation(routes, resolved, repeat, max(waits),
                         float(parse_duration(shipped["route"]["group_interval"])))
    expected = {inc.key: expect.incident(p, inc) for inc in p.incidents}

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = Proc(["prometheus-alertmanager", f"--config.file={am_yml}", f"--storage.path={work / 'am-data'}",
                       f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"],
                      work / "alertmanager.log")
    try:
        proc.wait_http(f"{url}/-/ready")
        clock.wall_origin = time.time() + 2.0  # the month starts 2 s from now
        driver = am.Driver(url, clock)
        events = []
        for name, ep in fired:
            ann = {"summary": f"{name} {ep.labels.get('commune', '')} {ep.labels.get('agent', '')}".strip()}
            events.append((ep.fired_at, 1, lambda ep=ep, ann=ann: [driver.fire(ep.labels, ann, ep.active_at)]))
            if ep.resolved_at is not None:
                events.append((ep.resolved_at, 0, lambda ep=ep, ann=ann: [
                    driver.resolve(ep.labels, ann, ep.active_at, ep.resolved_at)]))
        silences = []
        for inc in p.incidents:
            if inc.silence:
                def declare(inc=inc):
                    silences.append(am.silence_add(url, clock, inc.commune, inc.silence[0], inc.silence[1],
                                                   f"replay: {inc.key} {inc.note}"))
                    return []
                events.append((inc.silence[0], -1, declare))
        # group the posts of one evaluation instant into one request, as Prometheus sends them
        grouped: Dict[tuple, list] = {}
        for when, order, action in events:
            grouped.setdefault((when, order), []).append(action)
        batched = [(when, order, lambda acts=acts: [a for act in acts for a in act()])
                   for (when, order), acts in grouped.items()]
        log(f"driving Alertmanager: {p.days} days in {p.days * 86400 / factor:.0f} s "
            f"(compression {factor:g}x), {len(events)} alert changes")
        t0 = time.time()
        driver.run(batched, p.end + 3600)
        wall = time.time() - t0
        time.sleep(1.0)
    finally:
        proc.stop()
        hook.close()
    counted = attribute(p, hook.received)
    return {"expected": expected, "counted": counted, "received": hook.received, "silences": silences,
            "posts": driver.posts, "wall": wall, "config": config}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--communes", type=int, default=5)
    ap.add_argument("--start", default="2027-02-01", help="first day (Vietnam time); February 2027 holds Tết")
    ap.add_argument("--compression", type=float, default=4320.0,
                    help="simulated seconds per wall second (4320: a day in 20 s)")
    ap.add_argument("--min-group-wait", type=float, default=am.MIN_GROUP_WAIT,
                    help="floor of the compressed group_wait, wall seconds (default 0.25; 0: plain scaling)")
    ap.add_argument("--rules", type=Path, default=RULES, help="rule directory (default: collector/rules)")
    ap.add_argument("--keep", help="work directory to keep (default: a temporary one, removed)")
    args = ap.parse_args(argv)
    p = province(load_calendar(), dt.date.fromisoformat(args.start), args.days, args.communes)
    with tempfile.TemporaryDirectory(prefix="alert-replay-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = replay(p, work, args.compression, args.min_group_wait, args.rules)
    lines, bad = table(p, result["expected"], result["counted"])
    route = result["config"]["route"]
    print(f"Alert replay {p.first} + {p.days} days, {len(p.communes)} communes x 3 PCs, run "
          f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"Time compressed {args.compression:g}x: Alertmanager's intervals scaled the same "
          f"(group_interval {route['group_interval']}, repeat_interval {route['repeat_interval']} for 5m/4h; "
          f"group_wait {route['group_wait']}, at least {args.min_group_wait * 1000:.0f} ms of wall time); "
          f"{result['posts']} posts to "
          f"/api/v2/alerts in {result['wall']:.0f} s; {len(result['received'])} notifications received")
    print("\n".join(lines))
    bad_keys = {k for k in result["counted"] if result["counted"][k] != result["expected"].get(k, Counter())}
    for n in result["received"]:
        if n["incident"] in bad_keys:
            when = dt.datetime.fromtimestamp(n["sim"], dt.timezone(dt.timedelta(hours=7)))
            agents = ",".join(sorted(a["labels"].get("agent", "-") for a in n["alerts"]))
            print(f"  {n['incident']}: {when:%d/%m %H:%M:%S} ICT {n['receiver']} {n['status']} "
                  f"{n['alerts'][0]['labels'].get('alertname')} agents {agents}")
    print("verdict: " + ("every incident as expected" if not bad else f"{bad} mismatches"))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
