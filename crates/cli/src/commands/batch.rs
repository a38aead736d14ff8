//! `mailferry batch ...`: many mailboxes from a CSV, one endpoint, one destination.
//! Which mailbox runs next is decided in `mailferry_control::batch`; this module
//! turns flags into its calls and prints what happened.

use super::moving::{Destination, Schedule};
use crate::progress;
use crate::render::{json_or_text, print_json};
use mailferry_control::{batch, dry_run, lifecycle, AppError};
use std::path::PathBuf;

/// Where batches live.
#[derive(clap::Args)]
pub struct StateRoot {
    /// Directory holding the batches (one subdirectory each).
    #[arg(
        long,
        env = "MAILFERRY_STATE_ROOT",
        default_value = "mailferry-batches"
    )]
    state_root: PathBuf,
    /// With a coordination database the batch lives there instead of in state
    /// directories: `batch start` then queues the passes and `mailferry worker`
    /// processes run them (docs/batches.md, "Many workers on PostgreSQL").
    #[command(flatten)]
    db: super::DbArgs,
}

impl StateRoot {
    /// The coordination database, connected (schema up to date), if one is given;
    /// `endpoint` is `batch new`'s endpoint file (its `coordination_db_file`).
    async fn db(
        &self,
        endpoint: Option<&std::path::Path>,
    ) -> Result<Option<mailferry_coord::Db>, AppError> {
        match self.db.url(endpoint)? {
            None => Ok(None),
            Some(url) => Ok(Some(mailferry_coord::Db::connect(&url).await?)),
        }
    }
}

/// The flags of a run of passes (`batch start`, `batch complete`).
#[derive(clap::Args)]
pub struct RunFlags {
    /// At most this many mailboxes at once in this run.
    #[arg(long)]
    concurrency: Option<usize>,
    #[command(flatten)]
    root: StateRoot,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    json: bool,
}

impl RunFlags {
    /// The run's options: progress as bars on a terminal, else as log lines.
    fn options(&self, actor: String, approve_skipped: bool) -> batch::RunOptions {
        batch::RunOptions {
            concurrency: self.concurrency,
            approve_skipped,
            actor,
            observer: Some(progress::Board::new(progress::Style::auto(self.json))),
        }
    }
}

