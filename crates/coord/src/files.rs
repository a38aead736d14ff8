//! A move's state directory as rows, and back: the local copy a worker runs a pass in
//! (or a command reads a status from), built from the rows, and what of it goes back
//! after a pass wrote to it.
//!
//! The rows are the truth. `audit.jsonl` is `source_audit` (one row per record, the
//! line byte for byte); `reports.jsonl` is `pass_reports`; `lifecycle.json` is
//! `moves.lifecycle`; `move.json`, `audit.head`, `audit-sign.key` and `report.json` are
//! `source_files`. The checkpoint index (`checkpoint.db`) is not stored: the agent
//! rebuilds it from the log when it is missing. This module does not check leases:
//! its callers write inside a transaction that did ([`crate::lease`]).

use crate::CoordError;
use mailferry_agent::state::{AUDIT_FILE, SIGNING_KEY_FILE};
use mailferry_control::lifecycle::LIFECYCLE_FILE;
use serde_json::Value;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use tokio_postgres::GenericClient;

/// The state files kept as whole files in `source_files`.
pub const FILES: &[&str] = &["move.json", "audit.head", SIGNING_KEY_FILE, "report.json"];
/// The report log of a move's state directory.
pub const REPORTS_FILE: &str = "reports.jsonl";

/// How much of a local copy the rows already hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Bytes of `audit.jsonl` that are rows.
    pub audit_bytes: u64,
    /// The last record's `seq` (0: none).
    pub last_seq: i64,
    /// Lines of `reports.jsonl` that are rows.
    pub reports: i32,
    /// The signing key is a row (it never changes once made).
    pub key_stored: bool,
}

/// What to write of a move: with or without its audit log (a status needs it only
/// while a pass runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Copy {
    /// Everything.
    Full,
    /// Everything but the audit log (and the signing key).
    NoAudit,
    /// Everything but the signing key: for readers (a report, a reconciliation), which
    /// never sign.
    Read,
}

/// Writes the local copy of move `move_id` into `dir` (made empty first). Returns how
/// much of it the rows hold (all of it).
pub async fn materialize(
    c: &impl GenericClient,
    move_id: &str,
    dir: &Path,
    what: Copy,
) -> Result<Cursor, CoordError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(CoordError::io(dir))?;
    }
    mailferry_audit::private::create_dir_all(dir).map_err(CoordError::io(dir))?;
    let row = c
        .query_opt("SELECT lifecycle FROM moves WHERE id = $1", &[&move_id])
        .await
        .map_err(CoordError::db(format!("reading move {move_id}")))?
        .ok_or_else(|| CoordError::NotFound(format!("no move {move_id} in the database")))?;
    let lifecycle: Value = row.get(0);
    write(dir, LIFECYCLE_FILE, &pretty(&lifecycle))?;
    let mut cursor = Cursor::default();
    for r in c
        .query(
            "SELECT name, bytes FROM source_files WHERE move_id = $1",
            &[&move_id],
        )
        .await
        .map_err(CoordError::db(format!(
            "reading the files of move {move_id}"
        )))?
    {
        let name: String = r.get(0);
        if !FILES.contains(&name.as_str()) {
            return Err(CoordError::BadRow {
                what: format!("source_files ({move_id}, {name})"),
                reason: "not a state file this mailferry knows".into(),
            });
        }
        if name == SIGNING_KEY_FILE {
            cursor.key_stored = true;
            if what != Copy::Full {
                continue;
            }
        }
        let bytes = zeroize::Zeroizing::new(r.get::<_, Vec<u8>>(1));
        write(dir, &name, &bytes)?;
    }
    let mut reports = Vec::new();
    for r in c
        .query(
            "SELECT report FROM pass_reports WHERE move_id = $1 ORDER BY pass",
            &[&move_id],
        )
        .await
        .map_err(CoordError::db(format!(
            "reading the reports of move {move_id}"
        )))?
    {
        let v: Value = r.get(0);
        reports.extend(serde_json::to_vec(&v).expect("json"));
        reports.push(b'\n');
        cursor.reports += 1;
    }
    write(dir, REPORTS_FILE, &reports)?;
    if what != Copy::NoAudit {
        let (log, last) = audit_log(c, move_id).await?;
        write(dir, AUDIT_FILE, &log)?;
        cursor.audit_bytes = log.len() as u64;
        cursor.last_seq = last;
    }
    Ok(cursor)
}

/// The move's audit log as its rows hold it, and its last `seq`.
pub async fn audit_log(
    c: &impl GenericClient,
    move_id: &str,
) -> Result<(Vec<u8>, i64), CoordError> {
    let mut log = Vec::new();
    let mut last = 0;
    for r in c
        .query(
            "SELECT seq, line FROM source_audit WHERE move_id = $1 ORDER BY seq",
            &[&move_id],
        )
        .await
        .map_err(CoordError::db(format!(
            "reading the audit log of move {move_id}"
        )))?
    {
        last = r.get(0);
        log.extend_from_slice(r.get::<_, &str>(1).as_bytes());
        log.push(b'\n');
    }
    Ok((log, last))
}

