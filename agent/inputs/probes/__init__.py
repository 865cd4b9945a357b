"""Network and software probes (section ``probes:``): http, tcp and dns, like blackbox_exporter.

``build`` makes one input per prober kind in use, named ``http``, ``tcp`` and ``dns``. Each
collection probes all of its targets at once; every target has its module's timeout enforced
here, so one slow target never delays the others and the runner's deadline is never hit. Every
target yields ``probe_success`` and ``probe_duration_seconds`` (labels target, module,
hop) even on timeout, plus ``commune_probe_target_info`` naming its service; a failed target is
logged at debug level with the reason, never with a secret.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Dict, List, Tuple

from agent.inputs.probes.config import PROBERS, Config, Module, Target  # noqa: F401 (Config: section)
from contract.samples import Sample, sample

NAME = "probes"

log = logging.getLogger(__name__)

# What counts as the target failing rather than a bug: the probers' own verdicts and what
# sockets, TLS and streams raise.
_TARGET_FAILURES = (OSError, ssl.SSLError, asyncio.IncompleteReadError, EOFError)


def _prober(kind: str):
    if kind == "http":
        from agent.inputs.probes import http as mod
    elif kind == "tcp":
        from agent.inputs.probes import tcp as mod
    else:
        from agent.inputs.probes import dns as mod
    return mod


class ProbeInput:
    """All targets of one prober kind, probed concurrently on each collection."""

    def __init__(self, kind: str, section: Config, targets: List[Tuple[Target, Module, str]]):
        mod = _prober(kind)
        self.name = kind
        self.interval = section.interval
        self.timeout = section.timeout
        self._probe = mod.probe
        self._last_ok: Dict[str, bool] = {}
        prepared: Dict[str, object] = {}
        self.targets = []
        for target, module, module_name in targets:
            if module_name not in prepared:
                prepared[module_name] = mod.Prepared(module)
            self.targets.append((target, module, module_name, prepared[module_name]))

    async def collect(self) -> List[Sample]:
        results = await asyncio.gather(*(self._one(*t) for t in self.targets))
        return [s for samples in results for s in samples]

    async def _one(self, target: Target, module: Module, module_name: str, prepared) -> List[Sample]:
        from agent.inputs.probes.net import ProbeFailure, Result

        result = Result()
        t0 = time.perf_counter()
        ok = False
        try:
            await asyncio.wait_for(self._probe(target, prepared, result), module.timeout)
            ok = True
        except asyncio.TimeoutError:
            result.reason = f"timed out after {module.timeout:g}s"
        except ProbeFailure as exc:
            result.reason = str(exc)
        except _TARGET_FAILURES as exc:
            result.reason = _describe(exc)
        except Exception as exc:  # a bug in a prober: report it, but never lose the other targets
            result.reason = f"internal error {exc.__class__.__name__}"
            log.error("%s probe of %s (module %s) hit an internal error", self.name, target.name, module_name,
                      exc_info=True)
        duration = time.perf_counter() - t0
        if not ok:
            log.debug("%s probe of %s (module %s) failed: %s", self.name, target.name, module_name, result.reason)
        if self._last_ok.get(target.name, True) != ok:  # log changes only, not every failed probe
            if ok:
                log.info("%s probe of %s succeeds again", self.name, target.name)
            else:
                log.warning("%s probe of %s (module %s) fails: %s", self.name, target.name, module_name,
                            result.reason)
        self._last_ok[target.name] = ok
        ident = {"target": target.name, "module": module_name}
        out = [
            sample("probe_success", 1 if ok else 0, hop=target.hop, **ident),
            sample("probe_duration_seconds", duration, hop=target.hop, **ident),
            sample("commune_probe_target_info", 1, service=target.service, prober=module.prober,
                   hop=target.hop, **ident),
        ]
        for (name, labels), value in result.values.items():
            out.append(sample(name, value, **ident, **dict(labels)))
        return out


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "the connection closed early"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc.__class__.__name__}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return exc.__class__.__name__


def build(section: Config, config) -> list:
    by_kind: Dict[str, list] = {kind: [] for kind in PROBERS}
    for target in section.targets:
        module = section.modules[target.module]
        by_kind[module.prober].append((target, module, target.module))
    return [ProbeInput(kind, section, targets) for kind, targets in by_kind.items() if targets]
