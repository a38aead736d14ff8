//! Issue 17, "store what the source holds": every non-empty item a source serves as a
//! message is stored byte for byte. Items that are not plain RFC 5322 messages (a digest
//! fragment without a header block, a file of NUL and binary bytes, bare CR line ends,
//! 8-bit header bytes that are not UTF-8) are stored and listed as warnings in the
//! report, `move status`, the HTML report and the dry run; they are not bad items and
//! never fail a move. Empty files stay skipped (bad) items. Real binary, real Maildir
//! files, a real Dovecot for the IMAP source.

use crate::dovecot::{self, Dovecot};
use crate::util::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

const MB: &str = "fern@example.com";

/// The odd items of the issue, by Maildir unique name: (folder directory, bytes, what
/// the warning must name).
fn odd_items() -> Vec<(&'static str, &'static str, Vec<u8>, &'static str)> {
    let mut binary = Vec::new();
    for i in 0..3000u32 {
        binary.push((i.wrapping_mul(2_654_435_761) >> 13) as u8);
        if i % 7 == 0 {
            binary.push(0);
        }
    }
    vec![
        (
            "1700000100.digest.host",
            ".Lists",
            b"and that is why the list moved to the new server last spring.\n\n\
              ------------------------------\n\nMessage: 3\nDate: Tue, 2 Jan 2024 10:00:00 +0000\n\
              From: carol@example.org\nSubject: Re: meeting\n\nSee you there.\n"
                .to_vec(),
            "no header block",
        ),
        ("1700000101.binary.host", "", binary, "NUL bytes"),
        (
            "1700000102.barecr.host",
            "",
            b"From: dave@example.org\rTo: fern@example.com\rSubject: classic Mac line ends\r\r\
              The body, also with CR only.\rSecond line.\r"
                .to_vec(),
            "bare CR",
        ),
        (
            "1700000103.latin1.host",
            ".Lists",
            b"From: J\xf6rg M\xfcller <joerg@example.org>\nTo: fern@example.com\n\
              Subject: Gr\xfc\xdfe aus K\xf6ln\nDate: Wed, 3 Jan 2024 09:00:00 +0100\n\n\
              Sch\xf6ne Gr\xfc\xdfe.\n"
                .to_vec(),
            "8-bit header bytes",
        ),
    ]
}

fn plain(n: u32) -> Vec<u8> {
    format!(
        "From: ann@example.org\r\nTo: fern@example.com\r\nSubject: ordinary {n}\r\n\
         Date: Mon, 1 Jan 2024 12:00:00 +0000\r\nMessage-ID: <{n}@example.org>\r\n\r\nHello {n}.\r\n"
    )
    .into_bytes()
}

fn write(root: &Path, dir: &str, name: &str, bytes: &[u8]) {
    let folder = root.join(dir);
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(folder.join(sub)).unwrap();
    }
    if !dir.is_empty() {
        fs::write(folder.join("maildirfolder"), b"").unwrap();
    }
    fs::write(folder.join("cur").join(format!("{name}:2,S")), bytes).unwrap();
}

/// A Maildir with ordinary messages in INBOX and `.Lists`, and the odd items.
fn mixed_maildir(root: &Path) {
    for n in 0..3 {
        write(root, "", &format!("17000000{n:02}.plain.host"), &plain(n));
        write(
            root,
            ".Lists",
            &format!("17000000{:02}.plain.host", 50 + n),
            &plain(50 + n),
        );
    }
    for (name, dir, bytes, _) in odd_items() {
        write(root, dir, name, &bytes);
    }
}

fn state(env: &Env) -> PathBuf {
    env.path("state")
}

fn pass(env: &Env, source: &str, extra: &[&str]) -> (i32, Value, Output) {
    let o = run(mailferry()
        .args(["move", "--source", source, "--mailbox", MB, "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--state")
        .arg(state(env))
        .arg("--json")
        .args(extra)
        .env_remove(mailferry_agent::source::imap::PASSWORD_ENV));
    let report = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}", describe(&o)));
    (o.status.code().unwrap_or(-1), report, o)
}

