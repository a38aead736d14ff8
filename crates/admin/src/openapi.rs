//! The OpenAPI 3.1 document of the admin API, served at `/api/v1/openapi.json`.
//!
//! Kept by hand (no code generation, nothing downloaded at build time): [`OPS`] lists
//! every operation once; tests check that its paths are exactly the router's
//! ([`super::api::ROUTES`]) and that every one of those is really routed. It documents
//! the JSON API only, not the HTML pages.

use serde_json::{json, Map, Value};

/// One documented operation: method, path, summary, tag, request body schema (a
/// component name), success status, and whether it changes something (CSRF, admin).
pub struct Op {
    /// `get`, `post`, `delete`.
    pub method: &'static str,
    /// The path, with `{param}`s.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// Group.
    pub tag: &'static str,
    /// Request body component, if any.
    pub body: Option<&'static str>,
    /// Success status.
    pub ok: u16,
    /// Needs a session (everything but health, the document and login).
    pub auth: bool,
}

const fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    tag: &'static str,
    body: Option<&'static str>,
    ok: u16,
    auth: bool,
) -> Op {
    Op {
        method,
        path,
        summary,
        tag,
        body,
        ok,
        auth,
    }
}

/// A read that needs a session: `GET`, no body, 200.
const fn read(path: &'static str, summary: &'static str, tag: &'static str) -> Op {
    op("get", path, summary, tag, None, 200, true)
}

/// A service document anyone may read (no login): `GET`, 200.
const fn public(path: &'static str, summary: &'static str) -> Op {
    op("get", path, summary, "service", None, 200, false)
}

/// A `POST` that changes something (session, CSRF, admin role).
const fn change(
    path: &'static str,
    summary: &'static str,
    tag: &'static str,
    body: Option<&'static str>,
    ok: u16,
) -> Op {
    op("post", path, summary, tag, body, ok, true)
}

/// Every operation of the API.
// One operation a line: a table reads better than rustfmt's one argument a line.
#[rustfmt::skip]
pub const OPS: &[Op] = &[
    public("/healthz", "Liveness (no login)"),
    public("/api/v1/health", "Liveness (no login)"),
    public("/api/v1/openapi.json", "This document"),
    read("/api/v1/session", "Who is logged in, and the session's CSRF token", "session"),
    op("post", "/api/v1/session", "Log in with name, password and TOTP code; sets the mf_session cookie", "session", Some("Login"), 200, false),
    op("delete", "/api/v1/session", "Log out", "session", None, 204, true),
    op("post", "/api/v1/account/password", "Change the logged-in account's password (the one-time password must be changed before anything else)", "session", Some("PasswordChange"), 204, true),
    read("/api/v1/endpoints", "List endpoints", "endpoints"),
    change("/api/v1/endpoints", "Create an endpoint (admin)", "endpoints", Some("NewEndpoint"), 201),
    change("/api/v1/endpoints/{name}/test", "Test an endpoint's connectivity, optionally for one user (admin)", "endpoints", Some("EndpointTest"), 200),
    read("/api/v1/batches", "List batches with status", "batches"),
    change("/api/v1/batches", "Create a batch from a CSV; every bad row is returned with its reason (admin)", "batches", Some("NewBatch"), 201),
    read("/api/v1/batches/{name}", "A batch: every move's state, percent, items, bytes, rate, ETA; the latest run", "batches"),
    change("/api/v1/batches/{name}/start", "Start a pass of every mailbox not completed in the background (admin; 409 while a pass runs or is scheduled, when suspended, or when every mailbox is completed)", "batches", None, 202),
    change("/api/v1/batches/{name}/suspend", "Suspend the batch (admin; 409 if it never started or is suspended already)", "batches", None, 200),
    change("/api/v1/batches/{name}/resume", "Resume the batch (admin; 409 if it is not suspended)", "batches", None, 200),
    change("/api/v1/batches/{name}/complete", "Run the final pass of every mailbox in the background (admin; 409 while a pass runs, when suspended, or before a mailbox is Synced)", "batches", Some("Complete"), 202),
    read("/api/v1/batches/{name}/moves/{mailbox}", "One move's status", "moves"),
    change("/api/v1/batches/{name}/moves/{mailbox}/approve-skipped", "Run a pass of the move accepting its skipped items (admin; 409 when completed, suspended or while a pass runs)", "moves", None, 202),
    read("/api/v1/batches/{name}/moves/{mailbox}/report", "The move record (mailferry-move-record/1)", "reports"),
    read("/api/v1/batches/{name}/moves/{mailbox}/audit/verify", "Verify the move's source-side audit log", "audit"),
    read("/api/v1/batches/{name}/moves/{mailbox}/audit/reconcile", "Reconcile the move's source log with the volume", "audit"),
    read("/api/v1/audit/admin", "The admin audit log (newest `limit` records)", "audit"),
    read("/api/v1/audit/admin/verify", "Verify the admin audit log's hash chain", "audit"),
    read("/api/v1/access", "Lockbox requests and grants, newest first: state (as recorded and now), expiry, every use", "lockbox"),
    change("/api/v1/access", "Request access to one mailbox's content for a time, with a reason (admin); recorded in the admin and the volume audit logs", "lockbox", Some("AccessRequest"), 201),
    read("/api/v1/access/{id}", "One lockbox request and its grant", "lockbox"),
    change("/api/v1/access/{id}/approve", "Approve a pending request (an approver of the mailbox's tenant other than the requester, with a fresh TOTP code; a customer-key tenant's key file content in tenant_key, used in memory only)", "lockbox", Some("AccessDecision"), 200),
    change("/api/v1/access/{id}/deny", "Deny a pending request (an approver of the mailbox's tenant other than the requester, with a fresh TOTP code)", "lockbox", Some("AccessDecision"), 200),
    change("/api/v1/access/{id}/export", "During the grant, its requester downloads the mailbox as a Maildir in a tar archive (application/x-tar, streamed); each export is recorded in both audit logs, and outside the grant it is refused (409) and the refusal recorded", "lockbox", None, 200),
];

