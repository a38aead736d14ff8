//! One frame session: decode the agent's frames, drive an [`IngestSession`] on a blocking
//! thread, and send back ACK, REJECT, ERROR and CLOSED frames.
//!
//! DELETE and FLAGS (mirror passes) go to the same store thread through the same queue
//! as messages, so the store sees every change in the order the agent sent it; they are
//! acknowledged with the group commit that makes them durable.
//!
//! Frames flow through a bounded queue (4 reads' worth of frames, about 1–2 MiB), so a
//! fast agent and a slow disk meet backpressure, not unbounded buffering. DATA payloads
//! are split off the read buffer, not copied, on their way to the store thread. A group
//! commit closes at the first of the profile's `commit` limits ([`BatchPolicy`]) or at a
//! FLUSH; no acknowledgement waits longer than `commit.max_delay_ms` after its message
//! ended plus the commit itself.
//!
//! The store session is opened only once the OPEN frame has been read: a fenced OPEN
//! (docs/wire-protocol.md §3.7) is checked and recorded by the store first. A session
//! with a fence also listens to its [`Claim`]: a newer lease asking for the mailbox ends
//! it at once (ERROR 412), discarding what it has not committed.

use crate::metrics::StoreStats;
use mailferry_core::frame::{
    AckStatus, Frame, FrameBuffer, MessageHeader, ERROR_FENCED, PROTOCOL_VERSION,
};
use mailferry_core::profile::CommitSettings;
use mailferry_core::MailboxAddr;
use mailferry_store::{
    BatchPolicy, CommitOutcome, CommitPipeline, Finished, IngestSession, StoreError, Volume,
};
use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;

fn add(a: &AtomicU64, nanos: u64) {
    a.fetch_add(nanos, Ordering::Relaxed);
}

/// What the reader hands the store thread: the client's own frames (MESSAGE, DATA, END,
/// DELETE, FLAGS, FLUSH, CLOSE), unchanged, plus the one thing the wire has no frame for.
enum Cmd {
    /// A client frame, as decoded.
    Frame(Frame),
    /// The session ends without a CLOSE (the agent is gone, idle, or broke the protocol):
    /// a store-side event only, so it is not a frame.
    Abort,
    /// A newer lease (this fencing number) asked for the mailbox: the session ends, and
    /// what it has not committed is discarded.
    TakenOver(u64),
}

/// A mailbox's claim while a session holds it, shared by the session and the proxy's
/// table of held mailboxes: another request for the mailbox with a newer lease's fencing
/// number (after the store recorded it) tells the holder here to stop.
#[derive(Debug)]
pub struct Claim(tokio::sync::watch::Sender<Option<u64>>);

impl Default for Claim {
    fn default() -> Self {
        Claim(tokio::sync::watch::Sender::new(None))
    }
}

impl Claim {
    /// A newer lease with fencing number `fence` wants the mailbox (its number is already
    /// the store's). The holding session ends if its own fence is lower; a session
    /// without a fence is not fenced and goes on.
    pub fn take_over(&self, fence: u64) {
        self.0.send_if_modified(|newer| {
            let raise = newer.is_none_or(|n| n < fence);
            if raise {
                *newer = Some(fence);
            }
            raise
        });
    }
}

/// How a session's stream was asked for: its mailbox's claim, and the fencing number of
/// the `Mailferry-Fence` header, which the OPEN frame must repeat.
pub struct Opening<L> {
    /// Held for the session and dropped once the store side has finished.
    pub lock: L,
    /// Where a newer lease's request reaches this session.
    pub claim: std::sync::Arc<Claim>,
    /// The request header's fencing number, if it had one.
    pub header_fence: Option<u64>,
}

/// What a seq handed to the store was, until it is acknowledged (for the counters).
#[derive(Clone, Copy)]
enum Sent {
    /// A message of this many body bytes.
    Message(u64),
    Delete,
    SetFlags,
}

