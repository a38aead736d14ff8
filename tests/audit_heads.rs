//! Issue 21: signed audit heads. Each side signs its log's head; with the side's public
//! key `audit verify` finds records cut off the end, which an intact chain hides.

use crate::util::*;
use mailferry_bench::sample::{write_maildir, SampleSpec, SizeModel};
use std::fs;
use std::path::{Path, PathBuf};

const MB: &str = "dora@example.org";

/// A real move of a small Maildir; returns the env, the move's report and its state dir.
fn moved() -> (Env, serde_json::Value, PathBuf) {
    let env = Env::new();
    let src = env.path("src");
    write_maildir(
        &src,
        &SampleSpec {
            seed: 21,
            messages: 12,
            folders: 2,
            size: SizeModel::Small,
            markers: None,
        },
    )
    .unwrap();
    init_volume(&env);
    let (code, report, o) = move_maildir(&env, &src, MB);
    assert_eq!(code, 0, "{}", describe(&o));
    let state = env.path(&format!("state-{MB}"));
    (env, report.expect("a JSON report"), state)
}

/// `audit public-key DIR --out FILE` (with the volume's key for a volume).
fn public_key(env: &Env, dir: &Path, out: &str) -> PathBuf {
    let out = env.path(out);
    let mut cmd = mailferry();
    cmd.args(["audit", "public-key"])
        .arg(dir)
        .arg("--out")
        .arg(&out);
    if dir == env.volume() {
        cmd.arg("--key-file").arg(env.key());
    }
    let o = run(&mut cmd);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(
        fs::read_to_string(&out)
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----"),
        "a PEM public key"
    );
    out
}

fn verify(dir: &Path, key: Option<&Path>) -> (i32, String) {
    let mut cmd = mailferry();
    cmd.args(["audit", "verify"]).arg(dir);
    if let Some(k) = key {
        cmd.arg("--public-key").arg(k);
    }
    let o = run(&mut cmd);
    (o.status.code().unwrap_or(-1), describe(&o))
}

/// Removes the last line of the log in `dir`; returns how many records are left.
fn cut_last_record(dir: &Path) -> usize {
    let path = dir.join("audit.jsonl");
    let bytes = fs::read(&path).unwrap();
    let keep = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    fs::write(&path, &bytes[..keep]).unwrap();
    bytes[..keep].iter().filter(|&&b| b == b'\n').count()
}

fn head_file(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join("audit.head")).unwrap()).unwrap()
}

#[test]
fn issue21_a_log_truncated_by_one_record_is_detected_with_the_public_key_and_not_without_it() {
    let (env, _, state) = moved();
    for (dir, name) in [(env.volume(), "volume.pub"), (state.clone(), "source.pub")] {
        let key = public_key(&env, &dir, name);
        let (code, out) = verify(&dir, Some(&key));
        assert_eq!(
            code, 0,
            "the intact log verifies against its signed head: {out}"
        );
        assert!(out.contains("with exactly the signed hash"), "{out}");

        let signed = head_file(&dir);
        let left = cut_last_record(&dir);
        assert_eq!(
            signed["seq"].as_u64().unwrap(),
            left as u64 + 1,
            "the head covered the cut record"
        );

        let (code, out) = verify(&dir, None);
        assert_eq!(code, 0, "without the key the shorter chain passes: {out}");
        assert!(out.contains("chain intact"), "{out}");
        assert!(out.contains("signed head not checked"), "{out}");
        assert!(out.contains("--public-key"), "says how to check it: {out}");

        let (code, out) = verify(&dir, Some(&key));
        assert_eq!(code, 1, "{out}");
        let expected = format!(
            "records cut off the end: the signed head of {} covers {} records, the log has {}",
            signed["time"].as_str().unwrap(),
            left + 1,
            left
        );
        assert!(out.contains(&expected), "expected {expected:?} in {out}");
    }
}

