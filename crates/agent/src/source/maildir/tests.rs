use super::*;
use crate::source::{DeltaFolder, Prior};

fn touch(p: &Path, body: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, body).unwrap();
}

#[test]
fn lists_inbox_subfolders_flags_and_names_bad_folders() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    touch(&r.join("cur/1.a.host:2,SR"), b"Subject: a\n\nx");
    touch(&r.join("new/2.b.host"), b"Subject: b\n\nx");
    touch(&r.join(".Archive.2024/cur/3.c.host:2,"), b"Subject: c\n\nx");
    touch(&r.join(".Entw&APw-rfe/new/4.d.host"), b"Subject: d\n\nx");
    touch(&r.join(".bad&Z!Z/new/5.e.host"), b"Subject: e\n\nx");
    touch(&r.join(".a..b/new/6.f.host"), b"x");
    let l = Maildir::new(r.to_path_buf())
        .list(&crate::source::Prior::default())
        .unwrap();
    let names: Vec<String> = l.items.iter().map(|i| i.name()).collect();
    assert_eq!(
        names,
        [
            "Archive/2024/3.c.host",
            "Entwürfe/4.d.host",
            "INBOX/1.a.host",
            "INBOX/2.b.host",
            "bad&Z!Z/5.e.host"
        ]
    );
    assert_eq!(l.items[2].flags.as_str(), "RS");
    assert_eq!(l.items[3].flags.as_str(), "");
    let bad: Vec<&str> = l.bad.iter().map(|b| b.item.as_str()).collect();
    assert!(bad.is_empty() || !bad.contains(&".bad&Z!Z"), "{bad:?}");
    assert!(bad.contains(&".a..b"), "{bad:?}");
}

#[test]
fn folder_dir_names_round_trip() {
    use MaildirNames::*;
    for f in [
        "Archive/2024",
        "Entwürfe",
        "Sent Items",
        "日本語/x",
        "R&D",
        "a&-b",
    ] {
        let folder = FolderName::parse(f).unwrap();
        for (write, read) in [(Mutf7, Mutf7), (Mutf7, Auto), (Utf8, Utf8)] {
            let dir = dir_name_for_folder(&folder, write).unwrap().unwrap();
            let back = folder_from_dir_name(OsStr::new(&dir), read);
            assert_eq!(back, Ok(folder.clone()), "{f} as {write} read as {read}");
        }
    }
    assert_eq!(
        dir_name_for_folder(&FolderName::parse("Entwürfe").unwrap(), Utf8).unwrap(),
        Some(".Entwürfe".into())
    );
    assert_eq!(
        dir_name_for_folder(&FolderName::inbox(), Utf8).unwrap(),
        None
    );
    let e = dir_name_for_folder(&FolderName::parse("Projects/2024.Q1").unwrap(), Mutf7);
    assert!(e.unwrap_err().contains("Projects/2024.Q1"));
}

/// issue 17: raw UTF-8 names (Dovecot's `:UTF-8`) are read; `auto` decides per name.
#[test]
fn folder_names_in_utf8_and_modified_utf7_issue17() {
    use MaildirNames::*;
    let f = |s: &[u8], m| folder_from_dir_name(OsStr::from_bytes(s), m);
    let ok = |s: &str| Ok(FolderName::parse(s).unwrap());
    assert_eq!(
        f(".Projects.Ünïcode Ærø".as_bytes(), Auto),
        ok("Projects/Ünïcode Ærø")
    );
    assert_eq!(f(b".Entw&APw-rfe", Auto), ok("Entwürfe"));
    assert_eq!(f(b".R&D", Auto), ok("R&D"), "not mUTF-7, valid UTF-8");
    assert_eq!(
        f(b".Entw&APw-rfe", Utf8),
        ok("Entw&APw-rfe"),
        "forced: as is"
    );
    assert_eq!(f(".Entwürfe".as_bytes(), Utf8), ok("Entwürfe"));
    let e = f(".Entwürfe".as_bytes(), Mutf7).unwrap_err();
    assert!(
        e.contains("not modified UTF-7") && e.contains("--maildir-names"),
        "{e}"
    );
    let e = f(b".caf\xe9", Auto).unwrap_err();
    assert!(e.contains("neither modified UTF-7 nor UTF-8"), "{e}");
    assert!(f(b".caf\xe9", Utf8).unwrap_err().contains("not UTF-8"));
    // A mUTF-7 run that decodes to '.' or '/' stays inside its component.
    assert_eq!(f(b".a&AP8ALg-b", Auto), ok("a\u{ff}.b"));
    assert!(f(b".a&AP8ALw-b", Auto).unwrap_err().contains("'/'"));
}

