"""``commune-agent service install|remove|start|stop|status``: the agent as a Windows service.

Uses pywin32 (``pip install commune-monitor[windows]``), imported only inside the functions that
talk to Windows (and in the WMI seam, ``agent/inputs/wmi.py``). Everything else here (the service body, the recovery settings, the status text,
the file permissions) is plain Python that runs and is tested on Linux.

- **The body** (:class:`ServiceBody`) runs the agent on the thread pywin32 gives ``SvcDoRun`` and
  is stopped by ``SvcStop``/``SvcShutdown`` from the control handler's thread through a
  :class:`contract.shutdown.Stopper` (signals cannot reach a thread that is not the main one). A
  config that does not load, or an agent that cannot start (a port in use), is reported to the
  Event Log and the log file and raised: pywin32 then reports the service stopped with an error,
  and the recovery actions below restart it.
- **Logs**: ``agent.log_file`` (default ``%ProgramData%\\commune-monitor\\agent\\logs\\agent.log``,
  10 MiB x 5 files), errors and start/stop also in the Application Event Log, source ``CommuneAgent``.
- **Recovery**: restart 10 s, 60 s and 5 min after a failure (the count resets after a day), also
  when the service stops with an error rather than crashing; automatic start, delayed (the PC's
  own services come first, and a slow old PC starts faster).
- **Account**: LocalSystem by default, like windows_exporter and the Zabbix agent. What decides
  it is what a default install must see: disk health (``MSFT_StorageReliabilityCounter`` and the
  failure-prediction status need an administrator), other users' command lines for the process
  checks, and the System event log. LocalService is offered for sites that accept losing those
  (the Windows ICMP API of iphlpapi.dll, agent/inputs/winicmp.py, needs no raw socket and
  works under any account). Under LocalService the disk reliability
  counters and the driver's failure prediction are expected to be refused (logged once per disk,
  agent/inputs/windisk.py) and only Windows' health verdict per disk remains.
- **Permissions**: ``install`` gives ``%ProgramData%\\commune-monitor`` (config with SNMP
  communities, token, queue, logs) to SYSTEM, Administrators and the service account only, with
  inheritance cut, so a clerk's account cannot read the secrets; enrollment does the same for the
  token file. Mode 0600 alone means nothing on NTFS.
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from contract.shutdown import Stopper

SERVICE_NAME = "CommuneAgent"
DISPLAY_NAME = "commune-monitor agent"
DESCRIPTION = ("Monitors this PC, the office printers, routers and UPS, and the administrative "
               "software; pushes to the province collector.")
# --account choice -> user name given to CreateService (None: LocalSystem)
ACCOUNTS = {
    "LocalSystem": None,
    "LocalService": "NT AUTHORITY\\LocalService",
    "NetworkService": "NT AUTHORITY\\NetworkService",
}
DEFAULT_ACCOUNT = "LocalSystem"
# Well-known SIDs (icacls takes them as *SID, whatever the language of Windows)
SID_SYSTEM = "S-1-5-18"
SID_ADMINISTRATORS = "S-1-5-32-544"
ACCOUNT_SIDS = {"LocalSystem": SID_SYSTEM, "LocalService": "S-1-5-19", "NetworkService": "S-1-5-20"}
# QueryServiceConfig's lpServiceStartName -> --account choice
_START_NAMES = {"localsystem": "LocalSystem", ".\\localsystem": "LocalSystem",
                "nt authority\\system": "LocalSystem",
                "nt authority\\localservice": "LocalService", "nt authority\\local service": "LocalService",
                "nt authority\\networkservice": "NetworkService",
                "nt authority\\network service": "NetworkService"}

# Recovery: seconds before each restart (the last repeats), and when the failure count resets.
RESTART_DELAYS = (10, 60, 300)
RESET_PERIOD = 86400
SC_ACTION_NONE, SC_ACTION_RESTART = 0, 1  # winsvc.h SC_ACTION_TYPE
_STATES = {1: "stopped", 2: "starting", 3: "stopping", 4: "running", 5: "resuming", 6: "pausing", 7: "paused"}
_START_TYPES = {2: "automatic", 3: "manual", 4: "disabled"}

log = logging.getLogger("agent")


def program_data_dir(environ: Mapping[str, str] = os.environ) -> str:
    return os.path.join(environ.get("ProgramData", r"C:\ProgramData"), "commune-monitor")


def default_config_path(environ: Mapping[str, str] = os.environ) -> str:
    return os.path.join(program_data_dir(environ), "agent.yaml")


# ---------------------------------------------------------------- the service body (any OS)

class ServiceBody:
    """What ``SvcDoRun`` runs; ``stop`` may be called from any thread, even before ``run``.

    ``report(level, message)`` reaches the Event Log on Windows (``servicemanager``): it is used for
    start and stop, and for an error before logging is set up. ``extra_handler`` is added to the
    log (on Windows: an Event Log handler for errors).
    """

    def __init__(self, config_path: str, report: Callable[[str, str], None],
                 extra_handler: Optional[logging.Handler] = None, listen_address: Optional[str] = None):
        self.config_path = config_path
        self.report = report
        self.extra_handler = extra_handler
        self.listen_address = listen_address
        self.stopper = Stopper()

    def run(self) -> None:
        from agent.app import run_agent
        from agent.config import load_config
        from agent.logs import setup_logging
        from contract.schema import ConfigErrors

        found = os.path.exists(self.config_path)
        try:
            config = load_config(self.config_path if found else None)
        except ConfigErrors as exc:
            self.report("error", f"{SERVICE_NAME} cannot start: {self.config_path} is invalid:\n{exc}")
            raise
        a = config.agent
        problem = setup_logging(a.log_level, a.log_file, a.log_file_max_size, a.log_file_count,
                                extra=self.extra_handler)
        if problem:
            self.report("warning", problem)
        source = self.config_path if found else f"defaults ({self.config_path} does not exist)"
        self.report("info", f"{SERVICE_NAME} starting with {source}; log file {a.log_file or 'none'}")
        log.info("service starting with %s", source)
        try:
            run_agent(config, self.listen_address, self.stopper)
        except Exception as exc:
            log.error("service stopped on an error: %s", _describe(exc), exc_info=True)
            raise
        self.report("info", f"{SERVICE_NAME} stopped")

    def stop(self) -> None:
        self.stopper.request()


def _describe(exc: BaseException) -> str:
    errors = getattr(exc, "errors", None)
    if errors:  # ConfigErrors from an input that refused to start
        return "; ".join(str(e) for e in errors)
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------- pure settings and texts

def failure_actions() -> Dict[str, object]:
    """SERVICE_FAILURE_ACTIONS as pywin32's ChangeServiceConfig2 takes it."""
    return {"ResetPeriod": RESET_PERIOD, "RebootMsg": None, "Command": None,
            "Actions": [(SC_ACTION_RESTART, delay * 1000) for delay in RESTART_DELAYS]}


