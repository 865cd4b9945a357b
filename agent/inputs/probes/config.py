"""The ``probes:`` section: named probe modules (like blackbox_exporter's) and the targets using them.

```yaml
probes:
  modules:
    portal:   {prober: http, timeout: 10s, http: {valid_status_codes: [200]}}
  targets:
    - {name: dichvucong, module: portal, url: https://dichvucong.gov.vn/, service: dichvucong}
```
Every rule that spans fields lives in a ``validate`` method with its exact message; each has an
invalid fixture in ``tests/test_probes_config.py``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Literal, Optional
from urllib.parse import urlsplit

from agent.inputs.base import InputSection
from agent.inputs.probes.net import split_host_port
from contract.schema import Duration, Secret, Size

PROBERS = ("http", "tcp", "dns")
HOPS = ("gateway", "isp", "upstream", "service")


def _regex_errors(key: str, patterns: List[str]) -> Iterator[tuple]:
    for i, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            yield f"{key}[{i}]", f"invalid regular expression {pattern!r}: {exc}"


@dataclass
class BasicAuth:
    username: str
    password: Secret


def _NO_PASSWORD() -> str:
    """Encrypted client keys are not supported; without this OpenSSL would prompt on the console."""
    return ""


@dataclass
class TLSOptions:
    # PEM file of the CAs to trust instead of the system ones (e.g. a ministry's own CA).
    ca_file: str = ""
    # Client certificate and key (PEM) for servers that ask for one.
    cert_file: str = ""
    key_file: str = ""
    # Name sent in SNI and checked against the certificate (default: the host of the URL/address).
    server_name: str = ""
    insecure_skip_verify: bool = False
    min_version: Optional[Literal["TLS10", "TLS11", "TLS12", "TLS13"]] = None

    def validate(self) -> Iterator[tuple]:
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, key)
            if path and not os.path.isfile(path):
                yield key, f"file {path} does not exist"
        if self.key_file and not self.cert_file:
            yield "key_file", "key_file needs cert_file"
        elif all(not p or os.path.isfile(p) for p in (self.ca_file, self.cert_file, self.key_file)):
            yield from self._load_errors()

    def _load_errors(self) -> Iterator[tuple]:
        """Load the files as the probe will, so a bad PEM is a config error, not a crash later."""
        import ssl

        if self.ca_file:
            try:
                ssl.create_default_context(cafile=self.ca_file)
            except (ssl.SSLError, ValueError) as exc:
                yield "ca_file", f"cannot load CA certificates from {self.ca_file}: {getattr(exc, 'reason', None) or exc}"
        if self.cert_file:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(self.cert_file, self.key_file or None,
                                                                        password=_NO_PASSWORD)
            except (ssl.SSLError, ValueError) as exc:
                yield "cert_file", (f"cannot load the client certificate and key from {self.cert_file}: "
                                    f"{getattr(exc, 'reason', None) or exc}")


@dataclass
class HTTPOptions:
    method: str = "GET"
    headers: Dict[str, str] = field(default_factory=dict)
    body: str = ""
    # Accepted status codes of the final response; empty means any 2xx.
    valid_status_codes: List[int] = field(default_factory=list)
    fail_if_body_matches_regexp: List[str] = field(default_factory=list)
    fail_if_body_not_matches_regexp: List[str] = field(default_factory=list)
    follow_redirects: bool = True
    max_redirects: int = 10
    fail_if_ssl: bool = False
    fail_if_not_ssl: bool = False
    basic_auth: Optional[BasicAuth] = None
    bearer_token: Optional[Secret] = None
    # http://proxy:3128 (https URLs go through it with CONNECT).
    proxy_url: str = ""
    proxy_basic_auth: Optional[BasicAuth] = None
    tls: TLSOptions = field(default_factory=TLSOptions)
    # Largest body read; a longer one fails the probe. 0: no limit.
    body_size_limit: Size = Size(0)

    def validate(self) -> Iterator[tuple]:
        if not re.fullmatch(r"[A-Z]+", self.method):
            yield "method", f"expected an HTTP method in capitals like GET, HEAD or POST, got {self.method!r}"
        for code in self.valid_status_codes:
            if not 100 <= code <= 599:
                yield "valid_status_codes", f"status codes are from 100 to 599, got {code}"
        yield from _regex_errors("fail_if_body_matches_regexp", self.fail_if_body_matches_regexp)
        yield from _regex_errors("fail_if_body_not_matches_regexp", self.fail_if_body_not_matches_regexp)
        if self.max_redirects < 0:
            yield "max_redirects", "must not be negative"
        if self.fail_if_ssl and self.fail_if_not_ssl:
            yield "fail_if_not_ssl", "fail_if_ssl and fail_if_not_ssl cannot both be true"
        if self.basic_auth is not None and self.bearer_token is not None:
            yield "bearer_token", "use basic_auth or bearer_token, not both"
        lowered = {k.lower() for k in self.headers}
        if "authorization" in lowered and (self.basic_auth is not None or self.bearer_token is not None):
            yield "headers", "an Authorization header conflicts with basic_auth/bearer_token"
        if self.proxy_url:
            u = urlsplit(self.proxy_url)
            if u.scheme != "http" or not u.hostname:
                yield "proxy_url", f"expected http://host:port, got {self.proxy_url!r}"
            elif u.username or u.password:
                yield "proxy_url", "credentials do not belong in proxy_url: use proxy_basic_auth"
        elif self.proxy_basic_auth is not None:
            yield "proxy_basic_auth", "proxy_basic_auth needs proxy_url"


@dataclass
class QueryResponse:
    # Regular expression a line of the reply must match (lines are read until one does).
    expect: str = ""
    # Text sent, followed by a newline (like blackbox_exporter).
    send: str = ""

    def validate(self) -> Iterator[tuple]:
        if not self.expect and not self.send:
            yield "", "set expect, send or both"
        if self.expect:
            try:
                re.compile(self.expect)
            except re.error as exc:
                yield "expect", f"invalid regular expression {self.expect!r}: {exc}"


@dataclass
class TCPOptions:
    # Start TLS right after connecting (e.g. for 443, 465, 636, 993).
    tls: bool = False
    tls_config: TLSOptions = field(default_factory=TLSOptions)
    query_response: List[QueryResponse] = field(default_factory=list)


_RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED")
QUERY_TYPES = ("A", "AAAA", "CNAME", "MX", "NS", "TXT", "PTR", "SOA")


@dataclass
class DNSOptions:
    query_name: str = ""
    query_type: Literal["A", "AAAA", "CNAME", "MX", "NS", "TXT", "PTR", "SOA"] = "A"
    # udp falls back to tcp when the reply is truncated.
    transport: Literal["udp", "tcp"] = "udp"
    recursion_desired: bool = True
    valid_rcodes: List[Literal["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"]] = \
        field(default_factory=lambda: ["NOERROR"])
    fail_if_no_answer: bool = True
    # Every listed address must be among the answers (A/AAAA).
    expected_addresses: List[str] = field(default_factory=list)
    # Every regex must match at least one answer value (address, name, MX "10 mail.x.", TXT text).
    fail_if_none_matches_regexp: List[str] = field(default_factory=list)
    # No answer value may match any of these.
    fail_if_matches_regexp: List[str] = field(default_factory=list)

    def validate(self) -> Iterator[tuple]:
        if not self.query_name.strip():
            yield "query_name", "required field is missing"
        import ipaddress

        for i, addr in enumerate(self.expected_addresses):
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                yield f"expected_addresses[{i}]", f"expected an IPv4 or IPv6 address, got {addr!r}"
        if self.expected_addresses and self.query_type not in ("A", "AAAA"):
            yield "expected_addresses", f"expected_addresses needs query_type A or AAAA, not {self.query_type}"
        yield from _regex_errors("fail_if_none_matches_regexp", self.fail_if_none_matches_regexp)
        yield from _regex_errors("fail_if_matches_regexp", self.fail_if_matches_regexp)


@dataclass
class Module:
    prober: Literal["http", "tcp", "dns"]
    # Per-target limit, enforced inside the probe; must be shorter than probes.timeout.
    # Default: probes.timeout minus 1s (but at least half of it).
    timeout: Optional[Duration] = None
    # auto: the first address the resolver gives; ip4 / ip6: only that family.
    ip_protocol: Literal["auto", "ip4", "ip6"] = "auto"
    http: Optional[HTTPOptions] = None
    tcp: Optional[TCPOptions] = None
    dns: Optional[DNSOptions] = None

    def __post_init__(self) -> None:
        if self.prober == "http" and self.http is None:
            self.http = HTTPOptions()
        if self.prober == "tcp" and self.tcp is None:
            self.tcp = TCPOptions()

    def validate(self) -> Iterator[tuple]:
        if self.timeout is not None and self.timeout <= 0:
            yield "timeout", "must be greater than 0s"
        for kind in PROBERS:
            if kind != self.prober and getattr(self, kind) is not None:
                yield kind, f"options for prober {kind}, but the module's prober is {self.prober}"
        if self.prober == "dns" and self.dns is None:
            yield "dns", "required for prober dns (at least query_name)"


@dataclass
class Target:
    # Unique name; the target label of every series of this probe.
    name: str
    # Name of an entry of probes.modules.
    module: str
    # http: the URL to fetch.
    url: str = ""
    # tcp: host:port; dns: the DNS server host[:port] (empty: the system resolver).
    address: str = ""
    # Business software this target checks (e.g. dichvucong); default: the target name.
    service: str = ""
    hop: Literal["gateway", "isp", "upstream", "service"] = "service"

    def __post_init__(self) -> None:
        if not self.service:
            self.service = self.name

    def validate(self) -> Iterator[tuple]:
        if not self.name.strip():
            yield "name", "must not be empty"


@dataclass
class Config(InputSection):
    interval: Duration = Duration(30)
    timeout: Duration = Duration(20)
    modules: Dict[str, Module] = field(default_factory=dict)
    targets: List[Target] = field(default_factory=list)

    def __post_init__(self) -> None:
        for module in self.modules.values():
            if module.timeout is None:
                module.timeout = Duration(max(self.timeout - 1, self.timeout / 2))

    def validate(self) -> Iterator[tuple]:
        yield from super().validate()
        for name, module in self.modules.items():
            if module.timeout >= self.timeout:
                yield f"modules.{name}.timeout", (f"must be shorter than probes.timeout ({self.timeout:g}s), "
                                                  f"got {module.timeout:g}s")
        seen = set()
        for i, t in enumerate(self.targets):
            where = f"targets[{i}]"
            if t.name in seen:
                yield f"{where}.name", f"duplicate target name {t.name!r}"
            seen.add(t.name)
            module = self.modules.get(t.module)
            if module is None:
                known = ", ".join(sorted(self.modules)) or "none defined"
                yield f"{where}.module", f"unknown module {t.module!r} (modules: {known})"
                continue
            yield from ((f"{where}.{k}", m) for k, m in _target_errors(t, module))


def _target_errors(t: Target, module: Module) -> Iterator[tuple]:
    if module.prober == "http":
        if t.address:
            yield "address", "http targets take url, not address"
        if not t.url:
            yield "url", "required for http modules"
            return
        u = urlsplit(t.url)
        if u.scheme not in ("http", "https") or not u.hostname:
            yield "url", f"expected an http:// or https:// URL, got {t.url!r}"
        elif u.username or u.password:
            yield "url", "credentials do not belong in the URL: use the module's basic_auth"
        else:
            try:
                u.port
            except ValueError as exc:
                yield "url", f"invalid port: {exc}"
        return
    if t.url:
        yield "url", f"{module.prober} targets take address, not url"
    if module.prober == "tcp":
        if not t.address:
            yield "address", "required for tcp modules (host:port)"
            return
        try:
            split_host_port(t.address)
        except ValueError as exc:
            yield "address", str(exc)
    elif module.prober == "dns" and t.address:
        try:
            split_host_port(t.address, 53)
        except ValueError as exc:
            yield "address", str(exc)
    if module.prober == "dns" and not t.address and module.dns is not None \
            and module.dns.query_type not in ("A", "AAAA"):
        yield "address", (f"query_type {module.dns.query_type} needs a DNS server address; "
                          "the system resolver only answers A and AAAA")
