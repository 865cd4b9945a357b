"""``commune-collector serve`` as a real process on a free loopback port, and agent tokens."""
from __future__ import annotations

import ssl
import urllib.request
from pathlib import Path
from typing import Optional, Sequence, Tuple

import yaml

from collector.state import Store
from lab.procs import Proc, collector_command, free_port, wait_until


def start_collector(tmp: Path, upstreams: Sequence[str], *, extra: Optional[dict] = None,
                    state_dir: Optional[Path] = None, tls: Optional[Tuple[Path, Path]] = None,
                    name: str = "collector") -> Tuple[Proc, str, Path]:
    """``commune-collector serve`` on a free loopback port; returns (process, base URL, state dir)."""
    tmp = Path(tmp)
    port = free_port()
    state_dir = state_dir or tmp / f"{name}-state"
    cfg = {
        "log_level": "info",
        "web": {"listen_address": f"127.0.0.1:{port}"},
        "upstreams": [{"url": u, "timeout": "5s"} for u in upstreams],
        "upstream_check_interval": "500ms",
        "state": {"dir": str(state_dir)},
    }
    if tls:
        cfg["web"].update(tls_cert_file=str(tls[0]), tls_key_file=str(tls[1]))
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = Proc(collector_command() + ["serve", "-c", str(path)], tmp / f"{name}.log")
    scheme = "https" if tls else "http"
    url = f"{scheme}://127.0.0.1:{port}"
    try:
        if tls:
            ctx = ssl.create_default_context(cafile=str(tls[0]))
            wait_until(lambda: urllib.request.urlopen(url + "/-/healthy", context=ctx, timeout=2).status == 200,
                       what="collector over TLS")
        else:
            proc.wait_http(url + "/-/healthy")
    except BaseException:
        proc.stop()
        raise
    return proc, url, state_dir


def add_token(state_dir: Path, commune: str, agent: str, pull_address: str = "") -> str:
    return Store(str(state_dir)).add_token(commune, agent, pull_address=pull_address)[1]
