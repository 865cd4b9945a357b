"""Steps of install.cmd that are safer in Python than in cmd. Runs under the bundle's Python.

    install_steps.py verify BUNDLE_DIR         every file of SHA256SUMS is there with its hash
    install_steps.py write-config --out FILE --collector URL --account NAME --state-dir DIR
                                               agent.yaml for push to the collector, only if FILE is absent
    install_steps.py enrolled CONFIG           exit 0 when CONFIG has a push token (file or bearer_token)
    install_steps.py enroll --config CONFIG [--collector URL] [--replace]
                                               enroll unless enrolled: exit 0 enrolled (now or before),
                                               3 not enrolled for want of a key, 1 or 2 refused/failed

The enrollment key comes only from $COMMUNE_ENROLL_KEY (install.cmd sets it from /key), is handed
to ``commune-agent enroll`` inside this process and is never printed or written.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from typing import List, Optional

MANIFEST = "SHA256SUMS"
ACCOUNTS = ("LocalService", "NetworkService", "LocalSystem")


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(bundle: str) -> List[str]:
    """Problems found against the manifest (empty when the bundle is whole)."""
    manifest = os.path.join(bundle, MANIFEST)
    if not os.path.isfile(manifest):
        return [f"{manifest} is missing"]
    problems = []
    with open(manifest, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            expected, sep, name = line.partition("  ")
            if not sep or len(expected) != 64:
                problems.append(f"{MANIFEST} line {number} is not '<sha256>  <path>'")
                continue
            path = os.path.join(bundle, *name.split("/"))
            if not os.path.isfile(path):
                problems.append(f"{name} is missing")
            elif sha256_file(path) != expected:
                problems.append(f"{name} is damaged (SHA-256 differs from {MANIFEST})")
    return problems


def push_url(collector: str) -> str:
    """The remote-write URL for a collector base URL (or the write URL itself)."""
    url = collector.strip().rstrip("/")
    if not url.startswith(("https://", "http://")) or any(c.isspace() for c in url) or "${" in url:
        raise ValueError(f"the collector URL must be http(s)://HOST[:PORT], got {collector!r}")
    if not url.endswith("/api/v1/write"):
        url += "/api/v1/write"
    return url


def config_text(collector: str, account: str, state_dir: str, bundle_id: str) -> str:
    if account not in ACCOUNTS:
        raise ValueError(f"the service account must be one of {', '.join(ACCOUNTS)}, got {account!r}")
    # JSON strings are valid YAML double-quoted scalars; the agent's loader expands ${...}, so a
    # literal $ is written as $$.
    def quoted(value: str) -> str:
        return json.dumps(value.replace("$", "$$"))

    lines = [
        f"# Written by install.cmd of the commune-monitor offline bundle {bundle_id}, once: a file",
        "# already here is never overwritten. Every option not set here keeps its default;",
        "# config/agent.example.yaml of the project documents them all.",
        "agent:",
        f"  state_dir: {quoted(state_dir)}",
        "push:",
        "  enabled: true",
        f"  url: {quoted(push_url(collector))}",
    ]
    if account != "LocalSystem":
        lines += [
            "icmp:",
            f"  # The service runs as {account}, which cannot open the raw sockets ICMP needs on",
            "  # Windows. Reinstall with /account LocalSystem to ping the gateway and ICMP targets.",
            "  enabled: false",
        ]
    return "\n".join(lines) + "\n"


def write_config(out: str, collector: Optional[str], account: str, state_dir: str, bundle_id: str) -> int:
    if os.path.exists(out):
        print(f"{out} exists: kept as it is")
        return 0
    if not collector:
        print(f"{out} does not exist and no collector URL was given (/collector URL or "
              "COMMUNE_COLLECTOR_URL): cannot write the agent config", file=sys.stderr)
        return 2
    try:
        text = config_text(collector, account, state_dir, bundle_id)
    except ValueError as exc:
        print(f"cannot write {out}: {exc}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out)
    print(f"wrote {out} (push to {push_url(collector)})")
    return 0


def _load(config_path: str):
    from agent.config import load_config

    return load_config(config_path)


def enrolled(config_path: str) -> int:
    from agent.push import token_path

    config = _load(config_path)
    if config.push.bearer_token:
        return 0
    return 0 if os.path.isfile(token_path(config.push, config.agent.state_dir)) else 1


def enroll(config_path: str, collector: str, replace: bool, environ=os.environ) -> int:
    from agent import enroll as agent_enroll

    if enrolled(config_path) == 0:
        print(f"already enrolled: {config_path} has a push token; no key used")
        return 0
    if not environ.get(agent_enroll.ENV_KEY):
        print(f"NOT ENROLLED: no key given (/key or {agent_enroll.ENV_KEY}); the agent queues its data "
              "until you run install.cmd again with a key, or commune-agent enroll")
        return 3
    url = collector or _load(config_path).push.url
    if not url:
        print(f"cannot enroll: no collector URL given and {config_path} has no push.url", file=sys.stderr)
        return 2
    argv = ["--collector", url, "-c", config_path] + (["--replace"] if replace else [])
    return agent_enroll.main(argv)  # reads the key from the environment itself


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="install_steps.py", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    v = sub.add_parser("verify")
    v.add_argument("bundle")
    w = sub.add_parser("write-config")
    w.add_argument("--out", required=True)
    w.add_argument("--collector", default="")
    w.add_argument("--account", default="LocalSystem")
    w.add_argument("--state-dir", required=True)
    w.add_argument("--bundle-id", default="")
    sub.add_parser("enrolled").add_argument("config")
    e = sub.add_parser("enroll")
    e.add_argument("--config", required=True)
    e.add_argument("--collector", default="")
    e.add_argument("--replace", action="store_true")
    args = p.parse_args(argv)
    if args.step == "verify":
        problems = verify(args.bundle)
        for problem in problems:
            print(f"bundle check: {problem}", file=sys.stderr)
        if not problems:
            print(f"bundle check: every file of {MANIFEST} is whole")
        return 1 if problems else 0
    if args.step == "write-config":
        return write_config(args.out, args.collector, args.account, args.state_dir, args.bundle_id)
    from agent.schema import ConfigErrors

    try:
        if args.step == "enrolled":
            return enrolled(args.config)
        return enroll(args.config, args.collector, args.replace)
    except ConfigErrors as exc:
        print(f"{args.config} is invalid:\n{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
