//! Where a command finds the coordination database's URL, so that an admin does not
//! have to put a password on a command line (where `ps` shows it).
//!
//! In order, the first one given wins (docs/coordination.md, "Where the URL comes
//! from"): the command line (`--db URL`, then `--db-file PATH`), the environment
//! (`MAILFERRY_DB`, then `MAILFERRY_DB_FILE`), then the source endpoint's
//! `coordination_db_file` where the command has an endpoint. A file holds the URL on
//! one line and must be owner-only: one that others can read or write is refused, since
//! it may hold the password. This module only finds and reads the URL; it does not
//! connect.

use crate::{CoordError, DbUrl};
use std::path::{Path, PathBuf};

/// What a command was given to find the database with.
#[derive(Clone, Default)]
pub struct DbSources {
    /// `--db URL`. A secret: never logged.
    pub flag: Option<zeroize::Zeroizing<String>>,
    /// `--db-file PATH`.
    pub flag_file: Option<PathBuf>,
    /// `MAILFERRY_DB`. A secret.
    pub env: Option<zeroize::Zeroizing<String>>,
    /// `MAILFERRY_DB_FILE`.
    pub env_file: Option<PathBuf>,
    /// The source endpoint file whose `coordination_db_file` is the last resort.
    pub endpoint: Option<PathBuf>,
}

impl std::fmt::Debug for DbSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |o: &Option<zeroize::Zeroizing<String>>| o.as_ref().map(|_| "[redacted]");
        f.debug_struct("DbSources")
            .field("flag", &redacted(&self.flag))
            .field("flag_file", &self.flag_file)
            .field("env", &redacted(&self.env))
            .field("env_file", &self.env_file)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// Where the URL in use was found (no secret: a flag name or a path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbOrigin {
    /// `--db`.
    Flag,
    /// `--db-file PATH`.
    FlagFile(PathBuf),
    /// `MAILFERRY_DB`.
    Env,
    /// `MAILFERRY_DB_FILE=PATH`.
    EnvFile(PathBuf),
    /// `coordination_db_file = PATH` of the endpoint file.
    Endpoint {
        /// The endpoint file.
        endpoint: PathBuf,
        /// The file it names.
        file: PathBuf,
    },
}

impl std::fmt::Display for DbOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbOrigin::Flag => f.write_str("--db"),
            DbOrigin::FlagFile(p) => write!(f, "--db-file {}", p.display()),
            DbOrigin::Env => f.write_str("MAILFERRY_DB"),
            DbOrigin::EnvFile(p) => write!(f, "MAILFERRY_DB_FILE={}", p.display()),
            DbOrigin::Endpoint { endpoint, file } => write!(
                f,
                "coordination_db_file = {} of endpoint {}",
                file.display(),
                endpoint.display()
            ),
        }
    }
}

impl DbSources {
    /// The command's flags, with `MAILFERRY_DB` and `MAILFERRY_DB_FILE` from this
    /// process's environment (an empty variable counts as unset).
    pub fn with_env(
        flag: Option<String>,
        flag_file: Option<PathBuf>,
        endpoint: Option<PathBuf>,
    ) -> DbSources {
        let var = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
        DbSources {
            flag: flag.map(zeroize::Zeroizing::new),
            flag_file,
            env: var("MAILFERRY_DB").map(zeroize::Zeroizing::new),
            env_file: var("MAILFERRY_DB_FILE").map(PathBuf::from),
            endpoint,
        }
    }

    /// True if a URL or a file was given other than through the endpoint.
    pub fn given(&self) -> bool {
        self.flag.is_some()
            || self.flag_file.is_some()
            || self.env.is_some()
            || self.env_file.is_some()
    }

    /// The URL of the first source given, and where it came from; `None` if none was.
    /// Sources after the first are not read.
    pub fn locate(&self) -> Result<Option<(DbUrl, DbOrigin)>, CoordError> {
        let found = if let Some(u) = &self.flag {
            Some((DbUrl::new(u)?, DbOrigin::Flag))
        } else if let Some(p) = &self.flag_file {
            Some((
                read_url_file(p, "--db-file")?,
                DbOrigin::FlagFile(p.clone()),
            ))
        } else if let Some(u) = &self.env {
            Some((DbUrl::new(u)?, DbOrigin::Env))
        } else if let Some(p) = &self.env_file {
            let url = read_url_file(p, "MAILFERRY_DB_FILE")?;
            Some((url, DbOrigin::EnvFile(p.clone())))
        } else if let Some(ep) = &self.endpoint {
            endpoint_file(ep)?
                .map(|file| {
                    let url = read_url_file(
                        &file,
                        &format!("coordination_db_file of endpoint {}", ep.display()),
                    )?;
                    let origin = DbOrigin::Endpoint {
                        endpoint: ep.clone(),
                        file,
                    };
                    Ok::<_, CoordError>((url, origin))
                })
                .transpose()?
        } else {
            None
        };
        if let Some((_, origin)) = &found {
            tracing::debug!(%origin, "coordination database");
        }
        Ok(found)
    }
}

/// The `coordination_db_file` of the endpoint file `ep` (relative paths are relative to
/// the endpoint file, as every path in it).
fn endpoint_file(ep: &Path) -> Result<Option<PathBuf>, CoordError> {
    Ok(mailferry_control::endpoint::Endpoint::load(ep)?.coordination_db_file)
}

/// Reads a URL file (`what` names where its path came from, for messages): owner-only,
/// one non-empty line.
fn read_url_file(path: &Path, what: &str) -> Result<DbUrl, CoordError> {
    if let Some(why) = mailferry_audit::private::exposed(path, "database URL file") {
        return Err(CoordError::Url(format!(
            "{what}: {why}; refused, since the URL may hold the database password"
        )));
    }
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        CoordError::Url(format!(
            "{what} {}: {e}; the file must hold the URL (postgres://USER@HOST:PORT/DATABASE)",
            path.display()
        ))
    })?);
    let url = text.trim();
    if url.is_empty() || url.contains('\n') {
        return Err(CoordError::Url(format!(
            "{what} {}: the file must hold the URL on one line, and nothing else",
            path.display()
        )));
    }
    DbUrl::new(url).map_err(|e| match e {
        CoordError::Url(m) => CoordError::Url(format!("{what} {}: {m}", path.display())),
        other => other,
    })
}

#[cfg(test)]
mod tests;
