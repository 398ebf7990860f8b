//! The binary on the crafted captures of tests/data (see tests/data/README.md for their facts):
//! every link type and encapsulation yields the right flows, directions and counts.

mod common;

use common::*;

fn only_flow(capture: &str) -> Row {
    let rows = features(&data(capture), &[]);
    let finals = final_rows(&rows);
    assert_eq!(
        finals.len(),
        1,
        "{capture}: flows {:?}",
        finals.keys().collect::<Vec<_>>()
    );
    finals.into_values().next().unwrap()
}

/// Packets and IP bytes per direction: (fwd pkts, fwd bytes, bwd pkts, bwd bytes).
fn counts(r: &Row) -> (u64, u64, u64, u64) {
    (
        r.count("fwd_pkts_log1p"),
        r.count("fwd_bytes_log1p"),
        r.count("bwd_pkts_log1p"),
        r.count("bwd_bytes_log1p"),
    )
}

#[test]
fn vlan_tagged_tcp_flow() {
    let r = only_flow("vlan.pcap");
    assert_eq!(r.endpoints(), "TCP 10.1.0.1:40000 -> 10.1.0.2:80");
    assert_eq!(r.s("vlan"), "100");
    assert_eq!(counts(&r), (6, 310, 3, 206));
    assert_eq!(r.s("eval_reason"), "tcp_end");
    assert_eq!(r.f("handshake_complete"), 1.0);
    assert_eq!(r.f("fwd_init_window"), 64240.0);
    assert_eq!(r.f("bwd_init_window"), 65160.0);
    assert_eq!(r.f("fwd_ttl"), 64.0);
    assert_eq!(r.f("bwd_ttl"), 128.0);
    // First packets: SYN 48 out, SYN-ACK 48 back, ACK 40 out, request 102 out, response 118 back.
    let first: Vec<f64> = (1..=5).map(|i| r.f(&format!("first_len_{i}"))).collect();
    assert_eq!(first, vec![48.0, -48.0, 40.0, 102.0, -118.0]);
    assert_eq!(r.s("start"), "1714564800.000000");
    assert_eq!(r.s("end"), "1714564801.061480");
}

#[test]
fn qinq_reports_both_tags() {
    let r = only_flow("qinq.pcap");
    assert_eq!(r.endpoints(), "UDP 10.2.0.1:53000 -> 10.2.0.2:53");
    assert_eq!(r.s("vlan"), "200.300", "outer then inner VLAN id");
    assert_eq!(counts(&r), (2, 126, 2, 170));
}

#[test]
fn pppoe_session_carries_ipv4_and_ipv6() {
    let finals = final_rows(&features(&data("pppoe.pcap"), &[]));
    let tcp = &finals["TCP 10.3.0.1:50000 -> 10.3.0.2:443"];
    assert_eq!(counts(tcp), (5, 245, 2, 141));
    assert_eq!(
        tcp.s("eval_reason"),
        "tcp_end",
        "the client's RST ends the flow"
    );
    let icmp = &finals["IPv6-ICMP 2001:db8:3::1:771 -> 2001:db8:3::2:771"];
    assert_eq!(counts(icmp).0, 1);
    assert_eq!(
        counts(icmp).2,
        1,
        "echo reply grouped with its request by identifier 0x0303"
    );
    assert_eq!(finals.len(), 2);
}

#[test]
fn ipv6_extension_headers_are_walked() {
    let finals = final_rows(&features(&data("ipv6_ext.pcap"), &[]));
    let tcp = &finals["TCP fd00::1:51000 -> fd00::2:22"];
    assert_eq!(counts(tcp), (3, 260, 2, 183));
    assert_eq!(tcp.f("handshake_complete"), 1.0);
    assert!(
        finals.keys().any(|k| k.starts_with("UDP ")),
        "{:?}",
        finals.keys()
    );
    assert!(
        finals.contains_key("IPv6-ICMP fd00::1:4660 -> fd00::2:4660"),
        "{:?}",
        finals.keys()
    );
    assert_eq!(finals.len(), 3);
}

#[test]
fn ipv4_fragments_are_attributed_and_orphans_counted() {
    let o = run(&["replay", data("ipv4_frag.pcap").to_str().unwrap()]);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains(", 2 skipped,"),
        "two later fragments without a first: {}",
        stderr(&o)
    );
    let finals = final_rows(&features(&data("ipv4_frag.pcap"), &[]));
    let r = &finals["UDP 10.4.0.1:5000 -> 10.4.0.2:6000"];
    assert_eq!(
        counts(r),
        (3, 3060, 1, 128),
        "all three fragments in the flow"
    );
    assert_eq!(
        finals.len(),
        1,
        "no flow made of a later fragment's payload: {:?}",
        finals.keys()
    );
}

