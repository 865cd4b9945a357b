"""The v1/v2c path without pysnmp, over real UDP: snmpsim serving every recording (ours and
../shared's), a device that answers badly, a closed port, and what a v2c-only agent imports."""
from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time

import pytest

from agent.inputs.snmp.ber import GETBULK, GETNEXT, decode_header, encode_oid, encode_request
from agent.inputs.snmp.client import SnmpClient
from agent.inputs.snmp.errors import SnmpError
from contract.schema import Secret
from agent.inputs.snmp.config import AuthConfig
from tests.support import REPO
from tests.test_snmp_ber import ours, reference
from tests.test_snmp_live import _recordings, start_snmpsim


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    recs = _recordings()
    proc, port = start_snmpsim(tmp_path_factory.mktemp("snmpsim"), recs)
    try:
        yield port, sorted(recs)
    finally:
        proc.stop()


def _ask(sock: socket.socket, req: bytes) -> bytes:
    for _try in range(20):  # snmpsim logs "Listening" a moment before its socket answers
        try:
            sock.send(req)
            return sock.recv(65535)
        except (ConnectionRefusedError, socket.timeout):
            time.sleep(0.2)
    raise AssertionError("snmpsim does not answer")


def test_every_recording_decodes_as_pysnmp_does(sim):
    """Whole walks of every recording, v2c GETBULK and v1 GETNEXT: each datagram decoded by our
    codec equals pysnmp's decoding of it."""
    port, names = sim
    datagrams = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.connect(("127.0.0.1", port))
        rid = 1
        for name in names:
            for version, pdu, steps in ((1, GETBULK, 5000), (0, GETNEXT, 300)):
                oid = (1, 3, 6)
                for _ in range(steps):
                    rid += 1
                    data = _ask(sock, encode_request(version, name.encode(), pdu, rid, [oid], 0, 25))
                    got = ours(data)
                    assert got == reference(data, version), (name, version, data.hex())
                    assert got[2] == rid
                    datagrams += 1
                    if got[3] or not got[5] or got[5][-1][1] is None:
                        break
                    oid = got[5][-1][0]
    assert datagrams > 10 * len(names)


def _tlv(tag: int, body: bytes) -> bytes:
    assert len(body) < 0x80
    return bytes((tag, len(body))) + body


class BadDevice:
    """A UDP 'device' on loopback: for each request, a stray answer (another request-id), junk, and
    then, for the real request-id, a Response whose varbind holds a Counter32 out of range."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            _v, community, _pdu, rid, _pos = decode_header(data)
            self.sock.sendto(b"\x30\x03\x02\x01\x01junk", addr)
            self.sock.sendto(encode_request(1, community, 0xA2, rid ^ 0x4000, [(1, 3, 6, 1)]), addr)
            vb = _tlv(0x30, encode_oid((1, 3, 6, 1, 2, 1, 1, 3, 0)) + b"\x41\x05\x01\x00\x00\x00\x00")
            pdu = _tlv(0xA2, _tlv(0x02, rid.to_bytes(4, "big")) + bytes.fromhex("020100020100") + _tlv(0x30, vb))
            self.sock.sendto(_tlv(0x30, bytes.fromhex("020101") + _tlv(0x04, community) + pdu), addr)

    def close(self):
        self.stop = True
        self.thread.join(5)
        self.sock.close()


def v2c(community: str) -> AuthConfig:
    return AuthConfig(version="2c", community=Secret(community))


def test_malformed_answer_is_an_error_naming_it_and_strays_are_ignored():
    dev = BadDevice()
    client = SnmpClient("127.0.0.1", dev.port, v2c("s3cret-community"), timeout=2, retries=0)
    try:
        with pytest.raises(SnmpError) as err:
            asyncio.run(client.get([(1, 3, 6, 1, 2, 1, 1, 3, 0)]))
    finally:
        client.close()
        dev.close()
    assert err.value.reason == "error"
    assert "malformed answer: unsigned 32-bit value 4294967296 (tag 0x41) out of range" in str(err.value)
    assert "s3cret-community" not in str(err.value)


def test_closed_port_is_unreachable_after_the_retries():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = SnmpClient("127.0.0.1", port, v2c("public"), timeout=0.5, retries=1)
    try:
        with pytest.raises(SnmpError) as err:
            asyncio.run(client.get([(1, 3, 6, 1, 2, 1, 1, 3, 0)]))
    finally:
        client.close()
    assert err.value.reason == "unreachable" and "2 tries" in str(err.value), err.value


def test_unresolvable_name_is_unreachable():
    client = SnmpClient("no-such-host.invalid", 161, v2c("public"), timeout=0.5, retries=0)
    with pytest.raises(SnmpError) as err:
        asyncio.run(client.get([(1, 3, 6, 1, 2, 1, 1, 3, 0)]))
    assert err.value.reason == "unreachable" and "no-such-host.invalid" in str(err.value)


@pytest.mark.parametrize("auth,imports_pysnmp", [
    ("{version: '2c', community: printer}", False),
    ("{version: '1', community: printer}", False),
    ("{version: '3', username: u, auth_protocol: SHA, auth_password: authpass1}", True),
])
def test_only_v3_imports_pysnmp(sim, tmp_path, auth, imports_pysnmp):
    """A poll of a v1/v2c target loads neither pysnmp nor pyasn1; a v3 auth does (control)."""
    port, _names = sim
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"snmp:\n  auths: {{a: {auth}}}\n"
                   f"  targets: [{{name: p, address: 127.0.0.1, port: {port}, auth: a, timeout: 1s, retries: 3}}]\n")
    code = (
        "import asyncio, sys\n"
        "from agent.config import load_config\n"
        "from agent.inputs import snmp\n"
        f"c = load_config({str(cfg)!r})\n"
        "[inp] = snmp.build(c.snmp, c)\n"
        "s = asyncio.run(inp.collect())\n"
        "up = [x.value for x in s if x.name == 'commune_snmp_up']\n"
        "print(up[0], bool([m for m in sys.modules if m.startswith(('pysnmp', 'pyasn1'))]))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    up, imported = out.stdout.split()
    assert imported == str(imports_pysnmp)
    if not imports_pysnmp:
        assert float(up) == 1.0, out.stderr[-2000:]
