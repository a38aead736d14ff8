//! Helpers for the integration tests: run the real `mailferry` binary in a temp dir,
//! and read Maildir trees independently of the code under test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temp directory per test, with the usual paths in it.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn volume(&self) -> PathBuf {
        self.path("volume")
    }
    pub fn key(&self) -> PathBuf {
        self.path("volume.key")
    }
}

pub fn mailferry() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mailferry"));
    c.env("RUST_LOG", "warn");
    c
}

/// Runs a command and returns its output; panics with everything if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("mailferry runs")
}

pub fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn init_volume(env: &Env) {
    let o = run(mailferry()
        .args(["volume", "init", "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key()));
    assert!(o.status.success(), "{}", describe(&o));
}

/// `mailferry move ... --json`; returns (exit code, parsed report if any, output).
pub fn move_maildir(
    env: &Env,
    src: &Path,
    mailbox: &str,
) -> (i32, Option<serde_json::Value>, Output) {
    move_spec(env, &format!("maildir:{}", src.display()), mailbox)
}

/// `mailferry move --source SPEC` of `mailbox` into the test volume, with the same state
/// directory as [`move_maildir`]; returns (exit code, JSON report, output).
pub fn move_spec(env: &Env, spec: &str, mailbox: &str) -> (i32, Option<serde_json::Value>, Output) {
    let o = run(mailferry()
        .arg("move")
        .args(["--source", spec])
        .args(["--mailbox", mailbox, "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--state")
        .arg(env.path(&format!("state-{mailbox}")))
        .arg("--json"));
    let report = serde_json::from_slice(&o.stdout).ok();
    (o.status.code().unwrap_or(-1), report, o)
}

pub fn export(env: &Env, mailbox: &str, out: &Path) -> Output {
    run(mailferry()
        .arg("export")
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .args(["--mailbox", mailbox, "--format", "maildir", "--out"])
        .arg(out))
}

/// Every message file of a Maildir++ tree, keyed by (folder directory name or "" for
/// INBOX, unique name) → (flags, bytes). Reads the tree directly, not through mailferry.
pub fn read_maildir(root: &Path) -> BTreeMap<(String, String), (String, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![(String::new(), root.to_path_buf())];
    for e in std::fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && e.file_type().unwrap().is_dir() {
            dirs.push((name, e.path()));
        }
    }
    for (folder, dir) in dirs {
        for sub in ["cur", "new"] {
            let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
                continue;
            };
            for e in entries {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                let (unique, flags) = match name.split_once(":2,") {
                    Some((u, f)) => (u.to_string(), f.to_string()),
                    None => (name.clone(), String::new()),
                };
                let bytes = std::fs::read(e.path()).unwrap();
                let prev = out.insert((folder.clone(), unique), (flags, bytes));
                assert!(
                    prev.is_none(),
                    "duplicate message {name} in {}",
                    dir.display()
                );
            }
        }
    }
    out
}

/// Every byte of every file under `dir`, for plaintext scans.
pub fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Snapshot of a directory: path → (len, mtime, content hash).
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime, String)> {
    all_files(dir)
        .into_iter()
        .map(|(p, b)| {
            let m = std::fs::metadata(&p).unwrap();
            (
                p,
                (
                    m.len(),
                    m.modified().unwrap(),
                    mailferry_core::sha256_hex(&b),
                ),
            )
        })
        .collect()
}

/// Starts `mailferry move` (the same arguments as [`move_maildir`]) and SIGKILLs it as
/// soon as the agent's audit log records at least `acked` acknowledged messages, or when
/// it ends by itself, whichever comes first (at most ~5 s of waiting).
pub fn move_and_kill(env: &Env, src: &Path, mailbox: &str, acked: usize) {
    let spec = format!("maildir:{}", src.display());
    move_spec_and_kill(env, &spec, mailbox, acked, std::time::Duration::ZERO);
}

/// Starts `mailferry move --source SPEC` and SIGKILLs it once the agent's audit log has
/// `acked` message records (or when it ends by itself; at most ~5 s of waiting),
/// `jitter` later, so kills also land between acknowledgement batches. Returns the
/// number of records at the kill, or `None` if the move had already ended.
pub fn move_spec_and_kill(
    env: &Env,
    spec: &str,
    mailbox: &str,
    acked: usize,
    jitter: std::time::Duration,
) -> Option<usize> {
    let state = env.path(&format!("state-{mailbox}"));
    let log = state.join("audit.jsonl");
    let count = || {
        std::fs::read_to_string(&log)
            .map(|t| t.matches("\"event\":\"message.").count())
            .unwrap_or(0)
    };
    // Small group commits, so acknowledgements arrive in many steps and the kill lands
    // inside a running move (the default closes a batch at 1000 messages).
    let profile = env.path("small-commits.toml");
    std::fs::write(&profile, "[commit]\nmax_messages = 25\n").unwrap();
    let mut child = mailferry()
        .arg("move")
        .arg("--profile")
        .arg(&profile)
        .arg("--source")
        .arg(spec)
        .args(["--mailbox", mailbox, "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--state")
        .arg(&state)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mailferry starts");
    for _ in 0..20_000 {
        if count() >= acked || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_micros(250));
    }
    std::thread::sleep(jitter);
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    running.then(count)
}

/// A running `mailferry serve` or `mailferry proxy`: started, its URL and CA read from
/// what it prints, stopped with SIGTERM (or killed when dropped).
pub struct Daemon {
    pub child: std::process::Child,
    pub port: u16,
    pub ca: PathBuf,
}

impl Daemon {
    /// Starts `cmd` and waits (at most 60 s) until it prints its URL and CA path.
    pub fn start(mut cmd: Command, name: &str) -> Daemon {
        use std::io::BufRead;
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("mailferry starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let name = name.to_string();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                eprintln!("{name}: {line}");
                let _ = tx.send(line);
            }
        });
        let (mut port, mut ca) = (None, None);
        while port.is_none() || ca.is_none() {
            let line = rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("the service prints its URL and CA within 60 s");
            if let Some(url) = line.split("listening on https://").nth(1) {
                port = Some(url.rsplit(':').next().unwrap().trim().parse().unwrap());
            }
            if let Some(p) = line.split("agents must trust the CA ").nth(1) {
                ca = Some(PathBuf::from(p.trim()));
            }
        }
        Daemon {
            child,
            port: port.unwrap(),
            ca: ca.unwrap(),
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// SIGTERM, then the exit code (at most 60 s).
    pub fn stop(mut self) -> Option<i32> {
        let o = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(o.success());
        for _ in 0..600 {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        panic!("the service did not stop within 60 s of SIGTERM");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shape of a JSON value: object keys with the shape of their values, the shape of
/// an array's first element, or the type name.
pub fn json_shape(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value as V;
    match v {
        V::Object(m) => V::Object(m.iter().map(|(k, v)| (k.clone(), json_shape(v))).collect()),
        V::Array(a) => V::Array(a.first().map(json_shape).into_iter().collect()),
        V::String(_) => V::String("string".into()),
        V::Number(_) => V::String("number".into()),
        V::Bool(_) => V::String("bool".into()),
        V::Null => V::String("null".into()),
    }
}

/// Checks the shape of a `--json` output against `tests/data/<name>` (rewritten when
/// MAILFERRY_UPDATE_SNAPSHOTS is set): a stable schema changes only on purpose.
pub fn assert_json_schema(name: &str, v: &serde_json::Value) {
    let got = serde_json::to_string_pretty(&json_shape(v)).unwrap() + "\n";
    let snap = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(name);
    if std::env::var_os("MAILFERRY_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&snap, &got).unwrap();
    }
    let want = std::fs::read_to_string(&snap)
        .unwrap_or_else(|_| panic!("snapshot tests/data/{name} (MAILFERRY_UPDATE_SNAPSHOTS=1)"));
    assert_eq!(
        got, want,
        "the JSON schema of {name} changed; if intended, rerun with MAILFERRY_UPDATE_SNAPSHOTS=1"
    );
}
