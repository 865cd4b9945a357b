"""Prometheus remote-write 1.0: encode and decode ``WriteRequest`` bodies (protobuf + snappy).

Pure and small; the agent's shipper and the collector both use it. The protobuf messages are
built at run time from a descriptor (no generated code, no protoc); ``remote_write.proto`` beside
this file is the reference and a test checks both agree. Bodies are snappy *block* format.

Decoding parses with those protobuf classes (built on first use). Encoding writes the four small
messages' wire format directly: the agent then never loads the protobuf runtime (about 3 MB of
resident memory on every office PC), and a test checks the output is byte for byte what the
protobuf library produces.

A series is ``(labels, samples)``: a mapping of label names to values (``__name__`` among them)
and a sequence of ``(value, timestamp_ms)``. :func:`decode` returns the same shape and raises
:class:`RemoteWriteError` (a ``ValueError``) with a message fit for an HTTP 400 answer.
"""
from __future__ import annotations

import functools
import struct
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

import cramjam

# Valid names: the one definition in contract/names.py (re-exported here for the collector).
from contract.names import LABEL_NAME_RE, METRIC_NAME_RE

__all__ = ["HEADERS", "AGENT_TIME_HEADER", "RemoteWriteError", "LimitExceeded", "encode", "decode", "serialize",
           "check_labels", "check_series", "snappy_length", "compress", "decompress", "PROTO_FILE"]

PROTO_FILE = __file__.rsplit(".", 1)[0] + ".proto"
PACKAGE = "commune.remotewrite"

# Headers every remote-write 1.0 request carries.
HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
# The agent's wall clock when it sent the request (Unix seconds): the collector compares it with
# its own clock and exports the difference (commune_agent_clock_skew_seconds), so a PC whose clock
# is wrong is seen before its samples are refused as too far ahead.
AGENT_TIME_HEADER = "X-Commune-Agent-Time"

Series = Tuple[Mapping[str, str], Sequence[Tuple[float, int]]]


# What the collector accepts per series by default (collector.config.Limits takes these numbers):
# the agent leaves out, and counts, a series over them before it is queued, so that a request of
# ours is never refused for a limit. Labels the collector stamps itself are not counted.
IDENTITY_LABELS = ("agent", "commune")  # sorted
MAX_LABELS_PER_SERIES = 40               # __name__ included
MAX_LABEL_NAME_LENGTH = 128
MAX_LABEL_VALUE_LENGTH = 1024

# (message, [(field name, number, type, repeated, message type name or None)]); types as in .proto
MESSAGES = (
    ("WriteRequest", [("timeseries", 1, "message", True, "TimeSeries")]),
    ("TimeSeries", [("labels", 1, "message", True, "Label"),
                    ("samples", 2, "message", True, "Sample")]),
    ("Label", [("name", 1, "string", False, None),
               ("value", 2, "string", False, None)]),
    ("Sample", [("value", 1, "double", False, None),
                ("timestamp", 2, "int64", False, None)]),
)


class RemoteWriteError(ValueError):
    """A body or a series that is not valid remote-write 1.0; the message says what and where."""


