"""The Alertmanager side of the alert replay bench: the shipped configuration with its timings
compressed, a loopback webhook that counts what it is sent, and a driver that posts the replayed
alerts to /api/v2/alerts in compressed real time, as Prometheus' notifier would.

Compression: simulated time runs ``factor`` times faster than the wall clock, from a common origin
(:class:`Clock`). Every interval of alertmanager.yml (group_wait, group_interval, repeat_interval,
resolve_timeout) is divided by ``factor`` (to whole milliseconds, at least 1 ms; group_wait at
least 250 ms, see :func:`compressed_config`); routes,
matchers, grouping, inhibitions and send_resolved are the shipped ones. Every receiver is replaced
by a webhook to the bench (path = receiver name), so the count is per receiver as the routes say.

What differs from a live Prometheus, on purpose: firing alerts are re-posted every
``keepalive`` wall seconds with ``endsAt`` a minute of wall time ahead (Prometheus re-sends every
``--rules.alert.resend-delay`` with ``endsAt`` 4 evaluation intervals ahead, which compressed would be
milliseconds and would expire alerts on any scheduling hiccup); a resolved alert is posted once with
``endsAt`` = its resolution instant.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List

import yaml

from contract.schema import parse_duration

TIMINGS = ("group_wait", "group_interval", "repeat_interval")


class Clock:
    """Simulated instant <-> wall clock."""

    def __init__(self, sim_origin: float, factor: float):
        self.sim_origin, self.factor, self.wall_origin = sim_origin, factor, time.time()

    def wall(self, sim: float) -> float:
        return self.wall_origin + (sim - self.sim_origin) / self.factor

    def sim(self, wall: float) -> float:
        return self.sim_origin + (wall - self.wall_origin) * self.factor

    def sleep_until(self, sim: float) -> None:
        delay = self.wall(sim) - time.time()
        if delay > 0:
            time.sleep(delay)


def scaled(seconds: float, factor: float) -> str:
    return f"{max(1, round(seconds * 1000 / factor))}ms"


MIN_GROUP_WAIT = 0.25  # wall seconds; see compressed_config


def compressed_config(shipped: Path, hook_url: str, factor: float, min_group_wait: float = MIN_GROUP_WAIT) -> dict:
    """alertmanager.yml with its intervals divided by ``factor`` and every receiver a webhook.

    group_wait is at least ``min_group_wait`` wall seconds: Alertmanager's dispatcher and its
    inhibitor each learn of a new alert in their own goroutine, and a group flushed a few
    milliseconds after the alerts arrive (10 s compressed 4320 times) can go out before the
    inhibitor has seen the alert that inhibits it; on this shared 2-core machine that happened
    (an AgentSilent notified alongside the CommuneOffline posted in the same request). Live, with
    group_wait 10-30 s, it cannot. A longer wait only delays first notifications."""
    config = yaml.safe_load(shipped.read_text(encoding="utf-8"))

    def walk(route: dict) -> None:
        for key in TIMINGS:
            if key in route:
                seconds = float(parse_duration(route[key])) / factor
                if key == "group_wait":
                    seconds = max(seconds, min_group_wait)
                route[key] = scaled(seconds * factor, factor)
        for child in route.get("routes", []):
            walk(child)

    walk(config["route"])
    timeout = float(parse_duration(config.get("global", {}).get("resolve_timeout", "5m")))
    config["global"] = {"resolve_timeout": scaled(timeout, factor)}
    config["templates"] = [str(t) for t in shipped.parent.glob("*.tmpl")]
    receivers = []
    for r in config["receivers"]:
        configs = [c for key, value in r.items() if key.endswith("_configs") for c in value]
        resolved = any(c.get("send_resolved", key_default(r)) for c in configs)
        receivers.append({"name": r["name"], "webhook_configs": [
            {"url": f"{hook_url}/{r['name']}", "send_resolved": bool(resolved)}]})
    config["receivers"] = receivers
    return config


def key_default(receiver: dict) -> bool:
    # Alertmanager's defaults: send_resolved true for webhook, false for email and telegram
    return "webhook_configs" in receiver


def routes_test(config_file: Path, labels: Dict[str, str]) -> List[str]:
    """The receivers amtool says this label set goes to, in order."""
    args = ["amtool", "config", "routes", "test", f"--config.file={config_file}"]
    args += [f"{k}={v}" for k, v in sorted(labels.items())]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"amtool config routes test: {done.stderr.strip()[-400:]}")
    return [r.strip() for r in done.stdout.strip().split(",") if r.strip()]


class Counter:
    """A webhook on loopback: every notification with its receiver and the simulated instant."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.received: List[dict] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with hook.lock:
                    hook.received.append({"receiver": self.path.strip("/"), "sim": hook.clock.sim(time.time()),
                                          "status": body["status"], "group": body.get("groupLabels", {}),
                                          "alerts": body["alerts"]})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def iso(wall: float) -> str:
    return dt.datetime.fromtimestamp(wall, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Driver:
    """Posts alert states to Alertmanager at their compressed instants."""

    def __init__(self, am_url: str, clock: Clock, keepalive: float = 2.0, hold: float = 60.0):
        self.am_url, self.clock, self.keepalive, self.hold = am_url.rstrip("/"), clock, keepalive, hold
        self.firing: Dict[tuple, dict] = {}
        self.posts = 0

    def post(self, alerts: List[dict]) -> None:
        if not alerts:
            return
        req = urllib.request.Request(f"{self.am_url}/api/v2/alerts", data=json.dumps(alerts).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
        self.posts += 1

    def _alert(self, labels: dict, annotations: dict, starts: float, ends: float) -> dict:
        return {"labels": labels, "annotations": annotations, "startsAt": iso(starts), "endsAt": iso(ends),
                "generatorURL": "http://replay/"}

    def fire(self, labels: dict, annotations: dict, active_at: float) -> dict:
        alert = self._alert(labels, annotations, self.clock.wall(active_at), time.time() + self.hold)
        self.firing[tuple(sorted(labels.items()))] = alert
        return alert

    def resolve(self, labels: dict, annotations: dict, active_at: float, resolved_at: float) -> dict:
        self.firing.pop(tuple(sorted(labels.items())), None)
        return self._alert(labels, annotations, self.clock.wall(active_at), self.clock.wall(resolved_at))

    def refresh(self) -> None:
        ends = iso(time.time() + self.hold)
        for alert in self.firing.values():
            alert["endsAt"] = ends
        self.post(list(self.firing.values()))

    def run(self, events: List[tuple], until: float) -> None:
        """events: (sim instant, order, callable returning alerts to post) in any order."""
        last_refresh = time.time()
        for when, _, action in sorted(events, key=lambda e: (e[0], e[1])):
            while self.clock.wall(when) - time.time() > self.keepalive:
                time.sleep(max(0.0, last_refresh + self.keepalive - time.time()))
                self.refresh()
                last_refresh = time.time()
            self.clock.sleep_until(when)
            self.post(action() or [])
            if time.time() - last_refresh > self.keepalive:
                self.refresh()
                last_refresh = time.time()
        while self.clock.wall(until) > time.time():
            time.sleep(min(self.keepalive, max(0.0, self.clock.wall(until) - time.time())))
            self.refresh()


def silence_add(am_url: str, clock: Clock, commune: str, start: float, end: float, reason: str) -> str:
    """``commune-collector silence add`` (the real CLI), ``--until`` the compressed end as an
    absolute UTC time; the silence starts when the CLI makes it."""
    until = dt.datetime.fromtimestamp(clock.wall(end), dt.timezone.utc).isoformat(timespec="milliseconds")
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run([sys.executable, "-m", "collector", "silence", "--alertmanager", am_url, "add",
                           "--commune", commune, "--until", until, "--reason", reason, "--by", "alert-replay"],
                          capture_output=True, text=True, timeout=60, env=env, cwd=str(repo))
    if done.returncode != 0:
        raise RuntimeError(f"commune-collector silence add: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()
