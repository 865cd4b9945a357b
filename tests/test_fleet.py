"""The fleet inventory: the example loads, every validation rule has an invalid case with its exact
message, and the exported samples are catalogued with the labels the catalog lists."""
from __future__ import annotations

import textwrap

import pytest

from contract.catalog import catalog
from contract.schema import ConfigErrors
from collector.fleet import YEAR_SECONDS, fleet_samples, load_fleet, parse_fleet
from tests.support import REPO

EXAMPLE = REPO / "config" / "fleet.example.yaml"

BASE = """\
communes:
  - code: "09667"
    name: "Xã Tân Lập"
    province: "Phú Thọ"
devices:
  - id: pc-01
    commune: "09667"
    kind: pc
    model: "Dell OptiPlex 3020"
    purchase_date: 2015-03-12
    agent: pc-01
"""


def errors_of(text: str) -> list:
    with pytest.raises(ConfigErrors) as info:
        parse_fleet(textwrap.dedent(text), "fleet.yaml")
    return [str(e) for e in info.value.errors]


def test_example_loads_and_exports_catalogued_samples():
    fleet = load_fleet(str(EXAMPLE))
    assert {c.code for c in fleet.communes} == {"09667", "09670"}
    assert {d.kind for d in fleet.devices} == {"pc", "laptop", "printer", "router", "ups"}
    cat = catalog()
    samples = fleet_samples(fleet)
    for s in samples:
        assert s.name in cat, s.name
        assert cat[s.name].input == "collector"
        assert set(s.labels) == set(cat[s.name].labels), s
    names = {s.name for s in samples}
    assert names == {m.name for m in cat.values()
                     if m.name.startswith(("commune_device_", "commune_office_", "commune_fleet_"))}
    defaults = {s.labels["kind"]: s.value / (365.25 * 86400) for s in samples
                if s.name == "commune_fleet_default_rated_life_seconds"}
    assert defaults == {"pc": 5.0, "laptop": 4.0, "printer": 5.0, "router": 5.0, "ups": 5.0}


def test_sample_values():
    fleet = parse_fleet(BASE + (
        "  - id: printer-01\n"
        '    commune: "09667"\n'
        "    kind: printer\n"
        '    model: "HP LaserJet Pro M404dn"\n'
        "    rated_life_pages: 300000\n"
        "    rated_life_years: 7\n"
        "    agent: pc-01\n"
        "    target: printer-01\n"))
    got = {(s.name, s.labels.get("device")): s for s in fleet_samples(fleet)}
    assert got[("commune_device_purchase_timestamp_seconds", "pc-01")].value == 1426118400.0  # 2015-03-12Z
    assert got[("commune_device_rated_life_seconds", "pc-01")].value == 5 * YEAR_SECONDS  # default of pc
    assert got[("commune_device_rated_life_seconds", "printer-01")].value == 7 * YEAR_SECONDS
    assert got[("commune_device_rated_life_pages", "printer-01")].value == 300000
    assert ("commune_device_purchase_timestamp_seconds", "printer-01") not in got  # unknown date: no series
    assert got[("commune_device_info", "printer-01")].labels == {
        "commune": "09667", "device": "printer-01", "kind": "printer", "model": "HP LaserJet Pro M404dn",
        "location": "", "address": "", "agent": "pc-01", "target": "printer-01"}
    assert got[("commune_office_info", None)].labels == {"commune": "09667", "name": "Xã Tân Lập",
                                                         "province": "Phú Thọ"}


DEVICE = """\
  - id: {id}
    commune: "{commune}"
    kind: {kind}
    model: "M"
    agent: pc-01
"""

