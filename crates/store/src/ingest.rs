//! [`IngestSession`]: writes one mailbox's messages into the session's own segment, and
//! makes them durable in batches (one fdatasync, one SQLite transaction).
//!
//! A batch may also hold the changes of a mirror pass: [`IngestSession::delete`] and
//! [`IngestSession::set_flags`] are applied inside the same transaction, in seq order
//! relative to the batch's messages, and acknowledged with it (`Applied` / `NotFound`).
//!
//! Blocking and single-threaded: one session is driven by one thread. It does not decode
//! frames or touch sockets; the proxy maps wire frames onto `begin`/`write`/`finish`,
//! `delete` and `set_flags`. A message's metadata is the MESSAGE frame's own
//! [`MessageHeader`], from the wire to the index: there is no store-side copy of it.

use crate::audit_trail::{AuditItem, Change};
use crate::chunk::{self, ChunkContext, ChunkKey, Sealer};
use crate::dedup::DedupReader;
use crate::index::{Index, MessageRow};
use crate::keys::{self, Key};
use crate::segment::{self, RecordHeader, SEG_HEADER_LEN};
use crate::volume::{FreeSegment, Inner};
use crate::{StoreError, Volume, INDEX_FILE, SEGMENTS_DIR};
use mailferry_core::frame::{AckStatus, MessageHeader};
use mailferry_core::profile::CommitSettings;
use mailferry_core::{Flags, FolderName, MailboxAddr, MessageMeta, SourceId};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// What `finish` did with a message; it is acknowledged only after `commit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finished {
    /// Written; durable at the next commit.
    Pending {
        /// The client's sequence number.
        seq: u64,
    },
    /// Already stored or pending in this mailbox; nothing kept.
    Duplicate {
        /// The client's sequence number.
        seq: u64,
    },
}

struct SegWriter {
    number: u64,
    file: File,
    path: PathBuf,
    /// End of the last finished record (the file cursor may be past it while a message
    /// is open).
    len: u64,
    /// End of the last committed record.
    committed_len: u64,
}

struct OpenMessage {
    /// The MESSAGE frame's header as received: the store keeps the wire type itself.
    start: MessageHeader,
    id: u64,
    salt: [u8; 32],
    message_key: Key,
    sha: ring::digest::Context,
    /// Seals the body as it arrives; its `filled` is the body bytes received so far.
    sealer: Sealer,
    record_start: u64,
    record_len: u64,
    /// Customer-key mailboxes: SHA-256 of the record bytes as written (integrity checks
    /// without the tenant's key).
    record_sha: Option<ring::digest::Context>,
}

/// One change waiting for the commit.
struct Pending {
    seq: u64,
    op: Op,
}

// Pending ops are few per batch and moved once; boxing the row would cost an
// allocation per message on the hot path for no gain.
#[allow(clippy::large_enum_variant)]
enum Op {
    /// A finished message: its row, and what the audit log will say once it is committed.
    Message { row: MessageRow, audit: AuditItem },
    /// A message already stored or pending in this mailbox; nothing kept.
    Duplicate,
    /// Remove every message of this folder and source id.
    Delete {
        locator: [u8; 32],
        folder: FolderName,
        source_id: SourceId,
    },
    /// Replace the flags of every message of this folder and source id.
    SetFlags {
        locator: [u8; 32],
        folder: FolderName,
        source_id: SourceId,
        flags: Flags,
    },
}

/// A writer for one mailbox, used from one blocking thread. Messages go
/// `begin` → `write`* → `finish`; between messages, `delete` and `set_flags` queue the
/// changes of a mirror pass; `commit` makes every finished message and queued change
/// durable, in order, and returns the acknowledgements. Dropping a session discards
/// whatever was not committed.
pub struct IngestSession {
    inner: Arc<Inner>,
    timings: IngestTimings,
    mailbox: MailboxAddr,
    mailbox_id: u64,
    key_id: u32,
    mailbox_key: Key,
    dedup_mac: Key,
    locator_mac: Key,
    /// Customer-key mailboxes: the index base key (seals receipt leaves).
    index_base: Option<Key>,
    commit: CommitSettings,
    seg: Option<SegWriter>,
    /// Segments closed during this batch, waiting for their fdatasync.
    closed: Vec<SegWriter>,
    dir_dirty: bool,
    pending: Vec<Pending>,
    pending_dedup: HashSet<[u8; 32]>,
    /// Locators this session has asked to delete (in this batch or one still being
    /// committed): a message with one of them is never called a duplicate before its
    /// commit, since the copy it matches may be gone by then.
    deleted_locators: HashSet<[u8; 32]>,
    pending_bytes: u64,
    oldest: Option<Instant>,
    open: Option<OpenMessage>,
    failed: bool,
    /// The session's own read connection for dedup lookups, opened at the first
    /// `finish`: a lookup never waits for the index lock a commit holds.
    dedup_reader: Option<DedupReader>,
    /// The fencing number the session was opened with ([`Volume::fenced_session`]);
    /// every commit checks it is still the mailbox's.
    fence: Option<u64>,
}

impl std::fmt::Debug for IngestSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestSession")
            .field("mailbox", &self.mailbox)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// Where a session's time went, cumulative, in nanoseconds (for move reports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestTimings {
    /// SHA-256 of message bodies.
    pub hash_ns: u64,
    /// AES-256-GCM sealing of full chunks.
    pub encrypt_ns: u64,
    /// Appending sealed chunks to segment files (page cache; durability is the commit's).
    pub append_ns: u64,
}

/// Where one commit's time went, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitTimings {
    /// fdatasync of segments (and their directory).
    pub sync_ns: u64,
    /// The SQLite transaction.
    pub index_ns: u64,
    /// Appending and syncing the audit records.
    pub audit_ns: u64,
    /// Waiting for the offsite copy's upload round (0 without one).
    pub offsite_ns: u64,
}

