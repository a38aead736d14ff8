use super::*;

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
    touch(&r.join(".bad&ZZZ/new/5.e.host"), b"Subject: e\n\nx");
    touch(&r.join(".a..b/new/6.f.host"), b"x");
    let l = Maildir::new(r.to_path_buf())
        .list(&Default::default())
        .unwrap();
    let names: Vec<String> = l.items.iter().map(|i| i.name()).collect();
    assert_eq!(
        names,
        [
            "Archive/2024/3.c.host",
            "Entwürfe/4.d.host",
            "INBOX/1.a.host",
            "INBOX/2.b.host"
        ]
    );
    assert_eq!(l.items[2].flags.as_str(), "RS");
    assert_eq!(l.items[3].flags.as_str(), "");
    let bad: Vec<&str> = l.bad.iter().map(|b| b.item.as_str()).collect();
    assert!(bad.contains(&".bad&ZZZ"), "{bad:?}");
    assert!(bad.contains(&".a..b"), "{bad:?}");
}

#[test]
fn folder_dir_names_round_trip() {
    for f in ["Archive/2024", "Entwürfe", "Sent Items", "日本語/x"] {
        let folder = FolderName::parse(f).unwrap();
        let dir = dir_name_for_folder(&folder).unwrap().unwrap();
        assert_eq!(folder_from_dir_name(&dir).unwrap(), folder);
    }
    assert_eq!(dir_name_for_folder(&FolderName::inbox()).unwrap(), None);
    assert!(dir_name_for_folder(&FolderName::parse("a.b").unwrap()).is_err());
}

#[test]
fn not_a_maildir_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let e = Maildir::new(d.path().to_path_buf())
        .list(&Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a Maildir"), "{e}");
}
