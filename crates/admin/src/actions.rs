//! What an admin can do and read, for the REST API and the pages alike: endpoints,
//! batches, moves, reports and audit checks. Every operation that changes something
//! takes the [`Viewer`], refuses auditors (403, audited) and writes an `admin.action`
//! record with the actor to the admin audit log.
//!
//! Everything here calls the library the CLI calls ([`mailferry_control::endpoint`],
//! [`mailferry_control::batch`], [`mailferry_control::lifecycle`], [`mailferry_control::status`], [`mailferry_control::report`],
//! [`mailferry_control::audit_cmd`]); runs go to [`super::jobs`]. CSRF is checked before these are
//! called (the [`Viewer`] extractor for the API, [`super::check_csrf`] for forms).
//!
//! Files written under the state directory: `endpoints/NAME.toml` (the `mailferry
//! endpoint` format), `uploads/BATCH.csv` (0600), `batches/BATCH/` (the `mailferry
//! batch` format) with `admin.json` (the wizard's schedule, recipients and migration
//! type) and, when folders are excluded or a throttle is set, `profile.toml`.
//!
//! With `admin serve --db` the batches and moves are rows instead ([`db`], chosen by
//! [`crate::backend::Backend`]): the same checks, answers and audit records; a start or
//! completion queues the moves for `mailferry worker`. The CSV stays under `uploads/`
//! and a wizard profile is `uploads/BATCH.profile.toml`.

pub mod access;
pub mod db;
pub mod rules;

use super::jobs::{JobStatus, Plan};
use super::{AdminError, AdminState, Viewer};
use mailferry_control::batch::{self, BatchDir, BatchStatus, Mode, NewBatch, RowProblem};
use mailferry_control::endpoint::{Endpoint, TestReport};
use mailferry_control::lifecycle::Settings;
use mailferry_control::moving::Destination;
use mailferry_control::status::MoveStatus;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The actor recorded in the move lifecycles and the source-side audit logs.
fn actor(v: &Viewer) -> String {
    format!("admin:{}", v.name)
}

fn audit_action(
    state: &AdminState,
    v: &Viewer,
    action: &str,
    data: serde_json::Value,
) -> Result<(), AdminError> {
    let mut d = json!({ "action": action });
    if let (Some(m), serde_json::Value::Object(extra)) = (d.as_object_mut(), data) {
        m.extend(extra);
    }
    state.audit().record(&v.name, "admin.action", d)?;
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AdminError> + Send + 'static,
) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AdminError::Internal(format!("worker thread failed: {e}")))?
}

fn check_simple_name(what: &str, name: &str) -> Result<(), AdminError> {
    batch::check_name(name).map_err(|_| {
        AdminError::invalid(format!(
            "{what} name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'"
        ))
    })
}

// === Endpoints ===

/// A new endpoint, as the wizard and `POST /api/v1/endpoints` give it.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// Its name (file name under `endpoints/`).
    pub name: String,
    /// `maildir`, `mbox`, `eml` or `imap`.
    pub kind: String,
    /// File sources: the mailbox path, with `{user}` for the CSV's UserName.
    pub root: Option<String>,
    /// IMAP: server host.
    pub host: Option<String>,
    /// IMAP: port.
    pub port: Option<u16>,
    /// IMAP: `imaps` or `starttls`.
    pub tls: Option<String>,
    /// IMAP: CA file to trust instead of the system roots.
    pub ca_file: Option<String>,
    /// IMAP: Dovecot master user.
    pub master_user: Option<String>,
    /// IMAP: the master user's password file.
    pub master_password_file: Option<String>,
    /// Mailboxes in their initial copy at once.
    pub max_concurrent_moves: Option<usize>,
    /// Mailboxes in an incremental pass at once.
    pub max_concurrent_incremental_syncs: Option<usize>,
    /// Throttle of all moves of the endpoint together (`50MB`).
    pub max_bytes_per_second: Option<String>,
    /// Throttle in messages per second.
    pub max_messages_per_second: Option<f64>,
}

impl NewEndpoint {
    fn to_toml(&self) -> String {
        // Blank text fields are left out, as if not given.
        let s = |o: &Option<String>| o.clone().filter(|s| !s.trim().is_empty());
        let n = |o: Option<usize>| o.map(|v| toml::Value::from(v as i64));
        let entries: [(&str, Option<toml::Value>); 11] = [
            ("root", s(&self.root).map(Into::into)),
            ("host", s(&self.host).map(Into::into)),
            ("port", self.port.map(|v| i64::from(v).into())),
            ("tls", s(&self.tls).map(Into::into)),
            ("ca_file", s(&self.ca_file).map(Into::into)),
            ("master_user", s(&self.master_user).map(Into::into)),
            (
                "master_password_file",
                s(&self.master_password_file).map(Into::into),
            ),
            ("max_concurrent_moves", n(self.max_concurrent_moves)),
            (
                "max_concurrent_incremental_syncs",
                n(self.max_concurrent_incremental_syncs),
            ),
            (
                "max_bytes_per_second",
                s(&self.max_bytes_per_second).map(Into::into),
            ),
            (
                "max_messages_per_second",
                self.max_messages_per_second.map(Into::into),
            ),
        ];
        let mut t = toml::Table::new();
        t.insert("kind".into(), self.kind.clone().into());
        for (k, v) in entries {
            if let Some(v) = v {
                t.insert(k.into(), v);
            }
        }
        toml::to_string(&t).expect("endpoint serializes")
    }
}

