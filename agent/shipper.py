"""The shipper: sends the push queue to the collector with Prometheus remote write 1.0.

One request at a time over one kept-alive connection (stdlib ``http.client``, in a worker
thread: the event loop never blocks on the network). Each request joins whole queued batches up
to ``max_samples_per_request`` samples (queued payloads are protobuf ``WriteRequest`` fragments, so
joining is concatenation).

- **2xx**: the batches are deleted from the queue.
- **5xx, 429, 408, network and TLS errors**: kept and retried after an exponential backoff with
  jitter (``min_backoff`` doubling to ``max_backoff``); a ``Retry-After`` header is honoured.
- **Any other status** (4xx, and anything unexpected like a redirect): logged with the answer's
  first line, the batches are dropped and counted (``rejected``); retrying cannot help.

Backlog replay: requests go out back to back while the queue has data, alternating between the
newest batches and the oldest ones, so fresh data is never stuck behind hours of backlog and the
backlog drains at the link's speed, far faster than it was collected. Receivers must accept
out-of-order samples (Prometheus: ``out_of_order_time_window`` at least the queue's ``max_age``).

TLS: ``ca_file`` verifies the collector against that CA instead of the system store; ``pin_sha256``
accepts only a server certificate with that SHA-256 fingerprint (with no ``ca_file``, the pin alone
authenticates the server, so a self-signed collector certificate works).
"""
from __future__ import annotations

import asyncio
import email.utils
import hashlib
import http.client
import logging
import os
import random
import socket
import ssl
import threading
import time
import urllib.parse
from collections import Counter
from typing import Callable, Dict, NamedTuple, Optional

from agent import __version__
from agent import remote_write

log = logging.getLogger(__name__)

FAIL_REASONS = ("server_error", "throttled", "network", "rejected")
USER_AGENT = f"commune-agent/{__version__}"


class PinMismatch(ssl.SSLError):
    pass


class Response(NamedTuple):
    status: int
    headers: Dict[str, str]
    body: bytes


def normalize_pin(pin: str) -> str:
    """``AB:CD:...`` or ``abcd...`` -> lowercase hex without colons."""
    return pin.replace(":", "").strip().lower()