/// One batch on its way to durability (see [`IngestSession::start_commit`]). `Send`, so
/// it can run on a thread of its own.
pub struct CommitJob {
    inner: Arc<Inner>,
    syncs: Vec<(PathBuf, File)>,
    sync_dir: Option<PathBuf>,
    mailbox: MailboxAddr,
    mailbox_id: u64,
    /// The session's key generation, so the common case needs no unwrap.
    key: (u32, Key),
    /// A customer-key mailbox: earlier generations cannot be unwrapped, so FLAGS write
    /// an overlay under this session's generation instead of re-sealing metadata.
    customer: bool,
    /// Every pending change in seq order.
    ops: Vec<Pending>,
    /// The session's fencing number: the transaction refuses the batch if the mailbox
    /// has a higher one by then.
    fence: Option<u64>,
}

/// What one commit did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    /// The acknowledgements, in the batch's order: `Stored` / `Duplicate` for messages,
    /// `Applied` / `NotFound` for deletions and flag changes.
    pub acks: Vec<(u64, AckStatus)>,
    /// Changes refused at commit time, with the reason (a flag change whose message's
    /// metadata cannot be decrypted); nothing of them was written, the rest of the batch
    /// was. They are not in `acks`.
    pub rejected: Vec<(u64, String)>,
    /// Where the time went.
    pub timings: CommitTimings,
}

impl CommitJob {
    /// fdatasync of the batch's segments (and their directory when a segment file was
    /// created), then one SQLite transaction. Returns the acknowledgements; a batch with
    /// deletions or flag changes should use [`CommitJob::run_outcome`], which also says
    /// which of them were refused.
    pub fn run(self) -> Result<Vec<(u64, AckStatus)>, StoreError> {
        self.run_outcome().map(|o| o.acks)
    }

    /// [`CommitJob::run`], also saying where the time went.
    pub fn run_timed(self) -> Result<(Vec<(u64, AckStatus)>, CommitTimings), StoreError> {
        self.run_outcome().map(|o| (o.acks, o.timings))
    }

    /// Makes the batch durable: fdatasync of its segments, then ONE SQLite transaction
    /// applying its changes in seq order (a DELETE removes what an earlier MESSAGE of the
    /// same batch stored; a FLAGS changes it), then the audit records of what the
    /// transaction did, appended and synced. The three steps are also callable one by
    /// one ([`CommitJob::sync`], [`SyncedJob::index`], [`IndexedJob::audit`]) so a
    /// pipeline can overlap one batch's index step with the next batch's fdatasync.
    pub fn run_outcome(self) -> Result<CommitOutcome, StoreError> {
        self.sync()?.index()?.audit()
    }

    /// Step 1 of 3: fdatasync of the batch's segments (and of their directory when a
    /// segment file was created). Nothing is acknowledged yet; a crash after this step
    /// leaves the records as an unreferenced tail that recovery truncates.
    pub fn sync(self) -> Result<SyncedJob, StoreError> {
        let t0 = Instant::now();
        for (path, f) in &self.syncs {
            f.sync_data().map_err(|e| StoreError::io(path, e))?;
        }
        if let Some(dir) = &self.sync_dir {
            crate::sync_dir(dir)?;
        }
        let mut out = CommitOutcome::default();
        out.timings.sync_ns = t0.elapsed().as_nanos() as u64;
        Ok(SyncedJob { job: self, out })
    }
}

/// A batch whose segment bytes are durable, waiting for its index transaction
/// ([`SyncedJob::index`]). Batches of one session must be indexed in the order they were
/// started.
pub struct SyncedJob {
    job: CommitJob,
    out: CommitOutcome,
}

impl SyncedJob {
    /// Step 2 of 3: ONE SQLite transaction applying the batch's changes in seq order.
    /// Only called once the records it points to are durable ([`CommitJob::sync`]), so
    /// a committed row never names bytes a crash could lose.
    ///
    /// A fenced session's batch first checks, inside the same transaction, that the
    /// mailbox's fencing number is still the session's: if a newer lease raised it, the
    /// transaction is rolled back, `session.fenced` is recorded and the batch fails with
    /// [`StoreError::Fenced`] (nothing of it may be acknowledged).
    pub fn index(self) -> Result<IndexedJob, StoreError> {
        let SyncedJob { mut job, mut out } = self;
        let t1 = Instant::now();
        let ops = std::mem::take(&mut job.ops);
        let mut changes = Vec::new();
        // A fenced batch always takes the transaction, even one of duplicates only:
        // nothing is acknowledged to a worker whose lease was taken over.
        if job.fence.is_some() || ops.iter().any(|p| !matches!(p.op, Op::Duplicate)) {
            let inner = job.inner.clone();
            let ix = inner.index()?;
            let tx = ix.begin_batch()?;
            if let Some(fence) = job.fence {
                let current = ix.fence(job.mailbox_id)?.unwrap_or(0);
                if current > fence {
                    drop(tx);
                    drop(ix);
                    return Err(job.fenced(fence, current));
                }
            }
            for p in &ops {
                job.apply(&ix, p, &mut out, &mut changes)?;
            }
            tx.commit().map_err(|e| StoreError::Index {
                path: ix.path().to_path_buf(),
                source: e,
            })?;
        } else {
            out.acks = ops.iter().map(|p| (p.seq, AckStatus::Duplicate)).collect();
        }
        out.timings.index_ns = t1.elapsed().as_nanos() as u64;
        Ok(IndexedJob {
            inner: job.inner,
            changes,
            out,
            fence: job.fence,
        })
    }
}

