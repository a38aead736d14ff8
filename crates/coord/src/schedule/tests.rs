//! Schedules against a real PostgreSQL (`MAILFERRY_TEST_PG`), each test in its own
//! database: a due start is queued once however many workers tick at once, a future one
//! is not, and a completion waits until every mailbox is synced.

use super::{Completion, Fired, Phase};
use crate::tests::{client, count, fresh};
use crate::{ops, schedule, Db, DbUrl};
use mailferry_control::batch::NewBatch;
use mailferry_control::moving::Destination;
use std::sync::Arc;

const USERS: usize = 3;

/// A batch `b` of [`USERS`] empty Maildir mailboxes, made by `batch new --db`'s code
/// (the schedule queues its passes with the real enqueue, which reads the batch record).
async fn batch(db: &mut Db) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("EmailAddress,UserName,Password\n");
    for i in 0..USERS {
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(dir.path().join(format!("mail/u{i}/{sub}"))).unwrap();
        }
        csv.push_str(&format!("u{i}@example.com,u{i},\n"));
    }
    std::fs::write(dir.path().join("users.csv"), csv).unwrap();
    std::fs::write(
        dir.path().join("endpoint.toml"),
        format!(
            "kind = \"maildir\"\nroot = \"{}/mail/{{user}}\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let new = NewBatch {
        csv: dir.path().join("users.csv"),
        endpoint: dir.path().join("endpoint.toml"),
        destination: Destination::Local {
            volume: dir.path().join("volume"),
            credential: mailferry_store::Credential::KeyFile(dir.path().join("volume.key")),
            s3: Default::default(),
        },
        profile: None,
        concurrency: None,
        settings: Default::default(),
        actor: "test".into(),
    };
    ops::create(db, "b", &new).await.unwrap();
    dir
}

/// Ticks `tickers` workers at once, `rounds` times each; every firing of them all.
async fn race(url: &DbUrl, tickers: usize, rounds: usize) -> Vec<(String, Fired)> {
    let go = Arc::new(tokio::sync::Barrier::new(tickers));
    let mut tasks = Vec::new();
    for w in 0..tickers {
        let (url, go) = (url.clone(), go.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = client(&url).await;
            let me = format!("worker:w{w}");
            let mut fired = Vec::new();
            go.wait().await;
            for _ in 0..rounds {
                for f in schedule::tick(&mut c, &me).await.unwrap() {
                    fired.push((me.clone(), f));
                }
            }
            fired
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

async fn phase(db: &Db) -> Phase {
    schedule::get(&db.client, "b").await.unwrap().unwrap().phase
}

/// What the workers' passes would leave: every move in `state`, nothing queued or leased.
async fn passes_end(db: &Db, state: &str) {
    db.client
        .execute(
            "UPDATE moves SET runnable = false, lease_owner = NULL, lease_expires = NULL, \
                    state = $1 WHERE batch = 'b'",
            &[&state],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_due_start_is_queued_once_while_three_workers_tick_at_once() {
    let Some((mut db, url)) = fresh("sched_start_once").await else {
        return;
    };
    let _dir = batch(&mut db).await;
    let past = mailferry_core::unix_now() - 1;
    let now = schedule::start(&mut db, "b", Some(past), None, "admin:ann")
        .await
        .unwrap();
    assert_eq!(now, 0, "a scheduled start queues nothing by itself");
    assert_eq!(
        count(&db, "SELECT count(*) FROM moves WHERE runnable").await,
        0
    );
    let fired = race(&url, 3, 4).await;
    assert_eq!(fired.len(), 1, "fired once across all workers: {fired:?}");
    let (by, f) = &fired[0];
    assert_eq!((f.complete, f.queued), (false, USERS));
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM moves WHERE runnable AND pass_kind = 'sync'"
        )
        .await,
        USERS as i64
    );
    let s = schedule::get(&db.client, "b").await.unwrap().unwrap();
    assert_eq!(s.phase, Phase::Sync);
    assert_eq!(s.start_fired.as_ref().map(|(w, _)| w), Some(by));
    assert_eq!(s.actor, "admin:ann");
    // Its passes run; with no completion the run ends when they have ended.
    assert!(
        race(&url, 1, 1).await.is_empty(),
        "nothing fires while passes are queued"
    );
    passes_end(&db, "synced").await;
    assert!(race(&url, 2, 2).await.is_empty());
    let s = schedule::get(&db.client, "b").await.unwrap().unwrap();
    assert_eq!((s.phase, s.error), (Phase::Done, None));
    assert!(s.complete_fired.is_none());
}

#[tokio::test]
async fn a_future_start_is_not_queued() {
    let Some((mut db, url)) = fresh("sched_future").await else {
        return;
    };
    let _dir = batch(&mut db).await;
    let later = mailferry_core::unix_now() + 3600;
    schedule::start(
        &mut db,
        "b",
        Some(later),
        Some(Completion::WhenSynced),
        "admin:ann",
    )
    .await
    .unwrap();
    assert!(race(&url, 3, 2).await.is_empty());
    assert_eq!(phase(&db).await, Phase::Start);
    assert_eq!(
        count(&db, "SELECT count(*) FROM moves WHERE runnable").await,
        0
    );
    let s = schedule::get(&db.client, "b").await.unwrap().unwrap();
    assert_eq!(s.waiting_until(), Some(later));
}

#[tokio::test]
async fn completion_waits_until_every_mailbox_is_synced_then_fires_once() {
    let Some((mut db, url)) = fresh("sched_complete").await else {
        return;
    };
    let _dir = batch(&mut db).await;
    let queued = schedule::start(
        &mut db,
        "b",
        None,
        Some(Completion::WhenSynced),
        "admin:ann",
    )
    .await
    .unwrap();
    assert_eq!(queued, USERS);
    // Two passes ended, the third still runs (leased).
    db.client
        .batch_execute(
            "UPDATE moves SET runnable = false, state = 'synced' WHERE address <> 'u2@example.com'; \
             UPDATE moves SET state = 'syncing', lease_owner = 'w', \
                    lease_expires = now() + interval '1 minute' WHERE address = 'u2@example.com';",
        )
        .await
        .unwrap();
    assert!(
        race(&url, 3, 2).await.is_empty(),
        "a mailbox is still syncing"
    );
    assert_eq!(phase(&db).await, Phase::Sync);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM moves WHERE pass_kind = 'complete'"
        )
        .await,
        0
    );
    // The last pass ends: the final passes are queued, once.
    passes_end(&db, "synced").await;
    let fired = race(&url, 3, 3).await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!((fired[0].1.complete, fired[0].1.queued), (true, USERS));
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM moves WHERE runnable AND pass_kind = 'complete'"
        )
        .await,
        USERS as i64
    );
    let s = schedule::get(&db.client, "b").await.unwrap().unwrap();
    assert_eq!(s.phase, Phase::Final);
    assert_eq!(s.complete_fired.map(|(w, _)| w), Some(fired[0].0.clone()));
    // The final passes end: the run is over.
    passes_end(&db, "completed").await;
    assert!(race(&url, 1, 1).await.is_empty());
    let s = schedule::get(&db.client, "b").await.unwrap().unwrap();
    assert_eq!((s.phase, s.error), (Phase::Done, None));
}

