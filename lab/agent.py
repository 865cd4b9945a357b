"""The real agent process: a quiet test config (no ICMP, SNMP or probes: nothing beyond loopback)
and a handle that reads its /metrics."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Optional

import yaml

from lab.procs import Proc, agent_command, free_port, http_get, wait_until

QUIET = {name: {"enabled": False} for name in ("smart", "icmp", "probes", "process", "snmp")}


def agent_config(tmp: Path, url: str, state_dir: Optional[Path] = None, **push) -> Path:
    port = free_port()
    cfg = {
        "agent": {"id": "pc-test", "state_dir": str(state_dir or tmp / "state"), "interval": "1s",
                  "log_level": "info"},
        "web": {"listen_address": f"127.0.0.1:{port}"},
        "host": {"interval": "1s", "timeout": "1s"},
        **QUIET,
        "push": {"enabled": True, "url": url, "interval": "1s", "batch_delay": "0s", "min_backoff": "200ms", "max_backoff": "1s",
                 "timeout": "5s", "require_token": "bearer_token" in push, **push},
    }
    path = tmp / f"agent-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Agent:
    """``commune-agent -c config`` as a real process, ready once its /metrics answers."""

    def __init__(self, tmp: Path, config: Path, name: str = "agent"):
        cfg = yaml.safe_load(config.read_text())
        self.metrics_url = f"http://{cfg['web']['listen_address']}/metrics"
        self.proc = Proc(agent_command() + ["-c", str(config)], tmp / f"{name}.log")
        try:
            self.proc.wait_http(self.metrics_url)
        except BaseException:
            self.proc.stop()
            raise

    def on_exposition(self, text: str) -> str:
        """Every /metrics text read passes here (the tests note the metrics it holds)."""
        return text

    def metrics(self) -> dict:
        from prometheus_client.parser import text_string_to_metric_families

        text = self.on_exposition(http_get(self.metrics_url).decode())
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                key = s.name + "".join(f",{k}={v}" for k, v in sorted(s.labels.items()))
                out[key] = s.value
        return out

    def value(self, key: str) -> float:
        return self.metrics().get(key, float("nan"))

    def first_metrics(self) -> dict:
        """/metrics once the queue input has reported (right after start it may not have yet)."""
        return wait_until(lambda: (lambda m: m if "commune_agent_queue_batches" in m else None)(self.metrics()),
                          10, what="the queue input's first collection")
