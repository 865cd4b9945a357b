"""The stack under test of bench/fleet_sim.py: VictoriaMetrics single-node, collector replicas
sharing one signing key file and revocation list (as docs/scale.md, "Topology and shared state"),
haproxy in front; CPU, RSS and disk of each, read from /proc and the data directory."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from contract import remote_write
from bench import fleet_procs as fp
from collector.credentials import KeyRing, create_key


class Stack:
    """VictoriaMetrics, ``replicas`` collectors sharing one key file and revocation list, haproxy."""

    def __init__(self, tmp: Path, replicas: int = 3, extra_upstreams: Tuple[str, ...] = (),
                 fleet_file: Optional[Path] = None, vm_scrape: bool = False, ports: Optional[List[int]] = None):
        self.tmp, self.procs = tmp, []
        shared = tmp / "shared"
        shared.mkdir(parents=True, exist_ok=True)
        self.keyfile, revoked = shared / "signing.keys", shared / "revoked.txt"
        create_key(str(self.keyfile), "k1")
        revoked.write_text("")
        self.keyring = KeyRing(str(self.keyfile))
        ports = ports or [fp.free_port() for _ in range(replicas)]
        scrape = None
        if vm_scrape:  # the replicas' /metrics (last push times, inventory) into the store
            scrape = tmp / "vm-scrape.yml"
            scrape.write_text(json.dumps({"scrape_configs": [{"job_name": "collector", "scrape_interval": "15s",
                                          "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports]}]}]}))
        self.vm_proc, self.vm = fp.start_victoria_metrics(tmp, scrape)
        self.procs.append(self.vm_proc)
        self.replicas = []
        try:
            creds = {"signing_key_file": str(self.keyfile), "revocation_file": str(revoked)}
            for n, port in enumerate(ports):
                proc, url = fp.start_collector(tmp, f"replica-{n}", [self.vm + "/api/v1/write", *extra_upstreams],
                                               creds, fleet_file, port=port)
                self.procs.append(proc)
                self.replicas.append((proc, url))
            self.lb_proc, self.lb = fp.start_haproxy(tmp, [u for _p, u in self.replicas])
            self.procs.append(self.lb_proc)
            # haproxy's health checks must have seen every replica up before the load starts
            fp.wait_until(lambda: self.lb_status() == 204, 30, what="a write through haproxy")
            time.sleep(2.5)
        except BaseException:
            self.stop()
            raise

    def lb_status(self) -> int:
        import urllib.error
        import urllib.request

        token = self.keyring.sign("t-probe", "00000", "probe", time.time())[0]
        body = remote_write.encode([({"__name__": "fleet_sim_probe"}, [(1.0, int(time.time() * 1000))])])
        req = urllib.request.Request(self.lb + "/api/v1/write", data=body, method="POST",
                                     headers=dict(remote_write.HEADERS, Authorization=f"Bearer {token}"))
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def cpu(self) -> Dict[str, float]:
        out = {f"replica-{n}": fp.proc_cpu_seconds(p.pid) for n, (p, _u) in enumerate(self.replicas)}
        out.update(vm=fp.proc_cpu_seconds(self.vm_proc.pid), haproxy=fp.proc_cpu_seconds(self.lb_proc.pid))
        return out

    def rss(self) -> Dict[str, float]:
        out = {f"replica-{n}": fp.proc_rss_mb(p.pid) for n, (p, _u) in enumerate(self.replicas)}
        out["vm"] = fp.proc_rss_mb(self.vm_proc.pid)
        return out

    def vm_metric(self, name: str, **labels) -> float:
        total = 0.0
        for line in fp.http_get(self.vm + "/metrics").decode().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                if all(f'{k}="{v}"' in line for k, v in labels.items()):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def vm_disk_bytes(self, merge: bool = False) -> Tuple[int, int]:
        """(bytes of samples, bytes of the series index) on disk, after a flush; with ``merge`` after
        merging this month's parts into one as the background merges do over the following days."""
        fp.http_get(self.vm + "/internal/force_flush")
        if merge:
            fp.http_get(self.vm + "/internal/force_merge?partition_prefix=" + time.strftime("%Y_%m", time.gmtime()),
                        timeout=300)
            fp.wait_until(lambda: self.vm_metric("vm_active_merges") == 0, 120, interval=0.5, what="VM merges")
        def du(d):
            return sum(f.stat().st_size for f in (self.tmp / "vm-data" / d).rglob("*") if f.is_file())
        return du("data"), du("indexdb")

    def stop(self) -> None:
        fp.stop_all(self.procs)
