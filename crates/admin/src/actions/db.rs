//! The batch and move actions against the coordination database (`admin serve --db`):
//! the reads and changes of [`super`] done with [`mailferry_coord::ops`], the same code
//! `mailferry batch ... --db` runs, so that the answers have the same shape as with
//! batch directories.
//!
//! What differs, and why: a start or a completion queues the moves for
//! `mailferry worker` processes instead of running a pass here, so a batch has no
//! "latest run" (`job` is null) and whether a pass runs is whether a worker holds the
//! move's lease. The wizard's scheduled start and automatic or timed completion need a
//! scheduler that outlives the request, which only the file-based runs have yet: they
//! are refused (422) rather than silently half done. This module checks no role and
//! writes no audit record: [`super`] does both, as for files.

use super::{AdminBatchMeta, BatchInfo, BatchSettings, Completion, StartSchedule};
use crate::backend::DbBackend;
use crate::AdminError;
use mailferry_control::batch::{Batch, BatchStatus, BatchUser, NewBatch};
use mailferry_control::status::MoveStatus;
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
    let admin = ops::batch_admin(&g.client, name)
        .await?
        .and_then(|v| serde_json::from_value::<AdminBatchMeta>(v).ok());
    Ok(BatchInfo {
        status,
        job: None,
        admin,
    })
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

/// Refuses what the database cannot do yet: a scheduled start and a completion that is
/// not manual (422, before anything is created).
pub fn check_schedule(s: &BatchSettings) -> Result<(), AdminError> {
    if matches!(s.start, StartSchedule::Later { .. }) {
        return Err(AdminError::invalid(
            "start at a time: not available when the batches are in PostgreSQL (admin serve \
             --db) yet; choose Now or Manually and start the batch when it is time",
        ));
    }
    if s.completion != Completion::Manual {
        return Err(AdminError::invalid(
            "automatic or timed completion: not available when the batches are in PostgreSQL \
             (admin serve --db) yet; choose Manually and complete the batch from the dashboard \
             (or POST /api/v1/batches/NAME/complete) once its mailboxes are synced",
        ));
    }
    Ok(())
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

/// Queues a pass (`complete`: the final pass) of every mailbox that takes one.
pub async fn enqueue(
    db: &DbBackend,
    name: &str,
    complete: bool,
    approve_skipped: bool,
) -> Result<usize, AdminError> {
    let q = ops::enqueue(&mut *db.get().await?, name, complete, approve_skipped).await?;
    Ok(q.len())
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
