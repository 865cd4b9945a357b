"""Central agent profiles: YAML fragments per commune and role, checked, merged and served.

    <profiles.dir>/default.yaml                  every agent
    <profiles.dir>/roles/<role>.yaml             agents of that role (site-poller, desk, ...)
    <profiles.dir>/communes/<code>.yaml          every agent of that commune
    <profiles.dir>/communes/<code>/<role>.yaml   agents of that role in that commune

An agent's profile is these merged in that order (later wins; mappings key by key, lists and
values replaced; ``agent.profile.merge``). Every fragment and every merged result is checked with
the agent's own schema (``agent.profile.check_profile``: managed sections only). A fragment that
fails keeps its last good version in use (none at start: the profiles using it are not served,
503, and the agents keep their own); a merged result that fails keeps the last good one. Each
problem is logged once, with its file, line and what was expected, and counted in
``commune_collector_profile_errors{file}``. The directory is looked at again every few seconds.

``GET /api/v1/profile?role=ROLE`` (the agent's bearer token: the commune comes from it) answers the
YAML text with a strong ``ETag`` (its SHA-256, the version the agent reports) and 304 to a matching
``If-None-Match``.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import yaml

from contract.names import name_problem
from agent.profile import ROLE_RE, check_profile, merge, parse_profile, version_of
from contract.samples import Sample, sample
from contract.schema import ConfigErrors, Duration

log = logging.getLogger(__name__)

LAYOUT = ("default.yaml, roles/ROLE.yaml, communes/CODE.yaml or communes/CODE/ROLE.yaml")
CONTENT_TYPE = "application/yaml; charset=utf-8"
# A changed file is read once it has not changed for this long: an editor or a copy still writing
# it must not have its half (or an empty file, a valid empty fragment) taken as the new version.
SETTLE_S = 1.0


@dataclass
class ProfilesSection:
    # Directory of profile fragments (collector/README.md, "Agent profiles"); empty: none served.
    dir: str = ""
    # How often the directory is looked at for changed fragments.
    check_interval: Duration = Duration(5)

    def validate(self) -> Iterator[tuple]:
        if self.dir and not os.path.isdir(self.dir):
            yield "dir", f"directory {self.dir} does not exist"
        if self.check_interval <= 0:
            yield "check_interval", "must be greater than 0s"


def classify(rel: str) -> Optional[Tuple[str, str]]:
    """(commune, role) a fragment path applies to ("" for any), or None if it is not one."""
    parts = rel.split("/")
    if not rel.endswith(".yaml"):
        return None
    stem = [p[:-5] if i == len(parts) - 1 else p for i, p in enumerate(parts)]
    if parts == ["default.yaml"]:
        return "", ""
    if len(parts) == 2 and parts[0] == "roles" and ROLE_RE.fullmatch(stem[1]):
        return "", stem[1]
    if len(parts) == 2 and parts[0] == "communes" and not name_problem("commune", stem[1]):
        return stem[1], ""
    if len(parts) == 3 and parts[0] == "communes" and not name_problem("commune", stem[1]) \
            and ROLE_RE.fullmatch(stem[2]):
        return stem[1], stem[2]
    return None


def chain(present: Dict[Tuple[str, str], str], commune: str, role: str) -> List[str]:
    """The fragments of (commune, role) in merge order; ``present`` maps (commune, role) -> path."""
    keys = [("", ""), ("", role), (commune, ""), (commune, role)]
    out = []
    for key in keys:
        if key in present and present[key] not in out and (key[1] == "" or role) and (key[0] == "" or commune):
            out.append(present[key])
    return out


def render(data: dict, files: List[str]) -> str:
    head = "# commune-monitor agent profile from " + (", ".join(files) if files else "no fragment") + "\n"
    return head + (yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
                   if data else "{}\n")


def _etags(header: str) -> List[str]:
    return [t.strip().removeprefix("W/").strip('"') for t in header.split(",") if t.strip()]


class ProfileStore:
    """The fragments of one directory, their last good versions and the profiles they make."""

    def __init__(self, directory: str, settle: float = SETTLE_S):
        self.dir = directory  # "": no fragments, the empty profile for every agent and role
        self.settle = settle
        self._signature: Optional[tuple] = None
        self._checked: Dict[str, Tuple[str, List[str]]] = {}  # file -> (text last checked, its problems)
        self._good: Dict[str, dict] = {}  # last good data of every fragment
        self.problems: Dict[str, List[str]] = {}  # file -> current problems (fragments, merges)
        self.present: Dict[Tuple[str, str], str] = {}
        self._served: Dict[Tuple[str, str], Tuple[str, str]] = {}  # last good (text, version) per profile
        self._unavailable: Dict[Tuple[str, str], str] = {}
        self.reloads = 0
        self._lock = threading.RLock()  # the watch and the request handler may both refresh

    # ------------------------------------------------------------ the directory

    def _scan(self) -> Dict[str, tuple]:
        found: Dict[str, tuple] = {}
        if not self.dir:  # no profiles configured: every agent gets the empty profile
            return found
        for root, dirs, files in os.walk(self.dir):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                if name.endswith(".yaml") or name.endswith(".yml"):
                    path = os.path.join(root, name)
                    try:
                        st = os.stat(path)
                    except OSError:
                        continue
                    rel = os.path.relpath(path, self.dir).replace(os.sep, "/")
                    found[rel] = (st.st_mtime_ns, st.st_size, st.st_ino)
        return found

    def refresh(self) -> bool:
        """Look at the directory; reload and check what changed. True if anything did."""
        with self._lock:
            found = self._scan()
            signature = tuple(sorted(found.items()))
            if signature == self._signature:
                return False
            recent = time.time_ns() - int(self.settle * 1e9)
            if self._signature is not None and any(v[0] > recent for v in found.values()):
                return False  # still being written: looked at again at the next request or check
            self._signature = signature
            self._reload(sorted(found))
            return True

    def _reload(self, files: List[str]) -> None:
        old_problems = self.problems
        self.problems = {}
        self.present = {}
        for rel in files:
            where = classify(rel)
            if where is None:
                self.problems[rel] = [f"{rel}: not a profile fragment (expected {LAYOUT})"]
                continue
            self.present[where] = rel
            try:
                with open(os.path.join(self.dir, rel), encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError) as exc:
                self.problems[rel] = [f"{rel}: cannot read: {getattr(exc, 'strerror', None) or exc}"]
                continue
            if self._checked.get(rel, (None,))[0] != text:
                try:
                    data, lines = parse_profile(text, rel)
                    errors = [str(e) for e in check_profile(data, rel, lines)]
                except ConfigErrors as exc:
                    data, errors = {}, [str(e) for e in exc.errors]
                self._checked[rel] = (text, errors)
                if not errors:
                    self._good[rel] = data
            if self._checked[rel][1]:
                self.problems[rel] = list(self._checked[rel][1])
        for rel in list(self._checked):
            if rel not in files:  # deleted: on purpose, so its last good version goes too
                self._good.pop(rel, None)
                del self._checked[rel]
        self._merge_all()
        self.reloads += 1
        for rel, problems in sorted(self.problems.items()):
            kept = "its last good version stays in use" if rel in self._good else \
                "the profiles using it are not served until it is fixed"
            for p in problems:
                if p not in old_problems.get(rel, ()):
                    log.error("profile fragment refused (%s): %s", kept, p)
        if self.dir:
            log.info("profiles in %s: %d fragments, %d with problems", self.dir, len(self.present), len(self.problems))

    def _profile_keys(self) -> Iterator[Tuple[str, str]]:
        communes = {c for c, _ in self.present if c} | {""}
        roles = {r for _, r in self.present if r} | {""}
        for c in sorted(communes):
            for r in sorted(roles):
                yield c, r

    def _merge_all(self) -> None:
        self._unavailable = {}
        current: Dict[Tuple[str, str], Tuple[str, str]] = {}
        for key in self._profile_keys():
            files = chain(self.present, *key)
            missing = [f for f in files if f not in self._good]
            if missing:
                self._unavailable[key] = f"fragment {missing[0]} is refused and has no last good version"
                continue
            data: dict = {}
            for f in files:
                data = merge(data, self._good[f])
            errors = check_profile(data, " + ".join(files)) if len(files) > 1 else []
            if errors:
                last = files[-1]
                self.problems.setdefault(last, []).extend(str(e) for e in errors if str(e) not in
                                                          self.problems.get(last, ()))
                if key in self._served:
                    current[key] = self._served[key]
                else:
                    self._unavailable[key] = f"the merge of {' + '.join(files)} is refused"
                continue
            text = render(data, files)
            current[key] = (text, version_of(text))
        self._served = current

    # ------------------------------------------------------------ answers

    def answer(self, commune: str, role: str = "", if_none_match: str = "") -> Tuple[int, str, Dict[str, str]]:
        """(status, body, headers) for one agent's request (blocking: it may reload)."""
        with self._lock:
            self.refresh()
            return self._answer(commune, role, if_none_match)

    def _answer(self, commune: str, role: str, if_none_match: str) -> Tuple[int, str, Dict[str, str]]:
        if role and not ROLE_RE.fullmatch(role):
            return 400, f"invalid role {role!r}: lower-case letters, digits, - and _\n", {}
        roles = sorted({r for _, r in self.present if r})
        if role and role not in roles and self.dir:
            return 404, f"no profile for role {role!r} on this collector (roles: {', '.join(roles) or 'none'})\n", {}
        key = (commune if any(c == commune for c, _ in self.present) else "", role if role in roles else "")
        if key not in self._served:
            return 503, (f"the profile of commune {commune} role {role or '-'} is refused on the collector "
                         f"({self._unavailable.get(key, 'not checked')}); keep the last good one\n"), {"Retry-After": "60"}
        text, version = self._served[key]
        headers = {"ETag": f'"{version}"', "Cache-Control": "private, no-cache"}
        tags = _etags(if_none_match)
        if version in tags or "*" in tags:
            return 304, "", headers
        return 200, text, {**headers, "Content-Type": CONTENT_TYPE}

    def samples(self) -> List[Sample]:
        with self._lock:
            files = sorted(set(self.present.values()) | set(self.problems))
            return [sample("commune_collector_profile_errors", len(self.problems.get(f, ())), file=f) for f in files]

    async def watch(self, interval: float) -> None:
        """Look at the directory every ``interval`` seconds (in a worker thread), until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(None, self.refresh)
            except Exception as exc:  # never let the watch die
                log.error("profiles: looking at %s failed: %r", self.dir, exc)
            await asyncio.sleep(interval)


# ---------------------------------------------------------------- commune-collector profiles

def main(argv: List[str]) -> int:
    from collector.cli import _config_arg, _load

    p = argparse.ArgumentParser(prog="commune-collector profiles",
                                description="Check the agent profile fragments, or show one agent's profile.")
    sub = p.add_subparsers(dest="action", required=True)
    check = sub.add_parser("check", help="check every fragment and every merged profile; non-zero on a problem")
    show = sub.add_parser("show", help="print the profile a commune's agent of a role gets")
    show.add_argument("--commune", required=True)
    show.add_argument("--role", default="")
    for s in (check, show):
        _config_arg(s)
        s.add_argument("--dir", help="profile directory (default: profiles.dir of the config file)")
    args = p.parse_args(argv)
    directory = args.dir
    if not directory:
        config = _load(args.config)
        if config is None:
            return 1
        directory = config.profiles.dir
        if not directory:
            print(f"{args.config}: profiles.dir is not set", file=sys.stderr)
            return 1
    if not os.path.isdir(directory):
        print(f"profile directory {directory} does not exist", file=sys.stderr)
        return 1
    store = ProfileStore(directory)
    logging.getLogger(__name__).setLevel(logging.CRITICAL)  # the problems are printed below instead
    store.refresh()
    if args.action == "show":
        status, body, _ = store.answer(args.commune, args.role)
        print(body, end="", file=sys.stdout if status == 200 else sys.stderr)
        return 0 if status == 200 else 1
    problems = [msg for _, msgs in sorted(store.problems.items()) for msg in msgs]
    for msg in problems:
        print(msg, file=sys.stderr)
    if problems:
        print(f"profiles check failed: {len(problems)} problem(s) in {directory}", file=sys.stderr)
        return 1
    print(f"profiles in {directory} are valid: {len(store.present)} fragments, {len(store._served)} profiles")
    return 0
