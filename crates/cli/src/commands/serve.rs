//! `mailferry serve`, `mailferry proxy` and `mailferry tls client`: the long-running
//! services of a deployment and the TLS material a split one needs.

use super::{load_profile, TlsFlags, VolumeAccess};
use mailferry_control::{serve, AppError};
use std::path::PathBuf;

/// The stream limits `serve` and `proxy` share (checked by [`ServiceFlags::limits`]).
#[derive(clap::Args)]
struct ServiceFlags {
    /// Seconds a client gets for the TLS handshake and again for a request head.
    #[arg(long, default_value_t = 10.0)]
    header_timeout: f64,
    /// Streams open at once, all agents together (more get 503 with Retry-After).
    #[arg(long, default_value_t = 256)]
    max_streams: usize,
    /// Streams open at once per token (more get 429 with Retry-After).
    #[arg(long, default_value_t = 32)]
    max_streams_per_token: usize,
}

impl ServiceFlags {
    /// Checks the flags and turns them, with the message size and idle limits, into the
    /// header timeout and the proxy's limits.
    fn limits(
        &self,
        max_message_bytes: u64,
        idle_timeout: u64,
    ) -> Result<(std::time::Duration, mailferry_proxy::Limits), AppError> {
        if self.max_streams == 0 || self.max_streams_per_token == 0 {
            return Err(AppError::Usage(
                "--max-streams and --max-streams-per-token must be at least 1".into(),
            ));
        }
        if !(self.header_timeout > 0.0 && self.header_timeout <= 3600.0) {
            return Err(AppError::Usage(
                "--header-timeout must be between 0 and 3600 seconds".into(),
            ));
        }
        Ok((
            std::time::Duration::from_secs_f64(self.header_timeout),
            mailferry_proxy::Limits {
                max_streams: self.max_streams,
                max_streams_per_token: self.max_streams_per_token,
                max_message_bytes,
                idle_timeout: std::time::Duration::from_secs(idle_timeout.max(1)),
            },
        ))
    }
}

/// `serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    vol: VolumeAccess,
    /// Address to listen on, e.g. 0.0.0.0:8443 (port 0: a free port, printed).
    #[arg(long)]
    listen: std::net::SocketAddr,
    #[command(flatten)]
    tls: TlsFlags,
    /// Where the generated CA and certificate live (default: `<volume>-tls` beside
    /// the volume).
    #[arg(long, conflicts_with = "tls_cert")]
    tls_dir: Option<PathBuf>,
    #[command(flatten)]
    service: ServiceFlags,
    /// Largest message accepted, in bytes; larger ones are refused as large items
    /// (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_message_bytes: u64,
    /// Seconds a stream may send nothing before it is closed (and its slot freed).
    #[arg(long, default_value_t = 300)]
    idle_timeout: u64,
    /// Store-node mode: accept only clients (front proxies) with a certificate from
    /// this CA (mutual TLS; see `mailferry tls client`).
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Migration profile (TOML) for commit settings; the embedded default when absent.
    #[arg(long)]
    profile: Option<PathBuf>,
}

/// `proxy`.
#[derive(clap::Args)]
pub struct ProxyArgs {
    /// Address to listen on for agents.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// A store node (`mailferry serve --client-ca ...`), https://host:port; repeat.
    #[arg(long = "store", required = true)]
    stores: Vec<String>,
    /// A store node's CA certificate (its `<volume>-tls/ca.pem`); repeat.
    #[arg(long = "store-ca", required = true)]
    store_cas: Vec<PathBuf>,
    /// The client certificate the store nodes require (`mailferry tls client`).
    #[arg(long)]
    client_cert: PathBuf,
    /// Its private key.
    #[arg(long)]
    client_key: PathBuf,
    /// Where the agents' CA and this proxy's certificate are kept (created once).
    #[arg(long)]
    tls_dir: PathBuf,
    #[command(flatten)]
    service: ServiceFlags,
    /// Seconds a stream may send nothing before it is closed (and its slot freed).
    #[arg(long, default_value_t = 300)]
    idle_timeout: u64,
}

/// `tls ...`.
#[derive(clap::Subcommand)]
pub enum TlsCmd {
    /// Create a client CA and a client certificate for a front proxy: store nodes get
    /// `--client-ca DIR/client-ca.pem`, the proxy `--client-cert DIR/client.pem
    /// --client-key DIR/client.key`.
    Client {
        /// Directory to create the files in (they must not exist).
        #[arg(long)]
        dir: PathBuf,
    },
}

/// `serve`: the proxy and the store in one process until SIGTERM or ctrl-c.
pub async fn run_serve(a: ServeArgs) -> Result<(), AppError> {
    let (header_timeout, limits) = a.service.limits(a.max_message_bytes, a.idle_timeout)?;
    let args = serve::ServeArgs {
        credential: a.vol.unlock.credential()?,
        volume: a.vol.volume,
        listen: a.listen,
        tls: a.tls.pair(),
        tls_dir: a.tls_dir,
        profile: load_profile(a.profile.as_deref())?,
        header_timeout,
        limits,
        client_ca: a.client_ca,
        s3: a.vol.s3,
    };
    let shutdown = serve::shutdown_signal()?;
    serve::run_serve(&args, shutdown).await
}

/// `proxy`: the front proxy of a split deployment until SIGTERM or ctrl-c.
pub async fn run_proxy(a: ProxyArgs) -> Result<(), AppError> {
    let (header_timeout, limits) = a.service.limits(0, a.idle_timeout)?;
    let args = serve::FrontArgs {
        listen: a.listen,
        stores: a.stores,
        store_cas: a.store_cas,
        client_cert: a.client_cert,
        client_key: a.client_key,
        tls_dir: a.tls_dir,
        header_timeout,
        limits,
    };
    let shutdown = serve::shutdown_signal()?;
    serve::run_front(&args, shutdown).await
}

/// `tls client`.
pub fn run_tls(cmd: TlsCmd) -> Result<(), AppError> {
    let TlsCmd::Client { dir } = cmd;
    let (ca, cert, key) = serve::make_client_identity(&dir)?;
    println!(
        "store nodes: mailferry serve ... --client-ca {}\nfront proxy: mailferry proxy ... --client-cert {} --client-key {}",
        ca.display(),
        cert.display(),
        key.display()
    );
    Ok(())
}
