//! Compares two Maildir trees message by message: same folders, same source ids, same
//! flags, same bytes (by SHA-256). Used by `demo` to prove a round trip.

use crate::AppError;
use mailferry_agent::source::{maildir::Maildir, Source};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// The result of a comparison.
#[derive(Debug, Default, Serialize)]
pub struct Comparison {
    /// Messages present in both with the same flags and bytes.
    pub identical: u64,
    /// In the source, not in the copy.
    pub missing: Vec<String>,
    /// In the copy, not in the source.
    pub extra: Vec<String>,
    /// In both, with different flags or bytes.
    pub different: Vec<String>,
}

impl Comparison {
    /// True if the trees hold the same messages.
    pub fn is_identical(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.different.is_empty()
    }
}

fn digest_tree(root: &Path) -> Result<BTreeMap<String, (String, String)>, AppError> {
    let src = Maildir::new(root.to_path_buf());
    let listing = src.list(&mailferry_agent::source::Prior::default())?;
    let mut out = BTreeMap::new();
    for item in listing.items {
        let mut bytes = Vec::new();
        src.open(&item)
            .and_then(|mut r| r.read_to_end(&mut bytes))
            .map_err(|e| AppError::io(root, e))?;
        out.insert(
            item.name(),
            (
                item.flags.as_str().to_string(),
                mailferry_core::sha256_hex(&bytes),
            ),
        );
    }
    Ok(out)
}

/// Compares the Maildirs `a` (source) and `b` (copy).
pub fn compare_maildirs(a: &Path, b: &Path) -> Result<Comparison, AppError> {
    let a = digest_tree(a)?;
    let b = digest_tree(b)?;
    let mut c = Comparison::default();
    for (name, va) in &a {
        match b.get(name) {
            None => c.missing.push(name.clone()),
            Some(vb) if vb != va => c.different.push(name.clone()),
            Some(_) => c.identical += 1,
        }
    }
    c.extra = b.keys().filter(|k| !a.contains_key(*k)).cloned().collect();
    Ok(c)
}
