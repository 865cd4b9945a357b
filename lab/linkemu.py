"""A loopback TCP link emulator: an office's slow, flapping link between an agent and a collector.

``LinkEmulator`` listens on 127.0.0.1 and relays each accepted connection to ``target``. It runs
its own asyncio loop in a background thread, so synchronous tests and benchmarks can use it::

    with LinkEmulator(target=("127.0.0.1", collector_port), bandwidth_bps=256_000,
                      latency=0.15) as link:
        push_to(f"http://127.0.0.1:{link.port}/api/v1/write")
        link.set_bandwidth(64_000, "upstream")   # conditions change while it runs
        link.cut()                               # every open connection is reset now
        assert link.counters.bytes_upstream > 0

Directions: *upstream* is client -> target, *downstream* is target -> client. Knobs that take a
direction accept one value for both or an ``(upstream, downstream)`` tuple in the constructor, and
``direction="upstream" | "downstream" | "both"`` in the setters. Every setter is thread-safe: it
runs in the emulator's loop and returns once the change is in force.

- ``bandwidth_bps`` / ``set_bandwidth(bps, direction)``: a cap in bits per second (None or 0 =
  unlimited). One budget per direction, shared by every connection of the emulator (an office has
  one link): a piece waits until the link is free, then occupies it for ``len * 8 / bps``
  seconds. Up to 20 ms of idle time may be caught up (``BURST_S``).
- ``latency`` / ``set_latency(seconds, direction)``: one-way delay in seconds added to every
  piece (a 300 ms round trip is 0.15 each way). Pipelined: a piece is delivered at its arrival
  time + latency while later pieces are still read, so throughput is bounded by the window
  (``WINDOW_BYTES`` in flight per direction and connection, like a TCP window), not by one piece
  per round trip. Order is kept.
- ``piece_size`` / ``set_piece_size(n)``: the relay reads and writes at most this many bytes at
  a time (default 1400), so receivers see bodies arrive in pieces (given a cap slow enough that
  they keep up; the kernel may merge pieces a slow reader has not read yet).
- ``cut()``: reset every open connection now, both sides (SO_LINGER 0 + abort: the peers see
  ECONNRESET or EOF mid-request). ``cut_every=(min_s, max_s)`` / ``set_cut_every(range or None)``:
  do that on a timer drawn uniformly from the range by ``random.Random(seed)`` (repeatable).
- ``down()`` / ``up()``: an outage. ``down()`` cuts every connection; while down the listener
  still accepts but resets each new connection at once (the client's connect succeeds, its first
  read or write fails with a reset), like a collector host whose service is gone. ``up()`` ends it.
- ``stall(seconds)``: forward nothing in either direction for that long; connections stay open and
  the data is held, then delivered intact. ``stall(0)`` ends a stall early.
- ``blackhole("downstream" | "upstream" | None)``: silently discard what is sent that way (with
  its EOF), e.g. the request reaches the server but the answer is lost, so the client times out
  after the server acted. A stream with a hole cannot go on: when the blackhole ends, the
  connections that lost data are reset (and counted as cut).
- ``counters``: a ``LinkCounters`` snapshot: bytes delivered per direction, bytes discarded,
  connections accepted (all, including refused), refused (reset at once because the link was down
  or the target refused), cut (by cut/cut_every/down/blackhole end) and open.

``stop()`` (or leaving the ``with`` block) closes the listener, resets every relayed connection,
closes the loop and joins the thread.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Set, Tuple, Union

UPSTREAM, DOWNSTREAM = "upstream", "downstream"
DIRECTIONS = (UPSTREAM, DOWNSTREAM)
WINDOW_BYTES = 512 * 1024   # data in flight per direction and connection (read ahead of delivery)
BURST_S = 0.02              # idle link time that may be caught up by the bandwidth cap

Rate = Optional[float]
PerDirection = Union[Rate, Tuple[Rate, Rate]]


@dataclass(frozen=True)
class LinkCounters:
    bytes_upstream: int
    bytes_downstream: int
    bytes_discarded: int
    connections_accepted: int
    connections_refused: int
    connections_cut: int
    connections_open: int


def _per_direction(value: PerDirection) -> Dict[str, Any]:
    up, down = value if isinstance(value, tuple) else (value, value)
    return {UPSTREAM: up, DOWNSTREAM: down}


def _directions(direction: str) -> Tuple[str, ...]:
    if direction == "both":
        return DIRECTIONS
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'upstream', 'downstream' or 'both', not {direction!r}")
    return (direction,)


def _reset(writer: Optional[asyncio.StreamWriter]) -> None:
    """Close with SO_LINGER 0, so the peer sees a reset rather than an orderly FIN."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (OSError, AttributeError):
        pass
    writer.transport.abort()


