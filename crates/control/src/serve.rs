//! `mailferry serve`: the proxy and the store in one process, as a network service.
//!
//! Serves the wire protocol on `--listen` over TLS until SIGTERM or ctrl-c, then stops
//! accepting, lets running sessions finish (up to the proxy's drain timeout) and returns,
//! so nothing acknowledged is lost. Agents authenticate with tokens from the volume
//! (`mailferry token issue`), looked up at every request. Without `--tls-cert` a local
//! CA and a server certificate are created once in a directory beside the volume; the
//! CA's private key is not kept (delete the directory to make new ones).

use crate::AppError;
use mailferry_core::profile::Profile;
use mailferry_core::tls::{Identity, LocalCa};
use mailferry_proxy::{Proxy, ProxyConfig, StoreStats, TokenSet};
use mailferry_store::{Credential, Volume};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What `mailferry serve` needs.
#[derive(Debug, Clone)]
pub struct ServeArgs {
    /// Volume directory.
    pub volume: PathBuf,
    /// What unlocks it.
    pub credential: Credential,
    /// Address to listen on (port 0: any free port, printed at start).
    pub listen: SocketAddr,
    /// Server certificate chain and PKCS#8 key (PEM); both or neither.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Where to keep the generated CA and certificate (default `<volume>-tls` beside
    /// the volume).
    pub tls_dir: Option<PathBuf>,
    /// Migration profile (commit settings).
    pub profile: Profile,
    /// Longest TLS handshake, and longest request head.
    pub header_timeout: Duration,
    /// Stream and message limits.
    pub limits: mailferry_proxy::Limits,
    /// Store-node mode: require a client certificate issued by this CA (the front
    /// proxy's, see `mailferry tls client`).
    pub client_ca: Option<PathBuf>,
    /// How an `s3://` volume is reached and where its working copy is kept.
    pub s3: crate::volume_admin::S3Args,
}

/// What `mailferry proxy` (the front end of a split deployment) needs.
#[derive(Debug, Clone)]
pub struct FrontArgs {
    /// Address to listen on for agents.
    pub listen: SocketAddr,
    /// Store node URLs; each mailbox is owned by one (rendezvous hashing).
    pub stores: Vec<String>,
    /// CA certificates of the store nodes (their `<volume>-tls/ca.pem`).
    pub store_cas: Vec<PathBuf>,
    /// The client certificate and key the store nodes require.
    pub client_cert: PathBuf,
    /// Its private key.
    pub client_key: PathBuf,
    /// Where the agents' CA and the server certificate live (created once).
    pub tls_dir: PathBuf,
    /// Longest TLS handshake, and longest request head.
    pub header_timeout: Duration,
    /// Stream limits (the size limit is the store nodes').
    pub limits: mailferry_proxy::Limits,
}

/// `mailferry tls client --dir D`: a CA and a client certificate for a front proxy
/// (`D/client-ca.pem` for the store nodes' `--client-ca`; `D/client.pem` and
/// `D/client.key` (0600) for the proxy). Refuses to overwrite.
pub fn make_client_identity(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf), AppError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| AppError::io(dir, e))?;
    let (ca_path, cert, key) = (
        dir.join("client-ca.pem"),
        dir.join("client.pem"),
        dir.join("client.key"),
    );
    let ca = LocalCa::generate("mailferry proxy client CA")?;
    let id = ca.issue_client("mailferry front proxy")?;
    write_new(&key, id.key_pem()?.as_bytes(), 0o600)?;
    write_new(&ca_path, ca.cert_pem().as_bytes(), 0o644)?;
    write_new(&cert, id.chain_pem().as_bytes(), 0o644)?;
    Ok((ca_path, cert, key))
}

