//! `volume rotate --mailbox M | --tenant T --reencrypt`: gives the mailbox (or every
//! mailbox of the tenant) a new key generation, re-encrypts every stored message under
//! it, and then drops the earlier generations, so that old copies of the segments can
//! no longer be decrypted with the volume's key material.
//!
//! Streaming: a message is read, authenticated and re-sealed one 64 KiB chunk at a time
//! (`Inner::read_record` feeding a [`SealWriter`]), never held whole. Each message gets
//! a fresh salt, so a fresh message key under the new generation; its id stays, so the
//! chunk AAD keeps naming the same message. The metadata is re-sealed under the new
//! message key, and the row records the new key id.
//!
//! Resumable, reusing compaction's machinery ([`SegmentWriter`], `Volume::compact`) and
//! its order, each step durable before the next:
//!
//! 1. ONE transaction rotates the mailbox(es) and writes a `reencrypt:<row>` marker per
//!    mailbox. A rerun that finds a marker resumes instead of rotating again.
//! 2. Per batch (about [`BATCH_BYTES`] of records): new records are written to new
//!    segments and fsynced, then ONE transaction points the batch's rows at them. The
//!    batch that switches a mailbox's last message also, in the same transaction,
//!    deletes the mailbox's earlier key generations and re-keys every dedup value under
//!    the current generation (the oldest one left), then checkpoints the WAL.
//! 3. Compaction removes the old records (now unreferenced gaps, or whole segments no
//!    row references), then ONE transaction clears the markers.
//!
//! A crash leaves unreferenced new records (cut or deleted at open, see
//! `recover_segments`), or switched rows whose old records are unreferenced (deleted by
//! open or the next compaction); no message is ever lost or left readable only with a
//! dropped key, because keys are dropped only with the switch of the last message. It
//! does not run beside ingest sessions: it needs the volume to itself.

use crate::chunk::{self, ChunkContext, ChunkKey, SealWriter, Sealer};
use crate::compact::{CompactOutcome, SegmentWriter};
use crate::index::{KeyRotation, LastSwitch, MessageRow, Reencrypted, Rekeyed};
use crate::keys::{self, Key};
use crate::segment::RecordHeader;
use crate::{StoreError, Volume};
use mailferry_core::MailboxAddr;
use std::collections::{HashMap, HashSet};
use std::io::Write;

/// Record bytes re-encrypted between two index switches: bounds the work a crash
/// repeats, and the size of one transaction.
pub(crate) const BATCH_BYTES: u64 = 64 << 20;

/// What `--reencrypt` is applied to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target<'a> {
    /// One mailbox.
    Mailbox(&'a MailboxAddr),
    /// Every (not shredded) mailbox of a tenant (mail domain).
    Tenant(&'a str),
}

/// What a rotation with re-encryption did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReencryptOutcome {
    /// True if an interrupted run was resumed (no new rotation was made).
    pub resumed: bool,
    /// True if the tenant key was rotated too (`--tenant`, not resumed).
    pub tenant_rotated: bool,
    /// Mailboxes re-encrypted, with the key id their messages now use.
    pub mailboxes: Vec<(MailboxAddr, u32)>,
    /// Messages re-encrypted by this run.
    pub messages_reencrypted: u64,
    /// Record bytes written by this run.
    pub bytes_reencrypted: u64,
    /// Earlier key generations deleted.
    pub keys_dropped: u64,
    /// Messages that could not be re-encrypted (`mailbox message id N: reason`); their
    /// mailbox keeps its earlier generations and its marker, so a rerun tries again.
    pub skipped: Vec<String>,
    /// The compaction that removed the old records.
    pub compaction: CompactOutcome,
}

