//! Logins, server-side sessions and CSRF tokens of the admin service.
//!
//! A login needs the password and a TOTP code ([`super::accounts`]); it creates a session
//! held in memory under the SHA-256 of a random 256-bit id, sent to the browser as the
//! cookie `mf_session` (`Secure; HttpOnly; SameSite=Strict; Path=/`). A session expires
//! when unused for the idle timeout and, used or not, at the absolute timeout.
//!
//! Every session has its own CSRF token. The [`Viewer`] extractor itself refuses a
//! state-changing request (POST, PUT, PATCH, DELETE) that does not carry the token in the
//! `x-csrf-token` header, unless it is a form post outside `/api/` (then the handler
//! calls [`check_csrf`] with the `csrf` form field). Every refusal is audited.
//! [`AdminViewer`] adds the role check, for handlers that change something: session,
//! CSRF and role are all checked before the body is read.
//!
//! An account whose password is still the one-time password of `mailferry admin add`
//! gets a session that can do nothing but change it (or log out): the extractor turns
//! every other page into a redirect to `/account/password` and refuses every other API
//! call with 403 `password_change_required`. [`change_password`] and the TOTP
//! re-enrolment ([`begin_totp`], [`confirm_totp`]) are audited here like logins.
//!
//! This module does not check passwords or codes itself and does not render pages.

use super::role::Role;
use super::{AdminError, AdminState};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Redirect, Response};
use mailferry_core::secret::SecretBytes;
use serde_json::json;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Name of the session cookie.
pub const COOKIE: &str = "mf_session";
/// Header carrying the CSRF token on API requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Form field carrying the CSRF token on HTML forms.
pub const CSRF_FIELD: &str = "csrf";

struct Session {
    name: String,
    role: Role,
    must_change: bool,
    csrf: String,
    created: Instant,
    last_used: Instant,
}

/// Every live session, keyed by the hex SHA-256 of its id.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions([redacted])")
    }
}

fn key_of(id: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, id.as_bytes()))
}

fn random_token() -> String {
    hex::encode(SecretBytes::random(32).expose())
}

/// A logged-in user, extracted from the session cookie.
#[derive(Clone)]
pub struct Viewer {
    /// Account name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The session's CSRF token (put it in forms as the `csrf` field).
    pub csrf: String,
    /// The account still has its one-time password (see the module docs).
    pub must_change_password: bool,
    state: Option<AdminState>,
    request: String,
    session_key: String,
}

impl std::fmt::Debug for Viewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Viewer")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("must_change_password", &self.must_change_password)
            .field("csrf", &"[redacted]")
            .finish()
    }
}

impl Viewer {
    /// `Ok` for an admin; for an auditor or approver a 403, audited.
    pub fn require_admin(&self) -> Result<(), AdminError> {
        if self.role == Role::Admin {
            return Ok(());
        }
        let e = AdminError::Forbidden(match self.role {
            Role::Approver => format!(
                "{} is an approver: approvers decide lockbox requests for their tenants and otherwise read only; ask an admin to do this",
                self.name
            ),
            _ => format!(
                "{} is an auditor: auditors read status, reports and audit logs only; ask an admin to do this",
                self.name
            ),
        });
        self.refuse("forbidden", &e);
        Err(e)
    }

    /// Records a refusal of this viewer's request in the admin audit log.
    pub fn refuse(&self, code: &str, e: &AdminError) {
        if let Some(s) = &self.state {
            s.audit().refusal(
                &self.name,
                "admin.refused",
                json!({"request": self.request, "code": code, "reason": e.to_string()}),
            );
        }
    }

    /// `METHOD /path` of the request this viewer made.
    pub fn request(&self) -> &str {
        &self.request
    }
}

/// Checks the CSRF token of a state-changing request (constant time). A refusal is
/// audited and is a 403.
pub fn check_csrf(viewer: &Viewer, token: Option<&str>) -> Result<(), AdminError> {
    let ok = token.is_some_and(|t| {
        t.len() == viewer.csrf.len()
            && t.bytes()
                .zip(viewer.csrf.bytes())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0
    });
    if ok {
        Ok(())
    } else {
        viewer.refuse("csrf", &AdminError::Csrf);
        Err(AdminError::Csrf)
    }
}

