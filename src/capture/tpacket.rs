//! Live capture through a TPACKET_V3 memory-mapped ring (Linux AF_PACKET), the default backend.
//!
//! The kernel writes frames into blocks of a ring shared with this process and hands over a
//! whole block at a time, when it is full or `READ_TIMEOUT` after its first frame; the capture
//! thread walks the block and gives it back. No system call per frame, no copy of the frame,
//! and the kernel's own receive timestamp for each one. Several sockets can share an interface
//! through PACKET_FANOUT (hash mode: both directions of a flow reach the same socket, so the
//! packets of one flow stay in order within one capture thread).
//!
//! The `unsafe` here is limited to the system calls (socket options, mmap, poll), to reading
//! and writing a block's status word, and to viewing a block the kernel has handed over as a
//! byte slice; everything inside a block is read with checked offsets by plain functions
//! ([`block_packets`], [`frame_at`]) that the tests run on made-up blocks.
//!
//! This backend is always built on Linux rather than behind a cargo feature: it needs only the
//! libc crate, which the binary links anyway (signal-hook, tract), it adds a few kilobytes, and
//! it is what a router build should capture with. A feature would only let a build leave out
//! its best backend; `pnet` stays a feature because it is a dependency and only a fallback.

use std::ffi::CString;
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use super::live::{Frame, KernelStats, LinkReceiver, LiveError, READ_TIMEOUT};
use crate::packet::Micros;

/// Bytes of each frame the kernel copies into the ring: enough for every header the parser
/// reads (Ethernet with two VLAN tags, IPv6 with extension headers, TCP with options, the
/// quoted headers of an ICMP error), so a full-size frame takes 320 bytes of ring, not 1.6 KB.
pub const SNAPLEN: u32 = 256;

/// The size and shape of one socket's ring (`capture.ring_block_kib`, `capture.ring_blocks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingSize {
    pub block_bytes: usize,
    pub blocks: usize,
}

/// Opens `threads` ring sockets on one interface; with more than one they form a fanout group.
pub fn open(
    name: &str,
    promiscuous: bool,
    ring: RingSize,
    threads: usize,
) -> Result<Vec<TpacketReceiver>, LiveError> {
    let open_err = |error: io::Error| LiveError::Open {
        name: name.to_string(),
        error,
    };
    let ifindex = interface_index(name)?;
    let page = page_size();
    if !ring.block_bytes.is_multiple_of(page) {
        return Err(open_err(io::Error::other(format!(
            "capture.ring_block_kib must be a multiple of the page size ({} KiB here)",
            page / 1024
        ))));
    }
    let mut receivers = Vec::with_capacity(threads);
    let mut fanout_id = None;
    for _ in 0..threads.max(1) {
        let rx = TpacketReceiver::open(name, ifindex, promiscuous, ring)?;
        if threads > 1 {
            fanout_id = Some(rx.join_fanout(fanout_id).map_err(|e| {
                open_err(io::Error::new(
                    e.kind(),
                    format!("joining a PACKET_FANOUT group failed ({e}); set capture.threads = 1"),
                ))
            })?);
        }
        receivers.push(rx);
    }
    Ok(receivers)
}

/// One AF_PACKET socket with its mapped ring, and where the capture thread is in it.
pub struct TpacketReceiver {
    // Declared before `fd`, so the ring is unmapped before the socket is closed.
    ring: Ring,
    fd: OwnedFd,
    /// The block to look at next.
    next: usize,
    /// The block being walked: (index, frames left, offset of the next frame).
    walk: Option<(usize, u32, usize)>,
    /// A frame whose VLAN tag the kernel took out, with the tag put back.
    scratch: Vec<u8>,
    /// The link layer of the interface's frames (live::open sets it).
    pub(crate) link: crate::parse::LinkType,
}

