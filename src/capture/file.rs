//! Capture files: pcap (both byte orders, µs and ns) and pcapng, read as a stream.
//!
//! Memory stays constant whatever the file size. A pcap file is read in blocks of
//! [`READ_BLOCK`] into one buffer, and each record is handed out as a slice of it, never copied;
//! the buffer is one block, larger only for a record longer than that, and never past
//! [`MAX_RECORD_LEN`] plus its header. pcapng goes through pcap-file's fixed 8 MB read buffer.
//! This module owns the file format, not the frame contents (see `parse`). pcap records are read
//! here (pcap-file's pcap reader rejects records longer than the snap length and reads a record's
//! length before checking it); pcapng blocks come from pcap-file, whose reader ignores
//! `if_tsresol`, so timestamps are converted here.

use std::fs::File;
use std::io::{self, Cursor, Read};
use std::path::Path;

use pcap_file::pcap::PcapHeader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{Endianness, PcapError, TsResolution};

use crate::packet::Micros;
use crate::parse::LinkType;

/// A record longer than this is not a real frame: the file is corrupt from there on.
pub const MAX_RECORD_LEN: u32 = 256 * 1024;
/// The pcap file header, then each record's header.
const PCAP_HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 16;
/// How much a pcap file is read at a time.
const READ_BLOCK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot open {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error(
        "{path} is not a pcap or pcapng capture (it starts with {magic}); \
         give a file written by tcpdump, tshark or dumpcap"
    )]
    NotACapture { path: String, magic: String },
    #[error(
        "{path}: unsupported link type {linktype}; edgewatch reads Ethernet, Linux cooked (SLL, SLL2), raw IP and BSD loopback captures"
    )]
    UnsupportedLinkType { path: String, linktype: u32 },
    #[error("{path}: bad capture header: {detail}")]
    BadHeader { path: String, detail: String },
}

/// One captured frame, borrowed from the reader.
pub struct Frame<'a> {
    pub ts: Micros,
    pub link: LinkType,
    pub data: &'a [u8],
    pub wire_len: u32,
}

/// What ended the file, when it did not end cleanly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    pub after_records: u64,
    pub detail: String,
}

/// The bytes of a capture, from a file or from memory.
type Source = Box<dyn Read + Send>;

enum Inner {
    Pcap {
        blocks: Blocks,
        link: LinkType,
        nanos: bool,
        big_endian: bool,
    },
    PcapNg {
        reader: PcapNgReader<Source>,
        /// Per interface of the current section: link type (None = unsupported) and the
        /// timestamp unit as (numerator, denominator) of a second.
        interfaces: Vec<(Option<LinkType>, u64, u64, u64)>,
        last_ts: Micros,
    },
}

/// A streaming reader over a pcap or pcapng file.
pub struct CaptureReader {
    inner: Inner,
    records: u64,
    truncation: Option<Truncation>,
    /// The current pcapng frame, copied (a block borrowed from the reader cannot leave the loop
    /// that skips non-packet blocks).
    buf: Vec<u8>,
    /// Frames on interfaces with an unsupported link type, skipped.
    pub unsupported_frames: u64,
}

impl CaptureReader {
    pub fn open(path: &Path) -> Result<CaptureReader, CaptureError> {
        let display = path.display().to_string();
        let file = File::open(path).map_err(|source| CaptureError::Open {
            path: display.clone(),
            source,
        })?;
        // Both formats read in large blocks of their own: no BufReader in between.
        CaptureReader::from_reader(&display, file)
    }

