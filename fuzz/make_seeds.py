#!/usr/bin/env python3
"""Writes the committed seed corpora under fuzz/seeds/ from tests/data and the sources.

Run from the repository root: python3 fuzz/make_seeds.py (the edgewatch binary must be built,
for `generate-config`). The seeds are small on purpose: libFuzzer grows its own corpus from them.
"""
import hashlib
import os
import struct
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
SEEDS = os.path.join(ROOT, "fuzz", "seeds")

# parse_frame's first input byte: index into LinkType::ALL (src/parse.rs), by pcap link type.
LINK_INDEX = {1: 0, 101: 1, 12: 1, 14: 1, 228: 1, 229: 1, 113: 2, 276: 3, 0: 4, 108: 5, 9: 6,
              50: 6, 104: 7, 239: 8}
PUBLIC = os.path.join(DATA, "public")


def write(target, data, name=None):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    name = name or hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def pcap_records(path, with_time=False):
    raw = open(path, "rb").read()
    magic = raw[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nanos = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(endian + "I", raw[20:24])[0] & 0x03FFFFFF
    at = 24
    while at + 16 <= len(raw):
        sec, frac, incl, orig = struct.unpack(endian + "IIII", raw[at : at + 16])
        data = raw[at + 16 : at + 16 + incl]
        if len(data) < incl:
            return
        us = sec * 1_000_000 + (frac // 1000 if nanos else frac)
        yield (linktype, data, orig, us) if with_time else (linktype, data, orig)
        at += 16 + incl


def frames():
    for name in ["vlan.pcap", "qinq.pcap", "pppoe.pcap", "ipv6_ext.pcap", "icmp_error.pcap",
                 "ipv4_frag.pcap", "sll.pcap", "sll2.pcap", "raw_ip.pcap", "malformed.pcap"]:
        kept = 0
        for linktype, data, orig in pcap_records(os.path.join(DATA, name)):
            if len(data) > 200 or kept == 3:
                continue
            kept += 1
            extra = max(orig - len(data), 0)
            write("parse_frame", bytes([LINK_INDEX[linktype]]) + struct.pack(">H", extra) + data)
            if linktype == 101 and kept == 1:
                # BSD loopback: the same IP packet behind a 4-byte AF_INET in host order.
                write("parse_frame", bytes([4, 0, 0]) + struct.pack("<I", 2) + data)


def captures():
    for name in ["basic.pcapng", "truncated.pcap", "sll.pcap", "ns_be.pcap", "raw_ip.pcap",
                 "icmp_error.pcap", "qinq.pcap"]:
        write("capture_file", open(os.path.join(DATA, name), "rb").read(), name)
    for name in ["udp-length-heapoverflow.pcap", "timestamp_invalid_nano.pcap", "ospf-sr.pcapng",
                 "vsock-1.pcapng", "dhcp_big_endian.pcapng"]:
        write("capture_file", open(os.path.join(PUBLIC, name), "rb").read(), name)


def pipeline():
    """Whole captures as the pipeline target's records: [µs, 8 bytes BE][link][length, 2 BE][frame]."""
    def records(path, limit=None, shift=0):
        out = b""
        for n, (linktype, data, _, us) in enumerate(pcap_records(path, with_time=True)):
            if limit is not None and n == limit:
                break
            out += struct.pack(">QBH", us + shift, LINK_INDEX[linktype], len(data)) + data
        return out
    for name in ["vlan.pcap", "icmp_error.pcap", "ipv4_frag.pcap", "ipv6_ext.pcap",
                 "backwards_time.pcap", "pppoe.pcap", "sll.pcap"]:
        write("pipeline", records(os.path.join(DATA, name)), name)
    # The lab capture's start (a brute force), and the same packets dated after the year 9999.
    lab = os.path.join(DATA, "lab-mini.pcap")
    write("pipeline", records(lab, limit=40), "lab-start")
    write("pipeline", records(lab, limit=40, shift=260_000_000_000_000_000), "lab-after-9999")
    write("pipeline", records(os.path.join(PUBLIC, "timestamp_invalid_micro.pcap")),
          "timestamp_invalid_micro")


def configs():
    exe = os.path.join(ROOT, "target", "debug", "edgewatch")
    default = subprocess.run([exe, "generate-config"], check=True, capture_output=True).stdout
    write("config", default, "default.toml")
    write("config", b'sensor_id = "r1"\n[mqtt]\nurl = "mqtts://broker.example:8883"\n'
          b'ca_file = "/etc/ca.pem"\nprotocol = "3.1.1"\n', "mqtts.toml")
    write("config", b"[flow]\nworkers = 2\nmax_flows = 1024\nudp_timeout_s = 1e3\n"
          b"[host]\nshort_window_s = 1.5\nlong_window_s = 30\n[model]\nthreshold = 0.7\n",
          "small.toml")


def alerts():
    alert = (b'{"timestamp":"2024-05-01T12:00:00.000001+0000","event_type":"alert","host":"r1",'
             b'"flow_id":7,"community_id":"1:LQU9qZlK+B5F3KDmev6m5PMibrg=","src_ip":"10.0.0.1",'
             b'"src_port":1234,"dest_ip":"10.0.0.2","dest_port":80,"proto":"TCP","vlan":[100],'
             b'"alert":{"action":"allowed","gid":1,"signature_id":9100001,"rev":1,'
             b'"signature":"EDGEWATCH Network scan","category":"Detection of a Network Scan",'
             b'"severity":2,"source":{"ip":"10.0.0.1"},"target":{"ip":"10.0.0.2"},'
             b'"context":{"edgewatch":{"sensor_id":"r1","alert_id":"0123456789abcdef0123456789abcdef",'
             b'"update":1,"final":true,"class":"scan","score":0.9,"model":{"name":"m","version":"1"},'
             b'"count":8,"first_seen":"2024-05-01T12:00:00.000000+0000",'
             b'"last_seen":"2024-05-01T12:00:00.000001+0000","evidence":{"window_s":0.5,"flows":8,'
             b'"targets":8,"hosts":1,"ports":8,"unanswered":8}}}},"flow":{"pkts_toserver":1,'
             b'"pkts_toclient":0,"bytes_toserver":60,"bytes_toclient":0,'
             b'"start":"2024-05-01T12:00:00.000001+0000","end":"2024-05-01T12:00:00.000001+0000"}}')
    write("alert_message", b"\x00" + alert, "alert")
    write("alert_message", b"\x01" + b'{"status":"online","version":"0.1.0","mode":"run",'
          b'"started":"2024-05-01T12:00:00Z","model":{"name":"m","version":"2"}}', "status")
    write("alert_message", b"\x02" + b'{"sensor_id":"r1","packets":10,"kernel_drops":1,'
          b'"queue_drops":2,"outbox_depth":3,"alerts_published":4,"uptime_s":5}', "stats")
    write("alert_message", b"\x03edgewatch/v1/r1/alert\n" + alert, "topic")


if __name__ == "__main__":
    frames()
    captures()
    pipeline()
    configs()
    alerts()
    for t in sorted(os.listdir(SEEDS)):
        files = os.listdir(os.path.join(SEEDS, t))
        size = sum(os.path.getsize(os.path.join(SEEDS, t, f)) for f in files)
        print(f"{t}: {len(files)} seeds, {size} bytes", file=sys.stderr)
