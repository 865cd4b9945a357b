"""The probes: section: defaults, and one invalid fixture per validation rule with its exact message."""
from __future__ import annotations

import pytest

from contract.schema import ConfigErrors, Secret
from tests.probe_servers import probes_section

HTTP = {"prober": "http"}


def _errors(data, environ=None):
    with pytest.raises(ConfigErrors) as err:
        probes_section(data, environ)
    return [str(e) for e in err.value.errors]


def test_defaults():
    section = probes_section({"modules": {"web": HTTP, "port": {"prober": "tcp", "timeout": "3s"}},
                              "targets": [{"name": "portal", "module": "web", "url": "https://example.org/"}]})
    assert (section.interval, section.timeout) == (30, 20)
    web = section.modules["web"]
    assert web.timeout == 19  # probes.timeout minus 1s
    assert section.modules["port"].timeout == 3
    assert web.http.method == "GET" and web.http.follow_redirects and web.http.max_redirects == 10
    assert web.http.tls.insecure_skip_verify is False and web.ip_protocol == "auto"
    assert section.modules["port"].tcp.tls is False
    target = section.targets[0]
    assert (target.service, target.hop) == ("portal", "service")


def test_secrets_from_environment():
    section = probes_section({"modules": {"api": {"prober": "http", "http": {"bearer_token": "${TOKEN}"}}}},
                             {"TOKEN": "abc"})
    assert section.modules["api"].http.bearer_token == Secret("abc")
    assert _errors({"modules": {"api": {"prober": "http", "http": {"bearer_token": "${NOPE}"}}}}) == [
        "probes.modules.api.http.bearer_token: environment variable NOPE is not set (referenced as ${NOPE})"]


