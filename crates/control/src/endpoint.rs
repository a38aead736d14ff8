//! Endpoint files: where a batch's mailboxes are, how to log in to them, and how hard
//! the batch may push that server (Exchange's migration endpoints).
//!
//! ```toml
//! # File sources: one mailbox per user, {user} is the CSV's UserName.
//! kind = "maildir"                       # maildir | mbox | eml | imap
//! root = "/srv/mail/{user}/Maildir"
//!
//! # IMAP source (instead of root):
//! # kind = "imap"
//! # host = "imap.example.com"
//! # port = 993                           # default: 993 with imaps, 143 with starttls
//! # tls = "imaps"                        # imaps (TLS from the first byte) | starttls
//! # ca_file = "source-ca.pem"            # default: the system's roots
//! # prefix = "INBOX."                    # personal namespace prefix mapped away from
//! #                                      # folder names; default: the server's NAMESPACE
//! # namespaces = "personal"              # personal | all (also shared, other users')
//! # ca_file = "source-ca.pem"            # default: the system's roots; the server's own
//! #                                      # certificate here is pinned exactly
//! # cert_sha256 = "AB:CD:..."            # pin the server certificate's SHA-256 (what
//! #                                      # `endpoint test` prints); with ca_file, both hold
//! # master_user = "migrator"             # Dovecot master user: log in as user*migrator
//! # master_password_file = "master.pw"   # the master user's password (then the CSV
//! #                                      # needs no passwords)
//! # connections = 4                      # connections each move reads with (1-64);
//! #                                      # default: the profile's, else 4
//! # max_connections = 16                 # connections all moves of a batch run hold
//! #                                      # together; default: no limit
//!
//! max_concurrent_moves = 4               # mailboxes in their initial copy at once
//! max_concurrent_incremental_syncs = 2   # mailboxes in an incremental pass at once
//! # max_bytes_per_second = "50MB"        # all moves of the endpoint together
//! # max_messages_per_second = 200
//!
//! # coordination_db_file = "db.url"     # with workers on PostgreSQL: a file (owner-only)
//! #                                      # holding the database URL, for `batch new`
//! #                                      # without --db (docs/coordination.md)
//! ```
//!
//! Relative paths are relative to the endpoint file's directory. Secrets are referenced
//! by file, never written in the endpoint. Parsing reports every problem at once, each
//! with its key. There is no plaintext IMAP: `starttls` must succeed or nothing is sent.
//!
//! `connections` larger than `max_connections` is refused: no move could ever open
//! them all. Without `connections`, a move reads with the profile's
//! `source.connections` (else 4), cut to `max_connections` when that is smaller, so
//! that `max_connections = 2` alone is enough for a server that allows two.
//!
//! A master user follows Dovecot's convention (`auth_master_user_separator = *`): the
//! agent logs in as `USER*MASTER` with the master's password and sees USER's mailbox.
//! `master_separator` changes the `*` for servers configured otherwise.

use crate::advice::Advice;
use crate::AppError;
use mailferry_agent::source::connections::{ConnectionLimit, DEFAULT_CONNECTIONS, MAX_CONNECTIONS};
use mailferry_agent::source::{Namespaces, Prior, SourceOptions};
use mailferry_core::profile::ByteSize;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What a source endpoint serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Maildir++ trees.
    Maildir,
    /// mbox files, or directories of them.
    Mbox,
    /// Trees of .eml files.
    Eml,
    /// An IMAP server.
    Imap,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "maildir" => Kind::Maildir,
            "mbox" => Kind::Mbox,
            "eml" => Kind::Eml,
            "imap" => Kind::Imap,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::Maildir => "maildir",
            Kind::Mbox => "mbox",
            Kind::Eml => "eml",
            Kind::Imap => "imap",
        }
    }
}

