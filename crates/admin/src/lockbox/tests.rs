//! The lockbox against a real volume, real accounts and both real audit logs: the
//! two-person rule, the approver's tenant scope, the step-up TOTP code, expiry (by the
//! clock given to each step, not by sleeping), and every refusal in both logs.

use super::*;
use crate::accounts::{totp, Accounts, Limits};
use mailferry_core::frame::MessageHeader;
use mailferry_core::profile::{CommitSettings, StoreSettings};
use mailferry_core::{Flags, FolderName, SourceId};
use std::time::Duration;

const MB: &str = "alice@example.com";
const BODY: &[u8] = b"Subject: hello\r\n\r\nthe lockbox test message\r\n";

struct World {
    _tmp: tempfile::TempDir,
    state: PathBuf,
    vol_dir: PathBuf,
    volume: Volume,
    accounts: Accounts,
    audit: AdminAudit,
    lockbox: Lockbox,
    /// (name, TOTP secret) of pat, the approver of example.com.
    pat_totp: String,
}

fn store_one(v: &Volume) {
    let mut s = v
        .session(&MailboxAddr::parse(MB).unwrap(), &CommitSettings::default())
        .unwrap();
    s.begin(MessageHeader {
        seq: 1,
        folder: FolderName::inbox(),
        source_id: SourceId::parse("1700000000.M1P1.host").unwrap(),
        flags: Flags::from_maildir("S").unwrap(),
        internal_date: 1_700_000_000,
        size: BODY.len() as u64,
    })
    .unwrap();
    s.write(BODY).unwrap();
    let sha: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, BODY)
        .as_ref()
        .try_into()
        .unwrap();
    s.finish(sha).unwrap();
    s.commit().unwrap();
}

use crate::accounts::tests::secret_of;

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let (vol_dir, key) = (tmp.path().join("vol"), tmp.path().join("vol.key"));
    Volume::init(&vol_dir, &key).unwrap();
    let volume = Volume::open(&vol_dir, &key, &StoreSettings::default()).unwrap();
    store_one(&volume);
    let accounts = Accounts::open(&state).unwrap();
    for (n, r) in [
        ("ann", Role::Admin),
        ("ada", Role::Admin),
        ("otto", Role::Auditor),
    ] {
        accounts.add(n, r).unwrap();
    }
    let pat = accounts
        .add_with_tenants("pat", Role::Approver, &["Example.com".into()])
        .unwrap();
    accounts
        .add_with_tenants("olga", Role::Approver, &["other.org".into()])
        .unwrap();
    World {
        audit: AdminAudit::open(&state).unwrap(),
        lockbox: Lockbox::open(&state),
        pat_totp: secret_of(pat.otpauth.expose()),
        _tmp: tmp,
        state,
        vol_dir,
        volume,
        accounts,
    }
}

impl World {
    fn ctx(&self, now: i64) -> Ctx<'_> {
        Ctx {
            accounts: &self.accounts,
            audit: &self.audit,
            volume: &self.volume,
            now,
        }
    }

    fn admin_events(&self) -> Vec<String> {
        self.audit
            .read()
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect()
    }

    fn volume_events(&self) -> Vec<String> {
        mailferry_audit::read_records(self.vol_dir.join("audit.jsonl"))
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .filter(|e| e.starts_with("access."))
            .collect()
    }
}

fn who(name: &str, role: Role) -> Actor {
    Actor {
        name: name.into(),
        role,
    }
}

fn ask(w: &World, now: i64, secs: u64) -> AccessRequest {
    w.lockbox
        .request(
            &w.ctx(now),
            &who("ann", Role::Admin),
            &NewRequest {
                mailbox: MB.into(),
                reason: "ticket 4711: the customer asked us to restore a lost message".into(),
                duration_secs: secs,
            },
        )
        .unwrap()
}

fn count(v: &[String], e: &str) -> usize {
    v.iter().filter(|x| *x == e).count()
}