fn schemas() -> Value {
    let s = |t: &str| json!({"type": t});
    let opt = |t: &str| json!({"type": [t, "null"]});
    json!({
        "Error": {
            "type": "object", "required": ["error"],
            "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string", "enum": ["unauthenticated", "bad_login", "locked", "forbidden", "password_change_required", "csrf", "not_found", "conflict", "invalid", "bad_request", "internal", "unavailable"]},
                "message": s("string"),
                "rows": {"type": "array", "description": "every bad CSV row", "items": {"type": "object", "properties": {"row": s("integer"), "column": s("string"), "reason": s("string")}}}
            }}}
        },
        "Login": {"type": "object", "required": ["name", "password", "totp"], "additionalProperties": false,
            "properties": {"name": s("string"), "password": s("string"), "totp": {"type": "string", "description": "6-digit RFC 6238 code; a code is accepted once"}}},
        "PasswordChange": {"type": "object", "required": ["current_password", "new_password"], "additionalProperties": false, "properties": {
            "current_password": s("string"), "new_password": {"type": "string", "minLength": 12},
            "totp": {"type": ["string", "null"], "description": "a fresh TOTP code; not needed for the first change of a one-time password"}}},
        "NewEndpoint": {"type": "object", "required": ["name", "kind"], "additionalProperties": false, "properties": {
            "name": s("string"), "kind": {"type": "string", "enum": ["maildir", "mbox", "eml", "imap"]},
            "root": opt("string"), "host": opt("string"), "port": opt("integer"), "tls": {"type": ["string", "null"], "enum": ["imaps", "starttls", null]},
            "ca_file": opt("string"), "master_user": opt("string"), "master_password_file": opt("string"),
            "max_concurrent_moves": opt("integer"), "max_concurrent_incremental_syncs": opt("integer"),
            "max_bytes_per_second": opt("string"), "max_messages_per_second": opt("number")}},
        "EndpointTest": {"type": "object", "additionalProperties": false, "properties": {"user": opt("string")}},
        "NewBatch": {"type": "object", "required": ["name", "migration_type", "endpoint", "csv"], "additionalProperties": false, "properties": {
            "name": s("string"), "migration_type": {"type": "string", "enum": ["imap", "file"]}, "endpoint": s("string"),
            "csv": {"type": "string", "description": "EmailAddress,UserName,Password (or PasswordFile) CSV text"},
            "settings": {"type": "object", "additionalProperties": false, "properties": {
                "profile": opt("string"), "excluded_folders": {"type": "array", "items": s("string")},
                "bad_item_limit": opt("integer"), "large_item_limit": opt("integer"),
                "max_bytes_per_second": opt("string"), "max_messages_per_second": opt("number"), "concurrency": opt("integer"),
                "start": {"type": "object", "properties": {"when": {"enum": ["now", "later", "manual"]}, "at": s("string")}},
                "completion": {"type": "object", "properties": {"mode": {"enum": ["automatic", "manual", "after"]}, "at": s("string")}},
                "report_recipients": {"type": "array", "items": s("string")}}}}},
        "Complete": {"type": "object", "additionalProperties": false, "properties": {"approve_skipped": s("boolean")}},
        "AccessRequest": {"type": "object", "required": ["mailbox", "reason", "duration"], "additionalProperties": false, "properties": {
            "mailbox": s("string"), "reason": {"type": "string", "maxLength": 500},
            "duration": {"type": "string", "description": "how long the grant lasts once approved: 4h, 30min, 20s (10 s to 7 days)"}}},
        "AccessDecision": {"type": "object", "required": ["totp"], "additionalProperties": false, "properties": {
            "totp": {"type": "string", "description": "a fresh 6-digit code of the approver (step-up; each code works once)"},
            "tenant_key": {"type": ["string", "null"], "description": "approve only, customer-key tenants: the content of the tenant's key file; used in memory, never stored"}}}
    })
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for o in OPS {
        let entry = paths.entry(o.path.to_string()).or_insert_with(|| json!({}));
        let params: Vec<Value> = o
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let err = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
        let mut responses = Map::new();
        let ty = if o.path.ends_with("/export") {
            "application/x-tar"
        } else {
            "application/json"
        };
        responses.insert(
            o.ok.to_string(),
            json!({"description": "success", "content": {ty: {}}}),
        );
        let mut codes = vec!["400", "404", "409", "422"];
        if o.auth {
            codes.extend(["401", "403"]);
        }
        if o.path == "/api/v1/session" && o.method == "post" {
            codes.extend(["401", "429"]);
        }
        for c in codes {
            responses.insert(c.into(), err.clone());
        }
        let mut op = json!({
            "summary": o.summary,
            "tags": [o.tag],
            "operationId": format!("{}_{}", o.method, o.path.trim_start_matches('/').replace(['/', '{', '}', '.', '-'], "_")),
            "responses": responses,
        });
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(b) = o.body {
            op["requestBody"] = json!({"required": o.ok != 200 || o.method == "post" && o.path == "/api/v1/session",
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{b}")}}}});
        }
        if o.auth {
            op["security"] = json!([{"session": []}]);
            if o.method != "get" {
                op["parameters"] = {
                    let mut p = op.get("parameters").cloned().unwrap_or(json!([]));
                    p.as_array_mut().expect("array").push(json!({"name": "x-csrf-token", "in": "header", "required": true,
                        "description": "the session's CSRF token (GET /api/v1/session)", "schema": {"type": "string"}}));
                    p
                };
            }
        }
        entry[o.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "mailferry admin API",
            "version": "1",
            "description": "Endpoints, batches, moves, reports and audit checks of the mailferry admin service. Log in with POST /api/v1/session (password and TOTP), send the mf_session cookie, and the x-csrf-token header on every POST/PUT/PATCH/DELETE. Role admin does everything but decide lockbox requests; auditor reads only; approver decides the lockbox requests of its tenants (never its own) and otherwise reads. Session, CSRF token and role are checked before a request body is read: a refusal is a 401/403 whatever the body."
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": "mf_session"}}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_route_is_documented_and_every_documented_path_is_routed() {
        let doc = document();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(p, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.clone(), p.clone()))
            })
            .collect();
        let routed: BTreeSet<(String, String)> = crate::api::ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(documented, routed);
        assert_eq!(OPS.len(), routed.len());
    }

    /// Every entry of ROUTES reaches a handler of the real router (not the fallback
    /// 404, not 405): without a session they answer 401, or 200 for the open ones.
    #[tokio::test]
    async fn every_listed_route_exists_in_the_router() {
        use tower::ServiceExt;
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::AdminConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.path().join("state"),
            dir.path().join("vol"),
            dir.path().join("key"),
        );
        let app = crate::router(crate::AdminState::open(cfg).unwrap());
        for o in OPS {
            let path = o
                .path
                .replace("{name}", "b1")
                .replace("{mailbox}", "a@example.com")
                .replace("{id}", "0123456789ab");
            let req = axum::http::Request::builder()
                .method(o.method.to_uppercase().as_str())
                .uri(&path)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(if o.method == "post" && !o.auth {
                    "{}"
                } else {
                    ""
                }))
                .unwrap();
            let r = app.clone().oneshot(req).await.unwrap();
            let s = r.status().as_u16();
            let want: &[u16] = if o.auth { &[401] } else { &[200, 422] };
            assert!(want.contains(&s), "{} {path}: {s}", o.method);
        }
    }
}
