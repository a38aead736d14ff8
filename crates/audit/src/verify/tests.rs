use super::*;
use crate::AuditLog;
use proptest::prelude::*;
use serde_json::json;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/vectors/audit");

fn check(bytes: &[u8], head: Option<&str>) -> Result<VerifyOutcome, AuditError> {
    let out = verify_reader(Path::new("mem"), bytes)?;
    match head {
        Some(h) if h != out.head => Err(AuditError::HeadMismatch {
            path: "mem".into(),
            records: out.records,
            expected: h.into(),
            found: out.head,
        }),
        _ => Ok(out),
    }
}

fn at(base: &str, millis: u64) -> SystemTime {
    humantime::parse_rfc3339(base).unwrap() + Duration::from_millis(millis)
}

/// A small log: genesis plus three records, as bytes.
fn small_log() -> Vec<u8> {
    static LOG: OnceLock<Vec<u8>> = OnceLock::new();
    LOG.get_or_init(write_small_log).clone()
}

fn write_small_log() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    let mut log = AuditLog::open(&path).unwrap();
    log.append_at(
        at("2024-05-01T12:00:00Z", 1),
        "agent",
        "move.created",
        json!({"n": 1}),
    )
    .unwrap();
    log.append_at(
        at("2024-05-01T12:00:00Z", 2),
        "agent",
        "message.sent",
        json!({"k": "v"}),
    )
    .unwrap();
    log.append_at(
        at("2024-05-01T12:00:00Z", 3),
        "agent",
        "move.done",
        json!({}),
    )
    .unwrap();
    log.sync().unwrap();
    drop(log);
    std::fs::read(&path).unwrap()
}

fn start_of_last_line(log: &[u8]) -> usize {
    log[..log.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1
}

#[test]
fn every_single_byte_change_is_detected() {
    let log = small_log();
    let head = check(&log, None).unwrap().head;
    let last = start_of_last_line(&log);
    let mut tried = 0;
    for i in 0..log.len() {
        for replacement in [log[i] ^ 0x01, log[i] ^ 0x20, b'\n', b' ', b'0', b'"'] {
            if replacement == log[i] {
                continue;
            }
            let mut bad = log.clone();
            bad[i] = replacement;
            assert!(
                check(&bad, Some(&head)).is_err(),
                "byte {i} -> {replacement:#04x} undetected"
            );
            if i < last {
                // Before the last line, the chain alone detects it.
                assert!(
                    check(&bad, None).is_err(),
                    "byte {i} -> {replacement:#04x} unpinned"
                );
            }
            tried += 1;
        }
    }
    assert!(tried > 5 * log.len(), "only {tried} mutations tried");
}

#[test]
fn every_single_byte_removal_or_insertion_is_detected() {
    let log = small_log();
    let head = check(&log, None).unwrap().head;
    let last = start_of_last_line(&log);
    for i in 0..log.len() {
        let mut removed = log.clone();
        removed.remove(i);
        assert!(
            check(&removed, Some(&head)).is_err(),
            "removal of byte {i} undetected"
        );
        if i < last {
            assert!(
                check(&removed, None).is_err(),
                "removal of byte {i} unpinned"
            );
        }
    }
    for i in 0..=log.len() {
        for b in [b' ', b'\n', b'0', b'x'] {
            let mut inserted = log.clone();
            inserted.insert(i, b);
            assert!(
                check(&inserted, Some(&head)).is_err(),
                "insertion of {b:#04x} at {i} undetected"
            );
            if i < last {
                assert!(
                    check(&inserted, None).is_err(),
                    "insertion of {b:#04x} at {i} unpinned"
                );
            }
        }
    }
}

fn lines(log: &[u8]) -> Vec<Vec<u8>> {
    log.split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

#[test]
fn reordered_removed_and_repeated_records_are_detected() {
    let log = small_log();
    let l = lines(&log);
    assert_eq!(l.len(), 4);
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "swap 2 and 3",
            vec![l[0].clone(), l[2].clone(), l[1].clone(), l[3].clone()],
        ),
        ("remove 2", vec![l[0].clone(), l[2].clone(), l[3].clone()]),
        (
            "remove genesis",
            vec![l[1].clone(), l[2].clone(), l[3].clone()],
        ),
        (
            "repeat 2",
            vec![
                l[0].clone(),
                l[1].clone(),
                l[1].clone(),
                l[2].clone(),
                l[3].clone(),
            ],
        ),
        (
            "repeat last",
            vec![
                l[0].clone(),
                l[1].clone(),
                l[2].clone(),
                l[3].clone(),
                l[3].clone(),
            ],
        ),
    ];
    for (what, ls) in cases {
        let bad = ls.concat();
        let err = check(&bad, None).unwrap_err();
        assert!(matches!(err, AuditError::Corrupt { .. }), "{what}: {err}");
    }
}

