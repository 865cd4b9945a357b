"""Disk health on Windows over WMI (agent/inputs/windisk.py, agent/inputs/wmi.py): the parsers on
recorded MSFT_PhysicalDisk / MSFT_StorageReliabilityCounter / MSStorageDriver_FailurePredictStatus
instances (tests/fixtures/windows/), the smart input's Windows path with the WMI seam replaced by
a recording fake, and how the smart input chooses between smartctl and WMI. Windows itself cannot
run here."""
from __future__ import annotations

import logging
import sys

import pytest

from contract.catalog import catalog
from agent.inputs import smart, windisk, wmi
from agent.inputs.smart import Config, SmartInput
from agent.inputs.windisk import DiskReader, WmiSmartInput, disk_samples, healthy, predicted_failures
from agent.inputs.wmi import WmiError, cim_datetime, number, wql_string
from contract.schema import ConfigErrors, load_model
from tests.wmi_recordings import WBEM_E_ACCESS_DENIED, WBEM_E_NOT_SUPPORTED, RecordedWmi, recording


def value(samples, name, **labels):
    matches = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, f"{name}{labels}: {len(matches)} samples"
    return matches[0]


def absent(samples, name, **labels):
    return not [s for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def check_against_catalog(samples):
    cat = catalog()
    for s in samples:
        assert s.name in cat and cat[s.name].input == "smart", s.name
        assert set(s.labels) == set(cat[s.name].labels), f"{s.name}: {sorted(s.labels)}"


# ---------------------------------------------------------------- wmi helpers

def test_cim_datetime_reads_the_utc_offset_in_minutes():
    # 09:30 in Vietnam (UTC+7, +420 minutes) is 02:30 UTC
    assert cim_datetime("20261207093000.000000+420") == 1796610600.0
    assert cim_datetime("20261207023000.250000+000") == 1796610600.25
    assert cim_datetime("20261206213000.000000-300") == 1796610600.0
    for bad in (None, "", "00000000000000.000000:000", "2026120709300.000000+420", "********093000.000000+420",
                "20261340093000.000000+420"):
        assert cim_datetime(bad) is None, bad


def test_number_takes_wmi_64_bit_strings():
    assert number(7) == 7.0 and number("500107862016") == 500107862016.0 and number(" 27 ") == 27.0
    assert number(None) is None and number(True) is None and number("n/a") is None and number([1]) is None


def test_wql_string_escapes_backslashes_and_quotes():
    assert wql_string('a\\b"c') == '"a\\\\b\\"c"'


def test_wmi_error_tells_empty_classes_apart():
    assert WmiError("x", WBEM_E_NOT_SUPPORTED).means_no_instances
    assert not WmiError("x", WBEM_E_ACCESS_DENIED).means_no_instances
    assert not WmiError("x").means_no_instances


# ---------------------------------------------------------------- parsers on recordings

def counters():
    return {c["DeviceId"]: c for c in recording("MSFT_StorageReliabilityCounter")}


def disks():
    return {d["DeviceId"]: d for d in recording("MSFT_PhysicalDisk")}


def test_failure_prediction_is_matched_to_the_disk_number():
    found = predicted_failures(recording("Win32_DiskDrive"), recording("MSStorageDriver_FailurePredictStatus"))
    # InstanceName is the PNPDeviceID in another case, plus "_0"; NVMe and USB disks have none
    assert found == {"PhysicalDrive1": True}
    assert predicted_failures(recording("Win32_DiskDrive"), []) == {}
    assert predicted_failures([], recording("MSStorageDriver_FailurePredictStatus")) == {}


def test_nvme_ssd_healthy():
    device, s = disk_samples(disks()["0"], counters()["0"], None)
    check_against_catalog(s)
    assert device == "PhysicalDrive0"
    assert value(s, "commune_smart_up", device=device) == 1
    info = next(x for x in s if x.name == "commune_smart_info")
    assert info.labels == {"device": "PhysicalDrive0", "protocol": "NVMe", "type": "ssd",
                           "model": "SAMSUNG MZVLQ256HBJD-00BH1", "serial": "0025_388B_91B2_C4A1.",
                           "firmware": "FXV7201Q"}
    assert value(s, "commune_smart_healthy", device=device) == 1
    assert value(s, "commune_disk_health_status", device=device) == 0
    assert value(s, "commune_disk_operational_status", device=device, status="ok") == 1
    assert value(s, "commune_smart_percentage_used_ratio", device=device) == pytest.approx(0.07)
    assert value(s, "commune_smart_power_on_seconds_total", device=device) == 6812 * 3600
    assert value(s, "commune_smart_temperature_celsius", device=device) == 38
    assert value(s, "commune_smart_uncorrected_errors_total", device=device, operation="read") == 0
    assert value(s, "commune_smart_uncorrected_errors_total", device=device, operation="write") == 0


def test_sata_hdd_in_predictive_failure():
    device, s = disk_samples(disks()["1"], counters()["1"], True)
    check_against_catalog(s)
    assert device == "PhysicalDrive1"
    info = next(x for x in s if x.name == "commune_smart_info")
    assert (info.labels["protocol"], info.labels["type"], info.labels["serial"]) == ("ATA", "hdd", "WD-WCC2EUD41742")
    assert value(s, "commune_smart_healthy", device=device) == 0
    assert value(s, "commune_disk_health_status", device=device) == 1  # Warning
    assert value(s, "commune_disk_operational_status", device=device, status="predictive_failure") == 1
    assert absent(s, "commune_smart_percentage_used_ratio")  # an HDD's Wear 0 means nothing
    assert value(s, "commune_smart_power_on_seconds_total", device=device) == 38915 * 3600
    assert value(s, "commune_smart_temperature_celsius", device=device) == 41
    # "27" is a uint64, a string through WMI's scripting interface; the NULL write count is left out
    assert value(s, "commune_smart_uncorrected_errors_total", device=device, operation="read") == 27
    assert absent(s, "commune_smart_uncorrected_errors_total", operation="write")


def test_usb_stick_without_counters():
    device, s = disk_samples(disks()["2"], None, None)
    check_against_catalog(s)
    info = next(x for x in s if x.name == "commune_smart_info")
    assert (info.labels["protocol"], info.labels["type"]) == ("USB", "unknown")
    assert value(s, "commune_smart_healthy", device=device) == 1
    assert {x.name for x in s} == {"commune_smart_up", "commune_smart_info", "commune_smart_healthy",
                                   "commune_disk_health_status", "commune_disk_operational_status"}


@pytest.mark.parametrize("health,codes,predict,expected", [
    (0, [2], None, 1),
    (1, [2, 0xD010], None, 1),       # Warning, In Maintenance: not a failure prediction
    (1, [2, 5], None, 0),            # Predictive Failure
    (0, [2], True, 0),               # the driver's SMART verdict wins over "Healthy"
    (2, [6], None, 0),               # Unhealthy
    (0, [0xD013], None, 0),          # Failed Media
    (5, [0], None, None),            # nothing known
    (5, [0], False, 1),
    (None, None, None, None),
])
def test_healthy(health, codes, predict, expected):
    assert healthy({"HealthStatus": health, "OperationalStatus": codes}, predict) == expected


def test_unknown_codes_keep_their_number_and_a_disk_without_number_is_skipped():
    _, s = disk_samples({"DeviceId": "3", "BusType": 99, "OperationalStatus": [0xD099]}, {"Wear": None}, None)
    assert value(s, "commune_disk_operational_status", status="code_53401") == 1
    assert next(x for x in s if x.name == "commune_smart_info").labels["protocol"] == "bus_99"
    assert absent(s, "commune_smart_healthy")
    assert disk_samples({"DeviceId": "{6c3b2a4e}"}, None, None) == (None, [])


def test_zero_temperature_is_not_reported():
    s = windisk.counter_samples({"Temperature": 0, "Wear": 0, "PowerOnHours": 0}, "PhysicalDrive0", "ssd")
    assert absent(s, "commune_smart_temperature_celsius")
    assert value(s, "commune_smart_percentage_used_ratio") == 0  # a new SSD
    assert value(s, "commune_smart_power_on_seconds_total") == 0


# ---------------------------------------------------------------- reading through the seam

def test_reader_asks_the_association_with_the_escaped_object_id():
    fake = RecordedWmi()
    readings = DiskReader(fake).read()
    assert sorted(readings) == ["PhysicalDrive0", "PhysicalDrive1", "PhysicalDrive2"]
    # the counters were found through the association, so the ObjectId (quotes, backslashes) survived
    assert value(readings["PhysicalDrive0"], "commune_smart_temperature_celsius") == 38
    assert value(readings["PhysicalDrive1"], "commune_smart_healthy") == 0
    assocs = [wql for _, wql in fake.calls if wql.startswith("ASSOCIATORS OF")]
    assert len(assocs) == 3
    assert '\\\\\\\\MC-MOTCUA-01\\\\root/Microsoft' in assocs[0] and '\\"{6c3b2a4e' in assocs[0]
    assert {ns for ns, _ in fake.calls} == {"root\\Microsoft\\Windows\\Storage", "root\\wmi", "root\\cimv2"}


def test_without_failure_prediction_the_storage_api_alone_decides(caplog):
    fake = RecordedWmi(fail={"MSStorageDriver_FailurePredictStatus": WmiError("not supported", WBEM_E_NOT_SUPPORTED)})
    with caplog.at_level(logging.DEBUG, logger="agent.inputs.windisk"):
        readings = DiskReader(fake).read()
    assert value(readings["PhysicalDrive1"], "commune_smart_healthy") == 0  # still: Predictive Failure status
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    # no predictions: Win32_DiskDrive is not even asked
    assert not any("Win32_DiskDrive" in wql for _, wql in fake.calls)


def test_denied_counters_are_logged_once_and_cost_only_themselves(caplog):
    fake = RecordedWmi(fail={"MSFT_StorageReliabilityCounter": WmiError("Access denied", WBEM_E_ACCESS_DENIED)})
    reader = DiskReader(fake)
    with caplog.at_level(logging.WARNING, logger="agent.inputs.windisk"):
        first, second = reader.read(), reader.read()
    assert first == second
    assert value(first["PhysicalDrive0"], "commune_smart_healthy") == 1
    assert absent(first["PhysicalDrive0"], "commune_smart_temperature_celsius")
    assert len(caplog.records) == 3  # once per disk, not once per reading
    assert "no reliability counters for PhysicalDrive0: Access denied" in caplog.records[0].getMessage()


def test_storage_api_failure_fails_the_collection():
    fake = RecordedWmi(fail={"MSFT_PhysicalDisk": WmiError("Invalid namespace", 0x8004100E)})
    inp = WmiSmartInput(Config(), fake, clock=lambda: 1000.0)
    with pytest.raises(WmiError):
        inp.collect()


def test_wmi_input_re_emits_between_refreshes_and_drops_removed_disks():
    now = [1_800_000_000.0]
    fake = RecordedWmi()
    inp = WmiSmartInput(load_model(Config, {"refresh_interval": "30m"}), fake, clock=lambda: now[0])
    first = inp.collect()
    check_against_catalog(first)
    queries = len(fake.calls)
    assert value(first, "commune_smart_last_read_timestamp_seconds", device="PhysicalDrive1") == now[0]
    now[0] += 60
    again = inp.collect()
    assert len(fake.calls) == queries  # nothing read again within refresh_interval
    assert again == first
    fake.data["MSFT_PhysicalDisk"] = [d for d in fake.data["MSFT_PhysicalDisk"] if d["DeviceId"] != "2"]
    now[0] += 1800
    later = inp.collect()
    assert {s.labels["device"] for s in later} == {"PhysicalDrive0", "PhysicalDrive1"}
    assert value(later, "commune_smart_last_read_timestamp_seconds", device="PhysicalDrive0") == now[0]


# ---------------------------------------------------------------- choosing the source

def test_windows_without_smartctl_reads_wmi(monkeypatch, caplog):
    monkeypatch.setattr(smart, "find_smartctl", lambda setting: None)
    fake = RecordedWmi()
    with caplog.at_level(logging.INFO, logger="agent.inputs.smart"):
        built = smart.build(Config(), None, system="windows", query=fake)
    assert [type(i) for i in built] == [WmiSmartInput]
    assert built[0].name == "smart" and built[0].interval == 60
    assert [r.getMessage() for r in caplog.records] == [
        "smart: smartctl not found; reading disk health from Windows (WMI Storage Management API)"]
    assert value(built[0].collect(), "commune_smart_healthy", device="PhysicalDrive1") == 0


def test_smartctl_stays_the_richer_source_on_windows(monkeypatch):
    monkeypatch.setattr(smart, "find_smartctl", lambda setting: "C:\\Program Files\\smartmontools\\bin\\smartctl.exe")
    built = smart.build(Config(), None, system="windows", query=RecordedWmi())
    assert [type(i) for i in built] == [SmartInput]
    assert built[0].system == "windows"


def test_forced_sources(monkeypatch, caplog):
    monkeypatch.setattr(smart, "find_smartctl", lambda setting: "/usr/sbin/smartctl")
    built = smart.build(load_model(Config, {"source": "wmi"}), None, system="windows", query=RecordedWmi())
    assert [type(i) for i in built] == [WmiSmartInput]
    with caplog.at_level(logging.INFO, logger="agent.inputs.smart"):
        assert smart.build(load_model(Config, {"source": "wmi"}), None, system="linux") == []
    assert caplog.records[-1].getMessage() == "smart: source wmi needs Windows; no SMART metrics"
    monkeypatch.setattr(smart, "find_smartctl", lambda setting: None)
    assert smart.build(load_model(Config, {"source": "smartctl"}), None, system="windows", query=RecordedWmi()) == []


def test_configured_smartctl_missing_on_windows_falls_back_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(smart, "find_smartctl", lambda setting: None)
    with caplog.at_level(logging.INFO, logger="agent.inputs.smart"):
        built = smart.build(load_model(Config, {"smartctl": "D:\\tools\\smartctl.exe"}), None, system="windows",
                            query=RecordedWmi())
    assert [type(i) for i in built] == [WmiSmartInput]
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "smart: smartctl D:\\tools\\smartctl.exe does not exist; "
                          "reading disk health from Windows (WMI Storage Management API)")]


