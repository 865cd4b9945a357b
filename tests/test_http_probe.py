"""The http prober against real stdlib servers on loopback (plain and TLS)."""
from __future__ import annotations

import gzip
import logging
import time

import pytest

from contract.exposition import render
from contract.schema import ConfigErrors
from tests.probe_servers import Certs, HTTPServer, run_probes, probes_section, send, slow


def _ok(handler):
    send(handler, 200, "Xin chào, dịch vụ công hoạt động".encode("utf-8"), {"Content-Type": "text/html"})


def _chunked(handler):
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    for part in (b"first part ", b"status: OK"):
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
    handler.wfile.write(b"0\r\n\r\n")


def _gzip(handler):
    send(handler, 200, gzip.compress(b"maintenance page" * 10), {"Content-Encoding": "gzip"})


TOKEN = "tok-SECRET-8c1f2b"
PASSWORD = "pw-SECRET-77aa"


def _bearer(handler):
    good = handler.headers.get("Authorization") == f"Bearer {TOKEN}"
    send(handler, 200 if good else 401, b"api ok" if good else b"no")


def _basic(handler):
    import base64

    want = "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    good = handler.headers.get("Authorization") == want
    send(handler, 200 if good else 401, b"")


@pytest.fixture
def web():
    server = HTTPServer({
        "/ok": _ok,
        "/error": lambda h: send(h, 500, b"Internal Server Error"),
        "/redirect": lambda h: send(h, 302, b"", {"Location": "/ok"}),
        "/redirect2": lambda h: send(h, 301, b"", {"Location": "/redirect"}),
        "/loop": lambda h: send(h, 302, b"", {"Location": "/loop"}),
        "/see-other": lambda h: send(h, 303, b"", {"Location": "/ok"}),
        "/slow": slow(3),
        "/chunked": _chunked,
        "/gzip": _gzip,
        "/bearer": _bearer,
        "/basic": _basic,
        "/maintenance": lambda h: send(h, 200, b"<h1>He thong dang bao tri</h1>"),
    })
    yield server
    server.close()


def _config(modules: dict, targets: list) -> dict:
    return {"timeout": "5s", "interval": "10s", "modules": modules, "targets": targets}


def test_200_gives_success_and_blackbox_series(web):
    r = run_probes(_config({"get": {"prober": "http"}},
                           [{"name": "portal", "module": "get", "url": web.url("/ok"), "service": "dichvucong"}]))
    assert r.get("probe_success", "portal", module="get", hop="service") == 1
    assert r.get("probe_duration_seconds", "portal") > 0
    assert r.get("commune_probe_target_info", "portal", service="dichvucong", prober="http", hop="service") == 1
    assert r.get("probe_http_status_code", "portal") == 200
    body_len = len("Xin chào, dịch vụ công hoạt động".encode())
    assert r.get("probe_http_content_length", "portal") == body_len
    assert r.get("probe_http_uncompressed_body_length", "portal") == body_len
    assert r.get("probe_http_redirects", "portal") == 0
    assert r.get("probe_http_ssl", "portal") == 0
    assert r.get("probe_http_version", "portal") == 1.1
    assert r.get("probe_ip_protocol", "portal") == 4
    assert r.get("probe_failed_due_to_regex", "portal") == 0
    for phase in ("resolve", "connect", "tls", "processing", "transfer"):
        assert r.get("probe_http_duration_seconds", "portal", phase=phase) >= 0
    assert r.get("probe_http_duration_seconds", "portal", phase="tls") == 0
    assert not r.has("probe_ssl_earliest_cert_expiry", "portal")
    assert web.requests[-1]["headers"]["Host"] == f"127.0.0.1:{web.port}"


def test_500_fails_unless_accepted(web):
    r = run_probes(_config({"get": {"prober": "http"},
                            "any": {"prober": "http", "http": {"valid_status_codes": [200, 500]}}},
                           [{"name": "err", "module": "get", "url": web.url("/error")},
                            {"name": "err-ok", "module": "any", "url": web.url("/error")}]))
    assert r.get("probe_success", "err") == 0
    assert r.get("probe_http_status_code", "err") == 500
    assert r.get("probe_success", "err-ok") == 1