@pytest.mark.parametrize("data, messages", [
    ({"modules": {"web": HTTP}, "targets": [{"name": "a", "module": "wbe", "url": "http://x/"}]},
     ["probes.targets[0].module: unknown module 'wbe' (modules: web)"]),
    ({"targets": [{"name": "a", "module": "web", "url": "http://x/"}]},
     ["probes.targets[0].module: unknown module 'web' (modules: none defined)"]),
    ({"modules": {"web": {"prober": "http", "tcp": {"tls": True}}}},
     ["probes.modules.web.tcp: options for prober tcp, but the module's prober is http"]),
    ({"modules": {"web": {"prober": "ftp"}}},
     ["probes.modules.web.prober: unknown value 'ftp', expected one of: http, tcp, dns"]),
    ({"modules": {"d": {"prober": "dns"}}}, ["probes.modules.d.dns: required for prober dns (at least query_name)"]),
    ({"modules": {"d": {"prober": "dns", "dns": {"query_type": "A"}}}},
     ["probes.modules.d.dns.query_name: required field is missing"]),
    ({"modules": {"web": {"prober": "http", "http": {"fail_if_body_matches_regexp": ["ok", "(bad"]}}}},
     ["probes.modules.web.http.fail_if_body_matches_regexp[1]: invalid regular expression '(bad': "
      "missing ), unterminated subpattern at position 0"]),
    ({"modules": {"web": {"prober": "http", "http": {"fail_if_body_not_matches_regexp": ["[z-a]"]}}}},
     ["probes.modules.web.http.fail_if_body_not_matches_regexp[0]: invalid regular expression '[z-a]': "
      "bad character range z-a at position 1"]),
    ({"modules": {"t": {"prober": "tcp", "tcp": {"query_response": [{"expect": "*"}]}}}},
     ["probes.modules.t.tcp.query_response[0].expect: invalid regular expression '*': "
      "nothing to repeat at position 0"]),
    ({"modules": {"t": {"prober": "tcp", "tcp": {"query_response": [{}]}}}},
     ["probes.modules.t.tcp.query_response[0]: set expect, send or both"]),
    ({"modules": {"web": {"prober": "http", "timeout": "20s"}}},
     ["probes.modules.web.timeout: must be shorter than probes.timeout (20s), got 20s"]),
    ({"modules": {"web": {"prober": "http", "http": {"method": "get"}}}},
     ["probes.modules.web.http.method: expected an HTTP method in capitals like GET, HEAD or POST, got 'get'"]),
    ({"modules": {"web": {"prober": "http", "http": {"valid_status_codes": [200, 99]}}}},
     ["probes.modules.web.http.valid_status_codes: status codes are from 100 to 599, got 99"]),
    ({"modules": {"web": {"prober": "http", "http": {"bearer_token": "t",
                                                     "basic_auth": {"username": "u", "password": "p"}}}}},
     ["probes.modules.web.http.bearer_token: use basic_auth or bearer_token, not both"]),
    ({"modules": {"web": {"prober": "http", "http": {"bearer_token": "t", "headers": {"authorization": "x"}}}}},
     ["probes.modules.web.http.headers: an Authorization header conflicts with basic_auth/bearer_token"]),
    ({"modules": {"web": {"prober": "http", "http": {"fail_if_ssl": True, "fail_if_not_ssl": True}}}},
     ["probes.modules.web.http.fail_if_not_ssl: fail_if_ssl and fail_if_not_ssl cannot both be true"]),
    ({"modules": {"web": {"prober": "http", "http": {"proxy_url": "socks5://p:1080"}}}},
     ["probes.modules.web.http.proxy_url: expected http://host:port, got 'socks5://p:1080'"]),
    ({"modules": {"web": {"prober": "http", "http": {"proxy_url": "http://u:pw@p:3128"}}}},
     ["probes.modules.web.http.proxy_url: credentials do not belong in proxy_url: use proxy_basic_auth"]),
    ({"modules": {"web": {"prober": "http", "http": {"proxy_basic_auth": {"username": "u", "password": "p"}}}}},
     ["probes.modules.web.http.proxy_basic_auth: proxy_basic_auth needs proxy_url"]),
    ({"modules": {"web": {"prober": "http", "http": {"max_redirects": -1}}}},
     ["probes.modules.web.http.max_redirects: must not be negative"]),
    ({"modules": {"web": {"prober": "http", "http": {"tls": {"ca_file": "/nonexistent/ca.pem"}}}}},
     ["probes.modules.web.http.tls.ca_file: file /nonexistent/ca.pem does not exist"]),
    ({"modules": {"web": {"prober": "http", "http": {"tls": {"min_version": "SSL3"}}}}},
     ["probes.modules.web.http.tls.min_version: unknown value 'SSL3', expected one of: TLS10, TLS11, TLS12, TLS13"]),
    ({"modules": {"web": {"prober": "http", "http": {"follow": True}}}},
     ["probes.modules.web.http.follow: unknown field 'follow' (known fields: basic_auth, bearer_token, body, "
      "body_size_limit, fail_if_body_matches_regexp, fail_if_body_not_matches_regexp, fail_if_not_ssl, "
      "fail_if_ssl, follow_redirects, headers, max_redirects, method, proxy_basic_auth, proxy_url, tls, "
      "valid_status_codes)"]),
    ({"modules": {"web": HTTP}, "targets": [{"name": "a", "module": "web"}]},
     ["probes.targets[0].url: required for http modules"]),
    ({"modules": {"web": HTTP}, "targets": [{"name": "a", "module": "web", "url": "ftp://x/"}]},
     ["probes.targets[0].url: expected an http:// or https:// URL, got 'ftp://x/'"]),
    ({"modules": {"web": HTTP}, "targets": [{"name": "a", "module": "web", "url": "https://u:p@x/"}]},
     ["probes.targets[0].url: credentials do not belong in the URL: use the module's basic_auth"]),
    ({"modules": {"web": HTTP}, "targets": [{"name": "a", "module": "web", "url": "http://x/", "address": "x:80"}]},
     ["probes.targets[0].address: http targets take url, not address"]),
    ({"modules": {"p": {"prober": "tcp"}}, "targets": [{"name": "a", "module": "p"}]},
     ["probes.targets[0].address: required for tcp modules (host:port)"]),
    ({"modules": {"p": {"prober": "tcp"}}, "targets": [{"name": "a", "module": "p", "address": "router"}]},
     ["probes.targets[0].address: expected host:port like example.org:443 or [2001:db8::1]:443, got 'router'"]),
    ({"modules": {"p": {"prober": "tcp"}}, "targets": [{"name": "a", "module": "p", "address": "router:99999"}]},
     ["probes.targets[0].address: port must be a number from 1 to 65535, got '99999'"]),
    ({"modules": {"p": {"prober": "tcp"}}, "targets": [{"name": "a", "module": "p", "url": "http://x/"}]},
     ["probes.targets[0].url: tcp targets take address, not url",
      "probes.targets[0].address: required for tcp modules (host:port)"]),
    ({"modules": {"d": {"prober": "dns", "dns": {"query_name": "x.vn", "query_type": "MX"}}},
      "targets": [{"name": "a", "module": "d"}]},
     ["probes.targets[0].address: query_type MX needs a DNS server address; "
      "the system resolver only answers A and AAAA"]),
    ({"modules": {"d": {"prober": "dns", "dns": {"query_name": "x.vn", "expected_addresses": ["10.0.0.300"]}}}},
     ["probes.modules.d.dns.expected_addresses[0]: expected an IPv4 or IPv6 address, got '10.0.0.300'"]),
    ({"modules": {"web": HTTP}, "targets": [{"name": "a", "module": "web", "url": "http://x/"},
                                            {"name": "a", "module": "web", "url": "http://y/"}]},
     ["probes.targets[1].name: duplicate target name 'a'"]),
    ({"modules": {"web": HTTP}, "targets": [{"name": "a", "module": "web", "url": "http://x/", "hop": "lan"}]},
     ["probes.targets[0].hop: unknown value 'lan', expected one of: gateway, isp, upstream, service"]),
])
def test_invalid(data, messages):
    assert _errors(data) == messages


def test_unloadable_tls_files(tmp_path):
    from tests.probe_servers import Certs

    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    certs = Certs(tmp_path)
    errors = _errors({"modules": {
        "a": {"prober": "http", "http": {"tls": {"ca_file": str(bad)}}},
        "b": {"prober": "tcp", "tcp": {"tls": True, "tls_config": {"cert_file": certs.client_cert,
                                                                    "key_file": certs.valid_key}}},
        "c": {"prober": "http", "http": {"tls": {"key_file": certs.client_key}}}}})
    assert errors[0].startswith(f"probes.modules.a.http.tls.ca_file: cannot load CA certificates from {bad}: ")
    assert errors[1].startswith(f"probes.modules.b.tcp.tls_config.cert_file: cannot load the client certificate "
                                f"and key from {certs.client_cert}: ")
    assert errors[2] == "probes.modules.c.http.tls.key_file: key_file needs cert_file"
    assert len(errors) == 3
