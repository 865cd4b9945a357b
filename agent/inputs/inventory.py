"""What the machine can tell about itself, for the fleet inventory: vendor, model, serial, chassis,
BIOS, OS install date, LAN addresses and MACs.

Every agent then is a device of the inventory without any file: the collector's rules take an agent
with ``commune_host_hardware_info`` as a PC or laptop (by its chassis) named after the agent, and the
fleet file adds only what machines cannot tell (purchase date, location, asset tag, rated life),
winning where both speak. A missing purchase date is estimated from the BIOS date
(``commune_host_bios_date_timestamp_seconds``) and marked as estimated.

Where it comes from (read every ``refresh_interval``, 6 hours by default, and emitted every
``interval`` so the series stay continuous):

- Linux: DMI in sysfs (``/sys/class/dmi/id``: ``sys_vendor``, ``product_name``, ``product_serial``
  (readable by root only: empty otherwise), ``chassis_type``, ``bios_vendor``, ``bios_version``,
  ``bios_date``); no OS install date (Linux keeps none reliably);
- Windows: WMI through the seam of ``agent/inputs/wmi.py``: ``Win32_ComputerSystem`` (Manufacturer,
  Model), ``Win32_BIOS`` (SerialNumber, Manufacturer, SMBIOSBIOSVersion, ReleaseDate),
  ``Win32_SystemEnclosure`` (ChassisTypes), ``Win32_OperatingSystem`` (InstallDate); readable by
  any account;
- every OS: psutil's interfaces for the LAN addresses and MACs (up, not loopback, IPv4).

Placeholders that firmware leaves in these fields ("To be filled by O.E.M.", "Default string" ...)
are read as empty. Pure parsers apart from the two readers.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import socket
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional

from agent.inputs.base import InputSection
from contract.samples import Sample, sample
from contract.schema import Duration

NAME = "inventory"

log = logging.getLogger(__name__)

# SMBIOS System Enclosure types (DSP0134 7.4.1) -> (chassis name, device kind of the inventory)
CHASSIS = {
    3: ("desktop", "pc"), 4: ("low_profile_desktop", "pc"), 5: ("pizza_box", "pc"), 6: ("mini_tower", "pc"),
    7: ("tower", "pc"), 8: ("portable", "laptop"), 9: ("laptop", "laptop"), 10: ("notebook", "laptop"),
    11: ("hand_held", "laptop"), 13: ("all_in_one", "pc"), 14: ("sub_notebook", "laptop"),
    15: ("space_saving", "pc"), 16: ("lunch_box", "pc"), 30: ("tablet", "laptop"), 31: ("convertible", "laptop"),
    32: ("detachable", "laptop"), 35: ("mini_pc", "pc"), 36: ("stick_pc", "pc"),
}
PLACEHOLDERS = {"", "to be filled by o.e.m.", "to be filled by oem", "default string", "system product name",
                "system manufacturer", "system serial number", "not applicable", "not specified", "none",
                "n/a", "na", "0", "0123456789", "123456789", "oem", "o.e.m.", "chassis serial number",
                "base board serial number", "invalid"}
DMI_FIELDS = ("sys_vendor", "product_name", "product_serial", "chassis_type", "bios_vendor", "bios_version",
              "bios_date")


@dataclass
class Config(InputSection):
    # How often the last reading is emitted (cheap); the machine is read every refresh_interval.
    interval: Duration = Duration(60)
    timeout: Duration = Duration(30)
    refresh_interval: Duration = Duration(6 * 3600)
    # Root of sysfs on Linux (DMI), as the host input's sysfs option.
    sysfs: str = "/sys"

    def validate(self):
        yield from super().validate()
        if self.refresh_interval < self.interval:
            yield "refresh_interval", f"must not be shorter than interval ({self.interval:g}s)"


def clean(value: object) -> str:
    """A firmware string, or "" for the placeholders vendors leave in."""
    text = " ".join(str(value if value is not None else "").split())
    return "" if text.lower() in PLACEHOLDERS else text


def chassis(code: object) -> tuple:
    """SMBIOS chassis type -> (name, kind); kind is "" when the enclosure says nothing useful."""
    try:
        return CHASSIS.get(int(code), ("other", ""))
    except (TypeError, ValueError):
        return ("unknown", "")


def parse_dmi_date(text: str) -> Optional[float]:
    """``MM/DD/YYYY`` (sysfs bios_date) -> Unix time at 00:00 UTC; None if it is not a real date."""
    try:
        month, day, year = (int(x) for x in text.strip().split("/"))
        when = dt.datetime(year, month, day, tzinfo=dt.timezone.utc)
    except (ValueError, TypeError):
        return None
    return when.timestamp() if 1990 <= year <= 2100 else None


def facts_from_dmi(files: Mapping[str, Optional[str]]) -> Dict[str, object]:
    """The contents of /sys/class/dmi/id/<field> (None: unreadable) -> the machine's facts."""
    name, kind = chassis((files.get("chassis_type") or "").strip() or None)
    return {"vendor": clean(files.get("sys_vendor")), "model": clean(files.get("product_name")),
            "serial": clean(files.get("product_serial")), "chassis": name, "kind": kind,
            "bios_vendor": clean(files.get("bios_vendor")), "bios_version": clean(files.get("bios_version")),
            "bios_date": parse_dmi_date(files.get("bios_date") or ""), "os_install": None}


