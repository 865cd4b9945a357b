"""/metrics server: loopback by default, bcrypt basic auth and TLS as the exporter-toolkit does."""
from __future__ import annotations

import base64
import datetime
import ssl
import subprocess
import urllib.error

import pytest

from agent.config import WebSection
from contract.exposition import render
from contract.samples import sample
from contract.schema import Secret
from agent.web import MetricsServer
from tests.support import agent_command, free_port, http_get


def serve(web: WebSection):
    server = MetricsServer(web, lambda: render(lambda: [sample("node_boot_time_seconds", 42)]))
    server.start()
    return server


def test_metrics_served_on_loopback_with_catalog_help():
    port = free_port()
    server = serve(WebSection(listen_address=f"127.0.0.1:{port}"))
    try:
        body = http_get(f"http://127.0.0.1:{port}/metrics").decode()
        assert "# HELP node_boot_time_seconds Node boot time, in unixtime." in body
        assert "# TYPE node_boot_time_seconds gauge" in body
        assert "node_boot_time_seconds 42.0" in body
        assert http_get(f"http://127.0.0.1:{port}/-/healthy") == b"OK\n"
        with pytest.raises(urllib.error.HTTPError) as exc:
            http_get(f"http://127.0.0.1:{port}/nope")
        assert exc.value.code == 404
    finally:
        server.stop()


def test_basic_auth_with_bcrypt_hash():
    bcrypt = pytest.importorskip("bcrypt")
    hashed = bcrypt.hashpw(b"s3cret-pass", bcrypt.gensalt(rounds=4)).decode()
    port = free_port()
    server = serve(WebSection(listen_address=f"127.0.0.1:{port}", basic_auth_users={"prom": Secret(hashed)}))
    url = f"http://127.0.0.1:{port}/metrics"

    def auth(user, pw):
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}

    try:
        for headers in ({}, auth("prom", "wrong"), auth("nobody", "s3cret-pass")):
            with pytest.raises(urllib.error.HTTPError) as exc:
                http_get(url, headers=headers)
            assert exc.value.code == 401
        assert b"node_boot_time_seconds 42.0" in http_get(url, headers=auth("prom", "s3cret-pass"))
    finally:
        server.stop()


def make_cert(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "commune-agent-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    crt, keyf = tmp_path / "agent.crt", tmp_path / "agent.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyf.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return crt, keyf


def test_tls(tmp_path):
    crt, key = make_cert(tmp_path)
    port = free_port()
    server = serve(WebSection(listen_address=f"127.0.0.1:{port}", tls_cert_file=str(crt), tls_key_file=str(key)))
    try:
        ctx = ssl.create_default_context(cafile=str(crt))
        import urllib.request

        with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", context=ctx, timeout=5) as resp:
            assert b"node_boot_time_seconds 42.0" in resp.read()
        with pytest.raises(urllib.error.URLError):  # an untrusting client is refused by the handshake
            urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", timeout=5,
                                   context=ssl.create_default_context())
    finally:
        server.stop()


def test_cli_refuses_lan_listen_without_auth():
    proc = subprocess.run(agent_command() + ["--web.listen-address", "0.0.0.0:9721"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--web.listen-address: 0.0.0.0:9721 is reachable from the network" in proc.stderr


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_agent_shuts_down_cleanly_on_signal(tmp_path, sig):
    """The real agent process: serving, then a signal ends it with exit 0, its port freed."""
    import signal
    import socket

    from tests.support import Proc, wait_until

    port = free_port()
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"agent: {{state_dir: {tmp_path / 'state'}}}\nweb: {{listen_address: '127.0.0.1:{port}'}}\n"
                   "icmp: {gateway: false}\n")
    proc = Proc(agent_command() + ["-c", str(cfg)], tmp_path / "agent.log")
    try:
        proc.wait_http(f"http://127.0.0.1:{port}/metrics")
        proc.signal(getattr(signal, sig))
        assert proc.popen.wait(20) == 0, proc.log()
    finally:
        proc.stop()
    assert "INFO agent: stopped" in proc.log()
    assert "Traceback" not in proc.log()

    def port_free():  # no listener left (connections in TIME_WAIT do not count, as for the agent)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return True
            except OSError:
                return False

    wait_until(port_free, 10, what="the /metrics port to be released")
