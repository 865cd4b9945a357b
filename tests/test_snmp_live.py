"""SNMP input over real UDP: snmpsim serving our recordings and the shared real ones on loopback.

Polls (v1/v2c: our BER codec, agent/inputs/snmp/ber.py) go to a real SNMP agent process; a silent
UDP port stands for a dead device.
Discovery sweeps several 127.0.0.x addresses, each answering as a different device.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

from agent.inputs.snmp import build
from agent.inputs.snmp.config import AuthConfig, Config
from agent.inputs.snmp.discover import DiscoveryInput, sweep
from agent.runner import Runner
from contract.schema import Secret, load_model
from lab.snmpsim import start_snmpsim
from tests.support import LOCAL_FIXTURES, free_udp_port, REPO, SHARED_FIXTURES, VENV_BIN, Proc, agent_command, wait_until
from tests.test_snmp_decode import by_name, check_against_expected, decode_recording

OWN = LOCAL_FIXTURES / "snmp"


# ---------------------------------------------------------------- fixtures

def _recordings() -> Dict[str, Path]:
    recs = {p.stem: p for p in sorted(OWN.glob("*.snmprec"))}
    shared = SHARED_FIXTURES / "snmp"
    if shared.exists():
        for p in sorted(shared.glob("*/*.snmprec")):
            recs[p.stem] = p
    return recs


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """snmpsim with every recording (community = file name) on 127.0.0.1:port."""
    tmp = tmp_path_factory.mktemp("snmpsim")
    proc, port = start_snmpsim(tmp, _recordings())
    try:
        yield port
    finally:
        proc.stop()


@pytest.fixture
def silent_port():
    """A loopback UDP port that is bound but never answers: a dead or very slow device."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def section(targets: List[dict], auths: Dict[str, dict], **options) -> Config:
    return load_model(Config, {"auths": auths, "targets": targets, **options}, path="snmp")


def v2c(*names: str) -> Dict[str, dict]:
    return {n: {"version": "2c", "community": n} for n in names}


def poll(cfg: Config) -> Dict[str, list]:
    """Build the inputs of a section and collect each once, concurrently."""
    inputs = build(cfg, None)

    async def run():
        return await asyncio.gather(*(i.collect() for i in inputs))

    return {i.target.name: samples for i, samples in zip(inputs, asyncio.run(run()))}


def value(samples, name, **labels):
    hits = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (name, labels, hits)
    return hits[0]


def _device_samples(samples):
    skip = {"commune_snmp_up", "commune_snmp_scrape_duration_seconds", "commune_snmp_device_info",
            "commune_snmp_uptime_seconds"}
    return sorted((s.name, sorted(s.labels.items()), s.value) for s in samples if s.name not in skip)


# ---------------------------------------------------------------- tests

def test_own_recordings_over_udp(sim):
    names = ["printer", "router", "ups_apc", "ups_rfc1628"]
    cfg = section([{"name": n, "address": "127.0.0.1", "port": sim, "auth": n} for n in names], v2c(*names))
    got = poll(cfg)
    kinds = {"printer": "printer", "router": "router", "ups_apc": "ups", "ups_rfc1628": "ups"}
    for n in names:
        s = got[n]
        assert value(s, "commune_snmp_up", target=n) == 1
        assert not by_name(s, "commune_snmp_scrape_error_info"), n
        info = by_name(s, "commune_snmp_device_info")[0].labels
        assert info["kind"] == kinds[n] and info["address"] == "127.0.0.1"
        # What came over UDP decodes exactly like the recording read from disk.
        _cls, offline = decode_recording(OWN / f"{n}.snmprec", n)
        assert _device_samples(s) == _device_samples(offline), n
    assert value(got["router"], "commune_snmp_uptime_seconds", target="router") == 3600123.0
    assert value(got["printer"], "commune_printer_error_state", target="printer", condition="door_open") == 1


def test_snmp_v1_and_explicit_profiles(sim):
    cfg = section([
        {"name": "r1", "address": "127.0.0.1", "port": sim, "auth": "v1", "profiles": ["interfaces"]},
        {"name": "p2", "address": "127.0.0.1", "port": sim, "auth": "printer", "profiles": ["printer", "ups"]},
    ], {"v1": {"version": "1", "community": "router"}, **v2c("printer")}, max_repetitions=3)
    got = poll(cfg)
    r1 = got["r1"]
    assert value(r1, "commune_snmp_up", target="r1") == 1
    # v1 has no Counter64: the walk with GETNEXT falls back to the 32-bit counters.
    assert value(r1, "commune_snmp_if_in_octets_total", target="r1", if_index="2", if_name="wan") == 3216549870
    assert by_name(r1, "commune_snmp_cpu_load_ratio") == []  # host_resources not asked for
    p2 = got["p2"]
    assert value(p2, "commune_printer_pages_total", target="p2", marker="1.1") == 48213
    errors = [e.labels for e in by_name(p2, "commune_snmp_scrape_error_info")]
    assert errors == [{"target": "p2", "profile": "ups", "reason": "no_such_object"}]


