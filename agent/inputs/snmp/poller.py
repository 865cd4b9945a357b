"""One input per SNMP target, so a dead or slow device never delays the others' samples.

Each poll: GET the system group; on the first poll (and after a reboot or a sysObjectID change)
probe what the device answers to classify it and pick ``auto`` profiles; then one GET for every
scalar and one multi-column GETBULK walk for every column of the chosen profiles; decode.
The poll has a hard deadline below the runner's, so a failure is always a sample:
``commune_snmp_up 0`` and ``commune_snmp_scrape_error_info{reason}``.
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import Dict, List, Optional

from agent.inputs.snmp.classify import Classification, classify, text
from agent.inputs.snmp.decode import DECODERS
from agent.inputs.snmp.errors import SnmpError
from agent.inputs.snmp.profiles import Values, detect_roots, iter_names, load_profiles
from contract.samples import Sample, sample

log = logging.getLogger(__name__)

REPROBE_EVERY = 60  # polls


class Limiter:
    """At most ``n`` polls at once across targets (one semaphore per event loop)."""

    def __init__(self, n: int):
        self.n = n
        self._sems: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    def __call__(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._sems.get(loop)
        if sem is None:
            sem = self._sems[loop] = asyncio.Semaphore(self.n)
        return sem


class TargetInput:
    """Polls one target; ``client`` is an :class:`~agent.inputs.snmp.client.SnmpClient`-like object."""

    def __init__(self, target, client, *, interval: float, deadline: float,
                 limiter: Optional[Limiter] = None):
        self.target = target
        self.client = client
        self.name = f"snmp/{target.name}"
        self.interval = interval
        self.deadline = deadline
        # The runner's deadline is a backstop: ours fires first and still reports the target.
        self.timeout = deadline + 2.0
        self.limiter = limiter
        self._class: Optional[Classification] = None
        self._sys_oid: Optional[str] = None
        self._uptime: Optional[int] = None
        self._polls = 0

    def close(self) -> None:
        """Release the client's socket (the target was removed or changed by a central profile)."""
        close = getattr(self.client, "close", None)
        if close is not None:
            close()

    async def collect(self) -> List[Sample]:
        t0 = time.perf_counter()
        name = self.target.name
        try:
            samples, errors = await asyncio.wait_for(self._limited(), self.deadline)
            up = 1
        except asyncio.TimeoutError:
            samples, errors, up = [], [("system", "timeout")], 0
            log.warning("snmp target %s (%s:%d): no complete answer within the %gs deadline",
                        name, self.target.address, self.target.port, self.deadline)
        except SnmpError as exc:
            samples, errors, up = [], [("system", exc.reason)], 0
            log.warning("snmp target %s: %s (%s)", name, exc, exc.reason)
        out = [sample("commune_snmp_up", up, target=name),
               sample("commune_snmp_scrape_duration_seconds", round(time.perf_counter() - t0, 6), target=name)]
        out += [sample("commune_snmp_scrape_error_info", 1, target=name, profile=p, reason=r) for p, r in errors]
        return out + samples

    async def _limited(self):
        if self.limiter is None:
            return await self._poll()
        async with self.limiter():
            return await self._poll()

    async def _poll(self):
        name = self.target.name
        profiles = load_profiles()
        system_prof = profiles["system"]
        system_raw = await self.client.get(system_prof.get.values())
        if not system_raw:
            raise SnmpError("no_such_object", f"{name}: the device answered without any system object")
        system = Values(system_prof, system_raw)
        sys_values = {k: system.scalar(k) for k in system_prof.get}
        sys_oid = str(sys_values.get("sysObjectID") or "")
        uptime = sys_values.get("sysUpTime")
        rebooted = isinstance(uptime, int) and isinstance(self._uptime, int) and uptime < self._uptime
        if (self._class is None or sys_oid != self._sys_oid or rebooted
                or self._polls % REPROBE_EVERY == 0):
            probes = await self.client.first_under(detect_roots())
            self._class = classify(sys_values, probes)
            self._sys_oid = sys_oid
        self._uptime = uptime if isinstance(uptime, int) else None
        self._polls += 1
        cls = self._class
        wanted = list(cls.profiles) if self.target.profiles == ["auto"] else \
            iter_names(["system"] + list(self.target.profiles))
        chosen = [profiles[p] for p in wanted if p != "system"]
        gets = [oid for p in chosen for oid in p.get.values()]
        walks = [oid for p in chosen for oid in p.walk.values()]
        data: Dict = {}
        if gets:
            data.update(await self.client.get(gets))
        if walks:
            data.update(await self.client.walk(walks))
        samples: List[Sample] = []
        errors = []
        if isinstance(uptime, int):
            samples.append(sample("commune_snmp_uptime_seconds", uptime / 100, target=name))
        samples.append(sample(
            "commune_snmp_device_info", 1, target=name, address=self.target.address, kind=cls.kind,
            vendor=cls.vendor, model=cls.model, sys_name=text(sys_values.get("sysName")),
            sys_object_id=sys_oid, profiles=",".join(wanted)))
        for prof in chosen:
            decoded = DECODERS[prof.name](Values(prof, data), name)
            if not decoded:
                errors.append((prof.name, "no_such_object"))
            samples.extend(decoded)
        return samples, errors
