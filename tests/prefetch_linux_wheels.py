"""Fetch the wheels tests/test_linux_bundle.py builds its Linux wheelhouse from, while the network
is there: tests/run.sh runs the suite in a network namespace with loopback only, where pip cannot
reach an index. The bundle tests then run pip with ``--no-index --find-links`` on this folder
(``COMMUNE_LINUX_WHEELS``): the same resolution, from the same files.

    .venv/bin/python -m tests.prefetch_linux_wheels DIR

Holds every wheel the builder takes for its default Python versions (3.9 to 3.12, manylinux
x86_64) and extras, pip, and the project's build requirements (setuptools). Runs again quickly:
pip skips the files it already has.
"""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


BUILD = Path(__file__).resolve().parent.parent / "deploy" / "linux" / "build_bundle.py"
_spec = importlib.util.spec_from_file_location("linux_build_bundle", BUILD)
builder = importlib.util.module_from_spec(_spec)
sys.modules["linux_build_bundle"] = builder
_spec.loader.exec_module(builder)


def main(argv) -> int:
    out = Path(argv[0]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="prefetch-") as tmp:
            stage = Path(tmp) / "bundle" / "wheelhouse"
            builder.build_wheelhouse(stage, builder.DEFAULT_VERSIONS.split(","), builder.DEFAULT_EXTRAS.split(","))
            for wheel in stage.glob("*.whl"):
                if not wheel.name.startswith("commune_monitor-"):  # built from the checkout every time
                    shutil.copyfile(wheel, out / wheel.name)
    except builder.BundleError as exc:
        print(f"prefetch_linux_wheels: {exc}", file=sys.stderr)
        return 1
    # building the project's wheel offline needs its build backend
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q",
                           "--only-binary=:all:", "-d", str(out), "setuptools>=61", "wheel"])
    if done.returncode:
        return 1
    print(f"prefetch_linux_wheels: {len(list(out.glob('*.whl')))} wheels in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
