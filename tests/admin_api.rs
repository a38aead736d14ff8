//! The admin service's REST API (issue 10): the real binary (`admin serve`), accounts
//! made with `admin add`, TOTP codes computed here, HTTPS through rustls (ring) trusting
//! exactly the service's generated CA.

use crate::util::{
    describe, export, init_volume, mailferry, move_maildir, read_maildir, run, Daemon, Env,
};
use mailferry_bench::sample::{write_maildir, SampleSpec, SizeModel};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

// === A small HTTPS client ===

struct Client {
    port: u16,
    tls: Arc<rustls::ClientConfig>,
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
    text: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Client {
    fn new(d: &Daemon) -> Client {
        let pem = std::fs::read(&d.ca).unwrap();
        let roots = mailferry_core::tls::certs_from_pem(&pem).unwrap();
        Client {
            port: d.port,
            tls: mailferry_core::tls::client_config(&roots).unwrap(),
        }
    }

    fn req(
        &self,
        method: &str,
        path: &str,
        s: Option<&Session>,
        csrf: bool,
        body: Option<&str>,
    ) -> Resp {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(self.tls.clone(), name).unwrap();
        let tcp = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if let Some(s) = s {
            head.push_str(&format!("Cookie: {}\r\n", s.cookie));
            if csrf {
                head.push_str(&format!("x-csrf-token: {}\r\n", s.csrf));
            }
        }
        let body = body.unwrap_or("");
        if !body.is_empty() || method != "GET" {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        tls.write_all(head.as_bytes()).unwrap();
        tls.write_all(body.as_bytes()).unwrap();
        tls.flush().unwrap();
        let mut raw = Vec::new();
        match tls.read_to_end(&mut raw) {
            Ok(_) => {}
            // The server may close without close_notify after a complete response.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(e) => panic!("{method} {path}: {e}"),
        }
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("response head");
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let mut payload = raw[split + 4..].to_vec();
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        if headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
        {
            payload = dechunk(&payload);
        }
        let text = String::from_utf8_lossy(&payload).to_string();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            text,
        }
    }

    fn get(&self, path: &str, s: &Session) -> Resp {
        self.req("GET", path, Some(s), false, None)
    }

    fn post(&self, path: &str, s: &Session, body: Value) -> Resp {
        self.req("POST", path, Some(s), true, Some(&body.to_string()))
    }

    fn login(&self, name: &str, password: &str, code: &str) -> Resp {
        let b = json!({"name": name, "password": password, "totp": code}).to_string();
        self.req("POST", "/api/v1/session", None, false, Some(&b))
    }

    /// Logs `acc` in. The first login of an account made by `admin add` has its
    /// one-time password: the session can do nothing else until it is changed (issue
    /// 22), so this checks that and changes it, as an admin would at the first login.
    fn session(&self, acc: &Account) -> Session {
        let r = self.login(&acc.name, &acc.current.borrow(), &acc.next_code());
        assert_eq!(r.status, 200, "login {}: {}", acc.name, r.text);
        let cookie = r
            .header("set-cookie")
            .expect("a session cookie")
            .to_string();
        for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(cookie.contains(attr), "cookie lacks {attr}: {cookie}");
        }
        let s = Session {
            cookie: cookie.split(';').next().unwrap().to_string(),
            csrf: r.body["csrf"].as_str().unwrap().to_string(),
        };
        let first = *acc.current.borrow() == acc.password;
        assert_eq!(
            r.body["must_change_password"].as_bool(),
            Some(first),
            "must_change_password of {}: {}",
            acc.name,
            r.text
        );
        if first {
            let refused = self.get("/api/v1/batches", &s);
            assert_eq!(
                (refused.status, refused.code()),
                (403, "password_change_required"),
                "{}",
                refused.text
            );
            let new = format!("{}-chosen-by-{}", acc.password, acc.name);
            let r = self.post(
                "/api/v1/account/password",
                &s,
                json!({"current_password": acc.password, "new_password": new}),
            );
            assert_eq!(r.status, 204, "password change of {}: {}", acc.name, r.text);
            *acc.current.borrow_mut() = new;
        }
        s
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(i) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 2 + n + 2..];
    }
}

struct Session {
    cookie: String,
    csrf: String,
}

/// An account made with `admin add`, and the TOTP steps it has used: each login takes
/// the next unused step of the ±1 window, so a test rarely waits for the clock.
struct Account {
    name: String,
    /// The one-time password `admin add` printed.
    password: String,
    /// The password now: the one-time one until the first session changed it.
    current: std::cell::RefCell<String>,
    totp: totp_rs::Totp,
    /// The first TOTP step not used yet (the server takes each step once, in order).
    next_step: std::cell::Cell<u64>,
}

impl Account {
    fn code_at(&self, offset_steps: i64) -> String {
        let now = mailferry_core::unix_now() + offset_steps * 30;
        self.totp.generate(now as u64).to_string()
    }
    /// A code of a step not used yet that the server still takes when the request
    /// reaches it: the previous step only with 10 s of this one left (a slow request
    /// must not cross into the next step, where the previous one is two behind), else
    /// this step or the next; once those are used, it waits for the clock.
    fn next_code(&self) -> String {
        loop {
            let now = mailferry_core::unix_now() as u64;
            let (step, left) = (now / 30, 30 - now % 30);
            let earliest = if left >= 10 { step - 1 } else { step };
            let s = self.next_step.get().max(earliest);
            if s <= step + 1 {
                self.next_step.set(s + 1);
                return self.totp.generate(s * 30).to_string();
            }
            std::thread::sleep(Duration::from_secs(left + 1));
        }
    }
    /// The code of the last step a login used (the server refuses it from then on).
    fn used_code(&self) -> String {
        let last = self
            .next_step
            .get()
            .checked_sub(1)
            .expect("a code was used");
        self.totp.generate(last * 30).to_string()
    }
    fn wrong_code(&self) -> String {
        let good: Vec<String> = (-2..=2).map(|o| self.code_at(o)).collect();
        (0..1_000_000)
            .map(|n| format!("{n:06}"))
            .find(|c| !good.contains(c))
            .unwrap()
    }
}

fn add_account(state: &Path, name: &str, role: &str) -> Account {
    add_account_with(state, name, &["--role", role])
}

