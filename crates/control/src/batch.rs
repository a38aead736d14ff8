//! Migration batches: many mailboxes from one CSV, one endpoint, one destination
//! (Exchange's migration batches).
//!
//! `batch new` reads the CSV (`EmailAddress,UserName,Password`, extra columns allowed,
//! `PasswordFile` instead of `Password`), checks every row and column and reports every
//! problem at once; only a CSV without problems creates the batch: a directory under the
//! state root holding `batch.json` and one move state directory per mailbox
//! (`mailboxes/<address>/`, state `Created`). `batch start` runs a pass of every mailbox
//! that takes one, up to N at once, each through the same lifecycle as `mailferry move`
//! ([`crate::lifecycle::run_pass_on`]) on one shared destination; a failing mailbox
//! does not stop the others. `batch complete` runs their final passes, `suspend` and
//! `resume` act on every mailbox, `add-users` adds the new rows of a CSV, and `status`
//! shows one line per mailbox with totals.
//!
//! # Passwords
//!
//! No password is ever stored by a batch. A `PasswordFile` cell is kept as a path; a
//! `Password` cell is read from the CSV again, into memory only, each time a pass
//! starts, so a CSV with inline passwords must stay where it was (and should be
//! readable by the admin only). Passwords never appear in logs, errors or `batch.json`.
//! File sources need no passwords; an IMAP endpoint with a master user uses the
//! master's password file for everyone.
//!
//! # Concurrency
//!
//! At most `--concurrency` (default: the endpoint's `max_concurrent_moves`, and never
//! more) passes run at once; of those, at most the endpoint's
//! `max_concurrent_incremental_syncs` are incremental (mailboxes that synced before).
//! The endpoint's rate limits are shared by every pass of the batch, and so is its
//! `max_connections`: a run makes one connection budget per endpoint and every pass
//! takes its IMAP connections from it ([`SharedReading`]). A batch suspended
//! while `batch start` runs starts no further mailbox; running passes end first (see
//! [`crate::lifecycle`]).

use crate::advice::Advice;
use crate::endpoint::Endpoint;
use crate::lifecycle::{self, Invocation, MoveState, PassOptions, PassResult, Settings};
use crate::moving::{Connected, Destination, PassHooks};
use crate::progress::Observer;
use crate::status::{self, MoveStatus};
use crate::AppError;
use mailferry_agent::source::connections::{ConnectionLimit, DEFAULT_CONNECTIONS};
use mailferry_agent::source::SourceOptions;
use mailferry_agent::state::write_atomic;
use mailferry_core::profile::Profile;
use mailferry_core::secret::SecretBytes;
use mailferry_core::{unix_now, MailboxAddr};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File name of a batch's record.
pub const BATCH_FILE: &str = "batch.json";
/// Format version of [`BATCH_FILE`].
pub const VERSION: u32 = 1;
/// Directory of the mailboxes' move state directories inside a batch.
pub const MAILBOXES_DIR: &str = "mailboxes";

/// Where a user's password comes from (never the password itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum PasswordSource {
    /// None needed (file source, or an IMAP master user).
    None,
    /// A `PasswordFile` cell.
    File {
        /// The file.
        path: PathBuf,
    },
    /// The `Password` cell of the user's row, read again from the CSV at each start.
    Csv,
}

/// One mailbox of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchUser {
    /// Destination address (the CSV's EmailAddress).
    pub address: String,
    /// Login or path name at the source (the CSV's UserName).
    pub user_name: String,
    /// The CSV the user came from.
    pub csv: PathBuf,
    /// The user's row in it (the header is row 1).
    pub row: u64,
    /// Where the password comes from.
    pub password: PasswordSource,
    /// The move's state directory, relative to the batch directory.
    pub dir: String,
}

/// A batch (`batch.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// The batch's name.
    pub name: String,
    /// When it was created, RFC 3339.
    pub created_at: String,
    /// The endpoint file (read again at each start).
    pub endpoint: PathBuf,
    /// Where the messages go.
    pub destination: Destination,
    /// Migration profile file; `None`: the embedded default.
    pub profile: Option<PathBuf>,
    /// Mailboxes at once; `None`: the endpoint's `max_concurrent_moves`.
    pub concurrency: Option<usize>,
    /// Limits and schedule given to every mailbox.
    pub settings: Settings,
    /// Suspended: `batch start` refuses, and a running one starts no further mailbox.
    pub suspended: bool,
    /// The mailboxes, in CSV order.
    pub users: Vec<BatchUser>,
}

/// A problem of one CSV row and column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RowProblem {
    /// Row number as a spreadsheet shows it (the header is row 1; a quoted cell of
    /// several lines is one row).
    pub row: u64,
    /// Column name.
    pub column: String,
    /// What is wrong (never a password).
    pub reason: String,
}

/// A valid row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvUser {
    /// Row number.
    pub row: u64,
    /// Destination address.
    pub address: MailboxAddr,
    /// User name at the source.
    pub user_name: String,
    /// Where the password comes from.
    pub password: PasswordSource,
}

/// The rows of a CSV: new users, and rows whose address the batch already has.
#[derive(Clone, Debug, Default)]
pub struct CsvUsers {
    /// Users to add.
    pub users: Vec<CsvUser>,
    /// `(row, address)` of rows already in the batch (skipped by `add-users`).
    pub already: Vec<(u64, String)>,
}

fn problems_error(csv: &Path, problems: &[RowProblem]) -> AppError {
    let mut s = format!(
        "{}: {} problem(s); nothing was created or started:",
        csv.display(),
        problems.len()
    );
    for p in problems {
        s.push_str(&format!("\n  row {}, {}: {}", p.row, p.column, p.reason));
    }
    AppError::Usage(s)
}

