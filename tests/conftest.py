"""Fixtures shared by every test; area-specific ones live in the area's own test modules."""
from __future__ import annotations

import pytest

from tests import support


@pytest.fixture
def prometheus(tmp_path):
    """A bare Prometheus with the remote-write receiver, stopped after the test: (proc, url)."""
    proc, url = support.start_prometheus(tmp_path)
    try:
        yield proc, url
    finally:
        proc.stop()
