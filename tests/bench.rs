//! `mailferry bench`: the JSON report carries every figure, the counts match the corpus,
//! and every run verified. No timing is asserted: speed lives in the figures, not here.

use crate::util::{describe, mailferry, read_maildir, run, Env};
use serde_json::Value;

/// `mailferry bench ARGS --json`; panics with everything if it fails.
fn bench(args: &[&str]) -> Value {
    let o = run(mailferry().arg("bench").args(args).arg("--json"));
    assert!(o.status.success(), "{}", describe(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}\n{}", describe(&o)))
}

fn num(v: &Value, path: &str) -> f64 {
    let mut cur = v;
    for key in path.split('.') {
        cur = match key.parse::<usize>() {
            Ok(i) => &cur[i],
            Err(_) => &cur[key],
        };
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {cur}"))
}

/// Every figure `mailferry bench` promises, in a run's object.
fn assert_figures(run: &Value, messages: u64, bytes: u64, mailboxes: u64) {
    assert_eq!(num(run, "messages") as u64, messages, "{run}");
    assert_eq!(num(run, "bytes") as u64, bytes, "{run}");
    for k in ["seconds", "mb_per_s", "msgs_per_s", "peak_rss_bytes"] {
        assert!(num(run, k) > 0.0, "{k}: {run}");
    }
    assert!(
        num(run, "latency_ms_p50") <= num(run, "latency_ms_p99"),
        "{run}"
    );
    for k in [
        "source_read",
        "transport_tls",
        "store_write",
        "encryption",
        "index",
        "audit",
        "sync",
        "other",
        "total",
    ] {
        assert!(num(run, &format!("cpu_seconds_per_gb.{k}")) >= 0.0, "{k}");
        assert!(num(run, &format!("cpu_seconds.{k}")) >= 0.0, "{k}");
    }
    assert!(num(run, "cpu_seconds.total") > 0.0, "{run}");
    assert!(run["cpu_seconds_by_thread"].as_object().is_some());
    assert!(num(run, "stage_wall_seconds.commits") >= 1.0);
    assert_eq!(num(run, "verified.messages_checked") as u64, messages);
    assert!(num(run, "verified.bytes_checked") as u64 >= bytes);
    assert_eq!(num(run, "verified.receipts_matching") as u64, mailboxes);
}

#[test]
fn embedded_json_has_every_figure_and_counts_match_the_corpus() {
    let env = Env::new();
    let keep = env.path("bench");
    let r = bench(&["--messages", "200", "--keep", keep.to_str().unwrap()]);
    assert_eq!(r["mode"], "embedded");
    assert_eq!(r["source"], "maildir");
    assert!(!r["machine"]["cpu_model"].as_str().unwrap().is_empty());
    assert!(num(&r, "machine.cores") >= 1.0);
    assert!(r["date"].as_str().unwrap().starts_with("20"));
    let cases = r["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 1);
    let corpus = &cases[0]["corpus"];
    let (messages, bytes) = (num(corpus, "messages") as u64, num(corpus, "bytes") as u64);
    assert_eq!(messages, 200);
    assert_eq!(num(corpus, "folders"), 10.0);
    // The corpus on disk, read without mailferry, is what the report counts.
    let path = corpus["mailboxes"][0]["path"].as_str().unwrap();
    let files = read_maildir(std::path::Path::new(path));
    assert_eq!(files.len() as u64, messages);
    assert_eq!(
        files.values().map(|(_, b)| b.len() as u64).sum::<u64>(),
        bytes
    );
    assert!(num(corpus, "median_bytes") < num(corpus, "mean_bytes"));
    assert_eq!(cases[0]["runs"].as_array().unwrap().len(), 1);
    assert_figures(&cases[0]["median"], messages, bytes, 1);
    assert!(keep.join("run/volume").is_dir(), "--keep keeps the volume");

    // A second bench in the same directory reuses the corpus.
    let again = bench(&["--messages", "200", "--keep", keep.to_str().unwrap()]);
    assert_eq!(num(&again, "cases.0.corpus.generate_seconds"), 0.0);
    assert_eq!(num(&again, "cases.0.corpus.bytes") as u64, bytes);
}

#[test]
fn network_mode_with_several_mailboxes() {
    let r = bench(&[
        "--messages",
        "200",
        "--mailboxes",
        "1,3",
        "--mode",
        "network",
    ]);
    assert_eq!(r["mode"], "network");
    let cases = r["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for (case, mailboxes) in cases.iter().zip([1u64, 3]) {
        assert_eq!(num(case, "mailboxes") as u64, mailboxes);
        assert_eq!(num(case, "concurrency") as u64, mailboxes);
        let corpus = &case["corpus"];
        let boxes = corpus["mailboxes"].as_array().unwrap();
        assert_eq!(boxes.len() as u64, mailboxes);
        let per: u64 = boxes.iter().map(|b| num(b, "messages") as u64).sum();
        assert_eq!(per, 200);
        assert_figures(&case["median"], 200, num(corpus, "bytes") as u64, mailboxes);
    }
}

#[test]
fn small_messages_from_mbox() {
    let r = bench(&[
        "--small",
        "--messages",
        "150",
        "--source",
        "mbox",
        "--folders",
        "3",
    ]);
    assert_eq!(r["source"], "mbox");
    let corpus = &r["cases"][0]["corpus"];
    assert_eq!(corpus["model"], "fixed 2048 B");
    let mean = num(corpus, "mean_bytes");
    assert!((1800.0..2400.0).contains(&mean), "mean {mean}");
    assert_figures(
        &r["cases"][0]["median"],
        150,
        num(corpus, "bytes") as u64,
        1,
    );
}

#[test]
fn imap_source_served_by_a_scratch_dovecot() {
    assert!(
        crate::dovecot::available(),
        "Dovecot is not installed: apt-get install dovecot-imapd (./test.sh does)"
    );
    let r = bench(
        &["--messages", "120", "--mailboxes", "2", "--folders", "3"]
            .into_iter()
            .chain(["--source", "imap"])
            .collect::<Vec<_>>(),
    );
    assert_eq!(r["source"], "imap");
    let case = &r["cases"][0];
    let corpus = &case["corpus"];
    let run = &case["median"];
    assert_eq!(num(run, "messages") as u64, 120);
    // Served as CRLF: never fewer bytes than the Maildir files hold.
    assert!(num(run, "bytes") >= num(corpus, "bytes"), "{run}");
    assert_eq!(num(run, "verified.messages_checked") as u64, 120);
    assert_eq!(num(run, "verified.receipts_matching") as u64, 2);
    assert!(num(run, "cpu_seconds_per_gb.source_read") > 0.0, "{run}");
}

/// Issue 18: `--latency` runs one row per delay through the relay, and `--compare mbsync`
/// puts Debian's mbsync on the same server through the same relay in each row; it moved
/// the same mail (a comparison that did not is worthless). No speed is asserted.
#[test]
fn issue18_latency_rows_with_mbsync_side_by_side() {
    assert!(
        crate::dovecot::available(),
        "Dovecot is not installed: apt-get install dovecot-imapd (./test.sh does)"
    );
    let have_mbsync = std::process::Command::new("mbsync")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        have_mbsync,
        "mbsync is not installed: apt-get install isync (./test.sh does)"
    );
    let r = bench(&[
        "--source",
        "imap",
        "--messages",
        "60",
        "--folders",
        "3",
        "--latency",
        "0,5ms",
        "--compare",
        "mbsync",
    ]);
    let cases = r["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2, "one row per delay");
    for (case, ms) in cases.iter().zip([0.0, 5.0]) {
        assert_eq!(num(case, "latency_ms"), ms, "{case}");
        assert!(num(case, "relay_peak_queued_bytes") > 0.0, "{case}");
        let ours = &case["median"];
        assert_eq!(num(ours, "messages") as u64, 60);
        assert_eq!(num(ours, "verified.messages_checked") as u64, 60);
        let theirs = &case["mbsync"];
        assert!(theirs.is_object(), "no mbsync row: {case}");
        assert_eq!(theirs["same_mail"], true, "{theirs}");
        assert_eq!(num(theirs, "messages") as u64, 60, "{theirs}");
        // The same mail as mailferry moved, counted the same way (as IMAP serves it).
        assert_eq!(num(theirs, "bytes"), num(ours, "bytes"), "{theirs}");
        assert!(num(theirs, "msgs_per_s") > 0.0, "{theirs}");
        assert!(num(theirs, "mailferry_ratio_msgs") > 0.0, "{theirs}");
        assert!(theirs["version"].as_str().unwrap().contains("isync"));
    }
}

/// Issue 20: `--workers 1,2` moves the same corpus with that many `mailferry worker`
/// processes leasing from a scratch database on the test PostgreSQL; every run verified
/// (every message in the volume, receipts equal), the workers' CPU is reported, and the
/// scratch databases are gone afterwards. No speed is asserted.
#[test]
fn issue20_workers_rows_each_verified() {
    let Some(server) = mailferry_coord::db::testing::server() else {
        return;
    };
    assert!(
        crate::dovecot::available(),
        "Dovecot is not installed: apt-get install dovecot-imapd (./test.sh does)"
    );
    let count_scratch = || {
        crate::workers::sql_i64(
            &server,
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'mf_bench_%'",
        )
    };
    let before = count_scratch();
    let o = run(mailferry()
        .env("MAILFERRY_DB", &server)
        .args(["bench", "--source", "imap", "--messages", "80"])
        .args(["--mailboxes", "4", "--folders", "2", "--latency", "2ms"])
        .args(["--workers", "1,2", "--concurrency", "2", "--json"]));
    assert!(o.status.success(), "{}", describe(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["mode"], "network");
    assert!(
        !r["command"].as_str().unwrap().contains("postgres://"),
        "the database URL is echoed: {}",
        r["command"]
    );
    let cases = r["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2, "one row per worker count");
    for (case, workers) in cases.iter().zip([1u64, 2]) {
        assert_eq!(num(case, "workers") as u64, workers, "{case}");
        let run = &case["median"];
        assert_eq!(num(run, "messages") as u64, 80, "{run}");
        assert_eq!(num(run, "verified.messages_checked") as u64, 80, "{run}");
        assert_eq!(num(run, "verified.receipts_matching") as u64, 4, "{run}");
        assert!(
            num(run, "cpu_seconds_by_thread.worker processes") > 0.0,
            "{run}"
        );
    }
    assert_eq!(
        count_scratch(),
        before,
        "a scratch database was left behind"
    );
}

#[test]
fn impossible_requests_are_usage_errors() {
    for args in [
        &[
            "--source",
            "imap",
            "--compare",
            "dovecot",
            "--messages",
            "10",
        ][..],
        &["--runs", "0"][..],
        // The relay and mbsync stand in front of an IMAP server.
        &["--latency", "10ms", "--messages", "10"][..],
        &["--compare", "mbsync", "--messages", "10"][..],
        &["--source", "imap", "--latency", "10", "--messages", "10"][..],
        &["--messages", "2", "--mailboxes", "3"][..],
        // Workers read an IMAP endpoint, queue in PostgreSQL, and count one mailbox case.
        &["--workers", "2", "--messages", "10"][..],
        &["--source", "imap", "--workers", "0", "--messages", "10"][..],
        &[
            "--source",
            "imap",
            "--workers",
            "2",
            "--mailboxes",
            "1,2",
            "--messages",
            "10",
        ][..],
    ] {
        let o = run(mailferry().arg("bench").args(args));
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", describe(&o));
    }
}
