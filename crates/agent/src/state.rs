//! The agent's state directory: the move's identity and its checkpoint.
//!
//! `move.json` names the move (id, mailbox, source) so every pass of the same move
//! uses the same id. `checkpoint.jsonl` gets one line per acknowledged message and is
//! fsynced after each acknowledged batch; a message is only written here once the store
//! has said it is durable. A crash can leave a torn last line, which is cut off at the
//! next open: the message it described is simply sent again and the store recognises it
//! as a duplicate, so every message ends up stored exactly once.

use crate::AgentError;
use mailferry_core::{FolderName, MailboxAddr, MoveId, SourceId};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

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

/// An open state directory.
pub struct StateDir {
    dir: PathBuf,
    /// The move this directory belongs to.
    pub identity: MoveIdentity,
    done: HashSet<(FolderName, SourceId)>,
    log: BufWriter<File>,
}

fn state_err(path: &Path, reason: impl std::fmt::Display) -> AgentError {
    AgentError::State {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

impl StateDir {
    /// Opens (or creates) the state of the move of `mailbox` from `source`.
    /// A state directory of another mailbox is refused.
    pub fn open(dir: &Path, mailbox: &MailboxAddr, source: &str) -> Result<StateDir, AgentError> {
        fs::create_dir_all(dir).map_err(|e| state_err(dir, format!("cannot create: {e}")))?;
        let id_path = dir.join("move.json");
        let identity = match fs::read(&id_path) {
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
                id
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
                id
            }
            Err(e) => return Err(state_err(&id_path, e)),
        };
        let cp_path = dir.join("checkpoint.jsonl");
        let mut done = HashSet::new();
        let good_len = match fs::read(&cp_path) {
            Ok(bytes) => {
                let mut good = 0usize;
                for line in bytes.split_inclusive(|&b| b == b'\n') {
                    if !line.ends_with(b"\n") {
                        break; // torn tail: cut below
                    }
                    let Ok(e) = serde_json::from_slice::<CheckpointEntry>(line) else {
                        break;
                    };
                    done.insert((e.folder, e.source_id));
                    good += line.len();
                }
                if good < bytes.len() {
                    tracing::info!(
                        path = %cp_path.display(),
                        cut = bytes.len() - good,
                        "checkpoint had a torn tail from an interrupted pass; cut it off"
                    );
                }
                Some(good as u64)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(state_err(&cp_path, e)),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cp_path)
            .map_err(|e| state_err(&cp_path, e))?;
        if let Some(len) = good_len {
            file.set_len(len).map_err(|e| state_err(&cp_path, e))?;
        }
        Ok(StateDir {
            dir: dir.to_path_buf(),
            identity,
            done,
            log: BufWriter::new(file),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True if the store already acknowledged this message in an earlier pass.
    pub fn is_done(&self, folder: &FolderName, id: &SourceId) -> bool {
        self.done.contains(&(folder.clone(), id.clone()))
    }

    /// Records acknowledged messages and makes the record durable (one fsync).
    pub fn record(&mut self, entries: &[CheckpointEntry]) -> Result<(), AgentError> {
        let path = self.dir.join("checkpoint.jsonl");
        for e in entries {
            serde_json::to_writer(&mut self.log, e).map_err(|e| state_err(&path, e))?;
            self.log.write_all(b"\n").map_err(|e| state_err(&path, e))?;
            self.done.insert((e.folder.clone(), e.source_id.clone()));
        }
        self.log.flush().map_err(|e| state_err(&path, e))?;
        self.log
            .get_ref()
            .sync_data()
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
        let cp = d.path().join("checkpoint.jsonl");
        let mut f = OpenOptions::new().append(true).open(&cp).unwrap();
        f.write_all(b"{\"folder\":\"INBOX\",\"sou").unwrap();
        drop(f);
        let mut s = StateDir::open(d.path(), &mb, "maildir:/x").unwrap();
        assert_eq!(s.identity.move_id, id, "same move across passes");
        assert!(s.is_done(&FolderName::inbox(), &SourceId::parse("two").unwrap()));
        s.record(&[entry("three")]).unwrap();
        let text = fs::read_to_string(&cp).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text
            .lines()
            .all(|l| serde_json::from_str::<CheckpointEntry>(l).is_ok()));
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
