//! IMAP source: `imaps://user@host[:port]` (implicit TLS) and `imap://user@host[:port]`
//! (STARTTLS, required: a server that does not offer it is refused, never spoken to in
//! plaintext). The server certificate is checked against the system roots or against
//! `--source-ca`; there is no way to skip the check and no fallback.
//!
//! Read-only by construction: folders are opened with EXAMINE and bodies fetched with
//! `BODY.PEEK[]`, so the source's `\Seen` flags (and everything else) stay as they were.
//! A body is fetched in pieces of at most [`PIECE_BYTES`] (`BODY.PEEK[]<offset.length>`),
//! so memory stays bounded whatever the message size and whatever the client library
//! buffers. During a pass, bodies are fetched ahead by several connections with many
//! commands in flight each (the `fetch` module): over a WAN the round trip, not the
//! server, is what a one-request-at-a-time reader waits for. A dropped connection is opened again with capped exponential backoff and
//! jitter, and the reader resumes at the byte it had reached; `NO [THROTTLED]`,
//! `[UNAVAILABLE]`, `[LIMIT]` and `[INUSE]` make it wait and retry.
//!
//! Listing is cheap where the server has CONDSTORE: each folder's cursor is
//! `UIDVALIDITY:HIGHESTMODSEQ:UIDNEXT:EXISTS`. An unchanged cursor fills the folder from
//! what earlier passes acknowledged without fetching anything; a changed one fetches the
//! flags changed since the last HIGHESTMODSEQ, the set of UIDs present (from QRESYNC's
//! `VANISHED (EARLIER)` where the server has it, else `UID SEARCH ALL`), and full
//! metadata only for UIDs not seen before. Without CONDSTORE a pass
//! after the first fetches flags for all messages, and metadata only for new ones.
//!
//! async-imap does the framing (tags, literals of any size) and parsing (imap-proto);
//! the commands themselves are written here, because the typed API has no CONDSTORE
//! modifiers, partial fetches or server back-off codes, and its errors lose the
//! server's words. This module never writes to the server's mailboxes.
//!
//! The [`Source`] trait is blocking. The source owns a small current-thread tokio
//! runtime and drives each IMAP exchange with `block_on` on the caller's thread, so it
//! works the same from `spawn_blocking` (listing), a plain thread (reading) or a test,
//! and never ties up a worker of the caller's runtime.

use super::{
    DeltaFolder, Listing, Location, Namespaces, PriorItem, PriorLookup, Source, SourceItem,
    SourceOptions,
};
use crate::AgentError;
use async_imap::imap_proto::{
    AttributeValue, Capability, MailboxDatum, MessageSection, NameAttribute, Outcome, Response,
    ResponseCode, SectionPath, Status,
};
use base64::Engine as _;
use mailferry_core::profile::Role;
use mailferry_core::report::BadItem;
use mailferry_core::secret::SecretBytes;
use mailferry_core::{calendar, mutf7, Flags, FolderName, SourceId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

/// Environment variable holding the IMAP password when no `--password-file` is given.
pub const PASSWORD_ENV: &str = "MAILFERRY_SOURCE_PASSWORD";

/// Largest piece of a message body fetched at once.
pub const PIECE_BYTES: u64 = 1 << 20;

/// What a listing fetches for a message it has not seen before.
const METADATA: &str = "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])";

/// Ranges per UID FETCH command when fetching metadata of scattered UIDs (keeps command
/// lines well under the line limits servers enforce).
const RANGES_PER_COMMAND: usize = 500;

/// How long to wait for a TCP connection or the TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for one whole response (a piece is at most 1 MiB: this allows
/// links down to ~30 kbit/s before a stalled server is taken for a dead one).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);

/// Reconnect and back-off policy.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// Attempts after the first failure before giving up.
    pub retries: u32,
    /// First wait.
    pub base: Duration,
    /// Longest wait.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            retries: 8,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(20),
        }
    }
}

impl Backoff {
    /// Wait before retry number `attempt` (1-based): exponential, capped, then a random
    /// point in its upper half so that many agents do not reconnect in step.
    pub fn wait(&self, attempt: u32, random: u64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.cap);
        let half = exp / 2;
        let nanos = half.as_nanos().max(1) as u64;
        half + Duration::from_nanos(random % nanos)
    }
}

fn random_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b)
}

// === Server spec ===

/// A parsed `imap://` or `imaps://` source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSpec {
    /// `imaps://`: TLS from the first byte. `imap://`: STARTTLS, required.
    pub implicit_tls: bool,
    /// Login name (percent-decoded).
    pub user: String,
    /// Host name or IP address, as the certificate must name it.
    pub host: String,
    /// TCP port (993 or 143 when not given).
    pub port: u16,
}

impl ServerSpec {
    /// Parses `imaps://user@host[:port]` or `imap://user@host[:port]`. A password in
    /// the URL is refused: it would be visible to every user of the machine.
    pub fn parse(spec: &str) -> Result<ServerSpec, String> {
        let (implicit_tls, rest) = if let Some(r) = spec.strip_prefix("imaps://") {
            (true, r)
        } else if let Some(r) = spec.strip_prefix("imap://") {
            (false, r)
        } else {
            return Err("expected imaps://user@host[:port] or imap://user@host[:port]".into());
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (userinfo, hostport) = rest
            .rsplit_once('@')
            .ok_or("the login name is missing (imaps://user@host)")?;
        if userinfo.contains(':') {
            return Err(format!(
                "a password does not belong in the source URL (anyone on this machine can \
                 read the command line); use --password-file or {PASSWORD_ENV}"
            ));
        }
        if hostport.contains(['/', '?', '#']) {
            return Err("a folder path or query in the URL is not supported".into());
        }
        let user = percent_encoding::percent_decode_str(userinfo)
            .decode_utf8()
            .map_err(|_| "the login name is not UTF-8 after percent-decoding".to_string())?
            .into_owned();
        if user.is_empty() || user.chars().any(|c| c.is_control()) {
            return Err("the login name is empty or has control characters".into());
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("unclosed '[' in the host")?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err("the host is missing".into());
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("bad port {p:?}"))?,
            None if implicit_tls => 993,
            None => 143,
        };
        Ok(ServerSpec {
            implicit_tls,
            user,
            host,
            port,
        })
    }

    /// The URL again (no secrets; the login name percent-encoded as needed).
    pub fn url(&self) -> String {
        let scheme = if self.implicit_tls { "imaps" } else { "imap" };
        const LOGIN: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'.')
            .remove(b'-')
            .remove(b'_');
        let user = percent_encoding::utf8_percent_encode(&self.user, LOGIN);
        if self.host.contains(':') {
            format!("{scheme}://{user}@[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{user}@{}:{}", self.host, self.port)
        }
    }
}

/// A source spec with any password in it replaced, for error messages.
pub fn redact(spec: &str) -> String {
    match (spec.split_once("://"), spec.rsplit_once('@')) {
        (Some((scheme, rest)), Some((_, host))) if rest.contains('@') => {
            format!("{scheme}://[login redacted]@{host}")
        }
        _ => spec.to_string(),
    }
}

// === Credentials and TLS ===

enum Credential {
    Password(SecretBytes),
    OAuth(SecretBytes),
}

/// Reads a secret file: its bytes less one trailing newline; empty or multi-line is an
/// error (a stray second line is more likely a wrong file than part of a password).
fn read_secret(path: &Path, what: &str) -> Result<SecretBytes, String> {
    let mut bytes =
        Zeroizing::new(std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))?);
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(format!("{what} {} is empty", path.display()));
    }
    if bytes.iter().any(|&b| b == b'\n' || b == b'\r' || b == 0) {
        return Err(format!(
            "{what} {} has more than one line or a NUL byte",
            path.display()
        ));
    }
    Ok(SecretBytes::new(std::mem::take(&mut *bytes)))
}

fn credential(options: &SourceOptions) -> Result<Credential, String> {
    if let Some(p) = &options.password {
        return Ok(Credential::Password(p.clone()));
    }
    match (&options.password_file, &options.oauth_token_file) {
        (Some(_), Some(_)) => Err("give --password-file or --oauth-token-file, not both".into()),
        (None, Some(token)) => Ok(Credential::OAuth(read_secret(token, "OAuth token file")?)),
        (Some(file), None) => Ok(Credential::Password(read_secret(file, "password file")?)),
        (None, None) => match std::env::var_os(PASSWORD_ENV) {
            Some(v) if !v.is_empty() => {
                use std::os::unix::ffi::OsStringExt;
                Ok(Credential::Password(SecretBytes::new(v.into_vec())))
            }
            _ => Err(format!(
                "an IMAP source needs a password (--password-file, or the environment \
                 variable {PASSWORD_ENV}) or an OAuth token (--oauth-token-file)"
            )),
        },
    }
}

/// The TLS configuration for `options`' trust (CA file, fingerprint, or the system's
/// roots), and where it records the certificate the server presents.
fn tls_config(
    options: &SourceOptions,
) -> Result<(Arc<rustls::ClientConfig>, mailferry_core::tls::Presented), String> {
    use mailferry_core::tls::MailRoots;
    let roots = match &options.source_ca {
        Some(path) => {
            let pem =
                std::fs::read(path).map_err(|e| format!("--source-ca {}: {e}", path.display()))?;
            let certs = mailferry_core::tls::certs_from_pem(&pem)
                .map_err(|e| format!("--source-ca {}: {e}", path.display()))?;
            MailRoots::File(certs)
        }
        None => {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() && options.source_cert_sha256.is_none() {
                return Err(format!(
                    "no system root certificates could be loaded ({} error(s)); install \
                     the ca-certificates package, give the server's CA (or its own \
                     certificate) with --source-ca, or pin it with --source-cert-sha256",
                    found.errors.len()
                ));
            }
            MailRoots::System(roots)
        }
    };
    mailferry_core::tls::mail_client_config(roots, options.source_cert_sha256)
        .map_err(|e| e.to_string())
}

/// The certificate a server presents, and whether `options` trust it: what `endpoint
/// test` shows so that an admin can pin it.
#[derive(Clone, Debug)]
pub struct CertProbe {
    /// The server's end-entity certificate, if the handshake got that far.
    pub presented: Option<mailferry_core::tls::CertInfo>,
    /// `Ok` if the certificate is trusted (the handshake completed), else why not.
    pub trusted: Result<(), String>,
}

