//! The report page of one move: the move record (identity, passes, skipped items,
//! lifecycle) with the throughput plot drawn by [`mailferry_control::report::throughput_svg`], and
//! the audit status of both sides: the source log's hash chain
//! ([`actions::audit_verify`]) and the message-by-message reconciliation of the source
//! log with the volume ([`actions::reconcile`]). Also serves the record as the CLI's
//! self-contained HTML file ([`mailferry_control::report::html`]). Reads only.

use super::dashboard::state_label;
use super::{error_page, render, url_component, Nav};
use crate::{actions, AdminError, AdminState, Viewer};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mailferry_control::report::MoveRecord;
use mailferry_control::units::human_bytes;

/// One pass as the table shows it.
#[derive(Clone, Debug)]
pub struct PassView {
    /// Start time.
    pub started: String,
    /// `first copy`, `delta` or `final delta`.
    pub kind: &'static str,
    /// Messages moved.
    pub synced: u64,
    /// Items skipped.
    pub skipped: usize,
    /// Bytes moved.
    pub bytes: String,
    /// Wall time.
    pub duration: String,
    /// What the receipt says.
    pub outcome: String,
}

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage {
    nav: Option<Nav>,
    batch: String,
    mailbox: String,
    move_id: String,
    source: String,
    state: &'static str,
    state_label: &'static str,
    created: String,
    passes: Vec<PassView>,
    has_plot: bool,
    plot: String,
    plot_pass: String,
    /// (item, kind, reason, approved).
    skipped: Vec<(String, String, String, bool)>,
    /// Items stored with a warning by any pass: (item, reason, pass started).
    warnings: Vec<(String, String, String)>,
    /// (side, ok, detail).
    audit: Vec<(String, bool, String)>,
    /// (time, state, reason, actor).
    history: Vec<(String, String, String, String)>,
    standalone_url: String,
}

/// The move's state directory, after [`actions::move_status`] has confirmed the batch
/// has this mailbox.
fn record(state: &AdminState, batch: &str, mailbox: &str) -> Result<MoveRecord, AdminError> {
    let bd = mailferry_control::batch::BatchDir::new(&state.config().batches_dir(), batch)?;
    let b = bd.load()?;
    let u = b
        .users
        .iter()
        .find(|u| u.address == mailbox)
        .ok_or_else(|| AdminError::NotFound(format!("batch {batch} has no mailbox {mailbox}")))?;
    let dir = bd.mailbox_dir(u);
    if !dir.join("reports.jsonl").exists() {
        return Err(AdminError::NotFound(format!(
            "{mailbox} has no report yet: it has not run a pass (start batch {batch} on the dashboard)"
        )));
    }
    Ok(mailferry_control::report::load(&dir, None)?)
}

async fn load(state: &AdminState, batch: &str, mailbox: &str) -> Result<MoveRecord, AdminError> {
    // Checks the names and that the mailbox belongs to the batch.
    actions::move_status(state, batch, mailbox).await?;
    let (st, b, m) = (state.clone(), batch.to_string(), mailbox.to_string());
    tokio::task::spawn_blocking(move || record(&st, &b, &m))
        .await
        .map_err(|e| AdminError::Internal(format!("report: {e}")))?
}

/// `GET /ui/moves/{batch}/{mailbox}/report`.
pub async fn page(
    State(state): State<AdminState>,
    v: Viewer,
    Path((batch, mailbox)): Path<(String, String)>,
) -> Response {
    let nav = Nav::of(&v);
    let r = match load(&state, &batch, &mailbox).await {
        Ok(r) => r,
        Err(e) => return error_page(Some(nav), &e, "/dashboard"),
    };
    let audit = audit_rows(&state, &batch, &mailbox).await;
    let plotted = r.passes.iter().rev().find(|p| p.bytes_moved > 0);
    let lc_state = r.lifecycle.as_ref().map(|l| l.state);
    let page = ReportPage {
        nav: Some(nav),
        batch: batch.clone(),
        mailbox: mailbox.clone(),
        move_id: r.identity.move_id.to_string(),
        source: r.identity.source.clone(),
        state: lc_state.map(|s| s.as_str()).unwrap_or("unknown"),
        state_label: lc_state.map(state_label).unwrap_or("Unknown"),
        created: r.identity.created_at.clone(),
        passes: pass_views(&r),
        has_plot: plotted.is_some(),
        // throughput_svg writes numbers and fixed markup only: nothing to escape.
        plot: plotted
            .map(|p| mailferry_control::report::throughput_svg(&p.timeline))
            .unwrap_or_default(),
        plot_pass: plotted.map(|p| p.started_at.clone()).unwrap_or_default(),
        skipped: skipped_rows(&r),
        warnings: r
            .passes
            .iter()
            .flat_map(|p| {
                p.warnings
                    .iter()
                    .map(|w| (w.item.clone(), w.reason.clone(), p.started_at.clone()))
            })
            .collect(),
        audit,
        history: history_rows(&r),
        standalone_url: format!(
            "/ui/moves/{}/{}/report.html",
            url_component(&batch),
            url_component(&mailbox)
        ),
    };
    render(StatusCode::OK, &page)
}

