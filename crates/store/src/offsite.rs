//! The seam between a volume and a copy of it kept off the machine (object storage):
//! [`Offsite`], which the commit path calls before it releases acknowledgements and the
//! read path calls for a segment that is not on local disk, and [`snapshot`], the
//! consistent view of a volume directory such a copy is made from.
//!
//! This module moves no bytes over a network and knows nothing of buckets: the
//! implementation lives in `mailferry-bucket` (docs/volume-format.md, "Object storage"),
//! which has the async runtime and the S3 client the store must not link. Everything
//! here is blocking.

use crate::audit_trail::AUDIT_FILE;
use crate::header::Header;
use crate::{StoreError, HEADER_FILE};
use mailferry_audit::head::HEAD_FILE;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A failure of the offsite copy, as its implementation words it (the store wraps it in
/// [`StoreError::Offsite`]).
pub type OffsiteError = Box<dyn std::error::Error + Send + Sync>;

/// A segment read from elsewhere (ranged reads of an object), by position.
pub trait SegmentRead: Read + Seek + Send {
    /// Length of the segment in bytes.
    fn segment_len(&self) -> u64;
}

/// A copy of the volume kept off the machine, attached with [`crate::Volume::attach_offsite`].
pub trait Offsite: Send + Sync {
    /// Returns once everything the volume committed before the call (segment bytes,
    /// index rows, audit records) is in the offsite copy. A batch's acknowledgements
    /// are released only after this returned Ok for it; Err fails the batch.
    fn flush(&self) -> Result<(), OffsiteError>;

    /// A reader of segment `number`, which is not on local disk.
    fn open_segment(&self, number: u64) -> std::io::Result<Box<dyn SegmentRead>>;

    /// Segment `number` left the hands of ingest for the rest of this process (full, or
    /// too full for the next record): the copy may keep it as one sealed object. Records
    /// of a batch still in flight may yet be committed to it.
    fn segment_closed(&self, _number: u64) {}

    /// True if the copy keeps segment `number` sealed: the volume will not append to it
    /// again (it leaves the pool of segments ingest may reopen).
    fn is_sealed(&self, _number: u64) -> bool {
        false
    }
}

/// A segment opened for reading: the local file, or the offsite copy's reader.
pub(crate) enum SegmentReader {
    Local(File, u64),
    Remote(Box<dyn SegmentRead>),
}

impl SegmentReader {
    /// Length of the segment in bytes.
    pub(crate) fn len(&self) -> u64 {
        match self {
            SegmentReader::Local(_, len) => *len,
            SegmentReader::Remote(r) => r.segment_len(),
        }
    }
}

impl Read for SegmentReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            SegmentReader::Local(f, _) => f.read(buf),
            SegmentReader::Remote(r) => r.read(buf),
        }
    }
}

impl Seek for SegmentReader {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        match self {
            SegmentReader::Local(f, _) => f.seek(pos),
            SegmentReader::Remote(r) => r.seek(pos),
        }
    }
}

/// A consistent view of a volume directory: what an offsite copy must hold so that a
/// volume restored from it has every change committed before the view was taken.
#[derive(Debug)]
pub struct Snapshot {
    /// The volume id.
    pub volume_id: [u8; 16],
    /// `volume.hdr` as it is (wrapped keys only).
    pub header: Vec<u8>,
    /// The index snapshot written to the path given to [`snapshot`].
    pub index: PathBuf,
    /// The end of the last record of every segment the snapshot references.
    pub segment_ends: BTreeMap<u64, u64>,
    /// Bytes of `audit.jsonl` up to its last complete line when the view was taken.
    pub audit_len: u64,
    /// `audit.head` as it was before the audit length was read.
    pub audit_head: Option<Vec<u8>>,
}

/// Takes a [`Snapshot`] of the volume in `dir`, writing the index snapshot to
/// `index_out` (replaced if it exists). Safe while the volume is open and writing.
///
/// Order: the signed head, then the audit log's length, then the index. A batch's rows
/// are committed before its audit records are written, and a head is signed after the
/// records it covers, so the snapshot's index holds every row the audit prefix
/// describes and the head never covers more than that prefix (rows without their
/// records are what crash recovery at open already completes).
pub fn snapshot(dir: &Path, index_out: &Path) -> Result<Snapshot, StoreError> {
    let header = Header::read(dir)?;
    let header_bytes = std::fs::read(dir.join(HEADER_FILE))
        .map_err(|e| StoreError::io(dir.join(HEADER_FILE), e))?;
    let head_file = dir.join(HEAD_FILE);
    let audit_head = match std::fs::read(&head_file) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(StoreError::io(&head_file, e)),
    };
    let audit = dir.join(AUDIT_FILE);
    let audit_len = if audit.exists() {
        crate::replicate::complete_lines_len(&audit)?
    } else {
        0
    };
    let segment_ends = crate::replicate::snapshot_index(dir, index_out, &header)?;
    Ok(Snapshot {
        volume_id: header.volume_id,
        header: header_bytes,
        index: index_out.to_path_buf(),
        segment_ends,
        audit_len,
        audit_head,
    })
}

/// The exclusive lock on a volume directory that is not open (`volume replicate`
/// copying it elsewhere): no process can open or compact it while this is held.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Locks the volume in `dir` like opening it does (`Busy` if it is open elsewhere).
pub fn lock_dir(dir: &Path) -> Result<DirLock, StoreError> {
    Ok(DirLock {
        _file: crate::volume::lock_header(dir)?,
    })
}
