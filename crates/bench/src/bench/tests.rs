use super::dovecot_compare::parse_dovecot;
use super::plan::plan;
use super::runner::runtime;
use super::stages::{attribute, role, Role};
use super::*;
use crate::sample::SizeModel;
use mailferry_proxy::StoreStats;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[test]
fn byte_counts() {
    assert_eq!(parse_bytes("1200000000"), Ok(1_200_000_000));
    assert_eq!(parse_bytes("1.2G"), Ok(1_200_000_000));
    assert_eq!(parse_bytes("500M"), Ok(500_000_000));
    assert_eq!(parse_bytes("64k"), Ok(64_000));
    assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
    assert_eq!(parse_bytes("512 MiB"), Ok(512 << 20));
    assert!(parse_bytes("0").is_err());
    assert!(parse_bytes("12 parsecs").is_err());
    assert!(parse_bytes("lots").is_err());
}

#[test]
fn default_plan_is_the_perf_md_corpus() {
    let (model, cases) = plan(&BenchArgs::default()).unwrap();
    assert_eq!(model, SizeModel::Realistic);
    assert_eq!(cases.len(), 1);
    assert_eq!(cases[0].messages, DEFAULT_MESSAGES);
    assert_eq!(
        (cases[0].mailboxes, cases[0].concurrency, cases[0].folders),
        (1, 1, 10)
    );
}

#[test]
fn small_preset_and_size() {
    let small = BenchArgs {
        small: true,
        ..Default::default()
    };
    let (model, cases) = plan(&small).unwrap();
    assert_eq!(model, SizeModel::Fixed(SMALL_MESSAGE_BYTES));
    assert_eq!(cases[0].messages, SMALL_MESSAGES);
    let sized = BenchArgs {
        size: Some(REALISTIC_MEAN_BYTES * 1000),
        ..Default::default()
    };
    assert_eq!(plan(&sized).unwrap().1[0].messages, 1000);
    let fixed = BenchArgs {
        size: Some(4096 * 10 + 1),
        message_size: Some(4096),
        ..Default::default()
    };
    let (model, cases) = plan(&fixed).unwrap();
    assert_eq!((model, cases[0].messages), (SizeModel::Fixed(4096), 11));
}

#[test]
fn scaling_and_folder_cases() {
    let scaling = BenchArgs {
        mailboxes: SCALING.to_vec(),
        messages: Some(800),
        ..Default::default()
    };
    let cases = plan(&scaling).unwrap().1;
    let shape: Vec<_> = cases
        .iter()
        .map(|c| (c.mailboxes, c.concurrency, c.messages))
        .collect();
    assert_eq!(shape, [(1, 1, 800), (2, 2, 800), (4, 4, 800), (8, 8, 800)]);
    let limited = BenchArgs {
        mailboxes: vec![8],
        concurrency: Some(3),
        messages: Some(80),
        ..Default::default()
    };
    assert_eq!(plan(&limited).unwrap().1[0].concurrency, 3);
    let folders = BenchArgs {
        per_folder: vec![1000, 10_000],
        ..Default::default()
    };
    let cases = plan(&folders).unwrap().1;
    assert_eq!(cases.len(), 2);
    assert_eq!(
        (cases[1].messages, cases[1].folders, cases[1].mailboxes),
        (10_000, 1, 1)
    );
}

#[test]
fn impossible_arguments_are_usage_errors() {
    let bad = [
        BenchArgs {
            runs: 0,
            ..Default::default()
        },
        BenchArgs {
            messages: Some(0),
            ..Default::default()
        },
        BenchArgs {
            messages: Some(3),
            mailboxes: vec![4],
            ..Default::default()
        },
        BenchArgs {
            messages: Some(3),
            size: Some(10_000),
            ..Default::default()
        },
        BenchArgs {
            per_folder: vec![100],
            mailboxes: vec![2],
            ..Default::default()
        },
        BenchArgs {
            source: SourceKind::Imap,
            compare_dovecot: true,
            ..Default::default()
        },
    ];
    for args in bad {
        match plan(&args) {
            Err(AppError::Usage(_)) => {}
            other => panic!("{args:?}: {other:?}"),
        }
    }
}

