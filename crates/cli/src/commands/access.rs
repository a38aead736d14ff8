//! `mailferry access ...`: the lockbox on the command line: request access to a
//! mailbox, approve or deny a request, list requests and grants, and export a mailbox
//! during a grant, against the admin service's state directory and its volume.
//!
//! Every command logs the acting account in the way the web login does (password and a
//! fresh TOTP code, from MAILFERRY_PASSWORD and MAILFERRY_TOTP or asked for on the
//! terminal; never from a flag), so the roles, the two-person rule and MFA hold here
//! too; the lockbox ([`mailferry_admin::lockbox`]) does the rest and records every step
//! in both audit logs.

use crate::render::json_or_text;
use mailferry_admin::lockbox::{self, Ctx, Decision, Lockbox, NewRequest};
use mailferry_admin::AdminState;
use mailferry_control::{volume_admin, AppError};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use zeroize::Zeroizing;

/// Environment variable holding the acting account's password.
pub const PASSWORD_ENV: &str = "MAILFERRY_PASSWORD";
/// Environment variable holding the acting account's current TOTP code.
pub const TOTP_ENV: &str = "MAILFERRY_TOTP";

/// Who acts, and where: the first flags of every `access` command.
#[derive(clap::Args)]
pub struct Acting {
    /// The admin service's state directory (accounts, lockbox, admin audit log).
    #[arg(long)]
    state: PathBuf,
    /// The acting account (its password and TOTP code come from MAILFERRY_PASSWORD and
    /// MAILFERRY_TOTP, or are asked for on the terminal).
    #[arg(long = "as", value_name = "ACCOUNT")]
    account: String,
    /// The volume of the admin service (each step is recorded in its audit log).
    #[arg(long)]
    volume: PathBuf,
    // Not `VolumeAccess`: its --tenant-key would read the tenant's mail past the
    // lockbox. A tenant key is given to `approve` only, to make the grant.
    #[command(flatten)]
    unlock: volume_admin::UnlockArgs,
}

