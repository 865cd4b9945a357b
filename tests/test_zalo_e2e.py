"""End to end: Zalo notifications and escalation with the real components. Prometheus evaluates the
real rules (every for: shortened to 2s as in tests/test_alerting_e2e.py, the escalation's 4h to
ESCALATE_AFTER); Alertmanager runs the real alertmanager.yml (routes, receivers, templates; group
timings 1s): its zalo and escalation receivers post, with their bearer token, to a real
``commune-collector serve`` whose relay talks to the Zalo stand-in (tests/zalo_standin.py), the
Telegram notifier to a Bot API stand-in, e-mail to an SMTP server of the test; all on loopback.
Prometheus' external label runbook_base is the collector's /runbooks, whose pages the test opens
from the links in the messages."""
from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path

import pytest
import yaml

from contract.schema import substitute_env
from tests.support import Proc, free_port, http_get, need_binary, prom_query, start_prometheus, wait_until
from tests.test_alerting_e2e import (ALERTMANAGER_YML, Smtp, Webhook, Writer, am_alerts, disk, gateway,
                                     prometheus_alerting, rules_copy)
from tests.test_collector_ingest import collector_metrics, log_text, metric_value, start_collector
from tests.test_rules import AM_ENV
from tests.test_zalo import HEAD, ON_DUTY, WEBHOOK_TOKEN, relay_config
from tests.zalo_standin import ZaloStandIn

ESCALATE_AFTER = "6s"

pytestmark = pytest.mark.timeout(240)


def alertmanager_config(tmp_path: Path, collector_url: str, hook: Webhook, smtp: Smtp) -> Path:
    env = {**AM_ENV, "COLLECTOR_URL": collector_url}
    config = yaml.safe_load(substitute_env(ALERTMANAGER_YML.read_text(encoding="utf-8"), env))
    for route in [config["route"], *config["route"]["routes"]]:
        for key in ("group_wait", "group_interval"):
            route[key] = "1s"
        route["repeat_interval"] = "1h"
    token_file = tmp_path / "secrets" / "webhook-token"  # written by relay_config
    for receiver in config["receivers"]:
        for hook_cfg in receiver.get("webhook_configs", []):
            if receiver["name"] in ("zalo", "escalation"):  # the real relay: only the token's path differs
                assert hook_cfg["url"].startswith(collector_url + "/alertmanager/zalo/")
                hook_cfg["http_config"]["authorization"]["credentials_file"] = str(token_file)
            else:  # the generic webhook: to the test
                hook_cfg.clear()
                hook_cfg.update({"url": f"{hook.url}/{receiver['name']}", "send_resolved": True})
        for tg in receiver.get("telegram_configs", []):
            tg["api_url"] = f"{hook.url}/telegram-api"
        for mail in receiver.get("email_configs", []):
            mail.update(smarthost=smtp.address, require_tls=False)
    config["templates"] = [str(t) for t in ALERTMANAGER_YML.parent.glob("*.tmpl")]
    config["global"] = {"resolve_timeout": "5m", "smtp_from": AM_ENV["ALERT_EMAIL_FROM"]}
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def escalation_rules(tmp_path: Path) -> list:
    rules = rules_copy(tmp_path)
    path = next(p for p in rules if p.name == "alerts-notifications.yml")
    text, n = re.subn(r"(alert: CriticalAlertUnresolved\n(?:.*\n)*?\s+for:) 2s", rf"\1 {ESCALATE_AFTER}",
                      path.read_text(encoding="utf-8"))
    assert n == 1
    path.write_text(text, encoding="utf-8")
    return rules


