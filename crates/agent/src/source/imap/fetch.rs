//! Reading message bodies at WAN speed: several connections, each with many commands in
//! flight, fetching ahead of the pass in the order it will open the messages.
//!
//! Over a link with a round trip of tens of milliseconds, the round trip and not the CPU
//! decides the speed: one request at a time moves a few dozen messages a second. Here
//! every message is one request `UID BODY.PEEK[]<offset.length>` (or a few, for a large
//! one), and each connection keeps up to [`DEPTH`] of them on the wire. Requests for
//! whole small messages that go out together share one command,
//! `UID FETCH a,b,c (UID BODY.PEEK[]<0.length>)` (see [`group_lines`]): the server pays
//! its per-command work once per group instead of once per message.
//! What is fetched but not yet read by the pass is held in memory up to a byte budget
//! (the window per connection times the connections); a request is only sent when its
//! bytes fit. The message the pass is reading may always go on, so a message larger
//! than the budget still streams, [`PIECE_BYTES`] at a time.
//!
//! **Sizes are hints.** Some servers (Exchange among them) report an RFC822.SIZE that
//! differs from the bytes they serve, and the wire protocol to the store needs the exact
//! size before the first byte. A message expected to be small is asked for with a little
//! room to spare (`<0.hint+slack>`): a shorter answer ends it and gives its size. A
//! larger one is measured first with small probes ([`SizeSearch`]) sent together with its
//! first piece, so a correct size costs no extra round trip and a wrong one a few.
//!
//! **Folders change on the wire.** A connection that has asked for everything of the
//! messages it holds may go on to the next folder at once: `EXAMINE` goes out behind the
//! requests still on the wire and the new folder's requests behind it, with no round
//! trip spent waiting (the server runs commands that change the selected folder in the
//! order it got them, RFC 3501 section 5.5). A FETCH answer is only ever matched to a
//! request sent before the first `EXAMINE` still unanswered, so the same UID in two
//! folders cannot be confused; when the `EXAMINE` fails or reports another UIDVALIDITY
//! than the listing saw, the requests behind it fail with that reason and whatever the
//! server sends for them is dropped. A connection that fails with an `EXAMINE` on the
//! wire is opened again rather than reused, so no late answer from before can be taken
//! for a new request.
//!
//! Not here: listing (see the parent module), and anything that writes to the server.
//! This module only ever sends `EXAMINE` and `UID FETCH ... BODY.PEEK[]`.

use super::{next_response, send, Config, Conn, Fail, PIECE_BYTES};
use crate::source::connections::ConnectionLimit;
use async_imap::imap_proto::{AttributeValue, Response, ResponseCode, Status};
use mailferry_core::FolderName;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Requests (one per message, or per probe or piece of a large one) one connection keeps
/// in flight at most.
pub const DEPTH: usize = 128;

/// Whole small messages asked for in one `UID FETCH` command at most.
pub const GROUP_MAX: usize = 64;

/// What one grouped command may ask for at most, all its messages together (each is
/// asked for the group's largest length, which the window counts until the answer).
pub const GROUP_BYTES: u64 = 1 << 20;

/// Size of a probe of [`SizeSearch`].
pub const PROBE_BYTES: u64 = 64 * 1024;

/// Pieces of the message being read that may be requested or waiting beyond the
/// window: so that it streams even when the window is full of what comes after it.
const HEAD_PIECES: usize = 4;

/// How long the reader waits between looks at a fetcher that seems stuck (it also wakes
/// on every piece that arrives).
const READER_TICK: Duration = Duration::from_secs(1);

/// One message to fetch, in the order the pass will open it.
#[derive(Clone, Debug)]
pub(super) struct Unit {
    pub folder: FolderName,
    /// The server's name of the folder.
    pub mailbox: Arc<str>,
    pub uidvalidity: u32,
    pub uid: u32,
    /// RFC822.SIZE from the listing: a hint.
    pub hint: u64,
}

/// The most a message may be asked for whole, in one request: larger ones are measured
/// and fetched in pieces. A request for a whole message costs the server one pass over
/// it; pieces cost more where the server stores bare LFs (Dovecot's Maildir), because
/// it must count CRLFs from where its last partial fetch began to find each piece's
/// start, and a probe of the size search scans up to the probe. The window bounds it
/// further (see [`whole_limit`]).
pub const WHOLE_MAX: u64 = 8 << 20;

/// The largest request for a whole message with a window of `window` bytes per
/// connection: at most half of it, so that the requests behind it keep going, and
/// never less than a piece.
fn whole_limit(window: u64) -> u64 {
    WHOLE_MAX.min(window / 2).max(PIECE_BYTES)
}

/// What a message expected to be small is asked for: its hint plus room for a server
/// that reports a little less than it serves. `None`: fetch it in pieces.
fn small_request(hint: u64, window: u64) -> Option<u64> {
    let len = hint + hint / 8 + 4096;
    (len <= whole_limit(window)).then_some(len)
}

// === Size search ===

/// Finds a message's exact size by partial fetches: a fetch of `<a.w>` answers
/// `clamp(size - a, 0, w)` bytes, so an answer shorter than asked (but not empty) gives
/// the size at once, a full one a lower bound, an empty one an upper bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SizeSearch {
    /// The size is at least this.
    lo: u64,
    /// The size is at most this.
    hi: Option<u64>,
    /// Where the first probe looks: the hint, straddled.
    first: Option<u64>,
    /// Without an upper bound, how far past `lo` the next probe looks (doubles).
    gap: u64,
}

impl SizeSearch {
    /// A search that starts at `hint`.
    pub fn new(hint: u64) -> Self {
        SizeSearch {
            lo: 0,
            hi: None,
            first: Some(hint.saturating_sub(PROBE_BYTES / 2)),
            gap: PROBE_BYTES,
        }
    }

