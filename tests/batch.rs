//! Issue 7, batches and endpoints: a batch from an Exchange-shaped CSV with one broken
//! mailbox (the others complete, exit 4, a status table), a CSV whose bad rows are all
//! reported at once with nothing started, add-users and suspend/resume of a batch,
//! `endpoint test` passing and failing, and an IMAP batch against a real Dovecot with an
//! inline CSV password that is never written anywhere.

use crate::dovecot::{self, Dovecot};
use crate::util::*;
use mailferry_bench::sample::{write_maildir, SampleSpec, SizeModel};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

fn root(env: &Env) -> PathBuf {
    env.path("batches")
}

fn batch(env: &Env, args: &[&str]) -> Output {
    run(mailferry()
        .arg("batch")
        .args(args)
        .arg("--state-root")
        .arg(root(env)))
}

pub(crate) fn batch_new(
    env: &Env,
    name: &str,
    csv: &Path,
    endpoint: &Path,
    extra: &[&str],
) -> Output {
    run(mailferry()
        .args(["batch", "new", name, "--csv"])
        .arg(csv)
        .arg("--endpoint")
        .arg(endpoint)
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--state-root")
        .arg(root(env))
        .args(extra))
}

pub(crate) fn batch_status(env: &Env, name: &str) -> Value {
    let o = batch(env, &["status", name, "--json"]);
    assert!(o.status.success(), "{}", describe(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `address → state` of a batch status.
fn states(s: &Value) -> Vec<(String, String)> {
    s["mailboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["address"].as_str().unwrap().to_string(),
                m["status"]["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn maildir(path: &Path, seed: u64, messages: usize) -> usize {
    write_maildir(
        path,
        &SampleSpec {
            seed,
            messages,
            folders: 2,
            size: SizeModel::Small,
            markers: None,
        },
    )
    .unwrap()
    .messages
}

/// Mailboxes under `<env>/mail/<user>`, an endpoint file for them, and a CSV.
fn setup(env: &Env, users: &[(&str, usize)], broken: &[&str]) -> (PathBuf, PathBuf) {
    let mail = env.path("mail");
    for (i, (u, n)) in users.iter().enumerate() {
        maildir(&mail.join(u), 100 + i as u64, *n);
    }
    for u in broken {
        // A directory, but not a Maildir: the move of this mailbox fails.
        fs::create_dir_all(mail.join(u).join("junk")).unwrap();
    }
    let ep = env.path("endpoint.toml");
    fs::write(
        &ep,
        "# the test's mailboxes\nkind = \"maildir\"\nroot = \"mail/{user}\"\n\
         max_concurrent_moves = 2\nmax_concurrent_incremental_syncs = 1\n",
    )
    .unwrap();
    let csv = env.path("users.csv");
    let mut text = String::from("EmailAddress,UserName,Password,Department\n");
    for u in users.iter().map(|(u, _)| *u).chain(broken.iter().copied()) {
        text.push_str(&format!("{u}@example.com,{u},,Sales\n"));
    }
    fs::write(&csv, text).unwrap();
    (csv, ep)
}

#[test]
fn issue7_batch_of_three_with_one_broken_mailbox_completes_the_others_and_exits_4() {
    let env = Env::new();
    init_volume(&env);
    let (csv, ep) = setup(&env, &[("alice", 20), ("bob", 30)], &["carol"]);

    let o = batch_new(&env, "spring", &csv, &ep, &["--concurrency", "3"]);
    assert!(o.status.success(), "{}", describe(&o));
    let s = batch_status(&env, "spring");
    assert_eq!(
        states(&s),
        [
            ("alice@example.com".into(), "created".into()),
            ("bob@example.com".into(), "created".into()),
            ("carol@example.com".into(), "created".into())
        ]
    );

    let o = batch(&env, &["start", "spring", "--json"]);
    assert_eq!(o.status.code(), Some(4), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("1 of 3 mailbox(es) of batch spring failed: carol@example.com"),
        "{err}"
    );
    let outcome: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(outcome["mailboxes"].as_array().unwrap().len(), 3);

    let s = batch_status(&env, "spring");
    assert_eq!(
        states(&s),
        [
            ("alice@example.com".into(), "synced".into()),
            ("bob@example.com".into(), "synced".into()),
            ("carol@example.com".into(), "failed".into())
        ]
    );
    let m = &s["mailboxes"];
    assert_eq!(m[0]["status"]["items_synced"], 20);
    assert_eq!(m[1]["status"]["items_synced"], 30);
    assert_eq!(m[0]["user_name"], "alice");
    assert_eq!(m[0]["row"], 2);
    assert!(
        m[2]["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("not a Maildir"),
        "{s}"
    );
    assert_eq!(s["totals"]["mailboxes"], 3);
    assert_eq!(s["totals"]["failed"], 1);
    assert_eq!(s["totals"]["items_synced"], 50);
    assert_eq!(s["totals"]["by_state"]["synced"], 2);

    let o = batch(&env, &["status", "spring"]);
    assert!(o.status.success(), "{}", describe(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    let header = table.lines().nth(1).unwrap();
    for col in [
        "MAILBOX",
        "STATE",
        "DONE",
        "SYNCED",
        "SKIPPED",
        "BAD",
        "MB",
        "LAST SYNC",
        "NOTE",
    ] {
        assert!(header.contains(col), "{table}");
    }
    let line = |addr: &str| {
        table
            .lines()
            .find(|l| l.starts_with(addr))
            .unwrap()
            .to_string()
    };
    assert!(line("alice@example.com").contains("synced"), "{table}");
    assert!(line("carol@example.com").contains("failed"), "{table}");
    assert!(
        table.lines().last().unwrap().starts_with("total (3)"),
        "{table}"
    );

    // Completing: the good ones complete, the broken one fails again.
    let o = batch(&env, &["complete", "spring"]);
    assert_eq!(o.status.code(), Some(4), "{}", describe(&o));
    let s = batch_status(&env, "spring");
    assert_eq!(
        states(&s).into_iter().map(|(_, st)| st).collect::<Vec<_>>(),
        ["completed", "completed", "failed"]
    );

    // Once its mailbox is repaired it moves; completed mailboxes are left alone.
    fs::remove_dir_all(env.path("mail/carol")).unwrap();
    maildir(&env.path("mail/carol"), 7, 5);
    let o = batch(&env, &["start", "spring"]);
    assert!(o.status.success(), "{}", describe(&o));
    let o = batch(&env, &["complete", "spring"]);
    assert!(o.status.success(), "{}", describe(&o));
    let s = batch_status(&env, "spring");
    assert_eq!(s["totals"]["by_state"]["completed"], 3, "{s}");
    assert_eq!(s["totals"]["items_synced"], 55);
    // Each mailbox is a move of its own: its record and audit log verify.
    let o = run(mailferry()
        .args(["audit", "verify"])
        .arg(root(&env).join("spring/mailboxes/carol@example.com")));
    assert!(o.status.success(), "{}", describe(&o));
}

#[test]
fn issue7_batch_csv_problems_are_all_reported_at_once_and_nothing_starts() {
    let env = Env::new();
    init_volume(&env);
    fs::write(env.path("pw-empty"), b"").unwrap();
    fs::write(env.path("pw-ok"), b"fine\n").unwrap();
    let ep = env.path("imap.toml");
    fs::write(&ep, "kind = \"imap\"\nhost = \"127.0.0.1\"\nport = 1\n").unwrap();
    let csv = env.path("users.csv");
    fs::write(
        &csv,
        "EmailAddress,UserName,Password,PasswordFile,Notes\n\
         alice@example.com,alice,hunter2-inline-secret,,ok\n\
         bob@,bob,x,,bad address\n\
         ALICE@example.com,alice2,x,,duplicate\n\
         carol@example.com,,x,,no user\n\
         dave@example.com,dave,,,no password\n\
         eve@example.com,eve,x,pw-ok,both\n\
         frank@example.com,frank,,missing.pw,unreadable\n\
         gina@example.com,gina,,pw-empty,empty\n\
         hank@example.com,hank,,pw-ok,ok\n",
    )
    .unwrap();
    let o = batch_new(&env, "autumn", &csv, &ep, &["--start"]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("7 problem(s)"), "{err}");
    for (row, col, why) in [
        (3, "EmailAddress", "not valid"),
        (
            4,
            "EmailAddress",
            "duplicate address alice@example.com (also on row 2)",
        ),
        (5, "UserName", "missing user name"),
        (6, "Password/PasswordFile", "neither"),
        (7, "Password/PasswordFile", "both"),
        (8, "PasswordFile", "cannot read"),
        (9, "PasswordFile", "is empty"),
    ] {
        let line = format!("row {row}, {col}: ");
        let found = err.lines().find(|l| l.contains(&line));
        assert!(
            found.is_some_and(|l| l.contains(why)),
            "row {row} {col} {why}: {err}"
        );
    }
    assert!(
        !err.contains("hunter2"),
        "a password leaked into the error: {err}"
    );
    assert!(!root(&env).join("autumn").exists(), "nothing was created");

    // A header without the Exchange columns is refused the same way.
    fs::write(&csv, "Mail,Login\nalice@example.com,alice\n").unwrap();
    let o = batch_new(&env, "autumn", &csv, &ep, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("row 1, EmailAddress: missing column"), "{err}");
    assert!(err.contains("row 1, UserName: missing column"), "{err}");
    assert!(err.contains("row 1, Password: missing column"), "{err}");
    assert!(!root(&env).join("autumn").exists());
}

#[test]
fn issue7_batch_add_users_takes_only_new_rows_and_a_suspended_batch_refuses_to_start() {
    let env = Env::new();
    init_volume(&env);
    let (csv, ep) = setup(&env, &[("alice", 5), ("bob", 5)], &[]);
    let o = batch_new(&env, "b1", &csv, &ep, &["--start"]);
    assert!(o.status.success(), "{}", describe(&o));

    maildir(&env.path("mail/zoe"), 9, 4);
    let more = env.path("more.csv");
    fs::write(
        &more,
        "EmailAddress,UserName,Password\nalice@example.com,alice,\nzoe@example.com,zoe,\n",
    )
    .unwrap();
    let o = batch(&env, &["add-users", "b1", "--csv", more.to_str().unwrap()]);
    assert!(o.status.success(), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("1 mailbox(es) added, 1 already there"),
        "{err}"
    );
    assert!(
        err.contains("row 2: alice@example.com is already in the batch"),
        "{err}"
    );
    let s = batch_status(&env, "b1");
    assert_eq!(
        states(&s),
        [
            ("alice@example.com".into(), "synced".into()),
            ("bob@example.com".into(), "synced".into()),
            ("zoe@example.com".into(), "created".into())
        ]
    );

    let o = batch(&env, &["suspend", "b1"]);
    assert!(o.status.success(), "{}", describe(&o));
    let s = batch_status(&env, "b1");
    assert_eq!(s["suspended"], true);
    assert_eq!(s["totals"]["by_state"]["suspended"], 3, "{s}");
    let o = batch(&env, &["start", "b1"]);
    assert_eq!(o.status.code(), Some(5), "{}", describe(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("batch resume"));

    let o = batch(&env, &["resume", "b1"]);
    assert!(o.status.success(), "{}", describe(&o));
    let s = batch_status(&env, "b1");
    assert_eq!(
        states(&s).into_iter().map(|(_, st)| st).collect::<Vec<_>>(),
        ["synced", "synced", "created"]
    );
    let o = batch(&env, &["start", "b1"]);
    assert!(o.status.success(), "{}", describe(&o));
    let s = batch_status(&env, "b1");
    assert_eq!(s["totals"]["by_state"]["synced"], 3, "{s}");
    assert_eq!(s["totals"]["items_synced"], 14);
    assert_json_schema("batch-status.schema.json", &s);
}

#[test]
fn issue7_endpoint_test_passes_and_fails_and_bad_endpoint_files_list_every_problem() {
    let env = Env::new();
    let (_, ep) = setup(&env, &[("alice", 3)], &["carol"]);
    let test = |args: &[&str]| run(mailferry().args(["endpoint", "test"]).arg(&ep).args(args));
    let o = test(&[]);
    assert!(o.status.success(), "{}", describe(&o));
    let o = test(&["--user", "alice", "--json"]);
    assert!(o.status.success(), "{}", describe(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["ok"], true);
    assert!(
        r["checks"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("3 message(s)"),
        "{r}"
    );
    let o = test(&["--user", "carol"]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("FAIL"),
        "{}",
        describe(&o)
    );
    let o = test(&["--user", "../etc"]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let imap = env.path("imap.toml");
    fs::write(
        &imap,
        format!("kind = \"imap\"\nhost = \"127.0.0.1\"\nport = {closed}\n"),
    )
    .unwrap();
    let o = run(mailferry().args(["endpoint", "test"]).arg(&imap));
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("FAIL connect"),
        "{}",
        describe(&o)
    );

    fs::write(
        &imap,
        "kind = \"imap\"\ntls = \"none\"\nroot = \"/x/{user}\"\nmaster_user = \"m\"\nspeed = 3\n",
    )
    .unwrap();
    let o = run(mailferry().args(["endpoint", "test"]).arg(&imap));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for needle in [
        "5 problem(s)",
        "speed: unknown key",
        "host: missing",
        "tls: \"none\" is not imaps or starttls",
        "root: only for file sources",
        "master_user and master_password_file",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

/// Issue 18: an IMAP endpoint's `connections` and `max_connections` are checked with
/// the other keys (a per-move count over the total is refused, exit 2), and `endpoint
/// test` says how moves will read the server even when it cannot reach it.
#[test]
fn issue18_endpoint_connection_keys_are_checked_and_shown_by_endpoint_test() {
    let env = Env::new();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let imap = env.path("imap.toml");
    let head = format!("kind = \"imap\"\nhost = \"127.0.0.1\"\nport = {closed}\n");
    fs::write(
        &imap,
        format!("{head}connections = 2\nmax_connections = 3\n"),
    )
    .unwrap();
    let o = run(mailferry().args(["endpoint", "test"]).arg(&imap));
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("reading: 2 per move; at most 3 across the moves of a batch run"),
        "{out}"
    );
    let o = run(mailferry().args(["endpoint", "test", "--json"]).arg(&imap));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (r["connections"].as_u64(), r["max_connections"].as_u64()),
        (Some(2), Some(3))
    );

    fs::write(
        &imap,
        format!("{head}connections = 8\nmax_connections = 4\nprefix = 1\n"),
    )
    .unwrap();
    let o = run(mailferry().args(["endpoint", "test"]).arg(&imap));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for needle in [
        "2 problem(s)",
        "connections: 8 is more than max_connections (4)",
        "prefix: expected a string",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

fn skip() -> bool {
    if dovecot::available() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "Dovecot (dovecot-imapd) is missing in CI"
    );
    eprintln!("skipped: dovecot-imapd is not installed");
    true
}

#[test]
fn issue7_imap_endpoint_test_and_batch_with_an_inline_csv_password_stored_nowhere() {
    if skip() {
        return;
    }
    let dv = Dovecot::start();
    for i in 0..6 {
        dv.put(
            "",
            &format!("1700000000.M{i}P1.batch"),
            "S",
            format!("From: s{i}@example.org\r\nSubject: m{i}\r\n\r\nbody {i}\r\n").as_bytes(),
            1_700_000_000,
        );
    }
    let env = Env::new();
    init_volume(&env);
    let ep = env.path("imap.toml");
    fs::write(
        &ep,
        format!(
            "kind = \"imap\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"imaps\"\nca_file = \"{}\"\n",
            dv.imaps_port,
            dv.ca_pem.display()
        ),
    )
    .unwrap();
    let o = run(mailferry()
        .args(["endpoint", "test"])
        .arg(&ep)
        .args(["--user", dovecot::USER, "--password-file"])
        .arg(&dv.password_file));
    assert!(o.status.success(), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("6 message(s)"),
        "{}",
        describe(&o)
    );
    let wrong = env.path("wrong.pw");
    fs::write(&wrong, "not the password\n").unwrap();
    let o = run(mailferry()
        .args(["endpoint", "test"])
        .arg(&ep)
        .args(["--user", dovecot::USER, "--password-file"])
        .arg(&wrong));
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("FAIL"),
        "{}",
        describe(&o)
    );

    // The CSV holds the password inline (CSV-quoted: it has quotes and spaces).
    let csv = env.path("users.csv");
    let quoted = dovecot::PASSWORD.replace('"', "\"\"");
    fs::write(
        &csv,
        format!(
            "EmailAddress,UserName,Password\nalice@example.com,{},\"{quoted}\"\n",
            dovecot::USER
        ),
    )
    .unwrap();
    let o = batch_new(&env, "imap", &csv, &ep, &["--start"]);
    assert!(o.status.success(), "{}", describe(&o));
    let s = batch_status(&env, "imap");
    assert_eq!(s["mailboxes"][0]["status"]["state"], "synced", "{s}");
    assert_eq!(s["mailboxes"][0]["status"]["items_synced"], 6, "{s}");
    for (path, bytes) in all_files(&root(&env)) {
        assert!(
            !contains(&bytes, dovecot::PASSWORD.as_bytes()),
            "the password was written to {}",
            path.display()
        );
    }
    // The CSV must stay in place: without it the next pass cannot log in.
    fs::remove_file(&csv).unwrap();
    let o = batch(&env, &["start", "imap"]);
    assert_eq!(o.status.code(), Some(4), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("must stay in place"),
        "{}",
        describe(&o)
    );
}

#[test]
fn issue7_batch_start_dry_run_previews_every_mailbox_and_writes_nothing() {
    let env = Env::new();
    init_volume(&env);
    let (csv, ep) = setup(&env, &[("alice", 20), ("bob", 30)], &[]);
    let o = batch_new(&env, "preview", &csv, &ep, &[]);
    assert!(o.status.success(), "{}", describe(&o));
    let before = (snapshot(&root(&env)), snapshot(&env.volume()));

    let o = batch(&env, &["start", "preview", "--dry-run", "--json"]);
    assert!(o.status.success(), "{}", describe(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let counts: Vec<(String, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["address"].as_str().unwrap().to_string(),
                m["preview"]["totals"]["to_send"]
                    .as_u64()
                    .unwrap_or(u64::MAX),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            ("alice@example.com".to_string(), 20),
            ("bob@example.com".to_string(), 30)
        ],
        "{v}"
    );
    assert_eq!(
        (snapshot(&root(&env)), snapshot(&env.volume())),
        before,
        "a dry run writes nothing"
    );
    let s = batch_status(&env, "preview");
    assert!(states(&s).iter().all(|(_, st)| st == "created"), "{s}");
}
