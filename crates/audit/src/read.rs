//! Reading records back, for reconcilers and reports. Reading is not verifying: use
//! [`crate::verify`] to check the chain; this only parses complete lines (a torn last
//! line without its newline, which the next `open` would cut, is ignored).

use crate::record::Record;
use crate::AuditError;
use serde_json::{Map, Value};
use std::path::Path;

/// One record as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Sequence number, from 1.
    pub seq: u64,
    /// RFC 3339 UTC time.
    pub time: String,
    /// Who did it.
    pub actor: String,
    /// What happened.
    pub event: String,
    /// Event details.
    pub data: Map<String, Value>,
}

/// Every complete record of the log at `path`, in order.
pub fn read_records(path: impl AsRef<Path>) -> Result<Vec<Entry>, AuditError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| AuditError::io(path, e))?;
    parse_lines(path, &bytes, 0)
}

/// Parses the complete lines of `bytes`, the first of which is line `before + 1`.
pub(crate) fn parse_lines(
    path: &Path,
    bytes: &[u8],
    before: u64,
) -> Result<Vec<Entry>, AuditError> {
    let mut out = Vec::new();
    for (i, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        let Some(line) = line.strip_suffix(b"\n") else {
            break;
        };
        let rec = Record::parse(line).map_err(|reason| AuditError::Corrupt {
            path: path.to_path_buf(),
            line: before + i as u64 + 1,
            reason,
        })?;
        out.push(Entry {
            seq: rec.seq,
            time: rec.time,
            actor: rec.actor,
            event: rec.event,
            data: rec.data,
        });
    }
    Ok(out)
}
