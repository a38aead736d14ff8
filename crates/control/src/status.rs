//! `mailferry move status`: where a move is, from what its state directory holds
//! (`lifecycle.json`, `report.json`, `reports.jsonl`, and the audit log for a pass that
//! is running now). It only reads: it takes no lock, so watching a move never gets in
//! the way of its passes.
//!
//! The JSON form ([`MoveStatus`]) is a stable interface: fields are only ever added.

use crate::lifecycle::{self, Lifecycle, MoveState, Settings, Transition};
use crate::AppError;
use mailferry_core::profile::parse_rfc3339;
use mailferry_core::report::{ItemWarning, SkipKind, SkippedItem};
use mailferry_core::unix_now;
use serde::Serialize;
use serde_json::Value;
use std::path::Path;

/// A move's status.
#[derive(Clone, Debug, Serialize)]
pub struct MoveStatus {
    /// Destination mailbox.
    pub mailbox: String,
    /// The move's id (absent before its first pass).
    pub move_id: Option<String>,
    /// Lifecycle state.
    pub state: MoveState,
    /// Why it is in that state (the last transition's reason).
    pub reason: Option<String>,
    /// A pass is running now.
    pub running: bool,
    /// Messages the destination holds, of those that are to arrive (0 to 100).
    pub percent_complete: f64,
    /// Messages found at the source by the last listing (including skipped ones).
    pub items_total: u64,
    /// Messages the destination holds.
    pub items_synced: u64,
    /// Items the last pass skipped (bad and large, approved or not).
    pub items_skipped: u64,
    /// Of those, bad items.
    pub items_bad: u64,
    /// Of those, large items.
    pub items_large: u64,
    /// Of those, approved by an admin.
    pub items_approved: u64,
    /// Bytes stored by all passes together.
    pub bytes_transferred: u64,
    /// Bytes per second: of the running pass, else over all passes.
    pub rate_bytes_per_s: f64,
    /// Messages per second, likewise.
    pub rate_messages_per_s: f64,
    /// Seconds until the messages known to be missing are stored, at that rate (0 when
    /// none are; absent when unknown).
    pub eta_seconds: Option<f64>,
    /// Passes that finished.
    pub passes: u64,
    /// End of the last pass that finished, RFC 3339.
    pub last_sync_at: Option<String>,
    /// The move's own limits and schedule.
    pub settings: Settings,
    /// Every skipped item of the last pass.
    pub skipped_items: Vec<SkippedItem>,
    /// Items stored with a warning (not plain RFC 5322 messages), by every pass of the
    /// move: each pass reports the items it stored, so the move's list is their union
    /// (one entry per item, from the pass that first stored it). Not counted as skipped.
    pub warnings: Vec<ItemWarning>,
    /// Every state the move entered.
    pub history: Vec<Transition>,
}

