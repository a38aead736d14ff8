//! The dashboard: every batch with a short line of facts, the lifecycle buttons its
//! state allows, and one compact row per mailbox (state in a word, percent, items,
//! skipped, bytes, rate) that fits a 1280 px window; the detail of a mailbox is on its
//! own page ([`super::mailbox`]), of a batch on the batch's page ([`super::batch`]).
//! `/dashboard/live` renders the same batches as an HTML fragment for `live.js` to swap
//! in every 2 s; without JavaScript the page shows current values and a Refresh link.
//!
//! The success banner after an action is part of that fragment and goes once its news
//! is over (a "completing" banner while the final pass runs, not after). The buttons
//! that change things POST to [`batch_action`] and [`approve`]; Complete, Suspend and
//! Approve skipped go through a confirmation page first ([`confirm_batch`],
//! [`confirm_approve`]), which names what will happen. Reads and actions go through
//! [`crate::actions`] like every other request; auditors see the buttons disabled, and
//! the actions refuse them anyway (403, audited).

use super::view::{self, ActionView, MoveRow};
use super::{done, error_page, render, FormData, Nav};
use crate::actions::rules::{self, BatchAction};
use crate::actions::{self, BatchInfo};
use crate::{AdminError, AdminState, Viewer};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use mailferry_control::lifecycle::MoveState;
use mailferry_control::units::human_bytes;
use std::collections::HashMap;

/// One batch on the dashboard.
#[derive(Clone, Debug)]
pub struct BatchView {
    /// Name.
    pub name: String,
    /// The batch's page.
    pub url: String,
    /// Suspended as a whole.
    pub suspended: bool,
    /// Mailboxes.
    pub mailboxes: usize,
    /// `2 Synced, 1 Failed`.
    pub summary: String,
    /// Overall percent ([`view::batch_percent`]).
    pub percent: u32,
    /// Bytes stored by all moves.
    pub bytes: String,
    /// Its buttons.
    pub actions: Vec<ActionView>,
    /// Its mailboxes.
    pub moves: Vec<MoveRow>,
    /// The service's latest run of it, in words.
    pub job: Option<String>,
}

