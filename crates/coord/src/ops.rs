//! The batch and move commands against the coordination database: `batch new`,
//! `add-users`, `start` (and its dry run), `complete`, `suspend`, `resume`, `status`,
//! `move status` and the audit log copy `audit verify` checks.
//!
//! Each reuses the file-based control plane on a local copy of the rows
//! ([`crate::files`]): `batch new` creates the batch in a temporary state root exactly
//! as without `--db` (the same CSV checks, the same first audit records) and moves it
//! into the rows; a status is the same [`status::status`] read from a copy; a
//! suspension of a move nobody runs is [`lifecycle::suspend`] on a copy, copied back in
//! the transaction that holds the move's row. `batch start` only queues: workers run the
//! passes. This module does not lease or run passes.

use crate::files::{self, Copy, Cursor};
use crate::{CoordError, Db};
use mailferry_control::advice::Advice;
use mailferry_control::batch::{self, Batch, BatchDir, BatchStatus, BatchUser, NewBatch};
use mailferry_control::endpoint::Endpoint;
use mailferry_control::lifecycle::{self, Lifecycle, MoveState};
use mailferry_control::status::{self, MoveStatus};
use mailferry_control::AppError;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tokio_postgres::GenericClient;

/// The row values of an endpoint's limits.
struct EndpointRow {
    name: String,
    record: String,
    max_concurrent_moves: i32,
    max_concurrent_incremental_syncs: i32,
    max_connections: Option<i32>,
    connections_per_move: i32,
    max_bytes_per_second: Option<i64>,
}

fn endpoint_row(path: &Path, profile: Option<&Path>) -> Result<EndpointRow, CoordError> {
    let name = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let record = std::fs::read_to_string(&name).map_err(CoordError::io(&name))?;
    let ep = Endpoint::parse(&record, &name)?;
    let profile = lifecycle::load_profile(profile)?;
    let max_connections = ep.imap.as_ref().and_then(|i| i.max_connections);
    // What one move reads with, as `SharedReading` counts it for a single-machine run.
    let wanted = ep
        .imap
        .as_ref()
        .and_then(|i| i.connections)
        .or(profile.source.connections)
        .unwrap_or(mailferry_agent::source::connections::DEFAULT_CONNECTIONS);
    let per_move = max_connections.map_or(wanted, |m| wanted.min(m)).max(1);
    let int = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    Ok(EndpointRow {
        name: name.display().to_string(),
        record,
        max_concurrent_moves: int(ep.max_concurrent_moves.max(1)),
        max_concurrent_incremental_syncs: int(ep.max_concurrent_incremental_syncs.max(1)),
        max_connections: max_connections.map(int),
        connections_per_move: int(per_move),
        max_bytes_per_second: ep
            .max_bytes_per_second
            .map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
    })
}

async fn upsert_endpoint(c: &impl GenericClient, e: &EndpointRow) -> Result<(), CoordError> {
    c.execute(
        "INSERT INTO endpoints (name, record, max_concurrent_moves, max_connections, \
                                connections_per_move, max_bytes_per_second, \
                                max_concurrent_incremental_syncs) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record, \
             max_concurrent_moves = EXCLUDED.max_concurrent_moves, \
             max_concurrent_incremental_syncs = EXCLUDED.max_concurrent_incremental_syncs, \
             max_connections = EXCLUDED.max_connections, \
             connections_per_move = EXCLUDED.connections_per_move, \
             max_bytes_per_second = EXCLUDED.max_bytes_per_second, updated_at = now()",
        &[
            &e.name,
            &e.record,
            &e.max_concurrent_moves,
            &e.max_connections,
            &e.connections_per_move,
            &e.max_bytes_per_second,
            &e.max_concurrent_incremental_syncs,
        ],
    )
    .await
    .map_err(CoordError::db(format!("recording endpoint {}", e.name)))?;
    Ok(())
}

