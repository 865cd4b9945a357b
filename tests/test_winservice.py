"""The Windows service, as far as Linux can run it: the body on a worker thread (as pywin32 runs
``SvcDoRun``) stopped from another thread (``SvcStop``), start-up errors reaching the reporter (the
Event Log on Windows), the rotating log file, and the recovery, status and permission settings
built from pywin32's documented structures. Windows itself (the SCM, icacls, the Event Log) is not
here: docs/deploy.md says what only a Windows machine can confirm."""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

from agent import winservice
from agent.logs import setup_logging
from contract.schema import ConfigErrors
from contract.shutdown import Stopper, stop_on_signals
from tests.support import free_port, http_get, wait_until
from lab.agent import QUIET

SECRET = "tok-9f3c1e77-never-in-logs"


def service_config(tmp: Path, port: int, **agent) -> Path:
    cfg = {
        "agent": {"id": "pc-svc", "state_dir": str(tmp / "state"), "interval": "1s",
                  "log_file": str(tmp / "logs" / "agent.log"), **agent},
        "web": {"listen_address": f"127.0.0.1:{port}"},
        "host": {"interval": "1s", "timeout": "1s"},
        **QUIET,
        # a collector that is not there: the shipper logs its failures, never the token
        "push": {"enabled": True, "url": f"http://127.0.0.1:{free_port()}/api/v1/write", "batch_delay": "0s",
                 "min_backoff": "200ms", "max_backoff": "1s", "timeout": "2s", "bearer_token": SECRET},
    }
    path = tmp / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Reports(list):
    def __call__(self, level: str, message: str) -> None:
        self.append((level, message))


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    setup_logging("info")  # closes the handlers the test opened
    for handler in list(root.handlers):
        if handler not in before:
            root.removeHandler(handler)
            handler.close()
    for handler in before:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def run_in_thread(body: winservice.ServiceBody):
    outcome = {}

    def target():
        try:
            body.run()
            outcome["ok"] = True
        except BaseException as exc:  # what pywin32 would see
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="SvcDoRun", daemon=True)
    thread.start()
    return thread, outcome


def test_the_service_body_runs_on_a_worker_thread_and_stops_from_another(tmp_path):
    port = free_port()
    reports = Reports()
    body = winservice.ServiceBody(str(service_config(tmp_path, port)), reports)
    thread, outcome = run_in_thread(body)
    # /metrics answers before the host input's first collection: wait for it (a slow machine is slower)
    wait_until(lambda: "node_memory_MemTotal_bytes" in http_get(f"http://127.0.0.1:{port}/metrics").decode(),
               what="host metrics on /metrics from the worker thread")
    wait_until(lambda: 'commune_agent_push_' in http_get(f"http://127.0.0.1:{port}/metrics").decode(), what="push metrics")
    time.sleep(2)  # a few failed pushes to the absent collector, logged

    stopper = threading.Thread(target=body.stop, name="SvcStop")  # the control handler's thread
    stopper.start()
    stopper.join(5)
    thread.join(30)
    assert not thread.is_alive(), "SvcDoRun did not return after SvcStop"
    assert outcome == {"ok": True}, outcome
    assert [level for level, _ in reports] == ["info", "info"]
    assert "starting with" in reports[0][1] and str(tmp_path / "agent.yaml") in reports[0][1]
    assert reports[1][1] == "CommuneAgent stopped"
    # the clean stop wrote the shutdown marker, as at a Windows shutdown (SvcShutdown)
    assert (tmp_path / "state" / "clean-shutdown.json").exists()
    log_text = (tmp_path / "logs" / "agent.log").read_text()
    assert "service starting" in log_text and "listening on 127.0.0.1" in log_text and "stopped" in log_text
    assert SECRET not in log_text
    with socket.socket() as s:  # nothing listens any more (SO_REUSEADDR: past connections may linger)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


def test_a_stop_before_the_loop_runs_is_not_lost(tmp_path):
    port = free_port()
    reports = Reports()
    body = winservice.ServiceBody(str(service_config(tmp_path, port)), reports)
    body.stop()  # SvcStop racing SvcDoRun's start
    thread, outcome = run_in_thread(body)
    thread.join(30)
    assert not thread.is_alive() and outcome == {"ok": True}


