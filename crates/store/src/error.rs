//! The one error type of mailferry-store.
//!
//! Every variant names the item (volume path, mailbox, message) and the cause, and says
//! what an admin can do about it. Errors never carry key material or decrypted content
//! beyond the names the caller already knows.

use std::path::PathBuf;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The volume's audit log could not be written or read.
    #[error("volume audit log: {0}")]
    Audit(#[from] mailferry_audit::AuditError),
    /// A file or directory could not be read or written.
    #[error(
        "file {path}: {source} (check that the path exists, its permissions and free disk space)"
    )]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// The key file, passphrase file or recovery key file is unusable.
    #[error("{kind} {path}: {reason}")]
    KeyFile {
        /// Which kind of credential file: "key file", "passphrase file", "recovery key file".
        kind: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it cannot be used, and what to do.
        reason: String,
    },

    /// The credential does not unlock this volume.
    #[error("volume {path}: wrong key ({hint})")]
    WrongKey {
        /// The volume directory.
        path: PathBuf,
        /// Which credential was refused and what to try instead.
        hint: String,
    },

    /// `init` was pointed at a directory that is not empty.
    #[error("volume {path}: refusing to initialise, the directory is not empty ({what} exists); choose an empty or new directory, nothing was changed")]
    NotEmpty {
        /// The volume directory.
        path: PathBuf,
        /// The first entry found.
        what: String,
    },

    /// There is no volume header where a volume was expected.
    #[error("volume {path}: no volume here (volume.hdr is missing); create one with `volume init` or check the path")]
    NoVolume {
        /// The volume directory.
        path: PathBuf,
    },

    /// The volume header is damaged.
    #[error("volume {path}: header damaged: {reason} (restore volume.hdr from a backup)")]
    HeaderDamaged {
        /// The volume directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The volume was written by a format version this build does not know.
    #[error("volume {path}: format version {found} is not supported (this build reads version {supported}); use a newer mailferry")]
    UnsupportedVersion {
        /// The volume directory.
        path: PathBuf,
        /// Version found on disk.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },

    /// No key slot of the header uses a key derivation this build knows.
    #[error(
        "volume {path}: key derivation {kdf} is not supported by this build; use a newer mailferry"
    )]
    UnsupportedKdf {
        /// The volume directory.
        path: PathBuf,
        /// The KDF ids found.
        kdf: String,
    },

    /// A tenant name given for a token is not a mail domain.
    #[error("tenant {tenant:?}: not a mail domain (a tenant is the part after @ of its mailboxes, e.g. example.com)")]
    BadTenant {
        /// The name given.
        tenant: String,
    },
    /// No token has this id.
    #[error("token {id}: not in this volume (see `mailferry token list`)")]
    UnknownToken {
        /// The id given.
        id: u64,
    },
    /// The volume's offsite copy (object storage) failed; what was being committed is
    /// not acknowledged.
    #[error("volume {path}: offsite copy: {reason}")]
    Offsite {
        /// The volume directory (the local working copy).
        path: PathBuf,
        /// What went wrong and what to do, as the offsite implementation words it.
        reason: String,
    },

    /// Another process has the volume open.
    #[error("volume {path}: in use by another process (volume.hdr is locked); stop the other mailferry first")]
    Busy {
        /// The volume directory.
        path: PathBuf,
    },

    /// The operation needs the open volume to itself (no ingest session may be open).
    #[error("volume {path}: {what} needs the volume to itself, but an ingest session is open; run it when no move is running")]
    InUse {
        /// The volume directory.
        path: PathBuf,
        /// The operation refused.
        what: &'static str,
    },

    /// A replica directory cannot take a copy of this volume.
    #[error("replica {path}: {reason}")]
    Replica {
        /// The replica directory.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },

    /// The SQLite index failed.
    #[error("volume index {path}: {source} (if this persists, run `volume verify`)")]
    Index {
        /// The index file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },

    /// The index does not belong to this volume or is inconsistent.
    #[error("volume index {path}: {reason}")]
    IndexDamaged {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A wrapped tenant or mailbox key, or an encrypted name, failed authentication.
    #[error("volume {path}: {what} failed authentication: index damaged or from another volume (restore index.sqlite from a backup)")]
    KeyUnwrap {
        /// The volume directory.
        path: PathBuf,
        /// Which key or name, by row id.
        what: String,
    },

    /// The mailbox's keys were destroyed by `volume shred`.
    #[error("mailbox {mailbox}: shredded (its keys were destroyed with `volume shred`; its mail cannot be read by anyone and `volume compact` reclaims its space)")]
    Shredded {
        /// The mailbox asked for.
        mailbox: String,
    },

    /// The tenant (mail domain) has no keys in this volume.
    #[error(
        "tenant {tenant}: not in this volume (a tenant is a mailbox domain; check the spelling)"
    )]
    UnknownTenant {
        /// The tenant asked for.
        tenant: String,
    },

    /// The mailbox has never been written to this volume.
    #[error("mailbox {mailbox}: not in this volume (check the address; list mailboxes with `volume ls`)")]
    UnknownMailbox {
        /// The mailbox asked for.
        mailbox: String,
    },

    /// One message was refused; the session goes on.
    #[error("message seq {seq}: rejected: {reason}")]
    Rejected {
        /// The client's sequence number.
        seq: u64,
        /// Why, in words an admin can act on.
        reason: String,
    },

    /// A fenced session was refused: the mailbox has a newer lease's fencing number
    /// (docs/wire-protocol.md §3.7). Nothing of the refused open or batch was written.
    #[error("a newer lease (fencing number {current}) owns mailbox {mailbox}; this worker's lease was taken over: stop, another worker is moving it")]
    Fenced {
        /// The mailbox.
        mailbox: String,
        /// The refused session's fencing number.
        fence: u64,
        /// The mailbox's fencing number now (higher).
        current: u64,
    },

    /// An ingest session method was called out of order (a caller bug).
    #[error("ingest session for {mailbox}: {reason}")]
    SessionMisuse {
        /// The session's mailbox.
        mailbox: String,
        /// What was wrong.
        reason: String,
    },

    /// A chunk failed to open, outside any named message (chunk layer, vectors, fuzzing).
    #[error("chunk {index}: {reason}")]
    Chunk {
        /// Chunk index.
        index: u64,
        /// Why.
        reason: String,
    },

    /// A segment file or record is malformed, outside any named message.
    #[error("segment data: {reason}")]
    SegmentFormat {
        /// What is malformed.
        reason: String,
    },

    /// A chunk of a stored message failed authentication.
    #[error("message {folder}/{source_id} (id {id}): chunk {n} failed authentication: ciphertext damaged or tampered (restore the volume from a backup or move the message again)")]
    ChunkAuth {
        /// Folder of the message.
        folder: String,
        /// Source id of the message.
        source_id: String,
        /// Message id in the store.
        id: u64,
        /// Chunk index.
        n: u64,
    },

    /// A stored message is damaged in some other way (record header, length, digest).
    #[error("message {folder}/{source_id} (id {id}): {reason} (restore the volume from a backup or move the message again)")]
    MessageDamaged {
        /// Folder of the message.
        folder: String,
        /// Source id of the message.
        source_id: String,
        /// Message id in the store.
        id: u64,
        /// What is wrong.
        reason: String,
    },

    /// A message's metadata failed to decrypt or parse.
    #[error("message id {id} of mailbox {mailbox}: metadata unreadable: {reason} (index row damaged; restore index.sqlite from a backup)")]
    MetaUnreadable {
        /// The mailbox.
        mailbox: String,
        /// Message id in the store.
        id: u64,
        /// Why.
        reason: String,
    },

    /// The mailbox's keys are wrapped to its tenant's customer key, and neither that key
    /// nor an active grant was given: nothing was decrypted (the refusal is in the
    /// volume's audit log).
    #[error("mailbox {mailbox}: sealed for tenant {tenant} with a customer key (fingerprint {fingerprint}); the volume key cannot read it. Give the tenant's key with --tenant-key FILE, or use an approved lockbox grant (`mailferry access request`); nothing was decrypted")]
    CustomerKeyNeeded {
        /// The mailbox.
        mailbox: String,
        /// Its tenant (mail domain).
        tenant: String,
        /// Fingerprint of the tenant's public key.
        fingerprint: String,
    },

    /// A whole-tenant operation on a customer-key tenant needs the tenant's private key
    /// (`volume rotate --tenant`, `--reencrypt`): it reads every message's metadata.
    #[error("tenant {tenant}: {what} needs the tenant's customer key (fingerprint {fingerprint}), which the volume key cannot replace. Give it with --tenant-key FILE; nothing was changed")]
    TenantKeyNeeded {
        /// The tenant (mail domain).
        tenant: String,
        /// Fingerprint of the tenant's public key.
        fingerprint: String,
        /// What was refused and why it reads mail.
        what: String,
    },

    /// A tenant key file does not belong to the tenant or volume it was given for.
    #[error("tenant key {path}: {reason}")]
    TenantKey {
        /// The key file (or what was given).
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },

    /// A lockbox grant bundle cannot be used.
    #[error("grant {grant_id} for {mailbox}: {reason}")]
    Grant {
        /// The grant id.
        grant_id: String,
        /// The mailbox it was made for.
        mailbox: String,
        /// What is wrong (expired, another volume, does not open) and what to do.
        reason: String,
    },

    /// Writing decrypted output failed.
    #[error(
        "message id {id}: writing the decrypted body failed: {source} (discard what was written)"
    )]
    Output {
        /// Message id in the store.
        id: u64,
        /// The writer's error.
        source: std::io::Error,
    },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}
