//! Issue 3 (foundation): a mailbox moves end to end and comes back byte-identical;
//! nothing is stored twice; nothing is readable at rest; damage is named.

use crate::util::*;
use mailferry_bench::sample::{write_maildir, Markers, SampleSpec, SizeModel};
use std::fs;
use std::path::Path;

const MB: &str = "alice@example.com";

fn sample(root: &Path, messages: usize, markers: Option<Markers>) -> usize {
    let s = write_maildir(
        root,
        &SampleSpec {
            seed: 7,
            messages,
            folders: 5,
            size: SizeModel::Small,
            markers,
        },
    )
    .unwrap();
    s.messages
}

fn markers() -> Markers {
    Markers {
        subject: "ZQXSUBJECTMARKER".into(),
        body: "ZQXBODYMARKER".into(),
        address: "zqxaddressmarker".into(),
        folder: "ZQXFOLDERMARKER".into(),
    }
}

#[test]
fn issue3_moves_500_messages_and_exports_them_byte_identical_with_flags() {
    let env = Env::new();
    let src = env.path("src");
    let n = sample(&src, 520, Some(markers()));
    let source = read_maildir(&src);
    assert_eq!(source.len(), n);
    // The corpus must really have what the test claims to cover.
    let all: Vec<&Vec<u8>> = source.values().map(|(_, b)| b).collect();
    assert!(all.iter().any(|b| contains(b, b"\r\n")), "no CRLF message");
    assert!(all.iter().any(|b| !contains(b, b"\r\n")), "no LF message");
    assert!(
        all.iter()
            .any(|b| contains(b, b"=?UTF-8?") || contains(b, b"=?utf-8?")),
        "no RFC 2047"
    );
    assert!(all.iter().any(|b| b.iter().any(|&c| c >= 0x80)), "no 8-bit");
    assert!(
        all.iter().any(|b| contains(b, b"multipart/mixed")),
        "no attachment"
    );
    assert!(
        source.keys().any(|(f, _)| f.contains('&')),
        "no non-ASCII folder"
    );
    assert!(source.values().any(|(f, _)| !f.is_empty()), "no flags");

    init_volume(&env);
    let (code, report, o) = move_maildir(&env, &src, MB);
    assert_eq!(code, 0, "{}", describe(&o));
    let r = report.expect("JSON report");
    assert_eq!(r["items_total"], n as u64);
    assert_eq!(r["items_moved"], n as u64);
    assert_eq!(r["bad_items"].as_array().unwrap().len(), 0);
    for key in [
        "move_id",
        "mailbox",
        "items_skipped_duplicate",
        "bytes_moved",
        "seconds",
        "throughput_bytes_per_s",
    ] {
        assert!(r.get(key).is_some(), "report lacks {key}: {r}");
    }
    let total: u64 = source.values().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(r["bytes_moved"], total);

    let out = env.path("export");
    let o = export(&env, MB, &out);
    assert!(o.status.success(), "{}", describe(&o));
    let exported = read_maildir(&out);
    assert_eq!(exported.len(), source.len());
    for (key, (flags, bytes)) in &source {
        let (eflags, ebytes) = exported
            .get(key)
            .unwrap_or_else(|| panic!("{key:?} not exported"));
        assert_eq!(eflags, flags, "flags of {key:?}");
        assert!(ebytes == bytes, "bytes of {key:?} differ");
    }

    // No plaintext at rest: every marker is in the source, none is in the volume.
    let m = markers();
    let needles = [m.subject, m.body, m.address, m.folder];
    let src_files = all_files(&src);
    for needle in &needles {
        assert!(
            src_files.iter().any(|(p, b)| contains(b, needle.as_bytes())
                || p.to_string_lossy().contains(needle.as_str())),
            "marker {needle} not planted in the source"
        );
    }
    let vol_files = all_files(&env.volume());
    assert!(vol_files
        .iter()
        .any(|(p, _)| p.to_string_lossy().contains("wal")
            || p.to_string_lossy().ends_with(".sqlite")));
    for (path, bytes) in &vol_files {
        for needle in needles.iter().map(String::as_str).chain([
            "alice@example.com",
            "example.com",
            "INBOX",
            "Message-ID",
            "Subject:",
        ]) {
            assert!(
                !contains(bytes, needle.as_bytes()) && !path.to_string_lossy().contains(needle),
                "plaintext {needle:?} found in {}",
                path.display()
            );
        }
    }
}

#[test]
fn issue3_rerun_stores_nothing_twice_even_without_the_checkpoint() {
    let env = Env::new();
    let src = env.path("src");
    let n = sample(&src, 120, None) as u64;
    init_volume(&env);
    let (code, r, o) = move_maildir(&env, &src, MB);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(r.unwrap()["items_moved"], n);

    let (code, r, o) = move_maildir(&env, &src, MB);
    assert_eq!(code, 0, "{}", describe(&o));
    let r = r.unwrap();
    assert_eq!(r["items_moved"], 0);
    assert_eq!(r["items_skipped_duplicate"], n);

    // Lose the agent's checkpoint: the store itself recognises every message.
    fs::remove_file(env.path(&format!("state-{MB}/audit.jsonl"))).unwrap();
    let (code, r, o) = move_maildir(&env, &src, MB);
    assert_eq!(code, 0, "{}", describe(&o));
    let r = r.unwrap();
    assert_eq!(r["items_moved"], 0, "{r}");
    assert_eq!(r["items_skipped_duplicate"], n);

    let out = env.path("export");
    assert!(export(&env, MB, &out).status.success());
    assert_eq!(read_maildir(&out).len() as u64, n);
}

