"""Find SNMP devices in a subnet and say what they are.

    commune-agent discover 192.168.1.0/24 [-c agent.yaml | --community NAME] [--port N]
                           [--timeout S] [--retries N] [--concurrency N] [--rate N]
                           [--write-config FILE]

Every address is asked for its system group with each configured credential in turn (or the
given community), at most ``--concurrency`` at once and ``--rate`` new addresses per second;
each answering device is classified (printer, router, switch, UPS, other) with vendor and model.
The same sweep runs periodically as the ``snmp_discovery`` input when ``snmp.discovery`` is
enabled, exporting ``commune_snmp_discovered_device_info``.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from agent.inputs.snmp.classify import Classification, classify, text
from agent.inputs.snmp.config import AuthConfig, Config
from agent.inputs.snmp.errors import SnmpError
from agent.inputs.snmp.profiles import detect_roots, load_profiles
from contract.samples import Sample, sample

log = logging.getLogger(__name__)


class Found(NamedTuple):
    address: str
    auth: str
    sys_name: str
    sys_object_id: str
    classification: Classification


def hosts(subnets: Iterable[str]) -> List[str]:
    """Addresses to sweep: the usable hosts of each subnet (a /32 or /31 is taken whole)."""
    out: List[str] = []
    for net in subnets:
        n = ipaddress.ip_network(net, strict=False)
        addrs = list(n.hosts()) if n.num_addresses > 2 else list(n)
        out.extend(str(a) for a in addrs)
    return list(dict.fromkeys(out))


class _Pacer:
    """At most ``rate`` starts per second."""

    def __init__(self, rate: float):
        self.gap = 1.0 / rate
        self.next = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self.lock:
            loop = asyncio.get_running_loop()
            now = loop.time()
            if self.next > now:
                await asyncio.sleep(self.next - now)
            self.next = max(now, self.next) + self.gap


async def probe_one(address: str, port: int, auths: Sequence[Tuple[str, AuthConfig]], *, timeout: float,
                    retries: int) -> Optional[Found]:
    from agent.inputs.snmp.client import SnmpClient

    system_prof = load_profiles()["system"]
    for auth_name, auth in auths:
        client = SnmpClient(address, port, auth, timeout=timeout, retries=retries)
        try:
            raw = await client.get(system_prof.get.values())
            if not raw:
                continue
            system = {k: raw.get(oid) for k, oid in system_prof.get.items()}
            probes = await client.first_under(detect_roots())
        except SnmpError as exc:
            log.debug("discover %s with %s: %s", address, auth_name, exc.reason)
            continue
        finally:
            client.close()
        return Found(address, auth_name, text(system.get("sysName")), str(system.get("sysObjectID") or ""),
                     classify(system, probes))
    return None


async def sweep(addresses: Sequence[str], port: int, auths: Sequence[Tuple[str, AuthConfig]], *,
                timeout: float = 1.0, retries: int = 0, concurrency: int = 32,
                rate: float = 50.0) -> List[Found]:
    sem = asyncio.Semaphore(concurrency)
    pacer = _Pacer(rate)

    async def one(addr: str) -> Optional[Found]:
        async with sem:
            await pacer.wait()
            return await probe_one(addr, port, auths, timeout=timeout, retries=retries)

    results = await asyncio.gather(*(one(a) for a in addresses))
    found = [r for r in results if r is not None]
    return sorted(found, key=lambda f: ipaddress.ip_address(f.address))


def table(found: Sequence[Found]) -> str:
    rows = [("ADDRESS", "KIND", "VENDOR", "MODEL", "NAME")]
    rows += [(f.address, f.classification.kind, f.classification.vendor, f.classification.model, f.sys_name)
             for f in found]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows)


def _slug(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")


def config_snippet(found: Sequence[Found], port: int, community_auth: Optional[Tuple[str, AuthConfig]]) -> str:
    """A ready ``snmp`` section listing the devices found (YAML)."""
    import yaml

    names: Dict[str, int] = {}
    targets = []
    for f in found:
        base = _slug(f.sys_name) or f"{f.classification.kind}-{_slug(f.address)}"
        names[base] = names.get(base, 0) + 1
        name = base if names[base] == 1 else f"{base}-{names[base]}"
        t = {"name": name, "address": f.address, "auth": f.auth}
        if port != 161:
            t["port"] = port
        targets.append(t)
    section: Dict[str, object] = {"targets": targets}
    if community_auth:
        auth_name, auth = community_auth
        section = {"auths": {auth_name: {"version": auth.version, "community": auth.community.reveal()}},
                   **section}
    header = ("# Written by commune-agent discover on "
              f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC: {len(found)} device(s).\n"
              "# Merge into the agent config; auths named here must exist under snmp.auths.\n")
    return header + yaml.safe_dump({"snmp": section}, sort_keys=False, allow_unicode=True)


class DiscoveryInput:
    """Periodic sweep of ``snmp.discovery.subnets``."""

    def __init__(self, section: Config):
        disc = section.discovery
        self.name = "snmp_discovery"
        self.interval = float(disc.interval)
        self.subnets = list(disc.subnets)
        self.addresses = hosts(self.subnets)
        names = list(disc.auths) or list(section.auths)
        self.auths = [(n, section.auths[n]) for n in names]
        self.port = disc.port
        self.options = dict(timeout=float(disc.timeout), retries=disc.retries,
                            concurrency=disc.concurrency, rate=float(disc.rate))
        # Long enough for a sweep: every address paced at `rate`, each trying every auth.
        per_addr = float(disc.timeout) * (disc.retries + 1) * max(1, len(self.auths))
        self.timeout = min(self.interval, len(self.addresses) / disc.rate
                           + per_addr * (len(self.addresses) / disc.concurrency + 1) + 5)

    async def collect(self) -> List[Sample]:
        found = await sweep(self.addresses, self.port, self.auths, **self.options)
        out = []
        for f in found:
            c = f.classification
            out.append(sample("commune_snmp_discovered_device_info", 1, address=f.address, kind=c.kind,
                              vendor=c.vendor, model=c.model, sys_name=f.sys_name,
                              sys_object_id=f.sys_object_id))
        for net in self.subnets:
            n = ipaddress.ip_network(net, strict=False)
            count = sum(1 for f in found if ipaddress.ip_address(f.address) in n)
            out.append(sample("commune_snmp_discovery_devices", count, subnet=str(n)))
        return out
