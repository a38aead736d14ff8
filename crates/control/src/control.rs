//! Flags of `mailferry move` that say how fast a move may read its source and whether
//! it runs at all (`--dry-run`), and how they change the profile a pass runs with.
//!
//! Throttle flags override the profile's `[throttle]` keys for this run; an endpoint's
//! shared throttle (several moves, one budget) is built by the batch runner with
//! [`shared_throttle`] and given to each pass through
//! [`crate::moving::PassHooks::throttle`]. [`parse_connections`] checks
//! `--source-connections`, how many IMAP connections a move reads with.

use mailferry_agent::throttle::{Limits, Throttle};
use mailferry_core::profile::{ByteSize, Profile};
use std::sync::Arc;

/// Throttle and dry-run flags of `mailferry move`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ControlArgs {
    /// Plan the pass and print it (folders and their destination names, messages,
    /// bytes, skipped items and why, incremental changes, estimated time) without
    /// moving anything: writes nothing, opens no volume, needs no key.
    #[arg(long)]
    pub dry_run: bool,
    /// Read at most this many bytes per second from the source (token bucket): 10MB,
    /// 2.5MiB, 500000 [default: the profile's throttle.max_bytes_per_second, none].
    #[arg(long, value_name = "SIZE", value_parser = parse_rate_bytes)]
    pub max_bytes_per_second: Option<u64>,
    /// Read at most this many messages per second from the source (token bucket)
    /// [default: the profile's throttle.max_messages_per_second, none].
    #[arg(long, value_name = "N", value_parser = parse_rate_messages)]
    pub max_messages_per_second: Option<f64>,
}

impl ControlArgs {
    /// Writes the throttle flags given into `profile` (over its `[throttle]` keys).
    pub fn apply(&self, profile: &mut Profile) {
        if let Some(b) = self.max_bytes_per_second {
            profile.throttle.max_bytes_per_second = Some(ByteSize(b));
        }
        if let Some(m) = self.max_messages_per_second {
            profile.throttle.max_messages_per_second = Some(m);
        }
    }
}

/// A throttle several moves share (one endpoint's budget), or `None` if `limits`
/// limit nothing.
pub fn shared_throttle(limits: Limits) -> Option<Arc<Throttle>> {
    (!limits.is_unlimited()).then(|| Arc::new(Throttle::new(limits)))
}

/// `--max-bytes-per-second`: a positive size (`10MB`, `2.5MiB`, `500000`).
pub fn parse_rate_bytes(s: &str) -> Result<u64, String> {
    match ByteSize::parse(s)? {
        ByteSize(0) => {
            Err("must be more than 0 bytes per second; leave the flag out for no limit".into())
        }
        ByteSize(n) => Ok(n),
    }
}

/// `--max-messages-per-second`: a positive number (`5`, `0.5`).
pub fn parse_rate_messages(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(m) if m.is_finite() && m > 0.0 => Ok(m),
        _ => Err(format!(
            "{s:?} is not a positive number of messages per second (e.g. 5 or 0.5)"
        )),
    }
}

/// `--source-connections`: IMAP connections one move reads with, 1 to the agent's
/// `MAX_CONNECTIONS` (64).
pub fn parse_connections(s: &str) -> Result<usize, String> {
    use mailferry_agent::source::connections::MAX_CONNECTIONS;
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_CONNECTIONS).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a number of connections between 1 and {MAX_CONNECTIONS}; \
             leave the flag out for the profile's source.connections (default 4)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_connections_flag_takes_1_to_64_issue18() {
        assert_eq!(parse_connections("1"), Ok(1));
        assert_eq!(parse_connections(" 64 "), Ok(64));
        for bad in ["0", "65", "-1", "four", "", "4.5"] {
            let e = parse_connections(bad).unwrap_err();
            assert!(e.contains("between 1 and 64"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn rate_flags_parse_and_override_the_profile() {
        assert_eq!(parse_rate_bytes("10MB"), Ok(10_000_000));
        assert_eq!(parse_rate_bytes("2MiB"), Ok(2 << 20));
        assert!(parse_rate_bytes("0").is_err());
        assert!(parse_rate_bytes("fast").is_err());
        assert_eq!(parse_rate_messages("0.5"), Ok(0.5));
        assert!(parse_rate_messages("0").is_err());
        assert!(parse_rate_messages("inf").is_err());
        let mut p = Profile::default();
        ControlArgs {
            max_bytes_per_second: Some(1000),
            ..Default::default()
        }
        .apply(&mut p);
        assert_eq!(p.throttle.max_bytes_per_second, Some(ByteSize(1000)));
        assert_eq!(p.throttle.max_messages_per_second, None);
        assert!(shared_throttle(Limits::default()).is_none());
        assert!(shared_throttle(Limits::from_profile(&p.throttle)).is_some());
    }
}
