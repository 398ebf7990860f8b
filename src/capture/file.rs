//! Capture files: pcap (both byte orders, µs and ns) and pcapng, read as a stream.
//!
//! Memory stays constant whatever the file size: the file is read in blocks of [`READ_BLOCK`]
//! into one buffer, and each frame is handed out as a slice of it, never copied. The buffer is
//! one block, larger only for a record or packet block longer than that, and never past
//! [`MAX_BLOCK_LEN`] plus a block header; longer non-packet pcapng blocks are skipped as they
//! stream by.
//!
//! The reader takes what libpcap takes, and says so where it repairs something (see
//! [`Repairs`]): link-type fields with the FCS-length and reserved bits set, sub-second fields of
//! a second or more, pcapng option lists without their end marker or with strings that are not
//! UTF-8 (options other than the timestamp resolution and offset are never decoded), obsolete
//! pcapng Packet Blocks, and sections of either byte order. (pcap-file, which this module used
//! before, refuses or skips each of those.) It stops at the first record it cannot frame, with
//! the reason in [`Truncation`], and keeps every frame before it.
//!
//! This module owns the file formats, not the frame contents (see `parse`).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::packet::{LAST_RFC3339_TS, MAX_TS, Micros};
use crate::parse::LinkType;

/// A record longer than this is not a real frame: the file is corrupt from there on.
pub const MAX_RECORD_LEN: u32 = 256 * 1024;
/// The longest pcapng block held in memory: a packet of [`MAX_RECORD_LEN`] with room for its
/// header and options. A longer packet block is corrupt; a longer block of another kind (a
/// name-resolution table, decryption secrets) is skipped without being held.
pub const MAX_BLOCK_LEN: u32 = MAX_RECORD_LEN + 64 * 1024;
/// The longest pcapng block skipped as it streams by (libpcap's limit for any block); a longer
/// one is taken for a corrupt length.
pub const MAX_SKIPPED_BLOCK_LEN: u32 = 16 * 1024 * 1024;

/// The pcap file header, then each record's header.
const PCAP_HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 16;
/// How much of a file is read at a time.
const READ_BLOCK: usize = 64 * 1024;

/// pcapng block types (the pcapng specification, section 11.1).
const SHB: u32 = 0x0a0d_0d0a;
const IDB: u32 = 1;
const PB: u32 = 2;
const SPB: u32 = 3;
const EPB: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;
/// Block type and total length, then (at the end) the total length again.
const BLOCK_HEADER_LEN: usize = 8;
const BLOCK_TRAILER_LEN: usize = 4;
/// A section header block with no options: header, byte-order magic, versions, section length,
/// trailer.
const MIN_SHB_LEN: usize = BLOCK_HEADER_LEN + 16 + BLOCK_TRAILER_LEN;

/// Interfaces one pcapng section may describe: a section with more is taken for corrupt, so
/// that a stream of description blocks cannot grow the reader without bound.
const MAX_INTERFACES: usize = 4096;

/// Upper bits of a link-type field (libpcap's `LINKTYPE_LINK_TYPE`): the FCS length and flag,
/// and reserved bits. Frames may then end with an FCS, which parsing ignores (it reads lengths
/// from the IP header).
const LINKTYPE_MASK: u32 = 0x03ff_ffff;

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
        "{path}: unsupported link type {linktype}; edgewatch reads Ethernet, Linux cooked (SLL, SLL2), raw IP, loopback, PPP, Cisco HDLC and NFLOG captures"
    )]
    UnsupportedLinkType { path: String, linktype: u32 },
    #[error("{path}: bad capture header: {detail}")]
    BadHeader { path: String, detail: String },
    #[error(
        "{path} is {compression}-compressed: decompress it first, or stream it, e.g. \
         `{tool} {path} | edgewatch replay /dev/stdin`"
    )]
    Compressed {
        path: String,
        compression: &'static str,
        tool: &'static str,
    },
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

