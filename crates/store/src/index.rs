//! The SQLite index `index.sqlite`: tenants, mailboxes, segments and message rows.
//!
//! It holds wrapped keys, encrypted names and metadata, keyed HMACs for lookup and
//! dedup, and record locations; never a plaintext name, folder, source id or body. This
//! module is SQL only: no crypto decisions and no segment I/O.

use crate::StoreError;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Schema version this build writes; versions 1 (the foundation's) to 5 are migrated at
/// open.
pub(crate) const SCHEMA_VERSION: i64 = 6;

const SCHEMA: &str = "
CREATE TABLE volume (k TEXT PRIMARY KEY, v BLOB NOT NULL) STRICT;
CREATE TABLE tenants (
    id INTEGER PRIMARY KEY,
    name_mac BLOB NOT NULL UNIQUE,
    name_enc BLOB NOT NULL,
    key_wrapped BLOB NOT NULL
) STRICT;
CREATE TABLE mailboxes (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    name_mac BLOB NOT NULL UNIQUE,
    name_enc BLOB NOT NULL,
    key_id INTEGER NOT NULL,
    key_wrapped BLOB NOT NULL
) STRICT;
CREATE TABLE segments (number INTEGER PRIMARY KEY) STRICT;
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id),
    key_id INTEGER NOT NULL,
    segment INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    record_len INTEGER NOT NULL,
    salt BLOB NOT NULL,
    meta_enc BLOB NOT NULL,
    dedup BLOB NOT NULL
) STRICT;
CREATE UNIQUE INDEX messages_dedup ON messages(mailbox_id, dedup);
CREATE INDEX messages_mailbox ON messages(mailbox_id, id);
CREATE INDEX messages_segment ON messages(segment);
";

/// What schema 2 adds to schema 1: earlier generations of rotated mailbox keys.
const SCHEMA_2: &str = "
CREATE TABLE IF NOT EXISTS mailbox_keys (
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id),
    key_id INTEGER NOT NULL,
    key_wrapped BLOB NOT NULL,
    PRIMARY KEY (mailbox_id, key_id)
) STRICT;
";

/// What schema 3 adds to schema 2: agent tokens. `revoked` is 0 or the Unix time of the
/// revocation; `expires` is 0 (never) or the Unix time from which the token is refused;
/// `audited` is 0 (nothing recorded yet), 1 (issue recorded) or 2 (revoke recorded
/// too).
const SCHEMA_3: &str = "
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY,
    digest BLOB NOT NULL UNIQUE,
    tenant_mac BLOB NOT NULL,
    tenant_enc BLOB NOT NULL,
    created INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    audited INTEGER NOT NULL DEFAULT 0,
    expires INTEGER NOT NULL DEFAULT 0
) STRICT;
";

/// What schema 4 adds to schema 3 (mirror passes): each message's locator, a keyed HMAC
/// of (folder, source id) under the mailbox's locator key, so DELETE and FLAGS find a
/// message without a plaintext name (NULL until `Volume::open` computes it for rows of
/// an older schema), and the ids of messages removed by DELETE, so the audit log can be
/// completed after a crash and no message id is ever handed out twice.
const SCHEMA_4: &str = "
ALTER TABLE messages ADD COLUMN locator BLOB;
CREATE INDEX messages_locator ON messages(mailbox_id, locator);
CREATE TABLE deleted_messages (
    id INTEGER PRIMARY KEY,
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id)
) STRICT;
";

/// What schema 5 adds to schema 4 (customer keys, issue 21): a tenant's registered X25519
/// public key with its fingerprint and the VMK-wrapped index key its mailboxes' dedup,
/// locator and receipt keys derive from; per message of a customer-key mailbox the
/// SHA-256 of its record as written (`digest`), its receipt leaf sealed under the index
/// key (`leaf_enc`), and the flags a mirror pass set since (`flags_enc`, sealed under that
/// session's generation). NULL for every other message.
const SCHEMA_5: &str = "
CREATE TABLE IF NOT EXISTS tenant_keys (
    tenant_id INTEGER PRIMARY KEY REFERENCES tenants(id),
    public BLOB NOT NULL,
    fingerprint TEXT NOT NULL,
    index_key_wrapped BLOB NOT NULL,
    created INTEGER NOT NULL
) STRICT;
ALTER TABLE messages ADD COLUMN digest BLOB;
ALTER TABLE messages ADD COLUMN leaf_enc BLOB;
ALTER TABLE messages ADD COLUMN flags_enc BLOB;
";

/// What schema 6 adds to schema 5 (fencing, issue 20): per mailbox, the highest fencing
/// number a session has opened it with. A session with a lower one is refused, and every
/// commit of a fenced session checks, in its own transaction, that the number is still its
/// own (docs/wire-protocol.md §3.7).
const SCHEMA_6: &str = "
CREATE TABLE IF NOT EXISTS fences (
    mailbox_id INTEGER PRIMARY KEY REFERENCES mailboxes(id),
    fence INTEGER NOT NULL
) STRICT;
";

/// The columns [`mailbox_key_row`] reads, in its order.
const MAILBOX_KEY_COLS: &str = "id, key_wrapped, key_id, tenant_id";

/// A mailbox row as its key rows need it (columns [`MAILBOX_KEY_COLS`]).
fn mailbox_key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        id: r.get::<_, i64>(0)? as u64,
        key_wrapped: r.get(1)?,
        key_id: r.get::<_, i64>(2)? as u32,
        tenant_id: r.get::<_, i64>(3)? as u64,
    })
}

/// A tenant or mailbox row.
pub(crate) struct KeyRow {
    pub id: u64,
    pub key_wrapped: Vec<u8>,
    pub key_id: u32,
    pub tenant_id: u64,
}

