"""The offline Windows bundle (deploy/windows/build_bundle.py): built here for real from PyPI.

What Linux can check: every dependency is a Windows wheel and the wheelhouse alone resolves the
agent; install.cmd names exactly the files the bundle holds; the embeddable zip is refused on a
wrong hash; install_steps.py (bundle check, agent.yaml, enrollment) works and never prints the
key. Running install.cmd and starting the service needs a Windows machine (docs/deploy.md).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support import REPO
from tests.test_collector_ingest import dead_upstream, start_collector

__all__ = ["dead_upstream"]  # the fixture, shared

BUILD = REPO / "deploy" / "windows" / "build_bundle.py"
KEY_SWITCH_VALUE = "cme_never-shown-0123456789abcdef"
PTH_TEXT = "python311.zip\r\n.\r\n\r\n# Uncomment to run site.main() automatically\r\n#import site\r\n"


def load_builder():
    spec = importlib.util.spec_from_file_location("build_bundle", BUILD)
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_bundle"] = module
    spec.loader.exec_module(module)
    return module


builder = load_builder()


def fake_embed_zip(directory: Path, name: str = "python-3.11.9-embed-amd64.zip", pth: str = PTH_TEXT,
                   filler: bytes = b"") -> Path:
    """A small zip laid out like CPython's embeddable package (not a working Python)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("python.exe", b"MZ test stand-in" + filler)
        zf.writestr("python311.dll", b"MZ test stand-in")
        zf.writestr("python311.zip", b"")
        zf.writestr("python311._pth", pth)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def prefetched():
    """Offline (tests/run.sh's network namespace), pip reads only the wheels that
    tests/prefetch_windows_wheels.py fetched before, named by COMMUNE_WINDOWS_WHEELS."""
    cache = os.environ.get("COMMUNE_WINDOWS_WHEELS")
    saved = {k: os.environ.get(k) for k in ("PIP_NO_INDEX", "PIP_FIND_LINKS")}
    if cache and Path(cache).is_dir():
        os.environ.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=cache)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build_or_skip(zip_path: Path, out: Path, arch: str = "win_amd64"):
    """Build for real, from PyPI or the prefetched wheels."""
    try:
        with prefetched():
            return builder.build(zip_path, sha256(zip_path), out, "3.11", arch)
    except builder.IndexUnreachable as exc:
        pytest.skip(f"pip download cannot reach a package index from here (and no prefetched wheels in "
                    f"COMMUNE_WINDOWS_WHEELS): {exc}")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundle")
    values = build_or_skip(fake_embed_zip(tmp / "download"), tmp / "out")
    return tmp / "out", values


def cmd_sets(text: str) -> dict:
    return dict(re.findall(r'^set "([A-Z_]+)=([^"]*)"\r?$', text, re.M))


def test_every_dependency_is_a_windows_wheel(bundle, tmp_path):
    out, values = bundle
    files = sorted(p.name for p in (out / "wheelhouse").iterdir())
    assert files and all(name.endswith(".whl") for name in files), files
    for name in files:
        platforms = {tag.platform for tag in builder.parse_wheel_filename(name)[3]}
        assert platforms <= {"win_amd64", "any"}, f"{name}: {platforms}"
        assert not any("manylinux" in p or "linux" in p or "macosx" in p for p in platforms), name
    names = {str(builder.parse_wheel_filename(name)[0]) for name in files}
    # the project's runtime dependencies, its snmp/web/windows extras (pywin32 although this is Linux), pip
    assert {"commune-monitor", "psutil", "prometheus-client", "pyyaml", "icmplib", "protobuf", "cramjam",
            "pywin32", "cryptography", "bcrypt", "pip"} <= names, names
    assert not {"pysnmp", "pyasn1"} & names, names  # SNMPv3 runs on our own USM since issue 19
    assert values["PROJECT_WHEEL"] in files and values["PIP_WHEEL"] in files
    # pip itself, from the wheelhouse only, resolves the same set for a Windows CPython 3.11
    # (it evaluates markers for this machine, so the Windows-only pywin32 is named explicitly)
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--isolated",
                           "--no-index", "--find-links", str(out / "wheelhouse"), "--only-binary=:all:",
                           "--platform", "win_amd64", "--python-version", "3.11", "--implementation", "cp",
                           "--target", str(tmp_path / "target"), "--report", str(report),
                           f"{out / 'wheelhouse' / values['PROJECT_WHEEL']}[{values['EXTRAS']}]", "pywin32"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    resolved = {item["download_info"]["url"].rsplit("/", 1)[-1] for item in json.loads(report.read_text())["install"]}
    assert resolved == set(files) - {values["PIP_WHEEL"]}


