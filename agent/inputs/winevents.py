"""Boots and shutdowns of a Windows PC from its event log, for the host input (agent/inputs/host.py).

On Windows the event log knows more than the clean-shutdown marker of agent/inputs/boot.py: it
sees boots while the agent was not running, tells a crash from a power cut, and logs Fast Startup
resumes, which keep the kernel's boot time and so look like no boot at all to psutil. Events read
(System log unless said otherwise; an event ID counts only from its own provider):

========================================  ====  ==============================================
provider                                  id    meaning, use
========================================  ====  ==============================================
Microsoft-Windows-Kernel-Power            41    rebooted without a clean shutdown: unexpected
                                                (BugcheckCode != 0: a crash; PowerButtonTimestamp
                                                != 0: the power button was held; else power lost
                                                or a hard reset)
EventLog                                  6008  the previous shutdown was unexpected
EventLog                                  6005  event log service started (parsed, not counted)
EventLog                                  6006  event log service stopped (parsed, not counted)
User32                                    1074  a process or user asked for a shutdown/restart:
                                                planned (param1 process, param3 reason, param4
                                                reason code, param5 kind, param7 user)
Microsoft-Windows-WER-SystemErrorReporting 1001 a blue screen (source BugCheck; param1 the code)
Microsoft-Windows-Kernel-General          12/13 OS started / stopping (parsed, not counted)
Microsoft-Windows-Kernel-Boot             27    a boot; BootType 0 cold, 1 Fast Startup (hybrid
                                                boot), 2 resume from hibernation
Microsoft-Windows-Diagnostics-Performance 100   BootTime in ms (log
                                                Microsoft-Windows-Diagnostics-Performance/Operational)
========================================  ====  ==============================================

Counts, kept with bookmarks (the last EventRecordID read of each log) in ``windows-events.json``
in ``agent.state_dir`` and written in one atomic file, so nothing is counted twice across restarts:

- ``commune_host_unexpected_shutdowns_total``: Kernel-Power 41 and EventLog 6008 are usually both
  logged at the boot after one unexpected shutdown: a 41 and a 6008 within :data:`SAME_INCIDENT`
  seconds of each other are one (two 41s never are);
- ``commune_host_planned_shutdowns_total`` (User32 1074), ``commune_host_bugchecks_total``
  (BugCheck 1001), ``commune_host_boots_total{type}`` (Kernel-Boot 27: ``cold``,
  ``fast_startup``, ``hibernate_resume``, ``other``). Kernel-General 12/13 and EventLog 6005/6006
  are not counted: Windows does not log them when Fast Startup hibernates the kernel, while it
  logs Kernel-Boot 27 at every boot;
- ``commune_host_boot_duration_seconds``: BootTime of the newest Diagnostics-Performance 100 (the
  OS loader to the desktop settled after logon; firmware POST not included). Windows writes it
  minutes after a boot and not for every boot, so it may describe an earlier boot; that log may
  also be closed to the service account, and then the host input falls back to boot.py's value.

Until the System log has been read once, the host input uses boot.py's samples; from then on the
counts come from this module alone (the last ones kept when a later read fails), so a counter
never switches back and forth between two sources.

The first run counts nothing: it sets the bookmarks at the newest matching event, like boot.py's
"no history" (a lost state directory restarts the counters at 0, which Prometheus takes as a
reset, instead of counting old events again). A log cleared since (newest record below the
bookmark) is read again from its start. The log is read at the first collection and then every
:data:`READ_EVERY` seconds, at most :data:`PAGE` events a time (oldest first: the rest next time).

Tested here, on Linux: the parser on recorded-style event XML (tests/fixtures/windows/, written
after the documented fields), the counting and its deduplication, the state file across simulated
restarts, a cleared log, an unreadable log, and the host input with the reader faked. Only Windows
can confirm: the seam :func:`read_events` (pywin32 ``EvtQuery``/``EvtNext``/``EvtRender``), the
XPath filter, that LocalService may read the System log (its channel access grants service
logons read) and whether it may read Diagnostics-Performance/Operational, which events a given
Windows build really logs with Fast Startup, and the provider names on localised Windows.
"""
from __future__ import annotations

import calendar
import logging
import os
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