/// Reads the status of the move in `dir`.
pub fn status(dir: &Path) -> Result<MoveStatus, AppError> {
    let lc: Lifecycle = lifecycle::load(dir)?.ok_or_else(|| {
        AppError::Usage(format!(
            "{} holds no move (no move.json or {})",
            dir.display(),
            lifecycle::LIFECYCLE_FILE
        ))
    })?;
    let move_id = std::fs::read(dir.join("move.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["move_id"].as_str().map(str::to_string));
    let reports = read_reports(&dir.join("reports.jsonl"));
    let last: Option<Value> = std::fs::read(dir.join("report.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let mut st = status_of(lc, move_id, last, &reports);
    if st.running {
        live(dir, &mut st);
    }
    Ok(st)
}

/// A move's status from its parts, as [`status`] reads them from a state directory:
/// the lifecycle, the move id, `report.json` (the last pass's report, if any) and every
/// report of `reports.jsonl`. Without the live progress of a running pass, which needs
/// the audit log ([`status`] adds it).
pub fn status_of(
    lc: Lifecycle,
    move_id: Option<String>,
    report: Option<Value>,
    reports: &[Value],
) -> MoveStatus {
    let last = report.or_else(|| reports.last().cloned());
    let u = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let bytes_transferred: u64 = reports.iter().map(|r| u(r, "bytes_moved")).sum();
    let seconds: f64 = reports.iter().map(|r| f(r, "seconds")).sum();
    let moved: u64 = reports.iter().map(|r| u(r, "items_moved")).sum();
    let skipped_items: Vec<SkippedItem> = last
        .as_ref()
        .and_then(|r| serde_json::from_value(r["skipped_items"].clone()).ok())
        .unwrap_or_default();
    let mut warnings: Vec<ItemWarning> = Vec::new();
    let mut warned = std::collections::BTreeSet::new();
    for r in reports {
        let ws: Vec<ItemWarning> =
            serde_json::from_value(r["warnings"].clone()).unwrap_or_default();
        for w in ws {
            if warned.insert(w.item.clone()) {
                warnings.push(w);
            }
        }
    }
    let count = |k: SkipKind| skipped_items.iter().filter(|s| s.kind == k).count() as u64;
    let (items_bad, items_large) = (count(SkipKind::BadItem), count(SkipKind::LargeItem));
    let items_approved = skipped_items.iter().filter(|s| s.approved).count() as u64;
    let items_skipped = skipped_items.len() as u64;
    let mut st = MoveStatus {
        mailbox: lc.mailbox.clone(),
        move_id,
        state: lc.state,
        reason: lc.reason().map(str::to_string),
        running: lc.running(),
        percent_complete: 0.0,
        items_total: last.as_ref().map_or(0, |r| u(r, "items_total")),
        items_synced: last
            .as_ref()
            .map_or(0, |r| u(&r["receipt"], "source_items")),
        items_skipped,
        items_bad,
        items_large,
        items_approved,
        bytes_transferred,
        rate_bytes_per_s: if seconds > 0.0 {
            bytes_transferred as f64 / seconds
        } else {
            0.0
        },
        rate_messages_per_s: if seconds > 0.0 {
            moved as f64 / seconds
        } else {
            0.0
        },
        eta_seconds: None,
        passes: reports.len() as u64,
        last_sync_at: lc.last_sync_at.clone().or_else(|| {
            last.as_ref()
                .and_then(|r| r["finished_at"].as_str().map(str::to_string))
        }),
        settings: lc.settings.clone(),
        skipped_items,
        warnings,
        history: lc.history.clone(),
    };
    let expected = st.items_total.saturating_sub(items_skipped);
    let remaining = expected.saturating_sub(st.items_synced);
    st.percent_complete = if st.state == MoveState::Completed || (expected == 0 && st.passes > 0) {
        100.0
    } else if expected == 0 {
        0.0
    } else {
        (st.items_synced as f64 * 100.0 / expected as f64).min(100.0)
    };
    st.eta_seconds = if remaining == 0 && st.passes > 0 {
        Some(0.0)
    } else if st.rate_messages_per_s > 0.0 {
        Some(remaining as f64 / st.rate_messages_per_s)
    } else {
        None
    };
    st
}

/// Every report of `reports.jsonl` that parses (a torn last line is skipped).
fn read_reports(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Progress of the running pass, from the audit log: what its `pass.started` record
/// announced, and the acknowledgements recorded since.
fn live(dir: &Path, st: &mut MoveStatus) {
    let Ok(records) = mailferry_audit::read_records(dir.join(mailferry_agent::state::AUDIT_FILE))
    else {
        return;
    };
    let Some(start) = records.iter().rposition(|e| e.event == "pass.started") else {
        return;
    };
    let started = &records[start];
    let n = |k: &str| started.data.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    let (found, to_send, already) = (n("found"), n("to_send"), n("already_acknowledged"));
    let mut acked = 0u64;
    let mut bytes = 0u64;
    for e in &records[start + 1..] {
        if e.event == "message.stored" || e.event == "message.duplicate" {
            acked += 1;
            if e.event == "message.stored" {
                bytes += e.data.get("size").and_then(|v| v.as_u64()).unwrap_or(0);
            }
        }
    }
    st.items_total = found;
    st.items_synced = already + acked;
    st.bytes_transferred += bytes;
    st.percent_complete = if found == 0 {
        0.0
    } else {
        (st.items_synced as f64 * 100.0 / found as f64).min(100.0)
    };
    let elapsed = parse_rfc3339(&started.time)
        .map(|t| (unix_now() - t).max(1) as f64)
        .unwrap_or(0.0);
    if elapsed > 0.0 {
        st.rate_bytes_per_s = bytes as f64 / elapsed;
        st.rate_messages_per_s = acked as f64 / elapsed;
    }
    let remaining = to_send.saturating_sub(acked);
    st.eta_seconds = if remaining == 0 {
        Some(0.0)
    } else if st.rate_messages_per_s > 0.0 {
        Some(remaining as f64 / st.rate_messages_per_s)
    } else {
        None
    };
}

fn mb(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

/// The status as text for a terminal.
pub fn render_text(s: &MoveStatus) -> String {
    let mut out = format!(
        "move of {}: {}{}\n",
        s.mailbox,
        s.state,
        if s.running {
            " (a pass is running)"
        } else {
            ""
        }
    );
    if let Some(r) = &s.reason {
        out.push_str(&format!("  reason     {r}\n"));
    }
    out.push_str(&format!(
        "  progress   {:.0}% ({} of {} items at the destination), {} pass(es), last sync {}\n",
        s.percent_complete,
        s.items_synced,
        s.items_total.saturating_sub(s.items_skipped),
        s.passes,
        s.last_sync_at.as_deref().unwrap_or("never")
    ));
    out.push_str(&format!(
        "  skipped    {} ({} bad, {} large; {} approved)\n",
        s.items_skipped, s.items_bad, s.items_large, s.items_approved
    ));
    if !s.warnings.is_empty() {
        out.push_str(&format!(
            "  warnings   {} item(s) stored that are not plain RFC 5322 messages (listed below)\n",
            s.warnings.len()
        ));
    }
    out.push_str(&format!(
        "  transfer   {} stored, {}/s, {:.0} msg/s, ETA {}\n",
        mb(s.bytes_transferred as f64),
        mb(s.rate_bytes_per_s),
        s.rate_messages_per_s,
        match s.eta_seconds {
            Some(e) if e < 0.5 => "-".to_string(),
            Some(e) => humantime::format_duration(std::time::Duration::from_secs(e.round() as u64))
                .to_string(),
            None => "unknown".to_string(),
        }
    ));
    let set = &s.settings;
    let mut sched = Vec::new();
    if set.suspend_when_ready == Some(true) {
        sched.push("held at Synced until `move complete`".to_string());
    }
    if let Some(t) = &set.complete_after {
        sched.push(format!("completes on the first pass after {t}"));
    }
    if let Some(n) = set.bad_item_limit {
        sched.push(format!("bad-item limit {n}"));
    }
    if let Some(n) = set.large_item_limit {
        sched.push(format!("large items over {n} bytes"));
    }
    if !sched.is_empty() {
        out.push_str(&format!("  settings   {}\n", sched.join(", ")));
    }
    for i in &s.skipped_items {
        out.push_str(&format!(
            "  skipped {} {} ({}{}): {}\n",
            match i.kind {
                SkipKind::BadItem => "bad item",
                SkipKind::LargeItem => "large item",
            },
            i.item,
            i.size
                .map_or("size unknown".to_string(), |n| format!("{n} bytes")),
            if i.approved { ", approved" } else { "" },
            i.reason
        ));
    }
    for w in &s.warnings {
        out.push_str(&format!("  warning {} (stored): {}\n", w.item, w.reason));
    }
    for t in &s.history {
        out.push_str(&format!(
            "  {}  {:<10} {} ({})\n",
            t.at, t.state, t.reason, t.actor
        ));
    }
    out
}
