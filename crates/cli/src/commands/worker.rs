//! `mailferry worker`: runs the passes queued in a coordination database
//! (`mailferry_coord::worker`), until SIGTERM or SIGINT.

use mailferry_control::AppError;
use std::path::PathBuf;
use std::time::Duration;

/// `worker`.
#[derive(clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    db: super::DbArgs,
    /// Passes this worker runs at once (the endpoints' limits hold across all workers
    /// on top of it).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Directory for the local copies of the moves this worker runs (one directory per
    /// move, deleted when its pass ends) [default: a new temporary directory].
    #[arg(long)]
    state: Option<PathBuf>,
    /// Seconds a lease lasts without a heartbeat: a worker that dies loses its moves to
    /// another after this long. Heartbeats come every third of it.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(3..=3600))]
    lease_seconds: u64,
}

/// Runs the worker; SIGTERM or SIGINT: lease nothing new, let running passes finish and
/// commit, exit 0.
pub async fn run(a: WorkerArgs) -> Result<(), AppError> {
    if a.concurrency == 0 {
        return Err(AppError::Usage("--concurrency must be at least 1".into()));
    }
    let scratch;
    let state = match a.state {
        Some(s) => s,
        None => {
            scratch = tempfile::tempdir().map_err(|e| AppError::io(&std::env::temp_dir(), e))?;
            scratch.path().to_path_buf()
        }
    };
    let opts = mailferry_coord::worker::WorkerOptions {
        db: a.db.url(None)?.ok_or_else(|| {
            AppError::Usage(
                "worker needs the coordination database: --db URL, --db-file PATH, or env \
                 MAILFERRY_DB or MAILFERRY_DB_FILE"
                    .into(),
            )
        })?,
        concurrency: a.concurrency,
        state,
        lease: Duration::from_secs(a.lease_seconds),
        poll: Duration::from_millis(500),
    };
    let s = mailferry_coord::worker::run(opts, stop_signal()).await?;
    eprintln!(
        "worker {} stopped: {} pass(es) ran ({} failed), {} lease(s) lost to other workers",
        s.id, s.passes, s.failed, s.fenced
    );
    Ok(())
}

/// Resolves at the first SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still stops (the default action).
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
