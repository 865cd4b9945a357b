"""One module per dashboard; each has ``NAME`` (the UID stem) and ``build(lang) -> dict``."""
from __future__ import annotations

from dashboards.boards import commune, fleet, host, network, printers, replacement, software

BOARDS = (fleet, commune, host, printers, network, software, replacement)
