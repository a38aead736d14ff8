use super::*;
use proptest::prelude::*;

fn problems(text: &str) -> String {
    Profile::parse(text, "bad.toml").unwrap_err().to_string()
}

fn assert_all(e: &str, needles: &[&str]) {
    for needle in needles {
        assert!(e.contains(needle), "missing {needle:?} in {e}");
    }
}

#[test]
fn embedded_default_parses_and_matches_code_defaults() {
    let p = Profile::embedded_default();
    let d = Profile::default();
    assert_eq!(p.name, "default");
    // Everything but the description is the code's default: the file documents the
    // defaults, it does not change them.
    assert_eq!(
        Profile {
            description: String::new(),
            ..p
        },
        d
    );
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
        [limits]
        bad_item_limit = "many"
        large_item_limit = -1
    "#;
    let e = problems(text);
    assert_all(
        &e,
        &[
            "bad.toml",
            "`nmae`",
            "`commit.max_mesages`",
            "transport.frame_bytes",
            "`store.segment_max_bytes`",
            // Two bad types in one table: both named.
            "`limits.bad_item_limit`",
            "`limits.large_item_limit`",
        ],
    );
}

#[test]
fn hostile_excluded_folder_is_refused() {
    let e = Profile::parse("[source]\nexclude_folders = [\"../x\"]", "p").unwrap_err();
    assert!(e.to_string().contains("source.exclude_folders[0]"), "{e}");
}

#[test]
fn bad_patterns_and_contradictions_are_reported_with_their_keys() {
    let text = r#"
        [folders]
        include = ["INBOX", "re:Archive/(\\d{4}"]
        exclude = ["", "re:*"]
        map = { "Sent Items" = "../Sent", "A" = "X", "B" = "X" }
        colour = "blue"
        [filter]
        after = "2025-01-01"
        before = "2024-01-01"
        max_message_bytes = 0
        [throttle]
        max_bytes_per_second = 0
        max_messages_per_second = -2.5
        backoff_initial_ms = 5000
        backoff_max_ms = 1000
        [concurrency]
        max_concurrent_moves = 2
        max_concurrent_incremental_syncs = 3
        [schedule]
        start_after = "2025-07-02T00:00:00Z"
        complete_after = "2025-07-01T00:00:00Z"
    "#;
    let e = problems(text);
    assert_all(
        &e,
        &[
            "`folders.include[1]`",
            "invalid regex",
            "`folders.exclude[0]`",
            "`folders.exclude[1]`",
            "`folders.map.\"Sent Items\"`",
            "\"A\", \"B\" all map to \"X\"",
            "folders.merge = true",
            "`folders.colour`",
            "`filter.after` (2025-01-01T00:00:00Z) is not before `filter.before`",
            "`filter.max_message_bytes` = 0",
            "`throttle.max_bytes_per_second` must be positive",
            "`throttle.max_messages_per_second` = -2.5",
            "`throttle.backoff_initial_ms` (5000) is more than `throttle.backoff_max_ms` (1000)",
            "`concurrency.max_concurrent_incremental_syncs` (3) is more than",
            "`schedule.complete_after` (2025-07-01T00:00:00Z) is before",
        ],
    );
}

#[test]
fn merge_allows_many_to_one() {
    let p = Profile::parse(
        "[folders]\nmerge = true\nmap = { \"A\" = \"X\", \"B\" = \"X\" }",
        "p",
    )
    .unwrap();
    let rules = p.folder_rules().unwrap();
    let x = FolderName::parse("X").unwrap();
    assert_eq!(
        rules.renamed_into(&x),
        vec![
            FolderName::parse("A").unwrap(),
            FolderName::parse("B").unwrap()
        ]
    );
}

#[test]
fn bad_types_and_values_of_new_keys() {
    let e = problems(
        r#"
        [filter]
        after = 2024
        before = "yesterday"
        max_message_bytes = "10 parsecs"
        [throttle]
        max_bytes_per_second = -5
        [schedule]
        start_after = "2025-07-01T10:00:00"
        suspend_when_ready = "yes"
    "#,
    );
    assert_all(
        &e,
        &[
            "`filter.after`",
            "`filter.before`",
            "\"yesterday\"",
            "`filter.max_message_bytes`",
            "parsecs",
            "`throttle.max_bytes_per_second`",
            "negative",
            "`schedule.start_after`",
            "needs Z or an offset",
            "`schedule.suspend_when_ready`",
        ],
    );
}

