"""Pure decoders: what a profile returned (:class:`~agent.inputs.snmp.profiles.Values`) to samples.

Each ``decode_<profile>(values, target)`` returns samples of catalogued metrics; the small
functions they use (supply ratio, error-state bits, type inference) are table-tested.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from agent.inputs.snmp.classify import text
from agent.inputs.snmp.profiles import Oid, Values, dotted
from contract.samples import Sample, sample

# ---------------------------------------------------------------- Printer-MIB (RFC 3805)

SUPPLY_TYPES = {
    1: "other", 2: "unknown", 3: "toner", 4: "wasteToner", 5: "ink", 6: "inkCartridge",
    7: "inkRibbon", 8: "wasteInk", 9: "opc", 10: "developer", 11: "fuserOil", 12: "solidWax",
    13: "ribbonWax", 14: "wasteWax", 15: "fuser", 16: "coronaWire", 17: "fuserOilWick",
    18: "cleanerUnit", 19: "fuserCleaningPad", 20: "transferUnit", 21: "tonerCartridge",
    22: "fuserOiler", 23: "water", 24: "wasteWater", 25: "glueWaterAdditive", 26: "wastePaper",
    27: "bindingSupply", 28: "bandingSupply", 29: "stitchingWire", 30: "shrinkWrap",
    31: "paperWrap", 32: "staples", 33: "inserts", 34: "covers", 35: "matteToner", 36: "matteInk",
}
RECEPTACLE_TYPES = {"wasteToner", "wasteInk", "wasteWax", "wasteWater", "wastePaper"}
SUPPLY_CLASSES = {1: "other", 3: "consumed", 4: "receptacle"}

# Description words -> type, for printers that leave out prtMarkerSuppliesType (HP JetDirect,
# Konica Minolta, Xerox, Canon LBP in the recordings). First match wins.
_TYPE_WORDS: Sequence[Tuple[Tuple[str, ...], str]] = (
    (("waste", "toner"), "wasteToner"), (("waste", "ink"), "wasteInk"), (("waste",), "wasteToner"),
    (("drum",), "opc"), (("photoconductor",), "opc"), (("opc",), "opc"),
    (("developer",), "developer"), (("fuser",), "fuser"), (("fusing",), "fuser"),
    (("transfer",), "transferUnit"), (("staple",), "staples"), (("toner",), "toner"),
    (("ink",), "ink"), (("cartridge",), "tonerCartridge"),
)

ERROR_STATE_BITS = (
    "low_paper", "no_paper", "low_toner", "no_toner", "door_open", "jammed", "offline",
    "service_requested", "input_tray_missing", "output_tray_missing", "marker_supply_missing",
    "output_near_full", "output_full", "input_tray_empty", "overdue_preventive_maintenance",
)

ALERT_SEVERITIES = {1: "other", 3: "critical", 4: "warning", 5: "warningBinaryChangeEvent"}
ALERT_GROUPS = {
    1: "other", 3: "hostResourcesMIBStorageTable", 4: "hostResourcesMIBDeviceTable",
    5: "generalPrinter", 6: "cover", 7: "localization", 8: "input", 9: "output", 10: "marker",
    11: "markerSupplies", 12: "markerColorant", 13: "mediaPath", 14: "channel", 15: "interpreter",
    16: "consoleDisplayBuffer", 17: "consoleLights", 18: "alert", 30: "finDevice", 31: "finSupply",
    32: "finSupplyMediaInput", 33: "finAttribute",
}
ALERT_CODES = {
    1: "other", 2: "unknown", 3: "coverOpen", 4: "coverClosed", 5: "interlockOpen",
    6: "interlockClosed", 7: "configurationChange", 8: "jam", 9: "subunitMissing",
    10: "subunitLifeAlmostOver", 11: "subunitLifeOver", 12: "subunitAlmostEmpty",
    13: "subunitEmpty", 14: "subunitAlmostFull", 15: "subunitFull", 16: "subunitNearLimit",
    17: "subunitAtLimit", 18: "subunitOpened", 19: "subunitClosed", 20: "subunitTurnedOn",
    21: "subunitTurnedOff", 22: "subunitOffline", 23: "subunitPowerSaver", 24: "subunitWarmingUp",
    25: "subunitAdded", 26: "subunitRemoved", 27: "subunitResourceAdded",
    28: "subunitResourceRemoved", 29: "subunitRecoverableFailure",
    30: "subunitUnrecoverableFailure", 501: "doorOpen", 502: "doorClosed", 503: "powerUp",
    504: "powerDown", 505: "printerNMSReset", 506: "printerManualReset",
    507: "printerReadyToPrint", 801: "inputMediaTrayMissing", 807: "inputMediaSupplyLow",
    808: "inputMediaSupplyEmpty", 901: "outputMediaTrayMissing", 902: "outputMediaTrayAlmostFull",
    903: "outputMediaTrayFull", 1101: "markerTonerEmpty", 1102: "markerInkEmpty",
    1104: "markerTonerAlmostEmpty", 1105: "markerInkAlmostEmpty",
    1107: "markerWasteTonerReceptacleAlmostFull", 1108: "markerWasteInkReceptacleAlmostFull",
    1109: "markerWasteTonerReceptacleFull", 1110: "markerWasteInkReceptacleFull",
    1111: "markerOpcLifeAlmostOver", 1112: "markerOpcLifeOver",
    1113: "markerDeveloperAlmostEmpty", 1114: "markerDeveloperEmpty",
    1115: "markerTonerCartridgeMissing",
}
HR_DEVICE_PRINTER = "1.3.6.1.2.1.25.3.1.5"


def supply_ratio(level: Optional[int], max_capacity: Optional[int]) -> Optional[float]:
    """Level over max capacity in [0,1]; None when either is a special value or unknown.

    RFC 3805: level -1 other, -2 unknown, -3 "at least one unit remains"; max capacity -1 other,
    -2 unknown; 0 or less means no usable capacity. None of those gives a ratio: an unknown
    fraction is not reported as a number (LibreNMS's 50 % for -3 would raise false alerts).
    Vendor quirk: a level above the max capacity (seen on refilled cartridges) is clamped to 1.
    """
    if not isinstance(level, int) or not isinstance(max_capacity, int):
        return None
    if level < 0 or max_capacity <= 0:
        return None
    return min(level / max_capacity, 1.0)


def supply_type(type_value: Optional[int], description: str) -> str:
    """The PrtMarkerSuppliesTypeTC name; inferred from the description when the column is missing."""
    if isinstance(type_value, int) and type_value in SUPPLY_TYPES and type_value not in (1, 2):
        return SUPPLY_TYPES[type_value]
    words = description.lower()
    for needles, name in _TYPE_WORDS:
        if all(n in words for n in needles):
            return name
    if isinstance(type_value, int) and type_value in SUPPLY_TYPES:
        return SUPPLY_TYPES[type_value]
    return "unknown"


def supply_class(class_value: Optional[int], type_name: str) -> str:
    """consumed, receptacle or other; inferred from the type when the column is missing."""
    if isinstance(class_value, int) and class_value in SUPPLY_CLASSES:
        return SUPPLY_CLASSES[class_value]
    return "receptacle" if type_name in RECEPTACLE_TYPES else "consumed"


def error_state_conditions(value) -> Optional[Dict[str, int]]:
    """hrPrinterDetectedErrorState (BITS) -> {condition: 0/1}; None when the object is absent.

    Bit 0 is the most significant bit of the first octet (RFC 3805 / RFC 2790). An empty string
    (Epson) means no condition.
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = value.encode("latin-1")
    if isinstance(value, int):
        value = value.to_bytes(2, "big")
    bits = {}
    for i, name in enumerate(ERROR_STATE_BITS):
        byte, bit = divmod(i, 8)
        on = byte < len(value) and bool(value[byte] & (0x80 >> bit))
        bits[name] = int(on)
    return bits


def _index(idx: Oid) -> str:
    return dotted(idx)


def decode_printer(v: Values, target: str) -> List[Sample]:
    out: List[Sample] = []
    supplies = v.table("prtMarkerSuppliesClass", "prtMarkerSuppliesType", "prtMarkerSuppliesDescription",
                       "prtMarkerSuppliesMaxCapacity", "prtMarkerSuppliesLevel")
    for idx, row in supplies.items():
        if "prtMarkerSuppliesLevel" not in row and "prtMarkerSuppliesDescription" not in row:
            continue
        descr = text(row.get("prtMarkerSuppliesDescription"))
        typ = supply_type(row.get("prtMarkerSuppliesType"), descr)
        labels = dict(target=target, index=_index(idx), description=descr, type=typ,
                      **{"class": supply_class(row.get("prtMarkerSuppliesClass"), typ)})
        level, cap = row.get("prtMarkerSuppliesLevel"), row.get("prtMarkerSuppliesMaxCapacity")
        if isinstance(level, int):
            out.append(sample("commune_printer_supply_level", level, **labels))
        if isinstance(cap, int):
            out.append(sample("commune_printer_supply_max_capacity", cap, **labels))
        ratio = supply_ratio(level, cap)
        if ratio is not None:
            out.append(sample("commune_printer_supply_level_ratio", round(ratio, 6), **labels))
    for idx, count in v.column("prtMarkerLifeCount").items():
        if isinstance(count, int):
            out.append(sample("commune_printer_pages_total", count, target=target, marker=_index(idx)))
    # The printer's own row of the HOST-RESOURCES device and printer tables.
    devices = v.table("hrDeviceType", "hrDeviceDescr", "hrDeviceStatus")
    printers = v.table("hrPrinterStatus", "hrPrinterDetectedErrorState")
    dev_idx = next((i for i, r in devices.items() if r.get("hrDeviceType") == HR_DEVICE_PRINTER), None)
    if dev_idx is None and printers:
        dev_idx = next(iter(printers))
    if dev_idx is None and devices:
        dev_idx = next(iter(devices))
    if dev_idx is not None:
        status = devices.get(dev_idx, {}).get("hrDeviceStatus")
        if isinstance(status, int):
            out.append(sample("commune_printer_device_status", status, target=target))
        prow = printers.get(dev_idx) or (next(iter(printers.values())) if printers else {})
        if isinstance(prow.get("hrPrinterStatus"), int):
            out.append(sample("commune_printer_status", prow["hrPrinterStatus"], target=target))
        conditions = error_state_conditions(prow.get("hrPrinterDetectedErrorState"))
        for name, on in (conditions or {}).items():
            out.append(sample("commune_printer_error_state", on, target=target, condition=name))
    for idx, row in v.table("prtAlertSeverityLevel", "prtAlertGroup", "prtAlertCode",
                            "prtAlertDescription").items():
        sev, group, code = (row.get(k) for k in ("prtAlertSeverityLevel", "prtAlertGroup", "prtAlertCode"))
        out.append(sample(
            "commune_printer_alert_info", 1, target=target, index=_index(idx),
            severity=ALERT_SEVERITIES.get(sev, str(sev if sev is not None else "")),
            group=ALERT_GROUPS.get(group, str(group if group is not None else "")),
            code=ALERT_CODES.get(code, str(code if code is not None else "")),
            description=text(row.get("prtAlertDescription"))))
    for idx, row in v.table("prtInputMaxCapacity", "prtInputCurrentLevel", "prtInputName").items():
        for metric, col in (("commune_printer_input_tray_level", "prtInputCurrentLevel"),
                            ("commune_printer_input_tray_max_capacity", "prtInputMaxCapacity")):
            if isinstance(row.get(col), int):
                out.append(sample(metric, row[col], target=target, index=_index(idx),
                                  name=text(row.get("prtInputName"))))
    for idx, row in v.table("prtCoverDescription", "prtCoverStatus").items():
        status = row.get("prtCoverStatus")
        if isinstance(status, int):
            out.append(sample("commune_printer_cover_open", int(status in (3, 5)), target=target,
                              index=_index(idx), description=text(row.get("prtCoverDescription"))))
    return out


# ---------------------------------------------------------------- IF-MIB (RFC 2863)

_IF_COUNTERS = (
    # metric, 64-bit column, 32-bit column
    ("commune_snmp_if_in_octets_total", "ifHCInOctets", "ifInOctets"),
    ("commune_snmp_if_out_octets_total", "ifHCOutOctets", "ifOutOctets"),
    ("commune_snmp_if_in_unicast_packets_total", "ifHCInUcastPkts", "ifInUcastPkts"),
    ("commune_snmp_if_out_unicast_packets_total", "ifHCOutUcastPkts", "ifOutUcastPkts"),
    ("commune_snmp_if_in_errors_total", None, "ifInErrors"),
    ("commune_snmp_if_out_errors_total", None, "ifOutErrors"),
    ("commune_snmp_if_in_discards_total", None, "ifInDiscards"),
    ("commune_snmp_if_out_discards_total", None, "ifOutDiscards"),
)


def interface_speed_bytes(high_speed: Optional[int], speed: Optional[int]) -> Optional[float]:
    """Bytes/s from ifHighSpeed (Mbit/s) when set, else ifSpeed (bit/s); None when neither is known."""
    if isinstance(high_speed, int) and high_speed > 0:
        return high_speed * 1_000_000 / 8
    if isinstance(speed, int) and speed > 0:
        return speed / 8
    if isinstance(high_speed, int) or isinstance(speed, int):
        return 0.0
    return None


def decode_interfaces(v: Values, target: str) -> List[Sample]:
    out: List[Sample] = []
    cols = list(v.profile.walk)
    for idx, row in v.table(*cols).items():
        if len(idx) != 1:
            continue
        ifindex = str(idx[0])
        name = text(row.get("ifName")) or text(row.get("ifDescr"))
        base = dict(target=target, if_index=ifindex, if_name=name)
        iftype = row.get("ifType")
        out.append(sample("commune_snmp_if_info", 1, **base, if_alias=text(row.get("ifAlias")),
                          if_descr=text(row.get("ifDescr")), if_type=str(iftype if iftype is not None else "")))
        for metric, col in (("commune_snmp_if_oper_status", "ifOperStatus"),
                            ("commune_snmp_if_admin_status", "ifAdminStatus")):
            if isinstance(row.get(col), int):
                out.append(sample(metric, row[col], **base))
        speed = interface_speed_bytes(row.get("ifHighSpeed"), row.get("ifSpeed"))
        if speed is not None:
            out.append(sample("commune_snmp_if_speed_bytes", speed, **base))
        for metric, hc, low in _IF_COUNTERS:
            value = row.get(hc) if hc else None
            if not isinstance(value, int):
                value = row.get(low)
            if isinstance(value, int):
                out.append(sample(metric, value, **base))
    return out


# ---------------------------------------------------------------- HOST-RESOURCES-MIB (RFC 2790)

def decode_host_resources(v: Values, target: str) -> List[Sample]:
    out: List[Sample] = []
    for idx, load in v.column("hrProcessorLoad").items():
        if isinstance(load, int):
            out.append(sample("commune_snmp_cpu_load_ratio", load / 100, target=target, index=_index(idx)))
    for idx, row in v.table("hrStorageDescr", "hrStorageAllocationUnits", "hrStorageSize",
                            "hrStorageUsed").items():
        unit = row.get("hrStorageAllocationUnits")
        if not isinstance(unit, int) or unit <= 0:
            continue
        labels = dict(target=target, index=_index(idx), description=text(row.get("hrStorageDescr")))
        if isinstance(row.get("hrStorageSize"), int):
            out.append(sample("commune_snmp_storage_size_bytes", row["hrStorageSize"] * unit, **labels))
        if isinstance(row.get("hrStorageUsed"), int):
            out.append(sample("commune_snmp_storage_used_bytes", row["hrStorageUsed"] * unit, **labels))
    return out


# ---------------------------------------------------------------- UPS-MIB (RFC 1628) and APC

UPS_ALARM_BATTERY_BAD = "1.3.6.1.2.1.33.1.6.3.1"
_APC_BATTERY_STATUS = {1: 1, 2: 2, 3: 3, 4: 4}   # batteryInFaultCondition -> depleted


def _first(column: Mapping[Oid, object]) -> Optional[int]:
    for _idx, value in sorted(column.items()):
        if isinstance(value, int):
            return value
    return None


def _num(value) -> Optional[int]:
    return value if isinstance(value, int) else None


def ups_values(v: Values) -> Dict[str, float]:
    """Normalized UPS readings from RFC 1628 first, APC PowerNet where RFC 1628 has nothing."""
    out: Dict[str, float] = {}
    status = _num(v.scalar("upsBatteryStatus"))
    if status is None and _num(v.scalar("upsBasicBatteryStatus")) is not None:
        status = _APC_BATTERY_STATUS.get(v.scalar("upsBasicBatteryStatus"), 1)
    if status is not None:
        out["battery_status"] = status
    charge = _num(v.scalar("upsEstimatedChargeRemaining"))
    if charge is None:
        charge = _num(v.scalar("upsAdvBatteryCapacity"))
    if charge is not None:
        out["battery_charge_ratio"] = charge / 100
    minutes = _num(v.scalar("upsEstimatedMinutesRemaining"))
    if minutes is not None:
        out["battery_runtime_seconds"] = minutes * 60
    elif _num(v.scalar("upsAdvBatteryRunTimeRemaining")) is not None:
        out["battery_runtime_seconds"] = v.scalar("upsAdvBatteryRunTimeRemaining") / 100
    source = _num(v.scalar("upsOutputSource"))
    apc_output = _num(v.scalar("upsBasicOutputStatus"))
    if source is not None:
        out["on_battery"] = int(source == 5)
    elif apc_output is not None:
        out["on_battery"] = int(apc_output == 3)
    for key, rfc, apc in (("input_voltage_volts", "upsInputVoltage", "upsAdvInputLineVoltage"),
                          ("output_voltage_volts", "upsOutputVoltage", "upsAdvOutputVoltage")):
        value = _first(v.column(rfc))
        if value is None:
            value = _num(v.scalar(apc))
        if value is not None:
            out[key] = value
    load = _first(v.column("upsOutputPercentLoad"))
    if load is None:
        load = _num(v.scalar("upsAdvOutputLoad"))
    if load is not None:
        out["load_ratio"] = load / 100
    replace = _num(v.scalar("upsAdvBatteryReplaceIndicator"))
    alarms = {str(a) for a in v.column("upsAlarmDescr").values()}
    if replace is not None:
        out["battery_replace"] = int(replace == 2 or UPS_ALARM_BATTERY_BAD in alarms)
    elif status is not None or alarms:
        out["battery_replace"] = int(UPS_ALARM_BATTERY_BAD in alarms)
    return out


def decode_ups(v: Values, target: str) -> List[Sample]:
    return [sample(f"commune_ups_{key}", value, target=target) for key, value in ups_values(v).items()]


DECODERS = {
    "printer": decode_printer,
    "interfaces": decode_interfaces,
    "host_resources": decode_host_resources,
    "ups": decode_ups,
}