#[tokio::test]
async fn a_failed_mailbox_stops_the_completion_and_a_suspended_batch_waits() {
    let Some((mut db, url)) = fresh("sched_failed").await else {
        return;
    };
    let _dir = batch(&mut db).await;
    schedule::start(
        &mut db,
        "b",
        None,
        Some(Completion::WhenSynced),
        "admin:ann",
    )
    .await
    .unwrap();
    passes_end(&db, "synced").await;
    // Suspended: nothing moves, however long it waits.
    db.client
        .execute("UPDATE batches SET suspended = true WHERE name = 'b'", &[])
        .await
        .unwrap();
    assert!(race(&url, 2, 2).await.is_empty());
    assert_eq!(phase(&db).await, Phase::Sync);
    db.client
        .batch_execute(
            "UPDATE batches SET suspended = false WHERE name = 'b'; \
             UPDATE moves SET state = 'failed' WHERE address = 'u1@example.com'; \
             UPDATE moves SET state = 'created', last_error = 'volume in use' \
               WHERE address = 'u2@example.com';",
        )
        .await
        .unwrap();
    assert!(race(&url, 2, 2).await.is_empty(), "not completed");
    let s = schedule::get(&db.client, "b").await.unwrap().unwrap();
    assert_eq!(s.phase, Phase::Done);
    assert!(
        s.error
            .as_deref()
            .unwrap()
            .contains("u1@example.com, u2@example.com"),
        "{:?}",
        s.error
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM moves WHERE runnable").await,
        0
    );
}

#[tokio::test]
async fn a_timed_completion_waits_for_its_time() {
    let Some((mut db, url)) = fresh("sched_at").await else {
        return;
    };
    let _dir = batch(&mut db).await;
    let at = mailferry_core::unix_now() + 3600;
    schedule::start(&mut db, "b", None, Some(Completion::At(at)), "admin:ann")
        .await
        .unwrap();
    passes_end(&db, "synced").await;
    assert!(race(&url, 2, 2).await.is_empty());
    let s = schedule::get(&db.client, "b").await.unwrap().unwrap();
    assert_eq!((s.phase, s.waiting_until()), (Phase::Complete, Some(at)));
    // Its time comes.
    db.client
        .execute(
            "UPDATE schedules SET complete_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let fired = race(&url, 3, 2).await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert!(fired[0].1.complete);
    assert_eq!(phase(&db).await, Phase::Final);
}