@pytest.fixture
def stack(tmp_path):
    need_binary("prometheus-alertmanager")
    zalo, hook, smtp = ZaloStandIn(followers=[ON_DUTY, HEAD]), Webhook(), Smtp()
    procs = []
    try:
        collector, collector_url, _ = start_collector(
            tmp_path, ["http://127.0.0.1:9/api/v1/write"],
            extra={"zalo": relay_config(tmp_path, zalo), "upstream_check_interval": "0s"})
        procs.append(collector)
        am_port = free_port()
        am = Proc(["prometheus-alertmanager",
                   f"--config.file={alertmanager_config(tmp_path, collector_url, hook, smtp)}",
                   f"--storage.path={tmp_path / 'am-data'}", f"--web.listen-address=127.0.0.1:{am_port}",
                   "--cluster.listen-address=", "--log.level=warn"], tmp_path / "alertmanager.log")
        procs.append(am)
        am_url = f"http://127.0.0.1:{am_port}"
        am.wait_http(am_url + "/-/ready")
        prom, prom_url = start_prometheus(tmp_path, rule_files=escalation_rules(tmp_path),
                                          extra=prometheus_alerting(f"127.0.0.1:{am_port}", collector_url + "/runbooks"))
        procs.append(prom)
        writer = Writer(prom_url)
        yield dict(zalo=zalo, hook=hook, smtp=smtp, writer=writer, prom=prom_url, am=am_url,
                   collector=collector, collector_url=collector_url)
        writer.close()
        assert not writer.errors, writer.errors[:3]
    finally:
        for proc in reversed(procs):
            proc.stop()
        zalo.close()
        hook.close()
        smtp.close()


def telegram_text(ctype: str, raw: bytes) -> str:
    text = raw.decode("utf-8")
    return (json.loads(text) if "json" in ctype else dict(urllib.parse.parse_qsl(text)))["text"]


def lines_with(texts, needle):
    return [t for t in texts if needle in t]


def test_critical_alert_on_zalo_then_escalated_to_the_second_receiver(stack):
    zalo, writer, url = stack["zalo"], stack["writer"], stack["collector_url"]
    gateway(writer, "09667", "pc-01", 1)
    disk(writer, "09667", "pc-01", 2e9)  # 2 % free: DiskFull (critical)

    # 1. the on-duty staff get the Vietnamese message on Zalo, with a runbook link that opens
    first = wait_until(lambda: lines_with(zalo.texts(ON_DUTY), "[NGHIÊM TRỌNG] Xã/phường 09667: Ổ đĩa C: của máy pc-01"),
                       60, what="DiskFull on Zalo (on-duty)")[0]
    assert "● Đang xảy ra: Ổ đĩa C: của máy pc-01 sắp đầy." in first
    assert "Đơn vị: 09667 · máy/agent: pc-01" in first and "(giờ Việt Nam)" in first
    link = re.search(r"Hướng dẫn xử lý: (\S+)", first).group(1)
    assert link == f"{url}/runbooks/diskfull"
    page = http_get(link).decode()
    assert '<section id="vi" lang="vi">' in page and "<h1>DiskFull</h1>" in page

    # 2. still firing after ESCALATE_AFTER: the escalation goes to the second receiver only
    escalated = wait_until(lambda: lines_with(zalo.texts(HEAD), "Chuyển cấp: DiskFull tại xã/phường 09667"),
                           60, what="CriticalAlertUnresolved on Zalo (escalation)")[0]
    assert escalated.startswith("[NGHIÊM TRỌNG] Xã/phường 09667: Chuyển cấp: DiskFull tại xã/phường 09667 "
                                "chưa được khắc phục sau 4 giờ.")
    assert "Cảnh báo nghiêm trọng DiskFull của máy pc-01 tại xã/phường 09667" in escalated
    esc_link = re.search(r"Hướng dẫn xử lý: (\S+)", escalated).group(1)
    assert esc_link == f"{url}/runbooks/criticalalertunresolved" and "Tiếng Việt" in http_get(esc_link).decode()
    mail = wait_until(lambda: [m for m in stack["smtp"].messages if m["To"] == AM_ENV["ALERT_ESCALATION_EMAIL_TO"]],
                      30, what="the escalation by e-mail")[0]
    assert "Chuyển cấp: DiskFull" in str(mail["Subject"])
    # in Alertmanager: the escalated alert's labels, its name kept, no runbook_base label
    alert = am_alerts(stack["am"], alertname="CriticalAlertUnresolved")[0]
    assert alert["labels"] == {"alertname": "CriticalAlertUnresolved", "escalated_alertname": "DiskFull",
                               "commune": "09667", "agent": "pc-01", "mountpoint": "C:",
                               "severity": "critical", "scope": "device"}
    assert sorted(r["name"] for r in alert["receivers"]) == ["escalation", "webhook"]
    # the first receivers never get the escalation, the second never the first notification
    assert not lines_with(zalo.texts(ON_DUTY), "Chuyển cấp")
    assert not [t for t in zalo.texts(HEAD) if "Chuyển cấp" not in t]
    telegram = [telegram_text(ctype, raw) for _, ctype, raw in list(stack["hook"].telegram)]
    assert lines_with(telegram, "Ổ đĩa C: của máy pc-01 sắp đầy.") and not lines_with(telegram, "Chuyển cấp")

    # 3. fixed: both receivers are told, in Vietnamese
    disk(writer, "09667", "pc-01", 50e9)
    wait_until(lambda: lines_with(zalo.texts(ON_DUTY), "[ĐÃ KHẮC PHỤC] Xã/phường 09667: Ổ đĩa C: của máy pc-01"),
               60, what="DiskFull resolved on Zalo (on-duty)")
    wait_until(lambda: lines_with(zalo.texts(HEAD), "[ĐÃ KHẮC PHỤC] Xã/phường 09667: Chuyển cấp: DiskFull"),
               60, what="the escalation resolved on Zalo")
    metrics = collector_metrics(url)
    assert metric_value(metrics, "commune_collector_zalo_messages_sent_total", recipients="on-duty") >= 2
    assert metric_value(metrics, "commune_collector_zalo_messages_sent_total", recipients="escalation") >= 2
    for reason in ("unauthorized", "bad_request", "unavailable", "token_rejected"):
        assert metric_value(metrics, "commune_collector_zalo_failures_total", recipients="on-duty", reason=reason) == 0
    log = log_text(stack["collector"]) + (Path(stack["collector"].log_path).parent / "alertmanager.log").read_text()
    assert zalo.access_token not in log and WEBHOOK_TOKEN not in log


