"""Boots and shutdowns from the Windows event log (agent/inputs/winevents.py), on Linux: the parser
on event XML in tests/fixtures/windows/ (written after the documented fields of each event, in the
form EvtRender and ``wevtutil qe /f:xml`` give), the counting, the bookmarks across simulated
restarts, and the host input with the log reader replaced by a fake. What only Windows can
confirm is listed in the module's docstring."""
from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import pytest
import yaml

from agent.config import load_config
from agent.inputs import host, winevents
from agent.inputs.boot import BootTracker
from agent.inputs.winevents import Counts, WindowsBootLog, count, parse_events
from tests.test_host import check_against_catalog

FIXTURES = Path(__file__).parent / "fixtures" / "windows"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def split(text: str):
    """The <Event> elements of a wevtutil /e:Events file, each as EvtRender would give it."""
    return re.findall(r"<Event xmlns=.*?</Event>", text, re.S)


WEEK = split(fixture("system-week.xml"))
PERFORMANCE = [fixture("diagnostics-performance-100.xml")]


def metrics(samples) -> dict:
    return {(s.name, s.labels.get("type")) if s.labels else s.name: s.value for s in samples}


# ---------------------------------------------------------------- the parser

@pytest.mark.parametrize("name,kind,event_id,record_id,data,text", [
    ("kernel-power-41-power-lost.xml", "unexpected", 41, 48232, {"BugcheckCode": "0"}, "power lost or a hard reset"),
    ("kernel-power-41-bugcheck.xml", "unexpected", 41, 48263, {"BugcheckCode": "159"}, "crash (bug check 0x9f)"),
    ("kernel-power-41-power-button.xml", "unexpected", 41, 48301, {"PowerButtonTimestamp": "133776954123456789"},
     "the power button was held"),
    ("eventlog-6008.xml", "unexpected", 6008, 48240, {"1": "17:29:44", "2": "\u200e25/\u200e11/\u200e2025"},
     "the previous shutdown was unexpected (EventLog 6008)"),
    ("eventlog-6005.xml", "eventlog_start", 6005, 48241, {}, "eventlog_start"),
    ("eventlog-6006.xml", "eventlog_stop", 6006, 48288, {"1": ""}, "eventlog_stop"),
    ("user32-1074-power-off.xml", "planned", 1074, 48220,
     {"param1": r"C:\Windows\System32\RuntimeBroker.exe (UBND-PC07)", "param5": "power off"},
     r"power off by C:\Windows\System32\RuntimeBroker.exe (UBND-PC07) for UBND-PC07\canbo: Other (Unplanned) (0x0)"),
    ("user32-1074-update-restart.xml", "planned", 1074, 48285, {"param4": "0x80020010", "param5": "restart"},
     r"restart by C:\WINDOWS\uus\AMD64\MoUsoCoreWorker.exe (UBND-PC07) for NT AUTHORITY\SYSTEM: "
     "Operating System: Service pack (Planned) (0x80020010)"),
    ("bugcheck-1001.xml", "bugcheck", 1001, 48270, {"param2": r"C:\WINDOWS\MEMORY.DMP"},
     "blue screen 0x0000009f (0x0000000000000003, 0xffffc00e8b5a1060, 0xfffff8046f2a6850, 0xffffc00e91c3a8a0)"),
    ("kernel-general-12.xml", "os_start", 12, 48230, {"StartTime": "2025-11-26T00:30:58.5000000Z"}, "os_start"),
    ("kernel-general-13.xml", "os_stop", 13, 48287, {"StopTime": "2025-11-27T10:31:40.1235000Z"}, "os_stop"),
    ("kernel-boot-27-cold.xml", "boot", 27, 48231, {"BootType": "0"}, "boot"),
    ("kernel-boot-27-fast-startup.xml", "boot", 27, 48226, {"BootType": "1"}, "boot"),
    ("diagnostics-performance-100.xml", "boot_performance", 100, 1873,
     {"BootTime": "87613", "MainPathBootTime": "41243", "BootPostBootTime": "46370"}, "boot_performance"),
])
def test_parse_each_event(name, kind, event_id, record_id, data, text):
    event, = parse_events([fixture(name)])
    assert (event.kind, event.event_id, event.record_id) == (kind, event_id, record_id)
    assert data.items() <= event.data.items()
    assert winevents.describe(event) == text