#[test]
fn a_folder_name_that_is_not_utf8_is_a_named_bad_item() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    touch(&r.join("cur/1.a.host:2,S"), b"Subject: a\n\nx");
    let odd = r.join(OsStr::from_bytes(b".Caf\xe9"));
    touch(&odd.join("cur/2.b.host:2,S"), b"Subject: b\n\nx");
    for names in [MaildirNames::Auto, MaildirNames::Utf8, MaildirNames::Mutf7] {
        let l = Maildir::with_names(r.to_path_buf(), names)
            .list(&Prior::default())
            .unwrap();
        assert_eq!(ids(&l), ["1.a.host"]);
        assert_eq!(l.bad.len(), 1, "{:?}", l.bad);
        assert_eq!(l.bad[0].item, ".Caf\\xe9", "bytes escaped, not replaced");
        assert!(
            l.bad[0].reason.starts_with("folder not moved: name"),
            "{:?}",
            l.bad
        );
    }
}

#[test]
fn keyword_letters_map_through_dovecot_keywords() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    touch(&r.join("cur/1.a.host:2,Sab"), b"Subject: a\n\nx");
    touch(&r.join("cur/2.b.host:2,cF"), b"Subject: b\n\nx");
    touch(&r.join(".Work/cur/3.c.host:2,a"), b"Subject: c\n\nx");
    fs::write(
        r.join(KEYWORDS_FILE),
        "0 $Junk\n1 ProjectX\nnot a line\n3 bad\"quote\n30 $Late\n",
    )
    .unwrap();
    fs::write(r.join(".Work").join(KEYWORDS_FILE), "0 $Label1\n").unwrap();
    let md = Maildir::new(r.to_path_buf());
    let l = md.list(&Prior::default()).unwrap();
    let flags: Vec<(&str, &str)> = l
        .items
        .iter()
        .map(|i| (i.source_id.as_str(), i.flags.as_str()))
        .collect();
    assert_eq!(
        flags,
        [
            ("1.a.host", "S $Junk ProjectX"),
            ("2.b.host", "Fc"),
            ("3.c.host", " $Label1")
        ],
        "per-folder maps; an unmapped letter stays a letter"
    );
    assert!(l.bad.is_empty(), "{:?}", l.bad);

    // Read again with what was acknowledged: nothing reads as a flag change.
    let prior = prior_of(&l);
    let again = md.list(&prior).unwrap();
    for i in &again.items {
        let p = prior.get(&i.folder, &i.source_id).unwrap();
        assert_eq!(i.flags, p.flags, "{}", i.name());
    }

    // A re-mapped letter, with cur/ untouched and old: the keywords file's own mtime
    // has the folder read again.
    let old = SystemTime::now() - Duration::from_secs(60);
    set_mtime(&r.join("cur"), old);
    fs::File::open(r.join(KEYWORDS_FILE))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let proven = prior_of(&md.list(&prior).unwrap());
    let quiet = md.list(&proven).unwrap();
    assert!(
        quiet.delta.contains_key(&FolderName::inbox()),
        "proven unchanged"
    );
    fs::write(r.join(KEYWORDS_FILE), "0 $Junk\n1 ProjectY\n").unwrap();
    let remapped = md.list(&proven).unwrap();
    let one = remapped
        .items
        .iter()
        .find(|i| i.source_id.as_str() == "1.a.host")
        .expect("read again");
    assert_eq!(one.flags.as_str(), "S $Junk ProjectY");
}

#[test]
fn not_a_maildir_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let e = Maildir::new(d.path().to_path_buf())
        .list(&crate::source::Prior::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a Maildir"), "{e}");
}

