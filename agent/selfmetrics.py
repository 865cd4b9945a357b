"""The agent's own health: build info, resident memory and CPU seconds, on every OS (psutil)."""
from __future__ import annotations

import platform
from typing import List

import psutil

from agent import __version__
from contract.samples import Sample, sample


class SelfInput:
    """Always scheduled under the input name ``agent``."""

    def __init__(self, interval: float, process: "psutil.Process | None" = None):
        self.name = "agent"
        self.interval = interval
        self.timeout = min(5.0, interval)
        self._proc = process or psutil.Process()
        self._build = sample("commune_agent_build_info", 1, version=__version__,
                             python_version=platform.python_version(), os=platform.system().lower())

    def collect(self) -> List[Sample]:
        with self._proc.oneshot():
            mem = self._proc.memory_info()
            cpu = self._proc.cpu_times()
            created = self._proc.create_time()
        return [
            self._build,
            sample("process_resident_memory_bytes", mem.rss),
            sample("process_cpu_seconds_total", cpu.user + cpu.system),
            sample("process_start_time_seconds", created),
        ]
