//! Maildir source: Maildir++ layout (`cur/`, `new/`, subfolders as `.Name.Sub`), flags
//! from the `:2,` suffix, internal date from the file's mtime (as Dovecot does).
//!
//! Folder names on disk are IMAP modified UTF-7; one that does not decode, or decodes
//! to a name that could escape a directory, is a named bad item and its messages are
//! not moved. This module only lists and opens files; it never writes to the source.

use super::{Listing, Location, Prior, Source, SourceItem};
use crate::AgentError;
use mailferry_core::report::BadItem;
use mailferry_core::{mutf7, Flags, FolderName, SourceId};
use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// A Maildir++ tree rooted at a directory.
pub struct Maildir {
    root: PathBuf,
}

impl Maildir {
    /// A Maildir rooted at `root` (checked when listed).
    pub fn new(root: PathBuf) -> Self {
        Maildir { root }
    }
}

/// Maps a Maildir++ subfolder directory name (`.Archive.2024`) to a folder name.
pub fn folder_from_dir_name(name: &str) -> Result<FolderName, String> {
    let inner = name
        .strip_prefix('.')
        .ok_or_else(|| "not a Maildir++ folder (no leading '.')".to_string())?;
    let mut parts = Vec::new();
    for raw in inner.split('.') {
        let part = mutf7::decode(raw).map_err(|e| format!("name is not modified UTF-7: {e}"))?;
        if part.contains('/') {
            return Err("a component contains '/'".into());
        }
        parts.push(part);
    }
    FolderName::parse(&parts.join("/")).map_err(|e| e.to_string())
}

/// Maps a folder to its Maildir++ directory name (`Archive/2024` → `.Archive.2024`).
/// A component containing '.' cannot be represented in Maildir++ and is refused.
pub fn dir_name_for_folder(folder: &FolderName) -> Result<Option<String>, String> {
    if folder.is_inbox() {
        return Ok(None);
    }
    let mut out = String::new();
    for part in folder.components() {
        if part.contains('.') {
            return Err(format!(
                "folder {folder:?}: component {part:?} contains '.', the Maildir++ separator"
            ));
        }
        out.push('.');
        out.push_str(&mutf7::encode(part));
    }
    Ok(Some(out))
}

/// Splits a Maildir file name into its unique part and flags.
pub fn parse_file_name(name: &str) -> (&str, String) {
    match name.split_once(':') {
        Some((unique, info)) => {
            let flags = info
                .strip_prefix("2,")
                .map(|f| f.chars().filter(|c| c.is_ascii_alphabetic()).collect())
                .unwrap_or_default();
            (unique, flags)
        }
        None => (name, String::new()),
    }
}

fn list_folder(dir: &Path, folder: &FolderName, out: &mut Listing) {
    let mut seen = HashSet::new();
    for sub in ["cur", "new"] {
        let path = dir.join(sub);
        let entries = match fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                out.bad.push(BadItem {
                    item: format!("{folder}/{sub}"),
                    reason: format!("cannot read {}: {e}", path.display()),
                });
                out.incomplete.insert(folder.clone());
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    out.bad.push(BadItem {
                        item: format!("{folder}/{sub}"),
                        reason: format!("directory listing failed: {e}"),
                    });
                    out.incomplete.insert(folder.clone());
                    continue;
                }
            };
            let os_name = entry.file_name();
            let Some(name) = os_name.to_str() else {
                out.bad.push(BadItem {
                    item: format!("{folder}/{sub}/{}", os_name.to_string_lossy()),
                    reason: "file name is not UTF-8".into(),
                });
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let item_name = format!("{folder}/{sub}/{name}");
            let meta = match entry.metadata() {
                Ok(m) if m.is_file() => m,
                Ok(_) => continue,
                Err(e) => {
                    out.bad.push(BadItem {
                        item: item_name,
                        reason: format!("cannot stat: {e}"),
                    });
                    // It may be a message the destination holds: keep it there.
                    out.incomplete.insert(folder.clone());
                    continue;
                }
            };
            let (unique, flags) = parse_file_name(name);
            let source_id = match SourceId::parse(unique) {
                Ok(s) => s,
                Err(e) => {
                    out.bad.push(BadItem {
                        item: item_name,
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            if !seen.insert(source_id.clone()) {
                out.bad.push(BadItem {
                    item: item_name,
                    reason: "another file in this folder has the same Maildir unique name; \
                             only the first is moved"
                        .into(),
                });
                continue;
            }
            let internal_date = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            out.items.push(SourceItem {
                folder: folder.clone(),
                source_id,
                flags: Flags::from_maildir(&flags).expect("filtered to letters"),
                internal_date,
                size: meta.len(),
                location: Location::File(entry.path()),
                ident: None,
            });
        }
    }
}

impl Source for Maildir {
    fn describe(&self) -> String {
        format!("maildir:{}", self.root.display())
    }

    fn list(&self, _prior: &Prior) -> Result<Listing, AgentError> {
        let root = &self.root;
        let fail = |reason: String| AgentError::Source {
            path: root.clone(),
            reason,
        };
        if !root.join("cur").is_dir() && !root.join("new").is_dir() {
            return Err(fail(
                "not a Maildir: it has neither cur/ nor new/ (point --source at the mailbox root)"
                    .into(),
            ));
        }
        let mut out = Listing::default();
        list_folder(root, &FolderName::inbox(), &mut out);
        let entries = fs::read_dir(root).map_err(|e| fail(format!("cannot list: {e}")))?;
        let mut subdirs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| fail(format!("cannot list: {e}")))?;
            let os_name = entry.file_name();
            let lossy = os_name.to_string_lossy().into_owned();
            if !lossy.starts_with('.') || lossy == "." || lossy == ".." {
                continue;
            }
            if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let Some(name) = os_name.to_str() else {
                out.bad.push(BadItem {
                    item: lossy,
                    reason: "folder directory name is not UTF-8; its messages were not moved"
                        .into(),
                });
                continue;
            };
            match folder_from_dir_name(name) {
                Ok(folder) if folder.is_inbox() => out.bad.push(BadItem {
                    item: name.to_string(),
                    reason: "a subfolder named INBOX clashes with the Maildir root; not moved"
                        .into(),
                }),
                Ok(folder) => subdirs.push((folder, entry.path())),
                Err(reason) => out.bad.push(BadItem {
                    item: name.to_string(),
                    reason: format!("folder not moved: {reason}"),
                }),
            }
        }
        for (folder, path) in subdirs {
            list_folder(&path, &folder, &mut out);
        }
        out.items
            .sort_by(|a, b| (&a.folder, &a.source_id).cmp(&(&b.folder, &b.source_id)));
        Ok(out)
    }

    fn open(&self, item: &SourceItem) -> std::io::Result<Box<dyn Read + Send>> {
        match &item.location {
            Location::File(path) => Ok(Box::new(fs::File::open(path)?)),
            other => Err(std::io::Error::other(format!(
                "a Maildir item cannot be at {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
