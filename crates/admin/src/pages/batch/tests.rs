//! The batch report as CSV.

use super::*;
use crate::actions::rules::tests::{batch, move_status};
use mailferry_control::lifecycle::MoveState;

#[test]
fn the_csv_has_a_line_per_mailbox_quotes_and_defuses_formulas() {
    let mut a = move_status("=cmd@x.org", MoveState::Failed, 0);
    a.reason = Some("the pass failed: \"x\", y".into());
    let b = move_status("b@x.org", MoveState::Synced, 1);
    let info = BatchInfo {
        status: batch(vec![a, b], false),
        job: None,
        admin: None,
    };
    let csv = report_csv(&report_lines(&info));
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(lines.len(), 4, "{csv:?}");
    assert!(lines[0].starts_with("mailbox,user_name,state,"));
    assert!(
        lines[1].starts_with("'=cmd@x.org,u0,Failed,0,"),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].ends_with(",\"the pass failed: \"\"x\"\", y\""),
        "{}",
        lines[1]
    );
    assert!(lines[2].starts_with("b@x.org,u1,Synced,"), "{}", lines[2]);
    assert_eq!(lines[3], "");
}

#[test]
fn the_facts_say_how_the_batch_completes() {
    let meta = |completion| crate::actions::AdminBatchMeta {
        migration_type: "file".into(),
        endpoint: "src".into(),
        settings: crate::actions::BatchSettings {
            completion,
            ..Default::default()
        },
        created_by: "ann".into(),
    };
    for (completion, says) in [
        (
            crate::actions::Completion::Automatic,
            "as soon as every mailbox is synced",
        ),
        (
            crate::actions::Completion::After {
                at: "2026-12-05T07:00:00Z".into(),
            },
            "at or after 2026-12-05 07:00:00 UTC",
        ),
        (
            crate::actions::Completion::Manual,
            "when an admin completes it",
        ),
    ] {
        let info = BatchInfo {
            status: batch(vec![move_status("a@x.org", MoveState::Synced, 0)], false),
            job: None,
            admin: Some(meta(completion)),
        };
        let facts = totals(&info);
        assert!(
            facts.iter().any(|(k, v)| *k == "Completes" && v == says),
            "{facts:?}"
        );
    }
}
