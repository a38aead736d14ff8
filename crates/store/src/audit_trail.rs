//! The destination side's audit log (`<volume>/audit.jsonl`).
//!
//! Every committed message gets a `message.stored` record, every message a DELETE removed
//! a `message.deleted` record and every flag change a `message.flags` record, appended
//! and synced right after the batch's SQLite transaction, in the batch's order, so a
//! record never describes a change that is not durable. A crash between the transaction
//! and the log sync leaves durable messages or deletions without records; [`recover`]
//! appends them (marked `recovered`) the next time the volume opens, from the index rows
//! and the ids the index keeps of deleted messages. A flag change lost that way is
//! recorded when the agent sends it again (it was never acknowledged).
//!
//! Recovery compares the index with the log. To keep that from reading the whole log at
//! every open, each open ends by writing `audit.mark` (docs/audit-log.md §5.1): a
//! [`LogMark`] of the log, the largest message id and the number of deletions that were
//! all recorded at that point. The next open checks the mark against the log and reads
//! only the records after it; anything unexpected (a mark that does not fit, rows or
//! deletions without records) falls back to the full comparison.
//!
//! The log's head is signed (docs/audit-log.md §10) with the volume's signing key
//! (`audit_sign.rs`) into `audit.head`: when the log passes one of its checkpoints,
//! after every event (`pass.receipt` ends a pass), and when the volume closes (the proxy
//! also signs at the end of every wire session).
//!
//! The log holds no plaintext mail metadata: mailbox addresses, `folder/source-id` items
//! and flags appear only as keyed pseudonyms (HMAC under a key derived from the volume
//! master key), next to the content's SHA-256 and size. Whoever holds the key can compute
//! the pseudonym of an item and find its records; nobody else learns names from the log.

use crate::keys::{hkdf32, VolumeKeys};
use crate::StoreError;
use mailferry_audit::{AuditLog, Entry, HeadKeeper, LogMark, Pseudonymizer, SignedHead};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

/// File name of the log inside the volume directory.
pub const AUDIT_FILE: &str = "audit.jsonl";

/// File name of the recovery mark inside the volume directory.
pub const MARK_FILE: &str = "audit.mark";

/// Format of the recovery mark.
const MARK_FORMAT: &str = "mailferry-volume-audit-mark/1";

/// `audit.mark`: what was recorded in the log up to its mark.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecoveryMark {
    format: String,
    /// The log up to here was complete when the mark was written.
    mark: LogMark,
    /// Every message with an id up to this one had its `message.stored` record.
    max_message_id: u64,
    /// How many deletions the index kept, each with its `message.deleted` record.
    deletions: u64,
}

/// HKDF info of the pseudonym key (derived from the volume master key).
const INFO_PSEUDONYMS: &[u8] = b"mailferry audit pseudonyms v1";

/// One stored message, as the log records it.
#[derive(Clone, Debug)]
pub(crate) struct AuditItem {
    pub message_id: u64,
    pub mailbox: String,
    pub item: String,
    pub sha256: String,
    pub size: u64,
}

/// One change of a committed batch, as the log records it.
#[derive(Clone, Debug)]
pub(crate) enum Change {
    /// `message.stored`.
    Stored(AuditItem),
    /// `message.deleted`; `sha256` is empty (and left out) if the metadata of the
    /// removed message could not be read.
    Deleted(AuditItem),
    /// `message.flags`, with the pseudonym of the new flags.
    Flags(AuditItem, String),
}

fn item_data(i: &AuditItem) -> serde_json::Value {
    let mut data = json!({
        "message": i.message_id,
        "mailbox": i.mailbox,
        "item": i.item,
    });
    if !i.sha256.is_empty() {
        data["sha256"] = json!(i.sha256);
        data["size"] = json!(i.size);
    }
    data
}

/// The event and data of one change's record; `fence` is the writing session's fencing
/// number, left out for a session without one (so its records are as before).
pub(crate) fn change_record(c: &Change, fence: Option<u64>) -> (&'static str, serde_json::Value) {
    let (event, mut data) = match c {
        Change::Stored(i) => ("message.stored", item_data(i)),
        Change::Deleted(i) => ("message.deleted", item_data(i)),
        Change::Flags(i, flags) => {
            let mut data = item_data(i);
            data["flags"] = json!(flags);
            ("message.flags", data)
        }
    };
    if let Some(f) = fence {
        data["fence"] = json!(f);
    }
    (event, data)
}

