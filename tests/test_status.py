"""``commune-collector status``: the summary logic on recorded Prometheus answers
(tests/fixtures/status/prometheus-api.json, made by record.py beside it from a real Prometheus),
the command against a real Prometheus, and its one-line error when Prometheus cannot be asked.
(The quickstart test runs it against the whole stack.)"""
from __future__ import annotations

import http.server
import json
import subprocess
import threading
import time
import urllib.request

import pytest

from collector import cli
from collector.status import QUERIES, render, summarize
from tests.support import LOCAL_FIXTURES, VENV_BIN, free_port, start_prometheus

RECORDED = json.loads((LOCAL_FIXTURES / "status" / "prometheus-api.json").read_text(encoding="utf-8"))
RESULTS = {name: answer["data"]["result"] for name, answer in RECORDED["answers"].items()}
AT = RECORDED["time"]


def status_command():
    script = VENV_BIN / "commune-collector"
    return [str(script)] if script.exists() else ["python", "-m", "collector"]


def by_code(summary):
    return {c["commune"]: c for c in summary["communes"]["list"]}


def test_every_query_was_recorded():
    assert set(RECORDED["answers"]) == set(QUERIES)
    assert all(a["status"] == "success" for a in RECORDED["answers"].values())


def test_communes_online_from_pushes_tokens_and_the_fleet():
    s = summarize(RESULTS, AT, recent=300)
    assert s["communes"]["total"] == 3 and s["communes"]["online"] == 2
    c = by_code(s)
    tan_lap = c["09667"]
    assert (tan_lap["name"], tan_lap["province"], tan_lap["in_fleet"]) == ("Xã Tân Lập", "Phú Thọ", True)
    assert (tan_lap["agents_known"], tan_lap["agents_online"], tan_lap["online"]) == (3, 1, True)
    agents = {a["agent"]: a for a in tan_lap["agents"]}
    assert agents["pc-ketoan-01"]["online"] and 40 <= agents["pc-ketoan-01"]["last_push_age_seconds"] < 42
    assert not agents["pc-motcua-01"]["online"] and agents["pc-motcua-01"]["last_push_age_seconds"] > 7000
    # holds a token but never pushed
    assert agents["laptop-chutich"] == {"agent": "laptop-chutich", "last_push_timestamp": None,
                                       "last_push_age_seconds": None, "online": False}
    assert tan_lap["last_push_age_seconds"] == agents["pc-ketoan-01"]["last_push_age_seconds"]
    # in the fleet file, no agent at all: offline
    hoa_binh = c["09670"]
    assert (hoa_binh["in_fleet"], hoa_binh["agents_known"], hoa_binh["online"]) == (True, 0, False)
    assert hoa_binh["last_push_age_seconds"] is None
    # pushing without being in the fleet file: listed, online
    assert (c["09999"]["in_fleet"], c["09999"]["online"], c["09999"]["name"]) == (False, True, "")


def test_recent_decides_who_is_online():
    s = summarize(RESULTS, AT, recent=30)
    assert s["communes"]["online"] == 1
    assert not by_code(s)["09667"]["online"] and by_code(s)["09999"]["online"]
    s = summarize(RESULTS, AT, recent=3 * 3600)
    assert by_code(s)["09667"]["agents_online"] == 2


def test_devices_down_with_inventory_names_and_probe_services():
    d = summarize(RESULTS, AT)["devices_down"]
    assert d["snmp"] == [{"commune": "09667", "agent": "pc-ketoan-01", "target": "printer-motcua",
                          "device": "printer-motcua", "kind": "printer"}]
    assert d["probes"] == [
        {"service": "dichvucong", "commune": "09667", "agent": "pc-ketoan-01", "target": "dichvucong",
         "module": "http_2xx", "hop": "service"},
        {"service": "", "commune": "09667", "agent": "pc-ketoan-01", "target": "gateway", "module": "icmp",
         "hop": "gateway"},
    ]
    assert d["probes_by_service"] == {"dichvucong": 1, "icmp gateway": 1}
    assert d["count"] == 3


def test_firing_alerts_by_severity_most_severe_first():
    a = summarize(RESULTS, AT)["alerts"]
    assert a["firing"] == 4  # the pending DiskFull is not firing
    assert a["by_severity"] == {"critical": 1, "warning": 2, "info": 1}
    assert [x["alertname"] for x in a["list"]] == ["CommuneOffline", "PrinterUnreachable", "ServiceDown",
                                                   "DeviceReplacementCandidate"]
    assert a["list"][0]["commune"] == "09670" and a["list"][0]["labels"] == {"commune": "09670", "scope": "commune"}


