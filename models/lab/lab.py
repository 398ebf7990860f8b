#!/usr/bin/env python3
"""edgewatch traffic lab: labeled packet captures from a private namespace network.

Builds a small network of Linux network namespaces joined by a bridge (10.77.0.0/24 and fd77::/64,
which exist only inside those namespaces), runs real services on a "server" namespace (nginx,
OpenSSH, dnsmasq, iperf3), drives seeded benign traffic from client namespaces and runs real
attack tools (nmap, hping3, ab, dnsperf/dns flood, hydra, slowhttptest) from attacker namespaces
against the lab server only. tcpdump records everything on the server's bridge port.

Outputs in --out DIR: capture.pcap, attacks.json (labeled attack episodes), lab.json (run
metadata), benign.jsonl (every benign action), run/ (configs, daemon and tool logs).

Run as root:  python3 models/lab/lab.py --seed 1 --quick --out /tmp/lab-1
See models/lab/README.md. Standard library only.
"""
from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import math
import os
import platform
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

LAB_VERSION = "1"
PREFIX = "ewlab-"
BR_NS = "ewlab-br"
BRIDGE = "br0"
SUBNET4 = ipaddress.ip_network("10.77.0.0/24")
SUBNET6 = ipaddress.ip_network("fd77::/64")
ZONE = "lab.test"
TEST_USER = "ewlab"
TEST_UID = 4077
TEST_PASSWORD = "Edg3watch-lab-pass!"
PIDFILE = "/tmp/ewlab-lab.pid"
HERE = os.path.dirname(os.path.abspath(__file__))
# --wan: the namespace of the WAN emulator between the server and the bridge, and its program
WAN_NS = "ewlab-wan"
WANEM_BIN = os.path.join(HERE, "wanem", "target", "release", "wanem")
SNAPLEN = 128
CLASSES = ("scan", "flood", "bruteforce", "slowdos")

REQUIRED_TOOLS = [
    "ip", "nginx", "sshd", "dnsmasq", "iperf3", "nmap", "hping3", "hydra", "slowhttptest", "ab",
    "dig", "tcpdump", "curl", "ssh", "scp", "ssh-keygen", "sshpass", "ping", "timeout", "unshare",
    "openssl", "mount",
]
OPTIONAL_TOOLS = ["dnsperf", "ethtool", "tshark"]
PACKAGES = [
    "nginx", "openssh-server", "openssh-client", "dnsmasq-base", "iperf3", "nmap", "hping3", "hydra",
    "slowhttptest", "apache2-utils", "bind9-dnsutils", "tcpdump", "curl", "sshpass", "iputils-ping",
    "dnsperf", "ethtool", "iproute2", "coreutils", "tshark",
]


def log(msg: str) -> None:
    ts = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
    print(f"[lab {ts}] {msg}", file=sys.stderr, flush=True)


class LabStopping(Exception):
    """Raised when a process would be started after cleanup began."""


class LabSignal(Exception):
    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum


# --------------------------------------------------------------------------------------------
# hosts and topology

@dataclass
class Host:
    name: str  # short name, e.g. "c1"
    role: str  # server | client | attacker
    ip4: str
    ip6: str
    mac: str
    ns: str = ""
    port: str = ""  # bridge-side veth name in BR_NS

    def __post_init__(self):
        self.ns = PREFIX + self.name
        self.port = "v-" + self.name


def make_hosts(n_clients: int, n_attackers: int) -> tuple[Host, list[Host], list[Host]]:
    server = Host("srv", "server", "10.77.0.10", "fd77::10", "02:77:00:00:00:10")
    clients = [Host(f"c{i}", "client", f"10.77.0.{20 + i}", f"fd77::{20 + i}", f"02:77:00:00:00:{20 + i}")
               for i in range(1, n_clients + 1)]
    attackers = [Host(f"a{i}", "attacker", f"10.77.0.{65 + i}", f"fd77::{65 + i}", f"02:77:00:00:00:{65 + i}")
                 for i in range(1, n_attackers + 1)]
    return server, clients, attackers


# --------------------------------------------------------------------------------------------
# process registry: every process the lab starts goes through here so cleanup can end it

class Procs:
    def __init__(self, env: dict):
        self.lock = threading.Lock()
        self.procs: list[subprocess.Popen] = []
        self.stopping = False
        self.env = env

    def spawn(self, argv: list[str], ns: str | None = None, out=None, cwd: str | None = None) -> subprocess.Popen:
        full = (["ip", "netns", "exec", ns] + argv) if ns else list(argv)
        with self.lock:
            if self.stopping:
                raise LabStopping()
            p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out if out is not None else subprocess.DEVNULL,
                                 stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd, env=self.env)
            self.procs.append(p)
        return p

    def forget(self, p: subprocess.Popen) -> None:
        with self.lock:
            if p in self.procs:
                self.procs.remove(p)

    @staticmethod
    def kill(p: subprocess.Popen, sig=signal.SIGTERM) -> None:
        try:
            os.killpg(p.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, p: subprocess.Popen, timeout: float) -> int:
        """Wait for p; past timeout (a backstop behind the `timeout` wrapper) end its group."""
        try:
            rc = p.wait(timeout=max(0.1, timeout))
        except subprocess.TimeoutExpired:
            self.kill(p, signal.SIGTERM)
            try:
                rc = p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.kill(p, signal.SIGKILL)
                rc = p.wait()
        self.forget(p)
        return rc

    def run(self, argv: list[str], ns: str | None, out=None, timeout: float = 60, cwd=None):
        """Run to completion. Returns (rc, start, end, full command string)."""
        full = (["ip", "netns", "exec", ns] + argv) if ns else list(argv)
        start = time.time()
        p = self.spawn(argv, ns, out, cwd)
        rc = self.wait(p, timeout)
        end = time.time()
        return rc, start, end, shlex.join(full)

    def stop_all(self, grace: float = 3.0) -> None:
        with self.lock:
            self.stopping = True
            procs = list(self.procs)
        for p in procs:
            if p.poll() is None:
                self.kill(p, signal.SIGTERM)
        deadline = time.time() + grace
        for p in procs:
            try:
                p.wait(timeout=max(0.05, deadline - time.time()))
            except subprocess.TimeoutExpired:
                self.kill(p, signal.SIGKILL)
                try:
                    p.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass


def sh(argv: list[str], check: bool = True, capture: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=capture, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"command failed ({r.returncode}): {shlex.join(argv)}\n{r.stderr or ''}{r.stdout or ''}")
    return r


def lab_namespaces() -> list[str]:
    r = sh(["ip", "netns", "list"], check=False)
    names = []
    for line in (r.stdout or "").splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX):
            names.append(name)
    return names


def delete_namespaces(names: list[str]) -> None:
    """Kill every process inside the given namespaces, then delete them (veths go with them)."""
    for _ in range(3):
        alive = False
        for ns in names:
            r = sh(["ip", "netns", "pids", ns], check=False)
            for pid in (r.stdout or "").split():
                alive = True
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        if not alive:
            break
        time.sleep(0.3)
    for ns in names:
        sh(["ip", "netns", "del", ns], check=False)
        d = os.path.join("/etc/netns", ns)
        if os.path.isdir(d):
            shutil.rmtree(d, ignore_errors=True)
    # per-namespace resolv.conf dirs of a crashed run whose namespace is already gone
    if os.path.isdir("/etc/netns"):
        for d in os.listdir("/etc/netns"):
            if d.startswith(PREFIX):
                shutil.rmtree(os.path.join("/etc/netns", d), ignore_errors=True)
        try:
            os.rmdir("/etc/netns")  # only if empty, i.e. only the lab used it
        except OSError:
            pass


# --------------------------------------------------------------------------------------------
# attack episodes

@dataclass
class Episode:
    idx: int
    cls: str
    tool: str
    attacker: Host
    ipv: int
    dur: float  # planned duration (s)
    limit: float = 0.0  # hard bound given to `timeout` (s)
    planned: float = 0.0  # planned start offset from t0 (s)
    argv: list = field(default_factory=list)
    params: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)  # path -> content written before running


COMMON_PASSWORDS = (
    "123456 password 123456789 12345678 12345 qwerty abc123 football 1234567 monkey 111111 letmein "
    "1234 1234567890 dragon baseball sunshine iloveyou trustno1 princess adobe123 123123 welcome "
    "login admin qwerty123 solo 1q2w3e4r master 666666 photoshop 1qaz2wsx qwertyuiop ashley mustang "
    "121212 starwars 654321 bailey access flower 555555 passw0rd shadow lovely 7777777 michael "
    "superman 696969 123qwe hello charlie aa123456 donald password1 qwerty12 root toor changeme "
    "raspberry ubnt default guest test test123 user admin123 administrator secret pass123 welcome1 "
    "P@ssw0rd Password1 linux server router openwrt edgewatch lab labpass"
).split()