@functools.lru_cache(maxsize=1)
def message_classes() -> dict:
    """The protobuf classes of :data:`MESSAGES`, built once from a runtime descriptor."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    types = {"message": F.TYPE_MESSAGE, "string": F.TYPE_STRING, "double": F.TYPE_DOUBLE, "int64": F.TYPE_INT64}
    fdp = descriptor_pb2.FileDescriptorProto(name="commune/remote_write.proto", package=PACKAGE,
                                             syntax="proto3")
    for msg_name, fields in MESSAGES:
        msg = fdp.message_type.add(name=msg_name)
        for name, number, ftype, repeated, type_name in fields:
            f = msg.field.add(name=name, number=number, type=types[ftype],
                              label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
            if type_name:
                f.type_name = f".{PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()  # private: never clashes with other registrations
    pool.Add(fdp)
    file_desc = pool.FindFileByName(fdp.name)
    get = getattr(message_factory, "GetMessageClass", None)
    if get is None:  # protobuf < 4.22
        factory = message_factory.MessageFactory(pool)
        get = factory.GetPrototype
    return {name: get(file_desc.message_types_by_name[name]) for name, _ in MESSAGES}


def __getattr__(name: str):
    if name == "WriteRequest":  # the protobuf class, for tests and callers that build bodies by hand
        return message_classes()["WriteRequest"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def compress(raw: bytes) -> bytes:
    """Snappy block format, as remote write wants it."""
    return bytes(cramjam.snappy.compress_raw(raw))


def decompress(body: bytes, max_bytes: Optional[int] = None) -> bytes:
    """Undo :func:`compress`; refuses (before inflating) a body that would exceed ``max_bytes``."""
    length = snappy_length(body)
    if length is None:
        raise RemoteWriteError("body is not snappy block format: missing or bad length preamble"
                               if body else "body is empty")
    if max_bytes is not None and length > max_bytes:
        raise RemoteWriteError(f"decoded body would be {length} bytes, over the limit of {max_bytes}")
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except Exception as exc:  # cramjam.DecompressionError and friends
        raise RemoteWriteError(f"body is not snappy block format: {exc}") from None


def snappy_length(body: bytes) -> Optional[int]:
    """The uncompressed length a snappy block announces in its preamble (a little-endian base-128
    varint), before anything is inflated; None when the preamble is missing or bad."""
    result = shift = 0
    for byte in body[:5]:
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result
        shift += 7
    return None


def check_labels(labels: Mapping[str, str]) -> None:
    """Raise :class:`RemoteWriteError` if a series with these labels would be refused
    (empty values are left out first, as :func:`serialize` does)."""
    check_series(sorted((k, v) for k, v in labels.items() if v != ""), 0)


def serialize(series: Iterable[Series]) -> bytes:
    """The protobuf ``WriteRequest`` (uncompressed) for ``series``; labels are sorted here.

    Labels with an empty value are left out (in Prometheus an empty label is an absent label).
    Concatenated outputs of this function are a valid ``WriteRequest`` of all their series.
    Raises :class:`RemoteWriteError` on a series that a receiver would reject.
    """
    out = []
    for i, (labels, samples) in enumerate(series):
        pairs = sorted((k, v) for k, v in labels.items() if v != "")
        check_series(pairs, i)
        if not samples:
            raise RemoteWriteError(f"series {i} ({labels.get('__name__')}): no samples")
        try:
            body = [_len_delimited(b"\x0a", _len_delimited(b"\x0a", n.encode()) + _len_delimited(b"\x12", v.encode()))
                    for n, v in pairs]
        except UnicodeEncodeError as exc:
            raise RemoteWriteError(f"series {i} ({labels.get('__name__')}): label is not valid UTF-8: {exc}") from None
        for value, ts_ms in samples:
            body.append(_len_delimited(b"\x12", _sample(value, ts_ms, i)))
        out.append(_len_delimited(b"\x0a", b"".join(body)))
    return b"".join(out)


# Wire format (protobuf encoding) of the four messages: field 1 or 2, wire type 2 (length-
# delimited: tag 0x0a / 0x12), 1 (64-bit double: 0x09) or 0 (varint: 0x10). proto3 leaves out a
# scalar equal to its default (0.0 with all bits zero, 0), exactly as the protobuf library does.
_DOUBLE = struct.Struct("<d").pack
_ZERO = bytes(8)


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len_delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


def _sample(value: float, ts_ms: int, i: int) -> bytes:
    if isinstance(ts_ms, bool) or not isinstance(ts_ms, int) or not -2**63 <= ts_ms < 2**63:
        raise RemoteWriteError(f"series {i}: timestamp must be a 64-bit integer of milliseconds, got {ts_ms!r}")
    try:
        v = _DOUBLE(value)
    except struct.error:
        raise RemoteWriteError(f"series {i}: sample value must be a number, got {value!r}") from None
    out = b"\x09" + v if v != _ZERO else b""
    return out + b"\x10" + varint(ts_ms & 0xFFFFFFFFFFFFFFFF) if ts_ms else out


def encode(series: Iterable[Series]) -> bytes:
    """A complete request body: protobuf ``WriteRequest``, snappy block compressed."""
    return compress(serialize(series))


def decode(body: bytes, max_decoded_bytes: Optional[int] = None) -> List[Tuple[dict, List[Tuple[float, int]]]]:
    """Parse and check a request body; return ``[(labels, [(value, timestamp_ms), ...]), ...]``.

    Raises :class:`RemoteWriteError` for a body that is not snappy, not a ``WriteRequest``, or
    has a series without ``__name__``, with an invalid, unsorted, duplicate or empty label, with
    no samples or with samples out of time order.
    """
    from google.protobuf.message import DecodeError

    raw = decompress(body, max_decoded_bytes)
    req = message_classes()["WriteRequest"]()
    try:
        req.ParseFromString(raw)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise RemoteWriteError(f"body is not a protobuf WriteRequest: {exc}") from None
    out = []
    for i, ts in enumerate(req.timeseries):
        pairs = [(lab.name, lab.value) for lab in ts.labels]
        check_series(pairs, i, None, None, None)  # the receiver's limits are its own
        name = dict(pairs)["__name__"]
        samples = [(s.value, s.timestamp) for s in ts.samples]
        if not samples:
            raise RemoteWriteError(f"series {i} ({name}): no samples")
        for (_, prev), (_, cur) in zip(samples, samples[1:]):
            if cur < prev:
                raise RemoteWriteError(f"series {i} ({name}): samples are not in time order "
                                       f"({cur} after {prev})")
        out.append((dict(pairs), samples))
    return out


class LimitExceeded(RemoteWriteError):
    """A series that is valid Prometheus data but over a receiver's limits."""


