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
    built = []
    for mod in INPUTS:
        section = getattr(config, mod.NAME)
        if section.enabled:
            built.extend(mod.build(section, config))
    return built