class Lab:
    def __init__(self, args):
        self.args = args
        self.seed = args.seed
        self.quick = args.quick
        self.duration = float(args.duration_s)
        self.rng = random.Random(f"ewlab-plan-{self.seed}")
        self.out = os.path.abspath(args.out)
        self.run_dir = os.path.join(self.out, "run")
        self.tmp = ""
        self.server, self.clients, self.attackers = make_hosts(args.clients, args.attackers)
        self.hosts = [self.server] + self.clients + self.attackers
        self.procs: Procs | None = None
        self.stop = threading.Event()
        self.t0 = 0.0
        self.tcpdump: subprocess.Popen | None = None
        self.tcpdump_log = ""
        self.tcpdump_stats: dict = {}
        self.episodes: list[Episode] = []
        self.records: list[dict] = []
        self.rec_lock = threading.Lock()
        self.benign_lock = threading.Lock()
        self.benign_counts: dict = {}
        self.benign_file = None
        self.threads: list[threading.Thread] = []
        self.have = {t: shutil.which(t) is not None for t in OPTIONAL_TOOLS}
        self.iperf_ports: dict[str, int] = {}
        self.www_files: dict[str, int] = {}
        self.meta: dict = {}
        self.created_ns: list[str] = []
        self.cleaned = False
        self.capture_start = self.capture_end = None
        self.wan = getattr(args, "wan", None)  # --wan PRESET, or None: no WAN emulator (as before)
        self.wan_links: dict = {}
        self.wan_config: dict = {}
        self.wan_stats: dict = {}
        self.wanem: subprocess.Popen | None = None

    # ---------------------------------------------------------------- setup
    def prepare_dirs(self) -> None:
        os.makedirs(self.out, exist_ok=True)
        for f in ("capture.pcap", "attacks.json", "lab.json", "benign.jsonl"):
            p = os.path.join(self.out, f)
            if os.path.exists(p):
                os.remove(p)
        if os.path.isdir(self.run_dir):
            shutil.rmtree(self.run_dir)
        os.makedirs(os.path.join(self.run_dir, "attacks"))
        # temp dirs of a crashed run (we hold the run lock, so no live run owns them)
        tmproot = tempfile.gettempdir()
        for d in os.listdir(tmproot):
            if d.startswith("ewlab-tmp-"):
                shutil.rmtree(os.path.join(tmproot, d), ignore_errors=True)
        self.tmp = tempfile.mkdtemp(prefix="ewlab-tmp-")
        os.chmod(self.tmp, 0o755)
        os.makedirs(os.path.join(self.tmp, "home-root"), mode=0o700)
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": os.path.join(self.tmp, "home-root"),  # keeps ssh/nmap/hydra away from root's home
            "LC_ALL": "C", "LANG": "C", "TERM": "dumb",
        }
        self.procs = Procs(env)

    def setup_network(self) -> None:
        log("building namespaces")
        stale = lab_namespaces()
        if stale:
            log(f"removing stale namespaces from an earlier run: {' '.join(stale)}")
            delete_namespaces(stale)
        all_ns = [BR_NS] + [h.ns for h in self.hosts]
        for ns in all_ns:
            sh(["ip", "netns", "add", ns])
            self.created_ns.append(ns)
            # resolver inside the namespace = the lab's dnsmasq (ip netns exec bind-mounts this file)
            d = os.path.join("/etc/netns", ns)
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "resolv.conf"), "w") as f:
                if ns == BR_NS:
                    f.write("nameserver 127.0.0.1\n")
                else:
                    f.write(f"nameserver {self.server.ip4}\nsearch {ZONE}\noptions timeout:1 attempts:1\n")
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        brx = ["ip", "netns", "exec", BR_NS]
        # the bridge namespace is pure L2: no IPv6 (no RS/MLD from it), no addresses
        for k in ("all", "default"):
            sh(brx + ["sysctl", "-qw", f"net.ipv6.conf.{k}.disable_ipv6=1"])
        sh(["ip", "-n", BR_NS, "link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0"])
        sh(["ip", "-n", BR_NS, "link", "set", BRIDGE, "up"])
        if self.wan:
            self.setup_wan_ns()
        for h in self.hosts:
            hx = ["ip", "netns", "exec", h.ns]
            for k in ("all", "default"):
                sh(hx + ["sysctl", "-qw", f"net.ipv6.conf.{k}.accept_dad=0"])
                sh(hx + ["sysctl", "-qw", f"net.ipv6.conf.{k}.accept_ra=0"])
            if self.wan and h is self.server:
                self.link_server_through_wan(h)
                continue
            # both veth ends are created straight inside lab namespaces: nothing in the host namespace
            sh(["ip", "-n", BR_NS, "link", "add", h.port, "type", "veth", "peer", "name", "eth0", "netns", h.ns])
            sh(["ip", "-n", BR_NS, "link", "set", h.port, "master", BRIDGE])
            sh(["ip", "-n", h.ns, "link", "set", "eth0", "address", h.mac])
            sh(["ip", "-n", h.ns, "addr", "add", f"{h.ip4}/24", "dev", "eth0"])
            sh(["ip", "-n", h.ns, "addr", "add", f"{h.ip6}/64", "dev", "eth0", "nodad"])
            if self.have["ethtool"]:
                # real MTU-sized packets and real checksums on the wire, as a router would see them
                for ns, dev in ((h.ns, "eth0"), (BR_NS, h.port)):
                    sh(["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off",
                        "gro", "off"], check=False)
            sh(["ip", "-n", BR_NS, "link", "set", h.port, "up"])
            sh(["ip", "-n", h.ns, "link", "set", "eth0", "up"])
        if self.wan:
            self.wan_static_neighbours()
        # sanity: no namespace has a route out of the lab subnet
        for h in self.hosts:
            routes = sh(["ip", "-n", h.ns, "route", "show", "default"]).stdout.strip()
            routes6 = sh(["ip", "-n", h.ns, "-6", "route", "show", "default"]).stdout.strip()
            if routes or routes6:
                raise RuntimeError(f"unexpected default route in {h.ns}: {routes} {routes6}")

    # ---------------------------------------------------------------- --wan: WAN emulator in front of the server
    # server eth0 --veth-- w-srv [wanem in ewlab-wan] w-br --veth-- v-srv (bridge port, tcpdump) -- br0 -- clients
    # tcpdump stays on v-srv, the clients' side of wanem: what a sensor on the clients' router sees.
    def setup_wan_ns(self) -> None:
        sh(["ip", "netns", "add", WAN_NS])
        self.created_ns.append(WAN_NS)
        sh(["ip", "-n", WAN_NS, "link", "set", "lo", "up"])
        for k in ("all", "default"):  # pure L2 like the bridge: wanem's namespace sends nothing of its own
            sh(["ip", "netns", "exec", WAN_NS, "sysctl", "-qw", f"net.ipv6.conf.{k}.disable_ipv6=1"])

    def link_server_through_wan(self, h: Host) -> None:
        sh(["ip", "-n", WAN_NS, "link", "add", "w-srv", "type", "veth", "peer", "name", "eth0", "netns", h.ns])
        sh(["ip", "-n", BR_NS, "link", "add", h.port, "type", "veth", "peer", "name", "w-br", "netns", WAN_NS])
        sh(["ip", "-n", BR_NS, "link", "set", h.port, "master", BRIDGE])
        sh(["ip", "-n", h.ns, "link", "set", "eth0", "address", h.mac])
        sh(["ip", "-n", h.ns, "addr", "add", f"{h.ip4}/24", "dev", "eth0"])
        sh(["ip", "-n", h.ns, "addr", "add", f"{h.ip6}/64", "dev", "eth0", "nodad"])
        # wanem reads and writes whole frames: no offloads anywhere on the path (wanem drops
        # frames over the MTU), the same as the other ports when ethtool exists
        for ns, dev in ((h.ns, "eth0"), (BR_NS, h.port), (WAN_NS, "w-srv"), (WAN_NS, "w-br")):
            if self.have["ethtool"]:
                sh(["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off",
                    "gro", "off"], check=False)
        for ns, dev in ((WAN_NS, "w-srv"), (WAN_NS, "w-br"), (BR_NS, h.port), (h.ns, "eth0")):
            sh(["ip", "-n", ns, "link", "set", dev, "up"])

    def wan_static_neighbours(self) -> None:
        """Permanent ARP/ND entries between the server and every host: address resolution is a
        local-link matter (a real host resolves its router, never a server across the Internet),
        so it must not take a WAN round trip (up to 800 ms, with loss) before each host's first packet."""
        srv = self.server
        for h in self.clients + self.attackers:
            for ns, peer in ((srv.ns, h), (h.ns, srv)):
                for addr in (peer.ip4, peer.ip6):
                    sh(["ip", "-n", ns, "neigh", "replace", addr, "lladdr", peer.mac, "dev", "eth0", "nud", "permanent"])

    def start_wan(self) -> None:
        """Draws the links (seeded) and starts wanem: one path per client/attacker address."""
        import links  # models/lab/links.py
        remotes = [(h.name, [f"{h.ip4}/32", f"{h.ip6}/128"]) for h in self.clients + self.attackers]
        self.wan_links = links.draw(self.wan, self.seed, remotes)
        self.wan_config = links.lab_wanem_config(self.wan_links, self.seed, inner="w-srv", outer="w-br")
        cfgp = os.path.join(self.run_dir, "wanem.json")
        with open(cfgp, "w") as f:
            json.dump(self.wan_config, f, indent=1)
            f.write("\n")
        out = open(os.path.join(self.run_dir, "wanem.log"), "w")
        self.wanem = self.procs.spawn([WANEM_BIN, "--config", cfgp, "--stats-file",
                                       os.path.join(self.run_dir, "wanem-stats.json")], ns=WAN_NS, out=out)
        out.close()
        for _ in range(40):
            time.sleep(0.05)
            if self.wanem.poll() is not None:
                raise RuntimeError("wanem exited: " + open(os.path.join(self.run_dir, "wanem.log")).read())
            if "wanem: w-srv <-> w-br" in open(os.path.join(self.run_dir, "wanem.log")).read():
                break
        else:
            raise RuntimeError("wanem did not start")
        for p in self.wan_links["paths"]:
            log(f"wan {p['name']:4s} {p['preset']:9s} rtt {p['rtt_ms']:6.1f} ms  loss {p['up']['loss']:.4f}/"
                f"{p['down']['loss']:.4f}  up/down {p['up']['rate_mbit']}/{p['down']['rate_mbit']} Mbit/s")

    def wan_drain_s(self) -> float:
        """How long packets can still be inside wanem (the longest path's delay, jitter and queue)."""
        worst = 0.0
        for p in self.wan_config.get("paths", []):
            for d in ("up", "down"):
                x = p[d]
                worst = max(worst, x.get("delay_ms", 0) + 3 * x.get("jitter_ms", 0) + 100.0)
        return worst / 1000.0

    def stop_wan(self) -> None:
        if self.wanem is None:
            return
        if self.wanem.poll() is None:
            Procs.kill(self.wanem, signal.SIGTERM)
            try:
                self.wanem.wait(timeout=10)
            except subprocess.TimeoutExpired:
                Procs.kill(self.wanem, signal.SIGKILL)
                self.wanem.wait()
        self.procs.forget(self.wanem)
        rc = self.wanem.returncode
        self.wanem = None
        try:
            with open(os.path.join(self.run_dir, "wanem-stats.json")) as f:
                self.wan_stats = json.load(f)
        except (OSError, ValueError):
            self.wan_stats = {}
        self.wan_stats["exit_code"] = rc
        up, down = self.wan_stats.get("up", {}), self.wan_stats.get("down", {})
        log(f"wanem stopped (rc={rc}): server->hosts fwd {up.get('forwarded')} lost {up.get('dropped_loss')} "
            f"queue {up.get('dropped_queue')}; hosts->server fwd {down.get('forwarded')} lost {down.get('dropped_loss')} "
            f"queue {down.get('dropped_queue')}")

    def wan_meta(self) -> dict:
        return {"preset": self.wan, "emulator": "models/lab/wanem", "namespace": WAN_NS,
                "topology": f"{self.server.ns}:eth0 -- {WAN_NS}:w-srv [wanem] {WAN_NS}:w-br -- {BR_NS}:{self.server.port} "
                            f"(capture) -- {BRIDGE} -- clients and attackers",
                "directions": "wanem 'up' = server -> host, 'down' = host -> server; links 'up'/'down' are the "
                              "host's (host -> server / server -> host)",
                "links": self.wan_links, "wanem_config": self.wan_config, "wanem_stats": self.wan_stats}

    def start_capture(self) -> None:
        pcap = os.path.join(self.out, "capture.pcap")
        self.tcpdump_log = os.path.join(self.run_dir, "tcpdump.log")
        out = open(self.tcpdump_log, "w")
        self.tcpdump = self.procs.spawn(
            ["tcpdump", "-i", self.server.port, "-n", "-s", str(SNAPLEN), "-B", "65536", "-Z", "root", "-w", pcap],
            ns=BR_NS, out=out)
        out.close()
        for _ in range(100):
            time.sleep(0.05)
            with open(self.tcpdump_log) as f:
                if "listening on" in f.read():
                    break
            if self.tcpdump.poll() is not None:
                raise RuntimeError("tcpdump exited: " + open(self.tcpdump_log).read())
        else:
            raise RuntimeError("tcpdump did not start")
        self.capture_start = time.time()
        log(f"tcpdump recording {self.server.port} in {BR_NS} -> {pcap}")

    def stop_capture(self) -> None:
        if self.tcpdump is None:
            return
        if self.tcpdump.poll() is None:
            try:
                os.killpg(self.tcpdump.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                self.tcpdump.wait(timeout=15)
            except subprocess.TimeoutExpired:
                Procs.kill(self.tcpdump, signal.SIGKILL)
                self.tcpdump.wait()
        self.procs.forget(self.tcpdump)
        self.capture_end = time.time()
        txt = open(self.tcpdump_log).read() if self.tcpdump_log and os.path.exists(self.tcpdump_log) else ""
        for key, pat in (("captured", r"(\d+) packets? captured"), ("received_by_filter", r"(\d+) packets? received by filter"),
                         ("dropped_by_kernel", r"(\d+) packets? dropped by kernel")):
            m = re.search(pat, txt)
            if m:
                self.tcpdump_stats[key] = int(m.group(1))
        self.tcpdump = None
        log(f"tcpdump stopped: {self.tcpdump_stats}")

    # ---------------------------------------------------------------- server content and services
    def make_www(self) -> str:
        rng = random.Random(f"ewlab-www-{self.seed}")
        www = os.path.join(self.tmp, "www")
        words = ("edge router sensor flow packet anomaly model lab network bridge namespace traffic "
                 "alert score queue batch shard capture replay window feature").split()

        def page(title, n):
            paras = "\n".join("<p>" + " ".join(rng.choice(words) for _ in range(rng.randint(30, 120))) + "</p>"
                              for _ in range(n))
            return (f"<!doctype html><html><head><title>{title}</title><link rel=stylesheet href=/static/style.css>"
                    f"<script src=/static/app.js></script></head><body><h1>{title}</h1>\n{paras}\n"
                    f"<img src=/img/a.jpg><img src=/img/b.jpg></body></html>\n")

        files = {"index.html": page("lab home", 3), "about.html": page("about", 2)}
        for i in range(1, 13):
            files[f"news/{i}.html"] = page(f"news {i}", rng.randint(2, 40))
        files["static/style.css"] = "".join(f".c{i} {{ margin: {i}px; color: #{rng.randrange(1 << 24):06x}; }}\n"
                                            for i in range(400))
        files["static/app.js"] = "".join(f"function f{i}(x) {{ return x * {rng.randint(1, 999)} + {i}; }}\n"
                                         for i in range(1800))
        files["robots.txt"] = "User-agent: *\nDisallow: /files/\n"
        binaries = {"img/a.jpg": 24_000, "img/b.jpg": 96_000, "img/c.jpg": 310_000, "img/d.png": 4_500,
                    "files/1k.bin": 1_024, "files/10k.bin": 10_240, "files/100k.bin": 102_400,
                    "files/512k.bin": 524_288, "files/1m.bin": 1_048_576, "files/5m.bin": 5_242_880,
                    "files/20m.bin": 20_971_520}
        for rel, content in files.items():
            p = os.path.join(www, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(content)
        for rel, size in binaries.items():
            p = os.path.join(www, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(rng.randbytes(size))
        for dp, dns_, fns in os.walk(www):
            os.chmod(dp, 0o755)
            for fn in fns:
                full = os.path.join(dp, fn)
                os.chmod(full, 0o644)
                self.www_files["/" + os.path.relpath(full, www)] = os.path.getsize(full)
        return www

    def start_services(self) -> None:
        srv = self.server
        run = self.run_dir
        www = self.make_www()
        # ---- nginx
        conf = os.path.join(run, "nginx.conf")
        tmpd = os.path.join(self.tmp, "nginx-tmp")  # workers (nobody) write here: keep it out of DIR
        os.makedirs(tmpd, mode=0o755)
        with open(conf, "w") as f:
            f.write(f"""# edgewatch lab nginx (private config; started with -c/-p/-e, no system files)
daemon off;
master_process on;
worker_processes 2;
user nobody nogroup;
pid {run}/nginx.pid;
error_log {run}/nginx-error.log warn;
events {{ worker_connections 768; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {run}/nginx-access.log;
    client_body_temp_path {tmpd}/body;
    proxy_temp_path {tmpd}/proxy;
    fastcgi_temp_path {tmpd}/fastcgi;
    uwsgi_temp_path {tmpd}/uwsgi;
    scgi_temp_path {tmpd}/scgi;
    sendfile on;
    keepalive_timeout 20;
    keepalive_requests 1000;
    client_header_timeout 30;
    client_body_timeout 30;
    server {{
        listen {srv.ip4}:80;
        listen [{srv.ip6}]:80;
        server_name www.{ZONE} {ZONE};
        root {www};
        location / {{ index index.html; }}
        location = /post {{ client_max_body_size 4m; return 200 "ok\\n"; }}
        location = /api/status {{ default_type application/json; return 200 '{{"ok":true}}\\n'; }}
    }}
}}
""")
        sh(["ip", "netns", "exec", srv.ns, "nginx", "-t", "-q", "-c", conf, "-p", run + "/", "-e", f"{run}/nginx-error.log"])
        self._daemon("nginx", ["nginx", "-c", conf, "-p", run + "/", "-e", f"{run}/nginx-error.log"])

        # ---- sshd: private passwd/shadow/group and /run bind-mounted in a private mount namespace
        home = os.path.join(self.tmp, "home", TEST_USER)
        os.makedirs(home)
        with open(os.path.join(home, "data.bin"), "wb") as f:
            f.write(random.Random(f"ewlab-home-{self.seed}").randbytes(300_000 if self.quick else 2_000_000))
        with open(os.path.join(home, "notes.txt"), "w") as f:
            f.write("edgewatch lab test account\n" * 50)
        for dp, _, fns in os.walk(os.path.join(self.tmp, "home")):
            os.chown(dp, TEST_UID, TEST_UID)
            os.chmod(dp, 0o755)
            for fn in fns:
                os.chown(os.path.join(dp, fn), TEST_UID, TEST_UID)
        etc = os.path.join(self.tmp, "etc")
        os.makedirs(etc)
        salt = "ewlab" + str(self.seed % 100000)
        pwhash = sh(["openssl", "passwd", "-6", "-salt", salt, TEST_PASSWORD]).stdout.strip()
        sshd_line = sh(["getent", "passwd", "sshd"], check=False).stdout.strip() or \
            "sshd:x:103:65534::/run/sshd:/usr/sbin/nologin"
        with open(os.path.join(etc, "passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\n" + sshd_line + "\n"
                    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
                    f"{TEST_USER}:x:{TEST_UID}:{TEST_UID}:edgewatch lab:{home}:/bin/sh\n")
        with open(os.path.join(etc, "shadow"), "w") as f:
            f.write(f"root:*:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n"
                    f"{TEST_USER}:{pwhash}:19000:0:99999:7:::\n")
        os.chmod(os.path.join(etc, "shadow"), 0o640)
        with open(os.path.join(etc, "group"), "w") as f:
            f.write(f"root:x:0:\nnogroup:x:65534:\n{TEST_USER}:x:{TEST_UID}:\n")
        keys = []
        for kt, extra in (("ed25519", []), ("ecdsa", []), ("rsa", ["-b", "2048"])):
            kp = os.path.join(run, f"ssh_host_{kt}_key")
            sh(["ssh-keygen", "-q", "-t", kt, *extra, "-N", "", "-C", f"ewlab-{kt}", "-f", kp])
            keys.append(kp)
        sconf = os.path.join(run, "sshd_config")
        with open(sconf, "w") as f:
            f.write(f"""# edgewatch lab sshd (private config)
Port 22
ListenAddress {srv.ip4}
ListenAddress {srv.ip6}
{''.join(f'HostKey {k}' + chr(10) for k in keys)}PidFile {run}/sshd.pid
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication no
AuthorizedKeysFile none
UsePAM no
PermitRootLogin no
UseDNS no
StrictModes no
MaxStartups 200:30:400
MaxAuthTries 6
MaxSessions 20
LoginGraceTime 20
PrintMotd no
AllowUsers {TEST_USER}
Subsystem sftp internal-sftp
LogLevel INFO
""")
        script = (f"set -e; mount -t tmpfs -o mode=755 ewlab-run /run; mkdir -m 755 /run/sshd; "
                  f"for f in passwd shadow group; do mount --bind {shlex.quote(etc)}/$f /etc/$f; done; "
                  f"/usr/sbin/sshd -t -f {shlex.quote(sconf)}; "
                  f"exec /usr/sbin/sshd -D -e -f {shlex.quote(sconf)}")
        self._daemon("sshd", ["unshare", "--mount", "--propagation", "private", "sh", "-c", script])

        # ---- dnsmasq: authoritative for lab.test with many names
        dconf = os.path.join(run, "dnsmasq.conf")
        rng = random.Random(f"ewlab-dns-{self.seed}")
        recs = [f"host-record=www.{ZONE},{ZONE},{srv.ip4},{srv.ip6}",
                f"host-record=ns1.{ZONE},{srv.ip4},{srv.ip6}",
                f"host-record=mail.{ZONE},{srv.ip4},{srv.ip6}",
                f"host-record=ssh.{ZONE},{srv.ip4},{srv.ip6}",
                f"host-record=api.{ZONE},cdn.{ZONE},static.{ZONE},{srv.ip4},{srv.ip6}",
                f"mx-host={ZONE},mail.{ZONE},10", f"mx-host={ZONE},mx2.{ZONE},20",
                f"mx-host=corp.{ZONE},mail.{ZONE},5",
                f'txt-record={ZONE},"v=spf1 mx -all"',
                f'txt-record={ZONE},"edgewatch-lab-verification={rng.getrandbits(64):016x}"',
                f'txt-record=_dmarc.{ZONE},"v=DMARC1; p=none"',
                f'txt-record=info.{ZONE},"edgewatch lab zone","seed {self.seed}"',
                f"host-record=mx2.{ZONE},10.77.0.11,fd77::11",
                f"srv-host=_sip._udp.{ZONE},www.{ZONE},5060",
                f"cname=portal.{ZONE},www.{ZONE}", f"cname=files.{ZONE},www.{ZONE}"]
        self.dns_names = ["www", "ns1", "mail", "ssh", "api", "cdn", "static", "mx2", "portal", "files", "info"]
        for i in range(1, 201):
            # data records only: nothing answers on .100-.250; nothing ever connects there
            recs.append(f"host-record=host{i:03d}.{ZONE},10.77.0.{50 + i},fd77::1:{i:x}")
            self.dns_names.append(f"host{i:03d}")
            if i % 5 == 0:
                recs.append(f'txt-record=host{i:03d}.{ZONE},"role=sensor-{i}","k={rng.getrandbits(48):012x}"')
        for i in range(1, 31):
            recs.append(f"mx-host=dept{i}.{ZONE},mail.{ZONE},{rng.choice([5, 10, 20])}")
            self.dns_names.append(f"dept{i}")
        with open(dconf, "w") as f:
            f.write(f"""# edgewatch lab dnsmasq (private config; no DHCP, no upstream, no /etc/hosts)
port=53
listen-address={srv.ip4},{srv.ip6}
bind-interfaces
no-resolv
no-hosts
no-poll
user=nobody
group=nogroup
pid-file={run}/dnsmasq.pid
log-facility=-
auth-server=ns1.{ZONE},{srv.ip4},{srv.ip6}
auth-zone={ZONE},{SUBNET4},{SUBNET6}
auth-soa={20240000 + self.seed % 10000},hostmaster.{ZONE},1200,120,604800
local=/{ZONE}/
domain={ZONE}
cache-size=1000
dns-forward-max=1000
""" + "\n".join(recs) + "\n")
        self._daemon("dnsmasq", ["dnsmasq", "-k", "-C", dconf])

        # ---- iperf3: one server per traffic host so concurrent tests never hit "server is busy"
        for i, h in enumerate(self.clients + self.attackers):
            port = 5201 + i
            self.iperf_ports[h.name] = port
            self._daemon(f"iperf3-{port}", ["iperf3", "-s", "-p", str(port), "-B", "::", "--idle-timeout", "30"])
        self.wait_services()

    def _daemon(self, name: str, argv: list[str]) -> None:
        out = open(os.path.join(self.run_dir, f"{name}.out"), "w")
        p = self.procs.spawn(argv, ns=self.server.ns, out=out)
        out.close()
        setattr(self, f"_p_{name.replace('-', '_')}", p)

    def wait_services(self) -> None:
        srv = self.server
        checks = {
            "nginx": ["curl", "-s", "-o", "/dev/null", "-m", "2", "-w", "%{http_code}", f"http://{srv.ip4}/"],
            "dnsmasq": ["dig", f"@{srv.ip4}", "+short", "+time=1", "+tries=1", f"www.{ZONE}", "A"],
            "sshd": ["bash", "-c", f"exec 3<>/dev/tcp/{srv.ip4}/22 && head -c 4 <&3"],
            "iperf3": ["bash", "-c", f"exec 3<>/dev/tcp/{srv.ip4}/5201"],
        }
        probe = self.attackers[0] if self.attackers else self.clients[0]
        for name, argv in checks.items():
            for _ in range(60):
                r = sh(["ip", "netns", "exec", probe.ns, "timeout", "3"] + argv, check=False)
                if r.returncode == 0 and (name != "nginx" or r.stdout.strip() == "200") and \
                        (name != "dnsmasq" or srv.ip4 in r.stdout) and (name != "sshd" or "SSH" in r.stdout):
                    break
                time.sleep(0.25)
            else:
                raise RuntimeError(f"service {name} did not come up; see {self.run_dir}/{name}*.out")
        # the test user can really log in (proves passwd/shadow/privsep setup)
        r = sh(["ip", "netns", "exec", probe.ns, "timeout", "15", "sshpass", "-p", TEST_PASSWORD, "ssh", *self.ssh_opts(),
                f"{TEST_USER}@{srv.ip4}", "echo ewlab-ok"], check=False, timeout=20)
        if "ewlab-ok" not in r.stdout:
            raise RuntimeError(f"ssh login as {TEST_USER} failed: {r.stdout}{r.stderr}")
        log("services up: nginx, sshd, dnsmasq, iperf3")

    @staticmethod
    def ssh_opts() -> list[str]:
        return ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no",
                "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"]

    # ---------------------------------------------------------------- benign traffic
    def benign_profile(self, host: Host) -> dict:
        r = random.Random(f"ewlab-profile-{self.seed}-{host.name}")
        if host.role == "attacker":
            base = {"web": 4, "dns": 3, "ping": 1, "download": 1}
        else:
            base = {"web": 4, "dns": 2.5, "download": 1.2, "ssh": 1.0, "scp": 0.6, "ping": 0.8, "iperf": 0.5}
        weights = {k: v * r.lognormvariate(0, 0.5) for k, v in base.items()}
        kind = r.choice(["lognormal", "pareto"])
        prof = {"weights": weights, "think": kind, "v6share": r.uniform(0.1, 0.45)}
        if kind == "lognormal":
            prof.update(mu=r.uniform(-0.6, 0.9), sigma=r.uniform(0.7, 1.3))
        else:
            prof.update(xm=r.uniform(0.3, 1.4), alpha=r.uniform(1.1, 1.7))
        prof["cap"] = 6.0 if self.quick else 40.0
        return prof

    def think(self, rng: random.Random, prof: dict) -> float:
        if prof["think"] == "lognormal":
            t = rng.lognormvariate(prof["mu"], prof["sigma"])
        else:
            t = prof["xm"] * rng.paretovariate(prof["alpha"])
        return min(prof["cap"], max(0.05, t))

    def target(self, rng: random.Random, prof: dict) -> tuple[str, str, int]:
        """(address, url host part, ip version) of the server for one benign action."""
        if rng.random() < prof["v6share"]:
            return self.server.ip6, f"[{self.server.ip6}]", 6
        return self.server.ip4, self.server.ip4, 4

    def benign_action(self, host: Host, rng: random.Random, prof: dict, kind: str, budget: float) -> list[tuple[list, float]]:
        """Commands (argv, timeout) for one benign action of the given kind."""
        srv = self.server
        addr, urlhost, ipv = self.target(rng, prof)
        fam = "-6" if ipv == 6 else "-4"
        cmds: list[tuple[list, float]] = []
        uas = ["Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0",
               "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
               "curl/7.88.1", "Wget/1.21.3", "okhttp/4.11.0"]
        pages = [p for p in self.www_files if p.endswith((".html", ".css", ".js", ".jpg", ".png", ".txt"))]
        if self.quick:  # keeps the quick capture small
            pages = [p for p in pages if self.www_files[p] < 100_000]
        if kind == "web":
            name = rng.choice(["www", "portal", "api", "static", "cdn"]) + "." + ZONE
            if rng.random() < 0.7:
                cmds.append((["dig", f"@{srv.ip4}" if rng.random() < 0.7 else f"@{srv.ip6}", "+time=2", "+tries=1",
                              name, "AAAA" if ipv == 6 else "A"], 5))
            objs = ["/"] + rng.sample(pages, k=min(len(pages), rng.randint(1, 4 if self.quick else 8)))
            if rng.random() < 0.12:
                objs.append(f"/missing/{rng.getrandbits(32):08x}.html")
            if rng.random() < 0.15:
                objs.append("/api/status")
            urls = []
            for o in objs:  # curl pairs each -o with one URL
                urls += ["-o", "/dev/null", f"http://{name}{o}"]
            base = ["curl", "-s", fam, "-A", rng.choice(uas), "--max-time", str(int(min(30, budget))),
                    "--resolve", f"{name}:80:{addr}"]
            mode = rng.random()
            if mode < 0.55:  # keep-alive: one connection for all objects
                cmds.append((base + urls, min(35, budget)))
            elif mode < 0.8:  # no keep-alive: one connection per object
                cmds.append((base + ["-H", "Connection: close"] + urls, min(35, budget)))
            else:  # separate client processes, like a browser with parallel connections
                for i in range(0, len(urls), 3):
                    cmds.append((base + urls[i:i + 3], min(15, budget)))
            if rng.random() < 0.1:
                cmds.append((base + ["-o", "/dev/null", "-X", "POST", "--data-binary", "x" * rng.randint(10, 3000),
                                      f"http://{name}/post"], 10))
        elif kind == "download":
            big = ["/files/1k.bin", "/files/10k.bin", "/files/100k.bin"]
            if not self.quick:
                big += ["/files/512k.bin", "/img/c.jpg", "/files/1m.bin", "/files/5m.bin", "/files/20m.bin", "/files/1m.bin"]
            obj = rng.choice(big)
            argv = ["curl", "-s", "-o", "/dev/null", fam, "--max-time", str(int(min(60, budget))), f"http://{urlhost}{obj}"]
            if rng.random() < 0.6:
                rates = ["200K", "500K", "1M", "2M", "5M", "20M"] if self.www_files[obj] < 2_000_000 else ["2M", "5M", "20M"]
                argv[1:1] = ["--limit-rate", rng.choice(rates)]
            cmds.append((argv, min(65, budget)))
        elif kind == "dns":
            argv = ["dig", f"@{srv.ip4}" if rng.random() > prof["v6share"] else f"@{srv.ip6}", "+time=2", "+tries=1"]
            if rng.random() < 0.1:
                argv.append("+tcp")
            for _ in range(rng.randint(1, 8)):
                r = rng.random()
                if r < 0.12:  # NXDOMAIN
                    label = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(4, 10)))
                    argv += [f"{label}.{ZONE}", rng.choice(["A", "AAAA"])]
                elif r < 0.2:
                    argv += ["-x", f"10.77.0.{rng.choice([10, 10, 51, 52, 120])}"]
                else:
                    n = rng.choice(self.dns_names)
                    qt = rng.choices(["A", "AAAA", "MX", "TXT", "SOA", "NS"], weights=[5, 3, 1, 1, 0.3, 0.3])[0]
                    if n.startswith("dept"):
                        qt = "MX"
                    argv += [f"{n}.{ZONE}" if n != "info" or qt != "MX" else ZONE, qt]
            cmds.append((argv, 10))
        elif kind == "ssh":
            remote = rng.choice(["uname -a", "ls -la", "df -h", "id; uptime", "ls /usr/share | head -40", "cat notes.txt | wc -l",
                                 f"dd if=/dev/urandom bs=1k count={rng.randint(1, 200)} 2>/dev/null | md5sum",
                                 "ls -la /usr/bin | head -100", "sleep 1; date"])
            cmds.append((["sshpass", "-p", TEST_PASSWORD, "ssh", *self.ssh_opts(), f"{TEST_USER}@{addr}", remote],
                         min(30, budget)))
        elif kind == "scp":
            rh = f"[{addr}]" if ipv == 6 else addr
            if rng.random() < 0.5:
                src = os.path.join(self.tmp, "files", f"up-{rng.choice([1, 2, 3])}.bin")
                cmds.append((["sshpass", "-p", TEST_PASSWORD, "scp", "-q", *self.ssh_opts(), src,
                              f"{TEST_USER}@{rh}:up-{host.name}.bin"], min(40, budget)))
            else:
                dst = os.path.join(self.tmp, "files", f"down-{host.name}.bin")
                cmds.append((["sshpass", "-p", TEST_PASSWORD, "scp", "-q", *self.ssh_opts(),
                              f"{TEST_USER}@{rh}:{rng.choice(['data.bin', 'notes.txt'])}", dst], min(40, budget)))
        elif kind == "ping":
            n = rng.randint(2, 6 if self.quick else 12)
            cmds.append((["ping", "-n", fam, "-c", str(n), "-i", f"{rng.uniform(0.2, 1.0):.2f}", "-s",
                          str(rng.choice([56, 56, 100, 500, 1200])), "-W", "1", addr], n * 1.5 + 3))
        elif kind == "iperf":
            port = str(self.iperf_ports[host.name])
            argv = ["iperf3", "-c", addr, "-p", port, "--connect-timeout", "2000"]
            if self.quick:
                argv += ["-n", rng.choice(["64K", "128K", "256K"]), "-b", "10M"]
            else:
                argv += ["-t", str(rng.randint(1, 4)), "-b", rng.choice(["5M", "10M", "20M", "40M"])]
            if rng.random() < 0.3:
                argv.append("-R")
            if rng.random() < 0.2 and not self.quick:
                argv += ["-P", "2"]
            if rng.random() < 0.15:
                argv += ["-u"] if "-P" not in argv else []
            cmds.append((argv, 12 if self.quick else 15))
        return cmds

    def record_benign(self, host: Host, kind: str, argv_full: str, rc: int, start: float, end: float) -> None:
        with self.benign_lock:
            self.benign_counts.setdefault(host.name, {}).setdefault(kind, 0)
            self.benign_counts[host.name][kind] += 1
            if self.benign_file:
                self.benign_file.write(json.dumps({"host": host.name, "ip": host.ip4, "ip6": host.ip6, "role": host.role,
                                                   "action": kind, "command": argv_full, "rc": rc,
                                                   "start": round(start, 6), "end": round(end, 6)}) + "\n")
                self.benign_file.flush()

    def do_benign(self, host: Host, rng: random.Random, prof: dict, out, deadline: float) -> None:
        """One benign action, bounded so that it ends before `deadline`."""
        budget = deadline - time.time()
        if budget < 2:
            return
        kinds = list(prof["weights"])
        kind = rng.choices(kinds, weights=[prof["weights"][k] for k in kinds])[0]
        if kind in ("iperf", "scp", "download") and budget < 15:
            kind = "dns" if rng.random() < 0.5 else "web"
        for argv, tmo in self.benign_action(host, rng, prof, kind, budget):
            budget = deadline - time.time()
            if budget < 1 or self.stop.is_set():
                return
            tmo = max(1.0, min(tmo, budget - 0.5))
            wrapped = ["timeout", "-k", "1", f"{tmo:.1f}"] + argv
            rc, start, end, full = self.procs.run(wrapped, host.ns, out=out, timeout=tmo + 5)
            self.record_benign(host, kind, full, rc, start, end)
            if len(argv) and rng.random() < 0.5:
                time.sleep(rng.uniform(0.0, 0.3))

    def client_loop(self, host: Host) -> None:
        rng = random.Random(f"ewlab-benign-{self.seed}-{host.name}")
        prof = self.benign_profile(host)
        end = self.t0 + self.duration
        out = open(os.path.join(self.run_dir, f"{host.name}.log"), "a")
        try:
            time.sleep(rng.uniform(0, 3))
            while not self.stop.is_set() and time.time() < end - 2:
                self.do_benign(host, rng, prof, out, end)
                self.stop.wait(min(self.think(rng, prof), max(0.0, end - time.time())))
        except LabStopping:
            pass
        except Exception as e:  # a broken client must not kill the run; it is logged
            log(f"client {host.name} error: {e!r}")
        finally:
            out.close()

    # ---------------------------------------------------------------- attacks
    def plan_attacks(self) -> None:
        rng = self.rng
        q = self.quick
        scans = ["nmap-sS", "nmap-sT", "nmap-sU", "nmap-sV"]
        floods = ["hping3-syn", "hping3-udp", "hping3-icmp", "ab", "dnsflood"]
        cls_of = {**{t: "scan" for t in scans}, **{t: "flood" for t in floods}, "hydra": "bruteforce",
                  "slowhttptest": "slowdos"}
        if q:
            tools = [rng.choice(scans), rng.choice(floods), "hydra", "slowhttptest"]
            if rng.random() < 0.6:
                tools.append(rng.choice(scans + floods))
            dur_lo, dur_hi = 4.0, 9.0
            lead, tail = 6.0, 4.0
        else:
            tools = scans + floods + ["hydra", "slowhttptest"]
            rng.shuffle(tools)
            extra = rng.randint(1, 4)
            tools += rng.choices(scans + floods + ["hydra", "slowhttptest"], k=extra,
                                 weights=[1] * len(scans) + [0.8] * len(floods) + [1, 1])
            dur_lo, dur_hi = 5.0, 25.0
            lead, tail = 12.0, 8.0
        # the first tools (one per class / per tool) are placed first, extras fill what room is left
        n_required = 4 if q else len(scans) + len(floods) + 2
        eps = []
        for i, tool in enumerate(tools):
            dur = round(rng.uniform(dur_lo, dur_hi), 1)
            ipv = 6 if (tool.startswith("nmap") or tool in ("dnsflood", "hydra", "ab")) and rng.random() < 0.25 else 4
            ep = Episode(idx=i, cls=cls_of[tool], tool=tool, attacker=rng.choice(self.attackers), ipv=ipv, dur=dur)
            self.build_attack(ep, rng)
            eps.append(ep)
        # place episodes: no overlap on one attacker (so each flow maps to at most one episode),
        # free overlap between attackers; random order, start times and gaps per seed
        busy: dict[str, list[tuple[float, float]]] = {a.name: [] for a in self.attackers}
        placed = []
        gap = 2.0
        for ep in eps:
            chosen = self._place(ep, busy, lead, tail, gap, rng)
            shrink = 0
            while chosen is None and ep.idx < n_required and shrink < 4 and ep.dur > 2.5:
                # a required episode that does not fit: shorter parameters (still seeded), try again
                shrink += 1
                ep.dur = round(max(2.0, ep.dur * 0.6), 1)
                ep.argv, ep.files = [], {}
                self.build_attack(ep, random.Random(f"ewlab-shrink-{self.seed}-{ep.idx}-{shrink}"))
                chosen = self._place(ep, busy, lead, tail, gap, rng)
            if chosen:
                a, s = chosen
                ep.attacker = a  # commands carry no source address, so nothing to rebuild
                ep.planned = round(s, 2)
                busy[a.name].append((s, s + ep.limit))
                placed.append(ep)
            else:
                log(f"note: no room for episode {ep.tool} ({ep.limit:.0f}s); dropped from the plan")
        placed.sort(key=lambda e: e.planned)
        for i, ep in enumerate(placed):
            if ep.idx != i:  # renumber in time order, with the episode's helper files
                ren = {p: re.sub(r"-\d+\.txt$", f"-{i:02d}.txt", p) for p in ep.files}
                ep.files = {ren[p]: c for p, c in ep.files.items()}
                ep.argv = [ren.get(a, a) for a in ep.argv]
                ep.idx = i
        self.episodes = placed
        present = {e.cls for e in placed}
        if not set(CLASSES) <= present:
            raise RuntimeError(f"attack plan misses classes {set(CLASSES) - present}; use a longer --duration-s")

    def _place(self, ep: Episode, busy: dict, lead: float, tail: float, gap: float, rng: random.Random):
        """A uniformly random feasible (attacker, start offset) for ep, preferring its own attacker;
        None when it fits nowhere. Feasible: inside [lead, duration - tail - limit] and at least
        `gap` s away from that attacker's other episodes."""
        hi = self.duration - tail - ep.limit
        for a in [ep.attacker] + [x for x in self.attackers if x is not ep.attacker]:
            segs = [(lead, hi)] if hi > lead else []
            for b0, b1 in busy[a.name]:
                cut0, cut1 = b0 - ep.limit - gap, b1 + gap
                nxt = []
                for s0, s1 in segs:
                    if cut1 <= s0 or cut0 >= s1:
                        nxt.append((s0, s1))
                        continue
                    if s0 < cut0:
                        nxt.append((s0, cut0))
                    if cut1 < s1:
                        nxt.append((cut1, s1))
                segs = nxt
            total = sum(s1 - s0 for s0, s1 in segs)
            if total <= 0:
                continue
            x = rng.uniform(0, total)
            for s0, s1 in segs:
                if x <= s1 - s0:
                    return a, s0 + x
                x -= s1 - s0
            return a, segs[-1][1]
        return None

    def build_attack(self, ep: Episode, rng: random.Random) -> None:
        """Fill ep.argv / ep.limit / ep.params with seeded random parameters for its tool."""
        q = self.quick
        srv = self.server
        victim = srv.ip6 if ep.ipv == 6 else srv.ip4
        d = ep.dur
        p: dict = {}
        if ep.tool.startswith("nmap"):
            argv = ["nmap", "-n", "-Pn"]
            if ep.ipv == 6:
                argv.append("-6")
            mode = ep.tool.split("-")[1]
            argv.append("-" + mode)
            if mode in ("sS", "sT"):
                tmpl = rng.choices(["T2", "T3", "T4", "T5"], weights=[1, 2, 3, 2])[0]
                if tmpl == "T2":  # 0.4 s between probes
                    nports = max(8, min(80, int(d / 0.4)))
                    ports = sorted(rng.sample(range(1, 1025), nports - 3) + [22, 53, 80])
                    argv += ["-T2", "-p", ",".join(map(str, sorted(set(ports))))]
                else:
                    nports = rng.choice([100, 200, 500, 1000] if q else [200, 500, 1000, 2000, 5000, 10000])
                    rate = max(10, int(nports * 1.1 / d))
                    style = rng.random()
                    if style < 0.4:
                        argv += ["-p", f"1-{nports}"]
                    elif style < 0.7 and nports <= 1000:
                        argv += ["--top-ports", str(nports)]
                    else:
                        lo = rng.randint(1, 60000 - nports)
                        argv += ["-p", f"{lo}-{lo + nports - 1},22,53,80"]
                    argv += [f"-{tmpl}", "--max-rate", str(rate)]
                    if rng.random() < 0.3:
                        argv += ["--max-retries", str(rng.randint(0, 2))]
                    p["rate"] = rate
                p.update(template=tmpl, ports=nports)
                limit = d * 1.25 + 3
            elif mode == "sU":
                nports = max(6, min(40 if q else 200, int(d * rng.uniform(2, 8))))
                base = [53, 67, 68, 69, 123, 137, 161, 162, 500, 514, 520, 1900, 5353]
                lo = rng.randint(1, 1000)
                ports = sorted(set(rng.sample(base, k=min(len(base), nports // 3)) +
                                   list(range(lo, lo + nports - nports // 3))))
                tmpl = rng.choice(["T3", "T4", "T5"])
                rate = max(2, int(len(ports) * 1.1 / d))
                argv += ["-p", ",".join(map(str, ports)), f"-{tmpl}", "--max-retries", str(rng.randint(0, 2)),
                         "--max-rate", str(rate)]
                p.update(template=tmpl, ports=len(ports), rate=rate)
                limit = d + 3
            else:  # sV
                tmpl = rng.choice(["T3", "T4", "T5"])
                ports = [22, 53, 80, self.iperf_ports.get("c1", 5201)] + rng.sample(range(1, 1024), rng.randint(0, 20))
                argv += ["-p", ",".join(map(str, sorted(set(ports)))), f"-{tmpl}", "--version-intensity",
                         str(rng.choice([2, 5, 7, 9]))]
                p.update(template=tmpl, ports=len(set(ports)))
                limit = max(d, 10 if q else 15) + 3
            argv.append(victim)
        elif ep.tool.startswith("hping3"):
            kind = ep.tool.split("-")[1]
            if q:
                interval = rng.choice([500, 1000, 2000, 4000])
                count = max(200, min(1500, int(d * 1e6 / interval)))
            else:
                interval = rng.choice([100, 200, 300, 500, 1000, 2000])
                count = max(1000, min(60000, int(d * 1e6 / interval)))
            argv = ["hping3", "-q", "-c", str(count)]
            if not q and rng.random() < 0.15:
                count = min(count, 20000)
                argv = ["hping3", "-q", "-c", str(count), "--faster"]
                interval = 1
            else:
                argv += ["-i", f"u{interval}"]
            if kind == "syn":
                dport = rng.choice(["80", "80", "22", "53", "++1"])
                argv += ["-S", "-p", dport, "-w", str(rng.choice([64, 512, 1024, 5840, 65535]))]
                if rng.random() < 0.3:
                    argv += ["-d", str(rng.choice([0, 16, 120]))]
                p["dport"] = dport
            elif kind == "udp":
                dport = rng.choice(["53", "123", "161", str(rng.randint(1024, 65000)), "++1"])
                size = rng.choice([0, 32, 64, 512, 1024, 1400])
                argv += ["--udp", "-p", dport, "-d", str(size)]
                p.update(dport=dport, size=size)
            else:
                size = rng.choice([0, 56, 120, 512, 1000, 1400])
                argv += ["--icmp", "-d", str(size)]
                p["size"] = size
            argv.append(victim)
            p.update(count=count, interval_us=interval)
            limit = count * max(interval, 20) / 1e6 * 1.3 + 3
        elif ep.tool == "ab":
            path = rng.choice(["/", "/index.html", "/about.html", "/news/3.html", "/static/app.js", "/img/a.jpg",
                               "/api/status"])
            conc = rng.choice([5, 10, 20] if q else [10, 20, 50, 100, 200])
            keep = rng.random() < (0.6 if q else 0.4)
            urlhost = f"[{victim}]" if ep.ipv == 6 else victim
            pulsed = q or rng.random() < 0.5
            if pulsed:  # a burst every `pause` s for the whole episode (ab itself cannot pace)
                per = rng.randint(30, 80) if q else rng.randint(200, 3000)
                pause = round(rng.uniform(0.3, 1.5), 1)
                bursts = max(2, int(d / (pause + 0.1)))
                if q:
                    bursts = min(bursts, 6)
                nreq = per * bursts
                abcmd = ["ab", "-q", "-r", "-s", "5", "-n", str(per), "-c", str(min(conc, per))] + (["-k"] if keep else [])
            else:  # one burst as fast as the server answers, bounded by count and by time
                per = nreq = rng.randint(2000, 25000)
                abcmd = ["ab", "-q", "-r", "-s", "5", "-t", str(int(math.ceil(d))), "-n", str(nreq), "-c", str(conc)]
                abcmd += ["-k"] if keep else []
            if rng.random() < 0.3:
                abcmd += ["-H", "User-Agent: Mozilla/5.0"]
            abcmd.append(f"http://{urlhost}{path}")
            if pulsed:
                argv = ["sh", "-c", f"for i in $(seq {bursts}); do {shlex.join(abcmd)}; sleep {pause}; done"]
                p.update(bursts=bursts, pause_s=pause)
            else:
                argv = abcmd
            p.update(requests=nreq, per_burst=per, concurrency=conc, keepalive=keep, path=path)
            limit = d + 5
        elif ep.tool == "dnsflood":
            mode = rng.choice(["random", "random", "names"])
            qps = rng.choice([100, 200, 300] if q else [300, 800, 1500, 3000, 5000])
            count = int(qps * d) if not q else min(1500, int(qps * d))
            qfile = os.path.join(self.run_dir, "attacks", f"dnsq-{ep.idx:02d}.txt")
            if self.have["dnsperf"] and rng.random() < 0.6:
                lines = []
                for _ in range(min(count, 20000)):
                    if mode == "random":
                        lab = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randint(8, 20)))
                        lines.append(f"{lab}.{ZONE} {rng.choice(['A', 'A', 'AAAA', 'TXT'])}")
                    else:
                        lines.append(f"{rng.choice(self.dns_names_static())}.{ZONE} {rng.choice(['A', 'AAAA', 'MX', 'TXT'])}")
                ep.files[qfile] = "\n".join(lines) + "\n"
                argv = ["dnsperf", "-s", victim, "-d", qfile, "-l", str(int(math.ceil(d))), "-Q", str(qps),
                        "-c", str(rng.choice([1, 2, 4, 8])), "-n", "1", "-t", "2"]
                p["impl"] = "dnsperf"
                tool = "dnsperf"
            else:
                argv = ["python3", os.path.join(HERE, "dnsflood.py"), "--server", victim, "--mode", mode,
                        "--qps", str(qps), "--count", str(count), "--duration-s", f"{d:.1f}",
                        "--sockets", str(rng.choice([1, 4, 16])), "--seed", str(rng.getrandbits(31))]
                p["impl"] = "dnsflood.py"
                tool = "dnsflood.py"
            p.update(mode=mode, qps=qps, count=count, tool_impl=tool)
            limit = d + 3
        elif ep.tool == "hydra":
            nwords = rng.randint(25, 60) if q else rng.randint(80, 500)
            words = list(COMMON_PASSWORDS)
            while len(words) < nwords:
                words.append(rng.choice(COMMON_PASSWORDS) + str(rng.randint(0, 9999)))
            words = [w for w in words[:nwords] if w != TEST_PASSWORD]
            rng.shuffle(words)
            wl = os.path.join(self.run_dir, "attacks", f"words-{ep.idx:02d}.txt")
            ep.files[wl] = "\n".join(words) + "\n"
            argv = ["hydra", "-I", "-t", "4", "-w", "5"]
            # A third of the guessers are slow, one login at a time every few seconds (a guesser
            # that keeps under rate limits). Their own generator keeps the plan's draws as they were.
            pace = random.Random(f"ewlab-hydra-pace-{self.seed}-{ep.idx}")
            wait = 0
            if pace.random() < 1 / 3:
                wait = pace.choice([2, 3, 4, 6])
                argv = ["hydra", "-I", "-c", str(wait), "-w", "5"]
                p.update(login_every_s=wait)
            if rng.random() < 0.35:
                ul = os.path.join(self.run_dir, "attacks", f"users-{ep.idx:02d}.txt")
                ep.files[ul] = "\n".join(rng.sample(["root", "admin", TEST_USER, "user", "pi", "ubnt", "test", "oracle"],
                                                    k=rng.randint(2, 4))) + "\n"
                argv += ["-L", ul]
            else:
                argv += ["-l", rng.choice([TEST_USER, TEST_USER, "root", "admin"])]
            argv += ["-P", wl]
            if ep.ipv == 6:
                argv += ["-6"]
            argv += [f"ssh://[{victim}]" if ep.ipv == 6 else f"ssh://{victim}"]
            p.update(words=len(words))
            # A slow guesser gets the time for six passwords (four in a quick run) after hydra's
            # first connection, which only looks at the server: three passwords in nine seconds are
            # a user who mistyped, not a brute force anyone would want told of.
            limit = max(d, 8.0, ((4 if q else 6) * wait + 3) if wait else 0.0)
        elif ep.tool == "slowhttptest":
            mode = rng.choice(["H", "H", "B", "X", "R"])
            conns = rng.randint(30, 90) if q else rng.randint(100, 900)
            rate = rng.choice([10, 20, 50] if q else [20, 50, 100, 200])
            length = int(math.ceil(d))
            url = f"http://{victim}/"
            argv = ["slowhttptest", f"-{mode}", "-c", str(conns), "-r", str(rate), "-l", str(length), "-p", "3"]
            if mode in ("H", "B"):
                argv += ["-i", str(rng.randint(2, 5) if q else rng.randint(3, 15)), "-x", str(rng.choice([10, 24, 32]))]
                if mode == "B":
                    argv += ["-s", str(rng.choice([4096, 8192, 65536]))]
                    url = f"http://{victim}/post"
            elif mode == "X":
                argv += ["-w", "512", "-y", "1024", "-n", str(rng.randint(1, 5)), "-z", "32", "-k", str(rng.randint(1, 3))]
                url = f"http://{victim}/files/{'100k' if q else '1m'}.bin"
            else:  # R: range header attack
                argv += ["-a", "10", "-b", "3000"]
            argv += ["-u", url]
            p.update(mode=mode, connections=conns, rate=rate)
            limit = length + 5
        else:
            raise ValueError(ep.tool)
        ep.limit = round(limit, 1)
        ep.params = p
        ep.argv = ["timeout", "-k", "2", f"{ep.limit:.1f}"] + argv
        self.assert_lab_target(ep.argv)

    def dns_names_static(self) -> list[str]:
        return ["www", "ns1", "mail", "api", "cdn", "static", "mx2", "portal", "files", "info"] + \
            [f"host{i:03d}" for i in range(1, 201)]

    def assert_lab_target(self, argv: list[str]) -> None:
        """Safety net: an attack command may name no address but the lab server's."""
        allowed = {self.server.ip4, self.server.ip6}
        for tok in argv:
            for m in re.finditer(r"(?<![\w.:])(\d{1,3}(?:\.\d{1,3}){3}|[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7})(?![\w.:])", tok):
                s = m.group(1)
                try:
                    ipaddress.ip_address(s)
                except ValueError:
                    continue
                if s not in allowed:
                    raise RuntimeError(f"refusing attack command with non-lab target {s}: {shlex.join(argv)}")
        if not any(a in tok for tok in argv for a in allowed):
            raise RuntimeError(f"attack command does not name the lab server: {shlex.join(argv)}")

    def run_episode(self, ep: Episode, out) -> dict:
        for path, content in ep.files.items():
            with open(path, "w") as f:
                f.write(content)
        logp = os.path.join(self.run_dir, "attacks", f"{ep.idx:02d}-{ep.tool}.log")
        with open(logp, "w") as lf:
            lf.write(f"# {shlex.join(ep.argv)}\n")
            lf.flush()
            cwd = os.path.join(self.tmp, "cwd-" + ep.attacker.name)
            os.makedirs(cwd, exist_ok=True)  # hydra.restore and friends land here, not in the repo
            rc, start, end, full = self.procs.run(ep.argv, ep.attacker.ns, out=lf, timeout=ep.limit + 10, cwd=cwd)
        tool = ep.params.get("tool_impl", ep.tool.split("-")[0])
        rec = {
            "id": ep.idx,
            "attacker": ep.attacker.ip6 if ep.ipv == 6 else ep.attacker.ip4,
            "victim": self.server.ip6 if ep.ipv == 6 else self.server.ip4,
            "tool": tool,
            "class": ep.cls,
            "command": full,
            "start": round(start, 6),
            "end": round(end, 6),
            "attack": ep.tool,
            "attacker_host": ep.attacker.name,
            "attacker_ips": [ep.attacker.ip4, ep.attacker.ip6],
            "ip_version": ep.ipv,
            "params": ep.params,
            "planned_offset_s": ep.planned,
            "timeout_s": ep.limit,
            "exit_code": rc,
            "timed_out": rc in (124, 137),
            "log": os.path.relpath(logp, self.out),
        }
        if self.wan:
            rec["wan_path"] = self.wan_path_of(ep.attacker)
        log(f"attack {ep.idx:02d} {ep.cls:10s} {ep.tool:12s} from {ep.attacker.name} rc={rc} "
            f"{end - start:5.1f}s  {' '.join(ep.argv[4:])[:110]}")
        return rec

    def wan_path_of(self, host: Host) -> dict:
        """The attacker's WAN path (host's view: up = towards the server), for attacks.json."""
        for p in self.wan_links.get("paths", []):
            if p["name"] == host.name:
                return {k: p[k] for k in ("preset", "rtt_ms", "up", "down")}
        return {}

    def attacker_loop(self, host: Host) -> None:
        mine = [e for e in self.episodes if e.attacker is host]
        rng = random.Random(f"ewlab-benign-{self.seed}-{host.name}")
        prof = self.benign_profile(host)
        out = open(os.path.join(self.run_dir, f"{host.name}.log"), "a")
        end = self.t0 + self.duration
        try:
            for ep in mine + [None]:
                start_at = self.t0 + ep.planned if ep else end
                # ordinary traffic between episodes, always finished >= 2 s before the next episode
                while not self.stop.is_set() and time.time() < start_at - 0.05:
                    gap = start_at - time.time()
                    if gap > 6 and rng.random() < 0.6:
                        self.do_benign(host, rng, prof, out, start_at - 2)
                        self.stop.wait(min(self.think(rng, prof), max(0.0, start_at - time.time() - 2)))
                    else:
                        self.stop.wait(min(gap, 0.5 if gap < 6 else rng.uniform(0.5, 3)))
                if self.stop.is_set() or ep is None:
                    break
                rec = self.run_episode(ep, out)
                with self.rec_lock:
                    self.records.append(rec)
                    self.write_attacks()
                # quiet time after an episode: its last replies/FINs never mix with ordinary requests
                self.stop.wait(rng.uniform(2.0, 5.0))
        except LabStopping:
            pass
        except Exception as e:
            log(f"attacker {host.name} error: {e!r}")
        finally:
            out.close()

    def write_attacks(self) -> None:
        recs = sorted(self.records, key=lambda r: r["start"])
        tmp = os.path.join(self.out, "attacks.json.tmp")
        with open(tmp, "w") as f:
            json.dump(recs, f, indent=1)
            f.write("\n")
        os.replace(tmp, os.path.join(self.out, "attacks.json"))

    # ---------------------------------------------------------------- metadata
    def tool_versions(self) -> dict:
        vers = {}
        r = sh(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *PACKAGES], check=False)
        for line in (r.stdout or "").splitlines():
            parts = line.split()
            if len(parts) == 2:
                vers[parts[0]] = parts[1]
        for name, argv in (("nmap", ["nmap", "--version"]), ("nginx", ["nginx", "-v"]), ("ssh", ["ssh", "-V"]),
                           ("tcpdump", ["tcpdump", "--version"]), ("iperf3", ["iperf3", "--version"]),
                           ("dnsmasq", ["dnsmasq", "--version"]), ("curl", ["curl", "--version"])):
            if shutil.which(argv[0]):
                rr = sh(argv, check=False)
                txt = (rr.stdout or "") + (rr.stderr or "")
                vers[f"{name} (banner)"] = txt.strip().splitlines()[0] if txt.strip() else ""
        vers["python"] = platform.python_version()
        vers["kernel"] = platform.release()
        return vers

    def write_meta(self, status: str) -> None:
        per_class = {c: sum(1 for r in self.records if r["class"] == c) for c in CLASSES}
        overlaps = 0
        rs = sorted(self.records, key=lambda r: r["start"])
        for i, a in enumerate(rs):
            for b in rs[i + 1:]:
                if b["start"] < a["end"]:
                    overlaps += 1
        meta = {
            "lab_version": LAB_VERSION,
            "status": status,
            "seed": self.seed,
            "mode": "quick" if self.quick else "full",
            "duration_s": self.duration,
            "t0": self.t0 or None,
            "t0_iso": datetime.datetime.fromtimestamp(self.t0, datetime.timezone.utc).isoformat() if self.t0 else None,
            "capture": {"file": "capture.pcap", "interface": f"{BR_NS}:{self.server.port}", "snaplen": SNAPLEN,
                        "linktype": "EN10MB", "clock": "CLOCK_REALTIME (kernel packet timestamps; same clock as time.time())",
                        "start": self.capture_start, "end": self.capture_end, **self.tcpdump_stats},
            "subnets": [str(SUBNET4), str(SUBNET6)],
            "zone": ZONE,
            "hosts": [{"name": h.name, "role": h.role, "netns": h.ns, "ipv4": h.ip4, "ipv6": h.ip6, "mac": h.mac,
                       **({"iperf3_port": self.iperf_ports[h.name]} if h.name in self.iperf_ports else {})}
                      for h in self.hosts],
            "server": {"ip4": self.server.ip4, "ip6": self.server.ip6,
                       "services": {"http": 80, "ssh": 22, "dns": 53, "iperf3": sorted(self.iperf_ports.values())},
                       "ssh_user": TEST_USER, "ssh_password": TEST_PASSWORD,
                       "www_files": self.www_files},
            "attacks": {"episodes": len(self.records), "planned": len(self.episodes), "per_class": per_class,
                        "overlapping_pairs": overlaps},
            "benign_actions": self.benign_counts,
            "tools": self.meta.get("tools", {}),
            "optional_tools": self.have,
            "command": shlex.join([sys.executable] + sys.argv),
        }
        if self.wan:
            meta["wan"] = self.wan_meta()
        with open(os.path.join(self.out, "lab.json"), "w") as f:
            json.dump(meta, f, indent=1)
            f.write("\n")

    # ---------------------------------------------------------------- main
    def run(self) -> None:
        t_begin = time.time()
        self.prepare_dirs()
        self.meta["tools"] = self.tool_versions()
        os.makedirs(os.path.join(self.tmp, "files"))
        frng = random.Random(f"ewlab-files-{self.seed}")
        for i, size in ((1, 20_000), (2, 150_000), (3, 400_000 if self.quick else 1_500_000)):
            with open(os.path.join(self.tmp, "files", f"up-{i}.bin"), "wb") as f:
                f.write(frng.randbytes(size))
        self.setup_network()
        if self.wan:
            self.start_wan()
        self.start_capture()
        self.start_services()
        self.plan_attacks()
        log(f"plan: {len(self.episodes)} attack episodes: " +
            ", ".join(f"{e.planned:.0f}s {e.tool}@{e.attacker.name}" for e in self.episodes))
        self.benign_file = open(os.path.join(self.out, "benign.jsonl"), "w")
        self.t0 = time.time()
        log(f"traffic starts (setup took {self.t0 - t_begin:.1f}s); run lasts {self.duration:.0f}s")
        for h in self.clients:
            t = threading.Thread(target=self.client_loop, args=(h,), name=h.name, daemon=True)
            t.start()
            self.threads.append(t)
        for h in self.attackers:
            t = threading.Thread(target=self.attacker_loop, args=(h,), name=h.name, daemon=True)
            t.start()
            self.threads.append(t)
        end = self.t0 + self.duration
        while time.time() < end:
            time.sleep(0.2)
        # stragglers: benign actions are bounded by the deadline; a late attack by its timeout
        hard = time.time() + 60
        for t in self.threads:
            while t.is_alive() and time.time() < hard:
                t.join(timeout=0.2)
        self.stop.set()
        time.sleep(1.0)  # last replies and FINs reach the capture
        if self.wan:
            time.sleep(self.wan_drain_s())  # and those still held in wanem
        self.stop_capture()
        if self.wan:
            self.stop_wan()
        with self.rec_lock:
            self.write_attacks()
        self.write_meta("complete")
        log(f"done in {time.time() - t_begin:.1f}s: {len(self.records)} episodes -> {self.out}")

    def cleanup(self) -> None:
        if self.cleaned:
            return
        self.cleaned = True
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            self.stop.set()
            if self.procs:
                if self.tcpdump is not None:
                    try:
                        self.stop_capture()
                    except Exception as e:
                        log(f"stopping tcpdump: {e!r}")
                if self.wanem is not None:
                    try:
                        self.stop_wan()
                    except Exception as e:
                        log(f"stopping wanem: {e!r}")
                self.procs.stop_all()
            for t in self.threads:
                t.join(timeout=2)
            if self.benign_file:
                try:
                    self.benign_file.close()
                except Exception:
                    pass
            names = sorted(set(self.created_ns) | set(lab_namespaces()))
            if names:
                delete_namespaces(names)
            if self.tmp and os.path.isdir(self.tmp):
                shutil.rmtree(self.tmp, ignore_errors=True)
            if self.records:
                self.write_attacks()
            left = lab_namespaces()
            if left:
                log(f"WARNING: namespaces left behind: {left}")
            else:
                log("cleanup done: lab processes ended, namespaces and veths deleted, temp files removed")
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def check_lock() -> None:
    if os.path.exists(PIDFILE):
        try:
            pid = int(open(PIDFILE).read().strip())
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            if pid != os.getpid() and "lab.py" in cmd:
                raise SystemExit(f"another lab run is active (pid {pid}); stop it first")
        except (ValueError, FileNotFoundError, ProcessLookupError):
            pass
    with open(PIDFILE, "w") as f:
        f.write(str(os.getpid()))


def main() -> int:
    ap = argparse.ArgumentParser(description="edgewatch traffic lab: labeled captures from a namespace network",
                                 epilog="Run as root. See models/lab/README.md.")
    ap.add_argument("--seed", type=int, help="seeds every random choice (plan, parameters, benign mix); required")
    ap.add_argument("--duration-s", type=float, default=None, help="traffic duration (default 240, --quick 60)")
    ap.add_argument("--out", help="output directory (created; previous lab files in it are replaced); required")
    ap.add_argument("--quick", action="store_true", help="~60 s, few short low-count attacks, one per class at least")
    ap.add_argument("--clients", type=int, default=4, help="benign client namespaces (default 4)")
    ap.add_argument("--attackers", type=int, default=2, choices=[1, 2, 3], help="attacker namespaces (default 2)")
    ap.add_argument("--wan", metavar="PRESET", default=None,
                    help="put models/lab/wanem between the server and the bridge with seeded Internet-like paths per "
                         "client/attacker address: fiber, dsl, lte, satellite, mixed or custom:rtt=LO-HI,loss=P,... "
                         "(see links.py; default: no emulator, zero-latency links)")
    ap.add_argument("--cleanup-only", action="store_true", help="delete leftovers of a crashed run and exit")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("lab.py must run as root (network namespaces, raw sockets, tcpdump)", file=sys.stderr)
        return 2
    if args.cleanup_only:
        delete_namespaces(lab_namespaces())
        for d in os.listdir(tempfile.gettempdir()):
            if d.startswith("ewlab-tmp-"):
                shutil.rmtree(os.path.join(tempfile.gettempdir(), d), ignore_errors=True)
        log("leftovers removed")
        return 0
    if args.seed is None or args.out is None:
        ap.error("--seed and --out are required")
    if args.duration_s is None:
        args.duration_s = 60.0 if args.quick else 240.0
    if args.duration_s < 30:
        ap.error("--duration-s must be at least 30")
    if not 1 <= args.clients <= 20:
        ap.error("--clients must be 1..20")
    if args.wan is not None:
        sys.path.insert(0, HERE)
        import links
        try:
            links.check_name(args.wan)
        except ValueError as e:
            ap.error(str(e))
        if args.wan == "none":
            args.wan = None
        elif not os.access(WANEM_BIN, os.X_OK):
            print(f"--wan needs {WANEM_BIN}: cargo build --release --manifest-path {os.path.join(HERE, 'wanem', 'Cargo.toml')}",
                  file=sys.stderr)
            return 2
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        print(f"missing tools: {' '.join(missing)} (see models/lab/README.md for the apt-get line)", file=sys.stderr)
        return 2
    check_lock()

    def on_signal(signum, frame):
        raise LabSignal(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    lab = Lab(args)
    rc = 0
    try:
        lab.run()
    except (KeyboardInterrupt, LabSignal) as e:
        log(f"interrupted ({e!r}); cleaning up")
        rc = 130
    except Exception as e:
        log(f"ERROR: {e}")
        rc = 1
    finally:
        try:
            lab.cleanup()
        finally:
            if rc and os.path.isdir(lab.out):
                try:
                    lab.write_meta("interrupted" if rc == 130 else "failed")
                except Exception:
                    pass
            try:
                if open(PIDFILE).read().strip() == str(os.getpid()):
                    os.remove(PIDFILE)
            except OSError:
                pass
    return rc


if __name__ == "__main__":
    sys.exit(main())
