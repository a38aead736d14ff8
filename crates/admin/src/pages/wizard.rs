//! The new-migration-batch wizard's draft and its checks: six steps (name and type,
//! source endpoint, mailboxes, settings, schedule, review), carried between requests in
//! one hidden form field so that every step, Back included, works without JavaScript
//! and without server-side draft state.
//!
//! The draft is the admin's own input echoed back, so a tampered draft can only say
//! what the admin could have typed: everything is checked again, by the same functions,
//! when the batch is finally created. This module checks and renders; it creates
//! nothing (the handlers in [`super`] call the admin actions).

use super::{done, error_page, render, FormData, Nav};
use crate::actions::{
    self, BatchSettings, Completion, NewBatchRequest, NewEndpoint, StartSchedule,
};
use crate::{AdminError, AdminState, Viewer};
use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;
use mailferry_control::batch::RowProblem;
use mailferry_core::profile::ByteSize;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Titles of the steps, in order.
pub const STEPS: [&str; 6] = [
    "Name and type",
    "Source endpoint",
    "Mailboxes",
    "Settings",
    "Schedule",
    "Review and start",
];

/// Everything entered so far. Numbers stay text so that a bad value is shown back
/// exactly as typed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Draft {
    /// Batch name.
    pub name: String,
    /// `imap`, `maildir` or `mbox`.
    pub kind: String,
    /// The chosen endpoint's name; empty while a new one is being described.
    pub endpoint: String,
    /// The endpoint the wizard created inline, if any.
    pub endpoint_created: String,
    /// The migration type `endpoint` was chosen for.
    pub kind_of_endpoint: String,
    /// New endpoint: name.
    pub ep_name: String,
    /// New file endpoint: path with `{user}`.
    pub ep_root: String,
    /// New IMAP endpoint: host.
    pub ep_host: String,
    /// New IMAP endpoint: port (empty: by TLS mode).
    pub ep_port: String,
    /// New IMAP endpoint: `imaps` or `starttls`.
    pub ep_tls: String,
    /// New IMAP endpoint: CA file.
    pub ep_ca_file: String,
    /// New IMAP endpoint: master user.
    pub ep_master_user: String,
    /// New IMAP endpoint: master password file.
    pub ep_master_password_file: String,
    /// New endpoint: mailboxes in their first copy at once.
    pub ep_max_moves: String,
    /// New endpoint: mailboxes in an incremental sync at once.
    pub ep_max_incremental: String,
    /// UserName to test the endpoint with.
    pub test_user: String,
    /// The CSV text.
    pub csv: String,
    /// The CSV's rows as checked: (row, address, user name).
    pub users: Vec<(u64, String, String)>,
    /// Migration profile file on the server; empty: the built-in default.
    pub profile: String,
    /// Excluded folders, comma-separated.
    pub exclude_folders: String,
    /// Bad item limit.
    pub bad_item_limit: String,
    /// Large item size.
    pub large_item_limit: String,
    /// Bytes per second for the whole batch.
    pub throttle: String,
    /// Mailboxes at once.
    pub concurrency: String,
    /// `now`, `later` (at `start_at`) or `manual`.
    pub start: String,
    /// Start time (`datetime-local`, UTC) with `start = later`.
    pub start_at: String,
    /// `manual`, `auto` or `after`.
    pub complete: String,
    /// Completion time (`datetime-local`, UTC) with `complete = after`.
    pub complete_after: String,
    /// Report recipients, comma-separated.
    pub recipients: String,
}

/// Field name → what is wrong with it.
pub type Errors = BTreeMap<&'static str, String>;

impl Draft {
    /// A new draft with the defaults an admin most often wants.
    pub fn new() -> Draft {
        Draft {
            kind: "maildir".into(),
            ep_tls: "imaps".into(),
            ep_max_moves: "4".into(),
            ep_max_incremental: "2".into(),
            start: "now".into(),
            complete: "manual".into(),
            ..Draft::default()
        }
    }

