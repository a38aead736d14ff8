//! The dry run of a pass (`mailferry move --dry-run`, Exchange's `-WhatIf`): what the
//! next pass would send, change and skip, and about how long it would take.
//!
//! It lists the source, applies the profile ([`crate::filter`]), and plans against the
//! checkpoint read with [`CheckpointView`], exactly as a pass decides; then it reads a
//! sample of the messages it would send (a few MB spread over the listing) to measure
//! the source. It writes nothing anywhere: no state directory is created, no lock is
//! taken, the destination is not contacted, so no key, token or proxy is needed.
//!
//! What it cannot know without the destination: messages the store already holds from
//! another move or a lost checkpoint are counted as "to send" (the store recognises
//! them as duplicates and stores them once).
//!
//! The estimate is the slowest of three rates, since the stages overlap: the source as
//! measured, the pipeline (the last pass's end-to-end rate from `report.json` in the
//! state directory, or [`ASSUMED_BYTES_PER_SECOND`] and
//! [`ASSUMED_MESSAGES_PER_SECOND`] before any pass), and the profile's throttles.

use crate::filter::{Filter, Filtered, SourcePrior};
use crate::plan::{self, Keep, Op};
use crate::source::{Listing, Prior, Source, SourceItem};
use crate::state::CheckpointView;
use crate::AgentError;
use mailferry_core::profile::Profile;
use mailferry_core::report::{BadItem, MoveReport};
use mailferry_core::{FolderName, MailboxAddr};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Pipeline rate assumed before a move has a report of its own: bytes per second. A
/// deliberately modest figure for a durable, encrypted store on an SSD (`mailferry
/// bench` measures the real one).
pub const ASSUMED_BYTES_PER_SECOND: f64 = 40e6;
/// Pipeline rate assumed before a move has a report of its own: messages per second.
pub const ASSUMED_MESSAGES_PER_SECOND: f64 = 1000.0;
/// Longest time spent reading the sample.
const SAMPLE_TIME: Duration = Duration::from_secs(3);
/// Most messages read for the sample.
const SAMPLE_MESSAGES: usize = 200;

/// What a dry run needs.
pub struct PreviewConfig {
    /// Where messages come from.
    pub source: Box<dyn Source>,
    /// Destination mailbox.
    pub mailbox: MailboxAddr,
    /// The move's state directory (read if it exists, never created).
    pub state_dir: PathBuf,
    /// Migration profile.
    pub profile: Profile,
    /// Bytes of messages to read to measure the source (0: no sample).
    pub sample_bytes: u64,
    /// Unix seconds at which the pass would start (resolves `filter.after = "365d"`).
    pub now: i64,
}

/// Everything a dry run found. Its JSON form is `mailferry move --dry-run --json`.
#[derive(Clone, Debug, Serialize)]
pub struct Preview {
    /// The source as described by the source.
    pub source: String,
    /// Destination mailbox.
    pub mailbox: String,
    /// What the checkpoint says.
    pub state: StatePreview,
    /// Per source folder, in name order.
    pub folders: Vec<FolderPreview>,
    /// Sums over the folders.
    pub totals: Totals,
    /// Items that would not be moved, each with its reason.
    pub skipped: Vec<SkippedPreview>,
    /// Changes an incremental pass would make at the destination without sending
    /// content (flags, deletions, renumbered messages recognised).
    pub changes: Vec<ChangePreview>,
    /// The measured sample of the source.
    pub sample: SamplePreview,
    /// Messages of the sample that would be stored with a warning: not plain RFC 5322
    /// messages ([`crate::pass::oddities`]). Only sampled messages are judged (a
    /// dry run does not read everything); the pass judges every message it sends.
    pub warnings: Vec<WarningPreview>,
    /// How long the pass would take.
    pub estimate: Estimate,
}

/// The move's checkpoint as the dry run found it.
#[derive(Clone, Debug, Serialize)]
pub struct StatePreview {
    /// The state directory.
    pub dir: String,
    /// False if the move has not started (no state yet; the dry run did not create it).
    pub exists: bool,
    /// The move's id, if it has started.
    pub move_id: Option<String>,
    /// Messages the destination holds according to the checkpoint.
    pub acknowledged: u64,
}

/// One source folder.
#[derive(Clone, Debug, Serialize)]
pub struct FolderPreview {
    /// Its name at the source.
    pub source: String,
    /// Its name at the destination.
    pub destination: String,
    /// Left out by the profile's folder rules.
    pub excluded: bool,
    /// Something to know about its mapping (a rename not applied, and why).
    pub note: Option<String>,
    /// Messages listed.
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Messages the pass would send.
    pub to_send: u64,
    /// Their bytes.
    pub to_send_bytes: u64,
    /// Messages skipped by the profile (date window, size, collisions).
    pub skipped: u64,
}

