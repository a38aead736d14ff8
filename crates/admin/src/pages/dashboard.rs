//! The dashboard: every batch with its mailboxes' live progress (state, percent, items,
//! bytes, rate, ETA) and the lifecycle actions (start, suspend, resume, complete,
//! approve skipped items) as POST forms. `/dashboard/live` renders the same batches as
//! an HTML fragment for `live.js` to swap in every 2 s; without JavaScript the page
//! shows current values and a Refresh link.
//!
//! Reads go through the admin actions like every other request; the buttons are
//! disabled for auditors, and the actions refuse them anyway (403, audited).

use super::{done, error_page, render, url_component, FormData, Nav};
use crate::{actions, AdminError, AdminState, Viewer};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use mailferry_control::batch::BatchStatus;
use mailferry_control::lifecycle::MoveState;
use mailferry_control::units::{human_bytes, human_duration};
use std::collections::HashMap;
use std::time::Duration;

/// A lifecycle button of a batch.
#[derive(Clone, Debug)]
pub struct ActionView {
    /// Where the form posts.
    pub url: String,
    /// Element id (`complete-NAME`), for tests and focus keeping.
    pub id: String,
    /// Button text.
    pub label: &'static str,
    /// The verb, for the auditor's tooltip.
    pub verb: &'static str,
}

/// One mailbox row.
#[derive(Clone, Debug)]
pub struct MoveView {
    /// Destination address.
    pub mailbox: String,
    /// Lifecycle state (`synced`), for CSS and tests.
    pub state: &'static str,
    /// The state in words (`Synced`).
    pub state_label: &'static str,
    /// Why it is in that state.
    pub reason: Option<String>,
    /// A pass runs now.
    pub running: bool,
    /// 0 to 100.
    pub percent: u32,
    /// `synced / total`.
    pub items: String,
    /// Skipped items (approved ones counted).
    pub skipped: String,
    /// Bytes stored.
    pub bytes: String,
    /// Current rate.
    pub rate: String,
    /// Time left.
    pub eta: String,
    /// The report page.
    pub report_url: String,
    /// Has skipped items no admin accepted yet.
    pub approvable: bool,
    /// Where the approve form posts.
    pub approve_url: String,
}

/// One batch.
#[derive(Clone, Debug)]
pub struct BatchView {
    /// Name.
    pub name: String,
    /// Suspended as a whole.
    pub suspended: bool,
    /// Its endpoint file's name.
    pub endpoint: String,
    /// Mailboxes.
    pub mailboxes: usize,
    /// `2 synced, 1 failed`.
    pub summary: String,
    /// Overall percent.
    pub percent: u32,
    /// Bytes stored by all moves.
    pub bytes: String,
    /// Its buttons.
    pub actions: Vec<ActionView>,
    /// Its mailboxes.
    pub moves: Vec<MoveView>,
    /// The service's latest run of it, in words.
    pub job: Option<String>,
    /// Who its reports are for (the wizard's report recipients).
    pub recipients: String,
}

/// The label of a state as admins read it.
pub fn state_label(s: MoveState) -> &'static str {
    match s {
        MoveState::Created => "Created",
        MoveState::Syncing => "Syncing",
        MoveState::Synced => "Synced",
        MoveState::Completing => "Completing",
        MoveState::Completed => "Completed",
        MoveState::Failed => "Failed",
        MoveState::Suspended => "Suspended",
    }
}

fn rate(bytes_per_s: f64, msgs_per_s: f64) -> String {
    if bytes_per_s <= 0.0 {
        return "–".into();
    }
    format!(
        "{}/s · {:.0} msg/s",
        human_bytes(bytes_per_s as u64),
        msgs_per_s
    )
}

