//! The checkpoint index (`checkpoint.db`, docs/checkpoint-index.md): what the audit log
//! says the destination holds, kept in SQLite so a pass reads only the folders and
//! messages it needs instead of holding every acknowledged message in memory.
//!
//! The audit log stays the one source of truth; this is a cache of it. Every change is
//! applied here after its records are synced in the log, in one transaction that also
//! moves the index's mark (the last record it covers, audit-log.md §5.1). So the index
//! can lag the log (a crash between the two), never lead it: opening the state replays
//! the records after the mark. An index that is missing, damaged, of another format or
//! another move, or whose mark does not fit the log is rebuilt from the whole log.
//!
//! Not for the destination: the store keeps its own index in the volume. This file lives
//! in the agent's `--state` directory, next to the source-side audit log, which names
//! folders and ids in the clear as well.

use super::{Acked, EntryKind};
use crate::source::PriorItem;
use mailferry_audit::LogMark;
use mailferry_core::{Flags, FolderName, SourceId};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// File name in the state directory.
pub const INDEX_FILE: &str = "checkpoint.db";

/// The format this build writes and reads (`meta.format`).
pub const FORMAT: &str = "mailferry-checkpoint/2";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS acked(
    folder TEXT NOT NULL,
    source_id TEXT NOT NULL,
    stored_as TEXT,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    flags TEXT NOT NULL,
    internal_date INTEGER NOT NULL,
    ident TEXT,
    renamed INTEGER NOT NULL,
    leaf BLOB NOT NULL,
    PRIMARY KEY(folder, source_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS acked_remapped ON acked(folder, stored_as)
    WHERE stored_as IS NOT NULL;
CREATE TABLE IF NOT EXISTS cursors(folder TEXT PRIMARY KEY, cursor TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS folders(
    folder TEXT PRIMARY KEY,
    items INTEGER NOT NULL,
    plain_items INTEGER NOT NULL,
    plain_bytes INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS acked_insert AFTER INSERT ON acked BEGIN
    INSERT INTO folders(folder, items, plain_items, plain_bytes) VALUES (NEW.folder, 0, 0, 0)
        ON CONFLICT(folder) DO NOTHING;
    UPDATE folders SET
        items = items + 1,
        plain_items = plain_items + (NEW.renamed = 0),
        plain_bytes = plain_bytes + CASE WHEN NEW.renamed = 0 THEN NEW.size ELSE 0 END
    WHERE folder = NEW.folder;
END;
CREATE TRIGGER IF NOT EXISTS acked_delete AFTER DELETE ON acked BEGIN
    UPDATE folders SET
        items = items - 1,
        plain_items = plain_items - (OLD.renamed = 0),
        plain_bytes = plain_bytes - CASE WHEN OLD.renamed = 0 THEN OLD.size ELSE 0 END
    WHERE folder = OLD.folder;
    DELETE FROM folders WHERE folder = OLD.folder AND items = 0;
END;
";

/// Per connection: a row replaced by `INSERT OR REPLACE` fires the delete trigger, so
/// the per-folder counts stay exact.
const PRAGMAS: &str = "PRAGMA recursive_triggers = ON;";

/// An open checkpoint index: a file in the state directory, a read-only view of one, or
/// an in-memory copy (a dry run while a pass runs, tests).
pub(crate) struct CheckpointDb {
    conn: Connection,
    /// Where it is, for error messages.
    path: PathBuf,
}

type DbResult<T> = Result<T, rusqlite::Error>;

/// Whether a record of this event changes the checkpoint (others only move the mark).
pub(crate) fn affects_checkpoint(event: &str) -> bool {
    event == "pass.cursors" || event.starts_with("message.")
}

impl CheckpointDb {
    /// Opens (or creates) the index file for writing.
    pub fn open(path: &Path) -> DbResult<CheckpointDb> {
        mailferry_audit::private::precreate(path).map_err(|e| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!("cannot create {}: {e}", path.display())),
            )
        })?;
        let conn = Connection::open(path)?;
        // WAL with NORMAL: a crash keeps the file consistent and may lose the last
        // transactions, which the mark then replays from the log. No fsync per batch.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(PRAGMAS)?;
        conn.execute_batch(SCHEMA)?;
        let db = CheckpointDb {
            conn,
            path: path.to_path_buf(),
        };
        db.integrity()?;
        Ok(db)
    }

    /// A copy in memory of the index file at `path`, read without opening it as a
    /// database, so nothing is created or locked beside it (a dry run). `None` if it is
    /// absent, or if its write-ahead log holds changes not yet in the file (a pass is
    /// running, or was killed): then the caller reads the audit log instead.
    pub fn copy_of(path: &Path) -> DbResult<Option<CheckpointDb>> {
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
            return Ok(None);
        }
        let mut bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(_) => return Ok(None),
        };
        if bytes.len() < 100 {
            return Ok(None);
        }
        // The image says "WAL mode" (header bytes 18 and 19); an in-memory database
        // cannot be in WAL mode, so it is read as a rollback-journal one, which is the
        // same file format.
        bytes[18] = 1;
        bytes[19] = 1;
        let mut conn = Connection::open_in_memory()?;
        let len = bytes.len();
        conn.deserialize_read_exact(rusqlite::MAIN_DB, std::io::Cursor::new(bytes), len, false)?;
        let db = CheckpointDb {
            conn,
            path: path.to_path_buf(),
        };
        db.integrity()?;
        Ok(Some(db))
    }

    /// An empty index in memory.
    pub fn in_memory() -> CheckpointDb {
        let conn = Connection::open_in_memory().expect("an in-memory SQLite database");
        conn.execute_batch(PRAGMAS).expect("pragmas apply");
        conn.execute_batch(SCHEMA).expect("the schema applies");
        CheckpointDb {
            conn,
            path: PathBuf::from("(checkpoint in memory)"),
        }
    }

    /// An error of this index as the agent reports it.
    pub fn err(&self, e: rusqlite::Error) -> crate::AgentError {
        crate::AgentError::State {
            path: self.path.clone(),
            reason: format!(
                "checkpoint index: {e}; delete this file to have it rebuilt from the audit log"
            ),
        }
    }

    /// Cheap sanity check that the file is a SQLite database with our tables.
    fn integrity(&self) -> DbResult<()> {
        self.conn
            .query_row("SELECT count(*) FROM meta", [], |_| Ok(()))?;
        self.conn
            .query_row("SELECT count(*) FROM cursors", [], |_| Ok(()))
    }

    fn meta(&self, key: &str) -> DbResult<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    }

    /// The mark of the last log record the index covers, if it is an index of this
    /// format and of the move `move_id`; `Err` says why it cannot be used.
    pub fn mark_for(&self, move_id: &str) -> Result<Option<LogMark>, String> {
        let get = |k| self.meta(k).map_err(|e| format!("unreadable: {e}"));
        let Some(format) = get("format")? else {
            return Ok(None); // new, empty
        };
        if format != FORMAT {
            return Err(format!(
                "it is of format {format:?}, this build reads {FORMAT:?}"
            ));
        }
        if get("move_id")?.as_deref() != Some(move_id) {
            return Err("it belongs to another move".into());
        }
        match get("mark")? {
            Some(m) => serde_json::from_str(&m)
                .map(Some)
                .map_err(|e| format!("its mark is unreadable: {e}")),
            None => Ok(None),
        }
    }

    /// Empties the index and binds it to `move_id` (before a replay of the whole log).
    pub fn reset(&mut self, move_id: &str) -> DbResult<()> {
        let tx = self.conn.transaction()?;
        tx.execute_batch(
            "DELETE FROM acked; DELETE FROM cursors; DELETE FROM meta; DELETE FROM folders;",
        )?;
        tx.execute(
            "INSERT INTO meta(key, value) VALUES ('format', ?1), ('move_id', ?2)",
            params![FORMAT, move_id],
        )?;
        tx.commit()
    }

    /// Sets the format and move of an in-memory index (the vector test).
    #[cfg(test)]
    pub fn reset_meta_for_vector(&mut self, move_id: &str) {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('format', ?1), ('move_id', ?2)",
                params![FORMAT, move_id],
            )
            .unwrap();
    }

    /// Applies records (event, data) in one transaction and moves the mark to `mark`.
    pub fn apply<'a>(
        &mut self,
        records: impl IntoIterator<Item = (&'a str, &'a Map<String, Value>)>,
        mark: Option<&LogMark>,
    ) -> DbResult<()> {
        let tx = self.conn.transaction()?;
        let mut receipt_changed = false;
        for (event, data) in records {
            receipt_changed |= apply_record(&tx, event, data)?;
        }
        if receipt_changed {
            tx.execute("DELETE FROM meta WHERE key = 'receipt'", [])?;
        }
        if let Some(m) = mark {
            tx.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('mark', ?1)",
                [serde_json::to_string(m).expect("a mark serializes")],
            )?;
        }
        tx.commit()
    }

    /// What the index knows of one message.
    pub fn get(&self, folder: &FolderName, id: &SourceId) -> DbResult<Option<Acked>> {
        let mut st = self.conn.prepare_cached(
            "SELECT source_id, stored_as, sha256, size, flags, internal_date, ident
             FROM acked WHERE folder = ?1 AND source_id = ?2",
        )?;
        st.query_row(params![folder.as_str(), id.as_str()], row_acked)
            .optional()
            .map(|o| o.map(|(_, a)| a))
    }

    /// Every acknowledged message of one folder, by current source id.
    pub fn folder(&self, folder: &FolderName) -> DbResult<HashMap<SourceId, Acked>> {
        let mut st = self.conn.prepare_cached(
            "SELECT source_id, stored_as, sha256, size, flags, internal_date, ident
             FROM acked WHERE folder = ?1",
        )?;
        let rows = st.query_map([folder.as_str()], row_acked)?;
        rows.collect()
    }

    /// The acknowledged messages of one folder as a source sees them (for
    /// [`crate::source::PriorLookup`]), sorted by id.
    pub fn prior_items(&self, folder: &FolderName) -> DbResult<BTreeMap<SourceId, PriorItem>> {
        let mut st = self.conn.prepare_cached(
            "SELECT source_id, stored_as, sha256, size, flags, internal_date, ident
             FROM acked WHERE folder = ?1 ORDER BY source_id",
        )?;
        let rows = st.query_map([folder.as_str()], row_acked)?;
        rows.map(|r| r.map(|(id, a)| (id, a.prior))).collect()
    }

    /// How many of `folder`'s messages have their own ids (not renamed ids the profile
    /// gave another folder's messages), and their bytes. Kept by triggers: a pass asks
    /// this of every folder, which must not cost a scan.
    pub fn plain_summary(&self, folder: &FolderName) -> DbResult<(u64, u64)> {
        let mut st = self
            .conn
            .prepare_cached("SELECT plain_items, plain_bytes FROM folders WHERE folder = ?1")?;
        Ok(st
            .query_row([folder.as_str()], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })
            .optional()?
            .unwrap_or((0, 0)))
    }

    /// Every folder the index holds messages in, with how many.
    pub fn folders(&self) -> DbResult<Vec<(FolderName, u64)>> {
        let rows = self.folder_rows::<i64>("SELECT folder, items FROM folders WHERE items > 0")?;
        Ok(rows.into_iter().map(|(f, n)| (f, n as u64)).collect())
    }

    /// The `(folder, value)` rows `sql` selects; folder names that no longer parse are
    /// left out.
    fn folder_rows<T: rusqlite::types::FromSql>(
        &self,
        sql: &str,
    ) -> DbResult<Vec<(FolderName, T)>> {
        let mut st = self.conn.prepare_cached(sql)?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, T>(1)?)))?;
        let mut out = Vec::new();
        for r in rows {
            let (f, v) = r?;
            if let Ok(f) = FolderName::parse(&f) {
                out.push((f, v));
            }
        }
        Ok(out)
    }

    /// Per-folder cursors of the last clean pass.
    #[cfg(test)]
    pub fn cursors(&self) -> DbResult<BTreeMap<FolderName, String>> {
        let rows = self.folder_rows::<String>("SELECT folder, cursor FROM cursors")?;
        Ok(rows.into_iter().collect())
    }

    /// The cursor of one folder.
    pub fn cursor(&self, folder: &FolderName) -> DbResult<Option<String>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT cursor FROM cursors WHERE folder = ?1")?;
        st.query_row([folder.as_str()], |r| r.get(0)).optional()
    }

    /// Every acknowledged message, in key order (tests, `move --dry-run` totals).
    pub fn all(&self) -> DbResult<Vec<super::AckedEntry>> {
        let mut st = self.conn.prepare_cached(
            "SELECT folder, source_id, stored_as, sha256, size, flags, internal_date, ident
             FROM acked ORDER BY folder, source_id",
        )?;
        let rows = st.query_map([], |r| {
            let folder: String = r.get(0)?;
            let (id, a) = row_acked_at(r, 1)?;
            Ok((folder, id, a))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (f, id, a) = r?;
            if let Ok(f) = FolderName::parse(&f) {
                out.push(((f, id), a));
            }
        }
        Ok(out)
    }

    /// Number of acknowledged messages.
    pub fn len(&self) -> DbResult<u64> {
        self.conn
            .query_row("SELECT ifnull(sum(items), 0) FROM folders", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
    }

    /// The source-side receipt (Merkle root over `folder/stored-as` and content digest
    /// of every acknowledged message, docs/audit-log.md) and how many messages it covers.
    /// Kept between passes: recomputed from the stored leaves only after a change.
    pub fn receipt(&mut self) -> DbResult<(String, u64)> {
        if let Some(cached) = self.meta("receipt")? {
            if let Some((root, n)) = cached.split_once(' ') {
                if let Ok(n) = n.parse() {
                    return Ok((root.to_string(), n));
                }
            }
        }
        let leaves: Vec<[u8; 32]> = {
            let mut st = self.conn.prepare_cached("SELECT leaf FROM acked")?;
            let rows = st.query_map([], |r| r.get::<_, [u8; 32]>(0))?;
            rows.collect::<DbResult<_>>()?
        };
        let n = leaves.len() as u64;
        let root = mailferry_audit::merkle::root_of_leaves(leaves);
        // A read-only view cannot keep it; that only costs the next look.
        let _ = self.conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('receipt', ?1)",
            [format!("{root} {n}")],
        );
        Ok((root, n))
    }

    /// The per-folder counts kept by triggers, and the same counted from the rows
    /// (tests: they must agree).
    #[cfg(test)]
    pub fn counts_both_ways(&self) -> (Vec<FolderCounts>, Vec<FolderCounts>) {
        let q = |sql: &str| -> Vec<FolderCounts> {
            let mut st = self.conn.prepare(sql).unwrap();
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .unwrap()
                .collect::<DbResult<_>>()
                .unwrap()
        };
        (
            q("SELECT folder, items, plain_items, plain_bytes FROM folders ORDER BY folder"),
            q("SELECT folder, count(*), sum(renamed = 0),
                      sum(CASE WHEN renamed = 0 THEN size ELSE 0 END)
               FROM acked GROUP BY folder ORDER BY folder"),
        )
    }

    /// A canonical text dump of the index (docs/checkpoint-index.md, the vector).
    #[cfg(test)]
    pub fn dump(&self) -> DbResult<String> {
        let mut out = String::new();
        let mut st = self.conn.prepare(
            "SELECT key, value FROM meta WHERE key IN ('format','move_id') ORDER BY key",
        )?;
        for r in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (k, v) = r?;
            out.push_str(&format!("meta {k} {v}\n"));
        }
        let mut st = self.conn.prepare(
            "SELECT folder, source_id, ifnull(stored_as, '-'), sha256, size, flags,
                    internal_date, ifnull(ident, '-'), renamed, hex(leaf)
             FROM acked ORDER BY folder, source_id",
        )?;
        for r in st.query_map([], |r| {
            Ok(format!(
                "acked {} {} {} {} {} {:?} {} {} {} {}\n",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, String>(9)?.to_lowercase(),
            ))
        })? {
            out.push_str(&r?);
        }
        for (f, c) in self.cursors()? {
            out.push_str(&format!("cursor {f} {c}\n"));
        }
        Ok(out)
    }
}