/// `access ...`.
#[derive(clap::Subcommand)]
pub enum AccessCmd {
    /// Request access to one mailbox for a time, with a reason (an admin).
    Request {
        #[command(flatten)]
        acting: Acting,
        /// The mailbox.
        #[arg(long)]
        mailbox: String,
        /// Why (the approver decides on it; both audit logs keep it).
        #[arg(long)]
        reason: String,
        /// How long the grant lasts once approved: 4h, 30min, 20s (at most 7 days).
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Print the request as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending request (an approver of the mailbox's domain, not its requester).
    Approve {
        #[command(flatten)]
        acting: Acting,
        /// The request id (`access list`).
        id: String,
        /// The tenant's key file, for a tenant that holds its own key.
        #[arg(long)]
        tenant_key: Option<PathBuf>,
        /// Print the request as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Deny a pending request (an approver of the mailbox's domain, not its requester).
    Deny {
        #[command(flatten)]
        acting: Acting,
        /// The request id.
        id: String,
        /// Print the request as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// List requests and grants: state, expiry, uses.
    List {
        #[command(flatten)]
        acting: Acting,
        /// Print them as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// During a grant, its requester writes the mailbox as a Maildir in a tar file.
    Export {
        #[command(flatten)]
        acting: Acting,
        /// The grant (request) id.
        id: String,
        /// The tar file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

/// A secret from `env`, else asked for on the terminal without echo.
fn secret(env: &str, prompt: &str) -> Result<Zeroizing<String>, AppError> {
    if let Some(v) = std::env::var_os(env) {
        return Ok(Zeroizing::new(v.to_string_lossy().into_owned()));
    }
    if !std::io::stdin().is_terminal() {
        return Err(AppError::Usage(format!(
            "{prompt}: set {env} (or run on a terminal to be asked); it is never taken from a flag"
        )));
    }
    eprint!("{prompt}: ");
    let _ = std::io::stderr().flush();
    // No echo while typing: `stty` on the terminal, restored whatever happens.
    let stty = |arg: &str| {
        std::fs::File::open("/dev/tty").ok().map(|tty| {
            std::process::Command::new("stty")
                .arg(arg)
                .stdin(tty)
                .status()
        })
    };
    stty("-echo");
    let mut line = Zeroizing::new(String::new());
    let read = std::io::stdin().lock().read_line(&mut line);
    stty("echo");
    eprintln!();
    read.map_err(|e| AppError::Usage(format!("{prompt}: {e}")))?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).to_string(),
    ))
}

/// Logs the acting account in, opens the volume and sweeps expired grants; runs `f`.
fn with_login<T>(
    acting: &Acting,
    f: impl FnOnce(&Lockbox, &Ctx<'_>, &lockbox::Actor) -> Result<T, AppError>,
) -> Result<T, AppError> {
    let st = AdminState::open_accounts_only(&acting.state)?;
    let password = secret(PASSWORD_ENV, &format!("password of {}", acting.account))?;
    let code = secret(TOTP_ENV, "authenticator code")?;
    let now = mailferry_core::unix_now();
    let actor = lockbox::cli_login(
        &st.accounts,
        &st.audit,
        &acting.account,
        &password,
        &code,
        now,
    )?;
    let volume = volume_admin::open(&acting.volume, &acting.unlock)?;
    st.lockbox.sweep(Some(&volume), &st.audit, now)?;
    let ctx = Ctx {
        accounts: &st.accounts,
        audit: &st.audit,
        volume: &volume,
        now,
    };
    f(&st.lockbox, &ctx, &actor)
}

fn show(r: &lockbox::AccessRequest, now: i64) -> String {
    let state = r.state_at(now);
    let mut s = format!(
        "{}  {}  {}  asked by {}",
        r.id,
        r.mailbox,
        state.as_str(),
        r.requester
    );
    if let Some(by) = &r.decided_by {
        s.push_str(&format!(", decided by {by}"));
    }
    if let Some(e) = r.expires {
        s.push_str(&format!(", grant ends {}", mailferry_core::rfc3339(e)));
    }
    s.push_str(&format!(
        ", {} use(s), key level {}\n",
        r.uses.len(),
        r.key_level
    ));
    s
}

/// `access ...`.
pub fn run(cmd: AccessCmd) -> Result<(), AppError> {
    match cmd {
        AccessCmd::Request {
            acting,
            mailbox,
            reason,
            duration,
            json,
        } => {
            let r = with_login(&acting, |lb, ctx, actor| {
                let duration_secs = lockbox::parse_duration(&duration)?;
                Ok(lb.request(
                    ctx,
                    actor,
                    &NewRequest {
                        mailbox,
                        reason,
                        duration_secs,
                    },
                )?)
            })?;
            json_or_text(json, &r, |r| show(r, mailferry_core::unix_now()));
            eprintln!("request {} recorded: an approver of {} must approve it (`mailferry access approve {}`) before anything can be read", r.id, r.tenant, r.id);
            Ok(())
        }
        AccessCmd::Approve {
            acting,
            id,
            tenant_key,
            json,
        } => {
            let key = tenant_key
                .as_deref()
                .map(mailferry_store::TenantSecret::load)
                .transpose()
                .map_err(|e| AppError::Usage(e.to_string()))?;
            // The login's TOTP code is the decision's fresh code (each works once).
            let r = with_login(&acting, |lb, ctx, actor| {
                Ok(lb.decide(ctx, actor, &id, Decision::Approve(key))?)
            })?;
            json_or_text(json, &r, |r| show(r, mailferry_core::unix_now()));
            Ok(())
        }
        AccessCmd::Deny { acting, id, json } => {
            let r = with_login(&acting, |lb, ctx, actor| {
                Ok(lb.decide(ctx, actor, &id, Decision::Deny)?)
            })?;
            json_or_text(json, &r, |r| show(r, mailferry_core::unix_now()));
            Ok(())
        }
        AccessCmd::List { acting, json } => {
            let all = with_login(&acting, |lb, _, _| Ok(lb.list()?))?;
            let now = mailferry_core::unix_now();
            json_or_text(json, &all, |all| all.iter().map(|r| show(r, now)).collect());
            Ok(())
        }
        AccessCmd::Export { acting, id, out } => {
            let n = with_login(&acting, |lb, ctx, actor| {
                let o = lb.open_grant(ctx, actor, &id, "export")?;
                let file = mailferry_audit::private::options()
                    .write(true)
                    .create_new(true)
                    .open(&out)
                    .map_err(|e| AppError::io(&out, e))?;
                let mut w = std::io::BufWriter::new(file);
                let n = lockbox::tar::write_mailbox(ctx.volume, &o.mailbox, &mut w)
                    .and_then(|n| w.flush().map(|()| n))
                    .map_err(|e| AppError::io(&out, e))?;
                Ok(n)
            })?;
            eprintln!(
                "exported {} message(s) ({} bytes) of grant {id} to {}{}",
                n.messages,
                n.bytes,
                out.display(),
                if n.damaged > 0 {
                    format!(
                        "; {} could not be read (listed in EXPORT-ERRORS.txt)",
                        n.damaged
                    )
                } else {
                    String::new()
                }
            );
            Ok(())
        }
    }
}
