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

use crate::AgentError;
use mailferry_audit::AuditLog;
use mailferry_core::{FolderName, MailboxAddr, MoveId, SourceId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

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

/// One acknowledged message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointEntry {
    /// Folder.
    pub folder: FolderName,
    /// Source id.
    pub source_id: SourceId,
    /// Content SHA-256, hex.
    pub sha256: String,
    /// Size.
    pub size: u64,
    /// `stored` or `duplicate`.
    pub status: String,
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
    done: HashMap<(FolderName, SourceId), String>,
    log: AuditLog,
    actor: String,
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
        let log = AuditLog::open(&log_path).map_err(|e| state_err(&log_path, e))?;
        if let Some(t) = log.repaired() {
            tracing::info!(
                path = %log_path.display(),
                cut = t.removed_bytes,
                "audit log had a torn tail from an interrupted pass; cut it off"
            );
        }
        let mut done = HashMap::new();
        for e in mailferry_audit::read_records(&log_path).map_err(|e| state_err(&log_path, e))? {
            if e.event != "message.stored" && e.event != "message.duplicate" {
                continue;
            }
            let field = |k: &str| e.data.get(k).and_then(|v| v.as_str()).unwrap_or("");
            if let (Ok(f), Ok(id)) = (
                FolderName::parse(field("folder")),
                SourceId::parse(field("source_id")),
            ) {
                done.insert((f, id), field("sha256").to_string());
            }
        }
        let mut state = StateDir {
            dir: dir.to_path_buf(),
            identity,
            done,
            log,
            actor: agent_actor(),
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

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True if the store already acknowledged this message in an earlier pass.
    pub fn is_done(&self, folder: &FolderName, id: &SourceId) -> bool {
        self.done.contains_key(&(folder.clone(), id.clone()))
    }

    /// Every acknowledged message as `(folder/source-id, sha256)`, for the receipt.
    pub fn acknowledged(&self) -> impl Iterator<Item = (String, &str)> {
        self.done
            .iter()
            .map(|((f, id), sha)| (format!("{f}/{id}"), sha.as_str()))
    }

    /// Records acknowledged messages and makes the records durable (one fsync).
    pub fn record(&mut self, entries: &[CheckpointEntry]) -> Result<(), AgentError> {
        let path = self.dir.join(AUDIT_FILE);
        self.log
            .append_batch(
                &self.actor,
                entries.iter().map(|e| {
                    (
                        format!("message.{}", e.status),
                        json!({
                            "folder": e.folder.as_str(),
                            "source_id": e.source_id.as_str(),
                            "sha256": e.sha256,
                            "size": e.size,
                        }),
                    )
                }),
            )
            .map_err(|e| state_err(&path, e))?;
        self.log.sync().map_err(|e| state_err(&path, e))?;
        for e in entries {
            self.done
                .insert((e.folder.clone(), e.source_id.clone()), e.sha256.clone());
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
            folder: FolderName::inbox(),
            source_id: SourceId::parse(id).unwrap(),
            sha256: "00".repeat(32),
            size: 1,
            status: "stored".into(),
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
