"""The rules side of the alert replay bench: the shipped rule files evaluated over the past by a
real Prometheus, and the alert state machine Prometheus applies to the results.

Prometheus evaluates rules only at the wall clock, so the replay splits the work honestly:
- recording rules: ``promtool tsdb create-blocks-from rules`` (Prometheus' own rule engine over
  the backfilled raw data), in dependency order, only those the alerts need;
- alerting rules: their expressions as written, ``/api/v1/query_range`` at the evaluation interval
  (each instant evaluated exactly as an instant query at that time), then :func:`episodes`, the
  pending -> firing -> resolved state machine of rules/alerting.go (``for``, ``keep_firing_for``);
- alerts over ``ALERTS`` (the escalation) in a second pass: the ALERTS series Prometheus would have
  written for the first pass are backfilled, and those rules evaluated the same way. Backfilled
  ALERTS carry no staleness markers, so a resolved alert stays visible to them for the 5-minute
  lookback (a live Prometheus ends it at once): the escalation may resolve up to 5 minutes late.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from contract.schema import parse_duration

MAX_POINTS = 10_000  # query_range allows 11,000 points per series


@dataclass
class Rule:
    name: str
    expr: str
    interval: float
    for_: float = 0.0
    keep_firing_for: float = 0.0
    labels: Dict[str, str] = field(default_factory=dict)
    annotations: Dict[str, str] = field(default_factory=dict)
    group: str = ""
    file: str = ""


@dataclass
class Episode:
    """One alert's life: pending from ``active_at``, firing from ``fired_at`` (None: it never
    fired), inactive from ``resolved_at`` (None: still active at the end of the replay)."""
    labels: Dict[str, str]
    active_at: float
    fired_at: Optional[float]
    resolved_at: Optional[float]


def episodes(present: Sequence[float], step: float, for_: float, keep_firing_for: float = 0.0,
             end: Optional[float] = None) -> List[Tuple[float, Optional[float], Optional[float]]]:
    """The (active_at, fired_at, resolved_at) of one label set, given the evaluation instants at
    which the expression returned it (sorted, on a grid of ``step``), as Prometheus does: a new
    alert is pending at its first instant, fires at the first instant ``for`` after that, and
    when the expression stops returning it a pending alert is dropped and a firing one resolved
    at that instant, unless ``keep_firing_for`` keeps it firing, counted from the first instant
    it was missing (rules/alerting.go, KeepFiringSince).
    ``end``: the last evaluation instant (default: the last present one)."""
    out: List[Tuple[float, Optional[float], Optional[float]]] = []
    if not present:
        return out
    last_eval = present[-1] if end is None else end
    eps = step / 1000
    active = fired = keep_since = None
    i, t = 0, present[0]
    while t <= last_eval + eps:
        seen = i < len(present) and abs(present[i] - t) < eps
        if seen:
            i += 1
            if active is None:
                active, fired = t, None
            keep_since = None
            if fired is None and t - active >= for_ - eps:
                fired = t
        elif active is not None:
            if fired is not None and keep_firing_for:
                keep_since = t if keep_since is None else keep_since  # first instant it was missing
            if keep_since is not None and t - keep_since < keep_firing_for - eps:
                pass  # kept firing
            else:
                if fired is not None:
                    out.append((active, fired, t))
                active = fired = keep_since = None
        if active is None:
            if i >= len(present):
                break
            t = present[i]  # jump over the instants where nothing is active
        else:
            t += step
    if active is not None and fired is not None:
        out.append((active, fired, None))
    return out


def load_rules(rule_dir: Path, default_interval: float) -> Tuple[List[Rule], List[dict]]:
    """Alerting rules (as Rule) and recording rules (as {record, expr, group, interval}) of every file."""
    alerts, records = [], []
    for path in sorted(rule_dir.glob("*.yml")):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            interval = float(parse_duration(group["interval"])) if "interval" in group else default_interval
            for r in group["rules"]:
                if "alert" in r:
                    alerts.append(Rule(r["alert"], r["expr"], interval, float(parse_duration(r.get("for", "0s"))),
                                       float(parse_duration(r.get("keep_firing_for", "0s"))),
                                       dict(r.get("labels") or {}), dict(r.get("annotations") or {}),
                                       group["name"], path.name))
                else:
                    records.append({"record": r["record"], "expr": r["expr"], "group": group["name"],
                                    "interval": interval, "labels": r.get("labels")})
    return alerts, records


_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def needed_levels(alerts: Sequence[Rule], records: Sequence[dict]) -> List[List[dict]]:
    """The recording rules the alerts read (transitively), in levels: a level reads only raw
    series and the levels before it."""
    by_name: Dict[str, List[dict]] = {}
    for r in records:
        by_name.setdefault(r["record"], []).append(r)
    wanted: Dict[str, None] = {}
    todo = [n for a in alerts for n in _NAME.findall(a.expr) if n in by_name]
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted[name] = None
            todo += [n for r in by_name[name] for n in _NAME.findall(r["expr"]) if n in by_name]
    level: Dict[str, int] = {}

    def depth(name: str, seen=()) -> int:
        if name not in level:
            if name in seen:
                raise ValueError(f"recording rule cycle through {name}")
            deps = [n for r in by_name[name] for n in _NAME.findall(r["expr"]) if n in by_name and n != name]
            level[name] = 1 + max((depth(n, seen + (name,)) for n in deps), default=-1)
        return level[name]

    levels: List[List[dict]] = []
    for name in wanted:
        d = depth(name)
        while len(levels) <= d:
            levels.append([])
        levels[d] += by_name[name]
    return levels


def names_with_data(prom_url: str, start: float, end: float) -> set:
    """The metric names the TSDB holds samples of in [start, end]."""
    q = urllib.parse.urlencode({"start": f"{start:.0f}", "end": f"{end:.0f}"})
    with urllib.request.urlopen(f"{prom_url}/api/v1/label/__name__/values?{q}", timeout=120) as resp:
        return set(json.load(resp)["data"])


def reads_data(rule: dict, present: set) -> bool:
    """Whether a recording rule reads any series the TSDB holds. One that reads none records at
    most constants, and every rule here that uses a constant joins it with series that are absent
    too, so skipping it changes no alert (the bench logs what it skips)."""
    return bool(set(_NAME.findall(rule["expr"])) & present)


def promtool(*args: str) -> str:
    done = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"promtool {' '.join(args[:3])} failed: {(done.stderr or done.stdout)[-800:]}")
    return done.stdout


def backfill_openmetrics(text_file: Path, data_dir: Path, work: Path) -> None:
    out = work / "blocks"
    shutil.rmtree(out, ignore_errors=True)
    promtool("tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=24h", str(text_file), str(out))
    move_blocks(out, data_dir)


def backfill_rules(level: List[dict], prom_url: str, start: float, end: float, data_dir: Path, work: Path,
               tag: str) -> None:
    """One level of recording rules through promtool's rule backfiller (Prometheus' rule engine)."""
    groups: Dict[Tuple[str, float], List[dict]] = {}
    for r in level:
        rule = {"record": r["record"], "expr": r["expr"]}
        if r.get("labels"):
            rule["labels"] = r["labels"]
        groups.setdefault((r["group"], r["interval"]), []).append(rule)
    for (group, interval), rules in groups.items():
        rule_file = work / f"rules-{tag}-{group}.yml"
        rule_file.write_text(yaml.safe_dump({"groups": [{"name": group, "rules": rules}]}), encoding="utf-8")
        out = work / f"rule-blocks-{tag}-{group}"
        shutil.rmtree(out, ignore_errors=True)
        promtool("tsdb", "create-blocks-from", "rules", f"--start={int(start)}", f"--end={int(end)}",
                 f"--url={prom_url}", f"--output-dir={out}", f"--eval-interval={int(interval)}s", str(rule_file))
        move_blocks(out, data_dir)


def move_blocks(src: Path, data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    for block in src.iterdir():
        if block.is_dir() and (block / "meta.json").exists():
            shutil.move(str(block), str(data_dir / block.name))


def query_range(prom_url: str, expr: str, start: float, end: float, step: float) -> Dict[tuple, List[float]]:
    """Label set (sorted items, no __name__) -> the instants it was returned, over [start, end]."""
    out: Dict[tuple, List[float]] = {}
    t = start
    while t <= end:
        chunk_end = min(end, t + step * (MAX_POINTS - 1))
        q = urllib.parse.urlencode({"query": expr, "start": f"{t:.3f}", "end": f"{chunk_end:.3f}", "step": f"{step}"})
        with urllib.request.urlopen(f"{prom_url}/api/v1/query_range?{q}", timeout=600) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise RuntimeError(f"query_range {expr[:60]!r}: {body}")
        for series in body["data"]["result"]:
            key = tuple(sorted((k, v) for k, v in series["metric"].items() if k != "__name__"))
            out.setdefault(key, []).extend(float(ts) for ts, _ in series["values"])
        t = chunk_end + step
    return out


def evaluate(prom_url: str, rule: Rule, start: float, end: float) -> List[Episode]:
    """Every episode of one alerting rule over [start, end] (evaluation instants on its interval)."""
    step = rule.interval
    first = start - start % step + step
    last = end - end % step
    result: List[Episode] = []
    for key, present in query_range(prom_url, rule.expr, first, last, step).items():
        labels = dict(key)
        labels.update(rule.labels)  # rule labels win, as in Prometheus
        labels["alertname"] = rule.name
        for active, fired, resolved in episodes(sorted(present), step, rule.for_, rule.keep_firing_for, last):
            result.append(Episode(labels, active, fired, resolved))
    return result


def alerts_series(rules: Sequence[Rule], found: Dict[str, List[Episode]], end: float) -> str:
    """The ALERTS{alertname, alertstate, ...} series Prometheus writes for these episodes, as
    OpenMetrics (value 1 at every evaluation instant the alert is pending or firing)."""
    samples: Dict[str, List[float]] = {}
    step_of = {r.name: r.interval for r in rules}
    for name, eps in sorted(found.items()):
        step = step_of[name]
        for ep in eps:
            stop = ep.resolved_at if ep.resolved_at is not None else end
            for state, a, b in (("pending", ep.active_at, ep.fired_at), ("firing", ep.fired_at, stop)):
                labels = ",".join(f'{k}="{v}"' for k, v in sorted({**ep.labels, "alertstate": state}.items()))
                times = samples.setdefault(labels, [])
                t = a
                while t < b - step / 1000:
                    times.append(t)
                    t += step
    lines = ["# TYPE ALERTS gauge\n"]
    for labels, times in sorted(samples.items()):  # a series' samples together, in time order
        lines += [f"ALERTS{{{labels}}} 1 {t:.3f}\n" for t in sorted(times)]
    lines.append("# EOF\n")
    return "".join(lines)
