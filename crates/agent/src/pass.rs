//! One pass of a move: list the source, skip what the checkpoint says is done, stream
//! the rest, and record every acknowledgement.
//!
//! Three workers run at once: a blocking producer that reads source files into framed
//! buffers, an async writer that sends them, and an async reader that takes ACK, REJECT
//! and ERROR frames. A checkpoint thread makes acknowledgements durable in the state
//! directory. Buffers pass through a bounded channel, so memory stays bounded whatever
//! the message sizes: a 1 GiB message is read, framed and sent 256 KiB at a time.

use crate::filter::{Filter, Filtered, SourcePrior};
use crate::plan::{self, Keep, Op};
use crate::source::{Listing, Source, SourceItem};
use crate::state::{CheckpointEntry, EntryKind, StateDir};
use crate::throttle::{BackoffPolicy, Throttles};
use crate::{client::Endpoint, AgentError};
use mailferry_core::frame::{self, AckStatus, Frame, FrameBuffer, MessageHeader};
use mailferry_core::profile::Profile;
use mailferry_core::report::{BadItem, FolderStats, ItemWarning};
use mailferry_core::{FolderName, MailboxAddr, MoveId};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a pass needs.
pub struct PassConfig {
    /// Where messages come from.
    pub source: Box<dyn Source>,
    /// Destination mailbox.
    pub mailbox: MailboxAddr,
    /// The agent's state directory for this move.
    pub state_dir: PathBuf,
    /// The proxy.
    pub endpoint: Endpoint,
    /// Migration profile.
    pub profile: Profile,
    /// Read rate limits: the move's own (its profile's `[throttle]`) and any shared
    /// with other moves of the same endpoint.
    pub throttle: Throttles,
    /// The fencing number of the lease this pass runs under (a worker's): sent in OPEN,
    /// and the store refuses the session once a newer lease owns the mailbox. `None`
    /// (every pass without a lease) sends exactly what it always did.
    pub fence: Option<u64>,
}

/// Live counters, readable while the pass runs (for progress bars).
#[derive(Debug, Default)]
pub struct Progress {
    /// Messages to consider in this pass.
    pub items_total: AtomicU64,
    /// Messages settled (acknowledged, skipped or bad).
    pub items_done: AtomicU64,
    /// Bytes to consider.
    pub bytes_total: AtomicU64,
    /// Bytes settled.
    pub bytes_done: AtomicU64,
    /// Messages durably acknowledged by the store.
    pub items_acked: AtomicU64,
    /// Bytes of messages durably acknowledged.
    pub bytes_acked: AtomicU64,
    /// Nanoseconds the reader waited for a throttle (`--max-bytes-per-second`, ...).
    pub throttled_nanos: AtomicU64,
    /// Nanoseconds spent waiting because a server asked to (HTTP 429/503 with
    /// `Retry-After`, IMAP `[THROTTLED]`).
    pub server_backoff_nanos: AtomicU64,
}

/// The result of one pass.
#[derive(Debug, Clone)]
pub struct PassOutcome {
    /// The move's id (the same for every pass).
    pub move_id: MoveId,
    /// The source as described by the source.
    pub source: String,
    /// Messages found at the source (movable ones plus bad ones).
    pub items_total: u64,
    /// Newly stored in this pass.
    pub items_moved: u64,
    /// Not stored again: already acknowledged in an earlier pass, or found in the store.
    pub items_skipped_duplicate: u64,
    /// Of those, skipped without being read, because the checkpoint had them.
    pub skipped_by_checkpoint: u64,
    /// Removed at the destination because they are gone at the source.
    pub items_deleted: u64,
    /// Flags changed at the destination because they changed at the source.
    pub items_flags_updated: u64,
    /// Recognised after the source renumbered them (UIDVALIDITY change), not re-sent.
    pub items_remapped: u64,
    /// Items not moved, each named with its reason.
    pub bad_items: Vec<BadItem>,
    /// Items the profile's filter left at the source (over the size limit, ...), listed
    /// for the move record and the limits; not errors.
    pub skipped_items: Vec<mailferry_core::report::SkippedItem>,
    /// Items stored in this pass that are not plain RFC 5322 messages ([`oddities`]);
    /// not errors, not counted by any limit.
    pub warnings: Vec<ItemWarning>,
    /// Bytes newly stored.
    pub bytes_moved: u64,
    /// Seconds the producer spent reading the source.
    pub source_read_secs: f64,
    /// Seconds the writer spent writing frames to the TLS connection.
    pub transport_secs: f64,
    /// Seconds the reader waited for the writer or the window.
    pub stalled_secs: f64,
    /// Seconds the reader waited for the move's throttles.
    pub throttled_secs: f64,
    /// Seconds spent waiting because the proxy or the source server asked to.
    pub server_backoff_secs: f64,
    /// Source-side receipt: Merkle root over every acknowledged message of the move.
    pub receipt_root: String,
    /// How many messages the receipt covers.
    pub receipt_items: u64,
    /// The source log's head signed after `pass.finished` (`None` if signing is stopped:
    /// `audit.head` shows a cut or replaced log).
    pub source_head: Option<mailferry_core::report::SignedHead>,
    /// Median time from starting to read a message to its durable acknowledgement.
    pub latency_ms_p50: f64,
    /// 99th percentile of the same.
    pub latency_ms_p99: f64,
    /// Counts per folder.
    pub per_folder: BTreeMap<String, FolderStats>,
}

/// A message the store has not acknowledged yet.
struct InFlight {
    item: SourceItem,
    /// When the agent started reading it: ACK time minus this is the message's latency.
    started: Instant,
    sha256: String,
    local_error: Option<String>,
    /// What is odd about it ([`oddities`]): reported as a warning once it is stored.
    warning: Option<String>,
}

/// What a sequence number stands for until its acknowledgement.
enum Pending {
    Message(InFlight),
    Op(Op),
}

type InFlightMap = Arc<Mutex<HashMap<u64, Pending>>>;

