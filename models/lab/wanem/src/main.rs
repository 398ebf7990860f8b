//! wanem: a layer-2 WAN emulator between two interfaces.
//!
//! Frames read on one interface (AF_PACKET, every protocol, our own sends ignored through
//! PACKET_IGNORE_OUTGOING) are written unchanged to the other one after the path of their
//! remote address has had its say: loss, rate limit with a bounded queue, one-way delay with
//! jitter. One thread, one timer heap, ppoll with nanosecond timeouts; packets are read and
//! written in batches (recvmmsg/sendmmsg). Counters go to stdout as a JSON line (and to stderr
//! as text) on SIGUSR1 and at exit (SIGTERM, SIGINT, SIGHUP). See README.md beside this file.

mod config;
mod json;
mod packet;
mod rng;
mod sched;

use config::{Config, DIR_NAMES, DOWN, UP};
use sched::{Counters, Due, Scheduler};
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Instant;

const BATCH: usize = 64;
/// Send a packet this early rather than sleep again (timer wake-ups cost more than 20 us).
const EARLY_NS: u64 = 20_000;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_OUTGOING: u8 = 4;

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

struct Iface {
    name: String,
    fd: libc::c_int,
    kernel_drops: u64,
    mtu: usize,
}

fn setopt(fd: libc::c_int, level: libc::c_int, opt: libc::c_int, val: libc::c_int) -> bool {
    // SAFETY: a plain int option on a valid socket.
    unsafe {
        libc::setsockopt(fd, level, opt, &val as *const _ as *const libc::c_void, std::mem::size_of::<libc::c_int>() as u32) == 0
    }
}

impl Iface {
    fn open(name: &str) -> Result<Iface, String> {
        let cname = std::ffi::CString::new(name).map_err(|_| format!("bad interface name {name:?}"))?;
        // SAFETY: FFI calls with valid arguments; every return value is checked.
        unsafe {
            let ifindex = libc::if_nametoindex(cname.as_ptr());
            if ifindex == 0 {
                return Err(format!("interface {name}: {}", errno()));
            }
            // protocol 0: nothing is queued before bind() picks the interface
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(format!("AF_PACKET socket: {} (needs CAP_NET_RAW)", errno()));
            }
            let mut ifr: libc::ifreq = std::mem::zeroed();
            for (i, b) in name.bytes().take(libc::IFNAMSIZ - 1).enumerate() {
                ifr.ifr_name[i] = b as libc::c_char;
            }
            let mtu = if libc::ioctl(fd, libc::SIOCGIFMTU, &mut ifr) == 0 { ifr.ifr_ifru.ifru_mtu as usize } else { 1500 };
            if !setopt(fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1) {
                eprintln!("wanem: {name}: PACKET_IGNORE_OUTGOING not available ({}); outgoing frames are skipped by type", errno());
            }
            setopt(fd, libc::SOL_PACKET, PACKET_QDISC_BYPASS, 1);
            for (force, plain) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
                if !setopt(fd, libc::SOL_SOCKET, force, 32 << 20) {
                    setopt(fd, libc::SOL_SOCKET, plain, 32 << 20);
                }
            }
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            sll.sll_ifindex = ifindex as i32;
            if libc::bind(fd, &sll as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_ll>() as u32) != 0 {
                let e = errno();
                libc::close(fd);
                return Err(format!("bind to {name}: {e}"));
            }
            let mut mr: libc::packet_mreq = std::mem::zeroed();
            mr.mr_ifindex = ifindex as i32;
            mr.mr_type = libc::PACKET_MR_PROMISC as u16;
            if libc::setsockopt(fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mr as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::packet_mreq>() as u32) != 0
            {
                eprintln!("wanem: {name}: promiscuous mode: {}", errno());
            }
            Ok(Iface { name: name.to_string(), fd, kernel_drops: 0, mtu })
        }
    }

    /// Adds the kernel's drop count since the last call (reading resets it).
    fn poll_kernel_drops(&mut self) {
        #[repr(C)]
        struct TpacketStats {
            packets: u32,
            drops: u32,
        }
        let mut st = TpacketStats { packets: 0, drops: 0 };
        let mut len = std::mem::size_of::<TpacketStats>() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `st`.
        if unsafe { libc::getsockopt(self.fd, libc::SOL_PACKET, PACKET_STATISTICS, &mut st as *mut _ as *mut libc::c_void, &mut len) } == 0 {
            self.kernel_drops += st.drops as u64;
        }
    }
}

