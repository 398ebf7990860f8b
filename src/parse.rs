//! Frame parsing: one checked pass turns a captured frame into a [`PacketMeta`].
//!
//! The link layers (Ethernet with any stack of 802.1Q/802.1ad tags, PPPoE session, Linux cooked
//! SLL and SLL2, raw IP, BSD loopback, PPP, Cisco HDLC, Linux NFLOG) are read here with explicit
//! length checks; the IP layer and
//! everything above it is sliced by etherparse in lax mode, so frames cut by a snap length still
//! yield their headers. A frame that cannot be used is returned as a [`Skip`] reason, which the
//! caller counts; nothing in here panics or allocates. Fragment attribution is not done here
//! (it needs state): see `dispatch`.

use std::net::IpAddr;

use etherparse::{Icmpv4Slice, Icmpv6Slice, LaxIpSlice, TcpSlice, UdpSlice};

use crate::packet::{
    Fragment, Micros, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, PacketKind, PacketMeta,
};

/// Link-layer header types we read (pcap LINKTYPE_* numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    Ethernet,
    /// Raw IPv4/IPv6 without a link header (LINKTYPE_RAW, _IPV4, _IPV6).
    RawIp,
    /// Linux cooked capture v1.
    LinuxSll,
    /// Linux cooked capture v2.
    LinuxSll2,
    /// BSD loopback: a 4-byte address family in the capturing host's byte order (either).
    Null,
    /// OpenBSD loopback: the same family in network byte order.
    Loop,
    /// PPP, with or without the HDLC address and control bytes (LINKTYPE_PPP, _PPP_HDLC).
    Ppp,
    /// Cisco HDLC: address, control, then an Ethertype.
    CiscoHdlc,
    /// Linux NFLOG: a header, then type-length-value attributes, one of them the packet.
    Nflog,
}

impl LinkType {
    pub const ALL: [LinkType; 9] = [
        LinkType::Ethernet,
        LinkType::RawIp,
        LinkType::LinuxSll,
        LinkType::LinuxSll2,
        LinkType::Null,
        LinkType::Loop,
        LinkType::Ppp,
        LinkType::CiscoHdlc,
        LinkType::Nflog,
    ];

    /// Maps a pcap link-type number; `None` when we cannot read that link type.
    pub fn from_linktype(number: u32) -> Option<LinkType> {
        match number {
            1 => Some(LinkType::Ethernet),
            12 | 14 | 101 | 228 | 229 => Some(LinkType::RawIp),
            113 => Some(LinkType::LinuxSll),
            276 => Some(LinkType::LinuxSll2),
            0 => Some(LinkType::Null),
            108 => Some(LinkType::Loop),
            9 | 50 => Some(LinkType::Ppp),
            104 => Some(LinkType::CiscoHdlc),
            239 => Some(LinkType::Nflog),
            _ => None,
        }
    }
}

/// Why a frame was skipped. Each reason has its own counter in the stats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The link-layer header is cut short.
    TruncatedLink,
    /// Not IP (ARP, LLDP, PPPoE discovery, ...): ignored, not malformed.
    NotIp,
    /// The IP header is malformed or cut short.
    BadIp,
    /// The TCP/UDP/ICMP header is malformed or cut short.
    BadTransport,
    /// An IP protocol other than TCP, UDP, ICMP and ICMPv6.
    OtherProtocol,
}

