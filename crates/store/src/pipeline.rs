//! [`CommitPipeline`]: one session's group commits in three stages on three threads —
//! segment fdatasync, index transaction, audit records — and [`BatchPolicy`], which says
//! when the session closes its open batch.
//!
//! Each stage ends with an fsync of its own file (segments, the SQLite WAL, the audit
//! log). Run one after another, a batch costs the sum of three disk flushes and the
//! session's writer waits for all of them; pipelined, batch N's audit step, batch N+1's
//! index step and batch N+2's fdatasync run at once, and a batch costs the slowest stage.
//!
//! What keeps exactly-once true is unchanged: within a batch the steps run in order
//! (a row is committed only after the bytes it points to are durable, an audit record
//! only after its row), batches go through every stage in the order they were submitted,
//! and a batch is reported (its acknowledgements released) only after its last step.
//! After a failure no later batch takes another step: the failure is reported after the
//! batches before it, and the session must stop.
//!
//! The pipeline does not decide when to close a batch; [`BatchPolicy`] does, from the
//! profile's limits. It never opens a socket nor sends an acknowledgement itself.

use crate::ingest::{CommitJob, CommitOutcome, IndexedJob, SyncedJob};
use crate::StoreError;
use mailferry_core::profile::CommitSettings;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Batches in flight at most: one per stage. A batch closed while all three stages are
/// busy waits in [`CommitPipeline::submit`], which is the session's backpressure.
pub const MAX_IN_FLIGHT: usize = 3;

/// When the session closes its open batch: at the first of the profile's `commit` limits
/// (messages, body bytes, age of its oldest change). A FLUSH from the agent closes it too.
///
/// Classic group commit, sized by the limits, not by how busy the pipeline is. A batch
/// costs three flushes whatever its size (segment fdatasync, WAL fsync, audit fsync), so
/// fewer, fuller batches leave more of the disk and the two cores to the bytes. Closing a
/// batch whenever the fdatasync stage went idle (the earlier, adaptive policy) made 4–10×
/// more commits and cost 8–14 % of throughput on the development machine (benches/
/// RESULTS.md, 2026-11-24); latency stays bounded by `max_delay`, and at light load a
/// batch waits at most that long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Changes (messages, deletions, flag changes) per batch at most.
    pub max_messages: usize,
    /// Body bytes per batch at most.
    pub max_bytes: u64,
    /// Longest the oldest change of a batch waits before the batch closes.
    pub max_delay: Duration,
}

impl BatchPolicy {
    /// The policy of a profile's `[commit]` section.
    pub fn from_settings(s: &CommitSettings) -> BatchPolicy {
        BatchPolicy {
            max_messages: s.max_messages,
            max_bytes: s.max_bytes,
            max_delay: Duration::from_millis(s.max_delay_ms),
        }
    }

    /// True if the open batch should close now: it is not empty and reached one of its
    /// limits ([`CommitPipeline::submit`] then waits while the pipeline is full).
    pub fn should_close(&self, pending: usize, pending_bytes: u64, age: Duration) -> bool {
        pending > 0
            && (pending >= self.max_messages
                || pending_bytes >= self.max_bytes
                || age >= self.max_delay)
    }
}

/// The pipeline stopped after a failure (already reported through its callback); the
/// batch was not taken.
#[derive(Debug, thiserror::Error)]
#[error("the commit pipeline stopped after a failure; start a new session")]
#[non_exhaustive]
pub struct PipelineStopped;

/// Counts shared by the submitter and the stages.
#[derive(Default)]
struct Counts {
    /// Submitted and not yet reported (or dropped).
    in_flight: usize,
}

struct Shared {
    counts: Mutex<Counts>,
    /// Signalled whenever a count falls.
    fell: Condvar,
    failed: AtomicBool,
}

impl Shared {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Counters stay meaningful after a panic elsewhere; keep going.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn done(&self) {
        self.counts().in_flight -= 1;
        self.fell.notify_all();
    }
}

/// What flows from one stage to the next: a batch, or the failure that stopped an
/// earlier stage (behind every batch that stage passed on before it).
enum Item<T> {
    Job(T),
    Failed(StoreError),
}

/// The three stage threads of one session, named `mf-store-sync`, `mf-store-index` and
/// `mf-store-audit` (so per-thread CPU says which stage used it).
pub struct CommitPipeline {
    tx: Option<Sender<CommitJob>>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for CommitPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.shared.counts();
        f.debug_struct("CommitPipeline")
            .field("in_flight", &c.in_flight)
            .finish_non_exhaustive()
    }
}

