"""The collector's Zalo relay (collector/zalo.py): a real ``commune-collector serve`` posting to the
Zalo stand-in on loopback (tests/zalo_standin.py), called with Alertmanager's webhook JSON; the
text rendering on literal payloads. End to end with Prometheus and Alertmanager:
tests/test_zalo_e2e.py."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from collector.config import ZaloSection
from collector.zalo import MAX_TEXT, check_payload, render_text, vietnam_time
from tests.support import wait_until
from tests.test_collector_ingest import collector_metrics, log_text, metric_value, start_collector
from tests.zalo_standin import ZaloStandIn

ON_DUTY, HEAD, STRANGER = "8412345678901234567", "8498765432109876543", "8400000000000000001"
WEBHOOK_TOKEN = "relay-bearer-0123456789abcdef"

pytestmark = pytest.mark.timeout(120)


def alert(status="firing", **labels):
    base = {"alertname": "DiskFull", "commune": "09667", "agent": "pc-01", "mountpoint": "C:",
            "severity": "critical", "scope": "device"}
    base.update(labels)
    return {"status": status, "labels": base, "fingerprint": f"fp-{base['agent']}",
            "startsAt": "2026-12-07T02:05:00.123456789Z",
            "endsAt": "2026-12-07T03:10:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
            "annotations": {"summary": f"Disk C: of {base['agent']} is almost full.",
                            "description": "Only 2% free.",
                            "summary_vi": f"Ổ đĩa C: của máy {base['agent']} sắp đầy.",
                            "description_vi": "Ổ C: chỉ còn trống 2%.",
                            "runbook_url": "https://collector.example/runbooks/diskfull"}}


def notification(*alerts, status="firing"):
    common = {k: v for k, v in alerts[0]["labels"].items()
              if all(a["labels"].get(k) == v for a in alerts)}
    notes = {k: v for k, v in alerts[0]["annotations"].items()
             if all(a["annotations"].get(k) == v for a in alerts)}
    return {"version": "4", "groupKey": '{}:{alertname="DiskFull", commune="09667"}', "status": status,
            "receiver": "zalo", "groupLabels": {"alertname": "DiskFull", "commune": "09667"},
            "commonLabels": common, "commonAnnotations": notes, "externalURL": "http://am", "alerts": list(alerts)}


# ---------------------------------------------------------------- the text

def test_text_is_the_vietnamese_template_in_plain_text():
    text = render_text(notification(alert()))
    assert text.splitlines() == [
        "[NGHIÊM TRỌNG] Xã/phường 09667: Ổ đĩa C: của máy pc-01 sắp đầy.",
        "1 cảnh báo đang xảy ra",
        "",
        "● Đang xảy ra: Ổ đĩa C: của máy pc-01 sắp đầy.",
        "Ổ C: chỉ còn trống 2%.",
        "Đơn vị: 09667 · máy/agent: pc-01",
        "Bắt đầu: 09:05 07/12/2026 (giờ Việt Nam)",
        "Hướng dẫn xử lý: https://collector.example/runbooks/diskfull",
        "(EN) Disk C: of pc-01 is almost full.",
    ]
    resolved = render_text(notification(alert("resolved"), status="resolved"))
    assert resolved.startswith("[ĐÃ KHẮC PHỤC] Xã/phường 09667: Ổ đĩa C: của máy pc-01 sắp đầy.\n1 đã khắc phục")
    assert "✓ Đã khắc phục" in resolved and "kết thúc: 10:10 07/12/2026" in resolved


def test_text_fits_zalo_and_says_how_many_were_left_out():
    many = [alert(agent=f"pc-{i:02d}") for i in range(60)]
    text = render_text(notification(*many))
    assert len(text) <= MAX_TEXT
    shown = text.count("● Đang xảy ra")
    assert 5 < shown < 60
    assert text.endswith(f"… và {60 - shown} cảnh báo khác (xem thư điện tử hoặc Grafana).")
    huge = alert()
    huge["annotations"]["description_vi"] = "x" * 5000
    assert len(render_text(notification(huge))) == MAX_TEXT


def test_vietnam_time_and_payload_checks():
    assert vietnam_time("2026-12-07T17:30:00Z") == "00:30 08/12/2026"  # the date changes at 17:00 UTC
    assert vietnam_time("2026-12-08T00:30:00.5+07:00") == "00:30 08/12/2026"
    assert vietnam_time("0001-01-01T00:00:00Z") == "" and vietnam_time("soon") == ""
    assert check_payload(notification(alert())) is None
    assert "version" in check_payload({**notification(alert()), "version": "3"})
    assert "alerts" in check_payload({**notification(alert()), "alerts": []})
    assert check_payload([1]) == "the body is not a JSON object"


# ---------------------------------------------------------------- the relay, for real

@pytest.fixture
def zalo(tmp_path):
    stand_in = ZaloStandIn(followers=[ON_DUTY, HEAD])
    yield stand_in
    stand_in.close()


def relay_config(tmp_path: Path, zalo: ZaloStandIn, refresh: bool = False, **extra) -> dict:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(exist_ok=True)
    (secrets_dir / "access-token").write_text(zalo.access_token + "\n")
    (secrets_dir / "webhook-token").write_text(WEBHOOK_TOKEN + "\n")
    cfg = {"enabled": True, "api_url": zalo.url, "access_token_file": str(secrets_dir / "access-token"),
           "webhook_token_file": str(secrets_dir / "webhook-token"),
           "recipients": {"on-duty": [ON_DUTY], "escalation": [HEAD]},
           "timeout": "2s", "max_attempts": 3, "retry_backoff": "100ms"}
    if refresh:
        (secrets_dir / "refresh-token").write_text(zalo.refresh_token + "\n")
        (secrets_dir / "app-secret").write_text(zalo.secret_key + "\n")
        cfg["refresh"] = {"app_id": ZaloStandIn.APP_ID, "oauth_url": zalo.url,
                          "secret_key_file": str(secrets_dir / "app-secret"),
                          "refresh_token_file": str(secrets_dir / "refresh-token")}
    cfg.update(extra)
    return cfg


def post(url: str, body, token=WEBHOOK_TOKEN) -> "tuple[int, str]":
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def start(tmp_path, zalo, **kw):
    # the relay needs no upstream; a dead loopback port keeps the config valid
    return start_collector(tmp_path, ["http://127.0.0.1:9/api/v1/write"],
                           extra={"zalo": relay_config(tmp_path, zalo, **kw), "upstream_check_interval": "0s"})


def test_relay_delivers_to_each_recipient_of_the_group_once(tmp_path, zalo):
    proc, url, _ = start(tmp_path, zalo)
    try:
        body = notification(alert())
        assert post(f"{url}/alertmanager/zalo/on-duty", body) == (200, "OK\n")
        assert zalo.texts(ON_DUTY) == [render_text(body)] and zalo.texts(HEAD) == []
        # Alertmanager retrying the same notification (its answer was lost) sends nothing twice
        assert post(f"{url}/alertmanager/zalo/on-duty", body)[0] == 200
        assert len(zalo.texts(ON_DUTY)) == 1
        assert post(f"{url}/alertmanager/zalo/escalation", body)[0] == 200
        assert len(zalo.texts(HEAD)) == 1
        metrics = collector_metrics(url)
        assert metric_value(metrics, "commune_collector_zalo_messages_sent_total", recipients="on-duty") == 1
        assert metric_value(metrics, "commune_collector_zalo_failures_total", recipients="on-duty",
                            reason="unavailable") == 0
        assert metric_value(metrics, "commune_collector_requests_total", handler="zalo", code="200") == 3
    finally:
        proc.stop()


def test_a_large_notification_arriving_in_pieces_is_read_whole(tmp_path, zalo):
    import socket

    proc, url, _ = start(tmp_path, zalo)
    try:
        body = json.dumps(notification(*[alert(agent=f"pc-{i:02d}") for i in range(80)])).encode()
        assert len(body) > 40000
        host, port = url.rsplit("/", 1)[1].split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall((f"POST /alertmanager/zalo/on-duty HTTP/1.1\r\nHost: {host}\r\n"
                          f"Authorization: Bearer {WEBHOOK_TOKEN}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode())
            for i in range(0, len(body), 8192):  # pieces with pauses, as over a slow link
                sock.sendall(body[i:i + 8192])
                time.sleep(0.05)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        text = zalo.texts(ON_DUTY)[0]
        assert len(text) <= MAX_TEXT and text.startswith("[NGHIÊM TRỌNG] Xã/phường 09667: ")
        assert "80 cảnh báo đang xảy ra" in text and "cảnh báo khác" in text
        too_big = b'{"version": "4", "alerts": [' + b" " * (1 << 20) + b"]}"
        assert post(f"{url}/alertmanager/zalo/on-duty", too_big)[0] == 400
    finally:
        proc.stop()


def test_relay_refuses_wrong_callers_and_bodies(tmp_path, zalo):
    proc, url, _ = start(tmp_path, zalo)
    try:
        body = notification(alert())
        assert post(f"{url}/alertmanager/zalo/on-duty", body, token=None)[0] == 401
        assert post(f"{url}/alertmanager/zalo/on-duty", body, token="guess")[0] == 401
        assert post(f"{url}/alertmanager/zalo/nobody", body)[0] == 404
        assert post(f"{url}/alertmanager/zalo/nobody", body, token="guess")[0] == 401  # says nothing of groups
        status, text = post(f"{url}/alertmanager/zalo/on-duty", b"{not json")
        assert status == 400 and "not JSON" in text
        assert post(f"{url}/alertmanager/zalo/on-duty", {**body, "version": "3"})[0] == 400
        assert zalo.messages == []
        metrics = collector_metrics(url)
        assert metric_value(metrics, "commune_collector_zalo_failures_total", recipients="on-duty",
                            reason="unauthorized") == 2
        assert metric_value(metrics, "commune_collector_zalo_failures_total", recipients="on-duty",
                            reason="bad_request") == 2
    finally:
        proc.stop()


def test_relay_retries_an_outage_then_answers_503_so_alertmanager_retries(tmp_path, zalo):
    proc, url, _ = start(tmp_path, zalo)
    try:
        zalo.outages = 2  # two 503s, the third attempt goes through
        assert post(f"{url}/alertmanager/zalo/on-duty", notification(alert()))[0] == 200
        assert len(zalo.texts(ON_DUTY)) == 1
        assert [c for _, c in zalo.calls] == [503, 503, 0]
        zalo.outages = 3  # longer than max_attempts: 503 to Alertmanager, counted
        status, text = post(f"{url}/alertmanager/zalo/on-duty", notification(alert(agent="pc-02")))
        assert status == 503 and f"{ON_DUTY}: unavailable" in text
        metrics = collector_metrics(url)
        assert metric_value(metrics, "commune_collector_zalo_failures_total", recipients="on-duty",
                            reason="unavailable") == 1
        # Alertmanager's retry, once Zalo is back, delivers it
        assert post(f"{url}/alertmanager/zalo/on-duty", notification(alert(agent="pc-02")))[0] == 200
        assert len(zalo.texts(ON_DUTY)) == 2
    finally:
        proc.stop()


def test_a_recipient_the_api_refuses_is_counted_not_retried(tmp_path, zalo):
    proc, url, _ = start(tmp_path, zalo, recipients={"on-duty": [STRANGER, ON_DUTY]})
    try:
        assert post(f"{url}/alertmanager/zalo/on-duty", notification(alert()))[0] == 200
        assert len(zalo.texts(ON_DUTY)) == 1
        assert [c for _, c in zalo.calls].count(-213) == 1  # not retried: it would never pass
        metrics = collector_metrics(url)
        assert metric_value(metrics, "commune_collector_zalo_failures_total", recipients="on-duty",
                            reason="api_error") == 1
        assert "error -213" in log_text(proc)
    finally:
        proc.stop()


def test_an_expired_token_is_renewed_and_no_token_is_ever_shown(tmp_path, zalo):
    proc, url, _ = start(tmp_path, zalo, refresh=True)
    secrets_dir = tmp_path / "secrets"
    old = {zalo.access_token, zalo.refresh_token, zalo.secret_key}
    try:
        zalo.expire_token()
        assert post(f"{url}/alertmanager/zalo/on-duty", notification(alert()))[0] == 200
        assert len(zalo.texts(ON_DUTY)) == 1
        assert zalo.calls == [("/v3.0/oa/message/cs", -216), ("/v4/oa/access_token", 200),
                              ("/v3.0/oa/message/cs", 0)]
        # both files hold the new tokens, private; the single-use refresh token was replaced
        assert (secrets_dir / "access-token").read_text().strip() == zalo.access_token
        assert (secrets_dir / "refresh-token").read_text().strip() == zalo.refresh_token
        for name in ("access-token", "refresh-token"):
            assert (secrets_dir / name).stat().st_mode & 0o077 == 0
        # the refresh token is refused too (spent elsewhere): counted, 503, nothing leaks
        zalo.expire_token()
        zalo.refresh_token = "zrt_spent_elsewhere"
        status, text = post(f"{url}/alertmanager/zalo/on-duty", notification(alert(agent="pc-02")))
        assert status == 503 and "refresh_failed" in text
        metrics = collector_metrics(url)
        assert metric_value(metrics, "commune_collector_zalo_failures_total", recipients="on-duty",
                            reason="refresh_failed") == 1
        shown = log_text(proc) + metrics + text
        assert "-14014" in log_text(proc)
        for secret in old | {zalo.access_token, (secrets_dir / "access-token").read_text().strip(),
                             (secrets_dir / "refresh-token").read_text().strip(), WEBHOOK_TOKEN}:
            assert secret not in shown
    finally:
        proc.stop()


def test_without_renewal_a_refused_token_is_counted(tmp_path, zalo):
    proc, url, _ = start(tmp_path, zalo)
    try:
        zalo.expire_token()
        assert post(f"{url}/alertmanager/zalo/on-duty", notification(alert()))[0] == 503
        # another tool writes a fresh token into the file: the next message uses it
        (tmp_path / "secrets" / "access-token").write_text(zalo.access_token)
        wait_until(lambda: post(f"{url}/alertmanager/zalo/on-duty", notification(alert()))[0] == 200, 10,
                   what="the message with the token another tool renewed")
        metrics = collector_metrics(url)
        assert metric_value(metrics, "commune_collector_zalo_failures_total", recipients="on-duty",
                            reason="token_rejected") == 1
        assert zalo.access_token not in log_text(proc)
    finally:
        proc.stop()


def test_config_errors(tmp_path):
    from contract.schema import ConfigErrors, load_model

    with pytest.raises(ConfigErrors) as info:
        load_model(ZaloSection, {"enabled": True, "recipients": {"On Duty": ["abc"], "x": []},
                                 "api_url": "ftp://zalo", "max_attempts": 0})
    problems = {e.path: e.message for e in info.value.errors}
    assert problems == {
        "api_url": "'ftp://zalo' is not an http(s) URL",
        "access_token_file": "required when zalo.enabled is true",
        "webhook_token_file": "required when zalo.enabled is true",
        "recipients.On Duty": "group names are lower-case letters, digits, - and _",
        "recipients.On Duty[0]": "'abc' is not a Zalo user id (digits)",
        "recipients.x": "at least one Zalo user id is required",
        "max_attempts": "must be between 1 and 10",
    }
