"""The ``snmp`` config section: named credentials (auths), targets that use them, discovery.

Pure dataclasses (no pysnmp); loaded and validated by :mod:`contract.schema`.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Literal, Optional

from agent.inputs.base import InputSection
from contract.schema import Duration, Secret

AUTH_PROTOCOLS = ("MD5", "SHA", "SHA-224", "SHA-256", "SHA-384", "SHA-512")
PRIV_PROTOCOLS = ("DES", "AES", "AES-128", "AES-192", "AES-256", "AES-192-C", "AES-256-C")
PROFILE_NAMES = ("system", "printer", "interfaces", "host_resources", "ups")


@dataclass
class AuthConfig:
    """One set of SNMP credentials, referenced by name from targets and discovery."""

    version: Literal["1", "2c", "3"] = "2c"
    # v1 / v2c community string.
    community: Secret = field(default_factory=lambda: Secret("public"))
    # v3 (USM): the security level follows from which protocols are set.
    username: str = ""
    auth_protocol: Optional[Literal["MD5", "SHA", "SHA-224", "SHA-256", "SHA-384", "SHA-512"]] = None
    auth_password: Secret = field(default_factory=lambda: Secret(""))
    # AES-192/AES-256: key extension as net-snmp does (Blumenthal); AES-192-C/AES-256-C: as Cisco
    # does (Reeder). AES is AES-128.
    priv_protocol: Optional[Literal["DES", "AES", "AES-128", "AES-192", "AES-256", "AES-192-C",
                                    "AES-256-C"]] = None
    priv_password: Secret = field(default_factory=lambda: Secret(""))
    context_name: str = ""

    @property
    def security_level(self) -> str:
        if self.version != "3":
            return "community"
        if self.priv_protocol:
            return "authPriv"
        if self.auth_protocol:
            return "authNoPriv"
        return "noAuthNoPriv"

    def validate(self) -> Iterator[tuple]:
        if self.version != "3":
            for key in ("username", "context_name"):
                if getattr(self, key):
                    yield key, f"only for version 3 (this auth is version {self.version})"
            for key in ("auth_protocol", "priv_protocol"):
                if getattr(self, key):
                    yield key, f"only for version 3 (this auth is version {self.version})"
            return
        if not self.username:
            yield "username", "required for version 3"
        if self.auth_protocol and len(self.auth_password.reveal()) < 8:
            yield "auth_password", "must be at least 8 characters (RFC 3414)"
        if not self.auth_protocol and self.auth_password:
            yield "auth_password", "set auth_protocol too (or remove auth_password)"
        if self.priv_protocol:
            if not self.auth_protocol:
                yield "priv_protocol", "privacy needs authentication: set auth_protocol"
            if len(self.priv_password.reveal()) < 8:
                yield "priv_password", "must be at least 8 characters (RFC 3414)"
        elif self.priv_password:
            yield "priv_password", "set priv_protocol too (or remove priv_password)"


@dataclass
class TargetConfig:
    """One device to poll."""

    name: str
    address: str
    port: int = 161
    # Name of an entry of snmp.auths.
    auth: str = "public_v2c"
    # "auto" picks them from sysObjectID and what the device answers; or a list of
    # system, printer, interfaces, host_resources, ups (system is always polled).
    profiles: List[str] = field(default_factory=lambda: ["auto"])
    # Defaults come from the snmp section.
    interval: Optional[Duration] = None
    timeout: Optional[Duration] = None
    retries: Optional[int] = None
    max_repetitions: Optional[int] = None
    # Hard limit for one whole poll; default: the interval minus one second, at most 60s.
    deadline: Optional[Duration] = None


@dataclass
class DiscoveryConfig:
    """Periodic sweep of subnets; exports what answers as commune_snmp_discovered_device_info."""

    enabled: bool = False
    subnets: List[str] = field(default_factory=list)
    # Names of entries of snmp.auths to try, in order (default: every auth).
    auths: List[str] = field(default_factory=list)
    port: int = 161
    interval: Duration = Duration(3600)
    timeout: Duration = Duration(1)
    retries: int = 0
    concurrency: int = 32
    # Requests started per second at most.
    rate: float = 50.0

    def validate(self) -> Iterator[tuple]:
        for i, net in enumerate(self.subnets):
            try:
                n = ipaddress.ip_network(net, strict=False)
            except ValueError:
                yield f"subnets[{i}]", f"expected a subnet like 192.168.1.0/24, got {net!r}"
                continue
            if n.num_addresses > 4096:
                yield f"subnets[{i}]", f"{net} has {n.num_addresses} addresses; at most 4096 (a /20)"
        if self.enabled and not self.subnets:
            yield "subnets", "discovery is enabled but lists no subnet"
        if self.concurrency < 1:
            yield "concurrency", "must be at least 1"
        if self.rate <= 0:
            yield "rate", "must be greater than 0"


@dataclass
class Config(InputSection):
    interval: Duration = Duration(60)
    timeout: Duration = Duration(2)          # per SNMP request, before a retry
    retries: int = 1
    max_repetitions: int = 25                # GETBULK
    # How many targets are polled at the same time.
    max_concurrency: int = 8
    auths: Dict[str, AuthConfig] = field(default_factory=lambda: {"public_v2c": AuthConfig()})
    targets: List[TargetConfig] = field(default_factory=list)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)

    def validate(self) -> Iterator[tuple]:
        if self.interval <= 0:
            yield "interval", "must be greater than 0s"
        if self.timeout <= 0:
            yield "timeout", "must be greater than 0s"
        if self.retries < 0:
            yield "retries", "must not be negative"
        if not 1 <= self.max_repetitions <= 200:
            yield "max_repetitions", "must be between 1 and 200"
        if self.max_concurrency < 1:
            yield "max_concurrency", "must be at least 1"
        seen: Dict[str, int] = {}
        for i, t in enumerate(self.targets):
            where = f"targets[{i}]"
            if not t.name.strip():
                yield f"{where}.name", "must not be empty"
            elif t.name in seen:
                yield f"{where}.name", f"duplicate target name {t.name!r} (also targets[{seen[t.name]}])"
            else:
                seen[t.name] = i
            if not t.address.strip():
                yield f"{where}.address", "must not be empty"
            if not 0 < t.port < 65536:
                yield f"{where}.port", f"must be between 1 and 65535, got {t.port}"
            if t.auth not in self.auths:
                yield f"{where}.auth", f'unknown auth "{t.auth}"'
            if t.profiles != ["auto"]:
                for j, p in enumerate(t.profiles):
                    if p not in PROFILE_NAMES:
                        yield f"{where}.profiles[{j}]", (f'unknown profile "{p}" (known: auto, '
                                                         + ", ".join(PROFILE_NAMES) + ")")
            interval = t.interval if t.interval is not None else self.interval
            if t.interval is not None and t.interval <= 0:
                yield f"{where}.interval", "must be greater than 0s"
            if t.timeout is not None and t.timeout <= 0:
                yield f"{where}.timeout", "must be greater than 0s"
            if t.retries is not None and t.retries < 0:
                yield f"{where}.retries", "must not be negative"
            if t.max_repetitions is not None and not 1 <= t.max_repetitions <= 200:
                yield f"{where}.max_repetitions", "must be between 1 and 200"
            if t.deadline is not None and not 0 < t.deadline <= interval:
                yield f"{where}.deadline", (f"must be greater than 0s and not longer than the "
                                            f"interval ({interval:g}s), got {t.deadline:g}s")
        for i, name in enumerate(self.discovery.auths):
            if name not in self.auths:
                yield f"discovery.auths[{i}]", f'unknown auth "{name}"'

    # ---- effective per-target settings
    def target_interval(self, t: TargetConfig) -> float:
        return float(t.interval if t.interval is not None else self.interval)

    def target_timeout(self, t: TargetConfig) -> float:
        return float(t.timeout if t.timeout is not None else self.timeout)

    def target_retries(self, t: TargetConfig) -> int:
        return t.retries if t.retries is not None else self.retries

    def target_max_repetitions(self, t: TargetConfig) -> int:
        return t.max_repetitions if t.max_repetitions is not None else self.max_repetitions

    def target_deadline(self, t: TargetConfig) -> float:
        if t.deadline is not None:
            return float(t.deadline)
        interval = self.target_interval(t)
        return max(min(interval - 1.0, 60.0), min(interval, 1.0))
