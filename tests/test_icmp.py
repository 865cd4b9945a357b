"""The ICMP input: route-table parsers, config rules, and echoes measured under real conditions.

Network conditions are real: echoes cross network namespaces made here (names unique per run,
deleted in ``finally``), loss comes from an nftables rule dropping a random share of echo
replies, delay and jitter from tests/tun_responder.py answering on a TUN device. No packet leaves
127.0.0.0/8, ::1 or those namespaces. Probes inside a namespace run ``python -m
agent.inputs.icmp`` (as root for raw sockets, as nobody for unprivileged ones); the metrics they
print are recorded for the catalog check.
"""
from __future__ import annotations

import asyncio
import logging
import math
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from agent.config import load_config
from agent.inputs import gateway as gw
from agent.inputs import icmp, icmp_sockets
from agent.runner import Runner
from contract.schema import ConfigErrors, load_model
from tests import support
from tests.netns import NOBODY, namespaces, veth

REPO = support.REPO


# ---------------------------------------------------------------- helpers

def parse_metrics(text: str) -> dict:
    """{(name, frozenset(labels.items())): value} of exposition text, recorded as emitted."""
    from prometheus_client.parser import text_string_to_metric_families

    support.record_exposition(text)
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(metrics: dict, name: str, **labels) -> float:
    want = {k: str(v) for k, v in labels.items()}
    found = [v for (n, ls), v in metrics.items() if n == name and want.items() <= dict(ls).items()]
    assert len(found) == 1, f"{name}{want}: {len(found)} series in {sorted(k[0] for k in metrics)}"
    return found[0]


def icmp_yaml(targets, **options) -> str:
    opts = {"gateway": "false", "privileged": '"true"', "count": 5, "echo_interval": "20ms",
            "echo_timeout": "500ms", "timeout": "5s"}
    opts.update(options)
    lines = ["icmp:"] + [f"  {k}: {v}" for k, v in opts.items()] + ["  targets:"]
    lines += [f"    - {{name: {n}, address: \"{a}\", hop: {h}}}" for n, a, h in targets]
    return "\n".join(lines) + "\n"


def probe_in(ns, config_text, user=None, check=True):
    proc = ns.python("-m", "agent", "icmp", "-c", "-", user=user, input=config_text, check=check)
    return proc, (parse_metrics(proc.stdout) if proc.returncode == 0 else {})


def section(data: dict) -> icmp.Config:
    return load_model(icmp.Config, data, path="icmp")


# ---------------------------------------------------------------- route tables (literal text)

PROC_NET_ROUTE = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
eth0\t00000000\t FE01A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
wlan0\t0001A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0
"""

PROC_NET_ROUTE_NO_DEFAULT = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
eth0\t00000000\t00000000\t0201\t0\t0\t0\t00000000\t0\t0\t0
"""

PROC_NET_IPV6_ROUTE = """\
20010db8000000010000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe80000000000000021122fffe334455 00000400 00000001 00000000 00000003     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db8000000010000000000000001 00000800 00000001 00000000 00000003    wlan0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
"""

PROC_NET_IPV6_ROUTE_NO_DEFAULT = """\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
"""


def test_proc_net_route_lowest_metric_default_wins():
    assert gw.parse_proc_net_route(PROC_NET_ROUTE, "little") == gw.Gateway("192.168.1.254", "eth0", 100, 4)


def test_proc_net_route_big_endian_host():
    text = PROC_NET_ROUTE.replace("FE01A8C0", "C0A801FE")
    assert gw.parse_proc_net_route(text, "big").address == "192.168.1.254"


def test_proc_net_route_without_default_or_with_reject_route():
    assert gw.parse_proc_net_route(PROC_NET_ROUTE_NO_DEFAULT, "little") is None
    assert gw.parse_proc_net_route("", "little") is None


