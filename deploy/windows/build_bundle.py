"""Build the offline Windows installer bundle of the agent, on any machine with PyPI access.

    python deploy/windows/build_bundle.py --python-zip python-3.11.9-embed-amd64.zip \\
        --python-sha256 HEX --out dist/windows-bundle [--arch win_amd64|win32] [--extras snmp,web,windows]

The bundle (a folder, for a USB stick or a share a GPO startup script reads):
    install.cmd, uninstall.cmd, install_steps.py   the silent installer (see its README.md)
    python-3.11.9-embed-amd64.zip                  CPython's embeddable zip, checked against --python-sha256
    python311._pth                                 that zip's ._pth with ``import site`` enabled
    wheelhouse/*.whl                               the project wheel, every dependency as a Windows
                                                   wheel (win_amd64/win32 or pure Python), and pip
    README.md, SHA256SUMS                          what it holds; every file with its SHA-256

Dependencies come from the project wheel's own metadata, evaluated for Windows (pip evaluates
markers for the machine it runs on, so ``pywin32; sys_platform == 'win32'`` would be skipped on
Linux), then fetched with ``pip download --only-binary=:all: --platform ... --python-version ...
--implementation cp``; the wheelhouse is checked to be closed under the Windows markers
(deploy/wheelhouse.py, shared with the Linux bundle). No hash
of the embeddable zip is pinned here: none could be checked against python.org from where this
script was written, so the builder passes the one published on python.org's release page.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # deploy/wheelhouse.py, the code shared with the Linux bundle
from wheelhouse import (MANIFEST, REPO, BundleError, IndexUnreachable, Target,  # noqa: E402
                        build_project_wheel, check_wheel_tags, download_pip, fill, parse_wheel_filename,
                        payload_id, prune, render, sha256_file, wheel_list, wheel_metadata, write_manifest)
from wheelhouse import download as _download  # noqa: E402

__all__ = ["BundleError", "IndexUnreachable", "MANIFEST", "REPO", "parse_wheel_filename", "build", "download",
           "build_wheelhouse", "check_python_zip"]

ARCHES = {"win_amd64": ("amd64", "AMD64"), "win32": ("win32", "x86")}  # wheel tag: (zip suffix, machine)
DEFAULT_EXTRAS = "snmp,web,windows"


# ------------------------------------------------------------------ the embeddable Python

def check_python_zip(path: Path, expected_sha256: str, python_version: str, arch: str) -> Dict[str, str]:
    """Refuse a zip that is not the expected file; returns its full version and its ._pth text."""
    if not path.is_file():
        raise BundleError(f"--python-zip {path}: no such file")
    suffix = ARCHES[arch][0]
    match = re.fullmatch(rf"python-({re.escape(python_version)}\.\d+)-embed-{suffix}\.zip", path.name)
    if not match:
        raise BundleError(f"--python-zip {path.name}: expected python-{python_version}.N-embed-{suffix}.zip "
                          f"(CPython's embeddable package for --python-version {python_version}, --arch {arch})")
    expected = expected_sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise BundleError(f"--python-sha256 must be 64 hex digits, got {expected_sha256!r}")
    got = sha256_file(path)
    if got != expected:
        raise BundleError(f"refusing {path}: its SHA-256 is {got}, expected {expected} "
                          f"(a different or damaged download; fetch it again from python.org)")
    tag = "python" + python_version.replace(".", "")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            missing = sorted({"python.exe", f"{tag}.dll", f"{tag}._pth"} - names)
            if missing:
                raise BundleError(f"{path.name} is not a CPython {python_version} embeddable zip: "
                                  f"it lacks {', '.join(missing)}")
            pth = zf.read(f"{tag}._pth").decode("utf-8")
    except zipfile.BadZipFile:
        raise BundleError(f"{path} is not a zip file") from None
    return {"full_version": match.group(1), "pth_name": f"{tag}._pth", "pth": enable_site(pth, path.name)}


def enable_site(pth: str, source: str) -> str:
    """The ._pth with ``import site`` active, so Lib\\site-packages and its .pth files are used."""
    lines = pth.splitlines()
    if any(line.strip() == "import site" for line in lines):
        return "\r\n".join(lines) + "\r\n"
    for i, line in enumerate(lines):
        if re.fullmatch(r"#\s*import site", line.strip()):
            lines[i] = "import site"
            return "\r\n".join(lines) + "\r\n"
    raise BundleError(f"the ._pth file of {source} has no '#import site' line to enable")


# ------------------------------------------------------------------ wheels

def windows_target(full_version: str, arch: str) -> Target:
    """PEP 508 marker values of the embeddable CPython on Windows, and its wheel platform."""
    return Target(label=arch, python_version=".".join(full_version.split(".")[:2]), full_version=full_version,
                  platforms=(arch,), env={"os_name": "nt", "sys_platform": "win32", "platform_system": "Windows",
                                          "platform_machine": ARCHES[arch][1], "platform_release": "10",
                                          "platform_version": ""})


def download(requirements: List[str], wheelhouse: Path, arch: str, python_version: str) -> None:
    _download(requirements, wheelhouse, windows_target(python_version + ".0", arch))


def build_wheelhouse(wheelhouse: Path, arch: str, python_version: str, full_version: str,
                     extras: List[str]) -> Tuple[Path, Path, Dict[str, Path]]:
    """Project wheel + Windows wheels of its dependencies + pip. Returns (project wheel, pip wheel, used)."""
    wheelhouse.mkdir(parents=True)
    target = windows_target(full_version, arch)
    download_pip(wheelhouse, target)
    project = build_project_wheel(wheelhouse, wheelhouse.parent.parent)
    used = fill(wheelhouse, project, extras, target)
    check_wheel_tags(wheelhouse, (arch,), arch)
    pip_wheel = next(wheelhouse.glob("pip-*.whl"))
    used["pip"] = pip_wheel
    prune(wheelhouse, used.values())
    return project, pip_wheel, used


# ------------------------------------------------------------------ the bundle's own files

def write_crlf(path: Path, text: str) -> None:
    """cmd.exe needs CRLF: with bare LF, goto and call :label misread lines."""
    path.write_bytes(text.replace("\r\n", "\n").replace("\n", "\r\n").encode("ascii"))


def build(python_zip: Path, python_sha256: str, out: Path, python_version: str = "3.11",
          arch: str = "win_amd64", extras: Optional[List[str]] = None) -> Dict[str, str]:
    extras = list(extras if extras is not None else DEFAULT_EXTRAS.split(","))
    if "windows" not in extras:
        raise BundleError("--extras must include windows (pywin32 runs the agent as a service)")
    python = check_python_zip(python_zip, python_sha256, python_version, arch)
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"--out {out} is not empty: choose a new folder or delete it (old wheels would mix in)")
    with tempfile.TemporaryDirectory(prefix="commune-bundle-") as tmp:
        stage = Path(tmp) / "bundle"
        project, pip_wheel, used = build_wheelhouse(stage / "wheelhouse", arch, python_version,
                                                    python["full_version"], extras)
        shutil.copyfile(python_zip, stage / python_zip.name)
        (stage / python["pth_name"]).write_bytes(python["pth"].encode("ascii"))
        shutil.copyfile(HERE.parent / "install_steps.py", stage / "install_steps.py")
        version = wheel_metadata(project)["Version"]
        values = {
            "VERSION": version,
            "BUNDLE_ID": payload_id(stage, version),
            "PYTHON_ZIP": python_zip.name,
            "PYTHON_VERSION": python["full_version"],
            "PYTHON_SHA256": python_sha256.strip().lower(),
            "PTH": python["pth_name"],
            "PIP_WHEEL": pip_wheel.name,
            "PROJECT_WHEEL": project.name,
            "EXTRAS": ",".join(extras),
            "ARCH": arch,
            "WHEELS": wheel_list(used.values()),
        }
        write_crlf(stage / "install.cmd", render(HERE / "install.cmd.in", values))
        write_crlf(stage / "uninstall.cmd", render(HERE / "uninstall.cmd.in", values))
        (stage / "README.md").write_text(render(HERE / "README.bundle.md", values), encoding="utf-8")
        write_manifest(stage)
        out.mkdir(parents=True, exist_ok=True)
        for item in stage.iterdir():
            shutil.move(str(item), str(out / item.name))
    return values


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Build the offline Windows installer bundle of the commune-monitor agent.")
    p.add_argument("--python-zip", required=True, type=Path, metavar="PATH",
                   help="CPython's embeddable zip, e.g. python-3.11.9-embed-amd64.zip from python.org")
    p.add_argument("--python-sha256", required=True, metavar="HEX",
                   help="its SHA-256 as published on python.org's release page (no hash is pinned here)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="new or empty folder for the bundle")
    p.add_argument("--python-version", default="3.11", help="X.Y of that Python (default 3.11)")
    p.add_argument("--arch", choices=sorted(ARCHES), default="win_amd64", help="default win_amd64")
    p.add_argument("--extras", default=DEFAULT_EXTRAS,
                   help=f"extras of commune-monitor to install (default {DEFAULT_EXTRAS}: any PC can be the site poller)")
    args = p.parse_args(argv)
    if not re.fullmatch(r"3\.\d+", args.python_version):
        p.error(f"--python-version must be X.Y, e.g. 3.11, got {args.python_version!r}")
    try:
        values = build(args.python_zip, args.python_sha256, args.out, args.python_version, args.arch,
                       [e.strip() for e in args.extras.split(",") if e.strip()])
    except BundleError as exc:
        print(f"build_bundle: {exc}", file=sys.stderr)
        return 1
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"bundle {values['BUNDLE_ID']} for {args.arch}, Python {values['PYTHON_VERSION']}: {args.out} "
          f"({size / 1e6:.1f} MB, {len(list((args.out / 'wheelhouse').glob('*.whl')))} wheels)")
    print(f"on the PC, as Administrator:  install.cmd /collector https://COLLECTOR:9722 /key KEY "
          f"/account LocalSystem   (see {args.out / 'README.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
