//! Customer keys and lockbox grants: a tenant's X25519 key pair whose private half the
//! operator does not hold, and one-time grant keys that an approver's tool re-wraps a
//! mailbox's keys to.
//!
//! Once a tenant has a registered customer key, every mailbox key generation of that
//! tenant is HPKE-wrapped (crate::hpke, RFC 9180 base mode) to the tenant's public key;
//! the store writes, deduplicates, counts, compacts, replicates, shreds and checks the
//! integrity of such mailboxes without the private key, but decrypts nothing until
//! [`Volume::unlock`] is given the tenant's key or an unexpired grant. This module holds
//! the key types, their file format, the pure wrap/derive functions
//! (docs/volume-format.md, "Customer key") and the volume's unlock state; it does not
//! decide who may approve a grant (the admin service does) and never writes a private
//! key into the volume.

use crate::keys::{self, Key};
use crate::{hpke, StoreError};
use mailferry_core::MailboxAddr;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use zeroize::Zeroizing;

// === labels (docs/volume-format.md, "Customer key") ===

/// HPKE `info` of a mailbox key generation wrapped to a tenant's public key.
pub const INFO_CK_WRAP: &[u8] = b"mailferry customer key wrap v1";
/// AAD label of a mailbox key generation wrapped to a tenant's public key.
pub const AAD_CK_MAILBOX: &[u8] = b"MFK1ckmailbox";
/// AAD label of a tenant's index key, wrapped under the VMK.
pub const AAD_CK_INDEX: &[u8] = b"MFK1ckindex";
/// HKDF info of a customer-key mailbox's index base key (from the tenant's index key).
pub const INFO_CK_INDEX: &[u8] = b"mailferry ck index v1";
/// HKDF info of the key sealing a customer-key message's receipt leaf.
pub const INFO_CK_LEAF: &[u8] = b"mailferry ck leaf v1";
/// AAD label of a sealed receipt leaf.
pub const AAD_LEAF: &[u8] = b"MFL1";
/// HKDF info of a flags overlay key (from a mailbox key generation and a salt).
pub const INFO_FLAGS: &[u8] = b"mailferry flags v1";
/// AAD label of a flags overlay.
pub const AAD_FLAGS: &[u8] = b"MFF1";
/// HPKE `info` of a mailbox key generation wrapped to a grant's public key.
pub const INFO_GRANT: &[u8] = b"mailferry grant wrap v1";
/// AAD label of a mailbox key generation wrapped to a grant's public key.
pub const AAD_GRANT: &[u8] = b"MFG1";
/// Length of a mailbox key wrapped to a public key: `enc(32) || ct(32) || tag(16)`. A
/// key wrapped under the tenant's symmetric key is 60 bytes, so the length says which.
pub const WRAPPED_CK_LEN: usize = hpke::ENC_LEN + 32 + hpke::TAG_LEN;
/// First line of a tenant key file.
const FILE_MAGIC: &str = "mailferry tenant key v1";

// === key types ===

/// A tenant's X25519 private key and the tenant (mail domain) it belongs to. Zeroized
/// on drop; `Debug` prints `[redacted]`. Only the tenant holds it: it is written once,
/// outside the volume, by `tenant key init`.
pub struct TenantSecret {
    tenant: String,
    secret: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for TenantSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A tenant's X25519 public key, registered in the volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TenantPublic(pub [u8; 32]);

impl TenantPublic {
    /// 32 hex digits: the first 16 bytes of SHA-256("mailferry tenant key v1" || key).
    /// Refusals and the audit log name a customer key by this.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.0)
    }
}

fn fingerprint(public: &[u8; 32]) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        &[FILE_MAGIC.as_bytes(), &public[..]].concat(),
    );
    hex::encode(&d.as_ref()[..16])
}

