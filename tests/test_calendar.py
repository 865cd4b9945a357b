"""The working calendar (collector/calendar.yaml, collector/calendar.py): the shipped data is
complete and sourced for 2025-2030, its lunar dates agree with the Vietnamese lunisolar calendar
computed at UTC+7 (tests/lunar.py), the statutory days of the Labour Code are all off, the state of
an office at chosen instants (holiday, lunch break, closed afternoon, Saturday with and without
one-stop service, a made-up Saturday), every validation rule with its message, the collector's
/metrics at an injected clock, and the calendar input series of tests/rules/calendar.yml are what
the collector would export for the real days they name.

Instants are fixed dates, never the wall clock."""
from __future__ import annotations

import datetime as dt
import re

import pytest
import yaml

from collector.calendar import DEFAULT_FILE, VN, CalendarError, State, load_calendar, parse_calendar
from tests import lunar
from tests.support import REPO

CAL = load_calendar()
YEARS = range(2025, 2031)
ONE = dt.timedelta(days=1)


def at(text: str) -> float:
    """Unix time of a Vietnam-time ISO date and time."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=VN).timestamp()


def off(day: dt.date) -> bool:
    return CAL.holiday(day) is not None


def next_working_day(day: dt.date, taken) -> dt.date:
    while day.weekday() >= 5 or day in taken:
        day += ONE
    return day


# ---------------------------------------------------------------- the shipped data

def test_every_year_has_its_holidays_with_a_source():
    assert CAL.covers() == (2025, 2030)
    kinds = ("Tết Dương lịch", "Tết Nguyên đán", "Giỗ Tổ Hùng Vương", "30/4", "Quốc khánh")
    for year in YEARS:
        names = [h.name for h in CAL.holidays if h.observes.year == year]
        for kind in kinds:
            assert sum(kind in n for n in names) == 1, (year, kind, names)
    for h in CAL.holidays:
        assert h.status in ("announced", "statutory") and len(h.source) > 20, h
        # a statutory placement cites the Labour Code; an announcement names who announced it
        if h.status == "statutory":
            assert "điều 112" in h.source, h


def test_lunar_dates_agree_with_the_lunisolar_calendar():
    checked = 0
    for h in CAL.holidays:
        if "Tết Nguyên đán" in h.name or "Giỗ Tổ" in h.name:
            assert h.lunar is not None, f"{h.name} {h.observes}: give its lunar date"
        if h.lunar is None:
            continue
        month, day = h.lunar
        assert h.observes == lunar.solar_from_lunar(h.observes.year, month, day), h
        checked += 1
    assert checked == 12  # Tết and Giỗ Tổ, six years


@pytest.mark.parametrize("year, tet, gio_to", [
    # published dates (lịch vạn niên) the algorithm must reproduce
    (2019, "2019-02-05", "2019-04-14"), (2020, "2020-01-25", "2020-04-02"),
    (2021, "2021-02-12", "2021-04-21"), (2022, "2022-02-01", "2022-04-10"),
    (2023, "2023-01-22", "2023-04-29"), (2024, "2024-02-10", "2024-04-18"),
])
def test_the_lunar_algorithm_on_past_years(year, tet, gio_to):
    assert lunar.lunar_new_year(year).isoformat() == tet
    assert lunar.hung_kings_day(year).isoformat() == gio_to


def test_vietnamese_tet_2030_is_not_the_chinese_one(monkeypatch):
    # the new moon of February 2030 is at 23:07 in Hanoi and 00:07 in Beijing
    assert lunar.lunar_new_year(2030) == dt.date(2030, 2, 2)
    monkeypatch.setattr(lunar, "TZ", 8.0)
    assert lunar.lunar_new_year(2030) == dt.date(2030, 2, 3)


@pytest.mark.parametrize("year", YEARS)
def test_the_labour_code_days_are_off(year):
    tet = lunar.lunar_new_year(year)
    gio_to = lunar.hung_kings_day(year)
    for day in (dt.date(year, 1, 1), dt.date(year, 4, 30), dt.date(year, 5, 1), dt.date(year, 9, 2), gio_to):
        assert off(day), day
    # Tết: 5 days that would be working days, around mùng 1
    block = [h for h in CAL.holidays if h.observes == tet][0]
    weekdays_off = [d for d in (block.first + i * ONE for i in range((block.last - block.first).days + 1))
                    if d.weekday() < 5]
    assert len(weekdays_off) >= 5 and all(off(tet + i * ONE) for i in range(3)), block
    # Quốc khánh: 2/9 and an adjacent day
    assert off(dt.date(year, 9, 1)) or off(dt.date(year, 9, 3))
    # clause 3: a statutory day on a weekend is made up on the next working day
    for h in CAL.holidays:
        if h.observes.year == year and h.status == "statutory" and "Tết Nguyên đán" not in h.name:
            statutory = {h.observes}
            if "Quốc khánh" in h.name:
                statutory.add(dt.date(year, 9, 1) if off(dt.date(year, 9, 1)) else dt.date(year, 9, 3))
            if "30/4" in h.name:
                statutory.add(dt.date(year, 5, 1))
            taken = set(statutory)
            for day in sorted(statutory):
                if day.weekday() >= 5:
                    extra = next_working_day(day, taken)
                    taken.add(extra)
                    assert h.first <= extra <= h.last, (h.name, day, extra)


def test_made_up_saturdays_are_outside_holidays():
    assert set(CAL.working_days) == {dt.date(2025, 4, 26)}
    assert CAL.state("09670", at("2025-04-26T09:00")).open  # a Saturday worked for Friday 2/5


# ---------------------------------------------------------------- the state at an instant

@pytest.mark.parametrize("when, commune, is_open, holiday", [
    ("2026-12-09T07:00", "09670", True, None),      # Wednesday, the morning shift starts
    ("2026-12-09T06:59", "09670", False, None),
    ("2026-12-09T11:29", "09670", True, None),
    ("2026-12-09T11:30", "09670", False, None),     # lunch break
    ("2026-12-09T13:30", "09670", True, None),
    ("2026-12-09T16:59", "09670", True, None),
    ("2026-12-09T17:00", "09670", False, None),
    ("2026-12-12T09:00", "09667", True, None),      # Saturday: 09667 has one-stop service 07:30-11:30
    ("2026-12-12T07:29", "09667", False, None),
    ("2026-12-12T14:00", "09667", False, None),     # ... not in the afternoon
    ("2026-12-12T09:00", "09670", False, None),     # 09670 has none
    ("2026-12-12T09:00", "xa-chua-co", False, None),  # a commune not in the file: the province default
    ("2026-12-09T09:00", "xa-chua-co", True, None),
    ("2026-12-13T09:00", "09667", False, None),     # Sunday
    ("2026-02-18T09:00", "09667", False, "Tết Nguyên đán Bính Ngọ"),
    ("2026-02-14T09:00", "09667", False, "Tết Nguyên đán Bính Ngọ"),  # a Saturday inside the block
    ("2026-04-27T09:00", "09670", False, "Giỗ Tổ Hùng Vương"),  # Monday, for Sunday 26/4
    ("2030-02-06T09:00", "09670", False, "Tết Nguyên đán Canh Tuất"),
])
def test_state(when, commune, is_open, holiday):
    assert CAL.state(commune, at(when)) == State(is_open, holiday)


def test_the_day_changes_at_17_utc():
    utc = dt.timezone.utc
    eve = dt.datetime(2026, 2, 13, 16, 59, 59, tzinfo=utc).timestamp()  # Friday 23:59:59 in Vietnam
    assert CAL.state("09670", eve).holiday is None
    assert CAL.state("09670", eve + 1).holiday == "Tết Nguyên đán Bính Ngọ"


def test_samples_name_every_commune_once():
    got = {(s.name, s.labels["commune"]): s.value for s in CAL.samples(["09670", "09670"], at("2026-12-12T09:00"))}
    assert got == {("commune_calendar_open", "09667"): 1, ("commune_calendar_holiday", "09667"): 0,
                   ("commune_calendar_open", "09670"): 0, ("commune_calendar_holiday", "09670"): 0}


# ---------------------------------------------------------------- validation

BASE = {"default": {"weekdays": ["07:00-11:30", "13:30-17:00"], "source": "UBND tỉnh, giờ làm việc"},
        "holidays": [{"name": "Quốc khánh 2/9", "from": "2027-09-01", "to": "2027-09-02",
                      "observes": "2027-09-02", "status": "statutory", "source": "Bộ luật Lao động 2019 điều 112"}]}


def with_(path: str, value):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    if value is None:
        del node[keys[-1]]
    else:
        node[int(keys[-1]) if keys[-1].isdigit() else keys[-1]] = value
    return data


@pytest.mark.parametrize("path, value, message", [
    ("default.weekdays", ["7:00-11:30"], "x: default.weekdays[0]: expected HH:MM-HH:MM, got '7:00-11:30'"),
    ("default.weekdays", ["11:30-07:00"], "x: default.weekdays[0]: 11:30-07:00 ends before it starts"),
    ("default.weekdays", ["07:00-12:00", "11:00-17:00"],
     "x: default.weekdays[1]: 11:00-17:00 overlaps or precedes the shift before it"),
    ("default.weekdays", [], "x: default.weekdays: the province's offices need at least one shift"),
    ("default.source", None, "x: default.source: required"),
    ("default.sunday", ["07:00-11:00"], "x: default.sunday: unknown key"),
    ("communes", {9667: {"saturday": [], "source": "thông báo của xã"}},
     "x: communes.9667: a commune code is a quoted string such as \"09667\""),
    ("communes", {"09667": {"saturday": ["07:30-11:30"], "source": "?"}},
     "x: communes.09667.source: every entry needs the source of its dates"),
    ("holidays.0.status", "rumoured", "x: holidays[0].status: expected one of announced, statutory, got 'rumoured'"),
    ("holidays.0.to", "2027-08-30", "x: holidays[0].to: 2027-08-30 is before from 2027-09-01"),
    ("holidays.0.to", "2027-10-02", "x: holidays[0]: 2027-09-01..2027-10-02 is longer than 16 days; a typo?"),
    ("holidays.0.observes", "2027-09-03", "x: holidays[0].observes: 2027-09-03 is not inside 2027-09-01..2027-09-02"),
    ("holidays.0.from", "2027-9-1", "x: holidays[0].from: expected a date YYYY-MM-DD, got '2027-9-1'"),
    ("holidays.0.lunar", "1/1", "x: holidays[0].lunar: expected the lunar month and day as \"MM-DD\", got '1/1'"),
    ("holidays.0.source", None, "x: holidays[0].source: required"),
    ("holidays.1", {"name": "again", "from": "2027-09-02", "observes": "2027-09-02", "status": "statutory",
                    "source": "Bộ luật Lao động 2019 điều 112"},
     "x: holidays[1]: again 2027-09-02..2027-09-02 overlaps Quốc khánh 2/9 2027-09-01..2027-09-02"),
    ("working_days", [{"date": "2027-09-03", "status": "announced", "source": "Bộ Nội vụ, thông báo"}],
     "x: working_days[0].date: 2027-09-03 is not a Saturday (a made-up working day is one)"),
    ("working_days", [{"date": "2027-09-04", "status": "announced", "source": "?"}],
     "x: working_days[0].source: every entry needs the source of its dates"),
])
def test_each_rule_has_its_message(path, value, message):
    if path == "holidays.1":
        data = yaml.safe_load(yaml.safe_dump(BASE))
        data["holidays"].append(value)
    else:
        data = with_(path, value)
    with pytest.raises(CalendarError) as err:
        parse_calendar(data, "x")
    assert message in err.value.problems, err.value.problems


def test_every_problem_is_listed_at_once():
    data = with_("default.weekdays", ["7-11"])
    data["holidays"][0]["status"] = "maybe"
    with pytest.raises(CalendarError) as err:
        parse_calendar(data, "x")
    assert len(err.value.problems) == 2, err.value.problems


def test_the_collector_config_rejects_a_broken_calendar(tmp_path):
    from contract.schema import ConfigErrors
    from collector.config import parse_config

    bad = tmp_path / "calendar.yaml"
    bad.write_text(yaml.safe_dump(with_("holidays.0.status", "rumoured")), encoding="utf-8")
    text = (f"upstreams: [{{url: 'http://127.0.0.1:9/api/v1/write'}}]\nstate: {{dir: '{tmp_path}'}}\n"
            f"calendar_file: '{bad}'\n")
    with pytest.raises(ConfigErrors) as err:
        parse_config(text)
    assert "holidays[0].status: expected one of announced, statutory" in str(err.value)


# ---------------------------------------------------------------- the collector's /metrics

def test_collector_exports_the_calendar_at_its_clock(tmp_path):
    from contract.exposition import render
    from collector.config import parse_config
    from collector.server import Collector
    from tests.support import record_exposition

    fleet = REPO / "config" / "fleet.example.yaml"
    config = parse_config(f"upstreams: [{{url: 'http://127.0.0.1:9/api/v1/write'}}]\n"
                          f"state: {{dir: '{tmp_path}'}}\nfleet_file: '{fleet}'\n")
    now = {"t": at("2026-12-12T09:00")}  # Saturday morning
    collector = Collector(config, clock=lambda: now["t"])
    text = render(collector.samples).decode()
    record_exposition(text)
    series = dict(re.findall(r'^(commune_calendar_\w+\{commune="\w+"\}) (\S+)$', text, re.M))
    assert series == {'commune_calendar_open{commune="09667"}': "1.0", 'commune_calendar_holiday{commune="09667"}': "0.0",
                      'commune_calendar_open{commune="09670"}': "0.0", 'commune_calendar_holiday{commune="09670"}': "0.0"}
    assert "# HELP commune_calendar_open 1 while the commune's office is open" in text
    now["t"] = at("2027-02-08T09:00")  # Monday in the Tết block of 2027 (mùng 3)
    text = render(collector.samples).decode()
    assert 'commune_calendar_open{commune="09670"} 0.0' in text
    assert 'commune_calendar_holiday{commune="09670"} 1.0' in text


# ---------------------------------------------------------------- tests/rules/calendar.yml

RULE_TEST = REPO / "tests" / "rules" / "calendar.yml"


def promtool_values(values) -> str:
    """Run-length promtool notation: [0, 0, 1] -> '0x1 1x0'."""
    out, i = [], 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        out.append(f"{values[i]}x{j - i}")
        i = j + 1
    return " ".join(out)


def calendar_series(commune: str, start: str, minutes: int, metric: str) -> str:
    t0 = at(start)
    states = [CAL.state(commune, t0 + 60 * m) for m in range(minutes)]
    if metric == "commune_calendar_open":
        return promtool_values([1 if s.open else 0 for s in states])
    return promtool_values([1 if s.holiday else 0 for s in states])


def test_the_promtool_calendar_inputs_are_the_real_calendar():
    """Each calendar series of tests/rules/calendar.yml follows a comment
    ``# calendar: COMMUNE START MINUTES`` and must be what the collector exports for that real day."""
    text = RULE_TEST.read_text(encoding="utf-8")
    found = re.findall(r"# calendar: (\S+) (\S+) (\d+)\n\s*- series: '(commune_calendar_\w+)\{[^']*\}'\n\s*values: '([^']*)'",
                       text)
    assert len(found) >= 8, "the markers of tests/rules/calendar.yml were not found"
    for commune, start, minutes, metric, values in found:
        want = calendar_series(commune, start, int(minutes), metric)
        assert values == want, f"{metric} of {commune} from {start}: the file has {values!r}, the calendar says {want!r}"
    assert DEFAULT_FILE.exists()