/// Spare room for each read from the agent: the largest DATA frame (256 KiB by default)
/// plus its neighbours, in one wake-up of the store thread.
const READ_BYTES: usize = 256 * 1024;

/// Reads decoded and not yet taken by the store thread, at most.
const QUEUED_READS: usize = 4;

/// Sends an ERROR frame (the session ends after it).
fn send_error(tx: &flume::Sender<Frame>, code: u16, message: String) {
    let _ = tx.send(Frame::Error { code, message });
}

/// Runs a session on an upgraded connection until CLOSE, an error, or disconnect.
///
/// `opening.lock` is held for the session and dropped once the store side has finished,
/// before the session's last frame (CLOSED or ERROR) is written: an agent that reads it
/// can open its next session for the mailbox at once.
// The session's settings are its whole context; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub async fn run_session<IO, L>(
    io: IO,
    volume: Arc<Volume>,
    mailbox: MailboxAddr,
    commit: CommitSettings,
    stats: Arc<StoreStats>,
    max_message_bytes: u64,
    idle_timeout: Duration,
    opening: Opening<L>,
) -> u64
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
    L: Send,
{
    let (mut rd, wr) = tokio::io::split(io);
    let out = Outbox::start(wr);
    let Opening {
        lock: mailbox_lock,
        claim,
        header_fence,
    } = opening;
    let mut reader = Reader {
        gate: Gate {
            opened: None,
            header_fence,
            skipping: None,
            max_message_bytes,
        },
        out: &out.tx,
        idle_timeout,
        received: 0,
    };
    let mut fb = FrameBuffer::new();
    let Some((move_id, fence)) = reader.read_open(&mut rd, &mut fb).await else {
        let received = reader.received;
        out.finish(mailbox_lock).await;
        return received;
    };
    let session = match open_store(&volume, &mailbox, &commit, move_id, fence).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%mailbox, "store refused the session: {e}");
            let (code, message) = error_for(&e);
            send_error(&out.tx, code, message);
            let received = reader.received;
            out.finish(mailbox_lock).await;
            return received;
        }
    };
    // Only a fenced session can be taken over; one without a fence never listens.
    let takeover = fence.map(|f| (f, claim.0.subscribe()));
    // One message per read: every frame decoded from it, so the store thread is woken
    // once per read, not once per frame (three frames per small message). Each queued
    // read pins its whole read buffer (its DATA payloads are slices of it), so the queue
    // is short: 4 reads kept the throughput of 16 and cut peak RSS of 8 concurrent
    // mailboxes from 179–234 to 124–158 MiB (benches/RESULTS.md, 2026-11-24).
    let (cmd_tx, cmd_rx) = flume::bounded::<Vec<Cmd>>(QUEUED_READS);
    let mut worker = {
        let out_tx = out.tx.clone();
        let policy = BatchPolicy::from_settings(&commit);
        tokio::task::spawn_blocking(move || store_worker(session, cmd_rx, out_tx, policy, stats))
    };
    let (received, worker_ended) = reader.run(&mut rd, fb, cmd_tx, &mut worker, takeover).await;
    if !worker_ended {
        let _ = worker.await;
    }
    // A session is a pass's destination side: sign the volume log's head before the
    // last frame, so a remote move's records are covered when the agent hears CLOSED
    // (nothing is signed if the session recorded nothing).
    let v = volume.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || v.sign_audit_head()).await {
        tracing::warn!(%mailbox, "volume audit head not signed: {e}");
    }
    out.finish(mailbox_lock).await;
    received
}

/// Opens the mailbox's store session on a blocking thread (it may create keys and
/// segments); a fenced one through the store's fence check.
async fn open_store(
    volume: &Arc<Volume>,
    mailbox: &MailboxAddr,
    commit: &CommitSettings,
    move_id: mailferry_core::MoveId,
    fence: Option<u64>,
) -> Result<IngestSession, StoreError> {
    let (volume, mailbox, commit) = (volume.clone(), mailbox.clone(), commit.clone());
    tokio::task::spawn_blocking(move || match fence {
        None => volume.session(&mailbox, &commit),
        Some(f) => volume.fenced_session(&mailbox, &commit, &move_id.to_string(), f),
    })
    .await
    .expect("store session thread panicked")
}

