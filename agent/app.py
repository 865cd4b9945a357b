"""Wires config, inputs, runner, sinks and the /metrics server; runs until told to stop."""
from __future__ import annotations

import asyncio
import logging
import sys
from typing import Callable, List, Optional

from agent import inputs
from agent.exposition import render
from agent.runner import Runner
from agent.selfmetrics import SelfInput
from agent.shutdown import stop_on_signals
from agent.web import MetricsServer

log = logging.getLogger("agent")


class Agent:
    def __init__(self, config, listen_address: Optional[str] = None):
        self.config = config
        built = [SelfInput(config.agent.interval)] + inputs.build_all(config)
        self.components = [c for c in (make(config) for make in _component_factories()) if c is not None]
        sinks = [c.sink for c in self.components if getattr(c, "sink", None)]
        self.runner = Runner(built, sinks=sinks)
        self.server = MetricsServer(config.web, lambda: render(self.runner.snapshot), listen_address)

    async def run(self, stop: asyncio.Event) -> None:
        self.server.start()
        host, port = self.server.address[:2]
        log.info("listening on %s:%s; inputs: %s", host, port,
                 ", ".join(i.name for i in self.runner.inputs))
        tasks = [asyncio.ensure_future(c.run(stop)) for c in self.components if hasattr(c, "run")]
        try:
            await self.runner.run(stop)
            await asyncio.gather(*tasks)
        finally:
            for i in self.runner.inputs:  # first: the OS may be shutting down (agent/inputs/boot.py)
                clean_shutdown = getattr(i, "clean_shutdown", None)
                if clean_shutdown:
                    clean_shutdown()
            for c in self.components:
                close = getattr(c, "close", None)
                if close:
                    close()
            self.server.stop()
            log.info("stopped")


def _component_factories() -> List[Callable]:
    """Parts that are not inputs but take every batch or run beside the runner (the push queue).

    Each factory takes the config and returns None (switched off) or an object with any of
    ``sink(batch)``, ``async run(stop)`` and ``close()``.
    """
    from agent import push

    return [push.component]


def run_agent(config, listen_address: Optional[str] = None) -> int:
    agent = Agent(config, listen_address)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        stop_on_signals(stop)
        STOP_HOOK[:] = [lambda: loop.call_soon_threadsafe(stop.set)]
        await agent.run(stop)

    asyncio.run(main())
    return 0


# Set while running: calling STOP_HOOK[0]() from any thread stops the agent (Windows service stop).
STOP_HOOK: List[Callable[[], None]] = []


def setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
