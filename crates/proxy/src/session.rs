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

use bytes::Bytes;
use mailferry_core::frame::AckStatus;
use mailferry_core::frame::{Frame, FrameBuffer, MessageHeader, PROTOCOL_VERSION};
use mailferry_core::profile::CommitSettings;
use mailferry_core::{Flags, FolderName, MailboxAddr, SourceId};
use mailferry_store::{
    BatchPolicy, CommitOutcome, CommitPipeline, Finished, IngestSession, MessageStart, StoreError,
    Volume,
};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Time spent by store sessions, for the move report's per-stage figures.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Nanoseconds in hashing, encrypting and appending.
    pub write_nanos: AtomicU64,
    /// Nanoseconds in group commits (fsync + SQLite).
    pub commit_nanos: AtomicU64,
    /// Number of group commits.
    pub commits: AtomicU64,
    /// Of the write time: SHA-256 of bodies.
    pub hash_nanos: AtomicU64,
    /// Of the write time: AES-256-GCM sealing.
    pub encrypt_nanos: AtomicU64,
    /// Of the write time: appending to segment files.
    pub append_nanos: AtomicU64,
    /// Of the commit time: fdatasync of segments.
    pub sync_nanos: AtomicU64,
    /// Of the commit time: SQLite transactions.
    pub index_nanos: AtomicU64,
    /// Of the commit time: audit records appended and synced.
    pub audit_nanos: AtomicU64,
    /// Messages newly stored and durable (ACK status `stored`).
    pub messages_stored: AtomicU64,
    /// Body bytes of those messages.
    pub bytes_stored: AtomicU64,
    /// DELETEs made durable that removed at least one message (ACK status `applied`).
    pub deletes_applied: AtomicU64,
    /// DELETEs that found no message (ACK status `not_found`).
    pub deletes_not_found: AtomicU64,
    /// FLAGS made durable that changed at least one message (ACK status `applied`).
    pub flag_updates_applied: AtomicU64,
    /// FLAGS that found no message (ACK status `not_found`).
    pub flag_updates_not_found: AtomicU64,
    /// DELETEs and FLAGS refused with a REJECT.
    pub changes_rejected: AtomicU64,
    /// Latency of each group commit.
    pub commit_seconds: crate::metrics::Histogram,
}

fn add(a: &AtomicU64, nanos: u64) {
    a.fetch_add(nanos, Ordering::Relaxed);
}

