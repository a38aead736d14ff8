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

pub mod cpu;

use crate::sample::{
    self, CorpusWriter, Generated, MaildirWriter, MboxWriter, SampleSpec, SizeModel,
};
use crate::AppError;
use mailferry_control::moving::{Clock, Connected, Destination, MoveArgs};
use mailferry_core::profile::Profile;
use mailferry_core::report::MoveReport;
use mailferry_core::MailboxAddr;
use mailferry_proxy::StoreStats;
use mailferry_store::{Credential, Volume};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Every message about this many bytes ([`SizeModel::Fixed`]).
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
    /// Migration profile of the moves.
    pub profile: Profile,
    /// Progress lines on stderr.
    pub progress: bool,
    /// The command line, echoed in the report.
    pub command: String,
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
            profile: Profile::embedded_default(),
            progress: false,
            command: String::new(),
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

/// One configuration to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CaseSpec {
    name: String,
    mailboxes: usize,
    concurrency: usize,
    messages: usize,
    folders: usize,
}

/// Checks the arguments and turns them into the size model and the cases to run.
fn plan(args: &BenchArgs) -> Result<(SizeModel, Vec<CaseSpec>), AppError> {
    let usage = |m: String| Err(AppError::Usage(m));
    match args.source {
        SourceKind::Maildir | SourceKind::Mbox => {}
        SourceKind::Imap if !crate::dovecot::available() => {
            return usage(
                "--source imap serves the corpus from a scratch Dovecot, which is not \
                 installed: apt-get install dovecot-core dovecot-imapd (.ci/run does)"
                    .into(),
            )
        }
        SourceKind::Imap => {}
    }
    if args.runs == 0 {
        return usage("--runs must be at least 1".into());
    }
    if args.folders == 0 {
        return usage("--folders must be at least 1 (INBOX)".into());
    }
    let model = match (args.message_size, args.small) {
        (Some(0), _) => return usage("--message-size must be more than 0".into()),
        (Some(b), _) => SizeModel::Fixed(b),
        (None, true) => SizeModel::Fixed(SMALL_MESSAGE_BYTES),
        (None, false) => SizeModel::Realistic,
    };
    let mean = match model {
        SizeModel::Fixed(b) => u64::from(b),
        _ => REALISTIC_MEAN_BYTES,
    };
    let messages = match (args.messages, args.size) {
        (Some(_), Some(_)) => return usage("give --messages or --size, not both".into()),
        (Some(n), None) => n,
        (None, Some(bytes)) => bytes.div_ceil(mean) as usize,
        (None, None) if args.small => SMALL_MESSAGES,
        (None, None) => DEFAULT_MESSAGES,
    };
    if messages == 0 {
        return usage("the corpus needs at least 1 message".into());
    }
    if args.concurrency == Some(0) {
        return usage("--concurrency must be at least 1".into());
    }
    let cases = if !args.per_folder.is_empty() {
        if args.mailboxes != [1] {
            return usage("--per-folder runs one mailbox; leave out --mailboxes".into());
        }
        if args.per_folder.contains(&0) {
            return usage("--per-folder sizes must be at least 1".into());
        }
        args.per_folder
            .iter()
            .map(|&n| CaseSpec {
                name: format!("folder of {n}"),
                mailboxes: 1,
                concurrency: 1,
                messages: n,
                folders: 1,
            })
            .collect()
    } else {
        if args.mailboxes.is_empty() || args.mailboxes.contains(&0) {
            return usage("--mailboxes must be at least 1".into());
        }
        let mut cases = Vec::new();
        for &m in &args.mailboxes {
            if m > messages {
                return usage(format!(
                    "--mailboxes {m} needs at least {m} messages (--messages is the total)"
                ));
            }
            let c = args.concurrency.unwrap_or(m).min(m);
            cases.push(CaseSpec {
                name: format!("{m} mailbox{}", if m == 1 { "" } else { "es" }),
                mailboxes: m,
                concurrency: c,
                messages,
                folders: args.folders,
            });
        }
        cases
    };
    if args.compare_dovecot {
        if args.source != SourceKind::Maildir {
            return usage(
                "--compare dovecot reads the corpus as a Maildir: use --source maildir".into(),
            );
        }
        if !cases.iter().any(|c| c.mailboxes == 1) {
            return usage(
                "--compare dovecot compares one mailbox: include 1 in --mailboxes".into(),
            );
        }
        if which("doveadm").is_none() {
            return usage(
                "--compare dovecot: doveadm not found (apt-get install dovecot-core)".into(),
            );
        }
    }
    Ok((model, cases))
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|f| f.is_file())
    })
}

// === report ===

/// Everything `mailferry bench` measured; `--json` prints it. Fields are only added.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    /// mailferry version.
    pub version: String,
    /// `release` or `debug` (debug figures mean nothing).
    pub build: String,
    /// When it ran, RFC 3339.
    pub date: String,
    /// The command line.
    pub command: String,
    /// Where it ran.
    pub machine: Machine,
    /// Embedded or network.
    pub mode: Mode,
    /// Source format.
    pub source: SourceKind,
    /// Runs per case.
    pub runs_per_case: usize,
    /// One entry per configuration.
    pub cases: Vec<CaseResult>,
    /// `doveadm backup` on the first one-mailbox case's corpus, if asked for.
    pub dovecot: Option<DovecotComparison>,
}

/// The machine.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` of /proc/cpuinfo.
    pub cpu_model: String,
    /// `cpu family` and `model` of /proc/cpuinfo (virtual machines often name only the
    /// brand: AMD family 23 is Zen 1/2, 25 is Zen 3/4).
    pub cpu_family_model: String,
    /// CPUs this process may use.
    pub cores: usize,
    /// Of the CPU features that matter here (aes, pclmulqdq, avx2, sha_ni, vaes,
    /// vpclmulqdq, avx512f), those present.
    pub cpu_features: Vec<String>,
    /// MemTotal.
    pub memory_bytes: u64,
    /// Kernel release.
    pub kernel: String,
}

