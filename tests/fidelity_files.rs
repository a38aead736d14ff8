//! Issue 17 ("real mailboxes move whole"), file sources and Maildir export, against
//! trees that a real Dovecot wrote and read back by a real Dovecot: UTF-8 folder names
//! (`maildir:...:UTF-8`), IMAP keywords set with `doveadm flags` and exported in
//! Dovecot's `dovecot-keywords` convention, a folder name that Maildir++ cannot hold
//! exported with `--layout fs`, and mbox `X-Keywords:`.

use crate::dovecot::{self, Dovecot, Options};
use crate::util::{
    describe, init_volume, mailferry, move_maildir, move_spec, read_maildir, run, Env,
};
use std::path::Path;
use std::process::Output;

const MAILBOX: &str = "alice@example.com";

fn skip() -> bool {
    if dovecot::available() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "Dovecot (dovecot-imapd) is missing in CI"
    );
    eprintln!("skipped: dovecot-imapd is not installed");
    true
}

/// `doveadm save` of `body` into `mailbox` (a Dovecot mailbox name, UTF-8).
fn save(dv: &Dovecot, env: &Env, mailbox: &str, body: &[u8]) {
    let file = env.path("save.eml");
    std::fs::write(&file, body).unwrap();
    let o = std::process::Command::new("doveadm")
        .arg("-c")
        .arg(&dv.conf)
        .args(["save", "-u", dovecot::USER, "-m", mailbox])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "doveadm save: {}", describe(&o));
}

fn export_with(env: &Env, out: &Path, args: &[&str]) -> Output {
    run(mailferry()
        .arg("export")
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .args(["--mailbox", MAILBOX, "--format", "maildir", "--out"])
        .arg(out)
        .args(args))
}

/// Folder directory names (Maildir++: the `.X` directories) of a tree.
fn folder_dirs(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().to_string())
        .filter(|n| n.starts_with('.') && root.join(n).is_dir())
        .collect();
    v.sort();
    v
}

