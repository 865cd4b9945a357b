"""Poll the same recorded devices with our SNMP input and with Debian's prometheus-snmp-exporter.

    .venv/bin/python bench/snmp_vs_snmp_exporter.py [--rounds 20] [--duration 60] [--soak-interval 5]

Starts snmpsim on a loopback port with printer and router recordings (../shared/fixtures/snmp when
present, else our own tests/fixtures/snmp), writes an snmp_exporter 0.21 config with numeric OIDs
for the same Printer-MIB, HOST-RESOURCES printer rows, IF-MIB tables and system scalars (one
module per device, since 0.21 keeps the community in the module), and runs both for the same
number of full polls (every device once, all devices concurrently). Prints CPU seconds and wall
time per full poll and the ratios. snmpsim's own CPU is not counted for either.

Then the soak (``--duration`` seconds, 0 to skip): a real ``commune-agent`` process with the host
input and the 10 SNMP targets (every other input off, no push), polling every ``--soak-interval``
seconds, while snmp_exporter is scraped for the same devices at the same interval. Prints both
RSS series (ten points), the agent's CPU per poll (its host input included) and the RSS ratio at
the end. With a 60 s interval in the field, ``--duration 900 --soak-interval 5`` is 180 polls per
device: three hours' worth.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.inputs.snmp import build  # noqa: E402
from bench.procstat import proc_cpu_seconds as cpu_seconds, proc_rss_mb as rss_mb  # noqa: E402
from agent.inputs.snmp.config import Config  # noqa: E402
from contract.schema import load_model  # noqa: E402
from lab.procs import Proc, agent_command, free_port, http_get, wait_until  # noqa: E402
from lab.snmpsim import start_snmpsim  # noqa: E402

SHARED = REPO.parent / "shared" / "fixtures" / "snmp"
OWN = REPO / "tests" / "fixtures" / "snmp"

SYSTEM = {"get": ["1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.1.2.0", "1.3.6.1.2.1.1.3.0", "1.3.6.1.2.1.1.5.0"],
          "metrics": [{"name": "sysUpTime", "oid": "1.3.6.1.2.1.1.3", "type": "gauge"},
                      {"name": "sysDescr", "oid": "1.3.6.1.2.1.1.1", "type": "DisplayString"},
                      {"name": "sysName", "oid": "1.3.6.1.2.1.1.5", "type": "DisplayString"}]}


def _col(name, oid, type_="gauge", indexes=("hrDeviceIndex", "idx"), lookups=()):
    return {"name": name, "oid": oid, "type": type_,
            "indexes": [{"labelname": i, "type": "gauge"} for i in indexes], "lookups": list(lookups)}


def printer_module() -> dict:
    descr = [{"labels": ["hrDeviceIndex", "idx"], "labelname": "prtMarkerSuppliesDescription",
              "oid": "1.3.6.1.2.1.43.11.1.1.6", "type": "DisplayString"}]
    tray = [{"labels": ["hrDeviceIndex", "idx"], "labelname": "prtInputName",
             "oid": "1.3.6.1.2.1.43.8.2.1.13", "type": "DisplayString"}]
    metrics = [
        _col("prtMarkerSuppliesLevel", "1.3.6.1.2.1.43.11.1.1.9", lookups=descr),
        _col("prtMarkerSuppliesMaxCapacity", "1.3.6.1.2.1.43.11.1.1.8", lookups=descr),
        _col("prtMarkerSuppliesType", "1.3.6.1.2.1.43.11.1.1.5", lookups=descr),
        _col("prtMarkerSuppliesClass", "1.3.6.1.2.1.43.11.1.1.4", lookups=descr),
        _col("prtMarkerLifeCount", "1.3.6.1.2.1.43.10.2.1.4", "counter"),
        _col("prtInputCurrentLevel", "1.3.6.1.2.1.43.8.2.1.10", lookups=tray),
        _col("prtInputMaxCapacity", "1.3.6.1.2.1.43.8.2.1.9", lookups=tray),
        _col("prtCoverStatus", "1.3.6.1.2.1.43.6.1.1.3"),
        _col("prtAlertSeverityLevel", "1.3.6.1.2.1.43.18.1.1.2"),
        _col("prtAlertCode", "1.3.6.1.2.1.43.18.1.1.7"),
        _col("hrDeviceStatus", "1.3.6.1.2.1.25.3.2.1.5", indexes=("hrDeviceIndex",)),
        _col("hrPrinterStatus", "1.3.6.1.2.1.25.3.5.1.1", indexes=("hrDeviceIndex",)),
        _col("hrPrinterDetectedErrorState", "1.3.6.1.2.1.25.3.5.1.2", "OctetString", indexes=("hrDeviceIndex",)),
    ]
    walk = ["1.3.6.1.2.1.43.11.1.1.4", "1.3.6.1.2.1.43.11.1.1.5", "1.3.6.1.2.1.43.11.1.1.6",
            "1.3.6.1.2.1.43.11.1.1.8", "1.3.6.1.2.1.43.11.1.1.9", "1.3.6.1.2.1.43.10.2.1.4",
            "1.3.6.1.2.1.43.8.2.1.9", "1.3.6.1.2.1.43.8.2.1.10", "1.3.6.1.2.1.43.8.2.1.13",
            "1.3.6.1.2.1.43.6.1.1.3", "1.3.6.1.2.1.43.18.1.1.2", "1.3.6.1.2.1.43.18.1.1.7",
            "1.3.6.1.2.1.25.3.2.1.5", "1.3.6.1.2.1.25.3.5.1.1", "1.3.6.1.2.1.25.3.5.1.2"]
    return {"walk": walk, "get": SYSTEM["get"], "metrics": SYSTEM["metrics"] + metrics}


def if_module() -> dict:
    lookups = [{"labels": ["ifIndex"], "labelname": "ifName", "oid": "1.3.6.1.2.1.31.1.1.1.1", "type": "DisplayString"},
               {"labels": ["ifIndex"], "labelname": "ifAlias", "oid": "1.3.6.1.2.1.31.1.1.1.18",
                "type": "DisplayString"},
               {"labels": ["ifIndex"], "labelname": "ifDescr", "oid": "1.3.6.1.2.1.2.2.1.2", "type": "DisplayString"}]
    cols = {"ifType": ("1.3.6.1.2.1.2.2.1.3", "gauge"), "ifSpeed": ("1.3.6.1.2.1.2.2.1.5", "gauge"),
            "ifAdminStatus": ("1.3.6.1.2.1.2.2.1.7", "gauge"), "ifOperStatus": ("1.3.6.1.2.1.2.2.1.8", "gauge"),
            "ifInOctets": ("1.3.6.1.2.1.2.2.1.10", "counter"), "ifInUcastPkts": ("1.3.6.1.2.1.2.2.1.11", "counter"),
            "ifInDiscards": ("1.3.6.1.2.1.2.2.1.13", "counter"), "ifInErrors": ("1.3.6.1.2.1.2.2.1.14", "counter"),
            "ifOutOctets": ("1.3.6.1.2.1.2.2.1.16", "counter"),
            "ifOutUcastPkts": ("1.3.6.1.2.1.2.2.1.17", "counter"),
            "ifOutDiscards": ("1.3.6.1.2.1.2.2.1.19", "counter"), "ifOutErrors": ("1.3.6.1.2.1.2.2.1.20", "counter"),
            "ifHCInOctets": ("1.3.6.1.2.1.31.1.1.1.6", "counter"),
            "ifHCInUcastPkts": ("1.3.6.1.2.1.31.1.1.1.7", "counter"),
            "ifHCOutOctets": ("1.3.6.1.2.1.31.1.1.1.10", "counter"),
            "ifHCOutUcastPkts": ("1.3.6.1.2.1.31.1.1.1.11", "counter"),
            "ifHighSpeed": ("1.3.6.1.2.1.31.1.1.1.15", "gauge")}
    metrics = [{"name": n, "oid": o, "type": t, "indexes": [{"labelname": "ifIndex", "type": "gauge"}],
                "lookups": lookups} for n, (o, t) in cols.items()]
    cpu = [_col("hrProcessorLoad", "1.3.6.1.2.1.25.3.3.1.2", indexes=("hrDeviceIndex",)),
           _col("hrStorageSize", "1.3.6.1.2.1.25.2.3.1.5", indexes=("hrStorageIndex",)),
           _col("hrStorageUsed", "1.3.6.1.2.1.25.2.3.1.6", indexes=("hrStorageIndex",)),
           _col("hrStorageAllocationUnits", "1.3.6.1.2.1.25.2.3.1.4", indexes=("hrStorageIndex",))]
    walk = [o for o, _t in cols.values()] + ["1.3.6.1.2.1.31.1.1.1.1", "1.3.6.1.2.1.31.1.1.1.18",
                                              "1.3.6.1.2.1.2.2.1.2", "1.3.6.1.2.1.25.3.3.1.2",
                                              "1.3.6.1.2.1.25.2.3.1.3", "1.3.6.1.2.1.25.2.3.1.4",
                                              "1.3.6.1.2.1.25.2.3.1.5", "1.3.6.1.2.1.25.2.3.1.6"]
    return {"walk": walk, "get": SYSTEM["get"], "metrics": SYSTEM["metrics"] + metrics + cpu}


def devices() -> dict:
    """{community: (recording, kind)}"""
    if SHARED.exists():
        printers = ["sharp", "jetdirect", "konica_c250i", "xerox", "brother", "epson"]
        routers = ["routeros", "asuswrt-merlin", "draytek", "openwrt"]
        out = {n: (SHARED / "printers" / f"{n}.snmprec", "printer") for n in printers}
        out.update({n: (SHARED / "routers" / f"{n}.snmprec", "router") for n in routers})
        return out
    return {"printer": (OWN / "printer.snmprec", "printer"), "router": (OWN / "router.snmprec", "router")}


def soak(tmp: Path, port: int, devs: dict, scrape_exporter, exporter_pid: int, duration: float,
         interval: float) -> dict:
    """Run the agent with the host input and every device as a target; RSS series of both."""
    web = free_port()
    cfg = {
        "agent": {"id": "bench-snmp", "state_dir": str(tmp / "state"), "log_level": "warning"},
        "web": {"listen_address": f"127.0.0.1:{web}"},
        **{n: {"enabled": False} for n in ("smart", "icmp", "probes", "process")},
        "snmp": {"interval": f"{interval:g}s", "timeout": "2s", "max_concurrency": len(devs),
                 "auths": {n: {"version": "2c", "community": n} for n in devs},
                 "targets": [{"name": n, "address": "127.0.0.1", "port": port, "auth": n,
                              "profiles": ["printer"] if k == "printer" else ["interfaces", "host_resources"]}
                             for n, (_p, k) in devs.items()]},
    }
    path = tmp / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    agent = Proc(agent_command() + ["-c", str(path)], tmp / "agent.log")
    url = f"http://127.0.0.1:{web}/metrics"
    try:
        agent.wait_http(url)
        wait_until(lambda: http_get(url).decode().count("commune_snmp_up{") == len(devs), 60,
                   what="every target polled once")
        c0, t_start = cpu_seconds(agent.pid), time.monotonic()
        ours, theirs = [], []
        points = 10
        for i in range(1, points + 1):
            while time.monotonic() < t_start + duration * i / points:
                t = time.monotonic()
                scrape_exporter()
                time.sleep(max(0.0, interval - (time.monotonic() - t)))
            ours.append(rss_mb(agent.pid))
            theirs.append(rss_mb(exporter_pid))
        elapsed = time.monotonic() - t_start
        cpu = cpu_seconds(agent.pid) - c0
        metrics = http_get(url).decode()
        assert metrics.count("commune_snmp_up{") == len(devs) and " 0.0\n" not in "".join(
            line + "\n" for line in metrics.splitlines() if line.startswith("commune_snmp_up{")), metrics[:2000]
    finally:
        agent.stop()
    return {"ours": ours, "theirs": theirs, "polls": elapsed / interval, "cpu_per_poll": cpu / (elapsed / interval)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--duration", type=float, default=60.0, help="soak seconds (0: no soak)")
    ap.add_argument("--soak-interval", type=float, default=5.0, help="poll interval in the soak, seconds")
    args = ap.parse_args()
    exporter = shutil.which("prometheus-snmp-exporter")
    if not exporter:
        print("prometheus-snmp-exporter is not installed (apt-get install prometheus-snmp-exporter)")
        return 2
    devs = devices()
    tmp = Path(tempfile.mkdtemp(prefix="bench-snmp-"))
    sim, port = start_snmpsim(tmp / "sim", {n: p for n, (p, _k) in devs.items()})
    exp = None
    try:
        # ---- snmp_exporter: one module per device (0.21 keeps the community in the module)
        modules = {}
        for name, (_p, kind) in devs.items():
            mod = printer_module() if kind == "printer" else if_module()
            mod.update(version=2, max_repetitions=25, retries=1, timeout="5s", auth={"community": name})
            modules[name] = mod
        (tmp / "snmp.yml").write_text(yaml.safe_dump(modules, sort_keys=False))
        web = free_port()
        exp = Proc([exporter, f"--config.file={tmp / 'snmp.yml'}", f"--web.listen-address=127.0.0.1:{web}",
                    "--log.level=warn"], tmp / "exporter.log")
        exp.wait_http(f"http://127.0.0.1:{web}/metrics")
        urls = {n: f"http://127.0.0.1:{web}/snmp?target=127.0.0.1:{port}&module={n}" for n in devs}

        def scrape(url):
            with urllib.request.urlopen(url, timeout=30) as r:
                return r.read()

        pool = concurrent.futures.ThreadPoolExecutor(len(urls))

        def exporter_poll():
            return list(pool.map(scrape, urls.values()))

        exporter_poll()  # warm-up
        exp_series = sum(1 for body in exporter_poll() for line in body.decode().splitlines()
                         if line and not line.startswith("#") and not line.startswith(("snmp_scrape", "go_")))
        c0, t0 = cpu_seconds(exp.pid), time.perf_counter()
        for _ in range(args.rounds):
            exporter_poll()
        exp_wall = (time.perf_counter() - t0) / args.rounds
        exp_cpu = (cpu_seconds(exp.pid) - c0) / args.rounds
        exp_rss = rss_mb(exp.pid)

        # ---- our SNMP input, in this process
        cfg = load_model(Config, {
            "auths": {n: {"version": "2c", "community": n} for n in devs},
            "targets": [{"name": n, "address": "127.0.0.1", "port": port, "auth": n,
                         "profiles": ["printer"] if k == "printer" else ["interfaces", "host_resources"]}
                        for n, (_p, k) in devs.items()],
            "max_concurrency": len(devs)}, path="snmp")
        inputs = build(cfg, None)

        async def ours():
            async def poll():
                return await asyncio.gather(*(i.collect() for i in inputs))

            first = await poll()  # warm-up: classification probes, engine and MIB loading
            assert all(s[0].value == 1 for s in first), [s[:3] for s in first]
            series = sum(len(s) for s in await poll())
            c, t = time.process_time(), time.perf_counter()
            for _ in range(args.rounds):
                await poll()
            return series, (time.process_time() - c) / args.rounds, (time.perf_counter() - t) / args.rounds

        our_series, our_cpu, our_wall = asyncio.run(ours())
        bench_rss = rss_mb(os.getpid())
        soaked = soak(tmp, port, devs, exporter_poll, exp.pid, args.duration, args.soak_interval) \
            if args.duration > 0 else None
    finally:
        if exp:
            exp.stop()
        sim.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    kinds = sorted({k for _p, k in devs.values()})
    print(f"{len(devs)} devices ({', '.join(f'{sum(1 for _p, k in devs.values() if k == kind)} {kind}s' for kind in kinds)}), "
          f"{args.rounds} full polls each, all devices of a poll concurrently, snmpsim on loopback")
    print(f"{'':30}{'CPU s/poll':>12}{'wall s/poll':>13}{'series':>8}{'RSS MB':>8}")
    print(f"{'commune agent (v2c, own BER)':30}{our_cpu:12.4f}{our_wall:13.4f}{our_series:8d}{bench_rss:8.1f}"
          f"  (RSS of this bench process)")
    print(f"{'snmp_exporter 0.21 (Go)':30}{exp_cpu:12.4f}{exp_wall:13.4f}{exp_series:8d}{exp_rss:8.1f}")
    our_rss = bench_rss
    if soaked:
        our_rss, exp_rss = soaked["ours"][-1], soaked["theirs"][-1]
        print(f"soak: {args.duration:g} s, a poll every {args.soak_interval:g} s ({soaked['polls']:.0f} polls per device)")
        print("  commune-agent (host + snmp) RSS MB: " + " ".join(f"{x:.1f}" for x in soaked["ours"]))
        print("  snmp_exporter RSS MB:              " + " ".join(f"{x:.1f}" for x in soaked["theirs"]))
        half = len(soaked["ours"]) // 2
        print(f"  agent RSS growth over the second half: {soaked['ours'][-1] - soaked['ours'][half - 1]:+.1f} MB; "
              f"agent CPU per poll (host input included): {soaked['cpu_per_poll']:.4f} s")

    def ratio(a, b):
        return f"{a / b:.2f}x" if b else "inf"

    print(f"ratio agent/exporter: CPU {ratio(our_cpu, exp_cpu)}, wall {ratio(our_wall, exp_wall)}, "
          f"RSS {ratio(our_rss, exp_rss)} ({'agent process after the soak' if soaked else 'bench process'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
