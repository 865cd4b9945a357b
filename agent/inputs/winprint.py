"""Windows print queues (section ``winprint:``): what the spooler of this PC knows, over WMI.

USB printers never show up in SNMP, and a job stuck in a queue is what staff notice first ("I
pressed print and nothing came out"). The spooler knows both. Two ``root\\cimv2`` classes, read
every ``interval`` through the seam of ``agent/inputs/wmi.py`` (no admin rights needed):

- ``Win32_Printer``: ``Name``, ``PortName``, ``DriverName``, ``Network`` (a connection to a
  shared queue ``\\\\server\\printer``), ``WorkOffline``, ``PrinterStatus`` (1 other, 2 unknown,
  3 idle, 4 printing, 5 warmup, 6 stopped printing, 7 offline) and ``DetectedErrorState`` (0 unknown,
  1 other, 2 no error, 3 low paper, 4 no paper, 5 low toner, 6 no toner, 7 door open, 8 jammed,
  9 offline, 10 service requested, 11 output bin full).
- ``Win32_PrintJob``: ``Name`` (``"<printer>, <job id>"``), ``TimeSubmitted`` (CIM datetime),
  ``StatusMask`` (bits: 1 paused, 2 error, 4 deleting, 8 spooling, 16 printing, 32 offline,
  64 paper out, 128 printed, 256 deleted, 512 blocked, 1024 user intervention, 2048 restart),
  ``JobStatus`` (the same as text, when StatusMask is NULL).

Every queue (``printer`` label: the queue name) gets ``commune_print_queue_info`` {port, driver,
attachment}, ``commune_print_queue_offline``, ``commune_print_queue_jobs``,
``commune_print_queue_error_jobs`` and ``commune_print_queue_oldest_job_age_seconds`` (0 when
empty). ``attachment`` is read from the port: usb (``USB001``, ``DOT4_001``), parallel (``LPT1:``),
serial (``COM1:``), network (TCP/IP and WSD ports), shared (a connection to another PC's queue),
redirected (Remote Desktop ``TS001``), virtual (PDF, XPS, OneNote, fax, file) or other.

Printers attached to this PC (usb, parallel, serial) also get the device series the SNMP input
gives network printers, under the same names, with ``target`` the queue name:
``commune_printer_status`` (PrinterStatus; 1-5 are hrPrinterStatus' codes) and
``commune_printer_error_state`` {condition} from DetectedErrorState, so the printer alerts and the
error_time replacement factor cover USB printers too. Network queues do not: the printer itself is
polled over SNMP (once, by the site poller), whereas its queue exists on every PC that prints to it
and would raise one alert per PC. What the driver reports depends on it: many USB drivers only ever
say "no error". Virtual printers are left out unless ``virtual_printers`` is on.
"""
from __future__ import annotations

import logging
import platform
import re
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional

from agent.inputs.base import InputSection
from agent.inputs.wmi import Instance, Query, cim_datetime, number
from contract.samples import Sample, sample
from contract.schema import Duration

NAME = "winprint"

log = logging.getLogger(__name__)

PRINTERS = "SELECT * FROM Win32_Printer"
JOBS = "SELECT * FROM Win32_PrintJob"

PRINTER_STATUS_OFFLINE = 7
DETECTED_ERROR_CONDITIONS = {3: "low_paper", 4: "no_paper", 5: "low_toner", 6: "no_toner", 7: "door_open",
                             8: "jammed", 9: "offline", 10: "service_requested", 11: "output_full"}
DETECTED_ERROR_OFFLINE = 9
# Win32_PrintJob.StatusMask bits that mean the job cannot go on without someone acting
JOB_ERROR_BITS = 0x2 | 0x20 | 0x40 | 0x200 | 0x400  # error, offline, paper out, blocked, user intervention
_JOB_ERROR_WORDS = re.compile(r"(?i)\b(error|offline|paper ?out|blocked|user[ _]intervention)")
DIRECTLY_ATTACHED = ("usb", "parallel", "serial")

_VIRTUAL_PORT = re.compile(r"(?i)^(portprompt:|nul:?|file:|shrfax:|xpsport:|onenote|microsoft\.office\.onenote|"
                           r"pdf|printtopdf|ne\d\d:)")
_NETWORK_PORT = re.compile(r"(?i)^(ip_|wsd[-_]|https?://|\d{1,3}(\.\d{1,3}){3}|[a-z0-9-]+(\.[a-z0-9-]+)+(:\d+)?$)")


@dataclass
class Config(InputSection):
    interval: Duration = Duration(30)
    timeout: Duration = Duration(20)
    # Also report virtual printers (Microsoft Print to PDF, XPS, OneNote, Fax, print to file).
    virtual_printers: bool = False


# ---------------------------------------------------------------- pure parsers

