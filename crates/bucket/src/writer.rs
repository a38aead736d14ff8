//! [`BucketVolume`]: the store's [`Offsite`] for a volume on object storage. It uploads
//! the working copy's committed state in rounds (pieces of open segments and of the
//! audit log, sealed segments whole, an index checkpoint, then `MANIFEST`), makes every
//! caller of `flush` wait for a round that started after it (group commit: one round
//! covers every batch committed before it began), holds the writer lease, and reads
//! sealed segments that are not on local disk with ranged GETs.
//!
//! It never decrypts anything and uploads only what the volume directory already holds
//! (ciphertext, the plaintext-free index, pseudonymous audit records).

use crate::client::{Client, PutOutcome};
use crate::manifest::{
    index_delta_key, index_key, segment_key, FileEntry, IndexDelta, Manifest, Piece, SegmentEntry,
    AUDIT_BASE, FORMAT, HEADER, MANIFEST,
};
use crate::BucketError;
use bytes::Bytes;
use mailferry_store::{Offsite, OffsiteError, SegmentRead};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Pieces of one size class merged into one of the next (see `BucketVolume::extend`).
pub const FAN_OUT: usize = 8;

/// The size class of a piece of `len` bytes: classes grow by [`FAN_OUT`] from 64 KiB.
fn size_class(len: u64) -> u32 {
    let mut class = 0;
    let mut bound = 64u64 << 10;
    while len >= bound {
        class += 1;
        bound = bound.saturating_mul(FAN_OUT as u64);
    }
    class
}

/// Bytes fetched per ranged GET when reading a sealed segment.
pub const READ_WINDOW: u64 = 4 << 20;
/// File in the working copy recording the manifest generation it matches.
pub const LOCAL_STATE: &str = "offsite.json";
/// The index snapshot of a round, in the working copy.
const SNAPSHOT: &str = ".offsite-index.snapshot";
/// The index image the bucket holds (checkpoint plus deltas) as of [`Image::generation`]:
/// what the next round's delta is computed against.
const IMAGE: &str = ".offsite-index.image";
/// Deltas after one checkpoint before the next round uploads the index whole again: a
/// restore applies at most this many.
const MAX_DELTAS: usize = 64;
/// Below this an index is cheap to upload whole; deltas are still used, so that the
/// path is the same at every size, with a budget of this many bytes.
const SMALL_INDEX: u64 = 4 << 20;

/// What [`IMAGE`] is: written by this process after a round, never trusted across a
/// restart (the first round of a process uploads the index whole).
#[derive(Clone, Copy, Debug)]
struct Image {
    /// The manifest generation whose index image the file is.
    generation: u64,
    /// Bytes of that generation's checkpoint object (the deltas' budget).
    base_len: u64,
}

/// What the working copy last uploaded (`offsite.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LocalState {
    pub volume_id: String,
    pub generation: u64,
}

/// Coalescing of flushes into rounds.
#[derive(Default)]
struct Rounds {
    started: u64,
    running: bool,
    /// Highest round that completed successfully.
    ok: u64,
    finished: u64,
    last_error: Option<String>,
}

/// What the bucket holds, as this writer last wrote it.
pub(crate) struct Remote {
    pub manifest: Manifest,
    pub etag: Option<String>,
    pub header: Option<Vec<u8>>,
}

/// A volume's offsite copy in one bucket prefix.
pub struct BucketVolume {
    client: Arc<Client>,
    dir: PathBuf,
    seal_at: u64,
    holder: String,
    rounds: Mutex<Rounds>,
    done: Condvar,
    remote: Mutex<Remote>,
    fenced: Arc<AtomicBool>,
    lease: Mutex<Option<crate::lease::Lease>>,
    /// Segments ingest left for good (see [`Offsite::segment_closed`]).
    closed: Mutex<std::collections::HashSet<u64>>,
    /// The local copy of the bucket's index image, if this process wrote one.
    image: Mutex<Option<Image>>,
}