def test_install_cmd_names_exactly_the_files_the_bundle_holds(bundle):
    out, values = bundle
    raw = (out / "install.cmd").read_bytes()
    assert raw.count(b"\r\n") == raw.count(b"\n"), "cmd.exe needs CRLF line endings"
    text = raw.decode("ascii")
    assert not re.search(r"@[A-Z_]+@", text)
    sets = cmd_sets(text)
    assert sets["PYTHON_ZIP"] == "python-3.11.9-embed-amd64.zip"
    assert sets["PTH"] == "python311._pth"
    wheels = sorted(p.name for p in (out / "wheelhouse").iterdir())
    assert sets["PIP_WHEEL"] in wheels and sets["PIP_WHEEL"].startswith("pip-")
    assert sets["PROJECT_WHEEL"] in wheels and sets["PROJECT_WHEEL"].startswith("commune_monitor-")
    assert [p.name for p in out.glob("*.zip")] == [sets["PYTHON_ZIP"]]
    assert [p.name for p in out.glob("*._pth")] == [sets["PTH"]]
    # every file install.cmd takes from the bundle is there
    for ref in re.findall(r'"%BUNDLE%([^"]*)"', text):
        for name, value in sets.items():
            ref = ref.replace(f"%{name}%", value)
        ref = re.sub(r"\[[a-z,]+\]$", "", ref).replace("/pip", "").rstrip(".")
        assert (out / ref.replace("\\", "/")).exists(), ref
    assert '-m pip install --isolated --no-index --find-links "%BUNDLE%wheelhouse"' in text
    assert '"%BUNDLE%wheelhouse\\%PROJECT_WHEEL%[%EXTRAS%]"' in text and sets["EXTRAS"] == "snmp,web,windows"
    assert "service install --account %ACCOUNT%" in text and "-m agent service start" in text
    assert "%DATA%\\agent.yaml" in text and "%ProgramFiles%\\commune-monitor" in text
    # the ._pth enables site-packages; the manifest covers every file and the bundle checks whole
    assert (out / "python311._pth").read_bytes().splitlines()[-1] == b"import site"
    listed = {line.split("  ", 1)[1] for line in (out / "SHA256SUMS").read_text().splitlines()}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    assert listed == on_disk
    readme = (out / "README.md").read_text()
    assert all(f"`{w}`" in readme for w in wheels) and "install.cmd /collector" in readme
    steps = [sys.executable, str(out / "install_steps.py"), "verify", str(out)]
    assert subprocess.run(steps, capture_output=True, text=True, timeout=60).returncode == 0


