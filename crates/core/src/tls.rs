//! rustls configuration builders shared by the agent, the proxy and the store nodes.
//!
//! Always the ring provider (never aws-lc-rs), TLS 1.3 preferred with TLS 1.2 as the
//! floor, and no way to build a client that skips certificate verification. Certificates
//! for loopback and self-hosted deployments come from a small local CA made with rcgen.
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
        let key = rcgen::KeyPair::generate().map_err(tls_err("generating the server key"))?;
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map_err(tls_err("server certificate parameters"))?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().copied().unwrap_or("mailferry"),
        );
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(tls_err("signing the server certificate"))?;
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
        let key = rcgen::KeyPair::generate().map_err(tls_err("generating the client key"))?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(tls_err("client certificate parameters"))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(tls_err("signing the client certificate"))?;
        Ok(Identity {
            chain: vec![cert.der().clone(), self.cert_der()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            chain_pem: format!("{}{}", cert.pem(), self.issuer.pem()),
        })
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

/// Server configuration: TLS 1.3 and 1.2 (ring's suites are all AEAD with forward
/// secrecy), ALPN `http/1.1`.
pub fn server_config(id: &Identity) -> Result<Arc<rustls::ServerConfig>, CoreError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| CoreError::Tls(e.to_string()))?
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
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| CoreError::Tls(e.to_string()))?
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
    let store = root_store(roots, "CA")?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| CoreError::Tls(e.to_string()))?
        .with_root_certificates(store)
        .with_client_auth_cert(id.chain.clone(), PrivateKeyDer::Pkcs8(id.key.clone_key()))
        .map_err(|e| CoreError::Tls(format!("client certificate refused: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Client configuration that trusts exactly `roots` (no system roots, no bypass).
pub fn client_config(
    roots: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, CoreError> {
    let store = root_store(roots, "CA")?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| CoreError::Tls(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Client configuration for a mail server (the IMAP source): trusts exactly `roots`
/// (the system's or the admin's `--source-ca`), offers no ALPN (IMAP servers do not
/// negotiate one, and some refuse a handshake naming a protocol they do not know).
pub fn mail_client_config(
    roots: rustls::RootCertStore,
) -> Result<Arc<rustls::ClientConfig>, CoreError> {
    if roots.is_empty() {
        return Err(CoreError::Tls("no CA certificate to trust".into()));
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| CoreError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
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
}
