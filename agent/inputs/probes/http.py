"""The http prober: one HTTP/1.1 exchange per hop on asyncio streams, phases timed by hand.

Phases follow blackbox_exporter and are summed over redirects: ``resolve`` (getaddrinfo of the
host, or of the proxy), ``connect`` (TCP, plus the CONNECT exchange through a proxy), ``tls``
(handshake), ``processing`` (request sent until the first response byte) and ``transfer``
(headers and body). Each hop uses a fresh connection with ``Connection: close``. Credentials
(basic auth, bearer token) go only to the origin of the configured URL, never to a host a
redirect points at, and never into a log line or an error.
"""
from __future__ import annotations

import base64
import re
import socket
import ssl
import zlib
from typing import List, Optional, Tuple
from urllib.parse import urljoin, urlsplit

from agent.inputs.probes import net
from agent.inputs.probes.net import ProbeFailure

PHASES = ("resolve", "connect", "tls", "processing", "transfer")
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_HEADER_LINES = 200
_USER_AGENT = "commune-agent"


class Prepared:
    """What a module needs at every probe, built once: TLS context, compiled regexes, auth."""

    def __init__(self, module):
        opts = module.http
        self.module = module
        self.opts = opts
        self._tls: Optional[ssl.SSLContext] = None
        self.must_not = [re.compile(p) for p in opts.fail_if_body_matches_regexp]
        self.must = [re.compile(p) for p in opts.fail_if_body_not_matches_regexp]
        self.proxy: Optional[Tuple[str, int]] = None
        if opts.proxy_url:
            p = urlsplit(opts.proxy_url)
            self.proxy = (p.hostname, p.port or 80)

    @property
    def tls(self) -> ssl.SSLContext:
        """Made on the first https URL (a redirect may lead to one), not for plain-http modules."""
        if self._tls is None:
            self._tls = net.tls_context(self.opts.tls)
        return self._tls

    def authorization(self) -> Optional[str]:
        opts = self.opts
        if opts.bearer_token is not None:
            return "Bearer " + opts.bearer_token.reveal()
        if opts.basic_auth is not None:
            return _basic(opts.basic_auth)
        return None

    def proxy_authorization(self) -> Optional[str]:
        return _basic(self.opts.proxy_basic_auth) if self.opts.proxy_basic_auth is not None else None


def _basic(auth) -> str:
    raw = f"{auth.username}:{auth.password.reveal()}".encode("utf-8")
    return "Basic " + base64.b64encode(raw).decode("ascii")


class _Response:
    def __init__(self) -> None:
        self.status = 0
        self.version = 0.0
        self.headers: List[Tuple[str, str]] = []
        self.body = bytearray()
        self.body_length = 0
        self.tls = False

    def header(self, name: str) -> Optional[str]:
        for k, v in self.headers:
            if k == name:
                return v
        return None


def _origin(url: str) -> Tuple[str, str, int]:
    u = urlsplit(url)
    return u.scheme, (u.hostname or ""), u.port or (443 if u.scheme == "https" else 80)


