"""Turn samples into the Prometheus text exposition format with prometheus-client.

TYPE and HELP come from the metric catalog; a sample whose metric is not catalogued is still
exposed (as untyped) and logged once, since dropping data over a documentation gap helps nobody.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, Iterable, List

from prometheus_client.core import CollectorRegistry, Metric
from prometheus_client.exposition import generate_latest

from contract.catalog import catalog
from contract.samples import Sample

log = logging.getLogger(__name__)
_warned: set = set()

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def families(samples: Iterable[Sample]) -> List[Metric]:
    cat = catalog()
    by_name: Dict[str, Metric] = {}
    for s in samples:
        fam = by_name.get(s.name)
        if fam is None:
            d = cat.get(s.name)
            if d is None:
                if s.name not in _warned:
                    _warned.add(s.name)
                    log.warning("metric %s is not in the catalog; exposed as untyped", s.name)
                fam = Metric(s.name, "Not catalogued.", "untyped")
            elif d.type == "counter":
                fam = Metric(s.name[: -len("_total")], d.help, "counter")
            else:
                fam = Metric(s.name, d.help, "gauge")
            by_name[s.name] = fam
        fam.add_sample(s.name, s.labels, s.value)
    return list(by_name.values())


class _SnapshotCollector:
    def __init__(self, source: Callable[[], Iterable[Sample]]):
        self.source = source

    def collect(self):
        return families(self.source())


def render(source: Callable[[], Iterable[Sample]]) -> bytes:
    """The exposition text of whatever ``source()`` returns now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(source))
    return generate_latest(registry)
