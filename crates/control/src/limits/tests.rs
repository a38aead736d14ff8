use super::*;

fn item(name: &str, kind: SkipKind, approved: bool) -> SkippedItem {
    let (folder, source_id) = split_item(name);
    SkippedItem {
        item: name.into(),
        folder,
        source_id,
        size: None,
        kind,
        reason: "r".into(),
        approved,
    }
}

#[test]
fn approved_items_count_against_nothing() {
    let limits = Limits {
        bad_item_limit: 1,
        large_item_bytes: Some(10),
        large_item_count: Some(0),
    };
    let mut s = vec![
        item("INBOX/a", SkipKind::BadItem, false),
        item("INBOX/b", SkipKind::BadItem, false),
        item("Archive/2024/c", SkipKind::LargeItem, false),
    ];
    let v = judge(&s, &limits);
    assert_eq!((v.bad, v.large, v.approved), (2, 1, 0));
    let why = v.exceeded.unwrap();
    assert!(
        why.contains("2 bad item(s), the bad-item limit is 1"),
        "{why}"
    );
    assert!(
        why.contains("1 large item(s), the large-item limit is 0"),
        "{why}"
    );
    mark_approved(&mut s, &["INBOX/a".into(), "Archive/2024/c".into()].into());
    let v = judge(&s, &limits);
    assert_eq!((v.bad, v.large, v.approved, v.unapproved()), (1, 0, 2, 1));
    assert_eq!(v.exceeded, None);
}

#[test]
fn items_split_at_the_last_slash() {
    assert_eq!(
        split_item("Archive/2024/x.y"),
        ("Archive/2024".into(), "x.y".into())
    );
    assert_eq!(split_item("notes"), (String::new(), "notes".into()));
}

#[test]
fn flags_win_over_the_profile() {
    let mut p = Profile::default();
    p.limits.bad_item_limit = 5;
    p.filter.max_message_bytes = Some(ByteSize(100));
    assert_eq!(Limits::effective(&p, None, None).bad_item_limit, 5);
    let l = Limits::effective(&p, Some(0), Some(25_000_000));
    assert_eq!(
        (l.bad_item_limit, l.large_item_bytes),
        (0, Some(25_000_000))
    );
    assert_eq!(parse_size("25MB"), Ok(25_000_000));
    assert!(parse_size("lots").is_err());
}
