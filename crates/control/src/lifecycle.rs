//! The lifecycle of a move, as admins know it from Exchange move requests:
//! `Created → Syncing → Synced → Completing → Completed`, plus `Suspended` and `Failed`.
//!
//! Every run of `mailferry move` is a pass: the first copies the mailbox, every later one
//! mirrors what changed at the source (new, deleted, flag changes). A pass moves the
//! move to `Syncing` and, when it ends within its limits, to `Synced`, where it stays
//! through any number of incremental passes until it is completed: by `move complete`
//! (the final delta pass, then `Completed`) or, with `--complete-after TIME`, by the
//! first pass that starts after that time. A completed move refuses further passes; a
//! suspended one refuses them until it is resumed. A pass that fails, or ends over its
//! bad-item or large-item limit, leaves the move `Failed` with everything it copied kept;
//! running the move again retries it.
//!
//! The record lives in the move's state directory as `lifecycle.json` (written
//! atomically, under `lifecycle.lock` so that concurrent commands do not lose each
//! other's changes): the state, its history (state, time, reason, actor), the move's
//! settings (limits, schedule), the approved skipped items, and how to run another pass
//! (source, destination, profile: paths only, never a secret), so that `move complete
//! --state DIR` needs nothing else. Each transition is also an event (`move.state`) in
//! the source-side audit log, with the actor who caused it.
//!
//! # Suspending a running move
//!
//! A pass is not interrupted: `move suspend` on a move whose pass is running records a
//! request, and the running process honours it when that pass ends (its work is kept,
//! the move goes to `Suspended` instead of staying `Synced`); a batch starts no further
//! pass of it. A pass is a resumable delta, so nothing is lost by letting it finish, and
//! it can always be stopped outright (SIGTERM or SIGKILL): the next pass resumes it
//! exactly once.
//!
//! This module does not move messages ([`crate::moving`] does) and does not judge skipped
//! items ([`crate::limits`] does).

use crate::advice::Advice;
use crate::limits::{self, Limits, Verdict};
use crate::moving::{Clock, Connected, Destination, MoveArgs, PassHooks};
use crate::AppError;
use mailferry_agent::source::{Namespaces, SourceOptions};
use mailferry_agent::state::{write_atomic, StateDir};
use mailferry_core::profile::{format_rfc3339, parse_rfc3339, Profile};
use mailferry_core::report::MoveReport;
use mailferry_core::{unix_now, MailboxAddr};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// File name of the lifecycle record in a move's state directory.
pub const LIFECYCLE_FILE: &str = "lifecycle.json";
/// Lock file serialising changes of [`LIFECYCLE_FILE`].
pub const LOCK_FILE: &str = "lifecycle.lock";
/// Format version of [`LIFECYCLE_FILE`]; a newer one is refused, not guessed at.
pub const VERSION: u32 = 1;

/// Where a move is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveState {
    /// Known (a batch created it), no pass yet.
    Created,
    /// A pass is running (or was interrupted: the next pass resumes it).
    Syncing,
    /// Copied; incremental passes keep it in step until it is completed.
    Synced,
    /// The final pass is running.
    Completing,
    /// Done: the final pass ran; no further passes.
    Completed,
    /// Held by an admin: no passes until resumed.
    Suspended,
    /// The last pass failed or hit a limit; what it copied is kept. Running the move
    /// again retries it.
    Failed,
}

impl MoveState {
    /// The name used in JSON and tables (`synced`).
    pub fn as_str(self) -> &'static str {
        match self {
            MoveState::Created => "created",
            MoveState::Syncing => "syncing",
            MoveState::Synced => "synced",
            MoveState::Completing => "completing",
            MoveState::Completed => "completed",
            MoveState::Suspended => "suspended",
            MoveState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for MoveState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the history: the state entered, when, why and by whom.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The state entered.
    pub state: MoveState,
    /// When, RFC 3339.
    pub at: String,
    /// Why, in words.
    pub reason: String,
    /// Who: `cli:user@host`, `api:NAME`, ...
    pub actor: String,
}

/// The move's own settings, set by flags and kept across passes. A `None` (`null`) falls
/// back to the profile (and then to the built-in default).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Hold at Synced until `move complete` (clears a scheduled completion).
    pub suspend_when_ready: Option<bool>,
    /// Complete on the first pass at or after this instant (RFC 3339).
    pub complete_after: Option<String>,
    /// Unapproved bad items tolerated.
    pub bad_item_limit: Option<u64>,
    /// Messages larger than this many bytes are skipped as large items.
    pub large_item_limit: Option<u64>,
}

