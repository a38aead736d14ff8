//! `mailferry profile ...`: check a migration profile, print the default, show every
//! effective value and where it came from.

use super::load_profile;
use crate::render::print_json;
use mailferry_control::{profile_cmd, AppError};
use std::path::PathBuf;

/// `profile ...`.
#[derive(clap::Subcommand)]
pub enum ProfileCmd {
    /// Parse a profile and report every problem at once.
    Check {
        /// The profile file.
        file: PathBuf,
    },
    /// Print the embedded default profile.
    Default,
    /// Print every effective value and where it came from (default, file or flag).
    #[command(after_help = "Examples:
  mailferry profile show                                   # the built-in defaults
  mailferry profile show migration-profiles/gmail-imap.toml
  mailferry profile show my.toml --set limits.bad_item_limit=5 --set filter.after=365d --json")]
    Show {
        /// The profile file; the built-in defaults when absent.
        file: Option<PathBuf>,
        /// Override a key, as a move's flags would (repeatable): KEY=VALUE, the value
        /// read as TOML, or as a string when it is not TOML.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = profile_cmd::parse_set)]
        set: Vec<(String, String)>,
        /// JSON on stdout: {"name", "file", "settings": {KEY: {"value", "from"}}}.
        #[arg(long)]
        json: bool,
    },
}

/// `profile ...`.
pub fn run(cmd: ProfileCmd) -> Result<(), AppError> {
    match cmd {
        ProfileCmd::Check { file } => {
            let p = load_profile(Some(&file))?;
            println!("{}: ok (profile {:?})", file.display(), p.name);
        }
        ProfileCmd::Default => print!("{}", mailferry_core::profile::DEFAULT_PROFILE),
        ProfileCmd::Show { file, set, json } => {
            let effective = profile_cmd::load(file.as_deref(), &set)?;
            if json {
                print_json(&profile_cmd::to_json(&effective));
            } else {
                print!("{}", profile_cmd::render_text(&effective));
            }
        }
    }
    Ok(())
}
