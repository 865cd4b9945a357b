"""``commune-collector report``: evidence for the province's equipment procurement decisions.

    commune-collector report --prometheus URL [--commune CODE ...] --period 2026-11
                             [--lang vi|en] [--format html|pdf|csv] --out FILE

Reads the inventory (``commune_office_info``, ``commune_device_info`` & co., exported by the
collector from the fleet file), the replacement scores and factors of collector/rules, and the raw
evidence over the period from Prometheus, and writes a ranked list of devices to replace per
commune and for the province, with the measured values behind every factor, small charts,
software availability and link quality, the recommended action of every flagged device (replace,
SSD, memory, battery, maintenance kit) and the budget they add up to at the prices of
collector/prices.yaml (``--prices FILE`` for a province's own). HTML is self-contained; PDF is made from the same HTML
with WeasyPrint; CSV has one row per device and factor.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List


FORMATS = ("html", "pdf", "csv")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="commune-collector report",
                                description="Equipment replacement report from Prometheus data.")
    p.add_argument("--prometheus", default=os.environ.get("COMMUNE_PROMETHEUS_URL", "http://127.0.0.1:9090"),
                   help="Prometheus base URL (default: $COMMUNE_PROMETHEUS_URL or http://127.0.0.1:9090)")
    p.add_argument("--commune", action="append", default=[], metavar="CODE",
                   help="limit to this commune code (repeatable; default: every commune)")
    p.add_argument("--period", required=True, help="YYYY-MM (a month, Vietnam time) or YYYY-MM-DD..YYYY-MM-DD")
    p.add_argument("--lang", choices=("vi", "en"), default="vi")
    p.add_argument("--format", choices=FORMATS, default=None, help="default: from the --out extension, else html")
    p.add_argument("--out", required=True, help="output file ('-' for standard output; not for pdf)")
    p.add_argument("--prices", default=None, metavar="FILE",
                   help="price table for the budget (default: the reviewed collector/prices.yaml)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per Prometheus query (default 120)")
    return p


def main(argv: List[str]) -> int:
    args = parser().parse_args(argv)
    fmt = args.format or (os.path.splitext(args.out)[1].lstrip(".").lower() if args.out != "-" else "html")
    if fmt not in FORMATS:
        print(f"report: cannot tell the format from {args.out!r}; use --format html|pdf|csv", file=sys.stderr)
        return 2
    if fmt == "pdf" and args.out == "-":
        print("report: PDF needs a file for --out", file=sys.stderr)
        return 2
    from contract.schema import ConfigErrors
    from collector.promapi import Prometheus, PrometheusError
    from collector.report import budget, gather, render

    try:
        prices = budget.load_prices(args.prices or budget.DEFAULT_PRICES)
    except ConfigErrors as exc:
        print(f"report: the price table is invalid:\n{exc}", file=sys.stderr)
        return 1
    try:
        period = gather.parse_period(args.period)
        report = gather.gather(Prometheus(args.prometheus, timeout=args.timeout), period, args.commune)
        report.prices = prices
        if fmt == "html":
            data: bytes = render.html_report(report, args.lang).encode("utf-8")
        elif fmt == "csv":
            data = render.csv_report(report, args.lang).encode("utf-8")
        else:
            data = render.pdf_report(report, args.lang)
    except (gather.ReportError, PrometheusError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 1
    if args.out == "-":
        sys.stdout.buffer.write(data)
    else:
        tmp = args.out + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, args.out)
        devices = sum(len(c.devices) for c in report.communes)
        print(f"report: wrote {args.out} ({fmt}, {len(report.communes)} communes, {devices} devices, "
              f"{report.to_replace()} to replace, budget {budget.total(report.budget()):,} {prices.currency})",
              file=sys.stderr)
    return 0
