"""The collector's HTTP server (aiohttp): remote-write ingest, enrollment, http_sd, /metrics.

    POST /api/v1/write    bearer token per agent; identity labels stamped; limits; forwarded
    POST /api/v1/enroll   {"key", "agent"[, "pull_address"]} -> {"token", "commune", "agent"}
    GET  /api/v1/sd       Prometheus http_sd targets of agents with a pull address
    GET  /metrics         the collector's own figures and the fleet inventory
    GET  /-/healthy       200 while the process serves
    GET  /-/ready         200 when every upstream answered its last request or check

Answers to ``/api/v1/write`` (the agent retries on 5xx and 429 only, and drops on other 4xx):

    204  every upstream accepted the batch
    400  malformed body, a series over a limit, every sample outside the accepted time range, or an
         upstream refused the data itself (400/422); samples outside the range in a request with
         others are dropped and counted (commune_collector_samples_dropped_total)
    401  no token or an unknown or revoked token
    413  body (or its decoded size) over the limit
    415  Content-Encoding other than snappy
    429  too many write requests in progress
    503  an upstream did not accept the batch (down, timeout, 5xx, 429, misconfigured auth)
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import platform
import ssl
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

from aiohttp import web

from agent.exposition import CONTENT_TYPE, render
from agent.remote_write import RemoteWriteError, encode
from agent.samples import Sample, sample
from agent.shutdown import stop_on_signals
from collector import __version__
from collector.config import CollectorConfig, load_fleet_file
from collector.ingest import LimitError, rewrite, snappy_announced_length
from collector.state import StateError, Store
from collector.upstream import Forwarder

log = logging.getLogger("collector")

MAX_ENROLL_BODY = 4096


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
        self.last_push: Dict[Tuple[str, str], float] = {}
        self.dropped: Dict[str, int] = {"too_old": 0, "in_future": 0}

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
        self.forwarder = Forwarder(config.upstreams)
        self.stats = Stats()
        self.inflight = 0
        self._fleet = None
        self._fleet_mtime: Optional[tuple] = None
        self._probe_task: Optional[asyncio.Task] = None
        self._users = {u: h.reveal().encode() for u, h in config.web.basic_auth_users.items()}
        self._auth_cache: Dict[str, bool] = {}
        self.store.refresh()  # fail at start, not at the first push, on an unreadable state file

    # ------------------------------------------------------------ application

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._measure], client_max_size=MAX_ENROLL_BODY)
        app.router.add_post("/api/v1/write", self.write, name="write")
        app.router.add_post("/api/v1/enroll", self.enroll, name="enroll")
        app.router.add_get("/api/v1/sd", self.http_sd, name="sd")
        app.router.add_get("/metrics", self.metrics, name="metrics")
        app.router.add_get("/-/healthy", self.healthy, name="health:healthy")
        app.router.add_get("/-/ready", self.ready, name="health:ready")
        app.router.add_get("/", self.landing, name="landing")
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _startup(self, _app) -> None:
        await self.forwarder.start()
        if self.config.upstream_check_interval > 0:
            self._probe_task = asyncio.ensure_future(self._probe_loop())

    async def _cleanup(self, _app) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            try:
                await self._probe_task
            except asyncio.CancelledError:
                pass
        await self.forwarder.close()

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
        identity = self._bearer(request)
        if identity is None:
            return self._text(401, "missing, unknown or revoked agent token", "unauthorized",
                              **{"WWW-Authenticate": 'Bearer realm="commune-collector"'})
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

    async def _write(self, request: web.Request, identity) -> web.Response:
        limits = self.config.limits
        body = await request.content.read(limits.max_body_size + 1)
        if len(body) > limits.max_body_size:
            return self._text(413, f"body is over limits.max_body_size ({limits.max_body_size})",
                              "body_too_large", Connection="close")
        self.stats.received_bytes += len(body)
        announced = snappy_announced_length(body)
        if announced is not None and announced > limits.max_decoded_size:
            return self._text(413, f"decoded body would be {announced} bytes, over limits.max_decoded_size "
                                   f"({limits.max_decoded_size})", "body_too_large")
        try:
            result = rewrite(body, limits, identity.commune, identity.agent, int(self.clock() * 1000))
        except RemoteWriteError as exc:
            return self._text(400, f"malformed remote-write request: {exc}", "malformed")
        except LimitError as exc:
            return self._text(exc.status, str(exc), "limits")
        except Exception as exc:  # a parser bug must not take the request down with a 500
            log.warning("decoding a write request of agent %s failed unexpectedly: %r", identity.agent, exc)
            return self._text(400, "malformed remote-write request", "malformed")
        samples = result.forwarded
        self.stats.samples_received += result.samples
        if result.too_old or result.in_future:
            self.stats.dropped["too_old"] += result.too_old
            self.stats.dropped["in_future"] += result.in_future
            log.warning("dropped %d samples of %s/%s older than limits.max_sample_age and %d more than "
                        "limits.max_clock_skew ahead", result.too_old, identity.commune, identity.agent,
                        result.in_future)
            if not samples:
                return self._text(400, f"all {result.samples} samples are outside the accepted time range "
                                       f"(older than limits.max_sample_age {_dur(limits.max_sample_age)}: "
                                       f"{result.too_old}, ahead of the collector's clock by more than "
                                       f"limits.max_clock_skew {_dur(limits.max_clock_skew)}: {result.in_future}); "
                                       "is the agent's clock right?", "out_of_range")
        if not samples:  # an empty request: nothing to forward
            self._pushed(identity)
            return web.Response(status=204)
        out = result.body
        outcomes = await self.forwarder.forward(out, samples)
        failed = [o for o in outcomes if o.kind == "unavailable"]
        refused = [o for o in outcomes if o.kind == "rejected"]
        if failed:
            for o in failed:
                log.warning("upstream %s did not take %d samples of %s/%s: %s %s", o.upstream, samples,
                            identity.commune, identity.agent, o.code, o.detail)
            what = "; ".join(f"{o.upstream}: {o.code} {o.detail}" for o in failed)
            return self._text(503, f"upstream unavailable, keep the batch and retry: {what}",
                              "upstream_unavailable", **{"Retry-After": "10"})
        if refused:
            for o in refused:
                log.warning("upstream %s refused %d samples of %s/%s: %s %s", o.upstream, samples,
                            identity.commune, identity.agent, o.code, o.detail)
            what = "; ".join(f"{o.upstream}: {o.code} {o.detail}" for o in refused)
            return self._text(400, f"upstream refused the data, retrying cannot help: {what}",
                              "upstream_rejected")
        self._pushed(identity)
        return web.Response(status=204)

    def _pushed(self, identity) -> None:
        self.stats.last_push[(identity.commune, identity.agent)] = self.clock()

    def _bearer(self, request: web.Request):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        try:
            return self.store.authenticate(token.strip())
        except StateError as exc:
            log.error("token store: %s", exc)
            return None

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
                or not isinstance(payload.get("pull_address", ""), str):
            self.stats.enrollment("bad_request")
            return self._json(400, {"error": 'expected JSON {"key": "...", "agent": "..."} '
                                             '(and optionally "pull_address": "host:port")'})
        try:
            from collector.state import check_address, check_name

            check_name("agent", payload["agent"])
            if payload.get("pull_address"):
                check_address(payload["pull_address"])
        except StateError as exc:
            self.stats.enrollment("bad_request")
            return self._json(400, {"error": str(exc)})
        try:
            record, token = await asyncio.get_running_loop().run_in_executor(
                None, lambda: self.store.enroll(payload["key"], payload["agent"], payload.get("pull_address", "")))
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

    def _basic_ok(self, request: web.Request) -> bool:
        if not self._users:
            return True
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        raw = header[6:].strip()
        cached = self._auth_cache.get(raw)
        if cached is not None:
            return cached
        try:
            user, _, password = base64.b64decode(raw, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self._users.get(user)
        ok = False
        if hashed is not None:
            import bcrypt

            try:
                ok = bcrypt.checkpw(password.encode(), hashed)
            except ValueError:
                ok = False
        if len(self._auth_cache) < 64:  # bcrypt is slow on purpose; remember recent answers
            self._auth_cache[raw] = ok
        return ok

    def _unauthorized(self) -> web.Response:
        return web.Response(status=401, text="unauthorized\n",
                            headers={"WWW-Authenticate": 'Basic realm="commune-collector"'})

    async def http_sd(self, request: web.Request) -> web.Response:
        if not self._basic_ok(request):
            return self._unauthorized()
        if not self.config.http_sd.enabled:
            return self._json(404, {"error": "http_sd is disabled on this collector"})
        return self._json(200, self.sd_targets())

    def sd_targets(self) -> List[dict]:
        sd = self.config.http_sd
        seen = set()
        groups = []
        for t in sorted(self.store.active_tokens(), key=lambda t: (t["commune"], t["agent"], t["id"])):
            address = t.get("pull_address")
            key = (t["commune"], t["agent"], address)
            if not address or key in seen:
                continue
            seen.add(key)
            labels = dict(sd.labels)
            labels.update({"commune": t["commune"], "agent": t["agent"], "__scheme__": sd.scheme})
            groups.append({"targets": [address], "labels": labels})
        return groups

    async def metrics(self, request: web.Request) -> web.Response:
        if not self._basic_ok(request):
            return self._unauthorized()
        body = render(self.samples)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def healthy(self, _request: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def ready(self, _request: web.Request) -> web.Response:
        if self.config.upstream_check_interval == 0 or self.forwarder.ready():
            return web.Response(text="OK\n")
        down = [c.name for c in self.forwarder.clients if not c.up]
        return web.Response(status=503, text="upstream not answering: " + ", ".join(down) + "\n")

    async def landing(self, _request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>commune-collector</title><h1>commune-collector</h1>"
                                 '<p><a href="metrics">Metrics</a> <a href="api/v1/sd">http_sd</a></p>',
                            content_type="text/html")

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
        for reason in ("unauthorized", "body_too_large", "malformed", "limits", "out_of_range",
                       "upstream_rejected", "upstream_unavailable"):
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
        for result in ("ok", "invalid_key", "bad_request"):
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
        fleet = self.fleet()
        if fleet is not None:
            from collector.fleet import fleet_samples

            out.extend(fleet_samples(fleet))
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
    from agent.config import split_listen_address

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
