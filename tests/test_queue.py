"""The durable push queue with real faults: a killed writer, age and size bounds, corrupt files,
and a full disk (a small tmpfs mounted by the test)."""
from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from contract import remote_write
from agent.queue import DROP_REASONS, Entry, Queue


def entry(ts_ms: int, n: int = 3, pad: int = 0) -> Entry:
    series = [({"__name__": "x", "i": str(i), "pad": "p" * pad + str(ts_ms)}, [(float(i), ts_ms)])
              for i in range(n)]
    return Entry(ts_ms, n, remote_write.encode(series))


def timestamps(q: Queue, max_samples: int = 10**9) -> list:
    taken = q.take(max_samples)
    if taken is None:
        return []
    return sorted({t for p in taken.payloads for _, s in remote_write.decode(p) for _, t in s})


class Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_append_take_ack_in_order(tmp_path):
    q = Queue(tmp_path / "q.db")
    q.append([entry(1000), entry(2000)])
    q.append([entry(3000)])
    assert q.stats().batches == 3 and q.stats().samples == 9 and q.stats().oldest_timestamp_ms == 1000
    first = q.take(max_samples=6)
    assert first.samples == 6 and len(first.ids) == 2
    assert timestamps(q, 6) == [1000, 2000]  # take does not remove
    newest = q.take(max_samples=3, newest=True)
    assert [t for p in newest.payloads for _, s in remote_write.decode(p) for _, t in s] == [3000] * 3
    q.ack(first.ids)
    assert q.stats().batches == 1 and q.stats().oldest_timestamp_ms == 3000
    q.ack(newest.ids)
    assert q.take(100) is None and q.stats() == (0, 0, 0, None)
    assert dict(q.dropped) == {r: 0 for r in DROP_REASONS}
    q.close()


def test_one_batch_larger_than_the_request_bound_still_goes(tmp_path):
    q = Queue(tmp_path / "q.db")
    q.append([entry(1000, n=10)])
    assert q.take(max_samples=4).samples == 10


