"""SNMP messages in BER (RFC 1157, RFC 3416, RFC 3412, RFC 3414, X.690): encode requests, decode
responses.

Pure and small: only what a manager sends (GET, GETNEXT, GETBULK with NULL values; v1/v2c with a
community, v3 with USM security parameters and a scopedPDU) and reads (a Response or Report PDU).
Encryption and digests are not done here (:mod:`agent.inputs.snmp.usmkeys`): the v3 functions
take and return the encrypted scopedPDU as bytes and say where the digest sits.

Decoded values are plain Python, as :mod:`agent.inputs.snmp.client` returns them:
``int`` (INTEGER, Counter32, Gauge32, TimeTicks, Counter64, UInteger32), ``bytes`` (OCTET STRING,
Opaque, NsapAddress), dotted ``str`` (OBJECT IDENTIFIER, IpAddress) and ``None`` (NULL,
noSuchObject, noSuchInstance, endOfMibView). Anything else is refused with :class:`BerError`
naming what is wrong: indefinite or over-long lengths, constructed strings, unknown tags, OIDs with
more than 128 arcs or an arc above 2^32-1, unsigned values out of range, trailing bytes. The input
is one UDP datagram (at most 64 KiB), decoded without recursion, so cost is linear in its size.
"""
from __future__ import annotations

from functools import lru_cache
from typing import List, NamedTuple, Sequence, Tuple

Oid = Tuple[int, ...]

GET, GETNEXT, RESPONSE, GETBULK, REPORT = 0xA0, 0xA1, 0xA2, 0xA5, 0xA8

ERROR_STATUS = ("noError", "tooBig", "noSuchName", "badValue", "readOnly", "genErr", "noAccess",
                "wrongType", "wrongLength", "wrongEncoding", "wrongValue", "noCreation",
                "inconsistentValue", "resourceUnavailable", "commitFailed", "undoFailed",
                "authorizationError", "notWritable", "inconsistentName")

MAX_ARCS = 128  # RFC 2578 section 3.5
_ARC_LIMIT = 0xFFFFFFFF + 80  # the first subidentifier holds 40 * X + Y
_UNSIGNED_BITS = {0x41: 32, 0x42: 32, 0x43: 32, 0x46: 64, 0x47: 32}  # Counter32 Gauge32 TimeTicks Counter64 UInteger32
_STRINGS = (0x04, 0x44, 0x45)  # OCTET STRING, Opaque, NsapAddress
_EXCEPTIONS = (0x05, 0x80, 0x81, 0x82)  # NULL, noSuchObject, noSuchInstance, endOfMibView


class BerError(ValueError):
    """A datagram that is not a well-formed SNMP message; the text says what and where."""


class Response(NamedTuple):
    version: int  # 0 = v1, 1 = v2c, 3 = v3
    community: bytes  # b"" for v3
    request_id: int
    error_status: int
    error_index: int
    varbinds: List[Tuple[Oid, object]]

    @property
    def status_name(self) -> str:
        s = self.error_status
        return ERROR_STATUS[s] if 0 <= s < len(ERROR_STATUS) else f"error status {s}"


# ------------------------------------------------------------------ encoding

def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes((tag,)) + _length(len(body)) + body


