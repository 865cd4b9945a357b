"""The Python side of deploy/quickstart.sh: venv check, free ports, readiness polls, configs.

    stack.py venv-ok REPO                   exit 0 if the venv running this holds the project (editable,
                                            from REPO) and every requirement of its "all" extra
    stack.py port-free PORT                 exit 0 if 127.0.0.1:PORT can be bound
    stack.py pick-port PORT [TAKEN...]      first port from PORT up that is free and not in TAKEN
    stack.py wait-http URL SECONDS PIDFILE  poll URL until it answers 2xx; fail early if the pid dies
    stack.py has-series PROM_URL QUERY SECONDS   poll Prometheus until QUERY returns a series
    stack.py post URL                       POST an empty body (Prometheus /-/reload); exit 1 unless 2xx
    stack.py configs                        write every config from the QS_* environment (needs PyYAML)

Everything but ``configs`` uses the standard library only, so it runs before the venv exists.
Nothing here talks to anything but 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path


# ---------------------------------------------------------------- venv

def venv_ok(repo: str) -> bool:
    """The project is installed from ``repo`` with every requirement of the ``all`` extra."""
    import importlib.metadata as md

    try:
        dist = md.distribution("commune-monitor")
    except md.PackageNotFoundError:
        return False
    try:
        import agent  # noqa: F401  (editable install: must come from this checkout)
    except ImportError:
        return False
    if not Path(agent.__file__).resolve().is_relative_to(Path(repo).resolve()):
        return False
    try:
        from packaging.requirements import Requirement
    except ImportError:
        try:
            from pip._vendor.packaging.requirements import Requirement
        except ImportError:  # neither: let pip install decide
            return False
    wanted = {"all"}
    reqs = [Requirement(r) for r in (dist.requires or [])]
    # "all" names the project's other extras: expand them
    for r in reqs:
        if r.name == "commune-monitor" and (r.marker is None or r.marker.evaluate({"extra": "all"})):
            wanted |= set(r.extras)
    for r in reqs:
        if r.name == "commune-monitor":
            continue
        if r.marker is not None and not any(r.marker.evaluate({"extra": e}) for e in wanted | {""}):
            continue
        try:
            version = md.version(r.name)
        except md.PackageNotFoundError:
            return False
        if r.specifier and not r.specifier.contains(version, prereleases=True):
            return False
    return True


# ---------------------------------------------------------------- ports and polls

def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(start: int, taken: set) -> int:
    for port in range(start, min(start + 200, 65536)):
        if port not in taken and port_free(port):
            return port
    raise SystemExit(f"no free port on 127.0.0.1 from {start} to {start + 199}")


def _pid_alive(pidfile: str) -> bool:
    try:
        pid = int(Path(pidfile).read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def wait_http(url: str, seconds: float, pidfile: str) -> int:
    deadline = time.monotonic() + seconds
    last = "no answer"
    while time.monotonic() < deadline:
        if pidfile and not _pid_alive(pidfile):
            print(f"the process exited before {url} answered", file=sys.stderr)
            return 1
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if 200 <= resp.status < 300:
                    return 0
                last = f"HTTP {resp.status}"
        except Exception as exc:  # not up yet
            last = str(getattr(exc, "reason", exc))
        time.sleep(0.2)
    print(f"{url} did not answer within {seconds:g}s ({last})", file=sys.stderr)
    return 1


def has_series(prom: str, query: str, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    url = f"{prom.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if json.loads(resp.read())["data"]["result"]:
                    return 0
        except Exception:  # Prometheus busy or starting
            pass
        time.sleep(1)
    return 1


def post(url: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=60) as resp:
            return 0 if 200 <= resp.status < 300 else 1
    except Exception as exc:  # refused, or an error status (a broken rule file)
        detail = exc.read().decode("utf-8", "replace").strip() if hasattr(exc, "read") else ""
        print(f"POST {url}: {getattr(exc, 'reason', exc)} {detail}".strip(), file=sys.stderr)
        return 1


# ---------------------------------------------------------------- configs

def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _ping_sockets_allowed() -> bool:
    """Whether this user may open unprivileged ICMP sockets (net.ipv4.ping_group_range)."""
    if os.geteuid() == 0:
        return True
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ping_group_range").read_text().split())
    except (OSError, ValueError):
        return False
    return any(low <= g <= high for g in set(os.getgroups()) | {os.getegid()})


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write only when the content changes (the script restarts a process whose config changed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _yaml(header: str, data) -> str:
    import yaml

    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def configs() -> int:
    import yaml

    env = os.environ
    repo, prefix = Path(env["QS_REPO"]), Path(env["QS_PREFIX"])
    etc, data, logs = prefix / "etc", prefix / "data", prefix / "log"
    ports = {k: int(env[f"QS_PORT_{k.upper()}"]) for k in ("collector", "prometheus", "alertmanager", "agent",
                                                            "grafana")}
    commune, agent_id = env["QS_COMMUNE"], env["QS_AGENT_ID"]
    generated = "# Generated by deploy/quickstart.sh; rewritten on every run (edit the script's options instead).\n"

    # Prometheus: the central config with this stack's ports and the repository's rules.
    prom = yaml.safe_load((repo / "collector" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    prom["rule_files"] = [str(repo / "collector" / "rules" / "*.yml")]
    prom["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [f"127.0.0.1:{ports['alertmanager']}"]}]}]
    prom["global"]["external_labels"]["runbook_base"] = f"http://127.0.0.1:{ports['collector']}/runbooks"
    for job in prom["scrape_configs"]:
        for sc in job.get("static_configs", []):
            sc["targets"] = [f"127.0.0.1:{ports['collector']}"]
        for sd in job.get("http_sd_configs", []):
            sd["url"] = f"http://127.0.0.1:{ports['collector']}/api/v1/sd"
    _write(etc / "prometheus.yml", _yaml(generated, prom))

    # Alertmanager: the central routing's grouping and inhibitions, but one receiver that sends
    # nothing anywhere (alerts are visible on its web page and in `commune-collector status`).
    central = yaml.safe_load((repo / "collector" / "alertmanager" / "alertmanager.yml").read_text(encoding="utf-8"))
    route = central["route"]
    am = {
        "route": {"receiver": "nowhere", "group_by": route["group_by"], "group_wait": route["group_wait"],
                  "group_interval": route["group_interval"], "repeat_interval": route["repeat_interval"]},
        "inhibit_rules": central.get("inhibit_rules", []),
        "receivers": [{"name": "nowhere"}],
    }
    _write(etc / "alertmanager.yml", _yaml(generated + "# No receiver sends anything: see the alerts on the web page.\n", am))

    # Fleet: the demo commune and this machine as its one PC.
    fleet = {
        "communes": [{"code": commune, "name": env.get("QS_COMMUNE_NAME") or f"Quickstart {commune}",
                      "province": "Quickstart"}],
        "devices": [{"id": re.sub(r"[^a-z0-9._-]", "-", agent_id.lower()), "commune": commune, "kind": "pc",
                     "model": env.get("QS_MODEL") or "this machine", "location": "quickstart",
                     "agent": agent_id}],
    }
    _write(etc / "fleet.yaml", _yaml(generated, fleet))

    collector = {
        "log_level": "info",
        "web": {"listen_address": f"127.0.0.1:{ports['collector']}"},
        "upstreams": [{"url": f"http://127.0.0.1:{ports['prometheus']}/api/v1/write", "name": "prometheus"}],
        "state": {"dir": str(data / "collector")},
        "fleet_file": str(etc / "fleet.yaml"),
    }
    _write(etc / "collector.yaml", _yaml(generated, collector))

    # Agent: this machine on the product defaults (gateway ping included), pushing to the collector;
    # the --agent-config fragment is merged over it.
    agent = {
        "agent": {"id": agent_id, "state_dir": str(data / "agent")},
        "web": {"listen_address": f"127.0.0.1:{ports['agent']}"},
        "push": {"enabled": True, "url": f"http://127.0.0.1:{ports['collector']}/api/v1/write",
                 "batch_delay": "5s"},  # a demo shows data at once; offices keep the 2m default
    }
    extra = {}
    if env.get("QS_AGENT_CONFIG"):
        extra = yaml.safe_load(Path(env["QS_AGENT_CONFIG"]).read_text(encoding="utf-8")) or {}
        if not isinstance(extra, dict):
            print(f"{env['QS_AGENT_CONFIG']}: expected a mapping of agent config sections", file=sys.stderr)
            return 1
    merged = _merge(agent, extra)
    if (merged.get("icmp") or {}).get("enabled", True) and not _ping_sockets_allowed():
        # the agent still runs: the gateway probe fails each round with the fix in its log
        print("note: this user may not open ping sockets (net.ipv4.ping_group_range): the gateway "
              "ping will fail until they are allowed (docs/deploy.md) or the quickstart runs as root",
              file=sys.stderr)
    _write(etc / "agent.yaml", _yaml(generated, merged))

    # Grafana (only used when grafana-server is installed): data source and dashboards provisioned.
    gf = etc / "grafana"
    prov = repo / "deploy" / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "commune-monitor.yml").read_text(encoding="utf-8"))
    for source in ds["datasources"]:
        source["url"] = f"http://127.0.0.1:{ports['prometheus']}"
    _write(gf / "provisioning" / "datasources" / "commune-monitor.yml", _yaml(generated, ds))
    boards = yaml.safe_load((prov / "dashboards" / "commune-monitor.yml").read_text(encoding="utf-8"))
    for provider in boards["providers"]:
        provider["options"]["path"] = str(repo / "dashboards" / "generated" / env.get("QS_LANG", "vi"))
    _write(gf / "provisioning" / "dashboards" / "commune-monitor.yml", _yaml(generated, boards))
    for empty in ("plugins", "notifiers", "alerting"):
        (gf / "provisioning" / empty).mkdir(parents=True, exist_ok=True)
    ini = f"""; Generated by deploy/quickstart.sh.
