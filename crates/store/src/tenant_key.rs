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

use crate::index::{Index, KeyRow, TenantKeyRow};
use crate::keys::{self, Key};
use crate::{hpke, StoreError, Volume};
use mailferry_core::MailboxAddr;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
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
        let err = |reason: &str| StoreError::TenantKey {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| err(&format!("cannot be read: {e} (check the path)")))?,
        );
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
pub struct GrantSecret(Zeroizing<[u8; 32]>);

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

/// Read keys registered on an open volume: tenant secrets by tenant (domain), grant keys
/// by mailbox row. Nothing here is ever written anywhere.
#[derive(Default)]
pub(crate) struct Access {
    tenants: HashMap<String, TenantSecret>,
    grants: HashMap<u64, GrantKeys>,
}

struct GrantKeys {
    expires: u64,
    keys: HashMap<u32, Key>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl crate::volume::Inner {
    fn access(&self) -> std::sync::MutexGuard<'_, Access> {
        self.access.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True if a tenant secret or an unexpired grant for the mailbox was given.
    pub(crate) fn can_read_customer(&self, tenant: &str, mailbox_id: u64) -> bool {
        let a = self.access();
        a.tenants.contains_key(tenant)
            || a.grants
                .get(&mailbox_id)
                .is_some_and(|g| g.expires > now_secs())
    }

    /// The registered customer key of a tenant row, if any.
    pub(crate) fn customer_key(
        &self,
        ix: &Index,
        tenant_id: u64,
    ) -> Result<Option<TenantKeyRow>, StoreError> {
        ix.tenant_key_row(tenant_id)
    }

    /// The index base key of a customer-key mailbox (dedup, locator, receipt leaves).
    pub(crate) fn ck_index_base(
        &self,
        ck: &TenantKeyRow,
        tenant_id: u64,
        mailbox_id: u64,
    ) -> Result<Key, StoreError> {
        let aad = keys::wrap_aad(AAD_CK_INDEX, &self.volume_id, Some(tenant_id));
        let ik =
            keys::unwrap_key(&self.keys.vmk, &aad, &ck.index_key_wrapped).ok_or_else(|| {
                keys::unwrap_err(&self.dir, format!("index key of tenant row {tenant_id}"))
            })?;
        Ok(mailbox_index_key(&ik, mailbox_id))
    }

    /// Unwraps a generation wrapped to a customer key with what [`Volume::unlock`] was
    /// given: an unexpired grant for the mailbox, or the tenant's secret. Never cached
    /// beyond the caller, so a grant's expiry takes effect at the next read.
    pub(crate) fn unwrap_customer(
        &self,
        ix: &Index,
        row: &KeyRow,
        key_id: u32,
        wrapped: &[u8],
        mailbox: &MailboxAddr,
    ) -> Result<Key, StoreError> {
        let access = self.access();
        if let Some(g) = access.grants.get(&row.id) {
            if g.expires > now_secs() {
                if let Some(k) = g.keys.get(&key_id) {
                    return Ok(k.clone());
                }
            }
        }
        let tenant = mailbox.domain().to_ascii_lowercase();
        if let Some(s) = access.tenants.get(&tenant) {
            let aad = ck_wrap_aad(&self.volume_id, row.id, key_id);
            return unwrap_with_secret(s.secret(), INFO_CK_WRAP, &aad, wrapped).ok_or_else(|| {
                keys::unwrap_err(
                    &self.dir,
                    format!(
                        "key {key_id} of mailbox row {} (the tenant key does not open it)",
                        row.id
                    ),
                )
            });
        }
        drop(access);
        let fingerprint = self
            .customer_key(ix, row.tenant_id)?
            .map(|c| c.fingerprint)
            .unwrap_or_default();
        Err(StoreError::CustomerKeyNeeded {
            mailbox: mailbox.to_string(),
            tenant,
            fingerprint,
        })
    }
}

// === impl Volume ===

impl Volume {
    /// Who can read `mailbox`: the volume key, or only its tenant's customer key.
    pub fn key_level(&self, mailbox: &MailboxAddr) -> Result<KeyLevel, StoreError> {
        let inner = &self.inner;
        let ix = inner.index()?;
        let row = inner.live_mailbox(&ix, mailbox)?;
        Ok(match inner.customer_key(&ix, row.tenant_id)? {
            None => KeyLevel::Volume,
            Some(ck) => KeyLevel::Customer {
                tenant: mailbox.domain().to_ascii_lowercase(),
                fingerprint: ck.fingerprint,
            },
        })
    }

