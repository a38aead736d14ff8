//! The agent's state directory: the move's identity, its source-side audit log, and the
//! checkpoint index built from that log.
//!
//! `move.json` names the move (id, mailbox, source) so every pass of the same move uses
//! the same id. `audit.jsonl` is the source side's hash-chained audit log
//! (`mailferry-audit`), and it is also the checkpoint: one `message.stored` or
//! `message.duplicate` record per acknowledged message, appended and fsynced after each
//! acknowledged batch. A message is only recorded once the store has said it is
//! durable. A crash can leave a torn last line, which is cut off at the next open: the
//! messages it described are simply sent again and the store recognises them as
//! duplicates, so every message ends up stored exactly once and the log always verifies.
//!
//! Reading a long log on every pass, and holding every acknowledged message in memory,
//! would make every pass cost the whole mailbox. So each synced batch is also applied to
//! `checkpoint.db` ([`db`], docs/checkpoint-index.md), a SQLite index bound to the log
//! by a mark; opening replays only the records after the mark, and the planner and the
//! listing read only the folders and messages they need ([`Checkpoint`]). The log stays
//! the source of truth: an index that is missing, damaged or does not fit the log is
//! rebuilt from the whole log, with a warning.
//!
//! The log's head is signed (docs/audit-log.md §10) with the source side's Ed25519 key,
//! `audit-sign.key` in the state directory (0600, created on first use), into
//! `audit.head`: when the log passes one of its checkpoints, at the end of every pass,
//! and when the state is closed after a pass that failed midway.

use crate::source::PriorItem;
use crate::AgentError;
use db::CheckpointDb;
use mailferry_audit::{AuditLog, HeadKeeper, HeadSigner, LogMark, LogSide, SignedHead};
use mailferry_core::{Flags, FolderName, MailboxAddr, MoveId, SourceId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

pub(crate) mod db;

pub use db::INDEX_FILE;

/// File name of the source-side audit log in the state directory.
pub const AUDIT_FILE: &str = "audit.jsonl";

/// File name of the source side's audit head signing key in the state directory.
pub const SIGNING_KEY_FILE: &str = "audit-sign.key";

/// The source side's signer of the state directory `dir` (which must exist): its key
/// file, created (owner-only, random) on first use.
pub fn head_signer(dir: &Path) -> Result<HeadSigner, AgentError> {
    let path = dir.join(SIGNING_KEY_FILE);
    HeadSigner::load_or_create(&path, LogSide::Source).map_err(|e| state_err(&path, e))
}

/// Identity of a move, kept across passes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MoveIdentity {
    /// The move's id.
    pub move_id: MoveId,
    /// Destination mailbox.
    pub mailbox: MailboxAddr,
    /// Source as first given.
    pub source: String,
    /// When the move was created, RFC 3339.
    pub created_at: String,
}

/// What the store acknowledged, as the checkpoint records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Newly stored.
    Stored,
    /// Already in the store.
    Duplicate,
    /// Removed at the destination because it is gone at the source.
    Deleted,
    /// Flags changed at the destination.
    Flags,
    /// Recognised by identity after the source renumbered it (UIDVALIDITY change):
    /// nothing was sent, the destination keeps it under its old id.
    Remapped,
    /// The destination no longer has it (an admin removed it there): forgotten here
    /// so the next pass sends it again.
    Forgotten,
}

impl EntryKind {
    /// The audit event name (`message.stored`, ...).
    pub fn event(&self) -> &'static str {
        match self {
            EntryKind::Stored => "message.stored",
            EntryKind::Duplicate => "message.duplicate",
            EntryKind::Deleted => "message.deleted",
            EntryKind::Flags => "message.flags",
            EntryKind::Remapped => "message.remapped",
            EntryKind::Forgotten => "message.forgotten",
        }
    }
}

/// One acknowledged change.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointEntry {
    /// What happened.
    pub kind: EntryKind,
    /// Folder.
    pub folder: FolderName,
    /// Source id now (for [`EntryKind::Remapped`]: the new id at the source).
    pub source_id: SourceId,
    /// The id the destination knows the message by (differs from `source_id` only after
    /// a remap).
    pub stored_as: SourceId,
    /// Content SHA-256, hex.
    pub sha256: String,
    /// Size.
    pub size: u64,
    /// Flags now.
    pub flags: Flags,
    /// Internal date.
    pub internal_date: i64,
    /// Identity across renumbering, if the source gives one.
    pub ident: Option<String>,
}

/// What the checkpoint knows of one message the destination holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acked {
    /// Content SHA-256, hex.
    pub sha256: String,
    /// The id the destination knows it by.
    pub stored_as: SourceId,
    /// What the source last told about it.
    pub prior: PriorItem,
}