def test_proc_net_ipv6_route_link_local_gateway_carries_its_interface():
    assert gw.parse_proc_net_ipv6_route(PROC_NET_IPV6_ROUTE) == gw.Gateway(
        "fe80::211:22ff:fe33:4455%eth0", "eth0", 0x400, 6)


def test_proc_net_ipv6_route_global_gateway_and_none():
    only_global = "\n".join(l for l in PROC_NET_IPV6_ROUTE.splitlines() if "fe80000000000000021122" not in l)
    assert gw.parse_proc_net_ipv6_route(only_global) == gw.Gateway("2001:db8:0:1::1", "wlan0", 0x800, 6)
    assert gw.parse_proc_net_ipv6_route(PROC_NET_IPV6_ROUTE_NO_DEFAULT) is None


# ``route print`` output in the layout of Windows 10 (English), with a wrapped IPv6 row and
# persistent routes. Written by hand after that layout (no Windows machine here to record one).
ROUTE_PRINT_EN = """\
===========================================================================
Interface List
 12...00 15 5d 01 02 03 ......Intel(R) Ethernet Connection I219-LM
 18...0a 00 27 00 00 12 ......VirtualBox Host-Only Ethernet Adapter
  1...........................Software Loopback Interface 1
===========================================================================

IPv4 Route Table
===========================================================================
Active Routes:
Network Destination        Netmask          Gateway       Interface  Metric
          0.0.0.0          0.0.0.0    192.168.10.1   192.168.10.23     25
          0.0.0.0          0.0.0.0      10.8.0.1        10.8.0.6     281
        127.0.0.0        255.0.0.0         On-link         127.0.0.1    331
        127.0.0.1  255.255.255.255         On-link         127.0.0.1    331
     192.168.10.0    255.255.255.0         On-link     192.168.10.23    281
    192.168.10.23  255.255.255.255         On-link     192.168.10.23    281
        224.0.0.0        240.0.0.0         On-link         127.0.0.1    331
  255.255.255.255  255.255.255.255         On-link         127.0.0.1    331
===========================================================================
Persistent Routes:
  Network Address          Netmask  Gateway Address  Metric
          0.0.0.0          0.0.0.0      192.168.10.9  Default
===========================================================================

IPv6 Route Table
===========================================================================
Active Routes:
 If Metric Network Destination      Gateway
 12    281 ::/0                     fe80::1
  1    331 ::1/128                  On-link
 12    281 2001:db8:abcd:12::/64    On-link
 12    281 2001:db8:abcd:12:8c2f:a1b2:c3d4:e5f6/128
                                    On-link
 12    281 fe80::/64                On-link
  1    331 ff00::/8                 On-link
===========================================================================
Persistent Routes:
 If Metric Network Destination      Gateway
  0 4294967295 ::/0                     2001:db8::99
===========================================================================
"""

# The same machine with German headings, IPv6 default gateway on a wrapped line, no IPv4 default.
ROUTE_PRINT_DE = """\
===========================================================================
Schnittstellenliste
 12...00 15 5d 01 02 03 ......Intel(R) Ethernet Connection I219-LM
  1...........................Software Loopback Interface 1
===========================================================================

IPv4-Routentabelle
===========================================================================
Aktive Routen:
     Netzwerkziel    Netzwerkmaske          Gateway    Schnittstelle Metrik
        127.0.0.0        255.0.0.0   Auf Verbindung         127.0.0.1    331
===========================================================================
Ständige Routen:
  Keine

IPv6-Routentabelle
===========================================================================
Aktive Routen:
 If Metrik Netzwerkziel             Gateway
 12    281 ::/0
                                    2001:db8:abcd:12::1
  1    331 ::1/128                  Auf Verbindung
===========================================================================
Ständige Routen:
  Keine
"""


def test_route_print_english():
    assert gw.parse_route_print(ROUTE_PRINT_EN) == [
        gw.Gateway("192.168.10.1", "192.168.10.23", 25, 4),
        gw.Gateway("fe80::1%12", "12", 281, 6),
    ]