/// Columns of the Exchange CSV (matched without regard to case).
struct Columns {
    address: Option<usize>,
    user: Option<usize>,
    password: Option<usize>,
    password_file: Option<usize>,
}

fn columns(headers: &csv::ByteRecord) -> Columns {
    let find = |name: &str| {
        headers.iter().position(|h| {
            let h = String::from_utf8_lossy(h);
            h.trim_start_matches('\u{feff}')
                .trim()
                .eq_ignore_ascii_case(name)
        })
    };
    Columns {
        address: find("EmailAddress"),
        user: find("UserName"),
        password: find("Password"),
        password_file: find("PasswordFile"),
    }
}

fn reader(path: &Path) -> Result<csv::Reader<std::fs::File>, AppError> {
    let f = std::fs::File::open(path).map_err(|e| AppError::io(path, e))?;
    Ok(csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(f))
}

/// Reads and checks every row of a batch CSV for endpoint `ep`; rows whose address is
/// in `existing` are set aside. Every problem of every row and column is returned at
/// once (as a usage error). Password files are opened and checked (readable, one
/// non-empty line); inline passwords are checked for presence, and dropped.
pub fn read_users(
    csv_path: &Path,
    ep: &Endpoint,
    existing: &HashSet<String>,
) -> Result<CsvUsers, AppError> {
    check_users(csv_path, ep, existing)?.map_err(|problems| problems_error(csv_path, &problems))
}

/// [`read_users`] returning the problems themselves (every bad row and column, sorted by
/// row) instead of one usage error, for callers that show them row by row (the admin
/// API and wizard). The outer error is an unreadable file.
pub fn check_users(
    csv_path: &Path,
    ep: &Endpoint,
    existing: &HashSet<String>,
) -> Result<Result<CsvUsers, Vec<RowProblem>>, AppError> {
    let mut rdr = reader(csv_path)?;
    let mut problems = Vec::new();
    let headers = rdr
        .byte_headers()
        .map_err(|e| AppError::Usage(format!("{}: {e}", csv_path.display())))?
        .clone();
    let cols = columns(&headers);
    let need_pw = ep.needs_user_password();
    problems.extend(header_problems(&cols, need_pw));
    let base = csv_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let rows = RowChecker {
        cols: &cols,
        ep,
        need_pw,
        base,
    };
    let mut out = CsvUsers::default();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut record = csv::ByteRecord::new();
    loop {
        let row = rdr.position().line();
        match rdr.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let row = e.position().map_or(row, |p| p.line());
                problems.push(RowProblem {
                    row,
                    column: "*".into(),
                    reason: format!("not CSV: {e}"),
                });
                continue;
            }
        }
        let row = record.position().map_or(row, |p| p.line());
        if record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
            continue;
        }
        let mut bad = |column: &str, reason: String| {
            problems.push(RowProblem {
                row,
                column: column.into(),
                reason,
            })
        };
        let (address, user_name, password) = rows.check(&record, &mut bad);
        let Some(address) = address else { continue };
        let key = address.as_str().to_string();
        if let Some(first) = seen.get(&key) {
            bad(
                "EmailAddress",
                format!("duplicate address {key} (also on row {first})"),
            );
            continue;
        }
        seen.insert(key.clone(), row);
        if existing.contains(&key) {
            out.already.push((row, key));
            continue;
        }
        if let Some(user_name) = user_name {
            out.users.push(CsvUser {
                row,
                address,
                user_name,
                password,
            });
        }
    }
    if !problems.is_empty() {
        problems.sort_by_key(|p| p.row);
        return Ok(Err(problems));
    }
    if out.users.is_empty() && out.already.is_empty() {
        return Err(AppError::Usage(format!(
            "{}: no users (expected a header EmailAddress,UserName,Password and one row per mailbox)",
            csv_path.display()
        )));
    }
    Ok(Ok(out))
}

/// The header's problems: a missing address or user column, and a missing password
/// column when the endpoint needs each user's password.
fn header_problems(cols: &Columns, need_pw: bool) -> Vec<RowProblem> {
    let header_problem = |column: &str, reason: String| RowProblem {
        row: 1,
        column: column.into(),
        reason,
    };
    let mut problems = Vec::new();
    if cols.address.is_none() {
        problems.push(header_problem(
            "EmailAddress",
            "missing column (the header must be EmailAddress,UserName,Password)".into(),
        ));
    }
    if cols.user.is_none() {
        problems.push(header_problem("UserName", "missing column".into()));
    }
    if need_pw && cols.password.is_none() && cols.password_file.is_none() {
        problems.push(header_problem(
            "Password",
            "missing column: this IMAP endpoint has no master user, so every user needs a \
             Password or PasswordFile column"
                .into(),
        ));
    }
    problems
}

/// Checks the cells of one CSV row against the endpoint; what the rows share.
struct RowChecker<'a> {
    cols: &'a Columns,
    ep: &'a Endpoint,
    /// The endpoint needs each user's password (no master user).
    need_pw: bool,
    /// Relative password files are relative to the CSV's directory.
    base: &'a Path,
}

