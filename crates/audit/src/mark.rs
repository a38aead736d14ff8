//! A mark: where a log stood when a caller took a snapshot of what it had read from it,
//! so the next open reads only the records after it (docs/audit-log.md §5.1).
//!
//! A mark names the last record it covers (seq, byte range of its line, hash of the
//! line) and the running Merkle state after it. It is checked against the file before it
//! is used: the line must still be where the mark says, be a record with that seq, and
//! hash to the mark's head. A log that was cut, rewritten or replaced fails the check,
//! and the caller falls back to reading the whole log. A mark proves nothing by itself:
//! it saves work, and [`crate::verify`] still checks every link.

use crate::mmr::Mmr;
use crate::record::{line_hash, Record};
use crate::AuditError;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Where a log stood: its last record covered, and the Merkle state after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogMark {
    /// Seq of the last record covered (= records covered, genesis included).
    pub seq: u64,
    /// Byte offset of that record's line in the file.
    pub start: u64,
    /// Byte offset just after its `\n`: where the records after the mark begin.
    pub end: u64,
    /// Hex SHA-256 of that line (the log's head at the mark).
    pub head: String,
    /// The running Merkle state after it ([`Mmr::peaks`], hex), highest peak first.
    pub mmr_peaks: Vec<(u32, String)>,
}

impl LogMark {
    pub(crate) fn new(seq: u64, start: u64, end: u64, head: &str, mmr: &Mmr) -> LogMark {
        LogMark {
            seq,
            start,
            end,
            head: head.to_string(),
            mmr_peaks: mmr
                .peaks()
                .iter()
                .map(|(h, p)| (*h, hex::encode(p)))
                .collect(),
        }
    }

    /// The Merkle state the mark carries; `None` if it does not fit `seq`.
    pub(crate) fn mmr(&self) -> Option<Mmr> {
        let mut peaks = Vec::with_capacity(self.mmr_peaks.len());
        for (h, p) in &self.mmr_peaks {
            let bytes: [u8; 32] = hex::decode(p).ok()?.try_into().ok()?;
            peaks.push((*h, bytes));
        }
        Mmr::from_parts(self.seq, peaks)
    }

    /// Checks the mark against `file` (of `len` bytes) and returns the marked line
    /// (without its `\n`); `Err` says why the mark does not fit.
    pub(crate) fn check(&self, mut file: &File, len: u64) -> Result<Vec<u8>, String> {
        if self.seq == 0 || self.end <= self.start || self.end > len {
            return Err(format!(
                "the mark ends at byte {} but the log has {len} bytes",
                self.end
            ));
        }
        if self.end - self.start > crate::MAX_RECORD_BYTES as u64 + 1 {
            return Err("the marked line is longer than a record may be".into());
        }
        if self.mmr().is_none() {
            return Err("its Merkle state does not fit its record count".into());
        }
        // The byte before the line too, to be sure it is a whole line.
        let from = self.start.saturating_sub(1);
        let mut buf = vec![0u8; (self.end - from) as usize];
        file.seek(SeekFrom::Start(from))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(|e| format!("cannot read the marked line: {e}"))?;
        if self.start > 0 && buf[0] != b'\n' {
            return Err("the mark does not start at a line".into());
        }
        let line = &buf[(self.start - from) as usize..];
        let Some(line) = line.strip_suffix(b"\n") else {
            return Err("the mark does not end at a line".into());
        };
        let found = line_hash(line);
        if found != self.head {
            return Err(format!(
                "the marked line hashes to {found}, not {}",
                self.head
            ));
        }
        let rec = Record::parse(line)?;
        if rec.seq != self.seq {
            return Err(format!(
                "the marked line is seq {}, not {}",
                rec.seq, self.seq
            ));
        }
        Ok(line.to_vec())
    }
}

/// Every byte of the log at `path` after `mark`, a torn last line included, once the
/// mark is checked against the file.
fn raw_tail(path: &Path, mark: &LogMark) -> Result<Vec<u8>, AuditError> {
    let io = |e| AuditError::io(path, e);
    let mut file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    mark.check(&file, len)
        .map_err(|reason| AuditError::corrupt(path, mark.seq, format!("mark: {reason}")))?;
    let mut tail = Vec::new();
    file.seek(SeekFrom::Start(mark.end)).map_err(io)?;
    file.read_to_end(&mut tail).map_err(io)?;
    Ok(tail)
}

/// The bytes of the log at `path` after `mark` (complete lines only, each with its
/// `\n`), unparsed, for a caller that needs one or two fields of many records and
/// reads them with a lighter parser. Checks the mark as [`read_records_after`] does.
pub fn read_tail_after(path: impl AsRef<Path>, mark: &LogMark) -> Result<Vec<u8>, AuditError> {
    let path = path.as_ref();
    let mut tail = raw_tail(path, mark)?;
    let complete = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    tail.truncate(complete);
    Ok(tail)
}

/// The complete records after `mark` in the log at `path`, in order (like
/// [`crate::read_records`], for the tail only). Fails with [`AuditError::Corrupt`] if
/// the mark does not fit the file (line 0 when no line can be named): read the whole
/// log instead.
pub fn read_records_after(
    path: impl AsRef<Path>,
    mark: &LogMark,
) -> Result<Vec<crate::Entry>, AuditError> {
    let path = path.as_ref();
    let tail = raw_tail(path, mark)?;
    crate::read::parse_lines(path, &tail, mark.seq)
}

#[cfg(test)]
mod tests;
