//! Mirror passes at the store: DELETE and FLAGS inside group commits.

use crate::audit_trail::AUDIT_FILE;
use crate::volume::tests::{addr, body, check_no_markers, fixture, open, put, read_all};
use crate::{StoreError, Volume, INDEX_FILE};
use mailferry_core::frame::AckStatus;
use mailferry_core::profile::CommitSettings;
use mailferry_core::{Flags, FolderName, MailboxAddr, SourceId};

fn folder(s: &str) -> FolderName {
    FolderName::parse(s).unwrap()
}

fn sid(s: &str) -> SourceId {
    SourceId::parse(s).unwrap()
}

fn flags(s: &str) -> Flags {
    Flags::from_maildir(s).unwrap()
}

/// `(folder/source-id, flags, body)` of every live message, in store order.
fn live(v: &Volume, mb: &MailboxAddr) -> Vec<(String, String, Vec<u8>)> {
    v.list_messages(mb)
        .unwrap()
        .into_iter()
        .map(|m| {
            let m = m.unwrap();
            (
                format!("{}/{}", m.meta.folder, m.meta.source_id),
                m.meta.flags.as_str().to_string(),
                read_all(v, &m),
            )
        })
        .collect()
}

fn events(v: &Volume, event: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    mailferry_audit::read_records(v.dir().join(AUDIT_FILE))
        .unwrap()
        .into_iter()
        .filter(|e| e.event == event)
        .map(|e| e.data)
        .collect()
}

/// Stores three messages: INBOX/a, INBOX/b, Sent/c.
fn three(v: &Volume, mb: &MailboxAddr) {
    let mut s = v.session(mb, &CommitSettings::default()).unwrap();
    put(&mut s, 1, "INBOX", "a", &body(100, 1)).unwrap();
    put(&mut s, 2, "INBOX", "b", &body(70_000, 2)).unwrap();
    put(&mut s, 3, "Sent", "c", &body(300, 3)).unwrap();
    assert_eq!(s.commit().unwrap().len(), 3);
}

#[test]
fn delete_removes_the_message_from_listing_export_verify_and_receipt() {
    let f = fixture();
    let mb = addr("mira@example.org");
    let mut v = open(&f);
    three(&v, &mb);
    let (_, before) = v.receipt_root(&mb).unwrap();
    assert_eq!(before, 3);

    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    s.delete(1, folder("INBOX"), sid("b")).unwrap();
    assert_eq!(s.pending_count(), 1);
    assert_eq!(s.commit().unwrap(), vec![(1, AckStatus::Applied)]);
    drop(s);

    let got = live(&v, &mb);
    assert_eq!(
        got.iter().map(|(i, _, _)| i.as_str()).collect::<Vec<_>>(),
        ["INBOX/a", "Sent/c"]
    );
    assert_eq!(got[0].2, body(100, 1));
    let report = v.verify().unwrap();
    assert!(report.damaged.is_empty(), "{report:?}");
    assert_eq!(report.messages_checked, 2);
    // The receipt covers exactly the live messages.
    let a = mailferry_core::sha256_hex(&body(100, 1));
    let c = mailferry_core::sha256_hex(&body(300, 3));
    let expected =
        mailferry_audit::merkle::receipt_root([("INBOX/a", a.as_str()), ("Sent/c", c.as_str())]);
    assert_eq!(v.receipt_root(&mb).unwrap(), (expected, 2));

    // Recorded, not silently dropped: the same pseudonyms as the stored record.
    let stored = events(&v, "message.stored");
    let deleted = events(&v, "message.deleted");
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    let b_stored = stored
        .iter()
        .find(|d| d["item"] == v.pseudonym_of_item("INBOX/b").as_str())
        .unwrap();
    for k in ["message", "mailbox", "item", "sha256", "size"] {
        assert_eq!(deleted[0][k], b_stored[k], "{k}");
    }

    // `compact` reclaims the deleted record's bytes; what is left still verifies.
    let out = v.compact().unwrap();
    assert!(
        out.bytes_after + 70_000 <= out.bytes_before,
        "{out:?} did not reclaim the deleted 70 kB message"
    );
    assert!(v.verify().unwrap().damaged.is_empty());
    assert_eq!(live(&v, &mb).len(), 2);
}

