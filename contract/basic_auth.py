"""HTTP basic auth against bcrypt hashes, for the agent's ``/metrics`` and the collector's.

bcrypt is slow on purpose (tens of milliseconds per check), so:

- only **successful** checks are remembered (by the SHA-256 of the header, never the password), in
  a small LRU; junk credentials are never cached and so can never evict the real scraper's entry;
- :meth:`BasicAuth.cached` answers from memory alone, so a server on an event loop can answer a
  known scraper at once and run :meth:`BasicAuth.check` (bcrypt) in a worker thread otherwise.
"""
from __future__ import annotations

import base64
import collections
import hashlib
import threading
from typing import Mapping, Optional

CACHE_SIZE = 32


class BasicAuth:
    def __init__(self, users: Mapping[str, str]):
        """``users``: user name -> bcrypt hash (as text)."""
        self.users = {u: h.encode() for u, h in users.items()}
        self._ok: "collections.OrderedDict[bytes, None]" = collections.OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.users)

    @staticmethod
    def _key(header: str) -> bytes:
        return hashlib.sha256(header.encode("utf-8", "surrogatepass")).digest()

    def cached(self, header: Optional[str]) -> Optional[bool]:
        """True if no auth is configured or this header passed before; False if it can never pass
        (no or a malformed Basic header, unknown user); None if only bcrypt can tell."""
        if not self.users:
            return True
        parsed = _parse(header)
        if parsed is None or parsed[0] not in self.users:
            return False
        key = self._key(header or "")
        with self._lock:
            if key in self._ok:
                self._ok.move_to_end(key)
                return True
        return None

    def check(self, header: Optional[str]) -> bool:
        """The full check (blocking: bcrypt). Remembers a success."""
        answer = self.cached(header)
        if answer is not None:
            return answer
        user, password = _parse(header)  # type: ignore[misc]  # cached() returned None: it parses
        import bcrypt  # only when basic auth is configured

        try:
            ok = bcrypt.checkpw(password.encode("utf-8", "surrogatepass"), self.users[user])
        except ValueError:
            ok = False
        if ok:
            with self._lock:
                self._ok[self._key(header or "")] = None
                while len(self._ok) > CACHE_SIZE:
                    self._ok.popitem(last=False)
        return ok


def _parse(header: Optional[str]):
    if not header or not header.startswith("Basic "):
        return None
    try:
        user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (user, password) if sep else None
