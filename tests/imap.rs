//! The IMAP source against a real Dovecot (tests/dovecot.rs): moves over imaps:// and
//! imap:// + STARTTLS compared with the source message by message (bytes, flags,
//! internal dates), `\Seen` untouched at the source, a message larger than a fetch
//! piece, refusals (wrong password, untrusted certificate), hostile folder names, a
//! relay that cuts the connection mid-FETCH, kill -9 and rerun, and a UIDVALIDITY
//! change.

use crate::dovecot::{self, Dovecot};
use crate::util::{describe, export, init_volume, mailferry, read_maildir, run, Env};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub(crate) const MAILBOX: &str = "alice@example.com";

/// Folder directories of the test corpus (Maildir++ names, modified UTF-7).
const FOLDERS: [&str; 3] = ["", ".Archive.2024", ".Entw&APw-rfe"];

/// One source message as written into Dovecot's Maildir.
#[derive(Clone, Debug)]
pub(crate) struct Msg {
    pub(crate) dir: String,
    pub(crate) flags: String,
    pub(crate) body: Vec<u8>,
    pub(crate) mtime: i64,
}

/// A small deterministic generator (no rand dependency in the tests).
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `n` messages over [`FOLDERS`], sizes from a few hundred bytes to ~40 KB, plus one
/// of `big` bytes (0: none) in INBOX. CRLF line ends, as IMAP serves them.
pub(crate) fn corpus(n: usize, seed: u64, big: usize) -> Vec<Msg> {
    let mut rng = Lcg(seed);
    let mut out = Vec::new();
    for i in 0..n {
        let dir = FOLDERS[rng.below(FOLDERS.len() as u64) as usize].to_string();
        let mut flags = String::new();
        for f in ['D', 'F', 'R', 'S', 'T'] {
            if rng.below(3) == 0 {
                flags.push(f);
            }
        }
        let lines = rng.below(600) as usize;
        let mut body = format!(
            "From: sender{i}@example.org\r\nTo: {MAILBOX}\r\nMessage-ID: <{seed}.{i}@test.example>\r\n\
             Subject: message {i} \u{fc}ber alles\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n"
        )
        .into_bytes();
        for l in 0..lines {
            body.extend_from_slice(
                format!("line {l} of message {i}: {}\r\n", rng.next()).as_bytes(),
            );
        }
        out.push(Msg {
            dir,
            flags,
            body,
            mtime: 1_600_000_000 + rng.below(100_000_000) as i64,
        });
    }
    if big > 0 {
        let mut body = format!(
            "From: big@example.org\r\nTo: {MAILBOX}\r\nMessage-ID: <{seed}.big@test.example>\r\n\
             Subject: larger than a fetch piece\r\n\r\n"
        )
        .into_bytes();
        let mut l = 0u64;
        while body.len() < big {
            body.extend_from_slice(
                format!("{l:012} {:016x} abcdefghijklmnopqrstuvwxyz\r\n", rng.next()).as_bytes(),
            );
            l += 1;
        }
        out.push(Msg {
            dir: String::new(),
            flags: String::new(),
            body,
            mtime: 1_700_000_000,
        });
    }
    out
}

pub(crate) fn populate(dv: &Dovecot, msgs: &[Msg]) {
    for (i, m) in msgs.iter().enumerate() {
        dv.put(
            &m.dir,
            &format!("1700000000.M{i}P1.test"),
            &m.flags,
            &m.body,
            m.mtime,
        );
    }
}

/// `mailferry move --source <dovecot> ...` with the CA and password file unless the
/// caller's `args` replace them.
pub(crate) fn move_imap(
    env: &Env,
    dv: &Dovecot,
    implicit_tls: bool,
    args: &[&str],
) -> (i32, Option<serde_json::Value>, Output) {
    move_imap_with(env, &dv.url(implicit_tls), dv, args, true)
}