/// An IMAP endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Imap {
    /// Host name (as the certificate names it) or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS from the first byte (`imaps`) or STARTTLS (`starttls`).
    pub implicit_tls: bool,
    /// CA file to trust instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Pinned SHA-256 of the server's certificate.
    #[serde(serialize_with = "ser_fingerprint")]
    pub cert_sha256: Option<mailferry_core::tls::CertSha256>,
    /// Master user (Dovecot style): logs in as `user<separator>master`.
    pub master_user: Option<String>,
    /// The master user's password file.
    pub master_password_file: Option<PathBuf>,
    /// Between user and master in the login name.
    pub master_separator: String,
    /// The personal namespace's prefix mapped away from folder names (`INBOX.`);
    /// `None`: what the server's NAMESPACE says.
    pub prefix: Option<String>,
    /// Which namespaces move.
    pub namespaces: Namespaces,
    /// Connections each move reads with; `None`: the profile's, else the agent's
    /// default.
    pub connections: Option<usize>,
    /// Connections all the moves of one batch run hold at once, together; `None`: no
    /// limit but each move's own.
    pub max_connections: Option<usize>,
}

/// A parsed endpoint file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Endpoint {
    /// The file it was read from.
    pub file: PathBuf,
    /// Source kind.
    pub kind: Kind,
    /// File sources: path template with `{user}`.
    pub root: Option<String>,
    /// IMAP sources.
    pub imap: Option<Imap>,
    /// Mailboxes in their initial copy at once.
    pub max_concurrent_moves: usize,
    /// Mailboxes in an incremental pass at once.
    pub max_concurrent_incremental_syncs: usize,
    /// Source bytes per second, all moves of the endpoint together.
    pub max_bytes_per_second: Option<u64>,
    /// Messages per second, all moves together.
    pub max_messages_per_second: Option<f64>,
    /// A file holding the coordination database's URL, used when no `--db`,
    /// `--db-file`, `MAILFERRY_DB` or `MAILFERRY_DB_FILE` is given (mailferry-coord
    /// reads it). A path, not the secret itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordination_db_file: Option<PathBuf>,
}

const KEYS: &[&str] = &[
    "kind",
    "root",
    "host",
    "port",
    "tls",
    "ca_file",
    "cert_sha256",
    "master_user",
    "master_password_file",
    "master_separator",
    "prefix",
    "namespaces",
    "connections",
    "max_connections",
    "max_concurrent_moves",
    "max_concurrent_incremental_syncs",
    "max_bytes_per_second",
    "max_messages_per_second",
    "coordination_db_file",
];

/// The placeholder of a file source's `root`.
pub const USER_PLACEHOLDER: &str = "{user}";

impl Endpoint {
    /// Reads and parses an endpoint file.
    pub fn load(path: &Path) -> Result<Endpoint, AppError> {
        let text = std::fs::read_to_string(path).map_err(|e| AppError::io(path, e))?;
        Endpoint::parse(&text, path)
    }

