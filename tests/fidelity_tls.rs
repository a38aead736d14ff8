//! Issue 17, certificate pinning: a real Dovecot serving a certificate made by plain
//! `openssl req -x509` (CA:TRUE, self-signed), trusted by its own PEM file
//! (`--source-ca`) or by its SHA-256 (`--source-cert-sha256`, endpoint `cert_sha256`);
//! any other certificate refused with a message saying how to pin; `endpoint test`
//! showing the presented certificate; later passes keeping the pin.

use crate::dovecot::{self, Dovecot, Options};
use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn skip() -> bool {
    let have_openssl = Command::new("openssl").arg("version").output().is_ok();
    if dovecot::available() && have_openssl {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "Dovecot (dovecot-imapd) or openssl is missing in CI"
    );
    eprintln!("skipped: dovecot-imapd or openssl is not installed");
    true
}

/// `openssl req -x509` with its defaults (which mark the certificate CA:TRUE): returns
/// (certificate, key).
fn openssl_self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let o = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", describe(&o));
    // The point of the test: this is a CA certificate used as a server's own.
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"),
        "openssl made no CA:TRUE certificate: {}",
        describe(&text)
    );
    (cert, key)
}

/// What openssl says the certificate's SHA-256 is: `AB:CD:...`.
fn openssl_fingerprint(cert: &Path) -> String {
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", describe(&o));
    let line = String::from_utf8(o.stdout).unwrap();
    let fp = line.trim().split_once('=').unwrap().1.to_string();
    assert_eq!(fp.len(), 95, "{line}");
    fp
}

