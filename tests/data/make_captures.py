#!/usr/bin/env python3
"""Craft the small, deterministic test captures in tests/data/.

Run from anywhere (the output goes next to this script):

    python3 tests/data/make_captures.py

Standard library only: every frame and every pcap/pcapng block is built byte by
byte with `struct`, so the script runs anywhere without installs and writes the
same bytes on every run (no randomness, no wall clock). tests/data/README.md
documents what each file contains and what a test may assert about it; keep the
two in step when changing anything here.
"""

import os
import struct
import sys

OUT_DIR = os.path.dirname(os.path.abspath(__file__))

# 2024-05-01T12:00:00Z, in nanoseconds since the epoch.
T0 = 1714564800 * 1_000_000_000
MS = 1_000_000  # nanoseconds per millisecond
US = 1_000  # nanoseconds per microsecond

# Link types.
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276

# Ethertypes.
ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN = 0x8100
ETH_QINQ = 0x88A8
ETH_PPPOE_SESSION = 0x8864
ETH_LLDP = 0x88CC

# IP protocol numbers.
IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ROUTING = 43
IPPROTO_ICMPV6 = 58
IPPROTO_DSTOPTS = 60

# TCP flags.
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

# Locally administered MAC addresses used throughout.
MAC_C = bytes.fromhex("020000000001")  # client side host
MAC_S = bytes.fromhex("020000000002")  # server side host
MAC_R = bytes.fromhex("0200000000fe")  # router / gateway / PPPoE AC


# --------------------------------------------------------------------------
# Addresses and checksums
# --------------------------------------------------------------------------

def ip4(text):
    return bytes(int(p) for p in text.split("."))


def ip6(text):
    """Parse an IPv6 address (with at most one '::') into 16 bytes."""
    if "::" in text:
        head, tail = text.split("::")
        head = [h for h in head.split(":") if h]
        tail = [t for t in tail.split(":") if t]
        groups = head + ["0"] * (8 - len(head) - len(tail)) + tail
    else:
        groups = text.split(":")
    assert len(groups) == 8, text
    return b"".join(struct.pack("!H", int(g, 16)) for g in groups)