/// `admin add NAME ARGS...` (a role and, for an approver, its tenants).
fn add_account_with(state: &Path, name: &str, args: &[&str]) -> Account {
    let o = run(mailferry()
        .args(["admin", "add", name])
        .args(args)
        .arg("--state")
        .arg(state));
    assert!(o.status.success(), "{}", describe(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let password = out
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .expect("the password is printed")
        .to_string();
    let uri = out
        .lines()
        .find_map(|l| l.strip_prefix("totp: "))
        .expect("the otpauth URI is printed");
    assert!(uri.starts_with("otpauth://totp/mailferry:"), "{uri}");
    let secret = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let totp = totp_rs::Builder::new()
        .with_secret(
            totp_rs::Secret::try_from_base32(secret)
                .unwrap()
                .as_ref()
                .to_vec(),
        )
        .build()
        .unwrap();
    Account {
        name: name.into(),
        current: std::cell::RefCell::new(password.clone()),
        password,
        totp,
        next_step: std::cell::Cell::new(0),
    }
}

fn start(env: &Env, extra: &[&str]) -> (Daemon, PathBuf) {
    init_volume(env);
    start_again(env, extra)
}

/// `admin serve` on the volume and state directory `start` made.
fn start_again(env: &Env, extra: &[&str]) -> (Daemon, PathBuf) {
    let state = env.path("admin-state");
    let mut cmd = mailferry();
    cmd.args(["admin", "serve", "--listen", "127.0.0.1:0", "--state"])
        .arg(&state)
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .args(extra);
    (Daemon::start(cmd, "admin"), state)
}

fn audit_log(c: &Client, s: &Session) -> Vec<Value> {
    let r = c.get("/api/v1/audit/admin?limit=100000", s);
    assert_eq!(r.status, 200, "{}", r.text);
    r.body.as_array().unwrap().clone()
}

fn has_record(log: &[Value], actor: &str, event: &str, key: &str, value: &str) -> bool {
    log.iter().any(|e| {
        e["actor"] == actor && e["event"] == event && e["data"][key].as_str() == Some(value)
    })
}

const MUTATING: &[(&str, &str)] = &[
    ("POST", "/api/v1/endpoints"),
    ("POST", "/api/v1/endpoints/src/test"),
    ("POST", "/api/v1/batches"),
    ("POST", "/api/v1/batches/b1/start"),
    ("POST", "/api/v1/batches/b1/suspend"),
    ("POST", "/api/v1/batches/b1/resume"),
    ("POST", "/api/v1/batches/b1/complete"),
    (
        "POST",
        "/api/v1/batches/b1/moves/a@example.com/approve-skipped",
    ),
];

const READS: &[&str] = &[
    "/api/v1/session",
    "/api/v1/endpoints",
    "/api/v1/batches",
    "/api/v1/batches/b1",
    "/api/v1/batches/b1/moves/a@example.com",
    "/api/v1/batches/b1/moves/a@example.com/report",
    "/api/v1/batches/b1/moves/a@example.com/audit/verify",
    "/api/v1/batches/b1/moves/a@example.com/audit/reconcile",
    "/api/v1/audit/admin",
    "/api/v1/audit/admin/verify",
];

#[test]
fn issue10_admin_api_refuses_and_audits_bad_logins_missing_csrf_auditor_writes_and_anonymous_calls()
{
    let env = Env::new();
    let (d, state) = start(&env, &["--max-login-failures", "3", "--lockout", "10min"]);
    let alice = add_account(&state, "alice", "admin");
    let bob = add_account(&state, "bob", "auditor");
    let carol = add_account(&state, "carol", "admin");
    let c = Client::new(&d);

    // Health and the OpenAPI document need no login.
    assert_eq!(c.req("GET", "/healthz", None, false, None).status, 200);
    let doc = c.req("GET", "/api/v1/openapi.json", None, false, None);
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.1.0");
    for (m, p) in MUTATING {
        let p = p
            .replace("src", "{name}")
            .replace("b1", "{name}")
            .replace("a@example.com", "{mailbox}");
        assert!(
            doc.body["paths"][&p][m.to_lowercase()].is_object(),
            "{m} {p} undocumented"
        );
    }

    // Every route needs a session.
    for p in READS {
        let r = c.req("GET", p, None, false, None);
        assert_eq!(
            (r.status, r.code()),
            (401, "unauthenticated"),
            "GET {p}: {}",
            r.text
        );
        assert!(r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("log in"));
    }
    for (m, p) in MUTATING.iter().chain(&[("DELETE", "/api/v1/session")]) {
        let r = c.req(m, p, None, false, Some("{}"));
        assert_eq!(
            (r.status, r.code()),
            (401, "unauthenticated"),
            "{m} {p}: {}",
            r.text
        );
    }
    // A page without a session redirects to the login page.
    let r = c.req("GET", "/dashboard", None, false, None);
    assert!(
        matches!(r.status, 303 | 302 | 307),
        "{} {}",
        r.status,
        r.text
    );

    // Wrong password, wrong TOTP, reused TOTP: 401, the same message, each audited.
    let r = c.login("alice", "not-the-password", &alice.code_at(0));
    assert_eq!((r.status, r.code()), (401, "bad_login"), "{}", r.text);
    let r = c.login("alice", &alice.password, &alice.wrong_code());
    assert_eq!((r.status, r.code()), (401, "bad_login"), "{}", r.text);
    let a = c.session(&alice);
    let r = c.login("alice", &alice.current.borrow(), &alice.used_code());
    assert_eq!(
        (r.status, r.code()),
        (401, "bad_login"),
        "reused code accepted: {}",
        r.text
    );
    let r = c.login("nobody", "x", "123456");
    assert_eq!(r.status, 401);
    let r = c.req(
        "POST",
        "/api/v1/session",
        None,
        false,
        Some("{\"name\":\"alice\"}"),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    let r = c.req("POST", "/api/v1/session", None, false, Some("not json"));
    assert_eq!(r.status, 400, "{}", r.text);

    // Lockout: 3 failures lock carol; the right password and code then get 429.
    for _ in 0..3 {
        assert_eq!(c.login("carol", "wrong", &carol.code_at(0)).status, 401);
    }
    let r = c.login("carol", &carol.password, &carol.code_at(0));
    assert_eq!((r.status, r.code()), (429, "locked"), "{}", r.text);
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 600, "{retry}");

    // Missing or wrong CSRF token on every mutating route: 403, audited.
    for (m, p) in MUTATING {
        let r = c.req(m, p, Some(&a), false, Some("{}"));
        assert_eq!((r.status, r.code()), (403, "csrf"), "{m} {p}: {}", r.text);
    }
    let wrong = Session {
        cookie: a.cookie.clone(),
        csrf: "0".repeat(64),
    };
    let r = c.post("/api/v1/endpoints", &wrong, json!({}));
    assert_eq!((r.status, r.code()), (403, "csrf"));

    // The auditor reads everything and changes nothing: the role is checked before the
    // body, so a body that parses, one that does not fit, and one that is not JSON at
    // all are each a 403, audited (never a 400/422).
    let b = c.session(&bob);
    for body in [
        "{\"name\":\"x\",\"kind\":\"maildir\",\"root\":\"/tmp/{user}\"}",
        "{\"nmae\": 1}",
        "garbage, not JSON {",
    ] {
        for (m, p) in MUTATING {
            let r = c.req(m, p, Some(&b), true, Some(body));
            assert_eq!(
                (r.status, r.code()),
                (403, "forbidden"),
                "{m} {p} with {body:?}: {}",
                r.text
            );
            assert!(r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("auditor"));
        }
    }
    let r = c.post(
        "/api/v1/endpoints",
        &b,
        json!({"name": "x", "kind": "maildir", "root": "/tmp/{user}"}),
    );
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.text);
    for p in [
        "/api/v1/session",
        "/api/v1/endpoints",
        "/api/v1/batches",
        "/api/v1/audit/admin/verify",
    ] {
        assert_eq!(c.get(p, &b).status, 200, "auditor GET {p}");
    }

    // Bad input: 4xx with a message that says what to do.
    let r = c.post(
        "/api/v1/endpoints",
        &a,
        json!({"name": "x", "kind": "floppy"}),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("kind"),
        "{}",
        r.text
    );
    let r = c.post(
        "/api/v1/endpoints",
        &a,
        json!({"name": "../x", "kind": "maildir", "root": "/tmp/{user}"}),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    let r = c.post("/api/v1/endpoints", &a, json!({"nmae": "x"}));
    assert_eq!(r.status, 422, "{}", r.text);
    let r = c.req("POST", "/api/v1/endpoints", Some(&a), true, Some("{"));
    assert_eq!(r.status, 400, "{}", r.text);
    for p in &READS[3..8] {
        let r = c.get(p, &a);
        assert_eq!(
            (r.status, r.code()),
            (404, "not_found"),
            "GET {p}: {}",
            r.text
        );
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("create it"),
            "{}",
            r.text
        );
    }
    let r = c.post("/api/v1/batches/b1/start", &a, json!({}));
    assert_eq!(r.status, 404, "{}", r.text);
    let r = c.get("/api/v1/nothing-here", &a);
    assert_eq!((r.status, r.code()), (404, "not_found"));

    // Logout ends the session.
    let r = c.req("DELETE", "/api/v1/session", Some(&b), true, None);
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(c.get("/api/v1/batches", &b).status, 401);

    // Every refusal is in the admin audit log, with the actor, and the log verifies.
    let log = audit_log(&c, &a);
    for reason in ["bad_password", "bad_totp", "reused_totp"] {
        assert!(
            has_record(&log, "alice", "admin.login.refused", "reason", reason),
            "{reason}"
        );
    }
    assert!(has_record(
        &log,
        "nobody",
        "admin.login.refused",
        "reason",
        "unknown_account"
    ));
    assert!(has_record(
        &log,
        "carol",
        "admin.login.refused",
        "reason",
        "locked"
    ));
    assert!(has_record(&log, "alice", "admin.refused", "code", "csrf"));
    for (m, p) in MUTATING {
        let refused = log
            .iter()
            .filter(|e| {
                e["actor"] == "bob"
                    && e["event"] == "admin.refused"
                    && e["data"]["code"] == "forbidden"
                    && e["data"]["request"].as_str() == Some(&format!("{m} {p}"))
            })
            .count();
        // Three bodies each (and one more valid one for POST /api/v1/endpoints).
        assert!(
            refused >= 3,
            "{m} {p}: {refused} of 3 refusals of the auditor audited"
        );
    }
    assert!(has_record(
        &log,
        "-",
        "admin.refused",
        "code",
        "unauthenticated"
    ));
    assert!(has_record(&log, "alice", "admin.login", "role", "admin"));
    assert!(log
        .iter()
        .any(|e| e["actor"] == "bob" && e["event"] == "admin.logout"));
    assert!(log
        .iter()
        .any(|e| e["event"] == "admin.account.created" && e["data"]["account"] == "carol"));
    let text = serde_json::to_string(&log).unwrap();
    for secret in [
        &alice.password,
        &*alice.current.borrow(),
        &bob.password,
        &*bob.current.borrow(),
        &a.csrf,
    ] {
        assert!(
            !text.contains(secret.as_str()),
            "a secret is in the audit log"
        );
    }
    let r = c.get("/api/v1/audit/admin/verify", &a);
    assert_eq!(r.status, 200, "{}", r.text);
    let log_file = state.join("admin-audit.jsonl");
    mailferry_audit::verify(&log_file).expect("the admin audit log verifies");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.join("accounts.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn issue10_admin_api_session_expires_when_idle_and_the_expiry_is_audited() {
    let env = Env::new();
    // 5 s: a login (two argon2 hashes) and a new TLS connection fit in it on a loaded
    // machine, so the first request below is still inside the session's idle time.
    let (d, state) = start(&env, &["--session-idle", "5s"]);
    let alice = add_account(&state, "alice", "admin");
    let c = Client::new(&d);
    let s = c.session(&alice);
    assert_eq!(c.get("/api/v1/batches", &s).status, 200);
    std::thread::sleep(Duration::from_millis(6500));
    let r = c.get("/api/v1/batches", &s);
    assert_eq!((r.status, r.code()), (401, "unauthenticated"), "{}", r.text);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
    let s2 = c.session(&alice);
    let log = audit_log(&c, &s2);
    assert!(log
        .iter()
        .any(|e| e["actor"] == "alice" && e["event"] == "admin.session.expired"));
    assert_eq!(d.stop(), Some(0));
}

fn poll_state(c: &Client, s: &Session, batch: &str, mailbox: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let r = c.get(&format!("/api/v1/batches/{batch}/moves/{mailbox}"), s);
        assert_eq!(r.status, 200, "{}", r.text);
        if r.body["state"] == want {
            return r.body;
        }
        let b = c.get(&format!("/api/v1/batches/{batch}"), s);
        assert!(
            r.body["state"] != "failed",
            "the move failed: {}\n{}",
            r.text,
            b.text
        );
        assert!(
            Instant::now() < deadline,
            "no {want} within 300 s: {}\n{}",
            r.text,
            b.text
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn issue10_admin_api_moves_a_maildir_batch_to_synced_then_completed() {
    let env = Env::new();
    let (d, state) = start(&env, &[]);
    let alice = add_account(&state, "alice", "admin");
    let bob = add_account(&state, "bob", "auditor");
    let c = Client::new(&d);
    let a = c.session(&alice);

    let mail = env.path("mail");
    for (i, u) in ["ann", "ben"].iter().enumerate() {
        write_maildir(
            &mail.join(u),
            &SampleSpec {
                seed: 10 + i as u64,
                messages: 12,
                folders: 2,
                size: SizeModel::Small,
                markers: None,
            },
        )
        .unwrap();
    }
    let r = c.post(
        "/api/v1/endpoints",
        &a,
        json!({"name": "src", "kind": "maildir", "root": format!("{}/{{user}}", mail.display())}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let r = c.post(
        "/api/v1/endpoints",
        &a,
        json!({"name": "src", "kind": "maildir", "root": "/x/{user}"}),
    );
    assert_eq!((r.status, r.code()), (409, "conflict"), "{}", r.text);
    let r = c.get("/api/v1/endpoints", &a);
    assert_eq!(r.body[0]["name"], "src", "{}", r.text);
    let r = c.post("/api/v1/endpoints/src/test", &a, json!({"user": "ann"}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["ok"], true, "{}", r.text);

    // A CSV with a bad row: refused, the row named, nothing created.
    let bad = "EmailAddress,UserName,Password\nann@example.com,ann,\nnot-an-address,ben,\n";
    let body = |csv: &str| {
        json!({"name": "wave1", "migration_type": "file", "endpoint": "src", "csv": csv,
        "settings": {"completion": {"mode": "manual"}, "excluded_folders": ["Junk"], "report_recipients": ["ops@example.com"]}})
    };
    let r = c.post("/api/v1/batches", &a, body(bad));
    assert_eq!((r.status, r.code()), (422, "invalid"), "{}", r.text);
    let rows = r.body["error"]["rows"].as_array().expect("rows");
    assert!(
        rows.iter()
            .any(|p| p["row"] == 3 && p["column"] == "EmailAddress"),
        "{}",
        r.text
    );
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("row 3"),
        "{}",
        r.text
    );
    assert_eq!(c.get("/api/v1/batches/wave1", &a).status, 404);
    let r = c.post(
        "/api/v1/batches",
        &a,
        json!({"name": "w", "migration_type": "imap", "endpoint": "src", "csv": ""}),
    );
    assert_eq!(r.status, 422, "{}", r.text);

    // The good CSV, started, reaches Synced (completion is manual), then Completed.
    let good = "EmailAddress,UserName,Password\nann@example.com,ann,\nben@example.com,ben,\n";
    let r = c.post("/api/v1/batches", &a, body(good));
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.body["mailboxes"].as_array().unwrap().len(),
        2,
        "{}",
        r.text
    );
    let r = c.post("/api/v1/batches", &a, body(good));
    assert_eq!(r.status, 409, "{}", r.text);
    let r = c.post("/api/v1/batches/wave1/start", &a, json!({}));
    assert_eq!(r.status, 202, "{}", r.text);
    // Auditors read progress but cannot complete.
    let b = c.session(&bob);
    for m in ["ann@example.com", "ben@example.com"] {
        let s = poll_state(&c, &b, "wave1", m, "synced");
        assert!(s["items_synced"].as_u64().unwrap() > 0, "{s}");
        assert!(s["percent_complete"].is_number());
    }
    let r = c.post("/api/v1/batches/wave1/complete", &b, json!({}));
    assert_eq!(r.status, 403);
    // Wait for the start run to be recorded as ended before completing.
    let deadline = Instant::now() + Duration::from_secs(120);
    while c.get("/api/v1/batches/wave1", &a).body["job"]["running"] == true {
        assert!(Instant::now() < deadline, "the start run does not end");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Suspended: every move holds, and nothing starts or completes until resumed.
    let r = c.post("/api/v1/batches/wave1/suspend", &a, json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["suspended"], true, "{}", r.text);
    for m in ["ann@example.com", "ben@example.com"] {
        let s = c.get(&format!("/api/v1/batches/wave1/moves/{m}"), &b);
        assert_eq!(s.body["state"], "suspended", "{}", s.text);
    }
    for action in ["start", "complete"] {
        let r = c.post(&format!("/api/v1/batches/wave1/{action}"), &a, json!({}));
        assert_eq!((r.status, r.code()), (409, "conflict"), "{}", r.text);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("resume it first"),
            "{}",
            r.text
        );
    }
    let r = c.post("/api/v1/batches/wave1/resume", &a, json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["suspended"], false, "{}", r.text);
    for m in ["ann@example.com", "ben@example.com"] {
        let s = c.get(&format!("/api/v1/batches/wave1/moves/{m}"), &b);
        assert_eq!(s.body["state"], "synced", "back where it was: {}", s.text);
    }
    let r = c.post(
        "/api/v1/batches/wave1/complete",
        &a,
        json!({"approve_skipped": false}),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    for m in ["ann@example.com", "ben@example.com"] {
        poll_state(&c, &a, "wave1", m, "completed");
    }
    let r = c.get("/api/v1/batches/wave1", &b);
    assert_eq!(r.body["totals"]["mailboxes"], 2, "{}", r.text);
    assert_eq!(
        r.body["admin"]["settings"]["report_recipients"][0],
        "ops@example.com"
    );

    // Reports and audit checks, readable by the auditor.
    let r = c.get("/api/v1/batches/wave1/moves/ann@example.com/report", &b);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["schema"], "mailferry-move-record/1", "{}", r.text);
    let r = c.get(
        "/api/v1/batches/wave1/moves/ann@example.com/audit/verify",
        &b,
    );
    assert_eq!(r.body["ok"], true, "{}", r.text);
    let r = c.get(
        "/api/v1/batches/wave1/moves/ann@example.com/audit/reconcile",
        &b,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.body["missing"].as_array().unwrap().is_empty(),
        "{}",
        r.text
    );

    // Every action is in the admin audit log with its actor, and the log verifies.
    let log = audit_log(&c, &a);
    for action in [
        "endpoint.create",
        "endpoint.test",
        "batch.create",
        "batch.start",
        "batch.suspend",
        "batch.resume",
        "batch.complete",
    ] {
        assert!(
            has_record(&log, "alice", "admin.action", "action", action),
            "{action}"
        );
    }
    assert!(has_record(
        &log,
        "bob",
        "admin.refused",
        "code",
        "forbidden"
    ));
    let r = c.get("/api/v1/audit/admin/verify", &b);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["records"].as_u64().unwrap() >= log.len() as u64);
    mailferry_audit::verify(state.join("admin-audit.jsonl")).expect("the admin audit log verifies");
    assert_eq!(d.stop(), Some(0));
}

/// Waits (generously) until the batch's latest run has ended; returns the batch.
fn wait_run_ended(c: &Client, s: &Session, batch: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let r = c.get(&format!("/api/v1/batches/{batch}"), s);
        assert_eq!(r.status, 200, "{}", r.text);
        if r.body["job"].is_object() && r.body["job"]["running"] == false {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "the run does not end: {}",
            r.text
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (generously) until a move is in `want`, whatever states it passes through.
fn wait_state(c: &Client, s: &Session, batch: &str, mailbox: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let r = c.get(&format!("/api/v1/batches/{batch}/moves/{mailbox}"), s);
        assert_eq!(r.status, 200, "{}", r.text);
        if r.body["state"] == want {
            return r.body;
        }
        assert!(Instant::now() < deadline, "no {want}: {}", r.text);
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn maildir_endpoint(c: &Client, a: &Session, env: &Env, users: &[&str]) {
    let mail = env.path("mail");
    for (i, u) in users.iter().enumerate() {
        write_maildir(
            &mail.join(u),
            &SampleSpec {
                seed: 20 + i as u64,
                messages: 6,
                folders: 1,
                size: SizeModel::Small,
                markers: None,
            },
        )
        .unwrap();
    }
    let r = c.post(
        "/api/v1/endpoints",
        a,
        json!({"name": "src", "kind": "maildir", "root": format!("{}/{{user}}", mail.display())}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
}

#[test]
fn issue10_admin_api_approve_skipped_lets_a_move_with_a_bad_item_complete() {
    let env = Env::new();
    let (d, state) = start(&env, &[]);
    let alice = add_account(&state, "alice", "admin");
    let c = Client::new(&d);
    let a = c.session(&alice);
    maildir_endpoint(&c, &a, &env, &["ann"]);
    // One damaged message (an empty file): a bad item; the limit tolerates none.
    std::fs::write(env.path("mail/ann/cur/1700000000.empty.host:2,S"), b"").unwrap();
    // And one odd but stored item (issue 17): a warning, which the limit does not count.
    std::fs::write(
        env.path("mail/ann/cur/1700000001.digest.host:2,S"),
        b"the rest of yesterday's digest, without a header\n",
    )
    .unwrap();
    let r = c.post(
        "/api/v1/batches",
        &a,
        json!({"name": "bad", "migration_type": "file", "endpoint": "src",
               "csv": "EmailAddress,UserName,Password\nann@example.com,ann,\n",
               "settings": {"bad_item_limit": 0, "start": {"when": "now"},
                            "completion": {"mode": "manual"}}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let m = "ann@example.com";
    let s = wait_state(&c, &a, "bad", m, "failed");
    assert_eq!(s["items_bad"], 1, "{s}");
    assert_eq!(
        s["warnings"][0]["item"], "INBOX/1700000001.digest.host",
        "{s}"
    );
    let page = c.get(&format!("/ui/moves/bad/{m}/report"), &a);
    assert_eq!(page.status, 200, "{}", page.text);
    let table = &page.text[page.text.find("id=\"warnings\"").expect("a warnings table")..];
    let table = &table[..table.find("</table>").unwrap()];
    assert!(
        table.contains("INBOX/1700000001.digest.host") && table.contains("no header block"),
        "{table}"
    );
    let b = wait_run_ended(&c, &a, "bad");
    assert!(b["job"]["error"].is_string(), "the run says it failed: {b}");
    // Completing refuses the unapproved item; approving it lets the move on.
    let r = c.post(
        &format!("/api/v1/batches/bad/moves/{m}/approve-skipped"),
        &a,
        json!({}),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    let b = wait_run_ended(&c, &a, "bad");
    assert_eq!(b["job"]["kind"], "approve", "{b}");
    assert!(b["job"]["error"].is_null(), "{b}");
    let s = wait_state(&c, &a, "bad", m, "synced");
    assert_eq!(s["items_approved"], 1, "{s}");
    let r = c.post("/api/v1/batches/bad/complete", &a, json!({}));
    assert_eq!(r.status, 202, "{}", r.text);
    wait_state(&c, &a, "bad", m, "completed");
    let b = wait_run_ended(&c, &a, "bad");
    assert!(b["job"]["error"].is_null(), "{b}");
    let log = audit_log(&c, &a);
    assert!(has_record(
        &log,
        "alice",
        "admin.action",
        "action",
        "move.approve_skipped"
    ));

    // An IMAP batch whose CSV carries the passwords: the approval pass reads the
    // password from that CSV again, as a batch run does ...
    let r = c.post(
        "/api/v1/endpoints",
        &a,
        json!({"name": "imap1", "kind": "imap", "host": "127.0.0.1", "port": 1, "tls": "imaps"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let r = c.post(
        "/api/v1/batches",
        &a,
        json!({"name": "imapb", "migration_type": "imap", "endpoint": "imap1",
               "csv": "EmailAddress,UserName,Password\ncid@example.com,cid,s3cret-pw\n"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let cid = "/api/v1/batches/imapb/moves/cid@example.com/approve-skipped";
    let r = c.post(cid, &a, json!({}));
    assert_eq!(r.status, 202, "{}", r.text);
    let b = wait_run_ended(&c, &a, "imapb");
    let why = b["job"]["error"].as_str().unwrap_or("");
    // Nothing listens on port 1: the pass fails connecting, with the password in hand.
    assert!(!why.contains("needs a password"), "{b}");
    assert!(!why.contains("s3cret-pw"), "a password in an error: {b}");
    // ... and when the CSV lost it, the admin is told what to do, and nothing runs.
    std::fs::write(
        state.join("uploads/imapb.csv"),
        "EmailAddress,UserName,Password\ncid@example.com,cid,\n",
    )
    .unwrap();
    let r = c.post(cid, &a, json!({}));
    assert_eq!((r.status, r.code()), (422, "invalid"), "{}", r.text);
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("no Password any more") && msg.contains("put the password back"),
        "{msg}"
    );
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn issue10_admin_api_scheduled_start_and_completion_survive_a_killed_service() {
    let env = Env::new();
    let (d, state) = start(&env, &[]);
    let alice = add_account(&state, "alice", "admin");
    let c = Client::new(&d);
    let a = c.session(&alice);
    maildir_endpoint(&c, &a, &env, &["ann"]);
    // Margins for a loaded CI machine: the restarted service must be up before the start
    // time, and the first pass must begin before the completion time, or the first pass
    // is rightly the final one and there is no sync to see.
    let start_at = mailferry_core::unix_now() + 8;
    let r = c.post(
        "/api/v1/batches",
        &a,
        json!({"name": "later", "migration_type": "file", "endpoint": "src",
               "csv": "EmailAddress,UserName,Password\nann@example.com,ann,\n",
               "settings": {
                   "start": {"when": "later", "at": mailferry_core::rfc3339(start_at)},
                   "completion": {"mode": "after", "at": mailferry_core::rfc3339(start_at + 20)}}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["job"]["running"], true, "{}", r.text);
    assert_eq!(
        r.body["job"]["scheduled_for"],
        mailferry_core::rfc3339(start_at),
        "{}",
        r.text
    );
    // SIGKILL: nothing is written on the way out.
    drop(d);
    if mailferry_core::unix_now() < start_at {
        let lc: Value = serde_json::from_slice(
            &std::fs::read(state.join("batches/later/mailboxes/ann@example.com/lifecycle.json"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(lc["state"], "created", "started before its time: {lc}");
    }

    // The restarted service starts it on time, and completes it after its time.
    let (d, _) = start_again(&env, &[]);
    let c = Client::new(&d);
    let a = c.session(&alice);
    wait_state(&c, &a, "later", "ann@example.com", "completed");
    let b = wait_run_ended(&c, &a, "later");
    assert_eq!(b["job"]["kind"], "complete", "{b}");
    assert!(b["job"]["error"].is_null(), "{b}");
    assert_eq!(b["job"]["interrupted"], false, "{b}");
    let s = c.get("/api/v1/batches/later/moves/ann@example.com", &a);
    let lc: Value = serde_json::from_slice(
        &std::fs::read(state.join("batches/later/mailboxes/ann@example.com/lifecycle.json"))
            .unwrap(),
    )
    .unwrap();
    let at = |state: &str| {
        let t = lc["history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["state"] == state)
            .unwrap_or_else(|| panic!("no {state} in {lc}"));
        mailferry_core::profile::parse_rfc3339(t["at"].as_str().unwrap()).unwrap()
    };
    assert!(at("syncing") >= start_at, "started early: {lc}");
    assert!(at("completing") > start_at, "completed early: {lc}");
    assert!(s.body["items_synced"].as_u64().unwrap() > 0, "{}", s.text);
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn issue10_admin_serve_with_tls_cert_serves_that_certificate() {
    use std::io::BufRead;
    let env = Env::new();
    init_volume(&env);
    let tls = env.path("given-tls");
    let (_, files) = mailferry_control::serve::local_tls(&tls, &["localhost", "127.0.0.1"])
        .expect("certificate");
    let state = env.path("admin-state");
    let mut child = mailferry()
        .args(["admin", "serve", "--listen", "127.0.0.1:0", "--state"])
        .arg(&state)
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mailferry starts");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut port = None;
    let mut said: Vec<String> = Vec::new();
    while port.is_none() || !said.iter().any(|l| l.contains("--tls-cert")) {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("admin serve ended before listening: {said:?}");
        };
        if let Some(url) = line.split("listening on https://").nth(1) {
            port = Some(url.rsplit(':').next().unwrap().trim().parse().unwrap());
        }
        said.push(line);
    }
    std::thread::spawn(move || lines.for_each(drop));
    let d = Daemon {
        child,
        port: port.unwrap(),
        ca: files.ca.clone(),
    };
    // The client trusts only the given certificate's CA, and is served that certificate.
    let c = Client::new(&d);
    let r = c.req("GET", "/healthz", None, false, None);
    assert_eq!(r.status, 200, "{}", r.text);
    let given = mailferry_core::tls::certs_from_pem(&std::fs::read(&files.cert).unwrap()).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(c.tls.clone(), name).unwrap();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    let served = conn.peer_certificates().expect("a certificate");
    assert_eq!(served[0], given[0], "the given certificate is served");
    assert!(
        !state.join("tls").exists(),
        "no certificate is generated when one is given"
    );
    assert_eq!(d.stop(), Some(0));
}

/// The service deletes an expired grant's one-time key on its own timer, with no request
/// to trigger a sweep: an expired grant is unusable even if nobody looks at it again.
#[test]
fn issue21_the_service_deletes_an_expired_grants_key_without_being_asked() {
    let env = Env::new();
    let (d, state) = start(&env, &[]);
    let src = env.path("src");
    write_maildir(
        &src,
        &SampleSpec {
            seed: 21,
            messages: 3,
            folders: 1,
            size: SizeModel::Small,
            markers: None,
        },
    )
    .unwrap();
    let (code, _, o) = move_maildir(&env, &src, "alice@example.com");
    assert_eq!(code, 0, "{}", describe(&o));
    let ann = add_account(&state, "ann", "admin");
    let pat = add_account_with(
        &state,
        "pat",
        &["--role", "approver", "--tenant", "example.com"],
    );
    let c = Client::new(&d);
    let (a, p) = (c.session(&ann), c.session(&pat));
    let r = c.post(
        "/api/v1/access",
        &a,
        json!({"mailbox": "alice@example.com", "reason": "ticket 21", "duration": "10s"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    let key = state.join("lockbox-keys").join(format!("{id}.key"));
    assert!(
        key.exists(),
        "the one-time key is kept while the request is open"
    );
    let r = c.post(
        &format!("/api/v1/access/{id}/approve"),
        &p,
        json!({"totp": pat.next_code()}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(key.exists(), "the one-time key is kept during the grant");
    // No request from here on: only the service's own timer can delete it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while key.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(!key.exists(), "the expired grant's key is still on disk");
    // The records follow at the next look, once.
    let r = c.get("/api/v1/access", &a);
    assert_eq!(r.body[0]["state_now"], "expired", "{}", r.text);
    let log = audit_log(&c, &a);
    let expired = log
        .iter()
        .filter(|e| e["event"] == "admin.access.expired")
        .count();
    assert_eq!(expired, 1, "{log:?}");
}

/// Issue 20: `admin serve --db` shows and acts on the batches in PostgreSQL
/// (`MAILFERRY_TEST_PG`): a batch created through the API is rows (not a directory),
/// `start` queues it, a `mailferry worker` runs it, and the API and the pages show what
/// the worker did (the start is the batch's latest run, `job`, as for files); suspend and
/// resume change the rows; every action is in the admin audit log as without `--db`.
#[test]
fn issue20_admin_serve_db_shows_and_acts_on_a_batch_run_by_a_worker() {
    use crate::workers::{fresh_db, sql_i64, start_worker};
    let Some(db) = fresh_db("admin_serve") else {
        return;
    };
    let env = Env::new();
    let (d, state) = start(&env, &["--db", &db]);
    let alice = add_account(&state, "alice", "admin");
    let c = Client::new(&d);
    let a = c.session(&alice);
    maildir_endpoint(&c, &a, &env, &["ann", "ben"]);
    let good = "EmailAddress,UserName,Password\nann@example.com,ann,\nben@example.com,ben,\n";
    let body = |completion: Value| {
        json!({"name": "wave1", "migration_type": "file", "endpoint": "src", "csv": good,
               "settings": {"start": {"when": "manual"}, "completion": completion,
                            "report_recipients": ["ops@example.com"]}})
    };
    assert_eq!(c.get("/api/v1/batches/wave1", &a).status, 404);
    let r = c.post("/api/v1/batches", &a, body(json!({"mode": "manual"})));
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.body["mailboxes"].as_array().unwrap().len(),
        2,
        "{}",
        r.text
    );
    assert_eq!(r.body["admin"]["created_by"], "alice", "{}", r.text);
    // Rows, not a batch directory.
    let rows = |sql: &str| sql_i64(&db, sql);
    assert_eq!(
        rows("SELECT count(*) FROM moves WHERE batch = 'wave1' AND state = 'created'"),
        2
    );
    assert!(!state.join("batches/wave1").exists());
    let r = c.post("/api/v1/batches", &a, body(json!({"mode": "manual"})));
    assert_eq!((r.status, r.code()), (409, "conflict"), "{}", r.text);
    let r = c.get("/api/v1/batches", &a);
    assert_eq!(r.body.as_array().unwrap().len(), 1, "{}", r.text);

    // Start queues the passes; nothing runs until a worker leases them.
    let r = c.post("/api/v1/batches/wave1/start", &a, json!({}));
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(
        rows("SELECT count(*) FROM moves WHERE batch = 'wave1' AND runnable"),
        2
    );
    let worker = start_worker(env.dir.path(), &db, "w0", 2, 10);
    for m in ["ann@example.com", "ben@example.com"] {
        let s = poll_state(&c, &a, "wave1", m, "synced");
        assert!(s["items_synced"].as_u64().unwrap() > 0, "{s}");
    }
    let r = c.get("/api/v1/batches/wave1", &a);
    assert_eq!(r.body["totals"]["mailboxes"], 2, "{}", r.text);
    assert_eq!(
        r.body["admin"]["settings"]["report_recipients"][0], "ops@example.com",
        "{}",
        r.text
    );
    // The start is the latest run; it has ended with its passes.
    let b = wait_run_ended(&c, &a, "wave1");
    assert_eq!(b["job"]["kind"], "sync", "{b}");
    assert!(b["job"]["error"].is_null(), "{b}");
    let r = c.get("/api/v1/batches/wave1/moves/ann@example.com/report", &a);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["schema"], "mailferry-move-record/1", "{}", r.text);
    assert_eq!(r.body["passes"].as_array().unwrap().len(), 1, "{}", r.text);
    let r = c.get(
        "/api/v1/batches/wave1/moves/ann@example.com/audit/verify",
        &a,
    );
    assert_eq!(r.body["ok"], true, "{}", r.text);

    // Suspend and resume change the rows.
    let r = c.post("/api/v1/batches/wave1/suspend", &a, json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["suspended"], true, "{}", r.text);
    assert_eq!(
        rows("SELECT count(*) FROM batches WHERE name = 'wave1' AND suspended"),
        1
    );
    assert_eq!(
        rows("SELECT count(*) FROM moves WHERE batch = 'wave1' AND state = 'suspended'"),
        2
    );
    for action in ["start", "complete"] {
        let r = c.post(&format!("/api/v1/batches/wave1/{action}"), &a, json!({}));
        assert_eq!((r.status, r.code()), (409, "conflict"), "{}", r.text);
        assert!(r.text.contains("resume it first"), "{}", r.text);
    }
    let r = c.post("/api/v1/batches/wave1/resume", &a, json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["suspended"], false, "{}", r.text);
    assert_eq!(
        rows("SELECT count(*) FROM moves WHERE batch = 'wave1' AND state = 'synced'"),
        2
    );

    // Complete queues the final passes; the worker runs them.
    let r = c.post("/api/v1/batches/wave1/complete", &a, json!({}));
    assert_eq!(r.status, 202, "{}", r.text);
    for m in ["ann@example.com", "ben@example.com"] {
        poll_state(&c, &a, "wave1", m, "completed");
    }
    // The worker holds the volume open: the service cannot reconcile with it (409, and
    // says why) until the worker stops.
    let r = c.get(
        "/api/v1/batches/wave1/moves/ann@example.com/audit/reconcile",
        &a,
    );
    assert_eq!((r.status, r.code()), (409, "conflict"), "{}", r.text);
    let log = worker.log_text();
    assert_eq!(worker.stop(), Some(0), "{log}");
    let r = c.get(
        "/api/v1/batches/wave1/moves/ann@example.com/audit/reconcile",
        &a,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.body["missing"].as_array().unwrap().is_empty(),
        "{}",
        r.text
    );

    // The pages read the same rows.
    let page = c.get("/ui/moves/wave1/ann@example.com", &a);
    assert_eq!(page.status, 200, "{}", page.text);
    for want in [
        "Completed",
        "hash chain intact",
        "reconciled with the source log",
    ] {
        assert!(
            page.text.contains(want),
            "mailbox page lacks {want}:\n{}",
            page.text
        );
    }
    let page = c.get("/dashboard", &a);
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("wave1"), "{}", page.text);
    let page = c.get("/ui/batches/wave1", &a);
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("ben@example.com"), "{}", page.text);

    // Every action is in the admin audit log as without --db, and the log verifies.
    let log = audit_log(&c, &a);
    for action in [
        "batch.create",
        "batch.start",
        "batch.suspend",
        "batch.resume",
        "batch.complete",
    ] {
        assert!(
            has_record(&log, "alice", "admin.action", "action", action),
            "{action}"
        );
    }
    mailferry_audit::verify(state.join("admin-audit.jsonl")).expect("the admin audit log verifies");
    assert_eq!(d.stop(), Some(0));
}

/// Issue 20: `admin serve --db --proxy URL --ca CA --token-file F` records the batches it
/// creates with that `mailferry serve` as their destination, so that a worker on any
/// machine streams to it: the mail is in the store's own volume (its export equals the
/// source), none of it in the admin service's `--volume`, and the service says where to
/// reconcile instead of comparing with the wrong volume. `--proxy` without `--db` is a
/// usage error.
#[test]
fn issue20_admin_serve_db_with_proxy_creates_batches_that_workers_move_into_that_store() {
    use crate::serve::{issue_token, start_serve};
    use crate::util::{export, read_maildir};
    use crate::workers::{fresh_db, sql_rows, start_worker};
    let Some(db) = fresh_db("admin_proxy") else {
        return;
    };
    // The store: its own volume, its own machine as far as the admin service knows.
    let store = Env::new();
    init_volume(&store);
    let token = store.path("agent.token");
    issue_token(&store, "example.com", &token);
    let serve = start_serve(&store, &[]);
    let (ca, token_s) = (
        serve.ca.to_str().unwrap().to_string(),
        token.to_str().unwrap().to_string(),
    );

    let env = Env::new();
    let o = run(mailferry()
        .env_remove("MAILFERRY_DB")
        .args(["admin", "serve", "--listen", "127.0.0.1:0", "--state"])
        .arg(env.path("nostate"))
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .args([
            "--proxy",
            &serve.url(),
            "--ca",
            &ca,
            "--token-file",
            &token_s,
        ]));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--db"),
        "{}",
        describe(&o)
    );
    let (d, state) = start(
        &env,
        &[
            "--db",
            &db,
            "--proxy",
            &serve.url(),
            "--ca",
            &ca,
            "--token-file",
            &token_s,
        ],
    );
    let alice = add_account(&state, "alice", "admin");
    let c = Client::new(&d);
    let a = c.session(&alice);
    maildir_endpoint(&c, &a, &env, &["ann", "ben"]);
    let csv = "EmailAddress,UserName,Password\nann@example.com,ann,\nben@example.com,ben,\n";
    let r = c.post(
        "/api/v1/batches",
        &a,
        json!({"name": "far", "migration_type": "file", "endpoint": "src", "csv": csv,
               "settings": {"start": {"when": "manual"}, "completion": {"mode": "manual"}}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    // The batch and each move record the store, not the service's volume.
    let dest = sql_rows(
        &db,
        "SELECT record->>'destination' FROM batches WHERE name = 'far'",
    );
    let dest: Value = serde_json::from_str(&dest[0][0]).unwrap();
    assert_eq!(dest["url"], serve.url(), "{dest}");
    assert!(dest["volume"].is_null(), "{dest}");
    let moves = sql_rows(
        &db,
        "SELECT lifecycle->'invocation'->'destination'->>'url' FROM moves WHERE batch = 'far'",
    );
    assert_eq!(moves, [[serve.url()], [serve.url()]], "{moves:?}");
    let r = c.post("/api/v1/batches/far/start", &a, json!({}));
    assert_eq!(r.status, 202, "{}", r.text);
    let worker = start_worker(env.dir.path(), &db, "w0", 2, 10);
    for m in ["ann@example.com", "ben@example.com"] {
        let s = poll_state(&c, &a, "far", m, "synced");
        assert_eq!(s["items_synced"], 6, "{s}");
    }
    // Not in the service's volume: reconciling with it would call everything missing.
    let r = c.get(
        "/api/v1/batches/far/moves/ann@example.com/audit/reconcile",
        &a,
    );
    assert_eq!((r.status, r.code()), (409, "conflict"), "{}", r.text);
    assert!(r.text.contains(&serve.url()), "{}", r.text);
    let log = worker.log_text();
    assert_eq!(worker.stop(), Some(0), "{log}");
    assert_eq!(d.stop(), Some(0));
    assert_eq!(serve.stop(), Some(0));

    for (i, m) in ["ann", "ben"].iter().enumerate() {
        let address = format!("{m}@example.com");
        let source = read_maildir(&env.path("mail").join(m));
        assert_eq!(source.len(), 6);
        let out = store.path(&format!("export{i}"));
        let o = export(&store, &address, &out);
        assert!(o.status.success(), "export {address}: {}", describe(&o));
        assert_eq!(
            read_maildir(&out),
            source,
            "{address}: export differs from the source"
        );
        let out = env.path(&format!("export{i}"));
        let o = export(&env, &address, &out);
        assert!(
            !o.status.success() || read_maildir(&out).is_empty(),
            "{address} is in the admin service's volume: {}",
            describe(&o)
        );
    }
}
/// The history entry of `state` in a move's lifecycle row: its time (Unix seconds) and
/// actor.
fn db_transition(db: &str, mailbox: &str, state: &str) -> (i64, String) {
    let rows = crate::workers::sql_rows(
        db,
        &format!("SELECT lifecycle::text FROM moves WHERE address = '{mailbox}'"),
    );
    let lc: Value = serde_json::from_str(&rows[0][0]).unwrap();
    let t = lc["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["state"] == state)
        .unwrap_or_else(|| panic!("{mailbox}: no {state} in {lc}"));
    (
        mailferry_core::profile::parse_rfc3339(t["at"].as_str().unwrap()).unwrap(),
        t["actor"].as_str().unwrap().to_string(),
    )
}

/// Waits (generously) until every mailbox of the batch is Completed; on failure shows
/// the batch, its schedule row and the workers' logs.
fn wait_all_completed(c: &Client, s: &Session, db: &str, batch: &str, logs: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let b = c.get(&format!("/api/v1/batches/{batch}"), s).body;
        if crate::workers::states(&b)
            .iter()
            .all(|(_, st)| st == "completed")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not every mailbox completed within 300 s: {b}\nschedule: {:?}\n{}",
            crate::workers::sql_rows(
                db,
                &format!("SELECT * FROM schedules WHERE batch = '{batch}'")
            ),
            logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Stops the service, exports every mailbox from its volume and compares each with its
/// source Maildir under `mail/`, message by message.
fn assert_exports_equal_sources(env: &Env, users: &[&str]) {
    for u in users {
        let out = env.path(&format!("export-{u}"));
        let o = export(env, &format!("{u}@example.com"), &out);
        assert!(o.status.success(), "export {u}: {}", describe(&o));
        let source = read_maildir(&env.path("mail").join(u));
        assert!(!source.is_empty(), "{u}: the source is empty");
        assert_eq!(
            read_maildir(&out),
            source,
            "{u}: export differs from the source"
        );
    }
}

/// Issue 20: with `admin serve --db` the wizard's "start at a time" and automatic
/// completion are rows the workers fire: a batch created through the API to start in a
/// few seconds and complete as soon as every mailbox is synced is started, synced and
/// completed by a `mailferry worker` without any further request, each step queued
/// once; the exports equal the sources. (One worker: the service's batches go to its
/// local volume, which one process opens at a time; the race between workers firing
/// one schedule is crates/coord's `schedule::tests`.)
#[test]
fn issue20_admin_serve_db_scheduled_start_and_automatic_completion_run_by_the_workers() {
    use crate::workers::{fresh_db, sql_i64, sql_rows, start_workers};
    let Some(db) = fresh_db("admin_schedule") else {
        return;
    };
    let env = Env::new();
    let (d, state) = start(&env, &["--db", &db]);
    let alice = add_account(&state, "alice", "admin");
    let c = Client::new(&d);
    let a = c.session(&alice);
    let users = ["ann", "ben", "cy"];
    maildir_endpoint(&c, &a, &env, &users);
    let mut csv = String::from("EmailAddress,UserName,Password\n");
    for u in users {
        csv.push_str(&format!("{u}@example.com,{u},\n"));
    }
    let start_at = mailferry_core::unix_now() + 3;
    let r = c.post(
        "/api/v1/batches",
        &a,
        json!({"name": "night", "migration_type": "file", "endpoint": "src", "csv": csv,
               "settings": {"start": {"when": "later", "at": mailferry_core::rfc3339(start_at)},
                            "completion": {"mode": "automatic"}}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["job"]["running"], true, "{}", r.text);
    assert_eq!(r.body["job"]["kind"], "sync", "{}", r.text);
    assert_eq!(
        r.body["job"]["scheduled_for"],
        mailferry_core::rfc3339(start_at),
        "{}",
        r.text
    );
    // Nothing is queued by the service itself, and a start by hand waits for it.
    assert_eq!(
        sql_i64(
            &db,
            "SELECT count(*) FROM moves WHERE batch = 'night' AND runnable"
        ),
        0
    );
    // No worker runs yet, so the schedule waits however late it is.
    let r = c.post("/api/v1/batches/night/start", &a, json!({}));
    assert_eq!((r.status, r.code()), (409, "conflict"), "{}", r.text);
    assert!(r.text.contains("scheduled for"), "{}", r.text);
    let page = c.get("/dashboard", &a);
    assert!(page.text.contains("scheduled for"), "{}", page.text);

    let workers = start_workers(env.dir.path(), &db, 1, 2, 10);
    let logs = || {
        workers
            .iter()
            .map(|w| w.log_text())
            .collect::<Vec<_>>()
            .join("\n")
    };
    wait_all_completed(&c, &a, &db, "night", &logs);
    let b = wait_run_ended(&c, &a, "night");
    assert_eq!(b["job"]["kind"], "complete", "{b}");
    assert!(b["job"]["error"].is_null(), "{b}\n{}", logs());
    for u in users {
        let m = format!("{u}@example.com");
        let (synced_at, by) = db_transition(&db, &m, "syncing");
        assert!(synced_at >= start_at, "{m} started early");
        assert!(by.starts_with("worker:"), "{by}");
        db_transition(&db, &m, "completed");
        // One first copy and one final pass: each step was queued once.
        assert_eq!(
            sql_i64(
                &db,
                &format!(
                    "SELECT count(*) FROM pass_reports r JOIN moves m ON m.id = r.move_id \
                     WHERE m.address = '{m}'"
                )
            ),
            2,
            "{m}\n{}",
            logs()
        );
    }
    // Who fired what: workers, recorded with the batch's schedule (which a worker marks
    // done at its next tick after the final passes).
    let deadline = Instant::now() + Duration::from_secs(120);
    let fired = loop {
        let fired = sql_rows(
            &db,
            "SELECT phase, start_fired_by, complete_fired_by, actor FROM schedules \
             WHERE batch = 'night'",
        );
        if fired[0][0] == "done" || Instant::now() > deadline {
            break fired;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(fired[0][0], "done", "{fired:?}");
    assert!(
        fired[0][1].starts_with("worker:") && fired[0][2].starts_with("worker:"),
        "{fired:?}"
    );
    assert_eq!(fired[0][3], "admin:alice", "{fired:?}");
    for w in workers {
        let log = w.log_text();
        assert_eq!(w.stop(), Some(0), "{log}");
    }
    assert_eq!(d.stop(), Some(0));
    assert_exports_equal_sources(&env, &users);
}

/// Issue 20: "complete after a time" with `admin serve --db`: a batch started now syncs,
/// waits at Synced, and a worker completes it at (not before) its time, with no request.
#[test]
fn issue20_admin_serve_db_completes_after_its_time_by_a_worker() {
    use crate::workers::{fresh_db, start_worker};
    let Some(db) = fresh_db("admin_complete_after") else {
        return;
    };
    let env = Env::new();
    let (d, state) = start(&env, &["--db", &db]);
    let alice = add_account(&state, "alice", "admin");
    let c = Client::new(&d);
    let a = c.session(&alice);
    let users = ["ann", "ben"];
    maildir_endpoint(&c, &a, &env, &users);
    let worker = start_worker(env.dir.path(), &db, "w0", 2, 10);
    let complete_at = mailferry_core::unix_now() + 12;
    let r = c.post(
        "/api/v1/batches",
        &a,
        json!({"name": "cutover", "migration_type": "file", "endpoint": "src",
               "csv": "EmailAddress,UserName,Password\nann@example.com,ann,\nben@example.com,ben,\n",
               "settings": {"start": {"when": "now"},
                            "completion": {"mode": "after", "at": mailferry_core::rfc3339(complete_at)}}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["job"]["running"], true, "{}", r.text);
    // Synced first, then waiting for its time (when the machine is quick enough to see it).
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let b = c.get("/api/v1/batches/cutover", &a).body;
        if b["job"]["scheduled_for"] == mailferry_core::rfc3339(complete_at) {
            assert_eq!(b["job"]["kind"], "complete", "{b}");
            assert_eq!(b["job"]["running"], true, "{b}");
            break;
        }
        if mailferry_core::unix_now() >= complete_at - 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{b}");
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_all_completed(&c, &a, &db, "cutover", &|| worker.log_text());
    let b = wait_run_ended(&c, &a, "cutover");
    assert_eq!(b["job"]["kind"], "complete", "{b}");
    assert!(b["job"]["error"].is_null(), "{b}");
    for u in users {
        let m = format!("{u}@example.com");
        let (at, by) = db_transition(&db, &m, "completing");
        assert!(at >= complete_at, "{m} completed early");
        assert!(by.starts_with("worker:"), "{by}");
    }
    let log = worker.log_text();
    assert_eq!(worker.stop(), Some(0), "{log}");
    assert_eq!(d.stop(), Some(0));
    assert_exports_equal_sources(&env, &users);
}