enum Cmd {
    Begin(MessageHeader),
    Data(Bytes),
    End {
        seq: u64,
        sha256: [u8; 32],
    },
    Delete {
        seq: u64,
        folder: FolderName,
        source_id: SourceId,
    },
    SetFlags {
        seq: u64,
        folder: FolderName,
        source_id: SourceId,
        flags: Flags,
    },
    Flush,
    Close,
    Abort,
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

/// Runs a session on an upgraded connection until CLOSE, an error, or disconnect.
///
/// `mailbox_lock` is held for the session and dropped once the store side has finished,
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
    mailbox_lock: L,
) -> u64
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
    L: Send,
{
    let mut received = 0u64;
    let (mut rd, mut wr) = tokio::io::split(io);
    let (out_tx, out_rx) = flume::unbounded::<Frame>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut done_rx = Some(done_rx);
        while let Ok(f) = out_rx.recv_async().await {
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
    let opened = {
        let volume = volume.clone();
        let mailbox = mailbox.clone();
        let commit = commit.clone();
        tokio::task::spawn_blocking(move || volume.session(&mailbox, &commit))
            .await
            .expect("store session thread panicked")
    };
    let session = match opened {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%mailbox, "store refused the session: {e}");
            let _ = out_tx.send(Frame::Error {
                code: 500,
                message: e.to_string(),
            });
            drop(mailbox_lock);
            let _ = done_tx.send(());
            drop(out_tx);
            let _ = writer.await;
            return 0;
        }
    };
    // One message per read: every frame decoded from it, so the store thread is woken
    // once per read, not once per frame (three frames per small message). Each queued
    // read pins its whole read buffer (its DATA payloads are slices of it), so the queue
    // is short: 4 reads kept the throughput of 16 and cut peak RSS of 8 concurrent
    // mailboxes from 179–234 to 124–158 MiB (benches/RESULTS.md, 2026-11-24).
    let (cmd_tx, cmd_rx) = flume::bounded::<Vec<Cmd>>(QUEUED_READS);
    let mut worker = {
        let out_tx = out_tx.clone();
        let policy = BatchPolicy::from_settings(&commit);
        tokio::task::spawn_blocking(move || store_worker(session, cmd_rx, out_tx, policy, stats))
    };

    let fail = |code: u16, message: String| {
        let _ = out_tx.send(Frame::Error { code, message });
    };
    let mut fb = FrameBuffer::new();
    let mut opened = false;
    // A message over the size limit is refused when its MESSAGE frame arrives; its DATA
    // and END frames are read and dropped here, so nothing of it reaches the store.
    let mut skipping: Option<u64> = None;
    // Set when the store worker ended first (it found a protocol violation or failed):
    // the reader stops waiting for the client, so the session can end and say why.
    let mut worker_ended = false;
    'read: loop {
        let read = tokio::select! {
            r = tokio::time::timeout(idle_timeout, rd.read_buf(fb.read_space(READ_BYTES))) => r,
            _ = &mut worker => {
                worker_ended = true;
                break 'read;
            }
        };
        let n = match read {
            Ok(Ok(0)) | Ok(Err(_)) => {
                let _ = cmd_tx.send_async(vec![Cmd::Abort]).await;
                break;
            }
            Ok(Ok(n)) => n,
            Err(_) => {
                // An idle client must not hold a stream slot for ever.
                fail(
                    408,
                    format!(
                        "no data for {} s; the session is closed",
                        idle_timeout.as_secs()
                    ),
                );
                let _ = cmd_tx.send_async(vec![Cmd::Abort]).await;
                break;
            }
        };
        received += n as u64;
        let mut cmds = Vec::new();
        // Hands the commands so far on, ending with an Abort (the session ends).
        macro_rules! abort {
            () => {{
                cmds.push(Cmd::Abort);
                let _ = cmd_tx.send_async(cmds).await;
                break 'read;
            }};
        }
        loop {
            let frame = match fb.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    fail(400, e.to_string());
                    abort!()
                }
            };
            let cmd = match frame {
                Frame::Open { version, .. } if !opened => {
                    if version != PROTOCOL_VERSION {
                        fail(
                            505,
                            format!("protocol version {version} is not supported (this proxy speaks {PROTOCOL_VERSION})"),
                        );
                        abort!()
                    }
                    opened = true;
                    continue;
                }
                _ if !opened => {
                    fail(400, "the first frame must be OPEN".into());
                    abort!()
                }
                Frame::Message(h) if max_message_bytes > 0 && h.size > max_message_bytes => {
                    let _ = out_tx.send(Frame::Reject {
                        seq: h.seq,
                        reason: format!(
                            "message of {} bytes is larger than this server's limit of {} bytes (a large item)",
                            h.size, max_message_bytes
                        ),
                    });
                    skipping = Some(h.seq);
                    continue;
                }
                Frame::Data(_) if skipping.is_some() => continue,
                Frame::End { seq, .. } if skipping == Some(seq) => {
                    skipping = None;
                    continue;
                }
                Frame::Delete { .. } | Frame::SetFlags { .. } if skipping.is_some() => {
                    fail(400, "DELETE or FLAGS inside a message".into());
                    abort!()
                }
                Frame::Message(h) => Cmd::Begin(h),
                Frame::Data(d) => Cmd::Data(d),
                Frame::End { seq, sha256 } => Cmd::End { seq, sha256 },
                Frame::Delete {
                    seq,
                    folder,
                    source_id,
                } => Cmd::Delete {
                    seq,
                    folder,
                    source_id,
                },
                Frame::SetFlags {
                    seq,
                    folder,
                    source_id,
                    flags,
                } => Cmd::SetFlags {
                    seq,
                    folder,
                    source_id,
                    flags,
                },
                Frame::Flush => Cmd::Flush,
                Frame::Close => Cmd::Close,
                other => {
                    fail(400, format!("unexpected frame from a client: {other:?}"));
                    abort!()
                }
            };
            let closing = matches!(cmd, Cmd::Close);
            cmds.push(cmd);
            if closing {
                let _ = cmd_tx.send_async(cmds).await;
                break 'read;
            }
        }
        if !cmds.is_empty() && cmd_tx.send_async(cmds).await.is_err() {
            break 'read; // the store worker ended (and said why)
        }
    }
    drop(cmd_tx);
    if !worker_ended {
        let _ = worker.await;
    }
    drop(mailbox_lock);
    let _ = done_tx.send(());
    drop(out_tx);
    let _ = writer.await;
    received
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
            let _ = tx.send(Frame::Error {
                code: 500,
                message: format!("the store could not start its commit threads: {e}"),
            });
            return;
        }
    };
    let mut inbox = Inbox {
        rx,
        queue: VecDeque::new(),
    };
    let closed = drive(
        &mut session,
        &mut inbox,
        &tx,
        &pipeline,
        policy,
        &stats,
        &sizes,
    );
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
            tracing::error!("group commit failed: {e}");
            let _ = tx.send(Frame::Error {
                code: 500,
                message: format!("the store could not commit: {e}"),
            });
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

