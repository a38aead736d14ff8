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
