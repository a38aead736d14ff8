//! Issue 20, the batch commands that were refused with `--db`: `batch add-users --db`
//! and `batch start --dry-run --db`, run through the binary against the real
//! PostgreSQL (`MAILFERRY_TEST_PG`, one fresh database per test), with
//! `mailferry worker` processes moving the mailboxes into a `mailferry serve`.

use crate::util::*;
use crate::workers::{
    fresh_db, sql_i64, sql_rows, start_worker, states, wait_until_synced, DbBatch,
};
use mailferry_bench::sample::{write_maildir, SampleSpec, SizeModel};
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::time::Duration;

/// A Maildir source for `user` under the batch's `mail/` (the endpoint's root).
fn source(b: &DbBatch, user: &str, seed: u64, messages: usize) -> std::path::PathBuf {
    let dir = b.env.path("mail").join(user);
    write_maildir(
        &dir,
        &SampleSpec {
            seed,
            messages,
            folders: 2,
            size: SizeModel::Small,
            markers: None,
        },
    )
    .unwrap();
    dir
}

/// `batch add-users NAME --csv CSV --db URL` with `rows` under the usual header.
fn add_users(b: &DbBatch, file: &str, rows: &str) -> std::process::Output {
    let csv = b.env.path(file);
    fs::write(&csv, format!("EmailAddress,UserName,Password\n{rows}")).unwrap();
    run(mailferry()
        .args(["batch", "add-users", &b.name, "--csv"])
        .arg(&csv)
        .args(["--db", &b.db]))
}

/// The passes recorded for `address`: (items moved) per pass, in order.
fn moved_per_pass(db: &str, address: &str) -> Vec<i64> {
    sql_rows(
        db,
        &format!(
            "SELECT (r.report->>'items_moved')::bigint FROM pass_reports r \
             JOIN moves m ON m.id = r.move_id WHERE m.address = '{address}' ORDER BY r.pass"
        ),
    )
    .into_iter()
    .map(|r| r[0].parse().unwrap())
    .collect()
}