#[test]
fn lockbox_two_people_the_tenant_scope_and_every_step_in_both_logs() {
    let w = world();
    let now = 1_900_000_000;
    let r = ask(&w, now, 4 * 3600);
    assert_eq!((r.state, r.key_level.as_str()), (State::Pending, "volume"));
    let key = w.lockbox.key_path(&r.id);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mode = std::fs::metadata(w.state.join(LOCKBOX_FILE)).unwrap();
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);

    // An auditor requests nothing; the requester does not decide; an approver of
    // another tenant does not either; an admin is no approver.
    let e = w
        .lockbox
        .request(
            &w.ctx(now),
            &who("otto", Role::Auditor),
            &NewRequest {
                mailbox: MB.into(),
                reason: "curious".into(),
                duration_secs: 60,
            },
        )
        .unwrap_err();
    assert_eq!(e.status(), 403, "{e}");
    for (actor, needle) in [
        (who("ann", Role::Admin), "cannot decide it"),
        (who("olga", Role::Approver), "approves for other.org only"),
        (who("ada", Role::Admin), "only an approver of example.com"),
    ] {
        let e = w
            .lockbox
            .decide(&w.ctx(now), &actor, &r.id, Decision::Approve(None))
            .unwrap_err();
        assert_eq!(e.status(), 403, "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    }
    // Nothing can be read while it is pending.
    let e = w
        .lockbox
        .open_grant(&w.ctx(now), &who("ann", Role::Admin), &r.id, "export")
        .unwrap_err();
    assert!(e.to_string().contains("waiting for an approver"), "{e}");
    assert_eq!(w.lockbox.get(&r.id).unwrap().state, State::Pending);

    // Step-up: a wrong code, then a good one, then the same one again.
    let pat = who("pat", Role::Approver);
    let t = totp(&w.pat_totp).unwrap();
    let l = Limits {
        now,
        max_failures: 5,
        lockout: Duration::from_secs(60),
    };
    let good = t.generate(now as u64).to_string();
    let wrong = if good == "000000" { "111111" } else { "000000" };
    assert_eq!(
        w.lockbox
            .step_up(&w.ctx(now), &pat, wrong, &l)
            .unwrap_err()
            .status(),
        403
    );
    w.lockbox.step_up(&w.ctx(now), &pat, &good, &l).unwrap();
    assert_eq!(
        w.lockbox
            .step_up(&w.ctx(now), &pat, &good, &l)
            .unwrap_err()
            .status(),
        403
    );

    let a = w
        .lockbox
        .decide(&w.ctx(now), &pat, &r.id, Decision::Approve(None))
        .unwrap();
    assert_eq!(a.state, State::Approved);
    assert_eq!(a.expires, Some(now + 4 * 3600));
    let e = w
        .lockbox
        .decide(&w.ctx(now), &pat, &r.id, Decision::Deny)
        .unwrap_err();
    assert_eq!(e.status(), 409, "a decided request is decided once: {e}");

    // Only the requester uses the grant; each use is recorded and the export holds the
    // message byte for byte.
    let e = w
        .lockbox
        .open_grant(&w.ctx(now + 10), &who("ada", Role::Admin), &r.id, "export")
        .unwrap_err();
    assert_eq!(e.status(), 403, "{e}");
    let o = w
        .lockbox
        .open_grant(&w.ctx(now + 10), &who("ann", Role::Admin), &r.id, "export")
        .unwrap();
    let mut out = Vec::new();
    let n = tar::write_mailbox(&w.volume, &o.mailbox, &mut out).unwrap();
    assert_eq!((n.messages, n.damaged), (1, 0));
    assert_eq!(out.len() % 512, 0);
    let name = b"alice@example.com/cur/1700000000.M1P1.host:2,S";
    assert_eq!(&out[..name.len()], name);
    assert_eq!(&out[512..512 + BODY.len()], BODY);
    assert_eq!(w.lockbox.get(&r.id).unwrap().uses.len(), 1);

    // At the expiry: refused, the key gone at the sweep, `expired` recorded once.
    let end = now + 4 * 3600;
    let e = w
        .lockbox
        .open_grant(&w.ctx(end), &who("ann", Role::Admin), &r.id, "export")
        .unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");
    assert!(key.exists());
    assert_eq!(
        w.lockbox.sweep(Some(&w.volume), &w.audit, end).unwrap(),
        std::slice::from_ref(&r.id)
    );
    assert!(!key.exists(), "the one-time key outlived its grant");
    assert!(w
        .lockbox
        .sweep(Some(&w.volume), &w.audit, end + 60)
        .unwrap()
        .is_empty());
    assert_eq!(w.lockbox.get(&r.id).unwrap().state, State::Expired);

    // A denial ends the request and its key at once.
    let r2 = ask(&w, end, 600);
    w.lockbox
        .decide(&w.ctx(end), &pat, &r2.id, Decision::Deny)
        .unwrap();
    assert!(!w.lockbox.key_path(&r2.id).exists());
    let e = w
        .lockbox
        .open_grant(&w.ctx(end), &who("ann", Role::Admin), &r2.id, "export")
        .unwrap_err();
    assert!(e.to_string().contains("denied"), "{e}");

    let admin = w.admin_events();
    let vol = w.volume_events();
    for (a, v, n) in [
        ("admin.access.requested", "access.requested", 2),
        ("admin.access.approved", "access.approved", 1),
        ("admin.access.denied", "access.denied", 1),
        ("admin.access.used", "access.used", 1),
        ("admin.access.expired", "access.expired", 1),
    ] {
        assert_eq!(
            (count(&admin, a), count(&vol, v)),
            (n, n),
            "{a} / {v}: {admin:?} {vol:?}"
        );
    }
    // Refusals: the auditor's request, three deciders, four reads (pending, another
    // admin, expired, denied), in both logs (plus the admin log's two step-up refusals).
    assert_eq!(count(&vol, "access.refused"), 8, "{vol:?}");
    assert_eq!(count(&admin, "admin.access.refused"), 10, "{admin:?}");
    // The volume's log names the mailbox by pseudonym only, and keeps no reason text.
    let raw = std::fs::read_to_string(w.vol_dir.join("audit.jsonl")).unwrap();
    assert!(!raw.contains(MB) && !raw.contains("ticket 4711"), "{raw}");
    mailferry_audit::verify(w.vol_dir.join("audit.jsonl")).unwrap();
    w.audit.verify().unwrap();
}

/// A request nobody decides lapses after PENDING_LAPSE_SECS: it can no longer be
/// approved, its one-time key is deleted, and the lapse is recorded once in both logs.
#[test]
fn lockbox_an_undecided_request_lapses_with_its_key() {
    let w = world();
    let now = mailferry_core::unix_now();
    let r = ask(&w, now, 3600);
    let key = w.lockbox.key_path(&r.id);
    let before = now + PENDING_LAPSE_SECS - 1;
    assert_eq!(
        w.lockbox.get(&r.id).unwrap().state_at(before),
        State::Pending
    );
    assert!(w
        .lockbox
        .sweep(Some(&w.volume), &w.audit, before)
        .unwrap()
        .is_empty());
    assert!(key.exists(), "the key went before the request lapsed");

    let lapse = now + PENDING_LAPSE_SECS;
    let pat = who("pat", Role::Approver);
    let e = w
        .lockbox
        .decide(&w.ctx(lapse), &pat, &r.id, Decision::Approve(None))
        .unwrap_err();
    assert_eq!(e.status(), 409, "{e}");
    assert!(e.to_string().contains("expired"), "{e}");
    assert_eq!(
        w.lockbox.sweep(Some(&w.volume), &w.audit, lapse).unwrap(),
        std::slice::from_ref(&r.id)
    );
    assert!(!key.exists(), "the one-time key outlived its request");
    assert!(w
        .lockbox
        .sweep(Some(&w.volume), &w.audit, lapse + 60)
        .unwrap()
        .is_empty());
    assert_eq!(w.lockbox.get(&r.id).unwrap().state, State::Expired);
    assert_eq!(count(&w.admin_events(), "admin.access.expired"), 1);
    assert_eq!(count(&w.volume_events(), "access.expired"), 1);
}

#[test]
fn lockbox_requests_check_their_input() {
    let w = world();
    let ann = who("ann", Role::Admin);
    let bad = |mailbox: &str, reason: &str, secs: u64| {
        w.lockbox
            .request(
                &w.ctx(1_900_000_000),
                &ann,
                &NewRequest {
                    mailbox: mailbox.into(),
                    reason: reason.into(),
                    duration_secs: secs,
                },
            )
            .unwrap_err()
    };
    assert_eq!(bad("nobody@example.com", "why", 60).status(), 404);
    assert_eq!(bad("not an address", "why", 60).status(), 422);
    assert_eq!(bad(MB, "  ", 60).status(), 422);
    assert_eq!(bad(MB, "why", 5).status(), 422);
    assert_eq!(bad(MB, "why", 8 * 24 * 3600).status(), 422);
    assert!(w.lockbox.list().unwrap().is_empty());
    assert_eq!(parse_duration("4h").unwrap(), 14400);
    assert_eq!(parse_duration("20s").unwrap(), 20);
    assert!(parse_duration("soon").is_err());
}

#[test]
fn lockbox_tenant_key_upload_is_checked_like_a_key_file() {
    let tmp = tempfile::tempdir().unwrap();
    let k = TenantSecret::generate("example.com");
    let p = tmp.path().join("t.key");
    k.write_new(&p).unwrap();
    let text = std::fs::read(&p).unwrap();
    let parsed = parse_tenant_key(&text).unwrap();
    assert_eq!(parsed.tenant(), "example.com");
    assert_eq!(parsed.public().fingerprint(), k.public().fingerprint());
    let edited = String::from_utf8(text.clone())
        .unwrap()
        .replace("tenant: example.com", "tenant: example.org");
    // The tenant is not part of the fingerprint: the edit is caught at approval
    // (the key does not open the mailbox); a damaged secret is caught here.
    assert!(parse_tenant_key(edited.as_bytes()).is_ok());
    // A digit in the middle of the secret (the last byte's top bits are clamped away).
    let mut damaged = text.clone();
    let at = damaged.len() - 30;
    damaged[at] = if damaged[at] == b'0' { b'1' } else { b'0' };
    assert!(parse_tenant_key(&damaged).is_err());
    assert!(parse_tenant_key(b"\x00\x01").is_err());
}

// === through the whole router (JSON API) ===

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    session: &(String, String),
    body: &str,
) -> (u16, String, Vec<u8>) {
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("cookie", &session.0)
        .header("x-csrf-token", &session.1)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status().as_u16();
    let ty = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 24).await.unwrap();
    (status, ty, bytes.to_vec())
}

