//! mailferry-audit: the append-only, hash-chained audit log of both sides of a move.
//!
//! The agent (source side) and the store (destination side) each keep one log: one JSON
//! object per line, every line carrying the SHA-256 of the line before it, so changing,
//! removing, reordering or inserting any byte breaks the chain. The format is specified
//! in `docs/audit-log.md`, with vectors in `docs/vectors/audit/`.
//!
//! This crate writes, repairs and verifies log files, and signs and checks their heads
//! ([`head`]). It does not decide what is worth logging or when to sign, and does not
//! ship logs anywhere. A chain alone cannot show that records were cut off its end: a
//! signed head ([`verify_signed`], with the signer's public key) or a head pinned
//! somewhere the log's writer cannot rewrite ([`verify_with_head`]) can.
//!
//! ```no_run
//! # fn main() -> Result<(), mailferry_audit::AuditError> {
//! use mailferry_audit::AuditLog;
//! let mut log = AuditLog::open("audit.jsonl")?;
//! log.append("agent", "move.created", serde_json::json!({"messages": 12}))?;
//! log.sync()?; // group-commit: sync together with the data the records describe
//! let outcome = mailferry_audit::verify("audit.jsonl")?;
//! assert_eq!(outcome.head, log.head());
//! # Ok(()) }
//! ```

pub mod error;
pub mod head;
mod line;
mod log;
mod mark;
pub mod merkle;
pub mod mmr;
pub mod private;
pub mod pseudonym;
mod read;
mod record;
mod verify;

pub use error::AuditError;
pub use head::{verify_signed, HeadKeeper, HeadSigner, PublicKey, SignedOutcome};
pub use log::{AuditLog, TornTail};
pub use mailferry_core::report::{LogSide, SignedHead};
pub use mark::{read_records_after, read_tail_after, LogMark};
pub use pseudonym::Pseudonymizer;
pub use read::{read_records, Entry};
pub use verify::{verify, verify_with_head, VerifyOutcome};

/// The format written in the genesis record (`data.format` of record 1).
pub const FORMAT: &str = "mailferry-audit/1";

/// Longest record line, in bytes without the newline; longer records are refused on
/// append and reported as corrupt by the verifier.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// The `prev` of the first record: 64 zeros.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Actor of the genesis record, written by the log itself.
pub const GENESIS_ACTOR: &str = "mailferry-audit";

/// Event of the genesis record. Events starting with `audit.` are reserved for the log.
pub const GENESIS_EVENT: &str = "audit.created";
