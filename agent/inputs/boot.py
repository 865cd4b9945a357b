"""Unexpected shutdowns and boot duration of this PC, for the host input (agent/inputs/host.py).

On Windows the System event log is the better source and is used while it can be read
(agent/inputs/winevents.py: crashes, power cuts, Fast Startup resumes counted as boots); what
follows is the fallback there and the only source elsewhere.

Office PCs are switched off every evening, so a restart by itself is normal. An *unexpected*
shutdown is a boot that ended without the agent being stopped cleanly (power cut, crash, hard
reset, a held power button):

- at its first collection the agent reads ``boot.json`` in ``agent.state_dir`` (the boot it last
  ran under, the count so far) and the clean-shutdown marker ``clean-shutdown.json``;
- if the machine booted since (another Linux ``boot_id``, or a boot time more than a couple of
  seconds away where there is no boot id) and there is no marker for that previous boot, the
  previous boot ended unexpectedly: the count goes up by one and is written back;
- on a clean stop (SIGTERM/SIGINT, systemd stopping the unit at OS shutdown, the Windows service
  stop) ``agent.app.Agent.run`` calls :meth:`BootTracker.clean_shutdown`, which writes the marker
  with the boot the agent ran under;
- while running, the agent notes the time in ``boot.json`` every :data:`HEARTBEAT` seconds: that
  last sign of life is when the boot that ended unexpectedly was last seen running.

Limits:

- the first run has no history: nothing is counted until the agent has seen one boot end;
- an agent killed (SIGKILL, a crash of the agent alone) while the OS keeps running is not a
  shutdown: only a change of boot counts;
- boots while the agent was stopped or not installed are not seen, and an agent stopped by hand
  before the machine lost power leaves a marker: that shutdown counts as clean;
- the Windows service must accept the shutdown control (pywin32 ``SvcShutdown``), else Windows
  ends it at OS shutdown without a stop and every evening shutdown would count;
- Windows Fast Startup ("shut down" hibernates the kernel session) keeps the boot time: those
  evenings and mornings are neither counted nor timed; a restart is a full boot;
- without a boot id (Windows), a clock stepped by hours between two runs of the agent within one
  boot looks like a new boot; it counts only if the agent was also killed without a clean stop.

Boot duration: seconds from the OS boot (kernel start: the firmware's POST is not included) to
the agent's first collection, only when that is within :data:`BOOT_WINDOW` (the agent is a
service started at boot); otherwise unknown and not exported. It is an upper bound of how long
the machine took to start its services. It is kept in ``boot.json`` for the boot, so an agent
restarted later in the same boot exports the same value.

Everything here is plain file I/O on the state directory, with the boot and the clock handed in;
a state directory that cannot be read or written is logged once and the metrics are left out.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

from contract.samples import Sample, sample

log = logging.getLogger(__name__)

STATE_FILE = "boot.json"
MARKER_FILE = "clean-shutdown.json"
BOOT_WINDOW = 900.0  # the agent started within 15 minutes of boot: a service started at boot
HEARTBEAT = 300.0    # how often the last sign of life is written while running
TOLERANCE = 2.0      # boot times closer than this are the same boot (Windows: now minus uptime)


@dataclass(frozen=True)
class Boot:
    """One boot of the OS: its time (Unix seconds) and, on Linux, the kernel's boot id."""

    time: float
    id: str = ""

    def same(self, other: "Boot", tolerance: float = TOLERANCE) -> bool:
        if self.id and other.id:
            return self.id == other.id
        return abs(self.time - other.time) <= tolerance

    def to_json(self) -> dict:
        return {"boot_time": self.time, "boot_id": self.id}

    @classmethod
    def from_json(cls, data: object) -> Optional["Boot"]:
        if not isinstance(data, dict) or not isinstance(data.get("boot_time"), (int, float)):
            return None
        return cls(float(data["boot_time"]), str(data.get("boot_id") or ""))


def ended_unexpectedly(previous: Optional[Boot], marker: Optional[Boot], current: Boot,
                       tolerance: float = TOLERANCE) -> bool:
    """Whether the boot the agent last ran under ended without a clean stop.

    ``previous`` is None on the first run (no history: nothing to judge); the same boot as now
    means the agent restarted while the OS kept running, which is not a shutdown.
    """
    if previous is None or previous.same(current, tolerance):
        return False
    return marker is None or not marker.same(previous, tolerance)


