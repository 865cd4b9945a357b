"""Who an agent is: one name validator for agent and collector, a name taken only once (or
replaced on purpose), and pull addresses Prometheus may really scrape."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from contract.catalog import parse_catalog
from contract.names import default_agent_name, name_problem, pull_address_problem
from collector.state import NameTaken, StateError, Store, check_address, check_name
from tests.support import agent_command
from tests.test_collector_ingest import collector_metrics, dead_upstream, metric_value, post_json, start_collector

__all__ = ["dead_upstream"]  # the fixture, shared


@pytest.mark.parametrize("kind,value", [
    ("agent", "pc-01\n"), ("agent", "pc 01"), ("agent", "-pc"), ("agent", ""), ("agent", "a" * 64),
    ("agent", "pc-01\x00"), ("agent", 5), ("commune", "09667\n"), ("commune", "Xa-A"), ("commune", "09667 "),
])
def test_one_name_rule_refuses_what_dollar_used_to_let_through(kind, value):
    assert name_problem(kind, value)
    with pytest.raises(StateError, match=f"invalid {kind}"):
        check_name(kind, value)


@pytest.mark.parametrize("kind,value", [("agent", "PC-MotCua_01.lan"), ("agent", "a" * 63), ("commune", "09667"),
                                        ("commune", "hn.ba-dinh_1")])
def test_valid_names(kind, value):
    assert name_problem(kind, value) is None
    assert check_name(kind, value) == value


def test_metric_and_label_names_are_full_matches_everywhere():
    with pytest.raises(ValueError, match="invalid metric name"):
        parse_catalog('metrics:\n- {name: "x_total\\n", type: counter, help: a., input: host}\n')
    from contract.schema import ConfigErrors
    from collector.config import parse_config

    with pytest.raises(ConfigErrors, match="invalid label name"):
        parse_config('upstreams: [{url: "http://127.0.0.1:1/api/v1/write"}]\n'
                     'http_sd: {labels: {"region\\n": north}}\n')


@pytest.mark.parametrize("hostname,expected", [
    ("DESKTOP-7H2K9QF", "DESKTOP-7H2K9QF"), ("pc-01.xa-a.lan", "pc-01.xa-a.lan"),
    ("pc-01." + "x" * 70 + ".lan", "pc-01"), ("máy-1", "m-y-1"), ("", "agent"),
])
def test_default_agent_name_from_the_host_name_is_always_valid(hostname, expected):
    name = default_agent_name(hostname)
    assert name == expected and name_problem("agent", name) is None


@pytest.mark.parametrize("address", [
    "10.1.2.3:9721", "192.168.1.20:9100", "127.0.0.1:9721", "pc-01.xa-a.lan:9721", "pc-01:9721",
    "[fd00::5]:9721", "[::1]:9721", "203.0.113.7:443",
])
def test_pull_addresses_accepted(address):
    assert pull_address_problem(address) is None
    assert check_address(address) == address


@pytest.mark.parametrize("address,why", [
    ("169.254.169.254:80", "link-local"),  # cloud metadata service
    ("[fe80::1]:9721", "link-local"), ("[::ffff:169.254.169.254]:80", "link-local"),
    ("0.0.0.0:9721", "unspecified"), ("[::]:9721", "unspecified"), ("224.0.0.1:9721", "multicast"),
    ("255.255.255.255:9721", "broadcast"),
    ("evil.example/x?y#:80", "not a host name"), ("http://10.1.2.3:9721", "not a host name"),
    ("user@10.1.2.3:9721", "not a host name"), ("10.1.2.3:9721/metrics", "expected host:port"),
    ("10.1.2.3", "expected host:port"), ("10.1.2.3:0", "expected host:port"), ("10.1.2.3:70000", "expected host:port"),
    ("10.1.2.3: 80", "expected host:port"), ("pc 01:9721", "not a host name"), ("10.1.2:9721", "not a host name"),
    ("[zz::1]:9721", "not an IPv6 address"), ("10.1.2.3:٩٧", "expected host:port"), ("", "expected host:port"),
])
def test_pull_addresses_refused(address, why):
    problem = pull_address_problem(address)
    assert problem and why in problem
    with pytest.raises(StateError, match="invalid pull address"):
        check_address(address)


def test_a_name_with_a_live_token_is_refused_and_the_key_is_kept(tmp_path):
    store = Store(str(tmp_path))
    _rec, first = store.add_token("09667", "pc-01")
    _rec, key = store.add_enroll_key("09667", 3600)
    with pytest.raises(NameTaken, match=r"agent 'pc-01' of commune '09667' already has a live token \(t-"):
        store.enroll(key, "pc-01")
    assert store.authenticate(first).agent == "pc-01"  # the old agent goes on
    assert [k["used"] for k in store.list_enroll_keys()] == [None]  # the key was not spent
    _rec, second = store.enroll(key, "pc-02")  # the same key, another name
    assert store.authenticate(second).agent == "pc-02"
    with pytest.raises(NameTaken):
        store.add_token("09667", "pc-02")
    store.add_token("09668", "pc-02")  # the same name in another commune is another agent


def test_replace_revokes_the_old_token_in_the_same_write(tmp_path):
    store = Store(str(tmp_path))
    _rec, old = store.add_token("09667", "pc-01")
    _rec, key = store.add_enroll_key("09667", 3600)
    record, new = store.enroll(key, "pc-01", replace=True)
    assert store.authenticate(old) is None
    assert store.authenticate(new).token_id == record["id"]
    revoked = [t for t in store.list_tokens(include_revoked=True) if t["revoked"]]
    assert [t["revoked_by"] for t in revoked] == ["replace"]
    _rec, newest = store.add_token("09667", "pc-01", replace=True)
    assert store.authenticate(new) is None and store.authenticate(newest).agent == "pc-01"
    assert len(store.active_tokens()) == 1


def test_collector_answers_409_then_replaces_and_http_sd_lists_only_good_addresses(tmp_path, dead_upstream):
    state = tmp_path / "collector-state"
    store = Store(str(state))
    _rec, old = store.add_token("09667", "pc-01", pull_address="10.1.2.3:9721")
    _rec, key = store.add_enroll_key("09667", 3600)
    # a record from before addresses were checked (or edited by hand): never an http_sd target
    data = json.loads((state / "tokens.json").read_text())
    data["tokens"].append(dict(data["tokens"][0], id="t-handmade", agent="pc-99", sha256="0" * 64,
                               pull_address="169.254.169.254:80"))
    (state / "tokens.json").write_text(json.dumps(data))
    proc, url, _ = start_collector(tmp_path, [dead_upstream], state_dir=state,
                                   extra={"upstream_check_interval": "0s"})
    try:
        status, reply = post_json(url + "/api/v1/enroll", {"key": key, "agent": "pc-01"})
        assert status == 409 and "already has a live token" in reply["error"]
        assert post_json(url + "/api/v1/enroll", {"key": key, "agent": "pc-01", "replace": "yes"})[0] == 400
        assert post_json(url + "/api/v1/enroll", {"key": key, "agent": "pc-01\n"})[0] == 400
        assert post_json(url + "/api/v1/enroll", {"key": key, "agent": "pc-03",
                                                  "pull_address": "169.254.169.254:80"})[0] == 400
        status, reply = post_json(url + "/api/v1/enroll", {"key": key, "agent": "pc-01", "replace": True,
                                                           "pull_address": "10.1.2.4:9721"})
        assert status == 200, reply
        assert Store(str(state)).authenticate(old) is None
        from tests.support import http_get

        sd = json.loads(http_get(url + "/api/v1/sd"))
        assert [g["targets"] for g in sd] == [["10.1.2.4:9721"]]
        text = collector_metrics(url)
        assert metric_value(text, "commune_collector_enrollments_total", result="conflict") == 1
        assert metric_value(text, "commune_collector_enrollments_total", result="ok") == 1
        assert metric_value(text, "commune_collector_enrollments_total", result="bad_request") == 3
        log = proc.log_path.read_text()
        assert "t-handmade" in log and "link-local" in log
        assert key not in log and key not in text
    finally:
        proc.stop()


def test_unreadable_token_store_is_the_collectors_fault_at_enrollment(tmp_path, dead_upstream):
    state = tmp_path / "collector-state"
    _rec, key = Store(str(state)).add_enroll_key("09667", 3600)
    proc, url, _ = start_collector(tmp_path, [dead_upstream], state_dir=state, extra={"upstream_check_interval": "0s"})
    try:
        good = (state / "tokens.json").read_text()
        (state / "tokens.json").write_text(good[: len(good) // 2])
        status, reply = post_json(url + "/api/v1/enroll", {"key": key, "agent": "pc-01"})
        assert status == 503 and "try again later" in reply["error"]
        (state / "tokens.json").write_text(good)
        assert post_json(url + "/api/v1/enroll", {"key": key, "agent": "pc-01"})[0] == 200  # the key was kept
        text = collector_metrics(url)
        assert metric_value(text, "commune_collector_enrollments_total", result="state_unreadable") == 1
    finally:
        proc.stop()


def test_agent_enroll_refuses_a_bad_name_and_explains_the_conflict(tmp_path, dead_upstream):
    state = tmp_path / "collector-state"
    store = Store(str(state))
    store.add_token("09667", "pc-test")
    _rec, key = store.add_enroll_key("09667", 3600)
    proc, url, _ = start_collector(tmp_path, [dead_upstream], state_dir=state, extra={"upstream_check_interval": "0s"})
    env = {**os.environ, "COMMUNE_ENROLL_KEY": key}
    config = tmp_path / "agent.yaml"
    config.write_text(f"agent: {{id: pc-test, state_dir: {tmp_path / 'agent-state'}}}\n")
    try:
        def enroll(*extra):
            return subprocess.run(agent_command() + ["enroll", "--collector", url, "-c", str(config), *extra],
                                  capture_output=True, text=True, timeout=60, env=env)

        bad = enroll("--agent-id", "pc test")
        assert bad.returncode == 2 and "--agent-id: invalid agent 'pc test'" in bad.stderr
        taken = enroll()
        assert taken.returncode == 1 and "HTTP 409" in taken.stderr and "--replace" in taken.stderr
        ok = enroll("--replace")
        assert ok.returncode == 0, ok.stderr
        assert len(Store(str(state)).active_tokens()) == 1
        assert key not in taken.stderr + ok.stdout + ok.stderr
    finally:
        proc.stop()
