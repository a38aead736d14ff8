//! End-to-end benchmark of the move pipeline: a synthetic Maildir (the Realistic size
//! model: median ~7 KiB, mean ~58 KiB, 6 folders) moved through agent → loopback HTTPS
//! proxy → encrypted store, durable at exit (group-committed fsyncs), by the same library
//! code as `mailferry move`. Optionally runs Dovecot's `doveadm backup` on the same
//! corpus in the same run (`--dovecot`, needs dovecot-core) and prints the ratios.
//!
//! ```text
//! cargo bench --bench e2e -- --messages 20000 --runs 3 --dovecot   # the full figure
//! cargo bench --bench e2e -- --messages 300                         # CI smoke run
//! ```
//! No timing is asserted here; CI only checks that the bench still runs and verifies.

use mailferry_cli::moving::{run_move, MoveArgs};
use mailferry_cli::sample::{write_maildir, SampleSpec, SizeModel};
use mailferry_core::profile::Profile;
use mailferry_core::MailboxAddr;
use mailferry_store::Volume;
use std::path::Path;
use std::process::Command;

struct Args {
    messages: usize,
    runs: usize,
    dovecot: bool,
}

fn args() -> Args {
    let mut a = Args {
        messages: 20_000,
        runs: 1,
        dovecot: false,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        match argv[i].as_str() {
            "--messages" => {
                a.messages = argv[i + 1].parse().expect("--messages N");
                i += 1;
            }
            "--runs" => {
                a.runs = argv[i + 1].parse().expect("--runs N");
                i += 1;
            }
            "--dovecot" => a.dovecot = true,
            _ => {} // cargo passes --bench; criterion-style filters are ignored
        }
        i += 1;
    }
    a
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn run_ours(src: &Path, work: &Path, run: usize) -> (f64, f64, u64, u64) {
    let vol = work.join(format!("volume-{run}"));
    let key = work.join("bench.key");
    Volume::init(&vol, &key).expect("volume init");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = rt
        .block_on(run_move(&MoveArgs {
            source: format!("maildir:{}", src.display()),
            mailbox: MailboxAddr::parse("bench@example.com").expect("literal"),
            destination: mailferry_cli::moving::Destination::Local {
                volume: vol.clone(),
                credential: mailferry_store::Credential::KeyFile(key.clone()),
            },
            state: work.join(format!("state-{run}")),
            profile: Profile::embedded_default(),
            progress_bar: false,
        }))
        .expect("move");
    assert!(
        report.bad_items.is_empty(),
        "bad items: {:?}",
        report.bad_items
    );
    // The work was really done: every chunk authenticates.
    let v = Volume::open(&vol, &key, &Profile::embedded_default().store).expect("open");
    let verify = v.verify().expect("verify");
    assert!(verify.damaged.is_empty());
    assert_eq!(verify.messages_checked, report.items_moved);
    eprintln!(
        "  run {run}: {} msgs, {:.1} MB in {:.2} s: {:.1} MB/s, {:.0} msg/s, peak RSS {} MiB (read {:.2} s, store write {:.2} s, commit {:.2} s)",
        report.items_moved,
        report.bytes_moved as f64 / 1e6,
        report.seconds,
        report.throughput_bytes_per_s / 1e6,
        report.messages_per_s,
        report.peak_rss_bytes >> 20,
        report.stages.source_read,
        report.stages.store_write,
        report.stages.store_commit,
    );
    std::fs::remove_dir_all(&vol).ok();
    (
        report.throughput_bytes_per_s / 1e6,
        report.messages_per_s,
        report.items_moved,
        report.bytes_moved,
    )
}

fn dovecot(src: &Path, work: &Path) -> Option<Vec<(String, f64, f64)>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/dovecot-compare.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(src)
        .arg(work.join("dovecot"))
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "dovecot comparison failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let Some(name) = parts.next() else { continue };
        let kv: std::collections::HashMap<&str, &str> =
            parts.filter_map(|p| p.split_once('=')).collect();
        if let (Some(mb), Some(msgs)) = (kv.get("mb_per_s"), kv.get("msgs_per_s")) {
            rows.push((name.to_string(), mb.parse().ok()?, msgs.parse().ok()?));
        }
    }
    Some(rows)
}

fn main() {
    let a = args();
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("corpus");
    let summary = write_maildir(
        &src,
        &SampleSpec {
            seed: 20_000,
            messages: a.messages,
            folders: 10,
            size: SizeModel::Realistic,
            markers: None,
        },
    )
    .expect("corpus");
    eprintln!(
        "e2e: corpus of {} messages, {:.1} MB (mean {:.1} KiB) in {} folders; {} run(s)",
        summary.messages,
        summary.bytes as f64 / 1e6,
        summary.bytes as f64 / summary.messages.max(1) as f64 / 1024.0,
        summary.folders.len(),
        a.runs
    );
    let mut mbs = Vec::new();
    let mut msgs = Vec::new();
    for run in 0..a.runs {
        let (mb, m, items, bytes) = run_ours(&src, work.path(), run);
        assert_eq!(items as usize, summary.messages);
        assert_eq!(bytes, summary.bytes);
        mbs.push(mb);
        msgs.push(m);
    }
    let (mb, m) = (median(mbs), median(msgs));
    println!(
        "mailferry_embedded messages={} bytes={} mb_per_s={mb:.1} msgs_per_s={m:.0} runs={}",
        summary.messages, summary.bytes, a.runs
    );
    if a.dovecot {
        match dovecot(&src, work.path()) {
            Some(rows) => {
                for (name, dmb, dmsgs) in rows {
                    println!(
                        "{name} mb_per_s={dmb:.1} msgs_per_s={dmsgs:.0} mailferry_ratio_mb={:.1}x mailferry_ratio_msgs={:.1}x",
                        mb / dmb,
                        m / dmsgs
                    );
                }
            }
            None => println!("dovecot comparison not run (install dovecot-core)"),
        }
    }
}
