use super::*;
use crate::verify;
use serde_json::json;
use std::time::{Duration, UNIX_EPOCH};

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_714_564_800 + secs)
}

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    (dir, path)
}

#[test]
fn a_new_log_starts_with_a_synced_genesis_record() {
    let (_dir, path) = tmp();
    let log = AuditLog::open(&path).unwrap();
    assert_eq!(log.last_seq(), 1);
    assert_eq!(log.repaired(), None);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with(r#"{"seq":1,"time":""#), "{text}");
    assert!(text.contains(
        r#""actor":"mailferry-audit","event":"audit.created","data":{"format":"mailferry-audit/1"}"#
    ));
    assert_eq!(verify(&path).unwrap().head, log.head());
}

#[test]
fn append_reopen_append_verify() {
    let (_dir, path) = tmp();
    let mut log = AuditLog::open(&path).unwrap();
    assert_eq!(
        log.append("agent", "move.created", json!({"messages": 3}))
            .unwrap(),
        2
    );
    assert_eq!(
        log.append_at(at(1), "agent", "message.sent", json!({"seq": 1}))
            .unwrap(),
        3
    );
    log.sync().unwrap();
    let head = log.head().to_string();
    drop(log);

    let mut log = AuditLog::open(&path).unwrap();
    assert_eq!((log.last_seq(), log.head()), (3, head.as_str()));
    assert_eq!(log.repaired(), None);
    let seqs = log
        .append_batch(
            "agent",
            [
                ("message.sent", json!({"seq": 2})),
                ("move.finished", json!({})),
            ],
        )
        .unwrap();
    assert_eq!(seqs, 4..6);
    log.sync().unwrap();
    let out = verify(&path).unwrap();
    assert_eq!(out.records, 5);
    assert_eq!(out.head, log.head());
    crate::verify_with_head(&path, log.head()).unwrap();
}

#[test]
fn records_written_behind_or_on_drop_are_valid() {
    let (_dir, path) = tmp();
    let mut log = AuditLog::open(&path).unwrap();
    for i in 0..2000 {
        log.append(
            "store",
            "message.stored",
            json!({"n": i, "pad": "x".repeat(40)}),
        )
        .unwrap();
    }
    // More than WRITE_BEHIND is already in the file, unsynced.
    assert!(std::fs::metadata(&path).unwrap().len() > WRITE_BEHIND as u64);
    let head = log.head().to_string();
    drop(log);
    // genesis + 2000 records + a checkpoint after records 1000 and 2001.
    assert_eq!(crate::verify_with_head(&path, &head).unwrap().records, 2003);
}

#[test]
fn checkpoints_carry_the_running_root_across_reopens_and_tampering_is_named() {
    let (_dir, path) = tmp();
    for round in 0..3 {
        let mut log = AuditLog::open(&path).unwrap();
        for i in 0..700 {
            log.append("agent", "message.stored", json!({"round": round, "n": i}))
                .unwrap();
        }
        log.sync().unwrap();
    }
    let v = crate::verify(&path).unwrap();
    assert_eq!(v.records, 1 + 2100 + 2);
    let entries = crate::read_records(&path).unwrap();
    let cps: Vec<&crate::Entry> = entries
        .iter()
        .filter(|e| e.event == "audit.checkpoint")
        .collect();
    assert_eq!(cps.len(), 2);
    assert_eq!(cps[0].seq, 1001);
    assert_eq!(cps[0].data["records"], 1000);
    // The root in a checkpoint is the running root of the lines before it.
    let text = std::fs::read(&path).unwrap();
    let mut m = crate::mmr::Mmr::default();
    for line in text.split(|&b| b == b'\n').take(1000) {
        m.push_line(line);
    }
    assert_eq!(cps[0].data["merkle_root"], m.root());
    // A forged root is named by its line.
    let forged = String::from_utf8(text).unwrap().replacen(
        cps[0].data["merkle_root"].as_str().unwrap(),
        &"0".repeat(64),
        1,
    );
    std::fs::write(&path, forged).unwrap();
    let e = crate::verify(&path).unwrap_err().to_string();
    assert!(e.contains("line 1001"), "{e}");
}

#[test]
fn a_second_writer_is_refused() {
    let (_dir, path) = tmp();
    let _log = AuditLog::open(&path).unwrap();
    let err = AuditLog::open(&path).unwrap_err();
    assert!(matches!(err, AuditError::Locked { .. }), "{err}");
}

/// The lock of a log just closed can outlive the writer for a moment, held through a
/// copy of its open file description (a forked child before its exec). Opening waits for
/// it instead of refusing (the flaky "Locked right after Volume::init" under load).
#[test]
fn a_lock_held_a_moment_longer_through_a_shared_description_is_waited_for() {
    let (_dir, path) = tmp();
    let log = AuditLog::open(&path).unwrap();
    // What a forked child holds: the same open file description, so the same lock.
    let inherited = log.file.try_clone().unwrap();
    drop(log);
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(inherited);
    });
    let reopened = AuditLog::open(&path);
    release.join().unwrap();
    assert!(
        reopened.is_ok(),
        "{:?}",
        reopened.err().map(|e| e.to_string())
    );
}

