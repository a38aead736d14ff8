//! `mailferry bench`: how fast this machine moves mail through the real pipeline.
//!
//! Generates a deterministic corpus ([`crate::sample`]), moves it with the code of
//! `mailferry move` — `embedded` (agent, loopback-HTTPS proxy and store in one process,
//! as `move --volume` runs) or `network` (agents to a `serve` listening on loopback TLS,
//! authenticated with a token from the volume, as `move --proxy` runs) — durable at exit,
//! then verifies every run: every message present in the volume, every chunk
//! authenticated, both sides' receipts equal. A run that does not verify has no figures:
//! the command fails instead. It reports throughput, per-message latency, CPU seconds
//! per GB by stage, peak RSS and the machine, and optionally runs Dovecot's
//! `doveadm backup` on the same corpus in the same process for ratios.
//!
//! `benches/e2e.rs` calls [`run`]: there is one benchmark, with two front ends. It does
//! not tune anything, retry a failed run, or keep history (that is `benches/RESULTS.md`);
//! for many separate agent processes against one `serve` see `benches/load-serve.sh`.
//!
//! CPU per stage is measured per thread ([`cpu`]) and attributed by the thread's role:
//! the agent's reader thread is *source read* (file reads, framing, the agent's SHA-256);
//! async runtime workers are *transport/TLS* (both ends' TLS, HTTP, frame codec); the
//! store's session threads are *store write* (SHA-256, segment appends) and *encryption*,
//! split by their timed share; the store's commit pipeline has one thread per step
//! (`mf-store-sync`, `mf-store-index`, `mf-store-audit`), counted as *sync*, *index* and
//! *audit*;
//! the agent's checkpoint thread is *audit*; the rest (process start-up, the sampler,
//! threads' last milliseconds) is *other*. In embedded mode the agent's listing runs on
//! the blocking pool it shares with the store and counts as *store write* (small for a
//! Maildir; for mbox, whose listing reads and hashes every message, use network mode,
//! where the agent has its own runtime and its listing counts as *source read*).

//!
//! The parts: [`cpu`] samples CPU time per thread; `plan` turns the arguments into cases;
//! `corpus` writes (or reuses) each case's corpus and serves it over IMAP when asked;
//! `runner` does one measured, verified run; `stages` attributes CPU time to stages;
//! `dovecot_compare` runs Dovecot's own tools on the same corpus; `mbsync` runs Debian's
//! mbsync against the same IMAP server; `report` holds the report and its text rendering.
//!
//! `--latency` puts a [`crate::relay::DelayRelay`] between the scratch Dovecot and its
//! clients, one case row per delay; the relay runs on its own `mf-relay` thread in this
//! process, whose CPU is a peer's (left out of the totals, like Dovecot's) but whose
//! queued bytes are in the peak RSS (reported next to it).

mod corpus;
pub mod cpu;
mod dovecot_compare;
mod mbsync;
mod plan;
mod report;
mod runner;
mod stages;
mod workers;

pub use report::{
    render_text, BenchReport, CaseResult, Corpus, CorpusMailbox, DovecotComparison, DovecotRow,
    Machine, MbsyncRow, RunFigures, StageCpu, StageWall, Verified,
};

use crate::AppError;
use corpus::{corpus_dir, ensure_corpus, warm, ImapServer, WorkDir};
use dovecot_compare::compare_dovecot;
use mailferry_core::profile::Profile;
use plan::{plan, CaseSpec};
use runner::run_once;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[cfg(test)]
mod tests;

/// Messages of the default corpus (about 1.2 GB with the realistic model).
pub const DEFAULT_MESSAGES: usize = 20_000;
/// Messages of the small-message case (`--small`).
pub const SMALL_MESSAGES: usize = 50_000;
/// Size of each message of the small-message case.
pub const SMALL_MESSAGE_BYTES: u32 = 2048;
/// Default seed; with one mailbox it gives the corpus of `benches/RESULTS.md`.
pub const DEFAULT_SEED: u64 = 20_000;
/// Mean message size of the realistic model, bytes (see `sample::SizeModel::Realistic`).
pub const REALISTIC_MEAN_BYTES: u64 = 59_392;
/// The mailbox counts of `--scaling`.
pub const SCALING: [usize; 4] = [1, 2, 4, 8];