async def probe(target, prepared: Prepared, result: net.Result) -> None:
    """Fetch ``target.url``; raise ProbeFailure (or OSError) when the target fails the check."""
    opts = prepared.opts
    for phase in PHASES:
        result.set("probe_http_duration_seconds", 0, phase=phase)
    for name, value in (("probe_http_status_code", 0), ("probe_http_redirects", 0), ("probe_http_ssl", 0),
                        ("probe_http_version", 0), ("probe_http_content_length", -1),
                        ("probe_http_uncompressed_body_length", 0), ("probe_failed_due_to_regex", 0)):
        result.set(name, value)
    url, method, body = target.url, opts.method, opts.body.encode("utf-8")
    origin = _origin(url)
    keep_body = bool(prepared.must or prepared.must_not)
    redirects = 0
    while True:
        authorization = prepared.authorization() if _origin(url) == origin else None
        resp = await _exchange(url, method, body, authorization, prepared, result, keep_body, redirects == 0)
        _record(resp, result)
        location = resp.header("location")
        if not (opts.follow_redirects and resp.status in _REDIRECTS and location):
            break
        if redirects >= opts.max_redirects:
            raise ProbeFailure(f"more than {opts.max_redirects} redirects")
        redirects += 1
        result.set("probe_http_redirects", redirects)
        url = urljoin(url, location.strip())
        if urlsplit(url).scheme not in ("http", "https"):
            raise ProbeFailure(f"redirect to an unsupported scheme: {urlsplit(url).scheme!r}")
        if resp.status == 303 and method != "HEAD" or resp.status in (301, 302) and method == "POST":
            method, body = "GET", b""


    valid = opts.valid_status_codes
    if (resp.status not in valid) if valid else not 200 <= resp.status < 300:
        raise ProbeFailure(f"status code {resp.status} is not accepted")
    if opts.fail_if_ssl and resp.tls:
        raise ProbeFailure("the final response came over TLS (fail_if_ssl)")
    if opts.fail_if_not_ssl and not resp.tls:
        raise ProbeFailure("the final response did not come over TLS (fail_if_not_ssl)")
    if keep_body:
        text = bytes(resp.body).decode("utf-8", errors="replace")
        for rx in prepared.must_not:
            if rx.search(text):
                result.set("probe_failed_due_to_regex", 1)
                raise ProbeFailure(f"body matched {rx.pattern!r}")
        for rx in prepared.must:
            if not rx.search(text):
                result.set("probe_failed_due_to_regex", 1)
                raise ProbeFailure(f"body did not match {rx.pattern!r}")


def _record(resp: _Response, result: net.Result) -> None:
    """The series of the latest response (the final one once redirects are done)."""
    result.set("probe_http_status_code", resp.status)
    result.set("probe_http_version", resp.version)
    result.set("probe_http_ssl", 1 if resp.tls else 0)
    length = resp.header("content-length")
    result.set("probe_http_content_length", int(length) if length and length.isdigit() else -1)
    result.set("probe_http_uncompressed_body_length", resp.body_length)


