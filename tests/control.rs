//! Issue 7, move control: throttles, server backoff, dry run, progress and log output,
//! help texts. The real binary; no timing assertions beyond "it completed" and "some
//! time was spent waiting".

use crate::util::*;
use mailferry_bench::sample::{write_maildir, SampleSpec, SizeModel};
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const MB: &str = "alice@example.com";

fn sample(env: &Env, seed: u64, messages: usize) -> std::path::PathBuf {
    let src = env.path("src");
    write_maildir(
        &src,
        &SampleSpec {
            seed,
            messages,
            folders: 3,
            size: SizeModel::Small,
            markers: None,
        },
    )
    .unwrap();
    src
}

fn move_cmd(env: &Env, src: &Path) -> Command {
    let mut c = mailferry();
    c.arg("move")
        .arg("--source")
        .arg(format!("maildir:{}", src.display()))
        .args(["--mailbox", MB, "--volume"])
        .arg(env.volume())
        .arg("--state")
        .arg(env.path("state"));
    c
}

fn dry_run(env: &Env, src: &Path) -> serde_json::Value {
    // No key: a dry run does not open the volume.
    let o = run(move_cmd(env, src).args(["--dry-run", "--json"]));
    assert!(o.status.success(), "{}", describe(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&o)))
}

#[test]
fn issue7_dry_run_writes_nothing_and_counts_what_the_source_holds() {
    let env = Env::new();
    let src = sample(&env, 71, 40);
    init_volume(&env);
    let files = read_maildir(&src);
    let bytes: u64 = files.values().map(|(_, b)| b.len() as u64).sum();
    let state = env.path("state");
    let vol_before = snapshot(&env.volume());

    // A move not started yet: everything is to send, and no state directory appears.
    let d = dry_run(&env, &src);
    assert!(
        !state.exists(),
        "a dry run must not create the state directory"
    );
    assert_eq!(
        snapshot(&env.volume()),
        vol_before,
        "the volume was touched"
    );
    assert_eq!(d["dry_run"], true);
    assert_eq!(d["state"]["exists"], false);
    assert_eq!(d["destination"]["exists"], true);
    assert_eq!(d["totals"]["messages"], files.len() as u64);
    assert_eq!(d["totals"]["bytes"], bytes);
    assert_eq!(d["totals"]["to_send"], files.len() as u64);
    assert_eq!(d["totals"]["to_send_bytes"], bytes);
    let per_folder: u64 = d["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["messages"].as_u64().unwrap())
        .sum();
    assert_eq!(per_folder, files.len() as u64);
    assert!(
        d["sample"]["messages"].as_u64().unwrap() > 0,
        "no sample read"
    );
    assert_eq!(d["estimate"]["pipeline_rate_from"], "assumed");

    // After a real move, a changed source: one new, one gone, one with new flags.
    let o = run(move_cmd(&env, &src).arg("--key-file").arg(env.key()));
    assert!(o.status.success(), "{}", describe(&o));
    let mut cur: Vec<_> = std::fs::read_dir(src.join("cur"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cur.sort();
    std::fs::remove_file(&cur[0]).unwrap();
    let name = cur[1].file_name().unwrap().to_string_lossy().into_owned();
    let unique = name.split(":2,").next().unwrap();
    std::fs::rename(&cur[1], src.join("cur").join(format!("{unique}:2,FRS"))).unwrap();
    std::fs::write(
        src.join("new/1800000000.dryrun.host"),
        b"From: a@example.com\r\nSubject: new\r\n\r\nnew message\r\n",
    )
    .unwrap();

    let vol_before = snapshot(&env.volume());
    let state_before = snapshot(&state);
    let d = dry_run(&env, &src);
    let o = run(move_cmd(&env, &src).arg("--dry-run"));
    assert!(o.status.success(), "{}", describe(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("nothing was written"), "{text}");
    assert!(text.contains("estimated time"), "{text}");
    assert_eq!(
        snapshot(&env.volume()),
        vol_before,
        "the volume was touched"
    );
    assert_eq!(snapshot(&state), state_before, "the state was touched");
    assert_eq!(d["state"]["exists"], true);
    assert_eq!(d["state"]["acknowledged"], files.len() as u64);
    assert_eq!(d["totals"]["messages"], files.len() as u64);
    assert_eq!(d["totals"]["to_send"], 1);
    assert_eq!(d["totals"]["deletions"], 1);
    assert_eq!(d["totals"]["flag_changes"], 1);
    assert_eq!(d["totals"]["already_moved"], files.len() as u64 - 2);
    assert_eq!(d["estimate"]["pipeline_rate_from"], "last_report");
    let changes: Vec<&str> = d["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["change"].as_str().unwrap())
        .collect();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(changes.contains(&"delete") && changes.contains(&"set_flags"));

    // What the dry run announced is what the pass does.
    let o = run(move_cmd(&env, &src)
        .arg("--key-file")
        .arg(env.key())
        .arg("--json"));
    assert!(o.status.success(), "{}", describe(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["items_moved"], 1);
    assert_eq!(r["items_deleted"], 1);
    assert_eq!(r["items_flags_updated"], 1);
}

#[test]
fn issue7_dry_run_lists_large_items_with_their_reason() {
    let env = Env::new();
    let src = sample(&env, 72, 20);
    init_volume(&env);
    let files = read_maildir(&src);
    let max = files.values().map(|(_, b)| b.len()).max().unwrap();
    let o = run(move_cmd(&env, &src).args([
        "--dry-run",
        "--json",
        "--large-item-limit",
        &(max - 1).to_string(),
    ]));
    assert!(o.status.success(), "{}", describe(&o));
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let skipped = d["skipped"].as_array().unwrap();
    assert!(!skipped.is_empty());
    assert!(
        skipped.iter().all(|s| s["cause"] == "large_item"),
        "{skipped:?}"
    );
    assert!(skipped[0]["reason"]
        .as_str()
        .unwrap()
        .contains("large item"));
    assert_eq!(
        d["totals"]["to_send"].as_u64().unwrap() + skipped.len() as u64,
        files.len() as u64
    );
    assert!(!env.path("state").exists());
}

#[test]
fn issue7_throttled_move_completes_and_reports_the_time_throttled() {
    let env = Env::new();
    let src = sample(&env, 73, 30);
    init_volume(&env);
    let n = read_maildir(&src).len() as u64;
    // A second's burst of 20 messages, then the other 10 wait for their tokens.
    let o = run(move_cmd(&env, &src).arg("--key-file").arg(env.key()).args([
        "--max-messages-per-second",
        "20",
        "--json",
    ]));
    assert!(o.status.success(), "{}", describe(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["items_moved"], n);
    assert!(r["stages"]["throttled"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(r["stages"]["server_backoff"], 0.0);

    // The same limit on bytes, from a profile's [throttle] key.
    let total: u64 = read_maildir(&src)
        .values()
        .map(|(_, b)| b.len() as u64)
        .sum();
    let profile = env.path("slow.toml");
    std::fs::write(
        &profile,
        format!("[throttle]\nmax_bytes_per_second = {}\n", total / 2),
    )
    .unwrap();
    let o = run(mailferry()
        .arg("move")
        .arg("--source")
        .arg(format!("maildir:{}", src.display()))
        .args(["--mailbox", "bob@example.com", "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--state")
        .arg(env.path("state-bob"))
        .arg("--profile")
        .arg(&profile)
        .arg("--json"));
    assert!(o.status.success(), "{}", describe(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["items_moved"], n);
    assert!(r["stages"]["throttled"].as_f64().unwrap() > 0.0, "{r}");

    let o = run(move_cmd(&env, &src).args(["--max-bytes-per-second", "0", "--dry-run"]));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
}

/// An upgraded stream held open on `port`, occupying a `--max-streams` slot until dropped.
fn hold_stream(
    port: u16,
    ca: &Path,
    token: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    let roots = mailferry_core::tls::certs_from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let conn = rustls::ClientConnection::new(
        mailferry_core::tls::client_config(&roots).unwrap(),
        "127.0.0.1".try_into().unwrap(),
    )
    .unwrap();
    let mut t = rustls::StreamOwned::new(conn, tcp);
    write!(
        t,
        "POST /v1/mailboxes/holder%40example.com/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {token}\r\nConnection: upgrade\r\nUpgrade: mailferry-frames/1\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .unwrap();
    t.flush().unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1024];
    while !contains(&head, b"\r\n\r\n") {
        let n = t.read(&mut b).unwrap();
        assert!(n > 0, "the proxy closed the holder's stream");
        head.extend_from_slice(&b[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    t
}

#[test]
fn issue7_busy_proxy_is_waited_for_and_the_stall_is_reported() {
    let env = Env::new();
    let src = sample(&env, 74, 20);
    init_volume(&env);
    let n = read_maildir(&src).len() as u64;
    let token_file = env.path("example.com.token");
    let o = run(mailferry()
        .args(["token", "issue", "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .args(["--tenant", "example.com", "--out"])
        .arg(&token_file));
    assert!(o.status.success(), "{}", describe(&o));
    let token = std::fs::read_to_string(&token_file).unwrap();
    let mut c = mailferry();
    c.arg("serve")
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .args(["--listen", "127.0.0.1:0", "--max-streams", "1"]);
    let serve = Daemon::start(c, "serve");
    // The only stream slot is taken: the move gets 503 with Retry-After.
    let holder = hold_stream(serve.port, &serve.ca, token.trim());

    let mut child = mailferry()
        .env("RUST_LOG", "warn,mailferry_agent::client=info")
        .arg("move")
        .arg("--source")
        .arg(format!("maildir:{}", src.display()))
        .args(["--mailbox", MB, "--proxy", &serve.url(), "--ca"])
        .arg(&serve.ca)
        .arg("--token-file")
        .arg(&token_file)
        .arg("--state")
        .arg(env.path("state"))
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // Free the slot once the agent has been refused and is waiting.
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the agent reports that the proxy is busy within 60 s");
        if line.contains("proxy busy") {
            break;
        }
    }
    drop(holder);
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let status = child.wait().unwrap();
    let stderr = reader.join().unwrap();
    assert!(status.success(), "{status:?}\n{stdout}\n{stderr}");
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["items_moved"], n);
    assert!(r["stages"]["server_backoff"].as_f64().unwrap() > 0.0, "{r}");
    assert!(stderr.contains("503"), "{stderr}");
    serve.stop();
}

#[test]
fn issue7_log_format_json_writes_json_lines_on_stderr() {
    let env = Env::new();
    let src = sample(&env, 75, 5);
    init_volume(&env);
    // Not a terminal: progress goes out as log lines (shown by default), here as JSON.
    let o = run(move_cmd(&env, &src)
        .env_remove("RUST_LOG")
        .arg("--key-file")
        .arg(env.key())
        .args(["--log-format", "json"]));
    assert!(o.status.success(), "{}", describe(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let logs: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!logs.is_empty(), "no JSON log line in\n{stderr}");
    assert!(logs
        .iter()
        .all(|l| l["level"].is_string() && l["fields"].is_object()));
    assert!(
        logs.iter()
            .any(|l| l["target"] == "mailferry::progress" && l["fields"]["mailbox"] == MB),
        "{stderr}"
    );
    // No bars (not a terminal): no carriage returns or cursor movements.
    assert!(
        !stderr.contains('\r') && !stderr.contains("\x1b["),
        "{stderr:?}"
    );
}

/// Every command path of the real binary, from the "Commands:" sections of its help.
fn command_paths(prefix: &[String], out: &mut Vec<Vec<String>>) {
    let o = run(mailferry().args(prefix).arg("--help"));
    assert!(o.status.success(), "{}", describe(&o));
    out.push(prefix.to_vec());
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut in_commands = false;
    for line in text.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if in_commands {
            let Some(name) = line
                .strip_prefix("  ")
                .and_then(|l| l.split_whitespace().next())
            else {
                break;
            };
            if line.starts_with("   ") || name == "help" {
                continue;
            }
            let mut p = prefix.to_vec();
            p.push(name.to_string());
            command_paths(&p, out);
        }
    }
}

#[test]
fn issue7_help_of_every_subcommand_starts_with_an_example() {
    let mut paths = Vec::new();
    command_paths(&[], &mut paths);
    assert!(paths.len() > 30, "too few commands found: {paths:?}");
    for p in &paths {
        for flag in ["--help", "-h"] {
            let o = run(mailferry().args(p).arg(flag));
            let text = String::from_utf8_lossy(&o.stdout);
            let want = format!(
                "Example:\n  mailferry {}",
                p.first().map_or("", |s| s.as_str())
            );
            assert!(
                text.starts_with(want.trim_end()),
                "`mailferry {} {flag}` does not start with an example:\n{text}",
                p.join(" ")
            );
        }
    }
}
