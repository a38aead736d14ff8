//! The incremental receipt: the receipt root of a mailbox (docs/audit-log.md, "Move
//! receipt") computed from leaves kept between passes, so the end of a pass decrypts
//! only the metadata of messages stored since the last receipt instead of every one.
//!
//! The cache (`receipt-cache/<mailbox row>.bin`, docs/volume-format.md "Receipt cache")
//! holds `(message id, leaf)` for every message of the mailbox up to a message id,
//! sealed with AES-256-GCM under a key derived from the mailbox's current key: rotating
//! the key makes it unreadable (it is rebuilt), shredding the mailbox shreds it too, and
//! the leaves (digests of names and content digests) are never on disk in the clear.
//! Messages deleted since are dropped by comparing with the index's ids; messages
//! stored since (ids above the cached one) are decrypted and added. Anything that does
//! not fit (an id at or below the cached one that the cache lacks, a cache that does not
//! open) rebuilds it from every message. `Volume::receipt_root` keeps computing from
//! scratch, for `receipt verify` and `volume verify`.

use crate::keys::{hkdf32, open_small, random_nonce, seal_small, wrap_aad, Key};
use std::path::{Path, PathBuf};

/// Directory of the caches inside the volume.
pub const CACHE_DIR: &str = "receipt-cache";

/// HKDF info of the cache key (derived from the mailbox key).
const INFO: &[u8] = b"mailferry receipt cache v1";
/// AAD label; the AAD also names the volume, the mailbox row and its key generation.
const AAD_LABEL: &[u8] = b"MFRC1";
/// File magic and version.
const MAGIC: &[u8; 5] = b"MFRC\x01";

/// `(message id, leaf)`.
pub(crate) type Leaf = (u64, [u8; 32]);

/// What the cache of one mailbox holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Cache {
    /// Every message of the mailbox with an id up to this one is in `leaves`.
    pub max_id: u64,
    /// `(message id, leaf)`, in id order.
    pub leaves: Vec<Leaf>,
}

pub(crate) fn path(volume: &Path, mailbox_id: u64) -> PathBuf {
    volume.join(CACHE_DIR).join(format!("{mailbox_id}.bin"))
}

/// The cache key of a mailbox key.
pub(crate) fn cache_key(mailbox_key: &Key) -> Key {
    hkdf32(mailbox_key.expose(), &[], INFO)
}

fn aad(volume_id: &[u8; 16], mailbox_id: u64, key_id: u32) -> Vec<u8> {
    let mut a = wrap_aad(AAD_LABEL, volume_id, Some(mailbox_id));
    a.extend_from_slice(&key_id.to_be_bytes());
    a
}

/// `MFRC 0x01 || seal(max_id u64 BE || count u64 BE || (id u64 BE || leaf) * count)`.
pub(crate) fn encode(
    cache: &Cache,
    key: &Key,
    volume_id: &[u8; 16],
    mailbox_id: u64,
    key_id: u32,
) -> Vec<u8> {
    let mut plain = Vec::with_capacity(16 + cache.leaves.len() * 40);
    plain.extend_from_slice(&cache.max_id.to_be_bytes());
    plain.extend_from_slice(&(cache.leaves.len() as u64).to_be_bytes());
    for (id, leaf) in &cache.leaves {
        plain.extend_from_slice(&id.to_be_bytes());
        plain.extend_from_slice(leaf);
    }
    let mut out = MAGIC.to_vec();
    out.extend(seal_small(
        key,
        random_nonce(),
        &aad(volume_id, mailbox_id, key_id),
        &plain,
    ));
    out
}

/// Opens a cache file's bytes; `None` if it is not one, of another mailbox, key or
/// volume, or damaged.
pub(crate) fn decode(
    bytes: &[u8],
    key: &Key,
    volume_id: &[u8; 16],
    mailbox_id: u64,
    key_id: u32,
) -> Option<Cache> {
    let sealed = bytes.strip_prefix(MAGIC)?;
    let plain = open_small(key, &aad(volume_id, mailbox_id, key_id), sealed)?;
    let max_id = u64::from_be_bytes(plain.get(..8)?.try_into().ok()?);
    let count = u64::from_be_bytes(plain.get(8..16)?.try_into().ok()?);
    let rest = &plain[16..];
    if rest.len() as u64 != count.checked_mul(40)? {
        return None;
    }
    let leaves = rest
        .chunks_exact(40)
        .map(|c| {
            (
                u64::from_be_bytes(c[..8].try_into().expect("8 bytes")),
                c[8..].try_into().expect("32 bytes"),
            )
        })
        .collect();
    Some(Cache { max_id, leaves })
}

/// Writes a cache file by temp file and rename, without fsync: a cache lost or torn by
/// a crash fails to open and is rebuilt.
pub(crate) fn store(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        mailferry_audit::private::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    mailferry_audit::private::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Brings `cache` up to the index: keeps the leaves of `ids` (the mailbox's message
/// ids now, in order) and reports the ids above `cache.max_id` that need their leaf
/// computed. `None` if the cache lacks an id it should hold: rebuild it.
pub(crate) fn reconcile(cache: &Cache, ids: &[u64]) -> Option<(Vec<Leaf>, Vec<u64>)> {
    let mut kept = Vec::with_capacity(ids.len());
    let mut new = Vec::new();
    let mut cached = cache.leaves.iter().peekable();
    for &id in ids {
        if id > cache.max_id {
            new.push(id);
            continue;
        }
        // Skip the leaves of messages deleted since.
        while cached.next_if(|(c, _)| *c < id).is_some() {}
        match cached.next_if(|(c, _)| *c == id) {
            Some(&leaf) => kept.push(leaf),
            None => return None,
        }
    }
    Some((kept, new))
}

#[cfg(test)]
mod tests;
