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

/// A Maildir message file `name` in folder directory `dir` (`""` for INBOX).
fn put(root: &std::path::Path, dir: &str, name: &str, body: &str) {
    let d = root.join(dir).join("cur");
    fs::create_dir_all(&d).unwrap();
    fs::create_dir_all(root.join(dir).join("new")).unwrap();
    fs::write(d.join(name), body).unwrap();
}

#[test]
fn issue7_profile_maps_folders_and_skips_large_items_in_a_real_move() {
    let env = Env::new();
    let src = env.path("src");
    put(&src, "", "1.a.host:2,S", "Subject: in inbox\r\n\r\nhi\r\n");
    put(
        &src,
        ".Sent Items",
        "2.b.host:2,S",
        "Subject: sent\r\n\r\nsent\r\n",
    );
    put(
        &src,
        ".Junk E-mail",
        "3.c.host:2,",
        "Subject: junk\r\n\r\nspam\r\n",
    );
    put(
        &src,
        ".Private",
        "4.d.host:2,",
        "Subject: private\r\n\r\nkeep out\r\n",
    );
    let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(200_000));
    put(&src, "", "5.e.host:2,", &big);
    let profile = env.path("p.toml");
    fs::write(
        &profile,
        "[folders]\nspecial_use = true\nexclude = [\"Private\"]\n\n\
         [filter]\nmax_message_bytes = \"100KB\"\n\n[limits]\nlarge_item_limit = 5\n",
    )
    .unwrap();
    init_volume(&env);
    let mb = "profiled@example.com";
    let state = env.path("state");
    let mv = || {
        run(mailferry()
            .arg("move")
            .arg("--source")
            .arg(format!("maildir:{}", src.display()))
            .args(["--mailbox", mb, "--volume"])
            .arg(env.volume())
            .arg("--key-file")
            .arg(env.key())
            .arg("--state")
            .arg(&state)
            .arg("--profile")
            .arg(&profile)
            .arg("--json"))
    };
    let o = mv();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["items_moved"], 3, "{r}");
    let skipped = r["skipped_items"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{r}");
    assert!(skipped[0].to_string().contains("5.e.host"), "{r}");

    let out = env.path("export");
    let o = export(&env, mb, &out);
    assert!(o.status.success(), "{}", describe(&o));
    let got: Vec<(String, String)> = read_maildir(&out).into_keys().collect();
    assert_eq!(got.len(), 3, "{got:?}");
    let folders: std::collections::BTreeSet<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        folders,
        ["", ".Junk", ".Sent"].into_iter().collect(),
        "{got:?}"
    );

    // Rerun: nothing is sent again, and the excluded folder and the skipped message
    // stay out without anything being deleted.
    let o = mv();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (&r["items_moved"], &r["items_deleted"]),
        (&0.into(), &0.into()),
        "{r}"
    );
}