#[test]
fn one_delete_removes_every_copy_of_the_folder_and_source_id() {
    let f = fixture();
    let mb = addr("copies@example.org");
    let v = open(&f);
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    // Same folder and source id, different content: two messages.
    put(&mut s, 1, "INBOX", "x", &body(10, 1)).unwrap();
    put(&mut s, 2, "INBOX", "x", &body(10, 2)).unwrap();
    put(&mut s, 3, "Other", "x", &body(10, 3)).unwrap();
    s.commit().unwrap();
    s.delete(4, folder("INBOX"), sid("x")).unwrap();
    assert_eq!(s.commit().unwrap(), vec![(4, AckStatus::Applied)]);
    let got = live(&v, &mb);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "Other/x");
    assert_eq!(events(&v, "message.deleted").len(), 2);
}

#[test]
fn unknown_folder_or_source_id_is_not_found_and_changes_nothing() {
    let f = fixture();
    let mb = addr("nf@example.org");
    let v = open(&f);
    three(&v, &mb);
    let before = live(&v, &mb);
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    s.delete(1, folder("INBOX"), sid("zz")).unwrap();
    s.delete(2, folder("Sent"), sid("a")).unwrap(); // a is in INBOX, not Sent
    s.set_flags(3, folder("INBOX"), sid("zz"), flags("S"))
        .unwrap();
    assert_eq!(
        s.commit().unwrap(),
        vec![
            (1, AckStatus::NotFound),
            (2, AckStatus::NotFound),
            (3, AckStatus::NotFound)
        ]
    );
    assert_eq!(live(&v, &mb), before);
    assert!(events(&v, "message.deleted").is_empty());
    assert!(events(&v, "message.flags").is_empty());
}

#[test]
fn set_flags_round_trips_and_survives_reopen() {
    let f = fixture();
    let mb = addr("flags@example.org");
    {
        let v = open(&f);
        three(&v, &mb);
        let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
        s.set_flags(1, folder("Sent"), sid("c"), flags("FS"))
            .unwrap();
        s.set_flags(2, folder("INBOX"), sid("a"), flags(""))
            .unwrap();
        assert_eq!(
            s.commit().unwrap(),
            vec![(1, AckStatus::Applied), (2, AckStatus::Applied)]
        );
        // The new metadata was sealed with a fresh random nonce, never the zero nonce
        // of the first seal under the same key.
        let rows = v.inner.index().unwrap().messages(None).unwrap();
        for r in rows.iter().filter(|r| r.id != rows[1].id) {
            assert_ne!(r.meta_enc[..12], [0u8; 12], "message {}", r.id);
        }
        assert_eq!(rows[1].meta_enc[..12], [0u8; 12]);
    }
    let v = open(&f);
    let got = live(&v, &mb);
    assert_eq!(
        got.iter()
            .map(|(i, fl, _)| (i.as_str(), fl.as_str()))
            .collect::<Vec<_>>(),
        [("INBOX/a", ""), ("INBOX/b", "RS"), ("Sent/c", "FS")]
    );
    assert_eq!(got[2].2, body(300, 3), "the body is untouched");
    assert!(v.verify().unwrap().damaged.is_empty());
    let recs = events(&v, "message.flags");
    assert_eq!(recs.len(), 2);
    let item = "Sent/c";
    assert_eq!(recs[0]["item"], v.pseudonym_of_item(item).as_str());
    assert_eq!(
        recs[0]["flags"],
        v.inner.audit.flags_pseudonym(item, "FS").as_str()
    );
    assert_eq!(
        recs[0]["sha256"],
        mailferry_core::sha256_hex(&body(300, 3)).as_str()
    );
}

