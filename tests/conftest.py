"""Fixtures shared by every test; area-specific ones live in the area's own test modules.

It also records the name of every sample built with ``agent.samples.sample`` during the run, and
of every metric in exposition text passed to ``tests.support.record_exposition``, so that
``tests/test_zz_catalog.py`` (collected last) can tie the catalog to what is really emitted.
"""
from __future__ import annotations

import pytest

import agent.samples
from tests import support

_original_sample = agent.samples.sample


def _recording_sample(name, value, /, **labels):
    support.EMITTED.setdefault(name, set()).update(labels)
    return _original_sample(name, value, **labels)


# Installed before any input module imports it (they bind the name at import time).
agent.samples.sample = _recording_sample


@pytest.fixture
def prometheus(tmp_path):
    """A bare Prometheus with the remote-write receiver, stopped after the test: (proc, url)."""
    proc, url = support.start_prometheus(tmp_path)
    try:
        yield proc, url
    finally:
        proc.stop()
