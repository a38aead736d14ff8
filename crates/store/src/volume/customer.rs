//! The volume's side of customer keys and lockbox grants: registering a tenant's public
//! key, converting a tenant, making grant bundles, unlocking reads and recording access
//! events. The primitives (key files, wraps, bundles, events) live in
//! [`crate::tenant_key`]; this module is where they meet an open volume. It does not
//! decide who may read: the lockbox workflow (admin service, CLI) does.

use crate::index::{Index, KeyRow, TenantKeyRow};
use crate::keys::{self, Key};
use crate::tenant_key::*;
use crate::{hpke, StoreError, Volume};
use mailferry_core::MailboxAddr;
use std::collections::HashMap;

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

impl super::Inner {
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

    /// True if the tenant's private key was given to [`Volume::unlock`] (a grant is not
    /// enough for whole-tenant work, and cannot open a generation made after it).
    pub(crate) fn has_tenant_secret(&self, tenant: &str) -> bool {
        self.access().tenants.contains_key(tenant)
    }

    /// `TenantKeyNeeded` unless the tenant's private key was given: `what` is refused.
    pub(crate) fn require_tenant_secret(
        &self,
        tenant: &str,
        ck: &TenantKeyRow,
        what: &str,
    ) -> Result<(), StoreError> {
        if self.has_tenant_secret(tenant) {
            return Ok(());
        }
        Err(StoreError::TenantKeyNeeded {
            tenant: tenant.to_string(),
            fingerprint: ck.fingerprint.clone(),
            what: what.to_string(),
        })
    }

    /// Refuses new key generations and rewrites while the tenant's conversion to its
    /// customer key is unfinished: the mailboxes' wraps and index values are changing.
    pub(crate) fn refuse_while_converting(
        &self,
        ix: &Index,
        tenant_id: u64,
        ck: &TenantKeyRow,
        tenant: &str,
    ) -> Result<(), StoreError> {
        if !ix.conversion_pending(tenant_id)? {
            return Ok(());
        }
        Err(StoreError::TenantKey {
            path: format!("customer key {}", ck.fingerprint).into(),
            reason: format!(
                "tenant {tenant} is being moved to its customer key; finish that first with `mailferry tenant key convert --tenant {tenant}`"
            ),
        })
    }

    /// The next generation of a customer-key mailbox: `(key id, wrap to the tenant's
    /// public key, key)`. Needs no private key: the new key is random and the store
    /// cannot (and need not) prove the current one, which it cannot unwrap.
    pub(crate) fn next_customer_key(
        &self,
        ix: &Index,
        ck: &TenantKeyRow,
        row: &KeyRow,
        mailbox: &MailboxAddr,
    ) -> Result<(u32, Vec<u8>, Key), StoreError> {
        self.refuse_while_converting(ix, row.tenant_id, ck, mailbox.domain())?;
        let new_id = row
            .key_id
            .checked_add(1)
            .ok_or_else(|| StoreError::IndexDamaged {
                path: ix.path().to_path_buf(),
                reason: format!("mailbox {mailbox}: key id space exhausted"),
            })?;
        let key = Key::random();
        let aad = ck_wrap_aad(&self.volume_id, row.id, new_id);
        let wrapped = self.wrap_to_tenant(ck, &aad, &key)?;
        Ok((new_id, wrapped, key))
    }

    /// Every message's index values under a customer-key mailbox's index base key
    /// `base`: dedup value and locator, the sealed receipt leaf, and the record digest
    /// (kept from the row with `keep_digest`, else read from the segment). Decrypts
    /// each message's metadata, so the caller must be able to read the mailbox.
    pub(crate) fn ck_index_values(
        &self,
        mailbox: &MailboxAddr,
        mailbox_id: u64,
        base: &Key,
        msgs: &[crate::index::MessageRow],
        keep_digest: bool,
    ) -> Result<Vec<crate::index::Converted>, StoreError> {
        let (dedup_mac, locator_mac) = (keys::dedup_mac_key(base), keys::locator_mac_key(base));
        let mut cache = HashMap::new();
        let mut out = Vec::with_capacity(msgs.len());
        for r in msgs {
            let m = self.stored_message(mailbox, r, &mut cache)?;
            let (folder, sid) = (m.meta.folder.as_str(), m.meta.source_id.as_str());
            let sha: [u8; 32] = hex::decode(&m.meta.sha256)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| StoreError::MetaUnreadable {
                    mailbox: mailbox.to_string(),
                    id: r.id,
                    reason: "sha256 is not 64 hex digits".into(),
                })?;
            let leaf = mailferry_audit::merkle::leaf(&format!("{folder}/{sid}"), &m.meta.sha256);
            let digest = match (keep_digest, r.digest) {
                (true, Some(d)) => d,
                _ => self.record_digest(r)?,
            };
            out.push(crate::index::Converted {
                id: r.id,
                dedup: keys::dedup_key(&dedup_mac, folder, sid, &sha),
                locator: keys::locator(&locator_mac, folder, sid),
                digest,
                leaf_enc: seal_leaf(
                    base,
                    keys::random_nonce(),
                    &self.volume_id,
                    mailbox_id,
                    r.id,
                    &leaf,
                ),
            });
        }
        Ok(out)
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

