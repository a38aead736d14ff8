//! Agent tokens bound to a tenant (issue 6): the `tokens` table of the index.
//!
//! A token is 32 random bytes written once, as 64 hex digits, to a file the admin hands
//! to the agent; the volume keeps only its SHA-256, the tenant it is bound to (as a
//! keyed HMAC for lookup and sealed under the name key, like the `tenants` table, so the
//! index still holds no plaintext name), when it was created and when it was revoked.
//! This module never prints, logs or stores a token.
//!
//! Issuing and revoking may happen while `mailferry serve` holds the volume (and its
//! audit log): [`TokenAdmin`] then writes the row through a second SQLite connection and
//! leaves the audit record to the process that holds the log, which appends it on its
//! next [`Volume::flush_token_audit`] (the `audited` column says what is recorded).
//!
//! The table itself is part of the index schema (`index::SCHEMA_3`): the index owns
//! every table and its migrations, this module only the SQL that reads and writes rows.

use crate::index::Index;
use crate::keys::VolumeKeys;
use crate::{Credential, StoreError, Volume};
use mailferry_core::profile::StoreSettings;
use mailferry_core::secret::SecretBytes;
use mailferry_core::MailboxAddr;
use rusqlite::{params, OptionalExtension};
use std::path::Path;

/// Name kind of tenant names (the same as the `tenants` table's).
const KIND_TENANT: u8 = b't';

/// A token as `token list` shows it: never the token itself.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenInfo {
    /// Row id, what `token revoke` takes.
    pub id: u64,
    /// The tenant (mail domain) it may write to.
    pub tenant: String,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds of the revocation, if revoked.
    pub revoked: Option<i64>,
    /// Unix seconds from which it is refused, if it expires.
    pub expires: Option<i64>,
}

/// A freshly issued token. The token is in `token` only: write it to its file and drop.
#[derive(Debug)]
pub struct IssuedToken {
    /// Row id.
    pub id: u64,
    /// The tenant it is bound to (normalised).
    pub tenant: String,
    /// 64 hex digits, as the agent sends them. Secret.
    pub token: SecretBytes,
}

/// What a valid, unrevoked token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// Row id (for access logs).
    pub id: u64,
    /// The tenant (mail domain) whose mailboxes it may open.
    pub tenant: String,
}

/// SHA-256 of a token as presented (its hex text).
pub fn token_digest(token: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// Checks and normalises a tenant name: a mail domain, as in `user@DOMAIN`.
pub fn normalize_tenant(tenant: &str) -> Result<String, StoreError> {
    let probe = format!("postmaster@{tenant}");
    match MailboxAddr::parse(&probe) {
        Ok(a) if !tenant.is_empty() && !tenant.contains('@') => Ok(a.domain().to_string()),
        _ => Err(StoreError::BadTenant {
            tenant: tenant.to_string(),
        }),
    }
}

fn ix_err(ix: &Index, source: rusqlite::Error) -> StoreError {
    StoreError::Index {
        path: ix.path().to_path_buf(),
        source,
    }
}

fn open_tenant(
    keys: &VolumeKeys,
    vid: &[u8; 16],
    dir: &Path,
    id: u64,
    enc: &[u8],
) -> Result<String, StoreError> {
    keys.open_name(vid, KIND_TENANT, enc)
        .ok_or_else(|| crate::keys::unwrap_err(dir, format!("tenant of token {id}")))
}

fn issue_in(
    ix: &Index,
    keys: &VolumeKeys,
    vid: &[u8; 16],
    tenant: &str,
    token: Option<&SecretBytes>,
    expires: Option<i64>,
) -> Result<IssuedToken, StoreError> {
    let tenant = normalize_tenant(tenant)?;
    let token = match token {
        Some(t) => t.clone(),
        None => SecretBytes::new(hex::encode(SecretBytes::random(32).expose()).into_bytes()),
    };
    let digest = token_digest(token.expose());
    let mac = keys.name_mac(KIND_TENANT, &tenant);
    let enc = keys.seal_name(vid, KIND_TENANT, &tenant);
    ix.conn()
        .execute(
            "INSERT INTO tokens (digest, tenant_mac, tenant_enc, created, expires) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![&digest[..], &mac[..], enc, mailferry_core::unix_now(), expires.unwrap_or(0).max(0)],
        )
        .map_err(|e| ix_err(ix, e))?;
    let id = ix.conn().last_insert_rowid() as u64;
    Ok(IssuedToken { id, tenant, token })
}

fn list_in(
    ix: &Index,
    keys: &VolumeKeys,
    vid: &[u8; 16],
    dir: &Path,
) -> Result<Vec<TokenInfo>, StoreError> {
    let rows: Vec<(u64, Vec<u8>, i64, i64, i64)> = ix
        .conn()
        .prepare("SELECT id, tenant_enc, created, revoked, expires FROM tokens ORDER BY id")
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?
            .collect()
        })
        .map_err(|e| ix_err(ix, e))?;
    rows.into_iter()
        .map(|(id, enc, created, revoked, expires)| {
            Ok(TokenInfo {
                id,
                tenant: open_tenant(keys, vid, dir, id, &enc)?,
                created,
                revoked: (revoked != 0).then_some(revoked),
                expires: (expires != 0).then_some(expires),
            })
        })
        .collect()
}

