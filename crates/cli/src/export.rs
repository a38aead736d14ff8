//! `mailferry export`: writes a mailbox back out of the volume as a Maildir++ tree or as
//! mbox files.
//!
//! Maildir: every message comes out byte-identical in its folder, in `cur/` as
//! `<source id>:2,<flags>`, with its internal date as mtime. Each file is written to
//! `tmp/` first and renamed into place (the Maildir delivery rule), so a reader never
//! sees half a message.
//!
//! mbox: one mboxrd file per folder (`docs/mbox.md`), messages in the order the store
//! received them. A message that came from an mbox gets its original `From ` line back,
//! so an mbox moved and exported is byte-identical.
//!
//! Either way a damaged message is named and skipped and all others come out, and
//! nothing is written outside the export directory: folder names are checked again
//! before they become paths.

use crate::AppError;
use mailferry_agent::source::maildir::dir_name_for_folder;
use mailferry_agent::source::mbox;
use mailferry_core::report::BadItem;
use mailferry_core::{FolderName, MailboxAddr};
use mailferry_store::{StoredMessage, Volume};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// What an export did.
#[derive(Debug, Default, Serialize)]
pub struct ExportOutcome {
    /// Messages written.
    pub exported: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Messages that could not be read back, named, with the reason.
    pub damaged: Vec<BadItem>,
}

fn ensure_maildir(dir: &Path) -> Result<(), AppError> {
    for sub in ["cur", "new", "tmp"] {
        let p = dir.join(sub);
        mailferry_audit::private::create_dir_all(&p).map_err(|e| AppError::io(&p, e))?;
    }
    Ok(())
}

/// Refuses an export target that exists and is not empty.
fn check_empty(out: &Path) -> Result<(), AppError> {
    if out.exists() {
        let mut entries = fs::read_dir(out).map_err(|e| AppError::io(out, e))?;
        if entries.next().is_some() {
            return Err(AppError::Usage(format!(
                "export target {} is not empty; export into a new directory so nothing is overwritten",
                out.display()
            )));
        }
    }
    Ok(())
}

