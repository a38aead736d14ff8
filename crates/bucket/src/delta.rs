//! Index deltas: the blocks of the index checkpoint that changed since the image the
//! bucket already holds, so that an upload round sends what a batch changed rather
//! than the whole index (docs/volume-format.md, "Object storage", "Index deltas").
//!
//! Byte-level only: a delta knows nothing of SQLite pages, it compares the two files
//! in [`BLOCK`]-byte blocks. Which image a delta applies to is the manifest's business
//! ([`crate::manifest::Manifest::index_deltas`]), not this module's.
//!
//! Layout of a delta object (integers big-endian):
//! `MAGIC` (8 bytes), new length (u64), block size (u32), block count (u32), then per
//! block: its number (u64) and its bytes (the block size, or what is left of the file
//! for the last block).

use std::io::{BufReader, Read};
use std::path::Path;

/// The first bytes of every delta object.
pub const MAGIC: &[u8; 8] = b"MFIXDLT1";
/// Block size compared and shipped. SQLite's default page size: a page changed by a
/// commit is one block.
pub const BLOCK: usize = 4096;

/// What is wrong with a delta object.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// Not a delta object, or cut short.
    #[error("not an index delta: {0}")]
    Malformed(String),
    /// Reading a local file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> DeltaError + '_ {
    move |source| DeltaError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads up to one block; short only at the end of the file.
fn block(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The delta that turns the file `old` into the file `new`, or `None` if it would be
/// larger than `limit` bytes (the caller uploads `new` whole then). Streams both files:
/// memory is the delta, at most `limit`.
pub fn diff(old: &Path, new: &Path, limit: usize) -> Result<Option<Vec<u8>>, DeltaError> {
    let new_len = std::fs::metadata(new).map_err(io(new))?.len();
    let mut a = BufReader::with_capacity(1 << 20, std::fs::File::open(old).map_err(io(old))?);
    let mut b = BufReader::with_capacity(1 << 20, std::fs::File::open(new).map_err(io(new))?);
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&new_len.to_be_bytes());
    out.extend_from_slice(&(BLOCK as u32).to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    let (mut ba, mut bb) = (vec![0u8; BLOCK], vec![0u8; BLOCK]);
    let mut count: u32 = 0;
    for number in 0u64.. {
        let nb = block(&mut b, &mut bb).map_err(io(new))?;
        if nb == 0 {
            break;
        }
        let na = block(&mut a, &mut ba).map_err(io(old))?;
        if na == nb && ba[..na] == bb[..nb] {
            continue;
        }
        if out.len() + 8 + nb > limit {
            return Ok(None);
        }
        out.extend_from_slice(&number.to_be_bytes());
        out.extend_from_slice(&bb[..nb]);
        count += 1;
    }
    out[20..24].copy_from_slice(&count.to_be_bytes());
    Ok(Some(out))
}

/// Applies `delta` to the image `base` in place.
pub fn apply(base: &mut Vec<u8>, delta: &[u8]) -> Result<(), DeltaError> {
    let bad = |what: &str| DeltaError::Malformed(what.to_string());
    if delta.len() < 24 || &delta[..8] != MAGIC {
        return Err(bad("wrong magic or too short"));
    }
    let new_len = u64::from_be_bytes(delta[8..16].try_into().expect("8 bytes"));
    let bs = u32::from_be_bytes(delta[16..20].try_into().expect("4 bytes")) as u64;
    let count = u32::from_be_bytes(delta[20..24].try_into().expect("4 bytes"));
    if bs == 0 {
        return Err(bad("block size 0"));
    }
    let new_len = usize::try_from(new_len).map_err(|_| bad("length too large"))?;
    base.resize(new_len, 0);
    let mut at = 24usize;
    for _ in 0..count {
        let number = delta
            .get(at..at + 8)
            .ok_or_else(|| bad("cut short in a block number"))?;
        let number = u64::from_be_bytes(number.try_into().expect("8 bytes"));
        let start = number
            .checked_mul(bs)
            .filter(|s| *s < new_len as u64)
            .ok_or_else(|| bad("block beyond the new length"))? as usize;
        let n = (bs as usize).min(new_len - start);
        let bytes = delta
            .get(at + 8..at + 8 + n)
            .ok_or_else(|| bad("cut short in a block"))?;
        base[start..start + n].copy_from_slice(bytes);
        at += 8 + n;
    }
    if at != delta.len() {
        return Err(bad("bytes after the last block"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
