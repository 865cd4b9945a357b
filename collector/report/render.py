"""Render the report model as self-contained HTML (inline CSS and SVG), PDF (WeasyPrint) or CSV."""
from __future__ import annotations

import csv
import html
import io
import os
from typing import List, Optional, Sequence, Tuple

from collector.report import budget, forecasts, texts
from collector.report.gather import REPLACE_AT, STATUSES, WATCH_AT, DeviceRow, FactorRow, Report, ReportError

CSS = """
@page { size: A4 landscape; margin: 12mm; }
body { font-family: "DejaVu Sans", "Noto Sans", Arial, sans-serif; font-size: 10pt; color: #1d2733; margin: 0 1em; }
h1 { font-size: 18pt; margin: 0.4em 0 0.1em; color: #123a63; }
h2 { font-size: 14pt; margin: 1.2em 0 0.3em; color: #123a63; border-bottom: 2px solid #123a63; }
h3 { font-size: 11pt; margin: 0.8em 0 0.2em; }
p.meta { color: #566; margin: 0 0 0.6em; }
table { border-collapse: collapse; width: 100%; margin: 0.3em 0 0.8em; page-break-inside: auto; }
tr { page-break-inside: avoid; }
th, td { border: 1px solid #c8d0d8; padding: 3px 5px; text-align: left; vertical-align: top; }
th { background: #e8eef4; }
td.num { text-align: right; white-space: nowrap; }
.replace { background: #fde2e1; } .repair { background: #fde9d4; } .watch { background: #fff3cd; } .ok { background: #e3f4e6; }
.nodata { background: #f1f1f1; }
ul.ev { margin: 0; padding-left: 1.1em; }
.muted { color: #778; }
section.commune { page-break-before: always; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def evidence_text(f: FactorRow, lang: str) -> str:
    """One sentence with the measured values behind a factor, or 'no data'."""
    ev, num, pct = f.evidence, texts.number, texts.percent
    e = texts.EVIDENCE
    try:
        if f.name == "age":
            if "years" not in ev:
                return texts.t("no_data", lang)
            rated = num(ev["rated_years"], lang, 0) if "rated_years" in ev else "?"
            return e["age"][lang].format(years=num(ev["years"], lang, 1), rated=rated)
        if f.name in ("memory_pressure", "cpu_saturation", "offline", "interface_errors", "gateway_loss"):
            key = {"memory_pressure": "memory_pressure_share", "cpu_saturation": "cpu_saturated_share",
                   "offline": "offline_share", "interface_errors": "interface_error_share",
                   "gateway_loss": "gateway_loss"}[f.name]
            return e[f.name][lang].format(share=pct(ev[key], lang))
        if f.name == "disk_health":
            failing = e["disk_failing"][lang] if ev.get("smart_failing", 0) >= 1 else ""
            return e["disk_health"][lang].format(reallocated=num(ev.get("smart_reallocated", 0), lang),
                                                 pending=num(ev.get("smart_pending", 0), lang), failing=failing)
        if f.name == "hdd":
            if not ev.get("has_hdd"):
                return "SSD" if "memory_total_bytes" in ev else texts.t("no_data", lang)
            return e["hdd"][lang].format(ram=num(ev.get("memory_total_bytes", 0) / 1e9, lang, 1))
        if f.name == "battery_wear":
            return e["battery_wear"][lang].format(capacity=pct(ev["battery_capacity"], lang))
        if f.name == "unexpected_restarts":
            count = ev["unexpected_shutdowns"]  # increase() may extrapolate a hair: 3.0002 is 3
            return e["unexpected_restarts_one" if round(count) == 1 else "unexpected_restarts"][lang].format(
                count=num(count, lang))
        if f.name == "slow_boot":
            return e["slow_boot"][lang].format(typical=num(ev["boot_seconds_median"] / 60, lang, 1),
                                               max=num(ev["boot_seconds_max"] / 60, lang, 1))
        if f.name == "pages":
            rated = num(ev["rated_pages"], lang) if "rated_pages" in ev else "?"
            return e["pages"][lang].format(pages=num(ev["pages_total"], lang), rated=rated)
        if f.name == "error_time":
            pages = ev.get("pages_in_period", 0)
            per_k = ev["error_minutes"] / pages * 1000 if pages > 0 else ev["error_minutes"]
            return e["error_time"][lang].format(minutes=num(per_k, lang, 1))
        if f.name == "reboots":
            return e["reboots"][lang].format(count=num(ev["reboots"], lang))
        if f.name == "battery_replace":
            return e["battery_replace"][lang] if ev["battery_replace"] >= 1 else "—"
        if f.name == "battery_runtime":
            return e["battery_runtime"][lang].format(minutes=num(ev["battery_runtime_seconds"] / 60, lang, 0))
    except KeyError:
        return texts.t("no_data", lang)
    return texts.t("no_data", lang)


def sparkline(points: Sequence[Tuple[float, float]], width: int = 160, height: int = 32) -> str:
    """An inline SVG polyline of the daily values (empty when fewer than two points)."""
    if len(points) < 2:
        return ""
    values = [v for _, v in points]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    step = (width - 4) / (len(values) - 1)
    coords = " ".join(f"{2 + i * step:.1f},{height - 2 - (v - lo) / span * (height - 4):.1f}"
                      for i, v in enumerate(values))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img"><polyline fill="none" stroke="#1f6fb2" '
            f'stroke-width="1.5" points="{coords}"/></svg>')


def bars(factors: Sequence[FactorRow], lang: str, width: int = 150) -> str:
    """Inline SVG bars: one per factor level (0-1)."""
    rows = [f for f in factors if f.level is not None]
    if not rows:
        return ""
    h = 12
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h * len(rows)}" role="img">']
    for i, f in enumerate(rows):
        w = max(1.0, f.level * (width - 2))
        colour = "#c0392b" if f.level >= 0.6 else "#e0a800" if f.level >= 0.3 else "#2e8b57"
        parts.append(f'<rect x="0" y="{i * h + 2}" width="{w:.1f}" height="{h - 4}" fill="{colour}">'
                     f'<title>{_e(texts.label(texts.FACTORS, f.name, lang))}: {f.level:.2f}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def _score(d: DeviceRow, lang: str) -> str:
    return texts.number(d.score, lang, 0) if d.score is not None else "—"


def _age(d: DeviceRow, lang: str) -> str:
    if d.age_years is None:
        return "—"
    return texts.t("years", lang, n=texts.number(d.age_years, lang, 1)) + (texts.t("estimated_age", lang)
                                                                         if d.age_estimated else "")


def html_report(report: Report, lang: str) -> str:
    t = lambda key, **kw: texts.t(key, lang, **kw)  # noqa: E731
    p = report.period
    period = texts.period_name(p.start.date(), (p.end - p.start.resolution).date(), lang, p.whole_month)
    out: List[str] = [
        "<!doctype html>", f'<html lang="{lang}"><head><meta charset="utf-8">',
        f"<title>{_e(t('title'))} — {_e(period)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(t('title'))}</h1>",
        f"<p class=\"meta\">{_e(t('subtitle', period=period))}<br>"
        f"{_e(t('generated', date=texts.date(report.generated.date(), lang), source=report.source))}</p>",
        f"<h2>{_e(t('province_summary'))}</h2>",
        f"<p>{_e(t('summary_intro', replace=texts.number(REPLACE_AT, lang), watch=texts.number(WATCH_AT, lang)))}</p>",
        "<table class=\"summary\"><thead><tr>"
        f"<th>{_e(t('kind'))}</th><th>{_e(t('devices'))}</th>"
        + "".join(f"<th>{_e(t('status_' + st))}</th>" for st in STATUSES)
        + "</tr></thead><tbody>",
    ]
    summary = report.summary()
    totals = {st: 0 for st in STATUSES}
    for kind in sorted(summary, key=lambda k: list(texts.KINDS).index(k) if k in texts.KINDS else 99):
        row = summary[kind]
        for k in totals:
            totals[k] += row[k]
        out.append(f"<tr><td>{_e(texts.label(texts.KINDS, kind, lang))}</td>"
                   f"<td class=\"num\">{sum(row.values())}</td>"
                   + "".join(f"<td class=\"num\">{row[st]}</td>" for st in STATUSES) + "</tr>")
    out.append(f"<tr><th>{_e(t('total'))}</th><th class=\"num\">{sum(totals.values())}</th>"
               + "".join(f"<th class=\"num\">{totals[k]}</th>" for k in STATUSES)
               + "</tr></tbody></table>")
    out.append(f"<p><strong>{_e(t('estimated', n=report.to_replace(), m=totals['repair']))}</strong></p>")
    out.append(_budget_table(report, lang))
    # province-wide ranking
    ranked = sorted((d for c in report.communes for d in c.devices),
                    key=lambda d: -(d.score if d.score is not None else -1))
    out.append(f"<h2>{_e(t('ranked'))}</h2>")
    out.append(_device_table(ranked, lang, with_commune=True, names={c.code: c.name for c in report.communes}))
    out.append(forecasts.html_section(report.forecasts, {c.code: c.name for c in report.communes}, lang))
    for c in report.communes:
        out.append(f"<section class=\"commune\"><h2>{_e(c.name)} ({_e(c.code)})"
                   + (f" — {_e(c.province)}" if c.province else "") + "</h2>")
        if not c.devices:
            out.append(f"<p class=\"muted\">{_e(t('no_devices'))}</p>")
        else:
            out.append(_device_table(c.devices, lang))
            out.append(_evidence_tables(c.devices, lang))
        out.append(_service_tables(c, lang))
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)


def _device_table(devices: Sequence[DeviceRow], lang: str, with_commune: bool = False,
                  names: Optional[dict] = None) -> str:
    t = lambda key: texts.t(key, lang)  # noqa: E731
    head = [t("rank")] + ([t("commune")] if with_commune else []) + [
        t("device"), t("kind"), t("model"), t("location"), t("age"), t("score"), t("reason"), t("action"), t("status")]
    rows = ["<table class=\"devices\"><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head)
            + "</tr></thead><tbody>"]
    for i, d in enumerate(devices, 1):
        cells = [f"<td class=\"num\">{i}</td>"]
        if with_commune:
            cells.append(f"<td>{_e((names or {}).get(d.commune, d.commune))}</td>")
        cells += [f"<td>{_e(d.device)}</td>", f"<td>{_e(texts.label(texts.KINDS, d.kind, lang))}</td>",
                  f"<td>{_e(d.model)}</td>", f"<td>{_e(d.location)}</td>", f"<td class=\"num\">{_e(_age(d, lang))}</td>",
                  f"<td class=\"num\">{_e(_score(d, lang))}</td>",
                  f"<td>{_e(texts.label(texts.FACTORS, d.reason, lang))}</td>",
                  f"<td>{_e(_actions(d, lang))}</td>",
                  f"<td>{_e(texts.t('status_' + d.status, lang))}</td>"]
        rows.append(f"<tr class=\"{d.status}\">" + "".join(cells) + "</tr>")
    rows.append("</tbody></table>")
    return "".join(rows)


def _actions(d: DeviceRow, lang: str) -> str:
    return " + ".join(texts.label(texts.ACTIONS, a, lang) for a in d.actions or ()) or "—"


def _budget_table(report: Report, lang: str) -> str:
    t = lambda key, **kw: texts.t(key, lang, **kw)  # noqa: E731
    lines = report.budget()
    out = [f"<h2>{_e(t('budget'))}</h2>"]
    if not lines:
        return out[0] + f"<p class=\"muted\">{_e(t('no_actions'))}</p>"
    prices = report.prices
    currency = prices.currency if prices else "VND"
    if prices:
        out.append(f"<p>{_e(t('budget_intro', source=os.path.basename(prices.source), reviewed=prices.reviewed))}</p>")
    out.append(f"<table class=\"budget\"><thead><tr><th>{_e(t('action'))}</th><th>{_e(t('kind'))}</th>"
               f"<th>{_e(t('item'))}</th><th>{_e(t('quantity'))}</th><th>{_e(t('unit_price', currency=currency))}</th>"
               f"<th>{_e(t('line_total', currency=currency))}</th></tr></thead><tbody>")
    for line in lines:
        item = line.unit.item[lang] if line.unit else t("no_price")
        unit = texts.number(line.unit.price, lang) if line.unit else "—"
        amount = texts.number(line.total, lang) if line.total is not None else "—"
        out.append(f"<tr><td>{_e(texts.label(texts.ACTIONS, line.action, lang))}</td>"
                   f"<td>{_e(texts.label(texts.KINDS, line.kind, lang))}</td><td>{_e(item)}</td>"
                   f"<td class=\"num\">{line.count}</td><td class=\"num\">{_e(unit)}</td>"
                   f"<td class=\"num\">{_e(amount)}</td></tr>")
    out.append(f"<tr><th colspan=\"5\">{_e(t('budget_total'))}</th>"
               f"<th class=\"num\">{_e(texts.number(budget.total(lines), lang))}</th></tr></tbody></table>")
    unpriced = sum(1 for line in lines if line.unit is None)
    if unpriced:
        out.append(f"<p class=\"muted\">{_e(t('no_price_note', n=unpriced))}</p>")
    return "".join(out)


def _evidence_tables(devices: Sequence[DeviceRow], lang: str) -> str:
    t = lambda key: texts.t(key, lang)  # noqa: E731
    out = [f"<h3>{_e(t('evidence'))}</h3><table class=\"evidence\"><thead><tr><th>{_e(t('device'))}</th>"
           f"<th>{_e(t('factor'))}</th><th>{_e(t('value'))}</th><th>{_e(t('measured'))}</th>"
           f"<th>{_e(t('trend'))}</th></tr></thead><tbody>"]
    for d in devices:
        chart = bars(d.factors, lang)
        spark = sparkline(d.daily)
        spark_cell = (f"{spark}<br><span class=\"muted\">{_e(texts.label(texts.SPARK, d.kind, lang))}</span>"
                      if spark else "")
        for j, f in enumerate(d.factors):
            first = j == 0
            lead = (f"<td rowspan=\"{len(d.factors)}\"><strong>{_e(d.device)}</strong><br>{chart}</td>"
                    if first else "")
            trend = f"<td rowspan=\"{len(d.factors)}\">{spark_cell}</td>" if first else ""
            level = f"{texts.number(f.level, lang, 2)}" if f.level is not None else "—"
            out.append(f"<tr>{lead}<td>{_e(texts.label(texts.FACTORS, f.name, lang))}</td>"
                       f"<td class=\"num\">{_e(level)}</td><td>{_e(evidence_text(f, lang))}</td>{trend}</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _service_tables(c, lang: str) -> str:
    t = lambda key: texts.t(key, lang)  # noqa: E731
    out = [f"<h3>{_e(t('software'))}</h3>"]
    if c.availability:
        out.append(f"<table class=\"software\"><thead><tr><th>{_e(t('service'))}</th><th>{_e(t('availability'))}</th>"
                   f"<th>{_e(t('response'))}</th></tr></thead><tbody>")
        for service, share, resp in c.availability:
            rt = f"{texts.number(resp * 1000, lang, 0)} ms" if resp is not None else "—"
            out.append(f"<tr><td>{_e(service)}</td><td class=\"num\">{_e(texts.percent(share, lang))}</td>"
                       f"<td class=\"num\">{_e(rt)}</td></tr>")
        out.append("</tbody></table>")
    else:
        out.append(f"<p class=\"muted\">{_e(t('no_data'))}</p>")
    out.append(f"<h3>{_e(t('links'))}</h3>")
    if c.links:
        out.append(f"<table class=\"links\"><thead><tr><th>{_e(t('hop'))}</th><th>{_e(t('loss'))}</th>"
                   f"<th>{_e(t('rtt'))}</th></tr></thead><tbody>")
        for hop, loss, rtt in c.links:
            ls = texts.percent(loss, lang) if loss is not None else "—"
            rs = f"{texts.number(rtt * 1000, lang, 1)} ms" if rtt is not None else "—"
            out.append(f"<tr><td>{_e(texts.label(texts.HOPS, hop, lang))}</td><td class=\"num\">{_e(ls)}</td>"
                       f"<td class=\"num\">{_e(rs)}</td></tr>")
        out.append("</tbody></table>")
    else:
        out.append(f"<p class=\"muted\">{_e(t('no_data'))}</p>")
    out.append(f"<p class=\"muted\">{_e(t('where_fault'))}</p>")
    return "".join(out)


def csv_report(report: Report, lang: str) -> str:
    """One row per device and factor, for spreadsheets (UTF-8 with BOM so Excel reads Vietnamese)."""
    t = lambda key: texts.t(key, lang)  # noqa: E731
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([t("commune"), t("device"), t("kind"), t("model"), t("location"), t("age"), t("score"),
                t("reason"), t("action"), t("status"), t("factor"), t("value"), t("measured")])
    for c in report.communes:
        for d in c.devices:
            for f in d.factors or [FactorRow("none", None, {})]:
                w.writerow([c.code, d.device, d.kind, d.model, d.location,
                            f"{d.age_years:.1f}" if d.age_years is not None else "",
                            f"{d.score:.0f}" if d.score is not None else "", d.reason,
                            "+".join(d.actions or ()), d.status, f.name,
                            f"{f.level:.3f}" if f.level is not None else "", evidence_text(f, lang)])
    return "\ufeff" + buf.getvalue()


def pdf_report(report: Report, lang: str) -> bytes:
    try:
        import weasyprint
    except ImportError:
        raise ReportError("PDF output needs WeasyPrint: pip install 'commune-monitor[report]' "
                          "(and Debian's libpango-1.0-0 libpangoft2-1.0-0)") from None
    return weasyprint.HTML(string=html_report(report, lang)).write_pdf()