/// `(folder, items, plain items, plain bytes)`.
#[cfg(test)]
pub type FolderCounts = (String, i64, i64, i64);

fn row_acked(r: &rusqlite::Row<'_>) -> DbResult<(SourceId, Acked)> {
    row_acked_at(r, 0)
}

fn row_acked_at(r: &rusqlite::Row<'_>, at: usize) -> DbResult<(SourceId, Acked)> {
    let bad = |i: usize, what: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.into())
    };
    let id: String = r.get(at)?;
    let id = SourceId::parse(&id).map_err(|e| bad(at, e.to_string()))?;
    let stored_as = match r.get::<_, Option<String>>(at + 1)? {
        Some(s) => SourceId::parse(&s).map_err(|e| bad(at + 1, e.to_string()))?,
        None => id.clone(),
    };
    let flags: String = r.get(at + 4)?;
    let acked = Acked {
        sha256: r.get(at + 2)?,
        stored_as,
        prior: PriorItem {
            flags: Flags::parse(&flags).unwrap_or_default(),
            internal_date: r.get(at + 5)?,
            size: r.get::<_, i64>(at + 3)? as u64,
            ident: r.get(at + 6)?,
        },
    };
    Ok((id, acked))
}

/// Applies one audit record (see `apply_record` in docs/checkpoint-index.md for the
/// rules). Records of older versions (no flags, no dates) read as empty flags and
/// date 0: the next pass then only re-sends flags, never content. Returns whether the
/// set of messages (and so the receipt) changed.
fn apply_record(tx: &Connection, event: &str, data: &Map<String, Value>) -> DbResult<bool> {
    let field = |k: &str| data.get(k).and_then(|v| v.as_str()).unwrap_or("");
    if event == "pass.cursors" {
        tx.execute("DELETE FROM cursors", [])?;
        if let Some(map) = data.get("cursors").and_then(|c| c.as_object()) {
            let mut st =
                tx.prepare_cached("INSERT INTO cursors(folder, cursor) VALUES (?1, ?2)")?;
            for (f, c) in map {
                if let (Ok(f), Some(c)) = (FolderName::parse(f), c.as_str()) {
                    st.execute(params![f.as_str(), c])?;
                }
            }
        }
        return Ok(false);
    }
    if !event.starts_with("message.") {
        return Ok(false);
    }
    let (Ok(folder), Ok(stored_as)) = (
        FolderName::parse(field("folder")),
        SourceId::parse(field("source_id")),
    ) else {
        return Ok(false);
    };
    let now = match data.get("now_source_id").and_then(|v| v.as_str()) {
        Some(n) => match SourceId::parse(n) {
            Ok(n) => n,
            Err(_) => return Ok(false),
        },
        None => stored_as.clone(),
    };
    let flags = Flags::parse(field("flags")).unwrap_or_default();
    let insert = |tx: &Connection| -> DbResult<()> {
        let sha = field("sha256");
        let leaf = mailferry_audit::merkle::leaf(&format!("{folder}/{stored_as}"), sha);
        let mut st = tx.prepare_cached(
            "INSERT OR REPLACE INTO acked(folder, source_id, stored_as, sha256, size, flags,
                 internal_date, ident, renamed, leaf)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        st.execute(params![
            folder.as_str(),
            now.as_str(),
            (stored_as != now).then_some(stored_as.as_str()),
            sha,
            data.get("size").and_then(|v| v.as_u64()).unwrap_or(0) as i64,
            flags.as_str(),
            data.get("internal_date")
                .and_then(|v| v.as_i64())
                .unwrap_or(0),
            data.get("ident").and_then(|v| v.as_str()),
            crate::renamed::is_renamed_id(&now) as i64,
            &leaf[..],
        ])?;
        Ok(())
    };
    let remove = |tx: &Connection, id: &SourceId| -> DbResult<()> {
        tx.prepare_cached("DELETE FROM acked WHERE folder = ?1 AND source_id = ?2")?
            .execute(params![folder.as_str(), id.as_str()])?;
        Ok(())
    };
    match event {
        e if e == EntryKind::Stored.event() || e == EntryKind::Duplicate.event() => {
            insert(tx)?;
            Ok(true)
        }
        e if e == EntryKind::Remapped.event() => {
            // The old id at the source is gone; the destination keeps `stored_as`. The
            // entry it replaces is keyed by `stored_as` itself, or (remapped before) by
            // another id with `stored_as` recorded.
            tx.prepare_cached(
                "DELETE FROM acked WHERE folder = ?1 AND source_id = ?2 AND stored_as IS NULL",
            )?
            .execute(params![folder.as_str(), stored_as.as_str()])?;
            tx.prepare_cached("DELETE FROM acked WHERE folder = ?1 AND stored_as = ?2")?
                .execute(params![folder.as_str(), stored_as.as_str()])?;
            insert(tx)?;
            Ok(true)
        }
        e if e == EntryKind::Flags.event() => {
            tx.prepare_cached("UPDATE acked SET flags = ?3 WHERE folder = ?1 AND source_id = ?2")?
                .execute(params![folder.as_str(), now.as_str(), flags.as_str()])?;
            Ok(false)
        }
        e if e == EntryKind::Deleted.event() || e == EntryKind::Forgotten.event() => {
            remove(tx, &now)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}
