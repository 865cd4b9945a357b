"""The collector's own figures: what each process counts, and /metrics of one or of N workers.

With ``workers: N`` (collector.workers) every worker process counts what it handled itself. The
worker a scrape of ``/metrics`` reaches asks each of its siblings for its figures (a Unix socket
per worker, collector.workers) and answers their merge, so the scrape sees the whole service:

- counters (type ``counter`` in the catalog) are summed over the workers;
- ``commune_agent_last_push_timestamp_seconds`` is the latest of the workers', and
  ``commune_agent_clock_skew_seconds`` the one measured last;
- ``commune_collector_upstream_up`` is 1 only when every worker's last answer from it was;
- what every worker computes alike (build info, tokens, fleet inventory, calendar) is taken once.

A worker that does not answer makes the scrape fail (503), never a partial sum; and a worker that
dies stops the whole service (collector.workers), so the counters of all reset together, as
they do on a restart, and ``rate()`` sees one reset, never a drop of one worker's share.
"""
from __future__ import annotations

import platform
from typing import Dict, List, Tuple

from contract.samples import Sample, sample
from collector import __version__

REJECTION_REASONS = ("unauthorized", "body_too_large", "body_timeout", "malformed", "limits", "out_of_range",
                     "invalid", "upstream_rejected", "upstream_unavailable", "state_unreadable", "internal_error")
ENROLLMENT_RESULTS = ("ok", "invalid_key", "bad_request", "conflict", "state_unreadable")


class Stats:
    """The figures one process counts, exported on /metrics through the metric catalog."""

    def __init__(self) -> None:
        self.requests: Dict[Tuple[str, str], int] = {}
        self.request_seconds: Dict[str, float] = {}
        self.received_bytes = 0
        self.samples_received = 0
        self.rejected: Dict[str, int] = {}
        self.enrollments: Dict[str, int] = {}
        self.bad_pull_addresses: set = set()  # token ids already logged
        self.last_push: Dict[Tuple[str, str], float] = {}
        self.clock_skew: Dict[Tuple[str, str], float] = {}  # agent's clock minus ours, last request
        self.clock_noted: Dict[Tuple[str, str], float] = {}  # when (our clock) that was measured
        self.agent_dropped: Dict[Tuple[str, str, str], int] = {}  # (commune, agent, reason): time bounds
        self.dropped: Dict[str, int] = {r: 0 for r in ("too_old", "in_future", "invalid", "upstream_rejected")}

    def request(self, handler: str, code: int, seconds: float) -> None:
        key = (handler, str(code))
        self.requests[key] = self.requests.get(key, 0) + 1
        self.request_seconds[handler] = self.request_seconds.get(handler, 0.0) + seconds

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def enrollment(self, result: str) -> None:
        self.enrollments[result] = self.enrollments.get(result, 0) + 1


def process_samples(st: Stats, forwarder, zalo=None) -> List[Sample]:
    """What this process counted (the part of /metrics that differs between workers)."""
    out = []
    for (handler, code), n in sorted(st.requests.items()):
        out.append(sample("commune_collector_requests_total", n, handler=handler, code=code))
    for handler, secs in sorted(st.request_seconds.items()):
        out.append(sample("commune_collector_request_duration_seconds_total", secs, handler=handler))
    out.append(sample("commune_collector_received_bytes_total", st.received_bytes))
    out.append(sample("commune_collector_samples_received_total", st.samples_received))
    for reason, n in sorted(st.dropped.items()):
        out.append(sample("commune_collector_samples_dropped_total", n, reason=reason))
    for reason in REJECTION_REASONS:
        out.append(sample("commune_collector_rejected_requests_total", st.rejected.get(reason, 0), reason=reason))
    for c in forwarder.clients:
        out.append(sample("commune_collector_samples_forwarded_total", c.samples_forwarded, upstream=c.name))
        for code, n in sorted(c.requests.items()):
            out.append(sample("commune_collector_upstream_requests_total", n, upstream=c.name, code=code))
        out.append(sample("commune_collector_upstream_errors_total", c.errors, upstream=c.name))
        out.append(sample("commune_collector_upstream_duration_seconds_total", c.seconds, upstream=c.name))
        out.append(sample("commune_collector_upstream_sent_bytes_total", c.sent_bytes, upstream=c.name))
        out.append(sample("commune_collector_upstream_up", 1 if c.up else 0, upstream=c.name))
    for result in ENROLLMENT_RESULTS:
        out.append(sample("commune_collector_enrollments_total", st.enrollments.get(result, 0), result=result))
    for (commune, agent), ts in sorted(st.last_push.items()):
        out.append(sample("commune_agent_last_push_timestamp_seconds", ts, commune=commune, agent=agent))
    for (commune, agent), skew in sorted(st.clock_skew.items()):
        out.append(sample("commune_agent_clock_skew_seconds", round(skew, 3), commune=commune, agent=agent))
    for (commune, agent, reason), n in sorted(st.agent_dropped.items()):
        out.append(sample("commune_collector_agent_samples_dropped_total", n, commune=commune, agent=agent,
                          reason=reason))
    if zalo is not None:
        out.extend(zalo.samples())
    return out


def build_info() -> Sample:
    return sample("commune_collector_build_info", 1, version=__version__, python_version=platform.python_version())


def snapshot(st: Stats, forwarder, zalo=None) -> dict:
    """This process' figures as JSON-able data, for the sibling that answers a scrape."""
    return {"samples": [[s.name, s.labels, s.value] for s in process_samples(st, forwarder, zalo)],
            "clock_noted": [[c, a, t] for (c, a), t in st.clock_noted.items()]}


def merge(snapshots: List[dict]) -> List[Sample]:
    """The figures of several workers (their :func:`snapshot`) as those of one service."""
    from contract.catalog import catalog

    cat = catalog()
    merged: Dict[tuple, Sample] = {}
    skew_at: Dict[tuple, float] = {}
    for snap in snapshots:
        noted = {(c, a): t for c, a, t in snap.get("clock_noted", [])}
        for name, labels, value in snap["samples"]:
            key = (name, tuple(sorted(labels.items())))
            have = merged.get(key)
            if name == "commune_agent_clock_skew_seconds":
                at = noted.get((labels.get("commune"), labels.get("agent")), 0.0)
                if have is not None and at < skew_at[key]:
                    continue
                skew_at[key] = at
            elif have is not None:
                d = cat.get(name)
                if d is not None and d.type == "counter":
                    value = have.value + value
                elif name == "commune_collector_upstream_up":
                    value = min(have.value, value)
                else:  # commune_agent_last_push_timestamp_seconds: the latest
                    value = max(have.value, value)
            merged[key] = Sample(name, dict(labels), float(value))
    return list(merged.values())


class SiblingsUnavailable(Exception):
    """A worker did not give its figures for a scrape (it is stopping, or stuck)."""
