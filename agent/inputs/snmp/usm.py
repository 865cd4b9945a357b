"""SNMPv3 requests (USM: every security level, MD5/SHA/SHA-2 auth, DES/AES privacy) through
pysnmp's lower-level command generators: the one module that imports pysnmp, and only when a v3
auth is configured (v1/v2c go through :mod:`agent.inputs.snmp.udp`, without pysnmp).

It answers like :class:`agent.inputs.snmp.udp.CommunitySession`: a
:class:`~agent.inputs.snmp.ber.Response` with plain Python values. Failures raise
:class:`SnmpError` with a message that never contains a secret.
"""
from __future__ import annotations

import asyncio
import hashlib
import weakref
from typing import Dict, Sequence

from pysnmp.hlapi.v3arch.asyncio import (
    ContextData, ObjectIdentity, ObjectType, SnmpEngine, UdpTransportTarget,
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

from agent.inputs.snmp.ber import GET, GETBULK, GETNEXT, Oid, Response
from agent.inputs.snmp.errors import SnmpError

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
_GENERATORS = {GET: cmdgen.GetCommandGenerator(), GETNEXT: cmdgen.NextCommandGenerator(),
               GETBULK: cmdgen.BulkCommandGenerator()}

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


def _user_data(auth) -> UsmUserData:
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
    each distinct set of v3 credentials gets its own engine."""
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


class UsmSession:
    """SNMPv3 requests to one device with one user's credentials."""

    def __init__(self, address: str, port: int, auth, *, timeout: float, retries: int):
        self.address = address
        self.port = port
        self.auth = auth
        self.timeout = timeout
        self.retries = retries
        self._user = _user_data(auth)
        self._engine_key = credentials_key(auth)
        self._context = ContextData(contextName=auth.context_name)
        self._transport = None

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

    async def request(self, pdu: int, oids: Sequence[Oid], non_repeaters: int = 0,
                      max_repetitions: int = 0) -> Response:
        transport = await self._target()
        eng = engine(self._engine_key)
        future = asyncio.get_running_loop().create_future()

        def done(_engine, _handle, indication, status, index, var_binds, _ctx):
            if not future.done():
                future.set_result((indication, status, index, var_binds))

        args = (non_repeaters, max_repetitions) if pdu == GETBULK else ()
        try:
            addr_name, _params = _LCD.configure(eng, self._user, transport, self._context.contextName)
            _GENERATORS[pdu].send_varbinds(
                eng, addr_name, self._context.contextEngineId, self._context.contextName, *args,
                [(rfc1902.ObjectName(o), _NULL) for o in oids], done)
            indication, status, index, var_binds = await future
        except OSError as exc:
            raise SnmpError("unreachable", f"{self.address}:{self.port}: {exc.strerror or exc}") from None
        if indication:
            reason = classify_error(indication)
            if reason == "timeout" and self.auth.priv_protocol:
                await self._diagnose_privacy(transport)
            raise SnmpError(reason, f"{self.address}:{self.port}: {indication}")
        return Response(3, b"", 0, int(status or 0), int(index or 0),
                        [(tuple(name), to_python(value)) for name, value in var_binds or ()])

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

    def close(self) -> None:
        """Nothing to release: the engines and their transports are shared per event loop."""