#[test]
fn issue3_killed_move_resumes_to_exactly_once() {
    let env = Env::new();
    let src = env.path("src");
    let n = sample(&src, 1500, None);
    init_volume(&env);
    // Kill the move with SIGKILL at several points: before anything is acknowledged,
    // and after more and more batches. Each pass resumes where the last one died.
    for threshold in [0, 1, 300, 900] {
        move_and_kill(&env, &src, MB, threshold);
    }

    let (code, r, o) = move_maildir(&env, &src, MB);
    assert_eq!(code, 0, "{}", describe(&o));
    let r = r.unwrap();
    let moved = r["items_moved"].as_u64().unwrap();
    let skipped = r["items_skipped_duplicate"].as_u64().unwrap();
    assert_eq!(moved + skipped, n as u64, "{r}");

    let o = run(mailferry()
        .args(["volume", "verify", "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key()));
    assert!(o.status.success(), "{}", describe(&o));
    let out = env.path("export");
    assert!(export(&env, MB, &out).status.success());
    // read_maildir panics on a message exported twice; equality means none is missing.
    assert_eq!(
        read_maildir(&out),
        read_maildir(&src),
        "export differs from source"
    );
}

#[test]
fn issue3_flipped_byte_is_named_and_everything_else_exports() {
    let env = Env::new();
    let src = env.path("src");
    let n = sample(&src, 40, None);
    init_volume(&env);
    let (code, _, o) = move_maildir(&env, &src, MB);
    assert_eq!(code, 0, "{}", describe(&o));

    let seg_dir = env.volume().join("segments");
    let seg = fs::read_dir(&seg_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = fs::read(&seg).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    fs::write(&seg, &bytes).unwrap();

    let o = run(mailferry()
        .args(["volume", "verify", "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--json"));
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let damaged = v["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{v}");
    let item = damaged[0]["item"].as_str().unwrap().to_string();
    assert!(
        item.contains('/'),
        "damaged item is named by folder/source id: {item}"
    );

    let out = env.path("export");
    let o = export(&env, MB, &out);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&item),
        "{}",
        describe(&o)
    );
    assert_eq!(read_maildir(&out).len(), n - 1);
    // Nothing half-written is left in tmp/.
    for (p, _) in all_files(&out) {
        let rel = p.strip_prefix(&out).unwrap();
        assert!(
            !rel.components().any(|c| c.as_os_str() == "tmp"),
            "leftover {}",
            p.display()
        );
    }
}

#[test]
fn issue3_wrong_key_is_refused_and_writes_nothing() {
    let env = Env::new();
    let src = env.path("src");
    sample(&src, 10, None);
    init_volume(&env);
    let (code, _, o) = move_maildir(&env, &src, MB);
    assert_eq!(code, 0, "{}", describe(&o));
    let before = snapshot(&env.volume());
    let wrong = env.path("wrong.key");
    fs::write(&wrong, [0x42u8; 32]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));

    for args in [
        vec![
            "move".to_string(),
            "--source".into(),
            format!("maildir:{}", src.display()),
            "--mailbox".into(),
            MB.into(),
            "--state".into(),
            env.path("st2").display().to_string(),
        ],
        vec!["volume".into(), "verify".into()],
        vec![
            "export".into(),
            "--mailbox".into(),
            MB.into(),
            "--format".into(),
            "maildir".into(),
            "--out".into(),
            env.path("ex").display().to_string(),
        ],
    ] {
        let o = run(mailferry()
            .args(&args)
            .arg("--volume")
            .arg(env.volume())
            .arg("--key-file")
            .arg(&wrong));
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", describe(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("wrong key"), "{args:?}: {err}");
    }
    assert_eq!(
        snapshot(&env.volume()),
        before,
        "the volume changed under a wrong key"
    );
    assert!(
        !env.path("ex").exists() && !env.path("st2").exists(),
        "something was created under a wrong key"
    );
}

#[test]
fn issue3_empty_files_and_bad_folders_are_bad_items_and_issue17_binary_files_are_stored() {
    let env = Env::new();
    let src = env.path("src");
    let n = sample(&src, 30, None);
    fs::write(src.join("cur/1700000000.empty.host:2,S"), b"").unwrap();
    let binary = [0x89, b'P', b'N', b'G', 0, 1, 2, 0xff, b'\n', 0];
    fs::write(src.join("new/1700000001.binary.host"), binary).unwrap();
    // Neither modified UTF-7 nor UTF-8 (issue 17: a name that is one of them moves).
    let bad_dir =
        src.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b".bad\xff"));
    fs::create_dir_all(bad_dir.join("cur")).unwrap();
    fs::write(bad_dir.join("cur/1.x.host:2,"), b"Subject: x\n\nhi\n").unwrap();
    init_volume(&env);
    let (code, r, o) = move_maildir(&env, &src, MB);
    assert_eq!(
        code,
        3,
        "bad items over the bad-item limit (default 0) make the move's exit code 3: {}",
        describe(&o)
    );
    let r = r.expect("report even when items were bad");
    // Issue 17: a binary file the source serves as a message is stored, with a warning.
    assert_eq!(r["items_moved"], n as u64 + 1);
    assert_eq!(
        r["warnings"][0]["item"], "INBOX/1700000001.binary.host",
        "{r}"
    );
    let bad = r["bad_items"].as_array().unwrap();
    let names: Vec<&str> = bad.iter().map(|b| b["item"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"INBOX/1700000000.empty.host"), "{names:?}");
    assert!(names.contains(&".bad\\xff"), "{names:?}");
    for b in bad {
        assert!(!b["reason"].as_str().unwrap().is_empty());
    }
    let out = env.path("export");
    assert!(export(&env, MB, &out).status.success());
    let exported = read_maildir(&out);
    assert_eq!(exported.len(), n + 1);
    assert_eq!(
        exported[&(String::new(), "1700000001.binary.host".to_string())].1,
        binary
    );
}

