//! Issue 5: audit logs on both sides, reconciliation, move receipts and reports.

use crate::util::*;
use mailferry_bench::sample::{write_maildir, SampleSpec, SizeModel};
use std::fs;
use std::path::{Path, PathBuf};

const MB: &str = "carol@example.net";

fn moved(n: usize) -> (Env, PathBuf) {
    let env = Env::new();
    let src = env.path("src");
    write_maildir(
        &src,
        &SampleSpec {
            seed: 11,
            messages: n,
            folders: 4,
            size: SizeModel::Small,
            markers: None,
        },
    )
    .unwrap();
    init_volume(&env);
    let (code, _, o) = move_maildir(&env, &src, MB);
    assert_eq!(code, 0, "{}", describe(&o));
    (env, src)
}

fn state(env: &Env) -> PathBuf {
    env.path(&format!("state-{MB}"))
}

fn audit_verify(dir: &Path) -> std::process::Output {
    run(mailferry().args(["audit", "verify"]).arg(dir))
}

fn reconcile(env: &Env) -> (i32, serde_json::Value, std::process::Output) {
    let o = run(mailferry()
        .args(["audit", "reconcile", "--json", "--state"])
        .arg(state(env))
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key()));
    let v = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (o.status.code().unwrap_or(-1), v, o)
}

/// Every kind of tampering with one record of either log is found, naming the line.
#[test]
fn issue5_tampered_logs_fail_verification_naming_the_record() {
    let (env, _) = moved(30);
    for log_dir in [state(&env), env.volume()] {
        let path = log_dir.join("audit.jsonl");
        let original = fs::read(&path).unwrap();
        let o = audit_verify(&log_dir);
        assert!(o.status.success(), "{}", describe(&o));
        let lines: Vec<&[u8]> = original.split_inclusive(|&b| b == b'\n').collect();
        assert!(lines.len() > 20);
        let k = 10; // 0-based: line 11
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut flipped = original.clone();
        let at = lines[..k].iter().map(|l| l.len()).sum::<usize>() + lines[k].len() / 2;
        flipped[at] ^= 0x04;
        cases.push(("flip", flipped));
        cases.push((
            "delete",
            lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != k)
                .flat_map(|(_, l)| l.to_vec())
                .collect(),
        ));
        let mut swapped = lines.clone();
        swapped.swap(k, k + 1);
        cases.push(("reorder", swapped.concat()));
        let mut inserted = lines.clone();
        inserted.insert(k, lines[k]);
        cases.push(("insert", inserted.concat()));
        for (what, bytes) in cases {
            fs::write(&path, &bytes).unwrap();
            let o = audit_verify(&log_dir);
            assert_eq!(
                o.status.code(),
                Some(1),
                "{what} in {}: {}",
                path.display(),
                describe(&o)
            );
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains("line 11") || err.contains("line 12"),
                "{what}: the bad record is not named: {err}"
            );
        }
        fs::write(&path, &original).unwrap();
    }
}

#[test]
fn issue5_reconcile_agrees_then_catches_removed_and_altered_messages() {
    let (env, _) = moved(40);
    let (code, v, o) = reconcile(&env);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(v["agreeing"], 40);
    let o = run(mailferry()
        .args(["receipt", "verify", "--state"])
        .arg(state(&env))
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key()));
    assert!(o.status.success(), "{}", describe(&o));

    let check_records = || {
        run(mailferry()
            .args(["audit", "verify"])
            .arg(env.volume())
            .arg("--key-file")
            .arg(env.key()))
    };
    let o = check_records();
    assert!(o.status.success(), "{}", describe(&o));

    // Behind the tool's back: drop one message from the index, damage another at rest.
    let db = rusqlite::Connection::open(env.volume().join("index.sqlite")).unwrap();
    let removed: i64 = db
        .query_row("SELECT MAX(id) FROM messages", [], |r| r.get(0))
        .unwrap();
    db.execute("DELETE FROM messages WHERE id = ?1", [removed])
        .unwrap();
    drop(db);
    let seg = fs::read_dir(env.volume().join("segments"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = fs::read(&seg).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x80;
    fs::write(&seg, &bytes).unwrap();

    let (code, v, o) = reconcile(&env);
    assert_eq!(code, 1, "{}", describe(&o));
    assert_eq!(
        v["removed_from_volume"],
        serde_json::json!([removed]),
        "{v}"
    );
    assert_eq!(v["missing"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["altered"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["agreeing"], 38, "{v}");
    let o = check_records();
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!(
            "message {removed} has a record but is not in the volume"
        )),
        "{}",
        describe(&o)
    );
    let o = run(mailferry()
        .args(["receipt", "verify", "--state"])
        .arg(state(&env))
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key()));
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
}

#[test]
fn issue5_killed_moves_leave_logs_that_verify_and_reconcile_after_resume() {
    let env = Env::new();
    let src = env.path("src");
    write_maildir(
        &src,
        &SampleSpec {
            seed: 12,
            messages: 1200,
            folders: 5,
            size: SizeModel::Small,
            markers: None,
        },
    )
    .unwrap();
    init_volume(&env);
    let st = state(&env);
    for threshold in [0, 1, 250, 700] {
        move_and_kill(&env, &src, MB, threshold);
        // Whatever the moment, neither chain is broken: each log verifies, or at worst
        // ends in a torn line from the interrupted write, which the next open cuts off.
        for dir in [st.clone(), env.volume()] {
            if !dir.join("audit.jsonl").exists() {
                continue;
            }
            let o = audit_verify(&dir);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                o.status.success() || err.contains("torn tail"),
                "after kill at {threshold}, {}: {}",
                dir.display(),
                describe(&o)
            );
        }
    }
    let (code, _, o) = move_maildir(&env, &src, MB);
    assert_eq!(code, 0, "{}", describe(&o));
    for dir in [st.clone(), env.volume()] {
        let o = audit_verify(&dir);
        assert!(o.status.success(), "{}", describe(&o));
    }
    let (code, v, o) = reconcile(&env);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(v["agreeing"], 1200, "{v}");
}