/// A message row, as stored.
#[derive(Clone, Debug)]
pub(crate) struct MessageRow {
    pub id: u64,
    pub mailbox_id: u64,
    pub key_id: u32,
    pub segment: u64,
    pub offset: u64,
    pub record_len: u64,
    pub salt: [u8; 32],
    pub meta_enc: Vec<u8>,
    pub dedup: [u8; 32],
    /// `None` only for a row of an older schema whose locator is not computed yet.
    pub locator: Option<[u8; 32]>,
    /// Customer-key messages (schema 5): SHA-256 of the record as written.
    pub digest: Option<[u8; 32]>,
    /// Customer-key messages: the receipt leaf, sealed under the tenant's index key.
    pub leaf_enc: Option<Vec<u8>>,
    /// Customer-key messages: flags set by a later mirror pass, sealed under that
    /// session's generation (see `tenant_key::seal_flags`).
    pub flags_enc: Option<Vec<u8>>,
}

/// The columns [`message_row`] reads, in its order.
const MESSAGE_COLUMNS: &str =
    "id, mailbox_id, key_id, segment, offset, record_len, salt, meta_enc, dedup, locator, digest, leaf_enc, flags_enc";

/// A `messages` row selected with [`MESSAGE_COLUMNS`].
fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
    let blob32 = |v: Vec<u8>, i: usize| -> rusqlite::Result<[u8; 32]> {
        v.try_into().map_err(|_| {
            rusqlite::Error::FromSqlConversionFailure(
                i,
                rusqlite::types::Type::Blob,
                "expected 32 bytes".into(),
            )
        })
    };
    Ok(MessageRow {
        id: r.get::<_, i64>(0)? as u64,
        mailbox_id: r.get::<_, i64>(1)? as u64,
        key_id: r.get::<_, i64>(2)? as u32,
        segment: r.get::<_, i64>(3)? as u64,
        offset: r.get::<_, i64>(4)? as u64,
        record_len: r.get::<_, i64>(5)? as u64,
        salt: blob32(r.get(6)?, 6)?,
        meta_enc: r.get(7)?,
        dedup: blob32(r.get(8)?, 8)?,
        locator: match r.get::<_, Option<Vec<u8>>>(9)? {
            Some(v) => Some(blob32(v, 9)?),
            None => None,
        },
        digest: match r.get::<_, Option<Vec<u8>>>(10)? {
            Some(v) => Some(blob32(v, 10)?),
            None => None,
        },
        leaf_enc: r.get(11)?,
        flags_enc: r.get(12)?,
    })
}

/// One record moved by compaction.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordMove {
    pub id: u64,
    pub from_segment: u64,
    pub from_offset: u64,
    pub to_segment: u64,
    pub to_offset: u64,
}

/// One mailbox key rotation: the current generation is kept as an earlier one.
pub(crate) struct KeyRotation {
    pub mailbox_id: u64,
    pub old_key_id: u32,
    pub old_wrapped: Vec<u8>,
    pub new_key_id: u32,
    pub new_wrapped: Vec<u8>,
}

/// One message re-encrypted into a new record.
#[derive(Clone, Debug)]
pub(crate) struct Reencrypted {
    pub id: u64,
    pub from_key_id: u32,
    pub from_segment: u64,
    pub from_offset: u64,
    pub key_id: u32,
    pub to_segment: u64,
    pub to_offset: u64,
    pub salt: [u8; 32],
    pub meta_enc: Vec<u8>,
    /// Customer-key messages: SHA-256 of the new record (verify without the key).
    pub digest: Option<[u8; 32]>,
}

/// `(message id, dedup value, locator)` of one message under a new key generation.
pub(crate) type Rekeyed = (u64, [u8; 32], [u8; 32]);

/// What the switch of a mailbox's last re-encrypted batch also does.
pub(crate) struct LastSwitch {
    pub mailbox_id: u64,
    /// The current (and afterwards only) key generation.
    pub key_id: u32,
    /// `(message id, dedup value, locator)` of every message, both under the current
    /// generation.
    pub dedups: Vec<Rekeyed>,
}

/// The `volume` row marking a pending re-encryption of a mailbox.
fn reencrypt_marker(mailbox_id: u64) -> String {
    format!("reencrypt:{mailbox_id}")
}

/// Names the index file in an SQLite error. A free function rather than `Index::err`
/// because a write transaction holds `conn` mutably: borrowing only `path` leaves the
/// closure usable (it is `Copy`) for every `map_err` inside the transaction.
fn index_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + Copy + '_ {
    move |source| StoreError::Index {
        path: path.to_path_buf(),
        source,
    }
}

/// The open index.
pub(crate) struct Index {
    conn: Connection,
    path: PathBuf,
}

impl Index {
    fn err(&self, e: rusqlite::Error) -> StoreError {
        index_err(&self.path)(e)
    }

