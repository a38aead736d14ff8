//! Renamed ids: the id a message gets when its destination folder is not its source
//! folder (`3f2a9c1e~1700000001.M1P2.host`), and reading such an id back.
//!
//! [`crate::filter`] gives these ids and [`crate::state`]'s index marks them; both
//! depend on this module, which depends on neither. See [`crate::filter`]'s docs for
//! why renamed ids exist. Pure string work: no I/O.

use mailferry_core::{FolderName, SourceId};

/// Separates the source-folder tag from the original id in a renamed id.
pub const TAG_SEPARATOR: char = '~';
/// Separates the tag from a digest of the original id when tag and id would not fit
/// the 255 bytes of a source id.
pub const TAG_DIGEST_SEPARATOR: char = '#';

/// The tag of a source folder: 8 hex digits of the SHA-256 of its name.
pub fn folder_tag(source_folder: &FolderName) -> String {
    mailferry_core::sha256_hex(source_folder.as_str().as_bytes())[..8].to_string()
}

/// The destination id of a message whose folder was renamed: `TAG~ID`, or `TAG#DIGEST`
/// (32 hex digits of the SHA-256 of the id) when that would be over 255 bytes.
pub fn renamed_id(source_folder: &FolderName, id: &SourceId) -> SourceId {
    let tag = folder_tag(source_folder);
    let joined = format!("{tag}{TAG_SEPARATOR}{id}");
    let s = if joined.len() <= 255 {
        joined
    } else {
        let digest = mailferry_core::sha256_hex(id.as_str().as_bytes());
        format!("{tag}{TAG_DIGEST_SEPARATOR}{}", &digest[..32])
    };
    SourceId::parse(&s).expect("a hex tag and a valid id make a valid id")
}

/// True if `id` looks like a [`renamed_id`] (a source-folder tag, then `~` or `#`).
pub fn is_renamed_id(id: &SourceId) -> bool {
    !matches!(untag(id, &[]), Untagged::Plain)
}

/// What a source id says about the folder it was renamed from.
pub(crate) enum Untagged {
    /// Not a renamed id.
    Plain,
    /// A renamed id of this source folder, with its original id.
    From(FolderName, SourceId),
    /// Renamed, but its source cannot be told.
    Lost,
}

/// Reads `id` as a renamed id, telling its source folder by `tags` ((tag, folder) pairs).
pub(crate) fn untag(id: &SourceId, tags: &[(String, FolderName)]) -> Untagged {
    let s = id.as_str();
    let is_tag = |t: &str| t.len() == 8 && t.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some((tag, rest)) = s.split_once(TAG_SEPARATOR) {
        if is_tag(tag) {
            return match (tags.iter().find(|(t, _)| t == tag), SourceId::parse(rest)) {
                (Some((_, folder)), Ok(original)) => Untagged::From(folder.clone(), original),
                _ => Untagged::Lost,
            };
        }
    }
    match s.split_once(TAG_DIGEST_SEPARATOR) {
        Some((tag, _)) if is_tag(tag) => Untagged::Lost,
        _ => Untagged::Plain,
    }
}
