"""The dns prober: resolve a name through the system resolver or ask a named DNS server.

With a server address, one query (RFC 1035 wire format, written here with the stdlib) goes over
UDP, retried over TCP when the reply is truncated, or over TCP from the start. Without one,
``getaddrinfo`` answers (A and AAAA only). ``probe_dns_lookup_time_seconds`` is the time from
sending the query to the parsed reply.
"""
from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import socket
import struct
from typing import List, NamedTuple, Tuple

from agent.inputs.probes import net
from agent.inputs.probes.net import ProbeFailure

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}
_TYPE_NAMES = {v: k for k, v in TYPES.items()}
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5}
_RCODE_NAMES = {v: k for k, v in RCODES.items()}


class Record(NamedTuple):
    name: str
    type: str
    ttl: int
    value: str


class Reply(NamedTuple):
    id: int
    truncated: bool
    rcode: int
    answers: List[Record]
    authority: int
    additional: int


# ---------------------------------------------------------------- wire format (pure)

def encode_name(name: str) -> bytes:
    name = name.rstrip(".")
    out = bytearray()
    if name:
        for label in name.split("."):
            raw = label.encode("idna") if not label.isascii() else label.encode("ascii")
            if not 0 < len(raw) < 64:
                raise ValueError(f"invalid DNS name {name!r}")
            out += bytes([len(raw)]) + raw
    return bytes(out + b"\x00")


def build_query(qid: int, name: str, qtype: str, recursion_desired: bool = True) -> bytes:
    flags = 0x0100 if recursion_desired else 0
    return struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", TYPES[qtype], 1)


def _read_name(msg: bytes, pos: int) -> Tuple[str, int]:
    labels: List[str] = []
    end = None
    for _ in range(128):  # bounds pointer loops
        length = msg[pos]
        if length & 0xC0 == 0xC0:
            if end is None:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | msg[pos + 1]
            continue
        pos += 1
        if length == 0:
            return ".".join(labels) + ".", (end if end is not None else pos)
        labels.append(msg[pos:pos + length].decode("ascii", errors="replace"))
        pos += length
    raise ValueError("DNS name compression loop")


def _rdata(msg: bytes, rtype: int, start: int, length: int) -> str:
    data = msg[start:start + length]
    if rtype == 1 and length == 4:
        return socket.inet_ntop(socket.AF_INET, data)
    if rtype == 28 and length == 16:
        return socket.inet_ntop(socket.AF_INET6, data)
    if rtype in (2, 5, 12):
        return _read_name(msg, start)[0]
    if rtype == 15:
        return f"{struct.unpack('!H', data[:2])[0]} {_read_name(msg, start + 2)[0]}"
    if rtype == 16:
        parts, i = [], 0
        while i < len(data):
            n = data[i]
            parts.append(data[i + 1:i + 1 + n].decode("utf-8", errors="replace"))
            i += 1 + n
        return "".join(parts)
    if rtype == 6:
        mname, pos = _read_name(msg, start)
        rname, pos = _read_name(msg, pos)
        return f"{mname} {rname} {struct.unpack('!I', msg[pos:pos + 4])[0]}"
    return data.hex()


def parse_reply(msg: bytes) -> Reply:
    """Parse a DNS reply; raises ValueError on a malformed message."""
    try:
        qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", msg[:12])
        pos = 12
        for _ in range(qd):
            _name, pos = _read_name(msg, pos)
            pos += 4
        answers = []
        for _ in range(an):
            name, pos = _read_name(msg, pos)
            rtype, _rclass, ttl, length = struct.unpack("!HHIH", msg[pos:pos + 10])
            pos += 10
            if pos + length > len(msg):
                raise ValueError("record runs past the end of the message")
            answers.append(Record(name, _TYPE_NAMES.get(rtype, str(rtype)), ttl, _rdata(msg, rtype, pos, length)))
            pos += length
    except (struct.error, IndexError) as exc:
        raise ValueError(f"malformed DNS reply: {exc}") from None
    if not flags & 0x8000:
        raise ValueError("malformed DNS reply: not a response")
    return Reply(qid, bool(flags & 0x0200), flags & 0x000F, answers, ns, ar)


# ---------------------------------------------------------------- prober

class Prepared:
    def __init__(self, module):
        opts = module.dns
        self.module = module
        self.opts = opts
        self.must = [re.compile(p) for p in opts.fail_if_none_matches_regexp]
        self.must_not = [re.compile(p) for p in opts.fail_if_matches_regexp]
        self.valid_rcodes = {RCODES[r] for r in opts.valid_rcodes}


