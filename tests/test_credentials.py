"""Signed agent credentials (collector.credentials): any replica verifies a token with the key file
alone, revocations travel in a small list every replica re-reads, keys rotate by key id, and the
random tokens of tokens.json keep working (the migration path)."""
from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest

from collector.credentials import (SIGNED_PREFIX, Credentials, KeyRing, create_key, read_keys,
                                   read_revocations)
from collector.state import StateUnreadable, Store
from tests.support import collector_command
from tests.test_collector_ingest import (add_token, collector_metrics, dead_upstream,
                                         encode, http_ok_status, now_ms, post, post_json, series,
                                         start_collector)

__all__ = ["dead_upstream"]  # the fixture, shared


class Clock:
    """A monotonic clock the test moves: the key file and revocation list are looked at once a second."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def credentials(tmp_path, clock=None, kid="k1"):
    keys = tmp_path / "keys" / "signing.keys"
    create_key(str(keys), kid)
    revoked = tmp_path / "shared" / "revoked.txt"
    issuer = Credentials(Store(str(tmp_path / "state")), str(keys), str(revoked), monotonic=clock or Clock())
    return issuer, keys, revoked


def test_a_signed_token_is_verified_by_another_replica_with_the_key_file_alone(tmp_path):
    issuer, keys, revoked = credentials(tmp_path)
    record, token = issuer.store.add_token("09667", "pc-01")
    assert token.startswith(SIGNED_PREFIX + "k1.") and record["signed_by"] == "k1"
    # tokens.json holds the record (for lists, http_sd, revocation), never the token nor its hash
    data = json.loads((tmp_path / "state" / "tokens.json").read_text())
    assert token not in json.dumps(data) and "sha256" not in data["tokens"][0]
    (tmp_path / "shared").mkdir(exist_ok=True)
    revoked.write_text("")
    # another replica: an empty state directory of its own, the same key file and revocation list
    replica = Credentials(Store(str(tmp_path / "replica-state")), str(keys), str(revoked))
    assert replica.authenticate(token) == (record["id"], "09667", "pc-01")


@pytest.mark.parametrize("tamper", [
    lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"),             # another MAC
    lambda t: t.replace(".", ".x", 1),                                   # payload changed
    lambda t: t.replace("k1.", "k9.", 1),                                # a key id nobody has
    lambda t: t + ".x",                                                  # one part more
    lambda t: t.split(".")[0],                                           # parts missing
    lambda t: t + "A" * 600,                                             # far too long
])
def test_a_changed_or_unknown_token_is_refused(tmp_path, tamper):
    issuer, _keys, revoked = credentials(tmp_path)
    revoked.parent.mkdir(exist_ok=True)
    revoked.write_text("")
    _rec, token = issuer.store.add_token("09667", "pc-01")
    assert issuer.authenticate(token) is not None
    assert issuer.authenticate(tamper(token)) is None


def test_a_token_claiming_another_commune_with_a_forged_mac_is_refused(tmp_path):
    import base64

    issuer, _keys, revoked = credentials(tmp_path)
    revoked.parent.mkdir(exist_ok=True)
    revoked.write_text("")
    _rec, token = issuer.store.add_token("09667", "pc-01")
    kid, payload, mac = token[len(SIGNED_PREFIX):].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["commune"] = "00001"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert issuer.authenticate(f"{SIGNED_PREFIX}{kid}.{forged}.{mac}") is None


def test_revocation_reaches_a_replica_through_the_list_within_a_reload(tmp_path):
    clock = Clock()
    issuer, keys, revoked = credentials(tmp_path, clock)
    rec1, t1 = issuer.store.add_token("09667", "pc-01")
    _rec2, t2 = issuer.store.add_token("09667", "pc-02")
    assert not revoked.exists()  # nothing revoked yet: written at the first revocation
    (tmp_path / "shared").mkdir(exist_ok=True)
    revoked.write_text("# empty\n")
    replica = Credentials(Store(str(tmp_path / "replica-state")), str(keys), str(revoked), monotonic=clock)
    assert replica.authenticate(t1) and replica.authenticate(t2)
    issuer.store.revoke_token(rec1["id"])
    assert rec1["id"] in read_revocations(str(revoked))
    assert stat.S_IMODE(revoked.stat().st_mode) == 0o644  # ids only: replicas may run as other users
    assert replica.authenticate(t1) is not None  # looked at once a second: not yet
    clock.t += 1.0
    assert replica.authenticate(t1) is None and replica.authenticate(t2) is not None
    # replacing an agent (a reinstalled PC) revokes the old token for every replica too
    _rec3, t3 = issuer.store.add_token("09667", "pc-02", replace=True)
    clock.t += 1.0
    assert replica.authenticate(t2) is None and replica.authenticate(t3).agent == "pc-02"
    # the list is rebuilt from tokens.json, so it heals when edited or lost
    revoked.unlink()
    clock.t += 1.0
    with pytest.raises(StateUnreadable, match="cannot read revocation list"):
        replica.authenticate(t3)  # fail closed: the collector's fault, answered 503
    subprocess.run(collector_command() + ["signing-key", "publish-revocations", "-c",
                                          str(_config(tmp_path, keys, revoked))], check=True, capture_output=True)
    clock.t += 1.0
    assert replica.authenticate(t1) is None and replica.authenticate(t2) is None and replica.authenticate(t3)


def _config(tmp_path, keys, revoked):
    path = tmp_path / "collector.yaml"
    path.write_text(json.dumps({"upstreams": [{"url": "http://127.0.0.1:1/api/v1/write"}],
                                "state": {"dir": str(tmp_path / "state")},
                                "credentials": {"signing_key_file": str(keys), "revocation_file": str(revoked)}}))
    return path


def test_key_rotation_by_key_id(tmp_path):
    clock = Clock()
    issuer, keys, revoked = credentials(tmp_path, clock, kid="k2026a")
    revoked.parent.mkdir(exist_ok=True)
    revoked.write_text("")
    _rec, old = issuer.store.add_token("09667", "pc-01")
    create_key(str(keys), "k2026b")  # the new key signs, the old one still verifies
    assert [kid for kid, _ in read_keys(str(keys))] == ["k2026b", "k2026a"]
    clock.t += 1.0
    rec, new = issuer.store.add_token("09667", "pc-02")
    assert new.startswith(SIGNED_PREFIX + "k2026b.") and rec["signed_by"] == "k2026b"
    assert issuer.authenticate(old).agent == "pc-01" and issuer.authenticate(new).agent == "pc-02"
    # removing the old key (it leaked) revokes everything it signed, on every replica that reloads
    lines = [ln for ln in keys.read_text().splitlines() if not ln.startswith("k2026a ")]
    keys.write_text("\n".join(lines) + "\n")
    clock.t += 1.0
    assert issuer.authenticate(old) is None and issuer.authenticate(new).agent == "pc-02"


def test_the_key_file_must_be_private_and_its_errors_never_show_a_key(tmp_path):
    keys = tmp_path / "signing.keys"
    create_key(str(keys), "k1")
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    secret = keys.read_text().split("k1 ", 1)[1].split()[0]
    os.chmod(keys, 0o640)
    with pytest.raises(StateUnreadable, match=r"readable by others \(mode 0640\): chmod 600") as exc:
        read_keys(str(keys))
    assert secret not in str(exc.value)
    os.chmod(keys, 0o600)
    keys.write_text(f"k1 {secret[:-4]}\n")
    with pytest.raises(StateUnreadable, match="is not 32 bytes") as exc:
        read_keys(str(keys))
    assert secret[:-4] not in str(exc.value)
    keys.write_text(f"K1 {secret}\n")
    with pytest.raises(StateUnreadable, match="expected KEY_ID SECRET"):
        read_keys(str(keys))
    keys.write_text(f"k1 {secret}\nk1 {secret}\n")
    with pytest.raises(StateUnreadable, match="appears twice"):
        read_keys(str(keys))
    keys.write_text("# nothing\n")
    with pytest.raises(StateUnreadable, match="holds no key"):
        read_keys(str(keys))
    with pytest.raises(StateUnreadable, match="cannot read signing key file"):
        KeyRing(str(tmp_path / "absent")).verify("cms_k1.e30.AA")


def test_legacy_tokens_keep_working_next_to_signed_ones_and_are_revoked_through_the_list(tmp_path, dead_upstream):
    """The migration path: a collector given a key file keeps accepting the random tokens of its
    tokens.json; a replica holding a copy of that file accepts them too, until the list revokes them."""
    state = tmp_path / "collector-state"
    legacy = add_token(state, "09667", "pc-old")  # issued before signing keys existed
    keys = tmp_path / "signing.keys"
    create_key(str(keys), "k1")
    revoked = tmp_path / "revoked.txt"
    extra = {"upstream_check_interval": "0s",
             "credentials": {"signing_key_file": str(keys), "revocation_file": str(revoked)}}
    revoked.write_text("")
    proc, url, _ = start_collector(tmp_path, [dead_upstream], state_dir=state, extra=extra)
    try:
        _rec, key = Store(str(state)).add_enroll_key("09667", 3600)
        status, reply = post_json(url + "/api/v1/enroll", {"key": key, "agent": "pc-new"})
        assert status == 200 and reply["token"].startswith(SIGNED_PREFIX + "k1.")
        body = encode([series("m", 1, now_ms())])
        # both authenticate (503: the upstream is down, so the token was accepted, not 401)
        assert post(url + "/api/v1/write", body, legacy)[0] == 503
        assert post(url + "/api/v1/write", body, reply["token"])[0] == 503
        assert post(url + "/api/v1/write", body, reply["token"][:-3] + "xyz")[0] == 401
        # revoke the legacy token with the CLI of the issuing side: tokens.json and the list
        cfg = tmp_path / "collector.yaml"
        listing = subprocess.run(collector_command() + ["token", "list", "-c", str(cfg)], capture_output=True,
                                 text=True, check=True).stdout
        old_id = [ln.split()[0] for ln in listing.splitlines() if "pc-old" in ln][0]
        # a replica with a stale copy of tokens.json still holds the legacy token's hash
        stale = tmp_path / "replica-state"
        stale.mkdir()
        (stale / "tokens.json").write_text((state / "tokens.json").read_text())
        subprocess.run(collector_command() + ["token", "revoke", old_id, "-c", str(cfg)], check=True,
                       capture_output=True)
        assert old_id in read_revocations(str(revoked))
        replica = Credentials(Store(str(stale)), str(keys), str(revoked))
        assert replica.authenticate(legacy) is None  # the list wins over the stale copy
        assert replica.authenticate(reply["token"]).agent == "pc-new"
        from tests.support import wait_until

        wait_until(lambda: post(url + "/api/v1/write", body, legacy)[0] == 401, 10, what="the revocation")
        # the signing key and the tokens never reach logs or /metrics
        secret = keys.read_text().split("k1 ", 1)[1].split()[0]
        text = collector_metrics(url)
    finally:
        proc.stop()
    log = proc.log_path.read_text()
    for s in (secret, reply["token"], legacy, key):
        assert s not in log and s not in text


def test_a_replica_without_its_revocation_list_is_not_ready(tmp_path, dead_upstream):
    keys = tmp_path / "signing.keys"
    create_key(str(keys), "k1")
    revoked = tmp_path / "revoked.txt"
    revoked.write_text("")
    issuer = Credentials(Store(str(tmp_path / "issuer")), str(keys), str(revoked))
    _rec, token = issuer.store.add_token("09667", "pc-01")
    proc, url, _ = start_collector(tmp_path, [dead_upstream], extra={
        "upstream_check_interval": "0s",
        "credentials": {"signing_key_file": str(keys), "revocation_file": str(revoked)}})
    try:
        assert http_ok_status(url + "/-/ready") == 200
        revoked.unlink()
        from tests.support import wait_until

        wait_until(lambda: http_ok_status(url + "/-/ready") == 503, 10, what="/-/ready failing")
        status, text = post(url + "/api/v1/write", encode([series("m", 1, now_ms())]), token)
        assert status == 503 and "keep the batch and retry" in text  # never 401: the agent keeps its data
    finally:
        proc.stop()


def test_signing_key_cli(tmp_path):
    keys = tmp_path / "k" / "signing.keys"
    run = lambda *a: subprocess.run(collector_command() + ["signing-key", *a], capture_output=True, text=True)
    first = run("create", "--file", str(keys), "--key-id", "k2026a")
    assert first.returncode == 0 and "key k2026a now signs" in first.stdout
    assert run("create", "--file", str(keys), "--key-id", "k2026b").returncode == 0
    assert run("list", "--file", str(keys)).stdout.split("\n")[:2] == ["k2026b  (signs)", "k2026a"]
    again = run("create", "--file", str(keys), "--key-id", "k2026b")
    assert again.returncode == 1 and "already in" in again.stderr
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    for kid, secret in read_keys(str(keys)):
        assert secret.hex() not in first.stdout + first.stderr


def test_config_requires_a_revocation_list_with_a_key_file(tmp_path):
    from contract.schema import ConfigErrors
    from collector.config import parse_config

    keys = tmp_path / "signing.keys"
    create_key(str(keys), "k1")
    with pytest.raises(ConfigErrors, match="revocation_file: required with signing_key_file"):
        parse_config('upstreams: [{url: "http://127.0.0.1:1/api/v1/write"}]\n'
                     f'credentials: {{signing_key_file: {keys}}}\n')
    with pytest.raises(ConfigErrors, match="does not exist"):
        parse_config('upstreams: [{url: "http://127.0.0.1:1/api/v1/write"}]\n'
                     f'credentials: {{signing_key_file: {tmp_path}/nope, revocation_file: {tmp_path}/r}}\n')
