"""Host health with psutil, under node_exporter's metric names and labels on every OS.

This module is the input (what to read when, caching, which OS); what the answers mean lives by
source: host_psutil.py (psutil's answers), host_linux.py (Linux files), host_windows.py (WMI,
DeviceIoControl, the registry).

What comes from where:

- psutil (Linux, Windows, macOS): CPU seconds by mode, CPU counts, memory, swap, filesystems,
  disk and network I/O, interface state and speed, boot time, temperatures and fans (Linux only:
  psutil has no sensors on Windows), battery charge and mains power (laptops, every OS).
- Linux sysfs (``sysfs`` option, like node_exporter's ``--path.sysfs``): whether each disk is
  rotational (``/sys/block/*/queue/rotational``) and its model, and battery design vs full-charge
  capacity (``/sys/class/power_supply/*/energy_full_design``, ``energy_full`` or ``charge_*``).
- Unexpected shutdowns and boot duration (``commune_host_unexpected_shutdowns_total``,
  ``commune_host_boot_duration_seconds``): agent/inputs/boot.py, with a little state in
  ``agent.state_dir`` and the clean-shutdown marker written when the agent stops; on Linux the
  boot is told apart by ``/proc/sys/kernel/random/boot_id``, elsewhere by psutil's boot time.
  On Windows the System event log is the better source (agent/inputs/winevents.py: it sees
  crashes, power cuts and Fast Startup resumes) and also gives planned shutdowns, blue screens and
  boots by type; its samples replace boot.py's of the same name, and boot.py's are used while the
  log cannot be read (boot.py keeps ``commune_host_last_unexpected_shutdown_timestamp_seconds``).
- Static facts (OS, CPU model, core counts, RAM, disk types) are read once and cached; disk facts
  are read again only when the set of disks changes (a USB disk plugged in).

Where psutil's view differs from node_exporter's:

- Windows CPU modes are ``user``, ``system``, ``idle``, ``irq`` (interrupt time) and ``softirq``
  (deferred procedure calls); Linux guest time goes to ``node_cpu_guest_seconds_total`` as node does.
- Windows has no load average (psutil's emulation is not emitted) and no disk busy time, so
  ``node_load*`` and ``node_disk_io_time_seconds_total`` are absent there.
- ``node_hwmon_*`` labels are psutil's chip name (``coretemp``) and sensor label (``Core 0``, or
  ``temp1``/``fan1`` when unlabelled), not node's ``platform_coretemp_0``/``temp2``.
- Windows disk type and model: ``DeviceIoControl(IOCTL_STORAGE_QUERY_PROPERTY)`` through ctypes
  (no extra dependency, no admin rights): the seek-penalty property (Windows 8 and later; a disk
  with a seek penalty is rotational) and the device descriptor's vendor/product. Disks behind USB
  bridges or RAID drivers that do not answer are ``type="unknown"``. The ``smart`` input
  (smartctl runs on Windows too) also reports the type in ``commune_smart_info{type}``, with the
  same ``device`` label (PhysicalDriveN).
- Windows battery wear comes from WMI (``root\\wmi`` ``BatteryStaticData.DesignedCapacity`` and
  ``BatteryFullChargedCapacity.FullChargedCapacity``, mWh, matched by ``InstanceName``; cycle count
  from ``BatteryCycleCount`` where the firmware fills it) through pywin32, the seam of
  ``agent/inputs/wmi.py``: ``commune_battery_capacity_ratio``, ``node_power_supply_energy_full*``
  (Wh; left out when the battery reports relative capacities) and
  ``node_power_supply_cyclecount``, with ``power_supply`` the battery's ``InstanceName``
  (``ACPI\\PNP0C0A\\1_0``). Asked only when psutil sees a battery, at most every 15 minutes (the
  values move over weeks); a failing query is logged once and costs nothing else.
"""
from __future__ import annotations

import logging
import os
import platform
import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, List, Mapping, Optional, Tuple

from agent.inputs.base import InputSection
from agent.inputs.boot import Boot, BootTracker
from agent.inputs.host_linux import (POWER_SUPPLY_ATTRS, list_dir, parse_cpuinfo_model, parse_os_release,
                                     parse_rotational, power_supply_samples, read_text)
