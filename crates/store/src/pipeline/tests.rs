//! The batching policy, and the pipelined commit's ordering: in order, only after the
//! last step, nothing after a failure, and a crash between any two steps recovers to
//! "every acknowledged message is there, nothing unacknowledged is half there".

use super::*;
use crate::audit_trail::AUDIT_FILE;
use crate::volume::tests::{addr, body, fixture, open, put, segment_files};
use crate::Volume;
use mailferry_core::frame::AckStatus;
use mailferry_core::profile::CommitSettings;
use mailferry_core::MailboxAddr;
use std::sync::mpsc;

fn policy() -> BatchPolicy {
    BatchPolicy {
        max_messages: 1000,
        max_bytes: 8 << 20,
        max_delay: Duration::from_millis(50),
    }
}

const MS: Duration = Duration::from_millis(1);

#[test]
fn an_empty_batch_never_closes() {
    assert!(!policy().should_close(0, 0, Duration::from_secs(9)));
}

#[test]
fn a_batch_grows_until_its_first_limit() {
    let p = policy();
    assert!(!p.should_close(1, 2048, Duration::ZERO), "one message");
    assert!(!p.should_close(999, 2048 * 999, 49 * MS));
    assert!(p.should_close(1000, 2048 * 1000, MS), "messages");
    assert!(p.should_close(3, 8 << 20, MS), "bytes");
    assert!(p.should_close(3, 100, 50 * MS), "age");
}

#[test]
fn an_idle_pipeline_has_nothing_in_flight_and_a_finished_one_again() {
    let f = fixture();
    let mb = addr("ready@example.org");
    let v = open(&f);
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    let (p, rx) = pipeline();
    assert_eq!(p.in_flight(), 0);
    put(&mut s, 1, "INBOX", "a", &body(100, 1)).unwrap();
    p.submit(s.start_commit().unwrap()).unwrap();
    rx.recv().unwrap().unwrap();
    // Reported before its count falls: wait for the count, not for time.
    let mut c = p.shared.counts();
    while c.in_flight > 0 {
        c = p.shared.fell.wait(c).unwrap();
    }
    drop(c);
    assert_eq!(p.in_flight(), 0);
    p.finish().unwrap();
}

#[test]
fn the_policy_follows_the_profile() {
    let p = BatchPolicy::from_settings(&CommitSettings {
        max_messages: 7,
        max_bytes: 65536,
        max_delay_ms: 5,
    });
    assert_eq!(p.max_messages, 7);
    assert_eq!(p.max_bytes, 65536);
    assert_eq!(p.max_delay, 5 * MS);
}

/// A pipeline whose outcomes arrive on a channel.
fn pipeline() -> (
    CommitPipeline,
    mpsc::Receiver<Result<CommitOutcome, StoreError>>,
) {
    let (tx, rx) = mpsc::channel();
    let p = CommitPipeline::start(move |r| {
        let _ = tx.send(r);
    })
    .unwrap();
    (p, rx)
}

fn seqs(o: &CommitOutcome) -> Vec<(u64, AckStatus)> {
    o.acks.clone()
}

fn live_count(v: &Volume, mb: &MailboxAddr) -> usize {
    v.list_messages(mb).unwrap().len()
}

#[test]
fn batches_are_reported_in_submission_order_after_their_last_step() {
    let f = fixture();
    let mb = addr("pipe@example.org");
    let v = open(&f);
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    let (p, rx) = pipeline();
    let mut seq = 0;
    for batch in 0..20u8 {
        for _ in 0..=batch % 4 {
            seq += 1;
            put(&mut s, seq, "INBOX", &format!("m{seq}"), &body(3000, batch)).unwrap();
        }
        p.submit(s.start_commit().unwrap()).unwrap();
        assert!(p.in_flight() <= MAX_IN_FLIGHT);
    }
    p.finish().unwrap();
    let mut acked = Vec::new();
    for o in rx.try_iter() {
        let o = o.unwrap();
        // Reported only after the audit step: its records are in the log already.
        assert!(o.timings.audit_ns > 0);
        acked.extend(seqs(&o));
    }
    let want: Vec<_> = (1..=seq).map(|q| (q, AckStatus::Stored)).collect();
    assert_eq!(acked, want);
    drop(s);
    assert_eq!(live_count(&v, &mb), seq as usize);
    let stored = mailferry_audit::read_records(v.dir().join(AUDIT_FILE))
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "message.stored")
        .count();
    assert_eq!(stored, seq as usize);
    assert!(v.verify().unwrap().damaged.is_empty());
}