def test_source_is_validated():
    with pytest.raises(ConfigErrors) as exc:
        load_model(Config, {"source": "wmic"}, path="smart")
    assert "smart.source: must be one of auto, smartctl, wmi, got 'wmic'" in [str(e) for e in exc.value.errors]


class _ComError(Exception):
    pass


def fake_pywin32(monkeypatch, objects=None, error=None):
    """pythoncom, pywintypes and win32com.client as far as agent.inputs.wmi uses them."""
    import types

    events = []
    pythoncom = types.SimpleNamespace(CoInitialize=lambda: events.append("init"),
                                      CoUninitialize=lambda: events.append("uninit"))
    prop = lambda name, value: types.SimpleNamespace(Name=name, Value=value)

    class Service:
        def ExecQuery(self, wql, language, flags):  # noqa: N802 (COM names)
            events.append(("query", wql, language, flags))
            if error is not None:
                raise error
            return [types.SimpleNamespace(Properties_=[prop(k, v) for k, v in o.items()]) for o in objects or []]

    def get_object(moniker):
        events.append(("moniker", moniker))
        return Service()

    client = types.SimpleNamespace(GetObject=get_object)
    monkeypatch.setitem(sys.modules, "pythoncom", pythoncom)
    monkeypatch.setitem(sys.modules, "pywintypes", types.SimpleNamespace(com_error=_ComError))
    monkeypatch.setitem(sys.modules, "win32com", types.SimpleNamespace(client=client))
    monkeypatch.setitem(sys.modules, "win32com.client", client)
    return events


