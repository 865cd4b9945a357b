"""Host facts Linux tells in files: /proc/cpuinfo, os-release, sysfs disk types and battery
capacities. ``read_text`` and ``list_dir`` are the only I/O; the rest are pure parsers of texts."""
from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional

from contract.samples import Sample, sample

def read_text(path: str) -> Optional[str]:
    """A small file's text, or None when it is absent or unreadable (sysfs attributes may refuse)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def list_dir(path: str) -> List[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def parse_cpuinfo_model(text: Optional[str]) -> str:
    """The CPU model from /proc/cpuinfo (x86 ``model name``; ARM ``Model``/``Hardware``/``Processor``)."""
    if not text:
        return ""
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    for key in ("model name", "model", "hardware", "processor", "cpu model"):
        value = fields.get(key, "")
        if value and not value.isdigit():  # x86's "processor: 0" is an index, not a name
            return value
    return ""


def parse_os_release(text: Optional[str]) -> str:
    """``PRETTY_NAME`` (else ``NAME VERSION``) from an os-release file."""
    if not text:
        return ""
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            fields[key] = value.strip().strip("'\"")
    return fields.get("PRETTY_NAME") or " ".join(v for v in (fields.get("NAME"), fields.get("VERSION")) if v)


def parse_rotational(text: Optional[str]) -> str:
    """/sys/block/<dev>/queue/rotational -> ``hdd`` / ``ssd`` / ``unknown``."""
    value = (text or "").strip()
    return {"1": "hdd", "0": "ssd"}.get(value, "unknown")


# node_exporter's powersupplyclass names (micro-units in sysfs, divided by 1e6 as node does)
POWER_SUPPLY_ATTRS = ("energy_full_design", "energy_full", "charge_full_design", "charge_full")


def power_supply_samples(name: str, attrs: Mapping[str, Optional[str]]) -> List[Sample]:
    """Samples for one /sys/class/power_supply/<name> battery from its attribute texts."""
    if (attrs.get("type") or "").strip() != "Battery":
        return []
    values: Dict[str, float] = {}
    for key in POWER_SUPPLY_ATTRS + ("cycle_count",):
        text = (attrs.get(key) or "").strip()
        try:
            values[key] = float(text)
        except ValueError:
            continue
    out = [sample(f"node_power_supply_{key}", values[key] / 1e6, power_supply=name)
           for key in POWER_SUPPLY_ATTRS if key in values]
    if "cycle_count" in values:
        out.append(sample("node_power_supply_cyclecount", values["cycle_count"], power_supply=name))
    for full, design in (("energy_full", "energy_full_design"), ("charge_full", "charge_full_design")):
        if values.get(full, 0) > 0 and values.get(design, 0) > 0:
            out.append(sample("commune_battery_capacity_ratio", values[full] / values[design], power_supply=name))
            break
    return out