impl Drop for Iface {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// Packet buffers: a slot per packet in flight, allocated on first use, reused after.
struct Pool {
    slot_size: usize,
    cap: usize,
    bufs: Vec<Box<[u8]>>,
    len: Vec<u32>,
    free: Vec<u32>,
}

impl Pool {
    fn alloc(&mut self) -> Option<u32> {
        if let Some(s) = self.free.pop() {
            return Some(s);
        }
        if self.bufs.len() < self.cap {
            self.bufs.push(vec![0u8; self.slot_size].into_boxed_slice());
            self.len.push(0);
            return Some(self.bufs.len() as u32 - 1);
        }
        None
    }
    fn release(&mut self, s: u32) {
        self.free.push(s);
    }
}

struct Wanem {
    cfg: Config,
    sched: Scheduler,
    ifs: [Iface; 2], // [inner, outer]; direction d reads ifs[d] and writes ifs[1 - d]
    pool: Pool,
    start: Instant,
    oversize: u64,
    tx: [Vec<(u32, usize, bool)>; 2], // per output interface: (slot, path, held)
    stats_file: Option<String>,
}

fn now_ns(start: &Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

impl Wanem {
    /// Read up to one batch from interface `d`; returns how many frames were read.
    fn rx_batch(&mut self, d: usize) -> Result<usize, String> {
        let mut slots = [0u32; BATCH];
        let mut n = 0;
        while n < BATCH {
            match self.pool.alloc() {
                Some(s) => {
                    slots[n] = s;
                    n += 1;
                }
                None => break,
            }
        }
        if n == 0 {
            return Ok(0); // cannot happen: the pool holds max_packets + 2 batches
        }
        // SAFETY: iovecs and headers point into live pool buffers and local arrays for the call.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut addr: [libc::sockaddr_ll; BATCH] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            let b = &mut self.pool.bufs[slots[i] as usize];
            iov[i] = libc::iovec { iov_base: b.as_mut_ptr() as *mut libc::c_void, iov_len: b.len() };
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &mut addr[i] as *mut _ as *mut libc::c_void;
            msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        }
        let r = unsafe { libc::recvmmsg(self.ifs[d].fd, msgs.as_mut_ptr(), n as u32, libc::MSG_DONTWAIT | libc::MSG_TRUNC, std::ptr::null_mut()) };
        let got = if r < 0 {
            let e = errno();
            match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ENETDOWN) => 0,
                _ => {
                    for &s in &slots[..n] {
                        self.pool.release(s);
                    }
                    return Err(format!("receive on {}: {e}", self.ifs[d].name));
                }
            }
        } else {
            r as usize
        };
        let now = now_ns(&self.start);
        for i in 0..got {
            let s = slots[i];
            let len = msgs[i].msg_len as usize;
            if addr[i].sll_pkttype == PACKET_OUTGOING {
                self.pool.release(s);
                continue;
            }
            if len > self.pool.slot_size || msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.oversize += 1;
                self.pool.release(s);
                continue;
            }
            self.pool.len[s as usize] = len as u32;
            let key = packet::remote_key(&self.pool.bufs[s as usize][..len], d, self.cfg.local_resolution);
            if !self.sched.on_packet(now, d, key, len, s) {
                self.pool.release(s);
            }
        }
        for &s in &slots[got..n] {
            self.pool.release(s);
        }
        Ok(got)
    }

    /// Send what is queued for output interface `o`.
    fn flush(&mut self, o: usize) {
        let d = 1 - o; // the direction whose frames leave on interface o
        let batch = std::mem::take(&mut self.tx[o]);
        let n = batch.len();
        let mut done = 0;
        while done < n {
            let m = (n - done).min(BATCH);
            // SAFETY: as in rx_batch.
            let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
            let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for i in 0..m {
                let s = batch[done + i].0 as usize;
                iov[i] = libc::iovec { iov_base: self.pool.bufs[s].as_mut_ptr() as *mut libc::c_void, iov_len: self.pool.len[s] as usize };
                msgs[i].msg_hdr.msg_iov = &mut iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            let r = unsafe { libc::sendmmsg(self.ifs[o].fd, msgs.as_mut_ptr(), m as u32, libc::MSG_DONTWAIT) };
            let sent = if r > 0 {
                r as usize
            } else if r < 0 && errno().raw_os_error() == Some(libc::EINTR) {
                continue;
            } else {
                // the first frame failed (full socket buffer, interface down, ...): drop it, go on
                let (s, p, _) = batch[done];
                self.sched.paths[p].dir[d].c.dropped_tx += 1;
                self.pool.release(s);
                done += 1;
                continue;
            };
            for &(s, p, held) in &batch[done..done + sent] {
                let c = &mut self.sched.paths[p].dir[d].c;
                c.forwarded += 1;
                c.forwarded_bytes += self.pool.len[s as usize] as u64;
                c.delayed += held as u64;
                self.pool.release(s);
            }
            done += sent;
        }
        let mut batch = batch;
        batch.clear();
        self.tx[o] = batch;
    }

    fn run_due(&mut self) {
        let now = now_ns(&self.start) + EARLY_NS;
        while let Some(due) = self.sched.pop_due(now) {
            match due {
                Due::Send { dir, path, slot, held } => {
                    let o = 1 - dir;
                    self.tx[o].push((slot, path, held));
                    if self.tx[o].len() >= BATCH {
                        self.flush(o);
                    }
                }
                Due::Drop { slot } => self.pool.release(slot),
            }
        }
        for o in 0..2 {
            if !self.tx[o].is_empty() {
                self.flush(o);
            }
        }
    }

    fn stats(&mut self, reason: &str) {
        for i in &mut self.ifs {
            i.poll_kernel_drops();
        }
        fn cj(c: &Counters) -> String {
            format!(
                "{{\"rx\":{},\"rx_bytes\":{},\"forwarded\":{},\"forwarded_bytes\":{},\"delayed\":{},\"dropped_loss\":{},\"dropped_queue\":{},\"dropped_overflow\":{},\"dropped_tx\":{}}}",
                c.rx, c.rx_bytes, c.forwarded, c.forwarded_bytes, c.delayed, c.dropped_loss, c.dropped_queue, c.dropped_overflow, c.dropped_tx
            )
        }
        let mut tot = [Counters::default(), Counters::default()];
        for p in &self.sched.paths {
            for d in 0..2 {
                tot[d].add(&p.dir[d].c);
            }
        }
        let up = self.start.elapsed().as_secs_f64();
        let mut j = format!(
            "{{\"reason\":\"{}\",\"uptime_s\":{:.3},\"inner\":\"{}\",\"outer\":\"{}\",\"seed\":{},\"in_flight\":{},\"oversize\":{},\"rx_kernel_drops\":{{\"inner\":{},\"outer\":{}}},\"link_dropped_queue\":{{\"up\":{},\"down\":{}}},\"up\":{},\"down\":{},\"paths\":[",
            reason, up, config::esc(&self.ifs[0].name), config::esc(&self.ifs[1].name), self.cfg.seed, self.sched.in_flight(), self.oversize,
            self.ifs[0].kernel_drops, self.ifs[1].kernel_drops, self.sched.link_dropped_queue[UP], self.sched.link_dropped_queue[DOWN],
            cj(&tot[UP]), cj(&tot[DOWN])
        );
        for (i, p) in self.sched.paths.iter().enumerate() {
            if i > 0 {
                j.push(',');
            }
            let _ = write!(j, "{{\"name\":\"{}\",\"up\":{},\"down\":{}}}", config::esc(&p.name), cj(&p.dir[UP].c), cj(&p.dir[DOWN].c));
        }
        j.push_str("]}");
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{j}");
        let _ = out.flush();
        if let Some(f) = &self.stats_file {
            let tmp = format!("{f}.tmp");
            if std::fs::write(&tmp, format!("{j}\n")).and_then(|_| std::fs::rename(&tmp, f)).is_err() {
                eprintln!("wanem: cannot write {f}");
            }
        }
        let mut t = format!("wanem {reason} after {up:.1} s: {} in flight, {} oversize, kernel drops {}/{}\n", self.sched.in_flight(),
            self.oversize, self.ifs[0].kernel_drops, self.ifs[1].kernel_drops);
        let line = |t: &mut String, name: &str, d: usize, c: &Counters| {
            let _ = writeln!(t, "  {name:<16} {:<4} rx {:>10} fwd {:>10} delayed {:>10} loss {:>8} queue {:>8} overflow {:>6} tx-err {:>6}",
                DIR_NAMES[d], c.rx, c.forwarded, c.delayed, c.dropped_loss, c.dropped_queue, c.dropped_overflow, c.dropped_tx);
        };
        for d in 0..2 {
            line(&mut t, "total", d, &tot[d]);
        }
        for p in &self.sched.paths {
            for d in 0..2 {
                if p.dir[d].c.rx > 0 {
                    line(&mut t, &p.name, d, &p.dir[d].c);
                }
            }
        }
        eprint!("{t}");
    }
}