class _Pacer:
    """The bandwidth budget of one direction of the link, shared by all its connections."""

    def __init__(self, bps: Rate) -> None:
        self.bps = bps
        self._free_at = 0.0

    async def transmit(self, nbytes: int) -> None:
        if not self.bps:
            return
        now = asyncio.get_running_loop().time()
        self._free_at = max(self._free_at, now - BURST_S) + nbytes * 8 / self.bps
        if self._free_at > now:
            await asyncio.sleep(self._free_at - now)


class _Connection:
    """One relayed connection: a pump per direction, each a reader task feeding a delayed writer."""

    def __init__(self, link: "LinkEmulator", reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.link, self.client, self.client_writer = link, reader, writer
        self.server_writer: Optional[asyncio.StreamWriter] = None
        self.task: Optional[asyncio.Task] = None
        self.aborted = False
        self.lost_data = False

    def abort(self) -> None:
        if self.aborted:
            return
        self.aborted = True
        _reset(self.client_writer)
        _reset(self.server_writer)
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    async def run(self) -> None:
        try:
            server_reader, self.server_writer = await asyncio.open_connection(*self.link.target)
        except OSError:
            self.link._refused += 1
            self.abort()
            return
        await asyncio.gather(self._pump(UPSTREAM, self.client, self.server_writer),
                             self._pump(DOWNSTREAM, server_reader, self.client_writer))
        if not self.aborted:
            self.client_writer.close()
            self.server_writer.close()

    async def _pump(self, direction: str, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        link, loop = self.link, asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue(maxsize=max(8, WINDOW_BYTES // link._piece_size))

        async def receive() -> None:
            while True:
                try:
                    data: Optional[bytes] = await reader.read(link._piece_size)
                except (OSError, asyncio.IncompleteReadError):
                    data = None              # the peer reset: pass the reset on, in order
                await queue.put((loop.time(), data))
                if not data:
                    return

        receiver = asyncio.ensure_future(receive())
        try:
            while True:
                arrived, data = await queue.get()
                if data is None:
                    self.abort()
                    return
                delay = arrived + link._latency[direction] - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if data:
                    await link._pacers[direction].transmit(len(data))
                while (left := link._stalled_until - loop.time()) > 0:
                    await asyncio.sleep(left)
                if link._blackhole == direction:
                    self.lost_data = True
                    link._discarded += len(data)
                    if not data:
                        return
                    continue
                if not data:
                    if writer.can_write_eof() and not writer.is_closing():
                        writer.write_eof()    # half-close, as the sender did
                    return
                writer.write(data)
                await writer.drain()
                link._bytes[direction] += len(data)
        except (OSError, asyncio.IncompleteReadError):
            self.abort()
        finally:
            receiver.cancel()


class LinkEmulator:
    """A TCP relay 127.0.0.1:port -> target with a bandwidth cap, latency, cuts, stalls and more."""

    def __init__(self, target: Tuple[str, int], *, bandwidth_bps: PerDirection = None,
                 latency: PerDirection = 0.0, piece_size: int = 1400,
                 cut_every: Optional[Tuple[float, float]] = None, seed: int = 0,
                 port: int = 0) -> None:
        if piece_size < 1:
            raise ValueError("piece_size must be at least 1 byte")
        self.target = target
        self._listen_port = port
        self._pacers = {d: _Pacer(bps) for d, bps in _per_direction(bandwidth_bps).items()}
        self._latency: Dict[str, float] = {d: float(v) for d, v in _per_direction(latency).items()}
        self._piece_size = piece_size
        self._cut_every = cut_every
        self._rng = random.Random(seed)
        self._stalled_until = 0.0
        self._blackhole: Optional[str] = None
        self._down = False
        self._bytes = {UPSTREAM: 0, DOWNSTREAM: 0}
        self._discarded = self._accepted = self._refused = self._cut = 0
        self._connections: Set[_Connection] = set()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._cut_task: Optional[asyncio.Task] = None
        self._thread: Optional[threading.Thread] = None
        self._started = threading.Event()
        self._start_error: Optional[BaseException] = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "LinkEmulator":
        if self.running:
            raise RuntimeError("the link emulator is already running")
        self._started.clear()
        self._start_error = None
        self._thread = threading.Thread(target=self._run, name=f"linkemu->{self.target[1]}",
                                        daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the link emulator did not start within 10 s")
        if self._start_error is not None:
            self._thread.join(10)
            raise self._start_error
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)
        if self._thread.is_alive():
            raise RuntimeError("the link emulator's thread did not stop")
        self._thread = None

    def __enter__(self) -> "LinkEmulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> Tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- conditions (thread-safe) ------------------------------------------------------------
    def set_bandwidth(self, bps: Rate, direction: str = "both") -> None:
        self._call(lambda: [setattr(self._pacers[d], "bps", bps) for d in _directions(direction)])

    def set_latency(self, seconds: float, direction: str = "both") -> None:
        self._call(lambda: self._latency.update(dict.fromkeys(_directions(direction), seconds)))

    def set_piece_size(self, nbytes: int) -> None:
        if nbytes < 1:
            raise ValueError("piece_size must be at least 1 byte")
        self._call(lambda: setattr(self, "_piece_size", nbytes))

    def set_cut_every(self, interval: Optional[Tuple[float, float]]) -> None:
        """Cut every connection at random times in [min_s, max_s] apart; None stops the timer."""
        self._call(self._start_cut_timer, interval)

    def cut(self) -> int:
        """Reset every open connection now; returns how many were cut."""
        return self._call(self._cut_all)

    def down(self) -> None:
        self._call(lambda: (setattr(self, "_down", True), self._cut_all()))

    def up(self) -> None:
        self._call(lambda: setattr(self, "_down", False))

    def stall(self, seconds: float) -> None:
        # loop.time() is time.monotonic() in the default loop
        self._call(lambda: setattr(self, "_stalled_until", time.monotonic() + seconds))

    def blackhole(self, direction: Optional[str]) -> None:
        if direction is not None:
            _directions(direction)
            if direction == "both":
                raise ValueError("blackhole one direction at a time, or use stall()/down()")
        self._call(self._set_blackhole, direction)

    @property
    def counters(self) -> LinkCounters:
        return self._call(lambda: LinkCounters(
            self._bytes[UPSTREAM], self._bytes[DOWNSTREAM], self._discarded, self._accepted,
            self._refused, self._cut, len(self._connections)))

    # -- inside the loop ---------------------------------------------------------------------
    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn in the emulator's loop (directly when it is not running); return its result."""
        if not self.running or self._loop is None:
            return fn(*args)
        future: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed back to the calling thread
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return future.result(10)

    def _cut_all(self) -> int:
        victims = [c for c in self._connections if not c.aborted]
        for conn in victims:
            conn.abort()
        self._cut += len(victims)
        return len(victims)

    def _set_blackhole(self, direction: Optional[str]) -> None:
        if direction != self._blackhole:
            holed = [c for c in self._connections if c.lost_data and not c.aborted]
            for conn in holed:
                conn.abort()
            self._cut += len(holed)
        self._blackhole = direction

    def _start_cut_timer(self, interval: Optional[Tuple[float, float]]) -> None:
        self._cut_every = interval
        if self._loop is None:
            return
        if self._cut_task is not None:
            self._cut_task.cancel()
        self._cut_task = asyncio.ensure_future(self._cut_timer(*interval)) if interval else None

    async def _cut_timer(self, low: float, high: float) -> None:
        while True:
            await asyncio.sleep(self._rng.uniform(low, high))
            self._cut_all()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._accepted += 1
        if self._down:
            self._refused += 1
            _reset(writer)
            return
        # Our own task, not this handler's: asyncio (3.11) logs handler tasks that end cancelled.
        conn = _Connection(self, reader, writer)
        self._connections.add(conn)
        conn.task = asyncio.ensure_future(conn.run())
        conn.task.add_done_callback(lambda _: self._connections.discard(conn))

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._accept, "127.0.0.1", self._listen_port)
        self.port = server.sockets[0].getsockname()[1]
        self._start_cut_timer(self._cut_every)
        self._started.set()
        await self._stopping.wait()
        server.close()
        self._start_cut_timer(None)
        tasks = [c.task for c in self._connections]
        for conn in list(self._connections):
            conn.abort()                      # reset, but not counted as a cut
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        await asyncio.sleep(0)                # let the aborted transports close their sockets

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            self._start_error = exc
        finally:
            self._started.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None