impl Machine {
    /// Reads /proc (Linux); fields stay empty elsewhere.
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
        };
        let flags = field("flags").unwrap_or_default();
        let flags: Vec<&str> = flags.split_whitespace().collect();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpu_model: field("model name").unwrap_or_else(|| "unknown".into()),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_family_model: format!(
                "family {}, model {}",
                field("cpu family").unwrap_or_default(),
                field("model").unwrap_or_default()
            ),
            cpu_features: [
                "aes",
                "pclmulqdq",
                "avx2",
                "sha_ni",
                "vaes",
                "vpclmulqdq",
                "avx512f",
            ]
            .iter()
            .filter(|f| flags.contains(f))
            .map(|f| f.to_string())
            .collect(),
            memory_bytes: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        }
    }
}

/// The corpus of a case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Corpus {
    /// Source format of the files.
    pub format: SourceKind,
    /// `realistic` or `fixed N B`.
    pub model: String,
    /// Seed of the first mailbox; mailbox i uses seed + i.
    pub seed: u64,
    /// Messages, all mailboxes.
    pub messages: u64,
    /// Bytes of message files, all mailboxes.
    pub bytes: u64,
    /// Median message size.
    pub median_bytes: u64,
    /// Mean message size.
    pub mean_bytes: u64,
    /// Folders per mailbox.
    pub folders: usize,
    /// Seconds it took to write (0 when reused from `--keep`).
    pub generate_seconds: f64,
    /// Each mailbox.
    pub mailboxes: Vec<CorpusMailbox>,
}

/// One mailbox of a corpus.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CorpusMailbox {
    /// Destination address.
    pub address: String,
    /// Its source tree.
    pub path: PathBuf,
    /// Messages.
    pub messages: u64,
    /// Bytes.
    pub bytes: u64,
}

/// The result of one configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseResult {
    /// `1 mailbox`, `4 mailboxes`, `folder of 10000`.
    pub name: String,
    /// Mailboxes in the case.
    pub mailboxes: usize,
    /// Moved at once.
    pub concurrency: usize,
    /// What was moved.
    pub corpus: Corpus,
    /// Every run, in order.
    pub runs: Vec<RunFigures>,
    /// The median run by MB/s (for an even count, the faster of the two middle ones).
    pub median: RunFigures,
}

/// The figures of one verified run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunFigures {
    /// 1-based.
    pub run: usize,
    /// Wall time of the move, seconds.
    pub seconds: f64,
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// 10^6 bytes per second.
    pub mb_per_s: f64,
    /// Messages per second.
    pub msgs_per_s: f64,
    /// Read start to durable acknowledgement, median (the median of the mailboxes'
    /// medians when there are several).
    pub latency_ms_p50: f64,
    /// 99th percentile (the worst mailbox's when there are several).
    pub latency_ms_p99: f64,
    /// Peak RSS of the process during the run (agents and store together in network
    /// mode, which runs the serve in this process).
    pub peak_rss_bytes: u64,
    /// True if the peak could be reset before the run; false: since process start.
    pub peak_rss_per_run: bool,
    /// RSS when the run started: what earlier runs (and the corpus writer) left
    /// allocated in this process. The first run's peak is what one `mailferry move`
    /// process reaches; later runs start higher as the allocator keeps freed memory.
    pub rss_at_start_bytes: u64,
    /// CPU seconds by stage.
    pub cpu_seconds: StageCpu,
    /// CPU seconds per 10^9 bytes moved, by stage.
    pub cpu_seconds_per_gb: StageCpu,
    /// CPU seconds per thread name (digits dropped), as measured.
    pub cpu_seconds_by_thread: BTreeMap<String, f64>,
    /// Wall seconds of the timed stages (summed over mailboxes and store sessions).
    pub stage_wall_seconds: StageWall,
    /// What the verification found.
    pub verified: Verified,
}

/// CPU seconds by stage (see the module documentation for how threads are attributed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageCpu {
    /// Agent reader: file reads, framing, the agent's SHA-256.
    pub source_read: f64,
    /// Async workers of both ends: TLS, HTTP, frame codec.
    pub transport_tls: f64,
    /// Store sessions without encryption: SHA-256, segment appends.
    pub store_write: f64,
    /// Store sessions: AES-256-GCM.
    pub encryption: f64,
    /// Commit thread, SQLite share.
    pub index: f64,
    /// Commit thread's audit share plus the agent's checkpoint thread.
    pub audit: f64,
    /// Commit thread, fdatasync share.
    pub sync: f64,
    /// Everything else.
    pub other: f64,
    /// The process, all threads.
    pub total: f64,
}

impl StageCpu {
    fn scaled(&self, f: f64) -> StageCpu {
        StageCpu {
            source_read: self.source_read * f,
            transport_tls: self.transport_tls * f,
            store_write: self.store_write * f,
            encryption: self.encryption * f,
            index: self.index * f,
            audit: self.audit * f,
            sync: self.sync * f,
            other: self.other * f,
            total: self.total * f,
        }
    }
}

/// Wall seconds by stage, as the pipeline times them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StageWall {
    /// Agents: reading source files.
    pub source_read: f64,
    /// Agents: writing to the TLS connection.
    pub transport: f64,
    /// Agents: waiting for the writer or the window.
    pub stalled: f64,
    /// Store: hashing, encrypting, appending.
    pub store_write: f64,
    /// Of it: AES-256-GCM.
    pub encryption: f64,
    /// Store: group commits (own thread, overlapping the writes).
    pub commit: f64,
    /// Of it: fdatasync.
    pub sync: f64,
    /// Of it: SQLite.
    pub index: f64,
    /// Of it: audit records.
    pub audit: f64,
    /// Group commits made.
    pub commits: u64,
}

