//! Mail sources behind one trait: list what is there, then open items one at a time.
//!
//! Sources are blocking (file reads, or a network client driven from a blocking
//! thread); the agent runs them off the async runtime. A source never holds a whole
//! message in memory: [`Source::open`] returns a reader.
//!
//! A listing covers every folder, in one of two forms. A folder listed in full has every
//! message it holds in [`Listing::items`]: the pass compares them with the checkpoint to
//! find new, changed and deleted messages. A folder in [`Listing::delta`] is one the
//! source can vouch for against the checkpoint (its cursor proves what changed since the
//! last clean pass): only its new and changed messages are listed, every other
//! acknowledged message of it is still there as acknowledged, and none is gone. That is
//! what makes a pass over a large, mostly unchanged mailbox cost what changed.
//!
//! What a source learnt in earlier passes comes back to it through [`PriorLookup`],
//! folder by folder and on demand, so a source that can ask "what changed since?"
//! (IMAP CONDSTORE, Maildir directory mtimes) never loads the folders that did not
//! change. A folder the source could not list completely goes in
//! [`Listing::incomplete`], and the pass never deletes anything of such a folder at the
//! destination.

pub mod connections;
pub mod eml;
pub mod imap;
pub mod maildir;
pub mod mbox;

use mailferry_core::profile::Role;
use mailferry_core::report::BadItem;
use mailferry_core::{Flags, FolderName, SourceId};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;

/// Where a listed message is, in the source's own terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A whole file (Maildir, .eml).
    File(PathBuf),
    /// A byte range of a file holding several messages (mbox): `len` raw bytes from
    /// `start`, as stored (mbox `>From ` quoting is undone by the reader).
    Range {
        /// The mbox file.
        path: PathBuf,
        /// First byte of the message (after its `From ` separator line).
        start: u64,
        /// Raw length in the file.
        len: u64,
    },
    /// A message on an IMAP server, by UID in its folder.
    Imap {
        /// UIDVALIDITY of the folder when listed.
        uidvalidity: u32,
        /// UID.
        uid: u32,
    },
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(p) => write!(f, "{}", p.display()),
            Location::Range { path, start, len } => {
                write!(f, "{} bytes {start}..{}", path.display(), start + len)
            }
            Location::Imap { uidvalidity, uid } => {
                write!(f, "UID {uid} (UIDVALIDITY {uidvalidity})")
            }
        }
    }
}

/// One message found at the source.
#[derive(Clone, Debug)]
pub struct SourceItem {
    /// Its folder.
    pub folder: FolderName,
    /// Its id inside the folder, stable across passes.
    pub source_id: SourceId,
    /// Flags at the source.
    pub flags: Flags,
    /// Internal date, Unix seconds.
    pub internal_date: i64,
    /// Size in bytes of the message as [`Source::open`] yields it.
    pub size: u64,
    /// Where it is.
    pub location: Location,
    /// An identity that survives renumbering at the source (IMAP: a digest of
    /// Message-ID, internal date and size), used to recognise already-moved messages
    /// after a UIDVALIDITY change. `None` where ids never change.
    pub ident: Option<String>,
}

impl SourceItem {
    /// `folder/source-id`, the way items are named in reports.
    pub fn name(&self) -> String {
        format!("{}/{}", self.folder, self.source_id)
    }
}

/// What the checkpoint remembers of one acknowledged message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriorItem {
    /// Flags as last sent to the store.
    pub flags: Flags,
    /// Internal date.
    pub internal_date: i64,
    /// Size.
    pub size: u64,
    /// Identity, if the source gave one.
    pub ident: Option<String>,
}

/// What earlier passes left for one folder.
#[derive(Clone, Debug, Default)]
pub struct PriorFolder {
    /// The opaque cursor the source returned for this folder at the end of the last
    /// complete pass (IMAP: UIDVALIDITY, HIGHESTMODSEQ, UIDNEXT).
    pub cursor: Option<String>,
    /// Acknowledged messages of the folder, by source id.
    pub items: BTreeMap<SourceId, PriorItem>,
}

