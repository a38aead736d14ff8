//! The checkpoint snapshot (`checkpoint.snapshot`, docs/checkpoint-snapshot.md): the
//! in-memory checkpoint as it stood at the end of a pass, bound to the audit log by a
//! [`LogMark`], so opening the state replays only the records after the mark instead of
//! the whole log.
//!
//! The audit log stays the one source of truth: the snapshot is a cache of it. It is
//! written after the pass's last record is synced, by rename, without fsync: a crash
//! can leave it absent, empty or torn, and every such file fails its digest or its
//! mark and is ignored (the whole log is replayed, with a warning). A snapshot older
//! than the log is fine (its tail is replayed); one that does not fit the log (cut,
//! rewritten, another move's) fails the mark check.

use super::Acked;
use crate::source::PriorItem;
use mailferry_audit::LogMark;
use mailferry_core::{Flags, FolderName, SourceId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The checkpoint: what the destination holds, by folder and current source id.
pub(crate) type Done = HashMap<(FolderName, SourceId), Acked>;

/// File name in the state directory.
pub const SNAPSHOT_FILE: &str = "checkpoint.snapshot";

/// The format this build writes and reads (line 1, `format`).
pub const FORMAT: &str = "mailferry-checkpoint/1";

/// Line 1: what the snapshot is and what it covers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    /// The last audit record the snapshot covers.
    mark: LogMark,
    /// Length of line 2 in bytes, without its `\n`.
    body_bytes: u64,
    /// SHA-256 of line 2 (without its `\n`), hex.
    body_sha256: String,
}

/// One acknowledged message: `[source_id, stored_as or null, sha256, size, flags,
/// internal_date, ident or null]`.
type Row = (
    String,
    Option<String>,
    String,
    u64,
    String,
    i64,
    Option<String>,
);

/// Line 2: the checkpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    cursors: BTreeMap<String, String>,
    folders: BTreeMap<String, Vec<Row>>,
}

/// A snapshot read back: its mark and the checkpoint it holds.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub mark: LogMark,
    pub done: Done,
    pub cursors: BTreeMap<FolderName, String>,
}

/// Encodes the checkpoint covered by `mark` (both lines, each ending with `\n`).
pub(crate) fn encode(
    mark: &LogMark,
    done: &Done,
    cursors: &BTreeMap<FolderName, String>,
) -> Vec<u8> {
    // Borrowed, not copied: the same JSON as `Body`, without a second copy of the
    // checkpoint in memory.
    type RowRef<'a> = (
        &'a str,
        Option<&'a str>,
        &'a str,
        u64,
        &'a str,
        i64,
        Option<&'a str>,
    );
    #[derive(Serialize)]
    struct BodyRef<'a> {
        cursors: BTreeMap<&'a str, &'a str>,
        folders: BTreeMap<&'a str, Vec<RowRef<'a>>>,
    }
    let mut folders: BTreeMap<&str, Vec<RowRef<'_>>> = BTreeMap::new();
    for ((folder, id), a) in done {
        folders.entry(folder.as_str()).or_default().push((
            id.as_str(),
            (a.stored_as != *id).then(|| a.stored_as.as_str()),
            &a.sha256,
            a.prior.size,
            a.prior.flags.as_str(),
            a.prior.internal_date,
            a.prior.ident.as_deref(),
        ));
    }
    for rows in folders.values_mut() {
        rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
    }
    let body = BodyRef {
        cursors: cursors
            .iter()
            .map(|(f, c)| (f.as_str(), c.as_str()))
            .collect(),
        folders,
    };
    let body = serde_json::to_vec(&body).expect("strings and integers serialise");
    let header = Header {
        format: FORMAT.into(),
        mark: mark.clone(),
        body_bytes: body.len() as u64,
        body_sha256: mailferry_core::sha256_hex(&body),
    };
    let mut out = serde_json::to_vec(&header).expect("strings and integers serialise");
    out.push(b'\n');
    out.extend_from_slice(&body);
    out.push(b'\n');
    out
}

