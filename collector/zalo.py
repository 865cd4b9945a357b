"""Alertmanager -> Zalo Official Account: a webhook receiver hosted by the collector.

Alertmanager has no Zalo notifier. Its webhook receivers post here instead
(``POST /alertmanager/zalo/<recipients>``, bearer token ``zalo.webhook_token_file``), and each Zalo
user id of that recipients group gets one text message through the OA API:

    POST <zalo.api_url>/v3.0/oa/message/cs
    access_token: <the OA access token, read from zalo.access_token_file>
    {"recipient": {"user_id": "..."}, "message": {"text": "..."}}
    -> 200 {"error": 0, "message": "Success", "data": {"message_id": "...", "user_id": "..."}}

The text is the Vietnamese one of ``collector/alertmanager/commune.tmpl`` (``commune.text``) in
plain text, cut to Zalo's 2,000 characters. Answers to Alertmanager: 200 when every recipient got
the message (or the API refused it for good: an unknown user, a message it will never take;
counted, logged, not retried); 503 when a recipient did not get it for a reason that may pass
(the API unreachable, slow, 429 or 5xx after ``max_attempts``, the token unreadable or refused),
so Alertmanager tries again; recipients who already got that notification within
``DEDUPE_SECONDS`` are not sent it twice. 401 for a wrong bearer token, 404 for an unknown
recipients group, 400 for a body that is not Alertmanager's webhook JSON.

Token: the OA access token lives about 25 hours. With ``zalo.refresh``, a token the API refuses is
renewed once with the refresh token (``POST <oauth_url>/v4/oa/access_token``, header
``secret_key``, form ``app_id``, ``grant_type=refresh_token``, ``refresh_token``) and both files
are rewritten; without it another tool must keep ``access_token_file`` fresh (it is read at every
message). Tokens never reach logs, answers or /metrics.

Failures are counted in ``commune_collector_zalo_failures_total{recipients,reason}`` (reasons in
``REASONS``); the ZaloNotificationsFailing alert fires on them and goes out by e-mail.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import time
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from typing import Callable, Dict, List, Optional, Tuple

from contract.samples import Sample, sample
from collector.config import ZaloSection

log = logging.getLogger("collector.zalo")

MESSAGE_PATH = "/v3.0/oa/message/cs"
REFRESH_PATH = "/v4/oa/access_token"
MAX_TEXT = 2000  # characters Zalo accepts in one text message
DEDUPE_SECONDS = 600  # a notification Alertmanager retries within this is not sent twice
MAX_BODY = 1 << 20
# Error codes of the OA API meaning the access token is invalid or expired (public error tables of
# the OA API; not checked against a live account here).
TOKEN_ERRORS = frozenset({-124, -201, -216})
REASONS = ("bad_request", "unauthorized", "token_unreadable", "token_rejected", "refresh_failed",
           "api_error", "http_error", "unavailable")
RETRYABLE = frozenset({"token_unreadable", "token_rejected", "refresh_failed", "unavailable"})
VIETNAM = timezone(timedelta(hours=7))
SEVERITY_VI = {"critical": "NGHIÊM TRỌNG", "warning": "CẢNH BÁO"}


class Failure(Exception):
    """A message not delivered; ``reason`` is one of REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


# ---------------------------------------------------------------- the text

_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)")


def vietnam_time(stamp: str) -> str:
    """``15:04 02/01/2006`` in Vietnam time of an RFC 3339 time from Alertmanager ('' if none)."""
    m = _TIME.fullmatch(stamp or "")
    if not m or stamp.startswith("0001-"):
        return ""
    zone = "+00:00" if m.group(2) == "Z" else m.group(2)
    t = datetime.fromisoformat(m.group(1) + zone).astimezone(VIETNAM)
    return t.strftime("%H:%M %d/%m/%Y")