class HttpClient:
    """A minimal keep-alive HTTP(S) client for one base URL; blocking, one request at a time."""

    def __init__(self, url: str, timeout: float = 30.0, ca_file: str = "", pin_sha256: str = ""):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
        self.url = url
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.timeout = timeout
        self.pin = normalize_pin(pin_sha256)
        self.context: Optional[ssl.SSLContext] = None
        if self.scheme == "https":
            ctx = ssl.create_default_context(cafile=ca_file or None)
            if self.pin and not ca_file:  # the pin authenticates the server on its own
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self.context = ctx
        self._conn: Optional[http.client.HTTPConnection] = None
        self._lock = threading.Lock()
        self._aborted = False

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.scheme == "https":
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                   context=self.context)
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            conn.connect()
            if self.pin:
                der = conn.sock.getpeercert(binary_form=True)
                got = hashlib.sha256(der).hexdigest()
                if got != self.pin:
                    conn.close()
                    raise PinMismatch(f"server certificate SHA-256 {got} does not match pin_sha256")
            with self._lock:
                self._conn = conn
        return self._conn

    def request(self, method: str, path: Optional[str], body: bytes, headers: Dict[str, str]) -> Response:
        """Send one request (reconnecting if the kept-alive connection died); raises OSError,
        ssl.SSLError or http.client.HTTPException on transport failures."""
        for attempt in (1, 2):
            if self._aborted:
                raise ConnectionAbortedError("the agent is stopping")
            conn = self._connection()
            try:
                conn.request(method, path or self.path, body=body,
                             headers={"User-Agent": USER_AGENT, **headers})
                resp = conn.getresponse()
                data = resp.read(1 << 20)
                out = Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
                if resp.will_close or not resp.isclosed():
                    self.close()
                return out
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()  # a kept-alive connection the server closed meanwhile: one fresh try
                if attempt == 2:
                    raise
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def abort(self) -> None:
        """From another thread: make a request in progress fail now, and any later one (shutdown)."""
        with self._lock:
            self._aborted = True
            conn = self._conn
        sock = getattr(conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def retry_after_seconds(value: Optional[str], now: float) -> Optional[float]:
    """``Retry-After`` as seconds from now (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


class Backoff:
    """Exponential backoff with jitter: attempt n waits between half and all of
    ``min(max, min * 2**n)``."""

    def __init__(self, minimum: float, maximum: float, rand: Callable[[], float] = random.random):
        self.minimum, self.maximum, self.rand = minimum, maximum, rand
        self.attempt = 0

    def next(self) -> float:
        ceiling = min(self.maximum, self.minimum * (2 ** self.attempt))
        self.attempt += 1
        return ceiling / 2 + self.rand() * ceiling / 2

    def reset(self) -> None:
        self.attempt = 0


class TokenSource:
    """The bearer token: the configured one, else the enrollment token file (re-read when it
    changes, so enrolling while the agent runs takes effect at the next request)."""

    def __init__(self, token: str = "", token_file: str = ""):
        self.token = token
        self.token_file = token_file
        self._cache = (None, "")

    def get(self) -> str:
        if self.token or not self.token_file:
            return self.token
        try:
            st = os.stat(self.token_file)
        except OSError:
            return ""
        key = (st.st_mtime_ns, st.st_size)
        if self._cache[0] != key:
            with open(self.token_file, encoding="utf-8") as f:
                self._cache = (key, f.read().strip())
        return self._cache[1]


class Shipper:
    def __init__(self, queue, client: HttpClient, tokens: TokenSource, max_samples: int = 2000,
                 min_backoff: float = 1.0, max_backoff: float = 60.0, clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random, batch_delay: float = 0.0):
        self.queue = queue
        self.batch_delay = batch_delay
        self.client = client
        self.tokens = tokens
        self.max_samples = max_samples
        self.backoff = Backoff(min_backoff, max_backoff, rand)
        self.clock = clock
        self.sent_batches = 0
        self.sent_samples = 0
        self.failed: Counter = Counter({r: 0 for r in FAIL_REASONS})
        self.last_success: Optional[float] = None
        self._newest_turn = True

    # ------------------------------------------------------------ one step (blocking; a thread)

    def ship_once(self) -> Optional[float]:
        """Send one request from the queue. Returns None if the queue is empty, 0 to go on at
        once, or the seconds to wait before the next try (a back-off, or the batch delay of
        fresh samples that do not fill a request yet)."""
        if self.batch_delay > 0:
            stats = self.queue.stats()
            if stats.batches and stats.samples < self.max_samples and stats.oldest_timestamp_ms is not None:
                due = stats.oldest_timestamp_ms / 1000 + self.batch_delay - self.clock()
                if due > 0:
                    return due
        taken = self.queue.take(self.max_samples, newest=self._newest_turn)
        if taken is None:
            return None
        parts = []
        for rid, payload in zip(taken.ids, taken.payloads):
            try:
                parts.append(remote_write.decompress(payload))
            except remote_write.RemoteWriteError as exc:  # passed its CRC, so written broken: a bug
                log.error("push queue: batch %d cannot be read (%s); dropped", rid, exc)
                self.queue.drop([rid], "corrupt")
                return 0.0
        body = remote_write.compress(b"".join(parts))
        headers = dict(remote_write.HEADERS)
        token = self.tokens.get()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            resp = self.client.request("POST", None, body, headers)
        except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
            self.failed["network"] += 1
            delay = self.backoff.next()
            log.warning("push to %s failed: %s; retrying in %.1fs", self.client.url,
                        exc or type(exc).__name__, delay)
            return delay
        if 200 <= resp.status < 300:
            self.sent_batches += len(taken.ids)
            self.sent_samples += taken.samples
            self.last_success = self.clock()
            self._newest_turn = not self._newest_turn
            if not self.queue.ack(taken.ids):  # full disk: do not resend the same batches in a loop
                return self.backoff.next()
            self.backoff.reset()
            return 0.0
        detail = resp.body[:300].decode("utf-8", "replace").strip().splitlines()
        detail = detail[0] if detail else ""
        if resp.status >= 500 or resp.status in (429, 408) or resp.status < 200:
            self.failed["throttled" if resp.status == 429 else "server_error"] += 1
            delay = self.backoff.next()
            after = retry_after_seconds(resp.headers.get("retry-after"), self.clock())
            if after is not None:
                delay = min(max(after, 0.0), 3600.0)
            log.warning("push to %s: HTTP %d %s; retrying in %.1fs", self.client.url, resp.status,
                        detail, delay)
            return delay
        self.failed["rejected"] += 1
        self.queue.drop(taken.ids, "rejected")
        log.error("push to %s: HTTP %d %s; dropped %d samples (%d batches), not retried",
                  self.client.url, resp.status, detail, taken.samples, len(taken.ids))
        return 0.0

    # ------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event, appended: asyncio.Event) -> None:
        """Ship until ``stop``; ``appended`` is set by the queue writer when there is new data."""
        loop = asyncio.get_running_loop()
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                appended.clear()  # before looking at the queue: an append from now on wakes us
                work = loop.run_in_executor(None, self.ship_once)
                done, _ = await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if work not in done:  # shutting down: cut the request in flight
                    self.client.abort()
                    await asyncio.gather(work, return_exceptions=True)
                    break
                try:
                    delay = work.result()
                except Exception as exc:  # a bug or an unexpected queue error: log, back off
                    log.error("push: %s", exc, exc_info=True)
                    delay = self.backoff.next()
                if delay == 0.0:
                    continue
                if delay is None:  # empty: wait for new data
                    waiter = asyncio.ensure_future(appended.wait())
                    await asyncio.wait({waiter, stopper}, timeout=5.0, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                else:
                    await asyncio.wait({stopper}, timeout=delay)
        finally:
            stopper.cancel()
            self.client.close()