/// Decodes a snapshot file; `Err` says why it cannot be used.
pub(crate) fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header: Header =
        serde_json::from_slice(&bytes[..nl]).map_err(|e| format!("header: {e}"))?;
    if header.format != FORMAT {
        return Err(format!(
            "format {:?} is not the one this build reads ({FORMAT})",
            header.format
        ));
    }
    let body = &bytes[nl + 1..];
    let body = body
        .strip_suffix(b"\n")
        .ok_or("the body line is torn (no final newline)")?;
    if body.len() as u64 != header.body_bytes
        || mailferry_core::sha256_hex(body) != header.body_sha256
    {
        return Err("the body does not match its length and digest".into());
    }
    let body: Body = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
    let bad = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
    let mut cursors = BTreeMap::new();
    for (f, c) in body.cursors {
        cursors.insert(
            FolderName::parse(&f).map_err(|e| bad("cursor folder", &e))?,
            c,
        );
    }
    let mut done = HashMap::with_capacity(body.folders.values().map(Vec::len).sum());
    for (f, rows) in body.folders {
        let folder = FolderName::parse(&f).map_err(|e| bad("folder", &e))?;
        for (id, stored_as, sha256, size, flags, internal_date, ident) in rows {
            let id = SourceId::parse(&id).map_err(|e| bad("source id", &e))?;
            let stored_as = match stored_as {
                Some(s) => SourceId::parse(&s).map_err(|e| bad("stored id", &e))?,
                None => id.clone(),
            };
            let flags = Flags::from_maildir(&flags).map_err(|e| bad("flags", &e))?;
            done.insert(
                (folder.clone(), id),
                Acked {
                    sha256,
                    stored_as,
                    prior: PriorItem {
                        flags,
                        internal_date,
                        size,
                        ident,
                    },
                },
            );
        }
    }
    Ok(Snapshot {
        mark: header.mark,
        done,
        cursors,
    })
}

/// Reads the snapshot of `dir`: `Ok(None)` if there is none, `Err` (why) if it cannot
/// be used.
pub(crate) fn load(dir: &Path) -> Result<Option<Snapshot>, String> {
    match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(bytes) => decode(&bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read: {e}")),
    }
}

/// Writes the snapshot of `dir` by temp file and rename, without fsync (see the module
/// docs: a snapshot lost or torn by a crash is detected and ignored).
pub(crate) fn store(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let path = dir.join(SNAPSHOT_FILE);
    let tmp = path.with_extension("snapshot-tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector_path() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/vectors/checkpoint/snapshot-v1.txt")
    }

    /// The checkpoint of docs/checkpoint-snapshot.md, "Vector".
    fn vector_state() -> (LogMark, Done, BTreeMap<FolderName, String>) {
        let mark: LogMark = serde_json::from_str(
            r#"{"seq":6,"start":1210,"end":1455,"head":"5f0e6a2bc1d1e6f1b1f7c1b0b6f0c5d4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8","mmr_peaks":[[2,"1111111111111111111111111111111111111111111111111111111111111111"],[1,"2222222222222222222222222222222222222222222222222222222222222222"]]}"#,
        )
        .unwrap();
        let inbox = FolderName::inbox();
        let sent = FolderName::parse("Sent").unwrap();
        let acked =
            |stored_as: &str, sha: char, size, flags: &str, date, ident: Option<&str>| Acked {
                sha256: sha.to_string().repeat(64),
                stored_as: SourceId::parse(stored_as).unwrap(),
                prior: PriorItem {
                    flags: Flags::from_maildir(flags).unwrap(),
                    internal_date: date,
                    size,
                    ident: ident.map(str::to_string),
                },
            };
        let mut done = HashMap::new();
        done.insert(
            (inbox.clone(), SourceId::parse("2-1").unwrap()),
            acked("1-1", 'a', 120, "", 1_700_000_000, Some("m1")),
        );
        done.insert(
            (inbox.clone(), SourceId::parse("1-2").unwrap()),
            acked("1-2", 'b', 3400, "FS", 1_700_000_100, None),
        );
        done.insert(
            (sent, SourceId::parse("1-9").unwrap()),
            acked("1-9", 'c', 56, "S", 1_700_000_200, None),
        );
        let mut cursors = BTreeMap::new();
        cursors.insert(inbox, "1 17 3".to_string());
        (mark, done, cursors)
    }

    #[test]
    fn the_documented_vector_is_reproduced_byte_for_byte_and_decodes_back() {
        let (mark, done, cursors) = vector_state();
        let bytes = encode(&mark, &done, &cursors);
        if std::env::var_os("MAILFERRY_WRITE_VECTORS").is_some() {
            std::fs::create_dir_all(vector_path().parent().unwrap()).unwrap();
            std::fs::write(vector_path(), &bytes).unwrap();
        }
        let stored = std::fs::read(vector_path()).expect("docs/vectors/checkpoint/snapshot-v1.txt");
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            String::from_utf8_lossy(&stored)
        );
        let back = decode(&stored).unwrap();
        assert_eq!(back.mark, mark);
        assert_eq!(back.done, done);
        assert_eq!(back.cursors, cursors);
    }

    #[test]
    fn decode_never_panics_on_damaged_bytes() {
        let (mark, done, cursors) = vector_state();
        let good = encode(&mark, &done, &cursors);
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x41;
            // Either refused or (a flip that keeps the header meaning the same, such as
            // inside a key the reader ignores) the same checkpoint.
            if let Ok(s) = decode(&b) {
                assert_eq!(s.done, done, "byte {i}");
            }
            assert!(decode(&good[..i]).is_err(), "cut at {i}");
        }
    }
}
