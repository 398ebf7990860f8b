#!/usr/bin/env python3
"""Deterministic generator of a realistic benchmark capture for edgewatch.

Writes a classic little-endian pcap (microsecond timestamps, LINKTYPE_ETHERNET)
that looks like the LAN-side trunk port of a small-office gateway:

  * TCP (~70 % of packets): 3-way handshakes with real options, request/response
    rounds with slow-start bursts and delayed ACKs, FIN/ACK teardown both ways,
    RST endings, outbound half-open SYN-only attempts with retransmissions,
    SYN -> RST/ACK rejections and inbound single-SYN scan background noise.
  * UDP: DNS request/response pairs (real DNS messages, A+AAAA pairs on one
    socket, NXDOMAIN, unanswered queries), NTP, QUIC-like streams on 443 and
    RTP-like voice calls (50 packets/s each way).
  * ICMP / ICMPv6 echo request/reply sessions (some unanswered).
  * ~20 % IPv6, ~15 % of flows 802.1Q-tagged, heavy-tailed flow sizes,
    thousands of flows open at once, ~40k flows per 1M packets.

Payloads are opaque except where a header is cheap to get right: DNS, NTP, ICMP echo
and RTP headers are real, TLS ports carry one TLS application-data record per
segment, ports 80/8080 carry HTTP/1.1 requests and response headers, SSH starts with
version banners, QUIC uses v1 Initial/Handshake long headers and then short headers.

Frames are cut at the snap length (default 128): incl_len = min(orig_len, snaplen)
and orig_len is the real on-wire size (frames shorter than 60 bytes are padded to
60 as on a real Ethernet).  IPv4 header checksums and TCP/UDP/ICMP/ICMPv6
checksums are all valid: they are computed over the full original packet, whose
payload beyond the snap length is well defined (a slice of a seeded byte pool),
so a capture written with --snaplen 65535 verifies in Wireshark.

Addresses are synthetic: LAN hosts in 10.0.0.0/8 and 2001:db8:0::/48, remote
servers in the RFC 2544 benchmarking range 198.18.0.0/15 and 2001:db8::/32,
locally administered MAC addresses, DNS names under .example.

Only the Python standard library is used.  Output is a pure function of the
arguments (same seed and options -> byte-identical file), independent of
wall-clock time and PYTHONHASHSEED.

Usage: python3 bench/gen_capture.py --packets 1000000 --seed 1 -o /tmp/bench-1m.pcap
"""

import argparse
import heapq
import math
import os
import random
import struct
import sys
import time
from bisect import bisect
from itertools import accumulate
from operator import itemgetter

EPOCH = 1709294400          # 2024-03-01T12:00:00Z, first packet time (seconds)
ARRIVALS_PER_S = 410.0      # session (flow-group) arrival rate, tuned for ~12.5k pkt/s

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
C, S = 0, 1                 # direction: initiator -> responder, responder -> initiator

_pack = struct.pack
_from = int.from_bytes
_first = itemgetter(0)

# --------------------------------------------------------------------------------------
# checksums and payload pool
# --------------------------------------------------------------------------------------
# The Internet checksum of a byte string is its value, read as a big-endian number,
# modulo 0xFFFF (because 2**16 == 1 mod 0xFFFF), so sums of pieces that start at even
# offsets can simply be added.


def fold(s):
    """Checksum field value from an (unreduced) sum of 16-bit words."""
    r = s % 0xFFFF
    return 0xFFFF - r if r else 0


def bsum(b):
    """Word sum of a byte string that starts at an even offset (odd tail zero-padded)."""
    if len(b) & 1:
        return _from(b, 'big') << 8
    return _from(b, 'big')


POOL_SPAN = 1 << 16         # payload bytes come from POOL[a:a+n], a even, a < POOL_SPAN


class Pool:
    def __init__(self, rng):
        self.data = rng.randbytes(POOL_SPAN + 4096)
        d = self.data
        words = [(d[i] << 8) | d[i + 1] for i in range(0, len(d) - 1, 2)]
        self.ps = [0] + list(accumulate(words))   # prefix sums of 16-bit words


# --------------------------------------------------------------------------------------
# flows
# --------------------------------------------------------------------------------------
class Flow:
    __slots__ = ('uid', 'kind', 'proto', 'v6', 'vlan', 'ev', 'i', 'render', 'eth',
                 'ipc', 'ph', 'ip_a', 'ip_b', 'ttl', 'tos', 'ff', 'ipid', 'fl', 'sp',
                 'dp', 'isn', 'tsb', 'win', 'synwin', 'tsopt', 't0', 'rtt', 'poff', 'synopt')


def mac(*b):
    return bytes(b)


GW_MAC = mac(0x02, 0xee, 0x00, 0x00, 0x00, 0x01)
VLANS = (10, 20, 30, 100)