/// An endpoint and its name.
#[derive(Clone, Debug, Serialize)]
pub struct EndpointInfo {
    /// Its name.
    pub name: String,
    /// Its settings.
    #[serde(flatten)]
    pub endpoint: Endpoint,
}

fn endpoint_path(state: &AdminState, name: &str) -> Result<PathBuf, AdminError> {
    check_simple_name("endpoint", name)?;
    Ok(state.config().endpoints_dir().join(format!("{name}.toml")))
}

/// The saved endpoint `name` (404 if there is none).
pub fn load_endpoint(state: &AdminState, name: &str) -> Result<(PathBuf, Endpoint), AdminError> {
    let p = endpoint_path(state, name)?;
    if !p.exists() {
        return Err(AdminError::NotFound(format!(
            "no endpoint {name}; create it first (POST /api/v1/endpoints)"
        )));
    }
    let ep = Endpoint::load(&p)?;
    Ok((p, ep))
}

/// Every endpoint, by name.
pub fn list_endpoints(state: &AdminState) -> Result<Vec<EndpointInfo>, AdminError> {
    let dir = state.config().endpoints_dir();
    let mut out = Vec::new();
    let rd = std::fs::read_dir(&dir)
        .map_err(|e| AdminError::Internal(format!("{}: {e}", dir.display())))?;
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".toml")
                .map(String::from)
        })
        .collect();
    names.sort();
    for name in names {
        let (_, endpoint) = load_endpoint(state, &name)?;
        out.push(EndpointInfo { name, endpoint });
    }
    Ok(out)
}

/// Checks a new endpoint without saving it: its name is free and every key is good
/// (all problems at once). 409 if the name is taken. The wizard checks with this on
/// Next and tests with it; only [`create_endpoint`] writes.
pub fn check_new_endpoint(
    state: &AdminState,
    n: &NewEndpoint,
) -> Result<(PathBuf, String, Endpoint), AdminError> {
    let path = endpoint_path(state, &n.name)?;
    if path.exists() {
        return Err(AdminError::Conflict(format!(
            "endpoint {} exists already; pick another name",
            n.name
        )));
    }
    let text = n.to_toml();
    let endpoint = Endpoint::parse(&text, &path).map_err(|e| AdminError::invalid(e.to_string()))?;
    Ok((path, text, endpoint))
}

/// Creates an endpoint after checking every key (all problems at once). 409 if the
/// name is taken.
pub fn create_endpoint(
    state: &AdminState,
    v: &Viewer,
    n: &NewEndpoint,
) -> Result<EndpointInfo, AdminError> {
    v.require_admin()?;
    let (path, text, endpoint) = check_new_endpoint(state, n)?;
    std::fs::write(&path, text)
        .map_err(|e| AdminError::Internal(format!("{}: {e}", path.display())))?;
    audit_action(
        state,
        v,
        "endpoint.create",
        json!({"endpoint": n.name, "kind": n.kind}),
    )?;
    Ok(EndpointInfo {
        name: n.name.clone(),
        endpoint,
    })
}

/// Tests an endpoint that is not saved (the wizard's Test connection before Next):
/// nothing is written but the `endpoint.test` audit record, with `saved: false`.
pub async fn test_new_endpoint(
    state: &AdminState,
    v: &Viewer,
    n: &NewEndpoint,
    user: Option<&str>,
) -> Result<TestReport, AdminError> {
    v.require_admin()?;
    let (_, _, ep) = check_new_endpoint(state, n)?;
    let r = mailferry_control::endpoint::test(&ep, user.filter(|u| !u.is_empty()), None).await?;
    audit_action(
        state,
        v,
        "endpoint.test",
        json!({"endpoint": n.name, "user": user, "ok": r.ok, "saved": false}),
    )?;
    Ok(r)
}

/// Tests an endpoint (connectivity; with `user`, that user's mailbox). Audited: it
/// reaches out to the source.
pub async fn test_endpoint(
    state: &AdminState,
    v: &Viewer,
    name: &str,
    user: Option<&str>,
) -> Result<TestReport, AdminError> {
    v.require_admin()?;
    let (_, ep) = load_endpoint(state, name)?;
    let r = mailferry_control::endpoint::test(&ep, user.filter(|u| !u.is_empty()), None).await?;
    audit_action(
        state,
        v,
        "endpoint.test",
        json!({"endpoint": name, "user": user, "ok": r.ok}),
    )?;
    Ok(r)
}

// === Batches ===

/// When a batch's first pass starts.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "when")]
pub enum StartSchedule {
    /// As soon as it is created.
    Now,
    /// Not before this time (RFC 3339 or `2h`).
    Later {
        /// The time.
        at: String,
    },
    /// When an admin starts it.
    #[default]
    Manual,
}

/// How a batch is completed.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Completion {
    /// As soon as every mailbox is Synced.
    Automatic,
    /// Held at Synced until an admin completes it.
    #[default]
    Manual,
    /// At or after this time (RFC 3339 or `2h`).
    After {
        /// The time.
        at: String,
    },
}