/// Exports `mailbox` into the Maildir `out`, which must not exist or be empty.
pub fn export_maildir(
    volume: &Volume,
    mailbox: &MailboxAddr,
    out: &Path,
) -> Result<ExportOutcome, AppError> {
    check_empty(out)?;
    ensure_maildir(out)?;
    let mut outcome = ExportOutcome::default();
    let mut made: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    for listed in volume.list_messages(mailbox)? {
        let msg = match listed {
            Ok(m) => m,
            Err(e) => {
                outcome.damaged.push(BadItem {
                    item: format!("{mailbox}: a message"),
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let item = format!("{}/{}", msg.meta.folder, msg.meta.source_id);
        let dir = match dir_name_for_folder(&msg.meta.folder) {
            Ok(None) => out.to_path_buf(),
            Ok(Some(name)) => out.join(name),
            Err(reason) => {
                outcome.damaged.push(BadItem { item, reason });
                continue;
            }
        };
        if made.insert(dir.clone()) {
            ensure_maildir(&dir)?;
        }
        let tmp = dir
            .join("tmp")
            .join(format!("{}.{}", msg.id, msg.meta.source_id));
        let mut file = mailferry_audit::private::options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| AppError::io(&tmp, e))?;
        let res = {
            let mut w = std::io::BufWriter::with_capacity(256 * 1024, &mut file);
            volume
                .read_message(&msg, &mut w)
                .map_err(|e| e.to_string())
                .and_then(|_| std::io::Write::flush(&mut w).map_err(|e| e.to_string()))
        };
        if let Err(reason) = res {
            drop(file);
            let _ = fs::remove_file(&tmp);
            outcome.damaged.push(BadItem { item, reason });
            continue;
        }
        let mtime = UNIX_EPOCH + Duration::from_secs(msg.meta.internal_date.max(0) as u64);
        file.set_modified(mtime)
            .map_err(|e| AppError::io(&tmp, e))?;
        drop(file);
        let mut name = format!("{}:2,{}", msg.meta.source_id, msg.meta.flags.as_str());
        if dir.join("cur").join(&name).exists() {
            // Same source id stored twice with different content: keep both.
            name = format!(
                "{}.{}:2,{}",
                msg.meta.source_id,
                msg.id,
                msg.meta.flags.as_str()
            );
        }
        let dest = dir.join("cur").join(name);
        fs::rename(&tmp, &dest).map_err(|e| AppError::io(&dest, e))?;
        outcome.exported += 1;
        outcome.bytes += msg.meta.size;
    }
    Ok(outcome)
}

// === mbox ===

/// The file of each folder under the export root. A folder's subfolders go in a
/// directory of the same name, or in `<name>.sbd/` (Thunderbird's layout) when the
/// folder has messages of its own and so is a file. A name that cannot be a file name
/// safely is refused with its reason.
fn mbox_paths(folders: &BTreeSet<FolderName>) -> BTreeMap<FolderName, Result<PathBuf, String>> {
    let mut out = BTreeMap::new();
    for folder in folders {
        let parts: Vec<&str> = folder.components().collect();
        let mut path = PathBuf::new();
        let mut refused = None;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let has_file = !last
                && FolderName::parse(&parts[..=i].join("/"))
                    .map(|f| folders.contains(&f))
                    .unwrap_or(false);
            let name = if has_file {
                format!("{part}.sbd")
            } else {
                part.to_string()
            };
            // FolderName already refuses `..`, `/`, backslashes, control characters and a leading
            // dot; these are the rules of an mbox tree on a POSIX file system.
            let why = if name.len() > 255 {
                Some(format!(
                    "component of {} bytes (file names end at 255)",
                    name.len()
                ))
            } else if part.ends_with(".sbd") || part.ends_with(".msf") {
                Some(format!(
                    "component {part:?} ends in .sbd or .msf, which mbox trees reserve for \
                     subfolder directories and index files"
                ))
            } else if !matches!(
                Path::new(&name).components().next(),
                Some(Component::Normal(_))
            ) || Path::new(&name).components().count() != 1
            {
                Some(format!("component {part:?} is not a plain file name"))
            } else {
                None
            };
            if let Some(why) = why {
                refused = Some(format!("folder {folder:?} cannot be an mbox file: {why}"));
                break;
            }
            path.push(name);
        }
        out.insert(folder.clone(), refused.map_or(Ok(path), Err));
    }
    out
}

/// Writes one message (its `From ` line, the quoted bytes, the blank line after it).
fn write_mbox_message(
    volume: &Volume,
    msg: &StoredMessage,
    w: &mut std::io::BufWriter<fs::File>,
) -> Result<(), String> {
    let sender =
        mbox::envelope_sender(&msg.meta.source_id).unwrap_or_else(|| b"MAILER-DAEMON".to_vec());
    let line = [
        &b"From "[..],
        &sender,
        b" ",
        mbox::asctime(msg.meta.internal_date).as_bytes(),
        b"\n",
    ]
    .concat();
    w.write_all(&line).map_err(|e| e.to_string())?;
    let mut q = mbox::QuotingWriter::new(&mut *w);
    volume
        .read_message(msg, &mut q)
        .map_err(|e| e.to_string())?;
    let (w, newline) = q.finish().map_err(|e| e.to_string())?;
    // mbox cannot hold a message without a final newline: it gets one.
    let tail: &[u8] = if newline { b"\n" } else { b"\n\n" };
    w.write_all(tail).map_err(|e| e.to_string())
}

/// Exports `mailbox` as mboxrd files under `out`, which must not exist or be empty: one
/// file per folder, messages in the order the store received them.
pub fn export_mbox(
    volume: &Volume,
    mailbox: &MailboxAddr,
    out: &Path,
) -> Result<ExportOutcome, AppError> {
    check_empty(out)?;
    mailferry_audit::private::create_dir_all(out).map_err(|e| AppError::io(out, e))?;
    let mut outcome = ExportOutcome::default();
    let mut by_folder: BTreeMap<FolderName, Vec<StoredMessage>> = BTreeMap::new();
    for listed in volume.list_messages(mailbox)? {
        match listed {
            Ok(m) => by_folder.entry(m.meta.folder.clone()).or_default().push(m),
            Err(e) => outcome.damaged.push(BadItem {
                item: format!("{mailbox}: a message"),
                reason: e.to_string(),
            }),
        }
    }
    let folders: BTreeSet<FolderName> = by_folder.keys().cloned().collect();
    let paths = mbox_paths(&folders);
    for (folder, msgs) in by_folder {
        let rel = match &paths[&folder] {
            Ok(p) => p,
            Err(reason) => {
                for msg in msgs {
                    outcome.damaged.push(BadItem {
                        item: format!("{}/{}", msg.meta.folder, msg.meta.source_id),
                        reason: reason.clone(),
                    });
                }
                continue;
            }
        };
        let path = out.join(rel);
        if let Some(parent) = path.parent() {
            mailferry_audit::private::create_dir_all(parent)
                .map_err(|e| AppError::io(parent, e))?;
        }
        let file = mailferry_audit::private::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| AppError::io(&path, e))?;
        let mut w = std::io::BufWriter::with_capacity(256 * 1024, file);
        for msg in msgs {
            let mark = w.stream_position().map_err(|e| AppError::io(&path, e))?;
            if let Err(reason) = write_mbox_message(volume, &msg, &mut w) {
                // Take back what was written of it; the next message starts there.
                w.flush().map_err(|e| AppError::io(&path, e))?;
                let f = w.get_mut();
                f.set_len(mark).map_err(|e| AppError::io(&path, e))?;
                f.seek(SeekFrom::Start(mark))
                    .map_err(|e| AppError::io(&path, e))?;
                outcome.damaged.push(BadItem {
                    item: format!("{}/{}", msg.meta.folder, msg.meta.source_id),
                    reason,
                });
                continue;
            }
            outcome.exported += 1;
            outcome.bytes += msg.meta.size;
        }
        w.flush().map_err(|e| AppError::io(&path, e))?;
        w.get_ref().sync_all().map_err(|e| AppError::io(&path, e))?;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbox_paths_nest_and_refuse_unsafe_names() {
        let f = |s: &str| FolderName::parse(s).unwrap();
        let long = "x".repeat(300);
        let folders: BTreeSet<FolderName> = [
            "INBOX",
            "INBOX/Receipts",
            "Archive/2024",
            "evil.sbd",
            "ok/index.msf",
            long.as_str(),
        ]
        .into_iter()
        .map(f)
        .collect();
        let p = mbox_paths(&folders);
        assert_eq!(p[&f("INBOX")], Ok(PathBuf::from("INBOX")));
        assert_eq!(
            p[&f("INBOX/Receipts")],
            Ok(PathBuf::from("INBOX.sbd/Receipts"))
        );
        assert_eq!(p[&f("Archive/2024")], Ok(PathBuf::from("Archive/2024")));
        assert!(p[&f("evil.sbd")].as_ref().unwrap_err().contains(".sbd"));
        assert!(p[&f("ok/index.msf")].is_err());
        assert!(p[&f(&long)].as_ref().unwrap_err().contains("300 bytes"));
    }
}