/// The window of unacknowledged body bytes (wire protocol §3.2): the producer waits
/// when it is full; ACKs and REJECTs free it. It bounds what a failed session must
/// resend, not memory (unacknowledged bytes are on the store's disk, not here).
struct Window {
    state: Mutex<(u64, bool)>,
    freed: Condvar,
    limit: u64,
}

impl Window {
    fn new(limit: u64) -> Self {
        Window {
            state: Mutex::new((0, false)),
            freed: Condvar::new(),
            limit,
        }
    }

    /// Takes `n` bytes of window without waiting; false if it is full.
    fn try_acquire(&self, n: u64) -> bool {
        let mut st = self.state.lock().expect("window lock");
        // A message larger than the whole window goes alone.
        if st.0 == 0 || st.0 + n <= self.limit {
            st.0 += n;
            true
        } else {
            false
        }
    }

    /// Waits for `n` bytes of window; false if the session ended meanwhile.
    fn acquire(&self, n: u64) -> bool {
        let mut st = self.state.lock().expect("window lock");
        while !st.1 && st.0 > 0 && st.0 + n > self.limit {
            st = self.freed.wait(st).expect("window lock");
        }
        if st.1 {
            return false;
        }
        st.0 += n;
        true
    }

    fn release(&self, n: u64) {
        let mut st = self.state.lock().expect("window lock");
        st.0 = st.0.saturating_sub(n);
        self.freed.notify_all();
    }

    fn close(&self) {
        self.state.lock().expect("window lock").1 = true;
        self.freed.notify_all();
    }

    /// Sleeps `d` (a throttle's wait), or less if the session ends meanwhile; false if
    /// it ended.
    fn pause(&self, d: std::time::Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut st = self.state.lock().expect("window lock");
        loop {
            let now = Instant::now();
            if st.1 || now >= deadline {
                return !st.1;
            }
            st = self
                .freed
                .wait_timeout(st, deadline - now)
                .expect("window lock")
                .0;
        }
    }
}

/// What is odd about a message, judged from its first read buffer `head` alone (the
/// whole message when it is small), or `None` for a plain RFC 5322 message.
///
/// Such a message is still stored byte for byte: the source serves it as a message,
/// and a migration keeps what the source holds. The reason goes into the report as a
/// warning. The check is cheap on purpose (PERF.md: headers only, no full parse): the
/// first line must be a header field (after an optional mbox `From ` line), the header
/// lines must end in LF or CRLF and be 7-bit or UTF-8 (RFC 6532), and the buffer must
/// hold no NUL byte. Oddities past the first buffer are not looked for.
pub fn oddities(head: &[u8]) -> Option<String> {
    let mut found: Vec<&str> = Vec::new();
    let mut rest = head;
    if rest.starts_with(b"From ") {
        rest = match rest.iter().position(|&b| b == b'\n') {
            Some(nl) => &rest[nl + 1..],
            None => &[],
        };
    }
    if !is_header_field(first_line(rest)) {
        found.push("no header block (the first line is not a header field)");
    } else {
        let (header, bare_cr) = header_block(rest);
        if bare_cr {
            found.push("bare CR line ends (CR without LF)");
        }
        // A character cut by the end of the buffer is not an error.
        if !header.is_ascii() && std::str::from_utf8(header).is_err_and(|e| e.error_len().is_some())
        {
            found.push("8-bit header bytes that are not UTF-8");
        }
    }
    if head.contains(&0) {
        found.push("NUL bytes (binary data)");
    }
    if found.is_empty() {
        None
    } else {
        Some(format!(
            "not a plain RFC 5322 message: {}; stored byte for byte",
            found.join(", ")
        ))
    }
}

/// The header block at the start of `b` (up to and with the first empty line, or all of
/// `b`), and whether one of its lines has a CR that does not end it.
fn header_block(b: &[u8]) -> (&[u8], bool) {
    let mut bare_cr = false;
    let mut at = 0;
    while at < b.len() {
        let end = b[at..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(b.len(), |p| at + p + 1);
        let line = &b[at..end];
        at = end;
        let text = match line.strip_suffix(b"\n") {
            Some(t) => t,
            // Cut by the end of the buffer: a CR there may be followed by LF in the next.
            None => line,
        };
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        bare_cr |= text.contains(&b'\r');
        if text.is_empty() && line.ends_with(b"\n") {
            break;
        }
    }
    (&b[..at], bare_cr)
}

fn first_line(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == b'\n').unwrap_or(b.len());
    &b[..end]
}

/// `Name: value`: a name of printable ASCII without space, then a colon.
fn is_header_field(line: &[u8]) -> bool {
    match line.iter().position(|&b| b == b':') {
        Some(colon) if colon > 0 => line[..colon].iter().all(|&b| (33..=126).contains(&b)),
        _ => false,
    }
}

/// What listing and planning hand to the rest of the pass.
struct Planned {
    state: StateDir,
    listing: Listing,
    filtered: Filtered,
    /// Items the profile keeps, before planning.
    kept_count: u64,
    plan: plan::Plan,
    source: Box<dyn Source>,
}

/// Opens the state directory, lists the source, applies the profile and plans against
/// the checkpoint, on a blocking thread (all of it is file and SQLite work).
async fn list_and_plan(
    source: Box<dyn Source>,
    state_dir: PathBuf,
    mailbox: MailboxAddr,
    describe: String,
    profile: Profile,
) -> Result<Planned, AgentError> {
    tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        let mut state = StateDir::open(&state_dir, &mailbox, &describe)?;
        let opened = t0.elapsed();
        let filter = Filter::new(&profile, mailferry_core::unix_now())?;
        let prior = SourcePrior::new(&filter, state.checkpoint());
        let listed = source.list(&prior);
        prior.finish()?;
        let mut listing = listed?;
        let listed_at = t0.elapsed();
        // The profile decides what moves, where to and under which id; the planner
        // then works in destination terms only.
        let mut filtered = filter.apply_with_roles(
            std::mem::take(&mut listing.items),
            std::mem::take(&mut listing.delta),
            &listing.roles,
        );
        let keep = Keep::from_listing(&filtered, &listing.incomplete);
        let kept = std::mem::take(&mut filtered.kept);
        let kept_count = kept.len() as u64;
        let plan = plan::plan(state.checkpoint(), kept, &keep, &filtered.delta)?;
        // Renumbered messages are recognised locally: the destination keeps them
        // under the id it knows, nothing is sent.
        if !plan.remapped.is_empty() {
            state.record(&plan.remapped)?;
        }
        tracing::debug!(
            open_ms = opened.as_millis() as u64,
            list_ms = (listed_at - opened).as_millis() as u64,
            plan_ms = (t0.elapsed() - listed_at).as_millis() as u64,
            replay = ?state.replay(),
            listed = kept_count,
            delta_folders = filtered.delta.len(),
            "pass planned"
        );
        Ok(Planned {
            state,
            listing,
            filtered,
            kept_count,
            plan,
            source,
        })
    })
    .await
    .expect("listing thread panicked")
}

