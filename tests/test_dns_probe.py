"""The dns prober: a tiny DNS server on loopback for the named-server path, and the system resolver."""
from __future__ import annotations

import pytest

from agent.inputs.probes import dns
from tests.probe_servers import DNSServer, run_probes


@pytest.fixture
def server():
    s = DNSServer({"dichvucong.gov.vn": ["10.1.2.3", "10.1.2.4"],
                   "many.test": [f"10.0.{i // 250}.{i % 250}" for i in range(40)]}, truncate_over=20)
    yield s
    s.close()


def _config(modules, targets):
    return {"timeout": "5s", "interval": "10s", "modules": modules, "targets": targets}


def test_named_server_a_records_and_nxdomain(server):
    r = run_probes(_config({
        "dvc": {"prober": "dns", "dns": {"query_name": "dichvucong.gov.vn",
                                         "expected_addresses": ["10.1.2.4"],
                                         "fail_if_none_matches_regexp": [r"^10\.1\."]}},
        "wrong-ip": {"prober": "dns", "dns": {"query_name": "dichvucong.gov.vn", "expected_addresses": ["10.9.9.9"]}},
        "nx": {"prober": "dns", "dns": {"query_name": "nosuch.gov.vn"}},
        "nx-ok": {"prober": "dns", "dns": {"query_name": "nosuch.gov.vn", "valid_rcodes": ["NXDOMAIN"],
                                           "fail_if_no_answer": False}},
        "tcp": {"prober": "dns", "dns": {"query_name": "dichvucong.gov.vn", "transport": "tcp"}},
    }, [{"name": "dvc", "module": "dvc", "address": server.address, "service": "dichvucong"},
        {"name": "wrong-ip", "module": "wrong-ip", "address": server.address},
        {"name": "nx", "module": "nx", "address": server.address},
        {"name": "nx-ok", "module": "nx-ok", "address": server.address},
        {"name": "tcp", "module": "tcp", "address": server.address}]))
    assert r.get("probe_success", "dvc", module="dvc", hop="service") == 1
    assert r.get("commune_probe_target_info", "dvc", service="dichvucong", prober="dns") == 1
    assert r.get("probe_dns_answer_rrs", "dvc") == 2
    assert r.get("probe_dns_authority_rrs", "dvc") == 0
    assert r.get("probe_dns_rcode", "dvc") == 0
    assert r.get("probe_dns_lookup_time_seconds", "dvc") > 0
    assert r.get("probe_success", "wrong-ip") == 0
    assert r.get("probe_success", "nx") == 0
    assert r.get("probe_dns_rcode", "nx") == 3
    assert r.get("probe_success", "nx-ok") == 1
    assert r.get("probe_success", "tcp") == 1
    assert ("dichvucong.gov.vn", 1, "tcp") in server.queries


def test_truncated_udp_reply_is_retried_over_tcp(server):
    r = run_probes(_config({"many": {"prober": "dns", "dns": {"query_name": "many.test"}}},
                           [{"name": "many", "module": "many", "address": server.address}]))
    assert r.get("probe_success", "many") == 1
    assert r.get("probe_dns_answer_rrs", "many") == 40
    assert [q[2] for q in server.queries] == ["udp", "tcp"]


def test_silent_server_times_out():
    import socket

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))  # receives, never answers
    try:
        r = run_probes(_config({"q": {"prober": "dns", "timeout": "500ms", "dns": {"query_name": "x.test"}}},
                               [{"name": "silent", "module": "q", "address": f"127.0.0.1:{sink.getsockname()[1]}"}]))
    finally:
        sink.close()
    assert r.get("probe_success", "silent") == 0
    assert r.get("probe_dns_rcode", "silent") == -1
    assert 0.4 <= r.get("probe_duration_seconds", "silent") < 3


def test_system_resolver():
    r = run_probes(_config({"local": {"prober": "dns", "dns": {"query_name": "localhost"}},
                            "bad": {"prober": "dns", "dns": {"query_name": "no-such-host.invalid"}}},
                           [{"name": "localhost", "module": "local"},
                            {"name": "invalid", "module": "bad"}]))
    assert r.get("probe_success", "localhost") == 1
    assert r.get("probe_dns_answer_rrs", "localhost") >= 1
    assert r.get("probe_success", "invalid") == 0


def test_wire_format_round_trip():
    query = dns.build_query(0x1234, "dịch-vụ.example", "A")
    assert query[:2] == b"\x12\x34"
    assert b"xn--" in query  # IDNA for Vietnamese labels
    s = DNSServer({"a.test": ["192.0.2.1"]})
    try:
        reply = dns.parse_reply(s.answer(dns.build_query(7, "a.test", "A"), "udp"))
    finally:
        s.close()
    assert reply.id == 7 and reply.rcode == 0 and not reply.truncated
    assert reply.answers == [dns.Record("a.test.", "A", 300, "192.0.2.1")]
    with pytest.raises(ValueError):
        dns.parse_reply(b"\x00\x07\x01\x00")
