//! The mailferry application: wires the agent, proxy and store together for the
//! command line (`move`, `serve`, `token`, `export`, `volume`, `demo`, `bench`). The
//! `mailferry` binary only parses flags and maps results to exit codes; everything it
//! runs lives here, with tests.

pub mod admin;
pub mod audit_cmd;
pub mod batch;
pub mod bench;
pub mod compare;
pub mod control;
pub mod demo;
pub mod dovecot;
pub mod dry_run;
pub mod endpoint;
pub mod error;
pub mod examples;
pub mod export;
pub mod lifecycle;
pub mod limits;
pub mod logging;
pub mod moving;
pub mod profile_cmd;
pub mod progress;
pub mod report;
pub mod rss;
pub mod sample;
pub mod serve;
pub mod status;
pub mod tokens;
pub mod volume_admin;

pub use error::AppError;
