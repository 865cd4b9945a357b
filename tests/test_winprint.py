"""Windows print queues (agent/inputs/winprint.py): the parser on recorded Win32_Printer and
Win32_PrintJob instances (tests/fixtures/windows/), the input's Windows path with the WMI seam
replaced by a recording fake, and its config. Windows itself cannot run here."""
from __future__ import annotations

import pytest

from agent import inputs
from contract.catalog import catalog
from agent.config import load_config
from agent.inputs import winprint
from agent.inputs.winprint import Config, WinPrintInput, attachment, job_in_error, job_printer, queue_samples
from agent.inputs.wmi import WmiError, cim_datetime
from contract.schema import load_model
from tests.wmi_recordings import RecordedWmi, recording

NOW = cim_datetime("20261207093000.000000+420")  # 09:30 in the commune office


def value(samples, name, **labels):
    matches = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, f"{name}{labels}: {len(matches)} samples"
    return matches[0]


def check_against_catalog(samples):
    cat = catalog()
    for s in samples:
        assert s.name in cat, s.name
        expected_input = "snmp" if s.name.startswith("commune_printer_") else "winprint"
        assert cat[s.name].input == expected_input, s.name
        assert set(s.labels) == set(cat[s.name].labels), f"{s.name}: {sorted(s.labels)}"


def recorded(virtual_printers=False):
    return queue_samples(recording("Win32_Printer"), recording("Win32_PrintJob"), NOW, virtual_printers)


@pytest.mark.parametrize("printer,expected", [
    ({"PortName": "USB001"}, "usb"),
    ({"PortName": "DOT4_001"}, "usb"),
    ({"PortName": "LPT1:"}, "parallel"),
    ({"PortName": "COM2:"}, "serial"),
    ({"PortName": "IP_192.168.1.20"}, "network"),
    ({"PortName": "192.168.1.21"}, "network"),
    ({"PortName": "192.168.1.21:9100"}, "network"),
    ({"PortName": "WSD-3c5e2f6a-0b1d-4d6e-9f3a-7c1e2b4d5a6f.0065"}, "network"),
    ({"PortName": "http://printserver:631/printers/canon"}, "network"),
    ({"PortName": "printer-motcua.xa.local"}, "network"),
    ({"PortName": "USB001", "Network": True, "Name": "\\\\MC-KETOAN\\Ricoh MP 2014"}, "shared"),
    ({"PortName": "TS003"}, "redirected"),
    ({"PortName": "PORTPROMPT:"}, "virtual"),
    ({"PortName": "nul:"}, "virtual"),
    ({"PortName": "SHRFAX:"}, "virtual"),
    ({"PortName": "FILE:"}, "virtual"),
    ({"PortName": "Canon_LBP_Custom"}, "other"),
    ({}, "other"),
])
def test_attachment_from_the_port(printer, expected):
    assert attachment(printer) == expected


def test_job_printer_and_error():
    assert job_printer({"Name": "Canon LBP2900, 12"}) == "Canon LBP2900"
    assert job_printer({"Name": "Brother HL-L2321D, phòng Tư pháp, 2"}) == "Brother HL-L2321D, phòng Tư pháp"
    assert job_printer({"Name": "no id"}) is None and job_printer({}) is None
    assert job_in_error({"StatusMask": 18}) and job_in_error({"StatusMask": 1024})
    assert not job_in_error({"StatusMask": 16 | 8 | 1})  # printing, spooling, paused: someone chose to pause
    # StatusMask NULL: the text says it
    assert job_in_error({"StatusMask": None, "JobStatus": "Paper Out"}) and not job_in_error({"JobStatus": "Printing"})


def test_usb_printer_jammed_with_a_stuck_job():
    s = recorded()
    check_against_catalog(s)
    canon = "Canon LBP2900"
    info = next(x for x in s if x.name == "commune_print_queue_info" and x.labels["printer"] == canon)
    assert info.labels == {"printer": canon, "port": "USB001", "driver": "Canon LBP2900", "attachment": "usb"}
    assert value(s, "commune_print_queue_offline", printer=canon) == 0
    assert value(s, "commune_print_queue_jobs", printer=canon) == 2
    assert value(s, "commune_print_queue_error_jobs", printer=canon) == 1
    # submitted at 09:05:00.123 Vietnam time, read at 09:30
    assert value(s, "commune_print_queue_oldest_job_age_seconds", printer=canon) == pytest.approx(1499.877)
    assert value(s, "commune_printer_status", target=canon) == 1
    states = {x.labels["condition"]: x.value for x in s if x.name == "commune_printer_error_state" and x.labels["target"] == canon}
    assert states == {"low_paper": 0, "no_paper": 0, "low_toner": 0, "no_toner": 0, "door_open": 0, "jammed": 1,
                      "offline": 0, "service_requested": 0, "output_full": 0}