/// A batch whose rows are committed, waiting for its audit records
/// ([`IndexedJob::audit`]). Its acknowledgements may be sent only after that.
pub struct IndexedJob {
    inner: Arc<Inner>,
    changes: Vec<Change>,
    out: CommitOutcome,
    fence: Option<u64>,
}

impl IndexedJob {
    /// Step 3 of 3: appends and syncs the audit records of what the transaction did, and
    /// returns the acknowledgements. Records come only after the transaction: the log
    /// never describes a change that is not durable (recovery at open fills the other
    /// gap, a committed change without its record).
    pub fn audit(self) -> Result<CommitOutcome, StoreError> {
        let IndexedJob {
            inner,
            changes,
            mut out,
            fence,
        } = self;
        let t2 = Instant::now();
        inner.audit.changes(&changes, fence)?;
        out.timings.audit_ns = t2.elapsed().as_nanos() as u64;
        // With an offsite copy, the acknowledgements wait for the upload round that
        // covers this batch (docs/volume-format.md, "Object storage").
        let t3 = Instant::now();
        inner.flush_offsite()?;
        out.timings.offsite_ns = t3.elapsed().as_nanos() as u64;
        Ok(out)
    }
}

impl CommitJob {
    /// The batch was refused by the fence check: records `session.fenced` (best effort:
    /// the refusal stands even if the record cannot be written) and says why.
    fn fenced(&self, fence: u64, current: u64) -> StoreError {
        let audit = &self.inner.audit;
        let data = crate::audit_trail::fenced_data(
            &audit.mailbox_pseudonym(self.mailbox.as_str()),
            fence,
            current,
            crate::audit_trail::FencedAt::Commit,
        );
        if let Err(e) = audit.event("session.fenced", data) {
            tracing::warn!(error = %e, "session.fenced not recorded");
        }
        StoreError::Fenced {
            mailbox: self.mailbox.to_string(),
            fence,
            current,
        }
    }

    /// Applies one change inside the batch's transaction.
    fn apply(
        &mut self,
        ix: &Index,
        p: &Pending,
        out: &mut CommitOutcome,
        changes: &mut Vec<Change>,
    ) -> Result<(), StoreError> {
        let seq = p.seq;
        match &p.op {
            Op::Duplicate => out.acks.push((seq, AckStatus::Duplicate)),
            Op::Message { row, audit } => {
                // A row the index refuses (UNIQUE dedup) is a duplicate committed by an
                // earlier batch or another session: its bytes stay as an unreferenced gap.
                if ix.insert_message(row)? {
                    out.acks.push((seq, AckStatus::Stored));
                    changes.push(Change::Stored(audit.clone()));
                } else {
                    out.acks.push((seq, AckStatus::Duplicate));
                }
            }
            Op::Delete {
                locator,
                folder,
                source_id,
            } => {
                let mut ids = Vec::new();
                for (r, meta) in self.rows_of(ix, locator, folder, source_id)? {
                    let (sha256, size) = match meta {
                        Ok(m) => (m.sha256, m.size),
                        // Unreadable metadata does not keep a message the source deleted
                        // from going; its record then lacks the digest.
                        Err(_) => (String::new(), 0),
                    };
                    changes.push(Change::Deleted(
                        self.audit_item(r.id, folder, source_id, sha256, size),
                    ));
                    ids.push(r.id);
                }
                ix.delete_messages(self.mailbox_id, &ids)?;
                out.acks.push((seq, found(!ids.is_empty())));
            }
            Op::SetFlags {
                locator,
                folder,
                source_id,
                flags,
            } => {
                let mut updates = Vec::new();
                for (r, meta) in self.rows_of(ix, locator, folder, source_id)? {
                    let mut meta = match meta {
                        Ok(m) => m,
                        Err(_) if self.customer => {
                            // Sealed under a generation only the tenant can unwrap.
                            MessageMeta {
                                folder: folder.clone(),
                                source_id: source_id.clone(),
                                flags: flags.clone(),
                                internal_date: 0,
                                size: 0,
                                sha256: String::new(),
                            }
                        }
                        Err(reason) => {
                            out.rejected.push((
                                seq,
                                format!(
                                    "flags of {folder}/{source_id} not changed: message id {} has unreadable metadata ({reason}); run `volume verify`",
                                    r.id
                                ),
                            ));
                            return Ok(());
                        }
                    };
                    meta.flags = flags.clone();
                    let enc = if self.customer {
                        // The overlay wins over the sealed metadata at read time, so
                        // every FLAGS of a customer-key mailbox writes one.
                        crate::tenant_key::seal_flags(
                            &self.key.1,
                            self.key.0,
                            keys::random32(),
                            &self.inner.volume_id,
                            self.mailbox_id,
                            r.id,
                            flags.as_str(),
                        )
                    } else {
                        let mk = keys::message_key(&self.key_of(ix, r.key_id)?, &r.salt);
                        keys::reseal_meta(&mk, &self.inner.volume_id, self.mailbox_id, r.id, &meta)
                    };
                    updates.push((r.id, enc, meta));
                }
                let item = format!("{folder}/{source_id}");
                let flags_p = self.inner.audit.flags_pseudonym(&item, flags.as_str());
                for (id, enc, meta) in &updates {
                    if self.customer {
                        ix.update_flags_enc(*id, enc)?;
                    } else {
                        ix.update_meta(*id, enc)?;
                    }
                    changes.push(Change::Flags(
                        self.audit_item(*id, folder, source_id, meta.sha256.clone(), meta.size),
                        flags_p.clone(),
                    ));
                }
                out.acks.push((seq, found(!updates.is_empty())));
            }
        }
        Ok(())
    }

