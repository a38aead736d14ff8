//! The two renderings of every advice, and the translation of recorded texts.

use super::*;

fn every() -> Vec<Advice> {
    (0..KINDS.len())
        .map(|i| Advice::of(i, "summer-2026").expect("every kind has a variant"))
        .collect()
}

/// A flag (`--approve-skipped`) or a backticked command.
fn speaks_cli(s: &str) -> bool {
    s.contains('`')
        || s.as_bytes()
            .windows(3)
            .any(|w| w[0] == b'-' && w[1] == b'-' && w[2].is_ascii_lowercase())
}

#[test]
fn every_kind_renders_for_the_cli_and_the_web() {
    let all = every();
    assert_eq!(all.len(), 9, "a kind was added: extend these tests");
    for a in &all {
        assert!(
            speaks_cli(&a.cli()),
            "{a:?}: CLI text without flag or command"
        );
        assert!(!speaks_cli(&a.web()), "{a:?}: web text {:?}", a.web());
        assert_ne!(a.cli(), a.web());
    }
}

#[test]
fn the_cli_keeps_its_wording() {
    assert_eq!(
        Advice::CheckThenCompleteApproving.cli(),
        "check them (report.json, `mailferry move status`) and complete with --approve-skipped"
    );
    assert_eq!(
        Advice::SeeBatchStatus("b1".into()).cli(),
        "see `mailferry batch status b1`"
    );
    assert_eq!(
        Advice::ResumeMove("/var/m/a".into()).cli(),
        "run `mailferry move resume --state /var/m/a` first"
    );
    assert_eq!(Advice::TestWithUser.cli(), "give --user to check a mailbox");
}

#[test]
fn web_text_finds_every_kind_with_its_parameter() {
    for a in every() {
        let text = format!("something happened; {} (really)", a.cli());
        let web = web_text(&text);
        assert_eq!(
            web,
            format!("something happened; {} (really)", a.web()),
            "{a:?}"
        );
        assert!(!speaks_cli(&web), "{web}");
    }
}

#[test]
fn web_text_replaces_several_and_leaves_other_text_alone() {
    let plain = "1 of 3 mailbox(es) failed: no such directory";
    assert!(matches!(web_text(plain), Cow::Borrowed(_)));
    let text = format!(
        "{}; {}; and {}",
        Advice::ResumeBatch("x".into()).cli(),
        Advice::SeeBatchStatus("spring".into()).cli(),
        Advice::TestWithUser.cli()
    );
    assert_eq!(
        web_text(&text),
        format!(
            "{}; {}; and {}",
            Advice::ResumeBatch("x".into()).web(),
            Advice::SeeBatchStatus("spring".into()).web(),
            Advice::TestWithUser.web()
        )
    );
    // A prefix without its closing part is not advice: left as it is.
    let torn = "see `mailferry batch status spring";
    assert_eq!(web_text(torn), torn);
}

#[test]
fn the_agents_maildir_error_carries_the_advice_web_text_knows() {
    // The agent cannot use this module (it does not link the control plane): its text
    // must stay equal to our CLI rendering, or the pages would show the flag.
    let dir = tempfile::tempdir().unwrap();
    let src = mailferry_agent::source::from_spec(
        &format!("maildir:{}", dir.path().display()),
        &Default::default(),
    )
    .unwrap();
    let err = src
        .list(&mailferry_agent::source::Prior::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&Advice::PointAtMailboxRoot.cli()), "{err}");
    assert!(!speaks_cli(&web_text(&err)), "{}", web_text(&err));
}
