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
--implementation cp``; the wheelhouse is checked to be closed under the Windows markers. No hash
of the embeddable zip is pinned here: none could be checked against python.org from where this
script was written, so the builder passes the one published on python.org's release page.
"""
from __future__ import annotations

import argparse
import email.parser
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename
except ImportError:  # pip always carries a copy; packaging itself may not be installed
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ARCHES = {"win_amd64": ("amd64", "AMD64"), "win32": ("win32", "x86")}  # wheel tag: (zip suffix, machine)
DEFAULT_EXTRAS = "snmp,web,windows"
MANIFEST = "SHA256SUMS"
NETWORK_ERRORS = ("NewConnectionError", "Failed to establish a new connection", "Name or service not known",
                  "Temporary failure in name resolution", "Network is unreachable", "ConnectTimeoutError",
                  "Max retries exceeded", "Could not fetch URL", "ProxyError")


class BundleError(Exception):
    """A reason to stop, said so the builder can act on it."""


class IndexUnreachable(BundleError):
    """pip could not reach a package index at all."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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

def run_pip(args: List[str], what: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode == 0:
        return output
    if any(sign in output for sign in NETWORK_ERRORS) and "Saved " not in output:
        raise IndexUnreachable(f"{what}: pip could not reach a package index:\n{tail(output)}")
    raise BundleError(f"{what} failed:\n{tail(output)}")


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def wheel_metadata(path: Path):
    with zipfile.ZipFile(path) as zf:
        name = next((n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)), None)
        if name is None:
            raise BundleError(f"{path.name} has no .dist-info/METADATA")
        return email.parser.Parser().parsestr(zf.read(name).decode("utf-8"))


def windows_environment(full_version: str, arch: str) -> Dict[str, str]:
    """PEP 508 marker values of the embeddable CPython on Windows."""
    return {"os_name": "nt", "sys_platform": "win32", "platform_system": "Windows",
            "platform_machine": ARCHES[arch][1], "platform_release": "10", "platform_version": "",
            "python_version": ".".join(full_version.split(".")[:2]), "python_full_version": full_version,
            "implementation_name": "cpython", "implementation_version": full_version,
            "platform_python_implementation": "CPython"}


def requirements_for(metadata, extras: Iterable[str], env: Dict[str, str]) -> List[Requirement]:
    """The Requires-Dist entries that apply on Windows with these extras."""
    wanted = []
    for line in metadata.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is None:
            wanted.append(req)
            continue
        for extra in ("", *extras):
            if req.marker.evaluate({**env, "extra": extra}):
                wanted.append(req)
                break
    return wanted


def unmet(wheelhouse: Path, root: Requirement, env: Dict[str, str]) -> Tuple[List[str], Dict[str, Path]]:
    """Walk the wheelhouse from ``root`` under Windows markers; requirements it cannot meet."""
    wheels: Dict[str, Tuple[str, Path]] = {}
    for path in wheelhouse.glob("*.whl"):
        name, version, _build, _tags = parse_wheel_filename(path.name)
        wheels[canonicalize_name(name)] = (str(version), path)
    missing: List[str] = []
    seen: Set[Tuple[str, Tuple[str, ...]]] = set()
    todo = [root]
    used: Dict[str, Path] = {}
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), tuple(sorted(req.extras)))
        if key in seen:
            continue
        seen.add(key)
        found = wheels.get(key[0])
        if found is None or not req.specifier.contains(found[0], prereleases=True):
            missing.append(str(Requirement(f"{req.name}{'[' + ','.join(sorted(req.extras)) + ']' if req.extras else ''}"
                                           f"{req.specifier}")))
            continue
        used[key[0]] = found[1]
        todo.extend(requirements_for(wheel_metadata(found[1]), req.extras, env))
    return missing, used


def download_args(requirements: List[str], wheelhouse: Path, arch: str, python_version: str) -> List[str]:
    return ["download", "--only-binary=:all:", "--platform", arch, "--python-version", python_version,
            "--implementation", "cp", "--disable-pip-version-check", "-d", str(wheelhouse), *requirements]


def download(requirements: List[str], wheelhouse: Path, arch: str, python_version: str) -> None:
    try:
        run_pip(download_args(requirements, wheelhouse, arch, python_version), f"pip download for {arch}")
    except IndexUnreachable:
        raise
    except BundleError as exc:
        text = str(exc)
        lacking = re.findall(r"(?:No matching distribution found for|Could not find a version that "
                             r"satisfies the requirement) ([^\s(]+)", text)
        if lacking:
            raise BundleError(f"no {arch} wheel for CPython {python_version} of: {', '.join(sorted(set(lacking)))} "
                              f"(every dependency must be a wheel; an sdist cannot be built on the office PC)"
                              f"\n{text}") from None
        raise


