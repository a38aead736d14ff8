//! mailferry-admin: the admin service of mailferry.
//!
//! `mailferry admin serve`: the admin service. A REST API under `/api/v1` and the
//! server-rendered wizard and dashboard ([`pages`]), over HTTPS, for accounts with a
//! password and a TOTP code, in three roles (`admin` changes things, `auditor` reads,
//! `approver` decides lockbox requests for its tenants: [`lockbox`]).
//!
//! The service calls the same library functions as the CLI (batches, lifecycle,
//! endpoints, reports, audit); it never runs the `mailferry` binary. It does not store
//! mail itself: every move writes into the volume given with `--volume`, through the
//! same embedded proxy `mailferry move` uses.
//!
//! # State directory (`--state DIR`)
//!
//! ```text
//! DIR/accounts.json          accounts (0600): Argon2id hashes, TOTP secrets, lockouts
//! DIR/admin-audit.jsonl      hash-chained admin audit log (mailferry-audit format)
//! DIR/lockbox.json           lockbox requests and grants (0600; [`lockbox`])
//! DIR/lockbox-keys/ID.key    a grant's one-time private key, until the grant ends
//! DIR/endpoints/NAME.toml    endpoints (the `mailferry endpoint` format)
//! DIR/uploads/BATCH.csv      the CSV a batch was created from (0600: it may hold passwords)
//! DIR/batches/NAME/          batch directories (the `mailferry batch` format, one move
//!                            state directory per mailbox under `mailboxes/`), with the
//!                            wizard's `admin.json` and the latest run's `admin-job.json`
//! DIR/tls/                   generated CA and server certificate (without `--tls-cert`)
//! ```
//!
//! With `--db` (`admin serve --db URL`, [`AdminConfig::db`]) the batches and moves are
//! the rows of the coordination database instead of `DIR/batches` ([`backend`]); the
//! accounts, the admin audit log, the lockbox, the endpoints and the uploads stay in
//! `DIR`.
//!
//! Sessions live in memory only: a restart logs everybody out. Scheduled runs ("start
//! later", "complete after") and each batch's latest run are on disk
//! ([`jobs::JOB_FILE`]): a restart re-arms the schedules, and shows a run whose pass
//! was going on as interrupted.

pub mod accounts;
pub mod actions;
pub mod api;
pub mod audit;
pub mod backend;
pub mod error;
pub mod jobs;
pub mod lockbox;
pub mod openapi;
pub mod pages;
pub mod role;
pub mod session;

pub use error::AdminError;
pub use role::Role;
pub use session::{check_csrf, AdminViewer, Viewer};

use mailferry_control::AppError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How often the service deletes the one-time keys of grants past their expiry.
const GRANT_KEY_SWEEP: Duration = Duration::from_secs(5);

/// Everything `mailferry admin serve` needs.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Address to listen on (port 0: any free port, printed at start).
    pub listen: SocketAddr,
    /// The service's state directory (layout in the module docs).
    pub state: PathBuf,
    /// The destination volume of every move.
    pub volume: PathBuf,
    /// The volume's key file.
    pub key_file: PathBuf,
    /// Server certificate chain and PKCS#8 key (PEM); both or neither.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Where to keep the generated CA and certificate (default `DIR/tls`).
    pub tls_dir: Option<PathBuf>,
    /// A session unused this long expires.
    pub session_idle: Duration,
    /// A session expires this long after login, used or not.
    pub session_absolute: Duration,
    /// Failed logins in a row that lock an account.
    pub max_failures: u32,
    /// How long a locked account stays locked.
    pub lockout: Duration,
    /// The coordination database holding the batches and moves (`--db`); `None`: the
    /// batch directories under `state`.
    pub db: Option<mailferry_coord::DbUrl>,
    /// With `db`: the `mailferry serve` (`--proxy`, `--ca`, `--token-file`) that the
    /// batches created through the API and the wizard write into, so that workers on
    /// other machines reach it. `None`: the service's own `volume` with `key_file`,
    /// which a worker opens at that path (so it runs on this machine or sees the same
    /// path).
    pub proxy: Option<ProxyDestination>,
}

