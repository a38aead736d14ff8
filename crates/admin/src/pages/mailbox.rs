//! The page of one mailbox of a batch, whatever its state: where it is (state, the
//! error of a failed move, items, bytes), the one action that concerns a single
//! mailbox (Approve skipped, through its confirmation page) or why not, its skipped
//! items, and, once a pass has ended, the move record's passes, throughput plot,
//! warnings and audit status ([`super::report`]), its lifecycle, and its lockbox
//! history (every request to read it, its decision, expiry and uses).
//!
//! Skipped items show what the move record already holds at the source's side and
//! nothing more: folder, the source's id, size, the delivery date a Maildir file name
//! carries, kind, reason and approval. Sender and subject are not shown: the record
//! does not keep them, and reading them from the message would give the admin service
//! a standing look into mailboxes (docs/admin.md, "What an admin sees of a skipped
//! item"). Reads only.

use super::report::{self, PassView};
use super::view::{self, when};
use super::{error_page, render, url_component, Nav};
use crate::actions::{self, rules};
use crate::{AdminError, AdminState, Viewer};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use mailferry_control::lifecycle::MoveState;
use mailferry_control::units::human_bytes;
use mailferry_core::report::SkippedItem;

/// One skipped item as the page lists it.
#[derive(Clone, Debug)]
pub struct SkippedRow {
    /// Folder at the source (`INBOX` for the top of a Maildir).
    pub folder: String,
    /// The source's id of the item in its folder (a Maildir file name).
    pub id: String,
    /// Delivery date from a Maildir file name, `–` when the id carries none.
    pub date: String,
    /// Size in MB.
    pub size: String,
    /// `bad item` or `large item`.
    pub kind: String,
    /// Why it was not moved, in the pages' words.
    pub reason: String,
    /// Accepted by an admin.
    pub approved: bool,
}

/// `0.2 MB`, or `size unknown`.
pub fn size_text(size: Option<u64>) -> String {
    match size {
        Some(b) => format!("{:.1} MB", b as f64 / 1e6),
        None => "size unknown".into(),
    }
}

/// A skipped item's reason in the pages' words: the large-item limit by its size, not
/// by a profile key; other reasons with any command-line advice put in page terms.
/// `None` for an empty reason.
pub fn reason_text(reason: &str) -> Option<String> {
    if reason.trim().is_empty() {
        return None;
    }
    const KEY: &str = "over filter.max_message_bytes (";
    if let Some(i) = reason.find(KEY) {
        let rest = &reason[i + KEY.len()..];
        if let Some(limit) = rest
            .split(')')
            .next()
            .and_then(|n| n.trim().parse::<u64>().ok())
        {
            return Some(format!(
                "larger than the batch's large item size ({})",
                size_text(Some(limit))
            ));
        }
    }
    Some(super::view::page_text(reason))
}

/// The delivery time a Maildir file name starts with (`1700000000.M1P1.host`), if any.
pub fn maildir_date(id: &str) -> Option<String> {
    let secs: i64 = id.split('.').next()?.parse().ok()?;
    // Between 1990 and 2100: anything else is not a delivery time.
    (631_152_000..4_102_444_800)
        .contains(&secs)
        .then(|| view::at(secs))
}

fn skipped_row(s: &SkippedItem) -> SkippedRow {
    SkippedRow {
        folder: if s.folder.is_empty() {
            "–".into()
        } else {
            s.folder.clone()
        },
        id: s.source_id.clone(),
        date: maildir_date(&s.source_id).unwrap_or_else(|| "–".into()),
        size: size_text(s.size),
        kind: serde_json::to_value(s.kind)
            .ok()
            .and_then(|v| v.as_str().map(|k| k.replace('_', " ")))
            .unwrap_or_default(),
        reason: reason_text(&s.reason).unwrap_or_default(),
        approved: s.approved,
    }
}