/// `session.opened`: a fenced session was accepted for `mailbox` (a pseudonym) and its
/// fencing number is now the mailbox's.
pub(crate) fn opened_data(mailbox: &str, move_id: &str, fence: u64) -> serde_json::Value {
    json!({ "mailbox": mailbox, "move_id": move_id, "fence": fence })
}

/// Where the store refused a fenced session (`refused` in `session.fenced`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FencedAt {
    /// Its OPEN: a newer lease had opened the mailbox before.
    Open,
    /// One of its commits: a newer lease opened the mailbox meanwhile.
    Commit,
    /// A newer lease asked for the mailbox while this session held it: it was ended
    /// with what it had not committed discarded.
    Takeover,
}

impl FencedAt {
    fn as_str(self) -> &'static str {
        match self {
            FencedAt::Open => "open",
            FencedAt::Commit => "commit",
            FencedAt::Takeover => "takeover",
        }
    }
}

/// `session.fenced`: a session with fencing number `stale` was refused at `at` because
/// the mailbox's is `fence`. The record's `fence` is the mailbox's (the newer one), so
/// that in every record that has one, `fence` never goes down for a mailbox.
pub(crate) fn fenced_data(
    mailbox: &str,
    stale: u64,
    fence: u64,
    at: FencedAt,
) -> serde_json::Value {
    json!({
        "mailbox": mailbox,
        "fence": fence,
        "stale_fence": stale,
        "refused": at.as_str(),
    })
}

/// The keys of the log's pseudonyms: `Pseudonymizer` (docs/audit-log.md §6) under
/// HKDF-SHA256(volume master key, info "mailferry audit pseudonyms v1").
pub(crate) fn pseudonymizer(keys: &VolumeKeys) -> Pseudonymizer {
    let k = hkdf32(keys.vmk.expose(), &[], INFO_PSEUDONYMS);
    Pseudonymizer::new(k.expose())
}

/// Who writes the destination log: the store on this host.
pub fn store_actor() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("store@{host}")
}

/// The open destination log; appends are serialised by its mutex.
pub(crate) struct DestLog {
    log: Mutex<AuditLog>,
    /// The signed head; locked after `log`, never before.
    heads: Mutex<HeadKeeper>,
    /// Records in the log when it was opened: closing signs only what was appended since.
    opened_seq: u64,
    actor: String,
    names: Pseudonymizer,
    /// The recovery mark the log was opened from, if it fitted.
    resumed: Option<RecoveryMark>,
}

impl DestLog {
    /// Opens (or creates) the log of the volume in `dir`; a torn tail is repaired.
    pub fn open(dir: &Path, keys: &VolumeKeys) -> Result<DestLog, StoreError> {
        let mark_path = dir.join(MARK_FILE);
        let mark: Option<RecoveryMark> = match std::fs::read(&mark_path) {
            Ok(b) => match serde_json::from_slice::<RecoveryMark>(&b) {
                Ok(m) if m.format == MARK_FORMAT => Some(m),
                Ok(m) => {
                    tracing::warn!(path = %mark_path.display(), format = %m.format, "audit recovery mark of an unknown format ignored; reading the whole log");
                    None
                }
                Err(e) => {
                    tracing::warn!(path = %mark_path.display(), error = %e, "damaged audit recovery mark ignored; reading the whole log");
                    None
                }
            },
            Err(_) => None,
        };
        let log = AuditLog::open_from(dir.join(AUDIT_FILE), mark.as_ref().map(|m| &m.mark))?;
        if let Some(reason) = log.mark_refused() {
            tracing::warn!(path = %mark_path.display(), %reason, "audit recovery mark does not fit the log; reading the whole log");
        }
        let resumed = mark.filter(|_| log.resumed());
        if let Some(t) = log.repaired() {
            tracing::info!(
                offset = t.offset,
                bytes = t.removed_bytes,
                "audit log: cut a torn tail left by a crash"
            );
        }
        let heads = HeadKeeper::new(crate::audit_sign::signer(keys), &log);
        Ok(DestLog {
            heads: Mutex::new(heads),
            opened_seq: log.last_seq(),
            log: Mutex::new(log),
            actor: store_actor(),
            names: pseudonymizer(keys),
            resumed,
        })
    }

