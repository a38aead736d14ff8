//! The admin audit log: every admin action and every refusal, with the actor, in a
//! hash-chained `mailferry-audit` log at `DIR/admin-audit.jsonl`.
//!
//! Record kinds are listed in `docs/audit-log.md` ("Admin service records"). The log is
//! opened for each record and closed again, so `mailferry admin add` can record account
//! creation while the service runs (the file lock of `mailferry-audit` serialises them).
//! This module never records a secret: no password, TOTP code, session id or CSRF token.

use super::AdminError;
use mailferry_audit::{AuditError, AuditLog, Entry, VerifyOutcome};
use mailferry_control::AppError;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// File name of the admin audit log in the state directory.
pub const ADMIN_AUDIT_FILE: &str = "admin-audit.jsonl";

/// The admin audit log of one state directory.
#[derive(Debug)]
pub struct AdminAudit {
    path: PathBuf,
    lock: Mutex<()>,
}

impl AdminAudit {
    /// The log of state directory `dir` (created with its genesis record if missing).
    pub fn open(dir: &Path) -> Result<AdminAudit, AppError> {
        let a = AdminAudit {
            path: dir.join(ADMIN_AUDIT_FILE),
            lock: Mutex::new(()),
        };
        a.with_log(|_| Ok(()))
            .map_err(|e| AppError::Failed(format!("{}: {e}", a.path.display())))?;
        Ok(a)
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with_log<T>(
        &self,
        f: impl FnOnce(&mut AuditLog) -> Result<T, AuditError>,
    ) -> Result<T, AuditError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut tries = 0;
        let mut log = loop {
            match AuditLog::open(&self.path) {
                Ok(l) => break l,
                // Another process (`mailferry admin add`) holds it for a moment.
                Err(AuditError::Locked { .. }) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        };
        let out = f(&mut log)?;
        log.sync()?;
        Ok(out)
    }

    /// Appends one record and syncs it. Returns its sequence number.
    pub fn record(&self, actor: &str, event: &str, data: Value) -> Result<u64, AdminError> {
        let seq = self.with_log(|log| log.append(actor, event, data))?;
        Ok(seq)
    }

    /// [`AdminAudit::record`] for refusals: a failure to record is logged, and the
    /// refusal still goes out (it is what the caller returns anyway).
    pub fn refusal(&self, actor: &str, event: &str, data: Value) {
        if let Err(e) = self.record(actor, event, data) {
            tracing::error!("recording a refusal in the admin audit log: {e}");
        }
    }

    /// Verifies the hash chain from the first record to the last.
    pub fn verify(&self) -> Result<VerifyOutcome, AdminError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        mailferry_audit::verify(&self.path)
            .map_err(|e| AdminError::Internal(format!("admin audit log does not verify: {e}")))
    }

    /// Every record, oldest first.
    pub fn read(&self) -> Result<Vec<Entry>, AdminError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        Ok(mailferry_audit::read_records(&self.path)?)
    }
}
