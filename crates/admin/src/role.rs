//! The roles of an admin account, shared by [`super::accounts`] (which stores an
//! account's role) and [`super::session`] (which checks it on every request).
//!
//! It sits below both so that neither module needs the other for it. It grants nothing
//! by itself: the checks live in the session extractors and, for the lockbox, in
//! [`super::lockbox`].

use serde::{Deserialize, Serialize};

/// What an account may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Creates endpoints and batches, starts, suspends, resumes and completes them, and
    /// requests lockbox access to a mailbox.
    Admin,
    /// Reads status, reports and audit logs (and the lockbox's requests); changes nothing.
    Auditor,
    /// Approves or denies lockbox requests for the tenants (mail domains) the account is
    /// scoped to; otherwise reads like an auditor.
    Approver,
}

impl Role {
    /// `admin`, `auditor` or `approver`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::Approver => "approver",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "auditor" => Ok(Role::Auditor),
            "approver" => Ok(Role::Approver),
            other => Err(format!("role {other:?}: use admin, auditor or approver")),
        }
    }
}
