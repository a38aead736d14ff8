//! Routing to remote store nodes: the front-end proxy of a split deployment.
//!
//! Every mailbox is owned by exactly one store node, chosen by rendezvous hashing: the
//! owner is the node whose `SHA-256(node URL || 0x00 || mailbox)` is largest. The rule
//! needs no table and no coordination, every proxy computes the same owner, every pass
//! of a move lands on the same node, and adding a node moves only the mailboxes it wins.
//! Proxy ↔ store traffic is HTTPS with mutual TLS: the proxy presents a client
//! certificate the store nodes require, and trusts only the store CAs it was given.
//! The proxy forwards the agent's request (with its token) and, once the owner answers
//! `101`, splices the two upgraded streams; tokens are checked by the owning store node
//! against its volume. This module never opens a volume.

use crate::ProxyError;
use hyper::header::HeaderValue;
use hyper::{StatusCode, Uri};
use hyper_util::rt::TokioIo;
use mailferry_core::frame::upgrade_request;
use mailferry_core::refusal;
use mailferry_core::MailboxAddr;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;

/// How long connecting to a store node (TCP + TLS + request) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One store node.
#[derive(Debug, Clone)]
pub struct StoreNode {
    /// Its URL as configured (`https://10.0.0.2:8443`), also its identity for hashing.
    pub url: String,
    host: String,
    port: u16,
}

/// The store nodes and how to reach them.
pub struct Router {
    nodes: Vec<StoreNode>,
    tls: Arc<rustls::ClientConfig>,
    names: mailferry_audit::Pseudonymizer,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

fn bad(url: &str, reason: &str) -> ProxyError {
    ProxyError::Unavailable(format!("store node {url}: {reason}"))
}

impl Router {
    /// A router over `urls` (`https://host:port`), connecting with `tls` (mutual TLS).
    pub fn new(urls: &[String], tls: Arc<rustls::ClientConfig>) -> Result<Router, ProxyError> {
        if urls.is_empty() {
            return Err(ProxyError::Unavailable(
                "no store node configured (--store URL)".into(),
            ));
        }
        let mut nodes = Vec::new();
        for url in urls {
            let uri: Uri = url
                .parse()
                .map_err(|_| bad(url, "not a URL (https://host:port)"))?;
            if uri.scheme_str() != Some("https") {
                return Err(bad(url, "only https:// store nodes are supported"));
            }
            let host = uri.host().ok_or_else(|| bad(url, "no host"))?;
            nodes.push(StoreNode {
                url: url.trim_end_matches('/').to_string(),
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                port: uri.port_u16().unwrap_or(443),
            });
        }
        let key = mailferry_core::secret::SecretBytes::random(32);
        let names =
            mailferry_audit::Pseudonymizer::new(key.expose().try_into().expect("32 random bytes"));
        Ok(Router { nodes, tls, names })
    }

    /// The nodes, in configuration order.
    pub fn nodes(&self) -> &[StoreNode] {
        &self.nodes
    }

    /// The node that owns `mailbox` (rendezvous hashing, see the module doc).
    pub fn owner(&self, mailbox: &MailboxAddr) -> &StoreNode {
        owner_of(&self.nodes, mailbox.as_str())
    }

    /// A pseudonym of the mailbox for access logs (keyed per process: the front proxy
    /// holds no volume key).
    pub fn pseudonym(&self, mailbox: &MailboxAddr) -> String {
        self.names.pseudonym("mailbox", mailbox.as_str())
    }

