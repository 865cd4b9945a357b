"""Time: the report's periods and the office hours at any hour, on any day of the month.

Vietnam is UTC+7 without daylight saving: its date changes at 17:00 UTC. The report's periods
(collector/report/gather.py: parse_period, with ``now`` injected) are checked a second either side
of that change, at month and year ends and on a leap day; the office hours of the rules
(global:office_hours:bool of collector/rules/signals.yml, and the report's OFFICE_HOURS) are
evaluated by a real Prometheus at pinned times, since both use the clock Prometheus evaluates with.
"""
from __future__ import annotations

import datetime as dt

import pytest
import yaml

from collector.report import queries
from collector.report.gather import VN, Period, ReportError, parse_period
from tests.support import REPO, prom_query
from tests.test_report import DAYS, date_change_before, period_text
from tests.test_rules_live import office_hours

UTC = dt.timezone.utc


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def vn(year: int, month: int, day: int) -> dt.datetime:
    return dt.datetime(year, month, day, tzinfo=VN)


def last_day(p: Period) -> dt.date:
    """The period's last day as the report names it (collector/report/render.py)."""
    return (p.end - p.end.resolution).date()


NOW = "now"  # the period still runs: it ends at now

# text, now (UTC), start, end (NOW or Vietnam midnight), whole month
PERIODS = [
    # the last second of November in Vietnam: November still runs
    ("2026-11", "2026-11-30T16:59:59Z", vn(2026, 11, 1), NOW, True),
    # December has begun in Vietnam: November is whole, December has just started
    ("2026-11", "2026-11-30T17:00:00Z", vn(2026, 11, 1), vn(2026, 12, 1), True),
    ("2026-12", "2026-11-30T17:00:01Z", vn(2026, 12, 1), NOW, True),
    ("2026-10", "2026-11-30T16:59:59Z", vn(2026, 10, 1), vn(2026, 11, 1), True),
    # the year ends
    ("2026-12", "2026-12-31T16:59:59Z", vn(2026, 12, 1), NOW, True),
    ("2026-12", "2026-12-31T17:00:00Z", vn(2026, 12, 1), vn(2027, 1, 1), True),
    ("2027-01", "2026-12-31T17:00:01Z", vn(2027, 1, 1), NOW, True),
    # February, 28 and 29 days
    ("2027-02", "2027-02-28T17:00:01Z", vn(2027, 2, 1), vn(2027, 3, 1), True),
    ("2027-03", "2027-02-28T17:00:01Z", vn(2027, 3, 1), NOW, True),
    ("2028-02", "2028-02-28T17:00:00Z", vn(2028, 2, 1), NOW, True),  # the leap day has begun
    ("2028-02", "2028-02-29T16:59:59Z", vn(2028, 2, 1), NOW, True),
    ("2028-02", "2028-02-29T17:00:00Z", vn(2028, 2, 1), vn(2028, 3, 1), True),
    ("2028-03", "2028-02-29T17:00:01Z", vn(2028, 3, 1), NOW, True),
    # days, the last one included
    ("2026-12-06..2026-12-06", "2026-12-06T16:59:59Z", vn(2026, 12, 6), NOW, False),
    ("2026-12-06..2026-12-06", "2026-12-06T17:00:00Z", vn(2026, 12, 6), vn(2026, 12, 7), False),
    ("2026-11-10..2026-12-06", "2026-12-06T21:40:00Z", vn(2026, 11, 10), vn(2026, 12, 7), False),
    ("2026-11-11..2026-12-07", "2026-12-06T21:40:00Z", vn(2026, 11, 11), NOW, False),
    ("2026-12-07..2026-12-07", "2026-12-06T17:00:01Z", vn(2026, 12, 7), NOW, False),
    ("2026-11-30..2026-12-01", "2026-12-01T17:00:00Z", vn(2026, 11, 30), vn(2026, 12, 2), False),
    ("2026-12-31..2027-01-01", "2027-01-02T00:00:00Z", vn(2026, 12, 31), vn(2027, 1, 2), False),
    ("2028-02-28..2028-02-29", "2028-02-29T17:00:00Z", vn(2028, 2, 28), vn(2028, 3, 1), False),
    ("2028-02-29..2028-02-29", "2028-02-29T16:59:59Z", vn(2028, 2, 29), NOW, False),
]


@pytest.mark.parametrize("text,now,start,end,whole", PERIODS, ids=[f"{p[0]}@{p[1]}" for p in PERIODS])
def test_period_boundaries(text, now, start, end, whole):
    now = utc(now)
    p = parse_period(text, now)
    assert p.start == start and p.start.utcoffset() == dt.timedelta(hours=7)
    assert p.end == (now if end is NOW else end) and p.end.utcoffset() == dt.timedelta(hours=7)
    assert p.whole_month is whole
    # the PromQL range covers the period exactly (whole seconds, never before its start)
    assert p.seconds == int((p.end - p.start).total_seconds()) and p.range == f"{p.seconds}s"
    # the last day named is Vietnam's, whatever zone now was given in
    named = now.astimezone(VN) - now.resolution if end is NOW else end - dt.timedelta(days=1)
    assert last_day(p) == named.date()
    assert parse_period(text, now.astimezone(VN)) == p  # the same instant in another zone


