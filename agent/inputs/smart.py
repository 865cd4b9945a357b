"""Disk health from ``smartctl --json`` (smartmontools), as its own input because it is slow.

smartctl is run at most every ``refresh_interval`` (default 30m, one call per disk); in between,
every ``interval`` the input re-emits the last reading, so the series stay continuous in Prometheus
(a sample every few minutes would fall outside its 5m lookback). ``commune_smart_last_read_timestamp_seconds``
says how old the reading is. Disks asleep (standby) are not woken: smartctl's ``-n standby`` skips
them and the previous reading is kept.

Where the readings come from (``source``): ``auto`` (the default) runs smartctl when it is found,
the richer source (ATA attribute table: reallocated, pending and offline-uncorrectable sectors;
the whole NVMe health log). On Windows without smartctl, which is a default install, it reads
Windows' own view of the disks over WMI instead (``agent/inputs/windisk.py``: health, failure
prediction, wear, temperature, power-on time, uncorrected errors) under the same series and
labels. Elsewhere without smartctl (smartmontools not installed) the input logs that once and is
not scheduled: no SMART series, no error loop. ``smartctl`` and ``wmi`` force one source; the
choice is logged once at start. Reading SMART needs root (Linux) or Administrator (Windows); a disk
smartctl cannot open is ``commune_smart_up 0``, logged once per disk.

The ``device`` label is smartctl's device name without ``/dev/`` (``sda``, ``nvme0``). On Windows
smartctl calls ``\\\\.\\PhysicalDriveN`` ``/dev/sdX`` (a=0); it is shown as ``PhysicalDriveN`` there,
the name psutil (``node_disk_*``, ``commune_disk_info``) uses. NVMe controllers are ``nvme0`` while
their block devices are ``nvme0n1``.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from agent.inputs.base import InputSection
from contract.samples import Sample, sample
from contract.schema import Duration

NAME = "smart"
SOURCES = ("auto", "smartctl", "wmi")

log = logging.getLogger(__name__)

# smartctl exit status bits (smartctl(8) "RETURN VALUES")
EXIT_PARSE_ERROR = 1 << 0
EXIT_OPEN_FAILED = 1 << 1
# What we ask smartctl to exit with when a disk is in standby (-n standby,STATUS). A parse error
# (bit 0) ends smartctl before any other bit can be set, so 255 cannot be a real status.
EXIT_STANDBY = 255

# ATA SSD wear attributes whose normalized value is the percentage of life remaining
_WEAR_REMAINING_ATTRS = ("Wear_Leveling_Count", "Media_Wearout_Indicator", "SSD_Life_Left",
                         "Percent_Lifetime_Remain", "Remaining_Lifetime_Perc")
_ATA_SECTOR_ATTRS = {5: "commune_smart_reallocated_sectors", 197: "commune_smart_pending_sectors",
                     198: "commune_smart_offline_uncorrectable_sectors"}


@dataclass
class Config(InputSection):
    # How often the last reading is emitted (cheap); smartctl itself runs every refresh_interval.
    interval: Duration = Duration(60)
    timeout: Duration = Duration(55)
    # How often smartctl reads the disks (slow: one call per disk, up to seconds each).
    refresh_interval: Duration = Duration(1800)
    # Path to smartctl, or "auto": PATH, /usr/sbin, /usr/local/sbin, %ProgramFiles%\smartmontools\bin.
    smartctl: str = "auto"
    # Devices as smartctl names them ("/dev/sda", "/dev/sda -d sat"); empty: smartctl --scan-open.
    devices: List[str] = field(default_factory=list)
    # Longest one smartctl call may take before it is killed.
    command_timeout: Duration = Duration(30)
    # Read disks in standby too (spins them up); off: such disks keep their previous reading.
    wake_disks: bool = False
    # auto: smartctl when found, else WMI on Windows; or smartctl / wmi (Windows) only.
    source: str = "auto"

    def validate(self) -> Iterator[tuple]:
        yield from super().validate()
        if self.refresh_interval <= 0:
            yield "refresh_interval", "must be greater than 0s"
        if self.command_timeout <= 0:
            yield "command_timeout", "must be greater than 0s"
        if not self.smartctl.strip():
            yield "smartctl", 'must be a path or "auto"'
        if self.source not in SOURCES:
            yield "source", f"must be one of {', '.join(SOURCES)}, got {self.source!r}"
        for i, dev in enumerate(self.devices):
            if not dev.strip():
                yield f"devices[{i}]", "must not be empty"


# ---------------------------------------------------------------- pure parsers

def device_label(name: str, system: str) -> str:
    """``/dev/sda`` -> ``sda``; on Windows ``/dev/sdb`` -> ``PhysicalDrive1`` (psutil's name)."""
    label = name[5:] if name.startswith("/dev/") else name
    if system == "windows" and len(label) == 3 and label.startswith("sd") and label[2].isalpha():
        return f"PhysicalDrive{ord(label[2].lower()) - ord('a')}"
    return label


def parse_scan(text: str) -> List[Tuple[str, str, str]]:
    """(name, type, protocol) of each device in ``smartctl --scan-open --json`` output."""
    data = json.loads(text) if text.strip() else {}
    out = []
    for dev in data.get("devices") or []:
        name = dev.get("name")
        if name:
            out.append((name, dev.get("type") or "", dev.get("protocol") or ""))
    return out


def disk_type(data: dict) -> str:
    """hdd, ssd or unknown from smartctl's JSON (NVMe is solid state; ATA/SCSI rotation_rate 0 is SSD)."""
    protocol = (data.get("device") or {}).get("protocol", "")
    if protocol == "NVMe":
        return "ssd"
    rate = data.get("rotation_rate")
    if isinstance(rate, int):
        return "ssd" if rate == 0 else "hdd"
    return "unknown"


def _ata_percentage_used(data: dict) -> Optional[float]:
    """Endurance used of an ATA SSD: device statistics first, then vendor wear attributes."""
    for page in (data.get("ata_device_statistics") or {}).get("pages") or []:
        for entry in page.get("table") or []:
            if entry.get("name") == "Percentage Used Endurance Indicator" and isinstance(entry.get("value"), int):
                return entry["value"] / 100.0
    if disk_type(data) != "ssd":
        return None
    for attr in (data.get("ata_smart_attributes") or {}).get("table") or []:
        if attr.get("name") in _WEAR_REMAINING_ATTRS and isinstance(attr.get("value"), int):
            return max(0.0, (100 - attr["value"]) / 100.0)
    return None


def parse_smart(data: dict, device: str) -> List[Sample]:
    """Samples of one ``smartctl --json -H -i -A`` reading (ATA or NVMe) for ``device``."""
    dev = data.get("device") or {}
    protocol = dev.get("protocol", "")
    out = [sample("commune_smart_info", 1, device=device, protocol=protocol, type=disk_type(data),
                  model=data.get("model_name") or data.get("scsi_model_name") or "",
                  serial=data.get("serial_number") or "", firmware=data.get("firmware_version") or "")]
    status = data.get("smart_status")
    if isinstance(status, dict) and isinstance(status.get("passed"), bool):
        out.append(sample("commune_smart_healthy", int(status["passed"]), device=device))
    for attr in (data.get("ata_smart_attributes") or {}).get("table") or []:
        name = _ATA_SECTOR_ATTRS.get(attr.get("id"))
        raw = (attr.get("raw") or {}).get("value")
        if name and isinstance(raw, int):
            # vendors pack extra counters into the upper bytes of some raw values
            out.append(sample(name, raw & 0xFFFFFFFF, device=device))
    hours = (data.get("power_on_time") or {}).get("hours")
    if isinstance(hours, int):
        minutes = (data.get("power_on_time") or {}).get("minutes") or 0
        out.append(sample("commune_smart_power_on_seconds_total", hours * 3600 + minutes * 60, device=device))
    if isinstance(data.get("power_cycle_count"), int):
        out.append(sample("commune_smart_power_cycles_total", data["power_cycle_count"], device=device))
    temp = (data.get("temperature") or {}).get("current")
    if isinstance(temp, (int, float)):
        out.append(sample("commune_smart_temperature_celsius", temp, device=device))
    nvme = data.get("nvme_smart_health_information_log")
    if isinstance(nvme, dict):
        if isinstance(nvme.get("percentage_used"), int):
            out.append(sample("commune_smart_percentage_used_ratio", nvme["percentage_used"] / 100.0, device=device))
        if isinstance(nvme.get("available_spare"), int):
            out.append(sample("commune_smart_available_spare_ratio", nvme["available_spare"] / 100.0, device=device))
        if isinstance(nvme.get("media_errors"), int):
            out.append(sample("commune_smart_media_errors_total", nvme["media_errors"], device=device))
        if isinstance(nvme.get("critical_warning"), int):
            out.append(sample("commune_smart_critical_warning", nvme["critical_warning"], device=device))
    elif protocol == "ATA":
        used = _ata_percentage_used(data)
        if used is not None:
            out.append(sample("commune_smart_percentage_used_ratio", used, device=device))
    return out


def has_smart_data(data: dict) -> bool:
    """Whether a reading holds SMART values at all (not only smartctl's error messages)."""
    return any(k in data for k in ("smart_status", "ata_smart_attributes", "nvme_smart_health_information_log"))


def messages(data: dict) -> str:
    return "; ".join(m.get("string", "") for m in (data.get("smartctl") or {}).get("messages") or [])


# ---------------------------------------------------------------- running smartctl

Run = Callable[[Sequence[str], float], Tuple[int, str]]


def run_command(args: Sequence[str], timeout: float) -> Tuple[int, str]:
    """(exit status, stdout) of a command; a timeout is exit status -1."""
    flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # no console window flashing on Windows
    try:
        proc = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              stdin=subprocess.DEVNULL, timeout=timeout, creationflags=flags)
    except subprocess.TimeoutExpired:
        return -1, ""
    return proc.returncode, proc.stdout.decode("utf-8", errors="replace")


