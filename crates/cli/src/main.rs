//! The `mailferry` binary: parses flags, runs the library, maps the result to an exit
//! code (0 ok, 1 failed, 2 usage or configuration error, 3 limit hit, 4 some mailboxes
//! of a batch failed, 5 refused by the move's state; see `AppError::exit_code`).
//! Nothing else lives here.

use clap::{Parser, Subcommand, ValueEnum};
use mailferry_bench::{bench, demo};
use mailferry_control::{
    audit_cmd, batch, control, dry_run, endpoint, export, lifecycle, limits, moving, profile_cmd,
    report, serve, status, tokens, volume_admin, AppError,
};

mod examples;
mod logging;
mod progress;
use mailferry_core::profile::Profile;
use mailferry_core::MailboxAddr;
use mailferry_store::Volume;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// See the workspace Cargo.toml. Peak RSS of `bench --small --runs 6`, run by run: glibc
/// 86, 176, 200, 209, 237, 240 MiB; jemalloc 98, 119, 106, 117, 113, 110 MiB.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "mailferry",
    version,
    about = "Encrypted mailbox migration: move, verify and export mailboxes.",
    after_help = "Examples:
  mailferry demo                                    # a complete move with nothing to set up
  mailferry volume init --volume /srv/vol --key-file /root/vol.key
  mailferry move --source maildir:/home/alice/Maildir --mailbox alice@example.com \\
       --volume /srv/vol --key-file /root/vol.key --state /var/lib/mailferry/alice
  mailferry export --volume /srv/vol --key-file /root/vol.key --mailbox alice@example.com \\
       --format maildir --out /tmp/alice-export
  mailferry volume verify --volume /srv/vol --key-file /root/vol.key
  mailferry token issue --volume /srv/vol --key-file /root/vol.key --tenant example.com \
       --out /root/example.com.token
  mailferry serve --volume /srv/vol --key-file /root/vol.key --listen 0.0.0.0:8443
  mailferry move --source maildir:/home/alice/Maildir --mailbox alice@example.com \
       --proxy https://store.example.net:8443 --ca vol-tls/ca.pem \
       --token-file example.com.token --state /var/lib/mailferry/alice

Exit codes: 0 ok, 1 the command ran and failed (damaged items, lost connection),
2 usage or configuration error (flags, profile, CSV, endpoint, wrong key), 3 a move hit
its bad-item or large-item limit (or skipped items await approval), 4 some mailboxes of a
batch failed, 5 refused by the move's state (completed, or suspended)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Log lines on stderr as text or as one JSON object per line (filter: RUST_LOG).
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
}

/// How the agent logs in to, and what it trusts of, an IMAP source; file sources ignore it.
#[derive(clap::Args)]
struct SourceAccess {
    /// IMAP source: file holding the password (default: the environment variable
    /// MAILFERRY_SOURCE_PASSWORD). There is no flag for the password itself.
    #[arg(long, conflicts_with = "oauth_token_file")]
    password_file: Option<PathBuf>,
    /// IMAP source: file holding an OAuth 2 access token, sent with SASL XOAUTH2.
    #[arg(long)]
    oauth_token_file: Option<PathBuf>,
    /// IMAP source: PEM file of the CA the server's certificate must chain to, instead of
    /// the system's roots, or of the server's own certificate (then that exact
    /// certificate is trusted, self-signed or not, whatever name it bears).
    #[arg(long)]
    source_ca: Option<PathBuf>,
    /// IMAP source: the personal namespace's prefix to map away from folder names
    /// ("INBOX." turns INBOX.Sent into Sent), for servers without NAMESPACE; by default
    /// the server's NAMESPACE answer decides. "" maps nothing away.
    #[arg(long, value_name = "PREFIX")]
    source_prefix: Option<String>,
    /// IMAP source: which namespaces move: the user's own folders (personal), or also
    /// shared folders and other users' folders the login can see (all).
    #[arg(long, value_name = "personal|all", default_value = "personal")]
    source_namespaces: mailferry_agent::source::Namespaces,
    /// IMAP source: trust the server certificate whose SHA-256 is HEX (64 hex digits,
    /// colons allowed: what `openssl x509 -noout -fingerprint -sha256` and `mailferry
    /// endpoint test` print). With --source-ca as well, both must hold.
    #[arg(long, value_name = "HEX", value_parser = mailferry_core::tls::CertSha256::parse)]
    source_cert_sha256: Option<mailferry_core::tls::CertSha256>,
    /// Maildir source: folder directory names are modified UTF-7 (`mutf7`, Dovecot's
    /// default), UTF-8 (`utf8`, Dovecot's `maildir:...:UTF-8`) or detected per name
    /// (`auto`) [default: the profile's source.maildir_names, auto].
    #[arg(long, value_name = "auto|mutf7|utf8")]
    maildir_names: Option<mailferry_core::profile::MaildirNames>,
}

impl SourceAccess {
    fn options(self) -> mailferry_agent::source::SourceOptions {
        mailferry_agent::source::SourceOptions {
            password_file: self.password_file,
            oauth_token_file: self.oauth_token_file,
            source_ca: self.source_ca,
            source_cert_sha256: self.source_cert_sha256,
            password: None,
            source_prefix: self.source_prefix,
            namespaces: self.source_namespaces,
            maildir_names: self.maildir_names,
        }
    }
}

const MOVE_HELP: &str = "Examples:
  mailferry move --source maildir:/home/alice/Maildir --mailbox alice@example.com \\
       --volume /srv/vol --key-file /root/vol.key --state /var/lib/mailferry/alice \\
       --suspend-when-ready                 # initial copy, then held at Synced
  mailferry move --state /var/lib/mailferry/alice --source ... (same flags)   # incremental pass
  mailferry move status --state /var/lib/mailferry/alice
  mailferry move complete --state /var/lib/mailferry/alice   # final delta pass, then Completed
  mailferry move suspend --state /var/lib/mailferry/alice
  mailferry move resume --state /var/lib/mailferry/alice

States: created -> syncing -> synced -> completing -> completed, plus suspended and failed.
Exit codes: 0 ok, 1 failed, 2 usage or configuration, 3 a limit was hit (bad or large
items over the limit, or skipped items not approved at completion), 5 refused by the
move's state (completed, or suspended).";

/// A move's lifecycle and limits; each given flag is kept for later passes.
#[derive(clap::Args)]
struct MoveSettings {
    /// Hold the move at Synced after the initial copy (Exchange's
    /// SuspendWhenReadyToComplete): passes stay incremental until `move complete`.
    #[arg(long, conflicts_with = "complete_after")]
    suspend_when_ready: bool,
    /// Complete the move on the first pass that starts at or after TIME: RFC 3339
    /// (2025-07-01T22:00:00Z) or a time from now (2h, +3days).
    #[arg(long, value_name = "TIME", value_parser = lifecycle::parse_time)]
    complete_after: Option<String>,
    /// Bad items (damaged, unreadable, refused) tolerated before the move fails
    /// [default: the profile's limits.bad_item_limit, 0].
    #[arg(long, value_name = "N")]
    bad_item_limit: Option<u64>,
    /// Skip messages larger than SIZE (25MB, 25MiB, 26214400) as large items: not sent,
    /// listed with the move [default: off].
    #[arg(long, value_name = "SIZE", value_parser = limits::parse_size)]
    large_item_limit: Option<u64>,
    /// Accept every skipped item of this pass and earlier ones: they no longer count
    /// against the limits nor hold back completion.
    #[arg(long)]
    approve_skipped: bool,
}

impl MoveSettings {
    fn settings(&self) -> lifecycle::Settings {
        lifecycle::Settings {
            suspend_when_ready: self.suspend_when_ready.then_some(true),
            complete_after: self.complete_after.clone(),
            bad_item_limit: self.bad_item_limit,
            large_item_limit: self.large_item_limit,
        }
    }
}