impl TenantSecret {
    /// A fresh random key pair for `tenant` (lowercased).
    pub fn generate(tenant: &str) -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        keys::fill_random(&mut secret[..]);
        TenantSecret {
            tenant: tenant.trim().to_ascii_lowercase(),
            secret,
        }
    }

    /// From fixed bytes (test vectors).
    pub fn from_bytes(tenant: &str, secret: [u8; 32]) -> Self {
        TenantSecret {
            tenant: tenant.trim().to_ascii_lowercase(),
            secret: Zeroizing::new(secret),
        }
    }

    /// The public half.
    pub fn public(&self) -> TenantPublic {
        TenantPublic(hpke::public_of(&self.secret))
    }

    /// The tenant (mail domain) this key belongs to.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// Writes the key file once: refused if `path` exists (create-new), mode 0600,
    /// fsynced. Format (docs/volume-format.md, "Tenant key file"): four lines,
    /// `mailferry tenant key v1`, `tenant: <domain>`, `fingerprint: <32 hex>`,
    /// `secret: <64 hex>`.
    pub fn write_new(&self, path: &Path) -> Result<(), StoreError> {
        let err = |reason: String| StoreError::TenantKey {
            path: path.to_path_buf(),
            reason,
        };
        let text = Zeroizing::new(format!(
            "{FILE_MAGIC}\ntenant: {}\nfingerprint: {}\nsecret: {}\n",
            self.tenant,
            self.public().fingerprint(),
            hex::encode(*self.secret)
        ));
        let mut f = mailferry_audit::private::options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| {
                err(if e.kind() == std::io::ErrorKind::AlreadyExists {
                    "exists already; a tenant key is written once and never overwritten: choose another --out path (or use the existing key)".into()
                } else {
                    format!("cannot be created: {e}")
                })
            })?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| {
                err(format!(
                    "cannot be written: {e}; delete the partial file and run again"
                ))
            })
    }

    /// Reads a key file written by [`TenantSecret::write_new`]; the fingerprint line must
    /// match the key (a damaged or edited file is refused).
    pub fn load(path: &Path) -> Result<Self, StoreError> {
        let text = Zeroizing::new(std::fs::read(path).map_err(|e| StoreError::TenantKey {
            path: path.to_path_buf(),
            reason: format!("cannot be read: {e} (check the path)"),
        })?);
        Self::parse(&text, path)
    }

    /// A tenant key from the content of its file (a file read by [`Self::load`], an
    /// upload), checked the same way: the magic line, the tenant, and a fingerprint that
    /// matches the secret. `origin` names where the text came from in errors.
    pub fn parse(text: &[u8], origin: &Path) -> Result<Self, StoreError> {
        let err = |reason: &str| StoreError::TenantKey {
            path: origin.to_path_buf(),
            reason: reason.to_string(),
        };
        let text =
            std::str::from_utf8(text).map_err(|_| err("not a tenant key file (it is not text)"))?;
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(FILE_MAGIC) {
            return Err(err(&format!(
                "not a tenant key file (the first line must be `{FILE_MAGIC}`)"
            )));
        }
        let mut field = |name: &str| -> Result<String, StoreError> {
            let line = lines.next().unwrap_or("");
            line.strip_prefix(name)
                .and_then(|r| r.strip_prefix(':'))
                .map(|v| v.trim().to_string())
                .ok_or_else(|| err(&format!("line `{name}: ...` missing or out of order")))
        };
        let tenant = field("tenant")?;
        let fp = field("fingerprint")?;
        let secret_hex = Zeroizing::new(field("secret")?);
        let mut secret = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(secret_hex.as_bytes(), &mut secret[..])
            .map_err(|_| err("the secret is not 64 hex digits; the file is damaged"))?;
        let key = TenantSecret { tenant, secret };
        if key.tenant.is_empty() {
            return Err(err("names no tenant"));
        }
        if key.public().fingerprint() != fp {
            return Err(err(
                "its fingerprint line does not match its secret; the file is damaged or edited",
            ));
        }
        Ok(key)
    }
}