def test_times_are_utc_with_windows_seven_digit_fractions():
    assert winevents.parse_time("2025-11-26T00:31:04.5781532Z") == pytest.approx(1764117064.5781532)
    assert winevents.parse_time("2025-11-26T00:31:04Z") == 1764117064
    assert winevents.parse_time("yesterday") is None
    event, = parse_events([fixture("kernel-power-41-power-lost.xml")])
    assert event.time == pytest.approx(1764117064.5781532)


def test_same_ids_from_other_providers_are_not_counted():
    other = fixture("bugcheck-1001.xml").replace("Microsoft-Windows-WER-SystemErrorReporting", "Application Error") \
        .replace("EventSourceName='BugCheck'", "EventSourceName='Application Error'")
    event, = parse_events([other])
    assert event.kind == "" and event.record_id == 48270   # still moves the bookmark
    assert count(Counts(), [event]) == []
    # the provider known only by its event source name
    renamed = fixture("bugcheck-1001.xml").replace("Microsoft-Windows-WER-SystemErrorReporting", "Something")
    assert parse_events([renamed])[0].kind == "bugcheck"


def test_a_wevtutil_file_with_a_root_element_and_single_events_parse_alike():
    whole = parse_events([fixture("system-week.xml")])
    assert whole == parse_events(WEEK) and len(whole) == 22
    assert [e.record_id for e in whole] == sorted(e.record_id for e in whole)


# ---------------------------------------------------------------- counting

WEEK_COUNTS = {"commune_host_unexpected_shutdowns_total": 2, "commune_host_planned_shutdowns_total": 2,
               "commune_host_bugchecks_total": 1, ("commune_host_boots_total", "cold"): 4,
               ("commune_host_boots_total", "fast_startup"): 1, ("commune_host_boots_total", "hibernate_resume"): 0}


def test_a_week_of_an_office_pc():
    counts = Counts()
    noted = count(counts, parse_events(WEEK))
    assert metrics(winevents.samples(counts)) == WEEK_COUNTS
    # Wednesday's two reports of Tuesday's power cut are one shutdown, and so are those of the crash
    assert [(e.event_id, text) for e, text in noted if e.kind == "unexpected"] == [
        (41, "power lost or a hard reset"), (41, "crash (bug check 0x9f)")]


def test_a_6008_first_or_in_a_later_read_is_still_the_same_incident():
    events = parse_events(WEEK)
    counts = Counts()
    cut = next(i for i, e in enumerate(events) if e.event_id == 41)
    count(counts, events[:cut + 1])   # the agent read the log between the 41 and the 6008
    count(counts, events[cut + 1:])
    assert counts.unexpected == 2
    # a 6008 logged before its 41 (the order is not documented) is also one
    k41, k6008 = parse_events([fixture("kernel-power-41-power-lost.xml"), fixture("eventlog-6008.xml")])
    counts = Counts()
    count(counts, [k6008._replace(time=k41.time - 5), k41])
    assert counts.unexpected == 1
    # two 41s are two shutdowns, however close (a PC crashing in a loop)
    counts = Counts()
    count(counts, [k41, k41._replace(record_id=k41.record_id + 40, time=k41.time + 120)])
    assert counts.unexpected == 2


def test_unknown_boot_type_and_missing_boot_time():
    boot, = parse_events([fixture("kernel-boot-27-cold.xml").replace("'BootType'>0<", "'BootType'>7<")])
    resume = boot._replace(data={"BootType": "0x2"})
    perf, = parse_events([fixture("diagnostics-performance-100.xml").replace(">87613<", "><")])
    counts = Counts()
    count(counts, [boot, resume, perf])
    assert counts.boots == {"cold": 0, "fast_startup": 0, "hibernate_resume": 1, "other": 1}
    assert counts.boot_duration is None


def test_query_filters_ids_after_the_bookmark():
    assert winevents.query([41, 6008]) == "*[System[(EventID=41 or EventID=6008)]]"
    assert winevents.query([100], 1873) == "*[System[(EventID=100) and EventRecordID>1873]]"
    assert winevents.SYSTEM_IDS == [12, 13, 27, 41, 1001, 1074, 6005, 6006, 6008]


