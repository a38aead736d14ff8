//! `mailferry tenant key ...`: a tenant's own X25519 key (customer key). The private
//! half is written once to a file the tenant keeps; the volume holds only the public
//! half, so the operator can store, check and copy the tenant's mail but not read it.

use super::VolumeAccess;
use crate::render::json_or_text;
use mailferry_control::{volume_admin, AppError};
use std::path::PathBuf;

/// `tenant ...`.
#[derive(clap::Subcommand)]
pub enum TenantCmd {
    /// The tenant's customer key.
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
}

/// `tenant key ...`.
#[derive(clap::Subcommand)]
pub enum KeyCmd {
    /// Make a key pair for a tenant, write the private half once (mode 0600) to --out and,
    /// with --volume, register the public half there; existing mailboxes of the tenant
    /// are moved to it (resumable: rerun `tenant key convert` after a crash).
    ///
    /// Example: mailferry tenant key init --tenant example.com --out example.com.key \
    ///   --volume /srv/vol --key-file /root/vol.key
    Init(InitArgs),
    /// Finish moving a tenant's existing mailboxes to its registered customer key after
    /// an interrupted `tenant key init`.
    Convert {
        #[command(flatten)]
        vol: VolumeAccess,
        /// The tenant: a mail domain.
        #[arg(long)]
        tenant: String,
        /// Print the outcome as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// `tenant key init`.
#[derive(clap::Args)]
// Unlocking is optional: without --volume only the key file is written.
#[command(mut_group("UnlockArgs", |g| g.required(false)))]
pub struct InitArgs {
    /// The tenant: a mail domain.
    #[arg(long)]
    tenant: String,
    /// Where to write the private key (must not exist; keep it away from the volume).
    #[arg(long)]
    out: PathBuf,
    /// The volume to register the public key in; without it only the file is written.
    #[arg(long, requires = "UnlockArgs")]
    volume: Option<PathBuf>,
    #[command(flatten)]
    unlock: volume_admin::UnlockArgs,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `tenant ...`.
pub fn run(cmd: TenantCmd) -> Result<(), AppError> {
    let TenantCmd::Key { cmd } = cmd;
    match cmd {
        KeyCmd::Init(InitArgs {
            tenant,
            out,
            volume,
            unlock,
            json,
        }) => {
            let v = volume
                .as_deref()
                .map(|d| volume_admin::open(d, &unlock))
                .transpose()?;
            let r = volume_admin::tenant_key_init(v.as_ref(), &tenant, &out)?;
            json_or_text(json, &r, |r| {
                let mut s = format!(
                    "tenant key for {} written to {} (fingerprint {}); keep it with the tenant, not with the volume\n",
                    r.tenant,
                    r.out.display(),
                    r.fingerprint
                );
                if r.registered {
                    s += &format!(
                        "registered in the volume; {} existing mailbox(es) moved to it ({} key generation(s), {} message(s)); from now on only this key (or a lockbox grant) reads the tenant's mail\n",
                        r.mailboxes_converted, r.keys_rewrapped, r.messages
                    );
                }
                s
            });
            Ok(())
        }
        KeyCmd::Convert { vol, tenant, json } => {
            let v = vol.open()?;
            let c = v.convert_tenant(&tenant)?;
            json_or_text(
                json,
                &serde_json::json!({
                    "fingerprint": c.fingerprint,
                    "mailboxes": c.mailboxes,
                    "keys_rewrapped": c.keys_rewrapped,
                    "messages": c.messages,
                    "finished": c.finished,
                }),
                |_| {
                    format!(
                        "tenant {tenant}: {} mailbox(es) moved to customer key {}\n",
                        c.mailboxes, c.fingerprint
                    )
                },
            );
            Ok(())
        }
    }
}