pub(crate) fn move_imap_with(
    env: &Env,
    url: &str,
    dv: &Dovecot,
    args: &[&str],
    defaults: bool,
) -> (i32, Option<serde_json::Value>, Output) {
    run_move(&mut move_command(env, url, dv, args, defaults))
}

/// Runs a move command; its exit code, its JSON report if it printed one, its output.
pub(crate) fn run_move(
    cmd: &mut std::process::Command,
) -> (i32, Option<serde_json::Value>, Output) {
    let o = run(cmd);
    let report = serde_json::from_slice(&o.stdout).ok();
    (o.status.code().unwrap_or(-1), report, o)
}

/// The command [`move_imap_with`] runs.
pub(crate) fn move_command(
    env: &Env,
    url: &str,
    dv: &Dovecot,
    args: &[&str],
    defaults: bool,
) -> std::process::Command {
    let mut cmd = mailferry();
    cmd.arg("move").args(["--source", url]);
    if defaults {
        cmd.arg("--source-ca")
            .arg(&dv.ca_pem)
            .arg("--password-file")
            .arg(&dv.password_file);
    }
    cmd.args(args)
        .args(["--mailbox", MAILBOX, "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--state")
        .arg(env.path("state"))
        .arg("--json")
        .env_remove(mailferry_agent::source::imap::PASSWORD_ENV);
    cmd
}

/// Per folder directory: sorted (sha256, flags, mtime) of every message.
pub(crate) type Index = BTreeMap<String, Vec<(String, String, i64)>>;

pub(crate) fn source_index(msgs: &[Msg]) -> Index {
    let mut idx = Index::new();
    for m in msgs {
        idx.entry(m.dir.clone()).or_default().push((
            mailferry_core::sha256_hex(&m.body),
            m.flags.clone(),
            m.mtime,
        ));
    }
    for v in idx.values_mut() {
        v.sort();
    }
    idx
}

pub(crate) fn export_index(env: &Env, out: &Path) -> Index {
    let o = export(env, MAILBOX, out);
    assert!(o.status.success(), "{}", describe(&o));
    let files = read_maildir(out);
    let mut idx = Index::new();
    for ((dir, unique), (flags, bytes)) in files {
        let path = ["cur", "new"]
            .iter()
            .flat_map(|s| {
                [format!("{unique}:2,{flags}"), unique.clone()]
                    .map(|n| out.join(&dir).join(s).join(n))
            })
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("exported file {dir}/{unique} not found"));
        let mtime = std::fs::metadata(&path)
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        idx.entry(dir)
            .or_default()
            .push((mailferry_core::sha256_hex(&bytes), flags, mtime));
    }
    for v in idx.values_mut() {
        v.sort();
    }
    idx
}

pub(crate) fn assert_same(expected: &Index, got: &Index) {
    let count = |i: &Index| i.values().map(Vec::len).sum::<usize>();
    assert!(count(expected) > 0, "the corpus is empty");
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "folders differ"
    );
    for (dir, want) in expected {
        assert_eq!(
            want, &got[dir],
            "folder {dir:?}: messages, flags or dates differ"
        );
    }
}

/// `\Seen` count at the source, through Dovecot itself.
pub(crate) fn seen_at_source(dv: &Dovecot) -> usize {
    let o = dv.doveadm(&["fetch", "-u", dovecot::USER, "flags", "mailbox", "*", "all"]);
    String::from_utf8_lossy(&o.stdout).matches("\\Seen").count()
}