/// Runs the front proxy of a split deployment until `shutdown`.
pub async fn run_front(
    args: &FrontArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AppError> {
    let mut roots = Vec::new();
    for p in &args.store_cas {
        let pem = std::fs::read(p).map_err(|e| AppError::io(p, e))?;
        roots.extend(mailferry_core::tls::certs_from_pem(&pem)?);
    }
    let client = load_identity(&args.client_cert, &args.client_key)?;
    let router = mailferry_proxy::forward::Router::new(
        &args.stores,
        mailferry_core::tls::client_config_mtls(&roots, &client)?,
    )?;
    let (identity, files) = local_tls_for(&args.tls_dir, args.listen)?;
    let proxy = Proxy::bind(
        args.listen,
        ProxyConfig {
            tls: mailferry_core::tls::server_config(&identity)?,
            backend: mailferry_proxy::Backend::Remote(Arc::new(router)),
            commit: Default::default(),
            stats: Arc::new(StoreStats::default()),
            header_timeout: args.header_timeout,
            limits: args.limits.clone(),
        },
    )
    .await?;
    eprintln!(
        "mailferry proxy: listening on https://{}",
        proxy.local_addr()
    );
    eprintln!(
        "mailferry proxy: agents must trust the CA {}",
        files.ca.display()
    );
    for s in &args.stores {
        eprintln!("mailferry proxy: store node {s}");
    }
    proxy.serve(shutdown).await;
    eprintln!("mailferry proxy: stopped");
    Ok(())
}

/// The generated TLS files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate agents must trust.
    pub ca: PathBuf,
    /// The server chain.
    pub cert: PathBuf,
    /// The server key (0600).
    pub key: PathBuf,
}

/// The default TLS directory of a volume: `<parent>/<volume name>-tls`.
pub fn default_tls_dir(volume: &Path) -> PathBuf {
    let name = volume
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "volume".into());
    volume
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!("{name}-tls"))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AppError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| AppError::io(path, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| AppError::io(path, e))
}

/// Loads the certificate in `dir`, or creates a CA and a server certificate for `names`
/// there (once; keys 0600, directory 0700).
pub fn local_tls(dir: &Path, names: &[&str]) -> Result<(Identity, TlsFiles), AppError> {
    use std::os::unix::fs::DirBuilderExt;
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    if !files.cert.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| AppError::io(dir, e))?;
        let ca = LocalCa::generate("mailferry serve CA")?;
        let id = ca.issue_server(names)?;
        write_new(&files.key, id.key_pem()?.as_bytes(), 0o600)?;
        write_new(&files.ca, ca.cert_pem().as_bytes(), 0o644)?;
        // Written last: its presence means the set is complete.
        write_new(&files.cert, id.chain_pem().as_bytes(), 0o644)?;
    }
    let id = load_identity(&files.cert, &files.key)?;
    Ok((id, files))
}

/// Loads the certificate in `dir` for a listener on `listen`, or creates it there (see
/// [`local_tls`]): valid for localhost and, unless it listens on every address, for the
/// address it listens on.
pub fn local_tls_for(dir: &Path, listen: SocketAddr) -> Result<(Identity, TlsFiles), AppError> {
    let ip = listen.ip().to_string();
    let mut names = vec!["localhost", "127.0.0.1", "::1"];
    if !listen.ip().is_unspecified() && !names.contains(&ip.as_str()) {
        names.push(&ip);
    }
    local_tls(dir, &names)
}

/// A listener's identity: the given certificate chain and PKCS#8 key (PEM), or else the
/// local certificate of [`local_tls_for`] in the directory `dir` names, then with the path
/// of the local CA that clients must trust.
pub fn server_identity(
    given: &Option<(PathBuf, PathBuf)>,
    dir: impl FnOnce() -> PathBuf,
    listen: SocketAddr,
) -> Result<(Identity, Option<PathBuf>), AppError> {
    match given {
        Some((cert, key)) => Ok((load_identity(cert, key)?, None)),
        None => {
            let (id, files) = local_tls_for(&dir(), listen)?;
            Ok((id, Some(files.ca)))
        }
    }
}

/// Reads a certificate chain and its PKCS#8 key (PEM).
fn load_identity(cert: &Path, key: &Path) -> Result<Identity, AppError> {
    let c = std::fs::read(cert).map_err(|e| AppError::io(cert, e))?;
    let k = zeroize::Zeroizing::new(std::fs::read(key).map_err(|e| AppError::io(key, e))?);
    Identity::from_pem(&c, &k).map_err(|e| AppError::Usage(format!("{}: {e}", key.display())))
}

/// Waits for SIGTERM or ctrl-c. The SIGTERM handler is installed when this is called,
/// not when the future is first polled.
pub fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, AppError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| AppError::Io {
        path: "SIGTERM handler".into(),
        source: e,
    })?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    })
}

