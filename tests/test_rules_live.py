"""The central Prometheus config as shipped (collector/prometheus/prometheus.yml) with the real
collector and a real agent in pull mode: the collector's /metrics (fleet inventory) is scraped
with its commune labels kept, its http_sd lists the agent, and the rules join the two into
replacement factors and scores.

Test copy of prometheus.yml: ports of the collector and the http_sd URL point at the test's
collector, scrape and evaluation intervals are 1s, rule files are the repository's (absolute
glob), no Alertmanager. Test copy of the rules: group intervals (10m for the replacement groups)
shortened to 1s, so the first evaluation comes within seconds; the expressions are the real ones.

The cpu_saturation factor counts open office time only (the working calendar of the commune,
collector/calendar.yaml, exported by the collector: commune_agent:node_cpu_saturated_office_hours:bool
is recorded then only): a Prometheus that has run only while the office is closed has no data for
it and, as for any factor without data, leaves it out. What the test expects of it follows from
the wall clock Prometheus evaluates with.
"""
from __future__ import annotations

import datetime as dt
import re
import subprocess
import time

import pytest
import yaml

from tests.support import REPO, collector_command, Proc, agent_command, free_port, need_binary, prom_query, wait_until

pytestmark = pytest.mark.timeout(180)

PROMETHEUS_YML = REPO / "collector" / "prometheus" / "prometheus.yml"
FLEET = REPO / "config" / "fleet.example.yaml"


VN = dt.timezone(dt.timedelta(hours=7))


def office_hours(t: float) -> bool:
    """global:office_hours:bool of collector/rules/signals.yml at time t."""
    vn = dt.datetime.fromtimestamp(t, VN)
    return vn.weekday() < 5 and 7 <= vn.hour < 17


def office_open(t: float) -> bool:
    """Whether commune 09667's office is open at time t by the working calendar (the collector's
    commune_calendar_open, which the office-hours signals follow)."""
    from collector.calendar import load_calendar

    return load_calendar().state("09667", t).open


