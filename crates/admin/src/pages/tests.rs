//! Unit tests of the pages: the wizard's draft and checks, and escaping in templates.

use super::wizard::{Draft, WizardPage};
use super::Nav;
use askama::Template;
use std::collections::HashMap;

fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn nav(admin: bool) -> Nav {
    Nav {
        name: "ann".into(),
        role: if admin { "admin" } else { "auditor" }.into(),
        csrf: "tok\"en".into(),
        admin,
        must_change: false,
    }
}

#[test]
fn step_one_checks_name_and_type_and_keeps_values() {
    let mut d = Draft::new();
    d.apply(1, &form(&[("name", " bad name! "), ("kind", "mbox")]));
    assert_eq!(d.name, "bad name!");
    assert_eq!(d.kind, "mbox");
    let e = d.check_name_type();
    assert!(e["name"].contains("batch name"), "{e:?}");
    d.apply(1, &form(&[("name", "spring-2026"), ("kind", "floppy")]));
    let e = d.check_name_type();
    assert!(!e.contains_key("name") && e.contains_key("kind"), "{e:?}");
}

#[test]
fn settings_report_every_bad_field_at_once() {
    let mut d = Draft::new();
    d.apply(
        4,
        &form(&[
            ("profile", "relative.toml"),
            ("bad_item_limit", "-1"),
            ("large_item_limit", "huge"),
            ("throttle", "0"),
            ("concurrency", "100"),
        ]),
    );
    let e = d.check_settings();
    let keys: Vec<_> = e.keys().copied().collect();
    assert_eq!(
        keys,
        [
            "bad_item_limit",
            "concurrency",
            "large_item_limit",
            "profile",
            "throttle"
        ]
    );
    assert!(e["large_item_limit"].contains("not a size"), "{e:?}");
    d.apply(
        4,
        &form(&[
            ("profile", ""),
            ("bad_item_limit", "5"),
            ("large_item_limit", "35MB"),
            ("throttle", ""),
            ("concurrency", "2"),
        ]),
    );
    assert!(d.check_settings().is_empty());
}

#[test]
fn schedule_times_are_utc_and_recipients_addresses() {
    let mut d = Draft::new();
    d.apply(
        5,
        &form(&[
            ("start", "later"),
            ("start_at", ""),
            ("complete", "after"),
            ("complete_after", "2030-07-01T22:00"),
            ("recipients", "ops@example.com, not an address"),
        ]),
    );
    let e = d.check_schedule();
    assert!(
        e.contains_key("start_at") && e.contains_key("recipients"),
        "{e:?}"
    );
    assert!(!e.contains_key("complete_after"), "{e:?}");
    assert_eq!(d.complete_after_rfc3339().unwrap(), "2030-07-01T22:00:00Z");
}

#[test]
fn a_new_csv_drops_the_checked_rows_and_back_keeps_it() {
    let mut d = Draft::new();
    d.apply(
        3,
        &form(&[("csv_text", "EmailAddress,UserName\r\na@x.org,a\r\n")]),
    );
    assert_eq!(d.csv, "EmailAddress,UserName\na@x.org,a\n");
    d.users = vec![(2, "a@x.org".into(), "a".into())];
    // The same text again (Back, then Next): the checked rows stay.
    d.apply(
        3,
        &form(&[
            ("csv_text", "EmailAddress,UserName\na@x.org,a\n"),
            ("csv_file", ""),
        ]),
    );
    assert_eq!(d.users.len(), 1);
    // An uploaded file wins over the text box and needs a new check.
    d.apply(
        3,
        &form(&[
            ("csv_text", "x"),
            ("csv_file", "EmailAddress,UserName\nb@x.org,b\n"),
        ]),
    );
    assert!(d.csv.contains("b@x.org") && d.users.is_empty());
}

#[test]
fn first_problem_sends_the_review_back_to_the_right_step() {
    let mut d = Draft::new();
    assert_eq!(d.first_problem().unwrap().0, 1);
    d.name = "b1".into();
    assert_eq!(d.first_problem().unwrap().0, 2);
    d.endpoint = "ep".into();
    assert_eq!(d.first_problem().unwrap().0, 3);
    d.users = vec![(2, "a@x.org".into(), "a".into())];
    d.large_item_limit = "lots".into();
    assert_eq!(d.first_problem().unwrap().0, 4);
    d.large_item_limit.clear();
    assert!(d.first_problem().is_none());
}

