//! The writer: opening (and repairing) a log, appending records, syncing them.
//!
//! Appends are buffered in memory and reach the disk on [`AuditLog::sync`] (or when the
//! buffer grows past 64 KiB, or best-effort on drop), so a caller can group-commit its
//! audit records with the data they describe. Only synced records survive a crash; a
//! crash mid-write leaves a torn last line, which the next [`AuditLog::open`] cuts off.
//!
//! Opening does not verify the whole chain (that is [`crate::verify`], which reads every
//! line); it checks the genesis record and the last record, which is what appending
//! needs. It still reads every line to rebuild the running Merkle state, unless the
//! caller hands it a [`LogMark`] taken earlier ([`AuditLog::open_from`]): then it reads
//! only the lines after the mark.

use crate::line::read_line;
use crate::mark::LogMark;
use crate::mmr::{Mmr, CHECKPOINT_EVENT, CHECKPOINT_EVERY};
use crate::record::{check_new, encode_new, format_time, line_hash, Record};
use crate::{AuditError, MAX_RECORD_BYTES};
use serde_json::Value;
use std::fs::{File, TryLockError};
use std::io::{BufReader, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Buffered bytes past which an append writes them out without waiting for `sync`.
const WRITE_BEHIND: usize = 64 * 1024;

/// What [`AuditLog::open`] cut off the end of the file: the unfinished last line(s) of
/// a write interrupted by a crash. Such records were never synced, so no caller was told
/// they were durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The file's length after the repair, where the removed bytes began.
    pub offset: u64,
    /// How many bytes were removed.
    pub removed_bytes: u64,
}

/// An audit log open for appending; holds an exclusive lock on the file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// Seq of the last record appended (synced or not).
    last_seq: u64,
    /// Hash of the last record appended (synced or not).
    head: String,
    /// Hash of the genesis line: the log's identity.
    genesis: String,
    repaired: Option<TornTail>,
    poisoned: bool,
    /// Records were appended since the last successful `sync`.
    unsynced: bool,
    /// Running Merkle root over every record line appended so far.
    mmr: Mmr,
    /// Bytes of the log, buffered ones included.
    len: u64,
    /// Where the last record's line starts.
    last_start: u64,
    /// Whether `open_from` could use the caller's mark.
    resumed: bool,
    /// Why it could not, if it was given one.
    mark_refused: Option<String>,
}

/// A complete line met while scanning the file on open.
struct Seen {
    start: u64,
    bytes: Vec<u8>,
    too_long: bool,
}

// === impl AuditLog ===

impl AuditLog {
    /// Opens the log at `path` for appending, creating it (with its genesis record,
    /// synced) if it does not exist or is empty.
    ///
    /// A torn tail left by a crash is cut off and reported by [`AuditLog::repaired`]:
    /// bytes after the last newline, and a last line that is not JSON at all. Anything
    /// else wrong with the first or last record is an error, and nothing is changed.
    pub fn open(path: impl AsRef<Path>) -> Result<AuditLog, AuditError> {
        Self::open_from(path, None)
    }

