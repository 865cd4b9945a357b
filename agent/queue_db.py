"""The queue's SQLite file on its own: open and check it, count what a damaged one still holds,
set a corrupt one aside, and tell a full disk or a corrupt file from other errors. The queue
(:mod:`agent.queue`) owns the rows, the accounting and the locking."""
from __future__ import annotations

import logging
import os
import sqlite3
import time
from typing import Optional, Tuple

log = logging.getLogger("agent.queue")

SCHEMA_VERSION = "1"
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 11, 13, 26


class Corrupt(Exception):
    """The file is not a queue we can trust (failed check, unknown schema)."""


def is_full(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == _SQLITE_FULL:
        return True
    return "database or disk is full" in str(exc) or isinstance(exc, OSError) and exc.errno == 28


def is_corrupt(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc)
    return "malformed" in text or "not a database" in text




def connect(path: str, synchronous: str) -> Tuple[sqlite3.Connection, Tuple[int, int, int, Optional[int]]]:
    """Open (or create) the queue file in WAL mode with the given ``synchronous`` level, check it,
    and return the connection with (batches, samples, payload bytes, oldest ts_ms) it holds.
    Raises :class:`Corrupt` or ``sqlite3.DatabaseError`` for a file that cannot be used."""
    conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA cache_size=-512")  # KiB; appends and scans from the ends need little
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes effect on a new file
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            log.warning("push queue %s: WAL mode unavailable (got %s)", path, mode)
        conn.execute(f"PRAGMA synchronous={synchronous}")
        check = conn.execute("PRAGMA quick_check").fetchall()
        if [r[0] for r in check] != ["ok"]:
            raise Corrupt("; ".join(r[0] for r in check[:3]))
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, "
                     "samples INTEGER NOT NULL, crc INTEGER NOT NULL, payload BLOB NOT NULL)")
        conn.execute("CREATE INDEX IF NOT EXISTS batches_ts ON batches (ts_ms)")
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise Corrupt(f"unknown queue schema version {version!r}")
        counts = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(samples), 0), COALESCE(SUM(LENGTH(payload)), 0), "
            "MIN(ts_ms) FROM batches").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn, tuple(counts)


def count_readable(path: str) -> int:
    """The samples a damaged file still says it holds (0 if it cannot say): counted as lost."""
    try:
        conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True, timeout=1)  # no -shm/-wal made
    except sqlite3.Error:
        return 0
    try:
        return int(conn.execute("SELECT COALESCE(SUM(samples), 0) FROM batches").fetchone()[0])
    except (sqlite3.Error, TypeError, ValueError):
        return 0
    finally:
        conn.close()


def set_aside(path: str, now: float) -> str:
    """Rename the file (with its -wal and -shm) to ``<path>.corrupt-<UTC time>``; returns that name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    target = f"{path}.corrupt-{stamp}"
    n = 1
    while os.path.exists(target):
        n += 1
        target = f"{path}.corrupt-{stamp}-{n}"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, target + suffix)
    return target