/// The corpus, for `mailferry bench --help` and `benches/RESULTS.md`.
pub const CORPUS_HELP: &str = "\
Corpus: generated, deterministic for a given --seed (the same bytes on every machine).
Default (realistic) model: 20,000 messages, about 1.2 GB; message sizes from a two-piece
log-normal with median ~7 KiB and mean ~58 KiB (1.4 KB floor, 8 MB cap); 10 folders per
mailbox (INBOX plus nested and non-ASCII ones), INBOX ~45 %; 60 % plain text, 20 %
multipart/alternative text+HTML, 20 % (the largest fifth) with incompressible base64
attachments; half CRLF, half LF; 7bit, 8bit, quoted-printable and base64 bodies; ~70 %
of the messages flagged in cur/, the rest in new/.
--small: 50,000 messages of ~2 KiB (2,048 B target, same mix of kinds): cost per message.
--source mbox writes the same messages as one mboxrd file per folder (no flags).
--source imap writes the Maildir corpus and serves it from a scratch Dovecot on loopback
(implicit TLS, one user per mailbox, its indexes built before the runs); Dovecot's CPU is
not in the figures, and the bytes are as IMAP serves them (LF line ends become CRLF).
--message-size B: every message ~B bytes. --messages N is the total over all mailboxes;
--size BYTES picks N from the model's mean.
The corpus is read once before the runs: every run, like every peer, reads it from the
page cache. A run is timed from the start of the move (volume open and proxy start
included in embedded mode; the network-mode serve is already listening) to the last
durable acknowledgement, then verified (not timed): every message in the volume, every
chunk authenticated, the receipts of both sides equal.";

// === arguments ===

/// How the agents reach the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Agent, proxy and store in one process over loopback HTTPS (`move --volume`).
    Embedded,
    /// Agents to a `serve` on loopback TLS with a volume token (`move --proxy`); the
    /// serve runs in this process on its own runtime.
    Network,
}

/// What the corpus is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A Maildir++ tree per mailbox.
    Maildir,
    /// A directory of mbox files per mailbox.
    Mbox,
    /// A live IMAP server: a scratch Dovecot (`crate::dovecot`) serving the Maildir
    /// corpus over implicit TLS, one IMAP user per mailbox.
    Imap,
}

/// What `mailferry bench` runs.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    /// Messages over all mailboxes (default [`DEFAULT_MESSAGES`], or [`SMALL_MESSAGES`]
    /// with `small`).
    pub messages: Option<usize>,
    /// Corpus size in bytes instead of a message count.
    pub size: Option<u64>,
    /// Every message about this many bytes ([`crate::sample::SizeModel::Fixed`]).
    pub message_size: Option<u32>,
    /// The small-message preset: 50,000 messages of 2 KiB unless set otherwise.
    pub small: bool,
    /// One case per value: that many mailboxes, the corpus split evenly between them.
    pub mailboxes: Vec<usize>,
    /// Mailboxes moved at once (default: all of the case's).
    pub concurrency: Option<usize>,
    /// Folders per mailbox.
    pub folders: usize,
    /// Folder-size cases instead: one mailbox, one folder of N messages, per value.
    pub per_folder: Vec<usize>,
    /// Source format.
    pub source: SourceKind,
    /// Embedded or network.
    pub mode: Mode,
    /// Runs per case; figures are the median run's (by MB/s).
    pub runs: usize,
    /// Corpus seed.
    pub seed: u64,
    /// Keep the corpus, the last volume and the states here (and reuse a corpus found
    /// here); otherwise everything is in a temp directory removed at the end.
    pub keep: Option<PathBuf>,
    /// Run `doveadm backup` (with and without mail_crypt) on the corpus too.
    pub compare_dovecot: bool,
    /// `--source imap` only: one row per value, each through a relay adding that delay
    /// in each direction between the scratch Dovecot and its clients (0: the relay
    /// without delay). Empty: no relay.
    pub latency: Vec<Duration>,
    /// `--source imap` only: run Debian's mbsync against the same server, through the
    /// same relay, for each row.
    pub compare_mbsync: bool,
    /// One case per value: the mailboxes moved by that many `mailferry worker` processes
    /// leasing them from a scratch PostgreSQL database ([`workers`]); needs `db` and
    /// `worker_exe`. Empty: the agents run in this process.
    pub workers: Vec<usize>,
    /// With `workers`: the PostgreSQL server to make each run's scratch database on (a
    /// URL of any database the user may connect to; it may hold a password: never
    /// printed).
    pub db: Option<String>,
    /// With `workers`: the `mailferry` binary to start the workers from.
    pub worker_exe: Option<PathBuf>,
    /// Migration profile of the moves.
    pub profile: Profile,
    /// Progress lines on stderr.
    pub progress: bool,
    /// The command line, echoed in the report.
    pub command: String,
    /// `--mode network` only: serve each run's volume from object storage, under a
    /// fresh prefix of this `s3://bucket/prefix` (the working copy is the run's volume
    /// directory), so acknowledgements wait for the upload rounds.
    pub s3_volume: Option<String>,
    /// How that bucket is reached.
    pub s3: mailferry_control::volume_admin::S3Args,
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            messages: None,
            size: None,
            message_size: None,
            small: false,
            mailboxes: vec![1],
            concurrency: None,
            folders: 10,
            per_folder: Vec::new(),
            source: SourceKind::Maildir,
            mode: Mode::Embedded,
            runs: 1,
            seed: DEFAULT_SEED,
            keep: None,
            compare_dovecot: false,
            latency: Vec::new(),
            compare_mbsync: false,
            workers: Vec::new(),
            db: None,
            worker_exe: None,
            profile: Profile::embedded_default(),
            progress: false,
            command: String::new(),
            s3_volume: None,
            s3: Default::default(),
        }
    }
}