#[test]
fn nothing_after_a_failed_step_is_applied_or_reported() {
    let f = fixture();
    let mb = addr("fail@example.org");
    let v = open(&f);
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    let (p, rx) = pipeline();
    put(&mut s, 1, "INBOX", "a", &body(100, 1)).unwrap();
    p.submit(s.start_commit().unwrap()).unwrap();
    let first = rx.recv().unwrap().unwrap();
    assert_eq!(seqs(&first), vec![(1, AckStatus::Stored)]);
    // Make every later index transaction fail.
    v.inner
        .index()
        .unwrap()
        .conn_for_tests()
        .execute_batch("CREATE TRIGGER no_more BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'injected'); END;")
        .unwrap();
    put(&mut s, 2, "INBOX", "b", &body(100, 2)).unwrap();
    p.submit(s.start_commit().unwrap()).unwrap();
    let e = rx.recv().unwrap().unwrap_err();
    assert!(e.to_string().contains("injected"), "{e}");
    assert!(p.failed());
    put(&mut s, 3, "INBOX", "c", &body(100, 3)).unwrap();
    assert!(p.submit(s.start_commit().unwrap()).is_err());
    assert!(p.finish().is_err());
    assert!(
        rx.try_recv().is_err(),
        "nothing is reported after the failure"
    );
    drop(s);
    assert_eq!(live_count(&v, &mb), 1);
}

/// A crash between two steps of a batch, while the batch before it was fully committed:
/// after reopening, the committed batch is all there with its records, and the other one
/// is either absent (crash before its index step) or present with its audit record
/// filled in by recovery (crash after its index step). Either way nothing of it was
/// acknowledged, and the agent's resend is stored or found as a duplicate.
#[test]
fn a_crash_between_pipeline_steps_recovers_to_a_consistent_volume() {
    for crash_after_index in [false, true] {
        let f = fixture();
        let mb = addr("crash@example.org");
        {
            let v = open(&f);
            let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
            put(&mut s, 1, "INBOX", "a", &body(5000, 1)).unwrap();
            let first = s.start_commit().unwrap();
            put(&mut s, 2, "INBOX", "b", &body(7000, 2)).unwrap();
            put(&mut s, 3, "INBOX", "c", &body(9000, 3)).unwrap();
            let second = s.start_commit().unwrap();
            // The pipeline's overlap: the second batch is synced while the first is
            // indexed and audited.
            let first = first.sync().unwrap();
            let second = second.sync().unwrap();
            first.index().unwrap().audit().unwrap();
            if crash_after_index {
                let indexed = second.index().unwrap();
                drop(indexed); // killed before its audit records
            } else {
                drop(second); // killed before its index transaction
            }
            // A killed process truncates nothing: keep the segment bytes as they are.
            let seg = std::fs::read(&segment_files(&f.dir)[0]).unwrap();
            drop(s);
            drop(v);
            std::fs::write(&segment_files(&f.dir)[0], seg).unwrap();
        }
        let v = open(&f);
        let want = if crash_after_index { 3 } else { 1 };
        assert_eq!(
            live_count(&v, &mb),
            want,
            "crash_after_index {crash_after_index}"
        );
        let records = mailferry_audit::read_records(v.dir().join(AUDIT_FILE))
            .unwrap()
            .into_iter()
            .filter(|e| e.event == "message.stored")
            .count();
        assert_eq!(records, want, "every row has its record after recovery");
        assert!(v.verify().unwrap().damaged.is_empty());
        // The agent resends what was never acknowledged.
        let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
        let a = put(&mut s, 4, "INBOX", "b", &body(7000, 2)).unwrap();
        let b = put(&mut s, 5, "INBOX", "c", &body(9000, 3)).unwrap();
        let acks = s.commit().unwrap();
        let status = if crash_after_index {
            AckStatus::Duplicate
        } else {
            AckStatus::Stored
        };
        assert_eq!(acks, vec![(4, status), (5, status)], "{a:?} {b:?}");
        drop(s);
        assert_eq!(live_count(&v, &mb), 3);
    }
}
