"""Fetch the wheels tests/test_windows_bundle.py builds its Windows wheelhouses from, while the
network is there: tests/run.sh runs the suite in a network namespace with loopback only, where
pip cannot reach an index. The bundle tests then run pip with ``--no-index --find-links`` on this
folder (``COMMUNE_WINDOWS_WHEELS``): the same resolution, from the same files.

    .venv/bin/python -m tests.prefetch_windows_wheels DIR

Holds, for win_amd64 and win32 (CPython 3.11, the builder's default extras), every wheel the
builder takes, pip, and the project's build requirements (setuptools). Runs again quickly: pip
skips the files it already has.
"""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


BUILD = Path(__file__).resolve().parent.parent / "deploy" / "windows" / "build_bundle.py"
_spec = importlib.util.spec_from_file_location("build_bundle", BUILD)
builder = importlib.util.module_from_spec(_spec)
sys.modules["build_bundle"] = builder
_spec.loader.exec_module(builder)


def main(argv) -> int:
    out = Path(argv[0]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    extras = builder.DEFAULT_EXTRAS.split(",")
    try:
        for arch in ("win_amd64", "win32"):
            with tempfile.TemporaryDirectory(prefix="prefetch-") as tmp:
                stage = Path(tmp) / "bundle" / "wheelhouse"
                builder.build_wheelhouse(stage, arch, "3.11", "3.11.9", extras)
                for wheel in stage.glob("*.whl"):
                    if not wheel.name.startswith("commune_monitor-"):  # built from the checkout every time
                        shutil.copyfile(wheel, out / wheel.name)
    except builder.BundleError as exc:
        print(f"prefetch_windows_wheels: {exc}", file=sys.stderr)
        return 1
    # building the project's wheel offline needs its build backend
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q",
                           "--only-binary=:all:", "-d", str(out), "setuptools>=61", "wheel"])
    if done.returncode:
        return 1
    print(f"prefetch_windows_wheels: {len(list(out.glob('*.whl')))} wheels in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