const USAGE: &str = "usage: wanem --inner IF --outer IF [--config FILE.json] [--seed N] [--max-packets N]
             [--delay-ms MS] [--jitter-ms MS] [--loss P] [--rate-mbit R]      (the default path)
             [--link-up-mbit R] [--link-down-mbit R]                        (the shared access link)
             [--path 'PREFIX[,PREFIX...]@key=value,...']...                  (e.g. 198.51.100.7@delay_ms=40,loss=0.01)
             [--local-resolution]          (ARP and IPv6 ND take the default path, not their address's)
             [--stats-file FILE] [--print-config]
Bridges IF and IF: frames from --inner go \"up\" to --outer, frames from --outer go \"down\".
Counters: SIGUSR1 (and exit on SIGTERM/SIGINT/SIGHUP) print a JSON line on stdout.";

fn parse_args() -> Result<(Config, Option<String>, bool), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cfg = Config::empty();
    // the file first, whatever its place on the line; the options then override it
    if let Some(i) = args.iter().position(|a| a == "--config") {
        let f = args.get(i + 1).ok_or("--config needs a file")?;
        let text = std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?;
        cfg = Config::from_json(&text).map_err(|e| format!("{f}: {e}"))?;
    }
    let mut stats_file = None;
    let mut print = false;
    let mut paths = vec![];
    let mut i = 0;
    let num = |v: Option<&String>, k: &str| -> Result<f64, String> {
        v.and_then(|s| s.parse::<f64>().ok()).filter(|x| x.is_finite() && *x >= 0.0).ok_or_else(|| format!("{k} needs a number >= 0"))
    };
    while i < args.len() {
        let k = args[i].as_str();
        let v = args.get(i + 1);
        let mut takes = true;
        match k {
            "--config" => {}
            "--inner" => cfg.inner = v.ok_or("--inner needs an interface")?.clone(),
            "--outer" => cfg.outer = v.ok_or("--outer needs an interface")?.clone(),
            "--seed" => cfg.seed = num(v, k)? as u64,
            "--max-packets" => cfg.max_packets = (num(v, k)? as usize).max(64),
            "--delay-ms" | "--jitter-ms" | "--loss" | "--rate-mbit" => {
                let x = num(v, k)?;
                if k == "--loss" && x > 1.0 {
                    return Err("--loss is a probability (0..1)".into());
                }
                for d in &mut cfg.paths[0].dir {
                    match k {
                        "--delay-ms" => d.delay_ms = x,
                        "--jitter-ms" => d.jitter_ms = x,
                        "--loss" => d.loss = x,
                        _ => d.rate_mbit = x,
                    }
                }
            }
            "--link-up-mbit" | "--link-down-mbit" => {
                let x = num(v, k)?;
                let d = if k == "--link-up-mbit" { UP } else { DOWN };
                cfg.link[d] = (x > 0.0).then(|| config::LinkParams { rate_mbit: x, burst_bytes: None, queue_ms: 100.0, queue_bytes: None });
            }
            "--path" => paths.push(v.ok_or("--path needs a value")?.clone()),
            "--stats-file" => stats_file = Some(v.ok_or("--stats-file needs a file")?.clone()),
            "--local-resolution" => {
                cfg.local_resolution = true;
                takes = false;
            }
            "--print-config" => {
                print = true;
                takes = false;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown option {k}\n{USAGE}")),
        }
        i += if takes { 2 } else { 1 };
    }
    for p in paths {
        cfg.add_path_spec(&p)?;
    }
    if !print && (cfg.inner.is_empty() || cfg.outer.is_empty()) {
        return Err(format!("--inner and --outer are required\n{USAGE}"));
    }
    if !print && cfg.inner == cfg.outer {
        return Err("--inner and --outer must differ".into());
    }
    Ok((cfg, stats_file, print))
}

fn signal_fd() -> Result<libc::c_int, String> {
    // SAFETY: signal mask and signalfd set-up with valid pointers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1] {
            libc::sigaddset(&mut set, s);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err("sigprocmask failed".into());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(format!("signalfd: {}", errno()));
        }
        Ok(fd)
    }
}

