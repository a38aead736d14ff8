//! [`DelayRelay`]: a TCP relay that models latency, not bandwidth. Each direction of each
//! connection has a reader that stamps every chunk with the time it arrived plus the
//! one-way delay, and a writer that sends the chunks in order, each no earlier than its
//! stamp. The delays overlap (many chunks are in flight at once, as on a long link), and
//! what is queued is bounded: the reader stops reading when [`QUEUE_CAP_BYTES`] are
//! waiting, which TCP turns into backpressure on the sender. It also stops when the
//! receiver is slower than the sender and [`DUE_BYTES`] are already due but not taken:
//! on a real link those would wait in the receiver's kernel buffers, not in anyone's
//! memory, so the relay keeps no more of them than a socket buffer would (it runs in the
//! benchmark's process, whose peak RSS is measured).

use super::serving::Serving;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Bytes one direction of one connection may hold waiting for their time: 4 MiB, so a
/// connection can carry ~100 MB/s at 40 ms one way (bytes in flight = rate x delay).
/// Those bytes are in the memory of the process running the relay.
pub const QUEUE_CAP_BYTES: usize = 4 << 20;

/// Bytes already due that one direction holds for a receiver slower than its sender
/// before it stops reading (see the module doc).
pub const DUE_BYTES: usize = 256 << 10;

/// The most read at once; a chunk is what one read returned.
const READ_BYTES: usize = 64 << 10;

/// A delay relay to one upstream address (see the module doc); stops when dropped.
pub struct DelayRelay {
    serving: Serving,
    one_way: Duration,
    queued: Arc<Queued>,
}

/// Bytes waiting in every direction of every connection, now and at most.
#[derive(Default)]
struct Queued {
    now: AtomicU64,
    peak: AtomicU64,
}

impl Queued {
    fn add(&self, n: usize) {
        let now = self.now.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
    fn sub(&self, n: usize) {
        self.now.fetch_sub(n as u64, Ordering::Relaxed);
    }
}

impl DelayRelay {
    /// Listens on `127.0.0.1:0`; every connection accepted is relayed to `upstream`
    /// with `one_way` added in each direction (zero: relayed as fast as it comes).
    pub fn start(upstream: SocketAddr, one_way: Duration) -> io::Result<DelayRelay> {
        let queued = Arc::new(Queued::default());
        let q = queued.clone();
        let serving = Serving::start(move |client| relay(client, upstream, one_way, q.clone()))?;
        Ok(DelayRelay {
            serving,
            one_way,
            queued,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.serving.addr()
    }

    /// The delay added in each direction.
    pub fn one_way(&self) -> Duration {
        self.one_way
    }

    /// The most bytes that were waiting at once, over all connections and directions
    /// (what the relay added to the memory of its process).
    pub fn peak_queued_bytes(&self) -> u64 {
        self.queued.peak.load(Ordering::Relaxed)
    }
}

/// One connection: both directions until both ended, or either failed (then both go).
async fn relay(client: TcpStream, upstream: SocketAddr, one_way: Duration, queued: Arc<Queued>) {
    // Upstream unreachable: dropping the client's socket tells it so.
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    // Small IMAP commands must not wait for Nagle on top of the delay we add.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let _ = tokio::try_join!(
        direction(client_read, server_write, one_way, queued.clone()),
        direction(server_read, client_write, one_way, queued),
    );
}

/// A chunk and when it may be written (`None`: the sender closed its side).
struct Delayed {
    due: Instant,
    bytes: Option<(Bytes, Held)>,
}

/// A queued chunk's share of the budget and of the count; both are given back when the
/// chunk is written or dropped unwritten (a connection torn down with chunks queued).
struct Held {
    _permit: OwnedSemaphorePermit,
    n: usize,
    queued: Arc<Queued>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.queued.sub(self.n);
    }
}

/// When the queued chunks of one direction are due, for the reader to see how far the
/// receiver is behind.
#[derive(Default)]
struct Schedule {
    /// `(due, bytes)` of every queued chunk, oldest first.
    chunks: Mutex<VecDeque<(Instant, usize)>>,
    /// The writer wrote a chunk.
    written: Notify,
}

impl Schedule {
    fn push(&self, due: Instant, n: usize) {
        self.chunks
            .lock()
            .expect("not poisoned")
            .push_back((due, n));
    }

    fn pop(&self) {
        self.chunks.lock().expect("not poisoned").pop_front();
        self.written.notify_waiters();
    }

    /// Bytes queued whose time has come (waiting only for the receiver).
    fn due_bytes(&self, now: Instant) -> usize {
        let chunks = self.chunks.lock().expect("not poisoned");
        chunks
            .iter()
            .take_while(|(due, _)| *due <= now)
            .map(|(_, n)| n)
            .sum()
    }

    /// Returns once fewer than [`DUE_BYTES`] are due and unwritten.
    async fn receiver_keeps_up(&self) {
        loop {
            let written = self.written.notified();
            tokio::pin!(written);
            // Registered before the check, so a write in between is not missed.
            written.as_mut().enable();
            if self.due_bytes(Instant::now()) < DUE_BYTES {
                return;
            }
            written.await;
        }
    }
}

/// One direction: read, stamp, queue; write each chunk when it is due, in order.
async fn direction(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    one_way: Duration,
    queued: Arc<Queued>,
) -> io::Result<()> {
    let budget = Arc::new(Semaphore::new(QUEUE_CAP_BYTES));
    let schedule = Arc::new(Schedule::default());
    let (tx, mut rx) = mpsc::unbounded_channel::<Delayed>();
    let sched = schedule.clone();
    let read = async move {
        let mut buf = BytesMut::with_capacity(READ_BYTES);
        loop {
            sched.receiver_keeps_up().await;
            // Room for a full read first: with the queue full we stop reading.
            let mut permit = budget
                .clone()
                .acquire_many_owned(READ_BYTES as u32)
                .await
                .expect("the budget is never closed");
            buf.reserve(READ_BYTES);
            let n = (&mut from)
                .take(READ_BYTES as u64)
                .read_buf(&mut buf)
                .await?;
            let due = Instant::now() + one_way;
            if n == 0 {
                let _ = tx.send(Delayed { due, bytes: None });
                return Ok::<(), io::Error>(());
            }
            // Keep what the chunk holds; the rest of the reservation goes back.
            let held = Held {
                _permit: permit.split(n).expect("n <= READ_BYTES permits"),
                n,
                queued: queued.clone(),
            };
            drop(permit);
            queued.add(n);
            sched.push(due, n);
            let chunk = buf.split().freeze();
            if tx
                .send(Delayed {
                    due,
                    bytes: Some((chunk, held)),
                })
                .is_err()
            {
                return Ok(());
            }
        }
    };
    let write = async move {
        while let Some(d) = rx.recv().await {
            // A chunk already due (the receiver is the slower side) is written at once:
            // a timer for a past deadline still costs a trip through the timer driver.
            if !one_way.is_zero() && d.due > Instant::now() {
                tokio::time::sleep_until(d.due).await;
            }
            match d.bytes {
                Some((chunk, _held)) => {
                    to.write_all(&chunk).await?;
                    schedule.pop();
                }
                None => return to.shutdown().await,
            }
        }
        Ok(())
    };
    tokio::try_join!(read, write).map(|_| ())
}