def test_a_damaged_bundle_is_refused_before_installing(bundle, tmp_path):
    out, values = bundle
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    wheel = copy / "wheelhouse" / values["PROJECT_WHEEL"]
    wheel.write_bytes(wheel.read_bytes()[:-10])
    (copy / "README.md").unlink()
    proc = subprocess.run([sys.executable, str(copy / "install_steps.py"), "verify", str(copy)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"wheelhouse/{values['PROJECT_WHEEL']} is damaged" in proc.stderr
    assert "README.md is missing" in proc.stderr


def test_a_zip_with_another_hash_is_refused(tmp_path):
    good = fake_embed_zip(tmp_path / "good")
    other = fake_embed_zip(tmp_path / "other", filler=b"tampered")
    proc = subprocess.run([sys.executable, str(BUILD), "--python-zip", str(other), "--python-sha256", sha256(good),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"refusing {other}" in proc.stderr
    assert f"its SHA-256 is {sha256(other)}, expected {sha256(good)}" in proc.stderr
    assert not (tmp_path / "out").exists()
    # the right hash passes the check (what follows is the network build, tested above)
    assert builder.check_python_zip(good, sha256(good).upper(), "3.11", "win_amd64")["pth_name"] == "python311._pth"


@pytest.mark.parametrize("name,pth,arch,message", [
    ("python-3.12.4-embed-amd64.zip", PTH_TEXT, "win_amd64", "expected python-3.11.N-embed-amd64.zip"),
    ("python-3.11.9-embed-amd64.zip", PTH_TEXT, "win32", "expected python-3.11.N-embed-win32.zip"),
    ("python-3.11.9-embed-amd64.zip", "python311.zip\r\n.\r\n", "win_amd64", "no '#import site' line"),
])
def test_the_zip_must_be_the_embeddable_python_asked_for(tmp_path, name, pth, arch, message):
    path = fake_embed_zip(tmp_path, name=name, pth=pth)
    with pytest.raises(builder.BundleError, match=re.escape(message)):
        builder.check_python_zip(path, sha256(path), "3.11", arch)


def test_python_sha256_is_required_and_well_formed(tmp_path):
    path = fake_embed_zip(tmp_path)
    proc = subprocess.run([sys.executable, str(BUILD), "--python-zip", str(path), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--python-sha256" in proc.stderr
    with pytest.raises(builder.BundleError, match="64 hex digits"):
        builder.check_python_zip(path, "abc", "3.11", "win_amd64")


def test_win32_bundle_or_the_dependency_without_a_wheel(tmp_path):
    try:
        build_or_skip(fake_embed_zip(tmp_path / "dl", name="python-3.11.9-embed-win32.zip"), tmp_path / "out", "win32")
    except builder.BundleError as exc:
        # the one acceptable failure: a dependency without a win32 wheel, named
        assert re.search(r"no win32 wheel for CPython 3\.11 of: \S+", str(exc)), exc
        return
    for path in (tmp_path / "out" / "wheelhouse").iterdir():
        assert {t.platform for t in builder.parse_wheel_filename(path.name)[3]} <= {"win32", "any"}, path.name
    with prefetched(), pytest.raises(builder.BundleError, match=r"no win32 wheel for CPython 3\.11 of: pywin32==1\.0"):
        builder.download(["pywin32==1.0"], tmp_path / "none", "win32", "3.11")


def test_install_cmd_never_echoes_the_key(bundle):
    out, _ = bundle
    for script in ("install.cmd", "uninstall.cmd"):
        lines = (out / script).read_text().splitlines()
        assert lines[0] == "@echo off"
        assert not any(re.search(r"\becho\s+on\b", line, re.I) for line in lines)
    text = (out / "install.cmd").read_text()
    # the key is only ever assigned, never expanded: no %COMMUNE_ENROLL_KEY% / !...! anywhere
    assert "%COMMUNE_ENROLL_KEY%" not in text and "!COMMUNE_ENROLL_KEY!" not in text
    uses = [line for line in text.splitlines() if "COMMUNE_ENROLL_KEY" in line and not line.startswith("rem ")
            and not line.lstrip().startswith("echo ")]
    assert uses == ['if /i "%ARG%"=="/key" (set "COMMUNE_ENROLL_KEY=%~2" & goto shift2)'], uses
    # while parsing the parameters a switch's value (%~2) is only ever assigned; what is echoed for a
    # bad parameter is the switch alone
    parsing = text[text.index("\n:args\n"):text.index("\n:args_done\n")].splitlines()
    assert all(line.startswith("if /i") and "(set " in line for line in parsing if "%~2" in line)
    assert [line for line in parsing if "echo" in line and "%ARG%" in line] == [
        'if "%ARG:~0,1%"=="/" echo install.cmd: unknown switch %ARG%; see README.md 1>&2']
    assert "setlocal" in text  # the key does not outlive the script in the caller's environment


def run_steps(out: Path, *args, env=None, timeout=60):
    return subprocess.run([sys.executable, str(out / "install_steps.py"), *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_install_steps_write_the_config_once_and_enroll_without_printing_the_key(bundle, tmp_path, dead_upstream):
    from collector.state import Store

    out, values = bundle
    config = tmp_path / "ProgramData" / "commune-monitor" / "agent.yaml"
    state = tmp_path / "ProgramData" / "commune-monitor" / "agent"
    collector_state = tmp_path / "collector-state"
    _rec, key = Store(str(collector_state)).add_enroll_key("09667", 3600)
    proc, url, _ = start_collector(tmp_path, [dead_upstream], state_dir=collector_state,
                                   extra={"upstream_check_interval": "0s"})
    try:
        written = run_steps(out, "write-config", "--out", str(config), "--collector", url + "/",
                            "--account", "LocalService", "--state-dir", str(state), "--bundle-id", values["BUNDLE_ID"])
        assert written.returncode == 0, written.stderr
        check = subprocess.run([sys.executable, "-m", "agent", "--config.check", "-c", str(config)],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        from agent.config import load_config

        loaded = load_config(str(config))
        assert loaded.push.enabled and loaded.push.url == url + "/api/v1/write"
        assert loaded.agent.state_dir == str(state) and loaded.icmp.enabled is False
        # a file already there is kept as it is
        config.write_text(config.read_text() + "# edited by hand\n")
        again = run_steps(out, "write-config", "--out", str(config), "--collector", "https://other.example",
                          "--account", "LocalSystem", "--state-dir", str(state))
        assert again.returncode == 0 and "kept" in again.stdout and config.read_text().endswith("# edited by hand\n")

        env = {k: v for k, v in os.environ.items() if k != "COMMUNE_ENROLL_KEY"}
        no_key = run_steps(out, "enroll", "--config", str(config), env=env)
        assert no_key.returncode == 3 and "NOT ENROLLED" in no_key.stdout
        assert run_steps(out, "enrolled", str(config), env=env).returncode == 1

        wrong = run_steps(out, "enroll", "--config", str(config), "--collector", url,
                          env={**env, "COMMUNE_ENROLL_KEY": KEY_SWITCH_VALUE})
        assert wrong.returncode == 1 and "refused the enrollment" in wrong.stderr
        assert KEY_SWITCH_VALUE not in wrong.stdout + wrong.stderr

        # no --collector: the push.url of agent.yaml serves for enrollment too
        ok = run_steps(out, "enroll", "--config", str(config), env={**env, "COMMUNE_ENROLL_KEY": key})
        assert ok.returncode == 0, ok.stdout + ok.stderr
        token = (state / "push.token").read_text().strip()
        assert token and Store(str(collector_state)).authenticate(token) is not None
        twice = run_steps(out, "enroll", "--config", str(config), env={**env, "COMMUNE_ENROLL_KEY": key})
        assert twice.returncode == 0 and "already enrolled" in twice.stdout
        printed = "".join(p.stdout + p.stderr for p in (written, again, no_key, wrong, ok, twice))
        assert key not in printed and token not in printed
        assert key not in config.read_text() and key not in proc.log_path.read_text()
    finally:
        proc.stop()


def test_config_for_localsystem_keeps_icmp_and_bad_urls_are_refused(bundle, tmp_path):
    out, _ = bundle
    config = tmp_path / "agent.yaml"
    assert run_steps(out, "write-config", "--out", str(config), "--collector", "https://c.example:9722",
                     "--account", "LocalSystem", "--state-dir", str(tmp_path / "s")).returncode == 0
    assert "icmp" not in config.read_text()
    for collector, why in (("collector.example:9722", "must be http(s)://"), ("", "no collector URL was given")):
        bad = run_steps(out, "write-config", "--out", str(tmp_path / "x.yaml"), "--collector", collector,
                        "--account", "LocalService", "--state-dir", str(tmp_path / "s"))
        assert bad.returncode == 2 and why in bad.stderr and not (tmp_path / "x.yaml").exists()
