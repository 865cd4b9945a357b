"""Wheelhouses for another machine, shared by the offline bundles (deploy/windows, deploy/linux).

A wheelhouse holds the project wheel, built from a clean copy of the checkout, and every
dependency as a wheel for a *target*: a platform and a CPython version that need not be this
machine's. pip evaluates environment markers for the machine it runs on (``pywin32;
sys_platform == 'win32'`` is skipped on Linux), so the requirements are read from the wheels'
own metadata and evaluated for the target, fetched with ``pip download --only-binary=:all:
--platform ... --python-version ... --implementation cp``, and the wheelhouse is walked from
``commune-monitor[extras]`` until nothing the target needs is missing. Runs on the build
machine only: nothing here is needed on the PC.
"""
from __future__ import annotations

import email.parser
import hashlib
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Set, Tuple

try:
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.tags import Tag, compatible_tags, cpython_tags
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version
except ImportError:  # pip always carries a copy; packaging itself may not be installed
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    from pip._vendor.packaging.specifiers import SpecifierSet  # type: ignore[no-redef]
    from pip._vendor.packaging.tags import Tag, compatible_tags, cpython_tags  # type: ignore[no-redef]
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename  # type: ignore[no-redef]
    from pip._vendor.packaging.version import Version  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parent.parent
MANIFEST = "SHA256SUMS"
NETWORK_ERRORS = ("NewConnectionError", "Failed to establish a new connection", "Name or service not known",
                  "Temporary failure in name resolution", "Network is unreachable", "ConnectTimeoutError",
                  "Max retries exceeded", "Could not fetch URL", "ProxyError")


class BundleError(Exception):
    """A reason to stop, said so the builder can act on it."""


class IndexUnreachable(BundleError):
    """pip could not reach a package index at all."""


@dataclass(frozen=True)
class Target:
    """One machine the wheelhouse is for: PEP 508 marker values and the wheel platforms it takes."""

    label: str                       # for messages: "win32", "manylinux x86_64"
    python_version: str              # "3.11"
    full_version: str                # "3.11.9": what the markers and Requires-Python see
    platforms: Tuple[str, ...]       # wheel platform tags accepted, best first
    env: Dict[str, str] = field(hash=False, compare=False, default_factory=dict)

    @property
    def tags(self) -> FrozenSet[Tag]:
        major, minor = (int(x) for x in self.python_version.split("."))
        abi = f"cp{major}{minor}"
        return frozenset([*cpython_tags((major, minor), [abi], self.platforms),
                          *compatible_tags((major, minor), abi, self.platforms)])

    def marker_env(self) -> Dict[str, str]:
        return {"python_version": self.python_version, "python_full_version": self.full_version,
                "implementation_name": "cpython", "implementation_version": self.full_version,
                "platform_python_implementation": "CPython", **self.env}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_pip(args: List[str], what: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode == 0:
        return output
    if any(sign in output for sign in NETWORK_ERRORS) and "Saved " not in output:
        raise IndexUnreachable(f"{what}: pip could not reach a package index:\n{tail(output)}")
    raise BundleError(f"{what} failed:\n{tail(output)}")


def wheel_metadata(path: Path):
    with zipfile.ZipFile(path) as zf:
        name = next((n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)), None)
        if name is None:
            raise BundleError(f"{path.name} has no .dist-info/METADATA")
        return email.parser.Parser().parsestr(zf.read(name).decode("utf-8"))


def requirements_for(metadata, extras: Iterable[str], env: Dict[str, str]) -> List[Requirement]:
    """The Requires-Dist entries that apply under these marker values with these extras."""
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


def _python_ok(path: Path, full_version: str) -> bool:
    spec = wheel_metadata(path).get("Requires-Python")
    return not spec or SpecifierSet(spec).contains(full_version, prereleases=True)


def unmet(wheelhouse: Path, root: Requirement, target: Target) -> Tuple[List[str], Dict[str, Path]]:
    """Walk the wheelhouse from ``root`` as pip on the target would: for each requirement the
    newest wheel the target can install (its tags, its Requires-Python). Returns what it cannot
    meet, and the wheel chosen for each project."""
    tags = target.tags
    wheels: Dict[str, List[Tuple[Version, Path]]] = {}
    for path in wheelhouse.glob("*.whl"):
        name, version, _build, wheel_tags = parse_wheel_filename(path.name)
        if wheel_tags & tags:
            wheels.setdefault(canonicalize_name(name), []).append((version, path))
    env = target.marker_env()
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
        chosen = used.get(key[0])
        if chosen is None:
            fits = sorted((c for c in wheels.get(key[0], [])
                           if req.specifier.contains(c[0], prereleases=True) and _python_ok(c[1], target.full_version)),
                          reverse=True)
            chosen = fits[0][1] if fits else None
        elif not req.specifier.contains(parse_wheel_filename(chosen.name)[1], prereleases=True):
            chosen = None
        if chosen is None:
            missing.append(str(Requirement(f"{req.name}{'[' + ','.join(sorted(req.extras)) + ']' if req.extras else ''}"
                                           f"{req.specifier}")))
            continue
        used[key[0]] = chosen
        todo.extend(requirements_for(wheel_metadata(chosen), req.extras, env))
    return missing, used


def download_args(requirements: Sequence[str], wheelhouse: Path, target: Target) -> List[str]:
    # The full version, not X.Y: pip reads "3.9" as 3.9.0, which cryptography's Requires-Python
    # (!=3.9.0) refuses, while the markers and the wheelhouse check see the distribution's 3.9.2.
    # With X.Y, an online build and an offline one from the same wheels resolved differently.
    platforms = [arg for p in target.platforms for arg in ("--platform", p)]
    return ["download", "--only-binary=:all:", *platforms, "--python-version", target.full_version,
            "--implementation", "cp", "--disable-pip-version-check", "-d", str(wheelhouse), *requirements]


