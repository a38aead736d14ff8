use super::*;
use proptest::prelude::*;
use serde_json::json;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/vectors/audit");

fn vector(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(VECTORS).join(name)).unwrap()
}

fn vector_signer() -> HeadSigner {
    let text = String::from_utf8(vector("head-key.seed")).unwrap();
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).unwrap();
    HeadSigner::from_seed(&seed, LogSide::Destination)
}

/// A synced log of `n` records after genesis, in a temp dir.
fn log_with(dir: &Path, n: usize) -> AuditLog {
    let mut log = AuditLog::open(dir.join("audit.jsonl")).unwrap();
    for i in 0..n {
        log.append("store", "message.stored", json!({ "message": i }))
            .unwrap();
    }
    log.sync().unwrap();
    log
}

fn cut_last_record(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let body = &bytes[..bytes.len() - 1];
    let keep = body.iter().rposition(|&b| b == b'\n').unwrap() + 1;
    std::fs::write(path, &bytes[..keep]).unwrap();
}

/// The vectors were made with openssl from the RFC 8032 test seed: the public key, the
/// signed bytes and the head file are recomputed here byte for byte, and check.
#[test]
fn vectors_are_recomputed_byte_for_byte() {
    let signer = vector_signer();
    let key = signer.public_key();
    assert_eq!(
        hex::encode(key.as_bytes()),
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "RFC 8032 test 1"
    );
    assert_eq!(key.to_pem().as_bytes(), vector("head-key.pub.pem"));
    assert_eq!(
        PublicKey::from_pem(&String::from_utf8(vector("head-key.pub.pem")).unwrap()).unwrap(),
        key
    );

    let log = Path::new(VECTORS).join("three-records.jsonl");
    let chain = crate::verify(&log).unwrap();
    let head = signer.sign(
        &chain.genesis,
        chain.records,
        &chain.head,
        "2024-05-01T12:00:03.000Z",
    );
    assert_eq!(
        signed_message(&head),
        vector("three-records.signed-message")
    );
    let mut line = serde_json::to_vec(&head).unwrap();
    line.push(b'\n');
    assert_eq!(line, vector("three-records.audit.head"));

    let from_file = read_head(&Path::new(VECTORS).join("three-records.audit.head")).unwrap();
    assert_eq!(from_file, head);
    let out = verify_signed(&log, &from_file, &key).unwrap();
    assert_eq!((out.chain.records, out.unsigned_records), (3, 0));
}

/// The test of issue 21: a log cut by one record verifies as a chain, and fails against
/// its signed head, naming the cut.
#[test]
fn a_log_cut_by_one_record_fails_only_with_the_public_key() {
    let t = tempfile::tempdir().unwrap();
    let log = log_with(t.path(), 5);
    let path = log.path().to_path_buf();
    let signer = HeadSigner::from_seed(&[7; 32], LogSide::Source);
    let mut keeper = HeadKeeper::new(signer, &log);
    let signed = keeper.sign(&log).unwrap().unwrap();
    assert_eq!(signed.seq, 6);
    drop(log);
    let key = HeadSigner::from_seed(&[7; 32], LogSide::Source).public_key();
    let stored = read_head(&t.path().join(HEAD_FILE)).unwrap();
    assert_eq!(stored, signed);
    verify_signed(&path, &stored, &key).unwrap();

    cut_last_record(&path);
    assert_eq!(
        crate::verify(&path).unwrap().records,
        5,
        "the chain alone passes"
    );
    let e = verify_signed(&path, &stored, &key).unwrap_err();
    assert!(
        matches!(
            e,
            AuditError::Truncated {
                signed: 6,
                records: 5,
                ..
            }
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains(&format!(
            "records cut off the end: the signed head of {} covers 6 records, the log has 5",
            signed.time
        )),
        "{msg}"
    );
}

#[test]
fn a_head_signed_by_another_key_or_edited_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let log = log_with(t.path(), 2);
    let ours = HeadSigner::from_seed(&[1; 32], LogSide::Destination);
    let theirs = HeadSigner::from_seed(&[2; 32], LogSide::Destination);
    let good = ours.sign_log(&log).unwrap();
    let key = ours.public_key();
    verify_signed(log.path(), &good, &key).unwrap();

    // Signed by another key (and claiming to be ours by fingerprint, or not).
    let forged = theirs.sign_log(&log).unwrap();
    let e = verify_signed(log.path(), &forged, &key).unwrap_err();
    assert!(e.to_string().contains("not by the given public key"), "{e}");
    let mut claimed = forged.clone();
    claimed.key = key.fingerprint();
    let e = verify_signed(log.path(), &claimed, &key).unwrap_err();
    assert!(e.to_string().contains("signature does not verify"), "{e}");

    // Our head with a higher seq, another head hash, another time, another side.
    for edit in [
        |h: &mut SignedHead| h.seq += 1,
        |h: &mut SignedHead| h.head = "0".repeat(64),
        |h: &mut SignedHead| h.time = "2030-01-01T00:00:00.000Z".into(),
        |h: &mut SignedHead| h.side = LogSide::Source,
    ] {
        let mut h = good.clone();
        edit(&mut h);
        let e = verify_signed(log.path(), &h, &key).unwrap_err();
        assert!(matches!(e, AuditError::BadHead { .. }), "{e}");
        assert!(e.to_string().contains("signature does not verify"), "{e}");
    }
}