/// Connects to the server of `spec`, secures the connection (implicit TLS or
/// STARTTLS) with the trust of `options`, and reports the certificate it presented.
/// Needs no credential and logs in to nothing.
pub async fn probe_certificate(spec: &str, options: &SourceOptions) -> Result<CertProbe, String> {
    let server = ServerSpec::parse(spec)?;
    let (tls, presented) = tls_config(options)?;
    let trusted = match secure(&server, &tls).await {
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    };
    Ok(CertProbe {
        presented: presented
            .last()
            .map(|c| mailferry_core::tls::CertInfo::from_der(&c)),
        trusted,
    })
}

// === Failures ===

/// Why an IMAP exchange did not work, sorted by what to do about it.
#[derive(Debug, Clone)]
enum Fail {
    /// The connection is gone or unusable: open a new one and retry.
    Lost(String),
    /// The server asked for patience (`[THROTTLED]`, `[UNAVAILABLE]`, `[LIMIT]`,
    /// `[INUSE]`, or BYE at the greeting): wait and retry.
    Busy(String),
    /// The server refused this command (NO or BAD): retrying will not help.
    Refused(String),
    /// Nothing can work: the certificate, the login, no STARTTLS.
    Fatal(String),
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Lost(m) | Fail::Busy(m) | Fail::Refused(m) | Fail::Fatal(m) => f.write_str(m),
        }
    }
}

/// Error text from the server or the client library, cut to a readable length (a parse
/// error can quote a whole message).
fn short(s: &str) -> String {
    const MAX: usize = 300;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn outcome_text(o: &Outcome<'_>) -> String {
    match (&o.code, &o.information) {
        (_, Some(info)) => short(info),
        (Some(code), None) => format!("{code:?}"),
        (None, None) => "(no text)".into(),
    }
}

/// Back-off codes servers put in a NO (RFC 5530 and common practice).
fn is_busy(text: &str) -> bool {
    let t = text.trim_start().to_ascii_uppercase();
    // Exchange throttles with plain text ("Request is throttled. Suggested Backoff
    // Time: 169 milliseconds"), without a response code.
    ["[THROTTLED]", "[UNAVAILABLE]", "[LIMIT]", "[INUSE]"]
        .iter()
        .any(|c| t.starts_with(c))
        || crate::throttle::backoff_hint(text).is_some()
}

fn done(status: &Status, outcome: &Outcome<'_>, cmd: &str) -> Result<(), Fail> {
    let text = outcome_text(outcome);
    match status {
        Status::Ok => Ok(()),
        _ if is_busy(&text) => Err(Fail::Busy(format!(
            "the server is busy ({verb}): {text}",
            verb = verb(cmd)
        ))),
        Status::No => Err(Fail::Refused(format!("{} refused: {text}", verb(cmd)))),
        Status::Bad => Err(Fail::Refused(format!(
            "{} rejected as BAD: {text}",
            verb(cmd)
        ))),
        other => Err(Fail::Lost(format!(
            "unexpected {other:?} to {}: {text}",
            verb(cmd)
        ))),
    }
}

/// The command's first words, for messages (never its arguments: they may be secret).
fn verb(cmd: &str) -> String {
    let mut w = cmd.split(' ');
    match (w.next(), w.next()) {
        (Some("UID"), Some(v)) => format!("UID {v}"),
        (Some(v), _) => v.to_string(),
        _ => String::new(),
    }
}

// === Connection ===

/// rustls asks its transport for at most 4 KiB at a time; the buffer under it turns a
/// stream of FETCH literals into one `recv` per [`RECV_BUFFER`] instead of one per
/// 4 KiB (a tenth of the system calls at a full link). Writes pass straight through.
type Tls = tokio_rustls::client::TlsStream<tokio::io::BufReader<TcpStream>>;

/// Bytes the socket is read by at most (see [`Tls`]).
const RECV_BUFFER: usize = 64 << 10;

/// What EXAMINE said about a folder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Selected {
    mailbox: String,
    uidvalidity: u32,
    uidnext: u32,
    exists: u32,
    /// None: the server has no CONDSTORE, or `[NOMODSEQ]` for this folder.
    highestmodseq: Option<u64>,
}

impl Selected {
    /// Takes what an answer to EXAMINE says about the folder (EXISTS, UIDVALIDITY,
    /// UIDNEXT, HIGHESTMODSEQ).
    fn learn(&mut self, r: &Response<'_>) {
        match r {
            Response::MailboxData(MailboxDatum::Exists(n)) => self.exists = *n,
            Response::Data {
                status: Status::Ok,
                outcome,
            } => match &outcome.code {
                Some(ResponseCode::UidValidity(v)) => self.uidvalidity = *v,
                Some(ResponseCode::UidNext(v)) => self.uidnext = *v,
                Some(ResponseCode::HighestModSeq(v)) => self.highestmodseq = Some(*v),
                _ => {}
            },
            _ => {}
        }
    }

    fn cursor(&self) -> Cursor {
        Cursor {
            uidvalidity: self.uidvalidity,
            highestmodseq: self.highestmodseq.unwrap_or(0),
            uidnext: self.uidnext,
            exists: self.exists,
        }
    }
}

/// A folder's state as a cursor string `UIDVALIDITY:HIGHESTMODSEQ:UIDNEXT:EXISTS`
/// (HIGHESTMODSEQ 0 where the server has none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// UIDVALIDITY.
    pub uidvalidity: u32,
    /// HIGHESTMODSEQ, 0 if none.
    pub highestmodseq: u64,
    /// UIDNEXT.
    pub uidnext: u32,
    /// EXISTS.
    pub exists: u32,
}

impl Cursor {
    /// Parses a cursor string; None if it is not one of ours.
    pub fn parse(s: &str) -> Option<Cursor> {
        let mut it = s.split(':');
        let c = Cursor {
            uidvalidity: it.next()?.parse().ok()?,
            highestmodseq: it.next()?.parse().ok()?,
            uidnext: it.next()?.parse().ok()?,
            exists: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(c)
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.uidvalidity, self.highestmodseq, self.uidnext, self.exists
        )
    }
}

/// One LIST answer.
#[derive(Clone, Debug)]
struct ListEntry {
    name: String,
    delimiter: Option<String>,
    selectable: bool,
    /// The special-use attribute (RFC 6154), if the server gave one.
    role: Option<Role>,
}

/// Metadata of one message from a listing FETCH.
#[derive(Clone, Debug, Default)]
struct Meta {
    uid: u32,
    flags: Option<Flags>,
    internal_date: Option<i64>,
    size: Option<u32>,
    message_id: Option<String>,
}

/// Sends one command line (tagged `tag`) and reads until its tagged answer, handing
/// every other response to `each`.
async fn exchange<T>(
    client: &mut async_imap::Client<T>,
    tag: &str,
    cmd: &str,
    each: impl FnMut(&Response<'_>),
) -> Result<(), Fail>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    let line = Zeroizing::new(format!("{tag} {cmd}\r\n"));
    send(client, line.as_bytes()).await?;
    read_until(client, tag, cmd, each).await?
}

/// Reads until the tagged answer `tag` of a command already sent, handing every other
/// response to `each`. `Ok(Err)` is the server's refusal of that command (the
/// connection is fine); `Err` means the connection is not.
async fn read_until<T>(
    client: &mut async_imap::Client<T>,
    tag: &str,
    cmd: &str,
    mut each: impl FnMut(&Response<'_>),
) -> Result<Result<(), Fail>, Fail>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    loop {
        let end = next_response(client, |resp| match resp {
            Response::Done {
                tag: t,
                status,
                outcome,
            } if t.0 == tag => Some(done(status, outcome, cmd)),
            Response::Data {
                status: Status::Bye,
                outcome,
            } => Some(Err(Fail::Lost(format!(
                "the server ended the session: {}",
                outcome_text(outcome)
            )))),
            other => {
                each(other);
                None
            }
        })
        .await?;
        match end {
            Some(Err(e @ (Fail::Lost(_) | Fail::Busy(_)))) => return Err(e),
            Some(r) => return Ok(r),
            None => {}
        }
    }
}

async fn send<T>(client: &mut async_imap::Client<T>, bytes: &[u8]) -> Result<(), Fail>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    // async-imap writes commands straight to the stream too (no write buffer of its
    // own), so writing here keeps the order of bytes on the wire.
    let io = client.get_mut();
    let write = async {
        io.write_all(bytes).await?;
        io.flush().await
    };
    match tokio::time::timeout(RESPONSE_TIMEOUT, write).await {
        Err(_) => Err(Fail::Lost("the server accepted no data for 300 s".into())),
        Ok(Err(e)) => Err(Fail::Lost(format!("connection lost while sending: {e}"))),
        Ok(Ok(())) => Ok(()),
    }
}

/// Reads the next response and hands it to `f` (the response borrows the client's
/// buffer, so it is looked at here rather than returned).
async fn next_response<T, R>(
    client: &mut async_imap::Client<T>,
    f: impl FnOnce(&Response<'_>) -> R,
) -> Result<R, Fail>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    match tokio::time::timeout(RESPONSE_TIMEOUT, client.read_response()).await {
        Err(_) => Err(Fail::Lost("no answer from the server for 300 s".into())),
        Ok(Err(e)) => Err(Fail::Lost(format!(
            "connection lost: {}",
            short(&e.to_string())
        ))),
        Ok(Ok(None)) => Err(Fail::Lost("the server closed the connection".into())),
        Ok(Ok(Some(r))) => Ok(f(r.parsed())),
    }
}

/// Reads the greeting: OK goes on, BYE means busy, PREAUTH is refused (we always
/// authenticate, and never over a connection we did not secure ourselves).
async fn greeting<T>(client: &mut async_imap::Client<T>) -> Result<(), Fail>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    next_response(client, |resp| match resp {
        Response::Data {
            status: Status::Ok, ..
        } => Ok(()),
        Response::Data {
            status: Status::Bye,
            outcome,
        } => Err(Fail::Busy(format!(
            "the server turned the connection away: {}",
            outcome_text(outcome)
        ))),
        Response::Data {
            status: Status::PreAuth,
            ..
        } => Err(Fail::Fatal(
            "the server sent PREAUTH; mailferry always logs in and does not accept \
             pre-authenticated sessions"
                .into(),
        )),
        other => Err(Fail::Lost(format!(
            "the server's greeting is not IMAP: {}",
            short(&format!("{other:?}"))
        ))),
    })
    .await?
}

/// A TLS error that a retry cannot fix (certificate, protocol), as opposed to a dropped
/// connection during the handshake.
fn tls_failure(host: &str, e: io::Error) -> Fail {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(r) => match mailferry_core::tls::CertRefused::find(r) {
            Some(refused) => Fail::Fatal(how_to_pin(host, refused)),
            None => match r {
                rustls::Error::InvalidCertificate(c) => Fail::Fatal(format!(
                    "the certificate of {host} is not trusted ({c}); it must chain to the \
                     system roots or to the CA given with --source-ca, or be pinned with \
                     --source-cert-sha256, and there is no fallback"
                )),
                other => Fail::Fatal(format!("TLS with {host} failed: {other}")),
            },
        },
        None => Fail::Lost(format!("TLS handshake with {host}: {e}")),
    }
}

