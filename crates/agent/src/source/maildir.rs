//! Maildir source: Maildir++ layout (`cur/`, `new/`, subfolders as `.Name.Sub`), flags
//! from the `:2,` suffix, internal date from the file's mtime (as Dovecot does).
//!
//! Folder names on disk are IMAP modified UTF-7 (Dovecot's default) or raw UTF-8
//! (Dovecot's `maildir:~/Maildir:UTF-8`, sync tools that decode names): see
//! [`MaildirNames`]; by default each name is detected on its own. One that is neither,
//! or decodes to a name that could escape a directory, is a named bad item and its
//! messages are not moved. This module only lists and opens files; it never writes to
//! the source.
//!
//! # Keywords
//!
//! Dovecot keeps IMAP keywords as the lowercase letters `a`..`z` of the `:2,` suffix,
//! each mapped to a keyword by the folder's `dovecot-keywords` file (lines `N name`,
//! `N` = 0..25 for `a`..`z`). A lowercase letter the file maps becomes that keyword; one
//! it does not map stays a letter, so nothing is lost. Uppercase letters are the
//! Maildir flags.
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
//!
//! Setting or clearing a keyword renames the message file, which moves `cur/`'s mtime.
//! The mtime of `dovecot-keywords` is in the cursor as well, so a change to that file
//! alone (Dovecot only appends to it, but a hand edit may re-map a letter) also has the
//! folder read again.

use super::{
    mtime_secs, DeltaFolder, Listing, Location, PriorItem, PriorLookup, Source, SourceItem,
};
use crate::AgentError;
use mailferry_core::profile::MaildirNames;
use mailferry_core::report::BadItem;
use mailferry_core::{mutf7, Flags, FolderName, SourceId};
use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How much older than the scan that recorded it a directory's mtime must be before a
/// later pass trusts it to mean "unchanged".
pub const MTIME_TRUST: Duration = Duration::from_secs(2);

/// Tag of this module's folder cursors.
/// (`maildir2` cursors, written before keywords were read, had no `KW`: a folder with
/// one is read once more.)
const CURSOR_TAG: &str = "maildir3";

/// What a folder cursor records: the mtimes of `cur/`, `new/` and `dovecot-keywords`
/// (nanoseconds since the epoch, `-` if absent) before the scan, the time the scan
/// started, how many messages the folder held and how many of them were files in
/// `cur/`. Written as `maildir3 CUR NEW SCAN COUNT IN_CUR KW`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cursor {
    cur: Option<i128>,
    new: Option<i128>,
    scan: i128,
    count: usize,
    in_cur: usize,
    kw: Option<i128>,
}

impl Cursor {
    fn encode(&self) -> String {
        let t = |v: Option<i128>| v.map_or("-".to_string(), |n| n.to_string());
        format!(
            "{CURSOR_TAG} {} {} {} {} {} {}",
            t(self.cur),
            t(self.new),
            self.scan,
            self.count,
            self.in_cur,
            t(self.kw)
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
            kw: t(it.next()?)?,
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
        self.cur == now.cur && self.trusted(self.cur) && self.kw == now.kw && self.trusted(self.kw)
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
    names: MaildirNames,
}

impl Maildir {
    /// A Maildir rooted at `root` (checked when listed), folder names detected per name.
    pub fn new(root: PathBuf) -> Self {
        Maildir::with_names(root, MaildirNames::Auto)
    }

    /// A Maildir whose folder directory names are read as `names` says.
    pub fn with_names(root: PathBuf, names: MaildirNames) -> Self {
        Maildir { root, names }
    }
}

/// A directory name for reports: as is if it is printable UTF-8, else with its bytes
/// escaped (`\xff`), so no lossy replacement hides which directory it is.
pub fn show_name(name: &[u8]) -> String {
    match std::str::from_utf8(name) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_string(),
        _ => name.escape_ascii().to_string(),
    }
}

fn decode_utf8(parts: &[&[u8]]) -> Result<Vec<String>, String> {
    parts
        .iter()
        .map(|p| {
            std::str::from_utf8(p)
                .map(str::to_string)
                .map_err(|e| format!("name is not UTF-8 ({e})"))
        })
        .collect()
}

fn decode_mutf7(parts: &[&[u8]]) -> Result<Vec<String>, String> {
    parts
        .iter()
        .map(|p| match std::str::from_utf8(p) {
            Ok(s) => mutf7::decode(s).map_err(|e| format!("name is not modified UTF-7 ({e})")),
            Err(_) => Err("name is not modified UTF-7 (it has non-ASCII bytes)".to_string()),
        })
        .collect()
}

/// Maps a Maildir++ subfolder directory name (`.Archive.2024`, `.Entw&APw-rfe`,
/// `.Entwürfe`) to a folder name, decoding it as `names` says; `Auto` decides per name:
/// modified UTF-7 if every component is valid as such, otherwise UTF-8 as is (so
/// `.R&D`, which is not modified UTF-7, is the folder `R&D`).
pub fn folder_from_dir_name(name: &OsStr, names: MaildirNames) -> Result<FolderName, String> {
    let inner = name
        .as_bytes()
        .strip_prefix(b".")
        .ok_or_else(|| "not a Maildir++ folder (no leading '.')".to_string())?;
    // Split before decoding: a modified UTF-7 run may decode to a '.' that is part of
    // the component's name, not a separator.
    let raw: Vec<&[u8]> = inner.split(|&b| b == b'.').collect();
    let parts = match names {
        MaildirNames::Utf8 => decode_utf8(&raw)?,
        MaildirNames::Mutf7 => decode_mutf7(&raw).map_err(|e| {
            format!("{e}; if this tree has UTF-8 folder names, use --maildir-names auto or utf8")
        })?,
        MaildirNames::Auto => decode_mutf7(&raw).or_else(|e7| {
            decode_utf8(&raw)
                .map_err(|e8| format!("name is neither modified UTF-7 nor UTF-8: {e7}; {e8}"))
        })?,
    };
    if parts.iter().any(|p| p.contains('/')) {
        return Err("a component contains '/'".into());
    }
    FolderName::parse(&parts.join("/")).map_err(|e| e.to_string())
}

/// Encodes one folder name component for a directory name: modified UTF-7 (`Mutf7`,
/// and `Auto`, which writes what Dovecot writes by default) or UTF-8 as is.
pub fn encode_component(part: &str, names: MaildirNames) -> String {
    match names {
        MaildirNames::Utf8 => part.to_string(),
        MaildirNames::Mutf7 | MaildirNames::Auto => mutf7::encode(part),
    }
}

/// Maps a folder to its Maildir++ directory name (`Archive/2024` → `.Archive.2024`),
/// components encoded as `names` says. A component containing '.' cannot be
/// represented in Maildir++ and is refused, naming the folder; so is a name longer than
/// a directory name can be.
pub fn dir_name_for_folder(
    folder: &FolderName,
    names: MaildirNames,
) -> Result<Option<String>, String> {
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
        out.push_str(&encode_component(part, names));
    }
    if out.len() > 255 {
        return Err(format!(
            "folder {folder:?}: its Maildir++ directory name is {} bytes (at most 255)",
            out.len()
        ));
    }
    Ok(Some(out))
}