def test_a_warning_is_never_escalated(stack):
    zalo, writer = stack["zalo"], stack["writer"]
    gateway(writer, "09667", "pc-01", 1)
    disk(writer, "09667", "pc-01", 2e9)  # critical: escalates
    labels = dict(commune="09667", agent="pc-03")
    # 91 % of memory used, no swap: MemoryPressure (warning)
    writer.set("node_memory_MemAvailable_bytes", 0.5e9, **labels)
    writer.set("node_memory_MemTotal_bytes", 8e9, **labels)
    wait_until(lambda: prom_query(stack["prom"], 'ALERTS{alertname="MemoryPressure", alertstate="firing"}'), 90,
               what="MemoryPressure firing")
    start = prom_query(stack["prom"], 'ALERTS_FOR_STATE{alertname="MemoryPressure"}')[0]["value"][1]
    # wait until the escalation of DiskFull, which started no earlier, went out and the warning has
    # been firing longer than ESCALATE_AFTER: a warning that escalated would be there by then
    wait_until(lambda: lines_with(zalo.texts(HEAD), "Chuyển cấp: DiskFull"), 90, what="DiskFull escalated")
    wait_until(lambda: float(prom_query(stack["prom"], "time()")[1]) - float(start)
               > 2 * float(ESCALATE_AFTER.rstrip("s")) + 5, 60, what="the warning firing long enough")
    assert prom_query(stack["prom"], 'ALERTS{alertname="CriticalAlertUnresolved", escalated_alertname!="DiskFull"}') == []
    assert all("MemoryPressure" not in t and "pc-03" not in t for t in zalo.texts(HEAD) + zalo.texts(ON_DUTY))