/// A refused certificate, and how to trust it if it is the right one.
fn how_to_pin(host: &str, refused: &mailferry_core::tls::CertRefused) -> String {
    let p = &refused.presented;
    format!(
        "the certificate of {host} is not trusted: {}. It presented subject {:?}, issuer \
         {:?}, valid {} to {}, SHA-256 {}. If that is the server's certificate (check the \
         fingerprint on the server: `openssl x509 -noout -fingerprint -sha256 -in \
         cert.pem`), pin it with --source-cert-sha256 {} (endpoint file: cert_sha256), or \
         give its PEM file or its CA's with --source-ca (endpoint file: ca_file); there \
         is no way to skip the check",
        refused.reason, p.subject, p.issuer, p.not_before, p.not_after, p.sha256, p.sha256
    )
}

/// What the connection needs to know to open itself.
struct Config {
    server: ServerSpec,
    tls: Arc<rustls::ClientConfig>,
    credential: Credential,
    backoff: Backoff,
    /// `--source-prefix`: the personal prefix, instead of the server's NAMESPACE.
    prefix: Option<String>,
    /// `--source-namespaces`.
    namespaces: Namespaces,
}

/// Connects to `server` and secures the connection: implicit TLS, or STARTTLS
/// (required). Reads nothing after the handshake.
async fn secure(server: &ServerSpec, tls: &Arc<rustls::ClientConfig>) -> Result<Tls, Fail> {
    let host = server.host.as_str();
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, server.port)))
        .await
    {
        Err(_) => return Err(Fail::Lost(format!("connecting to {host} timed out"))),
        Ok(Err(e)) => {
            return Err(Fail::Lost(format!(
                "cannot connect to {host}:{}: {e}",
                server.port
            )))
        }
        Ok(Ok(t)) => t,
    };
    let _ = tcp.set_nodelay(true);
    let tcp = if server.implicit_tls {
        tcp
    } else {
        let mut plain = async_imap::Client::new(tcp);
        greeting(&mut plain).await?;
        match exchange(&mut plain, "s0", "STARTTLS", |_| {}).await {
            Ok(()) => {}
            Err(Fail::Refused(m)) => {
                return Err(Fail::Fatal(format!(
                    "{host} does not offer STARTTLS ({m}); mailferry does not log in \
                     without TLS (use imaps:// if the server has implicit TLS)"
                )))
            }
            Err(e) => return Err(e),
        }
        // Anything the server sent after its OK is dropped with the plaintext
        // buffer: only what arrives inside TLS is believed (STARTTLS injection).
        plain.into_inner()
    };
    let name = rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| Fail::Fatal(format!("{host:?} is not a valid server name: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(tls.clone());
    // Empty when the handshake starts: after STARTTLS nothing read in plaintext is kept.
    let tcp = tokio::io::BufReader::with_capacity(RECV_BUFFER, tcp);
    match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp)).await {
        Err(_) => Err(Fail::Lost(format!("TLS handshake with {host} timed out"))),
        Ok(Err(e)) => Err(tls_failure(host, e)),
        Ok(Ok(t)) => Ok(t),
    }
}

/// One logged-in connection.
struct Conn {
    client: async_imap::Client<Tls>,
    next_tag: u64,
    caps: HashSet<String>,
    selected: Option<Selected>,
    /// What NAMESPACE said (None: the server has no NAMESPACE, or refused it).
    namespace: Option<NamespaceInfo>,
    /// QRESYNC is enabled: a CHANGEDSINCE fetch can also name the UIDs expunged since.
    qresync: bool,
}

impl Conn {
    /// Connects, secures (implicit TLS or STARTTLS), and logs in.
    async fn open(cfg: &Config) -> Result<Conn, Fail> {
        let tls = secure(&cfg.server, &cfg.tls).await?;
        let mut conn = Conn {
            client: async_imap::Client::new(tls),
            next_tag: 0,
            caps: HashSet::new(),
            selected: None,
            namespace: None,
            qresync: false,
        };
        if cfg.server.implicit_tls {
            greeting(&mut conn.client).await?;
        }
        conn.caps = conn.capabilities().await?;
        conn.login(&cfg.server.user, &cfg.credential).await?;
        conn.caps = conn.capabilities().await?;
        if conn.has("NAMESPACE") {
            conn.namespace = conn.namespace().await?;
        }
        if conn.has("QRESYNC") && conn.has("ENABLE") {
            match conn.command("ENABLE QRESYNC", |_| {}).await {
                Ok(()) => conn.qresync = true,
                Err(Fail::Refused(m)) => tracing::debug!("the server refused ENABLE QRESYNC: {m}"),
                Err(e) => return Err(e),
            }
        }
        Ok(conn)
    }

    fn has(&self, cap: &str) -> bool {
        self.caps.contains(cap)
    }

    fn tag(&mut self) -> String {
        self.next_tag += 1;
        format!("m{}", self.next_tag)
    }

