"""SNMPv3 requests with the User-based Security Model (RFC 3412, RFC 3414), without pysnmp.

Messages are built and read by :mod:`agent.inputs.snmp.ber`, keys, digests and ciphers come from
:mod:`agent.inputs.snmp.usmkeys`, the socket and retries from
:class:`agent.inputs.snmp.udp.DatagramSession`. A session, one per target:

1. discovers the device's engine on its first request (RFC 3414 section 4: an empty
   noAuthNoPriv request, answered by a usmStatsUnknownEngineIDs Report that carries the engine ID,
   boots and time), localizes the keys to it (cached per password and engine ID);
2. sends each request at the configured security level with the engine's estimated time; a
   usmStatsNotInTimeWindows Report (a reboot, a clock drift) updates boots and time and the request
   is sent once more; a usmStatsUnknownEngineIDs Report (another device at the address) repeats the
   discovery once;
3. accepts an answer only when it matches the msgID, has the request's security level and its
   digest is right (anything else is dropped, as RFC 3414 3.2 says, and the timeout says how many
   were); it decrypts it and returns the same :class:`~agent.inputs.snmp.ber.Response` as the
   v1/v2c session.

Reports become :class:`SnmpError` with reason ``auth_failure`` (or ``error``) and a message naming
the cause, never a secret. Agents drop requests they cannot decrypt without a Report (net-snmp
does), so an authPriv request that times out is tried once without privacy: an authentic answer
then means the user and auth key are right and the privacy key or protocol is not.
"""
from __future__ import annotations

import random
import time
from typing import Dict, Optional, Sequence, Tuple

from agent.inputs.snmp import usmkeys
from agent.inputs.snmp.ber import (
    FLAG_AUTH, FLAG_PRIV, FLAG_REPORTABLE, GET, GETBULK, REPORT, BerError, Oid, Response, V3Message,
    decode_scoped_pdu, decode_v3_message, encode_pdu, encode_scoped_pdu, encode_v3_message,
)
from agent.inputs.snmp.errors import SnmpError
from agent.inputs.snmp.udp import DatagramSession

MAX_SIZE = 65507  # msgMaxSize: the largest UDP payload over IPv4
TIME_WINDOW = 150  # seconds (RFC 3414 section 2.2.3)
_BOOTS_MAX = 2147483647
_SYS_UPTIME = (1, 3, 6, 1, 2, 1, 1, 3, 0)

_USM_STATS = (1, 3, 6, 1, 6, 3, 15, 1, 1)
UNSUPPORTED_SEC_LEVEL, NOT_IN_TIME_WINDOW, UNKNOWN_USER, UNKNOWN_ENGINE_ID, WRONG_DIGEST, \
    DECRYPTION_ERROR = (_USM_STATS + (n, 0) for n in range(1, 7))
# RFC 3412 / RFC 3413 counters a Report may carry too
_OTHER_REPORTS = {
    (1, 3, 6, 1, 6, 3, 11, 2, 1, 1, 0): ("error", "the device does not know the USM security model "
                                                  "(snmpUnknownSecurityModels)"),
    (1, 3, 6, 1, 6, 3, 11, 2, 1, 2, 0): ("error", "the device finds the request invalid (snmpInvalidMsgs)"),
    (1, 3, 6, 1, 6, 3, 11, 2, 1, 3, 0): ("error", "the device has no handler for the request "
                                                  "(snmpUnknownPDUHandlers)"),
    (1, 3, 6, 1, 6, 3, 12, 1, 4, 0): ("auth_failure", "context {context!r} is unavailable (snmpUnavailableContexts)"),
    (1, 3, 6, 1, 6, 3, 12, 1, 5, 0): ("auth_failure", "unknown context {context!r} (snmpUnknownContexts)"),
}