/// One acknowledged message with its key (folder, current source id).
pub type AckedEntry = ((FolderName, SourceId), Acked);

/// Who acts on the source side: the agent run by this user on this host.
pub fn agent_actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("agent:{user}@{host}")
}

/// Read access to a checkpoint: what the destination holds, folder by folder. The
/// planner and the listing ask only for the folders and messages they need, so a pass
/// over a mostly unchanged mailbox never loads all of it.
pub trait Checkpoint {
    /// One message, by folder and current source id.
    fn get(&self, folder: &FolderName, id: &SourceId) -> Result<Option<Acked>, AgentError>;
    /// Every message of one folder, by current source id.
    fn folder(&self, folder: &FolderName) -> Result<HashMap<SourceId, Acked>, AgentError>;
    /// The same as a source sees them, sorted by id.
    fn prior_items(&self, folder: &FolderName)
        -> Result<BTreeMap<SourceId, PriorItem>, AgentError>;
    /// How many messages of `folder` have their own ids (not renamed ids,
    /// [`crate::renamed::renamed_id`]), and their bytes.
    fn plain_summary(&self, folder: &FolderName) -> Result<(u64, u64), AgentError>;
    /// Every folder with messages, and how many.
    fn folders(&self) -> Result<Vec<(FolderName, u64)>, AgentError>;
    /// The cursor the source gave for `folder` (a source folder name) at the end of the
    /// last clean pass.
    fn cursor(&self, folder: &FolderName) -> Result<Option<String>, AgentError>;
}

impl Checkpoint for CheckpointDb {
    fn get(&self, folder: &FolderName, id: &SourceId) -> Result<Option<Acked>, AgentError> {
        CheckpointDb::get(self, folder, id).map_err(|e| self.err(e))
    }
    fn folder(&self, folder: &FolderName) -> Result<HashMap<SourceId, Acked>, AgentError> {
        CheckpointDb::folder(self, folder).map_err(|e| self.err(e))
    }
    fn prior_items(
        &self,
        folder: &FolderName,
    ) -> Result<BTreeMap<SourceId, PriorItem>, AgentError> {
        CheckpointDb::prior_items(self, folder).map_err(|e| self.err(e))
    }
    fn plain_summary(&self, folder: &FolderName) -> Result<(u64, u64), AgentError> {
        CheckpointDb::plain_summary(self, folder).map_err(|e| self.err(e))
    }
    fn folders(&self) -> Result<Vec<(FolderName, u64)>, AgentError> {
        CheckpointDb::folders(self).map_err(|e| self.err(e))
    }
    fn cursor(&self, folder: &FolderName) -> Result<Option<String>, AgentError> {
        CheckpointDb::cursor(self, folder).map_err(|e| self.err(e))
    }
}

/// An open state directory.
pub struct StateDir {
    dir: PathBuf,
    /// The move this directory belongs to.
    pub identity: MoveIdentity,
    db: CheckpointDb,
    log: AuditLog,
    heads: HeadKeeper,
    /// Records in the log when it was opened: closing signs only what was appended since.
    opened_seq: u64,
    actor: String,
    replay: Replay,
}

/// How [`StateDir::open`] brought the checkpoint index up to date with the log.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Replay {
    /// The index was used as it was, after replaying the records after its mark.
    Tail {
        /// Records replayed after the index's mark.
        records: u64,
    },
    /// The index was rebuilt from the whole audit log.
    Full {
        /// Records replayed.
        records: u64,
        /// Why the index was not used (`None`: there was none).
        index_refused: Option<String>,
    },
}

