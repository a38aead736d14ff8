//! One module per command family: each declares its clap arguments next to the `run`
//! that calls `mailferry_control`, `mailferry_admin` or `mailferry_bench` and renders the
//! outcome. Shared here: flags several families take, and the small conversions every
//! family needs.

pub mod access;
pub mod admin;
pub mod audit;
pub mod batch;
pub mod bench;
pub mod demo;
pub mod endpoint;
pub mod export;
pub mod moving;
pub mod profile;
pub mod serve;
pub mod tenant;
pub mod token;
pub mod volume;
pub mod worker;

pub use mailferry_control::lifecycle::load_profile;
use mailferry_control::{volume_admin, AppError};
use mailferry_core::MailboxAddr;
use mailferry_store::Volume;
use std::path::{Path, PathBuf};

/// The coordination database on PostgreSQL: `--db` or `--db-file`, else the environment,
/// else (where the command has one) the source endpoint's `coordination_db_file`.
#[derive(clap::Args, Clone)]
pub struct DbArgs {
    /// Coordination database on PostgreSQL: postgres://USER@HOST:PORT/DATABASE, with
    /// ?sslmode=verify-full&sslrootcert=CA.pem for TLS (docs/coordination.md). The first
    /// given of --db, --db-file, env MAILFERRY_DB, env MAILFERRY_DB_FILE, then the
    /// endpoint's coordination_db_file (batch new) is used
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
    /// A file holding the database URL on one line, owner-only (chmod 600): keeps the
    /// password off the command line
    #[arg(long, value_name = "PATH", conflicts_with = "db")]
    pub db_file: Option<PathBuf>,
}

impl DbArgs {
    /// The database URL from the first source given, if any; `endpoint` is the source
    /// endpoint file when the command has one.
    pub fn url(&self, endpoint: Option<&Path>) -> Result<Option<mailferry_coord::DbUrl>, AppError> {
        let sources = mailferry_coord::DbSources::with_env(
            self.db.clone(),
            self.db_file.clone(),
            endpoint.map(Path::to_path_buf),
        );
        Ok(sources.locate()?.map(|(url, _)| url))
    }
}

/// A volume and how to unlock it: the first flags of every command that opens one.
#[derive(clap::Args)]
pub struct VolumeAccess {
    /// Volume directory, or `s3://bucket/prefix` for a volume on object storage (see
    /// --s3-endpoint, --cache-dir).
    #[arg(long)]
    pub volume: PathBuf,
    #[command(flatten)]
    pub unlock: volume_admin::UnlockArgs,
    #[command(flatten)]
    pub s3: volume_admin::S3Args,
    /// The tenant's key file (from `tenant key init`): reads that tenant's
    /// customer-key mailboxes, which the volume key alone cannot.
    #[arg(long, value_name = "FILE")]
    pub tenant_key: Option<PathBuf>,
}

impl VolumeAccess {
    /// Opens the volume with the embedded default profile's store settings (and the
    /// tenant key, if given).
    pub fn open(&self) -> Result<Volume, AppError> {
        volume_admin::open_for_read_s3(
            &self.volume,
            &self.unlock,
            self.tenant_key.as_deref(),
            &self.s3,
        )
    }
}

/// A mailbox address given on the command line.
pub fn mailbox(s: &str) -> Result<MailboxAddr, AppError> {
    Ok(MailboxAddr::parse(s)?)
}

/// A server certificate given on the command line (`serve`, `admin serve`).
#[derive(clap::Args)]
pub struct TlsFlags {
    /// Server certificate chain (PEM); without it a CA and a certificate are created
    /// once in --tls-dir.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PKCS#8 PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl TlsFlags {
    /// The certificate and its key, if given (clap requires both or neither).
    pub fn pair(self) -> Option<(PathBuf, PathBuf)> {
        self.tls_cert.zip(self.tls_key)
    }
}
