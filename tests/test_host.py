"""The host input: pure parsers on literal text, collections of recorded psutil structures (Linux
laptop, Windows desktop), the real psutil of this machine, and the real agent end to end."""
from __future__ import annotations

import logging
import re
import subprocess
import time
import threading
from collections import namedtuple
from pathlib import Path

import psutil
import pytest
import yaml

from contract.catalog import catalog
from agent.inputs import host
from agent.inputs import host_windows
from agent.inputs.host import Config, HostInput
from agent.inputs.host_linux import parse_cpuinfo_model, parse_os_release, parse_rotational, power_supply_samples
from agent.inputs.host_windows import windows_version_name
from agent.inputs.wmi import WmiError
from contract.schema import ConfigErrors, load_model
from tests import support
from tests.wmi_recordings import WBEM_E_ACCESS_DENIED, WBEM_E_NOT_SUPPORTED, RecordedWmi, recording

# ---------------------------------------------------------------- psutil structures, as psutil returns them

LinuxCpu = namedtuple("scputimes", "user nice system idle iowait irq softirq steal guest guest_nice")
WinCpu = namedtuple("scputimes", "user system idle interrupt dpc")
LinuxMem = namedtuple("svmem", "total available percent used free active inactive buffers cached shared slab")
WinMem = namedtuple("svmem", "total available percent used free")
Swap = namedtuple("sswap", "total used free percent sin sout")
Part = namedtuple("sdiskpart", "device mountpoint fstype opts")
Usage = namedtuple("sdiskusage", "total used free percent")
LinuxDiskIO = namedtuple("sdiskio", "read_count write_count read_bytes write_bytes read_time write_time "
                                    "read_merged_count write_merged_count busy_time")
WinDiskIO = namedtuple("sdiskio", "read_count write_count read_bytes write_bytes read_time write_time")
NetIO = namedtuple("snetio", "bytes_sent bytes_recv packets_sent packets_recv errin errout dropin dropout")
NicStats = namedtuple("snicstats", "isup duplex speed mtu flags")
Temp = namedtuple("shwtemp", "label current high critical")
Fan = namedtuple("sfan", "label current")
Battery = namedtuple("sbattery", "percent secsleft power_plugged")