    async fn command(&mut self, cmd: &str, each: impl FnMut(&Response<'_>)) -> Result<(), Fail> {
        let tag = self.tag();
        exchange(&mut self.client, &tag, cmd, each).await
    }

    async fn capabilities(&mut self) -> Result<HashSet<String>, Fail> {
        let mut caps = HashSet::new();
        self.command("CAPABILITY", |r| {
            if let Response::Capabilities(list) = r {
                for c in list {
                    caps.insert(match c {
                        Capability::Imap4rev1 => "IMAP4REV1".to_string(),
                        Capability::Auth(m) => format!("AUTH={}", m.to_ascii_uppercase()),
                        Capability::Atom(a) => a.to_ascii_uppercase(),
                    });
                }
            }
        })
        .await?;
        Ok(caps)
    }

    /// AUTHENTICATE PLAIN or XOAUTH2 (LOGIN only for servers without SASL PLAIN). The
    /// secret goes on the wire inside TLS and is zeroized in our buffers afterwards.
    async fn login(&mut self, user: &str, cred: &Credential) -> Result<(), Fail> {
        let (mechanism, payload) = match cred {
            Credential::OAuth(token) => {
                if !self.has("AUTH=XOAUTH2") {
                    return Err(Fail::Fatal(
                        "the server does not offer XOAUTH2 (AUTH=XOAUTH2); use a password".into(),
                    ));
                }
                let mut p = Zeroizing::new(Vec::new());
                p.extend_from_slice(b"user=");
                p.extend_from_slice(user.as_bytes());
                p.extend_from_slice(b"\x01auth=Bearer ");
                p.extend_from_slice(token.expose());
                p.extend_from_slice(b"\x01\x01");
                ("XOAUTH2", p)
            }
            Credential::Password(pw) if self.has("AUTH=PLAIN") => {
                let mut p = Zeroizing::new(Vec::new());
                p.push(0);
                p.extend_from_slice(user.as_bytes());
                p.push(0);
                p.extend_from_slice(pw.expose());
                ("PLAIN", p)
            }
            Credential::Password(pw) => {
                if self.has("LOGINDISABLED") {
                    return Err(Fail::Fatal(
                        "the server disables LOGIN and offers no AUTH=PLAIN".into(),
                    ));
                }
                let pw = std::str::from_utf8(pw.expose()).map_err(|_| {
                    Fail::Fatal("this server only has LOGIN, which needs a UTF-8 password".into())
                })?;
                let cmd = Zeroizing::new(format!(
                    "LOGIN {} {}",
                    quote(user).map_err(Fail::Fatal)?,
                    quote(pw).map_err(Fail::Fatal)?
                ));
                return self
                    .command(&cmd, |_| {})
                    .await
                    .map_err(|e| login_failure(user, e));
            }
        };
        let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*payload));
        let tag = self.tag();
        let line = Zeroizing::new(if self.has("SASL-IR") {
            format!("{tag} AUTHENTICATE {mechanism} {}\r\n", &*b64)
        } else {
            format!("{tag} AUTHENTICATE {mechanism}\r\n")
        });
        send(&mut self.client, line.as_bytes()).await?;
        let mut sent = self.has("SASL-IR");
        let what = format!("AUTHENTICATE {mechanism}");
        loop {
            let step = next_response(&mut self.client, |resp| match resp {
                Response::Continue(_) => Some(None),
                Response::Done {
                    tag: t,
                    status,
                    outcome,
                } if t.0 == tag => Some(Some(done(status, outcome, &what))),
                Response::Data {
                    status: Status::Bye,
                    outcome,
                } => Some(Some(Err(Fail::Lost(format!(
                    "the server ended the session during login: {}",
                    outcome_text(outcome)
                ))))),
                _ => None,
            })
            .await?;
            match step {
                Some(Some(end)) => return end.map_err(|e| login_failure(user, e)),
                Some(None) if !sent => {
                    let answer = Zeroizing::new(format!("{}\r\n", &*b64));
                    send(&mut self.client, answer.as_bytes()).await?;
                    sent = true;
                }
                // A second challenge is an error report (XOAUTH2): answer empty, then
                // the server says NO.
                Some(None) => send(&mut self.client, b"\r\n").await?,
                None => {}
            }
        }
    }

    /// NAMESPACE (RFC 2342). imap-proto cannot parse its answer (and a response it
    /// cannot parse breaks the connection), so the answer is read here, straight off the
    /// TLS stream: right after login nothing else is in flight, and the client library's
    /// buffer is empty. `None` if the server refuses the command or the answer makes no
    /// sense (the folders then keep their full names).
    async fn namespace(&mut self) -> Result<Option<NamespaceInfo>, Fail> {
        let tag = self.tag();
        send(&mut self.client, format!("{tag} NAMESPACE\r\n").as_bytes()).await?;
        let io = self.client.get_mut();
        let read = async {
            let mut found = None;
            let mut total = 0usize;
            loop {
                let line = read_raw_response(io, &mut total).await?;
                if let Some(rest) = line.strip_prefix(format!("{tag} ").as_bytes()) {
                    let ok = rest.len() >= 2 && rest[..2].eq_ignore_ascii_case(b"OK");
                    if !ok {
                        tracing::info!(
                            "the server refused NAMESPACE: {}",
                            short(&String::from_utf8_lossy(rest))
                        );
                    }
                    return Ok(found.filter(|_| ok));
                }
                if line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"* BYE") {
                    return Err(Fail::Lost(format!(
                        "the server ended the session: {}",
                        short(&String::from_utf8_lossy(&line))
                    )));
                }
                if line.len() >= 12 && line[..12].eq_ignore_ascii_case(b"* NAMESPACE ") {
                    found = parse_namespace(&line[12..]);
                    if found.is_none() {
                        tracing::warn!(
                            "cannot read the server's NAMESPACE answer {:?}; folder names \
                             keep their prefix (--source-prefix sets it)",
                            short(&String::from_utf8_lossy(&line))
                        );
                    }
                }
            }
        };
        match tokio::time::timeout(RESPONSE_TIMEOUT, read).await {
            Err(_) => Err(Fail::Lost("no answer to NAMESPACE for 300 s".into())),
            Ok(r) => r,
        }
    }

    async fn list_mailboxes(&mut self) -> Result<Vec<ListEntry>, Fail> {
        let cmd = if self.has("SPECIAL-USE") && self.has("LIST-EXTENDED") {
            r#"LIST "" "*" RETURN (SPECIAL-USE)"#
        } else {
            r#"LIST "" "*""#
        };
        let mut out = Vec::new();
        self.command(cmd, |r| {
            if let Response::MailboxData(MailboxDatum::List(l)) = r {
                let mut selectable = true;
                let mut role = None;
                for a in &l.name_attributes {
                    match a {
                        NameAttribute::NoSelect => selectable = false,
                        NameAttribute::Extension(e) if e.eq_ignore_ascii_case("\\NonExistent") => {
                            selectable = false
                        }
                        NameAttribute::All => role = Some(Role::All),
                        NameAttribute::Archive => role = Some(Role::Archive),
                        NameAttribute::Drafts => role = Some(Role::Drafts),
                        NameAttribute::Flagged => role = Some(Role::Flagged),
                        NameAttribute::Junk => role = Some(Role::Junk),
                        NameAttribute::Sent => role = Some(Role::Sent),
                        NameAttribute::Trash => role = Some(Role::Trash),
                        NameAttribute::Extension(e) => role = role.or(Role::from_attribute(e)),
                        _ => {}
                    }
                }
                out.push(ListEntry {
                    name: l.name.to_string(),
                    delimiter: l.delimiter.as_ref().map(|d| d.to_string()),
                    selectable,
                    role,
                });
            }
        })
        .await?;
        Ok(out)
    }

    /// EXAMINE (read-only), with CONDSTORE where the server has it.
    async fn examine(&mut self, mailbox: &str) -> Result<Selected, Fail> {
        let q = quote(mailbox).map_err(Fail::Refused)?;
        let cmd = if self.has("CONDSTORE") {
            format!("EXAMINE {q} (CONDSTORE)")
        } else {
            format!("EXAMINE {q}")
        };
        self.selected = None;
        let mut sel = Selected {
            mailbox: mailbox.to_string(),
            ..Default::default()
        };
        self.command(&cmd, |r| sel.learn(r)).await?;
        if sel.uidvalidity == 0 {
            return Err(Fail::Refused(format!(
                "the server gave no UIDVALIDITY for {mailbox:?}"
            )));
        }
        self.selected = Some(sel.clone());
        Ok(sel)
    }

    /// Lists folders no earlier pass acknowledged anything of, in one pipelined exchange:
    /// `EXAMINE` and `UID FETCH 1:* <metadata>` for every folder in one write, the
    /// answers read in order (EXAMINE changes state, so the server runs them in turn).
    /// Over a WAN this is one round trip for all of them instead of two per folder.
    /// Per folder: its listing, or why it could not be opened.
    async fn list_fresh(
        &mut self,
        folders: &[(&FolderName, &str)],
    ) -> Result<Vec<Result<FolderListing, Fail>>, Fail> {
        let condstore = self.has("CONDSTORE");
        let mut lines = Zeroizing::new(String::new());
        // Per folder: the tags of its EXAMINE and FETCH, or why it was not sent.
        let mut tags: Vec<Result<(String, String), Fail>> = Vec::new();
        for (_, raw) in folders {
            match quote(raw) {
                Ok(q) => {
                    let (e, f) = (self.tag(), self.tag());
                    let m = if condstore { " (CONDSTORE)" } else { "" };
                    lines.push_str(&format!("{e} EXAMINE {q}{m}\r\n"));
                    lines.push_str(&format!("{f} UID FETCH 1:* {METADATA}\r\n"));
                    tags.push(Ok((e, f)));
                }
                Err(m) => tags.push(Err(Fail::Refused(m))),
            }
        }
        self.selected = None;
        send(&mut self.client, lines.as_bytes()).await?;
        let mut out = Vec::with_capacity(folders.len());
        for ((folder, raw), tag) in folders.iter().zip(tags) {
            let (etag, ftag) = match tag {
                Ok(t) => t,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            let mut sel = Selected {
                mailbox: raw.to_string(),
                ..Default::default()
            };
            let examined = read_until(&mut self.client, &etag, "EXAMINE", |r| sel.learn(r)).await?;
            let mut metas = Vec::new();
            let fetched = read_until(&mut self.client, &ftag, "UID FETCH", |r| {
                if let Response::Fetch(_, attrs) = r {
                    if let Some(m) = meta_of(attrs) {
                        metas.push(m);
                    }
                }
            })
            .await?;
            if let Err(e) = examined {
                // Its FETCH ran with no folder open and was refused: nothing to use.
                out.push(Err(e));
                continue;
            }
            if sel.uidvalidity == 0 {
                out.push(Err(Fail::Refused(format!(
                    "the server gave no UIDVALIDITY for {raw:?}"
                ))));
                continue;
            }
            let mut listing = FolderListing {
                items: Vec::new(),
                bad: Vec::new(),
                cursor: sel.cursor(),
                delta: None,
            };
            // An empty folder's `1:*` may be refused; it has nothing to list anyway.
            match fetched {
                Err(e) if sel.exists > 0 => {
                    out.push(Err(e));
                    continue;
                }
                _ => {}
            }
            for m in metas {
                push_meta(&mut listing, folder, sel.uidvalidity, m);
            }
            out.push(Ok(listing));
        }
        Ok(out)
    }

    async fn ensure_selected(&mut self, mailbox: &str) -> Result<Selected, Fail> {
        match &self.selected {
            Some(s) if s.mailbox == mailbox => Ok(s.clone()),
            _ => self.examine(mailbox).await,
        }
    }

    async fn uid_search_all(&mut self) -> Result<Vec<u32>, Fail> {
        let mut uids = Vec::new();
        self.command("UID SEARCH ALL", |r| {
            if let Response::MailboxData(MailboxDatum::Search(v)) = r {
                uids.extend_from_slice(v);
            }
        })
        .await?;
        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }

    /// `UID FETCH <args>` asking for flags: UID → flags.
    async fn fetch_flags(&mut self, args: &str) -> Result<BTreeMap<u32, Flags>, Fail> {
        let mut out = BTreeMap::new();
        self.command(&format!("UID FETCH {args}"), |r| {
            if let Response::Fetch(_, attrs) = r {
                let m = meta_of(attrs);
                if let (Some(uid), Some(flags)) =
                    (m.as_ref().map(|m| m.uid), m.and_then(|m| m.flags))
                {
                    out.insert(uid, flags);
                }
            }
        })
        .await?;
        Ok(out)
    }

    /// What changed since `modseq` (RFC 7162): UID → flags of every message whose
    /// modseq is higher (re-flagged and new ones), and with QRESYNC the UIDs expunged
    /// since (`VANISHED (EARLIER)`, possibly with UIDs never seen).
    async fn fetch_changes(&mut self, modseq: u64) -> Result<Changes, Fail> {
        let qresync = self.qresync;
        let cmd = if qresync {
            format!("UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
        } else {
            format!("UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE {modseq})")
        };
        let mut changed = BTreeMap::new();
        let mut vanished = qresync.then(Vec::new);
        self.command(&cmd, |r| match r {
            Response::Fetch(_, attrs) => {
                let m = meta_of(attrs);
                if let (Some(uid), Some(flags)) =
                    (m.as_ref().map(|m| m.uid), m.and_then(|m| m.flags))
                {
                    changed.insert(uid, flags);
                }
            }
            Response::Vanished { uids, .. } => {
                if let Some(v) = vanished.as_mut() {
                    v.extend(uids.iter().cloned());
                }
            }
            _ => {}
        })
        .await?;
        Ok(Changes { changed, vanished })
    }

    /// Full listing metadata for the UIDs in `set`.
    async fn fetch_meta(&mut self, set: &str) -> Result<Vec<Meta>, Fail> {
        let mut out = Vec::new();
        self.command(&format!("UID FETCH {set} {METADATA}"), |r| {
            if let Response::Fetch(_, attrs) = r {
                if let Some(m) = meta_of(attrs) {
                    out.push(m);
                }
            }
        })
        .await?;
        Ok(out)
    }

    /// `len` bytes of a body from `offset`; None if the message is not there (expunged).
    async fn fetch_piece(
        &mut self,
        mailbox: &str,
        uidvalidity: u32,
        uid: u32,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, Fail> {
        let sel = self.ensure_selected(mailbox).await?;
        if sel.uidvalidity != uidvalidity {
            return Err(Fail::Refused(format!(
                "the folder's UIDVALIDITY changed from {uidvalidity} to {} since it was \
                 listed; run the move again to list it afresh",
                sel.uidvalidity
            )));
        }
        let mut data = None;
        self.command(
            &format!("UID FETCH {uid} (UID BODY.PEEK[]<{offset}.{len}>)"),
            |r| {
                if let Response::Fetch(_, attrs) = r {
                    if !attrs
                        .iter()
                        .any(|a| matches!(a, AttributeValue::Uid(u) if *u == uid))
                    {
                        return;
                    }
                    for a in attrs {
                        if let AttributeValue::BodySection {
                            section: None,
                            data: d,
                            ..
                        } = a
                        {
                            data = Some(d.as_ref().map(|d| d.to_vec()).unwrap_or_default());
                        }
                    }
                }
            },
        )
        .await?;
        Ok(data)
    }
}

/// Longest NAMESPACE answer read (a few namespaces take a few hundred bytes).
const NAMESPACE_MAX: usize = 64 * 1024;

/// Reads one response line (with any literals it announces) off the raw stream.
async fn read_raw_response(io: &mut Tls, total: &mut usize) -> Result<Vec<u8>, Fail> {
    let mut line = Vec::new();
    let lost = |e: io::Error| Fail::Lost(format!("connection lost: {e}"));
    loop {
        let b = io.read_u8().await.map_err(lost)?;
        line.push(b);
        *total += 1;
        if *total > NAMESPACE_MAX {
            return Err(Fail::Lost(format!(
                "the server's NAMESPACE answer is over {NAMESPACE_MAX} bytes"
            )));
        }
        if !line.ends_with(b"\r\n") {
            continue;
        }
        // `{n}` or `{n+}` before the line end announces n bytes of literal.
        let body = &line[..line.len() - 2];
        let literal = body
            .strip_suffix(b"}")
            .and_then(|b| b.iter().rposition(|&c| c == b'{').map(|i| &b[i + 1..]))
            .map(|n| n.strip_suffix(b"+").unwrap_or(n))
            .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok());
        match literal {
            Some(n) if *total + n <= NAMESPACE_MAX => {
                let mut buf = vec![0u8; n];
                io.read_exact(&mut buf).await.map_err(lost)?;
                *total += n;
                line.extend_from_slice(&buf);
            }
            Some(_) => {
                return Err(Fail::Lost(format!(
                    "the server's NAMESPACE answer is over {NAMESPACE_MAX} bytes"
                )))
            }
            None => return Ok(line),
        }
    }
}

fn login_failure(user: &str, e: Fail) -> Fail {
    match e {
        Fail::Refused(m) => Fail::Fatal(format!("the server refused the login of {user:?}: {m}")),
        other => other,
    }
}

/// The parts of a FETCH response a listing uses; None without a UID (an unsolicited
/// flag update).
fn meta_of(attrs: &[AttributeValue<'_>]) -> Option<Meta> {
    let mut m = Meta::default();
    let mut uid = None;
    for a in attrs {
        match a {
            AttributeValue::Uid(u) => uid = Some(*u),
            AttributeValue::Flags(f) => {
                m.flags = Some(flags_from_imap(f.iter().map(|f| f.as_ref())))
            }
            AttributeValue::InternalDate(d) => m.internal_date = parse_internal_date(d),
            AttributeValue::Rfc822Size(s) => m.size = Some(*s),
            AttributeValue::BodySection {
                section: Some(SectionPath::Full(MessageSection::Header)),
                data,
                ..
            } => m.message_id = Some(message_id(data.as_deref().unwrap_or_default())),
            _ => {}
        }
    }
    m.uid = uid?;
    Some(m)
}

// === Pure helpers ===

/// One namespace of a NAMESPACE answer: its prefix and hierarchy delimiter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// The prefix, as the server spells it (`INBOX.`, `#shared/`, `""`).
    pub prefix: String,
    /// The hierarchy delimiter, if any.
    pub delimiter: Option<String>,
}

/// The server's namespaces (RFC 2342), each kind in the server's order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// The user's own; the first holds INBOX.
    pub personal: Vec<Namespace>,
    /// Other users' mailboxes.
    pub other_users: Vec<Namespace>,
    /// Shared mailboxes.
    pub shared: Vec<Namespace>,
}

