"""Find this machine's default gateways: pure parsers of the OS routing tables, and the readers.

Linux: ``/proc/net/route`` (IPv4) and ``/proc/net/ipv6_route`` (IPv6). Windows: the output of
``route print`` (parsed by structure, not by its headings, which Windows translates). A default
route is one to 0.0.0.0/0 or ::/0 through a gateway; among several the lowest metric wins.
An IPv6 link-local gateway carries its scope (``fe80::1%eth0`` on Linux, ``fe80::1%12`` on
Windows) so that it can be pinged.
"""
from __future__ import annotations

import ipaddress
import socket
import struct
import subprocess
import sys
from typing import List, NamedTuple, Optional

# Linux route flags (include/uapi/linux/route.h)
RTF_UP = 0x0001
RTF_GATEWAY = 0x0002
RTF_REJECT = 0x0200


class Gateway(NamedTuple):
    address: str          # ready to ping: IPv6 link-local addresses carry %scope
    interface: str        # interface name (Linux) or index (Windows)
    metric: int
    family: int           # 4 or 6


def _best(routes: List[Gateway]) -> Optional[Gateway]:
    return min(routes, key=lambda g: g.metric) if routes else None


def parse_proc_net_route(text: str, byteorder: str = sys.byteorder) -> Optional[Gateway]:
    """The IPv4 default gateway in ``/proc/net/route`` text, or None.

    The kernel prints addresses as the 32-bit value in host byte order (``0101A8C0`` is
    192.168.1.1 on a little-endian machine).
    """
    fmt = "<I" if byteorder == "little" else ">I"
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        iface, dest, gw, flags, metric, mask = fields[0], fields[1], fields[2], fields[3], fields[6], fields[7]
        try:
            flag_bits = int(flags, 16)
            if int(dest, 16) != 0 or int(mask, 16) != 0:
                continue
            gw_value = int(gw, 16)
            metric_value = int(metric)
        except ValueError:
            continue
        if not flag_bits & RTF_UP or not flag_bits & RTF_GATEWAY or flag_bits & RTF_REJECT or gw_value == 0:
            continue
        found.append(Gateway(socket.inet_ntoa(struct.pack(fmt, gw_value)), iface, metric_value, 4))
    return _best(found)


def parse_proc_net_ipv6_route(text: str) -> Optional[Gateway]:
    """The IPv6 default gateway in ``/proc/net/ipv6_route`` text, or None.

    Columns: destination, prefix length, source, source prefix length, next hop, metric,
    reference count, use count, flags, interface; numbers in hexadecimal.
    """
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 10:
            continue
        dest, plen, _src, _splen, nexthop, metric, _ref, _use, flags, iface = fields
        try:
            if int(dest, 16) != 0 or int(plen, 16) != 0:
                continue
            flag_bits, metric_value, hop_value = int(flags, 16), int(metric, 16), int(nexthop, 16)
        except ValueError:
            continue
        if not flag_bits & RTF_UP or not flag_bits & RTF_GATEWAY or flag_bits & RTF_REJECT or hop_value == 0:
            continue
        addr = ipaddress.IPv6Address(bytes.fromhex(nexthop))
        text_addr = f"{addr}%{iface}" if addr.is_link_local else str(addr)
        found.append(Gateway(text_addr, iface, metric_value, 6))
    return _best(found)


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def parse_route_print(text: str) -> List[Gateway]:
    """Default gateways (best IPv4 first, then best IPv6) in Windows ``route print`` output.

    The output is parsed by shape so that translated headings do not matter. IPv4 active routes
    have five columns (destination, netmask, gateway, interface address, metric); persistent
    routes have four and are skipped. IPv6 rows are ``If Metric Destination Gateway``, and a long
    destination pushes the gateway onto the next line. Blocks are separated by ``====`` lines; the
    first block with IPv6 rows is the active table, later ones list persistent routes.
    """
    v4: List[Gateway] = []
    v6: List[Gateway] = []
    blocks: List[List[str]] = [[]]
    for line in text.splitlines():
        if line.strip().startswith("====="):
            blocks.append([])
        else:
            blocks[-1].append(line)
    seen_v6_block = False
    for block in blocks:
        block_has_v6 = False
        for i, line in enumerate(block):
            f = line.split()
            if len(f) == 5 and f[0] == "0.0.0.0" and f[1] == "0.0.0.0" and _is_ip(f[2], 4) \
                    and _is_ip(f[3], 4) and f[4].isdigit():
                v4.append(Gateway(f[2], f[3], int(f[4]), 4))
                continue
            if len(f) in (3, 4) and f[0].isdigit() and f[1].isdigit() and "/" in f[2] and ":" in f[2]:
                block_has_v6 = True
                if seen_v6_block or f[2] != "::/0":
                    continue
                gw = f[3] if len(f) == 4 else (block[i + 1].strip() if i + 1 < len(block) else "")
                if not _is_ip(gw, 6):
                    continue  # On-link
                addr = ipaddress.IPv6Address(gw)
                text_addr = f"{addr}%{f[0]}" if addr.is_link_local else str(addr)
                v6.append(Gateway(text_addr, f[0], int(f[1]), 6))
        seen_v6_block = seen_v6_block or block_has_v6
    return [g for g in (_best(v4), _best(v6)) if g is not None]


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def default_gateways(proc_root: str = "/proc", run=subprocess.run) -> List[Gateway]:
    """This machine's default gateways now: at most one IPv4, then at most one IPv6."""
    if sys.platform == "win32":
        out = run(["route", "print"], capture_output=True, timeout=10,
                  creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        return parse_route_print(out.stdout.decode("ascii", errors="replace"))
    found = [parse_proc_net_route(_read(f"{proc_root}/net/route")),
             parse_proc_net_ipv6_route(_read(f"{proc_root}/net/ipv6_route"))]
    return [g for g in found if g is not None]