    /// Parses an endpoint; `file` names it in errors and anchors relative paths. Every
    /// problem is reported at once (a usage error).
    pub fn parse(text: &str, file: &Path) -> Result<Endpoint, AppError> {
        let fail = |problems: Vec<String>| {
            AppError::Usage(format!(
                "endpoint {}: {} problem(s):\n  {}",
                file.display(),
                problems.len(),
                problems.join("\n  ")
            ))
        };
        let table: toml::Table =
            toml::from_str(text).map_err(|e| fail(vec![e.to_string().trim().to_string()]))?;
        let mut r = Reader {
            table: &table,
            base: file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
            problems: Vec::new(),
        };
        // Problems are listed in the order of this function: unknown keys, then each key
        // as read, then what the kind requires.
        r.unknown_keys();
        let kind = r.kind();
        let root = r.string("root");
        let imap_keys = ImapKeys::read(&mut r);
        let limits = r.limits();
        let coordination_db_file = r.string("coordination_db_file").map(|p| r.rel(&p));
        let imap = match kind {
            Some(Kind::Imap) => {
                if root.is_some() {
                    r.problem("root: only for file sources (maildir, mbox, eml)".into());
                }
                Some(r.imap(imap_keys))
            }
            Some(_) => {
                r.file_source(&imap_keys, root.as_deref());
                None
            }
            None => None,
        };
        if !r.problems.is_empty() {
            return Err(fail(r.problems));
        }
        let kind = kind.expect("no problems: kind is set");
        Ok(Endpoint {
            file: std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf()),
            kind,
            root: root.map(|root| {
                // Relative to the endpoint file, like every other path in it.
                if Path::new(&root).is_absolute() {
                    root
                } else {
                    r.rel(&root).display().to_string()
                }
            }),
            imap,
            max_concurrent_moves: limits.max_concurrent_moves,
            max_concurrent_incremental_syncs: limits.max_concurrent_incremental_syncs,
            max_bytes_per_second: limits.max_bytes_per_second,
            max_messages_per_second: limits.max_messages_per_second,
            coordination_db_file,
        })
    }

    /// True if each user needs a password of their own (IMAP without a master user).
    pub fn needs_user_password(&self) -> bool {
        self.imap.as_ref().is_some_and(|i| i.master_user.is_none())
    }

    /// Why `user` cannot be a user of this endpoint, if it cannot.
    pub fn check_user(&self, user: &str) -> Option<String> {
        if user.is_empty() {
            return Some("missing user name".into());
        }
        if user.chars().any(char::is_control) {
            return Some("the user name has control characters".into());
        }
        if self.kind != Kind::Imap
            && (user.contains('/') || user == "." || user == ".." || user.starts_with('.'))
        {
            return Some(format!(
                "{user:?} cannot be put in a path ({USER_PLACEHOLDER} of root): no '/', no leading '.'"
            ));
        }
        if let Some(i) = &self.imap {
            if i.master_user.is_some() && user.contains(i.master_separator.as_str()) {
                return Some(format!(
                    "the user name holds the master separator {:?}",
                    i.master_separator
                ));
            }
        }
        None
    }

    /// The source spec of `user`'s mailbox and what it logs in with. `password_file` is
    /// the user's own (IMAP without a master user); with a master user the master's
    /// password is used.
    pub fn source_for(&self, user: &str, password_file: Option<&Path>) -> (String, SourceOptions) {
        match &self.imap {
            None => {
                let root = self.root.as_deref().unwrap_or_default();
                (
                    format!(
                        "{}:{}",
                        self.kind.as_str(),
                        root.replace(USER_PLACEHOLDER, user)
                    ),
                    SourceOptions::default(),
                )
            }
            Some(i) => {
                let login = match &i.master_user {
                    Some(m) => format!("{user}{}{m}", i.master_separator),
                    None => user.to_string(),
                };
                let host = if i.host.contains(':') {
                    format!("[{}]", i.host)
                } else {
                    i.host.clone()
                };
                let scheme = if i.implicit_tls { "imaps" } else { "imap" };
                let spec = format!("{scheme}://{}@{host}:{}", encode_login(&login), i.port);
                let options = SourceOptions {
                    password_file: i
                        .master_password_file
                        .clone()
                        .or_else(|| password_file.map(Path::to_path_buf)),
                    oauth_token_file: None,
                    source_ca: i.ca_file.clone(),
                    source_cert_sha256: i.cert_sha256,
                    password: None,
                    source_prefix: i.prefix.clone(),
                    namespaces: i.namespaces,
                    maildir_names: None,
                    connections: i.connections,
                    ..Default::default()
                };
                (spec, options)
            }
        }
    }

    /// A new connection budget of the endpoint's `max_connections`, if it sets one. A
    /// batch run makes one and gives every move a clone, so that together they never
    /// hold more; two runs (or two endpoints) never share one.
    pub fn connection_limit(&self) -> Option<ConnectionLimit> {
        self.imap
            .as_ref()
            .and_then(|i| i.max_connections)
            .map(ConnectionLimit::new)
    }

    /// The endpoint's shared throttle, if it sets a rate.
    pub fn throttle(&self) -> Option<std::sync::Arc<mailferry_agent::throttle::Throttle>> {
        let limits = mailferry_agent::throttle::Limits {
            bytes_per_second: self.max_bytes_per_second,
            messages_per_second: self.max_messages_per_second,
        };
        (!limits.is_unlimited())
            .then(|| std::sync::Arc::new(mailferry_agent::throttle::Throttle::new(limits)))
    }
}