/// The wizard's settings of a new batch.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSettings {
    /// A migration profile file (default: the embedded default).
    pub profile: Option<String>,
    /// Folders not to move (exact names).
    pub excluded_folders: Vec<String>,
    /// Unapproved bad items tolerated.
    pub bad_item_limit: Option<u64>,
    /// Items larger than this many bytes are skipped as large items.
    pub large_item_limit: Option<u64>,
    /// Read throttle of one move (`50MB`).
    pub max_bytes_per_second: Option<String>,
    /// Read throttle of one move in messages per second.
    pub max_messages_per_second: Option<f64>,
    /// Mailboxes at once (at most the endpoint's `max_concurrent_moves`).
    pub concurrency: Option<usize>,
    /// When to start.
    pub start: StartSchedule,
    /// When to complete.
    pub completion: Completion,
    /// Who receives the reports (shown with the batch; mailferry sends no mail).
    pub report_recipients: Vec<String>,
}

/// A new batch, as the wizard and `POST /api/v1/batches` give it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewBatchRequest {
    /// Its name.
    pub name: String,
    /// `imap` or `file` (Maildir/mbox/eml import); must match the endpoint.
    pub migration_type: String,
    /// The endpoint's name.
    pub endpoint: String,
    /// The CSV text (`EmailAddress,UserName,Password`).
    pub csv: String,
    /// Settings and schedule.
    #[serde(default)]
    pub settings: BatchSettings,
}

/// The wizard's choices kept beside the batch (`admin.json`).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct AdminBatchMeta {
    /// `imap` or `file`.
    pub migration_type: String,
    /// The endpoint's name.
    pub endpoint: String,
    /// Settings as given.
    pub settings: BatchSettings,
    /// Who created it.
    pub created_by: String,
}

/// A batch with its status, its latest run and the wizard's choices.
#[derive(Clone, Debug, Serialize)]
pub struct BatchInfo {
    /// Status of every mailbox, with totals.
    #[serde(flatten)]
    pub status: BatchStatus,
    /// The latest run started by the service, if any since it started.
    pub job: Option<JobStatus>,
    /// The wizard's choices (none for batches made with the CLI).
    pub admin: Option<AdminBatchMeta>,
}

fn batch_dir(state: &AdminState, name: &str) -> Result<BatchDir, AdminError> {
    check_simple_name("batch", name)?;
    let bd = BatchDir::new(&state.config().batches_dir(), name)?;
    if !bd.dir.join(batch::BATCH_FILE).exists() {
        return Err(AdminError::NotFound(format!(
            "no batch {name}; create it first (POST /api/v1/batches)"
        )));
    }
    Ok(bd)
}

fn read_meta(bd: &BatchDir) -> Option<AdminBatchMeta> {
    let b = std::fs::read(bd.dir.join("admin.json")).ok()?;
    serde_json::from_slice(&b).ok()
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AdminError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| AdminError::Internal(format!("{}: {e}", path.display())))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| AdminError::Internal(format!("{}: {e}", path.display())))
}

fn parse_time(what: &str, s: &str) -> Result<i64, AdminError> {
    let t = mailferry_control::lifecycle::parse_time(s)
        .map_err(|e| AdminError::invalid(format!("{what}: {e}")))?;
    mailferry_core::profile::parse_rfc3339(&t)
        .map_err(|e| AdminError::invalid(format!("{what}: {e}")))
}

/// The profile text of a batch: the chosen profile with the wizard's excluded folders
/// and throttle over it. `None` when neither is set (the profile file is used as is).
pub fn batch_profile(s: &BatchSettings) -> Result<Option<String>, AdminError> {
    if s.excluded_folders.is_empty()
        && s.max_bytes_per_second.is_none()
        && s.max_messages_per_second.is_none()
    {
        return Ok(None);
    }
    let base = match &s.profile {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| AdminError::invalid(format!("profile {p}: {e}")))?,
        None => mailferry_core::profile::DEFAULT_PROFILE.to_string(),
    };
    let mut t: toml::Table = base
        .parse()
        .map_err(|e| AdminError::invalid(format!("profile: {e}")))?;
    let table = |t: &mut toml::Table, k: &str| -> toml::Table {
        match t.remove(k) {
            Some(toml::Value::Table(x)) => x,
            _ => toml::Table::new(),
        }
    };
    if !s.excluded_folders.is_empty() {
        let mut src = table(&mut t, "source");
        src.insert(
            "exclude_folders".into(),
            toml::Value::Array(
                s.excluded_folders
                    .iter()
                    .map(|f| f.clone().into())
                    .collect(),
            ),
        );
        t.insert("source".into(), src.into());
    }
    if s.max_bytes_per_second.is_some() || s.max_messages_per_second.is_some() {
        let mut th = table(&mut t, "throttle");
        if let Some(b) = &s.max_bytes_per_second {
            th.insert("max_bytes_per_second".into(), b.clone().into());
        }
        if let Some(m) = s.max_messages_per_second {
            th.insert("max_messages_per_second".into(), m.into());
        }
        t.insert("throttle".into(), th.into());
    }
    let text = toml::to_string(&t).expect("profile serializes");
    mailferry_core::profile::Profile::parse(&text, "batch settings")
        .map_err(|e| AdminError::invalid(e.to_string()))?;
    Ok(Some(text))
}

/// A CSV row that passed the checks.
#[derive(Clone, Debug, Serialize)]
pub struct CheckedRow {
    /// Its row number (the header is row 1).
    pub row: u64,
    /// The destination mailbox.
    pub address: String,
    /// The source user name.
    pub user_name: String,
}

fn problems_error(problems: Vec<RowProblem>) -> AdminError {
    let mut message = format!(
        "the CSV has {} problem(s); nothing was created. Fix these rows and send it again:",
        problems.len()
    );
    for p in &problems {
        message.push_str(&format!(" row {}, {}: {};", p.row, p.column, p.reason));
    }
    AdminError::Invalid {
        message,
        rows: problems,
    }
}

