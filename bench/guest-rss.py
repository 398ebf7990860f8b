#!/usr/bin/env python3
"""The memory a 32-bit router binary uses under qemu-user, apart from qemu's own.

    python3 bench/guest-rss.py [--seconds S] [--netns NS] -- QEMU BINARY ARGS...
    python3 bench/guest-rss.py -- qemu-mipsel-static target/mipsel-unknown-linux-musl/router/edgewatch \\
        replay /tmp/sf-1m.pcap --config router.toml --alerts /dev/null

qemu-user maps a 32-bit guest's whole address space into its own at one base address (set here
with -B), so the resident pages in [base, base + 4 GiB) are the guest's: its binary, heap,
stacks and mappings, what the same program would hold on a router. The rest of the process is
qemu (translated code, its own heap). Samples /proc/PID/smaps every --interval seconds until the
command ends (or --seconds have passed: then SIGTERM, and the wait for it to end); prints the
guest's peak RSS, its RSS at the first sample after --idle-after seconds, and qemu's whole
peak (VmHWM). Linux only; standard library only.
"""

import argparse
import signal
import subprocess
import sys
import time

BASE = 0x40000000
SPAN = 1 << 32


def guest_rss_kib(pid):
    """Resident KiB of the mappings inside the guest's address space."""
    total = 0
    inside = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                start, end = (int(x, 16) for x in first.split("-"))
                inside = BASE <= start and end <= BASE + SPAN
            elif first == "Rss:" and inside:
                total += int(line.split()[1])
    return total


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, help="stop the command with SIGTERM after this long")
    ap.add_argument("--idle-after", type=float, default=2.0,
                    help="report the guest RSS at this many seconds as 'idle' (default 2)")
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--netns", help="run the command in this network namespace (ip netns exec)")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if len(cmd) < 2 or not cmd[0].startswith("qemu-"):
        ap.error("give the command as: -- qemu-ARCH[-static] BINARY ARGS...")
    cmd = [cmd[0], "-B", hex(BASE)] + cmd[1:]
    if args.netns:
        cmd = ["ip", "netns", "exec", args.netns] + cmd
    proc = subprocess.Popen(cmd)
    # With `ip netns exec`, the qemu process is its child after an exec: the same PID.
    started = time.monotonic()
    peak = idle = hwm = 0
    stopped = False
    while proc.poll() is None:
        try:
            rss = guest_rss_kib(proc.pid)
            hwm = max(hwm, vm_hwm_kib(proc.pid))
        except (FileNotFoundError, ProcessLookupError):
            break
        peak = max(peak, rss)
        elapsed = time.monotonic() - started
        if not idle and elapsed >= args.idle_after:
            idle = rss
        if args.seconds and elapsed >= args.seconds and not stopped:
            proc.send_signal(signal.SIGTERM)
            stopped = True
        time.sleep(args.interval)
    code = proc.wait()
    print(f"guest peak RSS {peak} KiB ({peak / 1024:.1f} MiB), at {args.idle_after:g} s "
          f"{idle} KiB ({idle / 1024:.1f} MiB); qemu process peak {hwm} KiB "
          f"({hwm / 1024:.1f} MiB); exit {code}", file=sys.stderr)
    sys.exit(0 if code == 0 else 1)


if __name__ == "__main__":
    main()