def test_replacement_candidates_by_score_with_reasons():
    r = summarize(RESULTS, AT)["replacement"]
    assert r == [
        {"commune": "09667", "device": "pc-motcua-01", "kind": "pc", "reason": "age", "score": 87.5,
         "actions": ["replace_device"]},
        {"commune": "09667", "device": "printer-motcua", "kind": "printer", "reason": "pages", "score": 64.2,
         "actions": ["replace_device"]},
        {"commune": "09667", "device": "pc-ketoan-01", "kind": "pc", "reason": "none", "score": 12.0, "actions": []},
    ]
    assert [x["device"] for x in summarize(RESULTS, AT, limit=2)["replacement"]] == ["pc-motcua-01", "printer-motcua"]


def test_replacement_candidates_show_their_recommended_actions():
    """The actions query's answer (max by commune, device, kind, action) joined to the candidates."""
    def action(device, kind, name):
        return {"metric": {"commune": "09667", "device": device, "kind": kind, "action": name}, "value": [AT, "1"]}

    results = {**RESULTS, "actions": [action("pc-motcua-01", "pc", "add_memory"), action("pc-motcua-01", "pc", "replace_disk"),
                                      action("printer-motcua", "printer", "replace_device")]}
    summary = summarize(results, AT)
    assert [(x["device"], x["actions"]) for x in summary["replacement"]] == [
        ("pc-motcua-01", ["replace_disk", "add_memory"]), ("printer-motcua", ["replace_device"]), ("pc-ketoan-01", [])]
    text = render(summary)
    assert "MAIN REASON  ACTION" in text
    assert [line.split()[-1] for line in text.splitlines() if "pc-motcua-01" in line][-1] == "replace_disk+add_memory"


def test_agents_by_version_not_seen_for_days_and_inventory_never_seen():
    a = summarize(RESULTS, AT)["agents"]
    # pc-lab reports 0.9.0 and 0.8.2 within the window: the newer counts
    assert a["by_version"] == {"0.9.0": 2, "0.8.10": 1, "0.8.2": 1}
    assert [(x["commune"], x["agent"], x["version"]) for x in a["not_seen"]] == [
        ("09667", "laptop-chutich", ""),   # holds a token, never pushed
        ("09999", "pc-cu", "0.8.10")]      # last push 5 days ago; pc-motcua-01 (2 h) is not listed
    assert 5 * 86400 <= a["not_seen"][1]["last_push_age_seconds"] < 5 * 86400 + 5
    assert a["inventory_never_seen"] == [
        {"commune": "09667", "device": "printer-motcua", "kind": "printer", "agent": "pc-ketoan-01",
         "target": "printer-motcua", "why": "never answered SNMP"},
        {"commune": "09670", "device": "pc-motcua-01", "kind": "pc", "agent": "hoabinh-pc-01", "target": "",
         "why": "agent never pushed"},
        {"commune": "09670", "device": "printer-01", "kind": "printer", "agent": "hoabinh-pc-01",
         "target": "printer-01", "why": "never answered SNMP"}]
    assert [x["agent"] for x in summarize(RESULTS, AT, stale=3600)["agents"]["not_seen"]] == [
        "laptop-chutich", "pc-cu", "pc-motcua-01"]
    lines = render(summarize(RESULTS, AT)).splitlines()
    assert "Agents by version: 4 seen within 30d (0.9.0 2, 0.8.10 1, 0.8.2 1)" in lines
    assert "Agents not seen for 2d: 2" in lines
    assert next(x for x in lines if "pc-cu" in x).split() == ["09999", "pc-cu", "5d", "ago", "0.8.10"]
    assert "Inventory devices never seen within 30d: 3" in lines
    assert next(x for x in lines if "hoabinh-pc-01" in x and " pc " in x).split()[-3:] == ["agent", "never", "pushed"]


def test_nothing_at_all_is_an_empty_summary():
    s = summarize({name: [] for name in QUERIES}, AT)
    assert s["communes"] == {"total": 0, "online": 0, "list": []}
    assert s["devices_down"]["count"] == 0 and s["alerts"]["firing"] == 0 and s["replacement"] == []
    text = render(s)
    assert "Communes online: 0 of 0" in text and "no scores yet" in text


