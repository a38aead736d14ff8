//! `mailferry audit verify|reconcile` and `mailferry receipt verify`: the evidence an
//! auditor checks without trusting the tool's own report.
//!
//! Reconciliation compares the source side (the agent's audit log in the state
//! directory) with the destination (what the volume holds, each message's chunks
//! authenticated and its SHA-256 recomputed, and the volume's own audit log) message by
//! message. Mirror passes are followed: a message the source log says was deleted must
//! be gone from the volume (and its removal recorded in the volume's log), and flags the
//! source log records last must be the volume's. It reads both sides and changes
//! neither.

use crate::AppError;
use mailferry_agent::state::{MoveIdentity, AUDIT_FILE};
use mailferry_audit::read_records;
use mailferry_core::MailboxAddr;
use mailferry_store::audit_trail::AUDIT_FILE as VOLUME_AUDIT_FILE;
use mailferry_store::Volume;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// The audit log inside `dir`, whether `dir` is a state directory or a volume.
pub fn log_path(dir: &Path) -> Result<PathBuf, AppError> {
    for name in [AUDIT_FILE, VOLUME_AUDIT_FILE] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(AppError::Usage(format!(
        "{} holds no audit log ({AUDIT_FILE}); give a move's --state directory or a volume",
        dir.display()
    )))
}

// === signed heads ===

/// The public key that checks the signed heads of `dir`'s audit log, and whose log it
/// is: a move's state directory (its key is created on first use) or a volume (opened
/// with `unlock`: its key derives from the volume master key).
pub fn public_key(
    dir: &Path,
    unlock: &crate::volume_admin::UnlockArgs,
) -> Result<(mailferry_audit::PublicKey, mailferry_audit::LogSide), AppError> {
    if dir.join("move.json").is_file() {
        let signer = mailferry_agent::state::head_signer(dir)?;
        return Ok((signer.public_key(), signer.side()));
    }
    if !dir.join(mailferry_store::HEADER_FILE).is_file() {
        return Err(AppError::Usage(format!(
            "{} is neither a move's state directory (no move.json) nor a volume (no {}); \
             give a --state directory or a volume",
            dir.display(),
            mailferry_store::HEADER_FILE
        )));
    }
    if !unlock.any() {
        return Err(AppError::Usage(format!(
            "{} is a volume: its signing key derives from the volume key, so give \
             --key-file, --passphrase-file or --recovery-key-file",
            dir.display()
        )));
    }
    let volume = crate::volume_admin::open(dir, unlock)?;
    Ok((
        volume.audit_public_key(),
        mailferry_audit::LogSide::Destination,
    ))
}

/// Checks the signed head kept next to the log at `log` (`audit.head`) with the public
/// key in `key_file`, then the log against it: see [`mailferry_audit::verify_signed`].
/// A missing head file fails too: removing it is how a cut would be hidden.
pub fn verify_signed_head(
    log: &Path,
    key_file: &Path,
) -> Result<mailferry_audit::SignedOutcome, AppError> {
    let key = mailferry_audit::PublicKey::read(key_file).map_err(|e| {
        AppError::Usage(format!(
            "{e}; give the file written by `mailferry audit public-key`"
        ))
    })?;
    let head_path = mailferry_audit::head::head_path(log);
    let head = match mailferry_audit::head::read_head(&head_path) {
        Ok(h) => h,
        Err(mailferry_audit::AuditError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Err(AppError::Failed(format!(
                "no signed head ({}) next to {}: it was removed, or this log was written \
                 before heads were signed; a removed head file is how records cut off \
                 the end would be hidden, so nothing can be said about the log's end \
                 (compare with a head kept elsewhere: the move's receipt)",
                head_path.display(),
                log.display()
            )))
        }
        Err(e) => {
            return Err(AppError::Failed(format!(
                "audit log verification failed: {e}"
            )))
        }
    };
    mailferry_audit::verify_signed(log, &head, &key)
        .map_err(|e| AppError::Failed(format!("audit log verification failed: {e}")))
}

