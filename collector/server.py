"""The collector's HTTP server (aiohttp): remote-write ingest, enrollment, http_sd, /metrics.

    POST /api/v1/write    bearer token per agent; identity labels stamped; limits; forwarded
    POST /api/v1/enroll   {"key", "agent"[, "pull_address", "replace", "suffix"]} -> {"token", "commune", "agent"}
                          (409 when the name has a live token and not "replace": the key is kept)
    GET  /api/v1/sd       Prometheus http_sd targets of agents with a pull address
    GET  /api/v1/profile  [?role=ROLE] the agent's central profile (bearer token; collector/profiles.py)
    GET  /metrics         the collector's own figures and the fleet inventory
    GET  /-/healthy       200 while the process serves
    GET  /-/ready         200 when every upstream answered its last request or check
    GET  /runbooks[/<alert>]  the runbooks as web pages (the alerts' runbook_url), no auth
    POST /alertmanager/zalo/<recipients>  Alertmanager webhook -> Zalo OA messages (zalo.enabled)

Answers to ``/api/v1/write`` (the contract with the agent: data is deleted only for its own fault;
collector/README.md has the whole table):

    204  every upstream accepted every sample
    200  accepted, except samples that can never be: series that fail a check or a per-series
         limit, samples outside the accepted time range, series an upstream refuses (isolated by
         splitting); how many in the X-Commune-Dropped-Samples header, why in the body
    400  the body cannot be read (not snappy, not a WriteRequest), or none of its samples can be
         accepted; the body says why
    401  no token or an unknown or revoked token (the agent keeps its data)
    408  the body did not arrive whole within limits.body_timeout, or was cut short (retry)
    413  body, decoded size, series or samples over the per-request limits (the agent splits it)
    415  Content-Encoding other than snappy
    429  too many write requests in progress (retry)
    503  an upstream did not accept the batch (down, timeout, 5xx, 429, misconfigured auth), the
         token store is unreadable (/-/ready fails too), or a bug of ours (retry)
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import logging
import platform
import ssl
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import aiohttp
from aiohttp import web

from contract.basic_auth import BasicAuth
from contract.exposition import CONTENT_TYPE, render
from contract.remote_write import AGENT_TIME_HEADER, RemoteWriteError, encode
from contract.samples import Sample, sample
from contract.shutdown import stop_on_signals
from collector import __version__
from collector.config import CollectorConfig, load_fleet_file
from collector.credentials import Credentials
from collector.ingest import LimitError, rewrite, snappy_announced_length
from collector.state import NameTaken, StateError, StateUnreadable, Store, check_address, check_name
from contract.names import pull_address_problem
from collector.upstream import Forwarder

log = logging.getLogger("collector")

MAX_ENROLL_BODY = 4096
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


class Stats:
    """The collector's own figures, exported on /metrics through the metric catalog."""

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


