//! Where the admin service's batches and moves live: the batch directories under its
//! state directory (the default), or the coordination database of `admin serve --db`
//! (`mailferry-coord`, docs/coordination.md).
//!
//! This is the one seam between the two: [`super::actions`] asks [`Backend`] which one
//! it is and calls the control plane's file-based functions or
//! [`mailferry_coord::ops`] accordingly; the pages and the API only see the actions, so
//! their routes, JSON and HTML are the same either way. This module holds the
//! connection; it does not decide what an action does, check roles or audit.
//!
//! Against the database the service never runs a pass itself: `start` and `complete`
//! queue the moves and `mailferry worker` processes run them.

use crate::AdminError;
use mailferry_coord::{Db, DbUrl};

/// Where batches and moves live.
pub enum Backend {
    /// Batch directories under `STATE/batches` (the embedded default).
    Files,
    /// The coordination database (boxed: the client is large and there is one per
    /// service).
    Db(Box<DbBackend>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Files => f.write_str("Backend::Files"),
            Backend::Db(_) => f.write_str("Backend::Db([redacted])"),
        }
    }
}

impl Backend {
    /// The backend `url` names (`None`: files).
    pub fn new(url: Option<DbUrl>) -> Backend {
        match url {
            None => Backend::Files,
            Some(url) => Backend::Db(Box::new(DbBackend {
                url,
                conn: tokio::sync::Mutex::new(None),
            })),
        }
    }

    /// The database, when there is one.
    pub fn db(&self) -> Option<&DbBackend> {
        match self {
            Backend::Files => None,
            Backend::Db(d) => Some(d.as_ref()),
        }
    }
}

/// One connection to the coordination database, shared by the requests in turn (an
/// admin service's load is a few people and their dashboards' polls).
pub struct DbBackend {
    url: DbUrl,
    conn: tokio::sync::Mutex<Option<Db>>,
}

/// The connection, held for one action.
pub struct DbGuard<'a>(tokio::sync::MutexGuard<'a, Option<Db>>);

impl std::ops::Deref for DbGuard<'_> {
    type Target = Db;
    fn deref(&self) -> &Db {
        self.0
            .as_ref()
            .expect("connected before the guard is given out")
    }
}

impl std::ops::DerefMut for DbGuard<'_> {
    fn deref_mut(&mut self) -> &mut Db {
        self.0
            .as_mut()
            .expect("connected before the guard is given out")
    }
}

impl DbBackend {
    /// The connection, opened (and the schema brought up to date) on first use and
    /// again after it closed (PostgreSQL restarted): an outage is a 503 for its
    /// duration, not for the rest of the service's life.
    pub async fn get(&self) -> Result<DbGuard<'_>, AdminError> {
        let mut g = self.conn.lock().await;
        if g.as_ref().is_none_or(|d| d.client.is_closed()) {
            *g = Some(Db::connect(&self.url).await?);
        }
        Ok(DbGuard(g))
    }
}