#[test]
fn a_rewritten_or_replaced_log_and_later_records() {
    let t = tempfile::tempdir().unwrap();
    let signer = HeadSigner::from_seed(&[3; 32], LogSide::Destination);
    let key = signer.public_key();
    let mut log = log_with(t.path(), 3);
    let head = signer.sign_log(&log).unwrap();

    // Growth after the head is reported, not a failure.
    log.append("store", "pass.receipt", json!({})).unwrap();
    log.sync().unwrap();
    let out = verify_signed(log.path(), &head, &key).unwrap();
    assert_eq!((out.signed.seq, out.unsigned_records), (4, 1));
    let path = log.path().to_path_buf();
    drop(log);

    // A whole new chain in its place: same genesis line, another record 4.
    let lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    std::fs::write(&path, format!("{}\n", lines[0])).unwrap();
    let mut rewritten = AuditLog::open(&path).unwrap();
    for i in 0..4 {
        rewritten
            .append("store", "message.stored", json!({ "message": i + 100 }))
            .unwrap();
    }
    rewritten.sync().unwrap();
    drop(rewritten);
    let e = verify_signed(&path, &head, &key).unwrap_err();
    assert!(
        matches!(e, AuditError::SignedRecordDiffers { seq: 4, .. }),
        "{e}"
    );

    // Another log altogether.
    std::fs::remove_file(&path).unwrap();
    drop(log_with(t.path(), 5));
    let e = verify_signed(&path, &head, &key).unwrap_err();
    assert!(e.to_string().contains("of another log"), "{e}");
}

/// The keeper never replaces a head that covers more records than the log (the evidence
/// of a cut), and signs at the log's checkpoints.
#[test]
fn keeper_keeps_the_evidence_of_a_cut_and_signs_at_checkpoints() {
    let t = tempfile::tempdir().unwrap();
    let log = log_with(t.path(), 4);
    let path = log.path().to_path_buf();
    let mut k = HeadKeeper::new(HeadSigner::from_seed(&[4; 32], LogSide::Source), &log);
    assert!(k.behind(&log));
    let signed = k.sign(&log).unwrap().unwrap();
    assert!(!k.behind(&log));
    drop(log);
    cut_last_record(&path);
    let log = AuditLog::open(&path).unwrap();
    let mut k = HeadKeeper::new(HeadSigner::from_seed(&[4; 32], LogSide::Source), &log);
    assert!(k.stopped().unwrap().contains("records cut off the end"));
    assert_eq!(k.sign(&log).unwrap(), None);
    assert_eq!(read_head(&t.path().join(HEAD_FILE)).unwrap(), signed);
    drop(log);

    let t = tempfile::tempdir().unwrap();
    let mut log = log_with(t.path(), 1);
    let mut k = HeadKeeper::new(HeadSigner::from_seed(&[4; 32], LogSide::Source), &log);
    k.sign(&log).unwrap();
    for i in 0..1100 {
        log.append("agent", "message.stored", json!({ "i": i }))
            .unwrap();
        if i % 100 == 0 {
            log.sync().unwrap();
            k.sign_at_checkpoint(&log);
        }
    }
    let h = read_head(&t.path().join(HEAD_FILE)).unwrap();
    assert!(
        h.seq > 1001 && h.seq < 1100,
        "signed once past the checkpoint: {}",
        h.seq
    );
}

