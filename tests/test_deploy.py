"""Deployment files: systemd units verify, the compose stack is complete, Windows service CLI."""
from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.support import REPO, VENV_BIN, agent_command

UNITS = REPO / "deploy" / "systemd"
COMPOSE = REPO / "deploy" / "compose"


@pytest.mark.parametrize("unit", ["commune-agent.service", "commune-collector.service"])
def test_systemd_unit_verifies(unit, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed on this machine")
    # the units expect the venv at /opt/commune-monitor; point them at this venv to verify
    text = (UNITS / unit).read_text().replace("/opt/commune-monitor/bin/", f"{VENV_BIN}/")
    (tmp_path / unit).write_text(text)
    proc = subprocess.run([analyze, "verify", str(tmp_path / unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (proc.stdout + proc.stderr).splitlines()
                if unit in line and "Failed to" not in line]  # no systemd as PID 1 here: ignore bus errors
    assert proc.returncode == 0 or not problems, proc.stdout + proc.stderr
    assert not problems, problems


def test_agent_unit_is_hardened():
    text = (UNITS / "commune-agent.service").read_text()
    active = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in text.splitlines()
              if "=" in line and not line.startswith("#")}
    assert active["User"] == "commune-agent"
    assert active["ProtectSystem"] == "strict" and active["NoNewPrivileges"] == "yes"
    assert active["StateDirectory"] == "commune-agent"
    assert active["ReadWritePaths"] == "/var/lib/commune-agent"
    assert active["CapabilityBoundingSet"] == "" and active["AmbientCapabilities"] == ""
    # CAP_NET_RAW is offered only as a commented fallback for hosts without unprivileged ping
    assert "#AmbientCapabilities=CAP_NET_RAW" in text
    assert "--config.check" in active["ExecStartPre"]


def test_compose_stack_has_services_ports_and_volumes():
    compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"collector", "prometheus", "alertmanager", "grafana"}
    assert "9722:9722" in services["collector"]["ports"]
    assert "127.0.0.1:9090:9090" in services["prometheus"]["ports"]
    assert "3000:3000" in services["grafana"]["ports"]
    assert "--web.enable-remote-write-receiver" in services["prometheus"]["command"]
    named = set(compose["volumes"])
    assert named == {"collector-state", "prometheus-data", "alertmanager-data", "grafana-data"}
    operator_made = {"./collector.yaml", "./alertmanager.yml", "./secrets", "./grafana_admin_password"}
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src in named or src in operator_made:
                continue
            assert (COMPOSE / src).resolve().exists(), f"{name}: bind mount source {src} is missing"
        mounts = [v.split(":")[1] for v in svc.get("volumes", []) if v.split(":")[0] in named]
        if name != "collector":
            assert mounts, f"{name} keeps no data in a named volume"
    build = services["collector"]["build"]
    assert (COMPOSE / build["context"]).resolve() == REPO
    assert (REPO / build["dockerfile"]).exists()


def test_compose_prometheus_matches_the_central_one(tmp_path):
    central = yaml.safe_load((REPO / "collector" / "prometheus" / "prometheus.yml").read_text())
    boxed = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    assert boxed["rule_files"] == central["rule_files"]
    assert boxed["storage"] == central["storage"]
    assert [j["job_name"] for j in boxed["scrape_configs"]] == [j["job_name"] for j in central["scrape_configs"]]
    # promtool accepts it with the rules laid out as in the container
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool is not installed; tests/run.sh installs it (apt prometheus)")
    (tmp_path / "prometheus").mkdir()
    shutil.copy(COMPOSE / "prometheus.yml", tmp_path / "prometheus" / "prometheus.yml")
    shutil.copytree(REPO / "collector" / "rules", tmp_path / "rules")
    proc = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus" / "prometheus.yml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_windows_service_command_explains_itself_on_linux():
    proc = subprocess.run(agent_command() + ["service", "install"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "deploy/systemd/commune-agent.service" in proc.stderr


def test_windows_service_paths_live_under_programdata():
    from agent import winservice

    env = {"ProgramData": r"D:\ProgramData"}
    assert winservice.default_config_path(env).replace("\\", "/").endswith("D:/ProgramData/commune-monitor/agent.yaml")
    assert winservice.ACCOUNTS["LocalService"] == "NT AUTHORITY\\LocalService"
    assert winservice.parser().parse_args(["install"]).account == "LocalSystem"
