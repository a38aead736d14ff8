//! The audit page, for auditors and admins alike: the admin audit log (newest first,
//! paged) with the result of verifying its hash chain, and every move with a button
//! that checks both of its sides: the source-side log's hash chain, and the
//! reconciliation of that log with the destination volume.
//!
//! Everything here reads: the verify buttons are GET forms (no CSRF token, nothing
//! changes), so an auditor can use every control on this page. It calls the same admin
//! actions as the REST API's audit routes; it writes no audit record of its own.

use super::view::state_label;
use super::{error_page, render, Nav};
use crate::{actions, AdminState, Viewer};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use std::collections::HashMap;

/// Records per page of the admin audit log.
pub const PAGE_SIZE: usize = 50;

/// One record of the admin audit log.
#[derive(Debug)]
pub struct LogRow {
    /// Sequence number.
    pub seq: u64,
    /// RFC 3339 UTC time.
    pub time: String,
    /// Who.
    pub actor: String,
    /// What (`admin.login`).
    pub event: String,
    /// Its details as `key: value` pairs.
    pub details: String,
}

/// One move and, when asked for, the check of both its sides.
#[derive(Debug)]
pub struct MoveRow {
    /// Batch.
    pub batch: String,
    /// Mailbox.
    pub mailbox: String,
    /// Its state in words.
    pub state: &'static str,
    /// Element id of the row (`move-3`).
    pub anchor: String,
    /// The check, if this row's button was pressed.
    pub check: Option<MoveCheck>,
}

/// What verifying a move's two sides found.
#[derive(Debug)]
pub struct MoveCheck {
    /// The source-side log verifies.
    pub source_ok: bool,
    /// Its records and head, or why not.
    pub source: String,
    /// Both sides agree.
    pub both_ok: bool,
    /// The reconciliation in words.
    pub both: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Option<Nav>,
    log_ok: bool,
    log_status: String,
    checked_at: String,
    rows: Vec<LogRow>,
    page: usize,
    pages: usize,
    newer: Option<String>,
    older: Option<String>,
    volume: String,
    moves: Vec<MoveRow>,
}

fn details(data: &serde_json::Value) -> String {
    let Some(m) = data.as_object() else {
        return String::new();
    };
    m.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}: {s}"),
            other => format!("{k}: {other}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The page number asked for, 1 (the newest records) if none or a bad one.
fn page_of(q: &HashMap<String, String>) -> usize {
    q.get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1)
}

/// The admin audit log's verify status and the page's records, newest first.
async fn log_part(
    state: &AdminState,
    page: usize,
) -> Result<(bool, String, Vec<LogRow>, usize), crate::AdminError> {
    let (ok, status) = match actions::admin_audit_verify(state).await {
        Ok(c) => (
            true,
            format!(
                "verified: {} records, the hash chain is intact (head {})",
                c.records,
                c.head.get(..16).unwrap_or(&c.head)
            ),
        ),
        Err(e) => (false, format!("does not verify: {e}")),
    };
    let all = actions::admin_audit_log(state, usize::MAX).await?;
    let pages = all.len().div_ceil(PAGE_SIZE).max(1);
    let rows = all
        .iter()
        .rev()
        .skip((page.min(pages) - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
        .map(|r| LogRow {
            seq: r["seq"].as_u64().unwrap_or(0),
            time: r["time"].as_str().unwrap_or_default().to_string(),
            actor: r["actor"].as_str().unwrap_or_default().to_string(),
            event: r["event"].as_str().unwrap_or_default().to_string(),
            details: details(&r["data"]),
        })
        .collect();
    Ok((ok, status, rows, pages))
}

/// Verifies both sides of one move, in words.
async fn check_move(state: &AdminState, batch: &str, mailbox: &str) -> MoveCheck {
    let (source_ok, source) = match actions::audit_verify(state, batch, mailbox).await {
        Ok(c) if c.ok => (
            true,
            format!(
                "verified: {} records (head {})",
                c.records,
                c.head.get(..16).unwrap_or(&c.head)
            ),
        ),
        Ok(c) => (
            false,
            format!(
                "does not verify: {}",
                c.error.unwrap_or_else(|| "no reason given".into())
            ),
        ),
        Err(e) => (false, format!("could not be read: {e}")),
    };
    let (both_ok, both) = match actions::reconcile(state, batch, mailbox).await {
        Ok(r) if r.agrees() => (
            true,
            format!(
                "both sides agree: {} message(s) acknowledged at the source, {} in the volume, {} identical",
                r.source_items, r.destination_items, r.agreeing
            ),
        ),
        Ok(r) => (
            false,
            format!(
                "the sides disagree: {} ({} acknowledged at the source, {} in the volume)",
                r.discrepancies(),
                r.source_items,
                r.destination_items
            ),
        ),
        Err(e) => (false, format!("not reconciled: {e}")),
    };
    MoveCheck {
        source_ok,
        source,
        both_ok,
        both,
    }
}

/// `GET /audit[?page=N][&batch=B&mailbox=M]`.
pub async fn page(
    State(state): State<AdminState>,
    v: Viewer,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let nav = Nav::of(&v);
    let page = page_of(&q);
    let (log_ok, log_status, rows, pages) = match log_part(&state, page).await {
        Ok(x) => x,
        Err(e) => return error_page(Some(nav), &e, "/dashboard"),
    };
    let page = page.min(pages);
    let batches = match actions::list_batches(&state).await {
        Ok(b) => b,
        Err(e) => return error_page(Some(nav), &e, "/dashboard"),
    };
    let wanted = (q.get("batch"), q.get("mailbox"));
    let mut moves = Vec::new();
    for b in &batches {
        for m in &b.status.mailboxes {
            let checked = wanted.0 == Some(&b.status.name) && wanted.1 == Some(&m.address);
            moves.push(MoveRow {
                batch: b.status.name.clone(),
                mailbox: m.address.clone(),
                state: state_label(m.status.state),
                anchor: format!("move-{}", moves.len() + 1),
                check: if checked {
                    Some(check_move(&state, &b.status.name, &m.address).await)
                } else {
                    None
                },
            });
        }
    }
    let link = |p: usize| format!("/audit?page={p}");
    render(
        StatusCode::OK,
        &AuditPage {
            nav: Some(nav),
            log_ok,
            log_status,
            checked_at: mailferry_core::rfc3339(mailferry_core::unix_now()),
            rows,
            page,
            pages,
            newer: (page > 1).then(|| link(page - 1)),
            older: (page < pages).then(|| link(page + 1)),
            volume: state.config().volume.display().to_string(),
            moves,
        },
    )
}