fn ser_fingerprint<S: serde::Serializer>(
    f: &Option<mailferry_core::tls::CertSha256>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match f {
        Some(f) => s.serialize_some(&f.to_string()),
        None => s.serialize_none(),
    }
}

/// Percent-encodes a login name for the userinfo of an IMAP URL (the source decodes it).
fn encode_login(login: &str) -> String {
    let mut out = String::new();
    for b in login.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~*+!$&'()=,;".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// === endpoint test ===

/// One check of `endpoint test`.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What was checked.
    pub check: String,
    /// Passed.
    pub ok: bool,
    /// What was found, or why it failed.
    pub detail: String,
}

/// The result of `endpoint test`.
#[derive(Clone, Debug, Serialize)]
pub struct TestReport {
    /// The endpoint file.
    pub endpoint: PathBuf,
    /// Its kind.
    pub kind: Kind,
    /// The user tested, if one was.
    pub user: Option<String>,
    /// The source spec tested (no secret).
    pub source: Option<String>,
    /// IMAP: the certificate the server presented (whether trusted or not), so that an
    /// admin can pin it.
    pub certificate: Option<mailferry_core::tls::CertInfo>,
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// All passed.
    pub ok: bool,
    /// IMAP: the endpoint's `connections` (per move), if it sets it.
    pub connections: Option<usize>,
    /// IMAP: the endpoint's `max_connections` (all moves of a batch run), if it sets it.
    pub max_connections: Option<usize>,
}

