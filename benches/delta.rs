//! Delta-pass benchmark (issue 4): the cost of an incremental pass grows with what
//! changed, not with the mailbox. Moves a generated mailbox of N messages (first pass),
//! adds K new messages at the source, and times the delta pass that moves them, plus a
//! pass over an unchanged source. Real pipeline: the same `run_move` as `mailferry move`,
//! embedded proxy over loopback TLS, durable encrypted volume.
//!
//! ```text
//! cargo bench --bench delta -- --messages 100000 --new 100            # Maildir source
//! cargo bench --bench delta -- --messages 100000 --new 100 --imap     # a real Dovecot
//! cargo bench --bench delta -- --messages 500 --new 10 --imap         # CI smoke run
//! cargo bench --bench delta -- --messages 100000 --folders 1 --dir /tmp/d --passes 3
//! ```
//! After the delta pass come one unchanged pass right away, then (after the Maildir
//! source's 2 s mtime window) `--passes N` more (default 2): the table shows the first
//! and the best of the others.
//! `--dir DIR` keeps the corpus, volume and state in `DIR` (Maildir only): the first
//! run prepares them as usual, and a later run with the same `DIR` skips straight to
//! `--passes N` unchanged passes (for profiling one pass with `perf` or callgrind).
//! The IMAP case starts Dovecot as the tests do (tests/dovecot.rs, included here) and
//! moves over `imaps://`. Figures are printed, never asserted; the counts are checked
//! (the delta pass must move exactly K messages and delete none), so a pass that skips
//! the work fails instead of looking fast.

#[path = "../tests/dovecot.rs"]
#[allow(dead_code)]
mod dovecot;

use mailferry_bench::sample::{write_maildir, SampleSpec, SizeModel};
use mailferry_control::moving::{run_move, Destination, MoveArgs};
use mailferry_core::profile::Profile;
use mailferry_core::MailboxAddr;
use std::path::Path;
use std::time::Instant;

struct Opts {
    messages: usize,
    new: usize,
    folders: usize,
    imap: bool,
    dir: Option<std::path::PathBuf>,
    passes: usize,
}

fn parse() -> Opts {
    let mut o = Opts {
        messages: 100_000,
        new: 100,
        folders: 10,
        imap: false,
        dir: None,
        passes: 1,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let mut num = || -> usize {
            argv.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--messages" => o.messages = num(),
            "--new" => o.new = num(),
            "--folders" => o.folders = num(),
            "--imap" => o.imap = true,
            "--passes" => o.passes = num(),
            "--dir" => {
                o.dir = Some(
                    argv.next()
                        .unwrap_or_else(|| panic!("--dir needs a directory"))
                        .into(),
                )
            }
            "--bench" => {}
            other => panic!("unknown flag {other}; see benches/delta.rs"),
        }
    }
    o
}

/// Gives every path under `root` to the owner of `root` (Dovecot's mail user).
fn chown_like_root(root: &Path) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(root).unwrap();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        std::os::unix::fs::chown(&p, Some(m.uid()), Some(m.gid())).unwrap();
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
}

fn add_new(inbox: &Path, n: usize) {
    for i in 0..n {
        let body = format!(
            "From: new{i}@example.com\r\nTo: bench@example.com\r\nSubject: new {i}\r\n\
             Message-ID: <delta-new-{i}@example.com>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
             \r\nA new message for the delta pass, number {i}.\r\n"
        );
        std::fs::write(
            inbox.join("new").join(format!("1990000000.delta{i}.bench")),
            body,
        )
        .unwrap();
    }
}

fn move_args(
    source: String,
    volume: &Path,
    key: &Path,
    work: &Path,
    options: mailferry_agent::source::SourceOptions,
) -> MoveArgs {
    MoveArgs {
        source,
        mailbox: MailboxAddr::parse("bench@example.com").unwrap(),
        destination: Destination::Local {
            volume: volume.to_path_buf(),
            credential: mailferry_store::Credential::KeyFile(key.to_path_buf()),
            s3: Default::default(),
        },
        state: work.join("state"),
        profile: Profile::embedded_default(),
        source_options: options,
    }
}

