//! `volume replicate`: a ciphertext-only, incremental copy of a volume into another
//! directory. It needs no key and never decrypts: it copies `volume.hdr` (wrapped keys
//! only), a consistent snapshot of `index.sqlite` (SQLite's online backup API), the
//! audit log, and the committed bytes of every referenced segment.
//!
//! Order, so the replica never references bytes it does not hold: snapshot the index
//! into `<replica>/index.sqlite.tmp`; copy every segment the snapshot references up to
//! the end of its last record there (committed bytes never change, so a replica segment
//! only ever grows: a run copies what is new); copy the audit log; rename the snapshot
//! over the replica's index; delete replica segments the snapshot no longer references
//! (the source compacted them); write the header last. A replica interrupted at any point
//! still opens with its previous index (or, on the first run, says "no volume here").
//!
//! It holds the source volume's lock for the whole run (a volume open elsewhere is
//! `Busy`), so no compaction can delete a segment under it; and it does not touch a
//! replica that is open.

use crate::audit_trail::AUDIT_FILE;
use crate::header::{Header, TMP_FILE};
use crate::segment;
use crate::volume::lock_header;
use crate::{StoreError, Volume, HEADER_FILE, INDEX_FILE, SEGMENTS_DIR};
use mailferry_audit::head::HEAD_FILE;
use rusqlite::{Connection, OpenFlags};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes compared at the end of a replica file before appending to it.
const TAIL_CHECK: u64 = 4096;

/// What `replicate` copied.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplicateOutcome {
    /// Segments the replica did not have, or had with different bytes (copied whole).
    pub segments_copied: u64,
    /// Segments the replica had a prefix of (only the new bytes were appended).
    pub segments_appended: u64,
    /// Segments the replica already had complete.
    pub segments_unchanged: u64,
    /// Replica segments deleted because the source no longer references them.
    pub segments_removed: u64,
    /// Segment bytes written.
    pub segment_bytes_copied: u64,
    /// Bytes of the index snapshot (always copied whole).
    pub index_bytes: u64,
    /// Audit log bytes written.
    pub audit_bytes_copied: u64,
    /// Source segments shorter than their index says (copied as they are; `verify` on
    /// either side names the damaged messages).
    pub short_segments: Vec<u64>,
}

/// How one file was brought up to date.
enum Synced {
    Unchanged,
    Appended(u64),
    Copied(u64),
}

impl Volume {
    /// Copies the volume in `src` into `dst` (created if missing), ciphertext only and
    /// incrementally; see the module docs. `dst` must be empty, a replica of the same
    /// volume, or what an interrupted first run left. Records a `volume.replicated`
    /// event (counts only) in the source's audit log, after the copy: the replica gets
    /// it with the next run.
    pub fn replicate(src: &Path, dst: &Path) -> Result<ReplicateOutcome, StoreError> {
        let header = Header::read(src)?;
        if let (Ok(a), Ok(b)) = (src.canonicalize(), dst.canonicalize()) {
            if a == b {
                return Err(StoreError::Replica {
                    path: dst.to_path_buf(),
                    reason: "is the volume itself; give another directory".into(),
                });
            }
        }
        let _src_lock = lock_header(src)?;
        let header_bytes = std::fs::read(src.join(HEADER_FILE))
            .map_err(|e| StoreError::io(src.join(HEADER_FILE), e))?;
        let _dst_lock = prepare_replica(dst, &header)?;
        let dst_segs = dst.join(SEGMENTS_DIR);
        mailferry_audit::private::create_dir_all(&dst_segs)
            .map_err(|e| StoreError::io(&dst_segs, e))?;
        let mut out = ReplicateOutcome::default();

        // 1. A consistent snapshot of the index, and what it references.
        let snap = dst.join(format!("{INDEX_FILE}.tmp"));
        let ends = snapshot_index(src, &snap, &header)?;
        let f = File::open(&snap).map_err(|e| StoreError::io(&snap, e))?;
        f.sync_all().map_err(|e| StoreError::io(&snap, e))?;
        out.index_bytes = f.metadata().map_err(|e| StoreError::io(&snap, e))?.len();

        // 2. Segments, committed bytes only.
        copy_segments(src, &dst_segs, &ends, &mut out)?;
        crate::sync_dir(&dst_segs)?;

        // 3. The audit log, up to its last complete line, and its signed head. The head
        // is read first: it is written after the records it covers are synced, so it
        // never covers more than the lines copied next (a head beyond the replica's log
        // would read as a cut).
        let head_file = src.join(HEAD_FILE);
        let head = match std::fs::read(&head_file) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(StoreError::io(&head_file, e)),
        };
        let audit = src.join(AUDIT_FILE);
        if audit.exists() {
            let end = complete_lines_len(&audit)?;
            match sync_prefix(&audit, &dst.join(AUDIT_FILE), end)? {
                Synced::Unchanged => {}
                Synced::Appended(b) | Synced::Copied(b) => out.audit_bytes_copied = b,
            }
        }
        if let Some(head) = head {
            let dst_head = dst.join(HEAD_FILE);
            if std::fs::read(&dst_head).ok().as_deref() != Some(&head[..]) {
                write_atomic(dst, &dst.join(TMP_FILE), &dst_head, &head)?;
            }
        }

