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
    state: Option<AdminState>,
    request: String,
    session_key: String,
}

impl std::fmt::Debug for Viewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Viewer")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("csrf", &"[redacted]")
            .finish()
    }
}

impl Viewer {
    /// `Ok` for an admin; for an auditor a 403, audited.
    pub fn require_admin(&self) -> Result<(), AdminError> {
        if self.role == Role::Admin {
            return Ok(());
        }
        let e = AdminError::Forbidden(format!(
            "{} is an auditor: auditors read status, reports and audit logs only; ask an admin to do this",
            self.name
        ));
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
        if self.api || !matches!(self.error, AdminError::Unauthenticated(_)) {
            self.error.into_response()
        } else {
            Redirect::to("/login").into_response()
        }
    }
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
                    Ok((s.name.clone(), s.role, s.csrf.clone()))
                }
            }
        };
        let (name, role, csrf) = match found {
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
            state: Some(state.clone()),
            request,
            session_key: key,
        };
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
    let role = match outcome {
        Ok(role) => role,
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
                role,
                csrf: csrf.clone(),
                created: now,
                last_used: now,
            },
        );
    state.audit().record(
        name,
        "admin.login",
        json!({"role": role.as_str(), "peer": peer_s}),
    )?;
    Ok((
        set_cookie(&id, cfg.session_absolute.as_secs()),
        Viewer {
            name: name.to_string(),
            role,
            csrf,
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
