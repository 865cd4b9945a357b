"""Upstreams for a province and beyond: vmagent (Debian's victoria-metrics package) as a buffer
between the collector and VictoriaMetrics single-node, counted end to end across a store outage and
a vmagent restart. Tenant headers and per-province paths are tested against a recording receiver in
tests/test_collector_ingest.py (test_tenant_headers_and_paths_reach_each_upstream)."""
from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Tuple

import pytest

from tests.support import Proc, free_port, http_get, need_binary, start_victoria_metrics, wait_until
from tests.test_collector_ingest import add_token, encode, now_ms, post, series, start_collector

pytestmark = pytest.mark.slow

REQUESTS = 20
SERIES = 500


def start_vmagent(tmp: Path, remote_write_url: str) -> Tuple[Proc, str]:
    binary = need_binary("vmagent")
    port = free_port()
    buffer = tmp / "vmagent-buffer"
    buffer.mkdir(parents=True, exist_ok=True)
    proc = Proc([binary, f"-remoteWrite.url={remote_write_url}", f"-remoteWrite.tmpDataPath={buffer}",
                 f"-httpListenAddr=127.0.0.1:{port}", "-remoteWrite.flushInterval=200ms", "-loggerLevel=WARN"],
                tmp / "vmagent.log")
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_http(url + "/health")
    except BaseException:
        proc.stop()
        raise
    return proc, url


def distinct(vm: str, match: str) -> set:
    url = f"{vm}/api/v1/export?" + urllib.parse.urlencode({"match[]": match, "start": "0"})
    out = set()
    for line in http_get(url, timeout=30).decode().splitlines():
        row = json.loads(line)
        for v, t in zip(row["values"], row["timestamps"]):
            out.add((row["metric"]["n"], t, v))
    return out


def test_vmagent_buffers_a_store_outage_behind_the_collector(tmp_path):
    """The store is down (an upgrade, a disk swap): the collector forwards to vmagent, which accepts
    and keeps the data on disk, so the agents' queues stay empty; vmagent is even restarted during
    the outage; when the store is back every sample is there, exactly."""
    vm_proc, vm = start_victoria_metrics(tmp_path / "vm")
    agent_proc, vmagent = start_vmagent(tmp_path, vm + "/api/v1/write")
    coll, curl, state = start_collector(tmp_path, [vmagent + "/api/v1/write"])
    try:
        token = add_token(state, "09667", "pc-buffer")
        vm_proc.stop()  # the store goes down
        base = now_ms() - 600_000
        for r in range(REQUESTS):
            body = encode([series("buffered_value", float(r * SERIES + n), base + r * 1000, n=str(n))
                           for n in range(SERIES)])
            status, text = post(curl + "/api/v1/write", body, token)
            assert status == 204, text  # vmagent took it: the agent may delete its batch
            if r == REQUESTS // 2:  # vmagent restarted mid-outage: its disk buffer survives
                assert agent_proc.stop() == 0
                agent_proc = Proc(agent_proc.args, agent_proc.log_path)
                agent_proc.wait_http(vmagent + "/health")
        vm_proc = Proc(vm_proc.args, vm_proc.log_path)  # the store is back, same data and port
        vm_proc.wait_http(vm + "/health")
        expected = {(str(n), base + r * 1000, float(r * SERIES + n)) for r in range(REQUESTS) for n in range(SERIES)}
        try:
            wait_until(lambda: distinct(vm, 'buffered_value{agent="pc-buffer",commune="09667"}') == expected, 120,
                       interval=0.5, what="every buffered sample in VictoriaMetrics")
        finally:
            got = distinct(vm, "buffered_value")
            print(f"\nvmagent buffer: {len(expected)} samples sent while the store was down, "
                  f"{len(got & expected)} in VictoriaMetrics after it came back, lost {len(expected - got)}")
    finally:
        coll.stop()
        agent_proc.stop()
        vm_proc.stop()