/// The dashboard's view of one batch.
pub fn batch_view(b: &BatchInfo) -> BatchView {
    let s = &b.status;
    let mut summary: Vec<String> = view::state_counts(s)
        .into_iter()
        .map(|(_, label, n)| format!("{n} {label}"))
        .collect();
    if summary.is_empty() {
        summary.push("no mailboxes".into());
    }
    BatchView {
        name: s.name.clone(),
        url: view::batch_url(&s.name),
        suspended: s.suspended,
        mailboxes: s.mailboxes.len(),
        summary: summary.join(", "),
        percent: view::batch_percent(s),
        bytes: human_bytes(s.totals.bytes_transferred),
        actions: view::batch_actions(s, b.job.as_ref()),
        moves: s
            .mailboxes
            .iter()
            .map(|m| view::move_row(&s.name, &m.status))
            .collect(),
        job: b.job.as_ref().map(view::job_text),
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

/// The part of the dashboard `live.js` refreshes.
#[derive(Template)]
#[template(path = "live.html")]
struct LiveFragment {
    csrf: String,
    can_act: bool,
    batches: Vec<BatchView>,
    info: Option<String>,
    now: String,
}

/// The success banner for a [`super::done`] code, `None` for an unknown one or once
/// its news is over: a run it announced has ended (the batch's state says the rest).
pub fn flash(code: &str, what: &str, batches: &[BatchInfo]) -> Option<String> {
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
    let runs = matches!(
        code,
        "created-started" | "started" | "completing" | "approved"
    );
    if runs {
        let name = if code == "approved" {
            // `what` is the mailbox: its batch is the one holding it.
            batches
                .iter()
                .find(|b| b.status.mailboxes.iter().any(|m| m.address == what))
        } else {
            batches.iter().find(|b| b.status.name == what)
        };
        let over = match name {
            None => true,
            Some(b) => {
                !b.job.as_ref().is_some_and(|j| j.running)
                    && !b.status.mailboxes.iter().any(|m| {
                        m.status.running
                            || matches!(m.status.state, MoveState::Completing | MoveState::Syncing)
                    })
            }
        };
        if over {
            return None;
        }
    }
    let who = if code == "approved" { "" } else { "Batch " };
    Some(format!("{who}{what}: {text}."))
}

async fn fragment(
    state: &AdminState,
    nav: &Nav,
    q: &HashMap<String, String>,
) -> Result<LiveFragment, AdminError> {
    let all = actions::list_batches(state).await?;
    let info = flash(
        q.get("done").map(String::as_str).unwrap_or(""),
        q.get("what").map(String::as_str).unwrap_or(""),
        &all,
    );
    Ok(LiveFragment {
        csrf: nav.csrf.clone(),
        can_act: nav.admin,
        batches: all.iter().map(batch_view).collect(),
        info,
        now: view::now(),
    })
}

/// `GET /dashboard`.
pub async fn page(
    State(state): State<AdminState>,
    v: Viewer,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let nav = Nav::of(&v);
    match fragment(&state, &nav, &q).await {
        Ok(f) => render(
            StatusCode::OK,
            &DashboardPage {
                nav: Some(nav),
                csrf: f.csrf,
                can_act: f.can_act,
                batches: f.batches,
                info: f.info,
                now: f.now,
            },
        ),
        Err(e) => error_page(Some(nav), &e, "/dashboard"),
    }
}

/// `GET /dashboard/live`: the batches as an HTML fragment (the page's query, such as
/// the banner's code, passed on).
pub async fn live(
    State(state): State<AdminState>,
    v: Viewer,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let nav = Nav::of(&v);
    match fragment(&state, &nav, &q).await {
        Ok(f) => render(StatusCode::OK, &f),
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
        match BatchAction::parse(&action) {
            Some(BatchAction::Start | BatchAction::Sync) => actions::start_batch(&state, &v, &name)
                .await
                .map(|_| "started"),
            Some(BatchAction::Suspend) => actions::suspend_batch(&state, &v, &name)
                .await
                .map(|_| "suspended"),
            Some(BatchAction::Resume) => actions::resume_batch(&state, &v, &name)
                .await
                .map(|_| "resumed"),
            Some(BatchAction::Complete) => actions::complete_batch(&state, &v, &name, false)
                .await
                .map(|_| "completing"),
            None => Err(AdminError::NotFound(format!(
                "no batch action {action:?}: use the buttons of the batch's page"
            ))),
        }
    };
    form_action(&v, &f, &name, act).await
}

/// Runs a button's action once the form's CSRF token checks out (the action is not
/// started otherwise), then shows what it did (`done`) or why not.
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

// === confirmations ===

/// A confirmation step: what will happen, a button that does it and a way back that
/// changes nothing.
#[derive(Template)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    nav: Option<Nav>,
    csrf: String,
    can_act: bool,
    /// `Complete batch spring-2026?`
    title: String,
    /// What will happen, one sentence each.
    facts: Vec<String>,
    /// Items the action concerns (the skipped items to approve), if any.
    items: Vec<String>,
    /// Where the confirmation posts.
    action: String,
    /// The confirm button's text.
    button: String,
    /// Why it cannot be done now (the button is then disabled).
    refusal: Option<String>,
    /// Where Cancel goes.
    back: String,
}

/// `GET /ui/batches/{name}/{action}`: the confirmation page of Complete and Suspend
/// (the other actions need none: their form posts directly).
pub async fn confirm_batch(
    State(state): State<AdminState>,
    v: Viewer,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let nav = Nav::of(&v);
    let back = view::batch_url(&name);
    let b = match actions::batch_status(&state, &name).await {
        Ok(b) => b,
        Err(e) => return error_page(Some(nav), &e, "/dashboard"),
    };
    let s = &b.status;
    let names = |f: &dyn Fn(MoveState) -> bool| -> Vec<String> {
        s.mailboxes
            .iter()
            .filter(|m| f(m.status.state))
            .map(|m| m.address.clone())
            .collect()
    };
    let (a, title, button, facts, items) = match BatchAction::parse(&action) {
        Some(BatchAction::Complete) => {
            let synced = names(&|st| st == MoveState::Synced);
            let waiting: u64 = s
                .mailboxes
                .iter()
                .map(|m| rules::awaiting_approval(&m.status))
                .sum();
            let mut facts = vec![
                format!(
                    "The final delta pass (the cut-over) runs now for {} synced mailbox(es), listed below: it copies what arrived since the last pass.",
                    synced.len()
                ),
                "Each mailbox whose final pass ends without unapproved skipped items becomes Completed and takes no more passes: point its users at the new server then.".into(),
            ];
            if waiting > 0 {
                facts.push(format!(
                    "{waiting} skipped item(s) are not approved: their mailboxes stay Synced until you approve them on the mailbox's page."
                ));
            }
            (
                BatchAction::Complete,
                format!("Complete batch {name}?"),
                format!("Complete batch {name}"),
                facts,
                synced,
            )
        }
        Some(BatchAction::Suspend) => {
            let held = names(&|st| st != MoveState::Completed);
            (
                BatchAction::Suspend,
                format!("Suspend batch {name}?"),
                format!("Suspend batch {name}"),
                vec![
                    format!(
                        "No new pass starts for the {} mailbox(es) of the batch not completed, listed below; a pass running now finishes first.",
                        held.len()
                    ),
                    "Everything copied so far is kept. Resume continues each mailbox from where it stopped.".into(),
                ],
                held,
            )
        }
        _ => {
            return error_page(
                Some(nav),
                &AdminError::NotFound(format!(
                    "{action} needs no confirmation page; use the buttons of the batch's page"
                )),
                &back,
            )
        }
    };
    let refusal = rules::check_batch(s, b.job.as_ref(), a).err();
    render(
        StatusCode::OK,
        &ConfirmPage {
            csrf: nav.csrf.clone(),
            can_act: nav.admin,
            nav: Some(nav),
            title,
            facts,
            items,
            action: format!("{back}/{}", a.as_str()),
            button,
            refusal,
            back,
        },
    )
}

/// `GET /ui/moves/{batch}/{mailbox}/approve`: the confirmation page of Approve skipped,
/// listing the items.
pub async fn confirm_approve(
    State(state): State<AdminState>,
    v: Viewer,
    Path((batch, mailbox)): Path<(String, String)>,
) -> Response {
    let nav = Nav::of(&v);
    let back = view::mailbox_url(&batch, &mailbox);
    let b = match actions::batch_status(&state, &batch).await {
        Ok(b) => b,
        Err(e) => return error_page(Some(nav), &e, "/dashboard"),
    };
    let Some(m) = b.status.mailboxes.iter().find(|m| m.address == mailbox) else {
        let e = AdminError::NotFound(format!("batch {batch} has no mailbox {mailbox}"));
        return error_page(Some(nav), &e, &view::batch_url(&batch));
    };
    let st = &m.status;
    let items: Vec<String> = st
        .skipped_items
        .iter()
        .filter(|s| !s.approved)
        .map(|s| {
            format!(
                "{} ({}{})",
                s.item,
                super::mailbox::size_text(s.size),
                super::mailbox::reason_text(&s.reason)
                    .map(|r| format!(", {r}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    let refusal = rules::check_approve(&b.status, b.job.as_ref(), st)
        .err()
        .or_else(|| (items.is_empty()).then(|| format!("{mailbox} has no skipped items waiting")));
    render(
        StatusCode::OK,
        &ConfirmPage {
            csrf: nav.csrf.clone(),
            can_act: nav.admin,
            nav: Some(nav),
            title: format!("Approve the skipped items of {mailbox}?"),
            facts: vec![
                format!(
                    "The {} item(s) listed below are accepted as not moved: they stay at the source and no longer hold the mailbox back from completing.",
                    items.len()
                ),
                "A pass of this mailbox runs now to record the approval in its audit log.".into(),
            ],
            items,
            action: format!("{back}/approve"),
            button: format!("Approve skipped items of {mailbox}"),
            refusal,
            back,
        },
    )
}

#[cfg(test)]
mod tests;
