#!/usr/bin/env python3
"""Record what one real office PC and its SNMP devices push in two minutes: the templates of
bench/fleet_sim.py (bench/fleet_templates.json).

A real ``commune-agent`` runs with its default intervals (host 15 s, SNMP 1 min, ICMP and probes
30 s, inventory 60 s, its own and the queue's metrics 30 s) and pushes every collection as it
comes (``batch_delay: 0s``) to a receiver here that decodes each remote-write request. Its SNMP
targets are snmpsim serving real recordings: a Konica Minolta bizhub C250i (../shared), an APC
UPS (tests/fixtures) and a 24-port router made from the ASUS RT-AC68U recording (../shared) by
copying the row of its eth0 to 21 more ports (no real 24-port recording exists here). Its probes
are three HTTP checks of a loopback server (the portals an office watches). Run as root, it runs
inside a network namespace of its own holding only loopback, with ICMP on (the gateway probe finds
no gateway; two targets on 127.0.0.1 stand for the ISP and the province); otherwise ICMP is off.

Two minutes of collections after a 15 s warm-up are kept: per series its labels and the values it
took at each collection time (offset from the window start). The simulator replays them.

    .venv/bin/python bench/fleet_capture.py [--out bench/fleet_templates.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from contract import remote_write  # noqa: E402
from bench.fleet_procs import VENV_BIN, Proc, start_snmpsim, stop_all  # noqa: E402
from bench.procstat import free_port  # noqa: E402

SHARED_SNMP = REPO.parent / "shared" / "fixtures" / "snmp"
OWN_SNMP = REPO / "tests" / "fixtures" / "snmp"
WARMUP_S, WINDOW_S = 15, 120
DEVICES = {"printer": "konica-c250i", "router": "router-24port", "ups": "apc-ups"}
IF_TABLES = ("1.3.6.1.2.1.2.2.1.", "1.3.6.1.2.1.31.1.1.1.")


def router_24_ports(src: Path, dst: Path, copy_index: int = 4, ports: int = 24) -> None:
    """The ASUS recording with its interface rows extended to ``ports`` Ethernet ports (eth0's row
    copied under new indexes, named port1..), ifNumber updated, lines in OID order."""
    rows = [ln.split("|", 2) for ln in src.read_text().splitlines() if ln.strip()]
    names = {r[0].rsplit(".", 1)[1] for r in rows if r[0].startswith("1.3.6.1.2.1.31.1.1.1.1.")}
    eth = [r for r in rows if r[0].startswith(IF_TABLES) and r[0].rsplit(".", 1)[1] == str(copy_index)]
    existing = sum(1 for r in rows if r[0].startswith("1.3.6.1.2.1.31.1.1.1.1.") and r[2].startswith("eth"))
    out = [r for r in rows if r[0] != "1.3.6.1.2.1.2.1.0"]
    next_index = max(int(n) for n in names) + 1
    for n in range(ports - existing):
        idx = next_index + n
        for oid, typ, val in eth:
            col = oid.rsplit(".", 1)[0]
            if col in ("1.3.6.1.2.1.2.2.1.2", "1.3.6.1.2.1.31.1.1.1.1"):
                val = f"port{n + 1}"
            out.append([f"{col}.{idx}", typ, val])
    out.append(["1.3.6.1.2.1.2.1.0", "2", str(len(names) + ports - existing)])
    out.sort(key=lambda r: tuple(int(x) for x in r[0].split(".")))
    dst.write_text("".join("|".join(r) + "\n" for r in out))


class Receiver(ThreadingHTTPServer):
    """Answers every remote-write POST 204 and keeps the decoded series; GET answers 200 (probes)."""

    def __init__(self):
        self.requests: list = []
        super().__init__(("127.0.0.1", free_port()), self.Handler)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.server.requests.append((time.time(), len(body), remote_write.decode(body)))
            self.send_response(204)
            self.end_headers()

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass


def agent_config(tmp: Path, url: str, snmp_port: int, probe_url: str, icmp: bool) -> Path:
    cfg = {
        "agent": {"id": "pc-capture", "state_dir": str(tmp / "agent-state"), "log_level": "warning"},
        "web": {"listen_address": f"127.0.0.1:{free_port()}"},
        "smart": {"enabled": False},  # smartctl sees no disk in this virtual machine
        "process": {"enabled": False},
        "icmp": {"enabled": icmp, "targets": [{"name": "isp-dns", "address": "127.0.0.1", "hop": "isp"},
                                              {"name": "province-dc", "address": "127.0.0.1", "hop": "upstream"}]
                 if icmp else []},
        "probes": {"modules": {"portal": {"prober": "http", "timeout": "10s"}},
                   "targets": [{"name": n, "module": "portal", "url": f"{probe_url}/{n}", "service": n}
                               for n in ("dichvucong", "motcua", "chukyso")]},
        "snmp": {"auths": {kind: {"version": "2c", "community": kind} for kind in DEVICES},
                 "targets": [{"name": name, "address": "127.0.0.1", "port": snmp_port, "auth": kind}
                             for kind, name in DEVICES.items()]},
        "push": {"enabled": True, "url": url, "require_token": False, "batch_delay": "0s",
                 "min_backoff": "200ms", "max_backoff": "1s"},
    }
    path = tmp / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def capture(out: Path, icmp: bool) -> None:
    procs = []
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{receiver.server_address[1]}"
    with tempfile.TemporaryDirectory(prefix="fleet-capture-") as tmp:
        tmp = Path(tmp)
        router = tmp / "router24.snmprec"
        router_24_ports(SHARED_SNMP / "routers" / "asuswrt-merlin.snmprec", router)
        sim, port = start_snmpsim(tmp, {"printer": SHARED_SNMP / "printers" / "konica_c250i.snmprec",
                                        "router": router, "ups": OWN_SNMP / "ups_apc.snmprec"})
        procs.append(sim)
        try:
            cfg = agent_config(tmp, base + "/api/v1/write", port, base, icmp)
            procs.append(Proc([VENV_BIN / "commune-agent", "-c", cfg], tmp / "agent.log"))
            time.sleep(WARMUP_S + WINDOW_S + 10)
            log = procs[-1].log()
        finally:
            stop_all(procs)
            receiver.shutdown()
    t0 = min(ts for _t, _n, req in receiver.requests for _l, samples in req for _v, ts in samples) + WARMUP_S * 1000
    pc, devices = {}, {kind: {} for kind in DEVICES}
    kind_of = {name: kind for kind, name in DEVICES.items()}
    for _t, _n, req in receiver.requests:
        for labels, samples in req:
            for value, ts in samples:
                if not t0 <= ts < t0 + WINDOW_S * 1000:
                    continue
                target = labels.get("target")
                if target in kind_of:
                    labels = dict(labels, target="$TARGET")  # the simulator names each device
                    if "address" in labels:
                        labels["address"] = "$ADDRESS"
                    where = devices[kind_of[target]]
                else:
                    where = pc
                key = json.dumps(labels, sort_keys=True)
                where.setdefault(key, []).append([ts - t0, value])
    body_bytes = sum(n for _t, n, _r in receiver.requests)
    doc = {
        "about": __doc__.split("\n\n")[0].strip(),
        "captured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "window_s": WINDOW_S, "icmp": icmp,
        "pushed": {"requests": len(receiver.requests), "body_bytes": body_bytes},
        "pc": [[json.loads(k), v] for k, v in sorted(pc.items())],
        "devices": {kind: [[json.loads(k), v] for k, v in sorted(s.items())] for kind, s in devices.items()},
    }
    out.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    counts = {"pc": len(pc), **{k: len(v) for k, v in devices.items()}}
    samples = {"pc": sum(len(v) for v in pc.values()),
               **{k: sum(len(x) for x in v.values()) for k, v in devices.items()}}
    print(f"series per 2-minute window: {counts}; samples: {samples}; {out}")
    if "error" in log.lower():
        print("agent log had errors:\n" + log[-2000:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "bench" / "fleet_templates.json")
    p.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inside or os.geteuid() != 0:
        capture(args.out.resolve(), icmp=args.inside)
        return 0
    # root: a network namespace with only loopback, where ICMP reaches nothing beyond it
    return subprocess.call(["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$0" "$@"',
                            sys.executable, __file__, "--inside", "--out", str(args.out.resolve())])


if __name__ == "__main__":
    raise SystemExit(main())