def test_route_print_translated_headings_and_wrapped_gateway():
    assert gw.parse_route_print(ROUTE_PRINT_DE) == [gw.Gateway("2001:db8:abcd:12::1", "12", 281, 6)]


def test_route_print_without_routes():
    assert gw.parse_route_print("") == []


def test_default_gateways_reads_the_proc_files(tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "route").write_text(PROC_NET_ROUTE)
    (tmp_path / "net" / "ipv6_route").write_text(PROC_NET_IPV6_ROUTE_NO_DEFAULT)
    found = gw.default_gateways(str(tmp_path))
    assert [g.family for g in found] == [4]
    assert gw.default_gateways(str(tmp_path / "absent")) == []


# ---------------------------------------------------------------- statistics

def test_rtt_stats_population_standard_deviation():
    s = icmp.rtt_stats([0.010, 0.020, 0.030, 0.040])
    assert (s.rtt_min, s.rtt_avg, s.rtt_max) == pytest.approx((0.010, 0.025, 0.040))
    assert s.jitter == pytest.approx(math.sqrt(0.000125))   # pstdev: divide by n, like ping's mdev
    assert icmp.rtt_stats([0.005]).jitter == 0
    assert icmp.rtt_stats([]) is None
    assert icmp.loss_ratio(10, 7) == pytest.approx(0.3)
    assert icmp.loss_ratio(0, 0) == 1.0


# ---------------------------------------------------------------- config

def test_no_config_pings_the_default_gateway():
    cfg = load_config(None)
    assert cfg.icmp.enabled and cfg.icmp.gateway and cfg.icmp.targets == []
    assert cfg.icmp.privileged == "auto"
    assert (cfg.icmp.count, cfg.icmp.echo_interval, cfg.icmp.echo_timeout) == (5, 1, 2)
    assert (cfg.icmp.interval, cfg.icmp.timeout, cfg.icmp.payload_size) == (30, 10, 56)


def test_example_config_documents_the_defaults():
    cfg = load_config(str(REPO / "config" / "agent.example.yaml"))
    assert cfg.icmp == load_config(None).icmp


@pytest.mark.parametrize("data,message", [
    ({"count": 0}, "icmp.count: must be at least 1, got 0"),
    ({"echo_interval": "0s"}, "icmp.echo_interval: must be greater than 0s"),
    ({"echo_timeout": "0s"}, "icmp.echo_timeout: must be greater than 0s"),
    ({"payload_size": 2000}, "icmp.payload_size: must be between 0 and 996 bytes, got 2000"),
    ({"count": 10, "echo_interval": "1s", "echo_timeout": "2s", "timeout": "10s"},
     "icmp.timeout: must be longer than the longest probe, (count - 1) x echo_interval + echo_timeout"
     " = 9 x 1s + 2s = 11s, got 10s"),
    ({"privileged": "yes"}, "icmp.privileged: unknown value 'yes', expected one of: auto, true, false"),
    ({"targets": [{"name": "isp", "address": "1.1.1.1", "hop": "router"}]},
     "icmp.targets[0].hop: unknown value 'router', expected one of: gateway, isp, upstream, service"),
    ({"targets": [{"name": "isp", "address": "1.1.1.1"}]}, "icmp.targets[0].hop: required field is missing"),
    ({"targets": [{"name": "isp", "address": "not an address!", "hop": "isp"}]},
     "icmp.targets[0].address: expected an IP address or a host name, got 'not an address!'"),
    ({"targets": [{"name": "my isp", "address": "1.1.1.1", "hop": "isp"}]},
     "icmp.targets[0].name: must be 1-64 letters, digits or _ . : - (it becomes the target label), got 'my isp'"),
    ({"targets": [{"name": "a", "address": "1.1.1.1", "hop": "isp"},
                  {"name": "a", "address": "8.8.8.8", "hop": "upstream"}]},
     "icmp.targets[1].name: 'a' is already the name of targets[0]"),
    ({"targets": [{"name": "gateway", "address": "192.168.1.1", "hop": "gateway"}]},
     "icmp.targets[0].name: 'gateway' is reserved for the automatic gateway probe (gateway: true); choose another name"),
])
def test_invalid_icmp_config(data, message):
    with pytest.raises(ConfigErrors) as exc:
        section(data)
    assert [e.message if not e.path else f"{e.path}: {e.message}" for e in exc.value.errors] == [message]