/// What the verification of a run found (a run that fails it has no figures).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Verified {
    /// Messages whose every chunk authenticated.
    pub messages_checked: u64,
    /// Record bytes authenticated.
    pub bytes_checked: u64,
    /// Mailboxes whose volume receipt equals the agent's and counts every message.
    pub receipts_matching: usize,
}

/// `doveadm backup` of the same corpus, in the same process and run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DovecotComparison {
    /// Dovecot's version.
    pub version: String,
    /// The case whose corpus (and median figures) it is compared with.
    pub case: String,
    /// One row per Dovecot configuration.
    pub rows: Vec<DovecotRow>,
}

/// One `doveadm backup` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DovecotRow {
    /// `dovecot_mailcrypt` or `dovecot_plain`.
    pub name: String,
    /// Encrypted at rest (mail_crypt).
    pub encrypted: bool,
    /// Wall seconds, `sync` included.
    pub seconds: f64,
    /// 10^6 bytes per second.
    pub mb_per_s: f64,
    /// Messages per second.
    pub msgs_per_s: f64,
    /// mailferry's median MB/s over this.
    pub mailferry_ratio_mb: f64,
    /// mailferry's median msg/s over this.
    pub mailferry_ratio_msgs: f64,
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
    for case in &cases {
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
        let mut runs = Vec::new();
        for n in 1..=args.runs {
            let fig = run_once(work.path(), case, &corpus, imap.as_ref(), args, n)?;
            if args.progress {
                eprintln!(
                    "bench: {} run {n}/{}: {:.1} MB/s, {:.0} msg/s, {:.2} s, p99 {:.0} ms, peak RSS {} MiB, {:.2} CPU s/GB; verified",
                    case.name,
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
        }
        let median = median_run(&runs);
        if args.compare_dovecot && dovecot.is_none() && case.mailboxes == 1 {
            if args.progress {
                eprintln!("bench: doveadm backup of the same corpus (with and without mail_crypt)");
            }
            dovecot = Some(compare_dovecot(
                work.path(),
                &corpus.mailboxes[0].path,
                &case.name,
                &median,
            )?);
        }
        drop(imap);
        if args.keep.is_none() {
            // A temp corpus is not reused; free the disk before the next case.
            let dir = corpus_dir(work.path(), case, model, args);
            let _ = std::fs::remove_dir_all(dir);
        }
        results.push(CaseResult {
            name: case.name.clone(),
            mailboxes: case.mailboxes,
            concurrency: case.concurrency,
            corpus,
            runs,
            median,
        });
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
        mode: args.mode,
        source: args.source,
        runs_per_case: args.runs,
        cases: results,
        dovecot,
    })
}

fn median_run(runs: &[RunFigures]) -> RunFigures {
    let mut sorted: Vec<&RunFigures> = runs.iter().collect();
    sorted.sort_by(|a, b| a.mb_per_s.total_cmp(&b.mb_per_s));
    sorted[sorted.len() / 2].clone()
}

/// The temp directory, or the one given with `--keep`.
enum WorkDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl WorkDir {
    fn new(keep: Option<&Path>) -> Result<WorkDir, AppError> {
        match keep {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| AppError::io(dir, e))?;
                Ok(WorkDir::Kept(dir.to_path_buf()))
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("mailferry-bench-")
                    .tempdir()
                    .map_err(|e| AppError::io(&std::env::temp_dir(), e))?;
                Ok(WorkDir::Temp(t))
            }
        }
    }

    fn path(&self) -> &Path {
        match self {
            WorkDir::Temp(t) => t.path(),
            WorkDir::Kept(p) => p,
        }
    }
}

fn source_name(source: SourceKind) -> &'static str {
    match source {
        SourceKind::Maildir => "maildir",
        SourceKind::Mbox => "mbox",
        SourceKind::Imap => "imap",
    }
}

fn model_name(model: SizeModel) -> String {
    match model {
        SizeModel::Realistic => "realistic".into(),
        SizeModel::Small => "small".into(),
        SizeModel::Fixed(b) => format!("fixed {b} B"),
    }
}

fn corpus_dir(work: &Path, case: &CaseSpec, model: SizeModel, args: &BenchArgs) -> PathBuf {
    let model = match model {
        SizeModel::Fixed(b) => format!("fixed{b}"),
        m => model_name(m),
    };
    work.join("corpus").join(format!(
        "{}-{model}-{}msg-{}mb-{}f-seed{}",
        source_name(args.source),
        case.messages,
        case.mailboxes,
        case.folders,
        args.seed
    ))
}

/// Records message sizes on the way to the real writer.
struct Tally<'a> {
    inner: &'a mut dyn CorpusWriter,
    sizes: &'a mut Vec<u64>,
}

impl CorpusWriter for Tally<'_> {
    fn folders(&mut self, names: &[String]) -> std::io::Result<()> {
        self.inner.folders(names)
    }
    fn message(&mut self, msg: &Generated<'_>) -> std::io::Result<()> {
        self.sizes.push(msg.bytes.len() as u64);
        self.inner.message(msg)
    }
    fn finish(&mut self) -> std::io::Result<()> {
        self.inner.finish()
    }
}