class UsmSession(DatagramSession):
    """SNMPv3 requests to one device with one user's credentials (an ``AuthConfig``)."""

    def __init__(self, address: str, port: int, auth, *, timeout: float, retries: int):
        super().__init__(address, port, timeout=timeout, retries=retries)
        self.username = auth.username
        self._user = auth.username.encode("utf-8")
        self._context = auth.context_name.encode("utf-8")
        self._auth_protocol: Optional[str] = auth.auth_protocol
        self._priv_protocol: Optional[str] = auth.priv_protocol if auth.auth_protocol else None
        # Never printed: only turned into keys.
        self._auth_password = auth.auth_password.reveal().encode("utf-8")
        self._priv_password = auth.priv_password.reveal().encode("utf-8")
        self._engine_id: Optional[bytes] = None
        self._boots = 0
        self._time = 0
        self._time_at = 0.0  # monotonic clock when _time was learned
        self._auth_key = b""
        self._priv_key = b""
        self._next_id = random.getrandbits(31)
        self._salt = random.getrandbits(64)
        self._sent: Dict[int, int] = {}  # msgID -> msgFlags of the request
        self._dropped = 0  # answers that failed authentication during the current request
        self._header: Optional[Tuple[bytes, V3Message]] = None

    @property
    def level(self) -> str:
        return "authPriv" if self._priv_protocol else "authNoPriv" if self._auth_protocol else "noAuthNoPriv"

    # ---------------------------------------------------------------- engine and keys

    def _learn(self, engine_id: bytes, boots: int, engine_time: int) -> None:
        if engine_id != self._engine_id:
            self._engine_id = engine_id
            if self._auth_protocol:
                self._auth_key = usmkeys.auth_key(self._auth_protocol, self._auth_password, engine_id)
            if self._priv_protocol:
                self._priv_key = usmkeys.priv_key(self._auth_protocol, self._priv_protocol,
                                                  self._priv_password, engine_id)
        self._boots, self._time, self._time_at = boots, engine_time, time.monotonic()

    def _engine_time(self) -> int:
        return min(self._time + int(time.monotonic() - self._time_at), _BOOTS_MAX)

    async def _discover(self) -> None:
        """Learn the engine ID, boots and time from the Report to an empty request."""
        self._engine_id = None
        msg_id = self._take_id()
        scoped = encode_scoped_pdu(b"", b"", encode_pdu(GET, msg_id, ()))
        message, _ = encode_v3_message(msg_id, MAX_SIZE, FLAG_REPORTABLE, b"", 0, 0, b"", 0, b"", scoped)
        kind, resp, msg = await self._send(msg_id, FLAG_REPORTABLE, message)
        if not msg.engine_id:
            raise SnmpError("error", f"{self._where()}: engine discovery answered without an engine ID")
        self._learn(msg.engine_id, msg.boots, msg.time)

    # ---------------------------------------------------------------- requests

    def _take_id(self) -> int:
        msg_id = self._next_id
        self._next_id = (msg_id + 1) & 0x7FFFFFFF
        return msg_id

    def _message(self, pdu: int, oids: Sequence[Oid], non_repeaters: int, max_repetitions: int,
                 privacy: bool) -> Tuple[int, int, bytes]:
        msg_id = self._take_id()
        engine_id = self._engine_id or b""
        scoped = encode_scoped_pdu(engine_id, self._context, encode_pdu(
            pdu, msg_id, oids, non_repeaters, max_repetitions if pdu == GETBULK else 0))
        boots, engine_time = self._boots, self._engine_time()
        flags = FLAG_REPORTABLE
        priv_params = b""
        if self._auth_protocol:
            flags |= FLAG_AUTH
            if privacy and self._priv_protocol:
                flags |= FLAG_PRIV
                self._salt = (self._salt + 1) & 0xFFFFFFFFFFFFFFFF
                scoped, priv_params = usmkeys.encrypt(self._priv_protocol, self._priv_key, boots,
                                                      engine_time, self._salt, scoped)
        length = usmkeys.AUTH[self._auth_protocol][1] if self._auth_protocol else 0
        message, offset = encode_v3_message(msg_id, MAX_SIZE, flags, engine_id, boots, engine_time,
                                            self._user, length, priv_params, scoped)
        if length:
            mac = usmkeys.digest(self._auth_protocol, self._auth_key, message)
            message = message[:offset] + mac + message[offset + length:]
        return msg_id, flags, message

    async def _send(self, msg_id: int, flags: int, message: bytes,
                    retries: Optional[int] = None) -> Tuple[int, Response, V3Message]:
        self._sent[msg_id] = flags
        self._dropped = 0
        try:
            return await self._exchange(msg_id, message, retries)
        finally:
            del self._sent[msg_id]

    async def request(self, pdu: int, oids: Sequence[Oid], non_repeaters: int = 0,
                      max_repetitions: int = 0) -> Response:
        if self._engine_id is None:
            await self._discover()
        resynced = rediscovered = False
        while True:
            msg_id, flags, message = self._message(pdu, oids, non_repeaters, max_repetitions, True)
            try:
                kind, resp, _msg = await self._send(msg_id, flags, message)
            except SnmpError as exc:
                if exc.reason == "timeout" and self._priv_protocol:
                    await self._diagnose_privacy()
                raise
            if kind != REPORT:
                return resp
            report = resp.varbinds[0][0] if resp.varbinds else ()
            if report == NOT_IN_TIME_WINDOW and not resynced and self._auth_protocol:
                resynced = True  # the Report, authentic, brought the engine's boots and time
                continue
            if report == UNKNOWN_ENGINE_ID and not rediscovered:
                rediscovered = True
                await self._discover()
                continue
            raise self._report_error(report)

    async def _diagnose_privacy(self) -> None:
        """An authPriv request timed out: agents drop what they cannot decrypt. Ask once without
        privacy; an authentic answer means the user and auth key are right and the privacy key
        is not."""
        msg_id, flags, message = self._message(GET, (_SYS_UPTIME,), 0, 0, False)
        try:
            kind, resp, _msg = await self._send(msg_id, flags, message, retries=0)
        except SnmpError:
            return  # no answer either: the timeout stands
        report = resp.varbinds[0][0] if kind == REPORT and resp.varbinds else None
        if report in (UNKNOWN_USER, WRONG_DIGEST, UNKNOWN_ENGINE_ID):
            raise self._report_error(report)
        raise SnmpError("auth_failure", (
            f"{self._where()}: user {self.username!r} and its auth key are accepted, but encrypted "
            f"requests get no answer: wrong priv_password or priv_protocol"))

    def _report_error(self, report: Oid) -> SnmpError:
        where, user = self._where(), self.username
        if report == UNKNOWN_USER:
            return SnmpError("auth_failure", f"{where}: unknown user {user!r} (usmStatsUnknownUserNames)")
        if report == WRONG_DIGEST:
            return SnmpError("auth_failure", f"{where}: wrong digest: the device rejects the auth_password "
                                             f"or auth_protocol of user {user!r} (usmStatsWrongDigests)")
        if report == DECRYPTION_ERROR:
            return SnmpError("auth_failure", f"{where}: the device cannot decrypt the requests of user "
                                             f"{user!r}: wrong priv_password or priv_protocol "
                                             f"(usmStatsDecryptionErrors)")
        if report == UNSUPPORTED_SEC_LEVEL:
            return SnmpError("auth_failure", f"{where}: user {user!r} is not configured for {self.level} "
                                             f"on the device (usmStatsUnsupportedSecLevels)")
        if report == NOT_IN_TIME_WINDOW:
            return SnmpError("auth_failure", f"{where}: not in the device's time window, even after "
                                             f"resynchronizing (usmStatsNotInTimeWindows)")
        if report == UNKNOWN_ENGINE_ID:
            return SnmpError("auth_failure", f"{where}: the device keeps reporting an unknown engine ID "
                                             f"(usmStatsUnknownEngineIDs)")
        reason, text = _OTHER_REPORTS.get(report, ("error", "Report {oid}"))
        return SnmpError(reason, f"{where}: " + text.format(
            context=self._context.decode("utf-8", "replace"), oid=".".join(map(str, report)) or "without varbinds"))

    # ---------------------------------------------------------------- answers

    def _match(self, data: bytes) -> int:
        msg = decode_v3_message(data)
        self._header = (data, msg)
        return msg.msg_id

    def _decode(self, data: bytes, key: int):
        """(PDU tag, Response, message) of an answer to request ``key``; None drops it."""
        cached = self._header
        msg = cached[1] if cached is not None and cached[0] is data else decode_v3_message(data)
        self._header = None
        sent = self._sent.get(key, 0)
        if msg.flags & FLAG_PRIV and not msg.flags & FLAG_AUTH:
            raise BerError("msgFlags with privacy but no authentication")
        if msg.flags & FLAG_AUTH:
            if not sent & FLAG_AUTH or msg.engine_id != self._engine_id or msg.user != self._user or \
                    not usmkeys.verify(self._auth_protocol, self._auth_key, data, msg.auth_offset, msg.auth_params):
                self._dropped += 1
                return None
            self._check_time(msg)
        plain = msg.data
        if msg.flags & FLAG_PRIV:
            if not sent & FLAG_PRIV:
                self._dropped += 1
                return None
            try:
                plain = usmkeys.decrypt(self._priv_protocol, self._priv_key, msg.boots, msg.time,
                                        msg.priv_params, msg.data)
            except ValueError as exc:
                raise SnmpError("error", f"{self._where()}: cannot decrypt the answer: {exc}") from None
        try:
            _engine, _context, pdu, resp = decode_scoped_pdu(
                plain, padded=bool(msg.flags & FLAG_PRIV) and self._priv_protocol == "DES")
        except BerError as exc:
            if msg.flags & FLAG_PRIV:
                raise SnmpError("auth_failure", f"{self._where()}: the answer does not decrypt to a "
                                                f"scopedPDU ({exc}): wrong priv_protocol?") from None
            raise
        if pdu != REPORT and (msg.flags & (FLAG_AUTH | FLAG_PRIV)) != (sent & (FLAG_AUTH | FLAG_PRIV)):
            self._dropped += 1  # a Response must have the request's security level (RFC 3412 7.2 12)
            return None
        return pdu, resp, msg

    def _check_time(self, msg: V3Message) -> None:
        """RFC 3414 3.2 step 7b, for an authentic message from the authoritative engine: learn a
        later boots/time; refuse a message from before the window (a replay, or an engine whose
        boots went back), and forget the engine so the next request discovers it again."""
        if msg.boots > self._boots or (msg.boots == self._boots and msg.time > self._time):
            self._learn(msg.engine_id, msg.boots, msg.time)
            return
        if msg.boots == _BOOTS_MAX or msg.boots < self._boots or \
                msg.time < self._engine_time() - TIME_WINDOW:
            self._engine_id = None
            raise SnmpError("auth_failure", f"{self._where()}: an authentic answer from outside the time "
                                            f"window (engine boots {msg.boots}, time {msg.time}); the "
                                            f"engine is discovered again on the next request")

    def _timeout_note(self) -> str:
        if self._dropped:
            return f"; {self._dropped} answer(s) dropped: wrong digest, engine or security level"
        return ""