/// A `mailferry serve` the workers stream to: its URL, the CA its certificate is checked
/// against, and the file holding the agent token. Paths, never the token itself; every
/// worker reads the files at these paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyDestination {
    /// `https://host:port`.
    pub url: String,
    /// PEM file of the store's CA.
    pub ca: PathBuf,
    /// File holding the agent token (`mailferry token issue --out`).
    pub token_file: PathBuf,
}

impl AdminConfig {
    /// Defaults for everything but the paths: idle 30 min, absolute 12 h, 5 failures
    /// lock for 15 min.
    pub fn new(listen: SocketAddr, state: PathBuf, volume: PathBuf, key_file: PathBuf) -> Self {
        AdminConfig {
            listen,
            state,
            volume,
            key_file,
            tls: None,
            tls_dir: None,
            session_idle: Duration::from_secs(30 * 60),
            session_absolute: Duration::from_secs(12 * 3600),
            max_failures: 5,
            lockout: Duration::from_secs(15 * 60),
            db: None,
            proxy: None,
        }
    }

    /// `DIR/endpoints`.
    pub fn endpoints_dir(&self) -> PathBuf {
        self.state.join("endpoints")
    }

    /// `DIR/batches`.
    pub fn batches_dir(&self) -> PathBuf {
        self.state.join("batches")
    }

    /// `DIR/uploads`.
    pub fn uploads_dir(&self) -> PathBuf {
        self.state.join("uploads")
    }

    /// Where a batch created through the API or the wizard writes: the `--proxy` store
    /// when the batches are in the database and one is given, else the service's volume.
    pub fn batch_destination(&self) -> mailferry_control::moving::Destination {
        use mailferry_control::moving::Destination;
        match (&self.db, &self.proxy) {
            (Some(_), Some(p)) => Destination::Remote {
                url: p.url.clone(),
                ca: p.ca.clone(),
                token_file: p.token_file.clone(),
            },
            _ => Destination::Local {
                volume: self.volume.clone(),
                credential: mailferry_store::Credential::KeyFile(self.key_file.clone()),
                s3: Default::default(),
            },
        }
        .absolute()
    }
}

/// The accounts and audit log of a state directory (see [`AdminState::open_accounts_only`]).
#[derive(Debug)]
pub struct AccountsOnly {
    /// The accounts.
    pub accounts: accounts::Accounts,
    /// The admin audit log.
    pub audit: audit::AdminAudit,
    /// The lockbox's requests and grants.
    pub lockbox: lockbox::Lockbox,
}

/// The shared state of the service (cheap to clone).
#[derive(Clone)]
pub struct AdminState {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: AdminConfig,
    accounts: accounts::Accounts,
    sessions: session::Sessions,
    audit: audit::AdminAudit,
    jobs: jobs::Jobs,
    lockbox: lockbox::Lockbox,
    backend: backend::Backend,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("state", &self.inner.cfg.state)
            .finish_non_exhaustive()
    }
}