/// `mailferry move` from the Dovecot into mailbox `name` (own state dir) with `trust`.
fn move_with(env: &Env, dv: &Dovecot, name: &str, trust: &[&str]) -> (i32, String, String) {
    let o = run(mailferry()
        .arg("move")
        .args(["--source", &dv.url(true), "--password-file"])
        .arg(&dv.password_file)
        .args(trust)
        .args(["--mailbox", &format!("{name}@example.com"), "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--state")
        .arg(env.path(&format!("state-{name}")))
        .arg("--json"));
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn issue17_self_signed_source_certificate_is_pinned_by_its_file_or_its_fingerprint() {
    if skip() {
        return;
    }
    let env = Env::new();
    let (cert, key) = openssl_self_signed(env.dir.path(), "server");
    let (other, _) = openssl_self_signed(env.dir.path(), "other");
    let fp = openssl_fingerprint(&cert);
    let other_fp = openssl_fingerprint(&other);
    assert_ne!(fp, other_fp);
    let dv = Dovecot::start_configured(&Options {
        tls: Some((cert.clone(), key)),
        ..Default::default()
    });
    for i in 0..3 {
        dv.put(
            "",
            &format!("1700000000.M{i}P1.tls"),
            "S",
            format!("From: s{i}@example.org\r\nSubject: m{i}\r\n\r\nbody {i}\r\n").as_bytes(),
            1_700_000_000,
        );
    }
    init_volume(&env);
    let cert_arg = cert.display().to_string();
    let other_arg = other.display().to_string();

    // The server's own certificate as --source-ca: a pin (CA:TRUE and the name
    // 127.0.0.1 that it does not bear notwithstanding).
    let (code, out, err) = move_with(&env, &dv, "byfile", &["--source-ca", &cert_arg]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["items_moved"], 3, "{r}");

    // Another self-signed certificate: refused, saying what was presented and how to pin.
    let (code, out, err) = move_with(&env, &dv, "wrongfile", &["--source-ca", &other_arg]);
    assert_eq!(code, 1, "{out}\n{err}");
    for needle in [
        "is not trusted",
        "CN=localhost",
        fp.as_str(),
        &format!("--source-cert-sha256 {fp}"),
        "--source-ca",
        "cert_sha256",
        "ca_file",
    ] {
        assert!(err.contains(needle), "{needle:?} missing: {err}");
    }

    // By fingerprint, as openssl prints it, and in lower case without colons.
    let (code, out, err) = move_with(&env, &dv, "byfp", &["--source-cert-sha256", &fp]);
    assert_eq!(code, 0, "{out}\n{err}");
    let plain = fp.replace(':', "").to_lowercase();
    let (code, out, err) = move_with(&env, &dv, "byfp2", &["--source-cert-sha256", &plain]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["items_moved"], 3, "{r}");

    // A wrong fingerprint: refused, even with the right file beside it.
    for trust in [
        vec!["--source-cert-sha256", other_fp.as_str()],
        vec!["--source-cert-sha256", &other_fp, "--source-ca", &cert_arg],
    ] {
        let (code, out, err) = move_with(&env, &dv, "wrongfp", &trust);
        assert_eq!(code, 1, "{trust:?}\n{out}\n{err}");
        assert!(err.contains("pinned fingerprint"), "{err}");
        assert!(err.contains(&fp), "{err}");
    }
    // A malformed fingerprint is a usage error naming the flag.
    let (code, _, err) = move_with(&env, &dv, "badfp", &["--source-cert-sha256", "12:34"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--source-cert-sha256"), "{err}");

    // `move complete` runs from the record: the pin must have been kept with it.
    dv.put(
        "",
        "1700000100.M9P1.tls",
        "",
        b"From: late@example.org\r\nSubject: late\r\n\r\nlate\r\n",
        1_700_000_100,
    );
    let o = run(mailferry()
        .args(["move", "complete", "--state"])
        .arg(env.path("state-byfp"))
        .arg("--json"));
    assert!(o.status.success(), "{}", describe(&o));
    let status = run(mailferry()
        .args(["move", "status", "--state"])
        .arg(env.path("state-byfp"))
        .arg("--json"));
    assert!(status.status.success(), "{}", describe(&status));
    let s = String::from_utf8_lossy(&status.stdout);
    assert!(s.contains("completed"), "{s}");

    // `endpoint test` shows the presented certificate, refused or trusted.
    let ep = env.path("imap.toml");
    let write_ep = |trust: &str| {
        std::fs::write(
            &ep,
            format!(
                "kind = \"imap\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"imaps\"\n{trust}\n",
                dv.imaps_port
            ),
        )
        .unwrap()
    };
    write_ep(&format!("ca_file = \"{other_arg}\""));
    let o = run(mailferry().args(["endpoint", "test"]).arg(&ep));
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "FAIL certificate",
        "subject     CN=localhost",
        "issuer      CN=localhost",
        "not before",
        "not after",
        &format!("SHA-256     {fp}"),
    ] {
        assert!(out.contains(needle), "{needle:?} missing: {}", describe(&o));
    }
    write_ep(&format!("cert_sha256 = \"{fp}\""));
    let o = run(mailferry()
        .args(["endpoint", "test", "--json"])
        .arg(&ep)
        .args(["--user", dovecot::USER, "--password-file"])
        .arg(&dv.password_file));
    assert!(o.status.success(), "{}", describe(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["certificate"]["sha256"], fp.as_str(), "{r}");
    assert_eq!(r["certificate"]["subject"], "CN=localhost", "{r}");
    assert!(
        r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["check"] == "TLS, login and LIST" && c["ok"] == true),
        "{r}"
    );
    write_ep(&format!("cert_sha256 = \"{other_fp}\""));
    let o = run(mailferry().args(["endpoint", "test"]).arg(&ep));
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    write_ep("cert_sha256 = \"xyz\"");
    let o = run(mailferry().args(["endpoint", "test"]).arg(&ep));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cert_sha256"),
        "{}",
        describe(&o)
    );
}

/// Runs `mailferry ARGS` under umask 022, as a login shell would.
fn under_umask_022(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let o = run(Command::new("sh")
        .args(["-c", "umask 022; exec \"$@\"", "sh"])
        .arg(env!("CARGO_BIN_EXE_mailferry"))
        .args(args)
        .env("RUST_LOG", "warn"));
    o
}

/// Every directory under `root` (itself included) that is not 0700 and every file that
/// is not 0600, with its mode; and how many entries were looked at.
fn not_private(root: &Path) -> (Vec<String>, usize) {
    use std::os::unix::fs::PermissionsExt;
    let mut bad = Vec::new();
    let mut seen = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let mode = m.permissions().mode() & 0o777;
        seen += 1;
        let want = if m.is_dir() { 0o700 } else { 0o600 };
        if mode != want {
            bad.push(format!("{} {mode:04o}", p.display()));
        }
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    (bad, seen)
}

#[test]
fn issue17_volume_state_and_export_are_owner_only_whatever_the_umask() {
    use std::ffi::OsStr;
    let env = Env::new();
    let src = env.path("Maildir");
    for d in ["cur", "new", "tmp", ".Work/cur", ".Work/new", ".Work/tmp"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    for (i, dir) in ["cur", ".Work/cur", "new"].iter().enumerate() {
        std::fs::write(
            src.join(dir).join(format!("1700000000.M{i}P1.host:2,S")),
            format!("From: a{i}@example.org\r\nSubject: s{i}\r\n\r\nbody {i}\r\n"),
        )
        .unwrap();
    }
    let (vol, key, state, out) = (
        env.volume(),
        env.key(),
        env.path("state"),
        env.path("export"),
    );
    let o = under_umask_022(&[
        OsStr::new("volume"),
        OsStr::new("init"),
        OsStr::new("--volume"),
        vol.as_os_str(),
        OsStr::new("--key-file"),
        key.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", describe(&o));
    let source = format!("maildir:{}", src.display());
    let moving = [
        OsStr::new("move"),
        OsStr::new("--source"),
        OsStr::new(&source),
        OsStr::new("--mailbox"),
        OsStr::new("p@example.com"),
        OsStr::new("--volume"),
        vol.as_os_str(),
        OsStr::new("--key-file"),
        key.as_os_str(),
        OsStr::new("--state"),
        state.as_os_str(),
    ];
    let o = under_umask_022(&moving);
    assert!(o.status.success(), "{}", describe(&o));
    // A second pass opens everything again (and must not warn: all is private).
    let o = under_umask_022(&moving);
    assert!(o.status.success(), "{}", describe(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("other users"), "{stderr}");
    let o = under_umask_022(&[
        OsStr::new("export"),
        OsStr::new("--volume"),
        vol.as_os_str(),
        OsStr::new("--key-file"),
        key.as_os_str(),
        OsStr::new("--mailbox"),
        OsStr::new("p@example.com"),
        OsStr::new("--out"),
        out.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", describe(&o));
    for (root, at_least) in [(&vol, 5), (&state, 3), (&out, 7)] {
        let (bad, seen) = not_private(root);
        assert!(seen >= at_least, "{}: only {seen} entries", root.display());
        assert!(bad.is_empty(), "not owner-only:\n{}", bad.join("\n"));
    }

    // A volume and a state directory opened up by hand: warned about, named, not refused.
    use std::os::unix::fs::PermissionsExt;
    for d in [&vol, &state] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let o = under_umask_022(&moving);
    assert!(o.status.success(), "{}", describe(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    for needle in [
        format!(
            "volume {} can be read or written by other users",
            vol.display()
        ),
        format!("state directory {} can be read", state.display()),
        format!("chmod -R go-rwx {}", vol.display()),
    ] {
        assert!(stderr.contains(&needle), "{needle:?} missing: {stderr}");
    }
}
