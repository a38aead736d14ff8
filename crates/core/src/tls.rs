//! rustls configuration builders shared by the agent, the proxy and the store nodes.
//!
//! Always the ring provider (never aws-lc-rs), TLS 1.3 preferred with TLS 1.2 as the
//! floor, and no way to build a client that skips certificate verification (a mail
//! server's certificate may be pinned exactly instead of chained: see
//! [`mail_client_config`]). Certificates for loopback and self-hosted deployments come
//! from a small local CA made with rcgen.
//! This module builds configurations; it opens no sockets and writes no files.

use crate::CoreError;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;

/// A certificate authority created on this machine, able to issue server certificates.
pub struct LocalCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A certificate chain with its private key.
pub struct Identity {
    /// Leaf first, then the issuing CA.
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 private key of the leaf. Secret: never logged.
    pub key: PrivatePkcs8KeyDer<'static>,
    /// The chain in PEM, when it was issued here or read from PEM.
    chain_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("chain_len", &self.chain.len())
            .field("key", &"[redacted]")
            .finish()
    }
}

fn tls_err(what: &str) -> impl FnOnce(rcgen::Error) -> CoreError + '_ {
    move |e| CoreError::Tls(format!("{what}: {e}"))
}

impl LocalCa {
    /// A fresh CA (ECDSA P-256) named `name`.
    pub fn generate(name: &str) -> Result<LocalCa, CoreError> {
        let key = rcgen::KeyPair::generate().map_err(tls_err("generating the CA key"))?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(tls_err("CA parameters"))?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key)
            .map_err(tls_err("self-signing the CA"))?;
        Ok(LocalCa { issuer })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// The CA certificate, PEM: what clients must trust.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses).
    pub fn issue_server(&self, names: &[&str]) -> Result<Identity, CoreError> {
        self.issue_leaf(
            names.iter().map(|s| s.to_string()).collect(),
            names.first().copied().unwrap_or("mailferry"),
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            "server",
        )
    }

    /// Issues a `role` ("server" or "client") certificate with a fresh key, signed by
    /// this CA, for `purpose`.
    fn issue_leaf(
        &self,
        names: Vec<String>,
        common_name: &str,
        purpose: rcgen::ExtendedKeyUsagePurpose,
        role: &str,
    ) -> Result<Identity, CoreError> {
        let key = rcgen::KeyPair::generate()
            .map_err(|e| CoreError::Tls(format!("generating the {role} key: {e}")))?;
        let mut params = rcgen::CertificateParams::new(names)
            .map_err(|e| CoreError::Tls(format!("{role} certificate parameters: {e}")))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages = vec![purpose];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| CoreError::Tls(format!("signing the {role} certificate: {e}")))?;
        Ok(Identity {
            chain: vec![cert.der().clone(), self.cert_der()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            chain_pem: format!("{}{}", cert.pem(), self.issuer.pem()),
        })
    }
}

impl LocalCa {
    /// Issues a client certificate (for a proxy talking to its store nodes).
    pub fn issue_client(&self, name: &str) -> Result<Identity, CoreError> {
        self.issue_leaf(
            Vec::new(),
            name,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            "client",
        )
    }
}

// === impl Identity ===

impl Identity {
    /// Reads a chain (leaf first) and its PKCS#8 private key from PEM files' contents.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Identity, CoreError> {
        use rustls::pki_types::pem::PemObject;
        let chain = certs_from_pem(chain_pem)?;
        let key = PrivatePkcs8KeyDer::from_pem_slice(key_pem).map_err(|e| {
            CoreError::Tls(format!(
                "private key: {e} (a PKCS#8 `PRIVATE KEY` PEM block is needed; convert with `openssl pkcs8 -topk8 -nocrypt`)"
            ))
        })?;
        Ok(Identity {
            chain,
            key,
            chain_pem: String::from_utf8_lossy(chain_pem).into_owned(),
        })
    }

    /// The chain in PEM (leaf first): what a server certificate file holds.
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// The private key as a PKCS#8 PEM block. Secret: write it only to a 0600 file.
    pub fn key_pem(&self) -> Result<zeroize::Zeroizing<String>, CoreError> {
        let kp =
            rcgen::KeyPair::try_from(&self.key).map_err(tls_err("encoding the private key"))?;
        Ok(zeroize::Zeroizing::new(kp.serialize_pem()))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A server configuration under way: our crypto provider and protocol versions.
fn server_builder(
) -> Result<rustls::ConfigBuilder<rustls::ServerConfig, rustls::WantsVerifier>, CoreError> {
    rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| CoreError::Tls(e.to_string()))
}