/// An IMAP s-expression, as far as NAMESPACE needs one.
#[derive(Debug)]
enum Sx {
    Nil,
    Str(String),
    List(Vec<Sx>),
}

fn sx_parse(b: &[u8], i: &mut usize, depth: usize) -> Option<Sx> {
    while b.get(*i) == Some(&b' ') {
        *i += 1;
    }
    match *b.get(*i)? {
        b'(' if depth < 8 => {
            *i += 1;
            let mut items = Vec::new();
            loop {
                while b.get(*i) == Some(&b' ') {
                    *i += 1;
                }
                if *b.get(*i)? == b')' {
                    *i += 1;
                    return Some(Sx::List(items));
                }
                items.push(sx_parse(b, i, depth + 1)?);
            }
        }
        b'"' => {
            *i += 1;
            let mut out = Vec::new();
            loop {
                match *b.get(*i)? {
                    b'\\' => {
                        out.push(*b.get(*i + 1)?);
                        *i += 2;
                    }
                    b'"' => {
                        *i += 1;
                        return String::from_utf8(out).ok().map(Sx::Str);
                    }
                    c => {
                        out.push(c);
                        *i += 1;
                    }
                }
            }
        }
        b'{' => {
            let close = b[*i..].iter().position(|&c| c == b'}')? + *i;
            let n: usize = std::str::from_utf8(&b[*i + 1..close])
                .ok()?
                .trim_end_matches('+')
                .parse()
                .ok()?;
            let start = close + 3; // "}\r\n"
            let end = start.checked_add(n)?;
            let text = std::str::from_utf8(b.get(start..end)?).ok()?.to_string();
            *i = end;
            Some(Sx::Str(text))
        }
        _ => {
            let start = *i;
            while let Some(&c) = b.get(*i) {
                if matches!(c, b' ' | b'(' | b')' | b'\r' | b'\n') {
                    break;
                }
                if matches!(c, b'"' | b'{' | b'\\') {
                    return None; // not an atom character
                }
                *i += 1;
            }
            let atom = std::str::from_utf8(&b[start..*i]).ok()?;
            match atom {
                "" => None,
                a if a.eq_ignore_ascii_case("NIL") => Some(Sx::Nil),
                a => Some(Sx::Str(a.to_string())),
            }
        }
    }
}

/// Parses what follows `* NAMESPACE ` (three namespace lists, each NIL or a list of
/// `(prefix delimiter *extension)`); None if it is not that.
pub fn parse_namespace(b: &[u8]) -> Option<NamespaceInfo> {
    let mut i = 0;
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let list = match sx_parse(b, &mut i, 0)? {
            Sx::Nil => Vec::new(),
            Sx::List(entries) => {
                let mut out = Vec::new();
                for e in entries {
                    let Sx::List(parts) = e else { return None };
                    let mut parts = parts.into_iter();
                    let Some(Sx::Str(prefix)) = parts.next() else {
                        return None;
                    };
                    let delimiter = match parts.next()? {
                        Sx::Str(d) => Some(d),
                        Sx::Nil => None,
                        Sx::List(_) => return None,
                    };
                    out.push(Namespace { prefix, delimiter });
                }
                out
            }
            Sx::Str(_) => return None,
        };
        kinds.push(list);
    }
    let rest = &b[i..];
    if !rest.iter().all(|c| matches!(c, b' ' | b'\r' | b'\n')) {
        return None;
    }
    let shared = kinds.pop()?;
    let other_users = kinds.pop()?;
    let personal = kinds.pop()?;
    Some(NamespaceInfo {
        personal,
        other_users,
        shared,
    })
}

/// How a listing turns the server's mailbox names into folders.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameMap {
    /// The personal namespace's prefix, mapped away (`INBOX.`); empty: none.
    pub prefix: String,
    /// Prefixes of namespaces not listed (other users', shared).
    pub hidden: Vec<String>,
}

impl NameMap {
    /// The map for a server that said `ns` (None: no NAMESPACE), with the admin's
    /// `prefix` (`--source-prefix`) winning over the server's and `namespaces` saying
    /// whether others' and shared namespaces are listed.
    pub fn new(ns: Option<&NamespaceInfo>, prefix: Option<&str>, namespaces: Namespaces) -> Self {
        let detected = ns
            .and_then(|n| n.personal.first())
            .map(|p| p.prefix.clone())
            .unwrap_or_default();
        let hidden = match (ns, namespaces) {
            (Some(n), Namespaces::Personal) => n
                .other_users
                .iter()
                .chain(&n.shared)
                .map(|s| s.prefix.clone())
                .filter(|p| !p.is_empty())
                .collect(),
            _ => Vec::new(),
        };
        NameMap {
            prefix: prefix.map_or(detected, str::to_string),
            hidden,
        }
    }

    fn is_hidden(&self, raw: &str, delimiter: Option<&str>) -> bool {
        self.hidden.iter().any(|h| {
            raw.starts_with(h.as_str()) || delimiter.is_some_and(|d| h.strip_suffix(d) == Some(raw))
        })
    }

    /// The name under the personal prefix, if `raw` is under it.
    fn strip<'a>(&self, raw: &'a str, delimiter: Option<&str>) -> Option<&'a str> {
        if self.prefix.is_empty() {
            return None;
        }
        let rest = raw.strip_prefix(self.prefix.as_str())?;
        let rest = match delimiter {
            Some(d) if !d.is_empty() && !self.prefix.ends_with(d) => rest.strip_prefix(d)?,
            _ => rest,
        };
        (!rest.is_empty()).then_some(rest)
    }
}

/// Folders of a LIST answer.
#[derive(Debug, Default)]
struct Mapped {
    /// Folder → the server's mailbox name.
    folders: BTreeMap<FolderName, String>,
    /// Folder → the role the server announced.
    roles: BTreeMap<FolderName, Role>,
    bad: Vec<BadItem>,
}

/// Maps LIST entries to folders (see [`NameMap`]): names under the personal prefix
/// lose it (`INBOX.Archive.2019` → `Archive/2019`), INBOX stays INBOX, names outside it
/// keep their full name, and a stripped name that another mailbox has already keeps its
/// full name too, so no two mailboxes arrive in one folder and none is left out.
/// Mailboxes of hidden namespaces are not listed; names that cannot be folders are bad
/// items.
fn map_folders(entries: Vec<ListEntry>, map: &NameMap) -> Mapped {
    let mut out = Mapped::default();
    // Names outside the prefix first: they keep their names whatever the prefixed ones
    // would strip to.
    let (prefixed, plain): (Vec<ListEntry>, Vec<ListEntry>) = entries
        .into_iter()
        .filter(|e| e.selectable && !map.is_hidden(&e.name, e.delimiter.as_deref()))
        .partition(|e| map.strip(&e.name, e.delimiter.as_deref()).is_some());
    for e in plain.into_iter().chain(prefixed) {
        let shown = e.name.escape_debug().to_string();
        let delimiter = e.delimiter.as_deref();
        let full = folder_from_imap(&e.name, delimiter);
        let stripped = map
            .strip(&e.name, delimiter)
            .map(|s| folder_from_imap(s, delimiter))
            .and_then(Result::ok)
            .filter(|f| !out.folders.contains_key(f));
        let folder = match (stripped, full) {
            (Some(f), _) | (None, Ok(f)) => f,
            (None, Err(reason)) => {
                out.bad.push(BadItem {
                    item: shown,
                    reason: format!("folder not moved: {reason}"),
                });
                continue;
            }
        };
        if let Err(reason) = quote(&e.name) {
            out.bad.push(BadItem {
                item: shown,
                reason: format!("folder not moved: {reason}"),
            });
            continue;
        }
        if let Some(first) = out.folders.get(&folder) {
            out.bad.push(BadItem {
                item: shown,
                reason: format!(
                    "folder not moved: it maps to {folder}, like {first:?}, which is moved"
                ),
            });
            continue;
        }
        if let Some(role) = e.role {
            out.roles.insert(folder.clone(), role);
        }
        out.folders.insert(folder, e.name);
    }
    out
}

