#!/usr/bin/env python3
"""Answer ICMP and ICMPv6 echo requests arriving on a TUN device after a set delay and jitter.

This kernel has no tc netem, so the ICMP tests impose delay with this responder, run inside a
test network namespace: it creates the TUN device, prints ``ready`` once the device exists, and
answers every echo request routed into the device after ``delay`` plus a uniform random offset in
[-jitter, +jitter] (each reply on its own schedule, so replies may overtake one another).

    ip netns exec NS python tests/tun_responder.py --dev cmtun --delay 0.04 --jitter 0.01
"""
from __future__ import annotations

import argparse
import fcntl
import heapq
import os
import random
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_reply(packet: bytes) -> bytes | None:
    """The echo reply to an IPv4 or IPv6 echo request packet, or None for anything else."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 28:
        ihl = (packet[0] & 0x0F) * 4
        if packet[9] != 1 or packet[ihl] != 8:
            return None
        icmp = bytearray(packet[ihl:])
        icmp[0], icmp[2:4] = 0, b"\0\0"
        icmp[2:4] = struct.pack("!H", checksum(bytes(icmp)))
        header = bytearray(packet[:ihl])
        header[8] = 64                                   # TTL
        header[12:16], header[16:20] = packet[16:20], packet[12:16]
        header[10:12] = b"\0\0"
        header[10:12] = struct.pack("!H", checksum(bytes(header)))
        return bytes(header) + bytes(icmp)
    if version == 6 and len(packet) >= 48:
        if packet[6] != 58 or packet[40] != 128:        # no extension headers; echo request
            return None
        src, dst = packet[8:24], packet[24:40]
        icmp = bytearray(packet[40:])
        icmp[0], icmp[2:4] = 129, b"\0\0"
        pseudo = dst + src + struct.pack("!I3xB", len(icmp), 58)
        icmp[2:4] = struct.pack("!H", checksum(pseudo + bytes(icmp)))
        header = bytearray(packet[:40])
        header[7] = 64                                   # hop limit
        header[8:24], header[24:40] = dst, src
        return bytes(header) + bytes(icmp)
    return None


def serve(fd: int, delay: float, jitter: float, rng: random.Random) -> None:
    queue: list = []   # (due, sequence, packet)
    counter = 0
    while True:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            os.write(fd, heapq.heappop(queue)[2])
        wait = max(queue[0][0] - now, 0) if queue else None
        readable, _, _ = select.select([fd], [], [], wait)
        if not readable:
            continue
        packet = os.read(fd, 65535)
        reply = echo_reply(packet)
        if reply is not None:
            counter += 1
            due = time.monotonic() + max(0.0, delay + rng.uniform(-jitter, jitter))
            heapq.heappush(queue, (due, counter, reply))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dev", required=True, help="name of the TUN device to create")
    p.add_argument("--delay", type=float, default=0.0, help="seconds before each reply")
    p.add_argument("--jitter", type=float, default=0.0, help="uniform random offset bound, seconds")
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    fd = open_tun(args.dev)
    print("ready", flush=True)
    try:
        serve(fd, args.delay, args.jitter, random.Random(args.seed))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
