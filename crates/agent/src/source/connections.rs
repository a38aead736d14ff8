//! How many IMAP connections a move may open: the per-move count
//! (`--source-connections`) and the budget that every move of a batch reading one
//! endpoint shares (the endpoint's `max_connections`). Not the connections themselves:
//! those live in [`super::imap`].

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections one move reads with when nothing says otherwise.
pub const DEFAULT_CONNECTIONS: usize = 4;

/// Most connections one move may be asked to open.
pub const MAX_CONNECTIONS: usize = 64;

/// Bytes fetched ahead of the reader on each connection when nothing says otherwise.
pub const DEFAULT_WINDOW_BYTES: u64 = 16 << 20;

/// Bytes fetched ahead of the reader by all the connections of a move together, when
/// the window was not set: many connections share it (16 connections get 4 MiB each),
/// so memory does not grow with the count. A window set in the profile is taken as
/// given.
pub const DEFAULT_TOTAL_WINDOW_BYTES: u64 = 64 << 20;

/// The window of each of `connections` connections: `window_bytes` if set, else
/// [`DEFAULT_WINDOW_BYTES`] within [`DEFAULT_TOTAL_WINDOW_BYTES`] for them all.
pub fn window_per_connection(window_bytes: Option<u64>, connections: usize) -> u64 {
    window_bytes.unwrap_or_else(|| {
        DEFAULT_WINDOW_BYTES.min(DEFAULT_TOTAL_WINDOW_BYTES / connections.max(1) as u64)
    })
}

/// A budget of connections to one server, shared by the moves of a batch (clones share
/// it). A move takes a permit before it opens a connection and gives it back when the
/// connection closes, so the moves together never hold more than `max`.
#[derive(Clone, Debug)]
pub struct ConnectionLimit {
    max: usize,
    permits: Arc<Semaphore>,
}

/// One connection's place in a [`ConnectionLimit`]; given back when dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    _permit: OwnedSemaphorePermit,
}

impl ConnectionLimit {
    /// A budget of `max` connections (at least one).
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        ConnectionLimit {
            max,
            permits: Arc::new(Semaphore::new(max)),
        }
    }

    /// The budget.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A permit if one is free now.
    pub fn try_acquire(&self) -> Option<ConnectionPermit> {
        self.permits
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|p| ConnectionPermit { _permit: p })
    }

    /// Waits for a permit.
    pub async fn acquire(&self) -> ConnectionPermit {
        let p = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        ConnectionPermit { _permit: p }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_window_is_shared_by_many_connections_and_a_set_one_is_kept() {
        assert_eq!(window_per_connection(None, 4), 16 << 20);
        assert_eq!(window_per_connection(None, 16), 4 << 20);
        assert_eq!(window_per_connection(None, 0), 16 << 20);
        assert_eq!(window_per_connection(Some(1 << 20), 16), 1 << 20);
    }

    #[test]
    fn clones_share_one_budget_and_a_dropped_permit_frees_its_place() {
        let limit = ConnectionLimit::new(2);
        let other = limit.clone();
        let a = limit.try_acquire().expect("first");
        let _b = other.try_acquire().expect("second");
        assert!(limit.try_acquire().is_none(), "a third over a budget of 2");
        drop(a);
        assert!(other.try_acquire().is_some());
        assert_eq!(ConnectionLimit::new(0).max(), 1);
    }
}