def test_shipped_prometheus_config_with_collector_and_pull_agent(tmp_path):
    need_binary("prometheus")
    prom_port, coll_port, agent_port = free_port(), free_port(), free_port()

    # collector with the example fleet, and a token for a pull-mode agent of 09667
    (tmp_path / "rules").mkdir()
    coll_cfg = tmp_path / "collector.yaml"
    coll_cfg.write_text(yaml.safe_dump({
        "web": {"listen_address": f"127.0.0.1:{coll_port}"},
        "upstreams": [{"url": f"http://127.0.0.1:{prom_port}/api/v1/write"}],
        "state": {"dir": str(tmp_path / "collector-state")},
        "fleet_file": str(FLEET),
    }))
    added = subprocess.run([*collector_command(), "token", "add", "--commune", "09667", "--agent", "pc-motcua-01",
                            "--pull-address", f"127.0.0.1:{agent_port}", "-c", str(coll_cfg)],
                           capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr

    # the agent: host input only (no ICMP to the real gateway, no SMART), /metrics on loopback
    agent_cfg = tmp_path / "agent.yaml"
    agent_cfg.write_text(yaml.safe_dump({
        "agent": {"id": "pc-motcua-01", "state_dir": str(tmp_path / "agent-state"), "interval": "1s"},
        "web": {"listen_address": f"127.0.0.1:{agent_port}"},
        "host": {"interval": "1s", "timeout": "1s"},
        "icmp": {"enabled": False},
        "smart": {"enabled": False},
    }))

    config = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    config["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"})
    config["alerting"] = {"alertmanagers": []}
    for job in config["scrape_configs"]:
        job.pop("scrape_interval", None)
        for static in job.get("static_configs", []):
            static["targets"] = [f"127.0.0.1:{coll_port}"]
        for sd in job.get("http_sd_configs", []):
            sd["url"] = sd["url"].replace("127.0.0.1:9722", f"127.0.0.1:{coll_port}")
            sd["refresh_interval"] = "1s"
    rules = []
    for path in sorted((REPO / "collector" / "rules").glob("*.yml")):
        copy = tmp_path / "rules" / path.name
        copy.write_text(re.sub(r"(?m)^(\s+interval:) \S+$", r"\1 1s", path.read_text(encoding="utf-8")),
                        encoding="utf-8")
        rules.append(copy)
    assert config["rule_files"] == ["../rules/*.yml"]
    config["rule_files"] = [str(tmp_path / "rules" / "*.yml")]
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    (prom_dir / "prometheus.yml").write_text(yaml.safe_dump(config))

    procs = []
    started = time.time()  # before Prometheus: every rule evaluation comes after
    try:
        coll = Proc([*collector_command(), "serve", "-c", str(coll_cfg)], tmp_path / "collector.log")
        procs.append(coll)
        coll.wait_http(f"http://127.0.0.1:{coll_port}/metrics")
        agent = Proc([*agent_command(), "-c", str(agent_cfg)], tmp_path / "agent.log")
        procs.append(agent)
        agent.wait_http(f"http://127.0.0.1:{agent_port}/metrics")
        prom = Proc([need_binary("prometheus"), f"--config.file={prom_dir / 'prometheus.yml'}",
                     f"--storage.tsdb.path={prom_dir / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}",
                     "--web.enable-remote-write-receiver", "--log.level=warn"], tmp_path / "prometheus.log")
        procs.append(prom)
        url = f"http://127.0.0.1:{prom_port}"
        prom.wait_http(url + "/-/ready")

        def one(query):
            result = prom_query(url, query)
            return result[0] if len(result) == 1 else None

        # scraped: the collector keeps the inventory's own commune labels (honor_labels)
        info = wait_until(lambda: one('commune_device_info{commune="09667", device="pc-motcua-01"}'), 60,
                          what="the fleet inventory scraped from the collector")
        assert info["metric"]["job"] == "collector" and info["metric"]["agent"] == "pc-motcua-01"
        # discovered: the pull-mode agent comes from the collector's http_sd with its identity
        up = wait_until(lambda: one('up{job="agent", commune="09667", agent="pc-motcua-01"} == 1'), 60,
                        what="the pull-mode agent discovered over http_sd and scraped")
        assert up["metric"]["instance"] == f"127.0.0.1:{agent_port}"
        # recorded: the agent's real memory figures, then the factors of its inventory device
        ratio = wait_until(lambda: one('commune_agent:node_memory_available:ratio{commune="09667", agent="pc-motcua-01"}'), 60,
                           what="the memory ratio recorded from the agent's series")
        assert 0 < float(ratio["value"][1]) <= 1
        wait_until(lambda: one('commune_agent:node_cpu_busy:ratio_rate5m{commune="09667", agent="pc-motcua-01"}'), 60,
                   what="the CPU busy ratio recorded from the agent's series")
        busy = time.time()  # recorded by an evaluation before this

        def cpu_expected(now: float):
            """True: the CPU factor must be there (an evaluation with the busy ratio ran while the
            office was open); False: it must not (none did); None: either (the office closed while
            the busy ratio was first recorded)."""
            if office_open(busy) or office_open(now):
                return True
            return None if office_open(started) else False

        def pc_factors():
            now = time.time()
            got = {r["metric"]["factor"]: float(r["value"][1]) for r in prom_query(
                url, 'commune:device_replacement_factor:ratio{commune="09667", device="pc-motcua-01"}')}
            expected = cpu_expected(now)
            if "memory_pressure" not in got or "age" not in got:
                return None
            if expected is not None and ("cpu_saturation" in got) != expected:
                return None
            return got, expected

        factors, cpu = wait_until(pc_factors, 60, what="replacement factors of pc-motcua-01 "
                                  f"({'with' if cpu_expected(time.time()) else 'without'} cpu_saturation)")
        # bought 2015-03-12 with a 5-year life: past it
        assert factors["age"] == 1
        assert 0 <= factors["memory_pressure"] <= 1
        saturated = prom_query(url, 'count_over_time(commune_agent:node_cpu_saturated_office_hours:bool'
                                    '{commune="09667", agent="pc-motcua-01"}[1h])')
        if cpu is False:
            # outside office hours the factor is left out, not counted as 0: it has no data
            assert "cpu_saturation" not in factors
            assert not saturated or office_open(time.time())  # (unless the office opened since)
        elif "cpu_saturation" in factors:  # always when cpu is True
            assert saturated and 0 <= factors["cpu_saturation"] <= 1
        score = wait_until(lambda: one('commune:device_replacement_score:top_reason{commune="09667", device="pc-motcua-01"}'), 60,
                           what="the score of pc-motcua-01")
        assert score["metric"]["commune"] == "09667" and score["metric"]["kind"] == "pc"
        assert 0 < float(score["value"][1]) <= 100
        # devices without series of their own still have their age factor
        assert one('commune:device_replacement_factor:ratio{commune="09667", device="router-main", factor="age"}')
    finally:
        for proc in reversed(procs):
            proc.stop()