    /// [`AuditLog::open`], reading only the lines after `mark` (taken earlier with
    /// [`AuditLog::mark`]) when the mark still fits the file: the same line at the same
    /// place with the same hash and seq. When it does not (the log was cut, rewritten or
    /// replaced), the whole file is read as `open` does; [`AuditLog::resumed`] says
    /// which happened.
    pub fn open_from(
        path: impl AsRef<Path>,
        mark: Option<&LogMark>,
    ) -> Result<AuditLog, AuditError> {
        let path = path.as_ref();
        let io = |e| AuditError::io(path, e);
        let file = crate::private::options()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        lock_for_append(&file, path)?;
        let len = file.metadata().map_err(io)?.len();

        // One pass over the file (or over what follows the mark), keeping only the first
        // and the last two lines.
        let mut first: Option<Seen> = None;
        let mut before_last: Option<Seen> = None;
        let mut last: Option<Seen> = None;
        let mut lines = 0u64;
        let mut offset = 0u64;
        let mut cut = len;
        let mut buf = Vec::new();
        let mut mmr = Mmr::default();
        let mut mmr_before_last = Mmr::default();
        let mut resumed = false;
        let mut mark_refused = None;
        if let Some(mark) = mark {
            match mark.check(&file, len) {
                Ok(line) => {
                    let mut reader = BufReader::new(&file);
                    reader.seek(SeekFrom::Start(0)).map_err(io)?;
                    let info = read_line(&mut reader, &mut buf, MAX_RECORD_BYTES)
                        .map_err(io)?
                        .filter(|i| i.newline)
                        .ok_or_else(|| AuditError::corrupt(path, 1, "no complete first line"))?;
                    first = Some(Seen {
                        start: 0,
                        bytes: buf.clone(),
                        too_long: info.too_long,
                    });
                    last = Some(Seen {
                        start: mark.start,
                        bytes: line,
                        too_long: false,
                    });
                    mmr = mark.mmr().expect("checked");
                    mmr_before_last = mmr.clone();
                    lines = mark.seq;
                    offset = mark.end;
                    resumed = true;
                }
                Err(reason) => mark_refused = Some(reason),
            }
        }
        let mut reader = BufReader::new(&file);
        reader.seek(SeekFrom::Start(offset)).map_err(io)?;
        while let Some(info) = read_line(&mut reader, &mut buf, MAX_RECORD_BYTES).map_err(io)? {
            if !info.newline {
                cut = offset;
                break;
            }
            mmr_before_last = mmr.clone();
            mmr.push_line(&buf);
            lines += 1;
            let seen = Seen {
                start: offset,
                bytes: buf.clone(),
                too_long: info.too_long,
            };
            if lines == 1 && !resumed {
                first = Some(Seen {
                    start: 0,
                    bytes: buf.clone(),
                    too_long: info.too_long,
                });
            }
            before_last = last.replace(seen);
            offset += info.consumed;
        }
        drop(reader);

        // A last line that is not even JSON is the rest of an interrupted write (a crash
        // can leave the file longer than what reached the disk, filled with zeros).
        if let Some(l) = &last {
            if l.too_long || serde_json::from_slice::<serde::de::IgnoredAny>(&l.bytes).is_err() {
                cut = l.start;
                mmr = mmr_before_last;
                last = before_last.take();
                lines -= 1;
                if lines == 0 {
                    first = None;
                }
            }
        }

        let mut log = AuditLog {
            path: path.to_path_buf(),
            file,
            buf: Vec::new(),
            last_seq: 0,
            head: crate::ZERO_HASH.into(),
            genesis: crate::ZERO_HASH.into(),
            repaired: None,
            poisoned: false,
            unsynced: false,
            mmr,
            len: cut,
            last_start: last.as_ref().map_or(0, |l| l.start),
            resumed,
            mark_refused,
        };

        if let (Some(first), Some(last)) = (&first, &last) {
            log.check_first(first)?;
            log.genesis = line_hash(&first.bytes);
            let rec = log.check_last(lines, last, before_last.as_ref())?;
            log.last_seq = rec.seq;
            log.head = line_hash(&last.bytes);
        }

        if cut < len {
            log.file.set_len(cut).map_err(io)?;
            log.file.sync_all().map_err(io)?;
            log.repaired = Some(TornTail {
                offset: cut,
                removed_bytes: len - cut,
            });
        }

        if lines == 0 {
            let time =
                format_time(SystemTime::now()).map_err(|reason| AuditError::InvalidRecord {
                    path: path.to_path_buf(),
                    reason,
                })?;
            let line = Record::genesis(&time).encode();
            log.genesis = line_hash(&line);
            log.push_line(1, line);
            log.sync()?;
            sync_parent(path).map_err(io)?;
        }
        Ok(log)
    }

    fn check_first(&self, first: &Seen) -> Result<(), AuditError> {
        let corrupt = |reason: String| AuditError::corrupt(&self.path, 1, reason);
        if first.too_long {
            return Err(corrupt("longer than a record may be".into()));
        }
        let rec = Record::parse(&first.bytes).map_err(corrupt)?;
        match rec.genesis_format().map_err(corrupt)? {
            None => Ok(()),
            Some(found) => Err(AuditError::UnsupportedFormat {
                path: self.path.clone(),
                found,
            }),
        }
    }

