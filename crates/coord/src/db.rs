//! The connection to the coordination database and its versioned schema.
//!
//! The client is `tokio-postgres`: passes and heartbeats already run on tokio, so the
//! database calls are awaited beside them instead of blocking a thread each (the sync
//! `postgres` crate would start a runtime of its own inside ours). Migrations are
//! `refinery`'s, embedded from `crates/coord/migrations/V<n>__<name>.sql` and applied
//! under a PostgreSQL advisory lock, so that many workers starting at once apply each
//! version exactly once. This module does not decide what is leased or synced.
//!
//! TLS: the URL's `sslmode` and `sslrootcert` decide it ([`crate::tls`],
//! docs/coordination.md "TLS"); without `sslmode`, clear text on loopback only and
//! `verify-full` anywhere else.

use crate::tls::Policy;
use crate::CoordError;
use std::str::FromStr;
use tokio_postgres::Client;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Key of the advisory lock held while migrations run (any fixed number of ours).
const MIGRATION_LOCK: i64 = 0x6d66_636f_6f72_6401;

/// A `postgres://` URL. It may carry a password, so it is a secret: zeroized on drop,
/// `Debug` prints `[redacted]`, and it is never logged.
#[derive(Clone)]
pub struct DbUrl {
    /// As given (for a child process's environment).
    url: zeroize::Zeroizing<String>,
    /// Without `sslmode` and `sslrootcert`: what tokio-postgres parses.
    client: zeroize::Zeroizing<String>,
    /// What TLS the connections use.
    tls: Policy,
}

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DbUrl([redacted])")
    }
}

impl DbUrl {
    /// Checks `url` (`postgres://user@host:port/db?sslmode=...&sslrootcert=...`, or
    /// key=value form) and decides its TLS (docs/coordination.md, "TLS").
    pub fn new(url: &str) -> Result<DbUrl, CoordError> {
        let (client, mode, rootcert) = crate::tls::split_params(url);
        let client = zeroize::Zeroizing::new(client);
        let config = tokio_postgres::Config::from_str(&client).map_err(|e| {
            CoordError::Url(format!(
                "not a PostgreSQL connection string ({e}); expected \
                 postgres://USER@HOST:PORT/DATABASE[?sslmode=verify-full&sslrootcert=CA.pem]"
            ))
        })?;
        let tls = Policy::new(&config, mode.as_deref(), rootcert.as_deref())?;
        Ok(DbUrl {
            url: zeroize::Zeroizing::new(url.to_string()),
            client,
            tls,
        })
    }

    /// The URL itself, to hand to a child process's environment (`MAILFERRY_DB`); never
    /// for a log, a message or a command line.
    pub fn expose_secret(&self) -> &str {
        &self.url
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

/// Connects without touching the schema, with the TLS of the URL's policy.
pub(crate) async fn connect_raw(url: &DbUrl) -> Result<Client, CoordError> {
    let mut config = tokio_postgres::Config::from_str(&url.client)
        .map_err(|e| CoordError::Url(format!("not a PostgreSQL connection string ({e})")))?;
    config.ssl_mode(url.tls.pg_mode());
    let connector = url.tls.connector()?;
    let (client, connection) = config.connect(connector).await.map_err(|e| {
        url.tls
            .explain(&e)
            .unwrap_or_else(|| CoordError::db("connecting")(e))
    })?;
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
    // The same URL with another database: its query (sslmode, sslrootcert) stays.
    let s = server.expose_secret();
    let (path, query) = s.split_once('?').map_or((s, None), |(p, q)| (p, Some(q)));
    let base = path.rsplit_once('/').map_or(path, |(b, _)| b);
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    DbUrl::new(&format!("{base}/{db}{query}"))
}

/// Drops a database [`scratch_database`] made, connecting through `server` (another
/// database of the same server). Every connection to it must be closed.
pub async fn drop_database(server: &DbUrl, scratch: &DbUrl) -> Result<(), CoordError> {
    let s = scratch.expose_secret();
    let path = s.split_once('?').map_or(s, |(p, _)| p);
    let name = path.rsplit_once('/').map_or(path, |(_, n)| n);
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

    /// The PEM file of the test server's CA (`MAILFERRY_TEST_PG_CA`, which
    /// tests/services/services.sh prints), or `None` (with a note) outside CI.
    pub fn server_ca() -> Option<String> {
        match std::env::var("MAILFERRY_TEST_PG_CA") {
            Ok(p) if !p.is_empty() => Some(p),
            _ => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "MAILFERRY_TEST_PG_CA is not set in CI (tests/services/services.sh start prints it)"
                );
                eprintln!(
                    "skipped: MAILFERRY_TEST_PG_CA is not set (the test PostgreSQL of \
                     tests/services/services.sh speaks TLS and prints it)"
                );
                None
            }
        }
    }

    /// A connection to `url` (any sslmode) without touching the schema, for a test's own
    /// queries.
    pub async fn client(url: &str) -> Client {
        connect_raw(&DbUrl::new(url).expect("a PostgreSQL URL"))
            .await
            .expect("test PostgreSQL reachable")
    }

    /// Creates a fresh database named after `name` (plus a random suffix) on `server`
    /// and returns its URL.
    pub async fn fresh_database(server: &str, name: &str) -> String {
        let url = DbUrl::new(server).expect("MAILFERRY_TEST_PG is a PostgreSQL URL");
        scratch_database(&url, name)
            .await
            .expect("test PostgreSQL reachable")
            .expose_secret()
            .to_string()
    }
}
