"""The alert replay bench (bench/alert_replay.py) on a short window: five days of a province
(Monday 1 to Friday 5 February 2027, Tết from the Friday) with a power cut, a flaky link, a failing
disk, a maintenance day and the holiday, through the shipped rules (promtool backfill + a real
Prometheus) and the shipped Alertmanager configuration (a real Alertmanager, timings compressed
4320 times, receivers on a loopback webhook). The counts asserted are written out by hand from the
rules' thresholds and the routes; the bench's own expectation must agree with them.

Also the pieces on their own: the alert state machine, the compressed Alertmanager configuration
(amtool accepts it, the routes give the same receivers as the shipped file), the recording-rule
levels.
"""
from __future__ import annotations

import datetime as dt
import subprocess
from collections import Counter

import pytest
import yaml

from bench import replay_am as am
from bench import replay_rules as rr
from bench.alert_replay import ALERTMANAGER_YML, RULES, replay
from bench.replay_month import province
from collector.calendar import load_calendar
from tests.support import need_binary

CRITICAL = ("webhook", "telegram", "zalo", "email")  # the shipped routes of a critical alert
ESCALATION = ("webhook", "escalation")


def test_state_machine_pending_firing_resolved():
    # returned at 0..330 s then from 600 s, every 30 s; for 5m: fires at 300, resolved at 360
    present = [float(t) for t in range(0, 331, 30)] + [600.0, 630.0]
    assert rr.episodes(present, 30, 300, end=900) == [(0, 300, 360)]
    # never long enough: no episode (a pending alert that goes away is dropped)
    assert rr.episodes([0.0, 30.0, 60.0, 90.0], 30, 600, end=900) == []
    # for: 0 fires at once; still returned at the end: not resolved
    assert rr.episodes([0.0, 30.0, 60.0], 30, 0, end=60) == [(0, 0, None)]
    # a gap of one evaluation resets the for:
    assert rr.episodes([0.0, 30.0, 90.0, 120.0, 150.0], 30, 60, end=300) == [(90, 150, 180)]
    # keep_firing_for bridges a gap shorter than it: missing at 90 (kept), returned at 120, missing
    # from 150: kept while less than 60 s since 150, resolved at 210
    assert rr.episodes([0.0, 30.0, 60.0, 120.0], 30, 60, keep_firing_for=60, end=900) == [(0, 60, 210)]


def test_state_machine_keep_firing_for_across_a_gap():
    eps = rr.episodes([0.0, 30.0, 60.0, 90.0, 300.0, 330.0, 360.0], 30, 60, keep_firing_for=60, end=900)
    # firing from 60; missing from 120, kept at 120 and 150, resolved at 180; a new alert from 300
    # fires at 360, missing from 390, resolved at 450
    assert eps == [(0, 60, 180), (300, 360, 450)]


def test_recording_levels_follow_dependencies():
    alerts, records = rr.load_rules(RULES, 30.0)
    levels = rr.needed_levels(alerts, records)
    names = [{r["record"] for r in level} for level in levels]
    assert "commune:calendar_open:bool" in names[0]
    for n, level in enumerate(levels):
        for r in level:
            used = set(rr._NAME.findall(r["expr"]))
            later = set().union(*names[n:]) - {r["record"]}
            assert not used & later, f"{r['record']} (level {n}) reads a rule of its level or a later one"


def test_compressed_config_keeps_routes_and_scales_timings(tmp_path):
    need_binary("amtool")
    config = am.compressed_config(ALERTMANAGER_YML, "http://127.0.0.1:9/hook", 4320)
    shipped = yaml.safe_load(ALERTMANAGER_YML.read_text(encoding="utf-8"))
    # group_wait 30s / 4320 = 7 ms, raised to the 250 ms floor; the others scaled
    assert config["route"]["group_wait"] == "250ms" and config["route"]["group_interval"] == "69ms"
    assert config["route"]["repeat_interval"] == "3333ms"
    assert config["inhibit_rules"] == shipped["inhibit_rules"]
    assert [r["name"] for r in config["receivers"]] == [r["name"] for r in shipped["receivers"]]
    assert all(r["webhook_configs"][0]["url"] == f"http://127.0.0.1:9/hook/{r['name']}" for r in config["receivers"])
    path = tmp_path / "am.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    done = subprocess.run(["amtool", "check-config", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    labels = {"alertname": "CommuneOffline", "severity": "critical", "scope": "commune"}
    assert sorted(am.routes_test(path, labels)) == sorted(CRITICAL)
    assert sorted(am.routes_test(path, {"alertname": "CriticalAlertUnresolved", "severity": "critical",
                                        "scope": "device"})) == sorted(ESCALATION)
    assert sorted(am.routes_test(path, {"alertname": "AgentSilent", "severity": "warning",
                                        "scope": "device"})) == ["email", "webhook"]


