"""The v1/v2c BER codec (agent/inputs/snmp/ber.py), pure, against pysnmp's codec as the reference.

Real datagrams recorded from snmpsim (tests/fixtures/snmp/responses.txt, made by
capture_responses.py beside it) must decode exactly as pysnmp decodes them; every value type as
pysnmp encodes it; our requests must be byte for byte what pysnmp sends; malformed and hostile
datagrams must be refused with a BerError that says what is wrong, and nothing else.
"""
from __future__ import annotations

import random

import pytest
from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import api

from agent.inputs.snmp.ber import GET, GETBULK, GETNEXT, BerError, decode_response, encode_oid, encode_request
from tests.support import LOCAL_FIXTURES

RECORDED = [line.split() for line in (LOCAL_FIXTURES / "snmp" / "responses.txt").read_text().splitlines()]


def to_python(value) -> object:
    """pysnmp value -> int, bytes or dotted str; None for noSuchObject/Instance/endOfMibView (as
    the agent's values were when it polled through pysnmp)."""
    from pysnmp.proto import rfc1902, rfc1905
    from pyasn1.type import univ

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


def _plain(value):
    # SNMPv1 messages decode to RFC 1155 types; pysnmp's command generators translate them to
    # SNMPv2 types (RFC 2576) before the agent sees them, so an IpAddress is dotted there too.
    if type(value).__name__ == "IpAddress":
        return ".".join(str(b) for b in value.asOctets())
    return to_python(value)


def reference(data: bytes, version: int):
    """What pysnmp makes of a datagram, as plain Python (as the agent got it through pysnmp)."""
    p = api.PROTOCOL_MODULES[version]
    msg, rest = decoder.decode(data, asn1Spec=p.Message())
    assert not rest
    pdu = p.apiMessage.get_pdu(msg)
    return (int(p.apiMessage.get_version(msg)), bytes(p.apiMessage.get_community(msg)),
            int(p.apiPDU.get_request_id(pdu)), int(p.apiPDU.get_error_status(pdu)),
            int(p.apiPDU.get_error_index(pdu)),
            [(tuple(o), _plain(v)) for o, v in p.apiPDU.get_varbinds(pdu)])


def ours(data: bytes):
    r = decode_response(data)
    return (r.version, r.community, r.request_id, r.error_status, r.error_index, r.varbinds)


def response(version: int, values, request_id: int = 7, status: int = 0, index: int = 0) -> bytes:
    p = api.PROTOCOL_MODULES[version]
    pdu = p.GetResponsePDU()
    p.apiPDU.set_defaults(pdu)
    p.apiPDU.set_request_id(pdu, request_id)
    p.apiPDU.set_error_status(pdu, status)
    p.apiPDU.set_error_index(pdu, index)
    p.apiPDU.set_varbinds(pdu, values)
    msg = p.Message()
    p.apiMessage.set_defaults(msg)
    p.apiMessage.set_community(msg, "comm")
    p.apiMessage.set_pdu(msg, pdu)
    return encoder.encode(msg)


def test_recorded_cases_cover_the_usual_types():
    kinds = {type(v).__name__ for _n, ver, _p, hx in RECORDED
             for _o, v in api.PROTOCOL_MODULES[int(ver)].apiPDU.get_varbinds(
                 api.PROTOCOL_MODULES[int(ver)].apiMessage.get_pdu(
                     decoder.decode(bytes.fromhex(hx), asn1Spec=api.PROTOCOL_MODULES[int(ver)].Message())[0]))}
    assert {"Integer", "OctetString", "ObjectIdentifier", "Counter32", "Counter64", "Gauge32", "TimeTicks",
            "EndOfMibView", "NoSuchInstance", "Null"} <= kinds, kinds
    assert {int(ver) for _n, ver, _p, _hx in RECORDED} == {0, 1}


@pytest.mark.parametrize("name,version,pdu,hexdata", RECORDED, ids=[f"{r[0]}-v{r[1]}-{r[2]}-{i}"
                                                                   for i, r in enumerate(RECORDED)])
