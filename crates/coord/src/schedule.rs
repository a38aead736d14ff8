//! Schedules of batches in the coordination database: "start at a time" and "complete
//! as soon as every mailbox is synced" or "at or after a time", the admin wizard's
//! choices, kept as one row per batch (`schedules`, docs/coordination.md, "Schedules")
//! and carried out by the workers, so that nothing depends on the admin host staying up.
//!
//! The row is also the batch's latest run as the admin service shows it: [`start`] and
//! [`complete`] record a run (queued now, or waiting for its time) and every worker,
//! on its polling loop, moves due rows along with [`tick`]. A tick locks the rows it
//! looks at with `FOR UPDATE SKIP LOCKED` and changes a row's phase in the same
//! transaction as the passes it queues ([`ops::enqueue_on`], what `batch start --db`
//! and `batch complete --db` do): however many workers tick at once, each start and
//! each completion is queued once, and a worker killed in the middle leaves it either
//! fired or not. A suspended batch's schedule waits until the batch is resumed.
//!
//! This module does not run passes (the workers lease them like any other) and does
//! not decide whether an admin may ask for a run (the admin service's rules do).

use crate::{ops, CoordError, Db};
use tokio_postgres::GenericClient;

/// When a run completes the batch, once its passes have ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// As soon as every mailbox is synced (suspended and completed ones aside).
    WhenSynced,
    /// At or after this Unix time (and not before every mailbox is synced).
    At(i64),
}

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for its start time.
    Start,
    /// Its passes are queued or running.
    Sync,
    /// Waiting for its completion time.
    Complete,
    /// The final passes are queued or running.
    Final,
    /// Ended.
    Done,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::Sync => "sync",
            Phase::Complete => "complete",
            Phase::Final => "final",
            Phase::Done => "done",
        }
    }

    fn parse(s: &str) -> Result<Phase, CoordError> {
        Ok(match s {
            "start" => Phase::Start,
            "sync" => Phase::Sync,
            "complete" => Phase::Complete,
            "final" => Phase::Final,
            "done" => Phase::Done,
            other => {
                return Err(CoordError::BadRow {
                    what: "schedules phase".into(),
                    reason: format!("unknown phase {other:?} (written by a newer mailferry?)"),
                })
            }
        })
    }
}

/// A batch's schedule and latest run, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The batch.
    pub batch: String,
    /// Where it is.
    pub phase: Phase,
    /// Not started before this (Unix seconds).
    pub start_at: Option<i64>,
    /// What follows the passes.
    pub completion: Option<Completion>,
    /// Who asked (`admin:NAME`).
    pub actor: String,
    /// When it was asked for (Unix seconds).
    pub created_at: i64,
    /// Who queued the passes (`worker:ID` for a scheduled start) and when.
    pub start_fired: Option<(String, i64)>,
    /// Who queued the final passes and when.
    pub complete_fired: Option<(String, i64)>,
    /// When it ended.
    pub finished_at: Option<i64>,
    /// Why it ended without completing the batch, if it did.
    pub error: Option<String>,
}

impl Schedule {
    /// Still to do (waiting or running).
    pub fn pending(&self) -> bool {
        self.phase != Phase::Done
    }

    /// The time it waits for now, if it waits for one.
    pub fn waiting_until(&self) -> Option<i64> {
        match (self.phase, self.completion) {
            (Phase::Start, _) => self.start_at,
            (Phase::Complete, Some(Completion::At(t))) => Some(t),
            _ => None,
        }
    }
}

/// What one tick queued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fired {
    /// The batch.
    pub batch: String,
    /// The final passes (else the scheduled start's passes).
    pub complete: bool,
    /// The mailboxes queued.
    pub queued: usize,
}

const COLUMNS: &str = "s.batch, s.phase, extract(epoch FROM s.start_at)::bigint, s.completion, \
     extract(epoch FROM s.complete_at)::bigint, s.actor, extract(epoch FROM s.created_at)::bigint, \
     s.start_fired_by, extract(epoch FROM s.start_fired_at)::bigint, s.complete_fired_by, \
     extract(epoch FROM s.complete_fired_at)::bigint, extract(epoch FROM s.finished_at)::bigint, \
     s.error";

