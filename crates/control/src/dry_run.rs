//! `mailferry move --dry-run`: what the next pass of a move would do, and about how long
//! it would take, without doing any of it (see [`mailferry_agent::preview`]).
//!
//! A dry run writes nothing and never opens the volume: it needs no key, passphrase,
//! token or CA, and it may run next to a pass of the same move. Of the destination it
//! only checks that a local volume directory holds a volume header (by its presence).
//! The state directory is read if it exists and never created.

use crate::destination::Destination;
use crate::units::{human_bytes, human_duration};
use crate::AppError;
use mailferry_agent::preview::{preview, Preview, PreviewConfig};
use mailferry_agent::source::SourceOptions;
use mailferry_core::profile::Profile;
use mailferry_core::MailboxAddr;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a dry run needs: a move's flags, without anything that unlocks a destination.
#[derive(Clone, Debug)]
pub struct DryRunArgs {
    /// The source spec.
    pub source: String,
    /// Credentials and trust for an IMAP source.
    pub source_options: SourceOptions,
    /// Destination mailbox.
    pub mailbox: MailboxAddr,
    /// Where the messages would go: [`DestinationPreview::of`] a move's destination,
    /// or from bare flags ([`DestinationPreview::volume`], [`DestinationPreview::proxy`]),
    /// since a dry run needs no credential.
    pub destination: DestinationPreview,
    /// The move's state directory.
    pub state: PathBuf,
    /// The profile the pass would run with (flags applied).
    pub profile: Profile,
}

/// Bytes of messages read to measure the source.
pub const SAMPLE_BYTES: u64 = 4 << 20;

/// A dry run's result: the preview and where the messages would go.
#[derive(Clone, Debug, Serialize)]
pub struct DryRun {
    /// Always true: nothing was written.
    pub dry_run: bool,
    /// Where the messages would go.
    pub destination: DestinationPreview,
    /// What the pass would do.
    #[serde(flatten)]
    pub preview: Preview,
}

/// The destination as a dry run sees it (from outside: it is not opened).
#[derive(Clone, Debug, Serialize)]
pub struct DestinationPreview {
    /// `volume` or `proxy`.
    pub kind: &'static str,
    /// The volume directory or the proxy URL.
    pub at: String,
    /// For a volume: a volume header is there (`volume init` was run). For a proxy:
    /// not checked (null).
    pub exists: Option<bool>,
}

impl DestinationPreview {
    /// A local volume directory, checked for a volume header now.
    pub fn volume(dir: &Path) -> DestinationPreview {
        DestinationPreview {
            kind: "volume",
            at: dir.display().to_string(),
            exists: Some(dir.join(mailferry_store::HEADER_FILE).is_file()),
        }
    }

    /// A remote proxy, not contacted.
    pub fn proxy(url: &str) -> DestinationPreview {
        DestinationPreview {
            kind: "proxy",
            at: url.to_string(),
            exists: None,
        }
    }

    /// Where `dest` stores, without its credential or trust.
    pub fn of(dest: &Destination) -> DestinationPreview {
        match dest {
            Destination::Local { volume, s3, .. } => {
                match volume
                    .to_str()
                    .filter(|v| mailferry_bucket::S3Url::is_s3(v))
                {
                    // An s3:// volume: a MANIFEST is there (unknown if the bucket cannot
                    // be asked).
                    Some(v) => DestinationPreview {
                        kind: "volume",
                        at: v.to_string(),
                        exists: mailferry_bucket::S3Url::parse(v)
                            .and_then(|u| mailferry_bucket::holds_volume(&u, &s3.options()))
                            .ok(),
                    },
                    None => DestinationPreview::volume(volume),
                }
            }
            Destination::Remote { url, .. } => DestinationPreview::proxy(url),
        }
    }
}

/// Runs the dry run of `args`.
pub async fn dry_run(args: &DryRunArgs) -> Result<DryRun, AppError> {
    let options = args.source_options.with_profile(&args.profile);
    let source = mailferry_agent::source::from_spec(&args.source, &options)
        .map_err(|e| AppError::Usage(e.to_string()))?;
    let destination = args.destination.clone();
    let cfg = PreviewConfig {
        source,
        mailbox: args.mailbox.clone(),
        state_dir: args.state.clone(),
        profile: args.profile.clone(),
        sample_bytes: SAMPLE_BYTES,
        now: mailferry_core::unix_now(),
    };
    let preview = tokio::task::spawn_blocking(move || preview(cfg))
        .await
        .expect("dry-run thread panicked")?;
    Ok(DryRun {
        dry_run: true,
        destination,
        preview,
    })
}

/// The dry run as a human reads it: a table of folders, then totals, skipped items,
/// changes and the estimate.
pub fn render_text(d: &DryRun) -> String {
    let p = &d.preview;
    let mut s = String::new();
    write_header(&mut s, d);
    write_folders(&mut s, p);
    write_totals(&mut s, p);
    write_estimate(&mut s, p);
    s
}

