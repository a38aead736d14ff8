//! Migration profiles through the real binary (issue 7): every shipped profile checks,
//! a bad profile names every problem with its key and exits 2, and `profile show`
//! says where each value came from.

use crate::util::*;
use std::fs;
use std::path::PathBuf;

fn shipped() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../migration-profiles");
    let mut v: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    assert!(
        v.len() >= 5,
        "only {} profiles in {}",
        v.len(),
        dir.display()
    );
    v
}

#[test]
fn issue7_every_shipped_profile_checks() {
    for p in shipped() {
        let o = run(mailferry().args(["profile", "check"]).arg(&p));
        assert!(o.status.success(), "{}: {}", p.display(), describe(&o));
        let o = run(mailferry().args(["profile", "show", "--json"]).arg(&p));
        assert!(o.status.success(), "{}: {}", p.display(), describe(&o));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            j["name"].as_str(),
            p.file_stem().and_then(|s| s.to_str()),
            "{}",
            p.display()
        );
    }
}

#[test]
fn issue7_bad_profile_reports_every_problem_with_its_key_and_exit_2() {
    let env = Env::new();
    let p = env.path("bad.toml");
    fs::write(
        &p,
        r#"
nmae = "typo"
[folders]
include = ["re:Archive/(\\d{4}"]
map = { "Sent Items" = "Sent", "Sent Mail" = "Sent" }
colour = "blue"
[filter]
after = "2025-01-01"
before = "2024-06-01"
max_message_bytes = "10 parsecs"
[limits]
bad_item_limit = "some"
[throttle]
max_bytes_per_second = 0
max_messages_per_second = -1
[concurrency]
max_concurrent_moves = 2
max_concurrent_incremental_syncs = 5
"#,
    )
    .unwrap();
    let o = run(mailferry().args(["profile", "check"]).arg(&p));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for needle in [
        "`nmae`",
        "`folders.include[0]`",
        "invalid regex",
        "`folders.map`",
        "`folders.colour`",
        "`filter.after`",
        "`filter.max_message_bytes`",
        "`limits.bad_item_limit`",
        "`throttle.max_bytes_per_second`",
        "`throttle.max_messages_per_second`",
        "`concurrency.max_concurrent_incremental_syncs` (5) is more than",
    ] {
        assert!(err.contains(needle), "{needle} not reported: {err}");
    }
    // `show` refuses the same profile the same way.
    let o = run(mailferry().args(["profile", "show"]).arg(&p));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    // So does a bad override.
    let o = run(mailferry().args(["profile", "show", "--set", "limits.nope=1"]));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("limits.nope"));
}

#[test]
fn issue7_profile_show_says_where_each_value_came_from() {
    let env = Env::new();
    let p = env.path("mine.toml");
    fs::write(
        &p,
        "name = \"mine\"\n[limits]\nbad_item_limit = 3\n[folders]\nspecial_use = true\n",
    )
    .unwrap();
    let o = run(mailferry().args(["profile", "show"]).arg(&p).args([
        "--set",
        "filter.after=365d",
        "--set",
        "limits.bad_item_limit=9",
    ]));
    assert!(o.status.success(), "{}", describe(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let row = |key: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} in {out}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(row("folders.special_use")[1..], ["file", "true"]);
    assert_eq!(row("limits.bad_item_limit")[1..], ["flag", "9"]);
    assert_eq!(row("filter.after")[1..], ["flag", "\"365d\""]);
    assert_eq!(row("transport.frame_bytes")[1..], ["default", "262144"]);

    let o = run(mailferry()
        .args(["profile", "show", "--json"])
        .arg(&p)
        .args(["--set", "throttle.max_bytes_per_second=2MiB"]));
    assert!(o.status.success(), "{}", describe(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["name"], "mine");
    assert_eq!(j["file"], p.display().to_string());
    let s = &j["settings"];
    assert_eq!(s["limits.bad_item_limit"]["from"], "file");
    assert_eq!(s["throttle.max_bytes_per_second"]["from"], "flag");
    assert_eq!(s["throttle.max_bytes_per_second"]["value"], 2 << 20);
    assert_eq!(s["commit.max_messages"]["from"], "default");
    assert!(s["schedule.complete_after"]["value"].is_null());

    // Without a file: every value is a default.
    let o = run(mailferry().args(["profile", "show", "--json"]));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let settings = j["settings"].as_object().unwrap();
    assert!(settings.len() > 20);
    assert!(settings.values().all(|v| v["from"] == "default"), "{j}");
}
