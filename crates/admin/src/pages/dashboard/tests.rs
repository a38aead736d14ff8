//! The dashboard's banner and the confirmation and mailbox pages' words.

use super::*;
use crate::actions::rules::tests::{batch, move_status};

fn info(s: mailferry_control::batch::BatchStatus, running: bool) -> BatchInfo {
    BatchInfo {
        status: s,
        job: running.then(|| crate::jobs::JobStatus {
            kind: crate::jobs::JobKind::Complete,
            running: true,
            scheduled_for: None,
            started_at: "2026-12-04T13:16:05Z".into(),
            finished_at: None,
            outcome: None,
            error: None,
            interrupted: false,
        }),
        admin: None,
    }
}

#[test]
fn the_banner_says_only_our_own_words_and_goes_when_its_news_is_over() {
    let completing = vec![info(
        batch(
            vec![move_status("a@x.org", MoveState::Completing, 1)],
            false,
        ),
        true,
    )];
    assert_eq!(
        flash("completing", "b1", &completing).unwrap(),
        "Batch b1: completing: the final delta pass runs now."
    );
    let completed = vec![info(
        batch(vec![move_status("a@x.org", MoveState::Completed, 2)], false),
        false,
    )];
    assert!(flash("completing", "b1", &completed).is_none());
    // A fact that stays true keeps its banner.
    assert!(flash("suspended", "b1", &completed).is_some());
    assert!(flash("Your session expired, log in at", "b1", &completing).is_none());
}

#[test]
fn pages_speak_no_command_line() {
    use mailferry_control::advice::Advice;
    let reason = format!(
        "limit hit: 3 bad items; ({})",
        Advice::FixOrApproveSkipped.cli()
    );
    let web = super::super::mailbox::reason_text(&reason).unwrap();
    assert!(!web.contains("--") && !web.contains('`'), "{web}");
    assert_eq!(
        super::super::mailbox::reason_text(
            "large item: 200123 bytes, over filter.max_message_bytes (100000)"
        )
        .unwrap(),
        "larger than the batch's large item size (0.1 MB)"
    );
    assert_eq!(
        super::super::mailbox::maildir_date("1700000000.M1P1.large-item:2,S").unwrap(),
        "2023-11-14 22:13:20 UTC"
    );
    assert!(super::super::mailbox::maildir_date("17.mbox").is_none());
}