    /// Takes the fields of `step` from a submitted form (whatever button was pressed,
    /// so that Back keeps what was typed on the page being left).
    pub fn apply(&mut self, step: u8, f: &HashMap<String, String>) {
        let set = |field: &mut String, name: &str| {
            if let Some(v) = f.get(name) {
                *field = v.trim().to_string();
            }
        };
        match step {
            1 => {
                set(&mut self.name, "name");
                set(&mut self.kind, "kind");
            }
            2 => {
                set(&mut self.endpoint, "endpoint");
                set(&mut self.ep_name, "ep_name");
                set(&mut self.ep_root, "ep_root");
                set(&mut self.ep_host, "ep_host");
                set(&mut self.ep_port, "ep_port");
                set(&mut self.ep_tls, "ep_tls");
                set(&mut self.ep_ca_file, "ep_ca_file");
                set(&mut self.ep_master_user, "ep_master_user");
                set(&mut self.ep_master_password_file, "ep_master_password_file");
                set(&mut self.ep_max_moves, "ep_max_moves");
                set(&mut self.ep_max_incremental, "ep_max_incremental");
                set(&mut self.test_user, "test_user");
            }
            3 => {
                // An uploaded file wins over the text box; either replaces the old CSV.
                let file = f.get("csv_file").filter(|t| !t.trim().is_empty());
                if let Some(t) = file.or(f.get("csv_text")) {
                    let t = t.replace("\r\n", "\n");
                    if t != self.csv {
                        self.users.clear();
                    }
                    self.csv = t;
                }
            }
            4 => {
                set(&mut self.profile, "profile");
                set(&mut self.exclude_folders, "exclude_folders");
                set(&mut self.bad_item_limit, "bad_item_limit");
                set(&mut self.large_item_limit, "large_item_limit");
                set(&mut self.throttle, "throttle");
                set(&mut self.concurrency, "concurrency");
            }
            5 => {
                set(&mut self.start, "start");
                set(&mut self.start_at, "start_at");
                set(&mut self.complete, "complete");
                set(&mut self.complete_after, "complete_after");
                set(&mut self.recipients, "recipients");
            }
            _ => {}
        }
    }

    /// Whether the source is files on this server (Maildir or mbox import).
    pub fn is_import(&self) -> bool {
        self.kind != "imap"
    }

    /// Checks of step 1.
    pub fn check_name_type(&self) -> Errors {
        let mut e = Errors::new();
        if let Err(err) = mailferry_control::batch::check_name(&self.name) {
            e.insert("name", err.to_string());
        }
        if !matches!(self.kind.as_str(), "imap" | "maildir" | "mbox") {
            e.insert("kind", "choose a migration type".into());
        }
        e
    }

    /// Checks of the new-endpoint fields of step 2 (when no existing one is chosen).
    pub fn check_new_endpoint(&self) -> Errors {
        let mut e = Errors::new();
        if let Err(m) = check_simple_name(&self.ep_name) {
            e.insert("ep_name", format!("endpoint name: {m}"));
        }
        if self.is_import() {
            if self.ep_root.is_empty() {
                e.insert(
                    "ep_root",
                    "give the path of the mailboxes, with {user} for the CSV's UserName".into(),
                );
            } else if !self.ep_root.starts_with('/') {
                e.insert(
                    "ep_root",
                    "give an absolute path on the server (starting with /)".into(),
                );
            }
        } else {
            if self.ep_host.is_empty() {
                e.insert("ep_host", "give the IMAP server's host name".into());
            }
            if !self.ep_port.is_empty() && self.ep_port.parse::<u16>().map_or(true, |p| p == 0) {
                e.insert("ep_port", "a port is a number from 1 to 65535".into());
            }
        }
        for (field, v) in [
            ("ep_max_moves", &self.ep_max_moves),
            ("ep_max_incremental", &self.ep_max_incremental),
        ] {
            if let Err(m) = positive(v) {
                e.insert(field, m);
            }
        }
        e
    }

