"""The replacement report on the real pipeline: a month of synthetic device history is pushed
through the real collector (which stamps commune and agent, and exports the fleet inventory) into
a real Prometheus evaluating the project's recording rules; the report must rank the worn-out PC
above the healthy one and show the figures the history was built with. The HTML is rendered in
headless Chromium and the PDF converted with pdftoppm.

Time: the history ends at the fixture's "now" and the report's period (Vietnam days, the date
changes at 17:00 UTC) is that of one pinned "now" taken after scoring; every expected figure is
computed from the samples pushed over that very period (expected_figures), so the test holds at any
hour. The same history is also reported on as of a second either side of the last 17:00 UTC.
"""
from __future__ import annotations

import bisect
import datetime as dt
import math
import re
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pytest
import yaml

from contract.remote_write import encode
from collector.report import gather as gather_mod
from collector.report import forecasts, render, texts
from collector.promapi import Prometheus
from collector.report.gather import ReportError
from tests.support import REPO, VENV_BIN, free_port, prom_query, start_prometheus, wait_until
from tests.test_collector_ingest import add_token, post, start_collector

pytestmark = pytest.mark.slow

COMMUNE = "09667"
STEP = 120  # seconds between synthetic samples (two in every 5-minute rate window)
DAYS = 27
FLEET = {
    "communes": [{"code": COMMUNE, "name": "Xã Tân Lập", "province": "Phú Thọ"}],
    "devices": [
        {"id": "pc-old", "commune": COMMUNE, "kind": "pc", "model": "Dell OptiPlex 3020",
         "location": "Bộ phận một cửa", "purchase_date": "2020-01-15", "rated_life_years": 5, "agent": "pc-old"},
        {"id": "pc-new", "commune": COMMUNE, "kind": "pc", "model": "HP ProDesk 400 G9",
         "location": "Phòng kế toán", "purchase_date": "2025-06-01", "agent": "pc-new"},
        {"id": "printer-1", "commune": COMMUNE, "kind": "printer", "model": "Canon LBP2900",
         "location": "Bộ phận một cửa", "purchase_date": "2019-05-01", "rated_life_pages": 50000,
         "agent": "pc-old", "target": "printer-1"},
    ],
}