/// Appends one audit event on a blocking thread and gives the state back.
async fn audit_event(
    mut state: StateDir,
    event: &'static str,
    data: serde_json::Value,
) -> Result<StateDir, AgentError> {
    tokio::task::spawn_blocking(move || state.event(event, data).map(|_| state))
        .await
        .expect("audit thread panicked")
}

/// Runs one pass.
pub async fn run_pass(cfg: PassConfig, progress: Arc<Progress>) -> Result<PassOutcome, AgentError> {
    let PassConfig {
        source,
        mailbox,
        state_dir,
        endpoint,
        profile,
        throttle,
        fence,
    } = cfg;
    let waited_before = (
        progress.throttled_nanos.load(Ordering::Relaxed),
        progress.server_backoff_nanos.load(Ordering::Relaxed),
    );
    let describe = source.describe();
    let Planned {
        state,
        listing,
        filtered,
        kept_count,
        plan,
        source,
    } = list_and_plan(
        source,
        state_dir,
        mailbox.clone(),
        describe.clone(),
        profile.clone(),
    )
    .await?;
    let mut bad_items = listing.bad;
    let incomplete = listing.incomplete;
    let items_total =
        kept_count + plan.unlisted + (filtered.skipped.len() + bad_items.len()) as u64;
    let skipped_items: Vec<mailferry_core::report::SkippedItem> = filtered
        .skipped
        .iter()
        .filter_map(|s| s.to_report())
        .collect();
    let items_remapped = plan.remapped.len() as u64;
    let skipped_by_checkpoint = plan.unchanged + items_remapped;
    let todo = plan.send;
    let ops = plan.ops;
    let cursors = listing.cursors;
    progress
        .items_total
        .store((todo.len() + ops.len()) as u64, Ordering::Relaxed);
    progress
        .bytes_total
        .store(todo.iter().map(|i| i.size).sum(), Ordering::Relaxed);
    let move_id = state.identity.move_id;
    let found_per_folder = found_per_folder(&todo);
    let started = json!({
        "move_id": move_id.to_string(),
        "found": items_total,
        "to_send": todo.len(),
        "to_change": ops.len(),
        "already_acknowledged": skipped_by_checkpoint,
    });
    let state = audit_event(state, "pass.started", started).await?;

    let work = Work {
        source,
        filtered,
        items: todo,
        ops,
        move_id,
        frame_bytes: profile.transport.frame_bytes,
        throttle,
        fence,
    };
    let (state, produced, transport_secs, tally) =
        stream(&endpoint, &mailbox, &profile, &progress, work, state).await?;
    let Tally {
        items_moved,
        bytes_moved,
        dup_in_store,
        items_deleted,
        items_flags_updated,
        rejected,
        warnings,
        forgotten,
        latencies,
        mut per_folder,
    } = tally;
    bad_items.extend(produced.bad);
    bad_items.extend(rejected);
    bad_items.extend(forgotten);
    // A cursor says "the source is as the checkpoint has it": only true after a pass in
    // which nothing failed, so an item that failed is looked at again next time.
    let clean = bad_items.is_empty() && incomplete.is_empty();
    count_per_folder(&mut per_folder, found_per_folder, &bad_items);
    let (state, (receipt_root, receipt_items)) = receipt(state).await?;
    let finished = json!({
        "move_id": move_id.to_string(),
        "moved": items_moved,
        "deleted": items_deleted,
        "flags_updated": items_flags_updated,
        "remapped": items_remapped,
        "duplicates": skipped_by_checkpoint + dup_in_store,
        "bad": bad_items.len(),
        "warnings": warnings.len(),
        "bytes_moved": bytes_moved,
        "receipt_root": receipt_root,
        "receipt_items": receipt_items,
    });
    let source_head = finish_audit(
        state,
        &bad_items,
        &warnings,
        clean.then_some(cursors),
        finished,
    )
    .await?;
    let (latency_ms_p50, latency_ms_p99) = percentiles(latencies);
    Ok(PassOutcome {
        receipt_root,
        receipt_items,
        source_head,
        latency_ms_p50,
        latency_ms_p99,
        per_folder,
        move_id,
        source: describe,
        items_total,
        items_moved,
        items_skipped_duplicate: skipped_by_checkpoint + dup_in_store,
        skipped_by_checkpoint,
        items_deleted,
        items_flags_updated,
        items_remapped,
        bad_items,
        skipped_items,
        warnings,
        bytes_moved,
        source_read_secs: produced.read_secs,
        transport_secs,
        stalled_secs: produced.stalled_secs,
        throttled_secs: secs_since(&progress.throttled_nanos, waited_before.0),
        server_backoff_secs: secs_since(&progress.server_backoff_nanos, waited_before.1),
    })
}

/// How many items of each folder a pass sends.
fn found_per_folder<'a>(todo: impl IntoIterator<Item = &'a SourceItem>) -> BTreeMap<String, u64> {
    let mut found: BTreeMap<String, u64> = BTreeMap::new();
    for item in todo {
        *found.entry(item.folder.to_string()).or_default() += 1;
    }
    found
}