/// A session of a new account whose one-time password is replaced: (cookie, csrf),
/// and its TOTP checker.
async fn session_of(
    st: &crate::AdminState,
    name: &str,
    role: Role,
    tenants: &[String],
    now: i64,
) -> ((String, String), totp_rs::Totp) {
    let new = st.accounts().add_with_tenants(name, role, tenants).unwrap();
    let t = totp(&secret_of(new.otpauth.expose())).unwrap();
    let code = t.generate(now as u64).to_string();
    let (cookie, v) = crate::session::login(st, name, new.password.expose(), &code, None)
        .await
        .unwrap();
    let own = format!("{name}'s own password");
    crate::session::change_password(
        st,
        &v,
        crate::session::PasswordChange {
            current: new.password.expose(),
            totp: None,
            new: &own,
            confirm: &own,
        },
    )
    .await
    .unwrap();
    let cookie = cookie
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    ((cookie, v.csrf.clone()), t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockbox_api_request_approve_with_a_fresh_code_and_export() {
    let tmp = tempfile::tempdir().unwrap();
    let (vol, key) = (tmp.path().join("vol"), tmp.path().join("vol.key"));
    Volume::init(&vol, &key).unwrap();
    store_one(&Volume::open(&vol, &key, &StoreSettings::default()).unwrap());
    let cfg = crate::AdminConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        tmp.path().join("state"),
        vol.clone(),
        key,
    );
    let st = crate::AdminState::open(cfg).unwrap();
    let app = crate::router(st.clone());
    let now = mailferry_core::unix_now();
    let (ann, _) = session_of(&st, "ann", Role::Admin, &[], now).await;
    let (pat, pat_t) = session_of(&st, "pat", Role::Approver, &["example.com".into()], now).await;

    // An approver requests nothing (refused before the body is read).
    let body = format!(r#"{{"mailbox":"{MB}","reason":"ticket 4711","duration":"1h"}}"#);
    let (s, _, _) = call(&app, "POST", "/api/v1/access", &pat, &body).await;
    assert_eq!(s, 403);
    let (s, _, b) = call(&app, "POST", "/api/v1/access", &ann, &body).await;
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
    let r: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(r["state_now"], "pending");

    let approve = format!("/api/v1/access/{id}/approve");
    let export = format!("/api/v1/access/{id}/export");
    // Not before the approval; not by the requester; not without a fresh code.
    let (s, _, b) = call(&app, "POST", &export, &ann, "").await;
    assert_eq!(s, 409, "{}", String::from_utf8_lossy(&b));
    let own = format!(r#"{{"totp":"{}"}}"#, pat_t.generate(now as u64 + 30));
    let (s, _, _) = call(&app, "POST", &approve, &ann, &own).await;
    assert_eq!(s, 403, "the requester approved its own request");
    let (s, _, b) = call(&app, "POST", &approve, &pat, "{}").await;
    assert_eq!(s, 403, "{}", String::from_utf8_lossy(&b));
    let login_code = format!(r#"{{"totp":"{}"}}"#, pat_t.generate(now as u64));
    let (s, _, _) = call(&app, "POST", &approve, &pat, &login_code).await;
    assert_eq!(s, 403, "the login's code was accepted again");
    let (s, _, b) = call(&app, "POST", &approve, &pat, &own).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));

    let (s, ty, tar) = call(&app, "POST", &export, &ann, "").await;
    assert_eq!((s, ty.as_str()), (200, "application/x-tar"));
    assert_eq!(&tar[512..512 + BODY.len()], BODY);
    let (s, _, _) = call(&app, "POST", &export, &pat, "").await;
    assert_eq!(s, 403, "the approver used the requester's grant");

    let (s, _, b) = call(&app, "GET", "/api/v1/access", &pat, "").await;
    assert_eq!(s, 200);
    let list: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(list[0]["state_now"], "approved");
    assert_eq!(list[0]["uses"].as_array().unwrap().len(), 1);
    assert_eq!(list[0]["decided_by"], "pat");
    // The mailbox page shows the history.
    let ev: Vec<String> = st
        .audit()
        .read()
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    for e in [
        "admin.access.requested",
        "admin.access.approved",
        "admin.access.used",
        "admin.access.refused",
    ] {
        assert!(ev.iter().any(|x| x == e), "no {e} in {ev:?}");
    }
}

#[test]
fn lockbox_customer_key_grant_is_cryptographic_and_ends_with_its_key() {
    let w = world();
    let tenant = TenantSecret::generate("example.com");
    w.volume
        .register_tenant_key("example.com", &tenant.public())
        .unwrap();
    // The volume key alone no longer reads the mailbox.
    let mb = MailboxAddr::parse(MB).unwrap();
    let mut sink = Vec::new();
    assert!(tar::write_mailbox(&w.volume, &mb, &mut sink)
        .map(|n| n.damaged > 0 || n.messages == 0)
        .unwrap_or(true));
    let now = 1_900_000_000;
    let r = ask(&w, now, 600);
    assert_eq!(r.key_level, "customer");
    assert_eq!(
        r.tenant_fingerprint.as_deref(),
        Some(tenant.public().fingerprint().as_str())
    );
    let pat = who("pat", Role::Approver);
    // Without the tenant key, or with another tenant's, nothing is granted.
    let e = w
        .lockbox
        .decide(&w.ctx(now), &pat, &r.id, Decision::Approve(None))
        .unwrap_err();
    assert!(e.to_string().contains("tenant key of example.com"), "{e}");
    let other = TenantSecret::generate("example.com");
    let e = w
        .lockbox
        .decide(&w.ctx(now), &pat, &r.id, Decision::Approve(Some(other)))
        .unwrap_err();
    assert_eq!(e.status(), 422, "{e}");
    assert_eq!(w.lockbox.get(&r.id).unwrap().state, State::Pending);
    let a = w
        .lockbox
        .decide(
            &w.ctx(now),
            &pat,
            &r.id,
            Decision::Approve(Some(parse_tenant_key(&key_file_text(&tenant)).unwrap())),
        )
        .unwrap();
    assert!(a.bundle.is_some());
    let stored = std::fs::read_to_string(w.state.join(LOCKBOX_FILE)).unwrap();
    assert!(
        !stored.contains(&hex_secret(&tenant)),
        "the tenant key was stored"
    );

    // The volume reads the mailbox through the grant now.
    let o = w
        .lockbox
        .open_grant(&w.ctx(now + 5), &who("ann", Role::Admin), &r.id, "export")
        .unwrap();
    let mut out = Vec::new();
    let n = tar::write_mailbox(&w.volume, &o.mailbox, &mut out).unwrap();
    assert_eq!((n.messages, n.damaged), (1, 0));
    assert_eq!(&out[512..512 + BODY.len()], BODY);

    // After the expiry the key file is gone: even with the state file edited back to
    // "approved", the stored bundle opens nothing.
    let end = now + 600;
    w.lockbox.sweep(Some(&w.volume), &w.audit, end).unwrap();
    assert!(!w.lockbox.key_path(&r.id).exists());
    let path = w.state.join(LOCKBOX_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"expired\"", "\"approved\"")).unwrap();
    let e = w
        .lockbox
        .open_grant(&w.ctx(end - 1), &who("ann", Role::Admin), &r.id, "export")
        .unwrap_err();
    assert!(e.to_string().contains("one-time key is gone"), "{e}");
}

fn hex_secret(t: &TenantSecret) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("k");
    t.write_new(&p).unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("secret:"))
        .unwrap()
        .trim()
        .to_string()
}