    /// The customer key registered for `tenant`, if any: `(fingerprint, public key)`.
    pub fn tenant_public(&self, tenant: &str) -> Result<Option<TenantPublic>, StoreError> {
        let inner = &self.inner;
        let domain = tenant.trim().to_ascii_lowercase();
        let ix = inner.index()?;
        let Some(tid) = ix.tenant_id_by_mac(&inner.keys.name_mac(b't', &domain))? else {
            return Ok(None);
        };
        Ok(inner
            .customer_key(&ix, tid)?
            .map(|c| TenantPublic(c.public)))
    }

    /// Registers `public` as the customer key of `tenant` (created if it has no row yet)
    /// and records `tenant.key.registered` in the volume's audit log. If the tenant
    /// already has mailboxes, they are converted ([`Volume::convert_tenant`]): resumable,
    /// no message body re-encrypted. Refused if the tenant already has a customer key.
    pub fn register_tenant_key(
        &self,
        tenant: &str,
        public: &TenantPublic,
    ) -> Result<ConvertOutcome, StoreError> {
        let inner = &self.inner;
        let domain = tenant.trim().to_ascii_lowercase();
        let fp = public.fingerprint();
        let tenant_id = {
            let mut ix = inner.index()?;
            let (tid, _) = inner.tenant_for_write(&ix, &domain)?;
            if let Some(ck) = inner.customer_key(&ix, tid)? {
                return Err(StoreError::TenantKey {
                    path: format!("customer key of {domain}").into(),
                    reason: format!(
                        "tenant {domain} already has customer key {}; a tenant key is registered once (nothing was changed)",
                        ck.fingerprint
                    ),
                });
            }
            if hpke::seal(&public.0, b"", b"", b"").is_none() {
                return Err(StoreError::TenantKey {
                    path: format!("customer key of {domain}").into(),
                    reason:
                        "the public key is not usable (a small-order point); generate a new one"
                            .into(),
                });
            }
            let index_key = Key::random();
            let aad = keys::wrap_aad(AAD_CK_INDEX, &inner.volume_id, Some(tid));
            let row = TenantKeyRow {
                public: public.0,
                fingerprint: fp.clone(),
                index_key_wrapped: keys::wrap_key(
                    &inner.keys.vmk,
                    keys::random_nonce(),
                    &aad,
                    &index_key,
                ),
            };
            let has_mailboxes = !ix.mailboxes_of_tenant(tid)?.is_empty();
            ix.insert_tenant_key(tid, &row, now_secs(), has_mailboxes)?;
            tid
        };
        // The tenant by its index row: the audit log names no domain in plaintext.
        inner.audit.event(
            "tenant.key.registered",
            serde_json::json!({ "tenant_row": tenant_id, "fingerprint": fp }),
        )?;
        tracing::info!(tenant_row = tenant_id, fingerprint = %fp, "customer key registered");
        self.convert_tenant_until(&domain, None)
    }

    /// Finishes moving `tenant`'s existing mailboxes to its registered customer key
    /// (after `register_tenant_key` was interrupted): every key generation is unwrapped
    /// under the tenant key and HPKE-wrapped to the public key, and every message's
    /// dedup value, locator, record digest and sealed receipt leaf are recomputed, ONE
    /// transaction per mailbox. Costs one read of every record (the digest) and one
    /// metadata decryption per message; no body is re-encrypted. A mailbox already
    /// converted is skipped, so a rerun after a crash resumes.
    pub fn convert_tenant(&self, tenant: &str) -> Result<ConvertOutcome, StoreError> {
        self.convert_tenant_until(tenant, None)
    }

