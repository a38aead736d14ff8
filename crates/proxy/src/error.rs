//! Proxy errors and the one mapping from errors to HTTP status codes.

use hyper::StatusCode;
use thiserror::Error;

/// Why a request or session was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// No or unknown bearer token.
    #[error("authentication required: send `Authorization: Bearer <token>` with a valid token")]
    Unauthorized,
    /// The token belongs to another tenant than the mailbox.
    #[error("mailbox {mailbox}: the token belongs to another tenant (use a token issued with `mailferry token issue --tenant` for this mailbox's domain)")]
    Forbidden {
        /// The mailbox asked for.
        mailbox: String,
    },
    /// Nothing is served at this path.
    #[error(
        "no such endpoint: {0} (the stream endpoint is POST /v1/mailboxes/{{mailbox}}/stream)"
    )]
    NotFound(String),
    /// Wrong method for the path.
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// The mailbox in the path is not an address.
    #[error("{0}")]
    BadMailbox(#[from] mailferry_core::CoreError),
    /// The request did not ask to upgrade to the frame protocol.
    #[error(
        "this endpoint needs `Connection: upgrade` and `Upgrade: {}`",
        mailferry_core::frame::UPGRADE_TOKEN
    )]
    UpgradeRequired,
    /// The service cannot take the request now (shutting down, volume not ready).
    #[error("service unavailable: {0}; retry later")]
    Unavailable(String),
    /// A remote store node refused or could not be reached; passed on to the agent.
    #[error("store node: {message}")]
    Upstream {
        /// The status to answer with.
        status: u16,
        /// The node's explanation.
        message: String,
        /// `Retry-After` to pass on.
        retry_after: Option<u64>,
    },
    /// A stream limit is reached; the client should retry after `retry_after` seconds.
    #[error("too busy: {what}; retry in {retry_after} s")]
    Busy {
        /// Which limit.
        what: String,
        /// True for the per-token limit (429), false for the overall one (503).
        per_token: bool,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// Another session is already moving this mailbox (one agent per mailbox at a time).
    #[error("another agent is already moving mailbox {mailbox} (session started at {since}); wait for it to finish or stop it")]
    MailboxBusy {
        /// The mailbox.
        mailbox: String,
        /// When the running session started, RFC 3339.
        since: String,
    },
    /// The `Mailferry-Fence` request header is not a fencing number.
    #[error("the {header} header must be a fencing number in decimal (0 to 18446744073709551615), not {value:?}; fix the client")]
    BadFence {
        /// The header's name.
        header: &'static str,
        /// What it held (a number, not a secret).
        value: String,
    },
    /// The store refused.
    #[error(transparent)]
    Store(#[from] mailferry_store::StoreError),
    /// Binding or accepting failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The one place errors become HTTP status codes (auth 401, other tenant 403, unknown 404, bad input 400,
/// mailbox already being moved 409, tampered or refused content 422, server-side faults 500).
pub fn status_for(e: &ProxyError) -> StatusCode {
    use mailferry_store::StoreError as S;
    match e {
        ProxyError::Unauthorized => StatusCode::UNAUTHORIZED,
        ProxyError::Forbidden { .. } => StatusCode::FORBIDDEN,
        ProxyError::NotFound(_) => StatusCode::NOT_FOUND,
        ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
        ProxyError::BadMailbox(_) | ProxyError::BadFence { .. } => StatusCode::BAD_REQUEST,
        ProxyError::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
        ProxyError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ProxyError::Upstream { status, .. } => {
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
        }
        ProxyError::Busy {
            per_token: true, ..
        } => StatusCode::TOO_MANY_REQUESTS,
        ProxyError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ProxyError::MailboxBusy { .. } => StatusCode::CONFLICT,
        ProxyError::Store(S::UnknownMailbox { .. }) => StatusCode::NOT_FOUND,
        ProxyError::Store(S::Rejected { .. }) => StatusCode::UNPROCESSABLE_ENTITY,
        // A newer lease owns the mailbox: the same code as the ERROR frame (wire §3.5).
        ProxyError::Store(S::Fenced { .. }) => StatusCode::PRECONDITION_FAILED,
        ProxyError::Store(_) | ProxyError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
