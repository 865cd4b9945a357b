"""The collector's configuration: one strict YAML file (``config/collector.example.yaml``).

Built on :mod:`contract.schema`: unknown keys are errors, defaults are filled, durations and sizes
converted, secrets never print, and every problem is reported with its path and line.
"""
from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Literal, Mapping, Optional

from contract.listener import check_basic_auth_users, is_loopback, split_listen_address
from contract.names import LABEL_NAME_RE
from contract.remote_write import MAX_LABEL_NAME_LENGTH, MAX_LABEL_VALUE_LENGTH, MAX_LABELS_PER_SERIES
from contract.schema import ConfigError, ConfigErrors, Duration, Secret, Size, load_model, load_yaml
from collector.profiles import ProfilesSection
from contract import thresholds

DEFAULT_LISTEN = "127.0.0.1:9722"
DEFAULT_STATE_DIR = "/var/lib/commune-collector"


def _check_tls_pair(cert: str, key: str) -> Iterator[tuple]:
    if bool(cert) != bool(key):
        yield ("tls_key_file" if cert else "tls_cert_file"), "tls_cert_file and tls_key_file must be set together"
    for name, path in (("tls_cert_file", cert), ("tls_key_file", key)):
        if path and not os.path.isfile(path):
            yield name, f"file {path} does not exist"


@dataclass
class WebSection:
    """Where agents and Prometheus reach the collector."""

    listen_address: str = DEFAULT_LISTEN
    # TLS for everything served (agents push over the Internet: use it, or a TLS-terminating proxy).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Plain HTTP on a non-loopback address is refused unless this says a proxy terminates TLS.
    behind_tls_proxy: bool = False
    # user: bcrypt hash; protects /metrics and /api/v1/sd (not the agents' write and enroll).
    basic_auth_users: Dict[str, Secret] = field(default_factory=dict)

    def validate(self) -> Iterator[tuple]:
        try:
            host, _port = split_listen_address(self.listen_address)
        except ValueError as exc:
            yield "listen_address", str(exc)
            return
        yield from _check_tls_pair(self.tls_cert_file, self.tls_key_file)
        yield from check_basic_auth_users(self.basic_auth_users)
        if not is_loopback(host) and not self.tls_cert_file and not self.behind_tls_proxy:
            yield "listen_address", (f"{self.listen_address} is reachable from the network without TLS: set "
                                     "tls_cert_file and tls_key_file, or behind_tls_proxy: true, or listen "
                                     "on 127.0.0.1")


@dataclass
class BasicAuth:
    username: str
    password: Secret

    def validate(self) -> Iterator[tuple]:
        if not self.username:
            yield "username", "must not be empty"


_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_RESERVED_HEADERS = {"authorization", "content-type", "content-encoding", "content-length", "host",
                     "user-agent", "x-prometheus-remote-write-version", "transfer-encoding", "connection"}


@dataclass
class Upstream:
    """One remote-write receiver every accepted request is forwarded to."""

    # e.g. http://127.0.0.1:9090/api/v1/write (Prometheus with --web.enable-remote-write-receiver)
    # or http://127.0.0.1:8428/api/v1/write (VictoriaMetrics).
    url: str
    # Label value in the collector's own metrics; default: host:port of the URL.
    name: str = ""
    timeout: Duration = Duration(30)
    bearer_token: Optional[Secret] = None
    basic_auth: Optional[BasicAuth] = None
    # CA bundle to verify an https upstream; empty: the system's.
    tls_ca_file: str = ""
    tls_insecure_skip_verify: bool = False
    # Extra headers on every request, e.g. the tenant of a multi-tenant store:
    # {X-Scope-OrgID: phu-tho} (Mimir, Cortex, Loki-style) or {AccountID: "12"}; values may come
    # from the environment (${TENANT}) and are never logged.
    headers: Dict[str, Secret] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            parsed = urllib.parse.urlsplit(self.url)
            self.name = parsed.netloc or self.url

    def validate(self) -> Iterator[tuple]:
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            yield "url", f"expected an http:// or https:// URL, got {self.url!r}"
            return
        if parsed.username or parsed.password:
            yield "url", "credentials in the URL would show in logs and metrics: use basic_auth or bearer_token"
        for name, value in self.headers.items():
            if not _HEADER_NAME.fullmatch(name):
                yield f"headers.{name}", "expected an HTTP header name (letters, digits and -)"
            elif name.lower() in _RESERVED_HEADERS:
                yield f"headers.{name}", ("set by the collector itself (remote write, authentication); "
                                          "use bearer_token or basic_auth for credentials")
            elif any(c in value.reveal() for c in "\r\n\0"):
                yield f"headers.{name}", "the value must be one line (no CR, LF or NUL)"
        try:
            parsed.port
        except ValueError:
            yield "url", f"bad port in {self.url!r}"
        if self.timeout <= 0:
            yield "timeout", "must be greater than 0s"
        if self.bearer_token is not None and self.basic_auth is not None:
            yield "bearer_token", "bearer_token and basic_auth are mutually exclusive"
        if self.tls_ca_file and not os.path.isfile(self.tls_ca_file):
            yield "tls_ca_file", f"file {self.tls_ca_file} does not exist"