#[test]
fn refused_records_leave_the_log_unchanged() {
    let (_dir, path) = tmp();
    let mut log = AuditLog::open(&path).unwrap();
    let head = log.head().to_string();
    for (actor, event, data) in [
        ("agent", "move.created", json!("not an object")),
        ("agent", "Move", json!({})),
        ("", "move.created", json!({})),
        (
            "agent",
            "audit.created",
            json!({"format": "mailferry-audit/1"}),
        ),
        ("agent", "big", json!({"x": "y".repeat(MAX_RECORD_BYTES)})),
    ] {
        let err = log.append(actor, event, data).unwrap_err();
        assert!(matches!(err, AuditError::InvalidRecord { .. }), "{err}");
    }
    let err = log
        .append_batch("agent", [("ok.one", json!({})), ("Bad", json!({}))])
        .unwrap_err();
    assert!(err.to_string().contains("\"Bad\""), "{err}");
    let err = log
        .append_at(
            UNIX_EPOCH - Duration::from_secs(1),
            "agent",
            "ok",
            json!({}),
        )
        .unwrap_err();
    assert!(matches!(err, AuditError::InvalidRecord { .. }), "{err}");
    assert_eq!((log.last_seq(), log.head()), (1, head.as_str()));
    log.sync().unwrap();
    assert_eq!(verify(&path).unwrap().records, 1);
}

/// Writes a synced log with `n` records after genesis; returns its bytes.
fn synced_log(path: &Path, n: u64) -> Vec<u8> {
    let mut log = AuditLog::open(path).unwrap();
    for i in 0..n {
        log.append_at(at(i), "store", "message.stored", json!({"n": i}))
            .unwrap();
    }
    log.sync().unwrap();
    drop(log);
    std::fs::read(path).unwrap()
}