from agent.inputs.host_psutil import (NODE_DISK_DEVICES_EXCLUDE, NODE_FS_TYPES_EXCLUDE, NODE_MOUNT_POINTS_EXCLUDE,
                                      Patterns, battery_samples, cpu_samples, disk_io_samples, excluded,
                                      filesystem_samples, memory_samples, network_samples, select_partitions,
                                      sensor_samples, swap_activity_samples)
from agent.inputs.host_windows import WmiBatteryWear, windows_cpu_model, windows_disk_query, windows_version_name
from agent.inputs.winevents import WindowsBootLog
from contract.samples import Sample, sample
from contract.schema import Duration

NAME = "host"

log = logging.getLogger(__name__)

# A boot time moving by less than this is the same boot (Windows computes it from the uptime)
BOOT_TIME_TOLERANCE = 2.0


@dataclass
class Config(InputSection):
    interval: Duration = Duration(15)
    timeout: Duration = Duration(10)
    # Regular expressions (Python syntax, searched) of what to leave out; defaults are node_exporter's.
    mount_points_exclude: str = NODE_MOUNT_POINTS_EXCLUDE
    fs_types_exclude: str = NODE_FS_TYPES_EXCLUDE
    # Network file systems and Windows mapped network drives (off: the server's own agent reports
    # them). Their size is asked in a helper thread with a deadline, since a dead server can hang it.
    remote_filesystems: bool = False
    disk_devices_exclude: str = NODE_DISK_DEVICES_EXCLUDE
    network_devices_exclude: str = ""
    # Temperatures, fans and battery.
    sensors: bool = True
    # Root of sysfs on Linux (disk types, battery capacity), as node_exporter's --path.sysfs.
    sysfs: str = "/sys"

    def validate(self) -> Iterator[tuple]:
        yield from super().validate()
        for key in ("mount_points_exclude", "fs_types_exclude", "disk_devices_exclude", "network_devices_exclude"):
            try:
                re.compile(getattr(self, key))
            except re.error as exc:
                yield key, f"invalid regular expression: {exc}"