async def probe(target, prepared: Prepared, result: net.Result) -> None:
    opts = prepared.opts
    for name in ("probe_dns_answer_rrs", "probe_dns_authority_rrs", "probe_dns_additional_rrs"):
        result.set(name, 0)
    result.set("probe_dns_rcode", -1)
    if target.address:
        values, rcode = await _ask_server(target, prepared, result)
    else:
        values, rcode = await _ask_system(opts, prepared.module.ip_protocol, result)
    result.set("probe_dns_rcode", rcode)
    if rcode not in prepared.valid_rcodes:
        raise ProbeFailure(f"rcode {_RCODE_NAMES.get(rcode, rcode)} is not accepted")
    if opts.fail_if_no_answer and not values:
        raise ProbeFailure(f"no {opts.query_type} record for {opts.query_name}")
    if opts.expected_addresses:
        got = {str(ipaddress.ip_address(v)) for v in values}
        missing = [a for a in opts.expected_addresses if str(ipaddress.ip_address(a)) not in got]
        if missing:
            raise ProbeFailure(f"expected address(es) {', '.join(missing)} not in the answer")
    for rx in prepared.must:
        if not any(rx.search(v) for v in values):
            raise ProbeFailure(f"no answer matched {rx.pattern!r}")
    for rx in prepared.must_not:
        if any(rx.search(v) for v in values):
            raise ProbeFailure(f"an answer matched {rx.pattern!r}")


async def _ask_system(opts, ip_protocol: str, result: net.Result) -> Tuple[List[str], int]:
    family = socket.AF_INET6 if opts.query_type == "AAAA" else socket.AF_INET
    watch = net.Stopwatch()
    try:
        infos = await net.getaddrinfo(opts.query_name, None, family)
    except socket.gaierror as exc:
        result.set("probe_dns_lookup_time_seconds", watch.lap())
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            return [], RCODES["NXDOMAIN"]
        raise ProbeFailure(f"the system resolver failed for {opts.query_name}: {exc.strerror}") from None
    result.set("probe_dns_lookup_time_seconds", watch.lap())
    values = sorted({info[4][0] for info in infos})
    result.set("probe_dns_answer_rrs", len(values))
    return values, 0


async def _ask_server(target, prepared: Prepared, result: net.Result) -> Tuple[List[str], int]:
    opts = prepared.opts
    host, port = net.split_host_port(target.address, 53)
    family, sockaddr = await net.resolve(host, port, prepared.module.ip_protocol)
    result.set("probe_ip_protocol", 6 if family == socket.AF_INET6 else 4)
    qid = int.from_bytes(os.urandom(2), "big")
    try:
        query = build_query(qid, opts.query_name, opts.query_type, opts.recursion_desired)
    except (ValueError, UnicodeError) as exc:
        raise ProbeFailure(f"cannot encode {opts.query_name!r}: {exc}") from None
    watch = net.Stopwatch()
    reply = None
    if opts.transport == "udp":
        reply = await _udp(family, sockaddr, query, qid)
    if reply is None or reply.truncated:
        reply = await _tcp(family, sockaddr, query, qid)
    result.set("probe_dns_lookup_time_seconds", watch.lap())
    result.set("probe_dns_answer_rrs", len(reply.answers))
    result.set("probe_dns_authority_rrs", reply.authority)
    result.set("probe_dns_additional_rrs", reply.additional)
    wanted = opts.query_type
    return [r.value for r in reply.answers if r.type == wanted], reply.rcode


class _UDPReply(asyncio.DatagramProtocol):
    """Keeps the first datagram that parses as the reply to ``qid`` (strays are ignored)."""

    def __init__(self, qid: int, future: asyncio.Future):
        self.qid = qid
        self.future = future

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            reply = parse_reply(data)
        except ValueError:
            return
        if reply.id == self.qid and not self.future.done():
            self.future.set_result(reply)

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable
        if not self.future.done():
            self.future.set_exception(exc)


async def _udp(family: int, sockaddr: tuple, query: bytes, qid: int) -> Reply:
    """One query over UDP (asyncio datagram endpoints work on the selector and proactor loops)."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    transport, _protocol = await loop.create_datagram_endpoint(
        lambda: _UDPReply(qid, future), remote_addr=sockaddr, family=family)
    try:
        transport.sendto(query)
        return await future
    finally:
        transport.close()


async def _tcp(family: int, sockaddr: tuple, query: bytes, qid: int) -> Reply:
    writer = None
    try:
        reader, writer = await net.connect(family, sockaddr)
        writer.write(struct.pack("!H", len(query)) + query)
        await writer.drain()
        length = struct.unpack("!H", await reader.readexactly(2))[0]
        try:
            reply = parse_reply(await reader.readexactly(length))
        except ValueError as exc:
            raise ProbeFailure(str(exc)) from None
        if reply.id != qid:
            raise ProbeFailure("the DNS reply over TCP has the wrong id")
        return reply
    finally:
        net.close(writer)