/// Parses a byte count: `1200000000`, `1.2G`, `500M`, `64k` (powers of 1000) or `2GiB`,
/// `512MiB`, `64KiB` (powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use k, M, G, KiB, MiB, GiB)"
            ))
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count (e.g. 1200000000, 1.2G, 512MiB)"))?;
    if !(n.is_finite() && n > 0.0) {
        return Err(format!("{s:?}: must be more than 0 bytes"));
    }
    Ok((n * mult).round() as u64)
}

/// The most `--latency` takes: a one-way delay beyond it is a typo, not a WAN.
pub const MAX_LATENCY: Duration = Duration::from_secs(1);

/// Parses `--latency`: one-way delays separated by commas, `10ms`, `1.5ms`, `0`; a bare
/// number takes the unit of the next value that has one (`0,5,10,40ms` is four values
/// in milliseconds).
pub fn parse_latencies(s: &str) -> Result<Vec<Duration>, String> {
    let items: Vec<&str> = s.split(',').map(str::trim).collect();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let bare = !item.is_empty() && item.chars().all(|c| c.is_ascii_digit() || c == '.');
        let text = if bare {
            let unit = items[i + 1..]
                .iter()
                .map(|v| v.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.'))
                .find(|u| !u.is_empty());
            match unit {
                Some(u) => format!("{item}{u}"),
                None if item.parse::<f64>() == Ok(0.0) => "0s".to_string(),
                None => {
                    return Err(format!(
                        "--latency {s}: {item} needs a unit (e.g. {item}ms)"
                    ))
                }
            }
        } else {
            item.to_string()
        };
        let d = parse_duration(&text)
            .map_err(|e| format!("--latency {s}: {item:?} is not a delay like 10ms ({e})"))?;
        if d > MAX_LATENCY {
            return Err(format!(
                "--latency {s}: {item} one way is more than {} (did you mean ms?)",
                humantime::format_duration(MAX_LATENCY)
            ));
        }
        out.push(d);
    }
    Ok(out)
}

/// `10ms`, `1.5ms`, `2s` (humantime has no fractions; a fraction of the unit is read
/// here).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    if num.contains('.') {
        let n: f64 = num
            .parse()
            .map_err(|_| format!("{num:?} is not a number"))?;
        let one = humantime::parse_duration(&format!("1{unit}")).map_err(|e| e.to_string())?;
        return Ok(one.mul_f64(n));
    }
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

// === run ===

/// Runs the benchmark: every case, `runs` times each, verified. Fails with
/// [`AppError::Usage`] for impossible arguments and [`AppError::Failed`] if a run does
/// not verify. Blocking: it builds its own async runtimes (so their threads can be told
/// apart); call it from a plain thread.
pub fn run(args: &BenchArgs) -> Result<BenchReport, AppError> {
    let (model, cases) = plan(args)?;
    let work = WorkDir::new(args.keep.as_deref())?;
    let machine = Machine::detect();
    let mut results = Vec::new();
    let mut dovecot = None;
    // No --latency: one row per case, straight to the source.
    let delays: Vec<Option<Duration>> = if args.latency.is_empty() {
        vec![None]
    } else {
        args.latency.iter().copied().map(Some).collect()
    };
    for (i, case) in cases.iter().enumerate() {
        let corpus = ensure_corpus(work.path(), case, model, args)?;
        if args.progress {
            eprintln!(
                "bench: {}: {} messages, {:.1} MB (median {:.1} KiB, mean {:.1} KiB) in {} mailbox(es) x {} folder(s){}",
                case.name,
                corpus.messages,
                corpus.bytes as f64 / 1e6,
                corpus.median_bytes as f64 / 1024.0,
                corpus.mean_bytes as f64 / 1024.0,
                case.mailboxes,
                corpus.folders,
                if corpus.generate_seconds > 0.0 {
                    format!(", written in {:.1} s", corpus.generate_seconds)
                } else {
                    ", reused".into()
                }
            );
        }
        // The peers are measured with their source in the page cache; so is mailferry.
        warm(&corpus)?;
        let imap = match args.source {
            SourceKind::Imap => Some(ImapServer::start(&corpus, args.progress)?),
            _ => None,
        };
        for &delay in &delays {
            let result = run_case(work.path(), case, &corpus, imap.as_ref(), delay, args)?;
            if args.compare_dovecot && dovecot.is_none() && case.mailboxes == 1 {
                if args.progress {
                    eprintln!(
                        "bench: doveadm backup of the same corpus (with and without mail_crypt)"
                    );
                }
                dovecot = Some(compare_dovecot(
                    work.path(),
                    &corpus.mailboxes[0].path,
                    &case.name,
                    &result.median,
                )?);
            }
            results.push(result);
        }
        drop(imap);
        let dir = corpus_dir(work.path(), case, model, args);
        let next_reuses = cases
            .get(i + 1)
            .is_some_and(|next| corpus_dir(work.path(), next, model, args) == dir);
        if args.keep.is_none() && !next_reuses {
            // A temp corpus is not reused; free the disk before the next case.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    Ok(BenchReport {
        version: env!("CARGO_PKG_VERSION").to_string(),
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .into(),
        date: mailferry_core::rfc3339(mailferry_core::unix_now()),
        command: args.command.clone(),
        machine,
        // Workers reach the volume through a serve: network mode whatever was asked.
        mode: if args.workers.is_empty() {
            args.mode
        } else {
            Mode::Network
        },
        source: args.source,
        runs_per_case: args.runs,
        cases: results,
        dovecot,
    })
}