class HostInput:
    """One collection = a handful of psutil calls; static facts are cached.

    ``ps`` (the psutil module), ``system`` (``platform.system().lower()``), ``read`` (path -> text
    or None) and ``listdir`` come in through the constructor so tests can give recorded data.
    """

    def __init__(self, section: Config, ps=None, system: Optional[str] = None,
                 read: Callable[[str], Optional[str]] = read_text,
                 listdir: Callable[[str], List[str]] = list_dir,
                 windows_disk: Optional[Callable[[str], Tuple[str, str]]] = None,
                 boots: Optional[BootTracker] = None, boot_log: Optional[WindowsBootLog] = None,
                 wmi_query: Optional[Callable[[str, str], List[dict]]] = None,
                 clock: Callable[[], float] = time.monotonic):
        if ps is None:
            import psutil as ps
        self.name = NAME
        self.interval = section.interval
        self.timeout = section.timeout
        self.section = section
        self.ps = ps
        self.system = system or platform.system().lower()
        self.read = read
        self.listdir = listdir
        self.windows_disk = windows_disk or windows_disk_query
        self.patterns = Patterns(section)
        self._static: Optional[List[Sample]] = None
        self._disks: Tuple[frozenset, List[Sample]] = (frozenset(), [])
        self._failed_mounts: set = set()
        self._stuck_mounts: set = set()
        self.mount_timeout = min(5.0, section.timeout / 2)
        self._boot_time: Optional[float] = None
        self._boot_id: Optional[str] = None
        self.boots = boots  # None: no boot history (tests, no state directory)
        self.wmi_query = wmi_query  # None: agent.inputs.wmi.query, imported when first needed
        self.clock = clock
        self._battery_wear = WmiBatteryWear(wmi_query, clock)  # Windows laptops
        self.boot_log = boot_log  # Windows: boots and shutdowns from the event log

    def collect(self) -> List[Sample]:
        ps = self.ps
        out: List[Sample] = list(self.static_samples())
        out += cpu_samples(ps.cpu_times(percpu=True), self.system)
        if self.system != "windows" and hasattr(ps, "getloadavg"):
            for minutes, value in zip((1, 5, 15), ps.getloadavg()):
                out.append(sample(f"node_load{minutes}", value))
        swap = ps.swap_memory()
        out += memory_samples(ps.virtual_memory(), swap)
        out += swap_activity_samples(swap, self.system)
        out += self.filesystems()
        perdisk = {d: io for d, io in (ps.disk_io_counters(perdisk=True) or {}).items()
                   if not excluded(self.patterns.disk, d)}
        out += disk_io_samples(perdisk)
        out += self.disk_info(perdisk)
        pernic = {d: io for d, io in (ps.net_io_counters(pernic=True) or {}).items()
                  if not excluded(self.patterns.net, d)}
        out += network_samples(pernic, ps.net_if_stats() if pernic else {})
        boot_time = self.boot_time()
        out.append(sample("node_boot_time_seconds", boot_time))
        out += self.boot_samples(boot_time)
        if self.section.sensors:
            out += self.sensors()
        return out

    # ------------------------------------------------------------ parts

    def boot_time(self) -> float:
        """psutil's boot time, held steady: on Windows it is now minus uptime and wobbles by a
        fraction of a second between calls, which would look like reboots to ``changes()``."""
        now = self.ps.boot_time()
        if self._boot_time is None or abs(now - self._boot_time) > BOOT_TIME_TOLERANCE:
            self._boot_time = now
        return self._boot_time

    def boot_samples(self, boot_time: float) -> List[Sample]:
        """boot.py's samples, those of the same name replaced by the event log's where it was read."""
        tracked = self.boots.observe(Boot(boot_time, self.boot_id())) if self.boots is not None else []
        logged = self.boot_log.observe() if self.boot_log is not None else []
        names = {s.name for s in logged}
        return logged + [s for s in tracked if s.name not in names]

    def boot_id(self) -> str:
        """The kernel's id of this boot (Linux; read once), "" elsewhere."""
        if self._boot_id is None:
            text = self.read("/proc/sys/kernel/random/boot_id") if self.system == "linux" else None
            self._boot_id = (text or "").strip()
        return self._boot_id

    def clean_shutdown(self) -> None:
        """Called by the agent when it stops cleanly (agent.app): the boot did not end unexpectedly."""
        if self.boots is not None:
            self.boots.clean_shutdown()

    def filesystems(self) -> List[Sample]:
        out: List[Sample] = []
        # Windows: all=False leaves out floppy drives (slow to probe), RAM disks and network drives
        every = self.system != "windows" or self.patterns.remote
        for device, fstype, mountpoint, ro, remote in select_partitions(self.ps.disk_partitions(all=every),
                                                                        self.patterns):
            try:
                usage = self._usage_with_deadline(mountpoint) if remote else self.ps.disk_usage(mountpoint)
                self._failed_mounts.discard(mountpoint)
            except OSError as exc:  # a vanished or unreadable mount: a sample, logged once
                usage = None
                if mountpoint not in self._failed_mounts:
                    self._failed_mounts.add(mountpoint)
                    log.warning("host: cannot read the size of %s (%s): %s", mountpoint, device, exc)
            out += filesystem_samples(device, fstype, mountpoint, ro, usage)
        return out

    def _usage_with_deadline(self, mountpoint: str):
        """disk_usage of a network mount in a helper thread, as node_exporter's mount timeout.

        A server that does not answer within ``mount_timeout`` makes the mount stuck: it is
        reported as a device error and not asked again until the hung call returns, so hung
        threads never pile up and the rest of the host metrics are not held up.
        """
        if mountpoint in self._stuck_mounts:
            raise TimeoutError(f"still no answer from an earlier size query (over {self.mount_timeout:g}s)")
        result: dict = {}
        done = threading.Event()

        def query() -> None:
            try:
                result["usage"] = self.ps.disk_usage(mountpoint)
            except BaseException as exc:  # handed to the collecting thread below
                result["error"] = exc
            finally:
                done.set()
                self._stuck_mounts.discard(mountpoint)

        self._stuck_mounts.add(mountpoint)
        threading.Thread(target=query, name=f"statfs {mountpoint}", daemon=True).start()
        if not done.wait(self.mount_timeout):
            raise TimeoutError(f"no answer within {self.mount_timeout:g}s")
        if "error" in result:
            raise result["error"]
        return result["usage"]

    def sensors(self) -> List[Sample]:
        ps = self.ps
        temps = ps.sensors_temperatures() if hasattr(ps, "sensors_temperatures") else {}
        fans = ps.sensors_fans() if hasattr(ps, "sensors_fans") else {}
        out = sensor_samples(temps or {}, fans or {})
        battery = ps.sensors_battery() if hasattr(ps, "sensors_battery") else None
        out += battery_samples(battery)
        if self.system == "windows" and battery is not None:
            out += self.windows_battery_wear()
        if self.system == "linux":
            root = os.path.join(self.section.sysfs, "class", "power_supply")
            for name in self.listdir(root):
                attrs = {key: self.read(os.path.join(root, name, key))
                         for key in ("type",) + POWER_SUPPLY_ATTRS + ("cycle_count",)}
                out += power_supply_samples(name, attrs)
        return out

    def windows_battery_wear(self) -> List[Sample]:
        return self._battery_wear.read()

    def disk_info(self, perdisk: Mapping[str, object]) -> List[Sample]:
        """commune_disk_info per disk, read again only when the set of disks changes."""
        names = frozenset(perdisk)
        if names == self._disks[0] and self._disks[1]:
            return self._disks[1]
        out = []
        for dev in sorted(names):
            kind, model = "unknown", ""
            if self.system == "linux":
                base = os.path.join(self.section.sysfs, "block", dev)
                kind = parse_rotational(self.read(os.path.join(base, "queue", "rotational")))
                model = (self.read(os.path.join(base, "device", "model")) or "").strip()
            elif self.system == "windows":
                try:
                    kind, model = self.windows_disk(dev)
                except Exception as exc:  # untestable off Windows: never let it cost the host metrics
                    log.warning("host: cannot query the type of disk %s: %s", dev, exc)
            out.append(sample("commune_disk_info", 1, device=dev, type=kind, model=model))
        self._disks = (names, out)
        return out

    def static_samples(self) -> List[Sample]:
        """commune_host_info and the CPU counts, read once."""
        if self._static is None:
            ps = self.ps
            logical = ps.cpu_count() or 0
            cores = ps.cpu_count(logical=False)
            os_version, cpu_model = self._describe()
            self._static = [
                sample("commune_host_info", 1, os=self.system, os_version=os_version,
                       kernel=platform.release(), arch=platform.machine().lower(), cpu_model=cpu_model,
                       cpu_cores=cores or "", cpu_count=logical, memory_bytes=ps.virtual_memory().total),
                sample("commune_host_cpus", logical),
            ]
            if cores:
                self._static.append(sample("commune_host_cpu_cores", cores))
        return self._static

    def _describe(self) -> Tuple[str, str]:
        """(OS version, CPU model) for this OS."""
        if self.system == "linux":
            os_version = parse_os_release(self.read("/etc/os-release") or self.read("/usr/lib/os-release"))
            return os_version, parse_cpuinfo_model(self.read("/proc/cpuinfo"))
        if self.system == "windows":
            release, version, _, _ = platform.win32_ver()
            edition = getattr(platform, "win32_edition", lambda: "")() or ""
            return windows_version_name(release, version, edition), windows_cpu_model()
        if self.system == "darwin":
            return f"macOS {platform.mac_ver()[0]}", platform.processor()
        return platform.version(), platform.processor()


def build(section: Config, config) -> list:
    state_dir = getattr(getattr(config, "agent", None), "state_dir", "")
    boot_log = WindowsBootLog(state_dir) if state_dir and sys.platform == "win32" else None
    return [HostInput(section, boots=BootTracker(state_dir) if state_dir else None, boot_log=boot_log)]
