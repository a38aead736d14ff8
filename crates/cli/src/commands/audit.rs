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
        /// A move's state directory or a volume (or --db and --mailbox).
        #[arg(required_unless_present = "mailbox")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        db: DbMove,
        /// Expected head (SHA-256 of the last record), to detect records cut off the end.
        #[arg(long)]
        head: Option<String>,
        /// For a volume: its key file, to also check every record against the volume's
        /// index (each stored message has its record, each record its message).
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// The log's public key (from `audit public-key`): also check the signed head
        /// kept next to the log (`audit.head`) and that the log still holds the record it
        /// names, which detects records cut off the end.
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Write the public key that checks a log's signed heads (PEM, readable by openssl)
    /// for `audit verify --public-key`: a move's state directory (source side; its
    /// signing key is created on first use) or a volume (destination side; needs the
    /// volume's key).
    PublicKey {
        /// A move's state directory or a volume (or --db and --mailbox).
        #[arg(required_unless_present = "mailbox")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        db: DbMove,
        /// Where to write the public key (`-` for stdout).
        #[arg(long)]
        out: PathBuf,
        /// For a volume: its key file.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// For a volume: a file holding its passphrase.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// For a volume: the recovery key file written by `volume init`.
        #[arg(long)]
        recovery_key_file: Option<PathBuf>,
    },
    /// Compare the source side with the volume message by message (exit 0 only if they
    /// agree). The source side is a state directory (--state) or, for a move run by
    /// workers, its rows in the coordination database (--db and --mailbox).
    Reconcile(ReconcileArgs),
}

/// `audit reconcile`: a move's source side (a state directory or the database) and the
/// volume.
#[derive(clap::Args)]
pub struct ReconcileArgs {
    /// The move's state directory (source side); or --db and --mailbox.
    #[arg(long, required_unless_present = "mailbox", conflicts_with_all = ["db", "db_file", "mailbox"])]
    state: Option<PathBuf>,
    #[command(flatten)]
    db: DbMove,
    #[command(flatten)]
    dest: VolumeSide,
}

/// A move's two sides: its state directory and the volume, with how to unlock it.
#[derive(clap::Args)]
pub struct BothSides {
    /// The move's state directory (source side).
    #[arg(long)]
    state: PathBuf,
    #[command(flatten)]
    dest: VolumeSide,
}

