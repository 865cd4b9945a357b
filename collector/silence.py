"""``commune-collector silence add|list|expire``: maintenance windows, as Alertmanager silences.

    commune-collector silence add --commune 09667 [--device pc-01 | --agent pc-01] \\
        --until 2026-12-12T17:00 --reason "office moves" [--by NAME] [--alertmanager URL]
    commune-collector silence list [--all] [--alertmanager URL]
    commune-collector silence expire ID [--alertmanager URL]

A maintenance window is an ordinary Alertmanager silence (API v2), so Alertmanager's own UI and
amtool see and edit it too; nothing is kept here. Every alert of the project carries ``commune``,
device alerts also ``device`` (inventory devices) or ``agent`` (the PC): the silence matches those
labels exactly. ``--until`` is a duration from now (``4h``, ``3d``) or a date and time in Vietnam
time (``2026-12-12T17:00``; an explicit offset such as ``+00:00`` is honoured). Silences made here
are marked in their comment with :data:`MARK`, so ``list`` shows them apart from hand-made ones.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Dict, List, Optional

VN = dt.timezone(dt.timedelta(hours=7), "ICT")
MARK = "[commune-monitor] "
MAX_WINDOW = 90 * 86400  # a longer "maintenance" is a device to take out of the fleet file


class SilenceError(Exception):
    """One line the operator can act on."""


def parse_until(text: str, now: float) -> float:
    """``4h`` / ``3d`` from ``now``, or an ISO date-time (Vietnam time unless it has an offset)."""
    from contract.schema import parse_duration

    text = text.strip()
    try:
        return now + float(parse_duration(text))
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise SilenceError(f"--until: expected a duration (4h, 3d) or a date and time such as "
                           f"2026-12-12T17:00 (Vietnam time), got {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=VN)
    return when.timestamp()


def matchers(commune: str, device: Optional[str] = None, agent: Optional[str] = None) -> List[dict]:
    from collector.state import check_name, StateError

    try:
        check_name("commune", commune)
        if agent:
            check_name("agent", agent)
    except StateError as exc:
        raise SilenceError(str(exc)) from None
    out = [{"name": "commune", "value": commune, "isRegex": False, "isEqual": True}]
    if device:
        out.append({"name": "device", "value": device, "isRegex": False, "isEqual": True})
    if agent:
        out.append({"name": "agent", "value": agent, "isRegex": False, "isEqual": True})
    return out


def silence_body(commune: str, until: float, reason: str, by: str, now: float,
                 device: Optional[str] = None, agent: Optional[str] = None) -> Dict[str, object]:
    """The body of POST /api/v2/silences."""
    if not reason.strip():
        raise SilenceError("--reason: say why (it is shown to whoever sees the muted alerts)")
    if until <= now:
        raise SilenceError(f"--until: {_vn(until)} is not in the future")
    if until - now > MAX_WINDOW:
        raise SilenceError(f"--until: at most {MAX_WINDOW // 86400} days ahead; a device out for longer "
                           "belongs out of the fleet file")
    return {"matchers": matchers(commune, device, agent),
            "startsAt": _iso(now), "endsAt": _iso(until),
            "createdBy": by, "comment": MARK + reason.strip()}


def describe(s: dict) -> List[str]:
    """ID, state, ends, what it matches, who and why: one table row."""
    match = " ".join(f"{m['name']}{'=' if m.get('isEqual', True) else '!='}{'~' if m.get('isRegex') else ''}"
                     f"{m['value']}" for m in s.get("matchers", []))
    comment = s.get("comment", "")
    ours = comment.startswith(MARK)
    return [s.get("id", ""), s.get("status", {}).get("state", ""), _vn(_parse_iso(s.get("endsAt", ""))),
            match, s.get("createdBy", ""), (comment[len(MARK):] if ours else comment) + ("" if ours else " (by hand)")]


class Alertmanager:
    def __init__(self, url: str, timeout: float = 15.0):
        if not url.startswith(("http://", "https://")):
            raise SilenceError(f"--alertmanager must be an http(s) URL, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Optional[dict] = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                text = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace").strip()[:300]
            raise SilenceError(f"Alertmanager at {self.url} answered {exc.code} to {method} {path}"
                               + (f": {detail}" if detail else "")) from None
        except (urllib.error.URLError, OSError) as exc:
            raise SilenceError(f"cannot reach Alertmanager at {self.url}: {getattr(exc, 'reason', exc)}") from None
        try:
            return json.loads(text) if text.strip() else None
        except ValueError:
            raise SilenceError(f"{self.url} did not answer with JSON: is it an Alertmanager URL?") from None

    def add(self, body: dict) -> str:
        return self._call("POST", "/api/v2/silences", body)["silenceID"]

    def list(self) -> List[dict]:
        return self._call("GET", "/api/v2/silences") or []

    def expire(self, silence_id: str) -> None:
        self._call("DELETE", "/api/v2/silence/" + urllib.parse.quote(silence_id, safe=""))


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_iso(text: str) -> float:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _vn(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, VN).strftime("%Y-%m-%d %H:%M") + " ICT"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="commune-collector silence",
                                description="Maintenance windows: mute a commune's or a device's alerts in "
                                            "Alertmanager until a time, with a reason.")
    p.add_argument("--alertmanager", default=os.environ.get("COMMUNE_ALERTMANAGER_URL", "http://127.0.0.1:9093"),
                   help="Alertmanager base URL (default: $COMMUNE_ALERTMANAGER_URL or http://127.0.0.1:9093)")
    sub = p.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="mute alerts of a commune, or of one device or agent in it")
    add.add_argument("--commune", required=True, help="commune code")
    which = add.add_mutually_exclusive_group()
    which.add_argument("--device", help="inventory device id (printers, routers, UPS, PCs)")
    which.add_argument("--agent", help="agent name (the PC's own alerts: silent, disk, clock ...)")
    add.add_argument("--until", required=True, help="4h, 3d, or 2026-12-12T17:00 (Vietnam time)")
    add.add_argument("--reason", required=True, help="why: shown with the silence")
    add.add_argument("--by", default=os.environ.get("USER") or "commune-collector", help="who (default: $USER)")
    lst = sub.add_parser("list", help="silences in force and pending (--all: expired too)")
    lst.add_argument("--all", action="store_true")
    exp = sub.add_parser("expire", help="end a silence now")
    exp.add_argument("id")
    return p


def main(argv: List[str]) -> int:
    args = parser().parse_args(argv)
    now = time.time()
    try:
        am = Alertmanager(args.alertmanager)
        if args.action == "add":
            body = silence_body(args.commune, parse_until(args.until, now), args.reason, args.by, now,
                                args.device, args.agent)
            sid = am.add(body)
            what = " ".join(f"{m['name']}={m['value']}" for m in body["matchers"])
            print(f"silence {sid}: alerts of {what} muted until {_vn(_parse_iso(body['endsAt']))}")
        elif args.action == "list":
            rows = [s for s in am.list() if args.all or s.get("status", {}).get("state") != "expired"]
            rows.sort(key=lambda s: s.get("endsAt", ""))
            table = [["ID", "STATE", "ENDS", "MATCHES", "BY", "REASON"]] + [describe(s) for s in rows]
            widths = [max(len(r[i]) for r in table) for i in range(5)]
            for r in table:
                print("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5])
        else:
            am.expire(args.id)
            print(f"silence {args.id} expired")
    except SilenceError as exc:
        print(f"commune-collector silence {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0
