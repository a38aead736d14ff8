//! Maildir source: Maildir++ layout (`cur/`, `new/`, subfolders as `.Name.Sub`), flags
//! from the `:2,` suffix, internal date from the file's mtime (as Dovecot does).
//!
//! Folder names on disk are IMAP modified UTF-7; one that does not decode, or decodes
//! to a name that could escape a directory, is a named bad item and its messages are
//! not moved. This module only lists and opens files; it never writes to the source.
//!
//! # Delta passes
//!
//! Maildir files are never rewritten, only renamed (flags) or removed, and every such
//! change, like every delivery, updates the modification time of `cur/` or `new/`. So
//! the listing reuses what earlier passes acknowledged ([`Prior`]) in two ways:
//!
//! - A folder whose `cur/` and `new/` have the same nanosecond mtimes as in its cursor,
//!   and held exactly the acknowledged messages when the cursor was taken, is not read
//!   at all: it is listed in [`Listing::delta`] with nothing new. As in Dovecot, an
//!   mtime is only trusted if it is at least [`MTIME_TRUST`] older than the scan that
//!   recorded it (a change in the same clock tick as the scan would not move the
//!   mtime); otherwise the folder is read again.
//! - A folder whose `cur/` is unchanged but whose `new/` changed (mail was delivered):
//!   only `new/` is read. The cursor records how many files `cur/` held; if every
//!   acknowledged message not found in `new/` now adds up to exactly that, none is gone,
//!   and the folder is listed in [`Listing::delta`] with the files of `new/` the
//!   checkpoint does not have. Otherwise the whole folder is read. A file of `new/`
//!   whose inode change time is older than the last scan's trust line was listed by
//!   that scan (and so acknowledged): only younger files are looked up.
//! - A folder that is read: a file whose unique name and flags the checkpoint already
//!   has is not `stat`ed; its size and date come from the checkpoint.

use super::{DeltaFolder, Listing, Location, PriorItem, PriorLookup, Source, SourceItem};
use crate::AgentError;
use mailferry_core::report::BadItem;
use mailferry_core::{mutf7, Flags, FolderName, SourceId};
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How much older than the scan that recorded it a directory's mtime must be before a
/// later pass trusts it to mean "unchanged".
pub const MTIME_TRUST: Duration = Duration::from_secs(2);

/// Tag of this module's folder cursors.
const CURSOR_TAG: &str = "maildir2";

/// What a folder cursor records: the mtimes of `cur/` and `new/` (nanoseconds since the
/// epoch, `-` if absent) before the scan, the time the scan started, how many messages
/// the folder held and how many of them were files in `cur/`. Written as
/// `maildir2 CUR NEW SCAN COUNT IN_CUR`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cursor {
    cur: Option<i128>,
    new: Option<i128>,
    scan: i128,
    count: usize,
    in_cur: usize,
}

impl Cursor {
    fn encode(&self) -> String {
        let t = |v: Option<i128>| v.map_or("-".to_string(), |n| n.to_string());
        format!(
            "{CURSOR_TAG} {} {} {} {} {}",
            t(self.cur),
            t(self.new),
            self.scan,
            self.count,
            self.in_cur
        )
    }

