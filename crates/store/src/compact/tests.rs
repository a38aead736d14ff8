use super::*;
use crate::volume::tests::*;
use mailferry_core::frame::AckStatus;
use mailferry_core::profile::CommitSettings;
use mailferry_core::MailboxAddr;
use std::collections::BTreeMap;

/// A volume with two segments that both hold reclaimable bytes: segment 1 has alice's
/// and bob's messages (bob is then shredded), segment 2 has a gap left by a duplicate
/// that lost the commit race, followed by live messages. Returns alice's messages.
fn build(f: &Fixture) -> (MailboxAddr, MailboxAddr, Vec<(String, Vec<u8>)>) {
    let (alice, bob) = (addr("alice@example.org"), addr("bob@example.org"));
    let v = open(f);
    fill(&v, &alice, 1, 4);
    fill(&v, &bob, 10, 5);
    {
        // Two sessions of one mailbox store the same message: the second commit's row
        // is ignored and its bytes stay behind as a gap in the second session's segment.
        let mut s1 = v.session(&alice, &CommitSettings::default()).unwrap();
        let mut s2 = v.session(&alice, &CommitSettings::default()).unwrap();
        let dup = body(70_000, 99);
        put(&mut s1, 1, "INBOX", "dup", &dup).unwrap();
        put(&mut s2, 1, "INBOX", "dup", &dup).unwrap();
        put(&mut s2, 2, "INBOX", "after-gap", &body(3000, 7)).unwrap();
        assert_eq!(s1.commit().unwrap(), vec![(1, AckStatus::Stored)]);
        assert_eq!(
            s2.commit().unwrap(),
            vec![(1, AckStatus::Duplicate), (2, AckStatus::Stored)]
        );
    }
    assert_eq!(segment_files(&f.dir).len(), 2);
    assert_eq!(v.shred_mailbox(&bob).unwrap(), 5);
    let expected = read_mailbox(&v, &alice);
    assert_eq!(expected.len(), 6);
    (alice, bob, expected)
}

fn segment_bytes(dir: &std::path::Path) -> u64 {
    segment_files(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn issue8_compaction_after_shred_shrinks_the_volume_and_keeps_every_other_message() {
    let f = fixture();
    let (alice, bob, expected) = build(&f);
    let before = segment_bytes(&f.dir);
    let mut v = open(&f);
    let out = v.compact().unwrap();
    assert_eq!(out.segments_rewritten, 2, "{out:?}");
    assert_eq!(out.segments_written, 1);
    assert_eq!(out.messages_dropped, 5);
    assert_eq!(out.messages_moved, 6);
    assert_eq!(out.bytes_before, before);
    let after = segment_bytes(&f.dir);
    assert_eq!(out.bytes_after, after);
    // Bob's five records (~1 KiB each) and the 70 KiB duplicate are gone, plus one
    // segment header.
    assert!(before - after > 70_000 + 5 * 1000, "{before} -> {after}");
    assert_eq!(segment_files(&f.dir).len(), 1);
    assert_eq!(read_mailbox(&v, &alice), expected);
    let report = v.verify().unwrap();
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    assert_eq!((report.messages_checked, report.shredded), (6, 0));
    assert!(matches!(
        v.list_messages(&bob),
        Err(StoreError::Shredded { .. })
    ));
    // Nothing left to do the second time.
    assert_eq!(v.compact().unwrap().segments_rewritten, 0);
    // The new segment takes new messages; everything survives a reopen.
    fill(&v, &alice, 50, 2);
    let v = open_again(v, &f);
    assert!(v.recovery().segments_removed.is_empty());
    assert_eq!(read_mailbox(&v, &alice).len(), 8);
    assert!(v.verify().unwrap().damaged.is_empty());
    // The audit log records it under pseudonyms only.
    let log = std::fs::read_to_string(f.dir.join(crate::audit_trail::AUDIT_FILE)).unwrap();
    assert!(log.contains("volume.compacted"));
    assert!(log.contains(&v.pseudonym_of_mailbox(&bob)));
    assert!(!log.contains("bob@example.org") && !log.contains("alice@example.org"));
}

#[test]
fn issue8_compaction_refused_while_a_session_is_open() {
    let f = fixture();
    let mut v = open(&f);
    let s = v
        .session(&addr("carol@example.org"), &CommitSettings::default())
        .unwrap();
    // `compact` takes `&mut self`; a session keeps a handle on the shared state.
    let err = v.compact().unwrap_err();
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    drop(s);
    v.compact().unwrap();
}

#[test]
fn issue8_compaction_killed_at_each_step_then_open_and_verify_lose_nothing() {
    let steps = [
        CompactStep::NewSegmentsWritten,
        CompactStep::IndexSwitched,
        CompactStep::FirstOldDeleted,
        CompactStep::Done,
    ];
    for step in steps {
        let f = fixture();
        let (alice, _bob, expected) = build(&f);
        let old: Vec<_> = segment_files(&f.dir);
        {
            let mut v = open(&f);
            v.compact_until(step).unwrap();
            // "kill -9": the process state is dropped, nothing else runs.
        }
        let files_at_crash: Vec<_> = segment_files(&f.dir);
        let mut v = open(&f);
        let removed = v.recovery().segments_removed.clone();
        match step {
            // The new segment is referenced by nothing: deleted, the old ones stay.
            CompactStep::NewSegmentsWritten => {
                assert_eq!(removed.len(), 1, "{step:?}");
                assert_eq!(segment_files(&f.dir), old);
            }
            // Both old segments are referenced by nothing any more: deleted.
            CompactStep::IndexSwitched => assert_eq!(removed.len(), 2, "{step:?}"),
            CompactStep::FirstOldDeleted => assert_eq!(removed.len(), 1, "{step:?}"),
            CompactStep::Done => assert!(removed.is_empty(), "{step:?}"),
        }
        assert!(files_at_crash.len() >= segment_files(&f.dir).len());
        let report = v.verify().unwrap();
        assert!(report.damaged.is_empty(), "{step:?}: {:?}", report.damaged);
        assert_eq!(read_mailbox(&v, &alice), expected, "{step:?}");
        // Compaction can run (again) to the end afterwards.
        v.compact().unwrap();
        assert_eq!(segment_files(&f.dir).len(), 1, "{step:?}");
        let v = open_again(v, &f);
        assert_eq!(read_mailbox(&v, &alice), expected, "{step:?}");
        assert!(v.verify().unwrap().damaged.is_empty());
        let all: BTreeMap<_, _> = read_mailbox(&v, &alice).into_iter().collect();
        assert_eq!(all.len(), 6);
    }
}
