"""ICMP on Windows (agent/inputs/winicmp.py), on Linux: reply buffers packed with ``struct`` byte for
byte as Windows lays them out, the status codes, and the ICMP input's Windows path with the DLL
call (``winicmp.send_echo``) replaced by a fake returning such buffers. Nothing is sent anywhere.
What only Windows can confirm is listed in the module's docstring."""
from __future__ import annotations

import asyncio
import ctypes
import logging
import socket
import struct
import sys
import threading
import time

import pytest

from agent.inputs import icmp, winicmp
from contract.schema import load_model

# 64-bit ICMP_ECHO_REPLY: Address, Status, RoundTripTime (ULONG), DataSize, Reserved (USHORT), then at
# offset 16 (already 8-aligned) Data (8-byte pointer), Options {Ttl, Tos, Flags, OptionsSize, 4 bytes padding,
# OptionsData (8-byte pointer)}: 40 bytes.
REPLY64 = "<IIIHHQBBBB4xQ"
# ICMP_ECHO_REPLY32: Data and OptionsData are 4-byte pointers, no padding: 28 bytes.
REPLY32 = "<IIIHHIBBBBI"
# ICMPV6_ECHO_REPLY: IPV6_ADDRESS_EX packed {sin6_port, sin6_flowinfo, sin6_addr[16], sin6_scope_id}
# (26 bytes), 2 bytes padding, Status, RoundTripTime: 36 bytes.
REPLY6 = "<HI16sI2xII"

BUFFER_AT = 0x000001D2C4A80000   # where a 64-bit Windows heap might have put the reply buffer


def ipaddr(text: str) -> int:
    """IPAddr: the four address bytes in network order, read as a little-endian ULONG."""
    return struct.unpack("<I", socket.inet_aton(text))[0]


def reply4(address: str, status: int, rtt_ms: int, payload: bytes = b"", ttl: int = 64) -> bytes:
    """The buffer a 64-bit IcmpSendEcho2 leaves: one ICMP_ECHO_REPLY, then the echoed data."""
    head = struct.pack(REPLY64, ipaddr(address), status, rtt_ms, len(payload), 0,
                       BUFFER_AT + 40 if payload else 0, ttl, 0, 0, 0, 0)
    return head + payload + b"\0" * 8


def reply6(address: str, status: int, rtt_ms: int, payload: bytes = b"") -> bytes:
    return struct.pack(REPLY6, 0, 0, socket.inet_pton(socket.AF_INET6, address), 0, status, rtt_ms) + payload


# ---------------------------------------------------------------- layouts

@pytest.mark.skipif(ctypes.sizeof(ctypes.c_void_p) != 8, reason="the 64-bit layout needs a 64-bit Python")
def test_structures_have_the_windows_64_bit_layout():
    assert ctypes.sizeof(winicmp.ICMP_ECHO_REPLY) == struct.calcsize(REPLY64) == 40
    assert winicmp.ICMP_ECHO_REPLY.Data.offset == 16 and winicmp.ICMP_ECHO_REPLY.Options.offset == 24
    assert ctypes.sizeof(winicmp.IP_OPTION_INFORMATION) == 16


def test_structures_with_32_bit_pointers_and_ipv6():
    assert ctypes.sizeof(winicmp.ICMP_ECHO_REPLY32) == struct.calcsize(REPLY32) == 28
    assert ctypes.sizeof(winicmp.IP_OPTION_INFORMATION32) == 8
    assert ctypes.sizeof(winicmp.IPV6_ADDRESS_EX) == 26
    assert ctypes.sizeof(winicmp.ICMPV6_ECHO_REPLY) == struct.calcsize(REPLY6) == 36
    assert winicmp.ICMPV6_ECHO_REPLY.Status.offset == 28
    assert ctypes.sizeof(winicmp.SOCKADDR_IN6) == 28


# ---------------------------------------------------------------- parsers

@pytest.mark.skipif(ctypes.sizeof(ctypes.c_void_p) != 8, reason="the 64-bit layout needs a 64-bit Python")
def test_parse_64_bit_replies():
    payload = winicmp.PAYLOAD_PATTERN
    buf = reply4("192.168.1.1", 0, 3, payload)
    assert winicmp.parse_replies(buf, 1, ipv6=False) == [winicmp.Reply("192.168.1.1", 0, 3)]
    # two replies in one buffer (an array), then a count larger than the buffer holds
    two = struct.pack(REPLY64, ipaddr("10.0.0.1"), 0, 0, 0, 0, 0, 128, 0, 0, 0, 0) + \
        struct.pack(REPLY64, ipaddr("10.0.0.1"), 0, 12, 0, 0, 0, 128, 0, 0, 0, 0)
    assert winicmp.parse_replies(two, 2, ipv6=False) == [winicmp.Reply("10.0.0.1", 0, 0),
                                                         winicmp.Reply("10.0.0.1", 0, 12)]
    assert len(winicmp.parse_replies(two, 3, ipv6=False)) == 2
    assert winicmp.parse_replies(buf, 0, ipv6=False) == []