/// Checks a batch CSV against an endpoint without creating anything (the wizard's
/// mailboxes step): the good rows, or every bad row with its reason (422). Not audited:
/// it changes nothing and needs no admin role.
pub async fn check_csv(
    state: &AdminState,
    endpoint: &str,
    csv: &str,
) -> Result<Vec<CheckedRow>, AdminError> {
    let (_, ep) = load_endpoint(state, endpoint)?;
    check_csv_with(state, ep, csv).await
}

/// [`check_csv`] against an endpoint not saved yet (the wizard's new endpoint).
pub async fn check_csv_with(
    state: &AdminState,
    ep: Endpoint,
    csv: &str,
) -> Result<Vec<CheckedRow>, AdminError> {
    let tmp = state.config().uploads_dir().join(format!(
        ".check-{}.csv",
        hex::encode(mailferry_core::secret::SecretBytes::random(8).expose())
    ));
    write_private(&tmp, csv.as_bytes())?;
    let t2 = tmp.clone();
    let r = blocking(move || Ok(batch::check_users(&t2, &ep, &HashSet::new())?)).await;
    let _ = std::fs::remove_file(&tmp);
    match r? {
        Ok(users) => Ok(users
            .users
            .into_iter()
            .map(|u| CheckedRow {
                row: u.row,
                address: u.address.to_string(),
                user_name: u.user_name,
            })
            .collect()),
        Err(p) => Err(problems_error(p)),
    }
}

/// Creates a batch: checks the endpoint, the settings and every CSV row (every bad row
/// is returned with its reason, as a 422, and nothing is created), then creates every
/// move `Created` and, with `start: now` or `later`, starts it in the background
/// (against the database: records it as `batch new --db` does and, with `start: now`,
/// queues it for the workers).
pub async fn create_batch(
    state: &AdminState,
    v: &Viewer,
    req: NewBatchRequest,
) -> Result<BatchInfo, AdminError> {
    v.require_admin()?;
    check_simple_name("batch", &req.name)?;
    let (ep_path, ep) = load_endpoint(state, &req.endpoint)?;
    check_migration_type(&req, &ep)?;
    let s = &req.settings;
    let schedule = Schedule::of(s)?;
    if let Some(p) = &s.profile {
        mailferry_control::lifecycle::load_profile(Some(Path::new(p)))
            .map_err(|e| AdminError::invalid(format!("profile: {e}")))?;
    }
    let profile_text = batch_profile(s)?;
    let root = state.config().batches_dir();
    let bd = BatchDir::new(&root, &req.name)?;
    let taken = match state.backend().db() {
        Some(d) => db::exists(d, &req.name).await?,
        None => bd.dir.exists(),
    };
    if taken {
        return Err(AdminError::Conflict(format!(
            "batch {} exists already; pick another name",
            req.name
        )));
    }
    let csv_path = keep_checked_csv(state, &req.name, &req.csv, &ep).await?;
    let cfg = state.config();
    let new = batch::NewBatch {
        csv: csv_path,
        endpoint: ep_path,
        destination: cfg.batch_destination(),
        profile: None,
        concurrency: s.concurrency,
        settings: schedule.settings,
        actor: actor(v),
    };
    let meta = AdminBatchMeta {
        migration_type: req.migration_type.clone(),
        endpoint: req.endpoint.clone(),
        settings: s.clone(),
        created_by: v.name.clone(),
    };
    let (name, given_profile) = (req.name.clone(), s.profile.clone());
    match state.backend().db() {
        Some(d) => {
            let new = NewBatch {
                profile: match profile_text {
                    Some(text) => Some(write_profile(
                        &state
                            .config()
                            .uploads_dir()
                            .join(format!("{name}.profile.toml")),
                        &text,
                    )?),
                    None => given_profile.map(PathBuf::from),
                },
                ..new
            };
            db::create(d, &name, &new, &meta).await?;
        }
        None => {
            let bd2 = bd.clone();
            blocking(move || write_batch(&bd2, &name, new, profile_text, given_profile, &meta))
                .await?;
        }
    }
    audit_action(
        state,
        v,
        "batch.create",
        json!({"batch": req.name, "endpoint": req.endpoint, "migration_type": req.migration_type,
               "settings": serde_json::to_value(s).expect("settings serialize")}),
    )?;
    if s.start != StartSchedule::Manual {
        match state.backend().db() {
            Some(d) => {
                db::start(
                    d,
                    &req.name,
                    schedule.start_at,
                    schedule.then_complete,
                    &actor(v),
                )
                .await?;
            }
            None => state.jobs().start(
                &req.name,
                bd,
                Plan {
                    start_at: schedule.start_at,
                    then_complete: schedule.then_complete,
                    ..Plan::now(Mode::Sync, actor(v))
                },
            )?,
        }
        audit_action(
            state,
            v,
            "batch.start",
            json!({"batch": req.name, "scheduled_for": schedule.start_at.map(mailferry_core::rfc3339)}),
        )?;
    }
    batch_status(state, &req.name).await
}

/// Writes a batch's profile file; returns its path.
fn write_profile(path: &Path, text: &str) -> Result<PathBuf, AdminError> {
    std::fs::write(path, text)
        .map_err(|e| AdminError::Internal(format!("{}: {e}", path.display())))?;
    Ok(path.to_path_buf())
}

