"""Network namespaces for tests: unique names, commands run inside, always deleted.

Addresses used with these helpers stay inside 127.0.0.0/8 (with ``route_localnet``) or inside
the namespaces a test made (IPv6 unique-local and link-local on veth pairs between them). A
namespace that should route 127.x over a veth gets ``lo`` re-addressed to ``127.0.0.1/32`` so
that the rest of 127/8 is no longer local there (see ../shared/TESTING.md).
"""
from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import pytest

from tests.support import REPO, Proc

NOBODY = 65534
_counter = itertools.count()
_RUN_TAG = f"{os.getpid() % 100000}{secrets.token_hex(2)}"


def require_namespaces() -> None:
    """Fail (not skip) with the reason when this machine cannot make namespaces."""
    for tool in ("ip", "nft", "setpriv"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed; tests/run.sh installs iproute2, nftables and util-linux")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs the suite as root)")


class Netns:
    """One network namespace; ``run`` executes a command inside it."""

    def __init__(self, name: str):
        self.name = name

    def create(self) -> None:
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        self.run("ip", "link", "set", "lo", "up")
        # addresses on the veth pairs are usable at once (no duplicate address detection wait)
        self.sysctl("net.ipv6.conf.all.accept_dad", "0")
        self.sysctl("net.ipv6.conf.default.accept_dad", "0")

    def command(self, *args: str, user: Optional[int] = None) -> List[str]:
        cmd = ["ip", "netns", "exec", self.name]
        if user is not None:
            cmd += ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
        return cmd + [str(a) for a in args]

    def run(self, *args: str, user: Optional[int] = None, input: Optional[str] = None,
            check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.command(*args, user=user), input=input, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"in {self.name}: {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def sysctl(self, key: str, value: str) -> None:
        self.run("sysctl", "-q", "-w", f"{key}={value}")

    def loopback_only_127_0_0_1(self) -> None:
        """Make the rest of 127/8 routable over other links (lo keeps 127.0.0.1/32 only)."""
        self.run("ip", "addr", "add", "127.0.0.1/32", "dev", "lo")
        self.run("ip", "addr", "del", "127.0.0.1/8", "dev", "lo")
        self.sysctl("net.ipv4.conf.all.route_localnet", "1")
        self.sysctl("net.ipv4.conf.default.route_localnet", "1")

    def nft(self, ruleset: str) -> None:
        self.run("nft", "-f", "-", input=ruleset)

    def python(self, *args: str, user: Optional[int] = None, input: Optional[str] = None,
               check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """The venv's Python inside the namespace (as ``user`` if given), from the repo root."""
        return self.run(sys.executable, *args, user=user, input=input, check=check, timeout=timeout)

    def start(self, args: Sequence[str], log_path: Path) -> Proc:
        return Proc(self.command(*args), log_path, cwd=REPO)

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


@contextlib.contextmanager
def namespaces(count: int) -> Iterator[List[Netns]]:
    """``count`` fresh namespaces with unique names, deleted afterwards whatever happens."""
    require_namespaces()
    made: List[Netns] = []
    try:
        for _ in range(count):
            ns = Netns(f"cmtest-{_RUN_TAG}-{next(_counter)}")
            made.append(ns)
            ns.create()
        yield made
    finally:
        for ns in made:
            ns.delete()


def veth(a: Netns, a_if: str, b: Netns, b_if: str) -> None:
    """A veth pair with one end in each namespace, both up."""
    a.run("ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name)
    a.run("ip", "link", "set", a_if, "up")
    b.run("ip", "link", "set", b_if, "up")