/// `batch new`. The destination and schedule flags are `move`'s, with help words of
/// their own.
#[derive(clap::Args)]
// Written as --help shows them: clap's derive drops the final period of a one-sentence
// doc comment, `help(..)` does not.
#[command(
    mut_arg("volume", |a| a.help("Volume directory (created by `volume init`), or s3://bucket/prefix")),
    mut_arg("proxy", |a| a.help("Stream to this remote proxy instead of a local volume")),
    mut_arg("ca", |a| a.help("PEM file of the CA of the remote proxy")),
    mut_arg("token_file", |a| a.help("The agent token file for the remote proxy")),
    mut_arg("suspend_when_ready", |a| a.help("Hold every mailbox at Synced until `batch complete`")),
    mut_arg("complete_after", |a| a.help(
        "Complete each mailbox on its first pass at or after TIME (RFC 3339 or 2h, +3days)"
    )),
    mut_arg("bad_item_limit", |a| a.help("Bad items tolerated per mailbox [default: the profile's, 0]")),
    mut_arg("large_item_limit", |a| a.help(
        "Skip messages larger than SIZE (25MB) as large items [default: off]"
    )),
)]
pub struct BatchNew {
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
    #[command(flatten)]
    destination: Destination,
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
    settings: Schedule,
    #[command(flatten)]
    root: StateRoot,
    /// Start the batch right away (as `batch start`).
    #[arg(long)]
    start: bool,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// `batch ...`.
#[derive(clap::Subcommand)]
pub enum BatchCmd {
    /// Check an endpoint and a whole CSV (every bad row and column at once), then create
    /// the batch with every mailbox Created. Nothing is created if anything is wrong.
    New(Box<BatchNew>),
    /// Run a pass of every mailbox that takes one (initial copy or incremental), up to
    /// the batch's concurrency at once; exit 4 if some mailboxes failed.
    Start {
        /// The batch's name.
        name: String,
        #[command(flatten)]
        run: RunFlags,
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
        #[command(flatten)]
        run: RunFlags,
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

/// `batch ...`.
pub async fn run(cmd: BatchCmd) -> Result<(), AppError> {
    let actor = lifecycle::cli_actor();
    let root = match &cmd {
        BatchCmd::New(n) => &n.root,
        BatchCmd::Start { run, .. } | BatchCmd::Complete { run, .. } => &run.root,
        BatchCmd::Status { root, .. }
        | BatchCmd::AddUsers { root, .. }
        | BatchCmd::Suspend { root, .. }
        | BatchCmd::Resume { root, .. } => root,
    };
    if !matches!(cmd, BatchCmd::New(_)) {
        if let Some(mut db) = root.db(None).await? {
            return on_db(cmd, &mut db, actor).await;
        }
    }
    match cmd {
        BatchCmd::New(new) => create(*new, actor).await,
        BatchCmd::Start { name, run, dry_run } => {
            let bd = batch::BatchDir::new(&run.root.state_root, &name)?;
            if dry_run {
                return preview(&bd, run.json).await;
            }
            let opts = run.options(actor, false);
            run_passes(&bd, batch::Mode::Sync, &opts, run.json).await
        }
        BatchCmd::Complete {
            name,
            approve_skipped,
            run,
        } => {
            let bd = batch::BatchDir::new(&run.root.state_root, &name)?;
            let opts = run.options(actor, approve_skipped);
            run_passes(&bd, batch::Mode::Complete, &opts, run.json).await
        }
        BatchCmd::Status { name, root, json } => {
            let bd = batch::BatchDir::new(&root.state_root, &name)?;
            json_or_text(json, &batch::status(&bd)?, batch::render_status);
            Ok(())
        }
        BatchCmd::AddUsers { name, csv, root } => {
            let bd = batch::BatchDir::new(&root.state_root, &name)?;
            let (added, already) = batch::add_users_from(&bd, &csv, &actor)?;
            print_added(&name, added, &already, "");
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

/// The batch commands with --db: the same checks and tables, on the database; passes
/// are queued for `mailferry worker`.
async fn on_db(cmd: BatchCmd, db: &mut mailferry_coord::Db, actor: String) -> Result<(), AppError> {
    use mailferry_coord::ops;
    match cmd {
        BatchCmd::New(_) => unreachable!("batch new connects in create"),
        BatchCmd::Start { name, run, dry_run } => {
            if dry_run {
                return print_previews(&ops::dry_run(db, &name).await?, run.json);
            }
            queue(db, &name, false, false, run.json).await
        }
        BatchCmd::Complete {
            name,
            approve_skipped,
            run,
        } => queue(db, &name, true, approve_skipped, run.json).await,
        BatchCmd::Status { name, json, .. } => {
            json_or_text(
                json,
                &ops::batch_status(db, &name).await?,
                batch::render_status,
            );
            Ok(())
        }
        BatchCmd::AddUsers { name, csv, .. } => {
            let (added, already) = ops::add_users(db, &name, &csv, &actor).await?;
            print_added(&name, added, &already, " --db ...");
            Ok(())
        }
        BatchCmd::Suspend { name, .. } => {
            let (now, later) = ops::suspend(db, &name, &actor).await?;
            eprintln!(
                "batch {name} suspended: {now} mailbox(es) now, {later} when the worker running their pass ends it"
            );
            Ok(())
        }
        BatchCmd::Resume { name, .. } => {
            let n = ops::resume(db, &name, &actor).await?;
            eprintln!(
                "batch {name} resumed ({n} mailbox(es)); `mailferry batch start {name} --db ...` queues their passes"
            );
            Ok(())
        }
    }
}

/// Queues a pass (or the final pass) of every mailbox of the batch that takes one.
async fn queue(
    db: &mut mailferry_coord::Db,
    name: &str,
    complete: bool,
    approve_skipped: bool,
    json: bool,
) -> Result<(), AppError> {
    let queued = mailferry_coord::ops::enqueue(db, name, complete, approve_skipped).await?;
    eprintln!(
        "batch {name}: {} mailbox(es) queued for {}; `mailferry worker --db ...` runs them, \
         `mailferry batch status {name} --db ...` shows where they are",
        queued.len(),
        if complete {
            "their final pass"
        } else {
            "a pass"
        }
    );
    if json {
        print_json(&serde_json::json!({ "name": name, "queued": queued }));
    }
    Ok(())
}

/// `batch new`: checks everything, creates the batch, and with --start runs it.
async fn create(new: BatchNew, actor: String) -> Result<(), AppError> {
    let BatchNew {
        name,
        csv,
        endpoint,
        destination,
        no_recovery_key,
        concurrency,
        profile,
        settings,
        root,
        start,
        json,
    } = new;
    let bd = batch::BatchDir::new(&root.state_root, &name)?;
    let destination = destination.resolve(
        no_recovery_key,
        "give --volume with its key, or --proxy, --ca and --token-file and no key",
    )?;
    let new = batch::NewBatch {
        csv,
        endpoint,
        destination: destination.absolute(),
        profile,
        concurrency,
        settings: settings.settings(),
        actor: actor.clone(),
    };
    if let Some(mut db) = root.db(Some(&new.endpoint)).await? {
        let b = mailferry_coord::ops::create(&mut db, &name, &new).await?;
        eprintln!(
            "batch {name}: {} mailbox(es) recorded in the database{}",
            b.users.len(),
            if start {
                ""
            } else {
                "; queue them with `mailferry batch start NAME --db ...`"
            }
        );
        if start {
            return queue(&mut db, &name, false, false, json).await;
        }
        if json {
            print_json(&b);
        }
        return Ok(());
    }
    let b = batch::create(&bd, &name, &new)?;
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
        let opts = batch::RunOptions {
            actor,
            observer: Some(progress::Board::new(progress::Style::auto(json))),
            ..Default::default()
        };
        return run_passes(&bd, batch::Mode::Sync, &opts, json).await;
    }
    if json {
        print_json(&b);
    }
    Ok(())
}

/// Runs a pass of the batch's mailboxes; the outcome as JSON with --json; exit 4 if
/// some failed.
async fn run_passes(
    bd: &batch::BatchDir,
    mode: batch::Mode,
    opts: &batch::RunOptions,
    json: bool,
) -> Result<(), AppError> {
    let o = batch::run(bd, mode, opts).await?;
    if json {
        print_json(&o);
    }
    o.check()
}

/// What `batch add-users` did: the rows skipped, then the count (`db`: the --db tail of
/// the command to run next).
fn print_added(name: &str, added: usize, already: &[(u64, String)], db: &str) {
    for (row, addr) in already {
        eprintln!("  row {row}: {addr} is already in the batch, skipped");
    }
    eprintln!(
        "batch {name}: {added} mailbox(es) added, {} already there; `mailferry batch start {name}{db}` {}",
        already.len(),
        if db.is_empty() { "moves them" } else { "queues them" }
    );
}

/// `batch start --dry-run`: what the next pass of every mailbox would do.
async fn preview(bd: &batch::BatchDir, json: bool) -> Result<(), AppError> {
    print_previews(&batch::dry_run(bd).await?, json)
}

/// Prints a batch dry run (the same with or without --db); an error naming the
/// mailboxes that could not be previewed.
fn print_previews(previews: &[batch::MailboxPreview], json: bool) -> Result<(), AppError> {
    if json {
        print_json(&previews);
    } else {
        for p in previews {
            println!("== {}", p.address);
            match (&p.preview, &p.error) {
                (Some(d), _) => print!("{}", dry_run::render_text(d)),
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
    Ok(())
}
