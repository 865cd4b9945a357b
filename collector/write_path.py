"""POST /api/v1/write: authenticate, read the whole body, check and stamp it, forward, answer.

The answer codes are the contract with the agent (collector/server.py and collector/README.md
list them): data is deleted only for its own fault. :class:`WritePath` is the part of
:class:`collector.server.Collector` that handles a write (it uses the collector's config, clock,
credentials, forwarder and figures).
"""
from __future__ import annotations

import asyncio
import logging
import math
from typing import Dict, List, Optional

import aiohttp
from aiohttp import web

from contract.remote_write import AGENT_TIME_HEADER, RemoteWriteError, snappy_length
from collector.ingest import LimitError, rewrite
from collector.state import StateError

log = logging.getLogger("collector")

# On a 200 answer to a write: samples of the request that were left out because they can never be
# accepted (the agent counts them as dropped, reason rejected).
DROPPED_HEADER = "X-Commune-Dropped-Samples"
MAX_ERRORS = 3


def _rejection(dropped: Dict[str, int]) -> str:
    """The rejected-requests reason of a write refused as a whole, from what its samples were."""
    if dropped.get("invalid"):
        return "invalid"
    if dropped.get("upstream_rejected"):
        return "upstream_rejected"
    return "out_of_range"


def _dur(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class WritePath:
    """The write handler and its helpers (a part of Collector)."""

    def _text(self, status: int, message: str, reason: Optional[str] = None, **headers: str) -> web.Response:
        if reason:
            self.stats.reject(reason)
        return web.Response(status=status, text=message + "\n", headers=headers or None)

    async def write(self, request: web.Request) -> web.Response:
        try:
            identity = self._bearer(request)
        except StateError as exc:  # our own fault: never answered as the agent's (401)
            log.error("token store: %s", exc)
            return self._text(503, "the collector cannot read its token store; keep the batch and retry",
                              "state_unreadable", **{"Retry-After": "30"})
        if identity is None:
            return self._text(401, "missing, unknown or revoked agent token", "unauthorized",
                              **{"WWW-Authenticate": 'Bearer realm="commune-collector"'})
        self._note_clock(request, identity)
        limits = self.config.limits
        if self.inflight >= limits.max_concurrent_requests:
            return self._text(429, "too many write requests in progress; retry later", "limits",
                              **{"Retry-After": "5"})
        encoding = request.headers.get("Content-Encoding", "snappy").strip().lower()
        if encoding != "snappy":
            return self._text(415, f"Content-Encoding must be snappy, got {encoding!r}", "malformed")
        if request.content_length is not None and request.content_length > limits.max_body_size:
            return self._text(413, f"body of {request.content_length} bytes is over limits.max_body_size "
                                   f"({limits.max_body_size})", "body_too_large", Connection="close")
        self.inflight += 1
        try:
            return await self._write(request, identity)
        finally:
            self.inflight -= 1

    async def _read_body(self, request: web.Request):
        """The whole body (bytes), or the answer to give: 413 over the limit, 408 when it did not
        arrive whole within ``limits.body_timeout`` (a weak link; the agent sends it again)."""
        limits = self.config.limits
        chunks: List[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(float(limits.body_timeout)):
                while True:
                    chunk = await request.content.read(65536)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > limits.max_body_size:
                        return self._text(413, f"body is over limits.max_body_size ({limits.max_body_size})",
                                          "body_too_large", Connection="close")
                    chunks.append(chunk)
        except TimeoutError:
            return self._text(408, f"the body did not arrive whole within limits.body_timeout "
                                   f"({_dur(limits.body_timeout)}); send it again", "body_timeout",
                              Connection="close")
        except (aiohttp.ClientPayloadError, ConnectionError) as exc:  # cut mid-body
            return self._text(408, f"the body was cut short ({exc}); send it again", "body_timeout",
                              Connection="close")
        if request.content_length is not None and size != request.content_length:
            return self._text(408, f"the body was cut short ({size} of {request.content_length} bytes); "
                                   "send it again", "body_timeout", Connection="close")
        return b"".join(chunks)

    async def _write(self, request: web.Request, identity) -> web.Response:
        limits = self.config.limits
        body = await self._read_body(request)
        if isinstance(body, web.Response):
            return body
        self.stats.received_bytes += len(body)
        announced = snappy_length(body)
        if announced is not None and announced > limits.max_decoded_size:
            return self._text(413, f"decoded body would be {announced} bytes, over limits.max_decoded_size "
                                   f"({limits.max_decoded_size})", "body_too_large")
        who = f"{identity.commune}/{identity.agent}"
        try:
            result = rewrite(body, limits, identity.commune, identity.agent, int(self.clock() * 1000))
        except RemoteWriteError as exc:
            return self._text(400, f"malformed remote-write request: {exc}", "malformed")
        except LimitError as exc:
            return self._text(exc.status, str(exc), "limits")
        except Exception as exc:  # our bug, not the agent's data: keep it (the agent retries)
            log.error("decoding a write request of %s failed unexpectedly: %r", who, exc, exc_info=True)
            return self._text(503, "the collector failed on this request; keep the batch and retry",
                              "internal_error", **{"Retry-After": "60"})
        st = self.stats
        st.samples_received += result.samples
        dropped: Dict[str, int] = {}
        reasons: List[str] = []
        if result.errors:
            dropped["invalid"] = result.invalid
            reasons += result.errors
            log.warning("dropped %d samples of %s in series that can never be accepted: %s", result.invalid,
                        who, "; ".join(result.errors))
        if result.too_old or result.in_future:
            dropped["too_old"], dropped["in_future"] = result.too_old, result.in_future
            for reason, n in (("too_old", result.too_old), ("in_future", result.in_future)):
                if n:
                    key = (identity.commune, identity.agent, reason)
                    st.agent_dropped[key] = st.agent_dropped.get(key, 0) + n
            reasons.append(f"older than limits.max_sample_age {_dur(limits.max_sample_age)}: {result.too_old}, "
                           f"ahead of the collector's clock by more than limits.max_clock_skew "
                           f"{_dur(limits.max_clock_skew)}: {result.in_future} (is the agent's clock right?)")
            log.warning("dropped %d samples of %s older than limits.max_sample_age and %d more than "
                        "limits.max_clock_skew ahead", result.too_old, who, result.in_future)
        if result.parts:
            deliveries = await self.forwarder.deliver(result.parts, result.part_samples)
            failed = [d.unavailable for d in deliveries if d.unavailable is not None]
            if failed:
                for o in failed:
                    log.warning("upstream %s did not take %d samples of %s: %s %s", o.upstream,
                                result.forwarded, who, o.code, o.detail)
                what = "; ".join(f"{o.upstream}: {o.code} {o.detail}" for o in failed)
                return self._text(503, f"upstream unavailable, keep the batch and retry: {what}",
                                  "upstream_unavailable", **{"Retry-After": "10"})
            refused = max((d.dropped for d in deliveries), default=0)
            for d in deliveries:
                if d.dropped:
                    st.dropped["upstream_rejected"] = st.dropped.get("upstream_rejected", 0) + d.dropped
                    what = "; ".join(f"{o.code} {o.detail}" for o in d.refused[:MAX_ERRORS])
                    log.warning("upstream %s refused %d samples of %s: %s", d.upstream, d.dropped, who, what)
                    reasons.append(f"upstream {d.upstream} refused {d.dropped} samples: {what}")
            if refused:
                dropped["upstream_rejected"] = refused
        for reason, n in dropped.items():
            if n and reason != "upstream_rejected":
                st.dropped[reason] = st.dropped.get(reason, 0) + n
        lost = sum(dropped.values())
        if (lost or result.errors) and lost >= result.samples:
            return self._text(400, f"none of the {result.samples} samples can be accepted, retrying cannot "
                                   f"help: " + "; ".join(reasons), _rejection(dropped))
        self._pushed(identity)
        if not lost:
            return web.Response(status=204)
        # accepted, minus what can never be: say what was left out, so the agent counts it too
        return web.Response(status=200, text=f"accepted {result.samples - lost} of {result.samples} samples; "
                                             f"dropped {lost}: " + "; ".join(reasons) + "\n",
                            headers={DROPPED_HEADER: str(lost)})

    def _note_clock(self, request: web.Request, identity) -> None:
        """The agent's clock against ours, from the time it says it sent the request (the headers
        arrive first: the link's one-way delay, under a second, is the error)."""
        text = request.headers.get(AGENT_TIME_HEADER)
        if text is None:
            return
        try:
            sent = float(text)
        except ValueError:
            return
        if math.isfinite(sent) and 0 < sent < 1e11:
            now = self.clock()
            self.stats.clock_skew[(identity.commune, identity.agent)] = sent - now
            self.stats.clock_noted[(identity.commune, identity.agent)] = now

    def _pushed(self, identity) -> None:
        self.stats.last_push[(identity.commune, identity.agent)] = self.clock()

    def _bearer(self, request: web.Request):
        """The identity of the request's token, None without a valid one; StateError when the
        token store cannot be read (the collector's fault, not the agent's)."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.credentials.authenticate(token.strip())
