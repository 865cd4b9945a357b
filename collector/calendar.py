"""The working calendar of the commune offices (collector/calendar.yaml): when an office is open.

The file is reviewed data: the province's shifts, per-commune overrides (Saturday-morning one-stop
service), the public holidays and made-up working days, each with its source. This module parses
and checks it (:func:`parse_calendar`, pure) and answers, for a commune and an instant, whether its
office is open and whether the day is a holiday (:meth:`Calendar.state`). The collector exports the
answer for the current instant on /metrics (:meth:`Calendar.samples`):

    commune_calendar_open{commune}     1 while the office is open (a shift of a working day)
    commune_calendar_holiday{commune}  1 all day on a public holiday (or a compensating day off)

The rules (collector/rules/calendar.yml) turn them into ``commune:calendar_open:bool``, which
mutes the "office should be up" alerts and bounds the office-hours factors.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

VN = dt.timezone(dt.timedelta(hours=7), "ICT")
DEFAULT_FILE = Path(__file__).with_name("calendar.yaml")
STATUSES = ("announced", "statutory")
_SHIFT = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
_COMMUNE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_LUNAR = re.compile(r"^(0[1-9]|1[0-2])-(0[1-9]|[12]\d|30)$")


class CalendarError(Exception):
    """Every problem of a calendar file, one per line with its path."""

    def __init__(self, problems: List[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


Shift = Tuple[int, int]  # minutes since local midnight: [start, end)


@dataclass(frozen=True)
class Hours:
    weekdays: Tuple[Shift, ...]
    saturday: Tuple[Shift, ...]

    def shifts(self, weekday: int, worked: bool) -> Tuple[Shift, ...]:
        """The shifts of a day: Monday-Friday (weekday 0-4) or a made-up working day, Saturday."""
        if weekday < 5 or worked:
            return self.weekdays
        if weekday == 5:
            return self.saturday
        return ()


@dataclass(frozen=True)
class Holiday:
    name: str
    first: dt.date
    last: dt.date
    observes: dt.date
    status: str
    source: str
    lunar: Optional[Tuple[int, int]] = None  # (month, day) of the lunar date ``observes`` is


@dataclass(frozen=True)
class State:
    open: bool
    holiday: Optional[str]  # the holiday's name, or None


@dataclass
class Calendar:
    default: Hours
    communes: Dict[str, Hours] = field(default_factory=dict)
    holidays: List[Holiday] = field(default_factory=list)
    working_days: Dict[dt.date, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._closed: Dict[dt.date, str] = {}
        for h in self.holidays:
            day = h.first
            while day <= h.last:
                self._closed[day] = h.name
                day += dt.timedelta(days=1)

    def hours(self, commune: str) -> Hours:
        return self.communes.get(commune, self.default)

    def holiday(self, day: dt.date) -> Optional[str]:
        return self._closed.get(day)

    def covers(self) -> Tuple[int, int]:
        """The first and last year the file lists holidays for."""
        years = sorted({h.observes.year for h in self.holidays})
        return (years[0], years[-1]) if years else (0, 0)

    def state(self, commune: str, t: float) -> State:
        local = dt.datetime.fromtimestamp(t, VN)
        day = local.date()
        name = self.holiday(day)
        if name is not None:
            return State(False, name)
        minute = local.hour * 60 + local.minute
        shifts = self.hours(commune).shifts(day.weekday(), day in self.working_days)
        return State(any(start <= minute < end for start, end in shifts), None)

    def samples(self, communes: Iterable[str], t: float) -> list:
        """commune_calendar_open and commune_calendar_holiday of each commune at instant t."""
        from contract.samples import sample

        out = []
        for commune in sorted(set(communes) | set(self.communes)):
            st = self.state(commune, t)
            out.append(sample("commune_calendar_open", 1 if st.open else 0, commune=commune))
            out.append(sample("commune_calendar_holiday", 1 if st.holiday else 0, commune=commune))
        return out


# ---------------------------------------------------------------- parsing (pure)

def _shifts(value, where: str, problems: List[str]) -> Tuple[Shift, ...]:
    if not isinstance(value, list):
        problems.append(f"{where}: expected a list of shifts such as [\"07:00-11:30\"]")
        return ()
    out: List[Shift] = []
    for i, text in enumerate(value):
        m = _SHIFT.match(str(text)) if isinstance(text, str) else None
        if not m:
            problems.append(f"{where}[{i}]: expected HH:MM-HH:MM, got {text!r}")
            continue
        start, end = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
        if end > 24 * 60 or start >= end:
            problems.append(f"{where}[{i}]: {text} ends before it starts")
            continue
        if out and start < out[-1][1]:
            problems.append(f"{where}[{i}]: {text} overlaps or precedes the shift before it")
            continue
        out.append((start, end))
    return tuple(out)


def _date(value, where: str, problems: List[str]) -> Optional[dt.date]:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    problems.append(f"{where}: expected a date YYYY-MM-DD, got {value!r}")
    return None


def _keys(item: dict, where: str, allowed: set, required: set, problems: List[str]) -> bool:
    ok = True
    for key in sorted(set(item) - allowed):
        problems.append(f"{where}.{key}: unknown key")
        ok = False
    for key in sorted(required - set(item)):
        problems.append(f"{where}.{key}: required")
        ok = False
    return ok


def _source(item: dict, where: str, problems: List[str]) -> str:
    text = item.get("source")
    if not isinstance(text, str) or len(text.strip()) < 10:
        problems.append(f"{where}.source: every entry needs the source of its dates")
        return ""
    return text.strip()


def _hours(item, where: str, base: Optional[Hours], problems: List[str]) -> Hours:
    if not isinstance(item, dict):
        problems.append(f"{where}: expected a mapping")
        return base or Hours((), ())
    _keys(item, where, {"weekdays", "saturday", "source"}, {"source"} | (set() if base else {"weekdays"}),
          problems)
    _source(item, where, problems)
    weekdays = _shifts(item["weekdays"], f"{where}.weekdays", problems) if "weekdays" in item else base.weekdays
    saturday = _shifts(item.get("saturday", []), f"{where}.saturday", problems) if (
        "saturday" in item or base is None) else base.saturday
    return Hours(weekdays, saturday)


def _holiday(item, where: str, problems: List[str]) -> Optional[Holiday]:
    if not isinstance(item, dict):
        problems.append(f"{where}: expected a mapping")
        return None
    if not _keys(item, where, {"name", "from", "to", "observes", "lunar", "status", "source"},
                 {"name", "from", "observes", "status", "source"}, problems):
        return None
    first = _date(item["from"], f"{where}.from", problems)
    last = _date(item.get("to", item["from"]), f"{where}.to", problems)
    observes = _date(item["observes"], f"{where}.observes", problems)
    source = _source(item, where, problems)
    if item["status"] not in STATUSES:
        problems.append(f"{where}.status: expected one of {', '.join(STATUSES)}, got {item['status']!r}")
    lunar = None
    if "lunar" in item:
        m = _LUNAR.match(str(item["lunar"]))
        if not m:
            problems.append(f"{where}.lunar: expected the lunar month and day as \"MM-DD\", got {item['lunar']!r}")
        else:
            lunar = (int(m[1]), int(m[2]))
    if None in (first, last, observes) or not source:
        return None
    if last < first:
        problems.append(f"{where}.to: {last} is before from {first}")
        return None
    if (last - first).days > 15:
        problems.append(f"{where}: {first}..{last} is longer than 16 days; a typo?")
        return None
    if not first <= observes <= last:
        problems.append(f"{where}.observes: {observes} is not inside {first}..{last}")
        return None
    return Holiday(str(item["name"]), first, last, observes, item["status"], source, lunar)


def parse_calendar(data, filename: str = "calendar.yaml") -> Calendar:
    """The calendar of a loaded YAML document; :class:`CalendarError` lists every problem."""
    problems: List[str] = []
    if not isinstance(data, dict):
        raise CalendarError([f"{filename}: expected a mapping with default, communes, holidays"])
    _keys(data, filename, {"default", "communes", "holidays", "working_days"}, {"default", "holidays"}, problems)
    default = _hours(data.get("default", {}), "default", None, problems)
    if isinstance(data.get("default"), dict) and data["default"].get("weekdays") == []:
        problems.append("default.weekdays: the province's offices need at least one shift")
    communes: Dict[str, Hours] = {}
    for code, item in (data.get("communes") or {}).items():
        if not isinstance(code, str) or not _COMMUNE.match(code):
            problems.append(f"communes.{code}: a commune code is a quoted string such as \"09667\"")
            continue
        communes[code] = _hours(item, f"communes.{code}", default, problems)
    holidays: List[Holiday] = []
    for i, item in enumerate(data.get("holidays") or []):
        h = _holiday(item, f"holidays[{i}]", problems)
        if h is not None:
            for j, other in enumerate(holidays):
                if h.first <= other.last and other.first <= h.last:
                    problems.append(f"holidays[{i}]: {h.name} {h.first}..{h.last} overlaps {other.name} "
                                    f"{other.first}..{other.last}")
            holidays.append(h)
    working: Dict[dt.date, str] = {}
    for i, item in enumerate(data.get("working_days") or []):
        where = f"working_days[{i}]"
        if not isinstance(item, dict) or not _keys(item, where, {"date", "status", "source"},
                                                   {"date", "status", "source"}, problems):
            continue
        day = _date(item["date"], f"{where}.date", problems)
        source = _source(item, where, problems)
        if day is None or not source:
            continue
        if day.weekday() != 5:
            problems.append(f"{where}.date: {day} is not a Saturday (a made-up working day is one)")
        elif any(h.first <= day <= h.last for h in holidays):
            problems.append(f"{where}.date: {day} is inside a holiday")
        working[day] = source
    if problems:
        raise CalendarError([p if p.startswith(filename) else f"{filename}: {p}" for p in problems])
    return Calendar(default, communes, holidays, working)


def load_calendar(path=DEFAULT_FILE) -> Calendar:
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CalendarError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CalendarError([f"{path}: not YAML: {exc}"]) from None
    return parse_calendar(data, str(path))
