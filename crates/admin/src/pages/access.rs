//! The lockbox pages: every request and grant with the request form (admins), one
//! request's page with its uses and what the viewer may do with it, the approval and
//! denial confirmation (a fresh TOTP code, and for a customer-key tenant the tenant key
//! file, used in memory and never stored), and the download of a granted mailbox.
//!
//! Buttons follow the rule of the other pages: what the viewer's role or relation to
//! the request never allows is not shown; what the request's state does not allow now
//! is shown disabled with the reason. The checks themselves are the lockbox's
//! ([`crate::actions::access`]), exactly as for the API.

use super::view::{at, page_text};
use super::{error_page, render, url_component, FormData, Nav};
use crate::actions::access::{self, AccessView, DecisionInput};
use crate::lockbox::{parse_duration, NewRequest, State};
use crate::role::Role;
use crate::{AdminError, AdminState, Viewer};
use askama::Template;
use axum::extract::{Path, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use std::collections::HashMap;

/// One request as the list shows it.
#[derive(Debug)]
pub struct Row {
    /// Id.
    pub id: String,
    /// Its page.
    pub url: String,
    /// Mailbox.
    pub mailbox: String,
    /// Its tenant.
    pub tenant: String,
    /// Who asked.
    pub requester: String,
    /// State now (snake_case).
    pub state: &'static str,
    /// State now in words.
    pub state_label: &'static str,
    /// Approver or denier, or a dash.
    pub decided_by: String,
    /// When the grant ends, or a dash.
    pub expires: String,
    /// Uses so far.
    pub uses: usize,
}

/// The page of request `id`.
pub fn request_url(id: &str) -> String {
    format!("/access/{}", url_component(id))
}

impl Row {
    /// The row of `v`.
    pub fn of(v: &AccessView) -> Row {
        let r = &v.request;
        Row {
            id: r.id.clone(),
            url: request_url(&r.id),
            mailbox: r.mailbox.clone(),
            tenant: r.tenant.clone(),
            requester: r.requester.clone(),
            state: v.state_now.as_str(),
            state_label: v.state_now.label(),
            decided_by: r.decided_by.clone().unwrap_or_else(|| "–".into()),
            expires: r.expires.map(at).unwrap_or_else(|| "–".into()),
            uses: r.uses.len(),
        }
    }
}

#[derive(Template)]
#[template(path = "access.html")]
struct ListPage {
    nav: Option<Nav>,
    csrf: String,
    can_request: bool,
    info: Option<String>,
    error: Option<String>,
    form_mailbox: String,
    form_reason: String,
    form_duration: String,
    rows: Vec<Row>,
}

fn done_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "requested" => "Request recorded. An approver of the mailbox's domain must approve it before anything can be read.",
        "approved" => "Approved. The admin who asked can download the mailbox until the grant ends.",
        "denied" => "Denied. Nothing of the mailbox can be read under this request; its one-time key is deleted.",
        _ => return None,
    })
}

/// `GET /access`.
pub async fn list(
    AxState(state): AxState<AdminState>,
    v: Viewer,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let p = ListPage {
        nav: Some(Nav::of(&v)),
        csrf: v.csrf.clone(),
        can_request: v.role == Role::Admin,
        info: q.get("done").and_then(|c| done_text(c)).map(String::from),
        error: None,
        form_mailbox: q.get("mailbox").cloned().unwrap_or_default(),
        form_reason: String::new(),
        form_duration: "4h".into(),
        rows: Vec::new(),
    };
    show_list(&state, &v, p, StatusCode::OK).await
}

async fn show_list(
    state: &AdminState,
    v: &Viewer,
    mut p: ListPage,
    status: StatusCode,
) -> Response {
    match access::list(state).await {
        Ok(all) => {
            p.rows = all.iter().map(Row::of).collect();
            render(status, &p)
        }
        Err(e) => error_page(Some(Nav::of(v)), &e, "/dashboard"),
    }
}

/// `POST /access`: an admin's request.
pub async fn request(AxState(state): AxState<AdminState>, v: Viewer, f: FormData) -> Response {
    if let Err(e) = v.require_admin().and_then(|()| f.check_csrf(&v)) {
        return error_page(Some(Nav::of(&v)), &e, "/access");
    }
    let out = match parse_duration(f.get("duration")) {
        Ok(secs) => {
            let n = NewRequest {
                mailbox: f.get("mailbox").to_string(),
                reason: f.get("reason").to_string(),
                duration_secs: secs,
            };
            access::request(&state, &v, n).await
        }
        Err(e) => Err(e),
    };
    match out {
        Ok(r) => {
            Redirect::to(&format!("{}?done=requested", request_url(&r.request.id))).into_response()
        }
        Err(e) => {
            let p = ListPage {
                nav: Some(Nav::of(&v)),
                csrf: v.csrf.clone(),
                can_request: true,
                info: None,
                error: Some(page_text(&e.to_string())),
                form_mailbox: f.get("mailbox").to_string(),
                form_reason: f.get("reason").to_string(),
                form_duration: f.get("duration").to_string(),
                rows: Vec::new(),
            };
            show_list(&state, &v, p, e.status()).await
        }
    }
}

