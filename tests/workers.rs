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
        let c = mailferry_coord::db::testing::client(&db).await;
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
        DbBatch::with_sizes(db, &vec![messages; users], max_moves, extra_endpoint)
    }

    /// As [`DbBatch::new`], one mailbox per entry of `sizes`, with that many messages.
    pub fn with_sizes(
        db: String,
        sizes: &[usize],
        max_moves: usize,
        extra_endpoint: &str,
    ) -> DbBatch {
        DbBatch::create(db, sizes, max_moves, extra_endpoint, false)
    }

    /// As [`DbBatch::new`], but `batch new` is given no database: the URL is in a file
    /// (0600) that the endpoint names with `coordination_db_file`.
    pub fn via_endpoint_key(db: String, users: usize, messages: usize) -> DbBatch {
        DbBatch::create(db, &vec![messages; users], 2, "", true)
    }

    fn create(
        db: String,
        sizes: &[usize],
        max_moves: usize,
        extra_endpoint: &str,
        via_endpoint_key: bool,
    ) -> DbBatch {
        let env = Env::new();
        init_volume(&env);
        let token = env.path("example.com.token");
        issue_token(&env, "example.com", &token);
        let serve = start_serve(&env, &[]);
        let mut mailboxes = Vec::new();
        let mut csv = String::from("EmailAddress,UserName,Password\n");
        for (i, &messages) in sizes.iter().enumerate() {
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
        let extra_endpoint = if via_endpoint_key {
            write_private(&env.path("db.url"), &db);
            format!("{extra_endpoint}coordination_db_file = \"db.url\"\n")
        } else {
            extra_endpoint.to_string()
        };
        fs::write(
            env.path("endpoint.toml"),
            format!(
                "kind = \"maildir\"\nroot = \"mail/{{user}}\"\nmax_concurrent_moves = {max_moves}\n{extra_endpoint}"
            ),
        )
        .unwrap();
        let name = "wave".to_string();
        let mut cmd = mailferry();
        cmd.args(["batch", "new", &name, "--csv"])
            .arg(env.path("users.csv"))
            .arg("--endpoint")
            .arg(env.path("endpoint.toml"))
            .args(["--proxy", &serve.url(), "--ca"])
            .arg(&serve.ca)
            .arg("--token-file")
            .arg(&token)
            .env_remove("MAILFERRY_DB")
            .env_remove("MAILFERRY_DB_FILE");
        if !via_endpoint_key {
            cmd.args(["--db", &db]);
        }
        let o = run(&mut cmd);
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
        for i in 0..self.mailboxes.len() {
            self.assert_export_equals_source(i);
        }
    }

    /// Exports mailbox `i` and compares it with its source: the count of messages, their
    /// bytes, then every message's folder, name, flags and content.
    pub fn assert_export_equals_source(&self, i: usize) {
        assert!(self.serve.is_none(), "stop serve first");
        let (address, src) = &self.mailboxes[i];
        let out = self.env.path(&format!("export{i}"));
        let o = export(&self.env, address, &out);
        assert!(o.status.success(), "export {address}: {}", describe(&o));
        let (source, exported) = (read_maildir(src), read_maildir(&out));
        assert!(!source.is_empty(), "{address}: the source is empty");
        let bytes = |m: &std::collections::BTreeMap<_, (String, Vec<u8>)>| {
            m.values().map(|(_, b)| b.len()).sum::<usize>()
        };
        assert_eq!(
            (exported.len(), bytes(&exported)),
            (source.len(), bytes(&source)),
            "{address}: the export's (messages, bytes) differ from the source's"
        );
        assert_eq!(
            exported, source,
            "{address}: export differs from the source"
        );
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

/// Writes `text` to `path`, owner-only (what a file holding a database URL must be).
pub(crate) fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
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
    // `batch status --db` reads every move in one query; `move status --db` builds the
    // move's state directory from its rows and reads it as without --db: they agree.
    let all = b.status();
    for e in all["mailboxes"].as_array().unwrap() {
        let address = e["address"].as_str().unwrap();
        let o = run(mailferry().args([
            "move",
            "status",
            "--db",
            &b.db,
            "--mailbox",
            address,
            "--json",
        ]));
        assert!(o.status.success(), "{}", describe(&o));
        let m: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(e["status"], m, "batch status and move status of {address}");
    }
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
    // `audit reconcile --db` compares the rows with the volume: it agrees here, and
    // fails against a volume that never received the mailbox.
    let reconcile = |volume: &Path, key: &Path| {
        run(mailferry()
            .args([
                "audit",
                "reconcile",
                "--db",
                &b.db,
                "--mailbox",
                "user0005@example.com",
            ])
            .arg("--volume")
            .arg(volume)
            .arg("--key-file")
            .arg(key)
            .arg("--json"))
    };
    let o = reconcile(&b.env.volume(), &b.env.key());
    assert!(o.status.success(), "audit reconcile --db: {}", describe(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["agreeing"], r["source_items"]);
    assert!(r["agreeing"].as_u64().unwrap() > 0, "{r}");
    let (other, other_key) = (b.env.path("other-volume"), b.env.path("other.key"));
    let o = run(mailferry()
        .args(["volume", "init", "--volume"])
        .arg(&other)
        .arg("--key-file")
        .arg(&other_key));
    assert!(o.status.success(), "{}", describe(&o));
    let o = reconcile(&other, &other_key);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("missing"),
        "{}",
        describe(&o)
    );
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
    // A longer lease for the new worker: a heartbeat of its delayed by a loaded machine
    // must not hand the move back to the old one (the test wants one takeover).
    let new = start_worker(&dir, &b.db, "new", 1, 15);
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
    // The store cut the paused worker's session off when the newer lease's session
    // asked for the mailbox, and nothing of fence 1 was written after fence 2 appeared.
    let logs = one_writer_at_a_time(&b.db, &b.env.volume());
    let records = &logs["user0000@example.com"];
    let refused: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "session.fenced")
        .collect();
    assert!(
        refused
            .iter()
            .any(|r| r["data"]["stale_fence"] == 1 && r["data"]["fence"] == 2),
        "no session.fenced for the paused worker's session: {refused:?}"
    );
    let opened: Vec<i64> = records
        .iter()
        .filter(|r| r["event"] == "session.opened")
        .map(|r| r["data"]["fence"].as_i64().unwrap())
        .collect();
    assert_eq!(opened, [1, 2], "one session per lease");
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

// === The issue's test: 4 workers, 200 mailboxes, 2 killed mid-pass ===

/// Every row of `sql`, each column as text (`NULL` → empty).
pub(crate) fn sql_rows(db: &str, sql: &str) -> Vec<Vec<String>> {
    let (db, sql) = (db.to_string(), sql.to_string());
    block_on(async move {
        let c = mailferry_coord::db::testing::client(&db).await;
        c.simple_query(&sql)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or_default().to_string())
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    })
}