    /// Checks of step 4.
    pub fn check_settings(&self) -> Errors {
        let mut e = Errors::new();
        if !self.profile.is_empty() && !self.profile.starts_with('/') {
            e.insert(
                "profile",
                "give the absolute path of a profile file on the server, or leave it empty".into(),
            );
        }
        for f in self.excluded() {
            if f.chars().any(|c| c.is_control()) {
                e.insert(
                    "exclude_folders",
                    format!("folder {f:?}: control characters"),
                );
            }
        }
        if !self.bad_item_limit.is_empty() && self.bad_item_limit.parse::<u64>().is_err() {
            e.insert(
                "bad_item_limit",
                "the bad item limit is a whole number (0 or more)".into(),
            );
        }
        for (field, v) in [
            ("large_item_limit", &self.large_item_limit),
            ("throttle", &self.throttle),
        ] {
            match ByteSize::parse(v) {
                _ if v.is_empty() => {}
                Ok(ByteSize(0)) => {
                    e.insert(field, "give a size above 0, or leave it empty".into());
                }
                Ok(_) => {}
                Err(m) => {
                    e.insert(field, m);
                }
            }
        }
        if !self.concurrency.is_empty() {
            if let Err(m) = positive(&self.concurrency) {
                e.insert("concurrency", m);
            }
        }
        e
    }

    /// Checks of step 5.
    pub fn check_schedule(&self) -> Errors {
        let mut e = Errors::new();
        match self.start.as_str() {
            "now" | "manual" => {}
            "later" => {
                if let Err(m) = utc_time(&self.start_at, "start") {
                    e.insert("start_at", m);
                }
            }
            _ => {
                e.insert("start", "choose when to start".into());
            }
        }
        match self.complete.as_str() {
            "manual" | "auto" => {}
            "after" => {
                if let Err(m) = self.complete_after_rfc3339() {
                    e.insert("complete_after", m);
                }
            }
            _ => {
                e.insert("complete", "choose how to complete".into());
            }
        }
        for r in self.recipient_list() {
            let ok = r
                .split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !r.contains(' '));
            if !ok {
                e.insert("recipients", format!("{r:?} is not an email address"));
                break;
            }
        }
        e
    }

    /// The completion time as RFC 3339 (`datetime-local` values are taken as UTC).
    pub fn complete_after_rfc3339(&self) -> Result<String, String> {
        utc_time(&self.complete_after, "complete")
    }

    /// The start time as RFC 3339.
    pub fn start_at_rfc3339(&self) -> Result<String, String> {
        utc_time(&self.start_at, "start")
    }

    /// Excluded folders, trimmed, without empty entries.
    pub fn excluded(&self) -> Vec<String> {
        split_list(&self.exclude_folders)
    }

    /// Report recipients, trimmed, without empty entries.
    pub fn recipient_list(&self) -> Vec<String> {
        split_list(&self.recipients)
    }

    /// The step to go back to for the first problem of the whole draft, with its errors.
    pub fn first_problem(&self) -> Option<(u8, Errors)> {
        let e = self.check_name_type();
        if !e.is_empty() {
            return Some((1, e));
        }
        if self.endpoint.is_empty() {
            let mut e = Errors::new();
            e.insert("endpoint", "choose an endpoint, or create one".into());
            return Some((2, e));
        }
        if self.users.is_empty() {
            let mut e = Errors::new();
            e.insert("csv", "give a CSV with at least one mailbox".into());
            return Some((3, e));
        }
        let e = self.check_settings();
        if !e.is_empty() {
            return Some((4, e));
        }
        let e = self.check_schedule();
        if !e.is_empty() {
            return Some((5, e));
        }
        None
    }

    /// What step 6 shows, label → value.
    pub fn review(&self) -> Vec<(&'static str, String)> {
        let or = |v: &str, d: &str| {
            if v.is_empty() {
                d.to_string()
            } else {
                v.to_string()
            }
        };
        let kind = match self.kind.as_str() {
            "imap" => "IMAP migration",
            "mbox" => "mbox import",
            _ => "Maildir import",
        };
        let users: Vec<String> = self.users.iter().map(|u| u.1.clone()).collect();
        let complete = match self.complete.as_str() {
            "auto" => "automatically, when synced".to_string(),
            "after" => format!(
                "after {}",
                self.complete_after_rfc3339()
                    .unwrap_or_else(|_| self.complete_after.clone())
            ),
            _ => "manually (held at Synced)".to_string(),
        };
        vec![
            ("Batch name", self.name.clone()),
            ("Migration type", kind.into()),
            ("Source endpoint", self.endpoint.clone()),
            (
                "Mailboxes",
                format!("{}: {}", users.len(), users.join(", ")),
            ),
            ("Profile", or(&self.profile, "built-in default")),
            ("Excluded folders", or(&self.exclude_folders, "none")),
            ("Bad item limit", or(&self.bad_item_limit, "the profile's")),
            ("Large item size", or(&self.large_item_limit, "no limit")),
            ("Throttle", or(&self.throttle, "the endpoint's")),
            ("Mailboxes at once", or(&self.concurrency, "the endpoint's")),
            (
                "Start",
                match self.start.as_str() {
                    "later" => format!(
                        "at {}",
                        self.start_at_rfc3339()
                            .unwrap_or_else(|_| self.start_at.clone())
                    ),
                    "manual" => "manually, from the dashboard".into(),
                    _ => "now".into(),
                },
            ),
            ("Complete", complete),
            ("Report recipients", or(&self.recipients, "none")),
        ]
    }
}