def test_shared_recordings_over_udp(sim):
    path = SHARED_FIXTURES / "snmp" / "expected.json"
    if not path.exists():
        pytest.skip(f"{path} is absent: ../shared/ is only present for the developers and CI")
    devices = {d["name"]: d for d in json.loads(path.read_text())["devices"]}
    cfg = section([{"name": n, "address": "127.0.0.1", "port": sim, "auth": n} for n in devices],
                  v2c(*devices), max_concurrency=4)
    got = poll(cfg)
    for n, dev in devices.items():
        s = got[n]
        assert value(s, "commune_snmp_up", target=n) == 1, n
        info = by_name(s, "commune_snmp_device_info")[0].labels
        assert info["sys_object_id"] == dev["sysObjectID"], n
        cls = type("C", (), {"kind": info["kind"], "vendor": info["vendor"]})
        check_against_expected(dev, cls, s)
        uptime = by_name(s, "commune_snmp_uptime_seconds")
        if dev["sysUpTime"] is None:
            assert uptime == [], n
        else:
            assert uptime[0].value == dev["sysUpTime"] / 100, n


def test_silent_target_does_not_delay_the_others(sim, silent_port):
    cfg = section([
        {"name": "printer", "address": "127.0.0.1", "port": sim, "auth": "printer", "interval": "2s",
         "deadline": "2s"},
        {"name": "router", "address": "127.0.0.1", "port": sim, "auth": "router", "interval": "2s",
         "deadline": "2s"},
        {"name": "dead", "address": "127.0.0.1", "port": silent_port, "auth": "printer", "interval": "20s",
         "timeout": "2s", "retries": 2, "deadline": "7s"},
    ], v2c("printer", "router"), max_concurrency=2)
    inputs = build(cfg, None)
    batches = []

    async def run():
        stop = asyncio.Event()
        runner = Runner(inputs, sinks=[batches.append])

        async def until_dead_reported():
            while not any(b.input == "snmp/dead" for b in batches):
                await asyncio.sleep(0.05)
            stop.set()

        await asyncio.gather(runner.run(stop), until_dead_reported())

    asyncio.run(run())
    order = [b.input for b in batches]
    dead_at = order.index("snmp/dead")
    # Several complete polls of the live devices arrived while the dead one was still being asked.
    assert order[:dead_at].count("snmp/printer") >= 2 and order[:dead_at].count("snmp/router") >= 2, order
    for b in batches:
        up = [s.value for s in b.samples if s.name == "commune_snmp_up"]
        success = [s.value for s in b.samples if s.name == "commune_agent_input_success"]
        assert success == [1], b.input  # a dead target is a sample, not a failed input
        assert up == ([0] if b.input == "snmp/dead" else [1]), b.input
    dead = next(b for b in batches if b.input == "snmp/dead")
    errors = [s.labels for s in dead.samples if s.name == "commune_snmp_scrape_error_info"]
    assert errors == [{"target": "dead", "profile": "system", "reason": "timeout"}]


# ---------------------------------------------------------------- discovery

DISCOVERY_HOSTS = {"127.0.0.2": "printer", "127.0.0.3": "router", "127.0.0.4": "ups_apc",
                   "127.0.0.5": "ups_rfc1628"}


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    """Four devices on 127.0.0.2-5, one snmpsim each, all answering community "public" on one port."""
    port = free_udp_port(list(DISCOVERY_HOSTS) + ["127.0.0.1", "127.0.0.6"])
    procs = []
    try:
        for host, rec in DISCOVERY_HOSTS.items():
            tmp = tmp_path_factory.mktemp(f"lan-{host}")
            proc, _ = start_snmpsim(tmp, {"public": OWN / f"{rec}.snmprec"}, hosts=[host], port=port)
            procs.append(proc)
        yield port
    finally:
        for p in procs:
            p.stop()


def test_discovery_sweep_classifies_devices(lan):
    auths = [("wrong", AuthConfig(community=Secret("not-this-one"))), ("office", AuthConfig(community=Secret("public")))]
    found = asyncio.run(sweep([f"127.0.0.{i}" for i in range(1, 8)], lan, auths, timeout=0.5, retries=0,
                              concurrency=4, rate=20))
    got = {f.address: (f.classification.kind, f.classification.vendor, f.classification.model, f.auth)
           for f in found}
    assert got == {
        "127.0.0.2": ("printer", "HP", "HP LaserJet Pro M404dn", "office"),
        "127.0.0.3": ("router", "TP-Link", "TP-Link Archer C6 Wireless Router", "office"),
        "127.0.0.4": ("ups", "APC", "Smart-UPS 1500", "office"),
        "127.0.0.5": ("ups", "EAST", "EAST", "office"),
    }


