//! Errors of the application layer, each with the process exit code it maps to.

use thiserror::Error;

/// What a command can fail with.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AppError {
    /// The command line or a configuration file is wrong (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The store refused (wrong key, damaged volume, ...).
    #[error(transparent)]
    Store(#[from] mailferry_store::StoreError),
    /// A volume on object storage (`--volume s3://...`) could not be reached, restored
    /// or written.
    #[error(transparent)]
    Bucket(#[from] mailferry_bucket::BucketError),
    /// The agent failed (source unreadable, connection lost, ...).
    #[error(transparent)]
    Agent(#[from] mailferry_agent::AgentError),
    /// The proxy could not start.
    #[error(transparent)]
    Proxy(#[from] mailferry_proxy::ProxyError),
    /// Shared-vocabulary errors (bad profile, bad mailbox, TLS setup).
    #[error(transparent)]
    Core(#[from] mailferry_core::CoreError),
    /// A file of ours could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The command ran but its result is a failure (damaged items, lost connection).
    #[error("{0}")]
    Failed(String),
    /// A move hit its bad-item or large-item limit, or its final pass left skipped
    /// items nobody approved (exit code 3). What it copied is kept.
    #[error("{0}")]
    LimitHit(String),
    /// Some mailboxes of a batch failed; the others went on (exit code 4).
    #[error("{0}")]
    BatchFailed(String),
    /// The store refused the pass for good: a newer lease (another worker) owns the
    /// mailbox, so this worker's lease was taken over (exit code 1). Not retried.
    #[error("{message}")]
    Fenced {
        /// The mailbox.
        mailbox: String,
        /// This pass's fencing number.
        fence: u64,
        /// The store's explanation, naming the newer fencing number.
        message: String,
    },
    /// The move's lifecycle state refuses the request: a completed move takes no more
    /// passes, a suspended one none until it is resumed (exit code 5).
    #[error("{0}")]
    Refused(String),
}

impl AppError {
    /// Exit code: 2 usage or configuration, 3 a limit hit, 4 some mailboxes of a batch
    /// failed, 5 refused by the move's state, 1 anything else (README, "Exit codes").
    pub fn exit_code(&self) -> u8 {
        use mailferry_core::CoreError as C;
        use mailferry_store::StoreError as S;
        match self {
            AppError::LimitHit(_) => 3,
            AppError::BatchFailed(_) => 4,
            AppError::Refused(_) => 5,
            AppError::Usage(_) => 2,
            AppError::Core(C::Profile { .. } | C::BadMailbox { .. } | C::BadFolder { .. }) => 2,
            AppError::Store(S::WrongKey { .. } | S::KeyFile { .. } | S::Replica { .. }) => 2,
            AppError::Bucket(
                mailferry_bucket::BucketError::Location { .. }
                | mailferry_bucket::BucketError::Credentials { .. },
            ) => 2,
            AppError::Bucket(mailferry_bucket::BucketError::Store(
                S::WrongKey { .. } | S::KeyFile { .. },
            )) => 2,
            _ => 1,
        }
    }

    /// An agent error as the control plane reports it: a fenced refusal becomes
    /// [`AppError::Fenced`], anything else [`AppError::Agent`].
    pub fn from_agent(e: mailferry_agent::AgentError) -> AppError {
        match e {
            mailferry_agent::AgentError::Fenced {
                mailbox,
                fence,
                message,
            } => AppError::Fenced {
                mailbox,
                fence,
                message,
            },
            e => AppError::Agent(e),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> AppError {
        AppError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
