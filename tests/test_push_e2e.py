"""Store-and-forward end to end: the real agent process pushing to real Prometheus through an
outage with an agent restart in the middle (zero gaps), a full disk under the agent, a corrupt
queue at start, and enrollment against the real collector."""
from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import time
from typing import List

import pytest
import yaml

from agent.config import load_config
from agent.push import Push, QueueInput, component
from contract.samples import Batch, Sample, sample
from lab import agent as lab_agent
from lab.agent import agent_config
from tests.support import (Proc, agent_command, free_port, http_get, prom_query, record_exposition,
                           start_prometheus, wait_until)

pytestmark = pytest.mark.slow

class Agent(lab_agent.Agent):
    def on_exposition(self, text: str) -> str:
        return record_exposition(text)


def restart_prometheus(old: Proc) -> Proc:
    """The same Prometheus (same port, same data) started again after ``old.stop()``."""
    proc = Proc(old.args, old.log_path)
    port = [a for a in old.args if a.startswith("--web.listen-address=")][0].rsplit(":", 1)[1]
    proc.wait_http(f"http://127.0.0.1:{port}/-/ready")
    return proc


def sample_times(url: str, query: str, start: float, end: float) -> List[float]:
    """Timestamps (s) of every raw sample of ``query`` between start and end."""
    window = int(end - start) + 2
    res = prom_query(url, f"{query}[{window}s]", time_s=end)
    return sorted(float(t) for r in res for t, _ in r["values"] if float(t) >= start)


# ---------------------------------------------------------------- the outage

def test_outage_with_an_agent_restart_loses_no_collection(tmp_path):
    prom, url = start_prometheus(tmp_path / "prom")
    agents = []
    try:
        config = agent_config(tmp_path, url + "/api/v1/write")
        a1 = Agent(tmp_path, config, "agent-1")
        agents.append(a1)
        wait_until(lambda: prom_query(url, 'commune_agent_input_success{input="host"}'), 30,
                   what="the first pushed samples in Prometheus")
        t_start = time.time()
        wait_until(lambda: len(sample_times(url, 'commune_agent_input_last_run_timestamp_seconds{input="host"}',
                                            t_start, time.time())) >= 2, 30, what="samples before the outage")

        prom.stop()  # the link goes down
        t_down = time.time()
        wait_until(lambda: a1.value("commune_agent_push_failed_requests_total,reason=network") >= 2, 30,
                   what="failed pushes while Prometheus is down")
        t_failing = time.time()  # the oldest queued batch was made before this (it failed twice)
        wait_until(lambda: a1.value("commune_agent_queue_batches") >= 6, 30, what="a backlog in the queue")

        assert a1.proc.stop() == 0  # restart the agent in the middle of the outage
        t_a1_stopped = time.time()
        a2 = Agent(tmp_path, config, "agent-2")
        agents.append(a2)
        t_a2_started = time.time()
        m = a2.first_metrics()
        assert m["commune_agent_queue_batches"] >= 6  # the backlog survived the restart
        # the age is read when the queue input last ran (every 1 s, later on a loaded machine)
        wait_until(lambda: a2.value("commune_agent_queue_oldest_age_seconds") > time.time() - t_failing - 2, 10,
                   what="the backlog's age to cover the outage")
        wait_until(lambda: a2.value("commune_agent_push_failed_requests_total,reason=network") >= 2, 30,
                   what="the restarted agent failing to push too")

        prom = restart_prometheus(prom)  # the link is back
        t_up = time.time()
        wait_until(lambda: a2.value("commune_agent_queue_oldest_age_seconds") < 5
                   and a2.value("commune_agent_push_last_success_timestamp_seconds") > t_up, 60,
                   what="the backlog to drain")
        time.sleep(2)
        t_end = time.time()

        m = a2.metrics()
        assert all(m[f"commune_agent_queue_dropped_samples_total,reason={r}"] == 0
                   for r in ("too_old", "queue_full", "disk_full", "rejected", "corrupt"))

        times = sample_times(url, 'commune_agent_input_last_run_timestamp_seconds{input="host"}', t_start, t_end)
        assert times[0] <= t_down and times[-1] >= t_up
        steps = list(zip(times, times[1:]))
        # the agent's own restart is the only place where a step may be off the 1s grid
        restart = [(a, b) for a, b in steps if a <= t_a1_stopped <= b]
        assert len(restart) == 1 and restart[0][1] <= t_a2_started + 1.6, restart
        others = [b - a for a, b in steps if (a, b) not in restart]
        assert all(0.4 <= d <= 1.6 for d in others), others  # a missed collection would be ~2s
        assert len([t for t in times if t_down <= t <= t_up]) >= 4  # collected during the outage

        # the queue's own metrics were pushed too
        assert prom_query(url, "commune_agent_queue_batches")
        assert prom_query(url, 'commune_agent_queue_dropped_samples_total{reason="disk_full"}')
    finally:
        for a in agents:
            a.proc.stop()
        prom.stop()


