#!/usr/bin/env python3
"""Integration check of wanem on this machine (run as root; Python 3.11 standard library).

    cargo build --release --manifest-path models/lab/wanem/Cargo.toml
    python3 models/lab/wanem/check.py [--quick] [--json FILE]

Builds three namespaces (ewlab-wt-a, ewlab-wt-em, ewlab-wt-b): a --veth-- [wanem] --veth-- b,
with addresses of the benchmarking range 198.18.0.0/24 and 2001:db8:ff::/64 that exist only in
those namespaces, and measures through wanem:
  rtt        ping per path: mean RTT within 10 % of the configured up + down delay (two paths,
             one with jitter, one with asymmetric delays, IPv4 and IPv6)
  loss       2,000 pings over a path with 1 % loss each way: loss within 1 point of 1.99 %
  rate       iperf3 TCP up (20 Mbit/s path) and down (50 Mbit/s): goodput within 10 % of
             rate x 1448/1514 (TCP payload per Ethernet frame)
  throughput trafgen floods 60-byte UDP frames (with a 10 ms delay on the path): packets per
             second forwarded by wanem at the offered rates, and its drops; passes when a paced
             flood of >= 200k pkt/s went through without a drop, or the unpaced one reached 200k/s
Exit code 0 when every check passes. Namespaces are deleted at exit, also on Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.join(HERE, "target", "release", "wanem")
NS_A, NS_EM, NS_B = "ewlab-wt-a", "ewlab-wt-em", "ewlab-wt-b"
MAC_A, MAC_B = "02:77:ff:00:00:01", "02:77:ff:00:00:02"
MAC_NOBODY = "02:77:ff:00:00:99"  # flood frames: b counts them at its interface and drops them unparsed
A4, A6 = "198.18.0.1", "2001:db8:ff::1"
# per-path addresses on b: (v4, v6)
P_RTT1 = ("198.18.0.2", "2001:db8:ff::2")   # 30 ms up, 20 ms down: RTT 50 ms
P_RTT2 = ("198.18.0.3", "2001:db8:ff::3")   # 100 ms + 100 ms, jitter 10 ms: RTT 200 ms
P_LOSS = ("198.18.0.4", "2001:db8:ff::4")   # 5 ms each way, 1 % loss each way
P_RATE = ("198.18.0.5", "2001:db8:ff::5")   # 20 Mbit/s up, 50 Mbit/s down, 10 ms each way
P_FLOOD = ("198.18.0.6", "2001:db8:ff::6")  # 10 ms each way, no loss, no rate limit


def sh(argv, check=True, timeout=120, ns=None):
    full = (["ip", "netns", "exec", ns] if ns else []) + argv
    r = subprocess.run(full, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise RuntimeError(f"failed ({r.returncode}): {' '.join(full)}\n{r.stderr}{r.stdout}")
    return r


def cleanup():
    for ns in (NS_A, NS_EM, NS_B):
        r = sh(["ip", "netns", "pids", ns], check=False)
        for pid in r.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        sh(["ip", "netns", "del", ns], check=False)


def build():
    for ns in (NS_A, NS_EM, NS_B):
        sh(["ip", "netns", "add", ns])
        sh(["ip", "-n", ns, "link", "set", "lo", "up"])
    sh(["ip", "-n", NS_A, "link", "add", "eth0", "type", "veth", "peer", "name", "wi0", "netns", NS_EM])
    sh(["ip", "-n", NS_B, "link", "add", "eth0", "type", "veth", "peer", "name", "wo0", "netns", NS_EM])
    for k in ("all", "default"):
        sh(["sysctl", "-qw", f"net.ipv6.conf.{k}.disable_ipv6=1"], ns=NS_EM)
    for ns, mac, addrs in ((NS_A, MAC_A, [(A4, A6)]),
                           (NS_B, MAC_B, [P_RTT1, P_RTT2, P_LOSS, P_RATE, P_FLOOD])):
        sh(["ip", "-n", ns, "link", "set", "eth0", "address", mac])
        for v4, v6 in addrs:
            sh(["ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", "eth0"])
            sh(["ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", "eth0", "nodad"])
    for ns, dev in ((NS_A, "eth0"), (NS_B, "eth0"), (NS_EM, "wi0"), (NS_EM, "wo0")):
        # whole frames with real checksums, as on a wire
        sh(["ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off", "gro", "off"], ns=ns, check=False)
        sh(["ip", "-n", ns, "link", "set", dev, "up"])
    # static neighbours: the ping statistics hold no ARP/ND round trips
    for v4, v6 in [P_RTT1, P_RTT2, P_LOSS, P_RATE, P_FLOOD]:
        sh(["ip", "-n", NS_A, "neigh", "replace", v4, "lladdr", MAC_B, "dev", "eth0", "nud", "permanent"])
        sh(["ip", "-n", NS_A, "neigh", "replace", v6, "lladdr", MAC_B, "dev", "eth0", "nud", "permanent"])
        sh(["ip", "-n", NS_B, "neigh", "replace", A4, "lladdr", MAC_A, "dev", "eth0", "nud", "permanent"])
        sh(["ip", "-n", NS_B, "neigh", "replace", A6, "lladdr", MAC_A, "dev", "eth0", "nud", "permanent"])


CONFIG = {
    "seed": 11,
    "default": {"delay_ms": 1},
    "paths": [
        {"name": "rtt50", "prefixes": list(P_RTT1), "up": {"delay_ms": 30}, "down": {"delay_ms": 20}},
        {"name": "rtt200", "prefixes": list(P_RTT2), "delay_ms": 100, "jitter_ms": 10},
        {"name": "loss1", "prefixes": list(P_LOSS), "delay_ms": 5, "loss": 0.01},
        {"name": "rate", "prefixes": list(P_RATE), "delay_ms": 10, "up": {"rate_mbit": 20}, "down": {"rate_mbit": 50}},
        {"name": "flood", "prefixes": list(P_FLOOD), "delay_ms": 10},
    ],
}


def ping(dst, count, interval, size=56):
    fam = "-6" if ":" in dst else "-4"
    r = sh(["ping", "-n", "-q", fam, "-c", str(count), "-i", str(interval), "-s", str(size), "-W", "2", dst],
           ns=NS_A, check=False, timeout=count * interval + 30)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", r.stdout)
    m2 = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", r.stdout)
    sent, recv = int(m.group(1)), int(m.group(2))
    return {"sent": sent, "received": recv, "loss_pct": round(100 * (sent - recv) / sent, 2),
            "rtt_min": float(m2.group(1)), "rtt_avg": float(m2.group(2)), "rtt_max": float(m2.group(3)),
            "rtt_mdev": float(m2.group(4))}


def iperf(dst, reverse, secs):
    args = ["iperf3", "-c", dst, "-t", str(secs), "-J", "--connect-timeout", "3000"] + (["-R"] if reverse else [])
    r = sh(args, ns=NS_A, timeout=secs + 30)
    j = json.loads(r.stdout)
    return round(j["end"]["sum_received"]["bits_per_second"] / 1e6, 2)


def rx_packets(ns, dev):
    r = sh(["ip", "-n", ns, "-s", "-j", "link", "show", dev])
    return json.loads(r.stdout)[0]["stats64"]["rx"]["packets"]


def wanem_stats(p, statsfile):
    # the file of the previous SIGUSR1 goes first: what is read then is this signal's snapshot
    # (wanem writes FILE.tmp and renames it, so a file that exists is whole)
    try:
        os.remove(statsfile)
    except FileNotFoundError:
        pass
    os.kill(p.pid, signal.SIGUSR1)
    for _ in range(250):
        time.sleep(0.02)
        try:
            with open(statsfile) as f:
                return json.load(f)
        except (OSError, ValueError):
            pass
    raise RuntimeError("no stats from wanem")


def flood(p, statsfile, rate_pps, secs, tmp):
    cfg = os.path.join(tmp, "flood.cfg")
    with open(cfg, "w") as f:
        f.write("{ eth(da=%s, sa=%s), ipv4(sa=%s, da=%s, ttl=64), udp(sp=dinc(1024, 60000), dp=9), fill(0x41, 18) }\n"
                % (MAC_NOBODY, MAC_A, A4, P_FLOOD[0]))
    n = int(rate_pps * secs) if rate_pps else 0
    before = wanem_stats(p, statsfile)
    rx0 = rx_packets(NS_B, "eth0")
    args = ["trafgen", "-i", cfg, "-o", "eth0", "-q", "--cpus", "1"]
    args += ["-b", f"{rate_pps}pps", "-n", str(n)] if rate_pps else ["-n", "0"]
    t0 = time.time()
    tg = subprocess.Popen(["ip", "netns", "exec", NS_A] + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if rate_pps:
        tg.wait(timeout=secs * 3 + 30)
    else:
        time.sleep(secs)
        tg.send_signal(signal.SIGINT)
        try:
            tg.wait(timeout=5)
        except subprocess.TimeoutExpired:
            tg.kill()
            tg.wait()
    t1 = time.time()
    time.sleep(0.5)  # the last 10 ms-delayed frames leave
    after = wanem_stats(p, statsfile)
    rx1 = rx_packets(NS_B, "eth0")
    up0, up1 = before["up"], after["up"]
    dt = t1 - t0
    res = {"offered_pps": rate_pps or "max", "seconds": round(dt, 2),
           "wanem_rx": up1["rx"] - up0["rx"], "forwarded": up1["forwarded"] - up0["forwarded"],
           "kernel_drops": after["rx_kernel_drops"]["inner"] - before["rx_kernel_drops"]["inner"],
           "dropped_tx": up1["dropped_tx"] - up0["dropped_tx"], "dropped_overflow": up1["dropped_overflow"] - up0["dropped_overflow"],
           "received_at_b": rx1 - rx0}
    res["forwarded_pps"] = round(res["forwarded"] / dt)
    # a paced flood is sustained when wanem forwarded what trafgen offered with no drop anywhere;
    # its wall time includes trafgen's start and stop, so forwarded_pps reads a little under the rate
    res["sustained"] = bool(rate_pps) and res["kernel_drops"] == 0 and res["dropped_overflow"] == 0 \
        and res["dropped_tx"] == 0 and res["forwarded"] >= 0.995 * n
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer pings and shorter floods")
    ap.add_argument("--json", help="write the results here too")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    if not os.path.exists(BIN):
        sys.exit(f"build first: cargo build --release --manifest-path {os.path.join(HERE, 'Cargo.toml')}")
    if any(l.startswith("ewlab-") and not l.startswith("ewlab-wt-") for l in sh(["ip", "netns", "list"]).stdout.split()):
        sys.exit("a lab run is active (ewlab-* namespaces exist); run this check on its own")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    tmp = tempfile.mkdtemp(prefix="ewlab-wt-")
    results, ok = {}, True
    p = iperf_srv = None
    try:
        cleanup()
        build()
        cfgp = os.path.join(tmp, "wanem.json")
        json.dump(CONFIG, open(cfgp, "w"))
        statsfile = os.path.join(tmp, "stats.json")
        p = subprocess.Popen(["ip", "netns", "exec", NS_EM, BIN, "--inner", "wi0", "--outer", "wo0", "--config", cfgp,
                              "--stats-file", statsfile], stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "wanem.log"), "w"))
        iperf_srv = subprocess.Popen(["ip", "netns", "exec", NS_B, "iperf3", "-s", "-B", "::"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        if p.poll() is not None:
            raise RuntimeError("wanem exited: " + open(os.path.join(tmp, "wanem.log")).read())
        n = 100 if a.quick else 300
        checks = []
        for name, dst, want in (("rtt50 v4", P_RTT1[0], 50.0), ("rtt50 v6", P_RTT1[1], 50.0),
                                ("rtt200 v4 (jitter 10 ms)", P_RTT2[0], 200.0), ("rtt200 v6 (jitter 10 ms)", P_RTT2[1], 200.0)):
            r = ping(dst, n, 0.02)
            good = abs(r["rtt_avg"] - want) <= 0.1 * want and r["loss_pct"] == 0
            checks.append((f"rtt {name}", good, f"avg {r['rtt_avg']:.2f} ms (configured {want:.0f} ms), "
                                                 f"min {r['rtt_min']:.2f}, max {r['rtt_max']:.2f}, mdev {r['rtt_mdev']:.2f}"))
            results[f"rtt {name}"] = r
        r = ping(P_LOSS[0], 2000 if not a.quick else 1000, 0.005)
        want = 100 * (1 - 0.99 ** 2)
        checks.append(("loss 1 % each way", abs(r["loss_pct"] - want) <= 1.0,
                       f"{r['sent'] - r['received']} of {r['sent']} lost = {r['loss_pct']:.2f} % (expected {want:.2f} %), "
                       f"RTT avg {r['rtt_avg']:.2f} ms (configured 10)"))
        results["loss"] = r
        secs = 4 if a.quick else 8
        for name, rev, rate in (("up 20 Mbit/s", False, 20.0), ("down 50 Mbit/s", True, 50.0)):
            got = iperf(P_RATE[0], rev, secs)
            want = rate * 1448 / 1514
            checks.append((f"rate {name}", abs(got - want) <= 0.1 * want, f"iperf3 {got:.2f} Mbit/s (expected ~{want:.2f})"))
            results[f"rate {name}"] = got
        fl = []
        for pps in ([100_000, 200_000, 0] if a.quick else [100_000, 200_000, 300_000, 0]):
            r = flood(p, statsfile, pps, 3 if a.quick else 5, tmp)
            fl.append(r)
            print("flood", r, flush=True)
            checks.append((f"flood {r['offered_pps']} pps", True,
                           f"wanem forwarded {r['forwarded_pps']:,} pkt/s ({r['forwarded']:,} of {r['wanem_rx']:,} read; "
                           f"kernel drops {r['kernel_drops']:,}, b received {r['received_at_b']:,})"))
        best = max(r["forwarded_pps"] for r in fl)
        sustained = max([r["offered_pps"] for r in fl if r["sustained"]], default=0)
        checks.append(("throughput >= 200k pkt/s", best >= 200_000 or sustained >= 200_000,
                       f"best {best:,} pkt/s forwarded; highest offered rate forwarded without a drop: {sustained:,} pkt/s"))
        results["flood"] = fl
        os.kill(p.pid, signal.SIGTERM)
        p.wait(timeout=10)
        results["wanem_exit_code"] = p.returncode
        checks.append(("wanem exits cleanly on SIGTERM", p.returncode == 0, f"exit code {p.returncode}"))
        p = None
        width = max(len(c[0]) for c in checks)
        for name, good, detail in checks:
            print(f"{'ok  ' if good else 'FAIL'} {name:<{width}}  {detail}")
            ok = ok and good
        results["checks"] = [{"name": c[0], "ok": c[1], "detail": c[2]} for c in checks]
        if a.json:
            json.dump(results, open(a.json, "w"), indent=1)
        print(f"{sum(1 for c in checks if c[1])} passed, {sum(1 for c in checks if not c[1])} failed")
    finally:
        if p is not None and p.poll() is None:
            p.kill()
        if iperf_srv is not None:
            iperf_srv.kill()
            iperf_srv.wait()
        cleanup()
        for f in os.listdir(tmp):
            os.remove(os.path.join(tmp, f))
        os.rmdir(tmp)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
