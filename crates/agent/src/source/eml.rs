//! `.eml` source: a directory tree of message files, one message per `.eml` file. Files at
//! the root are the INBOX; each subdirectory is a folder (`Archive/2024/x.eml` is in
//! folder `Archive/2024`; a top-level directory named INBOX in any case is the INBOX).
//!
//! The source id is the file name (`x.eml`); a name [`SourceId::parse`] refuses (one
//! with `:` for instance) is a named bad item. The internal date is the file's mtime, as
//! for Maildir: reading every file's `Date:` header would double the listing's I/O, and
//! tools that write `.eml` files usually set the mtime to the delivery time. There are
//! no flags. Symbolic links are never followed (so nothing outside the root is read):
//! each is a named bad item, as is any other file that is not a `.eml`. Hidden entries
//! (names starting with `.`) are skipped. This module only lists and opens files.

use super::{mtime_secs, Listing, Location, PriorLookup, Source, SourceItem};
use crate::AgentError;
use mailferry_core::{Flags, FolderName, SourceId};
use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A directory tree of `.eml` files.
pub struct EmlTree {
    root: PathBuf,
}

impl EmlTree {
    /// A tree rooted at `root` (checked when listed).
    pub fn new(root: PathBuf) -> Self {
        EmlTree { root }
    }
}

fn is_eml(name: &str) -> bool {
    name.len() > 4 && name.as_bytes()[name.len() - 4..].eq_ignore_ascii_case(b".eml")
}

struct Walk<'a> {
    out: &'a mut Listing,
    seen: HashSet<(FolderName, SourceId)>,
}

impl Walk<'_> {
    fn bad(&mut self, item: String, reason: impl Into<String>) {
        self.out.note_bad(item, reason);
    }

    /// Lists `dir`, whose files are in `folder` (`top`: the root of the tree).
    fn dir(&mut self, dir: &Path, folder: &FolderName, top: bool) {
        let entries = match super::sorted_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                self.bad(
                    folder.to_string(),
                    format!("cannot list directory {}: {e}", dir.display()),
                );
                self.out.incomplete.insert(folder.clone());
                return;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    self.bad(folder.to_string(), format!("directory listing failed: {e}"));
                    self.out.incomplete.insert(folder.clone());
                    continue;
                }
            };
            let os_name = entry.file_name();
            let Some(name) = os_name.to_str() else {
                self.bad(
                    format!("{folder}/{}", os_name.to_string_lossy()),
                    "file name is not UTF-8; not moved",
                );
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let item = format!("{folder}/{name}");
            let kind = match entry.file_type() {
                Ok(t) => t,
                Err(e) => {
                    self.bad(item, format!("cannot stat: {e}"));
                    continue;
                }
            };
            if kind.is_symlink() {
                self.bad(
                    item,
                    "a symbolic link; not followed (point the source at the real files)",
                );
            } else if kind.is_dir() {
                let sub = if top && FolderName::inbox().as_str().eq_ignore_ascii_case(name) {
                    Ok(FolderName::inbox())
                } else if top {
                    FolderName::parse(name)
                } else {
                    FolderName::parse(&format!("{folder}/{name}"))
                };
                match sub {
                    Ok(sub) => self.dir(&entry.path(), &sub, false),
                    Err(e) => self.bad(item, format!("folder not moved: {e}")),
                }
            } else if !kind.is_file() {
                self.bad(item, "not a regular file; not moved");
            } else if !is_eml(name) {
                self.bad(item, "not a .eml file; not moved");
            } else {
                self.file(&entry, folder, name, item);
            }
        }
    }

    fn file(&mut self, entry: &fs::DirEntry, folder: &FolderName, name: &str, item: String) {
        let source_id = match SourceId::parse(name) {
            Ok(s) => s,
            Err(e) => return self.bad(item, format!("not moved: {e}")),
        };
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) => return self.bad(item, format!("cannot stat: {e}")),
        };
        if !self.seen.insert((folder.clone(), source_id.clone())) {
            return self.bad(
                item,
                "another file of this folder has the same name (an INBOX directory and \
                 the root); only the first is moved",
            );
        }
        let internal_date = mtime_secs(&meta);
        self.out.items.push(SourceItem {
            folder: folder.clone(),
            source_id,
            flags: Flags::default(),
            internal_date,
            size: meta.len(),
            location: Location::File(entry.path()),
            ident: None,
        });
    }
}

impl Source for EmlTree {
    fn describe(&self) -> String {
        format!("eml:{}", self.root.display())
    }

    fn list(&self, _prior: &dyn PriorLookup) -> Result<Listing, AgentError> {
        let root = &self.root;
        let meta = fs::metadata(root).map_err(|e| AgentError::Source {
            path: root.clone(),
            reason: format!("cannot read: {e}"),
        })?;
        if !meta.is_dir() {
            return Err(AgentError::Source {
                path: root.clone(),
                reason: "not a directory (eml:PATH takes a directory tree of .eml files)".into(),
            });
        }
        let mut out = Listing::default();
        let mut walk = Walk {
            out: &mut out,
            seen: HashSet::new(),
        };
        walk.dir(root, &FolderName::inbox(), true);
        out.items
            .sort_by(|a, b| (&a.folder, &a.source_id).cmp(&(&b.folder, &b.source_id)));
        Ok(out)
    }

    fn open(&self, item: &SourceItem) -> std::io::Result<Box<dyn Read + Send>> {
        match &item.location {
            Location::File(path) => Ok(Box::new(fs::File::open(path)?)),
            other => Err(std::io::Error::other(format!(
                "a .eml item cannot be at {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