def account_of(start_name: Optional[str]) -> Optional[str]:
    """The --account choice for a service's lpServiceStartName, None for another account."""
    return _START_NAMES.get((start_name or "LocalSystem").strip().lower())


def acl_grants(account: Optional[str]) -> List[str]:
    """SIDs given full control of the data: SYSTEM, Administrators, and the service account."""
    sids = [SID_SYSTEM, SID_ADMINISTRATORS]
    sid = ACCOUNT_SIDS.get(account or "")
    if sid and sid not in sids:
        sids.append(sid)
    return sids


def icacls_command(path: str, sids: Sequence[str], directory: bool) -> List[str]:
    """icacls argv: inheritance cut, these SIDs only (inherited by what the directory holds)."""
    inherit = "(OI)(CI)" if directory else ""
    return ["icacls", path, "/inheritance:r", "/grant:r", *[f"*{sid}:{inherit}F" for sid in sids], "/Q"]


def describe_service(state: int, config: Sequence, actions: Optional[Mapping], on_error_too: bool,
                     delayed: bool, config_path: str) -> str:
    """``service status`` text from QueryServiceStatus, QueryServiceConfig and QueryServiceConfig2."""
    start = _START_TYPES.get(config[1], f"start type {config[1]}")
    if config[1] == 2 and delayed:
        start += " (delayed)"
    lines = [f"{SERVICE_NAME}: {_STATES.get(state, f'state {state}')}",
             f"start: {start}",
             f"account: {config[7] or 'LocalSystem'}",
             f"command: {config[3]}",
             f"config: {config_path}"]
    steps = [a for a in (actions or {}).get("Actions") or () if a[0] != SC_ACTION_NONE]
    if steps:
        told = ", ".join(("restart" if kind == SC_ACTION_RESTART else f"action {kind}") + f" after {ms // 1000}s"
                         for kind, ms in steps)
        reset = (actions or {}).get("ResetPeriod")
        lines.append(f"on failure: {told}; count reset after {reset}s"
                     + ("" if on_error_too else "; only on a crash, not on a stop with an error"))
    else:
        lines.append("on failure: nothing (no recovery actions: install again to set them)")
    return "\n".join(lines)