pub(crate) fn skip() -> bool {
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
fn imaps_move_equals_the_source_and_leaves_seen_untouched() {
    if skip() {
        return;
    }
    let dv = Dovecot::start();
    // One message of 3.3 MiB: more than three 1 MiB fetch pieces.
    let msgs = corpus(40, 11, 3_300_000 + 17);
    populate(&dv, &msgs);
    let seen_before = seen_at_source(&dv);
    assert_eq!(
        seen_before,
        msgs.iter().filter(|m| m.flags.contains('S')).count()
    );

    let env = Env::new();
    init_volume(&env);
    let (code, report, o) = move_imap(&env, &dv, true, &[]);
    assert_eq!(code, 0, "{}\n{}", describe(&o), dv.log());
    let report = report.unwrap();
    assert_eq!(report["items_moved"], msgs.len() as u64, "{report}");
    assert!(report["source"]
        .as_str()
        .unwrap()
        .starts_with("imaps://alice@127.0.0.1:"));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !stderr.contains(dovecot::PASSWORD),
        "the password leaked: {stderr}"
    );

    assert_same(
        &source_index(&msgs),
        &export_index(&env, &env.path("export")),
    );
    assert_eq!(
        seen_at_source(&dv),
        seen_before,
        "the move changed \\Seen at the source"
    );

    // Run again: nothing is sent twice.
    let (code, report, o) = move_imap(&env, &dv, true, &[]);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(report.unwrap()["items_moved"], 0);
}

#[test]
fn starttls_move_with_the_password_from_the_environment() {
    if skip() {
        return;
    }
    let dv = Dovecot::start();
    let msgs = corpus(12, 5, 0);
    populate(&dv, &msgs);
    let env = Env::new();
    init_volume(&env);
    let o = run(mailferry()
        .arg("move")
        .args(["--source", &dv.url(false)])
        .arg("--source-ca")
        .arg(&dv.ca_pem)
        .args(["--mailbox", MAILBOX, "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--state")
        .arg(env.path("state"))
        .env(
            mailferry_agent::source::imap::PASSWORD_ENV,
            dovecot::PASSWORD,
        ));
    assert!(o.status.success(), "{}\n{}", describe(&o), dv.log());
    assert_same(
        &source_index(&msgs),
        &export_index(&env, &env.path("export")),
    );
    assert_eq!(
        seen_at_source(&dv),
        msgs.iter().filter(|m| m.flags.contains('S')).count()
    );
}

#[test]
fn wrong_password_and_missing_password_fail_clearly() {
    if skip() {
        return;
    }
    let dv = Dovecot::start();
    populate(&dv, &corpus(3, 1, 0));
    let env = Env::new();
    init_volume(&env);
    let wrong = env.path("wrong-password");
    std::fs::write(&wrong, "not the password\n").unwrap();
    let (code, _, o) = move_imap_with(
        &env,
        &dv.url(true),
        &dv,
        &[
            "--source-ca",
            dv.ca_pem.to_str().unwrap(),
            "--password-file",
            wrong.to_str().unwrap(),
        ],
        false,
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(code, 1, "{}", describe(&o));
    assert!(stderr.contains("refused the login"), "{stderr}");
    assert!(
        !stderr.contains("not the password"),
        "the password leaked: {stderr}"
    );

    let (code, _, o) = move_imap_with(
        &env,
        &dv.url(true),
        &dv,
        &["--source-ca", dv.ca_pem.to_str().unwrap()],
        false,
    );
    assert_eq!(code, 2, "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--password-file"),
        "{}",
        describe(&o)
    );

    // A password in the URL is refused, and not echoed.
    let url = dv.url(true).replace("alice@", "alice:s3cret@");
    let (code, _, o) = move_imap_with(&env, &url, &dv, &[], true);
    assert_eq!(code, 2, "{}", describe(&o));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("s3cret"),
        "{}",
        describe(&o)
    );
}

