//! `--compare mbsync`: Debian's `mbsync` (isync) pulls every mailbox of the corpus from
//! the same scratch Dovecot, through the same relay (so at the same one-way delay), into
//! fresh Maildirs, one process per mailbox and as many at once as mailferry moves. It is
//! timed like a move (start to exit of the last process, `FSync yes`, mbsync's default,
//! so both sides are durable), then what it wrote is counted and set against the corpus:
//! a comparison that did not move the same mail has no ratio.
//!
//! It does not configure or tune mbsync beyond pointing it at the server (its pipelining
//! is unlimited by default), and it does not check message bytes one by one: the count
//! and the total size as IMAP serves them must be equal. Its pulls alternate with
//! mailferry's runs (ours, then mbsync's, run after run), so that whatever else the
//! machine does over the minutes of a row weighs on both sides alike.

use super::corpus::ImapRoute;
use super::report::{Corpus, MbsyncRow, RunFigures};
use crate::AppError;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

/// What one pull of every mailbox wrote.
#[derive(Debug, Clone)]
pub(super) struct Pulled {
    seconds: f64,
    messages: u64,
    /// As IMAP serves them: a bare LF counts as CRLF (Dovecot sends CRLF, mbsync writes
    /// LF line ends into a Maildir).
    bytes: u64,
    /// Why the run does not count (mbsync failed), if it does not.
    failed: Option<String>,
}

/// Messages and bytes (as IMAP serves them) in the Maildir tree at `root`: every file in
/// a `cur/` or `new/` directory at any depth; with `written_by_mbsync`, less the
/// `X-TUID` header line mbsync adds to every message it stores (to find it again after
/// an interruption), which the server never sent.
pub(super) fn maildir_totals(root: &Path, written_by_mbsync: bool) -> Result<(u64, u64), AppError> {
    let (mut messages, mut bytes) = (0, 0);
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let in_mail_dir = matches!(
            dir.file_name().and_then(|n| n.to_str()),
            Some("cur" | "new")
        );
        for entry in std::fs::read_dir(&dir).map_err(|e| AppError::io(&dir, e))? {
            let entry = entry.map_err(|e| AppError::io(&dir, e))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| AppError::io(&path, e))?;
            if kind.is_dir() {
                dirs.push(path);
            } else if in_mail_dir && kind.is_file() {
                let data = std::fs::read(&path).map_err(|e| AppError::io(&path, e))?;
                messages += 1;
                bytes += wire_len(&data);
                if written_by_mbsync {
                    bytes -= tuid_line(&data).map_or(0, wire_len);
                }
            }
        }
    }
    Ok((messages, bytes))
}

/// The length of `data` with every bare LF sent as CRLF, as an IMAP server sends it.
pub(super) fn wire_len(data: &[u8]) -> u64 {
    let mut bare = 0u64;
    let mut prev = 0u8;
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            bare += 1;
        }
        prev = b;
    }
    data.len() as u64 + bare
}

/// The `X-TUID: <12 characters>` line in the header of `data`, with its line end.
fn tuid_line(data: &[u8]) -> Option<&[u8]> {
    let mut at = 0;
    while at < data.len() {
        let end = data[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |p| at + p + 1);
        let line = &data[at..end];
        if line == b"\n" || line == b"\r\n" {
            return None; // the end of the header
        }
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.len() == 8 + 12 && text.starts_with(b"X-TUID: ") {
            return Some(line);
        }
        at = end;
    }
    None
}

