//! The connection to the coordination database and its versioned schema.
//!
//! The client is `tokio-postgres`: passes and heartbeats already run on tokio, so the
//! database calls are awaited beside them instead of blocking a thread each (the sync
//! `postgres` crate would start a runtime of its own inside ours). Migrations are
//! `refinery`'s, embedded from `crates/coord/migrations/V<n>__<name>.sql` and applied
//! under a PostgreSQL advisory lock, so that many workers starting at once apply each
//! version exactly once. This module does not decide what is leased or synced.
//!
//! TLS: the client is built without TLS (`NoTls`): use it on loopback, a private
//! network, or through a TLS tunnel (docs/coordination.md). A URL asking for
//! `sslmode=require` is refused rather than silently sent in clear.

use crate::CoordError;
use std::str::FromStr;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Key of the advisory lock held while migrations run (any fixed number of ours).
const MIGRATION_LOCK: i64 = 0x6d66_636f_6f72_6401;

/// A `postgres://` URL. It may carry a password, so it is a secret: zeroized on drop,
/// `Debug` prints `[redacted]`, and it is never logged.
#[derive(Clone)]
pub struct DbUrl(zeroize::Zeroizing<String>);

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DbUrl([redacted])")
    }
}

impl DbUrl {
    /// Checks `url` (`postgres://user@host:port/db`, or key=value form).
    pub fn new(url: &str) -> Result<DbUrl, CoordError> {
        let config = tokio_postgres::Config::from_str(url).map_err(|e| {
            CoordError::Url(format!(
                "not a PostgreSQL connection string ({e}); expected postgres://USER@HOST:PORT/DATABASE"
            ))
        })?;
        if config.get_ssl_mode() == SslMode::Require {
            return Err(CoordError::Url(
                "sslmode=require: this build speaks to PostgreSQL without TLS; connect over \
                 loopback, a private network or a TLS tunnel and drop sslmode \
                 (docs/coordination.md, \"TLS\")"
                    .into(),
            ));
        }
        Ok(DbUrl(zeroize::Zeroizing::new(url.to_string())))
    }

    /// The URL itself, for the client only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// The URL itself, to hand to a child process's environment (`MAILFERRY_DB`); never
    /// for a log, a message or a command line.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

/// An open connection with the schema at the current version.
pub struct Db {
    /// The client; its connection task runs on the caller's runtime.
    pub client: Client,
}

impl Db {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &DbUrl) -> Result<Db, CoordError> {
        let mut client = connect_raw(url).await?;
        migrate(&mut client).await?;
        Ok(Db { client })
    }
}

/// Connects without touching the schema.
pub(crate) async fn connect_raw(url: &DbUrl) -> Result<Client, CoordError> {
    let (client, connection) = tokio_postgres::connect(url.expose(), NoTls)
        .await
        .map_err(CoordError::db("connecting"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Creates a new, empty database on the server of `server` (a URL naming any database
/// the user may connect to), named `mf_<name>_<random>`, and returns its URL. For
/// throwaway runs: the tests and `mailferry bench --workers`, which drop it with
/// [`drop_database`] when done.
pub async fn scratch_database(server: &DbUrl, name: &str) -> Result<DbUrl, CoordError> {
    let client = connect_raw(server).await?;
    let db: String = format!(
        "mf_{}_{:08x}",
        name.chars()
            .map(|c| if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            })
            .take(40)
            .collect::<String>(),
        mailferry_agent::throttle::random_u64() as u32
    );
    client
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .map_err(CoordError::db(format!("creating database {db}")))?;
    let s = server.expose();
    let base = s.rsplit_once('/').map_or(s, |(b, _)| b);
    DbUrl::new(&format!("{base}/{db}"))
}

/// Drops a database [`scratch_database`] made, connecting through `server` (another
/// database of the same server). Every connection to it must be closed.
pub async fn drop_database(server: &DbUrl, scratch: &DbUrl) -> Result<(), CoordError> {
    let s = scratch.expose();
    let name = s.rsplit_once('/').map_or(s, |(_, n)| n);
    if !name.starts_with("mf_") || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(CoordError::Url(format!(
            "{name} is not a database scratch_database made; refusing to drop it"
        )));
    }
    let client = connect_raw(server).await?;
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .map_err(CoordError::db(format!("dropping database {name}")))
}

/// Applies the migrations not applied yet, one transaction each (refinery), under an
/// advisory lock so that concurrent starts do not race. Returns the versions applied now.
pub async fn migrate(client: &mut Client) -> Result<Vec<u32>, CoordError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(CoordError::db("waiting for the migration lock"))?;
    let res = embedded::migrations::runner()
        .set_grouped(false)
        .run_async(client)
        .await;
    // Unlocked whatever happened; a lost connection releases it anyway.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let report = res.map_err(|e| CoordError::Migrate(e.to_string()))?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.version())
        .collect())
}

/// Helpers for tests against a real server (`MAILFERRY_TEST_PG`).
#[cfg(any(test, feature = "test-util"))]
pub mod testing {
    use super::*;

    /// The test server's URL, or `None` (with a note) when it is not configured outside
    /// CI. Panics in CI (env `CI`), where the server must be there (test.sh starts it).
    pub fn server() -> Option<String> {
        match std::env::var("MAILFERRY_TEST_PG") {
            Ok(u) if !u.is_empty() => Some(u),
            _ => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "MAILFERRY_TEST_PG is not set in CI (test.sh starts PostgreSQL with tests/services/services.sh)"
                );
                eprintln!(
                    "skipped: MAILFERRY_TEST_PG is not set (tests/services/services.sh start DIR prints it)"
                );
                None
            }
        }
    }

    /// Creates a fresh database named after `name` (plus a random suffix) on `server`
    /// and returns its URL.
    pub async fn fresh_database(server: &str, name: &str) -> String {
        let url = DbUrl::new(server).expect("MAILFERRY_TEST_PG is a PostgreSQL URL");
        scratch_database(&url, name)
            .await
            .expect("test PostgreSQL reachable")
            .expose()
            .to_string()
    }
}
