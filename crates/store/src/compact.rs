//! `volume compact`: reclaims the space of shredded messages and of unreferenced record
//! gaps (rolled-back or lost-race duplicates) by copying the live records of a segment,
//! byte for byte, into new segments.
//!
//! Nothing is decrypted or re-encrypted. A chunk's AAD binds the volume id, mailbox row
//! id, message id and chunk index, and its key derives from the mailbox key and the salt
//! in the record header (`chunk::chunk_aad`, `keys::message_key`); neither the segment
//! number nor the offset enters, so a copied record authenticates wherever it lies.
//!
//! Order, each step durable before the next: write the new segment(s) and fsync them and
//! `segments/`; switch the index rows to the new locations (and delete the rows of
//! shredded mailboxes) in ONE SQLite transaction; delete the old segment files. A crash
//! before the switch leaves new files no row references, a crash after it leaves old
//! files no row references; `Volume::open` deletes both (`recover_segments`). It does
//! not run beside ingest sessions: it needs the volume to itself.

use crate::index::{MessageRow, RecordMove};
use crate::segment::{self, RecordHeader, SegmentHeader, REC_HEADER_LEN, SEG_HEADER_LEN};
use crate::volume::Inner;
use crate::{StoreError, Volume, SEGMENTS_DIR};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactOutcome {
    /// Old segments whose live records were copied and whose files were deleted
    /// (including segments left with no live record at all).
    pub segments_rewritten: u64,
    /// New segment files written.
    pub segments_written: u64,
    /// Live records copied.
    pub messages_moved: u64,
    /// Rows of shredded mailboxes deleted with their records.
    pub messages_dropped: u64,
    /// Bytes of all segment files before.
    pub bytes_before: u64,
    /// Bytes of all segment files after.
    pub bytes_after: u64,
    /// Segments left alone because they are damaged (shorter than the index says, or a
    /// record header that does not match its row): `segment NNNNNNNN.seg: reason`.
    pub skipped: Vec<String>,
}

/// Where a test stops a compaction, simulating a crash right after that step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CompactStep {
    /// The new segments are written and synced; the index still points at the old ones.
    NewSegmentsWritten,
    /// The index points at the new segments; no old file is deleted yet.
    IndexSwitched,
    /// One old segment file is deleted, the others are not.
    FirstOldDeleted,
    /// Run to the end.
    Done,
}

/// One old segment to rewrite.
struct Candidate {
    number: u64,
    /// Live rows `(message id, offset, record length)` in offset order.
    live: Vec<(u64, u64, u64)>,
    /// Rows of shredded mailboxes.
    dropped: Vec<u64>,
}

/// A new segment being written by compaction or re-encryption.
pub(crate) struct Output {
    pub(crate) number: u64,
    pub(crate) file: File,
    /// Bytes written and kept (the header and every complete record).
    pub(crate) len: u64,
    /// Written since the last [`SegmentWriter::sync`].
    dirty: bool,
}

impl Output {
    /// Cuts a record that could not be completed: the file goes back to `at` bytes.
    pub(crate) fn truncate_to(&mut self, inner: &Inner, at: u64) -> Result<(), StoreError> {
        let path = inner.segment_path(self.number);
        self.file
            .set_len(at)
            .and_then(|_| self.file.seek(SeekFrom::Start(at)).map(|_| ()))
            .map_err(|e| StoreError::io(&path, e))?;
        self.len = at;
        Ok(())
    }
}

/// Appends whole records to fresh segments: numbers allocated in `segments` like
/// ingest's, `store.segment_max_bytes` respected (a record larger than that gets a
/// segment of its own). Shared by compaction and re-encryption, which both write new
/// segments, make them durable, and only then switch index rows to them.
#[derive(Default)]
pub(crate) struct SegmentWriter {
    pub(crate) written: Vec<Output>,
}

impl SegmentWriter {
    /// The output a record of `len` bytes goes to: the current one, or a new segment if
    /// the record would take the current one past the maximum.
    pub(crate) fn output_for(
        &mut self,
        inner: &Inner,
        len: u64,
    ) -> Result<&mut Output, StoreError> {
        let max = inner.settings.segment_max_bytes;
        let full = self
            .written
            .last()
            .is_none_or(|o| o.len > SEG_HEADER_LEN && o.len + len > max);
        if full {
            self.written.push(new_output(inner)?);
        }
        let o = self.written.last_mut().expect("pushed above");
        o.dirty = true;
        Ok(o)
    }