/// Where a test stops a re-encryption, simulating a crash right after that step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReencryptStep {
    /// The rotation and the marker are committed; nothing re-encrypted.
    Rotated,
    /// The first batch's records are written and synced; no row switched.
    RecordsWritten,
    /// The first batch is switched; others remain.
    BatchSwitched,
    /// Every row is switched and the earlier generations are dropped; not compacted.
    KeysDropped,
    /// Compacted; the markers are not cleared.
    Compacted,
    /// Run to the end.
    Done,
}

// === impl Volume: re-encryption ===

impl Volume {
    /// Gives the mailbox a new key generation and re-encrypts every stored message under
    /// it, then drops the earlier generations and compacts. Resumes an interrupted run
    /// of the same mailbox instead of rotating again. Refused with `InUse` while an
    /// ingest session of this volume is open. Recorded in the audit log (pseudonyms).
    pub fn rotate_mailbox_reencrypt(
        &mut self,
        mailbox: &MailboxAddr,
    ) -> Result<ReencryptOutcome, StoreError> {
        self.reencrypt_until(Target::Mailbox(mailbox), ReencryptStep::Done, BATCH_BYTES)
    }

    /// Rotates the tenant key (as [`Volume::rotate_tenant`]), gives every mailbox of the
    /// tenant a new key generation and re-encrypts all their messages, as
    /// [`Volume::rotate_mailbox_reencrypt`] does for one. Resumes an interrupted run.
    pub fn rotate_tenant_reencrypt(
        &mut self,
        tenant: &str,
    ) -> Result<ReencryptOutcome, StoreError> {
        self.reencrypt_until(Target::Tenant(tenant), ReencryptStep::Done, BATCH_BYTES)
    }

