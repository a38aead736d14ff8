//! The one error type of mailferry-audit.
//!
//! Every variant names the log file; verification failures also name the line (counted
//! from 1, which is also the record's `seq`) and say what is wrong with it.

use std::path::PathBuf;
use thiserror::Error;

/// Everything that can go wrong while writing or verifying an audit log.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The file could not be read, written or synced.
    #[error("audit log {}: {source}", path.display())]
    Io {
        /// The log file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Another [`AuditLog`](crate::AuditLog) holds the file open for appending.
    #[error("audit log {}: locked by another writer (two writers would fork the chain)", path.display())]
    Locked {
        /// The log file.
        path: PathBuf,
    },
    /// A record that breaks the format or the chain: bad JSON, a seq gap, a `prev` that
    /// does not match the line before, an unparseable time, a torn last line.
    #[error("audit log {}, line {line}: {reason}", path.display())]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// The first bad line, counted from 1.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The log was written by a format this build does not read.
    #[error("audit log {}, line 1: format {found:?} is not supported (this build reads {})", path.display(), crate::FORMAT)]
    UnsupportedFormat {
        /// The log file.
        path: PathBuf,
        /// The format named by the genesis record.
        found: String,
    },
    /// The chain is intact but does not end where it was pinned: records were removed
    /// from, added to or changed at the end of the log.
    #[error(
        "audit log {}: head after {records} records is {found}, but {expected} was pinned \
         (records were removed from, added to or changed at the end)",
        path.display()
    )]
    HeadMismatch {
        /// The log file.
        path: PathBuf,
        /// Records in the file.
        records: u64,
        /// The head the caller pinned.
        expected: String,
        /// The hash of the file's last line.
        found: String,
    },
    /// Records were cut off the end: a signed head covers more records than the log has.
    #[error(
        "audit log {}: records cut off the end: the signed head of {time} covers {signed} \
         records, the log has {records}",
        path.display()
    )]
    Truncated {
        /// The log file.
        path: PathBuf,
        /// When the head was signed.
        time: String,
        /// Records the signed head covers.
        signed: u64,
        /// Records in the file.
        records: u64,
    },
    /// The log holds the record a signed head names, but not with the signed hash: the
    /// records up to it were rewritten (a whole new chain).
    #[error(
        "audit log {}: record {seq} differs from the signed head of {time}: it hashes to \
         {found}, {expected} was signed (the log was rewritten up to there)",
        path.display()
    )]
    SignedRecordDiffers {
        /// The log file.
        path: PathBuf,
        /// When the head was signed.
        time: String,
        /// The record the head names.
        seq: u64,
        /// The signed hash.
        expected: String,
        /// The hash of the log's record `seq`.
        found: String,
    },
    /// A signed head that cannot be used: unreadable, malformed, not signed by the given
    /// key, or of another log.
    #[error("{}: {reason}", path.display())]
    BadHead {
        /// The head file, or the log it was checked against.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key file that cannot be used.
    #[error("audit key file {}: {reason}", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A record the caller asked to append was refused; nothing was written.
    #[error("audit log {}: record not appended: {reason}", path.display())]
    InvalidRecord {
        /// The log file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// An earlier write failed, so the file's tail is unknown; reopen the log to repair it.
    #[error("audit log {}: an earlier write failed; reopen the log to repair its tail", path.display())]
    Poisoned {
        /// The log file.
        path: PathBuf,
    },
}

impl AuditError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        AuditError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(path: &std::path::Path, line: u64, reason: impl Into<String>) -> Self {
        AuditError::Corrupt {
            path: path.to_path_buf(),
            line,
            reason: reason.into(),
        }
    }
}
