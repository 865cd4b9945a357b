"""Disk health on Windows without smartctl: the Storage Management API and the storage driver, over WMI.

Part of the ``smart`` input (``agent/inputs/smart.py`` chooses it, see ``source`` there): on a
default install there is no smartctl, but Windows 8 and later read the disks' health and
reliability counters themselves. Three sources, all built in:

- ``root\\Microsoft\\Windows\\Storage`` ``MSFT_PhysicalDisk``: ``DeviceId`` (the disk number N of
  ``\\\\.\\PhysicalDriveN``), ``FriendlyName``, ``SerialNumber``, ``FirmwareVersion``, ``BusType``,
  ``MediaType`` (3 HDD, 4 SSD, 5 SCM, 0 unspecified), ``HealthStatus`` (0 healthy, 1 warning,
  2 unhealthy, 5 unknown) and ``OperationalStatus`` (array of codes).
- ``MSFT_StorageReliabilityCounter`` of each disk, through the association
  ``MSFT_PhysicalDiskToStorageReliabilityCounter`` (what ``Get-StorageReliabilityCounter`` does):
  ``Wear`` (percent of rated endurance used), ``Temperature`` (°C), ``PowerOnHours``,
  ``ReadErrorsUncorrected``, ``WriteErrorsUncorrected``. Drivers fill what the disk reports (ATA
  SMART attributes, the NVMe health log); the rest is NULL and left out.
- ``root\\wmi`` ``MSStorageDriver_FailurePredictStatus``: the ATA SMART overall verdict
  (``PredictFailure``) per disk, matched to its disk number through ``root\\cimv2``
  ``Win32_DiskDrive`` (``InstanceName`` is ``Win32_DiskDrive.PNPDeviceID`` plus ``_0``). NVMe and
  USB disks usually have no instance here.

They become the series smartctl gives, under the same names and the same ``device`` label
(``PhysicalDriveN``, as ``node_disk_*`` and ``commune_disk_info``), so the rules see no difference:
``commune_smart_up``, ``commune_smart_info`` (protocol from the bus type), ``commune_smart_healthy``,
``commune_smart_percentage_used_ratio``, ``commune_smart_power_on_seconds_total``,
``commune_smart_temperature_celsius``; plus what only Windows says: ``commune_disk_health_status``,
``commune_disk_operational_status`` and ``commune_smart_uncorrected_errors_total``.

``commune_smart_healthy`` is 0 when the disk is ``Unhealthy``, its operational status says
``Predictive Failure``, ``Non-Recoverable Error`` or ``Failed Media``, or the driver predicts
failure; 1 when it is ``Healthy`` or ``Warning`` otherwise (a warning alone, e.g. ``In
Maintenance`` or a transient error, is not a failure prediction; ``commune_disk_health_status``
shows it) or the driver's verdict is "no failure"; absent when nothing is known.

Rights: Microsoft documents no access rule per class. Reading the reliability counters
(``Get-StorageReliabilityCounter``) and ``MSStorageDriver_FailurePredictStatus`` is expected to need
Administrator rights: under the service's default LocalService account they are refused, logged
once per disk, and the disk keeps its health verdict and facts from ``MSFT_PhysicalDisk``; the
service installed with ``--account LocalSystem`` reads everything. (Not verified on Windows here.)

Not read here: reallocated and pending sector counts (Windows does not expose the ATA attribute
table through the Storage API). ``PowerOnHours`` is a UInt16 in the class: it stops at 65535 hours.
A temperature of 0 °C is taken as "not reported". Reading the counters may spin up a sleeping disk:
the ``refresh_interval`` of the smart section (default 30m) bounds how often.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from agent.inputs import smart
from agent.inputs.wmi import Instance, Query, WmiError, number, wql_string
from contract.samples import Sample, sample

log = logging.getLogger(__name__)

STORAGE_NAMESPACE = "root\\Microsoft\\Windows\\Storage"
PHYSICAL_DISKS = "SELECT * FROM MSFT_PhysicalDisk"
DISK_DRIVES = "SELECT Index, PNPDeviceID FROM Win32_DiskDrive"
FAILURE_PREDICT = "SELECT InstanceName, PredictFailure FROM MSStorageDriver_FailurePredictStatus"

# MSFT_PhysicalDisk.BusType -> smartctl's protocol names where it has one, else the bus name
BUS_TYPES = {0: "unknown", 1: "SCSI", 2: "ATAPI", 3: "ATA", 4: "1394", 5: "SSA", 6: "FibreChannel", 7: "USB",
             8: "RAID", 9: "iSCSI", 10: "SCSI", 11: "ATA", 12: "SD", 13: "MMC", 15: "FileBackedVirtual",
             16: "StorageSpaces", 17: "NVMe"}
# MSFT_PhysicalDisk.MediaType -> commune_smart_info type
MEDIA_TYPES = {3: "hdd", 4: "ssd", 5: "ssd"}  # 5: storage-class memory, not rotational
HEALTH_HEALTHY, HEALTH_WARNING, HEALTH_UNHEALTHY, HEALTH_UNKNOWN = 0, 1, 2, 5
# MSFT_PhysicalDisk.OperationalStatus codes (CIM_ManagedSystemElement values, then Microsoft's)
OPERATIONAL_STATUS = {0: "unknown", 1: "other", 2: "ok", 3: "degraded", 4: "stressed", 5: "predictive_failure",
                      6: "error", 7: "non_recoverable_error", 8: "starting", 9: "stopping", 10: "stopped",
                      11: "in_service", 12: "no_contact", 13: "lost_communication", 14: "aborted", 15: "dormant",
                      16: "supporting_entity_in_error", 17: "completed", 18: "power_mode",
                      0xD010: "in_maintenance", 0xD011: "not_usable", 0xD012: "transient_error",
                      0xD013: "failed_media"}
FAILING_STATUSES = frozenset({5, 7, 0xD013})


# ---------------------------------------------------------------- pure parsers

def device_label(device_id) -> Optional[str]:
    """``PhysicalDriveN`` from MSFT_PhysicalDisk / MSFT_StorageReliabilityCounter ``DeviceId`` "N"."""
    text = str(device_id if device_id is not None else "").strip()
    return f"PhysicalDrive{int(text)}" if text.isdigit() else None


def reliability_query(disk: Instance) -> Optional[str]:
    """The WQL asking for the reliability counter of one MSFT_PhysicalDisk (None without ObjectId)."""
    object_id = disk.get("ObjectId")
    if not isinstance(object_id, str) or not object_id:
        return None
    return (f"ASSOCIATORS OF {{MSFT_PhysicalDisk.ObjectId={wql_string(object_id)}}} "
            "WHERE AssocClass = MSFT_PhysicalDiskToStorageReliabilityCounter")


def _pnp_key(text: str) -> str:
    return text.strip().upper()


def predicted_failures(drives: Iterable[Instance], statuses: Iterable[Instance]) -> Dict[str, bool]:
    """device -> PredictFailure, matching MSStorageDriver_FailurePredictStatus to Win32_DiskDrive."""
    by_pnp = {}
    for drive in drives:
        label = device_label(drive.get("Index"))
        pnp = drive.get("PNPDeviceID")
        if label and isinstance(pnp, str) and pnp:
            by_pnp[_pnp_key(pnp)] = label
    out: Dict[str, bool] = {}
    for status in statuses:
        name = status.get("InstanceName")
        predict = status.get("PredictFailure")
        if not isinstance(name, str) or not isinstance(predict, bool):
            continue
        label = by_pnp.get(_pnp_key(re.sub(r"_\d+$", "", name.strip())))
        if label:
            out[label] = out.get(label, False) or predict
    return out


def healthy(disk: Instance, predict_failure: Optional[bool]) -> Optional[int]:
    """commune_smart_healthy of a disk (see the module docstring), None when unknown."""
    health = disk.get("HealthStatus")
    codes = set(disk.get("OperationalStatus") or ())
    if health == HEALTH_UNHEALTHY or codes & FAILING_STATUSES or predict_failure:
        return 0
    if health in (HEALTH_HEALTHY, HEALTH_WARNING) or predict_failure is False:
        return 1
    return None


def disk_samples(disk: Instance, counter: Optional[Instance], predict_failure: Optional[bool] = None,
                 ) -> Tuple[Optional[str], List[Sample]]:
    """(device, samples) of one MSFT_PhysicalDisk with its reliability counter (or None)."""
    device = device_label(disk.get("DeviceId"))
    if device is None:
        return None, []
    kind = MEDIA_TYPES.get(disk.get("MediaType"), "unknown")
    bus = disk.get("BusType")
    out = [sample("commune_smart_up", 1, device=device),
           sample("commune_smart_info", 1, device=device, protocol=BUS_TYPES.get(bus, f"bus_{bus}"), type=kind,
                  model=(disk.get("FriendlyName") or "").strip(), serial=(disk.get("SerialNumber") or "").strip(),
                  firmware=(disk.get("FirmwareVersion") or "").strip())]
    verdict = healthy(disk, predict_failure)
    if verdict is not None:
        out.append(sample("commune_smart_healthy", verdict, device=device))
    if isinstance(disk.get("HealthStatus"), int):
        out.append(sample("commune_disk_health_status", disk["HealthStatus"], device=device))
    for code in sorted(set(disk.get("OperationalStatus") or ())):
        if isinstance(code, int):
            out.append(sample("commune_disk_operational_status", 1, device=device,
                              status=OPERATIONAL_STATUS.get(code, f"code_{code}")))
    if counter:
        out += counter_samples(counter, device, kind)
    return device, out


def counter_samples(counter: Instance, device: str, kind: str = "unknown") -> List[Sample]:
    """Samples of one MSFT_StorageReliabilityCounter (NULL properties are left out)."""
    out: List[Sample] = []
    wear = number(counter.get("Wear"))
    # HDDs report no wear; 0 from a disk of unspecified media is "not reported" as often as "new"
    if wear is not None and (kind == "ssd" or wear > 0):
        out.append(sample("commune_smart_percentage_used_ratio", wear / 100.0, device=device))
    hours = number(counter.get("PowerOnHours"))
    if hours is not None:
        out.append(sample("commune_smart_power_on_seconds_total", hours * 3600, device=device))
    temp = number(counter.get("Temperature"))
    if temp:  # 0: not reported
        out.append(sample("commune_smart_temperature_celsius", temp, device=device))
    for operation, prop in (("read", "ReadErrorsUncorrected"), ("write", "WriteErrorsUncorrected")):
        errors = number(counter.get(prop))
        if errors is not None:
            out.append(sample("commune_smart_uncorrected_errors_total", errors, device=device, operation=operation))
    return out


# ---------------------------------------------------------------- reading through the seam

class DiskReader:
    """Reads every physical disk through a :data:`agent.inputs.wmi.Query`; logs each failing part once."""

    def __init__(self, query: Query):
        self.query = query
        self._logged: set = set()

    def _once(self, key: str, level: int, message: str, *args) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.log(level, message, *args)

    def failure_predictions(self) -> Dict[str, bool]:
        try:
            statuses = self.query("root\\wmi", FAILURE_PREDICT)
            drives = self.query("root\\cimv2", DISK_DRIVES) if statuses else []
        except WmiError as exc:
            level = logging.DEBUG if exc.means_no_instances else logging.WARNING
            self._once("predict", level, "smart: no failure prediction from the storage driver: %s", exc)
            return {}
        return predicted_failures(drives, statuses)

    def counter(self, disk: Instance, device: str) -> Optional[Instance]:
        wql = reliability_query(disk)
        if wql is None:
            return None
        try:
            found = self.query(STORAGE_NAMESPACE, wql)
        except WmiError as exc:
            self._once(f"counter {device}", logging.WARNING,
                       "smart: no reliability counters for %s: %s", device, exc)
            return None
        return found[0] if found else None

    def read(self) -> Dict[str, List[Sample]]:
        """device -> samples of every disk MSFT_PhysicalDisk lists (its failure raises)."""
        disks = self.query(STORAGE_NAMESPACE, PHYSICAL_DISKS)
        predictions = self.failure_predictions()
        out: Dict[str, List[Sample]] = {}
        for disk in disks:
            device = device_label(disk.get("DeviceId"))
            if device is None:  # a pooled disk without a number of its own
                continue
            _, samples = disk_samples(disk, self.counter(disk, device), predictions.get(device))
            out[device] = samples
        return out


class WmiSmartInput(smart.SmartInput):
    """The smart input fed from WMI instead of smartctl: same cadence, same re-emitted readings."""

    def __init__(self, section: "smart.Config", query: Query, clock: Callable[[], float] = time.time):
        super().__init__(section, smartctl="", clock=clock, system="windows")
        self.reader = DiskReader(query)

    def refresh(self, now: float) -> None:
        readings: Mapping[str, List[Sample]] = self.reader.read()
        self._readings = {device: smart._Reading(samples, now) for device, samples in readings.items()}
        self._down = {}
