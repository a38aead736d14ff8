use super::*;

#[test]
fn hostile_folder_names_are_refused() {
    for bad in [
        "",
        "../etc",
        "a/../b",
        "a//b",
        "/abs",
        "trail/",
        "a\0b",
        "a\\b",
        ".hidden",
        "x/.",
        "tab\there",
    ] {
        assert!(FolderName::parse(bad).is_err(), "{bad:?} accepted");
    }
    for good in [
        "INBOX",
        "Archive/2024",
        "Entwürfe",
        "Sent Items",
        "日本語/フォルダ",
    ] {
        assert_eq!(FolderName::parse(good).unwrap().as_str(), good);
    }
}

#[test]
fn mailbox_is_lowercased_and_checked() {
    assert_eq!(
        MailboxAddr::parse("Alice@Example.COM").unwrap().as_str(),
        "alice@example.com"
    );
    assert_eq!(
        MailboxAddr::parse("bob@example.org").unwrap().domain(),
        "example.org"
    );
    for bad in ["", "nodomain", "@x", "x@", "a b@c", "a/b@c", "a@b@c"] {
        assert!(MailboxAddr::parse(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn flags_sorted_and_letters_only() {
    assert_eq!(Flags::from_maildir("SRFS").unwrap().as_str(), "FRS");
    assert!(Flags::from_maildir("S,").is_err());
    assert!(Flags::from_maildir("S $Junk").is_err());
}

#[test]
fn keywords_are_sorted_unique_and_checked() {
    let f = Flags::new("SF", ["ProjectX", "$Junk", "ProjectX", "$Label1"]).unwrap();
    assert_eq!(f.as_str(), "FS $Junk $Label1 ProjectX");
    assert_eq!(f.letters(), "FS");
    assert_eq!(
        f.keywords().collect::<Vec<_>>(),
        ["$Junk", "$Label1", "ProjectX"]
    );
    assert!(f.seen() && f.has_keywords());
    // No letters: the form starts with the separator, and parses back.
    let k = Flags::new("", ["$Junk"]).unwrap();
    assert_eq!(k.as_str(), " $Junk");
    assert!(!k.seen());
    assert_eq!(Flags::parse(k.as_str()).unwrap(), k);
    // Old (letters-only) forms read unchanged.
    assert_eq!(
        Flags::parse("FS").unwrap(),
        Flags::from_maildir("SF").unwrap()
    );
    assert_eq!(Flags::parse("").unwrap(), Flags::default());
    assert!(!Flags::default().has_keywords());
    // Non-canonical input is normalised.
    assert_eq!(Flags::parse("SF b a a").unwrap().as_str(), "FS a b");
    for bad in [
        "S  a", "S a(", "S \\Seen", "S a]", "S \"q\"", "S a\tb", "1 a", "S ",
    ] {
        assert!(Flags::parse(bad).is_err(), "{bad:?} accepted");
    }
    assert!(Flags::new("", ["x".repeat(256)]).is_err());
    assert!(Flags::new("", ["x".repeat(255)]).is_ok());
    assert!(Flags::new("", (0..257).map(|i| format!("k{i}"))).is_err());
    // Non-ASCII UTF-8 keywords are carried (mbox X-Keywords, IMAP UTF8=ACCEPT servers).
    assert_eq!(Flags::new("", ["Ærø"]).unwrap().as_str(), " Ærø");
    // serde goes through the canonical form.
    let json = serde_json::to_string(&f).unwrap();
    assert_eq!(json, "\"FS $Junk $Label1 ProjectX\"");
    assert_eq!(serde_json::from_str::<Flags>(&json).unwrap(), f);
}

#[test]
fn source_id_cannot_be_a_path() {
    for bad in ["", "a/b", "a:2,S", "..", ".x", "a\nb"] {
        assert!(SourceId::parse(bad).is_err(), "{bad:?} accepted");
    }
    assert!(SourceId::parse("1700000000.M1P2.host").is_ok());
}

#[test]
fn move_id_round_trips_through_json() {
    let id = MoveId::random();
    let s = serde_json::to_string(&id).unwrap();
    assert_eq!(serde_json::from_str::<MoveId>(&s).unwrap(), id);
}
