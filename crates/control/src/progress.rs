//! How a runner of passes tells its caller about live progress: an [`Observer`] the
//! caller passes in (a move's `moving::PassHooks`, a batch's `batch::RunOptions`) and
//! the runner feeds with each mailbox's [`Progress`] counters and outcome. It depends
//! on no runner.
//!
//! This crate draws nothing: the `mailferry` binary implements the observer as bars on
//! a terminal or periodic log lines, the admin service reads the counters it needs
//! itself, and tests and benchmarks give none. An observer only reads counters; a pass
//! runs the same with or without one.
//!
//! ```
//! use mailferry_agent::pass::Progress;
//! use mailferry_control::progress::Observer;
//! use mailferry_core::report::MoveReport;
//! use std::sync::{Arc, Mutex};
//!
//! /// Remembers which mailboxes failed.
//! #[derive(Default)]
//! struct Failures(Mutex<Vec<String>>);
//!
//! impl Observer for Failures {
//!     fn mailbox(&self, _name: &str, _counters: Arc<Progress>) {}
//!     fn finish(&self, name: &str, outcome: Result<&MoveReport, &dyn std::fmt::Display>) {
//!         if let Err(e) = outcome {
//!             self.0.lock().unwrap().push(format!("{name}: {e}"));
//!         }
//!     }
//! }
//!
//! let f = Failures::default();
//! f.begin(1);
//! f.mailbox("a@example.com", Arc::default());
//! f.finish("a@example.com", Err(&"no route to host"));
//! f.end();
//! assert_eq!(*f.0.lock().unwrap(), ["a@example.com: no route to host"]);
//! ```

pub use mailferry_agent::pass::Progress;
use mailferry_core::report::MoveReport;
use std::fmt::Display;
use std::sync::Arc;

/// Receives the progress of a run of passes: [`Observer::begin`] once, then
/// [`Observer::mailbox`] as each pass starts and [`Observer::finish`] as it ends, then
/// [`Observer::end`] once. A single move (`moving`) reports no `finish`: its command
/// prints the report itself. Calls may come from several tasks at once.
pub trait Observer: Send + Sync {
    /// A run of passes of `mailboxes` mailboxes begins.
    fn begin(&self, mailboxes: u64) {
        let _ = mailboxes;
    }

    /// The pass of mailbox `name` started; it updates `counters` as it goes.
    fn mailbox(&self, name: &str, counters: Arc<Progress>);

    /// The pass of `name` ended with its report, or did not run or failed for the
    /// reason given.
    fn finish(&self, name: &str, outcome: Result<&MoveReport, &dyn Display>);

    /// The run ended: no further calls come.
    fn end(&self) {}
}

impl std::fmt::Debug for dyn Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn Observer")
    }
}
