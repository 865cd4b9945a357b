"""Devices seen in Prometheus that the fleet file does not list yet, and the fleet device that
accepting one makes (pure: query results and the fleet in, candidates and devices out)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from collector.fleet import AGENT_KINDS, KINDS, SNMP_KINDS, Fleet


class FleetCliError(Exception):
    """A fleet command that cannot be done; the message says why."""



@dataclass
class Candidate:
    handle: str
    source: str           # agent | snmp | found
    commune: str
    kind: str             # as the machine tells it (may be switch, other or "")
    vendor: str = ""
    model: str = ""
    serial: str = ""
    address: str = ""
    seen_by: str = ""     # the agent it runs on, polls it or found it
    target: str = ""
    sys_name: str = ""
    chassis: str = ""
    last_seen: Optional[float] = None
    extra: Dict[str, str] = field(default_factory=dict)


def _slug(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")


def candidates(results: Dict[str, List[dict]], fleet: Fleet) -> List[Candidate]:
    """What Prometheus saw (:func:`gather_last_seen`) that the fleet file does not list."""
    pcs = {(d.commune, d.agent) for d in fleet.devices if d.kind in AGENT_KINDS}
    tied = {(d.commune, d.agent, d.target) for d in fleet.devices if d.kind in SNMP_KINDS}
    addresses = {(d.commune, d.address) for d in fleet.devices if d.address}
    out: Dict[str, Candidate] = {}

    def newer(c: Candidate, ts: float) -> bool:
        return c.last_seen is None or ts > c.last_seen

    nets: Dict[Tuple[str, str], Tuple[float, str]] = {}
    for item in results.get("addresses", []):
        m, ts = item["metric"], float(item["value"][1])
        key = (m.get("commune", ""), m.get("agent", ""))
        if key not in nets or ts > nets[key][0] or (ts == nets[key][0] and m.get("address", "") < nets[key][1]):
            nets[key] = (ts, m.get("address", ""))
    for item in results.get("agents", []):
        m, ts = item["metric"], float(item["value"][1])
        commune, agent = m.get("commune", ""), m.get("agent", "")
        if (commune, agent) in pcs:
            continue
        handle = f"agent:{commune}/{agent}"
        c = out.get(handle)
        if c is None or newer(c, ts):  # the machine's newest description
            out[handle] = Candidate(handle, "agent", commune, m.get("kind", ""), m.get("vendor", ""),
                                    m.get("model", ""), m.get("serial", ""), nets.get((commune, agent), (0, ""))[1],
                                    agent, "", "", m.get("chassis", ""), ts)
    polled = set()
    for item in results.get("snmp", []):
        m, ts = item["metric"], float(item["value"][1])
        commune, agent, target = m.get("commune", ""), m.get("agent", ""), m.get("target", "")
        polled.add((commune, m.get("address", "")))
        if (commune, agent, target) in tied or (commune, m.get("address", "")) in addresses:
            continue
        handle = f"snmp:{commune}/{agent}/{target}"
        c = out.get(handle)
        if c is None or newer(c, ts):
            out[handle] = Candidate(handle, "snmp", commune, m.get("kind", ""), m.get("vendor", ""), m.get("model", ""),
                                    "", m.get("address", ""), agent, target, m.get("sys_name", ""), "", ts)
    for item in results.get("found", []):
        m, ts = item["metric"], float(item["value"][1])
        commune, address = m.get("commune", ""), m.get("address", "")
        if (commune, address) in polled or (commune, address) in addresses:
            continue
        handle = f"found:{commune}/{address}"
        c = out.get(handle)
        if c is None or newer(c, ts):
            out[handle] = Candidate(handle, "found", commune, m.get("kind", ""), m.get("vendor", ""), m.get("model", ""),
                                    "", address, m.get("agent", ""), "", m.get("sys_name", ""), "", ts)
    return sorted(out.values(), key=lambda c: (c.commune, c.source, c.handle))


def describe_model(c: Candidate) -> str:
    if c.vendor and not c.model.lower().startswith(c.vendor.lower().split()[0]):
        return f"{c.vendor} {c.model}".strip()
    return c.model or c.vendor


def device_from(c: Candidate, fleet: Fleet, *, id: str = "", kind: str = "", model: str = "", location: str = "",
                agent: str = "", target: str = "") -> Dict[str, object]:
    """The fleet entry for an accepted candidate (what the machine told, and what was given)."""
    if c.commune not in {x.code for x in fleet.communes}:
        raise FleetCliError(f"{c.handle}: commune {c.commune!r} is not in the fleet file's communes; add it "
                            "(code, name, province) first")
    if not kind:
        if c.source == "agent":
            kind = c.kind or "pc"
        elif c.kind in SNMP_KINDS:
            kind = c.kind
        else:
            raise FleetCliError(f"{c.handle}: the device says it is {c.kind or 'nothing'!r}, not one of the fleet's "
                                f"kinds; give --kind ({', '.join(KINDS)})")
    if kind not in KINDS:
        raise FleetCliError(f"--kind: unknown kind {kind!r}, expected one of: {', '.join(KINDS)}")
    if c.source == "agent" and kind not in AGENT_KINDS:
        raise FleetCliError(f"{c.handle}: an agent's machine is a pc or laptop, not {kind!r}")
    if c.source != "agent" and kind not in SNMP_KINDS:
        raise FleetCliError(f"{c.handle}: an SNMP device is a printer, router or ups, not {kind!r}")
    model = model or describe_model(c)
    if not model:
        raise FleetCliError(f"{c.handle}: the machine does not tell its model; give --model")
    if c.source == "agent":
        base = c.seen_by if re.fullmatch(r"[a-z0-9][a-z0-9._-]*", c.seen_by) else _slug(c.seen_by)
        device: Dict[str, object] = {"id": id or base, "commune": c.commune, "kind": kind, "model": model,
                                     "agent": agent or c.seen_by}
    else:
        name = target or c.target or _slug(c.sys_name) or f"{kind}-{_slug(c.address)}"
        device = {"id": id or _slug(name) or name, "commune": c.commune, "kind": kind, "model": model,
                  "agent": agent or c.seen_by, "target": name}
    for key, value in (("serial", c.serial), ("location", location), ("address", c.address)):
        if value:
            device[key] = value
    return device
