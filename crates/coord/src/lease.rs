//! Leases: which worker runs a pass of which move, fenced by a number that only grows.
//!
//! [`lease_one`] takes one runnable move in one transaction: it looks at candidates
//! without locking them, and tries each in its own savepoint. There the endpoint's row is
//! locked `FOR UPDATE` so that the count of its live leases is exact across every worker,
//! then the move is locked `FOR UPDATE SKIP LOCKED` and checked again (two workers never
//! wait for, or get, the same move), and the move's `lease_epoch` becomes one more than the highest
//! epoch of any move of the same address (the store fences per mailbox): that epoch is
//! the fencing number the pass carries to the store. [`heartbeat`] extends the lease and
//! copies what the pass wrote locally into the rows, in one transaction that first
//! checks that the move's epoch and owner are still this worker's; [`release`] does the
//! same one last time and gives the lease up. A worker whose lease was taken over gets
//! [`CoordError::Fenced`] and writes nothing. The SQL is in docs/coordination.md.
//!
//! This module does not run passes ([`crate::worker`] does).

use crate::files::{self, Cursor};
use crate::CoordError;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use tokio_postgres::Client;

/// A lease this worker holds.
#[derive(Clone, Debug)]
pub struct Lease {
    /// The move.
    pub move_id: String,
    /// Its batch.
    pub batch: String,
    /// Its mailbox.
    pub address: String,
    /// Its endpoint (the row's name).
    pub endpoint: String,
    /// The fencing number.
    pub epoch: i64,
    /// Who holds it (this worker's id).
    pub owner: String,
    /// `sync` or `complete`.
    pub pass_kind: String,
    /// Approve every skipped item (batch complete --approve-skipped).
    pub approve_skipped: bool,
    /// The batch's entry of the mailbox.
    pub user: Value,
    /// Connections of the endpoint's `max_connections` this lease holds.
    pub connections: i32,
    /// The endpoint has a `max_connections` budget.
    pub budgeted: bool,
    /// This move's share of the endpoint's bytes per second, if it sets a rate.
    pub bytes_per_second: Option<u64>,
    /// The endpoint file's text.
    pub endpoint_record: String,
    /// Passes of the move that failed in a row before this lease.
    pub attempts: i32,
}

/// How many candidates one lease transaction looks at before giving up for this round.
const CANDIDATES: i64 = 32;

/// What makes a move leasable now (`m` the move, `b` its batch).
const RUNNABLE: &str = "m.runnable AND NOT b.suspended AND m.suspend_request IS NULL \
     AND (m.lease_expires IS NULL OR m.lease_expires < now()) \
     AND (m.not_before IS NULL OR m.not_before <= now())";

/// Leases one runnable move for `owner` for `ttl`, obeying every endpoint's
/// `max_concurrent_moves` and `max_connections` across all workers. `None`: nothing
/// can run now (every runnable move's endpoint is full, or there is no runnable move).
pub async fn lease_one(
    client: &mut Client,
    owner: &str,
    ttl: Duration,
) -> Result<Option<Lease>, CoordError> {
    let mut tx = client
        .transaction()
        .await
        .map_err(CoordError::db("starting a lease transaction"))?;
    // A look, not a lock: a worker that locked every candidate here would make the
    // others find nothing while it decides, and leave places free that they could fill.
    // Moves of endpoints that look full are left out of the look, or 32 of them ahead in
    // lease order would hide a free endpoint's moves; the check under the lock decides.
    let candidates = tx
        .query(
            &format!(
                "WITH live AS ( \
                   SELECT endpoint, count(*) AS n, sum(lease_connections) AS conns, \
                          count(*) FILTER (WHERE lifecycle ? 'last_sync_at') AS incr \
                   FROM moves WHERE lease_owner IS NOT NULL AND lease_expires > now() \
                   GROUP BY endpoint) \
                 SELECT m.id, m.endpoint FROM moves m JOIN batches b ON b.name = m.batch \
                   JOIN endpoints e ON e.name = m.endpoint \
                   LEFT JOIN live l ON l.endpoint = m.endpoint \
                 WHERE {RUNNABLE} \
                   AND coalesce(l.n, 0) < e.max_concurrent_moves \
                   AND (e.max_connections IS NULL \
                        OR coalesce(l.conns, 0) + e.connections_per_move <= e.max_connections) \
                   AND NOT (m.lifecycle ? 'last_sync_at' \
                            AND coalesce(l.incr, 0) >= e.max_concurrent_incremental_syncs) \
                 ORDER BY m.batch, m.address LIMIT $1"
            ),
            &[&CANDIDATES],
        )
        .await
        .map_err(CoordError::db("looking for runnable moves"))?;
    let mut full = BTreeSet::new();
    for c in candidates {
        let (id, endpoint): (String, String) = (c.get(0), c.get(1));
        if full.contains(&endpoint) {
            continue;
        }
        // One candidate per savepoint: rolling it back releases the endpoint's row lock,
        // so a transaction never holds two endpoints and two workers cannot deadlock.
        let mut candidate = tx
            .transaction()
            .await
            .map_err(CoordError::db("starting a lease savepoint"))?;
        let taken = try_candidate(&mut candidate, &id, &endpoint, owner, ttl).await?;
        match taken {
            Taken::Lease(lease) => {
                candidate
                    .commit()
                    .await
                    .map_err(CoordError::db(format!("keeping the lease of move {id}")))?;
                tx.commit()
                    .await
                    .map_err(CoordError::db(format!("committing the lease of move {id}")))?;
                return Ok(Some(*lease));
            }
            Taken::EndpointFull => {
                full.insert(endpoint);
            }
            Taken::NotThisMove => {}
        }
        candidate
            .rollback()
            .await
            .map_err(CoordError::db(format!("passing over move {id}")))?;
    }
    tx.commit()
        .await
        .map_err(CoordError::db("ending a lease transaction"))?;
    Ok(None)
}

