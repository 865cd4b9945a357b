"""The shipper against a local recording HTTP(S) server (status codes, retries, headers, TLS,
pins, tokens) and against real Prometheus and VictoriaMetrics."""
from __future__ import annotations

import asyncio
import hashlib
import http.server
import logging
import ssl
import subprocess
import threading
import time
from email.utils import formatdate
from typing import List, Optional

import pytest

from contract import remote_write
from agent.queue import Entry, Queue
from agent.shipper import Backoff, HttpClient, Shipper, TokenSource, retry_after_seconds
from tests.support import free_port, prom_query, start_victoria_metrics, wait_until


# ---------------------------------------------------------------- a recording server

class Recorder:
    """A real HTTP server on loopback answering from a script; records every request."""

    def __init__(self, tls: Optional[ssl.SSLContext] = None):
        self.requests: List[dict] = []
        self.script: List[tuple] = []  # (status, headers) answered in turn; then 204
        self.refuse = None  # or a function of the decoded body: True answers 400
        self.hang = threading.Event()
        self.release = threading.Event()
        self.connections = set()
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                rec.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                     "conn": id(self.connection)})
                if rec.hang.is_set():
                    rec.release.wait(30)
                status, headers = rec.script.pop(0) if rec.script else (204, {})
                if rec.refuse is not None and rec.refuse(remote_write.decode(body)):
                    status, headers = 400, {}
                text = b"" if status == 204 else f"answer {status}\n".encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *args: None  # a client that hung up on purpose: no noise
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{'https' if isinstance(self.server.socket, ssl.SSLSocket) else 'http'}://127.0.0.1:{self.port}/api/v1/write"

    def decoded(self, i: int) -> list:
        return remote_write.decode(self.requests[i]["body"])

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder():
    rec = Recorder()
    yield rec
    rec.stop()


def fill(q: Queue, *timestamps: int, n: int = 3, name: str = "x") -> None:
    for ts in timestamps:
        series = [({"__name__": name, "i": str(i)}, [(float(i), ts)]) for i in range(n)]
        q.append([Entry(ts, n, remote_write.encode(series))])


def make(tmp_path, url, **kw) -> Shipper:
    q = Queue(tmp_path / "q.db")
    tokens = kw.pop("tokens", TokenSource())
    kw.setdefault("require_token", False)
    client = HttpClient(url, timeout=kw.pop("timeout", 5), ca_file=kw.pop("ca_file", ""),
                        pin_sha256=kw.pop("pin_sha256", ""))
    return Shipper(q, client, tokens, rand=lambda: 0.5, **kw)


def timestamps_sent(rec: Recorder, i: int) -> list:
    return sorted({t for _, s in rec.decoded(i) for _, t in s})


# ---------------------------------------------------------------- status codes

def test_sends_remote_write_headers_token_and_a_decodable_body(tmp_path, recorder):
    sh = make(tmp_path, recorder.url, tokens=TokenSource("s3cret-token"))
    fill(sh.queue, 1000, 2000)
    assert sh.ship_once() == 0.0
    req = recorder.requests[0]
    h = req["headers"]
    assert req["path"] == "/api/v1/write"
    assert h["Content-Encoding"] == "snappy" and h["Content-Type"] == "application/x-protobuf"
    assert h["X-Prometheus-Remote-Write-Version"] == "0.1.0"
    assert h["Authorization"] == "Bearer s3cret-token"
    assert h["User-Agent"].startswith("commune-agent/")
    got = recorder.decoded(0)
    assert [(l["__name__"], l["i"], s) for l, s in got] == \
        [("x", str(i), [(float(i), t)]) for t in (1000, 2000) for i in range(3)]
    assert sh.queue.stats().batches == 0 and sh.sent_batches == 2 and sh.sent_samples == 6
    assert sh.ship_once() is None  # empty


def test_retries_500_and_429_with_backoff_honouring_retry_after(tmp_path, recorder):
    sh = make(tmp_path, recorder.url, min_backoff=1.0, max_backoff=8.0)
    fill(sh.queue, 1000)
    recorder.script = [(500, {}), (503, {}), (429, {"Retry-After": "7"}), (502, {}), (502, {}), (502, {}),
                       (429, {"Retry-After": formatdate(time.time() + 20, usegmt=True)})]
    delays = [sh.ship_once() for _ in range(7)]
    # rand() is 0.5: three quarters of min(max, min * 2**attempt)
    assert delays[:2] == [0.75, 1.5]
    assert delays[2] == 7.0
    assert delays[3:6] == [6.0, 6.0, 6.0]  # doubled to the 8s ceiling
    assert 17 <= delays[6] <= 20
    assert sh.failed["server_error"] == 5 and sh.failed["throttled"] == 2
    assert sh.queue.stats().batches == 1  # kept through every failure
    assert sh.ship_once() == 0.0
    assert len(recorder.requests) == 8
    assert all(r["body"] == recorder.requests[0]["body"] for r in recorder.requests)
    assert sh.queue.stats().batches == 0
    assert sh.backoff.attempt == 0