    /// The rows with `locator`, each with its decrypted metadata (or why it is
    /// unreadable). A row whose readable metadata names another item is left out: the
    /// index was tampered with (locators swapped), and this change is not about it.
    fn rows_of(
        &mut self,
        ix: &Index,
        locator: &[u8; 32],
        folder: &FolderName,
        source_id: &SourceId,
    ) -> Result<Vec<RowWithMeta>, StoreError> {
        let mut out = Vec::new();
        for r in ix.messages_by_locator(self.mailbox_id, locator)? {
            if self.customer && r.key_id != self.key.0 {
                out.push((r, Err("sealed for the tenant".into())));
                continue;
            }
            let meta = match self.key_of(ix, r.key_id) {
                Ok(k) => keys::open_meta(
                    &keys::message_key(&k, &r.salt),
                    &self.inner.volume_id,
                    self.mailbox_id,
                    r.id,
                    &r.meta_enc,
                ),
                Err(e) => Err(e.to_string()),
            };
            if let Ok(m) = &meta {
                if m.folder != *folder || m.source_id != *source_id {
                    tracing::warn!(
                        message = r.id,
                        "index row's locator does not match its metadata; left alone, run `volume verify`"
                    );
                    continue;
                }
            }
            out.push((r, meta));
        }
        Ok(out)
    }

    /// Generation `key_id` of the mailbox key (with the index already locked).
    fn key_of(&mut self, ix: &Index, key_id: u32) -> Result<Key, StoreError> {
        if self.key.0 == key_id {
            return Ok(self.key.1.clone());
        }
        self.inner
            .key_for_in(ix, self.mailbox_id, key_id, &self.mailbox)
    }

    fn audit_item(
        &self,
        message_id: u64,
        folder: &FolderName,
        source_id: &SourceId,
        sha256: String,
        size: u64,
    ) -> AuditItem {
        AuditItem {
            message_id,
            mailbox: self.inner.audit.mailbox_pseudonym(self.mailbox.as_str()),
            item: self
                .inner
                .audit
                .item_pseudonym(&format!("{folder}/{source_id}")),
            sha256,
            size,
        }
    }
}

/// A message row and its decrypted metadata, or why that failed.
type RowWithMeta = (MessageRow, Result<MessageMeta, String>);

fn found(any: bool) -> AckStatus {
    if any {
        AckStatus::Applied
    } else {
        AckStatus::NotFound
    }
}

// === impl Volume: sessions ===

impl Volume {
    /// A writer for one mailbox; creates tenant (= mailbox domain) and mailbox keys on
    /// first use. Each session appends to its own segment file(s), so several sessions
    /// can write at once.
    pub fn session(
        &self,
        mailbox: &MailboxAddr,
        commit: &CommitSettings,
    ) -> Result<IngestSession, StoreError> {
        let w = self.inner.mailbox_for_write(mailbox)?;
        // The dedup key comes from the oldest generation the mailbox still holds
        // (generation 1 unless a re-encryption dropped it and re-keyed every dedup
        // value), so that a rotated mailbox still recognises messages stored before;
        // a customer-key mailbox's from its index base key, which the store keeps.
        let dedup_base = match &w.index_base {
            Some(b) => b.clone(),
            None => {
                let oldest = self.inner.index()?.oldest_key_id(w.mailbox_id)?;
                if oldest == w.key_id {
                    w.key.clone()
                } else {
                    self.inner.key_for(w.mailbox_id, oldest, mailbox)?
                }
            }
        };
        let mut s = IngestSession::new(
            self.inner.clone(),
            mailbox.clone(),
            w.mailbox_id,
            w.key_id,
            w.key,
            &dedup_base,
            commit.clone(),
        );
        s.index_base = w.index_base;
        Ok(s)
    }

    /// [`Volume::session`] for a session that writes under a lease with fencing number
    /// `fence` (docs/wire-protocol.md §3.7). The fence is checked and recorded before the
    /// session is returned: lower than the mailbox's → [`StoreError::Fenced`] and
    /// `session.fenced` in the audit log, nothing written; otherwise it becomes the
    /// mailbox's (durably, if higher), `session.opened` is recorded, and every commit of
    /// the session checks it again in its own transaction. `move_id` is the OPEN frame's,
    /// for the record.
    pub fn fenced_session(
        &self,
        mailbox: &MailboxAddr,
        commit: &CommitSettings,
        move_id: &str,
        fence: u64,
    ) -> Result<IngestSession, StoreError> {
        let mut s = self.session(mailbox, commit)?;
        let audit = &self.inner.audit;
        let pseudonym = audit.mailbox_pseudonym(mailbox.as_str());
        let before = self.inner.index()?.raise_fence(s.mailbox_id, fence)?;
        match before {
            Some(current) if current > fence => {
                let data = crate::audit_trail::fenced_data(
                    &pseudonym,
                    fence,
                    current,
                    crate::audit_trail::FencedAt::Open,
                );
                audit.event("session.fenced", data)?;
                Err(StoreError::Fenced {
                    mailbox: mailbox.to_string(),
                    fence,
                    current,
                })
            }
            _ => {
                audit.event(
                    "session.opened",
                    crate::audit_trail::opened_data(&pseudonym, move_id, fence),
                )?;
                s.fence = Some(fence);
                Ok(s)
            }
        }
    }

    /// Raises `mailbox`'s fencing number to `fence` without opening a session (a newer
    /// lease asks for a mailbox another session holds: the holder can then commit no
    /// more). Refused with [`StoreError::Fenced`] if the mailbox already has a higher
    /// one. Nothing is recorded in the audit log here: the holder's refusal is, when it
    /// happens, and the new session's `session.opened` when it starts.
    pub fn raise_fence(&self, mailbox: &MailboxAddr, fence: u64) -> Result<(), StoreError> {
        let w = self.inner.mailbox_for_write(mailbox)?;
        match self.inner.index()?.raise_fence(w.mailbox_id, fence)? {
            Some(current) if current > fence => Err(StoreError::Fenced {
                mailbox: mailbox.to_string(),
                fence,
                current,
            }),
            _ => Ok(()),
        }
    }