from agent.inputs.boot import _read_json, _write_json
from contract.samples import Sample, sample

log = logging.getLogger(__name__)

NS = "{http://schemas.microsoft.com/win/2004/08/events/event}"
SYSTEM_LOG = "System"
PERFORMANCE_LOG = "Microsoft-Windows-Diagnostics-Performance/Operational"
STATE_FILE = "windows-events.json"
SAME_INCIDENT = 600.0   # a 41 and a 6008 this close (seconds) report one unexpected shutdown
READ_EVERY = 600.0      # seconds between reads of the log after the first
PAGE = 500              # events read at most per log and read

# (provider, event id) -> kind
KINDS = {
    ("Microsoft-Windows-Kernel-Power", 41): "unexpected",
    ("EventLog", 6008): "unexpected",
    ("EventLog", 6005): "eventlog_start",
    ("EventLog", 6006): "eventlog_stop",
    ("User32", 1074): "planned",
    ("Microsoft-Windows-WER-SystemErrorReporting", 1001): "bugcheck",
    ("BugCheck", 1001): "bugcheck",   # the event source name of the same provider
    ("Microsoft-Windows-Kernel-General", 12): "os_start",
    ("Microsoft-Windows-Kernel-General", 13): "os_stop",
    ("Microsoft-Windows-Kernel-Boot", 27): "boot",
    ("Microsoft-Windows-Diagnostics-Performance", 100): "boot_performance",
}
SYSTEM_IDS = sorted({i for (_, i), kind in KINDS.items() if kind != "boot_performance"})
BOOT_TYPES = {0: "cold", 1: "fast_startup", 2: "hibernate_resume"}


class Event(NamedTuple):
    record_id: int
    provider: str
    event_id: int
    time: float              # TimeCreated, Unix seconds
    kind: str                # from KINDS; "" for another event (its record id still moves the bookmark)
    data: Dict[str, str]     # EventData by Name; unnamed Data elements as "1", "2", ...


# ---------------------------------------------------------------- pure: XML to events

_TIME_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?")


def parse_time(text: str) -> Optional[float]:
    """``2025-11-24T00:53:12.1234567Z`` (UTC, 7 fractional digits from Windows) to Unix seconds."""
    m = _TIME_RE.match(text or "")
    if not m:
        return None
    whole = calendar.timegm(tuple(int(g) for g in m.groups()[:6]) + (0, 0, 0))
    return whole + (float(m.group(7)) if m.group(7) else 0.0)


def parse_event(element: ET.Element) -> Optional[Event]:
    """One ``<Event>`` element; None without an EventID or EventRecordID."""
    system = element.find(f"{NS}System")
    if system is None:
        return None
    provider = system.find(f"{NS}Provider")
    names = [] if provider is None else [provider.get("Name", ""), provider.get("EventSourceName", "")]
    try:
        event_id = int((system.findtext(f"{NS}EventID") or "").strip())
        record_id = int((system.findtext(f"{NS}EventRecordID") or "").strip())
    except ValueError:
        return None
    kind = next((KINDS[(n, event_id)] for n in names if (n, event_id) in KINDS), "")
    created = system.find(f"{NS}TimeCreated")
    when = (parse_time(created.get("SystemTime", "")) if created is not None else None) or 0.0
    data: Dict[str, str] = {}
    for i, d in enumerate(element.iterfind(f"{NS}EventData/{NS}Data"), 1):
        data[d.get("Name") or str(i)] = (d.text or "").strip()
    return Event(record_id, names[0], event_id, when, kind, data)


def parse_events(xml_texts: List[str]) -> List[Event]:
    """Events from XML texts (each one ``<Event>`` as EvtRender gives it, or several under a root
    as ``wevtutil qe /e:Events`` writes), sorted by record id."""
    out = []
    for text in xml_texts:
        root = ET.fromstring(text)
        elements = [root] if root.tag == f"{NS}Event" else root.iter(f"{NS}Event")
        out += [e for e in (parse_event(el) for el in elements) if e is not None]
    return sorted(out, key=lambda e: e.record_id)


def _number(text: str) -> int:
    """EventData numbers: decimal or 0x hexadecimal; 0 when absent or not a number."""
    try:
        return int(text, 0)
    except (TypeError, ValueError):
        return 0