/// Revokes token `id`; true if it was active, false if it was already revoked.
fn revoke_in(ix: &Index, id: u64) -> Result<bool, StoreError> {
    let revoked: Option<i64> = ix
        .conn()
        .query_row(
            "SELECT revoked FROM tokens WHERE id = ?1",
            [id as i64],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| ix_err(ix, e))?;
    match revoked {
        None => Err(StoreError::UnknownToken { id }),
        Some(r) if r != 0 => Ok(false),
        Some(_) => {
            ix.conn()
                .execute(
                    "UPDATE tokens SET revoked = ?2 WHERE id = ?1 AND revoked = 0",
                    params![id as i64, mailferry_core::unix_now().max(1)],
                )
                .map_err(|e| ix_err(ix, e))?;
            Ok(true)
        }
    }
}

fn lookup_in(
    ix: &Index,
    keys: &VolumeKeys,
    vid: &[u8; 16],
    dir: &Path,
    presented: &[u8],
) -> Result<Option<TokenGrant>, StoreError> {
    let digest = token_digest(presented);
    let row: Option<(u64, Vec<u8>)> = ix
        .conn()
        .query_row(
            "SELECT id, tenant_enc FROM tokens WHERE digest = ?1 AND revoked = 0 \
             AND (expires = 0 OR expires > ?2)",
            params![&digest[..], mailferry_core::unix_now()],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
        )
        .optional()
        .map_err(|e| ix_err(ix, e))?;
    row.map(|(id, enc)| {
        Ok(TokenGrant {
            id,
            tenant: open_tenant(keys, vid, dir, id, &enc)?,
        })
    })
    .transpose()
}

// === impl Volume ===

impl Volume {
    /// Issues a token for `tenant` (a mail domain) and records it in the audit log.
    pub fn issue_token(&self, tenant: &str) -> Result<IssuedToken, StoreError> {
        self.issue_recorded(tenant, None, None)
    }

    /// Issues (or, with `token`, registers) a token under the index lock, then records
    /// it in the audit log once the lock is released.
    fn issue_recorded(
        &self,
        tenant: &str,
        token: Option<&SecretBytes>,
        expires: Option<i64>,
    ) -> Result<IssuedToken, StoreError> {
        let t = {
            let ix = self.inner.index()?;
            issue_in(
                &ix,
                &self.inner.keys,
                &self.inner.volume_id,
                tenant,
                token,
                expires,
            )?
        };
        self.flush_token_audit()?;
        Ok(t)
    }