    /// [`Volume::convert_tenant`], stopping after `stop` mailboxes (crash tests).
    pub(crate) fn convert_tenant_until(
        &self,
        tenant: &str,
        stop: Option<usize>,
    ) -> Result<ConvertOutcome, StoreError> {
        let inner = &self.inner;
        let domain = tenant.trim().to_ascii_lowercase();
        let (tid, ck, rows) = {
            let ix = inner.index()?;
            let tid = ix
                .tenant_id_by_mac(&inner.keys.name_mac(b't', &domain))?
                .ok_or_else(|| StoreError::UnknownTenant {
                    tenant: domain.clone(),
                })?;
            let ck = inner.customer_key(&ix, tid)?.ok_or_else(|| StoreError::TenantKey {
                path: format!("customer key of {domain}").into(),
                reason: format!("tenant {domain} has no customer key; run `mailferry tenant key init` first"),
            })?;
            if !ix.conversion_pending(tid)? {
                return Ok(ConvertOutcome {
                    fingerprint: ck.fingerprint,
                    finished: true,
                    ..Default::default()
                });
            }
            (tid, ck, ix.mailboxes_of_tenant(tid)?)
        };
        let mut out = ConvertOutcome {
            fingerprint: ck.fingerprint.clone(),
            ..Default::default()
        };
        let names: HashMap<u64, MailboxAddr> = self.mailbox_rows()?.into_iter().collect();
        for row in rows.iter().filter(|r| r.key_id != 0) {
            if stop.is_some_and(|n| out.mailboxes >= n as u64) {
                return Ok(out);
            }
            let Some(mailbox) = names.get(&row.id) else {
                continue;
            };
            let (gens, msgs) = {
                let ix = inner.index()?;
                let mut g = ix.old_mailbox_keys(row.id)?;
                g.push((row.key_id, row.key_wrapped.clone()));
                (g, ix.messages(Some(row.id))?)
            };
            if gens.iter().all(|(_, w)| w.len() == WRAPPED_CK_LEN) {
                continue;
            }
            let base = inner.ck_index_base(&ck, tid, row.id)?;
            let (dedup_mac, locator_mac) =
                (keys::dedup_mac_key(&base), keys::locator_mac_key(&base));
            let mut cache = HashMap::new();
            let mut converted = Vec::with_capacity(msgs.len());
            for r in &msgs {
                let m = inner.stored_message(mailbox, r, &mut cache)?;
                let (folder, sid) = (m.meta.folder.as_str(), m.meta.source_id.as_str());
                let sha: [u8; 32] = hex::decode(&m.meta.sha256)
                    .ok()
                    .and_then(|v| v.try_into().ok())
                    .ok_or_else(|| StoreError::MetaUnreadable {
                        mailbox: mailbox.to_string(),
                        id: r.id,
                        reason: "sha256 is not 64 hex digits".into(),
                    })?;
                let leaf =
                    mailferry_audit::merkle::leaf(&format!("{folder}/{sid}"), &m.meta.sha256);
                converted.push(crate::index::Converted {
                    id: r.id,
                    dedup: keys::dedup_key(&dedup_mac, folder, sid, &sha),
                    locator: keys::locator(&locator_mac, folder, sid),
                    digest: inner.record_digest(r)?,
                    leaf_enc: seal_leaf(
                        &base,
                        keys::random_nonce(),
                        &inner.volume_id,
                        row.id,
                        r.id,
                        &leaf,
                    ),
                });
            }
            let mut wraps = Vec::new();
            {
                let ix = inner.index()?;
                let tk = inner.tenant_key(&ix, tid)?;
                for (kid, w) in gens.iter().filter(|(_, w)| w.len() != WRAPPED_CK_LEN) {
                    let k = inner.unwrap_mailbox_key(&tk, row.id, *kid, w)?;
                    let aad = ck_wrap_aad(&inner.volume_id, row.id, *kid);
                    wraps.push((*kid, inner.wrap_to_tenant(&ck, &aad, &k)?));
                }
            }
            inner.index()?.convert_mailbox(row.id, &wraps, &converted)?;
            inner.forget_keys();
            out.mailboxes += 1;
            out.keys_rewrapped += wraps.len() as u64;
            out.messages += converted.len() as u64;
        }
        {
            let ix = inner.index()?;
            ix.clear_conversion(tid)?;
            // The old wraps must leave the index files, as after a shred.
            ix.checkpoint_truncate()?;
        }
        inner.audit.event(
            "tenant.key.converted",
            serde_json::json!({
                "tenant_row": tid,
                "fingerprint": out.fingerprint,
                "mailboxes": out.mailboxes,
                "keys_rewrapped": out.keys_rewrapped,
                "messages": out.messages,
            }),
        )?;
        out.finished = true;
        Ok(out)
    }