def test_recorded_response_decodes_as_pysnmp_does(name, version, pdu, hexdata):
    data = bytes.fromhex(hexdata)
    assert ours(data) == reference(data, int(version))
    assert decode_response(data).community == name.encode()


def test_every_value_type_as_pysnmp_encodes_it():
    v2 = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
    values = [
        ((1, 3, 6, 1, 2, 1, 1, 1, 0), v2.OctetString(b"\x00\xffHP \xe1\xba\xa1")),
        ((1, 3, 6, 1, 2, 1, 1, 2, 0), v2.ObjectIdentifier((1, 3, 6, 1, 4, 1, 11, 2, 3, 9, 1))),
        ((1, 3, 6, 1, 2, 1, 1, 3, 0), v2.TimeTicks(4294967295)),
        ((1, 3, 6, 1, 2, 1, 2, 2, 1, 10, 4294967295), v2.Counter32(4294967295)),
        ((1, 3, 6, 1, 2, 1, 2, 2, 1, 5, 1), v2.Gauge32(0)),
        ((1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 6, 2), v2.Counter64(2 ** 64 - 1)),
        ((1, 3, 6, 1, 2, 1, 4, 20, 1, 1, 10, 0, 0, 1), v2.IpAddress("10.0.0.1")),
        ((1, 3, 6, 1, 4, 1, 318, 1), v2.Integer(-2147483648)),
        ((1, 3, 6, 1, 4, 1, 318, 2), v2.Integer(2147483647)),
        ((1, 3, 6, 1, 4, 1, 318, 3), v2.Integer(-3)),
        ((1, 3, 6, 1, 4, 1, 318, 4), v2.Opaque(b"\x9f\x78\x04\x3f\x80\x00\x00")),
        ((1, 3, 6, 1, 4, 1, 318, 5), v2.Unsigned32(128)),
        ((1, 3, 6, 1, 4, 1, 318, 6), v2.NoSuchObject("")),
        ((1, 3, 6, 1, 4, 1, 318, 7), v2.NoSuchInstance("")),
        ((1, 3, 6, 1, 4, 1, 318, 8), v2.EndOfMibView("")),
        ((2, 999, 4294967295), v2.Null("")),
        ((0, 39), v2.OctetString(b"")),
    ]
    data = response(1, values)
    assert ours(data) == reference(data, 1)
    assert ours(data)[5][1][1] == "1.3.6.1.4.1.11.2.3.9.1" and ours(data)[5][6][1] == "10.0.0.1"
    status = response(0, [((1, 3, 6, 1, 2, 1, 1, 99, 0), v2.Null(""))], status=2, index=1)
    resp = decode_response(status)
    assert (resp.status_name, resp.error_index) == ("noSuchName", 1)


@pytest.mark.parametrize("version,pdu,args", [(0, GET, ()), (1, GET, ()), (1, GETNEXT, ()), (0, GETNEXT, ()),
                                              (1, GETBULK, (0, 25)), (1, GETBULK, (2, 1000))])
def test_requests_are_what_pysnmp_sends(version, pdu, args):
    p = api.PROTOCOL_MODULES[version]
    oids = [(1, 3, 6, 1, 2, 1, 1, 1, 0), (1, 3, 6, 1, 2, 1, 2, 2, 1, 10), (1, 3, 6, 1, 4, 1, 2011, 2 ** 31)]
    kind = {GET: p.GetRequestPDU, GETNEXT: p.GetNextRequestPDU, GETBULK: getattr(p, "GetBulkRequestPDU", None)}[pdu]
    req = kind()
    api_pdu = p.apiBulkPDU if pdu == GETBULK else p.apiPDU
    api_pdu.set_defaults(req)
    api_pdu.set_request_id(req, 2 ** 31 - 1)
    if pdu == GETBULK:
        api_pdu.set_non_repeaters(req, args[0])
        api_pdu.set_max_repetitions(req, args[1])
    api_pdu.set_varbinds(req, [(o, p.Null("")) for o in oids])
    msg = p.Message()
    p.apiMessage.set_defaults(msg)
    p.apiMessage.set_community(msg, "office-ro")
    p.apiMessage.set_pdu(msg, req)
    assert encode_request(version, b"office-ro", pdu, 2 ** 31 - 1, oids, *args) == encoder.encode(msg)