impl AdminState {
    /// Opens the state directory (creating it, 0700), the admin audit log and the
    /// batches' latest-run records (nothing is started: see [`jobs::Jobs::rearm`]).
    pub fn open(cfg: AdminConfig) -> Result<AdminState, AppError> {
        use std::os::unix::fs::DirBuilderExt;
        for d in [
            cfg.state.clone(),
            cfg.endpoints_dir(),
            cfg.batches_dir(),
            cfg.uploads_dir(),
        ] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .map_err(|e| AppError::io(&d, e))?;
        }
        let accounts = accounts::Accounts::open(&cfg.state)?;
        let audit = audit::AdminAudit::open(&cfg.state)?;
        let jobs = jobs::Jobs::open(&cfg.batches_dir())?;
        Ok(AdminState {
            inner: Arc::new(Inner {
                lockbox: lockbox::Lockbox::open(&cfg.state),
                backend: backend::Backend::new(cfg.db.clone()),
                sessions: session::Sessions::default(),
                jobs,
                accounts,
                audit,
                cfg,
            }),
        })
    }

    /// The accounts and the admin audit log of a state directory, without the rest of
    /// the service (`mailferry admin add`, which may run while the service does).
    pub fn open_accounts_only(dir: &std::path::Path) -> Result<AccountsOnly, AppError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| AppError::io(dir, e))?;
        Ok(AccountsOnly {
            accounts: accounts::Accounts::open(dir)?,
            audit: audit::AdminAudit::open(dir)?,
            lockbox: lockbox::Lockbox::open(dir),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AdminConfig {
        &self.inner.cfg
    }

    /// The accounts.
    pub fn accounts(&self) -> &accounts::Accounts {
        &self.inner.accounts
    }

    /// The sessions.
    pub fn sessions(&self) -> &session::Sessions {
        &self.inner.sessions
    }

    /// The admin audit log.
    pub fn audit(&self) -> &audit::AdminAudit {
        &self.inner.audit
    }

    /// The background runs.
    pub fn jobs(&self) -> &jobs::Jobs {
        &self.inner.jobs
    }

    /// The lockbox's requests and grants.
    pub fn lockbox(&self) -> &lockbox::Lockbox {
        &self.inner.lockbox
    }

    /// Where the batches and moves live.
    pub fn backend(&self) -> &backend::Backend {
        &self.inner.backend
    }
}

/// The whole service: the API, `/healthz`, and the pages.
pub fn router(state: AdminState) -> axum::Router {
    api::routes()
        .merge(pages::routes())
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// Headers every response carries: no caching of authenticated data, no framing, no
/// MIME sniffing, and HTTPS only.
async fn security_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{header, HeaderValue};
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    r
}

/// The TLS configuration: the given certificate, or a CA and server certificate
/// generated once in `tls_dir` (default `DIR/tls`). Returns the CA path when generated.
fn tls_config(cfg: &AdminConfig) -> Result<(Arc<rustls::ServerConfig>, Option<PathBuf>), AppError> {
    let (identity, ca) = mailferry_control::serve::server_identity(
        &cfg.tls,
        || cfg.tls_dir.clone().unwrap_or_else(|| cfg.state.join("tls")),
        cfg.listen,
    )?;
    Ok((mailferry_core::tls::server_config(&identity)?, ca))
}

/// Serves the admin service until `shutdown` completes. Prints
/// `mailferry admin: listening on https://ADDR` and, with a generated certificate,
/// `mailferry admin: browsers and agents must trust the CA PATH` on stderr once listening.
pub async fn serve(
    cfg: AdminConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AppError> {
    use hyper_util::rt::TokioIo;
    use tower::ServiceExt;
    let (tls, ca) = tls_config(&cfg)?;
    let state = AdminState::open(cfg.clone())?;
    match state.backend().db() {
        // Connected (and the schema migrated) now, so that a wrong URL fails the start.
        Some(db) => {
            db.get()
                .await
                .map_err(|e| AppError::Usage(format!("--db: {e}")))?;
            eprintln!("mailferry admin: batches and moves are in PostgreSQL (--db); `mailferry worker --db ...` runs their passes");
        }
        // Scheduled runs are file-based; none are re-armed against a database.
        None => {
            for name in state.jobs().rearm() {
                eprintln!("mailferry admin: batch {name}: scheduled run re-armed");
            }
        }
    }
    let app = router(state.clone());
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| AppError::Usage(format!("listen on {}: {e}", cfg.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| AppError::Usage(format!("listen on {}: {e}", cfg.listen)))?;
    eprintln!("mailferry admin: listening on https://{addr}");
    match &ca {
        Some(p) => eprintln!(
            "mailferry admin: browsers and agents must trust the CA {}",
            p.display()
        ),
        None => eprintln!("mailferry admin: using the certificate given with --tls-cert"),
    }
    tracing::info!(%addr, state = %cfg.state.display(), "admin service listening");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let expiry = {
        let state = state.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(GRANT_KEY_SWEEP).await;
                if let Err(e) = actions::access::delete_expired_keys(&state).await {
                    tracing::error!("deleting the keys of expired grants: {e}");
                }
            }
        })
    };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "TLS handshake: {e}");
                        return;
                    }
                    Err(_) => return,
                };
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    app.clone().oneshot(req.map(axum::body::Body::new))
                },
            );
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .header_read_timeout(Duration::from_secs(30))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(%peer, "connection: {e}");
            }
        });
    }
    expiry.abort();
    state.jobs().shutdown().await;
    eprintln!("mailferry admin: stopped");
    Ok(())
}
