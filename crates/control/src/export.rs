//! `mailferry export`: writes a mailbox back out of the volume as a Maildir++ tree or as
//! mbox files.
//!
//! Maildir: every message comes out byte-identical in its folder, in `cur/` as
//! `<source id>:2,<flags>`, with its internal date as mtime. Each file is written to
//! `tmp/` first and renamed into place (the Maildir delivery rule), so a reader never
//! sees half a message. Folders are laid out as Maildir++ (`.A.B`, the default) or as
//! Dovecot's `LAYOUT=fs` (`A/B`), their names in modified UTF-7 or UTF-8
//! ([`MaildirOptions`]). Every folder's directory is worked out before anything is
//! written: a folder the layout cannot hold fails the export up front, naming it.
//! Keywords are written Dovecot's way: a `dovecot-keywords` file per folder mapping
//! the letters `a`..`z` to keywords, and those letters in the file names. A folder with
//! more than 26 keywords (fewer if stored flags already use some lowercase letters) gets
//! the first ones in byte order; the others are listed in
//! [`ExportOutcome::keywords_not_written`].
//!
//! mbox: one mboxrd file per folder (`docs/mbox.md`), messages in the order the store
//! received them. A message that came from an mbox gets its original `From ` line back,
//! so an mbox moved and exported is byte-identical. Messages are never rewritten, so
//! keywords travel in mbox only inside the messages' own `X-Keywords:` headers (those
//! of a message that came from an mbox); other keywords are not written.
//!
//! Either way a damaged message is named and skipped and all others come out, and
//! nothing is written outside the export directory: folder names are checked again
//! before they become paths.

use crate::AppError;
use mailferry_agent::source::maildir::{dir_name_for_folder, encode_component, KEYWORDS_FILE};
use mailferry_agent::source::mbox;
use mailferry_core::profile::MaildirNames;
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
    /// Keywords a Maildir export could not write (a folder has only 26 keyword letters),
    /// per folder. The messages themselves were exported.
    pub keywords_not_written: Vec<KeywordsNotWritten>,
}

/// Keywords of one folder that did not fit in its 26 keyword letters.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct KeywordsNotWritten {
    /// The folder.
    pub folder: FolderName,
    /// The keywords left out, sorted by bytes.
    pub keywords: Vec<String>,
}

/// How folders become directories in a Maildir export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// Maildir++: `Archive/2024` is `.Archive.2024/`; a name component holding '.'
    /// cannot be written.
    #[default]
    MaildirPlusPlus,
    /// Dovecot's `LAYOUT=fs`: `Archive/2024` is `Archive/2024/`, INBOX the root.
    Fs,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::MaildirPlusPlus => "maildir++",
            Layout::Fs => "fs",
        })
    }
}

/// How a Maildir export names folder directories.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaildirOptions {
    /// Encoding of folder names (`Auto` writes modified UTF-7).
    pub names: MaildirNames,
    /// Folder layout.
    pub layout: Layout,
}

/// Names a `LAYOUT=fs` folder component cannot have: the Maildir subdirectories of its
/// parent, and Dovecot's own files next to them.
fn fs_component_clash(part: &str) -> Option<&'static str> {
    if matches!(part, "cur" | "new" | "tmp") {
        Some("is the name of a Maildir subdirectory (cur, new, tmp)")
    } else if part.starts_with("dovecot-") || part.starts_with("dovecot.") {
        Some("is the name of one of Dovecot's files (dovecot-*, dovecot.*)")
    } else {
        None
    }
}

/// The directory of `folder` under the export root, relative; `""` for the INBOX.
pub fn folder_dir(folder: &FolderName, opts: MaildirOptions) -> Result<PathBuf, String> {
    match opts.layout {
        Layout::MaildirPlusPlus => Ok(dir_name_for_folder(folder, opts.names)?
            .map(PathBuf::from)
            .unwrap_or_default()),
        Layout::Fs => {
            if folder.is_inbox() {
                return Ok(PathBuf::new());
            }
            let mut path = PathBuf::new();
            for part in folder.components() {
                let name = encode_component(part, opts.names);
                if let Some(why) = fs_component_clash(&name) {
                    return Err(format!("folder {folder:?}: component {part:?} {why}"));
                }
                if name.len() > 255 {
                    return Err(format!(
                        "folder {folder:?}: component {part:?} is {} bytes as a directory name \
                         (at most 255)",
                        name.len()
                    ));
                }
                path.push(name);
            }
            Ok(path)
        }
    }
}

