//! Issue 6: `mailferry serve` as a network service in its own process. An agent in
//! another process moves a mailbox through it; tokens are bound to tenants; health,
//! readiness and metrics answer over TLS; hostile clients are refused and the service
//! keeps serving. Loopback only; every wait is bounded.

use crate::util::*;
use mailferry_bench::sample::{write_maildir, SampleSpec, SizeModel};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

/// A running `mailferry serve` on the test's volume.
type Serve = Daemon;

pub(crate) fn start_serve(env: &Env, extra: &[&str]) -> Serve {
    let mut c = mailferry();
    c.arg("serve")
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .args(["--listen", "127.0.0.1:0"])
        .args(extra);
    // Short enough that a test sees a stalled client cut off, long enough for a TLS
    // handshake on a loaded machine; a test that needs its own passes it in `extra`.
    if !extra.contains(&"--header-timeout") {
        c.args(["--header-timeout", "10"]);
    }
    Daemon::start(c, "serve")
}

pub(crate) fn issue_token(env: &Env, tenant: &str, out: &Path) {
    issue_token_at(&env.volume(), &env.key(), tenant, out)
}

/// `token issue` on the volume directory `volume`.
pub(crate) fn issue_token_at(volume: &Path, key: &Path, tenant: &str, out: &Path) {
    let o = run(mailferry()
        .args(["token", "issue", "--volume"])
        .arg(volume)
        .arg("--key-file")
        .arg(key)
        .args(["--tenant", tenant, "--out"])
        .arg(out));
    assert!(o.status.success(), "{}", describe(&o));
    let token = std::fs::read_to_string(out).unwrap();
    assert!(!String::from_utf8_lossy(&o.stderr).contains(token.trim()));
    assert!(!String::from_utf8_lossy(&o.stdout).contains(token.trim()));
}

