//! The chunk layer: 64 KiB plaintext chunks sealed with AES-256-GCM (ring) in a STREAM
//! construction whose nonce and AAD bind the chunk's position, its last-chunk flag, its
//! message, its mailbox and its volume (docs/volume-format.md, "Chunks").
//!
//! Pure functions over buffers; no files. Public so benches and fuzzers can drive it.

use crate::keys::Key;
use crate::StoreError;
use ring::aead::{Aad, LessSafeKey, Nonce};

/// Plaintext bytes per chunk (the last chunk may be shorter, or empty).
pub const CHUNK_SIZE: usize = 64 * 1024;
/// AES-GCM tag bytes appended to each chunk.
pub const TAG_LEN: usize = 16;
/// Bytes of the chunk AAD.
pub const AAD_LEN: usize = 45;
/// AAD label.
pub const AAD_LABEL: &[u8; 4] = b"MFC1";

/// Where a chunk belongs: mixed into every chunk's AAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkContext {
    /// The volume id.
    pub volume_id: [u8; 16],
    /// The mailbox row id.
    pub mailbox_id: u64,
    /// The message id.
    pub message_id: u64,
}

/// A message's body key, ready for sealing and opening chunks.
pub struct ChunkKey(LessSafeKey);

impl std::fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkKey([redacted])")
    }
}

impl ChunkKey {
    /// From a message key (see [`crate::keys::message_key`]).
    pub fn new(key: &Key) -> Self {
        ChunkKey(key.aead())
    }

    /// From raw key bytes (benches and vectors).
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        ChunkKey::new(&Key::from_bytes(*bytes))
    }
}

/// Number of chunks of a message of `len` bytes: at least one (an empty message has one
/// empty last chunk).
pub fn chunk_count(len: u64) -> u64 {
    len.div_ceil(CHUNK_SIZE as u64).max(1)
}

/// Plaintext length of chunk `index` of a message of `len` bytes.
pub fn chunk_plain_len(len: u64, index: u64) -> usize {
    let start = index * CHUNK_SIZE as u64;
    (len.saturating_sub(start)).min(CHUNK_SIZE as u64) as usize
}

/// `counter (u64 BE) || 0 0 0 || last flag`.
pub fn chunk_nonce(index: u64, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&index.to_be_bytes());
    n[11] = last as u8;
    n
}

/// `"MFC1" || volume id || mailbox id (u64 BE) || message id (u64 BE) || index (u64 BE) || last`.
pub fn chunk_aad(ctx: &ChunkContext, index: u64, last: bool) -> [u8; AAD_LEN] {
    let mut a = [0u8; AAD_LEN];
    a[..4].copy_from_slice(AAD_LABEL);
    a[4..20].copy_from_slice(&ctx.volume_id);
    a[20..28].copy_from_slice(&ctx.mailbox_id.to_be_bytes());
    a[28..36].copy_from_slice(&ctx.message_id.to_be_bytes());
    a[36..44].copy_from_slice(&index.to_be_bytes());
    a[44] = last as u8;
    a
}

/// Encrypts `data` in place (at most [`CHUNK_SIZE`] bytes) and returns the tag, which
/// goes right after the ciphertext.
pub fn seal_chunk(
    key: &ChunkKey,
    ctx: &ChunkContext,
    index: u64,
    last: bool,
    data: &mut [u8],
) -> [u8; TAG_LEN] {
    assert!(
        data.len() <= CHUNK_SIZE,
        "chunk of {} bytes exceeds CHUNK_SIZE",
        data.len()
    );
    let tag = key
        .0
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(chunk_nonce(index, last)),
            Aad::from(chunk_aad(ctx, index, last)),
            data,
        )
        .expect("a 64 KiB chunk is within AES-GCM limits");
    let mut t = [0u8; TAG_LEN];
    t.copy_from_slice(tag.as_ref());
    t
}

/// Decrypts `sealed` (`ciphertext || tag`) in place and returns the plaintext part.
pub fn open_chunk<'a>(
    key: &ChunkKey,
    ctx: &ChunkContext,
    index: u64,
    last: bool,
    sealed: &'a mut [u8],
) -> Result<&'a mut [u8], StoreError> {
    if sealed.len() < TAG_LEN || sealed.len() > CHUNK_SIZE + TAG_LEN {
        return Err(StoreError::Chunk {
            index,
            reason: format!("sealed length {} out of range", sealed.len()),
        });
    }
    key.0
        .open_in_place(
            Nonce::assume_unique_for_key(chunk_nonce(index, last)),
            Aad::from(chunk_aad(ctx, index, last)),
            sealed,
        )
        .map_err(|_| StoreError::Chunk {
            index,
            reason: "failed authentication: ciphertext damaged or tampered".into(),
        })
}

#[cfg(test)]
mod tests;
