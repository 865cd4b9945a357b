"""Fixtures shared by every test; area-specific ones live in the area's own test modules.

It also records the name of every sample built with ``contract.samples.sample`` during the run, and
of every metric in exposition text passed to ``tests.support.record_exposition``, so that
``tests/test_zz_catalog.py`` (collected last) can tie the catalog to what is really emitted.
"""
from __future__ import annotations

import os
import subprocess
import uuid

import pytest

import contract.samples
from tests import support

_original_sample = contract.samples.sample


def _recording_sample(name, value, /, **labels):
    support.EMITTED.setdefault(name, set()).update(labels)
    return _original_sample(name, value, **labels)


# Installed before any input module imports it (they bind the name at import time).
contract.samples.sample = _recording_sample


@pytest.fixture
def prometheus(tmp_path):
    """A bare Prometheus with the remote-write receiver, stopped after the test: (proc, url)."""
    proc, url = support.start_prometheus(tmp_path)
    try:
        yield proc, url
    finally:
        proc.stop()


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MB tmpfs, for full-disk tests (needs root); unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
