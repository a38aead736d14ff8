//! Percentages, times, rows and buttons as issue 22 asks for them.

use super::*;
use crate::actions::rules::tests::{batch, move_status};
use mailferry_control::advice::Advice;

#[test]
fn a_percentage_reaches_100_only_when_every_item_is_in() {
    assert_eq!(percent(1779, 1786, false), 99);
    assert_eq!(percent(1785, 1786, false), 99);
    assert_eq!(percent(1786, 1786, false), 100);
    assert_eq!(percent(0, 0, false), 0);
    assert_eq!(percent(0, 0, true), 100);
    assert_eq!(percent(1, 3, false), 33);
    let mut a = move_status("a@x.org", MoveState::Completed, 2);
    (a.items_synced, a.items_total) = (10, 10);
    let mut b = move_status("b@x.org", MoveState::Synced, 1);
    (b.items_synced, b.items_total) = (1779, 1786);
    assert_eq!(batch_percent(&batch(vec![a.clone(), b], false)), 99);
    // A mailbox that found nothing yet keeps the batch from looking done.
    let c = move_status("c@x.org", MoveState::Failed, 0);
    assert_eq!(batch_percent(&batch(vec![a.clone(), c], false)), 50);
    assert_eq!(batch_percent(&batch(vec![a], false)), 100);
}

#[test]
fn times_are_utc_in_one_format() {
    assert_eq!(when("2026-12-04T13:16:05Z"), "2026-12-04 13:16:05 UTC");
    assert_eq!(when("2026-12-04T14:16:05+01:00"), "2026-12-04 13:16:05 UTC");
    assert_eq!(when("not a time"), "not a time");
    assert_eq!(thousands(1786), "1,786");
    assert_eq!(thousands(1_234_567), "1,234,567");
    assert_eq!(thousands(12), "12");
}

#[test]
fn a_row_says_its_state_in_a_word_never_created_twice() {
    let mut m = move_status("a@x.org", MoveState::Created, 0);
    m.reason = Some("created".into());
    let r = move_row("b1", &m);
    assert_eq!((r.state_label, r.note.as_deref()), ("Created", None));
    let mut m = move_status("a@x.org", MoveState::Synced, 1);
    m.reason = Some(format!(
        "the final pass left 2 skipped item(s) nobody approved; {}",
        Advice::CheckThenCompleteApproving.cli()
    ));
    (m.items_skipped, m.items_approved) = (3, 1);
    let r = move_row("b1", &m);
    assert_eq!(r.note.as_deref(), Some("2 to approve"));
    assert!(r.approvable);
    assert_eq!(r.url, "/ui/moves/b1/a@x.org");
    assert_eq!(r.approve_url, "/ui/moves/b1/a@x.org/approve");
    let mut m = move_status("a@x.org", MoveState::Failed, 1);
    m.reason = Some("maildir /x: no such directory".into());
    assert_eq!(
        move_row("b1", &m).note.as_deref(),
        Some("error: see its page")
    );
}

#[test]
fn one_run_button_says_what_it_does_on_a_failed_batch() {
    let s = batch(
        vec![
            move_status("a@x.org", MoveState::Failed, 1),
            move_status("b@x.org", MoveState::Synced, 1),
        ],
        false,
    );
    let a = batch_actions(&s, None);
    let names: Vec<_> = a.iter().map(|a| a.action).collect();
    assert_eq!(names, ["start", "complete", "suspend", "resume"]);
    assert_eq!(a[0].label, "Retry failed");
    let hint = a[0].hint.as_deref().unwrap();
    assert!(
        hint.contains("retry of 1 failed") && hint.contains("delta pass of 1 synced"),
        "{hint}"
    );
    assert!(a[1].confirm && a[2].confirm && !a[0].confirm);
    assert!(!a[3].enabled);
    assert!(a[3].reason.as_deref().unwrap().contains("not suspended"));
    // Never started: only Start, and Suspend says why not.
    let s = batch(vec![move_status("a@x.org", MoveState::Created, 0)], false);
    let a = batch_actions(&s, None);
    assert_eq!((a[0].label, a[0].enabled), ("Start", true));
    assert!(a[0].hint.is_none());
    assert!(!a[2].enabled && a[2].reason.as_deref().unwrap().contains("has not started"));
}

#[test]
fn a_failed_move_keeps_its_error_after_a_suspend_and_resume() {
    use mailferry_control::lifecycle::Transition;
    let t = |state, reason: &str| Transition {
        state,
        at: "2026-12-04T13:16:05Z".into(),
        reason: reason.into(),
        actor: "admin:ada".into(),
    };
    let mut m = move_status("g@x.org", MoveState::Failed, 0);
    m.history = vec![
        t(MoveState::Created, "created"),
        t(
            MoveState::Failed,
            &format!("not a Maildir ({})", Advice::PointAtMailboxRoot.cli()),
        ),
        t(MoveState::Suspended, "suspended by admin:ada"),
        t(MoveState::Failed, "resumed by admin:ada"),
    ];
    m.reason = Some("resumed by admin:ada".into());
    // The last Failed entry is the resume; the one before says why it failed.
    let r = reason(&m).unwrap();
    assert!(
        r.starts_with("not a Maildir (set the endpoint's mailbox path"),
        "{r}"
    );
}

#[test]
fn page_text_leaves_out_api_references() {
    let cases = [
        (
            "no batch x; create it first (POST /api/v1/batches)",
            "no batch x; create it first",
        ),
        (
            "batch b has no mailbox m; see GET /api/v1/batches/b",
            "batch b has no mailbox m",
        ),
        (
            "batch b is suspended; resume it first (POST /api/v1/batches/b/resume)",
            "batch b is suspended; resume it first",
        ),
        (
            "ann must change the one-time password before anything else: choose a new password on the account page (/account/password) or with POST /api/v1/account/password",
            "ann must change the one-time password before anything else: choose a new password on the account page (/account/password)",
        ),
        (
            "batch b is running already; wait for the run to end (GET /api/v1/batches/b)",
            "batch b is running already; wait for the run to end",
        ),
    ];
    for (api, page) in cases {
        assert_eq!(page_text(api), page, "{api}");
    }
    // Text without a reference is left as it is; CLI advice gets the page's words.
    assert_eq!(page_text("all fine"), "all fine");
    assert!(!page_text(
        "check them (report.json, `mailferry move status`) and complete with --approve-skipped"
    )
    .contains("--"));
}