/// Name of the file in which Dovecot maps keyword letters to keywords.
pub const KEYWORDS_FILE: &str = "dovecot-keywords";

/// Longest `dovecot-keywords` file read (26 lines of 255-byte keywords fit many times).
const MAX_KEYWORDS_FILE: u64 = 64 * 1024;

/// A folder's `dovecot-keywords`: the keyword of each letter `a`..`z`, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeywordLetters([Option<String>; 26]);

impl KeywordLetters {
    /// Parses a `dovecot-keywords` file's text (`N name` lines). Lines that are not
    /// that, indices over 25 and names that are not valid keywords are left out (the
    /// letter then stays a letter), each with a warning naming `origin`.
    pub fn parse(text: &str, origin: &Path) -> Self {
        let mut map = KeywordLetters::default();
        for line in text.lines() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed = line
                .split_once(' ')
                .and_then(|(n, k)| Some((n.parse::<usize>().ok()?, k)));
            match parsed {
                Some((n, k)) if n < 26 && Flags::keyword_ok(k).is_ok() => {
                    map.0[n] = Some(k.to_string())
                }
                // Dovecot keeps keywords past the 26th in the file, without a letter.
                Some((n, _)) if n >= 26 => {}
                _ => tracing::warn!(
                    file = %origin.display(),
                    line,
                    "dovecot-keywords line left out (not `N keyword`); its letter stays a letter"
                ),
            }
        }
        map
    }

    /// Reads `dir/dovecot-keywords`; absent or unreadable: no keywords (every lowercase
    /// letter stays a letter).
    pub fn read(dir: &Path) -> Self {
        let path = dir.join(KEYWORDS_FILE);
        let mut text = String::new();
        match fs::File::open(&path) {
            Ok(f) => {
                if let Err(e) = f.take(MAX_KEYWORDS_FILE).read_to_string(&mut text) {
                    tracing::warn!(file = %path.display(), error = %e,
                        "dovecot-keywords unreadable; keyword letters stay letters");
                    return KeywordLetters::default();
                }
                KeywordLetters::parse(&text, &path)
            }
            Err(_) => KeywordLetters::default(),
        }
    }

    /// The flags of a file whose `:2,` letters are `letters`: uppercase ones as they
    /// are, lowercase ones mapped to their keyword if this file maps them.
    pub fn flags(&self, letters: &str) -> Result<Flags, mailferry_core::CoreError> {
        let mut kept = String::new();
        let mut keywords = Vec::new();
        for c in letters.chars() {
            let k = c
                .is_ascii_lowercase()
                .then(|| self.0[(c as u8 - b'a') as usize].as_deref())
                .flatten();
            match k {
                Some(k) => keywords.push(k),
                None => kept.push(c),
            }
        }
        Flags::new(&kept, keywords)
    }
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
        kw: dir_mtime(&dir.join(KEYWORDS_FILE)),
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
    let mut scan = FullScan {
        folder,
        kw: KeywordLetters::read(dir),
        known: if acknowledged > 0 {
            prior.items(folder)
        } else {
            BTreeMap::new()
        },
        seen: HashSet::new(),
        out,
    };
    let listed_before = scan.out.items.len();
    let mut in_cur = 0;
    for sub in ["cur", "new"] {
        if sub == "new" {
            in_cur = scan.out.items.len() - listed_before;
        }
        scan.list_sub(dir, sub);
    }
    let out = scan.out;
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

