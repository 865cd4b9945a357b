"""The write path's work on one request body: check it, stamp the identity, drop what is bad.

The body is parsed once into the protobuf classes of :mod:`contract.remote_write` (C-backed). Each
series is written out again as its stamped labels (serialized once per distinct series and
remembered) followed by its samples as the agent sent them; samples are never turned into Python
tuples unless one must be dropped. The checks are those of :func:`contract.remote_write.decode` (``__name__`` present and
valid, label names valid, sorted and unique, no empty value, at least one sample, samples in time
order) plus the configured limits; label names and metric names already seen valid are remembered,
since an agent sends the same few hundred again and again.

Only what is bad is refused: a series that fails a check is left out and counted (``invalid``,
with the reasons of the first few), samples outside the accepted time range likewise, and the rest
is forwarded. The whole request is refused only when it cannot be read at all (400) or is over a
per-request limit (413: the agent sends it again in smaller requests).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

from contract.remote_write import (IDENTITY_LABELS, LABEL_NAME_RE, METRIC_NAME_RE, RemoteWriteError, compress,
                                decompress, message_classes, varint)

# Label sets of (commune, agent, labels sent) already checked against the limits in force, with
# their stamped labels serialized: agents send the same series every collection, so each is
# checked and stamped once. Bounded in bytes (what the entries hold, with Python's overheads);
# emptied when full and when the limits change. Only series that passed every check enter it.
SERIES_CACHE_BYTES = 64 * 2**20
_ENTRY_OVERHEAD = 200   # dict slot, tuple and bytes object headers of one entry
_cached_bytes = 0
_series_checked: dict = {}
# Valid metric and label names seen before (checked by length first): at most this many, of at
# most _NAME_CACHE_LENGTH characters each.
_CACHE_MAX = 50_000
_NAME_CACHE_LENGTH = 200
_TIMESERIES_TAG = b"\x0a"  # WriteRequest field 1 (timeseries), length-delimited
_SHORT_VARINTS = [bytes([n]) for n in range(128)]


def _stamped_cache(limits, commune: str, agent: str) -> dict:
    """{labels as sent (undecoded): stamped labels serialized} for one identity under these limits."""
    key = (limits.max_labels_per_series, limits.max_label_name_length, limits.max_label_value_length)
    global _cached_bytes
    if _series_checked.get("limits") != key:
        _cached_bytes = 0
        _series_checked.clear()
        _series_checked["limits"] = key
    cache = _series_checked.get((commune, agent))
    if cache is None:
        cache = _series_checked[(commune, agent)] = {}
        _cached_bytes += _ENTRY_OVERHEAD + len(commune) + len(agent)
    return cache


def cache_bytes() -> int:
    """What the stamped-series cache holds now, in bytes (estimated)."""
    return _cached_bytes


class LimitError(Exception):
    """A write request over one of the configured limits; ``status`` is 400 or 413."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Result(NamedTuple):
    parts: list          # the stamped series to forward, each a serialized WriteRequest fragment
    part_samples: list   # samples in each part
    samples: int         # samples received
    forwarded: int       # samples left to forward
    too_old: int
    in_future: int
    series: int
    invalid: int         # samples of series refused for themselves (bad name or label, over a limit)
    errors: list         # why, for the first few of those series

    @property
    def body(self) -> bytes:
        """The whole request to forward (snappy); empty when nothing is left."""
        return join(self.parts)


def join(parts) -> bytes:
    """Series fragments as one snappy-compressed WriteRequest body (empty for none)."""
    return compress(b"".join(parts)) if parts else b""


def _name_ok(name: str, regex, seen: set) -> bool:
    """A valid metric or label name (its length already checked); short valid names are remembered."""
    if name in seen:
        return True
    if not regex.fullmatch(name):
        return False
    if len(name) <= _NAME_CACHE_LENGTH and len(seen) < _CACHE_MAX:
        seen.add(name)
    return True


_valid_metric: set = set()
_valid_label: set = set()


def snappy_announced_length(body: bytes):
    """The uncompressed length a snappy block announces in its varint preamble (None if absent)."""
    result = shift = 0
    for byte in body[:5]:
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result
        shift += 7
    return None