def describe(event: Event) -> str:
    """A log line for an event that is counted."""
    d = event.data
    if event.event_id == 41:
        if _number(d.get("BugcheckCode", "")):
            return f"crash (bug check {_number(d['BugcheckCode']):#x})"
        if _number(d.get("PowerButtonTimestamp", "")):
            return "the power button was held"
        return "power lost or a hard reset"
    if event.event_id == 6008:
        return "the previous shutdown was unexpected (EventLog 6008)"
    if event.kind == "planned":
        return (f"{d.get('param5') or 'shutdown'} by {d.get('param1') or '?'} for {d.get('param7') or '?'}: "
                f"{d.get('param3') or '?'} ({d.get('param4') or '?'})")
    if event.kind == "bugcheck":
        return f"blue screen {d.get('param1') or d.get('1') or '?'}"
    return event.kind


# ---------------------------------------------------------------- pure: events to counts

@dataclass
class Counts:
    unexpected: int = 0
    planned: int = 0
    bugchecks: int = 0
    boots: Dict[str, int] = field(default_factory=lambda: {t: 0 for t in BOOT_TYPES.values()})
    boot_duration: Optional[float] = None
    # the last unexpected shutdown counted: when, and which event ids reported it
    incident_time: Optional[float] = None
    incident_ids: List[int] = field(default_factory=list)

    def to_json(self) -> dict:
        return dict(self.__dict__, boots=dict(self.boots), incident_ids=list(self.incident_ids))

    @classmethod
    def from_json(cls, data: dict) -> "Counts":
        c = cls()
        for key in ("unexpected", "planned", "bugchecks"):
            setattr(c, key, int(data.get(key) or 0))
        c.boots.update({str(k): int(v) for k, v in (data.get("boots") or {}).items()})
        c.boot_duration = data.get("boot_duration")
        c.incident_time = data.get("incident_time")
        c.incident_ids = [int(i) for i in data.get("incident_ids") or []]
        return c


def count(counts: Counts, events: List[Event]) -> List[Tuple[Event, str]]:
    """Adds ``events`` (sorted by record id, read after the bookmark) to ``counts``; returns the
    counted events with a description, for the log."""
    noted = []
    for e in events:
        if e.kind == "unexpected":
            if (counts.incident_time is not None and e.event_id not in counts.incident_ids
                    and abs(e.time - counts.incident_time) <= SAME_INCIDENT):
                counts.incident_ids.append(e.event_id)   # the other report of the same shutdown
                continue
            counts.unexpected += 1
            counts.incident_time, counts.incident_ids = e.time, [e.event_id]
        elif e.kind == "planned":
            counts.planned += 1
        elif e.kind == "bugcheck":
            counts.bugchecks += 1
        elif e.kind == "boot":
            boot_type = BOOT_TYPES.get(_number(e.data.get("BootType", "")), "other")
            counts.boots[boot_type] = counts.boots.get(boot_type, 0) + 1
        elif e.kind == "boot_performance":
            ms = _number(e.data.get("BootTime", ""))
            if ms > 0:
                counts.boot_duration = ms / 1000.0
            continue
        else:
            continue
        noted.append((e, describe(e)))
    return noted


def samples(counts: Counts) -> List[Sample]:
    out = [sample("commune_host_unexpected_shutdowns_total", counts.unexpected),
           sample("commune_host_planned_shutdowns_total", counts.planned),
           sample("commune_host_bugchecks_total", counts.bugchecks)]
    out += [sample("commune_host_boots_total", n, type=t) for t, n in sorted(counts.boots.items())]
    if counts.boot_duration is not None:
        out.append(sample("commune_host_boot_duration_seconds", counts.boot_duration))
    return out


def query(event_ids: List[int], after: int = 0) -> str:
    """The XPath filter of the events with these ids after record ``after``."""
    ids = " or ".join(f"EventID={i}" for i in event_ids)
    return f"*[System[({ids}) and EventRecordID>{after}]]" if after else f"*[System[({ids})]]"


# ---------------------------------------------------------------- the I/O seam (Windows only)

ReadEvents = Callable[[str, str, bool, int], List[str]]