/// Adds what was found and what went bad to the per-folder figures of the report.
fn count_per_folder(
    per_folder: &mut BTreeMap<String, FolderStats>,
    found: BTreeMap<String, u64>,
    bad_items: &[BadItem],
) {
    for (folder, n) in found {
        per_folder.entry(folder).or_default().found = n;
    }
    for b in bad_items {
        let folder = b.item.rsplit_once('/').map(|(f, _)| f).unwrap_or(&b.item);
        per_folder.entry(folder.to_string()).or_default().bad += 1;
    }
}

/// Streams the work to the proxy and reads its answers until it closes the pass:
/// returns the state (every acknowledgement recorded), what the producer and the reader
/// counted, and the writer's busy seconds.
async fn stream(
    endpoint: &Endpoint,
    mailbox: &MailboxAddr,
    profile: &Profile,
    progress: &Arc<Progress>,
    work: Work,
    state: StateDir,
) -> Result<(StateDir, Produced, f64, Tally), AgentError> {
    let policy = BackoffPolicy::from_profile(&profile.throttle);
    let (stream, backoff) = endpoint
        .open_fenced_backoff(mailbox, work.fence, &policy)
        .await?;
    add_nanos(&progress.server_backoff_nanos, backoff);
    let (mut rd, wr) = tokio::io::split(stream);

    let inflight: InFlightMap = Arc::default();
    let window = Arc::new(Window::new(8 * profile.commit.max_bytes));
    let (buf_tx, buf_rx) = flume::bounded::<Vec<u8>>(8);
    let out = Output {
        tx: buf_tx,
        inflight: inflight.clone(),
        window: window.clone(),
        progress: progress.clone(),
    };
    let fence = work.fence;
    let workers = Workers::start(work, out, wr, buf_rx, state);

    let mut reader = Reader {
        inflight: &inflight,
        window: &window,
        progress,
        cp_tx: &workers.cp_tx,
        url: &endpoint.url,
        fenced: fence.map(|f| (mailbox.as_str(), f)),
        tally: Tally::default(),
    };
    let session_result = reader.run(&mut rd).await;
    let tally = reader.tally;
    let (state, produced, transport_secs) = workers.finish(session_result, &window).await?;
    let left = inflight.lock().expect("inflight lock").len();
    if left > 0 {
        return Err(transport_error(
            &endpoint.url,
            format!(
                "the proxy closed the pass with {left} messages unacknowledged; run again to resume"
            ),
        ));
    }
    Ok((state, produced, transport_secs, tally))
}

/// The 50th and 99th percentiles of `latencies` (0 when there are none).
fn percentiles(mut latencies: Vec<f64>) -> (f64, f64) {
    latencies.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            0.0
        } else {
            latencies[((latencies.len() - 1) as f64 * p).round() as usize]
        }
    };
    (pct(0.50), pct(0.99))
}

/// What the producer thread reads and frames.
struct Work {
    source: Box<dyn Source>,
    filtered: Filtered,
    items: Vec<SourceItem>,
    ops: Vec<Op>,
    move_id: MoveId,
    frame_bytes: usize,
    /// Read rate limits the producer obeys.
    throttle: Throttles,
    /// The lease's fencing number, for OPEN.
    fence: Option<u64>,
}

/// The pass's workers besides the reader: the producer thread, the writer task and the
/// checkpoint thread, with the channel that feeds the last.
struct Workers<W> {
    producer: std::thread::JoinHandle<Produced>,
    writer: tokio::task::JoinHandle<std::io::Result<(W, std::time::Duration)>>,
    checkpointer: std::thread::JoinHandle<Result<StateDir, AgentError>>,
    cp_tx: flume::Sender<Vec<CheckpointEntry>>,
}

// === impl Workers ===

impl<W: tokio::io::AsyncWrite + Unpin + Send + 'static> Workers<W> {
    fn start(
        work: Work,
        out: Output,
        mut wr: W,
        buf_rx: flume::Receiver<Vec<u8>>,
        state: StateDir,
    ) -> Workers<W> {
        let producer = std::thread::Builder::new()
            .name("mailferry-read".into())
            .spawn(move || {
                let progress = out.progress.clone();
                let Work {
                    source,
                    filtered,
                    items,
                    ops,
                    move_id,
                    frame_bytes,
                    throttle,
                    fence,
                } = work;
                let out = Producer::new(out, throttle, frame_bytes);
                let produced = out.produce(&*source, &filtered, items, ops, move_id, fence);
                // The source's own waits for its server, listing included.
                add_nanos(&progress.server_backoff_nanos, source.server_backoff());
                produced
            })
            .expect("spawning the reader thread");
        let writer = tokio::spawn(async move {
            let mut busy = std::time::Duration::ZERO;
            while let Ok(buf) = buf_rx.recv_async().await {
                let t0 = Instant::now();
                wr.write_all(&buf).await?;
                busy += t0.elapsed();
            }
            wr.flush().await?;
            Ok::<_, std::io::Error>((wr, busy))
        });
        // Checkpoints are fsynced on their own thread so acknowledgements keep flowing.
        let (cp_tx, cp_rx) = flume::unbounded::<Vec<CheckpointEntry>>();
        let checkpointer = std::thread::Builder::new()
            .name("mailferry-checkpoint".into())
            .spawn(move || {
                let mut state = state;
                for batch in cp_rx.iter() {
                    state.record(&batch)?;
                }
                Ok::<_, AgentError>(state)
            })
            .expect("spawning the checkpoint thread");
        Workers {
            producer,
            writer,
            checkpointer,
            cp_tx,
        }
    }

    /// Stops the workers once the reader is done: on success waits for all three and
    /// returns the state (every checkpoint recorded), what the producer counted and the
    /// writer's busy seconds; on failure aborts the writer and returns the error.
    async fn finish(
        self,
        session_result: Result<(), AgentError>,
        window: &Window,
    ) -> Result<(StateDir, Produced, f64), AgentError> {
        window.close();
        drop(self.cp_tx);
        let mut transport_secs = 0.0;
        let produced = match session_result {
            Ok(()) => {
                if let Ok(Ok((_, busy))) = self.writer.await {
                    transport_secs = busy.as_secs_f64();
                }
                self.producer.join().expect("reader thread panicked")
            }
            Err(e) => {
                self.writer.abort();
                let _ = self.checkpointer.join();
                return Err(e);
            }
        };
        let state = self
            .checkpointer
            .join()
            .expect("checkpoint thread panicked")?;
        Ok((state, produced, transport_secs))
    }
}

