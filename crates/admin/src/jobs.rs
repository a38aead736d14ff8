//! Background runs of the admin service: `start`, `complete` and approval passes of a
//! batch run in tokio tasks through [`mailferry_control::batch::run`] and [`mailferry_control::lifecycle`], the
//! same code `mailferry batch` uses, while the request that asked returns at once.
//!
//! One run per batch at a time. Its record (what it does, its schedule, running or not,
//! outcome) is kept in the batch's directory as [`JOB_FILE`], written at every step, so
//! a restart of the service loses nothing scheduled: [`Jobs::open`] reads every record
//! and [`Jobs::rearm`] starts again the runs still waiting for their start time or for
//! their completion time ("start later", "complete after"). A run whose pass was going
//! on when the service died is shown as interrupted; it is not started again by itself
//! (an admin starts the batch again, and every move resumes where it stopped, each
//! message moved once: [`mailferry_control::lifecycle`]).
//!
//! Live progress is not kept here: it is read from the moves' own state directories
//! ([`mailferry_control::batch::status`]). This module does not check roles or write the admin
//! audit log; [`super::actions`] does.

use super::AdminError;
use mailferry_control::batch::{self, BatchDir, BatchUser, Mode, RunOptions, RunOutcome};
use mailferry_control::AppError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// File name of a batch's latest-run record, in the batch's directory.
pub const JOB_FILE: &str = "admin-job.json";
/// Format version of [`JOB_FILE`].
pub const JOB_VERSION: u32 = 1;

/// What a run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// A pass of every mailbox (then, per the batch's schedule, its completion).
    Sync,
    /// The final pass of every mailbox.
    Complete,
    /// A pass of one mailbox accepting its skipped items.
    Approve,
}

/// The record of a batch's latest run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobStatus {
    /// What it does (a sync waiting for its completion time shows as `complete`).
    pub kind: JobKind,
    /// Still running (or waiting for its start or completion time).
    pub running: bool,
    /// Waiting until this time (RFC 3339) before its next pass starts.
    pub scheduled_for: Option<String>,
    /// When it was asked for.
    pub started_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// What happened to every mailbox (of the last pass that ended).
    pub outcome: Option<RunOutcome>,
    /// Why it failed as a whole, or why it was interrupted.
    pub error: Option<String>,
    /// The service stopped while one of its passes was running (see `error`).
    #[serde(default)]
    pub interrupted: bool,
}

/// Where a run is; what a restart does with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    /// Waiting for `plan.start_at`: re-armed at restart.
    Waiting,
    /// A pass runs: interrupted if found at restart.
    Running,
    /// Ended.
    Ended,
}

/// A plan as recorded: what is left to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredPlan {
    kind: JobKind,
    start_at: Option<i64>,
    then_complete: Option<Option<i64>>,
    approve_skipped: bool,
    actor: String,
    /// The mailbox of an approval pass.
    #[serde(default)]
    mailbox: Option<String>,
}

/// [`JOB_FILE`].
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    version: u32,
    phase: Phase,
    plan: StoredPlan,
    status: JobStatus,
}

struct Entry {
    record: Record,
    dir: PathBuf,
}

type Map = Arc<Mutex<HashMap<String, Entry>>>;

/// Every batch's latest run.
pub struct Jobs {
    map: Map,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").finish_non_exhaustive()
    }
}

/// What to run, in order, once started.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Wait until this Unix time first.
    pub start_at: Option<i64>,
    /// The first run.
    pub mode: Mode,
    /// Then complete: at once (`Some(None)`), at a time (`Some(Some(t))`), or not.
    pub then_complete: Option<Option<i64>>,
    /// Accept skipped items (complete).
    pub approve_skipped: bool,
    /// Who asked.
    pub actor: String,
}

impl Plan {
    /// `mode` at once, nothing after it, skipped items not accepted: what the other
    /// fields say unless a caller sets them.
    pub fn now(mode: Mode, actor: String) -> Plan {
        Plan {
            start_at: None,
            mode,
            then_complete: None,
            approve_skipped: false,
            actor,
        }
    }
}

fn now() -> String {
    mailferry_core::rfc3339(mailferry_core::unix_now())
}

fn lock(map: &Map) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
    map.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes a record. A failure is logged, not returned: the run goes on, and only a
/// restart would miss it.
fn persist(dir: &Path, r: &Record) {
    let bytes = serde_json::to_vec_pretty(r).expect("job record serializes");
    if let Err(e) = mailferry_agent::state::write_atomic(&dir.join(JOB_FILE), &bytes) {
        tracing::warn!(
            "{}: {e} (this run would not survive a restart)",
            dir.display()
        );
    }
}

/// Reads a batch's record; `None` if it has none.
fn read_record(dir: &Path) -> Result<Option<Record>, AppError> {
    mailferry_control::versioned::load(&dir.join(JOB_FILE), JOB_VERSION)
}

