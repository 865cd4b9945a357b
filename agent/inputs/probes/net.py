"""What the http, tcp and dns probers share: addresses, name resolution, TCP connect, TLS.

Everything here works on asyncio streams and the stdlib ``ssl`` module; a failure raises
:class:`ProbeFailure` (or an ``OSError``/``ssl.SSLError`` that the caller turns into one) with a
message fit for a log line: it never contains header values, passwords or tokens.
"""
from __future__ import annotations

import asyncio
import calendar
import concurrent.futures
import ipaddress
import socket
import ssl
import time
from typing import List, Optional, Tuple


class ProbeFailure(Exception):
    """The target failed the check; the message says why (and never holds a secret)."""


_FAMILIES = {"auto": socket.AF_UNSPEC, "ip4": socket.AF_INET, "ip6": socket.AF_INET6}


def split_host_port(address: str, default_port: Optional[int] = None) -> Tuple[str, int]:
    """``host:port``, ``[v6]:port``, or a bare host/IP when ``default_port`` is given.

    Raises ValueError with the expected form.
    """
    text = address.strip()
    host, port = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"expected host:port like example.org:443 or [2001:db8::1]:443, got {address!r}")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"expected host:port like example.org:443 or [2001:db8::1]:443, got {address!r}")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if port is None:
        if default_port is None:
            raise ValueError(f"expected host:port like example.org:443 or [2001:db8::1]:443, got {address!r}")
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"port must be a number from 1 to 65535, got {port!r}")
    if not host:
        raise ValueError(f"expected host:port like example.org:443 or [2001:db8::1]:443, got {address!r}")
    return host, int(port)


_RESOLVER: Optional[concurrent.futures.ThreadPoolExecutor] = None


async def getaddrinfo(host: str, port: Optional[int], family: int) -> list:
    """getaddrinfo in the probes' own thread pool: a resolver that hangs for one target (its
    thread outlives the probe's timeout) must not starve the other inputs or IP-literal targets."""
    global _RESOLVER
    if _RESOLVER is None:
        _RESOLVER = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="resolve")
    return await asyncio.get_running_loop().run_in_executor(
        _RESOLVER, socket.getaddrinfo, host, port, family, socket.SOCK_STREAM)


def _literal(host: str, port: int, ip_protocol: str) -> Optional[Tuple[int, tuple]]:
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    if _FAMILIES[ip_protocol] not in (socket.AF_UNSPEC, family):
        raise ProbeFailure(f"{host} is not an {'IPv6' if ip_protocol == 'ip6' else 'IPv4'} address")
    if "%" in host or ip.version == 6:
        return family, socket.getaddrinfo(host, port, family, socket.SOCK_STREAM,
                                          flags=socket.AI_NUMERICHOST)[0][4]
    return family, (host, port)


async def resolve(host: str, port: int, ip_protocol: str) -> Tuple[int, tuple]:
    """The first (family, sockaddr) for ``host`` (getaddrinfo order, filtered by ip_protocol).

    IP literals are answered at once, without a thread."""
    literal = _literal(host, port, ip_protocol)
    if literal is not None:
        return literal
    try:
        infos = await getaddrinfo(host, port, _FAMILIES[ip_protocol])
    except socket.gaierror as exc:
        raise ProbeFailure(f"cannot resolve {host}: {exc.strerror}") from None
    if not infos:
        raise ProbeFailure(f"cannot resolve {host}: no address")
    family, _type, _proto, _canon, sockaddr = infos[0]
    return family, sockaddr


async def connect(family: int, sockaddr: tuple) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to an already resolved address."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, sockaddr)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=1 << 16)


_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


_CONTEXTS: dict = {}


def tls_context(options) -> ssl.SSLContext:
    """Client context from a :class:`~agent.inputs.probes.config.TLSOptions`: verification on
    unless ``insecure_skip_verify``; ``ca_file`` replaces the system CAs; optional client cert.

    Modules with the same options share one context (each holds its own copy of the CA store).
    """
    key = (options.ca_file, options.cert_file, options.key_file, options.insecure_skip_verify,
           options.min_version)
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        ctx = _CONTEXTS[key] = _new_tls_context(options)
    return ctx


def _new_tls_context(options) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=options.ca_file or None)
    if options.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if options.cert_file:
        ctx.load_cert_chain(options.cert_file, options.key_file or None, password=lambda: "")  # never prompt
    if options.min_version:
        if options.min_version in ("TLS10", "TLS11"):  # OpenSSL 3 refuses them at security level 1+
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = _TLS_VERSIONS[options.min_version]
    return ctx