/// Checks an endpoint before anything moves: for file sources, that the mailbox path
/// of `user` exists and is a mailbox of the endpoint's kind (without a user: that the
/// directory above the `{user}` part exists); for IMAP, that the server answers on its
/// port and, with a user, that TLS, the certificate, the login and listing the mailbox
/// work, through the same IMAP source a move uses. `password_file` is the user's
/// password (IMAP without a master user; default: the environment variable the IMAP
/// source reads).
pub async fn test(
    ep: &Endpoint,
    user: Option<&str>,
    password_file: Option<&Path>,
) -> Result<TestReport, AppError> {
    let mut checks = Vec::new();
    let mut push = |check: &str, r: Result<String, String>| {
        let (ok, detail) = match r {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        checks.push(Check {
            check: check.into(),
            ok,
            detail,
        });
        ok
    };
    let mut source = None;
    let mut certificate = None;
    if let Some(u) = user {
        if let Some(why) = ep.check_user(u) {
            return Err(AppError::Usage(format!("--user {u:?}: {why}")));
        }
    }
    match (&ep.imap, user) {
        (None, None) => {
            let root = ep.root.as_deref().unwrap_or_default();
            let fixed = root
                .split(USER_PLACEHOLDER)
                .next()
                .unwrap_or_default()
                .rsplit_once('/')
                .map(|(d, _)| if d.is_empty() { "/" } else { d })
                .unwrap_or(".");
            let p = Path::new(fixed);
            push(
                "root directory",
                if p.is_dir() {
                    Ok(format!(
                        "{} exists ({})",
                        p.display(),
                        Advice::TestWithUser.cli()
                    ))
                } else {
                    Err(format!("{} is not a directory", p.display()))
                },
            );
        }
        (Some(i), None) => {
            if push("connect", connect(&i.host, i.port).await) {
                let (spec, options) = ep.source_for("probe", None);
                let (info, r) = certificate_check(&spec, &options).await;
                certificate = info;
                push("certificate", r);
            }
        }
        (imap, Some(u)) => {
            let (spec, options) = ep.source_for(u, password_file);
            source = Some(mailferry_agent::source::imap::redact(&spec));
            let mut reachable = match imap {
                Some(i) => push("connect", connect(&i.host, i.port).await),
                None => true,
            };
            if reachable && imap.is_some() {
                let (info, r) = certificate_check(&spec, &options).await;
                certificate = info;
                reachable = push("certificate", r);
            }
            if reachable {
                let what = if imap.is_some() {
                    "TLS, login and LIST"
                } else {
                    "mailbox"
                };
                let r = match mailferry_agent::source::from_spec(&spec, &options) {
                    Err(e) => Err(e.to_string()),
                    Ok(src) => tokio::task::spawn_blocking(move || {
                        src.list(&Prior::default()).map_err(|e| e.to_string())
                    })
                    .await
                    .expect("listing thread panicked")
                    .map(|l| {
                        let folders: std::collections::BTreeSet<_> =
                            l.items.iter().map(|i| i.folder.clone()).collect();
                        let bytes: u64 = l.items.iter().map(|i| i.size).sum();
                        format!(
                            "{} message(s) in {} folder(s), {:.1} MB{}",
                            l.items.len(),
                            folders.len(),
                            bytes as f64 / 1e6,
                            if l.bad.is_empty() {
                                String::new()
                            } else {
                                format!(", {} bad item(s)", l.bad.len())
                            }
                        )
                    }),
                };
                push(what, r);
            }
        }
    }
    let ok = checks.iter().all(|c| c.ok);
    Ok(TestReport {
        endpoint: ep.file.clone(),
        kind: ep.kind,
        user: user.map(str::to_string),
        source,
        certificate,
        checks,
        ok,
        connections: ep.imap.as_ref().and_then(|i| i.connections),
        max_connections: ep.imap.as_ref().and_then(|i| i.max_connections),
    })
}

/// Secures a connection to the server of `spec` (no login) and says what certificate it
/// presented and whether `options` trust it.
async fn certificate_check(
    spec: &str,
    options: &SourceOptions,
) -> (
    Option<mailferry_core::tls::CertInfo>,
    Result<String, String>,
) {
    match mailferry_agent::source::imap::probe_certificate(spec, options).await {
        Err(e) => (None, Err(e)),
        Ok(p) => {
            let how = match (&options.source_ca, &options.source_cert_sha256) {
                (Some(f), Some(_)) => format!("pinned by cert_sha256 and ca_file {}", f.display()),
                (Some(f), None) => format!("by ca_file {}", f.display()),
                (None, Some(_)) => "pinned by cert_sha256".to_string(),
                (None, None) => "by the system's roots".to_string(),
            };
            let r = match (&p.presented, p.trusted) {
                (Some(c), Ok(())) => Ok(format!("trusted {how}: {c}")),
                (None, Ok(())) => Ok(format!("trusted {how}")),
                (_, Err(e)) => Err(e),
            };
            (p.presented, r)
        }
    }
}

/// TCP connect to `host:port` within 10 s.
async fn connect(host: &str, port: u16) -> Result<String, String> {
    let fut = tokio::net::TcpStream::connect((host, port));
    match tokio::time::timeout(std::time::Duration::from_secs(10), fut).await {
        Ok(Ok(s)) => Ok(format!(
            "{host}:{port} answers ({})",
            s.peer_addr().map(|a| a.to_string()).unwrap_or_default()
        )),
        Ok(Err(e)) => Err(format!("{host}:{port}: {e}")),
        Err(_) => Err(format!("{host}:{port}: no answer within 10 s")),
    }
}

/// The report as text.
pub fn render_text(r: &TestReport) -> String {
    let mut out = format!(
        "endpoint {} ({}){}\n",
        r.endpoint.display(),
        r.kind.as_str(),
        r.source
            .as_deref()
            .map(|s| format!(": {s}"))
            .unwrap_or_default()
    );
    for c in &r.checks {
        out.push_str(&format!(
            "  {} {:<20} {}\n",
            if c.ok { "ok  " } else { "FAIL" },
            c.check,
            c.detail
        ));
    }
    if r.kind == Kind::Imap {
        out.push_str(&reading_text(r.connections, r.max_connections));
    }
    if let Some(c) = &r.certificate {
        out.push_str(&format!(
            "server certificate:\n  subject     {}\n  issuer      {}\n  not before  {}\n  \
             not after   {}\n  SHA-256     {}\n",
            c.subject, c.issuer, c.not_before, c.not_after, c.sha256
        ));
    }
    out
}

/// How moves of this endpoint read it, in words: what `endpoint test` says of its
/// `connections` and `max_connections`.
fn reading_text(connections: Option<usize>, max_connections: Option<usize>) -> String {
    let per_move = match (connections, max_connections) {
        (Some(n), _) => format!("{n} per move"),
        (None, Some(max)) if max < DEFAULT_CONNECTIONS => format!(
            "the profile's source.connections, else {DEFAULT_CONNECTIONS}, cut to {max} \
             per move"
        ),
        (None, _) => {
            format!("the profile's source.connections, else {DEFAULT_CONNECTIONS}, per move")
        }
    };
    let total = match max_connections {
        Some(max) => format!("at most {max} across the moves of a batch run"),
        None => "no limit across the moves of a batch run".to_string(),
    };
    format!("reading: {per_move}; {total}\n")
}

// === parsing ===

/// Reads the keys of one endpoint file, collecting every problem instead of stopping at
/// the first.
struct Reader<'a> {
    table: &'a toml::Table,
    /// The endpoint file's directory: relative paths in it are relative to it.
    base: &'a Path,
    problems: Vec<String>,
}

