//! Tests against a real PostgreSQL (`MAILFERRY_TEST_PG`), each in its own database.

use crate::db::testing;
use crate::files::{self, Cursor};
use crate::lease::{self, Lease};
use crate::{CoordError, Db, DbUrl};
use std::collections::BTreeSet;
use std::time::Duration;

const TTL: Duration = Duration::from_secs(60);

pub(crate) async fn fresh(name: &str) -> Option<(Db, DbUrl)> {
    let server = testing::server()?;
    let url = DbUrl::new(&testing::fresh_database(&server, name).await).unwrap();
    Some((Db::connect(&url).await.unwrap(), url))
}

/// One endpoint `ep` allowing `max_moves` at once, one batch `b`, `n` runnable moves.
async fn fixture(db: &Db, max_moves: i32, n: usize) -> Vec<String> {
    add_endpoint(db, "ep", max_moves).await;
    db.client
        .batch_execute("INSERT INTO batches (name, record, endpoint) VALUES ('b', '{}', 'ep')")
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("move{i:03}");
        add_move(db, &id, "b", &format!("u{i}@example.com"), "ep").await;
        ids.push(id);
    }
    ids
}

/// `workers` workers, each on its own connection, each trying `tries` leases at the same
/// time as the others; returns how many leases they got in all. A lease transaction that
/// fails (a deadlock would) fails the test.
async fn race(url: &DbUrl, workers: usize, tries: usize) -> usize {
    let mut tasks = Vec::new();
    for w in 0..workers {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = client(&url).await;
            let mut n = 0;
            for _ in 0..tries {
                if lease::lease_one(&mut c, &format!("w{w}"), TTL)
                    .await
                    .expect("a lease transaction never fails under contention")
                    .is_some()
                {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total
}

/// An endpoint `name` allowing `max_moves` moves (and as many incremental passes) at
/// once, one connection each.
async fn add_endpoint(db: &Db, name: &str, max_moves: i32) {
    db.client
        .execute(
            "INSERT INTO endpoints (name, record, max_concurrent_moves, \
                                    max_concurrent_incremental_syncs, connections_per_move) \
             VALUES ($1, '', $2, $2, 1)",
            &[&name, &max_moves],
        )
        .await
        .unwrap();
}

/// A runnable move `id` of `address` in `batch`, read from `endpoint`, never run yet.
async fn add_move(db: &Db, id: &str, batch: &str, address: &str, endpoint: &str) {
    db.client
        .execute(
            "INSERT INTO moves (id, batch, address, endpoint, user_record, state, lifecycle, runnable) \
             VALUES ($1, $2, $3, $4, '{}', 'created', '{}', true)",
            &[&id, &batch, &address, &endpoint],
        )
        .await
        .unwrap();
}

pub(crate) async fn client(url: &DbUrl) -> tokio_postgres::Client {
    crate::db::connect_raw(url).await.unwrap()
}

pub(crate) async fn count(db: &Db, sql: &str) -> i64 {
    db.client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_are_idempotent() {
    let Some((db, url)) = fresh("migrations").await else {
        return;
    };
    for table in [
        "endpoints",
        "batches",
        "moves",
        "source_audit",
        "source_files",
        "pass_reports",
        "workers",
        "schedules",
    ] {
        let n = count(
            &db,
            &format!("SELECT count(*) FROM information_schema.tables WHERE table_name = '{table}'"),
        )
        .await;
        assert_eq!(n, 1, "table {table}");
    }
    // Again, and from several connections at once: nothing more is applied, nothing fails.
    let mut again = Vec::new();
    for _ in 0..3 {
        let url = url.clone();
        again.push(tokio::spawn(async move {
            let mut c = client(&url).await;
            crate::db::migrate(&mut c).await.unwrap()
        }));
    }
    for a in again {
        assert!(a.await.unwrap().is_empty(), "a second run applies nothing");
    }
    // Versions 1, 2 (batches.admin) and 3 (schedules), once each.
    assert_eq!(
        count(&db, "SELECT count(*) FROM refinery_schema_history").await,
        3
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_name = 'batches' AND column_name = 'admin'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn two_workers_leasing_at_once_never_get_the_same_move() {
    let Some((db, url)) = fresh("skip_locked").await else {
        return;
    };
    let ids = fixture(&db, 1000, 40).await;
    let mut tasks = Vec::new();
    for w in 0..2 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = client(&url).await;
            let mut got = Vec::new();
            while let Some(l) = lease::lease_one(&mut c, &format!("w{w}"), TTL)
                .await
                .unwrap()
            {
                got.push(l.move_id);
            }
            got
        }));
    }
    let mut all = Vec::new();
    let mut per_worker = Vec::new();
    for t in tasks {
        let got = t.await.unwrap();
        per_worker.push(got.len());
        all.extend(got);
    }
    let unique: BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!(unique.len(), all.len(), "a move was leased twice: {all:?}");
    assert_eq!(unique, ids.into_iter().collect(), "every move leased once");
    assert_eq!(
        count(&db, "SELECT count(*) FROM moves WHERE lease_epoch = 1").await,
        40
    );
    eprintln!("leases per worker: {per_worker:?}");
}

#[tokio::test]
async fn max_concurrent_moves_holds_across_workers() {
    let Some((db, url)) = fresh("max_moves").await else {
        return;
    };
    fixture(&db, 3, 12).await;
    let total = race(&url, 4, 5).await;
    assert_eq!(
        total, 3,
        "exactly the endpoint's max_concurrent_moves were leased"
    );
    let live = "SELECT count(*) FROM moves WHERE lease_owner IS NOT NULL AND lease_expires > now()";
    assert_eq!(count(&db, live).await, 3);
    // An expired lease frees its place.
    db.client
        .execute(
            "UPDATE moves SET lease_expires = now() - interval '1 second' \
             WHERE id = (SELECT id FROM moves WHERE lease_owner IS NOT NULL LIMIT 1)",
            &[],
        )
        .await
        .unwrap();
    let mut c = client(&url).await;
    assert!(lease::lease_one(&mut c, "w9", TTL).await.unwrap().is_some());
    assert!(lease::lease_one(&mut c, "w9", TTL).await.unwrap().is_none());
    assert_eq!(count(&db, live).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_racing_over_several_endpoints_fill_each_exactly_and_never_deadlock() {
    let Some((db, url)) = fresh("many_endpoints").await else {
        return;
    };
    // Three endpoints of two places each; their moves interleave in lease order, so a
    // transaction meets a full endpoint before a free one and back again.
    for ep in ["ep0", "ep1", "ep2"] {
        add_endpoint(&db, ep, 2).await;
    }
    db.client
        .batch_execute("INSERT INTO batches (name, record, endpoint) VALUES ('b', '{}', 'ep0')")
        .await
        .unwrap();
    for i in 0..30 {
        add_move(
            &db,
            &format!("move{i:03}"),
            "b",
            &format!("u{i:03}@example.com"),
            &format!("ep{}", i % 3),
        )
        .await;
    }
    let total = race(&url, 6, 6).await;
    assert_eq!(total, 6, "every endpoint's two places were leased, no more");
    for ep in ["ep0", "ep1", "ep2"] {
        let live: i64 = db
            .client
            .query_one(
                "SELECT count(*) FROM moves WHERE endpoint = $1 \
                 AND lease_owner IS NOT NULL AND lease_expires > now()",
                &[&ep],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(live, 2, "live leases of {ep}");
    }
}

#[tokio::test]
async fn a_free_endpoint_is_leased_behind_many_moves_of_a_full_one() {
    let Some((db, url)) = fresh("behind_full").await else {
        return;
    };
    // 40 moves of a one-place endpoint come first in lease order (batch `a`), 3 of a
    // two-place endpoint after them (batch `b`): more than one look's 32 candidates.
    add_endpoint(&db, "full", 1).await;
    add_endpoint(&db, "free", 2).await;
    db.client
        .batch_execute(
            "INSERT INTO batches (name, record, endpoint) \
               VALUES ('a', '{}', 'full'), ('b', '{}', 'free')",
        )
        .await
        .unwrap();
    for (batch, endpoint, n) in [("a", "full", 40), ("b", "free", 3)] {
        for i in 0..n {
            let id = format!("{batch}{i:03}");
            add_move(&db, &id, batch, &format!("u{i:03}@example.com"), endpoint).await;
        }
    }
    let mut c = client(&url).await;
    let mut got = Vec::new();
    while let Some(l) = lease::lease_one(&mut c, "w", TTL).await.unwrap() {
        got.push(l.endpoint);
    }
    assert_eq!(
        got,
        ["full", "free", "free"],
        "one of full's, then free's two places"
    );
}

#[tokio::test]
async fn max_connections_is_one_budget_across_workers() {
    let Some((db, url)) = fresh("max_conns").await else {
        return;
    };
    fixture(&db, 100, 10).await;
    // 5 connections, 2 per move: two moves at once, whoever leases.
    db.client
        .execute(
            "UPDATE endpoints SET max_connections = 5, connections_per_move = 2",
            &[],
        )
        .await
        .unwrap();
    let mut n = 0;
    for w in 0..3 {
        let mut c = client(&url).await;
        while lease::lease_one(&mut c, &format!("w{w}"), TTL)
            .await
            .unwrap()
            .is_some()
        {
            n += 1;
        }
    }
    assert_eq!(n, 2);
    assert_eq!(
        count(&db, "SELECT sum(lease_connections)::bigint FROM moves").await,
        4
    );
}

/// A local copy holding an audit log of `records` records (and its head and key).
fn local_log(dir: &std::path::Path, records: usize) {
    mailferry_audit::private::create_dir_all(dir).unwrap();
    let mut log = mailferry_audit::AuditLog::open(dir.join("audit.jsonl")).unwrap();
    for i in 0..records {
        log.append("agent", "test.record", serde_json::json!({ "i": i }))
            .unwrap();
    }
    log.sync().unwrap();
}

fn append(dir: &std::path::Path, n: usize) {
    let mut log = mailferry_audit::AuditLog::open(dir.join("audit.jsonl")).unwrap();
    for i in 0..n {
        log.append("agent", "test.more", serde_json::json!({ "i": i }))
            .unwrap();
    }
    log.sync().unwrap();
}

#[tokio::test]
async fn an_expired_lease_is_taken_with_a_higher_epoch_and_the_old_owner_is_fenced() {
    let Some((db, url)) = fresh("fencing").await else {
        return;
    };
    fixture(&db, 10, 1).await;
    let (mut a, mut b) = (client(&url).await, client(&url).await);
    let la: Lease = lease::lease_one(&mut a, "old", TTL).await.unwrap().unwrap();
    assert_eq!(la.epoch, 1);
    let scratch = tempfile::tempdir().unwrap();
    let dir_a = scratch.path().join("a");
    local_log(&dir_a, 3);
    let cursor = lease::heartbeat(&mut a, &la, &dir_a, &Cursor::default(), TTL)
        .await
        .unwrap();
    let synced = "SELECT count(*) FROM source_audit";
    let before = count(&db, synced).await;
    assert!(before >= 3, "the heartbeat copied the records");

    // The old owner stops heartbeating (paused, partitioned): its lease expires.
    db.client
        .execute(
            "UPDATE moves SET lease_expires = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let lb = lease::lease_one(&mut b, "new", TTL).await.unwrap().unwrap();
    assert_eq!(lb.move_id, la.move_id);
    assert_eq!(lb.epoch, 2, "a new lease carries a higher fencing number");

    // The old owner wakes up with more records: refused, and nothing of it is written.
    append(&dir_a, 5);
    let expires = "SELECT extract(epoch FROM lease_expires)::float8 FROM moves";
    let exp_before: f64 = db.client.query_one(expires, &[]).await.unwrap().get(0);
    let err = lease::heartbeat(&mut a, &la, &dir_a, &cursor, TTL)
        .await
        .unwrap_err();
    assert!(matches!(err, CoordError::Fenced { mine: 1, .. }), "{err}");
    let err = lease::release(&mut a, &la, &dir_a, &cursor, Default::default())
        .await
        .unwrap_err();
    assert!(matches!(err, CoordError::Fenced { .. }), "{err}");
    assert_eq!(
        count(&db, synced).await,
        before,
        "no record of the old owner"
    );
    let exp_after: f64 = db.client.query_one(expires, &[]).await.unwrap().get(0);
    assert_eq!(exp_before, exp_after, "the lease was not extended");
    let owner: String = db
        .client
        .query_one("SELECT lease_owner FROM moves", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "new");

    // The new owner resumes exactly where the rows stop, and its records follow.
    let dir_b = scratch.path().join("b");
    let cur_b = files::materialize(&b, &lb.move_id, &dir_b, files::Copy::Full)
        .await
        .unwrap();
    assert_eq!(cur_b.last_seq, before);
    append(&dir_b, 2);
    lease::release(&mut b, &lb, &dir_b, &cur_b, Default::default())
        .await
        .unwrap();
    assert_eq!(count(&db, synced).await, before + 2);
    assert_eq!(
        count(&db, "SELECT count(DISTINCT epoch) FROM source_audit").await,
        2
    );
    let (_guard, copy) = crate::ops::audit_copy(&db, &lb.move_id).await.unwrap();
    mailferry_audit::verify(copy.join("audit.jsonl")).unwrap();
}

#[tokio::test]
async fn the_audit_rows_verify_and_a_tampered_row_does_not() {
    let Some((db, url)) = fresh("audit_rows").await else {
        return;
    };
    fixture(&db, 10, 1).await;
    let mut c = client(&url).await;
    let l = lease::lease_one(&mut c, "w", TTL).await.unwrap().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("m");
    local_log(&dir, 6);
    let local = std::fs::read(dir.join("audit.jsonl")).unwrap();
    lease::release(&mut c, &l, &dir, &Cursor::default(), Default::default())
        .await
        .unwrap();
    let (_g, copy) = crate::ops::audit_copy(&db, &l.move_id).await.unwrap();
    assert_eq!(
        std::fs::read(copy.join("audit.jsonl")).unwrap(),
        local,
        "the rows hold the log byte for byte"
    );
    let ok = mailferry_audit::verify(copy.join("audit.jsonl")).unwrap();
    assert_eq!(ok.records, 7);

    db.client
        .execute(
            "UPDATE source_audit SET line = replace(line, '\"i\":2', '\"i\":9') WHERE seq = 4",
            &[],
        )
        .await
        .unwrap();
    let (_g2, copy2) = crate::ops::audit_copy(&db, &l.move_id).await.unwrap();
    let err = mailferry_audit::verify(copy2.join("audit.jsonl")).unwrap_err();
    assert!(
        err.to_string().contains('5') || err.to_string().contains('4'),
        "{err}"
    );
}

#[tokio::test]
async fn max_concurrent_incremental_syncs_holds_across_workers() {
    let Some((db, url)) = fresh("incremental").await else {
        return;
    };
    fixture(&db, 10, 6).await;
    // Four moves synced before (incremental passes), two never did; at most two
    // incremental passes at once, whatever the workers.
    db.client
        .batch_execute(
            "UPDATE endpoints SET max_concurrent_incremental_syncs = 2; \
             UPDATE moves SET lifecycle = '{\"last_sync_at\": \"2026-01-01T00:00:00Z\"}' \
              WHERE id IN ('move000', 'move001', 'move002', 'move003');",
        )
        .await
        .unwrap();
    let mut leased = Vec::new();
    for w in 0..3 {
        let mut c = client(&url).await;
        while let Some(l) = lease::lease_one(&mut c, &format!("w{w}"), TTL)
            .await
            .unwrap()
        {
            leased.push(l.move_id);
        }
    }
    leased.sort();
    let incremental = leased.iter().filter(|id| id.as_str() < "move004").count();
    assert_eq!(incremental, 2, "{leased:?}");
    assert_eq!(leased.len(), 4, "both first copies ran too: {leased:?}");
}

#[tokio::test]
async fn a_failed_pass_is_queued_again_after_its_backoff() {
    let Some((db, url)) = fresh("retry").await else {
        return;
    };
    fixture(&db, 10, 1).await;
    let mut c = client(&url).await;
    let l = lease::lease_one(&mut c, "w", TTL).await.unwrap().unwrap();
    assert_eq!(l.attempts, 0);
    let scratch = tempfile::tempdir().unwrap();
    let ending = lease::Ending {
        error: Some("proxy refused the session with HTTP 409".into()),
        retry_in: Some(Duration::from_secs(600)),
    };
    lease::release(&mut c, &l, scratch.path(), &Cursor::default(), ending)
        .await
        .unwrap();
    // Queued, but not before its time.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM moves WHERE runnable AND attempts = 1"
        )
        .await,
        1
    );
    assert!(lease::lease_one(&mut c, "w", TTL).await.unwrap().is_none());
    db.client
        .execute(
            "UPDATE moves SET not_before = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let again = lease::lease_one(&mut c, "w", TTL).await.unwrap().unwrap();
    assert_eq!((again.attempts, again.epoch), (1, 2));
    // The last attempt gives up: the move stays Failed until queued again.
    let ending = lease::Ending {
        error: Some("still refused".into()),
        retry_in: None,
    };
    lease::release(&mut c, &again, scratch.path(), &Cursor::default(), ending)
        .await
        .unwrap();
    assert_eq!(
        count(&db, "SELECT count(*) FROM moves WHERE NOT runnable AND attempts = 0 AND last_error = 'still refused'").await,
        1
    );
}

/// A pass the store refused for a newer fencing number ends the lease like a fenced
/// heartbeat: no release, no retry; any other failure is released and queued again while
/// attempts allow, and a success is released.
#[test]
fn a_pass_the_store_fenced_is_final_for_the_lease() {
    use crate::worker::ending_of;
    use mailferry_control::lifecycle::MoveState;
    use mailferry_control::AppError;
    let store_fenced: Result<Result<MoveState, AppError>, CoordError> = Ok(Err(AppError::Fenced {
        mailbox: "u0@example.com".into(),
        fence: 1,
        message: "a newer lease (fencing number 2) owns mailbox u0@example.com".into(),
    }));
    assert!(ending_of(&store_fenced, 0).is_none());
    let db_fenced: Result<Result<MoveState, AppError>, CoordError> = Err(CoordError::Fenced {
        move_id: "m".into(),
        mine: 1,
    });
    assert!(ending_of(&db_fenced, 0).is_none());
    let failed: Result<Result<MoveState, AppError>, CoordError> =
        Ok(Err(AppError::Failed("store unreachable".into())));
    let e = ending_of(&failed, 0).expect("a failed pass is released");
    assert!(e.error.unwrap().contains("store unreachable"));
    assert!(e.retry_in.is_some(), "queued again");
    assert!(ending_of(&failed, 3).unwrap().retry_in.is_none(), "gave up");
    let ok: Result<Result<MoveState, AppError>, CoordError> = Ok(Ok(MoveState::Synced));
    let e = ending_of(&ok, 0).unwrap();
    assert!(e.error.is_none() && e.retry_in.is_none());
}

/// The store keeps one fencing number per mailbox: a move of an address that an earlier
/// batch moved (to epoch 3) starts above it, not at 1, or the store would refuse it.
#[tokio::test]
async fn the_fencing_number_grows_per_address_across_batches() {
    let Some((db, url)) = fresh("fence_per_address").await else {
        return;
    };
    fixture(&db, 10, 1).await;
    db.client
        .batch_execute(
            "UPDATE moves SET lease_epoch = 3, runnable = false; \
             INSERT INTO batches (name, record, endpoint) VALUES ('b2', '{}', 'ep'); \
             INSERT INTO moves (id, batch, address, endpoint, user_record, state, lifecycle, runnable) \
               VALUES ('again', 'b2', 'u0@example.com', 'ep', '{}', 'created', '{}', true), \
                      ('other', 'b2', 'u9@example.com', 'ep', '{}', 'created', '{}', true);",
        )
        .await
        .unwrap();
    let mut c = client(&url).await;
    let mut got = Vec::new();
    while let Some(l) = lease::lease_one(&mut c, "w", TTL).await.unwrap() {
        got.push((l.move_id.clone(), l.epoch));
    }
    got.sort();
    assert_eq!(
        got,
        [("again".to_string(), 4), ("other".to_string(), 1)],
        "per address, not per move"
    );
}

/// Issue 20, `batch add-users --db`: two at once, with overlapping CSVs, add every
/// address exactly once (the batch row's lock serialises them: the second sees the
/// first's users and skips them), and the batch record lists each once.
#[tokio::test]
async fn two_add_users_at_once_add_each_address_once() {
    use mailferry_control::batch::NewBatch;
    use mailferry_control::moving::Destination;
    let Some((mut db, url)) = fresh("add_users_race").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ep = dir.path().join("ep.toml");
    std::fs::write(
        &ep,
        format!(
            "kind = \"maildir\"\nroot = \"{}/{{user}}\"\nmax_concurrent_moves = 2\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let csv = |name: &str, users: &[&str]| {
        let p = dir.path().join(name);
        let rows: String = users
            .iter()
            .map(|u| format!("{u}@example.com,{u},\n"))
            .collect();
        std::fs::write(&p, format!("EmailAddress,UserName,Password\n{rows}")).unwrap();
        p
    };
    let new = NewBatch {
        csv: csv("first.csv", &["u0"]),
        endpoint: ep,
        destination: Destination::Remote {
            url: "https://store.example.com:8443".into(),
            ca: dir.path().join("ca.pem"),
            token_file: dir.path().join("agent.token"),
        },
        profile: None,
        concurrency: None,
        settings: Default::default(),
        actor: "test".into(),
    };
    crate::ops::create(&mut db, "b", &new).await.unwrap();
    let (a, b) = (
        csv("a.csv", &["u0", "u1", "u2", "u3"]),
        csv("b.csv", &["u1", "u2", "u4"]),
    );
    let mut other = Db::connect(&url).await.unwrap();
    let (ra, rb) = tokio::join!(
        crate::ops::add_users(&mut db, "b", &a, "alice"),
        crate::ops::add_users(&mut other, "b", &b, "bob"),
    );
    let ((added_a, already_a), (added_b, already_b)) = (ra.unwrap(), rb.unwrap());
    assert_eq!(added_a + added_b, 4, "u1..u4 once each");
    assert_eq!(
        already_a.len() + already_b.len(),
        3,
        "u0 in a, and u1, u2 in whichever ran second"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM moves").await, 5);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM moves WHERE runnable OR state <> 'created'"
        )
        .await,
        0,
        "Created, not queued"
    );
    let (batch, _) = crate::ops::load_batch(&db.client, "b").await.unwrap();
    let mut addresses: Vec<&str> = batch.users.iter().map(|u| u.address.as_str()).collect();
    addresses.sort();
    assert_eq!(
        addresses,
        ["u0", "u1", "u2", "u3", "u4"].map(|u| format!("{u}@example.com"))
    );
    // Each new move has its first audit records and state files, as `batch new` makes.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM moves m WHERE NOT EXISTS \
               (SELECT 1 FROM source_audit s WHERE s.move_id = m.id) \
             OR NOT EXISTS (SELECT 1 FROM source_files f WHERE f.move_id = m.id AND f.name = 'move.json')"
        )
        .await,
        0
    );
}
