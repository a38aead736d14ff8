use super::*;

fn touch(p: &Path, body: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, body).unwrap();
}

#[test]
fn lists_root_as_inbox_and_subdirectories_as_folders() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    touch(&r.join("b.eml"), b"Subject: b\n\nx");
    touch(&r.join("a.EML"), b"Subject: a\n\nx");
    touch(&r.join("inbox/c.eml"), b"Subject: c\n\nx");
    touch(&r.join("Archive/2024/d.eml"), b"Subject: d\n\nx");
    touch(&r.join("Archive/2024/Re: hello.eml"), b"Subject: e\n\nx");
    touch(&r.join("Archive/notes.txt"), b"x");
    touch(&r.join(".DS_Store"), b"x");
    touch(&r.join("back\\slash/e.eml"), b"Subject: e\n\nx");
    std::os::unix::fs::symlink("/etc", r.join("etc")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", r.join("host.eml")).unwrap();
    let l = EmlTree::new(r.to_path_buf())
        .list(&crate::source::Prior::default())
        .unwrap();
    let names: Vec<String> = l.items.iter().map(|i| i.name()).collect();
    assert_eq!(
        names,
        [
            "Archive/2024/d.eml",
            "INBOX/a.EML",
            "INBOX/b.eml",
            "INBOX/c.eml"
        ]
    );
    assert!(l.items.iter().all(|i| i.flags.as_str().is_empty()));
    assert_eq!(l.items[0].size, 13);
    let bad: Vec<(&str, &str)> = l
        .bad
        .iter()
        .map(|b| (b.item.as_str(), b.reason.as_str()))
        .collect();
    assert_eq!(bad.len(), 5, "{bad:?}");
    let reason = |item: &str| bad.iter().find(|b| b.0 == item).unwrap().1;
    assert!(reason("Archive/2024/Re: hello.eml").contains("':'"));
    assert!(reason("Archive/notes.txt").contains("not a .eml"));
    assert!(reason("INBOX/back\\slash").contains("backslash"));
    assert!(reason("INBOX/etc").contains("symbolic link"));
    assert!(reason("INBOX/host.eml").contains("symbolic link"));
}

#[test]
fn not_a_directory_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("x.eml");
    touch(&f, b"Subject: x\n\n");
    let e = EmlTree::new(f)
        .list(&crate::source::Prior::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a directory"), "{e}");
}