impl Skip {
    pub const ALL: [Skip; 5] = [
        Skip::TruncatedLink,
        Skip::NotIp,
        Skip::BadIp,
        Skip::BadTransport,
        Skip::OtherProtocol,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Skip::TruncatedLink => "truncated_link",
            Skip::NotIp => "not_ip",
            Skip::BadIp => "bad_ip",
            Skip::BadTransport => "bad_transport",
            Skip::OtherProtocol => "other_protocol",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
const ETHERTYPE_PPPOE_SESSION: u16 = 0x8864;
const PPP_IPV4: u16 = 0x0021;
const PPP_IPV6: u16 = 0x0057;
/// More tags than this is not a real network; the frame is skipped as malformed.
const MAX_VLAN_TAGS: usize = 4;

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Parses one captured frame. `wire_len` is the frame's length on the wire: a frame cut by the
/// capture's snap length is fine, but an IP header claiming more bytes than the wire carried is
/// malformed.
pub fn parse_frame(
    link: LinkType,
    ts: Micros,
    frame: &[u8],
    wire_len: u32,
) -> Result<PacketMeta, Skip> {
    let mut vlan = [0u16; 2];
    let ip = match link {
        LinkType::Ethernet => ethernet_payload(frame, &mut vlan)?,
        LinkType::RawIp => frame,
        LinkType::LinuxSll => {
            // 16-byte header, protocol (ethertype) at offset 14.
            let ethertype = be16(frame, 14).ok_or(Skip::TruncatedLink)?;
            ethertype_payload(ethertype, &frame[16..], &mut vlan)?
        }
        LinkType::LinuxSll2 => {
            // 20-byte header, protocol (ethertype) at offset 0.
            let ethertype = be16(frame, 0).ok_or(Skip::TruncatedLink)?;
            if frame.len() < 20 {
                return Err(Skip::TruncatedLink);
            }
            ethertype_payload(ethertype, &frame[20..], &mut vlan)?
        }
        LinkType::Null | LinkType::Loop => {
            let family = frame.get(0..4).ok_or(Skip::TruncatedLink)?;
            let family = [family[0], family[1], family[2], family[3]];
            // Null is in the capturing host's order: a family has no bits in the upper half.
            let family = match (link, u32::from_le_bytes(family)) {
                (LinkType::Null, le) if le <= 0xffff => le,
                _ => u32::from_be_bytes(family),
            };
            // AF_INET is 2 everywhere; AF_INET6 is 24, 28 or 30 depending on the BSD.
            match family {
                2 | 24 | 28 | 30 => &frame[4..],
                _ => return Err(Skip::NotIp),
            }
        }
        LinkType::Ppp => ppp_payload(frame)?,
        LinkType::CiscoHdlc => {
            let ethertype = be16(frame, 2).ok_or(Skip::TruncatedLink)?;
            ethertype_payload(ethertype, &frame[4..], &mut vlan)?
        }
        LinkType::Nflog => nflog_payload(frame)?,
    };
    let link_header = frame.len() - ip.len();
    let ip_on_wire = (wire_len as usize).max(frame.len()) - link_header;
    let meta = parse_ip(ts, ip, vlan)?;
    if usize::from(meta.ip_len) > ip_on_wire {
        return Err(Skip::BadIp);
    }
    Ok(meta)
}

/// PPP: the HDLC address and control bytes (0xff 0x03) when present, then the protocol, one byte
/// when compressed (odd) or two. A frame that starts with Cisco HDLC's address (0x0f, 0x8f) is
/// Cisco HDLC, which LINKTYPE_PPP_HDLC captures may hold too.
fn ppp_payload(frame: &[u8]) -> Result<&[u8], Skip> {
    let rest = match frame {
        [0xff, 0x03, rest @ ..] => rest,
        [0x0f | 0x8f, _, ..] => {
            let ethertype = be16(frame, 2).ok_or(Skip::TruncatedLink)?;
            return ethertype_payload(ethertype, &frame[4..], &mut [0; 2]);
        }
        rest => rest,
    };
    let (protocol, payload) = match rest {
        [p, payload @ ..] if p & 1 == 1 => (u16::from(*p), payload),
        [hi, lo, payload @ ..] => (u16::from_be_bytes([*hi, *lo]), payload),
        _ => return Err(Skip::TruncatedLink),
    };
    match protocol {
        PPP_IPV4 | PPP_IPV6 => Ok(payload),
        _ => Err(Skip::NotIp),
    }
}

/// NFLOG's attribute holding the packet (NFULA_PAYLOAD).
const NFULA_PAYLOAD: u16 = 9;

/// Linux NFLOG: family, version and resource id (4 bytes), then attributes of a length (which
/// counts its 4-byte header) and a type, both in the capturing host's byte order, each padded to
/// 4 bytes. The packet is the payload attribute, an IP packet.
fn nflog_payload(frame: &[u8]) -> Result<&[u8], Skip> {
    let mut rest = frame.get(4..).ok_or(Skip::TruncatedLink)?;
    // The byte order is the one in which the first attribute's length fits the frame.
    let little = match rest.get(0..2) {
        Some(&[a, b]) => {
            let le = usize::from(u16::from_le_bytes([a, b]));
            (4..=rest.len()).contains(&le)
        }
        _ => return Err(Skip::TruncatedLink),
    };
    let field = |b: &[u8]| {
        let pair = [b[0], b[1]];
        if little {
            u16::from_le_bytes(pair)
        } else {
            u16::from_be_bytes(pair)
        }
    };
    while rest.len() >= 4 {
        let len = usize::from(field(&rest[0..2]));
        let kind = field(&rest[2..4]) & 0x7fff;
        let value = rest.get(4..len).ok_or(Skip::TruncatedLink)?;
        if kind == NFULA_PAYLOAD {
            return Ok(value);
        }
        rest = rest.get(len.div_ceil(4) * 4..).unwrap_or_default();
    }
    Err(Skip::NotIp)
}

/// Walks Ethernet, VLAN tags and PPPoE down to the IP header.
fn ethernet_payload<'a>(frame: &'a [u8], vlan: &mut [u16; 2]) -> Result<&'a [u8], Skip> {
    let ethertype = be16(frame, 12).ok_or(Skip::TruncatedLink)?;
    if frame.len() < 14 {
        return Err(Skip::TruncatedLink);
    }
    ethertype_payload(ethertype, &frame[14..], vlan)
}

