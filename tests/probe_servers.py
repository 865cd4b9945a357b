"""Real servers on loopback for the probe tests: HTTP(S), a line-based TCP service, a tiny DNS server,
and certificates made with ``cryptography`` (a test CA, a valid and an expired server cert)."""
from __future__ import annotations

import asyncio
import datetime
import http.server
import socket
import socketserver
import ssl
import struct
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from contract.schema import load_model
from tests.support import free_port


# ---------------------------------------------------------------- certificates

class Certs:
    """A CA and server certificates for 127.0.0.1 / localhost, written as PEM under ``tmp``."""

    def __init__(self, tmp: Path):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._x509, self._hashes, self._ser, self._ec, self._oid = x509, hashes, serialization, ec, NameOID
        self.tmp = Path(tmp)
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "commune-monitor test CA")])
        self.ca_cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                        .public_key(self.ca_key.public_key()).serial_number(x509.random_serial_number())
                        .not_valid_before(now - datetime.timedelta(days=30))
                        .not_valid_after(now + datetime.timedelta(days=3650))
                        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                        .sign(self.ca_key, hashes.SHA256()))
        self.ca_file = self._write("ca.pem", self.ca_cert.public_bytes(serialization.Encoding.PEM))
        # notAfter of the valid certificate: 40 days from now, whole seconds
        self.valid_not_after = now + datetime.timedelta(days=40)
        self.valid_cert, self.valid_key = self.issue("valid", now - datetime.timedelta(days=1), self.valid_not_after)
        self.expired_not_after = now - datetime.timedelta(days=2)
        self.expired_cert, self.expired_key = self.issue("expired", now - datetime.timedelta(days=60),
                                                         self.expired_not_after)
        self.client_cert, self.client_key = self.issue("client", now - datetime.timedelta(days=1),
                                                       now + datetime.timedelta(days=10), client=True)

    def _write(self, name: str, data: bytes) -> str:
        path = self.tmp / name
        path.write_bytes(data)
        return str(path)

    def issue(self, stem: str, not_before, not_after, client: bool = False):
        import ipaddress

        x509, ser = self._x509, self._ser
        key = self._ec.generate_private_key(self._ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(self._oid.COMMON_NAME, f"{stem}.test")])
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.ca_cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(not_before).not_valid_after(not_after))
        if not client:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        cert = builder.sign(self.ca_key, self._hashes.SHA256())
        cert_file = self._write(f"{stem}.pem", cert.public_bytes(ser.Encoding.PEM))
        key_file = self._write(f"{stem}-key.pem", key.private_bytes(
            ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()))
        return cert_file, key_file

    def server_context(self, which: str = "valid", require_client_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert, key = (self.valid_cert, self.valid_key) if which == "valid" else (self.expired_cert, self.expired_key)
        ctx.load_cert_chain(cert, key)
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.ca_file)
        return ctx


# ---------------------------------------------------------------- HTTP

Route = Callable[[http.server.BaseHTTPRequestHandler], None]


class HTTPServer:
    """A threaded stdlib HTTP(S) server on a free loopback port; ``routes`` maps a path to a handler.

    Every request's method, path and headers are kept in ``requests``.
    """

    def __init__(self, routes: Dict[str, Route], tls: Optional[ssl.SSLContext] = None, host: str = "127.0.0.1"):
        self.routes = routes
        self.requests: List[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                       "body": body})
                route = outer.routes.get(self.path.split("?")[0])
                if route is None:
                    send(self, 404, b"not found")
                else:
                    route(self)

            do_GET = do_POST = do_HEAD = do_PUT = _handle

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            daemon_threads = True
            allow_reuse_address = True

            def get_request(self):
                sock, addr = super().get_request()
                if tls is not None:
                    sock.settimeout(5)
                    try:
                        sock = tls.wrap_socket(sock, server_side=True)
                    except (ssl.SSLError, OSError):
                        sock.close()
                        raise
                return sock, addr

            def handle_error(self, request, client_address):
                pass

        self.server = Server((host, free_port(host)), Handler)
        self.port = self.server.server_address[1]
        self.scheme = "https" if tls else "http"
        self.base = f"{self.scheme}://{host}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def send(handler, status: int, body: bytes = b"", headers: Optional[dict] = None) -> None:
    handler.send_response(status)
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