        // 4. The index, last of the data: a stale WAL must not be replayed onto it.
        for suffix in ["-wal", "-shm"] {
            remove_if_exists(&dst.join(format!("{INDEX_FILE}{suffix}")))?;
        }
        let dst_index = dst.join(INDEX_FILE);
        std::fs::rename(&snap, &dst_index).map_err(|e| StoreError::io(&dst_index, e))?;
        crate::sync_dir(dst)?;

        // 5. Segments the source no longer references (it compacted them).
        out.segments_removed = remove_stale_segments(&dst_segs, &ends)?;
        crate::sync_dir(&dst_segs)?;

        // 6. The header last: its presence makes the replica a volume.
        let dst_header = dst.join(HEADER_FILE);
        if std::fs::read(&dst_header).ok().as_deref() != Some(&header_bytes[..]) {
            write_atomic(dst, &dst.join(TMP_FILE), &dst_header, &header_bytes)?;
        }

        append_event(src, &out)?;
        tracing::info!(
            copied = out.segments_copied,
            appended = out.segments_appended,
            unchanged = out.segments_unchanged,
            bytes = out.segment_bytes_copied,
            "volume replicated"
        );
        Ok(out)
    }
}

/// Step 1: a consistent snapshot of the source index in `snap` (the online backup API;
/// `<dst>/index.sqlite.tmp` here, a temporary file for an offsite copy), checked to
/// belong to the volume `header` describes, and the end of the last record of every
/// segment it references.
pub(crate) fn snapshot_index(
    src: &Path,
    snap: &Path,
    header: &Header,
) -> Result<BTreeMap<u64, u64>, StoreError> {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = snap.as_os_str().to_owned();
        p.push(suffix);
        remove_if_exists(Path::new(&p))?;
    }
    let src_index = src.join(INDEX_FILE);
    let ix_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Index {
            path: path.clone(),
            source,
        }
    };
    {
        let conn = Connection::open_with_flags(
            &src_index,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(ix_err(&src_index))?;
        mailferry_audit::private::precreate(snap).map_err(|e| StoreError::io(snap, e))?;
        conn.backup(rusqlite::MAIN_DB, snap, None)
            .map_err(ix_err(&src_index))?;
    }
    let ends = {
        let conn = Connection::open_with_flags(
            snap,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(ix_err(snap))?;
        let id: Vec<u8> = conn
            .query_row("SELECT v FROM volume WHERE k = 'volume_id'", [], |r| {
                r.get(0)
            })
            .map_err(ix_err(snap))?;
        if id != header.volume_id {
            return Err(StoreError::IndexDamaged {
                path: src_index.clone(),
                reason: "belongs to another volume (its volume id differs from volume.hdr); nothing was replicated".into(),
            });
        }
        let mut st = conn
            .prepare("SELECT segment, MAX(offset + record_len) FROM messages GROUP BY segment")
            .map_err(ix_err(snap))?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })
            .map_err(ix_err(snap))?;
        rows.collect::<Result<BTreeMap<u64, u64>, _>>()
            .map_err(ix_err(snap))?
    };
    Ok(ends)
}

