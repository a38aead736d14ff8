use super::*;
use crate::chunk::TAG_LEN;
use crate::volume::tests::*;
use crate::{Finished, SEGMENTS_DIR};
use mailferry_core::profile::CommitSettings;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

fn row_id(v: &Volume, mb: &MailboxAddr) -> u64 {
    let mac = v.inner.keys.name_mac(b'm', mb.as_str());
    v.inner
        .index()
        .unwrap()
        .mailbox_by_mac(&mac)
        .unwrap()
        .unwrap()
        .id
}

fn key_ids(v: &Volume, mb: &MailboxAddr) -> Vec<u32> {
    let id = row_id(v, mb);
    let ix = v.inner.index().unwrap();
    ix.messages(Some(id))
        .unwrap()
        .iter()
        .map(|r| r.key_id)
        .collect()
}

fn current_key_id(v: &Volume, mb: &MailboxAddr) -> u32 {
    let mac = v.inner.keys.name_mac(b'm', mb.as_str());
    let ix = v.inner.index().unwrap();
    ix.mailbox_by_mac(&mac).unwrap().unwrap().key_id
}

/// Alice: three messages under generation 1, a 200 KB (4-chunk) and an empty one, then a
/// rotation and two more under generation 2. Bob (same tenant) is a bystander.
fn build(f: &Fixture) -> (MailboxAddr, MailboxAddr) {
    let (alice, bob) = (addr("alice@example.org"), addr("bob@example.org"));
    let v = open(f);
    fill(&v, &alice, 0, 3);
    {
        let mut s = v.session(&alice, &CommitSettings::default()).unwrap();
        put(&mut s, 10, "Archive", "big", &body(200_000, 5)).unwrap();
        put(&mut s, 11, "Archive", "empty", &[]).unwrap();
        s.commit().unwrap();
    }
    v.rotate_mailbox(&alice).unwrap();
    fill(&v, &alice, 20, 2);
    fill(&v, &bob, 0, 2);
    (alice, bob)
}

fn is_duplicate(v: &Volume, mb: &MailboxAddr) -> bool {
    // `fill` wrote "m0" with this body before any rotation.
    let mut s = v.session(mb, &CommitSettings::default()).unwrap();
    put(&mut s, 0, "INBOX", "m0", &body(1000, 0)).unwrap() == Finished::Duplicate { seq: 0 }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Opens chunk 0 of the record at `offset` of a (copied) segment with `mailbox_key`.
pub(crate) fn first_chunk_opens(
    seg: &Path,
    offset: u64,
    id: u64,
    mailbox_id: u64,
    mailbox_key: &Key,
    volume_id: [u8; 16],
) -> bool {
    let mut f = File::open(seg).unwrap();
    let mut hb = [0u8; crate::segment::REC_HEADER_LEN];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut hb).unwrap();
    let h = RecordHeader::parse(&hb).unwrap();
    let n = chunk::chunk_plain_len(h.plain_len, 0) + TAG_LEN;
    let mut buf = vec![0u8; n];
    f.read_exact(&mut buf).unwrap();
    let key = ChunkKey::new(&keys::message_key(mailbox_key, &h.salt));
    let ctx = ChunkContext {
        volume_id,
        mailbox_id,
        message_id: id,
    };
    chunk::open_chunk(&key, &ctx, 0, h.chunk_count == 1, &mut buf).is_ok()
}