/// What earlier passes of this move left, per folder.
#[derive(Clone, Debug, Default)]
pub struct Prior {
    /// Per folder.
    pub folders: BTreeMap<FolderName, PriorFolder>,
}

/// How earlier passes left a folder, asked for by a source while it lists. Lookups that
/// cost the folder's size ([`PriorLookup::items`]) are made only for folders the source
/// has to read anyway.
pub trait PriorLookup {
    /// The cursor this source returned for `folder` at the end of the last clean pass.
    fn cursor(&self, folder: &FolderName) -> Option<String>;
    /// How many messages of `folder` were acknowledged.
    fn count(&self, folder: &FolderName) -> usize;
    /// Their bytes, for the folder's totals when it is listed in [`Listing::delta`].
    fn bytes(&self, folder: &FolderName) -> u64;
    /// Every acknowledged message of `folder`.
    fn items(&self, folder: &FolderName) -> BTreeMap<SourceId, PriorItem>;
    /// One acknowledged message.
    fn get(&self, folder: &FolderName, id: &SourceId) -> Option<PriorItem>;
    /// Whether `folder` may be listed in [`Listing::delta`]. The pass says no for folders
    /// the profile renames, or renames others into: those are listed in full.
    fn may_list_delta(&self, _folder: &FolderName) -> bool {
        true
    }
    /// The folder roles the source found ([`Listing::roles`]), told before it lists any
    /// folder, so that answers about folders the profile renames by role are right.
    fn learn_roles(&self, _roles: &BTreeMap<FolderName, Role>) {}
}

impl PriorLookup for Prior {
    fn cursor(&self, folder: &FolderName) -> Option<String> {
        self.folders.get(folder).and_then(|f| f.cursor.clone())
    }
    fn count(&self, folder: &FolderName) -> usize {
        self.folders.get(folder).map_or(0, |f| f.items.len())
    }
    fn bytes(&self, folder: &FolderName) -> u64 {
        self.folders
            .get(folder)
            .map_or(0, |f| f.items.values().map(|i| i.size).sum())
    }
    fn items(&self, folder: &FolderName) -> BTreeMap<SourceId, PriorItem> {
        self.folders
            .get(folder)
            .map(|f| f.items.clone())
            .unwrap_or_default()
    }
    fn get(&self, folder: &FolderName, id: &SourceId) -> Option<PriorItem> {
        self.folders.get(folder)?.items.get(id).cloned()
    }
}

/// A folder listed as a change against the checkpoint (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeltaFolder {
    /// Acknowledged messages of the folder still there (all of them: none is gone).
    pub acknowledged: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What a listing found: items to move, and items that can never be moved, named.
#[derive(Debug, Default)]
pub struct Listing {
    /// Every message present, in a stable order: by folder, then in the source's own
    /// order (file order for mbox, so a move stores an mbox's messages in that order and
    /// an mbox export can write them back the same way; source id for the others).
    pub items: Vec<SourceItem>,
    /// Things found that are not movable (bad folder names, unreadable files).
    pub bad: Vec<BadItem>,
    /// Folders whose listing failed part-way: nothing of theirs is deleted at the
    /// destination in this pass.
    pub incomplete: BTreeSet<FolderName>,
    /// Per-folder cursors to hand back as [`PriorFolder::cursor`] next pass.
    pub cursors: BTreeMap<FolderName, String>,
    /// Folders listed as a change against the checkpoint: their items in `items` are new
    /// or changed ones only. Only folders [`PriorLookup::may_list_delta`] allows.
    pub delta: BTreeMap<FolderName, DeltaFolder>,
    /// Roles the server announced for folders (IMAP special-use attributes), by folder.
    /// The profile's special-use mapping uses them; folders with a virtual role
    /// (`\All`, `\Flagged`) are not copied as folders of their own (see
    /// [`crate::filter`]).
    pub roles: BTreeMap<FolderName, Role>,
}