    /// Reads a capture from any byte stream (a pipe, or bytes in memory); `name` stands for it
    /// in error messages.
    pub fn from_reader(
        name: &str,
        mut source: impl Read + Send + 'static,
    ) -> Result<CaptureReader, CaptureError> {
        let display = name.to_string();
        let mut magic = [0u8; 4];
        let got = read_up_to(&mut source, &mut magic).map_err(|source| CaptureError::Open {
            path: display.clone(),
            source,
        })?;
        let not_a_capture = || CaptureError::NotACapture {
            path: display.clone(),
            magic: if got == 0 {
                "nothing (the file is empty)".to_string()
            } else {
                format!(
                    "0x{}",
                    magic[..got]
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                )
            },
        };
        if got < 4 {
            return Err(not_a_capture());
        }
        let bad_header = |e: PcapError| CaptureError::BadHeader {
            path: display.clone(),
            detail: match e {
                PcapError::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
                    "the file ends inside its first block (the section header)".to_string()
                }
                other => other.to_string(),
            },
        };
        let inner = match u32::from_be_bytes(magic) {
            0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1 => {
                let mut bytes = [0u8; PCAP_HEADER_LEN];
                bytes[..4].copy_from_slice(&magic);
                let got = 4 + read_up_to(&mut source, &mut bytes[4..]).map_err(|source| {
                    CaptureError::Open {
                        path: display.clone(),
                        source,
                    }
                })?;
                if got < PCAP_HEADER_LEN {
                    return Err(CaptureError::BadHeader {
                        path: display.clone(),
                        detail: format!(
                            "the file ends inside the {PCAP_HEADER_LEN}-byte file header \
                             (after {got} bytes)"
                        ),
                    });
                }
                let (_, header) = PcapHeader::from_slice(&bytes).map_err(bad_header)?;
                let linktype = u32::from(header.datalink);
                let link =
                    LinkType::from_linktype(linktype).ok_or(CaptureError::UnsupportedLinkType {
                        path: display.clone(),
                        linktype,
                    })?;
                Inner::Pcap {
                    blocks: Blocks::new(Box::new(source)),
                    link,
                    nanos: header.ts_resolution == TsResolution::NanoSecond,
                    big_endian: header.endianness == Endianness::Big,
                }
            }
            0x0a0d_0d0a => {
                // The magic read above goes back in front of the rest of the stream.
                let file: Source = Box::new(Cursor::new(magic).chain(source));
                let reader = PcapNgReader::new(file).map_err(bad_header)?;
                Inner::PcapNg {
                    reader,
                    interfaces: Vec::new(),
                    last_ts: 0,
                }
            }
            _ => return Err(not_a_capture()),
        };
        Ok(CaptureReader {
            inner,
            records: 0,
            truncation: None,
            buf: Vec::new(),
            unsupported_frames: 0,
        })
    }

    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Set once the reader stopped on a cut-short or corrupt record.
    pub fn truncation(&self) -> Option<&Truncation> {
        self.truncation.as_ref()
    }

    /// The next frame, or `None` at the end of the file (or at the first unreadable record,
    /// after which [`truncation`](Self::truncation) says why).
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        if self.truncation.is_some() {
            return None;
        }
        let records = self.records;
        let mut stop = None;
        // A pcap frame is the range `at` of the blocks' buffer; a pcapng frame is in `self.buf`.
        let mut at = None;
        let frame = match &mut self.inner {
            Inner::Pcap {
                blocks,
                link,
                nanos,
                big_endian,
            } => match next_record(blocks, *big_endian) {
                Ok(None) => None,
                Err(detail) => {
                    stop = Some(detail);
                    None
                }
                Ok(Some(Record {
                    ts_sec,
                    frac,
                    orig_len,
                    range,
                })) => {
                    let sub_us = if *nanos { frac / 1000 } else { frac };
                    if sub_us >= 1_000_000 {
                        stop = Some(format!(
                            "record header is corrupt (timestamp fraction {frac})"
                        ));
                        None
                    } else {
                        let ts = u64::from(ts_sec) * 1_000_000 + u64::from(sub_us);
                        let len = range.len() as u32;
                        at = Some(range);
                        Some((ts, *link, orig_len.max(len)))
                    }
                }
            },
            Inner::PcapNg {
                reader,
                interfaces,
                last_ts,
            } => {
                loop {
                    match reader.next_block() {
                        None => break None,
                        Some(Err(e)) => {
                            stop = Some(describe(e));
                            break None;
                        }
                        Some(Ok(Block::SectionHeader(_))) => interfaces.clear(),
                        Some(Ok(Block::InterfaceDescription(idb))) => {
                            let link = LinkType::from_linktype(u32::from(idb.linktype));
                            let (mut num, mut den, mut offset_s) = (1u64, 1_000_000u64, 0u64);
                            for opt in &idb.options {
                                match opt {
                                    InterfaceDescriptionOption::IfTsResol(r) => {
                                        let exp = u32::from(r & 0x7f).min(63);
                                        (num, den) = if r & 0x80 != 0 {
                                            (1, 1u64 << exp)
                                        } else {
                                            (1, 10u64.checked_pow(exp.min(19)).unwrap_or(u64::MAX))
                                        };
                                    }
                                    InterfaceDescriptionOption::IfTsOffset(o) => offset_s = *o,
                                    _ => {}
                                }
                            }
                            interfaces.push((link, num, den, offset_s));
                        }
                        Some(Ok(Block::EnhancedPacket(epb))) => {
                            let Some(&(link, num, den, offset_s)) =
                                interfaces.get(epb.interface_id as usize)
                            else {
                                stop = Some(format!(
                                    "packet refers to interface {} which was never described",
                                    epb.interface_id
                                ));
                                break None;
                            };
                            let Some(link) = link else {
                                self.unsupported_frames += 1;
                                continue;
                            };
                            // pcap-file stores the raw timestamp units as nanoseconds.
                            let units = epb.timestamp.as_nanos();
                            let us = units * u128::from(num) * 1_000_000 / u128::from(den.max(1));
                            let ts = (us as u64).saturating_add(offset_s.saturating_mul(1_000_000));
                            *last_ts = ts;
                            self.buf.clear();
                            self.buf.extend_from_slice(&epb.data);
                            let wire_len = epb.original_len.max(epb.data.len() as u32);
                            break Some((ts, link, wire_len));
                        }
                        Some(Ok(Block::SimplePacket(spb))) => {
                            let Some(&(Some(link), ..)) = interfaces.first() else {
                                self.unsupported_frames += 1;
                                continue;
                            };
                            self.buf.clear();
                            self.buf.extend_from_slice(&spb.data);
                            let wire_len = spb.original_len.max(spb.data.len() as u32);
                            break Some((*last_ts, link, wire_len));
                        }
                        Some(Ok(_)) => {}
                    }
                }
            }
        };
        let data: &[u8] = match (&self.inner, at) {
            (Inner::Pcap { blocks, .. }, Some(range)) => &blocks.buf[range],
            _ => &self.buf,
        };
        let frame = frame.map(|(ts, link, wire_len)| Frame {
            ts,
            link,
            data,
            wire_len,
        });
        if let Some(detail) = stop {
            self.truncation = Some(Truncation {
                after_records: records,
                detail,
            });
        }
        if frame.is_some() {
            self.records += 1;
        }
        frame
    }
}