/// The destination side of a comparison: the volume, how to unlock it, how to print.
#[derive(clap::Args)]
pub struct VolumeSide {
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

impl VolumeSide {
    /// The volume, opened with the tenant key if one was given.
    fn open(&self) -> Result<Volume, AppError> {
        volume_admin::open_for_read(&self.volume, &self.unlock, self.tenant_key.as_deref())
    }
}

/// `receipt ...`.
#[derive(clap::Subcommand)]
pub enum ReceiptCmd {
    /// Recompute the receipt from the volume and compare it with the source's; with
    /// public keys, also check the signed heads the move record carries against both logs.
    Verify {
        #[command(flatten)]
        sides: BothSides,
        /// The source log's public key (`audit public-key STATE`): check the source head
        /// of the move's last pass against the state directory's log.
        #[arg(long)]
        source_public_key: Option<PathBuf>,
        /// The volume log's public key (`audit public-key VOLUME`): check the destination
        /// head of the move's last pass against the volume's log.
        #[arg(long)]
        volume_public_key: Option<PathBuf>,
    },
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
    /// The tenant's key file: the reconciliation of a customer-key mailbox reads its
    /// folder names and digests, which the volume key cannot.
    #[arg(long, value_name = "FILE", requires = "volume")]
    tenant_key: Option<PathBuf>,
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

/// A move in a coordination database: the database and the mailbox.
#[derive(clap::Args)]
pub struct DbMove {
    /// The coordination database holding the move; used with --mailbox when no
    /// directory is given.
    #[command(flatten)]
    pub db: super::DbArgs,
    /// The move's mailbox, in the coordination database.
    #[arg(long)]
    pub mailbox: Option<String>,
    /// With --mailbox: the batch of the mailbox, when it is in several.
    #[arg(long, requires = "mailbox")]
    pub batch: Option<String>,
}

impl DbMove {
    /// The database and the move's id, if a database or --mailbox is given (and no
    /// directory was).
    pub async fn find(&self) -> Result<Option<(mailferry_coord::Db, String)>, AppError> {
        let url = self.db.url(None)?;
        let (url, mailbox) = match (url, self.mailbox.as_deref()) {
            (None, None) => return Ok(None),
            (Some(_), None) => {
                return Err(AppError::Usage(
                    "--db needs --mailbox ADDRESS (the move to look at)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(AppError::Usage(
                    "--mailbox needs the coordination database: --db URL, --db-file PATH, \
                     or env MAILFERRY_DB or MAILFERRY_DB_FILE"
                        .into(),
                ))
            }
            (Some(url), Some(m)) => (url, m),
        };
        let db = mailferry_coord::Db::connect(&url).await?;
        let id =
            mailferry_coord::ops::find_move(&db.client, mailbox, self.batch.as_deref()).await?;
        Ok(Some((db, id)))
    }
}

/// `audit ...`, with `audit verify --db` reading the log from the database.
pub async fn run(cmd: AuditCmd) -> Result<(), AppError> {
    if let AuditCmd::Verify {
        dir: None,
        db,
        head,
        key_file: None,
        public_key,
    } = &cmd
    {
        let (db, id) = db.find().await?.ok_or_else(|| {
            AppError::Usage("audit verify: give a directory, or --db and --mailbox".into())
        })?;
        // The rows as a log file, checked by the same verifier as a state directory.
        let (_guard, copy) = mailferry_coord::ops::audit_copy(&db, &id).await?;
        eprintln!("move {id} (from the database):");
        return verify_log(&copy, head.as_deref(), None, public_key.as_deref());
    }
    if let AuditCmd::PublicKey {
        dir: None, db, out, ..
    } = &cmd
    {
        let (db, id) = db.find().await?.ok_or_else(|| {
            AppError::Usage("audit public-key: give a directory, or --db and --mailbox".into())
        })?;
        let key = mailferry_coord::ops::source_public_key(&db, &id).await?;
        write_pem(&key, out)?;
        eprintln!(
            "Ed25519 public key of the source audit log of move {id} (in the database), \
             fingerprint {}; check the log with `mailferry audit verify --db ... --mailbox ... \
             --public-key FILE`",
            key.fingerprint()
        );
        return Ok(());
    }
    if let AuditCmd::Reconcile(ReconcileArgs {
        state: None,
        db,
        dest,
    }) = &cmd
    {
        let (db, id) = db.find().await?.ok_or_else(|| {
            AppError::Usage("audit reconcile: give --state DIR, or --db and --mailbox".into())
        })?;
        // The rows as a state directory: the same replay and comparison as --state.
        let (_guard, copy) = mailferry_coord::ops::audit_copy(&db, &id).await?;
        eprintln!("move {id} (from the database):");
        return reconcile(&copy, dest);
    }
    run_audit(cmd)
}

/// `audit ...`.
pub fn run_audit(cmd: AuditCmd) -> Result<(), AppError> {
    match cmd {
        AuditCmd::Verify {
            dir,
            head,
            key_file,
            public_key,
            ..
        } => verify_log(
            &dir.ok_or_else(|| {
                AppError::Usage(
                    "audit verify: give a directory (a volume's key is for a directory only)"
                        .into(),
                )
            })?,
            head.as_deref(),
            key_file.as_deref(),
            public_key.as_deref(),
        ),
        AuditCmd::PublicKey {
            dir,
            out,
            key_file,
            passphrase_file,
            recovery_key_file,
            ..
        } => write_public_key(
            &dir.ok_or_else(|| AppError::Usage("audit public-key: give a directory".into()))?,
            &out,
            &volume_admin::UnlockArgs {
                key_file,
                passphrase_file,
                recovery_key_file,
            },
        ),
        AuditCmd::Reconcile(a) => reconcile(
            &a.state.ok_or_else(|| {
                AppError::Usage("audit reconcile: give --state DIR, or --db and --mailbox".into())
            })?,
            &a.dest,
        ),
    }
}

/// A public key as PEM to `out` (`-`: stdout).
fn write_pem(key: &mailferry_audit::PublicKey, out: &std::path::Path) -> Result<(), AppError> {
    if out.as_os_str() == "-" {
        print!("{}", key.to_pem());
    } else {
        std::fs::write(out, key.to_pem()).map_err(|e| AppError::io(out, e))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// `audit public-key`: the PEM to the file (or stdout), what it is to stderr.
fn write_public_key(
    dir: &std::path::Path,
    out: &std::path::Path,
    unlock: &volume_admin::UnlockArgs,
) -> Result<(), AppError> {
    let (key, side) = audit_cmd::public_key(dir, unlock)?;
    write_pem(&key, out)?;
    eprintln!(
        "Ed25519 public key of the {} audit log of {}, fingerprint {}; keep a copy where \
         the log's writer cannot change it, and check the log with `mailferry audit verify \
         {} --public-key FILE`",
        side.as_str(),
        dir.display(),
        key.fingerprint(),
        dir.display()
    );
    Ok(())
}

/// `audit verify`: the chain as found on disk, the signed head (with a public key), then
/// (with a volume key) the volume against the log.
fn verify_log(
    dir: &std::path::Path,
    head: Option<&str>,
    key_file: Option<&std::path::Path>,
    public_key: Option<&std::path::Path>,
) -> Result<(), AppError> {
    let path = audit_cmd::log_path(dir)?;
    // The chain (and the signed head) are checked as found on disk, before anything
    // opens the volume.
    let failed = |e: mailferry_audit::AuditError| {
        AppError::Failed(format!("audit log verification failed: {e}"))
    };
    let signed = match public_key {
        Some(key) => Some(audit_cmd::verify_signed_head(&path, key)?),
        None => None,
    };
    let v = match (&signed, head) {
        (Some(s), None) => s.chain.clone(),
        (_, Some(h)) => mailferry_audit::verify_with_head(&path, h).map_err(failed)?,
        (None, None) => mailferry_audit::verify(&path).map_err(failed)?,
    };
    println!(
        "{}: {} records, chain intact, head {}",
        path.display(),
        v.records,
        v.head
    );
    match &signed {
        Some(s) => {
            println!(
                "signed head of {} ({} side, key {}) covers {} records; the log holds \
                 record {} with exactly the signed hash",
                s.signed.time,
                s.signed.side.as_str(),
                s.signed.key,
                s.signed.seq,
                s.signed.seq
            );
            if s.unsigned_records > 0 {
                println!(
                    "{} record(s) after the signed head (appended since it was signed; \
                     no signature covers their end)",
                    s.unsigned_records
                );
            }
        }
        None => eprintln!(
            "signed head not checked: records cut off the end leave an intact chain; give \
             the log's public key with --public-key FILE (written by `mailferry audit \
             public-key {}`) to check the signed head, which the head file alone cannot \
             prove (whoever can cut the log can also replace it)",
            dir.display()
        ),
    }
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
fn reconcile(state: &std::path::Path, sides: &VolumeSide) -> Result<(), AppError> {
    let v = sides.open()?;
    let r = audit_cmd::reconcile(state, &v)?;
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
    let ReceiptCmd::Verify {
        sides,
        source_public_key,
        volume_public_key,
    } = cmd;
    let v = sides.dest.open()?;
    let mut r = audit_cmd::verify_receipt(&sides.state, &v)?;
    // The heads handed out with the pass, against the logs as they are now: a log cut
    // with its head file rolled back is found here, not by `audit verify`.
    let logs = [
        (
            mailferry_audit::LogSide::Source,
            sides.state.join(mailferry_agent::state::AUDIT_FILE),
            source_public_key,
        ),
        (
            mailferry_audit::LogSide::Destination,
            v.dir().join(mailferry_store::audit_trail::AUDIT_FILE),
            volume_public_key,
        ),
    ];
    for (side, log, key) in logs {
        if let Some(key) = key {
            let h = audit_cmd::verify_recorded_head(&sides.state, side, &log, &key)?;
            eprintln!(
                "{} audit log holds the move record's signed head of {} ({} records; {} appended since)",
                side.as_str(),
                h.time,
                h.seq,
                h.unsigned_records
            );
            r.heads.push(h);
        }
    }
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
    if sides.dest.json {
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
        (Some(vol), Some(key)) => {
            let v = Volume::open(vol, key, &Profile::embedded_default().store)?;
            if let Some(path) = &a.tenant_key {
                let secret = mailferry_store::TenantSecret::load(path)?;
                v.unlock(mailferry_store::ReadAccess::TenantKey(secret))?;
            }
            Some(v)
        }
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
