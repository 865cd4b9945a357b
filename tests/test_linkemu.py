"""The loopback link emulator (tests/linkemu.py), proved with real sockets on 127.0.0.1.

Times are only sanity bounds: a lower bound where the emulator must delay, and upper bounds at
least 3x looser than the expected time.
"""
from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import select
import socket
import socketserver
import sys
import threading
import time
from typing import Callable, Dict, Iterator, List

import pytest

from lab.linkemu import LinkEmulator
from tests.support import wait_until

pytestmark = pytest.mark.timeout(60)


# -- servers on 127.0.0.1 ----------------------------------------------------------------------
@contextlib.contextmanager
def tcp_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A threaded TCP server running ``handle(sock)`` per connection; yields its port."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                handle(self.request)
            except OSError:
                pass  # reset by the emulator: that is the point

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def echo(sock: socket.socket) -> None:
    while data := sock.recv(65536):
        sock.sendall(data)


class Sink:
    """Reads until EOF and answers with the connection's byte count; records all it got and how
    each connection ended."""

    def __init__(self) -> None:
        self.received = 0
        self.ended: List[str] = []

    def __call__(self, sock: socket.socket) -> None:
        count = 0
        try:
            while data := sock.recv(65536):
                count += len(data)
                self.received += len(data)
        except ConnectionError:
            self.ended.append("reset")
            return
        self.ended.append("eof")
        sock.sendall(str(count).encode())


def source(nbytes: int) -> Callable[[socket.socket], None]:
    return lambda sock: sock.sendall(b"d" * nbytes)


