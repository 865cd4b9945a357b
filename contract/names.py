"""The one definition of valid names, shared by the agent, the collector and the catalog.

Pure (standard library only) so that light modules such as the catalog can import it. Every
pattern is used with ``fullmatch``: ``$`` would also accept a trailing newline.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Optional

# Prometheus data model: https://prometheus.io/docs/concepts/data_model/
METRIC_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

# Identity labels stamped by the collector: a commune code and an agent name.
COMMUNE_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
AGENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
RULES = {
    "commune": (COMMUNE_RE, "1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"),
    "agent": (AGENT_RE, "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"),
}

_DNS_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def name_problem(kind: str, value: object) -> Optional[str]:
    """None if ``value`` is a valid ``kind`` ("commune" or "agent"), else what is wrong with it."""
    regex, rule = RULES[kind]
    if isinstance(value, str) and regex.fullmatch(value):
        return None
    return f"invalid {kind} {value!r}: {rule}"


def default_agent_name(hostname: str) -> str:
    """An agent name from a host name: as it is when valid, else its first DNS label, else with
    every other character replaced by '-' (at most 63 characters)."""
    for candidate in (hostname, hostname.split(".")[0]):
        if AGENT_RE.fullmatch(candidate):
            return candidate
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", hostname.split(".")[0] or hostname).strip("-._")[:63]
    return cleaned or "agent"


def pull_address_problem(value: object) -> Optional[str]:
    """None if ``value`` is ``host:port`` Prometheus may scrape, else what is wrong with it.

    ``host`` is an IPv4 address, an IPv6 address in brackets or a DNS name; no scheme, path,
    query, fragment or user. Link-local (169.254.0.0/16, fe80::/10: cloud metadata services live
    there), unspecified, multicast and broadcast addresses are refused; loopback is allowed (an
    agent on the collector's own machine).
    """
    expected = "expected host:port like 10.1.2.3:9721, [fd00::5]:9721 or pc-01.commune.lan:9721"
    if not isinstance(value, str) or not value:
        return f"invalid pull address {value!r}: {expected}"
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        return f"invalid pull address {value!r}: {expected}"
    if host.startswith("[") and host.endswith("]"):
        try:
            ip = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"invalid pull address {value!r}: {host} is not an IPv6 address; {expected}"
        ip = ip.ipv4_mapped or ip
    else:
        try:
            ip = ipaddress.IPv4Address(host)
        except ValueError:
            ip = None
        if ip is None:
            labels = host.rstrip(".").split(".")
            if len(host) > 253 or not all(_DNS_LABEL_RE.fullmatch(label) for label in labels) \
                    or labels[-1].isdigit():
                return f"invalid pull address {value!r}: {host!r} is not a host name or address; {expected}"
            return None
    if ip.is_link_local or ip.is_unspecified or ip.is_multicast or \
            (ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255")):
        return (f"invalid pull address {value!r}: {ip} is a link-local, unspecified, multicast or broadcast "
                "address, not a host Prometheus should scrape")
    return None
