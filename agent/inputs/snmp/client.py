"""GET, GETNEXT and multi-column GETBULK walks, over SNMP v1, v2c or v3.

v1/v2c go through :mod:`agent.inputs.snmp.udp` (our BER codec, one kept socket per device), v3
through :mod:`agent.inputs.snmp.usm` (USM on the same codec and socket handling, imported only
then); no version needs pysnmp.
Everything returned is plain Python: OIDs as tuples of ints, values as ``int``, ``bytes`` or
(for OBJECT IDENTIFIER and IpAddress values) dotted ``str``. Failures raise :class:`SnmpError`
with a short ``reason`` (``timeout``, ``auth_failure``, ``no_such_object``, ``unreachable``,
``error``) and a message that never contains a secret.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Sequence

from agent.inputs.snmp.ber import GET, GETBULK, GETNEXT, Oid
from agent.inputs.snmp.errors import SnmpError

_PDUS = {"get": GET, "next": GETNEXT, "bulk": GETBULK}


def session(address: str, port: int, auth, *, timeout: float, retries: int):
    """The transport for ``auth``: a community session, or (v3) a USM session."""
    if auth.version in ("1", "2c"):
        from agent.inputs.snmp.udp import CommunitySession

        return CommunitySession(address, port, 0 if auth.version == "1" else 1, auth.community.reveal(),
                                timeout=timeout, retries=retries)
    from agent.inputs.snmp.usm import UsmSession

    return UsmSession(address, port, auth, timeout=timeout, retries=retries)


class SnmpClient:
    """Requests to one device with one set of credentials."""

    def __init__(self, address: str, port: int, auth, *, timeout: float = 2.0, retries: int = 1,
                 max_repetitions: int = 25):
        self.address = address
        self.port = port
        self.auth = auth
        self.timeout = timeout
        self.retries = retries
        self.max_repetitions = max_repetitions
        self._session = session(address, port, auth, timeout=timeout, retries=retries)
        self.requests = 0

    def close(self) -> None:
        """Release the socket (a poller's client lives as long as the agent; discovery's do not)."""
        self._session.close()

    async def _request(self, kind: str, *args: int, oids: Sequence[Oid]) -> Sequence:
        """One request (``get``, ``next`` or ``bulk`` with non-repeaters and max-repetitions)."""
        self.requests += 1
        resp = await self._session.request(_PDUS[kind], oids, *args)
        if resp.error_status:
            raise _StatusError(resp.status_name, resp.error_index)
        return resp.varbinds

    async def get(self, oids: Iterable[Oid]) -> Dict[Oid, object]:
        """GET the instances; absent ones are left out (v1 noSuchName handled by retrying)."""
        pending = list(oids)
        out: Dict[Oid, object] = {}
        for start in range(0, len(pending), 30):
            chunk = pending[start:start + 30]
            while chunk:
                try:
                    vbs = await self._request("get", oids=chunk)
                except _StatusError as exc:
                    if exc.status == "noSuchName" and 0 < exc.index <= len(chunk):
                        chunk.pop(exc.index - 1)  # SNMPv1: drop the missing one and ask again
                        continue
                    raise SnmpError("error", f"{self.address}:{self.port}: {exc.status}") from None
                for name, value in vbs:
                    if value is not None:
                        out[name] = value
                break
        return out

    async def first_under(self, roots: Dict[str, Oid]) -> Dict[str, object]:
        """One GETNEXT per root (in one request): {name: first value under the root} for roots
        the device has anything under."""
        names = list(roots)
        out: Dict[str, object] = {}
        while names:
            try:
                vbs = await self._request("next", oids=[roots[n] for n in names])
            except _StatusError as exc:
                if exc.status == "noSuchName" and 0 < exc.index <= len(names):
                    names.pop(exc.index - 1)  # SNMPv1 end of MIB
                    continue
                raise SnmpError("error", f"{self.address}:{self.port}: {exc.status}") from None
            for name, (oid, value) in zip(names, vbs):
                root = roots[name]
                if value is not None and oid[:len(root)] == root:
                    out[name] = value
            break
        return out

    async def walk(self, roots: Iterable[Oid]) -> Dict[Oid, object]:
        """Walk every column (subtree) in ``roots`` together; returns {oid: value} of all of them.

        GETBULK with several columns per request (v2c/v3), GETNEXT for v1. Each column stops at
        the end of its subtree, so a device that lacks a column costs one varbind, not a request.
        """
        roots = list(dict.fromkeys(roots))
        out: Dict[Oid, object] = {}
        for start in range(0, len(roots), 12):
            await self._walk_group(roots[start:start + 12], out)
        return out

    async def _walk_group(self, roots: List[Oid], out: Dict[Oid, object]) -> None:
        cursor = {r: r for r in roots}
        active = list(roots)
        reps = self.max_repetitions
        while active:
            names = [cursor[r] for r in active]
            try:
                if self.auth.version == "1":
                    vbs = await self._request("next", oids=names)
                else:
                    vbs = await self._request("bulk", 0, max(1, reps), oids=names)
            except _StatusError as exc:
                if exc.status == "noSuchName" and self.auth.version == "1":
                    if 0 < exc.index <= len(active):  # end of the MIB for that column
                        active.pop(exc.index - 1)
                        continue
                    break
                if exc.status == "tooBig" and reps > 1:
                    reps //= 2
                    continue
                raise SnmpError("error", f"{self.address}:{self.port}: {exc.status}") from None
            if not vbs:
                break
            n = len(active)
            done = set()
            progressed = set()
            for i, (oid, value) in enumerate(vbs):
                root = active[i % n]
                if root in done:
                    continue
                if value is None or oid[:len(root)] != root or oid <= cursor[root]:
                    done.add(root)
                    continue
                out[oid] = value
                cursor[root] = oid
                progressed.add(root)
            active = [r for r in active if r not in done and r in progressed]


class _StatusError(Exception):
    def __init__(self, status: str, index: int):
        super().__init__(status)
        self.status = status
        self.index = index