/// A lease a worker held when it was killed.
#[derive(Debug)]
struct HeldLease {
    move_id: String,
    address: String,
    epoch: i64,
    /// `message.stored` records of this lease already copied into the rows.
    stored: i64,
}

/// The leases the worker process `pid` holds now.
fn leases_of(db: &str, pid: u32) -> Vec<HeldLease> {
    let stored = "'%\"event\":\"message.stored\"%'";
    sql_rows(
        db,
        &format!(
            "SELECT m.id, m.address, m.lease_epoch, \
                    (SELECT count(*) FROM source_audit s WHERE s.move_id = m.id \
                       AND s.epoch = m.lease_epoch AND s.line LIKE {stored}) \
             FROM moves m WHERE m.lease_owner IN (SELECT id FROM workers WHERE pid = {pid})"
        ),
    )
    .into_iter()
    .map(|r| HeldLease {
        move_id: r[0].clone(),
        address: r[1].clone(),
        epoch: r[2].parse().unwrap(),
        stored: r[3].parse().unwrap(),
    })
    .collect()
}

/// Kills -9 one of `workers` while it holds leases that `pick` accepts: the worker is
/// stopped (SIGSTOP: it can neither end a pass nor release a lease), its leases are read
/// from the database, and it is killed if `pick` still accepts them, else let go on.
/// Returns which worker it was and the leases it died holding. Polls for at most 180 s.
fn kill_holding(
    db: &str,
    workers: &mut [Option<Worker>],
    pick: &dyn Fn(&[HeldLease]) -> bool,
    what: &str,
) -> (usize, Vec<HeldLease>) {
    let t0 = Instant::now();
    loop {
        for (i, slot) in workers.iter_mut().enumerate() {
            let Some(w) = slot else { continue };
            let pid = w.child.id();
            if !pick(&leases_of(db, pid)) {
                continue;
            }
            signal(w, "STOP");
            let held = leases_of(db, pid);
            if pick(&held) {
                slot.take().unwrap().kill9();
                return (i, held);
            }
            signal(w, "CONT");
        }
        if t0.elapsed() > Duration::from_secs(180) {
            let logs: Vec<String> = workers.iter().flatten().map(Worker::log_text).collect();
            panic!(
                "no worker held {what} within 180 s:\n{}",
                logs.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The records of the volume's audit log that name a mailbox, grouped by its pseudonym,
/// in log order.
fn volume_records_by_mailbox(volume: &Path) -> std::collections::BTreeMap<String, Vec<Value>> {
    let log = fs::read_to_string(volume.join("audit.jsonl")).unwrap();
    let mut by = std::collections::BTreeMap::<String, Vec<Value>>::new();
    for line in log.lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        if let Some(m) = r["data"]["mailbox"].as_str() {
            by.entry(m.to_string()).or_default().push(r);
        }
    }
    by
}

/// The volume's log read per mailbox (keyed by address, found through the move id of
/// its `session.opened` records in the database `db`), after checking that no mailbox
/// ever had two writers: its fencing numbers never go down from one record to the next,
/// and every message record carries one (each was written under a worker's lease).
fn one_writer_at_a_time(db: &str, volume: &Path) -> std::collections::HashMap<String, Vec<Value>> {
    let addresses: std::collections::HashMap<String, String> =
        sql_rows(db, "SELECT id, address FROM moves")
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone()))
            .collect();
    let mut out = std::collections::HashMap::new();
    for (pseudonym, records) in volume_records_by_mailbox(volume) {
        let address = records
            .iter()
            .find_map(|r| r["data"]["move_id"].as_str())
            .and_then(|id| addresses.get(id))
            .unwrap_or_else(|| panic!("mailbox {pseudonym}: no session.opened names its move"))
            .clone();
        let mut last = 0;
        for r in &records {
            let event = r["event"].as_str().unwrap();
            let fence = r["data"]["fence"].as_i64();
            if event.starts_with("message.") && r["data"]["recovered"] != true {
                assert!(
                    fence.is_some(),
                    "{address}: a message record without a fence: {r}"
                );
            }
            if let Some(f) = fence {
                assert!(
                    f >= last,
                    "{address}: fence {f} after {last} in the volume's log: two writers: {r}"
                );
                last = f;
            }
        }
        out.insert(address, records);
    }
    out
}

/// Runs `f(i)` for every mailbox index on `threads` threads (each check is its own
/// process; two cores keep two of them busy).
fn each_mailbox_parallel(n: usize, threads: usize, f: &(dyn Fn(usize) + Sync)) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                f(i);
            });
        }
    });
}