class World:
    """Hosts, servers, names: everything that is fixed for a capture."""

    def __init__(self, rng):
        self.rng = rng
        self.pool = Pool(rng)
        # LAN hosts: (mac, ip4, ip6, vid, os)   os: 0 linux, 1 windows, 2 mac, 3 iot
        self.hosts_untagged = []
        self.hosts_tagged = []
        for idx in range(420):
            self.hosts_untagged.append(self._host(rng, 0, idx))
        for vid in VLANS:
            for idx in range(60 if vid != 100 else 30):
                self.hosts_tagged.append(self._host(rng, vid, idx))
        self.cum_untagged = list(accumulate(1.0 / (k + 1) ** 0.8 for k in range(len(self.hosts_untagged))))
        self.cum_tagged = list(accumulate(1.0 / (k + 1) ** 0.8 for k in range(len(self.hosts_tagged))))
        # remote servers, Zipf popularity
        n = 20000
        self.srv4 = []
        self.srv6 = []
        self.srv_ttl = []
        self.srv_rtt = []
        for i in range(n):
            a = (i * 6151 + 1031) % 131072
            self.srv4.append(bytes((198, 18 + (a >> 16), (a >> 8) & 255, a & 255)))
            self.srv6.append(b'\x20\x01\x0d\xb8' + _pack('!HH', 0x1000 + (i >> 8), (i & 255) << 4)
                             + b'\x00' * 6 + _pack('!H', 1 + (i % 7)))
            r = rng.random()
            init = 64 if r < 0.75 else (128 if r < 0.93 else 255)
            self.srv_ttl.append(init - rng.randint(7, 24))
            self.srv_rtt.append(int(min(400000, max(1500, 22000 * rng.lognormvariate(0, 0.8)))))
        self.cum_srv = list(accumulate(1.0 / (k + 1) for k in range(n)))
        # DNS names under .example, Zipf popularity
        syl = ['ka', 'lo', 'mi', 'ne', 'ro', 'ta', 'vi', 'zu', 'be', 'do', 'fa', 'gu', 'hi', 'jo',
               'pe', 'sa', 'ti', 'no', 'ra', 'ku', 'le', 'mo', 'ni', 'xo', 'qu', 'sen', 'tor', 'lin']
        sub = ['www', 'api', 'cdn', 'img', 'static', 'login', 'update', 'push', 'ws', 'assets',
               'video', 'm', 'app', 'mail', 'time', 'telemetry', 'edge', 'auth', 'stream', 'dl']
        self.names = []
        for _ in range(4000):
            sld = ''.join(rng.choice(syl) for _ in range(rng.randint(2, 5)))
            labels = [rng.choice(sub), sld, 'example']
            if rng.random() < 0.25:
                labels.insert(0, rng.choice(sub) + str(rng.randint(1, 40)))
            self.names.append(b''.join(bytes((len(x),)) + x.encode() for x in labels) + b'\x00')
        self.cum_names = list(accumulate(1.0 / (k + 1) ** 0.9 for k in range(len(self.names))))

    @staticmethod
    def _host(rng, vid, idx):
        net = vid if vid else 0
        hi, lo = divmod(idx + 10, 250)
        ip4 = bytes((10, net, hi, lo + 2))
        ip6 = b'\x20\x01\x0d\xb8\x00\x00' + _pack('!H', net) + rng.randbytes(8)
        os_ = rng.choices((0, 1, 2, 3), (0.35, 0.35, 0.18, 0.12))[0]
        m = mac(0x02, 0xee, net, hi + 1, lo + 2, rng.randrange(256))
        return (m, ip4, ip6, vid, os_)

    def zipf(self, cum):
        return bisect(cum, self.rng.random() * cum[-1])

    def host(self, tagged):
        if tagged:
            return self.hosts_tagged[self.zipf(self.cum_tagged)]
        return self.hosts_untagged[self.zipf(self.cum_untagged)]


def eph_port(rng, os_):
    if os_ == 0:
        return rng.randint(32768, 60999)
    return rng.randint(49152, 65535)


def lognorm(rng, median, sigma, lo, hi):
    v = median * rng.lognormvariate(0.0, sigma)
    return int(lo if v < lo else (hi if v > hi else v))


# --------------------------------------------------------------------------------------
# flow setup: addresses, L2/L3 constants
# --------------------------------------------------------------------------------------
def setup(f, host, remote_ip, remote_ttl, proto, v6, local_is_c, df_local, tos=0):
    """Fill per-direction constants.  host is the LAN side; remote_ip its peer."""
    rng = WORLD.rng
    lmac, ip4, ip6, vid, os_ = host
    f.proto = proto
    f.v6 = v6
    f.vlan = vid
    lip = ip6 if v6 else ip4
    tag = (b'\x81\x00' + _pack('!H', vid)) if vid else b''
    et = b'\x86\xdd' if v6 else b'\x08\x00'
    to_gw = GW_MAC + lmac + tag + et          # frames sent by the LAN host
    to_host = lmac + GW_MAC + tag + et        # frames sent to the LAN host
    lttl = 128 if os_ == 1 else (255 if os_ == 3 and rng.random() < 0.3 else 64)
    if local_is_c:
        f.eth = (to_gw, to_host)
        f.ip_a = (lip, remote_ip)
        f.ip_b = (remote_ip, lip)
        f.ttl = (lttl, remote_ttl)
        f.ff = (0x4000 if df_local else 0, 0x4000)
    else:
        f.eth = (to_host, to_gw)
        f.ip_a = (remote_ip, lip)
        f.ip_b = (lip, remote_ip)
        f.ttl = (remote_ttl, lttl)
        f.ff = (0x4000 if proto == 6 else 0, 0x4000 if df_local else 0)
    f.tos = tos
    f.ipid = [rng.randrange(65536), rng.randrange(65536)]
    f.poff = (rng.randrange(POOL_SPAN) & ~1, rng.randrange(POOL_SPAN) & ~1)
    ph = []
    ipc = []
    for d in (0, 1):
        addr = _from(f.ip_a[d] + f.ip_b[d], 'big')
        ph.append(addr + proto)
        if not v6:
            ipc.append(addr + ((0x4500 | tos)) + f.ff[d] + ((f.ttl[d] << 8) | proto))
    f.ph = tuple(ph)
    f.ipc = tuple(ipc)
    if v6:
        f.fl = (0x60000000 | (tos << 20) | rng.randrange(1 << 20),
                0x60000000 | (tos << 20) | rng.randrange(1 << 20))


def l3(f, d, l4len):
    """IP header for one packet of flow f in direction d."""
    if f.v6:
        return _pack('!IHBB16s16s', f.fl[d], l4len, f.proto, f.ttl[d], f.ip_a[d], f.ip_b[d])
    tot = 20 + l4len
    ipid = f.ipid[d]
    f.ipid[d] = (ipid + 1) & 0xFFFF
    return _pack('!BBHHHBBH4s4s', 0x45, f.tos, tot, ipid, f.ff[d], f.ttl[d], f.proto,
                 fold(f.ipc[d] + tot + ipid), f.ip_a[d], f.ip_b[d])


# --------------------------------------------------------------------------------------
# renderers: event -> (captured frame bytes, original length)
# --------------------------------------------------------------------------------------
SNAP = 128
POOL = b''
PS = []