/// A grant's one-time X25519 private key, made by the requester's tool. Zeroized on
/// drop; `Debug` prints `[redacted]`.
pub struct GrantSecret(pub(crate) Zeroizing<[u8; 32]>);

impl std::fmt::Debug for GrantSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl GrantSecret {
    /// A fresh random one-time key.
    pub fn generate() -> Self {
        let mut s = Zeroizing::new([0u8; 32]);
        keys::fill_random(&mut s[..]);
        GrantSecret(s)
    }

    /// The public half, sent with the request.
    pub fn public(&self) -> GrantPublic {
        GrantPublic(hpke::public_of(&self.0))
    }

    /// The secret bytes, for the requester's own store of pending grants.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        self.0.clone()
    }

    /// From bytes kept by [`GrantSecret::to_bytes`].
    pub fn from_bytes(b: [u8; 32]) -> Self {
        GrantSecret(Zeroizing::new(b))
    }
}

/// A grant's public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantPublic(pub [u8; 32]);

impl GrantPublic {
    /// 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, StoreError> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut b).map_err(|_| StoreError::TenantKey {
            path: "grant public key".into(),
            reason: "not 64 hex digits".into(),
        })?;
        Ok(GrantPublic(b))
    }
}

/// One mailbox key generation wrapped to a grant's public key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct GrantedKey {
    /// The generation's key id.
    pub key_id: u32,
    /// HPKE `enc || ct || tag`, hex.
    pub wrapped: String,
}

/// What an approval hands the requester: every key generation of one mailbox, wrapped to
/// the grant's public key, bound (in each wrap's AAD) to the volume, the mailbox row, the
/// key id, the grant id and the expiry. Holds no secret in the clear.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct GrantBundle {
    /// The lockbox request id.
    pub grant_id: String,
    /// The mailbox address.
    pub mailbox: String,
    /// Unix seconds from which the grant is refused.
    pub expires: u64,
    /// The grant's public key, hex.
    pub grant_public: String,
    /// The volume id, hex (a bundle does not open on another volume).
    pub volume_id: String,
    /// The mailbox's index row.
    pub mailbox_row: u64,
    /// Every generation of the mailbox.
    pub keys: Vec<GrantedKey>,
}

/// Who can read a mailbox's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyLevel {
    /// Its keys are wrapped under the volume's key hierarchy: the volume key reads it.
    Volume,
    /// Its keys are wrapped to the tenant's customer key.
    Customer {
        /// The tenant (mail domain).
        tenant: String,
        /// The fingerprint of the tenant's public key.
        fingerprint: String,
    },
}

/// Read keys handed to an open volume ([`Volume::unlock`]).
pub enum ReadAccess {
    /// The tenant's private key: every mailbox of that tenant.
    TenantKey(TenantSecret),
    /// An approved grant: one mailbox until the bundle's expiry.
    Grant {
        /// The grant's one-time private key.
        secret: GrantSecret,
        /// The approval's bundle.
        bundle: GrantBundle,
        /// The time now, Unix seconds (a bundle past its expiry is refused).
        now: u64,
    },
}

impl std::fmt::Debug for ReadAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A lockbox step, recorded in the volume's audit log by [`Volume::audit_access`]
/// (docs/audit-log.md, "Access events"). Mailboxes are recorded by pseudonym; the
/// request's free-text reason by its SHA-256 only (the admin audit log keeps the text).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessEvent {
    /// Someone asked to read a mailbox.
    Requested {
        /// The request id.
        grant_id: String,
        /// The mailbox.
        mailbox: MailboxAddr,
        /// The requesting account.
        requester: String,
        /// Why (free text).
        reason: String,
        /// How long for.
        duration_secs: u64,
    },
    /// An approver granted it.
    Approved {
        /// The request id.
        grant_id: String,
        /// The mailbox.
        mailbox: MailboxAddr,
        /// The approving account.
        approver: String,
        /// Unix seconds from which the grant is refused.
        expires: u64,
    },
    /// An approver denied it.
    Denied {
        /// The request id.
        grant_id: String,
        /// The mailbox.
        mailbox: MailboxAddr,
        /// The denying account.
        approver: String,
    },
    /// A grant was used (an export, a decrypted read).
    Used {
        /// The grant id.
        grant_id: String,
        /// The mailbox.
        mailbox: MailboxAddr,
        /// What was done ("export", ...).
        action: String,
    },
    /// A grant ran out.
    Expired {
        /// The grant id.
        grant_id: String,
        /// The mailbox.
        mailbox: MailboxAddr,
    },
    /// A read was refused: no tenant key and no active grant.
    Refused {
        /// The mailbox.
        mailbox: MailboxAddr,
        /// What would have been needed (the customer key's fingerprint, or a grant).
        needed: String,
    },
}

