"""Nothing lost over a weak link: the real agent -> the link emulator -> the real collector -> real
Prometheus, at 64 kbit/s, 256 kbit/s and 2 Mbit/s with a 300 ms round trip and the link cut every
10-20 s; an outage with the agent restarted inside it and the answers lost for a while; and the
backlog of an hour-long outage replayed through the same link. Every collection arrives, nothing
is counted dropped on either side, no series has a gap."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.push import encode_batch
from agent.queue import Queue
from contract.samples import Batch, Sample
from lab.linkemu import LinkEmulator
from tests.support import prom_query, start_prometheus, wait_until
from tests.test_collector_ingest import add_token, collector_metrics, metric_value, start_collector
from tests.test_push_e2e import Agent, agent_config, sample_times

pytestmark = pytest.mark.slow

AGENT_DROPS = ("too_old", "queue_full", "disk_full", "rejected", "corrupt")
COLLECTOR_DROPS = ("too_old", "in_future", "invalid", "upstream_rejected")
HOST = 'commune_agent_input_last_run_timestamp_seconds{input="host"}'


class Stack:
    """Prometheus and the collector on loopback, an agent token, the emulated link in front."""

    def __init__(self, tmp: Path, **link):
        self.prom_proc, self.prom = start_prometheus(tmp / "prom")
        self.collector, self.url, state = start_collector(tmp, [self.prom + "/api/v1/write"])
        self.token = add_token(state, "09667", "pc-weak")
        port = int(self.url.rsplit(":", 1)[1])
        self.link = LinkEmulator(("127.0.0.1", port), **link).start()
        self.push_url = f"http://127.0.0.1:{self.link.port}/api/v1/write"
        self.agents = []

    def agent(self, tmp: Path, name: str, config=None, **push) -> Agent:
        config = config or agent_config(tmp, self.push_url, bearer_token=self.token, **push)
        a = Agent(tmp, config, name)
        self.agents.append(a)
        return a

    def stop(self):
        for a in self.agents:
            a.proc.stop()
        self.link.stop()
        self.collector.stop()
        self.prom_proc.stop()

    def assert_nothing_dropped(self, agent: Agent):
        m = agent.metrics()
        assert {r: m[f"commune_agent_queue_dropped_samples_total,reason={r}"] for r in AGENT_DROPS} == \
            {r: 0 for r in AGENT_DROPS}
        text = collector_metrics(self.url)
        assert {r: metric_value(text, "commune_collector_samples_dropped_total", reason=r) for r in COLLECTOR_DROPS} \
            == {r: 0 for r in COLLECTOR_DROPS}

    def drained(self, agent: Agent, after: float, timeout: float) -> None:
        wait_until(lambda: agent.value("commune_agent_queue_oldest_age_seconds") < 3
                   and agent.value("commune_agent_push_last_success_timestamp_seconds") > after, timeout,
                   what="the queue to drain through the link")

    def assert_every_collection(self, start: float, end: float, restarts=()) -> list:
        """The host input's collections between start and end: 1 s apart (only an agent restart
        may leave a longer step), and every host series of the agent has all of them."""
        times = sample_times(self.prom, HOST, start, end)
        assert times, "nothing arrived"
        steps = [(a, b) for a, b in zip(times, times[1:])]
        long = [(a, b) for a, b in steps if b - a > 1.6]
        assert all(any(a <= r <= b for r in restarts) for a, b in long), long  # a missed collection
        window = f"{int((times[-1] - times[0]) * 1000) + 500}ms"  # from times[0] to times[-1]
        per_series = {}
        for name in ("node_cpu_seconds_total", "node_memory_MemAvailable_bytes", "node_load1",
                     "node_network_receive_bytes_total", "commune_agent_input_duration_seconds"):
            for r in prom_query(self.prom, f'count_over_time({name}{{agent="pc-weak"}}[{window}])', time_s=times[-1]):
                if r["metric"].get("input", "host") == "host":
                    per_series[(name, *sorted(r["metric"].items()))] = int(r["value"][1])
        assert per_series and set(per_series.values()) == {len(times)}, per_series
        return times


@pytest.mark.parametrize("bps", [64_000, 256_000, 2_000_000])
def test_every_collection_arrives_through_a_slow_link_cut_every_10_to_20_s(tmp_path, bps):
    stack = Stack(tmp_path, bandwidth_bps=bps, latency=0.15, cut_every=(10, 20), seed=bps)
    try:
        agent = stack.agent(tmp_path, "agent", batch_delay="4s", timeout="20s")
        wait_until(lambda: prom_query(stack.prom, HOST), 60, what="the first samples through the link")
        t_start = time.time()
        wait_until(lambda: stack.link.counters.connections_cut >= 2, 60, what="two cuts of the link")
        t_end = time.time()
        stack.drained(agent, t_end, 90)
        times = stack.assert_every_collection(t_start, t_end)
        assert times[0] <= t_start + 1.6 and times[-1] >= t_end - 1.6
        stack.assert_nothing_dropped(agent)
        c = stack.link.counters
        assert c.connections_cut >= 2 and c.bytes_upstream > 0
    finally:
        stack.stop()


def test_an_outage_with_a_restart_and_lost_answers_loses_nothing(tmp_path):
    stack = Stack(tmp_path, bandwidth_bps=256_000, latency=0.15, cut_every=(10, 20), seed=7)
    try:
        config = agent_config(tmp_path, stack.push_url, bearer_token=stack.token, batch_delay="2s", timeout="5s")
        a1 = stack.agent(tmp_path, "agent-1", config)
        wait_until(lambda: prom_query(stack.prom, HOST), 60, what="the first samples through the link")
        t_start = time.time()
        time.sleep(3)
        stack.link.blackhole("downstream")  # the collector acts, its answers are lost: sent again
        time.sleep(8)
        stack.link.blackhole(None)
        stack.link.down()  # the office's link is down
        wait_until(lambda: a1.value("commune_agent_queue_batches") >= 8, 30, what="a backlog")
        assert a1.proc.stop() == 0  # the agent restarts inside the outage
        t_restart = time.time()
        a2 = stack.agent(tmp_path, "agent-2", config)
        wait_until(lambda: a2.value("commune_agent_push_failed_requests_total,reason=network") >= 2, 30,
                   what="the restarted agent failing to push")
        stack.link.up()
        t_up = time.time()
        time.sleep(2)
        t_end = time.time()
        stack.drained(a2, t_end, 90)
        times = stack.assert_every_collection(t_start, t_end, restarts=(t_restart,))
        assert any(t_restart - 20 < t < t_up for t in times)  # collected during the outage, delivered after
        stack.assert_nothing_dropped(a2)
        assert stack.link.counters.bytes_discarded > 0  # answers really were lost
    finally:
        stack.stop()


def test_the_backlog_of_an_hour_long_outage_replays_whole_through_the_link(tmp_path):
    """An hour of collections every 15 s (240 batches of 130 series) waits in the queue, as after
    an hour without a link; the agent starts and sends it through 64 kbit/s cut every 10-20 s."""
    stack = Stack(tmp_path, bandwidth_bps=64_000, latency=0.15, cut_every=(10, 20), seed=3600)
    try:
        state = tmp_path / "state"
        now_ms = int(time.time() * 1000)
        stamps = [now_ms - 3_600_000 + i * 15_000 for i in range(240)]
        q = Queue(state / "queue.db")
        for ts in stamps:
            batch = Batch("host", ts, [Sample("weak_backlog_metric", {"i": str(i), "disk": f"C{i % 4}"}, float(ts % 9973 + i))
                                       for i in range(130)])
            q.append(encode_batch(batch, 2000, q.count_drop))
        assert q.stats().samples == 240 * 130
        q.close()
        agent = stack.agent(tmp_path, "agent", state_dir=None, batch_delay="2s", timeout="30s")
        stack.drained(agent, time.time(), 240)
        wait_until(lambda: prom_query(stack.prom, "count(weak_backlog_metric)"), 30, what="the backlog")
        counts = prom_query(stack.prom, "count_over_time(weak_backlog_metric[65m])")
        assert len(counts) == 130 and {r["value"][1] for r in counts} == {"240"}
        stack.assert_nothing_dropped(agent)
        assert stack.link.counters.connections_cut >= 1
    finally:
        stack.stop()
