"""Free loopback ports, real processes started and always stopped, readiness polls."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class MissingBinary(RuntimeError):
    """A program the harness needs is not installed."""


def need_binary(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise MissingBinary(f"{name} is not installed; tests/run.sh installs it (apt)")
    return path


def wait_until(check: Callable[[], object], timeout: float = 30.0, interval: float = 0.1,
               what: str = "condition") -> object:
    """Poll ``check`` until it returns something truthy; fail the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the thing is not up yet
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_exc})" if last_exc else ""))


def http_get(url: str, timeout: float = 5.0, headers: Optional[dict] = None) -> bytes:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


def http_ok(url: str) -> bool:
    try:
        http_get(url, timeout=2)
        return True
    except Exception:
        return False


class Proc:
    """A real process started by a test; ``stop()`` ends it and its process group."""

    def __init__(self, args: Sequence[str], log_path: Path, env: Optional[dict] = None,
                 cwd: Optional[Path] = None):
        self.args = [str(a) for a in args]
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                      start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_http(self, url: str, timeout: float = 30.0) -> None:
        def ready():
            if not self.alive():
                raise AssertionError(f"{self.args[0]} exited with {self.popen.returncode}:\n{self.log()[-3000:]}")
            return http_ok(url)

        try:
            wait_until(ready, timeout, what=f"{url} of {Path(self.args[0]).name}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- log ---\n{self.log()[-3000:]}") from None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> int:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()
        return self.popen.returncode


@contextlib.contextmanager
def running(args: Sequence[str], log_path: Path, **kw) -> Iterator[Proc]:
    proc = Proc(args, log_path, **kw)
    try:
        yield proc
    finally:
        proc.stop()


def agent_command() -> List[str]:
    """The installed console script of the agent, from the same venv as the tests."""
    script = VENV_BIN / "commune-agent"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent"]


def collector_command() -> List[str]:
    """The installed console script of the collector, from the same venv."""
    script = VENV_BIN / "commune-collector"
    return [str(script)] if script.exists() else [sys.executable, "-m", "collector"]


def free_udp_port(hosts: Sequence[str] = ("127.0.0.1",)) -> int:
    """A UDP port free on every one of ``hosts``."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
        try:
            for h in hosts[1:]:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind((h, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no common free UDP port")
