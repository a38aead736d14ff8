//! End-to-end benchmark of the move pipeline: `mailferry bench` as a cargo bench. Both
//! call [`mailferry_bench::bench::run`], so there is one implementation: a generated corpus
//! (the realistic model: median ~7 KiB, mean ~58 KiB, 10 folders) moved through agent →
//! loopback HTTPS proxy → encrypted store, durable at exit, every run verified; with
//! `--dovecot`, Dovecot's `doveadm backup` on the same corpus in the same run, and the
//! ratios.
//!
//! ```text
//! cargo bench --bench e2e -- --messages 20000 --runs 3 --dovecot   # the full figure
//! cargo bench --bench e2e -- --messages 300                         # CI smoke run
//! cargo bench --bench e2e -- --messages 300 --mode network --json   # any bench flag
//! ```
//! Flags are those of `mailferry bench` (`--dovecot` is `--compare dovecot`). No timing is
//! asserted; CI only checks that the bench still runs and verifies.

use mailferry_bench::bench::{self, BenchArgs, Mode, SourceKind};

fn value<T: std::str::FromStr>(flag: &str, v: Option<String>) -> T {
    v.and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{flag} needs a value"))
}

fn list(flag: &str, v: Option<String>) -> Vec<usize> {
    let v: String = value(flag, v);
    v.split(',')
        .map(|n| n.trim().parse().unwrap_or_else(|_| panic!("{flag} {v}")))
        .collect()
}

fn main() {
    let mut a = BenchArgs {
        progress: true,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        ..Default::default()
    };
    let mut json = false;
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        match flag.as_str() {
            "--messages" => a.messages = Some(value(&flag, argv.next())),
            "--size" => {
                let v: String = value(&flag, argv.next());
                a.size = Some(bench::parse_bytes(&v).expect("--size"));
            }
            "--message-size" => a.message_size = Some(value(&flag, argv.next())),
            "--small" => a.small = true,
            "--mailboxes" => a.mailboxes = list(&flag, argv.next()),
            "--scaling" => a.mailboxes = bench::SCALING.to_vec(),
            "--per-folder" => a.per_folder = list(&flag, argv.next()),
            "--concurrency" => a.concurrency = Some(value(&flag, argv.next())),
            "--folders" => a.folders = value(&flag, argv.next()),
            "--runs" => a.runs = value(&flag, argv.next()),
            "--seed" => a.seed = value(&flag, argv.next()),
            "--keep" => a.keep = Some(value::<String>(&flag, argv.next()).into()),
            "--mode" => {
                a.mode = match value::<String>(&flag, argv.next()).as_str() {
                    "embedded" => Mode::Embedded,
                    "network" => Mode::Network,
                    other => panic!("--mode {other}: embedded or network"),
                }
            }
            "--source" => {
                a.source = match value::<String>(&flag, argv.next()).as_str() {
                    "maildir" => SourceKind::Maildir,
                    "mbox" => SourceKind::Mbox,
                    "imap" => SourceKind::Imap,
                    other => panic!("--source {other}: maildir, mbox or imap"),
                }
            }
            "--dovecot" => a.compare_dovecot = true,
            "--json" => json = true,
            _ => {} // cargo passes --bench; criterion-style filters are ignored
        }
    }
    match bench::run(&a) {
        Ok(report) if json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serializable")
        ),
        Ok(report) => print!("{}", bench::render_text(&report)),
        Err(e) => {
            eprintln!("e2e bench failed: {e}");
            std::process::exit(e.exit_code().into());
        }
    }
}