INVALID = {
    "unknown commune": (
        BASE + DEVICE.format(id="pc-02", commune="99999", kind="pc").replace("agent: pc-01", "agent: pc-02"),
        'fleet.yaml:13: devices[1].commune: unknown commune \'99999\' (known: 09667)'),
    "duplicate device id": (
        BASE + DEVICE.format(id="pc-01", commune="09667", kind="pc").replace("agent: pc-01", "agent: pc-02"),
        "fleet.yaml:12: devices[1].id: duplicate device id 'pc-01' in commune '09667' (first at devices[0])"),
    "duplicate commune code": (
        BASE.replace("devices:", '  - {code: "09667", name: "X", province: "Y"}\ndevices:'),
        "fleet.yaml:5: communes[1].code: duplicate commune code '09667' (first at communes[0])"),
    "bad date": (
        BASE.replace("2015-03-12", "2015-13-12"),
        "fleet.yaml:10: devices[0].purchase_date: bad date '2015-13-12', expected YYYY-MM-DD"),
    "date too early": (
        BASE.replace("2015-03-12", "1985-01-01"),
        "fleet.yaml:10: devices[0].purchase_date: bad date '1985-01-01', before 1990"),
    "kind": (
        BASE.replace("kind: pc", "kind: scanner"),
        "fleet.yaml:8: devices[0].kind: unknown value 'scanner', expected one of: pc, laptop, printer, router, ups"),
    "bad device id": (
        BASE.replace("id: pc-01", "id: PC 01"),
        "fleet.yaml:6: devices[0].id: must be lowercase letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"),
    "bad commune code": (
        BASE.replace('"09667"', '"Tân Lập"'),
        "fleet.yaml:2: communes[0].code: must be lowercase letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"),
    "empty name": (
        BASE.replace('name: "Xã Tân Lập"', 'name: ""'),
        "fleet.yaml:3: communes[0].name: must not be empty"),
    "empty model": (
        BASE.replace('model: "Dell OptiPlex 3020"', 'model: " "'),
        "fleet.yaml:9: devices[0].model: must not be empty"),
    "rated life": (
        BASE + "    rated_life_years: 0\n",
        "fleet.yaml:12: devices[0].rated_life_years: must be greater than 0 and at most 50"),
    "pages on a pc": (
        BASE + "    rated_life_pages: 1000\n",
        "fleet.yaml:12: devices[0].rated_life_pages: applies to printers only, not kind pc"),
    "pages not positive": (
        BASE + DEVICE.format(id="printer-01", commune="09667", kind="printer")
        + "    target: printer-01\n    rated_life_pages: 0\n",
        "fleet.yaml:18: devices[1].rated_life_pages: must be greater than 0"),
    "agent missing": (
        BASE.replace("    agent: pc-01\n", ""),
        "fleet.yaml:6: devices[0].agent: required for kind pc: the id of the agent running on the device"),
    "target missing": (
        BASE + DEVICE.format(id="router-01", commune="09667", kind="router"),
        "fleet.yaml:12: devices[1].target: required for kind router: the SNMP target name in the polling "
        "agent's config"),
    "target on a pc": (
        BASE + "    target: x\n",
        "fleet.yaml:12: devices[0].target: applies to printer, router and ups only, not kind pc"),
    "tied twice": (
        BASE + DEVICE.format(id="pc-02", commune="09667", kind="pc"),
        "fleet.yaml:12: devices[1]: agent 'pc-01' is already tied to device 'pc-01' (devices[0])"),
    "default of unknown kind": (
        BASE + "defaults:\n  rated_life_years: {scanner: 3}\n",
        "fleet.yaml:13: defaults.rated_life_years.scanner: unknown kind 'scanner', expected one of: "
        "pc, laptop, printer, router, ups"),
    "unknown field": (
        BASE + "    colour: grey\n",
        "fleet.yaml:12: devices[0].colour: unknown field 'colour' (known fields: address, agent, asset_tag, commune, "
        "id, kind, location, model, purchase_date, rated_life_pages, rated_life_years, serial, target)"),
    "communes missing": (
        "devices: []\n",
        "fleet.yaml:1: communes: required field is missing"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid(case):
    text, message = INVALID[case]
    assert errors_of(text) == [message]


def test_impossible_date_is_named():
    assert errors_of(BASE.replace("2015-03-12", "2015-02-30")) == [
        "fleet.yaml:10: devices[0].purchase_date: bad date '2015-02-30', expected YYYY-MM-DD"]


def test_every_error_is_reported():
    text = BASE.replace("kind: pc", "kind: scanner") \
        + DEVICE.format(id="pc-02", commune="09667", kind="pc").replace("agent: pc-01", "agent: pc-02") \
        + "    purchase_date: 2015-03-xx\n"
    assert errors_of(text) == [
        "fleet.yaml:8: devices[0].kind: unknown value 'scanner', expected one of: pc, laptop, printer, router, ups",
        "fleet.yaml:17: devices[1].purchase_date: bad date '2015-03-xx', expected YYYY-MM-DD"]


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigErrors) as info:
        load_fleet(str(tmp_path / "absent.yaml"))
    assert str(info.value) == f"{tmp_path / 'absent.yaml'}: cannot read fleet file: No such file or directory"