/// The source-side receipt (Merkle root and count over every acknowledged message), on
/// a blocking thread.
async fn receipt(mut state: StateDir) -> Result<(StateDir, (String, u64)), AgentError> {
    tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        let receipt = state.receipt();
        tracing::debug!(
            receipt_ms = t0.elapsed().as_millis() as u64,
            "source receipt"
        );
        receipt.map(|r| (state, r))
    })
    .await
    .expect("audit thread panicked")
}

/// Closes the pass in the audit log: every bad item and warning, the cursors of a clean
/// pass (`None` otherwise), then `pass.finished`; signs the head that covers them.
async fn finish_audit(
    mut state: StateDir,
    bad_items: &[BadItem],
    warnings: &[ItemWarning],
    cursors: Option<BTreeMap<FolderName, String>>,
    finished: serde_json::Value,
) -> Result<Option<mailferry_core::report::SignedHead>, AgentError> {
    let skipped: Vec<serde_json::Value> = bad_items
        .iter()
        .map(|b| json!({ "item": b.item, "reason": b.reason }))
        .collect();
    let warned: Vec<serde_json::Value> = warnings
        .iter()
        .map(|w| json!({ "item": w.item, "reason": w.reason }))
        .collect();
    tokio::task::spawn_blocking(move || {
        for s in skipped {
            state.event("item.skipped", s)?;
        }
        for w in warned {
            state.event("item.warning", w)?;
        }
        if let Some(cursors) = cursors {
            state.record_cursors(&cursors)?;
        }
        state.event("pass.finished", finished)?;
        state.sign_head()
    })
    .await
    .expect("audit thread panicked")
}

fn transport_error(url: &str, reason: String) -> AgentError {
    AgentError::Transport {
        url: url.to_string(),
        reason,
    }
}

/// What the reader counts from the store's answers.
#[derive(Default)]
struct Tally {
    items_moved: u64,
    bytes_moved: u64,
    dup_in_store: u64,
    items_deleted: u64,
    items_flags_updated: u64,
    rejected: Vec<BadItem>,
    warnings: Vec<ItemWarning>,
    forgotten: Vec<BadItem>,
    latencies: Vec<f64>,
    per_folder: BTreeMap<String, FolderStats>,
}

/// The reading side of a session: takes ACK, REJECT and ERROR frames, settles what they
/// answer, and hands acknowledged entries to the checkpoint thread.
struct Reader<'a> {
    inflight: &'a InFlightMap,
    window: &'a Window,
    progress: &'a Progress,
    cp_tx: &'a flume::Sender<Vec<CheckpointEntry>>,
    url: &'a str,
    /// A fenced pass's mailbox and fencing number: an ERROR 412 is then
    /// [`AgentError::Fenced`].
    fenced: Option<(&'a str, u64)>,
    tally: Tally,
}

// === impl Reader ===

impl Reader<'_> {
    /// Reads frames until the proxy closes the pass (`Ok`) or the session fails.
    async fn run<R: tokio::io::AsyncRead + Unpin>(&mut self, rd: &mut R) -> Result<(), AgentError> {
        let mut fb = FrameBuffer::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = rd
                .read(&mut buf)
                .await
                .map_err(|e| self.err(format!("connection lost: {e}")))?;
            if n == 0 {
                return Err(self.err(
                    "the proxy closed the connection before confirming the pass; \
                     run the same command again to resume"
                        .into(),
                ));
            }
            fb.push(&buf[..n]);
            while let Some(f) = fb.next_frame()? {
                match f {
                    Frame::Ack(items) => self.ack(items)?,
                    Frame::Reject { seq, reason } => self.reject(seq, reason),
                    Frame::Error { code, message } => {
                        return Err(match self.fenced {
                            Some((mailbox, fence)) if code == frame::ERROR_FENCED => {
                                AgentError::Fenced {
                                    mailbox: mailbox.to_string(),
                                    fence,
                                    message,
                                }
                            }
                            _ => AgentError::Session { code, message },
                        })
                    }
                    Frame::Closed => return Ok(()),
                    other => {
                        return Err(self.err(format!("unexpected frame from the proxy: {other:?}")))
                    }
                }
            }
        }
    }

    fn err(&self, reason: String) -> AgentError {
        transport_error(self.url, reason)
    }

    /// Settles an ACK's items and sends their checkpoint entries, in ACK order.
    fn ack(&mut self, items: Vec<(u64, AckStatus)>) -> Result<(), AgentError> {
        let mut entries = Vec::with_capacity(items.len());
        let mut map = self.inflight.lock().expect("inflight lock");
        for (seq, status) in items {
            let entry = match map.remove(&seq) {
                Some(Pending::Message(m)) => self.message_acked(seq, m, status)?,
                Some(Pending::Op(op)) => self.op_acked(seq, op, status)?,
                None => return Err(self.err(format!("ACK for unknown message sequence {seq}"))),
            };
            entries.push(entry);
        }
        drop(map);
        self.cp_tx.send(entries).ok();
        Ok(())
    }

    fn op_acked(
        &mut self,
        seq: u64,
        op: Op,
        status: AckStatus,
    ) -> Result<CheckpointEntry, AgentError> {
        self.progress.items_done.fetch_add(1, Ordering::Relaxed);
        let t = &mut self.tally;
        let kind = match (&op, status) {
            (Op::Delete { .. }, AckStatus::Applied) | (Op::Delete { .. }, AckStatus::NotFound) => {
                t.items_deleted += 1;
                EntryKind::Deleted
            }
            (Op::SetFlags { .. }, AckStatus::Applied) => {
                t.items_flags_updated += 1;
                EntryKind::Flags
            }
            (Op::SetFlags { .. }, AckStatus::NotFound) => {
                t.forgotten.push(BadItem {
                    item: op.name(),
                    reason: "the destination no longer holds this message (removed there?); \
                             it will be sent again by the next pass"
                        .into(),
                });
                EntryKind::Forgotten
            }
            (_, other) => {
                return Err(self.err(format!("ACK status {other:?} for a change, sequence {seq}")))
            }
        };
        Ok(op.entry(kind))
    }

    fn message_acked(
        &mut self,
        seq: u64,
        done: InFlight,
        status: AckStatus,
    ) -> Result<CheckpointEntry, AgentError> {
        self.window.release(done.item.size);
        let t = &mut self.tally;
        t.latencies.push(done.started.elapsed().as_secs_f64() * 1e3);
        self.progress.items_acked.fetch_add(1, Ordering::Relaxed);
        self.progress
            .bytes_acked
            .fetch_add(done.item.size, Ordering::Relaxed);
        let folder = t
            .per_folder
            .entry(done.item.folder.to_string())
            .or_default();
        let kind = match status {
            AckStatus::Stored => {
                t.items_moved += 1;
                t.bytes_moved += done.item.size;
                folder.moved += 1;
                folder.bytes_moved += done.item.size;
                EntryKind::Stored
            }
            AckStatus::Duplicate => {
                t.dup_in_store += 1;
                folder.duplicate += 1;
                EntryKind::Duplicate
            }
            other => {
                return Err(self.err(format!(
                    "ACK status {other:?} for a message, sequence {seq}"
                )))
            }
        };
        let item = done.item;
        if let Some(reason) = done.warning {
            t.warnings.push(ItemWarning {
                item: item.name(),
                folder: item.folder.to_string(),
                source_id: item.source_id.to_string(),
                reason,
            });
        }
        Ok(CheckpointEntry {
            kind,
            stored_as: item.source_id.clone(),
            folder: item.folder,
            source_id: item.source_id,
            sha256: done.sha256,
            size: item.size,
            flags: item.flags,
            internal_date: item.internal_date,
            ident: item.ident,
        })
    }

    fn reject(&mut self, seq: u64, reason: String) {
        let done = self.inflight.lock().expect("inflight lock").remove(&seq);
        match done {
            Some(Pending::Message(done)) => {
                self.window.release(done.item.size);
                self.tally.rejected.push(BadItem {
                    item: done.item.name(),
                    reason: done.local_error.unwrap_or(reason),
                });
            }
            Some(Pending::Op(op)) => self.tally.rejected.push(BadItem {
                item: op.name(),
                reason: format!("the destination refused the change: {reason}"),
            }),
            None => {}
        }
    }
}