#[test]
fn untrusted_certificates_are_refused_without_fallback() {
    if skip() {
        return;
    }
    let dv = Dovecot::start();
    populate(&dv, &corpus(3, 2, 0));
    let env = Env::new();
    init_volume(&env);
    let other = mailferry_core::tls::LocalCa::generate("some other CA").unwrap();
    let other_pem = env.path("other-ca.pem");
    std::fs::write(&other_pem, other.cert_pem()).unwrap();
    let pw = dv.password_file.to_str().unwrap().to_string();
    for (implicit_tls, ca) in [
        (true, None),
        (true, Some(&other_pem)),
        (false, Some(&other_pem)),
    ] {
        let mut args = vec!["--password-file", pw.as_str()];
        if let Some(ca) = ca {
            args.extend(["--source-ca", ca.to_str().unwrap()]);
        }
        let (code, _, o) = move_imap_with(&env, &dv.url(implicit_tls), &dv, &args, false);
        assert_eq!(code, 1, "{}", describe(&o));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(stderr.contains("not trusted"), "{stderr}");
    }
    assert!(
        !dv.log().contains("Login: user=<alice>"),
        "a login happened over an untrusted connection:\n{}",
        dv.log()
    );
}

#[test]
fn hostile_folder_names_are_named_bad_items_and_the_rest_moves() {
    if skip() {
        return;
    }
    let dv = Dovecot::start();
    let good = corpus(6, 3, 0);
    populate(&dv, &good);
    // Names that decode to something that is not a safe folder: a '/' inside a
    // component, a control character, broken modified UTF-7, an empty component. (A
    // 300-byte name cannot be a Maildir directory; the unit tests cover long names.)
    let hostile = [".a&AC8-b", ".ctl&AAE-", ".bad&Jjo", ".a..b"];
    for (i, dir) in hostile.iter().enumerate() {
        dv.put(
            dir,
            &format!("1700000001.M{i}P1.hostile"),
            "S",
            b"Subject: hostile\r\n\r\nx\r\n",
            1_650_000_000,
        );
    }
    let env = Env::new();
    init_volume(&env);
    let (code, report, o) = move_imap(&env, &dv, true, &[]);
    assert_eq!(
        code,
        3,
        "bad items over the bad-item limit (0) exit 3: {}",
        describe(&o)
    );
    let report = report.expect("a report");
    let bad = report["bad_items"].as_array().unwrap();
    let listed = dv.doveadm(&["mailbox", "list", "-u", dovecot::USER]);
    eprintln!(
        "dovecot lists:\n{}",
        String::from_utf8_lossy(&listed.stdout)
    );
    eprintln!("bad items: {bad:?}");
    assert!(!bad.is_empty());
    // Each hostile folder is named once: refused by name, or (where Dovecot lists a name
    // it then cannot open) reported as not listed, so nothing of it is deleted later.
    assert_eq!(bad.len(), hostile.len(), "{bad:?}");
    for b in bad {
        let item = b["item"].as_str().unwrap();
        assert!(hostile.iter().any(|h| h[1..] == *item), "{b}");
        assert!(
            b["reason"].as_str().unwrap().starts_with("folder not "),
            "{b}"
        );
    }
    assert_eq!(report["items_moved"], good.len() as u64, "{report}");
    assert_same(
        &source_index(&good),
        &export_index(&env, &env.path("export")),
    );
}

// === fault injection ===

/// A TCP relay in front of Dovecot that cuts connection number i after `cuts[i]` bytes
/// from the server (connections past the list are left alone). Returns its port and a
/// count of connections made.
fn relay(upstream: u16, cuts: Vec<usize>) -> (u16, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let conns = Arc::new(AtomicUsize::new(0));
    let count = conns.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            // Bounded: the relay serves at most 500 connections, then stops.
            for _ in 0..500 {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let i = count.fetch_add(1, Ordering::SeqCst);
                let cut = cuts.get(i).copied();
                tokio::spawn(pipe(client, upstream, cut));
            }
        });
    });
    (port, conns)
}

async fn pipe(client: tokio::net::TcpStream, upstream: u16, cut: Option<usize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async move {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
    };
    let down = async move {
        let mut left = cut.unwrap_or(usize::MAX);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let n = n.min(left);
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
            left -= n;
            if left == 0 {
                return; // cut: both halves are dropped, both sockets close
            }
        }
    };
    tokio::select! {
        _ = up => {},
        _ = down => {},
    }
}

