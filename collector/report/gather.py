"""Read the period's evidence from Prometheus into a plain report model (no formatting here)."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from collector.report import budget, queries
from collector.report import forecasts as forecasts_mod
from collector.promapi import Prometheus
from contract import thresholds

VN = dt.timezone(dt.timedelta(hours=7), "ICT")
REPLACE_AT = float(thresholds.CANDIDATE_SCORE)  # contract/thresholds.yaml, as the alert and dashboards
WATCH_AT = float(thresholds.WATCH_SCORE)
STATUSES = ("replace", "repair", "watch", "ok", "nodata")
YEAR = 365.25 * 86400

Key = Tuple[str, str]  # (commune, device)


class ReportError(Exception):
    """A problem the operator can act on: a bad period, no data, an unknown commune."""


@dataclass
class Period:
    start: dt.datetime
    end: dt.datetime  # exclusive; clipped to "now" for a period still running
    whole_month: bool

    @property
    def seconds(self) -> int:
        """The PromQL range of the period, ending at ``end``: whole seconds, never reaching back before
        ``start`` (a period begun less than a minute ago is not padded with the previous one)."""
        return max(1, int((self.end - self.start).total_seconds()))

    @property
    def range(self) -> str:
        return f"{self.seconds}s"


def parse_period(text: str, now: Optional[dt.datetime] = None) -> Period:
    """``2026-11`` (a month, Vietnam time) or ``2026-10-28..2026-11-27`` (days, end inclusive).

    Days and months are those of Vietnam (UTC+7: the date changes at 17:00 UTC). ``now`` (default:
    the wall clock) clips a period still running and must be timezone-aware; the period's bounds are
    in Vietnam time whatever zone ``now`` is given in.
    """
    now = _vn(now)
    m = re.fullmatch(r"(\d{4})-(\d{2})", text.strip())
    if m:
        year, month = int(m.group(1)), int(m.group(2))
        if not 1 <= month <= 12:
            raise ReportError(f"--period: month must be 01-12, got {text!r}")
        start = dt.datetime(year, month, 1, tzinfo=VN)
        end = dt.datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=VN)
        whole = True
    else:
        m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})", text.strip())
        if not m:
            raise ReportError(f"--period: expected YYYY-MM or YYYY-MM-DD..YYYY-MM-DD, got {text!r}")
        try:
            first, last = (dt.date.fromisoformat(g) for g in m.groups())
        except ValueError as exc:
            raise ReportError(f"--period: {exc}") from None
        if last < first:
            raise ReportError(f"--period: {last} is before {first}")
        start = dt.datetime(first.year, first.month, first.day, tzinfo=VN)
        end = dt.datetime(last.year, last.month, last.day, tzinfo=VN) + dt.timedelta(days=1)
        whole = False
    if start >= now:
        raise ReportError(f"--period {text} has not started yet")
    return Period(start, min(end, now), whole)


def _vn(now: Optional[dt.datetime]) -> dt.datetime:
    if now is None:
        return dt.datetime.now(VN)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got {now!r}")
    return now.astimezone(VN)


@dataclass
class FactorRow:
    name: str
    level: Optional[float]            # the recording rule's factor in [0, 1]
    evidence: Dict[str, float]        # measured values behind it (see render.evidence_text)


@dataclass
class DeviceRow:
    commune: str
    device: str
    kind: str
    model: str
    location: str
    age_years: Optional[float]
    rated_years: Optional[float]
    score: Optional[float]
    reason: str
    factors: List[FactorRow] = field(default_factory=list)
    daily: List[Tuple[float, float]] = field(default_factory=list)
    # the age comes from the BIOS date, not a purchase date of the fleet file
    age_estimated: bool = False
    # recommended actions (collector/rules/replacement.yml); None where Prometheus has none at all
    # (rules older than the actions): the status then follows the score alone
    actions: Optional[List[str]] = None

    @property
    def status(self) -> str:
        if self.score is None:
            return "nodata"
        if self.actions:
            return "replace" if "replace_device" in self.actions else "repair"
        if self.actions is None and self.score >= REPLACE_AT:
            return "replace"
        return "watch" if self.score >= WATCH_AT else "ok"


@dataclass
class CommuneBlock:
    code: str
    name: str
    province: str
    devices: List[DeviceRow]
    availability: List[Tuple[str, float, Optional[float]]]  # service, share, mean response seconds
    links: List[Tuple[str, Optional[float], Optional[float]]]  # hop, loss ratio, mean rtt seconds


@dataclass
class Report:
    period: Period
    source: str
    generated: dt.datetime
    communes: List[CommuneBlock]
    prices: Optional[budget.Prices] = None
    forecasts: Optional[forecasts_mod.Forecasts] = None  # the Forecasts section (forecasts.py)

    def summary(self) -> Dict[str, Dict[str, int]]:
        """kind -> status -> count, over the whole province."""
        out: Dict[str, Dict[str, int]] = {}
        for c in self.communes:
            for d in c.devices:
                row = out.setdefault(d.kind, {s: 0 for s in STATUSES})
                row[d.status] += 1
        return out

    def budget(self) -> List[budget.BudgetLine]:
        """The recommended actions of every device, counted and priced (no prices: none priced)."""
        prices = self.prices or budget.Prices("VND", "", {}, "")
        return budget.budget(((a, d.kind) for c in self.communes for d in c.devices for a in d.actions or ()),
                             prices)

    def to_replace(self) -> int:
        return sum(row["replace"] for row in self.summary().values())


# Which measured values explain which factor.
FACTOR_EVIDENCE = {
    "memory_pressure": ("memory_pressure_share",),
    "cpu_saturation": ("cpu_saturated_share",),
    "disk_health": ("smart_reallocated", "smart_pending", "smart_failing"),
    "hdd": ("has_hdd", "memory_total_bytes"),
    "battery_wear": ("battery_capacity",),
    "unexpected_restarts": ("unexpected_shutdowns",),
    "slow_boot": ("boot_seconds_median", "boot_seconds_max"),
    "pages": ("pages_total", "rated_pages"),
    "error_time": ("error_minutes", "pages_in_period"),
    "offline": ("offline_share",),
    "reboots": ("reboots",),
    "interface_errors": ("interface_error_share",),
    "gateway_loss": ("gateway_loss",),
    "battery_replace": ("battery_replace",),
    "battery_runtime": ("battery_runtime_seconds",),
}
KIND_FACTORS = {
    "pc": ("age", "memory_pressure", "cpu_saturation", "disk_health", "hdd", "unexpected_restarts", "slow_boot"),
    "laptop": ("age", "memory_pressure", "cpu_saturation", "disk_health", "hdd", "battery_wear",
               "unexpected_restarts", "slow_boot"),
    "printer": ("age", "pages", "error_time", "offline"),
    "router": ("age", "reboots", "interface_errors", "gateway_loss"),
    "ups": ("age", "reboots", "battery_replace", "battery_runtime"),
}


def _by_device(result: List[dict]) -> Dict[Key, float]:
    out: Dict[Key, float] = {}
    for r in result:
        m = r["metric"]
        if "commune" in m and "device" in m:
            out[(m["commune"], m["device"])] = float(r["value"][1])
    return out


def gather(prom: Prometheus, period: Period, communes: Sequence[str] = (), daily: bool = True,
           now: Optional[dt.datetime] = None) -> Report:
    """The report of ``period`` as Prometheus saw it at the period's end; ``now`` (default: the wall
    clock) is only the report's "generated" time."""
    at = period.end.timestamp()
    fill = {"P": period.range}

    def q(expr: str) -> List[dict]:
        return prom.query(expr.format(**fill), at)

    offices = {r["metric"].get("commune"): r["metric"] for r in q(queries.INVENTORY["communes"])}
    inventory = [r["metric"] for r in q(queries.INVENTORY["devices"])]
    # agents not tied to a device of the file are devices named after them (the rules' way)
    tied = {(d.get("commune"), d.get("agent")) for d in inventory if d.get("kind") in ("pc", "laptop")}
    for r in q(queries.INVENTORY["self_registered"]):
        m = r["metric"]
        if (m.get("commune"), m.get("agent")) in tied or not m.get("agent"):
            continue
        tied.add((m.get("commune"), m.get("agent")))
        model = " ".join(x for x in (m.get("vendor", ""), m.get("model", "")) if x)
        inventory.append({"commune": m.get("commune"), "device": m["agent"], "agent": m["agent"], "target": "",
                          "kind": m.get("kind") or "pc", "model": model, "location": ""})
    if not offices and not inventory:
        raise ReportError(
            f"no inventory in Prometheus at {prom.url} for {period.start:%Y-%m-%d}..{period.end:%Y-%m-%d}: "
            "commune_office_info and commune_device_info are empty (is the collector, with its fleet file, "
            "scraped by this Prometheus, and does the period hold data?)")
    known = sorted(set(offices) | {d.get("commune") for d in inventory})
    unknown = [c for c in communes if c not in known]
    if unknown:
        raise ReportError(f"unknown commune {', '.join(unknown)}: this Prometheus knows {', '.join(known)}")
    wanted = set(communes) or set(known)

    purchase = _by_device(q(queries.INVENTORY["purchase"]))
    estimated = {k: v for k, v in _by_device(q(queries.INVENTORY["purchase_estimated"])).items() if k not in purchase}
    purchase.update(estimated)
    rated = _by_device(q(queries.INVENTORY["rated_life"]))
    rated.update({k: v for k, v in _by_device(q(queries.INVENTORY["rated_life_recorded"])).items() if k not in rated})
    rated_pages = _by_device(q(queries.INVENTORY["rated_pages"]))
    scores = _by_device(q(queries.SCORES["score"]))
    reasons = {(r["metric"]["commune"], r["metric"]["device"]): r["metric"].get("reason", "none")
               for r in q(queries.SCORES["reason"]) if "device" in r["metric"]}
    score_time = _by_device(q(queries.SCORES["score_time"]))
    actions: Optional[Dict[Key, List[str]]] = None
    action_rows = q(queries.SCORES["action_time"])
    if action_rows:
        actions = {}
        for r in action_rows:
            m = r["metric"]
            key = (m.get("commune", ""), m.get("device", ""))
            # recorded with the device's latest score (the rules record both every 10 minutes)
            if float(r["value"][1]) >= score_time.get(key, 0.0) - 1200:
                actions.setdefault(key, []).append(m.get("action", ""))
        for key in actions:
            actions[key].sort(key=lambda a: budget.ACTIONS.index(a) if a in budget.ACTIONS else 99)
    levels: Dict[Key, Dict[str, float]] = {}
    for r in q(queries.SCORES["factor"]):
        m = r["metric"]
        levels.setdefault((m["commune"], m["device"]), {})[m["factor"]] = float(r["value"][1])
    evidence: Dict[str, Dict[Key, float]] = {name: _by_device(q(expr)) for name, expr in queries.EVIDENCE.items()}
    evidence["rated_pages"] = rated_pages
    per_commune = {name: q(expr) for name, expr in queries.COMMUNE.items()}
    gateway_loss = {r["metric"]["commune"]: float(r["value"][1]) for r in per_commune["gateway_loss"]}

    trends: Dict[Key, List[Tuple[float, float]]] = {}
    if daily:
        step = 86400.0
        start = min(period.start.timestamp() + step, at)
        for kind in sorted({d.get("kind", "") for d in inventory} & set(queries.DAILY)):
            by_ties = {}
            for r in prom.query_range(queries.DAILY[kind].format(**fill), start, at, step):
                m = r["metric"]
                by_ties[(m.get("commune"), m.get("agent"), m.get("target"))] = [
                    (float(ts), float(v)) for ts, v in r["values"]]
            for d in inventory:
                if d.get("kind") != kind:
                    continue
                tie = ((d.get("commune"), None, None) if kind == "router" else
                       (d.get("commune"), d.get("agent"), d.get("target") or None))
                if tie in by_ties:
                    trends[(d["commune"], d["device"])] = by_ties[tie]

    blocks = []
    for code in sorted(wanted):
        office = offices.get(code, {})
        rows = []
        for d in inventory:
            if d.get("commune") != code:
                continue
            key = (code, d.get("device", ""))
            kind = d.get("kind", "")
            age = (at - purchase[key]) / YEAR if key in purchase else None
            factors = []
            for name in KIND_FACTORS.get(kind, ("age",)):
                ev: Dict[str, float] = {}
                if name == "age":
                    if age is not None:
                        ev["years"] = age
                    if key in rated:
                        ev["rated_years"] = rated[key] / YEAR
                elif name == "gateway_loss":
                    if code in gateway_loss:
                        ev["gateway_loss"] = gateway_loss[code]
                else:
                    for e in FACTOR_EVIDENCE[name]:
                        if key in evidence[e]:
                            ev[e] = evidence[e][key]
                factors.append(FactorRow(name, levels.get(key, {}).get(name), ev))
            rows.append(DeviceRow(code, key[1], kind, d.get("model", ""), d.get("location", ""), age,
                                  rated[key] / YEAR if key in rated else None, scores.get(key),
                                  reasons.get(key, "none"), factors, trends.get(key, []),
                                  key in estimated, None if actions is None else actions.get(key, [])))
        rows.sort(key=lambda r: (-(r.score if r.score is not None else -1), r.device))
        avail = {r["metric"].get("service", ""): float(r["value"][1])
                 for r in per_commune["availability"] if r["metric"].get("commune") == code}
        resp = {r["metric"].get("service", ""): float(r["value"][1])
                for r in per_commune["response_seconds"] if r["metric"].get("commune") == code}
        loss = {r["metric"].get("hop", ""): float(r["value"][1])
                for r in per_commune["hop_loss"] if r["metric"].get("commune") == code}
        rtt = {r["metric"].get("hop", ""): float(r["value"][1])
               for r in per_commune["hop_rtt"] if r["metric"].get("commune") == code}
        hops = [h for h in ("gateway", "isp", "upstream", "service") if h in loss or h in rtt]
        blocks.append(CommuneBlock(code, office.get("name", code), office.get("province", ""), rows,
                                   [(s, avail[s], resp.get(s)) for s in sorted(avail)],
                                   [(h, loss.get(h), rtt.get(h)) for h in hops]))
    report = Report(period, prom.url, _vn(now), blocks)
    report.forecasts = forecasts_mod.gather(prom, period.end, period.range, {b.code: b.name for b in blocks})
    return report
