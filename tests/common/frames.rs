//! Frames and pcap files written by the tests: Ethernet + IPv4 with a correct header checksum,
//! UDP and TCP headers (transport checksums zero: edgewatch does not check them).

/// A record: (seconds, microseconds, captured bytes, original length).
pub type Record = (u32, u32, Vec<u8>, u32);

pub fn rec(sec: u32, usec: u32, data: Vec<u8>) -> Record {
    let orig = data.len() as u32;
    (sec, usec, data, orig)
}

/// A little-endian microsecond pcap file.
pub fn pcap(linktype: u32, snaplen: u32, records: &[Record]) -> Vec<u8> {
    let mut out = pcap_header(linktype, snaplen);
    for r in records {
        out.extend_from_slice(&record(r));
    }
    out
}

pub fn pcap_header(linktype: u32, snaplen: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&snaplen.to_le_bytes());
    out.extend_from_slice(&linktype.to_le_bytes());
    out
}

pub fn record((sec, usec, data, orig): &Record) -> Vec<u8> {
    let mut out = Vec::new();
    for w in [*sec, *usec, data.len() as u32, *orig] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// An Ethernet frame carrying an IPv4 packet of protocol `proto` with transport bytes `l4`.
pub fn ipv4_frame(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let ip_len = 20 + l4.len();
    assert!(ip_len <= 65535);
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    ip[10..12].copy_from_slice(&(!((sum & 0xffff) + (sum >> 16)) as u16).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

/// A UDP header and `payload` bytes (0, 1, 2, ...).
pub fn udp(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend((0..payload).map(|i| i as u8));
    l4
}

/// A 20-byte TCP header with `flags` and a window of 64240.
pub fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 0x10, 0, 0, 0, 0, 0]);
    l4.extend_from_slice(&[0x50, flags]);
    l4.extend_from_slice(&64240u16.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 0, 0]);
    l4
}
