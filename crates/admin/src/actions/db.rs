//! The batch and move actions against the coordination database (`admin serve --db`):
//! the reads and changes of [`super`] done with [`mailferry_coord::ops`], the same code
//! `mailferry batch ... --db` runs, so that the answers have the same shape as with
//! batch directories.
//!
//! What differs, and why: a start or a completion queues the moves for
//! `mailferry worker` processes instead of running a pass here, and whether a pass runs
//! is whether a worker holds the move's lease. The wizard's scheduled start and its
//! automatic or timed completion are rows ([`mailferry_coord::schedule`]) that the
//! workers fire, so they need no scheduler in this service and survive its restarts;
//! the row is also the batch's latest run (`job`), shown as for batch directories. This
//! module checks no role and writes no audit record: [`super`] does both, as for files.

use super::{AdminBatchMeta, BatchInfo};
use crate::backend::DbBackend;
use crate::jobs::{JobKind, JobStatus};
use crate::AdminError;
use mailferry_control::batch::{Batch, BatchStatus, BatchUser, NewBatch};
use mailferry_control::status::MoveStatus;
use mailferry_coord::schedule::{self, Completion, Phase, Schedule};
use mailferry_coord::{ops, CoordError, Db};

/// `NotFound` for a batch is the same answer as without a database.
pub(super) fn no_batch(name: &str) -> AdminError {
    AdminError::NotFound(format!(
        "no batch {name}; create it first (POST /api/v1/batches)"
    ))
}

/// The batch record and whether it is suspended (404 if there is none).
async fn load(db: &Db, name: &str) -> Result<(Batch, bool), AdminError> {
    match ops::load_batch(&db.client, name).await {
        Ok(b) => Ok(b),
        Err(CoordError::NotFound(_)) => Err(no_batch(name)),
        Err(e) => Err(e.into()),
    }
}

