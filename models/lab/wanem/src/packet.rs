//! Which remote address a frame belongs to.

use crate::config::UP;

/// The remote end of an Ethernet frame as a 128-bit key (IPv4 as ::ffff:a.b.c.d): the
/// destination of an "up" frame, the source of a "down" frame. ARP counts by its protocol
/// addresses (target when up, sender when down). None for anything else, and, with
/// `local_resolution`, for address resolution (ARP, and IPv6 router/neighbour solicitations,
/// advertisements and redirects: ICMPv6 types 133-137), which then takes the default path.
pub fn remote_key(frame: &[u8], dir: usize, local_resolution: bool) -> Option<u128> {
    let mut off = 12;
    let mut et = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    while (et == 0x8100 || et == 0x88a8) && frame.len() >= off + 6 {
        off += 4;
        et = u16::from_be_bytes([frame[off], frame[off + 1]]);
    }
    let l3 = off + 2;
    let v4 = |at: usize| -> Option<u128> {
        let b = frame.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u128 | 0xffff_0000_0000u128)
    };
    match et {
        0x0800 => v4(l3 + if dir == UP { 16 } else { 12 }),
        0x86dd if local_resolution && *frame.get(l3 + 6)? == 58 && (133..=137).contains(frame.get(l3 + 40)?) => None,
        0x0806 if local_resolution => None,
        0x86dd => {
            let at = l3 + if dir == UP { 24 } else { 8 };
            let b: [u8; 16] = frame.get(at..at + 16)?.try_into().ok()?;
            Some(u128::from_be_bytes(b))
        }
        0x0806 => v4(l3 + if dir == UP { 24 } else { 14 }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_ip, DOWN};

    fn eth(et: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&et.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn ipv4_ipv6_arp_and_vlan() {
        let mut ip4 = vec![0u8; 20];
        ip4[0] = 0x45;
        ip4[12..16].copy_from_slice(&[192, 0, 2, 2]);
        ip4[16..20].copy_from_slice(&[198, 51, 100, 80]);
        let f = eth(0x0800, &ip4);
        assert_eq!(remote_key(&f, UP, false), parse_ip("198.51.100.80"));
        assert_eq!(remote_key(&f, DOWN, false), parse_ip("192.0.2.2"));
        let mut tagged = f[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        tagged.extend_from_slice(&f[12..]);
        assert_eq!(remote_key(&tagged, UP, false), parse_ip("198.51.100.80"));

        let mut ip6 = vec![0u8; 40];
        ip6[0] = 0x60;
        ip6[8..24].copy_from_slice(&"2001:db8:77::21".parse::<std::net::Ipv6Addr>().unwrap().octets());
        ip6[24..40].copy_from_slice(&"2001:db8:51:100::80".parse::<std::net::Ipv6Addr>().unwrap().octets());
        let f = eth(0x86dd, &ip6);
        assert_eq!(remote_key(&f, UP, false), parse_ip("2001:db8:51:100::80"));
        assert_eq!(remote_key(&f, DOWN, false), parse_ip("2001:db8:77::21"));

        let mut arp = vec![0u8; 28];
        arp[14..18].copy_from_slice(&[192, 0, 2, 1]);
        arp[24..28].copy_from_slice(&[192, 0, 2, 2]);
        let f = eth(0x0806, &arp);
        assert_eq!(remote_key(&f, UP, false), parse_ip("192.0.2.2"));
        assert_eq!(remote_key(&f, DOWN, false), parse_ip("192.0.2.1"));

        assert_eq!(remote_key(&eth(0x88cc, &[0; 40]), UP, false), None);
        assert_eq!(remote_key(&f[..10], UP, false), None);
        assert_eq!(remote_key(&eth(0x0800, &[0x45; 10]), UP, false), None); // cut short
    }

    #[test]
    fn local_resolution_sends_arp_and_nd_to_the_default_path() {
        let mut arp = vec![0u8; 28];
        arp[24..28].copy_from_slice(&[192, 0, 2, 2]);
        assert_eq!(remote_key(&eth(0x0806, &arp), UP, true), None);
        let mut ip6 = vec![0u8; 48];
        ip6[0] = 0x60;
        ip6[6] = 58; // ICMPv6
        ip6[24..40].copy_from_slice(&"2001:db8:77::21".parse::<std::net::Ipv6Addr>().unwrap().octets());
        for (icmp_type, local) in [(135u8, true), (136, true), (133, true), (137, true), (128, false), (143, false)] {
            ip6[40] = icmp_type;
            let want = if local { None } else { parse_ip("2001:db8:77::21") };
            assert_eq!(remote_key(&eth(0x86dd, &ip6), UP, true), want, "type {icmp_type}");
            assert_eq!(remote_key(&eth(0x86dd, &ip6), UP, false), parse_ip("2001:db8:77::21"));
        }
        ip6[6] = 6; // TCP: byte 40 is no ICMPv6 type
        ip6[40] = 135;
        assert_eq!(remote_key(&eth(0x86dd, &ip6), UP, true), parse_ip("2001:db8:77::21"));
        ip6[6] = 58;
        assert_eq!(remote_key(&eth(0x86dd, &ip6[..40]), UP, true), None); // ICMPv6 cut short before its type
    }
}
