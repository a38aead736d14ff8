//! `mailferry admin ...`: the admin service (REST API and wizard over HTTPS) and its
//! accounts. The service lives in `mailferry_admin`; account secrets are printed here
//! once and never again.

use super::TlsFlags;
use mailferry_admin as admin;
use mailferry_control::{lifecycle, serve, AppError};
use std::io::IsTerminal;
use std::path::PathBuf;

/// `admin ...`.
#[derive(clap::Subcommand)]
pub enum AdminCmd {
    /// Serve the admin API and wizard over HTTPS until SIGTERM or ctrl-c.
    Serve(Box<ServeArgs>),
    /// Create an account: prints its one-time password and TOTP secret (otpauth:// URI).
    Add {
        /// Account name (letters, digits, '.', '_', '-', '@').
        name: String,
        /// `admin` changes things; `auditor` reads status, reports and audit logs;
        /// `approver` decides lockbox requests for its --tenant domains.
        #[arg(long, value_parser = ["admin", "auditor", "approver"])]
        role: String,
        /// An approver's tenant (mail domain); repeat for several. Approvers only.
        #[arg(long = "tenant", value_name = "DOMAIN")]
        tenants: Vec<String>,
        /// The admin service's state directory.
        #[arg(long)]
        state: PathBuf,
    },
}

/// `admin serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8444 (port 0: a free port, printed).
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// The service's state directory: accounts, admin audit log, endpoints, batches.
    #[arg(long)]
    state: PathBuf,
    /// The volume the moves write into (with --proxy: the batches it creates write to
    /// that `mailferry serve` instead).
    #[arg(long)]
    volume: PathBuf,
    /// The volume's key file.
    #[arg(long)]
    key_file: PathBuf,
    #[command(flatten)]
    tls: TlsFlags,
    /// Where the generated CA and certificate live (default: STATE/tls).
    #[arg(long, conflicts_with = "tls_cert")]
    tls_dir: Option<PathBuf>,
    /// A session unused this long expires (`30min`, `90s`).
    #[arg(long, default_value = "30min")]
    session_idle: humantime::Duration,
    /// A session expires this long after login, used or not.
    #[arg(long, default_value = "12h")]
    session_max: humantime::Duration,
    /// Failed logins in a row that lock an account.
    #[arg(long, default_value_t = 5)]
    max_login_failures: u32,
    /// How long a locked account stays locked.
    #[arg(long, default_value = "15min")]
    lockout: humantime::Duration,
    /// With a coordination database: show and act on the batches and moves in it
    /// instead of STATE/batches; starts and completions are queued for `mailferry
    /// worker` (docs/admin.md, "Against PostgreSQL").
    #[command(flatten)]
    db: super::DbArgs,
    /// With --db: batches created through the API and the wizard write to this
    /// `mailferry serve` (https://host:port) instead of --volume, so that workers on
    /// any machine reach it (docs/admin.md, "Against PostgreSQL").
    #[arg(long, requires_all = ["ca", "token_file"], value_name = "URL")]
    proxy: Option<String>,
    /// PEM file of the CA of --proxy's certificate (read by every worker at this path).
    #[arg(long, requires = "proxy")]
    ca: Option<PathBuf>,
    /// The agent token file for --proxy (`mailferry token issue --out`; read by every
    /// worker at this path, never by the service).
    #[arg(long, requires = "proxy")]
    token_file: Option<PathBuf>,
}

/// `admin serve` until SIGTERM or ctrl-c, or `admin add`.
pub async fn run(cmd: AdminCmd) -> Result<(), AppError> {
    match cmd {
        AdminCmd::Serve(args) => {
            let ServeArgs {
                listen,
                state,
                volume,
                key_file,
                tls,
                tls_dir,
                session_idle,
                session_max,
                max_login_failures,
                lockout,
                db,
                proxy,
                ca,
                token_file,
            } = *args;
            let mut cfg = admin::AdminConfig::new(listen, state, volume, key_file);
            cfg.tls = tls.pair();
            cfg.tls_dir = tls_dir;
            cfg.session_idle = session_idle.into();
            cfg.session_absolute = session_max.into();
            cfg.max_failures = max_login_failures;
            cfg.lockout = lockout.into();
            cfg.db = db.url(None)?;
            if proxy.is_some() && cfg.db.is_none() {
                return Err(AppError::Usage(
                    "--proxy is for batches kept in PostgreSQL: give --db (or --db-file, \
                     MAILFERRY_DB, MAILFERRY_DB_FILE) too, or leave --proxy out to write into \
                     --volume"
                        .into(),
                ));
            }
            cfg.proxy = proxy_destination(proxy, ca, token_file)?;
            let shutdown = serve::shutdown_signal()?;
            admin::serve(cfg, shutdown).await
        }
        AdminCmd::Add {
            name,
            role,
            tenants,
            state,
        } => {
            let role: admin::Role = role.parse().map_err(AppError::Usage)?;
            let tenants = admin::accounts::check_tenants(role, &tenants)?;
            let st = admin::AdminState::open_accounts_only(&state)?;
            let new = st.accounts.add_with_tenants(&name, role, &tenants)?;
            st.audit
                .record(
                    &lifecycle::cli_actor(),
                    "admin.account.created",
                    serde_json::json!({"account": name, "role": role.as_str(), "tenants": tenants}),
                )
                .map_err(|e| AppError::Failed(e.to_string()))?;
            // Shown once: the secrets are not kept in a form that can be shown again.
            println!(
                "account {name} ({}) created in {}",
                role.as_str(),
                state.display()
            );
            println!("password: {}", new.password.expose());
            println!("totp: {}", new.otpauth.expose());
            if std::io::stderr().is_terminal() {
                eprintln!("{}", admin::accounts::qr_text(new.otpauth.expose()));
            }
            eprintln!(
                "Give the password to the account's owner now (it is shown only once) with the TOTP secret for an authenticator app; every login needs both. It is a one-time password: the first login must replace it before anything else."
            );
            Ok(())
        }
    }
}

/// `--proxy`, `--ca`, `--token-file` (clap requires all three or none), checked now so
/// that a typo fails the start rather than every worker's pass.
fn proxy_destination(
    url: Option<String>,
    ca: Option<PathBuf>,
    token_file: Option<PathBuf>,
) -> Result<Option<admin::ProxyDestination>, AppError> {
    let (Some(url), Some(ca), Some(token_file)) = (url, ca, token_file) else {
        return Ok(None);
    };
    if !url.starts_with("https://") {
        return Err(AppError::Usage(format!(
            "--proxy {url}: expected https://HOST:PORT of a `mailferry serve`"
        )));
    }
    for (flag, path) in [("--ca", &ca), ("--token-file", &token_file)] {
        if !path.is_file() {
            return Err(AppError::Usage(format!(
                "{flag} {}: no such file; give the file every worker will read at this path",
                path.display()
            )));
        }
    }
    Ok(Some(admin::ProxyDestination {
        url,
        ca,
        token_file,
    }))
}
