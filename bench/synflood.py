#!/usr/bin/env python3
"""Writes a random-source TCP SYN flood as a pcap: every packet a SYN from a new random IPv4
source address and port to one victim port, so N packets are N distinct flows.

    python3 bench/synflood.py --packets 5000000 -o /tmp/synflood-5m.pcap
    /usr/bin/time -f '%e s, peak RSS %M KiB' target/release/edgewatch replay /tmp/synflood-5m.pcap --alerts /dev/null

Deterministic for a seed (standard library only). Packets are 54-byte Ethernet/IPv4/TCP frames
at --rate packets per second (default 100,000), starting 2024-03-01 12:00:00 UTC.
"""

import argparse
import random
import struct
import sys


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packets", type=int, default=5_000_000)
    ap.add_argument("--rate", type=float, default=100_000.0, help="packets per second")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--victim", default="192.0.2.10")
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    victim = bytes(int(x) for x in args.victim.split("."))
    eth = bytes.fromhex("020000000001" "020000000002" "0800")
    t0 = 1709294400.0
    step = 1.0 / args.rate
    with open(args.output, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        out = []
        for i in range(args.packets):
            src = struct.pack("!I", rng.randrange(0x0B000000, 0xDF000000))  # 11.0.0.0 - 222.255.255.255
            sport = rng.randrange(1024, 65536)
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, i & 0xFFFF, 0x4000, 64, 6, 0, src, victim)
            ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
            tcp = struct.pack("!HHIIBBHHH", sport, args.port, rng.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0)
            pseudo = src + victim + struct.pack("!BBH", 0, 6, len(tcp))
            tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
            frame = eth + ip + tcp
            ts = t0 + i * step
            sec = int(ts)
            out.append(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(frame), len(frame)) + frame)
            if len(out) == 65536:
                f.write(b"".join(out))
                out.clear()
        f.write(b"".join(out))
    print(f"synflood: {args.packets} SYNs from random sources to {args.victim}:{args.port} -> {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