@pytest.mark.parametrize("status", [400, 413, 422])
def test_a_refused_batch_alone_is_dropped_counted_and_never_retried(tmp_path, recorder, status, caplog):
    sh = make(tmp_path, recorder.url)
    fill(sh.queue, 1000, n=4)
    recorder.script = [(status, {})]
    assert sh.ship_once() == 0.0
    assert len(recorder.requests) == 1
    assert sh.queue.stats().batches == 0
    assert sh.queue.dropped["rejected"] == 4 and sh.failed["rejected"] == 1
    assert f"HTTP {status} answer {status}" in caplog.text and "dropped 4 samples (1 batch)" in caplog.text
    assert sh.ship_once() is None and len(recorder.requests) == 1


def test_a_refused_request_is_split_until_only_the_bad_batch_is_dropped(tmp_path, recorder):
    sh = make(tmp_path, recorder.url, max_samples=1000)
    fill(sh.queue, *[t * 1000 for t in range(1, 13)], n=3)   # 12 good batches
    fill(sh.queue, 13_000, n=3, name="poison")                # the 13th is refused wherever it goes
    fill(sh.queue, *[t * 1000 for t in range(14, 21)], n=3)   # 7 more good ones
    recorder.refuse = lambda series: any(labels["__name__"] == "poison" for labels, _ in series)
    for _ in range(40):
        if sh.ship_once() is None:
            break
    assert sh.queue.stats().batches == 0
    assert sh.queue.dropped["rejected"] == 3  # the poison batch, nothing else
    delivered = sorted(t for i, r in enumerate(recorder.requests) if not recorder.refuse(recorder.decoded(i))
                       for t in timestamps_sent(recorder, i))
    assert delivered == [t * 1000 for t in range(1, 21) if t != 13]
    assert sh.sent_samples == 57 and sh.failed["rejected"] >= 2
    assert len(recorder.requests) <= 2 * 5 + 4  # halvings of 20 batches, then growing back


def test_200_with_samples_left_out_counts_them_and_keeps_nothing(tmp_path, recorder, caplog):
    sh = make(tmp_path, recorder.url)
    fill(sh.queue, 1000, n=5)
    recorder.script = [(200, {"X-Commune-Dropped-Samples": "2"})]
    assert sh.ship_once() == 0.0
    assert sh.queue.stats().batches == 0
    assert sh.queue.dropped["rejected"] == 2 and sh.sent_samples == 3
    assert "left out 2 samples" in caplog.text


@pytest.mark.parametrize("status,reason", [(401, "unauthorized"), (403, "unauthorized"), (404, "misconfigured"),
                                           (301, "misconfigured"), (307, "misconfigured"), (405, "misconfigured"),
                                           (415, "misconfigured")])
def test_credential_and_address_problems_keep_the_data_and_retry_slowly(tmp_path, recorder, status, reason, caplog):
    caplog.set_level(logging.INFO, logger="agent.shipper")
    sh = make(tmp_path, recorder.url, min_backoff=1.0, max_backoff=30.0)
    fill(sh.queue, 1000, n=4)
    recorder.script = [(status, {"Location": "http://127.0.0.1:1/elsewhere"})] * 5
    assert [sh.ship_once() for _ in range(5)] == [30.0] * 5
    assert sh.queue.stats().batches == 1 and sh.queue.dropped["rejected"] == 0
    assert sh.failed[reason] == 5
    assert caplog.text.count(f"HTTP {status}") == 1  # logged once, not every retry
    assert sh.ship_once() == 0.0  # fixed: delivered
    assert sh.queue.stats().batches == 0 and "works again" in caplog.text


def test_without_a_token_nothing_is_pushed_and_the_data_is_kept(tmp_path, recorder, caplog):
    token_file = tmp_path / "push.token"
    sh = make(tmp_path, recorder.url, tokens=TokenSource("", str(token_file)), require_token=True, max_backoff=20.0)
    assert sh.ship_once() is None  # empty queue: nothing to say
    fill(sh.queue, 1000)
    assert sh.ship_once() == 20.0 and sh.ship_once() == 20.0
    assert recorder.requests == [] and sh.queue.stats().batches == 1
    assert caplog.text.count("no token yet") == 1
    token_file.write_text("tok-1\n")
    assert sh.ship_once() == 0.0
    assert recorder.requests[0]["headers"]["Authorization"] == "Bearer tok-1"


