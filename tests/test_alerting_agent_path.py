"""End to end through the real path, faults included: a business web server and a printer on
loopback, the real ``commune-agent`` probing and polling them and pushing to the real
``commune-collector``, which stamps the commune and agent of the token and forwards to real
Prometheus evaluating the real rules, real Alertmanager with the real routes, a webhook of the test.

- The web server (service ``motcua``) starts healthy, then answers 500: ServiceDown (critical,
  no office-hours condition) reaches the webhook with the commune stamped by the collector and
  the Vietnamese summary; the server heals and the webhook gets the alert resolved.
- snmpsim serves our printer recording with hrPrinterDetectedErrorState changed to ``jammed``
  only (was low toner + door open): PrinterJammed (warning, no office-hours condition) reaches
  the webhook. No critical alert of the printer exists to inhibit it (its toner is low, not out).

Alerts that only fire in office hours (AgentSilent, PrinterUnreachable, ...) are not used: the
test must pass at any hour. The stack (Prometheus, Alertmanager, webhook) is the one of
tests/test_alerting_e2e.py: every ``for:`` shortened to 2s and, here, every rule group's own
evaluation interval too (signals.yml records commune_service:probe_success:avg once a minute; at
1s the fault shows within seconds). The expressions are the real ones.
"""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml

from tests.probe_servers import HTTPServer, send
from tests.support import LOCAL_FIXTURES, free_port, prom_query, wait_until
from tests.test_alerting_e2e import RUNBOOK_BASE, stack  # noqa: F401  (the fixture)
from tests.test_collector_ingest import add_token, log_text, start_collector
from tests.test_push_e2e import Agent
from tests.test_snmp_live import start_snmpsim

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

COMMUNE, AGENT_NAME = "09667", "pc-motcua-01"
PRINTER = "may-in-mot-cua"
ERROR_STATE_OID = "1.3.6.1.2.1.25.3.5.1.2.1"  # hrPrinterDetectedErrorState of hrDeviceIndex 1


class Portal:
    """A business web server on loopback: ``/health`` answers 200 while healthy, 500 otherwise."""

    def __init__(self):
        self.healthy = True
        self.statuses = []  # status of every answer, in order
        self.mark = 0  # index in statuses of the last change
        self.lock = threading.Lock()
        self.server = HTTPServer({"/health": self._health})
        self.url = self.server.url("/health")

    def _health(self, handler) -> None:
        with self.lock:
            status = 200 if self.healthy else 500
            self.statuses.append(status)
        send(handler, status, b"OK" if status == 200 else b"Internal Server Error")

    def set_healthy(self, healthy: bool) -> None:
        with self.lock:
            self.healthy = healthy
            self.mark = len(self.statuses)

    def answered_since_change(self, status: int) -> bool:
        with self.lock:
            return status in self.statuses[self.mark:]

    def close(self) -> None:
        self.server.close()


def jammed_printer_recording(tmp: Path) -> Path:
    """Our printer recording with hrPrinterDetectedErrorState = jammed (bit 5: 0x04) and nothing else."""
    lines = (LOCAL_FIXTURES / "snmp" / "printer.snmprec").read_text(encoding="utf-8").splitlines()
    out, changed = [], 0
    for line in lines:
        oid, typ, _value = line.split("|", 2)
        if oid == ERROR_STATE_OID:
            assert typ == "4x", line
            line, changed = f"{oid}|4x|0400", changed + 1
        out.append(line)
    assert changed == 1
    path = tmp / "printer-jammed.snmprec"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def agent_config(tmp: Path, push_url: str, token: str, portal_url: str, snmp_port: int) -> Path:
    cfg = {
        "agent": {"id": AGENT_NAME, "state_dir": str(tmp / "agent-state"), "interval": "1s",
                  "log_level": "info"},
        "web": {"listen_address": f"127.0.0.1:{free_port()}"},
        **{name: {"enabled": False} for name in ("host", "smart", "process")},
        "icmp": {"gateway": False},
        "probes": {
            "interval": "1s", "timeout": "1s",
            "modules": {"portal": {"prober": "http", "timeout": "800ms",
                                   "http": {"valid_status_codes": [200]}}},
            "targets": [{"name": "motcua-portal", "module": "portal", "url": portal_url, "service": "motcua"}],
        },
        "snmp": {
            "interval": "1s", "timeout": "500ms", "retries": 1,
            "auths": {"office": {"version": "2c", "community": "printer-jammed"}},
            "targets": [{"name": PRINTER, "address": "127.0.0.1", "port": snmp_port, "auth": "office"}],
        },
        # batch_delay 0s: every collection is sent as it comes (the default holds them up to 2 minutes)
        "push": {"enabled": True, "url": push_url, "bearer_token": token, "interval": "1s", "batch_delay": "0s",
                 "min_backoff": "200ms", "max_backoff": "1s", "timeout": "5s"},
    }
    path = tmp / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("stack", [{"group_interval": "1s"}], indirect=True)
