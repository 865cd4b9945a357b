"""The agent's central profile: fetched from the collector, checked, saved, applied while running.

At start (:meth:`Profiles.start`, before any input is built) the last good profile saved in
``<agent.state_dir>/profile.yaml`` (``profile-<role>.yaml`` with a role) is read and checked, then
the collector is asked (``GET <profile.url>?role=ROLE``, the push token, ``If-None-Match`` with the
saved version, at most 5s). The agent starts on the fetched profile, else on the saved one, else
on its own file alone, and says why in the log and in its metrics. Then :meth:`Profiles.run`
asks again every ``profile.interval`` (sooner after a failure, backing off up to the interval);
a changed profile is checked again with the agent's own schema, merged over the local file, saved
(atomic, mode 0600: it may hold SNMP communities) and handed to ``apply`` (``agent.app``), which
rebuilds the inputs of the sections that changed without a restart. After every fetch the copy
on disk is compared with the profile running and written again if it differs (edited or removed
by hand), so the next start finds the last good profile.

An invalid or unreachable profile never stops the agent: it keeps what it runs. Failures are
counted in ``commune_agent_profile_fetch_failures_total{reason}``: ``network`` (no answer, TLS,
timeout), ``unauthorized`` (401/403), ``misconfigured`` (404, 3xx, anything unexpected: e.g. no
such role, or no profiles on that collector), ``server_error`` (5xx, 429: the collector refused its
own profile or is overloaded), ``invalid`` (the profile does not pass this agent's checks).
"""
from __future__ import annotations

import asyncio
import http.client
import logging
import os
import random
import ssl
import time
import urllib.parse
from collections import Counter
from typing import Awaitable, Callable, Dict, List, Optional, Tuple

from agent import profile
from contract.samples import Sample, sample
from contract.schema import ConfigErrors

log = logging.getLogger(__name__)

FAIL_REASONS = ("network", "unauthorized", "misconfigured", "server_error", "invalid")
START_TIMEOUT = 5.0
PROFILE_PATH = "/api/v1/profile"


def profile_url(section: profile.Config, push_url: str) -> str:
    """``profile.url``, else the push URL with ``/api/v1/write`` replaced (or the host's root)."""
    if section.url:
        base = section.url
    else:
        parts = urllib.parse.urlsplit(push_url)
        path = parts.path
        path = path[: -len("/api/v1/write")] + PROFILE_PATH if path.endswith("/api/v1/write") else PROFILE_PATH
        base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    if not section.role:
        return base
    return base + ("&" if "?" in base else "?") + urllib.parse.urlencode({"role": section.role})


def saved_path(config) -> str:
    role = config.profile.role
    return os.path.join(config.agent.state_dir, f"profile-{role}.yaml" if role else "profile.yaml")


def _first_line(body: bytes) -> str:
    lines = body[:300].decode("utf-8", "replace").strip().splitlines()
    return lines[0] if lines else ""


