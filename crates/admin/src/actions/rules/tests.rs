//! The state rule of every action, one case per sentence of issue 22.

use super::*;
use crate::jobs::JobKind;
use mailferry_control::batch::{MailboxStatus, Totals};

pub(crate) fn move_status(mailbox: &str, state: MoveState, passes: u64) -> MoveStatus {
    MoveStatus {
        mailbox: mailbox.into(),
        move_id: None,
        state,
        reason: None,
        running: false,
        percent_complete: 0.0,
        items_total: 0,
        items_synced: 0,
        items_skipped: 0,
        items_bad: 0,
        items_large: 0,
        items_approved: 0,
        bytes_transferred: 0,
        rate_bytes_per_s: 0.0,
        rate_messages_per_s: 0.0,
        eta_seconds: None,
        passes,
        last_sync_at: None,
        settings: Default::default(),
        skipped_items: Vec::new(),
        warnings: Vec::new(),
        history: Vec::new(),
    }
}

pub(crate) fn batch(moves: Vec<MoveStatus>, suspended: bool) -> BatchStatus {
    BatchStatus {
        name: "b1".into(),
        suspended,
        endpoint: "/x/ep.toml".into(),
        mailboxes: moves
            .into_iter()
            .enumerate()
            .map(|(i, status)| MailboxStatus {
                address: status.mailbox.clone(),
                user_name: format!("u{i}"),
                row: i as u64 + 2,
                status,
            })
            .collect(),
        totals: Totals::default(),
    }
}

fn running_job(scheduled: Option<&str>) -> JobStatus {
    JobStatus {
        kind: JobKind::Sync,
        running: true,
        scheduled_for: scheduled.map(String::from),
        started_at: "2026-12-04T13:16:05Z".into(),
        finished_at: None,
        outcome: None,
        error: None,
        interrupted: false,
    }
}

use BatchAction::*;
use MoveState::*;

fn allowed(s: &BatchStatus, job: Option<&JobStatus>) -> Vec<&'static str> {
    BatchAction::ALL
        .into_iter()
        .filter(|a| check_batch(s, job, *a).is_ok())
        .map(BatchAction::as_str)
        .collect()
}

#[test]
fn a_batch_that_never_started_can_only_start() {
    let s = batch(vec![move_status("a@x.org", Created, 0)], false);
    assert_eq!(allowed(&s, None), ["start"]);
    let why = check_batch(&s, None, Suspend).unwrap_err();
    assert!(why.contains("has not started"), "{why}");
    // Scheduled: it has started as far as Suspend goes, and Start waits.
    let j = running_job(Some("2030-01-01T00:00:00Z"));
    assert_eq!(allowed(&s, Some(&j)), ["suspend"]);
    assert!(check_batch(&s, Some(&j), Start)
        .unwrap_err()
        .contains("scheduled for"));
}

#[test]
fn no_start_while_a_pass_runs() {
    let mut m = move_status("a@x.org", Syncing, 0);
    m.running = true;
    let s = batch(vec![m, move_status("b@x.org", Created, 0)], false);
    let why = check_batch(&s, None, Start).unwrap_err();
    assert!(why.contains("runs now"), "{why}");
    assert_eq!(allowed(&s, None), ["suspend"]);
    let s = batch(vec![move_status("b@x.org", Created, 0)], false);
    assert!(check_batch(&s, Some(&running_job(None)), Start).is_err());
    assert!(check_run(&s, Some(&running_job(None))).is_err());
}

#[test]
fn a_failed_batch_offers_start_and_sync_for_different_mailboxes() {
    let s = batch(
        vec![
            move_status("a@x.org", Failed, 1),
            move_status("b@x.org", Synced, 1),
        ],
        false,
    );
    assert_eq!(allowed(&s, None), ["start", "sync", "complete", "suspend"]);
    let s = batch(vec![move_status("a@x.org", Failed, 1)], false);
    assert_eq!(allowed(&s, None), ["start", "suspend"]);
    assert!(check_batch(&s, None, Sync).unwrap_err().contains("Synced"));
}

#[test]
fn suspended_batches_only_resume_and_completed_ones_nothing() {
    let s = batch(vec![move_status("a@x.org", Suspended, 1)], true);
    assert_eq!(allowed(&s, None), ["resume"]);
    assert!(check_batch(&s, None, Complete)
        .unwrap_err()
        .contains("resume it first"));
    assert!(check_run(&s, None).unwrap_err().contains("resume it first"));
    let s = batch(vec![move_status("a@x.org", Completed, 2)], false);
    assert!(allowed(&s, None).is_empty());
    assert!(check_run(&s, None).unwrap_err().contains("completed"));
    assert!(check_batch(&s, None, Resume)
        .unwrap_err()
        .contains("not suspended"));
}

#[test]
fn approval_needs_a_move_not_completed_and_no_pass_running() {
    let m = move_status("a@x.org", Synced, 1);
    let s = batch(vec![m.clone()], false);
    assert!(check_approve(&s, None, &m).is_ok());
    assert!(check_approve(&s, Some(&running_job(None)), &m).is_err());
    let done = move_status("a@x.org", Completed, 2);
    assert!(check_approve(&s, None, &done)
        .unwrap_err()
        .contains("completed"));
}