/// `mbsync --version`, e.g. `isync 1.4.4`.
fn version() -> String {
    Command::new("mbsync")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// A value for the mbsyncrc: quoted, with `"` and `\` escaped as mbsync reads them.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The configuration that pulls `user`'s every folder into `near` (Maildir, folders as
/// subdirectories, INBOX as `near/INBOX`).
fn config(route: &ImapRoute<'_>, user: &str, near: &Path) -> String {
    // PassCmd: the password stays in its file, never in the config or argv.
    let pass_cmd = format!(
        "cat {}",
        shell_quoted(&route.password_file().to_string_lossy())
    );
    format!(
        "IMAPAccount far\n\
         Host 127.0.0.1\n\
         Port {port}\n\
         User {user}\n\
         PassCmd {pass}\n\
         SSLType IMAPS\n\
         CertificateFile {ca}\n\
         SystemCertificates no\n\
         \n\
         IMAPStore far\n\
         Account far\n\
         \n\
         MaildirStore near\n\
         Path {path}\n\
         Inbox {inbox}\n\
         SubFolders Verbatim\n\
         \n\
         Channel pull\n\
         Far :far:\n\
         Near :near:\n\
         Patterns *\n\
         Create Near\n\
         Sync Pull\n\
         SyncState *\n",
        port = route.port,
        user = quoted(user),
        pass = quoted(&pass_cmd),
        ca = quoted(&route.ca_pem().to_string_lossy()),
        path = quoted(&format!("{}/", near.display())),
        inbox = quoted(&near.join("INBOX").to_string_lossy()),
    )
}

fn shell_quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// One pull of every mailbox of `corpus`, `concurrency` processes at a time, into fresh
/// Maildirs under `dir` (removed afterwards).
fn pull(
    dir: &Path,
    route: &ImapRoute<'_>,
    corpus: &Corpus,
    concurrency: usize,
) -> Result<Pulled, AppError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| AppError::io(dir, e))?;
    }
    let mut jobs = Vec::new();
    for (i, mb) in corpus.mailboxes.iter().enumerate() {
        let near = dir.join(format!("mailbox-{i}"));
        std::fs::create_dir_all(&near).map_err(|e| AppError::io(&near, e))?;
        let rc = dir.join(format!("mbsyncrc-{i}"));
        std::fs::write(&rc, config(route, &route.user(mb), &near))
            .map_err(|e| AppError::io(&rc, e))?;
        jobs.push((rc, near));
    }
    let queue = Mutex::new(jobs.iter());
    let failures = Mutex::new(Vec::<String>::new());
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..concurrency.max(1) {
            s.spawn(|| loop {
                let Some((rc, _)) = queue.lock().expect("not poisoned").next() else {
                    return;
                };
                if let Some(why) = run_mbsync(rc) {
                    failures.lock().expect("not poisoned").push(why);
                }
            });
        }
    });
    let seconds = t0.elapsed().as_secs_f64();
    let (mut messages, mut bytes) = (0, 0);
    for (_, near) in &jobs {
        let (m, b) = maildir_totals(near, true)?;
        messages += m;
        bytes += b;
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(Pulled {
        seconds,
        messages,
        bytes,
        failed: failures
            .into_inner()
            .expect("not poisoned")
            .into_iter()
            .next(),
    })
}

/// Runs `mbsync -a` with `rc`; why it failed, if it did.
fn run_mbsync(rc: &PathBuf) -> Option<String> {
    match Command::new("mbsync")
        .arg("-c")
        .arg(rc)
        .args(["-a", "-q"])
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "mbsync exited with {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("mbsync could not run: {e}")),
    }
}

/// Pull `n` of `runs`: mbsync moves the corpus once, timed.
pub(super) fn pull_run(
    work: &Path,
    route: &ImapRoute<'_>,
    corpus: &Corpus,
    concurrency: usize,
    (n, runs): (usize, usize),
    progress: bool,
) -> Result<Pulled, AppError> {
    let p = pull(&work.join("mbsync"), route, corpus, concurrency)?;
    if progress {
        eprintln!(
            "bench: mbsync run {n}/{runs}: {} messages, {:.1} MB in {:.2} s{}",
            p.messages,
            p.bytes as f64 / 1e6,
            p.seconds,
            p.failed
                .as_deref()
                .map(|w| format!("; {w}"))
                .unwrap_or_default()
        );
    }
    Ok(p)
}

/// Sets the median of mbsync's `pulls` against the corpus and mailferry's median figures.
pub(super) fn compare_mbsync(
    corpus: &Corpus,
    pulls: &[Pulled],
    ours: &RunFigures,
) -> Result<MbsyncRow, AppError> {
    let (want_messages, want_bytes) = corpus.mailboxes.iter().try_fold((0, 0), |(m, b), mb| {
        maildir_totals(&mb.path, false).map(|(m2, b2)| (m + m2, b + b2))
    })?;
    let mut by_time: Vec<&Pulled> = pulls.iter().collect();
    by_time.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let median = by_time[by_time.len() / 2].clone();
    // Every run must have moved the corpus, not just the median one.
    let difference = pulls.iter().find_map(|p| {
        if let Some(why) = &p.failed {
            Some(why.clone())
        } else if (p.messages, p.bytes) != (want_messages, want_bytes) {
            Some(format!(
                "mbsync wrote {} messages / {} bytes of the corpus's {want_messages} / \
                 {want_bytes} (as IMAP serves them)",
                p.messages, p.bytes
            ))
        } else {
            None
        }
    });
    let seconds = median.seconds.max(1e-9);
    let (msgs_per_s, mb_per_s) = (
        median.messages as f64 / seconds,
        median.bytes as f64 / 1e6 / seconds,
    );
    let same = difference.is_none();
    Ok(MbsyncRow {
        version: version(),
        seconds,
        run_seconds: pulls.iter().map(|p| p.seconds).collect(),
        messages: median.messages,
        bytes: median.bytes,
        msgs_per_s,
        mb_per_s,
        same_mail: same,
        difference,
        mailferry_ratio_msgs: same.then(|| ours.msgs_per_s / msgs_per_s.max(1e-9)),
        mailferry_ratio_mb: same.then(|| ours.mb_per_s / mb_per_s.max(1e-9)),
    })
}
