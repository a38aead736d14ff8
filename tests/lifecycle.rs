//! Issue 7, move lifecycle and limits: suspend-when-ready → Synced → incremental passes
//! → complete → Completed (further passes refused); suspend and resume, also of a
//! running pass; complete-after; `move status --json`; the bad-item limit (exit 3,
//! Failed, copied items kept, then --approve-skipped) and the large-item limit (skipped,
//! listed, approval needed to complete). The real binary; no timing assertions.

use crate::util::*;
use mailferry_bench::sample::{write_maildir, SampleSpec, SizeModel};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

const MB: &str = "dana@example.com";

fn sample(env: &Env, messages: usize) -> (PathBuf, usize) {
    let src = env.path("src");
    let s = write_maildir(
        &src,
        &SampleSpec {
            seed: 71,
            messages,
            folders: 3,
            size: SizeModel::Small,
            markers: None,
        },
    )
    .unwrap();
    (src, s.messages)
}

fn state(env: &Env) -> PathBuf {
    env.path("state")
}

/// `mailferry move` of `src` into the test volume with `extra` flags, `--json`.
fn pass(env: &Env, src: &Path, extra: &[&str]) -> (i32, Option<Value>, Output) {
    let o = run(mailferry()
        .arg("move")
        .arg("--source")
        .arg(format!("maildir:{}", src.display()))
        .args(["--mailbox", MB, "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--state")
        .arg(state(env))
        .arg("--json")
        .args(extra));
    let report = serde_json::from_slice(&o.stdout).ok();
    (o.status.code().unwrap_or(-1), report, o)
}

/// `mailferry move <verb> --state ... [extra]`.
fn ctl(env: &Env, verb: &str, extra: &[&str]) -> Output {
    run(mailferry()
        .args(["move", verb, "--state"])
        .arg(state(env))
        .args(extra))
}

fn status(env: &Env) -> Value {
    let o = ctl(env, "status", &["--json"]);
    assert!(o.status.success(), "{}", describe(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn states(v: &Value) -> Vec<String> {
    v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap().to_string())
        .collect()
}

/// The `move.state` transitions of the source-side audit log, as `from>to`.
fn audited_transitions(env: &Env) -> Vec<String> {
    fs::read_to_string(state(env).join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["event"] == "move.state")
        .map(|r| {
            assert!(
                r["data"]["actor"].as_str().unwrap().starts_with("cli:"),
                "{r}"
            );
            format!(
                "{}>{}",
                r["data"]["from"].as_str().unwrap(),
                r["data"]["to"].as_str().unwrap()
            )
        })
        .collect()
}

fn add_message(src: &Path, name: &str) {
    fs::write(
        src.join("new").join(name),
        format!("From: x@example.org\nSubject: {name}\n\nhello\n"),
    )
    .unwrap();
}

#[test]
fn issue7_suspend_when_ready_syncs_incrementally_then_completes_and_refuses_more() {
    let env = Env::new();
    let (src, n) = sample(&env, 40);
    init_volume(&env);

    let (code, r, o) = pass(&env, &src, &["--suspend-when-ready"]);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(r.unwrap()["items_moved"], n as u64);
    let s = status(&env);
    assert_eq!(s["state"], "synced", "{s}");
    assert_eq!(s["mailbox"], MB);
    assert_eq!(s["percent_complete"], 100.0, "{s}");
    assert_eq!(s["items_synced"], n as u64, "{s}");
    assert_eq!(s["items_total"], n as u64, "{s}");
    assert_eq!(s["items_skipped"], 0);
    assert_eq!(s["items_bad"], 0);
    assert_eq!(s["passes"], 1);
    assert_eq!(s["eta_seconds"], 0.0);
    assert_eq!(s["running"], false);
    assert_eq!(s["settings"]["suspend_when_ready"], true);
    assert!(s["bytes_transferred"].as_u64().unwrap() > 0, "{s}");
    assert!(s["rate_bytes_per_s"].as_f64().unwrap() > 0.0, "{s}");
    assert!(s["last_sync_at"].as_str().unwrap().ends_with('Z'), "{s}");
    assert!(s["move_id"].as_str().unwrap().len() == 32, "{s}");
    assert_eq!(states(&s), ["created", "syncing", "synced"]);

    // Incremental passes keep it Synced; the flags given once are kept.
    add_message(&src, "1800000000.new1.host");
    let (code, r, o) = pass(&env, &src, &[]);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(r.unwrap()["items_moved"], 1);
    let s = status(&env);
    assert_eq!(s["state"], "synced");
    assert_eq!(s["reason"], "incremental pass done");
    assert_eq!(s["passes"], 2);
    assert_eq!(s["items_synced"], n as u64 + 1);
    assert_eq!(s["settings"]["suspend_when_ready"], true);

    // The final delta pass needs nothing but the state directory.
    add_message(&src, "1800000001.new2.host");
    let o = ctl(&env, "complete", &["--json"]);
    assert!(o.status.success(), "{}", describe(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["items_moved"], 1, "the final pass is a delta");
    let s = status(&env);
    assert_eq!(s["state"], "completed");
    assert_eq!(s["percent_complete"], 100.0);
    assert_eq!(s["items_synced"], n as u64 + 2);
    assert_eq!(
        states(&s),
        [
            "created",
            "syncing",
            "synced",
            "syncing",
            "synced",
            "completing",
            "completed"
        ]
    );

    // Completed: further passes are refused with exit 5 and nothing runs.
    add_message(&src, "1800000002.late.host");
    let (code, r, o) = pass(&env, &src, &[]);
    assert_eq!(code, 5, "{}", describe(&o));
    assert!(r.is_none());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("was completed") && err.contains("no more passes"),
        "{err}"
    );
    let o = ctl(&env, "complete", &[]);
    assert_eq!(o.status.code(), Some(5), "{}", describe(&o));
    assert_eq!(status(&env)["passes"], 3, "no pass ran");

    // Every transition is in the source-side audit log, which still verifies.
    assert_eq!(
        audited_transitions(&env),
        [
            "created>created",
            "created>syncing",
            "syncing>synced",
            "synced>syncing",
            "syncing>synced",
            "synced>completing",
            "completing>completed"
        ]
    );
    let o = run(mailferry().args(["audit", "verify"]).arg(state(&env)));
    assert!(o.status.success(), "{}", describe(&o));
    let o = ctl(&env, "status", &[]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(&format!("move of {MB}: completed")), "{text}");
}

#[test]
fn issue7_suspended_move_refuses_passes_until_resumed() {
    let env = Env::new();
    let (src, _) = sample(&env, 20);
    init_volume(&env);
    let (code, _, o) = pass(&env, &src, &[]);
    assert_eq!(code, 0, "{}", describe(&o));

    let o = ctl(&env, "suspend", &["--reason", "mailbox on legal hold"]);
    assert!(o.status.success(), "{}", describe(&o));
    let s = status(&env);
    assert_eq!(s["state"], "suspended");
    assert_eq!(s["reason"], "mailbox on legal hold");
    let (code, _, o) = pass(&env, &src, &[]);
    assert_eq!(code, 5, "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("move resume"),
        "{}",
        describe(&o)
    );
    let o = ctl(&env, "complete", &[]);
    assert_eq!(o.status.code(), Some(5), "{}", describe(&o));

    let o = ctl(&env, "resume", &[]);
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(status(&env)["state"], "synced");
    let o = ctl(&env, "resume", &[]);
    assert_eq!(
        o.status.code(),
        Some(5),
        "only a suspended move resumes: {}",
        describe(&o)
    );
    let (code, _, o) = pass(&env, &src, &[]);
    assert_eq!(code, 0, "{}", describe(&o));
    let s = status(&env);
    assert_eq!(
        states(&s),
        [
            "created",
            "syncing",
            "synced",
            "suspended",
            "synced",
            "syncing",
            "synced"
        ]
    );
}

#[test]
fn issue7_suspending_a_running_pass_takes_effect_when_it_ends() {
    let env = Env::new();
    let (src, n) = sample(&env, 300);
    init_volume(&env);
    // A throttled pass, so that it is still running when the suspension comes (if it is
    // not, the suspension applies at once: the end state is the same).
    let mut child = mailferry()
        .arg("move")
        .arg("--source")
        .arg(format!("maildir:{}", src.display()))
        .args(["--mailbox", MB, "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--state")
        .arg(state(&env))
        .args(["--max-messages-per-second", "150"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lifecycle = state(&env).join("lifecycle.json");
    // Bounded at 2 minutes for a loaded machine.
    for _ in 0..24_000 {
        let syncing = fs::read_to_string(&lifecycle)
            .map(|t| t.contains("\"state\": \"syncing\""))
            .unwrap_or(false);
        if syncing || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let o = ctl(&env, "suspend", &[]);
    assert!(o.status.success(), "{}", describe(&o));
    let said = String::from_utf8_lossy(&o.stderr).to_string();
    let status_code = child.wait().unwrap();
    assert!(status_code.success(), "the running pass ends normally");
    let s = status(&env);
    assert_eq!(s["state"], "suspended", "{s}");
    assert_eq!(s["items_synced"], n as u64, "the pass's work is kept: {s}");
    if said.contains("a pass is running") {
        let h = states(&s);
        assert_eq!(&h[h.len() - 2..], ["synced", "suspended"], "{s}");
    }
    let (code, _, o) = pass(&env, &src, &[]);
    assert_eq!(code, 5, "{}", describe(&o));
}

#[test]
fn issue7_complete_after_completes_on_the_first_pass_after_that_time() {
    let env = Env::new();
    let (src, _) = sample(&env, 10);
    init_volume(&env);
    let (code, _, o) = pass(&env, &src, &["--complete-after", "+2h"]);
    assert_eq!(code, 0, "{}", describe(&o));
    let s = status(&env);
    assert_eq!(s["state"], "synced", "not due yet: {s}");
    assert!(s["settings"]["complete_after"].as_str().is_some(), "{s}");
    let (code, _, o) = pass(&env, &src, &["--complete-after", "2001-01-01T00:00:00Z"]);
    assert_eq!(code, 0, "{}", describe(&o));
    let s = status(&env);
    assert_eq!(s["state"], "completed", "{s}");
    let h = s["history"].as_array().unwrap();
    assert!(
        h[h.len() - 2]["reason"]
            .as_str()
            .unwrap()
            .contains("complete-after 2001-01-01T00:00:00Z reached"),
        "{s}"
    );
    let o = run(mailferry().args(["move", "--complete-after", "someday"]));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
}

#[test]
fn issue7_bad_item_limit_fails_the_move_keeps_what_was_copied_and_approval_completes_it() {
    let env = Env::new();
    let (src, n) = sample(&env, 25);
    fs::write(src.join("cur/1700000000.empty.host:2,S"), b"").unwrap();
    init_volume(&env);

    let (code, r, o) = pass(&env, &src, &[]);
    assert_eq!(code, 3, "limit hit: {}", describe(&o));
    let r = r.expect("the report is printed even when the limit is hit");
    assert_eq!(r["items_moved"], n as u64, "everything else is copied");
    assert_eq!(r["receipt"]["destination_items"], n as u64, "and kept");
    let skipped = &r["skipped_items"][0];
    assert_eq!(skipped["item"], "INBOX/1700000000.empty.host");
    assert_eq!(skipped["folder"], "INBOX");
    assert_eq!(skipped["source_id"], "1700000000.empty.host");
    assert_eq!(skipped["kind"], "bad_item");
    assert!(
        skipped["reason"].as_str().unwrap().contains("empty file"),
        "{r}"
    );
    assert_eq!(skipped["approved"], false);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("bad-item limit is 0"),
        "{}",
        describe(&o)
    );
    let s = status(&env);
    assert_eq!(s["state"], "failed");
    assert_eq!(s["items_bad"], 1);
    assert_eq!(s["items_synced"], n as u64);

    // A Failed move is retried by running it again: same verdict, nothing copied twice.
    let (code, r, o) = pass(&env, &src, &[]);
    assert_eq!(code, 3, "{}", describe(&o));
    assert_eq!(r.unwrap()["items_moved"], 0);

    // Approval accepts the item: the move is Synced, and can be completed.
    let (code, r, o) = pass(&env, &src, &["--approve-skipped"]);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(r.unwrap()["skipped_items"][0]["approved"], true);
    let saved: Value =
        serde_json::from_slice(&fs::read(state(&env).join("report.json")).unwrap()).unwrap();
    assert_eq!(
        saved["skipped_items"][0]["approved"], true,
        "kept with the move record"
    );
    assert_eq!(status(&env)["items_approved"], 1);
    let o = ctl(&env, "complete", &[]);
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(status(&env)["state"], "completed");
    let approvals = fs::read_to_string(state(&env).join("audit.jsonl"))
        .unwrap()
        .matches("\"event\":\"item.approved\"")
        .count();
    assert_eq!(approvals, 1);
    assert_json_schema("move-status.schema.json", &status(&env));
}

#[test]
fn issue7_items_within_the_bad_item_limit_still_need_approval_to_complete() {
    let env = Env::new();
    let (src, _) = sample(&env, 10);
    fs::write(src.join("cur/1700000000.empty.host:2,S"), b"").unwrap();
    init_volume(&env);
    let (code, _, o) = pass(&env, &src, &["--bad-item-limit", "1"]);
    assert_eq!(code, 0, "within the limit: {}", describe(&o));
    assert_eq!(status(&env)["state"], "synced");
    let o = ctl(&env, "complete", &[]);
    assert_eq!(o.status.code(), Some(3), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nobody approved"),
        "{}",
        describe(&o)
    );
    assert_eq!(status(&env)["state"], "synced");
    let o = ctl(&env, "complete", &["--approve-skipped"]);
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(status(&env)["state"], "completed");
}

#[test]
fn issue7_large_items_are_skipped_listed_and_need_approval() {
    let env = Env::new();
    let (src, n) = sample(&env, 15);
    let mut big = b"From: big@example.org\nSubject: big\n\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 300_000));
    big.push(b'\n');
    let big_name = "1700000001.big.host";
    fs::write(src.join("cur").join(format!("{big_name}:2,S")), &big).unwrap();
    init_volume(&env);

    let (code, r, o) = pass(&env, &src, &["--large-item-limit", "100KB"]);
    assert_eq!(
        code,
        0,
        "large items are skipped, not fatal: {}",
        describe(&o)
    );
    let r = r.unwrap();
    assert_eq!(r["items_moved"], n as u64);
    assert_eq!(
        r["receipt"]["destination_items"], n as u64,
        "the large item was not sent"
    );
    let items = r["skipped_items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{r}");
    assert_eq!(items[0]["kind"], "large_item");
    assert_eq!(items[0]["folder"], "INBOX");
    assert_eq!(items[0]["source_id"], big_name);
    assert_eq!(items[0]["size"], big.len() as u64);
    assert!(
        items[0]["reason"].as_str().unwrap().contains("100000"),
        "{r}"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(big_name),
        "listed: {}",
        describe(&o)
    );
    let s = status(&env);
    assert_eq!(
        (s["state"].as_str(), s["items_large"].as_u64()),
        (Some("synced"), Some(1))
    );
    assert_eq!(s["settings"]["large_item_limit"], 100_000);
    assert_eq!(
        s["percent_complete"], 100.0,
        "skipped items are not expected: {s}"
    );

    let o = ctl(&env, "complete", &[]);
    assert_eq!(o.status.code(), Some(3), "{}", describe(&o));
    let o = ctl(&env, "complete", &["--approve-skipped", "--json"]);
    assert!(o.status.success(), "{}", describe(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["skipped_items"][0]["approved"], true);
    assert_eq!(r["items_moved"], 0, "still not sent: the limit is kept");
    assert_eq!(status(&env)["state"], "completed");
}

/// Issue 18: `--source-connections` outside 1..=64 is a usage error (exit 2) that names
/// the flag and the range, before anything is created; a valid count is kept in the
/// move's record, which `move complete` runs from.
#[test]
fn issue18_source_connections_is_checked_and_kept_for_later_passes() {
    let env = Env::new();
    let (src, n) = sample(&env, 12);
    init_volume(&env);
    for bad in ["0", "65", "many"] {
        let (code, _, o) = pass(&env, &src, &["--source-connections", bad]);
        assert_eq!(code, 2, "{}", describe(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--source-connections"), "{err}");
        assert!(err.contains("between 1 and 64"), "{err}");
        assert!(
            !state(&env).exists(),
            "nothing is created for a usage error"
        );
    }
    let (code, report, o) = pass(
        &env,
        &src,
        &["--source-connections", "3", "--suspend-when-ready"],
    );
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(report.unwrap()["items_moved"], n);
    let record: Value =
        serde_json::from_slice(&fs::read(state(&env).join("lifecycle.json")).unwrap()).unwrap();
    assert_eq!(record["invocation"]["source_connections"], 3, "{record}");
    let o = ctl(&env, "complete", &[]);
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(status(&env)["state"], "completed");

    // The profile key is checked the same way, with its name.
    let profile = env.path("bad.toml");
    fs::write(
        &profile,
        "[source]\nconnections = 0\nwindow_bytes = \"1KiB\"\n",
    )
    .unwrap();
    let o = run(mailferry().args(["profile", "check"]).arg(&profile));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("`source.connections` = 0"), "{err}");
    assert!(err.contains("`source.window_bytes` = 1024"), "{err}");
}
