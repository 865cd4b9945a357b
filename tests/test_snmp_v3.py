"""SNMPv3 (every security level, auth and privacy protocol) against net-snmp's snmpd on loopback.

A wrong key gives a clear error, ``commune_snmp_up 0`` with ``reason="auth_failure"``, and leaves
the other targets alone; no secret reaches logs, errors or the /metrics text.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

import pytest

from contract.exposition import render
from agent.inputs.snmp import build
from agent.inputs.snmp.client import SnmpClient
from agent.inputs.snmp.config import AuthConfig
from agent.inputs.snmp.errors import SnmpError
from agent.runner import Runner
from contract.schema import load_model
from tests.support import Proc, need_binary, wait_until
from tests.test_snmp_live import free_udp_port, section, value

USERS = {
    # name: (auth protocol, auth password, priv protocol, priv password, rouser level)
    "alice": ("SHA", "alice-auth-secret", "AES", "alice-priv-secret", "priv"),
    "bob": ("SHA-512", "bob-auth-secret1", "AES-256", "bob-priv-secret1", "priv"),
    "erin": ("SHA", "erin-auth-secret", "AES-256", "erin-priv-secret", "priv"),
    "carol": ("SHA-256", "carol-auth-secret", "AES-192", "carol-priv-secret", "priv"),
    "dave": ("MD5", "dave-auth-secret", "DES", "dave-priv-secret", "priv"),
    "ivan": ("SHA", "ivan-auth-secret", "AES-192-C", "ivan-priv-secret", "priv"),
    "judy": ("MD5", "judy-auth-secret", "AES-256-C", "judy-priv-secret", "priv"),
    "kim": ("MD5", "kim-auth-secret1", "AES-256", "kim-priv-secret1", "priv"),
    "lan": ("SHA", "lan-auth-secret1", "DES", "lan-priv-secret1", "priv"),
    "minh": ("SHA-256", "minh-auth-secret", "AES-128", "minh-priv-secret", "priv"),
    "ngoc": ("SHA-384", "ngoc-auth-secret", "AES-256-C", "ngoc-priv-secret", "priv"),
    "oanh": ("SHA-224", "oanh-auth-secret", "DES", "oanh-priv-secret", "priv"),
    "frank": ("SHA-224", "frank-auth-secret", None, None, "auth"),
    "hana": ("SHA-384", "hana-auth-secret", None, None, "auth"),
    "grace": (None, None, None, None, "noauth"),
}
COMMUNITY = "v2c-community-secret"
ALL_SECRETS = [COMMUNITY, "wrong-priv-secret", "wrong-auth-secret"] + \
    [u[i] for u in USERS.values() for i in (1, 3) if u[i]]


def snmpd_config(port: int, users=USERS, extra=()) -> str:
    lines = [f"agentAddress udp:127.0.0.1:{port}", f"rocommunity {COMMUNITY} 127.0.0.1",
             "sysName office-router", "sysLocation commune test", *extra]
    for user, (ap, apw, pp, ppw, level) in users.items():
        create = f"createUser {user}"
        if ap:
            create += f' {ap} "{apw}"'
        if pp:
            create += f' {pp} "{ppw}"'
        lines += [create, f"rouser {user} {level}"]
    return "\n".join(lines) + "\n"


def start_snmpd(tmp: Path, conf: str, state: Path) -> Proc:
    """net-snmp's snmpd with ``conf``, keeping its persistent state (engine boots) in ``state``."""
    binary = need_binary("snmpd")
    tmp.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    (tmp / "snmpd.conf").write_text(conf)
    persistent = state / "snmpd.conf"  # -C skips it unless named: boots would not survive a restart
    persistent.touch()
    log, pid = tmp / "snmpd.log", tmp / "snmpd.pid"
    for f in (log, pid):
        f.unlink(missing_ok=True)
    env = dict(os.environ, SNMP_PERSISTENT_DIR=str(state), MIBS="")
    proc = Proc([binary, "-f", "-C", "-c", f"{tmp / 'snmpd.conf'},{persistent}", "-Lf", log, "-p", pid],
                tmp / "stdout.log", env=env)
    try:
        wait_until(lambda: proc.alive() and pid.exists() and "NET-SNMP version" in
                   log.read_text(errors="replace"), 30, what="snmpd to start")
    except BaseException:
        proc.stop()
        raise
    return proc


