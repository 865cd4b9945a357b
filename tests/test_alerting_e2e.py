"""End to end: real Prometheus evaluating the real rules, real Alertmanager with the real routes and
inhibitions, a webhook receiver served by the test. Faults are written into Prometheus over
remote write (contract.remote_write, the agents' own encoder), every second with the current time,
as the collector would forward them.

Test copy of the rules: every ``for:`` is shortened to 2s (a regex over the rule files) so alerts
fire within seconds; the expressions are the real ones. Test copy of alertmanager.yml: the real
routes, inhibit rules and templates, with the group timings shortened to 1s; every receiver also
posts to a webhook of the test (path = receiver name), the Telegram notifier talks to a Bot API
stand-in served by the test (``api_url``) and the e-mail notifier to an SMTP server of the test,
all on loopback, so the Vietnamese messages are checked as rendered and nothing leaves the machine.
"""
from __future__ import annotations

import email
import email.policy
import json
import re
import socketserver
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

import pytest
import yaml

from contract import remote_write
from contract.schema import substitute_env
from tests.support import REPO, Proc, free_port, http_get, need_binary, prom_query, start_prometheus, wait_until
from tests.test_rules import AM_ENV

RULES = REPO / "collector" / "rules"
ALERTMANAGER_YML = REPO / "collector" / "alertmanager" / "alertmanager.yml"
RUNBOOK_BASE = "https://collector.province.example:9722/runbooks"

pytestmark = pytest.mark.timeout(240)


