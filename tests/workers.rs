//! Issue 20, coordination on PostgreSQL: batches kept in a real PostgreSQL
//! (`MAILFERRY_TEST_PG`, one fresh database per test) and run by `mailferry worker`
//! processes against one `mailferry serve`. Every mailbox completes exactly once
//! (exports equal sources), the audit logs held in the rows verify, and a worker killed
//! with SIGKILL mid-pass is replaced by another after its lease runs out, which resumes
//! where the synced log stops.
//!
//! The helpers ([`DbBatch`], [`start_workers`], [`wait_until_synced`]) are meant for
//! larger runs (more workers, more mailboxes) on top of these.

use crate::serve::{issue_token, start_serve};
use crate::util::*;
use mailferry_bench::sample::{write_maildir, SampleSpec, SizeModel};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A fresh database on the test server, or `None` (skip) when none is configured
/// outside CI.
pub(crate) fn fresh_db(name: &str) -> Option<String> {
    let server = mailferry_coord::db::testing::server()?;
    Some(block_on(mailferry_coord::db::testing::fresh_database(
        &server, name,
    )))
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// One number from the database.
pub(crate) fn sql_i64(db: &str, sql: &str) -> i64 {
    let (db, sql) = (db.to_string(), sql.to_string());
    block_on(async move {
        let (c, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0)
    })
}

/// A batch of Maildir mailboxes in a database, going to a `serve` on the test's volume.
pub(crate) struct DbBatch {
    pub env: Env,
    pub db: String,
    pub name: String,
    pub serve: Option<Daemon>,
    /// `(address, source Maildir)` per mailbox.
    pub mailboxes: Vec<(String, PathBuf)>,
}

impl DbBatch {
    /// `users` mailboxes of `messages` messages each (seeded by index), an endpoint
    /// allowing `max_moves` at once (`extra_endpoint`: more TOML lines), `serve` on a new
    /// volume, and `batch new --db`.
    pub fn new(
        db: String,
        users: usize,
        messages: usize,
        max_moves: usize,
        extra_endpoint: &str,
    ) -> DbBatch {
        let env = Env::new();
        init_volume(&env);
        let token = env.path("example.com.token");
        issue_token(&env, "example.com", &token);
        let serve = start_serve(&env, &[]);
        let mut mailboxes = Vec::new();
        let mut csv = String::from("EmailAddress,UserName,Password\n");
        for i in 0..users {
            let user = format!("user{i:04}");
            let dir = env.path("mail").join(&user);
            write_maildir(
                &dir,
                &SampleSpec {
                    seed: 2000 + i as u64,
                    messages,
                    folders: 2,
                    size: SizeModel::Small,
                    markers: None,
                },
            )
            .unwrap();
            csv.push_str(&format!("{user}@example.com,{user},\n"));
            mailboxes.push((format!("{user}@example.com"), dir));
        }
        fs::write(env.path("users.csv"), csv).unwrap();
        fs::write(
            env.path("endpoint.toml"),
            format!(
                "kind = \"maildir\"\nroot = \"mail/{{user}}\"\nmax_concurrent_moves = {max_moves}\n{extra_endpoint}"
            ),
        )
        .unwrap();
        let name = "wave".to_string();
        let o = run(mailferry()
            .args(["batch", "new", &name, "--csv"])
            .arg(env.path("users.csv"))
            .arg("--endpoint")
            .arg(env.path("endpoint.toml"))
            .args(["--proxy", &serve.url(), "--ca"])
            .arg(&serve.ca)
            .arg("--token-file")
            .arg(&token)
            .args(["--db", &db]));
        assert!(o.status.success(), "batch new --db: {}", describe(&o));
        DbBatch {
            env,
            db,
            name,
            serve: Some(serve),
            mailboxes,
        }
    }

    /// `mailferry batch ARGS NAME --db URL`.
    pub fn batch(&self, args: &[&str]) -> Output {
        run(mailferry()
            .arg("batch")
            .args(args)
            .arg(&self.name)
            .args(["--db", &self.db]))
    }

    /// `batch status --db --json`.
    pub fn status(&self) -> Value {
        let o = self.batch(&["status", "--json"]);
        assert!(o.status.success(), "batch status --db: {}", describe(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// Stops `serve` (the volume is then free for exports).
    pub fn stop_serve(&mut self) {
        if let Some(s) = self.serve.take() {
            assert_eq!(s.stop(), Some(0));
        }
    }

    /// Exports every mailbox and compares it with its source, message by message.
    pub fn assert_exports_equal_sources(&self) {
        assert!(self.serve.is_none(), "stop serve first");
        for (i, (address, src)) in self.mailboxes.iter().enumerate() {
            let out = self.env.path(&format!("export{i}"));
            let o = export(&self.env, address, &out);
            assert!(o.status.success(), "export {address}: {}", describe(&o));
            let (source, exported) = (read_maildir(src), read_maildir(&out));
            assert!(!source.is_empty());
            assert_eq!(
                exported, source,
                "{address}: export differs from the source"
            );
        }
    }

    /// `audit verify --db --mailbox` of every mailbox.
    pub fn assert_audit_logs_verify(&self) {
        for (address, _) in &self.mailboxes {
            let o =
                run(mailferry().args(["audit", "verify", "--db", &self.db, "--mailbox", address]));
            assert!(
                o.status.success(),
                "audit verify --db {address}: {}",
                describe(&o)
            );
        }
    }
}

/// A running `mailferry worker`, its stderr in a file.
pub(crate) struct Worker {
    pub child: Child,
    pub log: PathBuf,
}

impl Worker {
    /// SIGTERM, then its exit code (at most 120 s: running passes finish first).
    pub fn stop(mut self) -> Option<i32> {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(120) {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "worker did not stop within 120 s of SIGTERM:\n{}",
            self.log_text()
        );
    }

    /// SIGKILL: dies at once, holding whatever lease it had.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `n` workers on `db`, each with its own state directory under `dir`.
pub(crate) fn start_workers(
    dir: &Path,
    db: &str,
    n: usize,
    concurrency: usize,
    lease_seconds: u64,
) -> Vec<Worker> {
    (0..n)
        .map(|i| start_worker(dir, db, &format!("w{i}"), concurrency, lease_seconds))
        .collect()
}

/// One worker named `name` (its state and log under `dir`).
pub(crate) fn start_worker(
    dir: &Path,
    db: &str,
    name: &str,
    concurrency: usize,
    lease_seconds: u64,
) -> Worker {
    let log = dir.join(format!("{name}.log"));
    let child = mailferry()
        .env("RUST_LOG", "info")
        .args([
            "worker",
            "--db",
            db,
            "--concurrency",
            &concurrency.to_string(),
        ])
        .args(["--lease-seconds", &lease_seconds.to_string(), "--state"])
        .arg(dir.join(format!("{name}-state")))
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("mailferry worker starts");
    Worker { child, log }
}

/// `address → state` of a status.
pub(crate) fn states(s: &Value) -> Vec<(String, String)> {
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

/// Polls `batch status --db` until every mailbox is `synced` and none runs (at most
/// `limit`); returns the last status. Panics with the reasons and the workers' logs when
/// a mailbox failed or time ran out.
pub(crate) fn wait_until_synced(b: &DbBatch, workers: &[&Worker], limit: Duration) -> Value {
    let t0 = Instant::now();
    loop {
        let s = b.status();
        let all = s["mailboxes"].as_array().unwrap();
        let done = all
            .iter()
            .all(|m| m["status"]["state"] == "synced" && m["status"]["running"] == false);
        if done {
            return s;
        }
        // Failed for good: not running and not queued for a retry.
        let given_up = sql_i64(
            &b.db,
            "SELECT count(*) FROM moves WHERE state = 'failed' AND NOT runnable AND lease_owner IS NULL",
        );
        let failed: Vec<String> = all
            .iter()
            .filter(|m| m["status"]["state"] == "failed")
            .map(|m| format!("{}: {}", m["address"], m["status"]["reason"]))
            .collect();
        if given_up > 0 || t0.elapsed() > limit {
            let logs: Vec<String> = workers.iter().map(|w| w.log_text()).collect();
            panic!(
                "not every mailbox synced (after {:?}): {:?}\nfailed: {failed:#?}\n{}",
                t0.elapsed(),
                states(&s),
                logs.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn issue20_two_workers_move_a_batch_of_20_through_postgres_exactly_once() {
    let Some(db) = fresh_db("two_workers") else {
        return;
    };
    let mut b = DbBatch::new(db, 20, 12, 4, "");
    assert!(states(&b.status()).iter().all(|(_, s)| s == "created"));
    // Both workers wait for work before anything is queued; one pass at a time each,
    // so that neither can run the whole batch alone before the other looks.
    let workers = start_workers(b.env.dir.path(), &b.db, 2, 1, 10);
    // Queued, not run: nothing moves until a worker leases it.
    let o = b.batch(&["start", "--json"]);
    assert!(o.status.success(), "batch start --db: {}", describe(&o));
    let q: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(q["queued"].as_array().unwrap().len(), 20);
    let s = wait_until_synced(
        &b,
        &workers.iter().collect::<Vec<_>>(),
        Duration::from_secs(300),
    );
    assert_eq!(s["totals"]["mailboxes"], 20);
    // The same table as without --db.
    let o = b.batch(&["status"]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("total (20)") && table.contains("20 synced"),
        "{table}"
    );
    let o = run(mailferry().args([
        "move",
        "status",
        "--db",
        &b.db,
        "--mailbox",
        "user0003@example.com",
        "--json",
    ]));
    assert!(o.status.success(), "{}", describe(&o));
    let m: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["state"], "synced");
    assert_eq!(m["passes"], 1);

    // Both workers took part, and they stop cleanly on SIGTERM.
    let logs: Vec<String> = workers.iter().map(Worker::log_text).collect();
    for w in workers {
        assert_eq!(w.stop(), Some(0), "worker exits 0 on SIGTERM");
    }
    for l in &logs {
        assert!(l.contains("leased"), "a worker ran nothing:\n{l}");
    }
    // Every record of the source logs was written by one lease each, and the leases
    // never overlapped: one epoch per move here (nobody died).
    assert_eq!(
        sql_i64(&b.db, "SELECT count(*) FROM (SELECT move_id FROM source_audit WHERE epoch > 0 GROUP BY move_id HAVING count(DISTINCT epoch) > 1) t"),
        0
    );
    assert_eq!(
        sql_i64(
            &b.db,
            "SELECT count(*) FROM moves WHERE lease_owner IS NOT NULL OR runnable"
        ),
        0
    );
    b.assert_audit_logs_verify();
    // The signed head in the rows checks with the move's public key ...
    let pem = b.env.path("user0003.pem");
    let mb = ["--db", &b.db, "--mailbox", "user0003@example.com"];
    let o = run(mailferry()
        .args(["audit", "public-key"])
        .args(mb)
        .arg("--out")
        .arg(&pem));
    assert!(
        o.status.success(),
        "audit public-key --db: {}",
        describe(&o)
    );
    let verify_signed = || {
        run(mailferry()
            .args(["audit", "verify"])
            .args(mb)
            .arg("--public-key")
            .arg(&pem))
    };
    let o = verify_signed();
    assert!(
        o.status.success(),
        "audit verify --db --public-key: {}",
        describe(&o)
    );
    // ... and a record changed in its row fails the chain.
    let id = "(SELECT id FROM moves WHERE address = 'user0003@example.com')";
    let changed = sql_i64(
        &b.db,
        &format!(
            "WITH t AS (UPDATE source_audit SET line = replace(line, '\"event\":', '\"event\": ') \
             WHERE move_id = {id} AND seq = 3 RETURNING 1) SELECT count(*) FROM t"
        ),
    );
    assert_eq!(changed, 1);
    let o = verify_signed();
    assert!(
        !o.status.success(),
        "a tampered row verified: {}",
        describe(&o)
    );
    b.stop_serve();
    b.assert_exports_equal_sources();
}

#[test]
fn issue20_a_worker_killed_mid_pass_is_replaced_after_its_lease_and_the_move_completes_exactly_once(
) {
    let Some(db) = fresh_db("kill9") else {
        return;
    };
    // One mailbox, read slowly (the endpoint's rate), so that the kill lands mid-pass.
    let mut b = DbBatch::new(db, 1, 400, 4, "max_bytes_per_second = \"150KB\"\n");
    let o = b.batch(&["start"]);
    assert!(o.status.success(), "{}", describe(&o));
    let dir = b.env.dir.path().to_path_buf();
    let first = start_worker(&dir, &b.db, "first", 1, 3);
    // Wait until its heartbeats copied some acknowledged messages into the rows.
    let stored =
        "SELECT count(*) FROM source_audit WHERE line LIKE '%\"event\":\"message.stored\"%'";
    let t0 = Instant::now();
    while sql_i64(&b.db, stored) < 20 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no progress synced:\n{}",
            first.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    first.kill9();
    let at_kill = sql_i64(&b.db, stored);
    assert_eq!(sql_i64(&b.db, "SELECT lease_epoch FROM moves"), 1);
    assert!(
        sql_i64(&b.db, "SELECT count(*) FROM moves WHERE state = 'syncing'") == 1,
        "the kill landed mid-pass"
    );

    let second = start_worker(&dir, &b.db, "second", 1, 3);
    // It takes the move over once the lease has run out, and SIGTERM in the middle of
    // its pass lets the pass finish and commit before it exits 0.
    let t0 = Instant::now();
    while sql_i64(&b.db, "SELECT lease_epoch FROM moves") < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "nobody took the move over:\n{}",
            second.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = second.log.clone();
    assert_eq!(
        second.stop(),
        Some(0),
        "{}",
        fs::read_to_string(&log).unwrap()
    );
    let committed = "SELECT count(*) FROM moves WHERE state = 'synced' AND lease_owner IS NULL AND NOT runnable";
    assert_eq!(
        sql_i64(&b.db, committed),
        1,
        "the pass running at SIGTERM ended and was committed:\n{}",
        fs::read_to_string(&log).unwrap()
    );
    wait_until_synced(&b, &[], Duration::from_secs(5));
    assert_eq!(
        sql_i64(&b.db, "SELECT lease_epoch FROM moves"),
        2,
        "the second worker took the move over with a higher epoch"
    );
    // The records of the two leases do not interleave: one writer at a time.
    assert!(
        sql_i64(&b.db, "SELECT max(seq) FROM source_audit WHERE epoch = 1")
            < sql_i64(&b.db, "SELECT min(seq) FROM source_audit WHERE epoch = 2")
    );
    // It resumed: what the first worker synced was not sent again as new.
    let report = "SELECT (report->>'items_moved')::bigint FROM pass_reports";
    assert!(
        sql_i64(&b.db, report) <= 400 - at_kill,
        "resumed, not restarted"
    );
    b.assert_audit_logs_verify();
    b.stop_serve();
    b.assert_exports_equal_sources();
}

/// Sends `sig` (`STOP`, `CONT`) to a worker.
fn signal(w: &Worker, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &w.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Waits (at most 120 s) until `sql` counts at least `n`.
fn wait_for(db: &str, sql: &str, n: i64, what: &str, log: &dyn Fn() -> String) {
    let t0 = Instant::now();
    while sql_i64(db, sql) < n {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{what}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn issue20_a_paused_worker_whose_lease_was_taken_over_is_fenced_and_writes_nothing() {
    let Some(db) = fresh_db("fenced_worker") else {
        return;
    };
    let mut b = DbBatch::new(db, 1, 400, 4, "max_bytes_per_second = \"150KB\"\n");
    assert!(b.batch(&["start"]).status.success());
    let dir = b.env.dir.path().to_path_buf();
    let stored =
        "SELECT count(*) FROM source_audit WHERE line LIKE '%\"event\":\"message.stored\"%'";
    let old = start_worker(&dir, &b.db, "old", 1, 3);
    wait_for(&b.db, stored, 20, "no progress synced", &|| old.log_text());
    // Paused (a long GC, a frozen VM): no heartbeats; its lease runs out and another
    // worker takes the move over with a higher epoch.
    signal(&old, "STOP");
    let new = start_worker(&dir, &b.db, "new", 1, 3);
    wait_for(
        &b.db,
        "SELECT lease_epoch FROM moves",
        2,
        "nobody took the move over",
        &|| new.log_text(),
    );
    let rows_before = sql_i64(&b.db, "SELECT count(*) FROM source_audit WHERE epoch = 1");
    // It wakes up: its next heartbeat is refused, it stops the pass and writes nothing.
    signal(&old, "CONT");
    let t0 = Instant::now();
    while !old.log_text().contains("lease lost") {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the old worker was not fenced:\n{}",
            old.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        sql_i64(&b.db, "SELECT count(*) FROM source_audit WHERE epoch = 1"),
        rows_before,
        "the fenced worker wrote records"
    );
    wait_until_synced(&b, &[&old, &new], Duration::from_secs(300));
    assert!(
        sql_i64(&b.db, "SELECT max(seq) FROM source_audit WHERE epoch = 1")
            < sql_i64(&b.db, "SELECT min(seq) FROM source_audit WHERE epoch = 2"),
        "the two leases' records interleave"
    );
    let old_log = old.log.clone();
    assert_eq!(old.stop(), Some(0));
    assert!(
        fs::read_to_string(&old_log)
            .unwrap()
            .contains("1 lease(s) lost to other workers"),
        "{}",
        fs::read_to_string(&old_log).unwrap()
    );
    assert_eq!(new.stop(), Some(0));
    b.assert_audit_logs_verify();
    b.stop_serve();
    b.assert_exports_equal_sources();
}

/// Waits (at most 300 s) until no move of the batch is queued or leased.
fn wait_idle(b: &DbBatch, logs: &dyn Fn() -> String) {
    let busy = "SELECT count(*) FROM moves WHERE runnable OR lease_owner IS NOT NULL";
    let t0 = Instant::now();
    while sql_i64(&b.db, busy) > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "still busy:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn issue20_suspend_while_workers_run_then_resume_and_complete_through_the_database() {
    let Some(db) = fresh_db("suspend_complete") else {
        return;
    };
    let b = DbBatch::new(db, 3, 150, 4, "max_bytes_per_second = \"200KB\"\n");
    let w = start_worker(b.env.dir.path(), &b.db, "w", 3, 5);
    assert!(b.batch(&["start"]).status.success());
    wait_for(
        &b.db,
        "SELECT count(*) FROM moves WHERE lease_owner IS NOT NULL",
        3,
        "the worker did not lease all three",
        &|| w.log_text(),
    );
    // Suspended while their passes run: each is suspended when its pass ends, by the
    // worker, in the same transaction that releases it.
    let o = b.batch(&["suspend"]);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("0 mailbox(es) now, 3 when"),
        "{}",
        describe(&o)
    );
    wait_idle(&b, &|| w.log_text());
    assert!(
        states(&b.status()).iter().all(|(_, s)| s == "suspended"),
        "{:?}",
        states(&b.status())
    );
    let suspended_by = "SELECT count(*) FROM source_audit WHERE line LIKE '%\"to\":\"suspended\"%'";
    assert_eq!(
        sql_i64(&b.db, suspended_by),
        3,
        "the suspension is in each audit log"
    );
    // A suspended batch queues nothing (exit 5).
    let o = b.batch(&["start"]);
    assert_eq!(o.status.code(), Some(5), "{}", describe(&o));

    let o = b.batch(&["resume"]);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(states(&b.status()).iter().all(|(_, s)| s == "synced"));
    // The final passes, queued by `batch complete --db` and run by the worker.
    let o = b.batch(&["complete"]);
    assert!(o.status.success(), "{}", describe(&o));
    wait_idle(&b, &|| w.log_text());
    assert!(
        states(&b.status()).iter().all(|(_, s)| s == "completed"),
        "{:?}\n{}",
        states(&b.status()),
        w.log_text()
    );
    // Completed moves take no more passes: nothing is queued.
    let o = b.batch(&["start", "--json"]);
    let q: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(q["queued"].as_array().unwrap().len(), 0);
    assert_eq!(w.stop(), Some(0));
    b.assert_audit_logs_verify();
    let mut b = b;
    b.stop_serve();
    b.assert_exports_equal_sources();
}
