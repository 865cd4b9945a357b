"""Unexpected shutdowns and boot duration (agent/inputs/boot.py): the pure decision, the state
directory across simulated runs and boots (a clock and boot times handed in, no real reboot), the
host input carrying it, and the real agent writing its clean-shutdown marker on SIGTERM/SIGINT."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys

import psutil
import pytest
import yaml

from agent.config import load_config
from agent.inputs import boot as boot_mod
from agent.inputs import host
from agent.inputs.boot import BOOT_WINDOW, HEARTBEAT, Boot, BootTracker, boot_duration, ended_unexpectedly
from tests import support
from tests.test_host import FakeFiles, LINUX_FILES, by_name, check_against_catalog, linux_laptop, value

DAY = 86400.0
B1 = 1_764_000_000.0  # a morning boot (Unix time)


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def metrics(samples) -> dict:
    return {s.name: s.value for s in samples}


# ---------------------------------------------------------------- the decision

def test_ended_unexpectedly():
    prev, now = Boot(B1), Boot(B1 + DAY)
    assert not ended_unexpectedly(None, None, now)                    # first run: no history
    assert not ended_unexpectedly(prev, None, Boot(B1 + 0.7))         # same boot (Windows wobble): agent restart
    assert not ended_unexpectedly(prev, Boot(B1 - 0.4), now)          # marker for that boot: clean
    assert ended_unexpectedly(prev, None, now)                        # no marker: power cut, crash, reset
    assert ended_unexpectedly(prev, Boot(B1 - DAY), now)              # a stale marker of an older boot
    # Linux boot ids decide over times: a clock stepped within one boot is the same boot ...
    assert not ended_unexpectedly(Boot(B1, "a1"), None, Boot(B1 + 3600, "a1"))
    # ... and a reboot is a new one even where the times look alike
    assert ended_unexpectedly(Boot(B1, "a1"), Boot(B1, "a0"), Boot(B1 + 1, "b2"))
    assert not ended_unexpectedly(Boot(B1, "a1"), Boot(B1 + 5, "a1"), Boot(B1 + 1, "b2"))


def test_boot_duration_only_for_an_agent_started_with_the_machine():
    assert boot_duration(B1, B1 + 95.5) == 95.5
    assert boot_duration(B1, B1 + BOOT_WINDOW) == BOOT_WINDOW
    assert boot_duration(B1, B1 + BOOT_WINDOW + 1) is None   # started by hand later: unknown
    assert boot_duration(B1, B1 - 3) is None                 # a clock behind the boot time


# ---------------------------------------------------------------- the state directory across runs

def run(state_dir, boot: Boot, at: float, collections: int = 1, step: float = 15.0, clean: bool = True,
        clock: Clock = None):
    """One run of the agent under ``boot`` from ``at``: collections every ``step``, then a clean stop
    (or a kill: no stop at all). Returns the samples of the last collection."""
    clock = clock or Clock(at)
    clock.now = at
    tracker = BootTracker(str(state_dir), clock)
    samples = []
    for _ in range(collections):
        samples = tracker.observe(boot)
        clock.now += step
    if clean:
        tracker.clean_shutdown()
    return samples


def test_a_month_of_office_days(tmp_path):
    state = tmp_path / "state"  # created on first use
    # day 1, the first run ever, started by hand an hour after boot: count 0, boot time unknown
    first = run(state, Boot(B1), B1 + 3600)
    assert metrics(first) == {"commune_host_unexpected_shutdowns_total": 0}
    saved = json.loads((state / boot_mod.STATE_FILE).read_text())
    assert saved["boot_time"] == B1 and saved["unexpected_shutdowns"] == 0
    assert json.loads((state / boot_mod.MARKER_FILE).read_text())["boot_time"] == B1
    # day 2: switched off in the evening (clean), booted, the service's first collection 140 s later
    day2 = run(state, Boot(B1 + DAY), B1 + DAY + 140)
    assert metrics(day2) == {"commune_host_unexpected_shutdowns_total": 0,
                             "commune_host_boot_duration_seconds": 140}
    # day 3: the power goes at 14:00; the agent was last seen alive at its last heartbeat
    b3 = B1 + 2 * DAY
    run(state, Boot(b3), b3 + 100, collections=int(6 * 3600 / 15) + 1, clean=False)
    last_seen = json.loads((state / boot_mod.STATE_FILE).read_text())["last_seen"]
    assert b3 + 100 + 6 * 3600 - HEARTBEAT <= last_seen <= b3 + 100 + 6 * 3600
    # day 4: the marker of day 2 was consumed at day 3's start: day 3 ended unexpectedly
    b4 = B1 + 3 * DAY
    day4 = run(state, Boot(b4), b4 + 300, clean=False)  # and the agent is killed (SIGKILL) ...
    assert metrics(day4) == {"commune_host_unexpected_shutdowns_total": 1,
                             "commune_host_last_unexpected_shutdown_timestamp_seconds": last_seen,
                             "commune_host_boot_duration_seconds": 300}
    # ... and restarted an hour later in the same boot: not a shutdown; the boot duration is kept
    again = run(state, Boot(b4 + 0.8), b4 + 3900)
    assert metrics(again) == metrics(day4)
    # day 5: clean evening before; the count stays, and is still exported (a counter since install)
    b5 = B1 + 4 * DAY
    day5 = run(state, Boot(b5), b5 + 1200)  # slow to start the agent: no boot duration
    assert metrics(day5) == {"commune_host_unexpected_shutdowns_total": 1,
                             "commune_host_last_unexpected_shutdown_timestamp_seconds": last_seen}
    # day 6 and 7: two crashes in a row (each boot killed without a stop)
    run(state, Boot(B1 + 5 * DAY), B1 + 5 * DAY + 60, clean=False)
    run(state, Boot(B1 + 6 * DAY), B1 + 6 * DAY + 60, clean=False)
    day8 = run(state, Boot(B1 + 7 * DAY), B1 + 7 * DAY + 60)
    assert metrics(day8)["commune_host_unexpected_shutdowns_total"] == 3
    assert metrics(day8)["commune_host_last_unexpected_shutdown_timestamp_seconds"] == B1 + 6 * DAY + 60
    assert not (state / (boot_mod.STATE_FILE + ".tmp")).exists()


def test_heartbeat_is_written_every_five_minutes(tmp_path):
    clock = Clock(B1 + 60)
    tracker = BootTracker(str(tmp_path), clock)
    writes = []
    real = boot_mod._write_json
    boot_mod._write_json = lambda path, data: (writes.append(data.get("last_seen")), real(path, data))
    try:
        for _ in range(int(3 * HEARTBEAT / 15) + 1):
            tracker.observe(Boot(B1))
            clock.now += 15
    finally:
        boot_mod._write_json = real
    assert writes == [B1 + 60, B1 + 60 + HEARTBEAT, B1 + 60 + 2 * HEARTBEAT, B1 + 60 + 3 * HEARTBEAT]


def test_stopped_before_its_first_collection_changes_nothing(tmp_path):
    run(tmp_path, Boot(B1), B1 + 60)  # a clean day
    tracker = BootTracker(str(tmp_path), Clock(B1 + DAY + 30))
    tracker.clean_shutdown()  # the OS shut down seconds after the agent started
    assert tracker.observe(Boot(B1 + DAY)) == []  # a collection still in flight judges nothing
    assert json.loads((tmp_path / boot_mod.MARKER_FILE).read_text())["boot_time"] == B1
    later = run(tmp_path, Boot(B1 + 2 * DAY), B1 + 2 * DAY + 60)
    assert metrics(later)["commune_host_unexpected_shutdowns_total"] == 0


def test_torn_state_is_a_first_run(tmp_path, caplog):
    (tmp_path / boot_mod.STATE_FILE).write_text('{"boot_time": 17640')  # a power cut mid-write, no fsync
    with caplog.at_level(logging.WARNING):
        samples = run(tmp_path, Boot(B1 + DAY), B1 + DAY + 90)
    assert metrics(samples) == {"commune_host_unexpected_shutdowns_total": 0,
                                "commune_host_boot_duration_seconds": 90}
    assert "ignoring unreadable" in caplog.text


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="permissions do not bind root")
def test_unwritable_state_dir_leaves_the_metrics_out(tmp_path, caplog):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with caplog.at_level(logging.WARNING):
            tracker = BootTracker(str(locked), Clock(B1 + 60))
            assert tracker.observe(Boot(B1)) == []
            assert tracker.observe(Boot(B1)) == []
            tracker.clean_shutdown()
    finally:
        locked.chmod(0o700)
    assert caplog.text.count("cannot keep boot history") == 1


# ---------------------------------------------------------------- through the host input

def test_host_input_reports_boots_with_the_linux_boot_id(tmp_path):
    files = FakeFiles(dict(LINUX_FILES, **{"/proc/sys/kernel/random/boot_id": "1f0e5c1a-7d3b-4a8e\n"}))
    boot_time = linux_laptop().boot_time()
    clock = Clock(boot_time + 75)
    inp = host.HostInput(host.Config(), ps=linux_laptop(), system="linux", read=files.read,
                         listdir=files.listdir, boots=BootTracker(str(tmp_path), clock))
    samples = inp.collect()
    check_against_catalog(samples)
    assert value(samples, "commune_host_unexpected_shutdowns_total") == 0
    assert value(samples, "commune_host_boot_duration_seconds") == 75
    inp.clean_shutdown()
    assert json.loads((tmp_path / boot_mod.MARKER_FILE).read_text()) == {
        "boot_time": boot_time, "boot_id": "1f0e5c1a-7d3b-4a8e"}
    assert files.reads.count("/proc/sys/kernel/random/boot_id") == 1  # read once
    # a reboot with the same psutil boot time (a clock set back) and no clean stop: the id tells
    files.files["/proc/sys/kernel/random/boot_id"] = "9b77d2e0-0c41-4f1a\n"
    (tmp_path / boot_mod.MARKER_FILE).unlink()
    inp2 = host.HostInput(host.Config(), ps=linux_laptop(), system="linux", read=files.read,
                          listdir=files.listdir, boots=BootTracker(str(tmp_path), clock))
    assert value(inp2.collect(), "commune_host_unexpected_shutdowns_total") == 1


def test_build_keeps_boot_history_in_the_agent_state_dir(tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(yaml.safe_dump({"agent": {"state_dir": str(tmp_path / "state")}}))
    inp, = host.build(host.Config(), load_config(str(cfg)))
    assert inp.boots is not None and inp.boots.state_dir == str(tmp_path / "state")
    samples = inp.collect()  # real psutil: this machine booted long ago or just now
    names = by_name(samples)
    assert value(samples, "commune_host_unexpected_shutdowns_total") == 0
    up = inp.boots.clock() - psutil.boot_time()
    assert ("commune_host_boot_duration_seconds" in names) == (up <= BOOT_WINDOW)
    assert host.build(host.Config(), None)[0].boots is None  # no config: no history


# ---------------------------------------------------------------- the real agent

@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_real_agent_marks_its_clean_shutdown(tmp_path, sig):
    port = support.free_port()
    state = tmp_path / "state"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(yaml.safe_dump({"agent": {"state_dir": str(state), "interval": "1s"},
                                   "web": {"listen_address": f"127.0.0.1:{port}"},
                                   "host": {"interval": "1s", "timeout": "1s"},
                                   "icmp": {"enabled": False}, "smart": {"enabled": False}}))
    url = f"http://127.0.0.1:{port}/metrics"
    proc = support.Proc(support.agent_command() + ["-c", str(cfg)], tmp_path / "agent.log")
    try:
        proc.wait_http(url)
        text = support.wait_until(
            lambda: (lambda t: t if "commune_host_unexpected_shutdowns_total" in t else None)(
                support.http_get(url).decode()), 30, what="boot metrics")
        support.record_exposition(text)
        assert "commune_host_unexpected_shutdowns_total 0.0" in text
        assert not (state / boot_mod.MARKER_FILE).exists()  # running: no marker yet
        proc.signal(getattr(signal, sig))
        assert proc.popen.wait(20) == 0, proc.log()
    finally:
        proc.stop()
    marker = json.loads((state / boot_mod.MARKER_FILE).read_text())
    assert marker["boot_time"] == pytest.approx(psutil.boot_time(), abs=2)
    saved = json.loads((state / boot_mod.STATE_FILE).read_text())
    assert saved["boot_id"] == marker["boot_id"] and saved["unexpected_shutdowns"] == 0
    assert "Traceback" not in proc.log()