/// The ERROR frame for a store failure: 412 (fenced, permanent) or 500 (retry later).
fn error_for(e: &StoreError) -> (u16, String) {
    match e {
        StoreError::Fenced { .. } => (ERROR_FENCED, e.to_string()),
        _ => (500, format!("the store failed: {e}")),
    }
}

/// The session's one writer to the agent: a task that encodes the frames it is sent, and
/// holds the last one (CLOSED or ERROR) until the session says it is done.
struct Outbox {
    tx: flume::Sender<Frame>,
    done: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Outbox {
    fn start<W: AsyncWrite + Unpin + Send + 'static>(mut wr: W) -> Outbox {
        let (tx, rx) = flume::unbounded::<Frame>();
        let (done, done_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut done_rx = Some(done_rx);
            while let Ok(f) = rx.recv_async().await {
                let last = matches!(f, Frame::Closed | Frame::Error { .. });
                if last {
                    if let Some(done) = done_rx.take() {
                        let _ = done.await;
                    }
                }
                buf.clear();
                f.encode(&mut buf);
                if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
                    break;
                }
                if last {
                    let _ = wr.shutdown().await;
                    break;
                }
            }
        });
        Outbox { tx, done, task }
    }

    /// Ends the session: releases the mailbox first, then lets the last frame go and
    /// waits until everything is written.
    async fn finish<L>(self, mailbox_lock: L) {
        drop(mailbox_lock);
        let _ = self.done.send(());
        drop(self.tx);
        let _ = self.task.await;
    }
}

/// What the reader settles itself, before anything reaches the store thread: the OPEN
/// handshake, and messages over the size limit.
struct Gate {
    /// The OPEN frame's move id and fencing number, once it came.
    opened: Option<(mailferry_core::MoveId, Option<u64>)>,
    /// The fencing number of the request header, which OPEN must repeat.
    header_fence: Option<u64>,
    /// A message over the size limit is refused when its MESSAGE frame arrives; its DATA
    /// and END frames are read and dropped here, so nothing of it reaches the store.
    skipping: Option<u64>,
    max_message_bytes: u64,
}

impl Gate {
    /// `Ok(Some(frame))` to hand on to the store thread, `Ok(None)` if handled here,
    /// `Err(ERROR frame)` if the session must end.
    fn admit(&mut self, frame: Frame, out: &flume::Sender<Frame>) -> Result<Option<Frame>, Frame> {
        let error = |code, message| Err(Frame::Error { code, message });
        match frame {
            Frame::Open {
                version,
                move_id,
                fence,
            } if self.opened.is_none() => {
                if version != PROTOCOL_VERSION {
                    return error(
                        505,
                        format!("protocol version {version} is not supported (this proxy speaks {PROTOCOL_VERSION})"),
                    );
                }
                if self.header_fence.is_some() && fence != self.header_fence {
                    let show = |f: Option<u64>| f.map_or("none".to_string(), |f| f.to_string());
                    return error(
                        400,
                        format!(
                            "the OPEN frame's fencing number ({}) differs from the {} header's ({}); send the same number in both",
                            show(fence),
                            mailferry_core::frame::FENCE_HEADER,
                            show(self.header_fence)
                        ),
                    );
                }
                self.opened = Some((move_id, fence));
                Ok(None)
            }
            _ if self.opened.is_none() => error(400, "the first frame must be OPEN".into()),
            Frame::Message(h) if self.max_message_bytes > 0 && h.size > self.max_message_bytes => {
                let _ = out.send(Frame::Reject {
                    seq: h.seq,
                    reason: format!(
                        "message of {} bytes is larger than this server's limit of {} bytes (a large item)",
                        h.size, self.max_message_bytes
                    ),
                });
                self.skipping = Some(h.seq);
                Ok(None)
            }
            Frame::Data(_) if self.skipping.is_some() => Ok(None),
            Frame::End { seq, .. } if self.skipping == Some(seq) => {
                self.skipping = None;
                Ok(None)
            }
            Frame::Delete { .. } | Frame::SetFlags { .. } if self.skipping.is_some() => {
                error(400, "DELETE or FLAGS inside a message".into())
            }
            f @ (Frame::Message(_)
            | Frame::Data(_)
            | Frame::End { .. }
            | Frame::Delete { .. }
            | Frame::SetFlags { .. }
            | Frame::Flush
            | Frame::Close) => Ok(Some(f)),
            other => error(400, format!("unexpected frame from a client: {other:?}")),
        }
    }
}