/// Deletes the scratch state directories `batch new --db` made, several at once: one
/// after the other, unlinking thousands of files just written took longer than making
/// them (25 s for 1,000 mailboxes on a busy disk). What cannot be deleted is left to
/// the [`tempfile::TempDir`]'s own cleanup.
async fn remove_scratch(scratch: tempfile::TempDir, bd: &BatchDir) {
    let mailboxes = bd.dir.join(batch::MAILBOXES_DIR);
    tokio::task::spawn_blocking(move || remove_all(scratch, &mailboxes))
        .await
        .expect("removing the scratch copy panicked");
}

/// [`remove_scratch`]'s blocking part.
fn remove_all(scratch: tempfile::TempDir, mailboxes: &Path) {
    let dirs: Vec<PathBuf> = std::fs::read_dir(mailboxes)
        .map(|it| it.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..16.min(dirs.len()) {
            s.spawn(|| {
                while let Some(d) =
                    dirs.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    let _ = std::fs::remove_dir_all(d);
                }
            });
        }
    });
    drop(scratch);
}

/// Moves whose rows are written at once (pipelined) by [`create_with`].
const PIPELINE: usize = 64;

/// `batch new --db`: checks the endpoint and the whole CSV as without `--db`, then
/// records the batch and one move per mailbox (`Created`, not queued).
pub async fn create(db: &mut Db, name: &str, n: &NewBatch) -> Result<Batch, CoordError> {
    create_with(db, name, n, None).await
}

/// [`create`], keeping `admin` (the admin service's choices for the batch: what its
/// `admin.json` holds beside a batch directory) with the batch, in the same transaction.
pub async fn create_with(
    db: &mut Db,
    name: &str,
    n: &NewBatch,
    admin: Option<&Value>,
) -> Result<Batch, CoordError> {
    let scratch = tempfile::tempdir().map_err(CoordError::io(Path::new("temporary directory")))?;
    let bd = BatchDir::new(scratch.path(), name)?;
    let b = batch::create(&bd, name, n)?;
    let ep = endpoint_row(&b.endpoint, b.profile.as_deref())?;
    let tx = db
        .client
        .transaction()
        .await
        .map_err(CoordError::db("starting batch new"))?;
    upsert_endpoint(&tx, &ep).await?;
    let record = serde_json::to_value(&b).expect("batch serializes");
    let inserted = tx
        .execute(
            "INSERT INTO batches (name, record, endpoint, admin) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING",
            &[&name, &record, &ep.name, &admin],
        )
        .await
        .map_err(CoordError::db(format!("recording batch {name}")))?;
    if inserted == 0 {
        return Err(AppError::Usage(format!(
            "batch {name} already exists in the database; choose another name (or look at it \
             with `mailferry batch status {name} --db ...`)"
        ))
        .into());
    }
    insert_moves(&tx, name, &ep.name, &bd, &b.users).await?;
    tx.commit()
        .await
        .map_err(CoordError::db(format!("committing batch {name}")))?;
    remove_scratch(scratch, &bd).await;
    Ok(b)
}

/// Records the moves of `users` (their state directories made under `bd`, a scratch
/// batch directory, by the control plane) as rows of batch `name`, `Created` and not
/// queued, inside the caller's transaction.
async fn insert_moves(
    tx: &impl GenericClient,
    name: &str,
    endpoint: &str,
    bd: &BatchDir,
    users: &[BatchUser],
) -> Result<(), CoordError> {
    // Pipelined on the one connection, a chunk of moves at a time: one round trip per
    // statement and move, waited for one after the other, made `batch new --db` of
    // 5,000 mailboxes take minutes.
    for chunk in users.chunks(PIPELINE) {
        futures_util::future::try_join_all(chunk.iter().map(|u| async move {
            let dir = bd.mailbox_dir(u);
            let id = mailferry_control::audit_cmd::identity(&dir)?
                .move_id
                .to_string();
            let lc = lifecycle::load(&dir)?.expect("the control plane created it");
            tx.execute(
                "INSERT INTO moves (id, batch, address, endpoint, user_record, state, lifecycle) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &id,
                    &name,
                    &u.address,
                    &endpoint,
                    &serde_json::to_value(u).expect("user serializes"),
                    &lc.state.as_str(),
                    &serde_json::to_value(&lc).expect("lifecycle serializes"),
                ],
            )
            .await
            .map_err(CoordError::db(format!(
                "recording the move of {}",
                u.address
            )))?;
            files::sync_up(tx, &id, &dir, &Cursor::default(), 0).await?;
            Ok::<(), CoordError>(())
        }))
        .await?;
    }
    Ok(())
}