    /// The pseudonym of a mailbox address.
    pub fn mailbox_pseudonym(&self, mailbox: &str) -> String {
        self.names.pseudonym("mailbox", mailbox)
    }

    /// The pseudonym of any other name (`kind` e.g. "tenant").
    pub fn pseudonym(&self, kind: &str, name: &str) -> String {
        self.names.pseudonym(kind, name)
    }

    /// The pseudonym of a `folder/source-id` item.
    pub fn item_pseudonym(&self, item: &str) -> String {
        self.names.pseudonym("item", item)
    }

    /// The pseudonym of the flags of a `folder/source-id` item: kind `flags`, value
    /// `item || 0x00 || flags`. The item is mixed in so that equal flags of different
    /// messages do not share a pseudonym (there are only 64 sets of flags).
    pub fn flags_pseudonym(&self, item: &str, flags: &str) -> String {
        self.names.pseudonym("flags", &format!("{item}\0{flags}"))
    }

    /// Appends the records of a committed batch, in its order, and syncs them; `fence`
    /// is the writing session's fencing number, if it has one.
    pub fn changes(&self, changes: &[Change], fence: Option<u64>) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.append_batch(&self.actor, changes.iter().map(|c| change_record(c, fence)))?;
        log.sync()?;
        self.heads().sign_at_checkpoint(&log);
        Ok(())
    }

    fn heads(&self) -> std::sync::MutexGuard<'_, HeadKeeper> {
        self.heads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The public key of the volume's signed heads.
    pub fn public_key(&self) -> mailferry_audit::PublicKey {
        self.heads().public_key()
    }

    /// Signs the head if the head file is behind the log; the latest signed head.
    pub fn sign_head(&self) -> Result<Option<SignedHead>, StoreError> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let mut heads = self.heads();
        if heads.behind(&log) {
            heads.sign(&log)?;
        }
        Ok(heads.latest().cloned())
    }

    /// The log's mark now (after a sync), for `audit.mark`.
    fn mark(&self) -> Option<LogMark> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).mark()
    }

    /// Appends one event and syncs it.
    pub fn event(&self, event: &str, data: serde_json::Value) -> Result<(), StoreError> {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.append(&self.actor, event, data)?;
        log.sync()?;
        // An event ends an operation (a pass's receipt, a compaction, a rotation): the
        // head that covers it is what the operation's record hands out.
        self.heads().sign_or_warn(&log);
        Ok(())
    }

    /// Appends the records of a committed batch and syncs them.
    pub fn stored(&self, items: &[AuditItem], recovered: bool) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.append_batch(
            &self.actor,
            items.iter().map(|i| {
                let mut data = json!({
                    "message": i.message_id,
                    "mailbox": i.mailbox,
                    "item": i.item,
                    "sha256": i.sha256,
                    "size": i.size,
                });
                if recovered {
                    data["recovered"] = json!(true);
                }
                ("message.stored", data)
            }),
        )?;
        log.sync()?;
        self.heads().sign_at_checkpoint(&log);
        Ok(())
    }

    /// Appends `message.deleted` records written at open (`recovered: true`) and syncs.
    fn deleted_recovered(&self, records: Vec<serde_json::Value>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.append_batch(
            &self.actor,
            records.into_iter().map(|mut data| {
                data["recovered"] = json!(true);
                ("message.deleted", data)
            }),
        )?;
        log.sync()?;
        Ok(())
    }
}

impl Drop for DestLog {
    fn drop(&mut self) {
        // The volume closes: sign what this process appended since it opened the log
        // (the records of a `serve` session, recovered records), not what it found
        // (`volume.replicated` is written without the key). Best effort: a failure here
        // leaves those records unsigned, which `audit verify` reports.
        let log = self.log.get_mut().unwrap_or_else(|p| p.into_inner());
        let heads = self.heads.get_mut().unwrap_or_else(|p| p.into_inner());
        if log.is_synced() && log.last_seq() > self.opened_seq && heads.behind(log) {
            if let Err(e) = heads.sign(log) {
                tracing::warn!(error = %e, "audit head not signed when the volume closed");
            }
        }
    }
}

