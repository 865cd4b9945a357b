"""The agent's configuration: one YAML file, strict, defaults filled then validated.

The top-level model is assembled from the fixed sections below and one section per input module
listed in :mod:`agent.inputs` (each module brings its own ``Config`` dataclass). With no file at
all the defaults apply: the agent monitors this host and pings the default gateway.
"""
from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, Literal, Mapping, Optional

from agent import profile, push
from agent.inputs import host, icmp, inventory, probes, process, smart, snmp, winprint
from contract.listener import check_basic_auth_users, is_loopback, split_listen_address
from contract.names import default_agent_name, name_problem
from contract.schema import ConfigError, ConfigErrors, Duration, Secret, Size, load_model, load_yaml

DEFAULT_LISTEN = "127.0.0.1:9721"


def default_state_dir() -> str:
    if sys.platform == "win32":
        return os.path.join(os.environ.get("ProgramData", r"C:\ProgramData"), "commune-monitor", "agent")
    if os.geteuid() == 0:
        return "/var/lib/commune-agent"
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "commune-agent")


def default_log_file() -> str:
    """Windows: a file under %ProgramData% (a service has no stderr). Elsewhere: none (the journal)."""
    if sys.platform == "win32":
        return os.path.join(default_state_dir(), "logs", "agent.log")
    return ""


@dataclass
class AgentSection:
    # Name of this agent; the collector stamps the name bound to the agent's token instead.
    id: str = field(default_factory=lambda: default_agent_name(socket.gethostname()))
    # Where the durable queue and other state live.
    state_dir: str = field(default_factory=default_state_dir)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Rotating log file besides stderr; "" for none (default on Linux: the journal keeps the log).
    log_file: str = field(default_factory=default_log_file)
    # Size of each log file, and how many files in all (the oldest is deleted).
    log_file_max_size: Size = Size(10 * 2**20)
    log_file_count: int = 5
    # Interval of the agent's own health metrics.
    interval: Duration = Duration(30)

    def validate(self) -> Iterator[tuple]:
        problem = name_problem("agent", self.id)
        if problem:
            yield "id", problem
        if self.interval <= 0:
            yield "interval", "must be greater than 0s"
        if self.log_file_max_size < 4096:
            yield "log_file_max_size", "must be at least 4KB"
        if not 2 <= self.log_file_count <= 100:
            yield "log_file_count", "must be from 2 to 100 (the live file and the rotated ones)"


@dataclass
class WebSection:
    """``/metrics`` server, configured like the Prometheus exporter-toolkit web config."""

    listen_address: str = DEFAULT_LISTEN
    # user: bcrypt hash (htpasswd -nBC 10 user). Required, or TLS, to listen beyond loopback.
    basic_auth_users: Dict[str, Secret] = field(default_factory=dict)
    tls_cert_file: str = ""
    tls_key_file: str = ""

    def validate(self) -> Iterator[tuple]:
        try:
            host, _port = split_listen_address(self.listen_address)
        except ValueError as exc:
            yield "listen_address", str(exc)
            return
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            yield "tls_key_file" if self.tls_cert_file else "tls_cert_file", \
                "tls_cert_file and tls_key_file must be set together"
        for key in ("tls_cert_file", "tls_key_file"):
            path = getattr(self, key)
            if path and not os.path.isfile(path):
                yield key, f"file {path} does not exist"
        yield from check_basic_auth_users(self.basic_auth_users)
        if not is_loopback(host) and not (self.basic_auth_users or self.tls_cert_file):
            yield "listen_address", (f"{self.listen_address} is reachable from the network: configure "
                                     "basic_auth_users and/or tls_cert_file, or listen on 127.0.0.1")


@dataclass
class Config:
    """The agent's config file: one field per section, in file order (``agent``, ``web``,
    ``profile``, the inputs of :mod:`agent.inputs`, ``push``)."""

    agent: AgentSection = field(default_factory=AgentSection)
    web: WebSection = field(default_factory=WebSection)
    profile: profile.Config = field(default_factory=profile.Config)
    host: host.Config = field(default_factory=host.Config)
    inventory: inventory.Config = field(default_factory=inventory.Config)
    snmp: snmp.Config = field(default_factory=snmp.Config)
    smart: smart.Config = field(default_factory=smart.Config)
    winprint: winprint.Config = field(default_factory=winprint.Config)
    icmp: icmp.Config = field(default_factory=icmp.Config)
    probes: probes.Config = field(default_factory=probes.Config)
    process: process.Config = field(default_factory=process.Config)
    push: push.Config = field(default_factory=push.Config)


def load_config(path: Optional[str] = None, environ: Optional[Mapping[str, str]] = None):
    """Load and validate the config file (or the defaults when ``path`` is None).

    Raises :class:`ConfigErrors` listing every problem with its path and line. The file's data is
    kept on the result (:func:`local_source`) so that a central profile can be applied over it.
    """
    if path is None:
        config = load_model(Config, {}, environ=environ)
        config.__dict__["_local_source"] = ({}, {}, None)
        return config
    data, lines = read_config_data(path)
    config = load_model(Config, data, file=path, lines=lines, environ=environ)
    config.__dict__["_local_source"] = (data or {}, lines, path)
    return config


def read_config_data(path: str):
    """The file's YAML as (data, {path: line}); ConfigErrors when unreadable or not a mapping."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigErrors([ConfigError("", f"cannot read config file: {exc.strerror}", None, path)]) from None
    data, lines = load_yaml(text, path)
    if data is not None and not isinstance(data, dict):
        raise ConfigErrors([ConfigError("", "expected a mapping of sections at the top level", 1, path)])
    return data, lines


def local_source(config):
    """(data, lines, path) of the file ``config`` was loaded from; ({}, {}, None) for defaults."""
    return config.__dict__.get("_local_source") or ({}, {}, None)


def load_with_profile(config, profile_data, environ: Optional[Mapping[str, str]] = None):
    """``config``'s own file with a checked profile applied over it (``agent.profile``), validated
    as a whole. Raises ConfigErrors naming the file and the profile."""
    data, _lines, path = local_source(config)
    merged = profile.effective_data(data, profile_data, config.profile.pin)
    where = f"{path or '(defaults)'} with the profile"
    result = load_model(Config, merged, file=where, environ=environ)
    result.__dict__["_local_source"] = local_source(config)
    return result
