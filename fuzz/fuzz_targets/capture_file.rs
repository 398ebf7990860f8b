//! The pcap/pcapng reader on arbitrary bytes: every frame it yields is parsed too, as `replay`
//! does. The reader must end (cleanly or with a truncation), never panic, and never hand out a
//! frame longer than the input.
#![no_main]

use std::io::Cursor;

use edgewatch::capture::file::CaptureReader;
use edgewatch::parse::parse_frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = CaptureReader::from_reader("fuzz", Cursor::new(data.to_vec())) else {
        return;
    };
    let mut frames = 0u64;
    while let Some(frame) = reader.next_frame() {
        assert!(frame.data.len() <= data.len());
        assert!(frame.wire_len as usize >= frame.data.len());
        let _ = parse_frame(frame.link, frame.ts, frame.data, frame.wire_len);
        frames += 1;
    }
    assert_eq!(frames, reader.records());
    assert!(reader.next_frame().is_none(), "a reader stays at its end");
});
