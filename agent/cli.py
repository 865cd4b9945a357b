"""``commune-agent``: run the agent, check its config, or run one of its subcommands.

    commune-agent [-c FILE] [--web.listen-address HOST:PORT] [--log.level LEVEL]
    commune-agent --config.check [-c FILE]
    commune-agent SUBCOMMAND ...      (see SUBCOMMANDS)
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from agent import __version__



def _discover(argv: List[str]) -> int:
    from agent.tools import discover_main
    return discover_main(argv)


def _icmp(argv: List[str]) -> int:
    from agent.tools import icmp_main
    return icmp_main(argv)


def _enroll(argv: List[str]) -> int:
    from agent.enroll import main as enroll_main
    return enroll_main(argv)


def _service(argv: List[str]) -> int:
    from agent.winservice import main as service_main
    return service_main(argv)


# name -> function(argv: the words after the name) -> exit code; each imports its module when run
SUBCOMMANDS = {"discover": _discover, "icmp": _icmp, "enroll": _enroll, "service": _service}

ENV_CONFIG = "COMMUNE_AGENT_CONFIG"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="commune-agent",
        description="commune-monitor agent: host health, probes and SNMP polling; serves /metrics "
                    "and pushes to the collector.",
        epilog="Subcommands: " + (", ".join(sorted(SUBCOMMANDS)) or "none") +
               f". Without -c the agent reads ${ENV_CONFIG} if set, else runs on defaults.")
    p.add_argument("-c", "--config.file", dest="config", metavar="FILE",
                   default=os.environ.get(ENV_CONFIG) or None, help="agent YAML config (default: built-in defaults)")
    p.add_argument("--config.check", dest="check", action="store_true",
                   help="validate the config, print every error with its path, and exit")
    p.add_argument("--web.listen-address", dest="listen", metavar="HOST:PORT",
                   help="address for /metrics (overrides web.listen_address)")
    p.add_argument("--log.level", dest="log_level", choices=["debug", "info", "warning", "error"],
                   help="overrides agent.log_level")
    p.add_argument("--version", action="version", version=f"commune-agent {__version__}")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:])
    args = parser().parse_args(argv)

    from agent.config import load_config
    from contract.listener import split_listen_address
    from contract.schema import ConfigErrors

    try:
        config = load_config(args.config)
        if args.listen:
            split_listen_address(args.listen)
            config.web.listen_address = args.listen
            problems = [f"--web.listen-address: {msg}" for _, msg in config.web.validate()]
            if problems:
                print("\n".join(problems), file=sys.stderr)
                return 2
    except ConfigErrors as exc:
        for err in exc.errors:
            print(err, file=sys.stderr)
        print(f"config check failed: {len(exc.errors)} error(s)", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"--web.listen-address: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"config {args.config or '(defaults)'} is valid")
        return 0

    from agent.app import run_agent
    from agent.logs import setup_logging

    setup_logging(args.log_level or config.agent.log_level, config.agent.log_file,
                  config.agent.log_file_max_size, config.agent.log_file_count)
    try:
        return run_agent(config, args.listen)
    except ConfigErrors as exc:  # an input refused to start, e.g. icmp without socket privileges
        for err in exc.errors:
            print(err, file=sys.stderr)
        print(f"cannot start: {len(exc.errors)} error(s)", file=sys.stderr)
        return 1