def test_408_is_retried_and_retry_after_never_waits_less_than_min_backoff(tmp_path, recorder):
    sh = make(tmp_path, recorder.url, min_backoff=2.0, max_backoff=8.0)
    fill(sh.queue, 1000)
    past = formatdate(time.time() - 86400, usegmt=True)
    recorder.script = [(408, {}), (429, {"Retry-After": "0"}), (503, {"Retry-After": past})]
    delays = [sh.ship_once() for _ in range(3)]
    assert delays[0] == 1.5  # the backoff (rand() 0.5: three quarters of 2s)
    assert delays[1] >= 2.0 and delays[2] >= 2.0, delays  # "0" and a past date: never a spin
    assert sh.failed["timeout"] == 1 and sh.failed["throttled"] == 1 and sh.failed["server_error"] == 1
    assert sh.queue.stats().batches == 1


def test_a_wall_clock_set_back_a_day_waits_no_longer_than_the_batch_delay(tmp_path, recorder):
    mono = [1000.0]
    wall = [2_000_000_000.0]
    sh = make(tmp_path, recorder.url, batch_delay=120.0, clock=lambda: wall[0], monotonic=lambda: mono[0])
    fill(sh.queue, int(wall[0] * 1000), n=2)
    wall[0] -= 86400  # the PC's clock is set back a day
    assert 0 < sh.ship_once() <= 120.0 and sh.wake_on_data
    mono[0] += 60
    assert 0 < sh.ship_once() <= 60.0
    mono[0] += 61
    assert sh.ship_once() == 0.0 and len(recorder.requests) == 1
    wall[0] += 3 * 86400  # and forward three days: a send at once, no wait of days either way
    fill(sh.queue, int(wall[0] * 1000) - 200_000, n=2)
    assert sh.ship_once() == 0.0


def test_a_failed_acknowledgement_never_resends_the_same_batches(tmp_path, recorder, monkeypatch):
    sh = make(tmp_path, recorder.url, max_samples=3)
    fill(sh.queue, 1000, 2000, 3000)
    real_remove = sh.queue._remove
    full = [True]
    monkeypatch.setattr(sh.queue, "_remove", lambda ids, reason: False if full[0] else real_remove(ids, reason))
    while sh.ship_once() == 0.0:
        pass
    sent = [timestamps_sent(recorder, i) for i in range(len(recorder.requests))]
    assert sorted(t for ts in sent for t in ts) == [1000, 2000, 3000]  # each once, none again
    assert sh.queue.stats().batches == 3  # not deleted yet: the disk is full
    full[0] = False
    fill(sh.queue, 4000)
    assert sh.ship_once() == 0.0
    assert timestamps_sent(recorder, len(recorder.requests) - 1) == [4000]
    assert sh.queue.stats().batches == 0  # the deletes went through once there was room


def test_network_errors_keep_the_batches(tmp_path):
    sh = make(tmp_path, f"http://127.0.0.1:{free_port()}/api/v1/write", min_backoff=2, max_backoff=4)
    fill(sh.queue, 1000)
    assert sh.ship_once() == 1.5
    assert sh.ship_once() == 3.0
    assert sh.failed["network"] == 2 and sh.queue.stats().batches == 1


def test_requests_are_bounded_and_alternate_newest_and_oldest(tmp_path, recorder):
    sh = make(tmp_path, recorder.url, max_samples=6)
    fill(sh.queue, *[t * 1000 for t in range(1, 11)], n=3)  # 10 batches of 3 samples
    while sh.ship_once() == 0.0:
        pass
    sent = [timestamps_sent(recorder, i) for i in range(len(recorder.requests))]
    assert sent == [[9000, 10000], [1000, 2000], [7000, 8000], [3000, 4000], [5000, 6000]]
    assert all(sum(len(s) for _, s in recorder.decoded(i)) <= 6 for i in range(5))
    assert len({r["conn"] for r in recorder.requests}) == 1  # one kept-alive connection