impl Settings {
    /// `self` with the fields `over` sets replacing its own. Setting one of
    /// `suspend_when_ready` / `complete_after` clears the other.
    pub fn merged(&self, over: &Settings) -> Settings {
        let mut s = self.clone();
        if over.suspend_when_ready == Some(true) {
            s.complete_after = None;
        }
        if over.complete_after.is_some() {
            s.suspend_when_ready = None;
        }
        s.suspend_when_ready = over.suspend_when_ready.or(s.suspend_when_ready);
        s.complete_after = over.complete_after.clone().or(s.complete_after);
        s.bad_item_limit = over.bad_item_limit.or(s.bad_item_limit);
        s.large_item_limit = over.large_item_limit.or(s.large_item_limit);
        s
    }
}

/// What the profile and the settings make of the schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Held at Synced until told.
    pub suspend_when_ready: bool,
    /// Completes on the first pass at or after this (Unix seconds), unless held.
    pub complete_after: Option<i64>,
}

impl Schedule {
    /// Settings over the profile's `[schedule]`.
    pub fn effective(settings: &Settings, profile: &Profile) -> Schedule {
        let suspend_when_ready = settings
            .suspend_when_ready
            .unwrap_or(profile.schedule.suspend_when_ready);
        let complete_after = match &settings.complete_after {
            Some(t) => parse_rfc3339(t).ok(),
            None => profile.schedule.complete_after.map(|t| t.0),
        };
        Schedule {
            suspend_when_ready,
            complete_after: complete_after.filter(|_| !suspend_when_ready),
        }
    }
}

/// How to run another pass of a move: everything `mailferry move` was given, as
/// absolute paths, and no secret (secrets stay in their files, or in the environment).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invocation {
    /// The source spec (file paths made absolute).
    pub source: String,
    /// Destination mailbox.
    pub mailbox: String,
    /// Where the messages go (paths absolute).
    pub destination: Destination,
    /// Migration profile file; `None`: the embedded default.
    pub profile: Option<PathBuf>,
    /// IMAP: password file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// IMAP: OAuth token file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth_token_file: Option<PathBuf>,
    /// IMAP: CA file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ca: Option<PathBuf>,
    /// IMAP: `--source-prefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_prefix: Option<String>,
    /// IMAP: `--source-namespaces`.
    #[serde(default, skip_serializing_if = "is_personal")]
    pub source_namespaces: Namespaces,
    /// IMAP: the pinned SHA-256 of the server's certificate (`--source-cert-sha256`,
    /// endpoint `cert_sha256`), so that later passes keep the pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_cert_sha256: Option<String>,
    /// `--max-bytes-per-second` given to `mailferry move`: later passes (`move
    /// complete`, a rerun from the record) read no faster than the admin asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes_per_second: Option<u64>,
    /// `--max-messages-per-second`, kept as its decimal text (an `f64` printed by Rust
    /// parses back to the same value) so that the record stays `Eq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_messages_per_second: Option<String>,
    /// `--maildir-names` given to `mailferry move`: later passes read folder names the
    /// same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maildir_names: Option<mailferry_core::profile::MaildirNames>,
    /// IMAP: connections the move reads with (`--source-connections`, or the
    /// endpoint's `connections` for a batch's mailbox), so that later passes (`move
    /// complete`, a rerun from the record) read with as many. Absent: the profile's
    /// `source.connections`, else the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_connections: Option<usize>,
}

fn is_personal(n: &Namespaces) -> bool {
    *n == Namespaces::Personal
}

use crate::destination::absolute;

/// A source spec with the path of a file source made absolute.
pub fn absolute_spec(spec: &str) -> String {
    for kind in ["maildir:", "mbox:", "eml:"] {
        if let Some(p) = spec.strip_prefix(kind) {
            if !p.is_empty() {
                return format!("{kind}{}", absolute(Path::new(p)).display());
            }
        }
    }
    spec.to_string()
}

/// How the source describes itself (what `move.json` records), without opening it or
/// reading any secret.
fn describe_source(spec: &str) -> String {
    if spec.starts_with("imap://") || spec.starts_with("imaps://") {
        if let Ok(s) = mailferry_agent::source::imap::ServerSpec::parse(spec) {
            return s.url();
        }
        return mailferry_agent::source::imap::redact(spec);
    }
    spec.to_string()
}