def test_an_invalid_config_reaches_the_event_log_reporter_and_fails_the_service(tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text("agent:\n  interval: soon\n")
    reports = Reports()
    body = winservice.ServiceBody(str(path), reports)
    thread, outcome = run_in_thread(body)
    thread.join(30)
    assert isinstance(outcome.get("error"), ConfigErrors)
    [(level, message)] = reports
    assert level == "error" and str(path) in message and "agent.interval" in message


def test_an_agent_that_cannot_start_is_logged_to_the_file_and_fails_the_service(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        reports = Reports()
        body = winservice.ServiceBody(str(service_config(tmp_path, port)), reports)
        thread, outcome = run_in_thread(body)
        thread.join(30)
    assert isinstance(outcome.get("error"), OSError), outcome
    assert [level for level, _ in reports] == ["info"]  # started; the error goes through the log
    log_text = (tmp_path / "logs" / "agent.log").read_text()
    assert "service stopped on an error" in log_text and "Traceback" in log_text


def test_without_a_config_file_the_service_runs_on_defaults_and_says_so(tmp_path, monkeypatch):
    from agent import config as agent_config

    monkeypatch.setattr(agent_config, "default_state_dir", lambda: str(tmp_path / "state"))
    reports = Reports()
    body = winservice.ServiceBody(str(tmp_path / "missing.yaml"), reports, listen_address=f"127.0.0.1:{free_port()}")
    body.stop()
    thread, outcome = run_in_thread(body)
    thread.join(60)
    assert outcome == {"ok": True}, outcome
    assert "defaults (" in reports[0][1] and "does not exist" in reports[0][1]


def test_signals_are_left_alone_off_the_main_thread():
    got = {}

    def target():
        async def main():
            stop = asyncio.Event()
            got["installed"] = stop_on_signals(stop)
            stopper = Stopper()
            stopper.bind(stop)
            threading.Thread(target=stopper.request).start()
            await asyncio.wait_for(stop.wait(), 10)
            got["stopped"] = True

        asyncio.run(main())

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(20)
    assert got == {"installed": False, "stopped": True}


def test_a_stop_request_after_the_loop_closed_is_harmless():
    stopper = Stopper()

    async def main():
        stopper.bind(asyncio.Event())

    asyncio.run(main())
    stopper.request()
    assert stopper.requested


def test_the_log_file_rotates_within_its_bound(tmp_path):
    path = tmp_path / "logs" / "agent.log"
    assert setup_logging("info", str(path), max_size=4096, count=3) is None
    log = logging.getLogger("agent.test")
    for i in range(2000):
        log.info("line %d of a long day on a flapping link %s", i, "x" * 40)
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["agent.log", "agent.log.1", "agent.log.2"]
    assert all((path.parent / f).stat().st_size <= 4096 for f in files)
    assert "line 1999 " in path.read_text()


def test_a_log_file_that_cannot_be_opened_is_reported_and_the_rest_still_logs(tmp_path, capsys):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    problem = setup_logging("info", str(blocker / "agent.log"))
    assert problem and str(blocker / "agent.log") in problem
    logging.getLogger("agent.test").warning("still here")
    err = capsys.readouterr().err
    assert "cannot write the log file" in err and "still here" in err


def test_log_file_options_are_checked(tmp_path):
    from agent.config import load_config

    path = tmp_path / "a.yaml"
    path.write_text("agent:\n  log_file_count: 1\n  log_file_max_size: 10\n")
    with pytest.raises(ConfigErrors) as info:
        load_config(str(path))
    text = str(info.value)
    assert "agent.log_file_count" in text and "agent.log_file_max_size" in text


def test_recovery_restarts_three_times_and_resets_after_a_day():
    actions = winservice.failure_actions()
    assert actions["ResetPeriod"] == 86400
    assert actions["Actions"] == [(winservice.SC_ACTION_RESTART, 10_000), (winservice.SC_ACTION_RESTART, 60_000),
                                  (winservice.SC_ACTION_RESTART, 300_000)]


# QueryServiceConfig as pywin32 returns it: (ServiceType, StartType, ErrorControl, BinaryPathName,
# LoadOrderGroup, TagId, Dependencies, ServiceStartName, DisplayName)
INSTALLED = (16, 2, 1, r'"C:\Program Files\commune-monitor\python\pythonservice.exe"', "", 0, [],
             "LocalSystem", "commune-monitor agent")


def test_service_status_shows_start_account_and_recovery():
    text = winservice.describe_service(4, INSTALLED, winservice.failure_actions(), True, True,
                                       r"C:\ProgramData\commune-monitor\agent.yaml")
    assert text.splitlines() == [
        "CommuneAgent: running",
        "start: automatic (delayed)",
        "account: LocalSystem",
        r'command: "C:\Program Files\commune-monitor\python\pythonservice.exe"',
        r"config: C:\ProgramData\commune-monitor\agent.yaml",
        "on failure: restart after 10s, restart after 60s, restart after 300s; count reset after 86400s",
    ]
    bare = winservice.describe_service(1, INSTALLED[:1] + (3,) + INSTALLED[2:7] + ("NT AUTHORITY\\LocalService",)
                                       + INSTALLED[8:], {"ResetPeriod": 0, "Actions": None}, False, False, "x")
    assert "start: manual" in bare and "stopped" in bare
    assert "on failure: nothing (no recovery actions: install again to set them)" in bare


def test_the_data_directory_is_given_to_system_administrators_and_the_service_account():
    assert winservice.icacls_command(r"C:\ProgramData\commune-monitor", winservice.acl_grants("LocalService"), True) == [
        "icacls", r"C:\ProgramData\commune-monitor", "/inheritance:r", "/grant:r",
        "*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F", "*S-1-5-19:(OI)(CI)F", "/Q"]
    assert winservice.acl_grants("LocalSystem") == ["S-1-5-18", "S-1-5-32-544"]
    assert winservice.icacls_command("t", winservice.acl_grants(None), False)[4:6] == ["*S-1-5-18:F", "*S-1-5-32-544:F"]
    for name, want in [(None, "LocalSystem"), ("LocalSystem", "LocalSystem"), ("NT AUTHORITY\\LocalService", "LocalService"),
                       ("NT AUTHORITY\\NetworkService", "NetworkService"), (".\\clerk", None)]:
        assert winservice.account_of(name) == want


def test_a_failing_icacls_is_reported_with_its_output():
    import subprocess

    def run(argv, **kw):
        assert argv[0] == "icacls"
        return subprocess.CompletedProcess(argv, 5, "", "Access is denied.\n")

    problem = winservice.restrict(r"C:\x", "LocalSystem", True, run=run)
    assert problem == r"cannot restrict C:\x: icacls exited 5: Access is denied."

    def missing(argv, **kw):
        raise FileNotFoundError(2, "No such file or directory", "icacls")

    assert "cannot restrict" in winservice.restrict("p", None, False, run=missing)


def test_the_default_account_is_the_one_that_sees_disk_health():
    assert winservice.parser().parse_args(["install"]).account == "LocalSystem"
    assert winservice.ACCOUNTS["LocalSystem"] is None  # CreateService: no user name is LocalSystem
    assert os.path.basename(winservice.default_config_path({"ProgramData": "/pd"})) == "agent.yaml"