/// A bound `serve`: listening, not yet accepting (see [`Serving::run`]).
pub struct Serving {
    proxy: Proxy,
    volume: Arc<Volume>,
    /// The generated CA agents must trust (none with `--tls-cert`).
    pub ca: Option<PathBuf>,
    /// Store timings of every session served, for benchmarks.
    pub stats: Arc<StoreStats>,
}

impl Serving {
    /// The address it listens on (the port chosen when `--listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.proxy.local_addr()
    }

    /// Serves until `shutdown` completes, then drains and records pending token events.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), AppError> {
        let Serving { proxy, volume, .. } = self;
        // Token events written by `mailferry token` while we hold the audit log.
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let flusher = {
            let volume = volume.clone();
            tokio::spawn(async move {
                loop {
                    let v = volume.clone();
                    // Token changes made beside this process (`mailferry token` on an
                    // s3:// volume's working copy) reach the bucket with a round.
                    let record = move || {
                        let n = v.flush_token_audit()?;
                        if n > 0 {
                            v.flush_offsite()?;
                        }
                        Ok::<_, mailferry_store::StoreError>(n)
                    };
                    match tokio::task::spawn_blocking(record).await {
                        Ok(Err(e)) => {
                            tracing::warn!("recording token events in the audit log: {e}")
                        }
                        Err(e) => tracing::warn!("token audit task failed: {e}"),
                        Ok(Ok(_)) => {}
                    }
                    tokio::select! {
                        _ = &mut stop_rx => return,
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
            })
        };
        proxy.serve(shutdown).await;
        let _ = stop_tx.send(());
        let _ = flusher.await;
        tokio::task::spawn_blocking(move || volume.flush_token_audit())
            .await
            .expect("token audit thread panicked")?;
        Ok(())
    }
}

/// Opens the volume, loads or creates the TLS material and binds the listener.
pub async fn bind_serve(args: &ServeArgs) -> Result<Serving, AppError> {
    let volume = {
        let (dir, cred, settings, s3) = (
            args.volume.clone(),
            args.credential.clone(),
            args.profile.store.clone(),
            args.s3.clone(),
        );
        tokio::task::spawn_blocking(move || {
            crate::volume_admin::open_at(&dir, &cred, &s3, &settings)
        })
        .await
        .expect("volume open thread panicked")?
    };
    let volume = Arc::new(volume);
    let (identity, ca) = server_identity(
        &args.tls,
        || {
            // An s3:// volume: beside its working copy.
            args.tls_dir
                .clone()
                .unwrap_or_else(|| default_tls_dir(volume.dir()))
        },
        args.listen,
    )?;
    let stats = Arc::new(StoreStats::default());
    let proxy = Proxy::bind(
        args.listen,
        ProxyConfig {
            tls: match &args.client_ca {
                None => mailferry_core::tls::server_config(&identity)?,
                Some(p) => {
                    let pem = std::fs::read(p).map_err(|e| AppError::io(p, e))?;
                    let roots = mailferry_core::tls::certs_from_pem(&pem)?;
                    mailferry_core::tls::server_config_mtls(&identity, &roots)?
                }
            },
            backend: mailferry_proxy::Backend::Local {
                tokens: TokenSet::from_volume(),
                volume: volume.clone(),
            },
            commit: args.profile.commit.clone(),
            stats: stats.clone(),
            header_timeout: args.header_timeout,
            limits: args.limits.clone(),
        },
    )
    .await?;
    Ok(Serving {
        proxy,
        volume,
        ca,
        stats,
    })
}

/// Serves until `shutdown` completes. Prints the URL and the CA path on stderr once
/// listening.
pub async fn run_serve(
    args: &ServeArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AppError> {
    let serving = bind_serve(args).await?;
    let addr = serving.local_addr();
    eprintln!("mailferry serve: listening on https://{addr}");
    match &serving.ca {
        Some(p) => eprintln!("mailferry serve: agents must trust the CA {}", p.display()),
        None => eprintln!("mailferry serve: using the certificate given with --tls-cert"),
    }
    tracing::info!(%addr, volume = %args.volume.display(), "serving");
    serving.run(shutdown).await?;
    eprintln!("mailferry serve: stopped");
    Ok(())
}
