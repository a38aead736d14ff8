//! The REST API under `/api/v1` (and `/healthz`): JSON in, JSON out, errors in the
//! stable shape of [`super::error`]. Documented in [`super::openapi`]; a test keeps the
//! two in step ([`ROUTES`] is the list both are checked against).
//!
//! Handlers only translate HTTP to [`super::actions`]: auditing and the work live there;
//! login, CSRF and roles in [`super::session`]. Every state-changing handler takes an
//! [`AdminViewer`] before its body, so session, CSRF token and role are checked (and a
//! refusal audited) before the body is parsed: an auditor gets 403, never a 400/422
//! about a body it may not send. No HTML here ([`super::pages`]).

use super::accounts::Secret;
use super::actions::{self, access, NewBatchRequest, NewEndpoint};
use super::lockbox::NewRequest;
use super::session::{self, AdminViewer, Viewer};
use super::{AdminError, AdminState};
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;

/// Every route of the API: (method, path) as the router and OpenAPI name them.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/api/v1/health"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/session"),
    ("post", "/api/v1/session"),
    ("delete", "/api/v1/session"),
    ("post", "/api/v1/account/password"),
    ("get", "/api/v1/endpoints"),
    ("post", "/api/v1/endpoints"),
    ("post", "/api/v1/endpoints/{name}/test"),
    ("get", "/api/v1/batches"),
    ("post", "/api/v1/batches"),
    ("get", "/api/v1/batches/{name}"),
    ("post", "/api/v1/batches/{name}/start"),
    ("post", "/api/v1/batches/{name}/suspend"),
    ("post", "/api/v1/batches/{name}/resume"),
    ("post", "/api/v1/batches/{name}/complete"),
    ("get", "/api/v1/batches/{name}/moves/{mailbox}"),
    (
        "post",
        "/api/v1/batches/{name}/moves/{mailbox}/approve-skipped",
    ),
    ("get", "/api/v1/batches/{name}/moves/{mailbox}/report"),
    ("get", "/api/v1/batches/{name}/moves/{mailbox}/audit/verify"),
    (
        "get",
        "/api/v1/batches/{name}/moves/{mailbox}/audit/reconcile",
    ),
    ("get", "/api/v1/audit/admin"),
    ("get", "/api/v1/audit/admin/verify"),
    ("get", "/api/v1/access"),
    ("post", "/api/v1/access"),
    ("get", "/api/v1/access/{id}"),
    ("post", "/api/v1/access/{id}/approve"),
    ("post", "/api/v1/access/{id}/deny"),
    ("post", "/api/v1/access/{id}/export"),
];

/// A JSON body whose parse errors are our 400/422 with a clear message.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = AdminError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, AdminError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(JsonRejection::JsonDataError(e)) => Err(AdminError::invalid(format!(
                "request body: {}; see /api/v1/openapi.json for the fields",
                e.body_text()
            ))),
            Err(e) => Err(AdminError::BadRequest(format!(
                "request body: {}; send JSON with Content-Type: application/json",
                e.body_text()
            ))),
        }
    }
}

/// The API routes, to be merged with the pages and given the state.
pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/healthz", get(health))
        .route("/api/v1/health", get(health))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/session", get(whoami).post(login).delete(logout))
        .route("/api/v1/account/password", post(change_password))
        .route(
            "/api/v1/endpoints",
            get(list_endpoints).post(create_endpoint),
        )
        .route("/api/v1/endpoints/{name}/test", post(test_endpoint))
        .route("/api/v1/batches", get(list_batches).post(create_batch))
        .route("/api/v1/batches/{name}", get(get_batch))
        .route("/api/v1/batches/{name}/start", post(start_batch))
        .route("/api/v1/batches/{name}/suspend", post(suspend_batch))
        .route("/api/v1/batches/{name}/resume", post(resume_batch))
        .route("/api/v1/batches/{name}/complete", post(complete_batch))
        .route("/api/v1/batches/{name}/moves/{mailbox}", get(move_status))
        .route(
            "/api/v1/batches/{name}/moves/{mailbox}/approve-skipped",
            post(approve_skipped),
        )
        .route(
            "/api/v1/batches/{name}/moves/{mailbox}/report",
            get(move_report),
        )
        .route(
            "/api/v1/batches/{name}/moves/{mailbox}/audit/verify",
            get(audit_verify),
        )
        .route(
            "/api/v1/batches/{name}/moves/{mailbox}/audit/reconcile",
            get(reconcile),
        )
        .route("/api/v1/audit/admin", get(admin_audit))
        .route("/api/v1/audit/admin/verify", get(admin_audit_verify))
        .route("/api/v1/access", get(list_access).post(request_access))
        .route("/api/v1/access/{id}", get(get_access))
        .route("/api/v1/access/{id}/approve", post(approve_access))
        .route("/api/v1/access/{id}/deny", post(deny_access))
        .route("/api/v1/access/{id}/export", post(export_access))
        .fallback(not_found)
}