@contextlib.contextmanager
def http_server(bodies: List[bytes]) -> Iterator[int]:
    """An HTTP server recording each POST body and answering 200 "ok"."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            if not isinstance(sys.exc_info()[1], ConnectionError):  # resets are the point
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- client helpers ----------------------------------------------------------------------------
def connect(link: LinkEmulator, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(link.address, timeout=timeout)


def recv_exactly(sock: socket.socket, nbytes: int) -> bytes:
    chunks = []
    while nbytes > 0:
        chunk = sock.recv(min(nbytes, 65536))
        assert chunk, "EOF before all the data arrived"
        chunks.append(chunk)
        nbytes -= len(chunk)
    return b"".join(chunks)


def roundtrip(sock: socket.socket, data: bytes) -> bytes:
    """Send data to an echo server (from a thread, so neither side blocks) and read it back."""
    sender = threading.Thread(target=sock.sendall, args=(data,))
    sender.start()
    try:
        return recv_exactly(sock, len(data))
    finally:
        sender.join(10)


def rtt(sock: socket.socket) -> float:
    start = time.monotonic()
    assert roundtrip(sock, b"p") == b"p"
    return time.monotonic() - start


def dead(sock: socket.socket) -> bool:
    """True if the connection was reset or closed (an echo never comes back); False if it echoes."""
    sock.settimeout(5)
    try:
        sock.sendall(b"ping")
        return sock.recv(16) == b""
    except ConnectionError:
        return True


def ends(sock: socket.socket) -> bool:
    """True if the stream ends (EOF or reset) within 5 s, whatever data comes before."""
    sock.settimeout(5)
    try:
        while sock.recv(65536):
            pass
    except ConnectionError:
        pass
    return True


def upload(link: LinkEmulator, nbytes: int) -> bytes:
    """Send nbytes to a Sink, half-close, return its answer."""
    with connect(link, timeout=30) as sock:
        sock.sendall(b"u" * nbytes)
        sock.shutdown(socket.SHUT_WR)
        return sock.recv(64)


def open_fds() -> Dict[str, str]:
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the fd of the listing itself is gone by now
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return fds


# -- tests -------------------------------------------------------------------------------------
def test_relays_both_ways_intact_and_counts():
    with tcp_server(echo) as port, LinkEmulator(("127.0.0.1", port)) as link:
        data = os.urandom(300_000)
        with connect(link) as sock:
            assert roundtrip(sock, data) == data
        wait_until(lambda: link.counters.connections_open == 0, timeout=5, what="close")
        counters = link.counters
        assert counters.bytes_upstream == counters.bytes_downstream == len(data)
        assert counters.connections_accepted == 1
        assert counters.connections_cut == counters.connections_refused == 0


@pytest.mark.slow
def test_bandwidth_cap_holds():
    sink = Sink()
    with tcp_server(sink) as port, \
            LinkEmulator(("127.0.0.1", port), bandwidth_bps=2_000_000) as link:
        start = time.monotonic()
        assert upload(link, 1_000_000) == b"1000000"
        elapsed = time.monotonic() - start
        assert 3.5 <= elapsed <= 12, elapsed  # 1 MB at 2 Mbit/s is 4 s
        assert link.counters.bytes_upstream == 1_000_000


@pytest.mark.slow
def test_bandwidth_is_shared_by_the_connections_of_a_link():
    sink = Sink()
    with tcp_server(sink) as port, \
            LinkEmulator(("127.0.0.1", port), bandwidth_bps=2_000_000) as link:
        answers: List[bytes] = []
        clients = [threading.Thread(target=lambda: answers.append(upload(link, 250_000)))
                   for _ in range(2)]
        start = time.monotonic()
        for client in clients:
            client.start()
        for client in clients:
            client.join(30)
        elapsed = time.monotonic() - start
        assert answers == [b"250000", b"250000"]
        assert 1.75 <= elapsed <= 6, elapsed  # 2 x 250 kB over one 2 Mbit/s link is 2 s, not 1 s


def test_pieces_and_a_cap_per_direction():
    with tcp_server(source(8000)) as port, \
            LinkEmulator(("127.0.0.1", port), bandwidth_bps=(None, 64_000), piece_size=400) as link:
        sizes = []
        start = time.monotonic()
        with connect(link) as sock:
            while chunk := sock.recv(65536):
                sizes.append(len(chunk))
        elapsed = time.monotonic() - start
        assert sum(sizes) == 8000
        assert max(sizes) <= 400 and len(sizes) >= 20, sizes
        assert elapsed >= 0.9, elapsed  # 8000 bytes at 64 kbit/s is 1 s

    with tcp_server(Sink()) as port, \
            LinkEmulator(("127.0.0.1", port), bandwidth_bps=(None, 64_000)) as link:
        start = time.monotonic()
        assert upload(link, 512_000) == b"512000"
        assert time.monotonic() - start < 20  # 64 s if the downstream cap applied upstream


def test_latency_adds_delay_per_direction_and_is_pipelined():
    with tcp_server(echo) as port, LinkEmulator(("127.0.0.1", port), latency=0.1) as link:
        with connect(link) as sock:
            assert min(rtt(sock) for _ in range(3)) >= 0.195
            link.set_latency(0.3, "downstream")
            assert rtt(sock) >= 0.395
            link.set_latency(0.1)
            data = os.urandom(300_000)
            start = time.monotonic()
            assert roundtrip(sock, data) == data  # in order
            # one 1400-byte piece per 0.2 s round trip would take 43 s
            assert time.monotonic() - start < 10


def test_cut_resets_a_transfer_midway():
    sink = Sink()
    with tcp_server(sink) as port, LinkEmulator(("127.0.0.1", port), bandwidth_bps=256_000) as link:
        outcome: List[object] = []

        def client() -> None:
            with connect(link) as sock:
                try:
                    sock.sendall(b"u" * 200_000)  # 6 s at 256 kbit/s
                    outcome.append(sock.recv(64))
                except ConnectionError as exc:
                    outcome.append(exc)

        thread = threading.Thread(target=client)
        thread.start()
        wait_until(lambda: sink.received > 0, timeout=5, what="the first bytes at the server")
        assert link.cut() == 1
        thread.join(10)
        assert outcome and (outcome[0] == b"" or isinstance(outcome[0], ConnectionError)), outcome
        wait_until(lambda: sink.ended, timeout=5, what="the server to see the end")
        assert sink.received < 200_000
        assert link.counters.connections_cut == 1


def test_cut_every_cuts_on_a_timer_until_switched_off():
    with tcp_server(echo) as port, \
            LinkEmulator(("127.0.0.1", port), cut_every=(0.2, 0.3), seed=7) as link:
        errors = 0
        deadline = time.monotonic() + 1.3
        while time.monotonic() < deadline:
            with connect(link) as sock:
                while time.monotonic() < deadline and not dead(sock):
                    time.sleep(0.02)
                errors += time.monotonic() < deadline
        assert errors >= 2
        assert link.counters.connections_cut >= 2
        link.set_cut_every(None)
        cuts = link.counters.connections_cut
        with connect(link) as sock:
            for _ in range(10):
                assert not dead(sock)
                time.sleep(0.05)
        assert link.counters.connections_cut == cuts


def test_down_refuses_and_kills_then_up_restores():
    with tcp_server(echo) as port, LinkEmulator(("127.0.0.1", port)) as link:
        with connect(link) as before:
            assert roundtrip(before, b"hello") == b"hello"
            link.down()
            assert dead(before)
        with connect(link) as during:
            assert dead(during)
        counters = link.counters
        assert counters.connections_cut == 1 and counters.connections_refused == 1
        link.up()
        with connect(link) as after:
            assert roundtrip(after, b"again") == b"again"


def test_stall_holds_data_then_delivers_all_of_it():
    with tcp_server(echo) as port, LinkEmulator(("127.0.0.1", port)) as link:
        with connect(link) as sock:
            assert roundtrip(sock, b"warm") == b"warm"
            data = os.urandom(20_000)
            link.stall(0.6)
            start = time.monotonic()
            sock.sendall(data)
            assert select.select([sock], [], [], 0.3)[0] == []  # nothing comes back yet
            assert recv_exactly(sock, len(data)) == data
            assert time.monotonic() - start >= 0.55
        assert link.counters.connections_cut == 0


def test_blackhole_downstream_loses_the_answer_after_the_server_acted():
    bodies: List[bytes] = []
    body = os.urandom(10_000)
    with http_server(bodies) as port, LinkEmulator(("127.0.0.1", port)) as link:
        link.blackhole("downstream")
        lost = http.client.HTTPConnection("127.0.0.1", link.port, timeout=1.0)
        with pytest.raises(TimeoutError):
            lost.request("POST", "/write", body=body)
            lost.getresponse()
        wait_until(lambda: bodies, timeout=5, what="the request at the server")
        assert bodies == [body]  # the server did act
        assert link.counters.bytes_discarded > 0

        link.blackhole(None)  # the connection with a hole in its stream is reset
        assert link.counters.connections_cut == 1
        lost.close()
        ok = http.client.HTTPConnection("127.0.0.1", link.port, timeout=5)
        ok.request("POST", "/write", body=body)
        assert ok.getresponse().read() == b"ok"
        ok.close()
        assert bodies == [body, body]


def test_blackhole_upstream_loses_the_request():
    bodies: List[bytes] = []
    with http_server(bodies) as port, LinkEmulator(("127.0.0.1", port)) as link:
        link.blackhole("upstream")
        conn = http.client.HTTPConnection("127.0.0.1", link.port, timeout=1.0)
        with pytest.raises(TimeoutError):
            conn.request("POST", "/write", body=b"x" * 1000)
            conn.getresponse()
        conn.close()
        assert bodies == []
        assert link.counters.bytes_upstream == 0


def test_unreachable_target_resets_the_client():
    with socket.socket() as closed:  # bound, never listening: connections to it are refused
        closed.bind(("127.0.0.1", 0))
        with LinkEmulator(closed.getsockname()) as link:
            try:
                sock = connect(link)
            except ConnectionResetError:
                pass  # the reset came before connect() returned (loopback is that fast)
            else:
                with sock:
                    assert dead(sock)
            wait_until(lambda: link.counters.connections_refused == 1, 5, what="the refused connection counted")


def test_stop_leaves_no_socket_and_no_thread():
    with tcp_server(echo) as port:
        fds_before = open_fds()
        link = LinkEmulator(("127.0.0.1", port), latency=0.05).start()
        assert any(t.name.startswith("linkemu") for t in threading.enumerate())
        idle, busy = connect(link), connect(link)
        assert roundtrip(idle, b"x") == b"x"
        busy.sendall(b"y" * 100_000)  # in flight while stopping
        link.stop()
        assert not link.running
        assert not any(t.name.startswith("linkemu") for t in threading.enumerate())
        assert dead(idle) and ends(busy)
        idle.close()
        busy.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(link.address, timeout=5).close()
        wait_until(lambda: open_fds() == fds_before, timeout=5, what="every socket closed")
