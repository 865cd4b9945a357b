"""Central agent profiles, the pure parts: what a profile may say, merging, pins, the collector's
fragment directory (real files in a temporary directory) and the runner replacing inputs."""
from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
import yaml

from agent import profile
from agent.config import load_config, load_with_profile
from agent.profile_fetch import Profiles, changed_sections, profile_url
from agent.runner import Runner
from contract.samples import sample
from contract.schema import ConfigErrors, load_model
from collector.profiles import ProfileStore, chain, classify


def check(text: str, name: str = "default.yaml"):
    data, lines = profile.parse_profile(textwrap.dedent(text), name)
    return [str(e) for e in profile.check_profile(data, name, lines)]


PROBE = """\
probes:
  enabled: true
  modules:
    port: {prober: tcp, timeout: 2s}
  targets:
    - {name: portal, module: port, address: "127.0.0.1:9"}
"""


# ---------------------------------------------------------------- what a profile may say

def test_a_valid_profile_has_no_problems():
    assert check(PROBE) == []
    assert check("") == []  # an empty fragment is an empty profile


@pytest.mark.parametrize("text,expected", [
    ("push:\n  url: http://evil.example/api/v1/write\n",
     "default.yaml:1: push: section 'push' is never taken from a profile (identity, the listener and push "
     "credentials stay in the agent's own file); managed sections: host, inventory, snmp"),
    ("agent: {id: other}\n", "default.yaml:1: agent: section 'agent' is never taken from a profile"),
    ("web: {listen_address: 0.0.0.0:9721}\n", "default.yaml:1: web: section 'web' is never taken"),
    ("profile: {role: desk}\n", "default.yaml:1: profile: section 'profile' is never taken"),
    ("prbes: {}\n", "default.yaml:1: prbes: unknown section 'prbes' (did you mean 'probes'?)"),
    ("probes:\n  targets:\n    - {name: a, module: nope, address: '127.0.0.1:1'}\n",
     "default.yaml:3: probes.targets[0].module: unknown module 'nope' (modules: none defined)"),
    ("host:\n  interval: soon\n", "default.yaml:2: host.interval: expected a duration like 30s, 5m or 1h, got 'soon'"),
    ("- probes\n", "default.yaml:1: expected a mapping of sections (e.g. probes:, snmp:) at the top level"),
    ("probes: [\n", "default.yaml:2: invalid YAML"),
])
def test_problems_name_the_file_the_line_and_what_was_expected(text, expected):
    try:
        problems = check(text)
    except ConfigErrors as exc:  # not YAML or not a mapping: refused while parsing
        problems = [str(e) for e in exc.errors]
    assert any(p.startswith(expected) for p in problems), problems


def test_strings_of_a_profile_never_read_the_environment(monkeypatch):
    monkeypatch.setenv("COMMUNE_PUSH_TOKEN", "s3cret-token")
    text = PROBE.replace("name: portal", 'name: "portal-${COMMUNE_PUSH_TOKEN}"')
    assert check(text) == []
    data, _ = profile.parse_profile(text, "p")
    config = load_with_profile(load_config(None), data)
    assert config.probes.targets[0].name == "portal-${COMMUNE_PUSH_TOKEN}"


# ---------------------------------------------------------------- merging and pins

def test_merge_is_key_by_key_for_mappings_and_replaces_lists_and_values():
    base = {"probes": {"interval": "30s", "modules": {"a": {"prober": "tcp"}}, "targets": [{"name": "x"}]}}
    over = {"probes": {"modules": {"b": {"prober": "http"}}, "targets": [{"name": "y"}]}, "host": {"enabled": False}}
    assert profile.merge(base, over) == {
        "probes": {"interval": "30s", "modules": {"a": {"prober": "tcp"}, "b": {"prober": "http"}},
                   "targets": [{"name": "y"}]},
        "host": {"enabled": False}}
    assert base["probes"]["targets"] == [{"name": "x"}]  # inputs are not changed


def test_the_profile_wins_over_the_local_file_except_on_pinned_paths(tmp_path):
    local = tmp_path / "agent.yaml"
    local.write_text("host: {interval: 7s, timeout: 5s}\nprocess: {interval: 40s}\n"
                     "profile: {pin: [host.interval]}\n")
    config = load_config(str(local))
    data, _ = profile.parse_profile("host: {interval: 20s}\nprocess: {interval: 50s, timeout: 10s}\n", "p")
    merged = load_with_profile(config, data)
    assert merged.host.interval == 7 and merged.host.timeout == 5  # pinned; untouched
    assert merged.process.interval == 50 and merged.process.timeout == 10  # from the profile
    assert set(changed_sections(config, merged)) == {"process"}