# ---------------------------------------------------------------- the tracker across restarts

class FakeLog:
    """Answers ``read_events`` from event XML strings per channel, honouring the XPath ids and bookmark."""

    def __init__(self, system, performance=()):
        self.logs = {winevents.SYSTEM_LOG: list(system), winevents.PERFORMANCE_LOG: list(performance)}
        self.fail = {}
        self.reads = []

    def __call__(self, channel, xpath, newest_first, limit):
        self.reads.append((channel, xpath, newest_first, limit))
        if channel in self.fail:
            raise self.fail[channel]
        ids = {int(i) for i in re.findall(r"EventID=(\d+)", xpath)}
        after = int((re.findall(r"EventRecordID>(\d+)", xpath) or ["0"])[0])
        found = [(e.record_id, x) for x in self.logs[channel] for e in parse_events([x])
                 if e.event_id in ids and e.record_id > after]
        found.sort(reverse=newest_first)
        return [x for _, x in found[:limit]]


class Clock:
    def __init__(self, now=0.0):
        self.now = now

    def __call__(self):
        return self.now


def test_first_run_counts_nothing_then_new_events_once(tmp_path):
    monday = [x for x in WEEK if parse_events([x])[0].record_id < 48226]
    fake = FakeLog(monday, PERFORMANCE)
    clock = Clock()
    tracker = WindowsBootLog(str(tmp_path), fake, clock)
    first = metrics(tracker.observe())
    assert first == {**{k: 0 for k in WEEK_COUNTS}, "commune_host_boot_duration_seconds": 87.613}
    state = json.loads((tmp_path / winevents.STATE_FILE).read_text())
    assert state["bookmarks"] == {winevents.SYSTEM_LOG: 48220, winevents.PERFORMANCE_LOG: 1873}
    # the rest of the week is logged; the tracker reads again only after READ_EVERY
    fake.logs[winevents.SYSTEM_LOG] = list(WEEK)
    clock.now += winevents.READ_EVERY - 1
    assert metrics(tracker.observe()) == first
    clock.now += 1
    later = metrics(tracker.observe())
    assert later["commune_host_unexpected_shutdowns_total"] == 2
    assert later["commune_host_planned_shutdowns_total"] == 1   # Monday's was before the bookmark
    assert later[("commune_host_boots_total", "fast_startup")] == 1
    assert later[("commune_host_boots_total", "cold")] == 3
    # the agent restarts: nothing is counted twice
    again = WindowsBootLog(str(tmp_path), fake, Clock())
    assert metrics(again.observe()) == later
    assert fake.reads[-1] == (winevents.PERFORMANCE_LOG, winevents.query([100], 1873), False, winevents.PAGE)


def test_paging_reaches_the_same_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(winevents, "PAGE", 4)
    fake = FakeLog([])
    clock = Clock()
    tracker = WindowsBootLog(str(tmp_path), fake, clock)
    tracker.observe()   # the first run, on an empty log: bookmark 0
    fake.logs[winevents.SYSTEM_LOG] = list(WEEK)
    for _ in range(7):   # 22 events, 4 a read
        clock.now += winevents.READ_EVERY
        result = metrics(tracker.observe())
    assert result == WEEK_COUNTS


def test_a_cleared_log_is_read_from_its_start(tmp_path, caplog):
    fake = FakeLog(WEEK)
    clock = Clock()
    tracker = WindowsBootLog(str(tmp_path), fake, clock)
    tracker.observe()   # bookmark 48292
    # cleared: record ids start again at 1
    fake.logs[winevents.SYSTEM_LOG] = [fixture("kernel-boot-27-cold.xml").replace(">48231<", ">3<")]
    clock.now += winevents.READ_EVERY
    with caplog.at_level(logging.WARNING):
        m = metrics(tracker.observe())
    assert m[("commune_host_boots_total", "cold")] == 1
    assert "the System event log was cleared (newest record 3, bookmark 48292)" in caplog.text