type ApiResult = Result<Response, AdminError>;

/// An optional JSON body: empty is the default.
fn optional_json<T: serde::de::DeserializeOwned + Default>(b: &[u8]) -> Result<T, AdminError> {
    if b.iter().all(|c| c.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    serde_json::from_slice(b).map_err(|e| {
        AdminError::invalid(format!(
            "request body: {e}; see /api/v1/openapi.json for the fields"
        ))
    })
}

fn ok<T: serde::Serialize>(v: T) -> ApiResult {
    with_status(StatusCode::OK, v)
}

/// `v` as JSON with `status` (201 for a creation, 202 for a run started in the background).
fn with_status<T: serde::Serialize>(status: StatusCode, v: T) -> ApiResult {
    Ok((status, axum::Json(v)).into_response())
}

async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        AdminError::NotFound(format!(
            "no route {}; see /api/v1/openapi.json for the API",
            uri.path()
        ))
        .into_response()
    } else {
        (StatusCode::NOT_FOUND, "not found\n").into_response()
    }
}

async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::document().to_string(),
    )
        .into_response()
}

// === Session ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    name: String,
    password: Secret,
    totp: Secret,
}

fn viewer_json(v: &Viewer) -> serde_json::Value {
    json!({"name": v.name, "role": v.role, "csrf": v.csrf, "must_change_password": v.must_change_password})
}

async fn login(
    State(st): State<AdminState>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    Body(req): Body<LoginRequest>,
) -> ApiResult {
    let (cookie, v) = session::login(
        &st,
        &req.name,
        req.password.expose(),
        req.totp.expose(),
        peer.map(|p| p.0 .0.ip()),
    )
    .await?;
    let mut r = axum::Json(viewer_json(&v)).into_response();
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(r)
}

async fn whoami(v: Viewer) -> ApiResult {
    ok(viewer_json(&v))
}

