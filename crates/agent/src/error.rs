//! Errors of the replication agent.

use std::path::PathBuf;
use thiserror::Error;

/// What can stop the agent. Per-message problems are not errors of this kind: they are
/// bad items in the move report, and the move goes on.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The source cannot be read at all.
    #[error("source {path}: {reason}")]
    Source {
        /// The source path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The state directory (checkpoints) cannot be used.
    #[error("state {path}: {reason}")]
    State {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Connecting to or talking with the proxy failed.
    #[error("proxy {url}: {reason}")]
    Transport {
        /// Where the agent was talking to.
        url: String,
        /// Why.
        reason: String,
    },
    /// The proxy refused the session (HTTP status and its message).
    #[error("proxy {url} refused the session with HTTP {status}: {message}")]
    Refused {
        /// Where.
        url: String,
        /// HTTP status.
        status: u16,
        /// The proxy's explanation.
        message: String,
        /// Seconds the proxy asked the agent to wait (`Retry-After`), if any.
        retry_after: Option<u64>,
    },
    /// The proxy or store ended the session with an ERROR frame.
    #[error("the store ended the session ({code}): {message}")]
    Session {
        /// Status code from the ERROR frame.
        code: u16,
        /// Its message.
        message: String,
    },
    /// The store refused this session for good: a newer lease owns the mailbox (wire
    /// protocol §3.7, ERROR or HTTP 412). Not retried: another worker is moving it.
    #[error("{message}")]
    Fenced {
        /// The mailbox.
        mailbox: String,
        /// This session's fencing number.
        fence: u64,
        /// The store's explanation ("a newer lease (fencing number G) owns mailbox M;
        /// ...").
        message: String,
    },
    /// Shared vocabulary errors (TLS setup, bad identifiers).
    #[error(transparent)]
    Core(#[from] mailferry_core::CoreError),
}
