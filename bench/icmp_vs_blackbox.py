#!/usr/bin/env python3
"""CPU cost of ICMP probing: the agent's icmp input against Debian's blackbox_exporter.

Both probe the same loopback targets (127.0.0.1-3 and ::1; nothing leaves the machine) with one
echo per probe, as blackbox_exporter's icmp prober sends. Our side runs the real input
(``agent.inputs.icmp.IcmpInput`` with the icmplib pinger, all targets of a round concurrently on
one event loop, as the runner does) and is charged the CPU time of this process. Blackbox runs
on a free loopback port and is charged the CPU time of its process (from /proc), not that of the
HTTP client asking it to probe. The agent's default (5 echoes per probe) is printed as well.

    .venv/bin/python bench/icmp_vs_blackbox.py [--rounds 200]
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procstat import free_port, proc_cpu_seconds, proc_rss_mb  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.inputs import icmp, icmp_sockets  # noqa: E402
from contract.schema import load_model  # noqa: E402

TARGETS = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "::1"]








def ours(rounds: int, count: int) -> float:
    """CPU seconds per round of the agent's icmp input probing every target with ``count`` echoes."""
    cfg = load_model(icmp.Config, {
        "gateway": False, "count": count, "echo_interval": "10ms", "echo_timeout": "1s", "timeout": "5s",
        "targets": [{"name": f"t{i}", "address": a, "hop": "service"} for i, a in enumerate(TARGETS)]})
    privileged = icmp_sockets.choose_privileged(cfg.privileged)
    inp = icmp.IcmpInput(cfg, icmp_sockets.IcmplibPinger(privileged, cfg.count, cfg.echo_interval, cfg.echo_timeout,
                                                 cfg.payload_size))
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(inp.collect())          # warm-up: imports, thread pool
        t0 = time.process_time()
        for _ in range(rounds):
            samples = loop.run_until_complete(inp.collect())
            ok = sum(s.value for s in samples if s.name == "probe_success")
            if ok != len(TARGETS):
                raise SystemExit(f"our probe failed: {ok}/{len(TARGETS)} targets answered")
        return (time.process_time() - t0) / rounds
    finally:
        loop.close()


def blackbox(rounds: int) -> "tuple[float, float]":
    """CPU seconds of blackbox_exporter per round of probing every target once, and its RSS in MB."""
    binary = shutil.which("prometheus-blackbox-exporter")
    if not binary:
        raise SystemExit("prometheus-blackbox-exporter is not installed (apt-get install prometheus-blackbox-exporter)")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "blackbox.yml"
        cfg.write_text("modules:\n"
                       "  icmp4: {prober: icmp, timeout: 5s, icmp: {preferred_ip_protocol: ip4, ip_protocol_fallback: false}}\n"
                       "  icmp6: {prober: icmp, timeout: 5s, icmp: {preferred_ip_protocol: ip6, ip_protocol_fallback: false}}\n")
        log = open(Path(tmp) / "blackbox.log", "wb")
        proc = subprocess.Popen([binary, f"--config.file={cfg}", f"--web.listen-address=127.0.0.1:{port}",
                                 "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    urllib.request.urlopen(base + "/-/healthy", timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.05)
            else:
                raise SystemExit("blackbox_exporter did not start")

            def round_() -> None:
                for addr in TARGETS:
                    module = "icmp6" if ":" in addr else "icmp4"
                    body = urllib.request.urlopen(f"{base}/probe?module={module}&target={addr}", timeout=10).read()
                    if b"probe_success 1" not in body:
                        raise SystemExit(f"blackbox probe of {addr} failed:\n{body.decode()}")

            round_()                                       # warm-up
            c0 = proc_cpu_seconds(proc.pid)
            for _ in range(rounds):
                round_()
            per_round = (proc_cpu_seconds(proc.pid) - c0) / rounds
            return per_round, proc_rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=200)
    args = p.parse_args()
    n = len(TARGETS)
    ours_1 = ours(args.rounds, 1)
    ours_5 = ours(max(args.rounds // 5, 10), 5)
    bb, bb_rss = blackbox(args.rounds)
    print(f"targets per round: {n} ({', '.join(TARGETS)}); rounds: {args.rounds}")
    print(f"agent icmp input, 1 echo/probe:   {ours_1 * 1000:7.2f} ms CPU per round, "
          f"{ours_1 / n * 1000:6.2f} ms per probe")
    print(f"agent icmp input, 5 echoes/probe: {ours_5 * 1000:7.2f} ms CPU per round, "
          f"{ours_5 / n * 1000:6.2f} ms per probe (the default count)")
    print(f"blackbox_exporter, 1 echo/probe:  {bb * 1000:7.2f} ms CPU per round, "
          f"{bb / n * 1000:6.2f} ms per probe (RSS {bb_rss:.0f} MB)")
    print(f"ratio agent/blackbox (1 echo): {ours_1 / bb:.2f}" if bb > 0 else "blackbox used no measurable CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