@dataclass
class Limits:
    """What one write request may carry; beyond it the request is refused and the agent told why."""

    # Compressed body; larger answers 413.
    max_body_size: Size = Size(4 * 10**6)
    # Body after snappy decompression; a larger announced size answers 413 before inflating.
    max_decoded_size: Size = Size(32 * 10**6)
    # A whole request over one of these answers 413: the agent sends it again split.
    max_series_per_request: int = 10000
    max_samples_per_request: int = 50000
    # A series over one of these is left out and counted (reason invalid); the rest of the request
    # goes through. The defaults are the agent's own bounds (contract.remote_write): a request of an
    # agent is never refused for them.
    # Labels the agent sends per series, __name__ included (commune and agent are not counted).
    max_labels_per_series: int = MAX_LABELS_PER_SERIES
    max_label_name_length: int = MAX_LABEL_NAME_LENGTH
    max_label_value_length: int = MAX_LABEL_VALUE_LENGTH
    # The whole body must have arrived within this time (a weak link delivers it in pieces);
    # otherwise 408 and the agent sends it again. Long enough for max_body_size at 64 kbit/s is
    # not needed: the agent's requests are far smaller (tens of kB).
    body_timeout: Duration = Duration(120)
    # Write requests handled at once; more answer 429 so the agents back off and retry.
    max_concurrent_requests: int = 64
    # Samples older than this are dropped and counted. Keep it at most Prometheus'
    # storage.tsdb.out_of_order_time_window, which refuses older samples anyway.
    max_sample_age: Duration = Duration(thresholds.QUEUE_MAX_AGE_S)  # contract/thresholds.yaml
    # Samples further ahead of the collector's clock are dropped and counted (a PC with a wrong
    # clock would otherwise move Prometheus' head into the future and make everyone's data "too old").
    max_clock_skew: Duration = Duration(600)

    def validate(self) -> Iterator[tuple]:
        for name in ("max_body_size", "max_decoded_size", "max_series_per_request", "max_samples_per_request",
                     "max_labels_per_series", "max_label_name_length", "max_label_value_length",
                     "max_concurrent_requests"):
            if getattr(self, name) <= 0:
                yield name, "must be greater than 0"
        if self.max_sample_age <= 0:
            yield "max_sample_age", "must be greater than 0s"
        if self.body_timeout <= 0:
            yield "body_timeout", "must be greater than 0s"
        if 0 < self.max_decoded_size < self.max_body_size:
            yield "max_decoded_size", "must not be smaller than max_body_size"


@dataclass
class StateSection:
    # Directory of tokens.json: agent token hashes and enrollment key hashes (never the secrets).
    dir: str = DEFAULT_STATE_DIR


@dataclass
class CredentialsSection:
    """Signed agent tokens any replica can verify alone (collector.credentials, docs/scale.md)."""

    # KEY_ID SECRET lines, mode 0600 (commune-collector signing-key create). Set: new tokens are
    # signed (cms_...) and verified with it; tokens.json keeps their records, not the secrets.
    # Empty: tokens are random and only tokens.json knows them (one replica, or a shared copy).
    signing_key_file: str = ""
    # Ids of revoked tokens, one per line: written by the replica that issues tokens, copied to
    # (or shared with) the others, re-read when it changes. Empty: revocation is tokens.json only.
    revocation_file: str = ""

    def validate(self) -> Iterator[tuple]:
        if self.signing_key_file and not os.path.isfile(self.signing_key_file):
            yield "signing_key_file", f"file {self.signing_key_file} does not exist (commune-collector signing-key create)"
        if self.signing_key_file and not self.revocation_file:
            yield "revocation_file", "required with signing_key_file: a signed token can only be revoked through it"