async def _exchange(url: str, method: str, body: bytes, authorization: Optional[str], prepared: Prepared,
                    result: net.Result, keep_body: bool, first: bool) -> _Response:
    opts = prepared.opts
    u = urlsplit(url)
    https = u.scheme == "https"
    host = u.hostname or ""
    port = u.port or (443 if https else 80)
    watch = net.Stopwatch()
    connect_host, connect_port = prepared.proxy or (host, port)
    family, sockaddr = await net.resolve(connect_host, connect_port, prepared.module.ip_protocol)
    elapsed = watch.lap()
    result.add("probe_http_duration_seconds", elapsed, phase="resolve")
    if first:
        result.set("probe_dns_lookup_time_seconds", elapsed)
        result.set("probe_ip_protocol", 6 if family == socket.AF_INET6 else 4)
    writer = None
    try:
        reader, writer = await net.connect(family, sockaddr)
        host_port = _host_header(host, port, https)
        if prepared.proxy and https:
            lines = [f"CONNECT {host_port} HTTP/1.1", f"Host: {host_port}"]
            proxy_auth = prepared.proxy_authorization()
            if proxy_auth:
                lines.append(f"Proxy-Authorization: {proxy_auth}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            await writer.drain()
            status, _version = _status_line(await _readline(reader))
            await _read_headers(reader)
            if status != 200:
                raise ProbeFailure(f"the proxy answered {status} to CONNECT")
        result.add("probe_http_duration_seconds", watch.lap(), phase="connect")
        resp = _Response()
        if https:
            sslobj = await net.start_tls(writer, prepared.tls, opts.tls.server_name or host)
            result.add("probe_http_duration_seconds", watch.lap(), phase="tls")
            net.tls_facts(result, sslobj)
            resp.tls = True

        target = url.split("#")[0] if prepared.proxy and not https else (u.path or "/") + (
            "?" + u.query if u.query else "")
        headers = {"Host": host_port, "User-Agent": _USER_AGENT, "Accept": "*/*",
                   "Accept-Encoding": "identity", "Connection": "close"}
        for k, v in opts.headers.items():
            for existing in [h for h in headers if h.lower() == k.lower()]:
                del headers[existing]
            headers[k] = v
        if body or method in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        if authorization:
            headers["Authorization"] = authorization
        if prepared.proxy and not https:
            proxy_auth = prepared.proxy_authorization()
            if proxy_auth:
                headers["Proxy-Authorization"] = proxy_auth
        head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(head.encode("utf-8") + b"\r\n" + body)
        await writer.drain()

        while True:  # skip interim 1xx responses
            line = await _readline(reader)
            if not line:
                raise ProbeFailure("the server closed the connection without a response")
            resp.status, resp.version = _status_line(line)
            if resp.status >= 200 or resp.status == 101:
                break
            await _read_headers(reader)
        result.add("probe_http_duration_seconds", watch.lap(), phase="processing")
        resp.headers = await _read_headers(reader)
        if method != "HEAD" and resp.status not in (204, 304) and resp.status >= 200:
            await _read_body(reader, resp, keep_body, opts.body_size_limit)
        result.add("probe_http_duration_seconds", watch.lap(), phase="transfer")
        return resp
    finally:
        net.close(writer)


async def _readline(reader) -> bytes:
    try:
        return await reader.readline()
    except ValueError:  # longer than the stream limit
        raise ProbeFailure("a response line is longer than 64 KiB") from None


def _host_header(host: str, port: int, https: bool) -> str:
    name = f"[{host}]" if ":" in host else host.encode("idna").decode("ascii")
    return name if port == (443 if https else 80) else f"{name}:{port}"


def _status_line(line: bytes) -> Tuple[int, float]:
    m = re.match(rb"HTTP/(\d)\.(\d) (\d{3})", line)
    if not m:
        raise ProbeFailure("the reply is not HTTP (bad status line)")
    return int(m.group(3)), float(f"{int(m.group(1))}.{int(m.group(2))}")


async def _read_headers(reader) -> List[Tuple[str, str]]:
    headers: List[Tuple[str, str]] = []
    for _ in range(_MAX_HEADER_LINES):
        line = await _readline(reader)
        if line in (b"\r\n", b"\n"):
            return headers
        if not line:
            raise ProbeFailure("the connection closed in the middle of the response headers")
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            headers.append((name.strip().lower(), value.strip()))
    raise ProbeFailure(f"more than {_MAX_HEADER_LINES} response header lines")


async def _read_body(reader, resp: _Response, keep: bool, limit: int) -> None:
    encoding = (resp.header("content-encoding") or "identity").lower()
    inflate = None
    if encoding in ("gzip", "x-gzip"):
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflate = zlib.decompressobj()
    received = 0

    def take(data: bytes) -> None:
        nonlocal received
        received += len(data)
        if limit and received > limit:
            raise ProbeFailure(f"the body is larger than body_size_limit ({limit} bytes)")
        if inflate is not None:
            try:
                data = inflate.decompress(data)
            except zlib.error:
                raise ProbeFailure(f"the body is not valid {encoding}") from None
        resp.body_length += len(data)
        if keep:
            resp.body.extend(data)

    if "chunked" in (resp.header("transfer-encoding") or "").lower():
        while True:
            size_line = await _readline(reader)
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise ProbeFailure("bad chunk size in a chunked body") from None
            if size == 0:
                await _read_headers(reader)  # trailers
                return
            remaining = size
            while remaining:
                data = await reader.read(min(remaining, 65536))
                if not data:
                    raise ProbeFailure("the connection closed in the middle of a chunk")
                remaining -= len(data)
                take(data)
            await _readline(reader)
    length = resp.header("content-length")
    if length is not None and length.isdigit():
        remaining = int(length)
        while remaining:
            data = await reader.read(min(remaining, 65536))
            if not data:
                raise ProbeFailure(f"the connection closed {remaining} bytes before the end of the body")
            remaining -= len(data)
            take(data)
        return
    while True:
        data = await reader.read(65536)
        if not data:
            return
        take(data)