#[test]
fn issue20_batch_add_users_db_adds_only_new_rows_and_workers_move_only_what_is_new() {
    let Some(db) = fresh_db("add_users") else {
        return;
    };
    let mut b = DbBatch::new(db, 2, 8, 4, "");
    let worker = start_worker(b.env.dir.path(), &b.db, "w0", 2, 10);
    let o = b.batch(&["start"]);
    assert!(o.status.success(), "batch start --db: {}", describe(&o));
    wait_until_synced(&b, &[&worker], Duration::from_secs(300));

    // Added while the worker runs. A bad row: the whole CSV is refused, nothing added.
    let new0 = source(&b, "user0002", 3002, 5);
    let new1 = source(&b, "user0003", 3003, 7);
    let o = add_users(
        &b,
        "bad.csv",
        "user0002@example.com,user0002,\nnot-an-address,user0003,\n",
    );
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("row 3") && err.contains("EmailAddress"),
        "{err}"
    );
    assert_eq!(sql_i64(&b.db, "SELECT count(*) FROM moves"), 2);

    // Rows already there are skipped and listed; the new ones are Created, not queued.
    let o = add_users(
        &b,
        "more.csv",
        "user0001@example.com,user0001,\nuser0002@example.com,user0002,\nuser0003@example.com,user0003,\n",
    );
    assert!(o.status.success(), "batch add-users --db: {}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("row 2: user0001@example.com is already in the batch, skipped"),
        "{err}"
    );
    assert!(
        err.contains("2 mailbox(es) added, 1 already there"),
        "{err}"
    );
    b.mailboxes.push(("user0002@example.com".into(), new0));
    b.mailboxes.push(("user0003@example.com".into(), new1));
    assert_eq!(
        states(&b.status()),
        [
            ("user0000@example.com", "synced"),
            ("user0001@example.com", "synced"),
            ("user0002@example.com", "created"),
            ("user0003@example.com", "created"),
        ]
        .map(|(a, s)| (a.to_string(), s.to_string()))
    );
    assert_eq!(
        sql_i64(&b.db, "SELECT count(*) FROM moves WHERE runnable"),
        0,
        "add-users queues nothing"
    );
    // The batch record lists them, with their CSV row, as without --db.
    let users = sql_rows(
        &b.db,
        "SELECT u->>'address', u->>'row' FROM batches, jsonb_array_elements(record->'users') u \
         ORDER BY 1",
    );
    assert_eq!(users.len(), 4, "{users:?}");
    assert_eq!(users[3], ["user0003@example.com", "4"], "{users:?}");
    // Each new move has its first audit records in the rows, and they verify.
    b.assert_audit_logs_verify();

    // The same CSV again adds nothing.
    let o = add_users(
        &b,
        "more.csv",
        "user0001@example.com,user0001,\nuser0002@example.com,user0002,\nuser0003@example.com,user0003,\n",
    );
    assert!(o.status.success(), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("0 mailbox(es) added, 3 already there"),
        "{}",
        describe(&o)
    );
    assert_eq!(sql_i64(&b.db, "SELECT count(*) FROM moves"), 4);

    // `batch start --db` queues a pass of every mailbox; the worker moves the new
    // mailboxes' messages, and the old ones' incremental passes move nothing.
    let o = b.batch(&["start", "--json"]);
    assert!(o.status.success(), "{}", describe(&o));
    let q: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(q["queued"].as_array().unwrap().len(), 4, "{q}");
    wait_until_synced(&b, &[&worker], Duration::from_secs(300));
    assert_eq!(moved_per_pass(&b.db, "user0000@example.com"), [8, 0]);
    assert_eq!(moved_per_pass(&b.db, "user0001@example.com"), [8, 0]);
    assert_eq!(moved_per_pass(&b.db, "user0002@example.com"), [5]);
    assert_eq!(moved_per_pass(&b.db, "user0003@example.com"), [7]);

    let log = worker.log_text();
    assert_eq!(worker.stop(), Some(0), "{log}");
    b.assert_audit_logs_verify();
    b.stop_serve();
    b.assert_exports_equal_sources();
}

/// Everything the dry run could write: every row of every table the batch commands
/// use, as one digest.
fn fingerprint(db: &str) -> String {
    sql_rows(
        db,
        "SELECT md5(string_agg(t, '|' ORDER BY t)) FROM ( \
           SELECT concat_ws(',', id, state, lifecycle::text, runnable, pass_kind, lease_owner, \
                            lease_epoch, lease_expires, attempts, not_before, suspend_request::text) t \
             FROM moves \
           UNION ALL SELECT concat_ws(',', move_id, seq, line, epoch) FROM source_audit \
           UNION ALL SELECT concat_ws(',', move_id, name, md5(bytes)) FROM source_files \
           UNION ALL SELECT concat_ws(',', move_id, pass, report::text) FROM pass_reports \
           UNION ALL SELECT concat_ws(',', name, record::text, suspended, admin::text) FROM batches \
           UNION ALL SELECT concat_ws(',', name, record, updated_at) FROM endpoints) x",
    )[0][0]
        .clone()
}

