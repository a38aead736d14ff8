//! `mailferry bench --workers 1,2,4,8`: the corpus's mailboxes moved by that many
//! `mailferry worker` processes, as a scaled-out deployment runs them (docs/scale-out.md).
//!
//! Each run gets a scratch PostgreSQL database on `--db`'s server, a users' CSV and an
//! IMAP endpoint file pointing at the case's route (the delay relay when `--latency` is
//! given), and a batch made with `batch new --db`'s code. The clock starts when the batch
//! is queued (`batch start --db`) and stops when no move is queued or leased; the workers
//! are then stopped with SIGTERM (they exit 0 after their passes commit) and the database
//! is dropped. The workers' CPU time is read from `/proc/<pid>/stat` while they are idle,
//! before they stop. Verification is the runner's, on the pass reports the workers
//! recorded: a run where a mailbox needed a second pass (a retry) has no figures.
//!
//! Not for correctness under failure (tests/workers.rs kills workers); nothing here
//! retries or tunes.

use super::corpus::ImapRoute;
use super::cpu::process_cpu_seconds_of;
use super::report::Corpus;
use super::BenchArgs;
use crate::AppError;
use mailferry_control::batch::NewBatch;
use mailferry_control::lifecycle::{MoveState, Settings};
use mailferry_control::moving::Destination;
use mailferry_coord::{db, ops, Db, DbUrl};
use mailferry_core::report::MoveReport;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The batch's name in each run's scratch database.
const BATCH: &str = "bench";

/// What the workers of one run did.
pub(super) struct WorkersRun {
    /// Each mailbox's report, in corpus order.
    pub(super) reports: Vec<MoveReport>,
    /// From queueing the batch to the last move released.
    pub(super) seconds: f64,
    /// utime + stime of the worker processes.
    pub(super) cpu_seconds: f64,
}

/// The worker processes of a run; killed if the run fails before they are stopped.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Moves every mailbox of `corpus` with `workers` processes, each running
/// `per_worker` passes at once, into `dest`.
pub(super) async fn move_all(
    dest: &Destination,
    route: ImapRoute<'_>,
    corpus: &Corpus,
    workers: usize,
    per_worker: usize,
    args: &BenchArgs,
    dir: &Path,
) -> Result<WorkersRun, AppError> {
    let server = DbUrl::new(args.db.as_deref().expect("plan checked --db"))?;
    let url = db::scratch_database(&server, "bench").await?;
    let res = run_in(&url, dest, route, corpus, workers, per_worker, args, dir).await;
    // Dropped whatever happened: a failed run leaves no database behind.
    let dropped = db::drop_database(&server, &url).await;
    let run = res?;
    dropped?;
    Ok(run)
}

#[allow(clippy::too_many_arguments)]
async fn run_in(
    url: &DbUrl,
    dest: &Destination,
    route: ImapRoute<'_>,
    corpus: &Corpus,
    workers: usize,
    per_worker: usize,
    args: &BenchArgs,
    dir: &Path,
) -> Result<WorkersRun, AppError> {
    let mut db = Db::connect(url).await?;
    let csv = dir.join("users.csv");
    let mut text = String::from("EmailAddress,UserName,PasswordFile\n");
    for mb in &corpus.mailboxes {
        let _ = writeln!(
            text,
            "{},{},{}",
            mb.address,
            route.user(mb),
            route.password_file().display()
        );
    }
    std::fs::write(&csv, text).map_err(|e| AppError::io(&csv, e))?;
    let endpoint = dir.join("endpoint.toml");
    // Every mailbox may run at once: the workers' --concurrency is what is measured.
    let toml = format!(
        "kind = \"imap\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"imaps\"\nca_file = {:?}\n\
         max_concurrent_moves = {}\nmax_concurrent_incremental_syncs = {}\n",
        route.port,
        route.ca_pem().display().to_string(),
        corpus.mailboxes.len(),
        corpus.mailboxes.len(),
    );
    std::fs::write(&endpoint, toml).map_err(|e| AppError::io(&endpoint, e))?;
    let new = NewBatch {
        csv,
        endpoint,
        destination: dest.clone(),
        profile: None,
        concurrency: None,
        settings: Settings::default(),
        actor: "bench".into(),
    };
    ops::create(&mut db, BATCH, &new).await?;

    let mut procs = Workers(Vec::new());
    for i in 0..workers {
        procs.0.push(start_worker(
            args,
            url,
            per_worker,
            &dir.join(format!("worker-{i}")),
        )?);
    }
    let t0 = Instant::now();
    ops::enqueue(&mut db, BATCH, false, false).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if ops::idle(&db, BATCH).await? {
            break;
        }
        for (i, c) in procs.0.iter_mut().enumerate() {
            if let Ok(Some(status)) = c.try_wait() {
                return Err(AppError::Failed(format!(
                    "worker {i} exited ({status}) before the batch was done; its log: {}",
                    dir.join(format!("worker-{i}.log")).display()
                )));
            }
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let cpu_seconds = procs
        .0
        .iter()
        .map(|c| process_cpu_seconds_of(&c.id().to_string()))
        .sum();
    stop_workers(&mut procs, dir)?;

    for (address, state) in ops::states(&db, BATCH).await? {
        if state != MoveState::Synced {
            return Err(AppError::Failed(format!(
                "{address} ended {} instead of synced: the run has no figures",
                state.as_str()
            )));
        }
    }
    let mut by_address = ops::reports(&db, BATCH).await?;
    let mut reports = Vec::new();
    for mb in &corpus.mailboxes {
        let i = by_address
            .iter()
            .position(|(a, _)| *a == mb.address)
            .ok_or_else(|| AppError::Failed(format!("{} has no pass report", mb.address)))?;
        let (_, mut passes) = by_address.swap_remove(i);
        if passes.len() != 1 {
            return Err(AppError::Failed(format!(
                "{} took {} passes (a pass was retried): the run has no figures",
                mb.address,
                passes.len()
            )));
        }
        reports.push(passes.remove(0));
    }
    Ok(WorkersRun {
        reports,
        seconds,
        cpu_seconds,
    })
}

fn start_worker(
    args: &BenchArgs,
    url: &DbUrl,
    per_worker: usize,
    state: &Path,
) -> Result<Child, AppError> {
    let exe = args.worker_exe.as_deref().expect("plan checked the binary");
    let log_path = state.with_extension("log");
    let log = std::fs::File::create(&log_path).map_err(|e| AppError::io(&log_path, e))?;
    Command::new(exe)
        .arg("worker")
        .arg("--concurrency")
        .arg(per_worker.to_string())
        .arg("--state")
        .arg(state)
        // The URL may hold a password: through the environment, never the command line.
        .env("MAILFERRY_DB", url.expose_secret())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| AppError::io(exe, e))
}

/// SIGTERM, then each must exit 0 (its passes are all done, so at once).
fn stop_workers(procs: &mut Workers, dir: &Path) -> Result<(), AppError> {
    for c in &procs.0 {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
    }
    for (i, c) in std::mem::take(&mut procs.0).into_iter().enumerate() {
        let out = c.wait_with_output().map_err(|e| AppError::io(dir, e))?;
        if !out.status.success() {
            return Err(AppError::Failed(format!(
                "worker {i} exited {} after SIGTERM; its log: {}",
                out.status,
                dir.join(format!("worker-{i}.log")).display()
            )));
        }
    }
    Ok(())
}
