//! `mailferry move`: one pass of a move (or its dry run), and `move complete|suspend|
//! resume|status` for its lifecycle. The flags every source and destination take live
//! here; `batch new` reuses [`Schedule`] and [`Destination`].

use super::{load_profile, mailbox};
use crate::progress;
use crate::render::{json_or_text, print_json};
use mailferry_control::{
    control, dry_run, lifecycle, limits, moving, status, volume_admin, AppError,
};
use std::path::PathBuf;

/// How the agent logs in to, and what it trusts of, an IMAP source; file sources ignore it.
#[derive(clap::Args)]
pub struct SourceAccess {
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
    /// IMAP source: connections to read with at once, 1 to 64: folders, and ranges of a
    /// large folder, are read in parallel. Kept with the move, so `move complete` reads
    /// with as many. Mind the server's per-account limit (docs/moving.md) [default: the
    /// profile's source.connections, 4].
    #[arg(long, value_name = "N", value_parser = control::parse_connections)]
    source_connections: Option<usize>,
}

impl SourceAccess {
    pub fn options(self) -> mailferry_agent::source::SourceOptions {
        mailferry_agent::source::SourceOptions {
            password_file: self.password_file,
            oauth_token_file: self.oauth_token_file,
            source_ca: self.source_ca,
            source_cert_sha256: self.source_cert_sha256,
            password: None,
            source_prefix: self.source_prefix,
            namespaces: self.source_namespaces,
            maildir_names: self.maildir_names,
            connections: self.source_connections,
            ..Default::default()
        }
    }
}

/// The examples and states under `move --help`.
pub const MOVE_HELP: &str = "Examples:
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

/// When a move completes and what it tolerates; each given flag is kept for later passes.
/// `batch new` takes the same flags for every mailbox of a batch (with its own help).
#[derive(clap::Args)]
pub struct Schedule {
    /// Hold the move at Synced after the initial copy (Exchange's
    /// SuspendWhenReadyToComplete): passes stay incremental until `move complete`.
    #[arg(long, conflicts_with = "complete_after")]
    pub suspend_when_ready: bool,
    /// Complete the move on the first pass that starts at or after TIME: RFC 3339
    /// (2025-07-01T22:00:00Z) or a time from now (2h, +3days).
    #[arg(long, value_name = "TIME", value_parser = lifecycle::parse_time)]
    pub complete_after: Option<String>,
    /// Bad items (damaged, unreadable, refused) tolerated before the move fails
    /// [default: the profile's limits.bad_item_limit, 0].
    #[arg(long, value_name = "N")]
    pub bad_item_limit: Option<u64>,
    /// Skip messages larger than SIZE (25MB, 25MiB, 26214400) as large items: not sent,
    /// listed with the move [default: off].
    #[arg(long, value_name = "SIZE", value_parser = limits::parse_size)]
    pub large_item_limit: Option<u64>,
}

impl Schedule {
    /// The lifecycle settings these flags give (unset ones keep the recorded values).
    pub fn settings(&self) -> lifecycle::Settings {
        lifecycle::Settings {
            suspend_when_ready: self.suspend_when_ready.then_some(true),
            complete_after: self.complete_after.clone(),
            bad_item_limit: self.bad_item_limit,
            large_item_limit: self.large_item_limit,
        }
    }
}

/// A move's lifecycle and limits; each given flag is kept for later passes.
#[derive(clap::Args)]
struct MoveSettings {
    #[command(flatten)]
    schedule: Schedule,
    /// Accept every skipped item of this pass and earlier ones: they no longer count
    /// against the limits nor hold back completion.
    #[arg(long)]
    approve_skipped: bool,
}

