"""Figures of bench/fleet_sim.py: one line per measured fleet size, then a straight line through
them (least squares) extrapolated to one province and to the nation."""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

PROVINCE_COMMUNES = 95
NATION_COMMUNES = 3300
WINDOW_S = 120
# Head-room kept on every figure that sizes hardware: a replica or store at half its capacity.
HEADROOM = 2.0


def describe_templates(t, shape) -> str:
    series, samples = t.per_commune(shape)
    kinds = ", ".join(f"{k} {t.series(k)} series / {t.samples(k)} samples" for k in ("printer", "router", "ups"))
    return (f"templates ({t.doc['captured']}, real agent, ICMP {'on' if t.doc['icmp'] else 'off'}): a PC "
            f"{t.series()} series / {t.samples()} samples per 2 minutes; {kinds}\n"
            f"one commune = {shape.pcs} PCs (the first polls the devices) + {shape.printer} printers, "
            f"{shape.router} routers, {shape.ups} UPSes: {series:,} series, {samples:,} samples per 2 min "
            f"= {samples / WINDOW_S:,.0f} samples/s")


def size_line(r: dict) -> str:
    rss = ", ".join(f"{v:.0f}" for v in r["replica_rss_mb"].values())
    return (f"{r['communes']:>4} communes ({r['pcs']} PCs, {r['devices']} devices, {r['vm_series']:,} series) x{r['speedup']:g}"
            f" = {r['communes_sustained']:g} communes at 2-min batching: {r['samples_per_s']:,.0f} samples/s, "
            f"collector {r['collector_cpu_ms_per_1k']:.2f} CPU ms/1k samples ({r['collector_cores']:.2f} cores), "
            f"haproxy {r['haproxy_cpu_ms_per_1k']:.2f}, VM {r['vm_cpu_ms_per_1k']:.2f} ({r['vm_cores']:.2f} cores); "
            f"RSS replicas {rss} MB, VM {r['vm_rss_mb']:.0f} MB; VM disk {r['vm_disk_bytes_per_sample']:.2f} B/sample "
            f"+ index {r['vm_index_bytes_per_series']:.0f} B/series; sender {r['sender_cpu_ms_per_1k']:.2f} CPU ms/1k; "
            f"latency p50 {r['latency_p50_s'] * 1000:.0f} ms p99 {r['latency_p99_s'] * 1000:.0f} ms; "
            f"behind schedule p99 {r['lag_p99_s']:.1f} s max {r['lag_max_s']:.1f} s; retries {r['retries']}, "
            f"failed {r['failed']}; load {r['load_avg']:.1f}")


def fit(xs: List[float], ys: List[float]) -> Tuple[float, float]:
    """(intercept, slope) of the least-squares line; a line through 0 for one point."""
    if len(xs) < 2:
        return 0.0, ys[0] / xs[0]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - slope * mx, slope


def sustained(r: dict) -> bool:
    return r["failed"] == 0 and r["lag_p99_s"] < 5.0


