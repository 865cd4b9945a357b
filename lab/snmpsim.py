"""snmpsim serving SNMP recordings on loopback, as a real SNMP agent process."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, Sequence

from lab.procs import VENV_BIN, Proc, free_udp_port, wait_until


def start_snmpsim(tmp: Path, recordings: Dict[str, Path], hosts: Sequence[str] = ("127.0.0.1",),
                  port: int = 0, extra: Sequence[str] = ()) -> "tuple[Proc, int]":
    """Serve ``{community: recording}`` on ``hosts``:port; returns (process, port)."""
    tmp = Path(tmp)
    data, cache = tmp / "data", tmp / "cache"
    data.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    for community, path in recordings.items():
        shutil.copyfile(path, data / f"{community}.snmprec")
    port = port or free_udp_port(hosts)
    args = [str(VENV_BIN / "snmpsim-command-responder"), f"--data-dir={data}", f"--cache-dir={cache}"]
    args += [f"--agent-udpv4-endpoint={h}:{port}" for h in hosts]
    args += list(extra)
    env = dict(os.environ, SNMPSIM_ALLOW_ROOT="true")
    proc = Proc(args, tmp / "snmpsim.log", env=env)

    def ready():
        if not proc.alive():
            raise AssertionError(f"snmpsim exited:\n{proc.log()[-3000:]}")
        return proc.log().count("Listening at UDP/IPv4 endpoint") >= len(hosts)

    try:
        wait_until(ready, 60, what="snmpsim to listen")
    except BaseException:
        proc.stop()
        raise
    return proc, port
