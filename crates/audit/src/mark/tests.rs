use super::*;
use crate::{read_records, verify, AuditLog};
use serde_json::json;
use std::io::Write;

fn append(log: &mut AuditLog, n: usize, tag: &str) {
    log.append_batch(
        "agent",
        (0..n).map(|i| ("message.stored", json!({ "n": i, "tag": tag }))),
    )
    .unwrap();
    log.sync().unwrap();
}

#[test]
fn open_from_a_mark_reads_only_the_tail_and_ends_where_a_full_open_ends() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("audit.jsonl");
    let mut log = AuditLog::open(&p).unwrap();
    // Enough records to cross the log's own periodic checkpoint (its Merkle root).
    append(&mut log, 700, "a");
    let mark = log.mark().expect("synced");
    log.append("agent", "x.buffered", json!({})).unwrap();
    assert!(log.mark().is_none(), "no mark over unsynced records");
    log.sync().unwrap();
    append(&mut log, 600, "b");
    drop(log);

    let full = AuditLog::open(&p).unwrap();
    let full_mark = full.mark().unwrap();
    drop(full);
    let mut resumed = AuditLog::open_from(&p, Some(&mark)).unwrap();
    assert!(resumed.resumed());
    assert_eq!(
        resumed.mark().unwrap(),
        full_mark,
        "same head, offsets and Merkle state"
    );

    let tail = read_records_after(&p, &mark).unwrap();
    let all = read_records(&p).unwrap();
    assert_eq!(tail, all[mark.seq as usize..]);
    assert_eq!(tail.first().unwrap().seq, mark.seq + 1);
    let raw = read_tail_after(&p, &mark).unwrap();
    assert_eq!(raw, std::fs::read(&p).unwrap()[mark.end as usize..]);

    // Appending after a resumed open keeps the chain and the periodic checkpoints valid.
    append(&mut resumed, 900, "c");
    drop(resumed);
    assert_eq!(verify(&p).unwrap().records, all.len() as u64 + 900 + 1);
}

#[test]
fn a_mark_that_does_not_fit_the_file_falls_back_to_reading_everything() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("audit.jsonl");
    let mut log = AuditLog::open(&p).unwrap();
    append(&mut log, 5, "a");
    let mark = log.mark().unwrap();
    drop(log);

    // A wrong head, a mark past the end, a Merkle state of another size.
    let mut wrong = mark.clone();
    wrong.head = "00".repeat(32);
    let mut past = mark.clone();
    past.end += 10;
    let mut peaks = mark.clone();
    peaks.seq += 1;
    for bad in [wrong, past, peaks] {
        let log = AuditLog::open_from(&p, Some(&bad)).unwrap();
        assert!(!log.resumed());
        assert!(log.mark_refused().is_some());
        assert_eq!(log.last_seq(), 6);
        drop(log);
        assert!(read_records_after(&p, &bad).is_err());
        assert!(read_tail_after(&p, &bad).is_err());
    }

    // The log replaced by another one of the same length.
    std::fs::remove_file(&p).unwrap();
    let mut other = AuditLog::open(&p).unwrap();
    append(&mut other, 5, "z");
    drop(other);
    let log = AuditLog::open_from(&p, Some(&mark)).unwrap();
    assert!(!log.resumed(), "{:?}", log.mark_refused());
    assert!(log.mark_refused().unwrap().contains("hashes to"));
}

#[test]
fn a_torn_tail_after_the_mark_is_cut_as_usual() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("audit.jsonl");
    let mut log = AuditLog::open(&p).unwrap();
    append(&mut log, 3, "a");
    let mark = log.mark().unwrap();
    append(&mut log, 2, "b");
    drop(log);
    let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(b"{\"seq\":7,\"ti").unwrap();
    drop(f);
    let log = AuditLog::open_from(&p, Some(&mark)).unwrap();
    assert!(log.resumed());
    assert!(log.repaired().is_some());
    assert_eq!(log.last_seq(), 6);
    drop(log);
    assert_eq!(verify(&p).unwrap().records, 6);
    assert_eq!(read_records_after(&p, &mark).unwrap().len(), 2);
    let raw = read_tail_after(&p, &mark).unwrap();
    assert_eq!(raw.iter().filter(|&&b| b == b'\n').count(), 2);
}

#[test]
fn a_log_cut_before_the_mark_refuses_it() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("audit.jsonl");
    let mut log = AuditLog::open(&p).unwrap();
    append(&mut log, 3, "a");
    let early = log.mark().unwrap();
    append(&mut log, 3, "b");
    let mark = log.mark().unwrap();
    drop(log);
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(early.end).unwrap();
    drop(f);
    let log = AuditLog::open_from(&p, Some(&mark)).unwrap();
    assert!(!log.resumed());
    assert_eq!(log.last_seq(), early.seq);
}
