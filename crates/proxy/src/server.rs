//! The HTTPS listener: TLS termination, HTTP/1.1 with upgrades, routing and auth.

use crate::session::{run_session, StoreStats};
use crate::{status_for, ProxyError, TokenSet};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use mailferry_core::frame::UPGRADE_TOKEN;
use mailferry_core::profile::CommitSettings;
use mailferry_core::MailboxAddr;
use mailferry_store::Volume;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Slow clients are cut off: a TLS handshake or a request head that takes longer than
/// this is dropped (slow-loris protection).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// At shutdown, connections and sessions get this long to finish before they are
/// dropped (a session dropped mid-batch loses nothing acknowledged).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Held by every connection and session task; shutdown waits until all are dropped.
type DrainGuard = tokio::sync::mpsc::Sender<()>;

/// Everything the proxy needs.
pub struct ProxyConfig {
    /// TLS server configuration (see `mailferry_core::tls`).
    pub tls: Arc<rustls::ServerConfig>,
    /// Accepted bearer tokens.
    pub tokens: TokenSet,
    /// The in-process store.
    pub volume: Arc<Volume>,
    /// Group-commit thresholds for store sessions.
    pub commit: CommitSettings,
    /// Store timings, shared with whoever reports them.
    pub stats: Arc<StoreStats>,
}

/// A bound, not yet serving, proxy.
pub struct Proxy {
    listener: TcpListener,
    cfg: Arc<ProxyConfig>,
}

impl Proxy {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr, cfg: ProxyConfig) -> Result<Proxy, ProxyError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ProxyError::Io {
                what: format!("cannot listen on {addr}"),
                source,
            })?;
        Ok(Proxy {
            listener,
            cfg: Arc::new(cfg),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound socket has an address")
    }

    /// Serves until `shutdown` completes, then stops accepting and waits (up to
    /// [`DRAIN_TIMEOUT`]) for running connections and sessions to finish, so that when
    /// this returns no session holds the volume any more.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.cfg.tls.clone());
        let (guard, mut drained) = tokio::sync::mpsc::channel::<()>(1);
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => {
                    drop(guard);
                    if tokio::time::timeout(DRAIN_TIMEOUT, drained.recv()).await.is_err() {
                        tracing::warn!("sessions still running after the drain timeout; leaving them");
                    }
                    return;
                }
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            tcp.set_nodelay(true).ok();
            let acceptor = acceptor.clone();
            let cfg = self.cfg.clone();
            let guard = guard.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        tracing::info!(%peer, "TLS handshake refused: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let conn_guard = guard.clone();
                let service = hyper::service::service_fn(move |req| {
                    let (cfg, guard) = (cfg.clone(), conn_guard.clone());
                    async move { Ok::<_, Infallible>(handle(req, cfg, peer, guard)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HANDSHAKE_TIMEOUT)
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades();
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
                drop(guard);
            });
        }
    }
}

fn json_error(e: &ProxyError) -> Response<Full<Bytes>> {
    let status = status_for(e);
    let body = serde_json::json!({ "error": e.to_string(), "code": status.as_u16() }).to_string();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn handle(
    req: Request<Incoming>,
    cfg: Arc<ProxyConfig>,
    peer: SocketAddr,
    guard: DrainGuard,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = match route(req, cfg, guard) {
        Ok(r) => r,
        Err(e) => json_error(&e),
    };
    // Access log: never the mailbox path's owner data beyond the route, never headers.
    tracing::info!(%peer, %method, route = route_name(&path), status = resp.status().as_u16(), "request");
    resp
}

fn route_name(path: &str) -> &'static str {
    if path == "/healthz" {
        "/healthz"
    } else if path.starts_with("/v1/mailboxes/") && path.ends_with("/stream") {
        "/v1/mailboxes/{mailbox}/stream"
    } else {
        "other"
    }
}

fn route(
    req: Request<Incoming>,
    cfg: Arc<ProxyConfig>,
    guard: DrainGuard,
) -> Result<Response<Full<Bytes>>, ProxyError> {
    let path = req.uri().path();
    if path == "/healthz" {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))));
    }
    let Some(raw) = path
        .strip_prefix("/v1/mailboxes/")
        .and_then(|r| r.strip_suffix("/stream"))
    else {
        return Err(ProxyError::NotFound(path.to_string()));
    };
    if req.method() != Method::POST {
        return Err(ProxyError::MethodNotAllowed(req.method().to_string()));
    }
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ProxyError::Unauthorized)?;
    if !cfg.tokens.check(token.as_bytes()) {
        return Err(ProxyError::Unauthorized);
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| mailferry_core::CoreError::BadMailbox {
            addr: raw.to_string(),
            reason: "not UTF-8 after percent-decoding",
        })?;
    let mailbox = MailboxAddr::parse(&decoded)?;
    let wants_upgrade = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE_TOKEN));
    if !wants_upgrade {
        return Err(ProxyError::UpgradeRequired);
    }
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(up) => {
                run_session(
                    TokioIo::new(up),
                    cfg.volume.clone(),
                    mailbox,
                    cfg.commit.clone(),
                    cfg.stats.clone(),
                )
                .await
            }
            Err(e) => tracing::warn!("upgrade failed: {e}"),
        }
        drop(guard);
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    resp.headers_mut()
        .insert(UPGRADE, HeaderValue::from_static(UPGRADE_TOKEN));
    Ok(resp)
}