#[test]
fn new_keys_parse() {
    let p = Profile::parse(
        r#"
        [folders]
        special_use = true
        include = ["INBOX", "Archive/**"]
        [folders.map]
        "Posteingang" = "INBOX"
        [filter]
        after = "365d"
        before = 2025-01-01T00:00:00+01:00
        max_message_bytes = "150MB"
        [limits]
        bad_item_limit = 10
        large_item_limit = 3
        [throttle]
        max_bytes_per_second = "2MiB"
        max_messages_per_second = 5
        [schedule]
        complete_after = 2025-07-05T02:00:00Z
    "#,
        "p",
    )
    .unwrap();
    assert!(p.folders.special_use);
    assert_eq!(p.folders.map["Posteingang"], "INBOX");
    assert_eq!(
        p.filter.after,
        Some(DateBound::Ago {
            secs: 365 * 86_400,
            text: "365d".into()
        })
    );
    assert_eq!(p.filter.before, Some(DateBound::At(1_735_686_000)));
    assert_eq!(p.filter.max_message_bytes, Some(ByteSize(150_000_000)));
    assert_eq!(p.limits.large_item_limit, Some(3));
    assert_eq!(p.throttle.max_bytes_per_second, Some(ByteSize(2 << 20)));
    assert_eq!(p.throttle.max_messages_per_second, Some(5.0));
    assert_eq!(p.schedule.complete_after, Some(Timestamp(1_751_680_800)));
}

#[test]
fn byte_sizes() {
    for (s, n) in [
        ("4096", 4096),
        ("150MB", 150_000_000),
        ("25 MiB", 25 << 20),
        ("1.5G", 1_500_000_000),
        ("2_500mb", 2_500_000_000),
        ("1KiB", 1024),
    ] {
        assert_eq!(ByteSize::parse(s), Ok(ByteSize(n)), "{s}");
    }
    for s in [
        "",
        "MB",
        "1.2.3MB",
        "10 parsecs",
        "99999999999TB",
        "9999999TB",
        "9.3EB",
    ] {
        assert!(ByteSize::parse(s).is_err(), "{s}");
    }
}

#[test]
fn dates() {
    assert_eq!(parse_rfc3339("1970-01-01"), Ok(0));
    assert_eq!(parse_rfc3339("2000-02-29T12:30:00Z"), Ok(951_827_400));
    assert_eq!(
        parse_rfc3339("2000-02-29T14:30:00.25+02:00"),
        Ok(951_827_400)
    );
    assert_eq!(parse_rfc3339("2000-02-29 12:30Z"), Ok(951_827_400));
    for bad in [
        "2001-02-29",
        "2024-13-01",
        "2024-01-01T25:00:00Z",
        "2024-01-01T10:00:00",
        "2024-01-01T10:00:00+2",
        "2024-1-1",
    ] {
        assert!(parse_rfc3339(bad).is_err(), "{bad}");
    }
    assert_eq!(
        DateBound::parse("2w").unwrap().resolve(1_000_000),
        1_000_000 - 14 * 86_400
    );
    assert!(DateBound::parse("0s").is_err());
}