impl Invocation {
    /// Records `args` (whose profile was read from `profile`).
    pub fn new(args: &MoveArgs, profile: Option<&Path>) -> Invocation {
        let o = &args.source_options;
        Invocation {
            source: absolute_spec(&args.source),
            mailbox: args.mailbox.to_string(),
            destination: args.destination.absolute(),
            profile: profile.map(absolute),
            password_file: o.password_file.as_deref().map(absolute),
            oauth_token_file: o.oauth_token_file.as_deref().map(absolute),
            source_ca: o.source_ca.as_deref().map(absolute),
            source_prefix: o.source_prefix.clone(),
            source_namespaces: o.namespaces,
            source_cert_sha256: o.source_cert_sha256.map(|f| f.to_string()),
            max_bytes_per_second: None,
            max_messages_per_second: None,
            maildir_names: o.maildir_names,
            source_connections: o.connections,
        }
    }

    /// Records the one-off throttle flags of this run, so that later passes keep them.
    pub fn with_throttle(mut self, control: &crate::control::ControlArgs) -> Invocation {
        self.max_bytes_per_second = control.max_bytes_per_second;
        self.max_messages_per_second = control.max_messages_per_second.map(|m| m.to_string());
        self
    }

    /// The recorded throttle flags, as `mailferry move` would have parsed them.
    fn control(&self) -> Result<crate::control::ControlArgs, AppError> {
        let max_messages_per_second = match &self.max_messages_per_second {
            None => None,
            Some(t) => Some(crate::control::parse_rate_messages(t).map_err(|e| {
                AppError::Usage(format!(
                    "{LIFECYCLE_FILE}: max_messages_per_second {t:?}: {e}; fix or remove the key"
                ))
            })?),
        };
        Ok(crate::control::ControlArgs {
            dry_run: false,
            max_bytes_per_second: self.max_bytes_per_second,
            max_messages_per_second,
        })
    }

    /// The arguments of another pass into `state`.
    pub fn to_args(&self, state: &Path) -> Result<MoveArgs, AppError> {
        let mut profile = load_profile(self.profile.as_deref())?;
        self.control()?.apply(&mut profile);
        Ok(MoveArgs {
            source: self.source.clone(),
            mailbox: MailboxAddr::parse(&self.mailbox)?,
            destination: self.destination.clone(),
            state: state.to_path_buf(),
            profile,
            source_options: SourceOptions {
                password_file: self.password_file.clone(),
                oauth_token_file: self.oauth_token_file.clone(),
                source_ca: self.source_ca.clone(),
                source_cert_sha256: self.cert_sha256()?,
                password: None,
                source_prefix: self.source_prefix.clone(),
                namespaces: self.source_namespaces,
                maildir_names: self.maildir_names,
                connections: self.connections()?,
                ..Default::default()
            },
        })
    }

    /// The recorded connection count, checked: a record edited by hand must not ask the
    /// source for none, or for more than it may open.
    fn connections(&self) -> Result<Option<usize>, AppError> {
        use mailferry_agent::source::connections::MAX_CONNECTIONS;
        match self.source_connections {
            Some(n) if !(1..=MAX_CONNECTIONS).contains(&n) => Err(AppError::Usage(format!(
                "{LIFECYCLE_FILE}: source_connections {n}: must be between 1 and \
                 {MAX_CONNECTIONS}; fix or remove the key"
            ))),
            n => Ok(n),
        }
    }

    /// The recorded certificate pin, parsed.
    pub fn cert_sha256(&self) -> Result<Option<mailferry_core::tls::CertSha256>, AppError> {
        self.source_cert_sha256
            .as_deref()
            .map(|t| {
                mailferry_core::tls::CertSha256::parse(t).map_err(|e| {
                    AppError::Usage(format!(
                        "{LIFECYCLE_FILE}: source_cert_sha256: {e}; fix or remove the key"
                    ))
                })
            })
            .transpose()
    }
}

/// Reads a migration profile, or the embedded default.
pub fn load_profile(path: Option<&Path>) -> Result<Profile, AppError> {
    match path {
        None => Ok(Profile::embedded_default()),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| AppError::io(p, e))?;
            Ok(Profile::parse(&text, &p.display().to_string())?)
        }
    }
}

/// The process running a pass, so others can tell a running pass from an interrupted one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runner {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// Since when, RFC 3339.
    pub since: String,
}

impl Runner {
    fn this_process() -> Runner {
        Runner {
            pid: std::process::id(),
            host: hostname(),
            since: now(),
        }
    }

    /// True if the process still runs (checked on this host only; a runner on another
    /// host is assumed alive).
    pub fn alive(&self) -> bool {
        if self.host != hostname() {
            return true;
        }
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn now() -> String {
    format_rfc3339(unix_now())
}

/// Who acts from the command line: `cli:user@host`.
pub fn cli_actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}@{}", hostname())
}

