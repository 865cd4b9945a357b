"""Several collector replicas behind a real load balancer (Debian's haproxy), forwarding to a real
VictoriaMetrics single-node: one replica is killed (SIGKILL) while real agents drain a backlog
through them, and every sample arrives, counted end to end.

What the replicas share and how (docs/scale.md, "Topology and shared state"):
- agent tokens are signed (collector.credentials): each replica verifies them with the key file;
- revocations travel in the revocation list, here one file in a directory every replica reads (a
  shared volume; config management copying the file works the same);
- enrollment, whose keys count their uses, runs on one designated replica: the balancer routes
  ``/api/v1/enroll`` (and ``/api/v1/sd``, which lists what that replica's tokens.json holds) to it;
- a token issued before signing (tokens.json) works on every replica holding a copy of that file.
"""
from __future__ import annotations

import concurrent.futures
import json
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

from agent.push import encode_batch
from agent.queue import Queue
from contract.samples import Batch, Sample
from collector.credentials import SIGNED_PREFIX, create_key, read_revocations
from collector.state import Store
from tests.support import (Proc, agent_command, free_port, http_get, need_binary, start_victoria_metrics,
                           wait_until)
from tests.support import collector_command
from tests.test_collector_ingest import (collector_metrics, encode, http_ok_status,
                                         metric_value, now_ms, post, post_json, series, start_collector)
from tests.test_push_e2e import Agent, agent_config

pytestmark = pytest.mark.slow

BACKLOG_METRIC = "replica_test_backlog_value"
BACKLOG_BATCHES = 300       # per agent: 300 collections of ...
SERIES_PER_BATCH = 100      # ... 100 series each = 30,000 samples per agent
MAX_SAMPLES_PER_REQUEST = 100  # one collection per request: about 900 requests in all


def start_haproxy(tmp: Path, replicas: List[str], enroll_replica: str, retries: bool = True) -> Tuple[Proc, str]:
    """haproxy in front of the replicas: writes round robin over those whose /-/ready answers 200,
    enrollment and http_sd to the one replica that keeps tokens.json. With ``retries`` a request a
    dead replica refused or left unanswered is sent to another one (safe: a write is idempotent);
    without, the agent is answered 502/503 and retries itself."""
    binary = need_binary("haproxy")
    port = free_port()

    def server_lines(urls):
        out = []
        for i, u in enumerate(urls):
            hostport = urllib.parse.urlsplit(u).netloc
            out.append(f"    server r{i} {hostport} check inter 300ms fall 1 rise 2")
        return "\n".join(out)

    retry_lines = ("    option redispatch\n    retries 3\n    retry-on conn-failure empty-response response-timeout"
                   if retries else "    retries 0")
    cfg = f"""
global
    maxconn 512
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 30s
{retry_lines}
frontend agents
    bind 127.0.0.1:{port}
    use_backend enrollment if {{ path_beg /api/v1/enroll }} || {{ path_beg /api/v1/sd }}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /-/ready
{server_lines(replicas)}
backend enrollment
    option httpchk GET /-/healthy
{server_lines([enroll_replica])}
"""
    path = tmp / "haproxy.cfg"
    path.write_text(cfg)
    check = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = Proc([binary, "-db", "-f", str(path)], tmp / "haproxy.log")
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_http(url + "/-/healthy")
    except BaseException:
        proc.stop()
        raise
    return proc, url


def prefill_backlog(state_dir: Path, tag: str, end_ms: int) -> int:
    """What an agent queued while its link was down: BACKLOG_BATCHES collections, one every 5 s up
    to ``end_ms``, written with the agent's own queue code into its queue file. Returns samples."""
    state_dir.mkdir(parents=True, exist_ok=True)
    queue = Queue(str(state_dir / "queue.db"), fsync="never")
    total = 0
    try:
        for i in range(BACKLOG_BATCHES):
            ts = end_ms - (BACKLOG_BATCHES - i) * 5000
            samples = [Sample(BACKLOG_METRIC, {"n": str(n), "tag": tag}, float(i * 1000 + n))
                       for n in range(SERIES_PER_BATCH)]
            entries = encode_batch(Batch("host", ts, samples), SERIES_PER_BATCH, lambda *a: None)
            queue.append(entries)
            total += sum(e.samples for e in entries)
    finally:
        queue.close()
    return total


def vm_export(vm: str, match: str) -> List[dict]:
    """Every raw sample VictoriaMetrics holds for ``match``: one JSON line per series."""
    url = f"{vm}/api/v1/export?" + urllib.parse.urlencode({"match[]": match, "start": "0"})
    return [json.loads(line) for line in http_get(url, timeout=30).decode().splitlines() if line.strip()]


