//! `mailferry endpoint test`: check a source endpoint before anything moves.

use crate::render::json_or_text;
use mailferry_control::{endpoint, AppError};
use std::path::PathBuf;

/// `endpoint ...`.
#[derive(clap::Subcommand)]
pub enum EndpointCmd {
    /// Check an endpoint before anything moves: connectivity, TLS, credentials (IMAP:
    /// connect, log in and list through the IMAP source), or that a user's mailbox path
    /// exists and is a mailbox of the endpoint's kind. Exit 1 if a check fails.
    Test {
        /// The endpoint file (TOML).
        file: PathBuf,
        /// Check this user's mailbox (the CSV's UserName).
        #[arg(long)]
        user: Option<String>,
        /// IMAP without a master user: the user's password file (default: the
        /// environment variable MAILFERRY_SOURCE_PASSWORD).
        #[arg(long, requires = "user")]
        password_file: Option<PathBuf>,
        /// JSON on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `endpoint test`: exit 1 if a check fails.
pub async fn run(cmd: EndpointCmd) -> Result<(), AppError> {
    let EndpointCmd::Test {
        file,
        user,
        password_file,
        json,
    } = cmd;
    let ep = endpoint::Endpoint::load(&file)?;
    let r = endpoint::test(&ep, user.as_deref(), password_file.as_deref()).await?;
    json_or_text(json, &r, endpoint::render_text);
    if r.ok {
        Ok(())
    } else {
        Err(AppError::Failed(format!(
            "endpoint {}: {} check(s) failed",
            file.display(),
            r.checks.iter().filter(|c| !c.ok).count()
        )))
    }
}