#[test]
fn dates_at_the_calendar_edges() {
    assert_eq!(parse_rfc3339("0000-01-01"), Ok(-62_167_219_200));
    assert_eq!(parse_rfc3339("9999-12-31T23:59:59Z"), Ok(253_402_300_799));
    assert_eq!(parse_rfc3339("2024-02-29"), Ok(1_709_164_800));
    assert_eq!(parse_rfc3339("1900-02-28T23:59:60Z"), Ok(-2_203_891_200));
    for bad in [
        "1900-02-29",
        "2024-00-10",
        "2024-01-00",
        "2024-04-31",
        "2024-01-32",
    ] {
        assert_eq!(
            parse_rfc3339(bad),
            Err(format!("{bad:?} is not an RFC 3339 date: no such day"))
        );
    }
    assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
    assert_eq!(format_rfc3339(951_827_400), "2000-02-29T12:30:00Z");
    assert_eq!(format_rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
}

#[test]
fn glob_patterns() {
    let p = |s| Pattern::parse(s).unwrap();
    assert!(p("[Gmail]/Spam").matches("[Gmail]/Spam"));
    assert!(!p("[Gmail]/Spam").matches("G/Spam"));
    assert!(p("Archive/*").matches("Archive/2024"));
    assert!(!p("Archive/*").matches("Archive/2024/Q1"));
    assert!(p("Archive/**").matches("Archive/2024/Q1"));
    assert!(!p("Archive/**").matches("Archive"));
    assert!(p("Project ?").matches("Project X"));
    assert!(p("re:Archive/\\d{4}").matches("Archive/2024"));
    assert!(!p("re:Archive/\\d{4}").matches("Archive/2024/x"));
    assert!(p("a.b").matches("a.b") && !p("a.b").matches("axb"));
}

#[test]
fn special_use_and_explicit_renames() {
    let p = Profile::parse(
        "[folders]\nspecial_use = true\nmap = { \"Deleted Items\" = \"Deleted Items\", \"Old\" = \"Archive/Old\" }",
        "p",
    )
    .unwrap();
    let r = p.folder_rules().unwrap();
    let f = |s| FolderName::parse(s).unwrap();
    assert_eq!(
        r.rename(&f("Sent Items")),
        Some((f("Sent"), Rename::SpecialUse))
    );
    assert_eq!(
        r.rename(&f("[Gmail]/All Mail")),
        Some((f("Archive"), Rename::SpecialUse))
    );
    // An explicit identity mapping turns a special-use rename off.
    assert_eq!(r.rename(&f("Deleted Items")), None);
    assert_eq!(
        r.rename(&f("Old")),
        Some((f("Archive/Old"), Rename::Explicit))
    );
    assert_eq!(r.rename(&f("INBOX")), None);
    assert_eq!(
        r.renamed_into(&f("Sent")),
        vec![
            f("Sent Items"),
            f("Sent Messages"),
            f("[Gmail]/Sent Mail"),
            f("[Google Mail]/Sent Mail")
        ]
    );
}

#[test]
fn include_and_exclude() {
    let p = Profile::parse(
        r#"
        [source]
        exclude_folders = ["Junk"]
        [folders]
        include = ["INBOX", "Archive/**", "Junk"]
        exclude = ["Archive/Private/**"]
    "#,
        "p",
    )
    .unwrap();
    let r = p.folder_rules().unwrap();
    assert!(!r.is_excluded("INBOX"));
    assert!(!r.is_excluded("Archive/2024"));
    assert!(r.is_excluded("Archive/Private/x"));
    assert!(r.is_excluded("Junk"));
    assert!(r.is_excluded("Drafts"));
}

/// Every key of [`KNOWN`] is a field, and every field is in [`KNOWN`].
#[test]
fn known_keys_match_the_structs() {
    let mut p = Profile::default();
    p.filter.after = Some(DateBound::At(0));
    p.filter.before = Some(DateBound::At(1));
    p.filter.max_message_bytes = Some(ByteSize(1));
    p.limits.large_item_limit = Some(1);
    p.throttle.max_bytes_per_second = Some(ByteSize(1));
    p.throttle.max_messages_per_second = Some(1.0);
    p.schedule.start_after = Some(Timestamp(0));
    p.schedule.complete_after = Some(Timestamp(0));
    p.source.connections = Some(8);
    p.source.window_bytes = Some(ByteSize(1 << 20));
    let toml::Value::Table(t) = toml::Value::try_from(&p).unwrap() else {
        panic!("a profile serializes to a table")
    };
    let mut from_structs = Vec::new();
    for (k, v) in &t {
        match v.as_table() {
            Some(sub) => from_structs.extend(sub.keys().map(|s| format!("{k}.{s}"))),
            None => from_structs.push(k.clone()),
        }
    }
    let mut known: Vec<String> = KNOWN
        .iter()
        .flat_map(|(s, keys)| keys.iter().map(move |k| dotted(s, k)))
        .collect();
    from_structs.sort();
    known.sort();
    assert_eq!(from_structs, known);
    // And it parses back to itself.
    let text = toml::to_string(&p).unwrap();
    assert_eq!(Profile::parse(&text, "round trip").unwrap(), p);
}

/// Every shipped profile parses; there are at least the five the docs promise.
#[test]
fn every_shipped_profile_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migration-profiles");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let p =
            Profile::parse(&text, &path.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
        p.folder_rules().unwrap();
        assert_eq!(
            Some(p.name.as_str()),
            path.file_stem().and_then(|s| s.to_str()),
            "a profile's name is its file name"
        );
        assert!(
            !p.description.is_empty(),
            "{}: no description",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 5, "only {n} profiles in {}", dir.display());
}

#[test]
fn load_records_provenance() {
    let file =
        "name = \"x\"\n[limits]\nbad_item_limit = 3\n[throttle]\nmax_messages_per_second = 2\n";
    let overrides = vec![
        ("limits.bad_item_limit".to_string(), "7".to_string()),
        ("filter.after".to_string(), "30d".to_string()),
        ("folders.exclude".to_string(), "[\"Junk\"]".to_string()),
    ];
    let e = Profile::load(Some((file, "x.toml")), &overrides).unwrap();
    assert_eq!(e.profile.limits.bad_item_limit, 7);
    assert_eq!(e.profile.folders.exclude, vec!["Junk".to_string()]);
    assert_eq!(e.provenance("limits.bad_item_limit"), Provenance::Flag);
    assert_eq!(e.provenance("filter.after"), Provenance::Flag);
    assert_eq!(e.provenance("name"), Provenance::File);
    assert_eq!(
        e.provenance("throttle.max_messages_per_second"),
        Provenance::File
    );
    assert_eq!(e.provenance("commit.max_messages"), Provenance::Default);
    let settings = e.settings();
    let total: usize = KNOWN.iter().map(|(_, k)| k.len()).sum();
    assert_eq!(settings.len(), total);
    let after = settings.iter().find(|s| s.key == "filter.after").unwrap();
    assert_eq!(after.value, Some(toml::Value::String("30d".into())));
    let before = settings.iter().find(|s| s.key == "filter.before").unwrap();
    assert_eq!(
        (before.value.as_ref(), before.from),
        (None, Provenance::Default)
    );

    let none = Profile::load(None, &[]).unwrap();
    assert!(none
        .settings()
        .iter()
        .all(|s| s.from == Provenance::Default));
    assert_eq!(none.file, None);
}

#[test]
fn bad_overrides_are_reported_with_the_file_problems() {
    let e = Profile::load(
        Some(("[commit]\nmax_messages = 0\n", "x.toml")),
        &[
            ("limits.nope".into(), "1".into()),
            ("throttle.max_bytes_per_second".into(), "0".into()),
        ],
    )
    .unwrap_err()
    .to_string();
    assert_all(
        &e,
        &[
            "x.toml",
            "override `limits.nope`: unknown key",
            "`throttle.max_bytes_per_second` must be positive",
            "`commit.max_messages`",
        ],
    );
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
        let _ = Profile::parse(&s, "fuzz");
    }

    #[test]
    fn arbitrary_tables_never_panic(
        section in prop::sample::select(vec!["folders", "filter", "limits", "throttle",
            "concurrency", "schedule", "source"]),
        key in "[a-z_]{1,30}",
        value in prop_oneof![
            Just("1".to_string()), Just("-1".to_string()), Just("\"365d\"".to_string()),
            Just("[\"re:(\"]".to_string()), Just("{ a = \"b\" }".to_string()),
            "\"\\PC{0,20}\"".prop_map(|s| format!("{s:?}")),
        ],
    ) {
        let _ = Profile::parse(&format!("[{section}]\n{key} = {value}\n"), "fuzz");
    }

    #[test]
    fn valid_profiles_round_trip_through_toml(
        size in prop_oneof![
            (1u64..1 << 40).prop_map(|n| n.to_string()),
            (1u32..10_000, prop::sample::select(vec!["KB", "MiB", "GB", "TiB", " mb"]))
                .prop_map(|(n, u)| format!("\"{n}{u}\"")),
            (1u32..1000, 1u32..100).prop_map(|(a, b)| format!("\"{a}.{b}GiB\"")),
        ],
        after in prop_oneof![
            (1u32..5000).prop_map(|d| format!("\"{d}d\"")),
            (0i64..4_000_000_000).prop_map(|t| format!("\"{}\"", format_rfc3339(t))),
            (0i64..4_000_000_000).prop_map(format_rfc3339),
        ],
        rate in 0.001f64..1e6,
        special in any::<bool>(),
        pattern in "[A-Za-z*?/ \\[\\]]{1,12}",
    ) {
        let text = format!(
            "[filter]\nafter = {after}\nmax_message_bytes = {size}\n\
             [throttle]\nmax_messages_per_second = {rate}\nmax_bytes_per_second = {size}\n\
             [folders]\nspecial_use = {special}\nexclude = [{pattern:?}]\n"
        );
        let p = Profile::parse(&text, "gen").unwrap();
        let again = toml::to_string(&p).unwrap();
        prop_assert_eq!(Profile::parse(&again, "again").unwrap(), p);
    }

    #[test]
    fn rfc3339_round_trips(t in -62_135_596_800i64..253_402_300_799) {
        prop_assert_eq!(parse_rfc3339(&format_rfc3339(t)), Ok(t));
        let day = t.div_euclid(86_400) * 86_400;
        prop_assert_eq!(parse_rfc3339(&format_rfc3339(t)[..10]), Ok(day));
    }

    #[test]
    fn literal_globs_match_only_themselves(
        name in "[A-Za-z0-9 \\[\\]().+^$|{}-]{1,20}(/[A-Za-z0-9 \\[\\]().+^$|{}-]{1,10}){0,2}",
        other in "[A-Za-z0-9 /]{1,20}",
    ) {
        let p = Pattern::parse(&name).unwrap();
        prop_assert!(p.matches(&name));
        prop_assert_eq!(p.matches(&other), other == name);
    }

    #[test]
    fn star_stays_within_one_level(a in "[a-z]{1,8}", b in "[a-z]{1,8}", c in "[a-z]{1,8}") {
        let one = Pattern::parse(&format!("{a}/*")).unwrap();
        let any = Pattern::parse(&format!("{a}/**")).unwrap();
        let nested = format!("{a}/{b}/{c}");
        let child = format!("{a}/{b}");
        prop_assert!(one.matches(&child));
        prop_assert!(!one.matches(&nested));
        prop_assert!(any.matches(&nested));
    }
}

