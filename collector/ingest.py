"""The write path's work on one request body: check it, stamp the identity, drop what is bad.

The body is parsed (C-backed protobuf, upb) into two views: its series' labels as undecoded bytes,
and their samples. Serializing one series of a view is one C call, far cheaper than reading its
fields from Python: a series is recognised by its labels as sent, and each is written out again as
its stamped labels (serialized once per distinct series and remembered) followed by its samples as
the agent sent them; samples are never turned into Python tuples unless one must be dropped. An
agent sends the same series request after request: the labels of all the series of its last
request are remembered as one byte string with their stamped labels in order, and a request whose
series are the same (one comparison) needs no lookup per series. The checks are those of
:func:`contract.remote_write.decode` (``__name__`` present and valid, label names valid, sorted and
unique, no empty value, at least one sample, samples in time order) plus the configured limits;
label names and metric names already seen valid are remembered, since an agent sends the same few
hundred again and again.

Only what is bad is refused: a series that fails a check is left out and counted (``invalid``,
with the reasons of the first few), samples outside the accepted time range likewise, and the rest
is forwarded. The whole request is refused only when it cannot be read at all (400) or is over a
per-request limit (413: the agent sends it again in smaller requests).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

from contract.remote_write import (IDENTITY_LABELS, RemoteWriteError, check_series, compress, decompress,
                                   message_classes, varint)

# Label sets of (commune, agent, labels sent) already checked against the limits in force, with
# their stamped labels serialized: agents send the same series every collection, so each is
# checked and stamped once. Bounded in bytes (what the entries hold, with Python's overheads);
# emptied when full and when the limits change. Only series that passed every check enter it;
# under the key None, the identity's last request whose series' labels all did (see rewrite).
SERIES_CACHE_BYTES = 64 * 2**20
_ENTRY_OVERHEAD = 200   # dict slot, tuple and bytes object headers of one entry
_cached_bytes = 0
_series_checked: dict = {}
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


# Valid metric and label names seen before (bounded by contract.remote_write.check_series).
_valid_metric: set = set()
_valid_label: set = set()


@functools.lru_cache(maxsize=None)
def _view(pkg: str, fields: tuple) -> type:
    """A WriteRequest class whose TimeSeries knows only ``fields`` (the others stay unknown, to be
    discarded after parsing): ``"labels", 1`` as undecoded ``repeated bytes`` (the same wire format
    as ``repeated Label``), ``"samples", 2`` as remote write 1.0 has it."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name=f"commune/{pkg}.proto", package=pkg, syntax="proto3")
    wr = fdp.message_type.add(name="WriteRequest")
    wr.field.add(name="timeseries", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                 type_name=f".{pkg}.TimeSeries")
    ts = fdp.message_type.add(name="TimeSeries")
    if "labels" in fields:
        ts.field.add(name="labels", number=1, type=F.TYPE_BYTES, label=F.LABEL_REPEATED)
    if "samples" in fields:
        ts.field.add(name="samples", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                     type_name=f".{pkg}.Sample")
        sm = fdp.message_type.add(name="Sample")
        sm.field.add(name="value", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
        sm.field.add(name="timestamp", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    file_desc = pool.FindFileByName(fdp.name)
    get = getattr(message_factory, "GetMessageClass", None) or message_factory.MessageFactory(pool).GetPrototype
    return get(file_desc.message_types_by_name["WriteRequest"])


def _views() -> tuple:
    """The two views of a WriteRequest the write path parses a body into (C-backed): its series'
    labels, undecoded, and their samples. Serializing one series of a view is one C call: the labels
    view gives the bytes a series seen before is recognised by, the samples view the samples to
    forward as sent (re-encoded canonically, without fields remote write 1.0 does not have)."""
    return _view("commune.collector.labels", ("labels", 1)), _view("commune.collector.samples", ("samples", 2))


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
    """The body as one message whose series' labels stay undecoded bytes (the reference the tests
    compare :func:`rewrite` with; it parses :func:`parse_views`)."""
    from google.protobuf.message import DecodeError

    raw = decompress(body, max_decoded)
    req = _view("commune.collector.whole", ("labels", 1, "samples", 2))()
    try:
        req.ParseFromString(raw)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise RemoteWriteError(f"body is not a protobuf WriteRequest: {exc}") from None
    req.DiscardUnknownFields()
    return req


def parse_views(body: bytes, max_decoded: int) -> tuple:
    """The body as its (labels view, samples view); fields remote write 1.0 does not have are
    discarded (they are not forwarded)."""
    from google.protobuf.message import DecodeError

    raw = decompress(body, max_decoded)
    labels_class, samples_class = _views()
    samples_view, labels_view = samples_class(), labels_class()
    try:
        samples_view.ParseFromString(raw)  # samples decoded: any error in the body shows here
        labels_view.ParseFromString(raw)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise RemoteWriteError(f"body is not a protobuf WriteRequest: {exc}") from None
    samples_view.DiscardUnknownFields()
    labels_view.DiscardUnknownFields()
    return labels_view, samples_view


MAX_ERRORS = 3  # reasons kept per request for the answer and the log


def rewrite(body: bytes, limits, commune: str, agent: str, now_ms: int) -> Result:
    """Check ``body`` against the protocol and ``limits``, stamp ``commune``/``agent`` on every series,
    drop samples outside [now - max_sample_age, now + max_clock_skew] and series that can never be
    accepted (each counted, with the reason of the first few); return what to forward.

    Raises RemoteWriteError when the body itself cannot be read (not snappy, not a WriteRequest)
    and LimitError when the request as a whole is over a limit (the agent can send it again split).
    """
    global _cached_bytes
    labels_view, samples_view = parse_views(body, limits.max_decoded_size)
    all_labels, all_samples = labels_view.timeseries, samples_view.timeseries
    n_series = len(all_samples)
    if n_series > limits.max_series_per_request:
        raise LimitError(413, f"{n_series} series in one request, over limits.max_series_per_request "
                              f"({limits.max_series_per_request}); send smaller batches")
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
    # An agent sends the same series request after request: all its series' labels as sent (one C
    # call) against those of its last request, whose stamped labels are kept in order (key None).
    whole = labels_view.SerializeToString()
    template = get(None)
    known = template[1] if template is not None and template[0] == whole else None
    seen: list = []  # stamped labels of each series, for the next request's template
    total = 0
    for i, ts in enumerate(all_samples):
        samples = ts.samples
        n = len(samples)
        total += n
        try:
            if known is not None:
                labels = known[i]
            else:
                lts = all_labels[i]
                key = lts.SerializeToString()  # the series' labels as sent, undecoded
                labels = get(key)
                if labels is None:
                    seen.append(None)  # no template of a request with a series refused for its labels
                    raw_labels = tuple(lts.labels)
                    pairs = _decode_labels(raw_labels, i, 4 * (max_value + max_name) + 16)  # UTF-8: 4 bytes a character at most
                    check_series(pairs, i, max_labels, max_name, max_value, _valid_metric, _valid_label)
                    labels = seen[-1] = _stamped_labels(pairs, commune, agent)
                    size = entry_bytes(key, labels)
                    if _cached_bytes + size > SERIES_CACHE_BYTES:  # full: start again
                        _cached_bytes = 0
                        _series_checked.clear()
                        stamped = _stamped_cache(limits, commune, agent)
                        get = stamped.get
                    stamped[key] = labels
                    _cached_bytes += size
                else:
                    seen.append(labels)
            if n == 1:
                first = last = samples[0].timestamp
            elif n == 2:
                first, last = samples[0].timestamp, samples[1].timestamp
                if last < first:
                    raise RemoteWriteError(f"series {i} ({_metric(_decode_labels(tuple(all_labels[i].labels), i))}): samples "
                                           f"are not in time order ({last} after {first})")
            elif not n:
                raise RemoteWriteError(f"series {i} ({_metric(_decode_labels(tuple(all_labels[i].labels), i))}): no samples")
            else:
                stamps = [s.timestamp for s in samples]
                if sorted(stamps) != stamps:
                    cur, prev = next((b, a) for a, b in zip(stamps, stamps[1:]) if b < a)
                    raise RemoteWriteError(f"series {i} ({_metric(_decode_labels(tuple(all_labels[i].labels), i))}): samples "
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
        content = labels + ts.SerializeToString()
        size = len(content)
        out.append(_TIMESERIES_TAG + (_SHORT_VARINTS[size] if size < 128 else varint(size)) + content)
        counts.append(n)
    if total > limits.max_samples_per_request:  # counted on the way: refused before anything is forwarded
        raise LimitError(413, f"{total} samples in one request, over limits.max_samples_per_request "
                              f"({limits.max_samples_per_request}); send smaller batches")
    if known is None and None not in seen:
        _keep_template(limits, commune, agent, whole, seen)
    forwarded = total - too_old - ahead - invalid
    return Result(out, counts, total, forwarded, too_old, ahead, n_series, invalid, errors)


def entry_bytes(key, stamped) -> int:
    """What one entry of the stamped-series cache holds, in bytes (estimated): a series (its labels
    as sent: stamped labels), or an identity's last request (None: (its labels as sent, the
    stamped labels of each series, shared with the series' entries))."""
    if key is None:
        return _ENTRY_OVERHEAD + len(stamped[0]) + 8 * len(stamped[1])
    return _ENTRY_OVERHEAD + len(key) + len(stamped)


def _keep_template(limits, commune: str, agent: str, whole: bytes, seen: list) -> None:
    global _cached_bytes
    stamped = _stamped_cache(limits, commune, agent)
    old = stamped.get(None)
    if old is not None:
        _cached_bytes -= entry_bytes(None, old)
        del stamped[None]
    size = entry_bytes(None, (whole, seen))
    if _cached_bytes + size <= SERIES_CACHE_BYTES:  # else not kept: the series' entries come first
        stamped[None] = (whole, seen)
        _cached_bytes += size


def _metric(pairs) -> str:
    for name, value in pairs:
        if name == "__name__":
            return value
    return ""


def _stamped_labels(pairs, commune: str, agent: str) -> bytes:
    """The serialized labels of a series: those the agent sent minus any identity label, plus the
    token's, sorted by name (field 1 of TimeSeries, repeated)."""
    labels = sorted([p for p in pairs if p[0] not in IDENTITY_LABELS] + [("agent", agent), ("commune", commune)])
    ts = message_classes()["TimeSeries"]()
    for name, value in labels:
        ts.labels.add(name=name, value=value)
    return ts.SerializeToString()
