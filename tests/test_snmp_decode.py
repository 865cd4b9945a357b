"""SNMP input, pure parts: decoders, profile selection and config, on recorded data (no network)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from contract.catalog import catalog
from agent.inputs.snmp.classify import classify, enterprise, vendor_of
from agent.inputs.snmp.config import Config
from agent.inputs.snmp.decode import (DECODERS, ERROR_STATE_BITS, error_state_conditions, interface_speed_bytes,
                                      supply_class, supply_ratio, supply_type)
from agent.inputs.snmp.profiles import (Values, detect_roots, load_profiles, parse_profile, probe_from,
                                        snmprec_values, subset, system_from)
from contract.schema import ConfigErrors, load_model, load_yaml
from tests.support import LOCAL_FIXTURES, REPO, shared_fixture

OWN = LOCAL_FIXTURES / "snmp"


def decode_recording(path: Path, target: str = "t"):
    """Classify and decode a recording the way a poll would, without the network."""
    data = snmprec_values(path.read_text(encoding="utf-8", errors="replace"))
    cls = classify(system_from(data), probe_from(data, detect_roots()))
    samples = []
    for name in cls.profiles[1:]:
        prof = load_profiles()[name]
        samples += DECODERS[name](Values(prof, subset(data, prof)), target)
    return cls, samples


def by_name(samples, name):
    return [s for s in samples if s.name == name]


# ---------------------------------------------------------------- table tests of the decoders

@pytest.mark.parametrize("level,cap,expected", [
    (55, 100, 0.55), (0, 100, 0.0), (1060, 5300, 0.2), (100, 100, 1.0),
    (120, 100, 1.0),        # refilled cartridge reporting more than its capacity: clamped
    (-1, 100, None),        # other
    (-2, 100, None),        # unknown
    (-3, 100, None),        # some remaining: not a number we can report
    (-3, -2, None), (100, -2, None),  # Sharp waste toner: capacity unknown
    (50, 0, None), (50, -1, None), (None, 100, None), (50, None, None),
])
def test_supply_ratio(level, cap, expected):
    got = supply_ratio(level, cap)
    assert got == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize("raw,on", [
    (None, None),
    (b"", set()),                      # Epson: empty string, no condition
    (b"\x00", set()),                  # Brother, Canon TM
    (bytes.fromhex("2000"), {"low_toner"}),          # Sharp
    (bytes.fromhex("0100"), {"service_requested"}),  # Konica Minolta C250i
    (bytes.fromhex("2800"), {"low_toner", "door_open"}),
    (bytes.fromhex("80"), {"low_paper"}),
    (bytes.fromhex("4000"), {"no_paper"}),
    (bytes.fromhex("0480"), {"jammed", "input_tray_missing"}),
    (bytes.fromhex("0002"), {"overdue_preventive_maintenance"}),
    (bytes.fromhex("0004"), {"input_tray_empty"}),
    (bytes.fromhex("ffff"), set(ERROR_STATE_BITS)),
])
def test_error_state_bits(raw, on):
    got = error_state_conditions(raw)
    if on is None:
        assert got is None
        return
    assert set(got) == set(ERROR_STATE_BITS) and len(ERROR_STATE_BITS) == 15
    assert {k for k, v in got.items() if v} == on


@pytest.mark.parametrize("type_value,descr,expected_type,expected_class", [
    (3, "Cyan Toner", "toner", "consumed"),
    (4, "Waste Toner", "wasteToner", "receptacle"),
    (None, "Toner (Cyan)", "toner", "consumed"),                    # Konica: no type column
    (None, "Waste Toner Box", "wasteToner", "receptacle"),
    (None, "Drum Cartridge (R1), PN 013R00662", "opc", "consumed"),   # Xerox
    (None, "Developer Cartridge (Cyan)", "developer", "consumed"),
    (None, "Black Cartridge HP CF410A", "tonerCartridge", "consumed"),  # JetDirect
    (None, "Fusing Unit", "fuser", "consumed"),
    (None, "Mystery part", "unknown", "consumed"),
    (1, "Waste Ink Pad", "wasteInk", "receptacle"),                  # 'other' refined by the text
])
def test_supply_type_and_class(type_value, descr, expected_type, expected_class):
    t = supply_type(type_value, descr)
    assert t == expected_type
    assert supply_class(None, t) == expected_class
    assert supply_class(3, t) == "consumed" and supply_class(4, t) == "receptacle"


@pytest.mark.parametrize("high,speed,expected", [
    (1000, 4294967295, 125_000_000.0), (None, 100_000_000, 12_500_000.0), (0, 10_000_000, 1_250_000.0),
    (0, 0, 0.0), (None, None, None),
])
def test_interface_speed(high, speed, expected):
    assert interface_speed_bytes(high, speed) == expected


@pytest.mark.parametrize("system,probes,kind,profiles", [
    ({"sysObjectID": "1.3.6.1.4.1.2435.2.3.9.1"}, {"prtMarkerSuppliesLevel": -3, "ifOperStatus": 1},
     "printer", ("system", "printer")),
    ({"sysObjectID": "1.3.6.1.4.1.318.1.3.27"}, {"upsBasicIdentModel": b"Smart-UPS", "ifOperStatus": 1},
     "ups", ("system", "ups")),
    ({"sysObjectID": "1.3.6.1.4.1.40614"}, {"upsIdentManufacturer": b"EAST"}, "ups", ("system", "ups")),
    ({"sysObjectID": "1.3.6.1.4.1.8072.3.2.10", "ipForwarding": 1}, {"ifOperStatus": 1, "hrProcessorLoad": 3},
     "router", ("system", "interfaces", "host_resources")),
    ({"sysObjectID": "1.3.6.1.4.1.9.1.1", "ipForwarding": 2, "dot1dBaseNumPorts": 24}, {"ifOperStatus": 1},
     "switch", ("system", "interfaces")),
    ({"sysObjectID": "1.3.6.1.4.1.7367"}, {"ifOperStatus": 1}, "router", ("system", "interfaces")),
    ({"sysObjectID": "1.3.6.1.4.1.99999.1"}, {}, "other", ("system",)),
    ({}, {"hrPrinterStatus": 3}, "printer", ("system", "printer")),
])
def test_profile_selection(system, probes, kind, profiles):
    c = classify(system, probes)
    assert (c.kind, c.profiles) == (kind, profiles)


def test_vendor_lookup():
    assert enterprise("1.3.6.1.4.1.18334.1.1.1.2.1.117.2.2") == 18334
    assert enterprise("1.3.6.1.2.1.1") is None
    assert vendor_of("1.3.6.1.4.1.18334.1", "")[0] == "Konica Minolta"
    assert vendor_of("1.3.6.1.4.1.8072.3.2.10", "Linux OpenWrt 5.4.137")[0] == "OpenWrt"
    assert vendor_of("1.3.6.1.4.1.424242", "") == ("enterprise 424242", None)


def test_profiles_are_reviewed_data():
    profiles = load_profiles()
    assert set(profiles) == {"system", "printer", "interfaces", "host_resources", "ups"}
    for p in profiles.values():
        assert p.source, p.name
        for oid in list(p.get.values()) + list(p.walk.values()):
            assert oid[:4] == (1, 3, 6, 1)
    with pytest.raises(ValueError, match="detect object nope"):
        parse_profile("profile: x\ndetect: [nope]\nwalk: {a: 1.3.6.1.2}\n")
    with pytest.raises(ValueError, match="scalar instance"):
        parse_profile("profile: x\nget: {a: 1.3.6.1.2}\n")


# ---------------------------------------------------------------- our own recordings

def test_own_printer_recording():
    cls, s = decode_recording(OWN / "printer.snmprec")
    assert (cls.kind, cls.vendor, cls.model) == ("printer", "HP", "HP LaserJet Pro M404dn")
    ratios = {x.labels["description"]: x.value for x in by_name(s, "commune_printer_supply_level_ratio")}
    assert ratios == {"Black Cartridge HP CF259A": 0.08, "Toner Collection Unit": 0.85}  # fuser is -3: none
    levels = {x.labels["description"]: x.value for x in by_name(s, "commune_printer_supply_level")}
    assert levels["Fuser Kit"] == -3
    klass = {x.labels["description"]: x.labels["class"] for x in by_name(s, "commune_printer_supply_level")}
    assert klass["Toner Collection Unit"] == "receptacle"
    assert [x.value for x in by_name(s, "commune_printer_pages_total")] == [48213]
    assert [x.value for x in by_name(s, "commune_printer_status")] == [3]
    on = {x.labels["condition"] for x in by_name(s, "commune_printer_error_state") if x.value}
    assert on == {"low_toner", "door_open"}
    alerts = {(a.labels["severity"], a.labels["code"], a.labels["description"])
              for a in by_name(s, "commune_printer_alert_info")}
    assert alerts == {("warning", "markerTonerAlmostEmpty", "Black cartridge low"),
                      ("critical", "coverOpen", "Front door open")}
    covers = {x.labels["description"]: x.value for x in by_name(s, "commune_printer_cover_open")}
    assert covers == {"Front Door": 1, "Rear Door": 0}
    trays = {x.labels["name"]: x.value for x in by_name(s, "commune_printer_input_tray_level")}
    assert trays == {"Tray 1": -3, "Tray 2": 0}


def test_own_router_recording():
    cls, s = decode_recording(OWN / "router.snmprec")
    assert (cls.kind, cls.vendor) == ("router", "TP-Link")
    wan = {x.name: x.value for x in s if x.labels.get("if_name") == "wan"}
    assert wan["commune_snmp_if_in_octets_total"] == 7511517166   # 64-bit, above 2^32
    assert wan["commune_snmp_if_out_octets_total"] == 987654321
    assert wan["commune_snmp_if_in_errors_total"] == 42
    assert wan["commune_snmp_if_speed_bytes"] == 125_000_000
    lan = {x.name: x.value for x in s if x.labels.get("if_name") == "lan"}
    assert lan["commune_snmp_if_oper_status"] == 2
    assert lan["commune_snmp_if_in_unicast_packets_total"] == 0   # no HC column: 32-bit fallback
    info = [x for x in by_name(s, "commune_snmp_if_info") if x.labels["if_name"] == "wan"][0]
    assert info.labels["if_alias"] == "VNPT FTTH uplink"
    assert [x.value for x in by_name(s, "commune_snmp_cpu_load_ratio")] == [0.37]
    assert [x.value for x in by_name(s, "commune_snmp_storage_used_bytes")] == [90112 * 1024]


@pytest.mark.parametrize("name,expected", [
    ("ups_apc", dict(battery_status=2, battery_charge_ratio=0.96, battery_runtime_seconds=2820,
                     on_battery=0, input_voltage_volts=228, output_voltage_volts=230, load_ratio=0.27,
                     battery_replace=1)),
    ("ups_rfc1628", dict(battery_status=2, battery_charge_ratio=1.0, battery_runtime_seconds=0,
                         on_battery=0, input_voltage_volts=236, output_voltage_volts=219, load_ratio=0.2,
                         battery_replace=0)),
])
def test_own_ups_recordings(name, expected):
    cls, s = decode_recording(OWN / f"{name}.snmprec")
    assert cls.kind == "ups"
    got = {x.name[len("commune_ups_"):]: x.value for x in s}
    assert got == pytest.approx(expected)


# ---------------------------------------------------------------- the shared real recordings

def _expected_devices():
    path = shared_fixture("snmp", "expected.json")
    return {d["name"]: d for d in json.loads(path.read_text())["devices"]}


def test_shared_recordings_offline():
    """Every real recording decodes to what expected.json says (the live test repeats it over UDP)."""
    devices = _expected_devices()
    for name, dev in devices.items():
        path = shared_fixture("snmp", dev["file"])
        cls, s = decode_recording(path, name)
        check_against_expected(dev, cls, s)


def check_against_expected(dev, cls, s):
    name = dev["name"]
    assert cls.kind == dev["kind"], name
    if dev["kind"] == "printer":
        assert cls.vendor == dev["vendor"], name
        levels = {x.labels["index"]: x for x in by_name(s, "commune_printer_supply_level")}
        caps = {x.labels["index"]: x.value for x in by_name(s, "commune_printer_supply_max_capacity")}
        ratios = {x.labels["index"]: x.value for x in by_name(s, "commune_printer_supply_level_ratio")}
        assert set(levels) == {sup["index"] for sup in dev["supplies"]}, name
        for sup in dev["supplies"]:
            idx = sup["index"]
            assert levels[idx].value == sup["level"], (name, idx)
            assert caps[idx] == sup["max_capacity"], (name, idx)
            assert levels[idx].labels["description"] == sup["description"], (name, idx)
            if sup["type_name"]:
                assert levels[idx].labels["type"] == sup["type_name"], (name, idx)
            if sup["percent"] is None:
                assert idx not in ratios, (name, idx)
            else:
                assert ratios[idx] == pytest.approx(sup["percent"] / 100, abs=0.0001), (name, idx)
        pages = [x.value for x in by_name(s, "commune_printer_pages_total")]
        assert pages == ([dev["page_count"]] if dev["page_count"] is not None else []), name
        states = {x.labels["condition"]: x.value for x in by_name(s, "commune_printer_error_state")}
        if dev["error_state_present"]:
            assert len(states) == 15, name
            expected_on = {_snake(b) for b in dev["error_state_bits"]}
            assert {k for k, v in states.items() if v} == expected_on, name
        else:
            assert states == {}, name
        assert by_name(s, "commune_printer_status") == []  # no recording has hrPrinterStatus
        trays = {x.labels["index"]: x.value for x in by_name(s, "commune_printer_input_tray_level")}
        for t in dev["input_trays"]:  # expected.json lists the trays that have a name
            assert trays[t["index"]] == t["current_level"], (name, t)
    else:
        ifs = {x.labels["if_index"]: x for x in by_name(s, "commune_snmp_if_info")}
        assert sorted(int(i) for i in ifs) == dev["ifIndexes"], name
        series = {}
        for x in s:
            if "if_index" in x.labels:
                series[(x.name, int(x.labels["if_index"]))] = x.value
        for itf in dev["interfaces"]:
            i = itf["ifIndex"]
            expected_name = itf["ifName"] or itf["ifDescr"] or ""
            assert ifs[str(i)].labels["if_name"] == expected_name, (name, i)
            assert series.get(("commune_snmp_if_oper_status", i)) == itf["ifOperStatus"], (name, i)
            assert series.get(("commune_snmp_if_admin_status", i)) == itf["ifAdminStatus"], (name, i)
            assert series.get(("commune_snmp_if_in_octets_total", i)) == itf["in_octets_best"], (name, i)
            assert series.get(("commune_snmp_if_out_octets_total", i)) == itf["out_octets_best"], (name, i)
            assert series.get(("commune_snmp_if_in_errors_total", i)) == itf["ifInErrors"], (name, i)
            assert series.get(("commune_snmp_if_out_errors_total", i)) == itf["ifOutErrors"], (name, i)
            speed = interface_speed_bytes(itf["ifHighSpeed"], itf["ifSpeed"])
            assert series.get(("commune_snmp_if_speed_bytes", i)) == speed, (name, i)


def _snake(camel: str) -> str:
    out = "".join("_" + c.lower() if c.isupper() else c for c in camel)
    return {"overdue_prevent_maint": "overdue_preventive_maintenance"}.get(out, out)


# ---------------------------------------------------------------- config

def load_snmp(text: str) -> Config:
    data, lines = load_yaml(textwrap.dedent(text), "agent.yaml")
    return load_model(Config, data["snmp"], file="agent.yaml", lines=lines, path="snmp")


VALID = """
snmp:
  auths:
    office: {version: "2c", community: "s3cr3t-community"}
    v3: {version: "3", username: monitor, auth_protocol: SHA-256, auth_password: "authpass-xyz-1",
         priv_protocol: AES-256, priv_password: "privpass-xyz-2"}
  targets:
    - {name: printer-1, address: 192.168.1.20, auth: office}
    - {name: router, address: 192.168.1.1, auth: v3, profiles: [interfaces, host_resources], interval: 30s}