/// The reading half of a session: reads the agent's bytes, decodes frames, and queues
/// them for the store thread one read at a time.
struct Reader<'a> {
    gate: Gate,
    out: &'a flume::Sender<Frame>,
    idle_timeout: Duration,
    /// Bytes read from the agent.
    received: u64,
}

impl Reader<'_> {
    /// Reads up to and with the OPEN frame (frames after it stay in `fb`): its move id
    /// and fencing number, or `None` if the session ended first (an ERROR frame was sent,
    /// or the client left).
    async fn read_open<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
        fb: &mut FrameBuffer,
    ) -> Option<(mailferry_core::MoveId, Option<u64>)> {
        loop {
            match fb.next_frame() {
                Ok(Some(f)) => {
                    return match self.gate.admit(f, self.out) {
                        Ok(_) => self.gate.opened,
                        Err(error) => {
                            let _ = self.out.send(error);
                            None
                        }
                    };
                }
                Ok(None) => {}
                Err(e) => {
                    send_error(self.out, 400, e.to_string());
                    return None;
                }
            }
            let read =
                tokio::time::timeout(self.idle_timeout, rd.read_buf(fb.read_space(READ_BYTES)))
                    .await;
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(n)) => self.received += n as u64,
                Err(_) => {
                    let secs = self.idle_timeout.as_secs();
                    send_error(
                        self.out,
                        408,
                        format!("no data for {secs} s; the session is closed"),
                    );
                    return None;
                }
            }
        }
    }

    /// Reads until CLOSE, an error, disconnect, or the store worker ending first (it found
    /// a protocol violation or failed: the reader stops waiting for the client, so the
    /// session can end and say why). Returns the bytes received and whether the worker
    /// ended first. Dropping `cmd_tx` at the end tells the worker no more comes.
    /// `takeover`: a fenced session's fence and the claim's newer fence, which ends the
    /// session when it rises above its own.
    async fn run<R: AsyncRead + Unpin>(
        mut self,
        rd: &mut R,
        mut fb: FrameBuffer,
        cmd_tx: flume::Sender<Vec<Cmd>>,
        worker: &mut JoinHandle<()>,
        mut takeover: Option<(u64, tokio::sync::watch::Receiver<Option<u64>>)>,
    ) -> (u64, bool) {
        // Frames that came with the OPEN frame's read are handed on first.
        let (cmds, last) = self.decode(&mut fb);
        if !cmds.is_empty() && (cmd_tx.send_async(cmds).await.is_err() || last) {
            return (self.received, false);
        }
        loop {
            if let Some((own, rx)) = &mut takeover {
                // A newer lease may have asked before this session was accepted.
                let newer = *rx.borrow_and_update();
                if let Some(newer) = newer.filter(|n| *n > *own) {
                    let _ = cmd_tx.send_async(vec![Cmd::TakenOver(newer)]).await;
                    break;
                }
            }
            let changed = async {
                match &mut takeover {
                    Some((_, rx)) => {
                        if rx.changed().await.is_err() {
                            std::future::pending::<()>().await
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let read = tokio::select! {
                r = tokio::time::timeout(self.idle_timeout, rd.read_buf(fb.read_space(READ_BYTES))) => r,
                _ = &mut *worker => return (self.received, true),
                () = changed => continue,
            };
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    let _ = cmd_tx.send_async(vec![Cmd::Abort]).await;
                    break;
                }
                Ok(Ok(n)) => self.received += n as u64,
                Err(_) => {
                    // An idle client must not hold a stream slot for ever.
                    let secs = self.idle_timeout.as_secs();
                    send_error(
                        self.out,
                        408,
                        format!("no data for {secs} s; the session is closed"),
                    );
                    let _ = cmd_tx.send_async(vec![Cmd::Abort]).await;
                    break;
                }
            }
            let (cmds, last) = self.decode(&mut fb);
            if last {
                let _ = cmd_tx.send_async(cmds).await;
                break;
            }
            if !cmds.is_empty() && cmd_tx.send_async(cmds).await.is_err() {
                break; // the store worker ended (and said why)
            }
        }
        (self.received, false)
    }

    /// Every whole frame of the buffer, as commands; `true` if the session ends with them
    /// (a CLOSE, or an Abort after an ERROR frame was sent).
    fn decode(&mut self, fb: &mut FrameBuffer) -> (Vec<Cmd>, bool) {
        let mut cmds = Vec::new();
        loop {
            let admitted = match fb.next_frame() {
                Ok(Some(f)) => self.gate.admit(f, self.out),
                Ok(None) => return (cmds, false),
                Err(e) => Err(Frame::Error {
                    code: 400,
                    message: e.to_string(),
                }),
            };
            match admitted {
                Ok(None) => {}
                Ok(Some(f)) => {
                    let closing = matches!(f, Frame::Close);
                    cmds.push(Cmd::Frame(f));
                    if closing {
                        return (cmds, true);
                    }
                }
                Err(error) => {
                    let _ = self.out.send(error);
                    cmds.push(Cmd::Abort);
                    return (cmds, true);
                }
            }
        }
    }
}

/// Runs the store side of a session. Commits are pipelined ([`CommitPipeline`]): the
/// worker hands each closed batch to the pipeline's fdatasync stage and goes on writing
/// the next batch, while earlier batches are indexed and audited on the pipeline's other
/// threads. ACKs are sent only after a batch's last step, in batch order.
fn store_worker(
    mut session: IngestSession,
    rx: flume::Receiver<Vec<Cmd>>,
    tx: flume::Sender<Frame>,
    policy: BatchPolicy,
    stats: Arc<StoreStats>,
) {
    // What each seq handed to the store but not yet ACKed was, for the counters.
    let sizes: Arc<Mutex<HashMap<u64, Sent>>> = Arc::default();
    let pipeline = {
        let (tx, stats, sizes) = (tx.clone(), stats.clone(), sizes.clone());
        CommitPipeline::start(move |res| committed(res, &tx, &stats, &sizes))
    };
    let pipeline = match pipeline {
        Ok(p) => p,
        Err(e) => {
            send_error(
                &tx,
                500,
                format!("the store could not start its commit threads: {e}"),
            );
            return;
        }
    };
    let mut inbox = Inbox {
        rx,
        queue: VecDeque::new(),
    };
    let closed = Driver {
        session: &mut session,
        tx: &tx,
        pipeline: &pipeline,
        policy,
        stats: &stats,
        sizes: &sizes,
        current: None,
        last_seq: 0,
    }
    .run(&mut inbox);
    let t = session.timings();
    add(&stats.hash_nanos, t.hash_ns);
    add(&stats.encrypt_nanos, t.encrypt_ns);
    add(&stats.append_nanos, t.append_ns);
    // Every batch handed off must be durable (or have failed) before the session goes:
    // dropping it truncates its segment to what was handed off.
    let ok = pipeline.finish().is_ok();
    if closed && ok {
        let _ = tx.send(Frame::Closed);
    }
}

/// Called by the pipeline with each batch's outcome, in order: counts it and sends its
/// REJECTs and ACKs; or, once, the failure that stopped the pipeline.
fn committed(
    res: Result<CommitOutcome, StoreError>,
    tx: &flume::Sender<Frame>,
    stats: &StoreStats,
    sizes: &Mutex<HashMap<u64, Sent>>,
) {
    let o = match res {
        Ok(o) => o,
        Err(e) => {
            let (code, message) = match &e {
                StoreError::Fenced { .. } => {
                    tracing::warn!("group commit refused: {e}");
                    (ERROR_FENCED, e.to_string())
                }
                _ => {
                    tracing::error!("group commit failed: {e}");
                    (500, format!("the store could not commit: {e}"))
                }
            };
            send_error(tx, code, message);
            return;
        }
    };
    let t = o.timings;
    add(&stats.sync_nanos, t.sync_ns);
    add(&stats.index_nanos, t.index_ns);
    add(&stats.audit_nanos, t.audit_ns);
    // The batch's own time in the three steps (not the time it waited between them).
    let busy = t.sync_ns + t.index_ns + t.audit_ns;
    add(&stats.commit_nanos, busy);
    stats.commits.fetch_add(1, Ordering::Relaxed);
    stats.commit_seconds.observe(Duration::from_nanos(busy));
    let mut sz = sizes.lock().unwrap_or_else(|p| p.into_inner());
    for (seq, status) in &o.acks {
        let counter = match (sz.remove(seq), status) {
            (Some(Sent::Message(size)), AckStatus::Stored) => {
                stats.bytes_stored.fetch_add(size, Ordering::Relaxed);
                &stats.messages_stored
            }
            (Some(Sent::Delete), AckStatus::Applied) => &stats.deletes_applied,
            (Some(Sent::Delete), AckStatus::NotFound) => &stats.deletes_not_found,
            (Some(Sent::SetFlags), AckStatus::Applied) => &stats.flag_updates_applied,
            (Some(Sent::SetFlags), AckStatus::NotFound) => &stats.flag_updates_not_found,
            _ => continue,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    for (seq, reason) in o.rejected {
        sz.remove(&seq);
        stats.changes_rejected.fetch_add(1, Ordering::Relaxed);
        let _ = tx.send(Frame::Reject { seq, reason });
    }
    drop(sz);
    if o.acks.is_empty() {
        // Only a FLUSH makes an empty batch: it is always answered.
        let _ = tx.send(Frame::Ack(Vec::new()));
    }
    for part in o.acks.chunks(10_000) {
        let _ = tx.send(Frame::Ack(part.to_vec()));
    }
}

/// The store thread's side of the command queue: the reader sends every command decoded
/// from one read together; they are taken one by one here.
struct Inbox {
    rx: flume::Receiver<Vec<Cmd>>,
    queue: VecDeque<Cmd>,
}

impl Inbox {
    /// The next command; `None` if `deadline` passed first. A reader that is gone
    /// (disconnected) reads as `Abort`.
    fn next(&mut self, deadline: Option<Instant>) -> Option<Cmd> {
        if let Some(c) = self.queue.pop_front() {
            return Some(c);
        }
        let got = match deadline {
            Some(d) => match self.rx.recv_deadline(d) {
                Ok(v) => v,
                Err(flume::RecvTimeoutError::Timeout) => return None,
                Err(flume::RecvTimeoutError::Disconnected) => vec![Cmd::Abort],
            },
            None => self.rx.recv().unwrap_or_else(|_| vec![Cmd::Abort]),
        };
        self.queue.extend(got);
        // Never empty: the reader sends no empty batch; an empty one would read as Abort.
        Some(self.queue.pop_front().unwrap_or(Cmd::Abort))
    }
}

/// The message between its MESSAGE and END frames.
struct OpenMessage {
    seq: u64,
    /// The size its MESSAGE frame announced, for the counters.
    size: u64,
    /// Why it already failed, if it did: its DATA is dropped and its END is a REJECT.
    failed: Option<String>,
}

/// How a command leaves the session: go on, or end it (`Break(true)` if the client
/// closed it cleanly).
type Step = ControlFlow<bool>;

/// Goes on if `ok`, else ends the session (unclean).
fn go_on(ok: bool) -> Step {
    if ok {
        ControlFlow::Continue(())
    } else {
        ControlFlow::Break(false)
    }
}

/// The store thread's command loop and its state.
struct Driver<'a> {
    session: &'a mut IngestSession,
    tx: &'a flume::Sender<Frame>,
    pipeline: &'a CommitPipeline,
    policy: BatchPolicy,
    stats: &'a StoreStats,
    sizes: &'a Mutex<HashMap<u64, Sent>>,
    current: Option<OpenMessage>,
    /// MESSAGE, DELETE and FLAGS share one seq space, increasing within a session.
    last_seq: u64,
}

impl Driver<'_> {
    /// The command loop; returns true if the client closed the session cleanly.
    fn run(&mut self, rx: &mut Inbox) -> bool {
        loop {
            let cmd = match self.session.oldest_pending() {
                // A batch is open: it closes at its deadline if nothing else closes it first.
                Some(t) => match rx.next(Some(t + self.policy.max_delay)) {
                    Some(c) => c,
                    None => {
                        if let ControlFlow::Break(clean) = self.maybe_commit() {
                            return clean;
                        }
                        continue;
                    }
                },
                None => rx.next(None).unwrap_or(Cmd::Abort),
            };
            let t0 = Instant::now();
            if let ControlFlow::Break(clean) = self.step(cmd) {
                return clean;
            }
            self.stats
                .write_nanos
                .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    }

    fn step(&mut self, cmd: Cmd) -> Step {
        let frame = match cmd {
            Cmd::Frame(f) => f,
            Cmd::Abort => {
                // The agent is gone. Complete messages are still worth keeping: the next
                // pass finds them as duplicates instead of sending them again.
                if self.current.is_some() {
                    self.session.abort();
                }
                self.commit(false);
                return ControlFlow::Break(false);
            }
            Cmd::TakenOver(newer) => {
                // A newer lease owns the mailbox now: nothing more of this session is
                // committed (a batch already handed off meets the fence check).
                let e = self.session.taken_over(newer);
                let (code, message) = error_for(&e);
                send_error(self.tx, code, message);
                return ControlFlow::Break(false);
            }
        };
        match frame {
            Frame::Message(h) => self.begin(h),
            Frame::Data(d) => self.data(&d),
            Frame::End { seq, sha256 } => self.end(seq, sha256),
            Frame::Delete {
                seq,
                folder,
                source_id,
            } => self.change(seq, Sent::Delete, |s| s.delete(seq, folder, source_id)),
            Frame::SetFlags {
                seq,
                folder,
                source_id,
                flags,
            } => self.change(seq, Sent::SetFlags, |s| {
                s.set_flags(seq, folder, source_id, flags)
            }),
            Frame::Flush => go_on(self.commit(true)),
            Frame::Close => {
                if self.current.is_some() {
                    return self.protocol("CLOSE inside a message");
                }
                ControlFlow::Break(self.commit(false))
            }
            // The reader hands on client frames only (`Gate::admit`).
            other => self.protocol(&format!("unexpected frame from a client: {other:?}")),
        }
    }

    fn begin(&mut self, h: MessageHeader) -> Step {
        if self.current.is_some() {
            return self.protocol("MESSAGE before the previous message's END");
        }
        let (seq, size) = (h.seq, h.size);
        if seq <= self.last_seq {
            return self.protocol("MESSAGE seq must increase within a session");
        }
        self.last_seq = seq;
        let failed = self.session.begin(h).err().map(|e| e.to_string());
        self.current = Some(OpenMessage { seq, size, failed });
        ControlFlow::Continue(())
    }

    fn data(&mut self, d: &[u8]) -> Step {
        match &mut self.current {
            None => return self.protocol("DATA outside a message"),
            Some(OpenMessage {
                failed: failed @ None,
                ..
            }) => {
                if let Err(e) = self.session.write(d) {
                    self.session.abort();
                    *failed = Some(e.to_string());
                }
            }
            Some(_) => {}
        }
        ControlFlow::Continue(())
    }

    fn end(&mut self, seq: u64, sha256: [u8; 32]) -> Step {
        let Some(open) = self.current.take() else {
            return self.protocol("END outside a message");
        };
        if open.seq != seq {
            return self.protocol("END names another message than the open one");
        }
        let outcome = match open.failed {
            Some(reason) => Err(reason),
            None => match self.session.finish(sha256) {
                Ok(Finished::Pending { seq }) => {
                    self.remember(seq, Sent::Message(open.size));
                    Ok(())
                }
                Ok(Finished::Duplicate { .. }) => Ok(()),
                Err(StoreError::Rejected { reason, .. }) => Err(reason),
                Err(e) => return self.store_failed(e),
            },
        };
        if let Err(reason) = outcome {
            let _ = self.tx.send(Frame::Reject { seq, reason });
        }
        self.maybe_commit()
    }

    /// A DELETE or FLAGS: checked against the open message and the seq order, applied
    /// by `apply`, then queued (remembered for the counters), refused for this item alone
    /// (REJECT, the session goes on), or a store failure (ERROR 500, the session ends).
    fn change(
        &mut self,
        seq: u64,
        sent: Sent,
        apply: impl FnOnce(&mut IngestSession) -> Result<(), StoreError>,
    ) -> Step {
        let what = match sent {
            Sent::Delete => "DELETE",
            _ => "FLAGS",
        };
        if self.current.is_some() {
            return self.protocol(&format!("{what} inside a message"));
        }
        if seq <= self.last_seq {
            return self.protocol(&format!(
                "{what} seq must increase within a session (it shares the seq space of MESSAGE)"
            ));
        }
        self.last_seq = seq;
        match apply(self.session) {
            Ok(()) => self.remember(seq, sent),
            Err(StoreError::Rejected { reason, .. }) => {
                self.stats.changes_rejected.fetch_add(1, Ordering::Relaxed);
                let _ = self.tx.send(Frame::Reject { seq, reason });
            }
            Err(e) => return self.store_failed(e),
        }
        self.maybe_commit()
    }

    /// Notes what `seq` was until its ACK, for the counters.
    fn remember(&self, seq: u64, sent: Sent) {
        self.sizes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(seq, sent);
    }

    /// Hands the open batch to the pipeline; false if the session must end. `force`:
    /// hand off even an empty batch (FLUSH is always answered with an ACK).
    fn commit(&mut self, force: bool) -> bool {
        if self.pipeline.failed() {
            return false;
        }
        if self.session.pending_count() == 0 && !force {
            return true;
        }
        match self.session.start_commit() {
            // Refused only after a failure the pipeline has already reported.
            Ok(job) => self.pipeline.submit(job).is_ok(),
            Err(e) => {
                send_error(self.tx, 500, format!("the store could not commit: {e}"));
                false
            }
        }
    }

    /// Closes the open batch if the policy says so (see `BatchPolicy`).
    fn maybe_commit(&mut self) -> Step {
        let age = self
            .session
            .oldest_pending()
            .map_or(Duration::ZERO, |t| t.elapsed());
        let close = self.policy.should_close(
            self.session.pending_count(),
            self.session.pending_bytes(),
            age,
        );
        go_on(!close || self.commit(false))
    }

    /// The client broke the protocol: ERROR 400, the session ends.
    fn protocol(&self, msg: &str) -> Step {
        send_error(self.tx, 400, msg.to_string());
        ControlFlow::Break(false)
    }

    /// The store failed: ERROR 500 (412 if fenced), the session ends.
    fn store_failed(&self, e: StoreError) -> Step {
        let (code, message) = error_for(&e);
        send_error(self.tx, code, message);
        ControlFlow::Break(false)
    }
}
