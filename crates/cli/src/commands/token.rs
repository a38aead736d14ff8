//! `mailferry token ...`: agent tokens, each bound to one tenant. The token itself is
//! written once to a file and never printed.

use super::VolumeAccess;
use crate::render::{json_or_text, print_json};
use mailferry_control::{tokens, AppError};
use std::path::PathBuf;

/// `token ...`.
#[derive(clap::Subcommand)]
pub enum TokenCmd {
    /// Create a token for a tenant and write it (once, mode 0600) to --out.
    Issue {
        #[command(flatten)]
        vol: VolumeAccess,
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
        #[command(flatten)]
        vol: VolumeAccess,
        /// The tenant the token is bound to.
        #[arg(long)]
        tenant: String,
        /// The token file written by `token issue`.
        #[arg(long)]
        token_file: PathBuf,
    },
    /// List tokens: id, tenant, created, revoked (never the tokens).
    List {
        #[command(flatten)]
        vol: VolumeAccess,
        /// JSON on stdout instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token; a running `serve` refuses it from its next request.
    Revoke {
        #[command(flatten)]
        vol: VolumeAccess,
        /// The token's id (see `token list`).
        id: u64,
    },
}

/// `token ...`.
pub fn run(cmd: TokenCmd) -> Result<(), AppError> {
    match cmd {
        TokenCmd::Issue {
            vol,
            tenant,
            out,
            valid_for,
            json,
        } => {
            let expires =
                valid_for.map(|s| mailferry_core::unix_now() + s.min(i64::MAX as u64 / 2) as i64);
            let issued = tokens::issue(
                &vol.volume,
                &vol.unlock.credential()?,
                &vol.s3,
                &tenant,
                &out,
                expires,
            )?;
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
        TokenCmd::Add {
            vol,
            tenant,
            token_file,
        } => {
            let added = tokens::add(
                &vol.volume,
                &vol.unlock.credential()?,
                &vol.s3,
                &tenant,
                &token_file,
            )?;
            eprintln!(
                "token from {} registered as token {} for tenant {}",
                added.out, added.id, added.tenant
            );
            Ok(())
        }
        TokenCmd::List { vol, json } => {
            let list = tokens::list(&vol.volume, &vol.unlock.credential()?, &vol.s3)?;
            json_or_text(json, &list, |l| tokens::table(l));
            Ok(())
        }
        TokenCmd::Revoke { vol, id } => {
            if tokens::revoke(&vol.volume, &vol.unlock.credential()?, &vol.s3, id)? {
                eprintln!("token {id} revoked; a running `serve` refuses it from its next request");
            } else {
                eprintln!("token {id} was already revoked");
            }
            Ok(())
        }
    }
}
