//! [`Volume`]: creating, opening (with crash recovery), listing, reading and verifying.
//!
//! Writing messages is [`crate::IngestSession`]'s job (`Volume::session`, in the ingest
//! module, hands sessions out); this module owns the state they share (index connection,
//! segment pool, message id counter).

use crate::chunk::{self, ChunkContext, ChunkKey, CHUNK_SIZE, TAG_LEN};
use crate::credential::{self, Credential, Secret};
use crate::header::{Header, KeySlot, WriteStep, ROLE_PRIMARY, ROLE_RECOVERY};
use crate::index::{Index, KeyRow, MessageRow};
use crate::keys::{self, Argon2Params, Key, VolumeKeys};
use crate::segment::{self, RecordHeader, SegmentHeader, REC_HEADER_LEN, SEG_HEADER_LEN};
use crate::{StoreError, HEADER_FILE, INDEX_FILE, SEGMENTS_DIR};
use mailferry_audit::private;
use mailferry_core::profile::StoreSettings;
use mailferry_core::{MailboxAddr, MessageMeta};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

/// What `init` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitOutcome {
    /// The new volume's id.
    pub volume_id: [u8; 16],
    /// True if the key file was created (it did not exist).
    pub key_file_created: bool,
    /// The recovery key file written, if a recovery slot was created.
    pub recovery_key_file: Option<PathBuf>,
}

/// How `init` protects the volume master key.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// The primary credential: a key file (created if missing) or a passphrase file.
    pub primary: Credential,
    /// Where to write a fresh recovery key (must not exist); `None`: no recovery slot.
    pub recovery_key_file: Option<PathBuf>,
    /// Argon2id cost of a passphrase slot.
    pub argon2: Argon2Params,
}

/// Which slot a credential opened (`volume unlock-check`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnlockInfo {
    /// The volume id.
    pub volume_id: [u8; 16],
    /// Header format version on disk.
    pub version: u16,
    /// Index of the slot that opened.
    pub slot: usize,
    /// What that slot is ("key file", "recovery key", "passphrase (...)").
    pub slot_kind: String,
    /// Every slot of the header, described.
    pub slots: Vec<String>,
}

/// An open volume. Cheap to share: clone the `Arc` around it, or hand out sessions.
pub struct Volume {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("dir", &self.inner.dir)
            .field("volume_id", &hex::encode(self.inner.volume_id))
            .finish_non_exhaustive()
    }
}

/// A segment not in use by any session, with its committed length.
pub(crate) struct FreeSegment {
    pub number: u64,
    pub len: u64,
}

/// State shared by the volume and its sessions.
pub(crate) struct Inner {
    pub dir: PathBuf,
    pub volume_id: [u8; 16],
    pub keys: VolumeKeys,
    pub index: Mutex<Index>,
    pub next_message_id: AtomicU64,
    pub settings: StoreSettings,
    pub free_segments: Mutex<Vec<FreeSegment>>,
    /// What crash recovery found and did at open.
    pub recovery: RecoveryReport,
    /// The destination-side audit log.
    pub audit: crate::audit_trail::DestLog,
    mailbox_keys: Mutex<HashMap<u64, (u32, Key)>>,
    /// Every generation unwrapped so far, by (mailbox row, key id). Never holds a
    /// generation wrapped to a customer key (those are unwrapped per read).
    gen_keys: Mutex<HashMap<(u64, u32), Key>>,
    /// Read keys given to [`Volume::unlock`] (tenant keys, grants).
    pub(crate) access: Mutex<customer::Access>,
    /// The offsite copy, if one is attached. After `audit`: dropping the volume signs the
    /// head first, and the offsite copy's own drop may still take it along.
    offsite: std::sync::OnceLock<Arc<dyn crate::Offsite>>,
    /// Held for the volume's lifetime: an exclusive lock on volume.hdr.
    _lock: File,
}

/// The keys an ingest session writes with.
pub(crate) struct WriteKeys {
    pub mailbox_id: u64,
    pub key_id: u32,
    pub key: Key,
    /// Customer-key mailboxes: the index base key (dedup, locator, receipt leaves).
    pub index_base: Option<Key>,
}

/// A committed message: its id, mailbox, decrypted metadata and where its record is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// Message id in the store.
    pub id: u64,
    /// The mailbox it belongs to.
    pub mailbox: MailboxAddr,
    /// Decrypted metadata.
    pub meta: MessageMeta,
    loc: Location,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Location {
    mailbox_id: u64,
    key_id: u32,
    segment: u64,
    offset: u64,
    record_len: u64,
    salt: [u8; 32],
}

/// What crash recovery found and did when the volume was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments whose uncommitted tail was cut: `(segment, bytes removed)`.
    pub tails_truncated: Vec<(u64, u64)>,
    /// Segment files no index row referenced, deleted (uncommitted writes, or a
    /// compaction interrupted before or after its switch).
    pub segments_removed: Vec<u64>,
    /// Segments shorter than their last indexed record: data lost outside a crash this
    /// design produces. Left untouched; `verify` names every message they hold.
    pub short_segments: Vec<ShortSegment>,
}

/// A segment shorter than the index says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShortSegment {
    /// Segment number.
    pub segment: u64,
    /// Its length on disk.
    pub len: u64,
    /// The end of its last indexed record.
    pub expected: u64,
}

/// What `verify` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Messages looked at.
    pub messages_checked: u64,
    /// Record bytes authenticated.
    pub bytes_checked: u64,
    /// Every damaged item, named.
    pub damaged: Vec<DamagedItem>,
    /// Messages of shredded mailboxes (unreadable on purpose, not damaged).
    pub shredded: u64,
    /// Messages of customer-key mailboxes checked without the tenant's key: sealed for
    /// the tenant, their record authenticated against the digest recorded at write time
    /// (also counted in `messages_checked`).
    pub sealed_for_tenant: u64,
}

/// One damaged item found by `verify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedItem {
    /// The mailbox (or `mailbox id N` if its name is unreadable, empty for a segment).
    pub mailbox: String,
    /// `folder/source_id`, or `message id N` if the metadata is unreadable, or
    /// `segment NNNNNNNN.seg`.
    pub item: String,
    /// What is wrong.
    pub reason: String,
}

// === impl Volume ===

impl Volume {
    /// Creates a volume in `dir` (created if missing; refused with an error if it already
    /// holds a volume or any file). If `key_file` does not exist it is created with 32
    /// random bytes, mode 0600 (create_new, never overwrite); if it exists it must be
    /// exactly 32 bytes. No recovery slot: see [`Volume::init_with`].
    pub fn init(dir: &Path, key_file: &Path) -> Result<InitOutcome, StoreError> {
        Self::init_with(
            dir,
            &InitOptions {
                primary: Credential::KeyFile(key_file.to_path_buf()),
                recovery_key_file: None,
                argon2: Argon2Params::DEFAULT,
            },
        )
    }