/// What registering or converting a tenant's customer key did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConvertOutcome {
    /// The customer key's fingerprint.
    pub fingerprint: String,
    /// Existing mailboxes moved to the customer key by this run.
    pub mailboxes: u64,
    /// Key generations HPKE-wrapped to the public key.
    pub keys_rewrapped: u64,
    /// Messages whose dedup value, locator, digest and leaf were recomputed.
    pub messages: u64,
    /// False if the run stopped before the conversion finished (rerun to resume).
    pub finished: bool,
}

// === pure functions (vectors) ===

/// AAD of a mailbox key generation wrapped to the tenant's public key:
/// `"MFK1ckmailbox" || volume id || mailbox row id (u64) || key id (u32)`.
pub fn ck_wrap_aad(volume_id: &[u8; 16], mailbox_id: u64, key_id: u32) -> Vec<u8> {
    [
        AAD_CK_MAILBOX,
        volume_id,
        &mailbox_id.to_be_bytes(),
        &key_id.to_be_bytes(),
    ]
    .concat()
}

/// Wraps a mailbox key generation to `public` with the ephemeral key `sk_e` (random in
/// use: [`wrap_to_public`]).
pub fn wrap_to_public_with(
    public: &[u8; 32],
    sk_e: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    key: &Key,
) -> Option<Vec<u8>> {
    hpke::seal_with(hpke::Aead::Aes256Gcm, public, sk_e, info, aad, key.expose()).map(|s| s.bytes)
}

/// Wraps a mailbox key generation to `public` (fresh ephemeral key).
pub fn wrap_to_public(public: &[u8; 32], info: &[u8], aad: &[u8], key: &Key) -> Option<Vec<u8>> {
    hpke::seal(public, info, aad, key.expose())
}

/// Unwraps what [`wrap_to_public`] made with the matching private key.
pub fn unwrap_with_secret(
    secret: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    wrapped: &[u8],
) -> Option<Key> {
    let plain = hpke::open(hpke::Aead::Aes256Gcm, secret, info, aad, wrapped)?;
    let b: [u8; 32] = plain[..].try_into().ok()?;
    Some(Key::from_bytes(b))
}

/// AAD of a generation wrapped to a grant: `"MFG1" || volume id || mailbox row id (u64)
/// || key id (u32) || grant id length (u16) || grant id || expires (u64)`.
pub fn grant_aad(
    volume_id: &[u8; 16],
    mailbox_id: u64,
    key_id: u32,
    grant_id: &str,
    expires: u64,
) -> Vec<u8> {
    [
        AAD_GRANT,
        volume_id,
        &mailbox_id.to_be_bytes(),
        &key_id.to_be_bytes(),
        &(grant_id.len() as u16).to_be_bytes(),
        grant_id.as_bytes(),
        &expires.to_be_bytes(),
    ]
    .concat()
}

/// The index base key of a customer-key mailbox: `HKDF(tenant index key, salt = mailbox
/// row id (u64), info = "mailferry ck index v1")`. Its dedup and locator keys derive
/// from it as from a mailbox key (`keys::dedup_mac_key`, `keys::locator_mac_key`).
pub fn mailbox_index_key(index_key: &Key, mailbox_id: u64) -> Key {
    keys::hkdf32(index_key.expose(), &mailbox_id.to_be_bytes(), INFO_CK_INDEX)
}

