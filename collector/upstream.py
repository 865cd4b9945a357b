"""Forwarding remote-write bodies to the configured upstreams, and what each answer means.

Every accepted write goes to every upstream at once. The agent is told 2xx only when all of them
accepted it (at-least-once: on any other outcome it keeps the batch and sends it again, and
Prometheus and VictoriaMetrics take an identical duplicate sample silently).

How an upstream answer is classed (see :func:`classify`):

- ``ok``: 2xx.
- ``rejected``: 400 or 422, the receiver refuses the data itself (a sample older than its
  out-of-order window, a duplicate timestamp with a different value, an invalid series); also
  Prometheus' 500 "too old sample". Prometheus refuses a whole request for one such sample, so
  :meth:`Forwarder.deliver` isolates it: the request is split in halves, and halves again, down to
  the series the receiver refuses (at most :data:`MAX_SPLIT_REQUESTS` more requests per write);
  only those are dropped and counted, the rest is delivered.
- ``unavailable``: no answer (refused, reset, timeout), 5xx, 429, and the 4xx that mean the
  collector is misconfigured rather than the data bad (401, 403, 404, 405, 413, ...). The agent is
  answered 503 and keeps the batch until the upstream or its configuration is fixed.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Dict, List, NamedTuple, Optional

import aiohttp

from contract.remote_write import HEADERS
from collector.config import Upstream
from collector.ingest import join

log = logging.getLogger(__name__)

REJECTED_CODES = (400, 422)
# Prometheus 2.42 answers 500 "too old sample" for a sample older than its out-of-order window:
# that can never succeed later, so it counts as a refusal of the data, not an outage.
REJECTED_5XX_TEXTS = ("too old sample",)
MAX_ERROR_TEXT = 300
# Extra requests one upstream may be sent to isolate the series it refuses in one write: enough to
# find a handful among thousands (each costs about 2 * log2(series)); beyond it the pieces still
# refused are dropped as a whole.
MAX_SPLIT_REQUESTS = 64


class Outcome(NamedTuple):
    upstream: str
    kind: str          # ok | rejected | unavailable
    code: str          # HTTP status, or "error" when no answer came
    detail: str        # the upstream's error text or the connection error, for logs and the agent
    seconds: float


def classify(status: int, text: str = "") -> str:
    if 200 <= status < 300:
        return "ok"
    if status in REJECTED_CODES:
        return "rejected"
    if status >= 500 and any(t in text for t in REJECTED_5XX_TEXTS):
        return "rejected"
    return "unavailable"


class Delivery(NamedTuple):
    """What became of one write at one upstream."""

    upstream: str
    unavailable: Optional[Outcome]  # set when the upstream did not take it: the agent must retry
    dropped: int                    # samples the upstream refused for themselves
    refused: List[Outcome]          # its answers for those


class UpstreamClient:
    """One upstream: its URL, auth, TLS and the figures the collector exports about it."""

    def __init__(self, cfg: Upstream):
        self.cfg = cfg
        self.name = cfg.name
        self.headers = {name: value.reveal() for name, value in cfg.headers.items()}  # tenant etc.
        self.headers.update(HEADERS)
        self.headers["User-Agent"] = "commune-collector"
        self.auth: Optional[aiohttp.BasicAuth] = None
        if cfg.bearer_token is not None:
            self.headers["Authorization"] = "Bearer " + cfg.bearer_token.reveal()
        elif cfg.basic_auth is not None:
            self.auth = aiohttp.BasicAuth(cfg.basic_auth.username, cfg.basic_auth.password.reveal())
        self.ssl: object = None
        if cfg.url.startswith("https:"):
            ctx = ssl.create_default_context(cafile=cfg.tls_ca_file or None)
            if cfg.tls_insecure_skip_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self.ssl = ctx
        self.timeout = aiohttp.ClientTimeout(total=float(cfg.timeout))
        # figures for /metrics
        self.requests: Dict[str, int] = {}
        self.errors = 0
        self.seconds = 0.0
        self.sent_bytes = 0
        self.samples_forwarded = 0
        self.up: Optional[bool] = None  # None until the first answer or failure

    async def send(self, session: aiohttp.ClientSession, body: bytes, samples: int = 0) -> Outcome:
        start = time.monotonic()
        try:
            async with session.post(self.cfg.url, data=body, headers=self.headers, auth=self.auth,
                                    ssl=self.ssl, timeout=self.timeout, allow_redirects=False) as resp:
                text = ""
                if not 200 <= resp.status < 300:
                    raw = await resp.content.read(MAX_ERROR_TEXT)
                    text = raw.decode("utf-8", "replace").strip()
                else:
                    await resp.read()
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            seconds = time.monotonic() - start
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self._record("error", seconds, len(body), ok=False, reachable=False)
            return Outcome(self.name, "unavailable", "error", detail, seconds)
        seconds = time.monotonic() - start
        kind = classify(status, text)
        self._record(str(status), seconds, len(body), ok=kind == "ok", reachable=status < 500)
        if kind == "ok":
            self.samples_forwarded += samples
        return Outcome(self.name, kind, str(status), text or f"HTTP {status}", seconds)

    def _record(self, code: str, seconds: float, nbytes: int, ok: bool, reachable: bool) -> None:
        self.requests[code] = self.requests.get(code, 0) + 1
        self.seconds += seconds
        self.sent_bytes += nbytes
        if not ok:
            self.errors += 1
        self.up = reachable


class Forwarder:
    """All upstreams behind one HTTP client session."""

    def __init__(self, upstreams: List[Upstream]):
        self.clients = [UpstreamClient(u) for u in upstreams]
        self.session: Optional[aiohttp.ClientSession] = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=32, enable_cleanup_closed=True)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def forward(self, body: bytes, samples: int) -> List[Outcome]:
        assert self.session is not None, "Forwarder.start() was not awaited"
        return list(await asyncio.gather(*(c.send(self.session, body, samples) for c in self.clients)))

    async def deliver(self, parts: List[bytes], counts: List[int]) -> List["Delivery"]:
        """Send the series ``parts`` (fragments of one WriteRequest, ``counts`` samples each) to every
        upstream; where one refuses the data, isolate and drop only what it refuses."""
        assert self.session is not None, "Forwarder.start() was not awaited"
        return list(await asyncio.gather(*(self._deliver(c, parts, counts) for c in self.clients)))

    async def _deliver(self, client: "UpstreamClient", parts: List[bytes], counts: List[int]) -> "Delivery":
        budget = MAX_SPLIT_REQUESTS
        refused: List[Outcome] = []
        dropped = 0
        pending = [(0, len(parts))]  # ranges of parts still to deliver, in order
        while pending:
            lo, hi = pending.pop(0)
            n = sum(counts[lo:hi])
            outcome = await client.send(self.session, join(parts[lo:hi]), n)
            if outcome.kind == "unavailable":
                return Delivery(client.name, outcome, dropped, refused)
            if outcome.kind == "ok":
                continue
            if hi - lo > 1 and budget >= 2:
                budget -= 2
                mid = (lo + hi) // 2
                pending[:0] = [(lo, mid), (mid, hi)]
                continue
            dropped += n
            refused.append(outcome)
        return Delivery(client.name, None, dropped, refused)

    def ready(self) -> bool:
        return all(c.up for c in self.clients)