/// Reading a folder's `cur/` and `new/` whole: what the checkpoint knows of it, the ids
/// seen so far, and the listing the items and bad items go to.
struct FullScan<'a> {
    folder: &'a FolderName,
    kw: KeywordLetters,
    known: BTreeMap<SourceId, PriorItem>,
    seen: HashSet<SourceId>,
    out: &'a mut Listing,
}

// === impl FullScan ===

impl FullScan<'_> {
    fn bad(&mut self, item: String, reason: String) {
        self.out.bad.push(BadItem { item, reason });
    }

    /// Lists `dir/sub`; a directory that cannot be read makes the folder incomplete.
    fn list_sub(&mut self, dir: &Path, sub: &str) {
        let folder = self.folder;
        let path = dir.join(sub);
        let entries = match fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                self.bad(
                    format!("{folder}/{sub}"),
                    format!("cannot read {}: {e}", path.display()),
                );
                self.out.incomplete.insert(folder.clone());
                return;
            }
        };
        for entry in entries {
            match entry {
                Ok(entry) => self.entry(sub, entry),
                Err(e) => {
                    self.bad(
                        format!("{folder}/{sub}"),
                        format!("directory listing failed: {e}"),
                    );
                    self.out.incomplete.insert(folder.clone());
                }
            }
        }
    }

    /// Lists one file of `sub`: from the checkpoint if it is known under the same name
    /// and flags, else from its metadata.
    fn entry(&mut self, sub: &str, entry: fs::DirEntry) {
        let folder = self.folder;
        let os_name = entry.file_name();
        let Some(name) = os_name.to_str() else {
            return self.bad(
                format!("{folder}/{sub}/{}", os_name.to_string_lossy()),
                "file name is not UTF-8".into(),
            );
        };
        if name.starts_with('.') {
            return;
        }
        let (unique, flags) = parse_file_name(name);
        // Known under the same name and flags: what the checkpoint has is current.
        let known = SourceId::parse(unique)
            .ok()
            .and_then(|id| self.known.get_key_value(&id));
        if let Some((id, p)) = known {
            if self.kw.flags(&flags).is_ok_and(|f| f == p.flags) && self.seen.insert(id.clone()) {
                self.out.items.push(SourceItem {
                    folder: folder.clone(),
                    source_id: id.clone(),
                    flags: p.flags.clone(),
                    internal_date: p.internal_date,
                    size: p.size,
                    location: Location::File(entry.path()),
                    ident: None,
                });
                return;
            }
        }
        let item_name = format!("{folder}/{sub}/{name}");
        let meta = match entry.metadata() {
            Ok(m) if m.is_file() => m,
            Ok(_) => return,
            Err(e) => {
                self.bad(item_name, format!("cannot stat: {e}"));
                // It may be a message the destination holds: keep it there.
                self.out.incomplete.insert(folder.clone());
                return;
            }
        };
        let source_id = match SourceId::parse(unique) {
            Ok(s) => s,
            Err(e) => return self.bad(item_name, e.to_string()),
        };
        if !self.seen.insert(source_id.clone()) {
            return self.bad(
                item_name,
                "another file in this folder has the same Maildir unique name; \
                 only the first is moved"
                    .into(),
            );
        }
        let internal_date = mtime_secs(&meta);
        let flags = match self.kw.flags(&flags) {
            Ok(f) => f,
            Err(e) => return self.bad(item_name, format!("flags not readable: {e}")),
        };
        self.out.items.push(SourceItem {
            folder: folder.clone(),
            source_id,
            flags,
            internal_date,
            size: meta.len(),
            location: Location::File(entry.path()),
            ident: None,
        });
    }
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
    let kw = KeywordLetters::read(dir);
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
        let Ok(flags) = kw.flags(&flags) else {
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
                let date = mtime_secs(&meta);
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
            kw: now.kw,
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
            let bytes = os_name.as_bytes();
            if !bytes.starts_with(b".") || bytes == b"." || bytes == b".." {
                continue;
            }
            if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let name = show_name(bytes);
            match folder_from_dir_name(&os_name, self.names) {
                Ok(folder) if folder.is_inbox() => out.bad.push(BadItem {
                    item: name,
                    reason: "a subfolder named INBOX clashes with the Maildir root; not moved"
                        .into(),
                }),
                Ok(folder) => subdirs.push((folder, entry.path())),
                Err(reason) => out.bad.push(BadItem {
                    item: name,
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