/// Everything a listing found, as an earlier pass would hand it back: every item
/// acknowledged, and the listing's cursors.
fn prior_of(l: &Listing) -> Prior {
    let mut p = Prior::default();
    for i in &l.items {
        p.folders.entry(i.folder.clone()).or_default().items.insert(
            i.source_id.clone(),
            crate::source::PriorItem {
                flags: i.flags.clone(),
                internal_date: i.internal_date,
                size: i.size,
                ident: None,
            },
        );
    }
    for (f, c) in &l.cursors {
        p.folders.entry(f.clone()).or_default().cursor = Some(c.clone());
    }
    p
}

fn set_mtime(dir: &Path, t: SystemTime) {
    fs::File::open(dir).unwrap().set_modified(t).unwrap();
}

fn three_files(r: &Path) {
    touch(&r.join("cur/1.a.host:2,S"), b"Subject: a\n\nx");
    touch(&r.join("cur/2.b.host:2,"), b"Subject: b\n\nxx");
    touch(&r.join("new/3.c.host"), b"Subject: c\n\nxxx");
}

fn ids(l: &Listing) -> Vec<&str> {
    l.items.iter().map(|i| i.source_id.as_str()).collect()
}

#[test]
fn cursor_round_trips_and_refuses_other_text() {
    let c = Cursor {
        cur: Some(1_700_000_000_123_456_789),
        new: None,
        scan: 1_700_000_100_000_000_000,
        count: 42,
        in_cur: 40,
        kw: Some(5),
    };
    assert_eq!(Cursor::parse(&c.encode()), Some(c));
    for bad in [
        "",
        "maildir2",
        "maildir2 1 2 3 4",
        "maildir2 1 2 3 4 5",
        "maildir3 1 2 3 4 5",
        "maildir3 1 2 3 4 5 6 7",
        "maildir1 1 2 3 4",
        "imap 1 2 3 4 5",
        "maildir2 x - 1 2 3",
    ] {
        assert_eq!(Cursor::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn an_unchanged_folder_with_old_mtimes_is_not_read_again() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    three_files(r);
    let old = SystemTime::now() - Duration::from_secs(60);
    set_mtime(&r.join("cur"), old);
    set_mtime(&r.join("new"), old);
    let md = Maildir::new(r.to_path_buf());
    let first = md.list(&Prior::default()).unwrap();
    assert_eq!(ids(&first), ["1.a.host", "2.b.host", "3.c.host"]);
    let prior = prior_of(&first);
    // A change that keeps the directories' mtimes is invisible by design: the folder is
    // taken from the checkpoint, which is how we see that it was not read.
    fs::remove_file(r.join("cur/2.b.host:2,")).unwrap();
    set_mtime(&r.join("cur"), old);
    let second = md.list(&prior).unwrap();
    assert!(second.items.is_empty(), "nothing read: {:?}", ids(&second));
    assert_eq!(
        second.delta.get(&FolderName::inbox()),
        Some(&DeltaFolder {
            acknowledged: 3,
            bytes: 42
        })
    );
    assert_eq!(second.cursors, first.cursors, "the proving cursor is kept");

    // A change of cur/'s mtime: the folder is read again.
    set_mtime(&r.join("cur"), SystemTime::now() - Duration::from_secs(30));
    let third = md.list(&prior).unwrap();
    assert_eq!(ids(&third), ["1.a.host", "3.c.host"]);
    assert!(third.delta.is_empty());
}

#[test]
fn a_delivery_to_new_reads_new_only_and_a_removal_there_reads_everything() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    three_files(r);
    let old = SystemTime::now() - Duration::from_secs(60);
    set_mtime(&r.join("cur"), old);
    set_mtime(&r.join("new"), old);
    let md = Maildir::new(r.to_path_buf());
    let first = md.list(&Prior::default()).unwrap();
    let prior = prior_of(&first);

    // Mail delivered: new/ changes, cur/ does not. A change in cur/ that keeps its
    // mtime is invisible by design, which is how we see that cur/ was not read.
    touch(&r.join("new/4.d.host"), b"Subject: d\n\nxxxx");
    fs::remove_file(r.join("cur/2.b.host:2,")).unwrap();
    set_mtime(&r.join("cur"), old);
    set_mtime(&r.join("new"), SystemTime::now() - Duration::from_secs(30));
    let second = md.list(&prior).unwrap();
    assert_eq!(ids(&second), ["4.d.host"], "only the new file is listed");
    assert_eq!(second.delta[&FolderName::inbox()].acknowledged, 3);
    let c = Cursor::parse(&second.cursors[&FolderName::inbox()]).unwrap();
    assert_eq!(
        (c.count, c.in_cur),
        (4, 2),
        "the cursor counts the new file"
    );

    // A message removed from new/ (cur/ still unchanged): something is gone, so the
    // whole folder is read, and the removal in cur/ shows now too.
    fs::remove_file(r.join("new/3.c.host")).unwrap();
    set_mtime(&r.join("cur"), old);
    set_mtime(&r.join("new"), SystemTime::now() - Duration::from_secs(20));
    let third = md.list(&prior).unwrap();
    assert_eq!(ids(&third), ["1.a.host", "4.d.host"]);
    assert!(third.delta.is_empty());
}

#[test]
fn a_folder_changed_within_the_mtime_window_is_read_again() {
    // The scan happens in the same second as the last change: its mtimes are not
    // trusted, so a change that keeps them (as a change in the same clock tick would)
    // is still seen by the next pass.
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    three_files(r);
    let md = Maildir::new(r.to_path_buf());
    let first = md.list(&Prior::default()).unwrap();
    let recorded = fs::metadata(r.join("cur")).unwrap().modified().unwrap();
    let prior = prior_of(&first);
    fs::remove_file(r.join("cur/2.b.host:2,")).unwrap();
    set_mtime(&r.join("cur"), recorded);
    let second = md.list(&prior).unwrap();
    assert_eq!(ids(&second), ["1.a.host", "3.c.host"]);
}

#[test]
fn a_folder_with_unacknowledged_messages_is_read_again() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    three_files(r);
    let old = SystemTime::now() - Duration::from_secs(60);
    set_mtime(&r.join("cur"), old);
    set_mtime(&r.join("new"), old);
    let md = Maildir::new(r.to_path_buf());
    let first = md.list(&Prior::default()).unwrap();
    let mut prior = prior_of(&first);
    // One message was left out (the profile's filter, a failure): not in the checkpoint.
    prior
        .folders
        .get_mut(&FolderName::inbox())
        .unwrap()
        .items
        .remove(&SourceId::parse("2.b.host").unwrap());
    let second = md.list(&prior).unwrap();
    assert_eq!(ids(&second), ["1.a.host", "2.b.host", "3.c.host"]);
}

