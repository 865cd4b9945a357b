"""SNMPv3 USM on our codec, pure: keys against RFC 3414 A.3 and pysnmp, and real exchanges
between net-snmp's snmpget and snmpd (tests/fixtures/snmp/v3_exchanges.json, recorded by
capture_v3.py beside it through a loopback relay; test-only passwords).

For every recorded case (each security level and auth protocol, DES, AES-128, AES-192/256 with
both key extensions, a GETBULK, a wrong password, an unknown user): our encoder rebuilds
net-snmp's requests byte for byte (digest and ciphertext included), our session reads snmpd's
answers to the same values snmpget printed, a tampered answer is dropped, and a Report becomes
the clear error. Malformed v3 datagrams are refused with BerError only.
"""
from __future__ import annotations

import json
import random

import pytest

from agent.inputs.snmp import usmkeys
from agent.inputs.snmp.ber import (
    FLAG_AUTH, FLAG_PRIV, GET, GETBULK, REPORT, RESPONSE, BerError, decode_scoped_pdu, decode_v3_message,
    encode_pdu, encode_scoped_pdu, encode_v3_message,
)
from agent.inputs.snmp.config import AuthConfig
from agent.inputs.snmp.usm import UNKNOWN_ENGINE_ID, UNKNOWN_USER, WRONG_DIGEST, UsmSession
from contract.schema import load_model
from tests.support import LOCAL_FIXTURES

CASES = json.loads((LOCAL_FIXTURES / "snmp" / "v3_exchanges.json").read_text())
IDS = [c["case"] for c in CASES]
SYS_NAME = (1, 3, 6, 1, 2, 1, 1, 5, 0)


# ---------------------------------------------------------------- keys

def test_rfc3414_a3_password_to_key_and_localization():
    engine = bytes.fromhex("000000000000000000000002")
    assert usmkeys.password_to_key("md5", b"maplesyrup").hex() == "9faf3283884e92834ebc9847d8edd963"
    assert usmkeys.auth_key("MD5", b"maplesyrup", engine).hex() == "526f5eed9fcce26f8964c2930787d82b"
    assert usmkeys.password_to_key("sha1", b"maplesyrup").hex() == "9fb5cc0381497b3793528939ff788d5d79145211"
    assert usmkeys.auth_key("SHA", b"maplesyrup", engine).hex() == "6695febc9288e36282235fc7151f128497b38f3f"


