"""The rules and the dashboards at one fleet size (bench/fleet_sim.py --rules).

The simulated fleet, with its inventory (a generated fleet file on every replica), pushes its
batches through the replicas into VictoriaMetrics and a real Prometheus at once (two upstreams);
both stores scrape the replicas' /metrics. Every rule file of collector/rules/ is loaded into that
Prometheus and into vmalert (against VictoriaMetrics, writing its results back there), each group
evaluated every 30 s instead of its own interval (1-10 min) so that a few minutes give enough
rounds; the cost at the real intervals is scaled back. After the load, with nothing else
arriving, the engines run for ``minutes``: their CPU over that time (Prometheus; vmalert and
VictoriaMetrics), each group's evaluation time from their own metrics, and the failures. Then every
query of dashboards/queries.py is timed against both stores as a range query over the data held,
the slowest again three times (median).

What this does not show: the stores hold only the minutes of history the load wrote, so the
[1d], [7d] and [30d] ranges of the availability and replacement rules read far fewer samples than
they will after a month; the measured rule cost is a lower bound for those groups.
"""
from __future__ import annotations

import asyncio
import json
import statistics
import time
import urllib.parse
from pathlib import Path
from typing import Dict, List, Tuple

import yaml

from bench import fleet_procs as fp

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "collector" / "rules"
EVAL_S = 30.0


def fleet_file(path: Path, communes: int, shape) -> None:
    from bench.fleet_sim import KINDS

    doc = {"communes": [], "devices": []}
    for c in range(communes):
        code = f"{20000 + c:05d}"
        doc["communes"].append({"code": code, "name": f"Xã Mô Phỏng {c + 1}", "province": "Phú Thọ"})
        for i in range(shape.pcs):
            agent = f"pc-{i + 1:02d}"
            doc["devices"].append({"id": agent, "commune": code, "kind": "pc", "model": "Dell OptiPlex 3020",
                                   "purchase_date": f"{2014 + (c + i) % 10}-03-12", "agent": agent})
        for kind in KINDS:
            for j in range(getattr(shape, kind)):
                dev = {"id": f"{kind}-{j + 1:02d}", "commune": code, "kind": kind, "model": kind,
                       "purchase_date": f"{2016 + (c + j) % 8}-06-01", "agent": "pc-01", "target": f"{kind}-{j + 1:02d}"}
                if kind == "printer":
                    dev["rated_life_pages"] = 300000
                doc["devices"].append(dev)
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))


def rule_copies(tmp: Path) -> Dict[str, float]:
    """Every rule file with each group at EVAL_S; returns the real interval of each group."""
    tmp.mkdir(parents=True, exist_ok=True)
    real = {}
    for src in sorted(RULES.glob("*.yml")):
        doc = yaml.safe_load(src.read_text())
        for g in doc["groups"]:
            iv = g.get("interval", "1m")
            real[g["name"]] = float(iv[:-1]) * {"s": 1, "m": 60, "h": 3600}[iv[-1]]
            g["interval"] = f"{EVAL_S:g}s"
        (tmp / src.name).write_text(yaml.safe_dump(doc, allow_unicode=True))
    return real


