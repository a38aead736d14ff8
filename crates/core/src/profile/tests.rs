use super::*;
use proptest::prelude::*;

#[test]
fn embedded_default_parses_and_matches_code_defaults() {
    let p = Profile::embedded_default();
    let d = Profile::default();
    assert_eq!(p.commit, d.commit);
    assert_eq!(p.transport, d.transport);
    assert_eq!(p.store, d.store);
    assert_eq!(p.name, "default");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
        nmae = "typo"
        [commit]
        max_mesages = 5
        [transport]
        frame_bytes = 1
        [store]
        segment_max_bytes = "big"
    "#;
    let e = Profile::parse(text, "bad.toml").unwrap_err().to_string();
    for needle in [
        "bad.toml",
        "`nmae`",
        "`commit.max_mesages`",
        "transport.frame_bytes",
        "[store]",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in {e}");
    }
}

#[test]
fn hostile_excluded_folder_is_refused() {
    let e = Profile::parse("[source]\nexclude_folders = [\"../x\"]", "p").unwrap_err();
    assert!(e.to_string().contains("exclude_folders"), "{e}");
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
        let _ = Profile::parse(&s, "fuzz");
    }
}