def test_password_to_key_of_every_length_is_the_1mib_stream():
    """The chunked 1 MiB expansion equals the literal definition for awkward password lengths."""
    import hashlib

    for pw in (b"12345678", b"x" * 7, b"abcdefghijklmnopq", b"p" * 100, bytes(range(1, 60))):
        stream = (pw * (1048576 // len(pw) + 1))[:1048576]
        assert usmkeys.password_to_key("sha256", pw) == hashlib.sha256(stream).digest()


_PYSNMP_AUTH = {"MD5": (1, 3, 6, 1, 6, 3, 10, 1, 1, 2), "SHA": (1, 3, 6, 1, 6, 3, 10, 1, 1, 3),
                "SHA-224": (1, 3, 6, 1, 6, 3, 10, 1, 1, 4), "SHA-256": (1, 3, 6, 1, 6, 3, 10, 1, 1, 5),
                "SHA-384": (1, 3, 6, 1, 6, 3, 10, 1, 1, 6), "SHA-512": (1, 3, 6, 1, 6, 3, 10, 1, 1, 7)}


@pytest.mark.parametrize("auth", sorted(usmkeys.AUTH))
def test_keys_equal_pysnmps(auth):
    """RFC 7860 gives no test vectors: SHA-2 keys, and every privacy key extension, against
    pysnmp's implementation (the agent's v3 path until issue 19)."""
    import pysnmp.proto.secmod.rfc3414  # noqa: F401  (its modules import each other in this order)
    from pysnmp.proto.secmod.eso.priv import aes192, aes256
    from pysnmp.proto.secmod.rfc3414.auth import hmacmd5, hmacsha
    from pysnmp.proto.secmod.rfc3414.priv import des
    from pysnmp.proto.secmod.rfc3826.priv import aes
    from pysnmp.proto.secmod.rfc7860.auth import hmacsha2

    from pyasn1.type import univ

    engine = bytes.fromhex("80001f8880e9bd0c1d12667a5100000000")
    ref_engine = univ.OctetString(engine)
    pw = b"commune-test-pass"
    oid = _PYSNMP_AUTH[auth]
    service = {"MD5": hmacmd5.HmacMd5, "SHA": hmacsha.HmacSha}.get(auth)
    service = service() if service else hmacsha2.HmacSha2(oid)
    ref = bytes(service.localize_key(service.hash_passphrase(pw), ref_engine))
    assert usmkeys.auth_key(auth, pw, engine) == ref
    privs = {"DES": des.Des(), "AES": aes.Aes(), "AES-192": aes192.AesBlumenthal192(),
             "AES-256": aes256.AesBlumenthal256(), "AES-192-C": aes192.Aes192(), "AES-256-C": aes256.Aes256()}
    for name, svc in privs.items():
        ref = bytes(svc.localize_key(oid, svc.hash_passphrase(oid, pw), ref_engine))
        ours = usmkeys.priv_key(auth, name, pw, engine)
        assert ours == ref[:len(ours)] and len(ours) == (16 if name == "DES" else usmkeys.PRIV[name][1]), name
    # the two extensions differ where the hash is short: the choice matters
    if auth in ("MD5", "SHA"):
        assert usmkeys.priv_key(auth, "AES-256", pw, engine) != usmkeys.priv_key(auth, "AES-256-C", pw, engine)


# ---------------------------------------------------------------- recorded exchanges

def _case(name):
    return next(c for c in CASES if c["case"] == name)


def _datagrams(case):
    return [(d, bytes.fromhex(h)) for d, h in case["datagrams"]]


def _session(case, port=161) -> UsmSession:
    cfg = {"version": "3", "username": case["user"]}
    if case["auth_protocol"]:
        cfg.update(auth_protocol=case["auth_protocol"], auth_password=case["auth_password"])
    if case["priv_protocol"]:
        cfg.update(priv_protocol=case["priv_protocol"], priv_password=case["priv_password"])
    return UsmSession("127.0.0.1", port, load_model(AuthConfig, cfg, path="auth"), timeout=1, retries=0)


def test_recordings_cover_every_protocol():
    assert {c["auth_protocol"] for c in CASES} == set(usmkeys.AUTH) | {None}
    assert {c["priv_protocol"] for c in CASES} >= set(usmkeys.PRIV) - {"AES"} | {None}
    for c in CASES:  # discovery, its Report, the request, its answer
        assert [d for d, _h in c["datagrams"]] == [">", "<", ">", "<"], c["case"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_discovery_is_what_net_snmp_sends_and_learns_the_engine(case):
    (_, ask), (_, report), *_rest = _datagrams(case)
    req, rep = decode_v3_message(ask), decode_v3_message(report)
    assert (req.flags, req.engine_id, req.user, req.auth_params, req.priv_params) == (4, b"", b"", b"", b"")
    _engine, _name, pdu, resp = decode_scoped_pdu(rep.data)
    assert pdu == REPORT and resp.varbinds[0][0] == UNKNOWN_ENGINE_ID and rep.msg_id == req.msg_id
    assert rep.engine_id.startswith(b"\x80\x00\x1f\x88") and rep.boots >= 1
    # our discovery message, with net-snmp's msgID and request-id, is net-snmp's to the byte
    scoped = encode_scoped_pdu(b"", b"", encode_pdu(GET, resp.request_id, ()))
    ours, _ = encode_v3_message(req.msg_id, req.max_size, req.flags, b"", 0, 0, b"", 0, b"", scoped)
    assert ours == ask


@pytest.mark.parametrize("case", [c for c in CASES if c["auth_protocol"] and c["user"] != "mallory"],
                         ids=lambda c: c["case"])
def test_request_is_rebuilt_byte_for_byte(case):
    """Digest, privacy parameters, ciphertext and every TLV of net-snmp's request come out of
    our encoder and keys the same."""
    grams = _datagrams(case)
    engine = decode_v3_message(grams[1][1]).engine_id
    req = decode_v3_message(grams[2][1])
    auth, priv = case["auth_protocol"], case["priv_protocol"]
    akey = usmkeys.auth_key(auth, case["auth_password"].encode(), engine)
    assert usmkeys.verify(auth, akey, grams[2][1], req.auth_offset, req.auth_params)
    plain = req.data
    if priv:
        pkey = usmkeys.priv_key(auth, priv, case["priv_password"].encode(), engine)
        plain = usmkeys.decrypt(priv, pkey, req.boots, req.time, req.priv_params, req.data)
    answer = decode_v3_message(grams[3][1])
    bulk = case["case"].endswith("bulk")
    if answer.flags & FLAG_AUTH or not priv:  # the request-id, from the answer when it is readable
        ans_plain = answer.data if not answer.flags & FLAG_PRIV else usmkeys.decrypt(
            priv, pkey, answer.boots, answer.time, answer.priv_params, answer.data)
        rid = decode_scoped_pdu(ans_plain, padded=priv == "DES")[3].request_id
        pdu = encode_pdu(GETBULK, rid, [(1, 3, 6, 1, 2, 1, 1)], 0, 8) if bulk else encode_pdu(GET, rid, [SYS_NAME])
        scoped = encode_scoped_pdu(engine, b"", pdu)
        assert plain[:len(scoped)] == scoped and len(plain) - len(scoped) < (8 if priv == "DES" else 1)
    data = req.data
    if priv:
        salt = int.from_bytes(req.priv_params[4:] if priv == "DES" else req.priv_params, "big")
        boots = int.from_bytes(req.priv_params[:4], "big") if priv == "DES" else req.boots
        data, params = usmkeys.encrypt(priv, pkey, boots, req.time, salt, plain)
        assert (data, params) == (req.data, req.priv_params)
    ours, offset = encode_v3_message(req.msg_id, req.max_size, req.flags, engine, req.boots, req.time,
                                     req.user, len(req.auth_params), req.priv_params, data)
    assert offset == req.auth_offset
    ours = ours[:offset] + usmkeys.digest(auth, akey, ours) + ours[offset + len(req.auth_params):]
    assert ours == grams[2][1]


def _answer(case, data=None):
    """Our session's reading of the recorded answer to the recorded request."""
    grams = _datagrams(case)
    rep, req = decode_v3_message(grams[1][1]), decode_v3_message(grams[2][1])
    session = _session(case)
    session._learn(rep.engine_id, req.boots, req.time)
    session._sent[req.msg_id] = req.flags
    data = grams[3][1] if data is None else data
    assert session._match(data) == req.msg_id
    return session, session._decode(data, req.msg_id)


@pytest.mark.parametrize("case", [c for c in CASES if c["snmpget"][0].startswith(".1.3.6")], ids=lambda c: c["case"])
def test_answer_reads_as_snmpget_printed_it(case):
    session, (pdu, resp, msg) = _answer(case)
    assert pdu == RESPONSE and resp.error_status == 0 and resp.version == 3
    expected = [line.split(" = ")[0] for line in case["snmpget"]]
    assert ["." + ".".join(map(str, o)) for o, _v in resp.varbinds] == expected
    values = dict(resp.varbinds)
    if SYS_NAME in values:
        assert values[SYS_NAME] == b"office-router"
    else:
        assert values[(1, 3, 6, 1, 2, 1, 1, 1, 0)] == b"office router (capture)"
        assert values[(1, 3, 6, 1, 2, 1, 1, 2, 0)] == "1.3.6.1.4.1.8072.3.2.10"
    assert bool(msg.flags & FLAG_PRIV) == bool(case["priv_protocol"])


@pytest.mark.parametrize("case", [c for c in CASES if c["auth_protocol"] and c["snmpget"][0].startswith(".1.3.6")],
                         ids=lambda c: c["case"])
def test_tampered_or_foreign_answers_are_dropped(case):
    data = bytearray(_datagrams(case)[3][1])
    data[-3] ^= 0x01  # inside the (encrypted) scopedPDU
    session, result = _answer(case, bytes(data))
    assert result is None and session._dropped == 1
    # an answer without authentication to an authenticated request: dropped too
    plain = decode_v3_message(_datagrams(case)[3][1])
    if not plain.flags & FLAG_PRIV:
        forged, _ = encode_v3_message(plain.msg_id, plain.max_size, 0, plain.engine_id, plain.boots, plain.time,
                                      plain.user, 0, b"", plain.data)
        session, result = _answer(case, forged)
        assert result is None and session._dropped == 1


@pytest.mark.parametrize("name,report,text", [
    ("wrong-auth-password", WRONG_DIGEST, "wrong digest: the device rejects the auth_password or auth_protocol "
                                          "of user 'bob' (usmStatsWrongDigests)"),
    ("unknown-user", UNKNOWN_USER, "unknown user 'mallory' (usmStatsUnknownUserNames)"),
])
def test_reports_become_clear_errors(name, report, text):
    case = _case(name)
    session, (pdu, resp, msg) = _answer(case)
    assert pdu == REPORT and resp.varbinds[0][0] == report and not msg.flags & FLAG_AUTH
    err = session._report_error(resp.varbinds[0][0])
    assert err.reason == "auth_failure" and text in str(err)
    for secret in (case["auth_password"], case["priv_password"]):
        assert secret and secret not in str(err)


# ---------------------------------------------------------------- malformed input

def test_truncated_and_mangled_v3_datagrams_raise_ber_error_only():
    rng = random.Random(19)
    for case in CASES:
        for _d, data in _datagrams(case):
            for n in range(len(data)):
                with pytest.raises(BerError):
                    decode_v3_message(data[:n])
            for _ in range(200):
                mangled = bytearray(data)
                for _k in range(rng.randint(1, 3)):
                    mangled[rng.randrange(len(mangled))] = rng.randrange(256)
                try:
                    msg = decode_v3_message(bytes(mangled))
                    if not msg.flags & FLAG_PRIV:
                        decode_scoped_pdu(msg.data)
                except BerError:
                    pass


def test_v3_header_checks():
    good = _datagrams(_case("noauth"))[0][1]
    pos = good.index(b"\x02\x01\x03") + 2  # msgVersion INTEGER 3, the message's first field
    for byte, what in ((2, "msgVersion 2 is not 3"), (1, "msgVersion 1 is not 3")):
        data = bytearray(good)
        data[pos] = byte
        with pytest.raises(BerError, match=what):
            decode_v3_message(bytes(data))
    model = good.index(b"\x02\x01\x03", pos + 1)  # msgSecurityModel 3 ends msgGlobalData
    data = bytearray(good)
    data[model + 2] = 2
    with pytest.raises(BerError, match="security model 2 is not USM"):
        decode_v3_message(bytes(data))
    msg = decode_v3_message(_datagrams(_case("noauth"))[3][1])
    bad, _ = encode_v3_message(msg.msg_id, msg.max_size, FLAG_PRIV, msg.engine_id, msg.boots, msg.time,
                               msg.user, 0, b"", msg.data)
    session = _session(_case("noauth"))
    session._sent[msg.msg_id] = 4
    with pytest.raises(BerError, match="msgFlags with privacy but no authentication"):
        session._decode(bad, msg.msg_id)


def test_an_authentic_answer_from_before_the_time_window_fails_and_forgets_the_engine():
    """RFC 3414 3.2 step 7b: boots lower than known (a replay, or an engine whose boots went back)."""
    from agent.inputs.snmp.errors import SnmpError

    case = _case("sha-aes")
    grams = _datagrams(case)
    rep, req = decode_v3_message(grams[1][1]), decode_v3_message(grams[2][1])
    session = _session(case)
    session._learn(rep.engine_id, req.boots + 1, req.time)
    session._sent[req.msg_id] = req.flags
    session._match(grams[3][1])
    with pytest.raises(SnmpError, match="outside the time window") as err:
        session._decode(grams[3][1], req.msg_id)
    assert err.value.reason == "auth_failure" and session._engine_id is None
    # a later time than known is learned from the authentic answer
    session = _session(case)
    session._learn(rep.engine_id, req.boots, max(0, req.time - 100))
    session._sent[req.msg_id] = req.flags
    session._match(grams[3][1])
    assert session._decode(grams[3][1], req.msg_id)[0] == RESPONSE
    assert session._time == decode_v3_message(grams[3][1]).time


def test_every_report_is_a_clear_error_without_secrets():
    from agent.inputs.snmp import usm

    case = _case("sha-aes")
    session = _session(case)
    texts = {}
    for oid in (usm.UNSUPPORTED_SEC_LEVEL, usm.NOT_IN_TIME_WINDOW, usm.UNKNOWN_USER, usm.UNKNOWN_ENGINE_ID,
                usm.WRONG_DIGEST, usm.DECRYPTION_ERROR, *usm._OTHER_REPORTS, (1, 3, 6, 1, 4, 1, 9, 9), ()):
        err = session._report_error(oid)
        texts[oid] = (err.reason, str(err))
        assert case["auth_password"] not in str(err) and case["priv_password"] not in str(err)
        assert str(err).startswith("127.0.0.1:161: ")
    assert {r for r, _t in texts.values()} == {"auth_failure", "error"}
    assert texts[usm.DECRYPTION_ERROR][1].endswith("wrong priv_password or priv_protocol (usmStatsDecryptionErrors)")
    assert texts[usm.NOT_IN_TIME_WINDOW][0] == "auth_failure"
    assert texts[(1, 3, 6, 1, 4, 1, 9, 9)] == ("error", "127.0.0.1:161: Report 1.3.6.1.4.1.9.9")
    assert texts[()] == ("error", "127.0.0.1:161: Report without varbinds")