/// True if a batch of that name is in the database.
pub async fn exists(db: &DbBackend, name: &str) -> Result<bool, AdminError> {
    match load(&*db.get().await?, name).await {
        Ok(_) => Ok(true),
        Err(AdminError::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The names of every batch.
pub async fn names(db: &DbBackend) -> Result<Vec<String>, AdminError> {
    Ok(ops::batch_names(&db.get().await?.client).await?)
}

/// A batch's status (every mailbox read from its rows) and the wizard's choices.
pub async fn batch_info(db: &DbBackend, name: &str) -> Result<BatchInfo, AdminError> {
    let g = db.get().await?;
    load(&g, name).await?;
    let status = ops::batch_status(&g, name).await?;
    let admin = meta_of(&g, name).await?;
    let job = job_of_batch(&g, name).await?;
    Ok(BatchInfo { status, job, admin })
}

async fn meta_of(db: &Db, name: &str) -> Result<Option<AdminBatchMeta>, AdminError> {
    Ok(ops::batch_admin(&db.client, name)
        .await?
        .and_then(|v| serde_json::from_value::<AdminBatchMeta>(v).ok()))
}

/// The wizard's choices kept with the batch (none for `batch new --db`).
pub async fn meta(db: &DbBackend, name: &str) -> Result<Option<AdminBatchMeta>, AdminError> {
    meta_of(&*db.get().await?, name).await
}

/// The batch's latest run as the service shows it, from its schedule row.
async fn job_of_batch(db: &Db, name: &str) -> Result<Option<JobStatus>, AdminError> {
    let Some(s) = schedule::get(&db.client, name).await? else {
        return Ok(None);
    };
    let busy = s.pending() && schedule::busy(&db.client, name).await?;
    Ok(Some(job_of(&s, busy)))
}

/// A batch's latest run (for the rules).
pub async fn job(db: &DbBackend, name: &str) -> Result<Option<JobStatus>, AdminError> {
    job_of_batch(&*db.get().await?, name).await
}

/// A schedule row as the file-based runs' record reads: waiting for its start or
/// completion time (`scheduled_for`), running while its passes are queued or leased
/// (`busy`) or a completion follows them, ended otherwise. A run whose passes have
/// ended reads as ended at once, before a worker's next tick records it.
fn job_of(s: &Schedule, busy: bool) -> JobStatus {
    let completing = matches!(s.phase, Phase::Complete | Phase::Final)
        || (s.phase == Phase::Done && s.complete_fired.is_some());
    let running = match s.phase {
        Phase::Start | Phase::Complete => true,
        Phase::Sync => busy || s.completion.is_some(),
        Phase::Final => busy,
        Phase::Done => false,
    };
    JobStatus {
        kind: if completing {
            JobKind::Complete
        } else {
            JobKind::Sync
        },
        running,
        scheduled_for: s.waiting_until().map(mailferry_core::rfc3339),
        started_at: mailferry_core::rfc3339(s.created_at),
        finished_at: s.finished_at.map(mailferry_core::rfc3339),
        outcome: None,
        error: s.error.clone(),
        interrupted: false,
    }
}

/// A batch's status only (for the rules).
pub async fn status(db: &DbBackend, name: &str) -> Result<BatchStatus, AdminError> {
    let g = db.get().await?;
    load(&g, name).await?;
    Ok(ops::batch_status(&g, name).await?)
}

/// The batch entry of `mailbox` and the id of its move.
pub async fn user(
    db: &DbBackend,
    name: &str,
    mailbox: &str,
) -> Result<(BatchUser, String), AdminError> {
    let g = db.get().await?;
    let (b, _) = load(&g, name).await?;
    let u = b
        .users
        .into_iter()
        .find(|u| u.address == mailbox)
        .ok_or_else(|| {
            AdminError::NotFound(format!(
                "batch {name} has no mailbox {mailbox}; see GET /api/v1/batches/{name}"
            ))
        })?;
    let id = ops::find_move(&g.client, mailbox, Some(name)).await?;
    Ok((u, id))
}

/// One move's status; `running` is whether a worker holds its lease.
pub async fn move_status(db: &DbBackend, move_id: &str) -> Result<MoveStatus, AdminError> {
    Ok(ops::move_status(&db.get().await?.client, move_id).await?)
}

/// A local copy of a move's rows (no signing key), deleted when the guard drops.
pub async fn copy(
    db: &DbBackend,
    move_id: &str,
) -> Result<(tempfile::TempDir, std::path::PathBuf), AdminError> {
    Ok(ops::local_copy(&db.get().await?.client, move_id).await?)
}

/// Records the batch and its moves (`batch new --db`'s code), with the wizard's choices.
pub async fn create(
    db: &DbBackend,
    name: &str,
    new: &NewBatch,
    meta: &AdminBatchMeta,
) -> Result<(), AdminError> {
    let meta = serde_json::to_value(meta).expect("meta serializes");
    ops::create_with(&mut *db.get().await?, name, new, Some(&meta)).await?;
    Ok(())
}

/// A run of every mailbox that takes one, queued now or (`start_at`) by the workers at
/// that time, then the completion the wizard chose; recorded as the batch's latest run.
/// Returns how many mailboxes were queued now.
pub async fn start(
    db: &DbBackend,
    name: &str,
    start_at: Option<i64>,
    then_complete: Option<Option<i64>>,
    actor: &str,
) -> Result<usize, AdminError> {
    let completion = then_complete.map(|at| at.map_or(Completion::WhenSynced, Completion::At));
    Ok(schedule::start(&mut *db.get().await?, name, start_at, completion, actor).await?)
}

/// Queues the final pass of every mailbox not completed; recorded as the batch's latest
/// run.
pub async fn complete(
    db: &DbBackend,
    name: &str,
    approve_skipped: bool,
    actor: &str,
) -> Result<usize, AdminError> {
    Ok(schedule::complete(&mut *db.get().await?, name, approve_skipped, actor).await?)
}

/// The batch record (its lifecycle settings: `complete_after` as resolved at creation).
pub async fn batch(db: &DbBackend, name: &str) -> Result<Batch, AdminError> {
    Ok(load(&*db.get().await?, name).await?.0)
}

/// Queues a pass of one mailbox accepting its skipped items.
pub async fn enqueue_approval(db: &DbBackend, name: &str, mailbox: &str) -> Result<(), AdminError> {
    ops::enqueue_move(&mut *db.get().await?, name, mailbox, false, true).await?;
    Ok(())
}

/// Suspends the batch: (suspended now, when their pass ends).
pub async fn suspend(
    db: &DbBackend,
    name: &str,
    actor: &str,
) -> Result<(usize, usize), AdminError> {
    Ok(ops::suspend(&mut *db.get().await?, name, actor).await?)
}

/// Resumes the batch: how many mailboxes.
pub async fn resume(db: &DbBackend, name: &str, actor: &str) -> Result<usize, AdminError> {
    Ok(ops::resume(&mut *db.get().await?, name, actor).await?)
}

#[cfg(test)]
mod tests;
