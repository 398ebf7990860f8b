//! The packet's metadata: the small `Copy` struct that the capture stage makes of every frame.
//!
//! Packet bytes never leave the capture thread; everything after it works on [`PacketMeta`].
//! This module owns the type and the protocol constants, not the parsing (see `parse`).

use std::net::IpAddr;

/// Timestamps are microseconds since the Unix epoch (packet time in replay, wall time live).
pub type Micros = u64;

/// The latest timestamp the pipeline takes (about the year 294,000); later ones are clamped to
/// it. Every configured span is at most a year, so packet time plus any timeout cannot overflow.
pub const MAX_TS: Micros = u64::MAX / 2;
/// The last instant RFC 3339 can write (9999-12-31T23:59:59.999999Z).
pub const LAST_RFC3339_TS: Micros = 253_402_300_799_999_999;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// TCP flag bits as they appear in the header's 13th byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// What kind of packet this is, beyond its 5-tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    /// A TCP, UDP or ICMP packet whose ports (or ICMP identifier) are known.
    Normal,
    /// An ICMP error (unreachable, time exceeded, ...) whose 5-tuple is that of the packet it
    /// quotes, in the quoted packet's direction; `reporter` is the error's own source address.
    IcmpError { reporter: IpAddr },
    /// An IP fragment after the first: ports are unknown until the dispatcher attributes it
    /// to the first fragment of the same datagram.
    LaterFragment,
}

/// Fragment bookkeeping carried by fragmented datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    pub id: u32,
    /// True when more fragments follow (the MF bit).
    pub more: bool,
}

/// Everything the pipeline needs from one packet. `Copy`, 96 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    pub ts: Micros,
    /// Global sequence number assigned by the dispatcher (0 before that).
    pub seq: u64,
    /// Outer and inner VLAN id (0 = untagged).
    pub vlan: [u16; 2],
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Source port; for ICMP echo the identifier, for other ICMP the type.
    pub sport: u16,
    /// Destination port; for ICMP echo the identifier, for other ICMP the code.
    pub dport: u16,
    pub proto: u8,
    /// The IP packet's length as its header declares it (bytes on the wire above L2).
    pub ip_len: u16,
    /// Transport payload bytes as the headers declare them.
    pub payload_len: u16,
    pub tcp_flags: u8,
    pub tcp_window: u16,
    pub ttl: u8,
    /// ICMP type and code (0 for other protocols).
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub kind: PacketKind,
    pub fragment: Option<Fragment>,
}

impl PacketMeta {
    pub fn is_icmp(&self) -> bool {
        self.proto == PROTO_ICMP || self.proto == PROTO_ICMPV6
    }

    /// A TCP SYN without ACK: a connection's first packet.
    pub fn is_bare_syn(&self) -> bool {
        self.proto == PROTO_TCP
            && self.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
    }
}

/// Packets built by hand for the tests of the dispatcher and the flow table.
#[cfg(test)]
impl PacketMeta {
    /// An IPv4 packet of `proto` from `src:sport` to `dst:dport` at `ts`, TTL 64, with no
    /// lengths, flags or window (set the ones a test needs with `..`).
    pub(crate) fn for_test(
        ts: Micros,
        proto: u8,
        (src, sport): ([u8; 4], u16),
        (dst, dport): ([u8; 4], u16),
    ) -> PacketMeta {
        PacketMeta {
            ts,
            seq: 0,
            vlan: [0; 2],
            src: IpAddr::V4(src.into()),
            dst: IpAddr::V4(dst.into()),
            sport,
            dport,
            proto,
            ip_len: 0,
            payload_len: 0,
            tcp_flags: 0,
            tcp_window: 0,
            ttl: 64,
            icmp_type: 0,
            icmp_code: 0,
            kind: PacketKind::Normal,
            fragment: None,
        }
    }
}

/// EVE name of an IP protocol number.
pub fn proto_name(proto: u8) -> &'static str {
    match proto {
        PROTO_TCP => "TCP",
        PROTO_UDP => "UDP",
        PROTO_ICMP => "ICMP",
        PROTO_ICMPV6 => "IPv6-ICMP",
        _ => "OTHER",
    }
}
