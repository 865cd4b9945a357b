"""The runner: one asyncio loop, each input on its own interval with a deadline.

The runner owns timing and success. A hanging input is cut at its deadline, a crashing one is
logged; neither delays the others. Plain (blocking) ``collect`` functions run in worker threads;
since a thread cannot be killed, a blocking input whose previous collection is still running is
not started again (that cycle counts as a failure) so hung threads never pile up.

After every collection the runner records ``commune_agent_input_duration_seconds`` and
``commune_agent_input_success``, keeps the input's latest samples for ``/metrics`` and hands the
timestamped :class:`~contract.samples.Batch` to every sink (the durable push queue).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from contract.samples import Batch, Sample, sample

log = logging.getLogger(__name__)

Sink = Callable[[Batch], None]


class _State:
    __slots__ = ("samples", "duration", "success", "started", "pending", "last_error")

    def __init__(self) -> None:
        self.samples: List[Sample] = []
        self.duration = 0.0
        self.success = 0
        self.started = 0.0
        self.pending: Optional[concurrent.futures.Future] = None
        self.last_error = ""  # logged once while it repeats, not every cycle


class Runner:
    def __init__(self, inputs: Sequence, sinks: Iterable[Sink] = (), clock: Callable[[], float] = time.time,
                 max_threads: int = 8):
        names = [i.name for i in inputs]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"two inputs share the name {sorted(dupes)[0]!r}")
        self.inputs = list(inputs)
        self.sinks = list(sinks)
        self.clock = clock
        self._lock = threading.Lock()
        self._state: Dict[str, _State] = {i.name: _State() for i in self.inputs}
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_threads, thread_name_prefix="collect")
        self._stop: Optional[asyncio.Event] = None
        self._tasks: Dict[str, asyncio.Future] = {}

    # ------------------------------------------------------------ public

    async def run(self, stop: asyncio.Event) -> None:
        """Run every input until ``stop`` is set; returns once all loops ended."""
        self._stop = stop
        self._tasks = {i.name: asyncio.ensure_future(self._loop(i, stop)) for i in self.inputs}
        try:
            await stop.wait()
        finally:
            tasks = list(self._tasks.values())
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._executor.shutdown(wait=False, cancel_futures=True)

    def replace(self, old: Sequence, new: Sequence) -> None:
        """Stop scheduling the ``old`` inputs and schedule the ``new`` ones (on the event loop; a
        central profile changed them). Their latest samples go with them; a blocking collection
        still running in a thread finishes unseen. ValueError if a name would be taken twice."""
        gone = {id(i) for i in old}
        keep = [i for i in self.inputs if id(i) not in gone]
        names = [i.name for i in keep] + [i.name for i in new]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"two inputs would share the name {sorted(dupes)[0]!r}")
        for inp in old:
            task = self._tasks.pop(inp.name, None)
            if task is not None:
                task.cancel()
        with self._lock:
            for inp in old:
                self._state.pop(inp.name, None)
            for inp in new:
                self._state[inp.name] = _State()
        self.inputs = keep + list(new)
        if self._stop is not None and not self._stop.is_set():
            for inp in new:
                self._tasks[inp.name] = asyncio.ensure_future(self._loop(inp, self._stop))

    async def collect_once(self, inp) -> Batch:
        """Collect one input now (used by the loops and by tests)."""
        state = self._state[inp.name]
        started = self.clock()
        t0 = time.perf_counter()
        samples: List[Sample] = []
        ok, error, level = 0, "", logging.ERROR
        try:
            samples = list(await asyncio.wait_for(self._call(inp, state), inp.timeout) or ())
            ok = 1
        except asyncio.TimeoutError:
            error, level = f"collection exceeded its {inp.timeout:g}s deadline", logging.WARNING
        except _StillRunning:
            error, level = "previous collection still running; skipped this cycle", logging.WARNING
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an input bug must not stop the others
            error = f"failed: {exc}"
            if log.isEnabledFor(logging.DEBUG):
                log.debug("input %s failed", inp.name, exc_info=True)
        if error and error != state.last_error:
            log.log(level, "input %s: %s%s", inp.name, error,
                    "" if not state.last_error else " (was: " + state.last_error + ")")
        elif not error and state.last_error:
            log.info("input %s: collecting again after: %s", inp.name, state.last_error)
        state.last_error = error
        duration = time.perf_counter() - t0
        own = [
            sample("commune_agent_input_duration_seconds", duration, input=inp.name),
            sample("commune_agent_input_success", ok, input=inp.name),
            sample("commune_agent_input_last_run_timestamp_seconds", round(started, 3), input=inp.name),
        ]
        with self._lock:
            state.samples = samples
            state.duration, state.success, state.started = duration, ok, started
        batch = Batch(inp.name, int(started * 1000), samples + own)
        for sink in self.sinks:
            try:
                sink(batch)
            except Exception as exc:
                log.error("sink %r failed for input %s: %s", sink, inp.name, exc)
        return batch

    def snapshot(self) -> List[Sample]:
        """The latest samples of every input plus the runner's own, for /metrics (thread-safe)."""
        out: List[Sample] = []
        with self._lock:
            for name, st in self._state.items():
                out.extend(st.samples)
                if st.started:
                    out.append(sample("commune_agent_input_duration_seconds", st.duration, input=name))
                    out.append(sample("commune_agent_input_success", st.success, input=name))
                    out.append(sample("commune_agent_input_last_run_timestamp_seconds",
                                      round(st.started, 3), input=name))
        return out

    # ------------------------------------------------------------ internals

    async def _call(self, inp, state: _State):
        fn = inp.collect
        if inspect.iscoroutinefunction(fn):
            return await fn()
        if state.pending is not None and not state.pending.done():
            raise _StillRunning()
        fut = self._executor.submit(lambda: list(fn() or ()))
        state.pending = fut
        return await asyncio.wrap_future(fut)

    async def _loop(self, inp, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        # the identity check stops a loop whose input was replaced even if its cancel was lost
        # (asyncio.wait_for may swallow a cancel that lands as its wait ends, before Python 3.12)
        while not stop.is_set() and any(i is inp for i in self.inputs):
            await self.collect_once(inp)
            next_at += inp.interval
            now = loop.time()
            if next_at < now:  # the collection overran: skip the missed slots, keep the phase
                missed = int((now - next_at) // inp.interval) + 1
                next_at += missed * inp.interval
            try:
                await asyncio.wait_for(stop.wait(), next_at - now)
            except asyncio.TimeoutError:
                pass


class _StillRunning(Exception):
    pass
