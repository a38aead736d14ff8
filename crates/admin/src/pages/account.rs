//! The account page: change the password (forced at the first login, while the account
//! still has its one-time password) and re-enrol the TOTP authenticator.
//!
//! The checks, the session bookkeeping and the audit records live in
//! [`crate::session`] (`change_password`, `begin_totp`, `confirm_totp`); this module
//! only turns forms into those calls and renders the outcome. A new TOTP secret is
//! shown once, in the response to the request that made it, and never again: a reload
//! shows the form to start over, which makes another secret.

use super::{error_page, render, FormData, Nav};
use crate::accounts::MIN_PASSWORD_CHARS;
use crate::session::{self, PasswordChange};
use crate::{AdminError, AdminState, Viewer};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use std::collections::HashMap;

/// A new authenticator entry, shown once.
#[derive(Debug)]
pub struct EnrolView {
    /// The `otpauth://` URI as a QR code (an SVG `data:` URI; the CSP allows `data:`
    /// images only).
    pub qr_data_uri: String,
    /// The base32 secret in groups of four, for typing.
    pub secret_grouped: String,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    nav: Option<Nav>,
    name: String,
    role: String,
    csrf: String,
    forced: bool,
    show_totp: bool,
    min_chars: usize,
    info: Option<String>,
    error: Option<String>,
    enrol: Option<EnrolView>,
}

impl AccountPage {
    fn of(v: &Viewer, only_password: bool) -> AccountPage {
        AccountPage {
            nav: Some(Nav::of(v)),
            name: v.name.clone(),
            role: v.role.as_str().into(),
            csrf: v.csrf.clone(),
            forced: v.must_change_password,
            show_totp: !only_password && !v.must_change_password,
            min_chars: MIN_PASSWORD_CHARS,
            info: None,
            error: None,
            enrol: None,
        }
    }
}

/// The page with an error's message and status, or 200.
fn show(p: AccountPage, e: Option<&AdminError>) -> Response {
    let status = e.map_or(StatusCode::OK, AdminError::status);
    let mut r = render(status, &p);
    if let Some(s) = e.and_then(AdminError::retry_after) {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

/// `GET /account`.
pub async fn page(v: Viewer, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut p = AccountPage::of(&v, false);
    p.info = match q.get("done").map(String::as_str) {
        Some("password") => Some("Your password has been changed; use the new one from now on. Any other session of your account was logged out.".into()),
        Some("totp") => Some("Your new authenticator entry is in use; the old one no longer works.".into()),
        _ => None,
    };
    show(p, None)
}

/// `GET /account/password`: where a session with a one-time password is sent.
pub async fn password_page(v: Viewer) -> Response {
    show(AccountPage::of(&v, true), None)
}

/// `POST /account/password`.
pub async fn change_password(State(state): State<AdminState>, v: Viewer, f: FormData) -> Response {
    if let Err(e) = f.check_csrf(&v) {
        return error_page(Some(Nav::of(&v)), &e, "/account");
    }
    let change = PasswordChange {
        current: f.get("current_password"),
        totp: Some(f.get("totp")),
        new: f.get("new_password"),
        confirm: f.get("confirm_password"),
    };
    match session::change_password(&state, &v, change).await {
        Ok(()) => Redirect::to("/account?done=password").into_response(),
        Err(e) => {
            let mut p = AccountPage::of(&v, v.must_change_password);
            p.error = Some(e.to_string());
            show(p, Some(&e))
        }
    }
}

/// `POST /account/totp`: checks the password and current code, shows the new secret.
pub async fn begin_totp(State(state): State<AdminState>, v: Viewer, f: FormData) -> Response {
    if let Err(e) = f.check_csrf(&v) {
        return error_page(Some(Nav::of(&v)), &e, "/account");
    }
    let mut p = AccountPage::of(&v, false);
    match session::begin_totp(&state, &v, f.get("current_password"), f.get("totp")).await {
        Ok(uri) => {
            p.enrol = Some(enrol_view(uri.expose()));
            show(p, None)
        }
        Err(e) => {
            p.error = Some(e.to_string());
            show(p, Some(&e))
        }
    }
}

/// `POST /account/totp/confirm`: puts the new secret in force with one valid code.
pub async fn confirm_totp(State(state): State<AdminState>, v: Viewer, f: FormData) -> Response {
    if let Err(e) = f.check_csrf(&v) {
        return error_page(Some(Nav::of(&v)), &e, "/account");
    }
    match session::confirm_totp(&state, &v, f.get("totp")).await {
        Ok(()) => Redirect::to("/account?done=totp").into_response(),
        Err(e) => {
            let mut p = AccountPage::of(&v, false);
            p.error = Some(format!(
                "{e}. The new entry was not confirmed; start again to get a new one."
            ));
            show(p, Some(&e))
        }
    }
}

/// The QR code and the typed form of an `otpauth://` URI.
pub fn enrol_view(uri: &str) -> EnrolView {
    use base64::Engine;
    let svg = match qrcode::QrCode::new(uri.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(220, 220)
            .build(),
        Err(_) => String::new(),
    };
    let secret = uri
        .split_once("secret=")
        .map(|(_, s)| s.split('&').next().unwrap_or_default())
        .unwrap_or_default();
    let grouped: Vec<String> = secret
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    EnrolView {
        qr_data_uri: format!(
            "data:image/svg+xml;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(svg)
        ),
        secret_grouped: grouped.join(" "),
    }
}