fn state_err(path: &Path, reason: impl std::fmt::Display) -> AgentError {
    AgentError::State {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read_identity(id_path: &Path) -> Result<Option<MoveIdentity>, AgentError> {
    match fs::read(id_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| state_err(id_path, format!("unreadable: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(state_err(id_path, e)),
    }
}

/// Replays the whole log at `log_path` into an emptied `db`, bound to `mark`.
fn rebuild(
    db: &mut CheckpointDb,
    move_id: &str,
    log_path: &Path,
    mark: Option<&LogMark>,
) -> Result<u64, AgentError> {
    let records = match mailferry_audit::read_records(log_path) {
        Ok(r) => r,
        Err(mailferry_audit::AuditError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Vec::new()
        }
        Err(e) => return Err(state_err(log_path, e)),
    };
    db.reset(move_id).map_err(|e| db.err(e))?;
    db.apply(records.iter().map(|e| (e.event.as_str(), &e.data)), mark)
        .map_err(|e| db.err(e))?;
    Ok(records.len() as u64)
}

impl StateDir {
    /// Opens (or creates) the state of the move of `mailbox` from `source`.
    /// A state directory of another mailbox is refused, and so is one that another agent
    /// has open (the audit log is locked while a pass runs).
    pub fn open(dir: &Path, mailbox: &MailboxAddr, source: &str) -> Result<StateDir, AgentError> {
        mailferry_audit::private::create_dir_all(dir)
            .map_err(|e| state_err(dir, format!("cannot create: {e}")))?;
        mailferry_audit::private::warn_if_exposed(dir, "state directory");
        let id_path = dir.join("move.json");
        let log_path = dir.join(AUDIT_FILE);
        let (identity, created) = match read_identity(&id_path)? {
            Some(id) => {
                if &id.mailbox != mailbox {
                    return Err(state_err(
                        dir,
                        format!(
                            "this state directory belongs to the move of {}, not {mailbox}; \
                             use a separate --state per mailbox",
                            id.mailbox
                        ),
                    ));
                }
                (id, false)
            }
            None => {
                let id = MoveIdentity {
                    move_id: MoveId::random(),
                    mailbox: mailbox.clone(),
                    source: source.to_string(),
                    created_at: mailferry_core::rfc3339(mailferry_core::unix_now()),
                };
                write_atomic(
                    &id_path,
                    &serde_json::to_vec_pretty(&id).expect("serializable"),
                )?;
                (id, true)
            }
        };
        let move_id = identity.move_id.to_string();
        let index_path = dir.join(db::INDEX_FILE);
        let opened = CheckpointDb::open(&index_path);
        let mut refused = None;
        let mark = match &opened {
            Ok(db) => db.mark_for(&move_id).unwrap_or_else(|reason| {
                refused = Some(reason);
                None
            }),
            Err(_) => None,
        };
        let log = AuditLog::open_from(&log_path, mark.as_ref())
            .map_err(|e| locked_or(dir, &log_path, e))?;
        // The log is locked now: a second agent stopped above, so repairing the index
        // cannot pull it from under a running pass.
        let mut db = match opened {
            Ok(db) => db,
            Err(e) => {
                refused = Some(format!("unreadable ({e})"));
                for suffix in ["", "-wal", "-shm"] {
                    let _ = fs::remove_file(format!("{}{suffix}", index_path.display()));
                }
                CheckpointDb::open(&index_path).map_err(|e| state_err(&index_path, e))?
            }
        };
        if let Some(t) = log.repaired() {
            tracing::info!(
                path = %log_path.display(),
                cut = t.removed_bytes,
                "audit log had a torn tail from an interrupted pass; cut it off"
            );
        }
        let mut replay = None;
        if let Some(mark) = &mark {
            if log.resumed() {
                match mailferry_audit::read_records_after(&log_path, mark) {
                    Ok(tail) => {
                        db.apply(
                            tail.iter().map(|e| (e.event.as_str(), &e.data)),
                            log.mark().as_ref(),
                        )
                        .map_err(|e| db.err(e))?;
                        replay = Some(Replay::Tail {
                            records: tail.len() as u64,
                        });
                    }
                    Err(e) => refused = Some(e.to_string()),
                }
            } else {
                refused = Some(format!(
                    "it does not fit the audit log ({})",
                    log.mark_refused().unwrap_or("unknown reason")
                ));
            }
        }
        let replay = match replay {
            Some(r) => r,
            None => {
                if let Some(reason) = &refused {
                    tracing::warn!(
                        path = %index_path.display(),
                        %reason,
                        "checkpoint index not used; rebuilding it from the whole audit log \
                         (slower, nothing is lost)"
                    );
                }
                let records = rebuild(&mut db, &move_id, &log_path, log.mark().as_ref())?;
                Replay::Full {
                    records,
                    index_refused: refused,
                }
            }
        };
        let heads = HeadKeeper::new(head_signer(dir)?, &log);
        let mut state = StateDir {
            dir: dir.to_path_buf(),
            identity,
            db,
            heads,
            opened_seq: log.last_seq(),
            log,
            actor: agent_actor(),
            replay,
        };
        if created {
            let id = state.identity.clone();
            state.event(
                "move.created",
                json!({ "move_id": id.move_id.to_string(), "mailbox": id.mailbox.as_str(), "source": id.source }),
            )?;
        }
        Ok(state)
    }

    /// How [`StateDir::open`] brought the checkpoint up to date.
    pub fn replay(&self) -> &Replay {
        &self.replay
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The checkpoint, for the planner and the listing.
    pub fn checkpoint(&self) -> &dyn Checkpoint {
        &self.db
    }

    /// What the checkpoint knows of this message, if the destination holds it.
    pub fn acked(&self, folder: &FolderName, id: &SourceId) -> Result<Option<Acked>, AgentError> {
        Checkpoint::get(&self.db, folder, id)
    }

    /// True if the store already acknowledged this message in an earlier pass.
    pub fn is_done(&self, folder: &FolderName, id: &SourceId) -> Result<bool, AgentError> {
        self.acked(folder, id).map(|a| a.is_some())
    }

    /// Every message the destination holds, by folder and current source id, sorted.
    /// Costs the whole checkpoint: for tests and tools, not for passes.
    pub fn all_acked(&self) -> Result<Vec<AckedEntry>, AgentError> {
        self.db.all().map_err(|e| self.db.err(e))
    }

    /// The source-side receipt: Merkle root over every message the destination holds
    /// (`folder/id-at-destination` and content digest) and how many it covers. Cached
    /// in the index between passes, recomputed from stored leaves after a change.
    pub fn receipt(&mut self) -> Result<(String, u64), AgentError> {
        self.db.receipt().map_err(|e| self.db.err(e))
    }

    /// Records acknowledged changes and makes the records durable (one fsync), then
    /// brings the index up to them.
    pub fn record(&mut self, entries: &[CheckpointEntry]) -> Result<(), AgentError> {
        let path = self.dir.join(AUDIT_FILE);
        let records: Vec<(String, serde_json::Value)> = entries
            .iter()
            .map(|e| (e.kind.event().to_string(), entry_data(e)))
            .collect();
        self.log
            .append_batch(
                &self.actor,
                records.iter().map(|(k, v)| (k.clone(), v.clone())),
            )
            .map_err(|e| state_err(&path, e))?;
        self.log.sync().map_err(|e| state_err(&path, e))?;
        self.heads.sign_at_checkpoint(&self.log);
        self.index(&records)
    }

    /// Signs the log's head now (the end of a pass) and returns it; `None` if signing is
    /// stopped because `audit.head` is evidence of a cut or replaced log (a warning
    /// says which).
    pub fn sign_head(&mut self) -> Result<Option<SignedHead>, AgentError> {
        self.heads
            .sign(&self.log)
            .map_err(|e| state_err(&self.dir.join(AUDIT_FILE), e))
    }

    /// Applies synced records to the index and moves its mark to the log's end.
    fn index(&mut self, records: &[(String, serde_json::Value)]) -> Result<(), AgentError> {
        let mark = self.log.mark();
        let applied = records
            .iter()
            .filter_map(|(k, v)| v.as_object().map(|o| (k.as_str(), o)));
        self.db
            .apply(applied, mark.as_ref())
            .map_err(|e| self.db.err(e))
    }

    /// Records the per-folder cursors of a completed pass (replacing the earlier ones;
    /// a folder absent from `cursors` has none any more).
    pub fn record_cursors(
        &mut self,
        cursors: &BTreeMap<FolderName, String>,
    ) -> Result<(), AgentError> {
        let data = json!({
            "cursors": cursors.iter().map(|(f, c)| (f.as_str().to_string(), c.clone())).collect::<BTreeMap<_, _>>()
        });
        self.event("pass.cursors", data)
    }

    /// Appends one event to the source-side audit log and syncs it.
    pub fn event(&mut self, event: &str, data: serde_json::Value) -> Result<(), AgentError> {
        let path = self.dir.join(AUDIT_FILE);
        self.log
            .append(&self.actor, event, data.clone())
            .and_then(|_| self.log.sync())
            .map_err(|e| state_err(&path, e))?;
        self.index(&[(event.to_string(), data)])
    }

    /// Writes a file in the state directory atomically (temp, fsync, rename).
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<(), AgentError> {
        write_atomic(&self.dir.join(name), bytes)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        // A pass that failed midway still signs what it recorded. Best effort: records
        // left unsigned are reported by `audit verify`, not lost.
        if self.log.is_synced()
            && self.log.last_seq() > self.opened_seq
            && self.heads.behind(&self.log)
        {
            if let Err(e) = self.heads.sign(&self.log) {
                tracing::warn!(error = %e, "source audit head not signed when the state closed");
            }
        }
    }
}

fn locked_or(dir: &Path, log_path: &Path, e: mailferry_audit::AuditError) -> AgentError {
    match e {
        mailferry_audit::AuditError::Locked { .. } => state_err(
            dir,
            "another mailferry agent is running a pass of this move right now (its \
             checkpoint is locked); wait for it to finish or stop it, then run again",
        ),
        e => state_err(log_path, e),
    }
}

// === impl CheckpointView ===

/// The checkpoint of a state directory, read without changing anything: no file or
/// directory is created, nothing is locked, a torn last line is ignored rather than
/// cut. For `move --dry-run`, which may run while a pass of the same move runs. It
/// copies the index into memory when the index fits the log, and applies the records
/// after its mark there; otherwise (no index, or a pass is writing it) it replays the
/// whole log into memory.
pub struct CheckpointView {
    /// The move this directory belongs to.
    pub identity: MoveIdentity,
    db: CheckpointDb,
}

impl std::fmt::Debug for CheckpointView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointView")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl CheckpointView {
    /// Reads the checkpoint of the move of `mailbox` in `dir`; `None` if `dir` holds no
    /// move yet (absent, or no `move.json`). A directory of another mailbox is refused
    /// as [`StateDir::open`] refuses it.
    pub fn load(dir: &Path, mailbox: &MailboxAddr) -> Result<Option<CheckpointView>, AgentError> {
        let Some(identity) = read_identity(&dir.join("move.json"))? else {
            return Ok(None);
        };
        if &identity.mailbox != mailbox {
            return Err(state_err(
                dir,
                format!(
                    "this state directory belongs to the move of {}, not {mailbox}",
                    identity.mailbox
                ),
            ));
        }
        let log_path = dir.join(AUDIT_FILE);
        let move_id = identity.move_id.to_string();
        let index_path = dir.join(db::INDEX_FILE);
        let from_index = || -> Option<CheckpointDb> {
            let mut db = CheckpointDb::copy_of(&index_path).ok()??;
            let mark = db.mark_for(&move_id).ok()??;
            let tail = mailferry_audit::read_records_after(&log_path, &mark).ok()?;
            db.apply(
                tail.iter()
                    .filter(|e| db::affects_checkpoint(&e.event))
                    .map(|e| (e.event.as_str(), &e.data)),
                None,
            )
            .ok()?;
            Some(db)
        };
        let db = match from_index() {
            Some(db) => db,
            None => {
                let mut mem = CheckpointDb::in_memory();
                rebuild(&mut mem, &move_id, &log_path, None)?;
                mem
            }
        };
        Ok(Some(CheckpointView { identity, db }))
    }

    /// The checkpoint, for the planner and the listing.
    pub fn checkpoint(&self) -> &dyn Checkpoint {
        &self.db
    }

    /// How many messages the destination holds.
    pub fn acked_count(&self) -> Result<u64, AgentError> {
        self.db.len().map_err(|e| self.db.err(e))
    }

    /// Every message the destination holds, sorted (tests and tools).
    pub fn all_acked(&self) -> Result<Vec<AckedEntry>, AgentError> {
        self.db.all().map_err(|e| self.db.err(e))
    }
}

/// A checkpoint in memory holding `entries` as if recorded in this order (tests of the
/// planner and the listing).
#[cfg(test)]
pub(crate) fn checkpoint_of(entries: &[CheckpointEntry]) -> CheckpointDb {
    let mut db = CheckpointDb::in_memory();
    let records: Vec<(String, serde_json::Value)> = entries
        .iter()
        .map(|e| (e.kind.event().to_string(), entry_data(e)))
        .collect();
    db.apply(
        records
            .iter()
            .filter_map(|(k, v)| v.as_object().map(|o| (k.as_str(), o))),
        None,
    )
    .expect("in-memory apply");
    db
}

/// The audit record of one checkpoint entry. `source_id` is always the id the
/// destination knows the message by, so both sides' logs pair up in reconcile.
fn entry_data(e: &CheckpointEntry) -> serde_json::Value {
    let mut data = json!({
        "folder": e.folder.as_str(),
        "source_id": e.stored_as.as_str(),
        "sha256": e.sha256,
        "size": e.size,
        "flags": e.flags.as_str(),
        "internal_date": e.internal_date,
    });
    if e.source_id != e.stored_as {
        data["now_source_id"] = json!(e.source_id.as_str());
    }
    if let Some(ident) = &e.ident {
        data["ident"] = json!(ident);
    }
    data
}

/// temp file + fsync + rename + directory fsync, so a crash leaves the old or the new file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    let tmp = path.with_extension("tmp");
    let res = (|| {
        let mut f = mailferry_audit::private::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(parent) = path.parent() {
            File::open(parent)?.sync_all()?;
        }
        Ok::<_, std::io::Error>(())
    })();
    res.map_err(|e| state_err(path, e))
}

#[cfg(test)]
mod tests;
