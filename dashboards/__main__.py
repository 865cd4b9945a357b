"""``commune-collector dashboards generate|push ...``, also ``python -m dashboards generate|push ...``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["push"]:
        from dashboards.push import main as push_main

        return push_main(argv[1:])
    p = argparse.ArgumentParser(prog="commune-collector dashboards",
                                description="Generate the Grafana dashboard JSON, or upload it (push --help). "
                                            "Also runs as: python -m dashboards.")
    sub = p.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="regenerate dashboards/generated/<lang>/*.json")
    from dashboards.generate import GENERATED, write_all

    gen.add_argument("--out", type=Path, default=GENERATED, help=f"output folder (default: {GENERATED})")
    sub.add_parser("push", help="upload to Grafana (commune-collector dashboards push)")
    args = p.parse_args(argv)
    written = write_all(args.out)
    print(f"wrote {len(written)} dashboards under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
