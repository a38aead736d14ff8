//! Latest-run records across restarts: a waiting run survives a shutdown and is shown
//! (and re-armable) after `open`; a run found passing is shown as interrupted.

use super::*;

fn batch(root: &Path, name: &str) -> BatchDir {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    // `open` only looks at directories holding a batch.
    std::fs::write(dir.join(batch::BATCH_FILE), b"{}").unwrap();
    BatchDir { dir }
}

fn plan(start_at: Option<i64>) -> Plan {
    Plan {
        start_at,
        mode: Mode::Sync,
        then_complete: Some(Some(mailferry_core::unix_now() + 7200)),
        approve_skipped: false,
        actor: "admin:alice".into(),
    }
}

#[tokio::test]
async fn a_waiting_run_survives_shutdown_and_a_restart_shows_it_scheduled() {
    let root = tempfile::tempdir().unwrap();
    let bd = batch(root.path(), "later");
    let jobs = Jobs::open(root.path()).unwrap();
    let at = mailferry_core::unix_now() + 3600;
    jobs.start("later", bd.clone(), plan(Some(at))).unwrap();
    let e = jobs.start("later", bd, plan(None)).unwrap_err();
    assert!(e.to_string().contains("scheduled for"), "{e}");
    // A shutdown does not wait an hour for the start time.
    tokio::time::timeout(std::time::Duration::from_secs(60), jobs.shutdown())
        .await
        .expect("shutdown does not wait for scheduled runs");

    let again = Jobs::open(root.path()).unwrap();
    let j = again.get("later").expect("the record survives");
    assert!(j.running && !j.interrupted, "{j:?}");
    assert_eq!(j.scheduled_for, Some(mailferry_core::rfc3339(at)));
    assert_eq!(j.kind, JobKind::Sync);
}

#[test]
fn a_run_found_passing_at_start_is_interrupted_and_says_what_to_do() {
    let root = tempfile::tempdir().unwrap();
    let bd = batch(root.path(), "b1");
    let record = Record {
        version: JOB_VERSION,
        phase: Phase::Running,
        plan: StoredPlan {
            kind: JobKind::Sync,
            start_at: None,
            then_complete: None,
            approve_skipped: false,
            actor: "admin:alice".into(),
            mailbox: None,
        },
        status: JobStatus {
            kind: JobKind::Sync,
            running: true,
            scheduled_for: None,
            started_at: now(),
            finished_at: None,
            outcome: None,
            error: None,
            interrupted: false,
        },
    };
    persist(&bd.dir, &record);
    let jobs = Jobs::open(root.path()).unwrap();
    let j = jobs.get("b1").unwrap();
    assert!(!j.running && j.interrupted, "{j:?}");
    let why = j.error.unwrap();
    assert!(
        why.contains("interrupted") && why.contains("/api/v1/batches/b1/start"),
        "{why}"
    );
    // Recorded, so a second restart shows the same, and nothing is re-armed.
    assert!(jobs.rearm().is_empty());
    let again = read_record(&bd.dir).unwrap().unwrap();
    assert_eq!(again.phase, Phase::Ended);
    assert!(again.status.interrupted);
}

#[test]
fn a_record_of_an_unknown_version_is_refused_by_name_and_skipped() {
    let root = tempfile::tempdir().unwrap();
    let bd = batch(root.path(), "b2");
    std::fs::write(bd.dir.join(JOB_FILE), br#"{"version": 99}"#).unwrap();
    let e = read_record(&bd.dir).unwrap_err();
    assert!(e.to_string().contains("format version 99"), "{e}");
    let jobs = Jobs::open(root.path()).unwrap();
    assert!(jobs.get("b2").is_none());
}