class Collector:
    """The application: config, token store, forwarder and figures; ``app()`` builds the routes."""

    def __init__(self, config: CollectorConfig, clock: Callable[[], float] = time.time):
        self.config = config
        self.clock = clock
        self.store = Store(config.state.dir, clock=clock)
        self.credentials = Credentials(self.store, config.credentials.signing_key_file,
                                       config.credentials.revocation_file)
        self.forwarder = Forwarder(config.upstreams)
        self.stats = Stats()
        self.inflight = 0
        self._fleet = None
        self._fleet_mtime: Optional[tuple] = None
        from collector.calendar import DEFAULT_FILE as CALENDAR_FILE, load_calendar

        self._calendar_path = config.calendar_file or str(CALENDAR_FILE)
        self._calendar = load_calendar(self._calendar_path)  # a broken calendar stops the start
        self._calendar_mtime = self._file_version(self._calendar_path)
        self._probe_task: Optional[asyncio.Task] = None
        self._auth = BasicAuth({u: h.reveal() for u, h in config.web.basic_auth_users.items()})
        # one thread: junk passwords queue behind each other instead of taking every worker
        self._auth_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="basic-auth")
        self.credentials.check()  # fail at start, not at the first push, on unreadable state or keys
        from collector.runbooks import DEFAULT_FILE, Runbooks
        from collector.zalo import ZaloRelay

        self.runbooks = Runbooks(config.runbooks.file or DEFAULT_FILE) if config.runbooks.enabled else None
        self.zalo = ZaloRelay(config.zalo) if config.zalo.enabled else None
        from collector.profiles import ProfileStore

        self.profiles = ProfileStore(config.profiles.dir)  # no dir: the empty profile for everyone
        self._profiles_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="profiles")
        self._profiles_task: Optional[asyncio.Task] = None

    # ------------------------------------------------------------ application

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._measure], client_max_size=MAX_ENROLL_BODY)
        app.router.add_post("/api/v1/write", self.write, name="write")
        app.router.add_post("/api/v1/enroll", self.enroll, name="enroll")
        app.router.add_get("/api/v1/sd", self.http_sd, name="sd")
        app.router.add_get("/api/v1/profile", self.profile, name="profile")
        app.router.add_get("/metrics", self.metrics, name="metrics")
        app.router.add_get("/-/healthy", self.healthy, name="health:healthy")
        app.router.add_get("/-/ready", self.ready, name="health:ready")
        app.router.add_get("/", self.landing, name="landing")
        if self.runbooks is not None:
            app.router.add_get("/runbooks", self.runbook_page, name="runbooks")
            app.router.add_get("/runbooks/{anchor}", self.runbook_page, name="runbooks:page")
        if self.zalo is not None:
            app.router.add_post("/alertmanager/zalo/{recipients}", self.zalo.handle, name="zalo")
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _startup(self, _app) -> None:
        await self.forwarder.start()
        if self.zalo is not None:
            await self.zalo.start()
        if self.config.upstream_check_interval > 0:
            self._probe_task = asyncio.ensure_future(self._probe_loop())
        if self.config.profiles.dir:
            await asyncio.get_running_loop().run_in_executor(self._profiles_pool, self.profiles.refresh)
            self._profiles_task = asyncio.ensure_future(self.profiles.watch(float(self.config.profiles.check_interval)))

    async def _cleanup(self, _app) -> None:
        for task in (self._probe_task, self._profiles_task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._profiles_pool.shutdown(wait=False)
        await self.forwarder.close()
        if self.zalo is not None:
            await self.zalo.close()
        self._auth_pool.shutdown(wait=False)

    @web.middleware
    async def _measure(self, request: web.Request, handler):
        start = time.monotonic()
        route = request.match_info.route
        name = (getattr(route, "name", None) or "other").split(":")[0]  # handler label
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.stats.request(name, status, time.monotonic() - start)

    # ------------------------------------------------------------ write

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
        announced = snappy_announced_length(body)
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
            self.stats.clock_skew[(identity.commune, identity.agent)] = sent - self.clock()

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

    async def profile(self, request: web.Request) -> web.Response:
        """The agent's profile: commune from its token, role from the query (collector/profiles.py)."""
        try:
            identity = self._bearer(request)
        except StateError as exc:
            log.error("token store: %s", exc)
            return web.Response(status=503, text="the collector cannot read its token store\n",
                                headers={"Retry-After": "30"})
        if identity is None:
            return web.Response(status=401, text="missing, unknown or revoked agent token\n",
                                headers={"WWW-Authenticate": 'Bearer realm="commune-collector"'})
        status, body, headers = await asyncio.get_running_loop().run_in_executor(
            self._profiles_pool, self.profiles.answer, identity.commune, request.query.get("role", ""),
            request.headers.get("If-None-Match", ""))
        return web.Response(status=status, body=body.encode("utf-8") if status != 304 else None, headers=headers)

    # ------------------------------------------------------------ enrollment

    async def enroll(self, request: web.Request) -> web.Response:
        if not self.config.enrollment.enabled:
            return self._json(404, {"error": "enrollment is disabled on this collector"})
        try:
            payload = await request.json(loads=json.loads)
        except web.HTTPRequestEntityTooLarge:
            self.stats.enrollment("bad_request")
            return self._json(413, {"error": f"body over {MAX_ENROLL_BODY} bytes"})
        except (ValueError, UnicodeDecodeError):
            payload = None
        if not isinstance(payload, dict) or not isinstance(payload.get("key"), str) \
                or not isinstance(payload.get("agent"), str) \
                or not isinstance(payload.get("pull_address", ""), str) \
                or not isinstance(payload.get("replace", False), bool) \
                or not isinstance(payload.get("suffix", False), bool):
            self.stats.enrollment("bad_request")
            return self._json(400, {"error": 'expected JSON {"key": "...", "agent": "..."} '
                                             '(and optionally "pull_address": "host:port", "replace": true, '
                                             '"suffix": true)'})
        try:
            check_name("agent", payload["agent"])
            if payload.get("pull_address"):
                check_address(payload["pull_address"])
        except StateError as exc:
            self.stats.enrollment("bad_request")
            return self._json(400, {"error": str(exc)})
        try:
            record, token = await asyncio.get_running_loop().run_in_executor(
                None, lambda: self.store.enroll(payload["key"], payload["agent"], payload.get("pull_address", ""),
                                                replace=payload.get("replace", False),
                                                suffix=payload.get("suffix", False)))
        except StateUnreadable as exc:  # our fault: the agent keeps its key and tries later
            log.error("enrollment: token store: %s", exc)
            self.stats.enrollment("state_unreadable")
            return self._json(503, {"error": "the collector cannot read its token store; try again later"})
        except NameTaken as exc:  # the key is not spent: enroll again under another name, or replace
            self.stats.enrollment("conflict")
            return self._json(409, {"error": str(exc)})
        except StateError as exc:
            self.stats.enrollment("invalid_key")
            return self._json(403, {"error": str(exc)})
        self.stats.enrollment("ok")
        log.info("enrolled agent %s of commune %s (token %s)", record["agent"], record["commune"], record["id"])
        return self._json(200, {"token": token, "commune": record["commune"], "agent": record["agent"]})

    @staticmethod
    def _json(status: int, data) -> web.Response:
        return web.Response(status=status, text=json.dumps(data), content_type="application/json")

    # ------------------------------------------------------------ http_sd, metrics, health

    async def _basic_ok(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization")
        answer = self._auth.cached(header)
        if answer is None:  # bcrypt: one worker thread of its own, never the event loop
            answer = await asyncio.get_running_loop().run_in_executor(self._auth_pool, self._auth.check, header)
        return answer

    def _unauthorized(self) -> web.Response:
        return web.Response(status=401, text="unauthorized\n",
                            headers={"WWW-Authenticate": 'Basic realm="commune-collector"'})

    async def http_sd(self, request: web.Request) -> web.Response:
        if not await self._basic_ok(request):
            return self._unauthorized()
        if not self.config.http_sd.enabled:
            return self._json(404, {"error": "http_sd is disabled on this collector"})
        try:
            return self._json(200, self.sd_targets())
        except StateError as exc:  # our fault: Prometheus keeps its last targets and retries
            log.error("http_sd: token store: %s", exc)
            return self._json(503, {"error": "the collector cannot read its token store"})

    def sd_targets(self) -> List[dict]:
        sd = self.config.http_sd
        seen = set()
        groups = []
        for t in sorted(self.store.active_tokens(), key=lambda t: (t["commune"], t["agent"], t["id"])):
            address = t.get("pull_address")
            key = (t["commune"], t["agent"], address)
            if not address or key in seen:
                continue
            problem = pull_address_problem(address)
            if problem:  # written before addresses were checked, or by hand: never a target
                if t["id"] not in self.stats.bad_pull_addresses:
                    self.stats.bad_pull_addresses.add(t["id"])
                    log.warning("http_sd: token %s (commune %s agent %s) left out: %s", t["id"], t["commune"],
                                t["agent"], problem)
                continue
            seen.add(key)
            labels = dict(sd.labels)
            labels.update({"commune": t["commune"], "agent": t["agent"], "__scheme__": sd.scheme})
            groups.append({"targets": [address], "labels": labels})
        return groups

    async def metrics(self, request: web.Request) -> web.Response:
        if not await self._basic_ok(request):
            return self._unauthorized()
        body = render(self.samples)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def healthy(self, _request: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def ready(self, _request: web.Request) -> web.Response:
        try:
            self.credentials.check()
        except StateError as exc:
            return web.Response(status=503, text=f"token store unreadable: {exc}\n")
        if self.config.upstream_check_interval == 0 or self.forwarder.ready():
            return web.Response(text="OK\n")
        down = [c.name for c in self.forwarder.clients if not c.up]
        return web.Response(status=503, text="upstream not answering: " + ", ".join(down) + "\n")

    async def landing(self, _request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>commune-collector</title><h1>commune-collector</h1>"
                                 '<p><a href="metrics">Metrics</a> <a href="api/v1/sd">http_sd</a></p>',
                            content_type="text/html")

    async def runbook_page(self, request: web.Request) -> web.Response:
        anchor = request.match_info.get("anchor")
        try:
            page = self.runbooks.page(anchor.lower()) if anchor else self.runbooks.index()
        except OSError as exc:
            log.error("runbooks file %s: %s", self.runbooks.path, exc.strerror or exc)
            return web.Response(status=503, text="runbooks unavailable\n")
        if page is None:
            return web.Response(status=404, text=f"no runbook section {anchor!r}\n")
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    async def _probe_loop(self) -> None:
        """Send each upstream an empty write request now and then; its answer sets ``up``."""
        empty = encode([])
        while True:
            try:
                await self.forwarder.forward(empty, 0)
            except Exception as exc:  # never let the check loop die
                log.error("upstream check failed: %r", exc)
            await asyncio.sleep(float(self.config.upstream_check_interval))

    # ------------------------------------------------------------ /metrics content

    def fleet(self):
        path = self.config.fleet_file
        if not path:
            return None
        import os

        try:
            st = os.stat(path)
            mtime = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError as exc:
            log.error("fleet file %s: %s", path, exc.strerror)
            return self._fleet
        if mtime != self._fleet_mtime:
            try:
                self._fleet = load_fleet_file(path)
            except Exception as exc:  # keep serving the last good inventory
                log.error("fleet file %s not reloaded: %s", path, exc)
            self._fleet_mtime = mtime
        return self._fleet

    @staticmethod
    def _file_version(path: str) -> Optional[tuple]:
        import os

        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def calendar(self):
        """The working calendar, re-read when its file changes; the last good one otherwise."""
        from collector.calendar import CalendarError, load_calendar

        version = self._file_version(self._calendar_path)
        if version is not None and version != self._calendar_mtime:
            try:
                self._calendar = load_calendar(self._calendar_path)
            except CalendarError as exc:
                log.error("calendar not reloaded, keeping the last good one: %s", exc)
            self._calendar_mtime = version
        return self._calendar

    def samples(self) -> List[Sample]:
        st = self.stats
        out = [sample("commune_collector_build_info", 1, version=__version__,
                      python_version=platform.python_version())]
        for (handler, code), n in sorted(st.requests.items()):
            out.append(sample("commune_collector_requests_total", n, handler=handler, code=code))
        for handler, secs in sorted(st.request_seconds.items()):
            out.append(sample("commune_collector_request_duration_seconds_total", secs, handler=handler))
        out.append(sample("commune_collector_received_bytes_total", st.received_bytes))
        out.append(sample("commune_collector_samples_received_total", st.samples_received))
        for reason, n in sorted(st.dropped.items()):
            out.append(sample("commune_collector_samples_dropped_total", n, reason=reason))
        for reason in ("unauthorized", "body_too_large", "body_timeout", "malformed", "limits", "out_of_range",
                       "invalid", "upstream_rejected", "upstream_unavailable", "state_unreadable", "internal_error"):
            out.append(sample("commune_collector_rejected_requests_total", st.rejected.get(reason, 0),
                              reason=reason))
        for c in self.forwarder.clients:
            out.append(sample("commune_collector_samples_forwarded_total", c.samples_forwarded, upstream=c.name))
            for code, n in sorted(c.requests.items()):
                out.append(sample("commune_collector_upstream_requests_total", n, upstream=c.name, code=code))
            out.append(sample("commune_collector_upstream_errors_total", c.errors, upstream=c.name))
            out.append(sample("commune_collector_upstream_duration_seconds_total", c.seconds, upstream=c.name))
            out.append(sample("commune_collector_upstream_sent_bytes_total", c.sent_bytes, upstream=c.name))
            out.append(sample("commune_collector_upstream_up", 1 if c.up else 0, upstream=c.name))
        for result in ("ok", "invalid_key", "bad_request", "conflict", "state_unreadable"):
            out.append(sample("commune_collector_enrollments_total", st.enrollments.get(result, 0), result=result))
        try:
            tokens = self.store.active_tokens()
        except StateError as exc:
            log.error("token store: %s", exc)
            tokens = []
        out.append(sample("commune_collector_agent_tokens", len(tokens)))
        for commune, agent in sorted({(t["commune"], t["agent"]) for t in tokens}):
            out.append(sample("commune_collector_agent_info", 1, commune=commune, agent=agent))
        for (commune, agent), ts in sorted(st.last_push.items()):
            out.append(sample("commune_agent_last_push_timestamp_seconds", ts, commune=commune, agent=agent))
        for (commune, agent), skew in sorted(st.clock_skew.items()):
            out.append(sample("commune_agent_clock_skew_seconds", round(skew, 3), commune=commune, agent=agent))
        for (commune, agent, reason), n in sorted(st.agent_dropped.items()):
            out.append(sample("commune_collector_agent_samples_dropped_total", n, commune=commune, agent=agent,
                              reason=reason))
        fleet = self.fleet()
        from collector.fleet import Defaults, default_samples, fleet_samples

        out.extend(fleet_samples(fleet) if fleet is not None else default_samples(Defaults()))
        communes = {t["commune"] for t in tokens} | {c for c, _ in st.last_push}
        if fleet is not None:
            communes |= {c.code for c in fleet.communes}
        out.extend(self.calendar().samples(communes, self.clock()))
        if self.zalo is not None:
            out.extend(self.zalo.samples())
        out.extend(self.profiles.samples())
        return out


# ---------------------------------------------------------------- running it

def server_ssl(config: CollectorConfig) -> Optional[ssl.SSLContext]:
    if not config.web.tls_cert_file:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(config.web.tls_cert_file, config.web.tls_key_file)
    return ctx


async def serve(config: CollectorConfig, stop: asyncio.Event) -> None:
    from contract.listener import split_listen_address

    collector = Collector(config)
    runner = web.AppRunner(collector.app(), access_log=log if log.isEnabledFor(logging.DEBUG) else None,
                           auto_decompress=False, handle_signals=False)
    await runner.setup()
    host, port = split_listen_address(config.web.listen_address)
    site = web.TCPSite(runner, host or None, port, ssl_context=server_ssl(config), backlog=512)
    await site.start()
    log.info("listening on %s (%s); upstreams: %s", config.web.listen_address,
             "https" if config.web.tls_cert_file else "http", ", ".join(c.name for c in collector.forwarder.clients))
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        log.info("stopped")


def run_collector(config: CollectorConfig) -> int:
    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await serve(config, stop)

    try:
        asyncio.run(main())
    except OSError as exc:  # e.g. the address is in use
        log.error("cannot serve on %s: %s", config.web.listen_address, exc)
        return 1
    return 0


def setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