def payload(pfx, plen, a, room):
    """(word sum, captured bytes) of a payload = pfx + POOL[a:...] of plen bytes."""
    if pfx is None:
        h = plen >> 1
        s = PS[(a >> 1) + h] - PS[a >> 1]
        if plen & 1:
            s += POOL[a + plen - 1] << 8
        return s, (POOL[a:a + (room if room < plen else plen)] if room > 0 else b'')
    lp = len(pfx)
    if lp >= plen:
        b = pfx[:plen] if lp > plen else pfx
        return bsum(b), (b[:room] if room > 0 else b'')
    if lp & 1:                                # keep the pool part word-aligned
        pfx += b'\x00'
        lp += 1
        if lp == plen:
            return bsum(pfx), (pfx[:room] if room > 0 else b'')
    n = plen - lp
    h = n >> 1
    s = _from(pfx, 'big') + PS[(a >> 1) + h] - PS[a >> 1]
    if n & 1:
        s += POOL[a + n - 1] << 8
    if room <= 0:
        return s, b''
    if room <= lp:
        return s, pfx[:room]
    r = room - lp
    return s, pfx + POOL[a:a + (r if r < n else n)]


def finish(f, d, l4hdr, cap):
    """Assemble the frame; pad to 60 bytes; cut to the snap length."""
    eth = f.eth[d]
    l4len = len(l4hdr) + cap[1]
    ip = l3(f, d, l4len)
    orig = len(eth) + len(ip) + l4len
    frame = eth + ip + l4hdr + cap[0]
    if orig < 60:
        frame += b'\x00' * (60 - orig)
        orig = 60
    return (frame[:SNAP] if len(frame) > SNAP else frame), orig


def render_tcp(f, e):
    ts, d, flags, plen, so, ao, pfx = e
    seq = (f.isn[d] + so) & 0xFFFFFFFF
    ack = (f.isn[d ^ 1] + ao) & 0xFFFFFFFF if flags & ACK else 0
    el = ts - f.t0
    if f.tsopt:
        tsval = (f.tsb[d] + (el >> 10)) & 0xFFFFFFFF
        if flags & SYN and not flags & ACK:
            tsecr = 0
        else:
            back = el - (f.rtt >> 1)
            tsecr = (f.tsb[d ^ 1] + ((back if back > 0 else 0) >> 10)) & 0xFFFFFFFF
    if flags & SYN:
        opts = f.synopt[d]
        if f.tsopt:
            opts = opts[:8] + _pack('!II', tsval, tsecr) + opts[16:]
        win = f.synwin[d]
    elif flags & RST:
        opts = b''
        win = 0
    else:
        opts = _pack('!BBBBII', 1, 1, 8, 10, tsval, tsecr) if f.tsopt else b''
        win = f.win[d]
    thl = 20 + len(opts)
    room = SNAP - len(f.eth[d]) - (40 if f.v6 else 20) - thl
    a = (f.poff[d] + so) & (POOL_SPAN - 2)
    ps, pay = payload(pfx, plen, a, room) if plen else (0, b'')
    sp = f.sp[d]
    dp = f.dp[d]
    s = (f.ph[d] + thl + plen + sp + dp + (seq >> 16) + (seq & 0xFFFF) + (ack >> 16) + (ack & 0xFFFF)
         + ((thl << 10) | flags) + win + ps)
    if opts:
        s += _from(opts, 'big')
    hdr = _pack('!HHIIBBHHH', sp, dp, seq, ack, thl << 2, flags, win, fold(s), 0) + opts
    return finish(f, d, hdr, (pay, plen))


def render_udp(f, e):
    ts, d, plen, pfx = e
    l4len = 8 + plen
    room = SNAP - len(f.eth[d]) - (40 if f.v6 else 20) - 8
    a = (f.poff[d] + f.i * 1402) & (POOL_SPAN - 2)
    ps, pay = payload(pfx, plen, a, room)
    sp = f.sp[d]
    dp = f.dp[d]
    c = fold(f.ph[d] + l4len + sp + dp + l4len + ps) or 0xFFFF
    return finish(f, d, _pack('!HHHH', sp, dp, l4len, c), (pay, plen))


def render_icmp(f, e):
    ts, d, typ, ident, seq, data = e
    s = (typ << 8) + ident + seq + bsum(data)
    if f.v6:
        s += f.ph[d] + 8 + len(data)
    hdr = _pack('!BBHHH', typ, 0, fold(s), ident, seq)
    room = SNAP - len(f.eth[d]) - (40 if f.v6 else 20) - 8
    return finish(f, d, hdr, (data[:room] if room > 0 else b'', len(data)))


# --------------------------------------------------------------------------------------
# TCP
# --------------------------------------------------------------------------------------
TLS_REC = {}


def tls_rec(n):
    """Prefix of a segment that carries one TLS application-data record of n bytes."""
    p = TLS_REC.get(n)
    if p is None:
        p = TLS_REC[n] = b'\x17\x03\x03' + _pack('!H', n - 5) + b'\x00'
    return p


def bulk(ev, t, snd, nbytes, seq, ack, mss, rtt, dc, gap, cap, pfx, ack_last=True, rec=False):
    """snd sends nbytes from time t in slow-start bursts; the peer ACKs every second
    segment.  pfx starts the first segment; rec: every segment is one TLS record.
    Returns (time of last data segment, new sender sequence offset)."""
    if rec and 0 < nbytes % mss < 7:
        nbytes += 7                           # no segment too short for a record header
    rcv = snd ^ 1
    lat = dc if snd == S else rtt             # capture point sits next to the LAN host
    cwnd = 10
    sent = 0
    nseg = 0
    burst = t
    tt = t
    app = ev.append
    while sent < nbytes:
        tt = burst
        k = 0
        while sent < nbytes and k < cwnd:
            ln = nbytes - sent
            if ln > mss:
                ln = mss
            sent += ln
            last = sent == nbytes
            app((tt, snd, (ACK | PSH) if last else ACK, ln, seq, ack, tls_rec(ln) if rec and ln > 6 else pfx))
            pfx = None
            seq += ln
            nseg += 1
            k += 1
            if (not nseg & 1 and not last) or (last and ack_last):
                app((tt + lat + (nseg * 37) % 61, rcv, ACK, 0, ack, seq, None))
            tt += gap
        if cwnd < cap:
            cwnd = cwnd * 2 if cwnd * 2 < cap else cap
        nxt = burst + rtt + dc
        burst = nxt if nxt > tt else tt
    return tt - gap, seq