/// One row: the case's runs (through a relay adding `delay` each way, if given), their
/// median, and mbsync on the same route if asked for.
fn run_case(
    work: &Path,
    case: &CaseSpec,
    corpus: &Corpus,
    imap: Option<&ImapServer>,
    delay: Option<Duration>,
    args: &BenchArgs,
) -> Result<CaseResult, AppError> {
    let relay = match (imap, delay) {
        (Some(server), Some(d)) => Some(
            crate::relay::DelayRelay::start(server.addr(), d).map_err(|e| {
                AppError::Failed(format!("the delay relay in front of Dovecot: {e}"))
            })?,
        ),
        _ => None,
    };
    let route = imap.map(|s| s.route(relay.as_ref().map(|r| r.addr().port())));
    let name = match delay {
        Some(d) => format!("{}, {} one way", case.name, ms_text(d)),
        None => case.name.clone(),
    };
    if let (Some(r), true) = (&relay, args.progress) {
        eprintln!(
            "bench: {name}: through a relay on 127.0.0.1:{} adding {} each way",
            r.addr().port(),
            ms_text(r.one_way())
        );
    }
    let mbsync_route = route.filter(|_| args.compare_mbsync);
    if let (Some(_), true) = (mbsync_route, args.progress) {
        eprintln!(
            "bench: {name}: mbsync pulls the same mailboxes through the same route, \
             after each run of mailferry"
        );
    }
    let mut runs = Vec::new();
    let mut pulls = Vec::new();
    for n in 1..=args.runs {
        let fig = run_once(work, case, corpus, route, args, n)?;
        if args.progress {
            eprintln!(
                "bench: {name} run {n}/{}: {:.1} MB/s, {:.0} msg/s, {:.2} s, p99 {:.0} ms, peak RSS {} MiB, {:.2} CPU s/GB; verified",
                args.runs,
                fig.mb_per_s,
                fig.msgs_per_s,
                fig.seconds,
                fig.latency_ms_p99,
                fig.peak_rss_bytes >> 20,
                fig.cpu_seconds_per_gb.total
            );
        }
        runs.push(fig);
        if let Some(route) = &mbsync_route {
            pulls.push(mbsync::pull_run(
                work,
                route,
                corpus,
                case.concurrency,
                (n, args.runs),
                args.progress,
            )?);
        }
    }
    let median = median_run(&runs);
    let mbsync = match mbsync_route {
        Some(_) => Some(mbsync::compare_mbsync(corpus, &pulls, &median)?),
        None => None,
    };
    Ok(CaseResult {
        name,
        mailboxes: case.mailboxes,
        concurrency: case.concurrency,
        workers: case.workers,
        corpus: corpus.clone(),
        runs,
        median,
        latency_ms: delay.map(|d| d.as_secs_f64() * 1e3),
        relay_peak_queued_bytes: relay.as_ref().map(|r| r.peak_queued_bytes()),
        mbsync,
    })
}

/// `10 ms`, `0.5 ms`.
fn ms_text(d: Duration) -> String {
    format!("{} ms", d.as_secs_f64() * 1e3)
}

fn median_run(runs: &[RunFigures]) -> RunFigures {
    let mut sorted: Vec<&RunFigures> = runs.iter().collect();
    sorted.sort_by(|a, b| a.mb_per_s.total_cmp(&b.mb_per_s));
    sorted[sorted.len() / 2].clone()
}

fn source_name(source: SourceKind) -> &'static str {
    match source {
        SourceKind::Maildir => "maildir",
        SourceKind::Mbox => "mbox",
        SourceKind::Imap => "imap",
    }
}
