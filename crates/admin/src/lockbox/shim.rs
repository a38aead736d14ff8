//! TEMPORARY stand-in for the store's tenant-key API (branch wt-ck), with the same
//! names and signatures, so the lockbox workflow compiles and its tests run before the
//! merge. Every mailbox is under the volume key here; nothing cryptographic is done.
//! Deleted at the merge.
#![allow(missing_docs, dead_code)]

use mailferry_core::MailboxAddr;
use mailferry_store::{StoreError, Volume};
use serde::{Deserialize, Serialize};
use std::path::Path;
use zeroize::Zeroizing;

pub struct TenantSecret(String);
impl TenantSecret {
    pub fn load(_p: &Path) -> Result<Self, StoreError> {
        Ok(TenantSecret(String::new()))
    }
    pub fn from_file_bytes(b: &[u8]) -> Result<Self, StoreError> {
        Ok(TenantSecret(String::from_utf8_lossy(b).trim().to_string()))
    }
    pub fn tenant(&self) -> &str {
        &self.0
    }
}
pub struct GrantSecret([u8; 32]);
impl GrantSecret {
    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        b.copy_from_slice(mailferry_core::secret::SecretBytes::random(32).expose());
        GrantSecret(b)
    }
    pub fn public(&self) -> GrantPublic {
        GrantPublic(self.0)
    }
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0)
    }
    pub fn from_bytes(b: [u8; 32]) -> Self {
        GrantSecret(b)
    }
}
pub struct GrantPublic(pub [u8; 32]);
impl GrantPublic {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Result<Self, StoreError> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).map_err(|_| StoreError::Busy { path: s.into() })?;
        Ok(GrantPublic(b))
    }
}
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GrantBundle {
    pub grant_id: String,
}
pub enum KeyLevel {
    Volume,
    Customer { tenant: String, fingerprint: String },
}
pub enum ReadAccess {
    TenantKey(TenantSecret),
    Grant {
        secret: GrantSecret,
        bundle: GrantBundle,
        now: u64,
    },
}
pub enum AccessEvent {
    Requested {
        grant_id: String,
        mailbox: MailboxAddr,
        requester: String,
        reason: String,
        duration_secs: u64,
    },
    Approved {
        grant_id: String,
        mailbox: MailboxAddr,
        approver: String,
        expires: u64,
    },
    Denied {
        grant_id: String,
        mailbox: MailboxAddr,
        approver: String,
    },
    Used {
        grant_id: String,
        mailbox: MailboxAddr,
        action: String,
    },
    Expired {
        grant_id: String,
        mailbox: MailboxAddr,
    },
    Refused {
        mailbox: MailboxAddr,
        needed: String,
    },
}
pub trait VolumeExt {
    fn key_level(&self, m: &MailboxAddr) -> Result<KeyLevel, StoreError>;
    fn grant_bundle(
        &self,
        m: &MailboxAddr,
        t: &TenantSecret,
        g: &GrantPublic,
        id: &str,
        e: u64,
    ) -> Result<GrantBundle, StoreError>;
    fn unlock(&self, a: ReadAccess) -> Result<(), StoreError>;
    fn audit_access(&self, e: AccessEvent) -> Result<(), StoreError>;
}
impl VolumeExt for Volume {
    fn key_level(&self, _m: &MailboxAddr) -> Result<KeyLevel, StoreError> {
        Ok(KeyLevel::Volume)
    }
    fn grant_bundle(
        &self,
        _m: &MailboxAddr,
        _t: &TenantSecret,
        _g: &GrantPublic,
        id: &str,
        _e: u64,
    ) -> Result<GrantBundle, StoreError> {
        Ok(GrantBundle {
            grant_id: id.into(),
        })
    }
    fn unlock(&self, _a: ReadAccess) -> Result<(), StoreError> {
        Ok(())
    }
    fn audit_access(&self, e: AccessEvent) -> Result<(), StoreError> {
        let (ev, m, d) = match e {
            AccessEvent::Requested {
                grant_id,
                mailbox,
                requester,
                reason,
                duration_secs,
            } => (
                "access.requested",
                mailbox,
                serde_json::json!({"grant_id": grant_id, "requester": requester, "reason": reason, "duration_secs": duration_secs}),
            ),
            AccessEvent::Approved {
                grant_id,
                mailbox,
                approver,
                expires,
            } => (
                "access.approved",
                mailbox,
                serde_json::json!({"grant_id": grant_id, "approver": approver, "expires": expires}),
            ),
            AccessEvent::Denied {
                grant_id,
                mailbox,
                approver,
            } => (
                "access.denied",
                mailbox,
                serde_json::json!({"grant_id": grant_id, "approver": approver}),
            ),
            AccessEvent::Used {
                grant_id,
                mailbox,
                action,
            } => (
                "access.used",
                mailbox,
                serde_json::json!({"grant_id": grant_id, "action": action}),
            ),
            AccessEvent::Expired { grant_id, mailbox } => (
                "access.expired",
                mailbox,
                serde_json::json!({"grant_id": grant_id}),
            ),
            AccessEvent::Refused { mailbox, needed } => (
                "access.refused",
                mailbox,
                serde_json::json!({"needed": needed}),
            ),
        };
        let mut d = d;
        d["mailbox"] = self.pseudonym_of_mailbox(&m).into();
        self.audit_event(ev, d)
    }
}
