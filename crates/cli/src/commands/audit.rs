//! `mailferry audit ...`, `mailferry receipt verify` and `mailferry report`: the
//! evidence that nothing was lost (hash-chained logs, reconciliation, the receipt) and
//! the move record that carries it.

use crate::render::print_json;
use clap::ValueEnum;
use mailferry_control::{audit_cmd, report, volume_admin, AppError};
use mailferry_core::profile::Profile;
use mailferry_store::Volume;
use std::path::PathBuf;

/// `audit ...`.
#[derive(clap::Subcommand)]
pub enum AuditCmd {
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
pub struct BothSides {
    /// The move's state directory (source side).
    #[arg(long)]
    state: PathBuf,
    /// The volume (destination side).
    #[arg(long)]
    volume: PathBuf,
    #[command(flatten)]
    unlock: volume_admin::UnlockArgs,
    /// The tenant's key file: a customer-key mailbox is compared only with it (the
    /// volume key cannot read its contents).
    #[arg(long, value_name = "FILE")]
    tenant_key: Option<PathBuf>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

impl BothSides {
    /// The volume, opened with the tenant key if one was given.
    fn open(&self) -> Result<Volume, AppError> {
        volume_admin::open_for_read(&self.volume, &self.unlock, self.tenant_key.as_deref())
    }
}

/// `receipt ...`.
#[derive(clap::Subcommand)]
pub enum ReceiptCmd {
    /// Recompute the receipt from the volume and compare it with the source's.
    Verify(BothSides),
}

/// `report`.
#[derive(clap::Args)]
pub struct ReportArgs {
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
}

/// What `report` writes.
#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    /// One JSON document.
    Json,
    /// One self-contained HTML page with a throughput plot.
    Html,
}

/// `audit ...`.
pub fn run_audit(cmd: AuditCmd) -> Result<(), AppError> {
    match cmd {
        AuditCmd::Verify {
            dir,
            head,
            key_file,
        } => verify_log(&dir, head.as_deref(), key_file.as_deref()),
        AuditCmd::Reconcile(sides) => reconcile(sides),
    }
}

/// `audit verify`: the chain as found on disk, then (with a key) the volume against it.
fn verify_log(
    dir: &std::path::Path,
    head: Option<&str>,
    key_file: Option<&std::path::Path>,
) -> Result<(), AppError> {
    let path = audit_cmd::log_path(dir)?;
    // The chain is checked as found on disk, before anything opens the volume.
    let res = match head {
        Some(h) => mailferry_audit::verify_with_head(&path, h),
        None => mailferry_audit::verify(&path),
    };
    let v = res.map_err(|e| AppError::Failed(format!("audit log verification failed: {e}")))?;
    println!(
        "{}: {} records, chain intact, head {}",
        path.display(),
        v.records,
        v.head
    );
    if let Some(key) = key_file {
        let vol = Volume::open(dir, key, &Profile::embedded_default().store)?;
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
        println!("every message of the volume has its record, and every record its message");
    }
    Ok(())
}

/// `audit reconcile`: exit 0 only if both sides agree.
fn reconcile(sides: BothSides) -> Result<(), AppError> {
    let v = sides.open()?;
    let r = audit_cmd::reconcile(&sides.state, &v)?;
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
        eprintln!(
            "  removed from the volume: message id {id} (its record is in the volume's audit log)"
        );
    }
    if sides.json {
        print_json(&r);
    }
    if r.agrees() {
        Ok(())
    } else {
        Err(AppError::Failed("the two sides do not agree".into()))
    }
}

/// `receipt verify`: the receipt recomputed from the volume against the source's.
pub fn run_receipt(cmd: ReceiptCmd) -> Result<(), AppError> {
    let ReceiptCmd::Verify(sides) = cmd;
    let v = sides.open()?;
    let r = audit_cmd::verify_receipt(&sides.state, &v)?;
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
    if sides.json {
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

/// `report`: the move record as JSON or HTML, to a file or stdout.
pub fn run_report(a: ReportArgs) -> Result<(), AppError> {
    let v = match (&a.volume, &a.key_file) {
        (Some(vol), Some(key)) => Some(Volume::open(vol, key, &Profile::embedded_default().store)?),
        _ => None,
    };
    let record = report::load(&a.state, v.as_ref())?;
    let body = match a.format {
        ReportFormat::Json => serde_json::to_string_pretty(&record).expect("serializable") + "\n",
        ReportFormat::Html => report::html(&record),
    };
    if a.out.as_os_str() == "-" {
        print!("{body}");
    } else {
        std::fs::write(&a.out, body).map_err(|e| AppError::io(&a.out, e))?;
        eprintln!("wrote {}", a.out.display());
    }
    Ok(())
}
