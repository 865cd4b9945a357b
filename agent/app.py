"""Wires config, inputs, runner, sinks and the /metrics server; runs until told to stop."""
from __future__ import annotations

import asyncio
import logging
from typing import Optional

from agent import inputs, push
from contract.exposition import render
from agent.runner import Runner
from agent.selfmetrics import SelfInput
from contract.shutdown import Stopper, stop_on_signals
from agent.web import MetricsServer

log = logging.getLogger("agent")


class Agent:
    def __init__(self, config, listen_address: Optional[str] = None):
        self.config = config
        # parts that are not inputs: each takes every batch (sink), runs beside the runner (run),
        # closes (close) and brings its own inputs (inputs)
        self.components = [c for c in (push.component(config),) if c is not None]
        built = [SelfInput(config.agent.interval)] + inputs.build_all(config)
        built += [i for c in self.components for i in getattr(c, "inputs", ())]
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


def run_agent(config, listen_address: Optional[str] = None, stopper: Optional[Stopper] = None) -> int:
    """Run the agent on this thread until SIGTERM/SIGINT (main thread only) or ``stopper.request()``.

    Any thread will do: the Windows service runs it on the thread pywin32 gives ``SvcDoRun`` and
    stops it from ``SvcStop`` (agent/winservice.py). Start-up errors (a port in use, a state
    directory that cannot be made) propagate to the caller.
    """
    stopper = stopper or Stopper()
    agent = Agent(config, listen_address)

    async def main() -> None:
        stop = asyncio.Event()
        stopper.bind(stop)
        stop_on_signals(stop)
        await agent.run(stop)

    asyncio.run(main())
    return 0
