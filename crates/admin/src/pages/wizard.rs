//! The new-migration-batch wizard's draft and its checks: six steps (name and type,
//! source endpoint, mailboxes, settings, schedule, review), carried between requests in
//! one hidden form field so that every step, Back included, works without JavaScript
//! and without server-side draft state.
//!
//! The draft is the admin's own input echoed back, so a tampered draft can only say
//! what the admin could have typed: everything is checked again, by the same functions,
//! when the batch is finally created.
//!
//! Nothing is saved before the last step's button: a new endpoint is checked on Next
//! and tested by Test connection in memory, and written only together with the batch.
//! Step 2 preselects an existing endpoint of the migration type when there is one.
//! The review step shows where the mail will go (volume, key, recovery key, tenants)
//! and a dry run's estimate of size and time ([`mailferry_control::dry_run`]).

use super::{done, error_page, render, FormData, Nav};
use crate::actions::{
    self, BatchSettings, Completion, NewBatchRequest, NewEndpoint, StartSchedule,
};
use crate::{AdminError, AdminState, Viewer};
use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;
use mailferry_control::batch::RowProblem;
use mailferry_control::endpoint::Endpoint;
use mailferry_control::units::{human_bytes, human_duration};
use mailferry_core::profile::{ByteSize, Profile};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

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
    /// The chosen saved endpoint's name; empty while a new one is being described.
    pub endpoint: String,
    /// Step 2 was submitted at least once: its choice is the admin's, not the default.
    pub endpoint_picked: bool,
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
                self.endpoint_picked = true;
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

    /// The new endpoint described on step 2, as the admin actions take it.
    pub fn new_endpoint(&self) -> NewEndpoint {
        let imap = |v: &str| Some(v.to_string()).filter(|s| !s.is_empty() && !self.is_import());
        NewEndpoint {
            name: self.ep_name.clone(),
            kind: self.kind.clone(),
            root: self.is_import().then(|| self.ep_root.clone()),
            host: (!self.is_import()).then(|| self.ep_host.clone()),
            port: self.ep_port.parse().ok(),
            tls: (!self.is_import()).then(|| self.ep_tls.clone()),
            ca_file: imap(&self.ep_ca_file),
            master_user: imap(&self.ep_master_user),
            master_password_file: imap(&self.ep_master_password_file),
            max_concurrent_moves: self.ep_max_moves.parse().ok(),
            max_concurrent_incremental_syncs: self.ep_max_incremental.parse().ok(),
            ..NewEndpoint::default()
        }
    }

    /// The endpoint's name, saved or to be saved.
    pub fn endpoint_name(&self) -> &str {
        if self.endpoint.is_empty() {
            &self.ep_name
        } else {
            &self.endpoint
        }
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
            let e = self.check_new_endpoint();
            if !e.is_empty() {
                return Some((2, e));
            }
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
            (
                "Source endpoint",
                if self.endpoint.is_empty() {
                    format!("{} (new: saved when you start)", self.ep_name)
                } else {
                    self.endpoint.clone()
                },
            ),
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
    /// It is a saved endpoint (else: tested as described, not saved).
    pub saved: bool,
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
    /// Where the mail will go and how long it takes (step 6).
    pub facts: Option<ReviewFacts>,
}