    /// Every token ever issued, oldest first (never the tokens themselves).
    pub fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let ix = self.inner.index()?;
        list_in(
            &ix,
            &self.inner.keys,
            &self.inner.volume_id,
            &self.inner.dir,
        )
    }

    /// Revokes token `id` and records it; false if it was already revoked.
    pub fn revoke_token(&self, id: u64) -> Result<bool, StoreError> {
        let changed = revoke_in(&*self.inner.index()?, id)?;
        self.flush_token_audit()?;
        Ok(changed)
    }

    /// What the presented token grants: `None` if it is unknown or revoked. Reads the
    /// index each time, so a revocation by another process takes effect at once.
    pub fn token_grant(&self, presented: &[u8]) -> Result<Option<TokenGrant>, StoreError> {
        let ix = self.inner.index()?;
        lookup_in(
            &ix,
            &self.inner.keys,
            &self.inner.volume_id,
            &self.inner.dir,
            presented,
        )
    }

    /// Ok if the index answers a query on the current schema (for `/readyz`).
    pub fn check_ready(&self) -> Result<(), StoreError> {
        let ix = self.inner.index()?;
        ix.conn()
            .query_row("SELECT count(*) FROM tokens", [], |r| r.get::<_, i64>(0))
            .map(drop)
            .map_err(|e| ix_err(&ix, e))
    }

    /// Appends the audit records of token issues and revocations not yet recorded (also
    /// those written by `token` commands while this process held the log); returns how
    /// many were appended. Records name the token id and the tenant's pseudonym only.
    pub fn flush_token_audit(&self) -> Result<usize, StoreError> {
        let pending: Vec<(u64, Vec<u8>, i64, i64)> = {
            let ix = self.inner.index()?;
            ix.conn()
                .prepare(
                    "SELECT id, tenant_enc, revoked, audited FROM tokens
                     WHERE audited = 0 OR (revoked != 0 AND audited < 2) ORDER BY id",
                )
                .and_then(|mut s| {
                    s.query_map([], |r| {
                        Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?, r.get(3)?))
                    })?
                    .collect()
                })
                .map_err(|e| ix_err(&ix, e))?
        };
        let mut n = 0;
        for (id, enc, revoked, audited) in pending {
            let tenant = open_tenant(
                &self.inner.keys,
                &self.inner.volume_id,
                &self.inner.dir,
                id,
                &enc,
            )?;
            let pseudonym = self.inner.audit.pseudonym("tenant", &tenant);
            if audited < 1 {
                self.audit_event(
                    "token.issued",
                    serde_json::json!({ "token_id": id, "tenant": pseudonym }),
                )?;
                n += 1;
            }
            if revoked != 0 {
                self.audit_event(
                    "token.revoked",
                    serde_json::json!({ "token_id": id, "tenant": pseudonym }),
                )?;
                n += 1;
            }
            // A crash between the append and this update records the event twice on
            // the next flush, never zero times.
            let ix = self.inner.index()?;
            ix.conn()
                .execute(
                    "UPDATE tokens SET audited = ?2 WHERE id = ?1",
                    params![id as i64, if revoked != 0 { 2 } else { 1 }],
                )
                .map_err(|e| ix_err(&ix, e))?;
        }
        Ok(n)
    }
}

// === TokenAdmin ===

/// The index-only handle on a volume another process holds, after proving `cred`
/// against its header.
fn shared(dir: &Path, cred: &Credential) -> Result<Handle, StoreError> {
    let header = crate::header::Header::read(dir)?;
    let secret = cred.load()?;
    let (vmk, _) = header.unlock_with(dir, &secret)?;
    drop(secret);
    let index = Index::open(&dir.join(crate::INDEX_FILE), &header.volume_id)?;
    Ok(Handle::Shared {
        dir: dir.to_path_buf(),
        volume_id: header.volume_id,
        keys: VolumeKeys::new(vmk),
        index,
    })
}

/// Token administration for `mailferry token`: on the volume itself when it is free,
/// or, while another process (`serve`) holds it, on the index alone after proving the
/// credential against the header; that process then records the audit events.
pub struct TokenAdmin {
    handle: Handle,
}

// One handle per command run: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Handle {
    Open(Volume),
    Shared {
        dir: std::path::PathBuf,
        volume_id: [u8; 16],
        keys: VolumeKeys,
        index: Index,
    },
}

