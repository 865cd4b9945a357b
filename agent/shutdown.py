"""Clean shutdown on SIGTERM and SIGINT for the agent and the collector (one asyncio loop each)."""
from __future__ import annotations

import asyncio
import signal


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGTERM or SIGINT; call from inside the running loop."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: plain handlers (and the service stop path)
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