/// A client configuration under way: our crypto provider and protocol versions, trusting
/// exactly `roots`.
fn client_builder(
    roots: &[CertificateDer<'static>],
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, CoreError>
{
    let store = root_store(roots, "CA")?;
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| CoreError::Tls(e.to_string()))?
        .with_root_certificates(store))
}

/// Server configuration: TLS 1.3 and 1.2 (ring's suites are all AEAD with forward
/// secrecy), ALPN `http/1.1`.
pub fn server_config(id: &Identity) -> Result<Arc<rustls::ServerConfig>, CoreError> {
    let mut cfg = server_builder()?
        .with_no_client_auth()
        .with_single_cert(id.chain.clone(), PrivateKeyDer::Pkcs8(id.key.clone_key()))
        .map_err(|e| CoreError::Tls(format!("server certificate refused: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A root store of exactly `roots`; empty is an error (nothing would be trusted).
fn root_store(
    roots: &[CertificateDer<'static>],
    what: &str,
) -> Result<rustls::RootCertStore, CoreError> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store
            .add(r.clone())
            .map_err(|e| CoreError::Tls(format!("{what} certificate refused: {e}")))?;
    }
    if store.is_empty() {
        return Err(CoreError::Tls(format!("no {what} certificate to trust")));
    }
    Ok(store)
}

/// Server configuration that also requires a client certificate issued by one of
/// `client_roots` (mutual TLS between a proxy and its store nodes): a client without
/// one fails the handshake.
pub fn server_config_mtls(
    id: &Identity,
    client_roots: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ServerConfig>, CoreError> {
    let store = root_store(client_roots, "client CA")?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
            .build()
            .map_err(|e| CoreError::Tls(format!("client certificate verifier: {e}")))?;
    let mut cfg = server_builder()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.chain.clone(), PrivateKeyDer::Pkcs8(id.key.clone_key()))
        .map_err(|e| CoreError::Tls(format!("server certificate refused: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Client configuration that trusts exactly `roots` and presents `id` (mutual TLS).
pub fn client_config_mtls(
    roots: &[CertificateDer<'static>],
    id: &Identity,
) -> Result<Arc<rustls::ClientConfig>, CoreError> {
    let mut cfg = client_builder(roots)?
        .with_client_auth_cert(id.chain.clone(), PrivateKeyDer::Pkcs8(id.key.clone_key()))
        .map_err(|e| CoreError::Tls(format!("client certificate refused: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Client configuration that trusts exactly `roots` (no system roots, no bypass).
pub fn client_config(
    roots: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, CoreError> {
    let mut cfg = client_builder(roots)?.with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

// === Mail server trust ===

/// The SHA-256 of a certificate's DER encoding: what `openssl x509 -noout -fingerprint
/// -sha256` prints, and what `--source-cert-sha256` pins.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertSha256(pub [u8; 32]);

impl CertSha256 {
    /// The fingerprint of `der`.
    pub fn of(der: &[u8]) -> CertSha256 {
        let d = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        CertSha256(out)
    }

    /// Parses 64 hex digits, upper or lower case, optionally in pairs separated by `:`
    /// (openssl's form, with or without its `sha256 Fingerprint=` prefix).
    pub fn parse(text: &str) -> Result<CertSha256, String> {
        let t = text.trim();
        let t = match t.split_once('=') {
            Some((label, rest)) if label.to_ascii_lowercase().contains("fingerprint") => rest,
            _ => t,
        };
        let hex_digits: String = if t.contains(':') {
            let pairs: Vec<&str> = t.split(':').collect();
            if pairs.iter().any(|p| p.len() != 2) {
                return Err(format!(
                    "{text:?} is not a SHA-256 fingerprint: with colons, every group has 2 hex digits"
                ));
            }
            pairs.concat()
        } else {
            t.to_string()
        };
        if hex_digits.len() != 64 || !hex_digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{text:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed: \
                 `openssl x509 -noout -fingerprint -sha256 -in cert.pem` prints it)"
            ));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(&hex_digits, &mut out)
            .map_err(|e| format!("{text:?} is not a SHA-256 fingerprint: {e}"))?;
        Ok(CertSha256(out))
    }
}

impl std::fmt::Display for CertSha256 {
    /// Upper-case hex pairs joined by `:`, as openssl prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for CertSha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CertSha256({self})")
    }
}

impl std::str::FromStr for CertSha256 {
    type Err = String;
    fn from_str(s: &str) -> Result<CertSha256, String> {
        CertSha256::parse(s)
    }
}

/// What a presented certificate says, for an admin deciding whether to pin it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CertInfo {
    /// Subject distinguished name (`CN=mail.example.com`).
    pub subject: String,
    /// Issuer distinguished name (the subject again for a self-signed certificate).
    pub issuer: String,
    /// Start of validity, RFC 3339 (UTC).
    pub not_before: String,
    /// End of validity, RFC 3339 (UTC).
    pub not_after: String,
    /// SHA-256 of the DER, upper-case hex pairs joined by `:`.
    pub sha256: String,
}

impl CertInfo {
    /// Reads `der`. A certificate that does not parse still has a fingerprint; its other
    /// fields then say why they are unknown.
    pub fn from_der(der: &[u8]) -> CertInfo {
        let sha256 = CertSha256::of(der).to_string();
        match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => {
                let time = |t: x509_parser::time::ASN1Time| {
                    let secs = t.timestamp();
                    match u64::try_from(secs) {
                        Ok(s) => humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
                        )
                        .to_string(),
                        Err(_) => format!("{secs} (seconds since 1970)"),
                    }
                };
                CertInfo {
                    subject: cert.subject().to_string(),
                    issuer: cert.issuer().to_string(),
                    not_before: time(cert.validity().not_before),
                    not_after: time(cert.validity().not_after),
                    sha256,
                }
            }
            Err(e) => {
                let why = format!("(certificate does not parse: {e})");
                CertInfo {
                    subject: why.clone(),
                    issuer: why.clone(),
                    not_before: why.clone(),
                    not_after: why,
                    sha256,
                }
            }
        }
    }
}

impl std::fmt::Display for CertInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "subject {:?}, issuer {:?}, valid {} to {}, SHA-256 {}",
            self.subject, self.issuer, self.not_before, self.not_after, self.sha256
        )
    }
}

/// Why a mail server's certificate was refused, with the certificate it presented
/// (carried inside rustls's `CertificateError::Other`, so that the caller can tell the
/// admin how to pin it).
#[derive(Clone, Debug)]
pub struct CertRefused {
    /// Why, in words.
    pub reason: String,
    /// The end-entity certificate the server presented.
    pub presented: CertInfo,
}

impl std::fmt::Display for CertRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (presented: {})", self.reason, self.presented)
    }
}

impl std::error::Error for CertRefused {}

impl CertRefused {
    /// Finds a refusal in a rustls error, if the refusal was ours.
    pub fn find(e: &rustls::Error) -> Option<&CertRefused> {
        match e {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o)) => {
                o.0.downcast_ref::<CertRefused>()
            }
            _ => None,
        }
    }
}

/// What a mail server's certificate is checked against.
#[derive(Clone, Debug)]
pub enum MailRoots {
    /// The system's roots: the usual chain and name checks.
    System(rustls::RootCertStore),
    /// The certificates of the admin's CA file (`--source-ca`): a presented certificate
    /// identical to one of them is pinned (accepted whatever its basicConstraints, name
    /// or dates); any other must chain to them and name the host.
    File(Vec<CertificateDer<'static>>),
}

/// The end-entity certificate a server presented last, recorded before it is judged
/// (so that a refused certificate can still be shown).
#[derive(Clone, Debug, Default)]
pub struct Presented(Arc<std::sync::Mutex<Option<CertificateDer<'static>>>>);

impl Presented {
    /// The last certificate presented through the configuration, if any.
    pub fn last(&self) -> Option<CertificateDer<'static>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The three handshake-signature methods of a `ServerCertVerifier` whose `provider` field
/// is the crypto provider: the signatures are checked by its algorithms, whatever the
/// verifier decides about the certificate itself.
macro_rules! handshake_signatures_checked_by_provider {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// Checks a mail server's certificate: by exact pin (fingerprint or CA-file member),
/// or by webpki's chain and name checks. The handshake signature is always checked with
/// the presented certificate's key (rustls's own functions), so a pin proves the server
/// holds that certificate's private key.
#[derive(Debug)]
struct MailVerifier {
    /// Certificates of the CA file, for exact matches.
    file: Option<Vec<CertificateDer<'static>>>,
    /// Chain verifier over the file's or the system's roots; `None` when the file holds
    /// nothing usable as a root (then only exact matches pass).
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    pin: Option<CertSha256>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    presented: Presented,
}

fn chain_reason(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "it is not issued by a trusted CA".into()
        }
        rustls::Error::InvalidCertificate(C::Other(o))
            if format!("{o:?}").contains("CaUsedAsEndEntity") =>
        {
            "it is a CA certificate (basicConstraints CA:TRUE) that does not chain to a \
             trusted CA"
                .into()
        }
        rustls::Error::InvalidCertificate(c) => c.to_string(),
        other => other.to_string(),
    }
}

impl rustls::client::danger::ServerCertVerifier for MailVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.presented.0.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(end_entity.clone().into_owned());
        let refuse = |reason: String| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(CertRefused {
                    reason,
                    presented: CertInfo::from_der(end_entity),
                }),
            )))
        };
        if let Some(pin) = self.pin {
            let got = CertSha256::of(end_entity);
            if got != pin {
                return Err(refuse(format!(
                    "its SHA-256 is not the pinned fingerprint {pin}"
                )));
            }
        }
        if let Some(file) = &self.file {
            if file.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
                return Ok(rustls::client::danger::ServerCertVerified::assertion());
            }
        } else if self.pin.is_some() {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        match &self.chain {
            Some(chain) => chain
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map_err(|e| refuse(chain_reason(&e))),
            None => Err(refuse(
                "it is not one of the certificates of the CA file, and none of those can \
                 be used as a CA"
                    .into(),
            )),
        }
    }

    handshake_signatures_checked_by_provider!();
}