def test_redirects_followed_and_not(web):
    r = run_probes(_config({"follow": {"prober": "http"},
                            "nofollow": {"prober": "http", "http": {"follow_redirects": False,
                                                                    "valid_status_codes": [301, 302]}},
                            "max1": {"prober": "http", "http": {"max_redirects": 1}}},
                           [{"name": "two", "module": "follow", "url": web.url("/redirect2")},
                            {"name": "stay", "module": "nofollow", "url": web.url("/redirect2")},
                            {"name": "loop", "module": "follow", "url": web.url("/loop")},
                            {"name": "too-many", "module": "max1", "url": web.url("/redirect2")},
                            {"name": "303", "module": "follow", "url": web.url("/see-other")}]))
    assert r.get("probe_success", "two") == 1
    assert r.get("probe_http_redirects", "two") == 2
    assert r.get("probe_http_status_code", "two") == 200
    assert r.get("probe_success", "stay") == 1
    assert r.get("probe_http_status_code", "stay") == 301
    assert r.get("probe_http_redirects", "stay") == 0
    assert r.get("probe_success", "loop") == 0
    assert r.get("probe_http_redirects", "loop") == 10
    assert r.get("probe_success", "too-many") == 0
    assert r.get("probe_http_status_code", "too-many") == 302  # the last response seen
    assert r.get("probe_success", "303") == 1


def test_post_303_becomes_get(web):
    r = run_probes(_config({"post": {"prober": "http", "http": {"method": "POST", "body": "q=1",
                                                               "headers": {"Content-Type": "text/plain"}}}},
                           [{"name": "form", "module": "post", "url": web.url("/see-other")}]))
    assert r.get("probe_success", "form") == 1
    first, second = web.requests[-2:]
    assert (first["method"], first["body"]) == ("POST", b"q=1")
    assert first["headers"]["Content-Type"] == "text/plain"
    assert (second["method"], second["path"]) == ("GET", "/ok")


def test_slow_target_times_out_without_delaying_others(web):
    started = time.monotonic()
    r = run_probes(_config({"quick": {"prober": "http", "timeout": "500ms"}},
                           [{"name": "slow", "module": "quick", "url": web.url("/slow")},
                            {"name": "fast", "module": "quick", "url": web.url("/ok")}]))
    elapsed = time.monotonic() - started
    assert r.get("probe_success", "slow") == 0
    assert 0.4 <= r.get("probe_duration_seconds", "slow") < 2.5  # generous: the timeout is 0.5s
    assert r.get("probe_http_status_code", "slow") == 0
    assert r.get("probe_success", "fast") == 1
    assert elapsed < 2.9  # the 3s response was not waited for


def test_body_regexes(web):
    r = run_probes(_config({
        "must": {"prober": "http", "http": {"fail_if_body_not_matches_regexp": ["dịch vụ công"]}},
        "must-not": {"prober": "http", "http": {"fail_if_body_matches_regexp": ["(?i)bao tri|maintenance"]}},
    }, [{"name": "has-text", "module": "must", "url": web.url("/ok")},
        {"name": "lacks-text", "module": "must", "url": web.url("/maintenance")},
        {"name": "not-maint", "module": "must-not", "url": web.url("/ok")},
        {"name": "maint", "module": "must-not", "url": web.url("/maintenance")},
        {"name": "chunked", "module": "must-not", "url": web.url("/chunked")}]))
    assert r.get("probe_success", "has-text") == 1
    assert r.get("probe_success", "lacks-text") == 0
    assert r.get("probe_failed_due_to_regex", "lacks-text") == 1
    assert r.get("probe_success", "not-maint") == 1
    assert r.get("probe_failed_due_to_regex", "not-maint") == 0
    assert r.get("probe_success", "maint") == 0
    assert r.get("probe_failed_due_to_regex", "maint") == 1
    assert r.get("probe_success", "chunked") == 1
    assert r.get("probe_http_content_length", "chunked") == -1
    assert r.get("probe_http_uncompressed_body_length", "chunked") == len(b"first part status: OK")


def test_gzip_body_is_inflated_for_regexes(web):
    r = run_probes(_config({"gz": {"prober": "http", "http": {
        "headers": {"Accept-Encoding": "gzip"}, "fail_if_body_matches_regexp": ["maintenance"]}}},
        [{"name": "gz", "module": "gz", "url": web.url("/gzip")}]))
    assert r.get("probe_success", "gz") == 0
    assert r.get("probe_failed_due_to_regex", "gz") == 1
    assert r.get("probe_http_uncompressed_body_length", "gz") == len(b"maintenance page" * 10)