    /// Creates a volume whose master key is wrapped under the primary credential (a key
    /// file, created if missing, or a passphrase file, which must exist) and, if asked,
    /// under a fresh recovery key written once to `recovery_key_file` (create_new, 0600)
    /// before anything else of the volume exists.
    pub fn init_with(dir: &Path, opts: &InitOptions) -> Result<InitOutcome, StoreError> {
        match std::fs::read_dir(dir) {
            Ok(mut entries) => {
                if let Some(first) = entries.next() {
                    let first = first.map_err(|e| StoreError::io(dir, e))?;
                    return Err(StoreError::NotEmpty {
                        path: dir.to_path_buf(),
                        what: first.file_name().to_string_lossy().into_owned(),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(dir, e)),
        }
        if let Some(r) = &opts.recovery_key_file {
            if std::fs::symlink_metadata(r).is_ok() {
                return Err(StoreError::KeyFile {
                    kind: "recovery key file",
                    path: r.clone(),
                    reason: "already exists; init never overwrites a key. Choose another --recovery-key-file (or delete it if an interrupted init left it); nothing was changed".into(),
                });
            }
        }
        let mut id = [0u8; 16];
        keys::fill_random(&mut id);
        let vmk = Key::random();
        let (primary, key_file_created) = new_primary_slot(&id, &opts.primary, &opts.argon2, &vmk)?;
        let mut slots = vec![primary];
        if let Some(r) = &opts.recovery_key_file {
            let rk = credential::create_recovery_key_file(r)?;
            slots.push(KeySlot::key_file(&id, ROLE_RECOVERY, &rk, &vmk));
        }
        let header = Header {
            version: crate::header::VERSION,
            volume_id: id,
            slots,
        };
        private::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let seg_dir = dir.join(SEGMENTS_DIR);
        private::create_dir(&seg_dir).map_err(|e| StoreError::io(&seg_dir, e))?;
        Index::create(&dir.join(INDEX_FILE), &header.volume_id)?;
        crate::audit_trail::DestLog::open(dir, &VolumeKeys::new(vmk.clone()))?.event(
            "volume.created",
            serde_json::json!({ "volume": hex::encode(header.volume_id) }),
        )?;
        // The header goes last: its presence means the volume is complete.
        header.write_atomic(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::sync_dir(parent)?;
        }
        tracing::info!(volume = %dir.display(), id = %hex::encode(header.volume_id), "volume created");
        Ok(InitOutcome {
            volume_id: header.volume_id,
            key_file_created,
            recovery_key_file: opts.recovery_key_file.clone(),
        })
    }

    /// Proves that `cred` opens the volume: reads `volume.hdr` and the credential only;
    /// the index and the segments are not opened.
    pub fn unlock_check(dir: &Path, cred: &Credential) -> Result<UnlockInfo, StoreError> {
        let header = Header::read(dir)?;
        let secret = cred.load()?;
        let (_vmk, slot) = header.unlock_with(dir, &secret)?;
        Ok(UnlockInfo {
            volume_id: header.volume_id,
            version: header.version,
            slot,
            slot_kind: header.slots[slot].describe(),
            slots: header.slots.iter().map(KeySlot::describe).collect(),
        })
    }

    /// True if the volume's header has a recovery slot (reads `volume.hdr` only).
    pub fn has_recovery_slot(dir: &Path) -> Result<bool, StoreError> {
        Ok(Header::read(dir)?.has_recovery())
    }

    /// Rewraps the volume master key under a new primary credential (a key file, created
    /// if missing, or a passphrase file): O(1), only `volume.hdr` changes, atomically.
    /// `old` may be the current primary credential or the recovery key; recovery slots
    /// are kept. Refused with `Busy` while the volume is open elsewhere. Returns true if
    /// a key file was created.
    pub fn rekey(
        dir: &Path,
        old: &Credential,
        new: &Credential,
        argon2: &Argon2Params,
    ) -> Result<bool, StoreError> {
        Self::rekey_until(dir, old, new, argon2, WriteStep::Done)
    }

    pub(crate) fn rekey_until(
        dir: &Path,
        old: &Credential,
        new: &Credential,
        argon2: &Argon2Params,
        stop: WriteStep,
    ) -> Result<bool, StoreError> {
        let header = Header::read(dir)?;
        let secret = old.load()?;
        let (vmk, _) = header.unlock_with(dir, &secret)?;
        drop(secret);
        let _lock = lock_header(dir)?;
        // Re-read under the lock: another rekey may have finished in between.
        let header = Header::read(dir)?;
        let (_, _) = header.unlock_with(dir, &old.load()?)?;
        let (primary, created) = new_primary_slot(&header.volume_id, new, argon2, &vmk)?;
        let mut slots = vec![primary];
        slots.extend(
            header
                .slots
                .iter()
                .filter(|s| s.role != ROLE_PRIMARY)
                .cloned(),
        );
        let new_header = Header {
            version: crate::header::VERSION,
            volume_id: header.volume_id,
            slots,
        };
        let finished = matches!(stop, WriteStep::Done);
        new_header.write_atomic_until(dir, stop)?;
        tracing::info!(volume = %dir.display(), "volume rekeyed");
        if finished {
            crate::audit_trail::DestLog::open(dir, &VolumeKeys::new(vmk))?.event(
                "key.rekeyed",
                serde_json::json!({ "volume": hex::encode(header.volume_id), "new_key_file_created": created }),
            )?;
        }
        Ok(created)
    }

    /// Opens a volume. A wrong key is refused (StoreError::WrongKey) after reading only
    /// the header, before any other file is read or written. Runs crash recovery.
    pub fn open(
        dir: &Path,
        key_file: &Path,
        settings: &StoreSettings,
    ) -> Result<Volume, StoreError> {
        Self::open_with(dir, &Credential::KeyFile(key_file.to_path_buf()), settings)
    }

    /// Opens a volume with any credential (key file, passphrase file, recovery key). A
    /// wrong credential is refused after reading only the header. A volume of format
    /// version 1 is upgraded in place (index schema, then header; see
    /// docs/volume-format.md, "Versions and upgrade").
    pub fn open_with(
        dir: &Path,
        cred: &Credential,
        settings: &StoreSettings,
    ) -> Result<Volume, StoreError> {
        let header = Header::read(dir)?;
        private::warn_if_exposed(dir, "volume");
        let secret: Secret = cred.load()?;
        let (vmk, _) = header.unlock_with(dir, &secret)?;
        drop(secret);

        let mut lock = lock_header(dir)?;
        let index = Index::open(&dir.join(INDEX_FILE), &header.volume_id)?;
        if header.version < crate::header::VERSION {
            // Re-read under the lock so a concurrent rekey is not undone.
            let current = Header::read(dir)?;
            current.write_atomic(dir)?;
            // The rename replaced the inode we locked: lock the new one.
            lock = lock_header(dir)?;
            tracing::info!(volume = %dir.display(), from = header.version, to = crate::header::VERSION, "volume format upgraded");
        }
        let (free, recovery) = recover_segments(dir, &index, settings)?;
        let next = index.max_message_id()? + 1;
        let keys = VolumeKeys::new(vmk);
        let audit = crate::audit_trail::DestLog::open(dir, &keys)?;
        let volume = Volume {
            inner: Arc::new(Inner {
                audit,
                dir: dir.to_path_buf(),
                volume_id: header.volume_id,
                keys,
                index: Mutex::new(index),
                next_message_id: AtomicU64::new(next),
                settings: settings.clone(),
                free_segments: Mutex::new(free),
                recovery,
                mailbox_keys: Mutex::new(HashMap::new()),
                gen_keys: Mutex::new(HashMap::new()),
                access: Mutex::new(Default::default()),
                offsite: std::sync::OnceLock::new(),
                _lock: lock,
            }),
        };
        volume.fill_locators()?;
        crate::audit_trail::recover(&volume)?;
        Ok(volume)
    }

    /// Computes the locator of every message row written before index schema 4 (they
    /// are NULL after the schema upgrade; computing them needs the mailbox keys), in one
    /// transaction. Rows whose metadata cannot be read keep NULL (`verify` names them;
    /// DELETE and FLAGS cannot find them), and are tried again at the next open.
    fn fill_locators(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let rows = inner.index()?.messages_without_locator()?;
        if rows.is_empty() {
            return Ok(());
        }
        let names: HashMap<u64, MailboxAddr> = self.mailbox_rows()?.into_iter().collect();
        let mut macs: HashMap<u64, Key> = HashMap::new();
        let mut keys: HashMap<(u64, u32), Key> = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        let mut unreadable = 0u64;
        for r in &rows {
            let Some(mailbox) = names.get(&r.mailbox_id) else {
                unreadable += 1;
                continue;
            };
            let meta = match inner.stored_message(mailbox, r, &mut keys) {
                Ok(m) => m.meta,
                Err(_) => {
                    unreadable += 1;
                    continue;
                }
            };
            let mac = match macs.entry(r.mailbox_id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    // The same generation as the dedup key: the oldest the mailbox holds.
                    let oldest = inner.index()?.oldest_key_id(r.mailbox_id)?;
                    let base = inner.key_for(r.mailbox_id, oldest, mailbox)?;
                    e.insert(keys::locator_mac_key(&base))
                }
            };
            out.push((
                r.id,
                keys::locator(mac, meta.folder.as_str(), meta.source_id.as_str()),
            ));
        }
        inner.index()?.set_locators(&out)?;
        tracing::info!(
            messages = out.len(),
            unreadable,
            "index: computed the locators of messages stored before schema 4"
        );
        Ok(())
    }

    /// The receipt root of a mailbox: the Merkle root over `(folder/source-id, sha256)`
    /// of every message it holds (see `mailferry_audit::merkle`), and how many there are.
    /// Computed from the decrypted metadata; `verify` is what checks the contents.
    pub fn receipt_root(&self, mailbox: &MailboxAddr) -> Result<(String, u64), StoreError> {
        let mut items = Vec::new();
        for m in self.list_messages(mailbox)? {
            let m = m?;
            items.push((
                format!("{}/{}", m.meta.folder, m.meta.source_id),
                m.meta.sha256,
            ));
        }
        let root = mailferry_audit::merkle::receipt_root(
            items.iter().map(|(a, b)| (a.as_str(), b.as_str())),
        );
        Ok((root, items.len() as u64))
    }

    /// The same root and count as [`Volume::receipt_root`], from the mailbox's receipt
    /// cache ([`crate::receipt`]): only messages stored since the last call have their
    /// metadata decrypted, so the end of a pass costs what it changed. The cache is
    /// rebuilt from every message when it is missing or does not fit; a cache that
    /// cannot be written costs the next call a rebuild, nothing else.
    pub fn receipt_root_incremental(
        &self,
        mailbox: &MailboxAddr,
    ) -> Result<(String, u64), StoreError> {
        use crate::receipt;
        let inner = &self.inner;
        let (row, ck) = {
            let ix = inner.index()?;
            let row = inner.live_mailbox(&ix, mailbox)?;
            let ck = inner.customer_key(&ix, row.tenant_id)?;
            (row, ck)
        };
        if let Some(ck) = ck {
            return self.receipt_root_sealed(&row, &ck, mailbox);
        }
        let key = receipt::cache_key(&inner.key_for(row.id, row.key_id, mailbox)?);
        let path = receipt::path(&inner.dir, row.id);
        let cached = std::fs::read(&path)
            .ok()
            .and_then(|b| receipt::decode(&b, &key, &inner.volume_id, row.id, row.key_id));
        let after = cached.as_ref().map_or(0, |c| c.max_id);
        // Ids and new rows under one lock, so they describe the same moment.
        let (ids, rows) = {
            let ix = inner.index()?;
            (
                ix.message_ids_of(row.id)?,
                ix.messages_after(row.id, after)?,
            )
        };
        let (mut leaves, after) = match cached
            .as_ref()
            .and_then(|c| Some((receipt::reconcile(c, &ids)?, c)))
        {
            Some(((kept, new), c)) if new.is_empty() && kept.len() == c.leaves.len() => {
                // Nothing stored or deleted since: the cache stands as it is.
                let n = kept.len() as u64;
                let root = mailferry_audit::merkle::root_of_leaves(
                    kept.into_iter().map(|(_, l)| l).collect(),
                );
                return Ok((root, n));
            }
            Some(((kept, _), c)) => (kept, c.max_id),
            None => (Vec::new(), 0),
        };
        // A rebuild needs every row, not only those after a cache that did not fit.
        let rows = if after == 0 && cached.as_ref().is_some_and(|c| c.max_id > 0) {
            inner.index()?.messages(Some(row.id))?
        } else {
            rows
        };
        let mut keys: HashMap<(u64, u32), Key> = HashMap::new();
        let mut max_id = after;
        for r in rows.iter().filter(|r| r.id > after) {
            let m = inner.stored_message(mailbox, r, &mut keys)?;
            let item = format!("{}/{}", m.meta.folder, m.meta.source_id);
            leaves.push((m.id, mailferry_audit::merkle::leaf(&item, &m.meta.sha256)));
            max_id = max_id.max(m.id);
        }
        leaves.sort_unstable_by_key(|(id, _)| *id);
        let cache = receipt::Cache { max_id, leaves };
        let bytes = receipt::encode(&cache, &key, &inner.volume_id, row.id, row.key_id);
        if let Err(e) = receipt::store(&path, &bytes) {
            tracing::warn!(path = %path.display(), error = %e, "receipt cache not written; the next receipt rebuilds it");
        }
        let n = cache.leaves.len() as u64;
        let root = mailferry_audit::merkle::root_of_leaves(
            cache.leaves.into_iter().map(|(_, l)| l).collect(),
        );
        Ok((root, n))
    }

    /// The receipt root of a customer-key mailbox from the leaves sealed at write time
    /// under its index base key: no message key needed, O(messages) small opens.
    fn receipt_root_sealed(
        &self,
        row: &KeyRow,
        ck: &crate::index::TenantKeyRow,
        mailbox: &MailboxAddr,
    ) -> Result<(String, u64), StoreError> {
        let inner = &self.inner;
        let base = inner.ck_index_base(ck, row.tenant_id, row.id)?;
        let rows = inner.index()?.messages(Some(row.id))?;
        let mut leaves = Vec::with_capacity(rows.len());
        for r in &rows {
            let leaf = r
                .leaf_enc
                .as_deref()
                .and_then(|l| {
                    crate::tenant_key::open_leaf(&base, &inner.volume_id, row.id, r.id, l)
                })
                .ok_or_else(|| StoreError::MetaUnreadable {
                    mailbox: mailbox.to_string(),
                    id: r.id,
                    reason: "sealed receipt leaf missing or failed authentication".into(),
                })?;
            leaves.push(leaf);
        }
        let n = leaves.len() as u64;
        Ok((mailferry_audit::merkle::root_of_leaves(leaves), n))
    }

    /// Refuses with `InUse` while an ingest session of this volume is open: `what`
    /// (compaction, re-encryption) needs the volume to itself. Sessions hold clones of
    /// `inner`; the caller's `&mut self` keeps new ones from starting.
    pub(crate) fn exclusive(&mut self, what: &'static str) -> Result<(), StoreError> {
        if Arc::strong_count(&self.inner) != 1 {
            return Err(StoreError::InUse {
                path: self.inner.dir.clone(),
                what,
            });
        }
        Ok(())
    }

    /// Appends an event to the volume's audit log (synced). Callers must keep plaintext
    /// mail metadata out of `data`; use [`Volume::pseudonym_of_mailbox`].
    pub fn audit_event(&self, event: &str, data: serde_json::Value) -> Result<(), StoreError> {
        self.inner.audit.event(event, data)?;
        // An event ends an operation (a pass's receipt hands out the head covering it):
        // what it describes must be offsite before the caller reports it.
        self.inner.flush_offsite()
    }

    /// The keyed pseudonym under which the audit log names `mailbox`.
    pub fn pseudonym_of_mailbox(&self, mailbox: &MailboxAddr) -> String {
        self.inner.audit.mailbox_pseudonym(mailbox.as_str())
    }

    /// The keyed pseudonym under which the audit log names a `folder/source-id` item.
    pub fn pseudonym_of_item(&self, item: &str) -> String {
        self.inner.audit.item_pseudonym(item)
    }

    pub(crate) fn audit_item(&self, m: &StoredMessage) -> crate::audit_trail::AuditItem {
        crate::audit_trail::AuditItem {
            message_id: m.id,
            mailbox: self.pseudonym_of_mailbox(&m.mailbox),
            item: self.pseudonym_of_item(&format!("{}/{}", m.meta.folder, m.meta.source_id)),
            sha256: m.meta.sha256.clone(),
            size: m.meta.size,
        }
    }

    /// Attaches an offsite copy (object storage, `mailferry-bucket`): from now on every
    /// batch's acknowledgements wait for [`crate::Offsite::flush`], and a segment that is
    /// not on local disk is read through it. Attach before the first session starts;
    /// refused if one is attached already.
    pub fn attach_offsite(&self, offsite: Arc<dyn crate::Offsite>) -> Result<(), StoreError> {
        // What the copy sealed is never appended to again, here or after a restore.
        self.inner
            .free_segments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|f| !offsite.is_sealed(f.number));
        self.inner
            .offsite
            .set(offsite)
            .map_err(|_| StoreError::Offsite {
                path: self.inner.dir.clone(),
                reason:
                    "an offsite copy is attached already; open the volume again to attach another"
                        .into(),
            })
    }

    /// Waits until everything committed so far is in the offsite copy (nothing to do
    /// without one). Commands that change the volume outside ingest sessions (shred,
    /// rotate, compact) call it before they report success.
    pub fn flush_offsite(&self) -> Result<(), StoreError> {
        self.inner.flush_offsite()
    }

    /// What crash recovery found and did when this volume was opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// The volume id.
    pub fn volume_id(&self) -> [u8; 16] {
        self.inner.volume_id
    }

    /// The volume directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Every mailbox with its row id, in creation order.
    pub(crate) fn mailbox_rows(&self) -> Result<Vec<(u64, MailboxAddr)>, StoreError> {
        let rows = self.inner.index()?.mailboxes()?;
        rows.into_iter()
            .map(|(id, enc)| Ok((id, self.inner.mailbox_name(id, &enc)?)))
            .collect()
    }

    /// Every mailbox in the volume, in creation order.
    pub fn mailboxes(&self) -> Result<Vec<MailboxAddr>, StoreError> {
        let rows = self.inner.index()?.mailboxes()?;
        rows.into_iter()
            .map(|(id, enc)| self.inner.mailbox_name(id, &enc))
            .collect()
    }

    /// Every committed message of the mailbox with its decrypted metadata (flags as the
    /// last committed FLAGS left them), in store order; messages removed by a DELETE are
    /// not listed. This is what export, verify and the receipt see. Unknown mailbox: StoreError::UnknownMailbox. A message whose metadata
    /// fails to decrypt is returned as Err inside the Vec (naming its message id),
    /// never aborting the list.
    pub fn list_messages(
        &self,
        mailbox: &MailboxAddr,
    ) -> Result<Vec<Result<StoredMessage, StoreError>>, StoreError> {
        let rows = {
            let ix = self.inner.index()?;
            let row = self.inner.live_mailbox(&ix, mailbox)?;
            if let Some((tenant, fingerprint)) = self.inner.read_locked(&ix, row.id, mailbox)? {
                drop(ix);
                self.audit_access(crate::tenant_key::AccessEvent::Refused {
                    mailbox: mailbox.clone(),
                    needed: format!("customer key {fingerprint} or a lockbox grant"),
                })?;
                return Err(StoreError::CustomerKeyNeeded {
                    mailbox: mailbox.to_string(),
                    tenant,
                    fingerprint,
                });
            }
            ix.messages(Some(row.id))?
        };
        let mut keys: HashMap<(u64, u32), Key> = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(self.inner.stored_message(mailbox, &r, &mut keys));
        }
        Ok(out)
    }

