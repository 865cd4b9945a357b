"""The collector reads whole bodies however they arrive, and answers what is its own fault as
retryable: bodies in pieces, a body that stalls (408, never 400), a cut body, an unreadable token
store (503 and /-/ready failing), basic auth that junk cannot slow or evict."""
from __future__ import annotations

import random
import socket
import time
import urllib.request

import pytest

from contract.basic_auth import BasicAuth
from contract.remote_write import HEADERS, WriteRequest, compress, encode
from tests.support import wait_until
from tests.test_collector_ingest import add_token, http_ok_status, now_ms, post, series, start_collector

pytestmark = pytest.mark.slow


def raw_request(url: str, body: bytes, token: str, pieces, pause: float, chunked: bool = False,
                stop_after: int = 0, timeout: float = 30.0) -> tuple:
    """POST ``body`` over a plain socket, split at ``pieces`` (offsets) with ``pause`` between;
    with ``stop_after``, send only that many pieces and then wait for the answer. (status, text)."""
    host, port = url.split("//")[1].split(":")
    head = [f"POST /api/v1/write HTTP/1.1", f"Host: {host}:{port}", f"Authorization: Bearer {token}",
            *(f"{k}: {v}" for k, v in HEADERS.items())]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}")
    cuts = [0, *sorted(set(p for p in pieces if 0 < p < len(body))), len(body)]
    parts = [body[a:b] for a, b in zip(cuts, cuts[1:])]
    if chunked:
        parts = [b"%x\r\n%s\r\n" % (len(p), p) for p in parts] + [b"0\r\n\r\n"]
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        for i, part in enumerate(parts):
            if stop_after and i >= stop_after:
                break
            time.sleep(pause)
            sock.sendall(part)
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    status_line, _, rest = answer.decode("latin-1").partition("\r\n")
    return int(status_line.split()[1]), rest.split("\r\n\r\n", 1)[-1]


@pytest.fixture
def collector(tmp_path):
    from tests.support import start_prometheus

    prom_proc, prom = start_prometheus(tmp_path / "prom")
    proc, url, state = start_collector(tmp_path, [prom + "/api/v1/write"], extra={"limits": {"body_timeout": "1s"}})
    try:
        yield url, state, prom, proc
    finally:
        proc.stop()
        prom_proc.stop()


def body_of(n: int, name: str = "pieces_metric") -> bytes:
    ts = now_ms()
    rnd = random.Random(n)  # values that do not compress away: the body's size is what is sent
    return encode([series(name, float(i), ts, i=str(i), pad="%040x" % rnd.getrandbits(160)) for i in range(n)])


def test_a_body_arriving_in_two_halves_is_read_whole(collector):
    url, state, _prom, _proc = collector
    token = add_token(state, "c1", "a1")
    body = body_of(12)
    assert 600 < len(body) < 2000
    assert raw_request(url, body, token, [len(body) // 2], pause=0.05)[0] == 204
    assert raw_request(url, body, token, [len(body) // 2], pause=0.05, chunked=True)[0] == 204


def test_a_large_body_in_small_pieces_is_read_whole(collector):
    url, state, _prom, _proc = collector
    token = add_token(state, "c1", "a1")
    body = body_of(2000)
    assert len(body) > 20_000
    assert raw_request(url, body, token, range(1400, len(body), 1400), pause=0.002)[0] == 204


def test_a_body_that_stops_arriving_is_408_never_400(collector):
    url, state, _prom, proc = collector
    token = add_token(state, "c1", "a1")
    body = body_of(50)
    status, text = raw_request(url, body, token, [len(body) // 3], pause=0.0, stop_after=1)
    assert status == 408, text
    assert "did not arrive whole within limits.body_timeout (1s)" in text
    metrics = urllib.request.urlopen(url + "/metrics").read().decode()
    assert 'commune_collector_rejected_requests_total{reason="body_timeout"} 1' in metrics
    assert 'commune_collector_rejected_requests_total{reason="malformed"} 0' in metrics


def test_an_unreadable_token_store_answers_503_and_ready_fails(collector):
    url, state, _prom, proc = collector
    token = add_token(state, "c1", "a1")
    wait_until(lambda: http_ok_status(url + "/-/ready") == 200, what="ready")
    tokens = state / "tokens.json"
    good = tokens.read_bytes()
    tokens.write_text("{ this is not json")
    status, text = post(url + "/api/v1/write", body_of(3), token)
    assert status == 503 and "cannot read its token store" in text
    assert http_ok_status(url + "/-/ready") == 503
    tokens.write_bytes(good)
    assert post(url + "/api/v1/write", body_of(3), token)[0] == 204
    assert http_ok_status(url + "/-/ready") == 200
    assert "Traceback" not in proc.log()


# ---------------------------------------------------------------- memory: what is cached

def test_names_over_a_limit_are_never_remembered():
    import collector.ingest as ingest
    from collector.config import parse_config

    limits = parse_config("upstreams: [{url: 'http://127.0.0.1:1/api/v1/write'}]\n", environ={}).limits
    ts = now_ms()
    ingest.rewrite(encode([series("known", 1.0, ts)]), limits, "c1", "a1", ts)  # the identity is known
    before = (len(ingest._valid_metric), len(ingest._valid_label), ingest.cache_bytes())
    for i in range(20):
        huge = "m" * 100_000 + str(i)
        req = WriteRequest()  # the agent itself would never encode this
        one = req.timeseries.add()
        one.labels.add(name="__name__", value=huge)
        one.labels.add(name="x" * 50_000 + str(i), value="v")
        one.samples.add(value=1.0, timestamp=ts)
        got = ingest.rewrite(compress(req.SerializeToString()), limits, "c1", "a1", ts)
        assert got.invalid == 1 and not got.parts
    assert (len(ingest._valid_metric), len(ingest._valid_label), ingest.cache_bytes()) == before


def test_junk_passwords_never_evict_the_scraper():
    import bcrypt

    auth = BasicAuth({"prom": bcrypt.hashpw(b"right", bcrypt.gensalt(4)).decode()})
    import base64

    good = "Basic " + base64.b64encode(b"prom:right").decode()
    assert auth.cached(good) is None and auth.check(good) is True and auth.cached(good) is True
    for i in range(200):
        junk = "Basic " + base64.b64encode(f"prom:wrong{i}".encode()).decode()
        assert auth.check(junk) is False
    assert auth.cached(good) is True  # still answered from memory: no bcrypt for the real scraper
    assert auth.cached("Basic " + base64.b64encode(b"nobody:x").decode()) is False  # no bcrypt needed
    assert auth.cached("Bearer x") is False and auth.cached(None) is False
