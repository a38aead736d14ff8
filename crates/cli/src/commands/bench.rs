//! `mailferry bench`: measure this machine through the real pipeline
//! (`mailferry_bench` does the work; this module names the flags and prints the table).

use super::load_profile;
use crate::render::json_or_text;
use clap::ValueEnum;
use mailferry_bench::bench;
use mailferry_control::AppError;
use std::path::PathBuf;

/// `bench`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("count").args(["messages", "size"])))]
pub struct BenchCmd {
    /// Messages in the corpus, all mailboxes together [default: 20000; 50000 with --small].
    #[arg(long)]
    messages: Option<usize>,
    /// Corpus size instead of a message count (1200000000, 1.2G, 512MiB).
    #[arg(long, value_parser = bench::parse_bytes)]
    size: Option<u64>,
    /// Every message about this many bytes instead of the realistic mix.
    #[arg(long)]
    message_size: Option<u32>,
    /// The small-message case: 50,000 messages of 2 KiB (unless --messages or
    /// --message-size say otherwise).
    #[arg(long)]
    small: bool,
    /// Mailboxes moved side by side, the corpus split evenly between them; a list
    /// (1,2,4,8) runs one case per value and prints a table.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    mailboxes: Vec<usize>,
    /// The scaling table: the same as --mailboxes 1,2,4,8.
    #[arg(long, conflicts_with_all = ["mailboxes", "per_folder"])]
    scaling: bool,
    /// Mailboxes moved at once [default: all of the case's].
    #[arg(long)]
    concurrency: Option<usize>,
    /// Folders per mailbox.
    #[arg(long, default_value_t = 10)]
    folders: usize,
    /// Folder-size cases: one mailbox with one folder of N messages, per value
    /// (1000,10000,100000).
    #[arg(long, value_delimiter = ',', conflicts_with = "mailboxes")]
    per_folder: Vec<usize>,
    /// What the corpus is written as and read from (imap: a scratch Dovecot serves it).
    #[arg(long, value_enum, default_value_t = bench::SourceKind::Maildir)]
    source: bench::SourceKind,
    /// embedded: agent, proxy and store in this process over loopback HTTPS (`move
    /// --volume`); network: agents to a `serve` on loopback TLS with a token (`move --proxy`).
    #[arg(long, value_enum, default_value_t = bench::Mode::Embedded)]
    mode: bench::Mode,
    /// Runs per case; the figures are the median run's.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Corpus seed (mailbox i uses seed + i).
    #[arg(long, default_value_t = bench::DEFAULT_SEED)]
    seed: u64,
    /// Keep the corpus, the last volume and the move states in DIR, and reuse a corpus
    /// found there [default: a temp directory, removed].
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// With --source imap: put a relay between the scratch Dovecot and the agent that
    /// delays each direction by this much (a round trip takes twice it), one row per
    /// value: 10ms, or a list 0,5,10,40ms (a bare number takes the list's unit).
    #[arg(long, value_name = "DELAYS")]
    latency: Option<String>,
    /// Also run a peer on the same corpus and print the ratios.
    #[arg(long, value_enum)]
    compare: Option<ComparePeer>,
    /// With --source imap: move the mailboxes with this many `mailferry worker`
    /// processes leasing them from PostgreSQL (--db), each running --concurrency passes
    /// (default 4) at once, into a `serve`; a list (1,2,4,8) runs one case per value
    /// (docs/scale-out.md).
    #[arg(long, value_delimiter = ',', value_name = "N")]
    workers: Vec<usize>,
    /// With --workers: the PostgreSQL server where each run gets a scratch database
    /// (dropped at the end): postgres://USER@HOST:PORT/postgres.
    #[arg(long, env = "MAILFERRY_DB", value_name = "URL", hide_env_values = true)]
    db: Option<String>,
    /// Migration profile (TOML) of the moves; the embedded default when absent.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Print everything measured as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// With --mode network: serve each run's volume from object storage under a fresh
    /// prefix of s3://bucket/prefix (acknowledgements wait for the upload rounds).
    #[arg(long, value_name = "S3_URL", requires = "mode")]
    s3_volume: Option<String>,
    #[command(flatten)]
    s3: mailferry_control::volume_admin::S3Args,
}

/// A peer `bench --compare` runs on the same corpus.
#[derive(Clone, Copy, ValueEnum)]
enum ComparePeer {
    /// `doveadm backup` Maildir -> mdbox, with mail_crypt and without (needs dovecot-core).
    Dovecot,
    /// Debian's `mbsync` pulling the same mailboxes from the same IMAP server, through
    /// the same relay (--source imap; needs isync).
    Mbsync,
}

/// `bench`: corpus, runs, verification, and the figures.
pub async fn run(b: BenchCmd) -> Result<(), AppError> {
    let json = b.json;
    let args = bench::BenchArgs {
        messages: b.messages,
        size: b.size,
        message_size: b.message_size,
        small: b.small,
        mailboxes: if b.scaling {
            bench::SCALING.to_vec()
        } else {
            b.mailboxes
        },
        concurrency: b.concurrency,
        folders: b.folders,
        per_folder: b.per_folder,
        source: b.source,
        mode: b.mode,
        runs: b.runs,
        seed: b.seed,
        keep: b.keep,
        compare_dovecot: matches!(b.compare, Some(ComparePeer::Dovecot)),
        latency: match b.latency.as_deref() {
            Some(text) => bench::parse_latencies(text).map_err(AppError::Usage)?,
            None => Vec::new(),
        },
        compare_mbsync: matches!(b.compare, Some(ComparePeer::Mbsync)),
        workers: b.workers,
        db: b.db,
        worker_exe: std::env::current_exe().ok(),
        profile: load_profile(b.profile.as_deref())?,
        progress: true,
        command: echoed_command(),
        s3_volume: b.s3_volume,
        s3: b.s3,
    };
    if args.s3_volume.is_some() && !matches!(args.mode, bench::Mode::Network) {
        return Err(AppError::Usage(
            "--s3-volume needs --mode network (the volume is served by `serve`)".into(),
        ));
    }
    // The benchmark builds its own runtimes, so that it can tell their threads apart.
    let report = tokio::task::spawn_blocking(move || bench::run(&args))
        .await
        .expect("bench thread panicked")?;
    json_or_text(json, &report, bench::render_text);
    Ok(())
}

/// The command line for the report, with a `--db` URL (which may hold a password)
/// replaced by `[redacted]`.
fn echoed_command() -> String {
    let mut out: Vec<String> = Vec::new();
    let mut hide_next = false;
    for a in std::env::args() {
        if hide_next {
            out.push("[redacted]".into());
            hide_next = false;
        } else if a == "--db" {
            out.push(a);
            hide_next = true;
        } else if a.starts_with("--db=") {
            out.push("--db=[redacted]".into());
        } else {
            out.push(a);
        }
    }
    out.join(" ")
}