    /// Streams the decrypted body to `out` chunk by chunk (one 64 KiB chunk in memory at
    /// a time), authenticating every chunk, checking the last-chunk flag, the total
    /// length and the SHA-256. On error, what was written so far must be discarded by
    /// the caller.
    pub fn read_message(&self, msg: &StoredMessage, out: &mut dyn Write) -> Result<(), StoreError> {
        let key = self
            .inner
            .key_for(msg.loc.mailbox_id, msg.loc.key_id, &msg.mailbox)?;
        self.inner.read_record(msg, &key, out)
    }

    /// Authenticates every chunk of every message, checks index ↔ segments (every index
    /// row points inside a segment; sizes match), and returns every damaged item named.
    /// Does not stop at the first.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let inner = &self.inner;
        let (mailboxes, rows, shredded) = {
            let ix = inner.index()?;
            (
                ix.mailboxes()?,
                ix.messages(None)?,
                ix.shredded_mailboxes()?,
            )
        };
        let mut report = VerifyReport::default();
        let mut names: HashMap<u64, Result<MailboxAddr, String>> = HashMap::new();
        for (id, enc) in mailboxes {
            names.insert(id, inner.mailbox_name(id, &enc).map_err(|e| e.to_string()));
        }

        // Segment headers of every referenced segment.
        let mut segs: Vec<u64> = rows.iter().map(|r| r.segment).collect();
        segs.sort_unstable();
        segs.dedup();
        for n in segs {
            let problem = match inner.open_segment(n) {
                Err(e) => Some(format!("cannot open: {e}")),
                Ok(mut f) => {
                    let mut b = [0u8; SEG_HEADER_LEN as usize];
                    match f.read_exact(&mut b) {
                        Err(e) => Some(format!("header unreadable: {e}")),
                        Ok(()) => match SegmentHeader::parse(&b) {
                            Err(e) => Some(e.to_string()),
                            Ok(h) if h.volume_id != inner.volume_id || h.number != n => {
                                Some("header names another volume or segment number".into())
                            }
                            Ok(_) => None,
                        },
                    }
                }
            };
            if let Some(reason) = problem {
                report.damaged.push(DamagedItem {
                    mailbox: String::new(),
                    item: format!("segment {}", segment::file_name(n)),
                    reason,
                });
            }
        }