fn from_row(r: &tokio_postgres::Row) -> Result<Schedule, CoordError> {
    let batch: String = r.get(0);
    let completion = match (r.get::<_, Option<&str>>(3), r.get::<_, Option<i64>>(4)) {
        (None, _) => None,
        (Some("synced"), _) => Some(Completion::WhenSynced),
        (Some("at"), Some(t)) => Some(Completion::At(t)),
        (Some(other), _) => {
            return Err(CoordError::BadRow {
                what: format!("schedules ({batch})"),
                reason: format!("completion {other:?} without a usable time"),
            })
        }
    };
    let fired = |by: usize, at: usize| {
        r.get::<_, Option<String>>(by)
            .zip(r.get::<_, Option<i64>>(at))
    };
    Ok(Schedule {
        phase: Phase::parse(r.get(1))?,
        start_at: r.get(2),
        completion,
        actor: r.get(5),
        created_at: r.get(6),
        start_fired: fired(7, 8),
        complete_fired: fired(9, 10),
        finished_at: r.get(11),
        error: r.get(12),
        batch,
    })
}

/// The schedule of `batch`; `None` if the admin service never asked for a run of it.
pub async fn get(c: &impl GenericClient, batch: &str) -> Result<Option<Schedule>, CoordError> {
    let row = c
        .query_opt(
            &format!("SELECT {COLUMNS} FROM schedules s WHERE s.batch = $1"),
            &[&batch],
        )
        .await
        .map_err(CoordError::db(format!(
            "reading the schedule of batch {batch}"
        )))?;
    row.as_ref().map(from_row).transpose()
}

/// A run as [`record`] writes it.
struct NewRun<'a> {
    batch: &'a str,
    /// `Start` (waiting), `Sync` (a start queued now) or `Final` (a completion queued now).
    phase: Phase,
    start_at: Option<i64>,
    completion: Option<Completion>,
    approve_skipped: bool,
    actor: &'a str,
}

/// Records a new run in place of the batch's last one. Passes queued now are recorded
/// as fired by the asker.
async fn record(c: &impl GenericClient, r: &NewRun<'_>) -> Result<(), CoordError> {
    let (kind, at) = match r.completion {
        None => (None, None),
        Some(Completion::WhenSynced) => (Some("synced"), None),
        Some(Completion::At(t)) => (Some("at"), Some(t as f64)),
    };
    let start_at = r.start_at.map(|t| t as f64);
    let (started, completed) = (r.phase == Phase::Sync, r.phase == Phase::Final);
    c.execute(
        "INSERT INTO schedules (batch, phase, start_at, completion, complete_at, approve_skipped, \
                                actor, start_fired_by, start_fired_at, complete_fired_by, \
                                complete_fired_at) \
         VALUES ($1, $2, to_timestamp($3), $4, to_timestamp($5), $6, $7, \
                 CASE WHEN $8 THEN $7 END, CASE WHEN $8 THEN now() END, \
                 CASE WHEN $9 THEN $7 END, CASE WHEN $9 THEN now() END) \
         ON CONFLICT (batch) DO UPDATE SET phase = EXCLUDED.phase, \
             start_at = EXCLUDED.start_at, completion = EXCLUDED.completion, \
             complete_at = EXCLUDED.complete_at, approve_skipped = EXCLUDED.approve_skipped, \
             actor = EXCLUDED.actor, created_at = now(), \
             start_fired_by = EXCLUDED.start_fired_by, start_fired_at = EXCLUDED.start_fired_at, \
             complete_fired_by = EXCLUDED.complete_fired_by, \
             complete_fired_at = EXCLUDED.complete_fired_at, finished_at = NULL, error = NULL",
        &[
            &r.batch,
            &r.phase.as_str(),
            &start_at,
            &kind,
            &at,
            &r.approve_skipped,
            &r.actor,
            &started,
            &completed,
        ],
    )
    .await
    .map_err(CoordError::db(format!(
        "recording the schedule of batch {}",
        r.batch
    )))?;
    Ok(())
}

/// A run of every mailbox of `batch` asked for by `actor`: at `start_at` (the workers
/// queue it then), or queued now; then, with `completion`, the batch's completion.
/// Replaces the batch's last run. Returns the mailboxes queued now.
pub async fn start(
    db: &mut Db,
    batch: &str,
    start_at: Option<i64>,
    completion: Option<Completion>,
    actor: &str,
) -> Result<usize, CoordError> {
    let tx = db
        .client
        .transaction()
        .await
        .map_err(CoordError::db(format!("starting batch {batch}")))?;
    // A start at a time queues nothing now: the workers do when it comes.
    let (phase, queued) = match start_at {
        Some(_) => {
            ops::load_batch(&tx, batch).await?;
            (Phase::Start, 0)
        }
        None => (
            Phase::Sync,
            ops::enqueue_on(&tx, batch, false, false).await?.len(),
        ),
    };
    let run = NewRun {
        batch,
        phase,
        start_at,
        completion,
        approve_skipped: false,
        actor,
    };
    record(&tx, &run).await?;
    tx.commit().await.map_err(CoordError::db(format!(
        "committing the start of batch {batch}"
    )))?;
    Ok(queued)
}