[paths]
data = {data / 'grafana'}
logs = {logs / 'grafana'}
plugins = {data / 'grafana' / 'plugins'}
provisioning = {gf / 'provisioning'}

[server]
http_addr = 127.0.0.1
http_port = {ports['grafana']}

[security]
admin_user = admin
admin_password = $__file{{{etc / 'grafana-admin-password'}}}

[users]
allow_sign_up = false

[analytics]
reporting_enabled = false
check_for_updates = false
check_for_plugin_updates = false

[news]
news_feed_enabled = false
"""
    _write(gf / "grafana.ini", ini)
    return 0


def main(argv) -> int:
    cmd, args = argv[0], argv[1:]
    if cmd == "venv-ok":
        return 0 if venv_ok(args[0]) else 1
    if cmd == "port-free":
        return 0 if port_free(int(args[0])) else 1
    if cmd == "pick-port":
        print(pick_port(int(args[0]), {int(a) for a in args[1:]}))
        return 0
    if cmd == "wait-http":
        return wait_http(args[0], float(args[1]), args[2] if len(args) > 2 else "")
    if cmd == "has-series":
        return has_series(args[0], args[1], float(args[2]))
    if cmd == "post":
        return post(args[0])
    if cmd == "configs":
        return configs()
    print(f"stack.py: unknown command {cmd!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