/// Refuses a migration type that does not fit the endpoint's kind (`imap` needs an IMAP
/// endpoint, `file` a Maildir, mbox or eml one).
fn check_migration_type(req: &NewBatchRequest, ep: &Endpoint) -> Result<(), AdminError> {
    let kind = serde_json::to_value(ep.kind).expect("kind serializes");
    let is_imap = kind == "imap";
    match (req.migration_type.as_str(), is_imap) {
        ("imap", true) | ("file", false) => Ok(()),
        ("imap", false) | ("file", true) => Err(AdminError::invalid(format!(
            "migration type {} does not match endpoint {} (kind {}); pick an {} endpoint",
            req.migration_type,
            req.endpoint,
            kind.as_str().unwrap_or("?"),
            if req.migration_type == "imap" {
                "IMAP"
            } else {
                "Maildir, mbox or eml"
            }
        ))),
        (other, _) => Err(AdminError::invalid(format!(
            "migration type {other:?}: use imap or file (Maildir/mbox/eml import)"
        ))),
    }
}

/// What the wizard's start and completion choices make of a new batch: its lifecycle
/// settings and the plan of its first run.
struct Schedule {
    settings: Settings,
    start_at: Option<i64>,
    then_complete: Option<Option<i64>>,
}

impl Schedule {
    fn of(s: &BatchSettings) -> Result<Schedule, AdminError> {
        if s.concurrency == Some(0) {
            return Err(AdminError::invalid("concurrency must be at least 1"));
        }
        let start_at = match &s.start {
            StartSchedule::Later { at } => Some(parse_time("start later", at)?),
            _ => None,
        };
        let mut settings = Settings {
            bad_item_limit: s.bad_item_limit,
            large_item_limit: s.large_item_limit,
            ..Default::default()
        };
        let then_complete = match &s.completion {
            Completion::Automatic => {
                settings.suspend_when_ready = Some(false);
                Some(None)
            }
            Completion::Manual => {
                settings.suspend_when_ready = Some(true);
                None
            }
            Completion::After { at } => {
                let t = parse_time("complete after", at)?;
                settings.complete_after = Some(mailferry_core::rfc3339(t));
                Some(Some(t))
            }
        };
        Ok(Schedule {
            settings,
            start_at,
            then_complete,
        })
    }
}

/// Checks every row of the uploaded CSV against the endpoint and keeps it under
/// `uploads/` (a `Password` column is read again at each pass, never stored). With a bad
/// row nothing is kept and every problem is returned.
async fn keep_checked_csv(
    state: &AdminState,
    name: &str,
    csv: &str,
    ep: &Endpoint,
) -> Result<PathBuf, AdminError> {
    let uploads = state.config().uploads_dir();
    let csv_path = uploads.join(format!("{name}.csv"));
    let tmp = uploads.join(format!(".{name}.csv.check"));
    write_private(&tmp, csv.as_bytes())?;
    let checked = {
        let (tmp, ep) = (tmp.clone(), ep.clone());
        blocking(move || Ok(batch::check_users(&tmp, &ep, &HashSet::new())?)).await
    };
    let problems: Vec<RowProblem> = match checked {
        Ok(Ok(_)) => Vec::new(),
        Ok(Err(p)) => p,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if !problems.is_empty() {
        let _ = std::fs::remove_file(&tmp);
        return Err(problems_error(problems));
    }
    std::fs::rename(&tmp, &csv_path)
        .map_err(|e| AdminError::Internal(format!("{}: {e}", csv_path.display())))?;
    Ok(csv_path)
}

/// Writes the batch directory: its profile (the wizard's, or the one given), every move
/// (`batch::create`; on failure the directory is removed) and the wizard's `admin.json`.
fn write_batch(
    bd: &BatchDir,
    name: &str,
    mut new: batch::NewBatch,
    profile_text: Option<String>,
    given_profile: Option<String>,
    meta: &AdminBatchMeta,
) -> Result<(), AdminError> {
    std::fs::create_dir_all(&bd.dir)
        .map_err(|e| AdminError::Internal(format!("{}: {e}", bd.dir.display())))?;
    new.profile = match profile_text {
        Some(text) => Some(write_profile(&bd.dir.join("profile.toml"), &text)?),
        None => given_profile.map(PathBuf::from),
    };
    if let Err(e) = batch::create(bd, name, &new) {
        let _ = std::fs::remove_dir_all(&bd.dir);
        return Err(e.into());
    }
    let m = serde_json::to_vec_pretty(meta).expect("meta serializes");
    std::fs::write(bd.dir.join("admin.json"), m)
        .map_err(|e| AdminError::Internal(format!("admin.json: {e}")))?;
    Ok(())
}

/// Every batch, with status (oldest name first).
pub async fn list_batches(state: &AdminState) -> Result<Vec<BatchInfo>, AdminError> {
    if let Some(d) = state.backend().db() {
        let mut out = Vec::new();
        for n in db::names(d).await? {
            out.push(db::batch_info(d, &n).await?);
        }
        return Ok(out);
    }
    let root = state.config().batches_dir();
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .map_err(|e| AdminError::Internal(format!("{}: {e}", root.display())))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(batch::BATCH_FILE).exists())
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        out.push(batch_status(state, &n).await?);
    }
    Ok(out)
}