# ---------------------------------------------------------------- Windows I/O

def restrict(path: str, account: Optional[str], directory: bool,
             run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> Optional[str]:
    """Windows: give ``path`` to SYSTEM, Administrators and ``account`` only; the error text or None."""
    argv = icacls_command(path, acl_grants(account), directory)
    try:
        done = run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot restrict {path}: {exc}"
    if done.returncode != 0:
        return f"cannot restrict {path}: icacls exited {done.returncode}: {(done.stderr or done.stdout).strip()}"
    return None


def installed_account() -> Optional[str]:
    """Windows: the --account choice the installed service runs as (None: not installed/unknown)."""
    import win32service

    try:
        hscm = win32service.OpenSCManager(None, None, win32service.SC_MANAGER_CONNECT)
        try:
            hs = win32service.OpenService(hscm, SERVICE_NAME, win32service.SERVICE_QUERY_CONFIG)
            try:
                return account_of(win32service.QueryServiceConfig(hs)[7])
            finally:
                win32service.CloseServiceHandle(hs)
        finally:
            win32service.CloseServiceHandle(hscm)
    except win32service.error:
        return None


def _set_recovery(win32service) -> None:
    hscm = win32service.OpenSCManager(None, None, win32service.SC_MANAGER_ALL_ACCESS)
    try:
        hs = win32service.OpenService(hscm, SERVICE_NAME, win32service.SERVICE_ALL_ACCESS)
        try:
            win32service.ChangeServiceConfig2(hs, win32service.SERVICE_CONFIG_FAILURE_ACTIONS, failure_actions())
            # also when the service stops with an error code, not only when its process crashes
            win32service.ChangeServiceConfig2(hs, win32service.SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, True)
        finally:
            win32service.CloseServiceHandle(hs)
    finally:
        win32service.CloseServiceHandle(hscm)


def _status(win32service, win32serviceutil) -> str:
    hscm = win32service.OpenSCManager(None, None, win32service.SC_MANAGER_CONNECT)
    try:
        hs = win32service.OpenService(hscm, SERVICE_NAME,
                                      win32service.SERVICE_QUERY_CONFIG | win32service.SERVICE_QUERY_STATUS)
        try:
            state = win32service.QueryServiceStatus(hs)[1]
            config = win32service.QueryServiceConfig(hs)
            actions = win32service.QueryServiceConfig2(hs, win32service.SERVICE_CONFIG_FAILURE_ACTIONS)
            flag = win32service.QueryServiceConfig2(hs, win32service.SERVICE_CONFIG_FAILURE_ACTIONS_FLAG)
            delayed = win32service.QueryServiceConfig2(hs, win32service.SERVICE_CONFIG_DELAYED_AUTO_START_INFO)
        finally:
            win32service.CloseServiceHandle(hs)
    finally:
        win32service.CloseServiceHandle(hscm)
    path = win32serviceutil.GetServiceCustomOption(SERVICE_NAME, "config", default_config_path())
    return describe_service(state, config, actions, bool(flag), bool(delayed), path)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="commune-agent service",
                                description="Install, remove, start or stop the agent's Windows service.")
    p.add_argument("action", choices=["install", "remove", "start", "stop", "status"])
    p.add_argument("-c", "--config.file", dest="config", default=None,
                   help=r"config file (default: %%ProgramData%%\commune-monitor\agent.yaml)")
    p.add_argument("--account", choices=sorted(ACCOUNTS), default=DEFAULT_ACCOUNT,
                   help="service account (default: LocalSystem, which reads disk health, other users' "
                        "processes and the System log; LocalService sees less)")
    return p


