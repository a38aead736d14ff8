//! The volume's audit head signing key (docs/audit-log.md §10.3).
//!
//! The destination side signs its log's head with an Ed25519 key whose 32-byte seed is
//! derived from the volume master key: HKDF-SHA256(VMK, salt empty, info
//! "mailferry audit head signing v1"). Nothing is stored: whoever can unlock the volume
//! can sign its heads and export the public key (`mailferry audit public-key`), and
//! nobody else can. The key lives as long as the VMK (a rekey rewraps the VMK, so the
//! public key stays the same).
//!
//! This module only makes the signer and gives the volume's heads to callers; when heads
//! are signed is decided by [`crate::audit_trail`] (at the log's checkpoints, after each
//! event such as `pass.receipt`, and when the volume closes).

use crate::keys::{hkdf32, VolumeKeys};
use crate::Volume;
use mailferry_audit::{HeadSigner, LogSide, PublicKey, SignedHead};

/// HKDF info of the signing seed.
const INFO_HEAD_SIGNING: &[u8] = b"mailferry audit head signing v1";

/// The destination side's signer of the volume whose keys are `keys`.
pub(crate) fn signer(keys: &VolumeKeys) -> HeadSigner {
    let seed = hkdf32(keys.vmk.expose(), &[], INFO_HEAD_SIGNING);
    HeadSigner::from_seed(seed.expose(), LogSide::Destination)
}

// === impl Volume ===

impl Volume {
    /// The public key that checks this volume's signed audit heads.
    pub fn audit_public_key(&self) -> PublicKey {
        self.inner.audit.public_key()
    }

    /// Signs the audit log's head now (if it has records the head file does not cover)
    /// and returns the latest signed head; `None` if signing is stopped because the head
    /// file is evidence of a cut or replaced log (a warning says which).
    pub fn sign_audit_head(&self) -> Result<Option<SignedHead>, crate::StoreError> {
        self.inner.audit.sign_head()
    }
}