/// The lifecycle record of one move (`lifecycle.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// The move's mailbox.
    pub mailbox: String,
    /// Where the move is.
    pub state: MoveState,
    /// Every state entered, oldest first.
    pub history: Vec<Transition>,
    /// Limits and schedule set for this move.
    #[serde(default)]
    pub settings: Settings,
    /// How to run another pass; absent for moves last run by an older mailferry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation: Option<Invocation>,
    /// Skipped items an admin accepted (`folder/source-id`).
    #[serde(default)]
    pub approved: BTreeSet<String>,
    /// A suspension asked for while a pass ran, applied when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend_request: Option<Transition>,
    /// The process running a pass now (or interrupted in one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<Runner>,
    /// End of the last pass that finished, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_at: Option<String>,
}

impl Lifecycle {
    fn new(mailbox: &str) -> Lifecycle {
        Lifecycle {
            version: VERSION,
            mailbox: mailbox.to_string(),
            state: MoveState::Created,
            history: Vec::new(),
            settings: Settings::default(),
            invocation: None,
            approved: BTreeSet::new(),
            suspend_request: None,
            runner: None,
            last_sync_at: None,
        }
    }

    /// The last transition's reason, if any.
    pub fn reason(&self) -> Option<&str> {
        self.history.last().map(|t| t.reason.as_str())
    }

    /// True if a process is running a pass of this move right now.
    pub fn running(&self) -> bool {
        matches!(self.state, MoveState::Syncing | MoveState::Completing)
            && self.runner.as_ref().is_some_and(Runner::alive)
    }

    /// Enters `state`; returns the transition for the audit log.
    fn enter(&mut self, state: MoveState, reason: String, actor: &str) -> StateEvent {
        let from = self.state;
        let t = Transition {
            state,
            at: now(),
            reason,
            actor: actor.to_string(),
        };
        self.state = state;
        self.history.push(t.clone());
        StateEvent { from, to: t }
    }
}

/// One transition to write to the audit log.
struct StateEvent {
    from: MoveState,
    to: Transition,
}

/// Reads a move's lifecycle record. A state directory of an older mailferry (a move
/// but no record) reads as `Synced` if a pass finished, else `Created`; a directory
/// with no move is `None`.
pub fn load(dir: &Path) -> Result<Option<Lifecycle>, AppError> {
    if let Some(lc) = crate::versioned::load(&dir.join(LIFECYCLE_FILE), VERSION)? {
        return Ok(Some(lc));
    }
    let id_path = dir.join("move.json");
    let identity = match std::fs::read(&id_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AppError::io(&id_path, e)),
    };
    let id: mailferry_agent::state::MoveIdentity = serde_json::from_slice(&identity)
        .map_err(|e| AppError::Failed(format!("{}: unreadable: {e}", id_path.display())))?;
    let mut lc = Lifecycle::new(id.mailbox.as_str());
    if dir.join("report.json").exists() {
        lc.state = MoveState::Synced;
    }
    Ok(Some(lc))
}

/// Holds `lifecycle.lock` of a state directory.
struct Locked {
    dir: PathBuf,
    _lock: std::fs::File,
}

impl Locked {
    fn take(dir: &Path) -> Result<Locked, AppError> {
        mailferry_audit::private::create_dir_all(dir).map_err(|e| AppError::io(dir, e))?;
        mailferry_audit::private::warn_if_exposed(dir, "state directory");
        Ok(Locked {
            dir: dir.to_path_buf(),
            _lock: crate::versioned::lock(&dir.join(LOCK_FILE))?,
        })
    }

    fn save(&self, lc: &Lifecycle) -> Result<(), AppError> {
        let bytes = serde_json::to_vec_pretty(lc).expect("lifecycle serializes");
        write_atomic(&self.dir.join(LIFECYCLE_FILE), &bytes)?;
        Ok(())
    }
}

/// Writes transitions (and other events) to the move's source-side audit log.
fn log_events(
    dir: &Path,
    mailbox: &str,
    source: &str,
    events: &[StateEvent],
    extra: &[(&str, serde_json::Value)],
) -> Result<(), AppError> {
    if events.is_empty() && extra.is_empty() {
        return Ok(());
    }
    let mb = MailboxAddr::parse(mailbox)?;
    let mut sd = StateDir::open(dir, &mb, source)?;
    let move_id = sd.identity.move_id.to_string();
    for e in events {
        sd.event(
            "move.state",
            json!({
                "move_id": move_id,
                "from": e.from.as_str(),
                "to": e.to.state.as_str(),
                "reason": e.to.reason,
                "actor": e.to.actor,
            }),
        )?;
    }
    for (event, data) in extra {
        let mut data = data.clone();
        data["move_id"] = json!(move_id);
        sd.event(event, data)?;
    }
    Ok(())
}

