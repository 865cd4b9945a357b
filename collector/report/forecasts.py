"""The report's Forecasts section: supplies to order, devices reaching their rated life, system
disks filling up, from the recording rules of collector/rules/forecasts.yml as of the period's end.

Kept apart from the replacement part of the report (gather.py, render.py): ``gather`` reads, and
``html_section`` renders, only what this module defines.
"""
from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

from collector.report import queries, texts

# What the section lists: what runs out, fills or reaches its rating within these many days.
SUPPLY_DAYS = 30
LIFE_DAYS = 365
DISK_DAYS = 30


@dataclass
class SupplyForecast:
    commune: str
    device: str          # the inventory's device id, else the SNMP target name
    supply: str          # the supply's description as the printer names it
    level: Optional[float]
    days: float


@dataclass
class LifeForecast:
    commune: str
    device: str
    kind: str
    model: str
    what: str            # "device" (its rated life), "pages" (printer's rated lifetime pages) or "battery" (UPS battery)
    days: float


@dataclass
class DiskForecast:
    commune: str
    device: str          # the inventory's device id, else the agent id
    mountpoint: str
    bytes_per_day: Optional[float]
    days: float


@dataclass
class Forecasts:
    at: dt.datetime
    battery_years: Optional[float] = None
    supplies: List[SupplyForecast] = field(default_factory=list)
    life: List[LifeForecast] = field(default_factory=list)
    disks: List[DiskForecast] = field(default_factory=list)


def gather(prom, at: dt.datetime, range_: str, communes: Mapping[str, str]) -> Forecasts:
    """The forecasts at ``at`` of the ``communes`` (code -> name) of the report, soonest first."""
    ts = at.timestamp()

    def q(name: str) -> List[Tuple[Dict[str, str], float]]:
        return [(r["metric"], float(r["value"][1]))
                for r in prom.query(queries.FORECASTS[name].format(P=range_), ts)
                if r["metric"].get("commune") in communes]

    by_target: Dict[Tuple[str, str, str], str] = {}
    by_agent: Dict[Tuple[str, str], str] = {}
    models: Dict[Tuple[str, str], str] = {}
    for m, _ in q("devices"):
        key = (m.get("commune", ""), m.get("device", ""))
        models[key] = m.get("model", "")
        if m.get("target"):
            by_target[(key[0], m.get("agent", ""), m["target"])] = key[1]
        elif m.get("kind") in ("pc", "laptop") and m.get("agent"):
            by_agent[(key[0], m["agent"])] = key[1]

    out = Forecasts(at)
    battery = prom.query(queries.FORECASTS["battery_rated_seconds"], ts)
    if battery:
        out.battery_years = float(battery[0]["value"][1]) / (365.25 * 86400)
    levels = {(m["commune"], m.get("agent", ""), m.get("target", ""), m.get("index", "")): v
              for m, v in q("supply_level")}
    for m, days in q("supply_days"):
        if days > SUPPLY_DAYS:
            continue
        tie = (m["commune"], m.get("agent", ""), m.get("target", ""))
        out.supplies.append(SupplyForecast(m["commune"], by_target.get(tie, tie[2]), m.get("description", ""),
                                           levels.get(tie + (m.get("index", ""),)), days))
    for name, what in (("rated_life_days", "device"), ("rated_pages_days", "pages"), ("ups_battery_days", "battery")):
        for m, days in q(name):
            if days <= LIFE_DAYS and "device" in m:
                key = (m["commune"], m["device"])
                out.life.append(LifeForecast(key[0], key[1], m.get("kind", ""), models.get(key, ""), what, days))
    use = {(m["commune"], m.get("agent", ""), m.get("mountpoint", "")): v for m, v in q("disk_bytes_per_day")}
    for m, days in q("disk_days"):
        if days > DISK_DAYS:
            continue
        key = (m["commune"], m.get("agent", ""), m.get("mountpoint", ""))
        out.disks.append(DiskForecast(key[0], by_agent.get(key[:2], key[1]), key[2], use.get(key), days))
    out.supplies.sort(key=lambda f: (f.days, f.commune, f.device, f.supply))
    out.life.sort(key=lambda f: (f.days, f.commune, f.device, f.what))
    out.disks.sort(key=lambda f: (f.days, f.commune, f.device, f.mountpoint))
    return out


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def days_text(days: float, lang: str) -> str:
    if days <= 0:
        return texts.ft("past", lang)
    return texts.number(days, lang, 1 if days < 10 else 0)


def html_section(fc: Optional[Forecasts], names: Mapping[str, str], lang: str) -> str:
    """The Forecasts section of the HTML report (empty when the report has no forecasts part)."""
    if fc is None:
        return ""
    f = lambda key, **kw: texts.ft(key, lang, **kw)  # noqa: E731
    t = lambda key: texts.t(key, lang)  # noqa: E731
    commune = lambda code: names.get(code, code)  # noqa: E731
    years = texts.number(fc.battery_years, lang, 0) if fc.battery_years is not None else "?"
    out = [f"<h2>{_e(f('forecasts'))}</h2>",
           f"<p>{_e(f('intro', date=texts.date(fc.at.date(), lang), supply=SUPPLY_DAYS, life=LIFE_DAYS, disk=DISK_DAYS))}</p>"]

    def table(title: str, head: List[str], rows: List[List[Tuple[str, bool]]], none: str) -> None:
        out.append(f"<h3>{_e(title)}</h3>")
        if not rows:
            out.append(f"<p class=\"muted\">{_e(none)}</p>")
            return
        out.append("<table class=\"forecasts\"><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head)
                   + "</tr></thead><tbody>")
        for cells in rows:
            out.append("<tr>" + "".join(f"<td class=\"num\">{_e(c)}</td>" if num else f"<td>{_e(c)}</td>"
                                        for c, num in cells) + "</tr>")
        out.append("</tbody></table>")

    table(f("supplies"), [t("commune"), t("device"), f("supply"), f("level"), f("days_left")],
          [[(commune(s.commune), False), (s.device, False), (s.supply, False),
            (texts.percent(s.level, lang) if s.level is not None else "—", True), (days_text(s.days, lang), True)]
           for s in fc.supplies], f("none_supplies"))
    table(f("life"), [t("commune"), t("device"), t("kind"), t("model"), f("rated_of"), f("days_left")],
          [[(commune(d.commune), False), (d.device, False), (texts.label(texts.KINDS, d.kind, lang), False),
            (d.model, False), (f(d.what), False), (days_text(d.days, lang), True)]
           for d in fc.life], f("none_life"))
    table(f("disks"), [t("commune"), t("device"), f("mountpoint"), f("per_day"), f("days_left")],
          [[(commune(d.commune), False), (d.device, False), (d.mountpoint, False),
            (f("gb", n=texts.number(d.bytes_per_day / 1e9, lang, 2)) if d.bytes_per_day is not None else "—", True),
            (days_text(d.days, lang), True)]
           for d in fc.disks], f("none_disks"))
    out.append(f"<p class=\"muted\">{_e(f('method', battery_years=years))}</p>")
    return "".join(out)
