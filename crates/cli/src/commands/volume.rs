//! `mailferry volume ...`: create, check, rekey, rotate, shred, compact, replicate and
//! upgrade encrypted volumes. `mailferry_control::volume_admin` does the work; this
//! module names the flags and words the outcome.

use super::{mailbox, VolumeAccess};
use crate::render::print_json;
use mailferry_control::{volume_admin, AppError};
use mailferry_store::Volume;
use std::path::{Path, PathBuf};

/// `volume ...`.
#[derive(clap::Subcommand)]
pub enum VolumeCmd {
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
        #[command(flatten)]
        s3: volume_admin::S3Args,
    },
    /// Authenticate every chunk of every message and check the index against the segments.
    Verify {
        #[command(flatten)]
        vol: VolumeAccess,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Prove that a key file, passphrase or recovery key opens the volume (reads only volume.hdr).
    UnlockCheck {
        #[command(flatten)]
        vol: VolumeAccess,
    },
    /// Rewrap the volume master key under a new key file or passphrase (atomic, O(1)).
    Rekey {
        #[command(flatten)]
        vol: VolumeAccess,
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
        #[command(flatten)]
        vol: VolumeAccess,
        /// The mailbox to shred.
        #[arg(long)]
        mailbox: String,
    },
    /// Give a mailbox or a tenant (mail domain) a new key; stored messages stay readable.
    Rotate {
        #[command(flatten)]
        vol: VolumeAccess,
        /// Rotate this mailbox's key.
        #[arg(long, required_unless_present = "tenant", conflicts_with = "tenant")]
        mailbox: Option<String>,
        /// Rotate this tenant's key (rewraps the keys of all its mailboxes). For a
        /// customer-key tenant: a new index key, which needs --tenant-key.
        #[arg(long)]
        tenant: Option<String>,
        /// Also give every mailbox concerned a new key generation, re-encrypt all its
        /// stored messages under it (streaming, resumable: run the same command again
        /// after an interruption) and drop the earlier generations. A customer-key
        /// tenant's mailboxes need --tenant-key.
        #[arg(long)]
        reencrypt: bool,
    },
    /// Reclaim the space of shredded messages and unreferenced record gaps by rewriting
    /// segments (no decryption; crash-safe at every step).
    Compact {
        #[command(flatten)]
        vol: VolumeAccess,
        /// Print the outcome as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Copy the volume's ciphertext into another directory, incrementally (needs no key).
    Replicate {
        /// Volume directory (the source; must not be open elsewhere).
        #[arg(long)]
        volume: PathBuf,
        /// Replica directory (empty, new, or an earlier replica of this volume), or
        /// `s3://bucket/prefix` (an empty prefix or an earlier replica there).
        #[arg(long)]
        to: PathBuf,
        /// Print the outcome as JSON on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        s3: volume_admin::S3Args,
    },
    /// Open the volume once, upgrading an older format version in place.
    Upgrade {
        #[command(flatten)]
        vol: VolumeAccess,
    },
}

/// `volume ...`.
pub fn run(cmd: VolumeCmd) -> Result<(), AppError> {
    match cmd {
        VolumeCmd::Init {
            volume,
            key_file,
            passphrase_file,
            recovery_key_file,
            no_recovery_key,
            s3,
        } => init(
            &volume,
            &s3,
            key_file.as_deref(),
            passphrase_file.as_deref(),
            recovery_key_file.as_deref(),
            no_recovery_key,
        ),
        VolumeCmd::Verify { vol, json } => verify(&vol, json),
        VolumeCmd::UnlockCheck { vol } => {
            let info = volume_admin::unlock_check(&vol.volume, &vol.unlock)?;
            println!(
                "ok: {} opens volume {} (id {}, format version {}) through slot {}; slots: {}",
                vol.unlock.credential()?.kind(),
                vol.volume.display(),
                hex::encode(info.volume_id),
                info.version,
                info.slot_kind,
                info.slots.join(", ")
            );
            Ok(())
        }
        VolumeCmd::Rekey {
            vol,
            new_key_file,
            new_passphrase_file,
        } => rekey(
            &vol,
            new_key_file.as_deref(),
            new_passphrase_file.as_deref(),
        ),
        VolumeCmd::Shred { vol, mailbox: mb } => {
            let mb = mailbox(&mb)?;
            let n = volume_admin::shred(&vol.volume, &vol.unlock, &vol.s3, &mb)?;
            println!("shredded mailbox {mb}: its keys are destroyed, {n} message(s) can no longer be read by anyone; `volume compact` reclaims their space");
            Ok(())
        }
        VolumeCmd::Rotate {
            vol,
            mailbox: mb,
            tenant,
            reencrypt,
        } => {
            let mb = mb.as_deref().map(mailbox).transpose()?;
            if reencrypt {
                rotate_reencrypt(&vol, mb.as_ref(), tenant)
            } else {
                rotate(&vol, mb.as_ref(), tenant)
            }
        }
        VolumeCmd::Compact { vol, json } => compact(&vol, json),
        VolumeCmd::Replicate {
            volume,
            to,
            json,
            s3,
        } => replicate(&volume, &to, json, &s3),
        VolumeCmd::Upgrade { vol } => {
            drop(vol.open()?);
            println!(
                "volume {} is at format version {}",
                vol.volume.display(),
                mailferry_store::header::VERSION
            );
            Ok(())
        }
    }
}

/// `volume init`: the volume, and what the admin must keep safe.
fn init(
    volume: &Path,
    s3: &volume_admin::S3Args,
    key_file: Option<&Path>,
    passphrase_file: Option<&Path>,
    recovery_key_file: Option<&Path>,
    no_recovery_key: bool,
) -> Result<(), AppError> {
    let out = volume_admin::init(
        volume,
        s3,
        key_file,
        passphrase_file,
        recovery_key_file,
        no_recovery_key,
    )?;
    println!(
        "created volume {} (id {})",
        volume.display(),
        hex::encode(out.volume_id)
    );
    if let (true, Some(k)) = (out.key_file_created, key_file) {
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

/// `volume verify`: fails if any item is damaged.
fn verify(vol: &VolumeAccess, json: bool) -> Result<(), AppError> {
    let v = vol.open()?;
    let report = v.verify()?;
    eprintln!(
        "checked {} messages ({} bytes): {} damaged, {} shredded (unreadable on purpose), {} sealed for their tenant (integrity checked against the digest recorded at write time)",
        report.messages_checked,
        report.bytes_checked,
        report.damaged.len(),
        report.shredded,
        report.sealed_for_tenant
    );
    for d in &report.damaged {
        eprintln!("  damaged item {} in {}: {}", d.item, d.mailbox, d.reason);
    }
    if json {
        print_json(&serde_json::json!({
            "messages_checked": report.messages_checked,
            "bytes_checked": report.bytes_checked,
            "shredded": report.shredded,
            "sealed_for_tenant": report.sealed_for_tenant,
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

/// `volume rekey`.
fn rekey(
    vol: &VolumeAccess,
    new_key_file: Option<&Path>,
    new_passphrase_file: Option<&Path>,
) -> Result<(), AppError> {
    let created = volume_admin::rekey(&vol.volume, &vol.unlock, new_key_file, new_passphrase_file)?;
    if let (true, Some(k)) = (created, new_key_file) {
        println!(
            "created key file {} (32 random bytes, mode 0600)",
            k.display()
        );
    }
    println!(
        "rekeyed volume {}: it now opens with the new {} (and the recovery key, if it has one); the old key no longer opens it",
        vol.volume.display(),
        if new_key_file.is_some() { "key file" } else { "passphrase" }
    );
    Ok(())
}

/// `volume rotate --reencrypt`: fails if some messages could not be re-encrypted.
fn rotate_reencrypt(
    vol: &VolumeAccess,
    mb: Option<&mailferry_core::MailboxAddr>,
    tenant: Option<String>,
) -> Result<(), AppError> {
    let out = volume_admin::rotate_reencrypt(
        &vol.volume,
        &vol.unlock,
        vol.tenant_key.as_deref(),
        mb,
        tenant.as_deref(),
    )?;
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
        )));
    }
    Ok(())
}

/// `volume rotate`: a new key for new messages; stored ones keep theirs.
fn rotate(
    vol: &VolumeAccess,
    mb: Option<&mailferry_core::MailboxAddr>,
    tenant: Option<String>,
) -> Result<(), AppError> {
    let out = volume_admin::rotate(
        &vol.volume,
        &vol.unlock,
        vol.tenant_key.as_deref(),
        mb,
        tenant.as_deref(),
    )?;
    match (mb, out.new_key_id) {
        (Some(m), Some(k)) => println!(
            "rotated mailbox {m}: new messages use key id {k}; stored messages keep theirs"
        ),
        (_, _) if out.messages_reindexed.is_some() => println!(
            "rotated customer-key tenant {}: new index key, the dedup values, locators and receipt leaves of {} message(s) in {} mailbox(es) recomputed; mailbox keys stay wrapped to the tenant's public key",
            tenant.unwrap_or_default(),
            out.messages_reindexed.unwrap_or(0),
            out.mailboxes
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

/// `volume compact`.
fn compact(vol: &VolumeAccess, json: bool) -> Result<(), AppError> {
    let out = volume_admin::compact(&vol.volume, &vol.unlock, &vol.s3)?;
    eprintln!(
        "compacted volume {}: {} segment(s) rewritten into {}, {} message(s) moved, {} shredded message(s) dropped; segments {} -> {} bytes",
        vol.volume.display(),
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

/// `volume replicate`: needs no key, only the ciphertext.
fn replicate(
    volume: &Path,
    to: &Path,
    json: bool,
    s3: &volume_admin::S3Args,
) -> Result<(), AppError> {
    if let Some(generation) = volume_admin::replicate_to_s3(volume, to, s3)? {
        eprintln!(
            "replicated {} to {}: manifest generation {generation}",
            volume.display(),
            to.display()
        );
        if json {
            print_json(&serde_json::json!({ "to": to, "generation": generation }));
        }
        return Ok(());
    }
    let out = Volume::replicate(volume, to)?;
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
