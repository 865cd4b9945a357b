"""What the alert replay bench expects of each incident, and the verdict against what the
loopback webhook counted.

Expectations come from the ground truth of the synthetic month (bench/replay_month.py), the
thresholds written in the rules (AgentSilent/CommuneOffline: no push for 30 minutes while the
office is open, ``for: 10m``; DiskSmartFailing: ``for: 5m``; CriticalAlertUnresolved: ``for: 4h``)
and the receivers ``amtool config routes test`` gives for the alert's labels; never from the
replay's own output:
- holiday, maintenance (silenced), flaky link (stalls shorter than 30m + 10m): no notification;
- power cut while the office is open: CommuneOffline once per receiver, resolved once per
  receiver (send_resolved); AgentSilent of its PCs inhibited (scope device); its escalation only
  if it fires for over 4 hours;
- failing disk: DiskSmartFailing once per receiver for every day the PC is on with the bad disk
  (the SMART series stops while the PC is off, so the alert resolves each evening and fires again
  the next morning: the rules as written), repeated every repeat_interval while it fires, resolved
  each evening; CriticalAlertUnresolved (4 hours after it fired) to the escalation receivers.
Any notification no incident explains is a mismatch too ("unexpected").
"""
from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Callable, Dict, List, Optional, Tuple

from bench.replay_month import VN, Incident, Province, open_span

PUSH_SILENT, SILENT_FOR = 1800.0, 600.0  # AgentSilent / CommuneOffline: 30m without push, for: 10m
SMART_FOR, ESCALATE_FOR = 300.0, 4 * 3600.0
SLACK = 3600.0  # notifications up to an hour after an incident's end belong to it (resolutions)
Key = Tuple[str, str, str]  # (alertname, receiver, status)