/// Maps IMAP flags to mailferry's [`Flags`]: `\Seen` S, `\Answered` R, `\Flagged` F,
/// `\Deleted` T, `\Draft` D and the `$Forwarded` keyword P; every other keyword
/// (`$Junk`, `$Label1`, `ProjectX`, ...) is kept as a keyword, as the server spells it.
/// `\Recent` is a session flag and is dropped, as is any other `\`-flag (the system
/// flags are the five above). A keyword [`Flags::keyword_ok`] refuses (over 255 bytes)
/// is dropped with a warning: no IMAP server hands out such atoms in practice.
pub fn flags_from_imap<'a>(flags: impl IntoIterator<Item = &'a str>) -> Flags {
    let mut letters = String::new();
    let mut keywords: Vec<&str> = Vec::new();
    for f in flags {
        let l = match f.to_ascii_lowercase().as_str() {
            "\\seen" => 'S',
            "\\answered" => 'R',
            "\\flagged" => 'F',
            "\\deleted" => 'T',
            "\\draft" => 'D',
            "$forwarded" => 'P',
            _ => {
                if !f.starts_with('\\') {
                    match Flags::keyword_ok(f) {
                        Ok(()) => keywords.push(f),
                        Err(why) => tracing::warn!(keyword = %f, "IMAP keyword not carried: {why}"),
                    }
                }
                continue;
            }
        };
        letters.push(l);
    }
    Flags::new(&letters, keywords).expect("letters and checked keywords")
}

/// Parses an IMAP INTERNALDATE (`17-Jul-1996 02:44:25 -0700`, day possibly
/// space-padded) to Unix seconds.
pub fn parse_internal_date(s: &str) -> Option<i64> {
    let mut parts = s.split_whitespace();
    let (date, time, zone) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let mut d = date.split('-');
    let day: u32 = d.next()?.parse().ok()?;
    let mon = d.next()?;
    let year: i64 = d.next()?.parse().ok()?;
    let month = calendar::month_from_abbrev(mon)?;
    let mut t = time.split(':');
    let (h, m, sec): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if !(1..=31).contains(&day)
        || !(0..24).contains(&h)
        || !(0..60).contains(&m)
        || !(0..61).contains(&sec)
    {
        return None;
    }
    // The zone's digits are not range-checked: INTERNALDATE comes from the server.
    let (sign, zh, zm) = calendar::hhmm_offset(zone)?;
    let offset = sign * (zh * 3600 + zm * 60);
    // A day past the month's end (31-Feb) runs on into March, as it always has here.
    let days = calendar::days_from_month_start(year, month, day)?;
    Some(days * calendar::DAY + h * 3600 + m * 60 + sec - offset)
}

/// The Message-ID field value in a header block (unfolded, trimmed; empty if none).
pub fn message_id(header: &[u8]) -> String {
    let text = String::from_utf8_lossy(header);
    let mut value: Option<String> = None;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(v) = value.as_mut() {
            if line.starts_with([' ', '\t']) {
                v.push(' ');
                v.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((name, v)) = line.split_once(':') {
            if name.trim_end().eq_ignore_ascii_case("message-id") {
                value = Some(v.trim().to_string());
            }
        }
    }
    value.unwrap_or_default().trim().to_string()
}

/// The identity that survives a UIDVALIDITY change: hex SHA-256 of
/// `"{message_id}\n{internal_date}\n{size}"` (internal date in Unix seconds).
pub fn ident(message_id: &str, internal_date: i64, size: u64) -> String {
    mailferry_core::sha256_hex(format!("{message_id}\n{internal_date}\n{size}").as_bytes())
}

/// Maps an IMAP mailbox name (modified UTF-7, `delimiter`-separated) to a folder.
/// Anything that does not decode, has a component containing `/`, or is not a valid
/// [`FolderName`] (`..`, control characters, too long) is refused with the reason.
pub fn folder_from_imap(raw: &str, delimiter: Option<&str>) -> Result<FolderName, String> {
    if raw.eq_ignore_ascii_case("INBOX") {
        return Ok(FolderName::inbox());
    }
    let parts: Vec<&str> = match delimiter {
        Some(d) if !d.is_empty() => raw.split(d).collect(),
        _ => vec![raw],
    };
    let mut decoded = Vec::with_capacity(parts.len());
    for p in parts {
        let part = mutf7::decode(p).map_err(|e| format!("name is not modified UTF-7: {e}"))?;
        if part.contains('/') {
            return Err(format!("component {part:?} contains '/'"));
        }
        decoded.push(part);
    }
    FolderName::parse(&decoded.join("/")).map_err(|e| e.to_string())
}

/// An IMAP quoted string; names that would need a literal (CR, LF, NUL, 8-bit) are
/// refused rather than sent half-escaped.
fn quote(s: &str) -> Result<String, String> {
    if s.bytes()
        .any(|b| b == 0 || b == b'\r' || b == b'\n' || b >= 0x80)
    {
        return Err(format!(
            "{:?} has a byte that cannot be sent in an IMAP quoted string",
            s
        ));
    }
    Ok(format!(
        "\"{}\"",
        s.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// UID sets for sorted, distinct `uids`, at most `max_ranges` ranges each.
pub fn uid_sets(uids: &[u32], max_ranges: usize) -> Vec<String> {
    let mut sets = Vec::new();
    let mut cur = Vec::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end.wrapping_add(1) {
            end = uids[i + 1];
            i += 1;
        }
        i += 1;
        cur.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        });
        if cur.len() == max_ranges.max(1) {
            sets.push(cur.join(","));
            cur.clear();
        }
    }
    if !cur.is_empty() {
        sets.push(cur.join(","));
    }
    sets
}

fn source_id(uidvalidity: u32, uid: u32) -> SourceId {
    SourceId::parse(&format!("{uidvalidity}-{uid}")).expect("digits and '-' make a valid id")
}

/// `(uidvalidity, uid)` of one of our source ids.
pub fn parse_source_id(id: &SourceId) -> Option<(u32, u32)> {
    let (v, u) = id.as_str().split_once('-')?;
    Some((v.parse().ok()?, u.parse().ok()?))
}

// === Piece reader ===

/// Fetches byte ranges of one message.
pub trait Pieces {
    /// Up to `len` bytes from `offset` (fewer only at the end of the message).
    fn piece(&mut self, offset: u64, len: u64) -> io::Result<Vec<u8>>;
}

/// Reads a message of listed size `size` in pieces of at most `piece` bytes. The last
/// request asks for one byte more than the listed size leaves, so a message that grew
/// (or a server whose RFC822.SIZE is wrong) shows up as a size mismatch instead of a
/// silently truncated copy, without an extra round trip per message.
pub struct PieceReader<P> {
    src: P,
    size: u64,
    piece: u64,
    offset: u64,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<P: Pieces> PieceReader<P> {
    /// A reader at offset 0.
    pub fn new(src: P, size: u64, piece: u64) -> Self {
        PieceReader {
            src,
            size,
            piece: piece.max(1),
            offset: 0,
            buf: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl<P: Pieces> Read for PieceReader<P> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            let want = self.piece.min(self.size.saturating_sub(self.offset) + 1);
            let got = self.src.piece(self.offset, want)?;
            if got.len() as u64 > want {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the server sent {} bytes for a {want}-byte partial fetch",
                        got.len()
                    ),
                ));
            }
            self.done = (got.len() as u64) < want;
            self.offset += got.len() as u64;
            self.buf = got;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

// === impl Imap ===

/// An IMAP mailbox as a [`Source`].
pub struct Imap {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    /// Taken in `Drop` (a runtime must not be dropped inside another's async context).
    rt: Option<tokio::runtime::Runtime>,
    cfg: Arc<Config>,
    conn: Mutex<Option<Conn>>,
    /// Folder → the server's own mailbox name, from the last LIST.
    names: Mutex<HashMap<FolderName, String>>,
    /// Nanoseconds spent waiting because the server said it was busy.
    backoff_nanos: Arc<std::sync::atomic::AtomicU64>,
    /// Connections a pass reads with.
    connections: usize,
    /// Bytes fetched ahead per connection.
    window_bytes: u64,
    /// The batch's budget of connections to this server.
    limit: Option<super::connections::ConnectionLimit>,
    /// The pass's reading ahead, once it said in which order it reads.
    fetcher: Mutex<Option<Arc<fetch::Fetcher>>>,
    /// The place in `limit` that the listing connection (`conn`) holds.
    conn_permit: Mutex<Option<super::connections::ConnectionPermit>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            let _guard = rt.enter();
            if let Ok(conn) = self.conn.get_mut() {
                conn.take();
            }
            drop(_guard);
            rt.shutdown_background();
        }
    }
}

impl Imap {
    /// An IMAP source for `spec`, with credentials and trust from `options`. Reads the
    /// secret and the CA now (so a missing file is a configuration error up front); it
    /// connects only when listing.
    pub fn new(spec: &str, options: &SourceOptions) -> Result<Imap, String> {
        Self::with_backoff(spec, options, Backoff::default())
    }

    /// As [`Imap::new`], with a chosen reconnect policy.
    pub fn with_backoff(
        spec: &str,
        options: &SourceOptions,
        backoff: Backoff,
    ) -> Result<Imap, String> {
        let server = ServerSpec::parse(spec)?;
        let credential = credential(options)?;
        let (tls, _) = tls_config(options)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the IMAP client's runtime: {e}"))?;
        let connections = options
            .connections
            .unwrap_or(super::connections::DEFAULT_CONNECTIONS)
            .clamp(1, super::connections::MAX_CONNECTIONS);
        Ok(Imap {
            inner: Arc::new(Inner {
                url: server.url(),
                rt: Some(rt),
                cfg: Arc::new(Config {
                    server,
                    tls,
                    credential,
                    backoff,
                    prefix: options.source_prefix.clone(),
                    namespaces: options.namespaces,
                }),
                conn: Mutex::new(None),
                names: Mutex::new(HashMap::new()),
                backoff_nanos: Default::default(),
                connections,
                window_bytes: super::connections::window_per_connection(
                    options.window_bytes,
                    connections,
                ),
                limit: options.connection_limit.clone(),
                fetcher: Mutex::new(None),
                conn_permit: Mutex::new(None),
            }),
        })
    }
}