#[test]
fn the_wizard_page_escapes_the_draft_and_disables_start_for_auditors() {
    let mut d = Draft::new();
    d.name = "<script>alert(1)</script>".into();
    d.users = vec![(2, "a@x.org".into(), "a".into())];
    let html = WizardPage::new(&nav(false), 6, d.clone()).render().unwrap();
    assert!(
        !html.contains("<script>alert"),
        "unescaped draft in the page"
    );
    assert!(html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"));
    // The CSRF token is an attribute value: its quote is escaped too.
    assert!(!html.contains("tok\"en"));
    assert!(
        html.contains("id=\"start\" disabled"),
        "auditor's Start is enabled"
    );
    let html = WizardPage::new(&nav(true), 6, d).render().unwrap();
    assert!(html.contains("id=\"start\">"), "admin's Start is disabled");
    // The hidden draft round-trips.
    assert!(html.contains("name=\"draft\" value=\"{"));
}

#[test]
fn issue22_wizard_buttons_are_in_visual_order_and_enter_means_next() {
    let mut d = Draft::new();
    d.name = "b1".into();
    for step in 2..=6u8 {
        let html = WizardPage::new(&nav(true), step, d.clone())
            .render()
            .unwrap();
        let at = |needle: &str| {
            html.find(needle)
                .unwrap_or_else(|| panic!("step {step}: no {needle}"))
        };
        let (back, cancel) = (at("id=\"back\""), at(">Cancel</a>"));
        let forward = at(if step == 6 {
            "id=\"start\""
        } else {
            "id=\"next\""
        });
        assert!(
            back < cancel && cancel < forward,
            "step {step}: tab order Back, Cancel, then Next/Start"
        );
        assert!(html.contains("actions wizard-actions"), "step {step}");
        // The form's first submit button (what Enter presses) goes forward.
        let form = at("action=\"/wizard\"");
        let first = form + html[form..].find("type=\"submit\"").unwrap();
        assert!(
            html[first..].starts_with("type=\"submit\" name=\"nav\" value=\"next\"")
                || html[first..].starts_with("type=\"submit\" name=\"nav\" value=\"start\""),
            "step {step}: the first submit button is {}",
            &html[first..first + 60]
        );
    }
}

#[test]
fn issue22_connection_test_advice_speaks_the_pages_words() {
    for cli in [
        "/srv/mail exists (give --user to check a mailbox)",
        "not a Maildir: it has neither cur/ nor new/ (point --source at the mailbox root)",
        "--user \"a/b\": cannot be put in a path",
    ] {
        let ui = super::wizard::ui_words(cli);
        assert!(!ui.contains("--"), "{ui}");
    }
}

#[test]
fn issue22_the_header_offers_auditors_no_wizard_and_one_time_passwords_nothing() {
    let v = |admin: bool, must_change: bool| Nav {
        must_change,
        ..nav(admin)
    };
    let page = |n: Nav| {
        super::ErrorPage {
            nav: Some(n),
            title: "Not found",
            message: "m".into(),
            back: "/dashboard".into(),
        }
        .render()
        .unwrap()
    };
    let admin = page(v(true, false));
    assert!(admin.contains("href=\"/wizard\""));
    assert!(admin.contains("href=\"/audit\"") && admin.contains("href=\"/account\""));
    let auditor = page(v(false, false));
    assert!(
        !auditor.contains("href=\"/wizard\""),
        "the auditor is offered the wizard"
    );
    assert!(auditor.contains("href=\"/audit\""));
    let forced = page(v(true, true));
    for link in ["/wizard", "/audit", "/account\"", "/dashboard\">Dashboard"] {
        assert!(
            !forced.contains(link),
            "{link} offered before the password change"
        );
    }
}

// === the forced password change, through the whole router ===

struct Svc {
    app: axum::Router,
    state: crate::AdminState,
    _dir: tempfile::TempDir,
}

impl Svc {
    /// The whole admin router over a fresh state directory.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::AdminConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.path().join("state"),
            dir.path().join("vol"),
            dir.path().join("key"),
        );
        let state = crate::AdminState::open(cfg).unwrap();
        Svc {
            app: crate::router(state.clone()),
            state,
            _dir: dir,
        }
    }
}