"""


def test_config_valid_and_defaults():
    cfg = load_snmp(VALID)
    t = cfg.targets[0]
    assert (t.port, t.profiles, cfg.target_interval(t), cfg.target_timeout(t), cfg.target_retries(t)) == \
        (161, ["auto"], 60.0, 2.0, 1)
    assert cfg.target_deadline(cfg.targets[1]) == 29.0
    assert cfg.auths["v3"].security_level == "authPriv"
    assert "s3cr3t" not in repr(cfg) and "authpass" not in repr(cfg) and "privpass" not in repr(cfg)


@pytest.mark.parametrize("text,message", [
    ("""
     snmp:
       auths: {office: {community: x}}
       targets:
         - {name: a, address: 10.0.0.1, auth: office}
         - {name: b, address: 10.0.0.2, auth: office}
         - {name: c, address: 10.0.0.3, auth: ofice}
     """, 'agent.yaml:7: snmp.targets[2].auth: unknown auth "ofice"'),
    ("""
     snmp:
       targets:
         - {name: a, address: 10.0.0.1}
         - {name: a, address: 10.0.0.2}
     """, "agent.yaml:5: snmp.targets[1].name: duplicate target name 'a' (also targets[0])"),
    ("""
     snmp:
       targets:
         - {name: a, address: 10.0.0.1, profiles: [printer, toaster]}
     """, 'agent.yaml:4: snmp.targets[0].profiles[1]: unknown profile "toaster" (known: auto, system, '
         'printer, interfaces, host_resources, ups)'),
    ("""
     snmp:
       auths: {v3: {version: "3", username: u, auth_protocol: SHA, auth_password: short}}
     """, "agent.yaml:3: snmp.auths.v3.auth_password: must be at least 8 characters (RFC 3414)"),
    ("""
     snmp:
       auths: {v3: {version: "3", username: u, priv_protocol: AES, priv_password: longenough}}
     """, "agent.yaml:3: snmp.auths.v3.priv_protocol: privacy needs authentication: set auth_protocol"),
    ("""
     snmp:
       auths: {v3: {version: "3", auth_protocol: SHA, auth_password: longenough}}
     """, "agent.yaml:3: snmp.auths.v3.username: required for version 3"),
    ("""
     snmp:
       auths: {v3: {version: "3", username: u, auth_protocol: SHA-1024, auth_password: longenough}}
     """, "agent.yaml:3: snmp.auths.v3.auth_protocol: unknown value 'SHA-1024', expected one of: MD5, SHA, "
         "SHA-224, SHA-256, SHA-384, SHA-512"),
    ("""
     snmp:
       targets:
         - {name: a, address: 10.0.0.1, port: 70000}
     """, "agent.yaml:4: snmp.targets[0].port: must be between 1 and 65535, got 70000"),
    ("""
     snmp:
       interval: 30s
       targets:
         - {name: a, address: 10.0.0.1, deadline: 45s}
     """, "agent.yaml:5: snmp.targets[0].deadline: must be greater than 0s and not longer than the "
         "interval (30s), got 45s"),
    ("""
     snmp:
       discovery: {enabled: true, subnets: [10.0.0.0/8]}
     """, "agent.yaml:3: snmp.discovery.subnets[0]: 10.0.0.0/8 has 16777216 addresses; at most 4096 (a /20)"),
])
def test_config_errors(text, message):
    with pytest.raises(ConfigErrors) as exc:
        load_snmp(text)
    assert message in [str(e) for e in exc.value.errors]
    for secret in ("longenough", "short"):
        assert secret not in str(exc.value)


def test_catalog_lists_every_snmp_metric():
    names = {m.name for m in catalog().values() if m.input in ("snmp", "discovery")}
    emitted = set()
    for f in OWN.glob("*.snmprec"):
        _cls, s = decode_recording(f)
        for x in s:
            emitted.add(x.name)
            assert set(x.labels) <= set(catalog()[x.name].labels), x
    assert emitted <= names


def test_agent_without_targets_never_imports_pysnmp(tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("snmp:\n  auths: {office: {community: x}}\n")
    code = (
        "import sys\n"
        "from agent.config import load_config\n"
        "from agent import inputs\n"
        f"c = load_config({str(cfg)!r})\n"
        "from agent.inputs import snmp\n"
        "assert snmp.build(c.snmp, c) == []\n"
        "assert not [m for m in sys.modules if m.startswith('pysnmp')], 'pysnmp imported'\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
