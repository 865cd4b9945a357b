"""The agent's HTTP server: ``/metrics``, ``/-/healthy`` and a landing page.

A small threaded stdlib server (the agent carries no web framework). Basic auth takes bcrypt
hashes and TLS takes a certificate and key, as the Prometheus exporter-toolkit web config does.
"""
from __future__ import annotations

import logging
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, Optional

from contract.basic_auth import BasicAuth
from agent.config import WebSection
from contract.listener import split_listen_address
from contract.schema import Secret

log = logging.getLogger(__name__)

LANDING = b"""<!doctype html><html><head><title>commune-monitor agent</title></head>
<body><h1>commune-monitor agent</h1><p><a href="metrics">Metrics</a></p></body></html>
"""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, render: Callable[[], bytes], users: Dict[str, Secret]):
        self.render = render
        self.auth = BasicAuth({u: h.reveal() for u, h in users.items()})
        if ":" in addr[0]:
            import socket
            self.address_family = socket.AF_INET6
        super().__init__(addr, handler)

    def authorized(self, header: Optional[str]) -> bool:
        return self.auth.check(header)  # a handler thread per request: bcrypt blocks only this one


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "commune-agent"

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        if not self.server.authorized(self.headers.get("Authorization")):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="commune-agent"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            try:
                body = self.server.render()
            except Exception as exc:
                log.error("rendering /metrics failed: %s", exc)
                self._reply(500, b"error rendering metrics\n", "text/plain; charset=utf-8")
                return
            self._reply(200, body, "text/plain; version=0.0.4; charset=utf-8")
        elif path in ("/-/healthy", "/-/ready"):
            self._reply(200, b"OK\n", "text/plain; charset=utf-8")
        elif path == "/":
            self._reply(200, LANDING, "text/html; charset=utf-8")
        else:
            self._reply(404, b"not found\n", "text/plain; charset=utf-8")

    def _reply(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args) -> None:  # keep access logs out of the agent log
        log.debug("http %s " + fmt, self.address_string(), *args)


class MetricsServer:
    """Serves ``render()`` on ``/metrics`` from a background thread."""

    def __init__(self, web: WebSection, render: Callable[[], bytes], listen_address: Optional[str] = None):
        host, port = split_listen_address(listen_address or web.listen_address)
        self.httpd = _Server((host or "0.0.0.0", port), _Handler, render, web.basic_auth_users)
        if web.tls_cert_file:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(web.tls_cert_file, web.tls_key_file)
            # handshake in the handler thread, so a slow client never blocks accept()
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True,
                                                do_handshake_on_connect=False)
        self.address = self.httpd.server_address
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="web", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
