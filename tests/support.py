"""Helpers the tests share: free ports, real processes started and always stopped, readiness polls."""
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

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SHARED_FIXTURES = SHARED / "fixtures"
LOCAL_FIXTURES = Path(__file__).resolve().parent / "fixtures"
VENV_BIN = Path(sys.executable).parent

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


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def need_binary(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} is not installed; tests/run.sh installs it (apt)")
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


# ---------------------------------------------------------------- Prometheus and friends

def start_prometheus(tmp: Path, *, scrape_configs: Optional[list] = None, rule_files: Sequence[Path] = (),
                     alertmanager: Optional[str] = None, extra: Optional[dict] = None,
                     evaluation_interval: str = "1s", ooo_window: str = "7d",
                     retention: Optional[str] = None) -> "tuple[Proc, str]":
    """Debian's Prometheus on a free loopback port with the remote-write receiver on.

    ``retention`` is ``--storage.tsdb.retention.time``: Prometheus's default (15d) deletes older data
    as soon as it is compacted into blocks, so a test writing older history must raise it.
    Returns (process, base URL). The caller stops the process (or use ``prometheus`` below).
    """
    import yaml

    binary = need_binary("prometheus")
    port = free_port()
    tmp = Path(tmp)
    (tmp / "prom-data").mkdir(parents=True, exist_ok=True)
    cfg = {
        "global": {"scrape_interval": "1s", "evaluation_interval": evaluation_interval},
        "storage": {"tsdb": {"out_of_order_time_window": ooo_window}},
        "scrape_configs": scrape_configs or [],
        "rule_files": [str(p) for p in rule_files],
    }
    if alertmanager:
        cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    cfg.update(extra or {})
    cfg_path = tmp / "prometheus.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    proc = Proc([binary, f"--config.file={cfg_path}", f"--storage.tsdb.path={tmp / 'prom-data'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver",
                 "--web.enable-lifecycle", "--rules.alert.resend-delay=1s", "--log.level=warn",
                 *([f"--storage.tsdb.retention.time={retention}"] if retention else [])],
                tmp / "prometheus.log")
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_http(url + "/-/ready")
    except BaseException:
        proc.stop()
        raise
    return proc, url


def prom_query(url: str, query: str, time_s: Optional[float] = None) -> list:
    """Instant query; returns the result vector (list of {metric, value})."""
    import json
    import urllib.parse

    params = {"query": query}
    if time_s is not None:
        params["time"] = str(time_s)
    body = json.loads(http_get(f"{url}/api/v1/query?{urllib.parse.urlencode(params)}", timeout=10))
    if body.get("status") != "success":
        raise AssertionError(f"query {query!r} failed: {body}")
    return body["data"]["result"]


def start_victoria_metrics(tmp: Path) -> "tuple[Proc, str]":
    binary = need_binary("victoria-metrics")
    port = free_port()
    data = Path(tmp) / "vm-data"
    data.mkdir(parents=True, exist_ok=True)
    proc = Proc([binary, f"-storageDataPath={data}", f"-httpListenAddr=127.0.0.1:{port}",
                 "-search.latencyOffset=0s", "-search.disableCache", "-loggerLevel=WARN"],
                Path(tmp) / "vm.log")
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_http(url + "/health")
    except BaseException:
        proc.stop()
        raise
    return proc, url
