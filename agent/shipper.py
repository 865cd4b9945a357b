"""The shipper: sends the push queue to the collector with Prometheus remote write 1.0.

One request at a time over one kept-alive connection (stdlib ``http.client``, in a worker
thread: the event loop never blocks on the network). Each request joins whole queued batches up
to ``max_samples_per_request`` samples (queued payloads are protobuf ``WriteRequest`` fragments, so
joining is concatenation).

What each answer means (the contract with the collector, collector/README.md: data is deleted only
when it is its own fault):

- **2xx**: the batches are deleted from the queue. A 200 may say, in ``X-Commune-Dropped-Samples``,
  how many samples the collector left out because they can never be accepted: counted as dropped
  (``rejected``).
- **400, 413, 422**: the data itself is refused. A request of several batches is split (half the
  batches, then half again) and sent again, so that only the batch at fault is dropped and
  counted (``rejected``); the request size grows back after successes.
- **408, 429, 5xx, network and TLS errors**: kept and retried after an exponential backoff with
  jitter (``min_backoff`` doubling to ``max_backoff``); a ``Retry-After`` header is honoured but
  never waits less than ``min_backoff``.
- **401, 403** (``unauthorized``) and **404, 3xx and any other status** (``misconfigured``): a
  credential or address an operator must fix. The data is kept (within the queue's bounds),
  logged once, retried every ``max_backoff``.
- **No token** (neither ``bearer_token`` nor the enrollment token file): nothing is sent until
  there is one (``require_token: false`` pushes without, to a receiver that needs none).

Delays are waited on the monotonic clock: a wall-clock jump either way changes no wait. Fresh
samples wait at most ``batch_delay`` (also when the clock was set back), and new data wakes the
shipper so a request that has filled goes at once.

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
from contract import remote_write

log = logging.getLogger(__name__)

FAIL_REASONS = ("server_error", "throttled", "network", "timeout", "rejected", "unauthorized", "misconfigured")
DROPPED_HEADER = "x-commune-dropped-samples"  # the collector's count of samples left out of a 200
REFUSED = (400, 413, 422)  # the data itself refused: split, and drop only the batch at fault
MAX_RETRY_AFTER = 3600.0
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
                 rand: Callable[[], float] = random.random, batch_delay: float = 0.0, require_token: bool = True,
                 monotonic: Callable[[], float] = time.monotonic):
        self.queue = queue
        self.batch_delay = batch_delay
        self.client = client
        self.tokens = tokens
        self.require_token = require_token
        self.max_samples = max_samples
        self.backoff = Backoff(min_backoff, max_backoff, rand)
        self.clock = clock
        self.monotonic = monotonic
        self.sent_batches = 0
        self.sent_samples = 0
        self.failed: Counter = Counter({r: 0 for r in FAIL_REASONS})
        self.last_success: Optional[float] = None
        self.wake_on_data = False  # the last delay was the batch delay: new data may end it
        self._newest_turn = True
        self._max_batches: Optional[int] = None  # set while isolating a refused batch
        self._fresh_since: Optional[float] = None  # monotonic time fresh data started to wait
        self._complaint: Optional[str] = None  # the problem last logged, so it is logged once

    # ------------------------------------------------------------ one step (blocking; a thread)

    def _batch_due(self) -> float:
        """Seconds fresh samples still wait for the batch delay (<= 0: send now)."""
        stats = self.queue.stats()
        if not stats.batches or stats.samples >= self.max_samples or stats.oldest_timestamp_ms is None:
            return 0.0
        now = self.monotonic()
        if self._fresh_since is None:
            self._fresh_since = now
        by_stamp = stats.oldest_timestamp_ms / 1000 + self.batch_delay - self.clock()  # a backlog: now
        return min(by_stamp, self._fresh_since + self.batch_delay - now)  # never more than batch_delay

    def _complain(self, key: str, level: int, message: str, *args) -> None:
        if key != self._complaint:
            log.log(level, message, *args)
            self._complaint = key

    def ship_once(self) -> Optional[float]:
        """Send one request from the queue. Returns None if the queue is empty, 0 to go on at
        once, or the seconds to wait before the next try (a back-off, or the batch delay of
        fresh samples that do not fill a request yet: then :attr:`wake_on_data` is set)."""
        self.wake_on_data = False
        if self.batch_delay > 0:
            due = self._batch_due()
            if due > 0:
                self.wake_on_data = True
                return due
        token = self.tokens.get()
        if not token and self.require_token:
            if self.queue.stats().batches:
                self._complain("no-token", logging.WARNING, "push to %s: no token yet (enroll this agent: "
                               "commune-agent enroll); data is kept until there is one", self.client.url)
                return self.backoff.maximum
            return None
        taken = self.queue.take(self.max_samples, newest=self._newest_turn, max_batches=self._max_batches)
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
        headers[remote_write.AGENT_TIME_HEADER] = f"{self.clock():.3f}"
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
        detail = resp.body[:300].decode("utf-8", "replace").strip().splitlines()
        detail = detail[0] if detail else ""
        if 200 <= resp.status < 300:
            return self._delivered(taken, resp, detail)
        if resp.status in REFUSED:
            return self._refused(taken, resp.status, detail)
        if resp.status >= 500 or resp.status in (429, 408):
            self.failed["throttled" if resp.status == 429 else "timeout" if resp.status == 408
                        else "server_error"] += 1
            delay = self.backoff.next()
            after = retry_after_seconds(resp.headers.get("retry-after"), self.clock())
            if after is not None:
                delay = max(delay, self.backoff.minimum, min(after, MAX_RETRY_AFTER))
            log.warning("push to %s: HTTP %d %s; retrying in %.1fs", self.client.url, resp.status,
                        detail, delay)
            return delay
        reason = "unauthorized" if resp.status in (401, 403) else "misconfigured"
        self.failed[reason] += 1
        what = ("the collector does not accept this agent's token (re-enroll it: commune-agent enroll)"
                if reason == "unauthorized" else "check push.url")
        self._complain(f"{reason}-{resp.status}", logging.ERROR,
                       "push to %s: HTTP %d %s; %s; the data is kept and retried every %gs", self.client.url,
                       resp.status, detail, what, self.backoff.maximum)
        return self.backoff.maximum

    def _delivered(self, taken, resp: Response, detail: str) -> float:
        try:
            left_out = min(taken.samples, max(0, int(resp.headers.get(DROPPED_HEADER, "0"))))
        except ValueError:
            left_out = 0
        if left_out:
            self.queue.count_drop("rejected", left_out)
            log.warning("push to %s: the collector left out %d samples it can never accept: %s",
                        self.client.url, left_out, detail)
        self.sent_batches += len(taken.ids)
        self.sent_samples += taken.samples - left_out
        self.last_success = self.clock()
        self._newest_turn = not self._newest_turn
        self._fresh_since = None
        if self._max_batches is not None:  # isolating a refused batch: grow back
            self._max_batches *= 2
            if self._max_batches >= 1024:
                self._max_batches = None
        if self._complaint is not None:
            log.info("push to %s works again", self.client.url)
            self._complaint = None
        self.queue.ack(taken.ids)  # if the disk refuses the delete, the queue never hands them out again
        self.backoff.reset()
        return 0.0

    def _refused(self, taken, status: int, detail: str) -> float:
        self.failed["rejected"] += 1
        if len(taken.ids) > 1:  # which batch is at fault? send half as many, and again
            self._max_batches = len(taken.ids) // 2
            log.warning("push to %s: HTTP %d %s; sending the %d batches in smaller requests to find the one "
                        "at fault", self.client.url, status, detail, len(taken.ids))
            return 0.0
        self.queue.drop(taken.ids, "rejected")
        log.error("push to %s: HTTP %d %s; dropped %d samples (1 batch): the collector can never accept them",
                  self.client.url, status, detail, taken.samples)
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
                if delay is None or self.wake_on_data:  # wait for new data (at most the delay)
                    waiter = asyncio.ensure_future(appended.wait())
                    await asyncio.wait({waiter, stopper}, timeout=5.0 if delay is None else delay,
                                       return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                else:  # a back-off: new data does not end it
                    await asyncio.wait({stopper}, timeout=delay)
        finally:
            stopper.cancel()
            self.client.close()
