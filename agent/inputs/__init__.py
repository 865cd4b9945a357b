"""The one place where input modules are listed: imported explicitly, in config-file order.

Each module defines ``NAME`` (its config section), a ``Config`` dataclass deriving from
:class:`agent.inputs.base.InputSection`, and ``build(section, config) -> list`` of inputs; see
:mod:`agent.inputs.base`. :class:`agent.config.Config` has one field per module, named ``NAME``.
Components that are not inputs (the push queue) bring their own inputs (``agent.app``).
"""
from __future__ import annotations

from agent.inputs import host, icmp, inventory, probes, process, smart, snmp, winprint

INPUTS = (host, inventory, snmp, smart, winprint, icmp, probes, process)


def build_all(config) -> list:
    """Every input of every enabled section, built from the loaded config."""
    return [i for mod in INPUTS for i in build_section(mod.NAME, config)]


def build_section(name: str, config) -> list:
    """The inputs of one section (none when it is switched off)."""
    mod = {m.NAME: m for m in INPUTS}[name]
    section = getattr(config, name)
    return list(mod.build(section, config)) if section.enabled else []
