//! Issue 10, the wizard in a real browser: `mailferry admin serve` on loopback TLS,
//! Debian's chromium driven headless by playwright-core (`tests/browser/wizard.mjs`).
//! An admin logs in with password and TOTP, walks the six wizard steps on a generated
//! Maildir, watches the move reach Synced on the live dashboard, completes it, opens
//! the report with its throughput plot, logs out; an auditor then finds no lifecycle
//! buttons and the wizard refused (issue 22). Each account's first login replaces its
//! one-time password. The mailbox has one message over the
//! wizard's large-item size, skipped and approved on the dashboard. The volume must then
//! hold exactly the source's other messages. One screenshot per step is kept under
//! `$CARGO_TARGET_TMPDIR/browser-screenshots`.
//!
//! Then `tests/browser/issue22.mjs` runs against the same service with two new accounts:
//! the first-login password change, the authenticator re-enrolment, the wizard saving
//! nothing before its last step (and naming the destination), and the auditor's audit
//! page; its screenshots go to `browser-screenshots/issue22`.
//!
//! Then `tests/browser/lockbox.mjs` (issue 21): example.com is given its own key (`tenant
//! key init`), a requester asks for access to alice's mailbox, an approver of
//! example.com (second account, fresh TOTP code, uploading the tenant key) approves, the
//! download works during the 20 s grant and is refused after it; the requester cannot
//! approve its own request; every step is on the audit page and the mailbox's page, in
//! the volume's audit log (read here, `audit verify` passing) and in `mailferry access
//! list` on the command line. Screenshots in `browser-screenshots/lockbox`.
//!
//! Needs `node` and `chromium` (`./test.sh` installs them); without them the test fails
//! and says so.

use crate::util::*;
use mailferry_bench::sample::{write_maildir, SampleSpec, SizeModel};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const CHROMIUM: &str = "/usr/bin/chromium";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn require(ok: bool, what: &str) {
    assert!(
        ok,
        "{what} is missing: the browser test needs node (with npm) and Debian's chromium; \
         install them with `apt-get install nodejs npm chromium` (./test.sh does)"
    );
}

fn has_command(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `mailferry admin add NAME --role ROLE`: the one-time password and the otpauth URI
/// it prints.
fn add_account(state: &Path, name: &str, role: &str) -> (String, String) {
    let o = run(mailferry()
        .args(["admin", "add", name, "--role", role, "--state"])
        .arg(state));
    assert!(o.status.success(), "{}", describe(&o));
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let uri = text
        .split_whitespace()
        .find(|w| w.starts_with("otpauth://"))
        .unwrap_or_else(|| panic!("no otpauth:// URI in the output of admin add:\n{text}"))
        .to_string();
    let password = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("password:"))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| panic!("no `password:` line in the output of admin add:\n{text}"));
    (password, uri)
}

/// One browser scenario at a time: two chromiums and two services at once would
/// starve each other on a small machine.
static ONE_BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Checks node and chromium are there and the npm packages of `tests/browser` are
/// installed (`npm ci` when one is missing); returns that directory.
fn browser_tools(chromium: &str) -> PathBuf {
    require(Path::new(chromium).exists(), chromium);
    require(has_command("node"), "node");
    let browser_dir = repo().join("tests/browser");
    let installed = ["playwright-core", "axe-core"]
        .iter()
        .all(|p| browser_dir.join("node_modules").join(p).exists());
    if !installed {
        require(has_command("npm"), "npm");
        let o = run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&browser_dir));
        assert!(o.status.success(), "npm ci failed:\n{}", describe(&o));
    }
    browser_dir
}

