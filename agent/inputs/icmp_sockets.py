"""ICMP echo through icmplib's sockets (Linux and other non-Windows systems), and the choice
between unprivileged ICMP datagram sockets and raw ones. Windows uses agent/inputs/winicmp.py."""
from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import random
import select
import time
from typing import Dict, List, Optional, Tuple

from agent.inputs.icmp import NAME, EchoResult, resolve
from contract.schema import ConfigError, ConfigErrors

log = logging.getLogger("agent.inputs.icmp")

_ids = itertools.count(random.randrange(0x10000))


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a.split("%")[0]) == ipaddress.ip_address(b.split("%")[0])
    except ValueError:
        return False


class IcmplibPinger:
    """Sends the echoes of one probe with icmplib sockets and collects the replies.

    One socket per probe; requests leave at a fixed cadence while replies are read in between,
    so a slow reply does not delay the next request.
    """

    def __init__(self, privileged: bool, count: int, echo_interval: float, echo_timeout: float,
                 payload_size: int):
        self.privileged = privileged
        self.count = count
        self.echo_interval = echo_interval
        self.echo_timeout = echo_timeout
        self.payload_size = payload_size

    def __call__(self, address: str) -> EchoResult:
        from icmplib import ICMPLibError, ICMPv4Socket, ICMPv6Socket

        started = time.monotonic()
        try:
            resolved = resolve(address)
        except OSError as exc:
            return EchoResult(address, 0, [], time.monotonic() - started,
                              f"cannot resolve {address}: {exc.strerror or exc}")
        ipv6 = ipaddress.ip_address(resolved.split("%")[0]).version == 6
        try:
            sock = (ICMPv6Socket if ipv6 else ICMPv4Socket)(None, self.privileged)
        except ICMPLibError as exc:
            return EchoResult(resolved, 0, [], time.monotonic() - started, f"cannot open an ICMP socket: {exc}")
        try:
            return self._echoes(sock, resolved, ipv6)
        finally:
            sock.close()

    def _echoes(self, sock, address: str, ipv6: bool) -> EchoResult:
        from icmplib import ICMPLibError, ICMPRequest, TimeoutExceeded

        reply_type, error_types = (129, (1, 3)) if ipv6 else (0, (3, 11))
        ident = next(_ids) & 0xFFFF
        pending: Dict[int, Tuple[object, float]] = {}   # sequence -> (request, deadline)
        rtts: List[float] = []
        error: Optional[str] = None
        sent = 0
        start = time.monotonic()
        next_send = start
        last_event = start
        while True:
            now = time.monotonic()
            if sent < self.count and now >= next_send:
                request = ICMPRequest(address, ident, sent, payload_size=self.payload_size)
                try:
                    sock.send(request)
                    pending[sent] = (request, now + self.echo_timeout)
                    ident = request.id  # unprivileged Linux sockets: the kernel sets the id
                except ICMPLibError as exc:
                    error = f"cannot send to {address}: {exc}"
                    last_event = now
                sent += 1
                next_send = start + sent * self.echo_interval
                continue
            for seq in [s for s, (_, deadline) in pending.items() if deadline <= now]:
                del pending[seq]
                last_event = now
            if sent >= self.count and not pending:
                break
            wake = min([d for _, d in pending.values()] + ([next_send] if sent < self.count else []))
            if wake <= now:
                continue
            readable, _, _ = select.select([sock.sock], [], [], wake - now)
            if not readable:
                continue
            try:
                reply = sock.receive(None, max(wake - time.monotonic(), 0.001))
            except TimeoutExceeded:
                continue
            except ICMPLibError as exc:
                error = f"receiving from {address} failed: {exc}"
                break
            entry = pending.get(reply.sequence)
            if entry is None or reply.id != ident:
                continue
            if reply.type == reply_type:
                if reply.source is not None and not _same_address(reply.source, address):
                    continue
                del pending[reply.sequence]
                rtts.append(max(reply.time - entry[0].time, 0.0))
                last_event = time.monotonic()
            elif reply.type in error_types:
                del pending[reply.sequence]   # answered with unreachable / time exceeded: lost
                last_event = time.monotonic()
        return EchoResult(address, sent, rtts, last_event - start, error)


# ---------------------------------------------------------------- privileges

def _ping_group_range(proc_root: str = "/proc") -> str:
    try:
        with open(f"{proc_root}/sys/net/ipv4/ping_group_range") as fh:
            return " ".join(fh.read().split())
    except OSError:
        return "unknown"


def privilege_help() -> str:
    """What to change when the agent may open no ICMP socket at all (not Windows: see build)."""
    gid = os.getegid()
    return (f"ICMP needs either net.ipv4.ping_group_range covering gid {gid} (now "
            f"'{_ping_group_range()}'; fix: sysctl -w net.ipv4.ping_group_range='0 2147483647') "
            "or CAP_NET_RAW / running as root (e.g. AmbientCapabilities=CAP_NET_RAW in the systemd "
            "unit); or set icmp.enabled: false")


def choose_privileged(setting: str) -> bool:
    """Whether to use raw sockets, tried in the order ``auto`` implies; ConfigErrors if none works."""
    from icmplib import ICMPv4Socket, ICMPLibError, SocketPermissionError

    order = {"auto": [False, True], "false": [False], "true": [True]}[setting]
    problems = []
    for privileged in order:
        try:
            ICMPv4Socket(None, privileged).close()
            return privileged
        except SocketPermissionError:
            problems.append("raw sockets are not permitted" if privileged
                            else "unprivileged ICMP sockets are not permitted")
        except ICMPLibError as exc:
            problems.append(f"{'raw' if privileged else 'unprivileged'} ICMP socket: {exc}")
    raise ConfigErrors([ConfigError(f"{NAME}.privileged",
                                    f"privileged: {setting}: {'; '.join(problems)}. {privilege_help()}")])
