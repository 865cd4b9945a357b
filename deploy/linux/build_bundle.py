"""Build the offline Linux bundle of the agent (x86_64 PCs with systemd), on any machine with PyPI access.

    python3 deploy/linux/build_bundle.py --out dist/commune-monitor-linux [--tar]
        [--python-versions 3.9,3.10,3.11,3.12] [--extras snmp,web]

The bundle (a folder, and with --tar a .tar.gz of it, for a USB stick or scp):
    install.sh                     install, upgrade in place, enroll (see its README.md)
    install_steps.py               the installer's steps done in Python (bundle check, agent.yaml, enrollment)
    commune-agent.service          the systemd unit (deploy/systemd/)
    wheelhouse/*.whl               the project wheel, every dependency as a manylinux x86_64 (glibc <= 2.31)
                                   or pure-Python wheel for each CPython of --python-versions, and pip
    share/deploy.md, share/agent.example.yaml   installed into /opt/commune-monitor/share
    README.md, SHA256SUMS          what it holds; every file with its SHA-256

The default Python versions are those of the supported distributions: Debian 11 (3.9), Ubuntu
22.04 (3.10), Debian 12 (3.11), Ubuntu 24.04 (3.12). Wheels are fetched for each with ``pip
download --only-binary=:all: --platform manylinux_2_31_x86_64 ... --python-version 3.X
--implementation cp`` (glibc 2.31 is Debian 11's, the oldest of them), and the wheelhouse is
checked to be closed for each (deploy/wheelhouse.py, shared with the Windows bundle).
"""
from __future__ import annotations

import argparse
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # deploy/wheelhouse.py, the code shared with the Windows bundle
from wheelhouse import (MANIFEST, REPO, BundleError, IndexUnreachable, SpecifierSet, Target,  # noqa: E402
                        build_project_wheel, check_wheel_tags, download_pip, empty_out, fill, parse_wheel_filename,
                        payload_id, project_root, prune, render, unmet, wheel_list, wheel_metadata, write_manifest)

__all__ = ["BundleError", "IndexUnreachable", "MANIFEST", "DISTRIBUTIONS", "build", "linux_target", "PLATFORMS",
           "parse_wheel_filename", "unmet_for"]

# CPython of each supported distribution: X.Y -> (full version as shipped, distributions)
DISTRIBUTIONS: Dict[str, tuple] = {
    "3.9": ("3.9.2", "Debian 11"),
    "3.10": ("3.10.12", "Ubuntu 22.04"),
    "3.11": ("3.11.2", "Debian 12"),
    "3.12": ("3.12.3", "Ubuntu 24.04"),
}
DEFAULT_VERSIONS = ",".join(DISTRIBUTIONS)
DEFAULT_EXTRAS = "snmp,web"
GLIBC = (2, 31)  # Debian 11's; Ubuntu 22.04 has 2.35, Debian 12 2.36, Ubuntu 24.04 2.39
ARCH = "x86_64"
# every manylinux tag a glibc-2.31 x86_64 machine takes (PEP 600 and the legacy aliases of PEP 513/571/599)
PLATFORMS = tuple([f"manylinux_{GLIBC[0]}_{m}_{ARCH}" for m in range(GLIBC[1], 4, -1)]
                  + [f"manylinux2014_{ARCH}", f"manylinux2010_{ARCH}", f"manylinux1_{ARCH}"])


def linux_target(python_version: str) -> Target:
    full = DISTRIBUTIONS.get(python_version, (python_version + ".0",))[0]
    return Target(label=f"manylinux {ARCH}", python_version=python_version, full_version=full, platforms=PLATFORMS,
                  env={"os_name": "posix", "sys_platform": "linux", "platform_system": "Linux",
                       "platform_machine": ARCH, "platform_release": "", "platform_version": ""})


def unmet_for(wheelhouse: Path, project_wheel: str, extras: str, python_version: str):
    """What CPython X.Y on Linux would still lack in a built wheelhouse, and the wheel it takes of each project."""
    return unmet(wheelhouse, project_root(wheelhouse / project_wheel, extras.split(",")), linux_target(python_version))


def build_wheelhouse(wheelhouse: Path, versions: Sequence[str], extras: List[str]) -> Dict[str, object]:
    """Project wheel + the Linux wheels of its dependencies for every version + pip."""
    wheelhouse.mkdir(parents=True)
    targets = [linux_target(v) for v in versions]
    download_pip(wheelhouse, targets[0])
    project = build_project_wheel(wheelhouse, wheelhouse.parent.parent)
    requires = wheel_metadata(project).get("Requires-Python") or ""
    too_old = [t.python_version for t in targets if requires and not SpecifierSet(requires).contains(t.full_version)]
    if too_old:
        raise BundleError(f"the project requires Python {requires}: --python-versions {', '.join(too_old)} cannot "
                          f"run it ({'; '.join(DISTRIBUTIONS.get(v, ('', 'no distribution'))[1] for v in too_old)} "
                          f"is then not supported; see docs/deploy.md)")
    for target in targets:
        fill(wheelhouse, project, extras, target)
    # What a later version fetched may serve an earlier one better (an abi3 wheel, a newer pure
    # one): walk every version again over the whole wheelhouse, as pip on the PC would choose,
    # until no choice needs anything new; keep only what is chosen.
    root = project_root(project, extras)
    for _ in range(5):
        lacking = [t for t in targets if unmet(wheelhouse, root, t)[0]]
        if not lacking:
            break
        for target in lacking:
            fill(wheelhouse, project, extras, target)
    else:
        raise BundleError(f"the wheelhouse does not settle for {', '.join(t.python_version for t in lacking)}")
    per_version: Dict[str, Dict[str, Path]] = {t.python_version: unmet(wheelhouse, root, t)[1] for t in targets}
    keep = {path for used in per_version.values() for path in used.values()}
    check_wheel_tags(wheelhouse, PLATFORMS, f"{ARCH} Linux")
    pip_wheels = sorted(wheelhouse.glob("pip-*.whl"))
    if len(pip_wheels) != 1:
        raise BundleError(f"expected one pip wheel, found {', '.join(p.name for p in pip_wheels) or 'none'}")
    keep.add(pip_wheels[0])
    prune(wheelhouse, keep)
    return {"project": project, "pip": pip_wheels[0], "keep": keep, "per_version": per_version,
            "requires_python": requires}