@pytest.mark.parametrize("pin,expected", [
    ("push.url", "profile.pin[0]: 'push.url': only paths of the managed sections can be pinned"),
    ("probes.targetz", "profile.pin[0]: 'probes.targetz' is not an option path"),
])
def test_pins_are_checked(tmp_path, pin, expected):
    local = tmp_path / "agent.yaml"
    local.write_text(f"profile:\n  pin: [{pin}]\n")
    with pytest.raises(ConfigErrors) as exc:
        load_config(str(local))
    assert str(exc.value).startswith(f"{local}:2: {expected}")


def test_map_keys_can_be_pinned(tmp_path):
    local = tmp_path / "agent.yaml"
    local.write_text("profile:\n  pin: [snmp.auths.office, probes.targets]\n")
    assert load_config(str(local)).profile.pin == ["snmp.auths.office", "probes.targets"]


def test_a_profile_valid_alone_can_still_conflict_with_the_local_file(tmp_path):
    local = tmp_path / "agent.yaml"
    local.write_text("probes: {interval: 2s, timeout: 1s}\n")
    config = load_config(str(local))
    data, _ = profile.parse_profile(PROBE, "p")
    with pytest.raises(ConfigErrors) as exc:
        load_with_profile(config, data)
    assert "with the profile: probes.modules.port.timeout: must be shorter than probes.timeout (1s), got 2s" \
        in str(exc.value)


def test_the_profile_url_comes_from_the_push_url():
    section = load_model(profile.Config, {})
    assert profile_url(section, "https://c.example:9722/api/v1/write") == "https://c.example:9722/api/v1/profile"
    assert profile_url(section, "https://c.example/cm/api/v1/write") == "https://c.example/cm/api/v1/profile"
    assert profile_url(load_model(profile.Config, {"role": "site-poller"}), "http://127.0.0.1:1/x") == \
        "http://127.0.0.1:1/api/v1/profile?role=site-poller"
    with pytest.raises(ConfigErrors, match="profile.role: expected lower-case letters"):
        load_model(profile.Config, {"role": "Site Poller"}, path="profile")


def test_the_agent_checks_a_profile_as_the_collector_does(tmp_path):
    local = tmp_path / "agent.yaml"
    local.write_text(f"agent: {{state_dir: {tmp_path / 'state'}}}\n"
                     "push: {enabled: true, url: 'http://127.0.0.1:9/api/v1/write', bearer_token: t}\n")
    profiles = Profiles(load_config(str(local)))
    assert profiles.check(PROBE, "p").probes.targets[0].name == "portal"
    with pytest.raises(ConfigErrors, match="p:1: push: section 'push' is never taken"):
        profiles.check("push: {url: 'http://127.0.0.1:8/api/v1/write'}\n", "p")


# ---------------------------------------------------------------- the collector's directory

def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.fixture
def fragments(tmp_path):
    root = tmp_path / "profiles"
    write(root, "default.yaml", "process: {interval: 60s}\nhost: {interval: 30s}\n")
    write(root, "roles/site-poller.yaml", "host: {interval: 20s}\n")
    write(root, "communes/09667.yaml", "host: {interval: 10s}\n")
    write(root, "communes/09667/site-poller.yaml", "process: {interval: 45s}\n")
    return root


def served(store: ProfileStore, commune: str, role: str = "") -> dict:
    status, body, headers = store.answer(commune, role)
    assert status == 200, body
    data, _ = profile.parse_profile(body, "served")
    return data


def test_fragments_merge_default_role_commune_then_commune_role(fragments):
    store = ProfileStore(settle=0, directory=str(fragments))
    assert served(store, "09667", "site-poller") == {"process": {"interval": "45s"}, "host": {"interval": "10s"}}
    assert served(store, "09667") == {"process": {"interval": "60s"}, "host": {"interval": "10s"}}
    assert served(store, "00001", "site-poller") == {"process": {"interval": "60s"}, "host": {"interval": "20s"}}
    assert served(store, "00001") == {"process": {"interval": "60s"}, "host": {"interval": "30s"}}
    assert store.problems == {}
    assert {s.labels["file"]: s.value for s in store.samples()} == {
        "default.yaml": 0, "roles/site-poller.yaml": 0, "communes/09667.yaml": 0,
        "communes/09667/site-poller.yaml": 0}


