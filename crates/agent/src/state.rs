//! The agent's state directory: the move's identity and its source-side audit log.
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
//! Replaying a long log costs time on every pass, so the end of a pass also writes a
//! checkpoint snapshot ([`snapshot`], docs/checkpoint-snapshot.md) bound to the log's
//! last record; opening then replays only the records after it. The log stays the
//! source of truth: a snapshot that is missing, damaged or does not fit the log is
//! ignored with a warning, and the whole log is replayed.

use crate::source::{Prior, PriorFolder, PriorItem};
use crate::AgentError;
use mailferry_audit::AuditLog;
use mailferry_core::{Flags, FolderName, MailboxAddr, MoveId, SourceId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

pub mod snapshot;

/// File name of the source-side audit log in the state directory.
pub const AUDIT_FILE: &str = "audit.jsonl";

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

/// Who acts on the source side: the agent run by this user on this host.
pub fn agent_actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("agent:{user}@{host}")
}

/// An open state directory.
pub struct StateDir {
    dir: PathBuf,
    /// The move this directory belongs to.
    pub identity: MoveIdentity,
    done: HashMap<(FolderName, SourceId), Acked>,
    cursors: BTreeMap<FolderName, String>,
    log: AuditLog,
    actor: String,
    replay: Replay,
    /// Seq of the last record the snapshot in use covers (`None`: no snapshot used).
    snapshot_seq: Option<u64>,
    /// Whether the checkpoint changed since it was opened.
    changed: bool,
}

/// Records past a snapshot's mark beyond which a pass that changed nothing rewrites the
/// snapshot anyway, so the tail to replay stays short.
const SNAPSHOT_TAIL_LIMIT: u64 = 1000;

/// How [`StateDir::open`] rebuilt the checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Replay {
    /// From the snapshot, then the records after it.
    Snapshot {
        /// Records replayed after the snapshot's mark.
        tail: u64,
    },
    /// From the whole audit log.
    Full {
        /// Records replayed.
        records: u64,
        /// Why the snapshot was not used (`None`: there was none).
        snapshot_refused: Option<String>,
    },
}

