//! `mailferry demo`: a complete move with nothing to set up.
//!
//! Generates a realistic sample Maildir, creates a key and a volume, moves the mailbox
//! through the real pipeline (agent → loopback HTTPS proxy → encrypted store), exports it
//! back and compares every message. Running it again reuses the same directory: the
//! second move stores nothing (exactly-once), and the export is redone.

use crate::compare::{compare_maildirs, Comparison};
use crate::sample::{write_maildir, SampleSpec, SizeModel};
use crate::AppError;
use mailferry_control::export::{export_maildir, ExportOutcome};
use mailferry_control::moving::{run_move_with, MoveArgs, PassHooks};
use mailferry_control::progress::Observer;
use mailferry_core::profile::Profile;
use mailferry_core::report::MoveReport;
use mailferry_core::MailboxAddr;
use mailferry_store::Volume;
use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MARKER: &str = ".mailferry-demo";

/// Everything the demo did and where it put it.
#[derive(Debug, Serialize)]
pub struct DemoOutcome {
    /// The demo directory.
    pub data: PathBuf,
    /// The generated source Maildir.
    pub source: PathBuf,
    /// The key file (keep it secret; without it the volume cannot be read).
    pub key_file: PathBuf,
    /// The recovery key (opens the volume if the key file is lost; store it elsewhere).
    pub recovery_key_file: PathBuf,
    /// The encrypted volume.
    pub volume: PathBuf,
    /// The agent's state (checkpoint, reports).
    pub state: PathBuf,
    /// The exported Maildir.
    pub export: PathBuf,
    /// Messages generated (0 if reused from an earlier run).
    pub generated_messages: usize,
    /// The move report.
    pub report: MoveReport,
    /// The export.
    pub exported: ExportOutcome,
    /// Source vs export.
    pub comparison: Comparison,
}

/// Runs the demo in `data` (created if missing; must be empty or an earlier demo's),
/// telling `observer` (if any) how its move goes.
pub async fn run_demo(
    data: &Path,
    messages: usize,
    observer: Option<Arc<dyn Observer>>,
) -> Result<DemoOutcome, AppError> {
    if data.exists() && !data.join(MARKER).exists() {
        let non_empty = fs::read_dir(data)
            .map_err(|e| AppError::io(data, e))?
            .next()
            .is_some();
        if non_empty {
            return Err(AppError::Usage(format!(
                "{} exists and is not a mailferry demo directory; pass --data with a new directory",
                data.display()
            )));
        }
    }
    fs::create_dir_all(data).map_err(|e| AppError::io(data, e))?;
    fs::write(data.join(MARKER), b"created by mailferry demo\n")
        .map_err(|e| AppError::io(data, e))?;
    let source = data.join("source-maildir");
    let key_file = data.join("volume.key");
    let volume = data.join("volume");
    let state = data.join("state");
    let export = data.join("export-maildir");

    let mut generated_messages = 0;
    if !source.exists() {
        let spec = SampleSpec {
            seed: 2026,
            messages,
            folders: 6,
            size: SizeModel::Realistic,
            markers: None,
        };
        let summary = write_maildir(&source, &spec).map_err(|e| AppError::io(&source, e))?;
        generated_messages = summary.messages;
    }
    if !volume.exists() {
        // As an admin should: with a recovery key beside the key file.
        mailferry_control::volume_admin::init(
            &volume,
            &Default::default(),
            Some(&key_file),
            None,
            None,
            false,
        )?;
    }
    let mailbox = MailboxAddr::parse("demo.user@example.com").expect("valid literal");
    let hooks = PassHooks {
        observer,
        ..Default::default()
    };
    let report = run_move_with(
        &MoveArgs {
            source: format!("maildir:{}", source.display()),
            mailbox: mailbox.clone(),
            destination: mailferry_control::moving::Destination::Local {
                volume: volume.clone(),
                credential: mailferry_store::Credential::KeyFile(key_file.clone()),
                s3: Default::default(),
            },
            state: state.clone(),
            profile: Profile::embedded_default(),
            source_options: Default::default(),
        },
        hooks,
    )
    .await?;
    if export.exists() {
        fs::remove_dir_all(&export).map_err(|e| AppError::io(&export, e))?;
    }
    let exported = {
        let (volume, key_file, export, mailbox) = (
            volume.clone(),
            key_file.clone(),
            export.clone(),
            mailbox.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let v = Volume::open(&volume, &key_file, &Profile::embedded_default().store)?;
            export_maildir(&v, &mailbox, &export, Default::default())
        })
        .await
        .expect("export thread panicked")?
    };
    let comparison = compare_maildirs(&source, &export)?;
    Ok(DemoOutcome {
        data: data.to_path_buf(),
        source,
        recovery_key_file: mailferry_control::volume_admin::default_recovery_path(&key_file),
        key_file,
        volume,
        state,
        export,
        generated_messages,
        report,
        exported,
        comparison,
    })
}
