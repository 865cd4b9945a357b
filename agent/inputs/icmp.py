"""ICMP echo probes: RTT, jitter and packet loss per target, the gateway found itself.

Linux and other Unixes ping with icmplib; this is the only module of the project that imports it
(inside functions, not at the top). Windows pings through the ICMP API of iphlpapi.dll
(agent/inputs/winicmp.py), which needs no raw socket and so works under the LocalService
account; both return an :class:`EchoResult` and feed the same series. On Windows round-trip
times have 1 ms resolution and a reply within a millisecond reads 0 (see winicmp.py).

A probe of a target sends ``count`` echo requests at a fixed cadence of ``echo_interval`` (like
``ping -i``), each waiting at most ``echo_timeout`` for its reply, so a probe never lasts longer
than ``(count - 1) * echo_interval + echo_timeout``. From the replies it reports the shortest,
mean and longest round-trip time, the jitter as the population standard deviation of the
round-trip times (what ``ping`` prints as ``mdev``), and the share of requests without a reply.

Every target has a ``hop`` label (``gateway``, ``isp``, ``upstream``, ``service``) so that rules
can tell where a fault sits. With ``gateway: true`` (the default, also with no config file) the
default gateway of each address family is looked up before every probe round (Linux: ``/proc``;
Windows: ``route print``, re-read every five minutes or when the gateway stopped answering) and
probed as target ``gateway`` (IPv4) / ``gateway-ipv6`` with hop ``gateway``.

Sockets (icmplib, not Windows): unprivileged ICMP datagram sockets where the OS allows them (Linux
with ``net.ipv4.ping_group_range`` covering the agent's group), raw sockets when privileged
(root, CAP_NET_RAW). ``privileged: auto`` tries the first, then the second, and the agent refuses
to start with the fix spelled out when neither works. Windows ignores ``privileged``.

Run once by hand (prints the samples in the exposition format)::

    commune-agent icmp [-c agent.yaml]      (agent/tools.py)
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import re
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Literal, NamedTuple, Optional, Tuple

from agent.inputs import gateway as gateway_mod
from agent.inputs.base import InputSection
from contract.samples import Sample, sample
from contract.schema import ConfigErrors, Duration

NAME = "icmp"
MODULE = "icmp"  # the module label of probe_success, shared with the http/tcp/dns probers

Hop = Literal["gateway", "isp", "upstream", "service"]

GATEWAY_TARGETS = {4: "gateway", 6: "gateway-ipv6"}
# Replies are read into 1024-byte buffers (icmplib): IPv4 header 20 + ICMP header 8 + payload.
MAX_PAYLOAD = 996
WINDOWS_GATEWAY_TTL = 300.0

log = logging.getLogger(__name__)

_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.?)+$")
_LABEL_VALUE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


@dataclass
class Target:
    # Value of the target label; unique within the icmp section.
    name: str
    # IPv4 or IPv6 address (fe80::1%eth0 for link-local) or a host name (resolved every probe,
    # IPv4 first).
    address: str
    # Where the target sits: gateway (the office router), isp (the provider's first hop or DNS),
    # upstream (beyond the ISP, e.g. the province data center), service (a server staff use).
    hop: Hop

    def validate(self) -> Iterator[tuple]:
        if not _LABEL_VALUE_RE.match(self.name):
            yield "name", (f"must be 1-64 letters, digits or _ . : - (it becomes the target label), "
                           f"got {self.name!r}")
        if not (_is_ip(self.address) or _HOSTNAME_RE.match(self.address)):
            yield "address", f"expected an IP address or a host name, got {self.address!r}"


@dataclass
class Config(InputSection):
    interval: Duration = Duration(30)
    timeout: Duration = Duration(10)
    # Probe the default gateway of each address family (found automatically) with hop="gateway".
    gateway: bool = True
    # Echo requests per probe of each target.
    count: int = 5
    # Time between two echo requests of one probe.
    echo_interval: Duration = Duration(1)
    # How long each echo request waits for its reply before it counts as lost.
    echo_timeout: Duration = Duration(2)
    # Bytes of payload in each echo request (0 to 996).
    payload_size: int = 56
    # auto: unprivileged ICMP sockets if the OS allows them, else raw sockets;
    # true: raw sockets only (root / CAP_NET_RAW); false: unprivileged sockets only.
    # Ignored on Windows, which pings through the ICMP API (no privilege needed).
    privileged: Literal["auto", "true", "false"] = "auto"
    targets: List[Target] = field(default_factory=list)

    def validate(self) -> Iterator[tuple]:
        yield from super().validate()
        if self.count < 1:
            yield "count", f"must be at least 1, got {self.count}"
        if self.echo_interval <= 0:
            yield "echo_interval", "must be greater than 0s"
        if self.echo_timeout <= 0:
            yield "echo_timeout", "must be greater than 0s"
        if not 0 <= self.payload_size <= MAX_PAYLOAD:
            yield "payload_size", f"must be between 0 and {MAX_PAYLOAD} bytes, got {self.payload_size}"
        if self.count >= 1 and self.echo_interval > 0 and self.echo_timeout > 0:
            longest = (self.count - 1) * self.echo_interval + self.echo_timeout
            if self.timeout <= longest:
                yield "timeout", (f"must be longer than the longest probe, (count - 1) x echo_interval + "
                                  f"echo_timeout = {self.count - 1} x {self.echo_interval:g}s + "
                                  f"{self.echo_timeout:g}s = {longest:g}s, got {self.timeout:g}s")
        seen: Dict[str, int] = {}
        reserved = set(GATEWAY_TARGETS.values()) if self.gateway else set()
        for i, t in enumerate(self.targets):
            if t.name in seen:
                yield f"targets[{i}].name", f"{t.name!r} is already the name of targets[{seen[t.name]}]"
            elif t.name in reserved:
                yield f"targets[{i}].name", (f"{t.name!r} is reserved for the automatic gateway probe "
                                             "(gateway: true); choose another name")
            seen.setdefault(t.name, i)


# ---------------------------------------------------------------- one probe: echoes and statistics

class EchoResult(NamedTuple):
    address: str                 # the address that was pinged (resolved if a name was given)
    sent: int                    # echo requests attempted
    rtts: List[float]            # seconds, one per reply
    duration: float              # seconds from the first request to the last reply or timeout
    error: Optional[str] = None  # why nothing could be sent or the socket failed


class Stats(NamedTuple):
    rtt_min: float
    rtt_avg: float
    rtt_max: float
    jitter: float   # population standard deviation of the round-trip times


def rtt_stats(rtts: List[float]) -> Optional[Stats]:
    """Min, mean, max and population standard deviation (ping's mdev); None without replies."""
    if not rtts:
        return None
    return Stats(min(rtts), statistics.fmean(rtts), max(rtts), statistics.pstdev(rtts))


def loss_ratio(sent: int, received: int) -> float:
    return (sent - received) / sent if sent else 1.0


def resolve(address: str) -> str:
    """An IP literal as is; a host name to its first IPv4 address, else its first IPv6 address."""
    if _is_ip(address.split("%")[0]):
        return address
    infos = socket.getaddrinfo(address, None, type=socket.SOCK_DGRAM)
    for family in (socket.AF_INET, socket.AF_INET6):
        for info in infos:
            if info[0] == family:
                return info[4][0]
    raise OSError(f"{address} has no IPv4 or IPv6 address")


# ---------------------------------------------------------------- the input

class GatewayFinder:
    """The default gateways, re-read every ``ttl`` seconds or after the gateway stopped answering."""

    def __init__(self, read: Callable[[], List[gateway_mod.Gateway]] = gateway_mod.default_gateways,
                 ttl: float = WINDOWS_GATEWAY_TTL if sys.platform == "win32" else 0.0,
                 clock: Callable[[], float] = time.monotonic):
        self.read, self.ttl, self.clock = read, ttl, clock
        self._cached: Optional[List[gateway_mod.Gateway]] = None
        self._at = 0.0

    def __call__(self) -> List[gateway_mod.Gateway]:
        if self._cached is None or self.clock() - self._at >= self.ttl:
            self._cached, self._at = list(self.read()), self.clock()
        return self._cached

    def invalidate(self) -> None:
        self._cached = None


class IcmpInput:
    def __init__(self, section: Config, pinger: Callable[[str], EchoResult],
                 find_gateways: Optional[Callable[[], List[gateway_mod.Gateway]]] = None):
        self.name = NAME
        self.interval = section.interval
        self.timeout = section.timeout
        self.targets = [(t.name, t.address, t.hop) for t in section.targets]
        self.pinger = pinger
        self.find_gateways = (find_gateways or GatewayFinder()) if section.gateway else None
        self._counters: Dict[Tuple[str, str, str], List[int]] = {}
        self._errors: Dict[str, Optional[str]] = {}
        self._gateway_found: Optional[bool] = None
        # One thread per target (and gateway) so that every probe of a round runs at once: the
        # default executor has as few as 5 threads, which would make many targets overrun timeout.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=len(self.targets) + len(GATEWAY_TARGETS) + 1, thread_name_prefix="icmp")

    async def collect(self) -> List[Sample]:
        loop = asyncio.get_running_loop()
        out: List[Sample] = []
        targets = list(self.targets)
        if self.find_gateways is not None:
            gateways = await loop.run_in_executor(self._executor, self.find_gateways)
            self._note_gateways(gateways)
            out.append(sample("commune_icmp_default_gateway_found", 1 if gateways else 0))
            targets += [(GATEWAY_TARGETS[g.family], g.address, "gateway") for g in gateways]
        results = await asyncio.gather(*(loop.run_in_executor(self._executor, self.pinger, address)
                                         for _, address, _ in targets))
        gateway_silent = False
        for (name, address, hop), res in zip(targets, results):
            out.extend(self._samples(name, address, hop, res))
            if hop == "gateway" and name in GATEWAY_TARGETS.values() and not res.rtts:
                gateway_silent = True
        if gateway_silent and isinstance(self.find_gateways, GatewayFinder):
            self.find_gateways.invalidate()  # the gateway may have changed: look again next round
        return out

    def _note_gateways(self, gateways) -> None:
        found = bool(gateways)
        if found == self._gateway_found:
            return
        if not found:
            where = "route print" if sys.platform == "win32" else "/proc/net/route and /proc/net/ipv6_route"
            log.warning("icmp: no default gateway in %s; the gateway probe waits for one "
                        "(commune_icmp_default_gateway_found 0)", where)
        else:
            log.info("icmp: probing default gateway %s", ", ".join(g.address for g in gateways))
        self._gateway_found = found

    def _samples(self, name: str, address: str, hop: str, res: EchoResult) -> List[Sample]:
        if res.error != self._errors.get(name):
            if res.error:
                log.warning("icmp: target %s (%s): %s", name, address, res.error)
            elif self._errors.get(name):
                log.info("icmp: target %s (%s) can be probed again", name, address)
            self._errors[name] = res.error
        received = len(res.rtts)
        labels = dict(target=name, address=address, hop=hop)
        counters = self._counters.setdefault((name, address, hop), [0, 0])
        counters[0] += res.sent
        counters[1] += received
        out = [
            sample("probe_success", 1 if received else 0, target=name, module=MODULE, hop=hop),
            sample("probe_duration_seconds", res.duration, target=name, module=MODULE, hop=hop),
            sample("commune_icmp_packets_sent_total", counters[0], **labels),
            sample("commune_icmp_packets_received_total", counters[1], **labels),
        ]
        if res.sent:
            out.append(sample("commune_icmp_packet_loss_ratio", loss_ratio(res.sent, received), **labels))
        stats = rtt_stats(res.rtts)
        if stats is not None:
            out += [
                sample("commune_icmp_rtt_min_seconds", stats.rtt_min, **labels),
                sample("commune_icmp_rtt_avg_seconds", stats.rtt_avg, **labels),
                sample("commune_icmp_rtt_max_seconds", stats.rtt_max, **labels),
                sample("commune_icmp_jitter_seconds", stats.jitter, **labels),
            ]
        return out


class UnavailableInput:
    """The automatic gateway probe where this process may open no ICMP socket at all.

    With no ICMP targets of its own configured, the agent still runs (host, SNMP, probes, push):
    each cycle fails with the fix in the message, which the runner logs once and exports as
    ``commune_agent_input_success{input="icmp"} 0``. Explicit targets make it a startup error.
    """

    def __init__(self, section: Config, reason: str):
        self.name = NAME
        self.interval = section.interval
        self.timeout = section.timeout
        self.reason = reason

    def collect(self) -> List[Sample]:
        raise RuntimeError(self.reason)


def build(section: Config, config) -> list:
    if sys.platform == "win32":   # the ICMP API: no raw sockets, so no privilege to choose
        from agent.inputs.winicmp import WindowsPinger

        return [IcmpInput(section, WindowsPinger(section.count, section.echo_interval, section.echo_timeout,
                                                 section.payload_size))]
    from agent.inputs.icmp_sockets import IcmplibPinger, choose_privileged

    try:
        privileged = choose_privileged(section.privileged)
    except ConfigErrors as exc:
        if section.targets:
            raise
        return [UnavailableInput(section, str(exc.errors[0]))]
    log.debug("icmp: using %s sockets", "raw" if privileged else "unprivileged ICMP datagram")
    pinger = IcmplibPinger(privileged, section.count, section.echo_interval, section.echo_timeout,
                           section.payload_size)
    return [IcmpInput(section, pinger)]
