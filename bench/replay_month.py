"""The synthetic month of the alert replay bench (bench/alert_replay.py): a province of a few
communes, the incidents that happen to it, and the series the rules read, as OpenMetrics text.

Ground truth, minute by minute, for every agent (one office PC each):
- the PC is on from a little before the first shift of each day its office is open (by the real
  working calendar, collector/calendar.py) to a little after the last one, off otherwise
  (nights, weekends, holidays), as DESIGN.md says the offices run;
- while it is on and its office link is up it pushes every minute, so the collector's
  ``commune_agent_last_push_timestamp_seconds{commune, agent}`` (exported continuously, one
  sample a minute as the scrape sees it) advances; with the link down it stalls;
- while it is on its SMART health ``commune_smart_healthy{device="sda"}`` is sampled every minute
  (with the link down the agent's queue sends those samples later, with their own timestamps:
  the backfilled TSDB holds them where they belong);
- the collector also exports ``commune_calendar_open`` / ``commune_calendar_holiday`` for every
  commune, from the real calendar, and ``up{job="collector"}`` is 1 throughout.

Incidents (each with its ground-truth window and what the bench expects of the notifications):
power cut (every PC of a commune off, switched back on 1-8 minutes after the power), maintenance day (link
down while the router is replaced, a silence declared with ``commune-collector silence add``),
flaky link (pushes stall for 12, 25 and 35 minutes, shorter than AgentSilent's 30 minutes plus its
``for: 10m``), failing disk (one PC's SMART health 0 from a morning until the disk is replaced two
days later), holiday (the calendar closes every office; PCs off).
"""
from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

from collector.calendar import VN, Calendar

MINUTE = 60
Interval = Tuple[float, float]


@dataclass
class Incident:
    key: str
    kind: str  # power-cut | maintenance | flaky-link | failing-disk | holiday
    commune: Optional[str]  # None: every commune
    start: float
    end: float
    agent: Optional[str] = None
    gaps: List[Interval] = field(default_factory=list)  # link down (flaky link, maintenance)
    silence: Optional[Interval] = None  # maintenance window declared (start, end)
    note: str = ""

    def covers(self, commune: str, t: float, slack: float) -> bool:
        return (self.commune in (None, commune)) and self.start <= t <= self.end + slack


def local(day: dt.date, hhmm: str) -> float:
    h, m = map(int, hhmm.split(":"))
    return dt.datetime(day.year, day.month, day.day, h, m, tzinfo=VN).timestamp()


def open_span(cal: Calendar, commune: str, day: dt.date) -> Optional[Interval]:
    """First shift start and last shift end of a day the office opens, or None."""
    if cal.holiday(day):
        return None
    shifts = cal.hours(commune).shifts(day.weekday(), day in cal.working_days)
    if not shifts:
        return None
    midnight = local(day, "00:00")
    return midnight + shifts[0][0] * MINUTE, midnight + shifts[-1][1] * MINUTE


def working_days(cal: Calendar, commune: str, first: dt.date, days: int) -> List[dt.date]:
    return [d for d in (first + dt.timedelta(n) for n in range(days))
            if open_span(cal, commune, d) and d.weekday() < 5]


@dataclass
class Province:
    calendar: Calendar
    first: dt.date
    days: int
    communes: List[str]
    agents: Dict[str, List[str]]
    incidents: List[Incident]
    seed: int = 7

    @property
    def start(self) -> float:
        return local(self.first, "00:00")

    @property
    def end(self) -> float:
        return self.start + self.days * 86400

    # ------------------------------------------------------------ ground truth
    def pc_on(self, commune: str, agent: str) -> List[Interval]:
        """When each PC is on, one day before the window included (its last push before it)."""
        rnd = random.Random(f"{self.seed}-{commune}-{agent}")
        out: List[Interval] = []
        for n in range(-1, self.days):
            day = self.first + dt.timedelta(n)
            span = open_span(self.calendar, commune, day)
            if span:
                out.append((span[0] - rnd.randint(5, 20) * MINUTE, span[1] + rnd.randint(5, 30) * MINUTE))
        for inc in self.incidents:
            if inc.kind == "power-cut" and inc.commune == commune:
                back = inc.end + rnd.randint(1, 8) * MINUTE  # switched back on, one by one
                out = subtract(out, (inc.start, back))
        return out

    def link_down(self, commune: str) -> List[Interval]:
        return [g for inc in self.incidents if inc.commune == commune for g in inc.gaps]

    def smart_failing(self, commune: str, agent: str) -> List[Interval]:
        return [(i.start, i.end) for i in self.incidents
                if i.kind == "failing-disk" and i.commune == commune and i.agent == agent]

    # ------------------------------------------------------------ series
    def openmetrics(self) -> Iterator[str]:
        """The series, one OpenMetrics line at a time (families grouped, samples in time order)."""
        t0 = self.start - 86400
        steps = range(int(t0), int(self.end), MINUTE)
        yield "# TYPE commune_agent_last_push_timestamp_seconds gauge\n"
        for c in self.communes:
            down = self.link_down(c)
            for a in self.agents[c]:
                on = self.pc_on(c, a)
                last = t0 - 86400.0
                name = f'commune_agent_last_push_timestamp_seconds{{job="collector",instance="collector",' \
                       f'commune="{c}",agent="{a}"}}'
                for t in steps:
                    if inside(on, t) and not inside(down, t):
                        last = float(t)
                    yield f"{name} {last:.0f} {t}\n"
        yield "# TYPE commune_smart_healthy gauge\n"
        for c in self.communes:
            for a in self.agents[c]:
                on, failing = self.pc_on(c, a), self.smart_failing(c, a)
                name = f'commune_smart_healthy{{commune="{c}",agent="{a}",device="sda"}}'
                for t in steps:
                    if inside(on, t):
                        yield f"{name} {0 if inside(failing, t) else 1} {t}\n"
        for metric in ("open", "holiday"):
            yield f"# TYPE commune_calendar_{metric} gauge\n"
            for c in self.communes:
                name = f'commune_calendar_{metric}{{job="collector",instance="collector",commune="{c}"}}'
                for t in steps:
                    st = self.calendar.state(c, t)
                    value = (1 if st.open else 0) if metric == "open" else (1 if st.holiday else 0)
                    yield f"{name} {value} {t}\n"
        yield "# TYPE up gauge\n"
        for t in steps:
            yield f'up{{job="collector",instance="collector"}} 1 {t}\n'
        yield "# EOF\n"