def test_wmi_query_through_pywin32(monkeypatch):
    events = fake_pywin32(monkeypatch, [{"DeviceId": "0", "OperationalStatus": (2, 5), "Size": "500107862016"}])
    rows = wmi.query("root\\Microsoft\\Windows\\Storage", "SELECT * FROM MSFT_PhysicalDisk")
    assert rows == [{"DeviceId": "0", "OperationalStatus": [2, 5], "Size": "500107862016"}]
    assert events == ["init", ("moniker", "winmgmts:{impersonationLevel=impersonate}!\\\\.\\root\\Microsoft\\Windows\\Storage"),
                      ("query", "SELECT * FROM MSFT_PhysicalDisk", "WQL", 0x30), "uninit"]


def test_wmi_query_errors_carry_the_wbem_code(monkeypatch):
    # DISP_E_EXCEPTION with WMI's own status in EXCEPINFO, as pywin32 raises it
    error = _ComError(-2147352567, "Exception occurred.",
                      (0, "SWbemServicesEx", "Not supported ", None, 0, -2147217396), None)
    events = fake_pywin32(monkeypatch, error=error)
    with pytest.raises(WmiError) as exc:
        wmi.query("root\\wmi", "SELECT * FROM MSStorageDriver_FailurePredictStatus")
    assert exc.value.code == WBEM_E_NOT_SUPPORTED and exc.value.means_no_instances
    assert str(exc.value) == ("root\\wmi: SELECT * FROM MSStorageDriver_FailurePredictStatus: "
                              "Not supported  (0x8004100C)")
    assert events[-1] == "uninit"


def test_wmi_module_loads_without_pywin32():
    # the seam imports pywin32 only when called; on Linux the call fails with ImportError
    with pytest.raises(ImportError):
        wmi.query("root\\cimv2", "SELECT * FROM Win32_Printer")
