"""The process input against real processes started by the test."""
from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from agent.inputs import process
from contract.schema import ConfigErrors, load_model
from tests.support import wait_until


def _section(data):
    return load_model(process.Config, data, path="process", environ={})


def _values(samples, name, watch):
    return [s.value for s in samples if s.name == name and s.labels["name"] == watch]


def test_spawned_process_up_then_down():
    marker = f"commune-test-marker-{time.monotonic_ns()}"
    section = _section({"watch": [{"name": "sleeper", "cmdline": marker},
                                  {"name": "python", "process_name": "python3.exe", "cmdline": marker},
                                  {"name": "absent", "process_name": "no-such-program-xyz"}]})
    inp = process.build(section, None)[0]
    before = inp.collect()
    assert _values(before, "commune_process_up", "sleeper") == [0]
    assert _values(before, "commune_process_count", "sleeper") == [0]
    assert _values(before, "commune_process_start_time_seconds", "sleeper") == []

    child = subprocess.Popen([sys.executable, "-c", f"import time  # {marker}\ntime.sleep(60)"])
    try:
        up = wait_until(lambda: (s := inp.collect()) and _values(s, "commune_process_up", "sleeper") == [1] and s,
                        what="the spawned process to be seen")
        assert _values(up, "commune_process_count", "sleeper") == [1]
        start = _values(up, "commune_process_start_time_seconds", "sleeper")[0]
        assert start == pytest.approx(psutil.Process(child.pid).create_time(), abs=0.01)
        assert _values(up, "commune_process_resident_memory_bytes", "sleeper")[0] > 1_000_000
        assert _values(up, "commune_process_cpu_seconds_total", "sleeper")[0] >= 0
        # process_name matches with or without .exe, case-insensitively, when the exe is python3
        if psutil.Process(child.pid).name() == "python3":
            assert _values(up, "commune_process_up", "python") == [1]
        assert _values(up, "commune_process_up", "absent") == [0]
    finally:
        child.kill()
        child.wait()
    down = inp.collect()
    assert _values(down, "commune_process_up", "sleeper") == [0]
    assert _values(down, "commune_process_count", "sleeper") == [0]


def test_counts_several_processes_and_sums_memory():
    marker = f"commune-test-multi-{time.monotonic_ns()}"
    children = [subprocess.Popen([sys.executable, "-c", f"import time  # {marker}\ntime.sleep(60)"])
                for _ in range(3)]
    try:
        inp = process.build(_section({"watch": [{"name": "pool", "cmdline": marker}]}), None)[0]
        samples = wait_until(lambda: (s := inp.collect()) and _values(s, "commune_process_count", "pool") == [3] and s,
                             what="three processes")
        rss = sum(psutil.Process(c.pid).memory_info().rss for c in children)
        assert _values(samples, "commune_process_resident_memory_bytes", "pool")[0] == pytest.approx(rss, rel=0.2)
        oldest = min(psutil.Process(c.pid).create_time() for c in children)
        assert _values(samples, "commune_process_start_time_seconds", "pool")[0] == pytest.approx(oldest, abs=0.01)
    finally:
        for c in children:
            c.kill()
            c.wait()


def test_windows_service_states_from_the_service_api():
    """The service path, fed the structure psutil.win_service_get gives (status, pid)."""
    services = {"VNPTCA": {"status": "running", "pid": psutil.Process().pid},
                "Spooler": {"status": "stopped", "pid": None}}
    section = _section({"watch": [{"name": "ca-plugin", "windows_service": "VNPTCA"},
                                  {"name": "spooler", "windows_service": "Spooler"},
                                  {"name": "gone", "windows_service": "NotInstalled"}]})
    inp = process.ProcessInput(section, service_get=services.get)
    samples = inp.collect()
    assert _values(samples, "commune_process_up", "ca-plugin") == [1]
    assert _values(samples, "commune_process_count", "ca-plugin") == [1]
    assert _values(samples, "commune_process_resident_memory_bytes", "ca-plugin")[0] > 0
    states = {s.labels["state"]: s.value for s in samples
              if s.name == "commune_windows_service_state" and s.labels["name"] == "spooler"}
    assert states == {st: (1 if st == "stopped" else 0) for st in process.SERVICE_STATES}
    assert _values(samples, "commune_process_up", "spooler") == [0]
    assert _values(samples, "commune_process_up", "gone") == [0]
    assert not [s for s in samples if s.name == "commune_windows_service_state" and s.labels["name"] == "gone"]


@pytest.mark.skipif(sys.platform == "win32", reason="checks the non-Windows guard")
def test_windows_services_are_skipped_elsewhere(caplog):
    section = _section({"watch": [{"name": "spooler", "windows_service": "Spooler"}]})
    inp = process.build(section, None)[0]
    assert inp.collect() == []
    assert "windows_service entries are skipped" in caplog.text


@pytest.mark.parametrize("watch, message", [
    ({"name": "x"}, "process.watch[0]: set process_name, cmdline or windows_service"),
    ({"name": "x", "cmdline": "(unclosed"},
     "process.watch[0].cmdline: invalid regular expression '(unclosed': missing ), unterminated subpattern at position 0"),
    ({"name": "x", "windows_service": "a", "process_name": "b"},
     "process.watch[0].windows_service: windows_service cannot be combined with process_name or cmdline"),
    ({"name": " ", "process_name": "b"}, "process.watch[0].name: must not be empty"),
])
def test_invalid_watch_entries(watch, message):
    with pytest.raises(ConfigErrors) as err:
        _section({"watch": [watch]})
    assert [str(e) for e in err.value.errors] == [message]


def test_duplicate_watch_names():
    with pytest.raises(ConfigErrors) as err:
        _section({"watch": [{"name": "a", "process_name": "x"}, {"name": "a", "process_name": "y"}]})
    assert [str(e) for e in err.value.errors] == ["process.watch[1].name: duplicate watch name 'a'"]
