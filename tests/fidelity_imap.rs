//! Issue 17, the IMAP source against real Dovecots configured as real deployments are:
//! keywords set with `doveadm flags` reach the volume (encrypted) and follow the source
//! in a delta pass; a Courier-style `INBOX.` namespace prefix is mapped away; a folder
//! announced `\Sent` arrives in the profile's Sent; a message found only in a virtual
//! `\All` folder (Dovecot's virtual plugin over a namespace LIST does not show, as Gmail
//! hides archived mail) lands in Archive while the others are stored once.

use crate::dovecot::{self, Dovecot, Options};
use crate::util::{all_files, contains, describe, init_volume, mailferry, run, Env};
use mailferry_core::profile::StoreSettings;
use mailferry_core::MailboxAddr;
use std::collections::BTreeMap;
use std::process::Output;

const MAILBOX: &str = "alice@example.com";

/// `mailferry move` of `alice@example.com` from `dv` into the test volume (same state
/// every call: later calls are delta passes); returns (exit code, JSON report, output).
pub(crate) fn move_from(
    env: &Env,
    dv: &Dovecot,
    extra: &[&str],
) -> (i32, serde_json::Value, Output) {
    let o = run(mailferry()
        .arg("move")
        .args(["--source", &dv.url(true)])
        .arg("--source-ca")
        .arg(&dv.ca_pem)
        .arg("--password-file")
        .arg(&dv.password_file)
        .args(extra)
        .args(["--mailbox", MAILBOX, "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--state")
        .arg(env.path("state"))
        .arg("--json")
        .env_remove(mailferry_agent::source::imap::PASSWORD_ENV));
    let report = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("no JSON report: {}", describe(&o)));
    (o.status.code().unwrap_or(-1), report, o)
}