#[test]
fn issue21_a_head_signed_by_another_key_edited_or_removed_is_refused() {
    let (env, _, state) = moved();
    let volume_key = public_key(&env, &env.volume(), "volume.pub");
    let source_key = public_key(&env, &state, "source.pub");
    assert_ne!(
        fs::read(&volume_key).unwrap(),
        fs::read(&source_key).unwrap()
    );

    // The source's key does not sign the volume's head.
    let (code, out) = verify(&env.volume(), Some(&source_key));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not by the given public key"), "{out}");

    // A head file edited to cover one more record (after a record was appended to match).
    let head_path = env.volume().join("audit.head");
    let original = fs::read_to_string(&head_path).unwrap();
    let mut edited: serde_json::Value = serde_json::from_str(&original).unwrap();
    edited["seq"] = (edited["seq"].as_u64().unwrap() + 1).into();
    fs::write(&head_path, serde_json::to_string(&edited).unwrap() + "\n").unwrap();
    let (code, out) = verify(&env.volume(), Some(&volume_key));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("signature does not verify"), "{out}");

    // No head file: nothing can be said about the end, so it fails.
    fs::remove_file(&head_path).unwrap();
    let (code, out) = verify(&env.volume(), Some(&volume_key));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no signed head"), "{out}");
    fs::write(&head_path, original).unwrap();
    let (code, out) = verify(&env.volume(), Some(&volume_key));
    assert_eq!(code, 0, "{out}");
}

/// The move record carries both signed heads; the volume's log pins the source's, and
/// records appended after a head are reported, not refused.
#[test]
fn issue21_the_receipt_carries_both_signed_heads() {
    let (env, report, state) = moved();
    let receipt = &report["receipt"];
    let dst = &receipt["destination_head"];
    let src = &receipt["source_head"];
    assert_eq!(dst["side"], "destination");
    assert_eq!(src["side"], "source");
    assert_eq!(
        dst,
        &head_file(&env.volume()),
        "nothing was appended to the volume's log after the receipt's head"
    );
    let pass_receipt = mailferry_audit::read_records(env.volume().join("audit.jsonl"))
        .unwrap()
        .into_iter()
        .rfind(|e| e.event == "pass.receipt")
        .unwrap();
    assert_eq!(
        &serde_json::Value::Object(pass_receipt.data)["source_head"],
        src
    );

    // Both heads check against the logs with the exported keys.
    for (head, dir, name) in [(dst, env.volume(), "v.pub"), (src, state.clone(), "s.pub")] {
        let key = mailferry_audit::PublicKey::read(&public_key(&env, &dir, name)).unwrap();
        let head: mailferry_audit::SignedHead = serde_json::from_value(head.clone()).unwrap();
        mailferry_audit::verify_signed(dir.join("audit.jsonl"), &head, &key).unwrap();
    }

    // The HTML move record shows them.
    let o = run(mailferry()
        .args(["report", "--format", "html", "--out", "-", "--state"])
        .arg(&state));
    assert!(o.status.success(), "{}", describe(&o));
    let html = String::from_utf8(o.stdout).unwrap();
    assert!(html.contains("Signed audit heads"), "{html}");
    assert!(html.contains(dst["key"].as_str().unwrap()));
    assert!(html.contains(src["key"].as_str().unwrap()));

    // A record appended without signing (replication records itself without the key)
    // is reported as after the head.
    let replica = env.path("replica");
    let o = run(mailferry()
        .args(["volume", "replicate", "--volume"])
        .arg(env.volume())
        .arg("--to")
        .arg(&replica));
    assert!(o.status.success(), "{}", describe(&o));
    let key = public_key(&env, &env.volume(), "v2.pub");
    let (code, out) = verify(&env.volume(), Some(&key));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 record(s) after the signed head"), "{out}");
}

