"""``commune-collector fleet``: text edits that keep the file's comments, CSV export and import with
every error named by line and column before anything changes, and list/accept against a real
Prometheus holding the series agents push (hardware facts, polled and discovered SNMP devices)."""
from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import pytest

from contract import remote_write
from collector import cli
from collector.fleet import load_fleet, parse_fleet
from collector.fleet_edit import EditError, add_devices, set_fields
from tests.support import REPO, VENV_BIN, free_port, start_prometheus

EXAMPLE = REPO / "config" / "fleet.example.yaml"


def run(*args):
    script = VENV_BIN / "commune-collector"
    cmd = [str(script)] if script.exists() else ["python", "-m", "collector"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=120)


def fleet_copy(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    return path


def test_the_subcommand_is_registered():
    assert cli.SUBCOMMANDS["fleet"] == "collector.fleet_cli:main"


# ---------------------------------------------------------------- text edits

def test_added_devices_and_set_fields_keep_comments_and_everything_else():
    base = EXAMPLE.read_text(encoding="utf-8")
    text = add_devices(base, [{"id": "pc-07", "commune": "09667", "kind": "pc", "model": 'Dell "Vostro"',
                               "agent": "pc-07", "serial": "5CD1"}])
    text = set_fields(text, {("09667", "pc-motcua-01"): {"purchase_date": "2015-04-01", "asset_tag": "TS-1"},
                             ("09667", "pc-07"): {"location": "Phòng A"}})
    fleet = parse_fleet(text)
    d = {(x.commune, x.id): x for x in fleet.devices}
    assert d[("09667", "pc-07")].model == 'Dell "Vostro"' and d[("09667", "pc-07")].location == "Phòng A"
    assert (d[("09667", "pc-motcua-01")].purchase_date, d[("09667", "pc-motcua-01")].asset_tag) == ("2015-04-01", "TS-1")
    old_lines, new_lines = base.splitlines(), text.splitlines()
    assert [x for x in old_lines if x.lstrip().startswith("#")] == [x for x in new_lines if x.lstrip().startswith("#")]
    changed = [(a, b) for a, b in zip(old_lines, new_lines) if a != b]
    assert changed == [("    purchase_date: 2015-03-12", '    purchase_date: "2015-04-01"'),
                       ('    asset_tag: "TS-2015-0031"', '    asset_tag: "TS-1"')]
    assert new_lines[len(old_lines):] == ['  - id: "pc-07"', '    commune: "09667"', '    kind: "pc"',
                                          '    model: "Dell \\"Vostro\\""', '    serial: "5CD1"', '    agent: "pc-07"',
                                          '    location: "Phòng A"']


@pytest.mark.parametrize("text,expected", [
    ("communes: []\ndevices: []\n", 'communes: []\ndevices:\n  - id: "b"\n    commune: "x"\n'),
    ("communes: []\ndevices:\n# none yet\n", 'communes: []\ndevices:\n  - id: "b"\n    commune: "x"\n# none yet\n'),
    ("communes: []\n", 'communes: []\ndevices:\n  - id: "b"\n    commune: "x"\n'),
    ("communes: []\ndevices:\n- id: a\n  commune: x  # kept\n\n# the end\n",
     'communes: []\ndevices:\n- id: a\n  commune: x  # kept\n- id: "b"\n  commune: "x"\n\n# the end\n'),
])
def test_add_devices_to_empty_missing_and_unindented_lists(text, expected):
    assert add_devices(text, [{"id": "b", "commune": "x"}]) == expected


def test_what_cannot_be_edited_in_place_is_named():
    with pytest.raises(EditError, match=r"fleet.yaml:2: device 'a' is written in flow style"):
        set_fields("devices:\n  - {id: a, commune: x}\n", {("x", "a"): {"location": "y"}})
    with pytest.raises(EditError, match=r"fleet.yaml:4: location of device 'a' is not a value on one line"):
        set_fields("devices:\n  - id: a\n    commune: x\n    location: |\n      two\n      lines\n",
                   {("x", "a"): {"location": "y"}})
    with pytest.raises(EditError, match="devices is written in flow style"):
        add_devices("devices: [{id: a}]\n", [{"id": "b"}])


# ---------------------------------------------------------------- CSV

def test_export_is_utf8_with_bom_vietnamese_headers_and_round_trips(tmp_path):
    path = fleet_copy(tmp_path)
    out = tmp_path / "fleet.csv"
    res = run("fleet", "export", "--csv", out, "--fleet", path)
    assert res.returncode == 0, res.stderr
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    lines = data.decode("utf-8-sig").splitlines()
    assert lines[0] == ("Mã xã,Mã thiết bị,Loại,Model,Số serial,Mã tài sản,Vị trí,Ngày mua,Tuổi thọ (năm),"
                        "Tuổi thọ (trang),Địa chỉ,Agent,SNMP target")
    assert len(lines) == 1 + 8
    assert ('09667,pc-motcua-01,pc,"Dell OptiPlex 3020 (Core i3-4150, 4 GB, HDD 500 GB)",7XK2L32,TS-2015-0031,'
            'Bộ phận một cửa,2015-03-12,5,,,pc-motcua-01,') in lines
    same = run("fleet", "import", "--csv", out, "--fleet", path)
    assert same.returncode == 0 and "nothing to change" in same.stdout
    en = run("fleet", "export", "--csv", "-", "--lang", "en", "--delimiter", ";", "--fleet", path)
    assert en.stdout.splitlines()[0].lstrip("\ufeff").startswith("Commune;Device;Kind;Model;Serial;Asset tag;")


def _excel_saved(tmp_path):
    """What the asset office sends back: Excel in Vietnamese settings (';', DD/MM/YYYY, commune codes
    read as numbers, a decimal comma), English or Vietnamese headers in any order."""
    text = ("\ufeffMã thiết bị;Mã xã;Ngày mua;Mã tài sản;Vị trí;Tuổi thọ (năm);Tuổi thọ (trang);Model\r\n"
            "pc-motcua-01;9667;01/04/2015;TS-0031;Bộ phận một cửa;5;;Dell OptiPlex 3020 (Core i3-4150, 4 GB, HDD 500 GB)\r\n"
            "printer-motcua;09667;2019-11-20;TS-0107;Bộ phận một cửa;6,5;350.000;HP LaserJet M404\r\n"
            "\r\n"
            "printer-01;09670;;TS-0200;;;;\r\n")
    path = tmp_path / "from-excel.csv"
    path.write_bytes(text.encode("utf-8"))
    return path


def test_import_merges_the_offices_columns_and_the_import_wins(tmp_path):
    path = fleet_copy(tmp_path)
    before = path.read_text(encoding="utf-8")
    sheet = _excel_saved(tmp_path)
    dry = run("fleet", "import", "--csv", sheet, "--fleet", path, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: 6 change(s) on 3 device(s) not written" in dry.stdout
    assert path.read_text(encoding="utf-8") == before
    res = run("fleet", "import", "--csv", sheet, "--fleet", path)
    assert res.returncode == 0, res.stderr
    assert "09667/pc-motcua-01: purchase_date 2015-03-12 -> 2015-04-01" in res.stdout
    assert "09667/printer-motcua: rated_life_pages 300000 -> 350000" in res.stdout
    assert "6 change(s) on 3 device(s) written" in res.stdout
    # the model differs: told, not imported
    assert "line 3: Model 'HP LaserJet M404' differs from the fleet file's 'HP LaserJet Pro M404dn'" in res.stderr
    d = {(x.commune, x.id): x for x in load_fleet(str(path)).devices}
    assert (d[("09667", "pc-motcua-01")].purchase_date, d[("09667", "pc-motcua-01")].asset_tag) == ("2015-04-01", "TS-0031")
    p = d[("09667", "printer-motcua")]
    assert (p.rated_life_years, p.rated_life_pages, p.asset_tag, p.model) == (6.5, 350000, "TS-0107", "HP LaserJet Pro M404dn")
    assert (d[("09670", "printer-01")].asset_tag, d[("09670", "printer-01")].location) == ("TS-0200", "Văn phòng")
    after = path.read_text(encoding="utf-8")
    assert [x for x in before.splitlines() if "#" in x] == [x for x in after.splitlines() if "#" in x]


def test_import_reports_every_error_with_line_and_column_and_changes_nothing(tmp_path):
    path = fleet_copy(tmp_path)
    before = path.read_bytes()
    sheet = tmp_path / "bad.csv"
    sheet.write_text("Mã xã,Mã thiết bị,Ngày mua,Tuổi thọ (năm),Tuổi thọ (trang),Vị trí\n"
                     "09667,pc-motcua-01,2015-02-30,5,,ok\n"
                     "09667,pc-ketoan-01,2020-09-01,90,,\n"
                     "09667,pc-ketoan-01,,,,\n"
                     "09667,pc-ghost,,,,\n"
                     ",printer-motcua,,,,\n"
                     "09667,laptop-chutich,,,1000,\n"
                     "09667,printer-motcua,3/2019,,many,\n"
                     "09667,router-main,2999-01-01,,,,extra\n", encoding="utf-8")
    res = run("fleet", "import", "--csv", sheet, "--fleet", path)
    assert res.returncode == 1
    assert res.stderr.splitlines() == [
        f"{sheet}:2, column 'Ngày mua': '2015-02-30' is not a date: expected YYYY-MM-DD or DD/MM/YYYY",
        f"{sheet}:3, column 'Tuổi thọ (năm)': '90': expected a number of years above 0 and at most 50",
        f"{sheet}:4, column 'Mã thiết bị': device 'pc-ketoan-01' of commune '09667' is also on line 3",
        f"{sheet}:5, column 'Mã thiết bị': no device 'pc-ghost' in commune '09667' of the fleet file "
        "(add it with fleet accept or in the file first)",
        f"{sheet}:6, column 'Mã xã': empty: every row names its commune and device",
        f"{sheet}:7, column 'Tuổi thọ (trang)': applies to printers only, not kind laptop",
        f"{sheet}:8, column 'Ngày mua': '3/2019' is not a date: expected YYYY-MM-DD or DD/MM/YYYY",
        f"{sheet}:8, column 'Tuổi thọ (trang)': 'many': expected a whole number of pages above 0",
        f"{sheet}:9: 7 cells, the header has 6",
        f"commune-collector fleet import: 9 error(s) in {sheet}; {path} not changed",
    ]
    assert path.read_bytes() == before


def test_import_refuses_a_bad_header_and_text_that_is_not_utf8(tmp_path):
    path = fleet_copy(tmp_path)
    sheet = tmp_path / "h.csv"
    sheet.write_text("Commune,Serial number,Location\n09667,x,y\n", encoding="utf-8")
    res = run("fleet", "import", "--csv", sheet, "--fleet", path)
    assert res.returncode == 1
    assert res.stderr.splitlines()[0].startswith(f"{sheet}:1, column 'Serial number': unknown column; expected: Mã xã, ")
    assert f"{sheet}:1: missing column 'Mã thiết bị' (Device)" in res.stderr
    sheet.write_bytes(b"Commune,Device,Location\n09667,pc-ketoan-01,Ph\xf2ng k\xea to\xe1n\n")  # Windows-1258
    res = run("fleet", "import", "--csv", sheet, "--fleet", path)
    assert res.returncode == 1
    assert res.stderr == (f"commune-collector fleet import: {sheet}: line 2: not UTF-8 text; in Excel save as "
                          f"'CSV UTF-8 (Comma delimited)'; {path} not changed\n")


# ---------------------------------------------------------------- list and accept, real Prometheus

def _write(url, series):
    body = remote_write.encode(series)
    req = urllib.request.Request(url + "/api/v1/write", data=body, headers={
        "Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
        "X-Prometheus-Remote-Write-Version": "0.1.0"})
    urllib.request.urlopen(req, timeout=10).read()


def _seen(tmp_path):
    """A Prometheus holding what agents pushed through the collector (identity labels stamped)."""
    prom, url = start_prometheus(tmp_path / "prom")
    now = time.time()
    ms = lambda ago: int((now - ago) * 1000)  # noqa: E731
    c = {"commune": "09667"}
    hw = {"__name__": "commune_host_hardware_info", "chassis": "notebook", "kind": "laptop", "bios_vendor": "HP",
          "bios_version": "T71", "bios_date": "2019-06-01"}
    series = [
        # a PC of the file: not a candidate
        ({**hw, **c, "agent": "pc-ketoan-01", "vendor": "HP", "model": "ProDesk 400 G6", "serial": "8CG1",
          "chassis": "tower", "kind": "pc"}, [(1, ms(60))]),
        # a laptop that registered itself two hours ago
        ({**hw, **c, "agent": "LAPTOP-KT02", "vendor": "HP", "model": "ProBook 450 G6", "serial": "5CD9"}, [(1, ms(7200))]),
        ({"__name__": "commune_host_network_info", **c, "agent": "LAPTOP-KT02", "interface": "wlan0",
          "address": "192.168.1.41", "mac": "aa:bb:cc:00:00:01"}, [(1, ms(7200))]),
        # a printer polled by pc-ketoan-01 under a target name no device of the file has
        ({"__name__": "commune_snmp_device_info", **c, "agent": "pc-ketoan-01", "target": "printer-tiepnhan",
          "address": "192.168.1.21", "kind": "printer", "vendor": "Brother", "model": "HL-L2366DW",
          "sys_name": "BRN3C2AF4", "sys_object_id": "1.3.6.1.4.1.2435.2.3.9.1", "profiles": "system,printer"},
         [(1, ms(30))]),
        # a printer of the file, polled: not a candidate
        ({"__name__": "commune_snmp_device_info", **c, "agent": "pc-motcua-01", "target": "printer-motcua",
          "address": "192.168.1.20", "kind": "printer", "vendor": "HP", "model": "LaserJet Pro M404dn",
          "sys_name": "NPI1", "sys_object_id": "1.3.6.1.4.1.11.2.3.9.1", "profiles": "system,printer"}, [(1, ms(30))]),
        # discovery found: a switch, the polled printer again, the file's router by address, and a UPS
        *[({"__name__": "commune_snmp_discovered_device_info", **c, "agent": "pc-ketoan-01", "address": a, "kind": k,
            "vendor": v, "model": m, "sys_name": n, "sys_object_id": "1.3.6.1.4.1.9"}, [(1, ms(3 * 86400))])
          for a, k, v, m, n in (("192.168.1.2", "switch", "TP-Link", "TL-SG2210P", "sw-core"),
                                ("192.168.1.21", "printer", "Brother", "HL-L2366DW", "BRN3C2AF4"),
                                ("192.168.1.1", "router", "DrayTek", "Vigor2925", "router"),
                                ("192.168.1.6", "ups", "APC", "Smart-UPS 1000", "UPS Tầng 2"))],
    ]
    _write(url, series)
    return prom, url


@pytest.mark.slow
def test_list_shows_candidates_with_their_facts_and_accept_adds_them(tmp_path):
    path = fleet_copy(tmp_path)
    prom, url = _seen(tmp_path)
    try:
        res = run("fleet", "list", "--fleet", path, "--prometheus", url, "--json")
        assert res.returncode == 0, res.stderr
        got = json.loads(res.stdout)
        assert len(got["devices"]) == 8
        cands = {c["handle"]: c for c in got["candidates"]}
        assert sorted(cands) == ["agent:09667/LAPTOP-KT02", "found:09667/192.168.1.2", "found:09667/192.168.1.6",
                                 "snmp:09667/pc-ketoan-01/printer-tiepnhan"]
        laptop = cands["agent:09667/LAPTOP-KT02"]
        assert (laptop["kind"], laptop["vendor"], laptop["model"], laptop["serial"], laptop["address"],
                laptop["seen_by"]) == ("laptop", "HP", "ProBook 450 G6", "5CD9", "192.168.1.41", "LAPTOP-KT02")
        assert 7200 - 301 <= got["time"] - laptop["last_seen"] <= 7200 + 1  # 5-minute resolution
        printer = cands["snmp:09667/pc-ketoan-01/printer-tiepnhan"]
        assert (printer["kind"], printer["address"], printer["target"]) == ("printer", "192.168.1.21", "printer-tiepnhan")
        text = run("fleet", "list", "--fleet", path, "--prometheus", url).stdout
        assert "Candidates (seen, not in the fleet file): 4" in text
        row = next(x for x in text.splitlines() if "LAPTOP-KT02" in x)
        assert "HP ProBook 450 G6" in row and "5CD9" in row and "192.168.1.41" in row and "2h ago" in row

        res = run("fleet", "accept", "agent:09667/LAPTOP-KT02", "snmp:09667/pc-ketoan-01/printer-tiepnhan",
                  "found:09667/192.168.1.6", "--fleet", path, "--prometheus", url)
        assert res.returncode == 0, res.stderr
        assert "not polled yet: add target 'ups-t-ng-2' (address 192.168.1.6) to the snmp.targets of agent " \
               "'pc-ketoan-01'" in res.stdout
        d = {(x.commune, x.id): x for x in load_fleet(str(path)).devices}
        lap = d[("09667", "laptop-kt02")]
        assert (lap.kind, lap.model, lap.serial, lap.agent, lap.address, lap.purchase_date) == \
            ("laptop", "HP ProBook 450 G6", "5CD9", "LAPTOP-KT02", "192.168.1.41", None)
        pr = d[("09667", "printer-tiepnhan")]
        assert (pr.kind, pr.model, pr.agent, pr.target) == ("printer", "Brother HL-L2366DW", "pc-ketoan-01",
                                                            "printer-tiepnhan")
        assert (d[("09667", "ups-t-ng-2")].kind, d[("09667", "ups-t-ng-2")].address) == ("ups", "192.168.1.6")

        left = json.loads(run("fleet", "list", "--fleet", path, "--prometheus", url, "--json").stdout)
        assert [c["handle"] for c in left["candidates"]] == ["found:09667/192.168.1.2"]
        switch = run("fleet", "accept", "found:09667/192.168.1.2", "--fleet", path, "--prometheus", url)
        assert switch.returncode == 1 and "the device says it is 'switch', not one of the fleet's kinds; give --kind" \
            in switch.stderr
        again = run("fleet", "accept", "agent:09667/LAPTOP-KT02", "--fleet", path, "--prometheus", url)
        assert again.returncode == 1 and "agent:09667/LAPTOP-KT02: no such candidate" in again.stderr
        as_router = run("fleet", "accept", "found:09667/192.168.1.2", "--kind", "router", "--id", "switch-core",
                        "--fleet", path, "--prometheus", url)
        assert as_router.returncode == 0, as_router.stderr
        assert load_fleet(str(path)).devices[-1].id == "switch-core"
    finally:
        prom.stop()


def test_list_with_prometheus_down_is_one_line(tmp_path):
    path = fleet_copy(tmp_path)
    port = free_port()
    res = run("fleet", "list", "--fleet", path, "--prometheus", f"http://127.0.0.1:{port}")
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert res.stderr.startswith(f"commune-collector fleet list: cannot reach Prometheus at http://127.0.0.1:{port}")
