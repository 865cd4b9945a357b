"""Fuzzing the write path: thousands of generated bodies, never a crash, never a 5xx.

First :func:`collector.ingest.rewrite` (checks, limits, identity stamping, time range, re-encoding)
against a plain reference model built on :func:`contract.remote_write.decode`: it may only refuse with
RemoteWriteError or LimitError, refuses exactly what the model refuses, and otherwise forwards
what the model says. Then the real aiohttp server on loopback, forwarding to a real Prometheus,
which may only answer 200 (some series left out), 204, 400, 401, 413 or 415.
"""
from __future__ import annotations

import asyncio
import contextlib
import http.client
import itertools
import logging
import math
import random
import struct
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract.remote_write import RemoteWriteError, WriteRequest, compress, decode, encode, serialize
from collector.config import parse_config
from collector.ingest import LimitError, rewrite
from collector.server import Collector
from tests.support import free_port, prom_query, start_prometheus, wait_until

pytestmark = pytest.mark.slow

LIMITS = parse_config("upstreams: [{url: 'http://127.0.0.1:1/api/v1/write'}]\n"
                      "limits: {max_series_per_request: 50, max_samples_per_request: 200, "
                      "max_labels_per_series: 8, max_label_name_length: 24, max_label_value_length: 40}\n",
                      environ={}).limits

# ---------------------------------------------------------------- strategies

# Structured bodies come from a seed drawn by hypothesis and Python's random: one draw per case keeps
# thousands of cases affordable on a small machine, and a failure still reproduces from its seed.
NAMES = ["__name__", "job", "instance", "cpu", "mode", "commune", "agent", "a", "_x", "9bad", "bad-name",
         "", "é", "le", "__meta"]
VALUES = ["node_cpu_seconds_total", "up", "x", "", "9bad", "a:b", "é" * 50, "C:\\", "0"]
STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]


def _text(rnd) -> str:
    chars = []
    for _ in range(rnd.randrange(0, 24)):
        c = rnd.choice([rnd.randrange(32, 127), rnd.randrange(0, 0xD800), rnd.randrange(0xE000, 0x110000)])
        chars.append(chr(c))
    return "".join(chars)  # never a lone surrogate: protobuf strings are UTF-8


def _value(rnd) -> float:
    return rnd.choice([rnd.uniform(-1e12, 1e12), float("nan"), float("inf"), -float("inf"), STALE_NAN, 0.0,
                       rnd.randrange(-2**53, 2**53), 5e-324])


def _timestamp(rnd) -> int:
    now = int(time.time() * 1000)
    return rnd.choice([rnd.randrange(-2**63, 2**63), rnd.randrange(0, 2**42), now + rnd.randrange(-3_600_000, 600_000),
                       now, 0, -1])


def random_request(seed: int) -> bytes:
    """A protobuf WriteRequest built field by field: any names, order, duplicates, values."""
    rnd = random.Random(seed)
    req = WriteRequest()
    for _ in range(rnd.randrange(0, 7)):
        ts = req.timeseries.add()
        for _ in range(rnd.randrange(0, 11)):
            name = rnd.choice(NAMES) if rnd.random() < 0.8 else _text(rnd)
            value = rnd.choice(VALUES) if rnd.random() < 0.6 else _text(rnd)
            ts.labels.add(name=name, value=value)
        for _ in range(rnd.randrange(0, 6)):
            ts.samples.add(value=_value(rnd), timestamp=_timestamp(rnd))
    return req.SerializeToString()


def mutated(seed: int) -> bytes:
    """A valid body with bytes flipped, cut or inserted, before or after compression."""
    rnd = random.Random(seed)
    raw = bytearray(valid_request(seed, compressed=False) if rnd.random() < 0.5 else random_request(seed))
    for _ in range(rnd.randrange(1, 5)):
        if not raw:
            break
        i = rnd.randrange(len(raw))
        op = rnd.choice(["flip", "cut", "insert"])
        if op == "flip":
            raw[i] ^= rnd.randrange(1, 256)
        elif op == "cut":
            del raw[i:]
        else:
            raw[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 9)))
    body = bytearray(compress(bytes(raw)))
    if rnd.random() < 0.5 and body:
        body[rnd.randrange(len(body))] ^= rnd.randrange(1, 256)
    return bytes(body)