impl RowChecker<'_> {
    /// The row's address, user name and password source, each `None` (or
    /// [`PasswordSource::None`]) where `bad` was told what is wrong.
    fn check(
        &self,
        record: &csv::ByteRecord,
        bad: &mut dyn FnMut(&str, String),
    ) -> (Option<MailboxAddr>, Option<String>, PasswordSource) {
        let cols = self.cols;
        let text = |i: Option<usize>, column: &str, bad: &mut dyn FnMut(&str, String)| {
            let raw = i.and_then(|i| record.get(i)).unwrap_or_default();
            match std::str::from_utf8(raw) {
                Ok(s) => Some(s.trim().to_string()),
                Err(_) => {
                    bad(column, "not UTF-8".into());
                    None
                }
            }
        };
        let address = match text(cols.address, "EmailAddress", bad) {
            None => None,
            Some(a) if a.is_empty() => {
                bad("EmailAddress", "missing address".into());
                None
            }
            Some(a) => match MailboxAddr::parse(&a) {
                Ok(m) => Some(m),
                Err(e) => {
                    bad("EmailAddress", e.to_string());
                    None
                }
            },
        };
        let user_name =
            text(cols.user, "UserName", bad).and_then(|u| match self.ep.check_user(&u) {
                Some(why) => {
                    bad("UserName", why);
                    None
                }
                None => Some(u),
            });
        // Presence only: the bytes of an inline password are not kept.
        let pw_given = cols
            .password
            .and_then(|i| record.get(i))
            .is_some_and(|p| !p.is_empty());
        let pw_file = text(cols.password_file, "PasswordFile", bad).filter(|f| !f.is_empty());
        let password = if self.need_pw {
            self.password(pw_given, pw_file, bad)
        } else {
            PasswordSource::None
        };
        (address, user_name, password)
    }

    /// Where a user's password comes from: exactly one of an inline password and a
    /// readable password file.
    fn password(
        &self,
        pw_given: bool,
        pw_file: Option<String>,
        bad: &mut dyn FnMut(&str, String),
    ) -> PasswordSource {
        match (pw_given, pw_file) {
            (true, Some(_)) => {
                bad(
                    "Password/PasswordFile",
                    "both are given; give one or the other".into(),
                );
                PasswordSource::None
            }
            (false, None) => {
                bad(
                    "Password/PasswordFile",
                    "neither is given; this endpoint needs each user's password".into(),
                );
                PasswordSource::None
            }
            (true, None) => PasswordSource::Csv,
            (false, Some(f)) => {
                let path = std::path::absolute(self.base.join(&f)).unwrap_or_else(|_| f.into());
                match check_password_file(&path) {
                    Ok(()) => PasswordSource::File { path },
                    Err(why) => {
                        bad("PasswordFile", why);
                        PasswordSource::None
                    }
                }
            }
        }
    }
}

/// Checks that a password file holds one non-empty line; says why not without ever
/// showing its content.
fn check_password_file(path: &Path) -> Result<(), String> {
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    );
    let body = bytes
        .strip_suffix(b"\n")
        .map(|b| b.strip_suffix(b"\r").unwrap_or(b))
        .unwrap_or(&bytes);
    if body.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    if body.iter().any(|&b| b == b'\n' || b == b'\r' || b == 0) {
        return Err(format!(
            "{} has more than one line or a NUL byte",
            path.display()
        ));
    }
    Ok(())
}

/// The inline passwords of a CSV, by address, read into memory only.
fn inline_passwords(csv_path: &Path) -> Result<HashMap<String, SecretBytes>, String> {
    let mut rdr = reader(csv_path).map_err(|e| e.to_string())?;
    let headers = rdr.byte_headers().map_err(|e| e.to_string())?.clone();
    let cols = columns(&headers);
    let (Some(a), Some(p)) = (cols.address, cols.password) else {
        return Err(format!(
            "{} has no EmailAddress or Password column any more",
            csv_path.display()
        ));
    };
    let mut out = HashMap::new();
    let mut record = csv::ByteRecord::new();
    while rdr
        .read_byte_record(&mut record)
        .map_err(|e| e.to_string())?
    {
        let addr = std::str::from_utf8(record.get(a).unwrap_or_default())
            .ok()
            .and_then(|s| MailboxAddr::parse(s.trim()).ok());
        if let (Some(addr), Some(pw)) = (addr, record.get(p)) {
            if !pw.is_empty() {
                out.insert(addr.as_str().to_string(), SecretBytes::new(pw.to_vec()));
            }
        }
    }
    Ok(out)
}

/// The inline password of `u` (its CSV row's `Password` cell, read again now), for a
/// pass of one mailbox outside [`run`]; `None` if its password is not inline.
pub fn inline_password(u: &BatchUser) -> Result<Option<SecretBytes>, AppError> {
    if u.password != PasswordSource::Csv {
        return Ok(None);
    }
    let map = inline_passwords(&u.csv).map_err(|e| {
        AppError::Usage(format!(
            "mailbox {}: cannot read its inline password again ({e}); a CSV with inline \
             passwords must stay in place ({})",
            u.address,
            u.csv.display()
        ))
    })?;
    match map.get(&u.address) {
        Some(p) => Ok(Some(p.clone())),
        None => Err(AppError::Usage(format!(
            "mailbox {}: row {} of {} has no Password any more; put the password back in \
             that row (a CSV with inline passwords must stay in place)",
            u.address,
            u.row,
            u.csv.display()
        ))),
    }
}

// === The batch directory ===

/// A batch's directory.
#[derive(Clone, Debug)]
pub struct BatchDir {
    /// `<state root>/<name>`.
    pub dir: PathBuf,
}

/// Whether `name` can name a file in a state directory: letters, digits, `.`, `_`, `-`;
/// at most 64; not starting with `.` (batch names, and the admin service's endpoint names).
pub fn simple_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Checks a batch name: letters, digits, `.`, `_`, `-`; at most 64; not starting with `.`.
pub fn check_name(name: &str) -> Result<(), AppError> {
    if simple_name_ok(name) {
        Ok(())
    } else {
        Err(AppError::Usage(format!(
            "batch name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'"
        )))
    }
}

impl BatchDir {
    /// The batch `name` under `root`.
    pub fn new(root: &Path, name: &str) -> Result<BatchDir, AppError> {
        check_name(name)?;
        Ok(BatchDir {
            dir: root.join(name),
        })
    }