def test_month_lengths():
    now = utc("2029-01-01T00:00:00Z")
    assert [parse_period(f"2028-{m:02d}", now).seconds // 86400 for m in range(1, 13)] == \
        [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    assert parse_period("2027-02", now).seconds == 28 * 86400
    assert parse_period("2026-12", now).range == f"{31 * 86400}s"


@pytest.mark.parametrize("text,now", [
    ("2026-12", "2026-11-30T16:59:59Z"),  # a second before it starts in Vietnam
    ("2026-12", "2026-11-30T17:00:00Z"),  # the very instant it starts: nothing to report yet
    ("2027-01", "2026-12-31T16:59:59Z"),
    ("2028-03", "2028-02-29T17:00:00Z"),
    ("2026-12-07..2026-12-07", "2026-12-06T16:59:59Z"),
    ("2026-12-07..2026-12-08", "2026-12-06T17:00:00Z"),
])
def test_periods_not_started(text, now):
    with pytest.raises(ReportError, match="has not started yet"):
        parse_period(text, utc(now))


def test_period_just_started_is_not_padded_with_the_previous_one():
    p = parse_period("2026-12", utc("2026-11-30T17:00:01Z"))
    assert p.start == vn(2026, 12, 1) and p.seconds == 1 and p.range == "1s"


@pytest.mark.parametrize("text,msg", [("2027-02-29..2027-03-01", "day is out of range for month"),
                                      ("2026-00", "month must be 01-12"),
                                      ("2026-12-02..2026-12-01", "is before")])
def test_bad_dates(text, msg):
    with pytest.raises(ReportError, match=msg):
        parse_period(text, utc("2028-06-01T00:00:00Z"))


def test_now_must_be_aware():
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_period("2026-11", dt.datetime(2026, 12, 6, 21, 40))


@pytest.mark.parametrize("now,today", [("2026-12-06T16:59:59Z", dt.date(2026, 12, 6)),
                                       ("2026-12-06T17:00:00Z", dt.date(2026, 12, 7)),
                                       ("2026-11-30T17:00:01Z", dt.date(2026, 12, 1)),
                                       ("2028-02-28T17:00:00Z", dt.date(2028, 2, 29))])
def test_report_test_period_either_side_of_the_date_change(now, today):
    """tests/test_report.py's period: the DAYS days up to now's date in Vietnam, until now."""
    now = utc(now)
    p = parse_period(period_text(now), now)
    first = today - dt.timedelta(days=DAYS - 1)
    assert p.start == vn(first.year, first.month, first.day) and p.end == now
    assert last_day(p) == today - dt.timedelta(days=p.end == vn(today.year, today.month, today.day))


def test_date_change_before():
    for now, change in (("2026-12-06T21:40:00Z", "2026-12-06T17:00:00Z"),
                        ("2026-12-06T17:00:00Z", "2026-12-06T17:00:00Z"),
                        ("2026-12-06T16:59:59Z", "2026-12-05T17:00:00Z"),
                        ("2028-03-01T03:00:00Z", "2028-02-29T17:00:00Z")):
        assert date_change_before(utc(now).timestamp()) == utc(change).timestamp()


# Office hours: Monday-Friday 07:00-17:00 in Vietnam, i.e. 00:00-10:00 UTC, Monday to Friday there.
OFFICE = [
    ("2026-12-06T16:59:59Z", False),  # Sunday 23:59:59
    ("2026-12-06T17:00:00Z", False),  # Monday 00:00
    ("2026-12-06T23:59:59Z", False),  # Monday 06:59:59
    ("2026-12-07T00:00:00Z", True),  # Monday 07:00
    ("2026-12-07T09:59:59Z", True),  # Monday 16:59:59
    ("2026-12-07T10:00:00Z", False),  # Monday 17:00
    ("2026-12-11T09:59:59Z", True),  # Friday 16:59:59
    ("2026-12-11T17:00:00Z", False),  # Saturday 00:00
    ("2026-12-12T03:00:00Z", False),  # Saturday 10:00
    ("2026-12-31T23:59:59Z", False),  # Friday 1 January 06:59:59
    ("2027-01-01T00:00:00Z", True),  # Friday 1 January 07:00
    ("2028-02-29T03:00:00Z", True),  # Tuesday, leap day, 10:00
]


def test_office_hours_as_prometheus_evaluates_them(prometheus):
    _, url = prometheus
    signals = yaml.safe_load((REPO / "collector" / "rules" / "signals.yml").read_text(encoding="utf-8"))
    rule, = [r["expr"] for g in signals["groups"] for r in g["rules"] if r.get("record") == "global:office_hours:bool"]
    for when, want in OFFICE:
        t = utc(when).timestamp()
        assert office_hours(t) is want, when
        got = prom_query(url, rule, t)
        assert [float(r["value"][1]) for r in got] == [float(want)], when
        # the report's subqueries keep the office-hours steps only (1 then, nothing else)
        got = prom_query(url, queries.OFFICE_HOURS, t)
        assert [float(r["value"][1]) for r in got] == ([1.0] if want else []), when