/// `batch add-users --db`: adds the rows of `csv` whose address the batch does not have
/// yet, as without `--db` (the whole CSV checked against the batch's endpoint first,
/// nothing added when a row is bad), each a move `Created` and not queued (`batch start
/// --db` queues it). Returns how many were added and the `(row, address)` of the rows
/// already in the batch.
///
/// One transaction that locks the batch's row: two `add-users` at once add each address
/// once, and a `suspend` waits for it. Workers lease moves, never this row, so passes
/// keep running meanwhile.
pub async fn add_users(
    db: &mut Db,
    name: &str,
    csv: &Path,
    actor: &str,
) -> Result<(usize, Vec<(u64, String)>), CoordError> {
    let tx = db
        .client
        .transaction()
        .await
        .map_err(CoordError::db(format!(
            "starting add-users of batch {name}"
        )))?;
    let row = tx
        .query_opt(
            "SELECT record, endpoint FROM batches WHERE name = $1 FOR UPDATE",
            &[&name],
        )
        .await
        .map_err(CoordError::db(format!("locking batch {name}")))?
        .ok_or_else(|| no_batch(name))?;
    let mut b = batch_record(name, row.get(0))?;
    let endpoint: String = row.get(1);
    let scratch = tempfile::tempdir().map_err(CoordError::io(Path::new("temporary directory")))?;
    let bd = BatchDir::new(scratch.path(), name)?;
    let before = b.users.len();
    let (added, already) = batch::add_users_into(&bd, &mut b, csv, actor)?;
    insert_moves(&tx, name, &endpoint, &bd, &b.users[before..]).await?;
    let record = serde_json::to_value(&b).expect("batch serializes");
    tx.execute(
        "UPDATE batches SET record = $2 WHERE name = $1",
        &[&name, &record],
    )
    .await
    .map_err(CoordError::db(format!(
        "recording the users of batch {name}"
    )))?;
    tx.commit().await.map_err(CoordError::db(format!(
        "committing add-users of batch {name}"
    )))?;
    remove_scratch(scratch, &bd).await;
    Ok((added, already))
}

/// `batch start --dry-run --db`: what the next pass of every mailbox would do, as
/// without `--db` ([`batch::dry_run_of`]), read from local copies of the moves' rows
/// (deleted on return). Writes nothing: the rows are read in a read-only transaction
/// (PostgreSQL refuses any write in it), which also makes them one consistent
/// snapshot while workers run; the source is only listed and sampled.
pub async fn dry_run(db: &mut Db, name: &str) -> Result<Vec<batch::MailboxPreview>, CoordError> {
    let tx = db
        .client
        .build_transaction()
        .read_only(true)
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(CoordError::db(format!(
            "starting the dry run of batch {name}"
        )))?;
    let (b, _) = load_batch(&tx, name).await?;
    let scratch = tempfile::tempdir().map_err(CoordError::io(Path::new("temporary directory")))?;
    let mut dirs = std::collections::HashMap::new();
    for u in &b.users {
        let id = find_move(&tx, &u.address, Some(name)).await?;
        let dir = scratch.path().join(&id);
        files::materialize(&tx, &id, &dir, Copy::Read).await?;
        dirs.insert(u.address.clone(), dir);
    }
    // Nothing to commit; ending it early frees the snapshot before the sources are read.
    tx.rollback().await.map_err(CoordError::db(format!(
        "ending the dry run of batch {name}"
    )))?;
    let mut out = batch::dry_run_of(&b, |u| dirs[&u.address].clone()).await?;
    // The copies are gone once this returns: name where the state really is.
    for p in &mut out {
        if let Some(d) = &mut p.preview {
            d.preview.state.dir = "the database (--db)".into();
        }
    }
    Ok(out)
}