/// The source a lifecycle-only command names in a new `move.json`.
fn recorded_source(lc: &Lifecycle) -> String {
    lc.invocation
        .as_ref()
        .map(|i| describe_source(&i.source))
        .unwrap_or_default()
}

// === Creating a move ===

/// Records a move that has not run yet (state `Created`): its state directory, its
/// identity and its first audit event. Used by batches; `mailferry move` creates its
/// record on its first pass.
pub fn create(
    dir: &Path,
    invocation: Invocation,
    settings: Settings,
    actor: &str,
) -> Result<Lifecycle, AppError> {
    let lock = Locked::take(dir)?;
    if let Some(lc) = load(dir)? {
        return Err(AppError::Usage(format!(
            "{} already holds the move of {} ({})",
            dir.display(),
            lc.mailbox,
            lc.state
        )));
    }
    let mut lc = Lifecycle::new(&invocation.mailbox);
    let source = describe_source(&invocation.source);
    lc.settings = settings;
    lc.invocation = Some(invocation);
    let ev = lc.enter(MoveState::Created, "created".into(), actor);
    log_events(dir, &lc.mailbox, &source, &[ev], &[])?;
    lock.save(&lc)?;
    Ok(lc)
}

// === Passes ===

/// How a pass is run, besides its [`MoveArgs`].
#[derive(Clone, Debug, Default)]
pub struct PassOptions {
    /// Who asks (`cli:user@host`, `api:NAME`); recorded with every transition.
    pub actor: String,
    /// This is the final pass (`move complete`): the move ends `Completed`.
    pub complete: bool,
    /// Accept every item this pass skips (and every one skipped before).
    pub approve_skipped: bool,
    /// Settings given now; they replace the recorded ones and are kept.
    pub settings: Settings,
    /// How the move was invoked now, to record for later passes (`None`: keep the
    /// recorded one).
    pub invocation: Option<Invocation>,
}

/// What a pass did to the move.
#[derive(Debug)]
pub struct PassResult {
    /// The pass's report (also in `report.json`).
    pub report: MoveReport,
    /// The state the move is in now.
    pub state: MoveState,
    /// The skipped items counted against the limits.
    pub verdict: Verdict,
    /// Why the move did not end as asked, when it did not (a limit was hit, or the
    /// final pass left skipped items nobody approved).
    pub limit: Option<String>,
}

impl PassResult {
    /// `Err(LimitHit)` when the pass hit a limit or could not complete the move.
    pub fn check(&self) -> Result<(), AppError> {
        match &self.limit {
            Some(why) => Err(AppError::LimitHit(why.clone())),
            None => Ok(()),
        }
    }
}

/// Refuses a pass of a move in a state that takes none, without writing anything.
pub fn precheck(dir: &Path) -> Result<Option<Lifecycle>, AppError> {
    let lc = load(dir)?;
    if let Some(lc) = &lc {
        refuse_pass(lc, dir)?;
    }
    Ok(lc)
}

fn refuse_pass(lc: &Lifecycle, dir: &Path) -> Result<(), AppError> {
    let at = |lc: &Lifecycle| {
        lc.history
            .last()
            .map(|t| format!(" at {} by {}", t.at, t.actor))
            .unwrap_or_default()
    };
    match lc.state {
        MoveState::Completed => Err(AppError::Refused(format!(
            "the move of {} was completed{}; a completed move takes no more passes ({})",
            lc.mailbox,
            at(lc),
            Advice::NewMoveToCopyAgain.cli()
        ))),
        MoveState::Suspended => Err(AppError::Refused(format!(
            "the move of {} is suspended{} ({}); {}",
            lc.mailbox,
            at(lc),
            lc.reason().unwrap_or(""),
            Advice::ResumeMove(dir.display().to_string()).cli()
        ))),
        _ => Ok(()),
    }
}

/// Runs one pass of the move of `args` through its lifecycle: refuses it if the move is
/// completed or suspended, opens the destination, runs the pass, judges its skipped
/// items and records the new state.
pub async fn run_pass(args: &MoveArgs, opts: &PassOptions) -> Result<PassResult, AppError> {
    run_pass_with(args, opts, PassHooks::default()).await
}