fn leaf_aad(volume_id: &[u8; 16], mailbox_id: u64, message_id: u64) -> Vec<u8> {
    [
        AAD_LEAF,
        volume_id,
        &mailbox_id.to_be_bytes(),
        &message_id.to_be_bytes(),
    ]
    .concat()
}

/// Seals a receipt leaf under the mailbox's index base key.
pub fn seal_leaf(
    base: &Key,
    nonce: [u8; 12],
    volume_id: &[u8; 16],
    mailbox_id: u64,
    message_id: u64,
    leaf: &[u8; 32],
) -> Vec<u8> {
    let k = keys::hkdf32(base.expose(), &[], INFO_CK_LEAF);
    keys::seal_small(
        &k,
        nonce,
        &leaf_aad(volume_id, mailbox_id, message_id),
        leaf,
    )
}

/// Opens a leaf sealed by [`seal_leaf`].
pub fn open_leaf(
    base: &Key,
    volume_id: &[u8; 16],
    mailbox_id: u64,
    message_id: u64,
    sealed: &[u8],
) -> Option<[u8; 32]> {
    let k = keys::hkdf32(base.expose(), &[], INFO_CK_LEAF);
    let p = keys::open_small(&k, &leaf_aad(volume_id, mailbox_id, message_id), sealed)?;
    p[..].try_into().ok()
}

fn flags_aad(volume_id: &[u8; 16], mailbox_id: u64, message_id: u64, key_id: u32) -> Vec<u8> {
    [
        AAD_FLAGS,
        volume_id,
        &mailbox_id.to_be_bytes(),
        &message_id.to_be_bytes(),
        &key_id.to_be_bytes(),
    ]
    .concat()
}

/// The flags overlay of a customer-key message, set by a mirror pass whose session
/// holds generation `key_id` (`gen_key`) but not the one that sealed the message:
/// `key id (u32) || salt (32) || AES-256-GCM(HKDF(gen key, salt, "mailferry flags v1"),
/// zero nonce, "MFF1" || volume id || mailbox row || message id || key id, flags padded
/// with spaces to 64 bytes)`. The salt is fresh per overlay, so the zero nonce is used
/// once per key.
pub fn seal_flags(
    gen_key: &Key,
    key_id: u32,
    salt: [u8; 32],
    volume_id: &[u8; 16],
    mailbox_id: u64,
    message_id: u64,
    flags: &str,
) -> Vec<u8> {
    let k = keys::hkdf32(gen_key.expose(), &salt, INFO_FLAGS);
    let mut plain = Zeroizing::new(flags.as_bytes().to_vec());
    let padded = plain.len().div_ceil(64).max(1) * 64;
    plain.resize(padded, b' ');
    let sealed = keys::seal_small(
        &k,
        [0u8; 12],
        &flags_aad(volume_id, mailbox_id, message_id, key_id),
        &plain,
    );
    [&key_id.to_be_bytes()[..], &salt, &sealed].concat()
}

/// The key id a flags overlay was sealed under.
pub fn flags_key_id(overlay: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(overlay.get(..4)?.try_into().ok()?))
}

/// Opens a flags overlay with the generation it names.
pub fn open_flags(
    gen_key: &Key,
    volume_id: &[u8; 16],
    mailbox_id: u64,
    message_id: u64,
    overlay: &[u8],
) -> Option<String> {
    let key_id = flags_key_id(overlay)?;
    let salt = overlay.get(4..36)?;
    let k = keys::hkdf32(gen_key.expose(), salt, INFO_FLAGS);
    let p = keys::open_small(
        &k,
        &flags_aad(volume_id, mailbox_id, message_id, key_id),
        overlay.get(36..)?,
    )?;
    Some(String::from_utf8(p.to_vec()).ok()?.trim_end().to_string())
}

// === the volume's unlock state ===

#[cfg(test)]
mod tests;
