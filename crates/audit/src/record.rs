//! One record: its canonical bytes, and the checks every line must pass on its own.
//!
//! The canonical line is what `serde_json` writes for the fields in the order `seq`,
//! `time`, `actor`, `event`, `data`, `prev`, without whitespace, with every object inside
//! `data` written with its keys sorted by their UTF-8 bytes. The verifier re-encodes each
//! line it parses and refuses any line that differs, so a line it accepts is exactly the
//! line the writer would have written. Linking lines together (seq, prev) is the caller's
//! job; this module knows nothing of neighbours.

use crate::{FORMAT, GENESIS_ACTOR, GENESIS_EVENT, MAX_RECORD_BYTES};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Deepest nesting of `data` accepted, well below serde_json's parse limit of 128, so
/// that anything appended can be read back.
const MAX_DEPTH: usize = 64;
/// Longest actor, in bytes.
const MAX_ACTOR: usize = 256;
/// Longest event name, in bytes.
const MAX_EVENT: usize = 64;

/// A parsed record line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Record {
    pub seq: u64,
    pub time: String,
    pub actor: String,
    pub event: String,
    #[serde(serialize_with = "serialize_canonical")]
    pub data: Map<String, Value>,
    pub prev: String,
}

fn serialize_canonical<S: serde::Serializer>(
    m: &Map<String, Value>,
    s: S,
) -> Result<S::Ok, S::Error> {
    canonical_map(m).serialize(s)
}

/// Rebuilds a map with keys inserted in sorted order, so the output is sorted whether or
/// not serde_json's `preserve_order` feature is on somewhere in the build.
fn canonical_map(m: &Map<String, Value>) -> Map<String, Value> {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    keys.into_iter()
        .map(|k| (k.clone(), canonical(&m[k])))
        .collect()
}

fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(canonical_map(m)),
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

fn depth(v: &Value, limit: usize) -> bool {
    if limit == 0 {
        return false;
    }
    match v {
        Value::Object(m) => m.values().all(|v| depth(v, limit - 1)),
        Value::Array(a) => a.iter().all(|v| depth(v, limit - 1)),
        _ => true,
    }
}

impl Record {
    /// The canonical line, without the newline.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record of strings, integers and JSON values serialises")
    }

    /// Parses one line and checks everything that can be checked without its neighbours.
    pub fn parse(line: &[u8]) -> Result<Record, String> {
        let rec: Record = serde_json::from_slice(line).map_err(|e| format!("not a record: {e}"))?;
        check_time(&rec.time)?;
        check_actor(&rec.actor)?;
        check_event(&rec.event)?;
        check_hash(&rec.prev).map_err(|e| format!("prev: {e}"))?;
        if rec.encode() != line {
            return Err(
                "not in canonical form (whitespace, key order or escaping differs \
                        from what the writer produces)"
                    .into(),
            );
        }
        Ok(rec)
    }

    /// The genesis record every log starts with.
    pub fn genesis(time: &str) -> Record {
        let mut data = Map::new();
        data.insert("format".into(), Value::String(FORMAT.into()));
        Record {
            seq: 1,
            time: time.into(),
            actor: GENESIS_ACTOR.into(),
            event: GENESIS_EVENT.into(),
            data,
            prev: crate::ZERO_HASH.into(),
        }
    }

    /// `Ok(None)` for a valid genesis record, `Ok(Some(format))` for a genesis record of
    /// another format, `Err` if this is not a genesis record at all.
    pub fn genesis_format(&self) -> Result<Option<String>, String> {
        let not = || {
            format!(
                "the first record must be the genesis record (actor {GENESIS_ACTOR:?}, event \
                 {GENESIS_EVENT:?}, data {{\"format\":{FORMAT:?}}}), found actor {:?}, event {:?}",
                self.actor, self.event
            )
        };
        if self.event != GENESIS_EVENT || self.actor != GENESIS_ACTOR || self.data.len() != 1 {
            return Err(not());
        }
        match self.data.get("format") {
            Some(Value::String(f)) if f == FORMAT => Ok(None),
            Some(Value::String(f)) => Ok(Some(f.clone())),
            _ => Err(not()),
        }
    }
}

/// Hex SHA-256 of a line's bytes (without its newline).
pub(crate) fn line_hash(line: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, line))
}

/// Formats a record time: RFC 3339, UTC, milliseconds.
pub(crate) fn format_time(t: SystemTime) -> Result<String, String> {
    // humantime panics before 1970 and cannot write years past 9999.
    const LAST: Duration = Duration::from_secs(253_402_300_799);
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d <= LAST => Ok(humantime::format_rfc3339_millis(t).to_string()),
        _ => Err(format!("time {t:?} is outside 1970..=9999")),
    }
}

/// A time must be exactly what [`format_time`] writes.
pub(crate) fn check_time(s: &str) -> Result<(), String> {
    let bad =
        || format!("time {s:?} is not RFC 3339 UTC with milliseconds (2024-05-01T12:00:00.000Z)");
    let t = humantime::parse_rfc3339(s).map_err(|_| bad())?;
    if format_time(t).ok().as_deref() != Some(s) {
        return Err(bad());
    }
    Ok(())
}

pub(crate) fn check_actor(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_ACTOR || s.chars().any(char::is_control) {
        return Err(format!(
            "actor {s:?} must be 1 to {MAX_ACTOR} bytes without control characters"
        ));
    }
    Ok(())
}

pub(crate) fn check_event(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_EVENT
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !ok {
        return Err(format!(
            "event {s:?} must be 1 to {MAX_EVENT} bytes of a-z, 0-9, '.', '_', '-', \
             starting with a letter"
        ));
    }
    Ok(())
}

fn check_hash(s: &str) -> Result<(), String> {
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!("{s:?} is not 64 lower-case hex digits"));
    }
    Ok(())
}

/// Checks what a caller asks to append; returns the record's `data`.
pub(crate) fn check_new(
    actor: &str,
    event: &str,
    data: Value,
) -> Result<Map<String, Value>, String> {
    check_actor(actor)?;
    check_event(event)?;
    if event.starts_with("audit.") {
        return Err(format!(
            "event {event:?}: events starting with \"audit.\" are reserved for the log itself"
        ));
    }
    let Value::Object(map) = data else {
        return Err(format!("data of {event:?} must be a JSON object"));
    };
    if !map.values().all(|v| depth(v, MAX_DEPTH - 1)) {
        return Err(format!(
            "data of {event:?} is nested deeper than {MAX_DEPTH} levels"
        ));
    }
    Ok(map)
}

/// Encodes a new record and checks its size.
pub(crate) fn encode_new(rec: &Record) -> Result<Vec<u8>, String> {
    let line = rec.encode();
    if line.len() > MAX_RECORD_BYTES {
        return Err(format!(
            "event {:?} is {} bytes long, more than the {MAX_RECORD_BYTES} allowed",
            rec.event,
            line.len()
        ));
    }
    Ok(line)
}

#[cfg(test)]
mod tests;
