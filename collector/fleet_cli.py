"""``commune-collector fleet``: the inventory and what the machines say that it does not list yet.

    commune-collector fleet list   --fleet FILE [--prometheus URL] [--window 30d] [--json]
    commune-collector fleet accept HANDLE... --fleet FILE [--prometheus URL] [--id ID] [--kind KIND]
                                   [--model TEXT] [--location TEXT] [--agent NAME] [--target NAME]
    commune-collector fleet export --csv FILE --fleet FILE [--lang vi|en] [--delimiter ,|;]
    commune-collector fleet import --csv FILE --fleet FILE [--dry-run]

(``-c FILE`` instead of ``--fleet``: the collector config's ``fleet_file``.)

**Candidates** are devices seen in Prometheus within ``--window`` that the fleet file does not list:

- ``agent:COMMUNE/AGENT``: an agent that describes its machine (``commune_host_hardware_info``,
  agent/inputs/inventory.py) and is not the ``agent`` of a PC or laptop of the file;
- ``snmp:COMMUNE/AGENT/TARGET``: an SNMP target an agent polls (``commune_snmp_device_info``) that
  no printer, router or UPS of the file is tied to;
- ``found:COMMUNE/ADDRESS``: a device that answered an agent's discovery sweep
  (``commune_snmp_discovered_device_info``, agent/inputs/snmp/discover.py) at an address that is
  neither polled nor the ``address`` of a device of the file. It is not polled yet: accepting it
  names the SNMP target to add to the agent's ``snmp.targets``.

Last seen is the newest sample of the candidate's series (5-minute resolution). ``accept`` writes
what the machine told (kind, vendor and model, serial, address) as a new device; the purchase date
is left out: the BIOS estimate stays an estimate (the report marks it) until the asset office's
date is imported.

**CSV** (for the province's asset office, who work in Excel): UTF-8 with a BOM so Excel reads the
Vietnamese, one row per device, headers in Vietnamese (``--lang vi``, the default) or English;
import takes either. Dates are written YYYY-MM-DD; import also takes DD/MM/YYYY (how Excel saves
them again in Vietnamese settings), a decimal comma, and a commune code that lost its leading
zero (Excel reads ``09667`` as a number). ``--delimiter ';'`` for an Excel whose list
separator is the semicolon; import finds the separator itself.

**Import** reads every row and reports every error (file, line, column, what was expected) before
anything is changed; then it sets, on devices the file lists (commune and id), the columns the
asset office keeps: purchase date, location, asset tag, rated life (years, pages). **The import
wins** where the file and the spreadsheet both give a value (the office's register is the
authority for these); an empty cell changes nothing (a value is removed in fleet.yaml itself).
Columns the machines or the file decide (kind, model, serial, agent, target, address) are not
imported: a row that differs there is reported, not applied. Every change is printed; the file is
rewritten in place of the values only (comments and other fields kept) and atomically.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from collector.fleet import Fleet, parse_fleet
from collector.fleet_candidates import Candidate, FleetCliError, candidates, describe_model, device_from
from collector.fleet_csv import CsvError, decode_csv, export_csv, read_import

DEFAULT_PROMETHEUS = "http://127.0.0.1:9090"
STEP = "5m"  # Prometheus' lookback: every sample of a sparse series is seen by the subquery

# name -> (labels, metric). "Last seen" is the newest sample time of the series within the window:
# a subquery at Prometheus' lookback (5m, so every sample of a sparse series such as a discovery
# sweep's is seen) and, for the minutes since its last aligned step, the instant value.
SERIES = {
    "agents": ("commune, agent, vendor, model, serial, chassis, kind, bios_date", "commune_host_hardware_info"),
    "addresses": ("commune, agent, address, mac", "commune_host_network_info"),
    "snmp": ("commune, agent, target, address, kind, vendor, model, sys_name", "commune_snmp_device_info"),
    "found": ("commune, agent, address, kind, vendor, model, sys_name", "commune_snmp_discovered_device_info"),
}


def last_seen_queries(labels: str, metric: str, window: str) -> Tuple[str, str]:
    return (f"max by ({labels}) (max_over_time(timestamp({metric})[{window}:{STEP}]))",
            f"max by ({labels}) (timestamp({metric}))")


# ---------------------------------------------------------------- command line

def _age(now: float, ts: Optional[float]) -> str:
    if ts is None:
        return "-"
    s = max(0, int(now - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit} ago"
    return f"{s}s ago"


def _table(rows: List[List[str]]) -> List[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _fleet_path(args) -> str:
    if args.fleet:
        return args.fleet
    if args.config:
        from collector.cli import _load

        config = _load(args.config)
        if config is None:
            raise FleetCliError("the collector config has errors (above)")
        if config.fleet_file:
            return config.fleet_file
        raise FleetCliError(f"{args.config} names no fleet_file; give --fleet FILE")
    raise FleetCliError("give --fleet FILE (or -c the collector config naming its fleet_file)")


def _read_fleet(path: str) -> Tuple[str, Fleet]:
    from contract.schema import ConfigErrors

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise FleetCliError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return text, parse_fleet(text, path)
    except ConfigErrors as exc:
        raise FleetCliError("the fleet file has errors; fix them first:\n" + "\n".join(map(str, exc.errors))) from None


def gather_last_seen(url: str, window: str, now: float) -> Dict[str, List[dict]]:
    """name of :data:`SERIES` -> one item per label set, its value the newest sample time."""
    from collector.promapi import Prometheus, PrometheusError

    prom = Prometheus(url)
    out: Dict[str, List[dict]] = {}
    try:
        for name, (labels, metric) in SERIES.items():
            merged: Dict[tuple, dict] = {}
            for expr in last_seen_queries(labels, metric, window):
                for item in prom.query(expr, now):
                    key = tuple(sorted(item["metric"].items()))
                    if key not in merged or float(item["value"][1]) > float(merged[key]["value"][1]):
                        merged[key] = item
            out[name] = list(merged.values())
    except PrometheusError as exc:
        raise FleetCliError(str(exc)) from None
    return out


def _write(path: str, old_text: str, new_text: str) -> None:
    from contract.schema import ConfigErrors
    from collector.fleet_edit import write_atomic

    try:
        parse_fleet(new_text, path)
    except ConfigErrors as exc:
        raise FleetCliError(f"{path} not changed: the result would not be a valid fleet file:\n"
                            + "\n".join(map(str, exc.errors))) from None
    with open(path, encoding="utf-8") as fh:
        if fh.read() != old_text:
            raise FleetCliError(f"{path} not changed: it was changed by someone else meanwhile; run again")
    write_atomic(path, new_text)


def _common(p: argparse.ArgumentParser, prometheus: bool = False) -> None:
    p.add_argument("--fleet", metavar="FILE", help="the fleet inventory (config/fleet.example.yaml)")
    p.add_argument("-c", "--config.file", dest="config", metavar="FILE",
                   help="collector config whose fleet_file is the inventory (instead of --fleet)")
    if prometheus:
        p.add_argument("--prometheus", default=DEFAULT_PROMETHEUS, metavar="URL",
                       help=f"Prometheus base URL (default {DEFAULT_PROMETHEUS})")
        p.add_argument("--window", default="30d", metavar="DURATION",
                       help="how far back devices count as seen (default 30d)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="commune-collector fleet",
                                description="The fleet inventory: devices of the file and candidates seen in "
                                            "Prometheus; accept, and trade the list with a spreadsheet.")
    sub = p.add_subparsers(dest="action", required=True)
    lst = sub.add_parser("list", help="inventory devices and candidates not in the file yet")
    _common(lst, prometheus=True)
    lst.add_argument("--json", action="store_true", help="print as JSON")
    acc = sub.add_parser("accept", help="add candidates to the fleet file with the facts the machine told")
    acc.add_argument("handles", nargs="+", metavar="HANDLE", help="as fleet list shows it (agent:..., snmp:..., found:...)")
    _common(acc, prometheus=True)
    for opt, what in (("--id", "device id (default: from the agent or target name)"),
                      ("--kind", "pc, laptop, printer, router or ups (default: what the device says)"),
                      ("--model", "model text (default: vendor and model the device tells)"),
                      ("--location", "where it stands in the office"),
                      ("--agent", "agent polling it (default: the agent that saw it)"),
                      ("--target", "SNMP target name (default: the polled one, or one made from its name)")):
        acc.add_argument(opt, default="", help=what)
    exp = sub.add_parser("export", help="write the inventory as CSV for a spreadsheet")
    exp.add_argument("--csv", required=True, metavar="FILE", help="where to write (- for stdout)")
    exp.add_argument("--lang", choices=["vi", "en"], default="vi", help="header language (default vi)")
    exp.add_argument("--delimiter", choices=[",", ";"], default=",", help="cell separator (default ,)")
    _common(exp)
    imp = sub.add_parser("import", help="merge a spreadsheet's purchase dates, locations, asset tags, rated life")
    imp.add_argument("--csv", required=True, metavar="FILE", help="the CSV file (UTF-8, as fleet export writes it)")
    imp.add_argument("--dry-run", action="store_true", help="check and show the changes, write nothing")
    _common(imp)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return _run(args)
    except FleetCliError as exc:
        print(f"commune-collector fleet {args.action}: {exc}", file=sys.stderr)
        return 1


def _run(args) -> int:
    from contract.schema import parse_duration

    path = _fleet_path(args)
    text, fleet = _read_fleet(path)
    if args.action in ("list", "accept"):
        try:
            seconds = parse_duration(args.window)
        except ValueError as exc:
            raise FleetCliError(f"--window: {exc}") from None
        if seconds < 300:
            raise FleetCliError("--window: must be at least 5m")
        now = time.time()
        found = candidates(gather_last_seen(args.prometheus, f"{int(seconds)}s", now), fleet)
        if args.action == "list":
            return _list(fleet, found, now, args.json)
        return _accept(args, path, text, fleet, found)
    if args.action == "export":
        out = export_csv(fleet, args.lang, args.delimiter)
        if args.csv == "-":
            sys.stdout.write(out)
        else:
            from collector.fleet_edit import write_atomic

            write_atomic(args.csv, out)
            print(f"wrote {len(fleet.devices)} device(s) to {args.csv}", file=sys.stderr)
        return 0
    return _import(args, path, text, fleet)


def _list(fleet: Fleet, found: List[Candidate], now: float, as_json: bool) -> int:
    if as_json:
        json.dump({"time": now, "devices": [dict(vars(d)) for d in fleet.devices],
                   "candidates": [{k: v for k, v in vars(c).items() if k != "extra"} for c in found]},
                  sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"Inventory devices (fleet file): {len(fleet.devices)}")
    if fleet.devices:
        rows = [["COMMUNE", "DEVICE", "KIND", "MODEL", "LOCATION", "PURCHASED", "AGENT", "TARGET"]]
        rows += [[d.commune, d.id, d.kind, d.model, d.location or "-", d.purchase_date or "-", d.agent, d.target or "-"]
                 for d in sorted(fleet.devices, key=lambda d: (d.commune, d.id))]
        print("\n".join("  " + r for r in _table(rows)))
    print()
    print(f"Candidates (seen, not in the fleet file): {len(found)}")
    if found:
        rows = [["HANDLE", "KIND", "VENDOR / MODEL", "SERIAL", "ADDRESS", "SEEN BY", "LAST SEEN"]]
        rows += [[c.handle, c.kind or "-", describe_model(c) or "-", c.serial or "-", c.address or "-",
                  c.seen_by, _age(now, c.last_seen)] for c in found]
        print("\n".join("  " + r for r in _table(rows)))
        print("  accept with: commune-collector fleet accept HANDLE --fleet FILE")
    return 0


def _accept(args, path: str, text: str, fleet: Fleet, found: List[Candidate]) -> int:
    from collector.fleet_edit import EditError, add_devices

    by_handle = {c.handle: c for c in found}
    if args.id and len(args.handles) > 1:
        raise FleetCliError("--id names one device: accept one handle at a time with it")
    new = []
    for handle in args.handles:
        c = by_handle.get(handle)
        if c is None:
            listed = [d for d in fleet.devices]  # a device already accepted is no longer a candidate
            raise FleetCliError(f"{handle}: no such candidate seen within --window {args.window} "
                                f"({len(found)} candidate(s) now, {len(listed)} device(s) in the file; see fleet list)")
        new.append(device_from(c, fleet, id=args.id, kind=args.kind, model=args.model, location=args.location,
                               agent=args.agent, target=args.target))
    try:
        new_text = add_devices(text, new, path)
    except EditError as exc:
        raise FleetCliError(str(exc)) from None
    _write(path, text, new_text)
    for handle, d in zip(args.handles, new):
        print(f"added {d['commune']}/{d['id']} ({d['kind']}, {d['model']}) from {handle} to {path}")
        if handle.startswith("found:"):
            print(f"  not polled yet: add target {d['target']!r} (address {d.get('address', '')}) to the snmp.targets "
                  f"of agent {d['agent']!r}")
    return 0


def _import(args, path: str, text: str, fleet: Fleet) -> int:
    from collector.fleet_edit import EditError, set_fields

    try:
        with open(args.csv, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise FleetCliError(f"cannot read {args.csv}: {exc.strerror}") from None
    try:
        csv_text = decode_csv(data)
    except CsvError as exc:
        raise FleetCliError(f"{args.csv}: {exc}; {path} not changed") from None
    changes, problems, notes = read_import(csv_text, fleet)
    for note in notes:
        print(f"{args.csv}: {note}", file=sys.stderr)
    if problems:
        for prob in problems:
            print(prob.render(args.csv), file=sys.stderr)
        raise FleetCliError(f"{len(problems)} error(s) in {args.csv}; {path} not changed")
    devices = {(d.commune, d.id): d for d in fleet.devices}
    for key in sorted(changes):
        for f, value in changes[key].items():
            old = getattr(devices[key], f)
            print(f"{key[0]}/{key[1]}: {f} {'-' if old in (None, '') else old} -> {value}")
    count = sum(len(c) for c in changes.values())
    if not count:
        print(f"nothing to change: {path} already says what {args.csv} says")
        return 0
    if args.dry_run:
        print(f"dry run: {count} change(s) on {len(changes)} device(s) not written")
        return 0
    try:
        new_text = set_fields(text, changes, path)
    except EditError as exc:
        raise FleetCliError(str(exc)) from None
    _write(path, text, new_text)
    print(f"{count} change(s) on {len(changes)} device(s) written to {path}")
    return 0
