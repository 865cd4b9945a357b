"""Agent tokens and enrollment keys, kept hashed in ``<state dir>/tokens.json``.

A token is 256 random bits (``cmt_`` + URL-safe base64); an enrollment key likewise (``cme_``).
Only their SHA-256 is stored: a high-entropy secret needs no slow hash, and a leaked state file
yields no usable credential. Lookups hash the presented secret, find the record by digest and
compare digests with :func:`hmac.compare_digest`.

The file is rewritten atomically (temporary file, fsync, rename) under an exclusive ``flock`` on
``tokens.lock``, so the running collector (enrollment) and ``commune-collector token ...`` can
change it at the same time. The collector re-reads the file when its modification changes.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

from contract.names import name_problem, pull_address_problem

try:
    import fcntl
except ImportError:  # Windows: the collector runs on Linux; CLI edits there are not locked
    fcntl = None

STATE_FILE = "tokens.json"
LOCK_FILE = "tokens.lock"
TOKEN_PREFIX = "cmt_"
ENROLL_PREFIX = "cme_"
# A commune with 50 PCs (the largest seen) and spares; a key for more is a key for a province.
MAX_KEY_USES = 200



class StateError(Exception):
    """A token or key operation that cannot be done; the message says why."""


class StateUnreadable(StateError):
    """The state file cannot be read: the collector's fault, never the client's."""


class NameTaken(StateError):
    """The agent name already has a live token in its commune (replace it explicitly)."""


class Identity(NamedTuple):
    """Who a valid token belongs to: the labels stamped on everything it writes."""

    token_id: str
    commune: str
    agent: str


def check_name(kind: str, value: str) -> str:
    """``value`` if it is a valid commune code / agent name; StateError otherwise."""
    problem = name_problem(kind, value)
    if problem:
        raise StateError(problem)
    return value


def check_address(value: str) -> str:
    """A pull address ``host:port`` for http_sd (see contract.names.pull_address_problem)."""
    problem = pull_address_problem(value)
    if problem:
        raise StateError(problem)
    return value


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(5)


class Store:
    """The token and enrollment-key file of one state directory."""

    def __init__(self, directory: str, clock=time.time):
        self.dir = directory
        self.path = os.path.join(directory, STATE_FILE)
        self.clock = clock
        self._cache_key: Optional[Tuple[int, int, int]] = None
        self._by_digest: Dict[str, dict] = {}
        self._data: dict = {"version": 1, "tokens": [], "enroll_keys": []}
        # Set by collector.credentials when the collector signs its tokens: (id, commune, agent,
        # issued) -> (token, key id); such tokens are not stored, only their record.
        self.issuer: Optional[Callable[[str, str, str, float], Tuple[str, str]]] = None
        # Called with every token record after a write that revoked one (the revocation list).
        self.on_change: Optional[Callable[[List[dict]], None]] = None

    # ------------------------------------------------------------ file handling

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        with open(os.path.join(self.dir, LOCK_FILE), "a") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return {"version": 1, "tokens": [], "enroll_keys": []}
        except (OSError, ValueError) as exc:
            raise StateUnreadable(f"cannot read {self.path}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
            raise StateUnreadable(f"cannot read {self.path}: not a commune-collector state file")
        data.setdefault("enroll_keys", [])
        return data

    def _write(self, data: dict, revoked: bool = False) -> None:
        self._write_file(data)
        if revoked and self.on_change is not None:
            try:
                self.on_change(data["tokens"])
            except OSError as exc:
                raise StateUnreadable(f"{self.path} was written but the revocation list was not ({exc.strerror}); "
                                      "run: commune-collector signing-key publish-revocations") from None

    def _write_file(self, data: dict) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".tokens.", dir=self.dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1, sort_keys=True)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._cache_key = None

    def refresh(self) -> None:
        """Re-read the file if it changed since the last read (cheap: one stat)."""
        try:
            st = os.stat(self.path)
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            key = (0, 0, 0)
        if key == self._cache_key:
            return
        data = self._read()
        self._data = data
        self._by_digest = {t["sha256"]: t for t in data["tokens"] if t.get("sha256") and not t.get("revoked")}
        self._cache_key = key

    # ------------------------------------------------------------ tokens

    def authenticate(self, token: str) -> Optional[Identity]:
        """The identity of a valid (not revoked) token, else None."""
        if not token:
            return None
        self.refresh()
        wanted = digest(token)
        record = self._by_digest.get(wanted)
        if record is None or not hmac.compare_digest(record["sha256"], wanted):
            return None
        return Identity(record["id"], record["commune"], record["agent"])

    def active_tokens(self) -> List[dict]:
        self.refresh()
        return [dict(t) for t in self._data["tokens"] if not t.get("revoked")]

    def add_token(self, commune: str, agent: str, pull_address: str = "", source: str = "cli",
                  replace: bool = False) -> Tuple[dict, str]:
        """Create a token; returns (record without the secret, the secret shown once).

        A name with a live token in the commune is refused (NameTaken) unless ``replace``, which
        revokes the live tokens of that name in the same write.
        """
        check_name("commune", commune)
        check_name("agent", agent)
        if pull_address:
            check_address(pull_address)
        with self._locked():
            data = self._read()
            revoked = self._claim(data, commune, agent, replace)
            record, token = self._new_token(data, commune, agent, pull_address, source)
            self._write(data, revoked)
        return _public(record), token

    def _claim(self, data: dict, commune: str, agent: str, replace: bool) -> bool:
        """Make ``agent`` of ``commune`` free for a new token: refuse while a live token holds the
        name (two agents writing as one would corrupt each other's series), or revoke it."""
        live = [t for t in data["tokens"] if t["commune"] == commune and t["agent"] == agent and not t.get("revoked")]
        if live and not replace:
            ids = ", ".join(t["id"] for t in live)
            raise NameTaken(f"agent {agent!r} of commune {commune!r} already has a live token ({ids}); "
                            "choose another agent name, or replace it (--replace revokes the old token)")
        now = self.clock()
        for t in live:
            t["revoked"] = now
            t["revoked_by"] = "replace"
        return bool(live)

    def _new_token(self, data: dict, commune: str, agent: str, pull_address: str, source: str) -> Tuple[dict, str]:
        token_id, created = _new_id("t-"), self.clock()
        record = {"id": token_id, "commune": commune, "agent": agent, "created": created, "revoked": None,
                  "pull_address": pull_address or "", "source": source}
        if self.issuer is not None:  # signed: any replica verifies it with the key file alone
            token, record["signed_by"] = self.issuer(token_id, commune, agent, created)
        else:
            token = TOKEN_PREFIX + secrets.token_urlsafe(32)
            record["sha256"] = digest(token)
        data["tokens"].append(record)
        return record, token

    def list_tokens(self, include_revoked: bool = False) -> List[dict]:
        data = self._read()
        return [_public(t) for t in data["tokens"] if include_revoked or not t.get("revoked")]

    def revoke_token(self, token_id: str) -> dict:
        with self._locked():
            data = self._read()
            for t in data["tokens"]:
                if t["id"] == token_id:
                    if t.get("revoked"):
                        raise StateError(f"token {token_id} is already revoked")
                    t["revoked"] = self.clock()
                    self._write(data, revoked=True)
                    return _public(t)
        raise StateError(f"no token with id {token_id!r} (see: commune-collector token list)")

    # ------------------------------------------------------------ enrollment keys

    def add_enroll_key(self, commune: str, ttl: float, uses: int = 1) -> Tuple[dict, str]:
        """A key for ``uses`` agents of ``commune`` (one per PC, or one for a commune's roll-out)."""
        check_name("commune", commune)
        if not 1 <= uses <= MAX_KEY_USES:
            raise StateError(f"--uses: must be from 1 to {MAX_KEY_USES}, got {uses}")
        key = ENROLL_PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        record = {"id": _new_id("k-"), "sha256": digest(key), "commune": commune, "created": now,
                  "expires": now + ttl, "uses": uses, "used_by": [], "used": None, "revoked": None}
        with self._locked():
            data = self._read()
            data["enroll_keys"].append(record)
            self._write(data)
        return _public(record), key

    def revoke_enroll_key(self, key_id: str) -> dict:
        """No further agent can enroll with it; the agents it enrolled keep their tokens."""
        with self._locked():
            data = self._read()
            for k in data["enroll_keys"]:
                if k["id"] == key_id:
                    if k.get("revoked"):
                        raise StateError(f"enrollment key {key_id} is already revoked")
                    k["revoked"] = self.clock()
                    self._write(data)
                    return _public(k)
        raise StateError(f"no enrollment key with id {key_id!r} (see: commune-collector enroll-key list)")

    def list_enroll_keys(self) -> List[dict]:
        return [_public(_key_record(k)) for k in self._read()["enroll_keys"]]

    def enroll(self, key: str, agent: str, pull_address: str = "", replace: bool = False,
               suffix: bool = False) -> Tuple[dict, str]:
        """Trade a valid key with uses left, unexpired and not revoked, for a new token of ``agent``
        in the key's commune.

        One use is spent in the same locked write that stores the token. Raises StateError saying
        why: a key nobody issued is only "unknown" (nothing to learn by guessing); the holder of a
        real key is told it expired, is used up or was revoked, with its id and commune. A name with
        a live token raises NameTaken (no use is spent) unless ``replace`` (the old token is
        revoked) or ``suffix`` (the first free ``name-2``, ``name-3``... is taken instead).
        """
        check_name("agent", agent)
        if pull_address:
            check_address(pull_address)
        wanted = digest(key)
        with self._locked():
            data = self._read()
            now = self.clock()
            found = None
            for k in data["enroll_keys"]:
                if hmac.compare_digest(k["sha256"], wanted):
                    found = _key_record(k)
            problem = _key_problem(found, now)
            if problem:
                raise StateError(problem)
            if suffix and not replace:
                agent = self._free_name(data, found["commune"], agent)
            revoked = self._claim(data, found["commune"], agent, replace)
            found["used"] = now  # the last use
            found["used_by"].append(agent)
            record, token = self._new_token(data, found["commune"], agent, pull_address, f"enroll:{found['id']}")
            self._write(data, revoked)
        return _public(record), token

    @staticmethod
    def _free_name(data: dict, commune: str, agent: str) -> str:
        """``agent`` if no live token holds it in ``commune``, else the first free ``agent-N``."""
        taken = {t["agent"] for t in data["tokens"] if t["commune"] == commune and not t.get("revoked")}
        if agent not in taken:
            return agent
        for n in range(2, 1000):
            candidate = f"{agent[:59]}-{n}"  # at most 63 characters, as agent names are
            if candidate not in taken:
                return candidate
        raise NameTaken(f"agent {agent!r} of commune {commune!r}: {agent[:59]}-2 to {agent[:59]}-999 are all taken")


def _key_problem(found: Optional[dict], now: float) -> str:
    """Why an enrollment key cannot be used now ("" when it can)."""
    if found is None:
        return ("enrollment key is unknown: check it was copied whole (it starts with cme_), "
                "or ask the province for a new one")
    which = f"enrollment key {found['id']} of commune {found['commune']}"
    if found.get("revoked"):
        return f"{which} was revoked on {_utc(found['revoked'])}; ask the province for a new one"
    if found["expires"] <= now:
        return f"{which} expired on {_utc(found['expires'])}; ask the province for a new one"
    if len(found["used_by"]) >= found["uses"]:
        return (f"{which} is used up: all {found['uses']} uses are spent; "
                "ask the province for a new one (or more uses)")
    return ""


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def _key_record(k: dict) -> dict:
    """An enrollment key in the current form, in place: keys written before multi-use keys had
    ``used_by`` as one name (or None) and no ``uses``: they were one-time keys."""
    if not isinstance(k.get("used_by"), list):
        k["used_by"] = [k["used_by"]] if k.get("used_by") else []
    k.setdefault("uses", 1)
    k.setdefault("revoked", None)
    return k


def _public(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "sha256"}
