//! The mailferry application: wires the agent, proxy and store together for the
//! command line (`move`, `serve`, `token`, `export`, `volume`, `demo`, `bench`). The
//! `mailferry` binary only parses flags and maps results to exit codes; everything it
//! runs lives here, with tests.

pub mod audit_cmd;
pub mod bench;
pub mod compare;
pub mod demo;
pub mod error;
pub mod export;
pub mod moving;
pub mod profile_cmd;
pub mod report;
pub mod rss;
pub mod sample;
pub mod serve;
pub mod tokens;
pub mod volume_admin;

pub use error::AppError;