fn main() {
    // `RUST_LOG=mailferry_agent=debug` shows where a pass spends its time.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_timer(tracing_subscriber::fmt::time::uptime())
            .init();
    }
    let o = parse();
    assert!(
        !(o.imap && o.dir.is_some()),
        "--dir keeps a Maildir corpus only (Dovecot lives in a temp directory)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let work_path = match &o.dir {
        Some(d) => {
            std::fs::create_dir_all(d).unwrap();
            d.clone()
        }
        None => tmp.path().to_path_buf(),
    };
    let work = work_path.as_path();
    // A kept directory whose first run finished: only the unchanged passes.
    let prepared = o.dir.is_some() && work.join("prepared").exists();
    let (source, mut options, dovecot, maildir) = if o.imap {
        assert!(
            dovecot::available(),
            "--imap needs Dovecot (dovecot-imapd); ./test.sh installs it"
        );
        let dv = dovecot::Dovecot::start();
        // Creates the Maildir root owned by the mail user, then the corpus beside it.
        dv.put(
            "",
            "0000000001.seed.bench",
            "",
            b"Subject: seed\r\n\r\nseed\r\n",
            1,
        );
        let root = dv.maildir();
        (dv.url(true), Default::default(), Some(dv), root)
    } else {
        let root = work.join("maildir");
        (
            format!("maildir:{}", root.display()),
            Default::default(),
            None,
            root,
        )
    };
    if prepared {
        let volume = work.join("volume");
        let key = work.join("volume.key");
        let args = move_args(source, &volume, &key, work, options);
        let rt = tokio::runtime::Runtime::new().unwrap();
        for i in 0..o.passes {
            let t = Instant::now();
            let r = rt.block_on(run_move(&args)).expect("the pass succeeds");
            assert_eq!(r.items_moved + r.items_deleted + r.items_flags_updated, 0);
            println!(
                "unchanged pass {}: {:.3} s ({} messages)",
                i + 1,
                t.elapsed().as_secs_f64(),
                r.items_skipped_duplicate
            );
        }
        return;
    }
    let t = Instant::now();
    let written = write_maildir(
        &maildir,
        &SampleSpec {
            seed: 404,
            messages: o.messages,
            folders: o.folders,
            size: SizeModel::Small,
            markers: None,
        },
    )
    .unwrap();
    if let Some(dv) = &dovecot {
        chown_like_root(&dv.maildir());
        let opts: &mut mailferry_agent::source::SourceOptions = &mut options;
        opts.password_file = Some(dv.password_file.clone());
        opts.source_ca = Some(dv.ca_pem.clone());
    }
    let total = written.messages + usize::from(dovecot.is_some());
    eprintln!(
        "corpus: {} messages, {} bytes, {} folders ({:.1} s to write)",
        total,
        written.bytes,
        o.folders,
        t.elapsed().as_secs_f64()
    );

    // A move starts on a mailbox that has been quiet for a moment. Without this pause
    // the first pass would scan directories written less than the Maildir source's
    // mtime window ago, which it rightly does not trust, and the delta pass would read
    // the whole folder again: that measures the corpus writer, not a delta pass.
    if dovecot.is_none() {
        std::thread::sleep(mailferry_agent::source::maildir::MTIME_TRUST);
    }
    let volume = work.join("volume");
    let key = work.join("volume.key");
    mailferry_store::Volume::init(&volume, &key).unwrap();
    let args = move_args(source, &volume, &key, work, options);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pass = |label: &str| {
        let t = Instant::now();
        let r = rt.block_on(run_move(&args)).expect("the pass succeeds");
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "{label}: {secs:.2} s, moved {}, deleted {}, flags {}, unchanged {}",
            r.items_moved, r.items_deleted, r.items_flags_updated, r.items_skipped_duplicate
        );
        (secs, r)
    };
    let (first, r1) = pass("first pass");
    assert_eq!(
        r1.items_moved as usize, total,
        "first pass moves everything"
    );
    add_new(&maildir, o.new);
    if dovecot.is_some() {
        chown_like_root(&maildir.join("new"));
    }
    let (delta, r2) = pass("delta pass");
    assert_eq!(
        r2.items_moved as usize, o.new,
        "delta pass moves the new messages only"
    );
    assert_eq!(r2.items_deleted, 0);
    // Right after the delta pass the source changed less than the Maildir source's
    // mtime window ago, so this pass reads new/ again (cur/ is trusted); after a quiet
    // pause, unchanged folders are not read at all.
    let check = |r: &mailferry_core::report::MoveReport| {
        assert_eq!(r.items_moved + r.items_deleted + r.items_flags_updated, 0)
    };
    let (right_after, r3) = pass("unchanged pass, right after");
    check(&r3);
    std::thread::sleep(mailferry_agent::source::maildir::MTIME_TRUST);
    let mut idle = f64::MAX;
    for _ in 0..o.passes.max(2) {
        let (secs, r4) = pass("unchanged pass, source quiet");
        check(&r4);
        idle = idle.min(secs);
    }
    if o.dir.is_some() {
        std::fs::write(work.join("prepared"), b"").unwrap();
    }
    let kind = if dovecot.is_some() {
        "imap (Dovecot)"
    } else {
        "maildir"
    };
    println!(
        "| source | messages | first pass | msg/s | +{} new: delta pass | delta / first | unchanged, right after | unchanged, quiet (best of {}) |",
        o.new,
        o.passes.max(2)
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {kind} | {total} | {first:.2} s | {:.0} | {delta:.2} s | {:.1} % | {right_after:.2} s | {idle:.2} s |",
        total as f64 / first,
        100.0 * delta / first
    );
    drop(dovecot);
}
