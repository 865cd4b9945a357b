"""The collector as a real process between pushed remote-write bodies and real Prometheus and
VictoriaMetrics: identity stamping, authentication, limits, upstream faults, enrollment, http_sd,
TLS and its own /metrics."""
from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional, Tuple

import pytest

from contract.remote_write import HEADERS, compress, encode, serialize
from collector.state import Store
from lab.collector import add_token, start_collector
from tests.support import (Proc, free_port, http_get, prom_query, record_exposition, start_prometheus,
                           start_victoria_metrics, wait_until)

pytestmark = pytest.mark.slow
FLEET_EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "fleet.example.yaml"


# ---------------------------------------------------------------- helpers (used by other collector tests)

def post(url: str, body: bytes, token: Optional[str] = None, headers: Optional[dict] = None,
         context: Optional[ssl.SSLContext] = None, full: bool = False):
    """POST a body; returns (status, response text) for any status, and the headers with ``full``."""
    h = dict(HEADERS)
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    h.update(headers or {})
    req = urllib.request.Request(url, data=body, headers=h, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as resp:
            out = resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        out = exc.code, exc.read().decode(), dict(exc.headers)
    return out if full else out[:2]


def series(name: str, value: float, ts_ms: int, **labels: str):
    return ({"__name__": name, **labels}, [(value, ts_ms)])


def now_ms() -> int:
    return int(time.time() * 1000)


def collector_metrics(url: str, headers: Optional[dict] = None) -> str:
    return record_exposition(http_get(url + "/metrics", headers=headers).decode())


def metric_value(text: str, name: str, **labels: str) -> Optional[float]:
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def log_text(proc: Proc) -> str:
    """The whole log of a process, also after it stopped."""
    return proc.log_path.read_text(errors="replace")


def vm_query(url: str, query: str) -> list:
    body = json.loads(http_get(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}"))
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture
def prom(tmp_path):
    proc, url = start_prometheus(tmp_path / "prom")
    try:
        yield url
    finally:
        proc.stop()


@pytest.fixture
def collector(tmp_path, prom):
    proc, url, state = start_collector(tmp_path, [prom + "/api/v1/write"])
    try:
        yield url, state, prom, proc
    finally:
        proc.stop()
        assert "Traceback" not in log_text(proc), log_text(proc)


# ---------------------------------------------------------------- end to end

def test_push_reaches_prometheus_with_the_identity_of_the_token(collector):
    url, state, prom, _proc = collector
    token = add_token(state, "09667", "pc-ketoan-01")
    ts = now_ms()
    body = encode([
        series("node_memory_MemAvailable_bytes", 123456789, ts, commune="26734", agent="impostor", job="agent"),
        series("node_cpu_seconds_total", 10.5, ts, cpu="0", mode="idle"),
        ({"__name__": "node_load1"}, [(0.25, ts - 2000), (0.5, ts - 1000), (0.75, ts)]),
    ])
    status, text = post(url + "/api/v1/write", body, token)
    assert (status, text) == (204, "")

    found = wait_until(lambda: prom_query(prom, "node_memory_MemAvailable_bytes"), what="series in Prometheus")
    assert [r["metric"] for r in found] == [{"__name__": "node_memory_MemAvailable_bytes", "commune": "09667",
                                             "agent": "pc-ketoan-01", "job": "agent"}]
    assert float(found[0]["value"][1]) == 123456789
    assert prom_query(prom, 'node_cpu_seconds_total{commune="09667",agent="pc-ketoan-01",cpu="0"}')
    assert not prom_query(prom, '{commune="26734"}')
    assert not prom_query(prom, '{agent="impostor"}')
    assert len(prom_query(prom, 'count_over_time(node_load1{commune="09667"}[1m])')) == 1
    assert prom_query(prom, 'count_over_time(node_load1{commune="09667"}[1m])')[0]["value"][1] == "3"

    text = collector_metrics(url)
    last = metric_value(text, "commune_agent_last_push_timestamp_seconds", commune="09667", agent="pc-ketoan-01")
    assert last is not None and abs(last - time.time()) < 60
    assert metric_value(text, "commune_collector_samples_received_total") == 5
    assert metric_value(text, "commune_collector_samples_forwarded_total", upstream=prom.split("//")[1]) == 5
    assert metric_value(text, "commune_collector_requests_total", handler="write", code="204") == 1
    assert metric_value(text, "commune_collector_received_bytes_total") == len(body)
    assert metric_value(text, "commune_collector_agent_info", commune="09667", agent="pc-ketoan-01") == 1
    assert metric_value(text, "commune_collector_agent_tokens") == 1
    assert metric_value(text, "commune_collector_upstream_requests_total", code="204") >= 1
    assert metric_value(text, "commune_collector_upstream_duration_seconds_total") > 0
    assert metric_value(text, "commune_collector_upstream_sent_bytes_total") > 0


def test_an_empty_write_request_is_accepted(collector):
    url, state, _prom, _proc = collector
    token = add_token(state, "c1", "a1")
    assert post(url + "/api/v1/write", encode([]), token)[0] == 204


# ---------------------------------------------------------------- security and limits

def test_authentication(collector):
    url, state, prom, _proc = collector
    good = add_token(state, "c1", "a1")
    body = encode([series("auth_probe_metric", 1, now_ms())])
    assert post(url + "/api/v1/write", body)[0] == 401
    status, text = post(url + "/api/v1/write", body, "cmt_" + "x" * 43)
    assert (status, text.strip()) == (401, "missing, unknown or revoked agent token")
    assert post(url + "/api/v1/write", body, headers={"Authorization": "Basic YTpi"})[0] == 401
    assert post(url + "/api/v1/write", body, good[:-1])[0] == 401
    assert post(url + "/api/v1/write", body, good)[0] == 204
    Store(str(state)).revoke_token(Store(str(state)).authenticate(good).token_id)
    assert post(url + "/api/v1/write", body, good)[0] == 401  # seen without restarting the collector
    text = collector_metrics(url)
    assert metric_value(text, "commune_collector_rejected_requests_total", reason="unauthorized") == 5
    assert metric_value(text, "commune_collector_requests_total", handler="write", code="401") == 5
    assert good not in text


def test_an_agent_cannot_write_as_another_commune(collector):
    url, state, prom, _proc = collector
    mine = add_token(state, "commune-a", "pc-1")
    ts = now_ms()
    body = encode([series("impersonation_probe", 7, ts, commune="commune-b", agent="pc-9")])
    assert post(url + "/api/v1/write", body, mine)[0] == 204
    got = wait_until(lambda: prom_query(prom, "impersonation_probe"), what="impersonation_probe")
    assert [(r["metric"]["commune"], r["metric"]["agent"]) for r in got] == [("commune-a", "pc-1")]


def test_oversized_bodies_are_refused_with_413(tmp_path, prom):
    proc, url, state = start_collector(tmp_path, [prom + "/api/v1/write"],
                                       extra={"limits": {"max_body_size": 2000, "max_decoded_size": 100000}})
    try:
        token = add_token(state, "c1", "a1")
        big = encode([series("big_metric", i, now_ms(), i=str(i), pad="p" * 40 + str(i)) for i in range(400)])
        assert len(big) > 2000
        status, text = post(url + "/api/v1/write", big, token)
        assert status == 413 and f"body of {len(big)} bytes is over limits.max_body_size (2000)" in text
        # chunked transfer: no Content-Length, refused once the limit is crossed
        status, _ = post(url + "/api/v1/write", iter([big[:1500], big[1500:]]), token,
                         headers={"Transfer-Encoding": "chunked"})
        assert status == 413
        # a small body whose snappy preamble announces 200000 bytes: refused before inflating
        bomb = bytes([0xc0, 0x9a, 0x0c]) + compress(b"\0" * 1000)[2:]
        status, text = post(url + "/api/v1/write", bomb, token)
        assert status == 413 and "decoded body would be 200000 bytes, over limits.max_decoded_size (100000)" in text
        assert post(url + "/api/v1/write", encode([series("small_metric", 1, now_ms())]), token)[0] == 204
        text = collector_metrics(url)
        assert metric_value(text, "commune_collector_rejected_requests_total", reason="body_too_large") == 3
    finally:
        proc.stop()
    assert "Traceback" not in log_text(proc)


@pytest.mark.parametrize("body,message", [
    (b"", "malformed remote-write request: body is empty"),
    (b"\xff\xff\xff\xff\xff\xff", "malformed remote-write request: body is not snappy block format"),
    (b"hello, this is not snappy at all", "malformed remote-write request: body is not snappy block format"),
    (compress(b"\x0a\x05garbage-not-protobuf"), "malformed remote-write request: body is not a protobuf WriteRequest"),
    (compress(serialize([]) + b"\x0a\x02\x0a\x00"),
     "none of the 0 samples can be accepted, retrying cannot help: series 0: no __name__ label"),
])
def test_garbage_bodies_are_refused_with_400(collector, body, message):
    url, state, _prom, proc = collector
    token = add_token(state, "c1", "a1")
    status, text = post(url + "/api/v1/write", body, token)
    assert status == 400
    assert text.startswith(message), text
    assert proc.alive()


def test_content_encoding_other_than_snappy_is_refused(collector):
    url, state, _prom, _proc = collector
    token = add_token(state, "c1", "a1")
    import gzip

    status, text = post(url + "/api/v1/write", gzip.compress(serialize([series("x", 1, now_ms())])), token,
                        headers={"Content-Encoding": "gzip"})
    assert (status, text.strip()) == (415, "Content-Encoding must be snappy, got 'gzip'")


def test_request_limits_answer_413_and_series_limits_drop_only_that_series(tmp_path, prom):
    limits = {"max_series_per_request": 3, "max_samples_per_request": 5, "max_labels_per_series": 4,
              "max_label_name_length": 16, "max_label_value_length": 20}
    proc, url, state = start_collector(tmp_path, [prom + "/api/v1/write"], extra={"limits": limits})
    try:
        token = add_token(state, "c1", "a1")
        ts = now_ms()
        # over a per-request limit: 413, the agent sends it again split
        for payload, message in [
            ([series(f"m{i}", 1, ts) for i in range(4)],
             "4 series in one request, over limits.max_series_per_request (3); send smaller batches"),
            ([({"__name__": "m"}, [(1.0, ts + i) for i in range(6)])],
             "6 samples in one request, over limits.max_samples_per_request (5); send smaller batches"),
        ]:
            status, text = post(url + "/api/v1/write", encode(payload), token)
            assert (status, text.strip()) == (413, message)
        # a series over a per-series limit can never be accepted: alone, 400 with the reason ...
        cases = [
            (series("m", 1, ts, a="1", b="2", c="3", d="4"),
             "series 0 (m): 5 labels, over limits.max_labels_per_series (4)"),
            (series("m", 1, ts, a_very_long_label_name="x"),
             "series 0 (m): label name 'a_very_long_label_name'... is 22 characters, over "
             "limits.max_label_name_length (16)"),
            (series("m", 1, ts, a="v" * 21),
             "series 0 (m): value of label 'a' is 21 characters, over limits.max_label_value_length (20)"),
        ]
        for bad, message in cases:
            status, text = post(url + "/api/v1/write", encode([bad]), token)
            assert (status, text.strip()) == (400, "none of the 1 samples can be accepted, retrying cannot help: "
                                                   + message)
        # ... and beside good series only it is left out: 200, the count in a header, the rest forwarded
        bad = series("limit_bad", 1, ts, a="v" * 21)
        good = [series("limit_good", 1, ts, i=str(i)) for i in range(2)]
        status, text, headers = post(url + "/api/v1/write", encode([good[0], bad, good[1]]), token, full=True)
        assert status == 200 and headers["X-Commune-Dropped-Samples"] == "1", (status, text)
        assert text.strip() == ("accepted 2 of 3 samples; dropped 1: series 1 (limit_bad): value of label 'a' is "
                                "21 characters, over limits.max_label_value_length (20)")
        got = wait_until(lambda: (lambda r: r if len(r) == 2 else None)(prom_query(prom, "limit_good")),
                         what="both good series")
        assert sorted(r["metric"]["i"] for r in got) == ["0", "1"]
        assert prom_query(prom, "limit_bad") == []
        # at the limits exactly: accepted (commune and agent sent by the agent do not count)
        ok = [series("limit_ok", 1, ts, a="1", b="2", commune="x", agent="y", c="v" * 20)]
        assert post(url + "/api/v1/write", encode(ok), token)[0] == 204
        metrics = collector_metrics(url)
        assert metric_value(metrics, "commune_collector_rejected_requests_total", reason="limits") == 2
        assert metric_value(metrics, "commune_collector_rejected_requests_total", reason="invalid") == 3
        assert metric_value(metrics, "commune_collector_samples_dropped_total", reason="invalid") == 4
    finally:
        proc.stop()


def test_samples_outside_the_time_range_are_dropped_and_counted(collector):
    url, state, prom, _proc = collector
    token = add_token(state, "c1", "pc-wrong-clock")
    ts = now_ms()
    year_2000 = 946684800000
    mixed = encode([({"__name__": "clock_metric"}, [(1.0, year_2000), (2.0, ts)]),
                    ({"__name__": "clock_future"}, [(3.0, ts + 3_600_000)])])
    status, text, headers = post(url + "/api/v1/write", mixed, token, full=True)
    assert (status, headers["X-Commune-Dropped-Samples"]) == (200, "2"), text
    got = wait_until(lambda: prom_query(prom, "clock_metric"), what="clock_metric")
    assert float(got[0]["value"][1]) == 2.0
    assert prom_query(prom, "clock_future", time_s=ts / 1000 + 3600) == []
    status, text = post(url + "/api/v1/write", encode([series("clock_metric", 5, year_2000)]), token)
    assert (status, text.strip()) == (400, "none of the 1 samples can be accepted, retrying cannot help: older "
                                           "than limits.max_sample_age 7d: 1, ahead of the collector's clock by "
                                           "more than limits.max_clock_skew 10m: 0 (is the agent's clock right?)")
    metrics = collector_metrics(url)
    assert metric_value(metrics, "commune_collector_samples_dropped_total", reason="too_old") == 2
    assert metric_value(metrics, "commune_collector_samples_dropped_total", reason="in_future") == 1
    assert metric_value(metrics, "commune_collector_rejected_requests_total", reason="out_of_range") == 1
    # the agent with the wrong clock is named
    assert metric_value(metrics, "commune_collector_agent_samples_dropped_total", commune="c1",
                        agent="pc-wrong-clock", reason="too_old") == 2
    assert metric_value(metrics, "commune_collector_agent_samples_dropped_total", commune="c1",
                        agent="pc-wrong-clock", reason="in_future") == 1


def test_the_clock_skew_of_each_agent_is_measured_from_its_send_time(collector):
    url, state, _prom, _proc = collector
    ahead = add_token(state, "c1", "pc-ahead")
    behind = add_token(state, "c1", "pc-behind")
    ts = now_ms()
    status, _ = post(url + "/api/v1/write", encode([series("skew_metric", 1, ts)]), ahead,
                     headers={"X-Commune-Agent-Time": f"{time.time() + 300:.3f}"})
    assert status == 204
    # refused samples still tell the skew: it is measured before the body is read
    status, _ = post(url + "/api/v1/write", encode([series("skew_metric", 1, 946684800000)]), behind,
                     headers={"X-Commune-Agent-Time": f"{time.time() - 86400:.3f}"})
    assert status == 400
    # a header that is not a time changes nothing
    assert post(url + "/api/v1/write", encode([series("skew_metric", 2, ts + 1)]), ahead,
                headers={"X-Commune-Agent-Time": "soon"})[0] == 204
    metrics = collector_metrics(url)
    skew_ahead = metric_value(metrics, "commune_agent_clock_skew_seconds", commune="c1", agent="pc-ahead")
    skew_behind = metric_value(metrics, "commune_agent_clock_skew_seconds", commune="c1", agent="pc-behind")
    assert 299 < skew_ahead <= 300 and -86401 < skew_behind <= -86399
    # an unknown token is not measured
    post(url + "/api/v1/write", encode([series("skew_metric", 1, ts)]), "cmt_nope",
         headers={"X-Commune-Agent-Time": "1"})
    assert "pc-nope" not in collector_metrics(url)


# ---------------------------------------------------------------- upstreams: several, down, refusing

def test_forwards_to_prometheus_and_victoriametrics_and_503_while_one_is_down(tmp_path, prom):
    vm_proc, vm = start_victoria_metrics(tmp_path / "vm")
    proc, url, state = start_collector(tmp_path, [prom + "/api/v1/write", vm + "/api/v1/write"])
    try:
        token = add_token(state, "09667", "pc-02")
        wait_until(lambda: http_ok_status(url + "/-/ready") == 200, what="collector ready")
        ts = now_ms()
        assert post(url + "/api/v1/write", encode([series("dual_metric", 42, ts, disk="C:")]), token)[0] == 204
        in_prom = wait_until(lambda: prom_query(prom, "dual_metric"), what="dual_metric in Prometheus")
        in_vm = wait_until(lambda: vm_query(vm, "dual_metric"), what="dual_metric in VictoriaMetrics")
        for res in (in_prom, in_vm):
            assert res[0]["metric"] == {"__name__": "dual_metric", "commune": "09667", "agent": "pc-02", "disk": "C:"}
            assert float(res[0]["value"][1]) == 42

        vm_proc.stop()
        status, text = post(url + "/api/v1/write", encode([series("dual_metric", 43, now_ms(), disk="C:")]), token)
        assert status == 503
        assert text.startswith("upstream unavailable, keep the batch and retry: " + vm.split("//")[1] + ": error ")
        wait_until(lambda: http_ok_status(url + "/-/ready") == 503, what="collector not ready")
        metrics = collector_metrics(url)
        assert metric_value(metrics, "commune_collector_upstream_up", upstream=vm.split("//")[1]) == 0
        assert metric_value(metrics, "commune_collector_upstream_up", upstream=prom.split("//")[1]) == 1
        assert metric_value(metrics, "commune_collector_upstream_errors_total", upstream=vm.split("//")[1]) >= 1
        assert metric_value(metrics, "commune_collector_rejected_requests_total", reason="upstream_unavailable") == 1
        # the agent's last push is the last one every upstream took
        assert metric_value(metrics, "commune_agent_last_push_timestamp_seconds", commune="09667",
                            agent="pc-02") <= ts / 1000 + 5

        vm_proc2, vm2 = restart_victoria_metrics(tmp_path / "vm", vm)
        try:
            wait_until(lambda: http_ok_status(url + "/-/ready") == 200, what="collector ready again")
            assert post(url + "/api/v1/write", encode([series("dual_metric", 44, now_ms(), disk="C:")]), token)[0] == 204
        finally:
            vm_proc2.stop()
    finally:
        proc.stop()
        vm_proc.stop()
    assert "Traceback" not in log_text(proc)


def restart_victoria_metrics(tmp: Path, old_url: str):
    """VictoriaMetrics again on the same port and data directory."""
    from tests.support import need_binary

    port = old_url.rsplit(":", 1)[1]
    proc = Proc([need_binary("victoria-metrics"), f"-storageDataPath={tmp / 'vm-data'}",
                 f"-httpListenAddr=127.0.0.1:{port}", "-search.latencyOffset=0s", "-search.disableCache",
                 "-loggerLevel=WARN"], tmp / "vm2.log")
    proc.wait_http(old_url + "/health")
    return proc, old_url


def http_ok_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def dead_upstream():
    """A remote-write URL on a port held bound but not listening: refused, and no other process
    on the machine can start listening there during the test."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/api/v1/write"
    finally:
        sock.close()


def test_503_when_the_only_upstream_is_down(tmp_path, dead_upstream):
    proc, url, state = start_collector(tmp_path, [dead_upstream])
    try:
        token = add_token(state, "c1", "a1")
        status, text = post(url + "/api/v1/write", encode([series("m", 1, now_ms())]), token)
        assert status == 503 and "keep the batch and retry" in text
        assert http_ok_status(url + "/-/ready") == 503
        assert http_ok_status(url + "/-/healthy") == 200
        metrics = collector_metrics(url)
        assert metric_value(metrics, "commune_collector_upstream_requests_total", code="error") >= 1
        assert metric_value(metrics, "commune_agent_last_push_timestamp_seconds") is None
    finally:
        proc.stop()


def test_upstream_refusing_one_sample_loses_only_that_series(tmp_path):
    prom_proc, prom = start_prometheus(tmp_path / "prom", ooo_window="0s")
    proc, url, state = start_collector(tmp_path, [prom + "/api/v1/write"])
    try:
        token = add_token(state, "c1", "a1")
        ts = now_ms()
        assert post(url + "/api/v1/write", encode([series("ooo_metric", 1, ts)]), token)[0] == 204
        # alone, the refused sample is the whole request: 400, retrying cannot help
        status, text = post(url + "/api/v1/write", encode([series("ooo_metric", 2, ts - 60000)]), token)
        assert status == 400
        assert text.startswith(f"none of the 1 samples can be accepted, retrying cannot help: upstream "
                               f"{prom.split('//')[1]} refused 1 samples: 400 "), text
        assert "out of order" in text
        # Prometheus refuses the whole request for that one sample; the collector isolates it and
        # forwards the 100 others
        batch = [series("ooo_good", i, ts, i=str(i)) for i in range(60)] + [series("ooo_metric", 3, ts - 30000)] + \
                [series("ooo_good", i, ts, i=str(i)) for i in range(60, 100)]
        status, text, headers = post(url + "/api/v1/write", encode(batch), token, full=True)
        assert (status, headers["X-Commune-Dropped-Samples"]) == (200, "1"), text
        assert wait_until(lambda: prom_query(prom, "count(ooo_good)"), what="ooo_good")[0]["value"][1] == "100"
        metrics = collector_metrics(url)
        assert metric_value(metrics, "commune_collector_rejected_requests_total", reason="upstream_rejected") == 1
        assert metric_value(metrics, "commune_collector_samples_dropped_total", reason="upstream_rejected") == 2
        # refused: the lone sample, the batch, then one half of each halving down to one series of 101
        refusals = metric_value(metrics, "commune_collector_upstream_requests_total", upstream=prom.split("//")[1],
                                code="400")
        assert 2 + 6 <= refusals <= 2 + 7, refusals
    finally:
        proc.stop()
        prom_proc.stop()


class _RecordingReceiver:
    """A remote-write receiver on loopback that keeps the path and headers of every request: what a
    multi-tenant store (Mimir, a VictoriaMetrics cluster) would be told."""

    def __init__(self):
        import http.server

        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_tenant_headers_and_paths_reach_each_upstream(tmp_path, monkeypatch):
    a, b = _RecordingReceiver(), _RecordingReceiver()
    monkeypatch.setenv("TENANT_SECRET", "phu-tho-7f3a")
    upstreams = [{"url": a.url + "/api/v1/push", "timeout": "5s", "headers": {"X-Scope-OrgID": "${TENANT_SECRET}"}},
                 {"url": b.url + "/insert/25/prometheus/api/v1/write", "timeout": "5s"}]
    proc, url, state = start_collector(tmp_path, [], extra={"upstreams": upstreams, "upstream_check_interval": "0s"})
    try:
        token = add_token(state, "25", "pc-1")
        assert post(url + "/api/v1/write", encode([series("tenant_metric", 1, now_ms())]), token)[0] == 204
        metrics = collector_metrics(url)
    finally:
        proc.stop()
        a.close()
        b.close()
    [(path_a, headers_a)] = a.seen
    [(path_b, headers_b)] = b.seen
    assert path_a == "/api/v1/push" and headers_a["x-scope-orgid"] == "phu-tho-7f3a"
    assert headers_a["content-encoding"] == "snappy" and headers_a["x-prometheus-remote-write-version"] == "0.1.0"
    assert path_b == "/insert/25/prometheus/api/v1/write" and "x-scope-orgid" not in headers_b
    log = (tmp_path / "collector.log").read_text()
    assert "phu-tho-7f3a" not in log and "phu-tho-7f3a" not in metrics


def test_upstream_headers_are_checked():
    from collector.config import Upstream
    from contract.schema import Secret

    problems = dict(Upstream("http://127.0.0.1:1/w", headers={
        "X-Scope-OrgID": Secret("ok"), "Authorization": Secret("Bearer x"), "bad name": Secret("v"),
        "X-Two": Secret("a\r\nInjected: 1")}).validate())
    assert "headers.X-Scope-OrgID" not in problems
    assert "set by the collector itself" in problems["headers.Authorization"]
    assert "expected an HTTP header name" in problems["headers.bad name"]
    assert "must be one line" in problems["headers.X-Two"]


# ---------------------------------------------------------------- enrollment, http_sd, TLS, basic auth

def post_json(url: str, data) -> Tuple[int, dict]:
    status, text = post(url, json.dumps(data).encode(), headers={"Content-Type": "application/json",
                                                                  "Content-Encoding": "identity"})
    return status, json.loads(text)


def test_enrollment_then_push_and_http_sd_scraped_by_prometheus(tmp_path, dead_upstream):
    from tests.support import agent_command

    state = tmp_path / "collector-state"
    _rec, key = Store(str(state)).add_enroll_key("09667", 3600)
    agent_port = free_port()
    agent = Proc(agent_command() + ["--web.listen-address", f"127.0.0.1:{agent_port}"], tmp_path / "agent.log")
    prom_proc = None
    proc = None
    try:
        agent.wait_http(f"http://127.0.0.1:{agent_port}/metrics")
        # Prometheus discovers the agent through the collector's http_sd; start the collector first
        proc_prom_tmp = tmp_path / "prom"
        proc, url, state = start_collector(tmp_path, [dead_upstream], state_dir=state,
                                           extra={"http_sd": {"labels": {"region": "north"}},
                                                  "upstream_check_interval": "0s"})
        status, reply = post_json(url + "/api/v1/enroll", {"key": key, "agent": "pc-tiepnhan-01",
                                                           "pull_address": f"127.0.0.1:{agent_port}"})
        assert status == 200, reply
        assert reply["commune"] == "09667" and reply["agent"] == "pc-tiepnhan-01"
        assert reply["token"].startswith("cmt_")
        assert Store(str(state)).authenticate(reply["token"]).agent == "pc-tiepnhan-01"
        # one time only; wrong keys and bad requests
        status, refused = post_json(url + "/api/v1/enroll", {"key": key, "agent": "pc-2"})
        assert status == 403 and refused["error"].endswith("of commune 09667 is used up: all 1 uses are spent; "
                                                           "ask the province for a new one (or more uses)"), refused
        assert post_json(url + "/api/v1/enroll", {"key": "cme_nope", "agent": "pc-2"})[0] == 403
        assert post_json(url + "/api/v1/enroll", {"agent": "pc-2"})[0] == 400
        assert post_json(url + "/api/v1/enroll", {"key": key, "agent": "bad name!"}) == (
            400, {"error": "invalid agent 'bad name!': 1-63 letters, digits, '.', '_' or '-', starting with a "
                           "letter or digit"})
        assert post(url + "/api/v1/enroll", b"{not json", headers={"Content-Encoding": "identity"})[0] == 400
        assert post(url + "/api/v1/enroll", b"x" * 10000, headers={"Content-Encoding": "identity"})[0] == 413

        sd = json.loads(http_get(url + "/api/v1/sd"))
        assert sd == [{"targets": [f"127.0.0.1:{agent_port}"],
                       "labels": {"region": "north", "commune": "09667", "agent": "pc-tiepnhan-01",
                                  "__scheme__": "http"}}]
        prom_proc, prom = start_prometheus(proc_prom_tmp, scrape_configs=[{
            "job_name": "agents", "scrape_interval": "1s",
            "http_sd_configs": [{"url": url + "/api/v1/sd", "refresh_interval": "1s"}]}])
        up = wait_until(lambda: prom_query(prom, 'up{job="agents"} == 1'), timeout=60, what="agent scraped via http_sd")
        assert up[0]["metric"]["commune"] == "09667" and up[0]["metric"]["agent"] == "pc-tiepnhan-01"
        assert up[0]["metric"]["region"] == "north"
        assert prom_query(prom, 'commune_agent_build_info{commune="09667",agent="pc-tiepnhan-01"}')
        text = collector_metrics(url)
        assert metric_value(text, "commune_collector_enrollments_total", result="ok") == 1
        assert metric_value(text, "commune_collector_enrollments_total", result="invalid_key") == 2
        assert metric_value(text, "commune_collector_enrollments_total", result="bad_request") == 4
        assert key not in text and reply["token"] not in text
        assert key not in log_text(proc) and reply["token"] not in log_text(proc)
    finally:
        for p in (prom_proc, proc, agent):
            if p is not None:
                p.stop()


def test_tls_and_basic_auth_on_metrics_and_sd(tmp_path, prom):
    import base64

    import bcrypt

    from tests.test_web import make_cert

    crt, key = make_cert(tmp_path)
    hashed = bcrypt.hashpw(b"prom-pass", bcrypt.gensalt(rounds=4)).decode()
    proc, url, state = start_collector(tmp_path, [prom + "/api/v1/write"], tls=(crt, key),
                                       extra={"web": {"basic_auth_users": {"prometheus": hashed}}})
    try:
        ctx = ssl.create_default_context(cafile=str(crt))
        token = add_token(state, "c-tls", "a-tls")
        status, _ = post(url + "/api/v1/write", encode([series("tls_metric", 1, now_ms())]), token, context=ctx)
        assert status == 204
        wait_until(lambda: prom_query(prom, 'tls_metric{commune="c-tls"}'), what="tls_metric")
        with pytest.raises(urllib.error.URLError):  # a client that does not trust the certificate
            urllib.request.urlopen(url + "/-/healthy", timeout=5)

        def get(path, auth=None):
            req = urllib.request.Request(url + path, headers={"Authorization": "Basic " + base64.b64encode(
                auth.encode()).decode()} if auth else {})
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
                    return resp.status, resp.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, ""

        assert get("/metrics")[0] == 401
        assert get("/metrics", "prometheus:wrong")[0] == 401
        assert get("/api/v1/sd")[0] == 401
        status, text = get("/metrics", "prometheus:prom-pass")
        assert status == 200 and "commune_collector_requests_total" in text
        record_exposition(text)
        assert get("/api/v1/sd", "prometheus:prom-pass") == (200, "[]")
        assert get("/-/healthy")[0] == 200  # health needs no auth
    finally:
        proc.stop()


def test_collector_metrics_are_catalogued_and_served(tmp_path, prom):
    """Every collector metric of the catalog (fleet inventory included) shows on /metrics."""
    from contract.catalog import metrics_of

    (tmp_path / "zalo-webhook-token").write_text("t" * 32)
    zalo = {"enabled": True, "access_token_file": str(tmp_path / "zalo-token"),  # the relay's figures
            "webhook_token_file": str(tmp_path / "zalo-webhook-token"), "recipients": {"on-duty": ["1"]}}
    (tmp_path / "profiles").mkdir()  # agent profiles: their problem count per fragment
    (tmp_path / "profiles" / "default.yaml").write_text("host: {interval: 30s}\n")
    proc, url, state = start_collector(tmp_path, [prom + "/api/v1/write"],
                                       extra={"fleet_file": str(FLEET_EXAMPLE), "zalo": zalo,
                                              "profiles": {"dir": str(tmp_path / "profiles")}})
    try:
        token = add_token(state, "c1", "a1")
        assert post(url + "/api/v1/write", encode([series("m", 1, now_ms())]), token,
                    headers={"X-Commune-Agent-Time": f"{time.time():.3f}"})[0] == 204
        # one sample too old: the per-agent drop counter exists from the first drop
        assert post(url + "/api/v1/write", encode([series("m", 1, now_ms()), series("m", 1, 946684800000, x="1")]),
                    token)[0] == 200
        text = collector_metrics(url)
    finally:
        proc.stop()
    served = {name for name in (m.name for m in metrics_of("collector"))
              if metric_value(text, name) is not None}
    assert served == {m.name for m in metrics_of("collector")}
    assert "# HELP commune_agent_last_push_timestamp_seconds When a write request" in text


def test_fleet_inventory_on_metrics_reloaded_when_the_file_changes(tmp_path, prom):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET_EXAMPLE.read_text())
    proc, url, _state = start_collector(tmp_path, [prom + "/api/v1/write"], extra={"fleet_file": str(fleet)})
    try:
        text = collector_metrics(url)
        assert metric_value(text, "commune_device_info", commune="09667", device="pc-motcua-01") == 1
        assert metric_value(text, "commune_office_info", commune="09667") == 1
        assert metric_value(text, "commune_office_info", commune="77777") is None
        fleet.write_text(FLEET_EXAMPLE.read_text().replace('code: "09670"', 'code: "77777"', 1)
                         .replace('commune: "09670"', 'commune: "77777"'))
        wait_until(lambda: metric_value(collector_metrics(url), "commune_office_info", commune="77777") == 1,
                   what="reloaded fleet")
        fleet.write_text("communes: not-a-list\n")  # broken edit: the last good inventory stays
        time.sleep(0.05)
        text = collector_metrics(url)
        assert metric_value(text, "commune_office_info", commune="77777") == 1
    finally:
        proc.stop()
    assert "fleet file" in log_text(proc) and "not reloaded" in log_text(proc)
