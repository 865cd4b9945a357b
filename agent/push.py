"""Store-and-forward push: the ``push:`` config section, the queue's own metrics, and the component
that ties the runner's batches to the durable queue (:mod:`agent.queue`) and the shipper
(:mod:`agent.shipper`).

:func:`component` (wired in ``agent.app``) makes the one :class:`Push` of a config: its ``sink``
takes every batch, its ``run`` writes them to the queue and ships them, ``close`` flushes, and its
``inputs`` bring one input, ``queue``, whose ``collect()`` reports the queue and the shipper
(``commune_agent_queue_*``, ``commune_agent_push_*``); those samples are served on ``/metrics``
and pushed like any other.

Light at import time (the agent's config model imports every section): the queue, the shipper and
the protobuf/snappy codec are imported only when push is enabled.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Iterator, List, Literal, Optional

from contract.samples import Sample, sample
from contract.schema import Duration, Secret, Size
from contract import thresholds

NAME = "push"
INPUT_NAME = "queue"
TOKEN_FILE = "push.token"
QUEUE_FILE = "queue.db"
MAX_PENDING = 10_000  # batches waiting in memory for the queue writer (a hung disk)

log = logging.getLogger(__name__)


@dataclass
class QueueSection:
    # Queue file (default: <agent.state_dir>/queue.db).
    path: str = ""
    # Batches older than this are dropped (reason too_old). Prometheus must accept samples this
    # old: set its out_of_order_time_window at least this long.
    max_age: Duration = Duration(thresholds.QUEUE_MAX_AGE_S)  # contract/thresholds.yaml
    # Stored payload bound; the oldest batches are dropped first (reason queue_full).
    max_size: Size = Size(200_000_000)
    # always: every batch fsynced before it counts as stored; interval: the WAL is fsynced every
    # fsync_interval (a power cut loses at most that much); never: left to the OS.
    fsync: Literal["always", "interval", "never"] = "interval"
    fsync_interval: Duration = Duration(5)

    def validate(self) -> Iterator[tuple]:
        if self.max_age <= 0:
            yield "max_age", "must be greater than 0s"
        if self.max_size <= 0:
            yield "max_size", "must be greater than 0"
        if self.fsync_interval <= 0:
            yield "fsync_interval", "must be greater than 0s"


@dataclass
class Config:
    enabled: bool = False
    # Remote-write endpoint, e.g. https://collector.example.gov.vn:9722/api/v1/write.
    url: str = ""
    # Token sent as "Authorization: Bearer"; empty: the token file written by enrollment.
    bearer_token: Secret = Secret("")
    # Without a token nothing is pushed (the data waits in the queue until enrollment). false:
    # push without one, to a receiver that needs none (e.g. Prometheus itself on a trusted LAN).
    require_token: bool = True
    # Default: <agent.state_dir>/push.token (written by "commune-agent enroll").
    token_file: str = ""
    # CA certificate(s) to verify the collector with, instead of the system store.
    ca_file: str = ""
    # SHA-256 fingerprint of the collector's certificate (hex, colons allowed); alone, it
    # authenticates the server by itself (a self-signed collector certificate works).
    pin_sha256: str = ""
    timeout: Duration = Duration(30)
    max_samples_per_request: int = 2000
    # Fresh samples wait until the oldest unsent one is this old (or a request is full), so that a
    # request carries minutes of collections: fewer, better-compressed requests on a weak link.
    # A backlog after an outage is sent at once. 0s: send every collection as it comes.
    batch_delay: Duration = Duration(120)
    min_backoff: Duration = Duration(1)
    max_backoff: Duration = Duration(60)
    # How often the queue's own metrics (input "queue") are collected.
    interval: Duration = Duration(30)
    queue: QueueSection = field(default_factory=QueueSection)

    def validate(self) -> Iterator[tuple]:
        if self.enabled and not self.url:
            yield "url", "required when push is enabled"
        if self.url:
            parts = urllib.parse.urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                yield "url", (f"expected an http:// or https:// URL like "
                              f"https://collector.example:9722/api/v1/write, got {self.url!r}")
            elif parts.scheme == "http" and (self.ca_file or self.pin_sha256):
                yield "url", "ca_file and pin_sha256 need an https:// URL"
        if self.ca_file and not os.path.isfile(self.ca_file):
            yield "ca_file", f"file {self.ca_file} does not exist"
        if self.pin_sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", self.pin_sha256.replace(":", "")):
            yield "pin_sha256", "expected a SHA-256 fingerprint: 64 hex digits, colons allowed"
        if self.bearer_token and self.token_file:
            yield "token_file", "set bearer_token or token_file, not both"
        if self.max_samples_per_request < 1:
            yield "max_samples_per_request", "must be at least 1"
        for key in ("timeout", "min_backoff", "interval"):
            if getattr(self, key) <= 0:
                yield key, "must be greater than 0s"
        if self.batch_delay > 900:
            yield "batch_delay", f"must be at most 15m (data would arrive too late for alerts), got {self.batch_delay:g}s"
        if self.max_backoff < self.min_backoff:
            yield "max_backoff", f"must not be shorter than min_backoff ({self.min_backoff:g}s)"


def token_path(section: Config, state_dir: str) -> str:
    return section.token_file or os.path.join(state_dir, TOKEN_FILE)


# ---------------------------------------------------------------- the component

class Push:
    """Batches in (``sink``), durable queue, shipper out. One per running agent."""

    def __init__(self, section: Config, state_dir: str, clock=time.time):
        from agent.queue import Queue
        from agent.shipper import HttpClient, Shipper, TokenSource

        q = section.queue
        self.section = section
        self.clock = clock
        self.queue = Queue(q.path or os.path.join(state_dir, QUEUE_FILE), q.max_age, q.max_size, q.fsync, clock)
        self.client = HttpClient(section.url, section.timeout, section.ca_file, section.pin_sha256)
        self.shipper = Shipper(self.queue, self.client,
                               TokenSource(section.bearer_token.reveal(), token_path(section, state_dir)),
                               section.max_samples_per_request, section.min_backoff, section.max_backoff,
                               clock, batch_delay=section.batch_delay, require_token=section.require_token)
        self._pending: collections.deque = collections.deque()
        self._overflow = 0  # samples refused because the writer fell MAX_PENDING batches behind
        self._overflow_lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._new: Optional[asyncio.Event] = None
        self._closed = False
        # the inputs this component brings to the runner: the queue's own metrics
        self.inputs = [QueueInput(self, section.interval)]

    # ------------------------------------------------------------ runner side

    def sink(self, batch) -> None:
        """Take one collection (called on the event loop: only an append to memory)."""
        if len(self._pending) >= MAX_PENDING:
            with self._overflow_lock:
                self._overflow += len(batch.samples)
            return
        self._pending.append(batch)
        if self._loop is not None and self._new is not None:
            self._loop.call_soon_threadsafe(self._new.set)

    def store_pending(self) -> None:
        """Encode and append what the sink took (blocking: a worker thread, or close())."""
        from agent.queue import Entry

        batches = []
        while self._pending:
            batches.append(self._pending.popleft())
        with self._overflow_lock:
            overflow, self._overflow = self._overflow, 0
        if overflow:
            self.queue.count_drop("queue_full", overflow)
        entries: List[Entry] = []
        for batch in batches:
            try:
                entries.extend(encode_batch(batch, self.section.max_samples_per_request, self.queue.count_drop))
            except Exception as exc:  # a bug of ours: count it and keep the writer (and every later batch)
                self.queue.count_drop("rejected", len(batch.samples))
                log.exception("input %s: batch of %d samples not queued: %s", batch.input, len(batch.samples), exc)
        self.queue.append(entries)

    # ------------------------------------------------------------ loops

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._new = asyncio.Event()
        appended = asyncio.Event()
        if self.queue.stats().batches:
            appended.set()
        shipper = asyncio.ensure_future(self.shipper.run(stop, appended))
        try:
            await self._writer(stop, appended)
        finally:
            await asyncio.gather(shipper, return_exceptions=True)

    async def _writer(self, stop: asyncio.Event, appended: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        q = self.section.queue
        next_sync = loop.time() + q.fsync_interval
        next_prune = loop.time()
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                waiter = asyncio.ensure_future(self._new.wait())
                await asyncio.wait({waiter, stopper}, timeout=max(0.05, next_sync - loop.time()),
                                   return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                self._new.clear()
                if self._pending or self._overflow:
                    await loop.run_in_executor(None, self.store_pending)
                    appended.set()
                now = loop.time()
                if now >= next_prune:
                    await loop.run_in_executor(None, self.queue.prune)
                    next_prune = now + 10.0
                if now >= next_sync:  # "interval": the WAL fsync; otherwise upkeep only
                    await loop.run_in_executor(None, self.queue.checkpoint)
                    next_sync = now + (q.fsync_interval if q.fsync == "interval" else 60.0)
        finally:
            stopper.cancel()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.store_pending()
        finally:
            self.client.close()
            self.queue.close()

    # ------------------------------------------------------------ the queue's own metrics

    def samples(self) -> List[Sample]:
        st = self.queue.stats()
        now_ms = self.clock() * 1000
        age = max(0.0, (now_ms - st.oldest_timestamp_ms) / 1000) if st.oldest_timestamp_ms is not None else 0.0
        out = [
            sample("commune_agent_queue_size_bytes", st.bytes),
            sample("commune_agent_queue_max_size_bytes", self.queue.max_size),
            sample("commune_agent_queue_samples", st.samples + sum(len(b.samples) for b in list(self._pending))),
            sample("commune_agent_queue_batches", st.batches),
            sample("commune_agent_queue_oldest_age_seconds", round(age, 3)),
            sample("commune_agent_queue_corrupt_files_total", self.queue.corrupt_files),
        ]
        dropped = self.queue.drop_counts()
        with self._overflow_lock:
            dropped["queue_full"] += self._overflow
        out += [sample("commune_agent_queue_dropped_samples_total", n, reason=r) for r, n in sorted(dropped.items())]
        sh = self.shipper
        out += [
            sample("commune_agent_push_sent_batches_total", sh.sent_batches),
            sample("commune_agent_push_sent_samples_total", sh.sent_samples),
        ]
        out += [sample("commune_agent_push_failed_requests_total", n, reason=r) for r, n in sorted(sh.failed.items())]
        if sh.last_success is not None:
            out.append(sample("commune_agent_push_last_success_timestamp_seconds", round(sh.last_success, 3)))
        return out


class QueueInput:
    """The ``queue`` input: the push queue's and the shipper's state as samples."""

    def __init__(self, push: Push, interval: float):
        self.name = INPUT_NAME
        self.interval = interval
        self.timeout = min(5.0, interval)
        self.push = push

    def collect(self) -> List[Sample]:
        return self.push.samples()


def encode_batch(batch, max_samples: int, count_drop) -> list:
    """A runner batch as queue entries of at most ``max_samples`` samples each. A sample a
    receiver would refuse (bad name or label) is left out and counted as ``rejected``."""
    from contract import remote_write
    from agent.queue import Entry

    series = [({**s.labels, "__name__": s.name}, [(s.value, batch.timestamp_ms)]) for s in batch.samples]
    out = []
    for chunk in (series[i:i + max_samples] for i in range(0, len(series), max_samples)):
        try:
            out.append(Entry(batch.timestamp_ms, len(chunk), remote_write.encode(chunk)))
            continue
        except remote_write.RemoteWriteError:
            pass
        good = []  # rare: an input bug; find the culprits one by one
        for one in chunk:
            try:
                remote_write.serialize([one])  # every check a receiver makes, and the encoding itself
                good.append(one)
            except remote_write.RemoteWriteError as exc:
                count_drop("rejected", 1)
                log.error("input %s: sample not pushed: %s", batch.input, exc)
        if good:
            out.append(Entry(batch.timestamp_ms, len(good), remote_write.encode(good)))
    return out


# ---------------------------------------------------------------- wiring

def component(config) -> Optional[Push]:
    """The push queue of this config (``agent.app`` runs it and its ``inputs``); None when off."""
    if not config.push.enabled:
        return None
    return Push(config.push, config.agent.state_dir)
