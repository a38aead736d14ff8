//! Value types of profile keys that TOML has no direct type for: byte sizes with units,
//! dates that are absolute or relative to the start of a pass, and instants.
//!
//! Everything here is pure: "relative" dates are resolved against a `now` the caller
//! passes in, never against the clock.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

use crate::calendar;

// === ByteSize ===

/// A number of bytes: a TOML integer, or a string with a unit (`"150MB"`, `"25 MiB"`,
/// `"1.5G"`). `K`/`KB`, `M`/`MB`, `G`/`GB`, `T`/`TB` are powers of 1000; `KiB`, `MiB`,
/// `GiB`, `TiB` powers of 1024. Serialized as a plain integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `"150MB"`, `"25 MiB"`, `"1.5G"`, `"4096"`.
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let num = num.replace('_', "");
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            _ => {
                return Err(format!(
                    "{s:?} is not a size (expected a number of bytes, or a number with \
                     a unit: KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
                ))
            }
        };
        let bad = || format!("{s:?} is not a size (expected e.g. 4096, \"150MB\" or \"1.5GiB\")");
        if num.is_empty() {
            return Err(bad());
        }
        // TOML integers are i64: a size must fit one to be written back.
        let too_large = || format!("{s:?} is too large");
        if let Ok(n) = num.parse::<u64>() {
            return n
                .checked_mul(mult)
                .filter(|v| i64::try_from(*v).is_ok())
                .map(ByteSize)
                .ok_or_else(too_large);
        }
        let f: f64 = num.parse().map_err(|_| bad())?;
        let v = (f * mult as f64).round();
        if !v.is_finite() || v >= i64::MAX as f64 {
            return Err(too_large());
        }
        Ok(ByteSize(v as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes, or a string like \"150MB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("a size must not be negative (got {v})")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

// === Dates ===

/// One end of the date window of a profile's `[filter]`: an instant, or an age relative
/// to the start of the pass (`"365d"` = 365 days before the pass started).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DateBound {
    /// A fixed instant, Unix seconds.
    At(i64),
    /// An age: `secs` seconds before the start of the pass; `text` as written.
    Ago {
        /// The age in seconds (> 0).
        secs: u64,
        /// What the profile said (`"365d"`), kept for `profile show`.
        text: String,
    },
}

impl DateBound {
    /// Parses `"2024-01-01"`, `"2024-01-01T12:00:00Z"`, `"2024-01-01T12:00:00+02:00"`
    /// or an age like `"365d"`, `"12weeks"`, `"1y"` (humantime units).
    pub fn parse(s: &str) -> Result<DateBound, String> {
        let t = s.trim();
        if t.starts_with(|c: char| c.is_ascii_digit()) && t.len() >= 10 && t.as_bytes()[4] == b'-' {
            return parse_rfc3339(t).map(DateBound::At);
        }
        match humantime::parse_duration(t) {
            Ok(d) if d.as_secs() > 0 => Ok(DateBound::Ago {
                secs: d.as_secs(),
                text: t.to_string(),
            }),
            Ok(_) => Err(format!("{s:?}: an age must be at least one second")),
            Err(_) => Err(format!(
                "{s:?} is neither a date (\"2024-01-01\", \"2024-01-01T00:00:00Z\") nor an \
                 age (\"365d\", \"12weeks\")"
            )),
        }
    }

    /// The instant this bound stands for, given the start of the pass.
    pub fn resolve(&self, now: i64) -> i64 {
        match self {
            DateBound::At(t) => *t,
            DateBound::Ago { secs, .. } => {
                now.saturating_sub(i64::try_from(*secs).unwrap_or(i64::MAX))
            }
        }
    }
}

impl fmt::Display for DateBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DateBound::At(t) => f.write_str(&format_rfc3339(*t)),
            DateBound::Ago { text, .. } => f.write_str(text),
        }
    }
}

impl Serialize for DateBound {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DateBound {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = d.deserialize_any(DateText(
            "a date like \"2024-01-01\" or an age like \"365d\"",
        ))?;
        DateBound::parse(&s).map_err(de::Error::custom)
    }
}

/// A fixed instant of a profile's `[schedule]`, Unix seconds; written as RFC 3339
/// (`2025-07-01T22:00:00Z`, or a TOML date-time with an offset).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_rfc3339(self.0))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = d.deserialize_any(DateText(
            "an RFC 3339 date-time like \"2025-07-01T22:00:00Z\"",
        ))?;
        parse_rfc3339(s.trim())
            .map(Timestamp)
            .map_err(de::Error::custom)
    }
}

/// Takes a date as text, from a TOML string or a native TOML date-time (which the toml
/// deserializer hands over as a one-entry map holding its text).
struct DateText(&'static str);

impl<'de> Visitor<'de> for DateText {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
        match map.next_entry::<String, String>()? {
            Some((_, v)) => Ok(v),
            None => Err(de::Error::custom(format!("expected {}", self.0))),
        }
    }
}

/// Parses RFC 3339: `YYYY-MM-DD` (midnight UTC), or `YYYY-MM-DD[T ]HH:MM[:SS[.frac]]`
/// followed by `Z` or `±HH:MM`. A date-time without an offset is refused: which time
/// zone it meant is a guess a migration tool should not make.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let bad = |why: &str| format!("{s:?} is not an RFC 3339 date: {why}");
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let part = s.get(r).ok_or_else(|| bad("too short"))?;
        if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad("expected digits"));
        }
        part.parse().map_err(|_| bad("expected digits"))
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad("expected YYYY-MM-DD"));
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    // Four digits each, so the casts below cannot truncate.
    let days =
        calendar::days_from_civil(y, mo as u32, d as u32).ok_or_else(|| bad("no such day"))?;
    if b.len() == 10 {
        return Ok(days * 86_400);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 16 || b[13] != b':' {
        return Err(bad("expected THH:MM after the date"));
    }
    let (h, mi) = (num(11..13)?, num(14..16)?);
    let mut i = 16;
    let mut sec = 0;
    if b.get(i) == Some(&b':') {
        sec = num(i + 1..i + 3)?;
        i += 3;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return Err(bad("expected digits after '.'"));
            }
        }
    }
    if h > 23 || mi > 59 || sec > 60 {
        return Err(bad("no such time of day"));
    }
    let offset = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return Err(bad("no such offset"));
            }
            let o = oh * 3600 + om * 60;
            if sign == b'+' {
                o
            } else {
                -o
            }
        }
        None => return Err(bad("a date-time needs Z or an offset like +02:00")),
        _ => return Err(bad("expected Z or an offset like +02:00 at the end")),
    };
    // A leap second is counted as the next second's start, as Unix time does.
    Ok(days * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_rfc3339(t: i64) -> String {
    let c = calendar::Civil::from_unix(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}