#[test]
fn issue10_wizard_dashboard_and_report_in_a_real_browser() {
    let _one_browser = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let chromium = std::env::var("MF_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
    let browser_dir = browser_tools(&chromium);

    let env = Env::new();
    init_volume(&env);
    let mail = env.path("mail");
    let src = mail.join("alice");
    let n = write_maildir(
        &src,
        &SampleSpec {
            seed: 10,
            messages: 60,
            folders: 3,
            size: SizeModel::Small,
            markers: None,
        },
    )
    .unwrap()
    .messages;
    // One message over the wizard's large-item size (100KB): skipped, listed, approved.
    let big = "1700000000.M1P1.large-item";
    let body = large_item(
        "alice@example.com",
        "big@example.com",
        "Mon, 23 Nov 2026 10:00:00",
    );
    std::fs::write(src.join("cur").join(format!("{big}:2,S")), body).unwrap();
    let state = env.path("admin");
    let (admin_pw, admin_totp) = add_account(&state, "ann", "admin");
    let (auditor_pw, auditor_totp) = add_account(&state, "otto", "auditor");
    // Fresh accounts for issue22.mjs: their first login is the one-time password's.
    let (fay_pw, fay_totp) = add_account(&state, "fay", "admin");
    let (abe_pw, abe_totp) = add_account(&state, "abe", "auditor");
    // Issue 21's lockbox: a requester (admin) and an approver of example.com.
    let (lee_pw, lee_totp) = add_account(&state, "lee", "admin");
    let (pia_pw, pia_totp) = add_account_with(&state, "pia", "approver", &["example.com"]);
    let admin = start_admin(&env, &state);

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    eprintln!("browser screenshots: {}", shots.display());
    run_scenario(
        "the browser scenario",
        scenario(
            &browser_dir,
            "wizard.mjs",
            &admin,
            &state,
            &shots,
            &chromium,
        )
        .env("MF_ADMIN", "ann")
        .env("MF_ADMIN_PASSWORD", &admin_pw)
        .env("MF_ADMIN_TOTP", &admin_totp)
        .env("MF_AUDITOR", "otto")
        .env("MF_AUDITOR_PASSWORD", &auditor_pw)
        .env("MF_AUDITOR_TOTP", &auditor_totp)
        .env("MF_MAIL_ROOT", &mail)
        .env("MF_USER", "alice"),
    );

    // Issue 22: first-login password change, authenticator re-enrolment, the auditor's
    // audit page, the wizard saving nothing before its last step.
    let shots22 = shots.join("issue22");
    run_scenario(
        "the issue 22 browser scenario",
        scenario(
            &browser_dir,
            "issue22.mjs",
            &admin,
            &state,
            &shots22,
            &chromium,
        )
        .env("MF_ADMIN", "fay")
        .env("MF_ADMIN_PASSWORD", &fay_pw)
        .env("MF_ADMIN_TOTP", &fay_totp)
        .env("MF_AUDITOR", "abe")
        .env("MF_AUDITOR_PASSWORD", &abe_pw)
        .env("MF_AUDITOR_TOTP", &abe_totp)
        .env("MF_MAIL_ROOT", &mail)
        .env("MF_USER", "alice")
        .env("MF_BATCH", "spring-2026")
        .env("MF_VOLUME", env.volume()),
    );
    let n22 = screenshots(&shots22).len();
    assert!(n22 >= 12, "{n22} screenshots in {}", shots22.display());

    // Issue 21: example.com gets its own key (alice's mailbox moves to it), then the
    // lockbox round trip with the approver uploading that key, then both audit logs and
    // the CLI. From here the volume key alone no longer reads alice's mail.
    let tenant_key = env.path("example.com.key");
    let o = run(mailferry()
        .args(["tenant", "key", "init", "--tenant", "example.com", "--out"])
        .arg(&tenant_key)
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key()));
    assert!(o.status.success(), "{}", describe(&o));
    let o = export(&env, "alice@example.com", &env.path("no-export"));
    assert!(
        !o.status.success(),
        "the volume key alone exported a customer-key mailbox"
    );
    let shots21 = shots.join("lockbox");
    let marker = message_id_of(&src);
    let out21 = run_scenario(
        "the lockbox browser scenario",
        scenario(
            &browser_dir,
            "lockbox.mjs",
            &admin,
            &state,
            &shots21,
            &chromium,
        )
        .env("MF_ADMIN", "lee")
        .env("MF_ADMIN_PASSWORD", &lee_pw)
        .env("MF_ADMIN_TOTP", &lee_totp)
        .env("MF_APPROVER", "pia")
        .env("MF_APPROVER_PASSWORD", &pia_pw)
        .env("MF_APPROVER_TOTP", &pia_totp)
        .env("MF_MAILBOX", "alice@example.com")
        .env("MF_BATCH", "spring-2026")
        .env("MF_MARKER", &marker)
        .env("MF_TENANT_KEY", &tenant_key)
        .env("MF_GRANT", "20s"),
    );
    let n21 = screenshots(&shots21).len();
    assert!(n21 >= 10, "{n21} screenshots in {}", shots21.display());
    let grant = out21
        .lines()
        .find_map(|l| l.strip_prefix("LOCKBOX_ID="))
        .expect("the lockbox scenario names its request")
        .to_string();
    lockbox_in_both_logs(&env, &state, &grant, &pia_pw, &pia_totp);
    lockbox_on_the_command_line(&env, &state, (&lee_pw, &lee_totp), (&pia_pw, &pia_totp));

    assert_eq!(
        admin.stop(),
        Some(0),
        "the admin service stops cleanly on SIGTERM"
    );

    let pngs = screenshots(&shots);
    assert!(
        pngs.len() >= 15,
        "{} screenshots in {}",
        pngs.len(),
        shots.display()
    );
    for p in &pngs {
        let b = std::fs::read(p).unwrap();
        assert!(
            b.starts_with(b"\x89PNG") && b.len() > 1000,
            "{} is no screenshot",
            p.display()
        );
    }
    eprintln!("{} browser screenshots in {}", pngs.len(), shots.display());

    // The volume holds exactly the source's messages, read back through the CLI (with
    // the tenant's key, since issue 21's part made example.com a customer-key tenant).
    let out = env.path("export");
    let o = run(mailferry()
        .arg("export")
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--tenant-key")
        .arg(&tenant_key)
        .args([
            "--mailbox",
            "alice@example.com",
            "--format",
            "maildir",
            "--out",
        ])
        .arg(&out));
    assert!(o.status.success(), "{}", describe(&o));
    let exported = read_maildir(&out);
    let mut expected = read_maildir(&src);
    assert!(expected.remove(&(String::new(), big.to_string())).is_some());
    let keys = |m: &std::collections::BTreeMap<(String, String), (String, Vec<u8>)>| {
        m.keys().cloned().collect::<Vec<_>>()
    };
    assert_eq!(keys(&exported), keys(&expected), "exported messages");
    let differ: Vec<_> = expected
        .iter()
        .filter(|(k, v)| exported.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.0.clone(), exported[k].0.clone()))
        .collect();
    assert!(
        differ.is_empty(),
        "exported messages differ from the source (key, source flags, exported flags): {differ:?}"
    );
    assert_eq!(exported.len(), n);
}

