//! Errors of the shared vocabulary: invalid identifiers, malformed frames, bad profiles.

use thiserror::Error;

/// Everything that can go wrong while validating or decoding shared data.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CoreError {
    /// A mailbox address that cannot be used as a destination mailbox.
    #[error("mailbox address {addr:?} is not valid: {reason}")]
    BadMailbox {
        /// What the user gave.
        addr: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A folder name that could escape a directory or break a format.
    #[error("folder name {name:?} is not valid: {reason}")]
    BadFolder {
        /// The folder name as received (escaped by Debug).
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A source id that cannot be stored or exported.
    #[error("source id {id:?} is not valid: {reason}")]
    BadSourceId {
        /// The source id as received.
        id: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Maildir flags that are not letters.
    #[error("flags {flags:?} are not valid: only ASCII letters are Maildir flags")]
    BadFlags {
        /// The flags as received.
        flags: String,
    },
    /// A keyword that cannot be carried (see `Flags::keyword_ok`).
    #[error("keyword {keyword:?} is not valid: {reason}")]
    BadKeyword {
        /// The keyword as received.
        keyword: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A wire frame that does not follow docs/wire-protocol.md.
    #[error("malformed frame: {0}")]
    Frame(String),
    /// A migration profile that does not parse; lists every problem found.
    #[error("profile {origin}: {}", list_problems(problems))]
    Profile {
        /// Where the profile came from (a path or "embedded default").
        origin: String,
        /// Every problem found, not just the first.
        problems: Vec<String>,
    },
    /// A TLS certificate or key that rustls or rcgen refused.
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// One problem inline; several one per line, so a long list stays readable.
fn list_problems(problems: &[String]) -> String {
    match problems {
        [one] => one.clone(),
        many => {
            let mut s = format!("{} problems:", many.len());
            for p in many {
                s.push_str("\n  - ");
                s.push_str(p);
            }
            s
        }
    }
}