    /// Every generation of `mailbox` unwrapped with the tenant's secret and wrapped to
    /// the grant's public key for `grant_id` until `expires` (the approver's tool runs
    /// this; the store keeps nothing of it).
    pub fn grant_bundle(
        &self,
        mailbox: &MailboxAddr,
        tenant: &TenantSecret,
        grant: &GrantPublic,
        grant_id: &str,
        expires: u64,
    ) -> Result<GrantBundle, StoreError> {
        let inner = &self.inner;
        let ix = inner.index()?;
        let row = inner.live_mailbox(&ix, mailbox)?;
        let ck = self.check_tenant_key(&ix, &row, mailbox, tenant)?;
        let mut gens = ix.old_mailbox_keys(row.id)?;
        gens.push((row.key_id, row.key_wrapped.clone()));
        let mut out = Vec::with_capacity(gens.len());
        for (kid, w) in gens {
            let k = if w.len() == WRAPPED_CK_LEN {
                let aad = ck_wrap_aad(&inner.volume_id, row.id, kid);
                unwrap_with_secret(tenant.secret(), INFO_CK_WRAP, &aad, &w).ok_or_else(|| {
                    keys::unwrap_err(
                        &inner.dir,
                        format!(
                            "key {kid} of mailbox row {} (the tenant key does not open it)",
                            row.id
                        ),
                    )
                })?
            } else {
                // Not converted yet (a conversion is pending): still under the tenant key.
                let tk = inner.tenant_key(&ix, row.tenant_id)?;
                inner.unwrap_mailbox_key(&tk, row.id, kid, &w)?
            };
            let aad = grant_aad(&inner.volume_id, row.id, kid, grant_id, expires);
            let wrapped = wrap_to_public(&grant.0, INFO_GRANT, &aad, &k).ok_or_else(|| {
                StoreError::Grant {
                    grant_id: grant_id.to_string(),
                    mailbox: mailbox.to_string(),
                    reason: "the grant's public key is not usable (a small-order point); the requester must make a new request".into(),
                }
            })?;
            out.push(GrantedKey {
                key_id: kid,
                wrapped: hex::encode(wrapped),
            });
        }
        drop(ck);
        Ok(GrantBundle {
            grant_id: grant_id.to_string(),
            mailbox: mailbox.to_string(),
            expires,
            grant_public: grant.to_hex(),
            volume_id: hex::encode(inner.volume_id),
            mailbox_row: row.id,
            keys: out,
        })
    }

    /// The tenant row's customer key, checked against `tenant`: the same tenant and the
    /// same public key, or a `TenantKey` error naming both fingerprints.
    fn check_tenant_key(
        &self,
        ix: &Index,
        row: &KeyRow,
        mailbox: &MailboxAddr,
        tenant: &TenantSecret,
    ) -> Result<TenantKeyRow, StoreError> {
        let domain = mailbox.domain().to_ascii_lowercase();
        let wrong = |reason: String| StoreError::TenantKey {
            path: format!("key of tenant {}", tenant.tenant()).into(),
            reason,
        };
        if tenant.tenant() != domain {
            return Err(wrong(format!(
                "is the key of tenant {}, not of {domain} (the tenant of {mailbox}); give {domain}'s key file",
                tenant.tenant()
            )));
        }
        let ck = self.inner.customer_key(ix, row.tenant_id)?.ok_or_else(|| {
            wrong(format!(
                "tenant {domain} has no customer key in this volume; its mailboxes are read with the volume key alone"
            ))
        })?;
        if ck.public != tenant.public().0 {
            return Err(wrong(format!(
                "has fingerprint {}, but tenant {domain} is sealed to {}; give the key file with that fingerprint",
                tenant.public().fingerprint(),
                ck.fingerprint
            )));
        }
        Ok(ck)
    }

