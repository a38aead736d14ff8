//! Reconciliation of mirror passes: deletions and flag changes on both sides.

use super::*;
use mailferry_agent::state::MoveIdentity;
use mailferry_audit::AuditLog;
use mailferry_core::frame::MessageHeader;
use mailferry_core::profile::{CommitSettings, StoreSettings};
use mailferry_core::{Flags, FolderName, MailboxAddr, MoveId, SourceId};
use serde_json::json;

const MB: &str = "ann@example.org";

fn store(v: &Volume, seq: u64, sid: &str, body: &[u8]) {
    let mut s = v
        .session(&MailboxAddr::parse(MB).unwrap(), &CommitSettings::default())
        .unwrap();
    s.begin(MessageHeader {
        seq,
        folder: FolderName::inbox(),
        source_id: SourceId::parse(sid).unwrap(),
        flags: Flags::from_maildir("S").unwrap(),
        internal_date: 1_700_000_000,
        size: body.len() as u64,
    })
    .unwrap();
    s.write(body).unwrap();
    let sha: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, body)
        .as_ref()
        .try_into()
        .unwrap();
    s.finish(sha).unwrap();
    s.commit().unwrap();
}

fn source_record(log: &mut AuditLog, event: &str, sid: &str, body: &[u8], flags: &str) {
    log.append(
        "agent:test@host",
        event,
        json!({
            "folder": "INBOX",
            "source_id": sid,
            "sha256": mailferry_core::sha256_hex(body),
            "size": body.len(),
            "flags": flags,
        }),
    )
    .unwrap();
    log.sync().unwrap();
}

#[test]
fn deletions_and_flag_changes_reconcile_and_disagreements_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, key) = (tmp.path().join("vol"), tmp.path().join("k"));
    Volume::init(&dir, &key).unwrap();
    let v = Volume::open(&dir, &key, &StoreSettings::default()).unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let id = MoveIdentity {
        move_id: MoveId([3; 16]),
        mailbox: MailboxAddr::parse(MB).unwrap(),
        source: "maildir:/src".into(),
        created_at: "2026-01-01T00:00:00Z".into(),
    };
    std::fs::write(state.join("move.json"), serde_json::to_vec(&id).unwrap()).unwrap();
    let mut log = AuditLog::open(state.join(AUDIT_FILE)).unwrap();
    let (a, b, c) = (
        b"body a".as_slice(),
        b"body b".as_slice(),
        b"body c".as_slice(),
    );

    // Pass 1 stores three messages; pass 2 mirrors: b deleted, c flagged.
    for (i, (sid, body)) in [("a", a), ("b", b), ("c", c)].into_iter().enumerate() {
        store(&v, i as u64 + 1, sid, body);
        source_record(&mut log, "message.stored", sid, body, "S");
    }
    let mut s = v
        .session(&MailboxAddr::parse(MB).unwrap(), &CommitSettings::default())
        .unwrap();
    s.delete(1, FolderName::inbox(), SourceId::parse("b").unwrap())
        .unwrap();
    s.set_flags(
        2,
        FolderName::inbox(),
        SourceId::parse("c").unwrap(),
        Flags::from_maildir("FS").unwrap(),
    )
    .unwrap();
    s.commit().unwrap();
    drop(s);
    source_record(&mut log, "message.deleted", "b", b, "S");
    source_record(&mut log, "message.flags", "c", c, "FS");

    let r = reconcile(&state, &v).unwrap();
    assert!(r.agrees(), "{r:?}");
    assert_eq!((r.agreeing, r.deleted, r.source_items), (2, 1, 2), "{r:?}");
    assert!(r.removed_from_volume.is_empty(), "{r:?}");
    assert_eq!(check_volume_records(&v).unwrap(), Vec::<String>::new());

    // The source goes on: a deleted and c's flags changed again, but the volume never
    // heard of it.
    source_record(&mut log, "message.deleted", "a", a, "S");
    source_record(&mut log, "message.flags", "c", c, "R");
    let r = reconcile(&state, &v).unwrap();
    assert!(!r.agrees());
    assert_eq!(r.not_deleted, vec!["INBOX/a".to_string()], "{r:?}");
    assert!(r.extra.is_empty(), "{r:?}");
    assert_eq!(r.altered.len(), 1, "{r:?}");
    assert_eq!(r.altered[0].item, "INBOX/c");
    assert!(r.altered[0].reason.contains("flags differ"), "{r:?}");
}

#[test]
fn discrepancies_name_every_kind_including_not_deleted() {
    let rc = Reconciliation {
        missing: vec!["a".into()],
        unlogged: vec!["b".into(), "c".into()],
        not_deleted: vec!["d".into()],
        ..Default::default()
    };
    assert!(!rc.agrees());
    assert_eq!(
        rc.discrepancies(),
        "1 missing, 0 extra, 0 altered, 0 duplicated, 0 removed from the volume, 2 unlogged, 1 not deleted"
    );
}
