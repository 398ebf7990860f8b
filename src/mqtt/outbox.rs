//! The outbox: alerts waiting for the broker's acknowledgement, in a file that survives a crash.
//!
//! A FIFO of serialized alerts in one queue-file ring buffer (`mqtt-outbox.qf` in the state
//! directory; per-element CRC, header written last, so a crash mid-write leaves the previous
//! state). The sink appends a batch with one write and one `fdatasync`, before the alerts are
//! handed to the client; the publisher removes an alert only after its PUBACK. Removals are not
//! synced: after a power cut an acknowledged alert may come back and be sent twice, which
//! `alert_id` makes harmless. The data held is bounded by `max_bytes`: past it the oldest alerts
//! are dropped and counted. A file that cannot be read is moved aside with one log line and an
//! empty outbox takes its place, so a damaged file never stops the sensor from starting.
//!
//! Elements are numbered in memory by a sequence (`head_seq` is the oldest element's number), so
//! the publisher can track what it has in flight while the sink drops from the head. This module
//! knows nothing of MQTT.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use queue_file::QueueFile;

/// File name of the outbox in the state directory.
pub const OUTBOX_FILE: &str = "mqtt-outbox.qf";
/// Held locked while a process uses the outbox, so two agents never share one.
const LOCK_FILE: &str = "mqtt-outbox.lock";
/// Bytes counted per element on top of its payload (the element's header and footer).
const ELEMENT_OVERHEAD: u64 = 32;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot create the state directory {path}: {source} (set state_dir or --state-dir)")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "another edgewatch process is using the outbox in {path}; give each instance its own state_dir"
    )]
    Locked { path: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Queue {
        path: String,
        source: queue_file::Error,
    },
}

/// The outbox, shared by the sink (append) and the publisher (read, remove).
pub struct Outbox {
    path: PathBuf,
    max_bytes: u64,
    inner: Mutex<Inner>,
    _lock: File,
}

struct Inner {
    queue: QueueFile,
    /// Sequence number of the oldest element.
    head_seq: u64,
    /// Payload length of every element, oldest first (4 bytes per alert held).
    lens: VecDeque<u32>,
    /// Bytes held, counting `ELEMENT_OVERHEAD` per element.
    bytes: u64,
    /// Alerts dropped because the outbox was full or could not be written.
    dropped: u64,
    /// Whether the last append had to drop: a full outbox is logged once per episode.
    full: bool,
}

