"""ICMP echo on Windows through the ICMP API of iphlpapi.dll (ctypes), used by agent/inputs/icmp.py.

icmplib needs raw sockets on Windows, which the service account (LocalService) does not have.
``IcmpSendEcho2`` (IPv4) and ``Icmp6SendEcho2`` (IPv6) need no privilege: they are what
``ping.exe`` uses. Each call sends one echo request and blocks until its reply or the timeout;
:class:`WindowsPinger` starts the ``count`` calls of a probe at the same cadence as the icmplib
pinger (one thread each, so a lost echo does not delay the next) and returns the same
:class:`agent.inputs.icmp.EchoResult`, so the Windows probe feeds the same ``commune_icmp_*``,
``probe_success`` and ``probe_duration_seconds`` series.

Three parts, kept apart:

- the structures, after the documented layouts in ``ipexport.h``: ``ICMP_ECHO_REPLY`` (native
  pointers: 40 bytes in a 64-bit process, 28 in a 32-bit one), ``ICMP_ECHO_REPLY32`` (32-bit
  pointers, 28 bytes, what ``IcmpParseReplies`` writes on 64-bit Windows), ``IP_OPTION_INFORMATION``
  and ``ICMPV6_ECHO_REPLY`` (``IPV6_ADDRESS_EX`` is packed to 26 bytes, so the reply is 36 bytes).
  Fixed-width ctypes types stand for ULONG/USHORT/UCHAR: ``c_ulong`` is 8 bytes on Linux, where
  the tests run, and 4 on Windows;
- pure parsers: :func:`parse_replies` (the reply buffer and the count the call returned ->
  address, IP_STATUS, round-trip ms per reply) and :func:`echo_outcome` (one call -> a round-trip
  time or why there was none);
- the I/O seam :func:`send_echo`, the only code that loads iphlpapi.dll, called only on Windows.

Round-trip times are what Windows measures, in whole milliseconds (``RoundTripTime``, ULONG):
a reply within a millisecond reads 0 (``ping.exe`` prints ``<1ms``), so on a LAN the minimum,
mean and jitter of the gateway are quantised to 1 ms and often 0. They are reported as Windows
gives them, not replaced by a timer around the call (which would add thread and DLL overhead).

Tested here, on Linux: the structure sizes and field offsets against reply buffers packed with
``struct`` byte for byte as Windows lays them out (64-bit ``ICMP_ECHO_REPLY``, ``ICMP_ECHO_REPLY32``,
``ICMPV6_ECHO_REPLY``), the status codes and their reasons, and the whole ICMP input with
:func:`send_echo` replaced by a fake returning such buffers. Only Windows can confirm: that the
synchronous ``IcmpSendEcho2`` in a 64-bit process fills the buffer with the native 40-byte
``ICMP_ECHO_REPLY`` (Microsoft's page for ``IcmpParseReplies`` says ICMP_ECHO_REPLY32 for
64-bit platforms; that is the asynchronous path, not used here), the argument types of the
ctypes calls, that LocalService may call them, ``GetLastError`` values on timeouts, and scope
ids of link-local IPv6 gateways (``fe80::1%12``, the interface index).
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import ipaddress
import socket
import struct
import time
from typing import Callable, List, NamedTuple, Optional, Tuple

from agent.inputs.icmp import EchoResult, resolve

# IP_STATUS codes (ipexport.h). IPv6 names share the numbers: 11002 IP_DEST_NO_ROUTE,
# 11003 IP_DEST_ADDR_UNREACHABLE, 11004 IP_DEST_PROHIBITED, 11013 IP_HOP_LIMIT_EXCEEDED.
IP_SUCCESS = 0
IP_BUF_TOO_SMALL = 11001
IP_DEST_NET_UNREACHABLE = 11002
IP_DEST_HOST_UNREACHABLE = 11003
IP_DEST_PROT_UNREACHABLE = 11004
IP_DEST_PORT_UNREACHABLE = 11005
IP_NO_RESOURCES = 11006
IP_BAD_OPTION = 11007
IP_HW_ERROR = 11008
IP_PACKET_TOO_BIG = 11009
IP_REQ_TIMED_OUT = 11010
IP_BAD_REQ = 11011
IP_BAD_ROUTE = 11012
IP_TTL_EXPIRED_TRANSIT = 11013
IP_TTL_EXPIRED_REASSEM = 11014
IP_PARAM_PROBLEM = 11015
IP_SOURCE_QUENCH = 11016
IP_OPTION_TOO_BIG = 11017
IP_BAD_DESTINATION = 11018
IP_DEST_UNREACHABLE = 11040
IP_TIME_EXCEEDED = 11041
IP_BAD_HEADER = 11042
IP_UNRECOGNIZED_NEXT_HEADER = 11043
IP_ICMP_ERROR = 11044
IP_DEST_SCOPE_MISMATCH = 11045
IP_GENERAL_FAILURE = 11050

# The network answered, but not with an echo reply: the echo is lost, as with icmplib.
NO_REPLY = {
    IP_DEST_NET_UNREACHABLE: "destination network unreachable",
    IP_DEST_HOST_UNREACHABLE: "destination host unreachable",
    IP_DEST_PROT_UNREACHABLE: "destination protocol unreachable",
    IP_DEST_PORT_UNREACHABLE: "destination port unreachable",
    IP_PACKET_TOO_BIG: "packet too big",
    IP_REQ_TIMED_OUT: "request timed out",
    IP_TTL_EXPIRED_TRANSIT: "TTL expired in transit",
    IP_TTL_EXPIRED_REASSEM: "TTL expired during fragment reassembly",
    IP_PARAM_PROBLEM: "parameter problem",
    IP_SOURCE_QUENCH: "source quench",
    IP_DEST_UNREACHABLE: "destination unreachable",
    IP_TIME_EXCEEDED: "time exceeded",
    IP_BAD_HEADER: "bad header",
    IP_UNRECOGNIZED_NEXT_HEADER: "unrecognised next header",
    IP_ICMP_ERROR: "ICMP error",
    IP_DEST_SCOPE_MISMATCH: "destination scope mismatch",
}
# This PC could not send the request: also lost, and logged as the probe's error.
LOCAL_FAILURE = {
    IP_BUF_TOO_SMALL: "reply buffer too small",
    IP_NO_RESOURCES: "insufficient IP resources",
    IP_BAD_OPTION: "bad IP option",
    IP_HW_ERROR: "hardware error",
    IP_BAD_REQ: "bad request",
    IP_BAD_ROUTE: "bad route",
    IP_OPTION_TOO_BIG: "IP option too big",
    IP_BAD_DESTINATION: "bad destination",
    IP_GENERAL_FAILURE: "general failure",
}

AF_INET6_WINDOWS = 23   # ws2def.h (10 on Linux)
MAX_IP_OPTIONS = 40     # bytes of IP options a reply may carry after the structures
ICMP_ERROR_DATA = 8     # the documented extra room for an ICMP error message
PAYLOAD_PATTERN = b"abcdefghijklmnopqrstuvwabcdefghi"  # what ping.exe sends


# ---------------------------------------------------------------- structures (ipexport.h, ws2ipdef.h)

class IP_OPTION_INFORMATION(ctypes.Structure):
    _fields_ = [("Ttl", ctypes.c_uint8), ("Tos", ctypes.c_uint8), ("Flags", ctypes.c_uint8),
                ("OptionsSize", ctypes.c_uint8), ("OptionsData", ctypes.c_void_p)]


class IP_OPTION_INFORMATION32(ctypes.Structure):
    _fields_ = [("Ttl", ctypes.c_uint8), ("Tos", ctypes.c_uint8), ("Flags", ctypes.c_uint8),
                ("OptionsSize", ctypes.c_uint8), ("OptionsData", ctypes.c_uint32)]  # UCHAR * POINTER_32


class ICMP_ECHO_REPLY(ctypes.Structure):
    _fields_ = [("Address", ctypes.c_uint32),        # IPAddr: the address bytes in network order
                ("Status", ctypes.c_uint32),         # IP_STATUS
                ("RoundTripTime", ctypes.c_uint32),  # milliseconds
                ("DataSize", ctypes.c_uint16), ("Reserved", ctypes.c_uint16),
                ("Data", ctypes.c_void_p), ("Options", IP_OPTION_INFORMATION)]


class ICMP_ECHO_REPLY32(ctypes.Structure):
    _fields_ = [("Address", ctypes.c_uint32), ("Status", ctypes.c_uint32), ("RoundTripTime", ctypes.c_uint32),
                ("DataSize", ctypes.c_uint16), ("Reserved", ctypes.c_uint16),
                ("Data", ctypes.c_uint32),           # VOID * POINTER_32
                ("Options", IP_OPTION_INFORMATION32)]


class IPV6_ADDRESS_EX(ctypes.Structure):
    _pack_ = 1   # #include <pshpack1.h> in ipexport.h
    _fields_ = [("sin6_port", ctypes.c_uint16), ("sin6_flowinfo", ctypes.c_uint32),
                ("sin6_addr", ctypes.c_uint8 * 16), ("sin6_scope_id", ctypes.c_uint32)]


class ICMPV6_ECHO_REPLY(ctypes.Structure):
    _fields_ = [("Address", IPV6_ADDRESS_EX), ("Status", ctypes.c_uint32), ("RoundTripTime", ctypes.c_uint32)]


class SOCKADDR_IN6(ctypes.Structure):   # ws2ipdef.h, 28 bytes
    _fields_ = [("sin6_family", ctypes.c_uint16), ("sin6_port", ctypes.c_uint16),
                ("sin6_flowinfo", ctypes.c_uint32), ("sin6_addr", ctypes.c_uint8 * 16),
                ("sin6_scope_id", ctypes.c_uint32)]


# ---------------------------------------------------------------- pure parsers

class Reply(NamedTuple):
    address: str   # who answered: the target, or a router reporting an error
    status: int    # IP_STATUS
    rtt_ms: int    # whole milliseconds; 0 for a reply within a millisecond


class Echo(NamedTuple):
    rtt: Optional[float]   # seconds, None when there was no echo reply
    status: int            # IP_STATUS, or the Win32 error of a call that failed
    reason: str            # "" for a reply
    local: bool            # True: this PC could not send it (the probe's error), not the network


def parse_replies(buffer: bytes, count: int, ipv6: bool, layout=ICMP_ECHO_REPLY) -> List[Reply]:
    """The ``count`` replies at the start of a reply buffer (IPv4: an array of ``layout``; IPv6:
    one ``ICMPV6_ECHO_REPLY``, as ``Icmp6ParseReplies`` always counts one)."""
    out: List[Reply] = []
    if ipv6:
        if count and len(buffer) >= ctypes.sizeof(ICMPV6_ECHO_REPLY):
            r = ICMPV6_ECHO_REPLY.from_buffer_copy(buffer)
            address = str(ipaddress.IPv6Address(bytes(r.Address.sin6_addr)))
            out.append(Reply(address, r.Status, r.RoundTripTime))
        return out
    size = ctypes.sizeof(layout)
    for i in range(count):
        if len(buffer) < (i + 1) * size:
            break
        r = layout.from_buffer_copy(buffer, i * size)
        out.append(Reply(socket.inet_ntoa(struct.pack("<I", r.Address)), r.Status, r.RoundTripTime))
    return out


def describe(status: int) -> str:
    if status == IP_SUCCESS:
        return ""
    reason = NO_REPLY.get(status) or LOCAL_FAILURE.get(status)
    return f"{reason} ({status})" if reason else f"error {status}"


def echo_outcome(count: int, buffer: bytes, last_error: int, ipv6: bool, layout=ICMP_ECHO_REPLY) -> Echo:
    """What one ``IcmpSendEcho2``/``Icmp6SendEcho2`` call says: its return value (replies in the
    buffer), the buffer, and ``GetLastError()`` when it returned 0 (11010 on a timeout)."""
    replies = parse_replies(buffer, count, ipv6, layout)
    if not replies:
        status = last_error or IP_GENERAL_FAILURE
        return Echo(None, status, describe(status), status not in NO_REPLY)
    for reply in replies:
        if reply.status == IP_SUCCESS:
            return Echo(reply.rtt_ms / 1000.0, IP_SUCCESS, "", False)
    status = replies[0].status
    return Echo(None, status, describe(status), status not in NO_REPLY)


# ---------------------------------------------------------------- the I/O seam (Windows only)

SendEcho = Callable[[str, bytes, int], Tuple[int, bytes, int]]
_dll = None


def _iphlpapi():
    global _dll
    if _dll is None:
        from ctypes import wintypes

        dll = ctypes.WinDLL("iphlpapi", use_last_error=True)
        for name in ("IcmpCreateFile", "Icmp6CreateFile"):
            getattr(dll, name).argtypes = []
            getattr(dll, name).restype = wintypes.HANDLE
        dll.IcmpCloseHandle.argtypes = [wintypes.HANDLE]
        dll.IcmpCloseHandle.restype = wintypes.BOOL
        # handle, Event, ApcRoutine, ApcContext, DestinationAddress (IPAddr), RequestData,
        # RequestSize, RequestOptions, ReplyBuffer, ReplySize, Timeout (ms)
        dll.IcmpSendEcho2.argtypes = [wintypes.HANDLE, wintypes.HANDLE, ctypes.c_void_p, ctypes.c_void_p,
                                      ctypes.c_uint32, ctypes.c_void_p, wintypes.WORD, ctypes.c_void_p,
                                      ctypes.c_void_p, wintypes.DWORD, wintypes.DWORD]
        dll.IcmpSendEcho2.restype = wintypes.DWORD
        # handle, Event, ApcRoutine, ApcContext, SourceAddress, DestinationAddress, RequestData,
        # RequestSize, RequestOptions, ReplyBuffer, ReplySize, Timeout (ms)
        dll.Icmp6SendEcho2.argtypes = [wintypes.HANDLE, wintypes.HANDLE, ctypes.c_void_p, ctypes.c_void_p,
                                       ctypes.POINTER(SOCKADDR_IN6), ctypes.POINTER(SOCKADDR_IN6),
                                       ctypes.c_void_p, wintypes.WORD, ctypes.c_void_p, ctypes.c_void_p,
                                       wintypes.DWORD, wintypes.DWORD]
        dll.Icmp6SendEcho2.restype = wintypes.DWORD
        _dll = dll
    return _dll


def send_echo(address: str, payload: bytes, timeout_ms: int) -> Tuple[int, bytes, int]:
    """One synchronous echo to an IP address (IPv6 with an optional ``%interface-index``):
    (the call's return value, the reply buffer, GetLastError() when it returned 0)."""
    dll = _iphlpapi()
    host, _, scope = address.partition("%")
    ip = ipaddress.ip_address(host)
    ipv6 = ip.version == 6
    size = ctypes.sizeof(ICMPV6_ECHO_REPLY if ipv6 else ICMP_ECHO_REPLY) + len(payload) + ICMP_ERROR_DATA \
        + MAX_IP_OPTIONS
    reply = ctypes.create_string_buffer(size)
    data = ctypes.create_string_buffer(payload, max(len(payload), 1))
    handle = dll.Icmp6CreateFile() if ipv6 else dll.IcmpCreateFile()
    if not handle or handle == ctypes.c_void_p(-1).value:   # INVALID_HANDLE_VALUE
        raise ctypes.WinError(ctypes.get_last_error())
    try:
        if ipv6:
            source = SOCKADDR_IN6(sin6_family=AF_INET6_WINDOWS)   # the unspecified address: any
            dest = SOCKADDR_IN6(sin6_family=AF_INET6_WINDOWS,
                                sin6_addr=(ctypes.c_uint8 * 16)(*ip.packed),
                                sin6_scope_id=int(scope) if scope.isdigit() else 0)
            n = dll.Icmp6SendEcho2(handle, None, None, None, ctypes.byref(source), ctypes.byref(dest),
                                   data, len(payload), None, reply, size, timeout_ms)
        else:
            n = dll.IcmpSendEcho2(handle, None, None, None, struct.unpack("<I", ip.packed)[0],
                                  data, len(payload), None, reply, size, timeout_ms)
        return n, reply.raw, 0 if n else ctypes.get_last_error()
    finally:
        dll.IcmpCloseHandle(handle)


# ---------------------------------------------------------------- one probe

class WindowsPinger:
    """The ``count`` echoes of one probe, each a blocking ``send`` call started at its cadence."""

    def __init__(self, count: int, echo_interval: float, echo_timeout: float, payload_size: int,
                 send: Optional[SendEcho] = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.count = count
        self.echo_interval = echo_interval
        self.timeout_ms = max(1, round(echo_timeout * 1000))
        reps = payload_size // len(PAYLOAD_PATTERN) + 1
        self.payload = (PAYLOAD_PATTERN * reps)[:payload_size]
        self.send = send or send_echo
        self.clock = clock
        self.sleep = sleep

    def _one(self, address: str, ipv6: bool) -> Tuple[Echo, float]:
        try:
            count, buffer, last_error = self.send(address, self.payload, self.timeout_ms)
            echo = echo_outcome(count, buffer, last_error, ipv6)
        except OSError as exc:   # IcmpCreateFile failed
            echo = Echo(None, getattr(exc, "winerror", None) or 0, str(exc), True)
        return echo, self.clock()

    def __call__(self, address: str) -> EchoResult:
        started = self.clock()
        try:
            resolved = resolve(address)
        except OSError as exc:
            return EchoResult(address, 0, [], self.clock() - started,
                              f"cannot resolve {address}: {exc.strerror or exc}")
        ipv6 = ipaddress.ip_address(resolved.split("%")[0]).version == 6
        start = self.clock()
        with concurrent.futures.ThreadPoolExecutor(self.count, thread_name_prefix="winicmp") as pool:
            futures = []
            for i in range(self.count):
                wait = start + i * self.echo_interval - self.clock()
                if wait > 0:
                    self.sleep(wait)
                futures.append(pool.submit(self._one, resolved, ipv6))
            done = [f.result() for f in futures]
        rtts = [echo.rtt for echo, _ in done if echo.rtt is not None]
        failures = [echo.reason for echo, _ in done if echo.local]
        error = f"cannot send to {resolved}: {failures[-1]}" if failures else None
        return EchoResult(resolved, self.count, rtts, max(end for _, end in done) - start, error)