/// What a record found at start becomes: a run that was passing is interrupted.
fn recovered(name: &str, mut r: Record) -> Record {
    if r.phase == Phase::Running {
        r.phase = Phase::Ended;
        r.status.running = false;
        r.status.scheduled_for = None;
        r.status.interrupted = true;
        r.status.finished_at = Some(now());
        r.status.error = Some(format!(
            "interrupted: the admin service stopped while this run's pass was going on; start \
             the batch again (POST /api/v1/batches/{name}/start): every move resumes where it \
             stopped, each message moved once"
        ));
    }
    r
}

impl Jobs {
    /// Reads the record of every batch under `batches` (a run that was passing when the
    /// service stopped is marked interrupted, on disk too). Nothing starts until
    /// [`Jobs::rearm`]. A record that cannot be read is skipped with a warning: the
    /// batch itself is intact, only its latest run is not shown.
    pub fn open(batches: &Path) -> Result<Jobs, AppError> {
        let mut map = HashMap::new();
        let rd = std::fs::read_dir(batches).map_err(|e| AppError::io(batches, e))?;
        for e in rd.filter_map(|e| e.ok()) {
            let dir = e.path();
            let Some(name) = e.file_name().to_str().map(String::from) else {
                continue;
            };
            if !dir.join(batch::BATCH_FILE).exists() {
                continue;
            }
            match read_record(&dir) {
                Ok(Some(r)) => {
                    let was = r.phase;
                    let record = recovered(&name, r);
                    if record.phase != was {
                        persist(&dir, &record);
                    }
                    map.insert(name, Entry { record, dir });
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("batch {name}: latest run not shown: {e}"),
            }
        }
        Ok(Jobs {
            map: Arc::new(Mutex::new(map)),
            tasks: Mutex::new(Vec::new()),
            stop: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Starts again every run that was waiting for its start or completion time when the
    /// service stopped (a time already past starts it now). Returns the batches re-armed.
    pub fn rearm(&self) -> Vec<String> {
        let waiting: Vec<(String, PathBuf, StoredPlan)> = lock(&self.map)
            .iter()
            .filter(|(_, e)| e.record.phase == Phase::Waiting)
            .map(|(n, e)| (n.clone(), e.dir.clone(), e.record.plan.clone()))
            .collect();
        let mut names = Vec::new();
        for (name, dir, plan) in waiting {
            let mode = match plan.kind {
                JobKind::Sync => Mode::Sync,
                JobKind::Complete => Mode::Complete,
                // Approval passes never wait.
                JobKind::Approve => continue,
            };
            tracing::info!(batch = %name, start_at = ?plan.start_at, "re-arming a scheduled run");
            let bd = BatchDir { dir };
            let ctx = self.ctx(&name);
            self.keep(tokio::spawn(async move {
                drive(ctx, bd, plan, mode).await;
            }));
            names.push(name);
        }
        names
    }

    /// The latest run of `batch`.
    pub fn get(&self, batch: &str) -> Option<JobStatus> {
        lock(&self.map).get(batch).map(|e| e.record.status.clone())
    }

    fn claim(&self, batch: &str, dir: &Path, plan: StoredPlan) -> Result<(), AdminError> {
        let mut map = lock(&self.map);
        if let Some(j) = map.get(batch).filter(|e| e.record.status.running) {
            return Err(AdminError::Conflict(match &j.record.status.scheduled_for {
                Some(at) => format!(
                    "batch {batch} has a run scheduled for {at} already; wait for it to end (GET /api/v1/batches/{batch})"
                ),
                None => format!(
                    "batch {batch} is running already; wait for the run to end (GET /api/v1/batches/{batch})"
                ),
            }));
        }
        let record = Record {
            version: JOB_VERSION,
            phase: if plan.start_at.is_some() {
                Phase::Waiting
            } else {
                Phase::Running
            },
            status: JobStatus {
                kind: plan.kind,
                running: true,
                scheduled_for: plan.start_at.map(mailferry_core::rfc3339),
                started_at: now(),
                finished_at: None,
                outcome: None,
                error: None,
                interrupted: false,
            },
            plan,
        };
        persist(dir, &record);
        map.insert(
            batch.to_string(),
            Entry {
                record,
                dir: dir.to_path_buf(),
            },
        );
        Ok(())
    }

    fn ctx(&self, name: &str) -> Ctx {
        Ctx {
            map: self.map.clone(),
            name: name.to_string(),
            stop: self.stop.subscribe(),
        }
    }

    /// Starts `plan` on the batch in `bd` in the background. 409 if the batch runs.
    pub fn start(&self, name: &str, bd: BatchDir, plan: Plan) -> Result<(), AdminError> {
        let stored = StoredPlan {
            kind: match plan.mode {
                Mode::Sync => JobKind::Sync,
                Mode::Complete => JobKind::Complete,
            },
            start_at: plan.start_at,
            then_complete: plan.then_complete,
            approve_skipped: plan.approve_skipped,
            actor: plan.actor,
            mailbox: None,
        };
        self.claim(name, &bd.dir, stored.clone())?;
        let ctx = self.ctx(name);
        self.keep(tokio::spawn(async move {
            drive(ctx, bd, stored, plan.mode).await;
        }));
        Ok(())
    }

    /// Runs a pass of one mailbox of the batch accepting its skipped items, in the
    /// background. An inline CSV password is read again from the batch's CSV, as a
    /// batch run does.
    pub fn approve(
        &self,
        name: &str,
        bd: &BatchDir,
        user: BatchUser,
        actor: String,
    ) -> Result<(), AdminError> {
        let stored = StoredPlan {
            kind: JobKind::Approve,
            start_at: None,
            then_complete: None,
            approve_skipped: true,
            actor: actor.clone(),
            mailbox: Some(user.address.clone()),
        };
        self.claim(name, &bd.dir, stored)?;
        let ctx = self.ctx(name);
        let dir = bd.mailbox_dir(&user);
        self.keep(tokio::spawn(async move {
            let res = async {
                let mut args = mailferry_control::lifecycle::recorded_args(&dir)?;
                if let Some(pw) = batch::inline_password(&user)? {
                    args.source_options.password = Some(pw);
                }
                let opts = mailferry_control::lifecycle::PassOptions {
                    actor,
                    approve_skipped: true,
                    ..Default::default()
                };
                mailferry_control::lifecycle::run_pass(&args, &opts).await
            }
            .await;
            ctx.update(|r| {
                r.phase = Phase::Ended;
                r.status.running = false;
                r.status.finished_at = Some(now());
                r.status.error = match res {
                    Ok(p) => p.limit,
                    Err(e) => Some(format!("{e:#}")),
                };
            });
        }));
        Ok(())
    }

    fn keep(&self, task: tokio::task::JoinHandle<()>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Waits for the running passes to end (a pass is not interrupted: it is a
    /// resumable delta, and its work is kept). Runs waiting for their start or
    /// completion time stop waiting at once; their record stays, and the next start of
    /// the service re-arms them.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }
}

// === The run itself ===

/// One run's handle on its record.
struct Ctx {
    map: Map,
    name: String,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Ctx {
    /// Changes the run's record and writes it.
    fn update(&self, f: impl FnOnce(&mut Record)) {
        let mut map = lock(&self.map);
        if let Some(e) = map.get_mut(&self.name) {
            f(&mut e.record);
            persist(&e.dir, &e.record);
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps until `t` (Unix seconds); false if the service stops first.
    async fn wait_until(&self, t: i64) -> bool {
        let secs = (t - mailferry_core::unix_now()).max(0) as u64;
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(secs)) => !self.stopping(),
            _ = stop.wait_for(|s| *s) => false,
        }
    }

    /// Records the run's end.
    fn finish(&self, res: Result<RunOutcome, AppError>) {
        self.update(|r| {
            r.phase = Phase::Ended;
            r.status.running = false;
            r.status.scheduled_for = None;
            r.status.finished_at = Some(now());
            match res {
                Ok(o) => {
                    r.status.error = o.check().err().map(|e| e.to_string());
                    r.status.outcome = Some(o);
                }
                Err(e) => r.status.error = Some(format!("{e:#}")),
            }
        });
    }

    /// Records that the run now waits until `t` to complete the batch (a restart
    /// re-arms it as a completion at `t`).
    fn wait_to_complete(&self, t: i64, first: RunOutcome) {
        self.update(|r| {
            r.phase = Phase::Waiting;
            r.plan.kind = JobKind::Complete;
            r.plan.start_at = Some(t);
            r.plan.then_complete = None;
            r.status.kind = JobKind::Complete;
            r.status.scheduled_for = Some(mailferry_core::rfc3339(t));
            r.status.outcome = Some(first);
        });
    }

    fn running(&self) {
        self.update(|r| {
            r.phase = Phase::Running;
            r.status.scheduled_for = None;
        });
    }
}

async fn drive(ctx: Ctx, bd: BatchDir, plan: StoredPlan, mode: Mode) {
    if let Some(t) = plan.start_at {
        if !ctx.wait_until(t).await {
            return;
        }
    }
    ctx.running();
    let opts = RunOptions {
        concurrency: None,
        approve_skipped: plan.approve_skipped,
        actor: plan.actor.clone(),
        observer: None,
    };
    let first = match batch::run(&bd, mode, &opts).await {
        Ok(o) => o,
        Err(e) => return ctx.finish(Err(e)),
    };
    let at = match plan.then_complete {
        Some(at) if mode == Mode::Sync && first.check().is_ok() => at,
        _ => return ctx.finish(Ok(first)),
    };
    // The completion's time is recorded before waiting for it (or before stopping,
    // when the service stops between the two passes), so a restart completes it.
    let t = at.unwrap_or_else(mailferry_core::unix_now);
    ctx.wait_to_complete(t, first);
    if ctx.stopping() || !ctx.wait_until(t).await {
        return;
    }
    ctx.running();
    ctx.finish(batch::run(&bd, Mode::Complete, &opts).await);
}

#[cfg(test)]
mod tests;