/// Message ids that have a `message.stored` record in `entries`.
pub(crate) fn logged_ids(entries: &[Entry]) -> HashSet<u64> {
    entries
        .iter()
        .filter(|e| e.event == "message.stored")
        .filter_map(|e| e.data.get("message").and_then(|v| v.as_u64()))
        .collect()
}

/// Appends records for committed messages and deletions that have none (a crash between
/// a commit and its log sync). Compares message ids, not counts: compaction deletes the
/// rows of shredded mailboxes, so the log may hold more records than the index has rows.
/// Messages of shredded mailboxes cannot be described any more and are skipped.
pub(crate) fn recover(volume: &crate::Volume) -> Result<u64, StoreError> {
    let n = if recorded_since_mark(volume)? {
        0
    } else {
        recover_all(volume)?
    };
    write_mark(volume);
    Ok(n)
}

/// True if the log was opened from a recovery mark and every message and deletion
/// committed since has its record in the records after the mark: then nothing is missing
/// and the log before the mark need not be read.
fn recorded_since_mark(volume: &crate::Volume) -> Result<bool, StoreError> {
    let Some(m) = &volume.inner.audit.resumed else {
        return Ok(false);
    };
    let path = volume.dir().join(AUDIT_FILE);
    let tail = match mailferry_audit::read_tail_after(&path, &m.mark) {
        Ok(t) => t,
        Err(_) => return Ok(false),
    };
    // Only the event and the message id of each record: a light parse (the tail of a
    // first pass holds a record per message). Anything unreadable: the full comparison.
    #[derive(Deserialize)]
    struct Lite {
        event: String,
        data: LiteData,
    }
    #[derive(Deserialize)]
    struct LiteData {
        message: Option<u64>,
    }
    let mut stored = HashSet::new();
    let mut deleted = HashSet::new();
    for line in tail.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(rec) = serde_json::from_slice::<Lite>(line) else {
            return Ok(false);
        };
        match (rec.event.as_str(), rec.data.message) {
            ("message.stored", Some(id)) => {
                stored.insert(id);
            }
            ("message.deleted", Some(id)) => {
                deleted.insert(id);
            }
            _ => {}
        }
    }
    let ix = volume.inner.index()?;
    if ix.max_message_id()? < m.max_message_id {
        return Ok(false); // an index older than the mark: compare everything
    }
    let new_rows_recorded = ix
        .message_ids_after(m.max_message_id)?
        .iter()
        .all(|(id, _)| stored.contains(id));
    let tombstones = ix.deleted_message_ids()?;
    let unrecorded = tombstones
        .iter()
        .filter(|(id, _)| !deleted.contains(id))
        .count() as u64;
    // The deletions of the mark are recorded before it, so none of them is in the tail:
    // exactly those may lack a record in the tail.
    Ok(new_rows_recorded && unrecorded == m.deletions)
}

/// Writes `audit.mark` for the log as it is now, right after recovery: every message and
/// deletion in the index has its record. By rename, without fsync: a mark lost or torn
/// by a crash is ignored at the next open, which then reads the whole log.
fn write_mark(volume: &crate::Volume) {
    let result = (|| -> Result<(), StoreError> {
        let Some(mark) = volume.inner.audit.mark() else {
            return Ok(());
        };
        let (max_message_id, deletions) = {
            let ix = volume.inner.index()?;
            (ix.max_message_id()?, ix.deleted_message_ids()?.len() as u64)
        };
        let m = RecoveryMark {
            format: MARK_FORMAT.into(),
            mark,
            max_message_id,
            deletions,
        };
        let path = volume.dir().join(MARK_FILE);
        let tmp = path.with_extension("mark-tmp");
        let bytes = serde_json::to_vec(&m).expect("integers and strings serialise");
        mailferry_audit::private::write(&tmp, &bytes)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| StoreError::Io { path, source: e })
    })();
    if let Err(e) = result {
        tracing::warn!(error = %e, "audit recovery mark not written; the next open reads the whole audit log");
    }
}

