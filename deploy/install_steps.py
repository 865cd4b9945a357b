"""Steps of the offline installers (Windows install.cmd, Linux install.sh) that are safer in
Python than in cmd or sh. Copied into both bundles; runs under the PC's Python (verify, reach:
standard library only, before anything is installed) or the installed agent's (the rest).

    install_steps.py verify BUNDLE_DIR         every file of SHA256SUMS is there with its hash
    install_steps.py reach URL                 exit 0 when a TCP connection to the URL's host and port opens
    install_steps.py write-config --out FILE --collector URL --state-dir DIR [--account NAME]
                     [--pin-sha256 HEX] [--ca-file FILE]
                                               agent.yaml for push to the collector, only if FILE is absent
                                               (--account: the Windows service account; none on Linux)
    install_steps.py enrolled CONFIG           exit 0 when CONFIG has a push token (file or bearer_token)
    install_steps.py enroll --config CONFIG [--collector URL] [--replace]
                                               enroll unless enrolled: exit 0 enrolled (now or before),
                                               3 not enrolled for want of a key, 1 or 2 refused/failed

The enrollment key comes only from $COMMUNE_ENROLL_KEY (install.cmd sets it from /key, install.sh
from its --key-file or standard input), is handed
to ``commune-agent enroll`` inside this process and is never printed or written.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sys
import urllib.parse
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


def reach(collector: str, timeout: float = 10.0) -> Optional[str]:
    """Why no TCP connection to the collector opens (None when one does)."""
    try:
        url = urllib.parse.urlsplit(push_url(collector))
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError as exc:
        return str(exc)
    if not url.hostname:
        return f"the collector URL has no host: {collector!r}"
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as exc:
        return f"cannot connect to {url.hostname}:{port}: {exc.strerror or exc}"
    return None


def config_text(collector: str, account: Optional[str], state_dir: str, bundle_id: str,
                pin_sha256: str = "", ca_file: str = "") -> str:
    if account is not None and account not in ACCOUNTS:
        raise ValueError(f"the service account must be one of {', '.join(ACCOUNTS)}, got {account!r}")
    if pin_sha256 and not all(c in "0123456789abcdefABCDEF:" for c in pin_sha256):
        raise ValueError(f"--pin-sha256 must be the certificate's SHA-256 in hex, got {pin_sha256!r}")
    # JSON strings are valid YAML double-quoted scalars; the agent's loader expands ${...}, so a
    # literal $ is written as $$.
    def quoted(value: str) -> str:
        return json.dumps(value.replace("$", "$$"))

    lines = [
        f"# Written by the installer of the commune-monitor offline bundle {bundle_id}, once: a file",
        "# already here is never overwritten. Every option not set here keeps its default;",
        "# config/agent.example.yaml of the project documents them all.",
        "agent:",
        f"  state_dir: {quoted(state_dir)}",
        "push:",
        "  enabled: true",
        f"  url: {quoted(push_url(collector))}",
    ]
    if pin_sha256:
        lines.append(f"  pin_sha256: {quoted(pin_sha256)}")
    if ca_file:
        lines.append(f"  ca_file: {quoted(ca_file)}")
    if account is not None and account != "LocalSystem":
        lines += [
            "icmp:",
            f"  # The service runs as {account}, which cannot open the raw sockets ICMP needs on",
            "  # Windows. Reinstall with /account LocalSystem to ping the gateway and ICMP targets.",
            "  enabled: false",
        ]
    return "\n".join(lines) + "\n"


def write_config(out: str, collector: Optional[str], account: Optional[str], state_dir: str, bundle_id: str,
                 pin_sha256: str = "", ca_file: str = "") -> int:
    if os.path.exists(out):
        print(f"{out} exists: kept as it is")
        return 0
    if not collector:
        print(f"{out} does not exist and no collector URL was given (install.cmd /collector URL or "
              "COMMUNE_COLLECTOR_URL; install.sh --collector URL): cannot write the agent config", file=sys.stderr)
        return 2
    try:
        text = config_text(collector, account, state_dir, bundle_id, pin_sha256, ca_file)
    except ValueError as exc:
        print(f"cannot write {out}: {exc}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    # created unreadable to others from the start (it may later hold SNMP communities)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640), "w", encoding="utf-8") as fh:
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
        print(f"NOT ENROLLED: no key given (install.cmd /key, install.sh --key-file, or {agent_enroll.ENV_KEY}); "
              "the agent queues its data until the installer runs again with a key, or commune-agent enroll")
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
    w.add_argument("--account", default=None, help="the Windows service account (install.cmd passes it)")
    w.add_argument("--pin-sha256", default="")
    w.add_argument("--ca-file", default="")
    w.add_argument("--state-dir", required=True)
    w.add_argument("--bundle-id", default="")
    sub.add_parser("reach").add_argument("collector")
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
    if args.step == "reach":
        problem = reach(args.collector)
        if problem:
            print(f"collector unreachable: {problem}", file=sys.stderr)
            return 1
        return 0
    if args.step == "write-config":
        return write_config(args.out, args.collector, args.account, args.state_dir, args.bundle_id,
                            args.pin_sha256, args.ca_file)
    from contract.schema import ConfigErrors

    try:
        if args.step == "enrolled":
            return enrolled(args.config)
        return enroll(args.config, args.collector, args.replace)
    except ConfigErrors as exc:
        print(f"{args.config} is invalid:\n{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