def metrics(url: str) -> List[Tuple[str, Dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for fam in text_string_to_metric_families(fp.http_get(url + "/metrics").decode()):
        out += [(s.name, s.labels, s.value) for s in fam.samples]
    return out


def group_durations(engine: str, url: str) -> Dict[str, float]:
    """Mean evaluation time of each group so far, from the engine's own metrics."""
    m = metrics(url)
    if engine == "prometheus":  # rule_group="<file>;<group>"
        return {l["rule_group"].split(";")[-1]: v for n, l, v in m if n == "prometheus_rule_group_last_duration_seconds"}
    sums = {l["group"]: v for n, l, v in m if n == "vmalert_iteration_duration_seconds_sum"}
    counts = {l["group"]: v for n, l, v in m if n == "vmalert_iteration_duration_seconds_count"}
    return {g: sums[g] / counts[g] for g in sums if counts.get(g)}


def failures(engine: str, url: str) -> float:
    names = (("prometheus_rule_evaluation_failures_total",) if engine == "prometheus" else
             ("vmalert_recording_rules_errors_total", "vmalert_alerting_rules_errors_total"))
    return sum(v for n, _l, v in metrics(url) if n in names)


def substitute(q: str, span_s: int) -> str:
    for var, val in (("$__rate_interval", "4m"), ("$__range", f"{span_s}s"), ("$__interval", "1m")):
        q = q.replace(var, val)
    for var in ("commune", "agent", "printer", "router", "ups", "hop", "service", "kind"):
        q = q.replace(f"${var}", ".+")
    return q


def time_query(store: str, q: str, start: float, end: float, step: int) -> float:
    url = f"{store}/api/v1/query_range?" + urllib.parse.urlencode({"query": q, "start": start, "end": end, "step": step})
    t = time.perf_counter()
    body = json.loads(fp.http_get(url, timeout=120))
    if body.get("status") != "success":
        raise RuntimeError(f"{q}: {body}")
    return time.perf_counter() - t


def dashboard_queries(prom: str, vm: str, start: float, end: float) -> Dict[str, Tuple[float, float]]:
    from dashboards import queries

    span = int(end - start)
    step = max(15, span // 250)
    found = {n: substitute(v, span) for n, v in vars(queries).items()
             if n.isupper() and isinstance(v, str) and ("{" in v or "(" in v)}
    first = {}
    for name, q in found.items():
        try:
            first[name] = (time_query(prom, q, start, end, step), time_query(vm, q, start, end, step))
        except Exception as exc:  # a query one store does not take: reported, not timed
            print(f"   query {name} failed: {str(exc)[:200]}")
    slowest = sorted(first, key=lambda n: -max(first[n]))[:8]
    return {n: tuple(statistics.median(time_query(s, found[n], start, end, step) for _ in range(3))
                     for s in (prom, vm)) for n in slowest}


def run(tmp: Path, communes: int, shape, templates, replicas: int, minutes: float, speedup: float = 8.0,
        windows: int = 6) -> dict:
    from bench.fleet_sim import Stack, build_fleet, run_fleet, sim_t0_ms

    tmp.mkdir(parents=True, exist_ok=True)
    real = rule_copies(tmp / "rules")
    rule_files = sorted((tmp / "rules").glob("*.yml"))
    fleet_path = tmp / "fleet.yaml"
    fleet_file(fleet_path, communes, shape)
    procs = []
    stack = None
    try:
        # the stores scrape the replicas: their ports are chosen first
        ports = [fp.free_port() for _ in range(replicas)]
        am_proc, am = fp.start_alertmanager(tmp)
        procs.append(am_proc)
        prom_proc, prom = fp.start_prometheus(tmp / "prom", rule_files, [{
            "job_name": "collector", "scrape_interval": "15s",
            "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports]}]}], evaluation_interval=f"{EVAL_S:g}s",
            alertmanager=am)
        procs.append(prom_proc)
        stack = Stack(tmp / "stack", replicas, (prom + "/api/v1/write",), fleet_path, vm_scrape=True, ports=ports)
        al_proc, vmalert = fp.start_vmalert(tmp, rule_files, stack.vm, am, f"{EVAL_S:g}s")
        procs.append(al_proc)
        fleet = build_fleet(communes, shape, stack.keyring, templates)
        t0 = sim_t0_ms(speedup, 0, windows)
        print(f"rules: {communes} communes, {windows} batches of 2 minutes each, into both stores ...", flush=True)
        stats = asyncio.run(run_fleet(stack.lb + "/api/v1/write", fleet, t0, speedup, 0, windows=windows))
        print(f"   sent {stats.samples:,} samples, failed {stats.failed}; rule engines alone for {minutes:g} min",
              flush=True)
        c0 = {"prom": fp.proc_cpu_seconds(prom_proc.pid), "vmalert": fp.proc_cpu_seconds(al_proc.pid),
              "vm": fp.proc_cpu_seconds(stack.vm_proc.pid)}
        w0 = time.monotonic()
        time.sleep(minutes * 60)
        wall = time.monotonic() - w0
        c1 = {"prom": fp.proc_cpu_seconds(prom_proc.pid), "vmalert": fp.proc_cpu_seconds(al_proc.pid),
              "vm": fp.proc_cpu_seconds(stack.vm_proc.pid)}
        series = int(json.loads(fp.http_get(stack.vm + "/api/v1/series/count"))["data"][0])
        out = {"vm_series": series, "history_s": windows * 120, "samples": stats.samples,
               "rss_mb": {"prometheus": fp.proc_rss_mb(prom_proc.pid), "victoria-metrics": fp.proc_rss_mb(stack.vm_proc.pid),
                          "vmalert": fp.proc_rss_mb(al_proc.pid)}}
        for engine, url, cpu, store_cpu in (("prometheus", prom, c1["prom"] - c0["prom"], 0.0),
                                            ("vmalert", vmalert, c1["vmalert"] - c0["vmalert"], c1["vm"] - c0["vm"])):
            d = group_durations(engine, url)
            rounds = wall / EVAL_S
            weight_test = sum(d.values()) / EVAL_S
            weight_real = sum(v / real.get(g, 60.0) for g, v in d.items())
            cores = (cpu + store_cpu) / wall * (weight_real / weight_test if weight_test else 0.0)
            out[engine] = {"cpu_cores": cores, "engine_cpu_s_per_round": cpu / rounds,
                           "store_cpu_s_per_round": store_cpu / rounds, "errors": failures(engine, url),
                           "slowest": sorted(d.items(), key=lambda kv: -kv[1]), "groups": len(d)}
        print("   " + json.dumps({k: v for k, v in out.items()}, default=str)[:3000], flush=True)
        end = time.time()
        out["queries"] = dashboard_queries(prom, stack.vm, t0 / 1000, end)
        return out
    finally:
        fp.stop_all(procs)
        if stack is not None:
            stack.stop()