fn ethertype_payload<'a>(
    mut ethertype: u16,
    mut rest: &'a [u8],
    vlan: &mut [u16; 2],
) -> Result<&'a [u8], Skip> {
    let mut tags = 0;
    loop {
        match ethertype {
            ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => return Ok(rest),
            ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD => {
                let tci = be16(rest, 0).ok_or(Skip::TruncatedLink)?;
                let next = be16(rest, 2).ok_or(Skip::TruncatedLink)?;
                if tags >= MAX_VLAN_TAGS {
                    return Err(Skip::TruncatedLink);
                }
                if tags < 2 {
                    vlan[tags] = tci & 0x0fff;
                }
                tags += 1;
                ethertype = next;
                rest = &rest[4..];
            }
            ETHERTYPE_PPPOE_SESSION => {
                // ver/type, code, session id, length, then the 2-byte PPP protocol.
                let protocol = be16(rest, 6).ok_or(Skip::TruncatedLink)?;
                let payload = &rest[8..];
                return match protocol {
                    PPP_IPV4 | PPP_IPV6 => Ok(payload),
                    _ => Err(Skip::NotIp),
                };
            }
            _ => return Err(Skip::NotIp),
        }
    }
}

/// Ports (or ICMP identifier) from the first bytes of a transport header, for packets whose
/// transport layer etherparse could not slice (first fragments, quoted packets in ICMP errors).
fn l4_prefix(proto: u8, l4: &[u8]) -> Option<(u16, u16, u8, u8)> {
    match proto {
        PROTO_TCP | PROTO_UDP => Some((be16(l4, 0)?, be16(l4, 2)?, 0, 0)),
        PROTO_ICMP | PROTO_ICMPV6 => {
            let (t, c) = (*l4.first()?, *l4.get(1)?);
            if is_echo(proto, t) {
                let id = be16(l4, 4)?;
                Some((id, id, t, c))
            } else {
                Some((u16::from(t), u16::from(c), t, c))
            }
        }
        _ => None,
    }
}

