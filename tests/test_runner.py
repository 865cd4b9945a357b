"""The runner: a hanging or crashing input never delays or stops the others."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from agent.runner import Runner
from contract.samples import sample


class Counting:
    """A healthy input that records when each collection started."""

    def __init__(self, name="healthy", interval=0.1, timeout=0.1):
        self.name, self.interval, self.timeout = name, interval, timeout
        self.starts = []

    def collect(self):
        self.starts.append(time.monotonic())
        return [sample("node_boot_time_seconds", len(self.starts))]


class HangsAsync:
    name, interval, timeout = "hangs_async", 0.1, 0.2

    def __init__(self):
        self.cancelled = 0

    async def collect(self):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


class HangsInThread:
    """A blocking input stuck in a system call: its thread cannot be killed."""

    name, interval, timeout = "hangs_thread", 0.1, 0.2

    def __init__(self):
        self.release = threading.Event()
        self.calls = 0

    def collect(self):
        self.calls += 1
        self.release.wait(30)
        return []


class Raises:
    name, interval, timeout = "raises", 0.1, 0.1

    def __init__(self):
        self.calls = 0

    def collect(self):
        self.calls += 1
        raise RuntimeError("device exploded")


def run_for(runner: Runner, seconds: float) -> None:
    async def main():
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        await runner.run(stop)

    asyncio.run(main())


def test_hanging_and_crashing_inputs_do_not_delay_the_others(caplog):
    healthy = Counting()
    hang_async, hang_thread, raises = HangsAsync(), HangsInThread(), Raises()
    batches = []
    runner = Runner([hang_async, hang_thread, raises, healthy], sinks=[batches.append])
    try:
        run_for(runner, 1.5)
    finally:
        hang_thread.release.set()
    # the healthy input kept its 0.1 s schedule the whole time: ~15 collections, no long gaps
    assert len(healthy.starts) >= 10
    gaps = [b - a for a, b in zip(healthy.starts, healthy.starts[1:])]
    assert max(gaps) < 0.5, gaps
    # hung async input was cancelled at its deadline and tried again on schedule
    assert hang_async.cancelled >= 3
    # the hung thread is never started twice while it still runs
    assert hang_thread.calls == 1
    # the crashing input is retried on its own schedule
    assert raises.calls >= 5
    snap = {(s.name, s.labels.get("input")): s.value for s in runner.snapshot()}
    assert snap[("commune_agent_input_success", "healthy")] == 1
    for bad in ("hangs_async", "hangs_thread", "raises"):
        assert snap[("commune_agent_input_success", bad)] == 0
    assert snap[("commune_agent_input_duration_seconds", "hangs_async")] == pytest.approx(0.2, abs=0.15)
    assert "device exploded" in caplog.text
    assert "exceeded its 0.2s deadline" in caplog.text


def test_batches_carry_the_collection_start_time_and_runner_metrics():
    clock = iter([1_700_000_000.25, 1_700_000_001.5]).__next__
    inp = Counting(interval=1, timeout=1)
    got = []
    runner = Runner([inp], sinks=[got.append], clock=clock)
    asyncio.run(runner.collect_once(inp))
    batch = got[0]
    assert batch.input == "healthy" and batch.timestamp_ms == 1_700_000_000_250
    names = [s.name for s in batch.samples]
    assert names == ["node_boot_time_seconds", "commune_agent_input_duration_seconds",
                     "commune_agent_input_success", "commune_agent_input_last_run_timestamp_seconds"]


def test_failed_collection_drops_stale_samples_from_metrics():
    class Flaky(Counting):
        fail = False

        def collect(self):
            if self.fail:
                raise OSError("gone")
            return super().collect()

    inp = Flaky(interval=1, timeout=1)
    runner = Runner([inp])
    asyncio.run(runner.collect_once(inp))
    assert any(s.name == "node_boot_time_seconds" for s in runner.snapshot())
    inp.fail = True
    asyncio.run(runner.collect_once(inp))
    assert not any(s.name == "node_boot_time_seconds" for s in runner.snapshot())


def test_a_failing_sink_does_not_stop_collection():
    def broken_sink(batch):
        raise OSError("disk full")

    got = []
    inp = Counting(interval=1, timeout=1)
    runner = Runner([inp], sinks=[broken_sink, got.append])
    asyncio.run(runner.collect_once(inp))
    assert len(got) == 1


def test_duplicate_input_names_are_refused():
    with pytest.raises(ValueError, match="two inputs share the name 'healthy'"):
        Runner([Counting(), Counting()])


def test_self_input_reports_build_memory_and_cpu():
    import os
    import platform

    import psutil

    from agent import __version__
    from agent.selfmetrics import SelfInput

    got = {s.name: s for s in SelfInput(30).collect()}
    assert got["commune_agent_build_info"].labels == {
        "version": __version__, "python_version": platform.python_version(), "os": platform.system().lower()}
    rss = psutil.Process(os.getpid()).memory_info().rss
    assert abs(got["process_resident_memory_bytes"].value - rss) < 50 * 2**20
    assert got["process_cpu_seconds_total"].value > 0
    assert got["process_start_time_seconds"].value == pytest.approx(psutil.Process().create_time())


def test_a_repeating_failure_is_logged_once_and_recovery_is_logged(caplog):
    import logging

    caplog.set_level(logging.INFO, logger="agent.runner")
    inp = Raises()
    runner = Runner([inp])
    for _ in range(5):
        asyncio.run(runner.collect_once(inp))
    assert caplog.text.count("device exploded") == 1
    inp.collect = lambda: [sample("node_boot_time_seconds", 1)]
    asyncio.run(runner.collect_once(inp))
    assert "input raises: collecting again after: failed: device exploded" in caplog.text
    snap = {(s.name, s.labels.get("input")): s.value for s in runner.snapshot()}
    assert snap[("commune_agent_input_success", "raises")] == 1
