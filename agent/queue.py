"""The durable push queue: every collection's samples, on disk until the collector has them.

One SQLite database (``<state_dir>/queue.db``) in WAL mode, one row per batch: the collection
timestamp, its sample count, the remote-write protobuf payload (snappy compressed) and a CRC32 of
that payload. It survives agent restarts and power loss and is bounded twice:

- by **age** (``max_age``, default 7d): batches older than that are dropped (``too_old``);
- by **size** (``max_size``, default 200MB of stored payload): when an append would go over, the
  oldest batches are dropped first (``queue_full``).

Every drop is counted by reason in :attr:`Queue.dropped` (samples): ``too_old``, ``queue_full``,
``disk_full`` (the disk refused the write: the oldest batches are given up to make room, and if
that is not enough the new batch is), ``rejected`` (the receiver answered 4xx), ``corrupt`` (a
payload failed its CRC, or the whole file was unreadable). Nothing is ever dropped silently.

**Fsync policy** (``fsync``):

- ``always``: ``synchronous=FULL``; each append is on stable storage before it returns. A power
  cut loses nothing that was appended.
- ``interval`` (default): ``synchronous=NORMAL``; appends reach the WAL (and the OS) at once, so a
  crash or kill of the agent loses nothing, and the WAL is fsynced by :meth:`Queue.checkpoint`,
  which the push loop calls every ``fsync_interval`` (default 5s). A power cut loses at most the
  last ``fsync_interval`` of collections; the database itself stays consistent.
- ``never``: ``synchronous=OFF``; the OS decides. Survives agent crashes; a power cut may lose or
  corrupt the queue (then set aside as below).

**Corruption**: on open the file gets ``PRAGMA quick_check``; a file that is not a database, fails
the check or turns out malformed later is closed, renamed ``queue.db.corrupt-<UTC time>`` (with
its ``-wal``/``-shm``), logged, counted in :attr:`Queue.corrupt_files`, and a fresh queue starts.

**Full disk**: a write refused with ``SQLITE_FULL``/``ENOSPC`` never raises out of the queue; the
batches that could not be kept are counted as ``disk_full`` and the agent keeps running.

All methods are thread-safe (one connection behind a lock) and blocking: the push loop calls them
from worker threads, never on the event loop.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import zlib
from collections import Counter
from typing import Callable, Iterable, List, NamedTuple, Optional

from agent import queue_db
from contract import thresholds

log = logging.getLogger(__name__)

DROP_REASONS = ("too_old", "queue_full", "disk_full", "rejected", "corrupt")
FSYNC_POLICIES = {"always": "FULL", "interval": "NORMAL", "never": "OFF"}

class Entry(NamedTuple):
    """A batch to append: collection time, number of samples, compressed remote-write payload."""

    timestamp_ms: int
    samples: int
    payload: bytes


class Taken(NamedTuple):
    """Batches handed to the shipper: their ids (for ack/drop), payloads, and sample count."""

    ids: List[int]
    payloads: List[bytes]
    samples: int


class Stats(NamedTuple):
    bytes: int
    samples: int
    batches: int
    oldest_timestamp_ms: Optional[int]


class Queue:
    def __init__(self, path: str, max_age: float = thresholds.QUEUE_MAX_AGE_S, max_size: int = 200_000_000,
                 fsync: str = "interval", clock: Callable[[], float] = time.time):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, got {fsync!r}")
        self.path = str(path)
        self.max_age = float(max_age)
        self.max_size = int(max_size)
        self.fsync = fsync
        self.clock = clock
        self.dropped: Counter = Counter({r: 0 for r in DROP_REASONS})
        self.corrupt_files = 0
        self._lock = threading.RLock()
        self._conn: Optional[sqlite3.Connection] = None
        self._bytes = self._samples = self._batches = 0
        self._oldest: Optional[int] = None
        self._after: List[Callable[[], None]] = []
        self._acked: set = set()  # delivered, but the delete was refused (full disk)
        with self._lock:
            self._open()

    # ------------------------------------------------------------ opening, corruption

    def _open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        try:
            self._connect()
        except (sqlite3.DatabaseError, queue_db.Corrupt) as exc:
            if isinstance(exc, queue_db.Corrupt) or queue_db.is_corrupt(exc):
                self._samples = queue_db.count_readable(self.path)
                self._set_aside(str(exc))
                self._connect()
            elif queue_db.is_full(exc):
                log.error("push queue %s: cannot open, the disk is full; new batches are dropped "
                          "until there is room", self.path)
                self._close_conn()
            else:
                raise

    def _connect(self) -> None:
        self._conn, (n, samples, size, oldest) = queue_db.connect(self.path, FSYNC_POLICIES[self.fsync])
        self._batches, self._samples, self._bytes, self._oldest = n, samples, size, oldest
        if n:
            log.info("push queue %s: %d batches (%d samples) waiting from before the restart",
                     self.path, n, samples)

    def _set_aside(self, why: str) -> None:
        self._close_conn()
        target = queue_db.set_aside(self.path, self.clock())
        self.corrupt_files += 1
        if self._samples:
            self.dropped["corrupt"] += self._samples
        log.error("push queue %s is corrupt (%s); set aside as %s, starting a fresh queue (%s)", self.path, why,
                  target, f"{self._samples} samples lost" if self._samples else "what it held cannot be counted")
        self._acked.clear()
        self._bytes = self._samples = self._batches = 0
        self._oldest = None

    def _close_conn(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    def _run(self, fn, *args):
        """Run ``fn(conn, ...)`` in a transaction; a corrupt file is set aside and reopened."""
        if self._conn is None:
            self._open()
            if self._conn is None:
                raise sqlite3.OperationalError("database or disk is full")
        conn = self._conn
        self._after: List[Callable[[], None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args)
                conn.execute("COMMIT")
            except BaseException:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise
            for update in self._after:  # in-memory accounting only once the change is committed
                update()
            return result
        except sqlite3.DatabaseError as exc:
            if queue_db.is_corrupt(exc):
                self._set_aside(str(exc))
                self._open()
            raise

    def _later(self, update: Callable[[], None]) -> None:
        self._after.append(update)

    def _refresh_oldest(self, conn: sqlite3.Connection) -> None:
        oldest = conn.execute("SELECT MIN(ts_ms) FROM batches").fetchone()[0]
        self._later(lambda: setattr(self, "_oldest", oldest))

    # ------------------------------------------------------------ appending

    def append(self, entries: Iterable[Entry]) -> None:
        """Store batches (one transaction), making room by the size bound first. Never raises on a
        full disk or a corrupt file: what could not be kept is counted."""
        entries = list(entries)
        if not entries:
            return
        with self._lock:
            keep = []
            for e in entries:
                if len(e.payload) > self.max_size:
                    self.dropped["queue_full"] += e.samples
                else:
                    keep.append(e)
            if not keep:
                return
            try:
                self._run(self._insert, keep)
            except sqlite3.DatabaseError as exc:
                if not (queue_db.is_full(exc) or queue_db.is_corrupt(exc)):
                    raise
                if queue_db.is_corrupt(exc):  # the file was set aside; this batch goes to the fresh one
                    return self._try_insert_again(keep)
                self._on_disk_full(keep)

    def _insert(self, conn: sqlite3.Connection, entries: List[Entry]) -> None:
        need = self._bytes + sum(len(e.payload) for e in entries) - self.max_size
        if need > 0:
            self._drop_oldest(conn, need, "queue_full")
        conn.executemany("INSERT INTO batches (ts_ms, samples, crc, payload) VALUES (?, ?, ?, ?)",
                         [(e.timestamp_ms, e.samples, zlib.crc32(e.payload), e.payload) for e in entries])
        self._account(len(entries), sum(e.samples for e in entries), sum(len(e.payload) for e in entries))
        self._refresh_oldest(conn)

    def _try_insert_again(self, entries: List[Entry]) -> None:
        try:
            self._run(self._insert, entries)
        except sqlite3.DatabaseError as exc:
            if not (queue_db.is_full(exc) or queue_db.is_corrupt(exc)):
                raise
            self.dropped["disk_full" if queue_db.is_full(exc) else "corrupt"] += sum(e.samples for e in entries)

    def _on_disk_full(self, entries: List[Entry]) -> None:
        need = sum(len(e.payload) for e in entries)
        freed = 0
        if self._batches and self._conn is not None:
            try:  # move the WAL into the database so its space is reused from the start
                self._conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
            except sqlite3.DatabaseError:
                pass
            try:  # free pages inside the file are reused: give up the oldest to keep the newest
                freed = self._run(self._drop_oldest, 2 * need, "disk_full")
            except sqlite3.DatabaseError as exc:
                if not (queue_db.is_full(exc) or queue_db.is_corrupt(exc)):
                    raise
        if freed:
            try:
                self._run(self._insert, entries)
                log.warning("push queue: disk full; dropped the oldest batches to keep the newest")
                return
            except sqlite3.DatabaseError as exc:
                if not (queue_db.is_full(exc) or queue_db.is_corrupt(exc)):
                    raise
        self.dropped["disk_full"] += sum(e.samples for e in entries)
        log.warning("push queue: disk full; dropped a new batch of %d samples",
                    sum(e.samples for e in entries))

    def _drop_oldest(self, conn: sqlite3.Connection, need_bytes: int, reason: str) -> int:
        """Delete the oldest batches until ``need_bytes`` of payload are freed; returns bytes freed."""
        freed = samples = count = 0
        last_id = None
        for rid, n, size in conn.execute("SELECT id, samples, LENGTH(payload) FROM batches ORDER BY id"):
            freed += size
            samples += n
            count += 1
            last_id = rid
            if freed >= need_bytes:
                break
        if last_id is None:
            return 0
        conn.execute("DELETE FROM batches WHERE id <= ?", (last_id,))
        self._account(-count, -samples, -freed, reason)
        self._refresh_oldest(conn)
        return freed

    def _account(self, count: int, samples: int, size: int, dropped_as: Optional[str] = None) -> None:
        def update():
            self._batches += count
            self._samples += samples
            self._bytes += size
            if dropped_as:
                self.dropped[dropped_as] -= samples
        self._later(update)

    # ------------------------------------------------------------ the shipper's side

    def take(self, max_samples: int, newest: bool = False, max_batches: Optional[int] = None) -> Optional[Taken]:
        """The oldest (or newest) batches adding up to about ``max_samples`` (at least one batch,
        at most ``max_batches``), without removing them; :meth:`ack` or :meth:`drop` them after the
        send. Payloads failing their CRC are dropped here (``corrupt``). Batches acknowledged but
        not yet deleted (a full disk) are never handed out again."""
        with self._lock:
            self._retry_acks()
            if self._batches <= len(self._acked):
                return None
            try:
                return self._run(self._take, max_samples, newest, max_batches)
            except sqlite3.DatabaseError as exc:
                if queue_db.is_corrupt(exc) or queue_db.is_full(exc):
                    return None
                raise

    def _take(self, conn: sqlite3.Connection, max_samples: int, newest: bool,
              max_batches: Optional[int]) -> Optional[Taken]:
        order = "DESC" if newest else "ASC"
        ids: List[int] = []
        payloads: List[bytes] = []
        total = 0
        bad = []
        for rid, n, crc, payload in conn.execute(
                f"SELECT id, samples, crc, payload FROM batches ORDER BY id {order} LIMIT ?",
                (1000 + len(self._acked),)):
            if rid in self._acked:
                continue
            if zlib.crc32(payload) != crc:
                bad.append((rid, n, len(payload)))
                continue
            if ids and (total + n > max_samples or max_batches is not None and len(ids) >= max_batches):
                break
            ids.append(rid)
            payloads.append(bytes(payload))
            total += n
        if bad:
            conn.executemany("DELETE FROM batches WHERE id = ?", [(b[0],) for b in bad])
            self._account(-len(bad), -sum(b[1] for b in bad), -sum(b[2] for b in bad), "corrupt")
            self._refresh_oldest(conn)
            log.error("push queue: %d batches failed their checksum and were dropped", len(bad))
        if newest:
            ids.reverse()
            payloads.reverse()
        return Taken(ids, payloads, total) if ids else None

    def ack(self, ids: List[int]) -> bool:
        """The receiver has these batches: delete them. If the disk refuses the delete (False),
        they are remembered and never handed out again by :meth:`take`; the delete is retried
        later (after a restart they are sent once more: at-least-once)."""
        with self._lock:
            self._retry_acks()
            if self._remove(ids, None):
                return True
            self._acked.update(ids)
            return False

    def _retry_acks(self) -> None:
        if self._acked and self._remove(sorted(self._acked), None):
            self._acked.clear()

    def drop(self, ids: List[int], reason: str) -> None:
        """Give these batches up, counting their samples under ``reason``."""
        if reason not in DROP_REASONS:
            raise ValueError(f"unknown drop reason {reason!r}")
        self._remove(ids, reason)

    def count_drop(self, reason: str, samples: int) -> None:
        """Count samples given up before they reached the queue (thread-safe)."""
        if reason not in DROP_REASONS:
            raise ValueError(f"unknown drop reason {reason!r}")
        with self._lock:
            self.dropped[reason] += samples

    def _remove(self, ids: List[int], reason: Optional[str]) -> bool:
        if not ids:
            return True
        with self._lock:
            def remove(conn):
                marks = ",".join("?" * len(ids))
                count, samples, size = conn.execute(
                    f"SELECT COUNT(*), COALESCE(SUM(samples), 0), COALESCE(SUM(LENGTH(payload)), 0) "
                    f"FROM batches WHERE id IN ({marks})", ids).fetchone()
                conn.execute(f"DELETE FROM batches WHERE id IN ({marks})", ids)
                self._account(-count, -samples, -size, reason)
                self._refresh_oldest(conn)

            try:
                self._run(remove)
                return True
            except sqlite3.DatabaseError as exc:
                if not (queue_db.is_corrupt(exc) or queue_db.is_full(exc)):
                    raise
                log.warning("push queue: could not remove batches (%s); they may be sent again", exc)
                return False

    # ------------------------------------------------------------ upkeep

    def prune(self) -> int:
        """Drop batches older than ``max_age`` (``too_old``); returns the samples dropped."""
        cutoff = int((self.clock() - self.max_age) * 1000)
        with self._lock:
            if self._oldest is None or self._oldest >= cutoff:
                return 0

            def prune(conn):
                count, samples, size = conn.execute(
                    "SELECT COUNT(*), COALESCE(SUM(samples), 0), COALESCE(SUM(LENGTH(payload)), 0) "
                    "FROM batches WHERE ts_ms < ?", (cutoff,)).fetchone()
                conn.execute("DELETE FROM batches WHERE ts_ms < ?", (cutoff,))
                self._account(-count, -samples, -size, "too_old")
                self._refresh_oldest(conn)
                return samples

            try:
                samples = self._run(prune)
            except sqlite3.DatabaseError as exc:
                if not (queue_db.is_corrupt(exc) or queue_db.is_full(exc)):
                    raise
                return 0
            if samples:
                log.warning("push queue: dropped %d samples older than %gs", samples, self.max_age)
            return samples

    def checkpoint(self) -> None:
        """Fsync the WAL and copy it into the database (the ``interval`` fsync policy's tick);
        give free pages back to the file system once the queue has shrunk."""
        with self._lock:
            if self._conn is None:
                return
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
                if free > 256:
                    self._conn.execute("PRAGMA incremental_vacuum").fetchall()
            except sqlite3.DatabaseError as exc:
                if queue_db.is_corrupt(exc):
                    self._set_aside(str(exc))
                    self._open()
                elif not queue_db.is_full(exc):
                    raise

    def drop_counts(self) -> dict:
        """Samples dropped so far by reason (a copy)."""
        with self._lock:
            return dict(self.dropped)

    def stats(self) -> Stats:
        with self._lock:
            return Stats(self._bytes, self._samples, self._batches, self._oldest)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                except sqlite3.Error:
                    pass
            self._close_conn()
