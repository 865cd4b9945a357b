"""Running the collector: one process, or ``workers: N`` processes sharing the listen port.

With ``workers: 1`` (the default) the collector is one process and one asyncio loop, as always.
With more, a supervisor process forks N workers; each binds the listen address itself with
``SO_REUSEPORT`` and the kernel spreads new connections over them (Linux; elsewhere the collector
logs that and runs one process). Every worker is a whole collector (limits such as
``max_concurrent_requests`` and the stamped-series cache are per worker) and serves the same
routes; ``/metrics`` answers the figures of all of them (collector.figures), gathered at scrape
time over a Unix socket per worker in a private directory.

SIGTERM or SIGINT to the supervisor stops every worker cleanly (each finishes what it is doing, as
one process does) and the supervisor exits 0. A worker that dies otherwise stops the whole
service with exit code 1: its counters would be lost and the sums would go backwards, so the
service restarts as a whole (systemd ``Restart=always``) and its counters reset together. A
worker whose supervisor is killed stops too (Linux parent-death signal).

The event loop is uvloop's where it is installed (the ``collector`` extra, not on Windows):
the HTTP work of a write (two aiohttp exchanges) costs about a third less CPU on it.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
from typing import List, Optional

from aiohttp import web

from contract.shutdown import stop_on_signals
from collector.config import CollectorConfig
from collector.figures import SiblingsUnavailable, snapshot
from collector.server import Collector

log = logging.getLogger("collector")

SIBLING_TIMEOUT = 5.0   # seconds a scrape waits for the other workers' figures
STOP_TIMEOUT = 30.0     # seconds the supervisor gives the workers to stop before killing them


def reuse_port_supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


class Worker:
    """Which of ``count`` workers this process is, and where its siblings answer."""

    def __init__(self, index: int, count: int, directory: str):
        self.index, self.count, self.directory = index, count, directory

    def socket_path(self, index: int) -> str:
        return os.path.join(self.directory, f"worker-{index}.sock")

    async def serve_figures(self, collector: Collector):
        """Answer this worker's figures (JSON) to each connection on its socket."""
        async def answer(_reader, writer):
            try:
                writer.write(json.dumps(snapshot(collector.stats, collector.forwarder, collector.zalo)).encode())
                await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()

        return await asyncio.start_unix_server(answer, path=self.socket_path(self.index))

    async def siblings(self) -> List[dict]:
        """The other workers' figures; SiblingsUnavailable when one does not give them in time."""
        async def fetch(index: int) -> dict:
            reader, writer = await asyncio.open_unix_connection(self.socket_path(index))
            try:
                return json.loads(await reader.read())
            finally:
                writer.close()

        others = [i for i in range(self.count) if i != self.index]
        try:
            async with asyncio.timeout(SIBLING_TIMEOUT):
                return list(await asyncio.gather(*(fetch(i) for i in others)))
        except (OSError, TimeoutError, ValueError) as exc:
            raise SiblingsUnavailable(f"worker {self.index}: another worker did not give its figures "
                                      f"({type(exc).__name__}: {exc})") from None


def server_ssl(config: CollectorConfig) -> Optional[ssl.SSLContext]:
    if not config.web.tls_cert_file:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(config.web.tls_cert_file, config.web.tls_key_file)
    return ctx


async def serve(config: CollectorConfig, stop: asyncio.Event, worker: Optional[Worker] = None) -> None:
    from contract.listener import split_listen_address

    collector = Collector(config)
    runner = web.AppRunner(collector.app(), access_log=log if log.isEnabledFor(logging.DEBUG) else None,
                           auto_decompress=False, handle_signals=False)
    await runner.setup()
    host, port = split_listen_address(config.web.listen_address)
    figures = None
    try:
        if worker is not None:
            collector.siblings = worker.siblings
            figures = await worker.serve_figures(collector)
        site = web.TCPSite(runner, host or None, port, ssl_context=server_ssl(config), backlog=512,
                           reuse_port=worker is not None or None)
        await site.start()
        log.info("%slistening on %s (%s); upstreams: %s", f"worker {worker.index}: " if worker else "",
                 config.web.listen_address, "https" if config.web.tls_cert_file else "http",
                 ", ".join(c.name for c in collector.forwarder.clients))
        await stop.wait()
    finally:
        if figures is not None:
            figures.close()
        await runner.cleanup()
        log.info("%sstopped", f"worker {worker.index}: " if worker else "")


def _event_loop_factory():
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_one(config: CollectorConfig, worker: Optional[Worker] = None) -> int:
    """One collector process (alone, or one of the workers) until SIGTERM or SIGINT."""
    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await serve(config, stop, worker)

    try:
        with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
            runner.run(main())
    except OSError as exc:  # e.g. the address is in use
        log.error("cannot serve on %s: %s", config.web.listen_address, exc)
        return 1
    return 0


def run_collector(config: CollectorConfig) -> int:
    workers = config.workers
    if workers > 1 and not reuse_port_supported():
        log.warning("workers: %d needs SO_REUSEPORT (Linux); running one process", workers)
        workers = 1
    if workers == 1:
        return run_one(config)
    return supervise(config, workers)


def _worker_main(config: CollectorConfig, worker: Worker) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the supervisor's handlers are not ours
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _stop_with_parent()
    sys.exit(run_one(config, worker))


def _stop_with_parent() -> None:
    """SIGTERM this process when the supervisor dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the supervisor died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def supervise(config: CollectorConfig, count: int) -> int:
    """Fork ``count`` workers, wait, stop them all on SIGTERM/SIGINT (0) or when one dies (1)."""
    import multiprocessing
    import multiprocessing.connection

    ctx = multiprocessing.get_context("fork")
    directory = tempfile.mkdtemp(prefix="commune-collector-")
    stopping = []

    def on_signal(signum, _frame):
        stopping.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    procs = []
    code = 0
    try:
        for i in range(count):
            proc = ctx.Process(target=_worker_main, args=(config, Worker(i, count, directory)),
                               name=f"collector-worker-{i}")
            proc.start()
            procs.append(proc)
        log.info("%d workers (pids %s) share %s", count, " ".join(str(p.pid) for p in procs),
                 config.web.listen_address)
        while not stopping:
            multiprocessing.connection.wait([p.sentinel for p in procs], timeout=0.5)
            dead = [(i, p) for i, p in enumerate(procs) if p.exitcode is not None]
            if dead and not stopping:
                for i, p in dead:
                    log.error("worker %d (pid %d) exited with %s; stopping the collector", i, p.pid,
                              f"signal {-p.exitcode}" if p.exitcode < 0 else f"code {p.exitcode}")
                code = 1
                break
    finally:
        for p in procs:
            if p.exitcode is None:
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for i, p in enumerate(procs):
            p.join(max(0.0, deadline - time.monotonic()))
            if p.exitcode is None:
                log.error("worker %d (pid %d) did not stop within %gs; killing it", i, p.pid, STOP_TIMEOUT)
                p.kill()
                p.join()
        shutil.rmtree(directory, ignore_errors=True)
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stopping and any(p.exitcode != 0 for p in procs):
        code = 1
    log.info("stopped (%d workers)", count)
    return code


def setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
