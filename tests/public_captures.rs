//! Captures of other projects (tests/data/public/README.md: origin and licence of each), each of
//! which an earlier edgewatch refused, cut short, read as empty or died on, where libpcap,
//! tcpdump and capinfos read them whole. `replay` must read every packet that capinfos counts,
//! say what it repaired, and refuse only what it cannot read, with the same exit code for pcap
//! and pcapng.

mod common;

use common::*;

/// Replays a public capture; returns the exit code and stderr.
fn replay(name: &str) -> (Option<i32>, String) {
    let path = data(&format!("public/{name}"));
    let o = run(&["replay", path.to_str().unwrap(), "--alerts", "/dev/null"]);
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{name}: {err}");
    (o.status.code(), err)
}

/// Replays a capture that must be read whole: `packets` is what `capinfos -c` counts.
fn read_whole(name: &str, packets: u64) -> String {
    let (code, err) = replay(name);
    assert_eq!(code, Some(0), "{name}: {err}");
    let summary = err
        .lines()
        .find(|l| l.starts_with("replay: "))
        .unwrap_or_else(|| panic!("{name}: no summary: {err}"));
    assert!(
        summary.starts_with(&format!("replay: {packets} packets, ")),
        "{name}: capinfos counts {packets} packets: {err}"
    );
    assert!(!err.contains("stops early"), "{name}: {err}");
    err
}

#[test]
fn link_type_with_fcs_bits_is_read_as_its_lower_bits() {
    // tcpdump: the link-type field is 0x30000001 (Ethernet, FCS-length bits set).
    let err = read_whole("udp-length-heapoverflow.pcap", 1);
    assert!(err.contains("read as link type 1"), "{err}");
}

#[test]
fn sub_second_fields_of_a_second_or_more_are_carried() {
    // tcpdump: µs and ns files whose second record's fraction is 10^6 µs and 10^9 ns.
    for name in [
        "timestamp_invalid_micro.pcap",
        "timestamp_invalid_nano.pcap",
    ] {
        let err = read_whole(name, 3);
        assert!(
            err.contains("sub-second timestamp field of a second or more"),
            "{name}: {err}"
        );
    }
}

#[test]
fn pcapng_options_without_an_end_marker_are_read() {
    // tcpdump: the section header's option list has no opt_endofopt.
    read_whole("ospf-sr.pcapng", 1);
}

#[test]
fn pcapng_comments_that_are_not_utf8_are_read() {
    // PcapPlusPlus: 59 Ethernet and 100 Linux-cooked packets, comments in another encoding.
    read_whole("pcapng-example.pcapng", 159);
}

#[test]
fn pcapng_obsolete_packet_blocks_are_read() {
    // scapy: a big-endian pcapng of 200 packet blocks (type 2), raw IP.
    read_whole("pfcp.pcap", 200);
}

#[test]
fn timestamps_after_the_year_9999_do_not_end_the_process() {
    // nfstream: DHCP dated in the year 151991.
    let err = read_whole("dhcp_big_endian.pcapng", 4);
    assert!(
        err.contains("4 records are dated after 9999-12-31"),
        "{err}"
    );
}

#[test]
fn pcapng_with_no_readable_link_type_is_refused_like_pcap() {
    // tcpdump: 10 packets on a vsock interface (link type 271).
    let (code, err) = replay("vsock-1.pcapng");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("vsock-1.pcapng: unsupported link type 271"),
        "{err}"
    );
}