/// [`run_pass`] with the caller's observer (or counters) and shared throttle.
pub async fn run_pass_with(
    args: &MoveArgs,
    opts: &PassOptions,
    hooks: PassHooks,
) -> Result<PassResult, AppError> {
    precheck(&args.state)?;
    let dest = Connected::open(&args.destination, &args.profile).await?;
    let res = run_pass_on(&dest, args, opts, hooks).await;
    dest.close().await;
    res
}

/// As [`run_pass`], on a destination already open (a batch shares one), with the
/// caller's live counters and shared throttle.
pub async fn run_pass_on(
    dest: &Connected,
    args: &MoveArgs,
    opts: &PassOptions,
    hooks: PassHooks,
) -> Result<PassResult, AppError> {
    let clock = Clock::start();
    let begun = {
        let (args, opts) = (args.clone(), opts.clone());
        tokio::task::spawn_blocking(move || begin(&args, &opts))
            .await
            .expect("lifecycle thread panicked")?
    };
    let mut pass_args = args.clone();
    begun.limits.apply(&mut pass_args.profile);
    let outcome = dest.run_pass_with(&pass_args, clock, hooks).await;
    let (args, opts) = (args.clone(), opts.clone());
    tokio::task::spawn_blocking(move || finish(&args, &opts, begun, outcome))
        .await
        .expect("lifecycle thread panicked")
}

/// What [`begin`] decided.
struct Begun {
    completing: bool,
    limits: Limits,
}

fn begin(args: &MoveArgs, opts: &PassOptions) -> Result<Begun, AppError> {
    let dir = &args.state;
    let lock = Locked::take(dir)?;
    let mut lc = load(dir)?.unwrap_or_else(|| Lifecycle::new(args.mailbox.as_str()));
    if lc.mailbox != args.mailbox.as_str() {
        return Err(AppError::Usage(format!(
            "{} belongs to the move of {}, not {}; use a separate --state per mailbox",
            dir.display(),
            lc.mailbox,
            args.mailbox
        )));
    }
    refuse_pass(&lc, dir)?;
    if lc.running() && lc.runner.as_ref().map(|r| r.pid) != Some(std::process::id()) {
        let r = lc.runner.as_ref().expect("running has a runner");
        return Err(AppError::Failed(format!(
            "another mailferry process (pid {} on {}, since {}) is running a pass of this \
             move; wait for it to finish or stop it, then run again",
            r.pid, r.host, r.since
        )));
    }
    lc.settings = lc.settings.merged(&opts.settings);
    if let Some(inv) = &opts.invocation {
        lc.invocation = Some(inv.clone());
    }
    let schedule = Schedule::effective(&lc.settings, &args.profile);
    let limits = Limits::effective(
        &args.profile,
        lc.settings.bad_item_limit,
        lc.settings.large_item_limit,
    );
    let mut events = Vec::new();
    if lc.history.is_empty() {
        events.push(lc.enter(MoveState::Created, "created".into(), &opts.actor));
    }
    let due = schedule.complete_after.filter(|t| unix_now() >= *t);
    let (completing, reason) = if opts.complete {
        (true, "final pass (move complete)".to_string())
    } else if lc.state == MoveState::Completing {
        (
            true,
            "final pass again (the last one was interrupted)".to_string(),
        )
    } else if let Some(t) = due {
        (
            true,
            format!("final pass: complete-after {} reached", format_rfc3339(t)),
        )
    } else if lc.last_sync_at.is_none() && lc.state != MoveState::Synced {
        (false, "initial copy".to_string())
    } else {
        (false, "incremental pass".to_string())
    };
    let to = if completing {
        MoveState::Completing
    } else {
        MoveState::Syncing
    };
    events.push(lc.enter(to, reason, &opts.actor));
    lc.runner = Some(Runner::this_process());
    // The audit log is written first: it is locked while another agent runs a pass, and
    // then nothing here has changed.
    log_events(
        dir,
        &lc.mailbox,
        &describe_source(&args.source),
        &events,
        &[],
    )?;
    lock.save(&lc)?;
    Ok(Begun { completing, limits })
}