fn state_err(path: &Path, reason: impl std::fmt::Display) -> AgentError {
    AgentError::State {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

impl StateDir {
    /// Opens (or creates) the state of the move of `mailbox` from `source`.
    /// A state directory of another mailbox is refused, and so is one that another agent
    /// has open (the audit log is locked while a pass runs).
    pub fn open(dir: &Path, mailbox: &MailboxAddr, source: &str) -> Result<StateDir, AgentError> {
        fs::create_dir_all(dir).map_err(|e| state_err(dir, format!("cannot create: {e}")))?;
        let id_path = dir.join("move.json");
        let log_path = dir.join(AUDIT_FILE);
        let (identity, created) = match fs::read(&id_path) {
            Ok(bytes) => {
                let id: MoveIdentity = serde_json::from_slice(&bytes)
                    .map_err(|e| state_err(&id_path, format!("unreadable: {e}")))?;
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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
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
            Err(e) => return Err(state_err(&id_path, e)),
        };
        let snap_path = dir.join(snapshot::SNAPSHOT_FILE);
        let (snap, mut refused) = match snapshot::load(dir) {
            Ok(s) => (s, None),
            Err(reason) => (None, Some(reason)),
        };
        let log =
            AuditLog::open_from(&log_path, snap.as_ref().map(|s| &s.mark)).map_err(
                |e| match e {
                    mailferry_audit::AuditError::Locked { .. } => state_err(
                        dir,
                        "another mailferry agent is running a pass of this move right now (its \
                     checkpoint is locked); wait for it to finish or stop it, then run again",
                    ),
                    e => state_err(&log_path, e),
                },
            )?;
        if let Some(t) = log.repaired() {
            tracing::info!(
                path = %log_path.display(),
                cut = t.removed_bytes,
                "audit log had a torn tail from an interrupted pass; cut it off"
            );
        }
        let mut done = HashMap::new();
        let mut cursors = BTreeMap::new();
        let mut replay = None;
        let mut snapshot_seq = None;
        if let Some(snap) = snap {
            if log.resumed() {
                match mailferry_audit::read_records_after(&log_path, &snap.mark) {
                    Ok(tail) => {
                        snapshot_seq = Some(snap.mark.seq);
                        (done, cursors) = (snap.done, snap.cursors);
                        for e in &tail {
                            apply_record(&mut done, &mut cursors, &e.event, &e.data);
                        }
                        replay = Some(Replay::Snapshot {
                            tail: tail.len() as u64,
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
                        path = %snap_path.display(),
                        %reason,
                        "checkpoint snapshot not used; replaying the whole audit log \
                         (slower, nothing is lost; the next pass writes a new snapshot)"
                    );
                }
                let records = mailferry_audit::read_records(&log_path)
                    .map_err(|e| state_err(&log_path, e))?;
                for e in &records {
                    apply_record(&mut done, &mut cursors, &e.event, &e.data);
                }
                Replay::Full {
                    records: records.len() as u64,
                    snapshot_refused: refused,
                }
            }
        };
        let mut state = StateDir {
            dir: dir.to_path_buf(),
            identity,
            done,
            cursors,
            log,
            actor: agent_actor(),
            snapshot_seq,
            replay,
            changed: false,
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

    /// How [`StateDir::open`] rebuilt the checkpoint.
    pub fn replay(&self) -> &Replay {
        &self.replay
    }

    /// Writes the checkpoint snapshot bound to the log's last synced record, so the next
    /// open replays only what is appended after now. Best effort by design: a failure
    /// costs the next pass a full replay, nothing else.
    pub fn write_snapshot(&self) -> Result<(), AgentError> {
        // Nothing changed and the snapshot in use is recent: it still serves (the few
        // records of this pass are its tail next time).
        if !self.changed
            && self
                .snapshot_seq
                .is_some_and(|s| self.log.last_seq() - s < SNAPSHOT_TAIL_LIMIT)
        {
            return Ok(());
        }
        let path = self.dir.join(snapshot::SNAPSHOT_FILE);
        let Some(mark) = self.log.mark() else {
            return Err(state_err(
                &path,
                "the audit log has unsynced records; not writing a snapshot",
            ));
        };
        let bytes = snapshot::encode(&mark, &self.done, &self.cursors);
        snapshot::store(&self.dir, &bytes).map_err(|e| state_err(&path, e))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the checkpoint knows of this message, if the destination holds it.
    pub fn acked(&self, folder: &FolderName, id: &SourceId) -> Option<&Acked> {
        self.done.get(&(folder.clone(), id.clone()))
    }

    /// True if the store already acknowledged this message in an earlier pass.
    pub fn is_done(&self, folder: &FolderName, id: &SourceId) -> bool {
        self.done.contains_key(&(folder.clone(), id.clone()))
    }

    /// Every message the destination holds, by folder and current source id.
    pub fn all_acked(&self) -> impl Iterator<Item = (&(FolderName, SourceId), &Acked)> {
        self.done.iter()
    }

    /// The same as a map, for the planner.
    pub(crate) fn acked_map(&self) -> &HashMap<(FolderName, SourceId), Acked> {
        &self.done
    }

    /// Every message the destination holds as `(folder/id-at-destination, sha256)`,
    /// for the receipt.
    pub fn acknowledged(&self) -> impl Iterator<Item = (String, &str)> {
        self.done
            .iter()
            .map(|((f, _), a)| (format!("{f}/{}", a.stored_as), a.sha256.as_str()))
    }

    /// What earlier passes left, for [`crate::source::Source::list`].
    pub fn prior(&self) -> Prior {
        prior_of(&self.done, &self.cursors)
    }

    /// Records acknowledged changes and makes the records durable (one fsync).
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
        self.changed |= !records.is_empty();
        for (event, data) in &records {
            if let Some(data) = data.as_object() {
                apply_record(&mut self.done, &mut self.cursors, event, data);
            }
        }
        Ok(())
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
        self.changed |= *cursors != self.cursors;
        self.event("pass.cursors", data.clone())?;
        if let Some(data) = data.as_object() {
            apply_record(&mut self.done, &mut self.cursors, "pass.cursors", data);
        }
        Ok(())
    }

    /// Appends one event to the source-side audit log and syncs it.
    pub fn event(&mut self, event: &str, data: serde_json::Value) -> Result<(), AgentError> {
        let path = self.dir.join(AUDIT_FILE);
        self.log
            .append(&self.actor, event, data)
            .and_then(|_| self.log.sync())
            .map(|_| ())
            .map_err(|e| state_err(&path, e))
    }

    /// Writes a file in the state directory atomically (temp, fsync, rename).
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<(), AgentError> {
        write_atomic(&self.dir.join(name), bytes)
    }
}

fn prior_of(
    done: &HashMap<(FolderName, SourceId), Acked>,
    cursors: &BTreeMap<FolderName, String>,
) -> Prior {
    // Grouped first, then each folder's map built from one sorted run (far cheaper than
    // inserting a large mailbox into a B-tree in hash order).
    let mut grouped: HashMap<&FolderName, Vec<(SourceId, PriorItem)>> = HashMap::new();
    for ((folder, id), a) in done {
        grouped
            .entry(folder)
            .or_default()
            .push((id.clone(), a.prior.clone()));
    }
    let mut prior = Prior::default();
    for (folder, items) in grouped {
        prior.folders.entry(folder.clone()).or_default().items = items.into_iter().collect();
    }
    for (folder, cursor) in cursors {
        prior
            .folders
            .entry(folder.clone())
            .or_insert_with(PriorFolder::default)
            .cursor = Some(cursor.clone());
    }
    prior
}

// === impl CheckpointView ===

/// The checkpoint of a state directory, read without changing anything: no file or
/// directory is created, nothing is locked, a torn last line is ignored rather than
/// cut. For `move --dry-run`, which may run while a pass of the same move runs.
#[derive(Debug)]
pub struct CheckpointView {
    /// The move this directory belongs to.
    pub identity: MoveIdentity,
    done: HashMap<(FolderName, SourceId), Acked>,
    cursors: BTreeMap<FolderName, String>,
}

impl CheckpointView {
    /// Reads the checkpoint of the move of `mailbox` in `dir`; `None` if `dir` holds no
    /// move yet (absent, or no `move.json`). A directory of another mailbox is refused
    /// as [`StateDir::open`] refuses it.
    pub fn load(dir: &Path, mailbox: &MailboxAddr) -> Result<Option<CheckpointView>, AgentError> {
        let id_path = dir.join("move.json");
        let identity: MoveIdentity = match fs::read(&id_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| state_err(&id_path, format!("unreadable: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(state_err(&id_path, e)),
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
        let mut done = HashMap::new();
        let mut cursors = BTreeMap::new();
        match mailferry_audit::read_records(&log_path) {
            Ok(records) => {
                for e in records {
                    apply_record(&mut done, &mut cursors, &e.event, &e.data);
                }
            }
            Err(mailferry_audit::AuditError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(state_err(&log_path, e)),
        }
        Ok(Some(CheckpointView {
            identity,
            done,
            cursors,
        }))
    }

    /// Every message the destination holds, by folder and current source id.
    pub fn all_acked(&self) -> impl Iterator<Item = (&(FolderName, SourceId), &Acked)> {
        self.done.iter()
    }

    /// The same as a map, for the planner.
    pub(crate) fn acked_map(&self) -> &HashMap<(FolderName, SourceId), Acked> {
        &self.done
    }

    /// What earlier passes left, for [`crate::source::Source::list`].
    pub fn prior(&self) -> Prior {
        prior_of(&self.done, &self.cursors)
    }
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

/// Applies one audit record to the in-memory checkpoint. Records of older versions
/// (no flags, no dates) read as empty flags and date 0: the next pass then only
/// re-sends flags, never content.
fn apply_record(
    done: &mut HashMap<(FolderName, SourceId), Acked>,
    cursors: &mut BTreeMap<FolderName, String>,
    event: &str,
    data: &serde_json::Map<String, serde_json::Value>,
) {
    let field = |k: &str| data.get(k).and_then(|v| v.as_str()).unwrap_or("");
    if event == "pass.cursors" {
        cursors.clear();
        if let Some(map) = data.get("cursors").and_then(|c| c.as_object()) {
            for (f, c) in map {
                if let (Ok(f), Some(c)) = (FolderName::parse(f), c.as_str()) {
                    cursors.insert(f, c.to_string());
                }
            }
        }
        return;
    }
    let (Ok(folder), Ok(stored_as)) = (
        FolderName::parse(field("folder")),
        SourceId::parse(field("source_id")),
    ) else {
        return;
    };
    let now = match data.get("now_source_id").and_then(|v| v.as_str()) {
        Some(n) => match SourceId::parse(n) {
            Ok(n) => n,
            Err(_) => return,
        },
        None => stored_as.clone(),
    };
    let prior = || PriorItem {
        flags: Flags::from_maildir(field("flags")).unwrap_or_default(),
        internal_date: data
            .get("internal_date")
            .and_then(|v| v.as_i64())
            .unwrap_or(0),
        size: data.get("size").and_then(|v| v.as_u64()).unwrap_or(0),
        ident: data
            .get("ident")
            .and_then(|v| v.as_str())
            .map(str::to_string),
    };
    match event {
        "message.stored" | "message.duplicate" => {
            done.insert(
                (folder, now),
                Acked {
                    sha256: field("sha256").to_string(),
                    stored_as,
                    prior: prior(),
                },
            );
        }
        "message.remapped" => {
            // The old id at the source is gone; the destination keeps `stored_as`.
            done.retain(|(f, _), a| !(f == &folder && a.stored_as == stored_as));
            done.insert(
                (folder, now),
                Acked {
                    sha256: field("sha256").to_string(),
                    stored_as,
                    prior: prior(),
                },
            );
        }
        "message.flags" => {
            if let Some(a) = done.get_mut(&(folder, now)) {
                a.prior.flags = Flags::from_maildir(field("flags")).unwrap_or_default();
            }
        }
        "message.deleted" | "message.forgotten" => {
            done.remove(&(folder, now));
        }
        _ => {}
    }
}

/// temp file + fsync + rename + directory fsync, so a crash leaves the old or the new file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    let tmp = path.with_extension("tmp");
    let res = (|| {
        let mut f = File::create(&tmp)?;
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
mod tests {
    use super::*;

    fn entry(id: &str) -> CheckpointEntry {
        CheckpointEntry {
            kind: EntryKind::Stored,
            folder: FolderName::inbox(),
            source_id: SourceId::parse(id).unwrap(),
            stored_as: SourceId::parse(id).unwrap(),
            sha256: "00".repeat(32),
            size: 1,
            flags: Flags::default(),
            internal_date: 0,
            ident: None,
        }
    }

    #[test]
    fn checkpoint_survives_reopen_and_torn_tail_is_cut() {
        let d = tempfile::tempdir().unwrap();
        let mb = MailboxAddr::parse("a@example.com").unwrap();
        let mut s = StateDir::open(d.path(), &mb, "maildir:/x").unwrap();
        let id = s.identity.move_id;
        s.record(&[entry("one"), entry("two")]).unwrap();
        drop(s);
        let cp = d.path().join(AUDIT_FILE);
        let mut f = fs::OpenOptions::new().append(true).open(&cp).unwrap();
        f.write_all(b"{\"seq\":9,\"time\":\"20").unwrap();
        drop(f);
        let mut s = StateDir::open(d.path(), &mb, "maildir:/x").unwrap();
        assert_eq!(s.identity.move_id, id, "same move across passes");
        assert!(s.is_done(&FolderName::inbox(), &SourceId::parse("two").unwrap()));
        s.record(&[entry("three")]).unwrap();
        drop(s);
        // genesis, move.created, two messages, one more message: the torn line is gone.
        assert_eq!(mailferry_audit::verify(&cp).unwrap().records, 5);
        let events: Vec<String> = mailferry_audit::read_records(&cp)
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect();
        assert_eq!(events[1], "move.created");
        assert_eq!(&events[2..], ["message.stored"; 3]);
    }

    #[test]
    fn second_agent_on_the_same_state_is_refused_while_the_first_runs() {
        let d = tempfile::tempdir().unwrap();
        let mb = MailboxAddr::parse("a@example.com").unwrap();
        let first = StateDir::open(d.path(), &mb, "maildir:/x").unwrap();
        let e = StateDir::open(d.path(), &mb, "maildir:/x")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("another mailferry agent is running a pass"),
            "{e}"
        );
        drop(first);
        StateDir::open(d.path(), &mb, "maildir:/x").unwrap();
    }

    #[test]
    fn flags_deletions_and_remaps_replay_into_the_same_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let mb = MailboxAddr::parse("a@example.com").unwrap();
        let mut s = StateDir::open(d.path(), &mb, "imap://x").unwrap();
        let mut a = entry("1-1");
        a.ident = Some("m1".into());
        s.record(&[a.clone(), entry("1-2"), entry("1-3")]).unwrap();
        let mut f = entry("1-2");
        f.kind = EntryKind::Flags;
        f.flags = Flags::from_maildir("FS").unwrap();
        let mut del = entry("1-3");
        del.kind = EntryKind::Deleted;
        let mut re = a.clone();
        re.kind = EntryKind::Remapped;
        re.source_id = SourceId::parse("2-1").unwrap();
        s.record(&[f, del, re]).unwrap();
        let mut cursors = BTreeMap::new();
        cursors.insert(FolderName::inbox(), "c1".to_string());
        s.record_cursors(&cursors).unwrap();
        let before: Vec<_> = {
            let mut v: Vec<_> = s.all_acked().map(|(k, a)| (k.clone(), a.clone())).collect();
            v.sort_by(|x, y| x.0.cmp(&y.0));
            v
        };
        drop(s);
        let s = StateDir::open(d.path(), &mb, "imap://x").unwrap();
        let mut after: Vec<_> = s.all_acked().map(|(k, a)| (k.clone(), a.clone())).collect();
        after.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(before, after, "the log replays to what was recorded");
        let ids: Vec<&str> = after.iter().map(|(k, _)| k.1.as_str()).collect();
        assert_eq!(ids, ["1-2", "2-1"]);
        assert_eq!(after[0].1.prior.flags.as_str(), "FS");
        assert_eq!(
            after[1].1.stored_as.as_str(),
            "1-1",
            "the destination's id is kept"
        );
        let prior = s.prior();
        assert_eq!(
            prior.folders[&FolderName::inbox()].cursor.as_deref(),
            Some("c1")
        );
        let acked: Vec<String> = s
            .acknowledged()
            .map(|(i, _)| i)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(acked, ["INBOX/1-1", "INBOX/1-2"]);
    }

    #[test]
    fn checkpoint_view_reads_without_creating_or_locking_anything() {
        let d = tempfile::tempdir().unwrap();
        let mb = MailboxAddr::parse("a@example.com").unwrap();
        let missing = d.path().join("not-yet");
        assert!(CheckpointView::load(&missing, &mb).unwrap().is_none());
        assert!(!missing.exists(), "a dry run creates no state directory");
        let mut s = StateDir::open(d.path(), &mb, "maildir:/x").unwrap();
        s.record(&[entry("one"), entry("two")]).unwrap();
        let mut cursors = BTreeMap::new();
        cursors.insert(FolderName::inbox(), "c1".to_string());
        s.record_cursors(&cursors).unwrap();
        // Readable while a pass holds the log, and nothing on disk changes.
        let before = fs::read(d.path().join(AUDIT_FILE)).unwrap();
        let v = CheckpointView::load(d.path(), &mb).unwrap().unwrap();
        assert_eq!(v.identity.move_id, s.identity.move_id);
        assert_eq!(v.all_acked().count(), 2);
        assert_eq!(
            v.prior().folders[&FolderName::inbox()].cursor.as_deref(),
            Some("c1")
        );
        assert_eq!(fs::read(d.path().join(AUDIT_FILE)).unwrap(), before);
        let other = MailboxAddr::parse("b@example.com").unwrap();
        assert!(CheckpointView::load(d.path(), &other).is_err());
    }

    fn acked_sorted(s: &StateDir) -> Vec<((FolderName, SourceId), Acked)> {
        let mut v: Vec<_> = s.all_acked().map(|(k, a)| (k.clone(), a.clone())).collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    }

    /// A state with remaps, flags, deletions, cursors and a snapshot, then more records.
    fn state_with_snapshot_and_tail(dir: &Path) -> Vec<((FolderName, SourceId), Acked)> {
        let mb = MailboxAddr::parse("a@example.com").unwrap();
        let mut s = StateDir::open(dir, &mb, "imap://x").unwrap();
        let mut a = entry("1-1");
        a.ident = Some("m1".into());
        let mut sent = entry("1-9");
        sent.folder = FolderName::parse("Sent").unwrap();
        s.record(&[a.clone(), entry("1-2"), entry("1-3"), sent])
            .unwrap();
        let mut re = a.clone();
        re.kind = EntryKind::Remapped;
        re.source_id = SourceId::parse("2-1").unwrap();
        s.record(&[re]).unwrap();
        let mut cursors = BTreeMap::new();
        cursors.insert(FolderName::inbox(), "c1".to_string());
        s.record_cursors(&cursors).unwrap();
        s.write_snapshot().unwrap();
        // The next pass: more records after the snapshot.
        let mut f = entry("1-2");
        f.kind = EntryKind::Flags;
        f.flags = Flags::from_maildir("FS").unwrap();
        let mut del = entry("1-3");
        del.kind = EntryKind::Deleted;
        s.record(&[f, del, entry("1-4")]).unwrap();
        acked_sorted(&s)
    }

    #[test]
    fn snapshot_plus_tail_replays_to_what_the_whole_log_says() {
        let d = tempfile::tempdir().unwrap();
        let mb = MailboxAddr::parse("a@example.com").unwrap();
        let before = state_with_snapshot_and_tail(d.path());
        let s = StateDir::open(d.path(), &mb, "imap://x").unwrap();
        assert_eq!(s.replay(), &Replay::Snapshot { tail: 3 });
        assert_eq!(acked_sorted(&s), before);
        assert_eq!(
            s.prior().folders[&FolderName::inbox()].cursor.as_deref(),
            Some("c1")
        );
        let snap_acked = acked_sorted(&s);
        drop(s);
        fs::remove_file(d.path().join(snapshot::SNAPSHOT_FILE)).unwrap();
        let s = StateDir::open(d.path(), &mb, "imap://x").unwrap();
        assert!(matches!(
            s.replay(),
            Replay::Full {
                snapshot_refused: None,
                ..
            }
        ));
        assert_eq!(acked_sorted(&s), snap_acked, "same checkpoint either way");
    }

    #[test]
    fn a_pass_that_changed_nothing_keeps_the_snapshot_one_that_did_rewrites_it() {
        let d = tempfile::tempdir().unwrap();
        let mb = MailboxAddr::parse("a@example.com").unwrap();
        state_with_snapshot_and_tail(d.path());
        let snap = d.path().join(snapshot::SNAPSHOT_FILE);
        let mut s = StateDir::open(d.path(), &mb, "imap://x").unwrap();
        s.record(&[entry("1-6")]).unwrap();
        s.write_snapshot().unwrap(); // a change: covers everything now
        drop(s);
        let before = fs::read(&snap).unwrap();
        let mut s = StateDir::open(d.path(), &mb, "imap://x").unwrap();
        assert_eq!(s.replay(), &Replay::Snapshot { tail: 0 });
        s.event("pass.started", json!({})).unwrap();
        s.write_snapshot().unwrap();
        assert_eq!(fs::read(&snap).unwrap(), before, "nothing changed: kept");
        s.record(&[entry("1-7")]).unwrap();
        s.write_snapshot().unwrap();
        assert_ne!(fs::read(&snap).unwrap(), before, "a change: rewritten");
        drop(s);
        let s = StateDir::open(d.path(), &mb, "imap://x").unwrap();
        assert_eq!(s.replay(), &Replay::Snapshot { tail: 0 });
        assert!(s.is_done(&FolderName::inbox(), &SourceId::parse("1-7").unwrap()));
    }

    #[test]
    fn a_damaged_or_foreign_snapshot_falls_back_to_the_whole_log() {
        let d = tempfile::tempdir().unwrap();
        let mb = MailboxAddr::parse("a@example.com").unwrap();
        let before = state_with_snapshot_and_tail(d.path());
        let snap = d.path().join(snapshot::SNAPSHOT_FILE);
        let good = fs::read(&snap).unwrap();
        let other = tempfile::tempdir().unwrap();
        state_with_snapshot_and_tail(other.path());
        let foreign = fs::read(other.path().join(snapshot::SNAPSHOT_FILE)).unwrap();

        let mut flipped = good.clone();
        let at = flipped.len() - 10;
        flipped[at] ^= 0x20;
        let torn = good[..good.len() - 7].to_vec();
        let newer = String::from_utf8(good.clone())
            .unwrap()
            .replacen("mailferry-checkpoint/1", "mailferry-checkpoint/9", 1)
            .into_bytes();
        for (what, bytes) in [
            ("flipped byte", flipped),
            ("torn", torn),
            ("empty", Vec::new()),
            ("unknown format", newer),
            ("another move's", foreign),
        ] {
            fs::write(&snap, &bytes).unwrap();
            let s = StateDir::open(d.path(), &mb, "imap://x").unwrap();
            match s.replay() {
                Replay::Full {
                    snapshot_refused: Some(_),
                    ..
                } => {}
                other => panic!("{what}: {other:?}"),
            }
            assert_eq!(acked_sorted(&s), before, "{what}");
        }
    }

    #[test]
    fn killed_after_the_snapshot_the_next_open_replays_the_synced_tail() {
        // kill -9 after the snapshot was written and while the next pass appended: the
        // log ends in a torn line after the mark.
        let d = tempfile::tempdir().unwrap();
        let mb = MailboxAddr::parse("a@example.com").unwrap();
        let before = state_with_snapshot_and_tail(d.path());
        let cp = d.path().join(AUDIT_FILE);
        let mut f = fs::OpenOptions::new().append(true).open(&cp).unwrap();
        f.write_all(b"{\"seq\":99,\"time\":\"20").unwrap();
        drop(f);
        let mut s = StateDir::open(d.path(), &mb, "imap://x").unwrap();
        assert_eq!(s.replay(), &Replay::Snapshot { tail: 3 });
        assert_eq!(acked_sorted(&s), before);
        s.record(&[entry("1-5")]).unwrap();
        drop(s);
        mailferry_audit::verify(&cp).unwrap();

        // A snapshot that outlived the records it covers (the log cut before its mark)
        // does not fit any more: the log wins.
        let mut s = StateDir::open(d.path(), &mb, "imap://x").unwrap();
        s.record(&[entry("1-6")]).unwrap();
        let len = fs::metadata(&cp).unwrap().len();
        s.write_snapshot().unwrap();
        drop(s);
        let f = fs::OpenOptions::new().write(true).open(&cp).unwrap();
        f.set_len(len - 1).unwrap(); // tears the last line: cut at open
        drop(f);
        let s = StateDir::open(d.path(), &mb, "imap://x").unwrap();
        assert!(
            matches!(
                s.replay(),
                Replay::Full {
                    snapshot_refused: Some(_),
                    ..
                }
            ),
            "{:?}",
            s.replay()
        );
        assert!(s.is_done(&FolderName::inbox(), &SourceId::parse("1-5").unwrap()));
        assert!(!s.is_done(&FolderName::inbox(), &SourceId::parse("1-6").unwrap()));
    }

    #[test]
    fn state_of_another_mailbox_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let a = MailboxAddr::parse("a@example.com").unwrap();
        let b = MailboxAddr::parse("b@example.com").unwrap();
        StateDir::open(d.path(), &a, "maildir:/x").unwrap();
        let e = StateDir::open(d.path(), &b, "maildir:/x")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("belongs to the move of a@example.com"), "{e}");
    }
}
