#!/usr/bin/env python3
"""Check a lab run: does capture.pcap hold the traffic that attacks.json says, when it says?

    python3 models/lab/check_capture.py /tmp/lab-2            # report, exit 1 on a problem
    python3 models/lab/check_capture.py /tmp/lab-2 --json     # the same as JSON
    python3 models/lab/check_capture.py tests/data/lab-mini.pcap   # X.pcap + X.attacks.json

Reads DIR/capture.pcap (classic pcap, Ethernet), DIR/attacks.json and DIR/lab.json with the standard
library only. For every episode it counts the packets between the attacker's address and the victim
inside [start, end] and just around it, and it reports:
  - episodes with no packets inside their window (a tool that did nothing),
  - attacker packets outside every window of that attacker (the attackers' ordinary requests),
  - packets whose address lies outside the lab subnets (must be none; link-local, link-scope
    multicast and the unspecified address are part of the lab link and allowed),
  - capture span vs. run span, and per-host packet counts.
"""
from __future__ import annotations

import argparse
import bisect
import ipaddress
import json
import os
import struct
import sys
from collections import Counter, defaultdict


def read_pcap(path: str, raw: bool = False):
    """Yield (ts, src, dst, proto) for IPv4/IPv6 packets; src/dst as strings, proto as int. With
    raw, each tuple also holds the packet's pcap record (its 16-byte header and its bytes) to
    write into a file that starts with this one's 24-byte header (label.split_views)."""
    with open(path, "rb") as f:
        gh = f.read(24)
        if len(gh) < 24:
            return
        magic = gh[:4]
        if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            endian = "<"
        elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            endian = ">"
        else:
            raise ValueError(f"{path}: not a classic pcap file")
        nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
        linktype = struct.unpack(endian + "I", gh[20:24])[0]
        if linktype != 1:
            raise ValueError(f"{path}: link type {linktype}, expected Ethernet (1)")
        rh = struct.Struct(endian + "IIII")
        div = 1e9 if nano else 1e6
        while True:
            h = f.read(16)
            if len(h) < 16:
                return
            sec, frac, incl, _orig = rh.unpack(h)
            data = f.read(incl)
            ts = sec + frac / div
            tail = (h + data,) if raw else ()
            off = 12
            et = int.from_bytes(data[off:off + 2], "big")
            while et in (0x8100, 0x88A8) and len(data) >= off + 6:
                off += 4
                et = int.from_bytes(data[off:off + 2], "big")
            off += 2
            if et == 0x0800 and len(data) >= off + 20:
                yield (ts, str(ipaddress.IPv4Address(data[off + 12:off + 16])),
                       str(ipaddress.IPv4Address(data[off + 16:off + 20])), data[off + 9]) + tail
            elif et == 0x86DD and len(data) >= off + 40:
                yield (ts, str(ipaddress.IPv6Address(data[off + 8:off + 24])),
                       str(ipaddress.IPv6Address(data[off + 24:off + 40])), data[off + 6]) + tail
            else:
                yield (ts, None, None, et) + tail


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", help="a lab output DIR, or a .pcap with its .attacks.json beside it")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--grace", type=float, default=1.0, help="seconds around a window counted as 'edge' (1.0)")
    a = ap.parse_args()
    if os.path.isdir(a.path):
        pcap = os.path.join(a.path, "capture.pcap")
        eps = json.load(open(os.path.join(a.path, "attacks.json")))
        lab = json.load(open(os.path.join(a.path, "lab.json")))
    else:  # a shipped capture: lab.json is not shipped, the default topology applies
        pcap = a.path
        stem = a.path[:-5] if a.path.endswith(".pcap") else a.path
        eps = json.load(open(stem + ".attacks.json"))
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        sys.dont_write_bytecode = True
        import lab as labmod
        srv, cl, at = labmod.make_hosts(4, 2)
        lab = {"subnets": [str(labmod.SUBNET4), str(labmod.SUBNET6)], "t0": None, "duration_s": 0,
               "hosts": [{"name": h.name, "role": h.role, "ipv4": h.ip4, "ipv6": h.ip6} for h in [srv] + cl + at]}
    lab_nets = [ipaddress.ip_network(n) for n in lab["subnets"]] + \
        [ipaddress.ip_network(n) for n in ("fe80::/10", "ff02::/16", "::/128", "224.0.0.0/24", "0.0.0.0/32")]
    attacker_ips = {}
    for h in lab["hosts"]:
        if h["role"] == "attacker":
            attacker_ips[h["ipv4"]] = h["name"]
            attacker_ips[h["ipv6"]] = h["name"]
    role_of = {}
    for h in lab["hosts"]:
        role_of[h["ipv4"]] = h["name"]
        role_of[h["ipv6"]] = h["name"]
    # per attacker host: sorted windows
    win_by_host = defaultdict(list)
    for i, e in enumerate(eps):
        win_by_host[attacker_ips.get(e["attacker"], e["attacker"])].append((e["start"], e["end"], i))
    for v in win_by_host.values():
        v.sort()
    inside = Counter()
    edge_before = Counter()
    edge_after = Counter()
    first = {}
    last = {}
    outside_by_host = Counter()
    per_host = Counter()
    foreign = Counter()
    total = 0
    t_first = t_last = None
    for ts, src, dst, proto in read_pcap(pcap):
        total += 1
        t_first = ts if t_first is None else t_first
        t_last = ts
        if src is None:
            continue
        for ip in (src, dst):
            addr = ipaddress.ip_address(ip)
            if not any(addr in n for n in lab_nets):
                foreign[ip] += 1
        host = attacker_ips.get(src) or attacker_ips.get(dst)
        per_host[role_of.get(src, src) if role_of.get(src) != "srv" else role_of.get(dst, dst)] += 1
        if not host:
            continue
        peer = dst if src in attacker_ips else src
        aip = src if src in attacker_ips else dst
        wins = win_by_host.get(host, [])
        starts = [w[0] for w in wins]
        k = bisect.bisect_right(starts, ts + a.grace) - 1
        hit = False
        for j in (k, k - 1):
            if 0 <= j < len(wins):
                s, e, idx = wins[j]
                ep = eps[idx]
                if aip != ep["attacker"] or peer != ep["victim"]:
                    continue
                if s <= ts <= e:
                    inside[idx] += 1
                    first[idx] = min(first.get(idx, ts), ts)
                    last[idx] = max(last.get(idx, ts), ts)
                    hit = True
                    break
                if s - a.grace <= ts < s:
                    edge_before[idx] += 1
                    hit = True
                    break
                if e < ts <= e + a.grace:
                    edge_after[idx] += 1
                    hit = True
                    break
        if not hit:
            outside_by_host[host] += 1
    rows = []
    problems = []
    for i, e in enumerate(eps):
        r = {"id": e.get("id", i), "class": e["class"], "tool": e["tool"], "attacker": e["attacker"],
             "victim": e["victim"], "start": e["start"], "end": e["end"], "seconds": round(e["end"] - e["start"], 2),
             "packets": inside[i], "edge_before": edge_before[i], "edge_after": edge_after[i],
             "first_offset_s": round(first[i] - e["start"], 3) if i in first else None,
             "last_to_end_s": round(e["end"] - last[i], 3) if i in last else None}
        rows.append(r)
        if inside[i] == 0:
            problems.append(f"episode {r['id']} ({e['tool']}) has no packets in its window")
    if foreign:
        problems.append(f"packets with non-lab addresses: {dict(foreign)}")
    t0 = lab.get("t0") or t_first
    res = {"packets": total, "capture_first": t_first, "capture_last": t_last,
           "run_t0": lab.get("t0"), "run_end": (lab["t0"] + lab["duration_s"]) if lab.get("t0") else None,
           "episodes": rows, "attacker_packets_outside_windows": dict(outside_by_host),
           "packets_by_host": dict(per_host), "foreign_addresses": dict(foreign),
           "per_class": dict(Counter(e["class"] for e in eps)), "problems": problems}
    if a.json:
        json.dump(res, sys.stdout, indent=1)
        print()
    else:
        print(f"{total} packets, capture {t_first:.3f} .. {t_last:.3f} ({t_last - t_first:.1f} s); "
              + (f"traffic t0 {t0:.3f}, +{lab['duration_s']:.0f} s" if lab.get("t0") else "t0 = first packet"))
        print("packets by host (to/from the server):", dict(sorted(per_host.items())))
        print("episodes per class:", res["per_class"])
        print(f"{'id':>3} {'class':10} {'tool':12} {'attacker':11} {'t0+s':>6} {'secs':>6} {'pkts':>7} "
              f"{'pre':>4} {'post':>5} {'first':>6} {'last<end':>8}")
        for r in rows:
            print(f"{r['id']:>3} {r['class']:10} {r['tool']:12} {r['attacker']:11} {r['start'] - t0:6.1f} "
                  f"{r['seconds']:6.1f} {r['packets']:7d} {r['edge_before']:4d} {r['edge_after']:5d} "
                  f"{r['first_offset_s'] if r['first_offset_s'] is not None else '-':>6} "
                  f"{r['last_to_end_s'] if r['last_to_end_s'] is not None else '-':>8}")
        print("attacker packets outside their windows (ordinary requests):", dict(outside_by_host))
        print("non-lab addresses:", dict(foreign) or "none")
        for p in problems:
            print("PROBLEM:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