    /// The next probe: `(offset, length)`.
    pub fn next_probe(&self) -> (u64, u64) {
        if let Some(a) = self.first {
            return (a, PROBE_BYTES);
        }
        match self.hi {
            None => (self.lo + self.gap, PROBE_BYTES),
            Some(hi) if hi - self.lo <= PROBE_BYTES => (self.lo, PROBE_BYTES),
            Some(hi) => (self.lo + (hi - self.lo) / 2, PROBE_BYTES),
        }
    }

    /// Takes the answer to a fetch of `<offset.len>` (any fetch of the message, not only
    /// probes) that gave `got` bytes; the size once it is known.
    pub fn feed(&mut self, offset: u64, len: u64, got: u64) -> Option<u64> {
        if offset == self.first.unwrap_or(u64::MAX) {
            self.first = None;
        }
        if got > 0 && got < len {
            return Some(offset + got);
        }
        if got == 0 {
            if offset == 0 {
                return Some(0);
            }
            self.hi = Some(self.hi.map_or(offset, |h| h.min(offset)));
        } else {
            self.lo = self.lo.max(offset + len);
            if self.hi.is_none() {
                self.gap = self.gap.saturating_mul(2);
            }
        }
        match self.hi {
            Some(hi) if hi <= self.lo => Some(self.lo),
            _ => None,
        }
    }
}

// === State shared by the fetcher and the reader ===

/// A fetched (or being fetched) message.
#[derive(Debug, Default)]
struct Slot {
    size: Option<u64>,
    /// Pieces not yet read, by offset.
    pieces: BTreeMap<u64, Vec<u8>>,
    error: Option<String>,
    /// Every request for it has been answered.
    complete: bool,
    /// The connection fetching it, whose window its pieces count against.
    owner: usize,
}

#[derive(Debug)]
struct State {
    /// The next unit no connection has taken yet.
    next: usize,
    /// The first unit the reader may still open; everything before it is dropped.
    head: usize,
    slots: HashMap<usize, Slot>,
    /// Per connection: bytes requested and not answered, plus bytes answered and not
    /// read.
    used: Vec<u64>,
    /// What `used` may reach on one connection (the message being read may go over).
    window: u64,
    stop: bool,
    /// Connections working.
    live: usize,
    /// Why no connection is left, if none is.
    failed: Option<String>,
}

impl State {
    fn fits(&self, n: usize, bytes: u64) -> bool {
        self.used[n] + bytes <= self.window
    }

    /// Forgets a message the reader will not read (any more): its room is free.
    fn drop_slot(&mut self, idx: usize) {
        if let Some(s) = self.slots.remove(&idx) {
            self.used[s.owner] -= s.pieces.values().map(|p| p.len() as u64).sum::<u64>();
        }
    }
}

#[derive(Debug)]
struct Shared {
    units: Vec<Unit>,
    st: Mutex<State>,
    /// The reader waits on this.
    arrived: Condvar,
    /// The connections wait on this.
    room: tokio::sync::Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The reader's wait for the next arrival (or a look every [`READER_TICK`]); `Err`
    /// when nothing more will arrive.
    fn wait_for_more<'a>(&self, st: MutexGuard<'a, State>) -> io::Result<MutexGuard<'a, State>> {
        if let Some(e) = stopped(&st) {
            return Err(e);
        }
        Ok(self
            .arrived
            .wait_timeout(st, READER_TICK)
            .unwrap_or_else(|p| p.into_inner())
            .0)
    }

    fn wake_all(&self) {
        self.arrived.notify_all();
        self.room.notify_waiters();
    }
}

/// The fetcher of one pass: its connections run on a thread of their own.
pub(super) struct Fetcher {
    shared: Arc<Shared>,
    index: HashMap<(FolderName, u32, u32), usize>,
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake_all();
    }
}

/// Everything a connection needs.
pub(super) struct Settings {
    pub cfg: Arc<Config>,
    pub connections: usize,
    pub window_bytes: u64,
    pub limit: Option<ConnectionLimit>,
    pub backoff_nanos: Arc<AtomicU64>,
    pub url: String,
}

impl Fetcher {
    /// Starts fetching `units` in order.
    pub fn start(units: Vec<Unit>, s: Settings) -> io::Result<Fetcher> {
        let index = units
            .iter()
            .enumerate()
            .map(|(i, u)| ((u.folder.clone(), u.uidvalidity, u.uid), i))
            .collect();
        // A connection costs a few round trips to open: a handful of messages is not
        // worth four of them.
        let workers = s.connections.clamp(1, units.len().div_ceil(8).max(1));
        let window = s.window_bytes.max(PROBE_BYTES);
        tracing::debug!(
            "{}: fetching {} message(s) ahead with {workers} connection(s), {window} bytes \
             each",
            s.url,
            units.len()
        );
        let shared = Arc::new(Shared {
            units,
            st: Mutex::new(State {
                next: 0,
                head: 0,
                slots: HashMap::new(),
                used: vec![0; workers],
                window,
                stop: false,
                live: workers,
                failed: None,
            }),
            arrived: Condvar::new(),
            room: tokio::sync::Notify::new(),
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let s = Arc::new(s);
        let sh = shared.clone();
        std::thread::Builder::new()
            .name("imap-fetch".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut set = tokio::task::JoinSet::new();
                    for n in 0..workers {
                        set.spawn(Worker::new(n, sh.clone(), s.clone()).run());
                    }
                    while set.join_next().await.is_some() {}
                });
                rt.shutdown_background();
            })?;
        Ok(Fetcher { shared, index })
    }

    /// The index of a message in the fetch order, if it is in it.
    pub fn find(&self, folder: &FolderName, uidvalidity: u32, uid: u32) -> Option<usize> {
        self.index.get(&(folder.clone(), uidvalidity, uid)).copied()
    }

    /// Opens message `idx`: drops everything fetched before it and waits until its size
    /// is known. Returns the reader, the size, and how it differs from the hint.
    pub fn open(&self, idx: usize) -> io::Result<(SlotReader, u64)> {
        let sh = &self.shared;
        let mut st = sh.lock();
        if idx < st.head {
            return Err(io::Error::other(
                "opened out of order: this message was passed over already",
            ));
        }
        // Everything before it will not be read: free its room.
        let dropped: Vec<usize> = st.slots.keys().copied().filter(|&k| k < idx).collect();
        for k in dropped {
            st.drop_slot(k);
        }
        st.head = idx;
        sh.wake_all();
        loop {
            if let Some(slot) = st.slots.get(&idx) {
                if let Some(e) = &slot.error {
                    return Err(io::Error::other(e.clone()));
                }
                if let Some(size) = slot.size {
                    drop(st);
                    let r = SlotReader {
                        shared: sh.clone(),
                        idx,
                        size,
                        pos: 0,
                        cur: Vec::new(),
                        cur_pos: 0,
                    };
                    return Ok((r, size));
                }
            }
            st = sh.wait_for_more(st)?;
        }
    }
}