#[derive(Subcommand)]
enum MoveCmd {
    /// Run the final delta pass with the move's recorded flags, then mark it Completed
    /// (it takes no more passes).
    Complete {
        /// The move's state directory.
        #[arg(long)]
        state: PathBuf,
        /// Accept every skipped item, so that the move can complete with them.
        #[arg(long)]
        approve_skipped: bool,
        /// Print the final pass's report as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Hold the move: no passes until `move resume`. A running pass finishes first and
    /// the move is Suspended when it ends.
    Suspend {
        /// The move's state directory.
        #[arg(long)]
        state: PathBuf,
        /// Why (kept in the history and the audit log).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Let a suspended move take passes again.
    Resume {
        /// The move's state directory.
        #[arg(long)]
        state: PathBuf,
    },
    /// State, percent complete, items synced/skipped/bad, bytes, rate, ETA, last sync.
    Status {
        /// The move's state directory.
        #[arg(long)]
        state: PathBuf,
        /// JSON on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
}

// Parsed once per process: the size of its largest variant (`move`) does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Generate a sample mailbox, move it into a new encrypted volume, export it back and compare.
    Demo {
        /// Directory for everything the demo creates.
        #[arg(long, default_value = "mailferry-demo")]
        data: PathBuf,
        /// Messages in the generated mailbox.
        #[arg(long, default_value_t = 600)]
        messages: usize,
        /// Print the demo's result as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Move one mailbox into a volume (agent, proxy and store in this process over
    /// loopback HTTPS), or to a remote `mailferry serve` with --proxy. Every run is a
    /// pass (the first copies, later ones mirror changes); `move complete`, `suspend`,
    /// `resume` and `status` drive the move's lifecycle.
    #[command(
        args_conflicts_with_subcommands = true,
        subcommand_negates_reqs = true,
        after_help = MOVE_HELP
    )]
    Move {
        #[command(subcommand)]
        ctl: Option<MoveCmd>,
        /// Source: maildir:PATH, mbox:PATH (a file or a directory of them), eml:PATH,
        /// imaps://user@host[:port] or imap://user@host[:port]
        /// (STARTTLS).
        #[arg(long, required = true)]
        source: Option<String>,
        #[command(flatten)]
        source_access: SourceAccess,
        /// Destination mailbox address.
        #[arg(long, required = true)]
        mailbox: Option<String>,
        /// Volume directory (created by `volume init`); not with --proxy.
        #[arg(long, required_unless_present = "proxy", conflicts_with = "proxy")]
        volume: Option<PathBuf>,
        /// Stream to this remote proxy (`https://host:port`, a `mailferry serve`)
        /// instead of a local volume.
        #[arg(long, requires_all = ["ca", "token_file"])]
        proxy: Option<String>,
        /// PEM file of the CA the remote proxy's certificate is checked against.
        #[arg(long, requires = "proxy")]
        ca: Option<PathBuf>,
        /// File holding the agent token (written by `mailferry token issue`).
        #[arg(long, requires = "proxy")]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        unlock: volume_admin::MaybeUnlockArgs,
        /// State directory of this move (checkpoint, reports); one per mailbox.
        #[arg(long, required = true)]
        state: Option<PathBuf>,
        /// Migration profile (TOML); the embedded default when absent.
        #[arg(long)]
        profile: Option<PathBuf>,
        /// Print the move report as one JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// Move into a volume that has no recovery key (acknowledges that losing the key
        /// file loses the mail).
        #[arg(long)]
        no_recovery_key: bool,
        #[command(flatten)]
        lifecycle: MoveSettings,
        #[command(flatten)]
        control: control::ControlArgs,
    },
    /// Serve the wire protocol (proxy and store in one process) until SIGTERM or ctrl-c.
    Serve {
        /// Volume directory.
        #[arg(long)]
        volume: PathBuf,
        #[command(flatten)]
        unlock: volume_admin::UnlockArgs,
        /// Address to listen on, e.g. 0.0.0.0:8443 (port 0: a free port, printed).
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Server certificate chain (PEM); without it a CA and a certificate are created
        /// once in --tls-dir.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// Private key of --tls-cert (PKCS#8 PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Where the generated CA and certificate live (default: `<volume>-tls` beside
        /// the volume).
        #[arg(long, conflicts_with = "tls_cert")]
        tls_dir: Option<PathBuf>,
        /// Seconds a client gets for the TLS handshake and again for a request head.
        #[arg(long, default_value_t = 10.0)]
        header_timeout: f64,
        /// Streams open at once, all agents together (more get 503 with Retry-After).
        #[arg(long, default_value_t = 256)]
        max_streams: usize,
        /// Streams open at once per token (more get 429 with Retry-After).
        #[arg(long, default_value_t = 32)]
        max_streams_per_token: usize,
        /// Largest message accepted, in bytes; larger ones are refused as large items
        /// (0: no limit).
        #[arg(long, default_value_t = 0)]
        max_message_bytes: u64,
        /// Seconds a stream may send nothing before it is closed (and its slot freed).
        #[arg(long, default_value_t = 300)]
        idle_timeout: u64,
        /// Store-node mode: accept only clients (front proxies) with a certificate from
        /// this CA (mutual TLS; see `mailferry tls client`).
        #[arg(long)]
        client_ca: Option<PathBuf>,
        /// Migration profile (TOML) for commit settings; the embedded default when absent.
        #[arg(long)]
        profile: Option<PathBuf>,
    },
    /// Front proxy of a split deployment: terminates agents' TLS and routes each mailbox
    /// to the store node that owns it (rendezvous hashing) over mutual TLS.
    Proxy {
        /// Address to listen on for agents.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// A store node (`mailferry serve --client-ca ...`), https://host:port; repeat.
        #[arg(long = "store", required = true)]
        stores: Vec<String>,
        /// A store node's CA certificate (its `<volume>-tls/ca.pem`); repeat.
        #[arg(long = "store-ca", required = true)]
        store_cas: Vec<PathBuf>,
        /// The client certificate the store nodes require (`mailferry tls client`).
        #[arg(long)]
        client_cert: PathBuf,
        /// Its private key.
        #[arg(long)]
        client_key: PathBuf,
        /// Where the agents' CA and this proxy's certificate are kept (created once).
        #[arg(long)]
        tls_dir: PathBuf,
        /// Seconds a client gets for the TLS handshake and again for a request head.
        #[arg(long, default_value_t = 10.0)]
        header_timeout: f64,
        /// Streams open at once, all agents together (more get 503 with Retry-After).
        #[arg(long, default_value_t = 256)]
        max_streams: usize,
        /// Streams open at once per token (more get 429 with Retry-After).
        #[arg(long, default_value_t = 32)]
        max_streams_per_token: usize,
        /// Seconds a stream may send nothing before it is closed (and its slot freed).
        #[arg(long, default_value_t = 300)]
        idle_timeout: u64,
    },
    /// TLS material for split deployments.
    Tls {
        #[command(subcommand)]
        cmd: TlsCmd,
    },
    /// Issue, list and revoke agent tokens (each bound to one tenant).
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Write a mailbox back out of a volume.
    Export {
        /// Volume directory.
        #[arg(long)]
        volume: PathBuf,
        #[command(flatten)]
        unlock: volume_admin::UnlockArgs,
        /// Mailbox address.
        #[arg(long)]
        mailbox: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Maildir)]
        format: Format,
        /// Output directory (must not exist or be empty).
        #[arg(long)]
        out: PathBuf,
        /// Maildir: folder layout. A folder that Maildir++ cannot hold (a name component
        /// with '.') fails the export before anything is written; `fs` holds those.
        #[arg(long, value_enum, default_value_t = ExportLayout::MaildirPlusPlus)]
        layout: ExportLayout,
        /// Maildir: encoding of folder directory names.
        #[arg(long, value_enum, default_value_t = ExportNames::Mutf7)]
        maildir_names: ExportNames,
        /// Print the outcome as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Create and check encrypted volumes.
    Volume {
        #[command(subcommand)]
        cmd: VolumeCmd,
    },
    /// Check audit logs and compare both sides of a move.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Check the move receipt (Merkle root of every message) against the volume.
    Receipt {
        #[command(subcommand)]
        cmd: ReceiptCmd,
    },
    /// Write the move record (every pass, statistics, receipt, audit digests) as JSON or HTML.
    Report {
        /// The move's state directory.
        #[arg(long)]
        state: PathBuf,
        /// The volume, to add its audit digest and a reconciliation (needs --key-file).
        #[arg(long, requires = "key_file")]
        volume: Option<PathBuf>,
        /// The volume's key file.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Html)]
        format: ReportFormat,
        /// Output file (`-` for stdout).
        #[arg(long)]
        out: PathBuf,
    },
    /// Check or print migration profiles.
    Profile {
        #[command(subcommand)]
        cmd: ProfileCmd,
    },
    /// Measure this machine: generate a corpus, move it through the real pipeline
    /// (durable), verify every run, and report MB/s, msg/s, latency, CPU per stage,
    /// peak RSS.
    #[command(after_long_help = bench::CORPUS_HELP)]
    Bench(BenchCmd),
    /// Migration batches: many mailboxes from a CSV (EmailAddress,UserName,Password),
    /// one endpoint, one destination.
    Batch {
        #[command(subcommand)]
        cmd: BatchCmd,
    },
    /// Source endpoints (TOML files: kind, host, TLS, master user, throttles).
    Endpoint {
        #[command(subcommand)]
        cmd: EndpointCmd,
    },
    /// The admin service (REST API and wizard over HTTPS) and its accounts.
    Admin {
        #[command(subcommand)]
        cmd: AdminCmd,
    },
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Serve the admin API and wizard over HTTPS until SIGTERM or ctrl-c.
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8444 (port 0: a free port, printed).
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// The service's state directory: accounts, admin audit log, endpoints, batches.
        #[arg(long)]
        state: PathBuf,
        /// The volume every move writes into.
        #[arg(long)]
        volume: PathBuf,
        /// The volume's key file.
        #[arg(long)]
        key_file: PathBuf,
        /// Server certificate chain (PEM); without it a CA and a certificate are created
        /// once in --tls-dir.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// Private key of --tls-cert (PKCS#8 PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Where the generated CA and certificate live (default: STATE/tls).
        #[arg(long, conflicts_with = "tls_cert")]
        tls_dir: Option<PathBuf>,
        /// A session unused this long expires (`30min`, `90s`).
        #[arg(long, default_value = "30min")]
        session_idle: humantime::Duration,
        /// A session expires this long after login, used or not.
        #[arg(long, default_value = "12h")]
        session_max: humantime::Duration,
        /// Failed logins in a row that lock an account.
        #[arg(long, default_value_t = 5)]
        max_login_failures: u32,
        /// How long a locked account stays locked.
        #[arg(long, default_value = "15min")]
        lockout: humantime::Duration,
    },
    /// Create an account: prints its one-time password and TOTP secret (otpauth:// URI).
    Add {
        /// Account name (letters, digits, '.', '_', '-', '@').
        name: String,
        /// `admin` changes things; `auditor` reads status, reports and audit logs.
        #[arg(long, value_parser = ["admin", "auditor"])]
        role: String,
        /// The admin service's state directory.
        #[arg(long)]
        state: PathBuf,
    },
}

