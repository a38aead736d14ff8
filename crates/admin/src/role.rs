//! The two roles of an admin account, shared by [`super::accounts`] (which stores an
//! account's role) and [`super::session`] (which checks it on every request).
//!
//! It sits below both so that neither module needs the other for it. It grants nothing
//! by itself: the checks live in the session extractors.

use serde::{Deserialize, Serialize};

/// What an account may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Creates endpoints and batches, starts, suspends, resumes and completes them.
    Admin,
    /// Reads status, reports and audit logs; changes nothing.
    Auditor,
}

impl Role {
    /// `admin` or `auditor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "auditor" => Ok(Role::Auditor),
            other => Err(format!("role {other:?}: use admin or auditor")),
        }
    }
}
