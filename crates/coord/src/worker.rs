//! `mailferry worker`: leases runnable moves from the coordination database and runs
//! their passes, any number of workers on any number of machines.
//!
//! Each leased move is run in a local copy of its state ([`crate::files`]) under
//! `--state`, through the same lifecycle as a single-machine batch
//! ([`lifecycle::run_pass_on`]), with the lease's epoch as the pass's fence. Beside the
//! pass, a heartbeat every third of the lease extends it and copies the new audit
//! records into the rows ([`crate::lease::heartbeat`]); a heartbeat that finds the lease
//! taken over stops the pass and drops the local copy. At the end the rest goes to the
//! rows and the lease is released in one fence-checked transaction. On SIGTERM/SIGINT
//! (the `stop` future) nothing new is leased, running passes finish and commit, and
//! [`run`] returns.
//!
//! This module does not decide which move is next or how many may run (the lease
//! transaction does), and does not talk to sources or stores itself.

use crate::files::{self, Copy};
use crate::lease::{self, Ending, Lease};
use crate::{CoordError, Db, DbUrl};
use mailferry_agent::source::connections::ConnectionLimit;
use mailferry_agent::throttle::{Limits, Throttle};
use mailferry_control::batch::{self, BatchUser, SharedReading};
use mailferry_control::endpoint::Endpoint;
use mailferry_control::lifecycle::{self, PassOptions};
use mailferry_control::moving::{Connected, PassHooks};
use mailferry_control::AppError;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Passes of one move tried in a row before it is left `Failed` (until queued again).
const MAX_ATTEMPTS: i32 = 4;
/// Wait before the first retry of a failed pass; doubled for each further one.
const RETRY_AFTER: Duration = Duration::from_secs(3);

/// What `mailferry worker` needs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The coordination database.
    pub db: DbUrl,
    /// Passes at once in this worker.
    pub concurrency: usize,
    /// Where the local copies of leased moves live (one directory per move).
    pub state: PathBuf,
    /// How long a lease lasts without a heartbeat.
    pub lease: Duration,
    /// How often to look for work when there was none.
    pub poll: Duration,
}

/// What a worker did before it stopped.
#[derive(Clone, Debug, Default)]
pub struct WorkerSummary {
    /// This worker's id.
    pub id: String,
    /// Passes that ended and were committed.
    pub passes: u64,
    /// Passes that failed (recorded on the move).
    pub failed: u64,
    /// Leases lost to another worker (their passes were stopped).
    pub fenced: u64,
}

fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!(
        "{host}:{}:{:06x}",
        std::process::id(),
        mailferry_agent::throttle::random_u64() & 0xff_ffff
    )
}

/// Destinations opened by this worker, one per destination, shared by its passes (a
/// local volume can be opened once per process).
#[derive(Default)]
struct Destinations(tokio::sync::Mutex<HashMap<String, Arc<Connected>>>);

impl Destinations {
    async fn get(
        &self,
        args: &mailferry_control::moving::MoveArgs,
    ) -> Result<Arc<Connected>, AppError> {
        let key = serde_json::to_string(&args.destination).expect("destination serializes");
        let mut map = self.0.lock().await;
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let c = Arc::new(Connected::open(&args.destination, &args.profile).await?);
        map.insert(key, c.clone());
        Ok(c)
    }

    async fn close(self) {
        for (_, c) in self.0.into_inner() {
            if let Ok(c) = Arc::try_unwrap(c) {
                c.close().await;
            }
        }
    }
}