    fn parse(s: &str) -> Option<Cursor> {
        let mut it = s.split(' ');
        if it.next()? != CURSOR_TAG {
            return None;
        }
        let t = |v: &str| -> Option<Option<i128>> {
            if v == "-" {
                Some(None)
            } else {
                v.parse().ok().map(Some)
            }
        };
        let c = Cursor {
            cur: t(it.next()?)?,
            new: t(it.next()?)?,
            scan: it.next()?.parse().ok()?,
            count: it.next()?.parse().ok()?,
            in_cur: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(c)
    }

    /// True if `m`, one of this cursor's mtimes, is old enough before its scan to mean
    /// "no change after the scan" when it is seen again.
    fn trusted(&self, m: Option<i128>) -> bool {
        m.is_none_or(|m| m <= self.scan - MTIME_TRUST.as_nanos() as i128)
    }

    /// True if `cur/` is as this cursor saw it.
    fn cur_holds(&self, now: &Cursor) -> bool {
        self.cur == now.cur && self.trusted(self.cur)
    }

    /// True if this cursor, read back, says the folder is unchanged now.
    fn still_holds(&self, now: &Cursor) -> bool {
        self.cur_holds(now) && self.new == now.new && self.trusted(self.new)
    }
}

fn nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// The mtime of a directory in nanoseconds; `None` if it does not exist (or cannot be
/// read: then the scan reports it).
fn dir_mtime(path: &Path) -> Option<i128> {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .map(nanos)
}

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

fn list_folder(dir: &Path, folder: &FolderName, prior: &dyn PriorLookup, out: &mut Listing) {
    // The scan's start and the directories' mtimes, taken before anything is read: a
    // change while the scan runs moves an mtime past what the cursor records.
    let now = Cursor {
        scan: nanos(SystemTime::now()),
        cur: dir_mtime(&dir.join("cur")),
        new: dir_mtime(&dir.join("new")),
        count: 0,
        in_cur: 0,
    };
    let acknowledged = prior.count(folder);
    let proven = prior
        .cursor(folder)
        .as_deref()
        .and_then(Cursor::parse)
        // Every message listed when the cursor was taken is acknowledged (none failed
        // or was left out by the profile), and the folder may be listed as a delta.
        .filter(|c| c.count == acknowledged && acknowledged > 0)
        .filter(|_| prior.may_list_delta(folder));
    if let Some(pc) = proven {
        if pc.still_holds(&now) {
            out.delta.insert(
                folder.clone(),
                DeltaFolder {
                    acknowledged: acknowledged as u64,
                    bytes: prior.bytes(folder),
                },
            );
            // Keeps the cursor that proved it: its mtimes are the trusted ones.
            out.cursors.insert(folder.clone(), pc.encode());
            return;
        }
        if pc.cur_holds(&now) && list_new_only(dir, folder, prior, &pc, &now, out) {
            return;
        }
    }
    let known = if acknowledged > 0 {
        prior.items(folder)
    } else {
        BTreeMap::new()
    };
    let listed_before = out.items.len();
    let mut in_cur = 0;
    let mut seen = HashSet::new();
    for sub in ["cur", "new"] {
        if sub == "new" {
            in_cur = out.items.len() - listed_before;
        }
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
            let (unique, flags) = parse_file_name(name);
            // Known under the same name and flags: what the checkpoint has is current.
            let known = SourceId::parse(unique)
                .ok()
                .and_then(|id| known.get_key_value(&id));
            if let Some((id, p)) = known {
                if Flags::from_maildir(&flags).is_ok_and(|f| f == p.flags)
                    && seen.insert(id.clone())
                {
                    out.items.push(SourceItem {
                        folder: folder.clone(),
                        source_id: id.clone(),
                        flags: p.flags.clone(),
                        internal_date: p.internal_date,
                        size: p.size,
                        location: Location::File(entry.path()),
                        ident: None,
                    });
                    continue;
                }
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
    out.cursors.insert(
        folder.clone(),
        Cursor {
            count: out.items.len() - listed_before,
            in_cur,
            ..now
        }
        .encode(),
    );
}

/// Lists a folder whose `cur/` is unchanged by reading `new/` only (see the module
/// docs). False, with nothing added to `out`, if that cannot prove the folder: then it
/// is read whole.
fn list_new_only(
    dir: &Path,
    folder: &FolderName,
    prior: &dyn PriorLookup,
    pc: &Cursor,
    now: &Cursor,
    out: &mut Listing,
) -> bool {
    let path = dir.join("new");
    let Ok(entries) = fs::read_dir(&path) else {
        return false;
    };
    let mut listed = Vec::new();
    let mut known_here = 0usize;
    let mut new_ones = 0usize;
    let mut seen = HashSet::new();
    for entry in entries {
        let Ok(entry) = entry else { return false };
        let os_name = entry.file_name();
        let Some(name) = os_name.to_str() else {
            return false; // named as bad by the full scan
        };
        if name.starts_with('.') {
            continue;
        }
        let (unique, flags) = parse_file_name(name);
        let Ok(id) = SourceId::parse(unique) else {
            return false;
        };
        let Ok(flags) = Flags::from_maildir(&flags) else {
            return false;
        };
        if !seen.insert(id.clone()) {
            return false;
        }
        // A file whose inode changed (created, renamed) before the last scan's trust
        // line was listed by that scan, which every listed message of was acknowledged
        // in: no need to look it up. Only younger ones are.
        let meta = entry.metadata().ok();
        let older = meta.as_ref().is_some_and(|m| {
            i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec())
                <= pc.scan - MTIME_TRUST.as_nanos() as i128
        });
        if older {
            known_here += 1;
            continue;
        }
        let prior_item: Option<PriorItem> = prior.get(folder, &id);
        if let Some(p) = &prior_item {
            known_here += 1;
            if p.flags == flags {
                continue; // acknowledged, unchanged
            }
        }
        let (internal_date, size) = match &prior_item {
            Some(p) => (p.internal_date, p.size),
            None => {
                new_ones += 1;
                let Some(meta) = meta else {
                    return false;
                };
                if !meta.is_file() {
                    continue;
                }
                let date = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                (date, meta.len())
            }
        };
        listed.push(SourceItem {
            folder: folder.clone(),
            source_id: id,
            flags,
            internal_date,
            size,
            location: Location::File(entry.path()),
            ident: None,
        });
    }
    // Every acknowledged message not in new/ now must be one of the files cur/ held,
    // unchanged: otherwise one is gone (or moved), and only a full read tells which.
    if pc.count.checked_sub(known_here) != Some(pc.in_cur) {
        return false;
    }
    out.delta.insert(
        folder.clone(),
        DeltaFolder {
            acknowledged: pc.count as u64,
            bytes: prior.bytes(folder),
        },
    );
    out.cursors.insert(
        folder.clone(),
        Cursor {
            cur: pc.cur,
            new: now.new,
            scan: now.scan,
            count: pc.count + new_ones,
            in_cur: pc.in_cur,
        }
        .encode(),
    );
    out.items.extend(listed);
    true
}

impl Source for Maildir {
    fn describe(&self) -> String {
        format!("maildir:{}", self.root.display())
    }

    fn list(&self, prior: &dyn PriorLookup) -> Result<Listing, AgentError> {
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
        let inbox = FolderName::inbox();
        list_folder(root, &inbox, prior, &mut out);
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
            list_folder(&path, &folder, prior, &mut out);
        }
        out.items
            .sort_by(|a, b| (&a.folder, &a.source_id).cmp(&(&b.folder, &b.source_id)));
        Ok(out)
    }

    fn open(&self, item: &SourceItem) -> std::io::Result<Box<dyn Read + Send>> {
        match &item.location {
            Location::File(path) => match fs::File::open(path) {
                Ok(f) => Ok(Box::new(f)),
                // An item listed from the checkpoint may sit in `new/` or under other
                // flags; find it by its unique name.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let folder_dir = path.parent().and_then(Path::parent).ok_or(e)?;
                    let found = find_unique(folder_dir, item.source_id.as_str())
                        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
                    Ok(Box::new(fs::File::open(found)?))
                }
                Err(e) => Err(e),
            },
            other => Err(std::io::Error::other(format!(
                "a Maildir item cannot be at {other}"
            ))),
        }
    }
}

/// The file of `unique` in `cur/` or `new/` of a folder directory.
fn find_unique(folder_dir: &Path, unique: &str) -> Option<PathBuf> {
    for sub in ["cur", "new"] {
        for entry in fs::read_dir(folder_dir.join(sub)).ok()?.flatten() {
            let name = entry.file_name();
            if name.to_str().map(|n| parse_file_name(n).0) == Some(unique) {
                return Some(entry.path());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