async fn call(
    s: &Svc,
    method: &str,
    uri: &str,
    cookie: Option<&str>,
    csrf: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    use tower::ServiceExt;
    let mut b = axum::http::Request::builder().method(method).uri(uri);
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    if let Some(t) = csrf {
        b = b.header("x-csrf-token", t);
    }
    let ct = if body.starts_with('{') {
        "application/json"
    } else {
        "application/x-www-form-urlencoded"
    };
    let req = b
        .header("content-type", ct)
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let r = s.app.clone().oneshot(req).await.unwrap();
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    (
        status,
        location,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[tokio::test]
async fn issue22_a_one_time_password_opens_nothing_but_its_change() {
    let s = Svc::new();
    let new = s.state.accounts().add("ann", crate::Role::Admin).unwrap();
    let secret = new.otpauth.expose().split("secret=").nth(1).unwrap();
    let t = crate::accounts::totp(secret.split('&').next().unwrap()).unwrap();
    let now = mailferry_core::unix_now();
    let pw = new.password.expose().to_string();
    let (cookie, v) = crate::session::login(
        &s.state,
        "ann",
        &pw,
        &t.generate((now - 30) as u64).to_string(),
        None,
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
    assert!(v.must_change_password);
    let c = Some(cookie.as_str());
    // Pages go to the change form; the API refuses with its own code; writes too.
    for page in ["/dashboard", "/wizard", "/audit", "/account"] {
        let (st, loc, _) = call(&s, "GET", page, c, None, "").await;
        assert_eq!((st, loc.as_str()), (303, "/account/password"), "{page}");
    }
    let (st, _, body) = call(&s, "GET", "/api/v1/batches", c, None, "").await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("password_change_required"), "{body}");
    let (st, _, body) = call(&s, "POST", "/api/v1/endpoints", c, Some(&v.csrf), "{}").await;
    assert_eq!(st, 403, "{body}");
    let (st, _, body) = call(&s, "GET", "/account/password", c, None, "").await;
    assert_eq!(st, 200);
    assert!(body.contains("One-time password") && !body.contains("href=\"/wizard\""));
    let (st, _, body) = call(&s, "GET", "/api/v1/session", c, None, "").await;
    assert_eq!(st, 200);
    assert!(body.contains("\"must_change_password\":true"), "{body}");
    // A weak new password is refused and changes nothing.
    let body = format!(r#"{{"current_password":"{pw}","new_password":"short"}}"#);
    let (st, _, _) = call(
        &s,
        "POST",
        "/api/v1/account/password",
        c,
        Some(&v.csrf),
        &body,
    )
    .await;
    assert_eq!(st, 422);
    let (st, _, _) = call(&s, "GET", "/api/v1/batches", c, None, "").await;
    assert_eq!(st, 403);
    let body =
        format!(r#"{{"current_password":"{pw}","new_password":"correct horse battery staple"}}"#);
    let (st, _, out) = call(
        &s,
        "POST",
        "/api/v1/account/password",
        c,
        Some(&v.csrf),
        &body,
    )
    .await;
    assert_eq!(st, 204, "{out}");
    let (st, _, _) = call(&s, "GET", "/api/v1/batches", c, None, "").await;
    assert_eq!(st, 200, "the session may work once the password is changed");
    let (st, _, _) = call(&s, "GET", "/dashboard", c, None, "").await;
    assert_eq!(st, 200);
    let log: Vec<String> = s
        .state
        .audit()
        .read()
        .unwrap()
        .iter()
        .map(|e| e.event.clone())
        .collect();
    for ev in [
        "admin.refused",
        "admin.password.refused",
        "admin.password.changed",
    ] {
        assert!(log.iter().any(|e| e == ev), "no {ev} in {log:?}");
    }
    // The old password no longer logs in; the new one does.
    let code = t.generate(now as u64).to_string();
    assert!(crate::session::login(&s.state, "ann", &pw, &code, None)
        .await
        .is_err());
    let (_, v) =
        crate::session::login(&s.state, "ann", "correct horse battery staple", &code, None)
            .await
            .unwrap();
    assert!(!v.must_change_password);
}

/// A logged-in admin whose one-time password was already replaced: its cookie.
async fn admin_session(s: &Svc) -> String {
    let new = s.state.accounts().add("ann", crate::Role::Admin).unwrap();
    let secret = new.otpauth.expose().split("secret=").nth(1).unwrap();
    let t = crate::accounts::totp(secret.split('&').next().unwrap()).unwrap();
    let code = t.generate(mailferry_core::unix_now() as u64).to_string();
    let (cookie, v) = crate::session::login(&s.state, "ann", new.password.expose(), &code, None)
        .await
        .unwrap();
    let change = crate::session::PasswordChange {
        current: new.password.expose(),
        totp: None,
        new: "a password of ann's own",
        confirm: "a password of ann's own",
    };
    crate::session::change_password(&s.state, &v, change)
        .await
        .unwrap();
    cookie
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn issue22_the_audit_page_pages_the_admin_log_newest_first() {
    let s = Svc::new();
    let cookie = admin_session(&s).await;
    for i in 0..120 {
        s.state
            .audit()
            .record("tester", "test.event", serde_json::json!({"n": i}))
            .unwrap();
    }
    let total = s.state.audit().read().unwrap().len() as u64;
    let (st, _, first) = call(&s, "GET", "/audit", Some(&cookie), None, "").await;
    assert_eq!(st, 200);
    assert!(first.contains("hash chain is intact"), "no verify status");
    assert!(first.contains("page 1 of 3"), "{first}");
    let seqs = |html: &str| -> Vec<u64> {
        html.split("<tr><td class=\"num\">")
            .skip(1)
            .map(|r| r.split('<').next().unwrap().parse().unwrap())
            .collect()
    };
    let p1 = seqs(&first);
    assert_eq!(p1.len(), super::audit::PAGE_SIZE);
    assert_eq!(p1[0], total, "the newest record first");
    assert!(p1.windows(2).all(|w| w[0] == w[1] + 1), "{p1:?}");
    assert!(first.contains("href=\"/audit?page=2\"") && !first.contains("id=\"newer\""));
    let (_, _, second) = call(&s, "GET", "/audit?page=2", Some(&cookie), None, "").await;
    let p2 = seqs(&second);
    assert_eq!(p2[0], total - 50);
    assert!(second.contains("href=\"/audit?page=1\"") && second.contains("href=\"/audit?page=3\""));
    let (_, _, last) = call(&s, "GET", "/audit?page=99", Some(&cookie), None, "").await;
    let p3 = seqs(&last);
    assert_eq!(
        *p3.last().unwrap(),
        1,
        "the last page ends with the genesis record"
    );
    assert!(!last.contains("id=\"older\""));
    // A broken chain shows on the page.
    let path = s.state.audit().path().to_path_buf();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("\"n\":7", "\"n\":8", 1)).unwrap();
    let (_, _, broken) = call(&s, "GET", "/audit", Some(&cookie), None, "").await;
    assert!(
        broken.contains("does not verify"),
        "a tampered log shown as verified"
    );
}

// === the review's destination with --db ===

/// Issue 20: with `--db --proxy` the review names the store the workers stream to (and
/// raises no volume problem: the service cannot check the store's key); with `--db`
/// alone it says that the workers must open the service's volume at the same path.
/// What this adds gives no command-line advice.
#[tokio::test]
async fn issue20_the_review_names_the_store_with_proxy_and_the_volume_path_without() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = crate::AdminConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("state"),
        dir.path().join("vol"),
        dir.path().join("key"),
    );
    cfg.db = Some(mailferry_coord::DbUrl::new("postgres://mf@127.0.0.1:1/none").unwrap());
    let mut d = Draft::new();
    d.users = vec![(2, "amy@example.com".into(), "amy".into())];
    let no_cli = |facts: &[(&str, String)]| {
        for (k, v) in facts {
            assert!(!v.contains("--") && !v.contains('`'), "{k}: {v}");
        }
    };

    let (facts, problem) = super::wizard::destination_facts(&cfg, &d).await;
    let workers = facts
        .iter()
        .find(|(k, _)| *k == "Workers")
        .expect("a Workers fact");
    assert!(
        workers
            .1
            .contains(&dir.path().join("vol").display().to_string()),
        "{facts:?}"
    );
    assert_eq!(facts[0].0, "Destination volume", "{facts:?}");
    assert!(problem.is_some(), "no volume there: the review says so");
    no_cli(std::slice::from_ref(workers));

    cfg.proxy = Some(crate::ProxyDestination {
        url: "https://store.example.com:8443".into(),
        ca: dir.path().join("ca.pem"),
        token_file: dir.path().join("agent.token"),
    });
    let (facts, problem) = super::wizard::destination_facts(&cfg, &d).await;
    assert_eq!(facts[0].0, "Destination", "{facts:?}");
    assert!(
        facts[0].1.contains("https://store.example.com:8443"),
        "{facts:?}"
    );
    assert_eq!(facts[1], ("Tenant", "example.com".to_string()));
    assert!(!facts.iter().any(|(k, _)| *k == "Workers"), "{facts:?}");
    assert_eq!(problem, None);
    no_cli(&facts);
    // The batches it creates record the store, with absolute paths.
    match cfg.batch_destination() {
        mailferry_control::moving::Destination::Remote { url, ca, .. } => {
            assert_eq!(url, "https://store.example.com:8443");
            assert!(ca.is_absolute());
        }
        other => panic!("{other:?}"),
    }
    // Without --db, --proxy is not used (clap refuses it; the config ignores it).
    cfg.db = None;
    assert!(matches!(
        cfg.batch_destination(),
        mailferry_control::moving::Destination::Local { .. }
    ));
}