    /// The one row `sql` selects, if any, read by `f`.
    fn query_opt<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, StoreError> {
        self.conn
            .query_row(sql, params, f)
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every row `sql` selects, read by `f` (a cached statement).
    fn query_all<C: FromIterator<T>, T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<C, StoreError> {
        let mut st = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = st.query_map(params, f).map_err(|e| self.err(e))?;
        rows.collect::<Result<C, _>>().map_err(|e| self.err(e))
    }

    /// Runs one statement that returns no rows.
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> Result<(), StoreError> {
        self.conn
            .execute(sql, params)
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn pragmas(conn: &Connection) -> rusqlite::Result<()> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Freed pages are zeroed so deleted rows do not linger in the file.
        conn.pragma_update(None, "secure_delete", "ON")?;
        // The dedup and locator indexes are keyed by random HMACs, so every insert lands
        // on a random leaf page; past ~30,000 messages in a mailbox they no longer fit
        // SQLite's default 2 MB cache and each insert re-reads pages (index CPU per message
        // 34 µs at 100,000 messages, 20 µs with 16 MiB). 8 MiB is the compromise with the
        // 256 MiB peak-RSS budget of a move; it is the most this cache ever takes.
        conn.pragma_update(None, "cache_size", -8192)?;
        // Those random leaves are dirtied again by nearly every commit; checkpointing
        // every 16 MiB of WAL instead of every 4 MiB writes each page to the database
        // file once for several commits instead of once per few.
        conn.pragma_update(None, "wal_autocheckpoint", 4096)?;
        // `token issue`/`revoke` may write while `serve` holds the volume (issue 6):
        // wait for the other process's transaction instead of failing at once.
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(())
    }

    /// Creates a fresh index (init only).
    pub fn create(path: &Path, volume_id: &[u8; 16]) -> Result<(), StoreError> {
        let e = index_err(path);
        mailferry_audit::private::precreate(path).map_err(|err| {
            e(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!("cannot create the file: {err}")),
            ))
        })?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(e)?;
        Self::pragmas(&conn).map_err(e)?;
        conn.execute_batch(SCHEMA).map_err(e)?;
        conn.execute_batch(SCHEMA_2).map_err(e)?;
        conn.execute_batch(SCHEMA_3).map_err(e)?;
        conn.execute_batch(SCHEMA_4).map_err(e)?;
        conn.execute_batch(SCHEMA_5).map_err(e)?;
        conn.execute_batch(SCHEMA_6).map_err(e)?;
        conn.execute(
            "INSERT INTO volume (k, v) VALUES ('volume_id', ?1), ('schema', ?2)",
            params![&volume_id[..], SCHEMA_VERSION.to_be_bytes().to_vec()],
        )
        .map_err(e)?;
        conn.close().map_err(|(_, err)| e(err))
    }

    /// Opens an existing index and checks it belongs to `volume_id`.
    pub fn open(path: &Path, volume_id: &[u8; 16]) -> Result<Index, StoreError> {
        if !path.exists() {
            return Err(StoreError::IndexDamaged {
                path: path.to_path_buf(),
                reason: "missing (the volume was not fully initialised or the file was deleted; restore it from a backup)".into(),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(index_err(path))?;
        let mut ix = Index {
            conn,
            path: path.to_path_buf(),
        };
        Self::pragmas(&ix.conn).map_err(|e| ix.err(e))?;
        let id: Option<Vec<u8>> = ix
            .conn
            .query_row("SELECT v FROM volume WHERE k = 'volume_id'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| ix.err(e))?;
        if id.as_deref() != Some(&volume_id[..]) {
            return Err(StoreError::IndexDamaged {
                path: path.to_path_buf(),
                reason: "belongs to another volume (its volume id differs from volume.hdr); restore the right index.sqlite".into(),
            });
        }
        ix.migrate()?;
        Ok(ix)
    }

    /// Brings a schema-1 index (the foundation's), or a schema-2 to -5 one to schema 6 in
    /// one transaction; refuses a schema newer than this build. Locators of the rows it
    /// finds are left NULL: computing them needs the keys (`Volume::open` does it).
    fn migrate(&mut self) -> Result<(), StoreError> {
        let v: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT v FROM volume WHERE k = 'schema'", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        let version = v
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(i64::from_be_bytes)
            .ok_or_else(|| StoreError::IndexDamaged {
                path: self.path.clone(),
                reason: "schema version missing or malformed; restore index.sqlite from a backup"
                    .into(),
            })?;
        match version {
            SCHEMA_VERSION => Ok(()),
            from @ (1..=5) => {
                let e = index_err(&self.path);
                let tx = self.conn.transaction().map_err(e)?;
                if from < 4 {
                    tx.execute_batch(SCHEMA_2).map_err(e)?;
                    tx.execute_batch(SCHEMA_3).map_err(e)?;
                    tx.execute_batch(SCHEMA_4).map_err(e)?;
                }
                if from < 5 {
                    tx.execute_batch(SCHEMA_5).map_err(e)?;
                }
                tx.execute_batch(SCHEMA_6).map_err(e)?;
                tx.execute(
                    "UPDATE volume SET v = ?1 WHERE k = 'schema'",
                    [SCHEMA_VERSION.to_be_bytes().to_vec()],
                )
                .map_err(e)?;
                tx.commit().map_err(e)?;
                tracing::info!(index = %self.path.display(), from, to = SCHEMA_VERSION, "index schema upgraded");
                Ok(())
            }
            v => Err(StoreError::IndexDamaged {
                path: self.path.clone(),
                reason: format!("schema version {v} is newer than this build reads ({SCHEMA_VERSION}); use a newer mailferry"),
            }),
        }
    }

    /// The connection, for the SQL of modules that own a table's rows (tokens).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The index file, for error messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    #[cfg(test)]
    pub fn conn_for_tests(&self) -> &Connection {
        &self.conn
    }

    // === tenants and mailboxes ===

    pub fn tenant_by_mac(&self, mac: &[u8; 32]) -> Result<Option<KeyRow>, StoreError> {
        self.conn
            .query_row(
                "SELECT id, key_wrapped FROM tenants WHERE name_mac = ?1",
                [&mac[..]],
                |r| {
                    Ok(KeyRow {
                        id: r.get::<_, i64>(0)? as u64,
                        key_wrapped: r.get(1)?,
                        key_id: 1,
                        tenant_id: 0,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn tenant_by_id(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn
            .query_row(
                "SELECT key_wrapped FROM tenants WHERE id = ?1",
                [id as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The next row id of `table` (ids are chosen before insert because they are bound
    /// into the wrapped key's AAD; the caller holds the connection mutex).
    pub fn next_id(&self, table: &str) -> Result<u64, StoreError> {
        let sql = format!("SELECT COALESCE(MAX(id), 0) + 1 FROM {table}");
        self.conn
            .query_row(&sql, [], |r| r.get::<_, i64>(0))
            .map(|v| v as u64)
            .map_err(|e| self.err(e))
    }

    pub fn insert_tenant(
        &self,
        id: u64,
        mac: &[u8; 32],
        name_enc: &[u8],
        key_wrapped: &[u8],
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO tenants (id, name_mac, name_enc, key_wrapped) VALUES (?1, ?2, ?3, ?4)",
            params![id as i64, &mac[..], name_enc, key_wrapped],
        )
    }

    pub fn mailbox_by_mac(&self, mac: &[u8; 32]) -> Result<Option<KeyRow>, StoreError> {
        self.query_opt(
            &format!("SELECT {MAILBOX_KEY_COLS} FROM mailboxes WHERE name_mac = ?1"),
            [&mac[..]],
            mailbox_key_row,
        )
    }

    pub fn mailbox_by_id(&self, id: u64) -> Result<Option<KeyRow>, StoreError> {
        self.query_opt(
            &format!("SELECT {MAILBOX_KEY_COLS} FROM mailboxes WHERE id = ?1"),
            [id as i64],
            mailbox_key_row,
        )
    }

    pub fn insert_mailbox(
        &self,
        id: u64,
        tenant_id: u64,
        mac: &[u8; 32],
        name_enc: &[u8],
        key_id: u32,
        key_wrapped: &[u8],
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO mailboxes (id, tenant_id, name_mac, name_enc, key_id, key_wrapped) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id as i64, tenant_id as i64, &mac[..], name_enc, key_id as i64, key_wrapped],
        )
    }

    /// `(id, name_enc)` of every mailbox.
    pub fn mailboxes(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.query_all("SELECT id, name_enc FROM mailboxes ORDER BY id", [], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
        })
    }

    /// `(id, tenant_id, key_id)` of every mailbox of a tenant.
    pub fn mailboxes_of_tenant(&self, tenant_id: u64) -> Result<Vec<KeyRow>, StoreError> {
        self.query_all(
            &format!("SELECT {MAILBOX_KEY_COLS} FROM mailboxes WHERE tenant_id = ?1 ORDER BY id"),
            [tenant_id as i64],
            mailbox_key_row,
        )
    }

    /// Earlier (rotated-out) generations of a mailbox key: `(key id, wrapped)`.
    pub fn old_mailbox_keys(&self, mailbox_id: u64) -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
        self.query_all(
            "SELECT key_id, key_wrapped FROM mailbox_keys WHERE mailbox_id = ?1 ORDER BY key_id",
            [mailbox_id as i64],
            |r| Ok((r.get::<_, i64>(0)? as u32, r.get(1)?)),
        )
    }

    /// Makes `new_wrapped` generation `new_key_id` the mailbox's current key and keeps the
    /// current one as an earlier generation, in one transaction.
    pub fn rotate_mailbox(
        &mut self,
        mailbox_id: u64,
        old: (u32, &[u8]),
        new_key_id: u32,
        new_wrapped: &[u8],
    ) -> Result<(), StoreError> {
        self.rotate_mailboxes(
            &[KeyRotation {
                mailbox_id,
                old_key_id: old.0,
                old_wrapped: old.1.to_vec(),
                new_key_id,
                new_wrapped: new_wrapped.to_vec(),
            }],
            false,
        )
    }

    /// Rotates every mailbox of `rotations` in ONE transaction. With `reencrypt`, the
    /// same transaction marks each mailbox as having a re-encryption pending
    /// (`volume` row `reencrypt:<mailbox row id>`), so a rerun after a crash resumes
    /// instead of rotating again.
    pub fn rotate_mailboxes(
        &mut self,
        rotations: &[KeyRotation],
        reencrypt: bool,
    ) -> Result<(), StoreError> {
        let e = index_err(&self.path);
        let tx = self.conn.transaction().map_err(e)?;
        for r in rotations {
            tx.execute(
                "INSERT INTO mailbox_keys (mailbox_id, key_id, key_wrapped) VALUES (?1, ?2, ?3)",
                params![r.mailbox_id as i64, r.old_key_id as i64, &r.old_wrapped],
            )
            .map_err(e)?;
            let n = tx
                .execute(
                    "UPDATE mailboxes SET key_id = ?2, key_wrapped = ?3 WHERE id = ?1 AND key_id = ?4",
                    params![
                        r.mailbox_id as i64,
                        r.new_key_id as i64,
                        &r.new_wrapped,
                        r.old_key_id as i64
                    ],
                )
                .map_err(e)?;
            if n != 1 {
                return Err(StoreError::IndexDamaged {
                    path: self.path.clone(),
                    reason: format!("mailbox row {} changed during rotation; nothing was changed, run the rotation again", r.mailbox_id),
                });
            }
            if reencrypt {
                tx.execute(
                    "INSERT OR REPLACE INTO volume (k, v) VALUES (?1, ?2)",
                    params![
                        reencrypt_marker(r.mailbox_id),
                        r.new_key_id.to_be_bytes().to_vec()
                    ],
                )
                .map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// Mailbox row ids with a re-encryption pending (rotated, not yet finished).
    pub fn reencrypt_pending(&self) -> Result<std::collections::HashSet<u64>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT k FROM volume WHERE k LIKE 'reencrypt:%'")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        let mut out = std::collections::HashSet::new();
        for k in rows {
            let k = k.map_err(|e| self.err(e))?;
            match k.strip_prefix("reencrypt:").and_then(|n| n.parse().ok()) {
                Some(id) => out.insert(id),
                None => {
                    return Err(StoreError::IndexDamaged {
                        path: self.path.clone(),
                        reason: format!(
                        "malformed re-encryption marker {k:?}; restore index.sqlite from a backup"
                    ),
                    })
                }
            };
        }
        Ok(out)
    }

    /// Clears the re-encryption markers of `mailbox_ids` (the job is finished).
    pub fn clear_reencrypt(&mut self, mailbox_ids: &[u64]) -> Result<(), StoreError> {
        let e = index_err(&self.path);
        let tx = self.conn.transaction().map_err(e)?;
        for id in mailbox_ids {
            tx.execute("DELETE FROM volume WHERE k = ?1", [reencrypt_marker(*id)])
                .map_err(e)?;
        }
        tx.commit().map_err(e)
    }

    /// The oldest key generation a mailbox still holds (rotated-out or current): the one
    /// its dedup key derives from.
    pub fn oldest_key_id(&self, mailbox_id: u64) -> Result<u32, StoreError> {
        self.conn
            .query_row(
                "SELECT MIN(k) FROM (SELECT key_id AS k FROM mailbox_keys WHERE mailbox_id = ?1 \
                 UNION ALL SELECT key_id FROM mailboxes WHERE id = ?1)",
                [mailbox_id as i64],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map_err(|e| self.err(e))?
            .map(|k| k as u32)
            .ok_or_else(|| StoreError::IndexDamaged {
                path: self.path.clone(),
                reason: format!(
                    "mailbox row {mailbox_id} missing; restore index.sqlite from a backup"
                ),
            })
    }

    /// Re-encryption's commit point, in ONE transaction: every row of `moves` is pointed
    /// at its new record (key id, segment, offset, salt, metadata), each `UPDATE`
    /// matching the row's old key id, segment and offset or nothing is switched. With
    /// `last`, the same transaction checks that no message of the mailbox uses any other
    /// key than its current one, deletes its earlier generations and replaces every
    /// dedup value by the one computed under the current generation; then the WAL is
    /// checkpointed (TRUNCATE) so the dropped wrapped keys leave the files. Returns the
    /// number of generations dropped.
    pub fn switch_reencrypted(
        &mut self,
        moves: &[Reencrypted],
        last: Option<&LastSwitch>,
    ) -> Result<u64, StoreError> {
        let e = index_err(&self.path);
        let damaged = |reason: String| {
            StoreError::IndexDamaged {
            path: self.path.clone(),
            reason: format!("re-encryption: {reason}; nothing was switched, run the same `volume rotate ... --reencrypt` again"),
        }
        };
        let tx = self.conn.transaction().map_err(e)?;
        let mut dropped = 0;
        {
            let mut st = tx
                .prepare_cached(
                    "UPDATE messages SET key_id = ?5, segment = ?6, offset = ?7, salt = ?8, meta_enc = ?9, \
                     digest = ?10, flags_enc = NULL \
                     WHERE id = ?1 AND key_id = ?2 AND segment = ?3 AND offset = ?4",
                )
                .map_err(e)?;
            for m in moves {
                let n = st
                    .execute(params![
                        m.id as i64,
                        m.from_key_id as i64,
                        m.from_segment as i64,
                        m.from_offset as i64,
                        m.key_id as i64,
                        m.to_segment as i64,
                        m.to_offset as i64,
                        &m.salt[..],
                        &m.meta_enc,
                        m.digest.as_ref().map(|d| &d[..])
                    ])
                    .map_err(e)?;
                if n != 1 {
                    return Err(damaged(format!(
                        "message id {} is no longer under key {} at segment {} offset {}",
                        m.id, m.from_key_id, m.from_segment, m.from_offset
                    )));
                }
            }
            if let Some(l) = last {
                let current: Option<i64> = tx
                    .query_row(
                        "SELECT key_id FROM mailboxes WHERE id = ?1",
                        [l.mailbox_id as i64],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(e)?;
                if current != Some(l.key_id as i64) {
                    return Err(damaged(format!(
                        "mailbox row {} no longer has key {} as its current key",
                        l.mailbox_id, l.key_id
                    )));
                }
                let left: i64 = tx
                    .query_row(
                        "SELECT COUNT(*) FROM messages WHERE mailbox_id = ?1 AND key_id != ?2",
                        params![l.mailbox_id as i64, l.key_id as i64],
                        |r| r.get(0),
                    )
                    .map_err(e)?;
                let total: i64 = tx
                    .query_row(
                        "SELECT COUNT(*) FROM messages WHERE mailbox_id = ?1",
                        [l.mailbox_id as i64],
                        |r| r.get(0),
                    )
                    .map_err(e)?;
                if left != 0 || total as usize != l.dedups.len() {
                    return Err(damaged(format!(
                        "mailbox row {}: {left} message(s) still use an earlier key, {total} rows for {} dedup values",
                        l.mailbox_id,
                        l.dedups.len()
                    )));
                }
                dropped = tx
                    .execute(
                        "DELETE FROM mailbox_keys WHERE mailbox_id = ?1",
                        [l.mailbox_id as i64],
                    )
                    .map_err(e)? as u64;
                let mut up = tx
                    .prepare_cached(
                        "UPDATE messages SET dedup = ?2, locator = ?4 WHERE id = ?1 AND mailbox_id = ?3",
                    )
                    .map_err(e)?;
                for (id, dedup, locator) in &l.dedups {
                    if up
                        .execute(params![
                            *id as i64,
                            &dedup[..],
                            l.mailbox_id as i64,
                            &locator[..]
                        ])
                        .map_err(e)?
                        != 1
                    {
                        return Err(damaged(format!("message id {id} vanished")));
                    }
                }
            }
        }
        tx.commit().map_err(e)?;
        if last.is_some() {
            self.checkpoint_truncate()?;
        }
        Ok(dropped)
    }

    /// Replaces a tenant's wrapped key and every wrapped key of its mailboxes (current
    /// and earlier generations: `(mailbox id, key id, wrapped)`), in one transaction.
    pub fn rotate_tenant(
        &mut self,
        tenant_id: u64,
        tenant_wrapped: &[u8],
        mailbox_keys: &[(u64, u32, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let e = index_err(&self.path);
        let tx = self.conn.transaction().map_err(e)?;
        tx.execute(
            "UPDATE tenants SET key_wrapped = ?2 WHERE id = ?1",
            params![tenant_id as i64, tenant_wrapped],
        )
        .map_err(e)?;
        for (mb, key_id, wrapped) in mailbox_keys {
            let n = tx
                .execute(
                    "UPDATE mailboxes SET key_wrapped = ?3 WHERE id = ?1 AND key_id = ?2",
                    params![*mb as i64, *key_id as i64, wrapped],
                )
                .map_err(e)?;
            if n == 0 {
                tx.execute(
                    "UPDATE mailbox_keys SET key_wrapped = ?3 WHERE mailbox_id = ?1 AND key_id = ?2",
                    params![*mb as i64, *key_id as i64, wrapped],
                )
                .map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// Destroys every wrapped key of a mailbox (key id 0 and an empty wrapped key mark it
    /// shredded), then checkpoints the WAL with TRUNCATE so that, with `secure_delete`,
    /// the wrapped key bytes are gone from `index.sqlite` and its WAL. Returns the number
    /// of messages that became unreadable.
    pub fn shred_mailbox(&mut self, mailbox_id: u64) -> Result<u64, StoreError> {
        let e = index_err(&self.path);
        let tx = self.conn.transaction().map_err(e)?;
        tx.execute(
            "DELETE FROM mailbox_keys WHERE mailbox_id = ?1",
            [mailbox_id as i64],
        )
        .map_err(e)?;
        tx.execute(
            "UPDATE mailboxes SET key_id = 0, key_wrapped = X'' WHERE id = ?1",
            [mailbox_id as i64],
        )
        .map_err(e)?;
        // A re-encryption in progress has nothing left to do.
        tx.execute(
            "DELETE FROM volume WHERE k = ?1",
            [reencrypt_marker(mailbox_id)],
        )
        .map_err(e)?;
        let n: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM messages WHERE mailbox_id = ?1",
                [mailbox_id as i64],
                |r| r.get(0),
            )
            .map_err(e)?;
        tx.commit().map_err(e)?;
        self.checkpoint_truncate()?;
        Ok(n as u64)
    }

    /// `PRAGMA wal_checkpoint(TRUNCATE)`: copies the WAL into the database file and
    /// truncates the WAL to zero bytes. Fails if a reader kept it from completing.
    pub fn checkpoint_truncate(&self) -> Result<(), StoreError> {
        let (busy, _, _): (i64, i64, i64) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(|e| self.err(e))?;
        if busy != 0 {
            return Err(StoreError::IndexDamaged {
                path: self.path.clone(),
                reason: "WAL checkpoint could not complete (another reader holds the index); run the command again when nothing else uses the volume".into(),
            });
        }
        Ok(())
    }

    /// Row ids of shredded mailboxes.
    pub fn shredded_mailboxes(&self) -> Result<std::collections::HashSet<u64>, StoreError> {
        self.query_all("SELECT id FROM mailboxes WHERE key_id = 0", [], |r| {
            Ok(r.get::<_, i64>(0)? as u64)
        })
    }

    /// Tenant row id by lookup MAC.
    pub fn tenant_id_by_mac(&self, mac: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        Ok(self.tenant_by_mac(mac)?.map(|r| r.id))
    }

    // === segments ===

    /// Allocates a fresh segment number (committed at once, so no two sessions share one).
    pub fn allocate_segment(&self) -> Result<u64, StoreError> {
        self.conn
            .execute("INSERT INTO segments (number) VALUES ((SELECT COALESCE(MAX(number), 0) + 1 FROM segments))", [])
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid() as u64)
    }

    /// For every segment referenced by a message row: the end of its last record.
    pub fn segment_ends(&self) -> Result<HashMap<u64, u64>, StoreError> {
        self.query_all(
            "SELECT segment, MAX(offset + record_len) FROM messages GROUP BY segment",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )
    }

    /// Compaction's commit point, in ONE transaction: every `(id, old segment, old
    /// offset, new segment, new offset)` of `moves` is pointed at its new location, and
    /// the rows in `dropped` (messages of shredded mailboxes) are deleted. A row that is
    /// not where `moves` says it is aborts the transaction: nothing changes.
    pub fn switch_locations(
        &mut self,
        moves: &[RecordMove],
        dropped: &[u64],
    ) -> Result<(), StoreError> {
        let e = index_err(&self.path);
        let tx = self.conn.transaction().map_err(e)?;
        {
            let mut st = tx
                .prepare_cached(
                    "UPDATE messages SET segment = ?4, offset = ?5 \
                     WHERE id = ?1 AND segment = ?2 AND offset = ?3",
                )
                .map_err(e)?;
            for m in moves {
                let n = st
                    .execute(params![
                        m.id as i64,
                        m.from_segment as i64,
                        m.from_offset as i64,
                        m.to_segment as i64,
                        m.to_offset as i64
                    ])
                    .map_err(e)?;
                if n != 1 {
                    return Err(StoreError::IndexDamaged {
                        path: self.path.clone(),
                        reason: format!(
                            "compaction: message id {} is no longer at segment {} offset {}; nothing was switched, run `volume compact` again",
                            m.id, m.from_segment, m.from_offset
                        ),
                    });
                }
            }
            let mut del = tx
                .prepare_cached("DELETE FROM messages WHERE id = ?1")
                .map_err(e)?;
            for id in dropped {
                del.execute([*id as i64]).map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// `(message id, mailbox row id)` of every committed message.
    pub fn message_ids(&self) -> Result<Vec<(u64, u64)>, StoreError> {
        self.query_all("SELECT id, mailbox_id FROM messages", [], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })
    }

    /// Ids of the messages of a mailbox, in id order (read from the index on
    /// `(mailbox_id, id)` alone).
    pub fn message_ids_of(&self, mailbox_id: u64) -> Result<Vec<u64>, StoreError> {
        self.query_all(
            "SELECT id FROM messages WHERE mailbox_id = ?1 ORDER BY id",
            [mailbox_id as i64],
            |r| Ok(r.get::<_, i64>(0)? as u64),
        )
    }

    /// Message rows of a mailbox with an id above `after`, in id order.
    pub fn messages_after(
        &self,
        mailbox_id: u64,
        after: u64,
    ) -> Result<Vec<MessageRow>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE mailbox_id = ?1 AND id > ?2 ORDER BY id"
        );
        let mut st = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let rows = st
            .query_map([mailbox_id as i64, after as i64], message_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// `(message id, mailbox row id)` of every message with an id above `id`.
    pub fn message_ids_after(&self, id: u64) -> Result<Vec<(u64, u64)>, StoreError> {
        self.query_all(
            "SELECT id, mailbox_id FROM messages WHERE id > ?1",
            [id as i64],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )
    }

    // === messages ===

    /// The largest message id ever committed, deleted ones included (ids are never
    /// reused: the audit log names messages by id).
    pub fn max_message_id(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT MAX((SELECT COALESCE(MAX(id), 0) FROM messages), \
                            (SELECT COALESCE(MAX(id), 0) FROM deleted_messages))",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|v| v as u64)
            .map_err(|e| self.err(e))
    }

    /// Starts the transaction of a group commit: `BEGIN IMMEDIATE`, so its first read
    /// already holds the write lock (a DELETE or FLAGS reads rows before it writes). The
    /// methods below run inside it; dropping it without `commit` rolls everything back.
    pub fn begin_batch(&self) -> Result<rusqlite::Transaction<'_>, StoreError> {
        rusqlite::Transaction::new_unchecked(&self.conn, rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))
    }

    /// Inserts one message row; false if the mailbox already holds its dedup value (a
    /// concurrent session, or an earlier batch of this one, committed it first).
    pub fn insert_message(&self, r: &MessageRow) -> Result<bool, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO messages (id, mailbox_id, key_id, segment, offset, record_len, salt, meta_enc, dedup, locator, digest, leaf_enc) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )
            .map_err(|e| self.err(e))?;
        let n = st
            .execute(params![
                r.id as i64,
                r.mailbox_id as i64,
                r.key_id as i64,
                r.segment as i64,
                r.offset as i64,
                r.record_len as i64,
                &r.salt[..],
                &r.meta_enc,
                &r.dedup[..],
                r.locator.as_ref().map(|l| &l[..]),
                r.digest.as_ref().map(|d| &d[..]),
                r.leaf_enc.as_deref()
            ])
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    // === fences (schema 6) ===

    /// The highest fencing number a session has opened `mailbox_id` with; `None` if no
    /// fenced session ever did. Inside a batch's transaction this is the in-transaction
    /// check of a fenced commit.
    pub fn fence(&self, mailbox_id: u64) -> Result<Option<u64>, StoreError> {
        self.query_opt(
            "SELECT fence FROM fences WHERE mailbox_id = ?1",
            [mailbox_id as i64],
            |r| r.get::<_, i64>(0),
        )
        .map(|f| f.map(|f| f as u64))
    }

    /// Raises the mailbox's fencing number to `fence` in one transaction, unless it is
    /// already higher: returns the number recorded before (`None`: none). The caller
    /// compares; nothing is written when `fence` is not higher.
    pub fn raise_fence(&mut self, mailbox_id: u64, fence: u64) -> Result<Option<u64>, StoreError> {
        let e = index_err(&self.path);
        let tx = self.conn.transaction().map_err(e)?;
        let before: Option<i64> = tx
            .query_row(
                "SELECT fence FROM fences WHERE mailbox_id = ?1",
                [mailbox_id as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(e)?;
        let before = before.map(|f| f as u64);
        if before.is_none_or(|b| b < fence) {
            // SQLite integers are signed: a fence above i64::MAX is stored as its bit
            // pattern and read back the same, but would compare wrongly in SQL; all
            // comparisons are made here, in u64.
            tx.execute(
                "INSERT INTO fences (mailbox_id, fence) VALUES (?1, ?2) \
                 ON CONFLICT (mailbox_id) DO UPDATE SET fence = excluded.fence",
                params![mailbox_id as i64, fence as i64],
            )
            .map_err(e)?;
        }
        tx.commit().map_err(e)?;
        Ok(before)
    }

    /// Every message of a mailbox with this locator (every copy of one folder and source
    /// id), in id order.
    pub fn messages_by_locator(
        &self,
        mailbox_id: u64,
        locator: &[u8; 32],
    ) -> Result<Vec<MessageRow>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE mailbox_id = ?1 AND locator = ?2 ORDER BY id"
        );
        let mut st = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![mailbox_id as i64, &locator[..]], message_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Deletes message rows of a mailbox and keeps their ids in `deleted_messages`. Their
    /// records stay in the segments as unreferenced gaps until `compact`.
    pub fn delete_messages(&self, mailbox_id: u64, ids: &[u64]) -> Result<(), StoreError> {
        let mut del = self
            .conn
            .prepare_cached("DELETE FROM messages WHERE id = ?1 AND mailbox_id = ?2")
            .map_err(|e| self.err(e))?;
        let mut keep = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO deleted_messages (id, mailbox_id) VALUES (?1, ?2)",
            )
            .map_err(|e| self.err(e))?;
        for id in ids {
            del.execute(params![*id as i64, mailbox_id as i64])
                .map_err(|e| self.err(e))?;
            keep.execute(params![*id as i64, mailbox_id as i64])
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Replaces a message's sealed metadata (new flags).
    pub fn update_meta(&self, id: u64, meta_enc: &[u8]) -> Result<(), StoreError> {
        let mut st = self
            .conn
            .prepare_cached("UPDATE messages SET meta_enc = ?2 WHERE id = ?1")
            .map_err(|e| self.err(e))?;
        let n = st
            .execute(params![id as i64, meta_enc])
            .map_err(|e| self.err(e))?;
        if n != 1 {
            return Err(StoreError::IndexDamaged {
                path: self.path.clone(),
                reason: format!("message id {id} vanished while its flags were changed"),
            });
        }
        Ok(())
    }

    /// `(message id, mailbox row id)` of every message removed by DELETE.
    pub fn deleted_message_ids(&self) -> Result<Vec<(u64, u64)>, StoreError> {
        self.query_all("SELECT id, mailbox_id FROM deleted_messages", [], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })
    }

    /// Rows without a locator (written before schema 4) of mailboxes that still have
    /// their keys, in id order.
    pub fn messages_without_locator(&self) -> Result<Vec<MessageRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id \
             WHERE m.locator IS NULL AND b.key_id != 0 ORDER BY m.id",
            MESSAGE_COLUMNS
                .split(", ")
                .map(|c| format!("m.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut st = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = st.query_map([], message_row).map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Sets the locators of `(message id, locator)` in ONE transaction.
    pub fn set_locators(&mut self, locators: &[(u64, [u8; 32])]) -> Result<(), StoreError> {
        let e = index_err(&self.path);
        let tx = self.conn.transaction().map_err(e)?;
        {
            let mut st = tx
                .prepare_cached("UPDATE messages SET locator = ?2 WHERE id = ?1")
                .map_err(e)?;
            for (id, l) in locators {
                st.execute(params![*id as i64, &l[..]]).map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// Message rows of a mailbox (or of all mailboxes), in id order.
    pub fn messages(&self, mailbox_id: Option<u64>) -> Result<Vec<MessageRow>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE (?1 IS NULL OR mailbox_id = ?1) ORDER BY id"
        );
        let mut st = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let rows = st
            .query_map([mailbox_id.map(|m| m as i64)], message_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    // === customer keys (schema 5) ===

    /// The registered customer key of a tenant row, if any.
    pub fn tenant_key_row(&self, tenant_id: u64) -> Result<Option<TenantKeyRow>, StoreError> {
        self.query_opt(
            "SELECT public, fingerprint, index_key_wrapped FROM tenant_keys WHERE tenant_id = ?1",
            [tenant_id as i64],
            |r| {
                let public: Vec<u8> = r.get(0)?;
                Ok(TenantKeyRow {
                    public: public.try_into().map_err(|_| {
                        rusqlite::Error::FromSqlConversionFailure(
                            0,
                            rusqlite::types::Type::Blob,
                            "expected 32 bytes".into(),
                        )
                    })?,
                    fingerprint: r.get(1)?,
                    index_key_wrapped: r.get(2)?,
                })
            },
        )
    }

    /// Registers a tenant's customer key and, if `convert`, marks the conversion of its
    /// existing mailboxes as pending, in ONE transaction.
    pub fn insert_tenant_key(
        &mut self,
        tenant_id: u64,
        row: &TenantKeyRow,
        created: u64,
        convert: bool,
    ) -> Result<(), StoreError> {
        let e = index_err(&self.path);
        let tx = self.conn.transaction().map_err(e)?;
        tx.execute(
            "INSERT INTO tenant_keys (tenant_id, public, fingerprint, index_key_wrapped, created) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                tenant_id as i64,
                &row.public[..],
                &row.fingerprint,
                &row.index_key_wrapped,
                created as i64
            ],
        )
        .map_err(e)?;
        if convert {
            tx.execute(
                "INSERT INTO volume (k, v) VALUES (?1, X'01')",
                [convert_marker(tenant_id)],
            )
            .map_err(e)?;
        }
        tx.commit().map_err(e)
    }

    /// Converts one mailbox to its tenant's customer key in ONE transaction: every
    /// generation's new wrap, and every message's dedup, locator, record digest and
    /// sealed receipt leaf.
    pub fn convert_mailbox(
        &mut self,
        mailbox_id: u64,
        wraps: &[(u32, Vec<u8>)],
        rows: &[Converted],
    ) -> Result<(), StoreError> {
        let e = index_err(&self.path);
        let tx = self.conn.transaction().map_err(e)?;
        for (kid, w) in wraps {
            tx.execute(
                "UPDATE mailboxes SET key_wrapped = ?3 WHERE id = ?1 AND key_id = ?2",
                params![mailbox_id as i64, *kid as i64, w],
            )
            .map_err(e)?;
            tx.execute(
                "UPDATE mailbox_keys SET key_wrapped = ?3 WHERE mailbox_id = ?1 AND key_id = ?2",
                params![mailbox_id as i64, *kid as i64, w],
            )
            .map_err(e)?;
        }
        set_index_values(&tx, rows).map_err(e)?;
        tx.commit().map_err(e)
    }

    /// A customer-key tenant's new symmetric tenant key and index key, and every message's
    /// index values under the new index key, in ONE transaction.
    pub fn rotate_ck_index_key(
        &mut self,
        tenant_id: u64,
        tenant_wrapped: &[u8],
        index_key_wrapped: &[u8],
        rows: &[Converted],
    ) -> Result<(), StoreError> {
        let e = index_err(&self.path);
        let tx = self.conn.transaction().map_err(e)?;
        tx.execute(
            "UPDATE tenants SET key_wrapped = ?2 WHERE id = ?1",
            params![tenant_id as i64, tenant_wrapped],
        )
        .map_err(e)?;
        tx.execute(
            "UPDATE tenant_keys SET index_key_wrapped = ?2 WHERE tenant_id = ?1",
            params![tenant_id as i64, index_key_wrapped],
        )
        .map_err(e)?;
        set_index_values(&tx, rows).map_err(e)?;
        tx.commit().map_err(e)
    }

    /// Ends a tenant's conversion (deletes its marker).
    pub fn clear_conversion(&self, tenant_id: u64) -> Result<(), StoreError> {
        self.exec(
            "DELETE FROM volume WHERE k = ?1",
            [convert_marker(tenant_id)],
        )
    }

    /// True while a conversion of the tenant to its customer key is unfinished.
    pub fn conversion_pending(&self, tenant_id: u64) -> Result<bool, StoreError> {
        Ok(self
            .query_opt(
                "SELECT 1 FROM volume WHERE k = ?1",
                [convert_marker(tenant_id)],
                |_| Ok(()),
            )?
            .is_some())
    }

    /// Sets the flags overlay of a customer-key message.
    pub fn update_flags_enc(&self, id: u64, flags_enc: &[u8]) -> Result<(), StoreError> {
        self.exec(
            "UPDATE messages SET flags_enc = ?2 WHERE id = ?1",
            params![id as i64, flags_enc],
        )
    }
}

/// A `tenant_keys` row.
#[derive(Clone, Debug)]
pub(crate) struct TenantKeyRow {
    pub public: [u8; 32],
    pub fingerprint: String,
    pub index_key_wrapped: Vec<u8>,
}

/// One message's new index values after its mailbox moved to a customer key.
pub(crate) struct Converted {
    pub id: u64,
    pub dedup: [u8; 32],
    pub locator: [u8; 32],
    pub digest: [u8; 32],
    pub leaf_enc: Vec<u8>,
}

/// Writes each message's customer-key index values (dedup, locator, digest, sealed leaf).
fn set_index_values(tx: &rusqlite::Transaction<'_>, rows: &[Converted]) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(
        "UPDATE messages SET dedup = ?2, locator = ?3, digest = ?4, leaf_enc = ?5 WHERE id = ?1",
    )?;
    for c in rows {
        st.execute(params![
            c.id as i64,
            &c.dedup[..],
            &c.locator[..],
            &c.digest[..],
            &c.leaf_enc
        ])?;
    }
    Ok(())
}

/// The `volume` row marking an unfinished conversion of a tenant to its customer key.
fn convert_marker(tenant_id: u64) -> String {
    format!("ckconvert:{tenant_id}")
}
