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
import logging
import time
from typing import Awaitable, Callable, List, Optional

from aiohttp import web

from contract.basic_auth import BasicAuth
from contract.exposition import CONTENT_TYPE, render
from contract.remote_write import encode
from contract.samples import Sample, sample
from collector.config import CollectorConfig, load_fleet_file
from collector.credentials import Credentials
from collector.figures import SiblingsUnavailable, Stats
from collector.state import NameTaken, StateError, StateUnreadable, Store, check_address, check_name
from contract.names import pull_address_problem
from collector.upstream import Forwarder
from collector.write_path import WritePath

log = logging.getLogger("collector")

MAX_ENROLL_BODY = 4096
class Collector(WritePath):
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
        # with several workers (collector.workers): the other workers' figures, for /metrics
        self.siblings: Optional[Callable[[], Awaitable[List[dict]]]] = None
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

    # ------------------------------------------------------------ agent profiles

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
        if self.siblings is None:
            body = render(self.samples)
        else:  # one of several workers: the figures of all of them (collector.figures)
            try:
                snapshots = await self.siblings()
            except SiblingsUnavailable as exc:
                log.error("/metrics: %s", exc)
                return web.Response(status=503, text=f"{exc}; scrape again\n")
            body = render(lambda: self.merged_samples(snapshots))
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
        """/metrics of this process alone (one worker)."""
        return self.merged_samples(None)

    def merged_samples(self, siblings) -> List[Sample]:
        """/metrics of the service: this process' figures, merged with the ``siblings``' snapshots
        (collector.figures) when there are several workers."""
        from collector.figures import build_info, merge, process_samples, snapshot

        if siblings is None:
            own = process_samples(self.stats, self.forwarder, self.zalo)
        else:
            own = merge([snapshot(self.stats, self.forwarder, self.zalo), *siblings])
        pushed = {s.labels["commune"] for s in own if s.name == "commune_agent_last_push_timestamp_seconds"}
        out = [build_info(), *own]
        try:
            tokens = self.store.active_tokens()
        except StateError as exc:
            log.error("token store: %s", exc)
            tokens = []
        out.append(sample("commune_collector_agent_tokens", len(tokens)))
        for commune, agent in sorted({(t["commune"], t["agent"]) for t in tokens}):
            out.append(sample("commune_collector_agent_info", 1, commune=commune, agent=agent))
        fleet = self.fleet()
        from collector.fleet import Defaults, default_samples, fleet_samples

        out.extend(fleet_samples(fleet) if fleet is not None else default_samples(Defaults()))
        communes = {t["commune"] for t in tokens} | pushed
        if fleet is not None:
            communes |= {c.code for c in fleet.communes}
        out.extend(self.calendar().samples(communes, self.clock()))
        out.extend(self.profiles.samples())
        return out
