"""The inventory input: DMI read from a sysfs tree laid out as the kernel does (a Dell desktop and a
Lenovo laptop whose firmware left placeholders), Windows WMI instances with their documented property
names (through the seam, as agent/inputs/wmi.py hands them over), and the interfaces from psutil."""
from __future__ import annotations

import datetime as dt
import socket
from collections import namedtuple
from pathlib import Path

from agent.inputs import inventory
from agent.inputs.inventory import Config, InventoryInput, facts_from_dmi, facts_from_wmi, network_samples

Addr = namedtuple("Addr", "family address netmask broadcast ptp")
Stat = namedtuple("Stat", "isup duplex speed mtu")


def sysfs_tree(root: Path, **files: str) -> Path:
    base = root / "class" / "dmi" / "id"
    base.mkdir(parents=True)
    for name, text in files.items():
        (base / name).write_text(text + "\n")
    return root


def by_name(samples):
    return {s.name: s for s in samples}


class FakePs:
    def net_if_addrs(self):
        return {"lo": [Addr(socket.AF_INET, "127.0.0.1", "255.0.0.0", None, None)],
                "enp2s0": [Addr(socket.AF_INET, "192.168.1.23", "255.255.255.0", None, None),
                           Addr(socket.AF_PACKET, "D4:BE:D9:11:22:33", None, None, None)],
                "wlp3s0": [Addr(socket.AF_PACKET, "aa:bb:cc:dd:ee:ff", None, None, None)],  # no IPv4
                "docker0": [Addr(socket.AF_INET, "172.17.0.1", "255.255.0.0", None, None)]}

    def net_if_stats(self):
        return {"lo": Stat(True, 0, 0, 65536), "enp2s0": Stat(True, 2, 100, 1500),
                "wlp3s0": Stat(True, 0, 0, 1500), "docker0": Stat(False, 0, 0, 1500)}


def test_a_desktop_from_sysfs(tmp_path):
    root = sysfs_tree(tmp_path, sys_vendor="Dell Inc.", product_name="OptiPlex 3020", product_serial="7XK2L32",
                      chassis_type="6", bios_vendor="Dell Inc.", bios_version="A18", bios_date="05/08/2014")
    [inp] = inventory.build(Config(sysfs=str(root)), None, system="linux")
    inp.ps = FakePs()
    got = by_name(inp.collect())
    info = got["commune_host_hardware_info"]
    assert info.labels == {"vendor": "Dell Inc.", "model": "OptiPlex 3020", "serial": "7XK2L32", "chassis": "mini_tower",
                           "kind": "pc", "bios_vendor": "Dell Inc.", "bios_version": "A18", "bios_date": "2014-05-08"}
    assert got["commune_host_bios_date_timestamp_seconds"].value == dt.datetime(2014, 5, 8, tzinfo=dt.timezone.utc).timestamp()
    assert "commune_host_os_install_timestamp_seconds" not in got  # Linux keeps none
    assert got["commune_host_network_info"].labels == {"interface": "enp2s0", "address": "192.168.1.23",
                                                       "mac": "d4:be:d9:11:22:33"}


def test_placeholders_unreadable_serial_and_a_laptop_chassis(tmp_path):
    files = {"sys_vendor": "LENOVO", "product_name": "To be filled by O.E.M.", "product_serial": None,
             "chassis_type": "10", "bios_vendor": "LENOVO", "bios_version": "R0XET54W", "bios_date": "13/45/2020"}
    facts = facts_from_dmi(files)
    assert facts["model"] == "" and facts["serial"] == "" and facts["kind"] == "laptop" and facts["chassis"] == "notebook"
    assert facts["bios_date"] is None  # not a date
    assert facts_from_dmi({})["kind"] == "" and facts_from_dmi({})["chassis"] == "unknown"  # no DMI (a VM, ARM)
    assert facts_from_dmi({"chassis_type": "17"})["chassis"] == "other"  # main server chassis: no kind


def test_a_windows_laptop_from_wmi():
    facts = facts_from_wmi(
        [{"Manufacturer": "HP", "Model": "HP ProBook 450 G8 Notebook PC", "PCSystemType": 2}],
        [{"SerialNumber": "5CD1234XYZ", "Manufacturer": "HP", "SMBIOSBIOSVersion": "T71 Ver. 01.09.00",
          "ReleaseDate": "20220315000000.000000+000"}],
        [{"ChassisTypes": [10]}],
        [{"InstallDate": "20230102093000.000000+420"}])
    got = by_name(inventory.fact_samples(facts))
    assert got["commune_host_hardware_info"].labels == {
        "vendor": "HP", "model": "HP ProBook 450 G8 Notebook PC", "serial": "5CD1234XYZ", "chassis": "notebook",
        "kind": "laptop", "bios_vendor": "HP", "bios_version": "T71 Ver. 01.09.00", "bios_date": "2022-03-15"}
    # 09:30 at UTC+7 is 02:30 UTC
    assert got["commune_host_os_install_timestamp_seconds"].value == dt.datetime(
        2023, 1, 2, 2, 30, tzinfo=dt.timezone.utc).timestamp()
    # a docking station lists the dock first; the mobile PC system type still says laptop
    docked = facts_from_wmi([{"Manufacturer": "Dell Inc.", "Model": "Latitude 5420", "PCSystemType": 2}], [],
                            [{"ChassisTypes": [12]}], [])
    assert docked["kind"] == "laptop"


def test_the_windows_reader_asks_the_seam_and_is_read_again_only_when_due():
    asked = []

    def query(namespace, wql):
        asked.append((namespace, wql.split(" FROM ")[1]))
        return {"Win32_ComputerSystem": [{"Manufacturer": "Dell Inc.", "Model": "OptiPlex 7010", "PCSystemType": 1}],
                "Win32_BIOS": [{"SerialNumber": "ABC1234", "Manufacturer": "Dell Inc.", "SMBIOSBIOSVersion": "A29",
                                "ReleaseDate": "20180613000000.000000+000"}],
                "Win32_SystemEnclosure": [{"ChassisTypes": [3]}],
                "Win32_OperatingSystem": [{"InstallDate": "20200101000000.000000+000"}]}[wql.split(" FROM ")[1]]

    clock = [0.0]
    [inp] = inventory.build(Config(), None, system="windows", query=query)
    inp.ps, inp.monotonic = FakePs(), lambda: clock[0]
    first = inp.collect()
    assert {ns for ns, _ in asked} == {"root\\cimv2"} and len(asked) == 4
    assert by_name(first)["commune_host_hardware_info"].labels["kind"] == "pc"
    clock[0] = 3600
    inp.collect()
    assert len(asked) == 4  # cached
    clock[0] = 6 * 3600
    inp.collect()
    assert len(asked) == 8


def test_interfaces_that_are_down_loopback_or_without_ipv4_are_left_out():
    ps = FakePs()
    assert [s.labels["interface"] for s in network_samples(ps.net_if_addrs(), ps.net_if_stats())] == ["enp2s0"]


def test_refresh_is_checked():
    assert dict(Config(interval=60, refresh_interval=30).validate())["refresh_interval"].startswith("must not be shorter")


def test_an_input_error_is_left_to_the_runner():
    def broken():
        raise OSError("WMI is not answering")

    inp = InventoryInput(Config(), broken, FakePs())
    try:
        inp.collect()
    except OSError as exc:
        assert "WMI" in str(exc)
    else:
        raise AssertionError("the error was swallowed")