/// Client configuration for a mail server (the IMAP source). Offers no ALPN (IMAP
/// servers do not negotiate one, and some refuse a handshake naming a protocol they do
/// not know).
///
/// Trust, in order: with `pin`, the presented certificate's SHA-256 must equal it;
/// then, with [`MailRoots::File`], a certificate identical to one in the file is
/// accepted as pinned, any other must chain to the file's certificates and name the
/// host; without a file, a `pin` alone is enough, and otherwise the certificate must
/// chain to the system's roots and name the host. An exact pin skips the name and date
/// checks (it is stronger than they are: only this certificate, with its key, passes),
/// as mbsync's `CertificateFile` and imapsync do. The handshake signature is always
/// checked. Returns the configuration and where it records the presented certificate.
pub fn mail_client_config(
    roots: MailRoots,
    pin: Option<CertSha256>,
) -> Result<(Arc<rustls::ClientConfig>, Presented), CoreError> {
    let provider = provider();
    let (file, store) = match roots {
        MailRoots::System(store) => {
            if store.is_empty() && pin.is_none() {
                return Err(CoreError::Tls("no CA certificate to trust".into()));
            }
            (None, store)
        }
        MailRoots::File(certs) => {
            if certs.is_empty() {
                return Err(CoreError::Tls(
                    "the CA file holds no certificate to trust".into(),
                ));
            }
            let mut store = rustls::RootCertStore::empty();
            store.add_parsable_certificates(certs.iter().cloned());
            (Some(certs), store)
        }
    };
    let chain = if store.is_empty() {
        None
    } else {
        Some(
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(store),
                provider.clone(),
            )
            .build()
            .map_err(|e| CoreError::Tls(format!("server certificate verifier: {e}")))?,
        )
    };
    let presented = Presented::default();
    let verifier = MailVerifier {
        file,
        chain,
        pin,
        provider: provider.clone(),
        presented: presented.clone(),
    };
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|e| CoreError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok((Arc::new(cfg), presented))
}