/// Whether a refused connection says the server allows no more of them: `[LIMIT]`
/// (RFC 5530), Dovecot's "Maximum number of connections from user+IP exceeded",
/// Gmail's and Exchange's "Too many simultaneous connections".
fn too_many(m: &str) -> bool {
    let m = m.to_ascii_lowercase();
    m.contains("[limit]") || m.contains("too many") || m.contains("maximum number of connections")
}

/// Why the messages of a folder whose UIDVALIDITY changed since it was listed are not
/// fetched: its UIDs may name other messages now.
fn uidvalidity_changed(listed: u32, now: u32) -> String {
    format!(
        "the folder's UIDVALIDITY changed from {listed} to {now} since it was listed; the \
         next pass lists it afresh"
    )
}

/// Why nothing more will arrive, if so.
fn stopped(st: &State) -> Option<io::Error> {
    if let Some(f) = &st.failed {
        return Some(io::Error::other(f.clone()));
    }
    st.stop
        .then(|| io::Error::other("the IMAP fetcher was stopped"))
}

/// Reads one fetched message, piece by piece, as its pieces arrive.
pub(super) struct SlotReader {
    shared: Arc<Shared>,
    idx: usize,
    size: u64,
    /// Offset of the first byte of the next piece to take.
    pos: u64,
    cur: Vec<u8>,
    cur_pos: usize,
}

impl Drop for SlotReader {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.drop_slot(self.idx);
        st.head = st.head.max(self.idx + 1);
        drop(st);
        self.shared.wake_all();
    }
}

impl Read for SlotReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.cur_pos == self.cur.len() {
            if self.pos >= self.size {
                return Ok(0);
            }
            self.cur = self.take()?;
            self.cur_pos = 0;
            self.pos += self.cur.len() as u64;
        }
        let n = out.len().min(self.cur.len() - self.cur_pos);
        out[..n].copy_from_slice(&self.cur[self.cur_pos..self.cur_pos + n]);
        self.cur_pos += n;
        Ok(n)
    }
}

impl SlotReader {
    /// Waits for the piece at `pos`.
    fn take(&mut self) -> io::Result<Vec<u8>> {
        let sh = self.shared.clone();
        let mut st = sh.lock();
        loop {
            let slot = st.slots.get_mut(&self.idx);
            let Some(slot) = slot else {
                return Err(io::Error::other("the message's fetch was dropped"));
            };
            if let Some(p) = slot.pieces.remove(&self.pos) {
                if p.is_empty() {
                    return Err(self.short());
                }
                let owner = slot.owner;
                st.used[owner] -= p.len() as u64;
                drop(st);
                sh.room.notify_waiters();
                return Ok(p);
            }
            if let Some(e) = &slot.error {
                return Err(io::Error::other(e.clone()));
            }
            if slot.complete {
                return Err(self.short());
            }
            st = sh.wait_for_more(st)?;
        }
    }

    fn short(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the server served no data at byte {} of a {}-byte message: its copy \
                 changed while it was read",
                self.pos, self.size
            ),
        )
    }
}

// === The connections ===

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A small message, whole (or the first `len` bytes of one larger than thought).
    Small,
    /// A probe of the size search.
    Probe,
    /// A piece of the body.
    Piece,
    /// `EXAMINE` of the folder of message `idx`, before the requests behind it.
    Examine,
}

#[derive(Debug)]
struct Request {
    /// Shared by the requests of one grouped command.
    tag: String,
    idx: usize,
    kind: Kind,
    offset: u64,
    len: u64,
    data: Option<Vec<u8>>,
    /// Sent in a command of its own: its group was refused, and alone the server's
    /// answer names this message only.
    alone: bool,
}

impl Request {
    /// Whether it may share a command with others (whole small messages only).
    fn groupable(&self) -> bool {
        self.kind == Kind::Small && self.offset == 0 && !self.alone
    }
}

/// Splits requests about to be sent, in order, into commands: runs of groupable ones
/// share a command (at most [`GROUP_MAX`] of them, and [`GROUP_BYTES`] asked for in all
/// at the run's largest length), every other request goes alone. Returns, per command,
/// the range of `reqs` it carries and the length each of them is asked for.
fn group_lines(reqs: &[Request]) -> Vec<(std::ops::Range<usize>, u64)> {
    let mut out: Vec<(std::ops::Range<usize>, u64)> = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        if let Some((range, len)) = out.last_mut() {
            let open = reqs[range.start].groupable() && r.groupable();
            let wider = (*len).max(r.len);
            let n = (range.len() + 1) as u64;
            if open && range.len() < GROUP_MAX && n * wider <= GROUP_BYTES {
                range.end = i + 1;
                *len = wider;
                continue;
            }
        }
        out.push((i..i + 1, r.len));
    }
    out
}