    pub(crate) fn reencrypt_until(
        &mut self,
        target: Target<'_>,
        stop: ReencryptStep,
        batch_bytes: u64,
    ) -> Result<ReencryptOutcome, StoreError> {
        self.exclusive("re-encryption")?;
        let mut out = ReencryptOutcome::default();
        let names: HashMap<u64, MailboxAddr> = self.mailbox_rows()?.into_iter().collect();
        let (rows, tenant) = {
            let ix = self.inner.index()?;
            match target {
                Target::Mailbox(m) => (vec![self.inner.live_mailbox(&ix, m)?], None),
                Target::Tenant(t) => {
                    let id = self.inner.tenant_row(&ix, t)?;
                    let rows = ix.mailboxes_of_tenant(id)?;
                    (
                        rows.into_iter().filter(|r| r.key_id != 0).collect(),
                        Some(t),
                    )
                }
            }
        };
        self.customer_key_check(&rows, &names)?;
        let pending = self.inner.index()?.reencrypt_pending()?;
        let resumed: Vec<u64> = rows
            .iter()
            .map(|r| r.id)
            .filter(|id| pending.contains(id))
            .collect();
        let work: Vec<u64> = if resumed.is_empty() {
            if let Some(t) = tenant {
                self.rotate_tenant(t)?;
                out.tenant_rotated = true;
            }
            let ids: Vec<u64> = rows.iter().map(|r| r.id).collect();
            self.rotate_for_reencrypt(&ids, &names)?;
            ids
        } else {
            tracing::info!(
                mailboxes = resumed.len(),
                "resuming an interrupted re-encryption"
            );
            out.resumed = true;
            resumed
        };
        if stop == ReencryptStep::Rotated {
            return Ok(out);
        }

        let mut writer = SegmentWriter::default();
        let mut sources = HashSet::new();
        let mut finished = Vec::new();
        for &mb in &work {
            let name = names.get(&mb).ok_or_else(|| {
                keys::unwrap_err(
                    &self.inner.dir,
                    format!("name of mailbox row {mb} (missing)"),
                )
            })?;
            let done = self.reencrypt_mailbox(
                mb,
                name,
                stop,
                batch_bytes,
                &mut writer,
                &mut sources,
                &mut out,
            )?;
            match done {
                None => return Ok(out), // stopped by a test
                Some(true) => finished.push(mb),
                Some(false) => {}
            }
        }
        if stop == ReencryptStep::KeysDropped {
            return Ok(out);
        }
        // The old records are unreferenced now: segments holding nothing else leave the
        // pool (compaction then deletes them), the others are rewritten without them.
        self.inner
            .free_segments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|f| !sources.contains(&f.number));
        writer.into_pool(&self.inner);
        out.compaction = self.compact()?;
        if stop == ReencryptStep::Compacted {
            return Ok(out);
        }
        self.inner.index()?.clear_reencrypt(&finished)?;
        Ok(out)
    }

    /// Refuses, before anything changes, to re-encrypt a customer-key mailbox without its
    /// tenant's private key: every message must be read, and a resumed run must unwrap
    /// the generation the first run wrapped to the public key.
    fn customer_key_check(
        &self,
        rows: &[crate::index::KeyRow],
        names: &HashMap<u64, MailboxAddr>,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        let ix = inner.index()?;
        for row in rows {
            let Some(ck) = inner.customer_key(&ix, row.tenant_id)? else {
                continue;
            };
            let domain = names
                .get(&row.id)
                .map(|m| m.domain().to_ascii_lowercase())
                .unwrap_or_default();
            inner.refuse_while_converting(&ix, row.tenant_id, &ck, &domain)?;
            inner.require_tenant_secret(
                &domain,
                &ck,
                "re-encryption (`volume rotate --reencrypt`) reads every message, so it",
            )?;
        }
        Ok(())
    }

    /// Step 1: a new generation for every mailbox row in `ids`, with its marker, in one
    /// transaction. A customer-key mailbox's new generation is wrapped to its tenant's
    /// public key.
    fn rotate_for_reencrypt(
        &self,
        ids: &[u64],
        names: &HashMap<u64, MailboxAddr>,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        let mut ix = inner.index()?;
        let mut rotations = Vec::new();
        let mut tenant_keys: HashMap<u64, Key> = HashMap::new();
        for &id in ids {
            let row = ix.mailbox_by_id(id)?.ok_or_else(|| {
                keys::unwrap_err(&inner.dir, format!("mailbox row {id} (missing)"))
            })?;
            if let Some(ck) = inner.customer_key(&ix, row.tenant_id)? {
                let name = names.get(&id).ok_or_else(|| {
                    keys::unwrap_err(&inner.dir, format!("name of mailbox row {id} (missing)"))
                })?;
                let (new_key_id, new_wrapped, _key) =
                    inner.next_customer_key(&ix, &ck, &row, name)?;
                rotations.push(KeyRotation {
                    mailbox_id: row.id,
                    old_key_id: row.key_id,
                    old_wrapped: row.key_wrapped,
                    new_key_id,
                    new_wrapped,
                });
                continue;
            }
            let tk = match tenant_keys.get(&row.tenant_id) {
                Some(k) => k.clone(),
                None => {
                    let k = inner.tenant_key(&ix, row.tenant_id)?;
                    tenant_keys.insert(row.tenant_id, k.clone());
                    k
                }
            };
            let (new_key_id, new_wrapped) =
                inner.next_mailbox_key(&tk, &row, &format_args!("mailbox row {id}"))?;
            rotations.push(KeyRotation {
                mailbox_id: row.id,
                old_key_id: row.key_id,
                old_wrapped: row.key_wrapped,
                new_key_id,
                new_wrapped,
            });
        }
        ix.rotate_mailboxes(&rotations, true)?;
        drop(ix);
        inner.forget_keys();
        for r in &rotations {
            tracing::info!(
                mailbox_row = r.mailbox_id,
                key_id = r.new_key_id,
                "mailbox key rotated for re-encryption"
            );
            if let Some(name) = names.get(&r.mailbox_id) {
                inner.audit.event(
                    "key.rotated",
                    serde_json::json!({
                        "mailbox": self.pseudonym_of_mailbox(name),
                        "key_id": r.new_key_id,
                        "reencrypt": true,
                    }),
                )?;
            }
        }
        Ok(())
    }

    /// Step 2 for one mailbox: batches until every message uses the current key, the
    /// last switch dropping the earlier generations. `Some(true)`: finished;
    /// `Some(false)`: messages were skipped, keys kept; `None`: stopped by a test.
    #[allow(clippy::too_many_arguments)]
    fn reencrypt_mailbox(
        &self,
        mailbox_id: u64,
        mailbox: &MailboxAddr,
        stop: ReencryptStep,
        batch_bytes: u64,
        writer: &mut SegmentWriter,
        sources: &mut HashSet<u64>,
        out: &mut ReencryptOutcome,
    ) -> Result<Option<bool>, StoreError> {
        let inner = &self.inner;
        let mut skipped: HashSet<u64> = HashSet::new();
        let mut reencrypted = 0u64;
        let mut first_batch = true;
        // Read once: nothing else writes while the volume is ours; switched rows are
        // updated in place below.
        // The current generation, through `key_for`: for a customer-key mailbox that
        // unwraps with the tenant's key (never cached), else under the tenant key.
        // Dedup values and locators derive from the generation, or for a customer-key
        // mailbox from its index base key.
        let (key_id, index_base) = {
            let ix = inner.index()?;
            let row = ix.mailbox_by_id(mailbox_id)?.ok_or_else(|| {
                keys::unwrap_err(&inner.dir, format!("mailbox row {mailbox_id} (missing)"))
            })?;
            let base = match inner.customer_key(&ix, row.tenant_id)? {
                Some(ck) => Some(inner.ck_index_base(&ck, row.tenant_id, mailbox_id)?),
                None => None,
            };
            (row.key_id, base)
        };
        let key = inner.key_for(mailbox_id, key_id, mailbox)?;
        let sealed_for_tenant = index_base.is_some();
        let mut rows = inner.index()?.messages(Some(mailbox_id))?;
        let mut next = 0;
        loop {
            let (batch, last, after) = next_batch(&rows, next, key_id, &skipped, batch_bytes);
            next = after;

            let mut moves = Vec::new();
            let mut metas = HashMap::new();
            let mut keys_cache = HashMap::new();
            for r in batch {
                match self.reencrypt_record(
                    mailbox,
                    r,
                    (key_id, &key),
                    sealed_for_tenant,
                    writer,
                    &mut keys_cache,
                ) {
                    Ok((mv, meta)) => {
                        sources.insert(r.segment);
                        out.bytes_reencrypted += r.record_len;
                        metas.insert(r.id, meta);
                        moves.push(mv);
                    }
                    Err(e) => {
                        tracing::warn!(message = r.id, error = %e, "message not re-encrypted; its mailbox keeps its earlier keys");
                        out.skipped
                            .push(format!("{} message id {}: {e}", mailbox, r.id));
                        skipped.insert(r.id);
                    }
                }
            }
            writer.sync(inner)?;
            if stop == ReencryptStep::RecordsWritten {
                return Ok(None);
            }

            // The last switch also drops the earlier generations, unless a message was
            // skipped (it still needs them) or a dedup value cannot be recomputed.
            let last_switch = if last && skipped.is_empty() {
                let index_key = index_base.as_ref().unwrap_or(&key);
                match self.dedups_under(&rows, &metas, mailbox_id, (key_id, &key), index_key) {
                    Ok(dedups) => Some(LastSwitch {
                        mailbox_id,
                        key_id,
                        dedups,
                    }),
                    Err(reason) => {
                        out.skipped.push(format!("{mailbox} {reason}"));
                        None
                    }
                }
            } else {
                None
            };
            let dropped = inner
                .index()?
                .switch_reencrypted(&moves, last_switch.as_ref())?;
            apply_switched(&mut rows, &moves);
            reencrypted += moves.len() as u64;
            out.messages_reencrypted += moves.len() as u64;
            if !last {
                if first_batch && stop == ReencryptStep::BatchSwitched {
                    return Ok(None);
                }
                first_batch = false;
                continue;
            }
            out.mailboxes.push((mailbox.clone(), key_id));
            if last_switch.is_none() {
                return Ok(Some(false));
            }
            inner.forget_keys();
            out.keys_dropped += dropped;
            tracing::info!(
                mailbox_row = mailbox_id,
                key_id,
                messages = reencrypted,
                dropped,
                "mailbox re-encrypted; earlier keys dropped"
            );
            inner.audit.event(
                "messages.reencrypted",
                serde_json::json!({
                    "mailbox": self.pseudonym_of_mailbox(mailbox),
                    "key_id": key_id,
                    "messages": reencrypted,
                    "keys_dropped": dropped,
                    "resumed": out.resumed,
                }),
            )?;
            return Ok(Some(true));
        }
    }

    /// Re-encrypts one message into the writer's current segment: a record header with a
    /// fresh salt and the new key id, then every chunk opened under the old key and
    /// sealed under the new one as it streams by. On any error the partial record is cut.
    /// With `sealed_for_tenant` (a customer-key mailbox) the SHA-256 of the new record is
    /// computed as it is written, for `verify` without the tenant key; the metadata is
    /// sealed with the message's current flags (a flags overlay names a generation that
    /// is about to be dropped, so it is folded in and cleared).
    fn reencrypt_record(
        &self,
        mailbox: &MailboxAddr,
        r: &MessageRow,
        (key_id, key): (u32, &Key),
        sealed_for_tenant: bool,
        writer: &mut SegmentWriter,
        keys_cache: &mut HashMap<(u64, u32), Key>,
    ) -> Result<(Reencrypted, mailferry_core::MessageMeta), StoreError> {
        let inner = &self.inner;
        let msg = inner.stored_message(mailbox, r, keys_cache)?;
        let old_key = keys_cache
            .get(&(r.mailbox_id, r.key_id))
            .expect("stored_message cached the key")
            .clone();
        let salt = keys::random32();
        let header = RecordHeader {
            key_id,
            message_id: r.id,
            mailbox_id: r.mailbox_id,
            salt,
            plain_len: msg.meta.size,
            chunk_count: chunk::chunk_count(msg.meta.size),
        };
        let o = writer.output_for(inner, r.record_len)?;
        let start = o.len;
        let message_key = keys::message_key(key, &salt);
        let mut digest =
            sealed_for_tenant.then(|| ring::digest::Context::new(&ring::digest::SHA256));
        let written = (|| {
            let path = inner.segment_path(o.number);
            let mut out = DigestWriter {
                out: &mut o.file,
                digest: digest.as_mut(),
            };
            out.write_all(&header.encode())
                .map_err(|e| StoreError::io(&path, e))?;
            let sealer = Sealer::new(
                ChunkKey::new(&message_key),
                ChunkContext {
                    volume_id: inner.volume_id,
                    mailbox_id: r.mailbox_id,
                    message_id: r.id,
                },
                header.plain_len,
            );
            let mut w = SealWriter::new(sealer, &mut out);
            inner.read_record(&msg, &old_key, &mut w)?;
            w.finish().map(|_| ()).map_err(|e| StoreError::io(&path, e))
        })();
        if let Err(e) = written {
            o.truncate_to(inner, start)?;
            return Err(e);
        }
        o.len = start + r.record_len;
        let meta_enc = keys::seal_meta(
            &message_key,
            &inner.volume_id,
            r.mailbox_id,
            r.id,
            &msg.meta,
        );
        Ok((
            Reencrypted {
                id: r.id,
                from_key_id: r.key_id,
                from_segment: r.segment,
                from_offset: r.offset,
                key_id,
                to_segment: o.number,
                to_offset: start,
                salt,
                meta_enc,
                digest: digest.map(|d| d.finish().as_ref().try_into().expect("32 bytes")),
            },
            msg.meta,
        ))
    }

    /// The dedup value and locator of every message of the mailbox under `index_key`:
    /// generation `key_id` itself (which becomes the oldest, hence the dedup and locator
    /// generation), or a customer-key mailbox's index base key. From `metas` for the
    /// batch just re-encrypted, from the metadata decrypted with `key` for the others.
    fn dedups_under(
        &self,
        rows: &[MessageRow],
        metas: &HashMap<u64, mailferry_core::MessageMeta>,
        mailbox_id: u64,
        (key_id, key): (u32, &Key),
        index_key: &Key,
    ) -> Result<Vec<Rekeyed>, String> {
        let mac = keys::dedup_mac_key(index_key);
        let loc = keys::locator_mac_key(index_key);
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let opened;
            let meta = match metas.get(&r.id) {
                Some(m) => m,
                None if r.key_id == key_id => {
                    opened = keys::open_meta(
                        &keys::message_key(key, &r.salt),
                        &self.inner.volume_id,
                        mailbox_id,
                        r.id,
                        &r.meta_enc,
                    )
                    .map_err(|e| format!("message id {}: metadata unreadable: {e}", r.id))?;
                    &opened
                }
                None => return Err(format!("message id {}: still under key {}", r.id, r.key_id)),
            };
            let sha: [u8; 32] = hex::decode(&meta.sha256)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("message id {}: SHA-256 in metadata malformed", r.id))?;
            out.push((
                r.id,
                keys::dedup_key(&mac, meta.folder.as_str(), meta.source_id.as_str(), &sha),
                keys::locator(&loc, meta.folder.as_str(), meta.source_id.as_str()),
            ));
        }
        Ok(out)
    }
}

