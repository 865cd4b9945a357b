"""SNMP polling of printers, routers, switches and UPSes (``snmp`` config section).

Modules: ``config`` (the section), ``profiles`` + ``profiles/*.yaml`` (what to read, as data),
``classify`` (kind, vendor, model, auto profiles), ``decode`` (values to samples), ``poller``
(one input per target), ``discover`` (subnet sweep: CLI and periodic input), ``client`` (requests
and walks) over ``udp`` + ``ber`` (v1/v2c, our own codec) or ``usm`` + ``usmkeys`` (v3: USM on
the same codec, loaded only when a v3 auth is used; cryptography only for encrypted requests).
"""
from __future__ import annotations

from agent.inputs.snmp.config import AuthConfig, Config, DiscoveryConfig, TargetConfig

NAME = "snmp"

__all__ = ["NAME", "Config", "AuthConfig", "TargetConfig", "DiscoveryConfig", "build"]


def build(section: Config, config) -> list:
    """One :class:`~agent.inputs.snmp.poller.TargetInput` per target, plus the discovery input."""
    if not section.targets and not section.discovery.enabled:
        return []
    from agent.inputs.snmp.client import SnmpClient
    from agent.inputs.snmp.poller import Limiter, TargetInput

    limiter = Limiter(section.max_concurrency)
    inputs: list = []
    for t in section.targets:
        client = SnmpClient(t.address, t.port, section.auths[t.auth], timeout=section.target_timeout(t),
                            retries=section.target_retries(t),
                            max_repetitions=section.target_max_repetitions(t))
        inputs.append(TargetInput(t, client, interval=section.target_interval(t),
                                  deadline=section.target_deadline(t), limiter=limiter))
    if section.discovery.enabled:
        from agent.inputs.snmp.discover import DiscoveryInput

        inputs.append(DiscoveryInput(section))
    return inputs