/// Reads `move.json` of a state directory.
pub fn identity(state: &Path) -> Result<MoveIdentity, AppError> {
    let p = state.join("move.json");
    let bytes = std::fs::read(&p).map_err(|e| AppError::io(&p, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| AppError::Usage(format!("{}: not a move state file: {e}", p.display())))
}

/// An item that is present on both sides but not the same.
#[derive(Debug, Serialize, Clone, PartialEq, Eq)]
pub struct Altered {
    /// `folder/source-id`.
    pub item: String,
    /// What differs.
    pub reason: String,
}

/// The result of a reconciliation.
#[derive(Debug, Default, Serialize)]
pub struct Reconciliation {
    /// The mailbox.
    pub mailbox: String,
    /// Messages the source log says were acknowledged.
    pub source_items: u64,
    /// Messages the volume holds for the mailbox.
    pub destination_items: u64,
    /// Items present and identical on both sides.
    pub agreeing: u64,
    /// Acknowledged at the source, not in the volume.
    pub missing: Vec<String>,
    /// In the volume, never acknowledged at the source.
    pub extra: Vec<String>,
    /// Present on both sides, but damaged or different at rest.
    pub altered: Vec<Altered>,
    /// Stored more than once in the volume.
    pub duplicated: Vec<String>,
    /// Recorded as stored in the volume's audit log but gone from its index (removed
    /// behind the tool's back), by message id.
    pub removed_from_volume: Vec<u64>,
    /// In the volume's index without a record in the volume's audit log.
    pub unlogged: Vec<String>,
    /// Deleted at the source (a mirror pass) and gone from the volume, as they should be.
    pub deleted: u64,
    /// Deleted at the source (acknowledged), still in the volume.
    pub not_deleted: Vec<String>,
}

impl Reconciliation {
    /// True if both sides agree on every message.
    pub fn agrees(&self) -> bool {
        self.missing.is_empty()
            && self.extra.is_empty()
            && self.altered.is_empty()
            && self.duplicated.is_empty()
            && self.removed_from_volume.is_empty()
            && self.unlogged.is_empty()
            && self.not_deleted.is_empty()
    }

    /// Every kind of disagreement with its count, for a report or a page:
    /// "0 missing, 1 extra, …, 0 not deleted".
    pub fn discrepancies(&self) -> String {
        format!(
            "{} missing, {} extra, {} altered, {} duplicated, {} removed from the volume, {} unlogged, {} not deleted",
            self.missing.len(),
            self.extra.len(),
            self.altered.len(),
            self.duplicated.len(),
            self.removed_from_volume.len(),
            self.unlogged.len(),
            self.not_deleted.len()
        )
    }
}

/// Compares a move's source side (`state`) with the volume, message by message.
pub fn reconcile(state: &Path, volume: &Volume) -> Result<Reconciliation, AppError> {
    let id = identity(state)?;
    let src_log = state.join(AUDIT_FILE);
    mailferry_audit::verify(&src_log)
        .map_err(|e| AppError::Failed(format!("source audit log: {e}")))?;
    let dst_log = volume.dir().join(VOLUME_AUDIT_FILE);
    mailferry_audit::verify(&dst_log)
        .map_err(|e| AppError::Failed(format!("volume audit log: {e}")))?;

    let SourceSide {
        source,
        source_flags,
        deleted_at_source,
    } = SourceSide::replay(&src_log)?;
    let mut r = Reconciliation {
        mailbox: id.mailbox.to_string(),
        source_items: source.len() as u64,
        ..Default::default()
    };
    let pseudonym = volume.pseudonym_of_mailbox(&id.mailbox);
    let (logged, deleted_in_volume) = volume_log_ids(&dst_log, &pseudonym)?;
    let VolumeSide {
        seen_ids,
        dest,
        dest_flags,
    } = VolumeSide::read(volume, &id.mailbox, &logged, &mut r)?;
    r.destination_items = dest.values().map(|v| v.len() as u64).sum();
    let mut removed: Vec<u64> = logged
        .difference(&seen_ids)
        .filter(|id| !deleted_in_volume.contains(id))
        .copied()
        .collect();
    removed.sort_unstable();
    r.removed_from_volume = removed;
    for (item, shas) in &dest {
        if shas.len() > 1 {
            r.duplicated.push(item.clone());
        }
        let flags_differ = match (source_flags.get(item), dest_flags.get(item)) {
            (Some(want), Some(have)) if !have.contains(want) => Some(format!(
                "flags differ: source \"{want}\", volume \"{}\"",
                have[0]
            )),
            _ => None,
        };
        match source.get(item) {
            None if deleted_at_source.contains(item) => r.not_deleted.push(item.clone()),
            None => r.extra.push(item.clone()),
            Some(sha) if !shas.contains(sha) => r.altered.push(Altered {
                item: item.clone(),
                reason: format!("content differs: source {sha}, volume {}", shas[0]),
            }),
            Some(_) => match flags_differ {
                Some(reason) => r.altered.push(Altered {
                    item: item.clone(),
                    reason,
                }),
                None => r.agreeing += 1,
            },
        }
    }
    r.deleted = deleted_at_source
        .iter()
        .filter(|item| !dest.contains_key(*item))
        .count() as u64;
    let altered: HashSet<String> = r.altered.iter().map(|a| a.item.clone()).collect();
    r.missing = source
        .keys()
        .filter(|k| !dest.contains_key(*k) && !altered.contains(*k))
        .cloned()
        .collect();
    Ok(r)
}

/// The source side of a move, replayed from its audit log in order.
struct SourceSide {
    /// What the destination should hold now: item → SHA-256.
    source: BTreeMap<String, String>,
    /// The flags the source recorded last (older logs record none: not compared).
    source_flags: BTreeMap<String, String>,
    /// What the source deleted.
    deleted_at_source: HashSet<String>,
}

impl SourceSide {
    fn replay(src_log: &Path) -> Result<SourceSide, AppError> {
        let mut source: BTreeMap<String, String> = BTreeMap::new();
        let mut source_flags: BTreeMap<String, String> = BTreeMap::new();
        let mut deleted_at_source: HashSet<String> = HashSet::new();
        for e in read_records(src_log).map_err(|e| AppError::Failed(e.to_string()))? {
            let f = |k: &str| e.data.get(k).and_then(|v| v.as_str()).map(String::from);
            let item = || {
                format!(
                    "{}/{}",
                    f("folder").unwrap_or_default(),
                    f("source_id").unwrap_or_default()
                )
            };
            match e.event.as_str() {
                // `source_id` is always the id the destination knows the message by.
                "message.stored" | "message.duplicate" | "message.remapped" => {
                    let item = item();
                    match f("flags") {
                        Some(fl) => source_flags.insert(item.clone(), fl),
                        None => source_flags.remove(&item),
                    };
                    deleted_at_source.remove(&item);
                    source.insert(item, f("sha256").unwrap_or_default());
                }
                "message.flags" => {
                    if let Some(fl) = f("flags") {
                        source_flags.insert(item(), fl);
                    }
                }
                "message.deleted" => {
                    let item = item();
                    source.remove(&item);
                    source_flags.remove(&item);
                    deleted_at_source.insert(item);
                }
                // The destination lost it (an admin removed it there); the next pass sends
                // it again.
                "message.forgotten" => {
                    let item = item();
                    source.remove(&item);
                    source_flags.remove(&item);
                }
                _ => {}
            }
        }
        Ok(SourceSide {
            source,
            source_flags,
            deleted_at_source,
        })
    }
}

/// The message ids the volume's audit log records for the mailbox `pseudonym`: stored,
/// and removed by a DELETE (with its record: not "removed behind the tool's back").
fn volume_log_ids(
    dst_log: &Path,
    pseudonym: &str,
) -> Result<(HashSet<u64>, HashSet<u64>), AppError> {
    let dst_records: Vec<_> = read_records(dst_log)
        .map_err(|e| AppError::Failed(e.to_string()))?
        .into_iter()
        .filter(|e| e.data.get("mailbox").and_then(|v| v.as_str()) == Some(pseudonym))
        .collect();
    let ids_of = |event: &str| -> HashSet<u64> {
        dst_records
            .iter()
            .filter(|e| e.event == event)
            .filter_map(|e| e.data.get("message").and_then(|v| v.as_u64()))
            .collect()
    };
    Ok((ids_of("message.stored"), ids_of("message.deleted")))
}

/// The volume side of a move: every message of the mailbox, read and authenticated.
struct VolumeSide {
    /// Message ids present in the index.
    seen_ids: HashSet<u64>,
    /// item → SHA-256 of every copy that reads back.
    dest: BTreeMap<String, Vec<String>>,
    /// item → flags of every copy that reads back.
    dest_flags: BTreeMap<String, Vec<String>>,
}

impl VolumeSide {
    /// Reads every message; unreadable and unlogged ones go into `r` as they are met.
    fn read(
        volume: &Volume,
        mailbox: &MailboxAddr,
        logged: &HashSet<u64>,
        r: &mut Reconciliation,
    ) -> Result<VolumeSide, AppError> {
        let listed = match volume.list_messages(mailbox) {
            Ok(l) => l,
            Err(mailferry_store::StoreError::UnknownMailbox { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut seen_ids = HashSet::new();
        let mut dest: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut dest_flags: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in listed {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    r.altered.push(Altered {
                        item: "(unreadable metadata)".into(),
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            let item = format!("{}/{}", m.meta.folder, m.meta.source_id);
            seen_ids.insert(m.id);
            if !logged.contains(&m.id) {
                r.unlogged.push(item.clone());
            }
            // Authenticates every chunk and recomputes the SHA-256.
            if let Err(e) = volume.read_message(&m, &mut std::io::sink()) {
                r.altered.push(Altered {
                    item: item.clone(),
                    reason: e.to_string(),
                });
                continue;
            }
            dest_flags
                .entry(item.clone())
                .or_default()
                .push(m.meta.flags.as_str().to_string());
            dest.entry(item).or_default().push(m.meta.sha256);
        }
        Ok(VolumeSide {
            seen_ids,
            dest,
            dest_flags,
        })
    }
}

/// Checks a volume's audit log against the volume itself: every `message.stored`
/// record names a message the index holds, with the same pseudonyms, SHA-256 and size,
/// and every message of the index has its record. Returns every disagreement.
pub fn check_volume_records(volume: &Volume) -> Result<Vec<String>, AppError> {
    let path = volume.dir().join(VOLUME_AUDIT_FILE);
    let mut logged: BTreeMap<u64, (String, String, String, u64)> = BTreeMap::new();
    let mut deleted: BTreeMap<u64, (String, String)> = BTreeMap::new();
    for e in read_records(&path).map_err(|e| AppError::Failed(e.to_string()))? {
        if e.event == "message.deleted" {
            if let Some(id) = e.data.get("message").and_then(|v| v.as_u64()) {
                let s = |k: &str| e.data.get(k).and_then(|v| v.as_str()).unwrap_or("");
                deleted.insert(id, (s("mailbox").to_string(), s("item").to_string()));
            }
            continue;
        }
        if e.event != "message.stored" {
            continue;
        }
        let s = |k: &str| {
            e.data
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let id = e.data.get("message").and_then(|v| v.as_u64()).unwrap_or(0);
        let size = e.data.get("size").and_then(|v| v.as_u64()).unwrap_or(0);
        logged.insert(id, (s("mailbox"), s("item"), s("sha256"), size));
    }
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    for mailbox in volume.mailboxes()? {
        match volume.can_read(&mailbox) {
            // Sealed for its tenant: each message must still have a record naming its
            // mailbox; item, digest and size need the tenant key (`--tenant-key`).
            Ok(false) => {
                let pseudonym = volume.pseudonym_of_mailbox(&mailbox);
                for id in volume.message_ids(&mailbox)? {
                    seen.insert(id);
                    match logged.get(&id) {
                        None => problems.push(format!("message {id} ({mailbox}) has no record")),
                        Some(rec) if rec.0 != pseudonym => problems.push(format!(
                            "message {id} ({mailbox}): its record names another mailbox"
                        )),
                        Some(_) => {}
                    }
                }
                continue;
            }
            Err(mailferry_store::StoreError::Shredded { .. }) => continue,
            Ok(true) => {}
            Err(e) => return Err(e.into()),
        }
        let listed = match volume.list_messages(&mailbox) {
            Ok(l) => l,
            Err(mailferry_store::StoreError::Shredded { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        for m in listed {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    problems.push(e.to_string());
                    continue;
                }
            };
            seen.insert(m.id);
            let item = format!("{}/{}", m.meta.folder, m.meta.source_id);
            let expected = (
                volume.pseudonym_of_mailbox(&mailbox),
                volume.pseudonym_of_item(&item),
                m.meta.sha256.clone(),
                m.meta.size,
            );
            match logged.get(&m.id) {
                None => problems.push(format!("message {} ({mailbox}: {item}) has no record", m.id)),
                Some(rec) if *rec != expected => problems.push(format!(
                    "message {} ({mailbox}: {item}): its record names another mailbox, item, digest or size",
                    m.id
                )),
                Some(_) => {}
            }
        }
    }
    for (id, rec) in &logged {
        match deleted.get(id) {
            // Removed by a DELETE: its deletion record must name the same message.
            Some((mailbox, item)) if (mailbox, item) != (&rec.0, &rec.1) => problems.push(format!(
                "message {id}: its deletion record names another mailbox or item than its stored record"
            )),
            Some(_) if seen.contains(id) => problems.push(format!(
                "message {id} has a deletion record but is still in the volume"
            )),
            Some(_) => {}
            None if !seen.contains(id) => problems.push(format!(
                "message {id} has a record but is not in the volume (removed behind the tool's back, or shredded)"
            )),
            None => {}
        }
    }
    Ok(problems)
}

/// What `receipt verify` found.
#[derive(Debug, Serialize)]
pub struct ReceiptCheck {
    /// Root the source recorded at the end of its last pass.
    pub source_root: String,
    /// Root recomputed now from the volume.
    pub destination_root: String,
    /// Messages the recomputed root covers.
    pub destination_items: u64,
    /// True if equal.
    pub matches: bool,
    /// The signed heads of the move record checked against the logs (with public keys).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub heads: Vec<HeadCheck>,
}

/// One side's signed head from the move record, checked against its log.
#[derive(Debug, Serialize)]
pub struct HeadCheck {
    /// `source` or `destination`.
    pub side: mailferry_audit::LogSide,
    /// When it was signed.
    pub time: String,
    /// Records it covers.
    pub seq: u64,
    /// Records in the log now.
    pub records: u64,
    /// Records appended since it was signed.
    pub unsigned_records: u64,
}

/// Checks the latest `side` head that the move record of `state` (`reports.jsonl`)
/// carries against the log at `log`, with the public key in `key_file`. That head was
/// handed out with the pass, outside the log's directory, so a log cut together with a
/// head file rolled back to an older signed head still fails here.
pub fn verify_recorded_head(
    state: &Path,
    side: mailferry_audit::LogSide,
    log: &Path,
    key_file: &Path,
) -> Result<HeadCheck, AppError> {
    let key = mailferry_audit::PublicKey::read(key_file).map_err(|e| {
        AppError::Usage(format!(
            "{e}; give the file written by `mailferry audit public-key`"
        ))
    })?;
    let path = state.join("reports.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| AppError::io(&path, e))?;
    let head = text
        .lines()
        .filter_map(|l| serde_json::from_str::<mailferry_core::report::MoveReport>(l).ok())
        .filter_map(|r| match side {
            mailferry_audit::LogSide::Source => r.receipt.source_head,
            mailferry_audit::LogSide::Destination => r.receipt.destination_head,
        })
        .next_back()
        .ok_or_else(|| {
            AppError::Failed(format!(
                "the move record {} holds no signed {} head (passes run before heads were \
                 signed, or, for the destination, a remote store: check it there with \
                 `audit verify --public-key`)",
                path.display(),
                side.as_str()
            ))
        })?;
    let out = mailferry_audit::verify_signed(log, &head, &key).map_err(|e| {
        AppError::Failed(format!(
            "{} audit log against the move record's signed head: {e}",
            side.as_str()
        ))
    })?;
    Ok(HeadCheck {
        side,
        time: head.time,
        seq: head.seq,
        records: out.chain.records,
        unsigned_records: out.unsigned_records,
    })
}

/// Recomputes the receipt from the volume and compares it with the source's last one.
pub fn verify_receipt(state: &Path, volume: &Volume) -> Result<ReceiptCheck, AppError> {
    let id = identity(state)?;
    let src_log = state.join(AUDIT_FILE);
    mailferry_audit::verify(&src_log)
        .map_err(|e| AppError::Failed(format!("source audit log: {e}")))?;
    let source_root = read_records(&src_log)
        .map_err(|e| AppError::Failed(e.to_string()))?
        .into_iter()
        .rev()
        .find(|e| e.event == "pass.finished")
        .and_then(|e| {
            e.data
                .get("receipt_root")
                .and_then(|v| v.as_str())
                .map(String::from)
        })
        .ok_or_else(|| {
            AppError::Failed("the source log has no finished pass with a receipt yet".into())
        })?;
    let (destination_root, destination_items) = volume.receipt_root(&id.mailbox)?;
    Ok(ReceiptCheck {
        heads: Vec::new(),
        matches: source_root == destination_root,
        source_root,
        destination_root,
        destination_items,
    })
}

#[cfg(test)]
mod tests;