impl CommitPipeline {
    /// Starts the stage threads. `on_done` is called on the last stage's thread with each
    /// batch's outcome in submission order, or once with the first failure, after which
    /// it is not called again.
    pub fn start<F>(on_done: F) -> std::io::Result<CommitPipeline>
    where
        F: FnMut(Result<CommitOutcome, StoreError>) + Send + 'static,
    {
        let shared = Arc::new(Shared {
            counts: Mutex::default(),
            fell: Condvar::new(),
            failed: AtomicBool::new(false),
        });
        let (tx, sync_rx) = channel::<CommitJob>();
        let (index_tx, index_rx) = channel::<Item<SyncedJob>>();
        let (audit_tx, audit_rx) = channel::<Item<IndexedJob>>();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.into()).spawn(f)
        };
        let s = shared.clone();
        let sync = spawn(
            "mf-store-sync",
            Box::new(move || sync_stage(sync_rx, index_tx, &s)),
        )?;
        let s = shared.clone();
        let index = spawn(
            "mf-store-index",
            Box::new(move || next_stage(index_rx, audit_tx, &s, |j: SyncedJob| step(j.index()))),
        )?;
        let s = shared.clone();
        let audit = spawn(
            "mf-store-audit",
            Box::new(move || audit_stage(audit_rx, on_done, &s)),
        )?;
        Ok(CommitPipeline {
            tx: Some(tx),
            shared,
            threads: vec![sync, index, audit],
        })
    }

    /// Batches submitted and not yet reported.
    pub fn in_flight(&self) -> usize {
        self.shared.counts().in_flight
    }

    /// True once a stage failed; every later batch is refused.
    pub fn failed(&self) -> bool {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// Hands a closed batch to the first stage, waiting while [`MAX_IN_FLIGHT`] batches
    /// are in flight. Refused once a stage failed (the failure is reported through the
    /// callback, not here).
    pub fn submit(&self, job: CommitJob) -> Result<(), PipelineStopped> {
        let mut c = self.shared.counts();
        while c.in_flight >= MAX_IN_FLIGHT && !self.failed() {
            c = self.shared.fell.wait(c).unwrap_or_else(|p| p.into_inner());
        }
        if self.failed() {
            return Err(PipelineStopped);
        }
        let tx = self.tx.as_ref().ok_or(PipelineStopped)?;
        c.in_flight += 1;
        drop(c);
        if tx.send(job).is_err() {
            // The first stage is gone (it panicked): nothing will report this batch.
            let mut c = self.shared.counts();
            c.in_flight -= 1;
            return Err(PipelineStopped);
        }
        Ok(())
    }

    /// Waits until every submitted batch has been reported (or dropped after a failure),
    /// and stops the threads. Err if a stage failed (the failure was reported through the
    /// callback).
    pub fn finish(mut self) -> Result<(), PipelineStopped> {
        self.stop();
        if self.failed() {
            return Err(PipelineStopped);
        }
        Ok(())
    }

    fn stop(&mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            // A stage that panicked has already dropped its batches; nothing to add.
            let _ = t.join();
        }
    }
}

impl Drop for CommitPipeline {
    fn drop(&mut self) {
        // A session's segments may be handed to the next session only once every batch
        // that wrote to them is durable or dropped.
        self.stop();
    }
}

/// Maps a step's result onto what flows to the next stage.
fn step<T>(r: Result<T, StoreError>) -> Item<T> {
    match r {
        Ok(t) => Item::Job(t),
        Err(e) => Item::Failed(e),
    }
}

fn sync_stage(rx: Receiver<CommitJob>, tx: Sender<Item<SyncedJob>>, shared: &Shared) {
    let mut stopped = false;
    for job in rx {
        if stopped {
            drop(job);
            shared.done();
            continue;
        }
        let item = step(job.sync());
        if let Item::Failed(_) = &item {
            stopped = true;
            shared.failed.store(true, Ordering::SeqCst);
            // The failed batch is reported as the failure, not as a batch.
            shared.done();
        }
        if tx.send(item).is_err() {
            return;
        }
    }
}

/// A middle stage: applies `f` to each batch in order; after a failure (its own or one
/// passed on), drops every later batch.
fn next_stage<A, B>(
    rx: Receiver<Item<A>>,
    tx: Sender<Item<B>>,
    shared: &Shared,
    f: impl Fn(A) -> Item<B>,
) {
    let mut stopped = false;
    for item in rx {
        let out = match item {
            Item::Job(_) if stopped => {
                shared.done();
                continue;
            }
            Item::Job(j) => {
                let out = f(j);
                if let Item::Failed(_) = &out {
                    // This stage's own failure: its batch ends here, reported as the
                    // failure.
                    shared.failed.store(true, Ordering::SeqCst);
                    shared.done();
                }
                out
            }
            // Only the first failure is reported; an earlier stage's comes after this
            // stage's own if this one failed first.
            Item::Failed(_) if stopped => continue,
            Item::Failed(e) => Item::Failed(e),
        };
        if let Item::Failed(_) = &out {
            stopped = true;
        }
        if tx.send(out).is_err() {
            return;
        }
    }
}

fn audit_stage<F>(rx: Receiver<Item<IndexedJob>>, mut on_done: F, shared: &Shared)
where
    F: FnMut(Result<CommitOutcome, StoreError>),
{
    let mut stopped = false;
    for item in rx {
        match item {
            Item::Job(_) if stopped => shared.done(),
            Item::Job(j) => match j.audit() {
                Ok(o) => {
                    on_done(Ok(o));
                    shared.done();
                }
                Err(e) => {
                    stopped = true;
                    shared.failed.store(true, Ordering::SeqCst);
                    on_done(Err(e));
                    shared.done();
                }
            },
            Item::Failed(e) if !stopped => {
                stopped = true;
                on_done(Err(e));
            }
            Item::Failed(_) => {}
        }
    }
}

#[cfg(test)]
mod tests;
