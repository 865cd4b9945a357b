"""The one place where input modules are listed (explicit, in config-file order).

Each module defines ``NAME``, a ``Config`` dataclass deriving from
:class:`agent.inputs.base.InputSection`, and ``build(section, config) -> list`` of inputs;
see :mod:`agent.inputs.base`. The push queue (``agent.push``) is listed here too: its section
brings the ``queue`` input that reports the queue's own metrics.
"""
from __future__ import annotations

import importlib
from typing import List, Tuple

INPUTS: Tuple[str, ...] = (
    "agent.inputs.host",
    "agent.inputs.inventory",
    "agent.inputs.snmp",
    "agent.inputs.smart",
    "agent.inputs.winprint",
    "agent.inputs.icmp",
    "agent.inputs.probes",
    "agent.inputs.process",
    "agent.push",  # push queue (config section "push"); brings the "queue" input when enabled
)

def _modules(names):
    return [importlib.import_module(n) for n in names]


def sections() -> List[tuple]:
    return [(m.NAME, m.Config) for m in _modules(INPUTS)]


def build_all(config) -> list:
    """Every input of every enabled section, built from the loaded config."""
    return [i for name, _ in sections() for i in build_section(name, config)]


def build_section(name: str, config) -> list:
    """The inputs of one section (none when it is switched off)."""
    mod = {m.NAME: m for m in _modules(INPUTS)}[name]
    section = getattr(config, name)
    return list(mod.build(section, config)) if section.enabled else []