fn is_echo(proto: u8, icmp_type: u8) -> bool {
    match proto {
        PROTO_ICMP => icmp_type == 0 || icmp_type == 8,
        _ => icmp_type == 128 || icmp_type == 129,
    }
}

fn is_icmp_error(proto: u8, icmp_type: u8) -> bool {
    match proto {
        PROTO_ICMP => matches!(icmp_type, 3 | 4 | 5 | 11 | 12),
        _ => matches!(icmp_type, 1..=4),
    }
}

struct IpInfo {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    ttl: u8,
    ip_len: u16,
    header_len: usize,
    fragment: Option<Fragment>,
    /// True for a fragment other than the first.
    later_fragment: bool,
}

fn ip_info(net: &LaxIpSlice<'_>, captured: usize) -> IpInfo {
    match net {
        LaxIpSlice::Ipv4(v4) => {
            let h = v4.header();
            let offset = h.fragments_offset().value();
            let fragment = (h.more_fragments() || offset != 0).then(|| Fragment {
                id: u32::from(h.identification()),
                more: h.more_fragments(),
            });
            let header_len = usize::from(h.ihl()) * 4;
            let declared = h.total_len();
            IpInfo {
                src: IpAddr::V4(h.source_addr()),
                dst: IpAddr::V4(h.destination_addr()),
                proto: v4.payload().ip_number.0,
                ttl: h.ttl(),
                // A total length of 0 (TCP segmentation offload on the capturing host): the
                // captured bytes, up to what the field can hold.
                ip_len: if declared == 0 {
                    captured.min(usize::from(u16::MAX)) as u16
                } else {
                    declared
                },
                header_len,
                fragment,
                later_fragment: offset != 0,
            }
        }
        LaxIpSlice::Ipv6(v6) => {
            let h = v6.header();
            let (fragment, later_fragment) =
                ipv6_fragment(h.next_header().0, v6.extensions().slice()).unwrap_or((None, false));
            let declared = h.payload_length();
            IpInfo {
                src: IpAddr::V6(h.source_addr()),
                dst: IpAddr::V6(h.destination_addr()),
                proto: v6.payload().ip_number.0,
                ttl: h.hop_limit(),
                ip_len: if declared == 0 {
                    captured.min(usize::from(u16::MAX)) as u16
                } else {
                    declared.saturating_add(40)
                },
                header_len: 40 + v6.extensions().slice().len(),
                fragment,
                later_fragment,
            }
        }
    }
}

/// The fragment header among IPv6 extension headers, walked with every length checked (the
/// extension iterator of etherparse 0.21 trusts a length that lax slicing did not check, and
/// reads past the slice). `first` is the IPv6 header's next header. Returns the fragment (when
/// the packet is one) and whether it is a later fragment; `None` when a header is cut short.
fn ipv6_fragment(first: u8, mut ext: &[u8]) -> Option<(Option<Fragment>, bool)> {
    const HOP_BY_HOP: u8 = 0;
    const ROUTING: u8 = 43;
    const FRAGMENT: u8 = 44;
    const AUTH: u8 = 51;
    const DEST_OPTIONS: u8 = 60;
    let mut next = first;
    while !ext.is_empty() {
        let len = match next {
            HOP_BY_HOP | ROUTING | DEST_OPTIONS => (usize::from(*ext.get(1)?) + 1) * 8,
            AUTH => (usize::from(*ext.get(1)?) + 2) * 4,
            FRAGMENT => {
                let f = ext.get(..8)?;
                let offset = u16::from_be_bytes([f[2], f[3]]) >> 3;
                let more = f[3] & 1 != 0;
                if !more && offset == 0 {
                    return Some((None, false));
                }
                let id = u32::from_be_bytes([f[4], f[5], f[6], f[7]]);
                return Some((Some(Fragment { id, more }), offset != 0));
            }
            _ => return Some((None, false)),
        };
        next = ext[0];
        ext = ext.get(len..)?;
    }
    Some((None, false))
}