def extrapolate(results: List[dict], rules: Optional[dict], t, shape, history: Optional[dict] = None) -> List[dict]:
    """``history``: a run with hours of history per series, whose disk figures replace the short runs'."""
    ok = [r for r in results if sustained(r)] or results
    series_c, samples_c = t.per_commune(shape)
    rate_c = samples_c / WINDOW_S
    sps = [r["samples_per_s"] for r in ok]
    coll = fit(sps, [r["collector_cores"] for r in ok])
    vmc = fit(sps, [r["vm_cores"] for r in ok])
    vmm = fit([r["vm_series"] for r in ok], [r["vm_rss_mb"] for r in ok])
    replica_rss = max(v for r in ok for v in r["replica_rss_mb"].values())
    disk = sorted(r["vm_disk_bytes_per_sample"] for r in ok)[len(ok) // 2]
    index = sorted(r["vm_index_bytes_per_series"] for r in ok)[len(ok) // 2]
    if history:
        disk, index = history["vm_disk_bytes_per_sample"], history["vm_index_bytes_per_series"]
    wire = sum(r["body_bytes"] for r in ok) / sum(r["samples"] for r in ok)
    out = []
    for name, communes in (("province", PROVINCE_COMMUNES), ("nation", NATION_COMMUNES)):
        rate, series = communes * rate_c, communes * series_c
        coll_cores = max(coll[0] + coll[1] * rate, 0.0)
        row = {"name": name, "communes": communes, "pcs": communes * shape.pcs, "devices": communes * shape.devices,
               "samples_per_s": rate, "series": series, "collector_cores": coll_cores,
               "replicas": max(2, math.ceil(coll_cores * HEADROOM)),
               "replica_rss_mb": replica_rss, "vm_cores": max(vmc[0] + vmc[1] * rate, 0.0),
               "vm_rss_mb": max(vmm[0] + vmm[1] * series, 0.0),
               # samples, plus the per-day index entries VictoriaMetrics writes for every active series
               "disk_gb_per_day": (rate * 86400 * disk + series * index) / 1e9, "ingress_mbit_s": rate * wire * 8 / 1e6,
               "ingress_gb_per_day": rate * wire * 86400 / 1e9}
        row["disk_tb_per_400d"] = row["disk_gb_per_day"] * 400 / 1000
        if rules:
            scale = series / max(rules["vm_series"], 1)
            for engine in ("prometheus", "vmalert"):
                row[f"rules_{engine}_cores"] = rules[engine]["cpu_cores"] * scale
        out.append(row)
    return out


def report(results: List[dict], rules: Optional[dict], t, shape, history: Optional[dict] = None) -> str:
    lines = ["", "measured (this machine: 2 cores shared with other jobs; every figure from one run):"]
    lines += ["  " + size_line(r) + ("" if sustained(r) else "   <- NOT sustained") for r in results]
    if history:
        lines.append("  disk figures from: " + size_line(history))
    if rules:
        lines += ["", "recording and alert rules at the largest size (" + f"{rules['vm_series']:,} series):"]
        for engine in ("prometheus", "vmalert"):
            e = rules[engine]
            lines.append(f"  {engine:10s}: {e['cpu_cores']:.3f} cores at the real group intervals "
                         f"(engine {e['engine_cpu_s_per_round']:.2f} + store {e['store_cpu_s_per_round']:.2f} "
                         f"CPU s per round of every group), slowest groups: " +
                         ", ".join(f"{g} {d * 1000:.0f} ms" for g, d in e["slowest"][:4]) +
                         (f"; errors {e['errors']}" if e.get("errors") else ""))
        if "rss_mb" in rules:
            lines.append("  RSS holding the same data: " + ", ".join(f"{k} {v:.0f} MB" for k, v in rules["rss_mb"].items()))
        lines.append("  dashboard queries (median of 3, ms) prometheus / victoria-metrics:")
        for q, (pt, vt) in rules["queries"].items():
            lines.append(f"    {q:32s} {pt * 1000:8.0f} / {vt * 1000:8.0f}")
    ext = extrapolate(results, rules, t, shape, history)
    lines += ["", "extrapolated from the slope (straight line through the sustained sizes; hardware figures "
              f"with {HEADROOM:g}x head-room where noted):"]
    hdr = (f"  {'':9s} {'communes':>8s} {'PCs':>7s} {'devices':>8s} {'samples/s':>10s} {'series':>11s} "
           f"{'coll.cores':>10s} {'replicas':>8s} {'VM cores':>8s} {'VM RAM GB':>9s} {'disk GB/d':>9s} "
           f"{'TB/400d':>7s} {'Mbit/s in':>9s}")
    lines.append(hdr)
    for row in ext:
        lines.append(f"  {row['name']:9s} {row['communes']:>8,} {row['pcs']:>7,} {row['devices']:>8,} "
                     f"{row['samples_per_s']:>10,.0f} {row['series']:>11,} {row['collector_cores']:>10.2f} "
                     f"{row['replicas']:>8} {row['vm_cores']:>8.2f} {row['vm_rss_mb'] / 1024:>9.2f} "
                     f"{row['disk_gb_per_day']:>9.2f} {row['disk_tb_per_400d']:>7.2f} {row['ingress_mbit_s']:>9.2f}")
        if rules:
            lines.append(f"  {'':9s} rules: Prometheus {row['rules_prometheus_cores']:.2f} cores, "
                         f"vmalert + VictoriaMetrics {row['rules_vmalert_cores']:.2f} cores (linear in series)")
    lines.append(f"  replicas: collector cores x {HEADROOM:g}, at least 2; each replica about "
                 f"{ext[0]['replica_rss_mb']:.0f} MB RSS (measured at the largest sustained rate; it follows the requests in flight)")
    return "\n".join(lines)


def main() -> int:
    """Print the report again from saved runs: ``fleet_report.py SIZES.json [--rules R.json] [--history H.json]``."""
    import argparse
    import json
    from pathlib import Path

    from bench.fleet_sim import Shape, Templates

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("sizes", type=Path, help="--json output of fleet_sim.py with the fleet sizes")
    p.add_argument("--rules", type=Path, help="--json output holding the rules phase (default: the sizes file's)")
    p.add_argument("--history", type=Path, help="--json output of a long-history run (its disk figures are used)")
    args = p.parse_args()
    doc = json.loads(args.sizes.read_text())
    rules = json.loads(args.rules.read_text())["rules"] if args.rules else doc.get("rules")
    history = json.loads(args.history.read_text())["sizes"][0] if args.history else None
    shape, t = Shape(**doc["shape"]), Templates()
    print(describe_templates(t, shape))
    print(report(doc["sizes"], rules, t, shape, history))
    return 0


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