    /// True if this open volume can read `mailbox`'s contents: a volume-key mailbox, or
    /// a customer-key mailbox whose tenant key or unexpired grant was given to
    /// [`Volume::unlock`]. Records nothing (a refused read is recorded where it happens).
    pub fn can_read(&self, mailbox: &MailboxAddr) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let ix = inner.index()?;
        let row = inner.live_mailbox(&ix, mailbox)?;
        Ok(inner.read_locked(&ix, row.id, mailbox)?.is_none())
    }

    /// The ids of `mailbox`'s messages, from the index alone (no decryption): what a
    /// check can count of a mailbox it cannot read.
    pub fn message_ids(&self, mailbox: &MailboxAddr) -> Result<Vec<u64>, StoreError> {
        let inner = &self.inner;
        let ix = inner.index()?;
        let row = inner.live_mailbox(&ix, mailbox)?;
        ix.message_ids_of(row.id)
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
            let tid = inner.tenant_row(&ix, &domain)?;
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
            // The records are still the ones written under the volume's hierarchy: their
            // digests were never recorded.
            let converted = inner.ck_index_values(mailbox, row.id, &base, &msgs, false)?;
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
            // One line per mailbox: a long conversion shows progress, and the crash
            // test kills the process when it sees one.
            tracing::info!(
                mailbox_row = row.id,
                converted = out.mailboxes,
                of = rows.len(),
                "mailbox moved to the customer key"
            );
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

    /// `volume rotate --tenant T` of a customer-key tenant: a new random tenant index key
    /// (the store-held key every dedup value, locator and sealed receipt leaf of the
    /// tenant derives from) and a new symmetric tenant key, every message's index values
    /// recomputed under it, all in ONE transaction (a crash leaves the old key and
    /// values; memory O(messages), about 160 bytes each). Recomputing dedup values and
    /// locators needs each message's folder, source id and SHA-256, so the tenant's
    /// private key must have been given to [`Volume::unlock`]; without it the rotation is
    /// refused with `TenantKeyNeeded` before anything changes. Mailbox key generations
    /// are wrapped to the public key and are not touched: `--mailbox` rotates those.
    pub(crate) fn rotate_customer_tenant(
        &self,
        domain: &str,
        tenant_id: u64,
        ck: &TenantKeyRow,
    ) -> Result<super::RotateOutcome, StoreError> {
        let inner = &self.inner;
        inner.require_tenant_secret(
            domain,
            ck,
            "rotating the tenant key (`volume rotate --tenant`) recomputes every dedup value and locator from the messages' metadata, so it",
        )?;
        let rows = {
            let ix = inner.index()?;
            inner.refuse_while_converting(&ix, tenant_id, ck, domain)?;
            ix.mailboxes_of_tenant(tenant_id)?
        };
        let names: HashMap<u64, MailboxAddr> = self.mailbox_rows()?.into_iter().collect();
        let index_key = Key::random();
        let mut values = Vec::new();
        let mut mailboxes = 0;
        for row in rows.iter().filter(|r| r.key_id != 0) {
            let Some(mailbox) = names.get(&row.id) else {
                continue;
            };
            let msgs = inner.index()?.messages(Some(row.id))?;
            let base = mailbox_index_key(&index_key, row.id);
            values.extend(inner.ck_index_values(mailbox, row.id, &base, &msgs, true)?);
            mailboxes += 1;
        }
        let vmk = &inner.keys.vmk;
        let ik_wrapped = keys::wrap_key(
            vmk,
            keys::random_nonce(),
            &keys::wrap_aad(AAD_CK_INDEX, &inner.volume_id, Some(tenant_id)),
            &index_key,
        );
        let tk_wrapped = keys::wrap_key(
            vmk,
            keys::random_nonce(),
            &keys::wrap_aad(keys::AAD_TENANT, &inner.volume_id, Some(tenant_id)),
            &Key::random(),
        );
        inner
            .index()?
            .rotate_ck_index_key(tenant_id, &tk_wrapped, &ik_wrapped, &values)?;
        inner.forget_keys();
        tracing::info!(
            tenant_row = tenant_id,
            messages = values.len(),
            "customer-key tenant: index key rotated"
        );
        inner.audit.event(
            "tenant.key.rotated",
            serde_json::json!({
                "tenant_row": tenant_id,
                "mailboxes": mailboxes,
                "keys_rewrapped": 0,
                "index_key_rotated": true,
                "messages": values.len(),
            }),
        )?;
        Ok(super::RotateOutcome {
            mailboxes,
            keys_rewrapped: 2,
            new_key_id: None,
            messages_reindexed: Some(values.len() as u64),
        })
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
                let tid = {
                    let ix = inner.index()?;
                    let tid = inner.tenant_row(&ix, &domain)?;
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
                    tid
                };
                // Who read a customer-key tenant is part of the trail, like a grant's use.
                inner.audit.event(
                    "tenant.key.used",
                    serde_json::json!({
                        "tenant_row": tid,
                        "fingerprint": secret.public().fingerprint(),
                    }),
                )?;
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
