"""Agent credentials every collector replica can check alone: signed tokens and a revocation list.

A signed token (``cms_``) carries who the agent is and a MAC over it::

    cms_<key id>.<base64url(JSON {"id", "commune", "agent", "iat"})>.<base64url(HMAC-SHA256)>

The MAC is HMAC-SHA256 with the key named by the key id over ``cms1.<key id>.<payload>``. Any
replica holding the key file verifies a token with no shared state and no lookup; the identity
labels come from the verified payload, never from what the agent sends.

- **Key file** (``credentials.signing_key_file``): one key per line, ``KEY_ID SECRET`` (32 random
  bytes, base64url); ``#`` starts a comment. The first key signs new tokens, every key listed
  verifies. Rotation: ``commune-collector signing-key create`` puts a new key first; tokens signed
  with the older keys keep working while those keys stay in the file; removing a key revokes every
  token it signed (the answer to a leaked key). The file must not be readable by group or others:
  a replica refuses it otherwise. Re-read when it changes (one ``stat`` per second at most).
- **Revocation list** (``credentials.revocation_file``): the ids of revoked tokens, one per line
  (``ID`` then free text). The replica that issues tokens rewrites it from ``tokens.json`` after
  every change (``token revoke``, an enrollment with ``replace``); the others read it. Ids of
  legacy ``cmt_`` tokens are listed too, so a stale copy of ``tokens.json`` on a replica cannot
  keep a revoked legacy token alive. Re-read when it changes, one ``stat`` per second at most.
  A configured list that is missing or unreadable is the collector's fault: 503, ``/-/ready`` fails.
- **Legacy tokens** (``cmt_``, hashed in ``tokens.json``) keep working wherever that file is.

How the files reach the replicas (config management, a shared read-only volume) and what it costs
is in ``docs/scale.md`` ("Topology and shared state").
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import tempfile
import time
from typing import Callable, Iterable, List, Optional, Tuple

from collector.state import Identity, StateError, StateUnreadable, Store

SIGNED_PREFIX = "cms_"
MAC_CONTEXT = b"cms1."
KEY_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
KEY_BYTES = 32
# A token is at most this long (names are at most 63 characters): longer is refused unparsed.
MAX_TOKEN_LENGTH = 512
# How often a replica looks at the key file and the revocation list (one stat each).
RELOAD_INTERVAL = 1.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _Watched:
    """A file re-read when its (mtime, size, inode) changes, looked at once per RELOAD_INTERVAL."""

    def __init__(self, path: str, parse: Callable[[str], object], what: str, monotonic=time.monotonic):
        self.path = path
        self.what = what
        self.parse = parse
        self.monotonic = monotonic
        self._key: Optional[tuple] = None
        self._value: object = None
        self._checked = float("-inf")
        self._error: Optional[str] = None

    def get(self):
        now = self.monotonic()
        if now - self._checked >= RELOAD_INTERVAL:
            self._checked = now
            self._load()
        if self._error is not None:
            raise StateUnreadable(self._error)
        return self._value

    def _load(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            self._error = f"cannot read {self.what} {self.path}: {exc.strerror}"
            self._key = None
            return
        key = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode)
        if key == self._key and self._error is None:
            return
        try:
            self._value = self.parse(self.path)
            self._error = None
            self._key = key
        except StateUnreadable as exc:
            self._error = str(exc)
            self._key = None


# ---------------------------------------------------------------- signing keys

def read_keys(path: str) -> List[Tuple[str, bytes]]:
    """The keys of a key file, first (signing) key first. StateUnreadable with the reason (never
    the key material) for a missing, group/other-readable or malformed file."""
    try:
        with open(path, encoding="utf-8") as fh:
            st = os.fstat(fh.fileno())
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise StateUnreadable(f"cannot read signing key file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if os.name == "posix" and st.st_mode & 0o077:
        raise StateUnreadable(f"signing key file {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}): "
                              f"chmod 600 {path}")
    keys: List[Tuple[str, bytes]] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not KEY_ID_RE.fullmatch(parts[0]):
            raise StateUnreadable(f"signing key file {path}:{n}: expected KEY_ID SECRET (key id: a-z, 0-9, -)")
        try:
            secret = _unb64(parts[1])
        except ValueError:
            secret = b""
        if len(secret) < KEY_BYTES:
            raise StateUnreadable(f"signing key file {path}:{n}: key {parts[0]} is not {KEY_BYTES} bytes of base64url")
        if any(kid == parts[0] for kid, _ in keys):
            raise StateUnreadable(f"signing key file {path}:{n}: key id {parts[0]} appears twice")
        keys.append((parts[0], secret))
    if not keys:
        raise StateUnreadable(f"signing key file {path} holds no key")
    return keys


def create_key(path: str, key_id: Optional[str] = None, clock=time.time) -> str:
    """Put a fresh key first in the key file (created with mode 0600); returns its id."""
    key_id = key_id or "k" + time.strftime("%Y%m%d-%H%M%S", time.gmtime(clock()))
    if not KEY_ID_RE.fullmatch(key_id):
        raise StateError(f"--key-id: expected a-z, 0-9 and - (at most 32), got {key_id!r}")
    old: List[Tuple[str, bytes]] = []
    if os.path.exists(path):
        old = read_keys(path)
        if any(kid == key_id for kid, _ in old):
            raise StateError(f"key id {key_id} is already in {path}")
    lines = ["# commune-collector signing keys: KEY_ID SECRET. The first key signs new agent tokens,",
             "# every key verifies. Removing a key revokes every token it signed. Keep this file 0600.",
             f"{key_id} {_b64(secrets.token_bytes(KEY_BYTES))}"]
    lines += [f"{kid} {_b64(secret)}" for kid, secret in old]
    _write_private(path, "\n".join(lines) + "\n")
    return key_id


def _write_private(path: str, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename) with ``mode``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class KeyRing:
    """Signs and verifies agent tokens with the keys of one key file."""

    def __init__(self, path: str, monotonic=time.monotonic):
        self.path = path
        self._file = _Watched(path, read_keys, "signing key file", monotonic)

    def keys(self) -> List[Tuple[str, bytes]]:
        return self._file.get()  # type: ignore[return-value]

    def sign(self, token_id: str, commune: str, agent: str, issued: float) -> Tuple[str, str]:
        """(token, key id) for an identity, signed with the first key of the file."""
        kid, secret = self.keys()[0]
        payload = _b64(json.dumps({"id": token_id, "commune": commune, "agent": agent, "iat": int(issued)},
                                  separators=(",", ":"), sort_keys=True).encode("utf-8"))
        mac = hmac.new(secret, MAC_CONTEXT + f"{kid}.{payload}".encode("ascii"), hashlib.sha256).digest()
        return f"{SIGNED_PREFIX}{kid}.{payload}.{_b64(mac)}", kid

    def verify(self, token: str) -> Optional[Identity]:
        """The identity in a token whose MAC checks with a key of the file, else None."""
        if not token.startswith(SIGNED_PREFIX) or len(token) > MAX_TOKEN_LENGTH:
            return None
        parts = token[len(SIGNED_PREFIX):].split(".")
        if len(parts) != 3:
            return None
        kid, payload, mac_text = parts
        secret = dict(self.keys()).get(kid)
        if secret is None:
            return None
        try:
            mac = _unb64(mac_text)
        except ValueError:
            return None
        expected = hmac.new(secret, MAC_CONTEXT + f"{kid}.{payload}".encode("ascii"), hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            return None
        try:  # signed by us: a payload that does not parse is a bug, refused all the same
            claims = json.loads(_unb64(payload))
            return Identity(str(claims["id"]), str(claims["commune"]), str(claims["agent"]))
        except (ValueError, KeyError, TypeError):
            return None


# ---------------------------------------------------------------- revocation list

def read_revocations(path: str) -> frozenset:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise StateUnreadable(f"cannot read revocation list {path}: {getattr(exc, 'strerror', None) or exc}") from None
    ids = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.add(line.split()[0])
    return frozenset(ids)


def write_revocations(path: str, tokens: Iterable[dict]) -> int:
    """Rewrite the revocation list from token records (tokens.json): every revoked id. Returns how
    many. Readable by all (it holds ids only): replicas may run as other users."""
    rows = sorted((t for t in tokens if t.get("revoked")), key=lambda t: (t["revoked"], t["id"]))
    lines = ["# commune-collector revoked agent tokens: ID REVOKED_AT COMMUNE AGENT. Written by the replica",
             "# that issues tokens (tokens.json); every replica re-reads it when it changes."]
    for t in rows:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t["revoked"]))
        lines.append(f"{t['id']} {when} {t['commune']} {t['agent']}")
    _write_private(path, "\n".join(lines) + "\n", mode=0o644)
    return len(rows)


class Revocations:
    def __init__(self, path: str, monotonic=time.monotonic):
        self.path = path
        self._file = _Watched(path, read_revocations, "revocation list", monotonic)

    def revoked(self, token_id: str) -> bool:
        return token_id in self._file.get()  # type: ignore[operator]


# ---------------------------------------------------------------- what the collector uses

class Credentials:
    """Authenticates agent tokens of both kinds and issues new ones.

    ``cms_`` tokens are checked with the key ring and the revocation list alone; ``cmt_`` tokens
    with ``tokens.json`` (the state directory), and then the revocation list too.
    """

    def __init__(self, store: Store, signing_key_file: str = "", revocation_file: str = "",
                 monotonic=time.monotonic):
        self.store = store
        self.keys = KeyRing(signing_key_file, monotonic) if signing_key_file else None
        self.revocations = Revocations(revocation_file, monotonic) if revocation_file else None
        self.revocation_file = revocation_file
        if self.keys is not None:
            store.issuer = self._issue
        if revocation_file:
            store.on_change = self._publish

    def _issue(self, token_id: str, commune: str, agent: str, issued: float) -> Tuple[str, str]:
        assert self.keys is not None
        return self.keys.sign(token_id, commune, agent, issued)

    def _publish(self, tokens: List[dict]) -> None:
        write_revocations(self.revocation_file, tokens)

    def authenticate(self, token: str) -> Optional[Identity]:
        """The identity of a valid token, None for an invalid or revoked one; StateUnreadable when
        the key file, the revocation list or tokens.json cannot be read (the collector's fault)."""
        if not token:
            return None
        if token.startswith(SIGNED_PREFIX):
            identity = self.keys.verify(token) if self.keys is not None else None
        else:
            identity = self.store.authenticate(token)
        if identity is not None and self.revocations is not None and self.revocations.revoked(identity.token_id):
            return None
        return identity

    def check(self) -> None:
        """Raise StateUnreadable when a file this replica needs cannot be read (for /-/ready)."""
        self.store.refresh()
        if self.keys is not None:
            self.keys.keys()
        if self.revocations is not None:
            self.revocations.revoked("")


def from_config(config) -> Credentials:
    """The credentials of a collector config (``state`` and ``credentials`` sections)."""
    section = config.credentials
    return Credentials(Store(config.state.dir), section.signing_key_file, section.revocation_file)


# ---------------------------------------------------------------- commune-collector signing-key

def signing_key_main(argv: List[str]) -> int:
    import argparse
    import sys

    from collector.cli import _config_arg, _load

    p = argparse.ArgumentParser(prog="commune-collector signing-key",
                                description="Keys that sign agent tokens (credentials.signing_key_file).")
    sub = p.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="put a new key first in the key file: it signs from now on, the "
                                           "older keys still verify")
    create.add_argument("--key-id", help="id of the new key (default: k + UTC date and time)")
    create.add_argument("--file", help="key file (default: credentials.signing_key_file of the config)")
    _config_arg(create)
    lst = sub.add_parser("list", help="list key ids (never the keys), the signing one first")
    lst.add_argument("--file", help="key file (default: credentials.signing_key_file of the config)")
    _config_arg(lst)
    rev = sub.add_parser("publish-revocations", help="rewrite credentials.revocation_file from tokens.json")
    _config_arg(rev)
    args = p.parse_args(argv)

    path = getattr(args, "file", None)
    config = None
    if not path:
        config = _load(args.config)
        if config is None:
            return 1
        path = config.credentials.signing_key_file
    try:
        if args.action == "publish-revocations":
            if not config.credentials.revocation_file:
                raise StateError("credentials.revocation_file is not set in the config")
            n = write_revocations(config.credentials.revocation_file, Store(config.state.dir).list_tokens(True))
            print(f"{config.credentials.revocation_file}: {n} revoked token(s)")
            return 0
        if not path:
            raise StateError("no key file: set credentials.signing_key_file in the config or pass --file")
        if args.action == "create":
            kid = create_key(path, args.key_id)
            print(f"key {kid} now signs new agent tokens ({path}); copy the file to every replica "
                  "(mode 0600) before tokens signed with it are used there")
        else:
            for i, (kid, _secret) in enumerate(read_keys(path)):
                print(f"{kid}{'  (signs)' if i == 0 else ''}")
    except StateError as exc:
        print(f"commune-collector signing-key {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


__all__ = ["Credentials", "KeyRing", "Revocations", "create_key", "from_config", "read_keys",
           "read_revocations", "write_revocations", "SIGNED_PREFIX"]