#[test]
fn changes_apply_in_seq_order_with_the_messages_of_their_batch() {
    let f = fixture();
    let mb = addr("order@example.org");
    let v = open(&f);
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    put(&mut s, 1, "INBOX", "y", &body(50, 9)).unwrap();
    s.commit().unwrap();
    // One batch: a new message then its flag change; a delete of a committed message
    // then the same message again; a message then its deletion.
    put(&mut s, 2, "INBOX", "x", &body(40, 1)).unwrap();
    s.set_flags(3, folder("INBOX"), sid("x"), flags("F"))
        .unwrap();
    s.delete(4, folder("INBOX"), sid("y")).unwrap();
    put(&mut s, 5, "INBOX", "y", &body(50, 9)).unwrap();
    put(&mut s, 6, "INBOX", "z", &body(60, 2)).unwrap();
    s.delete(7, folder("INBOX"), sid("z")).unwrap();
    put(&mut s, 8, "INBOX", "z", &body(60, 2)).unwrap();
    s.delete(9, folder("INBOX"), sid("z")).unwrap();
    assert_eq!(
        s.commit().unwrap(),
        vec![
            (2, AckStatus::Stored),
            (3, AckStatus::Applied),
            (4, AckStatus::Applied),
            (5, AckStatus::Stored),
            (6, AckStatus::Stored),
            (7, AckStatus::Applied),
            (8, AckStatus::Stored),
            (9, AckStatus::Applied),
        ]
    );
    let got = live(&v, &mb);
    assert_eq!(
        got.iter()
            .map(|(i, fl, _)| (i.as_str(), fl.as_str()))
            .collect::<Vec<_>>(),
        [("INBOX/x", "F"), ("INBOX/y", "RS")]
    );
    // The log tells the story in the same order.
    let log: Vec<String> = mailferry_audit::read_records(v.dir().join(AUDIT_FILE))
        .unwrap()
        .into_iter()
        .filter(|e| e.event.starts_with("message."))
        .map(|e| e.event)
        .collect();
    assert_eq!(
        log,
        [
            "message.stored",
            "message.stored",
            "message.flags",
            "message.deleted",
            "message.stored",
            "message.stored",
            "message.deleted",
            "message.stored",
            "message.deleted",
        ]
    );
}

#[test]
fn a_delete_pending_in_an_earlier_job_does_not_make_the_next_message_a_duplicate() {
    let f = fixture();
    let mb = addr("pipe@example.org");
    let v = open(&f);
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    put(&mut s, 1, "INBOX", "p", &body(30, 5)).unwrap();
    s.commit().unwrap();
    s.delete(2, folder("INBOX"), sid("p")).unwrap();
    let job1 = s.start_commit().unwrap();
    // Pipelined: the DELETE is not committed yet when the same message comes again.
    put(&mut s, 3, "INBOX", "p", &body(30, 5)).unwrap();
    let job2 = s.start_commit().unwrap();
    assert_eq!(job1.run().unwrap(), vec![(2, AckStatus::Applied)]);
    assert_eq!(job2.run().unwrap(), vec![(3, AckStatus::Stored)]);
    assert_eq!(live(&v, &mb).len(), 1);
    assert!(v.verify().unwrap().damaged.is_empty());
}

#[test]
fn delete_and_flags_are_refused_inside_an_open_message() {
    let f = fixture();
    let mb = addr("misuse@example.org");
    let v = open(&f);
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    s.begin(crate::volume::tests::start(1, "INBOX", "a", 10))
        .unwrap();
    let e = s.delete(2, folder("INBOX"), sid("a")).unwrap_err();
    assert!(matches!(e, StoreError::SessionMisuse { .. }), "{e}");
    let e = s
        .set_flags(3, folder("INBOX"), sid("a"), flags("S"))
        .unwrap_err();
    assert!(e.to_string().contains("still open"), "{e}");
}

#[test]
fn flags_of_a_message_with_unreadable_metadata_are_refused_the_rest_commits() {
    let f = fixture();
    let mb = addr("broken@example.org");
    let v = open(&f);
    three(&v, &mb);
    {
        let ix = v.inner.index().unwrap();
        let rows = ix.messages(None).unwrap();
        let mut bad = rows[0].meta_enc.clone();
        bad[20] ^= 1;
        ix.update_meta(rows[0].id, &bad).unwrap();
    }
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    s.set_flags(1, folder("INBOX"), sid("a"), flags("T"))
        .unwrap();
    s.set_flags(2, folder("INBOX"), sid("b"), flags("T"))
        .unwrap();
    let out = s.commit_outcome().unwrap();
    assert_eq!(out.acks, vec![(2, AckStatus::Applied)]);
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[0].0, 1);
    assert!(
        out.rejected[0].1.contains("unreadable metadata"),
        "{:?}",
        out.rejected
    );
    // A DELETE still removes it (the source deleted it; damage does not keep it).
    s.delete(3, folder("INBOX"), sid("a")).unwrap();
    assert_eq!(s.commit().unwrap(), vec![(3, AckStatus::Applied)]);
    assert!(v.verify().unwrap().damaged.is_empty());
}

