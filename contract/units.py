"""The value types of config files: durations (``30s``), sizes (``200MB``) and secrets that never
print. Pure; :mod:`contract.schema` converts config values to them."""
from __future__ import annotations

import re
from typing import Any


class Duration(float):
    """Seconds, written in config as ``30s``, ``1m30s``, ``500ms``, ``7d`` or a bare number."""

    def __repr__(self) -> str:
        return f"Duration({float(self)!r})"


class Size(int):
    """Bytes, written in config as ``200MB``, ``1GiB``, ``512KB`` or a bare number."""


class Secret:
    """A value that never prints: repr, str and format all show ``<secret>``."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('<secret>')"

    def __str__(self) -> str:
        return "<secret>"

    def __format__(self, spec: str) -> str:
        return "<secret>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self):  # pickling would leak the value into files; refuse
        raise TypeError("Secret values cannot be pickled")


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_duration(value: Any) -> Duration:
    """``1m30s`` -> 90.0; raises ValueError with the expected form."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 30s, 5m or 1h, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value!r}")
        return Duration(value)
    text = str(value).strip()
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"expected a duration like 30s, 5m or 1h, got {value!r}")
    return Duration(total)


def parse_size(value: Any) -> Size:
    """``200MB`` -> 200000000; raises ValueError with the expected form."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 200MB or 1GiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative, got {value!r}")
        return Size(value)
    m = _SIZE_RE.match(str(value))
    if not m:
        raise ValueError(f"expected a size like 200MB or 1GiB, got {value!r}")
    unit = (m.group(2) or "B").lower()
    return Size(int(float(m.group(1)) * _SIZE_UNITS[unit]))
