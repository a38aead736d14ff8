//! mailferry-bench: measuring mailferry, and the material it is measured on.
//!
//! The `mailferry bench` harness ([`bench`]: local and network modes, several mailboxes,
//! IMAP and mbox sources, the comparison with Dovecot's own tools), the sample corpus
//! generator ([`sample`]: realistic Maildir and mbox trees, also used by the tests), the
//! scratch Dovecot launcher ([`dovecot`]: a real IMAP server under a temp directory,
//! for the benchmark and the tests), the relays that put a delay or a lying
//! `RFC822.SIZE` between Dovecot and its client ([`relay`]), the Maildir comparison
//! ([`compare`]) and the `mailferry demo` that ties them together ([`demo`]).
//!
//! Nothing here is needed to run a migration; it moves mail only through
//! `mailferry-control`, exactly as an admin's move does.

pub mod bench;
pub mod compare;
pub mod demo;
pub mod dovecot;
pub mod relay;
pub mod sample;

use mailferry_control::AppError;