#[test]
fn an_uncommitted_delete_is_not_visible_after_reopen_and_ids_are_never_reused() {
    let f = fixture();
    let mb = addr("crash@example.org");
    let max_id = {
        let v = open(&f);
        three(&v, &mb);
        let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
        s.delete(1, folder("INBOX"), sid("a")).unwrap();
        s.set_flags(2, folder("INBOX"), sid("b"), flags("T"))
            .unwrap();
        // The process dies before the commit: the session and volume just go away.
        drop(s);
        v.list_messages(&mb)
            .unwrap()
            .into_iter()
            .map(|m| m.unwrap().id)
            .max()
            .unwrap()
    };
    let v = open(&f);
    let got = live(&v, &mb);
    assert_eq!(got.len(), 3);
    assert_eq!(got[1].1, "RS");
    assert!(events(&v, "message.deleted").is_empty());
    // Delete the newest message; the next one stored gets a new id all the same.
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    s.delete(3, folder("Sent"), sid("c")).unwrap();
    s.commit().unwrap();
    drop(s);
    drop(v);
    let v = open(&f);
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    put(&mut s, 4, "INBOX", "d", &body(20, 4)).unwrap();
    s.commit().unwrap();
    let ids: Vec<u64> = v
        .list_messages(&mb)
        .unwrap()
        .into_iter()
        .map(|m| m.unwrap().id)
        .collect();
    assert!(*ids.last().unwrap() > max_id, "{ids:?} reuses {max_id}");
}

#[test]
fn a_deletion_committed_without_its_audit_record_is_recorded_at_open() {
    let f = fixture();
    let mb = addr("rec@example.org");
    {
        let v = open(&f);
        three(&v, &mb);
        let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
        s.delete(1, folder("INBOX"), sid("b")).unwrap();
        s.commit().unwrap();
    }
    // A crash between the transaction and the log sync: the last record is lost.
    let log = f.dir.join(AUDIT_FILE);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.last().unwrap().contains("message.deleted"));
    std::fs::write(&log, lines[..lines.len() - 1].join("\n") + "\n").unwrap();
    let v = open(&f);
    let deleted = events(&v, "message.deleted");
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["recovered"], true);
    assert_eq!(deleted[0]["item"], v.pseudonym_of_item("INBOX/b").as_str());
    mailferry_audit::verify(&log).unwrap();
    drop(v);
    // Once only.
    let v = open(&f);
    assert_eq!(events(&v, "message.deleted").len(), 1);
}

#[test]
fn a_schema_3_index_gets_its_locators_at_open() {
    let f = fixture();
    let mb = addr("old@example.org");
    three(&open(&f), &mb);
    // What the previous build wrote: no locator column, no deleted ids, schema 3.
    {
        let c = rusqlite::Connection::open(f.dir.join(INDEX_FILE)).unwrap();
        c.execute_batch(
            "DROP TABLE tenant_keys; ALTER TABLE messages DROP COLUMN digest; \
             ALTER TABLE messages DROP COLUMN leaf_enc; ALTER TABLE messages DROP COLUMN flags_enc; \
             DROP INDEX messages_locator; ALTER TABLE messages DROP COLUMN locator; \
             DROP TABLE deleted_messages; \
             UPDATE volume SET v = X'0000000000000003' WHERE k = 'schema';",
        )
        .unwrap();
    }
    let v = open(&f);
    let rows = v.inner.index().unwrap().messages(None).unwrap();
    assert!(rows.iter().all(|r| r.locator.is_some()));
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    s.delete(1, folder("INBOX"), sid("a")).unwrap();
    s.set_flags(2, folder("Sent"), sid("c"), flags("P"))
        .unwrap();
    assert_eq!(
        s.commit().unwrap(),
        vec![(1, AckStatus::Applied), (2, AckStatus::Applied)]
    );
    assert_eq!(live(&v, &mb).len(), 2);
}

