"""Central agent profiles: what a profile may say, how it is checked and merged (pure, no I/O).

A profile is a YAML mapping of *managed* sections (the input sections: ``host``, ``snmp``,
``probes``, ``process``, ...) that the collector serves per commune and role
(``collector/profiles.py``) and the agent applies over its own file (``agent/profile_fetch.py``).
Identity (``agent``), the ``/metrics`` listener (``web``), push and enrollment credentials
(``push``) and this section (``profile``) are never managed: a bad profile can never lock an agent
out of its collector.

The collector and the agent check a profile with the same function, :func:`check_profile`: only
managed sections, then the agent's own strict schema. Strings of a profile are literal (``$`` is
not an environment reference: a profile never reads the PC's environment).

Merging (:func:`merge`): mappings are merged key by key, anything else (lists, scalars) is
replaced by the later value. The agent applies ``local file < profile``, except the paths listed in
the local ``profile.pin``, where the profile's value is ignored.
"""
from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

from contract.schema import ConfigError, ConfigErrors, Duration, load_model, load_yaml

UNMANAGED = ("agent", "web", "push", "profile")
ROLE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
VERSION_LENGTH = 20  # hex digits of the SHA-256 of the profile text: the ETag and the version label


@dataclass
class Config:
    """The agent's ``profile:`` section (local only; never part of a profile)."""

    # Fetch a profile from the collector (only when push is enabled and the agent has a token).
    enabled: bool = True
    # Role of this agent, e.g. site-poller (polls the office's SNMP devices) or desk; empty: the
    # commune's profile without a role.
    role: str = ""
    # Profile endpoint; default: the push URL with /api/v1/write replaced by /api/v1/profile.
    url: str = ""
    # How often the profile is fetched again (If-None-Match: an unchanged one costs a 304); with
    # a jitter of 10%, and sooner after a failure (30s, doubling up to this).
    interval: Duration = Duration(600)
    # Per request; the fetch at start waits at most 5s of it, then the agent starts on the last
    # good profile saved in agent.state_dir (or on this file alone) and keeps trying.
    timeout: Duration = Duration(10)
    # Option paths decided by this file whatever the profile says, e.g. [snmp.auths, host.interval].
    pin: List[str] = field(default_factory=list)

    def validate(self) -> Iterator[tuple]:
        if self.role and not ROLE_RE.fullmatch(self.role):
            yield "role", f"expected lower-case letters, digits, - and _ like site-poller, got {self.role!r}"
        if self.interval < 1:
            yield "interval", f"must be at least 1s, got {self.interval:g}s"
        if self.timeout <= 0:
            yield "timeout", "must be greater than 0s"
        if self.url and not re.match(r"https?://[^/]+", self.url):
            yield "url", f"expected an http:// or https:// URL, got {self.url!r}"
        for i, path in enumerate(self.pin):
            problem = pin_problem(path)
            if problem:
                yield f"pin[{i}]", problem


def managed_sections() -> Tuple[str, ...]:
    from agent import inputs

    return tuple(mod.NAME for mod in inputs.INPUTS if mod.NAME not in UNMANAGED)


@functools.lru_cache(maxsize=1)
def _pin_patterns() -> Tuple[re.Pattern, ...]:
    from agent.config import Config as AgentConfig
    from contract.schema import field_paths

    managed = managed_sections()
    paths = set()
    for path in field_paths(AgentConfig):
        if path.split(".")[0] in managed and "[]" not in path:
            paths.add(path)
            while "{}" in path:  # a key of a map: snmp.auths.office
                path = path[:path.rindex("{}") + 2]
                paths.add(path)
                path = path[:-2]
    return tuple(re.compile(re.escape(p).replace(r"\{\}", r"\.[^.]+") + r"\Z") for p in sorted(paths))


def pin_problem(path: str) -> Optional[str]:
    section = path.split(".")[0]
    if section not in managed_sections():
        return (f"{path!r}: only paths of the managed sections can be pinned ({', '.join(managed_sections())}); "
                "the other sections are never taken from a profile")
    if not any(p.match(path) for p in _pin_patterns()):
        return f"{path!r} is not an option path (e.g. snmp.auths, probes.targets, host.interval)"
    return None


def version_of(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:VERSION_LENGTH]


def literal(data: Any) -> Any:
    """A copy where every string is literal for the schema's ``${ENV}`` substitution."""
    if isinstance(data, dict):
        return {k: literal(v) for k, v in data.items()}
    if isinstance(data, list):
        return [literal(v) for v in data]
    if isinstance(data, str):
        return data.replace("$", "$$")
    return data


def merge(base: Any, over: Any) -> Any:
    """``over`` on top of ``base``: mappings key by key, anything else replaced (copies)."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = {k: copy.deepcopy(v) for k, v in base.items()}
        for k, v in over.items():
            out[k] = merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def without_pins(profile: Dict[str, Any], pins: List[str]) -> Dict[str, Any]:
    """The profile with the pinned paths taken out (the local file decides them)."""
    out = copy.deepcopy(profile)
    for path in pins:
        parts = path.split(".")
        node = out
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    return out


def parse_profile(text: str, filename: str) -> Tuple[Dict[str, Any], Dict[str, int]]:
    """YAML text of a profile or fragment -> (data, lines); ConfigErrors if it is not YAML or
    not a mapping. An empty document is an empty profile."""
    data, lines = load_yaml(text, filename)
    if data is None:
        return {}, lines
    if not isinstance(data, dict):
        raise ConfigErrors([ConfigError("", "expected a mapping of sections (e.g. probes:, snmp:) at the top level",
                                        1, filename)])
    return data, lines


def check_profile(data: Dict[str, Any], filename: str, lines: Optional[Dict[str, int]] = None) -> List[ConfigError]:
    """Every problem of a profile: sections it may not set, then the agent's own schema."""
    from agent.config import Config as AgentConfig

    managed = managed_sections()
    errors = []
    for key in data:
        if key in managed:
            continue
        line = (lines or {}).get(str(key))
        if key in UNMANAGED:
            errors.append(ConfigError(str(key), f"section {key!r} is never taken from a profile (identity, "
                                      "the listener and push credentials stay in the agent's own file); "
                                      f"managed sections: {', '.join(managed)}", line, filename))
        else:
            close = difflib.get_close_matches(str(key), managed, n=1, cutoff=0.75)
            hint = f"did you mean {close[0]!r}?" if close else f"managed sections: {', '.join(managed)}"
            errors.append(ConfigError(str(key), f"unknown section {key!r} ({hint})", line, filename))
    if errors:
        return errors
    try:
        load_model(AgentConfig, literal(data), file=filename, lines=lines, environ={})
    except ConfigErrors as exc:
        return exc.errors
    return []


def effective_data(local: Optional[Dict[str, Any]], profile: Dict[str, Any], pins: List[str]) -> Dict[str, Any]:
    """The agent's config data: its own file with the (checked) profile applied over it."""
    return merge(local or {}, literal(without_pins(profile, pins)))
