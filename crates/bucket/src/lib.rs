//! mailferry-bucket: volumes on S3-compatible object storage (`--volume s3://bucket/prefix`).
//!
//! The volume format does not change: a local working copy (an ordinary volume
//! directory) is written as always, and [`BucketVolume`], attached to it as the store's
//! [`mailferry_store::Offsite`], uploads its committed state to the bucket before any
//! batch is acknowledged; [`open`] restores the working copy from the bucket alone when
//! it is missing or stale, and sealed segments not on local disk are read with ranged
//! GETs. docs/volume-format.md, "Object storage", specifies the objects and the order.
//!
//! Only ciphertext, the plaintext-free index and the pseudonymous audit log leave the
//! machine. This crate never decrypts; opening the volume is the store's job. It has
//! its own small tokio runtime (the store must not link tokio).

mod client;
pub mod config;
pub mod delta;
mod error;
mod lease;
pub mod manifest;
mod writer;

pub use client::Client;
pub use config::{Credentials, S3Options, S3Url};
pub use error::BucketError;
pub use writer::BucketVolume;

use crate::manifest::{Manifest, HEADER, MANIFEST};
use crate::writer::{read_local_state, write_local_state, LocalState, Remote};
use mailferry_core::profile::StoreSettings;
use mailferry_store::{Credential, Volume};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long the writer lease lasts without renewal (`--s3-lease-seconds`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// A volume opened from object storage, with its offsite copy attached.
#[derive(Debug)]
pub struct OpenedVolume {
    /// The volume (its directory is the working copy).
    pub volume: Volume,
    /// The offsite copy (also attached to the volume).
    pub bucket: Arc<BucketVolume>,
    /// The working copy's directory.
    pub cache_dir: PathBuf,
    /// True if the working copy was restored from the bucket at this open.
    pub restored: bool,
}

/// A holder id for the lease: host, process, random.
fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let mut r = [0u8; 6];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r)
        .expect("the system RNG works");
    format!("{host}/{}/{}", std::process::id(), hex::encode(r))
}

/// The manifest and its ETag, if the prefix has one.
fn read_manifest(client: &Client) -> Result<Option<(Manifest, Option<String>)>, BucketError> {
    let Some((bytes, etag)) = client.get(MANIFEST)? else {
        return Ok(None);
    };
    let layout = |reason: String| BucketError::Layout {
        bucket: client.url().bucket.clone(),
        prefix: client.url().prefix.clone(),
        reason,
    };
    let m: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| layout(format!("MANIFEST unreadable: {e}")))?;
    m.check().map_err(layout)?;
    Ok(Some((m, etag)))
}

/// Opens the volume at `url` for writing: takes the writer lease, restores the working
/// copy from the bucket if it is missing or older than the bucket, opens it (crash
/// recovery runs as always), attaches the offsite copy and runs a first round.
///
/// An empty prefix with a volume in the working copy takes that volume (its first
/// round uploads it); an empty prefix without one is refused.
pub fn open(
    url: &S3Url,
    opts: &S3Options,
    cred: &Credential,
    settings: &StoreSettings,
) -> Result<OpenedVolume, BucketError> {
    let client = Arc::new(Client::new(url, opts)?);
    let dir = opts.cache_dir_for(url);
    let holder = holder();
    let ttl = opts
        .lease_seconds
        .map_or(DEFAULT_LEASE, Duration::from_secs);
    let lease = lease::Lease::acquire(&client, &holder, ttl)?;
    let mut restored = false;
    let remote = match read_manifest(&client)? {
        None => {
            if !dir.join(mailferry_store::HEADER_FILE).exists() {
                return Err(BucketError::Layout {
                    bucket: url.bucket.clone(),
                    prefix: url.prefix.clone(),
                    reason: "holds no volume (no MANIFEST); create one with `mailferry volume init --volume s3://...` or copy one there with `mailferry volume replicate --to s3://...`".into(),
                });
            }
            Remote {
                manifest: Manifest::default(),
                etag: None,
                header: None,
            }
        }
        Some((m, etag)) => {
            restored = ensure_working_copy(&client, &dir, &m)?;
            let header = std::fs::read(dir.join(mailferry_store::HEADER_FILE)).ok();
            sweep(&client, &m)?;
            Remote {
                manifest: m,
                etag,
                header,
            }
        }
    };
    let volume = Volume::open_with(&dir, cred, settings)?;
    let bucket = Arc::new(BucketVolume::new(
        client,
        &dir,
        settings.segment_max_bytes,
        holder,
        remote,
        lease,
    ));
    volume.attach_offsite(bucket.clone())?;
    bucket.flush_now()?;
    Ok(OpenedVolume {
        volume,
        bucket,
        cache_dir: dir,
        restored,
    })
}

