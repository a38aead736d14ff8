//! `mailferry export`: writes a mailbox back out of the volume as a Maildir++ tree.
//!
//! Every message comes out byte-identical in its folder, in `cur/` as
//! `<source id>:2,<flags>`, with its internal date as mtime. Each file is written to
//! `tmp/` first and renamed into place (the Maildir delivery rule), so a reader never
//! sees half a message. A damaged message is named and skipped; all others come out.

use crate::AppError;
use mailferry_agent::source::maildir::dir_name_for_folder;
use mailferry_core::report::BadItem;
use mailferry_core::MailboxAddr;
use mailferry_store::Volume;
use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};
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
        fs::create_dir_all(&p).map_err(|e| AppError::io(&p, e))?;
    }
    Ok(())
}

/// Exports `mailbox` into the Maildir `out`, which must not exist or be empty.
pub fn export_maildir(
    volume: &Volume,
    mailbox: &MailboxAddr,
    out: &Path,
) -> Result<ExportOutcome, AppError> {
    if out.exists() {
        let mut entries = fs::read_dir(out).map_err(|e| AppError::io(out, e))?;
        if entries.next().is_some() {
            return Err(AppError::Usage(format!(
                "export target {} is not empty; export into a new directory so nothing is overwritten",
                out.display()
            )));
        }
    }
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
        let mut file = fs::File::create(&tmp).map_err(|e| AppError::io(&tmp, e))?;
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