/// Writes the case's corpus, or reuses a complete one left by `--keep`.
fn ensure_corpus(
    work: &Path,
    case: &CaseSpec,
    model: SizeModel,
    args: &BenchArgs,
) -> Result<Corpus, AppError> {
    let dir = corpus_dir(work, case, model, args);
    let done = dir.join("corpus.json");
    if let Ok(bytes) = std::fs::read(&done) {
        if let Ok(mut c) = serde_json::from_slice::<Corpus>(&bytes) {
            c.generate_seconds = 0.0;
            return Ok(c);
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| AppError::io(&dir, e))?;
    }
    if args.progress {
        eprintln!(
            "bench: writing the corpus of {} in {}",
            case.name,
            dir.display()
        );
    }
    let t0 = Instant::now();
    let mut sizes = Vec::with_capacity(case.messages);
    let mut mailboxes = Vec::new();
    for i in 0..case.mailboxes {
        // An even split; the first mailboxes take the remainder.
        let n = case.messages / case.mailboxes + usize::from(i < case.messages % case.mailboxes);
        let path = dir.join(format!("mailbox-{i}"));
        let spec = SampleSpec {
            seed: args.seed.wrapping_add(i as u64),
            messages: n,
            folders: case.folders,
            size: model,
            markers: None,
        };
        let (mut maildir, mut mbox);
        let inner: &mut dyn CorpusWriter = match args.source {
            SourceKind::Mbox => {
                mbox = MboxWriter::new(&path);
                &mut mbox
            }
            _ => {
                maildir = MaildirWriter::new(&path);
                &mut maildir
            }
        };
        let summary = sample::generate(
            &spec,
            &mut Tally {
                inner,
                sizes: &mut sizes,
            },
        )
        .map_err(|e| AppError::io(&path, e))?;
        mailboxes.push(CorpusMailbox {
            address: format!("bench{i}@example.com"),
            path,
            messages: summary.messages as u64,
            bytes: summary.bytes,
        });
    }
    sizes.sort_unstable();
    let bytes: u64 = sizes.iter().sum();
    let corpus = Corpus {
        format: args.source,
        model: model_name(model),
        seed: args.seed,
        messages: sizes.len() as u64,
        bytes,
        median_bytes: sizes
            .get(sizes.len().saturating_sub(1) / 2)
            .copied()
            .unwrap_or(0),
        mean_bytes: bytes / (sizes.len() as u64).max(1),
        folders: case.folders,
        generate_seconds: t0.elapsed().as_secs_f64(),
        mailboxes,
    };
    // Written last: its presence means the corpus is complete.
    let json = serde_json::to_vec_pretty(&corpus).expect("corpus serializes");
    std::fs::write(&done, json).map_err(|e| AppError::io(&done, e))?;
    Ok(corpus)
}

/// The scratch Dovecot of `--source imap`: the Maildir corpus's mailboxes are its users.
struct ImapServer {
    dovecot: crate::dovecot::Dovecot,
}

impl ImapServer {
    /// Serves `corpus` (a Maildir corpus: `<dir>/mailbox-<i>`, user `mailbox-<i>`) and
    /// builds Dovecot's indexes, so the runs time serving, not Dovecot's first scan.
    fn start(corpus: &Corpus, progress: bool) -> Result<ImapServer, AppError> {
        let root = corpus
            .mailboxes
            .first()
            .and_then(|m| m.path.parent())
            .ok_or_else(|| AppError::Failed("the corpus has no mailbox".into()))?
            .to_path_buf();
        let users: Vec<String> = corpus.mailboxes.iter().map(Self::user).collect();
        let names: Vec<&str> = users.iter().map(String::as_str).collect();
        let dovecot = crate::dovecot::Dovecot::start_with(Some(&root), &names)?;
        if progress {
            eprintln!(
                "bench: Dovecot serves the corpus on imaps://127.0.0.1:{}; indexing it",
                dovecot.imaps_port
            );
        }
        for u in &users {
            dovecot.doveadm(&["mailbox", "status", "-u", u, "messages", "*"])?;
        }
        Ok(ImapServer { dovecot })
    }

    fn user(mb: &CorpusMailbox) -> String {
        mb.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The source spec and options of one mailbox.
    fn source(&self, mb: &CorpusMailbox) -> (String, mailferry_agent::source::SourceOptions) {
        let options = mailferry_agent::source::SourceOptions {
            password_file: Some(self.dovecot.password_file.clone()),
            source_ca: Some(self.dovecot.ca_pem.clone()),
            ..Default::default()
        };
        (self.dovecot.user_url(&Self::user(mb), true), options)
    }
}

/// Reads every file of the corpus once, so that every run finds it in the page cache (a
/// corpus reused from `--keep` may have been evicted since it was written).
fn warm(corpus: &Corpus) -> Result<(), AppError> {
    let mut buf = vec![0u8; 1 << 20];
    let mut dirs: Vec<PathBuf> = corpus.mailboxes.iter().map(|m| m.path.clone()).collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| AppError::io(&dir, e))? {
            let path = entry.map_err(|e| AppError::io(&dir, e))?.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let mut f = std::fs::File::open(&path).map_err(|e| AppError::io(&path, e))?;
            while std::io::Read::read(&mut f, &mut buf).map_err(|e| AppError::io(&path, e))? > 0 {}
        }
    }
    Ok(())
}

/// A tokio runtime whose threads say what they are: `<prefix>-w<n>` for the async
/// workers, `<prefix>-b<n>` for blocking-pool threads. Tokio queues its worker tasks
/// first and starts a thread for each, through the same name function, so the first
/// `workers` names are theirs — provided those threads take the worker tasks before any
/// blocking task is queued (a thread started later could otherwise take a worker task
/// from the shared queue on a busy machine): so this returns once every worker runs.
fn runtime(prefix: &'static str, workers: usize) -> Result<tokio::runtime::Runtime, AppError> {
    let rt = named_runtime(prefix, workers)?;
    let running = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let mut all = Vec::new();
        for _ in 0..workers {
            let running = running.clone();
            // Each task holds its worker until all are held: every worker thread ran.
            all.push(tokio::spawn(async move {
                running.fetch_add(1, Ordering::SeqCst);
                let t0 = Instant::now();
                while running.load(Ordering::SeqCst) < workers
                    && t0.elapsed() < Duration::from_secs(10)
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }));
        }
        for task in all {
            let _ = task.await;
        }
    });
    Ok(rt)
}