def distinct_samples(vm: str, match: str) -> Tuple[Set[tuple], int]:
    """(distinct (labels, timestamp, value) samples, raw samples incl. at-least-once duplicates)."""
    seen: Set[tuple] = set()
    raw = 0
    for row in vm_export(vm, match):
        labels = tuple(sorted(row["metric"].items()))
        for v, t in zip(row["values"], row["timestamps"]):
            seen.add((labels, t, v))
            raw += 1
    return seen, raw


@pytest.mark.parametrize("who_retries", ["balancer", "agents"])
def test_a_replica_killed_under_load_loses_nothing(tmp_path, who_retries):
    vm_proc, vm = start_victoria_metrics(tmp_path / "vm")
    shared = tmp_path / "shared"  # what every replica reads: the key file and the revocation list
    shared.mkdir()
    keys, revoked = shared / "signing.keys", shared / "revoked.txt"
    create_key(str(keys), "k1")
    revoked.write_text("")
    # a token from before the signing keys: its hash is in the designated replica's tokens.json
    state_a = tmp_path / "replica-a-state"
    legacy_token = Store(str(state_a)).add_token("09667", "pc-legacy")[1]
    credentials = {"signing_key_file": str(keys), "revocation_file": str(revoked)}
    procs: Dict[str, Proc] = {}
    urls: Dict[str, str] = {}
    agents: List[Agent] = []
    lb = None
    try:
        for name in ("a", "b", "c"):
            state = tmp_path / f"replica-{name}-state"
            if name != "a":  # config management copies tokens.json: legacy tokens work everywhere
                state.mkdir()
                (state / "tokens.json").write_text((state_a / "tokens.json").read_text())
            extra = {"credentials": credentials, "enrollment": {"enabled": name == "a"},
                     "upstream_check_interval": "300ms"}
            procs[name], urls[name], _ = start_collector(tmp_path, [vm + "/api/v1/write"], state_dir=state,
                                                         extra=extra, name=f"replica-{name}")
        config_a = tmp_path / "replica-a.yaml"
        lb, lb_url = start_haproxy(tmp_path, [urls["a"], urls["b"], urls["c"]], urls["a"],
                                   retries=who_retries == "balancer")
        wait_until(lambda: all(http_ok_status(u + "/-/ready") == 200 for u in urls.values()), 30,
                   what="every replica ready")

        # three agents: one enrolled through the balancer (routed to replica a), one with a token
        # from the CLI of the issuing side, one with its legacy token
        _rec, key = Store(str(state_a)).add_enroll_key("09667", 3600, uses=2)
        assert post_json(urls["b"] + "/api/v1/enroll", {"key": key, "agent": "x"})[0] == 404  # not there
        added = subprocess.run(collector_command() + ["token", "add", "--commune", "09668", "--agent", "pc-cli",
                                                      "-c", str(config_a)], capture_output=True, text=True)
        assert added.returncode == 0, added.stderr
        cli_token = added.stdout.strip()
        assert cli_token.startswith(SIGNED_PREFIX)
        end_ms = now_ms() - 1000
        expected: Dict[str, int] = {}
        configs = {}
        for name, token in (("pc-enrolled", None), ("pc-cli", cli_token), ("pc-legacy", legacy_token)):
            state = tmp_path / f"agent-{name}"
            expected[name] = prefill_backlog(state, name, end_ms)
            push = {"max_samples_per_request": MAX_SAMPLES_PER_REQUEST, "min_backoff": "200ms",
                    "max_backoff": "1s"}
            if token:
                push["bearer_token"] = token
            else:
                push["require_token"] = True
            configs[name] = agent_config(tmp_path, lb_url + "/api/v1/write", state_dir=state, **push)
        enrolled = subprocess.run(agent_command() + ["enroll", "--collector", lb_url, "--key", key,
                                                     "--agent-id", "pc-enrolled", "-c", str(configs["pc-enrolled"])],
                                  capture_output=True, text=True, timeout=60)
        assert enrolled.returncode == 0, enrolled.stderr
        assert (tmp_path / "agent-pc-enrolled" / "push.token").read_text().startswith(SIGNED_PREFIX)

        t_start = time.time()
        with concurrent.futures.ThreadPoolExecutor(len(configs)) as pool:  # all at once: they drain together
            futures = [pool.submit(Agent, tmp_path, cfg, name) for name, cfg in configs.items()]
            for f in futures:
                try:
                    agents.append(f.result())
                except Exception:
                    for other in futures:
                        if other.done() and not other.exception():
                            other.result().proc.stop()
                    raise
        total = sum(expected.values())

        # under load: replica b has taken part of the backlog; kill it with no warning at all
        def received(name):
            return metric_value(collector_metrics(urls[name]), "commune_collector_samples_received_total") or 0
        at_b = wait_until(lambda: (lambda n: n if n >= 20 * MAX_SAMPLES_PER_REQUEST else None)(received("b")),
                          60, interval=0.05, what="replica b taking part of the load")
        procs["b"].signal(signal.SIGKILL)
        procs["b"].popen.wait(10)
        t_kill = time.time()
        before = {n: received(n) for n in ("a", "c")}
        # what the replicas had received at the kill (live collections and resends included) is an
        # upper bound of the backlog delivered by then: the rest was still queued in the agents
        left_at_kill = total - (at_b + before["a"] + before["c"])
        assert left_at_kill > 0, "the backlog was drained before the kill: not under load"

        # a second enrollment while b is dead: the balancer still routes it to replica a
        status, reply = post_json(lb_url + "/api/v1/enroll", {"key": key, "agent": "pc-late"})
        assert status == 200 and reply["token"].startswith(SIGNED_PREFIX)

        # everything arrives: each agent's whole backlog, exactly, under its own identity
        def complete():
            got, _raw = distinct_samples(vm, BACKLOG_METRIC)
            return len(got) == total
        try:
            wait_until(complete, 120, interval=0.5, what="every backlog sample in VictoriaMetrics")
        finally:
            got, raw = distinct_samples(vm, BACKLOG_METRIC)
            print(f"\nreplica kill: {total} backlog samples queued by {len(agents)} agents; replica b killed "
                  f"after receiving {at_b:.0f}, at least {left_at_kill:.0f} still queued then; {len(got)} "
                  f"distinct in VictoriaMetrics in the end ({raw - len(got)} at-least-once duplicates), "
                  f"lost {total - len(got)}")
        for name, n in expected.items():
            mine = {(l, t, v) for l, t, v in got if dict(l)["agent"] == name}
            assert len(mine) == n, (name, len(mine), n)
            assert {dict(l)["commune"] for l, _t, _v in mine} == {"09668" if name == "pc-cli" else "09667"}
            assert {dict(l)["tag"] for l, _t, _v in mine} == {name}
        after = {n: metric_value(collector_metrics(urls[n]), "commune_collector_samples_received_total")
                 for n in ("a", "c")}
        assert after["a"] > before["a"] and after["c"] > before["c"]  # the others took over

        # the live collections of every agent went on across the kill: no host collection missing
        t_end = time.time()
        failed: Dict[str, float] = {}
        for a in agents:
            m = a.metrics()
            for k, v in m.items():
                if k.startswith("commune_agent_push_failed_requests_total,") and v:
                    failed[k.split("reason=")[1]] = failed.get(k.split("reason=")[1], 0) + v
            assert all(m[f"commune_agent_queue_dropped_samples_total,reason={r}"] == 0
                       for r in ("too_old", "queue_full", "disk_full", "rejected", "corrupt")), m
        print(f"agents' failed requests by reason (retried): {failed or 'none: the balancer retried'}")
        if who_retries == "agents":  # the balancer passed the dead replica's failures on: they retried
            assert sum(failed.values()) > 0, failed
        for name in expected:
            match = f'commune_agent_input_last_run_timestamp_seconds{{input="host",agent="{name}"}}'

            def live_times():
                rows = vm_export(vm, match)
                return sorted({t / 1000 for r in rows for t in r["timestamps"] if t_start <= t / 1000 <= t_end})
            times = wait_until(lambda: (lambda ts: ts if ts and ts[-1] >= t_end - 3 else None)(live_times()),
                               30, what=f"{name}'s collections up to the end")
            assert times[0] <= t_kill <= times[-1]
            steps = [b - a for a, b in zip(times, times[1:])]
            assert all(d <= 1.6 for d in steps), (name, steps)  # a missed collection would be about 2 s

        # a revocation on the issuing side reaches a replica that never saw tokens.json change
        listing = subprocess.run(collector_command() + ["token", "list", "-c", str(config_a)],
                                 capture_output=True, text=True, check=True).stdout
        cli_id = [ln.split()[0] for ln in listing.splitlines() if " pc-cli " in ln][0]
        subprocess.run(collector_command() + ["token", "revoke", cli_id, "-c", str(config_a)], check=True,
                       capture_output=True)
        assert cli_id in read_revocations(str(revoked))
        wait_until(lambda: post(urls["c"] + "/api/v1/write", encode([series("m", 1, now_ms())]), cli_token)[0] == 401,
                   10, what="replica c refusing the revoked token")
        assert post(urls["c"] + "/api/v1/write", encode([series("m", 1, now_ms())]), legacy_token)[0] == 204
    finally:
        for a in agents:
            a.proc.stop()
        if lb is not None:
            lb.stop()
        for p in procs.values():
            p.stop()
        vm_proc.stop()
    secret = keys.read_text().split("k1 ", 1)[1].split()[0]
    for p in procs.values():
        log = p.log_path.read_text()
        assert secret not in log and cli_token not in log and legacy_token not in log