HTTP_UA = (b'Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0',
           b'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) '
           b'Chrome/122.0.0.0 Safari/537.36', b'curl/7.88.1', b'Debian APT-HTTP/1.3 (2.6.1)')


def tcp_flow(f, rng, t0, host, srv, port=None, local_is_c=True):
    """Complete TCP connection (handshake, rounds of request/response, teardown)."""
    w = WORLD
    v6 = f.v6
    remote = (w.srv6 if v6 else w.srv4)[srv]
    setup(f, host, remote, w.srv_ttl[srv], 6, v6, local_is_c, True)
    os_ = host[4]
    if port is None:
        r = rng.random()
        port = (443 if r < 0.74 else 80 if r < 0.84 else 993 if r < 0.87 else 22 if r < 0.89 else
                5223 if r < 0.92 else 8080 if r < 0.94 else 587 if r < 0.96 else rng.randint(1024, 9999))
    cport = eph_port(rng, os_)
    f.sp = (cport, port)
    f.dp = (port, cport)
    common(f, rng, t0, w.srv_rtt[srv], os_ != 1)
    rtt = f.rtt
    ev = f.ev
    app = ev.append
    mss = (1440 if v6 else 1460) - (12 if f.tsopt else 0)
    dc = lognorm(rng, 120, 0.7, 20, 3000)             # LAN host reaction time (us)
    gap = lognorm(rng, 60, 1.0, 12, 1200)             # bottleneck spacing of full segments
    cap = rng.choice((20, 40, 64, 100, 160))          # max segments per RTT
    # handshake
    app((t0, C, SYN, 0, 0, 0, None))
    t = t0 + rtt
    app((t, S, SYN | ACK, 0, 0, 1, None))
    t += dc
    app((t, C, ACK, 0, 1, 1, None))
    cs = ss = 1
    tls = port in (443, 993, 5223, 587, 8883)
    # application rounds
    if port == 22:
        rounds = int(lognorm(rng, 12, 1.0, 3, 20000))
    elif port == 5223:
        rounds = rng.randint(1, 4)
    else:
        rounds = (2 if tls else 1) + int(rng.expovariate(0.7))
    upload = rng.random() < 0.04
    big = rng.random() < 0.001
    for r in range(rounds):
        if r == 0:
            t += lognorm(rng, 300, 1.0, 30, 20000)
        elif port == 22:
            t += lognorm(rng, 150000, 1.3, 2000, 5000000)
        elif tls and r == 1:
            t += lognorm(rng, 200, 0.8, 20, 5000)
        else:
            t += lognorm(rng, 120000, 1.6, 300, 15000000)
        # sizes
        if port == 22 and r > 0:
            req = rng.choice((36, 36, 36, 52, 68, 100))
            resp = rng.choice((36, 36, 52, 68, 100, 180, 500, 1400))
            rp = sp_ = None
        elif tls and r == 0:
            req = lognorm(rng, 520, 0.4, 250, 1900)
            resp = lognorm(rng, 4200, 0.5, 1300, 12000)
            rp = sp_ = None
        else:
            if upload:
                req = lognorm(rng, 20000, 1.5, 600, 80000000) if not big else lognorm(rng, 1500000, 1.0, 100000, 400000000)
                resp = lognorm(rng, 300, 0.6, 60, 1400)
            else:
                req = lognorm(rng, 420, 0.6, 60, 3000)
                if big:
                    resp = lognorm(rng, 1500000, 1.0, 100000, 400000000)
                else:
                    resp = lognorm(rng, 2500, 1.6, 60, 60000000)
            if tls:
                rp = sp_ = None
            elif port in (80, 8080):
                rp = (b'GET /' + str(rng.randrange(1 << 30)).encode() + b' HTTP/1.1\r\nHost: '
                      + b'www.example\r\nUser-Agent: ' + HTTP_UA[os_ % 4] + b'\r\nAccept: */*\r\n\r\n')
                req = len(rp)
                resp = max(resp, 100)
                body = resp
                for _ in range(3):      # Content-Length = resp - header length
                    sp_ = (b'HTTP/1.1 200 OK\r\nContent-Length: ' + str(body).encode()
                           + b'\r\nContent-Type: application/octet-stream\r\n\r\n')
                    body = resp - len(sp_)
            elif port == 22 and r == 0:
                rp = b'SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u2\r\n'
                sp_ = b'SSH-2.0-OpenSSH_9.6\r\n'
                req, resp = len(rp), len(sp_)
            else:
                rp = sp_ = None
        proc = lognorm(rng, 800, 1.5, 20, 400000) if port != 22 else lognorm(rng, 300, 0.8, 20, 50000)
        last_c, cs = bulk(ev, t, C, req, cs, ss, mss, rtt, dc, gap, cap, rp, proc > 3000, tls)
        last_s, ss = bulk(ev, last_c + rtt + proc, S, resp, ss, cs, mss, rtt, dc, gap, cap, sp_, True, tls)
        t = last_s + dc
    # teardown
    r = rng.random()
    if r < 0.97:
        t += lognorm(rng, 200000, 2.0, 100, 40000000) if rng.random() < 0.5 else lognorm(rng, 3000, 1.0, 50, 200000)
    if r < 0.80:
        closer = C if rng.random() < 0.6 else S
        other = closer ^ 1
        seqs = [cs, ss]
        lat_o = rtt if closer == C else dc        # closer's packet -> other's reply
        lat_c = dc if closer == C else rtt        # other's packet -> closer's reply
        app((t, closer, FIN | ACK, 0, seqs[closer], seqs[other], None))
        seqs[closer] += 1
        t += lat_o
        if rng.random() < 0.5:
            app((t, other, FIN | ACK, 0, seqs[other], seqs[closer], None))
        else:
            app((t, other, ACK, 0, seqs[other], seqs[closer], None))
            t += lognorm(rng, 300, 1.5, 10, 2000000) if other == C else lognorm(rng, 200, 1.0, 10, 100000)
            app((t, other, FIN | ACK, 0, seqs[other], seqs[closer], None))
        seqs[other] += 1
        app((t + lat_c, closer, ACK, 0, seqs[closer], seqs[other], None))
    elif r < 0.97:
        # RST ending (abortive close, e.g. browser tab closed or middlebox timeout)
        who = C if rng.random() < 0.7 else S
        if rng.random() < 0.5:
            app((t, who, RST | ACK, 0, (cs, ss)[who], (ss, cs)[who], None))
        else:
            app((t, who, FIN | ACK, 0, (cs, ss)[who], (ss, cs)[who], None))
            t += rtt if who == C else dc
            app((t, who ^ 1, RST, 0, (ss, cs)[who], 0, None))
    # else: connection left open (long-lived, idle)
    f.render = render_tcp
    return 'tcp'