/// `move complete|suspend|resume|status`.
#[derive(clap::Subcommand)]
pub enum MoveCmd {
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
        /// The move's state directory (or --db and --mailbox).
        #[arg(long, required_unless_present = "mailbox")]
        state: Option<PathBuf>,
        #[command(flatten)]
        db: super::audit::DbMove,
        /// JSON on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `move`: a pass, unless a lifecycle subcommand is given.
#[derive(clap::Args)]
pub struct MoveArgs {
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
    #[command(flatten)]
    dest: Destination,
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
}

/// Where a move writes: a local volume with its key, or a remote proxy with its CA and
/// token and no key. `batch new` takes the same flags (with its own help words).
#[derive(clap::Args)]
// Unlocking is optional: a remote move (--proxy) takes no key.
#[command(mut_group("UnlockArgs", |g| g.required(false)))]
pub struct Destination {
    /// Volume directory (created by `volume init`), or `s3://bucket/prefix` (see
    /// --s3-endpoint, --cache-dir); not with --proxy.
    #[arg(long, required_unless_present = "proxy", conflicts_with = "proxy")]
    pub volume: Option<PathBuf>,
    /// Stream to this remote proxy (`https://host:port`, a `mailferry serve`)
    /// instead of a local volume.
    #[arg(long, requires_all = ["ca", "token_file"])]
    pub proxy: Option<String>,
    /// PEM file of the CA the remote proxy's certificate is checked against.
    #[arg(long, requires = "proxy")]
    pub ca: Option<PathBuf>,
    /// File holding the agent token (written by `mailferry token issue`).
    #[arg(long, requires = "proxy")]
    pub token_file: Option<PathBuf>,
    #[command(flatten)]
    pub unlock: volume_admin::UnlockArgs,
    #[command(flatten)]
    pub s3: volume_admin::S3Args,
}

impl Destination {
    /// The destination these flags name; `usage` is the error when they name none.
    pub fn resolve(
        self,
        no_recovery_key: bool,
        usage: &str,
    ) -> Result<moving::Destination, AppError> {
        match (self.volume, self.proxy, self.ca, self.token_file) {
            (Some(volume), None, _, _) => {
                volume_admin::require_recovery(&volume, no_recovery_key, &self.s3)?;
                Ok(moving::Destination::Local {
                    volume,
                    credential: self.unlock.credential()?,
                    s3: self.s3,
                })
            }
            (None, Some(url), Some(ca), Some(token_file)) if !self.unlock.any() => {
                Ok(moving::Destination::Remote {
                    url,
                    ca,
                    token_file,
                })
            }
            _ => Err(AppError::Usage(usage.into())),
        }
    }
}

/// `move ...`: a lifecycle subcommand, a dry run, or a pass.
pub async fn run(a: MoveArgs) -> Result<(), AppError> {
    if let Some(ctl) = a.ctl {
        return run_ctl(ctl).await;
    }
    // clap requires these without a subcommand.
    let (source, mb, state) = (
        a.source.expect("required"),
        a.mailbox.expect("required"),
        a.state.expect("required"),
    );
    let mut pass_profile = load_profile(a.profile.as_deref())?;
    a.control.apply(&mut pass_profile);
    let schedule = &a.lifecycle.schedule;
    if a.control.dry_run {
        // Before anything that unlocks or writes: a dry run needs no key.
        limits::Limits::effective(
            &pass_profile,
            schedule.bad_item_limit,
            schedule.large_item_limit,
        )
        .apply(&mut pass_profile);
        let args = dry_run::DryRunArgs {
            source,
            source_options: a.source_access.options(),
            mailbox: mailbox(&mb)?,
            destination: match (a.dest.volume, a.dest.proxy) {
                (Some(v), _) => dry_run::DestinationPreview::volume(&v),
                (None, url) => {
                    dry_run::DestinationPreview::proxy(url.as_deref().unwrap_or_default())
                }
            },
            state,
            profile: pass_profile,
        };
        let d = dry_run::dry_run(&args).await?;
        json_or_text(a.json, &d, dry_run::render_text);
        return Ok(());
    }
    let destination = a.dest.resolve(
        a.no_recovery_key,
        "give --volume with its key (local move), or --proxy, --ca and --token-file and no key (remote)",
    )?;
    let args = moving::MoveArgs {
        source,
        mailbox: mailbox(&mb)?,
        destination,
        state,
        profile: pass_profile,
        source_options: a.source_access.options(),
    };
    let opts = lifecycle::PassOptions {
        actor: lifecycle::cli_actor(),
        complete: false,
        approve_skipped: a.lifecycle.approve_skipped,
        settings: schedule.settings(),
        invocation: Some(
            lifecycle::Invocation::new(&args, a.profile.as_deref()).with_throttle(&a.control),
        ),
    };
    let hooks = moving::PassHooks {
        observer: Some(progress::Board::new(progress::Style::auto(a.json))),
        ..Default::default()
    };
    let res = lifecycle::run_pass_with(&args, &opts, hooks).await?;
    print_pass(&res, a.json);
    res.check()
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
async fn run_ctl(ctl: MoveCmd) -> Result<(), AppError> {
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
        MoveCmd::Status { state, db, json } => {
            let st = match state {
                Some(state) => status::status(&state)?,
                None => {
                    let (db, id) = db.find().await?.ok_or_else(|| {
                        AppError::Usage("move status: give --state, or --db and --mailbox".into())
                    })?;
                    mailferry_coord::ops::move_status(&db.client, &id).await?
                }
            };
            json_or_text(json, &st, status::render_text);
            Ok(())
        }
    }
}
