//! One module per command family: each declares its clap arguments next to the `run`
//! that calls `mailferry_control`, `mailferry_admin` or `mailferry_bench` and renders the
//! outcome. Shared here: flags several families take, and the small conversions every
//! family needs (profile, mailbox address).

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
pub mod token;
pub mod volume;

use mailferry_control::{volume_admin, AppError};
use mailferry_core::profile::Profile;
use mailferry_core::MailboxAddr;
use mailferry_store::Volume;
use std::path::{Path, PathBuf};

/// A volume and how to unlock it: the first flags of every command that opens one.
#[derive(clap::Args)]
pub struct VolumeAccess {
    /// Volume directory.
    #[arg(long)]
    pub volume: PathBuf,
    #[command(flatten)]
    pub unlock: volume_admin::UnlockArgs,
}

impl VolumeAccess {
    /// Opens the volume with the embedded default profile's store settings.
    pub fn open(&self) -> Result<Volume, AppError> {
        volume_admin::open(&self.volume, &self.unlock)
    }
}

/// The migration profile at `path`, or the embedded default.
pub fn load_profile(path: Option<&Path>) -> Result<Profile, AppError> {
    match path {
        None => Ok(Profile::embedded_default()),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| AppError::io(p, e))?;
            Ok(Profile::parse(&text, &p.display().to_string())?)
        }
    }
}

/// A mailbox address given on the command line.
pub fn mailbox(s: &str) -> Result<MailboxAddr, AppError> {
    Ok(MailboxAddr::parse(s)?)
}