/// Runs until `stop` resolves, then lets running passes finish and returns.
pub async fn run(
    opts: WorkerOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<WorkerSummary, CoordError> {
    let mut db = Db::connect(&opts.db).await?;
    let id = worker_id();
    register(&db, &id).await?;
    mailferry_audit::private::create_dir_all(&opts.state).map_err(CoordError::io(&opts.state))?;
    tracing::info!(worker = %id, concurrency = opts.concurrency, "worker started");
    let dests = Arc::new(Destinations::default());
    let mut summary = WorkerSummary {
        id: id.clone(),
        ..Default::default()
    };
    let mut set: tokio::task::JoinSet<Result<bool, CoordError>> = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    let mut stopping = false;
    let mut last_tick: Option<tokio::time::Instant> = None;
    loop {
        // Reap what ended.
        while let Some(j) = set.try_join_next() {
            tally(&mut summary, j);
        }
        if stopping {
            break;
        }
        let mut leased = false;
        if db.client.is_closed() {
            // PostgreSQL restarted or the connection broke: lease nothing until it is back.
            match Db::connect(&opts.db).await {
                Ok(d) => db = d,
                Err(e) => tracing::warn!(error = %e, "database unreachable; trying again"),
            }
        }
        // Every worker moves the batches' schedules along (once per poll): whichever
        // ticks first fires a due start or completion, the others skip it.
        if !ticked_lately(&last_tick, opts.poll) && !db.client.is_closed() {
            last_tick = Some(tokio::time::Instant::now());
            if let Err(e) = crate::schedule::tick(&mut db.client, &format!("worker:{id}")).await {
                tracing::warn!(error = %e, "could not look at the schedules; trying again");
            }
        }
        if set.len() < opts.concurrency.max(1) && !db.client.is_closed() {
            match lease::lease_one(&mut db.client, &id, opts.lease).await {
                Ok(Some(l)) => {
                    tracing::info!(move_id = %l.move_id, mailbox = %l.address, epoch = l.epoch, "leased");
                    set.spawn(run_leased(opts.clone(), l, dests.clone()));
                    leased = true;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "could not lease; trying again"),
            }
            let _ = db
                .client
                .execute("UPDATE workers SET last_seen = now() WHERE id = $1", &[&id])
                .await;
        }
        if leased {
            continue;
        }
        tokio::select! {
            _ = &mut stop => {
                stopping = true;
                tracing::info!(worker = %id, running = set.len(), "stopping: leasing nothing new; running passes finish first");
                let _ = db.client.execute("UPDATE workers SET stopping = true WHERE id = $1", &[&id]).await;
            }
            Some(j) = set.join_next(), if !set.is_empty() => tally(&mut summary, j),
            _ = tokio::time::sleep(opts.poll) => {}
        }
    }
    while let Some(j) = set.join_next().await {
        tally(&mut summary, j);
    }
    if let Ok(d) = Arc::try_unwrap(dests) {
        d.close().await;
    }
    let _ = db
        .client
        .execute("UPDATE workers SET last_seen = now() WHERE id = $1", &[&id])
        .await;
    Ok(summary)
}

/// True while the last schedule tick is younger than one poll interval.
fn ticked_lately(last: &Option<tokio::time::Instant>, poll: Duration) -> bool {
    last.is_some_and(|t| t.elapsed() < poll)
}

fn tally(s: &mut WorkerSummary, j: Result<Result<bool, CoordError>, tokio::task::JoinError>) {
    match j {
        Ok(Ok(true)) => s.passes += 1,
        Ok(Ok(false)) => {
            s.passes += 1;
            s.failed += 1;
        }
        Ok(Err(CoordError::Fenced { .. })) => s.fenced += 1,
        Ok(Err(e)) => {
            s.failed += 1;
            tracing::warn!(error = %e, "a leased move could not be run");
        }
        Err(e) => {
            s.failed += 1;
            tracing::error!(error = %e, "a pass task panicked");
        }
    }
}

async fn register(db: &Db, id: &str) -> Result<(), CoordError> {
    let host = id.split(':').next().unwrap_or_default();
    db.client
        .execute(
            "INSERT INTO workers (id, host, pid) VALUES ($1, $2, $3)",
            &[&id, &host, &(std::process::id() as i32)],
        )
        .await
        .map_err(CoordError::db("registering the worker"))?;
    Ok(())
}

/// Runs the pass of one leased move; `Ok(true)`: it ended well, `Ok(false)`: it failed
/// (recorded on the move). A lost lease is `Err(Fenced)`: nothing more was written.
async fn run_leased(
    opts: WorkerOptions,
    l: Lease,
    dests: Arc<Destinations>,
) -> Result<bool, CoordError> {
    let mut client = crate::db::connect_raw(&opts.db).await?;
    let dir = opts.state.join(&l.move_id);
    let mut cursor = files::materialize(&client, &l.move_id, &dir, Copy::Full).await?;
    forget_runner(&dir)?;
    let outcome = prepare_and_run(&opts, &l, &dests, &mut client, &dir, &mut cursor).await;
    let Some(ending) = ending_of(&outcome, l.attempts) else {
        // The lease is lost (the database says so, or the store refused the session
        // for a newer lease's fencing number): final. Nothing is copied, released or
        // queued again; what the pass wrote locally goes with the copy.
        let (e, cause) = match outcome {
            Err(e @ CoordError::Fenced { .. }) => (e, "the database".to_string()),
            Ok(Err(store)) => (
                CoordError::Fenced {
                    move_id: l.move_id.clone(),
                    mine: l.epoch,
                },
                format!("the store ({store})"),
            ),
            Ok(Ok(_)) | Err(_) => unreachable!("ending_of is None only for a lost lease"),
        };
        tracing::warn!(move_id = %l.move_id, mailbox = %l.address, epoch = l.epoch, refused_by = cause, error = %e, "lease lost; dropping the local copy");
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    };
    let ok = ending.error.is_none();
    let released = release_retrying(&opts, &mut client, &l, &dir, &cursor, ending).await;
    let _ = std::fs::remove_dir_all(&dir);
    released?;
    match outcome {
        Ok(Ok(state)) => {
            tracing::info!(move_id = %l.move_id, mailbox = %l.address, %state, "pass committed");
            Ok(ok && state != lifecycle::MoveState::Failed)
        }
        Ok(Err(e)) => {
            tracing::warn!(move_id = %l.move_id, mailbox = %l.address, error = %format!("{e:#}"), "pass failed");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// How a pass's end is recorded: `None` when the lease is lost, which is final (the
/// move is neither released nor queued again by this worker, and no row is written):
/// a fenced heartbeat, or the store refusing the session ([`AppError::Fenced`]: a
/// newer lease's session raised the mailbox's fencing number). A pass that failed
/// otherwise is queued again while `attempts` allows.
pub(crate) fn ending_of(
    outcome: &Result<Result<lifecycle::MoveState, AppError>, CoordError>,
    attempts: i32,
) -> Option<Ending> {
    match outcome {
        Ok(Ok(_)) => Some(Ending::default()),
        Err(CoordError::Fenced { .. }) | Ok(Err(AppError::Fenced { .. })) => None,
        // A pass that failed (source or store unreachable, the store still busy with a
        // session of a worker that lost this lease) is tried again a few times, later
        // each time; a pass that ended over a limit is not (it would end the same way).
        Ok(Err(e)) => Some(Ending {
            error: Some(format!("{e:#}")),
            retry_in: (attempts < MAX_ATTEMPTS - 1)
                .then(|| RETRY_AFTER * 2u32.pow(attempts.max(0) as u32)),
        }),
        Err(e) => Some(Ending {
            error: Some(e.to_string()),
            retry_in: (attempts < MAX_ATTEMPTS - 1).then_some(RETRY_AFTER),
        }),
    }
}

/// [`lease::release`], tried again (on a new connection when the old one closed) for as
/// long as the lease lasts: a database that is back within it loses nothing. Fenced is
/// final.
async fn release_retrying(
    opts: &WorkerOptions,
    client: &mut tokio_postgres::Client,
    l: &Lease,
    dir: &std::path::Path,
    cursor: &files::Cursor,
    ending: Ending,
) -> Result<(), CoordError> {
    let deadline = tokio::time::Instant::now() + opts.lease;
    loop {
        reconnect_if_closed(opts, client).await;
        let e = match lease::release(client, l, dir, cursor, ending.clone()).await {
            Ok(_) => return Ok(()),
            Err(e @ CoordError::Fenced { .. }) => return Err(e),
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(e);
        }
        tracing::warn!(move_id = %l.move_id, error = %e, "could not record the end of the pass; trying again");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A new connection in place of a closed one (PostgreSQL restarted); on failure the old
/// one stays and the caller's next statement fails and is retried later.
async fn reconnect_if_closed(opts: &WorkerOptions, client: &mut tokio_postgres::Client) {
    if client.is_closed() {
        match crate::db::connect_raw(&opts.db).await {
            Ok(c) => *client = c,
            Err(e) => tracing::warn!(error = %e, "database unreachable; trying again"),
        }
    }
}

/// Drops the process recorded as running a pass of the move: it was the last holder of
/// the lease (dead, or fenced now), perhaps on another host where its liveness cannot
/// be checked. The lease, not that record, says who runs the move.
fn forget_runner(dir: &std::path::Path) -> Result<(), CoordError> {
    let path = dir.join(lifecycle::LIFECYCLE_FILE);
    let bytes = std::fs::read(&path).map_err(CoordError::io(&path))?;
    let mut v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| CoordError::BadRow {
            what: format!("moves lifecycle ({})", dir.display()),
            reason: e.to_string(),
        })?;
    if let Some(o) = v.as_object_mut() {
        if o.remove("runner").is_some() {
            let out = serde_json::to_vec_pretty(&v).expect("json");
            mailferry_audit::private::write(&path, &out).map_err(CoordError::io(&path))?;
        }
    }
    Ok(())
}

/// Builds the pass from the local copy and runs it beside its heartbeats. The outer
/// error is the lease's (fenced, database); the inner one the pass's.
async fn prepare_and_run(
    opts: &WorkerOptions,
    l: &Lease,
    dests: &Destinations,
    client: &mut tokio_postgres::Client,
    dir: &std::path::Path,
    cursor: &mut files::Cursor,
) -> Result<Result<lifecycle::MoveState, AppError>, CoordError> {
    let prepared = (|| {
        let user: BatchUser = serde_json::from_value(l.user.clone()).map_err(|e| {
            AppError::Failed(format!(
                "the batch entry of {} is unreadable: {e}",
                l.address
            ))
        })?;
        let mut args = lifecycle::recorded_args(dir)?;
        args.source_options.password = batch::inline_password(&user)?;
        let ep = Endpoint::parse(&l.endpoint_record, std::path::Path::new(&l.endpoint))?;
        SharedReading::new(&ep).apply(&mut args.source_options, &args.profile);
        if l.budgeted {
            // The connections this lease holds of the endpoint's budget, across workers.
            let n = l.connections.max(1) as usize;
            args.source_options.connections =
                Some(args.source_options.connections.map_or(n, |c| c.min(n)));
            args.source_options.connection_limit = Some(ConnectionLimit::new(n));
        }
        let limits = Limits {
            bytes_per_second: l.bytes_per_second,
            messages_per_second: ep.max_messages_per_second,
        };
        let throttle = (!limits.is_unlimited()).then(|| Arc::new(Throttle::new(limits)));
        Ok::<_, AppError>((args, throttle))
    })();
    let (args, throttle) = match prepared {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    let dest = match dests.get(&args).await {
        Ok(d) => d,
        Err(e) => return Ok(Err(e)),
    };
    let pass_opts = PassOptions {
        actor: format!("worker:{} (batch {})", l.owner, l.batch),
        complete: l.pass_kind == "complete",
        approve_skipped: l.approve_skipped,
        ..Default::default()
    };
    let hooks = PassHooks {
        throttle,
        fence: Some(l.epoch as u64),
        ..Default::default()
    };
    let pass = lifecycle::run_pass_on(&dest, &args, &pass_opts, hooks);
    tokio::pin!(pass);
    let every = opts.lease / 3;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            res = &mut pass => return Ok(res.map(|r| r.state)),
            _ = tick.tick() => {
                reconnect_if_closed(opts, client).await;
                match lease::heartbeat(client, l, dir, cursor, opts.lease).await {
                    Ok(next) => *cursor = next,
                    // Dropping the pass future stops the pass.
                    Err(e @ CoordError::Fenced { .. }) => return Err(e),
                    Err(e) => tracing::warn!(move_id = %l.move_id, error = %e, "heartbeat failed; the pass goes on and the next heartbeat tries again"),
                }
            }
        }
    }
}
