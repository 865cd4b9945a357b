"""Host health with psutil, under node_exporter's metric names and labels on every OS."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from agent.inputs.base import InputSection
from agent.samples import Sample, sample
from agent.schema import Duration

NAME = "host"


@dataclass
class Config(InputSection):
    interval: Duration = Duration(15)
    timeout: Duration = Duration(10)


class HostInput:
    def __init__(self, section: Config, ps=None):
        import psutil

        self.name = NAME
        self.interval = section.interval
        self.timeout = section.timeout
        self.ps = ps or psutil

    def collect(self) -> List[Sample]:
        ps = self.ps
        out: List[Sample] = []
        for cpu, times in enumerate(ps.cpu_times(percpu=True)):
            for mode, value in times._asdict().items():
                out.append(sample("node_cpu_seconds_total", value, cpu=cpu, mode=mode))
        vm = ps.virtual_memory()
        out.append(sample("node_memory_MemTotal_bytes", vm.total))
        out.append(sample("node_memory_MemAvailable_bytes", vm.available))
        out.append(sample("node_boot_time_seconds", ps.boot_time()))
        return out


def build(section: Config, config) -> list:
    return [HostInput(section)]