# ---------------------------------------------------------------- faults under the agent



def test_a_full_disk_does_not_stop_the_agent(tmp_path, small_disk):
    dead = f"http://127.0.0.1:{free_port()}/api/v1/write"  # nothing listens: everything queues
    config = agent_config(tmp_path, dead, state_dir=small_disk, queue={"fsync": "always"})
    agent = Agent(tmp_path, config)
    try:
        wait_until(lambda: agent.value("commune_agent_queue_batches") >= 2, 30, what="queued batches")
        st = os.statvfs(small_disk)
        with open(small_disk / "filler", "wb") as f:
            f.write(b"\0" * (st.f_bavail * st.f_frsize))
        wait_until(lambda: agent.value("commune_agent_queue_dropped_samples_total,reason=disk_full") > 0, 60,
                   what="disk_full drops")
        before = agent.value('commune_agent_input_last_run_timestamp_seconds,input=host')
        wait_until(lambda: agent.value('commune_agent_input_last_run_timestamp_seconds,input=host') > before + 2,
                   10, what="collections going on")
        assert agent.proc.alive()
        (small_disk / "filler").unlink()
        batches = agent.value("commune_agent_queue_batches")
        wait_until(lambda: agent.value("commune_agent_queue_batches") > batches + 2, 30,
                   what="batches stored again once there is room")
        assert "disk full" in agent.proc.log()
    finally:
        assert agent.proc.stop() == 0


def test_a_corrupt_queue_is_set_aside_at_start(tmp_path, prometheus):
    _, url = prometheus
    state = tmp_path / "state"
    state.mkdir()
    (state / "queue.db").write_bytes(b"\x00garbage after a power cut\x00" * 500)
    agent = Agent(tmp_path, agent_config(tmp_path, url + "/api/v1/write", state_dir=state))
    try:
        assert agent.first_metrics()["commune_agent_queue_corrupt_files_total"] == 1
        aside = [p.name for p in state.iterdir() if p.name.startswith("queue.db.corrupt-")]
        assert len(aside) == 1
        wait_until(lambda: prom_query(url, "commune_agent_queue_corrupt_files_total == 1"), 30,
                   what="pushes from the fresh queue")
        assert "is corrupt" in agent.proc.log() and aside[0] in agent.proc.log()
    finally:
        agent.proc.stop()


def test_secrets_never_reach_logs_or_metrics(tmp_path, prometheus):
    _, url = prometheus
    agent = Agent(tmp_path, agent_config(tmp_path, url + "/api/v1/write", bearer_token="tok-VERY-SECRET-42"),
                  "agent-secret")
    try:
        wait_until(lambda: agent.value("commune_agent_push_sent_batches_total") > 0, 30, what="pushes")
        assert "tok-VERY-SECRET-42" not in http_get(agent.metrics_url).decode()
    finally:
        agent.proc.stop()
    assert "tok-VERY-SECRET-42" not in agent.proc.log_path.read_text()


# ---------------------------------------------------------------- the component in process

def test_component_is_off_unless_enabled(tmp_path):
    cfg = load_config(None)
    assert component(cfg) is None