fn named_runtime(
    prefix: &'static str,
    workers: usize,
) -> Result<tokio::runtime::Runtime, AppError> {
    let n = Arc::new(AtomicUsize::new(0));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name_fn(move || {
            let i = n.fetch_add(1, Ordering::Relaxed);
            if i < workers {
                format!("{prefix}-w{i}")
            } else {
                format!("{prefix}-b{}", i - workers)
            }
        })
        .enable_all()
        .build()
        .map_err(|e| AppError::Io {
            path: "async runtime".into(),
            source: e,
        })
}

/// The serve of a network-mode run, on its own runtime as it would be in its own process.
struct Server {
    rt: tokio::runtime::Runtime,
    url: String,
    ca: PathBuf,
    token_file: PathBuf,
    stats: Arc<StoreStats>,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<(), AppError>>,
}

impl Server {
    fn start(
        dir: &Path,
        volume: &Path,
        key: &Path,
        args: &BenchArgs,
        case: &CaseSpec,
    ) -> Result<Server, AppError> {
        let credential = Credential::KeyFile(key.to_path_buf());
        let token_file = dir.join("agent.token");
        mailferry_control::tokens::issue(volume, &credential, "example.com", &token_file, None)?;
        let rt = runtime("mf-srv", workers())?;
        let serve_args = mailferry_control::serve::ServeArgs {
            volume: volume.to_path_buf(),
            credential,
            listen: "127.0.0.1:0".parse().expect("literal address"),
            tls: None,
            tls_dir: Some(dir.join("tls")),
            profile: args.profile.clone(),
            header_timeout: mailferry_proxy::server::HANDSHAKE_TIMEOUT,
            limits: mailferry_proxy::Limits {
                max_streams_per_token: case.concurrency.max(32),
                max_streams: case.concurrency.max(256),
                ..Default::default()
            },
            client_ca: None,
        };
        let serving = rt.block_on(mailferry_control::serve::bind_serve(&serve_args))?;
        let url = format!("https://{}", serving.local_addr());
        let ca = serving
            .ca
            .clone()
            .expect("serve generated its TLS material");
        let stats = serving.stats.clone();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let handle = rt.spawn(serving.run(async {
            let _ = stop_rx.await;
        }));
        Ok(Server {
            rt,
            url,
            ca,
            token_file,
            stats,
            stop,
            handle,
        })
    }

    /// Stops accepting, drains, and lets go of the volume.
    fn stop(self) -> Result<(), AppError> {
        let _ = self.stop.send(());
        let res = self.rt.block_on(self.handle).expect("serve task panicked");
        drop(self.rt);
        res
    }
}

fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The reports of a run's moves and how long they took together.
struct Moved {
    reports: Vec<MoveReport>,
    seconds: f64,
    stats: Arc<StoreStats>,
}

/// Moves every mailbox of the corpus, `concurrency` at a time, through one destination.
async fn move_all(
    dest: Destination,
    source: SourceKind,
    imap: Option<&ImapServer>,
    corpus: &Corpus,
    concurrency: usize,
    profile: &Profile,
    dir: &Path,
) -> Result<Moved, AppError> {
    let t0 = Instant::now();
    let connected = Arc::new(Connected::open(&dest, profile).await?);
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut set = tokio::task::JoinSet::new();
    for (i, mb) in corpus.mailboxes.iter().enumerate() {
        let (spec, source_options) = match imap {
            Some(server) => server.source(mb),
            None => (
                format!("{}:{}", source_name(source), mb.path.display()),
                Default::default(),
            ),
        };
        let args = MoveArgs {
            source: spec,
            mailbox: MailboxAddr::parse(&mb.address)?,
            destination: dest.clone(),
            state: dir.join(format!("state-{i}")),
            profile: profile.clone(),
            source_options,
        };
        let (connected, slots) = (connected.clone(), slots.clone());
        set.spawn(async move {
            let _slot = slots.acquire_owned().await.expect("semaphore never closed");
            (i, connected.run_pass(&args, Clock::start()).await)
        });
    }
    let mut reports: Vec<Option<MoveReport>> = vec![None; corpus.mailboxes.len()];
    while let Some(done) = set.join_next().await {
        let (i, report) = done.expect("agent task panicked");
        reports[i] = Some(report?);
    }
    let seconds = t0.elapsed().as_secs_f64();
    let stats = connected.stats.clone();
    if let Ok(c) = Arc::try_unwrap(connected) {
        c.close().await;
    }
    Ok(Moved {
        reports: reports
            .into_iter()
            .map(|r| r.expect("every agent reported"))
            .collect(),
        seconds,
        stats,
    })
}

