//! Segment files `segments/NNNNNNNN.seg`: a 32-byte header, then message records, each a
//! 72-byte record header followed by the message's sealed chunks
//! (docs/volume-format.md, "Segments").
//!
//! Encoding and parsing of those bytes only; which file to append to and when to fsync is
//! the ingest session's business. Parsers refuse malformed input with an error, never panic.

use crate::chunk::{self, ChunkContext, ChunkKey, SealWriter, Sealer, CHUNK_SIZE, TAG_LEN};
use crate::keys::{self, Key};
use crate::StoreError;
use std::io::Write;

/// Segment header magic.
pub const SEG_MAGIC: &[u8; 4] = b"MFSG";
/// Segment format version.
pub const SEG_VERSION: u16 = 1;
/// Bytes of the segment header.
pub const SEG_HEADER_LEN: u64 = 32;
/// Record header magic.
pub const REC_MAGIC: &[u8; 4] = b"MFR1";
/// Bytes of a record header.
pub const REC_HEADER_LEN: usize = 72;

/// The file name of segment `n`.
pub fn file_name(n: u64) -> String {
    format!("{n:08}.seg")
}

/// Parses a segment file name back to its number.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() < 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The volume id.
    pub volume_id: [u8; 16],
    /// The segment number.
    pub number: u64,
}

impl SegmentHeader {
    /// `magic(4) || version u16 BE || reserved u16 || volume id(16) || number u64 BE`.
    pub fn encode(&self) -> [u8; SEG_HEADER_LEN as usize] {
        let mut b = [0u8; SEG_HEADER_LEN as usize];
        b[..4].copy_from_slice(SEG_MAGIC);
        b[4..6].copy_from_slice(&SEG_VERSION.to_be_bytes());
        b[8..24].copy_from_slice(&self.volume_id);
        b[24..32].copy_from_slice(&self.number.to_be_bytes());
        b
    }

    /// Parses a segment header.
    pub fn parse(b: &[u8]) -> Result<SegmentHeader, StoreError> {
        let bad = |r: &str| StoreError::SegmentFormat { reason: r.into() };
        if b.len() < SEG_HEADER_LEN as usize {
            return Err(bad("segment header truncated"));
        }
        if &b[..4] != SEG_MAGIC {
            return Err(bad("bad segment magic"));
        }
        let v = u16::from_be_bytes([b[4], b[5]]);
        if v != SEG_VERSION {
            return Err(bad(&format!(
                "segment format version {v} not supported (this build reads {SEG_VERSION})"
            )));
        }
        Ok(SegmentHeader {
            volume_id: b[8..24].try_into().expect("16 bytes"),
            number: u64::from_be_bytes(b[24..32].try_into().expect("8 bytes")),
        })
    }
}

/// The fixed header in front of each record's chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Which generation of the mailbox key sealed this message.
    pub key_id: u32,
    /// The message id.
    pub message_id: u64,
    /// The mailbox row id.
    pub mailbox_id: u64,
    /// The per-message HKDF salt.
    pub salt: [u8; 32],
    /// Plaintext length.
    pub plain_len: u64,
    /// Number of chunks (always `chunk_count(plain_len)`).
    pub chunk_count: u64,
}

impl RecordHeader {
    /// `"MFR1" || key id u32 || message id u64 || mailbox id u64 || salt(32) || plain len u64 || chunk count u64`, all BE.
    pub fn encode(&self) -> [u8; REC_HEADER_LEN] {
        let mut b = [0u8; REC_HEADER_LEN];
        b[..4].copy_from_slice(REC_MAGIC);
        b[4..8].copy_from_slice(&self.key_id.to_be_bytes());
        b[8..16].copy_from_slice(&self.message_id.to_be_bytes());
        b[16..24].copy_from_slice(&self.mailbox_id.to_be_bytes());
        b[24..56].copy_from_slice(&self.salt);
        b[56..64].copy_from_slice(&self.plain_len.to_be_bytes());
        b[64..72].copy_from_slice(&self.chunk_count.to_be_bytes());
        b
    }