def valid_request(seed: int, compressed: bool = True, nonce: str | None = None) -> bytes:
    """Valid remote write: recent samples, good names, and identity labels the agent forged.
    A nonce puts every series of the request in its own label set, so that a seed drawn again a
    millisecond later cannot write a different value at a timestamp already written (Prometheus
    rightly refuses that as a duplicate sample)."""
    rnd = random.Random(seed)
    now = int(time.time() * 1000)
    out = []
    for i in range(rnd.randrange(1, 9)):
        labels = {"__name__": "fuzz_" + "".join(rnd.choice("abcdefghij_") for _ in range(rnd.randrange(1, 12)))}
        for _ in range(rnd.randrange(0, 5)):
            labels[rnd.choice(["cpu", "mode", "device", "target", "x_y"])] = _text(rnd) or "v"
        labels[rnd.choice(["commune", "agent", "job"])] = "forged"
        labels["i"] = str(i)
        if nonce is not None:
            labels["n"] = nonce
        age = rnd.randrange(0, 3_600_000)
        out.append((labels, [(_value(rnd), now - age + k) for k in range(rnd.randrange(1, 4))]))
    return encode(out) if compressed else serialize(out)


seeds = st.integers(0, 2**64 - 1)
bodies = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(compress),
    seeds.map(random_request).map(compress),
    seeds.map(mutated),
    seeds.map(valid_request),
)


# ---------------------------------------------------------------- the pure pipeline

IDENTITY = ("commune", "agent")


def _model_series(raw_series, i: int, limits):
    """One series as (labels, samples), or RemoteWriteError/LimitError if it can never be accepted."""
    from google.protobuf.message import DecodeError

    from contract.remote_write import check_series, message_classes

    pairs = []
    for raw in raw_series.labels:
        lab = message_classes()["Label"]()
        try:
            lab.ParseFromString(raw)
        except DecodeError as exc:
            raise RemoteWriteError(f"bad label: {exc}") from None
        pairs.append((lab.name, lab.value))
    labels = dict(pairs)
    if "__name__" in labels:
        if len([k for k, _ in pairs if k not in IDENTITY]) > limits.max_labels_per_series:
            raise LimitError(400, "labels")
        for name, value in pairs:
            if len(name) > limits.max_label_name_length or len(value) > limits.max_label_value_length:
                raise LimitError(400, "length")
    check_series(pairs, i, None, None, None)
    samples = [(s.value, s.timestamp) for s in raw_series.samples]
    if not samples or [t for _, t in samples] != sorted(t for _, t in samples):
        raise RemoteWriteError("samples")
    return labels, samples


def model(body: bytes, limits, commune: str, agent: str, now_ms: int):
    """The reference: decode to Python series by series, check, filter, stamp;
    (series, total, old, ahead, invalid). A body that cannot be read, or a request over a
    per-request limit, raises; a bad series is left out and its samples counted as invalid."""
    from collector.ingest import parse

    req = parse(body, limits.max_decoded_size)
    if len(req.timeseries) > limits.max_series_per_request:
        raise LimitError(413, "series")
    total = sum(len(ts.samples) for ts in req.timeseries)
    if total > limits.max_samples_per_request:
        raise LimitError(413, "samples")
    lo = now_ms - int(limits.max_sample_age * 1000)
    hi = now_ms + int(limits.max_clock_skew * 1000)
    out, old, ahead, invalid = [], 0, 0, 0
    for i, ts in enumerate(req.timeseries):
        try:
            labels, samples = _model_series(ts, i, limits)
        except (RemoteWriteError, LimitError):
            invalid += len(ts.samples)
            continue
        old += sum(1 for _, t in samples if t < lo)
        ahead += sum(1 for _, t in samples if t > hi)
        kept = [(v, t) for v, t in samples if lo <= t <= hi]
        if kept:
            stamped = {k: v for k, v in labels.items() if k not in IDENTITY}
            stamped.update(commune=commune, agent=agent)
            out.append((stamped, kept))
    return out, total, old, ahead, invalid


def same_values(a, b) -> bool:
    return all((math.isnan(x) and math.isnan(y)) or x == y for (x, _), (y, _) in zip(a, b))