#[test]
fn linux_cooked_v1() {
    let finals = final_rows(&features(&data("sll.pcap"), &[]));
    let echo = &finals["ICMP 10.5.0.1:77 -> 10.5.0.2:77"];
    assert_eq!((counts(echo).0, counts(echo).2), (2, 2));
    let tcp = &finals["TCP 10.5.0.1:45000 -> 10.5.0.2:23"];
    assert_eq!(counts(tcp), (1, 48, 1, 40));
    assert_eq!(tcp.count("bwd_rst_log1p"), 1);
    assert_eq!(tcp.f("handshake_complete"), 0.0);
}

#[test]
fn linux_cooked_v2() {
    let r = only_flow("sll2.pcap");
    assert_eq!(r.endpoints(), "TCP 10.7.0.1:41000 -> 10.7.0.2:8080");
    assert_eq!(counts(&r), (6, 315, 3, 206));
}

#[test]
fn raw_ip_link_type() {
    let finals = final_rows(&features(&data("raw_ip.pcap"), &[]));
    assert_eq!(finals.len(), 4, "{:?}", finals.keys());
    for r in finals.values() {
        assert_eq!((counts(r).0, counts(r).2), (1, 1), "{}", r.endpoints());
    }
}

#[test]
fn big_endian_nanosecond_pcap() {
    let r = only_flow("ns_be.pcap");
    assert_eq!(r.endpoints(), "TCP 10.9.0.1:42000 -> 10.9.0.2:80");
    assert_eq!(counts(&r), (6, 310, 3, 206));
    assert_eq!(r.s("start"), "1714564800.000000");
    // Nanosecond timestamps are kept to the microsecond.
    assert!(r.s("end").starts_with("171456480"), "{}", r.s("end"));
}

#[test]
fn pcapng_with_two_timestamp_resolutions() {
    let rows = features(&data("basic.pcapng"), &[]);
    let finals = final_rows(&rows);
    assert_eq!(finals.len(), 2, "{:?}", finals.keys());
    let tcp = finals.values().find(|r| r.s("proto") == "TCP").unwrap();
    assert_eq!(counts(tcp), (6, 311, 3, 206));
    // Both interfaces are on one timeline starting at T0, whatever their resolution.
    for r in finals.values() {
        let start: f64 = r.f("start");
        assert!(
            (1714564800.0..1714564810.0).contains(&start),
            "{} starts at {start}",
            r.endpoints()
        );
    }
}

#[test]
fn icmp_errors_are_attributed_to_the_quoted_flow() {
    let finals = final_rows(&features(&data("icmp_error.pcap"), &[]));
    assert_eq!(
        finals.len(),
        2,
        "no flow made from quoted headers: {:?}",
        finals.keys()
    );
    for r in finals.values() {
        assert_eq!(r.s("proto"), "UDP");
        assert_eq!(r.s("src_ip"), "10.6.0.1");
        assert_eq!(
            r.f("icmp_error"),
            1.0,
            "{} got its ICMP error",
            r.endpoints()
        );
        assert_eq!(r.f("answered"), 0.0);
    }
}

#[test]
fn truncated_capture_is_processed_up_to_the_cut() {
    let o = run(&["replay", data("truncated.pcap").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("cut short"), "{err}");
    assert!(err.contains("replay: 5 packets"), "{err}");
}

#[test]
fn malformed_frames_are_skipped_not_fatal() {
    let o = run(&["replay", data("malformed.pcap").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("replay: 10 packets, 2 flows, "), "{err}");
    assert!(
        err.contains(", 7 skipped, 0 dropped"),
        "6 malformed and 1 non-IP frame: {err}"
    );
    let finals = final_rows(&features(&data("malformed.pcap"), &[]));
    assert_eq!(
        counts(&finals["UDP 10.13.0.1:40000 -> 10.13.0.2:9999"]),
        (1, 43, 1, 43)
    );
    assert_eq!(
        counts(&finals["UDP 10.13.0.1:40001 -> 10.13.0.2:9000"]).1,
        8986,
        "jumbo frame"
    );
}

#[test]
fn time_going_backwards_keeps_one_flow() {
    let r = only_flow("backwards_time.pcap");
    assert_eq!(counts(&r).0 + counts(&r).2, 9);
    let (start, end) = (r.f("start"), r.f("end"));
    assert!(
        end >= start,
        "the clock never runs backwards inside the agent"
    );
}

#[test]
fn a_file_that_is_not_a_capture_exits_2() {
    let o = run(&["replay", data("not_a_capture.txt").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("is not a pcap or pcapng capture"),
        "{}",
        stderr(&o)
    );
    let o = run(&["replay", "/nonexistent/x.pcap"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cannot open /nonexistent/x.pcap"),
        "{}",
        stderr(&o)
    );
}