def test_bearer_and_basic_auth_from_env_secrets(web):
    env = {"API_TOKEN": TOKEN, "PORTAL_PASSWORD": PASSWORD}
    r = run_probes(_config({
        "bearer": {"prober": "http", "http": {"bearer_token": "${API_TOKEN}"}},
        "basic": {"prober": "http", "http": {"basic_auth": {"username": "admin", "password": "${PORTAL_PASSWORD}"}}},
        "wrong": {"prober": "http", "http": {"bearer_token": "nope"}},
    }, [{"name": "bearer", "module": "bearer", "url": web.url("/bearer")},
        {"name": "basic", "module": "basic", "url": web.url("/basic")},
        {"name": "wrong", "module": "wrong", "url": web.url("/bearer")}]), environ=env)
    assert r.get("probe_success", "bearer") == 1
    assert r.get("probe_success", "basic") == 1
    assert r.get("probe_success", "wrong") == 0
    assert r.get("probe_http_status_code", "wrong") == 401


def test_credentials_are_not_sent_to_another_origin(web):
    other = HTTPServer({"/ok": _ok})
    try:
        web.routes["/away"] = lambda h: send(h, 302, b"", {"Location": other.url("/ok")})
        r = run_probes(_config({"bearer": {"prober": "http", "http": {"bearer_token": TOKEN}}},
                               [{"name": "away", "module": "bearer", "url": web.url("/away")}]))
        assert r.get("probe_success", "away") == 1
        assert web.requests[-1]["headers"].get("Authorization") == f"Bearer {TOKEN}"
        assert "Authorization" not in other.requests[-1]["headers"]
    finally:
        other.close()


def test_secrets_never_reach_logs_errors_or_metrics(web, caplog):
    env = {"API_TOKEN": TOKEN, "PORTAL_PASSWORD": PASSWORD}
    data = _config({
        "bearer": {"prober": "http", "http": {"bearer_token": "${API_TOKEN}"}},
        "basic": {"prober": "http", "http": {"basic_auth": {"username": "admin", "password": "${PORTAL_PASSWORD}"}}},
    }, [{"name": "ok", "module": "bearer", "url": web.url("/bearer")},
        {"name": "fails", "module": "basic", "url": web.url("/error")},
        {"name": "slow", "module": "bearer", "url": web.url("/slow")},
        {"name": "refused", "module": "basic", "url": "http://127.0.0.1:1/"}])
    data["modules"]["bearer"]["timeout"] = "1s"
    caplog.set_level(logging.DEBUG)
    section = probes_section(data, env)
    r = run_probes(data, environ=env)
    assert r.get("probe_success", "ok") == 1 and r.get("probe_success", "fails") == 0
    exposition = render(lambda: r.samples).decode()
    assert "probe_success" in exposition
    broken = dict(data, targets=data["targets"] + [{"name": "x", "module": "missing", "url": "http://127.0.0.1/"}])
    with pytest.raises(ConfigErrors) as err:
        probes_section(broken, env)
    texts = [exposition, caplog.text, str(err.value), repr(section), str(section)]
    for text in texts:
        assert TOKEN not in text and PASSWORD not in text
    assert "fails" in caplog.text  # the failure itself was logged


def test_unresolvable_and_refused_are_failures_not_exceptions():
    r = run_probes(_config({"get": {"prober": "http"}},
                           [{"name": "nxdomain", "module": "get", "url": "http://no-such-host.invalid/"},
                            {"name": "refused", "module": "get", "url": "http://127.0.0.1:1/"}]))
    assert r.get("probe_success", "nxdomain") == 0
    assert r.get("probe_success", "refused") == 0
    assert r.get("probe_duration_seconds", "refused") >= 0


# ---------------------------------------------------------------- TLS

@pytest.fixture
def certs(tmp_path):
    return Certs(tmp_path)