def test_render_for_a_terminal():
    text = render(summarize(RESULTS, AT), "http://127.0.0.1:9090")
    lines = text.splitlines()
    assert lines[0].startswith("commune-monitor status from http://127.0.0.1:9090 at ")
    assert "Communes online: 2 of 3 (an agent pushed within the last 5m)" in lines
    row = next(line for line in lines if line.strip().startswith("09670"))
    assert "Phường Hòa Bình" in row and "0/0" in row and "never" in row and row.endswith("OFFLINE")
    row = next(line for line in lines if line.strip().startswith("09667"))
    assert "1/3" in row and "41s ago" in row and "OFFLINE" not in row
    assert "(not in the fleet file)" in next(line for line in lines if line.strip().startswith("09999"))
    assert "Devices down: 3" in lines
    assert any("printer-motcua" in line and "printer" in line and "pc-ketoan-01" in line for line in lines)
    assert "  failing probes by service: dichvucong 1, icmp gateway 1" in lines
    assert "Firing alerts: 4 (critical 1, warning 2, info 1)" in lines
    row = next(line for line in lines if "pc-motcua-01" in line and "replace_device" in line)
    assert row.split()[:2] == ["88", "09667"]


def test_the_subcommand_is_registered():
    assert cli.SUBCOMMANDS["status"] == "collector.status:main"


# ---------------------------------------------------------------- the command

def test_unreachable_prometheus_is_one_line_and_exit_1():
    port = free_port()  # nothing listens there
    proc = subprocess.run(status_command() + ["status", "--prometheus", f"http://127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"commune-collector status: cannot reach Prometheus at http://127.0.0.1:{port}: ")


def test_a_server_that_is_not_prometheus_is_one_line_and_exit_1():
    class Page(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = b"<html>not Prometheus</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        proc = subprocess.run(status_command() + ["status", "--prometheus", url],
                              capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 1
    assert proc.stderr == f"commune-collector status: {url} did not answer with Prometheus JSON: is it a Prometheus URL?\n"


@pytest.mark.slow
def test_status_json_against_a_real_prometheus(tmp_path):
    """The recorded series written into a real Prometheus again: the command's JSON says the same."""
    from contract import remote_write

    prom, url = start_prometheus(tmp_path)
    try:
        now = time.time()
        written = []
        for name, answer in RECORDED["answers"].items():
            if name in ("pushes", "last_pushes", "never_seen_agents", "never_seen_snmp"):  # relative to now, or derived
                continue
            for item in answer["data"]["result"]:
                labels = dict(item["metric"])
                labels.setdefault("__name__", _metric_of(name))
                written.append((labels, [(float(item["value"][1]), int(now * 1000))]))
        for item in RECORDED["answers"]["pushes"]["data"]["result"]:
            age = RECORDED["time"] - float(item["value"][1])
            written.append(({**item["metric"], "__name__": "commune_agent_last_push_timestamp_seconds"},
                            [(now - age, int(now * 1000))]))
        # the pending alert is not in the recorded firing answer: write one to prove it is left out
        written.append(({"__name__": "ALERTS", "alertname": "DiskFull", "alertstate": "pending",
                         "commune": "09667", "severity": "critical"}, [(1.0, int(now * 1000))]))
        req = urllib.request.Request(url + "/api/v1/write", data=remote_write.encode(written), headers={
            "Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": "0.1.0"})
        urllib.request.urlopen(req, timeout=10).read()
        proc = subprocess.run(status_command() + ["status", "--prometheus", url, "--json"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)
        text = subprocess.run(status_command() + ["status", "--prometheus", url],
                              capture_output=True, text=True, timeout=60)
        assert text.returncode == 0 and "Firing alerts: 4 (critical 1, warning 2, info 1)" in text.stdout
    finally:
        prom.stop()
    want = summarize(RESULTS, AT)
    assert got["communes"]["total"] == 3 and got["communes"]["online"] == 2
    assert [(c["commune"], c["agents_known"], c["agents_online"]) for c in got["communes"]["list"]] == \
        [(c["commune"], c["agents_known"], c["agents_online"]) for c in want["communes"]["list"]]
    assert got["devices_down"] == want["devices_down"]
    assert got["alerts"] == want["alerts"]
    assert got["replacement"] == want["replacement"]


def _metric_of(query_name: str) -> str:
    """The metric a recorded answer without __name__ came from (the queries aggregate it away)."""
    return {"offices": "commune_office_info", "agents": "commune_collector_agent_info",
            "snmp_down": "commune_snmp_up", "snmp_devices": "commune_device_info",
            "probes_down": "probe_success", "probe_services": "commune_probe_target_info",
            "alerts": "ALERTS", "versions_now": "commune_agent_build_info",
            "versions_seen": "commune_agent_build_info", "replacement": "commune:device_replacement_score:top_reason",
            "actions": "commune:device_replacement_action:info"}[query_name]
