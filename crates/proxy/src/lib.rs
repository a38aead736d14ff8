//! mailferry-proxy: the front-end proxy.
//!
//! Terminates TLS (rustls), authenticates the agent (bearer token), routes each
//! mailbox's frame stream to the store driver that owns it, and maps every failure to one
//! HTTP status ([`error::status_for`]). In this crate the store is in-process; the proxy
//! never touches segment files or keys itself: it drives a
//! [`mailferry_store::IngestSession`].
//!
//! Layers, in the order a request meets them: TLS handshake (timeout) → HTTP/1.1 header
//! read (timeout) → route (`/healthz`, `/readyz`, `/metrics` need no token) → auth (token,
//! looked up in the volume) → mailbox check → tenant check (403) → upgrade → stream slots
//! (429/503) → one session per mailbox (409) → frame session (bounded queues) → error
//! mapping → access log.

pub mod auth;
pub mod error;
pub mod forward;
pub mod metrics;
pub mod server;
pub mod session;

pub use auth::{Grant, TokenSet};
pub use error::{status_for, ProxyError};
pub use metrics::StoreStats;
pub use server::{Backend, Limits, Proxy, ProxyConfig};