/// What moves where, and what the state directory already knows.
fn write_header(s: &mut String, d: &DryRun) {
    let p = &d.preview;
    let _ = writeln!(
        s,
        "dry run: nothing was written. Move of {} from {}",
        p.mailbox, p.source
    );
    let dest_note = match d.destination.exists {
        Some(true) => "",
        Some(false) => " (no volume there yet: run `mailferry volume init` first)",
        None => " (not contacted)",
    };
    let _ = writeln!(
        s,
        "destination: {} {}{dest_note}",
        d.destination.kind, d.destination.at
    );
    if p.state.exists {
        let _ = writeln!(
            s,
            "state: {} (move {}, {} messages acknowledged by earlier passes)",
            p.state.dir,
            p.state.move_id.as_deref().unwrap_or("?"),
            p.state.acknowledged
        );
    } else {
        let _ = writeln!(s, "state: {} (new move: nothing moved yet)", p.state.dir);
    }
}

/// One row per folder, its columns as wide as the longest name (6 to 40).
fn write_folders(s: &mut String, p: &Preview) {
    let w = p
        .folders
        .iter()
        .map(|f| f.source.chars().count().max(f.destination.chars().count()))
        .max()
        .unwrap_or(0)
        .clamp(6, 40);
    let _ = writeln!(
        s,
        "\n{:<w$}  {:<w$}  {:>8}  {:>10}  {:>8}  {:>10}  {:>7}",
        "FOLDER", "TO", "MESSAGES", "BYTES", "TO SEND", "SEND BYTES", "SKIPPED"
    );
    for f in &p.folders {
        let to = if f.excluded {
            "(excluded)".to_string()
        } else {
            f.destination.clone()
        };
        let _ = writeln!(
            s,
            "{:<w$}  {:<w$}  {:>8}  {:>10}  {:>8}  {:>10}  {:>7}",
            f.source,
            to,
            f.messages,
            human_bytes(f.bytes),
            f.to_send,
            human_bytes(f.to_send_bytes),
            f.skipped
        );
        if let Some(n) = &f.note {
            let _ = writeln!(s, "{:<w$}  note: {n}", "");
        }
    }
}

/// The totals, then what would be skipped, stored with a warning, or changed.
fn write_totals(s: &mut String, p: &Preview) {
    let t = &p.totals;
    let _ = writeln!(
        s,
        "\ntotal: {} messages ({}) listed; to send {} ({}); already moved {}; \
         flag changes {}; deletions {}; renumbered {}; excluded {}; skipped {}",
        t.messages,
        human_bytes(t.bytes),
        t.to_send,
        human_bytes(t.to_send_bytes),
        t.already_moved,
        t.flag_changes,
        t.deletions,
        t.remapped,
        t.excluded,
        t.skipped
    );
    if !p.skipped.is_empty() {
        let _ = writeln!(s, "\nwould be skipped:");
        for k in &p.skipped {
            let size = k.size.map(|b| format!(", {}", human_bytes(b)));
            let _ = writeln!(
                s,
                "  {} ({}{}): {}",
                k.item,
                k.cause,
                size.unwrap_or_default(),
                k.reason
            );
        }
    }
    if !p.warnings.is_empty() {
        let _ = writeln!(
            s,
            "\nwould be stored, with a warning (of the {} message(s) sampled; the pass judges every one):",
            p.sample.messages
        );
        for w in &p.warnings {
            let _ = writeln!(s, "  {}: {}", w.item, w.reason);
        }
    }
    if !p.changes.is_empty() {
        let _ = writeln!(s, "\nchanges at the destination (no content sent):");
        for c in &p.changes {
            match &c.flags {
                Some(f) => {
                    let _ = writeln!(s, "  {} {} -> flags {f:?}", c.change, c.item);
                }
                None => {
                    let _ = writeln!(s, "  {} {}", c.change, c.item);
                }
            }
        }
    }
}

/// The estimate and what it rests on (the sample, the pipeline rate, the throttles).
fn write_estimate(s: &mut String, p: &Preview) {
    let e = &p.estimate;
    let sample = &p.sample;
    let time = if e.seconds < 1.0 {
        "under a second".to_string()
    } else {
        human_duration(Duration::from_secs_f64(e.seconds.ceil()))
    };
    let _ = writeln!(
        s,
        "\nestimated time: {time} (limited by the {})",
        e.limited_by
    );
    if sample.messages > 0 {
        let _ = writeln!(
            s,
            "  source: sampled {} messages ({}) in {:.2} s -> {:.0} s for everything",
            sample.messages,
            human_bytes(sample.bytes),
            sample.seconds,
            e.source_seconds
        );
    }
    let from = if e.pipeline_rate_from == "last_report" {
        "this move's last pass"
    } else {
        "assumed; no pass of this move yet"
    };
    let _ = writeln!(
        s,
        "  pipeline: {}/s, {:.0} msg/s ({from}) -> {:.0} s",
        human_bytes(e.pipeline_bytes_per_second as u64),
        e.pipeline_messages_per_second,
        e.pipeline_seconds
    );
    if e.throttle_seconds > 0.0 {
        let _ = writeln!(s, "  throttles: at least {:.0} s", e.throttle_seconds);
    }
    if sample.unreadable > 0 {
        let _ = writeln!(
            s,
            "  {} sampled message(s) could not be read: they would be bad items",
            sample.unreadable
        );
    }
}