#[test]
fn locators_follow_key_rotation_and_re_encryption() {
    let f = fixture();
    let mb = addr("rot@example.org");
    let mut v = open(&f);
    three(&v, &mb);
    // Rotated without re-encryption: generation 1 still finds the old messages.
    v.rotate_mailbox(&mb).unwrap();
    {
        let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
        put(&mut s, 1, "INBOX", "new", &body(10, 7)).unwrap();
        s.set_flags(2, folder("INBOX"), sid("a"), flags("D"))
            .unwrap();
        s.commit().unwrap();
    }
    // Re-encrypted: earlier generations dropped, every locator re-keyed.
    v.rotate_mailbox_reencrypt(&mb).unwrap();
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    s.delete(3, folder("INBOX"), sid("new")).unwrap();
    s.set_flags(4, folder("INBOX"), sid("a"), flags("DS"))
        .unwrap();
    assert_eq!(
        s.commit().unwrap(),
        vec![(3, AckStatus::Applied), (4, AckStatus::Applied)]
    );
    let got = live(&v, &mb);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], ("INBOX/a".into(), "DS".into(), body(100, 1)));
    assert!(v.verify().unwrap().damaged.is_empty());
}

#[test]
fn mirror_changes_leave_no_plaintext_after_close_either() {
    let f = fixture();
    let markers: [&[u8]; 2] = [b"MirrorFolderKq4", b"MirrorSourceIdPw8"];
    {
        let v = open(&f);
        let mb = addr("m@example.org");
        let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
        for i in 0..4u64 {
            put(
                &mut s,
                i,
                "MirrorFolderKq4",
                &format!("MirrorSourceIdPw8-{i}"),
                &body(100, i as u8),
            )
            .unwrap();
        }
        s.commit().unwrap();
        s.delete(10, folder("MirrorFolderKq4"), sid("MirrorSourceIdPw8-0"))
            .unwrap();
        s.set_flags(
            11,
            folder("MirrorFolderKq4"),
            sid("MirrorSourceIdPw8-1"),
            flags("S"),
        )
        .unwrap();
        s.commit().unwrap();
        check_no_markers(&f.dir, &markers, true);
    }
    check_no_markers(&f.dir, &markers, false);
}

#[test]
fn a_dedup_lookup_does_not_wait_for_the_index_lock() {
    let f = fixture();
    let mb = addr("reader@example.org");
    let v = open(&f);
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    put(&mut s, 1, "INBOX", "a", &body(100, 1)).unwrap();
    s.commit().unwrap();
    // A commit of another session holds the lock (and its transaction) meanwhile: the
    // lookup reads the last committed state on the session's own connection.
    let held = v.inner.index().unwrap();
    let tx = held.begin_batch().unwrap();
    assert_eq!(
        put(&mut s, 2, "INBOX", "a", &body(100, 1)).unwrap(),
        crate::Finished::Duplicate { seq: 2 }
    );
    assert_eq!(
        put(&mut s, 3, "INBOX", "b", &body(100, 1)).unwrap(),
        crate::Finished::Pending { seq: 3 }
    );
    drop(tx);
    drop(held);
    assert_eq!(
        s.commit().unwrap(),
        vec![(2, AckStatus::Duplicate), (3, AckStatus::Stored)]
    );
}

// === fencing (issue 20) ===

/// `fence` of every record that has one, for `mailbox` (a pseudonym), in log order.
fn fences_in_log(v: &Volume, pseudonym: &str) -> Vec<u64> {
    mailferry_audit::read_records(v.dir().join(AUDIT_FILE))
        .unwrap()
        .into_iter()
        .filter(|e| e.data.get("mailbox").and_then(|m| m.as_str()) == Some(pseudonym))
        .filter_map(|e| e.data.get("fence").and_then(|f| f.as_u64()))
        .collect()
}