def check_against_model(body: bytes):
    now = int(time.time() * 1000)
    try:
        expected = model(body, LIMITS, "09667", "pc-01", now)
    except (RemoteWriteError, LimitError):
        expected = None
    try:
        got = rewrite(body, LIMITS, "09667", "pc-01", now)
    except (RemoteWriteError, LimitError) as exc:
        assert str(exc)
        assert expected is None, f"refused what the model accepts: {exc}"
        return None
    assert expected is not None, "accepted what the model refuses"
    series, total, old, ahead, invalid = expected
    assert (got.samples, got.too_old, got.in_future, got.invalid) == (total, old, ahead, invalid)
    assert got.forwarded == sum(len(s) for _, s in series)
    forwarded = decode(got.body) if got.body else []
    assert [labels for labels, _ in forwarded] == [labels for labels, _ in series]
    assert [[t for _, t in s] for _, s in forwarded] == [[t for _, t in s] for _, s in series]
    assert all(same_values(a, b) for (_, a), (_, b) in zip(forwarded, series))
    return forwarded


@settings(max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck))
@given(bodies)
def test_rewrite_refuses_exactly_what_the_model_refuses(body):
    check_against_model(body)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(seeds)
def test_valid_requests_always_pass_with_the_token_identity(seed):
    forwarded = check_against_model(valid_request(seed))
    assert forwarded, "a valid request was refused or emptied"
    for labels, _ in forwarded:
        assert labels["commune"] == "09667" and labels["agent"] == "pc-01"


# ---------------------------------------------------------------- the real server