def inside(intervals: List[Interval], t: float) -> bool:
    return any(a <= t < b for a, b in intervals)


def subtract(intervals: List[Interval], cut: Interval) -> List[Interval]:
    out = []
    for a, b in intervals:
        if b <= cut[0] or a >= cut[1]:
            out.append((a, b))
            continue
        if a < cut[0]:
            out.append((a, cut[0]))
        if b > cut[1]:
            out.append((cut[1], b))
    return out


# ---------------------------------------------------------------- the province and its month

def province(cal: Calendar, first: dt.date, days: int, communes: int = 5, agents: int = 3) -> Province:
    """The synthetic province: communes 09667 (Saturday one-stop), 09670, ... each with ``agents``
    PCs; incidents placed on the working days of the window (the first ones fit in 4 days)."""
    if communes < 4:
        raise ValueError("--communes: at least 4 (one per kind of commune incident)")
    codes = ["09667", "09670"] + [f"{9673 + 3 * i:05d}" for i in range(communes - 2)]
    pcs = {c: [f"pc-{n:02d}" for n in range(1, agents + 1)] for c in codes}
    work = working_days(cal, "09670", first, days)
    if len(work) < 3:
        raise ValueError(f"{first} + {days} days: fewer than 3 working days, no room for the incidents")
    incidents: List[Incident] = []

    def add(kind, commune, start, end, **kw):
        incidents.append(Incident(f"{kind}-{sum(i.kind == kind for i in incidents) + 1}", kind, commune,
                                  start, end, **kw))

    c_power, c_disk, c_maint, c_flaky = codes[1], codes[2], codes[3], codes[0]
    for n, day in enumerate(work):
        if n % 8 == 0:  # a power cut in the morning, 2h15m
            add("power-cut", c_power, local(day, "08:30"), local(day, "10:45"), note="working day 08:30-10:45")
        if n % 8 == 1:  # a flaky link: three stalls shorter than AgentSilent's 30m + for 10m
            gaps = [(local(day, "08:05"), local(day, "08:17")), (local(day, "09:40"), local(day, "10:05")),
                    (local(day, "14:00"), local(day, "14:35"))]
            add("flaky-link", c_flaky, gaps[0][0], gaps[-1][1], gaps=gaps, note="stalls of 12, 25, 35 min")
        if n % 8 == 2:  # a maintenance day: router replaced, link down 07:30-16:30, silence 06:00-18:00
            add("maintenance", c_maint, local(day, "07:30"), local(day, "16:30"),
                gaps=[(local(day, "07:30"), local(day, "16:30"))],
                silence=(local(day, "06:00"), local(day, "18:00")), note="link down 07:30-16:30, silenced")
        if n % 8 == 1 and n + 2 < len(work):  # a disk fails at 10:00, replaced two working days later 14:00
            add("failing-disk", c_disk, local(day, "10:00"), local(work[n + 2], "14:00"), agent="pc-02",
                note=f"pc-02 SMART failing until {work[n + 2]:%d/%m} 14:00")
        if n % 8 == 5:  # an afternoon power cut
            add("power-cut", c_power, local(day, "13:40"), local(day, "16:10"), note="working day 13:40-16:10")
    for h in cal.holidays:
        lo, hi = max(h.first, first), min(h.last, first + dt.timedelta(days - 1))
        if lo <= hi:
            add("holiday", None, local(lo, "00:00"), local(hi, "00:00") + 86400, note=h.name)
            # a power cut during the holiday: nobody is there, nothing to notify
            add("power-cut", c_power, local(lo, "09:00"), local(lo, "12:00"), note=f"during {h.name}")
    return Province(cal, first, days, codes, pcs, incidents)