fn finish(
    args: &MoveArgs,
    opts: &PassOptions,
    begun: Begun,
    outcome: Result<MoveReport, AppError>,
) -> Result<PassResult, AppError> {
    let dir = &args.state;
    let lock = Locked::take(dir)?;
    let mut lc = load(dir)?.unwrap_or_else(|| Lifecycle::new(args.mailbox.as_str()));
    lc.runner = None;
    let source = describe_source(&args.source);
    let mut events = Vec::new();
    let mut extra = Vec::new();
    let mut report = match outcome {
        Ok(r) => r,
        Err(e) => {
            events.push(lc.enter(
                MoveState::Failed,
                format!("the pass failed: {e}"),
                &opts.actor,
            ));
            apply_suspend_request(&mut lc, &mut events);
            // The pass's error is what the caller needs; a failure to record it is logged.
            if let Err(le) =
                log_events(dir, &lc.mailbox, &source, &events, &[]).and_then(|_| lock.save(&lc))
            {
                tracing::warn!(error = %le, "could not record the failed pass");
            }
            return Err(e);
        }
    };
    if opts.approve_skipped {
        for s in &report.skipped_items {
            if lc.approved.insert(s.item.clone()) {
                extra.push((
                    "item.approved",
                    json!({
                        "item": s.item,
                        "kind": s.kind,
                        "reason": s.reason,
                        "actor": opts.actor,
                    }),
                ));
            }
        }
    }
    limits::mark_approved(&mut report.skipped_items, &lc.approved);
    let verdict = limits::judge(&report.skipped_items, &begun.limits);
    lc.last_sync_at = Some(report.finished_at.clone());
    let mut limit = None;
    if let Some(why) = &verdict.exceeded {
        let msg = format!(
            "limit hit: {why}; the move is Failed, everything copied is kept ({})",
            Advice::FixOrApproveSkipped.cli()
        );
        events.push(lc.enter(MoveState::Failed, msg.clone(), &opts.actor));
        limit = Some(msg);
    } else if begun.completing && verdict.unapproved() > 0 {
        let msg = format!(
            "the final pass left {} skipped item(s) nobody approved; {}",
            verdict.unapproved(),
            Advice::CheckThenCompleteApproving.cli()
        );
        events.push(lc.enter(MoveState::Synced, msg.clone(), &opts.actor));
        limit = Some(msg);
    } else if begun.completing {
        events.push(lc.enter(
            MoveState::Completed,
            "final pass done; the move is complete".into(),
            &opts.actor,
        ));
    } else {
        let reason = if lc.history.iter().any(|t| t.state == MoveState::Synced) {
            "incremental pass done"
        } else {
            "initial copy done"
        };
        events.push(lc.enter(MoveState::Synced, reason.into(), &opts.actor));
    }
    apply_suspend_request(&mut lc, &mut events);
    // report.json carries the approvals; reports.jsonl keeps the pass as it ran.
    if report.skipped_items.iter().any(|s| s.approved) {
        let bytes = serde_json::to_vec_pretty(&report).expect("report serializes");
        write_atomic(&dir.join("report.json"), &bytes)?;
    }
    log_events(dir, &lc.mailbox, &source, &events, &extra)?;
    lock.save(&lc)?;
    Ok(PassResult {
        report,
        state: lc.state,
        verdict,
        limit,
    })
}

/// What a pass did to the move, for stderr: skipped large items (bad items are in the
/// report's summary already), approvals, and the state with what to do next.
pub fn outcome_text(res: &PassResult) -> String {
    use mailferry_core::report::SkipKind;
    let mut out = String::new();
    for s in &res.report.skipped_items {
        if s.kind == SkipKind::LargeItem {
            out.push_str(&format!(
                "  large item {} ({} bytes): {}\n",
                s.item,
                s.size.unwrap_or(0),
                s.reason
            ));
        }
    }
    let v = &res.verdict;
    out.push_str(&format!("move of {}: {}", res.report.mailbox, res.state));
    if v.approved > 0 {
        out.push_str(&format!(", {} skipped item(s) approved", v.approved));
    }
    // A limit hit is the command's error message; it is not repeated here.
    match (&res.limit, res.state) {
        (None, MoveState::Synced) if v.unapproved() > 0 => out.push_str(&format!(
            "; {} skipped item(s) {}",
            v.unapproved(),
            Advice::ApproveBeforeComplete.cli()
        )),
        _ => {}
    }
    out.push('\n');
    out
}

fn apply_suspend_request(lc: &mut Lifecycle, events: &mut Vec<StateEvent>) {
    if let Some(req) = lc.suspend_request.take() {
        if lc.state != MoveState::Completed {
            events.push(lc.enter(MoveState::Suspended, req.reason, &req.actor));
        }
    }
}

// === Admin commands ===

/// What `suspend` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SuspendOutcome {
    /// The move is suspended now.
    Suspended,
    /// A pass is running: it becomes suspended when that pass ends.
    Requested,
    /// It already was.
    AlreadySuspended,
}

fn existing(dir: &Path) -> Result<Lifecycle, AppError> {
    load(dir)?.ok_or_else(|| {
        AppError::Usage(format!(
            "{} holds no move (no move.json or {LIFECYCLE_FILE})",
            dir.display()
        ))
    })
}