impl std::fmt::Debug for TokenAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.handle {
            Handle::Open(_) => "TokenAdmin(volume)",
            Handle::Shared { .. } => "TokenAdmin(shared index)",
        })
    }
}

impl TokenAdmin {
    /// Opens the volume in `dir` with `cred`; a volume held by another process is
    /// opened through its index only (the credential is still checked first).
    pub fn open(
        dir: &Path,
        cred: &Credential,
        settings: &StoreSettings,
    ) -> Result<TokenAdmin, StoreError> {
        let handle = match Volume::open_with(dir, cred, settings) {
            Ok(v) => Handle::Open(v),
            Err(StoreError::Busy { .. }) => shared(dir, cred)?,
            Err(e) => return Err(e),
        };
        Ok(TokenAdmin { handle })
    }

    /// Token administration on a volume the caller opened (an `s3://` volume with its
    /// offsite copy attached: the caller flushes it after the change).
    pub fn from_volume(volume: Volume) -> TokenAdmin {
        TokenAdmin {
            handle: Handle::Open(volume),
        }
    }

    /// Through the index alone if another process holds the volume in `dir` (the
    /// credential is checked first); `None` if nobody holds it, and then nothing was
    /// opened: the caller opens the volume its own way (an `s3://` working copy is
    /// opened with its offsite copy, never bare).
    pub fn open_if_held(dir: &Path, cred: &Credential) -> Result<Option<TokenAdmin>, StoreError> {
        match crate::volume::lock_header(dir) {
            Ok(lock) => {
                drop(lock);
                Ok(None)
            }
            Err(StoreError::Busy { .. }) => Ok(Some(TokenAdmin {
                handle: shared(dir, cred)?,
            })),
            Err(e) => Err(e),
        }
    }

    /// The volume this admin opened itself (`None` while another process holds it).
    pub fn volume(&self) -> Option<&Volume> {
        match &self.handle {
            Handle::Open(v) => Some(v),
            Handle::Shared { .. } => None,
        }
    }

    /// True if another process holds the volume (and will record the audit events).
    pub fn shared(&self) -> bool {
        matches!(self.handle, Handle::Shared { .. })
    }

    /// See [`Volume::issue_token`].
    pub fn issue(&self, tenant: &str) -> Result<IssuedToken, StoreError> {
        self.issue_expiring(tenant, None)
    }

    /// Issues a token refused from `expires` (Unix seconds) on; `None`: never expires.
    pub fn issue_expiring(
        &self,
        tenant: &str,
        expires: Option<i64>,
    ) -> Result<IssuedToken, StoreError> {
        self.issue_with(tenant, None, expires)
    }

    /// Registers an existing token (issued on another store node of the same split
    /// deployment) for `tenant`, so the same agent token opens mailboxes on every node.
    pub fn add(&self, tenant: &str, token: &SecretBytes) -> Result<IssuedToken, StoreError> {
        self.issue_with(tenant, Some(token), None)
    }

    /// Issues or registers through whichever handle is open; a shared index leaves the
    /// audit record to the process holding the volume.
    fn issue_with(
        &self,
        tenant: &str,
        token: Option<&SecretBytes>,
        expires: Option<i64>,
    ) -> Result<IssuedToken, StoreError> {
        match &self.handle {
            Handle::Open(v) => v.issue_recorded(tenant, token, expires),
            Handle::Shared {
                volume_id,
                keys,
                index,
                ..
            } => issue_in(index, keys, volume_id, tenant, token, expires),
        }
    }

    /// See [`Volume::list_tokens`].
    pub fn list(&self) -> Result<Vec<TokenInfo>, StoreError> {
        match &self.handle {
            Handle::Open(v) => v.list_tokens(),
            Handle::Shared {
                dir,
                volume_id,
                keys,
                index,
            } => list_in(index, keys, volume_id, dir),
        }
    }

    /// See [`Volume::revoke_token`].
    pub fn revoke(&self, id: u64) -> Result<bool, StoreError> {
        match &self.handle {
            Handle::Open(v) => v.revoke_token(id),
            Handle::Shared { index, .. } => revoke_in(index, id),
        }
    }
}

#[cfg(test)]
mod tests;