def boot_duration(boot_time: float, now: float, window: float = BOOT_WINDOW) -> Optional[float]:
    """Seconds from boot to now when the agent started within ``window`` of boot, else None."""
    elapsed = now - boot_time
    return elapsed if 0 <= elapsed <= window else None


class BootTracker:
    """The state in ``state_dir``; :meth:`observe` at every collection, :meth:`clean_shutdown` once."""

    def __init__(self, state_dir: str, clock: Callable[[], float] = time.time, tolerance: float = TOLERANCE):
        self.state_dir = state_dir
        self.clock = clock
        self.tolerance = tolerance
        self.boot: Optional[Boot] = None  # the boot this run started under, once started
        self.count = 0
        self.last_unexpected: Optional[float] = None
        self.duration: Optional[float] = None
        self._written = 0.0
        self._stopped = False
        self._failed = False
        self._lock = threading.Lock()

    @property
    def state_path(self) -> str:
        return os.path.join(self.state_dir, STATE_FILE)

    @property
    def marker_path(self) -> str:
        return os.path.join(self.state_dir, MARKER_FILE)

    # ------------------------------------------------------------ the agent's calls

    def observe(self, boot: Boot) -> List[Sample]:
        """The samples of this collection; the first call judges the previous boot."""
        with self._lock:
            if self.boot is None:
                if self._stopped:  # stopped before its first collection: judge nothing, touch nothing
                    return []
                self._start(boot)
            elif not self._stopped and self.clock() - self._written >= HEARTBEAT:
                self._save()
            if self._failed:
                return []
            out = [sample("commune_host_unexpected_shutdowns_total", self.count)]
            if self.last_unexpected is not None:
                out.append(sample("commune_host_last_unexpected_shutdown_timestamp_seconds", self.last_unexpected))
            if self.duration is not None:
                out.append(sample("commune_host_boot_duration_seconds", self.duration))
            return out

    def clean_shutdown(self) -> None:
        """The agent is stopping cleanly: write the marker for the boot it ran under."""
        with self._lock:
            if self.boot is None or self._stopped:  # never started: the older marker stays valid
                self._stopped = True
                return
            self._stopped = True
            try:
                self._save()
                _write_json(self.marker_path, self.boot.to_json())
            except OSError as exc:
                log.warning("host: cannot write the clean-shutdown marker %s: %s", self.marker_path, exc)

    # ------------------------------------------------------------ internals

    def _start(self, boot: Boot) -> None:
        self.boot = boot
        now = self.clock()
        state = _read_json(self.state_path)
        previous = Boot.from_json(state)
        marker = Boot.from_json(_read_json(self.marker_path))
        if previous is not None:
            self.count = _number(state.get("unexpected_shutdowns"), 0)
            self.last_unexpected = _number(state.get("last_unexpected_shutdown"), None)
        if ended_unexpectedly(previous, marker, boot, self.tolerance):
            self.count += 1
            self.last_unexpected = _number(state.get("last_seen"), previous.time)
            log.warning("host: the previous boot (%s) ended without a clean shutdown (power cut, crash or "
                        "reset); %d since install", _when(previous.time), self.count)
        if previous is not None and previous.same(boot, self.tolerance):
            self.duration = _number(state.get("boot_duration"), None)  # an agent restarted in this boot
        else:
            self.duration = boot_duration(boot.time, now)
        try:
            os.makedirs(self.state_dir, exist_ok=True)
            self._save()
            if marker is not None:
                os.remove(self.marker_path)
        except OSError as exc:
            self._failed = True
            log.warning("host: cannot keep boot history in %s (no unexpected-shutdown or boot metrics): %s",
                        self.state_dir, exc)

    def _save(self) -> None:
        if self._failed:
            return
        now = self.clock()
        state = dict(self.boot.to_json(), unexpected_shutdowns=self.count,
                     last_unexpected_shutdown=self.last_unexpected, boot_duration=self.duration, last_seen=now)
        _write_json(self.state_path, state)
        self._written = now


def _number(value: object, default):
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _read_json(path: str) -> Optional[dict]:
    """The file's JSON object, or None when it is absent, unreadable or torn (a power cut)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("host: ignoring unreadable %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: str, data: dict) -> None:
    """Atomically: a power cut leaves the old file or the new one, never half of one."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