/// A `datetime-local` value (taken as UTC), RFC 3339, or a time from now (`2h`).
fn utc_time(v: &str, what: &str) -> Result<String, String> {
    let t = v.trim();
    if t.is_empty() {
        return Err(format!("give the time to {what} at"));
    }
    // datetime-local sends 2026-07-01T22:00 (no seconds, no zone).
    let full = match t.len() {
        16 if t.as_bytes()[10] == b'T' => format!("{t}:00Z"),
        19 if t.as_bytes()[10] == b'T' => format!("{t}Z"),
        _ => t.to_string(),
    };
    mailferry_control::lifecycle::parse_time(&full)
}

fn split_list(s: &str) -> Vec<String> {
    s.split([',', '\n'])
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn positive(v: &str) -> Result<usize, String> {
    match v.trim().parse::<usize>() {
        Ok(n) if (1..=64).contains(&n) => Ok(n),
        _ => Err(format!("{v:?}: give a whole number from 1 to 64")),
    }
}

/// Endpoint names: the rule of batch names (they name files in the state directory).
pub fn check_simple_name(name: &str) -> Result<(), String> {
    if mailferry_control::batch::simple_name_ok(name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'"
        ))
    }
}

/// An endpoint as the picker shows it.
#[derive(Clone, Debug)]
pub struct EndpointChoice {
    /// Name.
    pub name: String,
    /// Kind (`maildir`, `imap`, ...).
    pub kind: String,
    /// Path or host.
    pub location: String,
}

/// A connection test as step 2 shows it.
#[derive(Clone, Debug)]
pub struct TestView {
    /// Endpoint name.
    pub endpoint: String,
    /// The user tested with.
    pub user: Option<String>,
    /// Every check passed.
    pub ok: bool,
    /// (check, passed, detail).
    pub checks: Vec<(String, bool, String)>,
}

