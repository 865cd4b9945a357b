"""``commune-agent service install|remove|start|stop|status``: the agent as a Windows service.

Uses pywin32 (``pip install commune-monitor[windows]``), imported only here and only on
Windows. The service runs as a low-privilege account (``NT AUTHORITY\\LocalService`` by default),
reads ``%ProgramData%\\commune-monitor\\agent.yaml`` and keeps its queue under
``%ProgramData%\\commune-monitor\\agent``. Stopping the service sets the agent's stop event, the
same clean shutdown as SIGTERM on Linux.

ICMP on Windows goes through the ICMP API of iphlpapi.dll (agent/inputs/winicmp.py), which needs
no raw socket and no privilege, so the gateway and ICMP targets are pinged under LocalService too.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

SERVICE_NAME = "CommuneAgent"
DISPLAY_NAME = "commune-monitor agent"
DESCRIPTION = ("Monitors this PC, the office printers, routers and UPS, and the administrative "
               "software; pushes to the province collector.")
ACCOUNTS = {
    "LocalService": "NT AUTHORITY\\LocalService",
    "NetworkService": "NT AUTHORITY\\NetworkService",
    "LocalSystem": None,  # pywin32: no user name means LocalSystem
}


def program_data_dir(environ=os.environ) -> str:
    return os.path.join(environ.get("ProgramData", r"C:\ProgramData"), "commune-monitor")


def default_config_path(environ=os.environ) -> str:
    return os.path.join(program_data_dir(environ), "agent.yaml")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="commune-agent service",
                                description="Install, remove, start or stop the agent's Windows service.")
    p.add_argument("action", choices=["install", "remove", "start", "stop", "status"])
    p.add_argument("-c", "--config.file", dest="config", default=None,
                   help=r"config file (default: %%ProgramData%%\commune-monitor\agent.yaml)")
    p.add_argument("--account", choices=sorted(ACCOUNTS), default="LocalService",
                   help="service account (default: LocalService, a low-privilege built-in account)")
    return p


def main(argv: List[str]) -> int:
    args = parser().parse_args(argv)
    if sys.platform != "win32":
        print("commune-agent service manages the Windows service; on Linux use "
              "deploy/systemd/commune-agent.service (see docs/deploy.md)", file=sys.stderr)
        return 2
    try:
        import win32service  # noqa: F401  (pywin32)
        import win32serviceutil
    except ImportError:
        print("pywin32 is missing: pip install \"commune-monitor[windows]\"", file=sys.stderr)
        return 2
    config = args.config or default_config_path()
    if args.action == "install":
        from agent.config import load_config
        from agent.schema import ConfigErrors

        if os.path.exists(config):
            try:
                load_config(config)
            except ConfigErrors as exc:
                print(f"refusing to install: {config} is invalid:\n{exc}", file=sys.stderr)
                return 1
        os.makedirs(os.path.join(program_data_dir(), "agent"), exist_ok=True)
        win32serviceutil.InstallService(
            f"{__name__}.AgentService", SERVICE_NAME, DISPLAY_NAME,
            startType=win32service.SERVICE_AUTO_START, userName=ACCOUNTS[args.account],
            password=None, description=DESCRIPTION,
            exeArgs=None)
        win32serviceutil.SetServiceCustomOption(SERVICE_NAME, "config", config)
        print(f"installed {SERVICE_NAME} as {args.account}; config {config}; "
              f"start it with: commune-agent service start")
    elif args.action == "remove":
        win32serviceutil.RemoveService(SERVICE_NAME)
        print(f"removed {SERVICE_NAME}")
    elif args.action == "start":
        win32serviceutil.StartService(SERVICE_NAME)
    elif args.action == "stop":
        win32serviceutil.StopService(SERVICE_NAME)
    else:
        state = win32serviceutil.QueryServiceStatus(SERVICE_NAME)[1]
        print({1: "stopped", 2: "starting", 3: "stopping", 4: "running"}.get(state, f"state {state}"))
    return 0


def _service_class():
    """Built only on Windows, where pywin32's ServiceFramework exists."""
    import servicemanager
    import win32service
    import win32serviceutil

    class AgentService(win32serviceutil.ServiceFramework):
        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = DISPLAY_NAME
        _svc_description_ = DESCRIPTION

        def SvcDoRun(self) -> None:  # noqa: N802 (pywin32 names)
            from agent.app import run_agent, setup_logging
            from agent.config import load_config

            config_path: Optional[str] = win32serviceutil.GetServiceCustomOption(
                SERVICE_NAME, "config", default_config_path())
            config = load_config(config_path if os.path.exists(config_path) else None)
            setup_logging(config.agent.log_level)
            servicemanager.LogInfoMsg(f"{SERVICE_NAME} starting with {config_path}")
            run_agent(config)

        def SvcStop(self) -> None:  # noqa: N802
            from agent.app import STOP_HOOK

            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING)
            for stop in STOP_HOOK:
                stop()

        def SvcShutdown(self) -> None:  # noqa: N802
            # Defining it makes pywin32 accept SERVICE_CONTROL_SHUTDOWN: a Windows shutdown then
            # stops the agent cleanly (clean-shutdown marker written), not as a crash.
            self.SvcStop()

    return AgentService


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    try:
        AgentService = _service_class()
    except ImportError:
        pass