    /// Reads `batch.json`.
    pub fn load(&self) -> Result<Batch, AppError> {
        crate::versioned::load(&self.dir.join(BATCH_FILE), VERSION)?.ok_or_else(|| {
            AppError::Usage(format!(
                "no batch in {} (create it with `mailferry batch new`)",
                self.dir.display()
            ))
        })
    }

    fn save(&self, b: &Batch) -> Result<(), AppError> {
        let bytes = serde_json::to_vec_pretty(b).expect("batch serializes");
        write_atomic(&self.dir.join(BATCH_FILE), &bytes)?;
        Ok(())
    }

    /// Holds the batch's lock while `f` changes its record.
    fn update<T>(&self, f: impl FnOnce(&mut Batch) -> Result<T, AppError>) -> Result<T, AppError> {
        let _lock = crate::versioned::lock(&self.dir.join("batch.lock"))?;
        let mut b = self.load()?;
        let out = f(&mut b)?;
        self.save(&b)?;
        Ok(out)
    }

    /// A mailbox's move state directory.
    pub fn mailbox_dir(&self, u: &BatchUser) -> PathBuf {
        self.dir.join(&u.dir)
    }
}

/// What `batch new` needs.
#[derive(Clone, Debug)]
pub struct NewBatch {
    /// The users' CSV.
    pub csv: PathBuf,
    /// The endpoint file.
    pub endpoint: PathBuf,
    /// Where the messages go.
    pub destination: Destination,
    /// Migration profile file.
    pub profile: Option<PathBuf>,
    /// Mailboxes at once.
    pub concurrency: Option<usize>,
    /// Limits and schedule of every mailbox.
    pub settings: Settings,
    /// Who creates it.
    pub actor: String,
}

fn user_invocation(b: &Batch, ep: &Endpoint, u: &BatchUser) -> Invocation {
    let pw_file = match &u.password {
        PasswordSource::File { path } => Some(path.as_path()),
        _ => None,
    };
    let (source, options) = ep.source_for(&u.user_name, pw_file);
    Invocation {
        source,
        mailbox: u.address.clone(),
        destination: b.destination.clone(),
        profile: b.profile.clone(),
        password_file: options.password_file,
        oauth_token_file: None,
        source_ca: options.source_ca,
        source_prefix: options.source_prefix,
        source_namespaces: options.namespaces,
        source_cert_sha256: options.source_cert_sha256.map(|f| f.to_string()),
        max_bytes_per_second: None,
        max_messages_per_second: None,
        maildir_names: None,
        source_connections: options.connections,
    }
}

/// Mailbox state directories created at once by [`add_users`].
const CREATE_THREADS: usize = 16;

fn add_users(
    bd: &BatchDir,
    b: &mut Batch,
    ep: &Endpoint,
    csv: &Path,
    rows: Vec<CsvUser>,
    actor: &str,
) -> Result<usize, AppError> {
    let csv = std::path::absolute(csv).unwrap_or_else(|_| csv.to_path_buf());
    let users: Vec<BatchUser> = rows
        .into_iter()
        .map(|r| BatchUser {
            dir: format!("{MAILBOXES_DIR}/{}", r.address),
            address: r.address.to_string(),
            user_name: r.user_name,
            csv: csv.clone(),
            row: r.row,
            password: r.password,
        })
        .collect();
    // Each state directory is made durable with a few fsyncs of its own; done one after
    // the other they cost ~50 ms a mailbox (42 minutes for 50,000), while several at
    // once share the file system's journal commits.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let created: Vec<Result<(), AppError>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..CREATE_THREADS.min(users.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut first = Ok(());
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(u) = users.get(i) else { break };
                        let made = lifecycle::create(
                            &bd.mailbox_dir(u),
                            user_invocation(b, ep, u),
                            b.settings.clone(),
                            actor,
                        );
                        if let Err(e) = made {
                            // The others stop at their next mailbox.
                            next.store(users.len(), std::sync::atomic::Ordering::Relaxed);
                            first = Err(e);
                            break;
                        }
                    }
                    first
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a mailbox creation thread panicked"))
            .collect()
    });
    created.into_iter().collect::<Result<Vec<()>, AppError>>()?;
    let n = users.len();
    b.users.extend(users);
    Ok(n)
}

/// `batch new`: checks the endpoint and the whole CSV, then creates the batch with
/// every mailbox `Created`. Nothing is created when anything is wrong.
pub fn create(bd: &BatchDir, name: &str, n: &NewBatch) -> Result<Batch, AppError> {
    let ep = Endpoint::load(&n.endpoint)?;
    if let Some(p) = &n.profile {
        lifecycle::load_profile(Some(p))?;
    }
    if n.concurrency == Some(0) {
        return Err(AppError::Usage("--concurrency must be at least 1".into()));
    }
    let rows = read_users(&n.csv, &ep, &HashSet::new())?;
    if bd.dir.join(BATCH_FILE).exists() {
        return Err(AppError::Usage(format!(
            "batch {name} already exists in {}; add users with `mailferry batch add-users`",
            bd.dir.display()
        )));
    }
    mailferry_audit::private::create_dir_all(&bd.dir.join(MAILBOXES_DIR))
        .map_err(|e| AppError::io(&bd.dir, e))?;
    let mut b = Batch {
        version: VERSION,
        name: name.to_string(),
        created_at: mailferry_core::rfc3339(unix_now()),
        endpoint: std::path::absolute(&n.endpoint).unwrap_or_else(|_| n.endpoint.clone()),
        destination: n.destination.clone(),
        profile: n
            .profile
            .as_deref()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())),
        concurrency: n.concurrency,
        settings: n.settings.clone(),
        suspended: false,
        users: Vec::new(),
    };
    bd.save(&b)?;
    add_users(bd, &mut b, &ep, &n.csv, rows.users, &n.actor)?;
    bd.save(&b)?;
    Ok(b)
}