def test_tls_with_custom_ca(certs):
    server = HTTPServer({"/ok": _ok}, tls=certs.server_context("valid"))
    try:
        r = run_probes(_config({"ca": {"prober": "http", "http": {"tls": {"ca_file": certs.ca_file}}},
                                "system": {"prober": "http"},
                                "plain-only": {"prober": "http", "http": {"fail_if_ssl": True,
                                                                          "tls": {"ca_file": certs.ca_file}}}},
                               [{"name": "ca", "module": "ca", "url": server.url("/ok")},
                                {"name": "no-ca", "module": "system", "url": server.url("/ok")},
                                {"name": "by-name", "module": "ca", "url": f"https://localhost:{server.port}/ok"},
                                {"name": "plain-only", "module": "plain-only", "url": server.url("/ok")}]))
    finally:
        server.close()
    assert r.get("probe_success", "ca") == 1
    assert r.get("probe_http_ssl", "ca") == 1
    assert r.get("probe_ssl_earliest_cert_expiry", "ca") == certs.valid_not_after.timestamp()
    assert r.get("probe_tls_version_info", "ca", version="TLS 1.3") == 1
    assert r.get("probe_http_duration_seconds", "ca", phase="tls") > 0
    assert r.get("probe_success", "no-ca") == 0  # not trusted without the test CA
    assert not r.has("probe_ssl_earliest_cert_expiry", "no-ca")
    assert r.get("probe_success", "by-name") == 1
    assert r.get("probe_success", "plain-only") == 0


def test_expired_certificate(certs, caplog):
    caplog.set_level(logging.DEBUG)
    server = HTTPServer({"/ok": _ok}, tls=certs.server_context("expired"))
    try:
        r = run_probes(_config({"ca": {"prober": "http", "http": {"tls": {"ca_file": certs.ca_file}}},
                                "insecure": {"prober": "http", "http": {"tls": {"insecure_skip_verify": True}}}},
                               [{"name": "expired", "module": "ca", "url": server.url("/ok")},
                                {"name": "insecure", "module": "insecure", "url": server.url("/ok")}]))
    finally:
        server.close()
    assert r.get("probe_success", "expired") == 0
    assert "certificate has expired" in caplog.text
    assert r.get("probe_success", "insecure") == 1
    assert r.get("probe_ssl_earliest_cert_expiry", "insecure") == certs.expired_not_after.timestamp()
    assert r.get("probe_ssl_earliest_cert_expiry", "insecure") < time.time()


def test_client_certificate(certs):
    server = HTTPServer({"/ok": _ok}, tls=certs.server_context("valid", require_client_cert=True))
    try:
        r = run_probes(_config({
            "mtls": {"prober": "http", "http": {"tls": {"ca_file": certs.ca_file, "cert_file": certs.client_cert,
                                                        "key_file": certs.client_key}}},
            "anon": {"prober": "http", "http": {"tls": {"ca_file": certs.ca_file}}}},
            [{"name": "mtls", "module": "mtls", "url": server.url("/ok")},
             {"name": "anon", "module": "anon", "url": server.url("/ok")}]))
    finally:
        server.close()
    assert r.get("probe_success", "mtls") == 1
    assert r.get("probe_success", "anon") == 0