impl Inner {
    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("the runtime lives until drop")
    }

    /// The listing connection, with its place in the batch's connection budget taken
    /// first (waiting for one if the other moves hold them all).
    fn conn(&self) -> std::sync::MutexGuard<'_, Option<Conn>> {
        if let Some(limit) = &self.limit {
            let mut permit = self.conn_permit.lock().unwrap_or_else(|p| p.into_inner());
            if permit.is_none() {
                *permit = Some(self.rt().block_on(limit.acquire()));
            }
        }
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the listing connection and gives its place back: the pass's connections
    /// need it more.
    fn close_conn(&self) {
        let _guard = self.rt().enter();
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.conn_permit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    fn error(&self, e: Fail) -> AgentError {
        AgentError::Source {
            path: PathBuf::from(&self.url),
            reason: e.to_string(),
        }
    }

    /// Runs `op` on a logged-in connection, opening one when there is none and again
    /// when it drops, waiting between attempts; a refusal or fatal error is returned at
    /// once.
    async fn retrying<T>(
        &self,
        slot: &mut Option<Conn>,
        what: &str,
        mut op: impl AsyncFnMut(&mut Conn) -> Result<T, Fail>,
    ) -> Result<T, Fail> {
        let policy = self.cfg.backoff;
        let mut attempt = 0u32;
        loop {
            let err = match slot {
                Some(conn) => match op(conn).await {
                    Ok(v) => return Ok(v),
                    Err(e) => e,
                },
                None => match Conn::open(&self.cfg).await {
                    Ok(c) => {
                        *slot = Some(c);
                        continue;
                    }
                    Err(e) => e,
                },
            };
            match &err {
                Fail::Lost(_) => *slot = None,
                Fail::Busy(_) => {}
                Fail::Refused(_) | Fail::Fatal(_) => return Err(err),
            }
            attempt += 1;
            if attempt > policy.retries {
                return Err(match err {
                    Fail::Lost(m) | Fail::Busy(m) => {
                        Fail::Lost(format!("{what}: gave up after {attempt} attempts: {m}"))
                    }
                    other => other,
                });
            }
            // A server that says how long to wait is obeyed (up to 10 minutes, with a
            // little jitter so many agents do not come back at once); otherwise the
            // capped exponential backoff.
            let hint = match &err {
                Fail::Busy(m) => crate::throttle::backoff_hint(m),
                _ => None,
            };
            let wait = match hint {
                Some(h) => {
                    let h = h.min(Duration::from_secs(600));
                    h + Duration::from_millis(random_u64() % (h.as_millis() as u64 / 10 + 1))
                }
                None => policy.wait(attempt, random_u64()),
            };
            if matches!(err, Fail::Busy(_)) {
                self.backoff_nanos
                    .fetch_add(wait.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            tracing::warn!(
                "{} {what}: {err}; retrying in {} ms ({attempt}/{})",
                self.url,
                wait.as_millis(),
                policy.retries
            );
            tokio::time::sleep(wait).await;
        }
    }

    async fn list_async(
        &self,
        slot: &mut Option<Conn>,
        prior: &dyn PriorLookup,
    ) -> Result<Listing, Fail> {
        let mapped = self.mapped(slot).await?;
        let mut out = Listing {
            bad: mapped.bad,
            roles: mapped.roles,
            ..Listing::default()
        };
        let folders = mapped.folders;
        prior.learn_roles(&out.roles);
        // With a virtual folder (\All, \Flagged) the filter must see every message of
        // every real folder to tell which messages are only in the virtual one: no
        // folder is listed as a delta.
        let no_delta = NoDelta(prior);
        let prior: &dyn PriorLookup = if out.roles.values().any(|r| r.is_virtual()) {
            &no_delta
        } else {
            prior
        };
        // Folders no earlier pass acknowledged anything of are listed together.
        let fresh: Vec<(&FolderName, &str)> = folders
            .iter()
            .filter(|(f, _)| prior.count(f) == 0)
            .map(|(f, r)| (f, r.as_str()))
            .collect();
        let mut fresh_listed: HashMap<FolderName, Result<FolderListing, Fail>> = if fresh.len() > 1
        {
            let listed = self
                .retrying(slot, "listing folders", async |c: &mut Conn| {
                    c.list_fresh(&fresh).await
                })
                .await;
            match listed {
                Ok(listed) => fresh
                    .iter()
                    .map(|(f, _)| (*f).clone())
                    .zip(listed)
                    .collect(),
                Err(Fail::Fatal(m)) => return Err(Fail::Fatal(m)),
                // Each folder is tried again on its own below, with its own retries.
                Err(_) => HashMap::new(),
            }
        } else {
            HashMap::new()
        };
        for (folder, raw) in &folders {
            let listed = match fresh_listed.remove(folder) {
                Some(l) => l,
                None => {
                    self.retrying(slot, &format!("folder {folder}"), async |c: &mut Conn| {
                        list_folder(c, raw, folder, prior).await
                    })
                    .await
                }
            };
            match listed {
                Ok(f) => {
                    if let Some(d) = f.delta {
                        out.delta.insert(folder.clone(), d);
                    }
                    out.items.extend(f.items);
                    out.bad.extend(f.bad);
                    out.cursors.insert(folder.clone(), f.cursor.to_string());
                }
                Err(Fail::Fatal(m)) => return Err(Fail::Fatal(m)),
                Err(e) => {
                    out.incomplete.insert(folder.clone());
                    out.bad.push(BadItem {
                        item: folder.to_string(),
                        reason: format!(
                            "folder not listed: {e}; nothing of it is deleted at the \
                             destination in this pass"
                        ),
                    });
                }
            }
        }
        *self.names.lock().unwrap_or_else(|p| p.into_inner()) = folders.into_iter().collect();
        out.items
            .sort_by(|a, b| (&a.folder, &a.source_id).cmp(&(&b.folder, &b.source_id)));
        Ok(out)
    }

    /// LIST (and the NAMESPACE of the connection), mapped to folders.
    async fn mapped(&self, slot: &mut Option<Conn>) -> Result<Mapped, Fail> {
        let (entries, ns) = self
            .retrying(slot, "LIST", async |c: &mut Conn| {
                Ok((c.list_mailboxes().await?, c.namespace.clone()))
            })
            .await?;
        let map = NameMap::new(ns.as_ref(), self.cfg.prefix.as_deref(), self.cfg.namespaces);
        if !map.prefix.is_empty() || !map.hidden.is_empty() {
            tracing::debug!(
                "{}: personal prefix {:?} mapped away; namespaces not listed: {:?}",
                self.url,
                map.prefix,
                map.hidden
            );
        }
        Ok(map_folders(entries, &map))
    }

    /// The server's name of `folder`, listing again if this process has not listed it.
    fn mailbox_name(&self, folder: &FolderName) -> io::Result<String> {
        if let Some(n) = self
            .names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(folder)
        {
            return Ok(n.clone());
        }
        let mut slot = self.conn();
        let mapped = self
            .rt()
            .block_on(self.mapped(&mut slot))
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        for (f, raw) in mapped.folders {
            names.entry(f).or_insert(raw);
        }
        names.get(folder).cloned().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("folder {folder} is no longer on the server"),
            )
        })
    }
}

/// Earlier passes seen through a lookup that never allows a delta listing.
struct NoDelta<'a>(&'a dyn PriorLookup);

impl PriorLookup for NoDelta<'_> {
    fn cursor(&self, folder: &FolderName) -> Option<String> {
        self.0.cursor(folder)
    }
    fn count(&self, folder: &FolderName) -> usize {
        self.0.count(folder)
    }
    fn bytes(&self, folder: &FolderName) -> u64 {
        self.0.bytes(folder)
    }
    fn items(&self, folder: &FolderName) -> BTreeMap<SourceId, PriorItem> {
        self.0.items(folder)
    }
    fn get(&self, folder: &FolderName, id: &SourceId) -> Option<PriorItem> {
        self.0.get(folder, id)
    }
    fn may_list_delta(&self, _folder: &FolderName) -> bool {
        false
    }
    fn learn_roles(&self, roles: &BTreeMap<FolderName, Role>) {
        self.0.learn_roles(roles)
    }
}

/// What a CHANGEDSINCE fetch said ([`Conn::fetch_changes`]).
struct Changes {
    changed: BTreeMap<u32, Flags>,
    /// UID ranges expunged since; `None` without QRESYNC.
    vanished: Option<Vec<std::ops::RangeInclusive<u32>>>,
}

/// What [`list_delta`] found.
enum DeltaOutcome {
    /// The folder's changes, listed.
    Listed(DeltaFolder),
    /// It must be listed in full; what was fetched can be used for that.
    Full(Option<Changes>),
}

/// What listing one folder found.
struct FolderListing {
    items: Vec<SourceItem>,
    bad: Vec<BadItem>,
    cursor: Cursor,
    /// Listed as a change against the checkpoint ([`Listing::delta`]).
    delta: Option<DeltaFolder>,
}

fn item_from_prior(
    folder: &FolderName,
    uv: u32,
    uid: u32,
    p: &PriorItem,
    flags: Option<&Flags>,
) -> SourceItem {
    SourceItem {
        folder: folder.clone(),
        source_id: source_id(uv, uid),
        flags: flags.cloned().unwrap_or_else(|| p.flags.clone()),
        internal_date: p.internal_date,
        size: p.size,
        location: Location::Imap {
            uidvalidity: uv,
            uid,
        },
        ident: p.ident.clone(),
    }
}

fn item_from_meta(folder: &FolderName, uv: u32, m: Meta) -> Result<SourceItem, BadItem> {
    let bad = |what: &str| BadItem {
        item: format!("{folder}/{}", source_id(uv, m.uid)),
        reason: format!("the server's FETCH gave no {what}; not moved"),
    };
    let size = u64::from(m.size.ok_or_else(|| bad("RFC822.SIZE"))?);
    let internal_date = m.internal_date.ok_or_else(|| bad("valid INTERNALDATE"))?;
    let msgid = m.message_id.unwrap_or_default();
    Ok(SourceItem {
        folder: folder.clone(),
        source_id: source_id(uv, m.uid),
        flags: m.flags.unwrap_or_default(),
        internal_date,
        size,
        location: Location::Imap {
            uidvalidity: uv,
            uid: m.uid,
        },
        ident: Some(ident(&msgid, internal_date, size)),
    })
}

