//! What `mailferry bench` reports: the report `--json` prints (fields are only added,
//! never renamed) and its rendering for a terminal. Nothing here measures anything.

use super::{source_name, Mode, SourceKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

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
    /// Moved at once (with `workers`: by each worker).
    pub concurrency: usize,
    /// `--workers`: the `mailferry worker` processes that moved the mailboxes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// What was moved.
    pub corpus: Corpus,
    /// Every run, in order.
    pub runs: Vec<RunFigures>,
    /// The median run by MB/s (for an even count, the faster of the two middle ones).
    pub median: RunFigures,
    /// `--latency`: the one-way delay, in ms, that a relay added in each direction
    /// between the scratch Dovecot and the agents (and mbsync); absent without a relay.
    #[serde(default)]
    pub latency_ms: Option<f64>,
    /// The most bytes the relay held at once over the runs, all connections: they are in
    /// this process's memory, so in `peak_rss_bytes` too (per direction of a connection
    /// at most 4 MiB: what is in flight, rate x delay, plus up to 256 KiB due but not yet
    /// taken by a slower receiver).
    #[serde(default)]
    pub relay_peak_queued_bytes: Option<u64>,
    /// `--compare mbsync`: mbsync against the same server through the same relay.
    #[serde(default)]
    pub mbsync: Option<MbsyncRow>,
}

/// Debian's `mbsync` pulling the same mailboxes from the same server, at the same delay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MbsyncRow {
    /// `mbsync --version`.
    pub version: String,
    /// Wall seconds of the median run (by time), all mailboxes.
    pub seconds: f64,
    /// Every run's wall seconds, in order.
    pub run_seconds: Vec<f64>,
    /// Messages the median run wrote.
    pub messages: u64,
    /// Bytes it wrote, counted as IMAP serves them (a bare LF as CRLF), so that they
    /// compare with the corpus and with mailferry's.
    pub bytes: u64,
    /// Messages per second.
    pub msgs_per_s: f64,
    /// 10^6 bytes per second.
    pub mb_per_s: f64,
    /// Every run wrote exactly the corpus (message count and bytes).
    pub same_mail: bool,
    /// What differed (or why mbsync failed) when it did not.
    pub difference: Option<String>,
    /// mailferry's median msg/s over mbsync's; absent unless `same_mail`.
    pub mailferry_ratio_msgs: Option<f64>,
    /// mailferry's median MB/s over mbsync's; absent unless `same_mail`.
    pub mailferry_ratio_mb: Option<f64>,
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

impl RunFigures {
    /// CPU microseconds per message moved (all threads of the process).
    pub fn cpu_micros_per_message(&self) -> f64 {
        self.cpu_seconds.total * 1e6 / (self.messages.max(1) as f64)
    }
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
    /// Every stage (and the total) multiplied by `f` (seconds to seconds per GB, say).
    pub(super) fn scaled(&self, f: f64) -> StageCpu {
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

// === text output ===

/// The report for a terminal.
pub fn render_text(r: &BenchReport) -> String {
    let mut s = String::new();
    render_header(&mut s, r);
    for c in &r.cases {
        render_case(&mut s, c);
    }
    if r.cases.len() > 1 {
        render_case_table(&mut s, &r.cases);
    }
    if r.cases
        .iter()
        .any(|c| c.latency_ms.is_some() || c.mbsync.is_some())
    {
        render_latency_table(&mut s, &r.cases);
    }
    if let Some(d) = &r.dovecot {
        render_dovecot(&mut s, d);
    }
    s
}

/// Version, command, machine and mode.
fn render_header(s: &mut String, r: &BenchReport) {
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
            Mode::Network if r.cases.iter().any(|c| c.workers.is_some()) =>
                "network (`mailferry worker` processes, leasing from PostgreSQL -> serve on loopback TLS in this process)",
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
}

/// One case: its corpus, each run, the median run and its CPU by stage.
fn render_case(s: &mut String, c: &CaseResult) {
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
        f.cpu_micros_per_message()
    );
    if let Some(w) = f.cpu_seconds_by_thread.get("worker processes") {
        // --workers: the agents ran in other processes; the line above is the serve's.
        let _ = writeln!(
            s,
            "  (the line above is the serve in this process; the worker processes used {:.2} CPU s more, {:.2} CPU s/GB)",
            w,
            w * 1e9 / (f.bytes.max(1) as f64)
        );
    }
}

/// The cases side by side (medians), when there are several.
fn render_case_table(s: &mut String, cases: &[CaseResult]) {
    let _ = writeln!(
        s,
        "\n| case | mailboxes | at once | messages | MB/s | msg/s | p50 ms | p99 ms | CPU s/GB | CPU µs/msg | peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for c in cases {
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
            f.cpu_micros_per_message(),
            f.peak_rss_bytes >> 20
        );
    }
}

/// `--latency` and `--compare mbsync`: one row per case and delay, mailferry and mbsync
/// side by side.
fn render_latency_table(s: &mut String, cases: &[CaseResult]) {
    let version = cases
        .iter()
        .find_map(|c| c.mbsync.as_ref().map(|m| m.version.as_str()))
        .unwrap_or("mbsync: not run");
    let _ = writeln!(
        s,
        "\nThrough the delay relay (one-way delay added each way; {version}):\n\
         | case | one-way delay | mailferry msg/s | mailferry MB/s | mbsync msg/s | mbsync MB/s | mailferry / mbsync |\n\
         |---|---|---|---|---|---|---|"
    );
    for c in cases {
        let f = &c.median;
        let delay = c
            .latency_ms
            .map_or("none (direct)".to_string(), |ms| format!("{ms} ms"));
        let (theirs, ratio) = match &c.mbsync {
            None => ("| - | - ".to_string(), "-".to_string()),
            Some(m) => (
                format!("| {:.0} | {:.1} ", m.msgs_per_s, m.mb_per_s),
                match (m.mailferry_ratio_msgs, &m.difference) {
                    (Some(r), _) => format!("{r:.2}x"),
                    (None, Some(why)) => format!("none: not the same mail ({why})"),
                    (None, None) => "none".to_string(),
                },
            ),
        };
        let _ = writeln!(
            s,
            "| {} | {delay} | {:.0} | {:.1} {theirs}| {ratio} |",
            c.name, f.msgs_per_s, f.mb_per_s
        );
    }
}

/// `doveadm backup` on the same corpus, and our ratios to it.
fn render_dovecot(s: &mut String, d: &DovecotComparison) {
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