impl TpacketReceiver {
    fn open(
        name: &str,
        ifindex: i32,
        promiscuous: bool,
        ring: RingSize,
    ) -> Result<TpacketReceiver, LiveError> {
        let open_err = |error: io::Error| LiveError::Open {
            name: name.to_string(),
            error,
        };
        // Protocol 0: the socket receives nothing until `bind` names the interface, so no
        // frame of another interface gets in while the ring is set up.
        // SAFETY: plain system call with constant arguments; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            let error = io::Error::last_os_error();
            return Err(match error.kind() {
                io::ErrorKind::PermissionDenied => LiveError::Permission {
                    name: name.to_string(),
                    error,
                },
                _ => open_err(error),
            });
        }
        // SAFETY: `fd` is a descriptor we just opened and own nowhere else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();

        setsockopt(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &(libc::tpacket_versions::TPACKET_V3 as libc::c_int),
        )
        .map_err(open_err)?;
        // A one-instruction classic BPF program, "accept the first SNAPLEN bytes".
        let mut snap = [libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: SNAPLEN,
        }];
        let program = libc::sock_fprog {
            len: 1,
            filter: snap.as_mut_ptr(),
        };
        setsockopt(raw, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &program).map_err(open_err)?;
        let frame_size = 2048; // only a unit of account in V3: frames are packed into blocks
        let req = libc::tpacket_req3 {
            tp_block_size: ring.block_bytes as u32,
            tp_block_nr: ring.blocks as u32,
            tp_frame_size: frame_size,
            tp_frame_nr: (ring.block_bytes / frame_size as usize * ring.blocks) as u32,
            tp_retire_blk_tov: READ_TIMEOUT.as_millis() as u32,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_RX_RING, &req).map_err(|e| {
            open_err(io::Error::new(
                e.kind(),
                format!(
                    "cannot set up a {} KiB ring ({e}); try smaller capture.ring_block_kib or \
                     capture.ring_blocks",
                    ring.block_bytes * ring.blocks / 1024
                ),
            ))
        })?;
        let ring = Ring::map(raw, ring).map_err(open_err)?;

        // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = ifindex;
        // SAFETY: `addr` is a valid sockaddr_ll and the length given is its size.
        let rc = unsafe {
            libc::bind(
                raw,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(open_err(io::Error::last_os_error()));
        }
        if promiscuous {
            // Taken back by the kernel when the socket closes.
            let mreq = libc::packet_mreq {
                mr_ifindex: ifindex,
                mr_type: libc::PACKET_MR_PROMISC as u16,
                mr_alen: 0,
                mr_address: [0; 8],
            };
            setsockopt(raw, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
                .map_err(open_err)?;
        }
        Ok(TpacketReceiver {
            ring,
            fd,
            next: 0,
            walk: None,
            scratch: Vec::with_capacity(SNAPLEN as usize + 4),
            link: crate::parse::LinkType::Ethernet,
        })
    }

    /// Joins the fanout group `id`, or creates a new group with an id the kernel picks (no
    /// clash with another program's group on the same host) and returns that id.
    fn join_fanout(&self, id: Option<u16>) -> io::Result<u16> {
        let mode = libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_DEFRAG;
        let raw = self.fd.as_raw_fd();
        match id {
            Some(id) => {
                let arg = u32::from(id) | (mode << 16);
                setsockopt(raw, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)?;
                Ok(id)
            }
            None => {
                let arg = (mode | libc::PACKET_FANOUT_FLAG_UNIQUEID) << 16;
                setsockopt(raw, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)?;
                let got: u32 = getsockopt(raw, libc::SOL_PACKET, libc::PACKET_FANOUT)?;
                Ok((got & 0xffff) as u16)
            }
        }
    }

    /// Waits up to READ_TIMEOUT for the kernel to hand over a block.
    fn poll(&self) -> io::Result<()> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN | libc::POLLERR,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, READ_TIMEOUT.as_millis() as i32) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }
}