/// Parses an IP packet (and what it carries) into a `PacketMeta`.
pub fn parse_ip(ts: Micros, ip: &[u8], vlan: [u16; 2]) -> Result<PacketMeta, Skip> {
    // The IP layer and then the transport header, each sliced on its own: etherparse's
    // `LaxSlicedPacket` does the same in one call, but is a 328-byte value that is copied on
    // the way out (memcpy was 6 % of replay's CPU time). The transport is sliced as lax slicing
    // does it: not for a fragment, nor when an IPv6 extension header is cut short.
    let (net, ext_error) = LaxIpSlice::from_slice(ip).map_err(|_| Skip::BadIp)?;
    let info = ip_info(&net, ip.len());
    if !matches!(
        info.proto,
        PROTO_TCP | PROTO_UDP | PROTO_ICMP | PROTO_ICMPV6
    ) {
        return Err(Skip::OtherProtocol);
    }
    let mut meta = PacketMeta {
        ts,
        seq: 0,
        vlan,
        src: info.src,
        dst: info.dst,
        sport: 0,
        dport: 0,
        proto: info.proto,
        ip_len: info.ip_len,
        payload_len: 0,
        tcp_flags: 0,
        tcp_window: 0,
        ttl: info.ttl,
        icmp_type: 0,
        icmp_code: 0,
        kind: PacketKind::Normal,
        fragment: info.fragment,
    };
    let l3_payload = usize::from(info.ip_len).saturating_sub(info.header_len);

    if info.later_fragment {
        meta.kind = PacketKind::LaterFragment;
        meta.payload_len = clamp16(l3_payload);
        return Ok(meta);
    }

    let payload = net.payload();
    let transport = (!payload.fragmented && ext_error.is_none()).then_some(payload.payload);
    match transport.and_then(|t| Transport::slice(info.proto, t)) {
        Some(Transport::Tcp(tcp)) => {
            meta.sport = tcp.source_port();
            meta.dport = tcp.destination_port();
            meta.tcp_flags = tcp_flag_byte(tcp.header_slice());
            meta.tcp_window = tcp.window_size();
            let header = usize::from(tcp.data_offset()) * 4;
            meta.payload_len = clamp16(l3_payload.saturating_sub(header));
        }
        Some(Transport::Udp(udp)) => {
            meta.sport = udp.source_port();
            meta.dport = udp.destination_port();
            meta.payload_len = clamp16(l3_payload.saturating_sub(8));
        }
        Some(Transport::Icmpv4(icmp)) => {
            icmp_fields(&mut meta, PROTO_ICMP, icmp.slice(), l3_payload)?;
        }
        Some(Transport::Icmpv6(icmp)) => {
            icmp_fields(&mut meta, PROTO_ICMPV6, icmp.slice(), l3_payload)?;
        }
        None => {
            // The transport of a first fragment is not sliced; its first bytes are still the
            // transport header.
            let payload = payload.payload;
            if info.fragment.is_some() {
                let (sport, dport, t, c) =
                    l4_prefix(info.proto, payload).ok_or(Skip::BadTransport)?;
                meta.sport = sport;
                meta.dport = dport;
                meta.icmp_type = t;
                meta.icmp_code = c;
                if info.proto == PROTO_TCP {
                    meta.tcp_flags = payload.get(13).copied().unwrap_or(0);
                    meta.tcp_window = be16(payload, 14).unwrap_or(0);
                }
                meta.payload_len = clamp16(l3_payload);
            } else {
                return Err(Skip::BadTransport);
            }
        }
    }
    Ok(meta)
}