async fn logout(State(st): State<AdminState>, v: Viewer) -> ApiResult {
    let cookie = session::logout(&st, &v)?;
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(r)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordRequest {
    current_password: Secret,
    new_password: Secret,
    #[serde(default)]
    totp: Option<Secret>,
}

/// The new password is given once: an API client has no typing to double-check.
async fn change_password(
    State(st): State<AdminState>,
    v: Viewer,
    Body(req): Body<PasswordRequest>,
) -> ApiResult {
    session::change_password(
        &st,
        &v,
        session::PasswordChange {
            current: req.current_password.expose(),
            totp: req.totp.as_ref().map(Secret::expose),
            new: req.new_password.expose(),
            confirm: req.new_password.expose(),
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// === Endpoints ===

async fn list_endpoints(State(st): State<AdminState>, _v: Viewer) -> ApiResult {
    ok(actions::list_endpoints(&st)?)
}

async fn create_endpoint(
    State(st): State<AdminState>,
    AdminViewer(v): AdminViewer,
    Body(n): Body<NewEndpoint>,
) -> ApiResult {
    let e = actions::create_endpoint(&st, &v, &n)?;
    with_status(StatusCode::CREATED, e)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    #[serde(default)]
    user: Option<String>,
}

async fn test_endpoint(
    State(st): State<AdminState>,
    AdminViewer(v): AdminViewer,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let user = optional_json::<TestRequest>(&body)?.user;
    ok(actions::test_endpoint(&st, &v, &name, user.as_deref()).await?)
}

// === Batches ===

async fn list_batches(State(st): State<AdminState>, _v: Viewer) -> ApiResult {
    ok(actions::list_batches(&st).await?)
}

async fn create_batch(
    State(st): State<AdminState>,
    AdminViewer(v): AdminViewer,
    Body(req): Body<NewBatchRequest>,
) -> ApiResult {
    let b = actions::create_batch(&st, &v, req).await?;
    with_status(StatusCode::CREATED, b)
}

async fn get_batch(
    State(st): State<AdminState>,
    _v: Viewer,
    Path(name): Path<String>,
) -> ApiResult {
    ok(actions::batch_status(&st, &name).await?)
}

async fn start_batch(
    State(st): State<AdminState>,
    AdminViewer(v): AdminViewer,
    Path(name): Path<String>,
) -> ApiResult {
    with_status(
        StatusCode::ACCEPTED,
        actions::start_batch(&st, &v, &name).await?,
    )
}

async fn suspend_batch(
    State(st): State<AdminState>,
    AdminViewer(v): AdminViewer,
    Path(name): Path<String>,
) -> ApiResult {
    ok(actions::suspend_batch(&st, &v, &name).await?)
}

async fn resume_batch(
    State(st): State<AdminState>,
    AdminViewer(v): AdminViewer,
    Path(name): Path<String>,
) -> ApiResult {
    ok(actions::resume_batch(&st, &v, &name).await?)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CompleteRequest {
    #[serde(default)]
    approve_skipped: bool,
}

async fn complete_batch(
    State(st): State<AdminState>,
    AdminViewer(v): AdminViewer,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let approve = optional_json::<CompleteRequest>(&body)?.approve_skipped;
    with_status(
        StatusCode::ACCEPTED,
        actions::complete_batch(&st, &v, &name, approve).await?,
    )
}

// === Moves ===

async fn move_status(
    State(st): State<AdminState>,
    _v: Viewer,
    Path((name, mailbox)): Path<(String, String)>,
) -> ApiResult {
    ok(actions::move_status(&st, &name, &mailbox).await?)
}

async fn approve_skipped(
    State(st): State<AdminState>,
    AdminViewer(v): AdminViewer,
    Path((name, mailbox)): Path<(String, String)>,
) -> ApiResult {
    with_status(
        StatusCode::ACCEPTED,
        actions::approve_skipped(&st, &v, &name, &mailbox).await?,
    )
}

async fn move_report(
    State(st): State<AdminState>,
    _v: Viewer,
    Path((name, mailbox)): Path<(String, String)>,
) -> ApiResult {
    ok(actions::move_report(&st, &name, &mailbox).await?)
}

async fn audit_verify(
    State(st): State<AdminState>,
    _v: Viewer,
    Path((name, mailbox)): Path<(String, String)>,
) -> ApiResult {
    ok(actions::audit_verify(&st, &name, &mailbox).await?)
}

async fn reconcile(
    State(st): State<AdminState>,
    _v: Viewer,
    Path((name, mailbox)): Path<(String, String)>,
) -> ApiResult {
    ok(actions::reconcile(&st, &name, &mailbox).await?)
}

// === Admin audit log ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    #[serde(default)]
    limit: Option<usize>,
}

async fn admin_audit(
    State(st): State<AdminState>,
    _v: Viewer,
    q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(|e| AdminError::invalid(format!("query: {}", e.body_text())))?;
    ok(actions::admin_audit_log(&st, q.limit.unwrap_or(1000)).await?)
}

async fn admin_audit_verify(State(st): State<AdminState>, _v: Viewer) -> ApiResult {
    ok(actions::admin_audit_verify(&st).await?)
}

// === Lockbox ===

async fn list_access(State(st): State<AdminState>, _v: Viewer) -> ApiResult {
    ok(access::list(&st).await?)
}

async fn get_access(State(st): State<AdminState>, _v: Viewer, Path(id): Path<String>) -> ApiResult {
    ok(access::get(&st, &id).await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessRequestBody {
    mailbox: String,
    reason: String,
    /// `4h`, `30min`, `20s`.
    duration: String,
}

/// Admins only (refused before the body is read, like every other change).
async fn request_access(
    State(st): State<AdminState>,
    AdminViewer(v): AdminViewer,
    Body(b): Body<AccessRequestBody>,
) -> ApiResult {
    let n = NewRequest {
        mailbox: b.mailbox,
        reason: b.reason,
        duration_secs: crate::lockbox::parse_duration(&b.duration)?,
    };
    with_status(StatusCode::CREATED, access::request(&st, &v, n).await?)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    totp: Option<Secret>,
    /// The tenant key file's content, for a customer-key tenant's approval.
    #[serde(default)]
    tenant_key: Option<Secret>,
}

/// Approvers of the mailbox's tenant, checked by the lockbox (which records a refusal
/// in both audit logs); so the viewer's role is not checked here.
async fn decide(st: AdminState, v: Viewer, id: String, approve: bool, body: &[u8]) -> ApiResult {
    let b: DecisionBody = optional_json(body)?;
    let input = access::DecisionInput {
        approve,
        totp: zeroize::Zeroizing::new(
            b.totp
                .as_ref()
                .map(|t| t.expose().to_string())
                .unwrap_or_default(),
        ),
        tenant_key: b
            .tenant_key
            .as_ref()
            .map(|k| zeroize::Zeroizing::new(k.expose().as_bytes().to_vec())),
    };
    ok(access::decide(&st, &v, &id, input).await?)
}

async fn approve_access(
    State(st): State<AdminState>,
    v: Viewer,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    decide(st, v, id, true, &body).await
}

async fn deny_access(
    State(st): State<AdminState>,
    v: Viewer,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    decide(st, v, id, false, &body).await
}

/// The grant's requester, during the grant: the mailbox as a Maildir tar.
async fn export_access(
    State(st): State<AdminState>,
    v: Viewer,
    Path(id): Path<String>,
) -> ApiResult {
    access::export(&st, &v, &id).await
}
