//! TLS to PostgreSQL: what the libpq parameters `sslmode` and `sslrootcert` of a `--db`
//! URL mean in mailferry, and the rustls connector tokio-postgres uses.
//!
//! Every mode that uses TLS verifies the server's certificate; there is no way to ask for
//! an unverified one (docs/coordination.md, "TLS", says what each mode does and where it
//! is stricter than libpq). Trust and TLS settings come from
//! [`mailferry_core::tls::pg_client_config`] (rustls on ring). This module parses the
//! parameters and wraps the handshake; it opens no connection itself (`db.rs` does),
//! and it never sees the password.

use crate::CoordError;
use mailferry_core::tls::PgCheck;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::{Host, SslMode as PgMode};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::Socket;

/// libpq's `sslmode`, as written in the URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Clear text.
    Disable,
    /// TLS if the server offers it (verified as `require`), else clear text.
    Prefer,
    /// TLS, chain verified.
    Require,
    /// TLS, chain verified (the same as `require` in mailferry).
    VerifyCa,
    /// TLS, chain and host name verified.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where the CA certificates come from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RootCert {
    /// The system's roots (no `sslrootcert`, or `sslrootcert=system` as in libpq 16).
    System,
    /// A PEM file.
    File(PathBuf),
}

/// What a connection does about TLS, decided once from the URL.
#[derive(Clone, Debug)]
pub(crate) struct Policy {
    /// The mode in effect (the URL's, or the default for its hosts).
    mode: SslMode,
    /// True when the URL named no `sslmode`.
    defaulted: bool,
    roots: RootCert,
    /// The hosts, for messages (`host:port`, comma-separated).
    hosts: String,
}

impl Policy {
    /// The policy of `url` (`sslmode` and `sslrootcert` already taken out of it by
    /// [`split_params`]), for the server `config` names.
    pub(crate) fn new(
        config: &tokio_postgres::Config,
        mode: Option<&str>,
        rootcert: Option<&str>,
    ) -> Result<Policy, CoordError> {
        let hosts = host_list(config);
        let written = match mode {
            None => None,
            Some(m) => Some(SslMode::parse(m).ok_or_else(|| {
                CoordError::Url(format!(
                    "sslmode={m} is not a mode mailferry knows; use disable, prefer, require, \
                     verify-ca or verify-full (docs/coordination.md, \"TLS\")"
                ))
            })?),
        };
        let roots = match rootcert {
            None | Some("system") => RootCert::System,
            Some("") => {
                return Err(CoordError::Url(
                    "sslrootcert is empty; give the path of the CA's PEM file, or drop it to \
                     trust the system's roots"
                        .into(),
                ))
            }
            Some(p) => RootCert::File(PathBuf::from(p)),
        };
        // Without sslmode: clear text only where nobody else can listen (loopback, a
        // Unix socket) and no CA was named; anywhere else the strictest mode, so that a
        // URL copied from a laptop to a cluster never sends the coordination traffic in
        // clear (and a CA given alone is used, as libpq 16 does for sslrootcert=system).
        let mode = written.unwrap_or(if all_loopback(config) && rootcert.is_none() {
            SslMode::Disable
        } else {
            SslMode::VerifyFull
        });
        if mode == SslMode::Disable && rootcert.is_some() {
            return Err(CoordError::Url(format!(
                "{hosts}: sslmode=disable with sslrootcert: the CA would never be used; \
                 drop sslrootcert, or choose sslmode=verify-full"
            )));
        }
        Ok(Policy {
            mode,
            defaulted: written.is_none(),
            roots,
            hosts,
        })
    }

    /// The mode tokio-postgres negotiates with.
    pub(crate) fn pg_mode(&self) -> PgMode {
        match self.mode {
            SslMode::Disable => PgMode::Disable,
            SslMode::Prefer => PgMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgMode::Require,
        }
    }

    /// How the certificate is checked. The host name is checked under verify-full, and
    /// under every mode when the roots are the system's: a public CA issues certificates
    /// to anyone for their own names, so its chain alone proves nothing about which
    /// server answered (libpq refuses sslrootcert=system below verify-full for the same
    /// reason).
    fn check(&self) -> PgCheck {
        if self.mode == SslMode::VerifyFull || self.roots == RootCert::System {
            PgCheck::ChainAndName
        } else {
            PgCheck::Chain
        }
    }

    /// The connector for this policy; under `disable` one that is never asked to
    /// connect (tokio-postgres does not start TLS then).
    pub(crate) fn connector(&self) -> Result<Connector, CoordError> {
        if self.mode == SslMode::Disable {
            return Ok(Connector { config: None });
        }
        let roots = self.load_roots()?;
        let config = mailferry_core::tls::pg_client_config(roots, self.check())
            .map_err(|e| self.refused(format!("{e}")))?;
        Ok(Connector {
            config: Some(config),
        })
    }

