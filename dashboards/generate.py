"""Build every dashboard in every language and write the JSON files (stable bytes, for diffs)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

from dashboards.boards import BOARDS
from dashboards.model import LANGS

GENERATED = Path(__file__).resolve().parent / "generated"


def build_all() -> Dict[str, Dict[str, dict]]:
    """``{lang: {name: dashboard JSON}}``."""
    return {lang: {board.NAME: board.build(lang) for board in BOARDS} for lang in LANGS}


def render(board: dict) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def write_all(out_dir: Path = GENERATED) -> List[Path]:
    """Write ``<out_dir>/<lang>/<name>.json``; removes stale JSON files of ours in those folders."""
    written = []
    for lang, boards in build_all().items():
        folder = Path(out_dir) / lang
        folder.mkdir(parents=True, exist_ok=True)
        keep = set()
        for name, board in boards.items():
            path = folder / f"{name}.json"
            path.write_text(render(board), encoding="utf-8")
            keep.add(path.name)
            written.append(path)
        for stale in folder.glob("*.json"):
            if stale.name not in keep:
                stale.unlink()
    return written
