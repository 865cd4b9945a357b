"""The central rules, Prometheus and Alertmanager configs: promtool/amtool accept them, every alert
has its labels, bilingual annotations, runbook section and promtool unit test, and promtool runs
the unit tests in tests/rules/ (alerts before and after their for:, negative cases, replacement
factors and scores on synthetic series)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from contract.schema import substitute_env
from tests.support import REPO, need_binary

RULES = REPO / "collector" / "rules"
RULE_FILES = sorted(RULES.glob("*.yml"))
RULE_TESTS = sorted((REPO / "tests" / "rules").glob("*.yml"))
PROMETHEUS_YML = REPO / "collector" / "prometheus" / "prometheus.yml"
ALERTMANAGER = REPO / "collector" / "alertmanager"
RUNBOOKS = REPO / "docs" / "runbooks.md"

# Values for the ${...} placeholders of alertmanager.yml, as a deployment would fill them in.
AM_ENV = {"TELEGRAM_BOT_TOKEN": "123456:test-token", "TELEGRAM_CHAT_ID": "-1001234567890",
          "ALERT_EMAIL_TO": "it@province.example", "ALERT_EMAIL_FROM": "alerts@province.example",
          "SMTP_SMARTHOST": "mail.province.example:587", "SMTP_USERNAME": "alerts",
          "ALERT_WEBHOOK_URL": "http://127.0.0.1:9/hook", "COLLECTOR_URL": "https://collector.province.example:9722",
          "ALERT_ESCALATION_EMAIL_TO": "it-head@province.example"}


def run(args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300)


def all_rules():
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                yield path, group, rule


def alerts():
    return [rule for _, _, rule in all_rules() if "alert" in rule]


def test_promtool_check_rules():
    need_binary("promtool")
    result = run(["promtool", "check", "rules", *RULE_FILES])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config_loads_the_rules(tmp_path):
    need_binary("promtool")
    result = run(["promtool", "check", "config", PROMETHEUS_YML])
    assert result.returncode == 0, result.stdout + result.stderr
    for path in RULE_FILES:  # the relative glob ../rules/*.yml found every rule file
        assert f"rules/{path.name}" in result.stdout, result.stdout
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert config["storage"]["tsdb"]["out_of_order_time_window"] == "7d"
    assert config["rule_files"] == ["../rules/*.yml"]
    sd = [job for job in config["scrape_configs"] if "http_sd_configs" in job]
    assert sd and sd[0]["http_sd_configs"][0]["url"].endswith("/api/v1/sd")
    assert "--web.enable-remote-write-receiver" in PROMETHEUS_YML.read_text()
    # the alerts on scrape targets name these jobs (CollectorDown, AgentScrapeFailing)
    assert {job["job_name"] for job in config["scrape_configs"]} == {"collector", "agent"}
    assert sd[0]["job_name"] == "agent"


def render_alertmanager(tmp_path: Path) -> Path:
    text = substitute_env((ALERTMANAGER / "alertmanager.yml").read_text(encoding="utf-8"), AM_ENV)
    for tmpl in ALERTMANAGER.glob("*.tmpl"):
        shutil.copy(tmpl, tmp_path / tmpl.name)
    out = tmp_path / "alertmanager.yml"
    out.write_text(text, encoding="utf-8")
    return out


def test_amtool_check_config(tmp_path):
    need_binary("amtool")
    config = render_alertmanager(tmp_path)
    result = run(["amtool", "check-config", config])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and "FAILED" not in result.stdout, result.stdout
    data = yaml.safe_load(config.read_text())
    assert data["route"]["group_by"] == ["commune", "alertname"]
    assert {r["name"] for r in data["receivers"]} == {"email", "telegram", "webhook", "zalo", "escalation"}
    # secrets come from files or deploy-time placeholders, never from this repository
    raw = (ALERTMANAGER / "alertmanager.yml").read_text()
    assert "${TELEGRAM_BOT_TOKEN}" in raw and "auth_password_file" in raw and "credentials_file" in raw


def test_inhibitions_name_real_alerts():
    config = yaml.safe_load((ALERTMANAGER / "alertmanager.yml").read_text(encoding="utf-8"))
    by_name = {a["alert"]: a for a in alerts()}
    first = config["inhibit_rules"][0]
    names = re.fullmatch(r'alertname=~"([^"]+)"', first["source_matchers"][0]).group(1).split("|")
    for name in names:  # every source of the commune-wide inhibition is a commune-scope critical alert
        assert by_name[name]["labels"] == {"severity": "critical", "scope": "commune"}, name
    assert first["equal"] == ["commune"]
    # and nothing commune-wide is silenced by it
    assert first["target_matchers"] == ['scope=~"device|service"']


def test_every_alert_is_labelled_and_documented():
    runbooks = RUNBOOKS.read_text(encoding="utf-8")
    anchors = {re.sub(r"[^a-z0-9_-]", "", h.strip().lower().replace(" ", "-"))
               for h in re.findall(r"^## (.+)$", runbooks, re.M)}
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names)), "alert names are unique"
    for rule in alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        if name == "CriticalAlertUnresolved":  # keeps the scope of the alert it escalates (inhibitions)
            assert "scope" not in rule["labels"] and 'severity="critical"' in rule["expr"]
        else:
            assert rule["labels"]["scope"] in ("commune", "device", "service", "fleet"), name
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "summary_vi", "description_vi", "runbook_url"}, name
        # a link a phone opens: the base is Prometheus' external label (tests/test_runbooks.py follows it)
        assert notes["runbook_url"] == "{{ $externalLabels.runbook_base }}/" + name.lower(), name
        assert name.lower() in anchors, f"docs/runbooks.md has no section ## {name}"
        # Vietnamese annotations are Vietnamese: they carry its diacritics
        for key in ("summary_vi", "description_vi"):
            assert re.search(r"[ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ]", notes[key]), (name, key)
    sections = re.findall(r"^## (\w+)$", runbooks, re.M)
    assert sorted(sections) == sorted(names), "one runbook section per alert, no more"


def test_runbook_base_is_an_external_label_dropped_from_alerts():
    for path in (PROMETHEUS_YML, REPO / "deploy" / "compose" / "prometheus.yml"):
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        base = config["global"]["external_labels"]["runbook_base"]
        assert re.fullmatch(r"https://[a-z0-9.-]+(:\d+)?/runbooks", base), (path, base)
        # the annotations use it; the alerts sent to Alertmanager do not carry it as a label
        assert config["alerting"]["alert_relabel_configs"] == [{"action": "labeldrop", "regex": "runbook_base"}]


def test_every_alert_has_unit_tests():
    tested = {}
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for check in case.get("alert_rule_test") or []:
                kinds = tested.setdefault(check["alertname"], set())
                kinds.add("firing" if check.get("exp_alerts") else "quiet")
    for name in (a["alert"] for a in alerts()):
        assert tested.get(name) == {"firing", "quiet"}, f"{name} needs a firing and a quiet promtool case"


def test_recording_rule_names_follow_the_convention():
    for path, group, rule in all_rules():
        if "record" in rule:
            assert re.fullmatch(r"[a-z_]+:[a-zA-Z0-9_]+:[a-z0-9_]+", rule["record"]), (path.name, rule["record"])


def test_promtool_unit_tests():
    need_binary("promtool")
    assert RULE_TESTS
    result = run(["promtool", "test", "rules", *RULE_TESTS], cwd=REPO / "tests" / "rules")
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
