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
pub const DEFAULT_WINDOW_BYTES: u64 = 8 << 20;

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