fn tls_config(ca: &Path, tls12_only: bool) -> Arc<rustls::ClientConfig> {
    let roots = mailferry_core::tls::certs_from_pem(&std::fs::read(ca).unwrap()).unwrap();
    if !tls12_only {
        return mailferry_core::tls::client_config(&roots).unwrap();
    }
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    Arc::new(cfg)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(s: &Serve, tls12_only: bool) -> Tls {
    let tcp = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let conn = rustls::ClientConnection::new(
        tls_config(&s.ca, tls12_only),
        "127.0.0.1".try_into().unwrap(),
    )
    .unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// One request over a new TLS connection; returns the status and the body (or what
/// arrived before the connection closed).
fn request(s: &Serve, tls12_only: bool, head: &str) -> (u16, String) {
    let mut t = connect(s, tls12_only);
    t.write_all(head.as_bytes()).unwrap();
    t.flush().unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Bounded: until close, or a complete 101 head (the upgraded stream stays open).
    for _ in 0..1000 {
        match t.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
        if buf.starts_with(b"HTTP/1.1 101") && contains(&buf, b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

fn get(s: &Serve, path: &str) -> (u16, String) {
    request(
        s,
        false,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
    )
}

fn open_stream(s: &Serve, mailbox: &str, token: &str) -> (u16, String) {
    request(
        s,
        false,
        &format!(
            "POST /v1/mailboxes/{}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: upgrade\r\nUpgrade: mailferry-frames/1\r\nContent-Length: 0\r\n\r\n",
            mailbox.replace('@', "%40")
        ),
    )
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[test]
fn issue6_agent_moves_through_serve_in_another_process_and_exports_identical() {
    let env = Env::new();
    let src = env.path("src");
    let n = write_maildir(
        &src,
        &SampleSpec {
            seed: 6,
            messages: 120,
            folders: 3,
            size: SizeModel::Small,
            markers: None,
        },
    )
    .unwrap()
    .messages;
    init_volume(&env);
    let token = env.path("example.com.token");
    issue_token(&env, "example.com", &token);
    let meta = std::fs::metadata(&token).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let serve = start_serve(&env, &[]);
    let key = serve.ca.parent().unwrap().join("server.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(get(&serve, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(&serve, "/readyz").0, 200);

    let o = run(mailferry()
        .arg("move")
        .arg("--source")
        .arg(format!("maildir:{}", src.display()))
        .args([
            "--mailbox",
            "alice@example.com",
            "--proxy",
            &serve.url(),
            "--ca",
        ])
        .arg(&serve.ca)
        .arg("--token-file")
        .arg(&token)
        .arg("--state")
        .arg(env.path("state"))
        .arg("--json"));
    assert!(o.status.success(), "{}", describe(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["items_moved"], n as u64);
    assert_eq!(r["receipt"]["matches"], false);
    assert_eq!(r["receipt"]["destination_root"], "");
    assert!(String::from_utf8_lossy(&o.stderr).contains("receipt verify"));

    let (status, m) = get(&serve, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(metric(&m, "mailferry_messages_stored_total"), n as u64);
    let total: u64 = read_maildir(&src)
        .values()
        .map(|(_, b)| b.len() as u64)
        .sum();
    assert_eq!(metric(&m, "mailferry_bytes_stored_total"), total);
    assert_eq!(metric(&m, "mailferry_streams_in_flight"), 0);
    assert!(metric(&m, "mailferry_commit_seconds_count") >= 1);
    assert!(
        m.contains("mailferry_commit_seconds_bucket{le=\"+Inf\"}"),
        "{m}"
    );
    assert!(!m.contains("alice"), "per-mailbox data in metrics");

    assert_eq!(serve.stop(), Some(0), "serve exits 0 on SIGTERM");

    let out = env.path("export");
    let o = export(&env, "alice@example.com", &out);
    assert!(o.status.success(), "{}", describe(&o));
    let (source, exported) = (read_maildir(&src), read_maildir(&out));
    assert_eq!(source.len(), n);
    assert_eq!(exported, source, "export differs from the source");
    // The volume's receipt equals the agent's (checked on the store side).
    let o = run(mailferry()
        .args(["receipt", "verify", "--state"])
        .arg(env.path("state"))
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key()));
    assert!(o.status.success(), "receipt verify: {}", describe(&o));
}

#[test]
fn issue6_refusals_leave_serve_healthy() {
    let env = Env::new();
    init_volume(&env);
    let com = env.path("com.token");
    issue_token(&env, "example.com", &com);
    // The slow loris below sends for 8 s; the server gives a request head 3 s.
    let serve = start_serve(&env, &["--header-timeout", "3"]);
    let com_token = std::fs::read_to_string(&com).unwrap().trim().to_string();

    // Wrong token: 401.
    let (status, body) = open_stream(&serve, "a@example.com", &"0".repeat(64));
    assert_eq!(status, 401, "{body}");
    // The right token for its tenant: 101 (upgrade), over TLS 1.2 as well as 1.3.
    assert_eq!(open_stream(&serve, "a@example.com", &com_token).0, 101);
    // Cross-tenant: 403, nothing stored (no one else ever opens x@example.org).
    let (status, body) = open_stream(&serve, "x@example.org", &com_token);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("another tenant"), "{body}");

    // A token issued while serve runs works at once; revoked, it gets 401 at once.
    let org = env.path("org.token");
    issue_token(&env, "example.org", &org);
    let org_token = std::fs::read_to_string(&org).unwrap().trim().to_string();
    assert_eq!(open_stream(&serve, "b@example.org", &org_token).0, 101);
    let o = run(mailferry()
        .args(["token", "list", "--json", "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key()));
    assert!(o.status.success(), "{}", describe(&o));
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(!String::from_utf8_lossy(&o.stdout).contains(&org_token));
    let org_id = list[1]["id"].as_u64().unwrap();
    let o = run(mailferry()
        .args(["token", "revoke", &org_id.to_string(), "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key()));
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(open_stream(&serve, "b@example.org", &org_token).0, 401);

    // An expiring token works until its time, then gets 401. Its expiry is in whole
    // seconds, so 8 s leaves at least 7 for the first stream on a slow machine.
    let short = env.path("short.token");
    let issued = std::time::Instant::now();
    let o = run(mailferry()
        .args([
            "token",
            "issue",
            "--tenant",
            "example.org",
            "--valid-for",
            "8",
            "--volume",
        ])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--out")
        .arg(&short));
    assert!(o.status.success(), "{}", describe(&o));
    let short_token = std::fs::read_to_string(&short).unwrap().trim().to_string();
    assert_eq!(open_stream(&serve, "c@example.org", &short_token).0, 101);
    std::thread::sleep(Duration::from_millis(9200).saturating_sub(issued.elapsed()));
    assert_eq!(open_stream(&serve, "c@example.org", &short_token).0, 401);

    // TLS 1.2 works.
    let (status, _) = request(
        &serve,
        true,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);

    // TLS 1.1 is refused (openssl, if installed).
    match std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", serve.port)])
        .args(["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(
                !o.status.success() || text.contains("Cipher is (NONE)"),
                "TLS 1.1 handshake succeeded:\n{text}"
            );
        }
        Err(e) => eprintln!("skipping the TLS 1.1 check: openssl not runnable ({e})"),
    }

    // Plain HTTP on the TLS port gets no HTTP answer; neither do random bytes.
    let mut noise = vec![0u8; 4096];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    for payload in [
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec(),
        noise,
    ] {
        let mut tcp = TcpStream::connect(("127.0.0.1", serve.port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = tcp.write_all(&payload);
        let mut got = Vec::new();
        let _ = tcp.read_to_end(&mut got);
        assert!(!got.starts_with(b"HTTP/"), "got an HTTP answer: {got:?}");
    }

    // Slow loris: header bytes every 200 ms, never a complete head; the server (header
    // timeout 3 s) cuts the connection off before the 40 bytes (8 s) are sent.
    let mut t = connect(&serve, false);
    let head = b"GET /healthz HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut = false;
    for b in head.iter().take(40) {
        if t.write_all(&[*b]).and_then(|_| t.flush()).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if !cut {
        // The socket has been closed by the peer: a read ends (EOF or error) instead of
        // waiting for the 20 s read timeout.
        let mut buf = [0u8; 1024];
        let r = t.read(&mut buf);
        cut = match &r {
            Ok(_) => true,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
    }
    assert!(cut, "slow-loris connection was not cut off");

    // Still healthy, and the refusals are counted by reason.
    assert_eq!(get(&serve, "/healthz"), (200, "ok\n".into()));
    let (_, m) = get(&serve, "/metrics");
    assert_eq!(
        metric(
            &m,
            "mailferry_requests_rejected_total{reason=\"unauthorized\"}"
        ),
        3, // wrong, revoked, expired
    );
    assert_eq!(
        metric(
            &m,
            "mailferry_requests_rejected_total{reason=\"forbidden\"}"
        ),
        1
    );
    assert_eq!(metric(&m, "mailferry_messages_stored_total"), 0);
    assert_eq!(serve.stop(), Some(0));

    // The refused cross-tenant stream created nothing: the volume has no such mailbox.
    let o = export(&env, "x@example.org", &env.path("export-x"));
    assert_ne!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("x@example.org"),
        "{}",
        describe(&o)
    );
    let log = std::fs::read_to_string(env.volume().join("audit.jsonl")).unwrap();
    assert_eq!(log.matches("\"token.issued\"").count(), 3, "{log}");
    assert_eq!(log.matches("\"token.revoked\"").count(), 1, "{log}");
    assert!(!log.contains("example.org") && !log.contains(&com_token));
}

/// A message over `serve --max-message-bytes` is refused from its header alone; the
/// agent lists it as a bad item (a large item) and every other message moves.
#[test]
fn issue6_large_item_over_the_proxy_limit_is_named_and_the_rest_moves() {
    let env = Env::new();
    let src = env.path("src");
    let n = write_maildir(
        &src,
        &SampleSpec {
            seed: 61,
            messages: 40,
            folders: 2,
            size: SizeModel::Small,
            markers: None,
        },
    )
    .unwrap()
    .messages;
    let mut big = b"Subject: large\r\n\r\n".to_vec();
    big.resize(300_000, b'x');
    std::fs::write(src.join("cur/1700000000.large.host:2,S"), &big).unwrap();
    init_volume(&env);
    let token = env.path("t");
    issue_token(&env, "example.com", &token);
    let serve = start_serve(&env, &["--max-message-bytes", "100000"]);
    let o = run(mailferry()
        .arg("move")
        .arg("--source")
        .arg(format!("maildir:{}", src.display()))
        .args([
            "--mailbox",
            "alice@example.com",
            "--proxy",
            &serve.url(),
            "--ca",
        ])
        .arg(&serve.ca)
        .arg("--token-file")
        .arg(&token)
        .arg("--state")
        .arg(env.path("state"))
        .arg("--json"));
    assert_eq!(
        o.status.code(),
        Some(3),
        "bad items over the limit: {}",
        describe(&o)
    );
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["items_moved"], n as u64, "{r}");
    let bad = r["bad_items"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{r}");
    assert_eq!(bad[0]["item"], "INBOX/1700000000.large.host");
    assert!(
        bad[0]["reason"]
            .as_str()
            .unwrap()
            .contains("limit of 100000 bytes"),
        "{r}"
    );
    assert_eq!(serve.stop(), Some(0));
}