impl std::fmt::Debug for BucketVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketVolume")
            .field("url", self.client.url())
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl BucketVolume {
    pub(crate) fn new(
        client: Arc<Client>,
        dir: &Path,
        seal_at: u64,
        holder: String,
        remote: Remote,
        lease: crate::lease::Lease,
    ) -> BucketVolume {
        BucketVolume {
            client,
            dir: dir.to_path_buf(),
            seal_at,
            holder,
            rounds: Mutex::default(),
            done: Condvar::new(),
            remote: Mutex::new(remote),
            fenced: lease.fenced(),
            lease: Mutex::new(Some(lease)),
            closed: Mutex::default(),
            image: Mutex::default(),
        }
    }

    /// The manifest generation in the bucket now.
    pub fn generation(&self) -> u64 {
        self.remote
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .manifest
            .generation
    }

    /// Uploads everything committed before the call (see [`Offsite::flush`]).
    pub fn flush_now(&self) -> Result<(), BucketError> {
        let mut r = self.rounds.lock().unwrap_or_else(|p| p.into_inner());
        // A round already running may have started before our batch: we need the next.
        let need = r.started + 1;
        loop {
            if r.finished >= need {
                return if r.ok >= need {
                    Ok(())
                } else {
                    Err(self.lease_error(
                        r.last_error
                            .clone()
                            .unwrap_or_else(|| "upload round failed".into()),
                    ))
                };
            }
            if !r.running {
                r.running = true;
                r.started += 1;
                let mine = r.started;
                drop(r);
                let res = self.round();
                r = self.rounds.lock().unwrap_or_else(|p| p.into_inner());
                r.running = false;
                r.finished = mine;
                match res {
                    Ok(()) => r.ok = mine,
                    Err(e) => {
                        tracing::error!(error = %e, "offsite upload round failed; acknowledgements held back");
                        r.last_error = Some(e.to_string());
                    }
                }
                self.done.notify_all();
                continue;
            }
            r = self.done.wait(r).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn lease_error(&self, reason: String) -> BucketError {
        BucketError::Lease {
            bucket: self.client.url().bucket.clone(),
            prefix: self.client.url().prefix.clone(),
            reason,
        }
    }

    /// One upload round: snapshot, new bytes, index checkpoint, MANIFEST, garbage.
    fn round(&self) -> Result<(), BucketError> {
        if self.fenced.load(Ordering::SeqCst) {
            return Err(self.lease_error("this process lost the writer lease to another one; nothing more is written here. Stop this process".into()));
        }
        let t0 = std::time::Instant::now();
        let snap_path = self.dir.join(SNAPSHOT);
        let snap = mailferry_store::snapshot::snapshot(&self.dir, &snap_path)?;
        let snap_ms = t0.elapsed().as_millis();
        let (index_sha, index_len) = sha256_of(&snap_path)?;
        let mut remote = self.remote.lock().unwrap_or_else(|p| p.into_inner());
        let head = snap
            .audit_head
            .as_ref()
            .map(|h| String::from_utf8_lossy(h).into_owned());
        let unchanged = remote.manifest.generation > 0
            && remote.manifest.index_sha256 == index_sha
            && remote.manifest.audit.len == snap.audit_len
            && remote.manifest.audit_head == head
            && remote.header.as_deref() == Some(&snap.header[..]);
        if unchanged {
            let _ = std::fs::remove_file(&snap_path);
            return Ok(());
        }
        let mut m = remote.manifest.clone();
        let mut garbage = Vec::new();
        if remote.header.as_deref() != Some(&snap.header[..]) {
            self.client
                .put_bytes(HEADER, Bytes::from(snap.header.clone()))?;
        }
        self.segments(&mut m, &snap.segment_ends, &mut garbage)?;
        let audit_path = self.dir.join(mailferry_store::audit_trail::AUDIT_FILE);
        if snap.audit_len < m.audit.len {
            // The log only grows; a shorter one was repaired after a crash: start over.
            garbage.extend(m.audit.pieces.iter().map(|p| p.key(AUDIT_BASE)));
            m.audit = FileEntry::default();
        }
        self.extend(
            AUDIT_BASE,
            &audit_path,
            &mut m.audit,
            snap.audit_len,
            &mut garbage,
        )?;
        m.generation += 1;
        m.format = FORMAT.into();
        m.volume_id = hex::encode(snap.volume_id);
        m.writer = self.holder.clone();
        let image = self.image.lock().unwrap_or_else(|p| p.into_inner()).take();
        let base_len = self.index(&mut m, &snap_path, index_len, image, &mut garbage)?;
        m.index_sha256 = index_sha;
        m.audit_head = head;
        let body = serde_json::to_vec_pretty(&m).expect("a manifest serializes");
        let etag = match self
            .client
            .put_if(MANIFEST, Bytes::from(body), remote.etag.as_deref())?
        {
            PutOutcome::Written(Some(e)) => Some(e),
            PutOutcome::Written(None) => self.client.get(MANIFEST)?.and_then(|(_, e)| e),
            PutOutcome::Conflict => {
                self.fenced.store(true, Ordering::SeqCst);
                return Err(self.lease_error("MANIFEST changed under this writer (another process writes this prefix); nothing more is written here. Stop this process and check who holds the LEASE object".into()));
            }
        };
        remote.manifest = m;
        remote.etag = etag;
        remote.header = Some(snap.header.clone());
        let state = LocalState {
            volume_id: remote.manifest.volume_id.clone(),
            generation: remote.manifest.generation,
        };
        drop(remote);
        let image_path = self.dir.join(IMAGE);
        if std::fs::rename(&snap_path, &image_path).is_ok() {
            *self.image.lock().unwrap_or_else(|p| p.into_inner()) = Some(Image {
                generation: state.generation,
                base_len,
            });
        }
        write_local_state(&self.dir, &state)?;
        let garbage_n = garbage.len();
        for key in garbage {
            if let Err(e) = self.client.delete(&key) {
                tracing::warn!(error = %e, "object no longer referenced not deleted; the next writer open sweeps it");
            }
        }
        tracing::debug!(
            generation = state.generation,
            snapshot_ms = snap_ms,
            total_ms = t0.elapsed().as_millis(),
            deleted = garbage_n,
            "offsite round"
        );
        Ok(())
    }

    /// The index of the round: a delta against the image the bucket holds when this
    /// process wrote that image and the delta is small (a quarter of the index at most,
    /// the deltas since the checkpoint together no larger than it, at most
    /// [`MAX_DELTAS`] of them; an index under [`SMALL_INDEX`] counts as that large), else the whole index as a new checkpoint (the old one and
    /// its deltas become garbage). Returns the checkpoint's size.
    fn index(
        &self,
        m: &mut Manifest,
        snap: &Path,
        len: u64,
        image: Option<Image>,
        garbage: &mut Vec<String>,
    ) -> Result<u64, BucketError> {
        let image_path = self.dir.join(IMAGE);
        if let Some(img) = image.filter(|i| {
            i.generation + 1 == m.generation
                && !m.index.is_empty()
                && m.index_deltas.len() < MAX_DELTAS
        }) {
            let spent: u64 = m.index_deltas.iter().map(|d| d.len).sum();
            let limit = (len / 4)
                .max(SMALL_INDEX / 4)
                .min(img.base_len.max(SMALL_INDEX).saturating_sub(spent));
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            let delta = crate::delta::diff(&image_path, snap, limit)
                .map_err(|e| BucketError::io(&image_path, std::io::Error::other(e)))?;
            if let Some(d) = delta {
                let key = index_delta_key(m.generation);
                let dlen = d.len() as u64;
                self.client.put_bytes(&key, Bytes::from(d))?;
                m.index_deltas.push(IndexDelta { key, len: dlen });
                return Ok(img.base_len);
            }
        }
        let _ = std::fs::remove_file(&image_path);
        let key = index_key(m.generation);
        self.client.put_file_range(&key, snap, 0..len)?;
        if !m.index.is_empty() {
            garbage.push(std::mem::take(&mut m.index));
        }
        garbage.extend(m.index_deltas.drain(..).map(|d| d.key));
        m.index = key;
        Ok(len)
    }

    /// Segment bytes of the round: sealed segments whole, open ones as new pieces;
    /// segments the index no longer references leave the manifest.
    fn segments(
        &self,
        m: &mut Manifest,
        ends: &std::collections::BTreeMap<u64, u64>,
        garbage: &mut Vec<String>,
    ) -> Result<(), BucketError> {
        let mut next = Vec::with_capacity(ends.len());
        for (&n, &end) in ends {
            let base = segment_key(n);
            let mut e = m
                .segments
                .iter()
                .find(|s| s.number == n)
                .cloned()
                .unwrap_or(SegmentEntry {
                    number: n,
                    ..Default::default()
                });
            let local = self
                .dir
                .join(mailferry_store::SEGMENTS_DIR)
                .join(mailferry_store::segment::file_name(n));
            if e.len == end && (e.sealed || !e.pieces.is_empty()) {
                next.push(e);
                continue;
            }
            let closed = self
                .closed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&n);
            if e.sealed || closed || end >= self.seal_at {
                // Closed for good: one object, read back with ranged GETs. A batch that
                // was in flight when ingest closed it may still extend it once: the
                // object is then replaced whole, and its old bytes are a prefix of the
                // new, so a reader of either manifest reads the same records.
                self.client.put_file_range(&base, &local, 0..end)?;
                garbage.extend(e.pieces.iter().map(|p| p.key(&base)));
                e.pieces.clear();
                e.sealed = true;
                e.len = end;
            } else {
                let mut f = FileEntry {
                    len: e.len,
                    pieces: std::mem::take(&mut e.pieces),
                };
                self.extend(&base, &local, &mut f, end, garbage)?;
                e.len = f.len;
                e.pieces = f.pieces;
            }
            next.push(e);
        }
        for old in &m.segments {
            if !ends.contains_key(&old.number) {
                let base = segment_key(old.number);
                if old.sealed {
                    garbage.push(base);
                } else {
                    garbage.extend(old.pieces.iter().map(|p| p.key(&base)));
                }
            }
        }
        m.segments = next;
        Ok(())
    }

    /// Extends a pieced file to `end`: the new bytes as one piece; then, tiered like an
    /// LSM tree with fan-out [`FAN_OUT`], every run of [`FAN_OUT`] trailing pieces of
    /// one size class is merged into one piece of the next. Each byte is uploaded about
    /// once per size class (a handful of times for a 1 GiB segment) and a file has at
    /// most `FAN_OUT - 1` pieces per class.
    fn extend(
        &self,
        base: &str,
        local: &Path,
        f: &mut FileEntry,
        end: u64,
        garbage: &mut Vec<String>,
    ) -> Result<(), BucketError> {
        if end <= f.len {
            return Ok(());
        }
        let p = Piece { start: f.len, end };
        self.client
            .put_file_range(&p.key(base), local, p.start..p.end)?;
        f.pieces.push(p);
        f.len = end;
        while let Some(last) = f.pieces.last() {
            let class = size_class(last.end - last.start);
            let run = f
                .pieces
                .iter()
                .rev()
                .take_while(|p| size_class(p.end - p.start) == class)
                .count();
            if run < FAN_OUT {
                break;
            }
            let first = f.pieces.len() - run;
            let merged = Piece {
                start: f.pieces[first].start,
                end,
            };
            self.client
                .put_file_range(&merged.key(base), local, merged.start..merged.end)?;
            garbage.extend(f.pieces.drain(first..).map(|p| p.key(base)));
            f.pieces.push(merged);
        }
        Ok(())
    }

    /// Stops the lease renewal and gives the lease up (after a last round).
    pub fn close(&self) {
        if let Err(e) = self.flush_now() {
            tracing::warn!(error = %e, "last offsite round at close failed");
        }
        if let Some(l) = self.lease.lock().unwrap_or_else(|p| p.into_inner()).take() {
            l.release(&self.client);
        }
    }
}

impl Drop for BucketVolume {
    fn drop(&mut self) {
        self.close();
    }
}

impl Offsite for BucketVolume {
    fn flush(&self) -> Result<(), OffsiteError> {
        self.flush_now().map_err(|e| Box::new(e) as OffsiteError)
    }

    fn segment_closed(&self, number: u64) {
        self.closed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(number);
    }

    fn sealed_segments(&self) -> Vec<(u64, u64)> {
        self.remote
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .manifest
            .segments
            .iter()
            .filter(|s| s.sealed)
            .map(|s| (s.number, s.len))
            .collect()
    }

    fn is_sealed(&self, number: u64) -> bool {
        self.remote
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .manifest
            .segments
            .iter()
            .any(|s| s.number == number && s.sealed)
    }

    fn open_segment(&self, number: u64) -> std::io::Result<Box<dyn SegmentRead>> {
        let len = {
            let r = self.remote.lock().unwrap_or_else(|p| p.into_inner());
            r.manifest
                .segments
                .iter()
                .find(|s| s.number == number && s.sealed)
                .map(|s| s.len)
        };
        let Some(len) = len else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "segment {number} is neither on local disk nor sealed in {}",
                    self.client.url()
                ),
            ));
        };
        Ok(Box::new(RangedSegment {
            client: self.client.clone(),
            key: segment_key(number),
            len,
            pos: 0,
            buf: Bytes::new(),
            buf_start: 0,
        }))
    }
}