/// Sums of a dry run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    /// Messages listed at the source (all folders, excluded ones too).
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Messages the pass would send.
    pub to_send: u64,
    /// Their bytes.
    pub to_send_bytes: u64,
    /// Listed messages the checkpoint says the destination already holds unchanged.
    pub already_moved: u64,
    /// Messages whose flags would be updated at the destination.
    pub flag_changes: u64,
    /// Messages that would be removed at the destination (gone at the source).
    pub deletions: u64,
    /// Messages recognised after the source renumbered them (not sent again).
    pub remapped: u64,
    /// Messages in excluded folders.
    pub excluded: u64,
    /// Items skipped by the profile or unreadable at listing (see `skipped`).
    pub skipped: u64,
}

/// An item that would not be moved.
#[derive(Clone, Debug, Serialize)]
pub struct SkippedPreview {
    /// `folder/source-id` (or a path) at the source.
    pub item: String,
    /// Size in bytes, when known.
    pub size: Option<u64>,
    /// `large_item`, `outside_date_window`, `id_collision` or `bad_item`.
    pub cause: String,
    /// Why, in words.
    pub reason: String,
}

/// A message that would be stored byte for byte, with a warning.
#[derive(Clone, Debug, Serialize)]
pub struct WarningPreview {
    /// `folder/source-id` at the source.
    pub item: String,
    /// What is odd about it.
    pub reason: String,
}

/// A change at the destination that sends no content.
#[derive(Clone, Debug, Serialize)]
pub struct ChangePreview {
    /// `delete`, `set_flags` or `remap`.
    pub change: &'static str,
    /// `folder/source-id` at the destination.
    pub item: String,
    /// The new flags (Maildir letters), for `set_flags`.
    pub flags: Option<String>,
}

/// The measured sample of the source.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SamplePreview {
    /// Messages read.
    pub messages: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Seconds it took.
    pub seconds: f64,
    /// Messages that could not be read (they would be bad items).
    pub unreadable: u64,
}

/// The time estimate and what it rests on.
#[derive(Clone, Debug, Serialize)]
pub struct Estimate {
    /// Seconds the pass would take (the slowest of the rates below).
    pub seconds: f64,
    /// Seconds the source alone would take at the sampled rate (0 without a sample).
    pub source_seconds: f64,
    /// Seconds the pipeline would take at `pipeline_bytes_per_second` and
    /// `pipeline_messages_per_second`.
    pub pipeline_seconds: f64,
    /// Seconds the profile's throttles impose at least.
    pub throttle_seconds: f64,
    /// The pipeline rate used, bytes per second.
    pub pipeline_bytes_per_second: f64,
    /// The pipeline rate used, messages per second.
    pub pipeline_messages_per_second: f64,
    /// `last_report` (this move's previous pass) or `assumed` (no pass yet).
    pub pipeline_rate_from: &'static str,
    /// `source`, `pipeline` or `throttle`: which one the estimate is.
    pub limited_by: &'static str,
}