#[test]
fn roles_rename_by_what_the_server_announces() {
    let f = |s| FolderName::parse(s).unwrap();
    let off = Profile::default().folder_rules().unwrap();
    let on = Profile::parse(
        "[folders]\nspecial_use = true\nmap = { \"Postausgang\" = \"Outbox\" }",
        "p",
    )
    .unwrap()
    .folder_rules()
    .unwrap();
    let sent = Some(Role::Sent);
    // A real folder's role renames only with special_use; a virtual one always.
    assert_eq!(off.rename_with_role(&f("Gesendete Objekte"), sent), None);
    assert_eq!(
        on.rename_with_role(&f("Gesendete Objekte"), sent),
        Some((f("Sent"), Rename::Role))
    );
    assert_eq!(on.rename_with_role(&f("Sent"), sent), None);
    assert_eq!(
        off.rename_with_role(&f("Virtual/All"), Some(Role::All)),
        Some((f("Archive"), Rename::Role))
    );
    // The explicit map wins over the role.
    assert_eq!(
        on.rename_with_role(&f("Postausgang"), sent),
        Some((f("Outbox"), Rename::Explicit))
    );
    let roles = std::collections::BTreeMap::from([
        (f("Gesendete Objekte"), Role::Sent),
        (f("Postausgang"), Role::Sent),
        (f("Virtual/All"), Role::All),
    ]);
    assert_eq!(
        on.renamed_into_with_roles(&f("Sent"), &roles)
            .into_iter()
            .filter(|s| !s.as_str().contains("Sent"))
            .collect::<Vec<_>>(),
        vec![f("Gesendete Objekte")]
    );
    assert_eq!(
        off.renamed_into_with_roles(&f("Archive"), &roles),
        vec![f("Virtual/All")]
    );
    for attr in ["\\Sent", "\\sent", "\\All", "\\Flagged"] {
        let r = Role::from_attribute(attr).unwrap();
        assert!(r.attribute().eq_ignore_ascii_case(attr));
    }
    assert_eq!(Role::from_attribute("\\Important"), None);
    assert_eq!(Role::from_attribute("Sent"), None);
}