/// A sealed segment read with ranged GETs, [`READ_WINDOW`] bytes at a time.
struct RangedSegment {
    client: Arc<Client>,
    key: String,
    len: u64,
    pos: u64,
    buf: Bytes,
    buf_start: u64,
}

impl Read for RangedSegment {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len || out.is_empty() {
            return Ok(0);
        }
        let in_buf =
            self.pos >= self.buf_start && self.pos < self.buf_start + self.buf.len() as u64;
        if !in_buf {
            let end = (self.pos + READ_WINDOW).min(self.len);
            self.buf = self
                .client
                .get_range(&self.key, self.pos..end)
                .map_err(std::io::Error::other)?;
            self.buf_start = self.pos;
            if self.buf.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{}: ranged GET returned no bytes", self.key),
                ));
            }
        }
        let at = (self.pos - self.buf_start) as usize;
        let n = out.len().min(self.buf.len() - at);
        out[..n].copy_from_slice(&self.buf[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for RangedSegment {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let to = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before 0"))?;
        self.pos = to;
        Ok(to)
    }
}

impl SegmentRead for RangedSegment {
    fn segment_len(&self) -> u64 {
        self.len
    }
}

pub(crate) fn write_local_state(dir: &Path, s: &LocalState) -> Result<(), BucketError> {
    let p = dir.join(LOCAL_STATE);
    let tmp = dir.join(format!("{LOCAL_STATE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(s).expect("serializes"))
        .and_then(|_| std::fs::rename(&tmp, &p))
        .map_err(|e| BucketError::io(&p, e))
}

pub(crate) fn read_local_state(dir: &Path) -> Option<LocalState> {
    serde_json::from_slice(&std::fs::read(dir.join(LOCAL_STATE)).ok()?).ok()
}

/// SHA-256 (hex) and length of a file, read in 1 MiB pieces.
fn sha256_of(path: &Path) -> Result<(String, u64), BucketError> {
    let mut f = std::fs::File::open(path).map_err(|e| BucketError::io(path, e))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).map_err(|e| BucketError::io(path, e))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hex::encode(ctx.finish()), len))
}