def build(out: Path, versions: Optional[Sequence[str]] = None, extras: Optional[List[str]] = None,
          tar: bool = False) -> Dict[str, str]:
    versions = list(versions or DEFAULT_VERSIONS.split(","))
    extras = list(extras if extras is not None else DEFAULT_EXTRAS.split(","))
    if "windows" in extras:
        raise BundleError("--extras: windows is for the Windows bundle (deploy/windows/build_bundle.py)")
    for v in versions:
        if not re.fullmatch(r"3\.\d+", v):
            raise BundleError(f"--python-versions: X.Y, e.g. 3.11, got {v!r}")
    problem = empty_out(out)
    if problem:
        raise BundleError(problem)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="commune-linux-bundle-") as tmp:
        stage = Path(tmp) / "bundle"
        wh = build_wheelhouse(stage / "wheelhouse", versions, extras)
        shutil.copyfile(HERE.parent / "install_steps.py", stage / "install_steps.py")
        shutil.copyfile(REPO / "deploy" / "systemd" / "commune-agent.service", stage / "commune-agent.service")
        (stage / "share").mkdir()
        shutil.copyfile(REPO / "docs" / "deploy.md", stage / "share" / "deploy.md")
        shutil.copyfile(REPO / "config" / "agent.example.yaml", stage / "share" / "agent.example.yaml")
        version = wheel_metadata(wh["project"])["Version"]
        values = {
            "VERSION": version,
            "BUNDLE_ID": payload_id(stage, version),
            "PROJECT_WHEEL": wh["project"].name,
            "PIP_WHEEL": wh["pip"].name,
            "EXTRAS": ",".join(extras),
            "PYTHON_VERSIONS": " ".join(versions),
            "REQUIRES_PYTHON": wh["requires_python"] or "any",
            "GLIBC": f"{GLIBC[0]}.{GLIBC[1]}",
            "ARCH": ARCH,
            "DISTRIBUTIONS": "\n".join(f"| {DISTRIBUTIONS[v][1]} | {v} |" if v in DISTRIBUTIONS else f"| (other) | {v} |"
                                       for v in versions),
            "WHEELS": wheel_list(wh["keep"]),
        }
        script = stage / "install.sh"
        script.write_text(render(HERE / "install.sh.in", values), encoding="utf-8")
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        (stage / "README.md").write_text(render(HERE / "README.bundle.md", values), encoding="utf-8")
        write_manifest(stage)
        out.mkdir(parents=True, exist_ok=True)
        for item in stage.iterdir():
            shutil.move(str(item), str(out / item.name))
    if tar:
        archive = out.with_name(out.name + ".tar.gz")
        with tarfile.open(archive, "w:gz") as tf:
            tf.add(out, arcname=out.name)
        values["TARBALL"] = str(archive)
    values["SECONDS"] = f"{time.monotonic() - started:.1f}"
    return values


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Build the offline Linux bundle of the commune-monitor agent.")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="new or empty folder for the bundle")
    p.add_argument("--python-versions", default=DEFAULT_VERSIONS,
                   help=f"CPython X.Y versions to hold wheels for (default {DEFAULT_VERSIONS}: Debian 11 and 12, "
                        "Ubuntu 22.04 and 24.04)")
    p.add_argument("--extras", default=DEFAULT_EXTRAS,
                   help=f"extras of commune-monitor to install (default {DEFAULT_EXTRAS}: any PC can be the site poller)")
    p.add_argument("--tar", action="store_true", help="also write DIR.tar.gz next to the folder")
    args = p.parse_args(argv)
    try:
        values = build(args.out, [v.strip() for v in args.python_versions.split(",") if v.strip()],
                       [e.strip() for e in args.extras.split(",") if e.strip()], tar=args.tar)
    except BundleError as exc:
        print(f"build_bundle: {exc}", file=sys.stderr)
        return 1
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"bundle {values['BUNDLE_ID']} for {ARCH} Linux, Python {values['PYTHON_VERSIONS']}: {args.out} "
          f"({size / 1e6:.1f} MB, {len(list((args.out / 'wheelhouse').glob('*.whl')))} wheels, "
          f"{values['SECONDS']} s)" + (f"; {values['TARBALL']}" if "TARBALL" in values else ""))
    print("on the PC, as root:  ./install.sh --collector https://COLLECTOR:9722 --key-file KEYFILE   "
          f"(see {args.out / 'README.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
