"""Strict agent config: every validation rule has an invalid fixture with its exact message."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from contract import schema
from agent.config import Config, load_config
from contract.schema import ConfigErrors, Duration, Secret, Size, parse_duration, parse_size
from tests.support import REPO, agent_command

BAD = Path(__file__).parent / "fixtures" / "config_bad"
BAD_FILES = sorted(BAD.glob("*.yaml"))


def expected_error(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# error: "), f"{path.name} must start with '# error: <message>'"
    return first[len("# error: "):]


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.stem for p in BAD_FILES])
def test_bad_config_reports_exact_error(path, monkeypatch):
    monkeypatch.chdir(BAD)
    monkeypatch.delenv("COMMUNE_TEST_UNSET_VAR", raising=False)
    with pytest.raises(ConfigErrors) as exc:
        load_config(path.name)
    messages = [str(e) for e in exc.value.errors]
    assert expected_error(path) in messages, messages


def test_every_error_is_reported_not_just_the_first(tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("agent:\n  log_level: loud\nhost:\n  interval: soon\nweb:\n  listen_address: nowhere\n")
    with pytest.raises(ConfigErrors) as exc:
        load_config(str(cfg))
    paths = sorted(e.path for e in exc.value.errors)
    assert paths == ["agent.log_level", "host.interval", "web.listen_address"]
    assert [e.line for e in sorted(exc.value.errors, key=lambda e: e.path)] == [2, 4, 6]


def test_config_check_cli_prints_every_error_and_fails(tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("hots: {}\nhost:\n  timeout: 1 minute\n")
    proc = subprocess.run(agent_command() + ["--config.check", "-c", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"{cfg}:1: hots: unknown field 'hots' (did you mean 'host'?)" in proc.stderr
    assert f"{cfg}:3: host.timeout: expected a duration like 30s, 5m or 1h, got '1 minute'" in proc.stderr
    assert "config check failed: 2 error(s)" in proc.stderr


def test_config_check_cli_accepts_the_example():
    proc = subprocess.run(agent_command() + ["--config.check", "-c", str(REPO / "config" / "agent.example.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "is valid" in proc.stdout


def test_no_config_means_working_defaults():
    cfg = load_config(None)
    assert cfg.host.enabled and cfg.host.interval == 15
    assert cfg.web.listen_address == "127.0.0.1:9721"
    assert cfg.agent.id


def test_example_documents_every_option():
    """config/agent.example.yaml shows every option of every section (mapping keys may be examples)."""
    text = (REPO / "config" / "agent.example.yaml").read_text()
    import yaml

    data = yaml.safe_load(text)
    missing = []
    for path in schema.field_paths(Config):
        node, ok = data, True
        for part in path.replace("[]", ".[]").replace("{}", ".{}").split("."):
            if part in ("[]", "{}"):
                items = node if part == "[]" else list((node or {}).values())
                node = items[0] if items else None
                if node is None:
                    break  # an empty list/map of examples documents no sub-keys; checked below
                continue
            if not isinstance(node, dict) or part not in node:
                # options of list items may be documented in a commented example instead
                ok = f"{part}:" in text
                break
            node = node[part]
        if not ok:
            missing.append(path)
    assert not missing, f"options missing from config/agent.example.yaml: {missing}"


def test_example_loads_with_the_documented_defaults(monkeypatch):
    monkeypatch.setenv("HOSTNAME", "office-pc-07")
    cfg = load_config(str(REPO / "config" / "agent.example.yaml"))
    assert cfg.agent.id == "office-pc-07"
    defaults = load_config(None)
    assert cfg.host == defaults.host
    assert cfg.web == defaults.web


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("1m30s", 90), ("500ms", 0.5), ("7d", 604800),
                                          ("1h", 3600), (15, 15), (2.5, 2.5), ("1w", 604800)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)
    assert isinstance(parse_duration(text), Duration)


@pytest.mark.parametrize("text", ["", "s", "10", "10 s", "1m 30s", "-5s", "ten seconds", True, -1])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text,size", [("200MB", 200_000_000), ("1GiB", 2**30), ("512KB", 512_000),
                                       (1024, 1024), ("10 MiB", 10 * 2**20), ("7B", 7)])
def test_sizes(text, size):
    assert parse_size(text) == size and isinstance(parse_size(text), Size)


@pytest.mark.parametrize("text", ["200 megabytes", "MB", "-1", True])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_env_substitution_with_default_and_escape():
    env = {"TOKEN": "s3cr3t"}
    assert schema.substitute_env("${TOKEN}", env) == "s3cr3t"
    assert schema.substitute_env("${NOPE:-fallback}", env) == "fallback"
    assert schema.substitute_env("cost $$5 ${TOKEN}", env) == "cost $5 s3cr3t"
    with pytest.raises(KeyError):
        schema.substitute_env("${NOPE}", env)


def test_secret_never_prints():
    s = Secret("hunter2")
    assert "hunter2" not in repr(s) and "hunter2" not in str(s) and "hunter2" not in f"{s}"
    assert "hunter2" not in repr({"k": s}) and s.reveal() == "hunter2"
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_secret_from_env_is_loaded_but_hidden(tmp_path, monkeypatch):
    monkeypatch.setenv("WEB_HASH", "$2b$10$abcdefghijklmnopqrstuv")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("web:\n  basic_auth_users:\n    prom: ${WEB_HASH}\n")
    loaded = load_config(str(cfg))
    assert loaded.web.basic_auth_users["prom"].reveal() == "$2b$10$abcdefghijklmnopqrstuv"
    assert "$2b$" not in repr(loaded)


def test_config_from_environment_and_empty_means_defaults(tmp_path):
    import os

    cfg = tmp_path / "agent.yaml"
    cfg.write_text("host: {interval: 1 minute}\n")
    env = dict(os.environ, COMMUNE_AGENT_CONFIG=str(cfg))
    proc = subprocess.run(agent_command() + ["--config.check"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1 and "host.interval" in proc.stderr
    env["COMMUNE_AGENT_CONFIG"] = ""
    proc = subprocess.run(agent_command() + ["--config.check"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0 and "config (defaults) is valid" in proc.stdout


def test_a_complex_yaml_key_is_a_clear_error_not_a_crash():
    """YAML allows a list as a key ("? [1, 2]"); a config never has one: a ConfigError with the
    line, not a TypeError from deep inside the loader (a hand-edited saved profile had one)."""
    from contract.schema import ConfigErrors, load_yaml

    with pytest.raises(ConfigErrors) as exc:
        load_yaml("host:\n  interval: 5s\n  ? [1, 2]\n  : 3\n", "agent.yaml")
    assert [str(e) for e in exc.value.errors] == ["agent.yaml:3: host: expected a plain key, got a list or mapping as a key"]
