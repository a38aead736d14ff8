//! mailferry-core: the shared vocabulary of every mailferry crate.
//!
//! Identifiers (moves, mailboxes, folders, source ids), the wire frame codec, migration
//! profiles, the move report, checkpoint entries, rustls configuration builders, the civil
//! calendar of the date formats mailferry reads and what a refused upgrade says ([`refusal`]).
//!
//! This crate does no I/O of its own: no files, no sockets, no async runtime. Whatever
//! reads or writes bytes lives in the crates above it (store, agent, proxy, cli).

pub mod calendar;
pub mod error;
pub mod frame;
pub mod ids;
pub mod mutf7;
pub mod profile;
pub mod refusal;
pub mod report;
pub mod secret;
pub mod tls;

pub use error::CoreError;
pub use ids::{Flags, FolderName, MailboxAddr, MessageMeta, MoveId, SourceId, MAX_KEYWORDS};

/// Hex SHA-256 digest of `data`, the content identity used across mailferry.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

/// Current time as seconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Formats Unix seconds as RFC 3339 (UTC), for reports meant to be read by people.
pub fn rfc3339(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}