def test_unreadable_logs(tmp_path, caplog):
    fake = FakeLog(WEEK, PERFORMANCE)
    fake.fail[winevents.PERFORMANCE_LOG] = PermissionError(5, "Access is denied")
    clock = Clock()
    tracker = WindowsBootLog(str(tmp_path), fake, clock)
    with caplog.at_level(logging.WARNING):
        m = metrics(tracker.observe())
        clock.now += winevents.READ_EVERY
        tracker.observe()
    assert "commune_host_boot_duration_seconds" not in m and m["commune_host_unexpected_shutdowns_total"] == 0
    assert caplog.text.count("cannot read the Microsoft-Windows-Diagnostics-Performance/Operational event log") == 1
    # the System log unreadable after it was read once: the counts so far stay
    fake.fail[winevents.SYSTEM_LOG] = OSError("pywin32 error")
    clock.now += winevents.READ_EVERY
    assert metrics(tracker.observe()) == {k: 0 for k in WEEK_COUNTS}
    # never read at all: no samples, so the host input uses boot.py's
    assert WindowsBootLog(str(tmp_path / "new"), fake, Clock()).observe() == []


# ---------------------------------------------------------------- through the host input

def windows_host(state_dir, fake):
    from tests.test_host import FakeFiles, LINUX_FILES, linux_laptop

    ps = linux_laptop()
    boot_time = ps.boot_time()
    state_dir.mkdir()
    (state_dir / "boot.json").write_text(json.dumps({  # boot.py saw a boot end without a clean stop
        "boot_time": boot_time - 86400, "boot_id": "", "unexpected_shutdowns": 4,
        "last_unexpected_shutdown": boot_time - 90000, "boot_duration": None, "last_seen": boot_time - 80000}))
    files = FakeFiles(LINUX_FILES)
    inp = host.HostInput(host.Config(), ps=ps, system="windows", read=files.read, listdir=files.listdir,
                         windows_disk=lambda dev: ("ssd", "Samsung SSD 870 EVO 250GB"),
                         boots=BootTracker(str(state_dir), Clock(boot_time + 60)),
                         boot_log=WindowsBootLog(str(state_dir), fake, Clock()))
    return inp, boot_time


def test_host_input_prefers_the_event_log_on_windows(tmp_path):
    fake = FakeLog([], PERFORMANCE)
    inp, boot_time = windows_host(tmp_path / "state", fake)
    samples = inp.collect()
    check_against_catalog(samples)
    m = {s.name: s.value for s in samples if not s.labels}
    assert m["commune_host_unexpected_shutdowns_total"] == 0            # the event log's, not boot.py's 5
    assert m["commune_host_boot_duration_seconds"] == 87.613            # Windows' BootTime, not boot.py's 60
    assert m["commune_host_last_unexpected_shutdown_timestamp_seconds"] == boot_time - 80000   # boot.py's
    # a later read fails: still the event log's counts, never boot.py's 5
    fake.fail[winevents.SYSTEM_LOG] = OSError("pywin32 error")
    inp.boot_log.clock.now += winevents.READ_EVERY
    m = {s.name: s.value for s in inp.collect() if not s.labels}
    assert m["commune_host_unexpected_shutdowns_total"] == 0 and m["commune_host_boot_duration_seconds"] == 87.613


def test_host_input_uses_boot_py_while_the_event_log_was_never_read(tmp_path):
    fake = FakeLog([], PERFORMANCE)
    fake.fail[winevents.SYSTEM_LOG] = ImportError("No module named 'win32evtlog'")   # no pywin32
    inp, _ = windows_host(tmp_path / "state", fake)
    m = {s.name: s.value for s in inp.collect() if not s.labels}
    assert m["commune_host_unexpected_shutdowns_total"] == 5 and m["commune_host_boot_duration_seconds"] == 60
    assert "commune_host_planned_shutdowns_total" not in m


def test_build_reads_the_event_log_only_on_windows(tmp_path, monkeypatch):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(yaml.safe_dump({"agent": {"state_dir": str(tmp_path / "state")}}))
    config = load_config(str(cfg))
    assert host.build(host.Config(), config)[0].boot_log is None
    monkeypatch.setattr(sys, "platform", "win32")
    inp, = host.build(host.Config(), config)
    monkeypatch.setattr(sys, "platform", "linux")
    assert inp.boot_log is not None and inp.boot_log.state_dir == str(tmp_path / "state")
    assert inp.boot_log.read is winevents.read_events