def find_smartctl(setting: str, which: Callable[[str], Optional[str]] = shutil.which,
                  exists: Callable[[str], bool] = os.path.isfile) -> Optional[str]:
    """The smartctl to run, or None when there is none."""
    if setting != "auto":
        return setting if exists(setting) else None
    found = which("smartctl")
    if found:
        return found
    candidates = ["/usr/sbin/smartctl", "/usr/local/sbin/smartctl", "/opt/homebrew/bin/smartctl"]
    program_files = os.environ.get("ProgramFiles")
    if program_files:
        candidates.append(os.path.join(program_files, "smartmontools", "bin", "smartctl.exe"))
    return next((c for c in candidates if exists(c)), None)


class _Reading:
    __slots__ = ("samples", "at")

    def __init__(self, samples: List[Sample], at: float):
        self.samples = samples
        self.at = at


class SmartInput:
    """Re-emits the last SMART readings every interval; runs smartctl every refresh_interval."""

    def __init__(self, section: Config, smartctl: str, run: Run = run_command,
                 clock: Callable[[], float] = time.time, system: Optional[str] = None):
        self.name = NAME
        self.interval = section.interval
        self.timeout = section.timeout
        self.section = section
        self.smartctl = smartctl
        self.run = run
        self.clock = clock
        self.system = system or platform.system().lower()
        self._readings: Dict[str, _Reading] = {}
        self._down: Dict[str, str] = {}  # device -> why it could not be read (logged once)
        self._refreshed_at: Optional[float] = None

    def collect(self) -> List[Sample]:
        now = self.clock()
        if self._refreshed_at is None or now - self._refreshed_at >= self.section.refresh_interval:
            self.refresh(now)
            self._refreshed_at = now
        out: List[Sample] = []
        for device, reading in sorted(self._readings.items()):
            out += reading.samples
            out.append(sample("commune_smart_last_read_timestamp_seconds", reading.at, device=device))
        for device in sorted(self._down):
            if device not in self._readings:
                out.append(sample("commune_smart_up", 0, device=device))
        return out

    def devices(self) -> List[Tuple[str, List[str], str]]:
        """(name, extra smartctl arguments, protocol) of each disk to read."""
        if self.section.devices:
            out = []
            for spec in self.section.devices:
                name, *extra = spec.split()
                out.append((name, extra, ""))
            return out
        code, text = self.run([self.smartctl, "--scan-open", "--json"], self.section.command_timeout)
        try:
            found = parse_scan(text)
        except ValueError:
            raise RuntimeError(f"smartctl --scan-open gave no JSON (exit status {code})") from None
        return [(name, ["-d", kind] if kind else [], protocol) for name, kind, protocol in found]

    def refresh(self, now: float) -> None:
        seen = set()
        for name, extra, protocol in self.devices():
            device = device_label(name, self.system)
            seen.add(device)
            args = [self.smartctl, "--json", "-H", "-i", "-A"]
            if protocol == "ATA":
                args += ["-l", "devstat"]
            if not self.section.wake_disks:
                args += ["-n", f"standby,{EXIT_STANDBY}"]
            code, text = self.run(args + extra + [name], self.section.command_timeout)
            self._record(device, code, text, now)
        for gone in set(self._readings) - seen:  # unplugged disks stop being reported
            del self._readings[gone]
        for gone in set(self._down) - seen:
            del self._down[gone]

    def _record(self, device: str, code: int, text: str, now: float) -> None:
        if code == EXIT_STANDBY:
            log.debug("smart: %s is in standby; keeping its previous reading", device)
            return
        try:
            data = json.loads(text) if text.strip() else {}
        except ValueError:
            data = {}
        if code >= 0 and not code & (EXIT_PARSE_ERROR | EXIT_OPEN_FAILED) and has_smart_data(data):
            self._readings[device] = _Reading(parse_smart(data, device) + [sample("commune_smart_up", 1, device=device)], now)
            if self._down.pop(device, None) is not None:
                log.info("smart: %s can be read again", device)
            return
        why = ("smartctl timed out" if code < 0 else messages(data) or f"smartctl exit status {code}")
        self._readings.pop(device, None)
        if device not in self._down:
            log.warning("smart: cannot read %s: %s", device, why)
        self._down[device] = why


