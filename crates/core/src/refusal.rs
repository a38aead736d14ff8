//! What a refused stream upgrade tells the client: how long to wait (the HTTP
//! `Retry-After` header, RFC 9110 §10.2.3) and why (the JSON body's `error`).
//!
//! One reader for both sides that meet a refusal: the agent, when the proxy or the
//! store says 429/503, and the proxy's forwarder, when a remote store does. A
//! `Retry-After` value is either delay-seconds (`120`) or an HTTP-date (IMF-fixdate,
//! `Sun, 06 Nov 1994 08:49:37 GMT`), which is taken relative to the caller's clock; a
//! date in the past means "now". The parsers are pure (the current time is a
//! parameter); [`read`] collects a refused response's head and body (at most
//! [`BODY_LIMIT`] bytes) for both callers.

use crate::calendar::{days_from_month_start, DAY, MONTHS};
use std::time::Duration;

/// How much of a refusal's body a client reads.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What a refused upgrade said: its status, how long to wait, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// HTTP status (429, 503, ...).
    pub status: u16,
    /// `Retry-After`, in whole seconds from now; `None` when absent or unreadable.
    pub retry_after: Option<u64>,
    /// [`message`] of the body.
    pub message: String,
}

/// Reads a refused response: `Retry-After` against the current clock, and at most
/// [`BODY_LIMIT`] bytes of the body (a body that fails or runs over reads as empty: the
/// status still says what happened).
pub async fn read<B>(resp: http::Response<B>) -> Refused
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::{BodyExt, Limited};
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after_secs(v, crate::unix_now()));
    let body = Limited::new(resp.into_body(), BODY_LIMIT)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Refused {
        status,
        retry_after,
        message: message(&body),
    }
}

/// Why a refusal says it refused: the `error` field of its JSON body, else the body as
/// text.
pub fn message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// Reads a `Retry-After` value relative to `now_unix`; `None` if it is neither form.
pub fn retry_after(value: &str, now_unix: i64) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_imf_fixdate(v)?;
    Some(Duration::from_secs(
        at.saturating_sub(now_unix).max(0) as u64
    ))
}

/// [`retry_after`], in whole seconds as the error types carry it, rounded up: a wait of
/// half a second is a wait of one.
pub fn retry_after_secs(value: &str, now_unix: i64) -> Option<u64> {
    retry_after(value, now_unix).map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → Unix seconds. The weekday is not checked and a
/// day past the month's end runs on into the next month (only `1..=31` is checked).
fn parse_imf_fixdate(s: &str) -> Option<i64> {
    let (_, rest) = s.split_once(", ")?;
    let mut parts = rest.split_ascii_whitespace();
    let day: u32 = parts.next()?.parse().ok()?;
    let mon = parts.next()?;
    // Case matters in an HTTP-date (unlike the mbox and IMAP readers).
    let month = MONTHS.iter().position(|m| *m == mon)? as u32 + 1;
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    Some(days_from_month_start(year, month, day)? * DAY + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests;