        let mut keys: HashMap<(u64, u32), Key> = HashMap::new();
        let mut locked: HashMap<u64, bool> = HashMap::new();
        for r in rows {
            if shredded.contains(&r.mailbox_id) {
                report.shredded += 1;
                continue;
            }
            report.messages_checked += 1;
            let mailbox = match names.get(&r.mailbox_id) {
                Some(Ok(m)) => m.clone(),
                other => {
                    let reason = match other {
                        Some(Err(e)) => e.clone(),
                        _ => format!("mailbox row {} missing from the index", r.mailbox_id),
                    };
                    report.damaged.push(DamagedItem {
                        mailbox: format!("mailbox id {}", r.mailbox_id),
                        item: format!("message id {}", r.id),
                        reason,
                    });
                    continue;
                }
            };
            let is_locked = match locked.entry(r.mailbox_id) {
                std::collections::hash_map::Entry::Occupied(e) => *e.get(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let ix = inner.index()?;
                    *e.insert(inner.read_locked(&ix, r.mailbox_id, &mailbox)?.is_some())
                }
            };
            if is_locked {
                // Sealed for the tenant: authenticate the ciphertext against the digest
                // recorded at write time, decrypt nothing.
                report.sealed_for_tenant += 1;
                match inner.check_sealed_record(&r) {
                    Ok(()) => report.bytes_checked += r.record_len,
                    Err(reason) => report.damaged.push(DamagedItem {
                        mailbox: mailbox.to_string(),
                        item: format!("message id {}", r.id),
                        reason,
                    }),
                }
                continue;
            }
            let msg = match inner.stored_message(&mailbox, &r, &mut keys) {
                Ok(m) => m,
                Err(e) => {
                    report.damaged.push(DamagedItem {
                        mailbox: mailbox.to_string(),
                        item: format!("message id {}", r.id),
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            let key = keys
                .get(&(r.mailbox_id, r.key_id))
                .expect("stored_message cached the key");
            match inner.read_record(&msg, key, &mut std::io::sink()) {
                Ok(()) => report.bytes_checked += r.record_len,
                Err(e) => report.damaged.push(DamagedItem {
                    mailbox: mailbox.to_string(),
                    item: format!("{}/{}", msg.meta.folder, msg.meta.source_id),
                    reason: e.to_string(),
                }),
            }
        }
        Ok(report)
    }
}

// === impl Volume: rotation and shredding ===

/// What a rotation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotateOutcome {
    /// Mailboxes whose key changed (mailbox rotation) or was rewrapped (tenant rotation).
    pub mailboxes: u64,
    /// Wrapped keys written.
    pub keys_rewrapped: u64,
    /// The mailbox's new key id (mailbox rotation only).
    pub new_key_id: Option<u32>,
    /// Customer-key tenant rotation: messages whose dedup value, locator and sealed
    /// receipt leaf were recomputed under the tenant's new index key (`None` otherwise).
    pub messages_reindexed: Option<u64>,
}

impl Volume {
    /// Gives the mailbox a new random key (generation `current + 1`) for everything
    /// written from now on. Messages keep the key id they were sealed with; earlier
    /// generations stay wrapped under the tenant key, so nothing is re-encrypted: O(1).
    pub fn rotate_mailbox(&self, mailbox: &MailboxAddr) -> Result<RotateOutcome, StoreError> {
        let inner = &self.inner;
        let mut ix = inner.index()?;
        let row = inner.live_mailbox(&ix, mailbox)?;
        let (new_id, wrapped) = match inner.customer_key(&ix, row.tenant_id)? {
            // Wrapped to the public key: no private key needed, none is kept.
            Some(ck) => {
                let (id, w, _key) = inner.next_customer_key(&ix, &ck, &row, mailbox)?;
                (id, w)
            }
            None => {
                let tk = inner.tenant_key(&ix, row.tenant_id)?;
                inner.next_mailbox_key(&tk, &row, &format_args!("mailbox {mailbox}"))?
            }
        };
        ix.rotate_mailbox(row.id, (row.key_id, &row.key_wrapped), new_id, &wrapped)?;
        tracing::info!(mailbox_row = row.id, key_id = new_id, "mailbox key rotated");
        self.keys_changed(
            ix,
            "key.rotated",
            serde_json::json!({ "mailbox": self.pseudonym_of_mailbox(mailbox), "key_id": new_id }),
        )?;
        Ok(RotateOutcome {
            mailboxes: 1,
            keys_rewrapped: 1,
            new_key_id: Some(new_id),
            messages_reindexed: None,
        })
    }

    /// Gives the tenant (a mailbox domain) a new random key and rewraps every key of its
    /// mailboxes, current and earlier generations, under it in one transaction: O(keys),
    /// no message is touched. Shredded mailboxes have no keys left to rewrap.
    pub fn rotate_tenant(&self, tenant: &str) -> Result<RotateOutcome, StoreError> {
        let inner = &self.inner;
        let domain = tenant.trim().to_ascii_lowercase();
        let mut ix = inner.index()?;
        let tenant_id = inner.tenant_row(&ix, &domain)?;
        if let Some(ck) = inner.customer_key(&ix, tenant_id)? {
            drop(ix);
            return self.rotate_customer_tenant(&domain, tenant_id, &ck);
        }
        let old_tk = inner.tenant_key(&ix, tenant_id)?;
        let new_tk = Key::random();
        let mut rewrapped = Vec::new();
        let mut mailboxes = 0;
        for row in ix.mailboxes_of_tenant(tenant_id)? {
            if row.key_id == 0 {
                continue;
            }
            mailboxes += 1;
            let mut gens = ix.old_mailbox_keys(row.id)?;
            gens.push((row.key_id, row.key_wrapped.clone()));
            for (kid, w) in gens {
                let k = inner.unwrap_mailbox_key(&old_tk, row.id, kid, &w)?;
                let aad = keys::mailbox_wrap_aad(&inner.volume_id, row.id, kid);
                rewrapped.push((
                    row.id,
                    kid,
                    keys::wrap_key(&new_tk, keys::random_nonce(), &aad, &k),
                ));
            }
        }
        let aad = keys::wrap_aad(keys::AAD_TENANT, &inner.volume_id, Some(tenant_id));
        let tw = keys::wrap_key(&inner.keys.vmk, keys::random_nonce(), &aad, &new_tk);
        ix.rotate_tenant(tenant_id, &tw, &rewrapped)?;
        tracing::info!(
            tenant_row = tenant_id,
            keys = rewrapped.len(),
            "tenant key rotated"
        );
        // The tenant by its index row: the audit log names no domain in plaintext.
        self.keys_changed(
            ix,
            "tenant.key.rotated",
            serde_json::json!({
                "tenant_row": tenant_id,
                "mailboxes": mailboxes,
                "keys_rewrapped": rewrapped.len(),
            }),
        )?;
        Ok(RotateOutcome {
            mailboxes,
            keys_rewrapped: rewrapped.len() as u64 + 1,
            new_key_id: None,
            messages_reindexed: None,
        })
    }

    /// Destroys every key of the mailbox (crypto-shredding): its messages can no longer
    /// be decrypted by anyone, from this volume or any old copy of its segments. The
    /// index rows stay until `compact`; `list`/`export` of the mailbox fail with
    /// `Shredded`, and `verify` counts its messages as shredded, not damaged. Returns the
    /// number of messages made unreadable.
    pub fn shred_mailbox(&self, mailbox: &MailboxAddr) -> Result<u64, StoreError> {
        let inner = &self.inner;
        let mut ix = inner.index()?;
        let row = inner.live_mailbox(&ix, mailbox)?;
        let n = ix.shred_mailbox(row.id)?;
        tracing::info!(mailbox_row = row.id, messages = n, "mailbox shredded");
        self.keys_changed(
            ix,
            "mailbox.shredded",
            serde_json::json!({ "mailbox": self.pseudonym_of_mailbox(mailbox), "messages": n }),
        )?;
        Ok(n)
    }

    /// After keys changed in the index: the index lock (`ix`) released before anything
    /// else, no unwrapped key kept in memory, and the change recorded in the volume's
    /// audit log. One step for rotation and shredding, so that none of them skips a part.
    fn keys_changed<L>(
        &self,
        ix: L,
        event: &str,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        drop(ix);
        self.inner.forget_keys();
        self.inner.audit.event(event, detail)?;
        Ok(())
    }
}

// === impl Inner ===

impl Inner {
    /// The index row of a mailbox that exists and still has its keys: `UnknownMailbox`
    /// or `Shredded` otherwise.
    pub(crate) fn live_mailbox(
        &self,
        ix: &Index,
        mailbox: &MailboxAddr,
    ) -> Result<crate::index::KeyRow, StoreError> {
        let mac = self.keys.name_mac(b'm', mailbox.as_str());
        let row = ix
            .mailbox_by_mac(&mac)?
            .ok_or_else(|| StoreError::UnknownMailbox {
                mailbox: mailbox.to_string(),
            })?;
        if row.key_id == 0 {
            return Err(StoreError::Shredded {
                mailbox: mailbox.to_string(),
            });
        }
        Ok(row)
    }

    /// `Some((tenant, fingerprint))` if the mailbox is sealed to a customer key and
    /// nothing given to [`Volume::unlock`] reads it.
    pub(crate) fn read_locked(
        &self,
        ix: &Index,
        mailbox_id: u64,
        mailbox: &MailboxAddr,
    ) -> Result<Option<(String, String)>, StoreError> {
        let Some(row) = ix.mailbox_by_id(mailbox_id)? else {
            return Ok(None);
        };
        let Some(ck) = self.customer_key(ix, row.tenant_id)? else {
            return Ok(None);
        };
        let tenant = mailbox.domain().to_ascii_lowercase();
        if self.can_read_customer(&tenant, mailbox_id) {
            return Ok(None);
        }
        Ok(Some((tenant, ck.fingerprint)))
    }

    /// SHA-256 of a message's record bytes as they lie in its segment.
    pub(crate) fn record_digest(&self, r: &MessageRow) -> Result<[u8; 32], StoreError> {
        let path = self.segment_path(r.segment);
        let mut f = self
            .open_segment(r.segment)
            .map_err(|e| StoreError::io(&path, e))?;
        f.seek(SeekFrom::Start(r.offset))
            .map_err(|e| StoreError::io(&path, e))?;
        let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = r.record_len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            f.read_exact(&mut buf[..n])
                .map_err(|e| StoreError::io(&path, e))?;
            sha.update(&buf[..n]);
            left -= n as u64;
        }
        Ok(sha.finish().as_ref().try_into().expect("32 bytes"))
    }

    /// Checks a customer-key record without its key: the record header names the row's
    /// message, mailbox, salt and key id, its length fits, and its bytes hash to the
    /// digest recorded at write time. `Err` says what is wrong.
    pub(crate) fn check_sealed_record(&self, r: &MessageRow) -> Result<(), String> {
        let Some(want) = r.digest else {
            return Err("sealed for the tenant but no record digest was recorded; verify it with --tenant-key".into());
        };
        let seg = segment::file_name(r.segment);
        let mut f = self
            .open_segment(r.segment)
            .map_err(|e| format!("segment {seg} cannot be opened: {e}"))?;
        let flen = f.len();
        let end = r.offset.saturating_add(r.record_len);
        if r.offset < SEG_HEADER_LEN || end > flen {
            return Err(format!(
                "record at {}..{end} lies outside segment {seg} ({flen} bytes): segment truncated or index damaged",
                r.offset
            ));
        }
        f.seek(SeekFrom::Start(r.offset))
            .map_err(|e| e.to_string())?;
        let mut hb = [0u8; REC_HEADER_LEN];
        f.read_exact(&mut hb).map_err(|e| e.to_string())?;
        let h = RecordHeader::parse(&hb).map_err(|e| format!("record header in {seg}: {e}"))?;
        if h.message_id != r.id
            || h.mailbox_id != r.mailbox_id
            || h.salt != r.salt
            || h.key_id != r.key_id
            || segment::record_len(h.plain_len) != Some(r.record_len)
        {
            return Err(format!(
                "record header at offset {} of {seg} belongs to another message (id {})",
                r.offset, h.message_id
            ));
        }
        let got = self.record_digest(r).map_err(|e| e.to_string())?;
        if got != want {
            return Err(format!(
                "record in {seg} does not match the digest recorded when it was written (altered or damaged ciphertext)"
            ));
        }
        Ok(())
    }

    pub(crate) fn index(&self) -> Result<MutexGuard<'_, Index>, StoreError> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions
        // roll back), so a poisoned lock is still usable.
        Ok(self.index.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Tells the offsite copy (if any) that ingest left segment `n` for good.
    pub(crate) fn segment_closed(&self, n: u64) {
        if let Some(o) = self.offsite.get() {
            o.segment_closed(n);
        }
    }

    /// The segments the offsite copy (if any) keeps sealed, with their lengths.
    pub(crate) fn offsite_sealed_segments(&self) -> Vec<(u64, u64)> {
        self.offsite
            .get()
            .map(|o| o.sealed_segments())
            .unwrap_or_default()
    }

    /// See [`Volume::flush_offsite`].
    pub(crate) fn flush_offsite(&self) -> Result<(), StoreError> {
        match self.offsite.get() {
            None => Ok(()),
            Some(o) => o.flush().map_err(|e| StoreError::Offsite {
                path: self.dir.clone(),
                reason: e.to_string(),
            }),
        }
    }

    /// Opens segment `n` for reading: the local file, or, when it is not on local disk
    /// and an offsite copy is attached, that copy's (ranged) reader.
    pub(crate) fn open_segment(&self, n: u64) -> std::io::Result<crate::offsite::SegmentReader> {
        use crate::offsite::SegmentReader;
        match File::open(self.segment_path(n)) {
            Ok(f) => {
                let len = f.metadata()?.len();
                Ok(SegmentReader::Local(f, len))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match self.offsite.get() {
                Some(o) => o.open_segment(n).map(SegmentReader::Remote),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    pub(crate) fn segment_path(&self, n: u64) -> PathBuf {
        self.dir.join(SEGMENTS_DIR).join(segment::file_name(n))
    }

    /// A fresh segment file for ingest, compaction or re-encryption: its number
    /// allocated in the index, the file created (never over an existing one) and its
    /// header written. The caller syncs it and `segments/`.
    pub(crate) fn new_segment(&self) -> Result<(u64, PathBuf, File), StoreError> {
        let number = self.index()?.allocate_segment()?;
        let path = self.segment_path(number);
        let mut file = private::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        let h = SegmentHeader {
            volume_id: self.volume_id,
            number,
        };
        file.write_all(&h.encode())
            .map_err(|e| StoreError::io(&path, e))?;
        Ok((number, path, file))
    }

    pub(crate) fn mailbox_name(&self, id: u64, enc: &[u8]) -> Result<MailboxAddr, StoreError> {
        let name = self
            .keys
            .open_name(&self.volume_id, b'm', enc)
            .ok_or_else(|| keys::unwrap_err(&self.dir, format!("name of mailbox row {id}")))?;
        MailboxAddr::parse(&name).map_err(|_| {
            keys::unwrap_err(
                &self.dir,
                format!("name of mailbox row {id} (not an address)"),
            )
        })
    }

    /// The row id of a tenant (mail domain, any case), or `UnknownTenant`.
    pub(crate) fn tenant_row(&self, ix: &Index, tenant: &str) -> Result<u64, StoreError> {
        let domain = tenant.trim().to_ascii_lowercase();
        ix.tenant_id_by_mac(&self.keys.name_mac(b't', &domain))?
            .ok_or(StoreError::UnknownTenant { tenant: domain })
    }

    pub(crate) fn tenant_key(&self, ix: &Index, tenant_id: u64) -> Result<Key, StoreError> {
        let wrapped = ix.tenant_by_id(tenant_id)?.ok_or_else(|| {
            keys::unwrap_err(&self.dir, format!("tenant row {tenant_id} (missing)"))
        })?;
        let aad = keys::wrap_aad(keys::AAD_TENANT, &self.volume_id, Some(tenant_id));
        keys::unwrap_key(&self.keys.vmk, &aad, &wrapped)
            .ok_or_else(|| keys::unwrap_err(&self.dir, format!("key of tenant row {tenant_id}")))
    }

    /// The next generation of a mailbox's key, `(key id, wrapped key)`: proves the
    /// current key unwraps under the tenant key `tk` before it is retired, then wraps a new
    /// random key as generation `current + 1`. `who` names the mailbox if the key id space
    /// is exhausted.
    pub(crate) fn next_mailbox_key(
        &self,
        tk: &Key,
        row: &KeyRow,
        who: &dyn std::fmt::Display,
    ) -> Result<(u32, Vec<u8>), StoreError> {
        self.unwrap_mailbox_key(tk, row.id, row.key_id, &row.key_wrapped)?;
        let new_id = row
            .key_id
            .checked_add(1)
            .ok_or_else(|| StoreError::IndexDamaged {
                path: self.dir.join(INDEX_FILE),
                reason: format!("{who}: key id space exhausted"),
            })?;
        let wrapped = keys::wrap_key(
            tk,
            keys::random_nonce(),
            &keys::mailbox_wrap_aad(&self.volume_id, row.id, new_id),
            &Key::random(),
        );
        Ok((new_id, wrapped))
    }

    pub(crate) fn unwrap_mailbox_key(
        &self,
        tenant_key: &Key,
        mailbox_id: u64,
        key_id: u32,
        wrapped: &[u8],
    ) -> Result<Key, StoreError> {
        let aad = keys::mailbox_wrap_aad(&self.volume_id, mailbox_id, key_id);
        keys::unwrap_key(tenant_key, &aad, wrapped).ok_or_else(|| {
            keys::unwrap_err(
                &self.dir,
                format!("key {key_id} of mailbox row {mailbox_id}"),
            )
        })
    }

    /// Generation `key_id` of a mailbox's key if it was unwrapped before.
    fn cached_key(&self, mailbox_id: u64, key_id: u32) -> Option<Key> {
        self.gen_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(mailbox_id, key_id))
            .cloned()
    }

    /// Generation `key_id` of a mailbox's key (current or rotated out), cached.
    pub(crate) fn key_for(
        &self,
        mailbox_id: u64,
        key_id: u32,
        mailbox: &MailboxAddr,
    ) -> Result<Key, StoreError> {
        if let Some(k) = self.cached_key(mailbox_id, key_id) {
            return Ok(k);
        }
        let ix = self.index()?;
        self.key_for_in(&ix, mailbox_id, key_id, mailbox)
    }

    /// [`Inner::key_for`] for a caller that already holds the index (inside a
    /// transaction).
    pub(crate) fn key_for_in(
        &self,
        ix: &Index,
        mailbox_id: u64,
        key_id: u32,
        mailbox: &MailboxAddr,
    ) -> Result<Key, StoreError> {
        if let Some(k) = self.cached_key(mailbox_id, key_id) {
            return Ok(k);
        }
        let row = ix.mailbox_by_id(mailbox_id)?.ok_or_else(|| {
            keys::unwrap_err(&self.dir, format!("mailbox row {mailbox_id} (missing)"))
        })?;
        if row.key_id == 0 {
            return Err(StoreError::Shredded {
                mailbox: mailbox.to_string(),
            });
        }
        let wrapped = if row.key_id == key_id {
            row.key_wrapped.clone()
        } else {
            ix.old_mailbox_keys(mailbox_id)?
                .into_iter()
                .find(|(k, _)| *k == key_id)
                .map(|(_, w)| w)
                .ok_or_else(|| {
                    keys::unwrap_err(
                        &self.dir,
                        format!("key {key_id} of mailbox row {mailbox_id} (missing)"),
                    )
                })?
        };
        if wrapped.len() == crate::tenant_key::WRAPPED_CK_LEN {
            return self.unwrap_customer(ix, &row, key_id, &wrapped, mailbox);
        }
        let tk = self.tenant_key(ix, row.tenant_id)?;
        let key = self.unwrap_mailbox_key(&tk, mailbox_id, key_id, &wrapped)?;
        self.gen_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((mailbox_id, key_id), key.clone());
        Ok(key)
    }

    /// Forgets every cached key (after a rotation or a shred).
    pub(crate) fn forget_keys(&self) {
        self.mailbox_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.gen_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// The key id and key of a mailbox row (cached after the first unwrap).
    pub(crate) fn mailbox_key(&self, mailbox_id: u64) -> Result<(u32, Key), StoreError> {
        if let Some(k) = self
            .mailbox_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&mailbox_id)
        {
            return Ok(k.clone());
        }
        let ix = self.index()?;
        let row = ix.mailbox_by_id(mailbox_id)?.ok_or_else(|| {
            keys::unwrap_err(&self.dir, format!("mailbox row {mailbox_id} (missing)"))
        })?;
        if row.key_id == 0 {
            return Err(StoreError::Shredded {
                mailbox: format!("mailbox row {mailbox_id}"),
            });
        }
        let tk = self.tenant_key(&ix, row.tenant_id)?;
        let key = self.unwrap_mailbox_key(&tk, row.id, row.key_id, &row.key_wrapped)?;
        drop(ix);
        self.cache_key(mailbox_id, row.key_id, &key);
        Ok((row.key_id, key))
    }

    fn cache_key(&self, mailbox_id: u64, key_id: u32, key: &Key) {
        self.mailbox_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(mailbox_id, (key_id, key.clone()));
    }

    /// Finds or creates the tenant row of `domain`: `(row id, tenant key)`.
    pub(crate) fn tenant_for_write(
        &self,
        ix: &Index,
        domain: &str,
    ) -> Result<(u64, Key), StoreError> {
        let tmac = self.keys.name_mac(b't', domain);
        match ix.tenant_by_mac(&tmac)? {
            Some(t) => Ok((t.id, self.tenant_key(ix, t.id)?)),
            None => {
                let id = ix.next_id("tenants")?;
                let key = Key::random();
                let aad = keys::wrap_aad(keys::AAD_TENANT, &self.volume_id, Some(id));
                let wrapped = keys::wrap_key(&self.keys.vmk, keys::random_nonce(), &aad, &key);
                let enc = self.keys.seal_name(&self.volume_id, b't', domain);
                ix.insert_tenant(id, &tmac, &enc, &wrapped)?;
                Ok((id, key))
            }
        }
    }

    /// Finds or creates the tenant and mailbox rows of `mailbox`, and the key a session
    /// writes with. For a tenant with a customer key that is a NEW generation wrapped to
    /// the tenant's public key (the store cannot unwrap an earlier one), kept only by the
    /// session; with it comes the mailbox's index base key.
    pub(crate) fn mailbox_for_write(&self, mailbox: &MailboxAddr) -> Result<WriteKeys, StoreError> {
        let mac = self.keys.name_mac(b'm', mailbox.as_str());
        let mut ix = self.index()?;
        let existing = ix.mailbox_by_mac(&mac)?;
        if let Some(row) = &existing {
            if row.key_id == 0 {
                return Err(StoreError::Shredded {
                    mailbox: mailbox.to_string(),
                });
            }
        }
        let tenant_id = match &existing {
            Some(row) => row.tenant_id,
            None => self.tenant_for_write(&ix, mailbox.domain())?.0,
        };
        if let Some(ck) = self.customer_key(&ix, tenant_id)? {
            self.refuse_while_converting(&ix, tenant_id, &ck, mailbox.domain())?;
            let (id, key) = match &existing {
                Some(row) => {
                    let (new_id, wrapped, key) = self.next_customer_key(&ix, &ck, row, mailbox)?;
                    ix.rotate_mailbox(row.id, (row.key_id, &row.key_wrapped), new_id, &wrapped)?;
                    ((row.id, new_id), key)
                }
                None => {
                    let key = Key::random();
                    let id = ix.next_id("mailboxes")?;
                    let aad = crate::tenant_key::ck_wrap_aad(&self.volume_id, id, 1);
                    let wrapped = self.wrap_to_tenant(&ck, &aad, &key)?;
                    let enc = self.keys.seal_name(&self.volume_id, b'm', mailbox.as_str());
                    ix.insert_mailbox(id, tenant_id, &mac, &enc, 1, &wrapped)?;
                    ((id, 1), key)
                }
            };
            let base = self.ck_index_base(&ck, tenant_id, id.0)?;
            return Ok(WriteKeys {
                mailbox_id: id.0,
                key_id: id.1,
                key,
                index_base: Some(base),
            });
        }
        if let Some(row) = existing {
            drop(ix);
            let (key_id, key) = self.mailbox_key(row.id)?;
            return Ok(WriteKeys {
                mailbox_id: row.id,
                key_id,
                key,
                index_base: None,
            });
        }
        let tenant_key = self.tenant_key(&ix, tenant_id)?;
        let id = ix.next_id("mailboxes")?;
        let key = Key::random();
        let aad = keys::mailbox_wrap_aad(&self.volume_id, id, 1);
        let wrapped = keys::wrap_key(&tenant_key, keys::random_nonce(), &aad, &key);
        let enc = self.keys.seal_name(&self.volume_id, b'm', mailbox.as_str());
        ix.insert_mailbox(id, tenant_id, &mac, &enc, 1, &wrapped)?;
        drop(ix);
        self.cache_key(id, 1, &key);
        Ok(WriteKeys {
            mailbox_id: id,
            key_id: 1,
            key,
            index_base: None,
        })
    }

    /// HPKE-wraps a mailbox key generation to a tenant's registered public key.
    pub(crate) fn wrap_to_tenant(
        &self,
        ck: &crate::index::TenantKeyRow,
        aad: &[u8],
        key: &Key,
    ) -> Result<Vec<u8>, StoreError> {
        crate::tenant_key::wrap_to_public(&ck.public, crate::tenant_key::INFO_CK_WRAP, aad, key)
            .ok_or_else(|| StoreError::TenantKey {
                path: format!("customer key {}", ck.fingerprint).into(),
                reason: "the registered public key is not usable (a small-order point); register a new tenant key".into(),
            })
    }

    /// Decrypts a row's metadata into a [`StoredMessage`], caching mailbox keys in `keys`.
    pub(crate) fn stored_message(
        &self,
        mailbox: &MailboxAddr,
        r: &MessageRow,
        keys: &mut HashMap<(u64, u32), Key>,
    ) -> Result<StoredMessage, StoreError> {
        let unreadable = |reason: String| StoreError::MetaUnreadable {
            mailbox: mailbox.to_string(),
            id: r.id,
            reason,
        };
        let kid = (r.mailbox_id, r.key_id);
        if let std::collections::hash_map::Entry::Vacant(slot) = keys.entry(kid) {
            let k = self
                .key_for(r.mailbox_id, r.key_id, mailbox)
                .map_err(|e| unreadable(e.to_string()))?;
            slot.insert(k);
        }
        let mk = keys::message_key(&keys[&kid], &r.salt);
        let mut meta = keys::open_meta(&mk, &self.volume_id, r.mailbox_id, r.id, &r.meta_enc)
            .map_err(unreadable)?;
        if let Some(overlay) = &r.flags_enc {
            // A later mirror pass's flags, sealed under that session's generation.
            let fk = crate::tenant_key::flags_key_id(overlay)
                .ok_or_else(|| unreadable("flags overlay too short".into()))?;
            let gen = match keys.get(&(r.mailbox_id, fk)) {
                Some(k) => k.clone(),
                None => {
                    let k = self
                        .key_for(r.mailbox_id, fk, mailbox)
                        .map_err(|e| unreadable(e.to_string()))?;
                    keys.insert((r.mailbox_id, fk), k.clone());
                    k
                }
            };
            let flags =
                crate::tenant_key::open_flags(&gen, &self.volume_id, r.mailbox_id, r.id, overlay)
                    .ok_or_else(|| unreadable("flags overlay failed authentication".into()))?;
            meta.flags = mailferry_core::Flags::parse(&flags)
                .map_err(|e| unreadable(format!("flags overlay: {e}")))?;
        }
        Ok(StoredMessage {
            id: r.id,
            mailbox: mailbox.clone(),
            meta,
            loc: Location {
                mailbox_id: r.mailbox_id,
                key_id: r.key_id,
                segment: r.segment,
                offset: r.offset,
                record_len: r.record_len,
                salt: r.salt,
            },
        })
    }

    /// Streams one record through authentication to `out`.
    pub(crate) fn read_record(
        &self,
        msg: &StoredMessage,
        mailbox_key: &Key,
        out: &mut dyn Write,
    ) -> Result<(), StoreError> {
        let damaged = |reason: String| StoreError::MessageDamaged {
            folder: msg.meta.folder.to_string(),
            source_id: msg.meta.source_id.to_string(),
            id: msg.id,
            reason,
        };
        let loc = &msg.loc;
        let seg = segment::file_name(loc.segment);
        let expected_len = segment::record_len(msg.meta.size)
            .ok_or_else(|| damaged("size in metadata out of range".into()))?;
        if loc.record_len != expected_len {
            return Err(damaged(format!(
                "index says the record is {} bytes, a {}-byte message needs {expected_len}",
                loc.record_len, msg.meta.size
            )));
        }
        let path = self.segment_path(loc.segment);
        let mut f = self
            .open_segment(loc.segment)
            .map_err(|e| damaged(format!("segment {seg} cannot be opened: {e}")))?;
        let flen = f.len();
        let end = loc.offset.saturating_add(loc.record_len);
        if loc.offset < SEG_HEADER_LEN || end > flen {
            return Err(damaged(format!(
                "record at {}..{end} lies outside segment {seg} ({flen} bytes): segment truncated or index damaged",
                loc.offset
            )));
        }
        f.seek(SeekFrom::Start(loc.offset))
            .map_err(|e| StoreError::io(&path, e))?;
        let mut hb = [0u8; REC_HEADER_LEN];
        f.read_exact(&mut hb)
            .map_err(|e| StoreError::io(&path, e))?;
        let h = RecordHeader::parse(&hb)
            .map_err(|e| damaged(format!("record header in {seg}: {e}")))?;
        if h.message_id != msg.id
            || h.mailbox_id != loc.mailbox_id
            || h.salt != loc.salt
            || h.key_id != loc.key_id
        {
            return Err(damaged(format!(
                "record header at offset {} of {seg} belongs to another message (id {})",
                loc.offset, h.message_id
            )));
        }
        if h.plain_len != msg.meta.size {
            return Err(damaged(format!(
                "record holds {} bytes, metadata says {}",
                h.plain_len, msg.meta.size
            )));
        }
        let key = ChunkKey::new(&keys::message_key(mailbox_key, &h.salt));
        let ctx = ChunkContext {
            volume_id: self.volume_id,
            mailbox_id: loc.mailbox_id,
            message_id: msg.id,
        };
        let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; CHUNK_SIZE + TAG_LEN];
        for i in 0..h.chunk_count {
            let n = chunk::chunk_plain_len(h.plain_len, i) + TAG_LEN;
            f.read_exact(&mut buf[..n])
                .map_err(|e| StoreError::io(&path, e))?;
            let plain = chunk::open_chunk(&key, &ctx, i, i + 1 == h.chunk_count, &mut buf[..n])
                .map_err(|_| StoreError::ChunkAuth {
                    folder: msg.meta.folder.to_string(),
                    source_id: msg.meta.source_id.to_string(),
                    id: msg.id,
                    n: i,
                })?;
            sha.update(plain);
            out.write_all(plain).map_err(|e| StoreError::Output {
                id: msg.id,
                source: e,
            })?;
        }
        let got = hex::encode(sha.finish());
        if got != msg.meta.sha256 {
            return Err(damaged(format!(
                "SHA-256 of the decrypted body is {got}, metadata says {}",
                msg.meta.sha256
            )));
        }
        Ok(())
    }
}

/// Takes the exclusive advisory lock on `dir/volume.hdr`.
pub(crate) fn lock_header(dir: &Path) -> Result<File, StoreError> {
    let hdr_path = dir.join(HEADER_FILE);
    let lock = File::open(&hdr_path).map_err(|e| StoreError::io(&hdr_path, e))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Busy {
            path: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::io(&hdr_path, e)),
    }
}

/// A primary key slot for `cred` wrapping `vmk`; a missing key file is created. Returns
/// the slot and whether a key file was created.
fn new_primary_slot(
    volume_id: &[u8; 16],
    cred: &Credential,
    argon2: &Argon2Params,
    vmk: &Key,
) -> Result<(KeySlot, bool), StoreError> {
    match cred {
        Credential::KeyFile(path) => {
            let (kf, created) = match std::fs::symlink_metadata(path) {
                Ok(_) => (credential::read_key_file(path)?, false),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    (credential::create_key_file(path)?, true)
                }
                Err(e) => return Err(StoreError::io(path, e)),
            };
            Ok((KeySlot::key_file(volume_id, ROLE_PRIMARY, &kf, vmk), created))
        }
        Credential::Passphrase(path) => {
            let pass = credential::read_passphrase_file(path)?;
            let slot = KeySlot::passphrase(volume_id, &pass, argon2, vmk).map_err(|reason| {
                StoreError::KeyFile {
                    kind: "passphrase file",
                    path: path.clone(),
                    reason,
                }
            })?;
            Ok((slot, false))
        }
        Credential::RecoveryKey(path) => Err(StoreError::KeyFile {
            kind: "recovery key file",
            path: path.clone(),
            reason: "a recovery key cannot become the primary key; give a new key file or passphrase file".into(),
        }),
    }
}

/// Crash recovery: truncates every segment to the end of its last indexed record (the
/// index is the commit point), deletes segment files no index row references (they hold
/// nothing committed), reports segments shorter than the index says, and returns the
/// segments that can take more records.
fn recover_segments(
    dir: &Path,
    index: &Index,
    settings: &StoreSettings,
) -> Result<(Vec<FreeSegment>, RecoveryReport), StoreError> {
    let seg_dir = dir.join(SEGMENTS_DIR);
    let ends = index.segment_ends()?;
    let mut free = Vec::new();
    let mut report = RecoveryReport::default();
    let entries = std::fs::read_dir(&seg_dir).map_err(|e| StoreError::io(&seg_dir, e))?;
    let mut numbers = Vec::new();
    for e in entries {
        let e = e.map_err(|e| StoreError::io(&seg_dir, e))?;
        if let Some(n) = e.file_name().to_str().and_then(segment::parse_file_name) {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    for n in numbers {
        let path = seg_dir.join(segment::file_name(n));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        let len = f.metadata().map_err(|e| StoreError::io(&path, e))?.len();
        let end = ends.get(&n).copied();
        match end {
            Some(end) if len < end => {
                tracing::warn!(
                    segment = n,
                    len,
                    expected = end,
                    "segment shorter than the index says; run verify"
                );
                report.short_segments.push(ShortSegment {
                    segment: n,
                    len,
                    expected: end,
                });
                continue;
            }
            Some(end) if len > end => {
                tracing::info!(
                    segment = n,
                    from = len,
                    to = end,
                    "truncating uncommitted segment tail"
                );
                f.set_len(end)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| StoreError::io(&path, e))?;
                report.tails_truncated.push((n, len - end));
            }
            Some(_) => {}
            None => {
                // No row references the file, so it holds nothing committed: an ingest
                // segment that never committed, the output of a compaction that crashed
                // before its switch, or a compacted segment whose deletion a crash
                // interrupted. Deleting it loses nothing; its number is never reused.
                drop(f);
                tracing::info!(segment = n, len, "deleting segment no index row references");
                std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
                report.segments_removed.push(n);
                continue;
            }
        }
        let committed = end.unwrap_or(SEG_HEADER_LEN);
        if committed < settings.segment_max_bytes {
            free.push(FreeSegment {
                number: n,
                len: committed,
            });
        }
    }
    if !report.segments_removed.is_empty() {
        crate::sync_dir(&seg_dir)?;
    }
    Ok((free, report))
}

mod customer;

#[cfg(test)]
pub(crate) mod tests;