def choose_source(section: Config, system: str, smartctl: Optional[str]) -> Optional[str]:
    """"smartctl", "wmi" or None (nothing to read with) for this section, OS and smartctl found."""
    if section.source in ("auto", "smartctl") and smartctl is not None:
        return "smartctl"
    if section.source in ("auto", "wmi") and system == "windows":
        return "wmi"
    return None


def build(section: Config, config, system: Optional[str] = None, query=None) -> list:
    """The smart input reading with the source chosen (``query``: the WMI seam, for tests)."""
    system = system or platform.system().lower()
    path = find_smartctl(section.smartctl) if section.source != "wmi" else None
    source = choose_source(section, system, path)
    if source == "smartctl":
        log.info("smart: reading disks with %s", path)
        return [SmartInput(section, path, system=system)]
    if section.source == "auto" and section.smartctl == "auto":
        missing = "smartctl not found"
    else:
        missing = f"smartctl {section.smartctl} does not exist"
    if source == "wmi":
        from agent.inputs import windisk, wmi

        why = "source wmi" if section.source == "wmi" else missing
        (log.info if section.smartctl == "auto" or section.source == "wmi" else log.warning)(
            "smart: %s; reading disk health from Windows (WMI Storage Management API)", why)
        return [windisk.WmiSmartInput(section, query or wmi.query)]
    if section.source == "wmi":
        log.warning("smart: source wmi needs Windows; no SMART metrics")
    elif section.smartctl == "auto":
        log.info("smart: smartctl not found (install smartmontools to get disk health); no SMART metrics")
    else:
        log.warning("smart: %s; no SMART metrics", missing)
    return []