class Profiles:
    """One per running agent (only when push is enabled and ``profile.enabled``)."""

    def __init__(self, config, clock: Callable[[], float] = time.time):
        from agent.push import token_path
        from agent.shipper import HttpClient, TokenSource

        self.local = config  # as loaded from the agent's own file
        self.section = config.profile
        self.clock = clock
        push = config.push
        self.url = profile_url(self.section, push.url)
        self.client = HttpClient(self.url, self.section.timeout, push.ca_file, push.pin_sha256)
        self.tokens = TokenSource(push.bearer_token.reveal(), token_path(push, config.agent.state_dir))
        self.path = saved_path(config)
        self.version = "none"
        self.source = "local"  # collector | saved | local
        self.last_success: Optional[float] = None
        self.saved_invalid = 0
        self.text: Optional[str] = None  # the profile running
        self.failures: Counter = Counter({r: 0 for r in FAIL_REASONS})
        self.apply_failures: Counter = Counter()
        # agent.app.Agent.apply: [(changed section, why it was not applied or "")]
        self.inputs = [ProfileInput(self, config.agent.interval)]  # scheduled by agent.app
        self.apply: Optional[Callable[[object], Awaitable[List[Tuple[str, str]]]]] = None
        self._complaint: Optional[str] = None

    # ------------------------------------------------------------ checks

    def check(self, text: str, where: str):
        """The effective config of this agent with profile ``text``; raises ConfigErrors."""
        from agent.config import load_with_profile

        data, lines = profile.parse_profile(text, where)
        errors = profile.check_profile(data, where, lines)
        if errors:
            raise ConfigErrors(errors)
        return load_with_profile(self.local, data)

    def _complain(self, key: str, level: int, message: str, *args) -> None:
        if key != self._complaint:
            log.log(level, message, *args)
            self._complaint = key

    # ------------------------------------------------------------ one request (blocking)

    def fetch(self, known: Optional[str]) -> Tuple[str, str]:
        """("new", text), ("unchanged", ""), ("no_token", ""), or ("failed:<reason>", message)."""
        token = self.tokens.get()
        if not token:
            return "no_token", ""
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/yaml"}
        if known:
            headers["If-None-Match"] = f'"{known}"'
        try:
            resp = self.client.request("GET", None, b"", headers)
        except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
            return "failed:network", f"{self.url}: {exc or type(exc).__name__}"
        if resp.status == 304:
            return "unchanged", ""
        if resp.status == 200:
            try:
                return "new", resp.body.decode("utf-8")
            except UnicodeDecodeError:
                return "failed:invalid", f"{self.url}: the profile is not UTF-8 text"
        reason = ("unauthorized" if resp.status in (401, 403) else
                  "server_error" if resp.status >= 500 or resp.status == 429 else "misconfigured")
        return f"failed:{reason}", f"{self.url}: {resp.status} {_first_line(resp.body)}"

    # ------------------------------------------------------------ start

    def _read_saved(self):
        """(text, config) of the saved profile, or None (and why, logged and counted)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            self.saved_invalid = 1
            log.error("profile: the saved profile %s cannot be read (%s)", self.path, exc)
            return None
        try:
            return text, self.check(text, self.path)
        except ConfigErrors as exc:
            self.saved_invalid = 1
            log.error("profile: the saved profile %s is refused: %s", self.path, "; ".join(map(str, exc.errors)))
            return None

    def start(self):
        """The config to start on (blocking; before the inputs are built)."""
        saved = self._read_saved()
        old_timeout, self.client.timeout = self.client.timeout, min(self.client.timeout, START_TIMEOUT)
        try:
            outcome, detail = self.fetch(profile.version_of(saved[0]) if saved else None)
        finally:
            self.client.timeout = old_timeout
            self.client.close()
        config = None
        if outcome == "new":
            config = self._adopt_new(detail)
        elif outcome == "unchanged" and saved:
            self._adopted(saved[0], "collector")
            config = saved[1]
        elif outcome.startswith("failed:"):
            self._failed(outcome, detail)
        elif outcome == "no_token":
            log.warning("profile: no push token yet (enroll this agent); not fetched")
        if config is None and saved:
            self._adopted(saved[0], "saved")
            log.warning("profile: running on the last good profile %s saved in %s until the collector "
                        "answers", self.version, self.path)
            config = saved[1]
        if config is None:
            log.warning("profile: running on %s alone (no profile %s)", self._local_name(),
                        "could be fetched or read from " + self.path if not self.saved_invalid
                        else "fetched, and the saved one is refused")
            return self.local
        log.info("profile %s (role %s, %s) applied", self.version, self.section.role or "-",
                 "from the collector" if self.source == "collector" else "the copy saved in " + self.path)
        return config

    def _running(self) -> str:
        return f"profile {self.version}" if self.version != "none" else "the agent's own file"

    def _local_name(self) -> str:
        from agent.config import local_source

        return local_source(self.local)[2] or "the built-in defaults"

    def _adopt_new(self, text: str):
        """Check and save a profile from the collector; its config, or None (counted as invalid)."""
        version = profile.version_of(text)
        try:
            config = self.check(text, f"profile {version} from {self.url}")
        except ConfigErrors as exc:
            self.failures["invalid"] += 1
            self._complain(f"invalid:{version}", logging.ERROR, "profile %s from the collector is refused, "
                           "keeping %s: %s", version, self._running(), "; ".join(map(str, exc.errors)))
            return None
        self._save(text)
        self._adopted(text, "collector")
        return config

    def _save(self, text: str) -> None:
        from agent.enroll import write_private

        try:
            write_private(self.path, text.encode("utf-8"))
            self.saved_invalid = 0
        except (OSError, RuntimeError) as exc:  # applied all the same; at the next start it is fetched again
            log.error("profile %s could not be saved to %s: %s", profile.version_of(text), self.path, exc)

    def keep_saved(self) -> None:
        """The copy on disk must be the profile running (blocking; after each fetch)."""
        if self.text is None:
            return
        try:
            with open(self.path, encoding="utf-8") as f:
                same = f.read() == self.text
        except (OSError, UnicodeDecodeError):
            same = False
        if not same:
            log.warning("profile: the saved copy %s is not profile %s (changed or removed by hand?); "
                        "written again", self.path, self.version)
            self._save(self.text)

    def _adopted(self, text: str, source: str) -> None:
        self.text = text
        self.version = profile.version_of(text)
        self.source = source
        if source == "collector":
            self.last_success = self.clock()
            self._complaint = None

    def _failed(self, outcome: str, detail: str) -> None:
        reason = outcome.split(":", 1)[1]
        self.failures[reason] += 1
        self._complain(outcome + detail, logging.WARNING, "profile: fetch failed (%s: %s); keeping %s", reason,
                       detail, self._running())

    # ------------------------------------------------------------ while running

    async def run(self, stop: asyncio.Event) -> None:
        from agent.shipper import Backoff

        loop = asyncio.get_running_loop()
        interval = float(self.section.interval)
        backoff = Backoff(min(interval, 30.0), interval)
        delay = interval * (0.9 + 0.2 * random.random()) if self.source == "collector" else backoff.next()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), delay)
                break
            except asyncio.TimeoutError:
                pass
            known = self.version if self.version != "none" else None
            request = loop.run_in_executor(None, self.fetch, known)
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({request, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not request.done():  # the agent is stopping: do not wait for a slow link
                self.client.abort()
                await asyncio.gather(request, return_exceptions=True)
                break
            try:
                ok = await self._handle(*request.result())
                await loop.run_in_executor(None, self.keep_saved)  # whatever the answer, the copy is the one running
            except Exception as exc:  # a bug of ours, or a profile no check foresaw: keep what runs, try later
                self.failures["invalid"] += 1
                log.exception("profile: %s; keeping %s", exc, self._running())
                ok = False
            if ok:
                backoff.reset()
                delay = interval * (0.9 + 0.2 * random.random())
            else:
                delay = backoff.next()

    async def _handle(self, outcome: str, detail: str) -> bool:
        if outcome == "unchanged":
            if self.source != "collector":
                log.info("profile %s confirmed by the collector", self.version)
            self._adopted_version_confirmed()
            return True
        if outcome == "no_token":
            self._complain("no_token", logging.WARNING, "profile: no push token yet (enroll this agent); not fetched")
            return False
        if outcome.startswith("failed:"):
            self._failed(outcome, detail)
            return False
        loop = asyncio.get_running_loop()
        old = self.version
        config = await loop.run_in_executor(None, self._adopt_new, detail)
        if config is None:
            return False
        done = await self.apply(config) if self.apply is not None else []
        failed = [(section, why) for section, why in done if why]
        for section, why in done:
            self.apply_failures[section] += 1 if why else 0  # every section a profile changed is listed
        for section, why in failed:
            log.error("profile %s: section %s not applied while running (%s); it keeps its previous "
                      "settings until the agent restarts", self.version, section, why)
        if self.version != old:
            log.info("profile %s applied (was %s)%s", self.version, old,
                     f"; not applied: {', '.join(s for s, _ in failed)}" if failed else "")
        return True

    def _adopted_version_confirmed(self) -> None:
        self.source = "collector"
        self.last_success = self.clock()
        self._complaint = None

    def close(self) -> None:
        self.client.abort()
        self.client.close()

    # ------------------------------------------------------------ metrics

    def samples(self) -> List[Sample]:
        out = [sample("commune_agent_profile_info", 1, version=self.version, role=self.section.role,
                      source=self.source),
               sample("commune_agent_profile_saved_invalid", self.saved_invalid)]
        out += [sample("commune_agent_profile_fetch_failures_total", n, reason=r)
                for r, n in sorted(self.failures.items())]
        out += [sample("commune_agent_profile_apply_failures_total", n, section=s)
                for s, n in sorted(self.apply_failures.items())]
        if self.last_success is not None:
            out.append(sample("commune_agent_profile_last_success_timestamp_seconds", round(self.last_success, 3)))
        return out


class ProfileInput:
    """The ``profile`` input: which profile the agent runs and how fetching it goes."""

    def __init__(self, profiles: Profiles, interval: float):
        self.name = "profile"
        self.interval = interval
        self.timeout = min(5.0, interval)
        self.profiles = profiles

    def collect(self) -> List[Sample]:
        return self.profiles.samples()


def component(config) -> Optional[Profiles]:
    """Profiles of this agent, or None: off, or push not enabled (no collector to ask)."""
    if not config.profile.enabled or not config.push.enabled:
        return None
    return Profiles(config)


def changed_sections(old, new) -> Dict[str, object]:
    """Managed sections whose settings differ: name -> the new section."""
    return {name: getattr(new, name) for name in profile.managed_sections()
            if getattr(old, name) != getattr(new, name)}
