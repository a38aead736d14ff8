//! mailferry-coord: shared move coordination on PostgreSQL.
//!
//! With `--db postgres://...` the batches, endpoints, moves, lifecycle states, per-pass
//! reports and the source side's audit log of every move live in PostgreSQL instead of
//! local state directories, and any number of `mailferry worker` processes, on any
//! number of machines, lease the moves and run their passes. The schema, the lease
//! transaction and the fencing protocol are specified in docs/coordination.md.
//!
//! - [`db`]: the connection and the versioned schema (refinery migrations), with TLS
//!   per the URL's `sslmode` (`tls`, docs/coordination.md "TLS");
//! - [`locate`]: where a command finds the URL (`--db`, `--db-file`, the environment,
//!   the endpoint's `coordination_db_file`);
//! - [`files`]: a move's state directory as rows, and back;
//! - [`lease`]: leases, heartbeats and fencing;
//! - [`ops`]: `batch new|add-users|start|complete|suspend|resume|status`, the batch dry
//!   run, `move status` and the audit copy `audit verify` checks, on the database;
//! - [`schedule`]: a batch's scheduled start and completion, fired by the workers;
//! - [`worker`]: `mailferry worker`.
//!
//! It drives the control plane (`mailferry-control`) and never changes how one pass
//! runs: a pass is the same [`mailferry_control::lifecycle::run_pass_on`] as without
//! `--db`, on a local copy of the move's rows. Without `--db` nothing here is used; the
//! embedded default stays file-based. The control plane does not depend on this crate.

pub mod db;
pub mod error;
pub mod files;
pub mod lease;
pub mod locate;
pub mod ops;
pub mod schedule;
mod tls;
pub mod worker;

pub use db::{Db, DbUrl};
pub use error::CoordError;
pub use locate::{DbOrigin, DbSources};

#[cfg(test)]
mod tests;