def _name_ok(name: str, regex, known: Optional[set]) -> bool:
    """A valid metric or label name (its length already checked); short valid names are remembered
    in ``known`` (at most _KNOWN_MAX of at most _KNOWN_LENGTH characters)."""
    if known is not None and name in known:
        return True
    if not regex.fullmatch(name):
        return False
    if known is not None and len(name) <= _KNOWN_LENGTH and len(known) < _KNOWN_MAX:
        known.add(name)
    return True


_KNOWN_MAX = 50_000
_KNOWN_LENGTH = 200


def check_series(pairs: Sequence[Tuple[str, str]], i: int, max_labels: Optional[int] = MAX_LABELS_PER_SERIES,
                 max_name: Optional[int] = MAX_LABEL_NAME_LENGTH, max_value: Optional[int] = MAX_LABEL_VALUE_LENGTH,
                 known_metrics: Optional[set] = None, known_labels: Optional[set] = None) -> None:
    """The one check of a series' labels (``[(name, value), ...]`` as sent), for the agent's
    encoder, :func:`decode` and the collector's ingest alike.

    Limits first (``None``: no limit), so that nothing over a limit is ever remembered as a valid
    name: raises :class:`LimitExceeded`. Then ``__name__`` present and valid, label names valid,
    sorted and unique, no empty value: raises :class:`RemoteWriteError`. ``known_*``: sets of names
    found valid before (the collector keeps them: agents send the same few hundred names).
    """
    metric = next((v for n, v in pairs if n == "__name__"), None)
    where = f"series {i}" + (f" ({metric[:80]})" if metric else "")
    if not metric:
        raise RemoteWriteError(f"{where}: no __name__ label")
    own = 0
    for name, value in pairs:
        if max_name is not None and len(name) > max_name:
            raise LimitExceeded(f"{where}: label name {name[:40]!r}... is {len(name)} characters, over "
                                f"limits.max_label_name_length ({max_name})")
        if max_value is not None and len(value) > max_value:
            raise LimitExceeded(f"{where}: value of label {name!r} is {len(value)} characters, over "
                                f"limits.max_label_value_length ({max_value})")
        if name not in IDENTITY_LABELS:
            own += 1
    if max_labels is not None and own > max_labels:
        raise LimitExceeded(f"{where}: {own} labels, over limits.max_labels_per_series ({max_labels})")
    if not _name_ok(metric, METRIC_NAME_RE, known_metrics):
        raise RemoteWriteError(f"{where}: invalid metric name {metric!r}")
    prev = None
    for name, value in pairs:
        if not _name_ok(name, LABEL_NAME_RE, known_labels):
            raise RemoteWriteError(f"{where}: invalid label name {name!r}")
        if value == "":
            raise RemoteWriteError(f"{where}: label {name!r} has an empty value")
        if prev is not None:
            if name == prev:
                raise RemoteWriteError(f"{where}: duplicate label {name!r}")
            if name < prev:
                raise RemoteWriteError(f"{where}: labels are not sorted by name ({name!r} after {prev!r})")
        prev = name
