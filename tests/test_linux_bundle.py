"""The offline Linux bundle (deploy/linux/build_bundle.py), built here for real and installed for real.

End to end: install.sh runs as root inside a network namespace holding only loopback (no package
index: pip runs with --no-index from the bundle's wheelhouse) and a private mount namespace whose
/etc, /opt and /var/lib are copies or empty folders under the test's tmp (so it really creates the
system user, /opt/commune-monitor and /var/lib/commune-agent without touching this machine). It
enrolls with a real collector in that namespace, the agent is started by hand there (no systemd
here; the installed unit is checked with systemd-analyze verify) and its data is found in a real
Prometheus. Only this machine's Python can run install.sh end to end; the wheelhouse of every other
target Python is checked to resolve offline, and installed and imported with that Python where one
is found on this machine (pyenv or python3.X).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Optional

import pytest
import yaml

from tests.netns import Netns, namespaces
from tests.support import REPO, VENV_BIN, Proc, wait_until

pytestmark = pytest.mark.slow

BUILD = REPO / "deploy" / "linux" / "build_bundle.py"
SYSTEM_PYTHON = "/usr/bin/python3"
PROM_PORT, COLLECTOR_PORT = 19090, 19722  # inside the test's own namespace: nothing else listens there
COLLECTOR_URL = f"http://127.0.0.1:{COLLECTOR_PORT}"
COMMUNE = "09667"


def load_builder():
    spec = importlib.util.spec_from_file_location("linux_build_bundle", BUILD)
    module = importlib.util.module_from_spec(spec)
    sys.modules["linux_build_bundle"] = module
    spec.loader.exec_module(module)
    return module


builder = load_builder()


@contextlib.contextmanager
def prefetched():
    """Offline (tests/run.sh's network namespace), pip reads only the wheels that
    tests/prefetch_linux_wheels.py fetched before, named by COMMUNE_LINUX_WHEELS."""
    cache = os.environ.get("COMMUNE_LINUX_WHEELS")
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


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("linux-bundle") / "commune-monitor-linux"
    started = time.monotonic()
    try:
        with prefetched():
            values = builder.build(out, tar=True)
    except builder.IndexUnreachable as exc:
        pytest.skip(f"pip download cannot reach a package index from here (and no prefetched wheels in "
                    f"COMMUNE_LINUX_WHEELS): {exc}")
    values["seconds"] = time.monotonic() - started
    values["bytes"] = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"\nLinux bundle: {values['bytes'] / 1e6:.1f} MB in {values['seconds']:.1f} s")
    return out, values


def wheels(out: Path):
    return sorted(p.name for p in (out / "wheelhouse").iterdir())


# ------------------------------------------------------------------ the wheelhouse

def test_every_wheel_is_manylinux_x86_64_or_pure(bundle):
    out, values = bundle
    files = wheels(out)
    assert files and all(name.endswith(".whl") for name in files), files
    allowed = set(builder.PLATFORMS) | {"any"}
    for name in files:
        platforms = {tag.platform for tag in builder.parse_wheel_filename(name)[3]}
        assert platforms & allowed, f"{name}: {platforms}"
        assert not any(p.startswith(("win", "macosx", "musllinux")) for p in platforms - allowed), name
    names = {str(builder.parse_wheel_filename(name)[0]) for name in files}
    assert {"commune-monitor", "psutil", "prometheus-client", "pyyaml", "icmplib", "protobuf", "cramjam",
            "cryptography", "bcrypt", "pip"} <= names, names
    assert not {"pysnmp", "pyasn1"} & names, names  # SNMPv3 runs on our own USM since issue 19
    assert "pywin32" not in names
    assert values["PROJECT_WHEEL"] in files and values["PIP_WHEEL"] in files
    # the compiled ones are there for every target CPython (abi3 wheels serve several)
    for v in values["PYTHON_VERSIONS"].split():
        tag = "cp" + v.replace(".", "")
        assert any(n.startswith("pyyaml-") and f"-{tag}-" in n for n in files), (v, files)


@pytest.mark.parametrize("python_version", list(builder.DISTRIBUTIONS))
def test_the_wheelhouse_alone_resolves_the_agent_for_each_target_python(bundle, tmp_path, python_version):
    """pip, offline, for CPython X.Y on manylinux x86_64: what Debian 11/12, Ubuntu 22.04/24.04 run."""
    out, values = bundle
    report = tmp_path / "report.json"
    platforms = [arg for p in builder.PLATFORMS for arg in ("--platform", p)]
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--isolated", "--no-index",
                           "--find-links", str(out / "wheelhouse"), "--only-binary=:all:", *platforms,
                           "--python-version", python_version, "--implementation", "cp",
                           "--target", str(tmp_path / "target"), "--report", str(report),
                           f"{out / 'wheelhouse' / values['PROJECT_WHEEL']}[{values['EXTRAS']}]"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    resolved = {item["download_info"]["url"].rsplit("/", 1)[-1] for item in json.loads(report.read_text())["install"]}
    assert resolved <= set(wheels(out))
    assert {n.split("-")[0] for n in resolved} >= {"commune_monitor", "psutil", "cryptography", "bcrypt"}


def test_each_wheel_serves_some_target_python(bundle, tmp_path):
    """Nothing in the wheelhouse is dead weight: the union of the four resolutions is every wheel."""
    out, values = bundle
    union = set()
    for python_version in builder.DISTRIBUTIONS:
        _missing, used = builder.unmet_for(out / "wheelhouse", values["PROJECT_WHEEL"], values["EXTRAS"], python_version)
        assert not _missing, (python_version, _missing)
        union |= {p.name for p in used.values()}
    assert union == set(wheels(out)) - {values["PIP_WHEEL"]}


def find_python(version: str) -> Optional[str]:
    """A CPython X.Y on this machine: python3.X on PATH or a pyenv build."""
    found = shutil.which(f"python{version}")
    roots = [Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"]
    for root in roots:
        for candidate in sorted(root.glob(f"{version}.*/bin/python{version}"), reverse=True):
            found = found or str(candidate)
    if found and "/shims/" in found:  # a pyenv shim runs whatever pyenv selects
        found = next((str(c) for r in roots for c in sorted(r.glob(f"{version}.*/bin/python{version}"))), None)
    return found


AGENT_MODULES = ("agent.cli", "agent.runner", "agent.push", "agent.shipper", "agent.queue", "agent.enroll",
                 "agent.inputs.host", "agent.inputs.icmp", "agent.inputs.snmp", "agent.web")


@pytest.mark.parametrize("python_version", [v for v in builder.DISTRIBUTIONS if v != "3.11"])
def test_installs_and_imports_with_other_target_pythons(bundle, tmp_path, python_version):
    """install.sh's venv and pip steps with a real CPython X.Y of this machine, offline: every
    module of the agent compiles and imports, and the example config checks."""
    python = find_python(python_version)
    if not python:
        pytest.skip(f"no CPython {python_version} on this machine (python{python_version} or pyenv): only the "
                    f"offline resolution above covers it")
    out, values = bundle
    wh = out / "wheelhouse"
    venv = tmp_path / "venv"
    pip_opts = ["--isolated", "--no-index", "--find-links", str(wh), "-q", "--disable-pip-version-check"]
    for cmd in ([python, "-I", "-m", "venv", "--without-pip", str(venv)],
                [str(venv / "bin/python"), "-I", str(wh / values["PIP_WHEEL"] / "pip"), "install", *pip_opts,
                 str(wh / values["PIP_WHEEL"])],
                [str(venv / "bin/python"), "-I", "-m", "pip", "install", *pip_opts,
                 f"{wh / values['PROJECT_WHEEL']}[{values['EXTRAS']}]"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{cmd}:\n{proc.stdout}{proc.stderr}"
    site = subprocess.run([str(venv / "bin/python"), "-c", "import agent, os; print(os.path.dirname(agent.__file__))"],
                          capture_output=True, text=True, timeout=60).stdout.strip()
    compiled = subprocess.run([str(venv / "bin/python"), "-m", "compileall", "-q", site], capture_output=True,
                              text=True, timeout=120)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    imported = subprocess.run([str(venv / "bin/python"), "-c", "import importlib, sys; [importlib.import_module(m) "
                               "for m in sys.argv[1:]]; import cryptography.hazmat.primitives.ciphers, bcrypt",
                               *AGENT_MODULES], capture_output=True, text=True, timeout=120)
    assert imported.returncode == 0, imported.stderr
    check = subprocess.run([str(venv / "bin/commune-agent"), "--config.check", "-c",
                            str(out / "share" / "agent.example.yaml")], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


# ------------------------------------------------------------------ a PC in namespaces

class Sandbox:
    """A PC: the test's network namespace (loopback only) and a private mount namespace in which
    /etc is a copy of this machine's, /opt and /var/lib empty folders, all under ``root``."""

    def __init__(self, ns: Netns, root: Path):
        self.ns = ns
        self.root = root
        root.mkdir(parents=True)
        subprocess.run(["cp", "-a", "/etc", str(root / "etc")], check=True)
        for leftover in ("commune-monitor", "systemd/system/commune-agent.service", "sysctl.d/60-commune-agent-ping.conf"):
            path = root / "etc" / leftover
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        (root / "opt").mkdir()
        (root / "var-lib").mkdir()

    def path(self, inside: str) -> Path:
        """Where a path of the PC is on this machine."""
        for prefix, here in (("/var/lib/", "var-lib/"), ("/etc/", "etc/"), ("/opt/", "opt/")):
            if inside.startswith(prefix):
                return self.root / (here + inside[len(prefix):])
        raise ValueError(inside)

    def command(self, *args: str, user: Optional[str] = None) -> list:
        binds = " && ".join(f"mount --bind {shlex.quote(str(self.root / here))} {there}"
                            for here, there in (("etc", "/etc"), ("opt", "/opt"), ("var-lib", "/var/lib")))
        run = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"] if user else []
        return self.ns.command("unshare", "--mount", "--propagation", "private", "sh", "-c",
                               f'{binds} && exec "$@"', "sandbox", *run, *[str(a) for a in args])

    def run(self, *args: str, input: Optional[str] = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), input=input, capture_output=True, text=True, timeout=timeout)

    def install(self, bundle: Path, *args: str, key: Optional[str] = None) -> subprocess.CompletedProcess:
        opts = ["--python", SYSTEM_PYTHON, "--no-systemd", *args]
        if key is not None:
            opts += ["--key-file", "-"]
        return self.run(str(bundle / "install.sh"), *opts, input=(key + "\n") if key is not None else "")

    def passwd(self, name: str):
        for line in (self.root / "etc" / "passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                return fields
        return None


def ns_get(ns: Netns, url: str) -> Optional[str]:
    proc = ns.run(sys.executable, "-c", "import sys, urllib.request; "
                  "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())", url,
                  check=False, timeout=30)
    return proc.stdout if proc.returncode == 0 else None


def ns_query(ns: Netns, query: str) -> list:
    text = ns_get(ns, f"http://127.0.0.1:{PROM_PORT}/api/v1/query?" + urllib.parse.urlencode({"query": query}))
    return json.loads(text)["data"]["result"] if text else []


@pytest.fixture(scope="module")
def central(tmp_path_factory):
    """Prometheus and the collector, inside a namespace of their own with loopback only."""
    from collector.state import Store

    if not shutil.which("prometheus"):
        pytest.fail("prometheus is not installed; tests/run.sh installs it (apt prometheus)")
    tmp = tmp_path_factory.mktemp("central")
    (tmp / "prom-data").mkdir()
    (tmp / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s"}, "storage": {"tsdb": {"out_of_order_time_window": "7d"}}}))
    state = tmp / "collector-state"
    store = Store(str(state))
    (tmp / "collector.yaml").write_text(yaml.safe_dump({
        "log_level": "info", "web": {"listen_address": f"127.0.0.1:{COLLECTOR_PORT}"},
        "upstreams": [{"url": f"http://127.0.0.1:{PROM_PORT}/api/v1/write", "timeout": "5s"}],
        "upstream_check_interval": "500ms", "state": {"dir": str(state)}}))
    collector = str(VENV_BIN / "commune-collector") if (VENV_BIN / "commune-collector").exists() else None
    with namespaces(1) as (ns,):
        procs = []
        try:
            procs.append(ns.start([shutil.which("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={tmp / 'prom-data'}", f"--web.listen-address=127.0.0.1:{PROM_PORT}",
                                   "--web.enable-remote-write-receiver", "--log.level=warn"], tmp / "prometheus.log"))
            procs.append(ns.start([*(collector and [collector] or [sys.executable, "-m", "collector"]), "serve",
                                   "-c", str(tmp / "collector.yaml")], tmp / "collector.log"))
            wait_until(lambda: ns_get(ns, f"http://127.0.0.1:{PROM_PORT}/-/ready") is not None, 30, what="Prometheus")
            wait_until(lambda: ns_get(ns, f"{COLLECTOR_URL}/-/ready") is not None, 30, what="the collector")
            yield ns, store, procs[1]
        finally:
            for proc in procs:
                proc.stop()


def test_install_enroll_push_then_run_again(bundle, central, tmp_path):
    out, values = bundle
    ns, store, collector = central
    _rec, key = store.add_enroll_key(COMMUNE, 3600)
    pc = Sandbox(ns, tmp_path / "pc")
    started = time.monotonic()
    first = pc.install(out, "--collector", COLLECTOR_URL, key=key)
    install_seconds = time.monotonic() - started
    printed = first.stdout + first.stderr
    assert first.returncode == 0, printed
    print(f"\ninstall.sh from the bundle, offline: {install_seconds:.1f} s")
    assert key not in printed
    assert "created the system user commune-agent" in printed and "enrolled as agent" in printed

    user = pc.passwd("commune-agent")
    assert user and user[5] == "/var/lib/commune-agent" and user[6] == "/usr/sbin/nologin"
    uid, gid = int(user[2]), int(user[3])
    assert uid < 1000  # a system user
    config, token_file = pc.path("/etc/commune-monitor/agent.yaml"), pc.path("/var/lib/commune-agent/push.token")
    assert stat.S_IMODE(config.stat().st_mode) == 0o640 and (config.stat().st_uid, config.stat().st_gid) == (0, gid)
    etc_dir = pc.path("/etc/commune-monitor/agent.yaml").parent
    assert stat.S_IMODE(etc_dir.stat().st_mode) == 0o750
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and token_file.stat().st_uid == uid
    state_dir = token_file.parent
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o750 and state_dir.stat().st_uid == uid
    token = token_file.read_text().strip()
    assert store.authenticate(token) is not None and token not in printed
    loaded = yaml.safe_load(config.read_text())
    assert loaded["push"] == {"enabled": True, "url": f"{COLLECTOR_URL}/api/v1/write"}
    assert loaded["agent"]["state_dir"] == "/var/lib/commune-agent"
    assert (pc.path("/opt/commune-monitor/bin/commune-agent")).exists()
    assert pc.path("/opt/commune-monitor/bundle-id").read_text().strip() == values["BUNDLE_ID"]
    assert pc.path("/opt/commune-monitor/share/docs/deploy.md").exists()  # the unit's Documentation=
    unit = pc.path("/etc/systemd/system/commune-agent.service")
    assert unit.read_text() == (REPO / "deploy" / "systemd" / "commune-agent.service").read_text()
    assert f"net.ipv4.ping_group_range = {gid} {gid}" in pc.path("/etc/sysctl.d/60-commune-agent-ping.conf").read_text()
    assert ns.run("sysctl", "-n", "net.ipv4.ping_group_range").stdout.split() == [str(gid), str(gid)]
    for path in [*pc.path("/etc/commune-monitor/x").parent.rglob("*"), *state_dir.rglob("*")]:
        if path.is_file():
            assert key not in path.read_text(errors="replace"), path
    assert key not in collector.log()

    # the unit as installed, against the files it names on this PC (no systemd runs here to start it)
    analyze = shutil.which("systemd-analyze")
    if analyze:
        verify = pc.run(analyze, "verify", "/etc/systemd/system/commune-agent.service")
        problems = [line for line in (verify.stdout + verify.stderr).splitlines()
                    if "commune-agent.service" in line and "Failed to" not in line]
        assert not problems, verify.stdout + verify.stderr

    # start the agent by hand as the unit would (its user, its config), faster for the test
    loaded["agent"]["interval"] = "1s"
    loaded["host"] = {"interval": "1s", "timeout": "1s"}
    loaded["push"].update(interval="1s", batch_delay="0s", min_backoff="200ms", max_backoff="1s")
    for quiet in ("smart", "snmp", "probes", "process"):
        loaded[quiet] = {"enabled": False}
    config.write_text(yaml.safe_dump(loaded))
    edited = config.read_text()
    agent = Proc(pc.command("/opt/commune-monitor/bin/commune-agent", "-c", "/etc/commune-monitor/agent.yaml",
                            user="commune-agent"), tmp_path / "agent.log")
    def arrived():
        assert agent.alive(), f"the agent exited:\n{agent.log()[-2000:]}"
        return ns_query(ns, f'commune_agent_input_success{{commune="{COMMUNE}",input="host"}}')

    try:
        found = wait_until(arrived, 60, what="the installed agent's samples in Prometheus, through the collector")
        assert found[0]["value"][1] == "1"
        assert ns_query(ns, f'node_memory_MemAvailable_bytes{{commune="{COMMUNE}"}}')
        assert pc.path("/var/lib/commune-agent/queue.db").exists()
    finally:
        agent.stop()
    assert key not in agent.log() and token not in agent.log()

    # again, without a key: nothing to do, the token, config and queue are kept
    again = pc.install(out)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "installed already" in again.stdout and "already enrolled" in again.stdout
    assert token_file.read_text().strip() == token and config.read_text() == edited
    assert pc.path("/var/lib/commune-agent/queue.db").exists()
    # an upgrade in place (another bundle id installed): pip runs again into the same venv
    pc.path("/opt/commune-monitor/bundle-id").write_text("0.0.9+older\n")
    upgrade = pc.install(out, "--collector", COLLECTOR_URL)
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert f"installed {values['PROJECT_WHEEL']}" in upgrade.stdout and "already enrolled" in upgrade.stdout
    assert pc.path("/opt/commune-monitor/bundle-id").read_text().strip() == values["BUNDLE_ID"]
    assert token_file.read_text().strip() == token and config.read_text() == edited
    assert token_file.stat().st_uid == uid and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert store.authenticate(token) is not None


def test_a_refused_key_stops_before_the_service_and_is_never_shown(bundle, central, tmp_path):
    out, _ = bundle
    ns, store, collector = central
    wrong = "cme_wrong-never-shown-0123456789abcdef"
    pc = Sandbox(ns, tmp_path / "pc")
    proc = pc.install(out, "--collector", COLLECTOR_URL, key=wrong)
    assert proc.returncode == 14, proc.stdout + proc.stderr
    assert "refused the enrollment: HTTP 403" in proc.stderr and "wrong, used up, expired or revoked" in proc.stderr
    assert wrong not in proc.stdout + proc.stderr and wrong not in collector.log()
    assert not pc.path("/var/lib/commune-agent/push.token").exists()
    assert "not enabled" not in proc.stdout  # it stopped before the service step
    # with a good key, running it again finishes the job without reinstalling (another commune:
    # this PC has the same host name as the one of the test above, which holds that name in 09667)
    _rec, key = store.add_enroll_key("09668", 3600)
    ok = pc.install(out, key=key)
    assert ok.returncode == 0 and "installed already" in ok.stdout, ok.stdout + ok.stderr
    assert pc.path("/var/lib/commune-agent/push.token").exists()


def test_an_unreachable_collector_is_named_before_anything_is_installed(bundle, central, tmp_path):
    out, _ = bundle
    ns, _store, _ = central
    pc = Sandbox(ns, tmp_path / "pc")
    proc = pc.install(out, "--collector", "http://127.0.0.1:1", key="cme_whatever")
    assert proc.returncode == 14, proc.stdout + proc.stderr
    assert "collector unreachable: cannot connect to 127.0.0.1:1" in proc.stderr and "nothing was installed" in proc.stderr
    assert pc.passwd("commune-agent") is None and not any(pc.path("/opt/x").parent.iterdir())


@pytest.mark.parametrize("version,message", [
    ("3.8", "is Python 3.8: the agent needs Python >=3.9"),
    ("3.13", "this bundle holds wheels for Python 3.9 3.10 3.11 3.12 only"),
])
def test_a_python_the_bundle_cannot_serve_is_refused(bundle, central, tmp_path, version, message):
    python = find_python(version)
    if not python:
        pytest.skip(f"no CPython {version} on this machine to try")
    out, _ = bundle
    ns, _store, _ = central
    pc = Sandbox(ns, tmp_path / "pc")
    proc = pc.run(str(out / "install.sh"), "--python", python, "--no-systemd", "--collector", COLLECTOR_URL,
                  "--key-file", "-", input="cme_x\n")
    assert proc.returncode == 10 and message in proc.stderr, proc.stdout + proc.stderr
    assert pc.passwd("commune-agent") is None


def test_no_systemd_damaged_bundle_and_key_on_the_command_line(bundle, central, tmp_path):
    out, values = bundle
    ns, _store, _ = central
    pc = Sandbox(ns, tmp_path / "pc")
    if not Path("/run/systemd/system").exists():  # as on these machines and in containers
        proc = pc.run(str(out / "install.sh"), "--python", SYSTEM_PYTHON, "--collector", COLLECTOR_URL,
                      "--key-file", "-", input="cme_x\n")
        assert proc.returncode == 15 and "does not run systemd" in proc.stderr and "--no-systemd" in proc.stderr
    argv = subprocess.run([str(out / "install.sh"), "--key", "cme_secret_on_argv"], capture_output=True, text=True)
    assert argv.returncode == 2 and "--key-file" in argv.stderr and "cme_secret_on_argv" not in argv.stderr
    stray = subprocess.run([str(out / "install.sh"), "--collector", COLLECTOR_URL, "cme_stray_value"],
                           capture_output=True, text=True)
    assert stray.returncode == 2 and "cme_stray_value" not in stray.stderr
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    wheel = copy / "wheelhouse" / values["PROJECT_WHEEL"]
    wheel.write_bytes(wheel.read_bytes()[:-10])
    damaged = pc.install(copy, "--collector", COLLECTOR_URL, key="cme_x")
    assert damaged.returncode == 11, damaged.stdout + damaged.stderr
    assert f"wheelhouse/{values['PROJECT_WHEEL']} is damaged" in damaged.stderr
    assert pc.passwd("commune-agent") is None


def test_install_sh_never_puts_the_key_on_a_command_line(bundle):
    out, _ = bundle
    text = (out / "install.sh").read_text()
    assert not re.search(r"@[A-Z_]+@", text) and "set -x" not in text
    uses = [line.strip() for line in text.splitlines()
            if re.search(r"\$\{?KEY\b|\bKEY=|COMMUNE_ENROLL_KEY", line) and not line.lstrip().startswith("#")]
    # read into a variable, trimmed, taken from the environment, handed on as an environment
    # assignment of one command, forgotten; never an argument, never printed
    for line in uses:
        assert not re.search(r"(printf|echo|say|die)\b[^;]*\$\{?KEY\b", line), line
        assert re.search(r"read -r( -s)? KEY|KEY=\$\{KEY//|KEY=\$COMMUNE_ENROLL_KEY|\bKEY=\"\"|unset COMMUNE_ENROLL_KEY"
                         r"|COMMUNE_ENROLL_KEY=\"\$KEY\" \"\$VENV/bin/python\"|-z \"\$KEY\"|-n \"\$KEY\"|-n \"\$\{COMMUNE_ENROLL_KEY:-\}\"",
                         line), line
    assert sum("COMMUNE_ENROLL_KEY=\"$KEY\"" in line for line in uses) == 1