def test_https_through_connect_proxy_and_http_through_proxy(certs, web):
    """A real forwarding proxy: CONNECT tunnels for https, absolute-form requests for http."""
    import base64
    import socket
    import threading

    tls_server = HTTPServer({"/ok": _ok}, tls=certs.server_context("valid"))
    seen = []
    want_auth = "Basic " + base64.b64encode(f"office:{PASSWORD}".encode()).decode()

    def pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def handle(conn):
        f = conn.makefile("rb")
        request_line = f.readline().decode()
        headers = {}
        for line in f:
            if line in (b"\r\n", b"\n"):
                break
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        seen.append((request_line.strip(), headers.get("proxy-authorization")))
        if headers.get("proxy-authorization") != want_auth:
            conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            conn.close()
            return
        method, target, _ = request_line.split()
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)))
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            from urllib.parse import urlsplit
            u = urlsplit(target)
            upstream = socket.create_connection((u.hostname, u.port))
            upstream.sendall(f"{method} {u.path} HTTP/1.1\r\n".encode() + b"".join(
                f"{k}: {v}\r\n".encode() for k, v in headers.items() if k != "proxy-authorization") + b"\r\n")
        threading.Thread(target=pipe, args=(upstream, conn), daemon=True).start()
        pipe(conn, upstream)

    proxy = socket.socket()
    proxy.bind(("127.0.0.1", 0))
    proxy.listen(8)

    def serve():
        while True:
            try:
                c, _ = proxy.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(c,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    proxy_url = f"http://127.0.0.1:{proxy.getsockname()[1]}"
    try:
        r = run_probes(_config({
            "via-proxy": {"prober": "http", "http": {
                "proxy_url": proxy_url, "tls": {"ca_file": certs.ca_file},
                "proxy_basic_auth": {"username": "office", "password": PASSWORD}}},
            "no-auth": {"prober": "http", "http": {"proxy_url": proxy_url}}},
            [{"name": "tunnel", "module": "via-proxy", "url": tls_server.url("/ok")},
             {"name": "forward", "module": "via-proxy", "url": web.url("/ok")},
             {"name": "denied", "module": "no-auth", "url": web.url("/ok")}]))
    finally:
        proxy.close()
        tls_server.close()
    assert r.get("probe_success", "tunnel") == 1
    assert r.get("probe_http_ssl", "tunnel") == 1
    assert r.get("probe_ssl_earliest_cert_expiry", "tunnel") == certs.valid_not_after.timestamp()
    assert r.get("probe_success", "forward") == 1
    assert r.get("probe_success", "denied") == 0
    assert r.get("probe_http_status_code", "denied") == 407
    lines = [line for line, _ in seen]
    assert f"CONNECT 127.0.0.1:{tls_server.port} HTTP/1.1" in lines
    assert f"GET {web.url('/ok')} HTTP/1.1" in lines


def test_ipv6_loopback():
    import socket

    try:
        server = HTTPServer({"/ok": _ok}, host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")

    try:
        r = run_probes(_config({"v6": {"prober": "http", "ip_protocol": "ip6"},
                                "v4": {"prober": "http", "ip_protocol": "ip4"}},
                               [{"name": "v6", "module": "v6", "url": f"http://[::1]:{server.port}/ok"},
                                {"name": "v4-only", "module": "v4", "url": f"http://[::1]:{server.port}/ok"}]))
    finally:
        server.close()
    assert socket.has_ipv6
    assert r.get("probe_success", "v6") == 1
    assert r.get("probe_ip_protocol", "v6") == 6
    assert r.get("probe_success", "v4-only") == 0


def test_agent_process_serves_probe_series_without_secrets(web, tmp_path):
    """The real agent process: probes and process inputs on /metrics; no secret in /metrics or its log."""
    import os

    import yaml

    from tests.support import agent_command, free_port, http_get, running, wait_until

    port = free_port()
    web.routes["/missing"] = lambda h: send(h, 404, b"gone")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(yaml.safe_dump({
        "agent": {"state_dir": str(tmp_path / "state"), "log_level": "debug"},
        "web": {"listen_address": f"127.0.0.1:{port}"},
        "icmp": {"enabled": False},
        "probes": {"interval": "1s", "timeout": "900ms",
                   "modules": {"api": {"prober": "http", "http": {"bearer_token": "${API_TOKEN}"}},
                               "login": {"prober": "http", "http": {
                                   "basic_auth": {"username": "admin", "password": "${PORTAL_PASSWORD}"}}}},
                   "targets": [{"name": "api", "module": "api", "url": web.url("/bearer"), "service": "motcua"},
                               {"name": "login", "module": "login", "url": web.url("/missing")}]},
        "process": {"interval": "1s", "timeout": "900ms",
                    "watch": [{"name": "agent-itself", "cmdline": r"agent\.yaml"}]},
    }))
    env = dict(os.environ, API_TOKEN=TOKEN, PORTAL_PASSWORD=PASSWORD)
    with running(agent_command() + ["-c", str(cfg), "--log.level", "debug"], tmp_path / "agent.log",
                 env=env) as agent:
        url = f"http://127.0.0.1:{port}/metrics"
        agent.wait_http(url)

        def scraped():
            text = http_get(url).decode()
            return text if ('probe_success{hop="service",module="api",target="api"} 1.0' in text
                            and 'target="login"' in text and "commune_process_up" in text) else None

        text = wait_until(scraped, timeout=20, what="probe series on /metrics")
        log_text = agent.log()
    assert 'probe_success{hop="service",module="login",target="login"} 0.0' in text
    assert 'commune_probe_target_info{hop="service",module="api",prober="http",service="motcua",target="api"} 1.0' \
        in text
    assert 'commune_process_up{name="agent-itself"} 1.0' in text
    assert "# TYPE probe_http_duration_seconds gauge" in text
    assert "status code 404 is not accepted" in log_text  # the failure is logged, with its reason
    for secret in (TOKEN, PASSWORD):
        assert secret not in text and secret not in log_text