impl LinkReceiver for TpacketReceiver {
    /// The next frame of the block being walked; at the end of a block, the block goes back to
    /// the kernel and the next one is walked if it is ready. `None` when no frame is ready
    /// right now (after a block ends) or within READ_TIMEOUT (when nothing was).
    fn recv(&mut self) -> io::Result<Option<Frame<'_>>> {
        let mut polled = false;
        let mut finished_block = false;
        loop {
            if let Some((index, left, offset)) = self.walk {
                let block = self.ring.block(index);
                if left > 0
                    && let Some(at) = frame_at(block, offset)
                {
                    self.walk = Some((index, left - 1, offset + at.next as usize));
                    let data = &self.ring.block(index)[at.data.clone()];
                    let frame = match at.vlan {
                        None => Frame {
                            data,
                            wire_len: at.wire_len,
                            ts: Some(at.ts),
                        },
                        Some(tag) => {
                            with_vlan_tag(data, tag, &mut self.scratch);
                            Frame {
                                data: &self.scratch,
                                wire_len: at.wire_len.saturating_add(4),
                                ts: Some(at.ts),
                            }
                        }
                    };
                    return Ok(Some(frame));
                }
                // The block is done (or holds something we cannot read: never from the
                // kernel, but a ring must not get stuck on it). Hand it back.
                self.ring.release(index);
                self.walk = None;
                self.next = (index + 1) % self.ring.blocks;
                finished_block = true;
            }
            if self.ring.ready(self.next) {
                let (count, first) = block_packets(self.ring.block(self.next));
                self.walk = Some((self.next, count, first));
                continue;
            }
            if polled || finished_block {
                return Ok(None);
            }
            self.poll()?;
            polled = true;
        }
    }

    fn kernel_stats(&mut self) -> io::Result<Option<KernelStats>> {
        // Reading the counters resets them, so each call returns what happened since the last.
        let s: libc::tpacket_stats_v3 = getsockopt(
            self.fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
        )?;
        Ok(Some(KernelStats {
            packets: u64::from(s.tp_packets),
            drops: u64::from(s.tp_drops),
            freezes: u64::from(s.tp_freeze_q_cnt),
        }))
    }

    fn link(&self) -> crate::parse::LinkType {
        self.link
    }

    fn ring_fill(&self) -> Option<(usize, usize)> {
        let filled = (0..self.ring.blocks)
            .filter(|&i| self.ring.ready(i))
            .count();
        Some((filled, self.ring.blocks))
    }
}

/// The mapped ring: `blocks` blocks of `block_size` bytes, unmapped on drop.
struct Ring {
    base: NonNull<u8>,
    block_size: usize,
    blocks: usize,
}

// SAFETY: the mapping belongs to this struct alone (nothing else keeps its address), so the
// thread that owns the struct may be any thread; it is never shared (`Ring` is not `Sync`).
unsafe impl Send for Ring {}

/// Where a block's status word sits: the kernel sets TP_STATUS_USER in it when it hands the
/// block over, and we set TP_STATUS_KERNEL to give it back.
const BLOCK_STATUS: usize =
    offset_of!(libc::tpacket_block_desc, hdr) + offset_of!(libc::tpacket_hdr_v1, block_status);