/// A message a connection is fetching.
#[derive(Debug)]
struct Job {
    idx: usize,
    search: Option<SizeSearch>,
    /// Whether a probe is on the wire.
    probing: bool,
    size: Option<u64>,
    /// End of what has been requested as pieces.
    requested: u64,
    /// Requests on the wire.
    out: usize,
}

/// One connection.
struct Worker {
    n: usize,
    shared: Arc<Shared>,
    s: Arc<Settings>,
    conn: Option<Conn>,
    inflight: VecDeque<Request>,
    /// Requests to send again after a reconnect or a busy answer.
    again: VecDeque<Request>,
    jobs: BTreeMap<usize, Job>,
    /// Failures in a row without progress.
    attempt: u32,
    /// The folder selected once everything sent has run (`None`: none, or not known).
    wire: Option<Arc<str>>,
    /// The UIDVALIDITY the last `EXAMINE` answered with, until its tagged answer.
    learned_uidvalidity: Option<u32>,
}

/// An owned copy of what a response says.
enum Got {
    Body {
        uid: u32,
        origin: Option<u32>,
        data: Vec<u8>,
    },
    Done {
        tag: String,
        result: Result<(), Fail>,
    },
    Bye(String),
    /// `* OK [UIDVALIDITY n]`, in the answer to an `EXAMINE`.
    UidValidity(u32),
    Other,
}

/// An owned copy of what response `r` says; `examines`: the tags of the EXAMINEs on
/// the wire (their refusals are worded as such).
fn got(r: &Response<'_>, examines: &[String]) -> Got {
    match r {
        Response::Fetch(_, attrs) => {
            let mut uid = None;
            let mut body = None;
            for a in attrs {
                match a {
                    AttributeValue::Uid(u) => uid = Some(*u),
                    AttributeValue::BodySection {
                        section: None,
                        index,
                        data,
                    } => body = Some((*index, data.as_deref().unwrap_or_default().to_vec())),
                    _ => {}
                }
            }
            match (uid, body) {
                (Some(uid), Some((origin, data))) => Got::Body { uid, origin, data },
                _ => Got::Other,
            }
        }
        Response::Done {
            tag,
            status,
            outcome,
        } => {
            let cmd = if examines.contains(&tag.0) {
                "EXAMINE"
            } else {
                "UID FETCH"
            };
            Got::Done {
                tag: tag.0.to_string(),
                result: super::done(status, outcome, cmd),
            }
        }
        Response::Data {
            status: Status::Bye,
            outcome,
        } => Got::Bye(super::outcome_text(outcome)),
        Response::Data {
            status: Status::Ok,
            outcome,
        } => match outcome.code {
            Some(ResponseCode::UidValidity(v)) => Got::UidValidity(v),
            _ => Got::Other,
        },
        _ => Got::Other,
    }
}

impl Worker {
    fn new(n: usize, shared: Arc<Shared>, s: Arc<Settings>) -> Worker {
        Worker {
            n,
            shared,
            s,
            conn: None,
            inflight: VecDeque::new(),
            again: VecDeque::new(),
            jobs: BTreeMap::new(),
            attempt: 0,
            wire: None,
            learned_uidvalidity: None,
        }
    }

    async fn run(mut self) {
        let _permit = match &self.s.limit {
            Some(l) => Some(l.acquire().await),
            None => None,
        };
        let end = self.work().await;
        // The connection closes before its place in the budget is given back.
        self.conn = None;
        drop(_permit);
        let mut st = self.shared.lock();
        st.live -= 1;
        // What this connection held goes back to the others (or fails, if none is left).
        for r in self.inflight.drain(..).chain(self.again.drain(..)) {
            st.used[self.n] -= r.len;
        }
        let orphans: Vec<usize> = self.jobs.keys().copied().collect();
        if let Err(why) = end {
            if st.live == 0 && !st.stop {
                tracing::warn!("{}: reading stopped: {why}", self.s.url);
                st.failed = Some(why);
            } else {
                tracing::info!(
                    "{}: connection {} closed ({why}); {} left",
                    self.s.url,
                    self.n,
                    st.live
                );
            }
        }
        for idx in orphans {
            if let Some(slot) = st.slots.get_mut(&idx) {
                slot.error.get_or_insert_with(|| {
                    "the connection fetching it was closed; the next pass moves it".into()
                });
            }
        }
        drop(st);
        self.shared.wake_all();
    }

    /// Fetches until there is nothing left or the fetcher stops; `Err` says why this
    /// connection gave up.
    async fn work(&mut self) -> Result<(), String> {
        loop {
            if self.shared.lock().stop {
                return Ok(());
            }
            if self.conn.is_none() {
                if let Some(r) = self.connect().await? {
                    return r;
                }
                // A new connection has no folder selected: the first request of each
                // folder goes out behind an EXAMINE, which checks its UIDVALIDITY.
                self.wire = None;
                self.learned_uidvalidity = None;
                continue;
            }
            match self.step().await {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => self.failed(e).await?,
            }
        }
    }

    /// Opens the connection. `Some(Ok)` when this connection should not be opened at all
    /// (the server allows fewer and other connections are working).
    async fn connect(&mut self) -> Result<Option<Result<(), String>>, String> {
        match Conn::open(&self.s.cfg).await {
            Ok(c) => {
                self.conn = Some(c);
                Ok(None)
            }
            Err(Fail::Busy(m) | Fail::Lost(m))
                if self.n > 0 && too_many(&m) && self.shared.lock().live > 1 =>
            {
                // The server allows fewer connections than asked: work with the others.
                tracing::warn!(
                    "{}: the server refused connection {} ({m}); reading with fewer",
                    self.s.url,
                    self.n + 1
                );
                Ok(Some(Ok(())))
            }
            Err(e) => self.failed(e).await.map(|()| None),
        }
    }