/// One wizard page.
#[derive(Template)]
#[template(path = "wizard.html")]
pub struct WizardPage {
    /// The header's user block.
    pub nav: Option<Nav>,
    /// The session's CSRF token.
    pub csrf: String,
    /// The viewer's role.
    pub role: String,
    /// Whether the viewer may create and start batches.
    pub can_start: bool,
    /// Step shown, 1 to 6.
    pub step: usize,
    /// [`STEPS`].
    pub steps: &'static [&'static str],
    /// The draft.
    pub d: Draft,
    /// The draft as JSON, for the hidden field.
    pub draft_json: String,
    /// Field errors.
    pub errors: Errors,
    /// An error about the whole step.
    pub notice: Option<String>,
    /// A success message.
    pub info: Option<String>,
    /// Endpoints to pick from (step 2).
    pub endpoints: Vec<EndpointChoice>,
    /// The last connection test (step 2).
    pub test: Option<TestView>,
    /// Bad CSV rows (step 3).
    pub rows: Vec<RowProblem>,
    /// Checked CSV rows (step 3).
    pub users: Vec<(u64, String, String)>,
}

impl WizardPage {
    /// A page for `step` of `d`, without errors.
    pub fn new(nav: &Nav, step: u8, d: Draft) -> WizardPage {
        WizardPage {
            nav: Some(nav.clone()),
            csrf: nav.csrf.clone(),
            role: nav.role.clone(),
            can_start: nav.admin,
            step: usize::from(step.clamp(1, 6)),
            steps: &STEPS,
            draft_json: serde_json::to_string(&d).unwrap_or_default(),
            users: d.users.clone(),
            d,
            errors: Errors::new(),
            notice: None,
            info: None,
            endpoints: Vec::new(),
            test: None,
            rows: Vec::new(),
        }
    }

    fn step_title(&self) -> &'static str {
        STEPS[self.step - 1]
    }

    fn err(&self, field: &str) -> Option<&str> {
        self.errors.get(field).map(String::as_str)
    }

    fn inv(&self, field: &str) -> &'static str {
        if self.errors.contains_key(field) {
            "true"
        } else {
            "false"
        }
    }

    fn review(&self) -> Vec<(&'static str, String)> {
        self.d.review()
    }
}

// === the handler ===