#[test]
fn connection_cuts_mid_fetch_are_survived_and_the_move_is_exact() {
    if skip() {
        return;
    }
    let dv = Dovecot::start();
    let msgs = corpus(30, 21, 2_500_000);
    populate(&dv, &msgs);
    // Cut during login, during the listing, then every reading connection after 200 kB
    // (with pipelined requests in flight) and its successors after 0.7 and 1.5 MB: the
    // big message's connection is cut at least twice.
    let (port, conns) = relay(
        dv.imaps_port,
        vec![
            3_000, 40_000, 200_000, 200_000, 200_000, 200_000, 700_000, 700_000, 1_500_000,
            1_500_000,
        ],
    );
    let env = Env::new();
    init_volume(&env);
    let url = format!("imaps://{}@127.0.0.1:{port}", dovecot::USER);
    let (code, report, o) = move_imap_with(&env, &url, &dv, &[], true);
    assert_eq!(code, 0, "{}\n{}", describe(&o), dv.log());
    let stderr = String::from_utf8_lossy(&o.stderr);
    let retries = stderr.matches("retrying in").count();
    assert!(
        conns.load(Ordering::SeqCst) >= 6 && retries >= 3,
        "{} connection(s), {retries} retries:\n{stderr}",
        conns.load(Ordering::SeqCst)
    );
    assert_eq!(report.unwrap()["items_moved"], msgs.len() as u64);
    assert_same(
        &source_index(&msgs),
        &export_index(&env, &env.path("export")),
    );
}

