"""Maintenance windows: ``commune-collector silence`` against a real Alertmanager (Debian's
prometheus-alertmanager): a silence made by the command mutes exactly the commune's or the device's
alerts, ``list`` and ``status --alertmanager`` show it, ``expire`` ends it; bad input is refused
with one clear line."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import urllib.request

import pytest

from collector.silence import SilenceError, parse_until, silence_body
from tests.support import VENV_BIN, Proc, free_port, need_binary, start_prometheus, wait_until


def command():
    script = VENV_BIN / "commune-collector"
    return [str(script)] if script.exists() else ["python", "-m", "collector"]


@pytest.fixture
def alertmanager(tmp_path):
    need_binary("prometheus-alertmanager")
    config = tmp_path / "am.yml"
    config.write_text("route: {receiver: none}\nreceivers: [{name: none}]\n")
    port = free_port()
    am = Proc(["prometheus-alertmanager", f"--config.file={config}", f"--storage.path={tmp_path / 'am'}",
               f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"],
              tmp_path / "am.log")
    try:
        am.wait_http(f"http://127.0.0.1:{port}/-/ready")
        yield f"http://127.0.0.1:{port}"
    finally:
        am.stop()


def post_alert(am: str, **labels: str) -> None:
    body = json.dumps([{"labels": {"alertname": "PrinterUnreachable", "severity": "warning", **labels},
                        "startsAt": dt.datetime.now(dt.timezone.utc).isoformat()}]).encode()
    urllib.request.urlopen(urllib.request.Request(am + "/api/v2/alerts", data=body, method="POST",
                                                  headers={"Content-Type": "application/json"}), timeout=10).read()


def alert_states(am: str) -> dict:
    alerts = json.loads(urllib.request.urlopen(am + "/api/v2/alerts", timeout=10).read())
    return {a["labels"].get("device", a["labels"].get("agent")): a["status"]["state"] for a in alerts}


def run(*args: str):
    return subprocess.run(command() + list(args), capture_output=True, text=True, timeout=60)


def test_a_device_window_mutes_that_device_only_and_expires(alertmanager, tmp_path):
    am = alertmanager
    post_alert(am, commune="09667", device="printer-1", scope="device")
    post_alert(am, commune="09667", device="printer-2", scope="device")
    post_alert(am, commune="09670", agent="pc-9", scope="device")
    wait_until(lambda: len(alert_states(am)) == 3, what="three alerts in Alertmanager")
    added = run("silence", "--alertmanager", am, "add", "--commune", "09667", "--device", "printer-1",
                "--until", "4h", "--reason", "toner being replaced", "--by", "ky-thuat")
    assert added.returncode == 0, added.stderr
    assert "alerts of commune=09667 device=printer-1 muted until" in added.stdout
    sid = added.stdout.split()[1].rstrip(":")
    states = wait_until(lambda: (lambda s: s if s["printer-1"] == "suppressed" else None)(alert_states(am)),
                        what="printer-1 suppressed")
    assert states == {"printer-1": "suppressed", "printer-2": "active", "pc-9": "active"}

    # a commune window mutes every alert of the commune
    whole = run("silence", "--alertmanager", am, "add", "--commune", "09670", "--until", "2099-01-01T00:00",
                "--reason", "x")
    assert whole.returncode == 1 and "at most 90 days ahead" in whole.stderr
    whole = run("silence", "--alertmanager", am, "add", "--commune", "09670", "--until", "1d",
                "--reason", "Tết: office closed")
    assert whole.returncode == 0, whole.stderr
    wait_until(lambda: alert_states(am)["pc-9"] == "suppressed", what="pc-9 suppressed by the commune window")

    listed = run("silence", "--alertmanager", am, "list")
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "ENDS", "MATCHES", "BY", "REASON"]
    mine = [line for line in lines if sid in line][0]
    assert "active" in mine and "commune=09667 device=printer-1" in mine and "ky-thuat" in mine
    assert mine.endswith("toner being replaced")

    prom_proc, prom = start_prometheus(tmp_path / "prom")
    try:
        status = run("status", "--prometheus", prom, "--alertmanager", am)
    finally:
        prom_proc.stop()
    assert status.returncode == 0, status.stderr
    assert "Maintenance windows (Alertmanager silences in force or pending): 2" in status.stdout
    assert "Tết: office closed" in status.stdout

    expired = run("silence", "--alertmanager", am, "expire", sid)
    assert expired.returncode == 0 and f"silence {sid} expired" in expired.stdout
    wait_until(lambda: alert_states(am)["printer-1"] == "active", what="printer-1 active again")
    assert sid not in run("silence", "--alertmanager", am, "list").stdout
    assert sid in run("silence", "--alertmanager", am, "list", "--all").stdout


def test_clear_errors_for_bad_input_and_an_absent_alertmanager(alertmanager):
    bad = run("silence", "--alertmanager", alertmanager, "add", "--commune", "09667", "--until", "next week",
              "--reason", "r")
    assert bad.returncode == 1
    assert "--until: expected a duration (4h, 3d) or a date and time such as 2026-12-12T17:00" in bad.stderr
    past = run("silence", "--alertmanager", alertmanager, "add", "--commune", "09667", "--until", "2020-01-01T08:00",
               "--reason", "r")
    assert past.returncode == 1 and "2020-01-01 08:00 ICT is not in the future" in past.stderr
    gone = f"http://127.0.0.1:{free_port()}"
    down = run("silence", "--alertmanager", gone, "list")
    assert down.returncode == 1 and f"cannot reach Alertmanager at {gone}" in down.stderr
    unknown = run("silence", "--alertmanager", alertmanager, "expire", "no-such-id")
    assert unknown.returncode == 1 and "answered" in unknown.stderr


def test_until_in_vietnam_time_unless_an_offset_is_given():
    now = time.time()
    assert parse_until("4h", now) == now + 4 * 3600
    assert parse_until("2026-12-12T17:00", now) == dt.datetime(2026, 12, 12, 10, 0, tzinfo=dt.timezone.utc).timestamp()
    assert parse_until("2026-12-12T17:00+00:00", now) == dt.datetime(2026, 12, 12, 17, 0,
                                                                      tzinfo=dt.timezone.utc).timestamp()
    with pytest.raises(SilenceError, match="say why"):
        silence_body("09667", now + 60, "  ", "me", now)
    with pytest.raises(SilenceError, match="agent"):
        silence_body("09667", now + 60, "r", "me", now, agent="bad name\n")
    body = silence_body("09667", now + 60, "moving", "me", now, agent="pc-01")
    assert body["matchers"] == [{"name": "commune", "value": "09667", "isRegex": False, "isEqual": True},
                                {"name": "agent", "value": "pc-01", "isRegex": False, "isEqual": True}]
    assert body["comment"] == "[commune-monitor] moving"
