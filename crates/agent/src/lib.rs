//! mailferry-agent: the replication agent.
//!
//! Reads source mailboxes ([`source`]), remembers what the store has acknowledged
//! ([`state`]), and streams messages to a proxy over HTTPS in the wire protocol
//! ([`client`], [`pass`]), as fast as its [`throttle`]s allow. The agent never links the store or the proxy: everything it
//! knows about the destination comes over the wire.

pub mod client;
pub mod error;
pub mod filter;
pub mod pass;
pub mod plan;
pub mod preview;
pub mod renamed;
pub mod source;
pub mod state;
pub mod throttle;

pub use error::AgentError;