def common(f, rng, t0, base_rtt, tsopt):
    """TCP per-connection state: ISNs, timestamps, windows, SYN options."""
    f.t0 = t0
    f.rtt = int(base_rtt * (0.9 + 0.3 * rng.random()))
    f.isn = (rng.getrandbits(32), rng.getrandbits(32))
    f.tsopt = tsopt
    f.tsb = (rng.getrandbits(32), rng.getrandbits(32))
    f.win = (rng.choice((501, 502, 1026, 2052, 8212)), rng.choice((235, 256, 501, 1040, 4096)))
    f.synwin = (64240 if rng.random() < 0.8 else 65535, rng.choice((65160, 64800, 65535, 28960)))
    mss = 1440 if f.v6 else 1460
    if tsopt:   # MSS, SACK_PERM, TS(val, ecr), NOP, WS
        syn = _pack('!BBHBBBBIIBBBB', 2, 4, mss, 4, 2, 8, 10, 0, 0, 1, 3, 3, 7)
        f.synopt = (syn, syn[:19] + bytes((rng.choice((7, 9, 10)),)))
    else:       # MSS, NOP, WS, NOP, NOP, SACK_PERM  /  MSS, NOP, NOP, SACK_PERM, NOP, WS
        f.synopt = (_pack('!BBHBBBBBBBB', 2, 4, mss, 1, 3, 3, 8, 1, 1, 4, 2),
                    _pack('!BBHBBBBBBBB', 2, 4, mss, 1, 1, 4, 2, 1, 3, 3, 7))


def tcp_syn_only(f, rng, t0, host, srv):
    """Outbound connection attempt that is never answered (SYN + retransmissions)."""
    w = WORLD
    remote = (w.srv6 if f.v6 else w.srv4)[srv]
    setup(f, host, remote, w.srv_ttl[srv], 6, f.v6, True, True)
    port = rng.choice((443, 443, 443, 80, 8443, 22, 5228, 25, 3478))
    cport = eph_port(rng, host[4])
    f.sp = (cport, port)
    f.dp = (port, cport)
    common(f, rng, t0, w.srv_rtt[srv], host[4] != 1)
    n = rng.choice((1, 2, 3, 4, 4, 5))
    rto = 1000000
    t = t0
    for _ in range(n):
        f.ev.append((t, C, SYN, 0, 0, 0, None))
        t += rto
        rto *= 2
    f.render = render_tcp
    return 'tcp-syn-only'


def tcp_rejected(f, rng, t0, host, srv):
    """Outbound SYN answered by RST/ACK (closed port)."""
    w = WORLD
    remote = (w.srv6 if f.v6 else w.srv4)[srv]
    setup(f, host, remote, w.srv_ttl[srv], 6, f.v6, True, True)
    port = rng.choice((443, 80, 8080, 8443, 25, 110, 3389, 1883, 9000))
    cport = eph_port(rng, host[4])
    f.sp = (cport, port)
    f.dp = (port, cport)
    common(f, rng, t0, w.srv_rtt[srv], host[4] != 1)
    f.ev.append((t0, C, SYN, 0, 0, 0, None))
    f.ev.append((t0 + f.rtt, S, RST | ACK, 0, 0, 1, None))
    f.render = render_tcp
    return 'tcp-rejected'


def tcp_scan(f, rng, t0, host):
    """Inbound single SYN from the internet background (scanners); some hosts answer RST."""
    if f.v6:
        remote = b'\x20\x01\x0d\xb8\xff\xff' + rng.randbytes(10)
    else:
        remote = bytes((198, 19, rng.randint(224, 255), rng.randint(1, 254)))
    setup(f, host, remote, rng.choice((241, 242, 47, 50, 110)), 6, f.v6, False, True)
    port = rng.choice((22, 23, 80, 443, 445, 3389, 8080, 5900, 6379, 1433, 21, 25,
                       rng.randint(1, 65535), rng.randint(1, 65535)))
    sport = rng.choice((54321, 61000, 40000 + rng.randrange(25000)))
    f.sp = (sport, port)
    f.dp = (port, sport)
    common(f, rng, t0, 30000, False)
    f.synopt = (_pack('!BBH', 2, 4, 1460), f.synopt[1])
    f.synwin = (1024, 0)
    f.ev.append((t0, C, SYN, 0, 0, 0, None))
    if rng.random() < 0.15:
        f.ev.append((t0 + rng.randint(60, 400), S, RST | ACK, 0, 0, 1, None))
    f.render = render_tcp
    return 'tcp-scan'