/// Suspends a move: no passes until [`resume`]. A running pass finishes first (see the
/// module docs).
pub fn suspend(dir: &Path, actor: &str, reason: &str) -> Result<SuspendOutcome, AppError> {
    let lock = Locked::take(dir)?;
    let mut lc = existing(dir)?;
    let reason = if reason.is_empty() {
        format!("suspended by {actor}")
    } else {
        reason.to_string()
    };
    match lc.state {
        MoveState::Suspended => return Ok(SuspendOutcome::AlreadySuspended),
        MoveState::Completed => {
            return Err(AppError::Refused(format!(
                "the move of {} is completed; there is nothing to suspend",
                lc.mailbox
            )))
        }
        _ => {}
    }
    if lc.running() {
        lc.suspend_request = Some(Transition {
            state: MoveState::Suspended,
            at: now(),
            reason: reason.clone(),
            actor: actor.to_string(),
        });
        // The running pass holds the audit log; its process records the suspension (with
        // this actor) as a `move.state` event when the pass ends.
        lock.save(&lc)?;
        return Ok(SuspendOutcome::Requested);
    }
    let ev = lc.enter(MoveState::Suspended, reason, actor);
    log_events(dir, &lc.mailbox, &recorded_source(&lc), &[ev], &[])?;
    lc.runner = None;
    lock.save(&lc)?;
    Ok(SuspendOutcome::Suspended)
}

/// Resumes a suspended move: it returns to the state it was suspended in (`Syncing` or
/// `Completing` read as `Synced`: that pass ended), and passes run again. Also cancels
/// a suspension requested while a pass runs.
pub fn resume(dir: &Path, actor: &str) -> Result<MoveState, AppError> {
    let lock = Locked::take(dir)?;
    let mut lc = existing(dir)?;
    if lc.suspend_request.take().is_some() {
        lock.save(&lc)?;
        return Ok(lc.state);
    }
    if lc.state != MoveState::Suspended {
        return Err(AppError::Refused(format!(
            "the move of {} is {}, not suspended",
            lc.mailbox, lc.state
        )));
    }
    let before = lc
        .history
        .iter()
        .rev()
        .map(|t| t.state)
        .find(|s| *s != MoveState::Suspended)
        .unwrap_or(MoveState::Created);
    let back = match before {
        MoveState::Syncing | MoveState::Completing => MoveState::Synced,
        s => s,
    };
    let ev = lc.enter(back, format!("resumed by {actor}"), actor);
    log_events(dir, &lc.mailbox, &recorded_source(&lc), &[ev], &[])?;
    lock.save(&lc)?;
    Ok(back)
}

/// The arguments of the next pass of a recorded move.
pub fn recorded_args(dir: &Path) -> Result<MoveArgs, AppError> {
    let lc = existing(dir)?;
    let inv = lc.invocation.ok_or_else(|| {
        AppError::Usage(format!(
            "the move in {} was last run by an older mailferry and does not record its \
             source and destination; run `mailferry move ... --state {}` once with its flags",
            dir.display(),
            dir.display()
        ))
    })?;
    inv.to_args(dir)
}

/// `move complete`: the final delta pass of a recorded move, which then is `Completed`;
/// `hooks` as for [`run_pass_with`].
pub async fn complete(
    dir: &Path,
    opts: &PassOptions,
    hooks: PassHooks,
) -> Result<PassResult, AppError> {
    let args = recorded_args(dir)?;
    let opts = PassOptions {
        complete: true,
        ..opts.clone()
    };
    run_pass_with(&args, &opts, hooks).await
}

/// Parses `--complete-after`: RFC 3339 (`2025-07-01T22:00:00Z`, `2025-07-01`) or a time
/// from now (`2h`, `+3days`, `in 30min`). Returns RFC 3339.
pub fn parse_time(s: &str) -> Result<String, String> {
    let t = s.trim();
    if let Ok(at) = parse_rfc3339(t) {
        return Ok(format_rfc3339(at));
    }
    let rel = t
        .strip_prefix('+')
        .or_else(|| t.strip_prefix("in "))
        .unwrap_or(t);
    match humantime::parse_duration(rel.trim()) {
        Ok(d) => Ok(format_rfc3339(
            unix_now().saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)),
        )),
        Err(_) => Err(format!(
            "{s:?} is neither an RFC 3339 time (2025-07-01T22:00:00Z) nor a time from now (2h, +3days)"
        )),
    }
}

#[cfg(test)]
mod tests;