def test_fresh_data_is_not_stuck_behind_a_backlog(tmp_path, recorder):
    sh = make(tmp_path, recorder.url, max_samples=3)
    fill(sh.queue, *[t * 1000 for t in range(1, 101)])  # a backlog of 100 requests
    for _ in range(3):
        assert sh.ship_once() == 0.0
    fill(sh.queue, 500_000)  # a fresh collection
    for _ in range(2):
        assert sh.ship_once() == 0.0
    assert 500_000 in [t for i in range(len(recorder.requests)) for t in timestamps_sent(recorder, i)]


def test_token_file_is_read_and_re_read_when_it_changes(tmp_path, recorder):
    token_file = tmp_path / "push.token"
    sh = make(tmp_path, recorder.url, tokens=TokenSource("", str(token_file)))
    fill(sh.queue, 1000, 2000, n=1)
    sh.max_samples = 1
    sh.ship_once()
    assert "Authorization" not in recorder.requests[0]["headers"]
    token_file.write_text("tok-1\n")
    sh.ship_once()
    assert recorder.requests[1]["headers"]["Authorization"] == "Bearer tok-1"


def test_retry_after_forms():
    assert retry_after_seconds("120", 0) == 120
    assert retry_after_seconds(None, 0) is None
    assert retry_after_seconds("soon", 0) is None
    now = time.time()
    assert 29 <= retry_after_seconds(formatdate(now + 30, usegmt=True), now) <= 30
    assert retry_after_seconds(formatdate(now - 30, usegmt=True), now) == 0


def test_backoff_grows_with_jitter_and_resets():
    b = Backoff(1, 10, rand=iter([0.0, 1.0, 0.0, 1.0, 0.0, 0.3]).__next__)
    assert [b.next() for _ in range(5)] == [0.5, 2.0, 2.0, 8.0, 5.0]
    b.reset()
    assert b.next() == pytest.approx(0.65)


# ---------------------------------------------------------------- the asyncio loop

def test_run_loop_ships_and_stops_promptly_while_a_request_hangs(tmp_path, recorder):
    sh = make(tmp_path, recorder.url)
    fill(sh.queue, 1000)

    async def scenario():
        stop, appended = asyncio.Event(), asyncio.Event()
        task = asyncio.ensure_future(sh.run(stop, appended))
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: wait_until(lambda: sh.queue.stats().batches == 0, 10, what="first send"))
        recorder.hang.set()
        fill(sh.queue, 2000)
        appended.set()
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: wait_until(lambda: len(recorder.requests) == 2, 10, what="second request"))
        t0 = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, 5)
        return time.monotonic() - t0

    asyncio.run(scenario())
    assert sh.queue.stats().batches == 1  # the cut request was not acknowledged: still queued


# ---------------------------------------------------------------- TLS, CA file and pins

@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=collector.test", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=other", "-keyout", str(d / "other-key.pem"), "-out", str(d / "other.pem")],
                   check=True, capture_output=True)
    der = ssl.PEM_cert_to_DER_cert((d / "cert.pem").read_text())
    return d, hashlib.sha256(der).hexdigest()


@pytest.fixture
def tls_recorder(certs):
    d, _ = certs
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    rec = Recorder(tls=ctx)
    yield rec
    rec.stop()


def test_https_with_ca_file(tmp_path, certs, tls_recorder):
    d, _ = certs
    sh = make(tmp_path, tls_recorder.url, ca_file=str(d / "cert.pem"))
    fill(sh.queue, 1000)
    assert sh.ship_once() == 0.0 and len(tls_recorder.requests) == 1


def test_https_with_the_wrong_ca_fails_and_keeps_the_batches(tmp_path, certs, tls_recorder, caplog):
    d, _ = certs
    sh = make(tmp_path, tls_recorder.url, ca_file=str(d / "other.pem"))
    fill(sh.queue, 1000)
    assert sh.ship_once() > 0
    assert sh.failed["network"] == 1 and not tls_recorder.requests
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


def test_https_with_a_pin_alone_accepts_the_self_signed_collector(tmp_path, certs, tls_recorder):
    _, pin = certs
    colons = ":".join(pin[i:i + 2] for i in range(0, 64, 2)).upper()
    sh = make(tmp_path, tls_recorder.url, pin_sha256=colons)
    fill(sh.queue, 1000)
    assert sh.ship_once() == 0.0 and len(tls_recorder.requests) == 1


def test_https_with_a_wrong_pin_sends_nothing(tmp_path, certs, tls_recorder, caplog):
    d, pin = certs
    sh = make(tmp_path, tls_recorder.url, ca_file=str(d / "cert.pem"), pin_sha256="0" * 64)
    fill(sh.queue, 1000)
    assert sh.ship_once() > 0
    assert not tls_recorder.requests and sh.failed["network"] == 1
    assert "does not match pin_sha256" in caplog.text
    assert sh.queue.stats().batches == 1


