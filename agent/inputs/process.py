"""Watched processes and Windows services (section ``process:``): up, count, start time, CPU, memory.

A watch entry matches processes by executable name (``process_name``, case-insensitive, ``.exe``
optional) and/or a regular expression searched in the command line (``cmdline``); both given
means both must match. On Windows an entry may name a service instead (``windows_service``,
the service name, not the display name); it reports the service state and its process.
``windows_service`` entries are skipped, with one warning, on other systems.
"""
from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional

from agent.inputs.base import InputSection
from contract.samples import Sample, sample
from contract.schema import Duration

NAME = "process"

log = logging.getLogger(__name__)

SERVICE_STATES = ("running", "stopped", "start_pending", "stop_pending", "continue_pending",
                  "pause_pending", "paused")


@dataclass
class Watch:
    # The name label of the series (e.g. "vnpt-ca-plugin").
    name: str
    process_name: str = ""
    cmdline: str = ""
    windows_service: str = ""

    def validate(self) -> Iterator[tuple]:
        if not self.name.strip():
            yield "name", "must not be empty"
        if self.windows_service and (self.process_name or self.cmdline):
            yield "windows_service", "windows_service cannot be combined with process_name or cmdline"
        elif not (self.windows_service or self.process_name or self.cmdline):
            yield "", "set process_name, cmdline or windows_service"
        if self.cmdline:
            try:
                re.compile(self.cmdline)
            except re.error as exc:
                yield "cmdline", f"invalid regular expression {self.cmdline!r}: {exc}"


@dataclass
class Config(InputSection):
    interval: Duration = Duration(30)
    timeout: Duration = Duration(10)
    watch: List[Watch] = field(default_factory=list)

    def validate(self) -> Iterator[tuple]:
        yield from super().validate()
        seen = set()
        for i, w in enumerate(self.watch):
            if w.name in seen:
                yield f"watch[{i}].name", f"duplicate watch name {w.name!r}"
            seen.add(w.name)


def _exe_key(name: str) -> str:
    name = name.lower()
    return name[:-4] if name.endswith(".exe") else name


class _Matcher:
    def __init__(self, watch: Watch):
        self.name = watch.name
        self.exe = _exe_key(watch.process_name) if watch.process_name else None
        self.cmdline = re.compile(watch.cmdline) if watch.cmdline else None

    def matches(self, info: dict) -> bool:
        if self.exe is not None and _exe_key(info.get("name") or "") != self.exe:
            return False
        if self.cmdline is not None:
            return bool(self.cmdline.search(" ".join(info.get("cmdline") or ())))
        return True


class ProcessInput:
    """``ps`` is psutil (injected for tests); ``service_get(name)`` returns a dict with ``status``
    and ``pid`` or None when the service is not installed (psutil.win_service_get on Windows)."""

    def __init__(self, section: Config, ps=None, service_get: Optional[Callable[[str], Optional[dict]]] = None):
        import psutil

        self.name = NAME
        self.interval = section.interval
        self.timeout = section.timeout
        self.ps = ps or psutil
        self.matchers = [_Matcher(w) for w in section.watch if not w.windows_service]
        self.services = [w for w in section.watch if w.windows_service]
        if service_get is None and self.services:
            if sys.platform == "win32":
                service_get = _windows_service_get(self.ps)
            else:
                log.warning("process: windows_service entries are skipped on %s: %s", sys.platform,
                            ", ".join(w.name for w in self.services))
                self.services = []
        self.service_get = service_get
        self._need_cmdline = any(m.cmdline is not None for m in self.matchers)
        self._missing_logged: set = set()

    def collect(self) -> List[Sample]:
        out: List[Sample] = []
        groups = {m.name: [] for m in self.matchers}
        if self.matchers:
            attrs = ["pid", "name", "cmdline"] if self._need_cmdline else ["pid", "name"]
            for proc in self.ps.process_iter(attrs):
                for m in self.matchers:
                    if m.matches(proc.info):
                        groups[m.name].append(proc)
        for name, procs in groups.items():
            out.extend(self._process_samples(name, procs))
        for w in self.services:
            out.extend(self._service_samples(w))
        return out

    def _process_samples(self, name: str, procs: list) -> List[Sample]:
        ps = self.ps
        count, starts, cpu, rss = 0, [], 0.0, 0
        for proc in procs:
            try:
                with proc.oneshot():
                    started = proc.create_time()
                    try:
                        times = proc.cpu_times()
                        cpu += times.user + times.system
                        rss += proc.memory_info().rss
                    except ps.AccessDenied:  # another user's process: counted, not measured
                        pass
            except (ps.NoSuchProcess, ps.ZombieProcess):
                continue
            count += 1
            starts.append(started)
        out = [sample("commune_process_up", 1 if count else 0, name=name),
               sample("commune_process_count", count, name=name)]
        if count:
            out += [sample("commune_process_start_time_seconds", min(starts), name=name),
                    sample("commune_process_cpu_seconds_total", cpu, name=name),
                    sample("commune_process_resident_memory_bytes", rss, name=name)]
        return out

    def _service_samples(self, watch: Watch) -> List[Sample]:
        info = self.service_get(watch.windows_service)
        if info is None:
            if watch.name not in self._missing_logged:
                self._missing_logged.add(watch.name)
                log.warning("process: Windows service %s (%s) is not installed", watch.windows_service, watch.name)
            return [sample("commune_process_up", 0, name=watch.name),
                    sample("commune_process_count", 0, name=watch.name)]
        state = info.get("status") or ""
        out = [sample("commune_windows_service_state", 1 if s == state else 0, name=watch.name, state=s)
               for s in SERVICE_STATES]
        procs = []
        if state == "running" and info.get("pid"):
            try:
                procs = [self.ps.Process(info["pid"])]
            except self.ps.NoSuchProcess:
                procs = []
        samples = self._process_samples(watch.name, procs)
        samples[0] = sample("commune_process_up", 1 if state == "running" else 0, name=watch.name)
        return out + samples


def _windows_service_get(ps) -> Callable[[str], Optional[dict]]:
    def get(name: str) -> Optional[dict]:
        try:
            svc = ps.win_service_get(name)
            return {"status": svc.status(), "pid": svc.pid()}
        except ps.NoSuchProcess:
            return None

    return get


def build(section: Config, config) -> list:
    if not section.watch:
        return []
    return [ProcessInput(section)]