# --------------------------------------------------------------------------------------
# UDP
# --------------------------------------------------------------------------------------
def dns_flow(f, rng, t0, host, srv):
    """DNS lookup; returns (kind, time of the answer or None)."""
    w = WORLD
    v6 = f.v6
    local = rng.random() < 0.7
    vid = host[3]
    if local:
        remote = (b'\x20\x01\x0d\xb8\x00\x00' + _pack('!H', vid) + b'\x00' * 7 + b'\x01') if v6 \
            else bytes((10, vid, 0, 1))
        rttl = 64
        rtt = lognorm(rng, 400, 0.6, 80, 5000) if rng.random() < 0.75 else lognorm(rng, 25000, 0.8, 2000, 400000)
    else:
        remote = (b'\x20\x01\x0d\xb8\x00\x53' + b'\x00' * 9 + b'\x53') if v6 else bytes((198, 18, 53, 53))
        rttl = 57
        rtt = lognorm(rng, 12000, 0.6, 2000, 300000)
    setup(f, host, remote, rttl, 17, v6, True, host[4] != 1)
    cport = eph_port(rng, host[4])
    f.sp = (cport, 53)
    f.dp = (53, cport)
    name = w.names[w.zipf(w.cum_names)]
    edns = rng.random() < 0.6
    r = rng.random()
    qtypes = (1, 28) if r < 0.40 else ((1,) if r < 0.72 else ((28,) if r < 0.90 else (65,)))
    ev = f.ev
    t = t0
    answered = rng.random() >= 0.02
    nx = rng.random() < 0.05
    cname = rng.random() < 0.3
    last = None
    for qi, qt in enumerate(qtypes):
        qid = rng.randrange(65536)
        question = name + _pack('!HH', qt, 1)
        opt = b'\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00' if edns else b''
        q = _pack('!HHHHHH', qid, 0x0100, 1, 0, 0, 1 if edns else 0) + question + opt
        tq = t + qi * rng.randint(20, 300)
        ev.append((tq, C, len(q), q))
        if not answered:
            continue
        ans = b''
        an = 0
        owner = b'\xc0\x0c'                    # pointer to the question name
        if not nx:
            if cname:
                ans += owner + _pack('!HHIH', 5, 1, 300, 18) + b'\x04edge\x03cdn\x07example\x00'
                owner = _pack('!H', 0xC000 | (12 + len(question) + 12))   # the CNAME target
                an += 1
            if qt == 1:
                for k in range(rng.choice((1, 1, 2, 4))):
                    ans += owner + _pack('!HHIH', 1, 1, rng.choice((60, 300, 3600)), 4) \
                        + (w.srv4[srv] if k == 0 else w.srv4[(srv + k * 17) % len(w.srv4)])
                    an += 1
            elif qt == 28:
                for k in range(rng.choice((1, 1, 2))):
                    ans += owner + _pack('!HHIH', 28, 1, 300, 16) \
                        + (w.srv6[srv] if k == 0 else w.srv6[(srv + k * 17) % len(w.srv6)])
                    an += 1
            else:   # HTTPS RR: priority 1, target ".", alpn="h2"
                ans += owner + _pack('!HHIH', 65, 1, 300, 10) + b'\x00\x01\x00\x00\x01\x00\x03\x02h2'
                an += 1
        flags = 0x8183 if nx else 0x8180
        resp = _pack('!HHHHHH', qid, flags, 1, an, 0, 1 if edns else 0) + question + ans + opt
        last = tq + rtt + rng.randint(0, 200)
        ev.append((last, S, len(resp), resp))
    f.render = render_udp
    return 'dns', (None if nx else last)