@functools.lru_cache(maxsize=1)
def _raw_label_classes() -> dict:
    """WriteRequest as remote write 1.0 has it, except that a TimeSeries' labels stay undecoded
    bytes (``repeated bytes labels = 1``: the same wire format). Reading a series' labels is then
    one C call, and a series seen before is recognised by those bytes alone."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    pkg = "commune.collector.ingest"
    fdp = descriptor_pb2.FileDescriptorProto(name="commune/collector_ingest.proto", package=pkg, syntax="proto3")
    wr = fdp.message_type.add(name="WriteRequest")
    wr.field.add(name="timeseries", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                 type_name=f".{pkg}.TimeSeries")
    ts = fdp.message_type.add(name="TimeSeries")
    ts.field.add(name="labels", number=1, type=F.TYPE_BYTES, label=F.LABEL_REPEATED)
    ts.field.add(name="samples", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                 type_name=f".{pkg}.Sample")
    sm = fdp.message_type.add(name="Sample")
    sm.field.add(name="value", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    sm.field.add(name="timestamp", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    file_desc = pool.FindFileByName(fdp.name)
    get = getattr(message_factory, "GetMessageClass", None) or message_factory.MessageFactory(pool).GetPrototype
    return {name: get(file_desc.message_types_by_name[name]) for name in ("WriteRequest", "TimeSeries")}


def _decode_labels(raw_labels, i: int, max_raw: int = 0) -> tuple:
    """The (name, value) pairs of a series' undecoded labels; with ``max_raw``, a label longer than
    that is refused before it is decoded."""
    from google.protobuf.message import DecodeError

    label_class = message_classes()["Label"]
    pairs = []
    for raw in raw_labels:
        if max_raw and len(raw) > max_raw:
            raise LimitError(400, f"series {i}: a label of {len(raw)} bytes, over limits.max_label_name_length "
                                  f"plus limits.max_label_value_length")
        lab = label_class()
        try:
            lab.ParseFromString(raw)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise RemoteWriteError(f"body is not a protobuf WriteRequest: series {i}: bad label: {exc}") from None
        pairs.append((lab.name, lab.value))
    return tuple(pairs)


def parse(body: bytes, max_decoded: int):
    from google.protobuf.message import DecodeError

    raw = decompress(body, max_decoded)
    req = _raw_label_classes()["WriteRequest"]()
    try:
        req.ParseFromString(raw)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise RemoteWriteError(f"body is not a protobuf WriteRequest: {exc}") from None
    req.DiscardUnknownFields()  # remote write 1.0 only: what is not in the .proto is not forwarded
    return req


MAX_ERRORS = 3  # reasons kept per request for the answer and the log


def rewrite(body: bytes, limits, commune: str, agent: str, now_ms: int) -> Result:
    """Check ``body`` against the protocol and ``limits``, stamp ``commune``/``agent`` on every series,
    drop samples outside [now - max_sample_age, now + max_clock_skew] and series that can never be
    accepted (each counted, with the reason of the first few); return what to forward.

    Raises RemoteWriteError when the body itself cannot be read (not snappy, not a WriteRequest)
    and LimitError when the request as a whole is over a limit (the agent can send it again split).
    """
    global _cached_bytes
    req = parse(body, limits.max_decoded_size)
    all_series = req.timeseries
    n_series = len(all_series)
    if n_series > limits.max_series_per_request:
        raise LimitError(413, f"{n_series} series in one request, over limits.max_series_per_request "
                              f"({limits.max_series_per_request}); send smaller batches")
    total = sum(len(ts.samples) for ts in all_series)
    if total > limits.max_samples_per_request:
        raise LimitError(413, f"{total} samples in one request, over limits.max_samples_per_request "
                              f"({limits.max_samples_per_request}); send smaller batches")
    oldest = now_ms - int(limits.max_sample_age * 1000)
    newest = now_ms + int(limits.max_clock_skew * 1000)
    max_labels = limits.max_labels_per_series
    max_name = limits.max_label_name_length
    max_value = limits.max_label_value_length
    too_old = ahead = invalid = 0
    errors: list = []
    stamped = _stamped_cache(limits, commune, agent)
    get = stamped.get
    out: list = []
    counts: list = []
    for i, ts in enumerate(all_series):
        samples = ts.samples
        n = len(samples)
        raw_labels = tuple(ts.labels)
        labels = get(raw_labels)
        try:
            if labels is None:
                pairs = _decode_labels(raw_labels, i, 4 * (max_value + max_name) + 16)  # UTF-8: 4 bytes a character at most
                _check_series(pairs, i, max_labels, max_name, max_value)
                labels = _stamped_labels(pairs, commune, agent)
                size = _ENTRY_OVERHEAD + len(labels) + sum(len(r) + 40 for r in raw_labels)
                if _cached_bytes + size > SERIES_CACHE_BYTES:  # full: start again
                    _cached_bytes = 0
                    _series_checked.clear()
                    stamped = _stamped_cache(limits, commune, agent)
                    get = stamped.get
                stamped[raw_labels] = labels
                _cached_bytes += size
            if not n:
                raise RemoteWriteError(f"series {i} ({_metric(_decode_labels(raw_labels, i))}): no samples")
            if n == 1:
                first = last = samples[0].timestamp
            else:
                stamps = [s.timestamp for s in samples]
                if sorted(stamps) != stamps:
                    cur, prev = next((b, a) for a, b in zip(stamps, stamps[1:]) if b < a)
                    raise RemoteWriteError(f"series {i} ({_metric(_decode_labels(raw_labels, i))}): samples "
                                           f"are not in time order ({cur} after {prev})")
                first, last = stamps[0], stamps[-1]
        except (RemoteWriteError, LimitError) as exc:
            invalid += n
            if len(errors) < MAX_ERRORS:
                errors.append(str(exc))
            continue
        if first < oldest or last > newest:
            keep = [(s.value, s.timestamp) for s in samples if oldest <= s.timestamp <= newest]
            too_old += sum(1 for s in samples if s.timestamp < oldest)
            ahead += sum(1 for s in samples if s.timestamp > newest)
            if not keep:
                continue
            del samples[:]
            for value, t in keep:
                samples.add(value=value, timestamp=t)
            n = len(keep)
        # the series again: the stamped labels (serialized once per series), then its samples as sent
        ts.ClearField("labels")
        content = labels + ts.SerializeToString()
        size = len(content)
        out.append(_TIMESERIES_TAG + (_SHORT_VARINTS[size] if size < 128 else varint(size)) + content)
        counts.append(n)
    forwarded = total - too_old - ahead - invalid
    return Result(out, counts, total, forwarded, too_old, ahead, n_series, invalid, errors)


def _metric(pairs) -> str:
    for name, value in pairs:
        if name == "__name__":
            return value
    return ""


def _check_series(pairs, i: int, max_labels: int, max_name: int, max_value: int) -> None:
    """Lengths first, so that nothing over a limit is ever remembered as a valid name."""
    metric = _metric(pairs)
    where = f"series {i}" + (f" ({metric[:80]})" if metric else "")
    if not metric:
        raise RemoteWriteError(f"{where}: no __name__ label")
    own = 0
    for name, value in pairs:
        if len(name) > max_name:
            raise LimitError(400, f"{where}: label name {name[:40]!r}... is {len(name)} characters, over "
                                  f"limits.max_label_name_length ({max_name})")
        if len(value) > max_value:
            raise LimitError(400, f"{where}: value of label {name!r} is {len(value)} characters, over "
                                  f"limits.max_label_value_length ({max_value})")
        if name not in IDENTITY_LABELS:
            own += 1
    if own > max_labels:
        raise LimitError(400, f"{where}: {own} labels, over limits.max_labels_per_series ({max_labels})")
    if not _name_ok(metric, METRIC_NAME_RE, _valid_metric):
        raise RemoteWriteError(f"{where}: invalid metric name {metric!r}")
    prev = None
    for name, value in pairs:
        if not _name_ok(name, LABEL_NAME_RE, _valid_label):
            raise RemoteWriteError(f"{where}: invalid label name {name!r}")
        if value == "":
            raise RemoteWriteError(f"{where}: label {name!r} has an empty value")
        if prev is not None:
            if name == prev:
                raise RemoteWriteError(f"{where}: duplicate label {name!r}")
            if name < prev:
                raise RemoteWriteError(f"{where}: labels are not sorted by name ({name!r} after {prev!r})")
        prev = name


def _stamped_labels(pairs, commune: str, agent: str) -> bytes:
    """The serialized labels of a series: those the agent sent minus any identity label, plus the
    token's, sorted by name (field 1 of TimeSeries, repeated)."""
    labels = sorted([p for p in pairs if p[0] not in IDENTITY_LABELS] + [("agent", agent), ("commune", commune)])
    ts = message_classes()["TimeSeries"]()
    for name, value in labels:
        ts.labels.add(name=name, value=value)
    return ts.SerializeToString()