fn no_batch(name: &str) -> CoordError {
    CoordError::NotFound(format!(
        "no batch {name} in the database (create it with `mailferry batch new {name} --db ...`)"
    ))
}

fn batch_record(name: &str, v: Value) -> Result<Batch, CoordError> {
    serde_json::from_value(v).map_err(|e| CoordError::BadRow {
        what: format!("batches ({name})"),
        reason: e.to_string(),
    })
}

/// Reads a batch's record.
pub async fn load_batch(c: &impl GenericClient, name: &str) -> Result<(Batch, bool), CoordError> {
    let row = c
        .query_opt(
            "SELECT record, suspended FROM batches WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(CoordError::db(format!("reading batch {name}")))?
        .ok_or_else(|| no_batch(name))?;
    Ok((batch_record(name, row.get(0))?, row.get(1)))
}

/// The names of every batch, in name order.
pub async fn batch_names(c: &impl GenericClient) -> Result<Vec<String>, CoordError> {
    let rows = c
        .query("SELECT name FROM batches ORDER BY name", &[])
        .await
        .map_err(CoordError::db("listing batches"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The admin service's choices kept with a batch ([`create_with`]); `None` for a batch
/// made by `batch new --db`, or none of that name.
pub async fn batch_admin(c: &impl GenericClient, name: &str) -> Result<Option<Value>, CoordError> {
    let row = c
        .query_opt("SELECT admin FROM batches WHERE name = $1", &[&name])
        .await
        .map_err(CoordError::db(format!("reading batch {name}")))?;
    Ok(row.and_then(|r| r.get::<_, Option<Value>>(0)))
}

/// Queues one pass of one move (the admin's "approve skipped" of one mailbox: a pass
/// with `approve_skipped`). Refused while its batch is suspended or the move is
/// completed or suspended (nothing to run).
pub async fn enqueue_move(
    db: &mut Db,
    batch: &str,
    address: &str,
    complete: bool,
    approve_skipped: bool,
) -> Result<(), CoordError> {
    let (_, suspended) = load_batch(&db.client, batch).await?;
    if suspended {
        return Err(AppError::Refused(format!(
            "batch {batch} is suspended; {}",
            Advice::ResumeBatch(batch.to_string()).cli()
        ))
        .into());
    }
    let id = find_move(&db.client, address, Some(batch)).await?;
    let kind = if complete { "complete" } else { "sync" };
    let n = db
        .client
        .execute(
            "UPDATE moves SET runnable = true, pass_kind = $2, approve_skipped = $3, \
                    attempts = 0, not_before = NULL \
             WHERE id = $1 AND state NOT IN ('completed', 'suspended')",
            &[&id, &kind, &approve_skipped],
        )
        .await
        .map_err(CoordError::db(format!("queueing the move of {address}")))?;
    if n == 0 {
        return Err(AppError::Refused(format!(
            "the move of {address} is completed or suspended: there is no pass to queue"
        ))
        .into());
    }
    Ok(())
}

/// A local copy of a move's rows for reading them with the control plane's functions
/// (the move record, a reconciliation): its state directory as without `--db` (audit
/// log, reports, lifecycle, head) but the signing key. Deleted when the guard drops.
pub async fn local_copy(
    c: &impl GenericClient,
    move_id: &str,
) -> Result<(tempfile::TempDir, PathBuf), CoordError> {
    let scratch = tempfile::tempdir().map_err(CoordError::io(Path::new("temporary directory")))?;
    let dir = scratch.path().join("move");
    files::materialize(c, move_id, &dir, Copy::Read).await?;
    Ok((scratch, dir))
}

/// `batch start --db` (`complete`: `batch complete --db`): queues a pass of every
/// mailbox that takes one, for the workers. Returns the addresses queued.
pub async fn enqueue(
    db: &mut Db,
    name: &str,
    complete: bool,
    approve_skipped: bool,
) -> Result<Vec<String>, CoordError> {
    enqueue_on(&db.client, name, complete, approve_skipped).await
}

/// [`enqueue`] on a client or an open transaction (a schedule queues the passes in the
/// transaction that records that it fired: [`crate::schedule`]).
pub async fn enqueue_on(
    c: &impl GenericClient,
    name: &str,
    complete: bool,
    approve_skipped: bool,
) -> Result<Vec<String>, CoordError> {
    let (b, suspended) = load_batch(c, name).await?;
    if suspended {
        return Err(AppError::Refused(format!(
            "batch {name} is suspended; {}",
            Advice::ResumeBatch(name.to_string()).cli()
        ))
        .into());
    }
    // An edited endpoint applies from the next start on, as without --db (when the file
    // is readable here; else the recorded one stays).
    if let Ok(ep) = endpoint_row(&b.endpoint, b.profile.as_deref()) {
        upsert_endpoint(c, &ep).await?;
    }
    let kind = if complete { "complete" } else { "sync" };
    let rows = c
        .query(
            "UPDATE moves SET runnable = true, pass_kind = $2, approve_skipped = $3, \
                    attempts = 0, not_before = NULL \
             WHERE batch = $1 AND state NOT IN ('completed', 'suspended') RETURNING address",
            &[&name, &kind, &approve_skipped],
        )
        .await
        .map_err(CoordError::db(format!(
            "queueing the moves of batch {name}"
        )))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The id of the move of `address` (in `batch`, if given).
pub async fn find_move(
    c: &impl GenericClient,
    address: &str,
    batch: Option<&str>,
) -> Result<String, CoordError> {
    let rows = c
        .query(
            "SELECT id, batch FROM moves WHERE address = $1 AND ($2::text IS NULL OR batch = $2)",
            &[&address, &batch],
        )
        .await
        .map_err(CoordError::db(format!("looking up the move of {address}")))?;
    match rows.len() {
        0 => Err(CoordError::NotFound(format!(
            "no move of {address}{} in the database",
            batch.map(|b| format!(" in batch {b}")).unwrap_or_default()
        ))),
        1 => Ok(rows[0].get(0)),
        _ => Err(CoordError::NotFound(format!(
            "{address} is in several batches ({}); name one with --batch",
            rows.iter()
                .map(|r| r.get::<_, String>(1))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// A move's status, read from a local copy of its rows (with its audit log while a
/// worker runs a pass, for the live progress).
pub async fn move_status(c: &impl GenericClient, move_id: &str) -> Result<MoveStatus, CoordError> {
    let leased: bool = c
        .query_one(
            "SELECT lease_owner IS NOT NULL AND lease_expires > now() FROM moves WHERE id = $1",
            &[&move_id],
        )
        .await
        .map_err(CoordError::db(format!("reading move {move_id}")))?
        .get(0);
    let scratch = tempfile::tempdir().map_err(CoordError::io(Path::new("temporary directory")))?;
    let dir = scratch.path().join("move");
    let copy = if leased { Copy::Full } else { Copy::NoAudit };
    files::materialize(c, move_id, &dir, copy).await?;
    let mut st = status::status(&dir)?;
    // The lease, not a process id on this host, says whether a pass runs.
    st.running = leased;
    Ok(st)
}

/// `batch status --db`: the same table as without `--db`. Every move's lifecycle and
/// reports come in one query (a local copy per move took ~2 ms each: minutes a refresh
/// at 50,000 mailboxes); only the moves a worker runs now are copied, for the live
/// progress their audit log holds.
pub async fn batch_status(db: &Db, name: &str) -> Result<BatchStatus, CoordError> {
    let (mut b, suspended) = load_batch(&db.client, name).await?;
    b.suspended = suspended;
    let rows = db
        .client
        .query(
            "SELECT m.address, m.id, m.lifecycle, \
                    m.lease_owner IS NOT NULL AND m.lease_expires > now(), \
                    (SELECT f.bytes FROM source_files f \
                      WHERE f.move_id = m.id AND f.name = 'report.json'), \
                    (SELECT coalesce(jsonb_agg(p.report ORDER BY p.pass), '[]'::jsonb) \
                       FROM pass_reports p WHERE p.move_id = m.id) \
             FROM moves m WHERE m.batch = $1",
            &[&name],
        )
        .await
        .map_err(CoordError::db(format!("reading the moves of batch {name}")))?;
    let mut by_address = std::collections::HashMap::with_capacity(rows.len());
    for r in rows {
        let (address, id): (String, String) = (r.get(0), r.get(1));
        let st = if r.get::<_, bool>(3) {
            move_status(&db.client, &id).await?
        } else {
            let lc: Lifecycle =
                serde_json::from_value(r.get(2)).map_err(|e| CoordError::BadRow {
                    what: format!("moves.lifecycle of {address}"),
                    reason: e.to_string(),
                })?;
            let report = r
                .get::<_, Option<Vec<u8>>>(4)
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
            let reports = match r.get::<_, Value>(5) {
                Value::Array(a) => a,
                _ => Vec::new(),
            };
            let mut st = status::status_of(lc, Some(id), report, &reports);
            st.running = false;
            st
        };
        by_address.insert(address, st);
    }
    Ok(batch::status_of(b, |u| {
        by_address.remove(&u.address).ok_or_else(|| {
            AppError::Usage(format!(
                "batch {name} lists {} but the database has no move of it; \
                 run `mailferry batch status {name} --db ...` again, or report a bug",
                u.address
            ))
        })
    })?)
}

/// Runs `f` on a local copy of a move nobody holds a lease of, and copies what it
/// wrote back, holding the move's row meanwhile. `Ok(None)`: a worker holds the lease
/// (the caller records a request instead).
async fn offline<T>(
    db: &mut Db,
    move_id: &str,
    f: impl FnOnce(&Path) -> Result<T, AppError>,
    when_leased: Option<Value>,
) -> Result<Option<T>, CoordError> {
    let tx = db
        .client
        .transaction()
        .await
        .map_err(CoordError::db("starting a move change"))?;
    let row = tx
        .query_one(
            "SELECT lease_owner IS NOT NULL AND lease_expires > now() FROM moves WHERE id = $1 FOR UPDATE",
            &[&move_id],
        )
        .await
        .map_err(CoordError::db(format!("locking move {move_id}")))?;
    if row.get::<_, bool>(0) {
        if let Some(req) = when_leased {
            tx.execute(
                "UPDATE moves SET suspend_request = $2 WHERE id = $1",
                &[&move_id, &req],
            )
            .await
            .map_err(CoordError::db(format!(
                "recording a request for move {move_id}"
            )))?;
            tx.commit().await.map_err(CoordError::db(format!(
                "committing a request for move {move_id}"
            )))?;
        }
        return Ok(None);
    }
    let scratch = tempfile::tempdir().map_err(CoordError::io(Path::new("temporary directory")))?;
    let dir = scratch.path().join("move");
    let cursor = files::materialize(&tx, move_id, &dir, Copy::Full).await?;
    let out = f(&dir)?;
    // Written by no lease: the epoch is the move's current one, unchanged.
    let epoch: i64 = tx
        .query_one("SELECT lease_epoch FROM moves WHERE id = $1", &[&move_id])
        .await
        .map_err(CoordError::db(format!("reading move {move_id}")))?
        .get(0);
    files::sync_up(&tx, move_id, &dir, &cursor, epoch).await?;
    tx.commit().await.map_err(CoordError::db(format!(
        "committing a change of move {move_id}"
    )))?;
    Ok(Some(out))
}

/// `batch suspend --db`: the batch queues nothing more; every mailbox nobody runs is
/// suspended now, every running one when its pass ends. Returns (now, later).
pub async fn suspend(db: &mut Db, name: &str, actor: &str) -> Result<(usize, usize), CoordError> {
    let (b, _) = load_batch(&db.client, name).await?;
    db.client
        .execute(
            "UPDATE batches SET suspended = true WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(CoordError::db(format!("suspending batch {name}")))?;
    let reason = format!("batch {name} suspended by {actor}");
    let (mut now, mut later) = (0, 0);
    for u in &b.users {
        let id = find_move(&db.client, &u.address, Some(name)).await?;
        let req = json!({ "actor": actor, "reason": reason });
        let res = offline(
            db,
            &id,
            |dir| lifecycle::suspend(dir, actor, &reason),
            Some(req),
        )
        .await;
        match res {
            Ok(Some(lifecycle::SuspendOutcome::Suspended)) => now += 1,
            Ok(None) => later += 1,
            Ok(Some(_)) | Err(CoordError::App(AppError::Refused(_))) => {}
            Err(e) => return Err(e),
        }
        db.client
            .execute(
                "UPDATE moves SET runnable = false WHERE id = $1 AND state = 'suspended'",
                &[&id],
            )
            .await
            .map_err(CoordError::db(format!("dequeueing move {id}")))?;
    }
    Ok((now, later))
}

/// `batch resume --db`: clears the batch's suspension and resumes its suspended
/// mailboxes (then `batch start --db` queues their passes). Returns how many.
pub async fn resume(db: &mut Db, name: &str, actor: &str) -> Result<usize, CoordError> {
    let (b, _) = load_batch(&db.client, name).await?;
    db.client
        .execute(
            "UPDATE batches SET suspended = false WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(CoordError::db(format!("resuming batch {name}")))?;
    let mut n = 0;
    for u in &b.users {
        let id = find_move(&db.client, &u.address, Some(name)).await?;
        // A request not applied yet is simply withdrawn.
        let withdrawn = db
            .client
            .execute(
                "UPDATE moves SET suspend_request = NULL WHERE id = $1 AND suspend_request IS NOT NULL",
                &[&id],
            )
            .await
            .map_err(CoordError::db(format!("resuming move {id}")))?;
        if withdrawn > 0 {
            n += 1;
            continue;
        }
        match offline(db, &id, |dir| lifecycle::resume(dir, actor), None).await {
            Ok(Some(_)) => n += 1,
            Ok(None) | Err(CoordError::App(AppError::Refused(_))) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The move's audit log and signed head as the rows hold them, written into a new
/// temporary directory (for `audit verify`, which checks it with the same verifier as
/// a state directory). The directory is deleted when the returned guard drops.
pub async fn audit_copy(
    db: &Db,
    move_id: &str,
) -> Result<(tempfile::TempDir, PathBuf), CoordError> {
    let scratch = tempfile::tempdir().map_err(CoordError::io(Path::new("temporary directory")))?;
    let dir = scratch.path().join("move");
    mailferry_audit::private::create_dir_all(&dir).map_err(CoordError::io(&dir))?;
    let (log, _) = files::audit_log(&db.client, move_id).await?;
    let write = |name: &str, b: &[u8]| {
        let p = dir.join(name);
        mailferry_audit::private::write(&p, b).map_err(CoordError::io(&p))
    };
    write(mailferry_agent::state::AUDIT_FILE, &log)?;
    for name in ["move.json", "audit.head"] {
        if let Some(r) = db
            .client
            .query_opt(
                "SELECT bytes FROM source_files WHERE move_id = $1 AND name = $2",
                &[&move_id, &name],
            )
            .await
            .map_err(CoordError::db(format!("reading {name} of move {move_id}")))?
        {
            write(name, r.get::<_, &[u8]>(0))?;
        }
    }
    Ok((scratch, dir))
}

/// The moves of a batch (`None`: every batch), with their mailbox.
pub async fn moves_of(db: &Db, batch: Option<&str>) -> Result<Vec<(String, String)>, CoordError> {
    let rows = db
        .client
        .query(
            "SELECT id, address FROM moves WHERE ($1::text IS NULL OR batch = $1) ORDER BY batch, address",
            &[&batch],
        )
        .await
        .map_err(CoordError::db("listing moves"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// True once no move of the batch is queued or leased (for waiting on workers).
pub async fn idle(db: &Db, batch: &str) -> Result<bool, CoordError> {
    let row = db
        .client
        .query_one(
            "SELECT count(*) FROM moves WHERE batch = $1 AND (runnable OR lease_owner IS NOT NULL)",
            &[&batch],
        )
        .await
        .map_err(CoordError::db(format!("reading batch {batch}")))?;
    Ok(row.get::<_, i64>(0) == 0)
}

/// The state of every move of a batch, for callers that only count.
pub async fn states(db: &Db, batch: &str) -> Result<Vec<(String, MoveState)>, CoordError> {
    let rows = db
        .client
        .query(
            "SELECT address, lifecycle FROM moves WHERE batch = $1 ORDER BY address",
            &[&batch],
        )
        .await
        .map_err(CoordError::db(format!("reading batch {batch}")))?;
    rows.iter()
        .map(|r| {
            let lc: lifecycle::Lifecycle =
                serde_json::from_value(r.get(1)).map_err(|e| CoordError::BadRow {
                    what: format!("moves lifecycle of {}", r.get::<_, String>(0)),
                    reason: e.to_string(),
                })?;
            Ok((r.get(0), lc.state))
        })
        .collect()
}

/// The public key that checks the signed heads of the move's source-side audit log (its
/// signing key is a row, so that every worker signs with it).
pub async fn source_public_key(
    db: &Db,
    move_id: &str,
) -> Result<mailferry_audit::PublicKey, CoordError> {
    let key = mailferry_agent::state::SIGNING_KEY_FILE;
    let row = db
        .client
        .query_opt(
            "SELECT bytes FROM source_files WHERE move_id = $1 AND name = $2",
            &[&move_id, &key],
        )
        .await
        .map_err(CoordError::db(format!("reading the signing key of move {move_id}")))?
        .ok_or_else(|| {
            CoordError::NotFound(format!(
                "move {move_id} has no signing key in the database yet (it is made by the move's first records)"
            ))
        })?;
    let scratch = tempfile::tempdir().map_err(CoordError::io(Path::new("temporary directory")))?;
    let path = scratch.path().join(key);
    let bytes = zeroize::Zeroizing::new(row.get::<_, Vec<u8>>(0));
    mailferry_audit::private::write(&path, &bytes).map_err(CoordError::io(&path))?;
    let signer = mailferry_agent::state::head_signer(scratch.path()).map_err(AppError::from)?;
    Ok(signer.public_key())
}

/// The pass reports of every move of a batch, by address (passes in order), for callers
/// that add up what the workers moved (`mailferry bench --workers`).
pub async fn reports(
    db: &Db,
    batch: &str,
) -> Result<Vec<(String, Vec<mailferry_core::report::MoveReport>)>, CoordError> {
    let rows = db
        .client
        .query(
            "SELECT m.address, r.report FROM moves m JOIN pass_reports r ON r.move_id = m.id \
             WHERE m.batch = $1 ORDER BY m.address, r.pass",
            &[&batch],
        )
        .await
        .map_err(CoordError::db(format!(
            "reading the reports of batch {batch}"
        )))?;
    let mut out: Vec<(String, Vec<mailferry_core::report::MoveReport>)> = Vec::new();
    for r in rows {
        let address: String = r.get(0);
        let report = serde_json::from_value(r.get(1)).map_err(|e| CoordError::BadRow {
            what: format!("pass report of {address}"),
            reason: e.to_string(),
        })?;
        match out.last_mut() {
            Some((a, v)) if *a == address => v.push(report),
            _ => out.push((address, vec![report])),
        }
    }
    Ok(out)
}