/// issue 17: `source.maildir_names` takes auto, mutf7 or utf8; anything else is named.
#[test]
fn maildir_names_key_issue17() {
    assert_eq!(
        Profile::embedded_default().source.maildir_names,
        MaildirNames::Auto
    );
    let p = Profile::parse("[source]\nmaildir_names = \"utf8\"", "p").unwrap();
    assert_eq!(p.source.maildir_names, MaildirNames::Utf8);
    let e = Profile::parse("[source]\nmaildir_names = \"latin1\"", "p").unwrap_err();
    assert!(e.to_string().contains("maildir_names"), "{e}");
    assert_eq!("mutf7".parse::<MaildirNames>(), Ok(MaildirNames::Mutf7));
    assert!("UTF8".parse::<MaildirNames>().is_err());
}

/// issue 18: `source.connections` and `source.window_bytes` are unset by default (the
/// agent's defaults apply), take their ranges' ends, and name the key when outside.
#[test]
fn source_connections_and_window_keys_issue18() {
    let d = Profile::embedded_default();
    assert_eq!((d.source.connections, d.source.window_bytes), (None, None));
    let p = Profile::parse("[source]\nconnections = 64\nwindow_bytes = \"64KiB\"", "p").unwrap();
    assert_eq!(p.source.connections, Some(MAX_SOURCE_CONNECTIONS));
    assert_eq!(p.source.window_bytes, Some(ByteSize(65_536)));
    let p = Profile::parse("[source]\nconnections = 1\nwindow_bytes = \"1GiB\"", "p").unwrap();
    assert_eq!(p.source.connections, Some(1));
    assert_eq!(p.source.window_bytes, Some(ByteSize(1 << 30)));

    let e = problems("[source]\nconnections = 0\nwindow_bytes = 65535\n[commit]\nmax_messages = 0");
    assert_all(
        &e,
        &[
            "`source.connections` = 0: must be between 1 and 64",
            "`source.window_bytes` = 65535: must be between 65536 (64 KiB) and 1073741824",
            // Reported with the other problems, not instead of them.
            "`commit.max_messages`",
        ],
    );
    let e = problems("[source]\nconnections = 65\nwindow_bytes = \"2GiB\"");
    assert_all(
        &e,
        &[
            "`source.connections` = 65",
            "`source.window_bytes` = 2147483648",
        ],
    );
    let e = problems("[source]\nconnections = -1\nwindow_bytes = \"lots\"");
    assert_all(&e, &["`source.connections`", "`source.window_bytes`"]);
    let e = problems("[source]\nconnections = \"4\"");
    assert_all(&e, &["`source.connections`"]);

    // `profile show --set` reaches them, and says where they came from.
    let eff = Profile::load(
        Some(("[source]\nwindow_bytes = \"1MiB\"\n", "f.toml")),
        &[("source.connections".into(), "8".into())],
    )
    .unwrap();
    assert_eq!(eff.profile.source.connections, Some(8));
    assert_eq!(eff.provenance("source.connections"), Provenance::Flag);
    assert_eq!(eff.provenance("source.window_bytes"), Provenance::File);
    let unset = Profile::load(None, &[]).unwrap();
    let shown = unset.settings();
    let c = shown
        .iter()
        .find(|s| s.key == "source.connections")
        .unwrap();
    assert_eq!((c.value.as_ref(), c.from), (None, Provenance::Default));
}