fn fenced(v: &Volume, mb: &MailboxAddr, fence: u64) -> Result<crate::IngestSession, StoreError> {
    v.fenced_session(
        mb,
        &CommitSettings::default(),
        "00112233445566778899aabbccddeeff",
        fence,
    )
}

#[test]
fn the_fence_table_keeps_the_highest_number_and_writes_nothing_for_a_lower_one() {
    let f = fixture();
    let v = open(&f);
    let mb = addr("fence@example.org");
    three(&v, &mb);
    let id = v.inner.index().unwrap().mailboxes().unwrap()[0].0;
    let mut ix = v.inner.index().unwrap();
    assert_eq!(ix.fence(id).unwrap(), None);
    assert_eq!(ix.raise_fence(id, 5).unwrap(), None);
    assert_eq!(ix.fence(id).unwrap(), Some(5));
    assert_eq!(ix.raise_fence(id, 3).unwrap(), Some(5));
    assert_eq!(
        ix.fence(id).unwrap(),
        Some(5),
        "a lower number changes nothing"
    );
    assert_eq!(ix.raise_fence(id, 5).unwrap(), Some(5));
    assert_eq!(ix.raise_fence(id, u64::MAX).unwrap(), Some(5));
    assert_eq!(ix.fence(id).unwrap(), Some(u64::MAX), "u64 round-trips");
    drop(ix);
    // Durable: a reopened volume has it.
    let v = crate::volume::tests::open_again(v, &f);
    assert_eq!(v.fence_of(&mb).unwrap(), Some(u64::MAX));
    assert_eq!(v.fence_of(&addr("never@example.org")).unwrap(), None);
}

#[test]
fn an_open_with_a_lower_fence_is_refused_recorded_and_writes_nothing() {
    let f = fixture();
    let v = open(&f);
    let mb = addr("two@example.org");
    let mut s2 = fenced(&v, &mb, 2).unwrap();
    put(&mut s2, 1, "INBOX", "a", &body(100, 1)).unwrap();
    assert_eq!(s2.commit().unwrap(), vec![(1, AckStatus::Stored)]);
    drop(s2);

    let err = fenced(&v, &mb, 1).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Fenced {
                fence: 1,
                current: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "a newer lease (fencing number 2) owns mailbox two@example.org; this worker's lease \
         was taken over: stop, another worker is moving it"
    );
    assert_eq!(v.fence_of(&mb).unwrap(), Some(2));
    assert_eq!(live(&v, &mb).len(), 1);
    let p = v.pseudonym_of_mailbox(&mb);
    let refused = events(&v, "session.fenced");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["mailbox"], p.as_str());
    assert_eq!(refused[0]["fence"], 2);
    assert_eq!(refused[0]["stale_fence"], 1);
    assert_eq!(refused[0]["refused"], "open");
    let opened = events(&v, "session.opened");
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0]["fence"], 2);
    assert_eq!(opened[0]["move_id"], "00112233445566778899aabbccddeeff");
    let stored = events(&v, "message.stored");
    assert_eq!(stored[0]["fence"], 2);

    // The same number again is the same lease (a retry of its own session): accepted.
    let mut again = fenced(&v, &mb, 2).unwrap();
    put(&mut again, 1, "INBOX", "b", &body(10, 2)).unwrap();
    assert_eq!(again.commit().unwrap(), vec![(1, AckStatus::Stored)]);
    assert_eq!(fences_in_log(&v, &p), [2, 2, 2, 2, 2]);
}

