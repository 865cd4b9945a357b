"""contract/thresholds.yaml is the one place of the numbers several parts share. Python imports
them; the files that cannot (Prometheus rules, both prometheus.yml) are checked here against it."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from agent.push import QueueSection
from agent.queue import Queue
from contract.schema import parse_duration
from collector.config import Limits
from collector.report import gather
from contract import thresholds
from dashboards import queries

ROOT = Path(__file__).resolve().parent.parent
T = thresholds.load()


def alert_expr(path: Path, name: str) -> str:
    for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == name:
                return rule["expr"]
    raise AssertionError(f"{path}: no alert {name}")


@pytest.mark.parametrize("alert", ["AgentSilent", "CommuneOffline"])
def test_silent_agent_alerts_use_the_shared_threshold(alert):
    path = ROOT / "collector/rules/alerts-agents.yml"
    found = re.findall(r"commune_agent_last_push_timestamp_seconds\)\s*>\s*([0-9.e+]+)", alert_expr(path, alert))
    assert found and all(float(v) == T["agent_silent_after_seconds"] for v in found), (
        f"{path}: {alert} must call an agent silent after {T['agent_silent_after_seconds']} s "
        f"(contract/thresholds.yaml), found {found}")


def test_replacement_alert_uses_the_shared_score():
    path = ROOT / "collector/rules/alerts-replacement.yml"
    found = re.findall(r">=\s*([0-9.]+)\s*$", alert_expr(path, "DeviceReplacementCandidate").strip())
    assert found == [f"{T['replacement_candidate_score']:g}"], (
        f"{path}: DeviceReplacementCandidate must fire from score {T['replacement_candidate_score']} "
        f"(contract/thresholds.yaml), found {found}")


@pytest.mark.parametrize("rel", ["collector/prometheus/prometheus.yml", "deploy/compose/prometheus.yml"])
def test_prometheus_accepts_samples_as_old_as_the_queue_keeps(rel):
    config = yaml.safe_load((ROOT / rel).read_text(encoding="utf-8"))
    window = config["storage"]["tsdb"]["out_of_order_time_window"]
    assert parse_duration(window) >= T["queue_max_age_seconds"], (
        f"{rel}: storage.tsdb.out_of_order_time_window {window} is shorter than the agents' queue "
        f"max age {T['queue_max_age_seconds']} s (contract/thresholds.yaml): Prometheus would refuse "
        "the samples of a long outage")


def test_python_defaults_come_from_the_file():
    assert QueueSection().max_age == T["queue_max_age_seconds"]
    assert Limits().max_sample_age == T["queue_max_age_seconds"]
    assert Queue.__init__.__defaults__[0] == T["queue_max_age_seconds"]
    assert queries.SILENT_AFTER_S == T["agent_silent_after_seconds"]
    assert queries.CANDIDATE_SCORE == gather.REPLACE_AT == T["replacement_candidate_score"]
    assert gather.WATCH_AT == T["replacement_watch_score"] < gather.REPLACE_AT


@pytest.mark.parametrize("text, error", [
    ("- 1\n", "expected a mapping"),
    ("agent_silent_after_seconds: 1800\nreplacement_candidate_score: 60\nreplacement_watch_score: 30\n",
     "queue_max_age_seconds: expected a positive number, got None"),
    ("agent_silent_after_seconds: 30m\nreplacement_candidate_score: 60\nreplacement_watch_score: 30\n"
     "queue_max_age_seconds: 604800\n", "agent_silent_after_seconds: expected a positive number, got '30m'"),
    ("agent_silent_after_seconds: 1800\nreplacement_candidate_score: 60\nreplacement_watch_score: 30\n"
     "queue_max_age_seconds: 604800\nsilent: 5\n", "unknown key(s) silent"),
])
def test_a_broken_file_is_refused_with_the_key(tmp_path, text, error):
    path = tmp_path / "thresholds.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as info:
        thresholds.load(path)
    assert str(path) in str(info.value) and error in str(info.value)