/// What the reader repaired or left out on its way, for the warnings at the end of a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repairs {
    /// A link-type field with its upper (FCS-length or reserved) bits set, as found.
    pub linktype_upper_bits: Option<u32>,
    /// pcap records whose sub-second field was a second or more: carried into the seconds.
    pub fraction_carried: u64,
    /// Timestamps past [`MAX_TS`], clamped to it.
    pub ts_clamped: u64,
    /// Timestamps past 9999-12-31, which alert records (RFC 3339) show as that day's last µs.
    pub ts_after_9999: u64,
    /// pcapng interface options that could not be read (cut short, a resolution out of range):
    /// the interface keeps the default µs resolution and no offset.
    pub bad_options: u64,
    /// Frames on interfaces whose link type edgewatch does not read, skipped.
    pub unsupported_frames: u64,
    /// The first such link type.
    pub unsupported_linktype: Option<u32>,
}

/// The bytes of a capture, from a file or from memory.
type Source = Box<dyn Read + Send>;

/// A pcapng interface, as its description block says.
#[derive(Clone, Copy)]
struct Interface {
    /// The link type, or its number when edgewatch cannot read it.
    link: Result<LinkType, u32>,
    /// Timestamp units per second (`if_tsresol`; µs by default).
    units_per_s: u64,
    /// Seconds added to every timestamp (`if_tsoffset`).
    offset_s: i64,
    /// Longest captured frame (0: no limit), which bounds a simple packet block's frame.
    snaplen: u32,
}

enum Format {
    Pcap {
        link: LinkType,
        nanos: bool,
        big_endian: bool,
    },
    PcapNg {
        /// The current section's byte order.
        big_endian: bool,
        /// The current section's interfaces.
        interfaces: Vec<Interface>,
        /// The last timestamp seen: simple packet blocks carry none and take it.
        last_ts: Micros,
    },
}

/// A streaming reader over a pcap or pcapng file.
pub struct CaptureReader {
    format: Format,
    blocks: Blocks,
    records: u64,
    truncation: Option<Truncation>,
    repairs: Repairs,
}

/// Why the reader cannot go on: the detail of a [`Truncation`].
type Stop = String;

impl CaptureReader {
    pub fn open(path: &Path) -> Result<CaptureReader, CaptureError> {
        let display = path.display().to_string();
        let file = File::open(path).map_err(|source| CaptureError::Open {
            path: display.clone(),
            source,
        })?;
        // The reader reads in large blocks of its own: no BufReader in between.
        CaptureReader::from_reader(&display, file)
    }