/// What the volume holds, read through the store library: folder → sorted
/// (Message-ID line, canonical flags) of each message.
fn stored(env: &Env) -> BTreeMap<String, Vec<(String, String)>> {
    let vol = mailferry_store::Volume::open(&env.volume(), &env.key(), &StoreSettings::default())
        .expect("open the volume");
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for m in vol
        .list_messages(&MailboxAddr::parse(MAILBOX).unwrap())
        .unwrap()
    {
        let m = m.expect("a readable message");
        let mut body = Vec::new();
        vol.read_message(&m, &mut body).unwrap();
        let id = String::from_utf8_lossy(&body)
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
            .unwrap_or("")
            .trim()
            .to_string();
        out.entry(m.meta.folder.to_string())
            .or_default()
            .push((id, m.meta.flags.as_str().to_string()));
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

fn msg(id: &str) -> Vec<u8> {
    format!(
        "From: someone@example.org\r\nTo: {MAILBOX}\r\nMessage-ID: <{id}@test.example>\r\n\
         Subject: message {id}\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nbody of {id}\r\n"
    )
    .into_bytes()
}

fn mid(id: &str) -> String {
    format!("Message-ID: <{id}@test.example>")
}

#[test]
fn issue17_keywords_reach_the_volume_and_follow_the_source() {
    if !dovecot::available() {
        eprintln!("skipped: Dovecot is not installed");
        return;
    }
    let env = Env::new();
    init_volume(&env);
    let dv = Dovecot::start();
    dv.put("", "1700000000.M1P1.test", "S", &msg("one"), 1_700_000_000);
    dv.put("", "1700000000.M2P1.test", "", &msg("two"), 1_700_000_100);
    dv.doveadm(&[
        "flags",
        "add",
        "-u",
        dovecot::USER,
        "$Label1 ProjectX $Junk $MDNSent",
        "mailbox",
        "INBOX",
        "uid",
        "1",
    ]);
    let (code, report, o) = move_from(&env, &dv, &[]);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(report["items_moved"], 2, "{report}");
    assert_eq!(
        stored(&env)["INBOX"],
        [
            (mid("one"), "S $Junk $Label1 $MDNSent ProjectX".to_string()),
            (mid("two"), String::new()),
        ]
    );
    // Encrypted with the metadata: no keyword in plaintext anywhere in the volume.
    for (path, bytes) in all_files(&env.volume()) {
        for k in ["ProjectX", "$Label1", "$MDNSent"] {
            assert!(!contains(&bytes, k.as_bytes()), "{k} in {}", path.display());
        }
    }

    // Removed at the source (and one added to the other message): mirrored by the
    // delta pass as flag updates, nothing sent again.
    dv.doveadm(&[
        "flags",
        "remove",
        "-u",
        dovecot::USER,
        "ProjectX",
        "mailbox",
        "INBOX",
        "uid",
        "1",
    ]);
    dv.doveadm(&[
        "flags",
        "add",
        "-u",
        dovecot::USER,
        "Later",
        "mailbox",
        "INBOX",
        "uid",
        "2",
    ]);
    let (code, report, o) = move_from(&env, &dv, &[]);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(report["items_moved"], 0, "{report}");
    assert_eq!(report["items_flags_updated"], 2, "{report}");
    assert_eq!(
        stored(&env)["INBOX"],
        [
            (mid("one"), "S $Junk $Label1 $MDNSent".to_string()),
            (mid("two"), " Later".to_string()),
        ]
    );
}

#[test]
fn issue17_a_courier_namespace_prefix_is_mapped_away() {
    if !dovecot::available() {
        eprintln!("skipped: Dovecot is not installed");
        return;
    }
    let env = Env::new();
    init_volume(&env);
    let dv = Dovecot::start_configured(&Options {
        extra_conf: "namespace inbox {\n  inbox = yes\n  prefix = INBOX.\n  separator = .\n}\n"
            .into(),
        ..Options::default()
    });
    // Courier's layout on disk: INBOX.Sent is .Sent, INBOX.Archive.2019 is .Archive.2019.
    dv.put(
        "",
        "1700000000.M1P1.test",
        "S",
        &msg("inbox"),
        1_700_000_000,
    );
    dv.put(
        ".Sent",
        "1700000000.M2P1.test",
        "S",
        &msg("sent"),
        1_700_000_000,
    );
    dv.put(
        ".Archive.2019",
        "1700000000.M3P1.test",
        "",
        &msg("old"),
        1_600_000_000,
    );
    let listed = dv.doveadm(&["mailbox", "list", "-u", dovecot::USER]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("INBOX.Sent") && listed.contains("INBOX.Archive.2019"),
        "the server does not show the prefix, so this test proves nothing:\n{listed}"
    );
    let (code, report, o) = move_from(&env, &dv, &[]);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(report["items_moved"], 3, "{report}");
    assert_eq!(
        report["bad_items"].as_array().map_or(0, Vec::len),
        0,
        "{report}"
    );
    let got = stored(&env);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["Archive/2019", "INBOX", "Sent"],
        "{got:?}"
    );
    assert_eq!(got["Sent"], [(mid("sent"), "S".to_string())]);

    // A second pass finds everything where it was: nothing sent, nothing deleted.
    let (code, report, o) = move_from(&env, &dv, &[]);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(report["items_moved"], 0, "{report}");
    assert_eq!(report["items_deleted"], 0, "{report}");
    assert_eq!(stored(&env), got);

    // --source-prefix "" keeps the server's full names (for servers without NAMESPACE
    // the flag is how the prefix is given): then the folders are INBOX/...
    let env2 = Env::new();
    init_volume(&env2);
    let (code, _, o) = move_from(&env2, &dv, &["--source-prefix", ""]);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(
        stored(&env2).keys().collect::<Vec<_>>(),
        ["INBOX", "INBOX/Archive/2019", "INBOX/Sent"]
    );
}

#[test]
fn issue17_a_folder_announced_sent_arrives_in_sent() {
    if !dovecot::available() {
        eprintln!("skipped: Dovecot is not installed");
        return;
    }
    let env = Env::new();
    init_volume(&env);
    let dv = Dovecot::start_configured(&Options {
        extra_conf: "namespace inbox {\n  inbox = yes\n  separator = /\n  \
                     mailbox \"Gesendete Objekte\" {\n    special_use = \\Sent\n  }\n}\n"
            .into(),
        ..Options::default()
    });
    dv.put("", "1700000000.M1P1.test", "", &msg("inbox"), 1_700_000_000);
    dv.put(
        ".Gesendete Objekte",
        "1700000000.M2P1.test",
        "S",
        &msg("gesendet"),
        1_700_000_000,
    );
    let profile = env.path("profile.toml");
    std::fs::write(&profile, "[folders]\nspecial_use = true\n").unwrap();
    let profile = profile.display().to_string();
    let (code, report, o) = move_from(&env, &dv, &["--profile", &profile]);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(report["items_moved"], 2, "{report}");
    let got = stored(&env);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["INBOX", "Sent"], "{got:?}");
    assert_eq!(got["Sent"], [(mid("gesendet"), "S".to_string())]);
    // Again: the renamed folder is recognised, nothing sent or deleted.
    let (code, report, o) = move_from(&env, &dv, &["--profile", &profile]);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(report["items_moved"], 0, "{report}");
    assert_eq!(report["items_deleted"], 0, "{report}");
    assert_eq!(stored(&env), got);
}