def test_component_queues_ships_and_reports(tmp_path):
    from tests.test_shipper import Recorder

    rec = Recorder()
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump({"agent": {"state_dir": str(tmp_path / "state")},
                                    "push": {"enabled": True, "url": rec.url, "max_samples_per_request": 2,
                                             "require_token": False}}))
    cfg = load_config(str(path))
    push = component(cfg)
    try:
        from agent.app import Agent as App

        queue_inputs = [i for i in push.inputs if isinstance(i, QueueInput)]
        assert len(queue_inputs) == 1 and queue_inputs[0].push is push  # the component brings its input
        assert queue_inputs[0].name == "queue"
        app = App(cfg, listen_address=f"127.0.0.1:{free_port()}")  # the app runs the component's inputs too
        try:
            assert ["queue"] == [i.name for i in app.runner.inputs if isinstance(i, QueueInput)]
        finally:
            for c in app.components:
                c.close()

        now = int(time.time() * 1000)

        async def scenario():
            stop = asyncio.Event()
            task = asyncio.ensure_future(push.run(stop))
            push.sink(Batch("host", now, [sample("node_load1", 0.5), sample("node_load5", 0.25),
                                          sample("node_load15", 0.125)]))
            push.sink(Batch("bad", now, [Sample("node_load1", {"bad-label": "x"}, 1.0)]))  # an input bug
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: wait_until(lambda: push.shipper.sent_samples == 3, 10, what="shipped"))
            stop.set()
            await asyncio.wait_for(task, 10)

        asyncio.run(scenario())
        sent = [s for i in range(len(rec.requests)) for s in rec.decoded(i)]
        assert sorted((l["__name__"], v, t) for l, [(v, t)] in sent) == \
            [("node_load1", 0.5, now), ("node_load15", 0.125, now), ("node_load5", 0.25, now)]
        assert len(rec.requests) == 2  # 3 samples, at most 2 per request (batch split on queueing)
        got = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in queue_inputs[0].collect()}
        assert got[("commune_agent_queue_dropped_samples_total", (("reason", "rejected"),))] == 1
        assert got[("commune_agent_push_sent_samples_total", ())] == 3
        assert got[("commune_agent_push_sent_batches_total", ())] == 2
        assert got[("commune_agent_queue_batches", ())] == 0
        assert got[("commune_agent_queue_max_size_bytes", ())] == 200_000_000
        assert ("commune_agent_push_last_success_timestamp_seconds", ()) in got
    finally:
        push.close()
        rec.stop()


def test_close_stores_what_the_sink_took(tmp_path):
    cfg = load_config(None)
    cfg.agent.state_dir = str(tmp_path / "state")
    cfg.push.enabled, cfg.push.url = True, f"http://127.0.0.1:{free_port()}/api/v1/write"
    push = Push(cfg.push, cfg.agent.state_dir)
    push.sink(Batch("host", int(time.time() * 1000), [sample("node_load1", 0.5)]))
    push.close()
    again = Push(cfg.push, cfg.agent.state_dir)
    try:
        assert again.queue.stats().samples == 1
    finally:
        again.close()


# ---------------------------------------------------------------- enrollment against the real collector