/// A transport header sliced by etherparse.
enum Transport<'a> {
    Tcp(TcpSlice<'a>),
    Udp(UdpSlice<'a>),
    Icmpv4(Icmpv4Slice<'a>),
    Icmpv6(Icmpv6Slice<'a>),
}

impl<'a> Transport<'a> {
    /// The header of protocol `proto` at the start of `payload`, as etherparse's lax slicing
    /// reads it (UDP: lax, the length field may exceed what was captured); `None` when it is
    /// cut short or malformed.
    fn slice(proto: u8, payload: &'a [u8]) -> Option<Transport<'a>> {
        match proto {
            PROTO_TCP => TcpSlice::from_slice(payload).ok().map(Transport::Tcp),
            PROTO_UDP => UdpSlice::from_slice_lax(payload).ok().map(Transport::Udp),
            PROTO_ICMP => Icmpv4Slice::from_slice(payload).ok().map(Transport::Icmpv4),
            PROTO_ICMPV6 => Icmpv6Slice::from_slice(payload).ok().map(Transport::Icmpv6),
            _ => None,
        }
    }
}

fn clamp16(n: usize) -> u16 {
    n.min(usize::from(u16::MAX)) as u16
}

/// The flag byte (FIN..CWR) of a TCP header that etherparse already length-checked.
fn tcp_flag_byte(header: &[u8]) -> u8 {
    header.get(13).copied().unwrap_or(0)
}

/// Fills the ICMP fields. ICMP errors take the 5-tuple of the packet they quote.
fn icmp_fields(
    meta: &mut PacketMeta,
    proto: u8,
    icmp: &[u8],
    l3_payload: usize,
) -> Result<(), Skip> {
    let (sport, dport, t, c) = l4_prefix(proto, icmp).ok_or(Skip::BadTransport)?;
    meta.icmp_type = t;
    meta.icmp_code = c;
    meta.sport = sport;
    meta.dport = dport;
    meta.payload_len = clamp16(l3_payload.saturating_sub(8));
    if is_icmp_error(proto, t)
        && let Some(quoted) = quoted_packet(icmp.get(8..).unwrap_or(&[]))
    {
        meta.kind = PacketKind::IcmpError { reporter: meta.src };
        meta.src = quoted.src;
        meta.dst = quoted.dst;
        meta.proto = quoted.proto;
        meta.sport = quoted.sport;
        meta.dport = quoted.dport;
    }
    Ok(())
}

/// The 5-tuple of the packet quoted in an ICMP error, when it can be read.
struct Quoted {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    sport: u16,
    dport: u16,
}

fn quoted_packet(bytes: &[u8]) -> Option<Quoted> {
    let (net, _) = LaxIpSlice::from_slice(bytes).ok()?;
    let info = ip_info(&net, bytes.len());
    if info.later_fragment {
        return None;
    }
    let (sport, dport, t, _) = l4_prefix(info.proto, net.payload().payload)?;
    if matches!(info.proto, PROTO_ICMP | PROTO_ICMPV6) && !is_echo(info.proto, t) {
        // An error about an error (or about other ICMP) is not attributed to a flow.
        return None;
    }
    Some(Quoted {
        src: info.src,
        dst: info.dst,
        proto: info.proto,
        sport,
        dport,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An Ethernet + 802.1Q + IPv4 + TCP SYN frame (from tests/data/vlan.pcap, frame 1).
    fn vlan_syn() -> Vec<u8> {
        hex(
            "0200000000020200000000018100006408004500003010004000400616c40a0100010a010002\
             9c400050000f4240000000007002faf0954a0000020405b401010402",
        )
    }

    #[test]
    fn parses_a_vlan_tagged_syn() {
        let frame = vlan_syn();
        let p = parse_frame(LinkType::Ethernet, 7, &frame, frame.len() as u32).unwrap();
        assert_eq!(p.vlan, [100, 0]);
        assert_eq!(p.src, "10.1.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((p.sport, p.dport, p.proto), (40000, 80, PROTO_TCP));
        assert_eq!(p.tcp_flags, crate::packet::tcp_flags::SYN);
        assert_eq!((p.ip_len, p.payload_len, p.ttl), (48, 0, 64));
        assert_eq!(p.tcp_window, 64240);
    }

    #[test]
    fn every_prefix_of_a_frame_is_an_error_or_a_packet() {
        let frame = vlan_syn();
        for cut in 0..frame.len() {
            // Cut by a snap length: fine while the headers are there, a counted skip after.
            let r = parse_frame(LinkType::Ethernet, 0, &frame[..cut], frame.len() as u32);
            if cut < 18 + 20 + 20 {
                assert!(r.is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn ip_length_beyond_the_wire_is_malformed() {
        let frame = vlan_syn();
        // The frame was 66 bytes on the wire; an IP header claiming 1328 bytes cannot be right.
        let mut long = frame.clone();
        long[18 + 2] = 0x05; // total length 0x0530 = 1328
        assert_eq!(
            parse_frame(LinkType::Ethernet, 0, &long, long.len() as u32),
            Err(Skip::BadIp)
        );
    }

    #[test]
    fn ipv6_extension_chain_ending_in_a_cut_header_is_read_safely() {
        // IPv6 → destination options (8 bytes, next: authentication header) → an authentication
        // header that is not there (2 bytes where it needs 12), then UDP that lax slicing never
        // reaches. etherparse's extension iterator would read past the sliced extensions here.
        for (next, cut) in [(51u8, 2usize), (51, 0), (0, 0), (60, 1)] {
            let mut frame = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
            let ext_len = 8 + cut;
            frame.extend_from_slice(&[0x60, 0, 0, 0]);
            frame.extend_from_slice(&(ext_len as u16).to_be_bytes());
            frame.extend_from_slice(&[60, 64]); // next: destination options; hop limit
            frame.extend_from_slice(&[0xfd; 16]);
            frame.extend_from_slice(&[0xfe; 16]);
            frame.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]); // PadN option
            frame.extend(std::iter::repeat_n(0x11, cut));
            let p = parse_frame(LinkType::Ethernet, 0, &frame, frame.len() as u32);
            // What matters is that it returns; what it returns is the address pair or a skip.
            if let Ok(p) = p {
                assert_eq!(
                    p.src,
                    "fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd"
                        .parse::<IpAddr>()
                        .unwrap()
                );
            }
        }
    }

    fn hex(text: &str) -> Vec<u8> {
        let clean: String = text.split_whitespace().collect();
        (0..clean.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Fuzz finding (capture_file, fuzz/README.md): IPv6 with two hop-by-hop headers, the second
    /// claiming 664 bytes of which 17 are there. etherparse's extension iterator read it with
    /// `from_slice_unchecked`, past the end of the slice (undefined behaviour; a panic with
    /// debug assertions).
    #[test]
    fn ipv6_extension_header_longer_than_the_packet_is_not_read() {
        let frame = hex("6001000000000000 150000000019114020010db800080000 \
             000000000000000120010db800080000 0000000000000002 \
             c3520007001911d56563686f206d65206f");
        assert_eq!(frame.len(), 65);
        assert_eq!(
            parse_frame(LinkType::RawIp, 0, &frame, 65),
            Err(Skip::OtherProtocol),
            "next header 0xc3 is not a transport we read"
        );
    }

    /// (source, source port, destination, destination port, protocol, IP length) of a packet.
    fn ends(p: &PacketMeta) -> (String, u16, String, u16, u8, u16) {
        (
            p.src.to_string(),
            p.sport,
            p.dst.to_string(),
            p.dport,
            p.proto,
            p.ip_len,
        )
    }

    /// Frames from tcpdump's test captures (BSD licence), as tshark decodes them.
    #[test]
    fn ppp_cisco_hdlc_and_nflog_frames_from_real_captures() {
        // bgp_vpn_attrset.pcap (LINKTYPE_PPP), the first 64 of 177 bytes: PPP with address and
        // control, BGP over TCP.
        let ppp = hex("ff030021 45c000ade50400003e06797d0c0404040c010101 \
             080300b3c4486045c790152680184000cf1800000101080a0005d89b000d95bbffffffffffffffff");
        let p = parse_frame(LinkType::Ppp, 0, &ppp, 177).unwrap();
        assert_eq!(
            ends(&p),
            ("12.4.4.4".into(), 2051, "12.1.1.1".into(), 179, 6, 173)
        );
        // The same without address and control, and with the protocol compressed to one byte.
        for cut in [&ppp[2..], &[&[0x21][..], &ppp[4..]].concat()[..]] {
            let q = parse_frame(LinkType::Ppp, 0, cut, cut.len() as u32 + 113).unwrap();
            assert_eq!(ends(&q), ends(&p));
        }
        // HDLC.pcap frame 7 (LINKTYPE_C_HDLC): an ICMP echo request.
        let mut chdlc = hex("0f000800 4500006400000000ff01a7960a0000010a000002 0800320b00000000");
        chdlc.resize(104, 0xab);
        let p = parse_frame(LinkType::CiscoHdlc, 0, &chdlc, 104).unwrap();
        assert_eq!(
            ends(&p),
            ("10.0.0.1".into(), 0, "10.0.0.2".into(), 0, 1, 100)
        );
        // nflog.pcap frame 1 (LINKTYPE_NFLOG): a DNS answer inside the payload attribute, with
        // attributes before it and none after.
        let nflog = hex(
            "02000014080001000800012705000a0000000000080004000000000210000800 \
             0006ffffb8a386b9c3d6000006000f000001000006001100000e000012001000 \
             0811961c10c8b8a386b9c3d6080000001400030000000000522a1f9e00000000 \
             000960fc4d00090045000049000040003711c5144a522a2a0a0000140035a659 \
             00356ddf437181800001000100000000076578616d706c6503636f6d00000100 \
             01c00c0001000100002f9600045db8d877000000",
        );
        assert_eq!(nflog.len(), 180);
        let p = parse_frame(LinkType::Nflog, 0, &nflog, 180).unwrap();
        assert_eq!(
            ends(&p),
            ("74.82.42.42".into(), 53, "10.0.0.20".into(), 42585, 17, 73)
        );
    }

    #[test]
    fn loopback_families_in_either_byte_order() {
        let ip = &vlan_syn()[18..];
        let framed = |family: [u8; 4]| [&family[..], ip].concat();
        let little = parse_frame(LinkType::Null, 0, &framed([2, 0, 0, 0]), 64).unwrap();
        // A capture made on a big-endian host, and OpenBSD's loopback (always big-endian).
        for (link, family) in [
            (LinkType::Null, [0, 0, 0, 2]),
            (LinkType::Null, [0, 0, 0, 24]),
            (LinkType::Loop, [0, 0, 0, 2]),
            (LinkType::Loop, [0, 0, 0, 30]),
        ] {
            assert_eq!(
                parse_frame(link, 0, &framed(family), 64),
                Ok(little),
                "{family:?}"
            );
        }
        assert_eq!(
            parse_frame(LinkType::Loop, 0, &framed([2, 0, 0, 0]), 64),
            Err(Skip::NotIp)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), link in 0usize..LinkType::ALL.len()) {
            let link = LinkType::ALL[link];
            let _ = parse_frame(link, 0, &bytes, bytes.len() as u32);
        }

        #[test]
        fn mutated_real_frames_never_panic(flips in proptest::collection::vec((0usize..66, any::<u8>()), 1..8), cut in 0usize..67) {
            let mut frame = vlan_syn();
            for (at, v) in flips {
                frame[at] = v;
            }
            let cut = cut.min(frame.len());
            if let Ok(p) = parse_frame(LinkType::Ethernet, 0, &frame[..cut], frame.len() as u32) {
                prop_assert!(usize::from(p.ip_len) <= frame.len());
            }
        }
    }
}
