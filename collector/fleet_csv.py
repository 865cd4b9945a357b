"""The fleet inventory as CSV for the province's asset office (pure: text in, text out).

UTF-8 with a BOM so Excel reads the Vietnamese, one row per device, headers in Vietnamese or
English; import takes either, DD/MM/YYYY dates, a decimal comma and commune codes that lost their
leading zero. See ``commune-collector fleet`` (collector/fleet_cli.py) for the rules of import.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from collector.fleet import Fleet


class CsvError(ValueError):
    """A spreadsheet that cannot be read at all (not UTF-8); the message says where."""

# CSV columns: field -> (Vietnamese header, English header)
COLUMNS = {
    "commune": ("Mã xã", "Commune"),
    "id": ("Mã thiết bị", "Device"),
    "kind": ("Loại", "Kind"),
    "model": ("Model", "Model"),
    "serial": ("Số serial", "Serial"),
    "asset_tag": ("Mã tài sản", "Asset tag"),
    "location": ("Vị trí", "Location"),
    "purchase_date": ("Ngày mua", "Purchase date"),
    "rated_life_years": ("Tuổi thọ (năm)", "Rated life (years)"),
    "rated_life_pages": ("Tuổi thọ (trang)", "Rated life (pages)"),
    "address": ("Địa chỉ", "Address"),
    "agent": ("Agent", "Agent"),
    "target": ("SNMP target", "SNMP target"),
}
IMPORTED = ("purchase_date", "location", "asset_tag", "rated_life_years", "rated_life_pages")
INFORMATIONAL = ("kind", "model", "serial", "agent", "target", "address")




def export_csv(fleet: Fleet, lang: str = "vi", delimiter: str = ",") -> str:
    """The fleet's devices as CSV text (with the BOM, for Excel), one row per device."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\r\n")
    w.writerow([COLUMNS[f][0 if lang == "vi" else 1] for f in COLUMNS])
    for d in sorted(fleet.devices, key=lambda d: (d.commune, d.id)):
        row = []
        for f in COLUMNS:
            value = getattr(d, f)
            if isinstance(value, float):
                value = f"{value:g}"
            row.append("" if value is None else str(value))
        w.writerow(row)
    return "\ufeff" + buf.getvalue()


@dataclass
class CsvProblem:
    line: int
    column: str
    message: str

    def render(self, filename: str) -> str:
        col = f", column {self.column!r}" if self.column else ""
        return f"{filename}:{self.line}{col}: {self.message}"


def _parse_date(text: str) -> Optional[str]:
    for fmt in ("%Y-%m-%d", "%d/%m/%Y", "%d-%m-%Y"):
        try:
            return dt.datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    return None


def _parse_number(text: str, kind: type) -> Optional[float]:
    cleaned = text.replace(" ", "").replace("\u00a0", "")
    if kind is int:
        cleaned = cleaned.replace(".", "").replace(",", "") if re.fullmatch(r"\d{1,3}([.,]\d{3})+", cleaned) else cleaned
        return int(cleaned) if cleaned.isdigit() else None
    try:
        return float(cleaned.replace(",", "."))
    except ValueError:
        return None