async def start_tls(writer: asyncio.StreamWriter, ctx: ssl.SSLContext, server_name: str) -> ssl.SSLObject:
    try:
        await writer.start_tls(ctx, server_hostname=server_name or None)
    except ssl.SSLCertVerificationError as exc:
        raise ProbeFailure(f"TLS certificate verification failed: {exc.verify_message}") from None
    except ssl.SSLError as exc:
        raise ProbeFailure(f"TLS handshake failed: {exc.reason or exc}") from None
    return writer.get_extra_info("ssl_object")


def close(writer: Optional[asyncio.StreamWriter]) -> None:
    """Drop the connection at once (a probe does not wait for a TLS close_notify)."""
    if writer is not None:
        transport = writer.transport
        if not transport.is_closing():
            transport.abort()


# ---------------------------------------------------------------- certificates

def earliest_cert_expiry(sslobj: ssl.SSLObject) -> Optional[float]:
    """Earliest notAfter (Unix time) of the chain the server presented.

    The verified chain when verification is on, else the chain as sent; the leaf alone when the
    interpreter lacks the chain accessors.
    """
    ders: List[bytes] = []
    inner = getattr(sslobj, "_sslobj", None)
    for accessor in ("get_verified_chain", "get_unverified_chain"):
        fn = getattr(inner, accessor, None)
        if fn is None:
            continue
        chain = fn() or []
        ders = [c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]
        if ders:
            break
    if not ders:
        leaf = sslobj.getpeercert(binary_form=True)
        ders = [leaf] if leaf else []
    times = [t for t in (cert_not_after(d) for d in ders) if t is not None]
    return min(times) if times else None


def _tlv(buf: bytes, pos: int) -> Tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``pos``."""
    tag = buf[pos]
    length = buf[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(buf[pos:pos + n], "big")
        pos += n
    return tag, pos, pos + length


def cert_not_after(der: bytes) -> Optional[float]:
    """notAfter of a DER X.509 certificate as Unix time; None when it cannot be read."""
    try:
        _t, start, _end = _tlv(der, 0)            # Certificate
        _t, pos, _end = _tlv(der, start)          # tbsCertificate
        tag, _s, end = _tlv(der, pos)
        if tag == 0xA0:                           # [0] version
            pos = end
        for _ in range(3):                        # serialNumber, signature, issuer
            _t, _s, pos = _tlv(der, pos)
        _t, pos, _end = _tlv(der, pos)            # validity
        _t, _s, pos = _tlv(der, pos)              # notBefore
        tag, s, e = _tlv(der, pos)                # notAfter
        text = der[s:e].decode("ascii").rstrip("Z")
        if tag == 0x17:                           # UTCTime YYMMDDHHMMSS
            year = int(text[:2])
            text = str(1900 + year if year >= 50 else 2000 + year) + text[2:]
        elif tag != 0x18:                         # GeneralizedTime YYYYMMDDHHMMSS
            return None
        parts = (int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]), int(text[10:12]),
                 int(text[12:14] or 0))
        return float(calendar.timegm(parts + (0, 0, 0)))
    except (IndexError, ValueError):
        return None


TLS_VERSION_NAMES = {"TLSv1": "TLS 1.0", "TLSv1.1": "TLS 1.1", "TLSv1.2": "TLS 1.2", "TLSv1.3": "TLS 1.3"}


def tls_facts(result, sslobj: ssl.SSLObject) -> None:
    """Record probe_ssl_earliest_cert_expiry and probe_tls_version_info for a handshake."""
    expiry = earliest_cert_expiry(sslobj)
    if expiry is not None:
        result.set("probe_ssl_earliest_cert_expiry", expiry)
    version = sslobj.version()
    if version:
        result.set("probe_tls_version_info", 1, version=TLS_VERSION_NAMES.get(version, version))


class Stopwatch:
    """Monotonic lap timer for phases."""

    def __init__(self) -> None:
        self.last = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        return elapsed


class Result:
    """The series one probe of one target produced so far (kept even when the probe times out)."""

    def __init__(self) -> None:
        self.values: dict = {}
        self.reason = ""

    def set(self, name: str, value: float, **labels: str) -> None:
        self.values[(name, tuple(sorted(labels.items())))] = float(value)

    def add(self, name: str, value: float, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self.values[key] = self.values.get(key, 0.0) + float(value)
