//! Issue 8: the volume for the long run, through the real binary: recovery key,
//! passphrase, unlock-check, the move's recovery-key check, rekey, rotation, shredding,
//! compaction, ciphertext-only replicas, and move/export with every kind of credential.

use crate::util::*;
use std::path::Path;

fn maildir(root: &Path, n: usize, marker: &str) {
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    for i in 0..n {
        std::fs::write(
            root.join("cur")
                .join(format!("17000000{i:02}.M{i}P1.host:2,S")),
            format!(
                "Subject: {marker} message {i}\r\nFrom: a@example.org\r\n\r\nbody {marker} {i}\r\n"
            ),
        )
        .unwrap();
    }
}

fn volume(args: &[&str], env: &Env, extra: &[&Path]) -> std::process::Output {
    let mut c = mailferry();
    // `volume SUB --volume V <args...> <extra paths...>`: args end with the flag whose
    // value is the first extra path.
    c.arg("volume")
        .arg(args[0])
        .arg("--volume")
        .arg(env.volume())
        .args(&args[1..]);
    for p in extra {
        c.arg(p);
    }
    run(&mut c)
}

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}", describe(o));
}

#[test]
fn issue8_init_writes_a_recovery_key_that_unlocks_and_a_wrong_one_does_not() {
    let env = Env::new();
    let o = volume(&["init", "--key-file"], &env, &[&env.key()]);
    ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    let rec = env.path("volume.key.recovery");
    assert!(
        out.contains("recovery key") && out.contains("OFF this machine"),
        "{out}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&rec).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = snapshot(&env.volume());
    for flag in ["--key-file", "--recovery-key-file"] {
        let p = if flag == "--key-file" {
            env.key()
        } else {
            rec.clone()
        };
        let o = volume(&["unlock-check", flag], &env, &[&p]);
        ok(&o);
        assert!(String::from_utf8_lossy(&o.stdout).starts_with("ok:"));
    }
    std::fs::write(env.path("bad.recovery"), "00".repeat(32)).unwrap();
    let o = volume(
        &["unlock-check", "--recovery-key-file"],
        &env,
        &[&env.path("bad.recovery")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong key"));
    // unlock-check touched nothing.
    assert_eq!(snapshot(&env.volume()), before);
    // Two credentials at once are a usage error.
    let mut c = mailferry();
    c.args(["volume", "unlock-check", "--volume"])
        .arg(env.volume());
    c.arg("--key-file")
        .arg(env.key())
        .arg("--recovery-key-file")
        .arg(&rec);
    assert_eq!(run(&mut c).status.code(), Some(2));
}

#[test]
fn issue8_move_refuses_a_volume_without_recovery_key_unless_acknowledged() {
    let env = Env::new();
    ok(&volume(
        &["init", "--no-recovery-key", "--key-file"],
        &env,
        &[&env.key()],
    ));
    assert!(!env.path("volume.key.recovery").exists());
    let src = env.path("Maildir");
    maildir(&src, 3, "MARKER8A");
    let (code, _, o) = move_maildir(&env, &src, "alice@example.org");
    assert_eq!(code, 2, "{}", describe(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--no-recovery-key"));
    let o = run(mailferry()
        .arg("move")
        .arg("--source")
        .arg(format!("maildir:{}", src.display()))
        .args(["--mailbox", "alice@example.org", "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--state")
        .arg(env.path("state"))
        .arg("--no-recovery-key"));
    ok(&o);
}

#[test]
fn issue8_passphrase_volume_rekey_rotate_and_shred_through_the_cli() {
    let env = Env::new();
    let pass = env.path("pass");
    std::fs::write(&pass, "a long passphrase\n").unwrap();
    ok(&volume(&["init", "--passphrase-file"], &env, &[&pass]));
    let rec = env.path("pass.recovery");
    assert!(rec.exists());
    // Rekey from the passphrase to a key file; the passphrase then no longer opens it.
    ok(&volume(
        &["rekey", "--passphrase-file"],
        &env,
        &[&pass, Path::new("--new-key-file"), &env.key()],
    ));
    let o = volume(&["unlock-check", "--passphrase-file"], &env, &[&pass]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    ok(&volume(
        &["unlock-check", "--key-file"],
        &env,
        &[&env.key()],
    ));
    ok(&volume(
        &["unlock-check", "--recovery-key-file"],
        &env,
        &[&rec],
    ));

    let (a, b) = (env.path("A"), env.path("B"));
    maildir(&a, 4, "MARKER8B");
    maildir(&b, 2, "MARKER8C");
    assert_eq!(move_maildir(&env, &a, "alice@example.org").0, 0);
    assert_eq!(move_maildir(&env, &b, "bob@example.org").0, 0);
    ok(&volume(
        &["rotate", "--mailbox", "alice@example.org", "--key-file"],
        &env,
        &[&env.key()],
    ));
    ok(&volume(
        &["rotate", "--tenant", "example.org", "--key-file"],
        &env,
        &[&env.key()],
    ));
    // Moving again after the rotation stores nothing twice.
    let (code, report, o) = move_maildir(&env, &a, "alice@example.org");
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(report.unwrap()["items_moved"], 0);
    let o = export(&env, "alice@example.org", &env.path("out-a1"));
    ok(&o);
    assert_eq!(read_maildir(&env.path("out-a1")).len(), 4);

    let o = volume(
        &["shred", "--mailbox", "alice@example.org", "--key-file"],
        &env,
        &[&env.key()],
    );
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("4 message(s)"));
    let o = export(&env, "alice@example.org", &env.path("out-a2"));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("shredded"),
        "{}",
        describe(&o)
    );
    ok(&export(&env, "bob@example.org", &env.path("out-b")));
    assert_eq!(read_maildir(&env.path("out-b")).len(), 2);
    let o = volume(&["verify", "--json", "--recovery-key-file"], &env, &[&rec]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["messages_checked"].as_u64(), v["shredded"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(v["damaged"].as_array().unwrap().len(), 0);
    // No plaintext marker of either mailbox anywhere in the volume.
    for (p, bytes) in all_files(&env.volume()) {
        for m in ["MARKER8B", "MARKER8C"] {
            assert!(!contains(&bytes, m.as_bytes()), "{m} in {}", p.display());
        }
    }
}

/// Total bytes of the segment files of a volume.
fn segment_bytes(vol: &Path) -> u64 {
    std::fs::read_dir(vol.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(o)))
}

#[test]
fn issue8_move_export_and_compact_with_passphrase_and_recovery_key() {
    let env = Env::new();
    let pass = env.path("pass");
    std::fs::write(&pass, "a long passphrase\n").unwrap();
    ok(&volume(&["init", "--passphrase-file"], &env, &[&pass]));
    let rec = env.path("pass.recovery");
    let (a, b) = (env.path("A"), env.path("B"));
    maildir(&a, 5, "MARKER8D");
    maildir(&b, 4, "MARKER8E");
    // `move` takes the passphrase file and the recovery key file like `volume` does.
    for (src, mb, flag, cred) in [
        (&a, "alice@example.org", "--passphrase-file", &pass),
        (&b, "bob@example.org", "--recovery-key-file", &rec),
    ] {
        let o = run(mailferry()
            .arg("move")
            .arg("--source")
            .arg(format!("maildir:{}", src.display()))
            .args(["--mailbox", mb, "--volume"])
            .arg(env.volume())
            .arg(flag)
            .arg(cred)
            .arg("--state")
            .arg(env.path(&format!("state-{mb}")))
            .arg("--json"));
        ok(&o);
        assert_eq!(
            json(&o)["items_moved"],
            if mb.starts_with('a') { 5 } else { 4 }
        );
    }
    ok(&volume(
        &["shred", "--mailbox", "bob@example.org", "--passphrase-file"],
        &env,
        &[&pass],
    ));
    let before = segment_bytes(&env.volume());
    let o = volume(&["compact", "--json", "--passphrase-file"], &env, &[&pass]);
    ok(&o);
    let out = json(&o);
    assert_eq!(out["messages_dropped"], 4, "{out}");
    assert_eq!(out["messages_moved"], 5, "{out}");
    let after = segment_bytes(&env.volume());
    assert!(after < before, "{before} -> {after}");
    assert_eq!(out["bytes_after"].as_u64(), Some(after));
    // Every remaining message exports byte-identical, through the recovery key.
    let exported = env.path("out-a");
    let o = run(mailferry()
        .arg("export")
        .arg("--volume")
        .arg(env.volume())
        .arg("--recovery-key-file")
        .arg(&rec)
        .args(["--mailbox", "alice@example.org", "--out"])
        .arg(&exported));
    ok(&o);
    let source: Vec<Vec<u8>> = read_maildir(&a).into_values().map(|(_, b)| b).collect();
    let out: Vec<Vec<u8>> = read_maildir(&exported)
        .into_values()
        .map(|(_, b)| b)
        .collect();
    assert_eq!(out, source);
    let o = volume(&["verify", "--json", "--passphrase-file"], &env, &[&pass]);
    ok(&o);
    let v = json(&o);
    assert_eq!(
        (v["messages_checked"].as_u64(), v["shredded"].as_u64()),
        (Some(5), Some(0))
    );
    // --key-file still works for export (the passphrase volume has none: wrong key, 2).
    std::fs::write(env.key(), [7u8; 32]).unwrap();
    let o = export(&env, "alice@example.org", &env.path("out-wrong"));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    // The audit log names nobody in plaintext.
    let log = std::fs::read_to_string(env.volume().join("audit.jsonl")).unwrap();
    assert!(log.contains("volume.compacted"));
    assert!(!log.contains("bob@example.org"));
}

#[test]
fn issue8_replicate_copies_only_ciphertext_incrementally_and_the_replica_verifies() {
    let env = Env::new();
    init_volume(&env);
    let replica = env.path("replica");
    let (a, b) = (env.path("A"), env.path("B"));
    maildir(&a, 6, "MARKER8F");
    maildir(&b, 3, "MARKER8G");
    assert_eq!(move_maildir(&env, &a, "alice@example.org").0, 0);

    let replicate = || {
        let o = run(mailferry()
            .args(["volume", "replicate", "--json", "--volume"])
            .arg(env.volume())
            .arg("--to")
            .arg(&replica));
        ok(&o);
        json(&o)
    };
    let first = replicate();
    assert_eq!(first["segments_copied"], 1, "{first}");
    assert_eq!(
        first["segment_bytes_copied"].as_u64(),
        Some(segment_bytes(&env.volume()))
    );
    let verify_replica = |n: u64| {
        let o = run(mailferry()
            .args(["volume", "verify", "--json", "--volume"])
            .arg(&replica)
            .arg("--key-file")
            .arg(env.key()));
        ok(&o);
        assert_eq!(json(&o)["messages_checked"].as_u64(), Some(n));
    };
    verify_replica(6);

    // New mail appends to the same segment: the second run copies only the new bytes.
    let replica_seg_before = segment_bytes(&replica);
    assert_eq!(move_maildir(&env, &b, "bob@example.org").0, 0);
    let second = replicate();
    assert_eq!(
        (
            second["segments_copied"].as_u64(),
            second["segments_appended"].as_u64()
        ),
        (Some(0), Some(1)),
        "{second}"
    );
    assert_eq!(
        second["segment_bytes_copied"].as_u64(),
        Some(segment_bytes(&env.volume()) - replica_seg_before)
    );
    assert_eq!(segment_bytes(&replica), segment_bytes(&env.volume()));
    // Nothing new: nothing copied.
    let third = replicate();
    assert_eq!(third["segment_bytes_copied"], 0, "{third}");
    assert_eq!(third["segments_unchanged"], 1, "{third}");
    verify_replica(9);
    // The replica exports what the source holds.
    let o = run(mailferry()
        .arg("export")
        .arg("--volume")
        .arg(&replica)
        .arg("--key-file")
        .arg(env.key())
        .args(["--mailbox", "bob@example.org", "--out"])
        .arg(env.path("out-b")));
    ok(&o);
    let source: Vec<Vec<u8>> = read_maildir(&b).into_values().map(|(_, b)| b).collect();
    let out: Vec<Vec<u8>> = read_maildir(&env.path("out-b"))
        .into_values()
        .map(|(_, b)| b)
        .collect();
    assert_eq!(out, source);

    // After a shred and a compaction the replica follows: old segment removed.
    ok(&volume(
        &["shred", "--mailbox", "bob@example.org", "--key-file"],
        &env,
        &[&env.key()],
    ));
    ok(&volume(&["compact", "--key-file"], &env, &[&env.key()]));
    let fourth = replicate();
    assert_eq!(fourth["segments_removed"], 1, "{fourth}");
    assert_eq!(fourth["segments_copied"], 1, "{fourth}");
    verify_replica(6);

    // No plaintext marker anywhere in the replica, and the source logged each run.
    for (p, bytes) in all_files(&replica) {
        for m in [
            "MARKER8F",
            "MARKER8G",
            "alice@example.org",
            "bob@example.org",
        ] {
            assert!(!contains(&bytes, m.as_bytes()), "{m} in {}", p.display());
        }
    }
    let log = std::fs::read_to_string(env.volume().join("audit.jsonl")).unwrap();
    assert_eq!(log.matches("volume.replicated").count(), 4);

    // A directory holding something else is refused, and so is the volume itself.
    std::fs::create_dir_all(env.path("other")).unwrap();
    std::fs::write(env.path("other/notes.txt"), "x").unwrap();
    for to in [env.path("other"), env.volume()] {
        let o = run(mailferry()
            .args(["volume", "replicate", "--volume"])
            .arg(env.volume())
            .arg("--to")
            .arg(&to));
        assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains("replica"));
    }
}

#[test]
fn issue8_rotate_reencrypt_through_the_cli_exports_identical_and_dedups() {
    let env = Env::new();
    ok(&volume(&["init", "--key-file"], &env, &[&env.key()]));
    let (a, b) = (env.path("A"), env.path("B"));
    maildir(&a, 5, "MARKER8R");
    maildir(&b, 2, "MARKER8S");
    assert_eq!(move_maildir(&env, &a, "alice@example.org").0, 0);
    assert_eq!(move_maildir(&env, &b, "bob@example.org").0, 0);
    ok(&export(&env, "alice@example.org", &env.path("before-a")));
    ok(&export(&env, "bob@example.org", &env.path("before-b")));
    let before_a = read_maildir(&env.path("before-a"));
    let before_b = read_maildir(&env.path("before-b"));
    assert_eq!((before_a.len(), before_b.len()), (5, 2));

    let check = |tag: &str| {
        let o = volume(&["verify", "--json", "--key-file"], &env, &[&env.key()]);
        ok(&o);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["messages_checked"].as_u64(), Some(7), "{tag}: {v}");
        assert_eq!(v["damaged"].as_array().unwrap().len(), 0, "{tag}: {v}");
        let out_a = env.path(&format!("{tag}-a"));
        let out_b = env.path(&format!("{tag}-b"));
        ok(&export(&env, "alice@example.org", &out_a));
        ok(&export(&env, "bob@example.org", &out_b));
        assert_eq!(read_maildir(&out_a), before_a, "{tag}");
        assert_eq!(read_maildir(&out_b), before_b, "{tag}");
        // Moving again stores nothing twice.
        for (src, mb) in [(&a, "alice@example.org"), (&b, "bob@example.org")] {
            let (code, report, o) = move_maildir(&env, src, mb);
            assert_eq!(code, 0, "{tag}: {}", describe(&o));
            assert_eq!(report.unwrap()["items_moved"], 0, "{tag}");
        }
    };

    let o = volume(
        &[
            "rotate",
            "--mailbox",
            "alice@example.org",
            "--reencrypt",
            "--key-file",
        ],
        &env,
        &[&env.key()],
    );
    ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("every message now uses key id 2") && out.contains("5 message(s)"),
        "{out}"
    );
    check("mailbox");

    let o = volume(
        &[
            "rotate",
            "--tenant",
            "example.org",
            "--reencrypt",
            "--key-file",
        ],
        &env,
        &[&env.key()],
    );
    ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("7 message(s)"), "{out}");
    assert!(
        out.contains("alice@example.org: every message now uses key id 3"),
        "{out}"
    );
    check("tenant");

    // The audit trail still matches the index message by message, and names no mailbox.
    ok(&run(mailferry()
        .args(["audit", "verify"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())));
    let log = std::fs::read_to_string(env.volume().join("audit.jsonl")).unwrap();
    assert_eq!(log.matches("messages.reencrypted").count(), 3);
    for (p, bytes) in all_files(&env.volume()) {
        for m in ["MARKER8R", "MARKER8S", "alice@example.org"] {
            assert!(!contains(&bytes, m.as_bytes()), "{m} in {}", p.display());
        }
    }
}
