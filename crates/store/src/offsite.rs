//! The seam between a volume and a copy of it kept off the machine (object storage):
//! [`Offsite`], which the commit path calls before it releases acknowledgements and the
//! read path calls for a segment that is not on local disk. The consistent view of a
//! volume directory such a copy is made from is `crate::snapshot`'s.
//!
//! This module moves no bytes over a network and knows nothing of buckets: the
//! implementation lives in `mailferry-bucket` (docs/volume-format.md, "Object storage"),
//! which has the async runtime and the S3 client the store must not link. Everything
//! here is blocking.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

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

    /// Every segment the copy keeps sealed, as (number, length): those missing from local
    /// disk are read with [`Offsite::open_segment`], e.g. by compaction.
    fn sealed_segments(&self) -> Vec<(u64, u64)> {
        Vec::new()
    }

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
