//! Counters for `/metrics`, rendered in the Prometheus text format (version 0.0.4).
//!
//! Process-wide totals only: no label carries a mailbox, a tenant or a token, so the
//! endpoint reveals traffic volume and nothing about whose mail it is.
//!
//! [`StoreStats`] lives here too: frame sessions add to it, `/metrics` and the move
//! report read it. Sessions depend on this module, never the other way round.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the commit latency histogram's buckets.
pub const COMMIT_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A fixed-bucket latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Count per bucket of [`COMMIT_BUCKETS`] (not cumulative), then +Inf.
    counts: [AtomicU64; COMMIT_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        let i = COMMIT_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(COMMIT_BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, b) in COMMIT_BUCKETS.iter().enumerate() {
            cum += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += self.counts[COMMIT_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cum}");
    }
}

/// Time spent by store sessions, for the move report's per-stage figures.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Nanoseconds in hashing, encrypting and appending.
    pub write_nanos: AtomicU64,
    /// Nanoseconds in group commits (fsync + SQLite).
    pub commit_nanos: AtomicU64,
    /// Number of group commits.
    pub commits: AtomicU64,
    /// Of the write time: SHA-256 of bodies.
    pub hash_nanos: AtomicU64,
    /// Of the write time: AES-256-GCM sealing.
    pub encrypt_nanos: AtomicU64,
    /// Of the write time: appending to segment files.
    pub append_nanos: AtomicU64,
    /// Of the commit time: fdatasync of segments.
    pub sync_nanos: AtomicU64,
    /// Of the commit time: SQLite transactions.
    pub index_nanos: AtomicU64,
    /// Of the commit time: audit records appended and synced.
    pub audit_nanos: AtomicU64,
    /// Messages newly stored and durable (ACK status `stored`).
    pub messages_stored: AtomicU64,
    /// Body bytes of those messages.
    pub bytes_stored: AtomicU64,
    /// DELETEs made durable that removed at least one message (ACK status `applied`).
    pub deletes_applied: AtomicU64,
    /// DELETEs that found no message (ACK status `not_found`).
    pub deletes_not_found: AtomicU64,
    /// FLAGS made durable that changed at least one message (ACK status `applied`).
    pub flag_updates_applied: AtomicU64,
    /// FLAGS that found no message (ACK status `not_found`).
    pub flag_updates_not_found: AtomicU64,
    /// DELETEs and FLAGS refused with a REJECT.
    pub changes_rejected: AtomicU64,
    /// Latency of each group commit.
    pub commit_seconds: Histogram,
}

/// Request-level counters of one proxy.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Frame sessions running now.
    pub streams_in_flight: AtomicI64,
    /// Refused requests and connections, by reason (a short fixed word).
    rejected: Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Counts one refusal.
    pub fn reject(&self, reason: &'static str) {
        *self
            .rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// The Prometheus text exposition of these counters and the store's.
    pub fn render(&self, store: &StoreStats) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            &mut out,
            "mailferry_messages_stored_total",
            "Messages newly written and durable (duplicates not counted).",
            store.messages_stored.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "mailferry_bytes_stored_total",
            "Body bytes of the messages newly stored.",
            store.bytes_stored.load(Ordering::Relaxed),
        );
        for (name, help, applied, not_found) in [
            (
                "mailferry_deletes_total",
                "DELETE frames (mirror passes) made durable, by result: applied (messages removed) or not_found.",
                &store.deletes_applied,
                &store.deletes_not_found,
            ),
            (
                "mailferry_flag_updates_total",
                "FLAGS frames (mirror passes) made durable, by result: applied (flags replaced) or not_found.",
                &store.flag_updates_applied,
                &store.flag_updates_not_found,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{result=\"applied\"}} {}\n{name}{{result=\"not_found\"}} {}",
                applied.load(Ordering::Relaxed),
                not_found.load(Ordering::Relaxed)
            );
        }
        counter(
            &mut out,
            "mailferry_changes_rejected_total",
            "DELETE and FLAGS frames refused with a REJECT.",
            store.changes_rejected.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP mailferry_streams_in_flight Frame sessions running now.\n# TYPE mailferry_streams_in_flight gauge\nmailferry_streams_in_flight {}",
            self.streams_in_flight.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP mailferry_requests_rejected_total Requests and connections refused, by reason.\n# TYPE mailferry_requests_rejected_total counter"
        );
        for (reason, n) in self
            .rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "mailferry_requests_rejected_total{{reason=\"{reason}\"}} {n}"
            );
        }
        store.commit_seconds.render(
            "mailferry_commit_seconds",
            "Group commit latency (data sync, index transaction, audit records).",
            &mut out,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        let s = StoreStats::default();
        s.commit_seconds
            .observe(std::time::Duration::from_millis(3));
        s.commit_seconds.observe(std::time::Duration::from_secs(60));
        m.reject("unauthorized");
        m.reject("unauthorized");
        let t = m.render(&s);
        for want in [
            "mailferry_requests_rejected_total{reason=\"unauthorized\"} 2",
            "mailferry_commit_seconds_bucket{le=\"0.001\"} 0",
            "mailferry_commit_seconds_bucket{le=\"0.005\"} 1",
            "mailferry_commit_seconds_bucket{le=\"10\"} 1",
            "mailferry_commit_seconds_bucket{le=\"+Inf\"} 2",
            "mailferry_commit_seconds_count 2",
            "mailferry_messages_stored_total 0",
        ] {
            assert!(t.contains(want), "{want} missing from:\n{t}");
        }
        s.deletes_applied.fetch_add(2, Ordering::Relaxed);
        s.flag_updates_not_found.fetch_add(1, Ordering::Relaxed);
        let t = m.render(&s);
        for want in [
            "mailferry_deletes_total{result=\"applied\"} 2",
            "mailferry_flag_updates_total{result=\"not_found\"} 1",
            "mailferry_changes_rejected_total 0",
        ] {
            assert!(t.contains(want), "{want} missing from:\n{t}");
        }
    }
}