/// The documented limit, and its answer: a volume log cut back to an earlier pass with its
/// head file rolled back to that pass's head passes `audit verify --public-key` (both are
/// valid, only older), and fails `receipt verify --volume-public-key`, which checks the
/// head the move record of the last pass carries.
#[test]
fn issue21_a_cut_log_with_a_rolled_back_head_file_is_found_by_the_receipt() {
    let (env, _, state) = moved();
    let key = public_key(&env, &env.volume(), "volume.pub");
    let source_key = public_key(&env, &state, "source.pub");
    let log = env.volume().join("audit.jsonl");
    let head = env.volume().join("audit.head");
    let (log_1, head_1) = (fs::read(&log).unwrap(), fs::read(&head).unwrap());

    // A second pass with one more message.
    let src = env.path("src");
    let cur = fs::read_dir(src.join("cur"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    fs::write(src.join("cur/extra-21:2,S"), fs::read(cur).unwrap()).unwrap();
    let (code, _, o) = move_maildir(&env, &src, MB);
    assert_eq!(code, 0, "{}", describe(&o));

    let receipt_verify = |keys: &[(&str, &Path)]| {
        let mut cmd = mailferry();
        cmd.args(["receipt", "verify", "--state"])
            .arg(&state)
            .arg("--volume")
            .arg(env.volume())
            .arg("--key-file")
            .arg(env.key());
        for (flag, k) in keys {
            cmd.arg(flag).arg(k);
        }
        let o = run(&mut cmd);
        (o.status.code().unwrap_or(-1), describe(&o))
    };
    let both = [
        ("--volume-public-key", key.as_path()),
        ("--source-public-key", source_key.as_path()),
    ];
    let (code, out) = receipt_verify(&both);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("destination audit log holds the move record's signed head"),
        "{out}"
    );
    assert!(
        out.contains("source audit log holds the move record's signed head"),
        "{out}"
    );

    // Roll the volume's log and head file back to the first pass.
    fs::write(&log, &log_1).unwrap();
    fs::write(&head, &head_1).unwrap();
    let (code, out) = verify(&env.volume(), Some(&key));
    assert_eq!(code, 0, "the head file alone cannot show this: {out}");
    let (code, out) = receipt_verify(&both[..1]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("destination audit log against the move record's signed head"),
        "{out}"
    );
}

/// A remote move (`serve` in another process): the volume signs its head when each
/// session ends, so the destination log is covered while the service keeps running.
#[test]
fn issue21_a_remote_move_leaves_a_signed_destination_head() {
    let env = Env::new();
    let src = env.path("src");
    write_maildir(
        &src,
        &SampleSpec {
            seed: 22,
            messages: 8,
            folders: 1,
            size: SizeModel::Small,
            markers: None,
        },
    )
    .unwrap();
    init_volume(&env);
    let key = public_key(&env, &env.volume(), "volume.pub");
    let token = env.path("example.org.token");
    crate::serve::issue_token(&env, "example.org", &token);
    let serve = crate::serve::start_serve(&env, &[]);
    let o = run(mailferry()
        .arg("move")
        .arg("--source")
        .arg(format!("maildir:{}", src.display()))
        .args(["--mailbox", MB, "--proxy", &serve.url(), "--ca"])
        .arg(&serve.ca)
        .arg("--token-file")
        .arg(&token)
        .arg("--state")
        .arg(env.path("state"))
        .arg("--json"));
    assert!(o.status.success(), "{}", describe(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["receipt"]["source_head"]["side"], "source");
    assert!(
        r["receipt"].get("destination_head").is_none(),
        "not known to the agent"
    );

    let (code, out) = verify(&env.volume(), Some(&key));
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("after the signed head"),
        "the session's records are covered: {out}"
    );
    let stored = mailferry_audit::read_records(env.volume().join("audit.jsonl"))
        .unwrap()
        .iter()
        .filter(|e| e.event == "message.stored")
        .count();
    assert_eq!(stored, 8);
    serve.stop();
}

/// A replica carries the volume's signed head with its log: `audit verify --public-key`
/// passes on it as on the volume, and finds a record cut off the replica's log.
#[test]
fn issue21_a_replica_carries_the_signed_head() {
    let (env, _, _) = moved();
    let key = public_key(&env, &env.volume(), "volume.pub");
    let replica = env.path("replica");
    let o = run(mailferry()
        .args(["volume", "replicate", "--volume"])
        .arg(env.volume())
        .arg("--to")
        .arg(&replica));
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(head_file(&replica), head_file(&env.volume()));
    let (code, out) = verify(&replica, Some(&key));
    assert_eq!(code, 0, "{out}");
    cut_last_record(&replica);
    let (code, out) = verify(&replica, Some(&key));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cut off the end"), "{out}");
}