def decode_csv(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise CsvError(f"line {line}: not UTF-8 text; in Excel save as 'CSV UTF-8 (Comma delimited)'") from None


def read_import(text: str, fleet: Fleet) -> Tuple[Dict[Tuple[str, str], Dict[str, object]], List[CsvProblem], List[str]]:
    """The spreadsheet's rows checked against the fleet: (changes by (commune, id), errors, notes).

    Nothing is returned as a change unless the whole file is free of errors (the caller checks).
    """
    problems: List[CsvProblem] = []
    notes: List[str] = []
    first = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return {}, [CsvProblem(1, "", "the file is empty: expected a header row")], notes
    names = {h.casefold(): f for f, pair in COLUMNS.items() for h in pair + (f,)}
    fields: List[Optional[str]] = []
    for i, h in enumerate(header):
        f = names.get(h.strip().casefold())
        if f is None and h.strip():
            problems.append(CsvProblem(1, h, "unknown column; expected: " + ", ".join(c[0] for c in COLUMNS.values())
                                       + " (or the English headers)"))
        if f is not None and f in fields:
            problems.append(CsvProblem(1, h, "column given twice"))
        fields.append(f)
    for need in ("commune", "id"):
        if need not in fields:
            problems.append(CsvProblem(1, "", f"missing column {COLUMNS[need][0]!r} ({COLUMNS[need][1]}): "
                                              "rows are matched to the fleet by commune and device"))
    if problems:
        return {}, problems, notes
    heads = {f: header[i] for i, f in enumerate(fields) if f}
    devices = {(d.commune, d.id): d for d in fleet.devices}
    communes = {c.code for c in fleet.communes}
    changes: Dict[Tuple[str, str], Dict[str, object]] = {}
    seen: Dict[Tuple[str, str], int] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(fields):
            problems.append(CsvProblem(line, "", f"{len(row)} cells, the header has {len(fields)}"))
            continue
        cells = {f: row[i].strip() for i, f in enumerate(fields) if f and i < len(row)}
        key = (cells.get("commune", ""), cells.get("id", ""))
        if key[0].isdigit() and key[0] not in communes and key[0].zfill(5) in communes:
            key = (key[0].zfill(5), key[1])  # Excel reads "09667" as the number 9667
        if not key[0] or not key[1]:
            col = "commune" if not key[0] else "id"
            problems.append(CsvProblem(line, heads[col], "empty: every row names its commune and device"))
            continue
        if key in seen:
            problems.append(CsvProblem(line, heads["id"], f"device {key[1]!r} of commune {key[0]!r} is also on "
                                                          f"line {seen[key]}"))
            continue
        seen[key] = line
        device = devices.get(key)
        if device is None:
            problems.append(CsvProblem(line, heads["id"], f"no device {key[1]!r} in commune {key[0]!r} of the fleet "
                                                          "file (add it with fleet accept or in the file first)"))
            continue
        change: Dict[str, object] = {}
        for f in IMPORTED:
            value = cells.get(f, "")
            if not value:
                continue
            if f == "purchase_date":
                parsed = _parse_date(value)
                if parsed is None:
                    problems.append(CsvProblem(line, heads[f], f"{value!r} is not a date: expected YYYY-MM-DD "
                                                               "or DD/MM/YYYY"))
                    continue
                if parsed < "1990-01-01" or parsed > dt.date.today().isoformat():
                    problems.append(CsvProblem(line, heads[f], f"{value!r}: expected a date from 1990 to today"))
                    continue
                new: object = parsed
            elif f == "rated_life_years":
                new = _parse_number(value, float)
                if new is None or not 0 < new <= 50:
                    problems.append(CsvProblem(line, heads[f], f"{value!r}: expected a number of years above 0 "
                                                               "and at most 50"))
                    continue
                new = int(new) if float(new).is_integer() else new
            elif f == "rated_life_pages":
                new = _parse_number(value, int)
                if device.kind != "printer":
                    problems.append(CsvProblem(line, heads[f], f"applies to printers only, not kind {device.kind}"))
                    continue
                if new is None or new <= 0:
                    problems.append(CsvProblem(line, heads[f], f"{value!r}: expected a whole number of pages above 0"))
                    continue
            else:
                new = value
            old = getattr(device, f)
            if old is None or (str(old) != str(new) and not (isinstance(old, float) and old == new)):
                change[f] = new
        for f in INFORMATIONAL:
            value = cells.get(f, "")
            if value and value != str(getattr(device, f)):
                notes.append(f"line {line}: {heads[f]} {value!r} differs from the fleet file's "
                             f"{getattr(device, f)!r} for {key[0]}/{key[1]}; not imported (only purchase date, "
                             "location, asset tag and rated life are)")
        if change:
            changes[key] = change
    return changes, problems, notes
