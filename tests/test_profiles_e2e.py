"""Central agent profiles end to end: the real collector serving a fragment directory and a real
agent process (QUIET config, no ICMP) on loopback. A profile change reaches the running agent and
is applied without a restart; a bad fragment is refused by the collector, which keeps serving the
last good; a profile the agent cannot accept and a saved copy broken by hand never stop it."""
from __future__ import annotations

import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import pytest
import yaml

from agent.profile import version_of
from lab.agent import QUIET
from lab.collector import add_token, start_collector
from tests.support import REPO, free_port, wait_until
from tests.test_collector_ingest import collector_metrics, metric_value
from tests.test_push_e2e import Agent

pytestmark = pytest.mark.slow

COMMUNITY = "c0mmunity-from-the-profile"  # a secret in a profile: never in logs or /metrics


def listener() -> socket.socket:
    """A TCP port that accepts connections (the kernel completes the handshake): a probe target."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


def probes(*ports: int, module_timeout: str = "500ms") -> str:
    targets = "".join(f"    - {{name: svc-{p}, module: port, address: '127.0.0.1:{p}'}}\n" for p in ports)
    return (f"probes:\n  enabled: true\n  interval: 1s\n  timeout: 1s\n"
            f"  modules:\n    port: {{prober: tcp, timeout: {module_timeout}}}\n  targets:\n{targets}"
            f"snmp:\n  enabled: false\n  auths:\n    office: {{community: {COMMUNITY}}}\n")


def agent_yaml(tmp: Path, collector_url: str, token: str, state: Path, role: str = "site-poller",
               **sections) -> Path:
    cfg = {
        "agent": {"id": "pc-test", "state_dir": str(state), "interval": "1s"},
        "web": {"listen_address": f"127.0.0.1:{free_port()}"},
        "host": {"interval": "1s", "timeout": "1s"},
        **QUIET,
        "push": {"enabled": True, "url": collector_url + "/api/v1/write", "bearer_token": token,
                 "batch_delay": "0s", "min_backoff": "200ms", "max_backoff": "1s", "timeout": "5s"},
        "profile": {"role": role, "interval": "1s", "timeout": "2s"},
    }
    cfg.update(sections)
    path = tmp / f"agent-{role}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def fetch(url: str, token: str, role: str = "site-poller", etag: Optional[str] = None):
    headers = {"Authorization": f"Bearer {token}"}
    if etag:
        headers["If-None-Match"] = etag
    req = urllib.request.Request(f"{url}/api/v1/profile?role={role}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def fetch_with(url: str, token: str, text: str):
    """The profile once it holds ``text`` (the collector reads a changed file once it settled)."""
    def ready():
        answer = fetch(url, token)
        return answer if answer[0] == 200 and text in answer[1] else None

    return wait_until(ready, 20, what=f"a profile with {text!r}")


def info(agent: Agent) -> dict:
    """The labels of commune_agent_profile_info (version, role, source)."""
    for key in agent.metrics():
        if key.startswith("commune_agent_profile_info,"):
            return dict(part.split("=", 1) for part in key.split(",")[1:])
    return {}


@pytest.fixture
def central(tmp_path):
    """A collector with a profile directory (its upstream is down: pushes wait, profiles do not)."""
    root = tmp_path / "profiles"
    (root / "roles").mkdir(parents=True)
    proc, url, state = start_collector(tmp_path, [f"http://127.0.0.1:{free_port()}/api/v1/write"],
                                       extra={"profiles": {"dir": str(root), "check_interval": "200ms"},
                                              "upstream_check_interval": "0s"})
    try:
        yield proc, url, add_token(state, "09667", "pc-test"), root
    finally:
        proc.stop()


def test_a_profile_change_reaches_the_running_agent_and_a_bad_fragment_is_refused(tmp_path, central):
    collector, url, token, root = central
    a, b = listener(), listener()
    port_a, port_b = a.getsockname()[1], b.getsockname()[1]
    (root / "default.yaml").write_text(probes(port_a))
    (root / "roles" / "site-poller.yaml").write_text("process: {enabled: false}\n")
    status, first, headers = fetch_with(url, token, f"svc-{port_a}")
    assert status == 200 and headers["ETag"] == f'"{version_of(first)}"'
    assert fetch(url, token, etag=headers["ETag"])[0] == 304
    assert fetch(url, "not-a-token")[0] == 401
    assert fetch(url, token, role="desk")[:2] == (
        404, "no profile for role 'desk' on this collector (roles: site-poller)\n")
    agent = Agent(tmp_path, agent_yaml(tmp_path, url, token, tmp_path / "state"))
    try:
        wait_until(lambda: agent.value(f"probe_success,hop=service,module=port,target=svc-{port_a}") == 1, 30,
                   what="the probe target of the profile")
        assert info(agent) == {"version": version_of(first), "role": "site-poller", "source": "collector"}
        started = agent.value("process_start_time_seconds")
        saved = tmp_path / "state" / "profile-site-poller.yaml"
        assert saved.read_text() == first and saved.stat().st_mode & 0o777 == 0o600

        # the change: a second target, applied while the agent runs
        (root / "default.yaml").write_text(probes(port_a, port_b))
        status, second, _ = fetch_with(url, token, f"svc-{port_b}")
        assert status == 200 and second != first
        wait_until(lambda: agent.value(f"probe_success,hop=service,module=port,target=svc-{port_b}") == 1, 30,
                   what="the target added by the changed profile")
        wait_until(lambda: info(agent).get("version") == version_of(second), 10, what="the new version reported")
        assert agent.proc.alive() and agent.value("process_start_time_seconds") == started  # no restart
        assert agent.proc.log().count("listening on") == 1
        assert f"profile {version_of(second)} applied (was {version_of(first)})" in agent.proc.log()
        assert "section probes applied (tcp)" in agent.proc.log()
        assert agent.value("commune_agent_profile_apply_failures_total,section=probes") == 0

        # a bad fragment: refused by the collector, the last good stays served and applied
        (root / "default.yaml").write_text(probes(port_a) + "push:\n  url: http://127.0.0.1:9/api/v1/write\n"
                                           "  colour: red\n")
        wait_until(lambda: metric_value(collector_metrics(url), "commune_collector_profile_errors",
                                        file="default.yaml") == 1, 10, what="the collector counting the problem")
        problem = f"default.yaml:{probes(port_a).count(chr(10)) + 1}: push: section 'push' is never taken from a profile"
        assert problem in collector.log()
        status, body, _ = fetch(url, token)
        assert status == 200 and body == second
        before = agent.value("commune_agent_profile_last_success_timestamp_seconds")
        wait_until(lambda: agent.value("commune_agent_profile_last_success_timestamp_seconds") > before, 10,
                   what="the agent confirming its profile again")
        assert info(agent)["version"] == version_of(second)
        assert agent.value(f"probe_success,hop=service,module=port,target=svc-{port_b}") == 1
        m = agent.metrics()
        assert all(m[f"commune_agent_profile_fetch_failures_total,reason={r}"] == 0
                   for r in ("network", "unauthorized", "misconfigured", "server_error", "invalid"))

        check = subprocess.run([sys.executable, "-m", "collector", "profiles", "check", "--dir", str(root)],
                               capture_output=True, text=True, cwd=REPO, timeout=60)
        assert check.returncode == 1
        assert problem in check.stderr
        assert "profiles check failed: 1 problem(s)" in check.stderr

        text = agent.proc.log() + collector.log() + "".join(agent.metrics()) + collector_metrics(url)
        assert COMMUNITY not in text and token not in text
    finally:
        agent.proc.stop()
        a.close()
        b.close()


def test_a_profile_the_agent_refuses_keeps_the_last_good_also_after_a_restart(tmp_path, central):
    collector, url, token, root = central
    a = listener()
    port = a.getsockname()[1]
    (root / "default.yaml").write_text(probes(port))
    (root / "roles" / "site-poller.yaml").write_text("")
    status, good, _ = fetch_with(url, token, f"svc-{port}")
    assert status == 200, good
    # the local file allows probes 1s: a module timeout of 3s is valid on the collector (its own
    # default 20s) but not merged with this agent's file
    config = agent_yaml(tmp_path, url, token, tmp_path / "state",
                        probes={"enabled": False, "interval": "1s", "timeout": "1s"})
    agent = Agent(tmp_path, config)
    try:
        wait_until(lambda: agent.value(f"probe_success,hop=service,module=port,target=svc-{port}") == 1, 30,
                   what="the probe of the good profile")
        (root / "default.yaml").write_text(probes(port, module_timeout="3s").replace("  interval: 1s\n  timeout: 1s\n", ""))
        status, bad, _ = fetch_with(url, token, "timeout: 3s")
        assert status == 200 and bad != good
        wait_until(lambda: agent.value("commune_agent_profile_fetch_failures_total,reason=invalid") >= 1, 20,
                   what="the agent refusing the profile")
        assert info(agent) == {"version": version_of(good), "role": "site-poller", "source": "collector"}
        assert f"profile {version_of(bad)} from the collector is refused, keeping profile {version_of(good)}" \
            in agent.proc.log()
        assert "probes.modules.port.timeout: must be shorter than probes.timeout (1s), got 3s" in agent.proc.log()
        before = agent.value("commune_agent_input_last_run_timestamp_seconds,input=tcp")
        wait_until(lambda: agent.value("commune_agent_input_last_run_timestamp_seconds,input=tcp") > before, 10,
                   what="the good profile's probe going on")
        saved = tmp_path / "state" / "profile-site-poller.yaml"
        assert saved.read_text() == good
        saved.write_text("probes: [\n")  # broken by hand while the agent runs: it keeps the last good
        wait_until(lambda: saved.read_text() == good, 20, what="the saved copy written again")
        assert "is not profile " + version_of(good) + " (changed or removed by hand?); written again" \
            in agent.proc.log()
        assert info(agent)["version"] == version_of(good) and agent.proc.alive()
    finally:
        assert agent.proc.stop() == 0

    collector.stop()  # the collector is gone: the agent starts on the last good profile on disk
    again = Agent(tmp_path, config, "agent-again")
    try:
        wait_until(lambda: again.value(f"probe_success,hop=service,module=port,target=svc-{port}") == 1, 30,
                   what="the saved profile's probe")
        assert info(again) == {"version": version_of(good), "role": "site-poller", "source": "saved"}
        wait_until(lambda: again.value("commune_agent_profile_fetch_failures_total,reason=network") >= 1, 10,
                   what="the failed fetch counted")
        assert "running on the last good profile" in again.proc.log()
    finally:
        again.proc.stop()
        a.close()


def test_a_saved_profile_broken_by_hand_with_no_collector_leaves_the_local_file(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "profile-site-poller.yaml").write_text("probes:\n  targets: [\n")
    dead = f"http://127.0.0.1:{free_port()}"
    agent = Agent(tmp_path, agent_yaml(tmp_path, dead, "some-token", state))
    try:
        wait_until(lambda: agent.value("commune_agent_input_success,input=host") == 1, 30, what="the host input")
        wait_until(lambda: info(agent), 10, what="the profile input")
        assert info(agent) == {"version": "none", "role": "site-poller", "source": "local"}
        assert agent.value("commune_agent_profile_saved_invalid") == 1
        assert agent.value("commune_agent_profile_fetch_failures_total,reason=network") >= 1
        log = agent.proc.log()
        assert f"the saved profile {state / 'profile-site-poller.yaml'} is refused: " \
               f"{state / 'profile-site-poller.yaml'}:3: invalid YAML" in log
        assert "running on" in log and "alone" in log
        assert "commune_agent_profile_last_success_timestamp_seconds" not in agent.metrics()
        assert agent.proc.alive()
    finally:
        assert agent.proc.stop() == 0


def test_profiles_go_through_a_slow_flapping_link(tmp_path, central):
    """The office's link: slow, cut every few seconds, down for a while, answers lost. The agent
    keeps what it runs through all of it and gets the change once the link lets it through."""
    from lab.linkemu import LinkEmulator

    collector, url, token, root = central
    a, b = listener(), listener()
    port_a, port_b = a.getsockname()[1], b.getsockname()[1]
    (root / "default.yaml").write_text(probes(port_a))
    (root / "roles" / "site-poller.yaml").write_text("")
    port = int(url.rsplit(":", 1)[1])
    link = LinkEmulator(("127.0.0.1", port), bandwidth_bps=64_000, latency=0.15, piece_size=300,
                        cut_every=(2.0, 4.0), seed=7).start()
    agent = None
    try:
        agent = Agent(tmp_path, agent_yaml(tmp_path, f"http://127.0.0.1:{link.port}", token, tmp_path / "state"))
        wait_until(lambda: agent.value(f"probe_success,hop=service,module=port,target=svc-{port_a}") == 1, 60,
                   what="the profile through the weak link")
        first = version_of(fetch_with(url, token, f"svc-{port_a}")[1])
        wait_until(lambda: info(agent).get("version") == first, 10, what="the version reported")
        link.down()
        wait_until(lambda: agent.value("commune_agent_profile_fetch_failures_total,reason=network") >= 2, 30,
                   what="fetches failing while the link is down")
        (root / "default.yaml").write_text(probes(port_a, port_b))
        link.blackhole("downstream")  # back, but the answers are lost: the fetch times out
        link.up()
        failures = agent.value("commune_agent_profile_fetch_failures_total,reason=network")
        wait_until(lambda: agent.value("commune_agent_profile_fetch_failures_total,reason=network") > failures, 30,
                   what="a fetch whose answer was lost")
        assert info(agent)["version"] == first and agent.proc.alive()
        link.blackhole(None)
        wait_until(lambda: agent.value(f"probe_success,hop=service,module=port,target=svc-{port_b}") == 1, 90,
                   what="the changed profile once the link lets it through")
        wait_until(lambda: info(agent)["version"] != first, 10, what="the new version reported")
        assert info(agent)["source"] == "collector" and agent.proc.log().count("listening on") == 1
    finally:
        if agent is not None:
            agent.proc.stop()
        link.stop()
        a.close()
        b.close()