def download(requirements: Sequence[str], wheelhouse: Path, target: Target) -> None:
    try:
        run_pip(download_args(requirements, wheelhouse, target), f"pip download for {target.label}")
    except IndexUnreachable:
        raise
    except BundleError as exc:
        text = str(exc)
        lacking = re.findall(r"(?:No matching distribution found for|Could not find a version that "
                             r"satisfies the requirement) ([^\s(]+)", text)
        if lacking:
            raise BundleError(f"no {target.label} wheel for CPython {target.python_version} of: "
                              f"{', '.join(sorted(set(lacking)))} (every dependency must be a wheel; an sdist "
                              f"cannot be built on the office PC)\n{text}") from None
        raise


def download_pip(wheelhouse: Path, target: Target) -> None:
    """pip itself first: every index has it, so failing to get it means no index is reachable (pip
    says only "from versions: none" when it retries nothing, e.g. with PIP_RETRIES=0)."""
    try:
        run_pip(download_args(["pip"], wheelhouse, target), "pip download of pip")
    except IndexUnreachable:
        raise
    except BundleError as exc:
        raise IndexUnreachable(f"no package index is reachable: pip download cannot get even pip\n{exc}") from None


def build_project_wheel(wheelhouse: Path, work: Path) -> Path:
    """``pip wheel --no-deps`` of a clean copy of the checkout, into the wheelhouse.

    From a copy: setuptools reuses an existing build/ folder, which can still hold modules deleted
    since, and building in place would leave build/ and *.egg-info in the checkout.
    """
    source = work / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "var", ".cache"))
    run_pip(["wheel", "--no-deps", "--disable-pip-version-check", "-w", str(wheelhouse), str(source)],
            "pip wheel of the project")
    return next(wheelhouse.glob("commune_monitor-*.whl"))


def project_root(project: Path, extras: Sequence[str]) -> Requirement:
    metadata = wheel_metadata(project)
    known = set(metadata.get_all("Provides-Extra") or [])
    unknown = [e for e in extras if e not in known]
    if unknown:
        raise BundleError(f"--extras: {', '.join(unknown)} not among the project's extras ({', '.join(sorted(known))})")
    return Requirement(f"{metadata['Name']}[{','.join(extras)}]=={metadata['Version']}")


def fill(wheelhouse: Path, project: Path, extras: Sequence[str], target: Target) -> Dict[str, Path]:
    """Fetch the project's dependencies for the target until the wheelhouse meets them all;
    returns the wheel used for each project (the project wheel included)."""
    metadata = wheel_metadata(project)
    root = project_root(project, extras)
    first = [str(r).split(";")[0].strip() for r in requirements_for(metadata, extras, target.marker_env())]
    download(first, wheelhouse, target)
    # pip resolved the dependencies' own dependencies under this machine's markers: fetch
    # whatever the target needs besides, until nothing is missing.
    for _ in range(10):
        missing, used = unmet(wheelhouse, root, target)
        if not missing:
            return used
        download(missing, wheelhouse, target)
    raise BundleError(f"the wheelhouse still lacks {', '.join(missing)} for {target.label} CPython "
                      f"{target.python_version} after downloading it")


def check_wheel_tags(wheelhouse: Path, platforms: Iterable[str], label: str) -> None:
    allowed = set(platforms) | {"any"}
    bad = []
    for path in sorted(wheelhouse.iterdir()):
        if not path.name.endswith(".whl"):
            bad.append(f"{path.name} (not a wheel)")
            continue
        wheel_platforms = {t.platform for t in parse_wheel_filename(path.name)[3]}
        if not wheel_platforms & allowed:
            bad.append(f"{path.name} (platform {', '.join(sorted(wheel_platforms))})")
    if bad:
        raise BundleError(f"the wheelhouse holds files the {label} PC cannot install: {'; '.join(bad)}")


def prune(wheelhouse: Path, keep: Iterable[Path]) -> None:
    """Delete what pip fetched for markers of this machine only."""
    kept = {Path(p).resolve() for p in keep}
    for path in list(wheelhouse.iterdir()):
        if path.resolve() not in kept:
            path.unlink()


def render(template: Path, values: Dict[str, str]) -> str:
    text = template.read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = sorted(set(re.findall(r"@[A-Z_]+@", text)))
    if left:
        raise BundleError(f"{template.name}: no value for {', '.join(left)}")
    return text


def payload_id(stage: Path, version: str) -> str:
    """VERSION+hash of every file staged so far: two bundles with the same id hold the same files."""
    payload = sorted(f"{sha256_file(p)} {p.relative_to(stage).as_posix()}" for p in stage.rglob("*") if p.is_file())
    return f"{version}+{hashlib.sha256(chr(10).join(payload).encode()).hexdigest()[:12]}"


def write_manifest(out: Path) -> str:
    lines = []
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != MANIFEST):
        lines.append(f"{sha256_file(path)}  {path.relative_to(out).as_posix()}")
    text = "\n".join(lines) + "\n"
    (out / MANIFEST).write_text(text, encoding="utf-8", newline="\n")
    return text


def wheel_list(paths: Iterable[Path]) -> str:
    return "\n".join(f"- `{p.name}`" for p in sorted(set(paths), key=lambda p: p.name.lower()))


def empty_out(out: Path) -> Optional[str]:
    if out.exists() and any(out.iterdir()):
        return f"--out {out} is not empty: choose a new folder or delete it (old wheels would mix in)"
    return None
