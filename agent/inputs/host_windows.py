"""Host facts only Windows tells: the version name, battery wear from root\\wmi, each disk's type and
model through DeviceIoControl, the CPU model from the registry. Parsers are pure and tested with
recorded answers; the calls into Windows (ctypes, winreg, WMI) run only there."""
from __future__ import annotations

import logging
import platform
import struct
import time
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from contract.samples import Sample, sample

log = logging.getLogger("agent.inputs.host")


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


# root\wmi battery classes (BATTERY_INFORMATION of the battery class driver)
BATTERY_CAPACITY_RELATIVE = 0x40000000  # Capabilities bit: capacities are relative, not mWh
BATTERY_WMI_REFRESH = 900.0  # seconds between WMI battery readings
BATTERY_QUERIES = (("static", "SELECT * FROM BatteryStaticData"),
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


class WmiBatteryWear:
    """Battery wear from root\\wmi, read again every BATTERY_WMI_REFRESH seconds; a failing query is
    logged once and costs nothing else. ``query`` None: agent.inputs.wmi.query, imported when first
    needed."""

    def __init__(self, query: Optional[Callable[[str, str], List[dict]]] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.query = query
        self.clock = clock
        self._last: Tuple[Optional[float], List[Sample]] = (None, [])
        self._failed = False

    def read(self) -> List[Sample]:
        """Battery wear from root\\wmi, read again every BATTERY_WMI_REFRESH seconds."""
        at, cached = self._last
        now = self.clock()
        if at is not None and now - at < BATTERY_WMI_REFRESH:
            return cached
        query = self.query
        if query is None:
            from agent.inputs.wmi import query
        from agent.inputs.wmi import WmiError

        answers: Dict[str, list] = {}
        try:
            for key, wql in BATTERY_QUERIES:
                try:
                    answers[key] = query("root\\wmi", wql)
                except WmiError as exc:
                    if key == "cycles" or exc.means_no_instances:  # cycle count is optional
                        answers[key] = []
                    else:
                        raise
        except Exception as exc:  # untestable off Windows: never let it cost the host metrics
            if not self._failed:
                log.warning("host: cannot read the battery capacity from WMI: %s", exc)
                self._failed = True
            self._last = (now, [])
            return []
        self._failed = False
        samples = wmi_battery_samples(answers["static"], answers["full"], answers["cycles"])
        self._last = (now, samples)
        return samples



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


def windows_cpu_model() -> str:
    """ProcessorNameString from the registry (``platform.processor()`` only gives the family)."""
    try:
        import winreg

        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"HARDWARE\DESCRIPTION\System\CentralProcessor\0") as key:
            return str(winreg.QueryValueEx(key, "ProcessorNameString")[0]).strip()
    except (ImportError, OSError):  # ImportError: not on Windows
        return platform.processor()