/// `batch add-users`: adds the rows of `csv` whose address the batch does not have yet.
/// Returns the rows added and the rows already there.
pub fn add_users_from(
    bd: &BatchDir,
    csv: &Path,
    actor: &str,
) -> Result<(usize, Vec<(u64, String)>), AppError> {
    bd.update(|b| add_users_into(bd, b, csv, actor))
}

/// The work of [`add_users_from`] on a batch record the caller holds (and saves): checks
/// the whole CSV against the batch's endpoint (nothing is created when a row is bad),
/// creates the move state directory of each new row under `bd` and appends it to
/// `b.users`. For `batch add-users --db`, which keeps the record in a database row
/// locked by its transaction rather than in `bd`.
pub fn add_users_into(
    bd: &BatchDir,
    b: &mut Batch,
    csv: &Path,
    actor: &str,
) -> Result<(usize, Vec<(u64, String)>), AppError> {
    let ep = Endpoint::load(&b.endpoint)?;
    let existing: HashSet<String> = b.users.iter().map(|u| u.address.clone()).collect();
    let rows = read_users(csv, &ep, &existing)?;
    let n = add_users(bd, b, &ep, csv, rows.users, actor)?;
    Ok((n, rows.already))
}

// === Running ===

/// Which passes `run` starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `batch start`: a pass of every mailbox that takes one.
    Sync,
    /// `batch complete`: the final pass of every mailbox not completed.
    Complete,
}

/// What happened to one mailbox in a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MailboxOutcome {
    /// The mailbox.
    pub address: String,
    /// Its state after the run.
    pub state: MoveState,
    /// A pass ran.
    pub ran: bool,
    /// Why it failed or was not run, if so.
    pub note: Option<String>,
    /// It failed (error, or Failed state).
    pub failed: bool,
}

/// The outcome of `batch start` / `batch complete`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunOutcome {
    /// The batch.
    pub name: String,
    /// Every mailbox, in batch order.
    pub mailboxes: Vec<MailboxOutcome>,
}

impl RunOutcome {
    /// `Err(BatchFailed)` (exit 4) if any mailbox failed.
    pub fn check(&self) -> Result<(), AppError> {
        let failed: Vec<&str> = self
            .mailboxes
            .iter()
            .filter(|m| m.failed)
            .map(|m| m.address.as_str())
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(AppError::BatchFailed(format!(
                "{} of {} mailbox(es) of batch {} failed: {}; the others went on ({})",
                failed.len(),
                self.mailboxes.len(),
                self.name,
                failed.join(", "),
                Advice::SeeBatchStatus(self.name.clone()).cli()
            )))
        }
    }
}

/// Options of a run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Caps the batch's concurrency for this run.
    pub concurrency: Option<usize>,
    /// Accept every skipped item (complete).
    pub approve_skipped: bool,
    /// Who runs it.
    pub actor: String,
    /// Told about every pass of the run (the binary draws a summary bar and one bar
    /// per running mailbox, or log lines); `None`: one line per finished mailbox on
    /// stderr.
    pub observer: Option<Arc<dyn Observer>>,
}

/// Runs a pass of every mailbox of the batch that takes one (`Mode::Sync`), or its final
/// pass (`Mode::Complete`), up to the batch's concurrency at once. Completed and
/// suspended mailboxes are left alone. Returns when every pass has ended.
pub async fn run(bd: &BatchDir, mode: Mode, opts: &RunOptions) -> Result<RunOutcome, AppError> {
    let b = bd.load()?;
    if b.suspended {
        return Err(AppError::Refused(format!(
            "batch {} is suspended; {}",
            b.name,
            Advice::ResumeBatch(b.name.clone()).cli()
        )));
    }
    let ep = Endpoint::load(&b.endpoint)?;
    let profile = lifecycle::load_profile(b.profile.as_deref())?;
    let limit = opts
        .concurrency
        .or(b.concurrency)
        .unwrap_or(ep.max_concurrent_moves)
        .clamp(1, ep.max_concurrent_moves);
    let moves = Arc::new(tokio::sync::Semaphore::new(limit));
    let incremental = Arc::new(tokio::sync::Semaphore::new(
        ep.max_concurrent_incremental_syncs.min(limit),
    ));
    let throttle = ep.throttle();
    let reading = SharedReading::new(&ep);

    let inline = InlinePasswords::read(&b);

    let dest = Arc::new(Connected::open(&b.destination, &profile).await?);
    let runnable = b
        .users
        .iter()
        .filter(|u| {
            !lifecycle::load(&bd.mailbox_dir(u))
                .ok()
                .flatten()
                .is_some_and(|l| matches!(l.state, MoveState::Completed | MoveState::Suspended))
        })
        .count();
    let board = opts.observer.clone();
    if let Some(board) = &board {
        board.begin(runnable as u64);
    }
    let mut set = tokio::task::JoinSet::new();
    let mut outcomes: BTreeMap<usize, MailboxOutcome> = BTreeMap::new();
    for (i, u) in b.users.iter().enumerate() {
        let dir = bd.mailbox_dir(u);
        let lc = lifecycle::load(&dir)?;
        let state = lc.as_ref().map_or(MoveState::Created, |l| l.state);
        if matches!(state, MoveState::Completed | MoveState::Suspended) {
            outcomes.insert(i, left_alone(u, state));
            continue;
        }
        let synced_before = lc.as_ref().is_some_and(|l| l.last_sync_at.is_some());
        let password = match inline.of(u) {
            Ok(p) => p,
            Err(why) => {
                outcomes.insert(i, not_run(u, state, why));
                continue;
            }
        };
        let (moves, incremental, dest, bd2) =
            (moves.clone(), incremental.clone(), dest.clone(), bd.clone());
        let (u, throttle, board) = (u.clone(), throttle.clone(), board.clone());
        let reading = reading.clone();
        let pass_opts = PassOptions {
            actor: format!("{} (batch {})", opts.actor, b.name),
            complete: mode == Mode::Complete,
            approve_skipped: opts.approve_skipped,
            settings: Settings::default(),
            invocation: None,
        };
        set.spawn(async move {
            let _inc = if synced_before {
                Some(incremental.acquire_owned().await.expect("semaphore open"))
            } else {
                None
            };
            let _slot = moves.acquire_owned().await.expect("semaphore open");
            let hooks = PassHooks {
                throttle,
                progress: board.as_ref().map(|board| {
                    let counters = Arc::new(mailferry_agent::pass::Progress::default());
                    board.mailbox(&u.address, counters.clone());
                    counters
                }),
                observer: None,
                // One process runs this batch: no lease, no fence.
                fence: None,
            };
            let source = MoveSource { password, reading };
            let res = run_one(&bd2, &u, &dest, &pass_opts, source, hooks).await;
            if let Some(board) = &board {
                match &res {
                    Ok(Some(r)) if r.state == MoveState::Failed => {
                        board.finish(&u.address, Err(&r.limit.as_deref().unwrap_or_default()))
                    }
                    Ok(Some(r)) => board.finish(&u.address, Ok(&r.report)),
                    Ok(None) => board.finish(&u.address, Err(&"not started: suspended")),
                    Err(e) => board.finish(&u.address, Err(e)),
                }
            }
            (i, u, res)
        });
    }
    while let Some(joined) = set.join_next().await {
        let (i, u, res) = joined.expect("batch task panicked");
        // Without a board, one line per finished mailbox on stderr.
        outcomes.insert(i, finished(bd, &u, res, board.is_none()));
    }
    match Arc::try_unwrap(dest) {
        Ok(d) => d.close().await,
        Err(_) => unreachable!("every pass has ended"),
    }
    if let Some(board) = board {
        board.end();
    }
    Ok(RunOutcome {
        name: b.name.clone(),
        mailboxes: outcomes.into_values().collect(),
    })
}