#[test]
fn issue20_four_workers_two_killed_mid_pass_move_200_mailboxes_exactly_once_with_one_writer_each() {
    let Some(db) = fresh_db("four_workers_200") else {
        return;
    };
    // 200 small mailboxes (2-5 messages) and 4 large ones (120 messages). Each pass reads
    // at most 20 messages/s (the endpoint's limit applies to each pass), so a large
    // mailbox's pass lasts about 5 s, several heartbeats: long enough to be killed in.
    const USERS: usize = 200;
    const LARGE: [usize; 4] = [0, 50, 100, 150];
    const LEASE: u64 = 4;
    let sizes: Vec<usize> = (0..USERS)
        .map(|i| if LARGE.contains(&i) { 120 } else { 2 + i % 4 })
        .collect();
    let mut b = DbBatch::with_sizes(db, &sizes, 12, "max_messages_per_second = 20\n");
    let dir = b.env.dir.path().to_path_buf();
    let mut workers: Vec<Option<Worker>> = start_workers(&dir, &b.db, 4, 3, LEASE)
        .into_iter()
        .map(Some)
        .collect();
    let o = b.batch(&["start", "--json"]);
    assert!(o.status.success(), "batch start --db: {}", describe(&o));
    let q: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(q["queued"].as_array().unwrap().len(), USERS);

    // The first victim dies in a large mailbox's pass after its heartbeats copied some
    // of it into the rows; the second, holding whatever lease it holds at the time.
    let large = |l: &HeldLease| {
        LARGE
            .iter()
            .any(|i| l.address == format!("user{i:04}@example.com"))
    };
    let (v1, held1) = kill_holding(
        &b.db,
        &mut workers,
        &|h| h.iter().any(|l| large(l) && l.stored >= 10),
        "a large mailbox's lease with progress copied into the rows",
    );
    let (v2, held2) = kill_holding(&b.db, &mut workers, &|h| !h.is_empty(), "any lease");
    assert_ne!(v1, v2);
    let resumed: Vec<&HeldLease> = held1
        .iter()
        .filter(|l| large(l) && l.stored >= 10)
        .collect();
    assert!(!resumed.is_empty(), "{held1:?}");
    eprintln!("killed w{v1} holding {held1:?} and w{v2} holding {held2:?}");

    let alive: Vec<&Worker> = workers.iter().flatten().collect();
    assert_eq!(alive.len(), 2);
    wait_until_synced(&b, &alive, Duration::from_secs(600));

    // Every lease the dead held was taken over by a higher epoch, whose records come
    // after theirs, and the move synced.
    for l in held1.iter().chain(&held2) {
        let id = &l.move_id;
        let epoch = sql_i64(
            &b.db,
            &format!("SELECT lease_epoch FROM moves WHERE id = '{id}'"),
        );
        assert!(
            epoch > l.epoch,
            "{}: the lease {} held by a killed worker was never taken over (epoch now {epoch})",
            l.address,
            l.epoch
        );
        let later = sql_i64(
            &b.db,
            &format!(
                "SELECT count(*) FROM source_audit WHERE move_id = '{id}' AND epoch > {}",
                l.epoch
            ),
        );
        assert!(
            later > 0,
            "{}: nothing written after the takeover",
            l.address
        );
    }
    // Resumed where the rows stopped, not restarted: the last pass of a large mailbox
    // killed mid-pass moved at most what the rows did not hold yet.
    for l in &resumed {
        let moved = sql_i64(
            &b.db,
            &format!(
                "SELECT coalesce(sum((report->>'items_moved')::bigint), 0)::bigint FROM pass_reports \
                 WHERE move_id = '{}' AND epoch > {}",
                l.move_id, l.epoch
            ),
        );
        assert!(
            moved <= 120 - l.stored,
            "{}: moved {moved} again after the takeover; {} were already acknowledged in the rows",
            l.address,
            l.stored
        );
    }

    // The survivors stop cleanly; nothing is leased or queued any more.
    for w in workers.into_iter().flatten() {
        let log = w.log.clone();
        assert_eq!(
            w.stop(),
            Some(0),
            "{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
    }
    assert_eq!(
        sql_i64(
            &b.db,
            "SELECT count(*) FROM moves WHERE lease_owner IS NOT NULL OR runnable"
        ),
        0
    );
    // One writer at a time in the source logs: per move, the epochs of its rows never go
    // down from one record to the next (every record of epoch E after all of lower ones).
    let interleaved = sql_rows(
        &b.db,
        "SELECT DISTINCT m.address FROM (SELECT move_id, epoch, \
                lag(epoch) OVER (PARTITION BY move_id ORDER BY seq) AS prev FROM source_audit) t \
         JOIN moves m ON m.id = t.move_id WHERE t.prev > t.epoch ORDER BY 1",
    );
    assert!(
        interleaved.is_empty(),
        "source records of two leases interleave: {interleaved:?}"
    );
    let done = sql_rows(
        &b.db,
        "SELECT address, state FROM moves WHERE state <> 'synced'",
    );
    assert!(done.is_empty(), "not synced: {done:?}");

    b.stop_serve();
    let volume = b.env.volume();
    // The volume's log: per mailbox, its fencing numbers never go down, every message
    // record carries one (each was written under a lease), each message was stored once,
    // and each killed lease's successor opened the mailbox with a higher number.
    let seen: std::collections::HashMap<String, (i64, usize)> =
        one_writer_at_a_time(&b.db, &volume)
            .into_iter()
            .map(|(address, records)| {
                let last = records
                    .iter()
                    .filter_map(|r| r["data"]["fence"].as_i64())
                    .max();
                let stored = records
                    .iter()
                    .filter(|r| r["event"] == "message.stored")
                    .count();
                (address, (last.unwrap_or(0), stored))
            })
            .collect();
    for (i, (address, _)) in b.mailboxes.iter().enumerate() {
        let (fence, stored) = seen
            .get(address)
            .unwrap_or_else(|| panic!("{address}: no record in the volume's log"));
        assert_eq!(
            *stored, sizes[i],
            "{address}: {stored} message.stored records for {} messages",
            sizes[i]
        );
        for l in held1.iter().chain(&held2).filter(|l| &l.address == address) {
            assert!(
                *fence > l.epoch,
                "{address}: no session of a newer lease than the killed one ({}) in the volume's log",
                l.epoch
            );
        }
    }
    let o = run(mailferry()
        .args(["audit", "verify"])
        .arg(&volume)
        .arg("--key-file")
        .arg(b.env.key()));
    assert!(
        o.status.success(),
        "audit verify of the volume: {}",
        describe(&o)
    );

    // Per mailbox: its source log (the rows) verifies (no volume needed: two at a time),
    // reconciles with the volume, and its export equals its source (one process at a
    // time holds the volume).
    let t0 = Instant::now();
    each_mailbox_parallel(USERS, 2, &|i| {
        let address = &b.mailboxes[i].0;
        let o = run(mailferry().args(["audit", "verify", "--db", &b.db, "--mailbox", address]));
        assert!(
            o.status.success(),
            "audit verify --db {address}: {}",
            describe(&o)
        );
    });
    eprintln!("audit verify --db: {:?}", t0.elapsed());
    let t0 = Instant::now();
    for (i, (address, _)) in b.mailboxes.iter().enumerate() {
        let o = run(mailferry()
            .args([
                "audit",
                "reconcile",
                "--db",
                &b.db,
                "--mailbox",
                address,
                "--volume",
            ])
            .arg(&volume)
            .arg("--key-file")
            .arg(b.env.key()));
        assert!(
            o.status.success(),
            "audit reconcile --db {address}: {}",
            describe(&o)
        );
        b.assert_export_equals_source(i);
    }
    eprintln!("reconcile and export: {:?}", t0.elapsed());
}
