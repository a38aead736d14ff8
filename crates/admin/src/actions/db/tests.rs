use super::*;

fn row(phase: Phase, completion: Option<Completion>) -> Schedule {
    Schedule {
        batch: "b".into(),
        phase,
        start_at: Some(1_000),
        completion,
        actor: "admin:ann".into(),
        created_at: 900,
        start_fired: None,
        complete_fired: None,
        finished_at: None,
        error: None,
    }
}

/// The rows read as the file-based runs' records: what the pages and the rules see.
#[test]
fn a_schedule_row_reads_as_the_latest_run() {
    // Waiting for its start: a sync scheduled for then.
    let j = job_of(&row(Phase::Start, Some(Completion::WhenSynced)), false);
    assert_eq!((j.kind, j.running), (JobKind::Sync, true));
    assert_eq!(j.scheduled_for.as_deref(), Some("1970-01-01T00:16:40Z"));
    // Its passes run; or they ended and the completion follows: still running.
    for (completion, busy) in [(None, true), (Some(Completion::WhenSynced), false)] {
        let j = job_of(&row(Phase::Sync, completion), busy);
        assert_eq!((j.kind, j.running), (JobKind::Sync, true));
        assert_eq!(j.scheduled_for, None);
    }
    // No completion and nothing queued: ended, before a worker records it.
    assert!(!job_of(&row(Phase::Sync, None), false).running);
    // Waiting for its completion time: a final pass scheduled for then.
    let j = job_of(&row(Phase::Complete, Some(Completion::At(2_000))), false);
    assert_eq!((j.kind, j.running), (JobKind::Complete, true));
    assert_eq!(j.scheduled_for.as_deref(), Some("1970-01-01T00:33:20Z"));
    assert!(job_of(&row(Phase::Final, None), true).running);
    assert!(!job_of(&row(Phase::Final, None), false).running);
    // Ended short of completing: says why.
    let mut done = row(Phase::Done, Some(Completion::WhenSynced));
    done.error = Some("1 mailbox(es) failed".into());
    let j = job_of(&done, false);
    assert_eq!((j.kind, j.running), (JobKind::Sync, false));
    assert_eq!(j.error.as_deref(), Some("1 mailbox(es) failed"));
    done.complete_fired = Some(("worker:w".into(), 1_500));
    assert_eq!(job_of(&done, false).kind, JobKind::Complete);
}