def ntp_flow(f, rng, t0, host, srv):
    w = WORLD
    remote = (w.srv6 if f.v6 else w.srv4)[srv]
    setup(f, host, remote, w.srv_ttl[srv], 17, f.v6, True, host[4] != 1)
    cport = 123 if rng.random() < 0.4 else eph_port(rng, host[4])
    f.sp = (cport, 123)
    f.dp = (123, cport)
    tx = _pack('!II', EPOCH + 2208988800 + t0 // 1000000, rng.getrandbits(32))
    req = b'\x23' + b'\x00' * 39 + tx
    f.ev.append((t0, C, 48, req))
    if rng.random() < 0.95:
        rt = _pack('!II', EPOCH + 2208988800 + t0 // 1000000, rng.getrandbits(32))
        resp = b'\x24\x02\x00\xe9' + b'\x00\x00\x00\x10\x00\x00\x00\x20' + b'\xc6\x12\x00\x7b' + rt + tx + rt + rt
        f.ev.append((t0 + w.srv_rtt[srv], S, 48, resp))
    f.render = render_udp
    return 'ntp'


def quic_long(first, dcid, scid, plen, initial):
    """QUIC v1 long header (Initial or Handshake) with a consistent Length field."""
    h = bytes((first,)) + b'\x00\x00\x00\x01' + bytes((len(dcid),)) + dcid + bytes((len(scid),)) + scid
    if initial:
        h += b'\x00'                                   # token length 0
    h += _pack('!H', 0x4000 | (plen - len(h) - 2))
    return h + b'\x00' if len(h) & 1 else h           # + first packet-number byte


def quic_flow(f, rng, t0, host, srv):
    """QUIC-like UDP/443 stream: Initial/Handshake packets, then 1-RTT data with ACKs."""
    w = WORLD
    v6 = f.v6
    remote = (w.srv6 if v6 else w.srv4)[srv]
    setup(f, host, remote, w.srv_ttl[srv], 17, v6, True, True)
    cport = eph_port(rng, host[4])
    f.sp = (cport, 443)
    f.dp = (443, cport)
    rtt = int(w.srv_rtt[srv] * (0.9 + 0.3 * rng.random()))
    dc = lognorm(rng, 150, 0.7, 20, 3000)
    gap = lognorm(rng, 60, 1.0, 12, 1200)
    mtu = 1330 if v6 else 1350
    dcid = rng.randbytes(8)
    scid = rng.randbytes(8)
    ev = f.ev
    app = ev.append
    sh_c = b'\x43' + scid + b'\x00'
    sh_s = b'\x41' + b'\x00'
    app((t0, C, 1250, quic_long(0xc3, dcid, b'', 1250, True)))
    t = t0 + rtt
    for k in range(rng.randint(2, 4)):
        n = mtu if k else 1250
        app((t + k * gap, S, n, quic_long(0xe1, b'', scid, n, False) if k else quic_long(0xc1, b'', scid, n, True)))
    t += 3 * gap + dc
    app((t, C, 1250, quic_long(0xc3, scid, b'', 1250, True)))
    n = rng.randint(80, 120)
    app((t + 30, C, n, quic_long(0xe1, scid, b'', n, False)))
    tmp = []
    rounds = 1 + int(rng.expovariate(0.6))
    for r in range(rounds):
        t += lognorm(rng, 300, 1.0, 20, 20000) if r == 0 else lognorm(rng, 150000, 1.6, 300, 15000000)
        req = lognorm(rng, 300, 0.6, 40, 3000)
        resp = lognorm(rng, 5000, 1.8, 100, 80000000)
        last_c, _ = bulk(tmp, t, C, req, 0, 0, mtu, rtt, dc, gap, 40, None, False)
        last_s, _ = bulk(tmp, last_c + rtt + lognorm(rng, 800, 1.5, 20, 400000), S, resp, 0, 0,
                         mtu, rtt, dc, gap, 64, None)
        t = last_s + dc
    for e in tmp:           # TCP-shaped events -> QUIC short-header packets
        if e[3]:
            app((e[0], e[1], e[3] + 20 if e[3] + 20 <= mtu else mtu, sh_c if e[1] == C else sh_s))
        else:
            app((e[0], e[1], 30 + (e[0] & 15), sh_c if e[1] == C else sh_s))
    if rng.random() < 0.4:
        who = C if rng.random() < 0.7 else S
        app((t + lognorm(rng, 2000000, 1.5, 1000, 30000000), who, 42, sh_c if who == C else sh_s))
    f.render = render_udp
    return 'quic'


def rtp_flow(f, rng, t0, host, srv):
    """Voice call: RTP/PCMU 20 ms packets both ways."""
    w = WORLD
    remote = (w.srv6 if f.v6 else w.srv4)[srv]
    setup(f, host, remote, w.srv_ttl[srv], 17, f.v6, True, True, tos=0xb8)
    cport = rng.randrange(10000, 20000, 2)
    sport = rng.randrange(16384, 32768, 2)
    f.sp = (cport, sport)
    f.dp = (sport, cport)
    n = lognorm(rng, 900, 0.9, 50, 15000)
    ssrc = (rng.getrandbits(32), rng.getrandbits(32))
    seq0 = (rng.randrange(65536), rng.randrange(65536))
    ts0 = (rng.getrandbits(32), rng.getrandbits(32))
    phase = rng.randrange(20000) + w.srv_rtt[srv] // 2
    ev = f.ev
    rnd = rng.random
    for k in range(n):
        for d in (C, S):
            if rnd() < 0.003:
                continue                    # packet loss
            t = t0 + k * 20000 + (phase if d == S else 0) + int(rnd() * 900)
            hdr = _pack('!BBHII', 0x80, 0x80 if k == 0 else 0, (seq0[d] + k) & 0xFFFF,
                        (ts0[d] + 160 * k) & 0xFFFFFFFF, ssrc[d])
            ev.append((t, d, 172, hdr))
    f.render = render_udp
    return 'rtp'


# --------------------------------------------------------------------------------------
# ICMP
# --------------------------------------------------------------------------------------
WIN_PING = b'abcdefghijklmnopqrstuvwabcdefghi'
LIN_PING_TAIL = bytes(range(0x10, 0x38))


def icmp_flow(f, rng, t0, host, srv):
    w = WORLD
    v6 = f.v6
    remote = (w.srv6 if v6 else w.srv4)[srv]
    setup(f, host, remote, w.srv_ttl[srv], 58 if v6 else 1, v6, True, host[4] != 1)
    win = host[4] == 1
    n = 4 if win else rng.choice((1, 2, 3, 4, 5, 5, 10, 20, 60))
    ident = rng.randrange(1, 65536)
    answered = rng.random() >= 0.1
    rtt = int(w.srv_rtt[srv] * (0.9 + 0.3 * rng.random()))
    rq, rp = (128, 129) if v6 else (8, 0)
    t = t0
    for k in range(n):
        seq = k + 1
        data = WIN_PING if win else (_pack('<QQ', EPOCH + t // 1000000, t % 1000000) + LIN_PING_TAIL)
        f.ev.append((t, C, rq, ident, seq, data))
        if answered and rng.random() >= 0.02:
            f.ev.append((t + rtt + rng.randint(0, rtt // 10 + 50), S, rp, ident, seq, data))
        t += 1000000 + rng.randint(0, 900)
    f.render = render_icmp
    return 'icmp'


# --------------------------------------------------------------------------------------
# sessions and main loop
# --------------------------------------------------------------------------------------
KINDS = (('dns', 0.40), ('tcp', 0.13), ('quic', 0.018), ('icmp', 0.03), ('ntp', 0.015),
         ('rtp', 0.0005), ('syn', 0.025), ('rej', 0.012), ('scan', 0.03))
KIND_CUM = list(accumulate(p for _, p in KINDS))


def new_session(rng, t0, uid):
    """Returns the list of flows started by one arrival (a DNS lookup may be followed by
    a TCP or QUIC connection to the answered address)."""
    w = WORLD
    k = KINDS[bisect(KIND_CUM, rng.random() * KIND_CUM[-1])][0]
    tagged = rng.random() < 0.15
    v6 = rng.random() < 0.20
    host = w.host(tagged)
    srv = w.zipf(w.cum_srv)
    flows = []

    def mk():
        f = Flow()
        f.uid = uid + len(flows)
        f.ev = []
        f.i = 0
        f.v6 = v6
        flows.append(f)
        return f

    f = mk()
    if k == 'dns':
        f.kind, t_ans = dns_flow(f, rng, t0, host, srv)
        if t_ans is not None and rng.random() < 0.6:
            g = mk()
            t1 = t_ans + lognorm(rng, 2000, 1.5, 50, 3000000)
            g.kind = quic_flow(g, rng, t1, host, srv) if rng.random() < 0.15 else tcp_flow(g, rng, t1, host, srv)
    elif k == 'tcp':
        f.kind = tcp_flow(f, rng, t0, host, srv)
    elif k == 'quic':
        f.kind = quic_flow(f, rng, t0, host, srv)
    elif k == 'icmp':
        f.kind = icmp_flow(f, rng, t0, host, srv)
    elif k == 'ntp':
        f.kind = ntp_flow(f, rng, t0, host, srv)
    elif k == 'rtp':
        f.kind = rtp_flow(f, rng, t0, host, srv)
    elif k == 'syn':
        f.kind = tcp_syn_only(f, rng, t0, host, srv)
    elif k == 'rej':
        f.kind = tcp_rejected(f, rng, t0, host, srv)
    else:
        f.kind = tcp_scan(f, rng, t0, host)
    for f in flows:
        f.ev.sort(key=_first)
    return flows


WORLD = None


def generate(packets, seed, out, snaplen, rate_scale):
    global WORLD, SNAP, POOL, PS
    SNAP = snaplen
    rng = random.Random(seed)
    WORLD = World(rng)
    POOL = WORLD.pool.data
    PS = WORLD.pool.ps
    out.write(_pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, snaplen, 1))

    mean_gap = 1e6 / (ARRIVALS_PER_S * rate_scale)
    heap = []
    push = heapq.heappush
    pop = heapq.heappop
    replace = heapq.heapreplace
    nxt = 0.0
    uid = 0
    last = -1
    written = 0
    buf = []
    st_pk = {}          # proto name -> packets
    st_fl = {}          # flow kind -> flows (that emitted >= 1 packet)
    st_pfl = {}         # proto name -> flows
    pk_v6 = pk_vlan = fl_v6 = fl_vlan = 0
    bytes_orig = bytes_incl = 0
    pname = {6: 'TCP', 17: 'UDP', 1: 'ICMP', 58: 'ICMPv6'}
    pk = struct.Struct('<IIII').pack
    first_ts = None
    conc = []
    while written < packets:
        if not heap or nxt <= heap[0][0]:
            t0 = int(nxt)
            for f in new_session(rng, t0, uid):
                push(heap, (f.ev[0][0], f.uid, f))
            uid += 8
            nxt += rng.expovariate(1.0) * mean_gap
            continue
        ts, u, f = heap[0]
        e = f.ev[f.i]
        frame, orig = f.render(f, e)
        if ts <= last:
            ts = last + 1
        last = ts
        if first_ts is None:
            first_ts = ts
        incl = len(frame)
        buf.append(pk(EPOCH + ts // 1000000, ts % 1000000, incl, orig))
        buf.append(frame)
        written += 1
        bytes_orig += orig
        bytes_incl += incl
        p = pname[f.proto]
        st_pk[p] = st_pk.get(p, 0) + 1
        if f.v6:
            pk_v6 += 1
        if f.vlan:
            pk_vlan += 1
        if f.i == 0:
            st_fl[f.kind] = st_fl.get(f.kind, 0) + 1
            st_pfl[p] = st_pfl.get(p, 0) + 1
            fl_v6 += f.v6
            fl_vlan += bool(f.vlan)
        f.i += 1
        if f.i < len(f.ev):
            replace(heap, (f.ev[f.i][0], u, f))
        else:
            pop(heap)
        if len(buf) >= 16384:
            out.write(b''.join(buf))
            buf.clear()
            conc.append(len(heap))          # flows in progress, sampled every 8192 packets
    out.write(b''.join(buf))
    cut = sum(1 for _, _, f in heap if f.i > 0)
    return dict(packets=written, first=first_ts, last=last, pk=st_pk, fl=st_fl, pfl=st_pfl,
                pk_v6=pk_v6, pk_vlan=pk_vlan, fl_v6=fl_v6, fl_vlan=fl_vlan,
                bytes_orig=bytes_orig, bytes_incl=bytes_incl, open_at_end=cut, conc=conc)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--packets', type=int, default=1000000, help='number of packets (default 1000000)')
    ap.add_argument('--seed', type=int, default=1, help='random seed (default 1)')
    ap.add_argument('-o', '--output', required=True, help="output pcap file ('-' for stdout)")
    ap.add_argument('--snaplen', type=int, default=128,
                    help='snap length: frames are cut to this many bytes (default 128, min 64)')
    ap.add_argument('--rate-scale', type=float, default=1.0,
                    help='multiply the flow arrival rate (default 1.0, about 12.5k packets/s)')
    ap.add_argument('-q', '--quiet', action='store_true', help='no summary on stderr')
    a = ap.parse_args()
    if a.packets < 1 or a.snaplen < 64 or a.snaplen > 262144 or a.rate_scale <= 0:
        ap.error('need --packets >= 1, 64 <= --snaplen <= 262144, --rate-scale > 0')
    t_start = time.perf_counter()
    if a.output == '-':
        out = sys.stdout.buffer
        st = generate(a.packets, a.seed, out, a.snaplen, a.rate_scale)
        out.flush()
        size = None
    else:
        with open(a.output, 'wb', buffering=1 << 20) as out:
            st = generate(a.packets, a.seed, out, a.snaplen, a.rate_scale)
        size = os.path.getsize(a.output)
    el = time.perf_counter() - t_start
    if a.quiet:
        return
    n = st['packets']
    dur = (st['last'] - st['first']) / 1e6
    nfl = sum(st['fl'].values())
    w = sys.stderr.write
    w(f"gen_capture: seed {a.seed}, snaplen {a.snaplen} -> {a.output}\n")
    w(f"  packets   {n}  ({n / dur if dur > 0 else 0:.0f} pkt/s over {dur:.3f} s)\n")
    w("  by proto  " + ', '.join(f"{k} {v} ({100 * v / n:.1f}%)" for k, v in sorted(st['pk'].items())) + "\n")
    w(f"  flows     {nfl}  ({1e6 * nfl / n:.0f} per 1M packets; {st['open_at_end']} still open at the end)\n")
    if st['conc']:
        c = st['conc']
        w(f"  in flight mean {sum(c) / len(c):.0f}, max {max(c)} flows at once (sampled every 8192 packets)\n")
    w("  flows/pr  " + ', '.join(f"{k} {v}" for k, v in sorted(st['pfl'].items())) + "\n")
    w("  flows/app " + ', '.join(f"{k} {v}" for k, v in sorted(st['fl'].items())) + "\n")
    w(f"  IPv6      {100 * st['pk_v6'] / n:.1f}% of packets, {100 * st['fl_v6'] / max(1, nfl):.1f}% of flows\n")
    w(f"  VLAN      {100 * st['pk_vlan'] / n:.1f}% of packets, {100 * st['fl_vlan'] / max(1, nfl):.1f}% of flows\n")
    w(f"  bytes     {st['bytes_orig']} on the wire (mean frame {st['bytes_orig'] / n:.0f} B), "
      f"{st['bytes_incl']} captured\n")
    if size is not None:
        w(f"  file      {size} bytes\n")
    w(f"  time      {el:.1f} s ({n / el:.0f} pkt/s)\n")


if __name__ == '__main__':
    main()