def test_valid_targets_and_own_gateway_name_when_auto_probe_is_off():
    cfg = section({"gateway": False, "targets": [
        {"name": "gateway", "address": "192.168.1.1", "hop": "gateway"},
        {"name": "vnpt-dns", "address": "203.162.4.191", "hop": "isp"},
        {"name": "portal", "address": "dichvucong.gov.vn", "hop": "service"},
        {"name": "v6", "address": "fe80::1%eth0", "hop": "gateway"}]})
    assert [t.hop for t in cfg.targets] == ["gateway", "isp", "service", "gateway"]


# ---------------------------------------------------------------- privileges

def test_privilege_help_names_both_fixes():
    text = icmp_sockets.privilege_help()
    assert "net.ipv4.ping_group_range covering gid" in text
    assert "sysctl -w net.ipv4.ping_group_range='0 2147483647'" in text
    assert "CAP_NET_RAW / running as root" in text


def test_neither_socket_kind_allowed_is_a_clear_startup_error():
    with namespaces(1) as (ns,):   # ping_group_range keeps its default "1 0" here
        cfg = icmp_yaml([("lo", "127.0.0.1", "service")], privileged="auto")
        proc, _ = probe_in(ns, cfg, user=NOBODY, check=False)
        assert proc.returncode == 1
        assert (f"icmp.privileged: privileged: auto: unprivileged ICMP sockets are not permitted; raw "
                f"sockets are not permitted. ICMP needs either net.ipv4.ping_group_range covering gid "
                f"{NOBODY} (now '1 0'; fix: sysctl -w net.ipv4.ping_group_range='0 2147483647') or "
                f"CAP_NET_RAW / running as root") in proc.stderr
        proc, _ = probe_in(ns, icmp_yaml([("lo", "127.0.0.1", "service")], privileged='"true"'),
                           user=NOBODY, check=False)
        assert proc.returncode == 1 and "privileged: true: raw sockets are not permitted" in proc.stderr
        # with ICMP targets configured, the agent itself refuses to start with the same message
        readable = Path(tempfile.mkdtemp(prefix="icmp-cfg-"))
        try:
            readable.chmod(0o755)
            (readable / "agent.yaml").write_text(
                "icmp: {privileged: auto, targets: [{name: lo, address: 127.0.0.1, hop: service}]}\n")
            (readable / "agent.yaml").chmod(0o644)
            proc = ns.run(*support.agent_command(), "-c", readable / "agent.yaml", user=NOBODY, check=False,
                          timeout=30)
        finally:
            shutil.rmtree(readable)
        assert proc.returncode == 1, proc.stderr
        assert "icmp.privileged: privileged: auto: unprivileged ICMP sockets are not permitted" in proc.stderr
        assert "cannot start: 1 error(s)" in proc.stderr and "Traceback" not in proc.stderr