    /// Reads a capture from any byte stream (a pipe, or bytes in memory); `name` stands for it
    /// in error messages.
    pub fn from_reader(
        name: &str,
        source: impl Read + Send + 'static,
    ) -> Result<CaptureReader, CaptureError> {
        let path = name.to_string();
        let mut blocks = Blocks::new(Box::new(source));
        let io_error = |source| CaptureError::Open {
            path: path.clone(),
            source,
        };
        let got = blocks.fill(4).map_err(io_error)?;
        let start = blocks.bytes(0, got).to_vec();
        let [a, b, c, d] = start[..] else {
            return Err(CaptureError::NotACapture {
                path,
                magic: describe_magic(&start),
            });
        };
        let magic = u32::from_be_bytes([a, b, c, d]);
        let mut repairs = Repairs::default();
        let format = match magic {
            0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1 => {
                let got = blocks.fill(PCAP_HEADER_LEN).map_err(io_error)?;
                if got < PCAP_HEADER_LEN {
                    return Err(CaptureError::BadHeader {
                        path,
                        detail: format!(
                            "the file ends inside the {PCAP_HEADER_LEN}-byte file header \
                             (after {got} bytes)"
                        ),
                    });
                }
                let big_endian = matches!(magic, 0xa1b2_c3d4 | 0xa1b2_3c4d);
                // The versions libpcap reads: 2.0 to 2.4, and 543.0 (written by a buggy tool).
                let version = (
                    u16_at(blocks.bytes(4, 2), big_endian),
                    u16_at(blocks.bytes(6, 2), big_endian),
                );
                if !matches!(version, (2, 0..=4) | (543, 0)) {
                    return Err(CaptureError::BadHeader {
                        path,
                        detail: format!(
                            "pcap version {}.{}; edgewatch reads versions 2.0 to 2.4",
                            version.0, version.1
                        ),
                    });
                }
                let field = u32_at(blocks.bytes(20, 4), big_endian);
                let linktype = field & LINKTYPE_MASK;
                if linktype != field {
                    repairs.linktype_upper_bits = Some(field);
                }
                let link = LinkType::from_linktype(linktype)
                    .ok_or(CaptureError::UnsupportedLinkType { path, linktype })?;
                blocks.consume(PCAP_HEADER_LEN);
                Format::Pcap {
                    link,
                    nanos: matches!(magic, 0xa1b2_3c4d | 0x4d3c_b2a1),
                    big_endian,
                }
            }
            SHB => {
                let big_endian = open_section(&mut blocks).map_err(|e| match e {
                    SectionError::Io(source) => CaptureError::Open { path, source },
                    SectionError::Cut => CaptureError::BadHeader {
                        path,
                        detail: "the file ends inside its first block (the section header)".into(),
                    },
                    SectionError::Bad(detail) => CaptureError::BadHeader { path, detail },
                })?;
                Format::PcapNg {
                    big_endian,
                    interfaces: Vec::new(),
                    last_ts: 0,
                }
            }
            _ => {
                let compressed = |compression, tool| CaptureError::Compressed {
                    path: path.clone(),
                    compression,
                    tool,
                };
                return Err(match start[..] {
                    [0x1f, 0x8b, ..] => compressed("gzip", "zcat"),
                    [0x28, 0xb5, 0x2f, 0xfd] => compressed("zstd", "zstdcat"),
                    [0xfd, b'7', b'z', b'X'] => compressed("xz", "xzcat"),
                    [b'B', b'Z', b'h', _] => compressed("bzip2", "bzcat"),
                    _ => CaptureError::NotACapture {
                        path,
                        magic: describe_magic(&start),
                    },
                });
            }
        };
        Ok(CaptureReader {
            format,
            blocks,
            records: 0,
            truncation: None,
            repairs,
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

    /// What the reader repaired or skipped so far.
    pub fn repairs(&self) -> &Repairs {
        &self.repairs
    }

    /// The next frame, or `None` at the end of the file (or at the first unreadable record,
    /// after which [`truncation`](Self::truncation) says why).
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        if self.truncation.is_some() {
            return None;
        }
        let next = match &mut self.format {
            Format::Pcap {
                link,
                nanos,
                big_endian,
            } => next_pcap(
                &mut self.blocks,
                &mut self.repairs,
                *link,
                *nanos,
                *big_endian,
            ),
            Format::PcapNg {
                big_endian,
                interfaces,
                last_ts,
            } => next_pcapng(
                &mut self.blocks,
                &mut self.repairs,
                big_endian,
                interfaces,
                last_ts,
            ),
        };
        match next {
            Ok(Some(found)) => {
                self.records += 1;
                let ts = clamp_ts(found.ts, &mut self.repairs);
                Some(Frame {
                    ts,
                    link: found.link,
                    data: &self.blocks.buf[found.data],
                    wire_len: found.wire_len,
                })
            }
            Ok(None) => None,
            Err(detail) => {
                self.truncation = Some(Truncation {
                    after_records: self.records,
                    detail,
                });
                None
            }
        }
    }
}

/// A frame found in the buffer: `data` is its range there.
struct Found {
    ts: Micros,
    link: LinkType,
    data: std::ops::Range<usize>,
    wire_len: u32,
}

fn clamp_ts(ts: Micros, repairs: &mut Repairs) -> Micros {
    if ts > LAST_RFC3339_TS {
        repairs.ts_after_9999 += 1;
        if ts > MAX_TS {
            repairs.ts_clamped += 1;
            return MAX_TS;
        }
    }
    ts
}

/// Reads one pcap record, `None` at a clean end of the file, or why the file cannot be read
/// further. The length is checked before a byte of the record is read, so a corrupt header never
/// makes the buffer grow.
fn next_pcap(
    blocks: &mut Blocks,
    repairs: &mut Repairs,
    link: LinkType,
    nanos: bool,
    big_endian: bool,
) -> Result<Option<Found>, Stop> {
    let got = blocks.fill(RECORD_HEADER_LEN).map_err(read_error)?;
    if got == 0 {
        return Ok(None);
    }
    if got < RECORD_HEADER_LEN {
        return Err(format!(
            "the last record is cut short inside its header ({got} of {RECORD_HEADER_LEN} bytes)"
        ));
    }
    let word = |i: usize| u32_at(blocks.bytes(i, 4), big_endian);
    let (ts_sec, frac, incl_len, orig_len) = (word(0), word(4), word(8), word(12));
    if incl_len > MAX_RECORD_LEN {
        return Err(format!(
            "record header is corrupt (length {incl_len}, more than the {MAX_RECORD_LEN} bytes \
             of any real frame)"
        ));
    }
    let total = RECORD_HEADER_LEN + incl_len as usize;
    let got = blocks.fill(total).map_err(read_error)?;
    if got < total {
        return Err(format!(
            "the last record is cut short ({} of {incl_len} bytes)",
            got - RECORD_HEADER_LEN
        ));
    }
    // libpcap hands a sub-second field of a second or more on as it is; here it is carried into
    // the seconds, so time stays monotonic within the record's second.
    let sub_us = u64::from(if nanos { frac / 1000 } else { frac });
    if sub_us >= 1_000_000 {
        repairs.fraction_carried += 1;
    }
    let data = blocks.start + RECORD_HEADER_LEN..blocks.start + total;
    blocks.consume(total);
    Ok(Some(Found {
        ts: u64::from(ts_sec) * 1_000_000 + sub_us,
        link,
        wire_len: orig_len.max(incl_len),
        data,
    }))
}

/// Reads pcapng blocks up to the next frame, `None` at a clean end of the file, or why the file
/// cannot be read further.
fn next_pcapng(
    blocks: &mut Blocks,
    repairs: &mut Repairs,
    big_endian: &mut bool,
    interfaces: &mut Vec<Interface>,
    last_ts: &mut Micros,
) -> Result<Option<Found>, Stop> {
    loop {
        let got = blocks.fill(BLOCK_HEADER_LEN).map_err(read_error)?;
        if got == 0 {
            return Ok(None);
        }
        if got < BLOCK_HEADER_LEN {
            return Err(format!(
                "the last record is cut short inside its block header ({got} of \
                 {BLOCK_HEADER_LEN} bytes)"
            ));
        }
        let kind = u32_at(blocks.bytes(0, 4), *big_endian);
        if kind == SHB {
            // A new section, maybe in the other byte order; its interfaces start afresh.
            *big_endian = open_section(blocks).map_err(|e| match e {
                SectionError::Io(e) => read_error(e),
                SectionError::Cut => "the last record is cut short (a section header)".to_string(),
                SectionError::Bad(detail) => format!("a later section header is corrupt: {detail}"),
            })?;
            interfaces.clear();
            continue;
        }
        let len = u32_at(blocks.bytes(4, 4), *big_endian);
        if (len as usize) < BLOCK_HEADER_LEN + BLOCK_TRAILER_LEN || !len.is_multiple_of(4) {
            return Err(format!(
                "block header is corrupt (block type {kind}, length {len}: not a multiple of 4 \
                 of at least 12)"
            ));
        }
        let is_packet = matches!(kind, EPB | PB | SPB);
        if len > MAX_BLOCK_LEN {
            if len > MAX_SKIPPED_BLOCK_LEN {
                return Err(format!(
                    "block header is corrupt (a block of type {kind} and {len} bytes, more than \
                     the {MAX_SKIPPED_BLOCK_LEN} bytes libpcap reads)"
                ));
            }
            if is_packet {
                return Err(format!(
                    "block header is corrupt (a packet block of {len} bytes, more than the \
                     {MAX_BLOCK_LEN} bytes of any real frame and its options)"
                ));
            }
            let skipped = blocks.skip(len as usize).map_err(read_error)?;
            if skipped < len as usize {
                return Err(format!(
                    "the last record is cut short (a block of type {kind} ends after {skipped} \
                     of {len} bytes)"
                ));
            }
            continue;
        }
        let len = len as usize;
        let got = blocks.fill(len).map_err(read_error)?;
        if got < len {
            return Err(format!(
                "the last record is cut short (a block of type {kind} ends after {got} of {len} \
                 bytes)"
            ));
        }
        let trailer = u32_at(blocks.bytes(len - BLOCK_TRAILER_LEN, 4), *big_endian);
        if trailer as usize != len {
            return Err(format!(
                "block is corrupt (type {kind}: its length is {len} at the start and {trailer} \
                 at the end)"
            ));
        }
        let body_at = blocks.start + BLOCK_HEADER_LEN;
        let body = blocks.bytes(BLOCK_HEADER_LEN, len - BLOCK_HEADER_LEN - BLOCK_TRAILER_LEN);
        let found = match kind {
            IDB => {
                if interfaces.len() >= MAX_INTERFACES {
                    return Err(format!(
                        "more than {MAX_INTERFACES} interfaces described in one section"
                    ));
                }
                interfaces.push(describe_interface(body, *big_endian, repairs)?);
                None
            }
            EPB | PB => {
                let fixed = 20;
                if body.len() < fixed {
                    return Err(format!("packet block is corrupt ({} bytes)", body.len()));
                }
                let word = |i: usize| u32_at(&body[i..i + 4], *big_endian);
                let (id, ts_high, ts_low, caplen, wire_len) = if kind == EPB {
                    (word(0), word(4), word(8), word(12), word(16))
                } else {
                    let id = u32::from(u16_at(&body[..2], *big_endian));
                    (id, word(4), word(8), word(12), word(16))
                };
                let Some(iface) = interfaces.get(id as usize) else {
                    return Err(format!(
                        "packet refers to interface {id} which was never described"
                    ));
                };
                if caplen > MAX_RECORD_LEN || caplen as usize > body.len() - fixed {
                    return Err(format!(
                        "packet block is corrupt (captured length {caplen}, the block holds {} \
                         bytes)",
                        body.len() - fixed
                    ));
                }
                let units = (u64::from(ts_high) << 32) | u64::from(ts_low);
                *last_ts = iface.micros(units);
                let start = body_at + fixed;
                Some((
                    iface.link,
                    start..start + caplen as usize,
                    wire_len.max(caplen),
                ))
            }
            SPB => {
                if body.len() < 4 {
                    return Err(format!("packet block is corrupt ({} bytes)", body.len()));
                }
                let Some(iface) = interfaces.first() else {
                    return Err("packet refers to interface 0 which was never described".into());
                };
                // The frame is its original length, cut by the snap length and the block.
                let wire_len = u32_at(&body[..4], *big_endian);
                let mut caplen = (wire_len as usize).min(body.len() - 4);
                if iface.snaplen > 0 {
                    caplen = caplen.min(iface.snaplen as usize);
                }
                let start = body_at + 4;
                Some((
                    iface.link,
                    start..start + caplen,
                    wire_len.max(caplen as u32),
                ))
            }
            _ => None,
        };
        blocks.consume(len);
        let Some((link, data, wire_len)) = found else {
            continue;
        };
        match link {
            Ok(link) => {
                return Ok(Some(Found {
                    ts: *last_ts,
                    link,
                    data,
                    wire_len,
                }));
            }
            Err(linktype) => {
                repairs.unsupported_frames += 1;
                repairs.unsupported_linktype.get_or_insert(linktype);
            }
        }
    }
}

impl Interface {
    /// A timestamp in this interface's units, in µs since the epoch (0 for a time before it).
    fn micros(&self, units: u64) -> Micros {
        let ups = u128::from(self.units_per_s);
        let units = u128::from(units);
        // At most 2^64 seconds plus an offset of at most 2^63: no overflow in i128.
        let seconds = (units / ups) as i128 + i128::from(self.offset_s);
        if seconds < 0 {
            return 0;
        }
        let us = seconds as u128 * 1_000_000 + (units % ups) * 1_000_000 / ups;
        Micros::try_from(us).unwrap_or(Micros::MAX)
    }
}

/// Reads an interface description block's body: the link type, the snap length and the
/// timestamp options. Other options are not read.
fn describe_interface(
    body: &[u8],
    big_endian: bool,
    repairs: &mut Repairs,
) -> Result<Interface, Stop> {
    if body.len() < 8 {
        return Err(format!(
            "interface description block is corrupt ({} bytes)",
            body.len()
        ));
    }
    let field = u32::from(u16_at(&body[..2], big_endian));
    let linktype = field & LINKTYPE_MASK;
    let mut iface = Interface {
        link: LinkType::from_linktype(linktype).ok_or(linktype),
        units_per_s: 1_000_000,
        offset_s: 0,
        snaplen: u32_at(&body[4..8], big_endian),
    };
    // Options until the end marker or the end of the body (the marker may be missing).
    let mut options = &body[8..];
    while options.len() >= 4 {
        let code = u16_at(&options[..2], big_endian);
        let len = usize::from(u16_at(&options[2..4], big_endian));
        let padded = len.div_ceil(4) * 4;
        let Some(value) = options.get(4..4 + len) else {
            repairs.bad_options += 1;
            break;
        };
        match (code, len) {
            (0, _) => break,
            (9, 1) => match value[0] {
                r if r & 0x80 != 0 && r & 0x7f <= 63 => iface.units_per_s = 1 << (r & 0x7f),
                r if r & 0x80 == 0 && r <= 19 => iface.units_per_s = 10u64.pow(u32::from(r)),
                _ => repairs.bad_options += 1,
            },
            (14, 8) => {
                let b: [u8; 8] = value.try_into().unwrap_or_default();
                iface.offset_s = if big_endian {
                    i64::from_be_bytes(b)
                } else {
                    i64::from_le_bytes(b)
                };
            }
            (9 | 14, _) => repairs.bad_options += 1,
            _ => {}
        }
        options = options.get(4 + padded..).unwrap_or_default();
    }
    Ok(iface)
}

enum SectionError {
    Io(io::Error),
    /// The file ends inside the section header.
    Cut,
    Bad(String),
}

/// Reads a section header block at the start of the buffer and returns its byte order. Its
/// options are skipped unread, however long they are.
fn open_section(blocks: &mut Blocks) -> Result<bool, SectionError> {
    let got = blocks.fill(12).map_err(SectionError::Io)?;
    if got < 12 {
        return Err(SectionError::Cut);
    }
    let big_endian = match u32::from_le_bytes(blocks.bytes(8, 4).try_into().unwrap_or_default()) {
        BYTE_ORDER_MAGIC => false,
        m if m.swap_bytes() == BYTE_ORDER_MAGIC => true,
        m => {
            return Err(SectionError::Bad(format!(
                "the section header's byte-order magic is 0x{m:08x}, not 0x{BYTE_ORDER_MAGIC:08x}"
            )));
        }
    };
    let len = u32_at(blocks.bytes(4, 4), big_endian);
    if (len as usize) < MIN_SHB_LEN || !len.is_multiple_of(4) || len > MAX_SKIPPED_BLOCK_LEN {
        return Err(SectionError::Bad(format!(
            "the section header's length {len} is impossible"
        )));
    }
    let fixed = MIN_SHB_LEN - BLOCK_TRAILER_LEN;
    if blocks.fill(fixed).map_err(SectionError::Io)? < fixed {
        return Err(SectionError::Cut);
    }
    // The versions libpcap reads: 1.0, and 1.2 (which some writers used for a while).
    let version = (
        u16_at(blocks.bytes(12, 2), big_endian),
        u16_at(blocks.bytes(14, 2), big_endian),
    );
    if !matches!(version, (1, 0 | 2)) {
        return Err(SectionError::Bad(format!(
            "pcapng version {}.{}; edgewatch reads version 1.0",
            version.0, version.1
        )));
    }
    if blocks.skip(len as usize).map_err(SectionError::Io)? < len as usize {
        return Err(SectionError::Cut);
    }
    Ok(big_endian)
}

/// A file's bytes, read a block at a time into one buffer; frames are slices of it.
struct Blocks {
    source: Source,
    buf: Vec<u8>,
    /// The bytes not consumed yet are `buf[start..end]`.
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

    /// `len` bytes at `at` from the start of what is not consumed yet; the caller has made them
    /// available with [`fill`](Self::fill).
    fn bytes(&self, at: usize, len: usize) -> &[u8] {
        &self.buf[self.start + at..self.start + at + len]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
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

    /// Consumes the next `n` bytes without holding more than a block of them at a time; returns
    /// how many there were (fewer than `n` only at the end of the stream).
    fn skip(&mut self, n: usize) -> io::Result<usize> {
        let mut skipped = 0;
        while skipped < n {
            let got = self.fill((n - skipped).min(READ_BLOCK))?;
            if got == 0 {
                break;
            }
            self.consume(got);
            skipped += got;
        }
        Ok(skipped)
    }
}

fn u32_at(b: &[u8], big_endian: bool) -> u32 {
    let b = [b[0], b[1], b[2], b[3]];
    if big_endian {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

fn u16_at(b: &[u8], big_endian: bool) -> u16 {
    let b = [b[0], b[1]];
    if big_endian {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    }
}

fn read_error(e: io::Error) -> Stop {
    format!("read error: {e}")
}

fn describe_magic(magic: &[u8]) -> String {
    if magic.is_empty() {
        "nothing (the file is empty)".to_string()
    } else {
        let hex: String = magic.iter().map(|b| format!("{b:02x}")).collect();
        format!("0x{hex}")
    }
}