    /// fsyncs every segment written to since the last call, then `segments/`.
    pub(crate) fn sync(&mut self, inner: &Inner) -> Result<(), StoreError> {
        for o in self.written.iter_mut().filter(|o| o.dirty) {
            o.file
                .sync_all()
                .map_err(|e| StoreError::io(inner.segment_path(o.number), e))?;
            o.dirty = false;
        }
        crate::sync_dir(&inner.dir.join(SEGMENTS_DIR))
    }

    /// The last segment joins the pool if it can take more records.
    pub(crate) fn into_pool(self, inner: &Inner) {
        if let Some(o) = self
            .written
            .last()
            .filter(|o| o.len < inner.settings.segment_max_bytes)
        {
            inner
                .free_segments
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(crate::volume::FreeSegment {
                    number: o.number,
                    len: o.len,
                });
        }
    }
}

/// A fresh segment: number allocated in the index, header written.
fn new_output(inner: &Inner) -> Result<Output, StoreError> {
    let (number, _, file) = inner.new_segment()?;
    Ok(Output {
        number,
        file,
        len: SEG_HEADER_LEN,
        dirty: true,
    })
}

/// Every segment file in `seg_dir` with its length.
fn segment_lengths(seg_dir: &std::path::Path) -> Result<BTreeMap<u64, u64>, StoreError> {
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(seg_dir).map_err(|e| StoreError::io(seg_dir, e))? {
        let e = e.map_err(|e| StoreError::io(seg_dir, e))?;
        if let Some(n) = e.file_name().to_str().and_then(segment::parse_file_name) {
            let len = e
                .metadata()
                .map_err(|err| StoreError::io(e.path(), err))?
                .len();
            files.insert(n, len);
        }
    }
    Ok(files)
}

// === impl Volume: compaction ===

impl Volume {
    /// Rewrites every segment that holds reclaimable bytes (records of shredded
    /// mailboxes, gaps no row references) so that it holds only live records, then
    /// deletes the old files. Crash-safe at every step (see the module docs). Refused
    /// with `InUse` while an ingest session of this volume is open. Recorded in the
    /// volume's audit log (counts and mailbox pseudonyms only).
    pub fn compact(&mut self) -> Result<CompactOutcome, StoreError> {
        self.compact_until(CompactStep::Done)
    }

    pub(crate) fn compact_until(
        &mut self,
        stop: CompactStep,
    ) -> Result<CompactOutcome, StoreError> {
        self.exclusive("compaction")?;
        let inner = &self.inner;
        let seg_dir = inner.dir.join(SEGMENTS_DIR);
        let (rows, shredded) = {
            let ix = inner.index()?;
            (ix.messages(None)?, ix.shredded_mailboxes()?)
        };
        let mut out = CompactOutcome::default();
        let mut files = segment_lengths(&seg_dir)?;
        // A volume with an offsite copy (s3://): sealed segments that are only there are
        // compacted too, read with ranged reads; the copy drops them once the index no
        // longer references them.
        let mut remote_only = HashSet::new();
        for (n, len) in inner.offsite_sealed_segments() {
            if let std::collections::btree_map::Entry::Vacant(e) = files.entry(n) {
                e.insert(len);
                remote_only.insert(n);
            }
        }
        out.bytes_before = files.values().sum();
        let candidates = self.candidates(&files, &rows, &shredded, &mut out);
        if candidates.is_empty() {
            out.bytes_after = out.bytes_before;
            return Ok(out);
        }
        // Old segments leave the pool now: nothing may append to them any more.
        let old: HashSet<u64> = candidates.iter().map(|c| c.number).collect();
        inner
            .free_segments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|f| !old.contains(&f.number));

        // 1. New segments, written and synced.
        let (moves, writer) = self.copy_live_records(&candidates)?;
        if stop == CompactStep::NewSegmentsWritten {
            return Ok(out);
        }