@dataclass
class EnrollmentSection:
    # Whether POST /api/v1/enroll trades one-time keys (commune-collector enroll-key create) for tokens.
    enabled: bool = True


@dataclass
class HttpSdSection:
    """``GET /api/v1/sd``: agents in pull mode as Prometheus http_sd targets."""

    enabled: bool = True
    # __scheme__ of the targets: how Prometheus reaches the agents' /metrics.
    scheme: Literal["http", "https"] = "http"
    # Extra labels on every target (commune and agent are always set).
    labels: Dict[str, str] = field(default_factory=dict)

    def validate(self) -> Iterator[tuple]:
        for name in self.labels:
            if not LABEL_NAME_RE.fullmatch(name) or name.startswith("__"):
                yield f"labels.{name}", "invalid label name (letters, digits and _, not starting with __)"
            elif name in ("commune", "agent"):
                yield f"labels.{name}", "commune and agent are set from each agent's token"


_ZALO_USER_ID = re.compile(r"[0-9]{1,32}")
_RECIPIENT_GROUP = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


@dataclass
class ZaloRefresh:
    """Renewing the Zalo OA access token (it lives about 25 hours) with the refresh token (one use,
    about 3 months): both files are rewritten, mode 0600, after every renewal."""

    app_id: str
    secret_key_file: str
    refresh_token_file: str
    # Zalo's OAuth server (POST <oauth_url>/v4/oa/access_token); tests point it at a stand-in.
    oauth_url: str = "https://oauth.zaloapp.com"

    def validate(self) -> Iterator[tuple]:
        if not re.fullmatch(r"[0-9]{1,32}", self.app_id):
            yield "app_id", "the Zalo app id is a number"
        if not os.path.isfile(self.secret_key_file):
            yield "secret_key_file", f"file {self.secret_key_file} does not exist"
        yield from _check_http_url("oauth_url", self.oauth_url)


@dataclass
class ZaloSection:
    """Alertmanager webhook relay to Zalo Official Account messages (collector/zalo.py).

    Alertmanager posts to ``/alertmanager/zalo/<group>`` (bearer token from ``webhook_token_file``);
    each of the group's ``recipients`` (Zalo user ids of the OA's followers) gets the Vietnamese text.
    """

    enabled: bool = False
    # OA API (POST <api_url>/v3.0/oa/message/cs, header access_token); tests point it at a stand-in.
    api_url: str = "https://openapi.zalo.me"
    access_token_file: str = ""  # read at every message: a renewal by another tool is seen at once
    refresh: Optional[ZaloRefresh] = None
    webhook_token_file: str = ""  # the bearer token Alertmanager sends (credentials_file there)
    # group name (the last part of the webhook path) -> Zalo user ids, e.g. on-duty, escalation
    recipients: Dict[str, List[str]] = field(default_factory=dict)
    timeout: Duration = Duration(10)  # one API call
    max_attempts: int = 3  # per message, on timeouts, network errors, 429 and 5xx
    retry_backoff: Duration = Duration(1)  # doubled after each attempt

    def validate(self) -> Iterator[tuple]:
        if not self.enabled:
            return
        yield from _check_http_url("api_url", self.api_url)
        for name in ("access_token_file", "webhook_token_file"):
            path = getattr(self, name)
            if not path:
                yield name, "required when zalo.enabled is true"
            elif name == "webhook_token_file" and not os.path.isfile(path):
                yield name, f"file {path} does not exist"
        if not self.recipients:
            yield "recipients", "at least one group of Zalo user ids is required"
        for group, ids in self.recipients.items():
            if not _RECIPIENT_GROUP.fullmatch(group):
                yield f"recipients.{group}", "group names are lower-case letters, digits, - and _"
            if not ids:
                yield f"recipients.{group}", "at least one Zalo user id is required"
            for i, uid in enumerate(ids):
                if not _ZALO_USER_ID.fullmatch(str(uid)):
                    yield f"recipients.{group}[{i}]", f"{uid!r} is not a Zalo user id (digits)"
        if not 1 <= self.max_attempts <= 10:
            yield "max_attempts", "must be between 1 and 10"
        if self.timeout <= 0:
            yield "timeout", "must be positive"


def _check_http_url(name: str, url: str) -> Iterator[tuple]:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        yield name, f"{url!r} is not an http(s) URL"


