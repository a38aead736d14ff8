//! Server-rendered admin pages: the login form, the new-migration-batch wizard
//! ([`wizard`]), the dashboard of batches and moves with live progress
//! ([`dashboard`], with the confirmation steps), a page per batch ([`batch`]) and per
//! mailbox ([`mailbox`], with the move record's parts from [`report`]), the audit page
//! ([`audit`]), the lockbox's requests and grants ([`access`]) and the account page (password change, authenticator re-enrolment:
//! [`account`]); the pieces they share are in [`view`].
//!
//! Every form is a plain POST that works without JavaScript and carries the session's
//! CSRF token in the `csrf` field; the only script (`/static/live.js`, vendored and
//! served from the binary) refreshes the dashboard's progress every 2 s. Templates are
//! askama's, compiled into the binary, and escape everything they insert. Pages never
//! change anything themselves: they call [`super::actions`], which checks the role and
//! writes the admin audit log, exactly as the REST API does. Errors become readable
//! HTML pages (or inline messages), never JSON.

pub mod access;
pub mod account;
pub mod audit;
pub mod batch;
pub mod dashboard;
pub mod mailbox;
pub mod report;
pub mod view;
pub mod wizard;

#[cfg(test)]
mod tests;

use super::role::Role;
use super::session::{self, Viewer};
use super::{AdminError, AdminState};
use askama::Template;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use std::collections::HashMap;

/// The HTML routes of the admin service, merged into `admin::router()`.
pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard") }))
        .route("/login", get(login_form).post(login_submit))
        .route("/logout", post(logout))
        .route("/wizard", get(wizard_start).post(wizard_submit))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/live", get(dashboard::live))
        .route("/ui/batches/{name}", get(batch::page))
        .route("/ui/batches/{name}/report.csv", get(batch::report_csv_file))
        .route(
            "/ui/batches/{name}/report.html",
            get(batch::report_html_file),
        )
        .route(
            "/ui/batches/{name}/{action}",
            get(dashboard::confirm_batch).post(dashboard::batch_action),
        )
        .route("/ui/moves/{batch}/{mailbox}", get(mailbox::page))
        .route(
            "/ui/moves/{batch}/{mailbox}/approve",
            get(dashboard::confirm_approve).post(dashboard::approve),
        )
        .route("/ui/moves/{batch}/{mailbox}/report", get(mailbox::page))
        .route(
            "/ui/moves/{batch}/{mailbox}/report.html",
            get(report::standalone),
        )
        .route("/account", get(account::page))
        .route(
            "/account/password",
            get(account::password_page).post(account::change_password),
        )
        .route("/account/totp", post(account::begin_totp))
        .route("/account/totp/confirm", post(account::confirm_totp))
        .route("/audit", get(audit::page))
        .route("/access", get(access::list).post(access::request))
        .route("/access/{id}", get(access::page))
        .route(
            "/access/{id}/{action}",
            get(access::confirm).post(access::act),
        )
        .route("/static/app.css", get(css))
        .route("/static/live.js", get(js))
        .layer(axum::middleware::from_fn(page_headers))
}

// === shared pieces ===

/// The header's user block, and what the templates need to know of the viewer.
#[derive(Clone, Debug)]
pub struct Nav {
    /// Account name.
    pub name: String,
    /// `admin` or `auditor`.
    pub role: String,
    /// The session's CSRF token.
    pub csrf: String,
    /// Whether the viewer may change things (the server checks again on every POST).
    pub admin: bool,
    /// The account still has its one-time password: the header links nowhere else.
    pub must_change: bool,
}

impl Nav {
    /// What the pages show of `v`.
    pub fn of(v: &Viewer) -> Nav {
        Nav {
            name: v.name.clone(),
            role: v.role.as_str().to_string(),
            csrf: v.csrf.clone(),
            admin: v.role == Role::Admin,
            must_change: v.must_change_password,
        }
    }
}

/// Content-Security-Policy of the pages: only our own script and stylesheet, no inline
/// script or style, no framing, forms post only to us.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Security headers of the pages, on top of the service-wide ones (no-store, nosniff,
/// X-Frame-Options, HSTS). A handler may set its own CSP (the standalone report does).
async fn page_headers(req: Request, next: axum::middleware::Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(CSP));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    r
}

