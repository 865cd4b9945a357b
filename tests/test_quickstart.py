"""deploy/quickstart.sh end to end: the whole stack in a temporary prefix on free loopback ports,
the local agent's series in Prometheus through the enrolled push path, a second run that keeps the
running processes, `commune-collector status --json` on the result, and `stop` leaving nothing
behind (no process, no listener).

The agent gets a config fragment switching the gateway ping off, so the test never pings the real
gateway even when pytest runs outside tests/run.sh's loopback-only namespace."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import REPO, VENV_BIN, free_port, prom_query, wait_until

pytestmark = pytest.mark.slow

SCRIPT = REPO / "deploy" / "quickstart.sh"
COMPONENTS = ("prometheus", "alertmanager", "collector", "agent")
COMMUNE = "qs-test"


def quickstart(*args, timeout=300):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUICKSTART_")}
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def pids(prefix: Path) -> dict:
    out = {}
    for name in COMPONENTS + ("grafana",):
        f = prefix / "run" / f"{name}.pid"
        if f.exists():
            out[name] = int(f.read_text().strip())
    return out


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def saved(prefix: Path) -> dict:
    out = {}
    for line in (prefix / "quickstart.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k] = shlex.split(v)[0] if v else ""
    return out


@pytest.fixture
def stack(tmp_path):
    """Ports and prefix of a quickstart; whatever it started is stopped afterwards, also on failure."""
    prefix = tmp_path / "qs prefix"  # a space in the path, on purpose
    fragment = tmp_path / "agent-extra.yaml"
    fragment.write_text("icmp: {gateway: false}\n"
                        "smart: {enabled: false}\n"
                        "host: {interval: 2s, timeout: 2s}\n")
    ports = {}
    for name in COMPONENTS + ("grafana",):
        port = free_port()
        while port in ports.values():
            port = free_port()
        ports[name] = port
    args = ["--prefix", prefix, "--commune", COMMUNE, "--agent-config", fragment]
    for name, port in ports.items():
        args += [f"--{name}-port", port]
    yield prefix, ports, args
    started = pids(prefix)
    if any(alive(p) for p in started.values()):
        quickstart("stop", "--prefix", prefix, timeout=120)
    for name, pid in started.items():  # last resort, only processes of this prefix
        if alive(pid) and str(prefix) in cmdline(pid):
            os.kill(pid, signal.SIGKILL)


def test_quickstart_runs_the_stack_again_idempotently_and_stops_it(stack):
    prefix, ports, args = stack
    # Alertmanager's port is left to the script, with its default 9093 held by someone else:
    # it must take the next free one and say so
    i = args.index("--alertmanager-port")
    del args[i:i + 2]
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            blocker.bind(("127.0.0.1", 9093))
            blocker.listen()
        except OSError:
            pass  # already taken by another program: the same situation
        first = quickstart("start", *args)
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    ports["alertmanager"] = int(saved(prefix)["PORT_alertmanager"])
    assert ports["alertmanager"] != 9093
    assert "quickstart: alertmanager: port 9093 is taken" in out and f"using {ports['alertmanager']}" in out
    assert "the agent's data is in Prometheus" in out
    for name in COMPONENTS:
        assert f"quickstart: {name} started" in out
    assert f"http://127.0.0.1:{ports['prometheus']}" in out
    stop_line = next(line for line in out.splitlines() if line.startswith("Stop:"))
    assert shlex.split(stop_line.split(":", 1)[1]) == ["bash", "deploy/quickstart.sh", "stop", "--prefix", str(prefix)]
    if not shutil.which("grafana-server"):
        assert "Grafana       not installed" in out

    started = pids(prefix)
    assert set(started) >= set(COMPONENTS)
    for name in COMPONENTS:
        assert alive(started[name]), name
        assert (prefix / "log" / f"{name}.log").exists()
    assert "--cluster.listen-address= " in cmdline(started["alertmanager"]) + " "
    assert "--web.enable-remote-write-receiver" in cmdline(started["prometheus"])
    # every listener on loopback
    for name in COMPONENTS:
        assert not port_free(ports[name]), name

    # configs: fresh enrollment, the fragment merged, nothing sent anywhere by Alertmanager
    import yaml

    agent_cfg = yaml.safe_load((prefix / "etc" / "agent.yaml").read_text())
    assert agent_cfg["icmp"] == {"gateway": False}
    assert agent_cfg["push"]["url"] == f"http://127.0.0.1:{ports['collector']}/api/v1/write"
    assert (prefix / "data" / "agent" / "push.token").stat().st_mode & 0o077 == 0
    am = yaml.safe_load((prefix / "etc" / "alertmanager.yml").read_text())
    assert am["receivers"] == [{"name": "nowhere"}]
    prom_cfg = yaml.safe_load((prefix / "etc" / "prometheus.yml").read_text())
    assert prom_cfg["storage"]["tsdb"]["out_of_order_time_window"] == "7d"
    assert prom_cfg["rule_files"] == [str(REPO / "collector" / "rules" / "*.yml")]
    # the alerts' runbook_url lead to this collector's pages
    assert prom_cfg["global"]["external_labels"]["runbook_base"] == f"http://127.0.0.1:{ports['collector']}/runbooks"

    agent_id = saved(prefix)["SAVED_AGENT_ID"]
    prom = f"http://127.0.0.1:{ports['prometheus']}"
    # the agent's host series, pushed through the collector, stamped with the commune
    res = wait_until(lambda: prom_query(prom, f'node_memory_MemTotal_bytes{{commune="{COMMUNE}"}}'), 90,
                     what="the local agent's host series in Prometheus")
    assert res[0]["metric"]["agent"] == agent_id and float(res[0]["value"][1]) > 0
    # the rules are loaded
    groups = json.loads(_get(f"{prom}/api/v1/rules"))["data"]["groups"]
    assert any(g["name"] == "commune-replacement-factors" for g in groups)

    # a second run keeps everything that runs: same pids, no second copy
    second = quickstart("start", "--prefix", prefix)
    assert second.returncode == 0, second.stdout + second.stderr
    for name in COMPONENTS:
        assert f"quickstart: {name} already running (pid {started[name]})" in second.stdout
    assert "enrolled" not in second.stdout
    assert f"quickstart: prometheus already running (pid {started['prometheus']}), rules reloaded" in second.stdout
    assert {k: v for k, v in pids(prefix).items() if k in COMPONENTS} == {k: started[k] for k in COMPONENTS}
    for name in COMPONENTS:
        needle = str(prefix / "etc")
        copies = [p for p in _all_pids() if needle in cmdline(p) and _component_of(cmdline(p)) == name]
        assert copies == [started[name]], (name, copies)

    # a changed agent config restarts the agent only, with the token it already has
    fragment = Path(saved(prefix)["SAVED_AGENT_CONFIG"])
    fragment.write_text(fragment.read_text().replace("interval: 2s, timeout: 2s", "interval: 3s, timeout: 3s"))
    third = quickstart("start", "--prefix", prefix)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "quickstart: agent: configuration changed, restarting" in third.stdout
    assert "enrolled" not in third.stdout
    for name in ("prometheus", "alertmanager", "collector"):
        assert f"quickstart: {name} already running (pid {started[name]})" in third.stdout
    assert not alive(started["agent"])
    started["agent"] = pids(prefix)["agent"]
    assert alive(started["agent"])

    # the status command sees the commune online once Prometheus scraped the collector
    def online():
        proc = subprocess.run([str(VENV_BIN / "commune-collector"), "status", "--prometheus", prom, "--json"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)
        rows = {c["commune"]: c for c in summary["communes"]["list"]}
        return summary if rows.get(COMMUNE, {}).get("online") else None

    summary = wait_until(online, 120, interval=2, what="the commune online in commune-collector status")
    row = next(c for c in summary["communes"]["list"] if c["commune"] == COMMUNE)
    assert row["in_fleet"] and row["name"] == f"Quickstart {COMMUNE}"
    assert [a["agent"] for a in row["agents"] if a["online"]] == [agent_id]
    assert summary["communes"]["online"] == summary["communes"]["total"] == 1
    assert summary["devices_down"]["snmp"] == []
    assert set(summary["alerts"]["by_severity"]) >= {"critical", "warning", "info"}
    status = quickstart("status", "--prefix", prefix)
    assert status.returncode == 0, status.stderr
    assert f"agent         running, pid {started['agent']}" in status.stdout
    assert "Communes online: 1 of 1" in status.stdout

    # stop ends exactly what start started
    stop = quickstart("stop", "--prefix", prefix, timeout=120)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    for name in COMPONENTS:
        assert f"quickstart: {name} stopped (pid {started[name]})" in stop.stdout
        assert not alive(started[name]), name
        assert not (prefix / "run" / f"{name}.pid").exists()
    wait_until(lambda: all(port_free(ports[n]) for n in COMPONENTS), 10, what="every port free again")
    assert not [p for p in _all_pids() if str(prefix / "etc") in cmdline(p)]
    # stopping again is harmless
    again = quickstart("stop", "--prefix", prefix, timeout=60)
    assert again.returncode == 0 and "stopped (pid" not in again.stdout


def test_stop_never_kills_a_process_it_did_not_start(tmp_path):
    """A pid file naming someone else's process (a reused pid) is removed, the process left alone."""
    prefix = tmp_path / "qs"
    (prefix / "run").mkdir(parents=True)
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        (prefix / "run" / "prometheus.pid").write_text(f"{other.pid}\n")
        (prefix / "run" / "agent.pid").write_text("999999999\n")
        proc = quickstart("stop", "--prefix", prefix, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "prometheus: not running (stale pid file removed, nothing killed)" in proc.stdout
        assert "agent: not running (stale pid file removed, nothing killed)" in proc.stdout
        assert other.poll() is None
        assert not (prefix / "run" / "prometheus.pid").exists()
    finally:
        other.kill()
        other.wait()


def test_a_port_given_that_is_taken_fails_clearly(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        proc = quickstart("start", "--prefix", tmp_path / "qs", "--prometheus-port", taken, timeout=120)
    assert proc.returncode == 1
    assert f"quickstart: prometheus port {taken} is taken" in proc.stderr
    assert "choose another with --prometheus-port" in proc.stderr
    assert not any(alive(p) for p in pids(tmp_path / "qs").values())


def _get(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read()


def _all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and alive(int(p))]


def _component_of(cmd: str) -> str:
    if "prometheus-alertmanager" in cmd:
        return "alertmanager"
    if "--storage.tsdb.path" in cmd:
        return "prometheus"
    if "commune-collector" in cmd:
        return "collector"
    if "commune-agent" in cmd:
        return "agent"
    return "other"