def history(agent: str, origin: int, start: int, end: int):
    """Series of one agent from start to end (seconds), one sample every STEP; counters count from origin."""
    out = {}

    def add(value, ts, **labels):
        key = tuple(sorted(labels.items()))
        out.setdefault(key, (labels, []))[1].append((float(value), ts * 1000))

    for ts in range(start, end, STEP):
        hour = (ts // 3600) % 24
        elapsed = ts - origin
        if agent == "pc-old":
            add(4e9, ts, __name__="node_memory_MemTotal_bytes")
            # under 10 % available 9 hours of every 24: 37.5 % of the time
            add(0.2e9 if hour < 9 else 2e9, ts, __name__="node_memory_MemAvailable_bytes")
            add(elapsed * 0.5, ts, __name__="node_cpu_seconds_total", cpu="0", mode="idle")
            add(24, ts, __name__="commune_smart_reallocated_sectors", device="sda")
            add(0, ts, __name__="commune_smart_pending_sectors", device="sda")
            add(1, ts, __name__="commune_smart_healthy", device="sda")
            add(1, ts, __name__="commune_disk_info", device="sda", type="hdd", model="WDC WD5000AAKX")
            # three boots ended by a power cut or a crash (on days 5, 12 and 20), all within the period
            add(sum(elapsed >= day * 86400 for day in (5, 12, 20)), ts,
                __name__="commune_host_unexpected_shutdowns_total")
            # boots take 2.5 minutes, 4.5 on every 7th day (days 3, 10, 17, 24): typically 2.5
            add(270 if (elapsed // 86400) % 7 == 3 else 150, ts, __name__="commune_host_boot_duration_seconds")
            # the printer it polls: 100 pages a day, jammed one hour a day
            add(40000 + elapsed * 100 / 86400, ts, __name__="commune_printer_pages_total",
                target="printer-1", marker="1")
            add(1 if hour == 3 else 0, ts, __name__="commune_printer_error_state", target="printer-1",
                condition="jammed")
            # its toner: 40 % at the start, 1 point used a day, never refilled (the Forecasts section)
            add(0.40 - elapsed / 86400 * 0.01, ts, __name__="commune_printer_supply_level_ratio", target="printer-1",
                index="1", description="Canon 303 Black", type="toner", **{"class": "consumed"})
            # its system drive: 40 GB free at the start, 1 GB taken a day
            add(40e9 - elapsed / 86400 * 1e9, ts, __name__="node_filesystem_avail_bytes", device="C:\\",
                fstype="NTFS", mountpoint="C:\\")
            add(250e9, ts, __name__="node_filesystem_size_bytes", device="C:\\", fstype="NTFS", mountpoint="C:\\")
            add(1, ts, __name__="commune_snmp_up", target="printer-1")
            add(0.02, ts, __name__="commune_icmp_packet_loss_ratio", target="gateway", address="192.0.2.1",
                hop="gateway")
            add(0.004, ts, __name__="commune_icmp_rtt_avg_seconds", target="gateway", address="192.0.2.1",
                hop="gateway")
            # the portal is down 2 hours a day
            add(0 if hour in (10, 11) else 1, ts, __name__="probe_success", target="dvc", module="portal",
                hop="service")
            add(0.8, ts, __name__="probe_duration_seconds", target="dvc", module="portal", hop="service")
            add(1, ts, __name__="commune_probe_target_info", target="dvc", module="portal",
                service="dichvucong", prober="http", hop="service")
        else:
            add(16e9, ts, __name__="node_memory_MemTotal_bytes")
            add(10e9, ts, __name__="node_memory_MemAvailable_bytes")
            add(elapsed * 0.9, ts, __name__="node_cpu_seconds_total", cpu="0", mode="idle")
            add(0, ts, __name__="commune_smart_reallocated_sectors", device="nvme0n1")
            add(0, ts, __name__="commune_smart_pending_sectors", device="nvme0n1")
            add(1, ts, __name__="commune_smart_healthy", device="nvme0n1")
            add(1, ts, __name__="commune_disk_info", device="nvme0n1", type="ssd", model="Samsung PM991")
            add(0, ts, __name__="commune_host_unexpected_shutdowns_total")
            add(40, ts, __name__="commune_host_boot_duration_seconds")
    return list(out.values())


def fast_rules(tmp: Path) -> list:
    """The project's rules with every group interval shortened to 2s (windows unchanged)."""
    out = []
    for path in sorted((REPO / "collector" / "rules").glob("*.yml")):
        data = yaml.safe_load(path.read_text())
        for group in data["groups"]:
            group["interval"] = "2s"
        dest = tmp / path.name
        dest.write_text(yaml.safe_dump(data))
        out.append(dest)
    return out


# Everything older than the test's Prometheus would keep by default (15 days, deleted as soon as
# compacted into blocks) must be accepted and kept: the collector's age limit, the out-of-order
# window and the retention all cover the whole history.
KEEP = "40d"


@dataclass
class Pipeline:
    url: str
    tmp: Path
    start: int  # the history's first sample (seconds)
    end: int  # the history's "now": its last sample is at most one STEP before
    now: dt.datetime  # the report's "now", after every device was scored on the whole history
    history: Dict[str, list]  # agent -> the series pushed for it, as history() built them

    @property
    def period_text(self) -> str:
        return period_text(self.now)

    def series(self, agent: str, name: str, **labels: str) -> Series:
        for lab, points in self.history[agent]:
            if lab["__name__"] == name and all(lab.get(k) == v for k, v in labels.items()):
                return Series(points)
        raise KeyError(f"{agent} pushed no {name}{labels}")


def push_inventory_history(prom_url: str, start: int, before: float) -> None:
    """The inventory as if Prometheus had scraped the collector for the whole history: its scraped
    series (same labels, job and instance included) written back, one sample every STEP from start
    until before (the first scrape), so that a report of any period within the history has it."""
    inventory = prom_query(prom_url, '{__name__=~"commune_office_info|commune_device_.+"}')
    assert inventory
    stamps = list(range(start, int(before) - 1, STEP))
    for day in range(0, len(stamps), 86400 // STEP):
        body = encode([(r["metric"], [(float(r["value"][1]), ts * 1000) for ts in stamps[day:day + 86400 // STEP]])
                       for r in inventory])
        status, text = post(prom_url + "/api/v1/write", body)
        assert status == 204, text


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    fleet = tmp / "fleet.yaml"
    fleet.write_text(yaml.safe_dump(FLEET, allow_unicode=True))
    prom, prom_url = start_prometheus(tmp, rule_files=fast_rules(tmp), ooo_window=KEEP, retention=KEEP,
                                      evaluation_interval="2s")
    procs = [prom]
    try:
        coll, coll_url, state = start_collector(tmp, [prom_url + "/api/v1/write"],
                                                extra={"fleet_file": str(fleet), "limits": {"max_sample_age": KEEP}})
        procs.append(coll)
        # Prometheus scrapes the collector for the inventory (honor_labels keeps commune/agent)
        cfg = yaml.safe_load((tmp / "prometheus.yml").read_text())
        cfg["scrape_configs"] = [{"job_name": "collector", "honor_labels": True,
                                  "static_configs": [{"targets": [coll_url.split("//")[1]]}]}]
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        reloaded = time.time()
        subprocess.run(["curl", "-s", "-X", "POST", prom_url + "/-/reload"], check=False, timeout=30)
        # scraped before any history is written, as in production: Prometheus's head starts now and
        # the whole history goes in as out-of-order samples
        wait_until(lambda: len(prom_query(prom_url, "commune_device_info")) == len(FLEET["devices"]), 30,
                   what="the fleet inventory scraped from the collector")
        tokens = {a: add_token(state, COMMUNE, a) for a in ("pc-old", "pc-new")}
        now = int(time.time())
        start = now - DAYS * 86400 - 3600  # a whole number of STEPs before now: the last sample is fresh
        for day_start in range(start, now + 1, 86400):  # oldest first, one day per request
            for agent, token in tokens.items():
                body = encode(history(agent, start, day_start, min(day_start + 86400, now + 1)))
                status, text = post(coll_url + "/api/v1/write", body, token)
                assert status == 204, text
        push_inventory_history(prom_url, start, reloaded)
        # factors evaluated (every 2 s) after the whole history was in, then scores from those factors
        written = time.time()
        factors = "commune:device_replacement_factor:ratio"
        wait_until(lambda: prom_query(prom_url, f"count({factors})")
                   and prom_query(prom_url, f"count(timestamp({factors}) > {written + 1}) == count({factors})"),
                   timeout=120, what="replacement factors evaluated on the whole history")
        factored = time.time()
        fresh = f"timestamp(commune:device_replacement_score:top_reason) > {factored + 1}"
        wait_until(lambda: len(prom_query(prom_url, fresh)) == 3, timeout=60, what="every device scored")
        yield Pipeline(prom_url, tmp, start, now, dt.datetime.now(gather_mod.VN),
                       {a: history(a, start, start, now + 1) for a in tokens})
    finally:
        for p in reversed(procs):
            p.stop()


def period_text(now: dt.datetime) -> str:
    """The DAYS days up to now's date, in Vietnam (the date changes at 17:00 UTC)."""
    today = now.astimezone(gather_mod.VN).date()
    return f"{today - dt.timedelta(days=DAYS - 1)}..{today}"


# ---------------------------------------------------------------- what Prometheus makes of the history
# The expected figures are computed here from the very samples pushed and the very period asked
# for, the way Prometheus 2.x evaluates them: a range [t - r, t] holds the samples within it (both
# ends included); an instant selector at t sees the latest sample of the 5 minutes up to t; a
# subquery [r:s] evaluates at the multiples of s within [t - r, t]; increase() extrapolates.

LOOKBACK_MS = 300_000


class Series:
    def __init__(self, points):
        self.points = sorted((ts, v) for v, ts in points)
        self.stamps = [ts for ts, _ in self.points]

    def at(self, t: int) -> Optional[float]:
        i = bisect.bisect_right(self.stamps, t) - 1
        return self.points[i][1] if i >= 0 and self.stamps[i] >= t - LOOKBACK_MS else None

    def holds(self, lo: int, hi: int) -> bool:
        return bisect.bisect_right(self.stamps, hi) > bisect.bisect_left(self.stamps, lo)


class Window:
    """The period as the report asks Prometheus about it: ``[{P}]`` ending at the period's end."""

    def __init__(self, period: gather_mod.Period):
        self.end = round(float(f"{period.end.timestamp():.3f}") * 1000)  # the time promapi sends
        self.start = self.end - period.seconds * 1000

    def raw(self, s: Series) -> List[Tuple[int, float]]:
        return [(t, v) for t, v in s.points if self.start <= t <= self.end]

    def steps(self, step_s: int) -> range:
        step = step_s * 1000
        first = step * (self.start // step)
        if first < self.start:
            first += step
        return range(first, self.end + 1, step)

    def over_steps(self, value: Callable[[int], Optional[float]], step_s: int) -> List[float]:
        return [v for v in map(value, self.steps(step_s)) if v is not None]

    def increase(self, s: Series) -> float:
        pts = self.raw(s)
        assert len(pts) >= 2 and all(a[1] <= b[1] for a, b in zip(pts, pts[1:]))  # no counter resets
        (t0, v0), (t1, v1) = pts[0], pts[-1]
        result = v1 - v0
        to_start, to_end = (t0 - self.start) / 1000, (self.end - t1) / 1000
        sampled = (t1 - t0) / 1000
        average = sampled / (len(pts) - 1)
        if result > 0 and v0 >= 0:
            to_start = min(to_start, sampled * (v0 / result))  # a counter does not go below zero
        interval = sampled
        interval += to_start if to_start < average * 1.1 else average / 2
        interval += to_end if to_end < average * 1.1 else average / 2
        return result * (interval / sampled)


def quantile(q: float, values: List[float]) -> float:
    values = sorted(values)
    rank = q * (len(values) - 1)
    lower = max(0, math.floor(rank))
    upper = min(len(values) - 1, lower + 1)
    return values[lower] * (1 - (rank - lower)) + values[upper] * (rank - lower)


def mean(values: List[float]) -> float:
    assert values
    return sum(values) / len(values)


def expected_figures(pl: Pipeline, period: gather_mod.Period) -> dict:
    """The report's measured values for the period, from the history pushed."""
    w = Window(period)
    old = lambda name, **labels: pl.series("pc-old", name, **labels)  # noqa: E731
    avail, total = old("node_memory_MemAvailable_bytes"), old("node_memory_MemTotal_bytes")
    boot = [v for _, v in w.raw(old("commune_host_boot_duration_seconds"))]
    jammed = old("commune_printer_error_state", condition="jammed")
    pages = old("commune_printer_pages_total")
    up, info = old("probe_success"), old("commune_probe_target_info")

    def pressure(t):
        a, m = avail.at(t), total.at(t)
        return None if a is None or m is None else float(a / m < 0.10)

    def service_up(t):
        s, i = up.at(t), info.at(t)
        return None if s is None or i is None else s * i

    at_s = w.end / 1000
    daily_from = round(float(f"{min(period.start.timestamp() + 86400, at_s):.3f}") * 1000)
    days = range(daily_from, w.end + 1, 86400_000)
    return {
        "memory_pressure_share": mean(w.over_steps(pressure, 300)),
        "unexpected_shutdowns": w.increase(old("commune_host_unexpected_shutdowns_total")),
        "boot_seconds_median": quantile(0.5, boot),
        "boot_seconds_max": max(boot),
        "error_minutes": sum(w.over_steps(jammed.at, 60)),
        "pages_in_period": w.increase(pages),
        "pages_total": w.raw(pages)[-1][1],
        "availability": mean(w.over_steps(service_up, 300)),
        # one daily point per day of the period with memory samples in the day up to it
        "daily_points": sum(1 for t in days if avail.holds(t - 86400_000, t)),
    }


def check_evidence(report: gather_mod.Report, pl: Pipeline) -> Dict[str, gather_mod.DeviceRow]:
    """The measured values of the report are those the history implies over the report's period."""
    want = expected_figures(pl, report.period)
    assert [c.code for c in report.communes] == [COMMUNE]
    block = report.communes[0]
    assert block.name == "Xã Tân Lập" and block.province == "Phú Thọ"
    rows = {d.device: d for d in block.devices}
    assert set(rows) == {"pc-old", "pc-new", "printer-1"}
    old, new = rows["pc-old"], rows["pc-new"]
    factors = {f.name: f for f in old.factors}
    at = report.period.end.timestamp()
    # the fleet's purchase dates are UTC midnights (collector/fleet.py); age at the period's end
    assert factors["age"].evidence["years"] == pytest.approx(
        (at - dt.datetime(2020, 1, 15, tzinfo=dt.timezone.utc).timestamp()) / gather_mod.YEAR, rel=1e-12)
    assert factors["age"].evidence["rated_years"] == pytest.approx(5)
    # under 10 % available 9 hours of every 24: 37.5 % of whole days, exactly what the period holds
    share = factors["memory_pressure"].evidence["memory_pressure_share"]
    assert share == pytest.approx(want["memory_pressure_share"], rel=1e-9)
    assert share == pytest.approx(0.375, abs=0.02)
    assert factors["disk_health"].evidence == {"smart_reallocated": 24, "smart_pending": 0, "smart_failing": 0}
    assert factors["cpu_saturation"].evidence["cpu_saturated_share"] == 0  # busy 50 %, never saturated
    assert factors["hdd"].evidence == {"has_hdd": 1.0, "memory_total_bytes": 4e9}
    assert evidence(old, "disk_health", "en") == "SMART: 24 reallocated sectors, 0 pending sectors"
    assert evidence(old, "hdd", "vi") == "Ổ cứng cơ (HDD), RAM 4,0 GB"
    # the three crashes (days 5, 12 and 20 of the history) are all within the period; increase()
    # extrapolates the count to the period's ends by a hair
    crashes = [pl.start + day * 86400 for day in (5, 12, 20)]
    assert all(report.period.start.timestamp() <= c <= at for c in crashes)
    count = factors["unexpected_restarts"].evidence["unexpected_shutdowns"]
    assert count == pytest.approx(want["unexpected_shutdowns"], rel=1e-9)
    assert round(count) == 3 and count == pytest.approx(3, abs=0.01)
    assert evidence(old, "unexpected_restarts", "en") == "3 unexpected shutdowns (power cut or crash) in the period"
    assert evidence(old, "unexpected_restarts", "vi") == "Tắt máy đột ngột 3 lần (mất điện hoặc treo máy) trong kỳ"
    # typical boot 150 s (the median: the 270 s days are 4 of 27), the worst 270 s
    assert factors["slow_boot"].evidence == {"boot_seconds_median": want["boot_seconds_median"],
                                             "boot_seconds_max": want["boot_seconds_max"]}
    assert want["boot_seconds_median"] == 150 and want["boot_seconds_max"] == 270
    assert evidence(old, "slow_boot", "en") == "Boot took 2.5 minutes typically, up to 4.5 minutes"
    assert evidence(old, "slow_boot", "vi") == "Khởi động thường mất 2,5 phút, có lúc mất tới 4,5 phút"
    assert evidence(new, "unexpected_restarts", "en") == "0 unexpected shutdowns (power cut or crash) in the period"
    printer = {f.name: f for f in rows["printer-1"].factors}
    assert printer["pages"].evidence == {"pages_total": pytest.approx(want["pages_total"], rel=1e-12),
                                         "rated_pages": 50000}
    # jammed one hour of every day while printing 100 pages a day: 600 minutes per 1,000 pages over
    # whole days; exactly what the period's jammed minutes and pages give
    ev = printer["error_time"].evidence
    assert ev["error_minutes"] == want["error_minutes"]
    assert ev["pages_in_period"] == pytest.approx(want["pages_in_period"], rel=1e-9)
    assert ev["error_minutes"] / ev["pages_in_period"] * 1000 == pytest.approx(600, rel=0.05)
    per_1000 = texts.number(want["error_minutes"] / want["pages_in_period"] * 1000, "en", 1)
    assert evidence(rows["printer-1"], "error_time", "en") == \
        f"{per_1000} minutes jammed, door open or service requested per 1,000 pages"
    assert len(old.daily) == want["daily_points"] >= DAYS - 2
    # software availability and link quality of the commune: the portal is down 2 hours a day
    (service, share, resp), = block.availability
    assert service == "dichvucong" and resp == pytest.approx(0.8)
    assert share == pytest.approx(want["availability"], rel=1e-9)
    assert share == pytest.approx(22 / 24, abs=0.02)
    assert block.links == [("gateway", pytest.approx(0.02), pytest.approx(0.004))]
    return rows


def test_report_ranks_worn_device_first_with_its_evidence(pipeline):
    period = gather_mod.parse_period(pipeline.period_text, pipeline.now)
    assert period.end == pipeline.now  # the period runs until now: the scores of now are in it
    report = gather_mod.gather(Prometheus(pipeline.url), period, now=pipeline.now)
    rows = check_evidence(report, pipeline)
    old, new = rows["pc-old"], rows["pc-new"]
    assert old.score is not None and new.score is not None
    assert old.score > new.score
    pcs = [d.device for d in report.communes[0].devices if d.kind == "pc"]
    assert pcs == ["pc-old", "pc-new"]
    factors = {f.name: f for f in old.factors}
    assert factors["age"].level == 1.0  # past its 5-year rated life
    assert factors["hdd"].level == 1.0  # HDD on a 4 GB machine
    # 3 unexpected shutdowns in 30 days (1 at 4)
    assert factors["unexpected_restarts"].level == pytest.approx(0.75, abs=0.01)
    assert factors["slow_boot"].level == pytest.approx((150 - 90) / 210)
    assert old.reason in {f for f, row in factors.items() if row.level}  # the dominant reason is a factor
    new_levels = {f.name: f.level for f in new.factors}
    assert new.status == "ok" and new_levels["disk_health"] == 0
    assert new_levels["unexpected_restarts"] == 0 and new_levels["slow_boot"] == 0  # 40 s boots, no crash
    assert report.summary()["pc"]["ok"] >= 1
    assert report.generated == pipeline.now
    # the recommended actions and their budget: the PC past its rated life is replaced (not given an
    # SSD, though it has an HDD on 4 GB); the new one needs nothing
    assert old.actions == ["replace_device"] and old.status == "replace"
    assert new.actions == []
    printer = rows["printer-1"]
    plevels = {f.name: f.level for f in printer.factors}
    worn = (plevels["age"] or 0) >= 1 or (plevels["pages"] or 0) >= 1
    assert printer.actions == (["replace_device"] if worn and (plevels["error_time"] or 0) >= 0.5 else
                               printer.actions and printer.actions)  # else whatever the score fallback gave
    from collector.report import budget

    report.prices = budget.load_prices()
    lines = {(line.action, line.kind): line for line in report.budget()}
    assert lines[("replace_device", "pc")].count == 1
    assert lines[("replace_device", "pc")].total == report.prices.table[("replace_device", "pc")].price
    assert budget.total(lines.values()) == sum(report.prices.table[(a, d.kind)].price
                                               for c in report.communes for d in c.devices for a in d.actions)


def test_report_forecasts(pipeline):
    """The Forecasts section, from the recording rules of forecasts.yml on the history: the toner
    (13 % left at the end, 1 point a day) and the system drive (13 GB free, 1 GB a day) run out in
    about 13 days; printer-1 (about 42,700 of 50,000 rated pages, 100 a day) reaches its rating in
    about 73 days. Its history is 27 days, shorter than the 30-day page window, so the rule takes
    the page counter's 7-day slope: exactly 100 a day."""
    period = gather_mod.parse_period(pipeline.period_text, pipeline.now)
    report = gather_mod.gather(Prometheus(pipeline.url), period, now=pipeline.now)
    fc = report.forecasts
    level = pipeline.series("pc-old", "commune_printer_supply_level_ratio").points[-1][1]
    free = pipeline.series("pc-old", "node_filesystem_avail_bytes").points[-1][1]
    pages = pipeline.series("pc-old", "commune_printer_pages_total").points[-1][1]
    (supply,) = fc.supplies
    assert (supply.commune, supply.device, supply.supply) == (COMMUNE, "printer-1", "Canon 303 Black")
    assert supply.level == pytest.approx(level, rel=1e-9)
    assert supply.days == pytest.approx(level / 0.01, rel=1e-6) and 12 < supply.days < 14
    # pc-old (bought 2020-01-15, rated 5 years) is past its rated life at any date of the run
    by_what = {(d.device, d.what): d for d in fc.life}
    assert by_what[("pc-old", "device")].days == 0 and by_what[("pc-old", "device")].kind == "pc"
    assert all(0 <= d.days <= forecasts.LIFE_DAYS for d in fc.life)
    assert [d.days for d in fc.life] == sorted(d.days for d in fc.life)
    (life,) = [d for d in fc.life if d.what == "pages"]
    assert (life.device, life.kind, life.model, life.what) == ("printer-1", "printer", "Canon LBP2900", "pages")
    assert life.days == pytest.approx((50000 - pages) / 100, rel=1e-6) and 70 < life.days < 76
    (disk,) = fc.disks
    assert (disk.device, disk.mountpoint) == ("pc-old", "C:\\")
    assert disk.bytes_per_day == pytest.approx(1e9, rel=1e-6)
    assert disk.days == pytest.approx(free / 1e9, rel=1e-6) and 12 < disk.days < 14
    assert fc.battery_years == pytest.approx(3)
    page = render.html_report(report, "en")
    section = page.split("<h2>Forecasts</h2>")[1].split("<section")[0]
    for text in ("Supplies to order", "Devices reaching their rated life", "System disks filling up",
                 "Canon 303 Black", "Rated lifetime pages", "Device rated life", "past it", "UPS batteries: 3 years from the UPS&#x27;s purchase date"):
        assert text in section, text
    assert f"<td class=\"num\">{texts.number(supply.days, 'en', 0)}</td>" in section
    vi = render.html_report(report, "vi").split("<h2>Dự báo</h2>")[1].split("<section")[0]
    for text in ("Vật tư cần đặt mua", "Thiết bị sắp hết tuổi thọ định mức", "Ổ hệ thống sắp đầy", "Số trang in định mức"):
        assert text in vi, text
    # as of a time before the rules ran, there is nothing to forecast, and the section says so
    midnight = date_change_before(pipeline.end - 600)
    before = dt.datetime.fromtimestamp(midnight - 1, gather_mod.VN)
    early = gather_mod.gather(Prometheus(pipeline.url), gather_mod.parse_period(period_text(before), before),
                              daily=False, now=before)
    assert early.forecasts.supplies == early.forecasts.life == early.forecasts.disks == []
    assert "No supply is running out." in render.html_report(early, "en")


def date_change_before(t: float) -> float:
    """The last 17:00 UTC (midnight in Vietnam) at or before t."""
    return t - (t - 17 * 3600) % 86400


@pytest.mark.parametrize("offset", [-1, 1], ids=["16:59:59Z", "17:00:01Z"])
def test_report_for_a_pinned_now_either_side_of_the_date_change(pipeline, offset):
    """The same history reported on as of a second before and a second after the last change of
    date in Vietnam (17:00 UTC, taken 10 minutes inside the history): the period moves by a day,
    the figures are still those the history implies over it. The recording rules were not running
    yet at that time: the devices have no score, the report says so."""
    midnight = date_change_before(pipeline.end - 600)
    now = dt.datetime.fromtimestamp(midnight + offset, gather_mod.VN)
    day = dt.datetime.fromtimestamp(midnight, gather_mod.VN).date() - dt.timedelta(days=offset < 0)
    assert now.date() == day
    period = gather_mod.parse_period(period_text(now), now)
    first = day - dt.timedelta(days=DAYS - 1)
    assert period.start == dt.datetime(first.year, first.month, first.day, tzinfo=gather_mod.VN)
    assert period.end == now and not period.whole_month
    report = gather_mod.gather(Prometheus(pipeline.url), period, now=now)
    rows = check_evidence(report, pipeline)
    for d in rows.values():
        assert d.score is None and d.status == "nodata" and d.reason == "none"
        assert [f.level for f in d.factors] == [None] * len(d.factors)
    assert report.summary()["pc"] == {"replace": 0, "repair": 0, "watch": 0, "ok": 0, "nodata": 2}
    assert report.generated == now


def evidence(device, factor: str, lang: str) -> str:
    return render.evidence_text(next(f for f in device.factors if f.name == factor), lang)


def run_report(prom_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "commune-collector"), "report", "--prometheus", prom_url, *args],
                          capture_output=True, text=True, timeout=300)


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("chromium is not installed; tests/run.sh installs it (apt chromium)")
    return path


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def test_html_report_renders_in_chromium(pipeline, tmp_path):
    prom_url = pipeline.url
    out = tmp_path / "report.html"
    proc = run_report(prom_url, "--period", pipeline.period_text, "--lang", "en", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "1 communes, 3 devices" in proc.stderr
    page = out.read_text()
    assert "<link" not in page and "<script" not in page and "src=\"http" not in page  # self-contained
    browser = chromium()
    profile = tmp_path / "profile"
    dom = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", out.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    for heading in ("IT equipment replacement report", "Province summary", "Budget", "Devices ranked for replacement",
                    "Business software availability", "Link quality"):
        assert f">{heading}</h" in dom, heading
    ranked = dom.split("Devices ranked for replacement")[1].split("</table>")[0]
    assert ranked.index("pc-old") < ranked.index("pc-new")
    assert "SMART: 24 reallocated sectors, 0 pending sectors" in dom
    assert re.search(r"\d unexpected shutdowns? \(power cut or crash\) in the period", dom)
    assert "Boot took 2.5 minutes typically, up to 4.5 minutes" in dom
    spent = dom.split(">Budget</h2>")[1].split("</table>")[0]
    assert "Desktop PC (Core i3, 8 GB RAM, 256 GB SSD)" in spent and "13,500,000" in spent
    assert re.search(r"budget [\d,]+ VND", proc.stderr)
    shot = tmp_path / "report.png"
    subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                    "--window-size=1400,1800", out.as_uri()], capture_output=True, timeout=120)
    assert_not_blank(shot)


def assert_not_blank(png: Path, min_dark: int = 500) -> None:
    from PIL import Image

    with Image.open(png) as img:
        gray = img.convert("L")
        lo, hi = gray.getextrema()
        dark = sum(gray.histogram()[:128])
    assert hi - lo > 100 and dark > min_dark, f"{png.name} looks empty ({dark} dark pixels)"


def test_pdf_report_pages(pipeline, tmp_path):
    prom_url = pipeline.url
    out = tmp_path / "report.pdf"
    proc = run_report(prom_url, "--period", pipeline.period_text, "--lang", "vi", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    info = subprocess.run(["pdfinfo", str(out)], capture_output=True, text=True, timeout=60).stdout
    pages = int(re.search(r"Pages:\s+(\d+)", info).group(1))
    assert pages >= 2  # province summary, then each commune on a page of its own
    subprocess.run(["pdftoppm", "-png", "-r", "40", str(out), str(tmp_path / "page")], check=True, timeout=120)
    pngs = sorted(tmp_path.glob("page-*.png"))
    assert len(pngs) == pages
    for png in pngs:
        assert_not_blank(png, min_dark=50)  # 40 dpi: a page with one short table has few dark pixels
    text = subprocess.run(["pdftotext", str(out), "-"], capture_output=True, text=True, timeout=60).stdout
    assert "Báo cáo đề xuất thay thế thiết bị CNTT" in text and "pc-old" in text


def test_csv_report(pipeline, tmp_path):
    prom_url = pipeline.url
    out = tmp_path / "report.csv"
    proc = run_report(prom_url, "--period", pipeline.period_text, "--lang", "en", "--commune", COMMUNE, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    import csv

    rows = list(csv.DictReader(out.read_text(encoding="utf-8-sig").splitlines()))
    smart = [r for r in rows if r["Device"] == "pc-old" and r["Factor"] == "disk_health"]
    assert smart and smart[0]["Measured"] == "SMART: 24 reallocated sectors, 0 pending sectors"


def test_clear_errors(pipeline, tmp_path, prometheus):
    prom_url, period = pipeline.url, pipeline.period_text
    out = str(tmp_path / "r.html")
    proc = run_report(prom_url, "--period", period, "--commune", "99999", "--out", out)
    assert proc.returncode == 1
    assert "report: unknown commune 99999: this Prometheus knows 09667" in proc.stderr
    closed = f"http://127.0.0.1:{free_port()}"
    proc = run_report(closed, "--period", period, "--out", out)
    assert proc.returncode == 1 and f"report: cannot reach Prometheus at {closed}" in proc.stderr
    _, empty_url = prometheus  # a Prometheus with no data at all
    proc = run_report(empty_url, "--period", period, "--out", out)
    assert proc.returncode == 1 and "report: no inventory in Prometheus" in proc.stderr
    proc = run_report(prom_url, "--period", "2026-13", "--out", out)
    assert proc.returncode == 1 and "--period: month must be 01-12" in proc.stderr
    prices = tmp_path / "prices.yaml"
    prices.write_text("currency: VND\nprices:\n  replace_disk:\n    pc: {price: cheap, item: SSD}\n")
    proc = run_report(prom_url, "--period", period, "--prices", str(prices), "--out", out)
    assert proc.returncode == 1
    assert f"{prices}:4: prices.replace_disk.pc.price: expected a whole amount of VND of 0 or more, got 'cheap'" in proc.stderr


@pytest.mark.parametrize("value,lang,text", [(1240.5, "vi", "1.240,5"), (1240.5, "en", "1,240.5"),
                                             (0, "en", "0")])
def test_number_formats(value, lang, text):
    assert texts.number(value, lang, 1 if value % 1 else 0) == text


def test_dates_and_periods():
    assert texts.date(dt.date(2026, 11, 5), "vi") == "05/11/2026"
    assert texts.date(dt.date(2026, 11, 5), "en") == "5 Nov 2026"
    now = dt.datetime(2026, 11, 27, 10, tzinfo=gather_mod.VN)
    p = gather_mod.parse_period("2026-11", now)
    assert p.start == dt.datetime(2026, 11, 1, tzinfo=gather_mod.VN) and p.end == now and p.whole_month
    p = gather_mod.parse_period("2026-10", now)
    assert p.end == dt.datetime(2026, 11, 1, tzinfo=gather_mod.VN) and p.range == f"{31 * 86400}s"
    for bad, msg in (("2026-12", "has not started yet"), ("nov", "expected YYYY-MM"),
                     ("2026-11-05..2026-11-01", "is before")):
        with pytest.raises(ReportError, match=msg):
            gather_mod.parse_period(bad, now)


def test_boot_evidence_sentences():
    one = gather_mod.FactorRow("unexpected_restarts", 0.25, {"unexpected_shutdowns": 1.0002})
    assert render.evidence_text(one, "en") == "1 unexpected shutdown (power cut or crash) in the period"
    assert render.evidence_text(one, "vi") == "Tắt máy đột ngột 1 lần (mất điện hoặc treo máy) trong kỳ"
    slow = gather_mod.FactorRow("slow_boot", 1.0, {"boot_seconds_median": 330, "boot_seconds_max": 612})
    assert render.evidence_text(slow, "en") == "Boot took 5.5 minutes typically, up to 10.2 minutes"
    assert render.evidence_text(gather_mod.FactorRow("slow_boot", None, {}), "vi") == "không có dữ liệu"


def test_the_price_table_is_checked_field_by_field(tmp_path):
    from contract.schema import ConfigErrors
    from collector.report import budget

    shipped = budget.load_prices()
    # every action the rules can recommend for every kind it applies to has a price
    wanted = {("replace_device", k) for k in budget.KINDS} | {("replace_disk", "pc"), ("replace_disk", "laptop"),
              ("add_memory", "pc"), ("add_memory", "laptop"), ("replace_battery", "laptop"),
              ("replace_battery", "ups"), ("maintenance_kit", "printer")}
    assert wanted <= set(shipped.table)
    bad = tmp_path / "p.yaml"
    bad.write_text("currency: VND\nprice: {}\nprices:\n  replace_ssd:\n    pc: {price: 1, item: x}\n"
                   "  add_memory:\n    phone: {price: 1, item: x}\n    pc: {price: -5, item: {vi: RAM}}\n")
    with pytest.raises(ConfigErrors) as info:
        budget.load_prices(str(bad))
    text = str(info.value)
    assert f"{bad}:2: price: unknown field" in text
    assert f"{bad}:4: prices.replace_ssd: unknown action" in text
    assert f"{bad}:7: prices.add_memory.phone: unknown device kind" in text
    assert f"{bad}:8: prices.add_memory.pc.price: expected a whole amount of VND of 0 or more, got -5" in text
    with pytest.raises(ConfigErrors, match="cannot read the price table"):
        budget.load_prices(str(tmp_path / "missing.yaml"))


def test_an_action_without_a_price_is_counted_not_dropped():
    from collector.report import budget

    prices = budget.Prices("VND", "2026-12-01", {("replace_disk", "pc"): budget.Price(700000, {"vi": "SSD", "en": "SSD"})}, "p")
    lines = budget.budget([("replace_disk", "pc"), ("add_memory", "pc"), ("replace_disk", "pc")], prices)
    assert [(line.action, line.kind, line.count, line.total) for line in lines] == [
        ("replace_disk", "pc", 2, 1400000), ("add_memory", "pc", 1, None)]
    assert budget.total(lines) == 1400000


def test_the_budget_renders_quantities_prices_and_what_has_no_price():
    from collector.report import budget

    period = gather_mod.Period(dt.datetime(2026, 11, 1, tzinfo=gather_mod.VN), dt.datetime(2026, 12, 1, tzinfo=gather_mod.VN), True)
    devices = [gather_mod.DeviceRow(COMMUNE, "pc-slow", "pc", "m", "", 3.0, 5.0, 66.0, "memory_pressure",
                                    actions=["replace_disk", "add_memory"]),
               gather_mod.DeviceRow(COMMUNE, "ups-1", "ups", "m", "", 1.0, 5.0, 100.0, "ups_battery_replace",
                                    actions=["replace_battery"]),
               gather_mod.DeviceRow(COMMUNE, "pc-ok", "pc", "m", "", 1.0, 5.0, 4.0, "age", actions=[])]
    report = gather_mod.Report(period, "http://p", dt.datetime(2026, 12, 1, tzinfo=gather_mod.VN),
                               [gather_mod.CommuneBlock(COMMUNE, "Xã Tân Lập", "Phú Thọ", devices, [], [])])
    shipped = budget.load_prices()
    report.prices = budget.Prices("VND", "2026-12-01", {k: v for k, v in shipped.table.items()
                                                       if k != ("replace_battery", "ups")}, shipped.source)
    assert [d.status for d in devices] == ["repair", "repair", "ok"]
    page = render.html_report(report, "vi")
    spent = page.split(">Dự toán kinh phí</h2>")[1].split("</table>")[0]
    assert "Thay ổ SSD" in spent and "750.000" in spent and "Nâng cấp RAM" in spent and "650.000" in spent
    assert "chưa có đơn giá" in spent and "1.400.000" in spent  # 750,000 + 650,000; the battery unpriced
    assert "1 hạng mục chưa có đơn giá" in page
    assert "Thay ổ SSD + Nâng cấp RAM" in page  # the device table's action column
    assert "Ước tính cần thay: 0 thiết bị; cần sửa hoặc nâng cấp: 2 thiết bị." in page


def test_agents_that_describe_their_machine_are_in_the_report_with_an_estimated_age(tmp_path):
    """No fleet file entry: an agent's hardware info and BIOS date (agent/inputs/inventory.py), the
    collector's default rated life, the real recording rules: the report lists the PC, its age
    from the BIOS date marked estimated."""
    prom, prom_url = start_prometheus(tmp_path, rule_files=fast_rules(tmp_path), evaluation_interval="2s")
    try:
        now = time.time()
        bios = now - 6 * gather_mod.YEAR
        ms = int(now * 1000)
        series = [
            ({"__name__": "commune_host_hardware_info", "commune": COMMUNE, "agent": "pc-tudong", "vendor": "Dell Inc.",
              "model": "OptiPlex 3020", "serial": "7XK2L32", "chassis": "mini_tower", "kind": "pc",
              "bios_vendor": "Dell Inc.", "bios_version": "A18", "bios_date": "2020-12-07"}, [(1.0, ms)]),
            ({"__name__": "commune_host_bios_date_timestamp_seconds", "commune": COMMUNE, "agent": "pc-tudong"},
             [(bios, ms)]),
            ({"__name__": "commune_fleet_default_rated_life_seconds", "kind": "pc"}, [(5 * gather_mod.YEAR, ms)]),
        ]
        req = urllib.request.Request(
            prom_url + "/api/v1/write", data=encode(series), method="POST",
            headers={"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                     "X-Prometheus-Remote-Write-Version": "0.1.0"})
        urllib.request.urlopen(req, timeout=10).read()
        wait_until(lambda: prom_query(prom_url, 'commune:device_replacement_action:info{device="pc-tudong"}'),
                   timeout=60, what="the self-registered PC scored and given an action")
        at = dt.datetime.now(gather_mod.VN)
        period = gather_mod.Period(at - dt.timedelta(hours=1), at, False)
        report = gather_mod.gather(Prometheus(prom_url), period, daily=False, now=at)
        [block] = report.communes
        [row] = block.devices
        assert (row.device, row.kind, row.model) == ("pc-tudong", "pc", "Dell Inc. OptiPlex 3020")
        assert row.age_estimated and row.age_years == pytest.approx(6, abs=0.01) and row.rated_years == pytest.approx(5)
        assert row.actions == ["replace_device"]  # past its rated life
        page = render.html_report(report, "en")
        assert "6.0 years (estimated from the BIOS date)" in page
    finally:
        prom.stop()