#[test]
fn threads_are_attributed_by_role() {
    assert_eq!(role("mailferry-read"), Role::SourceRead);
    assert_eq!(role("mailferry-check"), Role::AgentAudit);
    assert_eq!(role("mailferry-commi"), Role::Commit);
    assert_eq!(role("mf-store-sync"), Role::CommitSync);
    assert_eq!(role("mf-store-index"), Role::CommitIndex);
    assert_eq!(role("mf-store-audit"), Role::CommitAudit);
    assert_eq!(role("mf-emb-w1"), Role::Transport);
    assert_eq!(role("mf-srv-w0"), Role::Transport);
    assert_eq!(role("mf-agt-b3"), Role::SourceRead);
    assert_eq!(role("mf-srv-b12"), Role::Store);
    assert_eq!(role("mf-emb-b0"), Role::Store);
    assert_eq!(role("mf-cpu-sampler"), Role::Other);
    assert_eq!(role("mailferry"), Role::Other);

    let t = |name: &str, seconds: f64| cpu::ThreadCpu {
        tid: 1,
        name: name.into(),
        seconds,
    };
    let usage = cpu::CpuUsage {
        threads: vec![
            t("mailferry-read", 1.0),
            t("mf-emb-w0", 2.0),
            t("mf-emb-w1", 1.0),
            t("mf-emb-b0", 4.0),
            t("mailferry-commi", 2.0),
            t("mailferry-check", 0.5),
            // The delay relay stands in for the network: not ours.
            t("mf-relay", 2.0),
        ],
        process_seconds: 13.0,
    };
    let st = StoreStats::default();
    st.write_nanos.store(4_000, Ordering::Relaxed);
    st.encrypt_nanos.store(1_000, Ordering::Relaxed);
    st.sync_nanos.store(1_000, Ordering::Relaxed);
    st.index_nanos.store(2_000, Ordering::Relaxed);
    st.audit_nanos.store(1_000, Ordering::Relaxed);
    let (c, by_thread) = attribute(&usage, &st);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert!(close(c.source_read, 1.0), "{c:?}");
    assert!(close(c.transport_tls, 3.0), "{c:?}");
    assert!(
        close(c.encryption, 1.0) && close(c.store_write, 3.0),
        "{c:?}"
    );
    assert!(close(c.index, 1.0) && close(c.sync, 0.5), "{c:?}");
    assert!(close(c.audit, 1.0), "{c:?}");
    // 10.5 s attributed to threads; the process used 11.
    assert!(close(c.other, 0.5) && close(c.total, 11.0), "{c:?}");
    assert!(close(by_thread["mf-emb-w"], 3.0), "{by_thread:?}");
    assert!(close(by_thread["mf-relay"], 2.0), "{by_thread:?}");
}

#[test]
fn dovecot_lines_parse() {
    let ours = RunFigures {
        mb_per_s: 270.0,
        msgs_per_s: 4500.0,
        ..Default::default()
    };
    let text = "dovecot version=2.3.19.1\n\
        dovecot_mailcrypt messages=2000 bytes=118767556 seconds=9.12 mb_per_s=13.50 msgs_per_s=225.0 encrypted=yes\n\
        noise\n\
        dovecot_plain messages=2000 bytes=118767556 seconds=0.91 mb_per_s=135.0 msgs_per_s=2250.0 encrypted=no\n";
    let (version, rows) = parse_dovecot(text, &ours);
    assert_eq!(version, "2.3.19.1");
    assert_eq!(rows.len(), 2);
    assert!(rows[0].encrypted && !rows[1].encrypted);
    assert!((rows[0].mailferry_ratio_mb - 20.0).abs() < 1e-9);
    assert!((rows[1].mailferry_ratio_msgs - 2.0).abs() < 1e-9);
}

