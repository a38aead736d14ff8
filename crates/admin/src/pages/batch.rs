//! The page of one batch: its totals and mailboxes per state, every lifecycle action
//! with the reason when its state does not allow it now ([`crate::actions::rules`]),
//! its mailboxes, and its report to download as CSV or as one self-contained HTML
//! file. Reads only: its buttons post to [`super::dashboard::batch_action`].

use super::dashboard::{batch_view, BatchView};
use super::report::download;
use super::view::{self, ActionView};
use super::{error_page, render, Nav};
use crate::actions::{self, BatchInfo};
use crate::{AdminError, AdminState, Viewer};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use mailferry_control::units::human_bytes;

/// One line of the batch report (the page's table, the CSV and the HTML file).
#[derive(Clone, Debug)]
pub struct ReportLine {
    /// Destination address.
    pub mailbox: String,
    /// Source user name.
    pub user_name: String,
    /// `Synced`.
    pub state: &'static str,
    /// Percent, see [`view::percent`].
    pub percent: u32,
    /// Items found at the source.
    pub items_total: u64,
    /// Items at the destination.
    pub items_synced: u64,
    /// Skipped items.
    pub items_skipped: u64,
    /// Of them, bad items.
    pub items_bad: u64,
    /// Of them, large items.
    pub items_large: u64,
    /// Of them, approved.
    pub items_approved: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Passes run.
    pub passes: u64,
    /// When the last pass ended.
    pub last_pass: String,
    /// Why it is in its state, in the pages' words.
    pub reason: String,
}

/// The report lines of a batch, one per mailbox.
pub fn report_lines(b: &BatchInfo) -> Vec<ReportLine> {
    b.status
        .mailboxes
        .iter()
        .map(|m| {
            let st = &m.status;
            ReportLine {
                mailbox: m.address.clone(),
                user_name: m.user_name.clone(),
                state: view::state_label(st.state),
                percent: view::percent(
                    st.items_synced,
                    st.items_total,
                    st.state == mailferry_control::lifecycle::MoveState::Completed,
                ),
                items_total: st.items_total,
                items_synced: st.items_synced,
                items_skipped: st.items_skipped,
                items_bad: st.items_bad,
                items_large: st.items_large,
                items_approved: st.items_approved,
                bytes: st.bytes_transferred,
                passes: st.passes,
                last_pass: st
                    .last_sync_at
                    .as_deref()
                    .map(view::when)
                    .unwrap_or_default(),
                reason: view::reason(st).unwrap_or_default(),
            }
        })
        .collect()
}