fn kind_str(k: mailferry_control::endpoint::Kind) -> String {
    serde_json::to_value(k)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// The endpoints of the draft's migration type.
fn endpoint_choices(state: &AdminState, d: &Draft) -> Result<Vec<EndpointChoice>, AdminError> {
    Ok(actions::list_endpoints(state)?
        .into_iter()
        .filter(|e| kind_str(e.endpoint.kind) == d.kind)
        .map(|e| EndpointChoice {
            location: match (&e.endpoint.root, &e.endpoint.imap) {
                (_, Some(i)) => format!("{}:{}", i.host, i.port),
                (Some(r), None) => r.clone(),
                (None, None) => String::new(),
            },
            kind: kind_str(e.endpoint.kind),
            name: e.name,
        })
        .collect())
}

/// Renders `page`, adding what its step needs to show.
fn show(state: &AdminState, mut page: WizardPage) -> Response {
    if page.step == 2 {
        match endpoint_choices(state, &page.d) {
            Ok(e) => page.endpoints = e,
            Err(e) => page.notice = Some(e.to_string()),
        }
    }
    let status = if page.errors.is_empty() && page.notice.is_none() && page.rows.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    render(status, &page)
}

/// Creates the endpoint described on step 2 unless one is chosen; true if it did.
fn ensure_endpoint(state: &AdminState, v: &Viewer, d: &mut Draft) -> Result<bool, Errors> {
    if !d.endpoint.is_empty() {
        return Ok(false);
    }
    let e = d.check_new_endpoint();
    if !e.is_empty() {
        return Err(e);
    }
    let n = NewEndpoint {
        name: d.ep_name.clone(),
        kind: d.kind.clone(),
        root: d.is_import().then(|| d.ep_root.clone()),
        host: (!d.is_import()).then(|| d.ep_host.clone()),
        port: d.ep_port.parse().ok(),
        tls: (!d.is_import()).then(|| d.ep_tls.clone()),
        ca_file: Some(d.ep_ca_file.clone()).filter(|s| !s.is_empty() && !d.is_import()),
        master_user: Some(d.ep_master_user.clone()).filter(|s| !s.is_empty() && !d.is_import()),
        master_password_file: Some(d.ep_master_password_file.clone())
            .filter(|s| !s.is_empty() && !d.is_import()),
        max_concurrent_moves: d.ep_max_moves.parse().ok(),
        max_concurrent_incremental_syncs: d.ep_max_incremental.parse().ok(),
        ..NewEndpoint::default()
    };
    match actions::create_endpoint(state, v, &n) {
        Ok(info) => {
            d.endpoint = info.name.clone();
            d.endpoint_created = info.name;
            Ok(true)
        }
        Err(e) => {
            let mut errs = Errors::new();
            let field = match e {
                AdminError::Conflict(_) => "ep_name",
                _ => "endpoint",
            };
            errs.insert(field, e.to_string());
            Err(errs)
        }
    }
}

/// Checks the CSV of step 3 against the chosen endpoint (read-only).
async fn check_csv(state: &AdminState, d: &Draft) -> Result<Vec<(u64, String, String)>, CsvCheck> {
    if d.csv.trim().is_empty() {
        let mut e = Errors::new();
        e.insert("csv", "upload a CSV file or paste its text".into());
        return Err(CsvCheck::Field(e));
    }
    match actions::check_csv(state, &d.endpoint, &d.csv).await {
        Ok(rows) if rows.is_empty() => {
            let mut e = Errors::new();
            e.insert("csv", "the CSV has no mailbox rows under its header".into());
            Err(CsvCheck::Field(e))
        }
        Ok(rows) => Ok(rows
            .into_iter()
            .map(|r| (r.row, r.address, r.user_name))
            .collect()),
        Err(AdminError::Invalid { rows, .. }) if !rows.is_empty() => Err(CsvCheck::Rows(rows)),
        Err(e) => Err(CsvCheck::Error(e)),
    }
}

enum CsvCheck {
    Field(Errors),
    Rows(Vec<RowProblem>),
    Error(AdminError),
}

fn request(d: &Draft) -> NewBatchRequest {
    let opt = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    NewBatchRequest {
        name: d.name.clone(),
        migration_type: if d.is_import() { "file" } else { "imap" }.into(),
        endpoint: d.endpoint.clone(),
        csv: d.csv.clone(),
        settings: BatchSettings {
            profile: opt(&d.profile),
            excluded_folders: d.excluded(),
            bad_item_limit: d.bad_item_limit.parse().ok(),
            large_item_limit: ByteSize::parse(&d.large_item_limit).ok().map(|b| b.0),
            max_bytes_per_second: opt(&d.throttle),
            max_messages_per_second: None,
            concurrency: d.concurrency.parse().ok(),
            start: match d.start.as_str() {
                "now" => StartSchedule::Now,
                "later" => StartSchedule::Later {
                    at: d.start_at_rfc3339().unwrap_or_default(),
                },
                _ => StartSchedule::Manual,
            },
            completion: match d.complete.as_str() {
                "auto" => Completion::Automatic,
                "after" => Completion::After {
                    at: d.complete_after_rfc3339().unwrap_or_default(),
                },
                _ => Completion::Manual,
            },
            report_recipients: d.recipient_list(),
        },
    }
}

/// `POST /wizard`: takes the step's fields into the draft, then goes back, tests the
/// endpoint, checks the step and goes on, or (step 6) creates and starts the batch.
/// The CSRF token has been checked.
pub async fn submit(state: &AdminState, v: &Viewer, f: &FormData) -> Response {
    let nav = Nav::of(v);
    let step: u8 = f.get("step").parse().unwrap_or(1u8).clamp(1, 6);
    let mut d: Draft = serde_json::from_str(f.get("draft")).unwrap_or_else(|_| Draft::new());
    d.apply(step, &f.0);
    if step == 2 {
        d.kind_of_endpoint = d.kind.clone();
    }
    if step == 1 && !d.endpoint.is_empty() && d.kind != d.kind_of_endpoint {
        // Another migration type: the chosen endpoint no longer fits.
        d.endpoint.clear();
    }
    let page = |step: u8, d: Draft| WizardPage::new(&nav, step, d);
    let with_errors = |step: u8, d: Draft, errors: Errors| {
        let mut p = page(step, d);
        p.errors = errors;
        show(state, p)
    };
    match (f.get("nav"), step) {
        ("back", _) => show(state, page(step.saturating_sub(1).max(1), d)),
        ("test", 2) => {
            if let Err(e) = ensure_endpoint(state, v, &mut d) {
                return with_errors(2, d, e);
            }
            let user = Some(d.test_user.as_str()).filter(|u| !u.is_empty());
            match actions::test_endpoint(state, v, &d.endpoint, user).await {
                Ok(r) => {
                    let mut p = page(2, d.clone());
                    p.test = Some(TestView {
                        endpoint: d.endpoint.clone(),
                        user: user.map(String::from),
                        ok: r.ok,
                        checks: r
                            .checks
                            .iter()
                            .map(|c| (c.check.clone(), c.ok, c.detail.clone()))
                            .collect(),
                    });
                    show(state, p)
                }
                Err(e) => {
                    let mut p = page(2, d);
                    p.notice = Some(e.to_string());
                    show(state, p)
                }
            }
        }
        ("start", 6) => {
            if let Some((step, errors)) = d.first_problem() {
                return with_errors(step, d, errors);
            }
            match actions::create_batch(state, v, request(&d)).await {
                Ok(_) => {
                    let code = match d.start.as_str() {
                        "now" => "created-started",
                        "later" => "created-scheduled",
                        _ => "created",
                    };
                    done(code, &d.name)
                }
                Err(AdminError::Invalid { rows, .. }) if !rows.is_empty() => {
                    let mut p = page(3, d);
                    p.rows = rows;
                    show(state, p)
                }
                Err(e @ AdminError::Forbidden(_)) => {
                    error_page(Some(nav.clone()), &e, "/dashboard")
                }
                Err(e) => {
                    let mut p = page(6, d);
                    p.notice = Some(e.to_string());
                    show(state, p)
                }
            }
        }
        (_, 1) => match d.check_name_type() {
            e if e.is_empty() => show(state, page(2, d)),
            e => with_errors(1, d, e),
        },
        (_, 2) => match ensure_endpoint(state, v, &mut d) {
            Err(e) => with_errors(2, d, e),
            Ok(created) => {
                let info = created.then(|| format!("Endpoint {} created.", d.endpoint));
                let mut p = page(3, d);
                p.info = info;
                show(state, p)
            }
        },
        (_, 3) => match check_csv(state, &d).await {
            Ok(users) => {
                d.users = users;
                show(state, page(4, d))
            }
            Err(CsvCheck::Field(e)) => with_errors(3, d, e),
            Err(CsvCheck::Rows(rows)) => {
                let mut p = page(3, d);
                p.rows = rows;
                show(state, p)
            }
            Err(CsvCheck::Error(e)) => {
                let mut p = page(3, d);
                p.notice = Some(e.to_string());
                show(state, p)
            }
        },
        (_, 4) => match d.check_settings() {
            e if e.is_empty() => show(state, page(5, d)),
            e => with_errors(4, d, e),
        },
        (_, 5) => match d.check_schedule() {
            e if e.is_empty() => show(state, page(6, d)),
            e => with_errors(5, d, e),
        },
        (_, s) => show(state, page(s, d)),
    }
}
