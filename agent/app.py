"""Wires config, inputs, runner, sinks and the /metrics server; runs until told to stop."""
from __future__ import annotations

import asyncio
import logging
from typing import List, Optional, Tuple

from agent import inputs, push
from contract.exposition import render
from agent.runner import Runner
from agent.selfmetrics import SelfInput
from contract.shutdown import Stopper, stop_on_signals
from agent.web import MetricsServer

log = logging.getLogger("agent")


class Agent:
    def __init__(self, config, listen_address: Optional[str] = None):
        from agent import profile_fetch

        # the central profile first (agent.profile_fetch): it decides the managed sections
        self.profiles = profile_fetch.component(config)
        if self.profiles is not None:
            config = self.profiles.start()
            self.profiles.apply = self.apply
        self.config = config
        # parts that are not inputs: each takes every batch (sink), runs beside the runner (run),
        # closes (close) and brings its own inputs (inputs)
        self.by_section = {mod.NAME: self._build_at_start(mod.NAME) for mod in inputs.INPUTS}
        config = self.config
        self.components = [c for c in (push.component(config), self.profiles) if c is not None]
        built = [SelfInput(config.agent.interval)] + [i for b in self.by_section.values() for i in b]
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


    def _build_at_start(self, name: str) -> list:
        """The inputs of one section at start. A section the central profile set that cannot be
        built here (icmp targets without socket privileges, say) falls back to the agent's own file
        for that section and is counted as an apply failure: a profile never stops an agent from
        starting. A section of the agent's own file that cannot be built stops the start, as ever."""
        try:
            return inputs.build_section(name, self.config)
        except Exception as exc:
            local = self.profiles.local if self.profiles is not None else None
            if local is None or getattr(local, name) == getattr(self.config, name):
                raise
            why = str(exc).replace("\n", "; ") or type(exc).__name__
            log.error("profile: section %s cannot start as the profile sets it (%s); using the agent's own "
                      "config for it", name, why)
            self.profiles.apply_failures[name] += 1
            setattr(self.config, name, getattr(local, name))
            return inputs.build_section(name, self.config)

    async def apply(self, new) -> List[Tuple[str, str]]:
        """Rebuild the inputs of every managed section that ``new`` changes, while running; the
        sections that cannot be rebuilt keep their inputs and settings. [(section, why not)] for
        every changed section, why not "" when it was applied."""
        from agent.profile_fetch import changed_sections

        loop = asyncio.get_running_loop()
        done = []
        for name, section in changed_sections(self.config, new).items():
            built = []
            try:
                built = await loop.run_in_executor(None, inputs.build_section, name, new)
                self.runner.replace(self.by_section[name], built)
            except Exception as exc:  # e.g. icmp without socket privileges; the old inputs keep running
                _close_all(built)
                done.append((name, str(exc).replace("\n", "; ") or type(exc).__name__))
                continue
            _close_all(self.by_section[name])
            self.by_section[name] = built
            setattr(self.config, name, section)
            log.info("profile: section %s applied (%s)", name, ", ".join(i.name for i in built) or "no inputs")
            done.append((name, ""))
        return done


def _close_all(built: list) -> None:
    """Close inputs that hold resources (an SNMP socket); a failing close is logged, not raised."""
    for inp in built:
        close = getattr(inp, "close", None)
        if close is not None:
            try:
                close()
            except Exception as exc:
                log.warning("closing input %s: %s", getattr(inp, "name", "?"), exc)


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