/// Runs the dry run (blocking: it lists and reads the source).
pub fn preview(cfg: PreviewConfig) -> Result<Preview, AgentError> {
    let PreviewConfig {
        source,
        mailbox,
        state_dir,
        profile,
        sample_bytes,
        now,
    } = cfg;
    let view = CheckpointView::load(&state_dir, &mailbox)?;
    let filter = Filter::new(&profile, now)?;
    let listing = match &view {
        Some(v) => {
            let prior = SourcePrior::new(&filter, v.checkpoint());
            let listed = source.list(&prior);
            prior.finish()?;
            listed?
        }
        None => source.list(&Prior::default())?,
    };
    let Listing {
        items,
        bad,
        incomplete,
        cursors,
        delta,
        roles,
    } = listing;
    let mut filtered = filter.apply_with_roles(items, delta, &roles);
    let keep = Keep::from_listing(&filtered, &incomplete);
    let _ = cursors; // a dry run records nothing
    let kept = std::mem::take(&mut filtered.kept);
    let plan = plan::plan_view(view.as_ref(), kept, &keep, &filtered.delta)?;

    // Per source folder: what it is, and what would be sent of it.
    let mut folders: BTreeMap<FolderName, FolderPreview> = filtered
        .folders
        .iter()
        .map(|(src, d)| {
            (
                src.clone(),
                FolderPreview {
                    source: src.to_string(),
                    destination: d.destination.to_string(),
                    excluded: d.excluded,
                    note: d.note.clone(),
                    messages: d.items,
                    bytes: d.bytes,
                    to_send: 0,
                    to_send_bytes: 0,
                    skipped: d.skipped,
                },
            )
        })
        .collect();
    let sources: Vec<SourceItem> = plan
        .send
        .iter()
        .map(|i| filtered.source_item(i).into_owned())
        .collect();
    for item in &sources {
        if let Some(f) = folders.get_mut(&item.folder) {
            f.to_send += 1;
            f.to_send_bytes += item.size;
        }
    }

    let skipped = skipped_items(&filtered, &bad);
    let changes = changes(&plan);

    let totals = Totals {
        messages: filtered.folders.values().map(|d| d.items).sum(),
        bytes: filtered.folders.values().map(|d| d.bytes).sum(),
        to_send: sources.len() as u64,
        to_send_bytes: sources.iter().map(|i| i.size).sum(),
        already_moved: plan.unchanged,
        flag_changes: count(&plan.ops, |o| matches!(o, Op::SetFlags { .. })),
        deletions: count(&plan.ops, |o| matches!(o, Op::Delete { .. })),
        remapped: plan.remapped.len() as u64,
        excluded: filtered
            .folders
            .values()
            .filter(|d| d.excluded)
            .map(|d| d.items)
            .sum::<u64>(),
        skipped: skipped.len() as u64,
    };
    let (sample, warnings) = measure(&*source, &sources, sample_bytes);
    let last = last_rate(&state_dir);
    let estimate = estimate(&totals, &sample, last, &profile);
    let acknowledged = match &view {
        Some(v) => v.acked_count()?,
        None => 0,
    };
    Ok(Preview {
        source: source.describe(),
        mailbox: mailbox.to_string(),
        state: StatePreview {
            dir: state_dir.display().to_string(),
            exists: view.is_some(),
            move_id: view.as_ref().map(|v| v.identity.move_id.to_string()),
            acknowledged,
        },
        folders: folders.into_values().collect(),
        totals,
        skipped,
        changes,
        sample,
        warnings,
        estimate,
    })
}

/// What the profile leaves out and what the source could not list, as the preview
/// lists them.
fn skipped_items(filtered: &Filtered, bad: &[BadItem]) -> Vec<SkippedPreview> {
    let mut skipped: Vec<SkippedPreview> = filtered
        .skipped
        .iter()
        .map(|s| SkippedPreview {
            item: s.item.clone(),
            size: Some(s.size),
            cause: serde_json::to_value(s.cause)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            reason: s.reason.clone(),
        })
        .collect();
    skipped.extend(bad.iter().map(|b| SkippedPreview {
        item: b.item.clone(),
        size: None,
        cause: "bad_item".into(),
        reason: b.reason.clone(),
    }));
    skipped
}

/// The changes a pass would make besides sending: deletions, flag changes, remaps.
fn changes(plan: &plan::Plan) -> Vec<ChangePreview> {
    let mut changes: Vec<ChangePreview> = plan
        .ops
        .iter()
        .map(|op| match op {
            Op::Delete { .. } => ChangePreview {
                change: "delete",
                item: op.name(),
                flags: None,
            },
            Op::SetFlags { flags, .. } => ChangePreview {
                change: "set_flags",
                item: op.name(),
                flags: Some(flags.as_str().to_string()),
            },
        })
        .collect();
    changes.extend(plan.remapped.iter().map(|e| ChangePreview {
        change: "remap",
        item: format!("{}/{}", e.folder, e.source_id),
        flags: None,
    }));
    changes
}

fn count(ops: &[Op], f: impl Fn(&Op) -> bool) -> u64 {
    ops.iter().filter(|o| f(o)).count() as u64
}