def _integer(v: int) -> bytes:
    return _tlv(0x02, v.to_bytes(v.bit_length() // 8 + 1, "big", signed=True))


@lru_cache(maxsize=4096)
def encode_oid(oid: Oid) -> bytes:
    """The OBJECT IDENTIFIER TLV of ``oid`` (cached: profiles ask for the same OIDs every poll)."""
    if len(oid) < 2 or oid[0] > 2 or (oid[0] < 2 and oid[1] > 39) or len(oid) > MAX_ARCS:
        raise BerError(f"cannot encode OID {'.'.join(map(str, oid))}")
    out = bytearray()
    for arc in (oid[0] * 40 + oid[1],) + tuple(oid[2:]):
        if arc < 0 or arc > 0xFFFFFFFF:
            raise BerError(f"OID arc {arc} out of range")
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return _tlv(0x06, bytes(out))


def encode_pdu(pdu: int, request_id: int, oids: Sequence[Oid], non_repeaters: int = 0,
               max_repetitions: int = 0) -> bytes:
    """A GET / GETNEXT / GETBULK PDU asking for ``oids`` (NULL values)."""
    vbs = b"".join(_tlv(0x30, encode_oid(tuple(o)) + b"\x05\x00") for o in oids)
    if pdu == GETBULK:
        a, b = non_repeaters, max_repetitions
    else:
        a = b = 0
    return _tlv(pdu, _integer(request_id) + _integer(a) + _integer(b) + _tlv(0x30, vbs))


def encode_request(version: int, community: bytes, pdu: int, request_id: int, oids: Sequence[Oid],
                   non_repeaters: int = 0, max_repetitions: int = 0) -> bytes:
    """A v1/v2c GET / GETNEXT / GETBULK message asking for ``oids`` (NULL values)."""
    return _tlv(0x30, _integer(version) + _tlv(0x04, bytes(community))
                + encode_pdu(pdu, request_id, oids, non_repeaters, max_repetitions))


# SNMPv3 (RFC 3412 section 6, RFC 3414 section 2.4): msgFlags bits and the USM security model.
FLAG_AUTH, FLAG_PRIV, FLAG_REPORTABLE = 0x01, 0x02, 0x04
USM_MODEL = 3


def encode_scoped_pdu(context_engine_id: bytes, context_name: bytes, pdu: bytes) -> bytes:
    return _tlv(0x30, _tlv(0x04, context_engine_id) + _tlv(0x04, context_name) + pdu)


def encode_v3_message(msg_id: int, max_size: int, flags: int, engine_id: bytes, boots: int,
                      time: int, user: bytes, auth_length: int, priv_params: bytes,
                      data: bytes) -> Tuple[bytes, int]:
    """An SNMPv3 message with USM security parameters; ``data`` is the scopedPDU TLV, or (with
    FLAG_PRIV) the encrypted scopedPDU, put in an OCTET STRING here. The authentication
    parameters are ``auth_length`` zero bytes; returns (message, offset of those bytes)."""
    if flags & FLAG_PRIV:
        data = _tlv(0x04, data)
    head = _tlv(0x04, engine_id) + _integer(boots) + _integer(time) + _tlv(0x04, user) + \
        _tlv(0x04, b"\0" * auth_length)
    usm_body = head + _tlv(0x04, priv_params)
    usm = _tlv(0x30, usm_body)
    front = _integer(3) + _tlv(0x30, _integer(msg_id) + _integer(max_size) + _tlv(0x04, bytes((flags,)))
                               + _integer(USM_MODEL))
    security = _tlv(0x04, usm)
    body = front + security + data
    message = _tlv(0x30, body)
    # the digest's offset: the headers of the message, of msgSecurityParameters and of the USM
    # SEQUENCE, msgVersion + msgGlobalData, then the USM fields up to the end of the zeros
    offset = (len(message) - len(body)) + len(front) + (len(security) - len(usm)) + \
        (len(usm) - len(usm_body)) + len(head) - auth_length
    return message, offset


# ------------------------------------------------------------------ decoding

def _header(data: bytes, pos: int, end: int) -> Tuple[int, int, int]:
    """(tag, start of value, end of value) of the TLV at ``pos``; checks it fits in ``end``."""
    if pos + 2 > end:
        raise BerError(f"truncated at byte {pos}")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise BerError(f"multi-byte tag at byte {pos}")
    n = data[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0:
            raise BerError(f"indefinite length at byte {pos - 1} (not allowed in SNMP)")
        if k > 4 or pos + k > end:
            raise BerError(f"bad length at byte {pos - 1}")
        n = int.from_bytes(data[pos:pos + k], "big")
        pos += k
    if pos + n > end:
        raise BerError(f"length {n} at byte {pos} runs past the end ({end})")
    return tag, pos, pos + n


def _int_at(data: bytes, pos: int, end: int, what: str) -> Tuple[int, int]:
    tag, s, e = _header(data, pos, end)
    if tag != 0x02 or s == e or e - s > 9:
        raise BerError(f"{what}: expected an INTEGER at byte {pos}")
    return int.from_bytes(data[s:e], "big", signed=True), e


@lru_cache(maxsize=8192)
def decode_oid(body: bytes) -> Oid:
    """OID arcs of an OBJECT IDENTIFIER value (cached: a walk sees the same rows every poll)."""
    arcs: List[int] = []
    v = 0
    started = False
    for b in body:
        if not started and b == 0x80:
            raise BerError("OID arc with a leading 0x80 byte")
        v = (v << 7) | (b & 0x7F)
        started = True
        if v > _ARC_LIMIT:  # checked per byte: hostile runs of 0xFF never build a huge int
            raise BerError("OID arc above 2^32-1")
        if not b & 0x80:
            if arcs and v > 0xFFFFFFFF:
                raise BerError(f"OID arc {v} above 2^32-1")
            arcs.append(v)
            v = 0
            started = False
    if started or not arcs:
        raise BerError("truncated OID")
    first = arcs[0]
    head = (0, first) if first < 40 else (1, first - 40) if first < 80 else (2, first - 80)
    if head[1] > 0xFFFFFFFF or len(arcs) + 1 > MAX_ARCS:
        raise BerError(f"OID with {len(arcs) + 1} arcs (at most {MAX_ARCS})")
    return head + tuple(arcs[1:])


def _value(data: bytes, tag: int, s: int, e: int) -> object:
    if tag in _STRINGS:
        return data[s:e]
    if tag == 0x02:
        if s == e:
            raise BerError("empty INTEGER")
        return int.from_bytes(data[s:e], "big", signed=True)
    bits = _UNSIGNED_BITS.get(tag)
    if bits is not None:
        if s == e:
            raise BerError("empty integer value")
        v = int.from_bytes(data[s:e], "big", signed=True)
        if v < 0 or v.bit_length() > bits:
            raise BerError(f"unsigned {bits}-bit value {v} (tag 0x{tag:02x}) out of range")
        return v
    if tag == 0x06:
        return ".".join(map(str, decode_oid(data[s:e])))
    if tag == 0x40:
        if e - s != 4:
            raise BerError(f"IpAddress of {e - s} bytes")
        return ".".join(map(str, data[s:e]))
    if tag in _EXCEPTIONS:
        return None
    raise BerError(f"unknown value tag 0x{tag:02x}")


def decode_header(data: bytes) -> Tuple[int, bytes, int, int, int]:
    """(version, community, PDU tag, request-id, offset of the PDU's remaining fields): enough to
    match a datagram with its request before decoding its varbinds."""
    end = len(data)
    tag, pos, mend = _header(data, 0, end)
    if tag != 0x30:
        raise BerError("not an SNMP message (no SEQUENCE)")
    if mend != end:
        raise BerError(f"{end - mend} bytes after the message")
    version, pos = _int_at(data, pos, mend, "version")
    tag, s, pos = _header(data, pos, mend)
    if tag != 0x04:
        raise BerError("community is not an OCTET STRING")
    community = data[s:pos]
    pdu, pos, pend = _header(data, pos, mend)
    if pend != mend:
        raise BerError("bytes after the PDU")
    request_id, pos = _int_at(data, pos, pend, "request-id")
    return version, community, pdu, request_id, pos


def _pdu_rest(data: bytes, pos: int, end: int) -> Tuple[int, int, List[Tuple[Oid, object]]]:
    """error-status, error-index and varbinds of a PDU whose request-id ended at ``pos``."""
    status, pos = _int_at(data, pos, end, "error-status")
    index, pos = _int_at(data, pos, end, "error-index")
    tag, pos, vend = _header(data, pos, end)
    if tag != 0x30 or vend != end:
        raise BerError("varbind list is not the PDU's last SEQUENCE")
    varbinds: List[Tuple[Oid, object]] = []
    append = varbinds.append
    while pos < vend:
        tag, s, nxt = _header(data, pos, vend)
        if tag != 0x30:
            raise BerError(f"varbind at byte {pos} is not a SEQUENCE")
        tag, os_, oe = _header(data, s, nxt)
        if tag != 0x06:
            raise BerError(f"varbind at byte {pos} does not start with an OID")
        vtag, vs, ve = _header(data, oe, nxt)
        if ve != nxt:
            raise BerError(f"varbind at byte {pos} has bytes after its value")
        append((decode_oid(data[os_:oe]), _value(data, vtag, vs, ve)))
        pos = nxt
    return status, index, varbinds


def decode_response(data: bytes) -> Response:
    """A whole v1/v2c Response message; :class:`BerError` for anything malformed."""
    version, community, pdu, request_id, pos = decode_header(data)
    if pdu != RESPONSE:
        raise BerError(f"PDU type 0x{pdu:02x} is not a Response")
    status, index, varbinds = _pdu_rest(data, pos, len(data))
    return Response(version, community, request_id, status, index, varbinds)


class V3Message(NamedTuple):
    """An SNMPv3 message up to its msgData, which is left as bytes (see :func:`decode_scoped_pdu`)."""
    msg_id: int
    max_size: int
    flags: int
    engine_id: bytes
    boots: int
    time: int
    user: bytes
    auth_params: bytes
    auth_offset: int  # where auth_params start in the datagram (zeroed to check the digest)
    priv_params: bytes
    data: bytes  # the scopedPDU TLV, or with FLAG_PRIV the encrypted scopedPDU


def _octets_at(data: bytes, pos: int, end: int, what: str) -> Tuple[int, int]:
    tag, s, e = _header(data, pos, end)
    if tag != 0x04:
        raise BerError(f"{what}: expected an OCTET STRING at byte {pos}")
    return s, e


def decode_v3_message(data: bytes) -> V3Message:
    """The header, USM security parameters and raw msgData of an SNMPv3 message."""
    end = len(data)
    tag, pos, mend = _header(data, 0, end)
    if tag != 0x30:
        raise BerError("not an SNMP message (no SEQUENCE)")
    if mend != end:
        raise BerError(f"{end - mend} bytes after the message")
    version, pos = _int_at(data, pos, end, "msgVersion")
    if version != 3:
        raise BerError(f"msgVersion {version} is not 3")
    tag, pos, gend = _header(data, pos, end)
    if tag != 0x30:
        raise BerError("msgGlobalData is not a SEQUENCE")
    msg_id, pos = _int_at(data, pos, gend, "msgID")
    max_size, pos = _int_at(data, pos, gend, "msgMaxSize")
    s, pos = _octets_at(data, pos, gend, "msgFlags")
    if pos - s != 1:
        raise BerError(f"msgFlags of {pos - s} bytes")
    flags = data[s]
    model, pos = _int_at(data, pos, gend, "msgSecurityModel")
    if pos != gend:
        raise BerError("bytes after msgSecurityModel")
    if model != USM_MODEL:
        raise BerError(f"security model {model} is not USM (3)")
    s, send = _octets_at(data, gend, end, "msgSecurityParameters")
    tag, pos, uend = _header(data, s, send)
    if tag != 0x30 or uend != send:
        raise BerError("USM security parameters are not one SEQUENCE")
    s, pos = _octets_at(data, pos, uend, "msgAuthoritativeEngineID")
    engine_id = data[s:pos]
    boots, pos = _int_at(data, pos, uend, "msgAuthoritativeEngineBoots")
    time, pos = _int_at(data, pos, uend, "msgAuthoritativeEngineTime")
    s, pos = _octets_at(data, pos, uend, "msgUserName")
    user = data[s:pos]
    auth_offset, pos = _octets_at(data, pos, uend, "msgAuthenticationParameters")
    auth_params = data[auth_offset:pos]
    s, pos = _octets_at(data, pos, uend, "msgPrivacyParameters")
    priv_params = data[s:pos]
    if pos != uend:
        raise BerError("bytes after msgPrivacyParameters")
    if flags & FLAG_PRIV:
        s, pos = _octets_at(data, send, end, "encryptedPDU")
    else:
        s = send
        tag, _s, pos = _header(data, send, end)
        if tag != 0x30:
            raise BerError("scopedPDU is not a SEQUENCE")
    if pos != end:
        raise BerError("bytes after msgData")
    return V3Message(msg_id, max_size, flags, engine_id, boots, time, user, auth_params,
                     auth_offset, priv_params, data[s:pos])


def decode_scoped_pdu(data: bytes, padded: bool = False) -> Tuple[bytes, bytes, int, Response]:
    """(contextEngineID, contextName, PDU tag, the PDU as a v3 :class:`Response`) of a scopedPDU
    holding a Response or a Report. ``padded``: bytes after it are ignored (DES-CBC pads the
    plaintext to whole blocks, RFC 3414 section 8.1.1.3)."""
    tag, pos, end = _header(data, 0, len(data))
    if tag != 0x30:
        raise BerError("scopedPDU is not a SEQUENCE (wrong privacy key or protocol?)")
    if end != len(data) and not padded:
        raise BerError(f"{len(data) - end} bytes after the scopedPDU")
    s, pos = _octets_at(data, pos, end, "contextEngineID")
    engine_id = data[s:pos]
    s, pos = _octets_at(data, pos, end, "contextName")
    name = data[s:pos]
    pdu, pos, pend = _header(data, pos, end)
    if pend != end:
        raise BerError("bytes after the PDU")
    if pdu not in (RESPONSE, REPORT):
        raise BerError(f"PDU type 0x{pdu:02x} is not a Response or a Report")
    request_id, pos = _int_at(data, pos, pend, "request-id")
    status, index, varbinds = _pdu_rest(data, pos, pend)
    return engine_id, name, pdu, Response(3, b"", request_id, status, index, varbinds)
