//! Errors of the coordination crate. Each names what failed and what to do.

use thiserror::Error;

/// What coordination on PostgreSQL can fail with.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CoordError {
    /// The database could not be reached or refused a statement.
    #[error("PostgreSQL: {what}: {}; check that the server runs and that --db (or --db-file, MAILFERRY_DB, MAILFERRY_DB_FILE) names it", server_words(source))]
    Db {
        /// What was being done.
        what: String,
        /// The client's error.
        source: tokio_postgres::Error,
    },
    /// The schema migrations failed.
    #[error("PostgreSQL: applying the schema migrations failed: {0}; the database is left at its last complete version, fix the cause and run again")]
    Migrate(String),
    /// TLS to the database failed or was refused: the server offers no TLS where the mode
    /// requires it, or its certificate failed a check.
    #[error("PostgreSQL at {host} (sslmode={mode}): {reason}")]
    Tls {
        /// The hosts of the URL (`host:port`).
        host: String,
        /// The mode in effect.
        mode: String,
        /// What failed and what to do.
        reason: String,
    },
    /// The `--db` URL is not one we can use.
    #[error("--db: {0}")]
    Url(String),
    /// A row holds something we cannot read (written by a newer mailferry, or edited).
    #[error("database row {what}: {reason}")]
    BadRow {
        /// Which row.
        what: String,
        /// Why.
        reason: String,
    },
    /// Nothing of that name.
    #[error("{0}")]
    NotFound(String),
    /// The lease of the move was taken over by another worker (a higher epoch): this
    /// worker must not write anything more for it.
    #[error("move {move_id}: lease lost (epoch {mine} is no longer the move's; another worker holds it now); this worker stops the pass and writes nothing more")]
    Fenced {
        /// The move.
        move_id: String,
        /// The epoch this worker held.
        mine: i64,
    },
    /// A file of the local copy of a move's state could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The control plane refused or failed (the same errors as without `--db`).
    #[error(transparent)]
    App(#[from] mailferry_control::AppError),
}

/// The client's error with what the server said, if it said something (else its
/// cause): tokio-postgres prints only "db error" for a refusal (a pg_hba rule, a wrong password, a missing
/// database), and the server's words are what tells an admin what to fix.
fn server_words(e: &tokio_postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        // "error connecting to server" alone does not say "connection refused".
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    }
}

impl CoordError {
    pub(crate) fn db(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> CoordError {
        let what = what.into();
        move |source| CoordError::Db { what, source }
    }

    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> CoordError + '_ {
        move |source| CoordError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

impl From<CoordError> for mailferry_control::AppError {
    fn from(e: CoordError) -> Self {
        use mailferry_control::AppError;
        match e {
            CoordError::App(a) => a,
            CoordError::Url(_) | CoordError::Tls { .. } | CoordError::NotFound(_) => {
                AppError::Usage(e.to_string())
            }
            other => AppError::Failed(other.to_string()),
        }
    }
}
