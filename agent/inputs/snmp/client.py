"""The one module that imports pysnmp: GET, GETNEXT and multi-column GETBULK walks.

Everything it returns is plain Python: OIDs as tuples of ints, values as ``int``, ``bytes`` or
(for OBJECT IDENTIFIER values) dotted ``str``. Failures raise :class:`SnmpError` with a short
``reason`` (``timeout``, ``auth_failure``, ``no_such_object``, ``unreachable``, ``error``) and
a message that never contains a secret.
"""
from __future__ import annotations

import asyncio
import hashlib
import weakref
from typing import Dict, Iterable, List, Sequence, Tuple

from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData, ContextData, ObjectIdentity, ObjectType, SnmpEngine, UdpTransportTarget,
    Udp6TransportTarget, UsmUserData, get_cmd,
    usmHMACMD5AuthProtocol, usmHMACSHAAuthProtocol, usmHMAC128SHA224AuthProtocol,
    usmHMAC192SHA256AuthProtocol, usmHMAC256SHA384AuthProtocol, usmHMAC384SHA512AuthProtocol,
    usmNoAuthProtocol, usmNoPrivProtocol, usmDESPrivProtocol, usmAesCfb128Protocol,
    usmAesCfb192Protocol, usmAesCfb256Protocol, usmAesBlumenthalCfb192Protocol,
    usmAesBlumenthalCfb256Protocol,
)
from pysnmp.entity.rfc3413 import cmdgen
from pysnmp.hlapi.v3arch.asyncio.lcd import CommandGeneratorLcdConfigurator
from pysnmp.proto import rfc1902, rfc1905
from pyasn1.type import univ

from agent.inputs.snmp.errors import SnmpError

Oid = Tuple[int, ...]

_AUTH = {
    "MD5": usmHMACMD5AuthProtocol, "SHA": usmHMACSHAAuthProtocol,
    "SHA-224": usmHMAC128SHA224AuthProtocol, "SHA-256": usmHMAC192SHA256AuthProtocol,
    "SHA-384": usmHMAC256SHA384AuthProtocol, "SHA-512": usmHMAC384SHA512AuthProtocol,
}
# AES-192/256 extend short keys as draft-blumenthal-aes-usm does (net-snmp and most Linux-based
# devices); the "-C" variants as draft-reeder does (Cisco and agents compatible with it).
_PRIV = {
    "DES": usmDESPrivProtocol, "AES": usmAesCfb128Protocol, "AES-128": usmAesCfb128Protocol,
    "AES-192": usmAesBlumenthalCfb192Protocol, "AES-256": usmAesBlumenthalCfb256Protocol,
    "AES-192-C": usmAesCfb192Protocol, "AES-256-C": usmAesCfb256Protocol,
}

_AUTH_ERRORS = ("unknownusername", "unknownsecurityname", "wrongdigest", "decryptionerror",
                "notintimewindow", "unsupportedsecuritylevel", "authenticationfailure",
                "unknownengineid", "unavailablecontext", "unknowncontext")

_LCD = CommandGeneratorLcdConfigurator()
_NULL = univ.Null("")
# The command generators of pysnmp's lower layer, fed (OID, Null) pairs directly: the high-level
# API would resolve every OID against the MIB tree first, which costs CPU and tells us nothing.
_GENERATORS = {"get": cmdgen.GetCommandGenerator(), "next": cmdgen.NextCommandGenerator(),
               "bulk": cmdgen.BulkCommandGenerator()}

_ENGINES: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Dict[str, SnmpEngine]]" = \
    weakref.WeakKeyDictionary()


def engine(key: str = "") -> SnmpEngine:
    """One SNMP engine per event loop and credentials key (see :func:`credentials_key`)."""
    loop = asyncio.get_running_loop()
    engines = _ENGINES.setdefault(loop, {})
    eng = engines.get(key)
    if eng is None:
        eng = engines[key] = SnmpEngine()
    return eng


def _auth_data(auth) -> object:
    if auth.version in ("1", "2c"):
        return CommunityData(auth.community.reveal(), mpModel=0 if auth.version == "1" else 1)
    kwargs = {
        "authProtocol": _AUTH[auth.auth_protocol] if auth.auth_protocol else usmNoAuthProtocol,
        "privProtocol": _PRIV[auth.priv_protocol] if auth.priv_protocol else usmNoPrivProtocol,
    }
    if auth.auth_protocol:
        kwargs["authKey"] = auth.auth_password.reveal()
    if auth.priv_protocol:
        kwargs["privKey"] = auth.priv_password.reveal()
    return UsmUserData(auth.username, **kwargs)


