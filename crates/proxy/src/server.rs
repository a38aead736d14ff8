//! The HTTPS listener: TLS termination, HTTP/1.1 with upgrades, routing and auth.

use crate::metrics::{Metrics, StoreStats};
use crate::session::{run_session, Claim, Opening};
use crate::{status_for, ProxyError, TokenSet};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use mailferry_core::frame::{parse_fence, FENCE_HEADER, UPGRADE_TOKEN};
use mailferry_core::profile::CommitSettings;
use mailferry_core::MailboxAddr;
use mailferry_store::Volume;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Slow clients are cut off: a TLS handshake or a request head that takes longer than
/// this is dropped (slow-loris protection). The default of
/// [`ProxyConfig::header_timeout`].
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
    /// Where streams go: the store in this process, or remote store nodes.
    pub backend: Backend,
    /// Group-commit thresholds for store sessions.
    pub commit: CommitSettings,
    /// Store timings, shared with whoever reports them.
    pub stats: Arc<StoreStats>,
    /// Longest time for the TLS handshake, and again for the request head.
    pub header_timeout: Duration,
    /// Stream and message limits.
    pub limits: Limits,
}

/// Where the proxy sends streams.
pub enum Backend {
    /// The store runs in this process; the proxy checks tokens against its volume.
    Local {
        /// Accepted bearer tokens.
        tokens: TokenSet,
        /// The volume.
        volume: Arc<Volume>,
    },
    /// Store nodes over mutual TLS; each owning node checks the token itself.
    Remote(Arc<crate::forward::Router>),
}

/// The proxy's limits; a request over one is refused at once with a `Retry-After`,
/// never queued without bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Streams open at once, all tokens together (over it: 503).
    pub max_streams: usize,
    /// Streams open at once with one token (over it: 429).
    pub max_streams_per_token: usize,
    /// Largest message accepted, bytes; 0 = no limit (over it: REJECT of that message).
    pub max_message_bytes: u64,
    /// A stream that sends nothing for this long is closed (ERROR 408) and frees its slot.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_streams: 256,
            max_streams_per_token: 32,
            max_message_bytes: 0,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Seconds a refused agent is told to wait before it tries again.
const BUSY_RETRY_AFTER: u64 = 1;

/// One open stream, counted overall and per token until dropped.
struct StreamSlot {
    shared: Arc<Shared>,
    /// SHA-256 of the token: identifies it whether it came from the volume or not.
    token: [u8; 32],
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut per = self
            .shared
            .per_token
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.token);
            }
        }
    }
}

/// The one session of a mailbox on this proxy, until dropped.
struct MailboxLock {
    shared: Arc<Shared>,
    mailbox: MailboxAddr,
}

impl Drop for MailboxLock {
    fn drop(&mut self) {
        self.shared
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.mailbox);
    }
}

impl Shared {
    /// Takes the mailbox for one session, or says who has it (409) and hands back the
    /// holder's claim: two agents writing one mailbox at once would each mirror their own
    /// view of the source over the other's. The store node that owns a mailbox is the
    /// one place all its sessions meet, so in a split deployment its `serve` enforces
    /// this and the front proxy passes the 409 on.
    fn lock_mailbox(
        self: &Arc<Self>,
        mailbox: &MailboxAddr,
    ) -> Result<(MailboxLock, Arc<Claim>), (ProxyError, Arc<Claim>)> {
        let mut open = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((since, claim)) = open.get(mailbox) {
            let busy = ProxyError::MailboxBusy {
                mailbox: mailbox.to_string(),
                since: mailferry_core::rfc3339(*since),
            };
            return Err((busy, claim.clone()));
        }
        let claim = Arc::new(Claim::default());
        open.insert(mailbox.clone(), (mailferry_core::unix_now(), claim.clone()));
        let lock = MailboxLock {
            shared: self.clone(),
            mailbox: mailbox.clone(),
        };
        Ok((lock, claim))
    }