/// One run: a new volume, the moves timed, then verified.
fn run_once(
    work: &Path,
    case: &CaseSpec,
    corpus: &Corpus,
    imap: Option<&ImapServer>,
    args: &BenchArgs,
    n: usize,
) -> Result<RunFigures, AppError> {
    let dir = work.join("run");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| AppError::io(&dir, e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| AppError::io(&dir, e))?;
    let volume = dir.join("volume");
    let key = dir.join("volume.key");
    Volume::init(&volume, &key)?;
    let server = match args.mode {
        Mode::Network => Some(Server::start(&dir, &volume, &key, args, case)?),
        Mode::Embedded => None,
    };
    let dest = match &server {
        Some(s) => Destination::Remote {
            url: s.url.clone(),
            ca: s.ca.clone(),
            token_file: s.token_file.clone(),
        },
        None => Destination::Local {
            volume: volume.clone(),
            credential: Credential::KeyFile(key.clone()),
        },
    };
    // Dirty pages of the corpus and of earlier runs are not this run's to flush.
    let _ = std::process::Command::new("sync").status();

    let per_run_rss = mailferry_control::rss::reset_peak_rss();
    let rss_at_start_bytes = mailferry_control::rss::current_rss_bytes();
    // Each sample reads two /proc files per thread (~0.5 ms): every 50 ms costs the run
    // ~1 % of a core (every 20 ms cost ~3 %, taken from the pipeline it measures); a
    // thread that ends loses at most its last 50 ms, which the process total still has.
    let sampler = cpu::Sampler::start(Duration::from_millis(50));
    let rt = runtime(
        match args.mode {
            Mode::Network => "mf-agt",
            Mode::Embedded => "mf-emb",
        },
        workers(),
    )?;
    let moved = rt.block_on(move_all(
        dest,
        args.source,
        imap,
        corpus,
        case.concurrency,
        &args.profile,
        &dir,
    ));
    // Before the runtime goes: its threads are still there for the last sample.
    let usage = sampler.stop();
    drop(rt);
    let peak_rss_bytes = mailferry_control::rss::peak_rss_bytes();
    let store_stats = server.as_ref().map(|s| s.stats.clone());
    if let Some(s) = server {
        s.stop()?;
    }
    let moved = moved?;
    let stats = store_stats.unwrap_or_else(|| moved.stats.clone());

    let served_as_crlf = imap.is_some();
    let verified = verify(
        &volume,
        &key,
        &args.profile,
        corpus,
        &moved.reports,
        served_as_crlf,
    )
    .map_err(|why| {
        AppError::Failed(format!(
            "{} run {n} did not verify, so it has no figures: {why}",
            case.name
        ))
    })?;

    let messages: u64 = moved.reports.iter().map(|r| r.items_moved).sum();
    let bytes: u64 = moved.reports.iter().map(|r| r.bytes_moved).sum();
    let seconds = moved.seconds.max(1e-9);
    let (cpu_seconds, by_thread) = attribute(&usage, &stats);
    let mut p50s: Vec<f64> = moved.reports.iter().map(|r| r.latency_ms_p50).collect();
    p50s.sort_by(f64::total_cmp);
    let secs = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e9;
    let agents = |f: fn(&MoveReport) -> f64| moved.reports.iter().map(f).sum::<f64>();
    Ok(RunFigures {
        run: n,
        seconds,
        messages,
        bytes,
        mb_per_s: bytes as f64 / 1e6 / seconds,
        msgs_per_s: messages as f64 / seconds,
        latency_ms_p50: p50s[p50s.len() / 2],
        latency_ms_p99: moved
            .reports
            .iter()
            .map(|r| r.latency_ms_p99)
            .fold(0.0, f64::max),
        peak_rss_bytes,
        peak_rss_per_run: per_run_rss,
        rss_at_start_bytes,
        cpu_seconds_per_gb: cpu_seconds.scaled(1e9 / (bytes.max(1) as f64)),
        cpu_seconds,
        cpu_seconds_by_thread: by_thread,
        stage_wall_seconds: StageWall {
            source_read: agents(|r| r.stages.source_read),
            transport: agents(|r| r.stages.transport),
            stalled: agents(|r| r.stages.stalled),
            store_write: secs(&stats.write_nanos),
            encryption: secs(&stats.encrypt_nanos),
            commit: secs(&stats.commit_nanos),
            sync: secs(&stats.sync_nanos),
            index: secs(&stats.index_nanos),
            audit: secs(&stats.audit_nanos),
            commits: stats.commits.load(Ordering::Relaxed),
        },
        verified,
    })
}

/// Checks a run against its corpus: each move reported every message and nothing bad,
/// the volume holds exactly them (receipt roots equal, counts equal), and every chunk of
/// every message authenticates.
fn verify(
    volume: &Path,
    key: &Path,
    profile: &Profile,
    corpus: &Corpus,
    reports: &[MoveReport],
    served_as_crlf: bool,
) -> Result<Verified, String> {
    let v = Volume::open(volume, key, &profile.store).map_err(|e| e.to_string())?;
    let mut receipts_matching = 0;
    for (mb, r) in corpus.mailboxes.iter().zip(reports) {
        if !r.bad_items.is_empty() {
            let b = &r.bad_items[0];
            return Err(format!(
                "{}: {} bad item(s), first {}: {}",
                mb.address,
                r.bad_items.len(),
                b.item,
                b.reason
            ));
        }
        // IMAP serves LF line ends as CRLF: a message can only grow on the way.
        let bytes_ok = if served_as_crlf {
            r.bytes_moved >= mb.bytes
        } else {
            r.bytes_moved == mb.bytes
        };
        if r.items_moved != mb.messages || !bytes_ok {
            return Err(format!(
                "{}: moved {} messages / {} bytes of {} / {}",
                mb.address, r.items_moved, r.bytes_moved, mb.messages, mb.bytes
            ));
        }
        let address = MailboxAddr::parse(&mb.address).map_err(|e| e.to_string())?;
        let (root, items) = v.receipt_root(&address).map_err(|e| e.to_string())?;
        if items != mb.messages || root != r.receipt.source_root {
            return Err(format!(
                "{}: the volume holds {items} of {} messages, receipt root {root} vs the agent's {}",
                mb.address, mb.messages, r.receipt.source_root
            ));
        }
        receipts_matching += 1;
    }
    let check = v.verify().map_err(|e| e.to_string())?;
    if let Some(d) = check.damaged.first() {
        return Err(format!(
            "{} damaged item(s), first {} in {}: {}",
            check.damaged.len(),
            d.item,
            d.mailbox,
            d.reason
        ));
    }
    if check.messages_checked != corpus.messages {
        return Err(format!(
            "verify checked {} messages, the corpus has {}",
            check.messages_checked, corpus.messages
        ));
    }
    Ok(Verified {
        messages_checked: check.messages_checked,
        bytes_checked: check.bytes_checked,
        receipts_matching,
    })
}