def attachment(printer: Instance) -> str:
    """How the queue reaches its printer: usb, parallel, serial, network, shared, redirected, virtual, other."""
    if printer.get("Network") is True or str(printer.get("Name") or "").startswith("\\\\"):
        return "shared"
    port = str(printer.get("PortName") or "").strip()
    upper = port.upper()
    if _VIRTUAL_PORT.match(port):
        return "virtual"
    if upper.startswith(("USB", "DOT4")):
        return "usb"
    if re.match(r"^LPT\d+:?$", upper):
        return "parallel"
    if re.match(r"^COM\d+:?$", upper):
        return "serial"
    if re.match(r"^TS\d+$", upper):
        return "redirected"
    if _NETWORK_PORT.match(port):
        return "network"
    return "other"


def job_printer(job: Instance) -> Optional[str]:
    """The queue of a Win32_PrintJob from its Name ``"<printer>, <job id>"`` (printer names may hold commas)."""
    name = job.get("Name")
    if not isinstance(name, str):
        return None
    printer, sep, job_id = name.rpartition(", ")
    return printer if sep and job_id.strip().isdigit() else None


def job_in_error(job: Instance) -> bool:
    mask = number(job.get("StatusMask"))
    if mask is not None:
        return bool(int(mask) & JOB_ERROR_BITS)
    return bool(_JOB_ERROR_WORDS.search(str(job.get("JobStatus") or "")))


def offline(printer: Instance) -> bool:
    return (printer.get("WorkOffline") is True or printer.get("PrinterStatus") == PRINTER_STATUS_OFFLINE
            or printer.get("DetectedErrorState") == DETECTED_ERROR_OFFLINE)


def error_state_samples(printer: Instance, target: str) -> List[Sample]:
    """commune_printer_error_state for every condition DetectedErrorState can say (none while unknown)."""
    state = printer.get("DetectedErrorState")
    if not isinstance(state, int) or not 1 <= state <= 11:
        return []
    return [sample("commune_printer_error_state", int(state == code), target=target, condition=condition)
            for code, condition in DETECTED_ERROR_CONDITIONS.items()]


def queue_samples(printers: Iterable[Instance], jobs: Iterable[Instance], now: float,
                  virtual_printers: bool = False) -> List[Sample]:
    """Every series of the print queues from Win32_Printer and Win32_PrintJob instances at ``now``."""
    by_printer: Dict[str, List[Instance]] = {}
    for job in jobs:
        name = job_printer(job)
        if name is not None:
            by_printer.setdefault(name, []).append(job)
    out: List[Sample] = []
    seen = set()
    for printer in sorted(printers, key=lambda p: str(p.get("Name") or "")):
        name = printer.get("Name")
        if not isinstance(name, str) or not name or name in seen:
            continue
        seen.add(name)
        kind = attachment(printer)
        if kind == "virtual" and not virtual_printers:
            continue
        queued = by_printer.get(name, [])
        submitted = [t for t in (cim_datetime(j.get("TimeSubmitted")) for j in queued) if t is not None]
        out += [sample("commune_print_queue_info", 1, printer=name, port=str(printer.get("PortName") or ""),
                       driver=str(printer.get("DriverName") or ""), attachment=kind),
                sample("commune_print_queue_offline", int(offline(printer)), printer=name),
                sample("commune_print_queue_jobs", len(queued), printer=name),
                sample("commune_print_queue_error_jobs", sum(job_in_error(j) for j in queued), printer=name),
                sample("commune_print_queue_oldest_job_age_seconds",
                       max(0.0, now - min(submitted)) if submitted else 0, printer=name)]
        if kind in DIRECTLY_ATTACHED:
            status = printer.get("PrinterStatus")
            if isinstance(status, int) and status > 0:
                out.append(sample("commune_printer_status", status, target=name))
            out += error_state_samples(printer, name)
    return out


# ---------------------------------------------------------------- the input

class WinPrintInput:
    """Reads the spooler's printers and jobs every interval through a WMI :data:`Query`."""

    def __init__(self, section: Config, query: Query, clock: Callable[[], float] = time.time):
        self.name = NAME
        self.interval = section.interval
        self.timeout = section.timeout
        self.section = section
        self.query = query
        self.clock = clock

    def collect(self) -> List[Sample]:
        printers = self.query("root\\cimv2", PRINTERS)
        jobs = self.query("root\\cimv2", JOBS) if printers else []
        return queue_samples(printers, jobs, self.clock(), self.section.virtual_printers)


def build(section: Config, config, system: Optional[str] = None, query: Optional[Query] = None) -> list:
    if (system or platform.system().lower()) != "windows":
        log.debug("winprint: not Windows; no print queue metrics")
        return []
    if query is None:
        from agent.inputs.wmi import query
    return [WinPrintInput(section, query)]