@pytest.fixture(scope="module")
def snmpd(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("snmpd")
    port = free_udp_port()
    proc = start_snmpd(tmp, snmpd_config(port), tmp / "state")
    try:
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
        # frank has no privacy key on the device
        "unsupported_level": {**v3_auth("frank"), "priv_protocol": "AES", "priv_password": "wrong-priv-secret"},
        # ivan's key is extended as Cisco does (AES-192-C): net-snmp's AES-192 key is another one
        "wrong_extension": {**v3_auth("ivan"), "priv_protocol": "AES-192"},
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
    for name in ("wrong_priv", "wrong_auth", "unknown_user", "unsupported_level", "wrong_extension"):
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
    assert "wrong digest: the device rejects the auth_password or auth_protocol of user 'bob'" in log
    assert "unknown user 'mallory' (usmStatsUnknownUserNames)" in log
    assert "user 'frank' is not configured for authPriv on the device (usmStatsUnsupportedSecLevels)" in log
    assert log.count("wrong priv_password or priv_protocol") == 2, log
    metrics = render(lambda: [s for b in batches for s in b.samples]).decode()
    for secret in ALL_SECRETS:
        assert secret not in log, secret
        assert secret not in metrics, secret
    cfg = section(targets, auths)
    for secret in ALL_SECRETS:
        assert secret not in repr(cfg) and secret not in str(cfg.auths)


def _client(port: int, user: str, **kw) -> SnmpClient:
    auth = load_model(AuthConfig, v3_auth(user, **kw), path="auth")
    return SnmpClient("127.0.0.1", port, auth, timeout=1.0, retries=1)


SYS_NAME = (1, 3, 6, 1, 2, 1, 1, 5, 0)


def test_reboot_and_new_engine_resync(tmp_path):
    """A device that restarts (engine boots + 1, time back to 0) answers our next request with a
    usmStatsNotInTimeWindows Report: the session learns the new boots and time and the request
    succeeds. A device replaced by another engine at the same address (usmStatsUnknownEngineIDs)
    is discovered again."""
    port = free_udp_port()
    users = {u: USERS[u] for u in ("alice", "dave", "frank", "lan", "grace")}
    state = tmp_path / "state"
    conf = snmpd_config(port, users)
    clients = {u: _client(port, u) for u in users}

    async def poll_all():
        return {u: (await c.get([SYS_NAME]))[SYS_NAME] for u, c in clients.items()}

    proc = start_snmpd(tmp_path / "a", conf, state)
    try:
        assert set(asyncio.run(poll_all()).values()) == {b"office-router"}
        before = {u: (c._session._engine_id, c._session._boots) for u, c in clients.items()}
        proc.stop()
        proc = start_snmpd(tmp_path / "a", conf, state)  # same state: boots + 1
        assert set(asyncio.run(poll_all()).values()) == {b"office-router"}
        for u, c in clients.items():
            engine_id, boots = before[u]
            assert c._session._engine_id == engine_id, u
            if USERS[u][0]:  # noAuthNoPriv has no time window: nothing to learn
                assert c._session._boots == boots + 1, u
        proc.stop()
        proc = start_snmpd(tmp_path / "b", conf, tmp_path / "state-b")  # a new engine ID
        requests = {u: c.requests for u, c in clients.items()}
        assert set(asyncio.run(poll_all()).values()) == {b"office-router"}
        for u, c in clients.items():
            assert c._session._engine_id not in (None, before[u][0]), u
            assert c.requests == requests[u] + 1, u  # rediscovery and the retry are inside one request
    finally:
        proc.stop()
        for c in clients.values():
            c.close()


def test_silent_device_times_out(tmp_path):
    """No answer at all (not even to the engine discovery): ``timeout``, for every level."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        for user in ("alice", "frank", "grace"):
            client = _client(port, user)
            client.timeout = client._session.timeout = 0.3
            with pytest.raises(SnmpError) as err:
                asyncio.run(client.get([SYS_NAME]))
            client.close()
            assert err.value.reason == "timeout", (user, err.value)
            assert "no answer within 0.3s (2 tries)" in str(err.value), user
