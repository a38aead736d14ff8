//! [`SizeLiar`]: a TLS man-in-the-middle, for tests, between an IMAP client and a
//! server's implicit-TLS port, that rewrites every `RFC822.SIZE` the server reports
//! ([`super::SizeRewriter`]) and passes everything else through. It terminates TLS on
//! both sides: clients must trust its own CA ([`SizeLiar::ca_pem`], what `--source-ca`
//! names), and it trusts the server's CA file. Servers such as Exchange report sizes
//! that differ from the bytes they serve; this is how the tests get such a server out of
//! a Dovecot (whose `ssl = required` refuses a plaintext login, hence TLS upstream).

use super::rewrite::SizeRewriter;
use super::serving::Serving;
use mailferry_core::tls::{certs_from_pem, client_config, server_config, LocalCa};
use rustls_pki_types::ServerName;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A running size-rewriting relay; stops when dropped.
pub struct SizeLiar {
    serving: Serving,
    ca_pem: PathBuf,
    rewritten: Arc<AtomicU64>,
    /// Holds `ca_pem`.
    _dir: tempfile::TempDir,
}

fn tls_error(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("size-rewriting relay: {what}: {e}"))
}

impl SizeLiar {
    /// Listens on `127.0.0.1:0` with a certificate for `127.0.0.1` and `localhost` from
    /// a fresh CA; relays each connection over TLS to `upstream` (an implicit-TLS IMAP
    /// port whose certificate chains to `upstream_ca`, a PEM file, and names its IP),
    /// adding `delta` to every `RFC822.SIZE` on the way back.
    pub fn start(upstream: SocketAddr, upstream_ca: &Path, delta: i64) -> io::Result<SizeLiar> {
        let pem = std::fs::read(upstream_ca).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "size-rewriting relay: the upstream CA {}: {e}",
                    upstream_ca.display()
                ),
            )
        })?;
        let roots = certs_from_pem(&pem).map_err(|e| tls_error("the upstream CA", e))?;
        // ALPN is HTTP's business; an IMAP peer offering none must not be refused.
        let mut client = (*client_config(&roots).map_err(|e| tls_error("client", e))?).clone();
        client.alpn_protocols.clear();
        let ca = LocalCa::generate("mailferry size-rewriting relay CA")
            .map_err(|e| tls_error("CA", e))?;
        let id = ca
            .issue_server(&["127.0.0.1", "localhost"])
            .map_err(|e| tls_error("certificate", e))?;
        let mut server = (*server_config(&id).map_err(|e| tls_error("server", e))?).clone();
        server.alpn_protocols.clear();
        let dir = tempfile::tempdir()?;
        let ca_pem = dir.path().join("size-liar-ca.pem");
        std::fs::write(&ca_pem, ca.cert_pem())?;

        let acceptor = TlsAcceptor::from(Arc::new(server));
        let connector = TlsConnector::from(Arc::new(client));
        let name = ServerName::IpAddress(upstream.ip().into());
        let rewritten = Arc::new(AtomicU64::new(0));
        let count = rewritten.clone();
        let serving = Serving::start(move |conn| {
            lie(
                conn,
                upstream,
                acceptor.clone(),
                connector.clone(),
                name.clone(),
                delta,
                count.clone(),
            )
        })?;
        Ok(SizeLiar {
            serving,
            ca_pem,
            rewritten,
            _dir: dir,
        })
    }

    /// Where clients connect (implicit TLS).
    pub fn addr(&self) -> SocketAddr {
        self.serving.addr()
    }

    /// The PEM file of the CA the relay's certificate chains to: what a client must
    /// trust (`--source-ca`, `SourceOptions::source_ca`).
    pub fn ca_pem(&self) -> &Path {
        &self.ca_pem
    }

    /// `RFC822.SIZE` values rewritten so far, over all connections (a test that sees 0
    /// was not lied to).
    pub fn rewritten(&self) -> u64 {
        self.rewritten.load(Ordering::Relaxed)
    }
}

/// One connection: TLS from the client, TLS to the server, commands passed through,
/// responses rewritten; both go when either side fails or both have ended.
async fn lie(
    client: TcpStream,
    upstream: SocketAddr,
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    name: ServerName<'static>,
    delta: i64,
    rewritten: Arc<AtomicU64>,
) {
    let _ = client.set_nodelay(true);
    let Ok(client) = acceptor.accept(client).await else {
        return;
    };
    let Ok(tcp) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = tcp.set_nodelay(true);
    let Ok(server) = connector.connect(name, tcp).await else {
        return;
    };
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut server_read, mut server_write) = tokio::io::split(server);
    let up = async {
        tokio::io::copy(&mut client_read, &mut server_write).await?;
        server_write.shutdown().await
    };
    let down = async {
        let mut rewriter = SizeRewriter::new(delta);
        let (mut buf, mut out) = (vec![0u8; 64 << 10], Vec::new());
        loop {
            let n = server_read.read(&mut buf).await?;
            out.clear();
            if n == 0 {
                rewriter.finish(&mut out);
                client_write.write_all(&out).await?;
                return client_write.shutdown().await;
            }
            let lies = rewriter.feed(&buf[..n], &mut out);
            rewritten.fetch_add(lies, Ordering::Relaxed);
            client_write.write_all(&out).await?;
            client_write.flush().await?;
        }
    };
    let _ = tokio::try_join!(up, down);
}