fn status(env: &Env) -> Value {
    let o = run(mailferry()
        .args(["move", "status", "--json", "--state"])
        .arg(state(env)));
    assert!(o.status.success(), "{}", describe(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `item` → `reason` of a list of warnings.
fn warnings(v: &Value) -> BTreeMap<String, String> {
    v.as_array()
        .unwrap_or_else(|| panic!("no warnings list: {v}"))
        .iter()
        .map(|w| {
            (
                w["item"].as_str().unwrap().to_string(),
                w["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The destination item name of a Maildir file: `INBOX/unique` or `Folder/unique`.
fn item_name(dir: &str, unique: &str) -> String {
    let folder = if dir.is_empty() { "INBOX" } else { &dir[1..] };
    format!("{folder}/{unique}")
}

#[test]
fn issue17_odd_maildir_items_are_stored_byte_for_byte_and_listed_as_warnings() {
    let env = Env::new();
    let src = env.path("src");
    mixed_maildir(&src);
    let source = read_maildir(&src);
    assert_eq!(source.len(), 10, "the corpus holds what the test claims");
    init_volume(&env);
    let spec = format!("maildir:{}", src.display());

    // The dry run reads them (a small mailbox is sampled whole) and says they would be
    // stored, with a warning.
    let o = run(mailferry()
        .args([
            "move",
            "--dry-run",
            "--source",
            &spec,
            "--mailbox",
            MB,
            "--volume",
        ])
        .arg(env.volume())
        .arg("--state")
        .arg(state(&env)));
    assert!(o.status.success(), "{}", describe(&o));
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(text.contains("would be stored, with a warning"), "{text}");
    for (name, dir, _, _) in odd_items() {
        assert!(
            text.contains(&item_name(dir, name)),
            "{name} not in the dry run:\n{text}"
        );
    }
    assert!(!text.contains("would be skipped"), "{text}");

    // The move: exit 0 with the default bad-item limit 0, everything stored.
    let (code, r, o) = pass(&env, &spec, &[]);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(r["items_moved"], 10, "{r}");
    assert_eq!(r["bad_items"], serde_json::json!([]), "{r}");
    assert_eq!(r["skipped_items"], serde_json::json!([]), "{r}");
    assert_eq!(r["receipt"]["matches"], true, "{r}");
    let warned = warnings(&r["warnings"]);
    assert_eq!(warned.len(), 4, "exactly the odd ones: {warned:?}");
    for (name, dir, _, why) in odd_items() {
        let item = item_name(dir, name);
        let reason = warned
            .get(&item)
            .unwrap_or_else(|| panic!("{item} is not a warning: {warned:?}"));
        assert!(reason.contains(why), "{item}: {reason}");
    }
    let w = r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["source_id"] == "1700000100.digest.host")
        .unwrap();
    assert_eq!(w["folder"], "Lists", "{w}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("warning Lists/1700000100.digest.host (stored)"),
        "{stderr}"
    );

    // Byte for byte, the odd ones included.
    let out = env.path("export");
    let o = export(&env, MB, &out);
    assert!(o.status.success(), "{}", describe(&o));
    let exported = read_maildir(&out);
    assert_eq!(exported.len(), source.len());
    for (key, (flags, bytes)) in &source {
        let (eflags, ebytes) = exported
            .get(key)
            .unwrap_or_else(|| panic!("{key:?} not exported"));
        assert_eq!(eflags, flags, "flags of {key:?}");
        assert!(ebytes == bytes, "bytes of {key:?} differ");
    }

    // A second pass sends nothing and so finds nothing odd; a new odd item is reported
    // by the pass that stores it. `move status` lists the move's warnings: all passes.
    let (code, r, o) = pass(&env, &spec, &[]);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(r["items_moved"], 0, "{r}");
    assert_eq!(r["warnings"], serde_json::json!([]), "{r}");
    write(
        &src,
        "",
        "1700000200.fragment.host",
        b"-- \nsent from a phone\n",
    );
    let (code, r, o) = pass(&env, &spec, &[]);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(r["items_moved"], 1, "{r}");
    assert_eq!(
        warnings(&r["warnings"]).into_keys().collect::<Vec<_>>(),
        ["INBOX/1700000200.fragment.host"]
    );
    let s = status(&env);
    assert_eq!(s["state"], "synced", "{s}");
    assert_eq!(s["items_bad"], 0, "{s}");
    assert_eq!(s["items_skipped"], 0, "{s}");
    let all = warnings(&s["warnings"]);
    assert_eq!(all.len(), 5, "{all:?}");
    assert!(
        all.contains_key("INBOX/1700000200.fragment.host"),
        "{all:?}"
    );
    assert!(all.contains_key("Lists/1700000103.latin1.host"), "{all:?}");
    let o = run(mailferry()
        .args(["move", "status", "--state"])
        .arg(state(&env)));
    assert!(o.status.success(), "{}", describe(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("warnings   5 item(s)"), "{text}");
    assert!(
        text.contains("warning INBOX/1700000101.binary.host (stored): not a plain RFC 5322"),
        "{text}"
    );

    // The HTML report lists them too, under their own heading.
    let html_out = env.path("report.html");
    let o = run(mailferry()
        .args(["report", "--format", "html", "--state"])
        .arg(state(&env))
        .arg("--out")
        .arg(&html_out));
    assert!(o.status.success(), "{}", describe(&o));
    let html = fs::read_to_string(&html_out).unwrap();
    let section = &html[html.find("<h2>Warnings</h2>").expect("a Warnings section")..];
    let section = &section[..section.find("<h2>Audit logs</h2>").unwrap()];
    for item in all.keys() {
        assert!(section.contains(item.as_str()), "{item} not in {section}");
    }
    assert!(section.contains("no header block"), "{section}");

    // The source-side audit log records them, and nothing was logged as skipped.
    let log = fs::read_to_string(state(&env).join("audit.jsonl")).unwrap();
    assert_eq!(log.matches("\"event\":\"item.warning\"").count(), 5);
    assert_eq!(log.matches("\"event\":\"item.skipped\"").count(), 0);
}

#[test]
fn issue17_an_empty_file_is_still_a_skipped_bad_item_and_not_a_warning() {
    let env = Env::new();
    let src = env.path("src");
    write(&src, "", "1700000000.plain.host", &plain(0));
    write(&src, "", "1700000001.empty.host", b"");
    init_volume(&env);
    let (code, r, o) = pass(&env, &format!("maildir:{}", src.display()), &[]);
    assert_eq!(code, 3, "the default bad-item limit is 0: {}", describe(&o));
    assert_eq!(r["items_moved"], 1, "{r}");
    assert_eq!(r["warnings"], serde_json::json!([]), "{r}");
    let skipped = r["skipped_items"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{r}");
    assert_eq!(skipped[0]["item"], "INBOX/1700000001.empty.host");
    assert_eq!(skipped[0]["kind"], "bad_item");
    assert!(
        skipped[0]["reason"]
            .as_str()
            .unwrap()
            .contains("empty file"),
        "{r}"
    );
}

/// What Dovecot's FETCH BODY[] serves of a Maildir file: a LF without CR before it as
/// CRLF, and a NUL as 0x80 (IMAP text may hold no NUL). That, and nothing else, is what
/// the move must store.
fn served(file: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(file.len() + file.len() / 20);
    for (i, &b) in file.iter().enumerate() {
        match b {
            b'\n' if i == 0 || file[i - 1] != b'\r' => out.extend_from_slice(b"\r\n"),
            0 => out.push(0x80),
            _ => out.push(b),
        }
    }
    out
}

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

#[test]
fn issue17_odd_items_served_by_dovecot_are_stored_and_listed_as_warnings() {
    if skip() {
        return;
    }
    let dv = Dovecot::start();
    let mut expected = Vec::new();
    for n in 0..2 {
        let body = plain(n);
        dv.put(
            "",
            &format!("17000000{n:02}.plain.host"),
            "S",
            &body,
            1_700_000_000,
        );
        expected.push(body);
    }
    let mut whys = Vec::new();
    for (name, _, bytes, why) in odd_items() {
        // Text files as an IMAP server holds them (CRLF); the bare CR one has no LF.
        let bytes = if bytes.contains(&0) {
            bytes
        } else {
            served(&bytes)
        };
        dv.put("", name, "S", &bytes, 1_700_000_000);
        expected.push(served(&bytes));
        // Served without NUL bytes, the binary file still has no header block, which is
        // what its warning then says.
        whys.push(if bytes.contains(&0) {
            "no header block"
        } else {
            why
        });
    }
    let env = Env::new();
    init_volume(&env);
    let (code, r, o) = pass(
        &env,
        &dv.url(true),
        &[
            "--source-ca",
            dv.ca_pem.to_str().unwrap(),
            "--password-file",
            dv.password_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(r["items_moved"], expected.len(), "{r}");
    assert_eq!(r["bad_items"], serde_json::json!([]), "{r}");
    let warned = warnings(&r["warnings"]);
    assert_eq!(warned.len(), 4, "exactly the odd ones: {warned:?}");
    for why in whys {
        assert!(
            warned.values().any(|reason| reason.contains(why)),
            "no warning names {why:?}: {warned:?}"
        );
    }
    assert!(warned.keys().all(|k| k.starts_with("INBOX/")), "{warned:?}");

    // What Dovecot served is what is stored: the export holds the files' bytes.
    let out = env.path("export");
    let o = export(&env, MB, &out);
    assert!(o.status.success(), "{}", describe(&o));
    let mut got: Vec<Vec<u8>> = read_maildir(&out).into_values().map(|(_, b)| b).collect();
    got.sort();
    expected.sort();
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert!(
            g == e,
            "exported {:?}\n  source {:?}",
            String::from_utf8_lossy(&g[..g.len().min(80)]),
            String::from_utf8_lossy(&e[..e.len().min(80)])
        );
    }
}

#[test]
fn issue17_mbox_message_without_a_header_block_is_stored_with_a_warning() {
    let env = Env::new();
    let mbox = env.path("Lists.mbox");
    // The last message is body text only and the file has no blank line after it: not
    // a truncated header, since there is no header.
    fs::write(
        &mbox,
        b"From ann@example.org Mon Jan  1 12:00:00 2024\nFrom: ann@example.org\n\
          Subject: ordinary\n\nHello.\n\n\
          From digest@example.org Tue Jan  2 10:00:00 2024\n\
          and the rest of the digest, which lost its header.\nSee you there.\n",
    )
    .unwrap();
    init_volume(&env);
    let (code, r, o) = pass(&env, &format!("mbox:{}", mbox.display()), &[]);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(r["items_moved"], 2, "{r}");
    assert_eq!(r["skipped_items"], serde_json::json!([]), "{r}");
    let warned = warnings(&r["warnings"]);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned.values().all(|w| w.contains("no header block")),
        "{warned:?}"
    );
}