/// What a thread does, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    SourceRead,
    Transport,
    Store,
    Commit,
    /// The commit pipeline's stages, one thread each (`mailferry_store::CommitPipeline`).
    CommitSync,
    CommitIndex,
    CommitAudit,
    AgentAudit,
    Other,
}

fn role(name: &str) -> Role {
    // Thread names are cut to 15 bytes by the kernel.
    if name == "mailferry-read" {
        return Role::SourceRead;
    }
    if name.starts_with("mailferry-check") {
        return Role::AgentAudit;
    }
    if name.starts_with("mailferry-commi") {
        return Role::Commit;
    }
    match name {
        "mf-store-sync" => return Role::CommitSync,
        "mf-store-index" => return Role::CommitIndex,
        "mf-store-audit" => return Role::CommitAudit,
        _ => {}
    }
    let mut parts = name.split('-');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("mf"), Some(_), Some(t)) if t.starts_with('w') => Role::Transport,
        // The agent's blocking work: listing the source, its state events.
        (Some("mf"), Some("agt"), Some(t)) if t.starts_with('b') => Role::SourceRead,
        (Some("mf"), Some("srv" | "emb"), Some(t)) if t.starts_with('b') => Role::Store,
        _ => Role::Other,
    }
}

/// CPU seconds by stage, and by thread name.
fn attribute(usage: &cpu::CpuUsage, st: &StoreStats) -> (StageCpu, BTreeMap<String, f64>) {
    let mut c = StageCpu::default();
    let mut by_thread: BTreeMap<String, f64> = BTreeMap::new();
    let (mut store, mut commit) = (0.0, 0.0);
    for t in &usage.threads {
        let key = t.name.trim_end_matches(|ch: char| ch.is_ascii_digit());
        *by_thread.entry(key.to_string()).or_default() += t.seconds;
        match role(&t.name) {
            Role::SourceRead => c.source_read += t.seconds,
            Role::Transport => c.transport_tls += t.seconds,
            Role::Store => store += t.seconds,
            Role::Commit => commit += t.seconds,
            Role::CommitSync => c.sync += t.seconds,
            Role::CommitIndex => c.index += t.seconds,
            Role::CommitAudit => c.audit += t.seconds,
            Role::AgentAudit => c.audit += t.seconds,
            Role::Other => c.other += t.seconds,
        }
    }
    let ns = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    let write = ns(&st.write_nanos);
    let share = if write > 0.0 {
        (ns(&st.encrypt_nanos) / write).min(1.0)
    } else {
        0.0
    };
    c.encryption = store * share;
    c.store_write = store - c.encryption;
    let (sync, index, audit) = (ns(&st.sync_nanos), ns(&st.index_nanos), ns(&st.audit_nanos));
    let sum = sync + index + audit;
    if sum > 0.0 {
        c.sync += commit * sync / sum;
        c.index += commit * index / sum;
        c.audit += commit * audit / sum;
    } else {
        c.other += commit;
    }
    let attributed = c.source_read
        + c.transport_tls
        + c.store_write
        + c.encryption
        + c.index
        + c.audit
        + c.sync
        + c.other;
    // What no live thread accounts for: threads that ended between samples.
    c.other += (usage.process_seconds - attributed).max(0.0);
    c.total = attributed.max(usage.process_seconds);
    (c, by_thread)
}

// === Dovecot ===

/// The scripted Dovecot setup (temp config, no root-only paths), shared with CI.
const DOVECOT_SCRIPT: &str = include_str!("../../../benches/dovecot-compare.sh");