def check_wheel_tags(wheelhouse: Path, arch: str) -> None:
    bad = []
    for path in sorted(wheelhouse.iterdir()):
        if not path.name.endswith(".whl"):
            bad.append(f"{path.name} (not a wheel)")
            continue
        platforms = {t.platform for t in parse_wheel_filename(path.name)[3]}
        if not platforms & {arch, "any"}:
            bad.append(f"{path.name} (platform {', '.join(sorted(platforms))})")
    if bad:
        raise BundleError(f"the wheelhouse holds files the {arch} PC cannot install: {'; '.join(bad)}")


def build_wheelhouse(wheelhouse: Path, arch: str, python_version: str, full_version: str,
                     extras: List[str]) -> Tuple[Path, Path, Dict[str, Path]]:
    """Project wheel + Windows wheels of its dependencies + pip. Returns (project wheel, pip wheel, used)."""
    wheelhouse.mkdir(parents=True)
    # pip itself first: every index has it, so failing to get it means no index is reachable (pip
    # says only "from versions: none" when it retries nothing, e.g. with PIP_RETRIES=0).
    try:
        run_pip(download_args(["pip"], wheelhouse, arch, python_version), "pip download of pip")
    except IndexUnreachable:
        raise
    except BundleError as exc:
        raise IndexUnreachable(f"no package index is reachable: pip download cannot get even pip\n{exc}") from None
    # From a clean copy: setuptools reuses an existing build/ folder, which can still hold modules
    # deleted since, and building in place would leave build/ and *.egg-info in the checkout.
    source = wheelhouse.parent.parent / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "var", ".cache"))
    run_pip(["wheel", "--no-deps", "--disable-pip-version-check", "-w", str(wheelhouse), str(source)],
            "pip wheel of the project")
    project = next(wheelhouse.glob("commune_monitor-*.whl"))
    metadata = wheel_metadata(project)
    known = set(metadata.get_all("Provides-Extra") or [])
    unknown = [e for e in extras if e not in known]
    if unknown:
        raise BundleError(f"--extras: {', '.join(unknown)} not among the project's extras ({', '.join(sorted(known))})")
    env = windows_environment(full_version, arch)
    root = Requirement(f"{metadata['Name']}[{','.join(extras)}]=={metadata['Version']}")
    first = [str(r).split(";")[0].strip() for r in requirements_for(metadata, extras, env)]
    download(first, wheelhouse, arch, python_version)
    # pip resolved the dependencies' own dependencies under this machine's markers: fetch
    # whatever Windows needs besides, until nothing is missing.
    for _ in range(10):
        missing, used = unmet(wheelhouse, root, env)
        if not missing:
            break
        download(missing, wheelhouse, arch, python_version)
    else:
        raise BundleError(f"the wheelhouse still lacks {', '.join(missing)} after downloading it")
    check_wheel_tags(wheelhouse, arch)
    pip_wheel = next(wheelhouse.glob("pip-*.whl"))
    used[canonicalize_name("pip")] = pip_wheel
    for path in list(wheelhouse.iterdir()):  # what pip fetched for markers of this machine only
        if path not in used.values():
            path.unlink()
    return project, pip_wheel, used


# ------------------------------------------------------------------ the bundle's own files

def render(template: Path, values: Dict[str, str]) -> str:
    text = template.read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = sorted(set(re.findall(r"@[A-Z_]+@", text)))
    if left:
        raise BundleError(f"{template.name}: no value for {', '.join(left)}")
    return text


def write_crlf(path: Path, text: str) -> None:
    """cmd.exe needs CRLF: with bare LF, goto and call :label misread lines."""
    path.write_bytes(text.replace("\r\n", "\n").replace("\n", "\r\n").encode("ascii"))


def write_manifest(out: Path) -> str:
    lines = []
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != MANIFEST):
        lines.append(f"{sha256_file(path)}  {path.relative_to(out).as_posix()}")
    text = "\n".join(lines) + "\n"
    (out / MANIFEST).write_text(text, encoding="utf-8", newline="\n")
    return text


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
        shutil.copyfile(HERE / "install_steps.py", stage / "install_steps.py")
        payload = sorted(f"{sha256_file(p)} {p.relative_to(stage).as_posix()}" for p in stage.rglob("*") if p.is_file())
        version = wheel_metadata(project)["Version"]
        values = {
            "VERSION": version,
            "BUNDLE_ID": f"{version}+{hashlib.sha256(chr(10).join(payload).encode()).hexdigest()[:12]}",
            "PYTHON_ZIP": python_zip.name,
            "PYTHON_VERSION": python["full_version"],
            "PYTHON_SHA256": python_sha256.strip().lower(),
            "PTH": python["pth_name"],
            "PIP_WHEEL": pip_wheel.name,
            "PROJECT_WHEEL": project.name,
            "EXTRAS": ",".join(extras),
            "ARCH": arch,
            "WHEELS": "\n".join(f"- `{p.name}`" for p in sorted(used.values(), key=lambda p: p.name.lower())),
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