fn is_mutating(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// The session id of the request's cookie.
pub fn cookie_id(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn peer_of(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Why a request has no viewer: a redirect to `/login` for pages, a 401 JSON for the API.
#[derive(Debug)]
pub struct NoViewer {
    api: bool,
    error: AdminError,
}

impl IntoResponse for NoViewer {
    fn into_response(self) -> Response {
        match &self.error {
            _ if self.api => self.error.into_response(),
            AdminError::Unauthenticated(_) => Redirect::to("/login").into_response(),
            AdminError::PasswordChangeRequired { .. } => {
                Redirect::to(PASSWORD_PAGE).into_response()
            }
            _ => self.error.into_response(),
        }
    }
}

/// The page where a one-time password is changed.
pub const PASSWORD_PAGE: &str = "/account/password";

/// What a session with a one-time password may still request: the change itself, who
/// am I, and logging out.
fn allowed_before_change(method: &Method, path: &str) -> bool {
    matches!(
        (method.as_str(), path),
        ("GET" | "POST", PASSWORD_PAGE)
            | ("POST", "/logout")
            | ("GET" | "DELETE", "/api/v1/session")
            | ("POST", "/api/v1/account/password")
    )
}

impl FromRequestParts<AdminState> for Viewer {
    type Rejection = NoViewer;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Viewer, NoViewer> {
        let path = parts.uri.path().to_string();
        let api = path.starts_with("/api/");
        let request = format!("{} {}", parts.method, path);
        let peer = peer_of(parts).map(|p| p.to_string());
        let reject = |error: AdminError| NoViewer { api, error };
        let Some(id) = cookie_id(&parts.headers) else {
            let e = AdminError::Unauthenticated(
                "not logged in: log in with POST /api/v1/session (name, password, totp) and send the mf_session cookie".into(),
            );
            if is_mutating(&parts.method) {
                state.audit().refusal(
                    "-",
                    "admin.refused",
                    json!({"request": request, "code": "unauthenticated", "reason": e.to_string(), "peer": peer}),
                );
            }
            return Err(reject(e));
        };
        let key = key_of(&id);
        let cfg = state.config();
        let now = Instant::now();
        let found = {
            let mut map = state
                .sessions()
                .map
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match map.get_mut(&key) {
                None => Err(None),
                Some(s)
                    if now.duration_since(s.last_used) > cfg.session_idle
                        || now.duration_since(s.created) > cfg.session_absolute =>
                {
                    let name = s.name.clone();
                    map.remove(&key);
                    Err(Some(name))
                }
                Some(s) => {
                    s.last_used = now;
                    Ok((s.name.clone(), s.role, s.csrf.clone(), s.must_change))
                }
            }
        };
        let (name, role, csrf, must_change) = match found {
            Ok(v) => v,
            Err(expired) => {
                let (actor, why) = match &expired {
                    Some(n) => (n.as_str(), "session expired"),
                    None => ("-", "unknown session"),
                };
                let e = AdminError::Unauthenticated(format!(
                    "{why}: log in again (POST /api/v1/session, or the login page)"
                ));
                state.audit().refusal(
                    actor,
                    if expired.is_some() { "admin.session.expired" } else { "admin.refused" },
                    json!({"request": request, "code": "unauthenticated", "reason": e.to_string(), "peer": peer}),
                );
                return Err(reject(e));
            }
        };
        let viewer = Viewer {
            name,
            role,
            csrf,
            must_change_password: must_change,
            state: Some(state.clone()),
            request,
            session_key: key,
        };
        if must_change && !allowed_before_change(&parts.method, &path) {
            let e = AdminError::PasswordChangeRequired {
                name: viewer.name.clone(),
            };
            // A page view is only redirected; a call that would do something is audited.
            if api || is_mutating(&parts.method) {
                viewer.refuse("password_change_required", &e);
            }
            return Err(reject(e));
        }
        if is_mutating(&parts.method) {
            let header = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            // HTML form posts carry the token in the body; their handlers check it.
            if api || header.is_some() {
                check_csrf(&viewer, header).map_err(reject)?;
            }
        }
        Ok(viewer)
    }
}

/// A logged-in admin: the [`Viewer`] extractor (session, then CSRF) followed by the role
/// check, so an auditor is refused (403, audited) before the request body is read. Put
/// it before any body extractor (`Json`, `Form`, `Bytes`) of a state-changing handler:
/// axum runs extractors in argument order, and a body that does not parse must not
/// turn a refusal into a 400/422.
#[derive(Clone, Debug)]
pub struct AdminViewer(pub Viewer);

impl FromRequestParts<AdminState> for AdminViewer {
    type Rejection = NoViewer;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<AdminViewer, NoViewer> {
        let v = Viewer::from_request_parts(parts, state).await?;
        v.require_admin().map_err(|error| NoViewer {
            api: parts.uri.path().starts_with("/api/"),
            error,
        })?;
        Ok(AdminViewer(v))
    }
}

fn set_cookie(id: &str, max_age: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    ))
    .expect("cookie is ASCII")
}

/// Logs `name` in with `password` and a TOTP `code`. Every outcome is audited. Returns
/// the `Set-Cookie` value to send and the new viewer.
pub async fn login(
    state: &AdminState,
    name: &str,
    password: &str,
    totp: &str,
    peer: Option<IpAddr>,
) -> Result<(HeaderValue, Viewer), AdminError> {
    use super::accounts::Refusal;
    let cfg = state.config().clone();
    let peer_s = peer.map(|p| p.to_string());
    if name.is_empty() || password.is_empty() || totp.is_empty() {
        let e = AdminError::invalid("name, password and totp are all required");
        state.audit().refusal(
            if name.is_empty() { "-" } else { name },
            "admin.login.refused",
            json!({"reason": "incomplete", "peer": peer_s}),
        );
        return Err(e);
    }
    let outcome = {
        let (st, n, p, t) = (
            state.clone(),
            name.to_string(),
            zeroize::Zeroizing::new(password.to_string()),
            zeroize::Zeroizing::new(totp.to_string()),
        );
        tokio::task::spawn_blocking(move || {
            st.accounts().check_login(
                &n,
                &p,
                &t,
                mailferry_core::unix_now(),
                cfg.max_failures,
                cfg.lockout,
            )
        })
        .await
        .map_err(|e| AdminError::Internal(format!("login check failed: {e}")))?
    }?;
    let ok = match outcome {
        Ok(ok) => ok,
        Err(r) => {
            state.audit().refusal(
                name,
                "admin.login.refused",
                json!({
                    "reason": r.reason.as_str(),
                    "locked_for_seconds": r.locked_for.map(|d| d.as_secs()),
                    "peer": peer_s,
                }),
            );
            return Err(match (r.reason, r.locked_for) {
                (Refusal::Locked, Some(d)) => AdminError::Locked {
                    name: name.to_string(),
                    retry_after: d,
                },
                _ => AdminError::BadLogin,
            });
        }
    };
    let id = random_token();
    let csrf = random_token();
    let key = key_of(&id);
    let now = Instant::now();
    state
        .sessions()
        .map
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            key.clone(),
            Session {
                name: name.to_string(),
                role: ok.role,
                must_change: ok.must_change_password,
                csrf: csrf.clone(),
                created: now,
                last_used: now,
            },
        );
    state.audit().record(
        name,
        "admin.login",
        json!({"role": ok.role.as_str(), "must_change_password": ok.must_change_password, "peer": peer_s}),
    )?;
    Ok((
        set_cookie(&id, cfg.session_absolute.as_secs()),
        Viewer {
            name: name.to_string(),
            role: ok.role,
            csrf,
            must_change_password: ok.must_change_password,
            state: Some(state.clone()),
            request: "POST login".into(),
            session_key: key,
        },
    ))
}