# ---------------------------------------------------------------- real receivers

def test_real_prometheus_receives_every_sample(tmp_path, prometheus):
    _, url = prometheus
    sh = make(tmp_path, url + "/api/v1/write", max_samples=50)
    now = int(time.time()) * 1000
    stamps = [now - 3600_000 + i * 60_000 for i in range(60)]  # an hour of backlog, a minute apart
    fill(sh.queue, *stamps, n=3, name="commune_test_pushed")
    while sh.ship_once() == 0.0:
        pass
    assert sh.queue.stats().batches == 0 and sh.sent_samples == 180 and not any(sh.failed.values())
    res = prom_query(url, 'count_over_time(commune_test_pushed{i="2"}[2h])', time_s=now / 1000 + 1)
    assert res and res[0]["value"][1] == "60"


def test_real_prometheus_answers_400_for_an_invalid_body_and_the_batch_is_dropped(tmp_path, prometheus):
    _, url = prometheus
    sh = make(tmp_path, url + "/api/v1/write")
    sh.queue.append([Entry(1000, 1, remote_write.compress(b"\x0a\x05garbage"))])
    assert sh.ship_once() == 0.0
    assert sh.failed["rejected"] == 1 and sh.queue.dropped["rejected"] == 1


def test_real_victoria_metrics_receives_every_sample(tmp_path):
    proc, url = start_victoria_metrics(tmp_path)
    try:
        sh = make(tmp_path, url + "/api/v1/write", max_samples=50)
        now = int(time.time()) * 1000
        stamps = [now - 3600_000 + i * 60_000 for i in range(60)]
        fill(sh.queue, *stamps, n=3, name="commune_test_pushed")
        while sh.ship_once() == 0.0:
            pass
        assert sh.queue.stats().batches == 0 and not any(sh.failed.values())

        def count():
            res = prom_query(url, 'count_over_time(commune_test_pushed{i="2"}[2h])', time_s=now / 1000 + 1)
            return res and res[0]["value"][1] == "60"

        wait_until(count, 30, what="VictoriaMetrics to show all 60 samples")
    finally:
        proc.stop()


def test_a_queued_payload_that_is_not_snappy_is_dropped_as_corrupt(tmp_path, recorder, caplog):
    sh = make(tmp_path, recorder.url)
    sh.queue.append([Entry(int(time.time() * 1000), 5, b"\xff\xff\xff\xff\xff\xff not snappy")])
    fill(sh.queue, int(time.time() * 1000))
    assert sh.ship_once() == 0.0
    assert sh.queue.dropped["corrupt"] == 5 and "cannot be read" in caplog.text
    while sh.ship_once() == 0.0:
        pass
    assert len(recorder.requests) == 1 and sh.sent_samples == 3


@pytest.mark.parametrize("given,path", [
    ("https://collector.example:9722", "/api/v1/enroll"),
    ("https://collector.example:9722/", "/api/v1/enroll"),
    ("https://collector.example/monitor", "/monitor/api/v1/enroll"),
    ("https://collector.example:9722/api/v1/write", "/api/v1/enroll"),
])
def test_enroll_url_from_what_the_operator_typed(given, path):
    from agent.enroll import _enroll_path

    assert _enroll_path(HttpClient(given)) == path


def test_fresh_samples_wait_for_the_batch_delay_a_backlog_does_not(tmp_path, recorder):
    now = [1_000_000.0]
    sh = make(tmp_path, recorder.url, batch_delay=120.0, max_samples=10, clock=lambda: now[0])
    fill(sh.queue, int(now[0] * 1000), n=3)  # one fresh collection of 3 samples
    now[0] += 30
    assert sh.ship_once() == pytest.approx(90.0)  # waits until the oldest unsent sample is 2 minutes old
    assert not recorder.requests
    fill(sh.queue, int(now[0] * 1000), n=3)
    now[0] += 90
    assert sh.ship_once() == 0.0  # due: both collections in one request
    assert timestamps_sent(recorder, 0) == [1_000_000_000, 1_000_030_000]
    # a full request goes at once, however fresh
    fill(sh.queue, *(int(now[0] * 1000) + i for i in range(4)), n=3)
    assert sh.ship_once() == 0.0 and len(recorder.requests) == 2
    # so does a backlog older than the delay (after an outage)
    fill(sh.queue, int((now[0] - 3600) * 1000), n=3)
    assert sh.ship_once() == 0.0 and len(recorder.requests) == 3