/// Reads up to `budget` bytes of messages spread evenly over `items` (at most
/// [`SAMPLE_MESSAGES`] messages, at most [`SAMPLE_TIME`]), and times it. Each message's
/// first buffer is judged as a pass judges it: the odd ones are returned as warnings.
fn measure(
    source: &dyn Source,
    items: &[SourceItem],
    budget: u64,
) -> (SamplePreview, Vec<WarningPreview>) {
    let mut s = SamplePreview::default();
    let mut warnings = Vec::new();
    if budget == 0 || items.is_empty() {
        return (s, warnings);
    }
    let n = items.len().min(SAMPLE_MESSAGES);
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = BTreeSet::new();
    let t0 = Instant::now();
    for k in 0..n {
        let i = k * items.len() / n;
        if !seen.insert(i) {
            continue;
        }
        let mut total = 0u64;
        let mut warning = None;
        let ok = source.open(&items[i]).and_then(|mut r| {
            // The first buffer whole, as the pass reads it, then the rest.
            let head = crate::pass::read_full(&mut *r, &mut buf)?;
            total += head as u64;
            if head > 0 {
                warning = crate::pass::oddities(&buf[..head]);
            }
            loop {
                match r.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(got) => total += got as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        });
        match ok {
            Ok(()) => {
                s.messages += 1;
                s.bytes += total;
                if let Some(reason) = warning {
                    warnings.push(WarningPreview {
                        item: items[i].name(),
                        reason,
                    });
                }
            }
            Err(_) => s.unreadable += 1,
        }
        if s.bytes >= budget || t0.elapsed() >= SAMPLE_TIME {
            break;
        }
    }
    s.seconds = t0.elapsed().as_secs_f64();
    (s, warnings)
}

/// The end-to-end rate of this move's last pass, if it moved something (bytes/s,
/// msgs/s), not counting the time it waited for throttles and server backoff: those
/// are estimated on their own.
fn last_rate(state_dir: &std::path::Path) -> Option<(f64, f64)> {
    let bytes = std::fs::read(state_dir.join("report.json")).ok()?;
    let r: MoveReport = serde_json::from_slice(&bytes).ok()?;
    let busy = r.seconds - r.stages.throttled - r.stages.server_backoff;
    (r.bytes_moved > 0 && r.items_moved > 0 && busy > 0.0)
        .then(|| (r.bytes_moved as f64 / busy, r.items_moved as f64 / busy))
}

fn estimate(
    t: &Totals,
    sample: &SamplePreview,
    last: Option<(f64, f64)>,
    profile: &Profile,
) -> Estimate {
    let (bytes, msgs) = (t.to_send_bytes as f64, t.to_send as f64);
    let source_seconds = if sample.bytes > 0 && sample.seconds > 0.0 {
        sample.seconds * bytes / sample.bytes as f64
    } else if sample.messages > 0 {
        sample.seconds * msgs / sample.messages as f64
    } else {
        0.0
    };
    let ((bps, mps), from) = match last {
        Some(r) => (r, "last_report"),
        None => (
            (ASSUMED_BYTES_PER_SECOND, ASSUMED_MESSAGES_PER_SECOND),
            "assumed",
        ),
    };
    let pipeline_seconds = (bytes / bps).max(msgs / mps);
    let th = &profile.throttle;
    let throttle_seconds = th
        .max_bytes_per_second
        .filter(|b| b.0 > 0)
        .map_or(0.0, |b| bytes / b.0 as f64)
        .max(
            th.max_messages_per_second
                .filter(|m| *m > 0.0)
                .map_or(0.0, |m| msgs / m),
        );
    let (seconds, limited_by) = [
        (source_seconds, "source"),
        (pipeline_seconds, "pipeline"),
        (throttle_seconds, "throttle"),
    ]
    .into_iter()
    .fold(
        (0.0, "pipeline"),
        |best, c| if c.0 > best.0 { c } else { best },
    );
    Estimate {
        seconds,
        source_seconds,
        pipeline_seconds,
        throttle_seconds,
        pipeline_bytes_per_second: bps,
        pipeline_messages_per_second: mps,
        pipeline_rate_from: from,
        limited_by,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(bytes: u64, msgs: u64) -> Totals {
        Totals {
            to_send: msgs,
            to_send_bytes: bytes,
            ..Totals::default()
        }
    }

    #[test]
    fn the_estimate_is_the_slowest_stage() {
        let p = Profile::default();
        let sample = SamplePreview {
            messages: 10,
            bytes: 1_000_000,
            seconds: 0.5,
            unreadable: 0,
        };
        // Source: 2 MB/s sampled; 100 MB → 50 s, slower than the assumed pipeline.
        let e = estimate(&totals(100_000_000, 1000), &sample, None, &p);
        assert_eq!(e.limited_by, "source");
        assert_eq!(e.pipeline_rate_from, "assumed");
        assert!((e.seconds - 50.0).abs() < 1e-9, "{e:?}");
        // The last report's rate when there is one.
        let e = estimate(&totals(100_000_000, 1000), &sample, Some((1e6, 10.0)), &p);
        assert_eq!(
            (e.limited_by, e.pipeline_rate_from),
            ("pipeline", "last_report")
        );
        assert!((e.seconds - 100.0).abs() < 1e-9, "{e:?}");
        // Throttles bound it from below.
        let mut p = Profile::default();
        p.throttle.max_messages_per_second = Some(1.0);
        let e = estimate(&totals(100_000_000, 1000), &sample, None, &p);
        assert_eq!(e.limited_by, "throttle");
        assert!((e.seconds - 1000.0).abs() < 1e-9, "{e:?}");
        // Nothing to send: nothing to wait for.
        let e = estimate(
            &totals(0, 0),
            &SamplePreview::default(),
            None,
            &Profile::default(),
        );
        assert_eq!(e.seconds, 0.0);
    }
}