    fn check_last(
        &self,
        lines: u64,
        last: &Seen,
        before: Option<&Seen>,
    ) -> Result<Record, AuditError> {
        let corrupt = |reason: String| AuditError::corrupt(&self.path, lines, reason);
        let rec = Record::parse(&last.bytes).map_err(corrupt)?;
        if rec.seq != lines {
            return Err(corrupt(format!(
                "seq {} on line {lines}: records are missing, repeated or reordered",
                rec.seq
            )));
        }
        if let Some(before) = before {
            let expected = line_hash(&before.bytes);
            if rec.prev != expected {
                return Err(corrupt(format!(
                    "prev {} does not match the hash of line {} ({expected})",
                    rec.prev,
                    lines - 1
                )));
            }
        }
        Ok(rec)
    }

    /// Appends a record stamped with the current time; returns its seq. Buffered: call
    /// [`AuditLog::sync`] to make it durable.
    ///
    /// `event` is lower-case ASCII (`move.created`, `message.stored`); `data` must be a
    /// JSON object. Events starting with `audit.` are reserved for the log itself.
    pub fn append(&mut self, actor: &str, event: &str, data: Value) -> Result<u64, AuditError> {
        self.append_at(SystemTime::now(), actor, event, data)
    }

    /// Like [`AuditLog::append`] with an explicit time (imports, tests, vectors). The
    /// verifier does not require times to increase: clocks step backwards.
    pub fn append_at(
        &mut self,
        time: SystemTime,
        actor: &str,
        event: &str,
        data: Value,
    ) -> Result<u64, AuditError> {
        let range = self.append_batch_at(time, actor, [(event, data)])?;
        Ok(range.start)
    }

    /// Appends several records from one actor with one time stamp; returns their seqs.
    /// Every record is checked before any is buffered, so a refused record leaves the log
    /// as it was.
    pub fn append_batch<E: AsRef<str>>(
        &mut self,
        actor: &str,
        events: impl IntoIterator<Item = (E, Value)>,
    ) -> Result<Range<u64>, AuditError> {
        self.append_batch_at(SystemTime::now(), actor, events)
    }

