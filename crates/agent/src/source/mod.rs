//! Mail sources behind one trait: list what is there, then open items one at a time.
//!
//! Sources are blocking (plain file reads); the agent runs them on a blocking thread.
//! A source never holds a whole message in memory: [`Source::open`] returns a reader.

pub mod maildir;

use mailferry_core::report::BadItem;
use mailferry_core::{Flags, FolderName, SourceId};
use std::io::Read;
use std::path::PathBuf;

/// One message found at the source.
#[derive(Clone, Debug)]
pub struct SourceItem {
    /// Its folder.
    pub folder: FolderName,
    /// Its id inside the folder.
    pub source_id: SourceId,
    /// Flags at the source.
    pub flags: Flags,
    /// Internal date, Unix seconds.
    pub internal_date: i64,
    /// Size in bytes when listed.
    pub size: u64,
    /// Where it is (a file for file-based sources).
    pub path: PathBuf,
}

impl SourceItem {
    /// `folder/source-id`, the way items are named in reports.
    pub fn name(&self) -> String {
        format!("{}/{}", self.folder, self.source_id)
    }
}

/// What a listing found: items to move, and items that can never be moved, named.
#[derive(Debug, Default)]
pub struct Listing {
    /// Movable items, in a stable order (folder, then source id).
    pub items: Vec<SourceItem>,
    /// Things found that are not movable (bad folder names, unreadable files).
    pub bad: Vec<BadItem>,
}

/// A mail source.
pub trait Source: Send {
    /// A short description (`maildir:/path`).
    fn describe(&self) -> String;
    /// Lists every message.
    fn list(&self) -> Result<Listing, crate::AgentError>;
    /// Opens one listed message for reading.
    fn open(&self, item: &SourceItem) -> std::io::Result<Box<dyn Read + Send>>;
}

/// Parses a `--source` argument (`maildir:PATH`).
pub fn from_spec(spec: &str) -> Result<Box<dyn Source>, crate::AgentError> {
    match spec.split_once(':') {
        Some(("maildir", path)) if !path.is_empty() => {
            Ok(Box::new(maildir::Maildir::new(PathBuf::from(path))))
        }
        _ => Err(crate::AgentError::Source {
            path: PathBuf::from(spec),
            reason: "unknown source; expected maildir:PATH".into(),
        }),
    }
}