def test_classify_and_chain():
    assert classify("default.yaml") == ("", "")
    assert classify("roles/desk.yaml") == ("", "desk")
    assert classify("communes/09667/desk.yaml") == ("09667", "desk")
    assert classify("role/desk.yaml") is None and classify("communes/09667.yml") is None
    present = {("", ""): "default.yaml", ("", "desk"): "roles/desk.yaml", ("x", ""): "communes/x.yaml"}
    assert chain(present, "x", "desk") == ["default.yaml", "roles/desk.yaml", "communes/x.yaml"]
    assert chain(present, "", "") == ["default.yaml"]


def test_the_etag_is_the_content_hash_and_a_match_answers_304(fragments):
    store = ProfileStore(settle=0, directory=str(fragments))
    status, body, headers = store.answer("09667", "site-poller")
    assert status == 200 and headers["ETag"] == f'"{profile.version_of(body)}"'
    assert headers["Content-Type"].startswith("application/yaml")
    assert store.answer("09667", "site-poller", headers["ETag"])[:2] == (304, "")
    assert store.answer("09667", "site-poller", 'W/"other", ' + headers["ETag"])[0] == 304
    assert store.answer("09667", "site-poller", '"other"')[0] == 200
    assert store.answer("09667", "")[2]["ETag"] != headers["ETag"]


def test_an_unknown_or_invalid_role_is_refused(fragments):
    store = ProfileStore(settle=0, directory=str(fragments))
    status, body, _ = store.answer("09667", "desk")
    assert status == 404 and "no profile for role 'desk' on this collector (roles: site-poller)" in body
    assert store.answer("09667", "Desk!")[0] == 400


def test_a_file_still_being_written_is_read_once_it_has_settled(fragments):
    store = ProfileStore(str(fragments), settle=3600)
    before = store.answer("09667", "site-poller")
    write(fragments, "default.yaml", "")  # an editor truncated it and writes the rest next
    assert not store.refresh() and store.answer("09667", "site-poller") == before
    store.settle = 0
    assert store.refresh() and store.answer("09667", "site-poller") != before


def test_a_bad_change_is_refused_and_the_last_good_stays_served(fragments, caplog):
    store = ProfileStore(settle=0, directory=str(fragments))
    before = store.answer("09667", "site-poller")
    write(fragments, "communes/09667.yaml", "host:\n  interval: 10s\n  colour: red\n")
    assert store.refresh()
    assert store.answer("09667", "site-poller") == before
    assert store.problems["communes/09667.yaml"] == [
        "communes/09667.yaml:3: host.colour: unknown field 'colour' (known fields: disk_devices_exclude, enabled, "
        "fs_types_exclude, interval, mount_points_exclude, network_devices_exclude, remote_filesystems, sensors, "
        "sysfs, timeout)"]
    assert "communes/09667.yaml:3: host.colour: unknown field" in caplog.text
    assert "its last good version stays in use" in caplog.text
    errors = {s.labels["file"]: s.value for s in store.samples()}
    assert errors["communes/09667.yaml"] == 1 and errors["default.yaml"] == 0
    write(fragments, "communes/09667.yaml", "host: {interval: 12s}\n")  # fixed: served at once
    assert served(store, "09667", "site-poller")["host"] == {"interval": "12s"} and not store.problems


def test_a_fragment_never_good_is_not_served_but_the_others_are(tmp_path):
    root = tmp_path / "p"
    write(root, "default.yaml", "host: {interval: 30s}\n")
    write(root, "communes/09667.yaml", "push: {enabled: false}\n")
    write(root, "roles/README.txt", "not a fragment, ignored\n")
    write(root, "roles/desk.yaml", "")
    write(root, "role/desk.yaml", "host: {}\n")
    store = ProfileStore(settle=0, directory=str(root))
    status, body, headers = store.answer("09667")
    assert status == 503 and "fragment communes/09667.yaml is refused" in body and headers["Retry-After"]
    assert served(store, "00001") == {"host": {"interval": "30s"}}
    assert served(store, "00001", "desk") == {"host": {"interval": "30s"}}
    assert store.problems["role/desk.yaml"] == [
        "role/desk.yaml: not a profile fragment (expected default.yaml, roles/ROLE.yaml, communes/CODE.yaml "
        "or communes/CODE/ROLE.yaml)"]