def read_events(channel: str, xpath: str, newest_first: bool, limit: int) -> List[str]:
    """At most ``limit`` events of a log matching ``xpath``, as XML (pywin32, Windows only)."""
    import win32evtlog

    flags = win32evtlog.EvtQueryChannelPath | (
        win32evtlog.EvtQueryReverseDirection if newest_first else win32evtlog.EvtQueryForwardDirection)
    results = win32evtlog.EvtQuery(channel, flags, xpath, None)
    out: List[str] = []
    while len(out) < limit:
        batch = win32evtlog.EvtNext(results, min(100, limit - len(out)), -1, 0)
        if not batch:
            break
        out += [win32evtlog.EvtRender(e, win32evtlog.EvtRenderEventXml) for e in batch]
    return out


# ---------------------------------------------------------------- the tracker

LOGS = {SYSTEM_LOG: SYSTEM_IDS, PERFORMANCE_LOG: [100]}


class WindowsBootLog:
    """Counts from the event log with bookmarks in ``state_dir``; :meth:`observe` at every collection."""

    def __init__(self, state_dir: str, read: ReadEvents = read_events,
                 clock: Callable[[], float] = time.monotonic):
        self.state_dir = state_dir
        self.read = read
        self.clock = clock
        self._read_at: Optional[float] = None
        self._samples: List[Sample] = []
        self._failed: Dict[str, Optional[str]] = {}

    @property
    def state_path(self) -> str:
        return os.path.join(self.state_dir, STATE_FILE)

    def observe(self) -> List[Sample]:
        """The samples; the last counts kept when a read fails; [] while the System log has never
        been read (the host input then uses boot.py's, so one counter does not flip between two
        sources and fake an increase)."""
        if self._read_at is not None and self.clock() - self._read_at < READ_EVERY:
            return self._samples
        self._read_at = self.clock()
        state = _read_json(self.state_path) or {}
        counts = Counts.from_json(state.get("counts") or {})
        bookmarks = dict(state.get("bookmarks") or {})
        first = "bookmarks" not in state
        for channel, ids in LOGS.items():
            try:
                bookmarks[channel], events = self._new_events(channel, ids, bookmarks.get(channel), first)
            except Exception as exc:   # pywin32 errors, a closed channel, bad XML: logged once
                self._note_failure(channel, exc)
                if channel == SYSTEM_LOG:
                    self._samples = samples(counts) if SYSTEM_LOG in bookmarks else []
                    return self._samples
                continue
            self._note_failure(channel, None)
            for event, text in count(counts, events):
                log.info("host: event log %s %d at %s: %s", event.provider, event.event_id,
                         time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.time)), text)
        try:
            os.makedirs(self.state_dir, exist_ok=True)
            _write_json(self.state_path, {"bookmarks": bookmarks, "counts": counts.to_json()})
        except OSError as exc:
            self._note_failure("state", exc)
            self._samples = []
            return self._samples
        self._samples = samples(counts)
        return self._samples

    def _new_events(self, channel: str, ids: List[int], bookmark: Optional[int],
                    first: bool) -> Tuple[int, List[Event]]:
        """(the new bookmark, the events to count) of one log."""
        newest = parse_events(self.read(channel, query(ids), True, 1))
        newest_id = newest[-1].record_id if newest else 0
        if first or bookmark is None:
            # no history: count nothing, but take the boot duration Windows last measured
            return newest_id, [e for e in newest if e.kind == "boot_performance"]
        if newest_id < bookmark:
            log.warning("host: the %s event log was cleared (newest record %d, bookmark %d); reading it "
                        "from its start", channel, newest_id, bookmark)
            bookmark = 0
        events = parse_events(self.read(channel, query(ids, bookmark), False, PAGE))
        return (events[-1].record_id if events else bookmark), events

    def _note_failure(self, what: str, exc: Optional[Exception]) -> None:
        text = None if exc is None else f"{type(exc).__name__}: {exc}"
        if text == self._failed.get(what):
            return
        if text is not None:
            log.warning("host: cannot read the %s event log (boot and shutdown counts from it are left "
                        "out): %s", what, text)
        elif self._failed.get(what):
            log.info("host: the %s event log can be read again", what)
        self._failed[what] = text
