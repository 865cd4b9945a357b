"""Host health from psutil's answers, under node_exporter's names: pure functions of what psutil
returned (agent/inputs/host.py calls psutil and hands the results here), and the include/exclude
patterns of the ``host`` section."""
from __future__ import annotations

import re
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from contract.samples import Sample, sample

# node_exporter 1.x defaults (--collector.filesystem.*-exclude, --collector.diskstats.device-exclude)
NODE_MOUNT_POINTS_EXCLUDE = r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)"
NODE_FS_TYPES_EXCLUDE = (r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs"
                         r"|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs"
                         r"|squashfs|sysfs|tracefs)$")
NODE_DISK_DEVICES_EXCLUDE = r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$"
# File systems on another machine: a dead server can hang statfs, so they are off by default.
REMOTE_FS_TYPES = re.compile(r"^(nfs4?|cifs|smb3?|smbfs|ncpfs|afs|9p|ceph|glusterfs|fuse\.sshfs|davfs|fuse\.rclone)$")

# psutil's Windows CPU time fields -> node_exporter modes
_WINDOWS_CPU_MODES = {"user": "user", "system": "system", "idle": "idle", "interrupt": "irq", "dpc": "softirq"}
_GUEST_MODES = {"guest": "user", "guest_nice": "nice"}


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


class Patterns:
    """The compiled exclude patterns of a ``host`` section (agent/inputs/host.py's Config)."""

    def __init__(self, section):
        self.mount = _compile(section.mount_points_exclude)
        self.fstype = _compile(section.fs_types_exclude)
        self.disk = _compile(section.disk_devices_exclude)
        self.net = _compile(section.network_devices_exclude)
        self.remote = section.remote_filesystems


def _compile(pattern: str) -> Optional["re.Pattern"]:
    return re.compile(pattern) if pattern else None


def excluded(pattern: Optional["re.Pattern"], value: str) -> bool:
    return bool(pattern is not None and pattern.search(value))


def is_remote(part) -> bool:
    opts = part.opts.split(",") if part.opts else []
    return "remote" in opts or bool(REMOTE_FS_TYPES.match(part.fstype))


def select_partitions(parts: Iterable, patterns: Patterns) -> List[Tuple[str, str, str, bool, bool]]:
    """(device, fstype, mountpoint, readonly, remote) of the partitions to report, duplicates removed."""
    seen = set()
    out = []
    for p in parts:
        # Windows lists drives without media (card readers, empty DVD) with no file system type;
        # optical discs are read-only media (node_exporter leaves out iso9660 for the same reason)
        if not p.fstype or "cdrom" in (p.opts or "").split(",") or excluded(patterns.mount, p.mountpoint) or excluded(patterns.fstype, p.fstype):
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
