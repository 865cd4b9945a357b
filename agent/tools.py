"""Command-line tools of the agent that use its config: ``commune-agent discover`` (an SNMP sweep)
and ``commune-agent icmp`` (one ICMP probe by hand). They live here, not in the inputs, so that no
input imports the config module (which imports every input)."""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import sys
import time
from typing import List, Optional

from agent.inputs.snmp.config import AuthConfig, Config as SnmpConfig
from agent.inputs.snmp.discover import config_snippet, hosts, sweep, table
from contract.samples import Sample
from contract.schema import ConfigErrors, Secret


def _discover_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="commune-agent discover",
                                description="Sweep subnets for SNMP devices and classify them.")
    p.add_argument("subnets", nargs="+", metavar="SUBNET", help="e.g. 192.168.1.0/24 (at most a /20 each)")
    p.add_argument("-c", "--config.file", dest="config", metavar="FILE",
                   help="agent config whose snmp.auths are tried in turn")
    p.add_argument("--community", metavar="NAME", help="SNMP v2c community to try (instead of -c)")
    p.add_argument("--port", type=int, default=None, help="UDP port (default 161)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per request (default 1)")
    p.add_argument("--retries", type=int, default=None, help="retries per request (default 0)")
    p.add_argument("--concurrency", type=int, default=None, help="addresses asked at once (default 32)")
    p.add_argument("--rate", type=float, default=None, help="new addresses per second (default 50)")
    p.add_argument("--write-config", metavar="FILE", help="write a ready snmp section for what was found")
    return p


def discover_main(argv: Optional[List[str]] = None) -> int:
    """``commune-agent discover``: sweep subnets for SNMP devices, print them, write a config."""
    args = _discover_parser().parse_args(argv)
    section: Optional[SnmpConfig] = None
    if args.config:
        from agent.config import load_config
        from contract.schema import ConfigErrors

        try:
            section = load_config(args.config).snmp
        except ConfigErrors as exc:
            for err in exc.errors:
                print(err, file=sys.stderr)
            return 1
    disc = section.discovery if section else None
    community_auth = None
    if args.community is not None:
        community_auth = ("discovered_v2c", AuthConfig(version="2c", community=Secret(args.community)))
        auths = [community_auth]
    elif section is not None:
        names = list(disc.auths) or list(section.auths)
        auths = [(n, section.auths[n]) for n in names]
    else:
        print("give --community NAME or -c CONFIG (whose snmp.auths are tried)", file=sys.stderr)
        return 2
    try:
        for net in args.subnets:
            n = ipaddress.ip_network(net, strict=False)
            if n.num_addresses > 4096:
                raise ValueError(f"{net} has {n.num_addresses} addresses; at most 4096 (a /20)")
        addresses = hosts(args.subnets)
    except ValueError as exc:
        print(f"discover: {exc}", file=sys.stderr)
        return 2

    def pick(value, attr, default):
        if value is not None:
            return value
        return getattr(disc, attr) if disc is not None else default

    port = pick(args.port, "port", 161)
    started = time.monotonic()
    found = asyncio.run(sweep(addresses, port, auths, timeout=pick(args.timeout, "timeout", 1.0),
                              retries=pick(args.retries, "retries", 0),
                              concurrency=max(1, pick(args.concurrency, "concurrency", 32)),
                              rate=pick(args.rate, "rate", 50.0)))
    print(table(found))
    print(f"{len(found)} device(s) answered out of {len(addresses)} address(es) in "
          f"{time.monotonic() - started:.1f}s", file=sys.stderr)
    if args.write_config:
        fd = os.open(args.write_config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(config_snippet(found, port, community_auth))
        print(f"wrote {args.write_config}", file=sys.stderr)
    return 0



def icmp_main(argv: Optional[List[str]] = None) -> int:
    """Probe once with the icmp section of a config (or the defaults) and print the samples."""
    import argparse

    from agent.config import Config, load_config
    from agent.inputs import icmp
    from contract.exposition import render
    from contract.schema import load_model, load_yaml

    p = argparse.ArgumentParser(prog="commune-agent icmp", description=icmp_main.__doc__)
    p.add_argument("-c", "--config.file", dest="config", metavar="FILE", help="agent YAML; - reads stdin")
    args = p.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.config == "-":
            data, lines = load_yaml(sys.stdin.read(), "<stdin>")
            config = load_model(Config, data, file="<stdin>", lines=lines)
        else:
            config = load_config(args.config)
        inputs = icmp.build(config.icmp, config)
    except ConfigErrors as exc:
        for err in exc.errors:
            print(err, file=sys.stderr)
        return 1
    samples: List[Sample] = []
    for inp in inputs:
        samples += asyncio.run(inp.collect())
    sys.stdout.write(render(lambda: samples).decode())
    return 0