@contextlib.contextmanager
def serve_in_thread(config):
    """The collector's aiohttp application on a loopback port, its loop in a thread."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    collector = Collector(config)
    runner = web.AppRunner(collector.app(), auto_decompress=False, handle_signals=False, access_log=None)
    loop.run_until_complete(runner.setup())
    host, port = config.web.listen_address.rsplit(":", 1)
    loop.run_until_complete(web.TCPSite(runner, host, int(port)).start())
    thread = threading.Thread(target=loop.run_forever, name="collector", daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    prom_proc, prom = start_prometheus(tmp)
    port = free_port()
    config = parse_config(
        f"web: {{listen_address: '127.0.0.1:{port}'}}\n"
        f"upstreams: [{{url: '{prom}/api/v1/write', timeout: 10s}}]\n"
        "upstream_check_interval: 0s\n"
        f"state: {{dir: '{tmp / 'state'}'}}\n"
        "limits: {max_body_size: 2000, max_series_per_request: 50, max_samples_per_request: 200}\n",
        environ={})
    try:
        with serve_in_thread(config) as collector:
            token = collector.store.add_token("09667", "fuzz-agent")[1]
            yield port, token, prom, collector
    finally:
        prom_proc.stop()


class Client:
    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, body: bytes, headers: dict) -> int:
        for attempt in range(2):
            try:
                self.conn.request("POST", "/api/v1/write", body=body, headers=headers)
                resp = self.conn.getresponse()
                resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                return resp.status
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()  # the server closed after a 413; reconnect once
                if attempt:
                    raise
        raise AssertionError("unreachable")


headers_strategy = st.fixed_dictionaries({}, optional={
    "Content-Encoding": st.sampled_from(["snappy", "SNAPPY", "gzip", "identity", ""]),
    "Content-Type": st.sampled_from(["application/x-protobuf", "text/plain", "x"]),
    "X-Prometheus-Remote-Write-Version": st.sampled_from(["0.1.0", "2.0.0", "?"]),
})


def test_server_never_answers_5xx(fuzz_server, caplog):
    port, token, prom, collector = fuzz_server
    client = Client(port)
    seen = {}

    @settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, extra=headers_strategy,
           auth=st.sampled_from(["good", "good", "good", "none", "wrong", "basic", "empty"]))
    def one(body, extra, auth):
        headers = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"}
        headers.update(extra)
        if auth == "good":
            headers["Authorization"] = f"Bearer {token}"
        elif auth == "wrong":
            headers["Authorization"] = "Bearer cmt_" + "A" * 43
        elif auth == "basic":
            headers["Authorization"] = "Basic Zm9vOmJhcg=="
        elif auth == "empty":
            headers["Authorization"] = "Bearer "
        status = client.post(body, headers)
        seen[status] = seen.get(status, 0) + 1
        assert status in (200, 204, 400, 401, 413, 415), status
        if auth != "good":
            assert status == 401

    with caplog.at_level(logging.WARNING, logger="collector"):
        one()
    assert seen.get(204, 0) > 50 and seen.get(400, 0) > 100, seen
    assert not [r for r in caplog.records if "unexpectedly" in r.getMessage()], "the decoder raised a non-RemoteWriteError"
    # the server still serves, and what it accepted is in Prometheus under the token's identity only
    assert client.post(encode([({"__name__": "after_fuzz"}, [(1.0, int(time.time() * 1000))])]),
                       {"Authorization": f"Bearer {token}", "Content-Encoding": "snappy"}) == 204
    wait_until(lambda: prom_query(prom, "after_fuzz"), what="after_fuzz")
    wrong = prom_query(prom, 'count({__name__=~"fuzz_.+", agent!="fuzz-agent"} or '
                             '{__name__=~"fuzz_.+", commune!="09667"})')
    assert wrong == []
    assert prom_query(prom, 'count({__name__=~"fuzz_.+", agent="fuzz-agent", commune="09667"})')


def test_the_stamped_series_cache_is_bounded_and_stays_correct(monkeypatch):
    import collector.ingest as ingest

    monkeypatch.setattr(ingest, "SERIES_CACHE_BYTES", 50 * 400)
    now = int(time.time() * 1000)
    for r in range(8):
        agent = f"a{r % 3}"
        body = encode([({"__name__": f"m{r % 4}_{i}", "x": "y", "agent": "forged"}, [(1.0, now)]) for i in range(30)])
        got = decode(rewrite(body, LIMITS, "c1", agent, now).body)
        assert [labels for labels, _ in got] == [
            {"__name__": f"m{r % 4}_{i}", "x": "y", "agent": agent, "commune": "c1"} for i in range(30)]
        held = sum(ingest.entry_bytes(k, v)
                   for key, cache in ingest._series_checked.items() if key != "limits" for k, v in cache.items())
        held += sum(ingest._ENTRY_OVERHEAD + len(key[0]) + len(key[1]) for key in ingest._series_checked
                    if key != "limits")
        assert held == ingest.cache_bytes() <= 50 * 400


def test_any_valid_body_split_anywhere_with_pauses_is_accepted(fuzz_server):
    """However a weak link cuts a valid request into pieces and pauses between them, the whole
    body is read: 204 (200 when the time range left a sample out), never a 400."""
    from tests.test_collector_body import raw_request

    port, token, _prom, _collector = fuzz_server
    url = f"http://127.0.0.1:{port}"
    calls = itertools.count()

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(seed=seeds, cuts=st.lists(st.integers(1, 4000), max_size=6),
           pause=st.sampled_from([0.0, 0.001, 0.01, 0.03]), chunked=st.booleans())
    def one(seed, cuts, pause, chunked):
        body = valid_request(seed, nonce=str(next(calls)))
        if len(body) > 2000:  # the server's max_body_size here
            return
        status, text = raw_request(url, body, token, cuts, pause, chunked=chunked)
        assert status in (200, 204), (status, text)

    one()


def test_a_request_like_the_agents_last_is_checked_the_same_through_its_template():
    """The second of two requests with the same series takes the remembered labels of the first
    (one comparison): what it forwards, drops and refuses is what the model says, sample checks
    included, and another agent's identical request is stamped with its own identity."""
    import collector.ingest as ingest

    now = int(time.time() * 1000)
    labels = [{"__name__": f"tpl_{i}", "x": str(i)} for i in range(6)]
    first = encode([(lab, [(1.0, now - 2000), (2.0, now - 1000)]) for lab in labels])
    again = encode([(lab, [(3.0, now - 500)]) for lab in labels])
    check_against_model(first)
    assert ingest._series_checked[("09667", "pc-01")][None][0]  # remembered
    assert check_against_model(again)  # through the template
    # same labels, samples out of order in one series and too old in another: checked all the same
    req = WriteRequest()
    for i, lab in enumerate(labels):
        ts = req.timeseries.add()
        for name in sorted(lab):
            ts.labels.add(name=name, value=lab[name])
        stamps = [now - 1000, now - 2000] if i == 1 else [now - 10 * 86400 * 1000] if i == 2 else [now]
        for t in stamps:
            ts.samples.add(value=1.0, timestamp=t)
    body = compress(req.SerializeToString())
    got = rewrite(body, LIMITS, "09667", "pc-01", now)
    assert (got.invalid, got.too_old, len(got.parts)) == (2, 1, 4)
    assert "samples are not in time order" in got.errors[0]
    check_against_model(body)
    other = decode(rewrite(again, LIMITS, "09667", "pc-02", now).body)
    assert {lab["agent"] for lab, _ in other} == {"pc-02"}