// === PostgreSQL server trust ===

/// How the certificate of a PostgreSQL server (the coordination database, `--db`) is
/// checked. There is no variant that accepts an unverified certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgCheck {
    /// The chain must lead to one of the roots; the host name is not checked (libpq's
    /// `verify-ca`): for a private CA that issues certificates to database servers only.
    Chain,
    /// The chain and the host name (libpq's `verify-full`).
    ChainAndName,
}

/// Verifies the chain of a server certificate against `roots` and nothing else.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<rustls::RootCertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        // webpki's own chain check (signatures, validity dates, serverAuth usage, CA
        // constraints): what WebPkiServerVerifier runs before it checks the name.
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    handshake_signatures_checked_by_provider!();
}

/// Client configuration for a PostgreSQL server: trusts exactly `roots` (a CA file's
/// certificates or the system's), checks per `check`, offers ALPN `postgresql` (what
/// PostgreSQL 17 expects; older servers ignore it). The handshake signature is always
/// checked with the presented certificate's key.
pub fn pg_client_config(
    roots: rustls::RootCertStore,
    check: PgCheck,
) -> Result<Arc<rustls::ClientConfig>, CoreError> {
    if roots.is_empty() {
        return Err(CoreError::Tls("no CA certificate to trust".into()));
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| CoreError::Tls(e.to_string()))?;
    let mut cfg = match check {
        PgCheck::ChainAndName => builder.with_root_certificates(roots),
        PgCheck::Chain => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly {
                roots: Arc::new(roots),
                provider: provider(),
            })),
    }
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Arc::new(cfg))
}