fn compare_dovecot(
    work: &Path,
    maildir: &Path,
    case: &str,
    ours: &RunFigures,
) -> Result<DovecotComparison, AppError> {
    let script = work.join("dovecot-compare.sh");
    std::fs::write(&script, DOVECOT_SCRIPT).map_err(|e| AppError::io(&script, e))?;
    let out_dir = work.join("dovecot");
    if out_dir.exists() {
        std::fs::remove_dir_all(&out_dir).map_err(|e| AppError::io(&out_dir, e))?;
    }
    // As root the script runs doveadm as `nobody`, which must be able to walk here.
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o755));
    }
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(maildir)
        .arg(&out_dir)
        .output()
        .map_err(|e| AppError::io(&script, e))?;
    let _ = std::fs::remove_dir_all(&out_dir);
    if !out.status.success() {
        return Err(AppError::Failed(format!(
            "the Dovecot comparison failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let (version, rows) = parse_dovecot(&String::from_utf8_lossy(&out.stdout), ours);
    if rows.is_empty() {
        return Err(AppError::Failed(format!(
            "the Dovecot comparison printed no figures:\n{}",
            String::from_utf8_lossy(&out.stdout)
        )));
    }
    Ok(DovecotComparison {
        version,
        case: case.to_string(),
        rows,
    })
}

/// Parses `benches/dovecot-compare.sh`'s `name key=value ...` lines.
fn parse_dovecot(text: &str, ours: &RunFigures) -> (String, Vec<DovecotRow>) {
    let mut version = String::new();
    let mut rows = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let Some(name) = parts.next() else { continue };
        let kv: BTreeMap<&str, &str> = parts.filter_map(|p| p.split_once('=')).collect();
        if name == "dovecot" {
            version = kv.get("version").unwrap_or(&"").to_string();
            continue;
        }
        let num = |k: &str| kv.get(k).and_then(|v| v.parse::<f64>().ok());
        if let (Some(seconds), Some(mb), Some(msgs)) =
            (num("seconds"), num("mb_per_s"), num("msgs_per_s"))
        {
            rows.push(DovecotRow {
                name: name.to_string(),
                encrypted: kv.get("encrypted") == Some(&"yes"),
                seconds,
                mb_per_s: mb,
                msgs_per_s: msgs,
                mailferry_ratio_mb: ours.mb_per_s / mb.max(1e-9),
                mailferry_ratio_msgs: ours.msgs_per_s / msgs.max(1e-9),
            });
        }
    }
    (version, rows)
}

// === text output ===

/// The report for a terminal.
pub fn render_text(r: &BenchReport) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let _ = writeln!(
        s,
        "mailferry bench {} ({} build), {}",
        r.version, r.build, r.date
    );
    if !r.command.is_empty() {
        let _ = writeln!(s, "command: {}", r.command);
    }
    let _ = writeln!(
        s,
        "machine: {} ({}), {} cores, {:.1} GiB, Linux {}; {}",
        m.cpu_model,
        m.cpu_family_model,
        m.cores,
        m.memory_bytes as f64 / (1u64 << 30) as f64,
        m.kernel,
        m.cpu_features.join(" ")
    );
    let _ = writeln!(
        s,
        "mode: {}; source: {}; durable at exit; every run verified (every message present, every chunk authenticated, receipts equal)",
        match r.mode {
            Mode::Embedded => "embedded (agent -> loopback HTTPS -> store, one process)",
            Mode::Network => "network (agents -> serve on loopback TLS with a volume token)",
        },
        source_name(r.source)
    );
    if r.build == "debug" {
        let _ = writeln!(
            s,
            "WARNING: a debug build; these figures say nothing about speed (use --release)"
        );
    }
    for c in &r.cases {
        let k = &c.corpus;
        let _ = writeln!(
            s,
            "\n{}: {} messages, {:.1} MB in {} mailbox(es) x {} folder(s), {} model, seed {}; median {:.1} KiB, mean {:.1} KiB; {} at once",
            c.name,
            k.messages,
            k.bytes as f64 / 1e6,
            c.mailboxes,
            k.folders,
            k.model,
            k.seed,
            k.median_bytes as f64 / 1024.0,
            k.mean_bytes as f64 / 1024.0,
            c.concurrency
        );
        for f in &c.runs {
            let _ = writeln!(
                s,
                "  run {}: {:>7.1} MB/s {:>7.0} msg/s  {:.2} s  peak RSS {} MiB",
                f.run,
                f.mb_per_s,
                f.msgs_per_s,
                f.seconds,
                f.peak_rss_bytes >> 20
            );
        }
        let f = &c.median;
        let g = &f.cpu_seconds_per_gb;
        let _ = writeln!(
            s,
            "  median (run {}): {:.1} MB/s, {:.0} msg/s; latency p50 {:.1} ms, p99 {:.1} ms; peak RSS {} MiB (largest of all runs {} MiB, first run {} MiB)",
            f.run,
            f.mb_per_s,
            f.msgs_per_s,
            f.latency_ms_p50,
            f.latency_ms_p99,
            f.peak_rss_bytes >> 20,
            c.runs.iter().map(|r| r.peak_rss_bytes).max().unwrap_or(0) >> 20,
            c.runs.first().map_or(0, |r| r.peak_rss_bytes) >> 20,
        );
        let _ = writeln!(
            s,
            "  CPU s/GB: source read {:.2}, transport/TLS {:.2}, store write {:.2}, encryption {:.2}, index {:.2}, audit {:.2}, sync {:.2}, other {:.2}; total {:.2} ({:.1} CPU ms per 1,000 messages)",
            g.source_read,
            g.transport_tls,
            g.store_write,
            g.encryption,
            g.index,
            g.audit,
            g.sync,
            g.other,
            g.total,
            f.cpu_seconds.total * 1e6 / (f.messages.max(1) as f64)
        );
    }
    if r.cases.len() > 1 {
        let _ = writeln!(
            s,
            "\n| case | mailboxes | at once | messages | MB/s | msg/s | p50 ms | p99 ms | CPU s/GB | CPU µs/msg | peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for c in &r.cases {
            let f = &c.median;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.1} | {:.0} | {:.1} | {:.1} | {:.2} | {:.0} | {} |",
                c.name,
                c.mailboxes,
                c.concurrency,
                f.messages,
                f.mb_per_s,
                f.msgs_per_s,
                f.latency_ms_p50,
                f.latency_ms_p99,
                f.cpu_seconds_per_gb.total,
                f.cpu_seconds.total * 1e6 / (f.messages.max(1) as f64),
                f.peak_rss_bytes >> 20
            );
        }
    }
    if let Some(d) = &r.dovecot {
        let _ = writeln!(
            s,
            "\nDovecot {} `doveadm backup` Maildir -> mdbox on the corpus of {}, then fdatasync of what it wrote:",
            d.version, d.case
        );
        for row in &d.rows {
            let _ = writeln!(
                s,
                "  {:<18} {:>7.1} MB/s {:>7.0} msg/s  mailferry is {:.1}x (MB/s), {:.1}x (msg/s)",
                row.name,
                row.mb_per_s,
                row.msgs_per_s,
                row.mailferry_ratio_mb,
                row.mailferry_ratio_msgs
            );
        }
    }
    s
}