    /// Registers read keys for this open volume: later reads of the tenant's (or the
    /// grant's mailbox's) messages use them. A tenant key must be the one registered for
    /// its tenant; a grant must be for this volume, unexpired at `now`, and open.
    pub fn unlock(&self, access: ReadAccess) -> Result<(), StoreError> {
        let inner = &self.inner;
        match access {
            ReadAccess::TenantKey(secret) => {
                let domain = secret.tenant().to_string();
                {
                    let ix = inner.index()?;
                    let tid = ix
                        .tenant_id_by_mac(&inner.keys.name_mac(b't', &domain))?
                        .ok_or_else(|| StoreError::UnknownTenant {
                            tenant: domain.clone(),
                        })?;
                    let ck = inner.customer_key(&ix, tid)?.ok_or_else(|| StoreError::TenantKey {
                        path: format!("key of tenant {domain}").into(),
                        reason: format!("tenant {domain} has no customer key in this volume; no tenant key is needed to read it"),
                    })?;
                    if ck.public != secret.public().0 {
                        return Err(StoreError::TenantKey {
                            path: format!("key of tenant {domain}").into(),
                            reason: format!(
                                "has fingerprint {}, but tenant {domain} is sealed to {}; give the key file with that fingerprint",
                                secret.public().fingerprint(),
                                ck.fingerprint
                            ),
                        });
                    }
                }
                inner.access().tenants.insert(domain, secret);
                Ok(())
            }
            ReadAccess::Grant {
                secret,
                bundle,
                now,
            } => {
                let refuse = |reason: String| StoreError::Grant {
                    grant_id: bundle.grant_id.clone(),
                    mailbox: bundle.mailbox.clone(),
                    reason,
                };
                if bundle.volume_id != hex::encode(inner.volume_id) {
                    return Err(refuse("was made for another volume".into()));
                }
                if bundle.expires <= now {
                    return Err(refuse(format!(
                        "expired at {} (Unix seconds); request access again",
                        bundle.expires
                    )));
                }
                if bundle.grant_public != secret.public().to_hex() {
                    return Err(refuse(
                        "this grant key is not the one the request was made with".into(),
                    ));
                }
                let mailbox = MailboxAddr::parse(&bundle.mailbox)
                    .map_err(|e| refuse(format!("mailbox is not an address: {e}")))?;
                let row = {
                    let ix = inner.index()?;
                    inner.live_mailbox(&ix, &mailbox)?
                };
                if row.id != bundle.mailbox_row {
                    return Err(refuse("names another mailbox row of this volume".into()));
                }
                let mut keys = HashMap::new();
                for g in &bundle.keys {
                    let wrapped = hex::decode(&g.wrapped)
                        .map_err(|_| refuse(format!("key {} is not hex", g.key_id)))?;
                    let aad = grant_aad(
                        &inner.volume_id,
                        row.id,
                        g.key_id,
                        &bundle.grant_id,
                        bundle.expires,
                    );
                    let k = unwrap_with_secret(&secret.0, INFO_GRANT, &aad, &wrapped).ok_or_else(
                        || {
                            refuse(format!(
                                "key {} does not open with this grant key (altered bundle?)",
                                g.key_id
                            ))
                        },
                    )?;
                    keys.insert(g.key_id, k);
                }
                inner.access().grants.insert(
                    row.id,
                    GrantKeys {
                        expires: bundle.expires,
                        keys,
                    },
                );
                Ok(())
            }
        }
    }

    /// Appends a lockbox step to the volume's audit log (synced), naming the mailbox by
    /// its pseudonym.
    pub fn audit_access(&self, event: AccessEvent) -> Result<(), StoreError> {
        use serde_json::json;
        let p = |m: &MailboxAddr| self.pseudonym_of_mailbox(m);
        let (name, data) = match &event {
            AccessEvent::Requested {
                grant_id,
                mailbox,
                requester,
                reason,
                duration_secs,
            } => (
                "access.requested",
                json!({
                    "grant": grant_id,
                    "mailbox": p(mailbox),
                    "requester": requester,
                    "reason_sha256": hex::encode(ring::digest::digest(&ring::digest::SHA256, reason.as_bytes())),
                    "duration_secs": duration_secs,
                }),
            ),
            AccessEvent::Approved {
                grant_id,
                mailbox,
                approver,
                expires,
            } => (
                "access.approved",
                json!({ "grant": grant_id, "mailbox": p(mailbox), "approver": approver, "expires": expires }),
            ),
            AccessEvent::Denied {
                grant_id,
                mailbox,
                approver,
            } => (
                "access.denied",
                json!({ "grant": grant_id, "mailbox": p(mailbox), "approver": approver }),
            ),
            AccessEvent::Used {
                grant_id,
                mailbox,
                action,
            } => (
                "access.used",
                json!({ "grant": grant_id, "mailbox": p(mailbox), "action": action }),
            ),
            AccessEvent::Expired { grant_id, mailbox } => (
                "access.expired",
                json!({ "grant": grant_id, "mailbox": p(mailbox) }),
            ),
            AccessEvent::Refused { mailbox, needed } => (
                "access.refused",
                json!({ "mailbox": p(mailbox), "needed": needed }),
            ),
        };
        self.inner.audit.event(name, data)
    }
}

#[cfg(test)]
mod tests;