def test_agent_faults_reach_the_webhook_and_resolve(stack, tmp_path):  # noqa: F811
    hook, _writer, prom_url, _am_url = stack
    portal = Portal()
    procs = []
    try:
        snmpsim, snmp_port = start_snmpsim(tmp_path / "snmpsim", {"printer-jammed": jammed_printer_recording(tmp_path)})
        procs.append(snmpsim)
        collector, collector_url, state = start_collector(tmp_path, [prom_url + "/api/v1/write"])
        procs.append(collector)
        token = add_token(state, COMMUNE, AGENT_NAME)
        agent = Agent(tmp_path, agent_config(tmp_path, collector_url + "/api/v1/write", token, portal.url,
                                             snmp_port))
        procs.append(agent.proc)

        # healthy: the probe succeeds and arrives stamped with the token's identity
        wait_until(lambda: prom_query(prom_url, f'commune_service:probe_success:avg{{commune="{COMMUNE}",'
                                                'service="motcua"} == 1'), 30,
                   what="commune_service:probe_success:avg 1 for motcua from the agent's pushes")
        assert prom_query(prom_url, f'probe_success{{commune="{COMMUNE}",agent="{AGENT_NAME}",'
                                    f'target="motcua-portal"}} == 1')

        # the jammed printer, polled over SNMP by the same agent
        def printer_alert():
            return [a for a in hook.alerts("webhook", alertname="PrinterJammed", commune=COMMUNE) if a[1] == "firing"]

        _path, _status, alert = wait_until(printer_alert, 60, what="PrinterJammed at the webhook")[0]
        assert alert["labels"] == {"alertname": "PrinterJammed", "commune": COMMUNE, "agent": AGENT_NAME,
                                   "target": PRINTER, "severity": "warning", "scope": "device"}
        assert alert["annotations"]["summary_vi"] == f"Máy in {PRINTER} bị kẹt giấy."
        assert alert["annotations"]["description_vi"] == (
            f"Máy in {PRINTER} của xã/phường {COMMUNE} báo kẹt giấy đã 5 phút.")
        # only the jam is reported: no other error condition of the recording survived the change
        conditions = {r["metric"]["condition"]: r["value"][1] for r in prom_query(
            prom_url, f'commune_printer_error_state{{commune="{COMMUNE}",target="{PRINTER}"}}')}
        assert conditions["jammed"] == "1" and conditions["door_open"] == "0" and conditions["low_toner"] == "0"
        assert not hook.alerts(alertname="ServiceDown"), "ServiceDown while the portal was healthy"

        # the portal starts failing
        portal.set_healthy(False)
        wait_until(lambda: portal.answered_since_change(500), 10, what="the portal answering 500 to the agent")

        def service_down(status):
            return [a for a in hook.alerts("webhook", alertname="ServiceDown", commune=COMMUNE) if a[1] == status]

        _path, _status, alert = wait_until(lambda: service_down("firing"), 60, what="ServiceDown at the webhook")[0]
        assert alert["labels"] == {"alertname": "ServiceDown", "commune": COMMUNE, "service": "motcua",
                                   "severity": "critical", "scope": "service"}
        assert alert["annotations"]["summary_vi"] == f"Không truy cập được motcua từ xã/phường {COMMUNE}."
        assert alert["annotations"]["summary"] == f"motcua is unreachable from commune {COMMUNE}."
        assert alert["annotations"]["runbook_url"] == f"{RUNBOOK_BASE}/servicedown"
        assert prom_query(prom_url, f'probe_success{{commune="{COMMUNE}",agent="{AGENT_NAME}",'
                                    f'target="motcua-portal"}} == 0')
        assert not service_down("resolved")

        # the portal heals: the alert resolves
        portal.set_healthy(True)
        wait_until(lambda: portal.answered_since_change(200), 10, what="the portal answering 200 again")
        _path, _status, alert = wait_until(lambda: service_down("resolved"), 60,
                                           what="ServiceDown resolved at the webhook")[0]
        assert alert["labels"]["service"] == "motcua" and alert["labels"]["commune"] == COMMUNE
        # the printer is still jammed: its alert was never resolved
        assert not [a for a in hook.alerts("webhook", alertname="PrinterJammed") if a[1] == "resolved"]

        assert "Traceback" not in agent.proc.log(), agent.proc.log()[-3000:]
    finally:
        for proc in reversed(procs):
            proc.stop()
        portal.close()
    assert "Traceback" not in log_text(collector), log_text(collector)[-3000:]