#[test]
fn issue8_reencrypt_mailbox_exports_identical_and_old_key_material_no_longer_opens_old_records() {
    let f = fixture();
    let (alice, bob) = build(&f);
    let mut v = open(&f);
    let (expected_a, expected_b) = (read_mailbox(&v, &alice), read_mailbox(&v, &bob));
    assert_eq!(expected_a.len(), 7);
    assert_eq!(key_ids(&v, &alice), vec![1, 1, 1, 1, 1, 2, 2]);
    let a_id = row_id(&v, &alice);
    // A copy of the segments as they are now (an old backup), the rows pointing into
    // it, and the old generations (only to show the copy really held readable records).
    let old_segs = f._tmp.path().join("old-segments");
    copy_dir(&f.dir.join(SEGMENTS_DIR), &old_segs);
    let old_rows = v.inner.index().unwrap().messages(Some(a_id)).unwrap();
    let old_keys: HashMap<u32, Key> = [1, 2]
        .into_iter()
        .map(|k| (k, v.inner.key_for(a_id, k, &alice).unwrap()))
        .collect();
    let bytes_before: u64 = segment_files(&f.dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();

    let out = v.rotate_mailbox_reencrypt(&alice).unwrap();
    assert!(!out.resumed && !out.tenant_rotated);
    assert_eq!(out.mailboxes, vec![(alice.clone(), 3)]);
    assert_eq!(out.messages_reencrypted, 7);
    assert_eq!(out.keys_dropped, 2);
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    assert!(
        out.compaction.segments_rewritten >= 1,
        "{:?}",
        out.compaction
    );

    // Every message reads back byte-identical; verify is clean; key ids are recorded.
    assert_eq!(read_mailbox(&v, &alice), expected_a);
    assert_eq!(read_mailbox(&v, &bob), expected_b);
    let rep = v.verify().unwrap();
    assert!(rep.damaged.is_empty(), "{:?}", rep.damaged);
    assert_eq!(rep.messages_checked, 9);
    assert_eq!(key_ids(&v, &alice), vec![3; 7]);
    assert_eq!(key_ids(&v, &bob), vec![1, 1]);
    {
        let ix = v.inner.index().unwrap();
        assert!(ix.old_mailbox_keys(a_id).unwrap().is_empty());
        assert_eq!(ix.oldest_key_id(a_id).unwrap(), 3);
        assert!(ix.reencrypt_pending().unwrap().is_empty());
    }
    // The old records are gone from the volume: the segments hold one copy, not two.
    let bytes_after: u64 = segment_files(&f.dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        bytes_after <= bytes_before + 64,
        "{bytes_before} -> {bytes_after}"
    );

    // The old copy: each record opened with its old generation, and no key the index
    // now holds for the mailbox authenticates any of them.
    let current = v.inner.key_for(a_id, 3, &alice).unwrap();
    for kid in [1, 2] {
        assert!(
            v.inner.key_for(a_id, kid, &alice).is_err(),
            "generation {kid} still in the index"
        );
    }
    for r in &old_rows {
        let seg = old_segs.join(crate::segment::file_name(r.segment));
        assert!(first_chunk_opens(
            &seg,
            r.offset,
            r.id,
            a_id,
            &old_keys[&r.key_id],
            v.volume_id()
        ));
        assert!(!first_chunk_opens(
            &seg,
            r.offset,
            r.id,
            a_id,
            &current,
            v.volume_id()
        ));
    }

    // Dedup still recognises messages stored before the rotations; new mail is stored.
    assert!(is_duplicate(&v, &alice));
    fill(&v, &alice, 30, 1);
    assert_eq!(key_ids(&v, &alice), vec![3; 8]);

    // Audit: recorded under pseudonyms only.
    let log = std::fs::read_to_string(f.dir.join(crate::audit_trail::AUDIT_FILE)).unwrap();
    assert!(log.contains("messages.reencrypted"));
    assert!(log.contains(&v.pseudonym_of_mailbox(&alice)));
    assert!(!log.contains("alice@example.org"));

    let v = open_again(v, &f);
    assert!(v.recovery().segments_removed.is_empty());
    assert!(v.verify().unwrap().damaged.is_empty());
    assert_eq!(read_mailbox(&v, &alice)[..7], expected_a[..]);
    assert!(is_duplicate(&v, &alice));
}

#[test]
fn issue8_reencrypt_killed_at_each_step_then_rerun_finishes() {
    let steps = [
        ReencryptStep::Rotated,
        ReencryptStep::RecordsWritten,
        ReencryptStep::BatchSwitched,
        ReencryptStep::KeysDropped,
        ReencryptStep::Compacted,
        ReencryptStep::Done,
    ];
    for step in steps {
        let f = fixture();
        let (alice, bob) = build(&f);
        let (expected_a, expected_b) = {
            let v = open(&f);
            (read_mailbox(&v, &alice), read_mailbox(&v, &bob))
        };
        {
            let mut v = open(&f);
            // One message per batch, so that a batch switched is not the last one.
            v.reencrypt_until(Target::Mailbox(&alice), step, 1).unwrap();
            // "kill -9": the process state is dropped, nothing else runs.
        }
        let mut v = open(&f);
        let rep = v.verify().unwrap();
        assert!(rep.damaged.is_empty(), "{step:?}: {:?}", rep.damaged);
        assert_eq!(read_mailbox(&v, &alice), expected_a, "{step:?}");
        assert_eq!(read_mailbox(&v, &bob), expected_b, "{step:?}");
        let ids = key_ids(&v, &alice);
        match step {
            ReencryptStep::Rotated | ReencryptStep::RecordsWritten => {
                assert_eq!(ids, vec![1, 1, 1, 1, 1, 2, 2], "{step:?}")
            }
            ReencryptStep::BatchSwitched => {
                assert_eq!(ids, vec![3, 1, 1, 1, 1, 2, 2], "{step:?}")
            }
            _ => assert_eq!(ids, vec![3; 7], "{step:?}"),
        }
        // A move rerun in between stores nothing twice.
        assert!(is_duplicate(&v, &alice), "{step:?}");

        // The same command again finishes the job without rotating again.
        let out = v.rotate_mailbox_reencrypt(&alice).unwrap();
        let finished_key = if step == ReencryptStep::Done { 4 } else { 3 };
        assert_eq!(out.resumed, step != ReencryptStep::Done, "{step:?}");
        assert_eq!(current_key_id(&v, &alice), finished_key, "{step:?}");
        assert_eq!(key_ids(&v, &alice), vec![finished_key; 7], "{step:?}");
        assert!(out.skipped.is_empty(), "{step:?}: {:?}", out.skipped);
        let a_id = row_id(&v, &alice);
        {
            let ix = v.inner.index().unwrap();
            assert!(ix.old_mailbox_keys(a_id).unwrap().is_empty(), "{step:?}");
            assert!(ix.reencrypt_pending().unwrap().is_empty(), "{step:?}");
        }
        assert!(is_duplicate(&v, &alice), "{step:?}");
        let v = open_again(v, &f);
        let rep = v.verify().unwrap();
        assert!(rep.damaged.is_empty(), "{step:?}: {:?}", rep.damaged);
        assert_eq!(read_mailbox(&v, &alice), expected_a, "{step:?}");
        assert_eq!(read_mailbox(&v, &bob), expected_b, "{step:?}");
    }
}

#[test]
fn issue8_reencrypt_tenant_rotates_every_mailbox_of_the_domain_only() {
    let f = fixture();
    let (alice, bob) = build(&f);
    let carol = addr("carol@other.example");
    let mut v = open(&f);
    fill(&v, &carol, 0, 2);
    let expected: Vec<_> = [&alice, &bob, &carol]
        .iter()
        .map(|m| read_mailbox(&v, m))
        .collect();
    let out = v.rotate_tenant_reencrypt("Example.org").unwrap();
    assert!(out.tenant_rotated && !out.resumed);
    assert_eq!(out.mailboxes, vec![(alice.clone(), 3), (bob.clone(), 2)]);
    assert_eq!(out.messages_reencrypted, 9);
    assert_eq!(out.keys_dropped, 3);
    assert_eq!(key_ids(&v, &bob), vec![2, 2]);
    assert_eq!(key_ids(&v, &carol), vec![1, 1]);
    let v = open_again(v, &f);
    for (m, e) in [&alice, &bob, &carol].iter().zip(&expected) {
        assert_eq!(&read_mailbox(&v, m), e);
        assert!(is_duplicate(&v, m), "{m}");
    }
    assert!(v.verify().unwrap().damaged.is_empty());
    let mut v = v;
    assert!(matches!(
        v.rotate_tenant_reencrypt("nowhere.example"),
        Err(StoreError::UnknownTenant { .. })
    ));
}

#[test]
fn issue8_reencrypt_refused_while_a_session_is_open_and_for_a_shredded_mailbox() {
    let f = fixture();
    let (alice, bob) = build(&f);
    let mut v = open(&f);
    let s = v.session(&alice, &CommitSettings::default()).unwrap();
    let err = v.rotate_mailbox_reencrypt(&alice).unwrap_err();
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    drop(s);
    v.shred_mailbox(&bob).unwrap();
    assert!(matches!(
        v.rotate_mailbox_reencrypt(&bob),
        Err(StoreError::Shredded { .. })
    ));
    // Nothing was rotated by the refusals.
    assert_eq!(current_key_id(&v, &alice), 2);
}