/// The IMAP-only keys as given (checked against the kind afterwards).
struct ImapKeys {
    host: Option<String>,
    tls: Option<String>,
    ca_file: Option<String>,
    cert_sha256: Option<String>,
    master_user: Option<String>,
    master_password_file: Option<String>,
    master_separator: Option<String>,
    prefix: Option<String>,
    namespaces: Option<String>,
    port: Option<u16>,
    connections: Option<i64>,
    max_connections: Option<i64>,
}

/// The endpoint's concurrency and rate limits.
struct EndpointLimits {
    max_concurrent_moves: usize,
    max_concurrent_incremental_syncs: usize,
    max_bytes_per_second: Option<u64>,
    max_messages_per_second: Option<f64>,
}

impl ImapKeys {
    fn read(r: &mut Reader<'_>) -> ImapKeys {
        let host = r.string("host");
        let tls = r.string("tls");
        let ca_file = r.string("ca_file");
        let cert_sha256 = r.string("cert_sha256");
        let master_user = r.string("master_user");
        let master_password_file = r.string("master_password_file");
        let master_separator = r.string("master_separator");
        let prefix = r.string("prefix");
        let namespaces = r.string("namespaces");
        let port = r.int("port").and_then(|p| match u16::try_from(p) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                r.problem(format!("port: {p} is not a TCP port (1-65535)"));
                None
            }
        });
        ImapKeys {
            host,
            tls,
            ca_file,
            cert_sha256,
            master_user,
            master_password_file,
            master_separator,
            prefix,
            namespaces,
            port,
            connections: r.int("connections"),
            max_connections: r.int("max_connections"),
        }
    }

    /// The keys that are given, by name.
    fn given(&self) -> [(&'static str, bool); 12] {
        [
            ("host", self.host.is_some()),
            ("port", self.port.is_some()),
            ("tls", self.tls.is_some()),
            ("ca_file", self.ca_file.is_some()),
            ("cert_sha256", self.cert_sha256.is_some()),
            ("master_user", self.master_user.is_some()),
            ("master_password_file", self.master_password_file.is_some()),
            ("master_separator", self.master_separator.is_some()),
            ("prefix", self.prefix.is_some()),
            ("namespaces", self.namespaces.is_some()),
            ("connections", self.connections.is_some()),
            ("max_connections", self.max_connections.is_some()),
        ]
    }
}

