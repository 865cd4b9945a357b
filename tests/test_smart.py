"""SMART: the parser on recorded ``smartctl --json`` outputs (tests/fixtures/smart/), the input's
refresh cadence and failure handling with a recording runner, and the real smartctl of this machine
(which cannot see its virtual disk)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from contract.catalog import catalog
from agent.inputs import smart
from agent.inputs.smart import (EXIT_STANDBY, Config, SmartInput, device_label, find_smartctl, parse_scan,
                                parse_smart, run_command)
from contract.schema import ConfigErrors, load_model

FIXTURES = Path(__file__).parent / "fixtures" / "smart"


def fixture(name: str) -> str:
    return (FIXTURES / f"{name}.json").read_text()


def reading(name: str, device: str = "sda"):
    return parse_smart(json.loads(fixture(name)), device)


def value(samples, name, **labels):
    matches = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, f"{name}{labels}: {len(matches)} samples"
    return matches[0]


def names(samples):
    return {s.name for s in samples}


def check_against_catalog(samples):
    cat = catalog()
    for s in samples:
        assert s.name in cat and cat[s.name].input == "smart", s.name
        assert set(s.labels) == set(cat[s.name].labels), f"{s.name}: {sorted(s.labels)}"


# ---------------------------------------------------------------- the parser on recorded outputs

def test_ata_hdd_with_reallocated_sectors():
    s = reading("ata_hdd_reallocated")
    check_against_catalog(s)
    assert value(s, "commune_smart_healthy") == 1
    assert value(s, "commune_smart_reallocated_sectors") == 48
    assert value(s, "commune_smart_pending_sectors") == 8
    assert value(s, "commune_smart_offline_uncorrectable_sectors") == 2
    assert value(s, "commune_smart_power_on_seconds_total") == 31245 * 3600
    assert value(s, "commune_smart_power_cycles_total") == 4498
    assert value(s, "commune_smart_temperature_celsius") == 37
    info = [x.labels for x in s if x.name == "commune_smart_info"]
    assert info == [{"device": "sda", "protocol": "ATA", "type": "hdd", "model": "WDC WD10EZEX-08WN4A0",
                     "serial": "WD-WCC6Y3KZ5R2T", "firmware": "01.01A01"}]
    assert "commune_smart_percentage_used_ratio" not in names(s)  # an HDD has no wear indicator


def test_healthy_ata_ssd_wear_from_device_statistics_then_attributes():
    s = reading("ata_ssd_healthy", "sdb")
    check_against_catalog(s)
    assert value(s, "commune_smart_healthy", device="sdb") == 1
    assert value(s, "commune_smart_reallocated_sectors", device="sdb") == 0
    assert value(s, "commune_smart_info", type="ssd", model="Samsung SSD 860 EVO 250GB") == 1
    assert value(s, "commune_smart_percentage_used_ratio") == pytest.approx(0.05)  # devstat page 7
    data = json.loads(fixture("ata_ssd_healthy"))
    del data["ata_device_statistics"]  # smartctl older than 6.5 or a drive without the log
    assert value(parse_smart(data, "sdb"), "commune_smart_percentage_used_ratio") == pytest.approx(0.04)  # 177: 96


def test_nvme_percentage_used_and_spare():
    s = reading("nvme_healthy", "nvme0")
    check_against_catalog(s)
    assert value(s, "commune_smart_healthy") == 1
    assert value(s, "commune_smart_percentage_used_ratio") == pytest.approx(0.07)
    assert value(s, "commune_smart_available_spare_ratio") == 1.0
    assert value(s, "commune_smart_media_errors_total") == 0
    assert value(s, "commune_smart_critical_warning") == 0
    assert value(s, "commune_smart_power_on_seconds_total") == 6120 * 3600
    assert value(s, "commune_smart_info", protocol="NVMe", type="ssd") == 1
    assert not names(s) & {"commune_smart_reallocated_sectors", "commune_smart_pending_sectors"}


def test_failing_disk():
    s = reading("ata_hdd_failing", "sdc")
    check_against_catalog(s)
    assert value(s, "commune_smart_healthy") == 0
    assert value(s, "commune_smart_reallocated_sectors") == 4032
    assert value(s, "commune_smart_pending_sectors") == 312
    assert value(s, "commune_smart_power_on_seconds_total") == 44198 * 3600


def test_scan_and_device_names():
    assert parse_scan(fixture("scan_open")) == [("/dev/sda", "sat", "ATA"), ("/dev/nvme0", "nvme", "NVMe")]
    assert parse_scan("") == []
    assert device_label("/dev/sda", "linux") == "sda"
    assert device_label("/dev/nvme0", "linux") == "nvme0"
    assert device_label("/dev/sdc", "windows") == "PhysicalDrive2"  # smartctl's name for \\.\PhysicalDrive2
    assert device_label("/dev/csmi0,1", "windows") == "csmi0,1"


# ---------------------------------------------------------------- the input, with a recording runner

class RecordedSmartctl:
    """Answers smartctl command lines with recorded outputs; notes every call."""

    def __init__(self, answers):
        self.answers = dict(answers)  # device path (last argument) or "--scan-open" -> (status, text)
        self.calls = []

    def __call__(self, args, timeout):
        self.calls.append(list(args))
        key = "--scan-open" if "--scan-open" in args else args[-1]
        return self.answers[key]


class Clock:
    def __init__(self, t=1_700_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def recorded_input(answers, clock=None, **cfg):
    run = RecordedSmartctl(answers)
    inp = SmartInput(load_model(Config, cfg), "/usr/sbin/smartctl", run=run, clock=clock or Clock(), system="linux")
    return inp, run


SCAN_TWO = (0, fixture("scan_open"))


def test_refresh_runs_smartctl_only_every_refresh_interval():
    clock = Clock()
    inp, run = recorded_input({"--scan-open": SCAN_TWO, "/dev/sda": (0, fixture("ata_hdd_reallocated")),
                               "/dev/nvme0": (0, fixture("nvme_healthy"))}, clock=clock)
    first = inp.collect()
    check_against_catalog(first)
    assert len(run.calls) == 3
    assert run.calls[1] == ["/usr/sbin/smartctl", "--json", "-H", "-i", "-A", "-l", "devstat",
                            "-n", f"standby,{EXIT_STANDBY}", "-d", "sat", "/dev/sda"]
    assert run.calls[2][-3:] == ["-d", "nvme", "/dev/nvme0"] and "devstat" not in run.calls[2]
    assert value(first, "commune_smart_up", device="sda") == 1
    assert value(first, "commune_smart_up", device="nvme0") == 1
    assert value(first, "commune_smart_last_read_timestamp_seconds", device="sda") == clock.t
    clock.t += 600
    second = inp.collect()
    assert len(run.calls) == 3  # re-emitted from the last reading
    assert second == first
    clock.t += 1200
    inp.collect()
    assert len(run.calls) == 6


def test_sleeping_disk_keeps_its_reading_and_is_not_woken():
    clock = Clock()
    inp, run = recorded_input({"/dev/sda": (0, fixture("ata_hdd_reallocated"))}, clock=clock, devices=["/dev/sda"])
    read_at = clock.t
    inp.collect()
    run.answers["/dev/sda"] = (EXIT_STANDBY, "")
    clock.t += 3600
    s = inp.collect()
    assert len(run.calls) == 2
    assert value(s, "commune_smart_reallocated_sectors") == 48
    assert value(s, "commune_smart_last_read_timestamp_seconds") == read_at
    awake, run2 = recorded_input({"/dev/sda": (0, fixture("ata_hdd_reallocated"))}, devices=["/dev/sda -d sat"],
                                 wake_disks=True)
    awake.collect()
    assert run2.calls == [["/usr/sbin/smartctl", "--json", "-H", "-i", "-A", "-d", "sat", "/dev/sda"]]


def test_unreadable_disk_is_up_0_and_logged_once(caplog):
    clock = Clock()
    inp, run = recorded_input({"--scan-open": SCAN_TWO, "/dev/sda": (2, fixture("open_permission_denied")),
                               "/dev/nvme0": (0, fixture("nvme_healthy"))}, clock=clock)
    with caplog.at_level(logging.INFO, logger="agent.inputs.smart"):
        for _ in range(3):
            s = inp.collect()
            clock.t += 1800
    check_against_catalog(s)
    assert len(run.calls) == 9
    assert value(s, "commune_smart_up", device="sda") == 0
    assert not [x for x in s if x.labels.get("device") == "sda" and x.name != "commune_smart_up"]
    assert value(s, "commune_smart_up", device="nvme0") == 1
    assert [r.getMessage() for r in caplog.records] == [
        "smart: cannot read sda: Smartctl open device: /dev/sdb [SAT] failed: Permission denied"]
    run.answers["/dev/sda"] = (0, fixture("ata_hdd_reallocated"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="agent.inputs.smart"):
        s = inp.collect()
    assert value(s, "commune_smart_up", device="sda") == 1
    assert [r.getMessage() for r in caplog.records] == ["smart: sda can be read again"]


def test_failing_disk_exit_status_still_reads_and_unplugged_disk_goes_away():
    clock = Clock()
    inp, run = recorded_input({"--scan-open": SCAN_TWO, "/dev/sda": (24, fixture("ata_hdd_failing")),
                               "/dev/nvme0": (0, fixture("nvme_healthy"))}, clock=clock)
    s = inp.collect()
    assert value(s, "commune_smart_healthy", device="sda") == 0
    run.answers["--scan-open"] = (0, json.dumps({"devices": [{"name": "/dev/nvme0", "type": "nvme",
                                                              "protocol": "NVMe"}]}))
    clock.t += 1800
    s = inp.collect()
    assert {x.labels["device"] for x in s} == {"nvme0"}


def test_hung_smartctl_is_cut_and_reported():
    inp, run = recorded_input({"/dev/sda": (-1, "")}, devices=["/dev/sda"])
    assert value(inp.collect(), "commune_smart_up", device="sda") == 0


# ---------------------------------------------------------------- finding smartctl, config

def test_absent_smartctl_means_no_input_and_one_log_line(caplog):
    with caplog.at_level(logging.INFO, logger="agent.inputs.smart"):
        built = smart.build(load_model(Config, {"smartctl": "/nonexistent/smartctl"}), None)
    assert built == []
    assert [r.getMessage() for r in caplog.records] == [
        "smart: smartctl /nonexistent/smartctl does not exist; no SMART metrics"]
    assert find_smartctl("auto", which=lambda name: None, exists=lambda path: False) is None
    assert find_smartctl("auto", which=lambda name: None, exists=lambda p: p == "/usr/sbin/smartctl") == \
        "/usr/sbin/smartctl"


def test_auto_without_smartctl_logs_once(caplog, monkeypatch):
    monkeypatch.setattr(smart, "find_smartctl", lambda setting: None)
    with caplog.at_level(logging.INFO, logger="agent.inputs.smart"):
        assert smart.build(Config(), None) == []
    assert [r.getMessage() for r in caplog.records] == [
        "smart: smartctl not found (install smartmontools to get disk health); no SMART metrics"]


@pytest.mark.parametrize("cfg,message", [
    ({"refresh_interval": "0s"}, "smart.refresh_interval: must be greater than 0s"),
    ({"command_timeout": 0}, "smart.command_timeout: must be greater than 0s"),
    ({"smartctl": " "}, 'smart.smartctl: must be a path or "auto"'),
    ({"devices": [""]}, "smart.devices[0]: must not be empty"),
    ({"timeout": "2m"}, "smart.timeout: must not be longer than interval (60s), got 120s"),
])
def test_config_rules(cfg, message):
    with pytest.raises(ConfigErrors) as exc:
        load_model(Config, cfg, path="smart")
    assert [str(e) for e in exc.value.errors] == [message]


# ---------------------------------------------------------------- the real smartctl of this machine

def real_smartctl():
    path = find_smartctl("auto")
    if path is None:
        pytest.fail("smartctl is not installed; tests/run.sh installs smartmontools (apt)")
    return path


def test_real_smartctl_scan_runs_and_parses():
    code, text = run_command([real_smartctl(), "--scan-open", "--json"], 30)
    assert code == 0
    for name, kind, protocol in parse_scan(text):
        assert name.startswith("/dev/")


def test_real_smartctl_on_a_disk_it_cannot_read(caplog):
    """The virtual disk has no SMART: smartctl answers with an error, which becomes commune_smart_up 0."""
    disk = next((d for d in ("/dev/vda", "/dev/sda", "/dev/xvda") if Path(d).exists()), "/dev/null")
    inp = SmartInput(load_model(Config, {"devices": [disk]}), real_smartctl())
    with caplog.at_level(logging.WARNING, logger="agent.inputs.smart"):
        s = inp.collect()
    label = device_label(disk, "linux")
    if value(s, "commune_smart_up", device=label) == 1:
        pytest.skip(f"smartctl can read {disk} here; the unreadable path is covered by recorded outputs")
    assert len(caplog.records) == 1 and caplog.records[0].getMessage().startswith(f"smart: cannot read {label}: ")