#[derive(Template)]
#[template(path = "access_request.html")]
struct RequestPage {
    nav: Option<Nav>,
    csrf: String,
    r: Row,
    info: Option<String>,
    facts: Vec<(&'static str, String)>,
    key_level_text: String,
    can_decide: bool,
    is_requester: bool,
    export_refusal: String,
    uses: Vec<(String, String, String)>,
}

/// Whether `v` may decide requests of `tenant`: an approver scoped to it (the lockbox
/// checks again, and also refuses the requester).
fn approver_of(state: &AdminState, v: &Viewer, tenant: &str) -> bool {
    v.role == Role::Approver
        && state
            .accounts()
            .tenants(&v.name)
            .is_ok_and(|t| t.iter().any(|t| t == tenant))
}

/// What a grant gives, for each key level.
pub fn key_level_text(customer: bool, tenant: &str) -> String {
    if customer {
        format!("{tenant} holds its own key: this service stores its mail but cannot read it. An approval needs {tenant}'s key file; it hands this one mailbox's keys to the grant, and they become unusable when the grant ends.")
    } else {
        format!("{tenant}'s mail is under the volume key, which this service holds: the grant is a recorded permission (this service's downloads need one, and every step is audited), not a key. Give {tenant} its own key to make it cryptographic.")
    }
}

/// `GET /access/{id}`.
pub async fn page(
    AxState(state): AxState<AdminState>,
    v: Viewer,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let nav = Nav::of(&v);
    let a = match access::get(&state, &id).await {
        Ok(a) => a,
        Err(e) => return error_page(Some(nav), &e, "/access"),
    };
    let r = &a.request;
    let mut facts = vec![
        ("Mailbox", r.mailbox.clone()),
        ("Domain", r.tenant.clone()),
        ("Asked by", r.requester.clone()),
        ("Asked at", at(r.requested_at)),
        ("Reason", r.reason.clone()),
        (
            "Grant length",
            mailferry_control::units::human_duration(std::time::Duration::from_secs(
                r.duration_secs,
            )),
        ),
    ];
    if let (Some(by), Some(when)) = (&r.decided_by, r.decided_at) {
        let verb = if r.state == State::Denied {
            "Denied by"
        } else {
            "Approved by"
        };
        facts.push((verb, format!("{by}, {}", at(when))));
    }
    if let Some(e) = r.expires {
        facts.push(("Grant ends", at(e)));
    }
    let export_refusal = match a.state_now {
        State::Pending => "it waits for an approver.".to_string(),
        State::Denied => "it was denied.".to_string(),
        State::Expired => {
            "the grant has expired; request access again if you still need it.".to_string()
        }
        State::Approved => String::new(),
    };
    let p = RequestPage {
        nav: Some(nav),
        csrf: v.csrf.clone(),
        info: q.get("done").and_then(|c| done_text(c)).map(String::from),
        facts,
        key_level_text: key_level_text(r.customer_key(), &r.tenant),
        can_decide: v.name != r.requester && approver_of(&state, &v, &r.tenant),
        is_requester: v.name == r.requester,
        export_refusal,
        uses: r
            .uses
            .iter()
            .map(|u| (at(u.at), u.by.clone(), u.action.clone()))
            .collect(),
        r: Row::of(&a),
    };
    render(StatusCode::OK, &p)
}

#[derive(Template)]
#[template(path = "access_decide.html")]
struct DecidePage {
    nav: Option<Nav>,
    csrf: String,
    title: String,
    verb: &'static str,
    id: String,
    back: String,
    action: String,
    button: &'static str,
    error: Option<String>,
    facts: Vec<String>,
    needs_key: bool,
    tenant: String,
    fingerprint: String,
}

fn decide_page(v: &Viewer, a: &AccessView, approve: bool, error: Option<String>) -> DecidePage {
    let r = &a.request;
    let dur =
        mailferry_control::units::human_duration(std::time::Duration::from_secs(r.duration_secs));
    DecidePage {
        nav: Some(Nav::of(v)),
        csrf: v.csrf.clone(),
        title: format!(
            "{} access to {}?",
            if approve { "Approve" } else { "Deny" },
            r.mailbox
        ),
        verb: if approve { "Approve" } else { "Deny" },
        id: r.id.clone(),
        back: request_url(&r.id),
        action: format!(
            "{}/{}",
            request_url(&r.id),
            if approve { "approve" } else { "deny" }
        ),
        button: if approve {
            "Approve access"
        } else {
            "Deny access"
        },
        error,
        facts: if approve {
            vec![
                format!("{} asked to read {} for {dur}: “{}”.", r.requester, r.mailbox, r.reason),
                format!("If you approve, {} can download the whole mailbox until {dur} from now; every download is recorded.", r.requester),
                key_level_text(r.customer_key(), &r.tenant),
            ]
        } else {
            vec![
                format!("{} asked to read {} for {dur}: “{}”.", r.requester, r.mailbox, r.reason),
                "If you deny, nothing of the mailbox can be read under this request, and its one-time key is deleted.".into(),
            ]
        },
        needs_key: approve && r.customer_key(),
        tenant: r.tenant.clone(),
        fingerprint: r.tenant_fingerprint.clone().unwrap_or_default(),
    }
}

fn verb_of(action: &str) -> Option<bool> {
    match action {
        "approve" => Some(true),
        "deny" => Some(false),
        _ => None,
    }
}

/// `GET /access/{id}/{approve|deny}`: the confirmation.
pub async fn confirm(
    AxState(state): AxState<AdminState>,
    v: Viewer,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let nav = Nav::of(&v);
    let Some(approve) = verb_of(&action) else {
        return error_page(
            Some(nav),
            &AdminError::NotFound(format!("no page {action} for a request")),
            "/access",
        );
    };
    let a = match access::get(&state, &id).await {
        Ok(a) => a,
        Err(e) => return error_page(Some(nav), &e, "/access"),
    };
    // Nobody else gets a form that can only end in a refusal.
    if v.name == a.request.requester || !approver_of(&state, &v, &a.request.tenant) {
        let e = AdminError::Forbidden(format!(
            "Only an approver of {} other than the one who asked decides this request.",
            a.request.tenant
        ));
        return error_page(Some(nav), &e, &request_url(&id));
    }
    if a.state_now != State::Pending {
        let e = AdminError::Conflict(format!(
            "this request is {}: it is decided once",
            a.state_now.label().to_lowercase()
        ));
        return error_page(Some(nav), &e, &request_url(&id));
    }
    render(StatusCode::OK, &decide_page(&v, &a, approve, None))
}

/// `POST /access/{id}/{approve|deny|export}`.
pub async fn act(
    AxState(state): AxState<AdminState>,
    v: Viewer,
    Path((id, action)): Path<(String, String)>,
    mut f: FormData,
) -> Response {
    let back = request_url(&id);
    if let Err(e) = f.check_csrf(&v) {
        return error_page(Some(Nav::of(&v)), &e, &back);
    }
    if action == "export" {
        return match access::export(&state, &v, &id).await {
            Ok(r) => r,
            Err(e) => error_page(Some(Nav::of(&v)), &e, &back),
        };
    }
    let Some(approve) = verb_of(&action) else {
        return error_page(
            Some(Nav::of(&v)),
            &AdminError::NotFound(format!("no action {action} for a request")),
            "/access",
        );
    };
    // The key file's text leaves the form here, zeroized when the decision is done.
    let tenant_key =
        f.0.remove("tenant_key")
            .map(|k| zeroize::Zeroizing::new(k.into_bytes()));
    let input = DecisionInput {
        approve,
        totp: zeroize::Zeroizing::new(f.get("totp").trim().to_string()),
        tenant_key,
    };
    match access::decide(&state, &v, &id, input).await {
        Ok(_) => Redirect::to(&format!(
            "{back}?done={}",
            if approve { "approved" } else { "denied" }
        ))
        .into_response(),
        // A wrong code or key: the form again, with the reason, while it can still be
        // decided by this viewer; anything else is an error page.
        Err(e) => match access::get(&state, &id).await {
            Ok(a)
                if a.state_now == State::Pending
                    && v.name != a.request.requester
                    && approver_of(&state, &v, &a.request.tenant) =>
            {
                let p = decide_page(&v, &a, approve, Some(page_text(&e.to_string())));
                let mut r = render(e.status(), &p);
                if let Some(s) = e.retry_after() {
                    r.headers_mut()
                        .insert(axum::http::header::RETRY_AFTER, s.into());
                }
                r
            }
            _ => error_page(Some(Nav::of(&v)), &e, &back),
        },
    }
}