    /// Takes a stream slot for `token`, or says why not (503 overall, 429 per token).
    fn take_slot(self: &Arc<Self>, token: [u8; 32]) -> Result<StreamSlot, ProxyError> {
        let limits = &self.cfg.limits;
        let permit = self
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| ProxyError::Busy {
                what: format!(
                    "{} streams are open, the most this proxy takes",
                    limits.max_streams
                ),
                per_token: false,
                retry_after: BUSY_RETRY_AFTER,
            })?;
        let mut per = self.per_token.lock().unwrap_or_else(|p| p.into_inner());
        let n = per.entry(token).or_insert(0);
        if *n >= limits.max_streams_per_token {
            return Err(ProxyError::Busy {
                what: format!(
                    "this token has {} streams open, the most one token may",
                    limits.max_streams_per_token
                ),
                per_token: true,
                retry_after: BUSY_RETRY_AFTER,
            });
        }
        *n += 1;
        drop(per);
        Ok(StreamSlot {
            shared: self.clone(),
            token,
            _permit: permit,
        })
    }
}

/// The configuration and the live state every connection shares.
struct Shared {
    cfg: ProxyConfig,
    metrics: Metrics,
    stopping: AtomicBool,
    streams: Arc<tokio::sync::Semaphore>,
    per_token: std::sync::Mutex<std::collections::HashMap<[u8; 32], usize>>,
    /// Mailboxes with a session open here: when it started (Unix seconds), and its claim.
    sessions: std::sync::Mutex<std::collections::HashMap<MailboxAddr, (i64, Arc<Claim>)>>,
}

