//! [`snapshot`]: the consistent view of a volume directory an offsite copy (object
//! storage, `mailferry-bucket`) is made from, and [`lock_dir`] for copying a volume that
//! is not open. Reads the directory only; uploads nothing.

use crate::audit_trail::AUDIT_FILE;
use crate::header::Header;
use crate::{StoreError, HEADER_FILE};
use mailferry_audit::head::HEAD_FILE;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

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