/// Issue 22, the dashboard and its pages as an admin who never opens a terminal sees
/// them (`tests/browser/dashboard.mjs`): a batch of three mailboxes, one without a
/// source mailbox, at 1280×800; the failed mailbox's page shows its error; Approve
/// skipped, Complete and Suspend ask first, and Cancel changes nothing; the dashboard
/// fits the window; every page passes axe-core without a serious violation and gives
/// no command-line advice. Screenshots are kept under
/// `$CARGO_TARGET_TMPDIR/browser-screenshots-dashboard`.
#[test]
fn issue22_dashboard_mailbox_and_batch_pages_in_a_real_browser() {
    let _one_browser = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let chromium = std::env::var("MF_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
    let browser_dir = browser_tools(&chromium);

    let env = Env::new();
    init_volume(&env);
    let mail = env.path("mail");
    for (i, user) in ["amy", "ben"].iter().enumerate() {
        write_maildir(
            &mail.join(user),
            &SampleSpec {
                seed: 22 + i as u64,
                messages: 40,
                folders: 2,
                size: SizeModel::Small,
                markers: None,
            },
        )
        .unwrap();
    }
    // One message of amy's over the batch's large-item size (100KB): skipped, approved.
    let body = large_item(
        "amy@example.com",
        "big22@example.com",
        "Tue, 14 Nov 2023 22:13:20",
    );
    std::fs::write(mail.join("amy/cur/1700000000.M1P1.large-item:2,S"), body).unwrap();
    // ghost has no Maildir: its move fails, and its page must say why.
    let state = env.path("admin");
    let (admin_pw, admin_totp) = add_account(&state, "ada", "admin");
    let admin = start_admin(&env, &state);

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots-dashboard");
    let _ = std::fs::remove_dir_all(&shots);
    eprintln!("browser screenshots: {}", shots.display());
    run_scenario(
        "the dashboard scenario",
        scenario(
            &browser_dir,
            "dashboard.mjs",
            &admin,
            &state,
            &shots,
            &chromium,
        )
        .env("MF_ADMIN", "ada")
        .env("MF_ADMIN_PASSWORD", &admin_pw)
        .env("MF_ADMIN_TOTP", &admin_totp)
        .env("MF_MAIL_ROOT", &mail),
    );
    assert_eq!(admin.stop(), Some(0), "the admin service stops cleanly");
    let pngs = screenshots(&shots).len();
    assert!(pngs >= 12, "{pngs} screenshots in {}", shots.display());
}

/// Issue 20, the dashboard of `admin serve --db` in a real browser
/// (`tests/browser/db.mjs`): the batches are rows in PostgreSQL (`MAILFERRY_TEST_PG`)
/// and a `mailferry worker` runs their passes. A batch made through the API is started,
/// suspended, resumed and completed on the pages; the mailbox page shows the source log
/// verified from the rows; every page passes the same accessibility and wording checks
/// as without --db. Screenshots under `$CARGO_TARGET_TMPDIR/browser-screenshots-db`.
#[test]
fn issue20_dashboard_against_postgres_in_a_real_browser() {
    use crate::workers::{fresh_db, sql_i64, start_worker};
    let Some(db) = fresh_db("browser") else {
        return;
    };
    let _one_browser = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let chromium = std::env::var("MF_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
    let browser_dir = browser_tools(&chromium);

    let env = Env::new();
    init_volume(&env);
    let mail = env.path("mail");
    for (i, user) in ["amy", "ben"].iter().enumerate() {
        write_maildir(
            &mail.join(user),
            &SampleSpec {
                seed: 200 + i as u64,
                messages: 20,
                folders: 2,
                size: SizeModel::Small,
                markers: None,
            },
        )
        .unwrap();
    }
    let state = env.path("admin");
    let (admin_pw, admin_totp) = add_account(&state, "ada", "admin");
    let mut serve = mailferry();
    serve
        .args(["admin", "serve", "--listen", "127.0.0.1:0", "--state"])
        .arg(&state)
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .env("MAILFERRY_DB", &db);
    let admin = Daemon::start(serve, "admin");
    let worker = start_worker(env.dir.path(), &db, "w0", 2, 10);

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots-db");
    let _ = std::fs::remove_dir_all(&shots);
    eprintln!("browser screenshots: {}", shots.display());
    run_scenario(
        "the --db dashboard scenario",
        scenario(&browser_dir, "db.mjs", &admin, &state, &shots, &chromium)
            .env("MF_ADMIN", "ada")
            .env("MF_ADMIN_PASSWORD", &admin_pw)
            .env("MF_ADMIN_TOTP", &admin_totp)
            .env("MF_MAIL_ROOT", &mail),
    );
    let log = worker.log_text();
    assert_eq!(worker.stop(), Some(0), "{log}");
    assert_eq!(admin.stop(), Some(0), "the admin service stops cleanly");
    // What the pages did is in the rows, not in a batch directory.
    assert_eq!(
        sql_i64(
            &db,
            "SELECT count(*) FROM moves WHERE batch = 'db-wave' AND state = 'completed'"
        ),
        2
    );
    assert!(!state.join("batches/db-wave").exists());
    let pngs = screenshots(&shots).len();
    assert!(pngs >= 7, "{pngs} screenshots in {}", shots.display());
}

/// A message over the scenarios' large-item size (100 KB), to be skipped and approved.
fn large_item(to: &str, message_id: &str, date: &str) -> String {
    let mut body = format!(
        "From: carol@example.com\r\nTo: {to}\r\nSubject: the big one\r\n\
         Message-ID: <{message_id}>\r\nDate: {date} +0000\r\n\r\n"
    );
    while body.len() < 200_000 {
        body.push_str("a line of a very large message that must be skipped as a large item\r\n");
    }
    body
}

/// `mailferry admin serve` on a free port, with `state` and the test volume.
fn start_admin(env: &Env, state: &Path) -> Daemon {
    let mut serve = mailferry();
    serve
        .args(["admin", "serve", "--listen", "127.0.0.1:0", "--state"])
        .arg(state)
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key());
    Daemon::start(serve, "admin")
}

/// `node tests/browser/SCRIPT` against `admin`, with what every scenario is given: the
/// service's address and certificate, where to put screenshots, which chromium.
fn scenario(
    browser_dir: &Path,
    script: &str,
    admin: &Daemon,
    state: &Path,
    shots: &Path,
    chromium: &str,
) -> Command {
    let mut c = Command::new("node");
    c.arg(browser_dir.join(script))
        .current_dir(browser_dir)
        .env("MF_URL", admin.url())
        .env("MF_SERVER_CERT", state.join("tls/server.pem"))
        .env("MF_SCREENSHOTS", shots)
        .env("MF_CHROMIUM", chromium);
    c
}

/// Runs a scenario; its output is printed (the test's log keeps it) and returned, a
/// failure fails.
fn run_scenario(what: &str, cmd: &mut Command) -> String {
    let o = run(cmd);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    eprintln!("{out}");
    assert!(o.status.success(), "{what} failed:\n{}", describe(&o));
    out
}

/// `mailferry admin add NAME --role ROLE --tenant T...`: as [`add_account`].
fn add_account_with(state: &Path, name: &str, role: &str, tenants: &[&str]) -> (String, String) {
    let mut c = mailferry();
    c.args(["admin", "add", name, "--role", role, "--state"])
        .arg(state);
    for t in tenants {
        c.args(["--tenant", t]);
    }
    let o = run(&mut c);
    assert!(o.status.success(), "{}", describe(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let uri = text
        .split_whitespace()
        .find(|w| w.starts_with("otpauth://"))
        .unwrap_or_else(|| panic!("no otpauth:// URI in:\n{text}"))
        .to_string();
    let password = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("password:"))
        .map(|p| p.trim().to_string())
        .unwrap_or_else(|| panic!("no password in:\n{text}"));
    (password, uri)
}

/// The Message-ID of one message of the Maildir `src` (the lockbox's download must hold it).
fn message_id_of(src: &Path) -> String {
    let cur = src.join("cur");
    for e in std::fs::read_dir(&cur).unwrap() {
        let text = String::from_utf8_lossy(&std::fs::read(e.unwrap().path()).unwrap()).into_owned();
        if text.len() > 100_000 {
            continue; // the large item is skipped, not in the volume
        }
        if let Some(id) = text.lines().find_map(|l| {
            l.strip_prefix("Message-ID:")
                .or_else(|| l.strip_prefix("Message-Id:"))
        }) {
            return id.trim().to_string();
        }
    }
    panic!("no message with a Message-ID in {}", cur.display());
}

/// Issue 21: every lockbox step of grant `id` in the volume's audit log (which still
/// verifies, and names no mailbox in clear), and `mailferry access list` on the command
/// line, logged in as the approver, shows the expired grant and its use.
fn lockbox_in_both_logs(env: &Env, state: &Path, id: &str, password: &str, otpauth: &str) {
    // The hash chain (with --key-file the check against the index reads the mailbox's
    // metadata, which the volume key no longer can: a store-side matter).
    let o = run(mailferry().args(["audit", "verify"]).arg(env.volume()));
    assert!(o.status.success(), "{}", describe(&o));
    let log = std::fs::read_to_string(env.volume().join("audit.jsonl")).unwrap();
    let of_grant: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["data"]["grant"] == id)
        .collect();
    let events: Vec<&str> = of_grant
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "access.requested",
            "access.approved",
            "access.used",
            "access.expired"
        ],
        "the volume's log of grant {id}"
    );
    assert!(
        log.contains("\"access.refused\""),
        "no refusal in the volume's log"
    );
    assert!(
        !log.contains("alice@example.com"),
        "the volume's log names the mailbox"
    );
    let admin_log = std::fs::read_to_string(state.join("admin-audit.jsonl")).unwrap();
    for e in ["requested", "approved", "used", "expired", "refused"] {
        assert!(
            admin_log.contains(&format!("\"admin.access.{e}\"")),
            "no admin.access.{e}"
        );
    }
    let pia = Cli {
        env,
        state,
        name: "pia",
        password: format!("{password}-own"),
        otpauth: otpauth.to_string(),
    };
    let o = pia.run(&["access", "list", "--json"]);
    assert!(o.status.success(), "{}", describe(&o));
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .expect("the grant in access list");
    assert_eq!(r["state"], "expired");
    assert_eq!(r["uses"].as_array().unwrap().len(), 1);
}

