"""How a listener is checked, the agent's /metrics and the collector's ingest alike: its address,
whether it is loopback only, and its basic-auth users (bcrypt hashes, as the exporter-toolkit web
config has them)."""
from __future__ import annotations

import ipaddress
from typing import Dict, Iterator

from contract.schema import Secret


def check_basic_auth_users(users: Dict[str, Secret]) -> Iterator[tuple]:
    """Each password must be a bcrypt hash, as the exporter-toolkit web config requires."""
    for user, hashed in users.items():
        if not hashed.reveal().startswith(("$2a$", "$2b$", "$2y$")):
            yield f"basic_auth_users.{user}", "expected a bcrypt hash (htpasswd -nBC 10 USER)"


def split_listen_address(addr: str) -> "tuple[str, int]":
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port like 127.0.0.1:9721, got {addr!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