    /// After a failure: requeues what was on the wire, waits as the policy (or the
    /// server) says; `Err` when retrying cannot help or the retries are spent.
    async fn failed(&mut self, e: Fail) -> Result<(), String> {
        // With an EXAMINE on the wire, late answers on this connection could belong to
        // either folder: it is not reused.
        let switching = self.inflight.iter().any(|r| r.kind == Kind::Examine);
        if matches!(e, Fail::Lost(_)) || switching {
            self.conn = None;
        }
        while let Some(mut r) = self.inflight.pop_back() {
            if r.kind == Kind::Examine {
                // Sent again, if still needed, in front of the first request of its
                // folder (see `step`).
                continue;
            }
            r.data = None;
            self.again.push_front(r);
        }
        if self.conn.is_none() {
            self.wire = None;
        }
        for j in self.jobs.values_mut() {
            j.probing = false;
        }
        let policy = self.s.cfg.backoff;
        self.attempt += 1;
        match &e {
            Fail::Refused(m) | Fail::Fatal(m) => return Err(m.clone()),
            _ if self.attempt > policy.retries => {
                return Err(format!("gave up after {} attempts: {e}", self.attempt))
            }
            _ => {}
        }
        let hint = match &e {
            Fail::Busy(m) => crate::throttle::backoff_hint(m),
            _ => None,
        };
        let wait = hint
            .map(|h| h.min(Duration::from_secs(600)))
            .unwrap_or_else(|| policy.wait(self.attempt, super::random_u64()));
        if matches!(e, Fail::Busy(_)) {
            self.s
                .backoff_nanos
                .fetch_add(wait.as_nanos() as u64, Ordering::Relaxed);
        }
        tracing::warn!(
            "{} connection {}: {e}; retrying in {} ms ({}/{})",
            self.s.url,
            self.n + 1,
            wait.as_millis(),
            self.attempt,
            policy.retries
        );
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// The command lines that ask for `reqs` (grouped by [`group_lines`]); a grouped
    /// request takes its command's tag and length, and the window counts the length.
    fn command_lines(&self, reqs: &mut [Request]) -> Vec<u8> {
        use std::fmt::Write as _;
        let units = &self.shared.units;
        let mut line = String::new();
        let mut widened = 0;
        for (range, len) in group_lines(reqs) {
            let group = &mut reqs[range];
            if group[0].kind == Kind::Examine {
                // The name was checked when the EXAMINE was queued (`step`).
                let q = super::quote(&units[group[0].idx].mailbox).unwrap_or_default();
                let _ = write!(line, "{} EXAMINE {q}\r\n", group[0].tag);
                continue;
            }
            let (tag, offset) = (group[0].tag.clone(), group[0].offset);
            let _ = write!(line, "{tag} UID FETCH ");
            for (k, r) in group.iter_mut().enumerate() {
                let sep = if k == 0 { "" } else { "," };
                let _ = write!(line, "{sep}{}", units[r.idx].uid);
                widened += len - r.len;
                r.len = len;
                r.tag.clone_from(&tag);
            }
            let _ = write!(line, " (UID BODY.PEEK[]<{offset}.{len}>)\r\n");
        }
        if widened > 0 {
            self.shared.lock().used[self.n] += widened;
        }
        line.into_bytes()
    }

    /// Sends what fits, then reads one response. `Ok(false)`: nothing left to do.
    async fn step(&mut self) -> Result<bool, Fail> {
        let mut fresh = Vec::new();
        while self.inflight.len() + fresh.len() < DEPTH {
            let Some(r) = self.next_request() else {
                break;
            };
            let mailbox = &self.shared.units[r.idx].mailbox;
            if self.wire.as_deref() != Some(&**mailbox) {
                if let Err(why) = super::quote(mailbox) {
                    self.given_up(r, why);
                    continue;
                }
                self.wire = Some(mailbox.clone());
                let tag = self.tag();
                fresh.push(Request {
                    tag,
                    idx: r.idx,
                    kind: Kind::Examine,
                    offset: 0,
                    len: 0,
                    data: None,
                    alone: true,
                });
            }
            fresh.push(r);
        }
        let lines = self.command_lines(&mut fresh);
        self.inflight.extend(fresh);
        let conn = self.conn.as_mut().expect("connected");
        if !lines.is_empty() {
            send(&mut conn.client, &lines).await?;
        }
        if self.inflight.is_empty() {
            return self.idle().await;
        }
        let examines: Vec<String> = self
            .inflight
            .iter()
            .filter(|r| r.kind == Kind::Examine)
            .map(|r| r.tag.clone())
            .collect();
        let got = next_response(&mut conn.client, |r| got(r, &examines)).await?;
        match got {
            Got::Body { uid, origin, data } => {
                let units = &self.shared.units;
                // Only requests sent before the first EXAMINE still on the wire can be
                // answered now: the same UID may be on the wire for another folder.
                let r = self
                    .inflight
                    .iter_mut()
                    .take_while(|r| r.kind != Kind::Examine)
                    .find(|r| {
                        units[r.idx].uid == uid
                            && r.data.is_none()
                            && origin.is_none_or(|o| u64::from(o) == r.offset)
                    });
                if let Some(r) = r {
                    if data.len() as u64 > r.len {
                        return Err(Fail::Refused(format!(
                            "the server sent {} bytes for a {}-byte partial fetch of UID {uid}",
                            data.len(),
                            r.len
                        )));
                    }
                    r.data = Some(data);
                }
            }
            Got::Done { tag, result } => self.command_done(&tag, result)?,
            Got::Bye(m) => return Err(Fail::Lost(format!("the server ended the session: {m}"))),
            Got::UidValidity(v) => self.learned_uidvalidity = Some(v),
            Got::Other => {}
        }
        Ok(true)
    }

    /// The tagged answer to command `tag`: its requests are answered, sent again alone,
    /// refused, or (busy, lost) put back on the wire's list for [`Worker::failed`].
    fn command_done(&mut self, tag: &str, result: Result<(), Fail>) -> Result<(), Fail> {
        // Every request of the command (one, or a group), in the order sent.
        let (done, rest): (VecDeque<Request>, VecDeque<Request>) =
            std::mem::take(&mut self.inflight)
                .into_iter()
                .partition(|r| r.tag == *tag);
        self.inflight = rest;
        if done.is_empty() {
            // A command whose requests were given up (behind an EXAMINE that
            // failed) or sent again: nothing waits for its answer.
            return Ok(());
        }
        if done[0].kind == Kind::Examine {
            let ex = done.into_iter().next().expect("not empty");
            return self.examined(ex, result);
        }
        match result {
            Ok(()) => {
                self.attempt = 0;
                for r in done {
                    self.answered(r);
                }
            }
            Err(Fail::Refused(_)) if done.len() > 1 => {
                // One message may be what the server refuses: each goes again
                // alone, so that only that one is reported bad.
                for mut r in done {
                    r.data = None;
                    r.alone = true;
                    self.again.push_back(r);
                }
            }
            Err(Fail::Refused(m)) => {
                for r in done {
                    self.refused(r, m.clone());
                }
            }
            Err(e) => {
                for r in done.into_iter().rev() {
                    self.inflight.push_front(r);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Nothing on the wire: waits for room, or ends when every unit is taken and done.
    async fn idle(&mut self) -> Result<bool, Fail> {
        let wake = self.shared.room.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        {
            let st = self.shared.lock();
            if st.stop {
                return Ok(false);
            }
            if st.next >= self.shared.units.len() && self.jobs.is_empty() && self.again.is_empty() {
                return Ok(false);
            }
        }
        // Woken by the reader freeing room; the timeout only guards against a lost wake.
        let _ = tokio::time::timeout(Duration::from_secs(1), wake).await;
        Ok(true)
    }

    fn tag(&mut self) -> String {
        self.conn.as_mut().expect("connected").tag()
    }

    /// The next request to send, if one fits: what must be sent again first, then the
    /// messages this connection is fetching, then a new message.
    fn next_request(&mut self) -> Option<Request> {
        if let Some(mut r) = self.again.pop_front() {
            r.tag = self.tag();
            if let Some(j) = self.jobs.get_mut(&r.idx) {
                j.probing |= r.kind == Kind::Probe;
            }
            return Some(r);
        }
        if let Some(r) = self.job_request() {
            return Some(r);
        }
        self.new_job()
    }

    /// A probe or piece for a message this connection is fetching.
    fn job_request(&mut self) -> Option<Request> {
        let mut st = self.shared.lock();
        let head = st.head;
        // Jobs the reader passed over are dropped once their requests are answered.
        let mut chosen = None;
        for j in self.jobs.values_mut() {
            if j.idx < head {
                continue;
            }
            if let Some(search) = j.search.as_ref().filter(|_| j.size.is_none()) {
                if !j.probing {
                    let (offset, len) = search.next_probe();
                    j.probing = true;
                    chosen = Some((j.idx, Kind::Probe, offset, len));
                    break;
                }
            }
            let Some(size) = j.size else { continue };
            if j.requested >= size {
                continue;
            }
            // Pieces go out as far as the window allows (a large message over a long
            // round trip needs many on the wire); the message being read may have a
            // few more, so that it streams even when the window is full.
            let len = PIECE_BYTES.min(size - j.requested);
            let ahead = j.out + st.slots.get(&j.idx).map_or(0, |s| s.pieces.len());
            let head_may = j.idx == head && ahead < HEAD_PIECES;
            if !st.fits(self.n, len) && !head_may {
                continue;
            }
            chosen = Some((j.idx, Kind::Piece, j.requested, len));
            j.requested += len;
            break;
        }
        let (idx, kind, offset, len) = chosen?;
        st.used[self.n] += len;
        drop(st);
        let job = self.jobs.get_mut(&idx).expect("chosen from the jobs");
        job.out += 1;
        let tag = self.tag();
        Some(Request {
            tag,
            idx,
            kind,
            offset,
            len,
            data: None,
            alone: false,
        })
    }

    /// Takes the next message nobody has taken, if its first requests fit. A message in
    /// another folder goes out behind an EXAMINE (`step`), without waiting for the wire.
    fn new_job(&mut self) -> Option<Request> {
        // A message this connection has begun comes first: later ones must not take
        // the window its remaining pieces need (it would then stall the reader a round
        // trip per few pieces when it comes to it).
        let unfinished = |j: &Job| match j.size {
            Some(size) => j.requested < size,
            None => j.search.is_some(),
        };
        if self.jobs.values().any(unfinished) {
            return None;
        }
        let (idx, unit, window) = {
            let mut st = self.shared.lock();
            if st.next < st.head {
                st.next = st.head;
            }
            let idx = st.next;
            let unit = self.shared.units.get(idx)?;
            let first = small_request(unit.hint, st.window).unwrap_or(PROBE_BYTES + PIECE_BYTES);
            if idx != st.head && !st.fits(self.n, first) {
                return None;
            }
            st.next += 1;
            st.slots.entry(idx).or_default().owner = self.n;
            (idx, unit.clone(), st.window)
        };
        let mut job = Job {
            idx,
            search: None,
            probing: false,
            size: None,
            requested: 0,
            out: 1,
        };
        let (kind, offset, len) = match small_request(unit.hint, window) {
            Some(len) => (Kind::Small, 0, len),
            None => {
                // Probe and first piece go out together: a true hint costs no round trip.
                let search = SizeSearch::new(unit.hint);
                let (o, l) = search.next_probe();
                job.search = Some(search);
                job.probing = true;
                job.out = 2;
                job.requested = PIECE_BYTES;
                let tag = self.tag();
                self.again.push_back(Request {
                    tag,
                    idx,
                    kind: Kind::Piece,
                    offset: 0,
                    len: PIECE_BYTES,
                    data: None,
                    alone: false,
                });
                (Kind::Probe, o, l)
            }
        };
        self.shared.lock().used[self.n] += len + if kind == Kind::Probe { PIECE_BYTES } else { 0 };
        self.jobs.insert(idx, job);
        let tag = self.tag();
        Some(Request {
            tag,
            idx,
            kind,
            offset,
            len,
            data: None,
            alone: false,
        })
    }

    fn settle_error(&mut self, idx: usize, why: String) {
        let mut st = self.shared.lock();
        if let Some(s) = st.slots.get_mut(&idx) {
            s.error = Some(why);
        }
        drop(st);
        self.shared.arrived.notify_all();
    }

    /// A request the server answered OK (with data, or without: the message is gone).
    fn answered(&mut self, r: Request) {
        let unit = &self.shared.units[r.idx];
        let mut st = self.shared.lock();
        st.used[self.n] -= r.len;
        let Some(job) = self.jobs.get_mut(&r.idx) else {
            return;
        };
        job.out -= 1;
        let passed_over = r.idx < st.head || !st.slots.contains_key(&r.idx);
        let Some(data) = r.data else {
            if let Some(slot) = st.slots.get_mut(&r.idx) {
                slot.error = Some(format!(
                    "UID {} is no longer in {} at the source",
                    unit.uid, unit.folder
                ));
            }
            self.jobs.remove(&r.idx);
            drop(st);
            self.shared.arrived.notify_all();
            return;
        };
        let got = data.len() as u64;
        if passed_over {
            if job.out == 0 {
                self.jobs.remove(&r.idx);
            }
            return;
        }
        // Once the size is known, what is kept of a fetch is its piece.
        let mut keep = None;
        match r.kind {
            Kind::Small if got < r.len => {
                job.size = Some(got);
                job.requested = got;
                keep = Some(data);
            }
            Kind::Small => {
                // Larger than its hint said: measure it, then fetch it in pieces.
                job.search = Some(SizeSearch::new(unit.hint.max(r.len)));
            }
            Kind::Probe => job.probing = false,
            Kind::Piece => keep = Some(data),
            // Answered in `examined`, never here.
            Kind::Examine => {}
        }
        if job.size.is_none() {
            if let Some(search) = job.search.as_mut() {
                if let Some(size) = search.feed(r.offset, r.len, got) {
                    job.size = Some(size);
                }
            }
        }
        let slot = st.slots.get_mut(&r.idx).expect("checked above");
        if let Some(p) = keep.filter(|p| !p.is_empty() || r.kind == Kind::Piece) {
            slot.pieces.insert(r.offset, p);
            st.used[self.n] += got;
        }
        let slot = st.slots.get_mut(&r.idx).expect("checked above");
        if slot.size.is_none() {
            if let Some(size) = job.size {
                slot.size = Some(size);
                if size != unit.hint {
                    tracing::debug!(
                        "{}: UID {} of {}: RFC822.SIZE said {}, the message has {size} bytes",
                        self.s.url,
                        unit.uid,
                        unit.folder,
                        unit.hint
                    );
                }
            }
        }
        if job.size.is_some_and(|s| job.requested >= s) && job.out == 0 {
            slot.complete = true;
            self.jobs.remove(&r.idx);
        }
        drop(st);
        self.shared.arrived.notify_all();
    }

    /// The answer to an `EXAMINE` sent ahead of its folder's requests. When the folder
    /// is not open as listed (refused, or another UIDVALIDITY: its UIDs may name other
    /// messages now), every request behind it up to the next `EXAMINE` fails with the
    /// reason, and what the server sends for them is dropped (nothing matches it any
    /// more). A busy or lost answer goes to [`Worker::failed`], which reconnects.
    fn examined(&mut self, ex: Request, result: Result<(), Fail>) -> Result<(), Fail> {
        let unit = self.shared.units[ex.idx].clone();
        let learned = self.learned_uidvalidity.take();
        let why = match result {
            Ok(()) => match learned {
                Some(v) if v == unit.uidvalidity => return Ok(()),
                Some(v) => uidvalidity_changed(unit.uidvalidity, v),
                None => format!("the server gave no UIDVALIDITY for {:?}", &*unit.mailbox),
            },
            Err(Fail::Refused(m)) => m,
            Err(e) => {
                self.inflight.push_front(ex);
                return Err(e);
            }
        };
        if !self.inflight.iter().any(|r| r.kind == Kind::Examine) {
            // The folder is not open as listed: its next request opens it again.
            self.wire = None;
        }
        // The server answers in order, so what is in front is this folder's; a request
        // of another folder there (a server that did not) is left to its own answer.
        let mut others = Vec::new();
        while self
            .inflight
            .front()
            .is_some_and(|r| r.kind != Kind::Examine)
        {
            let r = self.inflight.pop_front().expect("checked");
            if self.shared.units[r.idx].mailbox == unit.mailbox {
                self.given_up(r, format!("opening {}: {why}", unit.folder));
            } else {
                others.push(r);
            }
        }
        for r in others.into_iter().rev() {
            self.inflight.push_front(r);
        }
        Ok(())
    }

    /// A request that will not be answered for its message: the message fails with
    /// `why` and this connection stops fetching it.
    fn given_up(&mut self, r: Request, why: String) {
        self.shared.lock().used[self.n] -= r.len;
        self.jobs.remove(&r.idx);
        self.settle_error(r.idx, why);
    }

    /// A request the server refused (NO or BAD that is not a back-off): the message is
    /// reported bad with the server's words; the pass goes on with the others.
    fn refused(&mut self, r: Request, why: String) {
        self.shared.lock().used[self.n] -= r.len;
        if let Some(job) = self.jobs.get_mut(&r.idx) {
            job.out -= 1;
            if job.out == 0 {
                self.jobs.remove(&r.idx);
            }
        }
        let uid = self.shared.units[r.idx].uid;
        self.settle_error(r.idx, format!("fetching UID {uid}: {why}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a server answers to `<offset.len>` for a message of `size` bytes.
    fn answer(size: u64, offset: u64, len: u64) -> u64 {
        size.saturating_sub(offset).min(len)
    }

    fn search(hint: u64, size: u64) -> (u64, usize) {
        let mut s = SizeSearch::new(hint);
        for probes in 1..200 {
            let (o, l) = s.next_probe();
            if let Some(found) = s.feed(o, l, answer(size, o, l)) {
                return (found, probes);
            }
        }
        panic!("no size found for hint {hint}, size {size}");
    }

    #[test]
    fn a_true_hint_is_confirmed_by_one_probe() {
        for size in [1, 100, PROBE_BYTES / 2 + 1, 3 << 20, 1 << 30] {
            assert_eq!(search(size, size), (size, 1), "size {size}");
        }
    }

    #[test]
    fn a_wrong_hint_finds_the_true_size_in_a_few_probes() {
        for (hint, size) in [
            (3 << 20, (3 << 20) + 10),
            (3 << 20, (3 << 20) - 10),
            (3 << 20, (3 << 20) + PROBE_BYTES * 3 + 7),
            (3 << 20, 5),
            (3 << 20, 0),
            (10_000, 64 << 20),
            (2 << 20, PROBE_BYTES / 2),
            (2 << 20, PROBE_BYTES),
            (0, 1 << 20),
        ] {
            let (found, probes) = search(hint, size);
            assert_eq!(found, size, "hint {hint}");
            assert!(probes <= 40, "hint {hint}, size {size}: {probes} probes");
        }
    }

    #[test]
    fn any_fetch_of_the_message_narrows_the_search() {
        let mut s = SizeSearch::new(3 << 20);
        // The first piece came back short: that is the size, whatever the probe says.
        assert_eq!(s.feed(0, PIECE_BYTES, 1234), Some(1234));
        let mut s = SizeSearch::new(3 << 20);
        assert_eq!(s.feed(0, PIECE_BYTES, PIECE_BYTES), None);
        let (o, l) = s.next_probe();
        assert_eq!(s.feed(o, l, l / 2), Some(o + l / 2));
    }

    fn req(kind: Kind, offset: u64, len: u64) -> Request {
        Request {
            tag: String::new(),
            idx: 0,
            kind,
            offset,
            len,
            data: None,
            alone: false,
        }
    }

    #[test]
    fn runs_of_whole_small_messages_share_a_command_and_nothing_else_does() {
        let small = |len| req(Kind::Small, 0, len);
        let mut alone = small(9000);
        alone.alone = true;
        let reqs = vec![
            small(5000),
            small(12000),
            small(7000),
            req(Kind::Probe, 3 << 20, PROBE_BYTES),
            req(Kind::Piece, 0, PIECE_BYTES),
            small(6000),
            alone,
            small(8000),
            req(Kind::Piece, PIECE_BYTES, PIECE_BYTES),
        ];
        let got = group_lines(&reqs);
        assert_eq!(
            got,
            vec![
                (0..3, 12000),
                (3..4, PROBE_BYTES),
                (4..5, PIECE_BYTES),
                (5..6, 6000),
                (6..7, 9000),
                (7..8, 8000),
                (8..9, PIECE_BYTES),
            ]
        );
    }

    #[test]
    fn a_group_is_capped_by_count_and_by_the_bytes_it_asks_for() {
        let many: Vec<Request> = (0..GROUP_MAX + 5)
            .map(|_| req(Kind::Small, 0, 100))
            .collect();
        let got = group_lines(&many);
        assert_eq!(
            got,
            vec![(0..GROUP_MAX, 100), (GROUP_MAX..GROUP_MAX + 5, 100)]
        );
        // A large one joins only while the group, asked for at its length, stays in bounds.
        let big = GROUP_BYTES / 3;
        let reqs = vec![
            req(Kind::Small, 0, 4096),
            req(Kind::Small, 0, 4096),
            req(Kind::Small, 0, big),
            req(Kind::Small, 0, 4096),
        ];
        let got = group_lines(&reqs);
        assert_eq!(got, vec![(0..3, big), (3..4, 4096)]);
        for (range, len) in &got {
            assert!(range.len() as u64 * len <= GROUP_BYTES);
        }
    }

    #[test]
    fn small_messages_are_asked_for_with_room_and_large_ones_in_pieces() {
        let window = 16 << 20;
        assert_eq!(small_request(0, window), Some(4096));
        assert_eq!(small_request(8000, window), Some(8000 + 1000 + 4096));
        // Up to half the window (at most WHOLE_MAX) goes whole, with its room.
        let m = 7 << 20;
        assert_eq!(small_request(m, window), Some(m + m / 8 + 4096));
        assert!(small_request(WHOLE_MAX, 64 << 20).is_none());
        // A small window still takes a piece's worth whole, no less.
        assert_eq!(whole_limit(1 << 20), PIECE_BYTES);
        assert!(small_request(PIECE_BYTES, 1 << 20).is_none());
        assert!(small_request(3 << 20, 4 << 20).is_none());
    }
}
