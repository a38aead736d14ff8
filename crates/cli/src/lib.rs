//! The mailferry application: wires the agent, proxy and store together for the
//! command line (`move`, `serve`, `token`, `export`, `volume`, `demo`). The `mailferry` binary only parses
//! flags and maps results to exit codes; everything it runs lives here, with tests.

pub mod audit_cmd;
pub mod compare;
pub mod demo;
pub mod error;
pub mod export;
pub mod moving;
pub mod report;
pub mod rss;
pub mod sample;
pub mod serve;
pub mod tokens;
pub mod volume_admin;

pub use error::AppError;