    /// The mailbox's fencing number: the highest a session opened it with (`None` if no
    /// fenced session ever did, or the volume does not hold the mailbox).
    pub fn fence_of(&self, mailbox: &MailboxAddr) -> Result<Option<u64>, StoreError> {
        let mac = self.inner.keys.name_mac(b'm', mailbox.as_str());
        let ix = self.inner.index()?;
        match ix.mailbox_by_mac(&mac)? {
            Some(row) => ix.fence(row.id),
            None => Ok(None),
        }
    }
}

// === impl IngestSession ===

impl IngestSession {
    fn new(
        inner: Arc<Inner>,
        mailbox: MailboxAddr,
        mailbox_id: u64,
        key_id: u32,
        mailbox_key: Key,
        dedup_base: &Key,
        commit: CommitSettings,
    ) -> Self {
        let dedup_mac = keys::dedup_mac_key(dedup_base);
        let locator_mac = keys::locator_mac_key(dedup_base);
        IngestSession {
            inner,
            timings: IngestTimings::default(),
            mailbox,
            mailbox_id,
            key_id,
            mailbox_key,
            dedup_mac,
            locator_mac,
            index_base: None,
            commit,
            seg: None,
            closed: Vec::new(),
            dir_dirty: false,
            pending: Vec::new(),
            pending_dedup: HashSet::new(),
            deleted_locators: HashSet::new(),
            pending_bytes: 0,
            oldest: None,
            open: None,
            failed: false,
            dedup_reader: None,
            fence: None,
        }
    }

    /// Where this session's time went so far.
    pub fn timings(&self) -> IngestTimings {
        self.timings
    }

    fn misuse(&self, reason: &str) -> StoreError {
        StoreError::SessionMisuse {
            mailbox: self.mailbox.to_string(),
            reason: reason.to_string(),
        }
    }

    fn check_usable(&self) -> Result<(), StoreError> {
        if self.failed {
            return Err(self.misuse("an earlier commit or write failed; start a new session and resend what was not acknowledged"));
        }
        Ok(())
    }

    /// True if a committed message of this mailbox has this dedup value (read on the
    /// session's own connection, not under the index lock).
    fn dedup_committed(&mut self, dedup: &[u8; 32]) -> Result<bool, StoreError> {
        let reader = match &mut self.dedup_reader {
            Some(r) => r,
            None => self
                .dedup_reader
                .insert(DedupReader::open(&self.inner.dir.join(INDEX_FILE))?),
        };
        reader.exists(self.mailbox_id, dedup)
    }

    /// Starts a message described by its MESSAGE frame's header. Error if a message is
    /// already open.
    pub fn begin(&mut self, start: MessageHeader) -> Result<(), StoreError> {
        self.check_usable()?;
        if let Some(o) = &self.open {
            return Err(self.misuse(&format!(
                "begin(seq {}) while message seq {} is still open; finish or abort it first",
                start.seq, o.start.seq
            )));
        }
        let Some(record_len) = segment::record_len(start.size).filter(|l| *l < i64::MAX as u64)
        else {
            return Err(StoreError::Rejected {
                seq: start.seq,
                reason: format!("declared size {} is too large", start.size),
            });
        };
        self.ensure_segment(record_len)?;
        let id = self.inner.next_message_id.fetch_add(1, Ordering::Relaxed);
        let salt = keys::random32();
        let message_key = keys::message_key(&self.mailbox_key, &salt);
        let header = RecordHeader {
            key_id: self.key_id,
            message_id: id,
            mailbox_id: self.mailbox_id,
            salt,
            plain_len: start.size,
            chunk_count: chunk::chunk_count(start.size),
        };
        let seg = self.seg.as_mut().expect("ensure_segment opened one");
        let record_start = seg.len;
        let hb = header.encode();
        let record_sha = self.index_base.as_ref().map(|_| {
            let mut c = ring::digest::Context::new(&ring::digest::SHA256);
            c.update(&hb);
            c
        });
        if let Err(e) = seg.file.write_all(&hb) {
            let err = StoreError::io(&seg.path, e);
            self.rollback(record_start);
            return Err(err);
        }
        let ctx = ChunkContext {
            volume_id: self.inner.volume_id,
            mailbox_id: self.mailbox_id,
            message_id: id,
        };
        self.open = Some(OpenMessage {
            sealer: Sealer::new(ChunkKey::new(&message_key), ctx, start.size),
            message_key,
            start,
            id,
            salt,
            sha: ring::digest::Context::new(&ring::digest::SHA256),
            record_start,
            record_len,
            record_sha,
        });
        Ok(())
    }