    fn load_roots(&self) -> Result<rustls::RootCertStore, CoordError> {
        let mut store = rustls::RootCertStore::empty();
        match &self.roots {
            RootCert::File(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    self.refused(format!(
                        "sslrootcert {}: {e}; give the PEM file of the CA that signed the \
                         server's certificate",
                        path.display()
                    ))
                })?;
                let certs = mailferry_core::tls::certs_from_pem(&pem)
                    .map_err(|e| self.refused(format!("sslrootcert {}: {e}", path.display())))?;
                let (_, bad) = store.add_parsable_certificates(certs);
                if store.is_empty() {
                    return Err(self.refused(format!(
                        "sslrootcert {}: none of its {bad} certificate(s) can be used as a CA",
                        path.display()
                    )));
                }
            }
            RootCert::System => {
                let found = rustls_native_certs::load_native_certs();
                store.add_parsable_certificates(found.certs);
                if store.is_empty() {
                    return Err(self.refused(
                        "no system root certificates could be loaded; install the \
                         ca-certificates package or give the server's CA with \
                         sslrootcert=PATH"
                            .into(),
                    ));
                }
            }
        }
        Ok(store)
    }

    /// The TLS error of a connection that failed, if TLS is why: names the host, the
    /// mode and what to do. `None` for every other failure (refused login, unreachable).
    pub(crate) fn explain(&self, e: &tokio_postgres::Error) -> Option<CoordError> {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        let mut no_tls = false;
        while let Some(c) = cause {
            if let Some(h) = c.downcast_ref::<HandshakeError>() {
                return Some(self.refused(self.handshake_reason(&h.0)));
            }
            // tokio-postgres's own words when the server answers the SSLRequest with 'N'.
            no_tls |= c.to_string().contains("server does not support TLS");
            cause = c.source();
        }
        if no_tls {
            return Some(self.refused(format!(
                "the server does not offer TLS, and sslmode={} requires it; nothing was sent \
                 in clear. Turn on ssl in the server's postgresql.conf, or, on a network \
                 nobody else can listen on, set sslmode=disable",
                self.mode.as_str()
            )));
        }
        None
    }

    fn handshake_reason(&self, e: &io::Error) -> String {
        use rustls::CertificateError as C;
        let roots = match &self.roots {
            RootCert::File(p) => format!("sslrootcert={}", p.display()),
            RootCert::System => "the system's roots (no sslrootcert)".into(),
        };
        match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature)) => {
                format!(
                    "the server's certificate is not issued by a CA in {roots}; give the CA \
                     that signed it with sslrootcert=PATH (a PEM file)"
                )
            }
            Some(rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            )) => format!(
                "the server's certificate is not valid for the host name in the URL \
                 ({}); connect with a name the certificate lists{}",
                self.hosts,
                if self.roots == RootCert::System {
                    " (the name is always checked against the system's roots)"
                } else {
                    ", or use sslmode=verify-ca to check the chain only"
                }
            ),
            Some(rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. })) => {
                "the server's certificate has expired; renew it on the server".into()
            }
            Some(other) => format!("TLS handshake failed: {other}"),
            None => format!("TLS handshake failed: {e}"),
        }
    }

    fn refused(&self, reason: String) -> CoordError {
        CoordError::Tls {
            host: self.hosts.clone(),
            mode: format!(
                "{}{}",
                self.mode.as_str(),
                if self.defaulted {
                    " (the default: the URL names no sslmode)"
                } else {
                    ""
                }
            ),
            reason,
        }
    }
}

/// `host:port` of every host of `config`, comma-separated.
fn host_list(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let mut out: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| match h {
            Host::Tcp(h) if h.contains(':') => format!("[{h}]:{}", port(i)),
            Host::Tcp(h) => format!("{h}:{}", port(i)),
            Host::Unix(p) => format!("{} (Unix socket)", p.display()),
        })
        .collect();
    if out.is_empty() {
        out = config
            .get_hostaddrs()
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{a}:{}", port(i)))
            .collect();
    }
    out.join(",")
}

/// True when every host (and host address) of `config` is on this machine.
fn all_loopback(config: &tokio_postgres::Config) -> bool {
    let host_ok = config.get_hosts().iter().all(|h| match h {
        Host::Tcp(h) => {
            h.eq_ignore_ascii_case("localhost")
                || h.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
        }
        Host::Unix(_) => true,
    });
    host_ok && config.get_hostaddrs().iter().all(|a| a.is_loopback())
}

