"""``commune-agent enroll``: trade a one-time enrollment key for this agent's push token.

    commune-agent enroll --collector https://collector.example:9722 --key KEY [-c agent.yaml]

Calls the collector's ``POST /api/v1/enroll`` with ``{"key": KEY, "agent": <agent.id>}``; the
answer ``{"token": ..., "commune": ..., "agent": ...}`` gives the bearer token, which is written
(mode 0600, atomically, fsynced) to ``push.token_file`` (default ``<agent.state_dir>/push.token``).
A running agent picks the new token up at its next push. TLS uses the config's ``push.ca_file``
and ``push.pin_sha256`` unless given here. The key may come from ``$COMMUNE_ENROLL_KEY`` instead
of the command line (which other users can see). The token itself is never printed.
"""
from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import http.client
from typing import List, Optional

from contract.names import name_problem

ENV_KEY = "COMMUNE_ENROLL_KEY"


def parser() -> argparse.ArgumentParser:
    from agent.cli import ENV_CONFIG

    p = argparse.ArgumentParser(prog="commune-agent enroll",
                                description="Exchange a one-time enrollment key for this agent's push token.")
    p.add_argument("--collector", required=True, metavar="URL",
                   help="collector base URL, e.g. https://collector.example:9722")
    p.add_argument("--key", default=os.environ.get(ENV_KEY), metavar="KEY",
                   help=f"one-time enrollment key (default: ${ENV_KEY})")
    p.add_argument("-c", "--config.file", dest="config", metavar="FILE", default=os.environ.get(ENV_CONFIG),
                   help="agent YAML config (agent.id, agent.state_dir, push TLS options)")
    p.add_argument("--ca-file", dest="ca_file", help="overrides push.ca_file")
    p.add_argument("--pin-sha256", dest="pin_sha256", help="overrides push.pin_sha256")
    p.add_argument("--agent-id", dest="agent_id", help="overrides agent.id")
    p.add_argument("--replace", action="store_true",
                   help="this PC takes over the name of one enrolled before (reinstalled or replaced): the "
                        "collector revokes the old token; without it a name in use is refused")
    p.add_argument("--suffix", action="store_true",
                   help="when the name is in use, take the first free NAME-2, NAME-3... instead of refusing "
                        "(the collector stamps that name on everything this PC writes)")
    return p


def enroll(client, key: str, agent_id: str, replace: bool = False, suffix: bool = False) -> dict:
    """POST the key; returns the collector's answer or raises RuntimeError with its reason."""
    request = {"key": key, "agent": agent_id}
    if replace:
        request["replace"] = True
    if suffix:
        request["suffix"] = True
    body = json.dumps(request).encode()
    resp = client.request("POST", _enroll_path(client), body, {"Content-Type": "application/json",
                                                               "Accept": "application/json"})
    text = resp.body.decode("utf-8", "replace")
    if resp.status != 200:
        try:
            reason = json.loads(text).get("error") or text
        except (ValueError, AttributeError):
            reason = text
        hint = ""
        if resp.status == 409:
            hint = (" (the key was not used; enroll again with --replace if this PC replaces that agent, "
                    "or --suffix to take the next free name)")
        raise RuntimeError(f"the collector refused the enrollment: HTTP {resp.status} {reason.strip()[:300]}{hint}")
    try:
        answer = json.loads(text)
    except ValueError:
        raise RuntimeError("the collector's answer is not JSON") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("token"), str) or not answer["token"]:
        raise RuntimeError("the collector's answer has no token")
    return answer


def _enroll_path(client) -> str:
    base = client.path.rstrip("/")
    if base.endswith("/api/v1/write"):  # the push URL given instead of the collector's base URL
        base = base[: -len("/api/v1/write")]
    return base + "/api/v1/enroll"


def write_token(path: str, token: str) -> None:
    """Write the token with :func:`write_private`."""
    write_private(path, (token + "\n").encode())


def write_private(path: str, data: bytes) -> None:
    """Write atomically with mode 0600 and fsync, so a power cut leaves the old or the new file.

    On Windows, where the mode means nothing, the empty file is first given to SYSTEM,
    Administrators and the service's account only (agent/winservice.py), then the token written.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    if sys.platform == "win32":
        os.close(fd)
        from agent import winservice

        problem = winservice.restrict(tmp, winservice.installed_account() or winservice.DEFAULT_ACCOUNT,
                                      directory=False)
        if problem:
            os.unlink(tmp)
            raise RuntimeError(f"{problem}: {os.path.basename(path)} was not saved")
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if hasattr(os, "O_DIRECTORY"):
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    if not args.key:
        print(f"commune-agent enroll: --key (or ${ENV_KEY}) is required", file=sys.stderr)
        return 2

    from agent.config import load_config
    from agent.push import token_path
    from contract.schema import ConfigErrors
    from agent.shipper import HttpClient

    try:
        config = load_config(args.config)
    except ConfigErrors as exc:
        for err in exc.errors:
            print(err, file=sys.stderr)
        return 1
    section = config.push
    agent_id = args.agent_id or config.agent.id
    problem = name_problem("agent", agent_id)
    if problem:
        print(f"commune-agent enroll: {'--agent-id' if args.agent_id else 'agent.id'}: {problem}", file=sys.stderr)
        return 2
    try:
        client = HttpClient(args.collector, timeout=section.timeout,
                            ca_file=section.ca_file if args.ca_file is None else args.ca_file,
                            pin_sha256=section.pin_sha256 if args.pin_sha256 is None else args.pin_sha256)
    except ValueError as exc:
        print(f"commune-agent enroll: --collector: {exc}", file=sys.stderr)
        return 2
    try:
        answer = enroll(client, args.key, agent_id, replace=args.replace, suffix=args.suffix)
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        print(f"commune-agent enroll: cannot reach {args.collector}: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"commune-agent enroll: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    path = token_path(section, config.agent.state_dir)
    try:
        write_token(path, answer["token"])
    except (OSError, RuntimeError) as exc:
        print(f"commune-agent enroll: enrolled, but the token could not be saved to {path}: {exc}; "
              f"fix that and enroll again with a new key, --agent-id {answer.get('agent', agent_id)} and --replace",
              file=sys.stderr)
        return 1
    print(f"enrolled as agent {answer.get('agent', agent_id)!r} of commune {answer.get('commune', '?')!r}; "
          f"token saved to {path}")
    if not section.enabled:
        print(f"next: set push.enabled: true and push.url: {args.collector.rstrip('/')}/api/v1/write "
              f"in the agent config, then restart the agent")
    return 0