def test_discover_command_and_config_snippet(lan, tmp_path):
    out_file = tmp_path / "found.yaml"
    proc = subprocess.run(agent_command() + ["discover", "127.0.0.0/29", "--community", "public", "--port", str(lan),
                                             "--timeout", "0.5", "--rate", "20", "--write-config", str(out_file)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert rows[0][:4] == ["ADDRESS", "KIND", "VENDOR", "MODEL"]
    assert [(r[0], r[1], r[2]) for r in rows[1:]] == [
        ("127.0.0.2", "printer", "HP"), ("127.0.0.3", "router", "TP-Link"), ("127.0.0.4", "ups", "APC"),
        ("127.0.0.5", "ups", "EAST")]
    assert "4 device(s) answered out of 6 address(es)" in proc.stderr
    assert oct(out_file.stat().st_mode & 0o777) == "0o600"
    # The snippet is a ready config: the agent accepts it and polls every device it lists.
    check = subprocess.run(agent_command() + ["--config.check", "-c", str(out_file)], capture_output=True,
                           text=True, timeout=60, cwd=REPO)
    assert check.returncode == 0, check.stderr
    snippet = yaml.safe_load(out_file.read_text())["snmp"]
    assert [t["address"] for t in snippet["targets"]] == ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
    assert [t["name"] for t in snippet["targets"]][:2] == ["npi3f1a2b", "gw-ubnd-xa"]
    got = poll(section(snippet["targets"], {k: v for k, v in snippet["auths"].items()}))
    assert all(value(s, "commune_snmp_up", target=n) == 1 for n, s in got.items())


def test_periodic_discovery_input(lan):
    cfg = section([], {"office": {"community": "public"}},
                  discovery={"enabled": True, "subnets": ["127.0.0.0/29"], "port": lan, "timeout": "500ms",
                             "rate": 20})
    [inp] = build(cfg, None)
    assert isinstance(inp, DiscoveryInput) and inp.timeout <= inp.interval
    samples = asyncio.run(inp.collect())
    kinds = {s.labels["address"]: s.labels["kind"] for s in samples
             if s.name == "commune_snmp_discovered_device_info"}
    assert kinds == {"127.0.0.2": "printer", "127.0.0.3": "router", "127.0.0.4": "ups", "127.0.0.5": "ups"}
    assert value(samples, "commune_snmp_discovery_devices", subnet="127.0.0.0/29") == 4


def test_ipv6_loopback_target(tmp_path):
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
    tmp = Path(tmp_path)
    (tmp / "data").mkdir()
    (tmp / "cache").mkdir()
    shutil.copyfile(OWN / "ups_apc.snmprec", tmp / "data" / "ups.snmprec")
    proc = Proc([str(VENV_BIN / "snmpsim-command-responder"), f"--data-dir={tmp / 'data'}",
                 f"--cache-dir={tmp / 'cache'}", f"--agent-udpv6-endpoint=[::1]:{port}"], tmp / "snmpsim.log",
                env=dict(os.environ, SNMPSIM_ALLOW_ROOT="true"))
    try:
        wait_until(lambda: proc.alive() and "Listening at UDP/IPv6 endpoint" in proc.log(), 60,
                   what="snmpsim on ::1")
        got = poll(section([{"name": "ups6", "address": "::1", "port": port, "auth": "ups"}], v2c("ups")))
        s = got["ups6"]
        assert value(s, "commune_snmp_up", target="ups6") == 1
        assert value(s, "commune_ups_battery_replace", target="ups6") == 1
    finally:
        proc.stop()


def test_discover_command_with_the_agent_config(lan, tmp_path):
    """-c: the auths of the agent config are tried in turn; the snippet references them by name."""
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(yaml.safe_dump({"snmp": {
        "auths": {"old": {"community": "retired-community"}, "office": {"community": "public"}},
        "discovery": {"port": lan, "timeout": "500ms", "rate": 20}}}))
    out_file = tmp_path / "found.yaml"
    proc = subprocess.run(agent_command() + ["discover", "127.0.0.2/31", "-c", str(cfg),
                                             "--write-config", str(out_file)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[:2] for line in proc.stdout.splitlines()[1:]] == [["127.0.0.2", "printer"],
                                                                           ["127.0.0.3", "router"]]
    snippet = yaml.safe_load(out_file.read_text())["snmp"]
    assert "auths" not in snippet and {t["auth"] for t in snippet["targets"]} == {"office"}
    for secret in ("retired-community", "public"):
        assert secret not in proc.stdout + proc.stderr