fn key_file_text(t: &TenantSecret) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("k");
    t.write_new(&p).unwrap();
    std::fs::read(&p).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockbox_page_approval_with_a_key_upload() {
    let tmp = tempfile::tempdir().unwrap();
    let (vol, key) = (tmp.path().join("vol"), tmp.path().join("vol.key"));
    Volume::init(&vol, &key).unwrap();
    let tenant = TenantSecret::generate("example.com");
    {
        let v = Volume::open(&vol, &key, &StoreSettings::default()).unwrap();
        store_one(&v);
        v.register_tenant_key("example.com", &tenant.public())
            .unwrap();
    }
    let cfg = crate::AdminConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        tmp.path().join("state"),
        vol.clone(),
        key,
    );
    let st = crate::AdminState::open(cfg).unwrap();
    let app = crate::router(st.clone());
    let now = mailferry_core::unix_now();
    let (ann, _) = session_of(&st, "ann", Role::Admin, &[], now).await;
    let (pat, pat_t) = session_of(&st, "pat", Role::Approver, &["example.com".into()], now).await;
    let body = format!(r#"{{"mailbox":"{MB}","reason":"ticket 4711","duration":"1h"}}"#);
    let (s, _, b) = call(&app, "POST", "/api/v1/access", &ann, &body).await;
    assert_eq!(s, 201);
    let id = serde_json::from_slice::<serde_json::Value>(&b).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let form = |code: &str| {
        let mut m = String::new();
        for (name, file, value) in [
            ("csrf", None, pat.1.clone()),
            ("totp", None, code.to_string()),
            (
                "tenant_key",
                Some("example.com.key"),
                String::from_utf8(key_file_text(&tenant)).unwrap(),
            ),
        ] {
            m.push_str("--XyZ\r\n");
            match file {
                Some(f) => m.push_str(&format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )),
                None => m.push_str(&format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n")),
            }
            m.push_str(&value);
            m.push_str("\r\n");
        }
        m.push_str("--XyZ--\r\n");
        m
    };
    let post = |body: String| {
        use tower::ServiceExt;
        let req = axum::http::Request::builder()
            .method("POST")
            .uri(format!("/access/{id}/approve"))
            .header("cookie", &pat.0)
            .header("content-type", "multipart/form-data; boundary=XyZ")
            .body(axum::body::Body::from(body))
            .unwrap();
        let app = app.clone();
        async move {
            let r = app.oneshot(req).await.unwrap();
            let s = r.status().as_u16();
            let loc = r
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_string());
            let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
            (s, loc, String::from_utf8_lossy(&b).into_owned())
        }
    };
    let (s, _, page) = post(form("000000")).await;
    assert_eq!(s, 403, "{page}");
    assert!(page.contains("id=\"decide-error\""), "{page}");
    let (s, loc, page) = post(form(&pat_t.generate(now as u64 + 30).to_string())).await;
    assert_eq!(s, 303, "{page}");
    assert!(loc.unwrap().ends_with("?done=approved"));
    assert_eq!(st.lockbox().get(&id).unwrap().state, State::Approved);
}