/// A bound, not yet serving, proxy.
pub struct Proxy {
    listener: TcpListener,
    cfg: Arc<Shared>,
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
            cfg: Arc::new(Shared {
                streams: Arc::new(tokio::sync::Semaphore::new(cfg.limits.max_streams)),
                per_token: Default::default(),
                sessions: Default::default(),
                cfg,
                metrics: Metrics::default(),
                stopping: AtomicBool::new(false),
            }),
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
        let acceptor = tokio_rustls::TlsAcceptor::from(self.cfg.cfg.tls.clone());
        let timeout = self.cfg.cfg.header_timeout;
        let (guard, mut drained) = tokio::sync::mpsc::channel::<()>(1);
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => {
                    self.cfg.stopping.store(true, Ordering::SeqCst);
                    drop(self.listener);
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
                let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        cfg.metrics.reject("tls_handshake");
                        tracing::info!(%peer, "TLS handshake refused: {e}");
                        return;
                    }
                    Err(_) => {
                        cfg.metrics.reject("tls_timeout");
                        tracing::info!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let conn_guard = guard.clone();
                let svc_cfg = cfg.clone();
                let service = hyper::service::service_fn(move |req| {
                    let (cfg, guard) = (svc_cfg.clone(), conn_guard.clone());
                    async move { Ok::<_, Infallible>(handle(req, cfg, peer, guard).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(timeout)
                    .max_buf_size(64 * 1024)
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades();
                if let Err(e) = conn.await {
                    if e.is_timeout() {
                        cfg.metrics.reject("header_timeout");
                    } else if e.is_parse() || e.is_parse_too_large() {
                        cfg.metrics.reject("bad_http");
                    }
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
    let retry_after = match e {
        ProxyError::Busy { retry_after, .. } => Some(*retry_after),
        ProxyError::Upstream { retry_after, .. } => *retry_after,
        _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(5),
        _ => None,
    };
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

async fn handle(
    req: Request<Incoming>,
    cfg: Arc<Shared>,
    peer: SocketAddr,
    guard: DrainGuard,
) -> Response<Full<Bytes>> {
    let t0 = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut who = Who::default();
    let resp = match route(req, cfg.clone(), guard, &mut who).await {
        Ok(r) => r,
        Err(e) => {
            cfg.metrics.reject(reason_for(&e));
            json_error(&e)
        }
    };
    // Access log: the route (never the mailbox), the token id and a keyed pseudonym of
    // the mailbox; never the token or a header.
    tracing::info!(
        %peer,
        %method,
        route = route_name(&path),
        token_id = who.token_id,
        tenant = who.tenant.as_deref().unwrap_or(""),
        mailbox = who.mailbox.as_deref().unwrap_or(""),
        status = resp.status().as_u16(),
        ms = t0.elapsed().as_millis() as u64,
        "request"
    );
    resp
}

/// Who a request was, for the access log.
#[derive(Default)]
struct Who {
    token_id: Option<u64>,
    /// The token's tenant (a mail domain: the admin's own configuration, not mail data).
    tenant: Option<String>,
    /// The volume's pseudonym of the mailbox.
    mailbox: Option<String>,
}

/// The `reason` label of a refusal in `/metrics`.
fn reason_for(e: &ProxyError) -> &'static str {
    match e {
        ProxyError::Unauthorized => "unauthorized",
        ProxyError::Forbidden { .. } => "forbidden",
        ProxyError::NotFound(_) => "not_found",
        ProxyError::MethodNotAllowed(_) => "method_not_allowed",
        ProxyError::BadMailbox(_) => "bad_mailbox",
        ProxyError::UpgradeRequired => "upgrade_required",
        ProxyError::Unavailable(_) => "unavailable",
        ProxyError::Busy {
            per_token: true, ..
        } => "busy_token",
        ProxyError::Upstream { .. } => "store_node",
        ProxyError::Busy { .. } => "busy",
        ProxyError::MailboxBusy { .. } => "mailbox_busy",
        _ => "internal",
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn route_name(path: &str) -> &'static str {
    if matches!(path, "/healthz" | "/readyz" | "/metrics") {
        // The three static routes, without allocating.
        match path {
            "/healthz" => "/healthz",
            "/readyz" => "/readyz",
            _ => "/metrics",
        }
    } else if path.starts_with("/v1/mailboxes/") && path.ends_with("/stream") {
        "/v1/mailboxes/{mailbox}/stream"
    } else {
        "other"
    }
}

/// Routes one request: the static routes, else a mailbox stream (to the local store or a
/// store node). Every refusal is a [`ProxyError`]; [`handle`] maps it to a status.
async fn route(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    guard: DrainGuard,
    who: &mut Who,
) -> Result<Response<Full<Bytes>>, ProxyError> {
    if let Some(resp) = static_route(req.uri().path(), &shared).await {
        return resp;
    }
    if shared.stopping.load(Ordering::SeqCst) {
        return Err(ProxyError::Unavailable("shutting down".into()));
    }
    let stream = StreamRequest::parse(&req)?;
    let volume = match &shared.cfg.backend {
        Backend::Local { volume, .. } => volume.clone(),
        Backend::Remote(router) => {
            let router = router.clone();
            return open_remote(req, &router, shared, guard, stream, who).await;
        }
    };
    let StreamRequest {
        mailbox,
        token,
        token_digest,
        wants_upgrade,
        fence,
        ..
    } = stream;
    authorize_local(&shared, &volume, token, &mailbox, who).await?;
    if !wants_upgrade {
        return Err(ProxyError::UpgradeRequired);
    }
    let slot = shared.take_slot(token_digest)?;
    // After the slot: a retrying agent meets 429/503 first, and the session releases the
    // lock before the slot (and before its last frame), so a free slot never finds a
    // stale lock.
    let (lock, claim) = match shared.lock_mailbox(&mailbox) {
        Ok(held) => held,
        Err((busy, holder)) => {
            if let Some(f) = fence {
                take_over(&volume, &mailbox, f, &holder).await?;
            }
            return Err(busy);
        }
    };
    let opening = Opening {
        lock,
        claim,
        header_fence: fence,
    };
    let session = local_session(
        req,
        shared.clone(),
        volume,
        mailbox,
        opening,
        who.token_id,
        who.mailbox.clone().unwrap_or_default(),
    );
    spawn_stream(shared, slot, guard, session);
    Ok(switching_protocols())
}

/// A request with a newer lease's fencing number `fence` found the mailbox held: the
/// store records the number first (so the holder can commit no more), then the holder's
/// claim ends it if its own fence is lower. The request still gets its 409 and retries
/// until the holder is gone (docs/wire-protocol.md §3.7). A number lower than the
/// store's is refused here (412): that lease was taken over.
async fn take_over(
    volume: &Arc<Volume>,
    mailbox: &MailboxAddr,
    fence: u64,
    holder: &Claim,
) -> Result<(), ProxyError> {
    let (v, m) = (volume.clone(), mailbox.clone());
    tokio::task::spawn_blocking(move || v.raise_fence(&m, fence))
        .await
        .map_err(|e| ProxyError::Unavailable(format!("fence check failed: {e}")))??;
    holder.take_over(fence);
    Ok(())
}

/// `/healthz`, `/readyz` and `/metrics`, which need no token; `None` for any other path.
async fn static_route(
    path: &str,
    shared: &Shared,
) -> Option<Result<Response<Full<Bytes>>, ProxyError>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    Some(match path {
        "/healthz" => Ok(text(StatusCode::OK, PLAIN, "ok\n".into())),
        "/readyz" => ready(shared)
            .await
            .map(|()| text(StatusCode::OK, PLAIN, "ready\n".into())),
        "/metrics" => Ok(text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            shared.metrics.render(&shared.cfg.stats),
        )),
        _ => return None,
    })
}

/// Ready unless shutting down, and the volume (or every store node) answers.
async fn ready(shared: &Shared) -> Result<(), ProxyError> {
    if shared.stopping.load(Ordering::SeqCst) {
        return Err(ProxyError::Unavailable("shutting down".into()));
    }
    match &shared.cfg.backend {
        Backend::Local { volume, .. } => {
            let volume = volume.clone();
            tokio::task::spawn_blocking(move || volume.check_ready())
                .await
                .map_err(|e| ProxyError::Unavailable(format!("readiness check failed: {e}")))?
                .map_err(|e| ProxyError::Unavailable(format!("volume not ready: {e}")))
        }
        Backend::Remote(router) => router.ready().await,
    }
}

/// What the head of a `POST /v1/mailboxes/{mailbox}/stream` carries.
struct StreamRequest {
    mailbox: MailboxAddr,
    /// The bearer token; a secret, never logged.
    token: mailferry_core::secret::SecretBytes,
    /// SHA-256 of the token: names it for the per-token stream limit.
    token_digest: [u8; 32],
    /// The `Authorization` header as received, passed on to a store node.
    authorization: HeaderValue,
    wants_upgrade: bool,
    /// The `Mailferry-Fence` header's fencing number (a worker's lease), if any.
    fence: Option<u64>,
}

impl StreamRequest {
    /// Reads the request head; refuses (in this order) an unknown path (404), another
    /// method (405), a missing token (401) and a bad mailbox address (400).
    fn parse(req: &Request<Incoming>) -> Result<StreamRequest, ProxyError> {
        let path = req.uri().path();
        let Some(raw) = path
            .strip_prefix("/v1/mailboxes/")
            .and_then(|r| r.strip_suffix("/stream"))
        else {
            return Err(ProxyError::NotFound(path.to_string()));
        };
        if req.method() != Method::POST {
            return Err(ProxyError::MethodNotAllowed(req.method().to_string()));
        }
        let authorization = req
            .headers()
            .get(AUTHORIZATION)
            .ok_or(ProxyError::Unauthorized)?;
        let token = authorization
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ProxyError::Unauthorized)?;
        let token = mailferry_core::secret::SecretBytes::new(token.as_bytes().to_vec());
        let token_digest: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, token.expose())
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes");
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| mailferry_core::CoreError::BadMailbox {
                addr: raw.to_string(),
                reason: "not UTF-8 after percent-decoding",
            })?;
        let mailbox = MailboxAddr::parse(&decoded)?;
        let fence = match req.headers().get(FENCE_HEADER) {
            None => None,
            Some(v) => Some(parse_fence(v.as_bytes()).ok_or_else(|| {
                ProxyError::BadFence {
                    header: FENCE_HEADER,
                    value: String::from_utf8_lossy(v.as_bytes())
                        .chars()
                        .take(40)
                        .collect(),
                }
            })?),
        };
        let wants_upgrade = req
            .headers()
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE_TOKEN));
        Ok(StreamRequest {
            mailbox,
            authorization: authorization.clone(),
            token,
            token_digest,
            wants_upgrade,
            fence,
        })
    }
}