/// The final pass of every mailbox of `batch` not completed, queued now (`batch complete
/// --db` recorded as the batch's latest run). Returns the mailboxes queued.
pub async fn complete(
    db: &mut Db,
    batch: &str,
    approve_skipped: bool,
    actor: &str,
) -> Result<usize, CoordError> {
    let tx = db
        .client
        .transaction()
        .await
        .map_err(CoordError::db(format!("completing batch {batch}")))?;
    let q = ops::enqueue_on(&tx, batch, true, approve_skipped).await?;
    let run = NewRun {
        batch,
        phase: Phase::Final,
        start_at: None,
        completion: None,
        approve_skipped,
        actor,
    };
    record(&tx, &run).await?;
    tx.commit().await.map_err(CoordError::db(format!(
        "committing the completion of batch {batch}"
    )))?;
    Ok(q.len())
}

// === The workers' tick ===

/// How many schedules one tick looks at (the rest wait for the next tick).
const PER_TICK: i64 = 16;

/// Moves every due schedule along, as `actor` (`worker:ID`): queues a start whose time
/// has come, a completion once the batch's passes have ended (and its time, if it has
/// one, has come), and ends a run whose passes have ended. Rows another worker holds
/// are skipped (it is moving them along). A schedule whose step fails is left as it was
/// and logged; the others go on. Returns what was queued.
pub async fn tick(
    client: &mut tokio_postgres::Client,
    actor: &str,
) -> Result<Vec<Fired>, CoordError> {
    let mut tx = client
        .transaction()
        .await
        .map_err(CoordError::db("starting a schedule tick"))?;
    let rows = tx
        .query(
            &format!(
                "SELECT {COLUMNS} FROM schedules s JOIN batches b ON b.name = s.batch \
                 WHERE s.phase <> 'done' AND NOT b.suspended \
                   AND (s.phase <> 'start' OR s.start_at <= now()) \
                   AND (s.phase <> 'complete' OR s.complete_at <= now()) \
                 ORDER BY s.batch LIMIT $1 FOR UPDATE OF s SKIP LOCKED"
            ),
            &[&PER_TICK],
        )
        .await
        .map_err(CoordError::db("looking for due schedules"))?;
    let mut fired = Vec::new();
    for r in &rows {
        let s = from_row(r)?;
        // A savepoint per schedule: one that fails is rolled back alone.
        let sp = tx
            .transaction()
            .await
            .map_err(CoordError::db("starting a schedule step"))?;
        match step(&sp, &s, actor).await {
            Ok(f) => {
                sp.commit().await.map_err(CoordError::db(format!(
                    "recording the schedule of batch {}",
                    s.batch
                )))?;
                fired.extend(f);
            }
            Err(e) => {
                // Back to the savepoint: the tick's transaction goes on with the others.
                sp.rollback().await.map_err(CoordError::db(format!(
                    "undoing the schedule step of batch {}",
                    s.batch
                )))?;
                tracing::warn!(batch = %s.batch, error = %e, "schedule step failed; the next tick tries again");
            }
        }
    }
    tx.commit()
        .await
        .map_err(CoordError::db("committing a schedule tick"))?;
    for f in &fired {
        tracing::info!(batch = %f.batch, complete = f.complete, queued = f.queued, by = %actor, "schedule fired");
    }
    Ok(fired)
}

/// What the batch's moves are doing, for a step.
struct Moves {
    /// Queued or leased.
    busy: i64,
    /// Synced.
    synced: i64,
    /// Created, Syncing or Completing without a queued pass (a resumed batch, say).
    unfinished: i64,
    /// Failed, by address: in state Failed, or their last pass failed before it could
    /// change the state (a source or destination that would not open) and is not
    /// tried again.
    failed: Vec<String>,
    /// The database's clock (Unix seconds): every worker compares times with it.
    now: i64,
}