def test_usb_printer_switched_off():
    s = recorded()
    epson = "Epson L3150 Series"
    assert value(s, "commune_print_queue_offline", printer=epson) == 1
    assert value(s, "commune_print_queue_oldest_job_age_seconds", printer=epson) == pytest.approx(2699.5)
    assert value(s, "commune_print_queue_error_jobs", printer=epson) == 1
    assert value(s, "commune_printer_status", target=epson) == 7
    assert value(s, "commune_printer_error_state", target=epson, condition="offline") == 1


def test_unknown_error_state_gives_no_conditions_and_names_may_hold_commas():
    s = recorded()
    brother = "Brother HL-L2321D, phòng Tư pháp"
    assert value(s, "commune_print_queue_jobs", printer=brother) == 1
    assert value(s, "commune_print_queue_oldest_job_age_seconds", printer=brother) == 300
    assert value(s, "commune_printer_status", target=brother) == 4
    assert not [x for x in s if x.name == "commune_printer_error_state" and x.labels["target"] == brother]


def test_network_and_shared_queues_report_the_queue_only():
    s = recorded()
    for name, kind, jobs, age in (("HP LaserJet Pro M404dn", "network", 1, 30),
                                  ("\\\\MC-KETOAN\\Ricoh MP 2014", "shared", 0, 0)):
        info = next(x for x in s if x.name == "commune_print_queue_info" and x.labels["printer"] == name)
        assert info.labels["attachment"] == kind
        assert value(s, "commune_print_queue_jobs", printer=name) == jobs
        assert value(s, "commune_print_queue_oldest_job_age_seconds", printer=name) == age
        assert not [x for x in s if x.name.startswith("commune_printer_") and x.labels["target"] == name]


def test_virtual_printers_only_when_asked():
    queues = lambda s: {x.labels["printer"] for x in s if x.name == "commune_print_queue_info"}
    real = {"Canon LBP2900", "Epson L3150 Series", "Brother HL-L2321D, phòng Tư pháp", "HP LaserJet Pro M404dn",
            "\\\\MC-KETOAN\\Ricoh MP 2014"}
    assert queues(recorded()) == real
    every = recorded(virtual_printers=True)
    assert queues(every) == real | {"Microsoft Print to PDF", "Microsoft XPS Document Writer", "Fax"}
    assert value(every, "commune_print_queue_jobs", printer="Microsoft Print to PDF") == 1


def test_a_job_submitted_after_the_clock_reads_is_not_negative():
    s = queue_samples([{"Name": "P", "PortName": "USB001"}],
                      [{"Name": "P, 1", "TimeSubmitted": "20261207093005.000000+420"},
                       {"Name": "P, 2", "TimeSubmitted": None}], NOW)
    assert value(s, "commune_print_queue_oldest_job_age_seconds", printer="P") == 0
    assert value(s, "commune_print_queue_jobs", printer="P") == 2


def test_input_windows_path_through_the_seam():
    fake = RecordedWmi()
    inp = winprint.build(Config(), None, system="windows", query=fake)[0]
    assert isinstance(inp, WinPrintInput) and (inp.name, inp.interval, inp.timeout) == ("winprint", 30, 20)
    inp.clock = lambda: NOW
    s = inp.collect()
    check_against_catalog(s)
    assert s == recorded()
    assert fake.calls == [("root\\cimv2", "SELECT * FROM Win32_Printer"), ("root\\cimv2", "SELECT * FROM Win32_PrintJob")]


def test_no_printers_means_no_job_query_and_spooler_errors_fail_the_collection():
    fake = RecordedWmi(overrides={"Win32_Printer": []})
    assert WinPrintInput(Config(), fake).collect() == []
    assert len(fake.calls) == 1
    fake = RecordedWmi(fail={"Win32_Printer": WmiError("The RPC server is unavailable", 0x800706BA)})
    with pytest.raises(WmiError):
        WinPrintInput(Config(), fake).collect()


def test_not_scheduled_off_windows_and_in_the_config():
    assert winprint.build(Config(), None, system="linux") == []
    assert winprint in inputs.INPUTS and winprint.Config is Config
    cfg = load_config(None)
    assert cfg.winprint.enabled and cfg.winprint.virtual_printers is False
    assert load_model(Config, {"virtual_printers": True, "interval": "1m"}).interval == 60