def test_a_merge_that_fails_keeps_the_last_good_merged_profile(tmp_path):
    root = tmp_path / "p"
    write(root, "default.yaml", PROBE)
    write(root, "communes/09667.yaml", "probes: {timeout: 5s, interval: 10s}\n")
    store = ProfileStore(settle=0, directory=str(root))
    good = store.answer("09667")
    assert good[0] == 200
    write(root, "communes/09667.yaml", "probes: {timeout: 1s, interval: 10s}\n")  # valid alone, not merged
    store.refresh()
    assert store.answer("09667") == good
    assert store.problems["communes/09667.yaml"] == [
        "default.yaml + communes/09667.yaml: probes.modules.port.timeout: must be shorter than probes.timeout "
        "(1s), got 2s"]


def test_an_empty_directory_serves_an_empty_profile(tmp_path):
    status, body, _ = ProfileStore(settle=0, directory=str(tmp_path)).answer("09667")
    assert status == 200 and profile.parse_profile(body, "x")[0] == {}
    assert ProfileStore(settle=0, directory=str(tmp_path)).answer("09667", "desk")[0] == 404  # a role no fragment names


def test_without_a_directory_every_agent_and_role_gets_the_empty_profile():
    store = ProfileStore("")
    for role in ("", "desk"):
        status, body, headers = store.answer("09667", role)
        assert status == 200 and profile.parse_profile(body, "x")[0] == {}
    assert store.samples() == []


# ---------------------------------------------------------------- the runner replacing inputs

class Ticker:
    def __init__(self, name: str, value: float):
        self.name, self.interval, self.timeout, self.value = name, 0.05, 0.05, value
        self.calls = 0

    def collect(self):
        self.calls += 1
        return [sample("commune_probe_target_info", self.value, target=self.name, module="m", service="s",
                       prober="tcp", hop="service")] if self.value else []


def test_the_runner_replaces_inputs_while_running():
    async def scenario():
        old, other = Ticker("tcp", 1), Ticker("host", 0)
        runner = Runner([old, other])
        stop = asyncio.Event()
        task = asyncio.ensure_future(runner.run(stop))
        while old.calls < 2:
            await asyncio.sleep(0.01)
        new = Ticker("tcp", 2)
        with pytest.raises(ValueError, match="share the name 'host'"):
            runner.replace([old], [new, Ticker("host", 0)])
        runner.replace([old], [new])
        calls = old.calls
        while new.calls < 3:
            await asyncio.sleep(0.01)
        assert old.calls <= calls + 1 and other.calls > 2  # at most the collection already in its thread
        assert [s.value for s in runner.snapshot() if s.name == "commune_probe_target_info"] == [2]
        assert [i.name for i in runner.inputs] == ["host", "tcp"]
        stop.set()
        await task

    asyncio.run(scenario())


def test_a_profile_section_that_cannot_start_falls_back_to_the_local_one(tmp_path, monkeypatch):
    """A valid profile whose inputs cannot be built on this PC (icmp targets without socket
    privileges, say) never stops the agent from starting: that section runs as the agent's own file
    has it, counted as an apply failure; a broken section of the agent's own file still stops it."""
    import collections
    import types

    from agent import app as agent_app
    from agent.config import load_config
    from agent.inputs import probes

    base = {"agent": {"state_dir": str(tmp_path / "state")}}
    (tmp_path / "local.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "profiled.yaml").write_text(yaml.safe_dump({**base, "probes": {
        "modules": {"tcp": {"prober": "tcp"}}, "targets": [{"name": "svc", "module": "tcp", "address": "127.0.0.1:1"}]}}))
    local, profiled = load_config(str(tmp_path / "local.yaml")), load_config(str(tmp_path / "profiled.yaml"))
    real_build = probes.build

    def build(section, config):
        if section.targets:
            raise RuntimeError("cannot open what the profile asks for here")
        return real_build(section, config)

    monkeypatch.setattr(probes, "build", build)
    agent = agent_app.Agent.__new__(agent_app.Agent)
    agent.config = profiled
    agent.profiles = types.SimpleNamespace(local=local, apply_failures=collections.Counter())
    assert agent._build_at_start("probes") == []
    assert agent.config.probes == local.probes and agent.profiles.apply_failures["probes"] == 1

    agent.config = load_config(str(tmp_path / "profiled.yaml"))
    agent.profiles = types.SimpleNamespace(local=load_config(str(tmp_path / "profiled.yaml")),
                                           apply_failures=collections.Counter())
    with pytest.raises(RuntimeError, match="cannot open"):
        agent._build_at_start("probes")