@pytest.mark.parametrize("data,message", [
    (b"", "truncated at byte 0"),
    (b"\x04\x00", "no SEQUENCE"),
    (b"\x30\x80\x02\x01\x01\x00\x00", "indefinite length"),
    (b"\x30\x85\x00\x00\x00\x00\x01", "bad length"),
    (b"\x30\x10\x02\x01\x01", "runs past the end"),
    (bytes.fromhex("3003020101") + b"\x00", "bytes after the message"),
    (bytes.fromhex("300c020101040063"), "runs past the end"),
    (bytes.fromhex("300a0201010400a0030201"), "runs past the end"),
    (bytes.fromhex("300a0201010400a203020101"), "truncated at byte 12"),
    (bytes.fromhex("30100201010400a009020101020100020100"), "PDU type 0xa0 is not a Response"),
    (bytes.fromhex("3000"), "truncated"),
], ids=range(11))
def test_malformed_message_is_refused_with_the_reason(data, message):
    with pytest.raises(BerError, match=message):
        decode_response(data)


@pytest.mark.parametrize("value,message", [
    (b"\x41\x05\x01\x00\x00\x00\x00", r"unsigned 32-bit value 4294967296 \(tag 0x41\) out of range"),
    (b"\x41\x01\xff", r"unsigned 32-bit value -1"),
    (b"\x46\x09\x01" + b"\x00" * 8, r"unsigned 64-bit value"),
    (b"\x40\x03\x0a\x00\x01", "IpAddress of 3 bytes"),
    (b"\x24\x00", "unknown value tag 0x24"),
    (b"\x02\x00", "empty INTEGER"),
    (b"\x06\x02\x2b\x86", "truncated OID"),
    (b"\x06\x03\x2b\x80\x01", "leading 0x80"),
    (b"\x06\x06\x2b\x90\x80\x80\x80\x00", "above 2\\^32-1"),
    (b"\x06\x82\xea\x61\x2b" + b"\xff" * 60000, "above 2\\^32-1"),
    (b"\x06\x81\x82" + b"\x01" * 130, "131 arcs"),
    (b"\x1f\x01\x00", "multi-byte tag"),
], ids=range(12))
def test_bad_value_is_refused_with_the_reason(value, message):
    vb = encode_oid((1, 3, 6, 1)) + value
    vb = b"\x30" + _len(len(vb)) + vb
    vbl = b"\x30" + _len(len(vb)) + vb
    body = bytes.fromhex("020107020100020100") + vbl
    pdu = b"\xa2" + _len(len(body)) + body
    inner = bytes.fromhex("020101040474657374") + pdu
    with pytest.raises(BerError, match=message):
        decode_response(b"\x30" + _len(len(inner)) + inner)


def _len(n: int) -> bytes:
    return bytes((n,)) if n < 0x80 else b"\x82" + n.to_bytes(2, "big")


def test_every_truncation_and_mutation_is_a_ber_error_or_a_response():
    """Hostile datagrams: decoding fails only with BerError, never with another exception."""
    rng = random.Random(19)
    seeds = [bytes.fromhex(hx) for _n, _v, _p, hx in RECORDED]
    outcomes = {"refused": 0, "decoded": 0}
    for data in seeds:
        for cut in range(len(data)):
            with pytest.raises(BerError):
                decode_response(data[:cut])
        for _ in range(150):
            m = bytearray(data)
            for _flip in range(rng.randint(1, 4)):
                m[rng.randrange(len(m))] = rng.randrange(256)
            try:
                decode_response(bytes(m))
                outcomes["decoded"] += 1
            except BerError:
                outcomes["refused"] += 1
    assert outcomes["refused"] and outcomes["decoded"], outcomes


@pytest.mark.parametrize("oid", [(1,), (3, 1), (1, 40), (1, 3, -1), (1, 3, 2 ** 32), tuple([1, 3] + [1] * 127)])
def test_unencodable_oid_is_refused(oid):
    with pytest.raises(BerError):
        encode_oid(oid)