/// The entries of directory `dir` in file-name order (an entry that could not be read
/// sorts first), so a listing walks a tree the same way every time.
pub(crate) fn sorted_dir(
    dir: &std::path::Path,
) -> std::io::Result<Vec<std::io::Result<std::fs::DirEntry>>> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect();
    entries.sort_by_key(|e| e.as_ref().map(|e| e.file_name()).ok());
    Ok(entries)
}

impl Listing {
    /// Records something found that is not moved: `item` as the report names it, and why.
    pub(crate) fn note_bad(&mut self, item: String, reason: impl Into<String>) {
        self.bad.push(BadItem {
            item,
            reason: reason.into(),
        });
    }
}

/// Which IMAP namespaces a listing covers (RFC 2342).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Namespaces {
    /// The user's own folders (every personal namespace), the default.
    #[default]
    Personal,
    /// Also the shared folders and other users' folders the login can see.
    All,
}

impl std::str::FromStr for Namespaces {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "personal" => Ok(Namespaces::Personal),
            "all" => Ok(Namespaces::All),
            other => Err(format!("{other:?}: expected personal or all")),
        }
    }
}

/// What a source needs besides its spec: credentials and trust for network sources.
/// Secrets are referenced by file (or taken from the environment), never passed as
/// values, so they never appear on a command line.
#[derive(Clone, Debug, Default)]
pub struct SourceOptions {
    /// IMAP: file holding the password (one line). Without it, and without
    /// `oauth_token_file`, the password comes from [`imap::PASSWORD_ENV`].
    pub password_file: Option<PathBuf>,
    /// IMAP: file holding an OAuth 2 access token, sent with SASL XOAUTH2.
    pub oauth_token_file: Option<PathBuf>,
    /// IMAP: PEM file of the CA(s) the server certificate must chain to, instead of the
    /// system roots.
    pub source_ca: Option<PathBuf>,
    /// IMAP: SHA-256 of the server's own certificate (`--source-cert-sha256`): a
    /// certificate with this fingerprint is trusted without the system roots; with
    /// `source_ca` as well, both must hold.
    pub source_cert_sha256: Option<mailferry_core::tls::CertSha256>,
    /// IMAP: the password itself, held in memory only (a batch CSV's `Password` column,
    /// read from the CSV when the pass starts); wins over `password_file`.
    pub password: Option<mailferry_core::secret::SecretBytes>,
    /// IMAP: the personal namespace's prefix (`INBOX.`), mapped away from folder names,
    /// instead of what the server's NAMESPACE says; `""` maps nothing away. For servers
    /// without NAMESPACE.
    pub source_prefix: Option<String>,
    /// IMAP: which namespaces are listed.
    pub namespaces: Namespaces,
    /// Maildir: how folder directory names are encoded (`--maildir-names`); `None`:
    /// the profile's `source.maildir_names` ([`SourceOptions::with_profile`]), and
    /// without a profile, detected per name.
    pub maildir_names: Option<mailferry_core::profile::MaildirNames>,
    /// IMAP: connections this move reads with in parallel (`--source-connections`,
    /// profile `source.connections`, endpoint `connections`); `None`:
    /// [`connections::DEFAULT_CONNECTIONS`].
    pub connections: Option<usize>,
    /// IMAP: bytes fetched ahead of the reader on each connection (profile
    /// `source.window_bytes`); `None`: [`connections::window_per_connection`].
    pub window_bytes: Option<u64>,
    /// IMAP: the connection budget shared with the other moves of a batch that read the
    /// same endpoint (its `max_connections`); `None`: only `connections` bounds it.
    pub connection_limit: Option<connections::ConnectionLimit>,
}