def test_parse_32_bit_layout_replies():
    buf = struct.pack(REPLY32, ipaddr("203.113.131.1"), 0, 27, 32, 0, 0x00C80040, 52, 0, 0, 0, 0)
    assert winicmp.parse_replies(buf, 1, ipv6=False, layout=winicmp.ICMP_ECHO_REPLY32) == [
        winicmp.Reply("203.113.131.1", 0, 27)]


def test_parse_ipv6_reply():
    buf = reply6("2001:ee0:4f1a::1", 0, 9, b"x" * 32)
    assert winicmp.parse_replies(buf, 1, ipv6=True) == [winicmp.Reply("2001:ee0:4f1a::1", 0, 9)]
    assert winicmp.parse_replies(buf[:35], 1, ipv6=True) == []   # torn: nothing rather than garbage


def test_echo_outcomes_and_their_reasons():
    ok = winicmp.echo_outcome(1, reply4("192.168.1.1", 0, 0), 0, ipv6=False)
    assert ok == winicmp.Echo(0.0, 0, "", False)   # sub-millisecond: Windows says 0 ms
    assert winicmp.echo_outcome(1, reply4("192.168.1.1", 0, 17), 0, ipv6=False).rtt == 0.017
    # IcmpSendEcho2 returned 0: GetLastError tells why
    assert winicmp.echo_outcome(0, b"\0" * 48, winicmp.IP_REQ_TIMED_OUT, ipv6=False) == winicmp.Echo(
        None, 11010, "request timed out (11010)", False)
    # a router answered with an ICMP error: lost, not this PC's fault
    for status, reason in [(11003, "destination host unreachable (11003)"),
                           (11002, "destination network unreachable (11002)"),
                           (11013, "TTL expired in transit (11013)")]:
        assert winicmp.echo_outcome(1, reply4("10.10.0.1", status, 0), 0, ipv6=False) == winicmp.Echo(
            None, status, reason, False)
    assert winicmp.echo_outcome(1, reply6("fe80::1", 11003, 0), 0, ipv6=True).reason == \
        "destination host unreachable (11003)"
    # this PC could not send it: the probe's error
    assert winicmp.echo_outcome(0, b"", winicmp.IP_GENERAL_FAILURE, ipv6=False) == winicmp.Echo(
        None, 11050, "general failure (11050)", True)
    assert winicmp.echo_outcome(0, b"", 87, ipv6=False) == winicmp.Echo(None, 87, "error 87", True)
    assert winicmp.echo_outcome(0, b"", 0, ipv6=True).status == winicmp.IP_GENERAL_FAILURE


# ---------------------------------------------------------------- the pinger and the ICMP input

class FakeIphlpapi:
    """Stands in for ``winicmp.send_echo``: answers per address from a list of (rtt ms or status)."""

    def __init__(self, answers):
        self.answers = {a: list(v) for a, v in answers.items()}
        self.calls = []
        self.lock = threading.Lock()

    def __call__(self, address, payload, timeout_ms):
        with self.lock:
            self.calls.append((address, len(payload), timeout_ms))
            kind, value = self.answers[address].pop(0)
        ipv6 = ":" in address
        if kind == "rtt":
            return 1, (reply6(address, 0, value, payload) if ipv6 else reply4(address, 0, value, payload)), 0
        if kind == "icmp_error":   # a router's unreachable / TTL exceeded, one reply with that status
            return 1, (reply6("fe80::1", value, 0) if ipv6 else reply4("127.0.0.254", value, 0)), 0
        return 0, b"\0" * 64, value   # the call returned 0; value is GetLastError()


ANSWERS = {
    "127.0.0.1": [("rtt", 0), ("rtt", 1), ("rtt", 3), ("fail", 11010), ("rtt", 2)],
    "::1": [("rtt", 5), ("rtt", 4), ("rtt", 6), ("rtt", 5), ("rtt", 5)],
    "127.0.0.5": [("icmp_error", 11003)] * 3 + [("fail", 11010)] * 2,
    "127.0.0.9": [("fail", 11050)] * 5,
}
RTTS = {"127.0.0.1": [0.0, 0.001, 0.003, 0.002], "::1": [0.005, 0.004, 0.006, 0.005, 0.005],
        "127.0.0.5": [], "127.0.0.9": []}