/// Starts a move and SIGKILLs it once the agent's audit log records `acked`
/// acknowledged messages (or when it ends by itself). Returns the acknowledged count at
/// the kill if the kill landed in a running move, `None` if the move had ended first.
pub(crate) fn move_and_kill(
    env: &Env,
    dv: &Dovecot,
    url: &str,
    acked: usize,
    profile: &Path,
) -> Option<usize> {
    let log = env.path("state").join("audit.jsonl");
    let count = || {
        std::fs::read_to_string(&log)
            .map(|t| t.matches("\"event\":\"message.").count())
            .unwrap_or(0)
    };
    let mut child = mailferry()
        .arg("move")
        .args(["--source", url])
        .arg("--source-ca")
        .arg(&dv.ca_pem)
        .arg("--password-file")
        .arg(&dv.password_file)
        .arg("--profile")
        .arg(profile)
        .args(["--mailbox", MAILBOX, "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--state")
        .arg(env.path("state"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mailferry starts");
    // Each kill lands after at least one more acknowledged batch than the last.
    let acked = acked.max(count() + 1);
    for _ in 0..20_000 {
        if count() >= acked || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let running = child.try_wait().unwrap().is_none();
    let at_kill = count();
    let _ = child.kill();
    let _ = child.wait();
    running.then_some(at_kill)
}

#[test]
fn kill_9_at_random_points_then_rerun_moves_each_message_once() {
    if skip() {
        return;
    }
    let dv = Dovecot::start();
    let msgs = corpus(90, 33, 1_500_000);
    populate(&dv, &msgs);
    let seen = seen_at_source(&dv);
    let mut landed_mid_move = 0;
    for seed in [7u64, 1234] {
        let env = Env::new();
        init_volume(&env);
        let mut rng = Lcg(seed);
        let mut points: Vec<usize> = (0..3)
            .map(|_| 1 + rng.below(msgs.len() as u64 - 2) as usize)
            .collect();
        points.sort();
        // Small commit batches, so that kills fall between acknowledgements.
        let profile = env.path("profile.toml");
        std::fs::write(&profile, "[commit]\nmax_messages = 4\n").unwrap();
        for p in points {
            let at = move_and_kill(&env, &dv, &dv.url(true), p, &profile);
            landed_mid_move += usize::from(at.is_some_and(|n| n < msgs.len()));
        }
        let (code, _, o) = move_imap(&env, &dv, true, &["--profile", profile.to_str().unwrap()]);
        assert_eq!(code, 0, "seed {seed}: {}", describe(&o));
        let got = export_index(&env, &env.path("export"));
        assert_same(&source_index(&msgs), &got);
    }
    assert_eq!(seen_at_source(&dv), seen);
    // A kill that lands after the last acknowledgement still tests the resume, but at
    // least one must have cut a move short (on a loaded machine the last pass may then
    // find nothing left, which is why this is not counted from its items moved).
    assert!(
        landed_mid_move > 0,
        "no kill landed before a move had finished"
    );
}

/// Dovecot gives a folder a new UIDVALIDITY when its dovecot-uidlist is lost: every
/// message gets a new source id. A rerun must not store anything twice.
#[test]
fn a_uidvalidity_change_does_not_duplicate_messages() {
    if skip() {
        return;
    }
    let mut dv = Dovecot::start();
    let mut msgs = corpus(20, 44, 0);
    populate(&dv, &msgs);
    let env = Env::new();
    init_volume(&env);
    let (code, _, o) = move_imap(&env, &dv, true, &[]);
    assert_eq!(code, 0, "{}", describe(&o));

    let uidvalidity = |dv: &Dovecot| {
        String::from_utf8(
            dv.doveadm(&[
                "mailbox",
                "status",
                "-u",
                dovecot::USER,
                "uidvalidity",
                "INBOX",
            ])
            .stdout,
        )
        .unwrap()
    };
    let before = uidvalidity(&dv);
    dv.stop();
    for dir in FOLDERS {
        let d = dv.maildir().join(dir);
        for f in [
            "dovecot-uidlist",
            "dovecot.index",
            "dovecot.index.log",
            "dovecot.index.cache",
        ] {
            let _ = std::fs::remove_file(d.join(f));
        }
    }
    // Dovecot keeps the next UIDVALIDITY in this file; without it the new one is the
    // current time, which may equal the old one within the same second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let extra = corpus(2, 45, 0);
    for (i, m) in extra.iter().enumerate() {
        dv.put(
            &m.dir,
            &format!("1700000002.M{i}P1.extra"),
            &m.flags,
            &m.body,
            m.mtime,
        );
    }
    msgs.extend(extra);
    dv.restart();
    assert_ne!(
        uidvalidity(&dv),
        before,
        "the test did not change UIDVALIDITY"
    );

    let (code, report, o) = move_imap(&env, &dv, true, &[]);
    assert_eq!(code, 0, "{}", describe(&o));
    let r = report.unwrap();
    // Every earlier message is recognised by identity, only the 2 new ones are sent,
    // and nothing is deleted at the destination.
    assert_eq!(r["items_moved"], 2, "{r}");
    assert_eq!(r["items_deleted"], 0, "{r}");
    assert_eq!(
        r["items_skipped_duplicate"].as_u64().unwrap() + 2,
        r["items_total"].as_u64().unwrap(),
        "{r}"
    );
    assert_same(
        &source_index(&msgs),
        &export_index(&env, &env.path("export")),
    );
}

/// Headers and bodies fetched by all IMAP sessions that ended so far, summed from
/// Dovecot's `Disconnected` lines (a pass reads with several connections), once every
/// session that logged in has ended.
fn fetched_so_far(dv: &Dovecot) -> (u64, u64) {
    for _ in 0..200 {
        let log = dv.log();
        let logins = log
            .lines()
            .filter(|l| l.contains("imap-login:") && l.contains("Login: user="))
            .count();
        let ended: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" imap(") && l.contains("Disconnected"))
            .collect();
        if ended.len() >= logins {
            let field = |line: &str, name: &str| -> u64 {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .and_then(|v| v.trim_end_matches(',').parse().ok())
                    .unwrap_or_else(|| panic!("no {name} in {line}"))
            };
            return ended.iter().fold((0, 0), |(h, b), l| {
                (h + field(l, "hdr_count="), b + field(l, "body_count="))
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("Dovecot's sessions did not all end:\n{}", dv.log());
}

/// What the source holds now, read from Dovecot's Maildir (flags from the file names,
/// internal dates from the mtimes), in the same form as [`source_index`].
fn maildir_index(root: &Path) -> Index {
    let mut idx = Index::new();
    for dir in FOLDERS {
        for sub in ["cur", "new"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(sub)) else {
                continue;
            };
            for e in entries {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                let flags: String = name
                    .split_once(":2,")
                    .map(|(_, f)| f.chars().filter(|c| c.is_ascii_uppercase()).collect())
                    .unwrap_or_default();
                let mtime = e
                    .metadata()
                    .unwrap()
                    .modified()
                    .unwrap()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
                // Dovecot stores what it saves itself with bare LF and serves CRLF.
                let bytes = std::fs::read(e.path()).unwrap();
                let mut crlf = Vec::with_capacity(bytes.len());
                for (i, &b) in bytes.iter().enumerate() {
                    if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
                        crlf.push(b'\r');
                    }
                    crlf.push(b);
                }
                let sha = mailferry_core::sha256_hex(&crlf);
                idx.entry(dir.to_string())
                    .or_default()
                    .push((sha, flags, mtime));
            }
        }
    }
    for v in idx.values_mut() {
        v.sort();
    }
    idx
}

/// A pass over an unchanged mailbox fetches no message data at all (CONDSTORE cursor);
/// after a flag change, a new message and an expunge, it fetches the header and body of
/// the new message only, and the destination mirrors the source again.
#[test]
fn delta_passes_fetch_only_what_changed() {
    if skip() {
        return;
    }
    let dv = Dovecot::start();
    let msgs = corpus(30, 55, 0);
    populate(&dv, &msgs);
    let env = Env::new();
    init_volume(&env);
    let (code, _, o) = move_imap(&env, &dv, true, &[]);
    assert_eq!(code, 0, "{}", describe(&o));
    let (hdr, body) = fetched_so_far(&dv);
    assert_eq!((hdr, body), (msgs.len() as u64, msgs.len() as u64));

    let (code, report, o) = move_imap(&env, &dv, true, &[]);
    assert_eq!(code, 0, "{}", describe(&o));
    assert_eq!(report.unwrap()["items_moved"], 0);
    assert_eq!(
        fetched_so_far(&dv),
        (hdr, body),
        "an unchanged pass fetched messages"
    );

    let u = dovecot::USER;
    dv.doveadm(&[
        "flags",
        "add",
        "-u",
        u,
        "\\Flagged \\Answered",
        "mailbox",
        "INBOX",
        "uid",
        "1",
    ]);
    dv.doveadm(&["expunge", "-u", u, "mailbox", "INBOX", "uid", "2"]);
    let new = corpus(1, 56, 0).remove(0).body;
    let file = env.path("new.eml");
    std::fs::write(&file, &new).unwrap();
    let o = std::process::Command::new("doveadm")
        .arg("-c")
        .arg(&dv.conf)
        .args(["save", "-u", u, "-m", "INBOX"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", describe(&o));

    // Dovecot has QRESYNC: the expunge is learnt from VANISHED, without UID SEARCH.
    let (code, report, o) = run_move(
        move_command(&env, &dv.url(true), &dv, &[], true)
            .env("RUST_LOG", "mailferry_agent::source::imap=debug"),
    );
    assert_eq!(code, 0, "{}", describe(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("INBOX: listed from QRESYNC's VANISHED"),
        "{stderr}"
    );
    let report = report.unwrap();
    eprintln!("delta pass: {report}");
    assert_eq!(report["items_moved"], 1, "{report}");
    assert_eq!(
        fetched_so_far(&dv),
        (hdr + 1, body + 1),
        "the delta pass fetched more than the new message"
    );
    assert_same(
        &maildir_index(&dv.maildir()),
        &export_index(&env, &env.path("export")),
    );
}
