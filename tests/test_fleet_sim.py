"""bench/fleet_sim.py at a tiny size, so that the bench cannot rot: two communes push one 2-minute
batch each through haproxy and two collector replicas, and every sample is found in
VictoriaMetrics, under the identity of the token that sent it."""
from __future__ import annotations

import asyncio
import json
import math
import urllib.parse

import pytest

from contract import remote_write
from bench.fleet_sim import KINDS, Shape, Stack, Templates, _label_bytes, batch_bodies, build_fleet, run_fleet, sim_t0_ms
from tests.support import http_get, need_binary, wait_until

pytestmark = pytest.mark.slow


def test_templates_are_what_a_real_agent_pushes():
    t = Templates()
    assert t.series() > 100 and t.samples() > 4 * t.series()  # host input every 15 s: 8 per 2 minutes
    for kind in KINDS:
        assert t.series(kind) > 5, kind
        assert all(l["target"] == "$TARGET" for l, _p in t.devices[kind])
    names = {l["__name__"] for l, _p in t.doc["pc"]}
    assert {"node_cpu_seconds_total", "node_memory_MemAvailable_bytes", "commune_agent_input_success"} <= names
    assert "commune_printer_pages_total" in {l["__name__"] for l, _p in t.devices["printer"]}
    assert not any(k in l for l, _p in t.doc["pc"] for k in ("commune", "agent"))  # the collector stamps them


def test_label_bytes_are_remote_write_encoding():
    labels = {"__name__": "node_cpu_seconds_total", "cpu": "0", "mode": "idle", "empty": ""}
    ld = remote_write._len_delimited
    ours = ld(b"\x0a", _label_bytes(labels) + ld(b"\x12", remote_write._sample(12.5, 1_700_000_000_000, 0)))
    assert ours == remote_write.serialize([(labels, [(12.5, 1_700_000_000_000)])])


def test_tiny_fleet_arrives_whole_with_its_identity(tmp_path):
    for binary in ("victoria-metrics", "haproxy"):
        need_binary(binary)
    templates = Templates()
    shape = Shape(pcs=2, printer=1, router=1, ups=1)
    stack = Stack(tmp_path, replicas=2)
    try:
        fleet = build_fleet(2, shape, stack.keyring, templates)
        t0 = sim_t0_ms(1, 0, windows=1)
        expected = {}
        for pc in fleet:
            for body in batch_bodies(pc, 0, t0)[0]:
                for labels, samples in remote_write.decode(body):
                    key = tuple(sorted(dict(labels, commune=pc.commune, agent=pc.agent).items()))
                    for value, ts in samples:
                        expected[(key, ts)] = value
        stats = asyncio.run(run_fleet(stack.lb + "/api/v1/write", fleet, t0, speedup=60, duration=0, windows=1))
        assert stats.failed == 0 and stats.samples == len(expected)
        match = urllib.parse.urlencode({"match[]": '{commune=~"2.+"}', "start": "0"})

        def export():
            out = {}
            for line in http_get(f"{stack.vm}/api/v1/export?{match}", timeout=30).decode().splitlines():
                row = json.loads(line)
                key = tuple(sorted(row["metric"].items()))
                for v, ts in zip(row["values"], row["timestamps"]):
                    out[(key, ts)] = v
            return out
        # the replicas answered 204 once VictoriaMetrics took the data; it is searchable a moment later
        wait_until(lambda: len(export()) >= len(expected), 30, interval=0.5, what="the batches in VictoriaMetrics")
        got = export()
    finally:
        stack.stop()
    assert set(got) == set(expected), (len(set(expected) - set(got)), len(set(got) - set(expected)))
    assert all(math.isclose(got[k], v, rel_tol=1e-9, abs_tol=1e-9) for k, v in expected.items())
    pollers = {(dict(k)["commune"], dict(k)["agent"]) for k, _ts in got if dict(k).get("target") == "router-01"}
    assert pollers == {("20000", "pc-01"), ("20001", "pc-01")}
    assert {dict(k)["agent"] for k, _ts in got} == {"pc-01", "pc-02"}


def test_simulated_counters_never_fall(tmp_path):
    """A counter that fell would read as a reset to rate() and resets() in the rules."""
    from collector.credentials import KeyRing, create_key

    create_key(str(tmp_path / "keys"), "k1")
    [pc] = build_fleet(1, Shape(pcs=1, printer=1, router=1, ups=1), KeyRing(str(tmp_path / "keys")), Templates())
    series = {}
    for window in range(6):
        for body in batch_bodies(pc, window, 0)[0]:
            for labels, samples in remote_write.decode(body):
                if labels["__name__"].endswith("_total"):
                    series.setdefault(tuple(sorted(labels.items())), []).extend(samples)
    assert len(series) > 100
    for key, samples in series.items():
        values = [v for v, _ts in sorted(samples, key=lambda s: s[1])]
        assert values == sorted(values), key
        assert values[-1] > values[0], key  # they move: the store compresses what it would in the field