def test_expectation_counts_repeats_and_refuses_an_ambiguous_episode():
    from bench.replay_verdict import Expectation

    e = Expectation(lambda labels: ["a", "b"], {"a": True, "b": False}, 4 * 3600, first_delay=1080,
                    group_interval=300)
    out = Counter()
    e.notified(out, {"alertname": "X"}, 0, 10.5 * 3600)  # repeats at 4 h and 8 h
    assert out == Counter({("X", "a", "firing"): 3, ("X", "b", "firing"): 3, ("X", "a", "resolved"): 1})
    assert e.repeats("X", 0, 2 * 3600) == 0
    # 4 h 10 min: the repeat may or may not go out before the resolution
    with pytest.raises(ValueError, match="move the incident"):
        e.repeats("X", 0, 4 * 3600 + 600)


def per_receiver(alertname, receivers, firing, resolved) -> Counter:
    out = Counter()
    for r in receivers:
        out[(alertname, r, "firing")] += firing
        out[(alertname, r, "resolved")] += resolved
    return out


@pytest.mark.timeout(900)
def test_five_days_replay_counts_every_notification(tmp_path):
    for binary in ("prometheus", "promtool", "prometheus-alertmanager", "amtool"):
        need_binary(binary)
    p = province(load_calendar(), dt.date(2027, 2, 1), 5)
    kinds = sorted(i.kind for i in p.incidents)
    assert kinds == ["failing-disk", "flaky-link", "holiday", "maintenance", "power-cut", "power-cut"]
    result = replay(p, tmp_path, 4320.0)
    counted, expected = result["counted"], result["expected"]

    # nothing that no incident explains (a working day of the province is quiet)
    assert counted["unexpected"] == Counter(), [n for n in result["received"] if n["incident"] == "unexpected"][:5]
    # the power cut (Monday 08:30-10:45): CommuneOffline once and its resolution per receiver; the
    # AgentSilent of its three PCs never notified (inhibited while it fires, held back after)
    assert counted["power-cut-1"] == per_receiver("CommuneOffline", CRITICAL, 1, 1)
    # the flaky link (stalls of 12, 25 and 35 minutes): nothing
    assert counted["flaky-link-1"] == Counter()
    # the maintenance day: the silence was made by the real CLI, and nothing went out
    assert len(result["silences"]) == 1 and "muted until" in result["silences"][0]
    assert counted["maintenance-1"] == Counter()
    # the holiday (Tết from Friday 5, offices closed, PCs off) and a power cut during it: nothing
    assert counted["holiday-1"] == Counter() and counted["power-cut-2"] == Counter()
    # the failing disk (Tuesday 10:00 to Thursday 14:00), the PC off at night: DiskSmartFailing
    # fires each day it is on (10:05 Tue ~7 h: 1 repeat; Wed ~10.5 h: 2 repeats; Thu to 14:00 ~7 h:
    # 1 repeat), resolved each evening and when the disk is replaced; the escalation 4 h after it
    # fired: Tue ~3 h (no repeat), Wed ~6.5 h (1 repeat), Thu ~3 h
    disk = per_receiver("DiskSmartFailing", CRITICAL, 2 + 3 + 2, 3) + \
        per_receiver("CriticalAlertUnresolved", ESCALATION, 1 + 2 + 1, 3)
    assert counted["failing-disk-1"] == disk
    # and the bench's own expectation says the same for every incident
    assert {k: v for k, v in expected.items()} == {k: counted[k] for k in expected}