#[test]
fn seed_file_is_created_owner_only_once_and_checked() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("audit-sign.key");
    let a = HeadSigner::load_or_create(&p, LogSide::Source).unwrap();
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let b = HeadSigner::load_or_create(&p, LogSide::Source).unwrap();
    assert_eq!(a.public_key(), b.public_key());
    assert_eq!(format!("{a:?}"), "HeadSigner([redacted])");
    let other = tempfile::tempdir().unwrap();
    let c = HeadSigner::load_or_create(&other.path().join("k"), LogSide::Source).unwrap();
    assert_ne!(a.public_key(), c.public_key());
    std::fs::write(&p, "something else\n").unwrap();
    let e = HeadSigner::load_or_create(&p, LogSide::Source).unwrap_err();
    assert!(e.to_string().contains("not a signing key file"), "{e}");
}

#[test]
fn malformed_heads_and_keys_are_refused_with_a_reason() {
    let good = String::from_utf8(vector("three-records.audit.head")).unwrap();
    assert!(parse_head(good.as_bytes()).is_ok());
    for (from, to, why) in [
        (
            "mailferry-audit-head/1",
            "mailferry-audit-head/9",
            "not supported",
        ),
        ("\"seq\":3", "\"seq\":0", "seq must be at least 1"),
        (
            "\"time\":\"2024-05-01T12:00:03.000Z\"",
            "\"time\":\"yesterday\"",
            "RFC 3339",
        ),
        (
            "\"side\":\"destination\"",
            "\"side\":\"both\"",
            "unknown variant",
        ),
        ("\"log\":\"18c8", "\"log\":\"18C8", "lower-case hex"),
        ("{", "{\"extra\":1,", "unknown field"),
    ] {
        let bad = good.replace(from, to);
        let e = parse_head(bad.as_bytes()).unwrap_err();
        assert!(e.contains(why), "{from} -> {to}: {e}");
    }
    assert!(PublicKey::from_pem("hello")
        .unwrap_err()
        .contains("no PEM block"));
    let rsa_like = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VxAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n";
    assert!(PublicKey::from_pem(rsa_like)
        .unwrap_err()
        .contains("not an Ed25519"));
}

proptest! {
    /// The head and key decoders refuse garbage without panicking.
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_head(&bytes);
        let _ = PublicKey::from_pem(&String::from_utf8_lossy(&bytes));
    }

    /// A head survives its file format, and any one changed byte of its signed fields
    /// breaks the signature.
    #[test]
    fn round_trip_and_any_edit_breaks_it(seq in 1u64..1_000_000, flip in 0usize..64) {
        let s = HeadSigner::from_seed(&[9; 32], LogSide::Source);
        let h = s.sign(&"a".repeat(64), seq, &"b".repeat(64), "2024-05-01T12:00:00.000Z");
        let back = parse_head(&serde_json::to_vec(&h).unwrap()).unwrap();
        prop_assert_eq!(&back, &h);
        prop_assert!(s.public_key().check(&back).is_ok());
        let mut edited = back.clone();
        let mut head = edited.head.into_bytes();
        head[flip] = b'c';
        edited.head = String::from_utf8(head).unwrap();
        prop_assert!(s.public_key().check(&edited).is_err());
    }
}