/// The shape of a JSON value: object keys with the shape of their values, the shape of
/// an array's first element, or the type name.
fn shape(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value as V;
    match v {
        V::Object(m) => V::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        V::Array(a) => V::Array(a.first().map(shape).into_iter().collect()),
        V::String(_) => V::String("string".into()),
        V::Number(_) => V::String("number".into()),
        V::Bool(_) => V::String("bool".into()),
        V::Null => V::String("null".into()),
    }
}

#[test]
fn issue5_report_json_schema_is_stable_and_html_is_self_contained() {
    let env = Env::new();
    let src = env.path("src");
    write_maildir(
        &src,
        &SampleSpec {
            seed: 13,
            messages: 60,
            folders: 3,
            size: SizeModel::Small,
            markers: None,
        },
    )
    .unwrap();
    fs::write(src.join("new/1700000009.empty.host"), b"").unwrap();
    init_volume(&env);
    let (code, _, o) = move_maildir(&env, &src, MB);
    assert_eq!(code, 3, "bad item over the limit: {}", describe(&o));
    let (code, _, o) = move_maildir(&env, &src, MB);
    assert_eq!(
        code,
        3,
        "a Failed move is retried, and fails again: {}",
        describe(&o)
    );

    let json_out = env.path("record.json");
    let o = run(mailferry()
        .args(["report", "--format", "json", "--state"])
        .arg(state(&env))
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--out")
        .arg(&json_out));
    assert!(o.status.success(), "{}", describe(&o));
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&json_out).unwrap()).unwrap();
    assert_eq!(
        v["passes"].as_array().unwrap().len(),
        2,
        "move records keep every pass"
    );
    assert_eq!(
        v["passes"][0]["bad_items"][0]["item"],
        "INBOX/1700000009.empty.host"
    );
    assert!(v["passes"][0]["receipt"]["matches"].as_bool().unwrap());
    let got = serde_json::to_string_pretty(&shape(&v)).unwrap() + "\n";
    let snap =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/move-record.schema.json");
    if std::env::var_os("MAILFERRY_UPDATE_SNAPSHOTS").is_some() {
        fs::write(&snap, &got).unwrap();
    }
    let want = fs::read_to_string(&snap).expect("snapshot tests/data/move-record.schema.json");
    assert_eq!(got, want, "the move record's JSON schema changed; if intended, rerun with MAILFERRY_UPDATE_SNAPSHOTS=1");

    let html_out = env.path("record.html");
    let o = run(mailferry()
        .args(["report", "--format", "html", "--state"])
        .arg(state(&env))
        .arg("--out")
        .arg(&html_out));
    assert!(o.status.success(), "{}", describe(&o));
    let html = fs::read_to_string(&html_out).unwrap();
    assert!(
        html.contains("<svg") && html.contains("<polyline"),
        "no plot"
    );
    assert!(
        html.contains("INBOX/1700000009.empty.host"),
        "skipped item not listed"
    );
    for external in [
        "http:", "https:", "//", "src=", "<script", "@import", "url(",
    ] {
        assert!(
            !html.contains(external),
            "HTML refers to something outside itself: {external}"
        );
    }

    // A real browser, with no network, renders it and finds the plot.
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(chromium) = chromium else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required in CI (./test.sh installs it)"
        );
        eprintln!(
            "chromium not installed: browser rendering not checked here (./test.sh installs it)"
        );
        return;
    };
    let profile = env.path("chromium-profile");
    let browser = || {
        let mut c = std::process::Command::new(chromium);
        // No network and nothing of its own: the flags that keep Chromium off the network.
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()));
        c
    };
    let o = run(browser()
        .arg("--dump-dom")
        .arg(format!("file://{}", html_out.display())));
    assert!(o.status.success(), "{}", describe(&o));
    let dom = String::from_utf8_lossy(&o.stdout);
    assert!(
        dom.contains("<svg") && dom.contains("Move record"),
        "browser DOM lacks the report: {dom}"
    );
    let shot = env.path("report.png");
    let o = run(browser()
        .arg("--window-size=1000,1400")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html_out.display())));
    assert!(o.status.success(), "{}", describe(&o));
    assert!(
        fs::metadata(&shot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false),
        "no screenshot"
    );
    if let Some(keep) = std::env::var_os("MAILFERRY_KEEP_SCREENSHOT") {
        fs::copy(&shot, keep).unwrap();
    }
}

/// A crash after a batch's index commit but before its audit records were synced leaves
/// durable messages without records; opening the volume writes them.
#[test]
fn issue5_messages_committed_without_records_are_recorded_at_open() {
    let (env, _) = moved(25);
    let path = env.volume().join("audit.jsonl");
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Drop the receipt and the last three message records, as if never synced.
    let kept = lines[..lines.len() - 4].join("\n") + "\n";
    fs::write(&path, kept).unwrap();
    let (code, v, o) = reconcile(&env);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(v["unlogged"].as_array().unwrap().len(), 0, "{v}");
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.matches("\"recovered\":true").count(), 3, "{text}");
    assert!(audit_verify(&env.volume()).status.success());
}