/// Checks the token against the volume (on a blocking thread: it reads the index), notes
/// who the request is for the access log, and refuses a mailbox outside the token's
/// tenant: all before anything reaches the store, so a refused tenant creates no keys.
async fn authorize_local(
    shared: &Arc<Shared>,
    volume: &Arc<Volume>,
    token: mailferry_core::secret::SecretBytes,
    mailbox: &MailboxAddr,
    who: &mut Who,
) -> Result<(), ProxyError> {
    let grant = {
        let (volume, tokens_shared) = (volume.clone(), shared.clone());
        tokio::task::spawn_blocking(move || {
            let Backend::Local { tokens, .. } = &tokens_shared.cfg.backend else {
                unreachable!("called for a Local backend only")
            };
            tokens.check(token.expose(), &volume)
        })
        .await
        .map_err(|e| ProxyError::Unavailable(format!("token check failed: {e}")))??
    };
    who.token_id = grant.token_id;
    who.tenant = grant.tenant.clone();
    who.mailbox = Some(volume.pseudonym_of_mailbox(mailbox));
    grant.authorize(mailbox)
}

/// The frame session of one local stream, once the agent has its `101`.
async fn local_session(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    volume: Arc<Volume>,
    mailbox: MailboxAddr,
    opening: Opening<MailboxLock>,
    log_token: Option<u64>,
    log_mailbox: String,
) {
    let cfg = &shared.cfg;
    let t0 = std::time::Instant::now();
    match hyper::upgrade::on(req).await {
        Ok(up) => {
            let received = run_session(
                TokioIo::new(up),
                volume,
                mailbox,
                cfg.commit.clone(),
                cfg.stats.clone(),
                cfg.limits.max_message_bytes,
                cfg.limits.idle_timeout,
                opening,
            )
            .await;
            // Second access-log line of a stream: what it carried, once it ends.
            tracing::info!(
                token_id = log_token,
                mailbox = %log_mailbox,
                bytes = received,
                ms = t0.elapsed().as_millis() as u64,
                "stream closed"
            );
        }
        Err(e) => {
            drop(opening);
            tracing::warn!("upgrade failed: {e}")
        }
    }
}