/// The full comparison of the index with every record of the log.
fn recover_all(volume: &crate::Volume) -> Result<u64, StoreError> {
    let path = volume.dir().join(AUDIT_FILE);
    let entries = mailferry_audit::read_records(&path)?;
    let deleted = recover_deleted(volume, &entries)?;
    let logged = logged_ids(&entries);
    let (unlogged, shredded) = {
        let ix = volume.inner.index()?;
        let unlogged: HashSet<u64> = ix
            .message_ids()?
            .into_iter()
            .filter(|(id, _)| !logged.contains(id))
            .map(|(_, mailbox)| mailbox)
            .collect();
        (unlogged, ix.shredded_mailboxes()?)
    };
    if unlogged.is_empty() {
        return Ok(deleted);
    }
    let mut missing = Vec::new();
    for (row, mailbox) in volume.mailbox_rows()? {
        if !unlogged.contains(&row) || shredded.contains(&row) {
            continue;
        }
        let locked = {
            let ix = volume.inner.index()?;
            volume.inner.read_locked(&ix, row, &mailbox)?.is_some()
        };
        if locked {
            // Sealed for its tenant: the record names the message and mailbox, not the
            // item or digest the store cannot read.
            let ids = volume.inner.index()?.message_ids_of(row)?;
            for id in ids.into_iter().filter(|id| !logged.contains(id)) {
                missing.push(AuditItem {
                    message_id: id,
                    mailbox: volume.pseudonym_of_mailbox(&mailbox),
                    item: String::new(),
                    sha256: String::new(),
                    size: 0,
                });
            }
            continue;
        }
        for msg in volume.list_messages(&mailbox)?.into_iter().flatten() {
            if !logged.contains(&msg.id) {
                missing.push(volume.audit_item(&msg));
            }
        }
    }
    let n = missing.len() as u64;
    volume.inner.audit.stored(&missing, true)?;
    if n > 0 {
        tracing::info!(
            records = n,
            "audit log: recorded messages committed just before a crash"
        );
    }
    Ok(n + deleted)
}

/// Appends `message.deleted` for every id the index keeps as deleted that has no such
/// record, copying the pseudonyms, digest and size of its `message.stored` record (a
/// message stored and deleted in the same batch has none: its record names the mailbox
/// only).
fn recover_deleted(volume: &crate::Volume, entries: &[Entry]) -> Result<u64, StoreError> {
    let tombstones = volume.inner.index()?.deleted_message_ids()?;
    if tombstones.is_empty() {
        return Ok(0);
    }
    let id_of = |e: &Entry| e.data.get("message").and_then(|v| v.as_u64());
    let logged: HashSet<u64> = entries
        .iter()
        .filter(|e| e.event == "message.deleted")
        .filter_map(id_of)
        .collect();
    let missing: Vec<(u64, u64)> = tombstones
        .into_iter()
        .filter(|(id, _)| !logged.contains(id))
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    let stored: std::collections::HashMap<u64, &serde_json::Map<String, serde_json::Value>> =
        entries
            .iter()
            .filter(|e| e.event == "message.stored")
            .filter_map(|e| Some((id_of(e)?, &e.data)))
            .collect();
    let names: std::collections::HashMap<u64, String> = volume
        .mailbox_rows()?
        .into_iter()
        .map(|(id, m)| (id, volume.pseudonym_of_mailbox(&m)))
        .collect();
    let records: Vec<serde_json::Value> = missing
        .iter()
        .map(|(id, mailbox)| {
            let mut data = json!({ "message": id });
            match stored.get(id) {
                Some(s) => {
                    for k in ["mailbox", "item", "sha256", "size"] {
                        if let Some(v) = s.get(k) {
                            data[k] = v.clone();
                        }
                    }
                }
                None => {
                    if let Some(p) = names.get(mailbox) {
                        data["mailbox"] = json!(p);
                    }
                }
            }
            data
        })
        .collect();
    let n = records.len() as u64;
    volume.inner.audit.deleted_recovered(records)?;
    tracing::info!(
        records = n,
        "audit log: recorded deletions committed just before a crash"
    );
    Ok(n)
}

#[cfg(test)]
mod tests;
