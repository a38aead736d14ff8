//! Recovery from `audit.mark`: only the records after the mark are read, and anything
//! missing there still sends recovery through the full comparison.

use super::*;
use crate::volume::tests::{addr, body, fixture, open, put};
use mailferry_core::profile::CommitSettings;
use mailferry_core::{FolderName, SourceId};

fn recovered(dir: &Path) -> Vec<String> {
    mailferry_audit::read_records(dir.join(AUDIT_FILE))
        .unwrap()
        .into_iter()
        .filter(|e| e.data.get("recovered").is_some())
        .map(|e| e.event)
        .collect()
}

fn mark_of(dir: &Path) -> RecoveryMark {
    serde_json::from_slice(&std::fs::read(dir.join(MARK_FILE)).unwrap()).unwrap()
}

fn store_three_delete_one(v: &crate::Volume) {
    let mb = addr("mark@example.org");
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    put(&mut s, 1, "INBOX", "a", &body(100, 1)).unwrap();
    put(&mut s, 2, "INBOX", "b", &body(200, 2)).unwrap();
    put(&mut s, 3, "Sent", "c", &body(300, 3)).unwrap();
    s.commit().unwrap();
    s.delete(
        4,
        FolderName::parse("INBOX").unwrap(),
        SourceId::parse("a").unwrap(),
    )
    .unwrap();
    s.commit().unwrap();
}

#[test]
fn a_clean_reopen_reads_only_the_records_after_the_mark_and_adds_none() {
    let f = fixture();
    let v = open(&f);
    assert!(f.dir.join(MARK_FILE).exists(), "every open leaves a mark");
    store_three_delete_one(&v);
    drop(v);
    let before = mark_of(&f.dir);
    let v = open(&f);
    assert!(v.inner.audit.resumed.is_some(), "the mark fitted the log");
    assert!(recovered(&f.dir).is_empty());
    let after = mark_of(&f.dir);
    assert!(after.mark.seq > before.mark.seq);
    assert_eq!(after.deletions, 1);
    drop(v);
    mailferry_audit::verify(f.dir.join(AUDIT_FILE)).unwrap();
}

#[test]
fn records_lost_after_the_mark_are_recovered_by_the_full_comparison() {
    let f = fixture();
    let v = open(&f);
    store_three_delete_one(&v);
    drop(v);
    // A crash after the index commits but before any of their records were synced: the
    // log ends exactly at the mark, which still fits.
    let m = mark_of(&f.dir);
    let log = std::fs::OpenOptions::new()
        .write(true)
        .open(f.dir.join(AUDIT_FILE))
        .unwrap();
    log.set_len(m.mark.end).unwrap();
    drop(log);
    let v = open(&f);
    assert!(v.inner.audit.resumed.is_some());
    let mut got = recovered(&f.dir);
    got.sort();
    // `a` was stored and deleted: its row is gone, its deletion is recorded.
    assert_eq!(got, ["message.deleted", "message.stored", "message.stored"]);
    drop(v);
    mailferry_audit::verify(f.dir.join(AUDIT_FILE)).unwrap();
    // Once only.
    drop(open(&f));
    assert_eq!(recovered(&f.dir).len(), 3);
}

#[test]
fn a_damaged_or_foreign_mark_is_ignored() {
    let f = fixture();
    let v = open(&f);
    store_three_delete_one(&v);
    drop(v);
    let good = std::fs::read(f.dir.join(MARK_FILE)).unwrap();
    let mut wrong_head = mark_of(&f.dir);
    wrong_head.mark.head = "11".repeat(32);
    for bytes in [
        b"{\"format\":".to_vec(),
        String::from_utf8(good.clone())
            .unwrap()
            .replace(MARK_FORMAT, "mailferry-volume-audit-mark/9")
            .into_bytes(),
        serde_json::to_vec(&wrong_head).unwrap(),
    ] {
        std::fs::write(f.dir.join(MARK_FILE), &bytes).unwrap();
        let v = open(&f);
        assert!(v.inner.audit.resumed.is_none());
        assert!(recovered(&f.dir).is_empty());
        drop(v);
        // The open wrote a good mark again.
        assert_eq!(mark_of(&f.dir).format, MARK_FORMAT);
    }
}

