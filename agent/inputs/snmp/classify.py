"""What a device is (printer, router, switch, UPS, other), its vendor and model, and which
profiles ``auto`` picks for it. Pure: works on the system group and on GETNEXT probe answers.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Mapping, NamedTuple, Optional, Tuple

import yaml

KINDS = ("printer", "router", "switch", "ups", "other")
VENDORS_FILE = Path(__file__).with_name("vendors.yaml")
ENTERPRISES = (1, 3, 6, 1, 4, 1)


class Classification(NamedTuple):
    kind: str
    vendor: str
    model: str
    profiles: Tuple[str, ...]


@functools.lru_cache(maxsize=1)
def _vendors():
    data = yaml.safe_load(VENDORS_FILE.read_text(encoding="utf-8"))
    ent = {int(k): v for k, v in data["enterprises"].items()}
    descr = [(re.compile(d["pattern"]), d["vendor"], d.get("kind")) for d in data["sys_descr_vendors"]]
    return ent, descr


def text(value) -> str:
    """An SNMP string as clean text (UTF-8, else Latin-1; NULs and padding stripped)."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        try:
            s = value.decode("utf-8")
        except UnicodeDecodeError:
            s = value.decode("latin-1")
    else:
        s = str(value)
    return " ".join(s.replace("\x00", " ").split())


def enterprise(sys_object_id: str) -> Optional[int]:
    parts = str(sys_object_id or "").strip(".").split(".")
    if len(parts) > 6 and tuple(int(p) for p in parts[:6] if p.isdigit()) == ENTERPRISES:
        try:
            return int(parts[6])
        except ValueError:
            return None
    return None


def vendor_of(sys_object_id: str, sys_descr: str) -> Tuple[str, Optional[str]]:
    """(vendor, kind hint) from the enterprise number, or sysDescr for generic agents."""
    ent, descr = _vendors()
    num = enterprise(sys_object_id)
    entry = ent.get(num) if num is not None else None
    if entry is None or entry.get("vendor") == "net-snmp":
        for pattern, vendor, kind in descr:
            if pattern.search(sys_descr or ""):
                return vendor, kind
    if entry:
        return entry["vendor"], entry.get("kind")
    return (f"enterprise {num}" if num is not None else "unknown"), None


def classify(system: Mapping[str, object], probes: Mapping[str, object]) -> Classification:
    """Kind, vendor, model and the ``auto`` profiles from the system group and the probe answers.

    ``probes`` maps a detect object name (see the profiles' ``detect``) to the first value found
    under it; a missing name means the device has nothing there.
    """
    sys_descr = text(system.get("sysDescr"))
    sys_oid = str(system.get("sysObjectID") or "")
    vendor, hint = vendor_of(sys_oid, sys_descr)
    printer = "prtMarkerSuppliesLevel" in probes or "hrPrinterStatus" in probes
    ups = "upsIdentManufacturer" in probes or "upsBasicIdentModel" in probes
    forwarding = system.get("ipForwarding")
    bridge_ports = system.get("dot1dBaseNumPorts")
    if printer:
        kind = "printer"
    elif ups:
        kind = "ups"
    elif forwarding == 1:
        kind = "router"
    elif isinstance(bridge_ports, int) and bridge_ports > 1:
        kind = "switch"
    elif hint in KINDS:
        kind = hint
    else:
        kind = "other"
    profiles = ["system"]
    if kind == "printer":
        profiles.append("printer")
    elif kind == "ups":
        profiles.append("ups")
    else:
        if "ifOperStatus" in probes:
            profiles.append("interfaces")
        if "hrProcessorLoad" in probes or "hrStorageSize" in probes:
            profiles.append("host_resources")
    return Classification(kind, vendor, model_of(kind, sys_descr, probes), tuple(profiles))


def model_of(kind: str, sys_descr: str, probes: Mapping[str, object]) -> str:
    device = text(probes.get("hrDeviceDescr"))
    # Printers name their model in the first hrDeviceDescr; some name a generic driver there.
    if kind == "printer" and device and "generic" not in device.lower():
        return device[:80]
    if kind == "ups":
        for key in ("upsBasicIdentModel", "upsIdentModel", "upsIdentManufacturer"):
            if text(probes.get(key)):
                return text(probes.get(key))[:80]
    m = re.search(r"Router Model:\s*([^,]+)", sys_descr)
    if m:
        return m.group(1).strip()
    first = re.split(r"[,;]", sys_descr, 1)[0].strip()
    return first[:80]