/// A copy of the outbox's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxCounters {
    pub depth: u64,
    pub bytes: u64,
    pub dropped: u64,
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir`, holding at most `max_bytes` of alerts. A file that
    /// cannot be read as an outbox is moved aside, with a warning, and replaced by an empty one.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Outbox, OutboxError> {
        let display = |p: &Path| p.display().to_string();
        std::fs::create_dir_all(dir).map_err(|source| OutboxError::StateDir {
            path: display(dir),
            source,
        })?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::create(&lock_path).map_err(|source| OutboxError::Io {
            path: display(&lock_path),
            source,
        })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OutboxError::Locked { path: display(dir) });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(OutboxError::Io {
                    path: display(&lock_path),
                    source,
                });
            }
        }
        let path = dir.join(OUTBOX_FILE);
        let (queue, lens) = match load(&path) {
            Ok(loaded) => loaded,
            Err(e) if is_damage(&e) => {
                let aside = move_aside(&path).map_err(|source| OutboxError::Io {
                    path: display(&path),
                    source,
                })?;
                log::warn!(
                    "The MQTT outbox {} is damaged ({e}); moved it aside to {} and started an empty one: the alerts in it will not be sent.",
                    path.display(),
                    aside.display()
                );
                load(&path).map_err(|source| OutboxError::Queue {
                    path: display(&path),
                    source,
                })?
            }
            Err(source) => {
                return Err(OutboxError::Queue {
                    path: display(&path),
                    source,
                });
            }
        };
        let bytes = lens.iter().map(|&l| u64::from(l) + ELEMENT_OVERHEAD).sum();
        let inner = Inner {
            queue,
            head_seq: 0,
            lens,
            bytes,
            dropped: 0,
            full: false,
        };
        Ok(Outbox {
            path,
            max_bytes: max_bytes.max(1),
            inner: Mutex::new(inner),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every mutation is committed by
        // queue-file before the bookkeeping changes), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a batch with one write and one sync. Makes room by dropping the oldest alerts
    /// when the batch would not fit. On a write error the batch is counted as dropped.
    pub fn append(&self, docs: &[Vec<u8>]) -> Result<(), OutboxError> {
        if docs.is_empty() {
            return Ok(());
        }
        let mut inner = self.lock();
        let inner = &mut *inner;
        let span = |d: &Vec<u8>| d.len() as u64 + ELEMENT_OVERHEAD;
        // A batch larger than the whole outbox keeps only its newest alerts.
        let mut skip = 0;
        let mut need: u64 = docs.iter().map(span).sum();
        while need > self.max_bytes && skip < docs.len() {
            need -= span(&docs[skip]);
            skip += 1;
        }
        let mut drop = 0;
        let mut freed = 0;
        while inner.bytes - freed + need > self.max_bytes && drop < inner.lens.len() {
            freed += u64::from(inner.lens[drop]) + ELEMENT_OVERHEAD;
            drop += 1;
        }
        if drop > 0 {
            self.remove_head(inner, drop)?;
        }
        let dropped = (drop + skip) as u64;
        inner.dropped += dropped;
        if dropped > 0 && !inner.full {
            log::warn!(
                "The MQTT outbox is full ({:.1} MB of alerts waiting for the broker): dropping the oldest alerts, counted as alerts_outbox_dropped.",
                self.max_bytes as f64 / 1e6
            );
        }
        inner.full = dropped > 0;
        let docs = &docs[skip..];
        inner.queue.set_sync_writes(true);
        if let Err(source) = inner.queue.add_n(docs.iter()) {
            inner.dropped += docs.len() as u64;
            return Err(OutboxError::Queue {
                path: self.path.display().to_string(),
                source,
            });
        }
        for d in docs {
            inner.lens.push_back(d.len() as u32);
            inner.bytes += span(d);
        }
        Ok(())
    }

    fn remove_head(&self, inner: &mut Inner, n: usize) -> Result<(), OutboxError> {
        // Not synced: an alert that comes back after a power cut is only sent twice.
        inner.queue.set_sync_writes(false);
        let result = inner.queue.remove_n(n);
        inner.queue.set_sync_writes(true);
        match result {
            Ok(()) => {
                for l in inner.lens.drain(..n) {
                    inner.bytes -= u64::from(l) + ELEMENT_OVERHEAD;
                }
                inner.head_seq += n as u64;
                Ok(())
            }
            Err(e) if is_damage(&e) => {
                self.replace_damaged(inner, &e);
                Ok(())
            }
            Err(source) => Err(OutboxError::Queue {
                path: self.path.display().to_string(),
                source,
            }),
        }
    }

    /// Up to `max` alerts, oldest first, from sequence number `from` on (or from the head, if
    /// `from` was dropped meanwhile), each with its sequence number.
    pub fn read_from(&self, from: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>, OutboxError> {
        let mut inner = self.lock();
        let start = from.max(inner.head_seq);
        let skip = (start - inner.head_seq) as usize;
        let want = max.min(inner.lens.len().saturating_sub(skip));
        if want == 0 {
            return Ok(Vec::new());
        }
        let mut iter = inner.queue.iter();
        let mut out = Vec::with_capacity(want);
        let first = if skip > 0 {
            iter.nth(skip)
        } else {
            iter.next()
        };
        if let Some(doc) = first {
            out.push((start, doc));
            out.extend(
                iter.take(want - 1)
                    .enumerate()
                    .map(|(i, doc)| (start + 1 + i as u64, doc)),
            );
        }
        if out.len() < want {
            // queue-file's iterator stops at an element it cannot read (bad CRC or length).
            let seq = start + out.len() as u64;
            let problem = queue_file::Error::CorruptedFile {
                msg: format!("element {seq} cannot be read"),
            };
            self.replace_damaged(&mut inner, &problem);
            return Ok(Vec::new());
        }
        Ok(out)
    }

    /// Removes every alert up to and including sequence number `seq` (acknowledged).
    pub fn remove_through(&self, seq: u64) -> Result<(), OutboxError> {
        let mut inner = self.lock();
        if seq < inner.head_seq {
            return Ok(());
        }
        let n = ((seq - inner.head_seq + 1) as usize).min(inner.lens.len());
        if n == 0 {
            return Ok(());
        }
        self.remove_head(&mut inner, n)
    }

    /// Sequence number of the oldest alert held (the next one to arrive when empty).
    pub fn head_seq(&self) -> u64 {
        self.lock().head_seq
    }

    pub fn is_empty(&self) -> bool {
        self.lock().lens.is_empty()
    }

    pub fn counters(&self) -> OutboxCounters {
        let inner = self.lock();
        OutboxCounters {
            depth: inner.lens.len() as u64,
            bytes: inner.bytes,
            dropped: inner.dropped,
        }
    }

    /// Counts alerts that could not be appended at all (the sink's write failed).
    pub fn count_dropped(&self, n: u64) {
        self.lock().dropped += n;
    }

    /// The file went bad while running: move it aside, start empty, say so once.
    fn replace_damaged(&self, inner: &mut Inner, problem: &queue_file::Error) {
        let lost = inner.lens.len();
        let outcome = move_aside(&self.path).and_then(|aside| {
            let (queue, _) = load(&self.path).map_err(std::io::Error::other)?;
            inner.queue = queue;
            Ok(aside)
        });
        match outcome {
            Ok(aside) => log::error!(
                "The MQTT outbox {} is damaged ({problem}); moved it aside to {} and started an empty one: its {lost} alerts will not be sent.",
                self.path.display(),
                aside.display()
            ),
            Err(e) => {
                log::error!(
                    "The MQTT outbox {} is damaged ({problem}) and could not be replaced ({e}); clearing it: its {lost} alerts will not be sent.",
                    self.path.display()
                );
                // If even this fails, the next append reports the write error.
                let _ = inner.queue.clear();
            }
        }
        inner.head_seq += lost as u64;
        inner.dropped += lost as u64;
        inner.lens.clear();
        inner.bytes = 0;
    }
}

/// Opens the queue file and reads every element once, which checks each one's CRC.
fn load(path: &Path) -> Result<(QueueFile, VecDeque<u32>), queue_file::Error> {
    let queue = QueueFile::open(path)?;
    // The element count comes from the file: trusted only once every element has been read.
    let mut lens = VecDeque::with_capacity(queue.size().min(4096));
    let mut iter = queue.iter();
    while let Some(doc) = iter.borrowed_next() {
        lens.push_back(doc.len() as u32);
    }
    drop(iter);
    if lens.len() != queue.size() {
        return Err(queue_file::Error::CorruptedFile {
            msg: format!("element {} of {} cannot be read", lens.len(), queue.size()),
        });
    }
    Ok((queue, lens))
}

/// Whether an error means the file's contents are bad (rather than, say, no permission).
fn is_damage(e: &queue_file::Error) -> bool {
    match e {
        queue_file::Error::Io { source } => source.kind() == std::io::ErrorKind::UnexpectedEof,
        _ => true,
    }
}

/// Renames a damaged file to `<name>.damaged-<unix seconds>` next to it.
fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".damaged-{secs}"));
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
        range
            .map(|i| format!("{{\"alert_id\":\"{i:08}\"}}").into_bytes())
            .collect()
    }

    fn read_all(o: &Outbox) -> Vec<(u64, Vec<u8>)> {
        o.read_from(0, usize::MAX).unwrap()
    }

    #[test]
    fn survives_reopen_and_removes_only_what_was_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        {
            let o = Outbox::open(dir.path(), 1 << 20).unwrap();
            o.append(&docs(0..10)).unwrap();
            assert_eq!(
                o.read_from(3, 2).unwrap(),
                vec![(3, docs(3..4).remove(0)), (4, docs(4..5).remove(0))]
            );
            o.remove_through(3).unwrap();
            assert_eq!(o.head_seq(), 4);
            assert_eq!(o.counters().depth, 6);
            // Acknowledging again, or something already removed, changes nothing.
            o.remove_through(2).unwrap();
            assert_eq!(o.counters().depth, 6);
        }
        let o = Outbox::open(dir.path(), 1 << 20).unwrap();
        let all = read_all(&o);
        assert_eq!(
            all.into_iter().map(|(_, d)| d).collect::<Vec<_>>(),
            docs(4..10)
        );
    }

    #[test]
    fn a_second_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Outbox::open(dir.path(), 1 << 20).unwrap();
        let err = Outbox::open(dir.path(), 1 << 20).err().expect("locked");
        assert!(matches!(err, OutboxError::Locked { .. }), "{err}");
    }

    #[test]
    fn full_outbox_drops_the_oldest_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let one = docs(0..1)[0].len() as u64 + ELEMENT_OVERHEAD;
        let o = Outbox::open(dir.path(), one * 5).unwrap();
        o.append(&docs(0..3)).unwrap();
        o.append(&docs(3..7)).unwrap();
        let held: Vec<_> = read_all(&o).into_iter().map(|(_, d)| d).collect();
        assert_eq!(held, docs(2..7));
        assert_eq!(
            o.counters(),
            OutboxCounters {
                depth: 5,
                bytes: one * 5,
                dropped: 2
            }
        );
        assert_eq!(o.head_seq(), 2);
        // A batch larger than the whole outbox keeps its newest alerts.
        o.append(&docs(10..18)).unwrap();
        let held: Vec<_> = read_all(&o).into_iter().map(|(_, d)| d).collect();
        assert_eq!(held, docs(13..18));
        assert_eq!(o.counters().dropped, 2 + 5 + 3);
    }

    #[test]
    fn damaged_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        {
            let o = Outbox::open(dir.path(), 1 << 20).unwrap();
            o.append(&docs(0..4)).unwrap();
        }
        let path = dir.path().join(OUTBOX_FILE);
        std::fs::write(
            &path,
            b"this is not a queue file, and it is long enough to have a header",
        )
        .unwrap();
        let o = Outbox::open(dir.path(), 1 << 20).unwrap();
        assert!(o.is_empty());
        o.append(&docs(0..1)).unwrap();
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("mqtt-outbox.qf.damaged-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
    }

    #[test]
    fn flipped_byte_in_an_element_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        {
            let o = Outbox::open(dir.path(), 1 << 20).unwrap();
            o.append(&docs(0..4)).unwrap();
        }
        let path = dir.path().join(OUTBOX_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes
            .windows(8)
            .position(|w| w == b"00000002")
            .expect("payload on disk");
        bytes[at] ^= 0x55;
        std::fs::write(&path, bytes).unwrap();
        let o = Outbox::open(dir.path(), 1 << 20).unwrap();
        assert!(o.is_empty(), "a damaged outbox is replaced, not trusted");
    }
}
