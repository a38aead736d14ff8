use super::*;

#[test]
fn text_and_json_carry_provenance() {
    let e = Profile::load(
        Some(("name = \"x\"\n[limits]\nbad_item_limit = 3\n", "x.toml")),
        &[parse_set("filter.after=30d").unwrap()],
    )
    .unwrap();
    let text = render_text(&e);
    assert!(text.starts_with("profile \"x\" from x.toml\n"), "{text}");
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("{key} missing in {text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        line("limits.bad_item_limit"),
        "limits.bad_item_limit file 3"
    );
    assert_eq!(line("filter.after"), "filter.after flag \"30d\"");
    assert_eq!(line("filter.before"), "filter.before default -");
    assert_eq!(
        line("commit.max_messages"),
        "commit.max_messages default 1000"
    );
    let j = to_json(&e);
    assert_eq!(j["file"], "x.toml");
    assert_eq!(j["settings"]["limits.bad_item_limit"]["value"], 3);
    assert_eq!(j["settings"]["limits.bad_item_limit"]["from"], "file");
    assert_eq!(j["settings"]["filter.after"]["from"], "flag");
    assert!(j["settings"]["filter.before"]["value"].is_null());
}

#[test]
fn set_needs_a_key_and_an_equals_sign() {
    assert!(parse_set("nothing").is_err());
    assert!(parse_set("=5").is_err());
    assert_eq!(
        parse_set("folders.map={ \"A\" = \"B\" }").unwrap().1,
        "{ \"A\" = \"B\" }"
    );
}