        // 2. The switch: one transaction.
        let dropped: Vec<u64> = candidates
            .iter()
            .flat_map(|c| c.dropped.iter().copied())
            .collect();
        inner.index()?.switch_locations(&moves, &dropped)?;
        if stop == CompactStep::IndexSwitched {
            return Ok(out);
        }

        // 3. The old files go.
        for (i, c) in candidates.iter().enumerate() {
            if remote_only.contains(&c.number) {
                continue; // no local file: the offsite copy's next round drops it
            }
            let path = inner.segment_path(c.number);
            std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
            if i == 0 && stop == CompactStep::FirstOldDeleted {
                return Ok(out);
            }
        }
        crate::sync_dir(&seg_dir)?;

        out.segments_rewritten = candidates.len() as u64;
        out.segments_written = writer.written.len() as u64;
        out.messages_moved = moves.len() as u64;
        out.messages_dropped = dropped.len() as u64;
        out.bytes_after = out.bytes_before
            - candidates.iter().map(|c| files[&c.number]).sum::<u64>()
            + writer.written.iter().map(|o| o.len).sum::<u64>();
        writer.into_pool(inner);
        self.audit_compaction(&out, &rows, &dropped)?;
        Ok(out)
    }

    /// The segments worth rewriting: those holding bytes of shredded mailboxes or gaps no
    /// row references. Damaged ones are left alone and named in `out.skipped`.
    fn candidates(
        &self,
        files: &BTreeMap<u64, u64>,
        rows: &[MessageRow],
        shredded: &HashSet<u64>,
        out: &mut CompactOutcome,
    ) -> Vec<Candidate> {
        let mut by_segment: BTreeMap<u64, Vec<_>> = BTreeMap::new();
        for r in rows {
            by_segment.entry(r.segment).or_default().push(r);
        }
        let pooled: HashSet<u64> = self
            .inner
            .free_segments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|f| f.number)
            .collect();
        let mut candidates = Vec::new();
        for (&n, &len) in files {
            let seg_rows = by_segment.remove(&n).unwrap_or_default();
            let (live, dropped): (Vec<_>, Vec<_>) = seg_rows
                .iter()
                .copied()
                .partition(|r| !shredded.contains(&r.mailbox_id));
            let live_bytes: u64 = live.iter().map(|r| r.record_len).sum();
            if len <= SEG_HEADER_LEN + live_bytes && dropped.is_empty() {
                continue; // nothing to reclaim (or shorter than the index: checked below)
            }
            if live.is_empty() && dropped.is_empty() && pooled.contains(&n) {
                // A pooled segment with no rows is one a session may continue: leave it.
                // One outside the pool is left over (e.g. every record of it was
                // re-encrypted elsewhere): it is rewritten into nothing, i.e. deleted.
                continue;
            }
            let mut live: Vec<(u64, u64, u64)> = live
                .iter()
                .map(|r| (r.id, r.offset, r.record_len))
                .collect();
            live.sort_by_key(|&(_, off, _)| off);
            if let Err(reason) = self.check_records(n, len, &live, &seg_rows) {
                tracing::warn!(segment = n, %reason, "compaction skips a damaged segment; run verify");
                out.skipped
                    .push(format!("segment {}: {reason}", segment::file_name(n)));
                continue;
            }
            candidates.push(Candidate {
                number: n,
                live,
                dropped: dropped.iter().map(|r| r.id).collect(),
            });
        }
        candidates
    }

    /// Step 1: copies every live record of the candidates, byte for byte, into new
    /// segments, and syncs them.
    fn copy_live_records(
        &self,
        candidates: &[Candidate],
    ) -> Result<(Vec<RecordMove>, SegmentWriter), StoreError> {
        let inner = &self.inner;
        let mut moves = Vec::new();
        let mut writer = SegmentWriter::default();
        let mut buf = vec![0u8; 1 << 20];
        for c in candidates {
            let path = inner.segment_path(c.number);
            // The local file, or the offsite copy's reader of a segment only there.
            let mut src = inner
                .open_segment(c.number)
                .map_err(|e| StoreError::io(&path, e))?;
            for &(id, offset, len) in &c.live {
                let o = writer.output_for(inner, len)?;
                let opath = inner.segment_path(o.number);
                src.seek(SeekFrom::Start(offset))
                    .map_err(|e| StoreError::io(&path, e))?;
                let mut left = len;
                while left > 0 {
                    let n = left.min(buf.len() as u64) as usize;
                    src.read_exact(&mut buf[..n])
                        .map_err(|e| StoreError::io(&path, e))?;
                    o.file
                        .write_all(&buf[..n])
                        .map_err(|e| StoreError::io(&opath, e))?;
                    left -= n as u64;
                }
                moves.push(RecordMove {
                    id,
                    from_segment: c.number,
                    from_offset: offset,
                    to_segment: o.number,
                    to_offset: o.len,
                });
                o.len += len;
            }
        }
        writer.sync(inner)?;
        Ok((moves, writer))
    }

    /// Logs and audits a finished compaction; shredded mailboxes whose rows went are
    /// named by pseudonym only.
    fn audit_compaction(
        &self,
        out: &CompactOutcome,
        rows: &[MessageRow],
        dropped: &[u64],
    ) -> Result<(), StoreError> {
        let dropped_ids: HashSet<u64> = dropped.iter().copied().collect();
        let dropped_from: HashSet<u64> = rows
            .iter()
            .filter(|r| dropped_ids.contains(&r.id))
            .map(|r| r.mailbox_id)
            .collect();
        let mut pseudonyms = Vec::new();
        for (row, mailbox) in self.mailbox_rows()? {
            if dropped_from.contains(&row) {
                pseudonyms.push(self.pseudonym_of_mailbox(&mailbox));
            }
        }
        tracing::info!(
            rewritten = out.segments_rewritten,
            written = out.segments_written,
            dropped = out.messages_dropped,
            before = out.bytes_before,
            after = out.bytes_after,
            "volume compacted"
        );
        self.audit_event(
            "volume.compacted",
            serde_json::json!({
                "segments_rewritten": out.segments_rewritten,
                "segments_written": out.segments_written,
                "messages_moved": out.messages_moved,
                "messages_dropped": out.messages_dropped,
                "shredded_mailboxes": pseudonyms,
                "bytes_before": out.bytes_before,
                "bytes_after": out.bytes_after,
            }),
        )
    }

    /// Checks, without decrypting, that every live record of segment `n` lies inside the
    /// file and that its header names the row's message, mailbox, key id, salt and
    /// length. A damaged segment is not rewritten: copying would not repair it, and
    /// leaving it keeps what `verify` reports unchanged.
    fn check_records(
        &self,
        n: u64,
        len: u64,
        live: &[(u64, u64, u64)],
        rows: &[&MessageRow],
    ) -> Result<(), String> {
        let mut f = self
            .inner
            .open_segment(n)
            .map_err(|e| format!("cannot open: {e}"))?;
        let mut hb = [0u8; SEG_HEADER_LEN as usize];
        f.read_exact(&mut hb)
            .map_err(|e| format!("header unreadable: {e}"))?;
        match SegmentHeader::parse(&hb) {
            Ok(h) if h.volume_id == self.inner.volume_id && h.number == n => {}
            Ok(_) => return Err("header names another volume or segment number".into()),
            Err(e) => return Err(e.to_string()),
        }
        for &(id, offset, rlen) in live {
            let row = rows
                .iter()
                .find(|r| r.id == id)
                .expect("row of this segment");
            if offset < SEG_HEADER_LEN || offset.saturating_add(rlen) > len {
                return Err(format!(
                    "message id {id}: record at {offset}..{} lies outside the {len}-byte file",
                    offset.saturating_add(rlen)
                ));
            }
            let mut rb = [0u8; REC_HEADER_LEN];
            f.seek(SeekFrom::Start(offset))
                .and_then(|_| f.read_exact(&mut rb))
                .map_err(|e| format!("message id {id}: record header unreadable: {e}"))?;
            let h = RecordHeader::parse(&rb).map_err(|e| format!("message id {id}: {e}"))?;
            if h.message_id != id
                || h.mailbox_id != row.mailbox_id
                || h.key_id != row.key_id
                || h.salt != row.salt
                || h.record_len() != Some(rlen)
            {
                return Err(format!(
                    "message id {id}: the record header at offset {offset} does not match its index row"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