impl Reader<'_> {
    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    /// `p` relative to the endpoint file, made absolute.
    fn rel(&self, p: &str) -> PathBuf {
        let p = PathBuf::from(p);
        std::path::absolute(self.base.join(&p)).unwrap_or(p)
    }

    fn unknown_keys(&mut self) {
        for k in self.table.keys() {
            if !KEYS.contains(&k.as_str()) {
                self.problems
                    .push(format!("{k}: unknown key (known: {})", KEYS.join(", ")));
            }
        }
    }

    fn string(&mut self, k: &str) -> Option<String> {
        match self.table.get(k) {
            None => None,
            Some(toml::Value::String(s)) => Some(s.clone()),
            Some(v) => {
                self.problem(format!("{k}: expected a string, found {}", v.type_str()));
                None
            }
        }
    }

    fn int(&mut self, k: &str) -> Option<i64> {
        match self.table.get(k) {
            None => None,
            Some(toml::Value::Integer(i)) => Some(*i),
            Some(v) => {
                self.problem(format!("{k}: expected an integer, found {}", v.type_str()));
                None
            }
        }
    }

    /// A count between 1 and 10000, `default` if absent or wrong.
    fn count(&mut self, k: &str, default: usize) -> usize {
        match self.int(k) {
            None => default,
            Some(n) if (1..=10_000).contains(&n) => n as usize,
            Some(n) => {
                self.problem(format!("{k}: {n} must be between 1 and 10000"));
                default
            }
        }
    }

    fn kind(&mut self) -> Option<Kind> {
        match self.string("kind") {
            None => {
                self.problem("kind: missing (maildir, mbox, eml or imap)".into());
                None
            }
            Some(k) => {
                let kind = Kind::parse(&k);
                if kind.is_none() {
                    self.problem(format!(
                        "kind: {k:?} is not one of maildir, mbox, eml, imap"
                    ));
                }
                kind
            }
        }
    }

    fn limits(&mut self) -> EndpointLimits {
        let defaults = mailferry_core::profile::ConcurrencySettings::default();
        let max_concurrent_moves =
            self.count("max_concurrent_moves", defaults.max_concurrent_moves);
        let max_concurrent_incremental_syncs = self.count(
            "max_concurrent_incremental_syncs",
            defaults
                .max_concurrent_incremental_syncs
                .min(max_concurrent_moves),
        );
        if max_concurrent_incremental_syncs > max_concurrent_moves {
            self.problem(format!(
                "max_concurrent_incremental_syncs: {max_concurrent_incremental_syncs} is more \
                 than max_concurrent_moves ({max_concurrent_moves})"
            ));
        }
        EndpointLimits {
            max_concurrent_moves,
            max_concurrent_incremental_syncs,
            max_bytes_per_second: self.byte_rate(),
            max_messages_per_second: self.message_rate(),
        }
    }

    fn byte_rate(&mut self) -> Option<u64> {
        match self.table.get("max_bytes_per_second") {
            None => None,
            Some(toml::Value::Integer(n)) if *n > 0 => Some(*n as u64),
            Some(toml::Value::String(s)) => match ByteSize::parse(s) {
                Ok(b) if b.0 > 0 => Some(b.0),
                Ok(_) => {
                    self.problem("max_bytes_per_second: must be more than 0".into());
                    None
                }
                Err(e) => {
                    self.problem(format!("max_bytes_per_second: {e}"));
                    None
                }
            },
            Some(v) => {
                self.problem(format!(
                    "max_bytes_per_second: expected a size (\"50MB\") or a positive integer, found {v}"
                ));
                None
            }
        }
    }

    fn message_rate(&mut self) -> Option<f64> {
        match self.table.get("max_messages_per_second") {
            None => None,
            Some(toml::Value::Integer(n)) if *n > 0 => Some(*n as f64),
            Some(toml::Value::Float(f)) if f.is_finite() && *f > 0.0 => Some(*f),
            Some(v) => {
                self.problem(format!(
                    "max_messages_per_second: expected a positive number, found {v}"
                ));
                None
            }
        }
    }

    /// The IMAP settings of `kind = "imap"`, with defaults for what is not given.
    fn imap(&mut self, k: ImapKeys) -> Imap {
        let host = k.host.unwrap_or_else(|| {
            self.problem("host: missing (an IMAP endpoint needs its server)".into());
            String::new()
        });
        if host.contains(['/', '@', ' ']) {
            self.problem(format!("host: {host:?} is not a host name or address"));
        }
        let implicit_tls = match k.tls.as_deref() {
            None | Some("imaps") => true,
            Some("starttls") => false,
            Some(other) => {
                self.problem(format!(
                    "tls: {other:?} is not imaps or starttls (plaintext IMAP is not offered)"
                ));
                true
            }
        };
        if k.master_user.is_some() != k.master_password_file.is_some() {
            self.problem("master_user and master_password_file: give both or neither".into());
        }
        let sep = k.master_separator.unwrap_or_else(|| "*".into());
        if sep.is_empty() || sep.chars().any(|c| c.is_control() || c == '@') {
            self.problem(format!("master_separator: {sep:?} cannot separate logins"));
        }
        let namespaces = match k.namespaces.as_deref().map(str::parse::<Namespaces>) {
            None => Namespaces::Personal,
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                self.problem(format!("namespaces: {e}"));
                Namespaces::Personal
            }
        };
        let cert_sha256 = k.cert_sha256.as_deref().and_then(|t| {
            mailferry_core::tls::CertSha256::parse(t)
                .map_err(|e| self.problem(format!("cert_sha256: {e}")))
                .ok()
        });
        let (connections, max_connections) = self.connections(k.connections, k.max_connections);
        Imap {
            connections,
            max_connections,
            prefix: k.prefix,
            namespaces,
            host,
            port: k.port.unwrap_or(if implicit_tls { 993 } else { 143 }),
            implicit_tls,
            ca_file: k.ca_file.as_deref().map(|p| self.rel(p)),
            cert_sha256,
            master_user: k.master_user,
            master_password_file: k.master_password_file.as_deref().map(|p| self.rel(p)),
            master_separator: sep,
        }
    }

    /// `connections` (per move, 1 to [`MAX_CONNECTIONS`]) and `max_connections` (all
    /// moves of a batch run together, at least 1), checked against each other.
    fn connections(
        &mut self,
        per_move: Option<i64>,
        total: Option<i64>,
    ) -> (Option<usize>, Option<usize>) {
        let per_move = per_move.and_then(|n| match usize::try_from(n) {
            Ok(n) if (1..=MAX_CONNECTIONS).contains(&n) => Some(n),
            _ => {
                self.problem(format!(
                    "connections: {n} must be between 1 and {MAX_CONNECTIONS} (IMAP \
                     connections each move reads with)"
                ));
                None
            }
        });
        let total = total.and_then(|n| match usize::try_from(n) {
            Ok(n) if (1..=10_000).contains(&n) => Some(n),
            _ => {
                self.problem(format!(
                    "max_connections: {n} must be between 1 and 10000 (connections all \
                     moves of a batch hold together; leave it out for no limit)"
                ));
                None
            }
        });
        if let (Some(n), Some(max)) = (per_move, total) {
            if n > max {
                self.problem(format!(
                    "connections: {n} is more than max_connections ({max}): no move could \
                     open them all; lower connections or raise max_connections"
                ));
            }
        }
        (per_move, total)
    }

    /// A file source (maildir, mbox, eml): no IMAP key, and a `root` with `{user}`.
    fn file_source(&mut self, k: &ImapKeys, root: Option<&str>) {
        for (key, given) in k.given() {
            if given {
                self.problem(format!("{key}: only for kind = \"imap\""));
            }
        }
        match root {
            None => self.problem(
                "root: missing (the path of each mailbox, with {user}: \
                 \"/srv/mail/{user}/Maildir\")"
                    .into(),
            ),
            Some(r) if !r.contains(USER_PLACEHOLDER) => self.problem(format!(
                "root: {r:?} has no {USER_PLACEHOLDER}: every user would get the same mailbox"
            )),
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests;
