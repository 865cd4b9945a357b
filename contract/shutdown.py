"""Clean shutdown for the agent and the collector (one asyncio loop each).

Two ways in, both ending in the same ``stop`` event:

- :class:`Stopper`, which any thread may call: the Windows service control handler (pywin32 calls
  ``SvcStop`` on its own thread while ``SvcDoRun`` runs the agent on another), a test, an embedding
  program. A request made before the loop runs is kept and stops the loop as soon as it binds.
- SIGTERM and SIGINT, only where signals can be handled: on the main thread. Python delivers
  signals to the main thread only and ``signal.signal`` raises ``ValueError`` anywhere else; on
  Windows ``loop.add_signal_handler`` is not implemented, so plain handlers are used there (Ctrl+C
  in a console). A loop on another thread gets no signal handlers and is stopped by its Stopper.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import threading
from typing import Optional, Tuple

log = logging.getLogger(__name__)


class Stopper:
    """A thread-safe, sticky stop request for one running asyncio loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requested = False
        self._bound: Optional[Tuple[asyncio.AbstractEventLoop, asyncio.Event]] = None

    @property
    def requested(self) -> bool:
        return self._requested

    def bind(self, stop: asyncio.Event) -> None:
        """Call from inside the running loop: ``stop`` is set on :meth:`request` (or now, if one came)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._bound = (loop, stop)
            requested = self._requested
        if requested:
            stop.set()

    def request(self) -> None:
        """Ask the loop to stop; safe from any thread, before, during or after the run."""
        with self._lock:
            self._requested = True
            bound = self._bound
        if bound is not None:
            loop, stop = bound
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop has already closed: nothing left to stop
                pass


def stop_on_signals(stop: asyncio.Event) -> bool:
    """Set ``stop`` on SIGTERM or SIGINT; call from inside the running loop.

    Returns False (and installs nothing) off the main thread, where signals cannot be handled.
    """
    if threading.current_thread() is not threading.main_thread():
        log.debug("not on the main thread: no signal handlers, the stop request ends the run")
        return False
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: plain handlers
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    return True