/// The inline passwords of a run, read again now from each CSV that has them (they are
/// never stored in the batch).
struct InlinePasswords(HashMap<PathBuf, Result<HashMap<String, SecretBytes>, String>>);

impl InlinePasswords {
    fn read(b: &Batch) -> InlinePasswords {
        let mut inline = HashMap::new();
        for u in &b.users {
            if u.password == PasswordSource::Csv && !inline.contains_key(&u.csv) {
                inline.insert(u.csv.clone(), inline_passwords(&u.csv));
            }
        }
        InlinePasswords(inline)
    }

    /// The password a mailbox's pass gets (`None`: not from the CSV); `Err` says why the
    /// mailbox cannot run.
    fn of(&self, u: &BatchUser) -> Result<Option<SecretBytes>, String> {
        match (&u.password, self.0.get(&u.csv)) {
            (PasswordSource::Csv, Some(Ok(map))) => match map.get(&u.address) {
                Some(p) => Ok(Some(p.clone())),
                None => Err(format!(
                    "row {} of {} has no Password any more (a CSV with inline passwords must stay in place)",
                    u.row,
                    u.csv.display()
                )),
            },
            (PasswordSource::Csv, Some(Err(e))) => Err(format!(
                "cannot read the inline password again ({e}); a CSV with inline \
                 passwords must stay in place"
            )),
            _ => Ok(None),
        }
    }
}

fn left_alone(u: &BatchUser, state: MoveState) -> MailboxOutcome {
    MailboxOutcome {
        address: u.address.clone(),
        state,
        ran: false,
        note: Some(format!("{state}: left alone")),
        failed: false,
    }
}

/// What a mailbox's ended pass makes of its outcome; `log`: say so on stderr.
fn finished(
    bd: &BatchDir,
    u: &BatchUser,
    res: Result<Option<PassResult>, AppError>,
    log: bool,
) -> MailboxOutcome {
    let dir = bd.mailbox_dir(u);
    let state = lifecycle::load(&dir)
        .ok()
        .flatten()
        .map_or(MoveState::Created, |l| l.state);
    match res {
        Ok(Some(r)) => {
            if log {
                eprintln!(
                    "{}: {} ({} moved, {} bad){}",
                    u.address,
                    r.state,
                    r.report.items_moved,
                    r.report.bad_items.len(),
                    r.limit
                        .as_deref()
                        .map(|l| format!(": {l}"))
                        .unwrap_or_default()
                );
            }
            MailboxOutcome {
                address: u.address.clone(),
                state: r.state,
                ran: true,
                failed: r.state == MoveState::Failed,
                note: r.limit.clone(),
            }
        }
        Ok(None) => MailboxOutcome {
            address: u.address.clone(),
            state,
            ran: false,
            failed: false,
            note: Some("not started: the batch or the mailbox was suspended".into()),
        },
        Err(e) => {
            if log {
                eprintln!("{}: failed: {e:#}", u.address);
            }
            let refused = matches!(e, AppError::Refused(_));
            MailboxOutcome {
                address: u.address.clone(),
                state,
                ran: false,
                failed: !refused,
                note: Some(e.to_string()),
            }
        }
    }
}

fn not_run(u: &BatchUser, state: MoveState, why: String) -> MailboxOutcome {
    eprintln!("{}: failed: {why}", u.address);
    MailboxOutcome {
        address: u.address.clone(),
        state,
        ran: false,
        note: Some(why),
        failed: true,
    }
}