def main(argv: List[str]) -> int:
    args = parser().parse_args(argv)
    if sys.platform != "win32":
        print("commune-agent service manages the Windows service; on Linux use "
              "deploy/systemd/commune-agent.service (see docs/deploy.md)", file=sys.stderr)
        return 2
    try:
        import win32service  # pywin32
        import win32serviceutil
    except ImportError:
        print("pywin32 is missing: pip install \"commune-monitor[windows]\"", file=sys.stderr)
        return 2
    config = args.config or default_config_path()
    try:
        if args.action == "install":
            return _install(args, config, win32service, win32serviceutil)
        if args.action == "remove":
            win32serviceutil.RemoveService(SERVICE_NAME)
            print(f"removed {SERVICE_NAME}")
        elif args.action == "start":
            win32serviceutil.StartService(SERVICE_NAME)
        elif args.action == "stop":
            win32serviceutil.StopService(SERVICE_NAME)
        else:
            print(_status(win32service, win32serviceutil))
    except win32service.error as exc:  # pywintypes.error: (winerror, function, message)
        print(f"service {args.action}: {exc.strerror} ({exc.funcname}, error {exc.winerror})", file=sys.stderr)
        return 1
    return 0


def _install(args, config: str, win32service, win32serviceutil) -> int:
    from agent.config import load_config
    from contract.schema import ConfigErrors

    if os.path.exists(config):
        try:
            load_config(config)
        except ConfigErrors as exc:
            print(f"refusing to install: {config} is invalid:\n{exc}", file=sys.stderr)
            return 1
    data = program_data_dir()
    os.makedirs(os.path.join(data, "agent", "logs"), exist_ok=True)
    win32serviceutil.InstallService(
        f"{__name__}.AgentService", SERVICE_NAME, DISPLAY_NAME,
        startType=win32service.SERVICE_AUTO_START, delayedstart=True, userName=ACCOUNTS[args.account],
        password=None, description=DESCRIPTION, exeArgs=None)
    win32serviceutil.SetServiceCustomOption(SERVICE_NAME, "config", config)
    _set_recovery(win32service)
    problem = restrict(data, args.account, directory=True)
    token = os.path.join(data, "agent", "push.token")  # enrolled before: its own ACL, for this account
    if not problem and os.path.exists(token):
        problem = restrict(token, args.account, directory=False)
    if problem:
        print(f"warning: {problem}: other users of this PC may read the config and the token",
              file=sys.stderr)
    print(f"installed {SERVICE_NAME} as {args.account} (automatic, delayed start; restarts after "
          f"{', '.join(f'{d}s' for d in RESTART_DELAYS)} on failure); config {config}; "
          f"start it with: commune-agent service start")
    return 0


def _service_class():
    """Built only on Windows, where pywin32's ServiceFramework exists."""
    import servicemanager
    import win32service
    import win32serviceutil

    def report(level: str, message: str) -> None:
        {"info": servicemanager.LogInfoMsg, "warning": servicemanager.LogWarningMsg,
         "error": servicemanager.LogErrorMsg}[level](message)

    def event_log_handler() -> Optional[logging.Handler]:
        try:
            handler = logging.handlers.NTEventLogHandler(SERVICE_NAME)
        except Exception as exc:  # no right to register the source: the file still has everything
            report("warning", f"errors will not reach the Event Log: {exc}")
            return None
        handler.setLevel(logging.ERROR)
        return handler

    class AgentService(win32serviceutil.ServiceFramework):
        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = DISPLAY_NAME
        _svc_description_ = DESCRIPTION

        def __init__(self, args: Tuple) -> None:
            super().__init__(args)
            path = win32serviceutil.GetServiceCustomOption(SERVICE_NAME, "config", default_config_path())
            self.body = ServiceBody(path, report, event_log_handler())

        def SvcDoRun(self) -> None:  # noqa: N802 (pywin32 names)
            self.body.run()

        def SvcStop(self) -> None:  # noqa: N802
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=30000)
            self.body.stop()

        def SvcShutdown(self) -> None:  # noqa: N802
            # Defining it makes pywin32 accept SERVICE_CONTROL_SHUTDOWN: a Windows shutdown then
            # stops the agent cleanly (clean-shutdown marker written), not as a crash.
            self.SvcStop()

    return AgentService


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import logging.handlers

    try:
        AgentService = _service_class()
    except ImportError:
        pass