/// `batch start --dry-run --json`, with `args` after the name.
fn dry_run_json(name: &str, args: &[&str]) -> Vec<Value> {
    let o = run(mailferry()
        .args(["batch", "start", name, "--dry-run", "--json"])
        .args(args));
    assert!(
        o.status.success(),
        "batch start --dry-run: {}",
        describe(&o)
    );
    serde_json::from_slice::<Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// One message more in a Maildir's `new/`.
fn deliver(maildir: &Path) {
    fs::create_dir_all(maildir.join("new")).unwrap();
    fs::write(
        maildir.join("new/1700000000.M1P1.dryrun"),
        "From: a@example.org\r\nTo: user0000@example.com\r\nSubject: late\r\n\
         Message-ID: <late@example.org>\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n\r\nlate\r\n",
    )
    .unwrap();
}

#[test]
fn issue20_batch_start_dry_run_db_previews_from_the_rows_and_writes_nothing() {
    let Some(db) = fresh_db("dry_run") else {
        return;
    };
    let mut b = DbBatch::new(db, 3, 6, 4, "");
    // The same batch as state directories, to compare the previews' shape with.
    let serve = b.serve.as_ref().unwrap();
    let root = b.env.path("batches");
    let o = run(mailferry()
        .args(["batch", "new", "files", "--csv"])
        .arg(b.env.path("users.csv"))
        .arg("--endpoint")
        .arg(b.env.path("endpoint.toml"))
        .args(["--proxy", &serve.url(), "--ca"])
        .arg(&serve.ca)
        .arg("--token-file")
        .arg(b.env.path("example.com.token"))
        .arg("--state-root")
        .arg(&root));
    assert!(o.status.success(), "batch new: {}", describe(&o));
    let files = dry_run_json("files", &["--state-root", root.to_str().unwrap()]);
    let before_any = dry_run_json(&b.name, &["--db", &b.db]);
    assert_eq!(before_any.len(), 3);
    for (f, d) in files.iter().zip(&before_any) {
        assert_eq!(f["address"], d["address"]);
        assert_eq!(json_shape(f), json_shape(d), "{f}\n{d}");
        assert_eq!(d["preview"]["dry_run"], true, "{d}");
        assert_eq!(d["preview"]["totals"]["to_send"], 6, "{d}");
        assert_eq!(d["preview"]["destination"]["kind"], "proxy", "{d}");
    }

    // After a pass, the preview reads each move's checkpoint from its rows: only what
    // arrived since is to send.
    let worker = start_worker(b.env.dir.path(), &b.db, "w0", 3, 10);
    let o = b.batch(&["start"]);
    assert!(o.status.success(), "{}", describe(&o));
    wait_until_synced(&b, &[&worker], Duration::from_secs(300));
    deliver(&b.mailboxes[0].1);
    let rows = fingerprint(&b.db);
    let sources = snapshot(&b.env.path("mail"));

    let after = dry_run_json(&b.name, &["--db", &b.db]);
    let to_send: Vec<(String, u64, u64)> = after
        .iter()
        .map(|p| {
            (
                p["address"].as_str().unwrap().to_string(),
                p["preview"]["totals"]["to_send"].as_u64().unwrap(),
                p["preview"]["state"]["acknowledged"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        to_send,
        [
            ("user0000@example.com".to_string(), 1, 6),
            ("user0001@example.com".to_string(), 0, 6),
            ("user0002@example.com".to_string(), 0, 6),
        ]
    );
    // The text form: the same blocks as without --db.
    let o = b.batch(&["start", "--dry-run"]);
    assert!(o.status.success(), "{}", describe(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    for (address, _) in &b.mailboxes {
        assert!(text.contains(&format!("== {address}")), "{text}");
    }
    assert!(
        text.contains("state: the database (--db) (move ")
            && text.contains("6 messages acknowledged by earlier passes"),
        "{text}"
    );

    // Nothing written: not a row, not a source file; nothing queued for the worker.
    assert_eq!(fingerprint(&b.db), rows, "the dry run changed the database");
    assert_eq!(
        snapshot(&b.env.path("mail")),
        sources,
        "the dry run changed a source"
    );
    assert_eq!(
        sql_i64(&b.db, "SELECT count(*) FROM moves WHERE runnable"),
        0
    );
    let log = worker.log_text();
    assert_eq!(worker.stop(), Some(0), "{log}");

    // An unknown batch is a usage error naming it, as without --db.
    let o = run(mailferry().args(["batch", "start", "nope", "--dry-run", "--db", &b.db]));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no batch nope"),
        "{}",
        describe(&o)
    );
    b.stop_serve();
}