/// The rows of one batch, with the buttons its state allows.
pub fn batch_view(s: &BatchStatus) -> BatchView {
    let name = &s.name;
    let moves: Vec<MoveView> = s
        .mailboxes
        .iter()
        .map(|m| {
            let st = &m.status;
            let base = format!(
                "/ui/moves/{}/{}",
                url_component(name),
                url_component(&m.address)
            );
            MoveView {
                mailbox: m.address.clone(),
                state: st.state.as_str(),
                state_label: state_label(st.state),
                reason: st.reason.clone().filter(|r| !r.is_empty()),
                running: st.running,
                percent: st.percent_complete.clamp(0.0, 100.0).floor() as u32,
                items: format!("{} / {}", st.items_synced, st.items_total),
                skipped: if st.items_approved > 0 {
                    format!("{} ({} approved)", st.items_skipped, st.items_approved)
                } else {
                    st.items_skipped.to_string()
                },
                bytes: human_bytes(st.bytes_transferred),
                rate: if st.running {
                    rate(st.rate_bytes_per_s, st.rate_messages_per_s)
                } else {
                    "–".into()
                },
                eta: match (st.running, st.eta_seconds) {
                    (true, Some(e)) => human_duration(Duration::from_secs_f64(e.max(0.0))),
                    (false, _) if st.state == MoveState::Completed => "done".into(),
                    _ => "–".into(),
                },
                approvable: st.items_skipped > st.items_approved
                    && !matches!(st.state, MoveState::Completed),
                approve_url: format!("{base}/approve"),
                report_url: format!("{base}/report"),
            }
        })
        .collect();
    let has = |f: &dyn Fn(MoveState) -> bool| s.mailboxes.iter().any(|m| f(m.status.state));
    let mut actions = Vec::new();
    let mut add = |action: &'static str, label: &'static str| {
        actions.push(ActionView {
            url: format!("/ui/batches/{}/{action}", url_component(name)),
            id: format!("{action}-{name}"),
            label,
            verb: action,
        })
    };
    if !s.suspended && has(&|st| matches!(st, MoveState::Created | MoveState::Failed)) {
        add("start", "Start");
    }
    if !s.suspended && has(&|st| matches!(st, MoveState::Synced)) {
        add("sync", "Sync again");
    }
    if !s.suspended && has(&|st| !matches!(st, MoveState::Completed | MoveState::Suspended)) {
        add("suspend", "Suspend");
    }
    if s.suspended || has(&|st| st == MoveState::Suspended) {
        add("resume", "Resume");
    }
    if !s.suspended && has(&|st| st == MoveState::Synced) {
        add("complete", "Complete");
    }
    let mut summary: Vec<String> = s
        .totals
        .by_state
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    if summary.is_empty() {
        summary.push("no mailboxes".into());
    }
    BatchView {
        name: name.clone(),
        suspended: s.suspended,
        endpoint: s
            .endpoint
            .file_stem()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        mailboxes: s.mailboxes.len(),
        summary: summary.join(", "),
        percent: s.totals.percent_complete.clamp(0.0, 100.0).floor() as u32,
        bytes: human_bytes(s.totals.bytes_transferred),
        actions,
        moves,
        job: None,
        recipients: String::new(),
    }
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    nav: Option<Nav>,
    csrf: String,
    can_act: bool,
    batches: Vec<BatchView>,
    info: Option<String>,
    now: String,
}

#[derive(Template)]
#[template(path = "live.html")]
struct LiveFragment {
    csrf: String,
    can_act: bool,
    batches: Vec<BatchView>,
}

async fn batches(state: &AdminState) -> Result<Vec<BatchView>, AdminError> {
    let all = actions::list_batches(state).await?;
    Ok(all
        .iter()
        .map(|b| {
            let mut view = batch_view(&b.status);
            if let Some(j) = &b.job {
                view.job = Some(job_text(j));
            }
            if let Some(m) = &b.admin {
                view.recipients = m.settings.report_recipients.join(", ");
            }
            view
        })
        .collect())
}

fn job_text(j: &crate::jobs::JobStatus) -> String {
    let kind = match j.kind {
        crate::jobs::JobKind::Sync => "sync",
        crate::jobs::JobKind::Complete => "completion",
        crate::jobs::JobKind::Approve => "approval pass",
    };
    match (&j.scheduled_for, j.running, &j.error) {
        (Some(at), true, _) => format!("{kind} scheduled for {at}"),
        (_, true, _) => format!("{kind} running since {}", j.started_at),
        (_, false, Some(e)) => format!("last {kind} failed: {e}"),
        (_, false, None) => format!(
            "last {kind} ended {}",
            j.finished_at.as_deref().unwrap_or("")
        ),
    }
}