/// Ends the viewer's session (audited). Returns the `Set-Cookie` value that clears the
/// cookie.
pub fn logout(state: &AdminState, viewer: &Viewer) -> Result<HeaderValue, AdminError> {
    state
        .sessions()
        .map
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&viewer.session_key);
    state
        .audit()
        .record(&viewer.name, "admin.logout", json!({}))?;
    Ok(set_cookie("", 0))
}

// === Password change and TOTP re-enrolment ===

/// A new password as a form or the API gives it.
#[derive(Debug)]
pub struct PasswordChange<'a> {
    /// The current password (the one-time password at the first change).
    pub current: &'a str,
    /// A fresh TOTP code; required unless this is the forced first change.
    pub totp: Option<&'a str>,
    /// The new password.
    pub new: &'a str,
    /// The new password again.
    pub confirm: &'a str,
}

fn limits(state: &AdminState) -> super::accounts::Limits {
    let cfg = state.config();
    super::accounts::Limits {
        now: mailferry_core::unix_now(),
        max_failures: cfg.max_failures,
        lockout: cfg.lockout,
    }
}

/// What a refused password or code check becomes: audited under `event`, then a 403
/// that does not say which secret was wrong (429 when locked, 422 for a wrong code of
/// the new authenticator entry).
fn refused(state: &AdminState, v: &Viewer, event: &str, r: super::accounts::Refused) -> AdminError {
    use super::accounts::Refusal;
    state.audit().refusal(
        &v.name,
        event,
        json!({
            "reason": r.reason.as_str(),
            "locked_for_seconds": r.locked_for.map(|d| d.as_secs()),
        }),
    );
    match (r.reason, r.locked_for) {
        (_, Some(d)) => AdminError::Locked {
            name: v.name.clone(),
            retry_after: d,
        },
        (Refusal::NoEnrolment, None) => AdminError::Conflict(
            "no new authenticator is waiting for a code: start again with your password and current code".into(),
        ),
        (Refusal::BadTotp | Refusal::ReusedTotp, None) if event == "admin.totp.refused" => {
            AdminError::invalid(
                "that code is not valid for the new authenticator entry: type the code it shows now (each code works once)",
            )
        }
        _ => AdminError::Forbidden(
            "refused: wrong current password or authenticator code (use a fresh code: each works once)".into(),
        ),
    }
}

