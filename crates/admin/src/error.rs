//! Errors of the admin service and the one place they become HTTP responses.
//!
//! Every refusal the API or the pages give goes through [`AdminError::status`] and
//! [`AdminError::code`]; the JSON body is always
//! `{"error":{"code":"snake_case","message":"what went wrong and what to do"}}`.
//! This module does not audit anything: callers record refusals before returning them.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mailferry_control::AppError;
use std::time::Duration;
use thiserror::Error;

/// What an admin request can fail with.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AdminError {
    /// No session, or the session expired (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// Wrong name, password or TOTP code (401). The message never says which.
    #[error("login refused: wrong name, password or TOTP code (use a fresh code from your authenticator)")]
    BadLogin,
    /// Too many failed logins (429 with `Retry-After`).
    #[error("account {name} is locked after too many failed logins; try again in {} s", retry_after.as_secs().max(1))]
    Locked {
        /// The account.
        name: String,
        /// How long until it unlocks.
        retry_after: Duration,
    },
    /// Logged in but the role does not allow it (403).
    #[error("{0}")]
    Forbidden(String),
    /// The account still has its one-time password: only changing it (or logging out)
    /// is allowed (403).
    #[error("{name} must change the one-time password before anything else: choose a new password on the account page (/account/password) or with POST /api/v1/account/password")]
    PasswordChangeRequired {
        /// The account.
        name: String,
    },
    /// A state-changing request without the session's CSRF token (403).
    #[error("missing or wrong CSRF token: send the session's token in the x-csrf-token header (or the csrf form field); reload the page if it expired")]
    Csrf,
    /// The thing asked for does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The thing exists already, or its state refuses the request (409).
    #[error("{0}")]
    Conflict(String),
    /// The request is well-formed but its content is wrong (422).
    #[error("{message}")]
    Invalid {
        /// What is wrong and what to do.
        message: String,
        /// Every bad CSV row, when the input was a batch CSV.
        rows: Vec<mailferry_control::batch::RowProblem>,
    },
    /// The request could not be parsed (400).
    #[error("{0}")]
    BadRequest(String),
    /// Something failed on our side (500).
    #[error("{0}")]
    Internal(String),
    /// A service we depend on is unreachable: the coordination database of
    /// `admin serve --db` (503).
    #[error("{0}")]
    Unavailable(String),
}

impl AdminError {
    /// A 422 with only a message.
    pub fn invalid(message: impl Into<String>) -> AdminError {
        AdminError::Invalid {
            message: message.into(),
            rows: Vec::new(),
        }
    }

    /// The HTTP status of this error: THE mapping of the admin service.
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::Unauthenticated(_) | AdminError::BadLogin => StatusCode::UNAUTHORIZED,
            AdminError::Locked { .. } => StatusCode::TOO_MANY_REQUESTS,
            AdminError::Forbidden(_)
            | AdminError::Csrf
            | AdminError::PasswordChangeRequired { .. } => StatusCode::FORBIDDEN,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable machine-readable code (snake_case).
    pub fn code(&self) -> &'static str {
        match self {
            AdminError::Unauthenticated(_) => "unauthenticated",
            AdminError::BadLogin => "bad_login",
            AdminError::Locked { .. } => "locked",
            AdminError::Forbidden(_) => "forbidden",
            AdminError::Csrf => "csrf",
            AdminError::PasswordChangeRequired { .. } => "password_change_required",
            AdminError::NotFound(_) => "not_found",
            AdminError::Conflict(_) => "conflict",
            AdminError::Invalid { .. } => "invalid",
            AdminError::BadRequest(_) => "bad_request",
            AdminError::Internal(_) => "internal",
            AdminError::Unavailable(_) => "unavailable",
        }
    }

    /// `Retry-After` seconds, for a lockout.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            AdminError::Locked { retry_after, .. } => Some(retry_after.as_secs().max(1)),
            _ => None,
        }
    }

    /// The JSON body (`{"error":{"code","message"[,"rows"]}}`).
    pub fn body(&self) -> serde_json::Value {
        let mut e = serde_json::json!({"code": self.code(), "message": self.to_string()});
        if let AdminError::Invalid { rows, .. } = self {
            if !rows.is_empty() {
                e["rows"] = serde_json::to_value(rows).expect("rows serialize");
            }
        }
        serde_json::json!({ "error": e })
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let mut r = (self.status(), axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after() {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

impl From<AppError> for AdminError {
    fn from(e: AppError) -> AdminError {
        match e {
            AppError::Usage(m) => {
                if m.starts_with("no batch in") {
                    AdminError::NotFound(m)
                } else {
                    AdminError::invalid(m)
                }
            }
            AppError::Refused(m) => AdminError::Conflict(m),
            AppError::Core(c) => AdminError::invalid(c.to_string()),
            other => AdminError::Internal(format!("{other:#}")),
        }
    }
}

impl From<mailferry_coord::CoordError> for AdminError {
    fn from(e: mailferry_coord::CoordError) -> AdminError {
        use mailferry_coord::CoordError;
        match e {
            CoordError::NotFound(m) => AdminError::NotFound(m),
            CoordError::App(a) => a.into(),
            // A TLS refusal on a reconnect (a certificate the URL's CA does not vouch
            // for) leaves the database out of reach, as a down server does.
            e @ (CoordError::Db { .. } | CoordError::Tls { .. } | CoordError::Migrate(_)) => {
                AdminError::Unavailable(e.to_string())
            }
            other => AdminError::Internal(other.to_string()),
        }
    }
}

impl From<mailferry_audit::AuditError> for AdminError {
    fn from(e: mailferry_audit::AuditError) -> AdminError {
        AdminError::Internal(format!("admin audit log: {e}"))
    }
}