/// Step 2: every referenced segment, up to the end of its last record (or its end, for
/// a source segment shorter than the index says), appended or copied as needed.
fn copy_segments(
    src: &Path,
    dst_segs: &Path,
    ends: &BTreeMap<u64, u64>,
    out: &mut ReplicateOutcome,
) -> Result<(), StoreError> {
    for (&n, &end) in ends {
        let name = segment::file_name(n);
        let from = src.join(SEGMENTS_DIR).join(&name);
        let len = std::fs::metadata(&from)
            .map_err(|e| StoreError::io(&from, e))?
            .len();
        let end = if len < end {
            tracing::warn!(
                segment = n,
                len,
                expected = end,
                "source segment shorter than its index; copied as it is, run verify"
            );
            out.short_segments.push(n);
            len
        } else {
            end
        };
        match sync_prefix(&from, &dst_segs.join(&name), end)? {
            Synced::Unchanged => out.segments_unchanged += 1,
            Synced::Appended(b) => {
                out.segments_appended += 1;
                out.segment_bytes_copied += b;
            }
            Synced::Copied(b) => {
                out.segments_copied += 1;
                out.segment_bytes_copied += b;
            }
        }
    }
    Ok(())
}

/// Step 5: deletes replica segments the snapshot no longer references, and temporary
/// files of an interrupted copy; returns how many segments went.
fn remove_stale_segments(dst_segs: &Path, ends: &BTreeMap<u64, u64>) -> Result<u64, StoreError> {
    let mut removed = 0;
    for e in std::fs::read_dir(dst_segs).map_err(|e| StoreError::io(dst_segs, e))? {
        let e = e.map_err(|e| StoreError::io(dst_segs, e))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale = match segment::parse_file_name(name) {
            Some(n) => !ends.contains_key(&n),
            None => name.ends_with(".seg.tmp"),
        };
        if stale {
            std::fs::remove_file(e.path()).map_err(|err| StoreError::io(e.path(), err))?;
            if name.ends_with(".seg") {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Checks that `dst` may receive a replica of the volume `header` describes and locks
/// its header if it has one (a replica that is open elsewhere is `Busy`).
fn prepare_replica(dst: &Path, header: &Header) -> Result<Option<File>, StoreError> {
    let refuse = |reason: String| StoreError::Replica {
        path: dst.to_path_buf(),
        reason,
    };
    match Header::read(dst) {
        Ok(h) if h.volume_id == header.volume_id => return lock_header(dst).map(Some),
        Ok(_) => {
            return Err(refuse(
                "holds another volume (its volume id differs); choose an empty directory, nothing was changed".into(),
            ))
        }
        Err(StoreError::NoVolume { .. }) => {}
        Err(e) => return Err(e),
    }
    // No header: empty, or what an interrupted first run left.
    let ours = [
        SEGMENTS_DIR.to_string(),
        INDEX_FILE.to_string(),
        format!("{INDEX_FILE}.tmp"),
        format!("{INDEX_FILE}.tmp-wal"),
        format!("{INDEX_FILE}.tmp-shm"),
        format!("{INDEX_FILE}-wal"),
        format!("{INDEX_FILE}-shm"),
        AUDIT_FILE.to_string(),
        format!("{AUDIT_FILE}.tmp"),
        HEAD_FILE.to_string(),
        TMP_FILE.to_string(),
    ];
    match std::fs::read_dir(dst) {
        Ok(entries) => {
            for e in entries {
                let e = e.map_err(|e| StoreError::io(dst, e))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if !ours.contains(&name) {
                    return Err(refuse(format!(
                        "is not empty and not a replica ({name} exists); choose an empty or new directory, nothing was changed"
                    )));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            mailferry_audit::private::create_dir_all(dst).map_err(|e| StoreError::io(dst, e))?;
        }
        Err(e) => return Err(StoreError::io(dst, e)),
    }
    Ok(None)
}

/// Brings `to` up to the first `end` bytes of `from`. If `to` is a prefix (same length
/// up to `end`, or shorter with the same last [`TAIL_CHECK`] bytes), only the missing
/// bytes are appended; otherwise the file is copied whole into `<to>.tmp` and renamed
/// over `to`, so a crash never leaves `to` with bytes other than the source's.
fn sync_prefix(from: &Path, to: &Path, end: u64) -> Result<Synced, StoreError> {
    let have = match std::fs::metadata(to) {
        Ok(m) => Some(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(StoreError::io(to, e)),
    };
    let mut src = File::open(from).map_err(|e| StoreError::io(from, e))?;
    if let Some(have) = have.filter(|&h| h <= end) {
        let check = have.min(TAIL_CHECK);
        let mut a = vec![0u8; check as usize];
        let mut b = vec![0u8; check as usize];
        let mut dst = OpenOptions::new()
            .read(true)
            .write(true)
            .open(to)
            .map_err(|e| StoreError::io(to, e))?;
        src.seek(SeekFrom::Start(have - check))
            .and_then(|_| src.read_exact(&mut a))
            .map_err(|e| StoreError::io(from, e))?;
        dst.seek(SeekFrom::Start(have - check))
            .and_then(|_| dst.read_exact(&mut b))
            .map_err(|e| StoreError::io(to, e))?;
        if a == b {
            if have == end {
                return Ok(Synced::Unchanged);
            }
            dst.seek(SeekFrom::Start(have))
                .map_err(|e| StoreError::io(to, e))?;
            let n = copy_range(&mut src, from, &mut dst, to, end - have)?;
            dst.sync_all().map_err(|e| StoreError::io(to, e))?;
            return Ok(Synced::Appended(n));
        }
    }
    let mut tmp_name = to.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut dst = mailferry_audit::private::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
    src.seek(SeekFrom::Start(0))
        .map_err(|e| StoreError::io(from, e))?;
    let n = copy_range(&mut src, from, &mut dst, &tmp, end)?;
    dst.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
    std::fs::rename(&tmp, to).map_err(|e| StoreError::io(to, e))?;
    Ok(Synced::Copied(n))
}

/// Copies `len` bytes from the current position of `src` to that of `dst`.
fn copy_range(
    src: &mut File,
    from: &Path,
    dst: &mut File,
    to: &Path,
    len: u64,
) -> Result<u64, StoreError> {
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        src.read_exact(&mut buf[..n])
            .map_err(|e| StoreError::io(from, e))?;
        dst.write_all(&buf[..n])
            .map_err(|e| StoreError::io(to, e))?;
        left -= n as u64;
    }
    Ok(len)
}

/// Length of `path` up to and including its last newline (a line being appended right
/// now is left for the next run).
pub(crate) fn complete_lines_len(path: &Path) -> Result<u64, StoreError> {
    let bytes = std::fs::read(path).map_err(|e| StoreError::io(path, e))?;
    Ok(bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i as u64 + 1))
}

fn remove_if_exists(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

/// Temp file, fsync, rename, directory fsync.
fn write_atomic(dir: &Path, tmp: &Path, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut f = mailferry_audit::private::create(tmp).map_err(|e| StoreError::io(tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| StoreError::io(tmp, e))?;
    drop(f);
    std::fs::rename(tmp, path).map_err(|e| StoreError::io(path, e))?;
    crate::sync_dir(dir)
}

/// Records the run in the source's audit log (counts only: no path, no name). Safe
/// without the key: the log's chain is plain SHA-256, and the source lock is held.
fn append_event(src: &Path, out: &ReplicateOutcome) -> Result<(), StoreError> {
    let mut log = mailferry_audit::AuditLog::open(src.join(AUDIT_FILE))?;
    log.append(
        &crate::audit_trail::store_actor(),
        "volume.replicated",
        serde_json::json!({
            "segments_copied": out.segments_copied,
            "segments_appended": out.segments_appended,
            "segments_unchanged": out.segments_unchanged,
            "segments_removed": out.segments_removed,
            "segment_bytes_copied": out.segment_bytes_copied,
            "index_bytes": out.index_bytes,
        }),
    )?;
    log.sync()?;
    Ok(())
}

#[cfg(test)]
mod tests;