def test_enroll_then_push_through_the_collector(tmp_path):
    from collector.state import Store
    from tests.test_collector_ingest import start_collector

    prom, prom_url = start_prometheus(tmp_path / "prom")
    coll = None
    agent = None
    try:
        coll, curl, cstate = start_collector(tmp_path, [prom_url + "/api/v1/write"])
        _rec, key = Store(str(cstate)).add_enroll_key("09667", 3600)
        state = tmp_path / "agent-state"
        config = agent_config(tmp_path, curl + "/api/v1/write", state_dir=state)
        bad = subprocess.run(agent_command() + ["enroll", "--collector", curl, "--key", "cme_wrong", "-c", str(config)],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1 and "refused the enrollment: HTTP 403" in bad.stderr
        ok = subprocess.run(agent_command() + ["enroll", "--collector", curl, "-c", str(config)],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "COMMUNE_ENROLL_KEY": key})
        assert ok.returncode == 0, ok.stderr
        token_file = state / "push.token"
        assert f"enrolled as agent 'pc-test' of commune '09667'; token saved to {token_file}" in ok.stdout
        token = token_file.read_text().strip()
        assert token and token not in ok.stdout + ok.stderr
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        agent = Agent(tmp_path, config)
        res = wait_until(lambda: prom_query(prom_url, 'commune_agent_queue_batches{commune="09667",agent="pc-test"}'),
                         30, what="the agent's samples through the collector, stamped with its identity")
        assert res
        # the agent says when it sent each push: its clock (this machine's) matches the collector's
        from tests.test_collector_ingest import collector_metrics, metric_value

        skew = metric_value(collector_metrics(curl), "commune_agent_clock_skew_seconds", commune="09667", agent="pc-test")
        assert skew is not None and abs(skew) < 5
        again = subprocess.run(agent_command() + ["enroll", "--collector", curl, "--key", key, "-c", str(config)],
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 1 and "HTTP 403" in again.stderr  # one-time key
    finally:
        if agent:
            agent.proc.stop()
        if coll:
            coll.stop()
        prom.stop()


def test_a_killed_agent_keeps_its_queue(tmp_path):
    """SIGKILL (no shutdown at all) in the middle of an outage: what was queued is still there."""
    import signal

    dead = f"http://127.0.0.1:{free_port()}/api/v1/write"
    config = agent_config(tmp_path, dead)
    agent = Agent(tmp_path, config, "agent-killed")
    try:
        wait_until(lambda: agent.value("commune_agent_queue_batches") >= 5, 30, what="a backlog")
        queued = agent.value("commune_agent_queue_batches")
        agent.proc.signal(signal.SIGKILL)
        agent.proc.popen.wait(10)
    finally:
        agent.proc.stop()
    again = Agent(tmp_path, config, "agent-after-kill")
    try:
        m = again.first_metrics()
        assert m["commune_agent_queue_batches"] >= queued
        assert m["commune_agent_queue_corrupt_files_total"] == 0
    finally:
        again.proc.stop()


def test_a_series_the_collector_would_refuse_is_left_out_alone_before_it_is_queued(caplog):
    """One series with a 1,100-character label value among 101: the 100 others are queued (the
    collector would refuse a request holding it, losing all 101 before the contract)."""
    from contract import remote_write
    from agent.push import encode_batch

    drops = []
    # Sample() directly: these made-up names are not emitted by the agent (see test_zz_catalog)
    samples = [Sample("good_metric", {"i": str(i)}, float(i)) for i in range(100)]
    samples.insert(40, Sample("bad_metric", {"path": "C:\\" + "x" * 1_100}, 1.0))
    entries = encode_batch(Batch("process", 1_000, samples), 2000, lambda reason, n: drops.append((reason, n)))
    assert drops == [("rejected", 1)]
    assert sum(e.samples for e in entries) == 100
    assert sorted(int(labels["i"]) for e in entries for labels, _ in remote_write.decode(e.payload)) == list(range(100))
    assert "value of label 'path' is 1103 characters, over limits.max_label_value_length (1024)" in caplog.text


def test_a_label_that_cannot_be_encoded_is_left_out_alone(caplog):
    """A mount point psutil read with undecodable bytes (a surrogate escape) passes the name rules
    but cannot be encoded: it is dropped as rejected, the other samples are queued, and the queue
    writer keeps going (it once died on it and queued nothing more)."""
    from agent.push import encode_batch
    from contract import remote_write

    drops = []
    samples = [Sample("node_filesystem_avail_bytes", {"mountpoint": "/mnt/\udcff"}, 1.0),
               Sample("node_load1", {}, 0.5)]
    entries = encode_batch(Batch("host", 1_000, samples), 2000, lambda reason, n: drops.append((reason, n)))
    assert drops == [("rejected", 1)]
    assert [labels["__name__"] for e in entries for labels, _ in remote_write.decode(e.payload)] == ["node_load1"]
    assert "not valid UTF-8" in caplog.text
