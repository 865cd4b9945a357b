"""The shared thresholds of contract/thresholds.yaml, read once at import.

A missing or malformed file is a packaging fault, so it fails loudly at import with the file and
the key, never silently with a guessed default.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import yaml

PATH = Path(__file__).with_name("thresholds.yaml")
KEYS = ("agent_silent_after_seconds", "replacement_candidate_score", "replacement_watch_score",
        "queue_max_age_seconds")


def load(path: Path = PATH) -> Dict[str, float]:
    """The thresholds of ``path``: every key of :data:`KEYS`, each a positive number, no other key."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of threshold names to numbers")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; expected {', '.join(KEYS)}")
    out: Dict[str, float] = {}
    for key in KEYS:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{path}: {key}: expected a positive number, got {value!r}")
        out[key] = value
    return out


_T = load()
AGENT_SILENT_AFTER_S: int = int(_T["agent_silent_after_seconds"])
CANDIDATE_SCORE: float = _T["replacement_candidate_score"]
WATCH_SCORE: float = _T["replacement_watch_score"]
QUEUE_MAX_AGE_S: int = int(_T["queue_max_age_seconds"])
