//! The HTTPS client side of the wire protocol: TLS to the proxy, the upgrade request,
//! and the raw frame stream it yields.
//!
//! Certificates are always verified against the roots given in [`Endpoint`]; there is
//! no option to skip verification and no fallback to plain HTTP.

use crate::throttle::{random_u64, BackoffPolicy};
use crate::AgentError;
use hyper::header::HeaderValue;
use hyper::{StatusCode, Uri};
use hyper_util::rt::TokioIo;
use mailferry_core::frame::{upgrade_request, ERROR_FENCED};
use mailferry_core::refusal;
use mailferry_core::secret::SecretBytes;
use mailferry_core::MailboxAddr;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::Duration;

/// Where the proxy is and how to trust and authenticate to it.
pub struct Endpoint {
    /// The URL as given (`https://127.0.0.1:8443`).
    pub url: String,
    host: String,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    token: SecretBytes,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("token", &self.token)
            .finish()
    }
}

impl Endpoint {
    /// An endpoint at `url` (`https://host:port`) trusting exactly `roots`.
    pub fn new(
        url: &str,
        roots: &[CertificateDer<'static>],
        token: SecretBytes,
    ) -> Result<Endpoint, AgentError> {
        let bad = |reason: &str| AgentError::Transport {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| bad("not a URL (expected https://host:port)"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad(
                "only https:// is supported: mail never travels in clear text",
            ));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(Endpoint {
            url: url.to_string(),
            port: uri.port_u16().unwrap_or(443),
            host,
            tls: mailferry_core::tls::client_config(roots)?,
            token,
        })
    }

    fn err(&self, reason: impl std::fmt::Display) -> AgentError {
        AgentError::Transport {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    /// [`Endpoint::open_stream`], retried while the proxy answers 429 or 503 (busy or
    /// restarting): it waits what `Retry-After` asks (at most a minute), or backs off
    /// exponentially from one second, with jitter, for up to `attempts` tries. Any other
    /// refusal (401, 403, ...) is returned at once: retrying cannot fix it.
    pub async fn open_stream_retrying(
        &self,
        mailbox: &MailboxAddr,
        attempts: u32,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>, AgentError> {
        let policy = BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            attempts,
        };
        self.open_stream_backoff(mailbox, &policy)
            .await
            .map(|(s, _)| s)
    }

    /// [`Endpoint::open_stream`], retried while the proxy answers 429 or 503 as `policy`
    /// says: the `Retry-After` the proxy sent, else exponential backoff, capped, with
    /// jitter, for up to `policy.attempts` tries. Returns the stream and the time spent
    /// waiting for the proxy (the move report's `server_backoff`). Any other refusal
    /// (401, 403, ...) is returned at once: retrying cannot fix it.
    pub async fn open_stream_backoff(
        &self,
        mailbox: &MailboxAddr,
        policy: &BackoffPolicy,
    ) -> Result<(TokioIo<hyper::upgrade::Upgraded>, Duration), AgentError> {
        self.open_fenced_backoff(mailbox, None, policy).await
    }

    /// [`Endpoint::open_stream_backoff`] for a session that writes under a lease with
    /// fencing number `fence` (sent as the `Mailferry-Fence` header; the caller's OPEN
    /// frame must carry the same). Such a session also retries 409: the store has fenced
    /// off the session that holds the mailbox (it ends at once), so the mailbox frees up.
    /// A 412 (a newer lease owns the mailbox) is [`AgentError::Fenced`], never retried.
    pub async fn open_fenced_backoff(
        &self,
        mailbox: &MailboxAddr,
        fence: Option<u64>,
        policy: &BackoffPolicy,
    ) -> Result<(TokioIo<hyper::upgrade::Upgraded>, Duration), AgentError> {
        let mut waited = Duration::ZERO;
        let mut attempt = 1;
        loop {
            match self.open_stream_fenced(mailbox, fence).await {
                Ok(stream) => return Ok((stream, waited)),
                Err(AgentError::Refused {
                    status,
                    retry_after,
                    message,
                    ..
                }) if attempt < policy.attempts
                    && (matches!(status, 429 | 503) || (status == 409 && fence.is_some())) =>
                {
                    let hint = retry_after.map(Duration::from_secs);
                    let wait = policy.wait(attempt, hint, random_u64());
                    tracing::info!(
                        url = %self.url,
                        status,
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        "proxy busy ({message}); retrying"
                    );
                    tokio::time::sleep(wait).await;
                    waited += wait;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens a frame stream for `mailbox`: TLS, then `POST .../stream` with an upgrade to
    /// the frame protocol. Returns the raw bidirectional stream after `101`.
    pub async fn open_stream(
        &self,
        mailbox: &MailboxAddr,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>, AgentError> {
        self.open_stream_fenced(mailbox, None).await
    }

    /// [`Endpoint::open_stream`] with the `Mailferry-Fence` header when `fence` is given.
    pub async fn open_stream_fenced(
        &self,
        mailbox: &MailboxAddr,
        fence: Option<u64>,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>, AgentError> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.err(format!("cannot connect: {e}")))?;
        tcp.set_nodelay(true).ok();
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| self.err(format!("bad server name: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| self.err(format!("TLS handshake failed: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| self.err(format!("HTTP handshake failed: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("client connection ended: {e}");
            }
        });
        let path = format!(
            "/v1/mailboxes/{}/stream",
            percent_encoding::utf8_percent_encode(
                mailbox.as_str(),
                percent_encoding::NON_ALPHANUMERIC
            )
        );
        let auth = HeaderValue::from_str(&format!(
            "Bearer {}",
            std::str::from_utf8(self.token.expose()).map_err(|_| self.err("token is not text"))?
        ))
        .map_err(|_| self.err("token contains characters not allowed in a header"))?;
        let req =
            upgrade_request(&path, &self.host, self.port, auth, fence).map_err(|e| self.err(e))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| self.err(format!("request failed: {e}")))?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let refusal::Refused {
                status,
                retry_after,
                message,
            } = refusal::read(resp).await;
            if let (ERROR_FENCED, Some(fence)) = (status, fence) {
                return Err(AgentError::Fenced {
                    mailbox: mailbox.to_string(),
                    fence,
                    message,
                });
            }
            return Err(AgentError::Refused {
                url: self.url.clone(),
                status,
                message,
                retry_after,
            });
        }
        let upgraded = hyper::upgrade::on(resp)
            .await
            .map_err(|e| self.err(format!("upgrade failed: {e}")))?;
        Ok(TokioIo::new(upgraded))
    }
}

#[cfg(test)]
mod tests;