/// The success banner for a [`super::done`] code, `None` for an unknown one.
pub fn flash(code: &str, what: &str) -> Option<String> {
    let text = match code {
        "created-started" => "created and started; its progress shows below",
        "created-scheduled" => "created; it starts at the time you chose",
        "created" => "created; start it here when you are ready",
        "started" => "started; its progress shows below",
        "suspended" => "suspended; passes that are running finish first",
        "resumed" => "resumed",
        "completing" => "completing: the final delta pass runs now",
        "approved" => "skipped items approved; a pass runs to record the approval",
        _ => return None,
    };
    let who = if code == "approved" { "" } else { "Batch " };
    Some(format!("{who}{what}: {text}."))
}

/// `GET /dashboard`.
pub async fn page(
    State(state): State<AdminState>,
    v: Viewer,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let nav = Nav::of(&v);
    match batches(&state).await {
        Ok(batches) => render(
            StatusCode::OK,
            &DashboardPage {
                csrf: nav.csrf.clone(),
                can_act: nav.admin,
                nav: Some(nav),
                batches,
                info: flash(
                    q.get("done").map(String::as_str).unwrap_or(""),
                    q.get("what").map(String::as_str).unwrap_or(""),
                ),
                now: mailferry_core::rfc3339(mailferry_core::unix_now()),
            },
        ),
        Err(e) => error_page(Some(nav), &e, "/dashboard"),
    }
}

/// `GET /dashboard/live`: the batches as an HTML fragment.
pub async fn live(State(state): State<AdminState>, v: Viewer) -> Response {
    let nav = Nav::of(&v);
    match batches(&state).await {
        Ok(batches) => render(
            StatusCode::OK,
            &LiveFragment {
                csrf: nav.csrf,
                can_act: nav.admin,
                batches,
            },
        ),
        Err(e) => error_page(Some(nav), &e, "/dashboard"),
    }
}

/// `POST /ui/batches/{name}/{action}`: start, sync, suspend, resume or complete.
pub async fn batch_action(
    State(state): State<AdminState>,
    v: Viewer,
    Path((name, action)): Path<(String, String)>,
    f: FormData,
) -> Response {
    let act = async {
        match action.as_str() {
            "start" | "sync" => actions::start_batch(&state, &v, &name)
                .await
                .map(|_| "started"),
            "suspend" => actions::suspend_batch(&state, &v, &name)
                .await
                .map(|_| "suspended"),
            "resume" => actions::resume_batch(&state, &v, &name)
                .await
                .map(|_| "resumed"),
            "complete" => actions::complete_batch(&state, &v, &name, false)
                .await
                .map(|_| "completing"),
            other => Err(AdminError::NotFound(format!(
                "no batch action {other:?}: use start, sync, suspend, resume or complete"
            ))),
        }
    };
    form_action(&v, &f, &name, act).await
}

/// Runs a dashboard button's action once the form's CSRF token checks out (the action
/// is not started otherwise), then shows what it did (`done`) or why not.
async fn form_action(
    v: &Viewer,
    f: &FormData,
    subject: &str,
    act: impl std::future::Future<Output = Result<&'static str, AdminError>>,
) -> Response {
    let res = match f.check_csrf(v) {
        Err(e) => Err(e),
        Ok(()) => act.await,
    };
    match res {
        Ok(code) => done(code, subject),
        Err(e) => error_page(Some(Nav::of(v)), &e, "/dashboard"),
    }
}

/// `POST /ui/moves/{batch}/{mailbox}/approve`: accept the move's skipped items.
pub async fn approve(
    State(state): State<AdminState>,
    v: Viewer,
    Path((batch, mailbox)): Path<(String, String)>,
    f: FormData,
) -> Response {
    let act = async {
        actions::approve_skipped(&state, &v, &batch, &mailbox)
            .await
            .map(|_| "approved")
    };
    form_action(&v, &f, &mailbox, act).await
}
