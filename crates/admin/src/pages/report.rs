//! The move record's parts that the mailbox page ([`super::mailbox`]) shows once a
//! pass has run: the passes, the warnings, the lifecycle, and the audit status of both
//! sides, the source log's hash chain ([`actions::audit_verify`]) and the
//! message-by-message reconciliation of the source log with the volume
//! ([`actions::reconcile`]). Also serves the record as the CLI's self-contained HTML
//! file ([`mailferry_control::report::html`]). Reads only.

use super::view::when;
use super::{error_page, Nav};
use crate::{actions, AdminError, AdminState, Viewer};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
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

/// The record of the move of `mailbox` in `batch`, `None` before its first pass ended.
pub async fn load(
    state: &AdminState,
    batch: &str,
    mailbox: &str,
) -> Result<Option<MoveRecord>, AdminError> {
    actions::move_record(state, batch, mailbox).await
}

/// The audit status of both sides, one row each: the source log's hash chain and its
/// reconciliation with the volume. A check that cannot run is a failed row, not an error
/// page.
pub async fn audit_rows(
    state: &AdminState,
    batch: &str,
    mailbox: &str,
) -> Vec<(String, bool, String)> {
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
pub fn pass_views(r: &MoveRecord) -> Vec<PassView> {
    let last = r.passes.len();
    let completed = r.lifecycle.as_ref().map(|l| l.state)
        == Some(mailferry_control::lifecycle::MoveState::Completed);
    r.passes
        .iter()
        .enumerate()
        .map(|(i, p)| PassView {
            started: when(&p.started_at),
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

/// Items stored with a warning by any pass: (item, reason, pass started).
pub fn warning_rows(r: &MoveRecord) -> Vec<(String, String, String)> {
    r.passes
        .iter()
        .flat_map(|p| {
            p.warnings
                .iter()
                .map(|w| (w.item.clone(), w.reason.clone(), when(&p.started_at)))
        })
        .collect()
}

/// `GET /ui/moves/{batch}/{mailbox}/report.html`: the CLI's self-contained HTML report
/// (inline CSS, no script), as a download.
pub async fn standalone(
    State(state): State<AdminState>,
    v: Viewer,
    Path((batch, mailbox)): Path<(String, String)>,
) -> Response {
    let r = match load(&state, &batch, &mailbox).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            let e = AdminError::NotFound(format!(
                "{mailbox} has no report file yet: no pass of it has ended; its page shows where it is"
            ));
            return error_page(
                Some(Nav::of(&v)),
                &e,
                &super::view::mailbox_url(&batch, &mailbox),
            );
        }
        Err(e) => return error_page(Some(Nav::of(&v)), &e, "/dashboard"),
    };
    download(
        "text/html; charset=utf-8",
        &format!("mailferry-{batch}-{mailbox}.html"),
        mailferry_control::report::html(&r),
    )
}

/// A download: `body` as the attachment `file` (its name reduced to safe characters),
/// with its own policy: a file that styles itself inline and runs nothing.
pub fn download(ty: &'static str, file: &str, body: String) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, ty)], body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    let file: String = file
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
