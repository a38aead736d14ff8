//! The crate's one error type.

use std::path::PathBuf;

/// What can go wrong with a volume on object storage. Every message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BucketError {
    /// `--volume s3://...` is not a usable location.
    #[error("{url}: {reason}")]
    Location {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Credentials are missing or unreadable.
    #[error("S3 credentials: {reason}")]
    Credentials {
        /// What is missing or wrong.
        reason: String,
    },
    /// An S3 request failed.
    #[error("s3://{bucket}/{key}: {op} failed: {source} (check --s3-endpoint, the credentials and that the bucket exists)")]
    Request {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// What was being done.
        op: &'static str,
        /// The client's error.
        #[source]
        source: object_store::Error,
    },
    /// The bucket's objects do not form a volume this build can read.
    #[error("s3://{bucket}/{prefix}: {reason}")]
    Layout {
        /// The bucket.
        bucket: String,
        /// The volume prefix.
        prefix: String,
        /// What is wrong.
        reason: String,
    },
    /// Another process holds the writer lease of the prefix, or took it over.
    #[error("s3://{bucket}/{prefix}: {reason}")]
    Lease {
        /// The bucket.
        bucket: String,
        /// The volume prefix.
        prefix: String,
        /// Who holds it and what to do.
        reason: String,
    },
    /// A local file of the working copy.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The volume itself (opening, snapshotting).
    #[error(transparent)]
    Store(#[from] mailferry_store::StoreError),
}

impl BucketError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> BucketError {
        BucketError::Io {
            path: path.into(),
            source,
        }
    }
}