@dataclass
class RunbooksSection:
    """The runbooks served as web pages on /runbooks/<alert> (the alerts' runbook_url)."""

    enabled: bool = True
    file: str = ""  # default: docs/runbooks.md of this installation

    def validate(self) -> Iterator[tuple]:
        if self.enabled and self.file and not os.path.isfile(self.file):
            yield "file", f"file {self.file} does not exist"


@dataclass
class CollectorConfig:
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    web: WebSection = field(default_factory=WebSection)
    upstreams: List[Upstream] = field(default_factory=list)
    # How often each upstream is sent an empty write request to check it answers (0s: never);
    # /-/ready fails while an upstream does not.
    upstream_check_interval: Duration = Duration(15)
    limits: Limits = field(default_factory=Limits)
    state: StateSection = field(default_factory=StateSection)
    credentials: CredentialsSection = field(default_factory=CredentialsSection)
    enrollment: EnrollmentSection = field(default_factory=EnrollmentSection)
    http_sd: HttpSdSection = field(default_factory=HttpSdSection)
    # Fleet inventory (config/fleet.example.yaml) served as info metrics on /metrics; empty: none.
    fleet_file: str = ""
    # Working calendar (collector/calendar.yaml): office hours and public holidays, exported as
    # commune_calendar_open / commune_calendar_holiday on /metrics; empty: the one shipped.
    calendar_file: str = ""
    runbooks: RunbooksSection = field(default_factory=RunbooksSection)
    zalo: ZaloSection = field(default_factory=ZaloSection)
    # Processes serving the listen address together (SO_REUSEPORT, Linux; elsewhere 1): one
    # Python process uses at most one core. Each worker has its own limits and caches;
    # /metrics sums their figures (collector/workers.py).
    workers: int = 1
    # Agent profiles served on /api/v1/profile (collector/profiles.py); dir empty: none.
    profiles: ProfilesSection = field(default_factory=ProfilesSection)

    def validate(self) -> Iterator[tuple]:
        if not 1 <= self.workers <= 64:
            yield "workers", "must be between 1 and 64"
        if not self.upstreams:
            yield "upstreams", "at least one upstream remote-write URL is required"
        seen: Dict[str, int] = {}
        for i, up in enumerate(self.upstreams):
            if up.name in seen:
                yield f"upstreams[{i}].name", f"duplicate upstream name {up.name!r} (first at upstreams[{seen[up.name]}])"
            else:
                seen[up.name] = i
        if self.fleet_file and not os.path.isfile(self.fleet_file):
            yield "fleet_file", f"file {self.fleet_file} does not exist"
        if self.calendar_file and not os.path.isfile(self.calendar_file):
            yield "calendar_file", f"file {self.calendar_file} does not exist"


def check_listen_override(config: CollectorConfig, address: str) -> Optional[str]:
    """The problem with ``--web.listen-address ADDRESS`` for this config, or None."""
    old = config.web.listen_address
    config.web.listen_address = address
    try:
        problems = [msg for path, msg in config.web.validate() if path == "listen_address"]
    finally:
        config.web.listen_address = old
    return problems[0] if problems else None


def load_config(path: str, environ: Optional[Mapping[str, str]] = None) -> CollectorConfig:
    """Load and validate the collector config; raise :class:`ConfigErrors` listing every problem.

    The fleet file named by ``fleet_file`` is loaded too, and its errors are reported with its name.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigErrors([ConfigError("", f"cannot read config file: {exc.strerror}", None, path)]) from None
    return parse_config(text, path, environ)


def parse_config(text: str, filename: str = "collector.yaml",
                 environ: Optional[Mapping[str, str]] = None) -> CollectorConfig:
    data, lines = load_yaml(text, filename)
    if data is not None and not isinstance(data, dict):
        raise ConfigErrors([ConfigError("", "expected a mapping of sections at the top level", 1, filename)])
    config = load_model(CollectorConfig, data, file=filename, lines=lines, environ=environ)
    if config.fleet_file:
        load_fleet_file(config.fleet_file)
    load_calendar_file(config.calendar_file)
    return config


def load_calendar_file(path: str = ""):
    """The working calendar (collector.calendar); its problems are config errors with its name."""
    from collector.calendar import DEFAULT_FILE, CalendarError, load_calendar

    try:
        return load_calendar(path or DEFAULT_FILE)
    except CalendarError as exc:
        raise ConfigErrors([ConfigError("", p) for p in exc.problems]) from None


def load_fleet_file(path: str):
    """The fleet inventory (collector.fleet) or None when that module is not installed."""
    try:
        from collector import fleet
    except ImportError:
        return None
    return fleet.load_fleet(path)