def _subject(payload: dict) -> str:
    labels, notes = payload.get("commonLabels") or {}, payload.get("commonAnnotations") or {}
    if payload.get("status") == "firing":
        head = f"[{SEVERITY_VI.get(labels.get('severity', ''), 'THÔNG TIN')}]"
    else:
        head = "[ĐÃ KHẮC PHỤC]"
    where = f" Xã/phường {labels['commune']}:" if labels.get("commune") else ""
    what = notes.get("summary_vi") or f"{labels.get('alertname', 'cảnh báo')} ({len(payload['alerts'])})"
    return f"{head}{where} {what}"


def _alert_text(alert: dict) -> str:
    labels, notes = alert.get("labels") or {}, alert.get("annotations") or {}
    firing = alert.get("status") == "firing"
    where = f"Đơn vị: {labels.get('commune', '')}"
    for key, name in (("agent", "máy/agent"), ("target", "thiết bị/đích"), ("device", "thiết bị")):
        if labels.get(key):
            where += f" · {name}: {labels[key]}"
    when = f"Bắt đầu: {vietnam_time(alert.get('startsAt', ''))} (giờ Việt Nam)"
    if not firing and vietnam_time(alert.get("endsAt", "")):
        when += f" · kết thúc: {vietnam_time(alert['endsAt'])}"
    lines = [f"{'● Đang xảy ra' if firing else '✓ Đã khắc phục'}: {notes.get('summary_vi') or labels.get('alertname', '')}"]
    if notes.get("description_vi"):
        lines.append(notes["description_vi"])
    lines += [where, when]
    if notes.get("runbook_url"):
        lines.append(f"Hướng dẫn xử lý: {notes['runbook_url']}")
    if notes.get("summary"):
        lines.append(f"(EN) {notes['summary']}")
    return "\n".join(lines)


def render_text(payload: dict) -> str:
    """The Zalo message of one Alertmanager notification, at most MAX_TEXT characters: the subject,
    a count, then each alert (firing first) as long as they fit, then how many were left out."""
    alerts = sorted(payload["alerts"], key=lambda a: a.get("status") != "firing")
    firing = sum(1 for a in alerts if a.get("status") == "firing")
    counts = ", ".join(part for part in (f"{firing} cảnh báo đang xảy ra" if firing else "",
                                         f"{len(alerts) - firing} đã khắc phục" if len(alerts) > firing else "")
                       if part)
    text = f"{_subject(payload)}\n{counts}"
    for i, alert in enumerate(alerts):
        block = "\n\n" + _alert_text(alert)
        rest = len(alerts) - i - 1
        tail = f"\n\n… và {rest} cảnh báo khác (xem thư điện tử hoặc Grafana)." if rest else ""
        if len(text) + len(block) + len(tail) > MAX_TEXT:
            more = f"\n\n… và {len(alerts) - i} cảnh báo khác (xem thư điện tử hoặc Grafana)."
            return (text + more)[:MAX_TEXT] if i else (text + block)[:MAX_TEXT - 1] + "…"
        text += block
    return text


def check_payload(payload) -> Optional[str]:
    """What is wrong with an Alertmanager webhook body (version 4), or None."""
    if not isinstance(payload, dict):
        return "the body is not a JSON object"
    if payload.get("version") != "4":
        return f"webhook version {payload.get('version')!r}, expected '4' (Alertmanager)"
    if payload.get("status") not in ("firing", "resolved"):
        return "status must be firing or resolved"
    alerts = payload.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        return "alerts must be a non-empty list"
    for i, a in enumerate(alerts):
        if not isinstance(a, dict) or not isinstance(a.get("labels"), dict) or \
                not isinstance(a.get("annotations", {}), dict) or a.get("status") not in ("firing", "resolved"):
            return f"alerts[{i}] is not an alert (labels, annotations, status)"
    return None


# ---------------------------------------------------------------- the relay

