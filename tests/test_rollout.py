"""A commune's roll-out end to end: one enrollment key of 30 uses, 30 real agent processes that
enroll with it and register their machines, the 31st refused, an expired key refused, a name taken
refused (or suffixed when asked); the machines appear in real Prometheus on the inventory series
with their hardware facts and in ``commune-collector fleet list`` without any fleet file entry."""
from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from lab.agent import QUIET, Agent
from lab.collector import start_collector
from tests.support import (agent_command, collector_command, free_port, prom_query, record_exposition,
                           start_prometheus, wait_until)

pytestmark = pytest.mark.slow

COMMUNE = "09667"
PCS = 30


class RecordedAgent(Agent):
    def on_exposition(self, text: str) -> str:
        return record_exposition(text)


def fake_dmi(root: Path, n: int) -> Path:
    """A sysfs tree whose DMI says what PC number ``n`` would: each machine its own serial."""
    dmi = root / "class" / "dmi" / "id"
    dmi.mkdir(parents=True)
    facts = {"sys_vendor": "Dell Inc.", "product_name": "OptiPlex 3020" if n % 2 else "Vostro 3670",
             "product_serial": f"SN{n:04d}", "chassis_type": "3", "bios_vendor": "Dell Inc.",
             "bios_version": "A1{n % 10}", "bios_date": f"0{1 + n % 9}/15/2016"}
    for name, value in facts.items():
        (dmi / name).write_text(value + "\n")
    return root


def pc_config(tmp: Path, n: int, collector_url: str) -> Path:
    home = tmp / f"pc-{n:02d}"
    cfg = {
        "agent": {"id": f"pc-{n:02d}", "state_dir": str(home / "state"), "interval": "1s", "log_level": "info"},
        "web": {"listen_address": f"127.0.0.1:{free_port()}"},
        "host": {"interval": "5s", "timeout": "2s"},
        "inventory": {"interval": "1s", "timeout": "1s", "refresh_interval": "1s", "sysfs": str(fake_dmi(home / "sys", n))},
        **QUIET,
        "push": {"enabled": True, "url": collector_url + "/api/v1/write", "interval": "1s", "batch_delay": "0s",
                 "min_backoff": "200ms", "max_backoff": "1s", "timeout": "5s"},
    }
    path = home / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def enroll(config: Path, collector_url: str, key: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(agent_command() + ["enroll", "--collector", collector_url, "-c", str(config), *extra],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COMMUNE_ENROLL_KEY": key})


def create_key(state_dir: Path, *args: str) -> str:
    res = subprocess.run(collector_command() + ["enroll-key", "create", "--commune", COMMUNE, *args,
                                                "--state.dir", str(state_dir)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_thirty_pcs_enroll_with_one_commune_key_and_register_their_machines(tmp_path):
    prom, prom_url = start_prometheus(tmp_path / "prom")
    coll = None
    agents = []
    try:
        coll, curl, cstate = start_collector(tmp_path, [prom_url + "/api/v1/write"])
        key = create_key(cstate, "--uses", str(PCS), "--expires", "14d")
        configs = [pc_config(tmp_path, n, curl) for n in range(1, PCS + 2)]

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda c: enroll(c, curl, key), configs[:PCS]))
        for n, res in enumerate(results, 1):
            assert res.returncode == 0, res.stderr
            assert f"enrolled as agent 'pc-{n:02d}' of commune '{COMMUNE}'" in res.stdout
            assert key not in res.stdout + res.stderr

        # the 31st PC: the key's 30 uses are spent, and it is told so
        late = enroll(configs[PCS], curl, key)
        assert late.returncode == 1
        assert "refused the enrollment: HTTP 403" in late.stderr
        assert f"of commune {COMMUNE} is used up: all {PCS} uses are spent" in late.stderr, late.stderr
        assert not (tmp_path / f"pc-{PCS + 1:02d}" / "state" / "push.token").exists()

        # a key past its expiry, told so with the date
        short = create_key(cstate, "--uses", "5", "--expires", "1s")
        time.sleep(1.5)
        expired = enroll(configs[PCS], curl, short)
        assert expired.returncode == 1 and "expired on" in expired.stderr, expired.stderr
        assert "ask the province for a new one" in expired.stderr

        # a name already enrolled: refused, never a second identity; a suffix only when asked
        fresh = create_key(cstate, "--uses", "2")
        again = enroll(configs[0], curl, fresh)
        assert again.returncode == 1 and "HTTP 409" in again.stderr and "already has a live token" in again.stderr
        other = tmp_path / "pc-01-copy.yaml"
        cfg = yaml.safe_load(configs[0].read_text())
        cfg["agent"]["state_dir"] = str(tmp_path / "pc-01-copy-state")
        other.write_text(yaml.safe_dump(cfg))
        suffixed = enroll(other, curl, fresh, "--suffix")
        assert suffixed.returncode == 0, suffixed.stderr
        assert f"enrolled as agent 'pc-01-2' of commune '{COMMUNE}'" in suffixed.stdout

        listed = subprocess.run(collector_command() + ["enroll-key", "list", "--state.dir", str(cstate)],
                                capture_output=True, text=True, timeout=60)
        assert f"{PCS}/{PCS}" in listed.stdout and "used up; last: pc-" in listed.stdout  # enrolled 4 at a time

        # the 30 PCs run, push through the collector and describe their machines
        for config in configs[:PCS]:
            agents.append(RecordedAgent(tmp_path, config, name=config.parent.name))

        def registered():
            got = prom_query(prom_url, f'commune_host_hardware_info{{commune="{COMMUNE}"}}')
            return got if len(got) == PCS else None

        got = wait_until(registered, 180, interval=1, what=f"{PCS} machines on commune_host_hardware_info")
        by_agent = {r["metric"]["agent"]: r["metric"] for r in got}
        assert sorted(by_agent) == [f"pc-{n:02d}" for n in range(1, PCS + 1)]
        for n in range(1, PCS + 1):
            m = by_agent[f"pc-{n:02d}"]
            assert (m["vendor"], m["serial"], m["kind"]) == ("Dell Inc.", f"SN{n:04d}", "pc")
            assert m["model"] == ("OptiPlex 3020" if n % 2 else "Vostro 3670")
            assert m["bios_date"] == f"2016-0{1 + n % 9}-15"
        bios = prom_query(prom_url, f'count(commune_host_bios_date_timestamp_seconds{{commune="{COMMUNE}"}})')
        assert bios and float(bios[0]["value"][1]) == PCS

        # every one is a candidate of the inventory without a line of fleet file
        fleet = tmp_path / "fleet.yaml"
        fleet.write_text("communes: []\ndevices: []\n")
        res = subprocess.run(collector_command() + ["fleet", "list", "--fleet", str(fleet), "--prometheus", prom_url,
                                                    "--json"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        handles = {c["handle"]: c for c in json.loads(res.stdout)["candidates"]}
        for n in range(1, PCS + 1):
            cand = handles[f"agent:{COMMUNE}/pc-{n:02d}"]
            assert (cand["kind"], cand["vendor"], cand["serial"]) == ("pc", "Dell Inc.", f"SN{n:04d}")
        for a in agents:
            assert a.proc.alive(), a.proc.log()[-2000:]
    finally:
        for a in agents:
            a.proc.stop()
        if coll:
            coll.stop()
        prom.stop()
