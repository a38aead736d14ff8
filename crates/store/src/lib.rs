//! mailferry-store writes and reads the encrypted volume; it never opens a socket.
//!
//! A volume is a directory: `volume.hdr` (format version, volume id, the wrapped volume
//! master key), `index.sqlite` (wrapped tenant and mailbox keys, encrypted names and
//! metadata, keyed HMACs, record locations: no plaintext) and `segments/NNNNNNNN.seg`
//! (append-only records of 64 KiB AES-256-GCM chunks). docs/volume-format.md is the
//! byte-level spec.
//!
//! [`Volume`] is shared behind an `Arc` by many readers and [`IngestSession`]s; each
//! session appends to its own segment and group-commits (one fdatasync, one SQLite
//! transaction per batch). Everything here is blocking I/O: no async runtime, no network.

mod audit_sign;
pub mod audit_trail;
mod compact;
mod dedup;
mod error;
mod hpke;
mod index;
mod ingest;
pub mod offsite;
mod pipeline;
pub mod receipt;
mod reencrypt;
mod replicate;
pub mod snapshot;
mod tokens;
mod volume;

pub mod chunk;
pub mod credential;
pub mod header;
pub mod keys;
pub mod segment;
pub mod tenant_key;

pub use compact::CompactOutcome;
pub use credential::Credential;
pub use error::StoreError;
pub use ingest::{
    CommitJob, CommitOutcome, CommitTimings, Finished, IndexedJob, IngestSession, IngestTimings,
    SyncedJob,
};
pub use keys::Argon2Params;
pub use offsite::{Offsite, OffsiteError, SegmentRead};
pub use pipeline::{BatchPolicy, CommitPipeline, PipelineStopped};
pub use reencrypt::ReencryptOutcome;
pub use replicate::ReplicateOutcome;
pub use tenant_key::{
    AccessEvent, ConvertOutcome, GrantBundle, GrantPublic, GrantSecret, GrantedKey, KeyLevel,
    ReadAccess, TenantPublic, TenantSecret,
};
pub use tokens::{token_digest, IssuedToken, TokenAdmin, TokenGrant, TokenInfo};
pub use volume::{
    DamagedItem, InitOptions, InitOutcome, RecoveryReport, RotateOutcome, ShortSegment,
    StoredMessage, UnlockInfo, VerifyReport, Volume,
};

/// Name of the header file in a volume directory.
pub const HEADER_FILE: &str = "volume.hdr";
/// Name of the index file in a volume directory.
pub const INDEX_FILE: &str = "index.sqlite";
/// Name of the segments directory in a volume directory.
pub const SEGMENTS_DIR: &str = "segments";

/// fsyncs a directory so a create or rename inside it is durable.
pub(crate) fn sync_dir(dir: &std::path::Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

#[cfg(test)]
mod tests;