# ---------------------------------------------------------------- a line-based TCP service

class LineServer:
    """Greets with ``banner``, then answers each line with ``reply(line)`` (None closes)."""

    def __init__(self, banner: bytes, reply: Callable[[bytes], Optional[bytes]], tls: Optional[ssl.SSLContext] = None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.banner, self.reply, self.tls = banner, reply, tls
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            if self.banner:
                conn.sendall(self.banner)
            f = conn.makefile("rb")
            for line in f:
                answer = self.reply(line)
                if answer is None:
                    break
                conn.sendall(answer)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()


# ---------------------------------------------------------------- DNS

class DNSServer:
    """Answers A queries for ``records`` (name -> list of IPv4) over UDP and TCP; NXDOMAIN otherwise.

    Names longer than ``truncate_over`` answers set the TC bit over UDP (to exercise the TCP retry).
    """

    def __init__(self, records: Dict[str, List[str]], truncate_over: int = 1000):
        self.records = {k.rstrip(".").lower(): v for k, v in records.items()}
        self.truncate_over = truncate_over
        self.queries: List[tuple] = []
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port = self.udp.getsockname()[1]
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(8)
        self.address = f"127.0.0.1:{self.port}"
        threading.Thread(target=self._serve_udp, daemon=True).start()
        threading.Thread(target=self._serve_tcp, daemon=True).start()

    def answer(self, query: bytes, transport: str) -> bytes:
        qid, flags = struct.unpack("!HH", query[:4])
        pos, labels = 12, []
        while query[pos]:
            n = query[pos]
            labels.append(query[pos + 1:pos + 1 + n].decode())
            pos += 1 + n
        qtype, qclass = struct.unpack("!HH", query[pos + 1:pos + 5])
        question = query[12:pos + 5]
        name = ".".join(labels).lower()
        self.queries.append((name, qtype, transport))
        addrs = self.records.get(name)
        rd = flags & 0x0100
        if addrs is None:
            return struct.pack("!HHHHHH", qid, 0x8000 | 0x0080 | rd | 3, 1, 0, 0, 0) + question
        answers = [a for a in addrs] if qtype == 1 else []
        tc = 0x0200 if transport == "udp" and len(answers) > self.truncate_over else 0
        if tc:
            answers = []
        body = b"".join(b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + socket.inet_aton(a) for a in answers)
        return struct.pack("!HHHHHH", qid, 0x8000 | 0x0400 | 0x0080 | rd | tc, 1, len(answers), 0, 0) + question + body

    def _serve_udp(self) -> None:
        while True:
            try:
                data, peer = self.udp.recvfrom(4096)
            except OSError:
                return
            self.udp.sendto(self.answer(data, "udp"), peer)

    def _serve_tcp(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    n = struct.unpack("!H", conn.recv(2))[0]
                    data = b""
                    while len(data) < n:
                        data += conn.recv(n - len(data))
                    reply = self.answer(data, "tcp")
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
                except (OSError, struct.error):
                    pass

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


# ---------------------------------------------------------------- running probes

def probes_section(data: dict, environ: Optional[dict] = None):
    from agent.inputs.probes import Config

    return load_model(Config, data, path="probes", environ=environ or {})


def run_probes(data: dict, environ: Optional[dict] = None) -> "Results":
    """Load a probes section, build its inputs and collect each once; the samples as :class:`Results`."""
    from agent.inputs import probes

    section = probes_section(data, environ)
    samples = []
    for inp in probes.build(section, None):
        samples += asyncio.run(inp.collect())
    return Results(samples)


class Results:
    def __init__(self, samples):
        self.samples = samples

    def get(self, name: str, target: Optional[str] = None, **labels) -> float:
        found = [s.value for s in self.samples if s.name == name
                 and (target is None or s.labels.get("target") == target)
                 and all(s.labels.get(k) == v for k, v in labels.items())]
        if len(found) != 1:
            raise AssertionError(f"expected one {name} for {target} {labels}, found {found}: {self.samples}")
        return found[0]

    def has(self, name: str, target: Optional[str] = None) -> bool:
        return any(s.name == name and (target is None or s.labels.get("target") == target) for s in self.samples)


def slow(seconds: float) -> Route:
    def route(handler):
        time.sleep(seconds)
        try:
            send(handler, 200, b"late")
        except OSError:
            pass

    return route