/// A batch's status: every mailbox's state, percent, items, bytes, rate and ETA, with
/// totals, the latest run, and the wizard's choices. What the dashboard polls.
pub async fn batch_status(state: &AdminState, name: &str) -> Result<BatchInfo, AdminError> {
    if let Some(d) = state.backend().db() {
        check_simple_name("batch", name)?;
        return db::batch_info(d, name).await;
    }
    let bd = batch_dir(state, name)?;
    let job = state.jobs().get(name);
    blocking(move || {
        Ok(BatchInfo {
            status: batch::status(&bd)?,
            job,
            admin: read_meta(&bd),
        })
    })
    .await
}

/// Where a batch action acts: the batch's directory, or the database.
enum At<'a> {
    Dir(BatchDir),
    Db(&'a crate::backend::DbBackend),
}

/// The steps every batch action shares around its own: only an admin may act, the batch
/// must exist, the action's details (with the batch's name) go to the admin audit log,
/// and the answer is the batch's status afterwards.
async fn batch_action<'a, F, Fut>(
    state: &'a AdminState,
    v: &Viewer,
    name: &str,
    action: &str,
    step: F,
) -> Result<BatchInfo, AdminError>
where
    F: FnOnce(At<'a>) -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value, AdminError>>,
{
    v.require_admin()?;
    let at = match state.backend().db() {
        Some(d) => {
            check_simple_name("batch", name)?;
            if !db::exists(d, name).await? {
                return Err(db::no_batch(name));
            }
            At::Db(d)
        }
        None => At::Dir(batch_dir(state, name)?),
    };
    let details = step(at).await?;
    let mut data = json!({ "batch": name });
    if let (Some(m), serde_json::Value::Object(extra)) = (data.as_object_mut(), details) {
        m.extend(extra);
    }
    audit_action(state, v, action, data)?;
    batch_status(state, name).await
}

/// 409 for a run asked of a suspended batch.
fn refuse_suspended(name: &str, suspended: bool) -> Result<(), AdminError> {
    if suspended {
        return Err(AdminError::Conflict(format!(
            "batch {name} is suspended; resume it first (POST /api/v1/batches/{name}/resume)"
        )));
    }
    Ok(())
}

/// Refuses (409, with the reason) an action that does not fit the batch's state now:
/// the rule of [`rules`], the same the pages follow.
async fn enforce(
    state: &AdminState,
    name: &str,
    rule: impl FnOnce(&BatchStatus, Option<&JobStatus>) -> Result<(), String>,
) -> Result<(), AdminError> {
    let s = match state.backend().db() {
        Some(d) => db::status(d, name).await?,
        None => {
            let bd = batch_dir(state, name)?;
            blocking(move || Ok(batch::status(&bd)?)).await?
        }
    };
    let job = match state.backend().db() {
        Some(d) => db::job(d, name).await?,
        None => state.jobs().get(name),
    };
    rule(&s, job.as_ref()).map_err(AdminError::Conflict)
}

/// Starts a pass of every mailbox of the batch in the background (then completes it if
/// its completion is automatic or timed). 409 if it runs already or is suspended.
/// Against the database: queues the passes for the workers.
pub async fn start_batch(
    state: &AdminState,
    v: &Viewer,
    name: &str,
) -> Result<BatchInfo, AdminError> {
    batch_action(state, v, name, "batch.start", |at| async move {
        enforce(state, name, rules::check_run).await?;
        let bd = match at {
            At::Db(d) => {
                let then =
                    then_complete(name, db::meta(d, name).await?, &db::batch(d, name).await?)?;
                db::start(d, name, None, then, &actor(v)).await?;
                return Ok(json!({}));
            }
            At::Dir(bd) => bd,
        };
        let b = bd.load()?;
        refuse_suspended(name, b.suspended)?;
        state.jobs().start(
            name,
            bd.clone(),
            Plan {
                then_complete: then_complete(name, read_meta(&bd), &b)?,
                ..Plan::now(Mode::Sync, actor(v))
            },
        )?;
        Ok(json!({}))
    })
    .await
}

/// What follows a start the admin asks for: the batch's completion as the wizard chose
/// it, with the time resolved when the batch was created (the wizard's `2h` means two
/// hours after creation, not after this start).
fn then_complete(
    name: &str,
    meta: Option<AdminBatchMeta>,
    b: &batch::Batch,
) -> Result<Option<Option<i64>>, AdminError> {
    Ok(match meta.map(|m| m.settings.completion) {
        Some(Completion::Automatic) => Some(None),
        Some(Completion::After { at }) => Some(Some(match &b.settings.complete_after {
            Some(t) => mailferry_core::profile::parse_rfc3339(t)
                .map_err(|e| AdminError::Internal(format!("batch {name}: complete_after: {e}")))?,
            None => parse_time("complete after", &at)?,
        })),
        _ => None,
    })
}

/// Suspends the batch: no further pass starts, every mailbox not completed is
/// suspended (a running pass ends first).
pub async fn suspend_batch(
    state: &AdminState,
    v: &Viewer,
    name: &str,
) -> Result<BatchInfo, AdminError> {
    let a = actor(v);
    batch_action(state, v, name, "batch.suspend", |at| async move {
        enforce(state, name, |s, j| {
            rules::check_batch(s, j, rules::BatchAction::Suspend)
        })
        .await?;
        let (now, later) = match at {
            At::Db(d) => db::suspend(d, name, &a).await?,
            At::Dir(bd) => blocking(move || Ok(batch::suspend(&bd, &a)?)).await?,
        };
        Ok(json!({"suspended": now, "when_pass_ends": later}))
    })
    .await
}

/// Resumes a suspended batch (passes run again with start).
pub async fn resume_batch(
    state: &AdminState,
    v: &Viewer,
    name: &str,
) -> Result<BatchInfo, AdminError> {
    let a = actor(v);
    batch_action(state, v, name, "batch.resume", |at| async move {
        enforce(state, name, |s, j| {
            rules::check_batch(s, j, rules::BatchAction::Resume)
        })
        .await?;
        let n = match at {
            At::Db(d) => db::resume(d, name, &a).await?,
            At::Dir(bd) => blocking(move || Ok(batch::resume(&bd, &a)?)).await?,
        };
        Ok(json!({"resumed": n}))
    })
    .await
}

/// Runs the final pass of every mailbox not completed, in the background; with
/// `approve_skipped`, every skipped item is accepted. Against the database: queues the
/// final passes for the workers.
pub async fn complete_batch(
    state: &AdminState,
    v: &Viewer,
    name: &str,
    approve_skipped: bool,
) -> Result<BatchInfo, AdminError> {
    batch_action(state, v, name, "batch.complete", |at| async move {
        enforce(state, name, |s, j| {
            rules::check_batch(s, j, rules::BatchAction::Complete)
        })
        .await?;
        match at {
            At::Db(d) => {
                db::complete(d, name, approve_skipped, &actor(v)).await?;
            }
            At::Dir(bd) => {
                refuse_suspended(name, bd.load()?.suspended)?;
                state.jobs().start(
                    name,
                    bd,
                    Plan {
                        approve_skipped,
                        ..Plan::now(Mode::Complete, actor(v))
                    },
                )?;
            }
        }
        Ok(json!({"approve_skipped": approve_skipped}))
    })
    .await
}

fn batch_user(
    state: &AdminState,
    name: &str,
    mailbox: &str,
) -> Result<(BatchDir, batch::BatchUser), AdminError> {
    let bd = batch_dir(state, name)?;
    let b = bd.load()?;
    let u = b
        .users
        .into_iter()
        .find(|u| u.address == mailbox)
        .ok_or_else(|| {
            AdminError::NotFound(format!(
                "batch {name} has no mailbox {mailbox}; see GET /api/v1/batches/{name}"
            ))
        })?;
    Ok((bd, u))
}

/// A move's state directory to read: its own (files), or a local copy of its rows (the
/// database; deleted when this drops). Readers see the same files either way.
struct MoveDir {
    path: PathBuf,
    _copy: Option<tempfile::TempDir>,
}

async fn move_dir(state: &AdminState, name: &str, mailbox: &str) -> Result<MoveDir, AdminError> {
    if let Some(d) = state.backend().db() {
        check_simple_name("batch", name)?;
        let (_, id) = db::user(d, name, mailbox).await?;
        let (copy, path) = db::copy(d, &id).await?;
        return Ok(MoveDir {
            path,
            _copy: Some(copy),
        });
    }
    let (bd, u) = batch_user(state, name, mailbox)?;
    Ok(MoveDir {
        path: bd.mailbox_dir(&u),
        _copy: None,
    })
}

/// Runs a pass of one move accepting every item it skipped (recorded as
/// `item.approved` in its audit log), in the background (against the database: queued
/// for the workers). An IMAP mailbox whose password was inline in the batch's CSV gets
/// it from that CSV again, as a batch run does; if it is not there any more, 422 saying
/// so (nothing runs).
pub async fn approve_skipped(
    state: &AdminState,
    v: &Viewer,
    name: &str,
    mailbox: &str,
) -> Result<MoveStatus, AdminError> {
    v.require_admin()?;
    let (at, u) = match state.backend().db() {
        Some(d) => {
            check_simple_name("batch", name)?;
            (At::Db(d), db::user(d, name, mailbox).await?.0)
        }
        None => {
            let (bd, u) = batch_user(state, name, mailbox)?;
            (At::Dir(bd), u)
        }
    };
    let address = u.address.clone();
    enforce(state, name, |s, j| {
        let m = s
            .mailboxes
            .iter()
            .find(|m| m.address == address)
            .ok_or_else(|| format!("batch {name} has no mailbox {address}"))?;
        rules::check_approve(s, j, &m.status)
    })
    .await?;
    // Checked now so the admin sees it in the answer, not only in the run's record.
    {
        let u = u.clone();
        blocking(move || Ok(batch::inline_password(&u).map(|_| ())?)).await?;
    }
    match at {
        At::Db(d) => db::enqueue_approval(d, name, mailbox).await?,
        At::Dir(bd) => state.jobs().approve(name, &bd, u, actor(v))?,
    }
    audit_action(
        state,
        v,
        "move.approve_skipped",
        json!({"batch": name, "mailbox": mailbox}),
    )?;
    move_status(state, name, mailbox).await
}

// === Moves, reports, audit ===

/// One move's status: state, percent, items, bytes, rate, ETA, skipped items, history.
pub async fn move_status(
    state: &AdminState,
    name: &str,
    mailbox: &str,
) -> Result<MoveStatus, AdminError> {
    if let Some(d) = state.backend().db() {
        check_simple_name("batch", name)?;
        let (_, id) = db::user(d, name, mailbox).await?;
        return db::move_status(d, &id).await;
    }
    let (bd, u) = batch_user(state, name, mailbox)?;
    let dir = bd.mailbox_dir(&u);
    blocking(move || Ok(mailferry_control::status::status(&dir)?)).await
}

/// One move's record (every pass's report, the lifecycle, the source log's digest);
/// `None` before its first pass ended.
pub async fn move_record(
    state: &AdminState,
    name: &str,
    mailbox: &str,
) -> Result<Option<mailferry_control::report::MoveRecord>, AdminError> {
    let dir = move_dir(state, name, mailbox).await?;
    blocking(move || {
        let reports = dir.path.join("reports.jsonl");
        // A copy of the rows always has the file, empty until a pass ended.
        if std::fs::metadata(&reports).map_or(true, |m| m.len() == 0) {
            return Ok(None);
        }
        Ok(Some(mailferry_control::report::load(&dir.path, None)?))
    })
    .await
}

/// One move's record (every pass's report, the lifecycle, the source log's digest), as
/// JSON (`mailferry-move-record/1`).
pub async fn move_report(
    state: &AdminState,
    name: &str,
    mailbox: &str,
) -> Result<serde_json::Value, AdminError> {
    match move_record(state, name, mailbox).await? {
        Some(r) => Ok(serde_json::to_value(&r).expect("move record serializes")),
        None => Err(AdminError::NotFound(
            "this move has no report yet: it has not run a pass (start its batch)".into(),
        )),
    }
}

/// What `audit verify` found for a move's source-side log.
#[derive(Clone, Debug, Serialize)]
pub struct AuditCheck {
    /// The log verifies (format, order, hash chain).
    pub ok: bool,
    /// Records, genesis included.
    pub records: u64,
    /// Hash of its last record.
    pub head: String,
    /// Why not, when not.
    pub error: Option<String>,
}

/// Verifies the hash chain of a move's source-side audit log.
pub async fn audit_verify(
    state: &AdminState,
    name: &str,
    mailbox: &str,
) -> Result<AuditCheck, AdminError> {
    let dir = move_dir(state, name, mailbox).await?;
    blocking(move || {
        let log = mailferry_control::audit_cmd::log_path(&dir.path)?;
        Ok(match mailferry_audit::verify(&log) {
            Ok(o) => AuditCheck {
                ok: true,
                records: o.records,
                head: o.head,
                error: None,
            },
            Err(e) => AuditCheck {
                ok: false,
                records: 0,
                head: String::new(),
                error: Some(e.to_string()),
            },
        })
    })
    .await
}

/// Reconciles a move's source-side log with the volume's destination log (opens the
/// volume read-only; 409 while a pass holds it).
pub async fn reconcile(
    state: &AdminState,
    name: &str,
    mailbox: &str,
) -> Result<mailferry_control::audit_cmd::Reconciliation, AdminError> {
    let dir = move_dir(state, name, mailbox).await?;
    let cfg = state.config().clone();
    let mailbox = mailbox.to_string();
    blocking(move || {
        // A move streamed to a `serve` elsewhere is in that store's volume, not in the
        // service's: comparing with ours would call every message missing.
        if let Some(Destination::Remote { url, .. }) = mailferry_control::lifecycle::load(&dir.path)?
            .and_then(|lc| lc.invocation)
            .map(|i| i.destination)
        {
            return Err(AdminError::Conflict(format!(
                "not compared: {mailbox} was moved into the store at {url}, not into this service's volume; reconcile it on that store's machine, against the store's volume"
            )));
        }
        let vol = mailferry_store::Volume::open(
            &cfg.volume,
            &cfg.key_file,
            &mailferry_core::profile::Profile::embedded_default().store,
        )
        .map_err(|e| {
            AdminError::Conflict(format!(
                "volume {}: {e} (if a pass is running, try again when it ends)",
                cfg.volume.display()
            ))
        })?;
        mailferry_control::audit_cmd::reconcile(&dir.path, &vol).map_err(|e| match e {
            // The service holds the volume key only: it cannot read a customer-key
            // tenant's mail, and must not suggest a way around the lockbox.
            mailferry_control::AppError::Store(mailferry_store::StoreError::CustomerKeyNeeded {
                tenant,
                ..
            }) => AdminError::Conflict(format!(
                "not compared: {tenant} holds its own key, so this service cannot read the mailbox to compare it with the source; the tenant can, with its key"
            )),
            other => other.into(),
        })
    })
    .await
}

/// What the admin audit log check found.
#[derive(Clone, Debug, Serialize)]
pub struct AdminAuditCheck {
    /// Records, genesis included.
    pub records: u64,
    /// Hash of the last record (pin it to detect truncation).
    pub head: String,
}

/// Verifies the admin audit log.
pub async fn admin_audit_verify(state: &AdminState) -> Result<AdminAuditCheck, AdminError> {
    let st = state.clone();
    blocking(move || {
        let o = st.audit().verify()?;
        Ok(AdminAuditCheck {
            records: o.records,
            head: o.head,
        })
    })
    .await
}

/// The admin audit log's records (newest last), at most `limit` of the newest.
pub async fn admin_audit_log(
    state: &AdminState,
    limit: usize,
) -> Result<Vec<serde_json::Value>, AdminError> {
    let st = state.clone();
    blocking(move || {
        let mut all = st.audit().read()?;
        let skip = all.len().saturating_sub(limit);
        Ok(all
            .split_off(skip)
            .into_iter()
            .map(|e| json!({"seq": e.seq, "time": e.time, "actor": e.actor, "event": e.event, "data": e.data}))
            .collect())
    })
    .await
}
