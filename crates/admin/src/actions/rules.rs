//! Which lifecycle action makes sense in a batch's current state: the one rule both
//! the REST API (a refusal is a 409 with the reason) and the pages (a disabled button
//! with the reason beside it) follow. It reads a batch's status and its latest run; it
//! changes nothing and checks no role (the actions do).
//!
//! The reasons speak of states and of what to do on the pages' own terms (Resume,
//! Approve skipped); never of flags, commands or API paths, since the pages show them.

use crate::jobs::JobStatus;
use mailferry_control::batch::BatchStatus;
use mailferry_control::lifecycle::MoveState;
use mailferry_control::status::MoveStatus;

/// A lifecycle action on a whole batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchAction {
    /// The first copy of mailboxes that never ran, and a retry of failed ones.
    Start,
    /// A delta pass of synced mailboxes (the same run as Start: every mailbox not
    /// completed gets a pass).
    Sync,
    /// Hold every mailbox not completed.
    Suspend,
    /// Let a suspended batch run again.
    Resume,
    /// The final delta pass (cut-over).
    Complete,
}

impl BatchAction {
    /// Every action, in the order the pages show them.
    pub const ALL: [BatchAction; 5] = [
        BatchAction::Start,
        BatchAction::Sync,
        BatchAction::Complete,
        BatchAction::Suspend,
        BatchAction::Resume,
    ];

    /// The name in URLs and element ids.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchAction::Start => "start",
            BatchAction::Sync => "sync",
            BatchAction::Suspend => "suspend",
            BatchAction::Resume => "resume",
            BatchAction::Complete => "complete",
        }
    }

    /// The action named `s`.
    pub fn parse(s: &str) -> Option<BatchAction> {
        BatchAction::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

fn any(s: &BatchStatus, f: impl Fn(&MoveStatus) -> bool) -> bool {
    s.mailboxes.iter().any(|m| f(&m.status))
}

/// Refuses a new pass while one runs, is scheduled, or the batch is suspended.
fn no_run_now(s: &BatchStatus, job: Option<&JobStatus>) -> Result<(), String> {
    if s.suspended {
        return Err(format!("batch {} is suspended; resume it first", s.name));
    }
    if let Some(j) = job.filter(|j| j.running) {
        return Err(match &j.scheduled_for {
            Some(at) => format!(
                "a run of batch {} is scheduled for {at}; it starts then",
                s.name
            ),
            None => format!("a pass of batch {} runs now; wait until it ends", s.name),
        });
    }
    if let Some(m) = s.mailboxes.iter().find(|m| m.status.running) {
        return Err(format!(
            "a pass of {} runs now; wait until it ends",
            m.address
        ));
    }
    Ok(())
}

/// Whether `action` makes sense for the batch now, and why not.
pub fn check_batch(
    s: &BatchStatus,
    job: Option<&JobStatus>,
    action: BatchAction,
) -> Result<(), String> {
    let all_completed = !s.mailboxes.is_empty()
        && s.mailboxes
            .iter()
            .all(|m| m.status.state == MoveState::Completed);
    if all_completed && action != BatchAction::Resume {
        return Err(format!("every mailbox of batch {} is completed", s.name));
    }
    match action {
        BatchAction::Start => {
            no_run_now(s, job)?;
            if !any(s, |m| {
                matches!(m.state, MoveState::Created | MoveState::Failed)
            }) {
                return Err(
                    "every mailbox has had its first copy; Sync again copies what arrived since"
                        .into(),
                );
            }
            Ok(())
        }
        BatchAction::Sync | BatchAction::Complete => {
            no_run_now(s, job)?;
            if !any(s, |m| m.state == MoveState::Synced) {
                return Err(if action == BatchAction::Sync {
                    "no mailbox is Synced yet; Start runs the first copy".into()
                } else {
                    "no mailbox is Synced yet; the final pass follows a first copy".into()
                });
            }
            Ok(())
        }
        BatchAction::Suspend => {
            if s.suspended {
                return Err(format!("batch {} is suspended already", s.name));
            }
            let started = job.is_some_and(|j| j.running)
                || any(s, |m| {
                    m.passes > 0 || m.running || m.state != MoveState::Created
                });
            if !started {
                return Err(format!(
                    "batch {} has not started; there is nothing to suspend",
                    s.name
                ));
            }
            Ok(())
        }
        BatchAction::Resume => {
            if !s.suspended && !any(s, |m| m.state == MoveState::Suspended) {
                return Err(format!("batch {} is not suspended", s.name));
            }
            Ok(())
        }
    }
}

/// Whether the API's `start` (a pass of every mailbox not completed: Start and Sync
/// again of the pages) makes sense now.
pub fn check_run(s: &BatchStatus, job: Option<&JobStatus>) -> Result<(), String> {
    check_batch(s, job, BatchAction::Start)
        .or_else(|e| check_batch(s, job, BatchAction::Sync).map_err(|_| e))
}

/// Whether an approval pass of `mailbox` makes sense now (it accepts whatever the move
/// skipped; the pages offer it only when skipped items wait for approval).
pub fn check_approve(
    s: &BatchStatus,
    job: Option<&JobStatus>,
    mailbox: &MoveStatus,
) -> Result<(), String> {
    if mailbox.state == MoveState::Completed {
        return Err(format!(
            "the move of {} is completed; it takes no more passes",
            mailbox.mailbox
        ));
    }
    no_run_now(s, job)
}

/// Skipped items of `m` no admin accepted yet.
pub fn awaiting_approval(m: &MoveStatus) -> u64 {
    m.items_skipped.saturating_sub(m.items_approved)
}

#[cfg(test)]
pub(crate) mod tests;