/// A stream for a store node: the token is the node's to check; the mailbox's node
/// answers the upgrade, then the agent gets its `101` and the bytes are spliced.
async fn open_remote(
    req: Request<Incoming>,
    router: &crate::forward::Router,
    shared: Arc<Shared>,
    guard: DrainGuard,
    stream: StreamRequest,
    who: &mut Who,
) -> Result<Response<Full<Bytes>>, ProxyError> {
    who.mailbox = Some(router.pseudonym(&stream.mailbox));
    if !stream.wants_upgrade {
        return Err(ProxyError::UpgradeRequired);
    }
    let slot = shared.take_slot(stream.token_digest)?;
    let upstream = router
        .open(
            &stream.mailbox,
            req.uri().path(),
            stream.authorization,
            stream.fence,
        )
        .await?;
    Ok(splice(req, upstream, shared, guard, slot))
}

/// Runs one upgraded stream in its own task, counted in `streams_in_flight`; its stream
/// slot and drain guard are released when it ends.
fn spawn_stream(
    shared: Arc<Shared>,
    slot: StreamSlot,
    guard: DrainGuard,
    stream: impl Future<Output = ()> + Send + 'static,
) {
    tokio::spawn(async move {
        let in_flight = &shared.metrics.streams_in_flight;
        in_flight.fetch_add(1, Ordering::Relaxed);
        stream.await;
        in_flight.fetch_sub(1, Ordering::Relaxed);
        drop(slot);
        drop(guard);
    });
}

/// Answers `101` to the agent and copies bytes both ways between its upgraded connection
/// and the store node's, until either side closes.
fn splice(
    req: Request<Incoming>,
    upstream: TokioIo<hyper::upgrade::Upgraded>,
    shared: Arc<Shared>,
    guard: DrainGuard,
    slot: StreamSlot,
) -> Response<Full<Bytes>> {
    spawn_stream(shared, slot, guard, async move {
        match hyper::upgrade::on(req).await {
            Ok(up) => {
                let mut agent = TokioIo::new(up);
                let mut store = upstream;
                match tokio::io::copy_bidirectional(&mut agent, &mut store).await {
                    Ok((to_store, to_agent)) => {
                        tracing::info!(bytes = to_store, answered = to_agent, "stream closed")
                    }
                    Err(e) => tracing::info!("stream ended: {e}"),
                }
            }
            Err(e) => tracing::warn!("upgrade failed: {e}"),
        }
    });
    switching_protocols()
}

/// The `101` that hands the connection over to the frame protocol.
fn switching_protocols() -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    resp.headers_mut()
        .insert(UPGRADE, HeaderValue::from_static(UPGRADE_TOKEN));
    resp
}