class FakePsutil:
    """Answers like psutil with structures recorded on real machines; counts the calls."""

    def __init__(self, **answers):
        self.answers = answers
        self.calls = {}
        for name in ("sensors_temperatures", "sensors_fans", "sensors_battery", "getloadavg"):
            if name not in answers:  # psutil has no such function on that OS
                setattr(self, name, None)
                delattr(self, name)

    def __getattr__(self, name):
        if name not in self.answers:
            raise AttributeError(name)

        def call(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            value = self.answers[name]
            return value(*args, **kwargs) if callable(value) else value

        return call


def linux_laptop(**over):
    usage = {"/": Usage(242_203_533_312, 98_123_456_512, 131_717_382_144, 42.7),
             "/boot/efi": Usage(535_805_952, 6_311_936, 529_494_016, 1.2),
             "/run": Usage(1_640_058_880, 2_179_072, 1_637_879_808, 0.1),
             "/home": Usage(730_000_000_000, 500_000_000_000, 193_000_000_000, 72.1)}

    def disk_usage(path):
        if path == "/media/usb":
            raise OSError(5, "Input/output error")
        return usage[path]

    answers = dict(
        cpu_times=[LinuxCpu(1520.5, 3.1, 610.2, 98012.4, 120.3, 0.0, 14.2, 0.0, 0.0, 0.0),
                   LinuxCpu(1480.1, 2.9, 590.8, 98101.7, 98.6, 0.0, 9.8, 0.0, 12.5, 0.0)],
        cpu_count=lambda logical=True: 4 if logical else 2,
        getloadavg=(0.52, 0.61, 0.44),
        virtual_memory=LinuxMem(8_233_000_960, 3_101_000_704, 62.3, 4_600_000_000, 1_200_000_000, 3_000_000_000,
                                2_500_000_000, 210_000_000, 2_100_000_000, 300_000_000, 250_000_000),
        swap_memory=Swap(2_147_479_552, 536_870_912, 1_610_608_640, 25.0, 1_234_567_168, 2_345_678_848),
        disk_partitions=[
            Part("/dev/sda2", "/", "ext4", "rw,relatime,errors=remount-ro"),
            Part("proc", "/proc", "proc", "rw,nosuid,nodev,noexec,relatime"),
            Part("sysfs", "/sys", "sysfs", "rw,nosuid,nodev,noexec,relatime"),
            Part("tmpfs", "/run", "tmpfs", "rw,nosuid,nodev,noexec,relatime,size=1601620k,mode=755"),
            Part("cgroup2", "/sys/fs/cgroup", "cgroup2", "rw,nosuid,nodev,noexec,relatime"),
            Part("/dev/sda1", "/boot/efi", "vfat", "rw,relatime,fmask=0077,dmask=0077"),
            Part("/dev/sdb1", "/home", "ext4", "ro,relatime"),
            Part("/dev/sdb1", "/home", "ext4", "ro,relatime"),  # bind-mounted twice: one series
            Part("/dev/loop3", "/snap/core22/1380", "squashfs", "ro,nodev,relatime"),
            Part("server:/srv/share", "/mnt/share", "nfs4", "rw,relatime,vers=4.2"),
            Part("/dev/sdc1", "/media/usb", "vfat", "rw,nosuid,nodev"),
        ],
        disk_usage=disk_usage,
        disk_io_counters=lambda perdisk=False: {
            "sda": LinuxDiskIO(152_301, 98_210, 4_123_456_512, 2_987_654_144, 81_230, 190_442, 20_112, 80_331, 101_774),
            "sda1": LinuxDiskIO(301, 2, 3_145_728, 1_024, 120, 3, 0, 0, 110),
            "sdb": LinuxDiskIO(4_001, 12, 80_000_000, 49_152, 9_000, 40, 10, 1, 8_700),
            "loop3": LinuxDiskIO(60, 0, 1_228_800, 0, 10, 0, 0, 0, 12),
            "nvme0n1": LinuxDiskIO(10, 20, 40_960, 81_920, 1, 2, 0, 0, 3),
            "nvme0n1p1": LinuxDiskIO(5, 5, 20_480, 20_480, 1, 1, 0, 0, 1),
        },
        net_io_counters=lambda pernic=False: {
            "lo": NetIO(918_221, 918_221, 7_012, 7_012, 0, 0, 0, 0),
            "enp3s0": NetIO(12_345_678, 987_654_321, 120_001, 700_123, 3, 0, 17, 0),
            "wlp2s0": NetIO(0, 0, 0, 0, 0, 0, 0, 0),
        },
        net_if_stats={"lo": NicStats(True, 0, 0, 65536, "up,loopback,running"),
                      "enp3s0": NicStats(True, 2, 100, 1500, "up,broadcast,running,multicast"),
                      "wlp2s0": NicStats(False, 0, 0, 1500, "broadcast,multicast")},
        boot_time=1_732_580_000.0,
        sensors_temperatures={
            "acpitz": [Temp("", 41.0, None, 98.0), Temp("", 38.5, None, 98.0)],
            "coretemp": [Temp("Package id 0", 47.0, 84.0, 100.0), Temp("Core 0", 45.0, 84.0, 100.0),
                         Temp("Core 1", 46.0, 84.0, 100.0)],
            "nvme": [Temp("Composite", 35.85, 84.85, 84.85), Temp("Composite", 37.85, 81.85, 85.85)],
        },
        sensors_fans={"thinkpad": [Fan("", 2890)]},
        sensors_battery=Battery(63.2, 11_520, False),
    )
    answers.update(over)
    return FakePsutil(**answers)


LINUX_FILES = {
    "/proc/cpuinfo": "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 142\n"
                     "model name\t: Intel(R) Core(TM) i5-7200U CPU @ 2.50GHz\nstepping\t: 9\n\n"
                     "processor\t: 1\nmodel name\t: Intel(R) Core(TM) i5-7200U CPU @ 2.50GHz\n",
    "/etc/os-release": 'PRETTY_NAME="Ubuntu 22.04.4 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\n',
    "/sys/block/sda/queue/rotational": "1\n",
    "/sys/block/sda/device/model": "WDC WD5000LPCX-2\n",
    "/sys/block/sdb/queue/rotational": "0\n",
    "/sys/block/sdb/device/model": "Samsung SSD 860 \n",
    "/sys/block/nvme0n1/queue/rotational": "0\n",
    "/sys/block/nvme0n1/device/model": "SAMSUNG MZVLB256HBHQ-000L7              \n",
    "/sys/class/power_supply/AC/type": "Mains\n",
    "/sys/class/power_supply/BAT0/type": "Battery\n",
    "/sys/class/power_supply/BAT0/energy_full_design": "57020000\n",
    "/sys/class/power_supply/BAT0/energy_full": "31480000\n",
    "/sys/class/power_supply/BAT0/cycle_count": "412\n",
}


class FakeFiles:
    def __init__(self, files):
        self.files = dict(files)
        self.reads = []

    def read(self, path):
        self.reads.append(path)
        return self.files.get(path)

    def listdir(self, path):
        prefix = path.rstrip("/") + "/"
        return sorted({p[len(prefix):].split("/")[0] for p in self.files if p.startswith(prefix)})


def by_name(samples):
    out = {}
    for s in samples:
        out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(samples, name, **labels):
    matches = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, f"{name}{labels}: {len(matches)} samples"
    return matches[0]


def check_against_catalog(samples):
    """Every sample is catalogued under this input with exactly the catalogued labels, no duplicates."""
    cat = catalog()
    seen = set()
    for s in samples:
        assert s.name in cat, f"{s.name} is not in contract/catalog.yaml"
        assert set(s.labels) == set(cat[s.name].labels), f"{s.name}: labels {sorted(s.labels)}"
        key = (s.name, tuple(sorted(s.labels.items())))
        assert key not in seen, f"duplicate series {key}"
        seen.add(key)


# ---------------------------------------------------------------- pure parsers

def test_cpu_model_from_cpuinfo_x86_and_arm():
    assert parse_cpuinfo_model(LINUX_FILES["/proc/cpuinfo"]) == "Intel(R) Core(TM) i5-7200U CPU @ 2.50GHz"
    raspberry = ("processor\t: 0\nBogoMIPS\t: 108.00\nCPU implementer\t: 0x41\n\nHardware\t: BCM2835\n"
                 "Revision\t: c03111\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n")
    assert parse_cpuinfo_model(raspberry) == "Raspberry Pi 4 Model B Rev 1.1"
    assert parse_cpuinfo_model("processor\t: 0\n") == ""
    assert parse_cpuinfo_model(None) == ""


def test_os_release():
    assert parse_os_release(LINUX_FILES["/etc/os-release"]) == "Ubuntu 22.04.4 LTS"
    assert parse_os_release("NAME='Debian GNU/Linux'\nVERSION=\"12 (bookworm)\"\n# comment\n") == \
        "Debian GNU/Linux 12 (bookworm)"
    assert parse_os_release("") == ""


def test_windows_version_names():
    assert windows_version_name("10", "10.0.19045", "Professional") == "Windows 10 Professional 10.0.19045"
    assert windows_version_name("10", "10.0.22631", "Core") == "Windows 11 Core 10.0.22631"
    assert windows_version_name("7", "6.1.7601", "") == "Windows 7 6.1.7601"


def test_rotational():
    assert [parse_rotational(t) for t in ("1\n", "0\n", "", None, "x")] == ["hdd", "ssd", "unknown", "unknown", "unknown"]


def test_power_supply_energy_and_charge_forms():
    energy = power_supply_samples("BAT0", {"type": "Battery\n", "energy_full_design": "57020000\n",
                                           "energy_full": "31480000\n", "cycle_count": "412\n"})
    assert value(energy, "node_power_supply_energy_full_design", power_supply="BAT0") == pytest.approx(57.02)
    assert value(energy, "node_power_supply_energy_full", power_supply="BAT0") == pytest.approx(31.48)
    assert value(energy, "node_power_supply_cyclecount", power_supply="BAT0") == 412
    assert value(energy, "commune_battery_capacity_ratio", power_supply="BAT0") == pytest.approx(31.48 / 57.02)
    charge = power_supply_samples("BAT1", {"type": "Battery", "charge_full_design": "4400000",
                                           "charge_full": "3960000", "cycle_count": None})
    assert value(charge, "node_power_supply_charge_full_design", power_supply="BAT1") == pytest.approx(4.4)
    assert value(charge, "commune_battery_capacity_ratio", power_supply="BAT1") == pytest.approx(0.9)
    assert power_supply_samples("AC", {"type": "Mains\n"}) == []
    # a battery whose firmware reports no design capacity: raw values only, no ratio
    partial = power_supply_samples("BAT0", {"type": "Battery", "energy_full": "31480000", "energy_full_design": "0"})
    assert "commune_battery_capacity_ratio" not in by_name(partial)


# ---------------------------------------------------------------- recorded machines

def collect_linux(ps=None, files=None, **cfg):
    files = files or FakeFiles(LINUX_FILES)
    inp = HostInput(load_model(Config, cfg), ps=ps or linux_laptop(), system="linux",
                    read=files.read, listdir=files.listdir)
    return inp, inp.collect()


def test_linux_laptop_recorded():
    _, samples = collect_linux()
    check_against_catalog(samples)
    names = by_name(samples)
    assert value(samples, "node_cpu_seconds_total", cpu="1", mode="iowait") == 98.6
    assert value(samples, "node_cpu_guest_seconds_total", cpu="1", mode="user") == 12.5
    assert {dict(k)["mode"] for k in names["node_cpu_seconds_total"]} == {
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}
    assert (value(samples, "node_load1"), value(samples, "node_load15")) == (0.52, 0.44)
    assert value(samples, "node_memory_MemTotal_bytes") == 8_233_000_960
    assert value(samples, "node_memory_MemAvailable_bytes") == 3_101_000_704
    assert value(samples, "node_memory_Cached_bytes") == 2_100_000_000
    assert value(samples, "node_memory_SwapFree_bytes") == 1_610_608_640
    assert value(samples, "commune_host_swap_out_bytes_total") == 2_345_678_848
    assert value(samples, "commune_host_cpus") == 4
    assert value(samples, "commune_host_cpu_cores") == 2
    assert value(samples, "node_boot_time_seconds") == 1_732_580_000.0


def test_linux_filesystems_like_node_exporter():
    _, samples = collect_linux()
    mounts = {dict(k)["mountpoint"] for k in by_name(samples)["node_filesystem_readonly"]}
    # pseudo file systems, /proc, /sys, squashfs snaps and the NFS share are left out; tmpfs /run stays
    assert mounts == {"/", "/run", "/boot/efi", "/home", "/media/usb"}
    root = dict(device="/dev/sda2", fstype="ext4", mountpoint="/")
    assert value(samples, "node_filesystem_size_bytes", **root) == 242_203_533_312
    assert value(samples, "node_filesystem_avail_bytes", **root) == 131_717_382_144
    assert value(samples, "node_filesystem_free_bytes", **root) == 242_203_533_312 - 98_123_456_512
    assert value(samples, "node_filesystem_readonly", **root) == 0
    assert value(samples, "node_filesystem_readonly", mountpoint="/home") == 1
    # a mount whose size cannot be read is a sample, not a failed collection
    assert value(samples, "node_filesystem_device_error", mountpoint="/media/usb") == 1
    assert value(samples, "node_filesystem_device_error", mountpoint="/") == 0
    assert not [s for s in samples if s.name == "node_filesystem_size_bytes" and s.labels["mountpoint"] == "/media/usb"]


def test_remote_filesystems_when_asked_and_custom_excludes():
    ps = linux_laptop(disk_usage=lambda path: Usage(10, 4, 5, 40.0))
    _, samples = collect_linux(ps=ps, remote_filesystems=True, mount_points_exclude="^/(boot|proc|sys)($|/)",
                               fs_types_exclude="^(proc|sysfs|cgroup2|squashfs)$")
    mounts = {dict(k)["mountpoint"] for k in by_name(samples)["node_filesystem_size_bytes"]}
    assert mounts == {"/", "/run", "/home", "/mnt/share", "/media/usb"}


def test_hung_network_mount_is_a_device_error_and_not_asked_again():
    release = threading.Event()
    calls = []

    def disk_usage(path):
        calls.append(path)
        if path == "/mnt/share":
            release.wait(60)  # an NFS server that stopped answering
        return Usage(10, 4, 5, 40.0)

    files = FakeFiles(LINUX_FILES)
    inp = HostInput(load_model(Config, {"remote_filesystems": True, "timeout": "200ms"}),
                    ps=linux_laptop(disk_usage=disk_usage), system="linux", read=files.read, listdir=files.listdir)
    try:
        for _ in range(2):
            samples = inp.collect()
            assert value(samples, "node_filesystem_device_error", mountpoint="/mnt/share") == 1
            assert value(samples, "node_filesystem_device_error", mountpoint="/") == 0
        assert calls.count("/mnt/share") == 1  # the stuck mount was not asked again
    finally:
        release.set()
    support.wait_until(lambda: not inp._stuck_mounts, 10, what="the hung query to return")
    samples = inp.collect()
    assert value(samples, "node_filesystem_device_error", mountpoint="/mnt/share") == 0
    assert value(samples, "node_filesystem_size_bytes", mountpoint="/mnt/share") == 10


def test_linux_disks_partitions_and_types():
    _, samples = collect_linux()
    names = by_name(samples)
    assert {dict(k)["device"] for k in names["node_disk_read_bytes_total"]} == {"sda", "sdb", "nvme0n1"}
    assert value(samples, "node_disk_read_time_seconds_total", device="sda") == pytest.approx(81.23)
    assert value(samples, "node_disk_io_time_seconds_total", device="sda") == pytest.approx(101.774)
    assert value(samples, "node_disk_writes_completed_total", device="sda") == 98_210
    info = {dict(k)["device"]: dict(k) for k in names["commune_disk_info"]}
    assert info["sda"]["type"] == "hdd" and info["sda"]["model"] == "WDC WD5000LPCX-2"
    assert info["sdb"]["type"] == "ssd" and info["nvme0n1"]["model"] == "SAMSUNG MZVLB256HBHQ-000L7"


def test_linux_network_sensors_battery():
    _, samples = collect_linux()
    assert value(samples, "node_network_receive_bytes_total", device="enp3s0") == 987_654_321
    assert value(samples, "node_network_receive_errs_total", device="enp3s0") == 3
    assert value(samples, "node_network_receive_drop_total", device="enp3s0") == 17
    assert value(samples, "node_network_up", device="wlp2s0") == 0
    assert value(samples, "node_network_speed_bytes", device="enp3s0") == 12_500_000
    assert not [s for s in samples if s.name == "node_network_speed_bytes" and s.labels["device"] == "lo"]
    assert value(samples, "node_hwmon_temp_celsius", chip="coretemp", sensor="Core 1") == 46.0
    assert value(samples, "node_hwmon_temp_crit_celsius", chip="coretemp", sensor="Package id 0") == 100.0
    assert value(samples, "node_hwmon_temp_celsius", chip="acpitz", sensor="temp2") == 38.5
    assert value(samples, "node_hwmon_temp_celsius", chip="nvme", sensor="Composite #2") == 37.85
    assert not [s for s in samples if s.name == "node_hwmon_temp_max_celsius" and s.labels["chip"] == "acpitz"]
    assert value(samples, "node_hwmon_fan_rpm", chip="thinkpad", sensor="fan1") == 2890
    assert value(samples, "commune_battery_charge_ratio") == pytest.approx(0.632)
    assert value(samples, "commune_battery_power_plugged") == 0
    assert value(samples, "commune_battery_time_left_seconds") == 11_520
    assert value(samples, "commune_battery_capacity_ratio", power_supply="BAT0") == pytest.approx(0.552, abs=1e-3)
    assert value(samples, "node_power_supply_energy_full_design", power_supply="BAT0") == pytest.approx(57.02)


def test_host_info_is_read_once():
    files = FakeFiles(LINUX_FILES)
    inp, samples = collect_linux(files=files)
    info = [s for s in samples if s.name == "commune_host_info"]
    assert len(info) == 1
    assert info[0].labels["cpu_model"] == "Intel(R) Core(TM) i5-7200U CPU @ 2.50GHz"
    assert info[0].labels["os_version"] == "Ubuntu 22.04.4 LTS"
    assert info[0].labels["os"] == "linux"
    assert (info[0].labels["cpu_cores"], info[0].labels["cpu_count"]) == ("2", "4")
    assert info[0].labels["memory_bytes"] == "8233000960"
    inp.collect()
    inp.collect()
    assert files.reads.count("/proc/cpuinfo") == 1
    assert inp.ps.calls["cpu_count"] == 2  # logical and physical, once


def test_disk_types_read_again_only_when_disks_change():
    files = FakeFiles(LINUX_FILES)
    disks = {"sda": LinuxDiskIO(1, 1, 512, 512, 1, 1, 0, 0, 1)}
    inp, _ = collect_linux(ps=linux_laptop(disk_io_counters=lambda perdisk=False: dict(disks)), files=files)
    inp.collect()
    assert files.reads.count("/sys/block/sda/queue/rotational") == 1
    disks["sdb"] = LinuxDiskIO(1, 1, 512, 512, 1, 1, 0, 0, 1)  # a USB disk plugged in
    samples = inp.collect()
    assert files.reads.count("/sys/block/sdb/queue/rotational") == 1
    assert value(samples, "commune_disk_info", device="sdb", type="ssd") == 1


def test_unreadable_mount_is_logged_once(caplog):
    files = FakeFiles(LINUX_FILES)
    inp = HostInput(Config(), ps=linux_laptop(), system="linux", read=files.read, listdir=files.listdir)
    with caplog.at_level(logging.WARNING, logger="agent.inputs.host"):
        inp.collect()
        inp.collect()
    messages = [r.getMessage() for r in caplog.records if "/media/usb" in r.getMessage()]
    assert messages == ["host: cannot read the size of /media/usb (/dev/sdc1): [Errno 5] Input/output error"]


def windows_desktop(**over):
    answers = dict(
        cpu_times=[WinCpu(20412.3, 8311.9, 402118.2, 611.4, 301.2), WinCpu(19020.1, 7012.5, 404811.0, 402.2, 210.7)],
        cpu_count=lambda logical=True: 2 if logical else 2,
        virtual_memory=WinMem(4_186_263_552, 1_102_045_184, 73.7, 3_084_218_368, 1_102_045_184),
        swap_memory=Swap(1_207_959_552, 603_979_776, 603_979_776, 50.0, 0, 0),
        # psutil on Windows: all=True adds network drives (and floppies, RAM disks)
        disk_partitions=lambda all=False: [
            Part("C:\\", "C:\\", "NTFS", "rw,fixed"), Part("D:\\", "D:\\", "", "cdrom"),
            Part("F:\\", "F:\\", "CDFS", "ro,cdrom"), Part("E:\\", "E:\\", "FAT32", "rw,removable"),
        ] + ([Part("Z:\\", "Z:\\", "NTFS", "rw,remote")] if all else []),
        disk_usage=lambda path: {"C:\\": Usage(255_369_752_576, 201_411_919_872, 53_957_832_704, 78.9),
                                 "E:\\": Usage(15_548_284_928, 2_097_152, 15_546_187_776, 0.0)}[path],
        disk_io_counters=lambda perdisk=False: {
            "PhysicalDrive0": WinDiskIO(812_004, 402_331, 21_474_836_480, 9_663_676_416, 3_901_224, 1_201_772)},
        net_io_counters=lambda pernic=False: {
            "Ethernet": NetIO(1_234_567, 89_012_345, 10_001, 80_002, 0, 0, 4, 0),
            "Loopback Pseudo-Interface 1": NetIO(0, 0, 0, 0, 0, 0, 0, 0)},
        net_if_stats={"Ethernet": NicStats(True, 2, 1000, 1500, ""),
                      "Loopback Pseudo-Interface 1": NicStats(True, 2, 1073, 1500, "")},
        boot_time=1_732_600_000.0,
        sensors_battery=None,
    )
    answers.update(over)
    return FakePsutil(**answers)


def test_windows_storage_descriptors():
    query = host_windows.storage_property_query(7)
    assert query == b"\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    # DEVICE_SEEK_PENALTY_DESCRIPTOR as Windows 10 returns it for a laptop HDD and an SSD
    assert host_windows.parse_seek_penalty(b"\x0c\x00\x00\x00\x0c\x00\x00\x00\x01\x00\x00\x00") == "hdd"
    assert host_windows.parse_seek_penalty(b"\x0c\x00\x00\x00\x0c\x00\x00\x00\x00\x00\x00\x00") == "ssd"
    assert host_windows.parse_seek_penalty(b"") == "unknown"
    # STORAGE_DEVICE_DESCRIPTOR of a SATA disk: no vendor id (offset 0), product id at 0x34
    header = (b"\x01\x00\x00\x00\x5a\x00\x00\x00\x00\x00\x00\x01" b"\x00\x00\x00\x00\x34\x00\x00\x00"
              b"\x49\x00\x00\x00\x4e\x00\x00\x00\x0b\x00\x00\x00\x00\x00\x00\x00")
    body = header + b"\x00" * (0x34 - len(header)) + b"ST1000LM035-1RK172\x00\x00\x00" + b"SDM1\x00" + b"WL1X2ABC\x00"
    assert host_windows.parse_storage_device_descriptor(body) == "ST1000LM035-1RK172"
    # a USB stick: vendor "SanDisk ", product "Ultra           "
    usb = (b"\x01\x00\x00\x00\x40\x00\x00\x00\x00\x00\x01\x00" b"\x24\x00\x00\x00\x2d\x00\x00\x00"
           + b"\x00" * 16 + b"SanDisk \x00Ultra           \x00")
    assert host_windows.parse_storage_device_descriptor(usb) == "SanDisk Ultra"
    assert host_windows.parse_storage_device_descriptor(b"\x01\x00") == ""


def test_windows_disk_type_query_is_injected_and_failures_are_unknown(caplog):
    answers = {"PhysicalDrive0": ("ssd", "Samsung SSD 870 EVO 500GB")}

    def query(dev):
        if dev not in answers:
            raise OSError(1, "Incorrect function")
        return answers[dev]

    two = lambda perdisk=False: {d: WinDiskIO(1, 1, 512, 512, 1, 1) for d in ("PhysicalDrive0", "PhysicalDrive1")}
    inp = HostInput(Config(), ps=windows_desktop(disk_io_counters=two), system="windows",
                    read=FakeFiles({}).read, listdir=FakeFiles({}).listdir, windows_disk=query)
    with caplog.at_level(logging.WARNING, logger="agent.inputs.host"):
        samples = inp.collect()
        inp.collect()
    info = {s.labels["device"]: (s.labels["type"], s.labels["model"]) for s in samples if s.name == "commune_disk_info"}
    assert info == {"PhysicalDrive0": ("ssd", "Samsung SSD 870 EVO 500GB"), "PhysicalDrive1": ("unknown", "")}
    assert [r.getMessage() for r in caplog.records] == [
        "host: cannot query the type of disk PhysicalDrive1: [Errno 1] Incorrect function"]


def test_windows_desktop_recorded():
    inp = HostInput(load_model(Config, {"network_devices_exclude": "^Loopback Pseudo-Interface"}),
                    ps=windows_desktop(), system="windows", read=FakeFiles({}).read, listdir=FakeFiles({}).listdir,
                    windows_disk=lambda dev: ("hdd", "ST1000DM010-2EP102"))
    samples = inp.collect()
    check_against_catalog(samples)
    names = by_name(samples)
    assert {dict(k)["mode"] for k in names["node_cpu_seconds_total"]} == {"user", "system", "idle", "irq", "softirq"}
    assert value(samples, "node_cpu_seconds_total", cpu="0", mode="softirq") == 301.2
    for absent in ("node_load1", "node_disk_io_time_seconds_total", "commune_host_swap_in_bytes_total",
                   "node_memory_Cached_bytes", "node_cpu_guest_seconds_total", "commune_battery_charge_ratio",
                   "node_hwmon_temp_celsius"):
        assert absent not in names, absent
    assert {dict(k)["mountpoint"] for k in names["node_filesystem_size_bytes"]} == {"C:\\", "E:\\"}
    assert value(samples, "node_filesystem_avail_bytes", mountpoint="C:\\") == 53_957_832_704
    assert value(samples, "node_disk_read_time_seconds_total", device="PhysicalDrive0") == pytest.approx(3901.224)
    assert value(samples, "commune_disk_info", device="PhysicalDrive0") == 1
    assert [s.labels["type"] for s in samples if s.name == "commune_disk_info"] == ["hdd"]
    assert set(dict(k)["device"] for k in names["node_network_up"]) == {"Ethernet"}
    assert value(samples, "node_network_speed_bytes", device="Ethernet") == 125_000_000
    assert value(samples, "node_memory_SwapTotal_bytes") == 1_207_959_552


def test_windows_battery_wear_from_wmi_recordings():
    s = host_windows.wmi_battery_samples(recording("BatteryStaticData"), recording("BatteryFullChargedCapacity"),
                                 recording("BatteryCycleCount"))
    check_against_catalog(s)
    battery = "ACPI\\PNP0C0A\\1_0"
    assert value(s, "commune_battery_capacity_ratio", power_supply=battery) == pytest.approx(31860 / 45000)
    assert value(s, "node_power_supply_energy_full_design", power_supply=battery) == 45.0  # mWh -> Wh
    assert value(s, "node_power_supply_energy_full", power_supply=battery) == pytest.approx(31.86)
    assert value(s, "node_power_supply_cyclecount", power_supply=battery) == 412
    # relative capacities (Capabilities bit 0x40000000): the ratio holds, watt-hours do not
    relative = [dict(i, Capabilities=0x40000000 | 0x80000000) for i in recording("BatteryStaticData")]
    s = host_windows.wmi_battery_samples(relative, recording("BatteryFullChargedCapacity"), [])
    assert sorted(x.name for x in s) == ["commune_battery_capacity_ratio"]
    # a battery with no full-charge instance of the same InstanceName, or a design capacity of 0
    assert host_windows.wmi_battery_samples(recording("BatteryStaticData"), [dict(InstanceName="ACPI\\PNP0C0A\\2_0",
                                                                         FullChargedCapacity=40000)]) == [
        host_windows.sample("node_power_supply_energy_full_design", 45.0, power_supply=battery)]
    assert host_windows.wmi_battery_samples([dict(InstanceName=battery, DesignedCapacity=0)],
                                    recording("BatteryFullChargedCapacity")) == [
        host_windows.sample("node_power_supply_energy_full", 31.86, power_supply=battery)]


def windows_laptop_input(fake, clock):
    return HostInput(Config(), ps=windows_desktop(sensors_battery=Battery(81.0, 9000, False)), system="windows",
                     read=FakeFiles({}).read, listdir=FakeFiles({}).listdir,
                     windows_disk=lambda dev: ("ssd", "SAMSUNG MZVLQ256HBJD-00BH1"), wmi_query=fake, clock=clock)


def test_windows_laptop_reads_battery_wear_through_the_seam_every_15_minutes():
    now = [100.0]
    fake = RecordedWmi()
    inp = windows_laptop_input(fake, lambda: now[0])
    samples = inp.collect()
    check_against_catalog(samples)
    assert value(samples, "commune_battery_charge_ratio") == pytest.approx(0.81)
    assert value(samples, "commune_battery_capacity_ratio", power_supply="ACPI\\PNP0C0A\\1_0") == pytest.approx(0.708)
    assert {ns for ns, _ in fake.calls} == {"root\\wmi"} and len(fake.calls) == 3
    now[0] += 600
    assert value(inp.collect(), "commune_battery_capacity_ratio") == pytest.approx(0.708)
    assert len(fake.calls) == 3  # the cached reading
    now[0] += 300
    fake.data["BatteryFullChargedCapacity"][0]["FullChargedCapacity"] = 31500
    assert value(inp.collect(), "commune_battery_capacity_ratio") == pytest.approx(0.7)
    assert len(fake.calls) == 6


def test_windows_battery_wmi_failure_is_logged_once_and_costs_only_the_wear(caplog):
    now = [0.0]
    fake = RecordedWmi(fail={"BatteryStaticData": WmiError("Access denied", WBEM_E_ACCESS_DENIED),
                             "BatteryCycleCount": WmiError("Not supported", WBEM_E_NOT_SUPPORTED)})
    inp = windows_laptop_input(fake, lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="agent.inputs.host"):
        first = inp.collect()
        now[0] += 1000
        inp.collect()
    assert "commune_battery_capacity_ratio" not in by_name(first)
    assert value(first, "commune_battery_charge_ratio") == pytest.approx(0.81)
    assert [r.getMessage() for r in caplog.records] == [
        "host: cannot read the battery capacity from WMI: Access denied"]
    # an optional class that is not supported does not hide the others
    fake.fail = {"BatteryCycleCount": WmiError("Not supported", WBEM_E_NOT_SUPPORTED)}
    now[0] += 1000
    assert value(inp.collect(), "commune_battery_capacity_ratio") == pytest.approx(0.708)


def test_windows_desktop_never_asks_wmi_for_a_battery():
    fake = RecordedWmi()
    inp = HostInput(Config(), ps=windows_desktop(), system="windows", read=FakeFiles({}).read,
                    listdir=FakeFiles({}).listdir, windows_disk=lambda dev: ("hdd", ""), wmi_query=fake)
    assert "commune_battery_capacity_ratio" not in by_name(inp.collect())
    assert fake.calls == []


def test_windows_network_drives_when_asked():
    sizes = {"C:\\": Usage(100, 60, 40, 60.0), "E:\\": Usage(10, 1, 9, 10.0), "Z:\\": Usage(1000, 500, 500, 50.0)}
    inp = HostInput(load_model(Config, {"remote_filesystems": True}), ps=windows_desktop(disk_usage=sizes.get),
                    system="windows", read=FakeFiles({}).read, listdir=FakeFiles({}).listdir,
                    windows_disk=lambda dev: ("ssd", ""))
    mounts = {s.labels["mountpoint"] for s in inp.collect() if s.name == "node_filesystem_size_bytes"}
    assert mounts == {"C:\\", "E:\\", "Z:\\"}


def test_boot_time_is_held_steady_until_a_real_reboot():
    boots = iter([1_732_600_000.42, 1_732_600_000.91, 1_732_599_999.87, 1_732_700_000.2])
    inp = HostInput(Config(), ps=windows_desktop(boot_time=lambda: next(boots)), system="windows",
                    read=FakeFiles({}).read, listdir=FakeFiles({}).listdir, windows_disk=lambda dev: ("ssd", ""))
    seen = [value(inp.collect(), "node_boot_time_seconds") for _ in range(4)]
    assert seen == [1_732_600_000.42, 1_732_600_000.42, 1_732_600_000.42, 1_732_700_000.2]


def test_battery_on_mains_has_no_time_left():
    ps = linux_laptop(sensors_battery=Battery(100.0, psutil.POWER_TIME_UNLIMITED, True))
    _, samples = collect_linux(ps=ps)
    assert value(samples, "commune_battery_power_plugged") == 1
    assert "commune_battery_time_left_seconds" not in by_name(samples)


def test_sensors_off():
    files = FakeFiles(LINUX_FILES)
    _, samples = collect_linux(files=files, sensors=False)
    assert not [s for s in samples if s.name.startswith(("node_hwmon", "commune_battery", "node_power_supply"))]


@pytest.mark.parametrize("key", ["mount_points_exclude", "fs_types_exclude", "disk_devices_exclude",
                                 "network_devices_exclude"])
def test_invalid_regex_is_a_config_error(key):
    with pytest.raises(ConfigErrors) as exc:
        load_model(Config, {key: "^(sd"}, path="host")
    assert [str(e) for e in exc.value.errors] == [
        f"host.{key}: invalid regular expression: missing ), unterminated subpattern at position 1"]


# ---------------------------------------------------------------- this machine, real psutil

def test_real_psutil_on_this_machine():
    inp = host.build(Config(), None)[0]
    first = inp.collect()
    check_against_catalog(first)
    assert value(first, "node_memory_MemTotal_bytes") == psutil.virtual_memory().total
    assert value(first, "commune_host_cpus") == psutil.cpu_count()
    busy = lambda ss: sum(s.value for s in ss if s.name == "node_cpu_seconds_total" and s.labels["mode"] != "idle")
    second, deadline = first, time.monotonic() + 10
    while busy(second) <= busy(first) and time.monotonic() < deadline:  # the counters tick in 10 ms
        sum(i * i for i in range(200_000))  # burn a little CPU so the counters move
        second = inp.collect()
    assert busy(second) > busy(first)
    assert value(second, "node_boot_time_seconds") == pytest.approx(psutil.boot_time(), abs=1)


# ---------------------------------------------------------------- the real agent, end to end

# node_exporter's checkmetrics.sh ignores exactly these promtool complaints about names it must keep
PROMTOOL_ALLOWED = re.compile(r"^\S+ metric names should be written in 'snake_case' not 'camelCase'$")


def promtool_check(text: str) -> list:
    promtool = support.need_binary("promtool")
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    lines = [l for l in (proc.stdout + proc.stderr).splitlines() if l.strip()]
    return [l for l in lines if not PROMTOOL_ALLOWED.match(l)]


SMART_DISK = next((d for d in ("/dev/vda", "/dev/xvda", "/dev/sda") if Path(d).exists()), "/dev/null")


def e2e_config(tmp_path: Path, port: int) -> Path:
    from agent import inputs

    cfg = {"agent": {"state_dir": str(tmp_path / "state"), "interval": "1s"},
           "web": {"listen_address": f"127.0.0.1:{port}"},
           "host": {"interval": "1s", "timeout": "1s"}}
    sections = {m.NAME: m.Config for m in inputs.INPUTS}
    for name in sections:  # host and smart only: nothing else may reach beyond loopback
        if name not in ("host", "smart") and hasattr(sections[name], "enabled"):
            cfg[name] = {"enabled": False}
    # the real smartctl on a disk it cannot read here (a virtual disk): commune_smart_up 0
    cfg["smart"] = {"interval": "1s", "timeout": "1s", "command_timeout": "1s", "devices": [SMART_DISK]}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def parse_values(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.mark.slow
def test_agent_end_to_end(tmp_path):
    port = support.free_port()
    cfg = e2e_config(tmp_path, port)
    url = f"http://127.0.0.1:{port}/metrics"
    with support.running(support.agent_command() + ["-c", str(cfg)], tmp_path / "agent.log") as proc:
        proc.wait_http(url)

        def scrape_with_host():
            text = support.http_get(url).decode()
            return text if "node_memory_MemTotal_bytes" in text else None

        first = support.record_exposition(support.wait_until(scrape_with_host, 30, what="host metrics"))
        v1 = parse_values(first)

        def next_collection():
            text = support.http_get(url).decode()
            v = parse_values(text)
            done = v.get(("commune_agent_input_last_run_timestamp_seconds", (("input", "host"),)), 0) > \
                v1[("commune_agent_input_last_run_timestamp_seconds", (("input", "host"),))]
            return text if done else None

        second = support.record_exposition(support.wait_until(next_collection, 30, what="a second host collection"))
        v2 = parse_values(second)
        log = proc.log()
    assert v1[("node_memory_MemTotal_bytes", ())] == psutil.virtual_memory().total
    assert v1[("commune_agent_input_success", (("input", "host"),))] == 1
    busy = lambda v: sum(val for (n, labels), val in v.items()
                         if n == "node_cpu_seconds_total" and dict(labels)["mode"] != "idle")
    assert busy(v2) > busy(v1)
    assert v2[("node_network_receive_bytes_total", (("device", "lo"),))] > \
        v1[("node_network_receive_bytes_total", (("device", "lo"),))]  # the scrapes themselves went over lo
    smart_up = [val for (n, labels), val in v2.items() if n == "commune_smart_up"]
    assert smart_up and v2[("commune_agent_input_success", (("input", "smart"),))] == 1
    assert log.count("smart: cannot read") == (1 if smart_up == [0.0] else 0), log
    assert "# TYPE node_cpu_seconds_total counter" in second
    assert "# HELP node_memory_MemAvailable_bytes Memory information field MemAvailable_bytes." in second
    problems = promtool_check(second)
    assert not problems, "promtool check metrics:\n" + "\n".join(problems)
    assert " ERROR " not in log and "Traceback" not in log, log


def test_promtool_filter_is_exact():
    """Only the camelCase complaint is waived; any other promtool warning fails the check."""
    text = ("# HELP node_memory_MemTotal_bytes Memory information field MemTotal_bytes.\n"
            "# TYPE node_memory_MemTotal_bytes gauge\nnode_memory_MemTotal_bytes 1\n"
            "# HELP bad_counter A counter without its suffix.\n# TYPE bad_counter counter\nbad_counter 1\n")
    problems = promtool_check(text)
    assert problems and all("node_memory_MemTotal_bytes" not in p for p in problems)
    assert any("bad_counter" in p for p in problems)