/// Takes `sslmode` and `sslrootcert` out of a connection string (URL or key=value
/// form), since tokio-postgres knows neither `verify-ca`/`verify-full` nor
/// `sslrootcert`. Returns the rest, the mode and the root file, as written (the last
/// occurrence wins, as in libpq).
pub(crate) fn split_params(s: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root) = (None, None);
    let mut take = |k: &str, v: String| match k {
        "sslmode" => {
            mode = Some(v);
            true
        }
        "sslrootcert" => {
            root = Some(v);
            true
        }
        _ => false,
    };
    let rest = if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        match s.split_once('?') {
            None => s.to_string(),
            Some((head, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        let v = percent_encoding::percent_decode_str(v)
                            .decode_utf8_lossy()
                            .into_owned();
                        !take(k, v)
                    })
                    .collect();
                if kept.is_empty() {
                    head.to_string()
                } else {
                    format!("{head}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let kept: Vec<&str> = key_values(s)
            .into_iter()
            .filter(|(k, v, _)| !take(k, v.clone()))
            .map(|(_, _, raw)| raw)
            .collect();
        kept.join(" ")
    };
    (rest, mode, root)
}

/// The `key = value` pairs of a key=value connection string, each with its raw text.
/// Values may be quoted with `'` and escape with `\`, as libpq's.
fn key_values(s: &str) -> Vec<(String, String, &str)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            return out;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = s[start..i].to_string();
        skip_ws(&mut i);
        if i < b.len() && b[i] == b'=' {
            i += 1;
        }
        skip_ws(&mut i);
        let mut value = Vec::new();
        let quoted = i < b.len() && b[i] == b'\'';
        if quoted {
            i += 1;
        }
        while i < b.len() {
            match b[i] {
                b'\\' if i + 1 < b.len() => {
                    value.push(b[i + 1]);
                    i += 2;
                    continue;
                }
                b'\'' if quoted => {
                    i += 1;
                    break;
                }
                c if !quoted && c.is_ascii_whitespace() => break,
                c => value.push(c),
            }
            i += 1;
        }
        out.push((
            key,
            String::from_utf8_lossy(&value).into_owned(),
            &s[start..i],
        ));
    }
}

// === the connector ===

/// tokio-postgres's TLS connector over tokio-rustls with a configuration of
/// [`mailferry_core::tls::pg_client_config`].
#[derive(Clone)]
pub(crate) struct Connector {
    /// `None` under sslmode=disable: tokio-postgres never asks to connect then.
    config: Option<Arc<rustls::ClientConfig>>,
}

/// A handshake that failed: the rustls error inside, kept so that [`Policy::explain`]
/// can say which check refused.
#[derive(Debug)]
pub(crate) struct HandshakeError(io::Error);

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS handshake: {}", self.0)
    }
}

impl std::error::Error for HandshakeError {}

impl MakeTlsConnect<Socket> for Connector {
    type Stream = RustlsStream;
    type TlsConnect = Connect;
    type Error = HandshakeError;

    /// Never fails: tokio-postgres asks before every connection, also under
    /// sslmode=disable and for Unix sockets (no host name), where no handshake follows.
    /// A handshake that cannot start fails in [`Connect::connect`].
    fn make_tls_connect(&mut self, domain: &str) -> Result<Connect, HandshakeError> {
        let to = match &self.config {
            None => Err("TLS is off (sslmode=disable)".to_string()),
            Some(config) => rustls::pki_types::ServerName::try_from(domain.to_string())
                .map(|name| (config.clone(), name))
                .map_err(|e| format!("{domain:?} is not a host name for TLS: {e}")),
        };
        Ok(Connect { to })
    }
}

/// One handshake to come, with the name the certificate is checked against, or why
/// none can start.
pub(crate) struct Connect {
    to: Result<
        (
            Arc<rustls::ClientConfig>,
            rustls::pki_types::ServerName<'static>,
        ),
        String,
    >,
}

impl TlsConnect<Socket> for Connect {
    type Stream = RustlsStream;
    type Error = HandshakeError;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream, HandshakeError>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let (config, name) = self
                .to
                .map_err(|e| HandshakeError(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
            tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await
                .map(|s| RustlsStream(Box::new(s)))
                .map_err(HandshakeError)
        })
    }
}

/// A TLS connection to PostgreSQL.
pub(crate) struct RustlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl TlsStream for RustlsStream {
    /// No SCRAM channel binding (`SCRAM-SHA-256-PLUS`): the server is authenticated by
    /// its certificate already, and binding needs the certificate's signature hash,
    /// which rustls does not expose. SCRAM-SHA-256 without binding still never sends
    /// the password.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests;