/// Parses every `CERTIFICATE` block of a PEM file.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CoreError> {
    use rustls::pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    let certs = certs.map_err(|e| CoreError::Tls(format!("PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(CoreError::Tls(
            "the PEM file holds no CERTIFICATE block".into(),
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_chain_builds_configs_and_pem_round_trips() {
        let ca = LocalCa::generate("test CA").unwrap();
        let id = ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
        assert_eq!(id.chain.len(), 2);
        server_config(&id).unwrap();
        let roots = certs_from_pem(ca.cert_pem().as_bytes()).unwrap();
        assert_eq!(roots[0], ca.cert_der());
        client_config(&roots).unwrap();
        assert!(!format!("{id:?}").contains("key: ["), "{id:?}");
        let again = Identity::from_pem(id.chain_pem().as_bytes(), id.key_pem().unwrap().as_bytes())
            .unwrap();
        assert_eq!(again.chain, id.chain);
        assert_eq!(again.key.secret_pkcs8_der(), id.key.secret_pkcs8_der());
        server_config(&again).unwrap();
        assert!(Identity::from_pem(id.chain_pem().as_bytes(), b"nope").is_err());
    }

    #[test]
    fn pem_without_certificates_is_an_error() {
        assert!(certs_from_pem(b"not pem").is_err());
        assert!(client_config(&[]).is_err());
    }

    /// A self-signed certificate marked CA:TRUE, as `openssl req -x509` makes by default.
    fn self_signed_ca_true(name: &str) -> Identity {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Identity {
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            chain_pem: cert.pem(),
        }
    }

    /// A whole handshake in memory between `client` and a server presenting `server`.
    fn handshake(
        client: Arc<rustls::ClientConfig>,
        server: &Identity,
        name: &str,
    ) -> Result<(), rustls::Error> {
        let mut scfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                server.chain.clone(),
                PrivateKeyDer::Pkcs8(server.key.clone_key()),
            )
            .unwrap();
        scfg.alpn_protocols.clear();
        let mut s = rustls::ServerConnection::new(Arc::new(scfg)).unwrap();
        let mut c = rustls::ClientConnection::new(
            client,
            rustls::pki_types::ServerName::try_from(name.to_string()).unwrap(),
        )
        .unwrap();
        for _ in 0..20 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                s.read_tls(&mut buf.as_slice()).unwrap();
                if let Err(e) = s.process_new_packets() {
                    // The server's alert goes back so the client sees why.
                    let mut alert = Vec::new();
                    let _ = s.write_tls(&mut alert);
                    return Err(e);
                }
            }
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                c.read_tls(&mut buf.as_slice()).unwrap();
                c.process_new_packets()?;
            }
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish");
    }

    #[test]
    fn fingerprints_parse_in_openssl_and_plain_forms() {
        let der = b"any bytes";
        let fp = CertSha256::of(der);
        let colons = fp.to_string();
        assert_eq!(colons.len(), 32 * 3 - 1);
        assert_eq!(CertSha256::parse(&colons).unwrap(), fp);
        assert_eq!(CertSha256::parse(&colons.to_lowercase()).unwrap(), fp);
        let plain = hex::encode(fp.0);
        assert_eq!(CertSha256::parse(&plain).unwrap(), fp);
        assert_eq!(CertSha256::parse(&plain.to_uppercase()).unwrap(), fp);
        assert_eq!(
            CertSha256::parse(&format!("sha256 Fingerprint={colons}\n")).unwrap(),
            fp
        );
        assert_eq!(
            CertSha256::parse(&format!("SHA256 Fingerprint={plain}")).unwrap(),
            fp
        );
        assert!(CertSha256::parse(&plain[..62]).is_err());
        assert!(CertSha256::parse(&format!("{plain}00")).is_err());
        assert!(CertSha256::parse(&plain.replacen('a', "g", 1).replacen('0', "g", 1)).is_err());
        assert!(
            CertSha256::parse(&colons[1..]).is_err(),
            "groups of one digit"
        );
        assert!(CertSha256::parse("").is_err());
        let err = CertSha256::parse("abc").unwrap_err();
        assert!(
            err.contains("openssl x509 -noout -fingerprint -sha256"),
            "{err}"
        );
    }

    #[test]
    fn a_self_signed_ca_certificate_is_pinned_by_file_or_fingerprint() {
        let server = self_signed_ca_true("mail.example");
        let other = self_signed_ca_true("mail.example");
        let fp = CertSha256::of(&server.chain[0]);
        let info = CertInfo::from_der(&server.chain[0]);
        assert_eq!(info.subject, "CN=mail.example");
        assert_eq!(info.issuer, "CN=mail.example");
        assert_eq!(info.sha256, fp.to_string());
        assert!(info.not_before < info.not_after, "{info:?}");

        // The server's own certificate in the CA file: accepted, whatever the name.
        for name in ["mail.example", "elsewhere.example"] {
            let (cfg, presented) =
                mail_client_config(MailRoots::File(server.chain.clone()), None).unwrap();
            handshake(cfg, &server, name).unwrap();
            assert_eq!(presented.last().unwrap(), server.chain[0]);
        }
        // By fingerprint alone.
        let (cfg, _) =
            mail_client_config(MailRoots::System(rustls::RootCertStore::empty()), Some(fp))
                .unwrap();
        handshake(cfg, &server, "mail.example").unwrap();
        // Both: both must hold.
        let (cfg, _) = mail_client_config(MailRoots::File(server.chain.clone()), Some(fp)).unwrap();
        handshake(cfg, &server, "mail.example").unwrap();

        let refused = |cfg, want: &str| {
            let e = handshake(cfg, &server, "mail.example").unwrap_err();
            let r = CertRefused::find(&e).unwrap_or_else(|| panic!("not ours: {e:?}"));
            assert_eq!(r.presented.sha256, fp.to_string());
            assert_eq!(r.presented.subject, "CN=mail.example");
            assert!(r.reason.contains(want), "{r}");
        };
        // Another self-signed certificate in the file: refused, saying what was presented.
        let (cfg, presented) =
            mail_client_config(MailRoots::File(other.chain.clone()), None).unwrap();
        refused(cfg, "CA");
        assert_eq!(presented.last().unwrap(), server.chain[0]);
        // A wrong fingerprint, alone or with the right file.
        let wrong = CertSha256::of(&other.chain[0]);
        let (cfg, _) = mail_client_config(
            MailRoots::System(rustls::RootCertStore::empty()),
            Some(wrong),
        )
        .unwrap();
        refused(cfg, "pinned fingerprint");
        let (cfg, _) =
            mail_client_config(MailRoots::File(server.chain.clone()), Some(wrong)).unwrap();
        refused(cfg, "pinned fingerprint");
        // The right fingerprint with a file the certificate is not in: the file must hold.
        let (cfg, _) = mail_client_config(MailRoots::File(other.chain.clone()), Some(fp)).unwrap();
        refused(cfg, "CA");
        // Nothing to trust at all is a configuration error.
        assert!(
            mail_client_config(MailRoots::System(rustls::RootCertStore::empty()), None).is_err()
        );
        assert!(mail_client_config(MailRoots::File(Vec::new()), None).is_err());
    }

    #[test]
    fn a_ca_issued_certificate_still_needs_the_chain_and_the_name() {
        let ca = LocalCa::generate("test CA").unwrap();
        let leaf = ca.issue_server(&["mail.example"]).unwrap();
        let (cfg, _) = mail_client_config(MailRoots::File(vec![ca.cert_der()]), None).unwrap();
        handshake(cfg, &leaf, "mail.example").unwrap();
        let (cfg, _) = mail_client_config(MailRoots::File(vec![ca.cert_der()]), None).unwrap();
        let e = handshake(cfg, &leaf, "other.example").unwrap_err();
        let r = CertRefused::find(&e).unwrap();
        assert!(r.reason.contains("not valid for name"), "{r}");
        let other = LocalCa::generate("other CA").unwrap();
        let (cfg, _) = mail_client_config(MailRoots::File(vec![other.cert_der()]), None).unwrap();
        let e = handshake(cfg, &leaf, "mail.example").unwrap_err();
        assert!(CertRefused::find(&e).unwrap().reason.contains("trusted CA"));
    }

    fn roots_of(ca: &LocalCa) -> rustls::RootCertStore {
        let mut r = rustls::RootCertStore::empty();
        r.add(ca.cert_der()).unwrap();
        r
    }

    #[test]
    fn pg_config_checks_the_chain_always_and_the_name_when_asked() {
        let ca = LocalCa::generate("pg CA").unwrap();
        let other = LocalCa::generate("another CA").unwrap();
        let leaf = ca.issue_server(&["db.example"]).unwrap();
        let full = |r| pg_client_config(r, PgCheck::ChainAndName).unwrap();
        let chain = |r| pg_client_config(r, PgCheck::Chain).unwrap();
        handshake(full(roots_of(&ca)), &leaf, "db.example").unwrap();
        let e = handshake(full(roots_of(&ca)), &leaf, "other.example").unwrap_err();
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                        | rustls::CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{e:?}"
        );
        // Chain only: another name passes, another CA does not.
        handshake(chain(roots_of(&ca)), &leaf, "other.example").unwrap();
        for cfg in [chain(roots_of(&other)), full(roots_of(&other))] {
            let e = handshake(cfg, &leaf, "db.example").unwrap_err();
            assert!(
                matches!(
                    e,
                    rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
                ),
                "{e:?}"
            );
        }
        // A self-signed leaf is not its own CA under the chain check.
        let selfie = self_signed_ca_true("db.example");
        let mut r = rustls::RootCertStore::empty();
        r.add(ca.cert_der()).unwrap();
        assert!(handshake(chain(r), &selfie, "db.example").is_err());
        assert!(pg_client_config(rustls::RootCertStore::empty(), PgCheck::Chain).is_err());
    }
}