#[test]
fn a_commit_after_a_newer_lease_opened_is_refused_inside_its_transaction() {
    let f = fixture();
    let v = open(&f);
    let mb = addr("race@example.org");
    let mut old = fenced(&v, &mb, 1).unwrap();
    put(&mut old, 1, "INBOX", "a", &body(100, 1)).unwrap();
    assert_eq!(old.commit().unwrap(), vec![(1, AckStatus::Stored)]);
    // The old worker's next batch is on its way (its bytes synced) when the new lease
    // takes the mailbox: the check is in the index step, not at start_commit.
    put(&mut old, 2, "INBOX", "b", &body(70_000, 2)).unwrap();
    put(&mut old, 3, "INBOX", "c", &body(10, 3)).unwrap();
    let synced = old.start_commit().unwrap().sync().unwrap();

    let mut new = fenced(&v, &mb, 2).unwrap();
    let err = synced.index().err().expect("refused");
    assert!(
        matches!(
            err,
            StoreError::Fenced {
                fence: 1,
                current: 2,
                ..
            }
        ),
        "{err:?}"
    );
    // A batch of duplicates only is refused too: nothing is acknowledged to it.
    put(&mut old, 4, "INBOX", "a", &body(100, 1)).unwrap();
    assert!(matches!(old.commit(), Err(StoreError::Fenced { .. })));
    drop(old);
    assert_eq!(
        live(&v, &mb)
            .iter()
            .map(|(i, _, _)| i.as_str())
            .collect::<Vec<_>>(),
        ["INBOX/a"],
        "nothing of the refused batch was inserted"
    );

    put(&mut new, 1, "INBOX", "b", &body(70_000, 2)).unwrap();
    assert_eq!(new.commit().unwrap(), vec![(1, AckStatus::Stored)]);
    drop(new);
    assert_eq!(live(&v, &mb).len(), 2);
    let refused = events(&v, "session.fenced");
    assert_eq!(refused.len(), 2);
    assert!(refused
        .iter()
        .all(|r| r["refused"] == "commit" && r["stale_fence"] == 1));
    // The property the scale-out test checks: per mailbox, fences never go down.
    let seen = fences_in_log(&v, &v.pseudonym_of_mailbox(&mb));
    assert_eq!(seen, [1, 1, 2, 2, 2, 2]);
    assert!(v.verify().unwrap().damaged.is_empty());
}

#[test]
fn a_raised_fence_stops_the_holder_and_an_unfenced_session_is_not_checked() {
    let f = fixture();
    let v = open(&f);
    let mb = addr("held@example.org");
    let mut old = fenced(&v, &mb, 3).unwrap();
    put(&mut old, 1, "INBOX", "a", &body(100, 1)).unwrap();
    // The 409 path: a newer lease asks while `old` holds the mailbox.
    v.raise_fence(&mb, 4).unwrap();
    assert!(matches!(
        old.commit(),
        Err(StoreError::Fenced {
            fence: 3,
            current: 4,
            ..
        })
    ));
    assert!(matches!(
        v.raise_fence(&mb, 2),
        Err(StoreError::Fenced {
            fence: 2,
            current: 4,
            ..
        })
    ));
    assert_eq!(v.fence_of(&mb).unwrap(), Some(4));
    // Without a fence nothing is checked or recorded, as before fencing existed.
    let mut plain = v.session(&mb, &CommitSettings::default()).unwrap();
    put(&mut plain, 1, "INBOX", "z", &body(5, 9)).unwrap();
    assert_eq!(plain.commit().unwrap(), vec![(1, AckStatus::Stored)]);
    let stored = events(&v, "message.stored");
    assert!(
        stored.iter().all(|s| s.get("fence").is_none()),
        "{stored:?}"
    );
}

#[test]
fn a_schema_5_index_upgrades_to_6_in_one_step_and_keeps_its_messages() {
    let f = fixture();
    let mb = addr("five@example.org");
    three(&open(&f), &mb);
    {
        let c = rusqlite::Connection::open(f.dir.join(INDEX_FILE)).unwrap();
        c.execute_batch(
            "DROP TABLE fences; UPDATE volume SET v = X'0000000000000005' WHERE k = 'schema';",
        )
        .unwrap();
    }
    let v = open(&f);
    let schema: Vec<u8> = v
        .inner
        .index()
        .unwrap()
        .conn_for_tests()
        .query_row("SELECT v FROM volume WHERE k = 'schema'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(schema, 6i64.to_be_bytes());
    assert_eq!(live(&v, &mb).len(), 3);
    assert_eq!(v.fence_of(&mb).unwrap(), None);
    let mut s = fenced(&v, &mb, 1).unwrap();
    put(&mut s, 1, "INBOX", "new", &body(10, 7)).unwrap();
    assert_eq!(s.commit().unwrap(), vec![(1, AckStatus::Stored)]);
    assert_eq!(v.fence_of(&mb).unwrap(), Some(1));
}