TARGETS = [("lan", "127.0.0.1", "gateway"), ("lan6", "::1", "isp"), ("gone", "127.0.0.5", "upstream"),
           ("broken", "127.0.0.9", "service")]


def section() -> icmp.Config:
    return load_model(icmp.Config, {
        "gateway": False, "count": 5, "echo_interval": "2ms", "echo_timeout": "300ms", "timeout": "2s",
        "payload_size": 40, "privileged": "false",
        "targets": [{"name": n, "address": a, "hop": h} for n, a, h in TARGETS]}, path="icmp")


def as_dict(samples):
    return {(s.name, frozenset(s.labels.items())): s.value for s in samples}


def test_windows_build_uses_the_icmp_api_and_emits_what_icmplib_would(monkeypatch, caplog):
    fake = FakeIphlpapi(ANSWERS)
    monkeypatch.setattr(winicmp, "send_echo", fake)
    monkeypatch.setattr(sys, "platform", "win32")
    inp, = icmp.build(section(), None)   # no icmplib socket is chosen or opened on Windows
    monkeypatch.setattr(sys, "platform", "linux")
    assert isinstance(inp.pinger, winicmp.WindowsPinger)
    with caplog.at_level(logging.WARNING, logger="agent.inputs.icmp"):
        windows = asyncio.run(inp.collect())
    assert sorted(fake.calls) == sorted((a, 40, 300) for _, a, _ in TARGETS for _ in range(5))
    assert "icmp: target broken (127.0.0.9): cannot send to 127.0.0.9: general failure (11050)" in caplog.text
    assert "gone" not in caplog.text   # unreachable is loss, as with icmplib, not an error

    # the icmplib path, handed the same results (and the same durations, which are measured)
    durations = {s.labels["target"]: s.value for s in windows if s.name == "probe_duration_seconds"}
    by_address = {a: n for n, a, _ in TARGETS}
    expected = icmp.IcmpInput(section(), lambda a: icmp.EchoResult(a, 5, RTTS[a], durations[by_address[a]]))
    assert as_dict(windows) == as_dict(asyncio.run(expected.collect()))

    m = as_dict(windows)
    lan = frozenset(dict(target="lan", address="127.0.0.1", hop="gateway").items())
    assert m[("commune_icmp_packet_loss_ratio", lan)] == 0.2
    assert m[("commune_icmp_rtt_min_seconds", lan)] == 0.0   # the sub-millisecond reply
    assert m[("commune_icmp_rtt_max_seconds", lan)] == 0.003
    assert m[("probe_success", frozenset(dict(target="gone", module="icmp", hop="upstream").items()))] == 0
    assert all(0 <= d < 1 for d in durations.values())


def test_a_lost_echo_does_not_delay_the_next():
    """Each call blocks until its timeout; the calls of a probe overlap, as icmplib's echoes do."""
    def lost(address, payload, timeout_ms):
        time.sleep(timeout_ms / 1000)
        return 0, b"", winicmp.IP_REQ_TIMED_OUT

    pinger = winicmp.WindowsPinger(count=4, echo_interval=0.02, echo_timeout=0.2, payload_size=0, send=lost)
    res = pinger("127.0.0.1")
    assert res.sent == 4 and res.rtts == [] and res.error is None
    assert 0.26 <= res.duration < 0.6   # (count - 1) x interval + timeout, not count x timeout


def test_resolution_failure_and_dll_failure_are_the_probe_error(monkeypatch):
    def no_handle(address, payload, timeout_ms):
        raise OSError(22, "IcmpCreateFile failed")

    res = winicmp.WindowsPinger(2, 0.001, 0.1, 8, send=no_handle)("127.0.0.1")
    assert res.sent == 2 and res.rtts == [] and res.error.startswith("cannot send to 127.0.0.1:")
    def unresolvable(address):   # no DNS query leaves this machine
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(winicmp, "resolve", unresolvable)
    res = winicmp.WindowsPinger(2, 0.001, 0.1, 8, send=no_handle)("no-such-host.invalid")
    assert res.sent == 0 and res.error.startswith("cannot resolve no-such-host.invalid")


def test_payload_is_the_configured_size():
    sizes = []

    def record(address, payload, timeout_ms):
        sizes.append(payload)
        return 1, reply4(address, 0, 1, payload), 0

    for n in (0, 32, 100):
        winicmp.WindowsPinger(1, 0.001, 0.1, n, send=record)("127.0.0.1")
    assert [len(p) for p in sizes] == [0, 32, 100]
    assert sizes[1] == winicmp.PAYLOAD_PATTERN
