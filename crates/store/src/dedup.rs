//! [`DedupReader`]: a read-only connection to `index.sqlite` that answers an ingest
//! session's "is this message already stored?" without the volume's index lock.
//!
//! The index is in WAL mode, so a reader sees the last committed state while a group
//! commit's transaction (and its WAL fsync) runs on the shared connection; looking the
//! value up there instead meant waiting behind every commit for every message. This
//! module only reads: it never writes, and it decides nothing about duplicates (the
//! commit's UNIQUE constraint stays the arbiter for a copy committed in the meantime).

use crate::StoreError;
use rusqlite::{params, Connection, OpenFlags};
use std::path::{Path, PathBuf};

/// A session's own read connection to the index.
pub(crate) struct DedupReader {
    conn: Connection,
    path: PathBuf,
}

impl DedupReader {
    /// Opens a read connection to an existing index (never creates one).
    pub fn open(path: &Path) -> Result<DedupReader, StoreError> {
        let e = |source| StoreError::Index {
            path: path.to_path_buf(),
            source,
        };
        // Read-write flags with `query_only`: a read-only open of a WAL database fails
        // when the -shm file has to be created, which a read-write open does itself.
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(e)?;
        conn.pragma_update(None, "query_only", "ON").map_err(e)?;
        // A commit holding the write lock never blocks a WAL reader; the timeout only
        // covers a checkpoint that restarts the WAL at the same moment.
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(e)?;
        Ok(DedupReader {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// True if the mailbox holds a committed message with this dedup value.
    pub fn exists(&self, mailbox_id: u64, dedup: &[u8; 32]) -> Result<bool, StoreError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT 1 FROM messages WHERE mailbox_id = ?1 AND dedup = ?2")
            .map_err(|e| self.err(e))?;
        st.exists(params![mailbox_id as i64, &dedup[..]])
            .map_err(|e| self.err(e))
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Index {
            path: self.path.clone(),
            source,
        }
    }
}
