"""Host health with psutil, under node_exporter's metric names and labels on every OS.

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
import struct
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from agent.inputs.base import InputSection
from agent.inputs.boot import Boot, BootTracker
from agent.inputs.winevents import WindowsBootLog
from agent.samples import Sample, sample
from agent.schema import Duration

NAME = "host"

log = logging.getLogger(__name__)

# node_exporter 1.x defaults (--collector.filesystem.*-exclude, --collector.diskstats.device-exclude)
NODE_MOUNT_POINTS_EXCLUDE = r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)"
NODE_FS_TYPES_EXCLUDE = (r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs"
                         r"|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs"
                         r"|squashfs|sysfs|tracefs)$")
NODE_DISK_DEVICES_EXCLUDE = r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$"
# File systems on another machine: a dead server can hang statfs, so they are off by default.
REMOTE_FS_TYPES = re.compile(r"^(nfs4?|cifs|smb3?|smbfs|ncpfs|afs|9p|ceph|glusterfs|fuse\.sshfs|davfs|fuse\.rclone)$")

# A boot time moving by less than this is the same boot (Windows computes it from the uptime)
BOOT_TIME_TOLERANCE = 2.0

# psutil's Windows CPU time fields -> node_exporter modes
_WINDOWS_CPU_MODES = {"user": "user", "system": "system", "idle": "idle", "interrupt": "irq", "dpc": "softirq"}
_GUEST_MODES = {"guest": "user", "guest_nice": "nice"}


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


# ---------------------------------------------------------------- reading files (the only I/O besides psutil)

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


# ---------------------------------------------------------------- pure parsers

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


def windows_version_name(release: str, version: str, edition: str = "") -> str:
    """``Windows 11 Professional 10.0.22631`` from platform.win32_ver()/win32_edition().

    Windows 11 still calls itself release 10 to older Pythons; build 22000 and later is 11.
    """
    try:
        build = int(version.split(".")[2])
    except (IndexError, ValueError):
        build = 0
    if release == "10" and build >= 22000:
        release = "11"
    return " ".join(p for p in ("Windows", release, edition, version) if p)


def parse_rotational(text: Optional[str]) -> str:
    """/sys/block/<dev>/queue/rotational -> ``hdd`` / ``ssd`` / ``unknown``."""
    value = (text or "").strip()
    return {"1": "hdd", "0": "ssd"}.get(value, "unknown")


# node_exporter's powersupplyclass names (micro-units in sysfs, divided by 1e6 as node does)
_POWER_SUPPLY_MICRO = ("energy_full_design", "energy_full", "charge_full_design", "charge_full")


def power_supply_samples(name: str, attrs: Mapping[str, Optional[str]]) -> List[Sample]:
    """Samples for one /sys/class/power_supply/<name> battery from its attribute texts."""
    if (attrs.get("type") or "").strip() != "Battery":
        return []
    values: Dict[str, float] = {}
    for key in _POWER_SUPPLY_MICRO + ("cycle_count",):
        text = (attrs.get(key) or "").strip()
        try:
            values[key] = float(text)
        except ValueError:
            continue
    out = [sample(f"node_power_supply_{key}", values[key] / 1e6, power_supply=name)
           for key in _POWER_SUPPLY_MICRO if key in values]
    if "cycle_count" in values:
        out.append(sample("node_power_supply_cyclecount", values["cycle_count"], power_supply=name))
    for full, design in (("energy_full", "energy_full_design"), ("charge_full", "charge_full_design")):
        if values.get(full, 0) > 0 and values.get(design, 0) > 0:
            out.append(sample("commune_battery_capacity_ratio", values[full] / values[design], power_supply=name))
            break
    return out


# root\wmi battery classes (BATTERY_INFORMATION of the battery class driver)
BATTERY_CAPACITY_RELATIVE = 0x40000000  # Capabilities bit: capacities are relative, not mWh
BATTERY_WMI_REFRESH = 900.0  # seconds between WMI battery readings
_BATTERY_QUERIES = (("static", "SELECT * FROM BatteryStaticData"),
                    ("full", "SELECT * FROM BatteryFullChargedCapacity"),
                    ("cycles", "SELECT * FROM BatteryCycleCount"))


def wmi_battery_samples(static: Iterable[Mapping], full: Iterable[Mapping], cycles: Iterable[Mapping] = ()) -> List[Sample]:
    """Wear of each battery from root\\wmi BatteryStaticData / BatteryFullChargedCapacity / BatteryCycleCount."""
    from agent.inputs.wmi import number

    def by_name(instances):
        return {i["InstanceName"]: i for i in instances if isinstance(i.get("InstanceName"), str)}

    full_by, cycles_by = by_name(full), by_name(cycles)
    out: List[Sample] = []
    for name, info in sorted(by_name(static).items()):
        design = number(info.get("DesignedCapacity"))
        charged = number((full_by.get(name) or {}).get("FullChargedCapacity"))
        relative = bool(int(number(info.get("Capabilities")) or 0) & BATTERY_CAPACITY_RELATIVE)
        if not relative:  # mWh -> Wh, as node_exporter's energy_full* (sysfs µWh / 1e6)
            if design and design > 0:
                out.append(sample("node_power_supply_energy_full_design", design / 1000.0, power_supply=name))
            if charged and charged > 0:
                out.append(sample("node_power_supply_energy_full", charged / 1000.0, power_supply=name))
        count = number((cycles_by.get(name) or {}).get("CycleCount"))
        if count:  # 0: the firmware does not count
            out.append(sample("node_power_supply_cyclecount", count, power_supply=name))
        if design and design > 0 and charged and charged > 0:
            out.append(sample("commune_battery_capacity_ratio", charged / design, power_supply=name))
    return out


def cpu_samples(percpu: Iterable, system: str) -> List[Sample]:
    """node_cpu_seconds_total / node_cpu_guest_seconds_total from psutil.cpu_times(percpu=True)."""
    out: List[Sample] = []
    for cpu, times in enumerate(percpu):
        for field, value in times._asdict().items():
            if field in _GUEST_MODES:
                out.append(sample("node_cpu_guest_seconds_total", value, cpu=cpu, mode=_GUEST_MODES[field]))
                continue
            mode = _WINDOWS_CPU_MODES.get(field, field) if system == "windows" else field
            out.append(sample("node_cpu_seconds_total", value, cpu=cpu, mode=mode))
    return out


def memory_samples(vm, swap) -> List[Sample]:
    out = [sample("node_memory_MemTotal_bytes", vm.total),
           sample("node_memory_MemAvailable_bytes", vm.available),
           sample("node_memory_MemFree_bytes", vm.free)]
    for field, name in (("buffers", "node_memory_Buffers_bytes"), ("cached", "node_memory_Cached_bytes")):
        if hasattr(vm, field):
            out.append(sample(name, getattr(vm, field)))
    out.append(sample("node_memory_SwapTotal_bytes", swap.total))
    out.append(sample("node_memory_SwapFree_bytes", swap.free))
    return out


def swap_activity_samples(swap, system: str) -> List[Sample]:
    if system in ("windows",):  # psutil reports 0 there: absent, not zero
        return []
    return [sample("commune_host_swap_in_bytes_total", swap.sin),
            sample("commune_host_swap_out_bytes_total", swap.sout)]


class _Patterns:
    def __init__(self, section: Config):
        self.mount = _compile(section.mount_points_exclude)
        self.fstype = _compile(section.fs_types_exclude)
        self.disk = _compile(section.disk_devices_exclude)
        self.net = _compile(section.network_devices_exclude)
        self.remote = section.remote_filesystems


def _compile(pattern: str) -> Optional["re.Pattern"]:
    return re.compile(pattern) if pattern else None


def _excluded(pattern: Optional["re.Pattern"], value: str) -> bool:
    return bool(pattern is not None and pattern.search(value))


def is_remote(part) -> bool:
    opts = part.opts.split(",") if part.opts else []
    return "remote" in opts or bool(REMOTE_FS_TYPES.match(part.fstype))


def select_partitions(parts: Iterable, patterns: _Patterns) -> List[Tuple[str, str, str, bool, bool]]:
    """(device, fstype, mountpoint, readonly, remote) of the partitions to report, duplicates removed."""
    seen = set()
    out = []
    for p in parts:
        # Windows lists drives without media (card readers, empty DVD) with no file system type;
        # optical discs are read-only media (node_exporter leaves out iso9660 for the same reason)
        if not p.fstype or "cdrom" in (p.opts or "").split(",") or _excluded(patterns.mount, p.mountpoint) or _excluded(patterns.fstype, p.fstype):
            continue
        remote = is_remote(p)
        if remote and not patterns.remote:
            continue
        key = (p.device, p.fstype, p.mountpoint)
        if key in seen:
            continue
        seen.add(key)
        out.append(key + ("ro" in (p.opts or "").split(","), remote))
    return out


def filesystem_samples(device: str, fstype: str, mountpoint: str, readonly: bool, usage) -> List[Sample]:
    """node_filesystem_* for one mount; ``usage`` is psutil.disk_usage() or None when it failed."""
    labels = {"device": device, "fstype": fstype, "mountpoint": mountpoint}
    out = [sample("node_filesystem_readonly", int(readonly), **labels),
           sample("node_filesystem_device_error", int(usage is None), **labels)]
    if usage is not None:
        # psutil: free is what non-root users may use (f_bavail); total - used is f_bfree
        out += [sample("node_filesystem_size_bytes", usage.total, **labels),
                sample("node_filesystem_free_bytes", usage.total - usage.used, **labels),
                sample("node_filesystem_avail_bytes", usage.free, **labels)]
    return out


def disk_io_samples(perdisk: Mapping[str, object]) -> List[Sample]:
    out: List[Sample] = []
    for dev, io in perdisk.items():
        out += [sample("node_disk_reads_completed_total", io.read_count, device=dev),
                sample("node_disk_writes_completed_total", io.write_count, device=dev),
                sample("node_disk_read_bytes_total", io.read_bytes, device=dev),
                sample("node_disk_written_bytes_total", io.write_bytes, device=dev),
                sample("node_disk_read_time_seconds_total", io.read_time / 1000.0, device=dev),
                sample("node_disk_write_time_seconds_total", io.write_time / 1000.0, device=dev)]
        busy = getattr(io, "busy_time", None)
        if busy is not None:
            out.append(sample("node_disk_io_time_seconds_total", busy / 1000.0, device=dev))
    return out


_NET_FIELDS = (("bytes_recv", "node_network_receive_bytes_total"), ("bytes_sent", "node_network_transmit_bytes_total"),
               ("packets_recv", "node_network_receive_packets_total"),
               ("packets_sent", "node_network_transmit_packets_total"),
               ("errin", "node_network_receive_errs_total"), ("errout", "node_network_transmit_errs_total"),
               ("dropin", "node_network_receive_drop_total"), ("dropout", "node_network_transmit_drop_total"))


def network_samples(pernic: Mapping[str, object], stats: Mapping[str, object]) -> List[Sample]:
    out: List[Sample] = []
    for dev, io in pernic.items():
        out += [sample(name, getattr(io, field), device=dev) for field, name in _NET_FIELDS]
        st = stats.get(dev)
        if st is not None:
            out.append(sample("node_network_up", int(bool(st.isup)), device=dev))
            if st.speed and st.speed > 0:  # Mbit/s; 0 means unknown
                out.append(sample("node_network_speed_bytes", st.speed * 1e6 / 8, device=dev))
    return out


def _unique_sensor_names(entries: Iterable, prefix: str) -> Iterator[Tuple[str, object]]:
    seen: Dict[str, int] = {}
    for i, entry in enumerate(entries, 1):
        name = (entry.label or "").strip() or f"{prefix}{i}"
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:  # psutil merges chips of the same name (two NVMe disks' "Composite")
            name = f"{name} #{seen[name]}"
        yield name, entry


def sensor_samples(temps: Mapping[str, list], fans: Mapping[str, list]) -> List[Sample]:
    """node_hwmon_* from psutil.sensors_temperatures() / sensors_fans()."""
    out: List[Sample] = []
    for chip, entries in temps.items():
        for sensor, t in _unique_sensor_names(entries, "temp"):
            out.append(sample("node_hwmon_temp_celsius", t.current, chip=chip, sensor=sensor))
            if t.high:
                out.append(sample("node_hwmon_temp_max_celsius", t.high, chip=chip, sensor=sensor))
            if t.critical:
                out.append(sample("node_hwmon_temp_crit_celsius", t.critical, chip=chip, sensor=sensor))
    for chip, entries in fans.items():
        for sensor, f in _unique_sensor_names(entries, "fan"):
            out.append(sample("node_hwmon_fan_rpm", f.current, chip=chip, sensor=sensor))
    return out


def battery_samples(battery) -> List[Sample]:
    """commune_battery_* from psutil.sensors_battery() (None on machines without a battery)."""
    if battery is None:
        return []
    out = [sample("commune_battery_charge_ratio", battery.percent / 100.0)]
    if battery.power_plugged is not None:
        out.append(sample("commune_battery_power_plugged", int(bool(battery.power_plugged))))
    secs = battery.secsleft
    # psutil: -1 unknown, -2 unlimited (plugged in); both mean "no estimate"
    if isinstance(secs, (int, float)) and secs >= 0 and not battery.power_plugged:
        out.append(sample("commune_battery_time_left_seconds", secs))
    return out


# ---------------------------------------------------------------- the input

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
        self.patterns = _Patterns(section)
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
        self._wmi_battery: Tuple[Optional[float], List[Sample]] = (None, [])
        self._wmi_battery_failed = False
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
                   if not _excluded(self.patterns.disk, d)}
        out += disk_io_samples(perdisk)
        out += self.disk_info(perdisk)
        pernic = {d: io for d, io in (ps.net_io_counters(pernic=True) or {}).items()
                  if not _excluded(self.patterns.net, d)}
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
                         for key in ("type",) + _POWER_SUPPLY_MICRO + ("cycle_count",)}
                out += power_supply_samples(name, attrs)
        return out

    def windows_battery_wear(self) -> List[Sample]:
        """Battery wear from root\\wmi, read again every BATTERY_WMI_REFRESH seconds."""
        at, cached = self._wmi_battery
        now = self.clock()
        if at is not None and now - at < BATTERY_WMI_REFRESH:
            return cached
        query = self.wmi_query
        if query is None:
            from agent.inputs.wmi import query
        from agent.inputs.wmi import WmiError

        answers: Dict[str, list] = {}
        try:
            for key, wql in _BATTERY_QUERIES:
                try:
                    answers[key] = query("root\\wmi", wql)
                except WmiError as exc:
                    if key == "cycles" or exc.means_no_instances:  # cycle count is optional
                        answers[key] = []
                    else:
                        raise
        except Exception as exc:  # untestable off Windows: never let it cost the host metrics
            if not self._wmi_battery_failed:
                log.warning("host: cannot read the battery capacity from WMI: %s", exc)
                self._wmi_battery_failed = True
            self._wmi_battery = (now, [])
            return []
        self._wmi_battery_failed = False
        samples = wmi_battery_samples(answers["static"], answers["full"], answers["cycles"])
        self._wmi_battery = (now, samples)
        return samples

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
            return windows_version_name(release, version, edition), _windows_cpu_model()
        if self.system == "darwin":
            return f"macOS {platform.mac_ver()[0]}", platform.processor()
        return platform.version(), platform.processor()


# Windows storage queries (winioctl.h): IOCTL_STORAGE_QUERY_PROPERTY with a STORAGE_PROPERTY_QUERY
IOCTL_STORAGE_QUERY_PROPERTY = 0x2D1400
STORAGE_DEVICE_PROPERTY = 0            # -> STORAGE_DEVICE_DESCRIPTOR (vendor, product)
STORAGE_DEVICE_SEEK_PENALTY_PROPERTY = 7  # -> DEVICE_SEEK_PENALTY_DESCRIPTOR (Windows 8 and later)


def storage_property_query(property_id: int) -> bytes:
    """STORAGE_PROPERTY_QUERY {DWORD PropertyId; DWORD QueryType (0: standard); BYTE Additional[1]} (12 bytes)."""
    return struct.pack("<II4x", property_id, 0)


def parse_seek_penalty(buf: bytes) -> str:
    """DEVICE_SEEK_PENALTY_DESCRIPTOR {DWORD Version; DWORD Size; BOOLEAN IncursSeekPenalty} -> hdd/ssd."""
    if len(buf) < 9:
        return "unknown"
    return "hdd" if buf[8] else "ssd"


def parse_storage_device_descriptor(buf: bytes) -> str:
    """The model (vendor and product id) from a STORAGE_DEVICE_DESCRIPTOR.

    Layout: DWORD Version, DWORD Size, BYTE DeviceType, BYTE DeviceTypeModifier, BOOLEAN
    RemovableMedia, BOOLEAN CommandQueueing, DWORD VendorIdOffset, DWORD ProductIdOffset, ...;
    each offset points at a NUL-terminated ASCII string in the buffer (0: none).
    """
    if len(buf) < 20:
        return ""

    def string_at(offset: int) -> str:
        if not 0 < offset < len(buf):
            return ""
        end = buf.find(b"\0", offset)
        return buf[offset:end if end >= 0 else len(buf)].decode("ascii", "replace").strip()

    vendor_offset, product_offset = struct.unpack_from("<II", buf, 12)
    vendor, product = string_at(vendor_offset), string_at(product_offset)
    if vendor and not product.startswith(vendor):
        return f"{vendor} {product}".strip()
    return product


def windows_disk_query(device: str) -> Tuple[str, str]:
    """(hdd/ssd/unknown, model) of ``PhysicalDriveN`` with DeviceIoControl (no admin rights needed)."""
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    create = kernel32.CreateFileW
    create.argtypes = [wintypes.LPCWSTR, wintypes.DWORD, wintypes.DWORD, ctypes.c_void_p, wintypes.DWORD,
                       wintypes.DWORD, wintypes.HANDLE]
    create.restype = wintypes.HANDLE
    ioctl = kernel32.DeviceIoControl
    ioctl.argtypes = [wintypes.HANDLE, wintypes.DWORD, ctypes.c_void_p, wintypes.DWORD, ctypes.c_void_p,
                      wintypes.DWORD, ctypes.POINTER(wintypes.DWORD), ctypes.c_void_p]
    ioctl.restype = wintypes.BOOL
    kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
    # access 0: query only; FILE_SHARE_READ | FILE_SHARE_WRITE; OPEN_EXISTING
    handle = create("\\\\.\\" + device, 0, 3, None, 3, 0, None)
    if handle is None or handle == ctypes.c_void_p(-1).value:
        raise ctypes.WinError(ctypes.get_last_error())
    try:
        def query(property_id: int, size: int) -> bytes:
            query_bytes = storage_property_query(property_id)
            inbuf = ctypes.create_string_buffer(query_bytes, len(query_bytes))
            out = ctypes.create_string_buffer(size)
            returned = wintypes.DWORD(0)
            if not ioctl(handle, IOCTL_STORAGE_QUERY_PROPERTY, inbuf, len(query_bytes), out, size,
                         ctypes.byref(returned), None):
                raise ctypes.WinError(ctypes.get_last_error())
            return out.raw[:returned.value]

        model = parse_storage_device_descriptor(query(STORAGE_DEVICE_PROPERTY, 1024))
        try:
            kind = parse_seek_penalty(query(STORAGE_DEVICE_SEEK_PENALTY_PROPERTY, 12))
        except OSError:  # USB bridges and some RAID drivers do not answer this query
            kind = "unknown"
        return kind, model
    finally:
        kernel32.CloseHandle(handle)


def _windows_cpu_model() -> str:
    """ProcessorNameString from the registry (``platform.processor()`` only gives the family)."""
    try:
        import winreg

        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"HARDWARE\DESCRIPTION\System\CentralProcessor\0") as key:
            return str(winreg.QueryValueEx(key, "ProcessorNameString")[0]).strip()
    except (ImportError, OSError):  # ImportError: not on Windows
        return platform.processor()


def build(section: Config, config) -> list:
    state_dir = getattr(getattr(config, "agent", None), "state_dir", "")
    boot_log = WindowsBootLog(state_dir) if state_dir and sys.platform == "win32" else None
    return [HostInput(section, boots=BootTracker(state_dir) if state_dir else None, boot_log=boot_log)]
