"""What the tests share beyond the lab (:mod:`lab`): fixture paths, catalog coverage, shared
recordings. The lab's process helpers are imported here so tests import one module."""
from __future__ import annotations

from pathlib import Path

import pytest

from lab.procs import (REPO, VENV_BIN, MissingBinary, Proc, agent_command, collector_command,
                       free_port, free_udp_port, http_get, http_ok, need_binary, running, wait_until)
from lab.stores import prom_query, start_prometheus, start_victoria_metrics

SHARED = REPO.parent / "shared"
SHARED_FIXTURES = SHARED / "fixtures"
LOCAL_FIXTURES = Path(__file__).resolve().parent / "fixtures"

__all__ = ["REPO", "VENV_BIN", "SHARED", "SHARED_FIXTURES", "LOCAL_FIXTURES", "EMITTED", "MissingBinary",
           "Proc", "agent_command", "collector_command", "free_port", "free_udp_port", "http_get", "http_ok",
           "need_binary", "running", "wait_until", "prom_query", "start_prometheus", "start_victoria_metrics",
           "record_exposition", "shared_fixture"]

# metric name -> label names seen, over the whole test run (see tests/conftest.py)
EMITTED: dict = {}


def record_exposition(text: str) -> str:
    """Note every metric in a /metrics text (from a subprocess or server) as emitted; returns text."""
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            name = s.name
            if fam.type == "counter" and name.endswith("_created"):
                continue
            EMITTED.setdefault(name, set()).update(s.labels)
    return text


def shared_fixture(*parts: str) -> Path:
    """A file under ../shared/fixtures, or skip with the reason when shared/ is absent."""
    path = SHARED_FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: ../shared/ is only present for the developers and CI")
    return path