/// One CSV field: quoted when it must be, and a leading `=`, `+`, `-` or `@` defused
/// (a spreadsheet would run it as a formula).
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The batch report as CSV (RFC 4180, CRLF line ends, a header row).
pub fn report_csv(lines: &[ReportLine]) -> String {
    let mut out = String::from(
        "mailbox,user_name,state,percent,items_total,items_synced,items_skipped,items_bad,items_large,items_approved,bytes_stored,passes,last_pass_ended,reason\r\n",
    );
    for l in lines {
        let fields = [
            csv_field(&l.mailbox),
            csv_field(&l.user_name),
            l.state.to_string(),
            l.percent.to_string(),
            l.items_total.to_string(),
            l.items_synced.to_string(),
            l.items_skipped.to_string(),
            l.items_bad.to_string(),
            l.items_large.to_string(),
            l.items_approved.to_string(),
            l.bytes.to_string(),
            l.passes.to_string(),
            csv_field(&l.last_pass),
            csv_field(&l.reason),
        ];
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

#[derive(Template)]
#[template(path = "batch.html")]
struct BatchPage {
    nav: Option<Nav>,
    csrf: String,
    can_act: bool,
    b: BatchView,
    /// Every action, possible or not.
    actions: Vec<ActionView>,
    /// (label, value).
    totals: Vec<(&'static str, String)>,
    /// (state css, label, count).
    states: Vec<(&'static str, &'static str, usize)>,
    lines: Vec<ReportLine>,
}

/// The self-contained HTML report of a batch (inline style, no script, no links out).
#[derive(Template)]
#[template(path = "batch_report.html")]
struct BatchReportFile {
    name: String,
    generated: String,
    totals: Vec<(&'static str, String)>,
    lines: Vec<ReportLine>,
}

fn totals(b: &BatchInfo) -> Vec<(&'static str, String)> {
    let s = &b.status;
    let t = &s.totals;
    let total: u64 = s.mailboxes.iter().map(|m| m.status.items_total).sum();
    let mut out = vec![
        ("Mailboxes", s.mailboxes.len().to_string()),
        ("Progress", format!("{} %", view::batch_percent(s))),
        (
            "Items",
            format!(
                "{} of {} at the destination",
                view::thousands(t.items_synced),
                view::thousands(total)
            ),
        ),
        (
            "Skipped",
            format!(
                "{} ({} bad)",
                view::thousands(t.items_skipped),
                view::thousands(t.items_bad)
            ),
        ),
        ("Stored", human_bytes(t.bytes_transferred)),
        (
            "Endpoint",
            s.endpoint
                .file_stem()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
    ];
    if let Some(j) = &b.job {
        out.push(("Latest run", view::job_text(j)));
    }
    if let Some(m) = &b.admin {
        out.push(("Completes", completion_text(&m.settings.completion)));
        out.push(("Created by", m.created_by.clone()));
        if !m.settings.report_recipients.is_empty() {
            out.push(("Reports for", m.settings.report_recipients.join(", ")));
        }
    }
    out
}

/// How the wizard said the batch completes, in a few words.
fn completion_text(c: &actions::Completion) -> String {
    match c {
        actions::Completion::Automatic => "as soon as every mailbox is synced".into(),
        actions::Completion::After { at } => format!("at or after {}", view::when(at)),
        actions::Completion::Manual => "when an admin completes it".into(),
    }
}

/// `GET /ui/batches/{name}`.
pub async fn page(
    State(state): State<AdminState>,
    v: Viewer,
    Path(name): Path<String>,
) -> Response {
    let nav = Nav::of(&v);
    let b = match actions::batch_status(&state, &name).await {
        Ok(b) => b,
        Err(e) => return error_page(Some(nav), &e, "/dashboard"),
    };
    render(
        StatusCode::OK,
        &BatchPage {
            csrf: nav.csrf.clone(),
            can_act: nav.admin,
            nav: Some(nav),
            actions: view::batch_actions(&b.status, b.job.as_ref()),
            totals: totals(&b),
            states: view::state_counts(&b.status),
            lines: report_lines(&b),
            b: batch_view(&b),
        },
    )
}

/// `GET /ui/batches/{name}/report.csv`.
pub async fn report_csv_file(
    State(state): State<AdminState>,
    v: Viewer,
    Path(name): Path<String>,
) -> Response {
    match actions::batch_status(&state, &name).await {
        Ok(b) => download(
            "text/csv; charset=utf-8",
            &format!("mailferry-batch-{name}.csv"),
            report_csv(&report_lines(&b)),
        ),
        Err(e) => error_page(Some(Nav::of(&v)), &e, "/dashboard"),
    }
}

/// `GET /ui/batches/{name}/report.html`.
pub async fn report_html_file(
    State(state): State<AdminState>,
    v: Viewer,
    Path(name): Path<String>,
) -> Response {
    let b = match actions::batch_status(&state, &name).await {
        Ok(b) => b,
        Err(e) => return error_page(Some(Nav::of(&v)), &e, "/dashboard"),
    };
    let f = BatchReportFile {
        name: name.clone(),
        generated: view::now(),
        totals: totals(&b),
        lines: report_lines(&b),
    };
    match f.render() {
        Ok(body) => download(
            "text/html; charset=utf-8",
            &format!("mailferry-batch-{name}.html"),
            body,
        ),
        Err(e) => error_page(
            Some(Nav::of(&v)),
            &AdminError::Internal(format!("batch report: {e}")),
            &view::batch_url(&name),
        ),
    }
}

#[cfg(test)]
mod tests;
