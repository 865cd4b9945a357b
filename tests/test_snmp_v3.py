"""SNMPv3 (every security level, auth and privacy protocol) against net-snmp's snmpd on loopback.

A wrong key gives a clear error, ``commune_snmp_up 0`` with ``reason="auth_failure"``, and leaves
the other targets alone; no secret reaches logs, errors or the /metrics text.
"""
from __future__ import annotations

import asyncio
import logging
import os

import pytest

from contract.exposition import render
from agent.inputs.snmp import build
from agent.runner import Runner
from tests.support import Proc, need_binary, wait_until
from tests.test_snmp_live import free_udp_port, section, value

USERS = {
    # name: (auth protocol, auth password, priv protocol, priv password, rouser level)
    "alice": ("SHA", "alice-auth-secret", "AES", "alice-priv-secret", "priv"),
    "bob": ("SHA-512", "bob-auth-secret1", "AES-256", "bob-priv-secret1", "priv"),
    "erin": ("SHA", "erin-auth-secret", "AES-256", "erin-priv-secret", "priv"),
    "carol": ("SHA-256", "carol-auth-secret", "AES-192", "carol-priv-secret", "priv"),
    "dave": ("MD5", "dave-auth-secret", "DES", "dave-priv-secret", "priv"),
    "frank": ("SHA-224", "frank-auth-secret", None, None, "auth"),
    "hana": ("SHA-384", "hana-auth-secret", None, None, "auth"),
    "grace": (None, None, None, None, "noauth"),
}
COMMUNITY = "v2c-community-secret"
ALL_SECRETS = [COMMUNITY, "wrong-priv-secret", "wrong-auth-secret"] + \
    [u[i] for u in USERS.values() for i in (1, 3) if u[i]]


@pytest.fixture(scope="module")
def snmpd(tmp_path_factory):
    binary = need_binary("snmpd")
    tmp = tmp_path_factory.mktemp("snmpd")
    port = free_udp_port()
    lines = [f"agentAddress udp:127.0.0.1:{port}", f"rocommunity {COMMUNITY} 127.0.0.1",
             "sysName office-router", "sysLocation commune test"]
    for user, (ap, apw, pp, ppw, level) in USERS.items():
        create = f"createUser {user}"
        if ap:
            create += f' {ap} "{apw}"'
        if pp:
            create += f' {pp} "{ppw}"'
        lines += [create, f"rouser {user} {level}"]
    conf = tmp / "snmpd.conf"
    conf.write_text("\n".join(lines) + "\n")
    (tmp / "state").mkdir()
    env = dict(os.environ, SNMP_PERSISTENT_DIR=str(tmp / "state"), MIBS="")
    proc = Proc([binary, "-f", "-C", "-c", conf, "-Lf", tmp / "snmpd.log", "-p", tmp / "snmpd.pid"],
                tmp / "stdout.log", env=env)
    try:
        wait_until(lambda: proc.alive() and (tmp / "snmpd.pid").exists() and "NET-SNMP version" in
                   (tmp / "snmpd.log").read_text(errors="replace"), 30, what="snmpd to start")
        yield port
    finally:
        proc.stop()


def v3_auth(user: str, *, auth_password=None, priv_password=None) -> dict:
    ap, apw, pp, ppw, _ = USERS[user]
    out = {"version": "3", "username": user}
    if ap:
        out.update(auth_protocol=ap, auth_password=auth_password or apw)
    if pp:
        out.update(priv_protocol=pp, priv_password=priv_password or ppw)
    return out


def test_every_security_level_and_protocol(snmpd):
    auths = {u: v3_auth(u) for u in USERS}
    auths["community"] = {"version": "2c", "community": COMMUNITY}
    targets = [{"name": u, "address": "127.0.0.1", "port": snmpd, "auth": u, "profiles": ["system"]}
               for u in auths]
    targets[0]["profiles"] = ["auto"]  # one full poll (encrypted GETBULK walks) as well
    inputs = build(section(targets, auths), None)

    async def run():
        return await asyncio.gather(*(i.collect() for i in inputs))

    for inp, samples in zip(inputs, asyncio.run(run())):
        name = inp.target.name
        assert value(samples, "commune_snmp_up", target=name) == 1, (name, samples[:3])
        info = [s.labels for s in samples if s.name == "commune_snmp_device_info"][0]
        assert info["sys_name"] == "office-router", name
    alice = dict(zip([i.target.name for i in inputs], asyncio.run(run())))["alice"]
    assert any(s.name == "commune_snmp_if_in_octets_total" for s in alice)


def test_wrong_keys_fail_clearly_and_alone(snmpd, caplog):
    auths = {
        "good": v3_auth("alice"),
        "wrong_priv": v3_auth("alice", priv_password="wrong-priv-secret"),
        "wrong_auth": v3_auth("bob", auth_password="wrong-auth-secret"),
        "unknown_user": {**v3_auth("alice"), "username": "mallory"},
        "community": {"version": "2c", "community": COMMUNITY},
    }
    targets = [{"name": n, "address": "127.0.0.1", "port": snmpd, "auth": n, "profiles": ["system"],
                "interval": "1s", "timeout": "500ms", "retries": 0} for n in auths]
    for t in targets:
        if t["name"] != "good" and t["name"] != "community":
            t.update(interval="20s", deadline="8s", timeout="1s", retries=1)
    inputs = build(section(targets, auths), None)
    batches = []

    async def run():
        stop = asyncio.Event()
        runner = Runner(inputs, sinks=[batches.append])

        async def until_all_reported():
            while {b.input for b in batches} != {i.name for i in inputs}:
                await asyncio.sleep(0.05)
            stop.set()

        await asyncio.gather(runner.run(stop), until_all_reported())

    with caplog.at_level(logging.DEBUG):
        asyncio.run(run())
    latest = {}
    for b in batches:
        latest[b.input] = b.samples
    for name in ("good", "community"):
        assert value(latest[f"snmp/{name}"], "commune_snmp_up", target=name) == 1
    for name in ("wrong_priv", "wrong_auth", "unknown_user"):
        samples = latest[f"snmp/{name}"]
        assert value(samples, "commune_snmp_up", target=name) == 0
        errors = [s.labels for s in samples if s.name == "commune_snmp_scrape_error_info"]
        assert errors == [{"target": name, "profile": "system", "reason": "auth_failure"}], name
    order = [b.input for b in batches]
    # The live targets did not wait for the one whose encrypted requests go unanswered.
    slow = order.index("snmp/wrong_priv")
    assert order[:slow].count("snmp/good") >= 2 and order[:slow].count("snmp/community") >= 2, order
    log = caplog.text
    assert "wrong priv_password or priv_protocol" in log
    assert "Wrong SNMP PDU digest" in log
    assert "Unknown USM user" in log
    metrics = render(lambda: [s for b in batches for s in b.samples]).decode()
    for secret in ALL_SECRETS:
        assert secret not in log, secret
        assert secret not in metrics, secret
    cfg = section(targets, auths)
    for secret in ALL_SECRETS:
        assert secret not in repr(cfg) and secret not in str(cfg.auths)