/// The volume signs its head with the key derived from the VMK: the head file covers the
/// whole log when the volume closes, the key is the same at every open, and a log cut
/// afterwards leaves the head file as it was (the evidence) and fails against it.
#[test]
fn the_head_is_signed_with_the_volume_key_and_a_cut_keeps_the_evidence() {
    let f = fixture();
    let v = open(&f);
    let key = v.audit_public_key();
    store_three_delete_one(&v);
    let at_event = v.sign_audit_head().unwrap().unwrap();
    drop(v);
    let log = f.dir.join(AUDIT_FILE);
    let head_file = f.dir.join(mailferry_audit::head::HEAD_FILE);
    let head = mailferry_audit::head::read_head(&head_file).unwrap();
    assert_eq!(head.side, mailferry_audit::LogSide::Destination);
    assert!(head.seq >= at_event.seq);
    let out = mailferry_audit::verify_signed(&log, &head, &key).unwrap();
    assert_eq!(out.unsigned_records, 0, "closing signs what was appended");

    let v = open(&f);
    assert_eq!(
        v.audit_public_key(),
        key,
        "derived from the VMK, not random"
    );
    drop(v);

    // Cut the last record: reopening does not sign over the evidence.
    let head = mailferry_audit::head::read_head(&head_file).unwrap();
    let bytes = std::fs::read(&log).unwrap();
    let keep = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    std::fs::write(&log, &bytes[..keep]).unwrap();
    let e = mailferry_audit::verify_signed(&log, &head, &key).unwrap_err();
    assert!(e.to_string().contains("records cut off the end"), "{e}");
    let v = open(&f);
    assert_eq!(v.sign_audit_head().unwrap(), None, "signing stopped");
    drop(v);
    assert_eq!(
        mailferry_audit::head::read_head(&head_file).unwrap(),
        head,
        "the head file is kept"
    );
    // The open put the cut deletion record back (`recovered`): a record that is not the
    // one signed, still found.
    let e = mailferry_audit::verify_signed(&log, &head, &key).unwrap_err();
    assert!(
        matches!(e, mailferry_audit::AuditError::SignedRecordDiffers { .. }),
        "{e}"
    );
}

/// docs/vectors/audit/fenced-session.jsonl (made by an independent Python script) is
/// what the store's own record builders write for a fenced session: `session.opened`,
/// `message.stored` / `message.flags` / `message.deleted` with `fence`, `session.fenced`.
#[test]
fn the_fenced_session_vector_is_what_the_store_writes() {
    use std::time::{Duration, SystemTime};
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors/audit");
    let expected = std::fs::read_to_string(vectors.join("fenced-session.jsonl")).unwrap();
    let head = std::fs::read_to_string(vectors.join("fenced-session.head")).unwrap();
    let names = Pseudonymizer::new(&[0x42; 32]);
    let mailbox = names.pseudonym("mailbox", "alice@example.com");
    let item = AuditItem {
        message_id: 1,
        mailbox: mailbox.clone(),
        item: names.pseudonym("item", "INBOX/1"),
        sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, b"Hello, world")),
        size: 12,
    };
    let flags = names.pseudonym("flags", "INBOX/1\0S");
    let records = [
        (
            "session.opened",
            opened_data(&mailbox, "00112233445566778899aabbccddeeff", 7),
        ),
        change_record(&Change::Stored(item.clone()), Some(7)),
        change_record(&Change::Flags(item.clone(), flags), Some(7)),
        change_record(&Change::Deleted(item.clone()), Some(7)),
        (
            "session.fenced",
            fenced_data(&mailbox, 7, 8, FencedAt::Commit),
        ),
    ];

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.jsonl");
    let genesis = expected.lines().next().unwrap();
    std::fs::write(&path, format!("{genesis}\n")).unwrap();
    let mut log = AuditLog::open(&path).unwrap();
    let noon = SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_564_800);
    for (i, (event, data)) in records.into_iter().enumerate() {
        let t = noon + Duration::from_secs(i as u64 + 1);
        log.append_at(t, "store@vector", event, data).unwrap();
    }
    log.sync().unwrap();
    assert_eq!(log.head(), head.trim());
    drop(log);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), expected);
    // Without a fence, a change's record is exactly what it was before fencing.
    let (_, plain) = change_record(&Change::Stored(item), None);
    assert!(plain.get("fence").is_none());
    mailferry_audit::verify_with_head(&path, &head).unwrap();
}
