use super::*;

fn settings(start: StartSchedule, completion: Completion) -> BatchSettings {
    BatchSettings {
        start,
        completion,
        ..Default::default()
    }
}

#[test]
fn only_what_the_workers_can_do_is_accepted_against_the_database() {
    let later = StartSchedule::Later { at: "2h".into() };
    let after = Completion::After { at: "2h".into() };
    for ok in [
        settings(StartSchedule::Now, Completion::Manual),
        settings(StartSchedule::Manual, Completion::Manual),
    ] {
        check_schedule(&ok).unwrap();
    }
    for (bad, says) in [
        (settings(later, Completion::Manual), "start at a time"),
        (
            settings(StartSchedule::Now, Completion::Automatic),
            "automatic or timed",
        ),
        (settings(StartSchedule::Manual, after), "automatic or timed"),
    ] {
        let e = check_schedule(&bad).unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        let m = e.to_string();
        assert!(m.contains(says) && m.contains("PostgreSQL"), "{m}");
    }
}
