//! The `mailferry` binary: parses flags, runs the library, maps the result to an exit
//! code (0 ok, 1 failed, 2 usage or configuration error, 3 limit hit, 4 some mailboxes
//! of a batch failed, 5 refused by the move's state; see `AppError::exit_code`).
//! Nothing else lives here.
//!
//! Layout: [`commands`] holds one module per command family (its clap arguments and a
//! `run` that calls the libraries and renders the outcome), [`render`] the output
//! helpers, [`examples`] the example that opens every `--help`.

use clap::{Parser, Subcommand};
use commands::{
    access, admin, audit, batch, bench, demo, endpoint, export, moving, profile, serve, tenant,
    token, volume, worker,
};
use mailferry_control::AppError;
use std::io::IsTerminal;
use std::process::ExitCode;

mod commands;
mod examples;
mod logging;
mod progress;
mod render;

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

// Parsed once per process: the size of its largest variant (`move`) does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Generate a sample mailbox, move it into a new encrypted volume, export it back and compare.
    Demo(demo::DemoArgs),
    /// Move one mailbox into a volume (agent, proxy and store in this process over
    /// loopback HTTPS), or to a remote `mailferry serve` with --proxy. Every run is a
    /// pass (the first copies, later ones mirror changes); `move complete`, `suspend`,
    /// `resume` and `status` drive the move's lifecycle.
    #[command(
        args_conflicts_with_subcommands = true,
        subcommand_negates_reqs = true,
        after_help = moving::MOVE_HELP
    )]
    Move(moving::MoveArgs),
    /// Serve the wire protocol (proxy and store in one process) until SIGTERM or ctrl-c.
    Serve(serve::ServeArgs),
    /// Front proxy of a split deployment: terminates agents' TLS and routes each mailbox
    /// to the store node that owns it (rendezvous hashing) over mutual TLS.
    Proxy(serve::ProxyArgs),
    /// TLS material for split deployments.
    Tls {
        #[command(subcommand)]
        cmd: serve::TlsCmd,
    },
    /// Issue, list and revoke agent tokens (each bound to one tenant).
    Token {
        #[command(subcommand)]
        cmd: token::TokenCmd,
    },
    /// Tenant-held (customer) keys: the operator stores and checks, only the tenant reads.
    Tenant {
        #[command(subcommand)]
        cmd: tenant::TenantCmd,
    },
    /// Write a mailbox back out of a volume.
    Export(export::ExportArgs),
    /// Create and check encrypted volumes.
    Volume {
        #[command(subcommand)]
        cmd: volume::VolumeCmd,
    },
    /// Check audit logs and compare both sides of a move.
    Audit {
        #[command(subcommand)]
        cmd: audit::AuditCmd,
    },
    /// Check the move receipt (Merkle root of every message) against the volume.
    Receipt {
        #[command(subcommand)]
        cmd: audit::ReceiptCmd,
    },
    /// Write the move record (every pass, statistics, receipt, audit digests) as JSON or HTML.
    Report(audit::ReportArgs),
    /// Check or print migration profiles.
    Profile {
        #[command(subcommand)]
        cmd: profile::ProfileCmd,
    },
    /// Measure this machine: generate a corpus, move it through the real pipeline
    /// (durable), verify every run, and report MB/s, msg/s, latency, CPU per stage,
    /// peak RSS.
    #[command(after_long_help = mailferry_bench::bench::CORPUS_HELP)]
    Bench(bench::BenchCmd),
    /// Migration batches: many mailboxes from a CSV (EmailAddress,UserName,Password),
    /// one endpoint, one destination.
    Batch {
        #[command(subcommand)]
        cmd: batch::BatchCmd,
    },
    /// Run the passes that `batch start --db` queued in a PostgreSQL database; start one
    /// or more on any number of machines. SIGTERM: lease nothing new, let running passes
    /// commit, exit 0.
    Worker(worker::WorkerArgs),
    /// Source endpoints (TOML files: kind, host, TLS, master user, throttles).
    Endpoint {
        #[command(subcommand)]
        cmd: endpoint::EndpointCmd,
    },
    /// The admin service (REST API and wizard over HTTPS) and its accounts.
    Admin {
        #[command(subcommand)]
        cmd: admin::AdminCmd,
    },
    /// The lockbox: request, approve or deny access to a mailbox's content for a time,
    /// list requests and grants, export during a grant (two people, MFA, both audit logs).
    Access {
        #[command(subcommand)]
        cmd: access::AccessCmd,
    },
}

/// Runs one command: one function per command family.
async fn run(cmd: Cmd) -> Result<(), AppError> {
    let tty = std::io::stderr().is_terminal();
    match cmd {
        Cmd::Demo(a) => demo::run(a, tty).await,
        Cmd::Move(a) => moving::run(a).await,
        Cmd::Serve(a) => serve::run_serve(a).await,
        Cmd::Proxy(a) => serve::run_proxy(a).await,
        Cmd::Tls { cmd } => serve::run_tls(cmd),
        Cmd::Token { cmd } => token::run(cmd),
        Cmd::Tenant { cmd } => tenant::run(cmd),
        Cmd::Export(a) => export::run(a),
        Cmd::Volume { cmd } => volume::run(cmd),
        Cmd::Audit { cmd } => audit::run(cmd).await,
        Cmd::Receipt { cmd } => audit::run_receipt(cmd),
        Cmd::Report(a) => audit::run_report(a),
        Cmd::Profile { cmd } => profile::run(cmd),
        Cmd::Bench(b) => bench::run(b).await,
        Cmd::Batch { cmd } => batch::run(cmd).await,
        Cmd::Endpoint { cmd } => endpoint::run(cmd).await,
        Cmd::Worker(a) => worker::run(a).await,
        Cmd::Admin { cmd } => admin::run(cmd).await,
        Cmd::Access { cmd } => access::run(cmd),
    }
}

/// Output set-up before a command runs: log lines on stderr, with a default filter
/// that suits the command.
fn output_setup(cli: &Cli) {
    // A service logs its access lines by default; one-shot commands only warnings.
    // Progress lines of long work (when no bars are drawn) are shown like warnings.
    let default_filter = match cli.cmd {
        Cmd::Serve(_) | Cmd::Proxy(_) => "warn,mailferry_proxy::server=info",
        Cmd::Worker(_) => "warn,mailferry_coord::worker=info",
        Cmd::Admin { .. } => "warn,mailferry::admin=info",
        _ => "warn,mailferry::progress=info",
    };
    logging::init(cli.log_format, default_filter);
}

fn main() -> ExitCode {
    // Every command's help opens with an example (examples.rs).
    let matches = examples::attach(<Cli as clap::CommandFactory>::command()).get_matches();
    let cli =
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    output_setup(&cli);
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
    match rt.block_on(run(cli.cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.exit_code();
            let e = anyhow::Error::new(e).context("mailferry");
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}
