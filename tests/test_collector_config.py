"""Collector config: the example loads, every validation rule has its own invalid case with the
exact message, --config.check prints them all; token and enrollment-key commands."""
from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time

import pytest

from contract.schema import ConfigErrors, field_paths
from collector.config import CollectorConfig, load_config, parse_config
from collector.state import StateError, Store, digest
from tests.support import REPO, collector_command

EXAMPLE = REPO / "config" / "collector.example.yaml"
UP = "upstreams:\n  - url: http://127.0.0.1:9090/api/v1/write\n"


def run_cli(*args, env=None, cwd=None):
    return subprocess.run(collector_command() + [str(a) for a in args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=cwd)


def errors_of(text: str, filename: str = "collector.yaml") -> list:
    with pytest.raises(ConfigErrors) as info:
        parse_config(textwrap.dedent(text), filename, environ={})
    return [str(e) for e in info.value.errors]


def test_example_loads_and_documents_every_option():
    config = load_config(str(EXAMPLE), environ={})
    assert config.web.listen_address == "127.0.0.1:9722"
    assert config.upstreams[0].name == "127.0.0.1:9090"
    assert config.limits.max_body_size == 4 * 10**6
    assert config.state.dir == "/var/lib/commune-collector"
    text = EXAMPLE.read_text()
    for path in field_paths(CollectorConfig):
        leaf = path.rsplit(".", 1)[-1].replace("[]", "").replace("{}", "")
        if leaf in ("username", "password"):  # shown inside the basic_auth comment
            continue
        assert f"{leaf}:" in text, f"{path} is not documented in {EXAMPLE.name}"


def test_defaults_match_the_example():
    """The example shows every default: loading it equals loading only its upstream."""
    example = load_config(str(EXAMPLE), environ={})
    minimal = parse_config(UP, environ={})
    assert repr(example) == repr(minimal)


# One case per rule: (config text, the exact error lines).
BAD = {
    "listen_form": ("web: {listen_address: 'localhost'}\n" + UP,
                    ["collector.yaml:1: web.listen_address: expected host:port like 127.0.0.1:9721, got 'localhost'"]),
    "tls_pair": (f"web: {{tls_cert_file: {EXAMPLE}}}\n" + UP,
                 ["collector.yaml:1: web.tls_key_file: tls_cert_file and tls_key_file must be set together"]),
    "tls_missing": ("web: {tls_cert_file: /nonexistent/c.pem, tls_key_file: /nonexistent/k.pem}\n" + UP,
                    ["collector.yaml:1: web.tls_cert_file: file /nonexistent/c.pem does not exist",
                     "collector.yaml:1: web.tls_key_file: file /nonexistent/k.pem does not exist"]),
    "basic_hash": ("web:\n  basic_auth_users: {prom: secret}\n" + UP,
                   ["collector.yaml:2: web.basic_auth_users.prom: expected a bcrypt hash (htpasswd -nBC 10 USER)"]),
    "plain_on_network": ("web: {listen_address: '0.0.0.0:9722'}\n" + UP,
                         ["collector.yaml:1: web.listen_address: 0.0.0.0:9722 is reachable from the network "
                          "without TLS: set tls_cert_file and tls_key_file, or behind_tls_proxy: true, or listen "
                          "on 127.0.0.1"]),
    "no_upstreams": ("log_level: info\n",
                     ["collector.yaml:1: upstreams: at least one upstream remote-write URL is required"]),
    "url_scheme": ("upstreams:\n  - url: ftp://127.0.0.1/write\n",
                   ["collector.yaml:2: upstreams[0].url: expected an http:// or https:// URL, got 'ftp://127.0.0.1/write'"]),
    "url_credentials": ("upstreams:\n  - url: http://user:pw@127.0.0.1:9090/api/v1/write\n",
                        ["collector.yaml:2: upstreams[0].url: credentials in the URL would show in logs and "
                         "metrics: use basic_auth or bearer_token"]),
    "url_port": ("upstreams:\n  - url: http://127.0.0.1:99999/api/v1/write\n",
                 ["collector.yaml:2: upstreams[0].url: bad port in 'http://127.0.0.1:99999/api/v1/write'"]),
    "timeout": (UP + "    timeout: 0s\n",
                ["collector.yaml:3: upstreams[0].timeout: must be greater than 0s"]),
    "two_auths": (UP + "    bearer_token: abc\n    basic_auth: {username: u, password: p}\n",
                  ["collector.yaml:3: upstreams[0].bearer_token: bearer_token and basic_auth are mutually exclusive"]),
    "basic_user": (UP + "    basic_auth: {username: '', password: p}\n",
                   ["collector.yaml:3: upstreams[0].basic_auth.username: must not be empty"]),
    "ca_missing": (UP + "    tls_ca_file: /nonexistent/ca.pem\n",
                   ["collector.yaml:3: upstreams[0].tls_ca_file: file /nonexistent/ca.pem does not exist"]),
    "duplicate_name": (UP + "  - url: http://127.0.0.1:9090/api/v1/write\n",
                       ["collector.yaml:3: upstreams[1].name: duplicate upstream name '127.0.0.1:9090' "
                        "(first at upstreams[0])"]),
    "unknown_key": (UP + "    timout: 5s\n", None),
    "limit_positive": (UP + "limits: {max_series_per_request: 0}\n",
                       ["collector.yaml:3: limits.max_series_per_request: must be greater than 0"]),
    "limit_decoded": (UP + "limits: {max_body_size: 8MB, max_decoded_size: 4MB}\n",
                      ["collector.yaml:3: limits.max_decoded_size: must not be smaller than max_body_size"]),
    "limit_age": (UP + "limits: {max_sample_age: 0s}\n",
                  ["collector.yaml:3: limits.max_sample_age: must be greater than 0s"]),
    "limit_size_form": (UP + "limits: {max_body_size: lots}\n",
                        ["collector.yaml:3: limits.max_body_size: expected a size like 200MB or 1GiB, got 'lots'"]),
    "sd_label_name": (UP + "http_sd: {labels: {'__x': y}}\n",
                      ["collector.yaml:3: http_sd.labels.__x: invalid label name (letters, digits and _, "
                       "not starting with __)"]),
    "sd_identity": (UP + "http_sd: {labels: {commune: x}}\n",
                    ["collector.yaml:3: http_sd.labels.commune: commune and agent are set from each agent's token"]),
    "sd_scheme": (UP + "http_sd: {scheme: ftp}\n",
                  ["collector.yaml:3: http_sd.scheme: unknown value 'ftp', expected one of: http, https"]),
    "fleet_missing": (UP + "fleet_file: /nonexistent/fleet.yaml\n",
                      ["collector.yaml:3: fleet_file: file /nonexistent/fleet.yaml does not exist"]),
    "env_unset": (UP + "    bearer_token: ${UPSTREAM_TOKEN}\n",
                  ["collector.yaml:3: upstreams[0].bearer_token: environment variable UPSTREAM_TOKEN is not set "
                   "(referenced as ${UPSTREAM_TOKEN})"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_invalid_config_rule(case):
    text, expected = BAD[case]
    got = errors_of(text)
    if case == "unknown_key":
        assert len(got) == 1 and got[0].startswith("collector.yaml:3: upstreams[0].timout: unknown field 'timout'"), got
        return
    assert got == expected


def test_fleet_file_errors_are_reported_with_their_file(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("communes:\n  - {code: 'Bad Code', name: X, province: Y}\n")
    got = errors_of(UP + f"fleet_file: {fleet}\n")
    assert got == [f"{fleet}:2: communes[0].code: must be lowercase letters, digits, '.', '_' or '-', "
                   "starting with a letter or digit"]


def test_config_check_cli_lists_every_error(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("web: {listen_address: '0.0.0.0:9722'}\nupstreams:\n  - url: ftp://x\n    timeout: 0s\n")
    res = run_cli("--config.check", "-c", bad)
    assert res.returncode == 1
    assert res.stderr.splitlines() == [
        f"{bad}:1: web.listen_address: 0.0.0.0:9722 is reachable from the network without TLS: set "
        "tls_cert_file and tls_key_file, or behind_tls_proxy: true, or listen on 127.0.0.1",
        f"{bad}:3: upstreams[0].url: expected an http:// or https:// URL, got 'ftp://x'",
        "config check failed: 2 error(s)",
    ]
    ok = run_cli("--config.check", "-c", EXAMPLE)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"config {EXAMPLE} is valid"
    missing = run_cli("--config.check", "-c", tmp_path / "nope.yaml")
    assert missing.returncode == 1
    assert "cannot read config file: No such file or directory" in missing.stderr


def test_secrets_never_print(tmp_path):
    cfg = parse_config(UP + "    bearer_token: s3cr3t-upstream\n", environ={})
    assert "s3cr3t-upstream" not in repr(cfg)
    assert cfg.upstreams[0].bearer_token.reveal() == "s3cr3t-upstream"


# ---------------------------------------------------------------- tokens and enrollment keys

def test_token_cli_add_list_revoke(tmp_path):
    state = tmp_path / "state"
    add = run_cli("token", "add", "--commune", "09667", "--agent", "pc-ketoan-01", "--state.dir", state,
                  "--pull-address", "10.1.2.3:9721")
    assert add.returncode == 0, add.stderr
    token = add.stdout.strip()
    assert token.startswith("cmt_") and len(token) > 40
    raw = (state / "tokens.json").read_text()
    assert token not in raw and digest(token) in raw  # stored hashed only
    assert oct((state / "tokens.json").stat().st_mode & 0o777) == "0o600"
    ident = Store(str(state)).authenticate(token)
    assert (ident.commune, ident.agent) == ("09667", "pc-ketoan-01")

    listed = run_cli("token", "list", "--state.dir", state)
    assert listed.returncode == 0
    assert "09667" in listed.stdout and "pc-ketoan-01" in listed.stdout and "10.1.2.3:9721" in listed.stdout
    assert token not in listed.stdout

    bad = run_cli("token", "add", "--commune", "Xa Bad", "--agent", "a", "--state.dir", state)
    assert bad.returncode == 1
    assert bad.stderr.strip() == ("commune-collector token add: invalid commune 'Xa Bad': 1-63 lowercase "
                                  "letters, digits, '.', '_' or '-', starting with a letter or digit")

    token_id = ident.token_id
    rev = run_cli("token", "revoke", token_id, "--state.dir", state)
    assert rev.returncode == 0, rev.stderr
    assert Store(str(state)).authenticate(token) is None
    again = run_cli("token", "revoke", token_id, "--state.dir", state)
    assert again.returncode == 1 and f"token {token_id} is already revoked" in again.stderr
    unknown = run_cli("token", "revoke", "t-nope", "--state.dir", state)
    assert unknown.returncode == 1 and "no token with id 't-nope'" in unknown.stderr


def test_token_cli_reads_state_dir_from_config(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(UP + f"state: {{dir: {tmp_path / 'st'}}}\n")
    add = run_cli("token", "add", "--commune", "x1", "--agent", "a1", "-c", cfg)
    assert add.returncode == 0, add.stderr
    assert Store(str(tmp_path / "st")).authenticate(add.stdout.strip()).agent == "a1"


def test_enroll_key_one_time_bound_to_commune_with_expiry(tmp_path):
    state = tmp_path / "state"
    res = run_cli("enroll-key", "create", "--commune", "26734", "--ttl", "1h", "--state.dir", state)
    assert res.returncode == 0, res.stderr
    key = res.stdout.strip()
    assert key.startswith("cme_") and key not in (state / "tokens.json").read_text()
    store = Store(str(state))
    record, token = store.enroll(key, "pc-01")
    assert record["commune"] == "26734" and record["agent"] == "pc-01"
    assert store.authenticate(token).commune == "26734"
    with pytest.raises(StateError, match=r"enrollment key k-\S+ of commune 26734 is used up: all 1 uses are spent"):
        store.enroll(key, "pc-02")
    with pytest.raises(StateError, match="enrollment key is unknown: check it was copied whole"):
        store.enroll("cme_" + "x" * 43, "pc-02")
    listed = run_cli("enroll-key", "list", "--state.dir", state)
    assert "1/1" in listed.stdout and "used up; last: pc-01" in listed.stdout

    clock = [time.time()]
    timed = Store(str(tmp_path / "s2"), clock=lambda: clock[0])
    _rec, key2 = timed.add_enroll_key("26734", 60)
    clock[0] += 61
    with pytest.raises(StateError, match=r"enrollment key k-\S+ of commune 26734 expired on \d{4}-\d\d-\d\d \d\d:\d\d UTC"):
        timed.enroll(key2, "pc-03")
    bad_ttl = run_cli("enroll-key", "create", "--commune", "26734", "--ttl", "soon", "--state.dir", state)
    assert bad_ttl.returncode == 1 and "--ttl: expected a duration" in bad_ttl.stderr


def test_a_commune_key_enrolls_up_to_its_uses_and_can_be_revoked(tmp_path):
    state = tmp_path / "state"
    res = run_cli("enroll-key", "create", "--commune", "09667", "--uses", "3", "--expires", "14d",
                  "--state.dir", state)
    assert res.returncode == 0, res.stderr
    assert "usable by 3 agents" in res.stderr
    key = res.stdout.strip()
    store = Store(str(state))
    tokens = [store.enroll(key, f"pc-{i:02d}")[1] for i in range(2)]
    assert {store.authenticate(t).agent for t in tokens} == {"pc-00", "pc-01"}
    listed = run_cli("enroll-key", "list", "--state.dir", state).stdout
    assert "2/3" in listed and "usable; last: pc-01" in listed
    [record] = store.list_enroll_keys()
    assert record["used_by"] == ["pc-00", "pc-01"] and record["uses"] == 3
    # a name in use is refused without spending a use
    with pytest.raises(Exception, match="pc-01"):
        store.enroll(key, "pc-01")
    assert store.list_enroll_keys()[0]["used_by"] == ["pc-00", "pc-01"]
    store.enroll(key, "pc-02")
    with pytest.raises(StateError, match="used up"):
        store.enroll(key, "pc-03")

    res = run_cli("enroll-key", "create", "--commune", "09667", "--uses", "60", "--state.dir", state)
    key60 = res.stdout.strip()
    kid = [k["id"] for k in store.list_enroll_keys() if k["uses"] == 60][0]
    store.enroll(key60, "pc-10")
    revoked = run_cli("enroll-key", "revoke", kid, "--state.dir", state)
    assert revoked.returncode == 0 and "1 of 60 uses spent; those agents keep their tokens" in revoked.stdout
    with pytest.raises(StateError, match="revoked"):
        store.enroll(key60, "pc-11")
    assert store.authenticate(tokens[0]).agent == "pc-00"  # enrolled agents are not touched
    assert [t for t in [store.authenticate(x) for x in tokens] if t is None] == []
    again = run_cli("enroll-key", "revoke", kid, "--state.dir", state)
    assert again.returncode == 1 and "already revoked" in again.stderr
    bad = run_cli("enroll-key", "create", "--commune", "09667", "--uses", "0", "--state.dir", state)
    assert bad.returncode == 1 and "--uses: must be from 1 to 200, got 0" in bad.stderr


def test_keys_written_before_multi_use_keys_still_read(tmp_path):
    import json

    store = Store(str(tmp_path / "st"))
    _rec, key = store.add_enroll_key("09667", 3600)
    path = tmp_path / "st" / "tokens.json"
    data = json.loads(path.read_text())
    for k in data["enroll_keys"]:  # the form of the previous release: one name, no uses, no revoked
        k["used_by"] = None
        del k["uses"], k["revoked"]
    path.write_text(json.dumps(data))
    assert store.list_enroll_keys()[0]["uses"] == 1
    store.enroll(key, "pc-01")
    with pytest.raises(StateError, match="used up"):
        store.enroll(key, "pc-02")


def test_state_changes_by_cli_are_seen_by_a_running_store(tmp_path):
    state = tmp_path / "state"
    store = Store(str(state))
    assert store.authenticate("cmt_whatever") is None
    add = run_cli("token", "add", "--commune", "c1", "--agent", "a1", "--state.dir", state)
    assert store.authenticate(add.stdout.strip()).agent == "a1"


def test_unreadable_state_file_is_an_error(tmp_path):
    (tmp_path / "tokens.json").write_text("{not json")
    with pytest.raises(StateError, match="cannot read"):
        Store(str(tmp_path)).authenticate("cmt_x")
    res = run_cli("token", "list", "--state.dir", tmp_path)
    assert res.returncode == 1 and "cannot read" in res.stderr


def test_unknown_subcommand():
    res = run_cli("frobnicate")
    assert res.returncode == 2 and "unknown subcommand 'frobnicate'" in res.stderr