/// The command loop; returns true if the client closed the session cleanly.
// The loop's channels, flags and counters are its whole context; a struct would only
// rename them.
#[allow(clippy::too_many_arguments)]
fn drive(
    session: &mut IngestSession,
    rx: &mut Inbox,
    tx: &flume::Sender<Frame>,
    pipeline: &CommitPipeline,
    policy: BatchPolicy,
    stats: &StoreStats,
    sizes: &Mutex<HashMap<u64, Sent>>,
) -> bool {
    // (seq, reason it already failed)
    let mut current: Option<(u64, Option<String>)> = None;
    let mut last_seq = 0u64;
    // The size announced by the open message's MESSAGE frame.
    let mut sizes_of: HashMap<u64, u64> = HashMap::new();
    // `force`: hand off even an empty batch (FLUSH is always answered with an ACK).
    let commit = |session: &mut IngestSession, force: bool| -> bool {
        if pipeline.failed() {
            return false;
        }
        if session.pending_count() == 0 && !force {
            return true;
        }
        match session.start_commit() {
            // Refused only after a failure the pipeline has already reported.
            Ok(job) => pipeline.submit(job).is_ok(),
            Err(e) => {
                let _ = tx.send(Frame::Error {
                    code: 500,
                    message: format!("the store could not commit: {e}"),
                });
                false
            }
        }
    };
    let protocol = |msg: &str| {
        let _ = tx.send(Frame::Error {
            code: 400,
            message: msg.to_string(),
        });
        false
    };
    // Closes the open batch if the policy says so (see `BatchPolicy`); false if the
    // session must end.
    let maybe_commit = |session: &mut IngestSession| -> bool {
        let age = session
            .oldest_pending()
            .map_or(Duration::ZERO, |t| t.elapsed());
        let close = policy.should_close(session.pending_count(), session.pending_bytes(), age);
        !close || commit(session, false)
    };
    loop {
        let cmd = match session.oldest_pending() {
            // A batch is open: it closes at its deadline if nothing else closes it first.
            Some(t) => match rx.next(Some(t + policy.max_delay)) {
                Some(c) => c,
                None => {
                    if !maybe_commit(session) {
                        return false;
                    }
                    continue;
                }
            },
            None => rx.next(None).unwrap_or(Cmd::Abort),
        };
        let t0 = Instant::now();
        match cmd {
            Cmd::Begin(h) => {
                if current.is_some() {
                    return protocol("MESSAGE before the previous message's END");
                }
                let seq = h.seq;
                if seq <= last_seq {
                    return protocol("MESSAGE seq must increase within a session");
                }
                last_seq = seq;
                let start = MessageStart {
                    seq,
                    meta_folder: h.folder,
                    source_id: h.source_id,
                    flags: h.flags,
                    internal_date: h.internal_date,
                    size: h.size,
                };
                sizes_of.clear();
                sizes_of.insert(seq, h.size);
                current = Some((seq, session.begin(start).err().map(|e| e.to_string())));
            }
            Cmd::Data(d) => match &mut current {
                None => return protocol("DATA outside a message"),
                Some((_, Some(_))) => {}
                Some((_, failed @ None)) => {
                    if let Err(e) = session.write(&d) {
                        session.abort();
                        *failed = Some(e.to_string());
                    }
                }
            },
            Cmd::End { seq, sha256 } => {
                let Some((cur, failed)) = current.take() else {
                    return protocol("END outside a message");
                };
                if cur != seq {
                    return protocol("END names another message than the open one");
                }
                let outcome = match failed {
                    Some(reason) => Err(reason),
                    None => match session.finish(sha256) {
                        Ok(Finished::Pending { seq }) => {
                            if let Some(size) = sizes_of.remove(&seq) {
                                sizes
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .insert(seq, Sent::Message(size));
                            }
                            Ok(())
                        }
                        Ok(Finished::Duplicate { .. }) => Ok(()),
                        Err(StoreError::Rejected { reason, .. }) => Err(reason),
                        Err(e) => {
                            let _ = tx.send(Frame::Error {
                                code: 500,
                                message: format!("the store failed: {e}"),
                            });
                            return false;
                        }
                    },
                };
                if let Err(reason) = outcome {
                    let _ = tx.send(Frame::Reject { seq, reason });
                }
                if !maybe_commit(session) {
                    return false;
                }
            }
            Cmd::Delete {
                seq,
                folder,
                source_id,
            } => {
                if current.is_some() {
                    return protocol("DELETE inside a message");
                }
                if seq <= last_seq {
                    return protocol("DELETE seq must increase within a session (it shares the seq space of MESSAGE)");
                }
                last_seq = seq;
                let done = session.delete(seq, folder, source_id);
                if !change_queued(done, seq, Sent::Delete, tx, stats, sizes) {
                    return false;
                }
                if !maybe_commit(session) {
                    return false;
                }
            }
            Cmd::SetFlags {
                seq,
                folder,
                source_id,
                flags,
            } => {
                if current.is_some() {
                    return protocol("FLAGS inside a message");
                }
                if seq <= last_seq {
                    return protocol("FLAGS seq must increase within a session (it shares the seq space of MESSAGE)");
                }
                last_seq = seq;
                let done = session.set_flags(seq, folder, source_id, flags);
                if !change_queued(done, seq, Sent::SetFlags, tx, stats, sizes) {
                    return false;
                }
                if !maybe_commit(session) {
                    return false;
                }
            }
            Cmd::Flush => {
                if !commit(session, true) {
                    return false;
                }
            }
            Cmd::Close => {
                if current.is_some() {
                    return protocol("CLOSE inside a message");
                }
                return commit(session, false);
            }
            Cmd::Abort => {
                // The agent is gone. Complete messages are still worth keeping: the next
                // pass finds them as duplicates instead of sending them again.
                if current.is_some() {
                    session.abort();
                }
                commit(session, false);
                return false;
            }
        }
        stats
            .write_nanos
            .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Handles the store's answer to a DELETE or FLAGS: queued (remembered for the counters),
/// refused for this item alone (REJECT, the session goes on), or a store failure (ERROR
/// 500, false: the session ends).
fn change_queued(
    done: Result<(), StoreError>,
    seq: u64,
    sent: Sent,
    tx: &flume::Sender<Frame>,
    stats: &StoreStats,
    sizes: &Mutex<HashMap<u64, Sent>>,
) -> bool {
    match done {
        Ok(()) => {
            sizes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(seq, sent);
            true
        }
        Err(StoreError::Rejected { reason, .. }) => {
            stats.changes_rejected.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(Frame::Reject { seq, reason });
            true
        }
        Err(e) => {
            let _ = tx.send(Frame::Error {
                code: 500,
                message: format!("the store failed: {e}"),
            });
            false
        }
    }
}
