"""The tcp prober: connect, optionally start TLS, then optional send/expect steps.

Like blackbox_exporter: ``send`` writes the text followed by a newline; ``expect`` reads lines
until one matches the regular expression (the connection closing first fails the probe with
``probe_failed_due_to_regex 1``).
"""
from __future__ import annotations

import re
import socket

from agent.inputs.probes import net
from agent.inputs.probes.net import ProbeFailure


class Prepared:
    def __init__(self, module):
        opts = module.tcp
        self.module = module
        self.opts = opts
        self.tls = net.tls_context(opts.tls_config) if opts.tls else None
        self.steps = [(re.compile(s.expect) if s.expect else None, s.send) for s in opts.query_response]


async def probe(target, prepared: Prepared, result: net.Result) -> None:
    host, port = net.split_host_port(target.address)
    if prepared.steps:
        result.set("probe_failed_due_to_regex", 0)
    watch = net.Stopwatch()
    family, sockaddr = await net.resolve(host, port, prepared.module.ip_protocol)
    result.set("probe_dns_lookup_time_seconds", watch.lap())
    result.set("probe_ip_protocol", 6 if family == socket.AF_INET6 else 4)
    writer = None
    try:
        reader, writer = await net.connect(family, sockaddr)
        if prepared.tls is not None:
            sslobj = await net.start_tls(writer, prepared.tls, prepared.opts.tls_config.server_name or host)
            net.tls_facts(result, sslobj)
        for expect, send in prepared.steps:
            if expect is not None:
                while True:
                    try:
                        line = await reader.readline()
                    except ValueError:  # longer than the stream limit
                        raise ProbeFailure("a reply line is longer than 64 KiB") from None
                    if not line:
                        result.set("probe_failed_due_to_regex", 1)
                        raise ProbeFailure(f"the connection closed before a line matched {expect.pattern!r}")
                    if expect.search(line.decode("utf-8", errors="replace").rstrip("\r\n")):
                        break
            if send:
                writer.write(send.encode("utf-8") + b"\n")
                await writer.drain()
    finally:
        net.close(writer)
