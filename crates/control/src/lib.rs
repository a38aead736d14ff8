//! mailferry-control: the move control plane that the command line and the admin
//! service both drive.
//!
//! One move ([`moving`], to a [`destination`]: the agent against an embedded proxy and store over loopback
//! HTTPS, or against a remote `mailferry serve`), its lifecycle ([`lifecycle`]: start,
//! suspend, resume, complete, with state kept beside the move), batches of moves
//! ([`batch`]: which mailbox runs next, how many at once, an endpoint's shared limits),
//! endpoints ([`endpoint`]), what a move would do ([`dry_run`]), its status and reports
//! ([`status`], [`report`]), bad-item and large-item limits ([`limits`]), audit
//! verification and reconciliation ([`audit_cmd`]), export ([`export`]), volume
//! administration ([`volume_admin`], [`tokens`]) and the `serve` node ([`serve`]);
//! the versioned JSON records they keep are read through [`versioned`].
//!
//! It does not parse command lines, draw progress or render tables for a terminal: the
//! `mailferry` binary does that (passes report progress to an observer it passes in,
//! [`progress`]), and the admin service (`mailferry-admin`)
//! renders the same results as JSON and HTML. It never reads source mailboxes or writes
//! volumes itself: the agent and the store do, through the crates it wires together.

pub mod advice;
pub mod audit_cmd;
pub mod batch;
pub mod control;
pub mod destination;
pub mod dry_run;
pub mod endpoint;
pub mod error;
pub mod export;
pub mod lifecycle;
pub mod limits;
pub mod moving;
pub mod profile_cmd;
pub mod progress;
pub mod report;
pub mod rss;
pub mod serve;
pub mod status;
pub mod tokens;
pub mod units;
pub mod versioned;
pub mod volume_admin;

pub use error::AppError;