fn add_nanos(counter: &AtomicU64, d: std::time::Duration) {
    counter.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
}

fn secs_since(counter: &AtomicU64, before: u64) -> f64 {
    counter.load(Ordering::Relaxed).saturating_sub(before) as f64 / 1e9
}

struct Produced {
    bad: Vec<BadItem>,
    read_secs: f64,
    stalled_secs: f64,
}

/// Fills `out`, or reads to EOF; returns how many bytes were read. Interrupted reads
/// are retried.
pub(crate) fn read_full(r: &mut dyn Read, out: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < out.len() {
        match r.read(&mut out[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Where the producer's frames and bookkeeping go.
struct Output {
    tx: flume::Sender<Vec<u8>>,
    inflight: InFlightMap,
    window: Arc<Window>,
    progress: Arc<Progress>,
}

/// Sends the buffered frames to the writer; false if the session is gone.
fn ship(tx: &flume::Sender<Vec<u8>>, out: &mut Vec<u8>, cap: usize) -> bool {
    tx.send(std::mem::replace(out, Vec::with_capacity(cap)))
        .is_ok()
}

/// The session ended while the producer was sending (the writer or the window closed);
/// it stops and reports what it has.
struct SessionGone;

/// The producer's state while it reads the source into frames: where the frames go, the
/// buffer being filled, and what it has counted so far.
struct Producer {
    tx: flume::Sender<Vec<u8>>,
    inflight: InFlightMap,
    window: Arc<Window>,
    progress: Arc<Progress>,
    throttle: Throttles,
    frame_bytes: usize,
    /// Capacity of a fresh frame buffer.
    cap: usize,
    /// Frames not yet handed to the writer.
    out: Vec<u8>,
    bad: Vec<BadItem>,
    read_time: std::time::Duration,
    stall_time: std::time::Duration,
}

/// What streaming one message's body found.
struct Body {
    /// Bytes read.
    total: u64,
    hasher: ring::digest::Context,
    local_error: Option<String>,
    warning: Option<String>,
}

// === impl Producer ===

impl Producer {
    fn new(o: Output, throttle: Throttles, frame_bytes: usize) -> Producer {
        let cap = frame_bytes * 2 + 4096;
        Producer {
            tx: o.tx,
            inflight: o.inflight,
            window: o.window,
            progress: o.progress,
            throttle,
            frame_bytes,
            cap,
            out: Vec::with_capacity(cap),
            bad: Vec::new(),
            read_time: std::time::Duration::ZERO,
            stall_time: std::time::Duration::ZERO,
        }
    }

    /// Frames OPEN, every item, every change and CLOSE, and hands them to the writer.
    fn produce(
        mut self,
        source: &dyn Source,
        filtered: &Filtered,
        items: Vec<SourceItem>,
        ops: Vec<Op>,
        move_id: MoveId,
        fence: Option<u64>,
    ) -> Produced {
        Frame::Open {
            version: frame::PROTOCOL_VERSION,
            move_id,
            fence,
        }
        .encode(&mut self.out);
        // A gone session is not an error here: the reader reports why it ended.
        let _ = self.run(source, filtered, items, ops);
        Produced {
            bad: self.bad,
            read_secs: self.read_time.as_secs_f64(),
            stalled_secs: self.stall_time.as_secs_f64(),
        }
    }

    fn run(
        &mut self,
        source: &dyn Source,
        filtered: &Filtered,
        items: Vec<SourceItem>,
        ops: Vec<Op>,
    ) -> Result<(), SessionGone> {
        let n_items = items.len() as u64;
        // A source that reads ahead (IMAP) starts now, in the order they are opened.
        let order: Vec<SourceItem> = items
            .iter()
            .map(|i| filtered.source_item(i).into_owned())
            .collect();
        source.prefetch(&order);
        drop(order);
        for (i, item) in items.into_iter().enumerate() {
            self.message(source, filtered, i as u64 + 1, item)?;
        }
        // Changes go after the messages (see plan::Plan::ops): they are small, and a
        // message that moved between folders is stored anew before the old copy goes.
        for (i, op) in ops.into_iter().enumerate() {
            self.op(n_items + i as u64 + 1, op)?;
        }
        Frame::Close.encode(&mut self.out);
        let _ = self.tx.send(std::mem::take(&mut self.out));
        Ok(())
    }

    /// Waits what the throttles ask before `bytes` and `messages` are read.
    fn obey(&self, bytes: u64, messages: u64) -> Result<(), SessionGone> {
        if self.throttle.is_empty() {
            return Ok(());
        }
        let wait = self.throttle.reserve(bytes, messages);
        if wait.is_zero() {
            return Ok(());
        }
        let t0 = Instant::now();
        let alive = self.window.pause(wait);
        add_nanos(&self.progress.throttled_nanos, t0.elapsed());
        alive.then_some(()).ok_or(SessionGone)
    }

    /// Sends the buffered frames to the writer.
    fn ship(&mut self) -> Result<(), SessionGone> {
        ship(&self.tx, &mut self.out, self.cap)
            .then_some(())
            .ok_or(SessionGone)
    }

    fn settle_bad(&mut self, item: &SourceItem, reason: String) {
        self.progress.items_done.fetch_add(1, Ordering::Relaxed);
        self.progress
            .bytes_done
            .fetch_add(item.size, Ordering::Relaxed);
        self.bad.push(BadItem {
            item: item.name(),
            reason,
        });
    }

    /// Frames message `seq`: MESSAGE, its DATA, END; or settles it as bad.
    fn message(
        &mut self,
        source: &dyn Source,
        filtered: &Filtered,
        seq: u64,
        mut item: SourceItem,
    ) -> Result<(), SessionGone> {
        self.obey(0, 1)?;
        let t_open = Instant::now();
        // Opened under its source folder and id (the profile may have renamed them).
        let opened = source.open_sized(&filtered.source_item(&item));
        self.read_time += t_open.elapsed();
        let (mut file, size_note) = match opened {
            Ok(o) => {
                // The size the source measured is the one the store is told.
                item.size = o.size;
                (o.reader, o.note)
            }
            Err(e) => {
                self.settle_bad(&item, format!("cannot open {}: {e}", item.location));
                return Ok(());
            }
        };
        let t_stall = Instant::now();
        if !self.window.try_acquire(item.size) {
            // Send what is buffered first: the END waiting in it is what frees the window.
            if !self.out.is_empty() {
                self.ship()?;
            }
            let acquired = self.window.acquire(item.size);
            self.stall_time += t_stall.elapsed();
            if !acquired {
                return Err(SessionGone);
            }
        }
        let mark = self.out.len();
        // Registered before the MESSAGE frame can leave: the proxy may REJECT a message
        // as soon as it sees its header (e.g. over its size limit), before its END.
        self.inflight.lock().expect("inflight lock").insert(
            seq,
            Pending::Message(InFlight {
                started: t_open,
                item: item.clone(),
                sha256: String::new(),
                local_error: None,
                warning: None,
            }),
        );
        Frame::Message(MessageHeader {
            seq,
            folder: item.folder.clone(),
            source_id: item.source_id.clone(),
            flags: item.flags.clone(),
            internal_date: item.internal_date,
            size: item.size,
        })
        .encode(&mut self.out);
        let Some(mut body) = self.body(&mut *file, &item, mark)? else {
            // Its MESSAGE frame was taken back out of the buffer before it was sent.
            self.inflight.lock().expect("inflight lock").remove(&seq);
            return Ok(());
        };
        if let Some(note) = size_note {
            body.warning = Some(match body.warning.take() {
                Some(w) => format!("{note}; {w}"),
                None => note,
            });
        }
        self.end(seq, &item, body);
        Ok(())
    }

    /// Streams a message's bytes as DATA frames. `None` if its first read showed it is
    /// not to be sent (unreadable or empty): then it is settled as bad and its frames
    /// from `mark` on are taken back.
    fn body(
        &mut self,
        file: &mut dyn Read,
        item: &SourceItem,
        mark: usize,
    ) -> Result<Option<Body>, SessionGone> {
        let frame_bytes = self.frame_bytes;
        let mut body = Body {
            total: 0,
            hasher: ring::digest::Context::new(&ring::digest::SHA256),
            local_error: None,
            warning: None,
        };
        let mut first = true;
        loop {
            let at = self.out.len();
            let expected = item.size.saturating_sub(body.total).min(frame_bytes as u64);
            // Room for what is left plus one byte, which shows a file that grew since
            // it was listed; a whole frame's worth of zeroes for a 7 KiB message cost
            // more than reading it.
            let room = (expected as usize + 1).min(frame_bytes);
            self.out.resize(at + frame::HEADER_LEN + room, 0);
            self.obey(expected, 0)?;
            let t_read = Instant::now();
            let got = match read_full(file, &mut self.out[at + frame::HEADER_LEN..]) {
                Ok(n) => n,
                Err(e) => {
                    body.local_error = Some(format!("read failed after {} bytes: {e}", body.total));
                    0
                }
            };
            self.read_time += t_read.elapsed();
            self.out.truncate(at + frame::HEADER_LEN + got);
            if first {
                first = false;
                let head = &self.out[at + frame::HEADER_LEN..];
                let reason = if body.local_error.is_some() {
                    body.local_error.clone()
                } else if got == 0 {
                    Some("empty file (0 bytes): not a message, not stored".to_string())
                } else {
                    // Stored whatever it holds; what is odd about it becomes a warning.
                    body.warning = oddities(head);
                    None
                };
                if let Some(reason) = reason {
                    self.out.truncate(mark);
                    self.window.release(item.size);
                    self.settle_bad(item, reason);
                    return Ok(None);
                }
            }
            if got == 0 {
                self.out.truncate(at);
                return Ok(Some(body));
            }
            body.hasher.update(&self.out[at + frame::HEADER_LEN..]);
            let hdr: &mut [u8] = &mut self.out[at..at + frame::HEADER_LEN];
            hdr[0] = frame::kind::DATA;
            hdr[1..].copy_from_slice(&(got as u32).to_be_bytes());
            body.total += got as u64;
            self.progress
                .bytes_done
                .fetch_add(got as u64, Ordering::Relaxed);
            let t_ship = Instant::now();
            let shipped = if self.out.len() < frame_bytes {
                Ok(())
            } else {
                self.ship()
            };
            self.stall_time += t_ship.elapsed();
            shipped?;
            if got < frame_bytes || body.local_error.is_some() {
                return Ok(Some(body));
            }
        }
    }

    /// Closes message `seq` with its END frame and hands its digest (or why it must be
    /// refused) to the in-flight entry the reader settles.
    fn end(&mut self, seq: u64, item: &SourceItem, body: Body) {
        let Body {
            total,
            hasher,
            mut local_error,
            warning,
        } = body;
        if local_error.is_none() && total != item.size {
            local_error = Some(format!(
                "the file changed while it was read (listed {} bytes, read {total})",
                item.size
            ));
        }
        let digest = hasher.finish();
        let mut sha = [0u8; 32];
        sha.copy_from_slice(digest.as_ref());
        if local_error.is_some() {
            sha = [0u8; 32]; // guarantees the store refuses it; the local reason is reported
        }
        // Absent if the proxy already refused the message from its header alone.
        if let Some(Pending::Message(f)) =
            self.inflight.lock().expect("inflight lock").get_mut(&seq)
        {
            f.sha256 = hex::encode(sha);
            f.local_error = local_error;
            f.warning = warning;
        }
        Frame::End { seq, sha256: sha }.encode(&mut self.out);
        self.progress.items_done.fetch_add(1, Ordering::Relaxed);
    }

    /// Frames change `seq` (DELETE or SET-FLAGS).
    fn op(&mut self, seq: u64, op: Op) -> Result<(), SessionGone> {
        let frame = match &op {
            Op::Delete { folder, acked, .. } => Frame::Delete {
                seq,
                folder: folder.clone(),
                source_id: acked.stored_as.clone(),
            },
            Op::SetFlags {
                folder,
                acked,
                flags,
                ..
            } => Frame::SetFlags {
                seq,
                folder: folder.clone(),
                source_id: acked.stored_as.clone(),
                flags: flags.clone(),
            },
        };
        self.inflight
            .lock()
            .expect("inflight lock")
            .insert(seq, Pending::Op(op));
        frame.encode(&mut self.out);
        if self.out.len() >= self.frame_bytes {
            self.ship()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::oddities;

    fn odd(head: &[u8]) -> String {
        oddities(head).unwrap_or_else(|| panic!("{:?} judged plain", String::from_utf8_lossy(head)))
    }

    #[test]
    fn plain_messages_have_no_warning() {
        for plain in [
            &b"Return-Path: <a@b>\r\nX: y\r\n\r\nbody\r\n"[..],
            b"From a@b Mon Jan  1 00:00:00 2024\nSubject: hi\n\nbody\n",
            b"Subject: only a header, no body",
            // RFC 6532: UTF-8 in header fields is allowed.
            "Subject: Grüße\nFrom: Jörg <j@x>\n\nbody\n".as_bytes(),
            // Body bytes are not judged (8-bit MIME, a lone CR in a body).
            b"Subject: x\n\n\xe9t\xe9 \r here\n",
            // A CR that the first buffer cuts off from its LF.
            b"Subject: x\r",
            // A UTF-8 character cut by the end of the buffer.
            b"Subject: Gr\xc3",
        ] {
            assert_eq!(
                oddities(plain),
                None,
                "{:?}",
                String::from_utf8_lossy(plain)
            );
        }
    }

    #[test]
    fn each_oddity_is_named() {
        let r = odd(b"and the rest of the digest follows.\n\n--\nList footer\n");
        assert!(r.contains("no header block"), "{r}");
        assert!(r.ends_with("stored byte for byte"), "{r}");
        for no_field in [&b": no name\n"[..], b"has space: x\n", b"\x89PNG\r\n\x1a\n"] {
            assert!(odd(no_field).contains("no header block"), "{no_field:?}");
        }
        let r = odd(b"Subject: x\rFrom: a@b\r\rbody\r");
        assert!(
            r.contains("bare CR") && !r.contains("no header block"),
            "{r}"
        );
        let r = odd(b"Subject: caf\xe9\nFrom: a@b\n\nbody\n");
        assert!(
            r.contains("8-bit header bytes") && !r.contains("bare CR"),
            "{r}"
        );
        let r = odd(b"Subject: x\n\nbinary \x00\x01\x02 body\n");
        assert!(
            r.contains("NUL bytes") && !r.contains("no header block"),
            "{r}"
        );
        // Several at once are all named.
        let r = odd(b"\x00\x01\xff\xfe binary");
        assert!(
            r.contains("no header block") && r.contains("NUL bytes"),
            "{r}"
        );
    }

    #[test]
    fn only_the_header_block_is_judged_for_line_ends_and_8_bit() {
        // After the empty line, bytes are body: no header warning for them.
        assert_eq!(
            oddities(b"Subject: x\r\n\r\nbody \xe9 and a \r bare CR\r\n"),
            None
        );
        // A bare CR in a header line after the first.
        let r = odd(b"Subject: x\nX-Y: a\rb\n\nbody\n");
        assert!(r.contains("bare CR"), "{r}");
    }
}