class Webhook:
    """Alertmanager webhook notifications received, by receiver (the request path)."""

    def __init__(self):
        self.notifications = []
        self.telegram = []  # (path, content type, body) of Bot API calls
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path.startswith("/telegram-api/"):
                    # Alertmanager's Telegram notifier: answer as the Bot API does
                    with hook.lock:
                        hook.telegram.append((self.path, self.headers.get("Content-Type", ""), raw))
                    answer = json.dumps({"ok": True, "result": {
                        "message_id": len(hook.telegram), "date": int(time.time()),
                        "chat": {"id": int(AM_ENV["TELEGRAM_CHAT_ID"]), "type": "supergroup"}}}).encode()
                else:
                    with hook.lock:
                        hook.notifications.append((self.path.strip("/"), json.loads(raw)))
                    answer = b""
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self, receiver=None, **labels):
        """Every alert notified so far (receiver, status, alert) whose labels include ``labels``."""
        with self.lock:
            out = []
            for path, body in self.notifications:
                for alert in body["alerts"]:
                    if (receiver is None or path == receiver) and \
                            all(alert["labels"].get(k) == v for k, v in labels.items()):
                        out.append((path, alert["status"], alert))
            return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Smtp:
    """A minimal SMTP server on loopback that keeps every message it is given."""

    def __init__(self):
        self.messages = []
        smtp = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.wfile.write(b"220 localhost ESMTP test\r\n")
                data, lines = False, []
                for line in self.rfile:
                    if data:
                        if line.rstrip(b"\r\n") == b".":
                            smtp.messages.append(email.message_from_bytes(b"".join(lines),
                                                                          policy=email.policy.default))
                            data, lines = False, []
                            self.wfile.write(b"250 OK\r\n")
                        else:
                            lines.append(line[1:] if line.startswith(b"..") else line)
                        continue
                    verb = line[:4].upper()
                    if verb == b"EHLO":
                        self.wfile.write(b"250-localhost\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                    elif verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                        self.wfile.write(b"250 OK\r\n")
                    elif verb == b"DATA":
                        data = True
                        self.wfile.write(b"354 go ahead\r\n")
                    elif verb == b"QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"502 not implemented\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Writer:
    """Writes the current fault state into Prometheus every 0.5 s over remote write."""

    def __init__(self, url: str):
        self.url = url + "/api/v1/write"
        self.series = {}
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.errors = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def set(self, name: str, value: float, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self.lock:
            self.series[key] = value

    def push_once(self) -> None:
        now_ms = int(time.time() * 1000)
        with self.lock:
            series = [({"__name__": name, **dict(labels)}, [(value, now_ms)])
                      for (name, labels), value in self.series.items()]
        if not series:
            return
        req = urllib.request.Request(self.url, data=remote_write.encode(series), headers=remote_write.HEADERS,
                                     method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 204, resp.status

    def run(self):
        while not self.stop_event.is_set():
            try:
                self.push_once()
            except Exception as exc:  # reported by the test, not swallowed
                self.errors.append(exc)
            self.stop_event.wait(0.5)

    def close(self):
        self.stop_event.set()
        self.thread.join(5)


def rules_copy(tmp_path: Path, group_interval: Optional[str] = None) -> list:
    """The real rule files with every for: shortened to 2s; with ``group_interval``, every group that
    sets its own evaluation interval (e.g. the 1m recording rules of signals.yml) uses that instead."""
    out = []
    for path in sorted(RULES.glob("*.yml")):
        text = re.sub(r"(?m)^(\s+for:) \S+$", r"\1 2s", path.read_text(encoding="utf-8"))
        if group_interval:
            text = re.sub(r"(?m)^(\s+interval:) \S+$", rf"\1 {group_interval}", text)
        target = tmp_path / "rules" / path.name
        target.parent.mkdir(exist_ok=True)
        target.write_text(text, encoding="utf-8")
        out.append(target)
    return out


def prometheus_alerting(am_address: str, runbook_base: str = RUNBOOK_BASE) -> dict:
    """start_prometheus(extra=...) as collector/prometheus/prometheus.yml sets it: runbook_base an
    external label (the annotations' runbook_url), dropped from the alerts sent to Alertmanager."""
    return {"global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "external_labels": {"runbook_base": runbook_base}},
            "alerting": {"alert_relabel_configs": [{"action": "labeldrop", "regex": "runbook_base"}],
                         "alertmanagers": [{"static_configs": [{"targets": [am_address]}]}]}}


def alertmanager_copy(tmp_path: Path, hook_url: str, smtp_address: str) -> Path:
    config = yaml.safe_load(substitute_env(ALERTMANAGER_YML.read_text(encoding="utf-8"), AM_ENV))
    routes = [config["route"], *config["route"].get("routes", [])]
    for route in routes:
        for key in ("group_wait", "group_interval"):
            route[key] = "1s"
        route["repeat_interval"] = "1h"
    receivers = []
    for r in config["receivers"]:
        receiver = {"name": r["name"],
                    "webhook_configs": [{"url": f"{hook_url}/{r['name']}", "send_resolved": True}]}
        if r["name"] == "telegram":  # the real Telegram notifier and template, Bot API on loopback
            receiver["telegram_configs"] = [{**r["telegram_configs"][0], "api_url": f"{hook_url}/telegram-api"}]
        if r["name"] == "email":  # the real e-mail notifier and templates, SMTP on loopback, no TLS/auth
            receiver["email_configs"] = [{**r["email_configs"][0], "smarthost": smtp_address,
                                          "require_tls": False}]
        receivers.append(receiver)
    config["receivers"] = receivers
    config["templates"] = [str(t) for t in ALERTMANAGER_YML.parent.glob("*.tmpl")]
    config["global"] = {"resolve_timeout": "5m", "smtp_from": AM_ENV["ALERT_EMAIL_FROM"]}
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def stack(tmp_path, request):
    """(webhook, writer, Prometheus URL, Alertmanager URL); indirect parameters go to rules_copy."""
    need_binary("prometheus-alertmanager")
    hook = Webhook()
    smtp = Smtp()
    am_port = free_port()
    am = Proc(["prometheus-alertmanager", f"--config.file={alertmanager_copy(tmp_path, hook.url, smtp.address)}",
               f"--storage.path={tmp_path / 'am-data'}", f"--web.listen-address=127.0.0.1:{am_port}",
               "--cluster.listen-address=", "--log.level=warn"], tmp_path / "alertmanager.log")
    prom = writer = None
    try:
        am.wait_http(f"http://127.0.0.1:{am_port}/-/ready")
        rules = rules_copy(tmp_path, **getattr(request, "param", {}))
        prom, prom_url = start_prometheus(tmp_path, rule_files=rules, extra=prometheus_alerting(f"127.0.0.1:{am_port}"))
        writer = Writer(prom_url)
        hook.smtp = smtp
        yield hook, writer, prom_url, f"http://127.0.0.1:{am_port}"
        assert not writer.errors, writer.errors[:3]
    finally:
        if writer:
            writer.close()
        if prom:
            prom.stop()
        am.stop()
        hook.close()
        smtp.close()


def am_alerts(am_url: str, **labels) -> list:
    alerts = json.loads(http_get(f"{am_url}/api/v2/alerts"))
    return [a for a in alerts if all(a["labels"].get(k) == v for k, v in labels.items())]


def disk(writer: Writer, commune: str, agent: str, avail: float) -> None:
    labels = dict(commune=commune, agent=agent, device="C:", fstype="NTFS", mountpoint="C:")
    writer.set("node_filesystem_avail_bytes", avail, **labels)
    writer.set("node_filesystem_size_bytes", 100e9, **labels)


def gateway(writer: Writer, commune: str, agent: str, success: float) -> None:
    writer.set("probe_success", success, commune=commune, agent=agent, target="gateway", module="icmp",
               hop="gateway")


def test_fault_reaches_webhook_and_resolves(stack):
    hook, writer, prom_url, am_url = stack
    gateway(writer, "09667", "pc-01", 1)
    disk(writer, "09667", "pc-01", 2e9)  # 2 % free: DiskFull (critical)
    wait_until(lambda: prom_query(prom_url, 'node_filesystem_avail_bytes{agent="pc-01"}'), 30,
               what="remote-written series in Prometheus")

    def notified(status):
        return [a for a in hook.alerts("webhook", alertname="DiskFull", commune="09667") if a[1] == status]

    path, status, alert = wait_until(lambda: notified("firing"), 60, what="DiskFull at the webhook")[0]
    assert alert["labels"] == {"alertname": "DiskFull", "commune": "09667", "agent": "pc-01", "mountpoint": "C:",
                               "severity": "critical", "scope": "device"}
    assert alert["annotations"]["summary"] == "Disk C: of pc-01 is almost full."
    assert alert["annotations"]["description_vi"] == (
        "Ổ C: của máy pc-01 tại xã/phường 09667 chỉ còn trống 2%: phần mềm không lưu được tệp, "
        "Windows không cập nhật được.")
    assert alert["annotations"]["runbook_url"] == f"{RUNBOOK_BASE}/diskfull"
    # critical: also to Telegram and mail (real routes), each as its own receiver
    wait_until(lambda: hook.alerts("telegram", alertname="DiskFull") and hook.alerts("email", alertname="DiskFull"),
               30, what="DiskFull at the telegram and email receivers")

    # the Telegram message, rendered by commune.tmpl, in Vietnamese
    def telegram_message():
        for path, ctype, raw in list(hook.telegram):
            text = raw.decode("utf-8")
            if "DiskFull" in text or "pc-01" in text:
                return path, ctype, text
    path, ctype, text = wait_until(telegram_message, 30, what="DiskFull through the Telegram Bot API")
    assert path == f"/telegram-api/bot{AM_ENV['TELEGRAM_BOT_TOKEN']}/sendMessage"
    body = json.loads(text) if "json" in ctype else dict(urllib.parse.parse_qsl(text))
    assert str(body["chat_id"]) == AM_ENV["TELEGRAM_CHAT_ID"] and body["parse_mode"] == "HTML"
    message = body["text"]
    assert message.startswith("<b>[NGHIÊM TRỌNG] Xã/phường 09667: Ổ đĩa C: của máy pc-01 sắp đầy.</b>"), message
    assert "🔴 Ổ đĩa C: của máy pc-01 sắp đầy." in message
    assert f'<a href="{RUNBOOK_BASE}/diskfull">hướng dẫn</a>' in message

    # the e-mail, rendered by commune.tmpl: Vietnamese subject, HTML and text parts
    mail = wait_until(lambda: [m for m in hook.smtp.messages if "pc-01" in str(m["Subject"])], 30,
                      what="DiskFull by e-mail")[0]
    assert mail["Subject"] == "[NGHIÊM TRỌNG] Xã/phường 09667: Ổ đĩa C: của máy pc-01 sắp đầy."
    assert mail["To"] == AM_ENV["ALERT_EMAIL_TO"]
    html = mail.get_body(("html",)).get_content()
    assert "<b>Đang xảy ra: Ổ đĩa C: của máy pc-01 sắp đầy.</b>" in html
    assert f'<a href="{RUNBOOK_BASE}/diskfull">Hướng dẫn xử lý</a>' in html
    text_part = mail.get_body(("plain",)).get_content()
    assert "● Đang xảy ra: Ổ đĩa C: của máy pc-01 sắp đầy." in text_part
    assert "Đơn vị: 09667 · máy/agent: pc-01" in text_part

    disk(writer, "09667", "pc-01", 50e9)  # the fault clears
    wait_until(lambda: notified("resolved"), 60, what="DiskFull resolved at the webhook")


def test_commune_offline_inhibits_its_device_alerts(stack):
    hook, writer, prom_url, am_url = stack
    # 09670's only agent loses its gateway: the commune is cut off (critical, scope commune)
    gateway(writer, "09670", "pc-09", 0)
    wait_until(lambda: hook.alerts("webhook", alertname="CommuneGatewayUnreachable", commune="09670"), 60,
               what="CommuneGatewayUnreachable at the webhook")

    # now a device fault in the offline commune and one in a commune that is fine
    disk(writer, "09670", "pc-09", 2e9)
    gateway(writer, "09667", "pc-01", 1)
    disk(writer, "09667", "pc-01", 2e9)
    wait_until(lambda: hook.alerts("webhook", alertname="DiskFull", commune="09667"), 60,
               what="DiskFull of the online commune at the webhook")

    def suppressed():
        alerts = am_alerts(am_url, alertname="DiskFull", commune="09670")
        return alerts and alerts[0]["status"]["state"] == "suppressed" and alerts[0]["status"]["inhibitedBy"]

    wait_until(suppressed, 60, what="DiskFull of 09670 inhibited in Alertmanager")
    # it stays suppressed over many group intervals (1s) and is never notified
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert suppressed()
        time.sleep(0.5)
    assert hook.alerts(alertname="DiskFull", commune="09670") == []

    # the link comes back: the inhibition lifts and the device alert goes out
    gateway(writer, "09670", "pc-09", 1)
    wait_until(lambda: [a for a in hook.alerts("webhook", alertname="CommuneGatewayUnreachable", commune="09670")
                        if a[1] == "resolved"]
               and hook.alerts("webhook", alertname="DiskFull", commune="09670"), 60,
               what="CommuneGatewayUnreachable resolved and DiskFull of 09670 notified once its commune is back")


def test_rules_copy_shortens_every_for(tmp_path):
    copies = rules_copy(tmp_path)
    originals = "".join(p.read_text(encoding="utf-8") for p in sorted(RULES.glob("*.yml")))
    shortened = "".join(p.read_text(encoding="utf-8") for p in copies)
    assert len(re.findall(r"(?m)^\s+for: ", originals)) == shortened.count("for: 2s") > 30