/// Creates the volume's first upload from a volume directory that is not open
/// (`volume init` and `volume replicate --to s3://...`): the prefix must be empty or
/// hold the same volume. Returns the manifest generation written.
pub fn upload_dir(
    src: &Path,
    url: &S3Url,
    opts: &S3Options,
    seal_at: u64,
) -> Result<u64, BucketError> {
    let _lock = mailferry_store::snapshot::lock_dir(src)?;
    let client = Arc::new(Client::new(url, opts)?);
    let holder = holder();
    let ttl = opts
        .lease_seconds
        .map_or(DEFAULT_LEASE, Duration::from_secs);
    let lease = lease::Lease::acquire(&client, &holder, ttl)?;
    let header = mailferry_store::header::Header::read(src)?;
    let remote = match read_manifest(&client)? {
        None => Remote {
            manifest: Manifest::default(),
            etag: None,
            header: None,
        },
        Some((m, etag)) => {
            if m.volume_id != hex::encode(header.volume_id) {
                return Err(BucketError::Layout {
                    bucket: url.bucket.clone(),
                    prefix: url.prefix.clone(),
                    reason: "holds another volume (its volume id differs); choose an empty prefix, nothing was changed".into(),
                });
            }
            sweep(&client, &m)?;
            Remote {
                manifest: m,
                etag,
                header: None,
            }
        }
    };
    let bucket = BucketVolume::new(client, src, seal_at, holder, remote, lease);
    bucket.flush_now()?;
    let generation = bucket.generation();
    drop(bucket);
    Ok(generation)
}

/// True if the prefix holds a volume (a `MANIFEST`).
pub fn holds_volume(url: &S3Url, opts: &S3Options) -> Result<bool, BucketError> {
    let client = Client::new(url, opts)?;
    Ok(client.get(MANIFEST)?.is_some())
}

/// True if the volume at `url` has a recovery key slot, read from its `volume.hdr`
/// object (no lease is taken, nothing is written).
pub fn has_recovery_slot(url: &S3Url, opts: &S3Options) -> Result<bool, BucketError> {
    let client = Client::new(url, opts)?;
    let Some((bytes, _)) = client.get(HEADER)? else {
        return Err(BucketError::Layout {
            bucket: url.bucket.clone(),
            prefix: url.prefix.clone(),
            reason: "holds no volume (no volume.hdr); create one with `mailferry volume init --volume s3://...`".into(),
        });
    };
    // The location names the header in errors (parse reads nothing from it).
    let header = mailferry_store::header::Header::parse(Path::new(&url.to_string()), &bytes)?;
    Ok(header.has_recovery())
}

/// Makes `dir` a working copy at least as new as `m`: kept if its `offsite.json` says it
/// matches this volume at the manifest's generation or later (it may hold more: commits
/// never acknowledged), else restored from the bucket alone into a fresh directory that
/// replaces it. Returns true if it restored.
fn ensure_working_copy(client: &Client, dir: &Path, m: &Manifest) -> Result<bool, BucketError> {
    if let Some(s) = read_local_state(dir) {
        if s.volume_id == m.volume_id
            && s.generation >= m.generation
            && dir.join(mailferry_store::HEADER_FILE).exists()
        {
            return Ok(false);
        }
    }
    if let Ok(h) = mailferry_store::header::Header::read(dir) {
        if hex::encode(h.volume_id) != m.volume_id {
            return Err(BucketError::Layout {
                bucket: client.url().bucket.clone(),
                prefix: client.url().prefix.clone(),
                reason: format!(
                    "the working copy {} holds another volume; give another --cache-dir",
                    dir.display()
                ),
            });
        }
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    create_dir_all(parent)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "volume".into());
    let tmp = parent.join(format!(".{name}.restoring"));
    let _ = std::fs::remove_dir_all(&tmp);
    restore_into(client, &tmp, m)?;
    if dir.exists() {
        let stale = parent.join(format!(".{name}.stale"));
        let _ = std::fs::remove_dir_all(&stale);
        std::fs::rename(dir, &stale).map_err(|e| BucketError::io(dir, e))?;
        std::fs::rename(&tmp, dir).map_err(|e| BucketError::io(dir, e))?;
        let _ = std::fs::remove_dir_all(&stale);
    } else {
        std::fs::rename(&tmp, dir).map_err(|e| BucketError::io(dir, e))?;
    }
    tracing::info!(dir = %dir.display(), generation = m.generation, "working copy restored from the bucket");
    Ok(true)
}