fn run() -> Result<(), String> {
    let (cfg, stats_file, print) = parse_args()?;
    if print {
        println!("{}", cfg.to_json());
        return Ok(());
    }
    let sfd = signal_fd()?;
    let inner = Iface::open(&cfg.inner)?;
    let outer = Iface::open(&cfg.outer)?;
    // timers as exact as the kernel can make them (default slack is 50 us)
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
    let slot_size = (inner.mtu.max(outer.mtu) + 14 + 8 + 64).max(2048);
    let mut w = Wanem {
        sched: Scheduler::new(&cfg),
        pool: Pool { slot_size, cap: cfg.max_packets + 4 * BATCH, bufs: vec![], len: vec![], free: vec![] },
        ifs: [inner, outer],
        cfg,
        start: Instant::now(),
        oversize: 0,
        tx: [Vec::with_capacity(BATCH), Vec::with_capacity(BATCH)],
        stats_file,
    };
    eprintln!("wanem: {} <-> {}, {} paths, seed {}", w.ifs[0].name, w.ifs[1].name, w.sched.paths.len(), w.cfg.seed);
    let mut fds = [
        libc::pollfd { fd: w.ifs[0].fd, events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: w.ifs[1].fd, events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: sfd, events: libc::POLLIN, revents: 0 },
    ];
    loop {
        let ts;
        let tsp = match w.sched.next_deadline() {
            Some(t) => {
                let wait = t.saturating_sub(now_ns(&w.start) + EARLY_NS);
                ts = libc::timespec { tv_sec: (wait / 1_000_000_000) as libc::time_t, tv_nsec: (wait % 1_000_000_000) as libc::c_long };
                &ts as *const libc::timespec
            }
            None => std::ptr::null(),
        };
        // SAFETY: three valid pollfds; tsp is null or points at `ts`.
        let r = unsafe { libc::ppoll(fds.as_mut_ptr(), 3, tsp, std::ptr::null()) };
        if r < 0 && errno().raw_os_error() != Some(libc::EINTR) {
            return Err(format!("ppoll: {}", errno()));
        }
        if r > 0 && fds[2].revents & libc::POLLIN != 0 {
            // SAFETY: reads whole signalfd_siginfo records into a local.
            let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            while unsafe { libc::read(sfd, &mut si as *mut _ as *mut libc::c_void, std::mem::size_of::<libc::signalfd_siginfo>()) }
                == std::mem::size_of::<libc::signalfd_siginfo>() as isize
            {
                if si.ssi_signo == libc::SIGUSR1 as u32 {
                    w.stats("SIGUSR1");
                } else {
                    let name = match si.ssi_signo as i32 {
                        libc::SIGTERM => "SIGTERM",
                        libc::SIGINT => "SIGINT",
                        _ => "SIGHUP",
                    };
                    w.stats(name);
                    // SAFETY: our descriptor.
                    unsafe { libc::close(sfd) };
                    return Ok(());
                }
            }
        }
        for d in 0..2 {
            if r > 0 && fds[d].revents & (libc::POLLIN | libc::POLLERR) != 0 {
                // a bounded number of batches, then the timers get their turn
                for _ in 0..4 {
                    if w.rx_batch(d)? < BATCH {
                        break;
                    }
                }
            }
        }
        w.run_due();
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("wanem: {e}");
        std::process::exit(1);
    }
}
