"""Outages behind the collector: the real agent keeps collecting while the collector (or, separately,
Prometheus behind it) is down, the agent is restarted in the middle of the outage, everything comes
back, and every collection of the outage window is in Prometheus under the token's identity:
zero gaps."""
from __future__ import annotations

import time

import pytest

from tests.support import Proc, prom_query, start_prometheus, wait_until
from tests.test_collector_ingest import add_token, collector_metrics, metric_value, start_collector
from tests.test_push_e2e import Agent, agent_config, restart_prometheus, sample_times

pytestmark = pytest.mark.slow

SERIES = 'commune_agent_input_last_run_timestamp_seconds{input="host",commune="09667",agent="pc-outage"}'


def restart(old: Proc) -> Proc:
    """The same server (same command line: port, config, state) started again after ``old.stop()``."""
    return Proc(old.args, old.log_path)


@pytest.mark.parametrize("down", ["collector", "prometheus"])
def test_outage_with_an_agent_restart_leaves_no_gap(tmp_path, down):
    prom, prom_url = start_prometheus(tmp_path / "prom")
    coll, curl, state = start_collector(tmp_path, [prom_url + "/api/v1/write"])
    agents = []
    try:
        token = add_token(state, "09667", "pc-outage")
        config = agent_config(tmp_path, curl + "/api/v1/write", bearer_token=token)
        a1 = Agent(tmp_path, config, "agent-1")
        agents.append(a1)
        wait_until(lambda: prom_query(prom_url, SERIES), 30, what="the first samples through the collector")
        t_start = time.time()
        wait_until(lambda: len(sample_times(prom_url, SERIES, t_start, time.time())) >= 2, 30,
                   what="samples before the outage")

        reason = "network" if down == "collector" else "server_error"
        if down == "collector":
            coll.stop()
        else:
            prom.stop()
        t_down = time.time()
        wait_until(lambda: a1.value(f"commune_agent_push_failed_requests_total,reason={reason}") >= 2, 30,
                   what=f"failed pushes ({reason}) while the {down} is down")
        if down == "prometheus":  # the collector said 503: the agent kept the batches
            assert metric_value(collector_metrics(curl), "commune_collector_rejected_requests_total",
                                reason="upstream_unavailable") >= 2
        wait_until(lambda: a1.value("commune_agent_queue_batches") >= 6, 30, what="a backlog in the queue")

        assert a1.proc.stop() == 0  # restart the agent in the middle of the outage
        t_a1_stopped = time.time()
        a2 = Agent(tmp_path, config, "agent-2")
        agents.append(a2)
        t_a2_started = time.time()
        # the backlog survived the restart (the queue input reports it after its first collection)
        wait_until(lambda: a2.value("commune_agent_queue_batches") >= 6, 10, what="the backlog after the restart")
        wait_until(lambda: a2.value(f"commune_agent_push_failed_requests_total,reason={reason}") >= 2, 30,
                   what="the restarted agent failing to push too")

        if down == "collector":
            coll = restart(coll)
            coll.wait_http(curl + "/-/healthy")
        else:
            prom = restart_prometheus(prom)
        t_up = time.time()
        wait_until(lambda: a2.value("commune_agent_queue_oldest_age_seconds") < 5
                   and a2.value("commune_agent_push_last_success_timestamp_seconds") > t_up, 60,
                   what="the backlog to drain through the collector")
        time.sleep(2)
        t_end = time.time()

        m = a2.metrics()
        assert all(m[f"commune_agent_queue_dropped_samples_total,reason={r}"] == 0
                   for r in ("too_old", "queue_full", "disk_full", "rejected", "corrupt"))
        times = sample_times(prom_url, SERIES, t_start, t_end)
        assert times[0] <= t_down and times[-1] >= t_up
        steps = list(zip(times, times[1:]))
        # the agent's own restart is the only place where a step may be off the 1s grid
        around_restart = [(a, b) for a, b in steps if a <= t_a1_stopped <= b]
        assert len(around_restart) == 1 and around_restart[0][1] <= t_a2_started + 1.6, around_restart
        others = [b - a for a, b in steps if (a, b) not in around_restart]
        assert all(0.4 <= d <= 1.6 for d in others), others  # a missed collection would be about 2s
        assert len([t for t in times if t_down <= t <= t_up]) >= 4  # collected during the outage
        # nothing arrived under another identity
        assert prom_query(prom_url, 'count({__name__=~"commune_agent_.+", agent!="pc-outage"})') == []
        last = metric_value(collector_metrics(curl), "commune_agent_last_push_timestamp_seconds",
                            commune="09667", agent="pc-outage")
        assert last is not None and last >= t_up
    finally:
        for a in agents:
            a.proc.stop()
        coll.stop()
        prom.stop()