#[test]
fn torn_tails_are_cut_back_to_the_last_complete_record() {
    let (_dir, path) = tmp();
    let good = synced_log(&path, 3);
    let last_line = {
        let body = &good[..good.len() - 1];
        let start = body.iter().rposition(|&b| b == b'\n').unwrap() + 1;
        good[start..].to_vec()
    };
    let next = {
        // A real fourth record, as a crash could leave it.
        let (_d, p) = tmp();
        std::fs::write(&p, &good).unwrap();
        let mut log = AuditLog::open(&p).unwrap();
        log.append_at(at(9), "store", "message.stored", json!({"n": 9}))
            .unwrap();
        log.sync().unwrap();
        drop(log);
        std::fs::read(&p).unwrap()[good.len()..].to_vec()
    };
    let tails: Vec<(&str, Vec<u8>)> = vec![
        ("half a record", next[..next.len() / 2].to_vec()),
        (
            "a whole record but no newline",
            next[..next.len() - 1].to_vec(),
        ),
        ("zeros the size of a page", vec![0; 4096]),
        ("a line of zeros", [vec![0; 100], b"\n".to_vec()].concat()),
        (
            "a line of zeros and half a record",
            [vec![0; 10], b"\n".to_vec(), next[..20].to_vec()].concat(),
        ),
        ("one byte", b"{".to_vec()),
    ];
    for (what, tail) in tails {
        std::fs::write(&path, [good.as_slice(), &tail].concat()).unwrap();
        assert!(
            verify(&path).is_err(),
            "{what}: verify should see the torn tail"
        );
        let mut log = AuditLog::open(&path).unwrap();
        assert_eq!(
            log.repaired(),
            Some(TornTail {
                offset: good.len() as u64,
                removed_bytes: tail.len() as u64
            }),
            "{what}"
        );
        assert_eq!(log.last_seq(), 4, "{what}");
        assert_eq!(
            log.head(),
            line_hash(&last_line[..last_line.len() - 1]),
            "{what}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), good, "{what}");
        assert_eq!(
            log.append("store", "message.stored", json!({})).unwrap(),
            5,
            "{what}"
        );
        log.sync().unwrap();
        drop(log);
        assert_eq!(verify(&path).unwrap().records, 5, "{what}");
        std::fs::write(&path, &good).unwrap();
    }
}

#[test]
fn a_torn_genesis_is_rewritten() {
    let (_dir, path) = tmp();
    std::fs::write(&path, br#"{"seq":1,"time":"2024-05"#).unwrap();
    let log = AuditLog::open(&path).unwrap();
    assert_eq!(log.repaired().map(|t| t.offset), Some(0));
    assert_eq!(log.last_seq(), 1);
    drop(log);
    assert_eq!(verify(&path).unwrap().records, 1);
}

#[test]
fn an_empty_file_gets_a_genesis_record() {
    let (_dir, path) = tmp();
    std::fs::write(&path, b"").unwrap();
    let log = AuditLog::open(&path).unwrap();
    assert_eq!((log.last_seq(), log.repaired()), (1, None));
}

#[test]
fn a_bad_last_record_that_is_json_is_an_error_and_nothing_is_changed() {
    let (_dir, path) = tmp();
    let good = synced_log(&path, 2);
    for tail in [
        b"{}\n".to_vec(),
        // A well-formed record with the wrong seq and prev.
        Record {
            seq: 9,
            ..Record::genesis("2024-05-01T12:00:00.000Z")
        }
        .encode()
        .into_iter()
        .chain(*b"\n")
        .collect(),
    ] {
        let bad = [good.as_slice(), &tail].concat();
        std::fs::write(&path, &bad).unwrap();
        let err = AuditLog::open(&path).unwrap_err();
        assert!(matches!(err, AuditError::Corrupt { line: 4, .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), bad);
    }
}

#[test]
fn a_last_record_not_linked_to_the_one_before_is_an_error() {
    let (_dir, path) = tmp();
    let good = synced_log(&path, 2);
    let mut lines: Vec<&[u8]> = good
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    lines.swap(1, 2);
    let mut swapped = Vec::new();
    for l in lines {
        swapped.extend_from_slice(l);
        swapped.push(b'\n');
    }
    std::fs::write(&path, &swapped).unwrap();
    let err = AuditLog::open(&path).unwrap_err();
    assert!(matches!(err, AuditError::Corrupt { line: 3, .. }), "{err}");
}

#[test]
fn an_unknown_format_is_refused_by_open_and_verify() {
    let (_dir, path) = tmp();
    let mut genesis = Record::genesis("2024-05-01T12:00:00.000Z");
    genesis
        .data
        .insert("format".into(), json!("mailferry-audit/2"));
    std::fs::write(&path, [genesis.encode(), b"\n".to_vec()].concat()).unwrap();
    for err in [
        AuditLog::open(&path).unwrap_err(),
        verify(&path).unwrap_err(),
    ] {
        match err {
            AuditError::UnsupportedFormat { found, .. } => assert_eq!(found, "mailferry-audit/2"),
            other => panic!("{other}"),
        }
    }
}