/// The lockbox on the command line (issue 21): the requester asks, cannot approve its
/// own request, and the approver denies it; each logs in with password and TOTP.
fn lockbox_on_the_command_line(env: &Env, state: &Path, lee: (&str, &str), pia: (&str, &str)) {
    let cli = |name: &'static str, (pw, uri): (&str, &str)| Cli {
        env,
        state,
        name,
        password: format!("{pw}-own"),
        otpauth: uri.to_string(),
    };
    let (lee, pia) = (cli("lee", lee), cli("pia", pia));
    let o = lee.run(&[
        "access",
        "request",
        "--mailbox",
        "alice@example.com",
        "--reason",
        "ticket 4712",
        "--for",
        "1h",
        "--json",
    ]);
    assert!(o.status.success(), "{}", describe(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = r["id"].as_str().unwrap().to_string();
    let o = lee.run(&["access", "approve", &id]);
    assert!(
        !o.status.success(),
        "the requester approved its own request on the CLI"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot decide"),
        "{}",
        describe(&o)
    );
    let o = pia.run(&["access", "deny", &id, "--json"]);
    assert!(o.status.success(), "{}", describe(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (r["state"].as_str(), r["decided_by"].as_str()),
        (Some("denied"), Some("pia"))
    );
    // Without a password nothing runs (no terminal to ask on).
    let o = run(mailferry()
        .args(["access", "list", "--as", "pia", "--state"])
        .arg(state)
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .env_remove("MAILFERRY_PASSWORD")
        .stdin(Stdio::null()));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
}

/// `mailferry access ...` as one account, its password and a fresh TOTP code in the
/// environment.
struct Cli<'a> {
    env: &'a Env,
    state: &'a Path,
    name: &'static str,
    password: String,
    otpauth: String,
}

impl Cli<'_> {
    /// Runs `args` with a code of the step after the clock's. The browser scenario may
    /// have used that step already (the server accepts each step once per account):
    /// then the login is refused and it waits for the next step, at most twice.
    fn run(&self, args: &[&str]) -> std::process::Output {
        let secret = self
            .otpauth
            .split("secret=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        let t = mailferry_admin::accounts::totp(secret).unwrap();
        for attempt in 0.. {
            let step = mailferry_core::unix_now() as u64 / 30 + 1;
            let o = run(mailferry()
                .args(args)
                .args(["--as", self.name, "--state"])
                .arg(self.state)
                .arg("--volume")
                .arg(self.env.volume())
                .arg("--key-file")
                .arg(self.env.key())
                .env("MAILFERRY_PASSWORD", &self.password)
                .env("MAILFERRY_TOTP", t.generate(step * 30).to_string()));
            let refused = String::from_utf8_lossy(&o.stderr).contains("login refused");
            if !refused || attempt == 2 {
                return o;
            }
            // Until the clock's step passes the one just refused.
            while mailferry_core::unix_now() as u64 / 30 < step {
                std::thread::sleep(std::time::Duration::from_secs(2));
            }
        }
        unreachable!()
    }
}

/// The PNG files in `dir`.
fn screenshots(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect()
}
