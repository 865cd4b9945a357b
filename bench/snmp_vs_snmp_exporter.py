"""Poll the same recorded devices with our SNMP input and with Debian's prometheus-snmp-exporter.

    .venv/bin/python bench/snmp_vs_snmp_exporter.py [--rounds 20]

Starts snmpsim on a loopback port with printer and router recordings (../shared/fixtures/snmp when
present, else our own tests/fixtures/snmp), writes an snmp_exporter 0.21 config with numeric OIDs
for the same Printer-MIB, HOST-RESOURCES printer rows, IF-MIB tables and system scalars (one
module per device, since 0.21 keeps the community in the module), and runs both for the same
number of full polls (every device once, all devices concurrently). Prints CPU seconds and wall
time per full poll and the ratios. snmpsim's own CPU is not counted for either.
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
from agent.inputs.snmp.config import Config  # noqa: E402
from agent.schema import load_model  # noqa: E402
from tests.support import Proc, free_port  # noqa: E402
from tests.test_snmp_live import start_snmpsim  # noqa: E402

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


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
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
        our_rss = rss_mb(os.getpid())
    finally:
        if exp:
            exp.stop()
        sim.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    kinds = sorted({k for _p, k in devs.values()})
    print(f"{len(devs)} devices ({', '.join(f'{sum(1 for _p, k in devs.values() if k == kind)} {kind}s' for kind in kinds)}), "
          f"{args.rounds} full polls each, all devices of a poll concurrently, snmpsim on loopback")
    print(f"{'':28}{'CPU s/poll':>12}{'wall s/poll':>13}{'series':>8}{'RSS MB':>8}")
    print(f"{'commune agent (pysnmp 7)':28}{our_cpu:12.4f}{our_wall:13.4f}{our_series:8d}{our_rss:8.1f}")
    print(f"{'snmp_exporter 0.21 (Go)':28}{exp_cpu:12.4f}{exp_wall:13.4f}{exp_series:8d}{exp_rss:8.1f}")
    print(f"ratio agent/exporter: CPU {our_cpu / exp_cpu if exp_cpu else float('inf'):.1f}x, "
          f"wall {our_wall / exp_wall if exp_wall else float('inf'):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