#[test]
fn issue17_a_message_only_in_a_virtual_all_folder_lands_in_archive() {
    if !dovecot::available() {
        eprintln!("skipped: Dovecot is not installed");
        return;
    }
    let env = Env::new();
    init_volume(&env);
    // A namespace LIST does not show (as Gmail shows archived mail in no folder but All
    // Mail), and a virtual \All over everything.
    let dv = Dovecot::start_configured(&Options {
        extra_conf: "mail_plugins = $mail_plugins virtual
namespace inbox {
  inbox = yes
  separator = /
}
namespace hidden {
  prefix = Hidden/
  separator = /
  location = maildir:~/hidden
  list = no
  hidden = yes
}
namespace virtual {
  prefix = Virtual/
  separator = /
  location = virtual:~/virtual
  list = yes
  subscriptions = no
  mailbox All {
    special_use = \\All
  }
}
"
        .into(),
        ..Options::default()
    });
    dv.put(
        "",
        "1700000000.M1P1.test",
        "S",
        &msg("inbox"),
        1_700_000_000,
    );
    dv.put(
        ".Work",
        "1700000000.M2P1.test",
        "",
        &msg("work"),
        1_700_000_000,
    );
    dv.put(
        "hidden/.Archived",
        "1700000000.M3P1.test",
        "S",
        &msg("archived"),
        1_600_000_000,
    );
    let all = dv.maildir().join("virtual/All");
    std::fs::create_dir_all(&all).unwrap();
    std::fs::write(all.join("dovecot-virtual"), "*\nHidden/*\n  all\n").unwrap();
    dv.own_tree(&dv.maildir()).unwrap();
    let o = dv.doveadm(&[
        "fetch",
        "-u",
        dovecot::USER,
        "hdr.message-id",
        "mailbox",
        "Virtual/All",
        "all",
    ]);
    let seen = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        seen.matches("Message-ID").count() + seen.matches("message-id").count(),
        3,
        "{seen}"
    );

    let (code, report, o) = move_from(&env, &dv, &[]);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(
        report["bad_items"].as_array().map_or(0, Vec::len),
        0,
        "{report}"
    );
    let want = BTreeMap::from([
        (
            "Archive".to_string(),
            vec![(mid("archived"), "S".to_string())],
        ),
        ("INBOX".to_string(), vec![(mid("inbox"), "S".to_string())]),
        ("Work".to_string(), vec![(mid("work"), String::new())]),
    ]);
    assert_eq!(stored(&env), want);
    assert_eq!(report["items_moved"], 3, "{report}");

    // The next pass changes nothing.
    let (code, report, o) = move_from(&env, &dv, &[]);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(report["items_moved"], 0, "{report}");
    assert_eq!(report["items_deleted"], 0, "{report}");
    assert_eq!(stored(&env), want);

    // The archived message is filed in a real folder: it arrives there and leaves
    // Archive, stored once, never nowhere. (A copy instead would be two messages at the
    // source, one still only in \All, and would stay in Archive too.)
    dv.doveadm(&[
        "move",
        "-u",
        dovecot::USER,
        "Work",
        "mailbox",
        "Hidden/Archived",
        "all",
    ]);
    let (code, report, o) = move_from(&env, &dv, &[]);
    assert_eq!(code, 0, "{}", describe(&o));
    let got = stored(&env);
    assert!(!got.contains_key("Archive"), "{got:?} {report}");
    assert_eq!(
        got["Work"],
        [
            (mid("archived"), "S".to_string()),
            (mid("work"), String::new())
        ]
    );
}