/// How the moves of one batch run read the endpoint: its `connections` as the endpoint
/// file says now (an edited endpoint applies from the next start on), and one budget
/// of its `max_connections` that every move of the run shares.
#[derive(Clone, Debug, Default)]
pub struct SharedReading {
    connections: Option<usize>,
    limit: Option<ConnectionLimit>,
}

impl SharedReading {
    /// The reading of a run over `ep`, with a budget of its own (see
    /// [`Endpoint::connection_limit`]).
    pub fn new(ep: &Endpoint) -> SharedReading {
        SharedReading {
            connections: ep.imap.as_ref().and_then(|i| i.connections),
            limit: ep.connection_limit(),
        }
    }

    /// Sets one move's source options: the endpoint's `connections` wins over the
    /// recorded count, which wins over the profile's and the default; with a budget, the
    /// count is cut to it (a move can never hold more) and the move gets a clone of it.
    pub fn apply(&self, o: &mut SourceOptions, profile: &Profile) {
        if let Some(n) = self.connections {
            o.connections = Some(n);
        }
        if let Some(limit) = &self.limit {
            let wanted = o
                .connections
                .or(profile.source.connections)
                .unwrap_or(DEFAULT_CONNECTIONS);
            o.connections = Some(wanted.min(limit.max()));
            o.connection_limit = Some(limit.clone());
        }
    }
}

/// What one mailbox's pass reads its source with, besides its record.
struct MoveSource {
    /// The inline password of its CSV row, if it has one.
    password: Option<SecretBytes>,
    /// The run's shared reading of the endpoint.
    reading: SharedReading,
}

/// One mailbox's pass; `Ok(None)` if the batch or the mailbox was suspended while it
/// waited for its turn.
async fn run_one(
    bd: &BatchDir,
    u: &BatchUser,
    dest: &Connected,
    opts: &PassOptions,
    source: MoveSource,
    hooks: PassHooks,
) -> Result<Option<PassResult>, AppError> {
    if bd.load()?.suspended {
        return Ok(None);
    }
    let dir = bd.mailbox_dir(u);
    if lifecycle::load(&dir)?.is_some_and(|l| l.state == MoveState::Suspended) {
        return Ok(None);
    }
    let mut args = lifecycle::recorded_args(&dir)?;
    args.source_options.password = source.password;
    source
        .reading
        .apply(&mut args.source_options, &args.profile);
    lifecycle::run_pass_on(dest, &args, opts, hooks)
        .await
        .map(Some)
}