def credentials_key(auth) -> str:
    """Which engine a target uses: pysnmp keeps one key set per v3 user name in an engine, so
    each distinct set of v3 credentials gets its own engine (community targets share one)."""
    if auth.version != "3":
        return ""
    h = hashlib.sha256()
    for part in (auth.username, auth.auth_protocol or "", auth.auth_password.reveal(),
                 auth.priv_protocol or "", auth.priv_password.reveal()):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def to_python(value) -> object:
    """pysnmp value -> int, bytes or dotted str; None for noSuchObject/Instance/endOfMibView."""
    if isinstance(value, (rfc1905.NoSuchObject, rfc1905.NoSuchInstance, rfc1905.EndOfMibView,
                          univ.Null)):
        return None
    if isinstance(value, rfc1902.IpAddress):
        return ".".join(str(b) for b in value.asOctets())
    if isinstance(value, univ.ObjectIdentifier):
        return ".".join(str(x) for x in value)
    if isinstance(value, univ.OctetString):
        return value.asOctets()
    if isinstance(value, univ.Integer):
        return int(value)
    return value.prettyPrint()


def classify_error(indication) -> str:
    text = type(indication).__name__.lower() + " " + str(indication).lower().replace(" ", "")
    if "timedout" in text or "timeout" in text:
        return "timeout"
    if any(k in text for k in _AUTH_ERRORS):
        return "auth_failure"
    return "error"


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
        self._auth_data = _auth_data(auth)
        self._engine_key = credentials_key(auth)
        self._context = ContextData(contextName=auth.context_name) if auth.version == "3" else ContextData()
        self._transport = None
        self.requests = 0

    async def _target(self):
        loop = asyncio.get_running_loop()
        if self._transport is None or self._transport[0] is not loop:
            cls = Udp6TransportTarget if ":" in self.address else UdpTransportTarget
            try:
                target = await cls.create((self.address, self.port), timeout=self.timeout, retries=self.retries)
            except Exception as exc:  # resolution failure and the like
                raise SnmpError("unreachable", f"cannot reach {self.address}:{self.port}: {exc}") from None
            self._transport = (loop, target)
        return self._transport[1]

    async def _request(self, kind: str, *args, oids: Sequence[Oid]) -> Sequence:
        """One request (``get``, ``next`` or ``bulk`` with non-repeaters and max-repetitions)."""
        transport = await self._target()
        self.requests += 1
        eng = engine(self._engine_key)
        future = asyncio.get_running_loop().create_future()

        def done(_engine, _handle, indication, status, index, var_binds, _ctx):
            if not future.done():
                future.set_result((indication, status, index, var_binds))

        try:
            addr_name, _params = _LCD.configure(eng, self._auth_data, transport, self._context.contextName)
            _GENERATORS[kind].send_varbinds(
                eng, addr_name, self._context.contextEngineId, self._context.contextName, *args,
                [(rfc1902.ObjectName(o), _NULL) for o in oids], done)
            indication, status, index, var_binds = await future
        except OSError as exc:
            raise SnmpError("unreachable", f"{self.address}:{self.port}: {exc.strerror or exc}") from None
        if indication:
            reason = classify_error(indication)
            if reason == "timeout" and self.auth.version == "3" and self.auth.priv_protocol:
                await self._diagnose_privacy(transport)
            raise SnmpError(reason, f"{self.address}:{self.port}: {indication}")
        if status:
            raise _StatusError(str(status.prettyPrint() if hasattr(status, "prettyPrint") else status),
                               int(index))
        return var_binds or ()

    async def _diagnose_privacy(self, transport) -> None:
        """An authPriv request timed out: agents drop what they cannot decrypt. Ask once without
        privacy; an answer means the user and auth key are right and the privacy key is not."""
        auth = self.auth
        plain = UsmUserData(auth.username, authKey=auth.auth_password.reveal(),
                            authProtocol=_AUTH[auth.auth_protocol])
        try:
            quick = await type(transport).create((self.address, self.port), timeout=self.timeout, retries=0)
            indication, _status, _index, _vbs = await get_cmd(
                engine(self._engine_key + "-nopriv"), plain, quick, self._context,
                ObjectType(ObjectIdentity("1.3.6.1.2.1.1.3.0")), lookupMib=False)
        except OSError:
            return
        if not indication:
            raise SnmpError("auth_failure", (
                f"{self.address}:{self.port}: user {auth.username!r} and its auth key are accepted, but "
                f"encrypted requests get no answer: wrong priv_password or priv_protocol"))
        if classify_error(indication) == "auth_failure":
            raise SnmpError("auth_failure", f"{self.address}:{self.port}: {indication}")

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
                    v = to_python(value)
                    if v is not None:
                        out[tuple(name)] = v
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
                v = to_python(value)
                if v is not None and tuple(oid)[:len(root)] == root:
                    out[name] = v
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
            for i, (name, value) in enumerate(vbs):
                root = active[i % n]
                if root in done:
                    continue
                oid = tuple(name)
                v = to_python(value)
                if v is None or oid[:len(root)] != root or oid <= cursor[root]:
                    done.add(root)
                    continue
                out[oid] = v
                cursor[root] = oid
                progressed.add(root)
            active = [r for r in active if r not in done and r in progressed]


class _StatusError(Exception):
    def __init__(self, status: str, index: int):
        super().__init__(status)
        self.status = status
        self.index = index