/// What the review step says about the destination and the estimate, label → value.
#[derive(Clone, Debug, Default)]
pub struct ReviewFacts {
    /// Destination volume, tenants, key, recovery key.
    pub destination: Vec<(&'static str, String)>,
    /// A problem with the destination that will stop the moves.
    pub destination_problem: Option<String>,
    /// Size, messages, time, and how the time was estimated.
    pub estimate: Vec<(&'static str, String)>,
    /// Per mailbox: address, messages, size, time (or why there is no estimate).
    pub mailboxes: Vec<(String, String, String, String)>,
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
            facts: None,
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

/// Renders `page`, adding what its step needs to show: the endpoints (preselecting the
/// first saved one of the type until the admin chose), or the review's facts.
async fn show(state: &AdminState, mut page: WizardPage) -> Response {
    if page.step == 2 {
        match endpoint_choices(state, &page.d) {
            Ok(e) => {
                if !page.d.endpoint_picked && page.d.endpoint.is_empty() {
                    if let Some(first) = e.first() {
                        page.d.endpoint = first.name.clone();
                        page.draft_json = serde_json::to_string(&page.d).unwrap_or_default();
                    }
                }
                page.endpoints = e;
            }
            Err(e) => page.notice = Some(e.to_string()),
        }
    }
    if page.step == 6 {
        page.facts = Some(review_facts(state, &page.d).await);
    }
    let status = if page.errors.is_empty() && page.notice.is_none() && page.rows.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    render(status, &page)
}

/// The draft's endpoint: the saved one chosen, or the new one described (checked, not
/// saved). Errors are step 2's fields.
fn draft_endpoint(state: &AdminState, d: &Draft) -> Result<Endpoint, Errors> {
    let one = |field: &'static str, e: AdminError| {
        let mut errs = Errors::new();
        errs.insert(field, e.to_string());
        errs
    };
    if !d.endpoint.is_empty() {
        return actions::load_endpoint(state, &d.endpoint)
            .map(|(_, ep)| ep)
            .map_err(|e| one("endpoint", e));
    }
    let e = d.check_new_endpoint();
    if !e.is_empty() {
        return Err(e);
    }
    match actions::check_new_endpoint(state, &d.new_endpoint()) {
        Ok((_, _, ep)) => Ok(ep),
        Err(e @ AdminError::Conflict(_)) => Err(one("ep_name", e)),
        Err(e) => Err(one("endpoint", e)),
    }
}

/// Saves the new endpoint of the draft, if it has one (the last step's button).
fn save_endpoint(state: &AdminState, v: &Viewer, d: &mut Draft) -> Result<(), AdminError> {
    if d.endpoint.is_empty() {
        let info = actions::create_endpoint(state, v, &d.new_endpoint())?;
        d.endpoint = info.name;
    }
    Ok(())
}

/// Checks the CSV of step 3 against the chosen endpoint (read-only).
async fn check_csv(state: &AdminState, d: &Draft) -> Result<Vec<(u64, String, String)>, CsvCheck> {
    if d.csv.trim().is_empty() {
        let mut e = Errors::new();
        e.insert("csv", "upload a CSV file or paste its text".into());
        return Err(CsvCheck::Field(e));
    }
    let ep = draft_endpoint(state, d).map_err(CsvCheck::Endpoint)?;
    match actions::check_csv_with(state, ep, &d.csv).await {
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
    Endpoint(Errors),
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

// === the review's facts ===

/// Where the mail goes and what the dry run estimates, for step 6.
async fn review_facts(state: &AdminState, d: &Draft) -> ReviewFacts {
    let mut f = ReviewFacts::default();
    let cfg = state.config().clone();
    let (dest, problem) = destination_facts(&cfg, d).await;
    f.destination = dest;
    f.destination_problem = problem;
    match draft_endpoint(state, d) {
        Ok(ep) => estimate(state, d, &ep, &mut f).await,
        Err(e) => f.estimate.push((
            "Estimate",
            format!(
                "none: the endpoint has a problem ({}); go back to step 2",
                e.values().cloned().collect::<Vec<_>>().join("; ")
            ),
        )),
    }
    f
}

/// The volume, the tenants (mail domains) of the CSV, whether the service's key file
/// opens the volume, and whether a recovery key exists.
pub(crate) async fn destination_facts(
    cfg: &crate::AdminConfig,
    d: &Draft,
) -> (Vec<(&'static str, String)>, Option<String>) {
    let mut tenants: Vec<String> = d
        .users
        .iter()
        .filter_map(|u| {
            u.1.rsplit_once('@')
                .map(|(_, dom)| dom.to_ascii_lowercase())
        })
        .collect();
    tenants.sort();
    tenants.dedup();
    let tenant = (
        "Tenant",
        if tenants.is_empty() {
            "none yet (no mailboxes)".into()
        } else {
            tenants.join(", ")
        },
    );
    if let (Some(_), Some(p)) = (&cfg.db, &cfg.proxy) {
        // The store holds the key; this service cannot check it, the workers' first
        // pass does.
        return (
            vec![
                (
                    "Destination",
                    format!("the mailferry serve at {} (workers stream to it)", p.url),
                ),
                tenant,
                (
                    "Encryption key",
                    "held by that store (its volume's key file)".into(),
                ),
            ],
            None,
        );
    }
    let (volume, key_file) = (cfg.volume.clone(), cfg.key_file.clone());
    let checks = tokio::task::spawn_blocking(move || {
        let cred = mailferry_store::Credential::KeyFile(key_file.clone());
        (
            mailferry_store::Volume::unlock_check(&volume, &cred),
            mailferry_store::Volume::has_recovery_slot(&volume),
            key_file,
        )
    })
    .await;
    let mut problem = None;
    let (key, recovery) = match checks {
        Ok((unlock, recovery, key_file)) => {
            let key = match unlock {
                Ok(info) => format!(
                    "unlocked: the service's key file {} opens it ({})",
                    key_file.display(),
                    info.slot_kind
                ),
                Err(e) => {
                    let m = format!("locked: the service's key file does not open it ({e})");
                    problem = Some(format!(
                        "The destination volume cannot be opened with the service's key: {e}. Every mailbox would fail; ask whoever runs the service to check its volume and key file."
                    ));
                    m
                }
            };
            let recovery = match recovery {
                Ok(true) => {
                    "yes: a recovery key can open the volume if the key file is lost".into()
                }
                Ok(false) => {
                    problem.get_or_insert_with(|| {
                        "The volume has no recovery key: if its key file is lost, all mail moved into it is lost. Ask whoever runs the service to add one before you start.".into()
                    });
                    "no: losing the key file would lose the mail".into()
                }
                Err(e) => format!("unknown ({e})"),
            };
            (key, recovery)
        }
        Err(e) => (format!("not checked ({e})"), "not checked".into()),
    };
    let mut facts = vec![
        ("Destination volume", cfg.volume.display().to_string()),
        tenant,
        ("Encryption key", key),
        ("Recovery key", recovery),
    ];
    if cfg.db.is_some() {
        facts.push((
            "Workers",
            format!(
                "must open {} at this same path: run them on this machine (one at a time: a volume is opened by one process). For workers on other machines, whoever runs this service gives it a store to stream to (admin guide, \"Against PostgreSQL\")",
                cfg.volume.display()
            ),
        ));
    }
    (facts, problem)
}

/// The profile the batch will run with: the wizard's settings over the chosen profile.
fn draft_profile(d: &Draft) -> Result<Profile, String> {
    let settings = request(d).settings;
    match actions::batch_profile(&settings).map_err(|e| e.to_string())? {
        Some(text) => Profile::parse(&text, "batch settings").map_err(|e| e.to_string()),
        None => mailferry_control::lifecycle::load_profile(
            settings.profile.as_deref().map(std::path::Path::new),
        )
        .map_err(|e| e.to_string()),
    }
}

/// A dry run of every mailbox (nothing written, the volume not opened), summed into
/// the size and the time of the first pass. The time is the slowest of the source's
/// sampled read rate, the pipeline rate (the dry run's documented assumed rate, as no
/// pass has run) and the throttle, per mailbox; mailboxes run `concurrency` at once,
/// and the endpoint's shared throttle bounds them together.
async fn estimate(state: &AdminState, d: &Draft, ep: &Endpoint, f: &mut ReviewFacts) {
    use mailferry_control::dry_run::{dry_run, DestinationPreview, DryRunArgs};
    let profile = match draft_profile(d) {
        Ok(p) => p,
        Err(e) => {
            f.estimate.push((
                "Estimate",
                format!("none: the settings' profile is unusable ({e})"),
            ));
            return;
        }
    };
    if ep.needs_user_password() {
        f.estimate.push((
            "Estimate",
            "after the first pass: this IMAP endpoint logs in with each user's own password, which is not used before the batch starts".into(),
        ));
        return;
    }
    // A state directory that does not exist: the dry run reads it only if it exists.
    let nowhere = state.config().uploads_dir().join(format!(
        ".dry-run-{}",
        hex::encode(mailferry_core::secret::SecretBytes::random(8).expose())
    ));
    let target = DestinationPreview::of(&state.config().batch_destination());
    let (mut messages, mut bytes, mut sum, mut longest) = (0u64, 0u64, 0f64, 0f64);
    let mut basis = None;
    for (_, address, user) in &d.users {
        let Ok(mailbox) = mailferry_core::MailboxAddr::parse(address) else {
            continue;
        };
        let (source, source_options) = ep.source_for(user, None);
        let args = DryRunArgs {
            source,
            source_options,
            mailbox,
            destination: target.clone(),
            state: nowhere.clone(),
            profile: profile.clone(),
        };
        match dry_run(&args).await {
            Ok(r) => {
                let (t, e) = (&r.preview.totals, &r.preview.estimate);
                messages += t.to_send;
                bytes += t.to_send_bytes;
                sum += e.seconds;
                longest = longest.max(e.seconds);
                basis.get_or_insert_with(|| rate_basis(e));
                f.mailboxes.push((
                    address.clone(),
                    t.to_send.to_string(),
                    human_bytes(t.to_send_bytes),
                    human_duration(Duration::from_secs_f64(e.seconds.max(1.0))),
                ));
            }
            Err(e) => f.mailboxes.push((
                address.clone(),
                "–".into(),
                "–".into(),
                format!("no estimate: {e}"),
            )),
        }
    }
    let at_once = d
        .concurrency
        .parse::<usize>()
        .unwrap_or(ep.max_concurrent_moves)
        .clamp(1, ep.max_concurrent_moves.max(1))
        .min(d.users.len().max(1));
    let mut seconds = longest.max(sum / at_once as f64);
    let mut shared = String::new();
    if let Some(rate) = ep.max_bytes_per_second.filter(|r| *r > 0) {
        seconds = seconds.max(bytes as f64 / rate as f64);
        shared = format!(
            "; the endpoint's throttle of {}/s is shared by all of them",
            human_bytes(rate)
        );
    }
    f.estimate = vec![
        (
            "Size",
            format!("{} in {messages} message(s)", human_bytes(bytes)),
        ),
        (
            "Estimated time",
            format!(
                "about {} for the first copy, {at_once} mailbox(es) at once",
                human_duration(Duration::from_secs_f64(seconds.max(1.0)))
            ),
        ),
        (
            "How it was estimated",
            format!(
                "a dry run of every mailbox (nothing was copied); {}{shared}",
                basis.unwrap_or_else(|| "no mailbox could be measured".into())
            ),
        ),
    ];
}

/// Which rate a dry run's estimate rests on, in words.
fn rate_basis(e: &mailferry_agent::preview::Estimate) -> String {
    let pipeline = format!(
        "{}/s",
        human_bytes(e.pipeline_bytes_per_second.max(0.0) as u64)
    );
    let pipeline_from = if e.pipeline_rate_from == "assumed" {
        format!("an assumed rate of {pipeline} for copying into the volume (no pass has run yet to measure it)")
    } else {
        format!("the rate of this mailbox's last pass ({pipeline})")
    };
    match e.limited_by {
        "throttle" => format!("limited by the throttle you set; otherwise {pipeline_from}"),
        "source" => format!(
            "limited by the source's read rate, measured on a sample; otherwise {pipeline_from}"
        ),
        _ => pipeline_from,
    }
}

// === the form ===

/// `POST /wizard`: takes the step's fields into the draft, then goes back, tests the
/// endpoint, checks the step and goes on, or (step 6) saves a new endpoint, creates the
/// batch and starts it. The role and the CSRF token have been checked.
pub async fn submit(state: &AdminState, v: &Viewer, f: &FormData) -> Response {
    let nav = Nav::of(v);
    let step: u8 = f.get("step").parse().unwrap_or(1u8).clamp(1, 6);
    let mut d: Draft = serde_json::from_str(f.get("draft")).unwrap_or_else(|_| Draft::new());
    d.apply(step, &f.0);
    if step == 2 {
        d.kind_of_endpoint = d.kind.clone();
    }
    if step == 1 && d.kind != d.kind_of_endpoint {
        // Another migration type: the chosen endpoint no longer fits.
        d.endpoint.clear();
        d.endpoint_picked = false;
    }
    let page = |step: u8, d: Draft| WizardPage::new(&nav, step, d);
    let with_errors = |step: u8, d: Draft, errors: Errors| {
        let mut p = page(step, d);
        p.errors = errors;
        show(state, p)
    };
    match (f.get("nav"), step) {
        ("back", _) => show(state, page(step.saturating_sub(1).max(1), d)).await,
        ("test", 2) => test_connection(state, v, &nav, d).await,
        ("start", 6) => finish(state, v, &nav, d).await,
        (_, 1) => match d.check_name_type() {
            e if e.is_empty() => show(state, page(2, d)).await,
            e => with_errors(1, d, e).await,
        },
        (_, 2) => match draft_endpoint(state, &d) {
            Err(e) => with_errors(2, d, e).await,
            Ok(_) => {
                let info = d.endpoint.is_empty().then(|| {
                    format!(
                        "Endpoint {} is checked; it is saved when you start the batch on the last step.",
                        d.ep_name
                    )
                });
                let mut p = page(3, d);
                p.info = info;
                show(state, p).await
            }
        },
        (_, 3) => match check_csv(state, &d).await {
            Ok(users) => {
                d.users = users;
                show(state, page(4, d)).await
            }
            Err(CsvCheck::Field(e)) => with_errors(3, d, e).await,
            Err(CsvCheck::Endpoint(e)) => with_errors(2, d, e).await,
            Err(CsvCheck::Rows(rows)) => {
                let mut p = page(3, d);
                p.rows = rows;
                show(state, p).await
            }
            Err(CsvCheck::Error(e)) => {
                let mut p = page(3, d);
                p.notice = Some(e.to_string());
                show(state, p).await
            }
        },
        (_, 4) => match d.check_settings() {
            e if e.is_empty() => show(state, page(5, d)).await,
            e => with_errors(4, d, e).await,
        },
        (_, 5) => match d.check_schedule() {
            e if e.is_empty() => show(state, page(6, d)).await,
            e => with_errors(5, d, e).await,
        },
        (_, s) => show(state, page(s, d)).await,
    }
}

/// Test connection: the saved endpoint chosen, or the new one in memory; nothing is
/// saved either way.
async fn test_connection(state: &AdminState, v: &Viewer, nav: &Nav, d: Draft) -> Response {
    let mut p = WizardPage::new(nav, 2, d.clone());
    if d.endpoint.is_empty() {
        let e = d.check_new_endpoint();
        if !e.is_empty() {
            p.errors = e;
            return show(state, p).await;
        }
    }
    let user = Some(d.test_user.as_str()).filter(|u| !u.is_empty());
    let r = if d.endpoint.is_empty() {
        actions::test_new_endpoint(state, v, &d.new_endpoint(), user).await
    } else {
        actions::test_endpoint(state, v, &d.endpoint, user).await
    };
    match r {
        Ok(r) => {
            p.test = Some(TestView {
                endpoint: d.endpoint_name().to_string(),
                saved: !d.endpoint.is_empty(),
                user: user.map(String::from),
                ok: r.ok,
                checks: r
                    .checks
                    .iter()
                    .map(|c| (c.check.clone(), c.ok, ui_words(&c.detail)))
                    .collect(),
            });
        }
        Err(e @ AdminError::Conflict(_)) => {
            p.errors.insert("ep_name", e.to_string());
        }
        Err(e) => p.notice = Some(ui_words(&e.to_string())),
    }
    show(state, p).await
}

/// The connection test's advice in the page's own words: the CLI's texts name its
/// flags, which the wizard has no use for. The advice itself has one source
/// ([`mailferry_control::advice`]); what is left is a flag named in a refusal.
pub fn ui_words(detail: &str) -> String {
    mailferry_control::advice::web_text(detail).replace("--user ", "test user ")
}

/// The last step's button: saves the new endpoint, then creates (and starts) the batch.
async fn finish(state: &AdminState, v: &Viewer, nav: &Nav, mut d: Draft) -> Response {
    let page = |step: u8, d: Draft| WizardPage::new(nav, step, d);
    if let Some((step, errors)) = d.first_problem() {
        let mut p = page(step, d);
        p.errors = errors;
        return show(state, p).await;
    }
    let new_endpoint = d.endpoint.is_empty();
    if let Err(e) = save_endpoint(state, v, &mut d) {
        let mut p = page(2, d);
        let field = if matches!(e, AdminError::Conflict(_)) {
            "ep_name"
        } else {
            "endpoint"
        };
        p.errors.insert(field, e.to_string());
        return show(state, p).await;
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
            show(state, p).await
        }
        Err(e @ AdminError::Forbidden(_)) => error_page(Some(nav.clone()), &e, "/dashboard"),
        Err(e) => {
            let saved = if new_endpoint {
                format!(" The endpoint {} was saved and stays selected.", d.endpoint)
            } else {
                String::new()
            };
            let mut p = page(6, d);
            p.notice = Some(format!("The batch was not created: {e}.{saved}"));
            show(state, p).await
        }
    }
}