#[test]
fn issue3_bad_profile_reports_every_problem_with_exit_2() {
    let env = Env::new();
    let p = env.path("bad.toml");
    fs::write(
        &p,
        "nmae = 1\n[commit]\nmax_mesages = 3\n[transport]\nframe_bytes = 12\n",
    )
    .unwrap();
    let o = run(mailferry().args(["profile", "check"]).arg(&p));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for needle in ["nmae", "commit.max_mesages", "transport.frame_bytes"] {
        assert!(err.contains(needle), "{needle} not reported: {err}");
    }
    let o = run(mailferry()
        .args(["profile", "check", "../../migration-profiles/default.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR")));
    assert!(o.status.success(), "{}", describe(&o));
}

#[test]
fn issue3_usage_errors_exit_2_and_existing_volume_is_never_overwritten() {
    let env = Env::new();
    init_volume(&env);
    let before = snapshot(&env.volume());
    let o = run(mailferry()
        .args(["volume", "init", "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.path("other.key")));
    assert_ne!(o.status.code(), Some(0), "{}", describe(&o));
    assert_eq!(snapshot(&env.volume()), before);
    assert!(
        !env.path("other.key").exists() || fs::metadata(env.path("other.key")).unwrap().len() == 32
    );

    let o = run(mailferry()
        .args([
            "move",
            "--source",
            "maildir:/nonexistent",
            "--mailbox",
            "not-an-address",
            "--volume",
        ])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--state")
        .arg(env.path("s")));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not-an-address"));

    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(env.key()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(fs::metadata(env.key()).unwrap().len(), 32);
}

#[test]
fn issue3_demo_runs_with_nothing_set_up_and_again() {
    let env = Env::new();
    let data = env.path("demo");
    for pass in 0..2 {
        let o = run(mailferry()
            .args(["demo", "--messages", "150", "--json", "--data"])
            .arg(&data));
        assert!(o.status.success(), "pass {pass}: {}", describe(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["comparison"]["identical"], 150, "{v}");
        let moved = v["report"]["items_moved"].as_u64().unwrap();
        assert_eq!(moved, if pass == 0 { 150 } else { 0 });
        let recovery = std::path::PathBuf::from(v["recovery_key_file"].as_str().unwrap());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&recovery).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

/// Bounded memory: one 512 MiB message moves with the whole process under 160 MiB of
/// peak RSS (the kernel's VmHWM, reported by the binary itself).
#[test]
fn issue3_512_mib_message_moves_in_bounded_memory() {
    use std::io::Write;
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("cur")).unwrap();
    fs::create_dir_all(src.join("new")).unwrap();
    let path = src.join("cur/1700000000.big.host:2,S");
    let mut f = std::io::BufWriter::new(fs::File::create(&path).unwrap());
    f.write_all(
        b"From: a@example.org\r\nSubject: big\r\nContent-Type: application/octet-stream\r\n\r\n",
    )
    .unwrap();
    let mut block = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for _ in 0..512 {
        for b in block.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        f.write_all(&block).unwrap();
    }
    drop(f);
    let size = fs::metadata(&path).unwrap().len();
    init_volume(&env);
    let (code, r, o) = move_maildir(&env, &src, MB);
    assert_eq!(code, 0, "{}", describe(&o));
    let r = r.unwrap();
    assert_eq!(r["bytes_moved"], size);
    let rss = r["peak_rss_bytes"].as_u64().unwrap();
    assert!(rss > 0 && rss < 160 << 20, "peak RSS {} MiB", rss >> 20);
    fs::remove_file(&path).unwrap(); // free the disk before exporting
    let out = env.path("export");
    let o = export(&env, MB, &out);
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(
        fs::metadata(out.join("cur/1700000000.big.host:2,S"))
            .unwrap()
            .len(),
        size
    );
}