/// A pcap file's bytes, read a block at a time into one buffer; records are slices of it.
struct Blocks {
    source: Source,
    buf: Vec<u8>,
    /// The bytes not handed out yet are `buf[start..end]`.
    start: usize,
    end: usize,
    eof: bool,
}

impl Blocks {
    fn new(source: Source) -> Blocks {
        Blocks {
            source,
            buf: Vec::new(),
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// Makes the next `n` bytes available at `start` unless the stream ends first; returns how
    /// many are (fewer than `n` only at the end of the stream). Reads ahead up to a block from
    /// `start`, never more: the buffer holds the larger of `n` and a block.
    fn fill(&mut self, n: usize) -> io::Result<usize> {
        while self.end - self.start < n && !self.eof {
            let held = self.end - self.start;
            let want = (n - held).max(READ_BLOCK.saturating_sub(held));
            if self.buf.len() - self.end < want {
                // Move what is left to the front, then grow if that is not room enough.
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if self.buf.len() - self.end < want {
                    self.buf.resize(self.end + want, 0);
                }
            }
            match self.source.read(&mut self.buf[self.end..self.end + want]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((self.end - self.start).min(n))
    }
}

/// A pcap record's header fields, and where its bytes are in the blocks' buffer.
struct Record {
    ts_sec: u32,
    frac: u32,
    orig_len: u32,
    range: std::ops::Range<usize>,
}

/// Reads one pcap record, `None` at a clean end of the file, or why the file cannot be read
/// further. The length is checked before a byte of the record is read, so a corrupt header never
/// makes the buffer grow.
fn next_record(blocks: &mut Blocks, big_endian: bool) -> Result<Option<Record>, String> {
    let got = blocks
        .fill(RECORD_HEADER_LEN)
        .map_err(|e| format!("read error: {e}"))?;
    if got == 0 {
        return Ok(None);
    }
    if got < RECORD_HEADER_LEN {
        return Err(format!(
            "the last record is cut short inside its header ({got} of {RECORD_HEADER_LEN} bytes)"
        ));
    }
    let header = &blocks.buf[blocks.start..blocks.start + RECORD_HEADER_LEN];
    let word = |i: usize| {
        let b = [header[i], header[i + 1], header[i + 2], header[i + 3]];
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let (ts_sec, frac, incl_len, orig_len) = (word(0), word(4), word(8), word(12));
    if incl_len > MAX_RECORD_LEN {
        return Err(format!(
            "record header is corrupt (length {incl_len}, more than the {MAX_RECORD_LEN} bytes \
             of any real frame)"
        ));
    }
    let total = RECORD_HEADER_LEN + incl_len as usize;
    let got = blocks.fill(total).map_err(|e| format!("read error: {e}"))?;
    if got < total {
        return Err(format!(
            "the last record is cut short ({} of {incl_len} bytes)",
            got - RECORD_HEADER_LEN
        ));
    }
    let range = blocks.start + RECORD_HEADER_LEN..blocks.start + total;
    blocks.start += total;
    Ok(Some(Record {
        ts_sec,
        frac,
        orig_len,
        range,
    }))
}

fn describe(e: PcapError) -> String {
    match e {
        PcapError::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            "the last record is cut short".to_string()
        }
        other => other.to_string(),
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