    /// Appends body bytes (any length). Error if the total exceeds the declared size;
    /// the message is then rolled back and closed (`Rejected`).
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.check_usable()?;
        let Some(o) = self.open.as_mut() else {
            return Err(self.misuse("write() with no open message; call begin first"));
        };
        let got = o.sealer.filled() + data.len() as u64;
        if got > o.start.size {
            let (seq, size, start) = (o.start.seq, o.start.size, o.record_start);
            self.open = None;
            self.rollback(start);
            return Err(StoreError::Rejected {
                seq,
                reason: format!(
                    "received at least {got} body bytes, more than the declared size {size}"
                ),
            });
        }
        let seg = self
            .seg
            .as_mut()
            .expect("a segment is open while a message is");
        let mut rest = data;
        let t = &mut self.timings;
        // The size check above keeps every piece within the declared length, so `fill`
        // always takes something.
        while !rest.is_empty() {
            let take = o.sealer.fill(rest);
            let t0 = Instant::now();
            o.sha.update(&rest[..take]);
            t.hash_ns += t0.elapsed().as_nanos() as u64;
            rest = &rest[take..];
            // A full chunk is sealed at once unless it is the last, which is sealed (with
            // the last flag) by finish().
            if o.sealer.chunk_ready() {
                let t0 = Instant::now();
                let rs = &mut o.record_sha;
                let r = o.sealer.seal_chunk(|sealed| {
                    let t1 = Instant::now();
                    t.encrypt_ns += (t1 - t0).as_nanos() as u64;
                    if let Some(c) = rs.as_mut() {
                        c.update(sealed);
                    }
                    let r = seg.file.write_all(sealed);
                    t.append_ns += t1.elapsed().as_nanos() as u64;
                    r
                });
                if let Err(e) = r {
                    let err = StoreError::io(&seg.path, e);
                    let start = o.record_start;
                    self.open = None;
                    self.rollback(start);
                    self.failed = true;
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    /// The SHA-256 of a message's body once all of it arrived, checked against the length
    /// it declared and the digest its sender claimed; the caller rolls back on error.
    fn received_sha256(o: &OpenMessage, claimed_sha256: [u8; 32]) -> Result<[u8; 32], StoreError> {
        let seq = o.start.seq;
        if o.sealer.filled() != o.start.size {
            return Err(StoreError::Rejected {
                seq,
                reason: format!(
                    "received {} body bytes, the message declared {}; the body was cut short",
                    o.sealer.filled(),
                    o.start.size
                ),
            });
        }
        let sha: [u8; 32] = o
            .sha
            .clone()
            .finish()
            .as_ref()
            .try_into()
            .expect("32 bytes");
        if sha != claimed_sha256 {
            return Err(StoreError::Rejected {
                seq,
                reason: format!(
                    "SHA-256 mismatch: received body hashes to {}, the sender claimed {}; the body was altered in transit, send it again",
                    hex::encode(sha),
                    hex::encode(claimed_sha256)
                ),
            });
        }
        Ok(sha)
    }

    /// Whether a finished message is already stored (or pending in this session).
    fn is_duplicate(&mut self, dedup: &[u8; 32], locator: &[u8; 32]) -> Result<bool, StoreError> {
        if self.pending_dedup.contains(dedup) {
            Ok(true)
        } else if self.deleted_locators.contains(locator) {
            // A DELETE of this session may remove the stored copy before this message
            // commits: write it, and let the commit's UNIQUE dedup decide.
            Ok(false)
        } else {
            self.dedup_committed(dedup)
        }
    }

    /// Ends the message. Recomputes the SHA-256 of the plaintext; a mismatch with
    /// `claimed_sha256` or a size different from the declared one gives
    /// `Err(StoreError::Rejected)` and the message's bytes are rolled back (segment
    /// truncated back to where the record began). A message with the same
    /// (folder, source id, sha256) already committed or pending in this mailbox gives
    /// `Finished::Duplicate` and is rolled back likewise. The session stays usable after
    /// a `Rejected`.
    pub fn finish(&mut self, claimed_sha256: [u8; 32]) -> Result<Finished, StoreError> {
        self.check_usable()?;
        let Some(mut o) = self.open.take() else {
            return Err(self.misuse("finish() with no open message; call begin first"));
        };
        let seq = o.start.seq;
        let sha = match Self::received_sha256(&o, claimed_sha256) {
            Ok(sha) => sha,
            Err(e) => {
                self.rollback(o.record_start);
                return Err(e);
            }
        };
        let folder = o.start.folder.as_str();
        let sid = o.start.source_id.as_str();
        let dedup = keys::dedup_key(&self.dedup_mac, folder, sid, &sha);
        let locator = keys::locator(&self.locator_mac, folder, sid);
        let dup = match self.is_duplicate(&dedup, &locator) {
            Ok(d) => d,
            Err(e) => {
                self.rollback(o.record_start);
                return Err(e);
            }
        };
        if dup {
            self.rollback(o.record_start);
            self.push_pending(
                Pending {
                    seq,
                    op: Op::Duplicate,
                },
                0,
            );
            return Ok(Finished::Duplicate { seq });
        }
        // Seal and write the last chunk.
        let seg = self
            .seg
            .as_mut()
            .expect("a segment is open while a message is");
        let t = &mut self.timings;
        let t0 = Instant::now();
        let rs = &mut o.record_sha;
        let written = o
            .sealer
            .seal_last(|sealed| {
                let t1 = Instant::now();
                t.encrypt_ns += (t1 - t0).as_nanos() as u64;
                if let Some(c) = rs.as_mut() {
                    c.update(sealed);
                }
                let r = seg.file.write_all(sealed);
                t.append_ns += t1.elapsed().as_nanos() as u64;
                r
            })
            .expect("the body length was checked above");
        if let Err(e) = written {
            let err = StoreError::io(&seg.path, e);
            self.rollback(o.record_start);
            self.failed = true;
            return Err(err);
        }
        seg.len = o.record_start + o.record_len;
        let meta = MessageMeta {
            folder: o.start.folder.clone(),
            source_id: o.start.source_id.clone(),
            flags: o.start.flags.clone(),
            internal_date: o.start.internal_date,
            size: o.start.size,
            sha256: hex::encode(sha),
        };
        let meta_enc = keys::seal_meta(
            &o.message_key,
            &self.inner.volume_id,
            self.mailbox_id,
            o.id,
            &meta,
        );
        let row = MessageRow {
            id: o.id,
            mailbox_id: self.mailbox_id,
            key_id: self.key_id,
            segment: seg.number,
            offset: o.record_start,
            record_len: o.record_len,
            salt: o.salt,
            meta_enc,
            dedup,
            locator: Some(locator),
            digest: o
                .record_sha
                .take()
                .map(|c| c.finish().as_ref().try_into().expect("32 bytes")),
            leaf_enc: self.index_base.as_ref().map(|b| {
                let leaf = mailferry_audit::merkle::leaf(&format!("{folder}/{sid}"), &meta.sha256);
                crate::tenant_key::seal_leaf(
                    b,
                    keys::random_nonce(),
                    &self.inner.volume_id,
                    self.mailbox_id,
                    o.id,
                    &leaf,
                )
            }),
            flags_enc: None,
        };
        self.pending_dedup.insert(dedup);
        let audit = AuditItem {
            message_id: o.id,
            mailbox: self.inner.audit.mailbox_pseudonym(self.mailbox.as_str()),
            item: self.inner.audit.item_pseudonym(&format!("{folder}/{sid}")),
            sha256: meta.sha256.clone(),
            size: meta.size,
        };
        self.push_pending(
            Pending {
                seq,
                op: Op::Message { row, audit },
            },
            o.record_len,
        );
        Ok(Finished::Pending { seq })
    }

    /// Asks to remove every stored message of `folder` + `source_id` from the mailbox
    /// (it was deleted at the source). Applied at the next commit, in seq order with the
    /// batch's messages: a message of the same folder and source id finished earlier in
    /// this session is removed too, one finished later is kept. Acknowledged `Applied`
    /// (at least one message removed) or `NotFound`. The records stay in their segments
    /// as unreferenced gaps until `volume compact`. Error if a message is open.
    pub fn delete(
        &mut self,
        seq: u64,
        folder: FolderName,
        source_id: SourceId,
    ) -> Result<(), StoreError> {
        self.check_usable()?;
        self.check_between_messages(seq, "delete")?;
        let locator = keys::locator(&self.locator_mac, folder.as_str(), source_id.as_str());
        // A copy finished earlier in this batch goes with this DELETE: an identical
        // message after it must be stored again, not called a duplicate of it.
        for p in &self.pending {
            if let Op::Message { row, .. } = &p.op {
                if row.locator == Some(locator) {
                    self.pending_dedup.remove(&row.dedup);
                }
            }
        }
        self.deleted_locators.insert(locator);
        self.push_pending(
            Pending {
                seq,
                op: Op::Delete {
                    locator,
                    folder,
                    source_id,
                },
            },
            0,
        );
        Ok(())
    }

    /// Asks to replace the flags of every stored message of `folder` + `source_id` (they
    /// changed at the source). Applied at the next commit, in seq order with the batch's
    /// messages; each message's metadata is sealed again under its own message key.
    /// Acknowledged `Applied` or `NotFound`, or refused at commit time (see
    /// [`CommitOutcome::rejected`]) if a matching message's metadata is unreadable.
    /// Error if a message is open.
    pub fn set_flags(
        &mut self,
        seq: u64,
        folder: FolderName,
        source_id: SourceId,
        flags: Flags,
    ) -> Result<(), StoreError> {
        self.check_usable()?;
        self.check_between_messages(seq, "set_flags")?;
        let locator = keys::locator(&self.locator_mac, folder.as_str(), source_id.as_str());
        self.push_pending(
            Pending {
                seq,
                op: Op::SetFlags {
                    locator,
                    folder,
                    source_id,
                    flags,
                },
            },
            0,
        );
        Ok(())
    }

    fn check_between_messages(&self, seq: u64, what: &str) -> Result<(), StoreError> {
        match &self.open {
            Some(o) => Err(self.misuse(&format!(
                "{what}(seq {seq}) while message seq {} is still open; finish or abort it first",
                o.start.seq
            ))),
            None => Ok(()),
        }
    }

    /// A newer lease (fencing number `current`) asked for the mailbox while this fenced
    /// session held it: drops the open message and every change not yet handed to a
    /// commit (nothing of them is acknowledged; their bytes are cut from the segment when
    /// the session is dropped), records `session.fenced` (`refused: takeover`) and
    /// returns the refusal to report. The session takes nothing more.
    pub fn taken_over(&mut self, current: u64) -> StoreError {
        self.abort();
        self.pending.clear();
        self.pending_dedup.clear();
        self.pending_bytes = 0;
        self.oldest = None;
        self.failed = true;
        let fence = self.fence.unwrap_or(0);
        let audit = &self.inner.audit;
        let data = crate::audit_trail::fenced_data(
            &audit.mailbox_pseudonym(self.mailbox.as_str()),
            fence,
            current,
            crate::audit_trail::FencedAt::Takeover,
        );
        if let Err(e) = audit.event("session.fenced", data) {
            tracing::warn!(error = %e, "session.fenced not recorded");
        }
        StoreError::Fenced {
            mailbox: self.mailbox.to_string(),
            fence,
            current,
        }
    }

    /// Drops the open message (if any) and rolls its bytes back.
    pub fn abort(&mut self) {
        if let Some(o) = self.open.take() {
            self.rollback(o.record_start);
        }
    }

    /// True when pending messages ≥ `commit.max_messages` or pending bytes ≥
    /// `commit.max_bytes`.
    pub fn should_commit(&self) -> bool {
        self.pending.len() >= self.commit.max_messages
            || self.pending_bytes >= self.commit.max_bytes
    }

    /// Body bytes (records) of the finished messages not yet committed.
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// When the oldest pending message finished; the caller enforces
    /// `commit.max_delay_ms`.
    pub fn oldest_pending(&self) -> Option<Instant> {
        self.oldest
    }

    /// Messages finished (stored or duplicate), deletions and flag changes not yet
    /// committed.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Makes every finished message durable and returns the acknowledgements: one
    /// fdatasync per touched segment, then one SQLite transaction. Equivalent to
    /// `start_commit()?.run()`; see [`IngestSession::commit_outcome`] for batches with
    /// deletions or flag changes.
    pub fn commit(&mut self) -> Result<Vec<(u64, AckStatus)>, StoreError> {
        self.commit_outcome().map(|o| o.acks)
    }

    /// [`IngestSession::commit`], also naming the changes refused at commit time.
    /// Equivalent to `start_commit()?.run_outcome()`.
    pub fn commit_outcome(&mut self) -> Result<CommitOutcome, StoreError> {
        let job = self.start_commit()?;
        job.run_outcome().inspect_err(|_| self.failed = true)
    }

    /// Hands the current batch to a [`CommitJob`] and starts a new batch at once, so the
    /// caller can keep writing while another thread waits for the disk. Nothing of the
    /// batch may be acknowledged before the job's `run` returns `Ok`. Run jobs of one
    /// session in the order they were started; if one fails, stop using the session.
    pub fn start_commit(&mut self) -> Result<CommitJob, StoreError> {
        self.check_usable()?;
        let has_rows = self
            .pending
            .iter()
            .any(|p| matches!(p.op, Op::Message { .. }));
        let mut syncs = Vec::new();
        if has_rows {
            for s in self.closed.iter().chain(self.seg.iter()) {
                if s.len > s.committed_len {
                    let f = s.file.try_clone().map_err(|e| StoreError::io(&s.path, e))?;
                    syncs.push((s.path.clone(), f));
                }
            }
        }
        let sync_dir = (has_rows && self.dir_dirty).then(|| {
            self.dir_dirty = false;
            self.inner.dir.join(SEGMENTS_DIR)
        });
        let ops = std::mem::take(&mut self.pending);
        self.closed.clear();
        if let Some(s) = self.seg.as_mut() {
            s.committed_len = s.len;
        }
        self.pending_dedup.clear();
        self.pending_bytes = 0;
        self.oldest = None;
        Ok(CommitJob {
            inner: self.inner.clone(),
            syncs,
            sync_dir,
            mailbox: self.mailbox.clone(),
            mailbox_id: self.mailbox_id,
            key: (self.key_id, self.mailbox_key.clone()),
            customer: self.index_base.is_some(),
            ops,
            fence: self.fence,
        })
    }

    fn push_pending(&mut self, p: Pending, bytes: u64) {
        self.pending.push(p);
        self.pending_bytes += bytes;
        self.oldest.get_or_insert_with(Instant::now);
    }

    /// Truncates the current segment back to `to` (the start of the rolled-back record).
    fn rollback(&mut self, to: u64) {
        let Some(seg) = self.seg.as_mut() else { return };
        let r = seg
            .file
            .set_len(to)
            .and_then(|_| seg.file.seek(SeekFrom::Start(to)));
        match r {
            Ok(_) => seg.len = to,
            Err(e) => {
                // The bytes stay as an unreferenced tail or gap; recovery at the next open
                // truncates a tail. Stop writing to this segment.
                tracing::warn!(segment = seg.number, error = %e, "rollback of a segment failed");
                self.failed = true;
            }
        }
    }

    /// Makes sure the current segment can take a record of `record_len` bytes, closing a
    /// full one and opening another if needed.
    fn ensure_segment(&mut self, record_len: u64) -> Result<(), StoreError> {
        let max = self.inner.settings.segment_max_bytes;
        if let Some(s) = &self.seg {
            // A record larger than a whole segment still goes in, alone.
            if s.len == SEG_HEADER_LEN || s.len + record_len <= max {
                return Ok(());
            }
            let s = self.seg.take().expect("checked");
            self.inner.segment_closed(s.number);
            if s.len > s.committed_len {
                self.closed.push(s);
            }
        }
        // A pooled segment too full for this record is left out of the pool (recovery at
        // the next open offers it again, unless an offsite copy sealed it).
        let mut left_out = Vec::new();
        let free = {
            let mut pool = self
                .inner
                .free_segments
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            std::iter::from_fn(|| pool.pop()).find(|f| {
                let fits = f.len == SEG_HEADER_LEN || f.len + record_len <= max;
                if !fits {
                    left_out.push(f.number);
                }
                fits
            })
        };
        for n in left_out {
            self.inner.segment_closed(n);
        }
        let seg = match free {
            Some(f) => self.reopen_segment(f)?,
            None => self.create_segment()?,
        };
        self.seg = Some(seg);
        Ok(())
    }

    fn reopen_segment(&mut self, f: FreeSegment) -> Result<SegWriter, StoreError> {
        let path = self.inner.segment_path(f.number);
        let mut file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        file.set_len(f.len)
            .and_then(|_| file.seek(SeekFrom::Start(f.len)))
            .map_err(|e| StoreError::io(&path, e))?;
        Ok(SegWriter {
            number: f.number,
            file,
            path,
            len: f.len,
            committed_len: f.len,
        })
    }

    fn create_segment(&mut self) -> Result<SegWriter, StoreError> {
        let (number, path, file) = self.inner.new_segment()?;
        self.dir_dirty = true;
        Ok(SegWriter {
            number,
            file,
            path,
            len: SEG_HEADER_LEN,
            // The header counts as committed: recovery rewrites a torn one.
            committed_len: SEG_HEADER_LEN,
        })
    }
}

impl Drop for IngestSession {
    fn drop(&mut self) {
        // Whatever was not committed is discarded now, so the segment can be handed to
        // the next session with a clean end.
        if let Some(s) = self.seg.take() {
            let clean = s.file.set_len(s.committed_len).is_ok();
            if clean && !self.failed && s.committed_len < self.inner.settings.segment_max_bytes {
                self.inner
                    .free_segments
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(FreeSegment {
                        number: s.number,
                        len: s.committed_len,
                    });
            } else {
                self.inner.segment_closed(s.number);
            }
        }
        for s in self.closed.drain(..) {
            let _ = s.file.set_len(s.committed_len);
        }
    }
}

#[cfg(test)]
mod tests;