def _read_secret(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        value = f.read().strip()
    if not value:
        raise OSError(f"{path} is empty")
    return value


def _write_secret(path: str, value: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(value + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ZaloRelay:
    """The webhook handler, its Zalo client and its figures."""

    def __init__(self, config: ZaloSection, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.clock = clock
        self.sent: Dict[str, int] = {group: 0 for group in config.recipients}
        self.failures: Dict[Tuple[str, str], int] = {}
        self._delivered: "OrderedDict[str, float]" = OrderedDict()
        self._session = None
        self._refresh_lock = asyncio.Lock()

    async def start(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=float(self.config.timeout)))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _fail(self, group: str, reason: str) -> None:
        self.failures[(group, reason)] = self.failures.get((group, reason), 0) + 1

    # ------------------------------------------------------------ webhook

    async def handle(self, request):
        from aiohttp import web

        group = request.match_info["recipients"]
        known = group in self.config.recipients
        if not self._authorized(request.headers.get("Authorization", "")):
            if known:
                self._fail(group, "unauthorized")
            return web.Response(status=401, text="missing or wrong bearer token\n",
                                headers={"WWW-Authenticate": 'Bearer realm="commune-collector"'})
        if not known:
            return web.Response(status=404, text=f"no Zalo recipients group {group!r} in zalo.recipients\n")
        raw = await self._body(request)
        try:
            payload = json.loads(raw) if raw is not None else None
        except ValueError:
            payload = None
        problem = "the body is not JSON of at most 1 MiB" if payload is None else check_payload(payload)
        if problem:
            self._fail(group, "bad_request")
            return web.Response(status=400, text=problem + "\n")
        text = render_text(payload)
        key = self._notification_key(group, payload)
        failed: List[str] = []
        for user_id in self.config.recipients[group]:
            if self._already_delivered(key, user_id):
                continue
            try:
                await self.send(user_id, text)
            except Failure as exc:
                self._fail(group, exc.reason)
                log.error("Zalo message to %s (%s) not sent: %s: %s", user_id, group, exc.reason, exc)
                if exc.reason in RETRYABLE:
                    failed.append(f"{user_id}: {exc.reason}")
                continue
            self.sent[group] += 1
            self._delivered[f"{key}/{user_id}"] = self.clock()
        if failed:
            return web.Response(status=503, text="not delivered, retry: " + ", ".join(failed) + "\n")
        return web.Response(text="OK\n")

    @staticmethod
    async def _body(request) -> Optional[bytes]:
        """The whole body (it may arrive in pieces), or None beyond MAX_BODY. Not request.read(): the
        application's client_max_size is the enrollment's 4 KiB, and a notification is larger."""
        chunks, size = [], 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > MAX_BODY:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _authorized(self, header: str) -> bool:
        try:
            expected = _read_secret(self.config.webhook_token_file)
        except OSError as exc:
            log.error("zalo.webhook_token_file: %s", exc)
            return False
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())

    @staticmethod
    def _notification_key(group: str, payload: dict) -> str:
        alerts = sorted((a.get("fingerprint", ""), a["status"], a.get("startsAt", ""), a.get("endsAt", ""))
                        for a in payload["alerts"])
        ident = [group, payload.get("groupKey", ""), payload["status"], alerts]
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def _already_delivered(self, key: str, user_id: str) -> bool:
        now = self.clock()
        while self._delivered and next(iter(self._delivered.values())) < now - DEDUPE_SECONDS:
            self._delivered.popitem(last=False)
        while len(self._delivered) > 10000:
            self._delivered.popitem(last=False)
        return f"{key}/{user_id}" in self._delivered

    # ------------------------------------------------------------ the OA API

    def _token(self) -> str:
        try:
            return _read_secret(self.config.access_token_file)
        except OSError as exc:
            raise Failure("token_unreadable", f"zalo.access_token_file: {exc.strerror or exc}") from None

    async def send(self, user_id: str, text: str) -> str:
        """Send one text message; the message id Zalo gave it. Raises Failure."""
        import aiohttp

        cfg = self.config
        url = cfg.api_url.rstrip("/") + MESSAGE_PATH
        body = {"recipient": {"user_id": user_id}, "message": {"text": text}}
        renewed = False
        delay = float(cfg.retry_backoff)
        last = Failure("unavailable", "no attempt made")
        attempt = 0
        while attempt < cfg.max_attempts:
            attempt += 1
            token = self._token()
            try:
                async with self._session.post(url, json=body, headers={"access_token": token}) as resp:
                    raw = await resp.read()
                    status = resp.status
            except asyncio.TimeoutError:
                last = Failure("unavailable", f"no answer within {float(cfg.timeout):g}s")
            except aiohttp.ClientError as exc:
                last = Failure("unavailable", _scrub(f"{type(exc).__name__}: {exc}", token))
            else:
                if status == 429 or status >= 500:
                    last = Failure("unavailable", f"HTTP {status}")
                elif status != 200:
                    raise Failure("http_error", f"HTTP {status} from {url}")
                else:
                    try:
                        answer = json.loads(raw)
                        error = int(answer.get("error", -1))
                    except (ValueError, TypeError, AttributeError):
                        raise Failure("http_error", "the answer is not the OA API's JSON") from None
                    if error == 0:
                        return str((answer.get("data") or {}).get("message_id", ""))
                    detail = _scrub(f"error {error}: {answer.get('message', '')}", token)
                    if error not in TOKEN_ERRORS:
                        raise Failure("api_error", detail)
                    if cfg.refresh is None or renewed:
                        raise Failure("token_rejected", detail)
                    await self.refresh(token)
                    renewed = True
                    attempt -= 1  # the renewal does not use up an attempt
                    continue
            if attempt < cfg.max_attempts:
                await asyncio.sleep(delay)
                delay *= 2
        raise last

    async def refresh(self, stale: str) -> None:
        """Renew the access token the API refused (once, however many messages found it stale)."""
        async with self._refresh_lock:
            if self._token() != stale:
                return  # renewed meanwhile
            ref = self.config.refresh
            try:
                secret_key = _read_secret(ref.secret_key_file)
                refresh_token = _read_secret(ref.refresh_token_file)
            except OSError as exc:
                raise Failure("refresh_failed", f"zalo.refresh: {exc.strerror or exc}") from None
            url = ref.oauth_url.rstrip("/") + REFRESH_PATH
            form = {"app_id": ref.app_id, "grant_type": "refresh_token", "refresh_token": refresh_token}
            import aiohttp

            try:
                async with self._session.post(url, data=form, headers={"secret_key": secret_key}) as resp:
                    raw, status = await resp.read(), resp.status
            except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
                raise Failure("refresh_failed", f"token renewal: {type(exc).__name__}") from None
            answer = None
            try:
                answer = json.loads(raw)
                access, new_refresh = answer["access_token"], answer["refresh_token"]
                if not (isinstance(access, str) and access and isinstance(new_refresh, str) and new_refresh):
                    raise KeyError("access_token")
            except (ValueError, KeyError, TypeError):
                detail = f"HTTP {status}"
                if isinstance(answer, dict) and "error" in answer:
                    detail += f", error {answer.get('error')}: {answer.get('error_description') or answer.get('error_name', '')}"
                raise Failure("refresh_failed", _scrub(f"token renewal refused: {detail}",
                                                       secret_key, refresh_token, stale)) from None
            # the refresh token is single-use: keep the new one first, then the access token
            _write_secret(ref.refresh_token_file, new_refresh)
            _write_secret(self.config.access_token_file, access)
            log.info("Zalo OA access token renewed (valid %s s)", answer.get("expires_in", "?"))

    # ------------------------------------------------------------ /metrics

    def samples(self) -> List[Sample]:
        out = []
        for group in sorted(self.config.recipients):
            out.append(sample("commune_collector_zalo_messages_sent_total", self.sent.get(group, 0), recipients=group))
            for reason in REASONS:
                out.append(sample("commune_collector_zalo_failures_total", self.failures.get((group, reason), 0),
                                  recipients=group, reason=reason))
        return out


def _scrub(text: str, *secrets: str) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "<secret>")
    return text