/// The next batch of a mailbox's messages still under an older key (skipping those that
/// failed), from `rows[next..]`, up to `batch_bytes` of records (at least one): the batch,
/// whether it is the last, and where the one after it starts.
fn next_batch<'a>(
    rows: &'a [MessageRow],
    next: usize,
    key_id: u32,
    skipped: &HashSet<u64>,
    batch_bytes: u64,
) -> (Vec<&'a MessageRow>, bool, usize) {
    let todo: Vec<&MessageRow> = rows[next..]
        .iter()
        .filter(|r| r.key_id != key_id && !skipped.contains(&r.id))
        .collect();
    let mut batch = Vec::new();
    let mut bytes = 0;
    for r in &todo {
        if !batch.is_empty() && bytes + r.record_len > batch_bytes {
            break;
        }
        bytes += r.record_len;
        batch.push(*r);
    }
    let last = batch.len() == todo.len();
    let after = batch
        .last()
        .and_then(|b| rows.binary_search_by_key(&b.id, |r| r.id).ok())
        .map_or(rows.len(), |i| i + 1);
    (batch, last, after)
}

/// Points the in-memory rows (in id order, as `Index::messages` returns them) at the
/// records a switch just committed, as the index now has them.
fn apply_switched(rows: &mut [MessageRow], moves: &[crate::index::Reencrypted]) {
    for m in moves {
        if let Ok(i) = rows.binary_search_by_key(&m.id, |r| r.id) {
            let r = &mut rows[i];
            r.key_id = m.key_id;
            r.segment = m.to_segment;
            r.offset = m.to_offset;
            r.salt = m.salt;
            r.meta_enc = m.meta_enc.clone();
            r.digest = m.digest;
            r.flags_enc = None;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;

/// Passes record bytes to `out`, hashing them on the way when `digest` is given.
struct DigestWriter<'a, W: Write> {
    out: &'a mut W,
    digest: Option<&'a mut ring::digest::Context>,
}

impl<W: Write> Write for DigestWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        if let Some(d) = self.digest.as_deref_mut() {
            d.update(&buf[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
