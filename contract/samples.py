"""What inputs produce: samples of catalogued metrics, and the batches the runner stamps."""
from __future__ import annotations

from typing import Dict, List, NamedTuple


class Sample(NamedTuple):
    """One value of one series. ``name`` must be in the metric catalog."""

    name: str
    labels: Dict[str, str]
    value: float


def sample(name: str, value: float, /, **labels: object) -> Sample:
    """Shorthand: ``sample("node_load1", 0.5)``; label values are turned into strings.

    ``name`` and ``value`` are positional-only so that a label may itself be called ``name``
    (``commune_process_up{name}``) or ``value``.
    """
    return Sample(name, {k: str(v) for k, v in labels.items()}, float(value))


class Batch(NamedTuple):
    """The samples of one collection of one input, stamped with when it started (ms since epoch)."""

    input: str
    timestamp_ms: int
    samples: List[Sample]