impl SourceOptions {
    /// These options, with what they leave to the profile taken from `profile`: a value
    /// set here (a flag, an endpoint key, the move's record) wins over the profile's,
    /// and the profile's over the built-in default.
    pub fn with_profile(&self, profile: &mailferry_core::profile::Profile) -> SourceOptions {
        let mut o = self.clone();
        o.maildir_names.get_or_insert(profile.source.maildir_names);
        o.connections = o.connections.or(profile.source.connections);
        o.window_bytes = o.window_bytes.or(profile.source.window_bytes.map(|b| b.0));
        o
    }
}

/// A message opened with [`Source::open_sized`].
pub struct Opened {
    /// Its bytes.
    pub reader: Box<dyn Read + Send>,
    /// How many bytes `reader` yields.
    pub size: u64,
    /// How the size differs from the listed one, for the item's warnings.
    pub note: Option<String>,
}

/// A mail source.
pub trait Source: Send {
    /// A short description (`maildir:/path`), without secrets.
    fn describe(&self) -> String;
    /// Lists every message (or, for folders it can vouch for, what changed: see the
    /// module docs). `prior` is what earlier passes acknowledged.
    fn list(&self, prior: &dyn PriorLookup) -> Result<Listing, crate::AgentError>;
    /// Opens one listed message for reading.
    fn open(&self, item: &SourceItem) -> std::io::Result<Box<dyn Read + Send>>;
    /// Says in which order the next messages will be opened, so that a source that
    /// fetches ahead (IMAP) can start; replaces any earlier order. Others ignore it.
    fn prefetch(&self, _order: &[SourceItem]) {}
    /// Opens one listed message and says how many bytes it has. Where the listed size
    /// is only the server's word (IMAP's RFC822.SIZE), the source measures it and says
    /// how the two differ; files keep their listed size, and a file that changed since
    /// it was listed shows as a short or long read.
    fn open_sized(&self, item: &SourceItem) -> std::io::Result<Opened> {
        Ok(Opened {
            reader: self.open(item)?,
            size: item.size,
            note: None,
        })
    }
    /// Time this source has spent so far waiting because its server asked to (IMAP
    /// `[THROTTLED]`, `Suggested Backoff Time`), for the move report. Sources that
    /// never wait keep the default.
    fn server_backoff(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// Parses a `--source` argument (`maildir:PATH`, `mbox:PATH`, `eml:PATH`,
/// `imaps://user@host[:port]`, `imap://user@host[:port]`). Reads what `options` name
/// (password, token, CA) now, so a missing file is reported before anything moves;
/// connects to nothing.
pub fn from_spec(
    spec: &str,
    options: &SourceOptions,
) -> Result<Box<dyn Source>, crate::AgentError> {
    if spec.starts_with("imap://") || spec.starts_with("imaps://") {
        return match imap::Imap::new(spec, options) {
            Ok(s) => Ok(Box::new(s)),
            Err(reason) => Err(crate::AgentError::Source {
                path: PathBuf::from(imap::redact(spec)),
                reason,
            }),
        };
    }
    match spec.split_once(':') {
        Some(("maildir", path)) if !path.is_empty() => Ok(Box::new(maildir::Maildir::with_names(
            PathBuf::from(path),
            options.maildir_names.unwrap_or_default(),
        ))),
        Some(("mbox", path)) if !path.is_empty() => {
            Ok(Box::new(mbox::Mbox::new(PathBuf::from(path))))
        }
        Some(("eml", path)) if !path.is_empty() => {
            Ok(Box::new(eml::EmlTree::new(PathBuf::from(path))))
        }
        _ => Err(crate::AgentError::Source {
            path: PathBuf::from(spec),
            reason: "unknown source; expected maildir:PATH, mbox:PATH, eml:PATH, \
                     imaps://user@host[:port] or imap://user@host[:port]"
                .into(),
        }),
    }
}

/// A file's modification time in Unix seconds (0 if unknown or before 1970): the
/// internal date of a message kept as a file (Maildir, .eml) or in one (mbox).
pub(crate) fn mtime_secs(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
