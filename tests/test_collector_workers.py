"""``workers: N``: several collector processes on one listen port (SO_REUSEPORT), one /metrics.

The real collector with two workers in front of a real Prometheus: pushes on fresh connections
reach both workers, every sample arrives, every scrape (whichever worker answers it) shows the
sums of both, SIGTERM stops all of them with exit 0, and a worker that dies stops the service
with exit 1."""
from __future__ import annotations

import json
import signal
import socket
import sys
import time

import psutil
import pytest

from contract.remote_write import encode
from tests.support import prom_query, start_prometheus, wait_until
from tests.test_collector_ingest import (add_token, collector_metrics, metric_value, now_ms, post, series,
                                         start_collector)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT workers are Linux only")]

REQUESTS = 40
SERIES = 5


@pytest.fixture
def two_workers(tmp_path):
    prom_proc, prom = start_prometheus(tmp_path / "prom")
    proc, url, state = start_collector(tmp_path, [prom + "/api/v1/write"], extra={"workers": 2})
    try:
        wait_until(lambda: len(workers_of(proc.pid)) == 2 and all(figures_socket(w) for w in workers_of(proc.pid)),
                   what="two workers with their figures sockets")
        yield proc, url, state, prom
    finally:
        proc.stop()
        prom_proc.stop()


def workers_of(pid: int) -> list:
    return [c for c in psutil.Process(pid).children() if c.status() != psutil.STATUS_ZOMBIE]


def figures_socket(worker: psutil.Process) -> str:
    for conn in worker.net_connections(kind="unix"):
        if conn.laddr and conn.laddr.endswith(".sock") and "worker-" in conn.laddr:
            return conn.laddr
    return ""


def own_figures(worker: psutil.Process) -> dict:
    """What one worker counted itself, read from its figures socket as a sibling would."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(figures_socket(worker))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    out = {}
    for name, labels, value in json.loads(data)["samples"]:
        out[(name, tuple(sorted(labels.items())))] = value
    return out


def test_two_workers_share_the_port_and_metrics_add_up(two_workers):
    proc, url, state, prom = two_workers
    token = add_token(state, "09667", "pc-workers")
    ts = now_ms()
    for r in range(REQUESTS):  # urllib: a new connection each time, spread over the workers by the kernel
        body = encode([series("workers_metric", float(r), ts - (REQUESTS - r) * 1000, i=str(i)) for i in range(SERIES)])
        status, text = post(url + "/api/v1/write", body, token)
        assert status == 204, text

    wait_until(lambda: prom_query(prom, 'count_over_time(workers_metric{agent="pc-workers",commune="09667"}[10m])'),
               what="samples in Prometheus")
    got = prom_query(prom, 'count_over_time(workers_metric{agent="pc-workers",commune="09667"}[10m])')
    assert len(got) == SERIES and all(int(r["value"][1]) == REQUESTS for r in got)

    key = ("commune_collector_requests_total", (("code", "204"), ("handler", "write")))
    shares = [own_figures(w).get(key, 0) for w in workers_of(proc.pid)]
    assert sum(shares) == REQUESTS and min(shares) > 0, f"requests per worker: {shares}"

    for _ in range(8):  # each scrape reaches one worker or the other: every one shows the whole service
        text = collector_metrics(url)
        assert metric_value(text, "commune_collector_requests_total", handler="write", code="204") == REQUESTS
        assert metric_value(text, "commune_collector_samples_received_total") == REQUESTS * SERIES
        assert metric_value(text, "commune_collector_samples_forwarded_total",
                            upstream=prom.split("//")[1]) == REQUESTS * SERIES
        assert metric_value(text, "commune_collector_upstream_up", upstream=prom.split("//")[1]) == 1
        assert metric_value(text, "commune_agent_last_push_timestamp_seconds", commune="09667", agent="pc-workers")
        assert metric_value(text, "commune_collector_agent_tokens") == 1
        assert text.count("commune_collector_build_info{") == 1
        assert metric_value(text, "commune_collector_rejected_requests_total", reason="unauthorized") == 0

    assert post(url + "/api/v1/write", encode([series("x", 1.0, ts)]), "not-a-token")[0] == 401
    text = collector_metrics(url)
    assert metric_value(text, "commune_collector_rejected_requests_total", reason="unauthorized") == 1

    children = workers_of(proc.pid)
    proc.signal(signal.SIGTERM)
    assert proc.popen.wait(30) == 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive
    assert proc.log().count("stopped") >= 3, proc.log()[-2000:]


def test_a_worker_that_dies_stops_the_service_with_exit_1(two_workers):
    proc, url, _state, _prom = two_workers
    victim, other = workers_of(proc.pid)
    victim.kill()
    assert proc.popen.wait(30) == 1
    gone, alive = psutil.wait_procs([other], timeout=10)
    assert not alive
    assert f"worker 0 (pid {victim.pid})" in proc.log() or f"worker 1 (pid {victim.pid})" in proc.log()
    assert "exited with signal 9; stopping the collector" in proc.log()


def test_workers_must_be_between_1_and_64():
    from contract.schema import ConfigErrors
    from collector.config import parse_config

    for n in (0, 65):
        with pytest.raises(ConfigErrors) as exc:
            parse_config(f"workers: {n}\nupstreams: [{{url: 'http://127.0.0.1:1/api/v1/write'}}]\n", environ={})
        assert any("workers: must be between 1 and 64" in str(e) for e in exc.value.errors), exc.value.errors
    assert parse_config("upstreams: [{url: 'http://127.0.0.1:1/api/v1/write'}]\n", environ={}).workers == 1


def test_workers_on_an_address_in_use_exit_1(tmp_path):
    import yaml

    from tests.support import Proc, free_port
    from tests.support import collector_command

    with socket.socket() as held:  # a listener without SO_REUSEPORT: nobody can share the port
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        cfg = tmp_path / "collector.yaml"
        cfg.write_text(yaml.safe_dump({"web": {"listen_address": f"127.0.0.1:{port}"}, "workers": 2,
                                       "upstreams": [{"url": f"http://127.0.0.1:{free_port()}/api/v1/write"}],
                                       "state": {"dir": str(tmp_path / "state")}}))
        proc = Proc(collector_command() + ["serve", "-c", str(cfg)], tmp_path / "collector.log")
        try:
            assert proc.popen.wait(30) == 1
        finally:
            proc.stop()
    assert f"cannot serve on 127.0.0.1:{port}" in proc.log()


def test_without_so_reuseport_the_collector_runs_one_process(monkeypatch, caplog):
    """Elsewhere than Linux: one process, and a log line saying so."""
    from collector import workers
    from collector.config import parse_config

    config = parse_config("workers: 3\nupstreams: [{url: 'http://127.0.0.1:1/api/v1/write'}]\n", environ={})
    ran = []
    monkeypatch.setattr(workers, "reuse_port_supported", lambda: False)
    monkeypatch.setattr(workers, "run_one", lambda cfg, worker=None: ran.append(worker) or 0)
    monkeypatch.setattr(workers, "supervise", lambda cfg, n: pytest.fail("supervisor started"))
    with caplog.at_level("WARNING", logger="collector"):
        assert workers.run_collector(config) == 0
    assert ran == [None]
    assert "workers: 3 needs SO_REUSEPORT (Linux); running one process" in caplog.text