/// `batch suspend`: the batch starts no further pass, and every mailbox not completed is
/// suspended (a running pass ends first). Returns how many mailboxes were suspended now
/// and how many when their pass ends.
pub fn suspend(bd: &BatchDir, actor: &str) -> Result<(usize, usize), AppError> {
    let b = bd.update(|b| {
        b.suspended = true;
        Ok(b.clone())
    })?;
    let (mut now, mut later) = (0, 0);
    for u in &b.users {
        let dir = bd.mailbox_dir(u);
        match lifecycle::suspend(
            &dir,
            actor,
            &format!("batch {} suspended by {actor}", b.name),
        ) {
            Ok(lifecycle::SuspendOutcome::Suspended) => now += 1,
            Ok(lifecycle::SuspendOutcome::Requested) => later += 1,
            Ok(lifecycle::SuspendOutcome::AlreadySuspended) | Err(AppError::Refused(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((now, later))
}

/// `batch resume`: clears the batch's suspension and resumes its suspended mailboxes.
/// Returns how many were resumed. Passes run again with `batch start`.
pub fn resume(bd: &BatchDir, actor: &str) -> Result<usize, AppError> {
    let b = bd.update(|b| {
        b.suspended = false;
        Ok(b.clone())
    })?;
    let mut n = 0;
    for u in &b.users {
        let dir = bd.mailbox_dir(u);
        match lifecycle::resume(&dir, actor) {
            Ok(_) => n += 1,
            Err(AppError::Refused(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

// === Status ===

/// One mailbox of `batch status`.
#[derive(Clone, Debug, Serialize)]
pub struct MailboxStatus {
    /// Destination address.
    pub address: String,
    /// User name at the source.
    pub user_name: String,
    /// Its row in its CSV.
    pub row: u64,
    /// The move's status.
    pub status: MoveStatus,
}

/// Totals of `batch status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    /// Mailboxes.
    pub mailboxes: usize,
    /// Mailboxes per state.
    pub by_state: BTreeMap<String, usize>,
    /// Failed mailboxes.
    pub failed: usize,
    /// Messages at the destination.
    pub items_synced: u64,
    /// Skipped items (bad and large).
    pub items_skipped: u64,
    /// Bad items.
    pub items_bad: u64,
    /// Bytes stored.
    pub bytes_transferred: u64,
    /// Average percent complete.
    pub percent_complete: f64,
}

/// `batch status` (its `--json` form is a stable interface).
#[derive(Clone, Debug, Serialize)]
pub struct BatchStatus {
    /// The batch.
    pub name: String,
    /// Suspended.
    pub suspended: bool,
    /// The endpoint file.
    pub endpoint: PathBuf,
    /// Every mailbox.
    pub mailboxes: Vec<MailboxStatus>,
    /// Totals.
    pub totals: Totals,
}

/// Reads the status of every mailbox of the batch.
pub fn status(bd: &BatchDir) -> Result<BatchStatus, AppError> {
    status_of(bd.load()?, |u| status::status(&bd.mailbox_dir(u)))
}

/// The status of batch `b` with each mailbox's status from `each` (its state directory,
/// or the rows of a coordination database), with the totals.
pub fn status_of(
    b: Batch,
    mut each: impl FnMut(&BatchUser) -> Result<MoveStatus, AppError>,
) -> Result<BatchStatus, AppError> {
    let mut mailboxes = Vec::new();
    let mut t = Totals::default();
    for u in &b.users {
        let s = each(u)?;
        t.mailboxes += 1;
        *t.by_state.entry(s.state.to_string()).or_default() += 1;
        t.failed += usize::from(s.state == MoveState::Failed);
        t.items_synced += s.items_synced;
        t.items_skipped += s.items_skipped;
        t.items_bad += s.items_bad;
        t.bytes_transferred += s.bytes_transferred;
        t.percent_complete += s.percent_complete;
        mailboxes.push(MailboxStatus {
            address: u.address.clone(),
            user_name: u.user_name.clone(),
            row: u.row,
            status: s,
        });
    }
    if t.mailboxes > 0 {
        t.percent_complete /= t.mailboxes as f64;
    }
    Ok(BatchStatus {
        name: b.name,
        suspended: b.suspended,
        endpoint: b.endpoint,
        mailboxes,
        totals: t,
    })
}

/// The status as a table.
pub fn render_status(s: &BatchStatus) -> String {
    let mut rows = vec![[
        "MAILBOX".to_string(),
        "STATE".into(),
        "DONE".into(),
        "SYNCED".into(),
        "SKIPPED".into(),
        "BAD".into(),
        "MB".into(),
        "LAST SYNC".into(),
        "NOTE".into(),
    ]];
    for m in &s.mailboxes {
        let st = &m.status;
        let note = match st.state {
            MoveState::Failed | MoveState::Suspended => st.reason.clone().unwrap_or_default(),
            _ if st.running => "pass running".into(),
            _ => String::new(),
        };
        rows.push([
            m.address.clone(),
            st.state.to_string(),
            format!("{:.0}%", st.percent_complete),
            st.items_synced.to_string(),
            st.items_skipped.to_string(),
            st.items_bad.to_string(),
            format!("{:.1}", st.bytes_transferred as f64 / 1e6),
            st.last_sync_at.clone().unwrap_or_else(|| "-".into()),
            note,
        ]);
    }
    let t = &s.totals;
    let by_state = t
        .by_state
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    rows.push([
        format!("total ({})", t.mailboxes),
        String::new(),
        format!("{:.0}%", t.percent_complete),
        t.items_synced.to_string(),
        t.items_skipped.to_string(),
        t.items_bad.to_string(),
        format!("{:.1}", t.bytes_transferred as f64 / 1e6),
        String::new(),
        by_state,
    ]);
    let mut width = [0usize; 9];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = format!(
        "batch {}{}\n",
        s.name,
        if s.suspended { " (suspended)" } else { "" }
    );
    for r in &rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i == 8 {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;

/// One mailbox of a batch dry run: its address and what its next pass would do, or why
/// it could not be previewed.
#[derive(Debug, Serialize)]
pub struct MailboxPreview {
    /// The mailbox.
    pub address: String,
    /// The preview.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<crate::dry_run::DryRun>,
    /// Why there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `batch start --dry-run`: the dry run of every mailbox of the batch, one after the
/// other, with the batch's endpoint, profile and passwords. Writes nothing: no state
/// directory, no volume, no lifecycle change (see [`crate::dry_run`]).
pub async fn dry_run(bd: &BatchDir) -> Result<Vec<MailboxPreview>, AppError> {
    let b = bd.load()?;
    dry_run_of(&b, |u| bd.mailbox_dir(u)).await
}

/// [`dry_run`] of a batch record whose move state directories `state_of` names (for
/// `batch start --dry-run --db`: local copies of the moves' rows). Reads them, never
/// writes them.
pub async fn dry_run_of(
    b: &Batch,
    state_of: impl Fn(&BatchUser) -> PathBuf,
) -> Result<Vec<MailboxPreview>, AppError> {
    let ep = Endpoint::load(&b.endpoint)?;
    let profile = lifecycle::load_profile(b.profile.as_deref())?;
    let target = crate::dry_run::DestinationPreview::of(&b.destination);
    // Read as a run would: the same counts, from one budget.
    let reading = SharedReading::new(&ep);
    let mut inline: HashMap<PathBuf, Result<HashMap<String, SecretBytes>, String>> = HashMap::new();
    let mut out = Vec::new();
    for u in &b.users {
        let inv = user_invocation(b, &ep, u);
        let mut options = SourceOptions {
            password_file: inv.password_file.clone(),
            source_ca: inv.source_ca.clone(),
            source_prefix: inv.source_prefix.clone(),
            namespaces: inv.source_namespaces,
            source_cert_sha256: inv.cert_sha256()?,
            connections: inv.source_connections,
            ..Default::default()
        };
        reading.apply(&mut options, &profile);
        if u.password == PasswordSource::Csv {
            let pws = inline
                .entry(u.csv.clone())
                .or_insert_with(|| inline_passwords(&u.csv));
            match pws {
                Ok(map) => options.password = map.get(&u.address).cloned(),
                Err(e) => {
                    out.push(MailboxPreview {
                        address: u.address.clone(),
                        preview: None,
                        error: Some(format!("cannot read its password from the CSV: {e}")),
                    });
                    continue;
                }
            }
        }
        let mailbox = match MailboxAddr::parse(&u.address) {
            Ok(m) => m,
            Err(e) => {
                out.push(MailboxPreview {
                    address: u.address.clone(),
                    preview: None,
                    error: Some(e.to_string()),
                });
                continue;
            }
        };
        let args = crate::dry_run::DryRunArgs {
            source: inv.source.clone(),
            source_options: options,
            mailbox,
            destination: target.clone(),
            state: state_of(u),
            profile: profile.clone(),
        };
        let r = crate::dry_run::dry_run(&args).await;
        out.push(MailboxPreview {
            address: u.address.clone(),
            error: r.as_ref().err().map(|e| format!("{e:#}")),
            preview: r.ok(),
        });
    }
    Ok(out)
}