def csum(data):
    """RFC 1071 Internet checksum."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def pseudo_header(src, dst, proto, length):
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!I3xB", length, proto)


def l4_checksum(src, dst, proto, segment):
    c = csum(pseudo_header(src, dst, proto, len(segment)) + segment)
    if proto == IPPROTO_UDP and c == 0:
        c = 0xFFFF
    return c


# --------------------------------------------------------------------------
# Layer 3 / layer 4 builders
# --------------------------------------------------------------------------

def ipv4(src, dst, proto, payload, ttl=64, ident=0, df=True, mf=False,
         frag_offset=0, tos=0, total_length=None, ihl=5):
    """IPv4 header + payload. frag_offset is in bytes (multiple of 8)."""
    assert frag_offset % 8 == 0
    flags = (0x4000 if df else 0) | (0x2000 if mf else 0) | (frag_offset // 8)
    if total_length is None:
        total_length = 20 + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, tos, total_length, ident,
                      flags, ttl, proto, 0, src, dst)
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + payload


def ipv6(src, dst, next_header, payload, hlim=64, flow_label=0, tclass=0):
    """IPv6 fixed header; `payload` includes any extension headers."""
    first = (6 << 28) | (tclass << 20) | flow_label
    return struct.pack("!IHBB16s16s", first, len(payload), next_header, hlim,
                       src, dst) + payload


def ext_options(next_header, options):
    """Hop-by-hop or destination options header padded to 8 octets (PadN)."""
    body = bytes(options)
    pad = (-(2 + len(body))) % 8
    if pad == 1:
        body += b"\x00"  # Pad1
    elif pad > 1:
        body += bytes([1, pad - 2]) + b"\x00" * (pad - 2)  # PadN
    length = 2 + len(body)
    return bytes([next_header, length // 8 - 1]) + body


def ext_srh(next_header, segments, segments_left=0):
    """Segment Routing Header (routing type 4, RFC 8754)."""
    hdr_ext_len = 2 * len(segments)
    last_entry = len(segments) - 1
    return (struct.pack("!BBBBBBH", next_header, hdr_ext_len, 4, segments_left,
                        last_entry, 0, 0) + b"".join(segments))


def ipv6_chain(src, dst, upper_proto, upper, exts=(), hlim=64):
    """IPv6 packet with a chain of extension headers before `upper`.

    exts is a sequence of (header_type, builder) where builder(next_header)
    returns the header bytes.
    """
    types = [t for t, _ in exts] + [upper_proto]
    body = b"".join(b(types[i + 1]) for i, (_, b) in enumerate(exts))
    return ipv6(src, dst, types[0], body + upper, hlim=hlim)


def tcp_segment(src, dst, sport, dport, seq, ack, flags, window, payload=b"",
                options=b"", data_offset=None):
    assert len(options) % 4 == 0
    if data_offset is None:
        data_offset = 5 + len(options) // 4
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, data_offset << 4,
                      flags, window, 0, 0) + options
    seg = hdr + payload
    c = l4_checksum(src, dst, IPPROTO_TCP, seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def udp_datagram(src, dst, sport, dport, payload):
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    c = l4_checksum(src, dst, IPPROTO_UDP, seg)
    return seg[:6] + struct.pack("!H", c)[0:2] + seg[8:]


def icmp_message(icmp_type, code, rest, data):
    msg = struct.pack("!BBH", icmp_type, code, 0) + rest + data
    return msg[:2] + struct.pack("!H", csum(msg)) + msg[4:]


def icmpv6_message(src, dst, icmp_type, code, rest, data):
    msg = struct.pack("!BBH", icmp_type, code, 0) + rest + data
    c = csum(pseudo_header(src, dst, IPPROTO_ICMPV6, len(msg)) + msg)
    return msg[:2] + struct.pack("!H", c) + msg[4:]


PING_DATA = bytes((0x10 + i) & 0xFF for i in range(56))  # 56-byte ping payload


def icmp_echo(src, dst, request, ident, seq, ttl=64, ip_id=0, data=PING_DATA):
    msg = icmp_message(8 if request else 0, 0, struct.pack("!HH", ident, seq), data)
    return ipv4(src, dst, IPPROTO_ICMP, msg, ttl=ttl, ident=ip_id, df=True)


def icmpv6_echo(src, dst, request, ident, seq, hlim=64, data=PING_DATA):
    msg = icmpv6_message(src, dst, 128 if request else 129, 0,
                         struct.pack("!HH", ident, seq), data)
    return ipv6(src, dst, IPPROTO_ICMPV6, msg, hlim=hlim)


def udp4(src, dst, sport, dport, payload, ttl=64, ip_id=0, df=True):
    return ipv4(src, dst, IPPROTO_UDP, udp_datagram(src, dst, sport, dport, payload),
                ttl=ttl, ident=ip_id, df=df)


def udp6(src, dst, sport, dport, payload, hlim=64, exts=()):
    return ipv6_chain(src, dst, IPPROTO_UDP,
                      udp_datagram(src, dst, sport, dport, payload), exts, hlim)


def syn_options(mss):
    # MSS, NOP, NOP, SACK permitted (no window scaling, so the window field of
    # every segment is the real window).
    return struct.pack("!BBH", 2, 4, mss) + b"\x01\x01\x04\x02"


class TcpConv:
    """Tracks sequence numbers of one TCP connection and builds IP packets."""

    def __init__(self, cip, cport, sip, sport, cisn, sisn, cwin=64240,
                 swin=65160, cttl=64, sttl=128, cid=0x1000, sid=0x5000,
                 mss=1460, exts=()):
        self.v6 = len(cip) == 16
        self.c = dict(ip=cip, port=cport, seq=cisn, win=cwin, ttl=cttl, id=cid)
        self.s = dict(ip=sip, port=sport, seq=sisn, win=swin, ttl=sttl, id=sid)
        self.mss = mss
        self.exts = exts

    def pkt(self, from_client, flags, payload=b"", window=None):
        a, b = (self.c, self.s) if from_client else (self.s, self.c)
        opts = syn_options(self.mss) if flags & SYN else b""
        ack = b["seq"] if flags & ACK else 0
        win = a["win"] if window is None else window
        seg = tcp_segment(a["ip"], b["ip"], a["port"], b["port"], a["seq"], ack,
                          flags, win, payload, opts)
        a["seq"] = (a["seq"] + len(payload) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        if self.v6:
            return ipv6_chain(a["ip"], b["ip"], IPPROTO_TCP, seg, self.exts, a["ttl"])
        ip_id = a["id"]
        a["id"] += 1
        return ipv4(a["ip"], b["ip"], IPPROTO_TCP, seg, ttl=a["ttl"], ident=ip_id)

    # Convenience wrappers.
    def syn(self):
        return self.pkt(True, SYN)

    def synack(self):
        return self.pkt(False, SYN | ACK)

    def ack(self, from_client=True):
        return self.pkt(from_client, ACK)

    def data(self, from_client, payload):
        return self.pkt(from_client, PSH | ACK, payload)

    def fin(self, from_client):
        return self.pkt(from_client, FIN | ACK)


# --------------------------------------------------------------------------
# Layer 2 builders
# --------------------------------------------------------------------------

def vlan_tag(tpid, vid, pcp=0):
    return struct.pack("!HH", tpid, (pcp << 13) | vid)


def eth(dst, src, ethertype, payload, tags=b"", pad=False):
    frame = dst + src + tags + struct.pack("!H", ethertype) + payload
    if pad and len(frame) < 60:
        frame += b"\x00" * (60 - len(frame))  # minimum frame size, FCS not captured
    return frame


def ether_type_of(ip_packet):
    return ETH_IPV4 if ip_packet[0] >> 4 == 4 else ETH_IPV6


def pppoe_session(session_id, ip_packet):
    ppp_proto = 0x0021 if ip_packet[0] >> 4 == 4 else 0x0057
    ppp = struct.pack("!H", ppp_proto) + ip_packet
    return struct.pack("!BBHH", 0x11, 0x00, session_id, len(ppp)) + ppp


def sll(pkttype, addr, ip_packet):
    return struct.pack("!HHH8sH", pkttype, 1, len(addr), addr, ether_type_of(ip_packet)) + ip_packet


def sll2(pkttype, ifindex, addr, ip_packet):
    return struct.pack("!HHIHBB8s", ether_type_of(ip_packet), 0, ifindex, 1, pkttype,
                       len(addr), addr) + ip_packet


SLL_HOST, SLL_OUTGOING = 0, 4


# --------------------------------------------------------------------------
# Application payloads
# --------------------------------------------------------------------------

def dns_name(name):
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"


def dns_query(txid, name, qtype):
    return struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0) + dns_name(name) + struct.pack("!HH", qtype, 1)


def dns_response(txid, name, qtype, rdata, ttl=300):
    return (struct.pack("!HHHHHH", txid, 0x8180, 1, 1, 0, 0) + dns_name(name)
            + struct.pack("!HH", qtype, 1)
            + struct.pack("!HHHIH", 0xC00C, qtype, 1, ttl, len(rdata)) + rdata)


def ber(tag, content):
    assert len(content) < 128
    return bytes([tag, len(content)]) + content


def snmp_get(request_id, community=b"public"):
    """SNMPv2c GetRequest for sysDescr.0 (1.3.6.1.2.1.1.1.0)."""
    oid = ber(0x06, bytes([0x2B, 6, 1, 2, 1, 1, 1, 0]))
    varbind = ber(0x30, oid + b"\x05\x00")
    pdu = ber(0xA0, ber(0x02, struct.pack("!I", request_id)) + ber(0x02, b"\x00")
              + ber(0x02, b"\x00") + ber(0x30, varbind))
    return ber(0x30, ber(0x02, b"\x01") + ber(0x04, community) + pdu)


def lldp_frame():
    def tlv(t, value):
        return struct.pack("!H", (t << 9) | len(value)) + value
    body = (tlv(1, b"\x04" + MAC_R)  # chassis id, subtype MAC address
            + tlv(2, b"\x05eth0")  # port id, subtype interface name
            + tlv(3, struct.pack("!H", 120))  # TTL
            + tlv(0, b""))  # end of LLDPDU
    return eth(bytes.fromhex("0180c200000e"), MAC_R, ETH_LLDP, body)


HTTP_REQ = b"GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: edgewatch-test\r\n\r\n"
HTTP_RESP = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
             b"\r\nhello, world\n")


def tls_app_data(n, fill):
    return b"\x17\x03\x03" + struct.pack("!H", n) + bytes([fill]) * n


# --------------------------------------------------------------------------
# Capture file writers
# --------------------------------------------------------------------------

class Rec:
    """One captured packet: absolute timestamp in ns and frame bytes.

    `cut` writes only that many bytes of the frame while the record header
    still claims the full length (to build a file that ends early).
    """

    def __init__(self, ts, data, cut=None):
        self.ts, self.data, self.cut = ts, data, cut


def write_pcap(name, linktype, recs, big_endian=False, nanosecond=False, snaplen=262144):
    e = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    out = bytearray(struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
    for r in recs:
        sec, frac = divmod(r.ts, 1_000_000_000)
        if not nanosecond:
            assert frac % 1000 == 0, "µs pcap needs µs timestamps"
            frac //= 1000
        out += struct.pack(e + "IIII", sec, frac, len(r.data), len(r.data))
        out += r.data if r.cut is None else r.data[:r.cut]
    save(name, bytes(out))


def pcapng_option(code, value):
    pad = (-len(value)) % 4
    return struct.pack("<HH", code, len(value)) + value + b"\x00" * pad


def pcapng_block(block_type, body):
    assert len(body) % 4 == 0
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def write_pcapng(name, interfaces, recs):
    """interfaces: list of (linktype, if_name, tsresol exponent of 10).
    recs: list of (iface_index, Rec)."""
    end = pcapng_option(0, b"")
    shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + pcapng_option(
        4, b"edgewatch tests/data/make_captures.py") + end
    out = bytearray(pcapng_block(0x0A0D0D0A, shb))
    for linktype, if_name, tsresol in interfaces:
        body = struct.pack("<HHI", linktype, 0, 262144)
        body += pcapng_option(2, if_name.encode()) + pcapng_option(9, bytes([tsresol])) + end
        out += pcapng_block(1, body)
    for iface, r in recs:
        unit = 10 ** (9 - interfaces[iface][2])  # ns per tick
        assert r.ts % unit == 0
        ticks = r.ts // unit
        data = r.data + b"\x00" * ((-len(r.data)) % 4)
        body = struct.pack("<IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF,
                           len(r.data), len(r.data)) + data
        out += pcapng_block(6, body)
    save(name, bytes(out))


def save(name, data):
    with open(os.path.join(OUT_DIR, name), "wb") as f:
        f.write(data)
    print("%-22s %6d bytes" % (name, len(data)))


def timed(offsets_us, frames, start=T0):
    assert len(offsets_us) == len(frames), (len(offsets_us), len(frames))
    return [Rec(start + o * US, f) for o, f in zip(offsets_us, frames)]


# Timing of a 9-packet TCP exchange (handshake, request, response, ACK,
# FIN from the client, FIN from the server, last ACK), in µs from the start.
TCP9_US = [0, 20_150, 20_310, 20_420, 41_050, 41_120, 1_041_200, 1_061_400, 1_061_480]


def tcp9(conv, request, response):
    """SYN, SYN/ACK, ACK, C data, S data, C ACK, C FIN, S FIN, C ACK."""
    return [conv.syn(), conv.synack(), conv.ack(True), conv.data(True, request),
            conv.data(False, response), conv.ack(True), conv.fin(True),
            conv.fin(False), conv.ack(True)]


# --------------------------------------------------------------------------
# The captures
# --------------------------------------------------------------------------

def make_vlan():
    c, s = ip4("10.1.0.1"), ip4("10.1.0.2")
    conv = TcpConv(c, 40000, s, 80, cisn=1_000_000, sisn=2_000_000)
    ips = tcp9(conv, HTTP_REQ % b"10.1.0.2", HTTP_RESP)
    tag = vlan_tag(ETH_VLAN, 100)
    frames = []
    for i, p in enumerate(ips):
        from_client = p[12:16] == c
        dst, src = (MAC_S, MAC_C) if from_client else (MAC_C, MAC_S)
        frames.append(eth(dst, src, ETH_IPV4, p, tags=tag, pad=True))
    write_pcap("vlan.pcap", LINKTYPE_ETHERNET, timed(TCP9_US, frames))


def make_qinq():
    c, s = ip4("10.2.0.1"), ip4("10.2.0.2")
    tags = vlan_tag(ETH_QINQ, 200) + vlan_tag(ETH_VLAN, 300)
    name = "edgewatch.example"
    ips = [
        udp4(c, s, 53000, 53, dns_query(0x1A01, name, 1), ip_id=0x2001),
        udp4(s, c, 53, 53000, dns_response(0x1A01, name, 1, ip4("192.0.2.10")), ttl=128, ip_id=0x6001, df=False),
        udp4(c, s, 53000, 53, dns_query(0x1A02, name, 28), ip_id=0x2002),
        udp4(s, c, 53, 53000, dns_response(0x1A02, name, 28, ip6("2001:db8::10")), ttl=128, ip_id=0x6002, df=False),
    ]
    frames = [eth(MAC_S, MAC_C, ETH_IPV4, p, tags) if p[12:16] == c else
              eth(MAC_C, MAC_S, ETH_IPV4, p, tags) for p in ips]
    write_pcap("qinq.pcap", LINKTYPE_ETHERNET, timed([0, 1_250, 1_400, 2_610], frames))


def make_pppoe():
    c, s = ip4("10.3.0.1"), ip4("10.3.0.2")
    conv = TcpConv(c, 50000, s, 443, cisn=3_000_000, sisn=4_000_000, mss=1452)
    ips = [conv.syn(), conv.synack(), conv.ack(True),
           conv.data(True, tls_app_data(32, 0xAA)),
           conv.data(False, tls_app_data(48, 0xBB)),
           conv.ack(True),
           conv.pkt(True, RST | ACK, window=0)]
    c6, s6 = ip6("2001:db8:3::1"), ip6("2001:db8:3::2")
    ips += [icmpv6_echo(c6, s6, True, 0x0303, 1), icmpv6_echo(s6, c6, False, 0x0303, 1)]
    frames = []
    for p in ips:
        from_client = p[12:16] == c if p[0] >> 4 == 4 else p[8:24] == c6
        dst, src = (MAC_R, MAC_C) if from_client else (MAC_C, MAC_R)
        frames.append(eth(dst, src, ETH_PPPOE_SESSION, pppoe_session(0x1A2B, p)))
    us = [0, 30_100, 30_200, 30_350, 61_000, 61_100, 2_000_000, 3_000_000, 3_030_500]
    write_pcap("pppoe.pcap", LINKTYPE_ETHERNET, timed(us, frames))


def make_ipv6_ext():
    c, s = ip6("fd00::1"), ip6("fd00::2")
    hbh_do = ((IPPROTO_HOPOPTS, lambda nh: ext_options(nh, b"")),
              (IPPROTO_DSTOPTS, lambda nh: ext_options(nh, b"")))
    conv = TcpConv(c, 51000, s, 22, cisn=5_000_000, sisn=6_000_000, mss=1440,
                   sttl=64, exts=hbh_do)
    ips = [conv.syn(), conv.synack(), conv.ack(True),
           conv.data(False, b"SSH-2.0-OpenSSH_9.2p1\r\n"),
           conv.data(True, b"SSH-2.0-edgewatch_test\r\n")]
    srh = ((IPPROTO_ROUTING, lambda nh: ext_srh(nh, [s, ip6("fd00::100")], 0)),)
    ips += [udp6(c, s, 40001, 5001, b"srv6 probe 1", exts=srh),
            udp6(s, c, 5001, 40001, b"srv6 reply 1")]
    ips += [icmpv6_echo(c, s, True, 0x1234, 1), icmpv6_echo(s, c, False, 0x1234, 1)]
    frames = [eth(MAC_S, MAC_C, ETH_IPV6, p) if p[8:24] == c else eth(MAC_C, MAC_S, ETH_IPV6, p)
              for p in ips]
    us = [0, 10_100, 10_200, 25_000, 40_000, 1_000_000, 1_000_900, 2_000_000, 2_000_700]
    write_pcap("ipv6_ext.pcap", LINKTYPE_ETHERNET, timed(us, frames))


def fragments(src, dst, proto, payload, ident, ttl=64, size=1480, skip_first=False):
    out = []
    for off in range(0, len(payload), size):
        chunk = payload[off:off + size]
        more = off + size < len(payload)
        if skip_first and off == 0:
            continue
        out.append(ipv4(src, dst, proto, chunk, ttl=ttl, ident=ident, df=False,
                        mf=more, frag_offset=off))
    return out


def make_ipv4_frag():
    c, s = ip4("10.4.0.1"), ip4("10.4.0.2")
    pattern = b"edgewatch-fragment-test;"
    body1 = (pattern * 200)[:2992]
    dgram1 = udp_datagram(c, s, 5000, 6000, body1)  # 3000 bytes
    reply = udp4(s, c, 6000, 5000, b"ack " + b"r" * 96, ttl=64, ip_id=0x3001, df=False)
    # Second datagram: its first fragment is never captured. The data at the
    # start of the second fragment looks like a UDP header (1234 -> 5678) to
    # catch readers that parse L4 headers out of non-first fragments.
    fake_hdr = struct.pack("!HHHH", 1234, 5678, 52, 0)
    body2 = (pattern * 200)[:1472] + fake_hdr + (pattern * 200)[:1512]
    dgram2 = udp_datagram(c, s, 5000, 6000, body2)  # 3000 bytes
    ips = fragments(c, s, IPPROTO_UDP, dgram1, 0x1111) + [reply] + \
        fragments(c, s, IPPROTO_UDP, dgram2, 0x2222, skip_first=True)
    frames = [eth(MAC_S, MAC_C, ETH_IPV4, p) if p[12:16] == c else eth(MAC_C, MAC_S, ETH_IPV4, p)
              for p in ips]
    us = [0, 40, 80, 5_000, 1_000_000, 1_000_040]
    write_pcap("ipv4_frag.pcap", LINKTYPE_ETHERNET, timed(us, frames))


def make_sll():
    # Captured on 10.5.0.1 ("any" device): its own packets are OUTGOING.
    c, s = ip4("10.5.0.1"), ip4("10.5.0.2")
    ips = [icmp_echo(c, s, True, 77, 1, ip_id=0x7001), icmp_echo(s, c, False, 77, 1, ip_id=0x8001),
           icmp_echo(c, s, True, 77, 2, ip_id=0x7002), icmp_echo(s, c, False, 77, 2, ip_id=0x8002)]
    conv = TcpConv(c, 45000, s, 23, cisn=7_000_000, sisn=0, sttl=64, cid=0x7003, sid=0)
    syn = conv.syn()
    # A closed port answers RST/ACK with seq 0 and ack = ISN + 1 (RFC 793).
    rst = ipv4(s, c, IPPROTO_TCP,
               tcp_segment(s, c, 23, 45000, 0, 7_000_001, RST | ACK, 0), ttl=64, ident=0)
    ips += [syn, rst]
    frames = [sll(SLL_OUTGOING, MAC_C, p) if p[12:16] == c else sll(SLL_HOST, MAC_S, p)
              for p in ips]
    us = [0, 480, 1_000_000, 1_000_510, 2_000_000, 2_000_350]
    write_pcap("sll.pcap", LINKTYPE_LINUX_SLL, timed(us, frames))


def make_sll2():
    c, s = ip4("10.7.0.1"), ip4("10.7.0.2")
    conv = TcpConv(c, 41000, s, 8080, cisn=8_000_000, sisn=9_000_000)
    ips = tcp9(conv, HTTP_REQ % b"10.7.0.2:8080", HTTP_RESP)
    frames = [sll2(SLL_OUTGOING, 2, MAC_C, p) if p[12:16] == c else sll2(SLL_HOST, 2, MAC_S, p)
              for p in ips]
    write_pcap("sll2.pcap", LINKTYPE_LINUX_SLL2, timed(TCP9_US, frames))


def make_raw_ip():
    c, s = ip4("10.8.0.1"), ip4("10.8.0.2")
    c6, s6 = ip6("2001:db8:8::1"), ip6("2001:db8:8::2")
    ips = [
        udp4(c, s, 50001, 7, b"echo me over IPv4", ip_id=0x0101),
        udp4(s, c, 7, 50001, b"echo me over IPv4", ip_id=0x0201),
        udp6(c6, s6, 50002, 7, b"echo me over IPv6"),
        udp6(s6, c6, 7, 50002, b"echo me over IPv6"),
        icmp_echo(c, s, True, 0x0808, 1, ip_id=0x0102),
        icmp_echo(s, c, False, 0x0808, 1, ip_id=0x0202),
        icmpv6_echo(c6, s6, True, 0x0808, 1),
        icmpv6_echo(s6, c6, False, 0x0808, 1),
    ]
    us = [0, 300, 1_000_000, 1_000_300, 2_000_000, 2_000_300, 3_000_000, 3_000_300]
    write_pcap("raw_ip.pcap", LINKTYPE_RAW, timed(us, ips))


def make_ns_be():
    c, s = ip4("10.9.0.1"), ip4("10.9.0.2")
    conv = TcpConv(c, 42000, s, 80, cisn=10_000_000, sisn=11_000_000)
    ips = tcp9(conv, HTTP_REQ % b"10.9.0.2", HTTP_RESP)
    frames = [eth(MAC_S, MAC_C, ETH_IPV4, p, pad=True) if p[12:16] == c else
              eth(MAC_C, MAC_S, ETH_IPV4, p, pad=True) for p in ips]
    # Nanosecond timestamps with non-zero sub-microsecond digits.
    ns = [0, 20_150_123, 20_310_456, 20_420_789, 41_050_001, 41_120_999,
          1_041_200_500, 1_061_400_250, 1_061_480_875]
    recs = [Rec(T0 + t, f) for t, f in zip(ns, frames)]
    write_pcap("ns_be.pcap", LINKTYPE_ETHERNET, recs, big_endian=True, nanosecond=True)


def make_basic_pcapng():
    c, s = ip4("10.10.0.1"), ip4("10.10.0.2")
    conv = TcpConv(c, 43000, s, 80, cisn=12_000_000, sisn=13_000_000)
    tcp_frames = [eth(MAC_S, MAC_C, ETH_IPV4, p) if p[12:16] == c else
                  eth(MAC_C, MAC_S, ETH_IPV4, p)
                  for p in tcp9(conv, HTTP_REQ % b"10.10.0.2", HTTP_RESP)]
    ic, is_ = ip4("10.11.0.1"), ip4("10.11.0.2")
    icmp_frames = [
        eth(MAC_R, MAC_C, ETH_IPV4, icmp_echo(ic, is_, True, 0x0B0B, 1, ip_id=0x0B01)),
        eth(MAC_C, MAC_R, ETH_IPV4, icmp_echo(is_, ic, False, 0x0B0B, 1, ttl=128, ip_id=0x0C01)),
        eth(MAC_R, MAC_C, ETH_IPV4, icmp_echo(ic, is_, True, 0x0B0B, 2, ip_id=0x0B02)),
        eth(MAC_C, MAC_R, ETH_IPV4, icmp_echo(is_, ic, False, 0x0B0B, 2, ttl=128, ip_id=0x0C02)),
    ]
    # Interface 0 (eth0) has µs resolution, interface 1 (eth1) ns resolution;
    # the ICMP packets carry sub-µs digits that only the ns interface can hold.
    recs = [(0, r) for r in timed(TCP9_US, tcp_frames)]
    icmp_ns = [10_000_250, 30_000_750, 1_010_000_125, 1_030_000_875]
    recs += [(1, Rec(T0 + t, f)) for t, f in zip(icmp_ns, icmp_frames)]
    recs.sort(key=lambda ir: ir[1].ts)
    write_pcapng("basic.pcapng", [(LINKTYPE_ETHERNET, "eth0", 6), (LINKTYPE_ETHERNET, "eth1", 9)],
                 recs)


def make_icmp_error():
    a, b, c, r = ip4("10.6.0.1"), ip4("10.6.0.2"), ip4("10.6.0.3"), ip4("10.6.0.254")
    probe1 = udp4(a, b, 33000, 161, snmp_get(0x00C0FFEE), ip_id=0x6601)
    # A host quotes the whole offending datagram (Linux behaviour).
    unreach1 = ipv4(b, a, IPPROTO_ICMP, icmp_message(3, 3, b"\x00" * 4, probe1),
                    ttl=64, ident=0x9901, df=False)
    probe2 = udp4(a, c, 33001, 161, snmp_get(0x00C0FFEF), ip_id=0x6602)
    # A router quotes the IP header + first 8 bytes (RFC 792 minimum).
    unreach2 = ipv4(r, a, IPPROTO_ICMP, icmp_message(3, 1, b"\x00" * 4, probe2[:28]),
                    ttl=255, ident=0xFE01, df=False, tos=0xC0)
    frames = [eth(MAC_R, MAC_C, ETH_IPV4, probe1), eth(MAC_C, MAC_R, ETH_IPV4, unreach1),
              eth(MAC_R, MAC_C, ETH_IPV4, probe2), eth(MAC_C, MAC_R, ETH_IPV4, unreach2)]
    write_pcap("icmp_error.pcap", LINKTYPE_ETHERNET, timed([0, 700, 1_000_000, 1_002_100], frames))


def make_truncated():
    c, s, d = ip4("10.12.0.1"), ip4("10.12.0.2"), ip4("10.12.0.3")
    conv = TcpConv(c, 44000, s, 80, cisn=14_000_000, sisn=15_000_000)
    ips = [conv.syn(), conv.synack(), conv.ack(True),
           udp4(c, d, 55000, 53, dns_query(0x2B01, "edgewatch.example", 1), ip_id=0x2B01),
           udp4(d, c, 53, 55000, dns_response(0x2B01, "edgewatch.example", 1, ip4("192.0.2.10")),
                ttl=128, ip_id=0x2B02, df=False),
           conv.data(True, HTTP_REQ % b"10.12.0.2")]
    frames = [eth(MAC_R, MAC_C, ETH_IPV4, p) if p[12:16] == c else eth(MAC_C, MAC_R, ETH_IPV4, p)
              for p in ips]
    recs = timed([0, 20_000, 20_100, 30_000, 31_000, 40_000], frames)
    recs[-1].cut = 40  # header says full length, only 40 bytes of data follow
    write_pcap("truncated.pcap", LINKTYPE_ETHERNET, recs)


def make_malformed():
    c, s, x = ip4("10.13.0.1"), ip4("10.13.0.2"), ip4("10.13.0.66")
    good1 = udp4(c, s, 40000, 9999, b"normal packet 1", ip_id=0x0D01)
    good2 = udp4(s, c, 9999, 40000, b"normal packet 2", ip_id=0x0D02)
    udp_x = udp_datagram(x, s, 40100, 9999, b"bad-ip")
    ihl4 = ipv4(x, s, IPPROTO_UDP, udp_x, ident=0x0D03, ihl=4)
    too_long = ipv4(x, s, IPPROTO_UDP, udp_x, ident=0x0D04, total_length=1500)
    bad_doff = ipv4(x, s, IPPROTO_TCP,
                    tcp_segment(x, s, 40200, 80, 1, 0, SYN, 64240, data_offset=3),
                    ident=0x0D05)
    v6 = udp6(ip6("fd00:13::66"), ip6("fd00:13::2"), 40300, 9999, b"cut")[:20]
    jumbo = udp4(c, s, 40001, 9000, bytes(i & 0xFF for i in range(9000 - 14 - 28)),
                 ip_id=0x0D06)
    frames = [
        b"",  # 1: zero-length frame
        (MAC_S + MAC_C)[:10],  # 2: 10 bytes, not even an Ethernet header
        eth(MAC_S, MAC_C, ETH_IPV4, good1),  # 3: normal UDP
        eth(MAC_S, MAC_C, ETH_IPV4, ihl4),  # 4: IPv4 IHL = 4
        eth(MAC_S, MAC_C, ETH_IPV4, too_long),  # 5: IPv4 total length 1500 > frame
        eth(MAC_C, MAC_S, ETH_IPV4, good2),  # 6: normal UDP (reply)
        eth(MAC_S, MAC_C, ETH_IPV4, bad_doff),  # 7: TCP data offset = 3
        eth(MAC_S, MAC_C, ETH_IPV6, v6),  # 8: IPv6 header cut at 20 of 40 bytes
        lldp_frame(),  # 9: LLDP, ethertype 0x88cc
        eth(MAC_S, MAC_C, ETH_IPV4, jumbo),  # 10: 9000-byte frame, valid UDP
    ]
    assert len(frames[9]) == 9000
    us = [0, 1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 7_000, 8_000, 9_000]
    write_pcap("malformed.pcap", LINKTYPE_ETHERNET, timed(us, frames))


def make_backwards_time():
    c, s = ip4("10.14.0.1"), ip4("10.14.0.2")
    conv = TcpConv(c, 46000, s, 80, cisn=16_000_000, sisn=17_000_000)
    ips = tcp9(conv, HTTP_REQ % b"10.14.0.2", HTTP_RESP)
    frames = [eth(MAC_R, MAC_C, ETH_IPV4, p) if p[12:16] == c else eth(MAC_C, MAC_R, ETH_IPV4, p)
              for p in ips]
    # Packets 5..9 are stamped 10 s earlier than they happened (clock step back).
    us = [0, 20_000, 20_100, 20_200, 40_000, 40_100, 1_000_000, 1_020_000, 1_020_100]
    us = [t if i < 4 else t - 10_000_000 for i, t in enumerate(us)]
    write_pcap("backwards_time.pcap", LINKTYPE_ETHERNET, timed(us, frames))


def make_not_a_capture():
    save("not_a_capture.txt",
         b"This is not a packet capture.\n"
         b"edgewatch must reject it with a clear error instead of parsing it.\n")


def main():
    if len(sys.argv) > 1:
        sys.exit("usage: make_captures.py  (no arguments; writes into %s)" % OUT_DIR)
    make_vlan()
    make_qinq()
    make_pppoe()
    make_ipv6_ext()
    make_ipv4_frag()
    make_sll()
    make_sll2()
    make_raw_ip()
    make_ns_be()
    make_basic_pcapng()
    make_icmp_error()
    make_truncated()
    make_malformed()
    make_backwards_time()
    make_not_a_capture()


if __name__ == "__main__":
    main()