#[test]
fn known_files_take_size_and_date_from_the_checkpoint_renamed_ones_are_read() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    three_files(r);
    let md = Maildir::new(r.to_path_buf());
    let first = md.list(&Prior::default()).unwrap();
    let mut prior = prior_of(&first);
    for p in prior
        .folders
        .get_mut(&FolderName::inbox())
        .unwrap()
        .items
        .values_mut()
    {
        p.size = 999; // what the checkpoint says, not what the disk says
    }
    fs::rename(r.join("cur/1.a.host:2,S"), r.join("cur/1.a.host:2,FS")).unwrap();
    let second = md.list(&prior).unwrap();
    let sizes: Vec<(&str, u64, &str)> = second
        .items
        .iter()
        .map(|i| (i.source_id.as_str(), i.size, i.flags.as_str()))
        .collect();
    assert_eq!(
        sizes,
        [
            ("1.a.host", 13, "FS"),
            ("2.b.host", 999, ""),
            ("3.c.host", 999, "")
        ]
    );
}

mod keywords_file_props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any text as a `dovecot-keywords` file: never a panic, and every letter it
        /// maps holds a keyword `Flags` accepts.
        #[test]
        fn any_keywords_file_parses_to_valid_keywords(text in "(?s).{0,400}") {
            let map = KeywordLetters::parse(&text, Path::new("dovecot-keywords"));
            for k in map.0.iter().flatten() {
                prop_assert!(Flags::keyword_ok(k).is_ok(), "{:?}", k);
            }
        }

        /// A file Dovecot would write (`N keyword` lines) maps each index to its keyword.
        #[test]
        fn written_keywords_files_read_back(
            kws in proptest::collection::btree_map(0usize..26, "[$A-Za-z0-9_]{1,20}", 0..26),
        ) {
            let text: String = kws.iter().map(|(n, k)| format!("{n} {k}\n")).collect();
            let map = KeywordLetters::parse(&text, Path::new("dovecot-keywords"));
            for i in 0..26 {
                prop_assert_eq!(map.0[i].as_ref(), kws.get(&i));
            }
        }
    }
}