/// Where batches live.
#[derive(clap::Args)]
struct StateRoot {
    /// Directory holding the batches (one subdirectory each).
    #[arg(
        long,
        env = "MAILFERRY_STATE_ROOT",
        default_value = "mailferry-batches"
    )]
    state_root: PathBuf,
}

/// `batch new`.
#[derive(clap::Args)]
struct BatchNew {
    /// The batch's name.
    name: String,
    /// Users: EmailAddress,UserName,Password (or PasswordFile); extra columns allowed.
    /// A CSV with inline passwords must stay in place (they are read again at start,
    /// never stored).
    #[arg(long)]
    csv: PathBuf,
    /// The source endpoint file (TOML).
    #[arg(long)]
    endpoint: PathBuf,
    /// Volume directory (created by `volume init`).
    #[arg(long, required_unless_present = "proxy", conflicts_with = "proxy")]
    volume: Option<PathBuf>,
    /// Stream to this remote proxy instead of a local volume.
    #[arg(long, requires_all = ["ca", "token_file"])]
    proxy: Option<String>,
    /// PEM file of the CA of the remote proxy.
    #[arg(long, requires = "proxy")]
    ca: Option<PathBuf>,
    /// The agent token file for the remote proxy.
    #[arg(long, requires = "proxy")]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    unlock: volume_admin::MaybeUnlockArgs,
    /// Move into a volume that has no recovery key.
    #[arg(long)]
    no_recovery_key: bool,
    /// Mailboxes moved at once [default: the endpoint's max_concurrent_moves, never more].
    #[arg(long)]
    concurrency: Option<usize>,
    /// Migration profile (TOML); the embedded default when absent.
    #[arg(long)]
    profile: Option<PathBuf>,
    #[command(flatten)]
    settings: BatchSettings,
    #[command(flatten)]
    root: StateRoot,
    /// Start the batch right away (as `batch start`).
    #[arg(long)]
    start: bool,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum BatchCmd {
    /// Check an endpoint and a whole CSV (every bad row and column at once), then create
    /// the batch with every mailbox Created. Nothing is created if anything is wrong.
    New(Box<BatchNew>),
    /// Run a pass of every mailbox that takes one (initial copy or incremental), up to
    /// the batch's concurrency at once; exit 4 if some mailboxes failed.
    Start {
        /// The batch's name.
        name: String,
        /// At most this many mailboxes at once in this run.
        #[arg(long)]
        concurrency: Option<usize>,
        #[command(flatten)]
        root: StateRoot,
        /// Print the outcome as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Show what the next pass of every mailbox would do, and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// One line per mailbox (state, percent, items, bytes, last sync) and totals.
    Status {
        /// The batch's name.
        name: String,
        #[command(flatten)]
        root: StateRoot,
        /// JSON on stdout instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add the rows of a CSV whose address the batch does not have yet (Created; `batch
    /// start` moves them).
    AddUsers {
        /// The batch's name.
        name: String,
        /// Users, in the same shape as for `batch new`.
        #[arg(long)]
        csv: PathBuf,
        #[command(flatten)]
        root: StateRoot,
    },
    /// Run the final pass of every mailbox not completed yet; each is then Completed.
    Complete {
        /// The batch's name.
        name: String,
        /// Accept every skipped item, so that the mailboxes can complete with them.
        #[arg(long)]
        approve_skipped: bool,
        /// At most this many mailboxes at once in this run.
        #[arg(long)]
        concurrency: Option<usize>,
        #[command(flatten)]
        root: StateRoot,
        /// Print the outcome as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Suspend the batch and every mailbox of it (running passes end first).
    Suspend {
        /// The batch's name.
        name: String,
        #[command(flatten)]
        root: StateRoot,
    },
    /// Resume the batch and its suspended mailboxes (then `batch start`).
    Resume {
        /// The batch's name.
        name: String,
        #[command(flatten)]
        root: StateRoot,
    },
}

/// Limits and schedule of every mailbox of a batch.
#[derive(clap::Args)]
struct BatchSettings {
    /// Hold every mailbox at Synced until `batch complete`.
    #[arg(long, conflicts_with = "complete_after")]
    suspend_when_ready: bool,
    /// Complete each mailbox on its first pass at or after TIME (RFC 3339 or 2h, +3days).
    #[arg(long, value_name = "TIME", value_parser = lifecycle::parse_time)]
    complete_after: Option<String>,
    /// Bad items tolerated per mailbox [default: the profile's, 0].
    #[arg(long, value_name = "N")]
    bad_item_limit: Option<u64>,
    /// Skip messages larger than SIZE (25MB) as large items [default: off].
    #[arg(long, value_name = "SIZE", value_parser = limits::parse_size)]
    large_item_limit: Option<u64>,
}

#[derive(Subcommand)]
enum EndpointCmd {
    /// Check an endpoint before anything moves: connectivity, TLS, credentials (IMAP:
    /// connect, log in and list through the IMAP source), or that a user's mailbox path
    /// exists and is a mailbox of the endpoint's kind. Exit 1 if a check fails.
    Test {
        /// The endpoint file (TOML).
        file: PathBuf,
        /// Check this user's mailbox (the CSV's UserName).
        #[arg(long)]
        user: Option<String>,
        /// IMAP without a master user: the user's password file (default: the
        /// environment variable MAILFERRY_SOURCE_PASSWORD).
        #[arg(long, requires = "user")]
        password_file: Option<PathBuf>,
        /// JSON on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("count").args(["messages", "size"])))]
struct BenchCmd {
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
    /// Also run a peer on the same corpus and print the ratios.
    #[arg(long, value_enum)]
    compare: Option<ComparePeer>,
    /// Migration profile (TOML) of the moves; the embedded default when absent.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Print everything measured as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ComparePeer {
    /// `doveadm backup` Maildir -> mdbox, with mail_crypt and without (needs dovecot-core).
    Dovecot,
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token for a tenant and write it (once, mode 0600) to --out.
    Issue {
        /// Volume directory.
        #[arg(long)]
        volume: PathBuf,
        #[command(flatten)]
        unlock: volume_admin::UnlockArgs,
        /// The tenant: a mail domain; the token opens only mailboxes `*@TENANT`.
        #[arg(long)]
        tenant: String,
        /// File to write the token to (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// Seconds the token stays valid (refused with 401 afterwards); default: until revoked.
        #[arg(long)]
        valid_for: Option<u64>,
        /// Print the outcome (never the token) as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Register an existing token (from `token issue` on another store node) here too.
    Add {
        /// Volume directory.
        #[arg(long)]
        volume: PathBuf,
        #[command(flatten)]
        unlock: volume_admin::UnlockArgs,
        /// The tenant the token is bound to.
        #[arg(long)]
        tenant: String,
        /// The token file written by `token issue`.
        #[arg(long)]
        token_file: PathBuf,
    },
    /// List tokens: id, tenant, created, revoked (never the tokens).
    List {
        /// Volume directory.
        #[arg(long)]
        volume: PathBuf,
        #[command(flatten)]
        unlock: volume_admin::UnlockArgs,
        /// JSON on stdout instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token; a running `serve` refuses it from its next request.
    Revoke {
        /// Volume directory.
        #[arg(long)]
        volume: PathBuf,
        #[command(flatten)]
        unlock: volume_admin::UnlockArgs,
        /// The token's id (see `token list`).
        id: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Maildir (folders as .Name.Sub or, with --layout fs, Name/Sub; flags and keyword
    /// letters in file names, keywords in dovecot-keywords).
    Maildir,
    /// mboxrd, one file per folder (subfolders in a directory, or `<name>.sbd/`).
    Mbox,
}

/// Folder layout of a Maildir export.
#[derive(Clone, Copy, ValueEnum)]
enum ExportLayout {
    /// Maildir++: `.Archive.2024/` (a name component with '.' cannot be written).
    #[value(name = "maildir++")]
    MaildirPlusPlus,
    /// Dovecot's LAYOUT=fs: `Archive/2024/`; the INBOX is the root.
    Fs,
}

/// Encoding of folder directory names in a Maildir export.
#[derive(Clone, Copy, ValueEnum)]
enum ExportNames {
    /// IMAP modified UTF-7 (`.Entw&APw-rfe`), Dovecot's default.
    Mutf7,
    /// UTF-8 (`.Entwürfe`), Dovecot's `maildir:...:UTF-8`.
    Utf8,
}

#[derive(Subcommand)]
enum VolumeCmd {
    /// Create a volume: key file (created, 32 random bytes, mode 0600, if missing) or
    /// passphrase file, plus a recovery key written once to `<key-file>.recovery`.
    Init {
        /// Volume directory (must not hold a volume).
        #[arg(long)]
        volume: PathBuf,
        /// Key file (created if it does not exist).
        #[arg(
            long,
            required_unless_present = "passphrase_file",
            conflicts_with = "passphrase_file"
        )]
        key_file: Option<PathBuf>,
        /// Protect the volume with the passphrase in this file (Argon2id) instead of a key file.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Where to write the recovery key (must not exist); default `<key or passphrase file>.recovery`.
        #[arg(long)]
        recovery_key_file: Option<PathBuf>,
        /// Create no recovery key (`move` then needs --no-recovery-key too).
        #[arg(long, conflicts_with = "recovery_key_file")]
        no_recovery_key: bool,
    },
    /// Authenticate every chunk of every message and check the index against the segments.
    Verify {
        /// Volume directory.
        #[arg(long)]
        volume: PathBuf,
        #[command(flatten)]
        unlock: volume_admin::UnlockArgs,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Prove that a key file, passphrase or recovery key opens the volume (reads only volume.hdr).
    UnlockCheck {
        /// Volume directory.
        #[arg(long)]
        volume: PathBuf,
        #[command(flatten)]
        unlock: volume_admin::UnlockArgs,
    },
    /// Rewrap the volume master key under a new key file or passphrase (atomic, O(1)).
    Rekey {
        /// Volume directory.
        #[arg(long)]
        volume: PathBuf,
        #[command(flatten)]
        unlock: volume_admin::UnlockArgs,
        /// The new key file (created if it does not exist).
        #[arg(
            long,
            required_unless_present = "new_passphrase_file",
            conflicts_with = "new_passphrase_file"
        )]
        new_key_file: Option<PathBuf>,
        /// A file holding the new passphrase.
        #[arg(long)]
        new_passphrase_file: Option<PathBuf>,
    },
    /// Destroy a mailbox's keys: its mail becomes unreadable, also from old copies.
    Shred {
        /// Volume directory.
        #[arg(long)]
        volume: PathBuf,
        #[command(flatten)]
        unlock: volume_admin::UnlockArgs,
        /// The mailbox to shred.
        #[arg(long)]
        mailbox: String,
    },
    /// Give a mailbox or a tenant (mail domain) a new key; stored messages stay readable.
    Rotate {
        /// Volume directory.
        #[arg(long)]
        volume: PathBuf,
        #[command(flatten)]
        unlock: volume_admin::UnlockArgs,
        /// Rotate this mailbox's key.
        #[arg(long, required_unless_present = "tenant", conflicts_with = "tenant")]
        mailbox: Option<String>,
        /// Rotate this tenant's key (rewraps the keys of all its mailboxes).
        #[arg(long)]
        tenant: Option<String>,
        /// Also give every mailbox concerned a new key generation, re-encrypt all its
        /// stored messages under it (streaming, resumable: run the same command again
        /// after an interruption) and drop the earlier generations.
        #[arg(long)]
        reencrypt: bool,
    },
    /// Reclaim the space of shredded messages and unreferenced record gaps by rewriting
    /// segments (no decryption; crash-safe at every step).
    Compact {
        /// Volume directory.
        #[arg(long)]
        volume: PathBuf,
        #[command(flatten)]
        unlock: volume_admin::UnlockArgs,
        /// Print the outcome as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Copy the volume's ciphertext into another directory, incrementally (needs no key).
    Replicate {
        /// Volume directory (the source; must not be open elsewhere).
        #[arg(long)]
        volume: PathBuf,
        /// Replica directory (empty, new, or an earlier replica of this volume).
        #[arg(long)]
        to: PathBuf,
        /// Print the outcome as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Open the volume once, upgrading an older format version in place.
    Upgrade {
        /// Volume directory.
        #[arg(long)]
        volume: PathBuf,
        #[command(flatten)]
        unlock: volume_admin::UnlockArgs,
    },
}

#[derive(Subcommand)]
enum TlsCmd {
    /// Create a client CA and a client certificate for a front proxy: store nodes get
    /// `--client-ca DIR/client-ca.pem`, the proxy `--client-cert DIR/client.pem
    /// --client-key DIR/client.key`.
    Client {
        /// Directory to create the files in (they must not exist).
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    /// One JSON document.
    Json,
    /// One self-contained HTML page with a throughput plot.
    Html,
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check a hash-chained audit log end to end; names the first bad record.
    Verify {
        /// A move's state directory or a volume.
        dir: PathBuf,
        /// Expected head (SHA-256 of the last record), to detect records cut off the end.
        #[arg(long)]
        head: Option<String>,
        /// For a volume: its key file, to also check every record against the volume's
        /// index (each stored message has its record, each record its message).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Compare the source side with the volume message by message (exit 0 only if they agree).
    Reconcile(BothSides),
}

/// A move's two sides: its state directory and the volume, with how to unlock it.
#[derive(clap::Args)]
struct BothSides {
    /// The move's state directory (source side).
    #[arg(long)]
    state: PathBuf,
    /// The volume (destination side).
    #[arg(long)]
    volume: PathBuf,
    #[command(flatten)]
    unlock: volume_admin::UnlockArgs,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ReceiptCmd {
    /// Recompute the receipt from the volume and compare it with the source's.
    Verify(BothSides),
}

#[derive(Subcommand)]
enum ProfileCmd {
    /// Parse a profile and report every problem at once.
    Check {
        /// The profile file.
        file: PathBuf,
    },
    /// Print the embedded default profile.
    Default,
    /// Print every effective value and where it came from (default, file or flag).
    #[command(after_help = "Examples:
  mailferry profile show                                   # the built-in defaults
  mailferry profile show migration-profiles/gmail-imap.toml
  mailferry profile show my.toml --set limits.bad_item_limit=5 --set filter.after=365d --json")]
    Show {
        /// The profile file; the built-in defaults when absent.
        file: Option<PathBuf>,
        /// Override a key, as a move's flags would (repeatable): KEY=VALUE, the value
        /// read as TOML, or as a string when it is not TOML.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = profile_cmd::parse_set)]
        set: Vec<(String, String)>,
        /// JSON on stdout: {"name", "file", "settings": {KEY: {"value", "from"}}}.
        #[arg(long)]
        json: bool,
    },
}

/// Checks the service flags shared by `serve` and `proxy` and turns them into limits.
fn service_limits(
    header_timeout: f64,
    max_streams: usize,
    max_streams_per_token: usize,
    max_message_bytes: u64,
    idle_timeout: u64,
) -> Result<(std::time::Duration, mailferry_proxy::Limits), AppError> {
    if max_streams == 0 || max_streams_per_token == 0 {
        return Err(AppError::Usage(
            "--max-streams and --max-streams-per-token must be at least 1".into(),
        ));
    }
    if !(header_timeout > 0.0 && header_timeout <= 3600.0) {
        return Err(AppError::Usage(
            "--header-timeout must be between 0 and 3600 seconds".into(),
        ));
    }
    Ok((
        std::time::Duration::from_secs_f64(header_timeout),
        mailferry_proxy::Limits {
            max_streams,
            max_streams_per_token,
            max_message_bytes,
            idle_timeout: std::time::Duration::from_secs(idle_timeout.max(1)),
        },
    ))
}

/// A pass's summary, skipped items and state on stderr; its report on stdout with --json.
fn print_pass(res: &lifecycle::PassResult, json: bool) {
    eprintln!("{}", moving::summary(&res.report));
    eprint!("{}", lifecycle::outcome_text(res));
    if json {
        print_json(&res.report);
    }
}

/// `move complete|suspend|resume|status`.
async fn run_move_ctl(ctl: MoveCmd) -> Result<(), AppError> {
    let actor = lifecycle::cli_actor();
    match ctl {
        MoveCmd::Complete {
            state,
            approve_skipped,
            json,
        } => {
            let opts = lifecycle::PassOptions {
                actor,
                approve_skipped,
                ..Default::default()
            };
            let hooks = moving::PassHooks {
                observer: Some(progress::Board::new(progress::Style::auto(json))),
                ..Default::default()
            };
            let res = lifecycle::complete(&state, &opts, hooks).await?;
            print_pass(&res, json);
            res.check()
        }
        MoveCmd::Suspend { state, reason } => {
            match lifecycle::suspend(&state, &actor, &reason)? {
                lifecycle::SuspendOutcome::Suspended => eprintln!(
                    "suspended; `mailferry move resume --state {}` lets it take passes again",
                    state.display()
                ),
                lifecycle::SuspendOutcome::Requested => eprintln!(
                    "a pass is running: the move is suspended when it ends (its work is kept)"
                ),
                lifecycle::SuspendOutcome::AlreadySuspended => eprintln!("already suspended"),
            }
            Ok(())
        }
        MoveCmd::Resume { state } => {
            let s = lifecycle::resume(&state, &actor)?;
            eprintln!("resumed: the move is {s} and takes passes again");
            Ok(())
        }
        MoveCmd::Status { state, json } => {
            let s = status::status(&state)?;
            if json {
                print_json(&s);
            } else {
                print!("{}", status::render_text(&s));
            }
            Ok(())
        }
    }
}

/// `batch ...`.
async fn run_batch(cmd: BatchCmd) -> Result<(), AppError> {
    let actor = lifecycle::cli_actor();
    let print_run = |o: &batch::RunOutcome, json: bool| {
        if json {
            print_json(o);
        }
    };
    match cmd {
        BatchCmd::New(new) => {
            let BatchNew {
                name,
                csv,
                endpoint,
                volume,
                proxy,
                ca,
                token_file,
                unlock,
                no_recovery_key,
                concurrency,
                profile,
                settings,
                root,
                start,
                json,
            } = *new;
            let bd = batch::BatchDir::new(&root.state_root, &name)?;
            let destination =
                match (volume, proxy, ca, token_file) {
                    (Some(volume), None, _, _) => {
                        volume_admin::require_recovery(&volume, no_recovery_key)?;
                        moving::Destination::Local {
                            volume,
                            credential: unlock.credential()?,
                        }
                    }
                    (None, Some(url), Some(ca), Some(token_file)) if !unlock.any() => {
                        moving::Destination::Remote {
                            url,
                            ca,
                            token_file,
                        }
                    }
                    _ => return Err(AppError::Usage(
                        "give --volume with its key, or --proxy, --ca and --token-file and no key"
                            .into(),
                    )),
                };
            let b = batch::create(
                &bd,
                &name,
                &batch::NewBatch {
                    csv,
                    endpoint,
                    destination: destination.absolute(),
                    profile,
                    concurrency,
                    settings: lifecycle::Settings {
                        suspend_when_ready: settings.suspend_when_ready.then_some(true),
                        complete_after: settings.complete_after,
                        bad_item_limit: settings.bad_item_limit,
                        large_item_limit: settings.large_item_limit,
                    },
                    actor: actor.clone(),
                },
            )?;
            eprintln!(
                "batch {name}: {} mailbox(es) created in {}{}",
                b.users.len(),
                bd.dir.display(),
                if start {
                    ""
                } else {
                    "; start it with `mailferry batch start`"
                }
            );
            if start {
                let o = batch::run(
                    &bd,
                    batch::Mode::Sync,
                    &batch::RunOptions {
                        actor,
                        observer: Some(progress::Board::new(progress::Style::auto(json))),
                        ..Default::default()
                    },
                )
                .await?;
                print_run(&o, json);
                return o.check();
            }
            if json {
                print_json(&b);
            }
            Ok(())
        }
        BatchCmd::Start {
            name,
            concurrency,
            root,
            json,
            dry_run,
        } => {
            let bd = batch::BatchDir::new(&root.state_root, &name)?;
            if dry_run {
                let previews = batch::dry_run(&bd).await?;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&previews).expect("serializable")
                    );
                } else {
                    for p in &previews {
                        println!("== {}", p.address);
                        match (&p.preview, &p.error) {
                            (Some(d), _) => {
                                print!("{}", mailferry_control::dry_run::render_text(d))
                            }
                            (None, Some(e)) => println!("cannot preview: {e}"),
                            (None, None) => {}
                        }
                    }
                }
                let failed: Vec<&str> = previews
                    .iter()
                    .filter(|p| p.error.is_some())
                    .map(|p| p.address.as_str())
                    .collect();
                if !failed.is_empty() {
                    return Err(AppError::Usage(format!(
                        "the dry run could not preview {}: see above",
                        failed.join(", ")
                    )));
                }
                return Ok(());
            }
            let opts = batch::RunOptions {
                concurrency,
                actor,
                observer: Some(progress::Board::new(progress::Style::auto(json))),
                ..Default::default()
            };
            let o = batch::run(&bd, batch::Mode::Sync, &opts).await?;
            print_run(&o, json);
            o.check()
        }
        BatchCmd::Complete {
            name,
            approve_skipped,
            concurrency,
            root,
            json,
        } => {
            let bd = batch::BatchDir::new(&root.state_root, &name)?;
            let opts = batch::RunOptions {
                concurrency,
                approve_skipped,
                actor,
                observer: Some(progress::Board::new(progress::Style::auto(json))),
            };
            let o = batch::run(&bd, batch::Mode::Complete, &opts).await?;
            print_run(&o, json);
            o.check()
        }
        BatchCmd::Status { name, root, json } => {
            let bd = batch::BatchDir::new(&root.state_root, &name)?;
            let s = batch::status(&bd)?;
            if json {
                print_json(&s);
            } else {
                print!("{}", batch::render_status(&s));
            }
            Ok(())
        }
        BatchCmd::AddUsers { name, csv, root } => {
            let bd = batch::BatchDir::new(&root.state_root, &name)?;
            let (added, already) = batch::add_users_from(&bd, &csv, &actor)?;
            for (row, addr) in &already {
                eprintln!("  row {row}: {addr} is already in the batch, skipped");
            }
            eprintln!(
                "batch {name}: {added} mailbox(es) added, {} already there; `mailferry batch start {name}` moves them",
                already.len()
            );
            Ok(())
        }
        BatchCmd::Suspend { name, root } => {
            let bd = batch::BatchDir::new(&root.state_root, &name)?;
            let (now, later) = batch::suspend(&bd, &actor)?;
            eprintln!(
                "batch {name} suspended: {now} mailbox(es) now, {later} when their running pass ends"
            );
            Ok(())
        }
        BatchCmd::Resume { name, root } => {
            let bd = batch::BatchDir::new(&root.state_root, &name)?;
            let n = batch::resume(&bd, &actor)?;
            eprintln!("batch {name} resumed ({n} mailbox(es)); `mailferry batch start {name}` runs their passes");
            Ok(())
        }
    }
}

fn load_profile(path: Option<&Path>) -> Result<Profile, AppError> {
    match path {
        None => Ok(Profile::embedded_default()),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| AppError::io(p, e))?;
            Ok(Profile::parse(&text, &p.display().to_string())?)
        }
    }
}

fn mailbox(s: &str) -> Result<MailboxAddr, AppError> {
    Ok(MailboxAddr::parse(s)?)
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

async fn run(cli: Cli) -> Result<(), AppError> {
    let tty = std::io::stderr().is_terminal();
    match cli.cmd {
        Cmd::Demo {
            data,
            messages,
            json,
        } => {
            let board = (tty && !json).then(|| progress::Board::new(progress::Style::Bars));
            let out = demo::run_demo(&data, messages, board.map(|b| b as _)).await?;
            if json {
                print_json(&out);
            } else {
                println!("mailferry demo: a complete move through the real pipeline\n");
                if out.generated_messages > 0 {
                    println!(
                        "1. generated a sample mailbox of {} messages   {}",
                        out.generated_messages,
                        out.source.display()
                    );
                } else {
                    println!(
                        "1. reused the sample mailbox                    {}",
                        out.source.display()
                    );
                }
                println!(
                    "2. key file (keep it secret, keep a copy)         {}",
                    out.key_file.display()
                );
                println!(
                    "   recovery key (store it off this machine)       {}",
                    out.recovery_key_file.display()
                );
                println!(
                    "   encrypted volume                               {}",
                    out.volume.display()
                );
                println!("3. {}", moving::summary(&out.report));
                println!(
                    "   move report                                    {}",
                    out.state.join("report.json").display()
                );
                println!(
                    "4. exported {} messages ({:.1} MB)              {}",
                    out.exported.exported,
                    out.exported.bytes as f64 / 1e6,
                    out.export.display()
                );
                println!(
                    "5. compared source and export: {} identical, {} missing, {} extra, {} different",
                    out.comparison.identical,
                    out.comparison.missing.len(),
                    out.comparison.extra.len(),
                    out.comparison.different.len()
                );
            }
            if !out.comparison.is_identical() || !out.exported.damaged.is_empty() {
                return Err(AppError::Failed(
                    "the exported mailbox differs from the source".into(),
                ));
            }
            Ok(())
        }
        Cmd::Move { ctl: Some(ctl), .. } => run_move_ctl(ctl).await,
        Cmd::Move {
            ctl: None,
            source,
            source_access,
            mailbox: mb,
            volume,
            proxy,
            ca,
            token_file,
            unlock,
            state,
            profile,
            json,
            no_recovery_key,
            lifecycle: settings,
            control,
        } => {
            // clap requires these without a subcommand.
            let (source, mb, state) = (
                source.expect("required"),
                mb.expect("required"),
                state.expect("required"),
            );
            let mut pass_profile = load_profile(profile.as_deref())?;
            control.apply(&mut pass_profile);
            if control.dry_run {
                // Before anything that unlocks or writes: a dry run needs no key.
                limits::Limits::effective(
                    &pass_profile,
                    settings.bad_item_limit,
                    settings.large_item_limit,
                )
                .apply(&mut pass_profile);
                let args = dry_run::DryRunArgs {
                    source,
                    source_options: source_access.options(),
                    mailbox: mailbox(&mb)?,
                    destination: match (volume, proxy) {
                        (Some(v), _) => dry_run::DestinationPreview::volume(&v),
                        (None, url) => {
                            dry_run::DestinationPreview::proxy(url.as_deref().unwrap_or_default())
                        }
                    },
                    state,
                    profile: pass_profile,
                };
                let d = dry_run::dry_run(&args).await?;
                if json {
                    print_json(&d);
                } else {
                    print!("{}", dry_run::render_text(&d));
                }
                return Ok(());
            }
            let destination = match (volume, proxy, ca, token_file) {
                (Some(volume), None, _, _) => {
                    volume_admin::require_recovery(&volume, no_recovery_key)?;
                    moving::Destination::Local {
                        volume,
                        credential: unlock.credential()?,
                    }
                }
                (None, Some(url), Some(ca), Some(token_file)) if !unlock.any() => moving::Destination::Remote {
                    url,
                    ca,
                    token_file,
                },
                _ => {
                    return Err(AppError::Usage(
                        "give --volume with its key (local move), or --proxy, --ca and --token-file and no key (remote)"
                            .into(),
                    ))
                }
            };
            let args = moving::MoveArgs {
                source,
                mailbox: mailbox(&mb)?,
                destination,
                state,
                profile: pass_profile,
                source_options: source_access.options(),
            };
            let opts = lifecycle::PassOptions {
                actor: lifecycle::cli_actor(),
                complete: false,
                approve_skipped: settings.approve_skipped,
                settings: settings.settings(),
                invocation: Some(
                    lifecycle::Invocation::new(&args, profile.as_deref()).with_throttle(&control),
                ),
            };
            let hooks = moving::PassHooks {
                observer: Some(progress::Board::new(progress::Style::auto(json))),
                ..Default::default()
            };
            let res = lifecycle::run_pass_with(&args, &opts, hooks).await?;
            print_pass(&res, json);
            res.check()
        }
        Cmd::Serve {
            volume,
            unlock,
            listen,
            tls_cert,
            tls_key,
            tls_dir,
            header_timeout,
            max_streams,
            max_streams_per_token,
            max_message_bytes,
            idle_timeout,
            client_ca,
            profile,
        } => {
            let (header_timeout, limits) = service_limits(
                header_timeout,
                max_streams,
                max_streams_per_token,
                max_message_bytes,
                idle_timeout,
            )?;
            let args = serve::ServeArgs {
                volume,
                credential: unlock.credential()?,
                listen,
                tls: tls_cert.zip(tls_key),
                tls_dir,
                profile: load_profile(profile.as_deref())?,
                header_timeout,
                limits,
                client_ca,
            };
            let shutdown = serve::shutdown_signal()?;
            serve::run_serve(&args, shutdown).await
        }
        Cmd::Proxy {
            listen,
            stores,
            store_cas,
            client_cert,
            client_key,
            tls_dir,
            header_timeout,
            max_streams,
            max_streams_per_token,
            idle_timeout,
        } => {
            let (header_timeout, limits) = service_limits(
                header_timeout,
                max_streams,
                max_streams_per_token,
                0,
                idle_timeout,
            )?;
            let args = serve::FrontArgs {
                listen,
                stores,
                store_cas,
                client_cert,
                client_key,
                tls_dir,
                header_timeout,
                limits,
            };
            let shutdown = serve::shutdown_signal()?;
            serve::run_front(&args, shutdown).await
        }
        Cmd::Tls {
            cmd: TlsCmd::Client { dir },
        } => {
            let (ca, cert, key) = serve::make_client_identity(&dir)?;
            println!(
                "store nodes: mailferry serve ... --client-ca {}\nfront proxy: mailferry proxy ... --client-cert {} --client-key {}",
                ca.display(),
                cert.display(),
                key.display()
            );
            Ok(())
        }
        Cmd::Token {
            cmd:
                TokenCmd::Issue {
                    volume,
                    unlock,
                    tenant,
                    out,
                    valid_for,
                    json,
                },
        } => {
            let expires =
                valid_for.map(|s| mailferry_core::unix_now() + s.min(i64::MAX as u64 / 2) as i64);
            let issued = tokens::issue(&volume, &unlock.credential()?, &tenant, &out, expires)?;
            eprintln!(
                "token {} for tenant {} written to {} (mode 0600); it is shown nowhere else",
                issued.id, issued.tenant, issued.out
            );
            if issued.volume_in_use {
                eprintln!("the volume is in use by a running `mailferry serve`: it accepts the token now and records it in the volume's audit log");
            }
            if json {
                print_json(&issued);
            }
            Ok(())
        }
        Cmd::Token {
            cmd:
                TokenCmd::Add {
                    volume,
                    unlock,
                    tenant,
                    token_file,
                },
        } => {
            let added = tokens::add(&volume, &unlock.credential()?, &tenant, &token_file)?;
            eprintln!(
                "token from {} registered as token {} for tenant {}",
                added.out, added.id, added.tenant
            );
            Ok(())
        }
        Cmd::Token {
            cmd:
                TokenCmd::List {
                    volume,
                    unlock,
                    json,
                },
        } => {
            let list = tokens::list(&volume, &unlock.credential()?)?;
            if json {
                print_json(&list);
            } else {
                print!("{}", tokens::table(&list));
            }
            Ok(())
        }
        Cmd::Token {
            cmd: TokenCmd::Revoke { volume, unlock, id },
        } => {
            if tokens::revoke(&volume, &unlock.credential()?, id)? {
                eprintln!("token {id} revoked; a running `serve` refuses it from its next request");
            } else {
                eprintln!("token {id} was already revoked");
            }
            Ok(())
        }
        Cmd::Export {
            volume,
            unlock,
            mailbox: mb,
            format,
            out,
            layout,
            maildir_names,
            json,
        } => {
            let mb = mailbox(&mb)?;
            let v = volume_admin::open(&volume, &unlock)?;
            let opts = export::MaildirOptions {
                layout: match layout {
                    ExportLayout::MaildirPlusPlus => export::Layout::MaildirPlusPlus,
                    ExportLayout::Fs => export::Layout::Fs,
                },
                names: match maildir_names {
                    ExportNames::Mutf7 => mailferry_core::profile::MaildirNames::Mutf7,
                    ExportNames::Utf8 => mailferry_core::profile::MaildirNames::Utf8,
                },
            };
            let outcome = match format {
                Format::Maildir => export::export_maildir(&v, &mb, &out, opts)?,
                Format::Mbox => export::export_mbox(&v, &mb, &out)?,
            };
            eprintln!(
                "exported {} messages ({} bytes) of {mb} to {}",
                outcome.exported,
                outcome.bytes,
                out.display()
            );
            for d in &outcome.damaged {
                eprintln!("  damaged item {}: {}", d.item, d.reason);
            }
            for k in &outcome.keywords_not_written {
                eprintln!(
                    "  folder {}: {} keyword(s) not written (a Maildir folder has 26 keyword \
                     letters; the messages were exported without them): {}",
                    k.folder,
                    k.keywords.len(),
                    k.keywords.join(" ")
                );
            }
            if json {
                print_json(&outcome);
            }
            if !outcome.damaged.is_empty() {
                return Err(AppError::Failed(format!(
                    "{} damaged item(s) were not exported; every other message was",
                    outcome.damaged.len()
                )));
            }
            Ok(())
        }
        Cmd::Volume {
            cmd:
                VolumeCmd::Init {
                    volume,
                    key_file,
                    passphrase_file,
                    recovery_key_file,
                    no_recovery_key,
                },
        } => {
            let out = volume_admin::init(
                &volume,
                key_file.as_deref(),
                passphrase_file.as_deref(),
                recovery_key_file.as_deref(),
                no_recovery_key,
            )?;
            println!(
                "created volume {} (id {})",
                volume.display(),
                hex::encode(out.volume_id)
            );
            if let (true, Some(k)) = (out.key_file_created, &key_file) {
                println!(
                    "created key file {} (32 random bytes, mode 0600). Without it the volume cannot be read: keep a copy somewhere safe.",
                    k.display()
                );
            }
            match &out.recovery_key_file {
                Some(r) => println!("{}", volume_admin::recovery_instructions(r)),
                None => println!("no recovery key: if the key is lost, the mail is lost (`move` will ask for --no-recovery-key)."),
            }
            Ok(())
        }
        Cmd::Volume {
            cmd:
                VolumeCmd::Verify {
                    volume,
                    unlock,
                    json,
                },
        } => {
            let v = volume_admin::open(&volume, &unlock)?;
            let report = v.verify()?;
            eprintln!(
                "checked {} messages ({} bytes): {} damaged, {} shredded (unreadable on purpose)",
                report.messages_checked,
                report.bytes_checked,
                report.damaged.len(),
                report.shredded
            );
            for d in &report.damaged {
                eprintln!("  damaged item {} in {}: {}", d.item, d.mailbox, d.reason);
            }
            if json {
                print_json(&serde_json::json!({
                    "messages_checked": report.messages_checked,
                    "bytes_checked": report.bytes_checked,
                    "shredded": report.shredded,
                    "damaged": report.damaged.iter().map(|d| serde_json::json!({
                        "mailbox": d.mailbox, "item": d.item, "reason": d.reason,
                    })).collect::<Vec<_>>(),
                }));
            }
            if !report.damaged.is_empty() {
                return Err(AppError::Failed(format!(
                    "{} damaged item(s)",
                    report.damaged.len()
                )));
            }
            Ok(())
        }
        Cmd::Volume {
            cmd: VolumeCmd::UnlockCheck { volume, unlock },
        } => {
            let info = volume_admin::unlock_check(&volume, &unlock)?;
            println!(
                "ok: {} opens volume {} (id {}, format version {}) through slot {}; slots: {}",
                unlock.credential()?.kind(),
                volume.display(),
                hex::encode(info.volume_id),
                info.version,
                info.slot_kind,
                info.slots.join(", ")
            );
            Ok(())
        }
        Cmd::Volume {
            cmd:
                VolumeCmd::Rekey {
                    volume,
                    unlock,
                    new_key_file,
                    new_passphrase_file,
                },
        } => {
            let created = volume_admin::rekey(
                &volume,
                &unlock,
                new_key_file.as_deref(),
                new_passphrase_file.as_deref(),
            )?;
            if let (true, Some(k)) = (created, &new_key_file) {
                println!(
                    "created key file {} (32 random bytes, mode 0600)",
                    k.display()
                );
            }
            println!(
                "rekeyed volume {}: it now opens with the new {} (and the recovery key, if it has one); the old key no longer opens it",
                volume.display(),
                if new_key_file.is_some() { "key file" } else { "passphrase" }
            );
            Ok(())
        }
        Cmd::Volume {
            cmd:
                VolumeCmd::Shred {
                    volume,
                    unlock,
                    mailbox: mb,
                },
        } => {
            let mb = mailbox(&mb)?;
            let n = volume_admin::shred(&volume, &unlock, &mb)?;
            println!("shredded mailbox {mb}: its keys are destroyed, {n} message(s) can no longer be read by anyone; `volume compact` reclaims their space");
            Ok(())
        }
        Cmd::Volume {
            cmd:
                VolumeCmd::Rotate {
                    volume,
                    unlock,
                    mailbox: mb,
                    tenant,
                    reencrypt: true,
                },
        } => {
            let mb = mb.as_deref().map(mailbox).transpose()?;
            let out =
                volume_admin::rotate_reencrypt(&volume, &unlock, mb.as_ref(), tenant.as_deref())?;
            if out.resumed {
                println!("resumed an interrupted re-encryption");
            }
            if out.tenant_rotated {
                println!(
                    "rotated tenant {}: new tenant key",
                    tenant.unwrap_or_default()
                );
            }
            for (m, k) in &out.mailboxes {
                println!("re-encrypted mailbox {m}: every message now uses key id {k}");
            }
            println!(
                "{} message(s) ({} bytes) re-encrypted, {} earlier key generation(s) dropped; old records removed ({} segment(s) rewritten)",
                out.messages_reencrypted,
                out.bytes_reencrypted,
                out.keys_dropped,
                out.compaction.segments_rewritten
            );
            if !out.skipped.is_empty() {
                for s in &out.skipped {
                    eprintln!("  not re-encrypted: {s}");
                }
                return Err(AppError::Failed(format!(
                    "{} message(s) could not be re-encrypted (run `volume verify`); their mailbox keeps its earlier keys, run the same command again after repairing",
                    out.skipped.len()
                ))
                );
            }
            Ok(())
        }
        Cmd::Volume {
            cmd:
                VolumeCmd::Rotate {
                    volume,
                    unlock,
                    mailbox: mb,
                    tenant,
                    reencrypt: false,
                },
        } => {
            let mb = mb.as_deref().map(mailbox).transpose()?;
            let out = volume_admin::rotate(&volume, &unlock, mb.as_ref(), tenant.as_deref())?;
            match (&mb, out.new_key_id) {
                (Some(m), Some(k)) => println!(
                    "rotated mailbox {m}: new messages use key id {k}; stored messages keep theirs"
                ),
                _ => println!(
                    "rotated tenant {}: new tenant key, {} key(s) of {} mailbox(es) rewrapped",
                    tenant.unwrap_or_default(),
                    out.keys_rewrapped,
                    out.mailboxes
                ),
            }
            Ok(())
        }
        Cmd::Volume {
            cmd:
                VolumeCmd::Compact {
                    volume,
                    unlock,
                    json,
                },
        } => {
            let out = volume_admin::compact(&volume, &unlock)?;
            eprintln!(
                "compacted volume {}: {} segment(s) rewritten into {}, {} message(s) moved, {} shredded message(s) dropped; segments {} -> {} bytes",
                volume.display(),
                out.segments_rewritten,
                out.segments_written,
                out.messages_moved,
                out.messages_dropped,
                out.bytes_before,
                out.bytes_after
            );
            for s in &out.skipped {
                eprintln!("  skipped damaged {s} (run `volume verify`)");
            }
            if json {
                print_json(&serde_json::json!({
                    "segments_rewritten": out.segments_rewritten,
                    "segments_written": out.segments_written,
                    "messages_moved": out.messages_moved,
                    "messages_dropped": out.messages_dropped,
                    "bytes_before": out.bytes_before,
                    "bytes_after": out.bytes_after,
                    "skipped": out.skipped,
                }));
            }
            Ok(())
        }
        Cmd::Volume {
            cmd: VolumeCmd::Replicate { volume, to, json },
        } => {
            let out = Volume::replicate(&volume, &to)?;
            eprintln!(
                "replicated {} to {}: {} segment(s) copied, {} appended, {} unchanged, {} removed; {} segment bytes, {} index bytes, {} audit bytes written",
                volume.display(),
                to.display(),
                out.segments_copied,
                out.segments_appended,
                out.segments_unchanged,
                out.segments_removed,
                out.segment_bytes_copied,
                out.index_bytes,
                out.audit_bytes_copied
            );
            if json {
                print_json(&out);
            }
            Ok(())
        }
        Cmd::Volume {
            cmd: VolumeCmd::Upgrade { volume, unlock },
        } => {
            drop(volume_admin::open(&volume, &unlock)?);
            println!(
                "volume {} is at format version {}",
                volume.display(),
                mailferry_store::header::VERSION
            );
            Ok(())
        }
        Cmd::Audit {
            cmd:
                AuditCmd::Verify {
                    dir,
                    head,
                    key_file,
                },
        } => {
            let path = audit_cmd::log_path(&dir)?;
            // The chain is checked as found on disk, before anything opens the volume.
            let res = match &head {
                Some(h) => mailferry_audit::verify_with_head(&path, h),
                None => mailferry_audit::verify(&path),
            };
            let v =
                res.map_err(|e| AppError::Failed(format!("audit log verification failed: {e}")))?;
            println!(
                "{}: {} records, chain intact, head {}",
                path.display(),
                v.records,
                v.head
            );
            if let Some(key) = key_file {
                let vol = Volume::open(&dir, &key, &Profile::embedded_default().store)?;
                let problems = audit_cmd::check_volume_records(&vol)?;
                for p in &problems {
                    eprintln!("  {p}");
                }
                if !problems.is_empty() {
                    return Err(AppError::Failed(format!(
                        "{} disagreement(s) between the volume and its audit log",
                        problems.len()
                    )));
                }
                println!(
                    "every message of the volume has its record, and every record its message"
                );
            }
            Ok(())
        }
        Cmd::Audit {
            cmd:
                AuditCmd::Reconcile(BothSides {
                    state,
                    volume,
                    unlock,
                    json,
                }),
        } => {
            let v = volume_admin::open(&volume, &unlock)?;
            let r = audit_cmd::reconcile(&state, &v)?;
            eprintln!(
                "{}: {} agreeing of {} acknowledged at the source and {} in the volume; {} missing, {} extra, {} altered, {} duplicated, {} removed from the volume, {} unlogged; {} deleted at the source, {} of them still in the volume",
                r.mailbox, r.agreeing, r.source_items, r.destination_items, r.missing.len(), r.extra.len(),
                r.altered.len(), r.duplicated.len(), r.removed_from_volume.len(), r.unlogged.len(),
                r.deleted + r.not_deleted.len() as u64, r.not_deleted.len()
            );
            for m in &r.not_deleted {
                eprintln!("  not deleted {m} (deleted at the source, still in the volume)");
            }
            for m in &r.missing {
                eprintln!("  missing {m}");
            }
            for m in &r.extra {
                eprintln!("  extra {m}");
            }
            for a in &r.altered {
                eprintln!("  altered {}: {}", a.item, a.reason);
            }
            for m in &r.duplicated {
                eprintln!("  duplicated {m}");
            }
            for id in &r.removed_from_volume {
                eprintln!("  removed from the volume: message id {id} (its record is in the volume's audit log)");
            }
            if json {
                print_json(&r);
            }
            if r.agrees() {
                Ok(())
            } else {
                Err(AppError::Failed("the two sides do not agree".into()))
            }
        }
        Cmd::Receipt {
            cmd:
                ReceiptCmd::Verify(BothSides {
                    state,
                    volume,
                    unlock,
                    json,
                }),
        } => {
            let v = volume_admin::open(&volume, &unlock)?;
            let r = audit_cmd::verify_receipt(&state, &v)?;
            eprintln!(
                "source root {}
volume root {} ({} messages)
{}",
                r.source_root,
                r.destination_root,
                r.destination_items,
                if r.matches {
                    "receipt matches"
                } else {
                    "RECEIPT DOES NOT MATCH"
                }
            );
            if json {
                print_json(&r);
            }
            if r.matches {
                Ok(())
            } else {
                Err(AppError::Failed(
                    "the receipt does not match the volume".into(),
                ))
            }
        }
        Cmd::Report {
            state,
            volume,
            key_file,
            format,
            out,
        } => {
            let v = match (&volume, &key_file) {
                (Some(vol), Some(key)) => {
                    Some(Volume::open(vol, key, &Profile::embedded_default().store)?)
                }
                _ => None,
            };
            let record = report::load(&state, v.as_ref())?;
            let body = match format {
                ReportFormat::Json => {
                    serde_json::to_string_pretty(&record).expect("serializable") + "\n"
                }
                ReportFormat::Html => report::html(&record),
            };
            if out.as_os_str() == "-" {
                print!("{body}");
            } else {
                std::fs::write(&out, body).map_err(|e| AppError::io(&out, e))?;
                eprintln!("wrote {}", out.display());
            }
            Ok(())
        }
        Cmd::Bench(b) => {
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
                compare_dovecot: b.compare.is_some(),
                profile: load_profile(b.profile.as_deref())?,
                progress: true,
                command: std::env::args().collect::<Vec<_>>().join(" "),
            };
            // The benchmark builds its own runtimes, so that it can tell their threads apart.
            let report = tokio::task::spawn_blocking(move || bench::run(&args))
                .await
                .expect("bench thread panicked")?;
            if json {
                print_json(&report);
            } else {
                print!("{}", bench::render_text(&report));
            }
            Ok(())
        }
        Cmd::Batch { cmd } => run_batch(cmd).await,
        Cmd::Admin { cmd } => run_admin(cmd).await,
        Cmd::Endpoint {
            cmd:
                EndpointCmd::Test {
                    file,
                    user,
                    password_file,
                    json,
                },
        } => {
            let ep = endpoint::Endpoint::load(&file)?;
            let r = endpoint::test(&ep, user.as_deref(), password_file.as_deref()).await?;
            if json {
                print_json(&r);
            } else {
                print!("{}", endpoint::render_text(&r));
            }
            if r.ok {
                Ok(())
            } else {
                Err(AppError::Failed(format!(
                    "endpoint {}: {} check(s) failed",
                    file.display(),
                    r.checks.iter().filter(|c| !c.ok).count()
                )))
            }
        }
        Cmd::Profile {
            cmd: ProfileCmd::Check { file },
        } => {
            let p = load_profile(Some(&file))?;
            println!("{}: ok (profile {:?})", file.display(), p.name);
            Ok(())
        }
        Cmd::Profile {
            cmd: ProfileCmd::Default,
        } => {
            print!("{}", mailferry_core::profile::DEFAULT_PROFILE);
            Ok(())
        }
        Cmd::Profile {
            cmd: ProfileCmd::Show { file, set, json },
        } => {
            let effective = profile_cmd::load(file.as_deref(), &set)?;
            if json {
                print_json(&profile_cmd::to_json(&effective));
            } else {
                print!("{}", profile_cmd::render_text(&effective));
            }
            Ok(())
        }
    }
}

async fn run_admin(cmd: AdminCmd) -> Result<(), AppError> {
    use mailferry_admin as admin;
    match cmd {
        AdminCmd::Serve {
            listen,
            state,
            volume,
            key_file,
            tls_cert,
            tls_key,
            tls_dir,
            session_idle,
            session_max,
            max_login_failures,
            lockout,
        } => {
            let mut cfg = admin::AdminConfig::new(listen, state, volume, key_file);
            cfg.tls = tls_cert.zip(tls_key);
            cfg.tls_dir = tls_dir;
            cfg.session_idle = session_idle.into();
            cfg.session_absolute = session_max.into();
            cfg.max_failures = max_login_failures;
            cfg.lockout = lockout.into();
            let shutdown = serve::shutdown_signal()?;
            admin::serve(cfg, shutdown).await
        }
        AdminCmd::Add { name, role, state } => {
            let role: admin::Role = role.parse().map_err(AppError::Usage)?;
            let st = admin::AdminState::open_accounts_only(&state)?;
            let new = st.accounts.add(&name, role)?;
            st.audit
                .record(
                    &lifecycle::cli_actor(),
                    "admin.account.created",
                    serde_json::json!({"account": name, "role": role.as_str()}),
                )
                .map_err(|e| AppError::Failed(e.to_string()))?;
            // Shown once: the secrets are not kept in a form that can be shown again.
            println!(
                "account {name} ({}) created in {}",
                role.as_str(),
                state.display()
            );
            println!("password: {}", new.password.expose());
            println!("totp: {}", new.otpauth.expose());
            if std::io::stderr().is_terminal() {
                eprintln!("{}", admin::accounts::qr_text(new.otpauth.expose()));
            }
            eprintln!(
                "Store the password now (it is shown only once) and add the TOTP secret to an authenticator app; every login needs both."
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    // Every command's help opens with an example (examples.rs).
    let matches = examples::attach(<Cli as clap::CommandFactory>::command()).get_matches();
    let cli =
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // A service logs its access lines by default; one-shot commands only warnings.
    // Progress lines of long work (when no bars are drawn) are shown like warnings.
    let default_filter = match cli.cmd {
        Cmd::Serve { .. } | Cmd::Proxy { .. } => "warn,mailferry_proxy::server=info",
        Cmd::Admin { .. } => "warn,mailferry::admin=info",
        _ => "warn,mailferry::progress=info",
    };
    logging::init(cli.log_format, default_filter);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.exit_code();
            let e = anyhow::Error::new(e).context("mailferry");
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}