fn create_dir_all(p: &Path) -> Result<(), BucketError> {
    mailferry_audit::private::create_dir_all(p).map_err(|e| BucketError::io(p, e))
}

/// Writes the volume `m` describes into the new directory `dir`: header, index
/// checkpoint, audit log and head, and the open segments (sealed ones stay in the
/// bucket and are read with ranged GETs).
fn restore_into(client: &Client, dir: &Path, m: &Manifest) -> Result<(), BucketError> {
    let layout = |reason: String| BucketError::Layout {
        bucket: client.url().bucket.clone(),
        prefix: client.url().prefix.clone(),
        reason,
    };
    let segs = dir.join(mailferry_store::SEGMENTS_DIR);
    create_dir_all(&segs)?;
    let get = |key: &str| {
        client
            .get(key)?
            .map(|(b, _)| b)
            .ok_or_else(|| layout(format!("{key} is missing although MANIFEST names it")))
    };
    let mut index = get(&m.index)?.to_vec();
    for d in &m.index_deltas {
        delta::apply(&mut index, &get(&d.key)?).map_err(|e| layout(format!("{}: {e}", d.key)))?;
    }
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &index));
    if sha != m.index_sha256 {
        return Err(layout(format!(
            "{} with {} delta(s) does not match the SHA-256 in MANIFEST",
            m.index,
            m.index_deltas.len()
        )));
    }
    write_file(&dir.join(mailferry_store::INDEX_FILE), &index)?;
    let audit_path = dir.join(mailferry_store::audit_trail::AUDIT_FILE);
    let mut audit = create(&audit_path)?;
    for p in &m.audit.pieces {
        audit
            .write_all(&get(&p.key(manifest::AUDIT_BASE))?)
            .map_err(|e| BucketError::io(&audit_path, e))?;
    }
    audit
        .sync_all()
        .map_err(|e| BucketError::io(&audit_path, e))?;
    if let Some(h) = &m.audit_head {
        write_file(&dir.join(mailferry_audit::head::HEAD_FILE), h.as_bytes())?;
    }
    for s in m.segments.iter().filter(|s| !s.sealed) {
        let path = segs.join(mailferry_store::segment::file_name(s.number));
        let mut f = create(&path)?;
        let base = manifest::segment_key(s.number);
        for p in &s.pieces {
            let b = get(&p.key(&base))?;
            if b.len() as u64 != p.end - p.start {
                return Err(layout(format!(
                    "{} has {} bytes, its name says {}",
                    p.key(&base),
                    b.len(),
                    p.end - p.start
                )));
            }
            f.write_all(&b).map_err(|e| BucketError::io(&path, e))?;
        }
        f.sync_all().map_err(|e| BucketError::io(&path, e))?;
    }
    write_local_state(
        dir,
        &LocalState {
            volume_id: m.volume_id.clone(),
            generation: m.generation,
        },
    )?;
    // The header last: its presence makes the directory a volume.
    write_file(&dir.join(mailferry_store::HEADER_FILE), &get(HEADER)?)?;
    Ok(())
}

fn create(path: &Path) -> Result<std::fs::File, BucketError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| BucketError::io(path, e))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), BucketError> {
    let mut f = create(path)?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| BucketError::io(path, e))
}

/// Deletes objects of the volume's kinds that `m` does not reference (left by a round
/// or a writer that died before deleting them). Only under the lease.
fn sweep(client: &Client, m: &Manifest) -> Result<(), BucketError> {
    let keep: std::collections::HashSet<String> = m.objects().into_iter().collect();
    for (key, _) in client.list()? {
        let ours = key.starts_with("segments/")
            || key.starts_with("index/")
            || key.starts_with("audit.jsonl.d/");
        if ours && !keep.contains(&key) {
            client.delete(&key)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
