"""The tcp prober against real loopback services: connect, refused, send/expect, TLS."""
from __future__ import annotations

import socket

import pytest

from tests.probe_servers import Certs, LineServer, run_probes


def _smtp_like(line: bytes):
    if line.strip().upper() == b"QUIT":
        return b"221 bye\r\n"
    if line.strip().upper().startswith(b"EHLO"):
        return b"250-hello\r\n250 OK\r\n"
    return b"500 what?\r\n"


@pytest.fixture
def smtp():
    server = LineServer(b"220 mail.commune.test ESMTP ready\r\n", _smtp_like)
    yield server
    server.close()


def _config(modules, targets):
    return {"timeout": "5s", "interval": "10s", "modules": modules, "targets": targets}


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there any more: connections are refused
    return port


def test_connect_success_and_refused(smtp):
    r = run_probes(_config({"connect": {"prober": "tcp"}},
                           [{"name": "up", "module": "connect", "address": smtp.address, "service": "mail"},
                            {"name": "down", "module": "connect", "address": f"127.0.0.1:{_closed_port()}"}]))
    assert r.get("probe_success", "up", module="connect", hop="service") == 1
    assert r.get("commune_probe_target_info", "up", service="mail", prober="tcp") == 1
    assert r.get("probe_ip_protocol", "up") == 4
    assert r.get("probe_dns_lookup_time_seconds", "up") >= 0
    assert r.get("probe_success", "down") == 0
    assert r.get("probe_duration_seconds", "down") >= 0
    assert not r.has("probe_failed_due_to_regex", "up")


def test_send_expect(smtp):
    r = run_probes(_config({
        "smtp": {"prober": "tcp", "tcp": {"query_response": [
            {"expect": "^220 "}, {"send": "EHLO agent"}, {"expect": "^250 OK"}, {"send": "QUIT"},
            {"expect": "^221"}]}},
        "wrong": {"prober": "tcp", "timeout": "1s", "tcp": {"query_response": [{"expect": "^SSH-2.0"}]}},
    }, [{"name": "smtp", "module": "smtp", "address": smtp.address},
        {"name": "not-ssh", "module": "wrong", "address": smtp.address}]))
    assert r.get("probe_success", "smtp") == 1
    assert r.get("probe_failed_due_to_regex", "smtp") == 0
    assert r.get("probe_success", "not-ssh") == 0  # no line matched before the 1s timeout
    assert 0.9 <= r.get("probe_duration_seconds", "not-ssh") < 4


def test_expect_fails_when_the_server_closes(smtp):
    server = LineServer(b"hello\r\n", lambda line: None)
    try:
        r = run_probes(_config({"m": {"prober": "tcp", "tcp": {"query_response": [
            {"send": "anything"}, {"expect": "^never"}]}}},
            [{"name": "closes", "module": "m", "address": server.address}]))
    finally:
        server.close()
    assert r.get("probe_success", "closes") == 0
    assert r.get("probe_failed_due_to_regex", "closes") == 1


def test_tls(tmp_path):
    certs = Certs(tmp_path)
    server = LineServer(b"* OK IMAP ready\r\n", lambda line: None, tls=certs.server_context("valid"))
    try:
        r = run_probes(_config({
            "imaps": {"prober": "tcp", "tcp": {"tls": True, "tls_config": {"ca_file": certs.ca_file},
                                               "query_response": [{"expect": r"^\* OK"}]}},
            "untrusted": {"prober": "tcp", "tcp": {"tls": True}}},
            [{"name": "imaps", "module": "imaps", "address": server.address},
             {"name": "untrusted", "module": "untrusted", "address": server.address}]))
    finally:
        server.close()
    assert r.get("probe_success", "imaps") == 1
    assert r.get("probe_ssl_earliest_cert_expiry", "imaps") == certs.valid_not_after.timestamp()
    assert r.get("probe_tls_version_info", "imaps", version="TLS 1.3") == 1
    assert r.get("probe_success", "untrusted") == 0
