"""Remote-write codec: wire format by hand, the .proto against the runtime descriptor, and a
table of invalid bodies each with its exact complaint."""
from __future__ import annotations

import math
import re
import struct
from pathlib import Path

import cramjam
import pytest
from hypothesis import given, settings, strategies as st

from contract import remote_write as rw
from contract.remote_write import RemoteWriteError, WriteRequest, decode, encode


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def _ld(field: int, payload: bytes) -> bytes:
    return bytes([field << 3 | 2]) + _varint(len(payload)) + payload


def test_wire_format_matches_hand_assembled_bytes():
    label = _ld(1, b"__name__") + _ld(2, b"up")
    smp = bytes([1 << 3 | 1]) + struct.pack("<d", 1.5) + bytes([2 << 3 | 0]) + _varint(1_700_000_000_123)
    expected = _ld(1, _ld(1, label) + _ld(2, smp))
    assert rw.serialize([({"__name__": "up"}, [(1.5, 1_700_000_000_123)])]) == expected
    body = encode([({"__name__": "up"}, [(1.5, 1_700_000_000_123)])])
    assert bytes(cramjam.snappy.decompress_raw(body)) == expected


def test_headers_are_remote_write_1_0():
    assert rw.HEADERS == {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                          "X-Prometheus-Remote-Write-Version": "0.1.0"}


def _parse_proto(text: str) -> dict:
    text = re.sub(r"//[^\n]*", "", text)
    out = {}
    for name, body in re.findall(r"message\s+(\w+)\s*\{([^}]*)\}", text):
        out[name] = sorted((rep.strip(), *rest) for rep, *rest in
                           re.findall(r"(repeated\s+)?(\w+)\s+(\w+)\s*=\s*(\d+)\s*;", body))
    return out, re.search(r"package\s+([\w.]+)\s*;", text).group(1)


def test_proto_file_and_runtime_descriptor_agree():
    messages, package = _parse_proto(Path(rw.PROTO_FILE).read_text())
    assert package == rw.PACKAGE
    scalar = {"double": "TYPE_DOUBLE", "int64": "TYPE_INT64", "string": "TYPE_STRING"}
    from google.protobuf.descriptor import FieldDescriptor as FD
    names = {v: k for k, v in vars(FD).items() if k.startswith("TYPE_")}
    runtime = {}
    for msg_name, _ in rw.MESSAGES:
        desc = rw.message_classes()[msg_name].DESCRIPTOR
        assert desc.full_name == f"{rw.PACKAGE}.{msg_name}"
        fields = []
        for f in desc.fields:
            is_rep = f.is_repeated if hasattr(f, "is_repeated") else f.label == FD.LABEL_REPEATED
            repeated = "repeated" if is_rep else ""
            tname = f.message_type.name if f.message_type else [k for k, v in scalar.items()
                                                                 if v == names[f.type]][0]
            fields.append((repeated, tname, f.name, str(f.number)))
        runtime[msg_name] = sorted(fields)
    assert runtime == messages


def test_round_trip_keeps_labels_values_and_order():
    series = [
        ({"__name__": "node_load1", "cpu": "0"}, [(0.5, 1000), (0.75, 2000)]),
        ({"job": "x", "__name__": "up"}, [(float("-inf"), 3000)]),
        ({"__name__": "commune:score", "device": "pc-01"}, [(1e300, -5)]),
    ]
    got = decode(encode(series))
    assert got == [
        ({"__name__": "node_load1", "cpu": "0"}, [(0.5, 1000), (0.75, 2000)]),
        ({"__name__": "up", "job": "x"}, [(float("-inf"), 3000)]),
        ({"__name__": "commune:score", "device": "pc-01"}, [(1e300, -5)]),
    ]


def test_nan_and_staleness_marker_survive():
    stale = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
    (labels, samples), = decode(encode([({"__name__": "x"}, [(float("nan"), 1), (stale, 2)])]))
    assert math.isnan(samples[0][0])
    assert struct.pack("<d", samples[1][0]) == struct.pack("<Q", 0x7FF0000000000002)


def test_empty_label_values_are_left_out_when_encoding():
    assert decode(encode([({"__name__": "x", "a": "", "b": "1"}, [(1, 1)])])) == \
        [({"__name__": "x", "b": "1"}, [(1.0, 1)])]


def test_concatenated_requests_are_one_request():
    a = rw.serialize([({"__name__": "a"}, [(1, 1)])])
    b = rw.serialize([({"__name__": "b"}, [(2, 2)])])
    assert [s[0]["__name__"] for s in decode(rw.compress(a + b))] == ["a", "b"]


def test_empty_request_is_valid():
    assert decode(encode([])) == []


def _raw(*series) -> bytes:
    """A body with labels exactly as given (unsorted, duplicated...): bypasses serialize's checks."""
    req = WriteRequest()
    for labels, samples in series:
        ts = req.timeseries.add()
        for n, v in labels:
            ts.labels.add(name=n, value=v)
        for v, t in samples:
            ts.samples.add(value=v, timestamp=t)
    return rw.compress(req.SerializeToString())