def test_gateway_probe_alone_without_icmp_sockets_leaves_the_agent_running():
    """No targets of its own (the default config): the agent runs on, the icmp input reports 0."""
    import asyncio

    from agent.runner import Runner

    section = icmp.Config(targets=[])
    inp = icmp.UnavailableInput(section, "icmp.privileged: ICMP needs either net.ipv4.ping_group_range ...")
    runner = Runner([inp])
    asyncio.run(runner.collect_once(inp))
    snap = {(s.name, s.labels.get("input")): s.value for s in runner.snapshot()}
    assert snap[("commune_agent_input_success", "icmp")] == 0
    with namespaces(1) as (ns,):  # ping_group_range "1 0": nobody may open no ICMP socket
        proc = ns.run(sys.executable, "-c",
                      "from agent.inputs import icmp; "
                      "[i] = icmp.build(icmp.Config(), None); print(type(i).__name__, i.reason)",
                      user=NOBODY, check=False, timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("UnavailableInput icmp.privileged: privileged: auto: unprivileged ICMP")


# ---------------------------------------------------------------- in this process, on loopback

class FakeGateways:
    def __init__(self, gateways):
        self.gateways = gateways

    def __call__(self):
        return list(self.gateways)


def make_input(targets, gateways=None, count=3, privileged=True):
    cfg = section({"gateway": gateways is not None, "count": count, "echo_interval": "10ms",
                   "echo_timeout": "500ms", "timeout": "2s", "interval": "5s",
                   "targets": [{"name": n, "address": a, "hop": h} for n, a, h in targets]})
    pinger = icmp_sockets.IcmplibPinger(privileged, cfg.count, cfg.echo_interval, cfg.echo_timeout, cfg.payload_size)
    return icmp.IcmpInput(cfg, pinger, FakeGateways(gateways or []))


def as_dict(samples):
    return {(s.name, frozenset(s.labels.items())): s.value for s in samples}


def test_raw_sockets_on_loopback_through_the_runner():
    support.need_binary("ip")
    inp = make_input([("lo4", "127.0.0.1", "service"), ("lo6", "::1", "upstream")],
                     gateways=[gw.Gateway("127.0.0.1", "lo", 0, 4)])
    runner = Runner([inp])
    batch = asyncio.run(runner.collect_once(inp))
    m = as_dict(batch.samples)
    assert value(m, "commune_agent_input_success", input="icmp") == 1
    assert value(m, "commune_icmp_default_gateway_found") == 1
    for target, address, hop in [("lo4", "127.0.0.1", "service"), ("lo6", "::1", "upstream"),
                                 ("gateway", "127.0.0.1", "gateway")]:
        assert value(m, "probe_success", target=target, module="icmp", hop=hop) == 1
        assert value(m, "commune_icmp_packet_loss_ratio", target=target, address=address, hop=hop) == 0
        assert value(m, "commune_icmp_packets_sent_total", target=target, address=address) == 3
        assert value(m, "commune_icmp_packets_received_total", target=target, address=address) == 3
        lo, avg, hi = (value(m, f"commune_icmp_rtt_{k}_seconds", target=target) for k in ("min", "avg", "max"))
        assert 0 < lo <= avg <= hi < 0.5
        assert 0 <= value(m, "commune_icmp_jitter_seconds", target=target) <= hi - lo
        assert 0 < value(m, "probe_duration_seconds", target=target) < 2
    # counters keep counting across probes
    m = as_dict(asyncio.run(runner.collect_once(inp)).samples)
    assert value(m, "commune_icmp_packets_sent_total", target="lo4") == 6


def test_every_probe_of_a_round_runs_at_once():
    """Twelve targets and two gateways: each probe waits for all the others at a barrier."""
    targets = [(f"t{i}", f"127.0.0.{i + 1}", "service") for i in range(12)]
    gateways = [gw.Gateway("127.0.0.1", "lo", 0, 4), gw.Gateway("::1", "lo", 0, 6)]
    barrier = threading.Barrier(len(targets) + len(gateways), timeout=10)

    def pinger(address):
        barrier.wait()   # raises BrokenBarrierError unless every probe is running concurrently
        return icmp.EchoResult(address, 1, [0.001], 0.001)

    cfg = section({"targets": [{"name": n, "address": a, "hop": h} for n, a, h in targets]})
    inp = icmp.IcmpInput(cfg, pinger, FakeGateways(gateways))
    m = as_dict(asyncio.run(inp.collect()))
    assert sum(v for (name, _), v in m.items() if name == "probe_success") == 14


def test_no_default_gateway_is_logged_once_and_reported_as_a_series(caplog):
    inp = make_input([], gateways=[])
    caplog.set_level(logging.INFO, logger="agent.inputs.icmp")
    for _ in range(3):
        m = as_dict(asyncio.run(inp.collect()))
        assert m == {("commune_icmp_default_gateway_found", frozenset()): 0}
    assert [r.getMessage() for r in caplog.records if "no default gateway" in r.getMessage()] == [
        "icmp: no default gateway in /proc/net/route and /proc/net/ipv6_route; the gateway probe waits "
        "for one (commune_icmp_default_gateway_found 0)"]
    inp.find_gateways.gateways = [gw.Gateway("127.0.0.1", "lo", 0, 4)]
    m = as_dict(asyncio.run(inp.collect()))
    assert value(m, "commune_icmp_default_gateway_found") == 1
    assert value(m, "probe_success", target="gateway", hop="gateway") == 1


def test_gateway_finder_rereads_after_its_ttl_or_a_silent_gateway():
    reads = []
    now = [0.0]

    def read():
        reads.append(now[0])
        return [gw.Gateway(f"10.0.0.{len(reads)}", "eth0", 0, 4)]

    finder = icmp.GatewayFinder(read, ttl=300, clock=lambda: now[0])
    assert finder()[0].address == "10.0.0.1"
    now[0] = 299
    assert finder()[0].address == "10.0.0.1"
    now[0] = 300
    assert finder()[0].address == "10.0.0.2"
    finder.invalidate()
    assert finder()[0].address == "10.0.0.3"


def test_host_name_target_is_resolved_each_probe():
    inp = make_input([("named", "localhost", "service")])   # from /etc/hosts, no DNS traffic
    m = as_dict(asyncio.run(inp.collect()))
    assert value(m, "probe_success", target="named") == 1
    assert value(m, "commune_icmp_packets_received_total", target="named", address="localhost") == 3


# ---------------------------------------------------------------- namespaces: loss, delay, blackholes

@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A namespace with lossy loopback, a delaying TUN responder, a silent and a blackholed address.

    - 127.0.0.1 and ::1: nftables drops 20 % of the echo replies at random;
    - 127.2.0.0/24 and fd00:2::/64: routed into a TUN device answered after 40 ms +- 10 ms;
    - 127.2.0.66: its echo requests are dropped (a host that does not answer);
    - 127.3.0.0/24: a blackhole route (the kernel refuses to send).
    """
    tmp = tmp_path_factory.mktemp("icmp-lab")
    with namespaces(1) as (ns,):
        ns.loopback_only_127_0_0_1()
        ns.sysctl("net.ipv4.ping_group_range", "0 2147483647")
        responder = ns.start([sys.executable, str(REPO / "tests" / "tun_responder.py"), "--dev", "cmtun",
                              "--delay", "0.040", "--jitter", "0.010"], tmp / "responder.log")
        try:
            support.wait_until(lambda: "ready" in responder.log() or not responder.alive(), 10,
                               what="the TUN responder")
            assert responder.alive(), responder.log()
            ns.run("ip", "link", "set", "cmtun", "up")
            ns.sysctl("net.ipv4.conf.cmtun.route_localnet", "1")
            ns.run("ip", "addr", "add", "127.2.0.1/32", "dev", "cmtun")
            ns.run("ip", "route", "add", "127.2.0.0/24", "dev", "cmtun", "src", "127.2.0.1")
            ns.run("ip", "-6", "addr", "add", "fd00:1::1/128", "dev", "cmtun", "nodad")
            ns.run("ip", "-6", "route", "add", "fd00:2::/64", "dev", "cmtun")
            ns.run("ip", "route", "add", "blackhole", "127.3.0.0/24")
            ns.nft("""
table inet cmtest {
  chain out {
    type filter hook output priority 0; policy accept;
    ip daddr 127.2.0.66 icmp type echo-request drop
    oif "lo" icmp type echo-reply numgen random mod 100 < 20 drop
    oif "lo" icmpv6 type echo-reply numgen random mod 100 < 20 drop
  }
}
""")
            yield ns
        finally:
            responder.stop()


# 200 echoes with 20 % loss: the count of losses is binomial, sd = sqrt(200 * 0.2 * 0.8) = 5.7;
# four standard deviations either way.
LOSS_N, LOSS_P = 200, 0.20
LOSS_TOL = 4 * math.sqrt(LOSS_P * (1 - LOSS_P) / LOSS_N)


def test_loss_silence_and_blackhole_with_raw_sockets(lab):
    cfg = icmp_yaml([("lossy4", "127.0.0.1", "isp"), ("lossy6", "::1", "isp"),
                     ("silent", "127.2.0.66", "upstream"), ("blackholed", "127.3.0.5", "service")],
                    privileged='"true"', count=LOSS_N, echo_interval="5ms", echo_timeout="200ms", timeout="3s")
    _, m = probe_in(lab, cfg)
    for target in ("lossy4", "lossy6"):
        loss = value(m, "commune_icmp_packet_loss_ratio", target=target)
        assert abs(loss - LOSS_P) <= LOSS_TOL, f"{target}: loss {loss} vs {LOSS_P} +- {LOSS_TOL:.3f}"
        sent = value(m, "commune_icmp_packets_sent_total", target=target)
        received = value(m, "commune_icmp_packets_received_total", target=target)
        assert sent == LOSS_N and received == pytest.approx(sent * (1 - loss))
        assert value(m, "probe_success", target=target, module="icmp", hop="isp") == 1
    for target, address, hop in [("silent", "127.2.0.66", "upstream"), ("blackholed", "127.3.0.5", "service")]:
        assert value(m, "commune_icmp_packet_loss_ratio", target=target, address=address, hop=hop) == 1
        assert value(m, "probe_success", target=target, module="icmp", hop=hop) == 0
        assert value(m, "commune_icmp_packets_received_total", target=target) == 0
        assert not [k for k in m if k[0] == "commune_icmp_rtt_avg_seconds" and ("target", target) in k[1]]


# The responder answers after 40 ms + uniform(-10 ms, +10 ms): mean 40 ms, standard deviation
# 20 / sqrt(12) = 5.8 ms. Tolerances allow for scheduling on a loaded machine (late, never early).
DELAY, JITTER_BOUND = 0.040, 0.010
JITTER_SD = 2 * JITTER_BOUND / math.sqrt(12)


@pytest.mark.parametrize("mode", ["unprivileged-as-nobody", "raw-as-root"])
def test_delay_and_jitter_through_the_tun_responder(lab, mode):
    unprivileged = mode.startswith("unprivileged")
    cfg = icmp_yaml([("delayed4", "127.2.0.9", "isp"), ("delayed6", "fd00:2::9", "upstream")],
                    privileged='"false"' if unprivileged else '"true"', count=60, echo_interval="15ms",
                    echo_timeout="500ms", timeout="3s")
    _, m = probe_in(lab, cfg, user=NOBODY if unprivileged else None)
    for target in ("delayed4", "delayed6"):
        avg = value(m, "commune_icmp_rtt_avg_seconds", target=target)
        lo = value(m, "commune_icmp_rtt_min_seconds", target=target)
        hi = value(m, "commune_icmp_rtt_max_seconds", target=target)
        jitter = value(m, "commune_icmp_jitter_seconds", target=target)
        assert DELAY - 0.002 <= avg <= DELAY + 0.010, f"{target}: mean RTT {avg * 1000:.1f} ms"
        # the slowest echo may wait for a busy CPU (the responder is a Python process): 100 ms of slack
        assert DELAY - JITTER_BOUND - 0.001 <= lo <= hi <= DELAY + JITTER_BOUND + 0.100
        assert 0.6 * JITTER_SD <= jitter <= 1.8 * JITTER_SD, f"{target}: jitter {jitter * 1000:.2f} ms"
        assert value(m, "commune_icmp_packet_loss_ratio", target=target) == 0


def test_auto_picks_unprivileged_sockets_when_ping_group_range_allows(lab):
    # nobody may not open raw sockets: auto has to choose the unprivileged kind (TUN targets: no loss)
    cfg = icmp_yaml([("tun4", "127.2.0.9", "service"), ("tun6", "fd00:2::9", "service")], privileged="auto",
                    count=3)
    _, m = probe_in(lab, cfg, user=NOBODY)
    assert value(m, "probe_success", target="tun4") == 1 and value(m, "probe_success", target="tun6") == 1
    proc = lab.python("-c", "from agent.inputs.icmp_sockets import choose_privileged; print(choose_privileged('auto'))",
                      user=NOBODY)
    assert proc.stdout.strip() == "False"


# ---------------------------------------------------------------- namespaces: the automatic gateway probe

def test_default_config_pings_the_default_gateways_of_the_namespace(tmp_path):
    with namespaces(2) as (office, router):
        for ns in (office, router):
            ns.loopback_only_127_0_0_1()
        veth(office, "vc", router, "vg")
        for ns, dev in ((office, "vc"), (router, "vg")):
            ns.sysctl(f"net.ipv4.conf.{dev}.route_localnet", "1")
        office.run("ip", "addr", "add", "127.1.0.1/24", "dev", "vc")
        router.run("ip", "addr", "add", "127.1.0.2/24", "dev", "vg")
        router.run("ip", "-6", "addr", "add", "fe80::2/64", "dev", "vg", "nodad")
        office.run("ip", "route", "add", "default", "via", "127.1.0.2", "dev", "vc")
        office.run("ip", "-6", "route", "add", "default", "via", "fe80::2", "dev", "vc")
        # no config file at all: the built-in defaults (5 echoes, 1 s apart, privileged: auto)
        proc = office.python("-m", "agent", "icmp", timeout=60)
        m = parse_metrics(proc.stdout)
        assert value(m, "commune_icmp_default_gateway_found") == 1
        assert value(m, "probe_success", target="gateway", module="icmp", hop="gateway") == 1
        assert value(m, "commune_icmp_packet_loss_ratio", target="gateway", address="127.1.0.2", hop="gateway") == 0
        assert value(m, "probe_success", target="gateway-ipv6", module="icmp", hop="gateway") == 1
        assert value(m, "commune_icmp_packets_received_total", target="gateway-ipv6", address="fe80::2%vc") == 5
        assert "probing default gateway 127.1.0.2, fe80::2%vc" in proc.stderr


def test_default_config_without_a_default_route_says_so(tmp_path):
    with namespaces(1) as (ns,):
        proc = ns.python("-m", "agent", "icmp", timeout=30)
        m = parse_metrics(proc.stdout)
        assert m == {("commune_icmp_default_gateway_found", frozenset()): 0}
        assert proc.stderr.count("no default gateway in /proc/net/route and /proc/net/ipv6_route") == 1
        # a name that cannot be resolved (this namespace has no route to any DNS server, so no query
        # leaves it) is a failed probe with the reason logged, not an error of the input
        cfg = "icmp:\n  targets:\n    - {name: portal, address: portal.example.invalid, hop: service}\n"
        proc, m = probe_in(ns, cfg)
        assert value(m, "probe_success", target="portal", module="icmp", hop="service") == 0
        assert value(m, "commune_icmp_packets_sent_total", target="portal") == 0
        assert "icmp: target portal (portal.example.invalid): cannot resolve portal.example.invalid" in proc.stderr
