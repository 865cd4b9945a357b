"""A recording fake of the WMI seam (``agent.inputs.wmi.Query``) over tests/fixtures/windows/.

``RecordedWmi()(namespace, wql)`` answers ``SELECT ... FROM <class>`` with the recorded instances
of that class (property lists are not projected: WMI itself returns the key properties too), and
``ASSOCIATORS OF {MSFT_PhysicalDisk.ObjectId="..."} WHERE AssocClass =
MSFT_PhysicalDiskToStorageReliabilityCounter`` with the reliability counter whose DeviceId is that
disk's, after undoing the WQL string escaping, so a wrongly escaped ObjectId finds nothing. Every
query is noted in ``calls``; ``fail`` maps a class name to the WmiError to raise for it.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Dict, List, Optional

from agent.inputs.wmi import WmiError

FIXTURES = Path(__file__).parent / "fixtures" / "windows"

# class -> namespace it lives in (a query in another namespace is an invalid class there)
NAMESPACES = {
    "MSFT_PhysicalDisk": "root\\Microsoft\\Windows\\Storage",
    "MSFT_StorageReliabilityCounter": "root\\Microsoft\\Windows\\Storage",
    "Win32_DiskDrive": "root\\cimv2",
    "Win32_Printer": "root\\cimv2",
    "Win32_PrintJob": "root\\cimv2",
    "MSStorageDriver_FailurePredictStatus": "root\\wmi",
    "BatteryStaticData": "root\\wmi",
    "BatteryFullChargedCapacity": "root\\wmi",
    "BatteryCycleCount": "root\\wmi",
}
WBEM_E_INVALID_CLASS = 0x80041010
WBEM_E_NOT_SUPPORTED = 0x8004100C
WBEM_E_ACCESS_DENIED = 0x80041003


def recording(cls: str) -> List[dict]:
    path = FIXTURES / f"{cls.lower()}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else []


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


class RecordedWmi:
    def __init__(self, overrides: Optional[Dict[str, List[dict]]] = None,
                 fail: Optional[Dict[str, WmiError]] = None):
        self.data = {cls: recording(cls) for cls in NAMESPACES}
        self.data.update(copy.deepcopy(overrides or {}))
        self.fail = dict(fail or {})
        self.calls: List[tuple] = []

    def __call__(self, namespace: str, wql: str) -> List[dict]:
        self.calls.append((namespace, wql))
        m = re.match(r'^ASSOCIATORS OF \{MSFT_PhysicalDisk\.ObjectId="((?:[^"\\]|\\.)*)"\} '
                     r'WHERE AssocClass = MSFT_PhysicalDiskToStorageReliabilityCounter$', wql)
        if m:
            cls = "MSFT_StorageReliabilityCounter"
            self._check(namespace, cls)
            object_id = _unescape(m.group(1))
            disk = next((d for d in self.data["MSFT_PhysicalDisk"] if d.get("ObjectId") == object_id), None)
            if disk is None:
                return []
            return [copy.deepcopy(c) for c in self.data[cls] if c.get("DeviceId") == disk.get("DeviceId")]
        m = re.match(r"^SELECT .+ FROM (\w+)$", wql)
        if not m:
            raise WmiError(f"{namespace}: {wql}: Invalid query (0x80041017)", 0x80041017)
        cls = m.group(1)
        self._check(namespace, cls)
        return copy.deepcopy(self.data[cls])

    def _check(self, namespace: str, cls: str) -> None:
        if cls in self.fail:
            raise self.fail[cls]
        if NAMESPACES.get(cls, "").lower() != namespace.lower():
            raise WmiError(f"{namespace}: {cls}: Invalid class (0x{WBEM_E_INVALID_CLASS:08X})", WBEM_E_INVALID_CLASS)