def facts_from_wmi(system: List[dict], bios: List[dict], enclosure: List[dict], os_: List[dict]) -> Dict[str, object]:
    """Win32_ComputerSystem, Win32_BIOS, Win32_SystemEnclosure, Win32_OperatingSystem instances -> facts."""
    from agent.inputs.wmi import cim_datetime

    cs, b, osi = (system or [{}])[0], (bios or [{}])[0], (os_ or [{}])[0]
    types = [t for e in enclosure or [] for t in (e.get("ChassisTypes") or [])]
    # the first type that names a kind (docks and expansion chassis list more than one)
    named = [chassis(t) for t in types]
    name, kind = next((c for c in named if c[1]), named[0] if named else ("unknown", ""))
    if not kind and cs.get("PCSystemType") in (2,):  # 2: Mobile
        kind = "laptop"
    return {"vendor": clean(cs.get("Manufacturer")), "model": clean(cs.get("Model")),
            "serial": clean(b.get("SerialNumber")), "chassis": name, "kind": kind,
            "bios_vendor": clean(b.get("Manufacturer")), "bios_version": clean(b.get("SMBIOSBIOSVersion")),
            "bios_date": cim_datetime(b.get("ReleaseDate")), "os_install": cim_datetime(osi.get("InstallDate"))}


def network_samples(addrs: Mapping[str, list], stats: Mapping[str, object]) -> List[Sample]:
    """commune_host_network_info per interface that is up, not loopback, with an IPv4 address."""
    link = getattr(socket, "AF_PACKET", None) or getattr(socket, "AF_LINK", None)
    out = []
    for name in sorted(addrs):
        st = stats.get(name)
        if st is None or not getattr(st, "isup", False):
            continue
        v4 = [a.address for a in addrs[name] if a.family == socket.AF_INET]
        if not v4 or all(a.startswith("127.") for a in v4):
            continue
        macs = [a.address for a in addrs[name] if link is not None and a.family == link]
        if not macs:  # Windows: psutil reports the MAC as family AF_LINK (-1)
            macs = [a.address for a in addrs[name] if a.family not in (socket.AF_INET, socket.AF_INET6)]
        mac = (macs[0] if macs else "").replace("-", ":").lower()
        out.append(sample("commune_host_network_info", 1, interface=name, address=v4[0], mac=mac))
    return out


def fact_samples(facts: Mapping[str, object]) -> List[Sample]:
    bios_date = facts.get("bios_date")
    out = [sample("commune_host_hardware_info", 1, vendor=facts["vendor"], model=facts["model"],
                  serial=facts["serial"], chassis=facts["chassis"], kind=facts["kind"],
                  bios_vendor=facts["bios_vendor"], bios_version=facts["bios_version"],
                  bios_date=dt.datetime.fromtimestamp(bios_date, dt.timezone.utc).strftime("%Y-%m-%d")
                  if bios_date else "")]
    if bios_date:
        out.append(sample("commune_host_bios_date_timestamp_seconds", bios_date))
    if facts.get("os_install"):
        out.append(sample("commune_host_os_install_timestamp_seconds", facts["os_install"]))
    return out


class InventoryInput:
    def __init__(self, section: Config, read_facts: Callable[[], Dict[str, object]], ps,
                 monotonic: Callable[[], float] = time.monotonic):
        self.name = NAME
        self.interval = section.interval
        self.timeout = section.timeout
        self.section = section
        self.read_facts = read_facts
        self.ps = ps
        self.monotonic = monotonic
        self._facts: Optional[List[Sample]] = None
        self._read_at = 0.0

    def collect(self) -> List[Sample]:
        now = self.monotonic()
        if self._facts is None or now - self._read_at >= self.section.refresh_interval:
            self._facts = fact_samples(self.read_facts())  # an error here: the runner reports it
            self._read_at = now
        return self._facts + network_samples(self.ps.net_if_addrs(), self.ps.net_if_stats())


def _linux_reader(sysfs: str) -> Callable[[], Dict[str, object]]:
    base = os.path.join(sysfs, "class", "dmi", "id")

    def read() -> Dict[str, object]:
        files: Dict[str, Optional[str]] = {}
        for name in DMI_FIELDS:
            try:
                with open(os.path.join(base, name), encoding="utf-8", errors="replace") as fh:
                    files[name] = fh.read()
            except OSError:  # no DMI (VMs, ARM boards) or root-only (product_serial)
                files[name] = None
        return facts_from_dmi(files)

    return read


def _windows_reader(query) -> Callable[[], Dict[str, object]]:
    def read() -> Dict[str, object]:
        q = lambda wql: query("root\\cimv2", wql)  # noqa: E731
        return facts_from_wmi(q("SELECT Manufacturer, Model, PCSystemType FROM Win32_ComputerSystem"),
                              q("SELECT SerialNumber, Manufacturer, SMBIOSBIOSVersion, ReleaseDate FROM Win32_BIOS"),
                              q("SELECT ChassisTypes FROM Win32_SystemEnclosure"),
                              q("SELECT InstallDate FROM Win32_OperatingSystem"))

    return read


def build(section: Config, config, system: Optional[str] = None, query=None) -> list:
    import psutil

    system = system or platform.system().lower()
    if system == "windows":
        if query is None:
            from agent.inputs.wmi import query
        reader = _windows_reader(query)
    else:
        reader = _linux_reader(section.sysfs)
    return [InventoryInput(section, reader, psutil)]
