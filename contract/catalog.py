"""The metric catalog: every metric commune-monitor emits, with type, unit, help and labels.

``contract/catalog.yaml`` is reviewed data. Exposition takes TYPE and HELP from it, and tests tie it
to what the inputs emit, to the rules and to the dashboards.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Dict, List, NamedTuple, Tuple

import yaml

from contract.names import METRIC_NAME_RE

CATALOG_FILE = Path(__file__).with_name("catalog.yaml")
TYPES = ("counter", "gauge", "info")


class MetricDef(NamedTuple):
    name: str
    type: str
    unit: str
    help: str
    labels: Tuple[str, ...]
    input: str


def parse_catalog(text: str) -> Dict[str, MetricDef]:
    """Parse and check catalog YAML; raise ValueError naming the entry and the problem."""
    data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}  # libyaml: 7x faster
    out: Dict[str, MetricDef] = {}
    for i, entry in enumerate(data.get("metrics") or []):
        where = f"metrics[{i}]"
        missing = {"name", "type", "help", "input"} - set(entry)
        if missing:
            raise ValueError(f"{where}: missing {', '.join(sorted(missing))}")
        unknown = set(entry) - {"name", "type", "unit", "help", "labels", "input"}
        if unknown:
            raise ValueError(f"{where}: unknown field {', '.join(sorted(unknown))}")
        name = entry["name"]
        if not isinstance(name, str) or not METRIC_NAME_RE.fullmatch(name):
            raise ValueError(f"{where}: invalid metric name {name!r}")
        if entry["type"] not in TYPES:
            raise ValueError(f"{where} ({name}): type must be one of {', '.join(TYPES)}")
        if entry["type"] == "counter" and not name.endswith("_total"):
            raise ValueError(f"{where} ({name}): counter names end in _total")
        if name in out:
            raise ValueError(f"{where}: {name} is listed twice")
        out[name] = MetricDef(name, entry["type"], str(entry.get("unit") or ""), entry["help"].strip(),
                              tuple(entry.get("labels") or ()), entry["input"])
    return out


@functools.lru_cache(maxsize=1)
def catalog() -> Dict[str, MetricDef]:
    return parse_catalog(CATALOG_FILE.read_text(encoding="utf-8"))


def metrics_of(input_name: str) -> List[MetricDef]:
    return [m for m in catalog().values() if m.input == input_name]