/// Every keyword Dovecot reports for the messages of `mailbox`, per UID line.
fn dovecot_flags(dv: &Dovecot, mailbox: &str) -> String {
    let o = dv.doveadm(&[
        "fetch",
        "-u",
        dovecot::USER,
        "uid flags",
        "mailbox",
        mailbox,
        "all",
    ]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// issue 17: a Dovecot `maildir:...:UTF-8` tree with non-ASCII folder names, written by
/// Dovecot itself, moves whole as files, and `export --maildir-names utf8` gives back
/// the same folder directories and the same message files, byte for byte.
#[test]
fn utf8_folder_names_written_by_dovecot_move_and_export_identically_issue17() {
    if skip() {
        return;
    }
    let env = Env::new();
    init_volume(&env);
    let dv = Dovecot::start_configured(&Options {
        mail_location_suffix: ":UTF-8".into(),
        ..Options::default()
    });
    // The default Maildir++ namespace separator is '.'.
    for (i, mb) in ["INBOX", "Projects.Ünïcode Ærø", "Entwürfe", "R&D"]
        .iter()
        .enumerate()
    {
        if *mb != "INBOX" {
            dv.doveadm(&["mailbox", "create", "-u", dovecot::USER, mb]);
        }
        for j in 0..2 {
            save(
                &dv,
                &env,
                mb,
                format!("Subject: m{i}.{j}\r\nMessage-ID: <{i}.{j}@x>\r\n\r\nbody {i} {j}\r\n")
                    .as_bytes(),
            );
        }
    }
    let src = dv.maildir();
    let dirs = folder_dirs(&src);
    assert_eq!(
        dirs,
        [".Entwürfe", ".Projects.Ünïcode Ærø", ".R&D"],
        "Dovecot wrote raw UTF-8 names"
    );

    let (code, report, o) = move_maildir(&env, &src, MAILBOX);
    assert_eq!(code, 0, "{}", describe(&o));
    let report = report.unwrap();
    assert_eq!(report["items_moved"], 8, "{report}");
    assert_eq!(
        report["bad_items"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );

    let out = env.path("export");
    let o = export_with(&env, &out, &["--maildir-names", "utf8"]);
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(folder_dirs(&out), dirs);
    let (a, b) = (read_maildir(&src), read_maildir(&out));
    assert_eq!(a.len(), 8);
    // Keyed by (folder directory, unique name, Dovecot's `,S=..,W=..` included):
    // same names, flags and bytes.
    assert_eq!(a, b);

    // The default export writes Dovecot's default encoding.
    let out7 = env.path("export7");
    let o = export_with(&env, &out7, &[]);
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(
        folder_dirs(&out7),
        [
            ".Entw&APw-rfe",
            ".Projects.&ANw-n&AO8-code &AMY-r&APg-",
            ".R&-D"
        ]
    );

    // The same server read over IMAP (it lists the names in modified UTF-7, the IMAP
    // source decodes them): the same folders, the same messages. Dovecot stored the
    // files with LF and serves them with CRLF, so bodies are compared line by line.
    let envi = Env::new();
    init_volume(&envi);
    let (code, _, o) = crate::fidelity_imap::move_from(&envi, &dv, &[]);
    assert_eq!(code, 0, "{}", describe(&o));
    let outi = envi.path("export");
    let o = run(mailferry()
        .arg("export")
        .arg("--volume")
        .arg(envi.volume())
        .arg("--key-file")
        .arg(envi.key())
        .args(["--mailbox", MAILBOX, "--format", "maildir", "--out"])
        .arg(&outi)
        .args(["--maildir-names", "utf8"]));
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(folder_dirs(&outi), dirs, "IMAP names round-trip");
    let lines = |m: &std::collections::BTreeMap<(String, String), (String, Vec<u8>)>| {
        let mut v: Vec<(String, String)> = m
            .iter()
            .map(|((folder, _), (_, body))| {
                (
                    folder.clone(),
                    String::from_utf8_lossy(body).replace("\r\n", "\n"),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(lines(&read_maildir(&outi)), lines(&a));

    // The same tree read with the wrong forced encoding names every folder it refuses.
    let env2 = Env::new();
    init_volume(&env2);
    let o = run(mailferry()
        .arg("move")
        .arg("--source")
        .arg(format!("maildir:{}", src.display()))
        .args(["--maildir-names", "mutf7", "--mailbox", MAILBOX, "--volume"])
        .arg(env2.volume())
        .arg("--key-file")
        .arg(env2.key())
        .arg("--state")
        .arg(env2.path("state"))
        .arg("--json"));
    assert_eq!(o.status.code(), Some(3), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stdout);
    assert!(
        err.contains(".Entwürfe") && err.contains("--maildir-names"),
        "{err}"
    );
}

/// issue 17: keywords set with `doveadm flags add` reach the volume through the
/// Maildir source, come back in `dovecot-keywords` and letters, are read by Dovecot
/// from the exported tree, and a keyword removed at the source is removed by the next
/// pass.
#[test]
fn dovecot_keywords_move_export_and_follow_a_delta_pass_issue17() {
    if skip() {
        return;
    }
    let env = Env::new();
    init_volume(&env);
    let dv = Dovecot::start();
    for i in 0..3 {
        save(
            &dv,
            &env,
            "INBOX",
            format!("Subject: k{i}\r\n\r\nbody {i}\r\n").as_bytes(),
        );
    }
    let u = dovecot::USER;
    dv.doveadm(&[
        "flags",
        "add",
        "-u",
        u,
        "$Label1 ProjectX $Junk",
        "mailbox",
        "INBOX",
        "uid",
        "1",
    ]);
    dv.doveadm(&[
        "flags",
        "add",
        "-u",
        u,
        "\\Seen $Junk",
        "mailbox",
        "INBOX",
        "uid",
        "2",
    ]);
    let kw = std::fs::read_to_string(dv.maildir().join("dovecot-keywords")).unwrap();
    assert!(kw.contains("ProjectX"), "Dovecot wrote {kw:?}");

    let (code, report, o) = move_maildir(&env, &dv.maildir(), MAILBOX);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(report.unwrap()["items_moved"], 3);

    let out_root = env.path("export-root");
    let out = out_root.join(dovecot::USER);
    let o = export_with(&env, &out, &[]);
    assert!(o.status.success(), "{}", describe(&o));
    let written = std::fs::read_to_string(out.join("dovecot-keywords")).unwrap();
    assert_eq!(written, "0 $Junk\n1 $Label1\n2 ProjectX\n");
    let mut flags: Vec<String> = read_maildir(&out).into_values().map(|(f, _)| f).collect();
    flags.sort();
    assert_eq!(flags, ["", "Sa", "abc"]);

    // A Dovecot we did not write reads the exported tree with the same keywords.
    let back = Dovecot::start_in(&out_root, &Options::default());
    let seen = dovecot_flags(&back, "INBOX");
    for line in seen.lines().filter(|l| l.starts_with("flags:")) {
        eprintln!("{line}");
    }
    let source = dovecot_flags(&dv, "INBOX");
    assert_eq!(normalise(&seen), normalise(&source), "{seen}\nvs\n{source}");
    assert!(
        seen.contains("ProjectX") && seen.contains("$Label1"),
        "{seen}"
    );
    drop(back);

    // Removed at the source: the next pass mirrors it.
    dv.doveadm(&[
        "flags", "remove", "-u", u, "ProjectX", "mailbox", "INBOX", "uid", "1",
    ]);
    let (code, report, o) = move_maildir(&env, &dv.maildir(), MAILBOX);
    assert_eq!(code, 0, "{}", describe(&o));
    let report = report.unwrap();
    assert_eq!(report["items_flags_updated"], 1, "{report}");
    assert_eq!(report["items_moved"], 0, "{report}");
    let out2 = env.path("export2");
    let o = export_with(&env, &out2, &[]);
    assert!(o.status.success(), "{}", describe(&o));
    let written = std::fs::read_to_string(out2.join("dovecot-keywords")).unwrap();
    assert_eq!(written, "0 $Junk\n1 $Label1\n");
    let mut flags: Vec<String> = read_maildir(&out2).into_values().map(|(f, _)| f).collect();
    flags.sort();
    assert_eq!(flags, ["", "Sa", "ab"]);
}

/// `doveadm fetch` output as a sorted list of (uid, sorted flags).
fn normalise(fetch: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut uid = String::new();
    for line in fetch.lines() {
        if let Some(u) = line.strip_prefix("uid: ") {
            uid = u.trim().to_string();
        } else if let Some(f) = line.strip_prefix("flags: ") {
            let mut v: Vec<String> = f
                .split_whitespace()
                .filter(|f| *f != "\\Recent")
                .map(str::to_string)
                .collect();
            v.sort();
            out.push((uid.clone(), v));
        }
    }
    out.sort();
    out
}

/// Writes a message file at `path` (parents made).
fn touch(path: &Path, body: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

/// issue 17: a folder named `Projects/2024.Q1` cannot be a Maildir++ directory: the
/// default export refuses up front, naming it and `--layout fs`, and writes nothing;
/// `--layout fs` exports it, and a Dovecot with `LAYOUT=fs` lists it under that name.
/// The default export layout (Maildir++) cannot hold `Projects/2024.Q1`: the export
/// fails up front (exit 2), names the folder, suggests `--layout fs` and writes nothing.
fn assert_default_layout_refuses_projects_2024_q1(env: &Env) {
    let refused = env.path("refused");
    let o = export_with(env, &refused, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("\"Projects/2024.Q1\"") && err.contains("--layout fs"),
        "{err}"
    );
    assert!(!refused.exists(), "nothing written");
}

#[test]
fn a_folder_with_a_dot_exports_with_layout_fs_issue17() {
    let env = Env::new();
    init_volume(&env);
    let src = env.path("eml");
    let body = b"Subject: q1\r\n\r\nfirst quarter\r\n";
    touch(&src.join("Projects/2024.Q1/q1.eml"), body);
    touch(&src.join("in.eml"), b"Subject: in\r\n\r\ninbox\r\n");
    let (code, _, o) = move_spec(&env, &format!("eml:{}", src.display()), MAILBOX);
    assert_eq!(code, 0, "{}", describe(&o));

    assert_default_layout_refuses_projects_2024_q1(&env);

    let root = env.path("fs-root");
    let out = root.join(dovecot::USER);
    let o = export_with(&env, &out, &["--layout", "fs"]);
    assert!(o.status.success(), "{}", describe(&o));
    let files: Vec<_> = std::fs::read_dir(out.join("Projects/2024.Q1/cur"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(files, [body.to_vec()]);
    assert_eq!(
        std::fs::read_dir(out.join("cur")).unwrap().count(),
        1,
        "INBOX at the root"
    );

    if skip() {
        return;
    }
    let dv = Dovecot::start_in(
        &root,
        &Options {
            mail_location_suffix: ":LAYOUT=fs".into(),
            ..Options::default()
        },
    );
    let o = dv.doveadm(&["mailbox", "list", "-u", dovecot::USER]);
    let listed = String::from_utf8_lossy(&o.stdout);
    assert!(listed.lines().any(|l| l == "Projects/2024.Q1"), "{listed}");
    let o = dv.doveadm(&[
        "fetch",
        "-u",
        dovecot::USER,
        "text",
        "mailbox",
        "Projects/2024.Q1",
        "all",
    ]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("first quarter"),
        "{}",
        describe(&o)
    );
}

/// issue 17: `X-Keywords:` of an mbox message become keywords in the volume (seen in
/// a Maildir export), and the message is stored as it was, header included.
#[test]
fn mbox_x_keywords_become_keywords_and_the_message_is_unchanged_issue17() {
    let env = Env::new();
    init_volume(&env);
    let mbox = env.path("box.mbox");
    let msg = b"X-Keywords: $Label1, Work\nSubject: kw\n\nbody\n";
    let mut file = b"From a@example.com Mon Jan  1 00:00:00 2024\n".to_vec();
    file.extend_from_slice(msg);
    file.extend_from_slice(b"\n");
    std::fs::write(&mbox, &file).unwrap();
    let (code, _, o) = move_spec(&env, &format!("mbox:{}", mbox.display()), MAILBOX);
    assert_eq!(code, 0, "{}", describe(&o));
    let out = env.path("export");
    let o = export_with(&env, &out, &[]);
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(
        std::fs::read_to_string(out.join("dovecot-keywords")).unwrap(),
        "0 $Label1\n1 Work\n"
    );
    let exported: Vec<_> = read_maildir(&out).into_values().collect();
    assert_eq!(exported, [("ab".to_string(), msg.to_vec())]);
}

/// issue 17: the same folder name as it comes from a real IMAP server (Dovecot with
/// `LAYOUT=fs`, whose separator is `/`, so `.` is an ordinary character): it arrives as
/// `Projects/2024.Q1`, the default Maildir++ export refuses up front and names it, and
/// `--layout fs` writes it.
#[test]
fn a_folder_with_a_dot_from_imap_exports_with_layout_fs_issue17() {
    if skip() {
        return;
    }
    let env = Env::new();
    init_volume(&env);
    let dv = Dovecot::start_configured(&Options {
        mail_location_suffix: ":LAYOUT=fs".into(),
        ..Options::default()
    });
    dv.doveadm(&["mailbox", "create", "-u", dovecot::USER, "Projects/2024.Q1"]);
    let body = b"Subject: q1\r\nMessage-ID: <q1@x>\r\n\r\nfirst quarter\r\n";
    save(&dv, &env, "Projects/2024.Q1", body);
    save(&dv, &env, "INBOX", b"Subject: in\r\n\r\ninbox\r\n");
    let (code, report, o) = crate::fidelity_imap::move_from(&env, &dv, &[]);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(report["items_moved"], 2, "{report}");

    assert_default_layout_refuses_projects_2024_q1(&env);

    let out = env.path("fs");
    let o = export_with(&env, &out, &["--layout", "fs"]);
    assert!(o.status.success(), "{}", describe(&o));
    let files: Vec<String> = std::fs::read_dir(out.join("Projects/2024.Q1/cur"))
        .unwrap()
        .map(|e| String::from_utf8(std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].contains("first quarter"), "{files:?}");
}
