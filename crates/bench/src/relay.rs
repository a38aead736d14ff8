//! Relays that sit between an IMAP client and the scratch Dovecot, for the benchmark and
//! the tests: [`DelayRelay`] adds a fixed one-way delay to every byte in both directions
//! (what `mailferry bench --latency` measures through), and [`SizeLiar`] is a TLS
//! man-in-the-middle that rewrites the `RFC822.SIZE` the server reports (what the tests
//! of "sizes are hints, not truth" read through).
//!
//! Each relay listens on `127.0.0.1:0` and runs on its own thread with its own
//! single-threaded tokio runtime (named `mf-relay`, so the benchmark can leave its CPU
//! out of mailferry's), so it works from blocking code and from async tests alike; it
//! stops, closing every connection, when dropped.
//!
//! They are not network emulators: no bandwidth limit, no loss, no jitter; and not
//! proxies for real use: [`SizeLiar`] lies on purpose.

mod delay;
mod rewrite;
mod serving;
mod size_liar;

pub use delay::{DelayRelay, DUE_BYTES, QUEUE_CAP_BYTES};
pub use rewrite::SizeRewriter;
pub use size_liar::SizeLiar;

pub(crate) use serving::THREAD_NAME;

#[cfg(test)]
mod tests;