BAD_BODIES = [
    ("empty body", b"", "body is empty"),
    ("not snappy", b"\xff\xff\xff\xff\xff\xff", "body is not snappy block format"),
    ("truncated snappy", rw.compress(b"x" * 100)[:-3], "body is not snappy block format"),
    ("not protobuf", rw.compress(b"\x0a\xff\xff\xff\x0f"), "body is not a protobuf WriteRequest"),
    ("no __name__", _raw(([("job", "x")], [(1, 1)])), "series 0: no __name__ label"),
    ("no labels at all", _raw(([], [(1, 1)])), "series 0: no __name__ label"),
    ("bad metric name", _raw(([("__name__", "1up")], [(1, 1)])), "series 0 (1up): invalid metric name '1up'"),
    ("bad label name", _raw(([("__name__", "up"), ("a-b", "x")], [(1, 1)])),
     "series 0 (up): invalid label name 'a-b'"),
    ("unsorted labels", _raw(([("__name__", "up"), ("b", "1"), ("a", "2")], [(1, 1)])),
     "series 0 (up): labels are not sorted by name ('a' after 'b')"),
    ("duplicate labels", _raw(([("__name__", "up"), ("a", "1"), ("a", "2")], [(1, 1)])),
     "series 0 (up): duplicate label 'a'"),
    ("empty label value", _raw(([("__name__", "up"), ("a", "")], [(1, 1)])),
     "series 0 (up): label 'a' has an empty value"),
    ("no samples", _raw(([("__name__", "up")], [])), "series 0 (up): no samples"),
    ("samples out of order", _raw(([("__name__", "up")], [(1, 2000), (2, 1000)])),
     "series 0 (up): samples are not in time order (1000 after 2000)"),
    ("second series bad", _raw(([("__name__", "up")], [(1, 1)]), ([("zz", "1")], [(1, 1)])),
     "series 1: no __name__ label"),
]


@pytest.mark.parametrize("body,message", [(b, m) for _, b, m in BAD_BODIES], ids=[c[0] for c in BAD_BODIES])
def test_invalid_bodies_are_rejected_with_a_clear_message(body, message):
    with pytest.raises(RemoteWriteError) as info:
        decode(body)
    assert str(info.value).startswith(message), str(info.value)
    assert isinstance(info.value, ValueError)


def test_decoded_size_limit_is_checked_before_inflating():
    body = encode([({"__name__": "x", "pad": "y" * 1000}, [(1, 1)])])
    with pytest.raises(RemoteWriteError, match=r"decoded body would be \d+ bytes, over the limit of 500"):
        decode(body, max_decoded_bytes=500)
    assert decode(body, max_decoded_bytes=10_000)


@pytest.mark.parametrize("series,message", [
    ([({"job": "x"}, [(1, 1)])], "series 0: no __name__ label"),
    ([({"__name__": "up", "bad-name": "1"}, [(1, 1)])], "series 0 (up): invalid label name 'bad-name'"),
    ([({"__name__": "up"}, [])], "series 0 (up): no samples"),
])
def test_encode_refuses_what_a_receiver_would_reject(series, message):
    with pytest.raises(RemoteWriteError, match=re.escape(message)):
        encode(series)


_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(
    st.dictionaries(_names.filter(lambda n: n != "__name__"), st.text(min_size=1, max_size=20), max_size=5),
    _names,
    st.lists(st.tuples(st.floats(allow_nan=False), st.integers(-2**62, 2**62)), min_size=1, max_size=5)),
    max_size=5))
def test_round_trip_property(items):
    series = [(dict(labels, __name__=name), sorted(samples, key=lambda s: s[1])) for labels, name, samples in items]
    assert decode(encode(series)) == [(dict(sorted(l.items())), [(float(v), t) for v, t in s]) for l, s in series]


def _library_serialize(series) -> bytes:
    """The same request built with the protobuf library from the runtime descriptor."""
    req = WriteRequest()
    for labels, samples in series:
        ts = req.timeseries.add()
        for n, v in sorted(labels.items()):
            if v != "":
                ts.labels.add(name=n, value=v)
        for v, t in samples:
            ts.samples.add(value=v, timestamp=t)
    return req.SerializeToString()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(
    st.dictionaries(_names.filter(lambda n: n != "__name__"), st.text(max_size=20), max_size=5),
    _names,
    st.lists(st.tuples(st.floats(allow_nan=True) | st.sampled_from([0.0, -0.0, 1.0]),
                       st.integers(-2**63, 2**63 - 1) | st.sampled_from([0, 1, -1])), min_size=1, max_size=5)),
    max_size=5))
def test_hand_written_encoder_is_byte_for_byte_the_protobuf_library(items):
    series = [(dict(labels, __name__=name), samples) for labels, name, samples in items]
    assert rw.serialize(series) == _library_serialize(series)


@pytest.mark.parametrize("sample,message", [
    ((1.0, 1.5), "timestamp must be a 64-bit integer of milliseconds, got 1.5"),
    ((1.0, 2**63), "timestamp must be a 64-bit integer"),
    (("x", 1), "sample value must be a number, got 'x'"),
])
def test_encode_refuses_bad_samples(sample, message):
    with pytest.raises(RemoteWriteError, match=re.escape(message)):
        encode([({"__name__": "x"}, [sample])])


def test_encoding_does_not_load_the_protobuf_runtime():
    import subprocess
    import sys

    code = ("import sys; from contract import remote_write as rw; rw.encode([({'__name__': 'x'}, [(1.0, 1)])]); "
            "import agent.push, agent.queue, agent.shipper; "
            "print(any(m.startswith('google.protobuf') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "False", out.stderr


def test_fields_outside_version_1_0_are_skipped():
    """Prometheus itself may send metadata (WriteRequest field 3) and exemplars (TimeSeries field 3)."""
    exemplar = _ld(3, _ld(1, _ld(1, b"trace_id") + _ld(2, b"abc")))
    label = _ld(1, _ld(1, b"__name__") + _ld(2, b"up"))
    smp = _ld(2, bytes([1 << 3 | 1]) + struct.pack("<d", 1.0) + bytes([2 << 3]) + _varint(5))
    metadata = _ld(3, bytes([1 << 3]) + _varint(1) + _ld(2, b"up"))
    body = rw.compress(_ld(1, label + smp + exemplar) + metadata)
    assert decode(body) == [({"__name__": "up"}, [(1.0, 5)])]