#[test]
fn records_cut_off_the_end_are_only_detected_with_a_pinned_head() {
    let log = small_log();
    let head = check(&log, None).unwrap().head;
    let cut = lines(&log)[..3].concat();
    // The documented limit of a bare chain: a shorter log is still a valid log.
    assert_eq!(check(&cut, None).unwrap().records, 3);
    let err = check(&cut, Some(&head)).unwrap_err();
    assert!(
        matches!(err, AuditError::HeadMismatch { records: 3, .. }),
        "{err}"
    );
}

#[test]
fn errors_name_the_first_bad_line_and_the_reason() {
    let log = small_log();
    let mut bad = log.clone();
    let second = lines(&log)[0].len();
    // Change a data byte of line 2: line 2 still parses, line 3's prev breaks.
    let pos = second
        + log[second..]
            .windows(5)
            .position(|w| w == b"\"n\":1")
            .unwrap()
        + 4;
    bad[pos] = b'2';
    let err = check(&bad, None).unwrap_err();
    match &err {
        AuditError::Corrupt {
            line: 3, reason, ..
        } => assert!(reason.contains("prev"), "{err}"),
        _ => panic!("{err}"),
    }
    assert!(
        err.to_string().starts_with("audit log mem, line 3: prev "),
        "{err}"
    );

    let gap = String::from_utf8(log.clone())
        .unwrap()
        .replace("\"seq\":3", "\"seq\":4");
    let err = check(gap.as_bytes(), None).unwrap_err().to_string();
    assert!(err.contains("line 3: seq 4 where 3 was expected"), "{err}");

    let err = check(b"", None).unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
    let err = check(b"not json\n", None).unwrap_err().to_string();
    assert!(err.contains("line 1: not a record"), "{err}");
    let err = check(&log[..log.len() - 1], None).unwrap_err().to_string();
    assert!(err.contains("line 4: no newline"), "{err}");
}

#[test]
fn the_documented_vector_verifies_and_is_reproduced_byte_for_byte() {
    let log_path = Path::new(VECTORS).join("three-records.jsonl");
    let expected = std::fs::read(&log_path).expect("docs/vectors/audit/three-records.jsonl");
    let head = std::fs::read_to_string(Path::new(VECTORS).join("three-records.head"))
        .expect("docs/vectors/audit/three-records.head");
    let out = verify_with_head(&log_path, &head).unwrap();
    assert_eq!(out.records, 3);
    assert_eq!(out.head, head.trim());

    // The writer must produce exactly these bytes from the same inputs.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.jsonl");
    let genesis = Record::genesis("2024-05-01T12:00:00.000Z").encode();
    std::fs::write(&path, [genesis, b"\n".to_vec()].concat()).unwrap();
    let p = crate::Pseudonymizer::new(&[0x42; 32]);
    let mut log = AuditLog::open(&path).unwrap();
    log.append_at(
        at("2024-05-01T12:00:01Z", 250),
        "store",
        "move.created",
        json!({
            "move_id": "00112233445566778899aabbccddeeff",
            "mailbox": p.pseudonym("mailbox", "alice@example.com"),
        }),
    )
    .unwrap();
    log.append_at(
        at("2024-05-01T12:00:02Z", 0),
        "store",
        "message.stored",
        json!({"seq": 1, "folder": p.pseudonym("folder", "INBOX"), "bytes": 12}),
    )
    .unwrap();
    log.sync().unwrap();
    assert_eq!(log.head(), head.trim());
    drop(log);
    assert_eq!(
        String::from_utf8(std::fs::read(&path).unwrap()).unwrap(),
        String::from_utf8(expected).unwrap()
    );
}

#[test]
fn verify_with_head_reads_a_pinned_head_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    std::fs::write(&path, small_log()).unwrap();
    let head = verify(&path).unwrap().head;
    verify_with_head(&path, &format!("{}\n", head.to_uppercase())).unwrap();
    let err = verify_with_head(&path, crate::ZERO_HASH).unwrap_err();
    assert!(
        matches!(err, AuditError::HeadMismatch { records: 4, .. }),
        "{err}"
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = check(&bytes, None);
    }

    #[test]
    fn arbitrary_lines_never_panic(lines in proptest::collection::vec("\\PC{0,80}", 0..8)) {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let _ = check(text.as_bytes(), None);
    }

    #[test]
    fn a_valid_log_with_a_spliced_byte_string_never_panics_and_never_passes_pinned(
        at in any::<prop::sample::Index>(),
        len in 0usize..8,
        junk in proptest::collection::vec(any::<u8>(), 1..8),
    ) {
        let log = small_log();
        let head = check(&log, None).unwrap().head;
        let i = at.index(log.len());
        let end = (i + len).min(log.len());
        let bad = [&log[..i], junk.as_slice(), &log[end..]].concat();
        if bad != log {
            prop_assert!(check(&bad, Some(&head)).is_err());
        }
    }
}