/// The audit status of both sides, one row each: the source log's hash chain and its
/// reconciliation with the volume. A check that cannot run is a failed row, not an error
/// page.
async fn audit_rows(state: &AdminState, batch: &str, mailbox: &str) -> Vec<(String, bool, String)> {
    let mut audit = Vec::new();
    match actions::audit_verify(state, batch, mailbox).await {
        Ok(a) if a.ok => audit.push((
            "Source (agent log)".to_string(),
            true,
            format!("hash chain intact: {} records, head {}", a.records, a.head),
        )),
        Ok(a) => audit.push((
            "Source (agent log)".to_string(),
            false,
            a.error.unwrap_or_else(|| "the log does not verify".into()),
        )),
        Err(e) => audit.push(("Source (agent log)".into(), false, e.to_string())),
    }
    match actions::reconcile(state, batch, mailbox).await {
        Ok(rc) if rc.agrees() => audit.push((
            "Destination (volume)".to_string(),
            true,
            format!(
                "reconciled with the source log: {} of {} message(s) present and identical, {} deleted as at the source",
                rc.agreeing, rc.source_items, rc.deleted
            ),
        )),
        Ok(rc) => audit.push((
            "Destination (volume)".to_string(),
            false,
            format!("disagrees with the source log: {}", rc.discrepancies()),
        )),
        Err(e) => audit.push(("Destination (volume)".into(), false, e.to_string())),
    }
    audit
}

/// Every pass as the table shows it; the last pass of a completed move is its final
/// delta.
fn pass_views(r: &MoveRecord) -> Vec<PassView> {
    let last = r.passes.len();
    let completed = r.lifecycle.as_ref().map(|l| l.state)
        == Some(mailferry_control::lifecycle::MoveState::Completed);
    r.passes
        .iter()
        .enumerate()
        .map(|(i, p)| PassView {
            started: p.started_at.clone(),
            kind: match i {
                0 => "first copy",
                _ if i + 1 == last && completed => "final delta",
                _ => "delta",
            },
            synced: p.items_moved,
            skipped: p.skipped_items.len().max(p.bad_items.len()),
            bytes: human_bytes(p.bytes_moved),
            duration: format!("{:.2} s", p.seconds),
            outcome: if p.receipt.matches {
                format!(
                    "receipt matches ({} messages both sides)",
                    p.receipt.destination_items
                )
            } else {
                format!(
                    "receipt differs: {} at the source, {} stored",
                    p.receipt.source_items, p.receipt.destination_items
                )
            },
        })
        .collect()
}

/// The last pass's skipped items: (item, kind, reason, approved), approved by the pass
/// or later through the lifecycle.
fn skipped_rows(r: &MoveRecord) -> Vec<(String, String, String, bool)> {
    let approved = |item: &str| {
        r.lifecycle
            .as_ref()
            .is_some_and(|lc| lc.approved.contains(item))
    };
    r.passes
        .last()
        .map(|p| {
            p.skipped_items
                .iter()
                .map(|s| {
                    (
                        s.item.clone(),
                        serde_json::to_value(s.kind)
                            .ok()
                            .and_then(|v| v.as_str().map(|k| k.replace('_', " ")))
                            .unwrap_or_default(),
                        s.reason.clone(),
                        s.approved || approved(&s.item),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The lifecycle's transitions: (time, state, reason, actor).
fn history_rows(r: &MoveRecord) -> Vec<(String, String, String, String)> {
    r.lifecycle
        .as_ref()
        .map(|lc| {
            lc.history
                .iter()
                .map(|t| {
                    (
                        t.at.clone(),
                        state_label(t.state).to_string(),
                        t.reason.clone(),
                        t.actor.clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /ui/moves/{batch}/{mailbox}/report.html`: the CLI's self-contained HTML report
/// (inline CSS, no script), as a download.
pub async fn standalone(
    State(state): State<AdminState>,
    v: Viewer,
    Path((batch, mailbox)): Path<(String, String)>,
) -> Response {
    let r = match load(&state, &batch, &mailbox).await {
        Ok(r) => r,
        Err(e) => return error_page(Some(Nav::of(&v)), &e, "/dashboard"),
    };
    let mut resp = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        mailferry_control::report::html(&r),
    )
        .into_response();
    let h = resp.headers_mut();
    // Its own policy: the file styles itself inline and runs nothing.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    let file: String = format!("mailferry-{batch}-{mailbox}.html")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}