/// What one candidate came to.
enum Taken {
    Lease(Box<Lease>),
    /// The endpoint has no place for another move: skip its other candidates too.
    EndpointFull,
    /// Leased or locked by another worker meanwhile, no longer runnable, or over the
    /// endpoint's incremental limit.
    NotThisMove,
}

/// Tries to lease move `id` of `endpoint` inside `tx` (a savepoint the caller commits
/// or rolls back).
async fn try_candidate(
    tx: &mut tokio_postgres::Transaction<'_>,
    id: &str,
    endpoint: &str,
    owner: &str,
    ttl: Duration,
) -> Result<Taken, CoordError> {
    // Serialises the leases of one endpoint across workers: the count below is exact,
    // and it is read after the lock, so it sees every lease committed before.
    let ep = tx
        .query_one(
            "SELECT max_concurrent_moves, max_connections, connections_per_move, \
                    max_bytes_per_second, record, max_concurrent_incremental_syncs \
             FROM endpoints WHERE name = $1 FOR UPDATE",
            &[&endpoint],
        )
        .await
        .map_err(CoordError::db(format!("locking endpoint {endpoint}")))?;
    let (max_moves, max_conns, per_move, bps, record): (
        i32,
        Option<i32>,
        i32,
        Option<i64>,
        String,
    ) = (ep.get(0), ep.get(1), ep.get(2), ep.get(3), ep.get(4));
    let max_incremental: i32 = ep.get(5);
    let live = tx
        .query_one(
            "SELECT count(*), coalesce(sum(lease_connections), 0)::bigint, \
                    count(*) FILTER (WHERE lifecycle ? 'last_sync_at') FROM moves \
             WHERE endpoint = $1 AND lease_owner IS NOT NULL AND lease_expires > now()",
            &[&endpoint],
        )
        .await
        .map_err(CoordError::db(format!(
            "counting the leases of endpoint {endpoint}"
        )))?;
    let (leases, conns, incrementals): (i64, i64, i64) = (live.get(0), live.get(1), live.get(2));
    if leases >= i64::from(max_moves)
        || max_conns.is_some_and(|m| conns + i64::from(per_move) > i64::from(m))
    {
        return Ok(Taken::EndpointFull);
    }
    // The move itself, checked again under its lock: another worker may have leased it
    // since the look. A move another transaction holds is passed over, never waited for.
    let Some(mv) = tx
        .query_opt(
            &format!(
                "SELECT m.lifecycle ? 'last_sync_at' FROM moves m JOIN batches b \
                 ON b.name = m.batch WHERE m.id = $1 AND {RUNNABLE} \
                 FOR UPDATE OF m SKIP LOCKED"
            ),
            &[&id],
        )
        .await
        .map_err(CoordError::db(format!("locking move {id}")))?
    else {
        return Ok(Taken::NotThisMove);
    };
    // Moves that synced before run incremental passes: at most
    // max_concurrent_incremental_syncs of them at once, as in a single-machine run.
    let incremental: bool = mv.get(0);
    if incremental && incrementals >= i64::from(max_incremental) {
        return Ok(Taken::NotThisMove);
    }
    // The store keeps one fencing number per mailbox, and one address can have moves
    // in several batches: the epoch grows per address, not per move, so a later
    // batch's move is never below a number an earlier one left in the store. The
    // advisory lock serialises two moves of one address leased at once.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(address, 0)) FROM moves WHERE id = $1",
        &[&id],
    )
    .await
    .map_err(CoordError::db(format!("locking the address of move {id}")))?;
    let secs = ttl.as_secs_f64();
    let row = tx
        .query_one(
            "UPDATE moves SET lease_owner = $2, \
                    lease_epoch = (SELECT max(o.lease_epoch) FROM moves o \
                                   WHERE o.address = moves.address) + 1, \
                    lease_expires = now() + make_interval(secs => $3), \
                    lease_connections = $4, heartbeat_at = now(), last_error = NULL \
             WHERE id = $1 \
             RETURNING lease_epoch, batch, address, pass_kind, approve_skipped, user_record, attempts",
            &[&id, &owner, &secs, &per_move],
        )
        .await
        .map_err(CoordError::db(format!("leasing move {id}")))?;
    // Each live lease of the endpoint gets an equal share of its rate, as it stands
    // now (docs/coordination.md, "Limits").
    let share = bps.map(|b| (b.max(1) as u64) / (leases as u64 + 1));
    Ok(Taken::Lease(Box::new(Lease {
        move_id: id.to_string(),
        epoch: row.get(0),
        batch: row.get(1),
        address: row.get(2),
        pass_kind: row.get(3),
        approve_skipped: row.get(4),
        user: row.get(5),
        attempts: row.get(6),
        endpoint: endpoint.to_string(),
        owner: owner.to_string(),
        connections: per_move,
        budgeted: max_conns.is_some(),
        bytes_per_second: share.map(|s| s.max(1)),
        endpoint_record: record,
    })))
}