/// Writes what the local copy in `dir` has beyond `cursor` into the rows of `move_id`,
/// inside the caller's (fence-checked) transaction, and returns the cursor to use once
/// it commits. `epoch` is the writer's lease, kept with each record.
pub async fn sync_up(
    tx: &impl GenericClient,
    move_id: &str,
    dir: &Path,
    cursor: &Cursor,
    epoch: i64,
) -> Result<Cursor, CoordError> {
    let mut next = cursor.clone();
    // The head first: it names a record that was on disk before it was signed, so the
    // lines read after it include that record.
    let mut files: Vec<(&str, zeroize::Zeroizing<Vec<u8>>)> = Vec::new();
    for name in FILES {
        if *name == SIGNING_KEY_FILE && cursor.key_stored {
            continue;
        }
        if let Some(b) = read_opt(&dir.join(name))? {
            files.push((name, b));
        }
    }
    let (seqs, lines, read) = new_lines(dir, cursor)?;
    if !seqs.is_empty() {
        tx.execute(
            "INSERT INTO source_audit (move_id, seq, line, epoch) \
             SELECT $1, s, l, $4 FROM unnest($2::bigint[], $3::text[]) AS t(s, l)",
            &[&move_id, &seqs, &lines, &epoch],
        )
        .await
        .map_err(CoordError::db(format!(
            "copying the audit log of move {move_id}"
        )))?;
        next.last_seq = *seqs.last().expect("not empty");
    }
    next.audit_bytes += read;
    for (name, bytes) in &files {
        tx.execute(
            "INSERT INTO source_files (move_id, name, bytes) VALUES ($1, $2, $3) \
             ON CONFLICT (move_id, name) DO UPDATE SET bytes = EXCLUDED.bytes",
            &[&move_id, name, &bytes.as_slice()],
        )
        .await
        .map_err(CoordError::db(format!("copying {name} of move {move_id}")))?;
        if *name == SIGNING_KEY_FILE {
            next.key_stored = true;
        }
    }
    if let Some(lc) = read_opt(&dir.join(LIFECYCLE_FILE))? {
        let v: Value = serde_json::from_slice(&lc).map_err(|e| CoordError::BadRow {
            what: format!("{LIFECYCLE_FILE} of move {move_id}"),
            reason: e.to_string(),
        })?;
        let state = v["state"].as_str().unwrap_or("created").to_string();
        tx.execute(
            "UPDATE moves SET lifecycle = $2, state = $3 WHERE id = $1",
            &[&move_id, &v, &state],
        )
        .await
        .map_err(CoordError::db(format!(
            "recording the lifecycle of move {move_id}"
        )))?;
    }
    if let Some(text) = read_opt(&dir.join(REPORTS_FILE))? {
        // Complete lines only: a torn last one is the next sync's.
        let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for line in text[..complete]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .skip(cursor.reports as usize)
        {
            let v: Value = serde_json::from_slice(line).map_err(|e| CoordError::BadRow {
                what: format!("{REPORTS_FILE} of move {move_id}"),
                reason: e.to_string(),
            })?;
            next.reports += 1;
            tx.execute(
                "INSERT INTO pass_reports (move_id, pass, report, epoch) VALUES ($1, $2, $3, $4)",
                &[&move_id, &next.reports, &v, &epoch],
            )
            .await
            .map_err(CoordError::db(format!(
                "recording a report of move {move_id}"
            )))?;
        }
    }
    Ok(next)
}

/// The complete lines of `audit.jsonl` after the cursor: their `seq`s, their text, and
/// how many bytes they took. A record out of sequence is refused (it would fork the
/// chain the rows hold).
fn new_lines(dir: &Path, cursor: &Cursor) -> Result<(Vec<i64>, Vec<String>, u64), CoordError> {
    let path = dir.join(AUDIT_FILE);
    let mut f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(CoordError::io(&path)(e)),
    };
    f.seek(SeekFrom::Start(cursor.audit_bytes))
        .map_err(CoordError::io(&path))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(CoordError::io(&path))?;
    let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let (mut seqs, mut lines) = (Vec::new(), Vec::new());
    let mut expect = cursor.last_seq + 1;
    for line in buf[..complete].split(|&b| b == b'\n').take_while(|_| true) {
        if line.is_empty() {
            continue;
        }
        let text = std::str::from_utf8(line).map_err(|e| CoordError::BadRow {
            what: format!("{} record {expect}", path.display()),
            reason: format!("not UTF-8: {e}"),
        })?;
        let seq = serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v["seq"].as_i64())
            .ok_or_else(|| CoordError::BadRow {
                what: format!("{} record {expect}", path.display()),
                reason: "no seq".into(),
            })?;
        if seq != expect {
            return Err(CoordError::BadRow {
                what: format!("{} record {seq}", path.display()),
                reason: format!(
                    "expected record {expect} next; the local copy does not continue the rows"
                ),
            });
        }
        expect += 1;
        seqs.push(seq);
        lines.push(text.to_string());
    }
    Ok((seqs, lines, complete as u64))
}

fn pretty(v: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).expect("json")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), CoordError> {
    let path = dir.join(name);
    mailferry_audit::private::write(&path, bytes).map_err(CoordError::io(&path))
}

fn read_opt(path: &Path) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, CoordError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(zeroize::Zeroizing::new(b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CoordError::io(path)(e)),
    }
}