/// Keyword letters of one folder: keyword → letter, and what did not fit.
#[derive(Debug, Default)]
struct FolderKeywords {
    /// Lowercase letters stored as letters in some message of the folder (volumes
    /// written before keywords, or a source letter nothing mapped): not given away.
    taken: BTreeSet<char>,
    keywords: BTreeSet<String>,
}

impl FolderKeywords {
    /// Assigns the free letters to the keywords in byte order.
    fn assign(&self) -> (BTreeMap<String, char>, Vec<String>) {
        let mut free = ('a'..='z').filter(|c| !self.taken.contains(c));
        let mut map = BTreeMap::new();
        let mut left = Vec::new();
        for k in &self.keywords {
            match free.next() {
                Some(c) => {
                    map.insert(k.clone(), c);
                }
                None => left.push(k.clone()),
            }
        }
        (map, left)
    }
}

/// The `:2,` letters of a message: its stored letters and its keywords' letters, sorted.
fn info_letters(flags: &mailferry_core::Flags, map: &BTreeMap<String, char>) -> String {
    let mut v: Vec<char> = flags.letters().chars().collect();
    v.extend(flags.keywords().filter_map(|k| map.get(k).copied()));
    v.sort_unstable();
    v.dedup();
    v.into_iter().collect()
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

/// Exports `mailbox` into the Maildir `out`, which must not exist or be empty. A folder
/// that `opts` cannot lay out is a usage error naming every such folder, raised before
/// anything is written.
pub fn export_maildir(
    volume: &Volume,
    mailbox: &MailboxAddr,
    out: &Path,
    opts: MaildirOptions,
) -> Result<ExportOutcome, AppError> {
    let listed = volume.list_messages(mailbox)?;
    // First pass, over the metadata only: every folder's directory and keyword letters.
    let mut dirs: BTreeMap<FolderName, PathBuf> = BTreeMap::new();
    let mut refused: BTreeMap<FolderName, String> = BTreeMap::new();
    let mut keywords: BTreeMap<FolderName, FolderKeywords> = BTreeMap::new();
    for msg in listed.iter().flatten() {
        let folder = &msg.meta.folder;
        if !dirs.contains_key(folder) && !refused.contains_key(folder) {
            match folder_dir(folder, opts) {
                Ok(d) => {
                    dirs.insert(folder.clone(), d);
                }
                Err(why) => {
                    refused.insert(folder.clone(), why);
                }
            }
        }
        let fk = keywords.entry(folder.clone()).or_default();
        fk.taken.extend(
            msg.meta
                .flags
                .letters()
                .chars()
                .filter(char::is_ascii_lowercase),
        );
        fk.keywords
            .extend(msg.meta.flags.keywords().map(str::to_string));
    }
    if !refused.is_empty() {
        let other = match opts.layout {
            Layout::MaildirPlusPlus => Layout::Fs,
            Layout::Fs => Layout::MaildirPlusPlus,
        };
        let mut msg = format!(
            "{} folder(s) of {mailbox} cannot be exported with --layout {}; nothing was written:",
            refused.len(),
            opts.layout
        );
        let mut other_fits = true;
        for (folder, why) in &refused {
            msg.push_str(&format!("\n  {why}"));
            let alt = MaildirOptions {
                layout: other,
                ..opts
            };
            other_fits &= folder_dir(folder, alt).is_ok();
        }
        if other_fits {
            msg.push_str(&format!(
                "\nexport with --layout {other}, which can hold them"
            ));
        }
        return Err(AppError::Usage(msg));
    }
    check_empty(out)?;
    ensure_maildir(out)?;
    let mut outcome = ExportOutcome::default();
    let mut letters: BTreeMap<FolderName, BTreeMap<String, char>> = BTreeMap::new();
    for (folder, fk) in &keywords {
        let (map, left) = fk.assign();
        if !map.is_empty() {
            let dir = out.join(&dirs[folder]);
            ensure_maildir(&dir)?;
            let mut by_letter: Vec<(char, &String)> = map.iter().map(|(k, c)| (*c, k)).collect();
            by_letter.sort();
            let text: String = by_letter
                .iter()
                .map(|(c, k)| format!("{} {k}\n", *c as u8 - b'a'))
                .collect();
            let path = dir.join(KEYWORDS_FILE);
            mailferry_audit::private::write(&path, text.as_bytes())
                .map_err(|e| AppError::io(&path, e))?;
        }
        if !left.is_empty() {
            outcome.keywords_not_written.push(KeywordsNotWritten {
                folder: folder.clone(),
                keywords: left,
            });
        }
        letters.insert(folder.clone(), map);
    }
    let mut made: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    for listed in listed {
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
        let dir = out.join(&dirs[&msg.meta.folder]);
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
        let info = info_letters(&msg.meta.flags, &letters[&msg.meta.folder]);
        let mut name = format!("{}:2,{info}", msg.meta.source_id);
        if dir.join("cur").join(&name).exists() {
            // Same source id stored twice with different content: keep both.
            name = format!("{}.{}:2,{info}", msg.meta.source_id, msg.id);
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

    #[test]
    fn folder_dirs_per_layout_and_encoding_issue17() {
        let f = |s: &str| FolderName::parse(s).unwrap();
        let o = |layout, names| MaildirOptions { layout, names };
        let pp = o(Layout::MaildirPlusPlus, MaildirNames::Mutf7);
        let fs8 = o(Layout::Fs, MaildirNames::Utf8);
        let fs7 = o(Layout::Fs, MaildirNames::Mutf7);
        assert_eq!(folder_dir(&f("INBOX"), pp), Ok(PathBuf::new()));
        assert_eq!(folder_dir(&f("INBOX"), fs8), Ok(PathBuf::new()));
        assert_eq!(
            folder_dir(&f("Projects/Entwürfe"), pp),
            Ok(PathBuf::from(".Projects.Entw&APw-rfe"))
        );
        assert_eq!(
            folder_dir(
                &f("Projects/Entwürfe"),
                o(Layout::MaildirPlusPlus, MaildirNames::Utf8)
            ),
            Ok(PathBuf::from(".Projects.Entwürfe"))
        );
        assert_eq!(
            folder_dir(&f("Projects/2024.Q1"), fs8),
            Ok(PathBuf::from("Projects/2024.Q1"))
        );
        assert_eq!(
            folder_dir(&f("Projects/Entwürfe"), fs7),
            Ok(PathBuf::from("Projects/Entw&APw-rfe"))
        );
        let e = folder_dir(&f("Projects/2024.Q1"), pp).unwrap_err();
        assert!(e.contains("\"Projects/2024.Q1\""), "{e}");
        for clash in ["cur", "A/new", "tmp/x", "dovecot-keywords"] {
            assert!(folder_dir(&f(clash), fs8).is_err(), "{clash}");
            assert!(folder_dir(&f(clash), pp).is_ok(), "{clash}");
        }
    }

    #[test]
    fn keyword_letters_skip_taken_ones_and_report_the_rest_issue17() {
        let mut fk = FolderKeywords::default();
        fk.taken.insert('a');
        fk.keywords = (0..27).map(|i| format!("k{i:02}")).collect();
        let (map, left) = fk.assign();
        assert_eq!(map.len(), 25, "a is a stored letter, not a keyword's");
        assert_eq!(map["k00"], 'b');
        assert_eq!(map["k24"], 'z');
        assert_eq!(left, ["k25", "k26"]);
        let flags = mailferry_core::Flags::new("Sa", ["k01", "k26"]).unwrap();
        assert_eq!(info_letters(&flags, &map), "Sac");
    }
}