#[derive(Template)]
#[template(path = "mailbox.html")]
struct MailboxPage {
    nav: Option<Nav>,
    can_act: bool,
    batch: String,
    batch_url: String,
    mailbox: String,
    state: &'static str,
    state_label: &'static str,
    /// The error of a failed move, in the pages' words.
    error: Option<String>,
    /// Why it is in its state, for the other states.
    reason: Option<String>,
    /// (label, value) of the facts table.
    facts: Vec<(&'static str, String)>,
    /// Skipped items wait for approval.
    approvable: bool,
    approve_url: String,
    /// Why Approve skipped is not possible now.
    approve_refusal: Option<String>,
    skipped: Vec<SkippedRow>,
    has_record: bool,
    passes: Vec<PassView>,
    plot: Option<String>,
    plot_pass: String,
    warnings: Vec<(String, String, String)>,
    /// (side, ok, detail).
    audit: Vec<(String, bool, String)>,
    /// (time, state, reason, actor).
    history: Vec<(String, String, String, String)>,
    standalone_url: String,
    /// The lockbox's requests and grants of this mailbox, newest first.
    lockbox: Vec<super::access::Row>,
    /// `/access?mailbox=...`: the request form, filled in.
    request_url: String,
}

/// `GET /ui/moves/{batch}/{mailbox}` (and `.../report`, where the dashboard's Report
/// links used to lead).
pub async fn page(
    State(state): State<AdminState>,
    v: Viewer,
    Path((batch, mailbox)): Path<(String, String)>,
) -> Response {
    let nav = Nav::of(&v);
    match build(&state, &nav, &batch, &mailbox).await {
        Ok(p) => render(StatusCode::OK, &p),
        Err(e) => error_page(Some(nav), &e, &view::batch_url(&batch)),
    }
}

async fn build(
    state: &AdminState,
    nav: &Nav,
    batch: &str,
    mailbox: &str,
) -> Result<MailboxPage, AdminError> {
    let b = actions::batch_status(state, batch).await?;
    let m = b
        .status
        .mailboxes
        .iter()
        .find(|m| m.address == mailbox)
        .ok_or_else(|| AdminError::NotFound(format!("batch {batch} has no mailbox {mailbox}")))?;
    let st = &m.status;
    let record = report::load(state, batch, mailbox).await?;
    let audit = if st.passes > 0 {
        report::audit_rows(state, batch, mailbox)
            .await
            .into_iter()
            .map(|(side, ok, d)| (side, ok, super::view::page_text(&d)))
            .collect()
    } else {
        Vec::new()
    };
    let reason = view::reason(st);
    let failed = st.state == MoveState::Failed;
    let row = view::move_row(batch, st);
    let mut facts = vec![
        ("Batch", batch.to_string()),
        (
            "Progress",
            format!("{} %: {} items", row.percent, row.items),
        ),
        ("Skipped", row.skipped.clone()),
        ("Stored", human_bytes(st.bytes_transferred)),
        ("Passes", st.passes.to_string()),
        (
            "Last pass ended",
            st.last_sync_at
                .as_deref()
                .map(when)
                .unwrap_or_else(|| "–".into()),
        ),
    ];
    if st.running {
        facts.push(("Now", format!("a pass runs ({})", row.rate)));
    }
    if let Some(r) = &record {
        facts.push(("Source", r.identity.source.clone()));
        facts.push(("Move", r.identity.move_id.to_string()));
        facts.push(("Created", when(&r.identity.created_at)));
    } else if let Some(id) = &st.move_id {
        facts.push(("Move", id.clone()));
    }
    let limit = b
        .admin
        .as_ref()
        .and_then(|a| a.settings.max_bytes_per_second.as_deref())
        .and_then(|t| mailferry_core::profile::ByteSize::parse(t).ok())
        .map(|s| s.0);
    let plotted = record
        .as_ref()
        .and_then(|r| r.passes.iter().rev().find(|p| p.bytes_moved > 0));
    let history = st
        .history
        .iter()
        .map(|t| {
            let label = view::state_label(t.state);
            // A reason that only repeats the state ("Created", "created") says nothing.
            let reason = if t.reason.eq_ignore_ascii_case(label) {
                "–".to_string()
            } else {
                super::view::page_text(&t.reason)
            };
            (when(&t.at), label.to_string(), reason, t.actor.clone())
        })
        .collect();
    Ok(MailboxPage {
        nav: Some(nav.clone()),
        can_act: nav.admin,
        batch: batch.to_string(),
        batch_url: view::batch_url(batch),
        mailbox: mailbox.to_string(),
        state: st.state.as_str(),
        state_label: view::state_label(st.state),
        error: if failed { reason.clone() } else { None },
        reason: if failed { None } else { reason },
        facts,
        approvable: row.approvable,
        approve_url: row.approve_url.clone(),
        approve_refusal: rules::check_approve(&b.status, b.job.as_ref(), st).err(),
        skipped: st.skipped_items.iter().map(skipped_row).collect(),
        has_record: record.is_some(),
        passes: record.as_ref().map(report::pass_views).unwrap_or_default(),
        // plot::svg writes numbers and fixed markup only: nothing to escape.
        plot: plotted.map(|p| mailferry_control::report::plot::svg(&p.timeline, limit)),
        plot_pass: plotted.map(|p| when(&p.started_at)).unwrap_or_default(),
        warnings: record
            .as_ref()
            .map(report::warning_rows)
            .unwrap_or_default(),
        audit,
        history,
        standalone_url: format!(
            "/ui/moves/{}/{}/report.html",
            url_component(batch),
            url_component(mailbox)
        ),
        lockbox: crate::actions::access::of_mailbox(state, mailbox)
            .await?
            .iter()
            .map(super::access::Row::of)
            .collect(),
        request_url: format!("/access?mailbox={}", url_component(mailbox)),
    })
}