class Expectation:
    """``first_delay``: the longest group_wait (simulated seconds) before a first notification;
    ``group_interval``: a repeat goes out at the first flush after repeat_interval, so each one
    may come up to that much later. An episode whose count of repeats these leave ambiguous is
    refused (move the incident) rather than counted either way."""

    def __init__(self, routes: Callable[[Dict[str, str]], List[str]], resolved: Dict[str, bool],
                 repeat_interval: float, first_delay: float, group_interval: float, jitter: float = 300.0):
        self.routes, self.resolved, self.repeat = routes, resolved, repeat_interval
        self.first_delay, self.group_interval, self.jitter = first_delay, group_interval, jitter

    def repeats(self, name: str, fired: float, ended: float) -> int:
        most = int((ended + self.jitter - fired) // self.repeat)
        least = int(max(0.0, ended - self.jitter - fired - self.first_delay) // (self.repeat + self.group_interval))
        if most != least:
            raise ValueError(f"{name} fires {(ended - fired) / 3600:.2f} h: {least} or {most} repeats depending on "
                             "Alertmanager's flush times; move the incident for an unambiguous count")
        return most

    def notified(self, out: Counter, labels: Dict[str, str], fired: float, ended: float) -> None:
        """One firing episode: first notification, repeats, resolution, per receiver."""
        repeats = self.repeats(labels["alertname"], fired, ended)
        for receiver in self.routes(labels):
            out[(labels["alertname"], receiver, "firing")] += 1 + repeats
            if self.resolved.get(receiver):
                out[(labels["alertname"], receiver, "resolved")] += 1

    def incident(self, p: Province, inc: Incident) -> Counter:
        out: Counter = Counter()
        if inc.kind in ("holiday", "maintenance", "flaky-link"):
            return out
        if inc.kind == "power-cut":
            for fired, ended in open_overlaps(p, inc.commune, inc.start + PUSH_SILENT, inc.end, SILENT_FOR):
                labels = {"alertname": "CommuneOffline", "severity": "critical", "scope": "commune",
                          "commune": inc.commune}
                self.notified(out, labels, fired, ended)
                self.escalation(out, labels, fired, ended)
            return out
        if inc.kind == "failing-disk":
            for on, off in p.pc_on(inc.commune, inc.agent):
                lo, hi = max(on, inc.start), min(off, inc.end)
                if hi - lo > SMART_FOR:
                    labels = {"alertname": "DiskSmartFailing", "severity": "critical", "scope": "device",
                              "commune": inc.commune, "agent": inc.agent, "device": "sda"}
                    # off: the last sample, then the 5-minute lookback; the disk replaced: at once
                    ended = hi + (300.0 if hi == off else 0.0)
                    self.notified(out, labels, lo + SMART_FOR, ended)
                    self.escalation(out, labels, lo + SMART_FOR, ended)
            return out
        raise ValueError(f"unknown incident kind {inc.kind}")

    def escalation(self, out: Counter, labels: Dict[str, str], fired: float, ended: float) -> None:
        if ended - fired > ESCALATE_FOR:
            # CriticalAlertUnresolved keeps the escalated alert's labels (scope too) and its name
            esc = {**labels, "alertname": "CriticalAlertUnresolved", "escalated_alertname": labels["alertname"]}
            self.notified(out, esc, fired + ESCALATE_FOR, ended)


def open_overlaps(p: Province, commune: str, lo: float, hi: float, for_: float) -> List[Tuple[float, float]]:
    """(fired, ended) of a condition true over [lo, hi) but only counted while the office is
    open, needing ``for_`` of it in one stretch."""
    out = []
    day = dt.datetime.fromtimestamp(lo, VN).date()
    while day <= dt.datetime.fromtimestamp(hi, VN).date():
        span = open_span(p.calendar, commune, day)
        if span:
            shifts = p.calendar.hours(commune).shifts(day.weekday(), day in p.calendar.working_days)
            midnight = span[0] - shifts[0][0] * 60
            for start, end in shifts:
                a, b = max(lo, midnight + start * 60), min(hi, midnight + end * 60)
                if b - a > for_:
                    out.append((a + for_, b))
        day += dt.timedelta(1)
    return out


def attribute(p: Province, received: List[dict]) -> Dict[str, Counter]:
    """Counts per incident key (and "unexpected") of (alertname, receiver, status) notifications.
    A notification belongs to the most specific incident covering its commune and instant."""
    out: Dict[str, Counter] = {inc.key: Counter() for inc in p.incidents}
    out["unexpected"] = Counter()
    for n in received:
        labels = n["alerts"][0]["labels"]
        commune = n["group"].get("commune") or labels.get("commune", "")
        alertname = n["group"].get("alertname") or labels.get("alertname", "")
        owner: Optional[Incident] = None
        for inc in p.incidents:
            if inc.covers(commune, n["sim"], SLACK) and (owner is None or owner.commune is None):
                owner = inc
        n["incident"] = owner.key if owner else "unexpected"
        out[n["incident"]][(alertname, n["receiver"], n["status"])] += 1
    return out


def summary(c: Counter) -> str:
    """'CommuneOffline 4 firing + 4 resolved (email, telegram, webhook, zalo)' per alert."""
    if not c:
        return "none"
    parts = []
    for name in sorted({k[0] for k in c}):
        firing = sum(v for k, v in c.items() if k[0] == name and k[2] == "firing")
        resolved = sum(v for k, v in c.items() if k[0] == name and k[2] == "resolved")
        receivers = sorted({k[1] for k in c if k[0] == name})
        parts.append(f"{name} {firing} firing + {resolved} resolved ({', '.join(receivers)})")
    return "; ".join(parts)


def table(p: Province, expected: Dict[str, Counter], counted: Dict[str, Counter]) -> Tuple[List[str], int]:
    """The printed table and the number of mismatches."""
    rows = [("incident", "commune", "when (ICT)", "expected", "counted", "verdict")]
    bad = 0
    for inc in sorted(p.incidents, key=lambda i: i.start):
        when = dt.datetime.fromtimestamp(inc.start, VN).strftime("%a %d/%m %H:%M") + " " + inc.note
        ok = expected[inc.key] == counted[inc.key]
        bad += not ok
        muted = "muted: none" if not expected[inc.key] else summary(expected[inc.key])
        rows.append((inc.key, inc.commune or "all", when, muted, summary(counted[inc.key]),
                     "ok" if ok else "MISMATCH"))
    if counted["unexpected"]:
        bad += 1
        rows.append(("unexpected", "", "", "none", summary(counted["unexpected"]), "MISMATCH"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [" | ".join(r[i].ljust(widths[i]) if i < 3 else r[i] for i in range(6)) for r in rows]
    return lines, bad