/// What the end of a pass records besides the copied state.
#[derive(Clone, Debug, Default)]
pub struct Ending {
    /// Why the pass failed, if it did.
    pub error: Option<String>,
    /// Queue the move again, to be leased after this long (a failed pass retried).
    pub retry_in: Option<Duration>,
}

/// Checks that `lease` is still the move's, inside `tx`; returns the move's suspension
/// request, if one is waiting.
async fn check_fence(
    tx: &tokio_postgres::Transaction<'_>,
    lease: &Lease,
) -> Result<Option<Value>, CoordError> {
    let row = tx
        .query_one(
            "SELECT lease_epoch, lease_owner, suspend_request FROM moves WHERE id = $1 FOR UPDATE",
            &[&lease.move_id],
        )
        .await
        .map_err(CoordError::db(format!(
            "checking the lease of move {}",
            lease.move_id
        )))?;
    let (epoch, owner): (i64, Option<String>) = (row.get(0), row.get(1));
    if epoch != lease.epoch || owner.as_deref() != Some(lease.owner.as_str()) {
        return Err(CoordError::Fenced {
            move_id: lease.move_id.clone(),
            mine: lease.epoch,
        });
    }
    Ok(row.get(2))
}

/// Extends the lease by `ttl` and copies what the local copy in `dir` has beyond
/// `cursor` into the rows, if the lease is still this worker's. Returns the new cursor.
pub async fn heartbeat(
    client: &mut Client,
    lease: &Lease,
    dir: &Path,
    cursor: &Cursor,
    ttl: Duration,
) -> Result<Cursor, CoordError> {
    let tx = client
        .transaction()
        .await
        .map_err(CoordError::db("starting a heartbeat"))?;
    check_fence(&tx, lease).await?;
    let next = files::sync_up(&tx, &lease.move_id, dir, cursor, lease.epoch).await?;
    tx.execute(
        "UPDATE moves SET lease_expires = now() + make_interval(secs => $2), heartbeat_at = now() \
         WHERE id = $1",
        &[&lease.move_id, &ttl.as_secs_f64()],
    )
    .await
    .map_err(CoordError::db(format!(
        "extending the lease of move {}",
        lease.move_id
    )))?;
    tx.commit().await.map_err(CoordError::db(format!(
        "committing a heartbeat of move {}",
        lease.move_id
    )))?;
    Ok(next)
}

/// The end of a pass: applies a suspension asked for while it ran (to the local copy,
/// so that it is in the audit log), copies the rest of the local copy into the rows,
/// dequeues the move and gives the lease up: one fence-checked transaction.
pub async fn release(
    client: &mut Client,
    lease: &Lease,
    dir: &Path,
    cursor: &Cursor,
    ending: Ending,
) -> Result<Cursor, CoordError> {
    let tx = client
        .transaction()
        .await
        .map_err(CoordError::db("starting the end of a pass"))?;
    if let Some(req) = check_fence(&tx, lease).await? {
        let actor = req["actor"].as_str().unwrap_or("unknown");
        let reason = req["reason"].as_str().unwrap_or("");
        match mailferry_control::lifecycle::suspend(dir, actor, reason) {
            Ok(_) | Err(mailferry_control::AppError::Refused(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let next = files::sync_up(&tx, &lease.move_id, dir, cursor, lease.epoch).await?;
    tx.execute(
        "UPDATE moves SET lease_owner = NULL, lease_expires = NULL, lease_connections = 0, \
                suspend_request = NULL, last_error = $2, \
                runnable = $3 AND state <> 'suspended', \
                attempts = CASE WHEN $3 THEN attempts + 1 ELSE 0 END, \
                not_before = CASE WHEN $3 THEN now() + make_interval(secs => $4) END \
         WHERE id = $1",
        &[
            &lease.move_id,
            &ending.error,
            &ending.retry_in.is_some(),
            &ending.retry_in.unwrap_or_default().as_secs_f64(),
        ],
    )
    .await
    .map_err(CoordError::db(format!(
        "releasing the lease of move {}",
        lease.move_id
    )))?;
    tx.commit().await.map_err(CoordError::db(format!(
        "committing the end of a pass of move {}",
        lease.move_id
    )))?;
    Ok(next)
}