    /// Parses and sanity-checks a record header (chunk count consistent with length).
    pub fn parse(b: &[u8]) -> Result<RecordHeader, StoreError> {
        let bad = |r: String| StoreError::SegmentFormat { reason: r };
        if b.len() < REC_HEADER_LEN {
            return Err(bad("record header truncated".into()));
        }
        if &b[..4] != REC_MAGIC {
            return Err(bad("bad record magic".into()));
        }
        let u64_at = |o: usize| u64::from_be_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let h = RecordHeader {
            key_id: u32::from_be_bytes(b[4..8].try_into().expect("4 bytes")),
            message_id: u64_at(8),
            mailbox_id: u64_at(16),
            salt: b[24..56].try_into().expect("32 bytes"),
            plain_len: u64_at(56),
            chunk_count: u64_at(64),
        };
        if h.chunk_count != chunk::chunk_count(h.plain_len) {
            return Err(bad(format!(
                "record says {} chunks for {} bytes (expected {})",
                h.chunk_count,
                h.plain_len,
                chunk::chunk_count(h.plain_len)
            )));
        }
        if h.record_len().is_none() {
            return Err(bad("record length overflows".into()));
        }
        Ok(h)
    }

    /// Total record bytes (header + sealed chunks), `None` on overflow.
    pub fn record_len(&self) -> Option<u64> {
        record_len(self.plain_len)
    }
}

/// Total record bytes of a message of `plain_len` bytes, `None` on overflow.
pub fn record_len(plain_len: u64) -> Option<u64> {
    let tags = chunk::chunk_count(plain_len).checked_mul(TAG_LEN as u64)?;
    plain_len
        .checked_add(tags)?
        .checked_add(REC_HEADER_LEN as u64)
}

/// Seals a whole message in memory into a record (vectors and tests; the ingest path
/// streams instead).
pub fn seal_record(
    header: &RecordHeader,
    volume_id: &[u8; 16],
    mailbox_key: &Key,
    plain: &[u8],
) -> Vec<u8> {
    assert_eq!(header.plain_len, plain.len() as u64);
    let key = ChunkKey::new(&keys::message_key(mailbox_key, &header.salt));
    let ctx = ChunkContext {
        volume_id: *volume_id,
        mailbox_id: header.mailbox_id,
        message_id: header.message_id,
    };
    let mut out = Vec::with_capacity(record_len(header.plain_len).unwrap_or(0) as usize);
    out.extend_from_slice(&header.encode());
    let mut w = SealWriter::new(Sealer::new(key, ctx, header.plain_len), out);
    w.write_all(plain)
        .expect("the length was checked and a Vec takes every write");
    w.finish()
        .expect("the length was checked and a Vec takes every write")
}

/// Parses and opens a whole record in memory, authenticating every chunk. Refuses
/// trailing bytes, short records and bad chunks with an error; never panics.
pub fn open_record(
    volume_id: &[u8; 16],
    mailbox_key: &Key,
    record: &[u8],
) -> Result<(RecordHeader, Vec<u8>), StoreError> {
    let h = RecordHeader::parse(record)?;
    let len = h.record_len().expect("parse checked");
    if record.len() as u64 != len {
        return Err(StoreError::SegmentFormat {
            reason: format!("record is {} bytes, its header says {len}", record.len()),
        });
    }
    let key = ChunkKey::new(&keys::message_key(mailbox_key, &h.salt));
    let ctx = ChunkContext {
        volume_id: *volume_id,
        mailbox_id: h.mailbox_id,
        message_id: h.message_id,
    };
    let mut plain = Vec::with_capacity(h.plain_len as usize);
    let mut pos = REC_HEADER_LEN;
    let mut buf = Vec::with_capacity(CHUNK_SIZE + TAG_LEN);
    for i in 0..h.chunk_count {
        let n = chunk::chunk_plain_len(h.plain_len, i) + TAG_LEN;
        buf.clear();
        buf.extend_from_slice(&record[pos..pos + n]);
        pos += n;
        let p = chunk::open_chunk(&key, &ctx, i, i + 1 == h.chunk_count, &mut buf)?;
        plain.extend_from_slice(p);
    }
    Ok((h, plain))
}

#[cfg(test)]
mod tests;