    /// Sends the agent's stream request to the owner of `mailbox` and returns the
    /// upgraded connection once the node answers `101`. A refusal by the node (401,
    /// 403, 429, 503, ...) is passed on as it was; a node that cannot be reached is 503.
    pub async fn open(
        &self,
        mailbox: &MailboxAddr,
        path: &str,
        authorization: HeaderValue,
        fence: Option<u64>,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>, ProxyError> {
        let node = self.owner(mailbox).clone();
        let open = self.open_on(&node, path, authorization, fence);
        match tokio::time::timeout(CONNECT_TIMEOUT, open).await {
            Ok(r) => r,
            Err(_) => Err(ProxyError::Upstream {
                status: 503,
                message: format!("store node {} did not answer in time", node.url),
                retry_after: Some(1),
            }),
        }
    }

    async fn open_on(
        &self,
        node: &StoreNode,
        path: &str,
        authorization: HeaderValue,
        fence: Option<u64>,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>, ProxyError> {
        let down = |reason: String| ProxyError::Upstream {
            status: 503,
            message: format!("store node {} is unreachable: {reason}", node.url),
            retry_after: Some(1),
        };
        let tcp = tokio::net::TcpStream::connect((node.host.as_str(), node.port))
            .await
            .map_err(|e| down(e.to_string()))?;
        tcp.set_nodelay(true).ok();
        let name = ServerName::try_from(node.host.clone()).map_err(|e| down(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| down(format!("TLS: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| down(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        // The fence travels on to the node that owns the mailbox (its OPEN frame does
        // anyway: frames are end to end).
        let req = upgrade_request(path, &node.host, node.port, authorization, fence)
            .map_err(|e| down(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| down(e.to_string()))?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let refusal::Refused {
                status,
                retry_after,
                message,
            } = refusal::read(resp).await;
            return Err(ProxyError::Upstream {
                status,
                message,
                retry_after,
            });
        }
        let up = hyper::upgrade::on(resp)
            .await
            .map_err(|e| down(e.to_string()))?;
        Ok(TokioIo::new(up))
    }

    /// Ok if every node answers `/healthz` over mutual TLS.
    pub async fn ready(&self) -> Result<(), ProxyError> {
        for node in &self.nodes {
            let probe = async {
                let tcp = tokio::net::TcpStream::connect((node.host.as_str(), node.port)).await?;
                let name = ServerName::try_from(node.host.clone())
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                tokio_rustls::TlsConnector::from(self.tls.clone())
                    .connect(name, tcp)
                    .await
                    .map(|_| ())
            };
            tokio::time::timeout(Duration::from_secs(3), probe)
                .await
                .map_err(|_| bad(&node.url, "no answer"))?
                .map_err(|e| bad(&node.url, &e.to_string()))?;
        }
        Ok(())
    }
}

/// Rendezvous hashing over `nodes` (non-empty).
pub fn owner_of<'a>(nodes: &'a [StoreNode], mailbox: &str) -> &'a StoreNode {
    let urls: Vec<&str> = nodes.iter().map(|n| n.url.as_str()).collect();
    &nodes[owner_index(&urls, mailbox)]
}

/// The documented rule on plain URLs (as configured, without a trailing `/`): the index
/// of the URL with the largest `SHA-256(url || 0x00 || mailbox)`.
pub fn owner_index(urls: &[&str], mailbox: &str) -> usize {
    (0..urls.len())
        .max_by_key(|&i| {
            let mut c = ring::digest::Context::new(&ring::digest::SHA256);
            c.update(urls[i].as_bytes());
            c.update(&[0]);
            c.update(mailbox.as_bytes());
            let d: [u8; 32] = c.finish().as_ref().try_into().expect("32 bytes");
            d
        })
        .expect("at least one store node")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(url: &str) -> StoreNode {
        StoreNode {
            url: url.into(),
            host: "h".into(),
            port: 1,
        }
    }

    #[test]
    fn owners_are_stable_spread_and_move_little_when_a_node_is_added() {
        let two = [node("https://a:1"), node("https://b:1")];
        let three = [
            node("https://a:1"),
            node("https://b:1"),
            node("https://c:1"),
        ];
        let mut per = std::collections::HashMap::new();
        let mut moved = 0;
        for i in 0..1000 {
            let m = format!("user{i}@example.com");
            let o2 = &owner_of(&two, &m).url;
            assert_eq!(o2, &owner_of(&two, &m).url, "stable");
            *per.entry(o2.clone()).or_insert(0) += 1;
            let o3 = &owner_of(&three, &m).url;
            if o3 != o2 {
                assert_eq!(
                    o3, "https://c:1",
                    "a mailbox only ever moves to the new node"
                );
                moved += 1;
            }
        }
        assert!(per.values().all(|&n| n > 400), "{per:?}");
        assert!(moved > 200 && moved < 450, "{moved}");
    }
}