impl Ring {
    fn map(fd: RawFd, size: RingSize) -> io::Result<Ring> {
        let len = size.block_bytes * size.blocks;
        // SAFETY: maps the ring the kernel just allocated for `fd` (PACKET_RX_RING), whole, at
        // an address the kernel picks; the result is checked and unmapped in `drop`.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Ring {
            base: NonNull::new(base.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?,
            block_size: size.block_bytes,
            blocks: size.blocks,
        })
    }

    fn status(&self, index: usize) -> &AtomicU32 {
        assert!(index < self.blocks);
        // SAFETY: `index` is a block of the mapping, whose start is page-aligned, so the u32 at
        // BLOCK_STATUS (8) is in bounds and aligned. The kernel and this thread both access it,
        // which is what an atomic is for; it lives as long as `self`.
        unsafe {
            AtomicU32::from_ptr(
                self.base
                    .as_ptr()
                    .add(index * self.block_size + BLOCK_STATUS)
                    .cast(),
            )
        }
    }

    /// Whether the kernel has handed block `index` over. Acquire: the frames it wrote before
    /// setting the status are visible after this returns true.
    fn ready(&self, index: usize) -> bool {
        self.status(index).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0
    }

    /// Block `index`, which must be ready (handed over and not yet released).
    fn block(&self, index: usize) -> &[u8] {
        debug_assert!(self.ready(index));
        assert!(index < self.blocks);
        // SAFETY: in bounds of the mapping. While a block's status says TP_STATUS_USER the
        // kernel does not write it, and it only gets it back through `release`, which takes
        // `&mut self`, so no slice from here outlives the hand-back.
        unsafe {
            std::slice::from_raw_parts(
                self.base.as_ptr().add(index * self.block_size),
                self.block_size,
            )
        }
    }

    /// Gives block `index` back to the kernel. Release: our reads of it happen before.
    fn release(&mut self, index: usize) {
        self.status(index)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped; no slice of it can outlive `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.block_size * self.blocks);
        }
    }
}

/// One frame's place in a block, read with checked offsets.
#[derive(Debug, PartialEq, Eq)]
struct FrameAt {
    /// The captured bytes, as a range of the block.
    data: std::ops::Range<usize>,
    wire_len: u32,
    ts: Micros,
    /// The VLAN tag (TPID, TCI) the kernel took out of the frame, if any.
    vlan: Option<(u16, u16)>,
    /// Offset of the next frame from this one.
    next: u32,
}

fn u32_at(block: &[u8], at: usize) -> Option<u32> {
    let b = block.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn u16_at(block: &[u8], at: usize) -> Option<u16> {
    let b = block.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes([b[0], b[1]]))
}

/// A handed-over block's frame count and the offset of its first frame.
fn block_packets(block: &[u8]) -> (u32, usize) {
    let hdr = offset_of!(libc::tpacket_block_desc, hdr);
    let count = u32_at(block, hdr + offset_of!(libc::tpacket_hdr_v1, num_pkts));
    let first = u32_at(
        block,
        hdr + offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt),
    );
    match (count, first) {
        (Some(count), Some(first)) => (count, first as usize),
        _ => (0, 0),
    }
}

/// The frame whose tpacket3_hdr starts at `offset` of `block`; `None` when the header or the
/// frame would not fit in the block.
fn frame_at(block: &[u8], offset: usize) -> Option<FrameAt> {
    type H = libc::tpacket3_hdr;
    let field = |at: usize| u32_at(block, offset.checked_add(at)?);
    if offset.checked_add(size_of::<H>())? > block.len() {
        return None;
    }
    let next = field(offset_of!(H, tp_next_offset))?;
    let sec = field(offset_of!(H, tp_sec))?;
    let nsec = field(offset_of!(H, tp_nsec))?;
    let snaplen = field(offset_of!(H, tp_snaplen))? as usize;
    let wire_len = field(offset_of!(H, tp_len))?;
    let status = field(offset_of!(H, tp_status))?;
    let mac = usize::from(u16_at(block, offset + offset_of!(H, tp_mac))?);
    let hv1 = offset + offset_of!(H, hv1);
    let start = offset.checked_add(mac)?;
    let end = start.checked_add(snaplen)?;
    if end > block.len() {
        return None;
    }
    let vlan = if status & libc::TP_STATUS_VLAN_VALID != 0 {
        let tci = u32_at(
            block,
            hv1 + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tci),
        )?;
        let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
            u16_at(
                block,
                hv1 + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tpid),
            )?
        } else {
            0x8100
        };
        Some((tpid, tci as u16))
    } else {
        None
    };
    Some(FrameAt {
        data: start..end,
        wire_len,
        ts: u64::from(sec) * 1_000_000 + u64::from(nsec / 1000),
        vlan,
        next,
    })
}

/// Writes `frame` into `out` with the 802.1Q/802.1ad tag put back after the MAC addresses, as
/// it was on the wire (the kernel hands accelerated tags beside the frame, not in it).
fn with_vlan_tag(frame: &[u8], (tpid, tci): (u16, u16), out: &mut Vec<u8>) {
    out.clear();
    let split = frame.len().min(12);
    out.extend_from_slice(&frame[..split]);
    out.extend_from_slice(&tpid.to_be_bytes());
    out.extend_from_slice(&tci.to_be_bytes());
    out.extend_from_slice(&frame[split..]);
}

fn interface_index(name: &str) -> Result<i32, LiveError> {
    let missing = || {
        let mut known: Vec<String> = std::fs::read_dir("/sys/class/net")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        known.sort();
        LiveError::NoSuchInterface {
            name: name.to_string(),
            known: known.join(", "),
        }
    };
    let c = CString::new(name).map_err(|_| missing())?;
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(missing()),
        i => Ok(i as i32),
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { 4096 }
}

fn setsockopt<T>(fd: RawFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a valid T for the whole call and the length given is its size; every
    // caller passes the struct the kernel expects for `name`.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn getsockopt<T: Copy>(fd: RawFd, level: i32, name: i32) -> io::Result<T> {
    let mut value = std::mem::MaybeUninit::<T>::zeroed();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `value`, which has room for them.
    let rc = unsafe { libc::getsockopt(fd, level, name, value.as_mut_ptr().cast(), &mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zero-initialized, then filled by the kernel: every T used here (integers and
    // structs of integers) is valid for any bytes.
    Ok(unsafe { value.assume_init() })
}

#[cfg(test)]
mod tests {
    use super::*;

    type H = libc::tpacket3_hdr;
    const HDR: usize = offset_of!(libc::tpacket_block_desc, hdr);

    fn put32(block: &mut [u8], at: usize, v: u32) {
        block[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }

    fn put16(block: &mut [u8], at: usize, v: u16) {
        block[at..at + 2].copy_from_slice(&v.to_ne_bytes());
    }

    /// Writes a tpacket3_hdr at `at` whose frame starts `mac` bytes later.
    #[allow(clippy::too_many_arguments)]
    fn put_frame(
        block: &mut [u8],
        at: usize,
        next: u32,
        mac: u16,
        frame: &[u8],
        wire_len: u32,
        status: u32,
        vlan: (u16, u32),
    ) {
        put32(block, at + offset_of!(H, tp_next_offset), next);
        put32(block, at + offset_of!(H, tp_sec), 1_700_000_000);
        put32(block, at + offset_of!(H, tp_nsec), 123_456_789);
        put32(block, at + offset_of!(H, tp_snaplen), frame.len() as u32);
        put32(block, at + offset_of!(H, tp_len), wire_len);
        put32(block, at + offset_of!(H, tp_status), status);
        put16(block, at + offset_of!(H, tp_mac), mac);
        let hv1 = at + offset_of!(H, hv1);
        put32(
            block,
            hv1 + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tci),
            vlan.1,
        );
        put16(
            block,
            hv1 + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tpid),
            vlan.0,
        );
        let start = at + usize::from(mac);
        block[start..start + frame.len()].copy_from_slice(frame);
    }

    #[test]
    fn a_block_is_read_with_checked_offsets() {
        let mut block = vec![0u8; 1024];
        put32(
            &mut block,
            HDR + offset_of!(libc::tpacket_hdr_v1, num_pkts),
            2,
        );
        put32(
            &mut block,
            HDR + offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt),
            48,
        );
        assert_eq!(block_packets(&block), (2, 48));
        let first = [0xaa; 60];
        put_frame(&mut block, 48, 160, 66, &first, 1514, 1, (0, 0));
        let second = [0xbb; 42];
        let tagged =
            libc::TP_STATUS_USER | libc::TP_STATUS_VLAN_VALID | libc::TP_STATUS_VLAN_TPID_VALID;
        put_frame(
            &mut block,
            208,
            0,
            66,
            &second,
            42,
            tagged,
            (0x88a8, 0x2007),
        );

        let a = frame_at(&block, 48).unwrap();
        assert_eq!(a.data, 114..174);
        assert_eq!(&block[a.data.clone()], &first[..]);
        assert_eq!((a.wire_len, a.next, a.vlan), (1514, 160, None));
        assert_eq!(a.ts, 1_700_000_000_123_456);
        let b = frame_at(&block, 48 + a.next as usize).unwrap();
        assert_eq!(&block[b.data.clone()], &second[..]);
        assert_eq!(b.vlan, Some((0x88a8, 0x2007)));

        // A VLAN tag without a TPID is 802.1Q.
        put32(
            &mut block,
            208 + offset_of!(H, tp_status),
            1 | libc::TP_STATUS_VLAN_VALID,
        );
        assert_eq!(frame_at(&block, 208).unwrap().vlan, Some((0x8100, 0x2007)));

        // Nothing outside the block is ever read.
        assert_eq!(frame_at(&block, 1024 - size_of::<H>() + 1), None);
        assert_eq!(frame_at(&block, usize::MAX - 4), None);
        put32(&mut block, 208 + offset_of!(H, tp_snaplen), 1024);
        assert_eq!(frame_at(&block, 208), None);
        put16(&mut block, 208 + offset_of!(H, tp_mac), u16::MAX);
        assert_eq!(frame_at(&block, 208), None);
        assert_eq!(block_packets(&block[..HDR + 8]), (0, 0));
    }

    #[test]
    fn a_vlan_tag_goes_back_after_the_mac_addresses() {
        let frame: Vec<u8> = (0..20).collect();
        let mut out = Vec::new();
        with_vlan_tag(&frame, (0x8100, 10), &mut out);
        assert_eq!(&out[..12], &frame[..12]);
        assert_eq!(&out[12..16], &[0x81, 0x00, 0x00, 10]);
        assert_eq!(&out[16..], &frame[12..]);
        // A runt frame keeps what it has.
        with_vlan_tag(&frame[..5], (0x8100, 10), &mut out);
        assert_eq!(out, [0, 1, 2, 3, 4, 0x81, 0, 0, 10]);
    }

    /// A ring on the loopback interface (needs CAP_NET_RAW; skipped without it) sees a UDP
    /// datagram sent to itself, with a kernel timestamp and the kernel's counters.
    #[test]
    fn a_ring_on_loopback_sees_a_datagram() {
        let ring = RingSize {
            block_bytes: 64 * 1024,
            blocks: 4,
        };
        let mut rx = match open("lo", false, ring, 1) {
            Ok(mut r) => r.remove(0),
            Err(LiveError::Permission { .. }) => {
                eprintln!("skipped: needs CAP_NET_RAW");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port().to_be_bytes();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let payload = [0x5a; 600];
        let sent_at = crate::capture::live::Clock::now(&crate::capture::live::SystemClock);
        client
            .send_to(&payload, server.local_addr().unwrap())
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut seen = None;
        while seen.is_none() && std::time::Instant::now() < deadline {
            if let Some(f) = rx.recv().unwrap() {
                // Ethernet (14) + IPv4 (20) + UDP: destination port at 36.
                if f.data.get(36..38) == Some(&port[..]) && f.data.get(12..14) == Some(&[8, 0]) {
                    seen = Some((f.data.len(), f.wire_len, f.ts.unwrap()));
                }
            }
        }
        let (captured, wire_len, ts) = seen.expect("the datagram within 5 s");
        assert_eq!(wire_len, 14 + 20 + 8 + 600);
        assert_eq!(captured, SNAPLEN as usize, "cut to the snap length");
        assert!(
            ts.abs_diff(sent_at) < 2_000_000,
            "kernel time {ts} vs {sent_at}"
        );
        let stats = rx.kernel_stats().unwrap().unwrap();
        assert!(stats.packets >= 1 && stats.drops == 0, "{stats:?}");
    }
}