/// Renders `t` as an HTML response.
pub fn render<T: Template>(status: StatusCode, t: &T) -> Response {
    match t.render() {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!("admin page template: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error: a page failed to render",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: Option<Nav>,
    title: &'static str,
    message: String,
    back: String,
}

/// An [`AdminError`] as a readable page with the error's own status.
pub fn error_page(nav: Option<Nav>, e: &AdminError, back: &str) -> Response {
    let title = match e.status() {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::CONFLICT => "Not possible right now",
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => "Check your input",
        StatusCode::UNAUTHORIZED => "Please log in",
        StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
        _ => "Something went wrong",
    };
    let mut r = render(
        e.status(),
        &ErrorPage {
            nav,
            title,
            // A control-plane error may carry advice for the command line or the API.
            message: view::page_text(&e.to_string()),
            back: back.to_string(),
        },
    );
    if let Some(s) = e.retry_after() {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

/// A submitted form's fields: `application/x-www-form-urlencoded` or
/// `multipart/form-data` (the CSV upload), the last value of a repeated name winning.
#[derive(Debug, Default)]
pub struct FormData(pub HashMap<String, String>);

impl FromRequest<AdminState> for FormData {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AdminState) -> Result<FormData, Response> {
        let bad = |m: String| error_page(None, &AdminError::BadRequest(m), "/dashboard");
        let multipart = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("multipart/form-data"));
        let mut out = HashMap::new();
        if multipart {
            let mut m = axum::extract::Multipart::from_request(req, state)
                .await
                .map_err(|e| bad(format!("the form could not be read: {e}")))?;
            while let Some(field) = m
                .next_field()
                .await
                .map_err(|e| bad(format!("the form could not be read: {e}")))?
            {
                let name = field.name().unwrap_or_default().to_string();
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| bad(format!("the upload could not be read: {e}")))?;
                let text = String::from_utf8(bytes.to_vec())
                    .map_err(|_| bad(format!("field {name}: the file is not UTF-8 text")))?;
                out.insert(name, text);
            }
        } else {
            let axum::Form(pairs) = axum::Form::<Vec<(String, String)>>::from_request(req, state)
                .await
                .map_err(|e| bad(format!("the form could not be read: {e}")))?;
            out.extend(pairs);
        }
        Ok(FormData(out))
    }
}

impl FormData {
    /// A field, or "".
    pub fn get(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or("")
    }

    /// Checks the `csrf` field against the viewer's session (a refusal is audited).
    pub fn check_csrf(&self, v: &Viewer) -> Result<(), AdminError> {
        session::check_csrf(v, self.0.get(session::CSRF_FIELD).map(String::as_str))
    }
}

/// The redirect to the dashboard after a successful POST (303: the browser GETs it),
/// naming what was done by a code from [`dashboard::flash`]: the query never carries
/// free text, so a crafted link cannot put words of its own into the success banner.
pub fn done(code: &str, subject: &str) -> Response {
    Redirect::to(&format!(
        "/dashboard?done={}&what={}",
        url_component(code),
        url_component(subject)
    ))
    .into_response()
}

/// Percent-encodes `s` for a URL path segment or query value.
pub fn url_component(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, COMPONENT).to_string()
}

const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'@');

// === static assets (vendored, in the binary) ===

async fn css() -> Response {
    static_asset("text/css; charset=utf-8", include_str!("static/app.css"))
}

async fn js() -> Response {
    static_asset(
        "text/javascript; charset=utf-8",
        include_str!("static/live.js"),
    )
}

fn static_asset(ty: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ty),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

// === login and logout ===

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: Option<Nav>,
    name: String,
    error: Option<String>,
    message: Option<String>,
}

async fn login_form(Query(q): Query<HashMap<String, String>>) -> Response {
    let message = q
        .contains_key("bye")
        .then(|| "You are logged out.".to_string());
    render(
        StatusCode::OK,
        &LoginPage {
            nav: None,
            name: String::new(),
            error: None,
            message,
        },
    )
}

async fn login_submit(State(state): State<AdminState>, req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let f = match FormData::from_request(req, &state).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let name = f.get("name").trim().to_string();
    match session::login(&state, &name, f.get("password"), f.get("totp").trim(), peer).await {
        Ok((cookie, _viewer)) => {
            let mut r = Redirect::to("/dashboard").into_response();
            r.headers_mut().insert(header::SET_COOKIE, cookie);
            r
        }
        Err(e) => {
            let mut r = render(
                e.status(),
                &LoginPage {
                    nav: None,
                    name,
                    error: Some(e.to_string()),
                    message: None,
                },
            );
            if let Some(s) = e.retry_after() {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(s));
            }
            r
        }
    }
}

async fn logout(State(state): State<AdminState>, v: Viewer, f: FormData) -> Response {
    let done = f.check_csrf(&v).and_then(|()| session::logout(&state, &v));
    match done {
        Ok(cookie) => {
            let mut r = Redirect::to("/login?bye=1").into_response();
            r.headers_mut().insert(header::SET_COOKIE, cookie);
            r
        }
        Err(e) => error_page(Some(Nav::of(&v)), &e, "/dashboard"),
    }
}

// === the wizard ===

async fn wizard_start(v: Viewer) -> Response {
    let nav = Nav::of(&v);
    // Auditors get no way into writing at all, not a wizard that ends in a refusal.
    if let Err(e) = v.require_admin() {
        return error_page(Some(nav), &e, "/dashboard");
    }
    render(
        StatusCode::OK,
        &wizard::WizardPage::new(&nav, 1, wizard::Draft::new()),
    )
}

async fn wizard_submit(State(state): State<AdminState>, v: Viewer, f: FormData) -> Response {
    if let Err(e) = v.require_admin().and_then(|()| f.check_csrf(&v)) {
        return error_page(Some(Nav::of(&v)), &e, "/wizard");
    }
    wizard::submit(&state, &v, &f).await
}
