//! The chunk layer: 64 KiB plaintext chunks sealed with AES-256-GCM (ring) in a STREAM
//! construction whose nonce and AAD bind the chunk's position, its last-chunk flag, its
//! message, its mailbox and its volume (docs/volume-format.md, "Chunks").
//!
//! Pure functions over buffers, and [`Sealer`], the one streaming sealer every writer
//! of chunks uses (ingest, re-encryption, `segment::seal_record`); no files. Public so
//! benches and fuzzers can drive it.

use crate::keys::Key;
use crate::StoreError;
use ring::aead::{Aad, LessSafeKey, Nonce};
use std::io::{self, Write};

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

// === Sealer ===

/// Seals one message's plaintext as it streams by: buffers up to [`CHUNK_SIZE`] bytes,
/// seals each full chunk in place under its index, last flag and [`ChunkContext`], and
/// hands `ciphertext || tag` to a sink. The only producer of a record's chunk sequence:
/// ingest, re-encryption and [`crate::segment::seal_record`] all go through it
/// (compaction copies sealed records byte for byte and seals nothing).
///
/// The declared plaintext length fixes the chunk count up front, so a full chunk is
/// sealed as soon as it is full unless it is the last, which waits for
/// [`Sealer::seal_last`] (ingest decides only then whether to keep the message). One
/// buffer of `CHUNK_SIZE + TAG_LEN` bytes is allocated per message and reused for every
/// chunk: sealing is in place, the sink borrows the buffer.
pub struct Sealer {
    key: ChunkKey,
    ctx: ChunkContext,
    plain_len: u64,
    chunks: u64,
    /// Index of the chunk being filled.
    index: u64,
    /// Plaintext bytes taken so far.
    filled: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("ctx", &self.ctx)
            .field("plain_len", &self.plain_len)
            .field("index", &self.index)
            .field("filled", &self.filled)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer for a message of exactly `plain_len` plaintext bytes.
    pub fn new(key: ChunkKey, ctx: ChunkContext, plain_len: u64) -> Self {
        Sealer {
            key,
            ctx,
            plain_len,
            chunks: chunk_count(plain_len),
            index: 0,
            filled: 0,
            buf: Vec::with_capacity(CHUNK_SIZE + TAG_LEN),
        }
    }

    /// Plaintext bytes taken so far.
    pub fn filled(&self) -> u64 {
        self.filled
    }

    /// Copies the start of `data` into the current chunk, as much as fits in it and in
    /// the declared length, and returns how many bytes it took. Once every full chunk
    /// has been sealed ([`Sealer::chunk_ready`]), 0 for non-empty `data` means the
    /// declared length is reached.
    pub fn fill(&mut self, data: &[u8]) -> usize {
        let left = self.plain_len - self.filled;
        let room = (CHUNK_SIZE - self.buf.len()).min(usize::try_from(left).unwrap_or(usize::MAX));
        let take = room.min(data.len());
        self.buf.extend_from_slice(&data[..take]);
        self.filled += take as u64;
        take
    }

    /// True when the current chunk is full and is not the last: seal it with
    /// [`Sealer::seal_chunk`] before filling more.
    pub fn chunk_ready(&self) -> bool {
        self.buf.len() == CHUNK_SIZE && self.index + 1 < self.chunks
    }

    /// Seals the current chunk (full, not the last: see [`Sealer::chunk_ready`]) in place
    /// and hands `ciphertext || tag` to `sink`; the next chunk then starts empty.
    pub fn seal_chunk<R>(&mut self, sink: impl FnOnce(&[u8]) -> R) -> R {
        debug_assert!(
            self.chunk_ready(),
            "seal_chunk on a chunk that is not ready"
        );
        self.seal(false, sink)
    }

    /// Seals the last chunk and hands `ciphertext || tag` to `sink`; `None` (nothing
    /// sealed) if fewer plaintext bytes than declared were filled.
    pub fn seal_last<R>(&mut self, sink: impl FnOnce(&[u8]) -> R) -> Option<R> {
        if self.filled != self.plain_len {
            return None;
        }
        // Every earlier chunk was full, so the buffer is the last one's.
        debug_assert_eq!(self.index + 1, self.chunks);
        Some(self.seal(true, sink))
    }

    fn seal<R>(&mut self, last: bool, sink: impl FnOnce(&[u8]) -> R) -> R {
        let tag = seal_chunk(&self.key, &self.ctx, self.index, last, &mut self.buf);
        self.buf.extend_from_slice(&tag);
        let r = sink(&self.buf);
        self.buf.clear();
        self.index += 1;
        r
    }
}

/// A [`Sealer`] in front of a writer: plaintext written to it comes out of `out` as the
/// record's sealed chunks. Writing more than the declared length is an `InvalidData`
/// error, and so is [`SealWriter::finish`] with less.
#[derive(Debug)]
pub struct SealWriter<W> {
    sealer: Sealer,
    out: W,
}

impl<W: Write> SealWriter<W> {
    /// Sealed chunks of `sealer`'s message go to `out`.
    pub fn new(sealer: Sealer, out: W) -> Self {
        SealWriter { sealer, out }
    }

    /// Seals the last chunk into the writer and returns it; the plaintext must have
    /// come out as long as declared.
    pub fn finish(mut self) -> io::Result<W> {
        let out = &mut self.out;
        match self.sealer.seal_last(|sealed| out.write_all(sealed)) {
            Some(r) => r.map(|()| self.out),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "less plaintext than the record header declares",
            )),
        }
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            let n = self.sealer.fill(rest);
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "more plaintext than the record header declares",
                ));
            }
            rest = &rest[n..];
            if self.sealer.chunk_ready() {
                let out = &mut self.out;
                self.sealer.seal_chunk(|sealed| out.write_all(sealed))?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests;
