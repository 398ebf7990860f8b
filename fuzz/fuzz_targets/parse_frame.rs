//! `parse_frame` on arbitrary bytes, for every link type edgewatch reads.
//!
//! Input: byte 0 picks the link type, bytes 1-2 (big endian) are how many bytes the frame had on
//! the wire beyond those captured (a frame cut by the snap length), the rest is the frame.
#![no_main]

use edgewatch::parse::{LinkType, parse_frame};
use libfuzzer_sys::fuzz_target;


fuzz_target!(|data: &[u8]| {
    let [pick, cut_hi, cut_lo, frame @ ..] = data else {
        return;
    };
    let link = LinkType::ALL[usize::from(*pick) % LinkType::ALL.len()];
    let wire_len = frame.len() as u32 + u32::from(u16::from_be_bytes([*cut_hi, *cut_lo]));
    if let Ok(p) = parse_frame(link, 1, frame, wire_len) {
        // An IP length the wire could not have carried is malformed, never a packet.
        assert!(
            u32::from(p.ip_len) <= wire_len,
            "{p:?} from {wire_len} bytes"
        );
        assert_eq!(p.ts, 1);
    }
});