def test_survives_a_killed_writer(tmp_path):
    """A process appends and is killed with SIGKILL (no close, no checkpoint): all is there."""
    path = tmp_path / "q.db"
    code = textwrap.dedent(f"""
        import os, signal
        from agent.queue import Queue
        from tests.test_queue import entry
        q = Queue({str(path)!r}, fsync="interval")
        for i in range(50):
            q.append([entry(1000 * (i + 1))])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent, timeout=60)
    assert proc.returncode == -9
    assert (tmp_path / "q.db-wal").exists()  # the data sat in the WAL, not yet checkpointed
    q = Queue(path)
    assert q.stats().batches == 50 and q.stats().samples == 150
    assert timestamps(q) == [1000 * (i + 1) for i in range(50)]
    assert q.corrupt_files == 0


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
def test_restart_keeps_the_queue_under_every_fsync_policy(tmp_path, fsync):
    q = Queue(tmp_path / "q.db", fsync=fsync)
    q.append([entry(1000), entry(2000)])
    q.checkpoint()
    q.close()
    q = Queue(tmp_path / "q.db", fsync=fsync)
    assert timestamps(q) == [1000, 2000]
    mode = q._conn.execute("PRAGMA journal_mode").fetchone()[0]
    sync = q._conn.execute("PRAGMA synchronous").fetchone()[0]
    assert mode == "wal" and sync == {"always": 2, "interval": 1, "never": 0}[fsync]


def test_age_bound_drops_too_old_and_counts_them(tmp_path):
    clock = Clock()
    now_ms = int(clock.t * 1000)
    q = Queue(tmp_path / "q.db", max_age=3600, clock=clock)
    q.append([entry(now_ms - 7200_000), entry(now_ms - 3000_000, n=2), entry(now_ms)])
    assert q.prune() == 3
    assert q.dropped["too_old"] == 3
    assert q.stats().batches == 2 and q.stats().oldest_timestamp_ms == now_ms - 3000_000
    clock.t += 1000
    assert q.prune() == 2 and q.dropped["too_old"] == 5
    assert timestamps(q) == [now_ms]


def test_size_bound_drops_oldest_first(tmp_path):
    one = len(entry(1000, pad=200).payload)
    q = Queue(tmp_path / "q.db", max_size=one * 5 + one // 2)
    for i in range(1, 13):
        q.append([entry(i * 1000, pad=200)])
    st = q.stats()
    assert st.bytes <= q.max_size
    assert st.batches == 5
    assert timestamps(q) == [8000, 9000, 10000, 11000, 12000]
    assert q.dropped["queue_full"] == 7 * 3
    q.close()
    q = Queue(tmp_path / "q.db", max_size=one * 5 + one // 2)  # sizes are recounted on open
    assert q.stats() == st


def test_a_batch_larger_than_the_whole_queue_is_dropped(tmp_path):
    q = Queue(tmp_path / "q.db", max_size=100)
    q.append([entry(1000, n=20, pad=50)])
    assert q.stats().batches == 0 and q.dropped["queue_full"] == 20


def test_ack_and_drop_count(tmp_path):
    q = Queue(tmp_path / "q.db")
    q.append([entry(1000, n=4), entry(2000, n=2)])
    taken = q.take(4)
    q.drop(taken.ids, "rejected")
    assert q.dropped["rejected"] == 4 and q.stats().samples == 2
    with pytest.raises(ValueError, match="unknown drop reason"):
        q.drop([1], "bored")


def _corrupt_files(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name)


def test_a_file_that_is_not_a_database_is_set_aside(tmp_path, caplog):
    path = tmp_path / "q.db"
    path.write_bytes(b"this is no sqlite file, a disk sector went bad" * 200)
    q = Queue(path, clock=Clock(1_800_000_000))
    assert q.corrupt_files == 1
    assert _corrupt_files(tmp_path) == ["q.db.corrupt-20270115T080000Z"]
    assert "is corrupt" in caplog.text and "q.db.corrupt-20270115T080000Z" in caplog.text
    q.append([entry(1000)])
    assert timestamps(q) == [1000]


def test_a_queue_set_aside_at_open_counts_the_samples_it_held(tmp_path, caplog):
    path = tmp_path / "q.db"
    q = Queue(path)
    q.append([entry(i * 1000, n=7) for i in range(1, 11)])
    q.close()
    import sqlite3

    conn = sqlite3.connect(path)  # a queue this version cannot read: set aside at open
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    conn.commit()
    conn.close()
    q = Queue(path)
    assert q.corrupt_files == 1 and q.dropped["corrupt"] == 70
    assert "(70 samples lost)" in caplog.text
    assert len([p for p in _corrupt_files(tmp_path) if not p.endswith(("-wal", "-shm"))]) == 1


def test_damaged_pages_are_detected_and_set_aside(tmp_path):
    path = tmp_path / "q.db"
    q = Queue(path)
    q.append([entry(i * 1000, n=20) for i in range(1, 300)])
    q.close()
    assert not Path(str(path) + "-wal").exists() or Path(str(path) + "-wal").stat().st_size == 0
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 10 * page
    for n in range(2, len(data) // page):  # scribble over b-tree pages, keep the header intact
        data[n * page:n * page + 64] = os.urandom(64)
    path.write_bytes(bytes(data))
    q = Queue(path)
    assert q.corrupt_files == 1 and len(_corrupt_files(tmp_path)) == 1
    assert q.stats().batches == 0
    q.append([entry(5000)])
    q.close()
    assert Queue(path).stats().batches == 1  # the fresh queue is sound


def test_a_payload_failing_its_checksum_is_dropped_as_corrupt(tmp_path):
    path = tmp_path / "q.db"
    q = Queue(path)
    q.append([entry(1000, n=2), entry(2000, n=3), entry(3000, n=4)])
    with contextlib.closing(sqlite3.connect(path)) as other:
        blob = bytearray(other.execute("SELECT payload FROM batches WHERE ts_ms = 2000").fetchone()[0])
        blob[len(blob) // 2] ^= 0xFF
        other.execute("UPDATE batches SET payload = ? WHERE ts_ms = 2000", (bytes(blob),))
        other.commit()
    assert timestamps(q) == [1000, 3000]
    assert q.dropped["corrupt"] == 3 and q.stats().samples == 6


# ---------------------------------------------------------------- full disk: a real small tmpfs



def _fill(path: Path, leave: int) -> None:
    st = os.statvfs(path.parent)
    free = st.f_bavail * st.f_frsize
    with open(path, "wb") as f:
        f.write(b"\0" * max(0, free - leave))


@pytest.mark.parametrize("fsync", ["always", "interval"])
def test_full_disk_never_raises_and_counts_drops(small_disk, fsync):
    q = Queue(small_disk / "q.db", fsync=fsync)
    q.append([entry(1, pad=300)])
    _fill(small_disk / "filler", leave=96 * 1024)
    n = 0
    for i in range(2, 400):  # far more than fits
        q.append([entry(i * 1000, n=5, pad=300)])
        n += 5
    st = q.stats()
    assert q.dropped["disk_full"] > 0
    assert st.samples + q.dropped["disk_full"] + q.dropped["queue_full"] == n + 3
    assert timestamps(q)  # what was stored before the disk filled up is still there
    # the disk has room again: appends are stored again
    (small_disk / "filler").unlink()
    before = q.dropped["disk_full"]
    q.append([entry(500_000)])
    assert q.dropped["disk_full"] == before and timestamps(q)[-1] == 500_000
    q.close()


def test_queue_opened_on_a_full_disk_keeps_working_once_there_is_room(small_disk):
    _fill(small_disk / "filler", leave=0)
    q = Queue(small_disk / "q.db")
    q.append([entry(1000)])
    assert q.dropped["disk_full"] == 3
    (small_disk / "filler").unlink()
    q.append([entry(2000)])
    assert timestamps(q) == [2000]
    q.close()