#[test]
fn the_median_run_is_the_middle_one_by_throughput() {
    let run = |run, mb_per_s| RunFigures {
        run,
        mb_per_s,
        ..Default::default()
    };
    assert_eq!(median_run(&[run(1, 3.0), run(2, 1.0), run(3, 2.0)]).run, 3);
    assert_eq!(median_run(&[run(1, 3.0)]).run, 1);
}

/// The attribution of CPU to stages rests on this: async tasks run on `-w` threads,
/// blocking tasks on `-b` threads.
#[test]
fn runtime_threads_are_named_by_kind() {
    let rt = runtime("mf-tst", 2).unwrap();
    let names = rt.block_on(async {
        let mut names = Vec::new();
        for _ in 0..20 {
            let a = tokio::spawn(async { std::thread::current().name().map(String::from) });
            let b = tokio::task::spawn_blocking(|| {
                std::thread::sleep(Duration::from_millis(2));
                std::thread::current().name().map(String::from)
            });
            names.push((a.await.unwrap().unwrap(), b.await.unwrap().unwrap()));
        }
        names
    });
    for (worker, blocking) in names {
        assert!(worker.starts_with("mf-tst-w"), "async task on {worker}");
        assert!(
            blocking.starts_with("mf-tst-b"),
            "blocking task on {blocking}"
        );
    }
}

#[test]
fn latency_lists() {
    let ms = Duration::from_millis;
    assert_eq!(parse_latencies("10ms"), Ok(vec![ms(10)]));
    assert_eq!(
        parse_latencies("0,5,10,40ms"),
        Ok(vec![ms(0), ms(5), ms(10), ms(40)])
    );
    assert_eq!(parse_latencies("0"), Ok(vec![ms(0)]));
    assert_eq!(
        parse_latencies("1.5ms, 0.2s"),
        Ok(vec![Duration::from_micros(1500), ms(200)])
    );
    assert_eq!(parse_latencies("500,1000ms"), Ok(vec![ms(500), ms(1000)]));
    // 5 s and 2 s one way: typos, not WANs.
    for bad in ["10", "5,10", "ten", "10ms,", "2s", "5,1s", "-5ms", ""] {
        assert!(parse_latencies(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn latency_and_mbsync_need_the_imap_source() {
    let usage = |a: BenchArgs| match plan(&a) {
        Err(AppError::Usage(m)) => m,
        other => panic!("{other:?}"),
    };
    let m = usage(BenchArgs {
        latency: vec![Duration::from_millis(10)],
        ..Default::default()
    });
    assert!(m.contains("--source imap"), "{m}");
    let m = usage(BenchArgs {
        compare_mbsync: true,
        source: SourceKind::Mbox,
        ..Default::default()
    });
    assert!(m.contains("--source imap"), "{m}");
}

#[test]
fn bytes_are_counted_as_imap_serves_them() {
    use super::mbsync::{maildir_totals, wire_len};
    assert_eq!(wire_len(b""), 0);
    assert_eq!(wire_len(b"a\nb\r\nc\n"), 9);
    assert_eq!(wire_len(b"\r\n\r\n"), 4);
    let dir = tempfile::tempdir().unwrap();
    let put = |rel: &str, data: &[u8]| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    // What mbsync writes: LF line ends and its X-TUID line in the header; the same
    // line in a body is the message's own.
    put(
        "INBOX/cur/1,U=1:2,S",
        b"Subject: a\nX-TUID: kV4mIdL0Z4vK\n\nbody\n",
    );
    put(
        "Archive/2024/new/2,U=1:2,",
        b"Subject: b\n\nX-TUID: kV4mIdL0Z4vK\n",
    );
    put("INBOX/.mbsyncstate", b"not a message");
    put("INBOX/tmp/partial", b"not a message either");
    assert_eq!(
        maildir_totals(dir.path(), true).unwrap(),
        (2, (12 + 2 + 6) + (12 + 2 + 22))
    );
    assert_eq!(
        maildir_totals(dir.path(), false).unwrap(),
        (2, (12 + 22 + 2 + 6) + (12 + 2 + 22))
    );
}
