//! The verifier: reads a whole log and checks every line and every link of the chain.
//!
//! It needs nothing but the file: each line must be a canonical record, line `n` must
//! carry `seq` `n` and the SHA-256 of line `n - 1` as `prev`, and line 1 must be the
//! genesis record. The first failure is reported with its line number. Cutting whole
//! records off the end leaves a valid, shorter chain; only comparing the head with one
//! pinned earlier ([`verify_with_head`]) or signed ([`crate::verify_signed`]) detects
//! that.

use crate::line::read_line;
use crate::record::{line_hash, Record};
use crate::{AuditError, MAX_RECORD_BYTES, ZERO_HASH};
use std::io::BufRead;
use std::path::Path;

/// What a successful verification found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyOutcome {
    /// Records in the log, genesis included (the last record's seq).
    pub records: u64,
    /// Hex SHA-256 of the last line (without its newline): pin it to detect truncation.
    pub head: String,
    /// Hex SHA-256 of the genesis line: the log's identity, which signed heads name.
    pub genesis: String,
}

/// Verifies the log at `path`: format, seq order and hash chain, from the first line to
/// the last. Does not detect whole records removed from the end; see [`verify_with_head`].
pub fn verify(path: impl AsRef<Path>) -> Result<VerifyOutcome, AuditError> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| AuditError::io(path, e))?;
    verify_reader(path, std::io::BufReader::new(file))
}

/// Verifies the log at `path` like [`verify`], and also that its head is
/// `expected_head` (a hex SHA-256 pinned earlier, e.g. from [`crate::AuditLog::head`]),
/// which detects records removed from, added to or changed at the end. Surrounding
/// whitespace and the case of the hex digits in `expected_head` are ignored, so a head
/// read back from a file can be passed as is.
///
/// A log that has grown since the head was pinned fails this check; to accept growth,
/// pin the seq with the head and compare the hash of that line instead.
pub fn verify_with_head(
    path: impl AsRef<Path>,
    expected_head: &str,
) -> Result<VerifyOutcome, AuditError> {
    let path = path.as_ref();
    let outcome = verify(path)?;
    if !outcome.head.eq_ignore_ascii_case(expected_head.trim()) {
        return Err(AuditError::HeadMismatch {
            path: path.to_path_buf(),
            records: outcome.records,
            expected: expected_head.to_string(),
            found: outcome.head,
        });
    }
    Ok(outcome)
}

/// Verifies a log read from `reader`; `path` only names it in errors.
pub(crate) fn verify_reader(
    path: &Path,
    reader: impl BufRead,
) -> Result<VerifyOutcome, AuditError> {
    verify_pinned(path, reader, 0).map(|(outcome, _)| outcome)
}

/// [`verify_reader`], also returning the hash of line `pin` (`None` if the log is
/// shorter, or `pin` is 0).
pub(crate) fn verify_pinned(
    path: &Path,
    mut reader: impl BufRead,
    pin: u64,
) -> Result<(VerifyOutcome, Option<String>), AuditError> {
    let mut pinned = None;
    let mut genesis = String::new();
    let mut prev = ZERO_HASH.to_string();
    let mut mmr = crate::mmr::Mmr::default();
    let mut line_no = 0u64;
    let mut buf = Vec::new();
    loop {
        let info = read_line(&mut reader, &mut buf, MAX_RECORD_BYTES)
            .map_err(|e| AuditError::io(path, e))?;
        let Some(info) = info else { break };
        line_no += 1;
        let corrupt = |reason: String| AuditError::corrupt(path, line_no, reason);
        if info.too_long {
            return Err(corrupt(format!(
                "longer than the {MAX_RECORD_BYTES} bytes a record may be"
            )));
        }
        if !info.newline {
            return Err(corrupt(
                "no newline at the end: a torn tail from an interrupted write \
                 (opening the log for appending cuts it off)"
                    .into(),
            ));
        }
        let rec = Record::parse(&buf).map_err(corrupt)?;
        if rec.seq != line_no {
            return Err(corrupt(format!(
                "seq {} where {line_no} was expected: records are missing, repeated, \
                 reordered or inserted",
                rec.seq
            )));
        }
        if rec.prev != prev {
            return Err(corrupt(format!(
                "prev {} does not match the hash of the line before ({prev}): the line \
                 before was changed, or this line's prev was",
                rec.prev
            )));
        }
        if line_no == 1 {
            if let Some(found) = rec.genesis_format().map_err(corrupt)? {
                return Err(AuditError::UnsupportedFormat {
                    path: path.to_path_buf(),
                    found,
                });
            }
        } else if rec.event == crate::mmr::CHECKPOINT_EVENT {
            let root = mmr.root();
            let ok = line_no.is_multiple_of(crate::mmr::CHECKPOINT_EVERY + 1)
                && rec.data.get("records").and_then(|v| v.as_u64()) == Some(line_no - 1)
                && rec.data.get("merkle_root").and_then(|v| v.as_str()) == Some(root.as_str())
                && rec.data.len() == 2;
            if !ok {
                return Err(corrupt(format!(
                    "checkpoint does not match: expected records {} and merkle_root {root} \
                     at every {}th line",
                    line_no - 1,
                    crate::mmr::CHECKPOINT_EVERY + 1
                )));
            }
        } else if rec.event.starts_with("audit.") {
            return Err(corrupt(format!(
                "event {:?} is reserved for the log itself",
                rec.event
            )));
        } else if line_no.is_multiple_of(crate::mmr::CHECKPOINT_EVERY + 1) {
            return Err(corrupt(format!(
                "line {line_no} must be a checkpoint ({}) but is {:?}",
                crate::mmr::CHECKPOINT_EVENT,
                rec.event
            )));
        }
        mmr.push_line(&buf);
        prev = line_hash(&buf);
        if line_no == 1 {
            genesis = prev.clone();
        }
        if line_no == pin {
            pinned = Some(prev.clone());
        }
    }
    if line_no == 0 {
        return Err(AuditError::corrupt(
            path,
            1,
            "the log is empty; it must start with the genesis record",
        ));
    }
    Ok((
        VerifyOutcome {
            records: line_no,
            head: prev,
            genesis,
        },
        pinned,
    ))
}

#[cfg(test)]
mod tests;