/// Lists one folder, using what earlier passes acknowledged where the server can say
/// what changed since.
async fn list_folder(
    c: &mut Conn,
    raw: &str,
    folder: &FolderName,
    prior: &dyn PriorLookup,
) -> Result<FolderListing, Fail> {
    let sel = c.examine(raw).await?;
    let cursor = sel.cursor();
    let uv = sel.uidvalidity;
    let mut out = FolderListing {
        items: Vec::new(),
        bad: Vec::new(),
        cursor,
        delta: None,
    };
    if sel.exists == 0 {
        return Ok(out);
    }
    let acknowledged = prior.count(folder);
    let since = prior
        .cursor(folder)
        .as_deref()
        .and_then(Cursor::parse)
        .filter(|pc| {
            pc.uidvalidity == uv
                && pc.highestmodseq > 0
                && sel.highestmodseq.is_some_and(|h| h >= pc.highestmodseq)
        });
    // A delta listing needs the server to say what changed (CONDSTORE), and every
    // message there at the last clean pass to be acknowledged.
    let all_acknowledged = since.is_some_and(|pc| {
        acknowledged > 0 && pc.exists as usize == acknowledged && prior.may_list_delta(folder)
    });
    let mut changes = None;
    if let Some(pc) = since.filter(|_| all_acknowledged) {
        match list_delta(c, folder, prior, &pc, &sel, &mut out).await? {
            DeltaOutcome::Listed(delta) => {
                out.delta = Some(delta);
                return Ok(out);
            }
            DeltaOutcome::Full(fetched) => changes = fetched,
        }
    }
    // Acknowledged items of this UIDVALIDITY; after a change none match, the folder is
    // listed in full, and the pass recognises moved messages by `ident`.
    let prior_items = if acknowledged > 0 {
        prior.items(folder)
    } else {
        BTreeMap::new()
    };
    let known: BTreeMap<u32, &PriorItem> = prior_items
        .iter()
        .filter_map(|(id, item)| match parse_source_id(id) {
            Some((v, uid)) if v == uv => Some((uid, item)),
            _ => None,
        })
        .collect();
    let mut new = Vec::new();
    if known.is_empty() {
        for m in c.fetch_meta("1:*").await? {
            push_meta(&mut out, folder, uv, m);
        }
        return Ok(out);
    }
    let (present, changed) = match since {
        Some(pc) => {
            let Changes { changed, vanished } = match changes {
                Some(ch) => ch,
                None => c.fetch_changes(pc.highestmodseq).await?,
            };
            // Every message there at the cursor was acknowledged: what is there now is
            // those not expunged since, plus those changed since (the new ones among
            // them). Checked against EXISTS; anything else asks for every UID.
            let from_vanished = vanished.filter(|_| all_acknowledged).and_then(|v| {
                let gone = |uid: &u32| v.iter().any(|r| r.contains(uid));
                let mut p: Vec<u32> = known.keys().copied().filter(|u| !gone(u)).collect();
                p.extend(changed.keys().copied().filter(|u| !known.contains_key(u)));
                p.sort_unstable();
                p.dedup();
                (p.len() == sel.exists as usize).then_some(p)
            });
            let present = match from_vanished {
                Some(p) => {
                    tracing::debug!("{folder}: listed from QRESYNC's VANISHED, without UID SEARCH");
                    p
                }
                None => c.uid_search_all().await?,
            };
            (present, changed)
        }
        None => {
            let all = c.fetch_flags("1:* (UID FLAGS)").await?;
            (all.keys().copied().collect(), all)
        }
    };
    for uid in present {
        match known.get(&uid) {
            Some(p) => out
                .items
                .push(item_from_prior(folder, uv, uid, p, changed.get(&uid))),
            None => new.push(uid),
        }
    }
    for set in uid_sets(&new, RANGES_PER_COMMAND) {
        for m in c.fetch_meta(&set).await? {
            push_meta(&mut out, folder, uv, m);
        }
    }
    Ok(out)
}

/// Lists what changed in a folder since the cursor `pc` of the last clean pass, whose
/// messages are all acknowledged: `Some` with the folder's delta (new and re-flagged
/// messages added to `out`), or `None` with nothing added if a message may be gone, so
/// the folder must be listed in full.
async fn list_delta(
    c: &mut Conn,
    folder: &FolderName,
    prior: &dyn PriorLookup,
    pc: &Cursor,
    sel: &Selected,
    out: &mut FolderListing,
) -> Result<DeltaOutcome, Fail> {
    let acknowledged = pc.exists as u64;
    let delta = DeltaFolder {
        acknowledged,
        bytes: prior.bytes(folder),
    };
    if *pc == out.cursor {
        return Ok(DeltaOutcome::Listed(delta)); // nothing changed at all
    }
    // New messages and flag changes both raise the modseq past the old HIGHESTMODSEQ
    // (RFC 7162), so one fetch names both.
    let changes = c.fetch_changes(pc.highestmodseq).await?;
    let changed = &changes.changed;
    let new: Vec<u32> = changed
        .keys()
        .copied()
        .filter(|uid| *uid >= pc.uidnext)
        .collect();
    // None gone: every acknowledged message plus the new ones make up what is there.
    if acknowledged + new.len() as u64 != u64::from(sel.exists) {
        return Ok(DeltaOutcome::Full(Some(changes)));
    }
    let uv = sel.uidvalidity;
    let mut items = Vec::new();
    let mut unknown = Vec::new();
    for (uid, flags) in changed.range(..pc.uidnext) {
        match prior.get(folder, &source_id(uv, *uid)) {
            Some(p) if p.flags == *flags => {}
            Some(p) => items.push(item_from_prior(folder, uv, *uid, &p, Some(flags))),
            // Not acknowledged although the cursor said all were: list it in full.
            None => unknown.push(*uid),
        }
    }
    if !unknown.is_empty() {
        return Ok(DeltaOutcome::Full(Some(changes)));
    }
    out.items.extend(items);
    for set in uid_sets(&new, RANGES_PER_COMMAND) {
        for m in c.fetch_meta(&set).await? {
            push_meta(out, folder, uv, m);
        }
    }
    Ok(DeltaOutcome::Listed(delta))
}

fn push_meta(out: &mut FolderListing, folder: &FolderName, uv: u32, m: Meta) {
    match item_from_meta(folder, uv, m) {
        Ok(i) => out.items.push(i),
        Err(b) => out.bad.push(b),
    }
}

/// Body pieces of one message, fetched through the source's shared connection.
struct ImapPieces {
    inner: Arc<Inner>,
    folder: FolderName,
    mailbox: Option<String>,
    uidvalidity: u32,
    uid: u32,
}

impl Pieces for ImapPieces {
    fn piece(&mut self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let mailbox = match &self.mailbox {
            Some(m) => m.clone(),
            None => {
                let m = self.inner.mailbox_name(&self.folder)?;
                self.mailbox = Some(m.clone());
                m
            }
        };
        let inner = &*self.inner;
        let mut slot = inner.conn();
        let (uv, uid) = (self.uidvalidity, self.uid);
        let got = inner
            .rt()
            .block_on(inner.retrying(
                &mut slot,
                &format!("fetching UID {uid} of {}", self.folder),
                async |c: &mut Conn| c.fetch_piece(&mailbox, uv, uid, offset, len).await,
            ))
            .map_err(|e| io::Error::other(e.to_string()))?;
        got.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("UID {uid} is no longer in {} at the source", self.folder),
            )
        })
    }
}

impl Source for Imap {
    fn describe(&self) -> String {
        self.inner.url.clone()
    }

    fn server_backoff(&self) -> Duration {
        Duration::from_nanos(
            self.inner
                .backoff_nanos
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    fn list(&self, prior: &dyn PriorLookup) -> Result<Listing, AgentError> {
        let inner = &*self.inner;
        let mut slot = inner.conn();
        inner
            .rt()
            .block_on(inner.list_async(&mut slot, prior))
            .map_err(|e| inner.error(e))
    }

    fn open(&self, item: &SourceItem) -> io::Result<Box<dyn Read + Send>> {
        let Location::Imap { uidvalidity, uid } = item.location else {
            return Err(io::Error::other(format!(
                "an IMAP item cannot be at {}",
                item.location
            )));
        };
        let pieces = ImapPieces {
            inner: self.inner.clone(),
            folder: item.folder.clone(),
            mailbox: None,
            uidvalidity,
            uid,
        };
        Ok(Box::new(PieceReader::new(pieces, item.size, PIECE_BYTES)))
    }

    fn prefetch(&self, order: &[SourceItem]) {
        let inner = &*self.inner;
        // The old order's fetching stops when its fetcher is dropped.
        inner
            .fetcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut names: HashMap<FolderName, Option<Arc<str>>> = HashMap::new();
        let mut units = Vec::with_capacity(order.len());
        for item in order {
            let Location::Imap { uidvalidity, uid } = item.location else {
                continue;
            };
            let mailbox = names.entry(item.folder.clone()).or_insert_with(|| {
                match inner.mailbox_name(&item.folder) {
                    Ok(m) => Some(Arc::from(m)),
                    Err(e) => {
                        tracing::warn!("{}: {}: not fetched ahead: {e}", inner.url, item.folder);
                        None
                    }
                }
            });
            let Some(mailbox) = mailbox.clone() else {
                continue;
            };
            units.push(fetch::Unit {
                folder: item.folder.clone(),
                mailbox,
                uidvalidity,
                uid,
                hint: item.size,
            });
        }
        if units.is_empty() {
            return;
        }
        inner.close_conn();
        let settings = fetch::Settings {
            cfg: inner.cfg.clone(),
            connections: inner.connections,
            window_bytes: inner.window_bytes,
            limit: inner.limit.clone(),
            backoff_nanos: inner.backoff_nanos.clone(),
            url: inner.url.clone(),
        };
        match fetch::Fetcher::start(units, settings) {
            Ok(f) => *inner.fetcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(f)),
            Err(e) => tracing::warn!("{}: cannot start reading ahead: {e}", inner.url),
        }
    }

    fn open_sized(&self, item: &SourceItem) -> io::Result<super::Opened> {
        let fetcher = self
            .inner
            .fetcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let found = match (&fetcher, &item.location) {
            (Some(f), Location::Imap { uidvalidity, uid }) => {
                f.find(&item.folder, *uidvalidity, *uid).map(|idx| (f, idx))
            }
            _ => None,
        };
        let Some((f, idx)) = found else {
            return Ok(super::Opened {
                reader: self.open(item)?,
                size: item.size,
                note: None,
            });
        };
        let (reader, size) = f.open(idx)?;
        let note = (size != item.size).then(|| {
            format!(
                "the server's RFC822.SIZE said {} bytes; it served {size}",
                item.size
            )
        });
        Ok(super::Opened {
            reader: Box::new(reader),
            size,
            note,
        })
    }
}

mod fetch;

#[cfg(test)]
mod tests;
