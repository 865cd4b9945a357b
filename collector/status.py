"""``commune-collector status``: the state of the fleet at a glance, read from Prometheus.

    commune-collector status [--prometheus URL] [--recent 5m] [--limit 10] [--json]

Five parts, each from series the collector and the rules already provide:
  communes online      an agent of the commune pushed within --recent
                       (commune_agent_last_push_timestamp_seconds, commune_collector_agent_info,
                       and the fleet's commune_office_info for communes with no agent at all)
  devices down         SNMP targets not answering (commune_snmp_up == 0) and probes failing
                       (probe_success == 0), the probes grouped by business service
                       (commune_probe_target_info{service})
  firing alerts        ALERTS{alertstate="firing"}, counted by severity
  agents               how many run each version (commune_agent_build_info), those whose last push
                       is older than --stale (or never, holding a token), and inventory devices never
                       seen within --seen: a PC whose agent never pushed, an SNMP device never up
  replacement          the highest commune:device_replacement_score:top_reason with its reason and
                       its recommended actions (commune:device_replacement_action:info)

:func:`gather` runs the queries; :func:`summarize` turns their results into one plain dict (what
``--json`` prints); :func:`render` writes it for a terminal. Prometheus unreachable: one line on
stderr and exit 1.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Dict, List, Optional, Tuple

from collector.report.budget import ACTIONS  # the rules' actions, in the order they are listed

from collector.promapi import Prometheus, PrometheusError

DEFAULT_PROMETHEUS = "http://127.0.0.1:9090"
SEVERITIES = ("critical", "warning", "info")

# name -> PromQL; {limit} is filled in. Every query is evaluated at the same instant.
QUERIES = {
    "offices": "max by (commune, name, province) (commune_office_info)",
    "pushes": "max by (commune, agent) (commune_agent_last_push_timestamp_seconds)",
    "agents": "max by (commune, agent) (commune_collector_agent_info)",
    "snmp_down": "max by (commune, agent, target) (commune_snmp_up) == 0",
    "snmp_devices": 'max by (commune, agent, target, device, kind) (commune_device_info{target!=""})',
    "probes_down": "max by (commune, agent, target, module, hop) (probe_success) == 0",
    "probe_services": "max by (commune, agent, target, module, service) (commune_probe_target_info)",
    "alerts": 'ALERTS{alertstate="firing"}',
    "replacement": "topk({limit}, commune:device_replacement_score:top_reason)",
    "actions": "max by (commune, device, kind, action) (commune:device_replacement_action:info)",
    # agents by version and agents not seen for days ({seen}: how far back anything counts as seen)
    "versions_now": "max by (commune, agent, version) (commune_agent_build_info)",
    "versions_seen": "max by (commune, agent, version) (last_over_time(commune_agent_build_info[{seen}]))",
    "last_pushes": "max by (commune, agent) (last_over_time(commune_agent_last_push_timestamp_seconds[{seen}]))",
    # inventory devices never seen within {seen}: a PC whose agent never pushed, an SNMP device
    # never answering the agent that should poll it (not polled at all, or never up)
    "never_seen_agents": 'max by (commune, device, kind, agent) (commune_device_info{kind=~"pc|laptop"}) '
                         "unless on (commune, agent) "
                         "last_over_time(commune_agent_last_push_timestamp_seconds[{seen}])",
    "never_seen_snmp": 'max by (commune, device, kind, agent, target) (commune_device_info{target!=""}) '
                       "unless on (commune, agent, target) (max_over_time(commune_snmp_up[{seen}]) == 1)",
}
DEFAULT_SEEN = 30 * 86400.0
DEFAULT_STALE = 2 * 86400.0


def gather(base: str, at: float, limit: int = 10, seen: float = DEFAULT_SEEN) -> Dict[str, List[dict]]:
    """Every query of :data:`QUERIES` at time ``at``: name -> result vector."""
    prom = Prometheus(base)
    return {name: prom.query(expr.replace("{limit}", str(int(limit))).replace("{seen}", f"{int(seen)}s"), at)
            for name, expr in QUERIES.items()}


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.+-]", version))


def agents_summary(results: Dict[str, List[dict]], now: float, stale: float) -> dict:
    """Agents by the version they run and agents not seen for ``stale`` seconds (pure).

    An agent's version is what it reports now, else the newest version it reported within the
    window (agents are upgraded, not downgraded); its last push is the newest within the window.
    """
    now_v: Dict[Tuple[str, str], str] = {}
    for item in results.get("versions_now", []):
        key = (item["metric"].get("commune", ""), item["metric"].get("agent", ""))
        v = item["metric"].get("version", "")
        if key not in now_v or _version_key(v) > _version_key(now_v[key]):
            now_v[key] = v
    versions = dict(now_v)
    for item in results.get("versions_seen", []):
        key = (item["metric"].get("commune", ""), item["metric"].get("agent", ""))
        v = item["metric"].get("version", "")
        if key not in now_v and (key not in versions or _version_key(v) > _version_key(versions[key])):
            versions[key] = v
    by_version: Dict[str, int] = {}
    for v in versions.values():
        by_version[v or "unknown"] = by_version.get(v or "unknown", 0) + 1
    last = {}
    for item in results.get("last_pushes", []):
        key = (item["metric"].get("commune", ""), item["metric"].get("agent", ""))
        last[key] = max(_value(item), last.get(key, 0.0))
    known = set(last) | {(i["metric"].get("commune", ""), i["metric"].get("agent", "")) for i in results.get("agents", [])}
    silent = []
    for key in sorted(known):
        ts = last.get(key)
        if ts is None or now - ts > stale:
            silent.append({"commune": key[0], "agent": key[1], "last_push_timestamp": ts,
                           "last_push_age_seconds": None if ts is None else round(now - ts, 3),
                           "version": versions.get(key, "")})
    silent.sort(key=lambda a: (a["last_push_age_seconds"] is not None, -(a["last_push_age_seconds"] or 0),
                               a["commune"], a["agent"]))
    never = []
    for name, why in (("never_seen_agents", "agent never pushed"), ("never_seen_snmp", "never answered SNMP")):
        for item in results.get(name, []):
            m = item["metric"]
            never.append({"commune": m.get("commune", ""), "device": m.get("device", ""), "kind": m.get("kind", ""),
                          "agent": m.get("agent", ""), "target": m.get("target", ""), "why": why})
    never.sort(key=lambda d: (d["commune"], d["device"]))
    return {"by_version": dict(sorted(by_version.items(), key=lambda kv: _version_key(kv[0]), reverse=True)),
            "stale_seconds": stale, "not_seen": silent, "inventory_never_seen": never}


# ---------------------------------------------------------------- the summary (pure)

def _value(item: dict) -> float:
    return float(item["value"][1])


def summarize(results: Dict[str, List[dict]], now: float, recent: float = 300.0, limit: int = 10,
              stale: float = DEFAULT_STALE, seen: float = DEFAULT_SEEN) -> dict:
    """The status as plain data, from the query results of :func:`gather` taken at ``now``."""
    m = lambda item: item["metric"]  # noqa: E731

    # ---- communes and their agents
    communes: Dict[str, dict] = {}

    def commune(code: str) -> dict:
        return communes.setdefault(code, {"commune": code, "name": "", "province": "", "in_fleet": False,
                                          "agents": {}})

    for item in results.get("offices", []):
        c = commune(m(item).get("commune", ""))
        c.update(name=m(item).get("name", ""), province=m(item).get("province", ""), in_fleet=True)
    for item in results.get("agents", []):
        commune(m(item).get("commune", ""))["agents"].setdefault(m(item).get("agent", ""), None)
    for item in results.get("pushes", []):
        agents = commune(m(item).get("commune", ""))["agents"]
        name = m(item).get("agent", "")
        agents[name] = max(_value(item), agents.get(name) or 0.0)

    commune_rows = []
    for code in sorted(communes):
        c = communes[code]
        agents = []
        for name in sorted(c["agents"]):
            last = c["agents"][name]
            age = None if last is None else round(max(0.0, now - last), 3)
            agents.append({"agent": name, "last_push_timestamp": last, "last_push_age_seconds": age,
                           "online": age is not None and age <= recent})
        ages = [a["last_push_age_seconds"] for a in agents if a["last_push_age_seconds"] is not None]
        online = sum(a["online"] for a in agents)
        commune_rows.append({
            "commune": code, "name": c["name"], "province": c["province"], "in_fleet": c["in_fleet"],
            "agents_known": len(agents), "agents_online": online, "online": online > 0,
            "last_push_age_seconds": min(ages) if ages else None, "agents": agents,
        })

    # ---- devices down
    snmp_devices = {(m(i).get("commune"), m(i).get("agent"), m(i).get("target")): m(i)
                    for i in results.get("snmp_devices", [])}
    snmp = []
    for item in results.get("snmp_down", []):
        key = (m(item).get("commune", ""), m(item).get("agent", ""), m(item).get("target", ""))
        dev = snmp_devices.get(key, {})
        snmp.append({"commune": key[0], "agent": key[1], "target": key[2],
                     "device": dev.get("device", ""), "kind": dev.get("kind", "")})
    snmp.sort(key=lambda d: (d["commune"], d["target"], d["agent"]))

    services = {(m(i).get("commune"), m(i).get("agent"), m(i).get("target"), m(i).get("module")): m(i).get("service", "")
                for i in results.get("probe_services", [])}
    probes = []
    for item in results.get("probes_down", []):
        lab = m(item)
        key = (lab.get("commune", ""), lab.get("agent", ""), lab.get("target", ""), lab.get("module", ""))
        probes.append({"service": services.get(key, ""), "commune": key[0], "agent": key[1], "target": key[2],
                       "module": key[3], "hop": lab.get("hop", "")})
    probes.sort(key=lambda p: (p["service"] or "~", p["module"], p["hop"], p["commune"], p["target"], p["agent"]))
    by_service: Dict[str, int] = {}
    for p in probes:
        group = _probe_group(p)
        by_service[group] = by_service.get(group, 0) + 1

    # ---- alerts
    alerts = []
    for item in results.get("alerts", []):
        lab = {k: v for k, v in m(item).items() if k not in ("__name__", "alertstate")}
        alerts.append({"alertname": lab.pop("alertname", ""), "severity": lab.pop("severity", ""),
                       "commune": lab.get("commune", ""), "labels": lab})
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    alerts.sort(key=lambda a: (rank.get(a["severity"], len(SEVERITIES)), a["alertname"], a["commune"],
                               sorted(a["labels"].items())))
    by_severity = {s: 0 for s in SEVERITIES}
    for a in alerts:
        key = a["severity"] or "none"
        by_severity[key] = by_severity.get(key, 0) + 1

    # ---- replacement candidates
    actions: Dict[Tuple[str, str], List[str]] = {}
    for i in results.get("actions", []):
        actions.setdefault((m(i).get("commune", ""), m(i).get("device", "")), []).append(m(i).get("action", ""))
    candidates = [{"commune": m(i).get("commune", ""), "device": m(i).get("device", ""), "kind": m(i).get("kind", ""),
                   "reason": m(i).get("reason", ""), "score": round(_value(i), 1),
                   "actions": sorted(actions.get((m(i).get("commune", ""), m(i).get("device", "")), []),
                                     key=lambda a: ACTIONS.index(a) if a in ACTIONS else 99)}
                  for i in results.get("replacement", [])]
    candidates.sort(key=lambda c: (-c["score"], c["commune"], c["device"]))

    return {
        "time": now,
        "recent_seconds": recent,
        "communes": {"total": len(commune_rows), "online": sum(c["online"] for c in commune_rows),
                     "list": commune_rows},
        "devices_down": {"count": len(snmp) + len(probes), "snmp": snmp, "probes": probes,
                         "probes_by_service": by_service},
        "alerts": {"firing": len(alerts), "by_severity": by_severity, "list": alerts},
        "replacement": candidates[:limit],
        "agents": {**agents_summary(results, now, stale), "seen_seconds": seen},
    }


def _probe_group(p: dict) -> str:
    if p["service"]:
        return p["service"]
    return f"{p['module']} {p['hop']}".strip() if p["hop"] else p["module"]


# ---------------------------------------------------------------- text

def _age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "never"
    s = int(seconds)
    if s < 120:
        return f"{s}s ago"
    if s < 7200:
        return f"{s // 60}m ago"
    if s < 172800:
        return f"{s // 3600}h ago"
    return f"{s // 86400}d ago"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _table(rows: List[List[str]], indent: str = "  ") -> List[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]


def render(summary: dict, prometheus: str = "") -> str:
    out = []
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(summary["time"]))
    out.append(f"commune-monitor status{' from ' + prometheus if prometheus else ''} at {when}")
    out.append("")

    c = summary["communes"]
    recent = summary["recent_seconds"]
    out.append(f"Communes online: {c['online']} of {c['total']} (an agent pushed within the last {_duration(recent)})")
    if c["list"]:
        rows = [["COMMUNE", "NAME", "AGENTS ONLINE", "LAST PUSH", ""]]
        for row in c["list"]:
            rows.append([row["commune"], row["name"] or ("(not in the fleet file)" if not row["in_fleet"] else ""),
                         f"{row['agents_online']}/{row['agents_known']}", _age(row["last_push_age_seconds"]),
                         "" if row["online"] else "OFFLINE"])
        out += _table(rows)
    out.append("")

    d = summary["devices_down"]
    out.append(f"Devices down: {d['count']}")
    if d["snmp"]:
        rows = [["SNMP TARGET", "COMMUNE", "DEVICE", "KIND", "POLLED BY"]]
        rows += [[s["target"], s["commune"], s["device"] or "-", s["kind"] or "-", s["agent"]] for s in d["snmp"]]
        out += _table(rows)
    if d["probes"]:
        if d["snmp"]:
            out.append("")
        rows = [["SERVICE", "TARGET", "MODULE", "HOP", "COMMUNE", "PROBED BY"]]
        rows += [[p["service"] or "-", p["target"], p["module"], p["hop"], p["commune"], p["agent"]]
                 for p in d["probes"]]
        out += _table(rows)
        out.append("  failing probes by service: " + ", ".join(f"{k} {v}" for k, v in d["probes_by_service"].items()))
    out.append("")

    a = summary["alerts"]
    out.append(f"Firing alerts: {a['firing']} (" + ", ".join(f"{k} {v}" for k, v in a["by_severity"].items()) + ")")
    if a["list"]:
        rows = [["SEVERITY", "ALERT", "COMMUNE", "LABELS"]]
        for al in a["list"]:
            extra = " ".join(f"{k}={v}" for k, v in sorted(al["labels"].items())
                             if k not in ("commune", "scope", "monitor"))
            rows.append([al["severity"] or "-", al["alertname"], al["commune"] or "-", extra])
        out += _table(rows)
    out.append("")

    ag = summary.get("agents")
    if ag is not None:
        total = sum(ag["by_version"].values())
        out.append(f"Agents by version: {total} seen within {_duration(ag['seen_seconds'])}"
                   + (" (" + ", ".join(f"{v} {n}" for v, n in ag["by_version"].items()) + ")" if total else ""))
        out.append(f"Agents not seen for {_duration(ag['stale_seconds'])}: {len(ag['not_seen'])}")
        if ag["not_seen"]:
            rows = [["COMMUNE", "AGENT", "LAST PUSH", "VERSION"]]
            rows += [[a["commune"], a["agent"], _age(a["last_push_age_seconds"]), a["version"] or "-"]
                     for a in ag["not_seen"]]
            out += _table(rows)
        out.append(f"Inventory devices never seen within {_duration(ag['seen_seconds'])}: "
                   f"{len(ag['inventory_never_seen'])}")
        if ag["inventory_never_seen"]:
            rows = [["COMMUNE", "DEVICE", "KIND", "AGENT", "TARGET", "WHY"]]
            rows += [[d["commune"], d["device"], d["kind"], d["agent"], d["target"] or "-", d["why"]]
                     for d in ag["inventory_never_seen"]]
            out += _table(rows)
        out.append("")

    r = summary["replacement"]
    out.append(f"Replacement candidates: {len(r)}" + (" (highest scores first)" if r else
                                                       " (no scores yet: the rules compute them every 10 minutes from the fleet file)"))
    if r:
        rows = [["SCORE", "COMMUNE", "DEVICE", "KIND", "MAIN REASON", "ACTION"]]
        rows += [[f"{x['score']:.0f}", x["commune"], x["device"], x["kind"], x["reason"],
                  "+".join(x["actions"]) or "-"] for x in r]
        out += _table(rows)
    if "silences" in summary:
        sil = summary["silences"]
        out.append("")
        if sil.get("error"):
            out.append(f"Maintenance windows: unknown ({sil['error']})")
        else:
            out.append(f"Maintenance windows (Alertmanager silences in force or pending): {len(sil['list'])}")
            if sil["list"]:
                out += _table([["ID", "STATE", "ENDS", "MATCHES", "BY", "REASON"]] + sil["list"])
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- command line

def silences(url: str) -> dict:
    """The silences in force or pending, as rows; an unreachable Alertmanager is said, not fatal."""
    from collector.silence import Alertmanager, SilenceError, describe

    try:
        found = Alertmanager(url).list()
    except SilenceError as exc:
        return {"error": str(exc), "list": []}
    rows = sorted((s for s in found if s.get("status", {}).get("state") != "expired"), key=lambda s: s.get("endsAt", ""))
    return {"error": None, "list": [describe(s) for s in rows]}


def main(argv: Optional[List[str]] = None) -> int:
    from contract.schema import parse_duration

    p = argparse.ArgumentParser(prog="commune-collector status",
                                description="Communes online, devices down, firing alerts and replacement "
                                            "candidates, read from Prometheus.")
    p.add_argument("--prometheus", default=DEFAULT_PROMETHEUS, metavar="URL",
                   help=f"Prometheus base URL (default {DEFAULT_PROMETHEUS})")
    p.add_argument("--recent", default="5m", metavar="DURATION",
                   help="an agent that pushed within this is online (default 5m)")
    p.add_argument("--limit", type=int, default=10, metavar="N", help="replacement candidates shown (default 10)")
    p.add_argument("--stale", default="2d", metavar="DURATION",
                   help="list agents whose last push is older than this (default 2d)")
    p.add_argument("--seen", default="30d", metavar="DURATION",
                   help="how far back an agent or device counts as seen at all (default 30d)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--alertmanager", default=None, metavar="URL",
                   help="also list the maintenance windows (silences) of this Alertmanager")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        recent = parse_duration(args.recent)
    except ValueError as exc:
        p.error(f"--recent: {exc}")
    try:
        stale, seen = parse_duration(args.stale), parse_duration(args.seen)
    except ValueError as exc:
        p.error(f"--stale/--seen: {exc}")
    if not 0 < stale <= seen:
        p.error("--stale must be greater than 0 and at most --seen")
    if args.limit < 1:
        p.error("--limit: must be at least 1")
    if not args.prometheus.startswith(("http://", "https://")):
        p.error(f"--prometheus: expected an http:// or https:// URL, got {args.prometheus!r}")

    now = time.time()
    try:
        results = gather(args.prometheus, now, args.limit, seen)
    except PrometheusError as exc:
        print(f"commune-collector status: {exc}", file=sys.stderr)
        return 1
    summary = summarize(results, now, recent, args.limit, stale, seen)
    if args.alertmanager:
        summary["silences"] = silences(args.alertmanager)
    if args.json:
        json.dump(summary, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render(summary, args.prometheus))
    return 0
