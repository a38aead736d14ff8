//! The `mailferry` binary: parses flags, runs the library, maps the result to an exit
//! code (0 ok, 1 failed, 2 usage or configuration error). Nothing else lives here.

use clap::{Parser, Subcommand, ValueEnum};
use mailferry_cli::{
    audit_cmd, demo, export, moving, report, serve, tokens, volume_admin, AppError,
};
use mailferry_core::profile::Profile;
use mailferry_core::MailboxAddr;
use mailferry_store::Volume;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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

Exit codes: 0 ok, 1 the command ran and failed (bad or damaged items, lost connection),
2 usage or configuration error (flags, profile, wrong key)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

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
    /// loopback HTTPS), or to a remote `mailferry serve` with --proxy.
    Move {
        /// Source: maildir:PATH.
        #[arg(long)]
        source: String,
        /// Destination mailbox address.
        #[arg(long)]
        mailbox: String,
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
        #[arg(long)]
        state: PathBuf,
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
    /// Maildir++ (folders as .Name.Sub, flags in file names).
    Maildir,
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
            let out = demo::run_demo(&data, messages, tty && !json).await?;
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
        Cmd::Move {
            source,
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
        } => {
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
                profile: load_profile(profile.as_deref())?,
                progress_bar: tty && !json,
            };
            let report = moving::run_move(&args).await?;
            eprintln!("{}", moving::summary(&report));
            if json {
                print_json(&report);
            }
            if !report.bad_items.is_empty() {
                return Err(AppError::Failed(format!(
                    "{} item(s) could not be moved (listed above and in {}); everything else is stored",
                    report.bad_items.len(),
                    args.state.join("report.json").display()
                )));
            }
            Ok(())
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
            format: Format::Maildir,
            out,
            json,
        } => {
            let mb = mailbox(&mb)?;
            let v = volume_admin::open(&volume, &unlock)?;
            let outcome = export::export_maildir(&v, &mb, &out)?;
            eprintln!(
                "exported {} messages ({} bytes) of {mb} to {}",
                outcome.exported,
                outcome.bytes,
                out.display()
            );
            for d in &outcome.damaged {
                eprintln!("  damaged item {}: {}", d.item, d.reason);
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
                "{}: {} agreeing of {} acknowledged at the source and {} in the volume; {} missing, {} extra, {} altered, {} duplicated, {} removed from the volume, {} unlogged",
                r.mailbox, r.agreeing, r.source_items, r.destination_items, r.missing.len(), r.extra.len(),
                r.altered.len(), r.duplicated.len(), r.removed_from_volume.len(), r.unlogged.len()
            );
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
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A service logs its access lines by default; one-shot commands only warnings.
    let default_filter = match cli.cmd {
        Cmd::Serve { .. } | Cmd::Proxy { .. } => "warn,mailferry_proxy::server=info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .init();
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
