"""``commune-collector``: run the ingest gateway, check its config, manage agent tokens.

    commune-collector [serve] [-c FILE]
    commune-collector --config.check [-c FILE]
    commune-collector token add --commune CODE --agent NAME [--pull-address HOST:PORT] [-c FILE]
    commune-collector token list [-c FILE]
    commune-collector token revoke ID [-c FILE]
    commune-collector enroll-key create --commune CODE [--uses N] [--ttl 7d] [-c FILE]
    commune-collector enroll-key list [-c FILE]
    commune-collector enroll-key revoke ID [-c FILE]
    commune-collector signing-key create|list|publish-revocations [-c FILE]   (collector.credentials)
    commune-collector profiles check|show [-c FILE] [--dir DIR]   (collector.profiles)
    commune-collector SUBCOMMAND ...      (see SUBCOMMANDS)
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from typing import List, Optional

from collector import __version__

ENV_CONFIG = "COMMUNE_COLLECTOR_CONFIG"
DEFAULT_CONFIG = "/etc/commune-monitor/collector.yaml"

# name -> "module:function"; each function takes argv (the words after the name) and returns an
# exit code. Other parts of the central side add their own lines here.
SUBCOMMANDS = {
    "serve": "collector.cli:serve_main",
    "token": "collector.cli:token_main",
    "enroll-key": "collector.cli:enroll_key_main",
    "signing-key": "collector.credentials:signing_key_main",
    "dashboards": "dashboards.__main__:main",
    "status": "collector.status:main",
    "report": "collector.report:main",
    "silence": "collector.silence:main",
    "fleet": "collector.fleet_cli:main",
    "profiles": "collector.profiles:main",
}


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        module, func = SUBCOMMANDS[argv[0]].split(":")
        return getattr(importlib.import_module(module), func)(argv[1:])
    if argv and not argv[0].startswith("-"):
        print(f"commune-collector: unknown subcommand {argv[0]!r} (known: {', '.join(sorted(SUBCOMMANDS))})",
              file=sys.stderr)
        return 2
    return serve_main(argv)


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config.file", dest="config", metavar="FILE",
                   default=os.environ.get(ENV_CONFIG, DEFAULT_CONFIG),
                   help=f"collector YAML config (default: ${ENV_CONFIG} or {DEFAULT_CONFIG})")


def _load(path: str):
    """The loaded config, or None after printing every error to stderr."""
    from contract.schema import ConfigErrors
    from collector.config import load_config

    try:
        return load_config(path)
    except ConfigErrors as exc:
        for err in exc.errors:
            print(err, file=sys.stderr)
        print(f"config check failed: {len(exc.errors)} error(s)", file=sys.stderr)
        return None


def serve_main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(
        prog="commune-collector",
        description="commune-monitor collector: authenticated remote-write ingest gateway, agent "
                    "enrollment and http_sd.",
        epilog="Subcommands: " + ", ".join(sorted(SUBCOMMANDS)) + ".")
    _config_arg(p)
    p.add_argument("--config.check", dest="check", action="store_true",
                   help="validate the config, print every error with its path, and exit")
    p.add_argument("--web.listen-address", dest="listen", metavar="HOST:PORT",
                   help="overrides web.listen_address")
    p.add_argument("--log.level", dest="log_level", choices=["debug", "info", "warning", "error"],
                   help="overrides log_level")
    p.add_argument("--version", action="version", version=f"commune-collector {__version__}")
    args = p.parse_args(argv)
    config = _load(args.config)
    if config is None:
        return 1
    if args.listen:
        from collector.config import check_listen_override

        problem = check_listen_override(config, args.listen)
        if problem:
            print(f"--web.listen-address: {problem}", file=sys.stderr)
            return 2
        config.web.listen_address = args.listen
    if args.check:
        print(f"config {args.config} is valid")
        return 0

    from collector.workers import run_collector, setup_logging

    setup_logging(args.log_level or config.log_level)
    return run_collector(config)


def _store(args):
    """The token store named by ``--state.dir`` (random tokens), or by the config file (tokens
    signed and revocations published as its ``credentials`` section says)."""
    from collector.credentials import from_config
    from collector.state import Store

    if args.state_dir:
        return Store(args.state_dir)
    config = _load(args.config)
    if config is None:
        return None
    return from_config(config).store


def _state_args(p: argparse.ArgumentParser) -> None:
    _config_arg(p)
    p.add_argument("--state.dir", dest="state_dir", metavar="DIR",
                   help="state directory (default: state.dir of the config file)")


def token_main(argv: List[str]) -> int:
    from collector.state import StateError, check_address, check_name

    p = argparse.ArgumentParser(prog="commune-collector token",
                                description="Manage the bearer tokens agents push with (stored hashed).")
    sub = p.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="create a token for one agent and print it once")
    add.add_argument("--commune", required=True, help="commune code the agent writes as")
    add.add_argument("--agent", required=True, help="agent name stamped on its series")
    add.add_argument("--pull-address", default="", metavar="HOST:PORT",
                     help="where Prometheus can scrape the agent (listed by /api/v1/sd)")
    add.add_argument("--replace", action="store_true",
                     help="revoke the live token of this agent name first (a reinstalled PC); without it a "
                          "name that has one is refused")
    _state_args(add)
    lst = sub.add_parser("list", help="list tokens (never the secrets)")
    lst.add_argument("--all", action="store_true", help="include revoked tokens")
    _state_args(lst)
    rev = sub.add_parser("revoke", help="revoke a token by its id")
    rev.add_argument("id")
    _state_args(rev)
    args = p.parse_args(argv)

    store = _store(args)
    if store is None:
        return 1
    try:
        if args.action == "add":
            check_name("commune", args.commune)
            check_name("agent", args.agent)
            if args.pull_address:
                check_address(args.pull_address)
            record, token = store.add_token(args.commune, args.agent, pull_address=args.pull_address,
                                            source="cli", replace=args.replace)
            print(f"token id {record['id']} for commune {record['commune']} agent {record['agent']}; "
                  "shown once, give it to the agent:", file=sys.stderr)
            print(token)
        elif args.action == "list":
            rows = store.list_tokens(include_revoked=args.all)
            print(f"{'ID':<14} {'COMMUNE':<12} {'AGENT':<24} {'CREATED':<20} {'STATE':<8} PULL ADDRESS")
            for r in rows:
                state = "revoked" if r.get("revoked") else "active"
                print(f"{r['id']:<14} {r['commune']:<12} {r['agent']:<24} {_when(r['created']):<20} "
                      f"{state:<8} {r.get('pull_address') or '-'}")
        else:
            record = store.revoke_token(args.id)
            print(f"revoked token {record['id']} (commune {record['commune']} agent {record['agent']})")
    except StateError as exc:
        print(f"commune-collector token {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def enroll_key_main(argv: List[str]) -> int:
    from contract.schema import parse_duration
    from collector.state import StateError, check_name

    p = argparse.ArgumentParser(prog="commune-collector enroll-key",
                                description="Enrollment keys: an agent trades one for its own token; a key "
                                            "serves one PC or, with --uses, a commune's roll-out.")
    sub = p.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create a key bound to a commune and print it once")
    create.add_argument("--commune", required=True, help="commune code the enrolled agents write as")
    create.add_argument("--uses", type=int, default=1,
                        help="how many agents may enroll with it (default 1; e.g. 60 for a commune's PCs)")
    create.add_argument("--ttl", "--expires", dest="ttl", default="7d",
                        help="how long the key stays valid (default 7d)")
    _state_args(create)
    lst = sub.add_parser("list", help="list keys (never the secrets)")
    _state_args(lst)
    revoke = sub.add_parser("revoke", help="stop a key enrolling more agents (those enrolled keep their tokens)")
    revoke.add_argument("id", help="key id, as enroll-key list shows it")
    _state_args(revoke)
    args = p.parse_args(argv)

    store = _store(args)
    if store is None:
        return 1
    try:
        if args.action == "create":
            check_name("commune", args.commune)
            try:
                ttl = parse_duration(args.ttl)
            except ValueError as exc:
                raise StateError(f"--ttl: {exc}") from None
            if ttl <= 0:
                raise StateError("--ttl: must be greater than 0s")
            record, key = store.add_enroll_key(args.commune, ttl, args.uses)
            uses = "once" if args.uses == 1 else f"by {args.uses} agents"
            print(f"enrollment key {record['id']} for commune {record['commune']}, valid until "
                  f"{_when(record['expires'])} UTC, usable {uses}; shown once:", file=sys.stderr)
            print(key)
        elif args.action == "revoke":
            record = store.revoke_enroll_key(args.id)
            print(f"revoked enrollment key {record['id']} of commune {record['commune']} "
                  f"({len(record['used_by'])} of {record['uses']} uses spent; those agents keep their tokens)")
        else:
            now = time.time()
            print(f"{'ID':<14} {'COMMUNE':<12} {'EXPIRES (UTC)':<20} {'USES':<9} STATE")
            for r in store.list_enroll_keys():
                spent = len(r["used_by"])
                state = ("revoked" if r.get("revoked") else "used up" if spent >= r["uses"] else
                         "expired" if r["expires"] <= now else "usable")
                last = f"; last: {r['used_by'][-1]}" if spent else ""
                uses = f"{spent}/{r['uses']}"
                print(f"{r['id']:<14} {r['commune']:<12} {_when(r['expires']):<20} {uses:<9} {state}{last}")
    except StateError as exc:
        print(f"commune-collector enroll-key {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))