/// Changes the viewer's password: the new one is checked first, then the current
/// password and (except for the forced first change) a fresh TOTP code. On success the
/// session may do everything its role allows, every other session of the account is
/// ended, and `admin.password.changed` is recorded; a refusal is recorded as
/// `admin.password.refused`.
pub async fn change_password(
    state: &AdminState,
    v: &Viewer,
    c: PasswordChange<'_>,
) -> Result<(), AdminError> {
    let forced = v.must_change_password;
    let code = match (forced, c.totp.map(str::trim).filter(|t| !t.is_empty())) {
        (true, _) => None,
        (false, Some(t)) => Some(t.to_string()),
        (false, None) => {
            return Err(AdminError::invalid(
                "give the code your authenticator app shows now, with your current password",
            ))
        }
    };
    if let Err(m) = super::accounts::check_new_password(c.new, c.confirm, c.current) {
        state.audit().refusal(
            &v.name,
            "admin.password.refused",
            json!({"reason": "weak_or_mismatched"}),
        );
        return Err(AdminError::invalid(m));
    }
    let (st, name, l) = (state.clone(), v.name.clone(), limits(state));
    let (cur, new) = (
        zeroize::Zeroizing::new(c.current.to_string()),
        zeroize::Zeroizing::new(c.new.to_string()),
    );
    let out = tokio::task::spawn_blocking(move || {
        st.accounts()
            .change_password(&name, &cur, code.as_deref(), &new, &l)
    })
    .await
    .map_err(|e| AdminError::Internal(format!("password change failed: {e}")))??;
    if let Err(r) = out {
        return Err(refused(state, v, "admin.password.refused", r));
    }
    let ended = {
        let mut map = state
            .sessions()
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let before = map.len();
        map.retain(|k, s| s.name != v.name || *k == v.session_key);
        if let Some(s) = map.get_mut(&v.session_key) {
            s.must_change = false;
        }
        before - map.len()
    };
    state.audit().record(
        &v.name,
        "admin.password.changed",
        json!({"first_login": forced, "other_sessions_ended": ended}),
    )?;
    Ok(())
}

/// Starts a TOTP re-enrolment (current password and code checked): returns the new
/// secret's `otpauth://` URI, to be shown once. Recorded as `admin.totp.started`.
pub async fn begin_totp(
    state: &AdminState,
    v: &Viewer,
    current: &str,
    code: &str,
) -> Result<super::accounts::Secret, AdminError> {
    if current.is_empty() || code.trim().is_empty() {
        return Err(AdminError::invalid(
            "give your current password and the code your authenticator app shows now",
        ));
    }
    let (st, name, l) = (state.clone(), v.name.clone(), limits(state));
    let (cur, code) = (
        zeroize::Zeroizing::new(current.to_string()),
        zeroize::Zeroizing::new(code.trim().to_string()),
    );
    let out = tokio::task::spawn_blocking(move || st.accounts().begin_totp(&name, &cur, &code, &l))
        .await
        .map_err(|e| AdminError::Internal(format!("authenticator change failed: {e}")))??;
    match out {
        Ok(uri) => {
            state
                .audit()
                .record(&v.name, "admin.totp.started", json!({}))?;
            Ok(uri)
        }
        Err(r) => Err(refused(state, v, "admin.password.refused", r)),
    }
}

/// Puts the new TOTP secret in force once `code` is valid for it. Recorded as
/// `admin.totp.enrolled`, a refusal as `admin.totp.refused`.
pub async fn confirm_totp(state: &AdminState, v: &Viewer, code: &str) -> Result<(), AdminError> {
    let (st, name, l) = (state.clone(), v.name.clone(), limits(state));
    let code = zeroize::Zeroizing::new(code.trim().to_string());
    let out = tokio::task::spawn_blocking(move || st.accounts().confirm_totp(&name, &code, &l))
        .await
        .map_err(|e| AdminError::Internal(format!("authenticator change failed: {e}")))??;
    match out {
        Ok(()) => {
            state
                .audit()
                .record(&v.name, "admin.totp.enrolled", json!({}))?;
            Ok(())
        }
        Err(r) => Err(refused(state, v, "admin.totp.refused", r)),
    }
}