async fn moves_of(c: &impl GenericClient, batch: &str) -> Result<Moves, CoordError> {
    let r = c
        .query_one(
            "SELECT count(*) FILTER (WHERE runnable OR lease_owner IS NOT NULL), \
                    count(*) FILTER (WHERE state = 'synced'), \
                    count(*) FILTER (WHERE state IN ('created', 'syncing', 'completing') \
                                      AND last_error IS NULL), \
                    coalesce(array_agg(address ORDER BY address) \
                             FILTER (WHERE state = 'failed' OR last_error IS NOT NULL), '{}'), \
                    extract(epoch FROM now())::bigint \
             FROM moves WHERE batch = $1",
            &[&batch],
        )
        .await
        .map_err(CoordError::db(format!(
            "reading the moves of batch {batch}"
        )))?;
    Ok(Moves {
        busy: r.get(0),
        synced: r.get(1),
        unfinished: r.get(2),
        failed: r.get(3),
        now: r.get(4),
    })
}

/// True while a pass of the batch is queued or leased.
pub async fn busy(c: &impl GenericClient, batch: &str) -> Result<bool, CoordError> {
    Ok(moves_of(c, batch).await?.busy > 0)
}

/// One schedule's step; `Some` if it queued passes.
async fn step(
    c: &impl GenericClient,
    s: &Schedule,
    actor: &str,
) -> Result<Option<Fired>, CoordError> {
    let m = moves_of(c, &s.batch).await?;
    // Passes queued by someone else (a `batch start --db` by hand) run first: a pass
    // queued over a running one would be lost when that one is released.
    if m.busy > 0 {
        return Ok(None);
    }
    let set = |phase: Phase| async move {
        c.execute(
            "UPDATE schedules SET phase = $2 WHERE batch = $1",
            &[&s.batch, &phase.as_str()],
        )
        .await
        .map_err(CoordError::db(format!(
            "recording the schedule of batch {}",
            s.batch
        )))
    };
    // The phase changes in the transaction that queues the passes: fired once.
    let fire = |complete: bool| async move {
        let sql = if complete {
            "UPDATE schedules SET phase = 'final', complete_fired_by = $2, \
                    complete_fired_at = now() WHERE batch = $1"
        } else {
            "UPDATE schedules SET phase = 'sync', start_fired_by = $2, start_fired_at = now() \
             WHERE batch = $1"
        };
        c.execute(sql, &[&s.batch, &actor])
            .await
            .map_err(CoordError::db(format!(
                "recording the schedule of batch {}",
                s.batch
            )))?;
        let q = ops::enqueue_on(c, &s.batch, complete, false).await?;
        Ok::<_, CoordError>(Some(Fired {
            batch: s.batch.clone(),
            complete,
            queued: q.len(),
        }))
    };
    match s.phase {
        Phase::Start => fire(false).await,
        Phase::Sync => {
            if !m.failed.is_empty() {
                // As a single-machine run: a batch with failed mailboxes is not completed.
                let why = format!(
                    "{} mailbox(es) failed: {}; the batch was not completed: fix them and start \
                     the batch again (it completes as scheduled once every mailbox is synced), \
                     or complete it by hand",
                    m.failed.len(),
                    m.failed.join(", ")
                );
                end(c, s, Some(&why)).await?;
                return Ok(None);
            }
            match s.completion {
                None => {
                    end(c, s, None).await?;
                    Ok(None)
                }
                // Waits for mailboxes left unfinished (a suspended batch, resumed) to
                // be started again.
                Some(_) if m.unfinished > 0 => Ok(None),
                Some(_) if m.synced == 0 => {
                    end(c, s, None).await?;
                    Ok(None)
                }
                Some(Completion::At(t)) if t > m.now => {
                    set(Phase::Complete).await?;
                    Ok(None)
                }
                Some(_) => fire(true).await,
            }
        }
        Phase::Complete => fire(true).await,
        Phase::Final => {
            let why = (!m.failed.is_empty()).then(|| {
                format!(
                    "{} mailbox(es) failed: {}; see their reports, fix the cause and complete \
                     the batch again",
                    m.failed.len(),
                    m.failed.join(", ")
                )
            });
            end(c, s, why.as_deref()).await?;
            Ok(None)
        }
        Phase::Done => Ok(None),
    }
}

async fn end(c: &impl GenericClient, s: &Schedule, error: Option<&str>) -> Result<(), CoordError> {
    c.execute(
        "UPDATE schedules SET phase = 'done', finished_at = now(), error = $2 WHERE batch = $1",
        &[&s.batch, &error],
    )
    .await
    .map_err(CoordError::db(format!(
        "recording the end of batch {}'s run",
        s.batch
    )))?;
    Ok(())
}

#[cfg(test)]
mod tests;