    fn append_batch_at<E: AsRef<str>>(
        &mut self,
        time: SystemTime,
        actor: &str,
        events: impl IntoIterator<Item = (E, Value)>,
    ) -> Result<Range<u64>, AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned {
                path: self.path.clone(),
            });
        }
        let invalid = |reason| AuditError::InvalidRecord {
            path: self.path.clone(),
            reason,
        };
        let time = format_time(time).map_err(invalid)?;
        let first = self.last_seq + 1;
        let mut seq = self.last_seq;
        let mut prev = self.head.clone();
        let mut lines = Vec::new();
        let mut mmr = self.mmr.clone();
        for (event, data) in events {
            let event = event.as_ref();
            let data = check_new(actor, event, data).map_err(invalid)?;
            seq += 1;
            if seq.is_multiple_of(CHECKPOINT_EVERY + 1) {
                // The log's own periodic checkpoint: the running root of every record
                // before it, so a prefix can be checked against a pinned root.
                let mut cp = serde_json::Map::new();
                cp.insert("records".into(), Value::from(seq - 1));
                cp.insert("merkle_root".into(), Value::from(mmr.root()));
                let rec = Record {
                    seq,
                    time: time.clone(),
                    actor: crate::GENESIS_ACTOR.into(),
                    event: CHECKPOINT_EVENT.into(),
                    data: cp,
                    prev,
                };
                let line = encode_new(&rec).map_err(invalid)?;
                prev = line_hash(&line);
                mmr.push_line(&line);
                lines.push(line);
                seq += 1;
            }
            let rec = Record {
                seq,
                time: time.clone(),
                actor: actor.into(),
                event: event.into(),
                data,
                prev,
            };
            let line = encode_new(&rec).map_err(invalid)?;
            prev = line_hash(&line);
            mmr.push_line(&line);
            lines.push(line);
        }
        for (i, line) in lines.into_iter().enumerate() {
            self.push_line(first + i as u64, line);
        }
        if self.buf.len() >= WRITE_BEHIND {
            self.write_out()?;
        }
        Ok(first..seq + 1)
    }

    fn push_line(&mut self, seq: u64, line: Vec<u8>) {
        self.unsynced = true;
        self.mmr.push_line(&line);
        self.last_start = self.len;
        self.len += line.len() as u64 + 1;
        self.head = line_hash(&line);
        self.last_seq = seq;
        self.buf.extend_from_slice(&line);
        self.buf.push(b'\n');
    }

    fn write_out(&mut self) -> Result<(), AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned {
                path: self.path.clone(),
            });
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            // Part of a line may have reached the file: only a reopen (which repairs the
            // tail) can tell where the log now ends.
            self.poisoned = true;
            return Err(AuditError::io(&self.path, e));
        }
        self.buf.clear();
        Ok(())
    }

    /// Writes every buffered record and waits until the file's data is on disk
    /// (`fdatasync`). Records appended before a successful `sync` survive a crash.
    pub fn sync(&mut self) -> Result<(), AuditError> {
        self.write_out()?;
        self.file.sync_data().map_err(|e| {
            self.poisoned = true;
            AuditError::io(&self.path, e)
        })?;
        self.unsynced = false;
        Ok(())
    }

    /// Hex SHA-256 of the last record's line (synced or not): pin it elsewhere to detect
    /// records cut off the end later. Equals [`crate::VerifyOutcome::head`] after a sync.
    pub fn head(&self) -> &str {
        &self.head
    }

    /// Hex SHA-256 of the genesis line: the log's identity, which signed heads name.
    pub fn genesis(&self) -> &str {
        &self.genesis
    }

    /// True if every appended record was written and synced by [`AuditLog::sync`].
    pub fn is_synced(&self) -> bool {
        !self.unsynced && !self.poisoned
    }

    /// Seq of the last record appended; also the number of records, genesis included.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the log stands now, for a snapshot to hand back to
    /// [`AuditLog::open_from`]; `None` while appended records wait for
    /// [`AuditLog::sync`] (a mark must only cover records that are on disk).
    pub fn mark(&self) -> Option<LogMark> {
        if !self.buf.is_empty() || self.poisoned || self.last_seq == 0 {
            return None;
        }
        Some(LogMark::new(
            self.last_seq,
            self.last_start,
            self.len,
            &self.head,
            &self.mmr,
        ))
    }

    /// True if [`AuditLog::open_from`] used the caller's mark (and read only the lines
    /// after it).
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// Why [`AuditLog::open_from`] could not use the caller's mark, if it was given one
    /// that does not fit the file.
    pub fn mark_refused(&self) -> Option<&str> {
        self.mark_refused.as_deref()
    }

    /// What `open` cut off the end of the file, if it found a torn tail.
    pub fn repaired(&self) -> Option<TornTail> {
        self.repaired
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        // Best effort, without sync: records that matter were synced by the caller, and
        // after a failed write the tail is left for the next open to repair.
        if !self.poisoned && !self.buf.is_empty() {
            let _ = self.file.write_all(&self.buf);
        }
    }
}

/// Makes a newly created file's directory entry durable.
pub(crate) fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// How long [`lock_for_append`] waits for a lock held elsewhere before refusing.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Takes the log's exclusive lock, waiting up to [`LOCK_WAIT`] for it.
///
/// Why wait at all: the lock belongs to the open file description, and a process that
/// forks (to run any child program) while the file is open shares that description with
/// the child until the child's `exec` closes it. So a writer that has just closed the log
/// may still hold its lock for a moment through someone else's child; refusing at once
/// made "open right after close" fail under load. A second writer that really holds the
/// log is still refused, [`LOCK_WAIT`] later.
fn lock_for_append(file: &File, path: &Path) -> Result<(), AuditError> {
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if start.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(AuditError::Locked {
                    path: path.to_path_buf(),
                })
            }
            Err(TryLockError::Error(e)) => return Err(AuditError::io(path, e)),
        }
    }
}

#[cfg(test)]
mod tests;
