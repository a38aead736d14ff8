//! The IMAP source as a remote server sees it (issue 18), against the real Dovecot: a
//! server that allows fewer connections than asked, a message far larger than the
//! fetch window among small ones, and (with the bench's delay relay) pipelined reading
//! over a link with a round trip, killed at random points.

use crate::batch::{batch_new, batch_status};
use crate::dovecot::{self, Dovecot, Options};
use crate::imap::{
    assert_same, corpus, export_index, move_and_kill, move_command, move_imap, move_imap_with,
    populate, run_move, seen_at_source, skip, source_index, Lcg,
};
use crate::util::{describe, init_volume, Env};
use mailferry_bench::relay::{DelayRelay, SizeLiar};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Dovecot with `mail_max_userip_connections = 2`: the move asks for 4 reading
/// connections, is refused the ones over the limit, goes on with those it got, and moves
/// everything exactly. Dovecot counts logins that arrive together loosely (it may let
/// all four in), so the move is repeated, each time into a fresh volume and each time
/// exact, until one of them was refused.
#[test]
fn a_server_that_allows_two_connections_gets_two_and_the_move_completes() {
    if skip() {
        return;
    }
    let dv = Dovecot::start_configured(&Options {
        extra_conf: "protocol imap {\n  mail_max_userip_connections = 2\n}\n".into(),
        ..Options::default()
    });
    let msgs = corpus(400, 81, 0);
    populate(&dv, &msgs);
    // A 5 ms delay each way, so that the four connections overlap (on bare loopback the
    // first two can finish before the others log in).
    let upstream: std::net::SocketAddr = ([127, 0, 0, 1], dv.imaps_port).into();
    let relay = DelayRelay::start(upstream, std::time::Duration::from_millis(5)).unwrap();
    let url = format!("imaps://{}@{}", dovecot::USER, relay.addr());
    let refusals = |dv: &Dovecot| dv.log().matches("Maximum number of connections").count();
    for attempt in 1..=8 {
        let before = refusals(&dv);
        let env = Env::new();
        init_volume(&env);
        let (code, report, o) =
            move_imap_with(&env, &url, &dv, &["--source-connections", "4"], true);
        assert_eq!(code, 0, "{}\n{}", describe(&o), dv.log());
        assert_eq!(report.unwrap()["items_moved"], msgs.len() as u64);
        assert_same(
            &source_index(&msgs),
            &export_index(&env, &env.path("export")),
        );
        if refusals(&dv) > before {
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert!(
                stderr.contains("reading with fewer"),
                "the refusal was not reported:\n{stderr}"
            );
            eprintln!("refused on attempt {attempt}");
            return;
        }
    }
    panic!(
        "the server never refused a connection in 8 moves; the limit was not exercised:\n{}",
        dv.log()
    );
}

/// An 80 MiB message among small ones streams through a fetch window of a few MiB: the
/// move's peak RSS stays far below what holding the message would take, and every
/// message arrives byte for byte.
#[test]
fn a_large_message_among_small_ones_streams_in_bounded_memory() {
    if skip() {
        return;
    }
    let dv = Dovecot::start();
    let big = 80 << 20;
    let msgs = corpus(60, 82, big);
    populate(&dv, &msgs);
    let seen = seen_at_source(&dv);
    let env = Env::new();
    init_volume(&env);
    let (code, report, o) = move_imap(&env, &dv, true, &[]);
    assert_eq!(code, 0, "{}\n{}", describe(&o), dv.log());
    let report = report.unwrap();
    assert_eq!(report["items_moved"], msgs.len() as u64);
    let rss = report["peak_rss_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no peak_rss_bytes in {report}"));
    eprintln!(
        "peak RSS with an {} MiB message: {} MiB",
        big >> 20,
        rss >> 20
    );
    assert!(
        rss < big as u64,
        "peak RSS {} MiB: the {} MiB message was held whole",
        rss >> 20,
        big >> 20
    );
    assert_same(
        &source_index(&msgs),
        &export_index(&env, &env.path("export")),
    );
    assert_eq!(seen_at_source(&dv), seen);
}

/// A TCP relay in front of Dovecot that counts connections open at once; returns its
/// port and the highest count seen.
fn counting_relay(upstream: u16) -> (u16, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let peak = Arc::new(AtomicUsize::new(0));
    let seen = peak.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let open = Arc::new(AtomicUsize::new(0));
            // Bounded: the relay serves at most 500 connections, then stops.
            for _ in 0..500 {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let open = open.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    // A connection the client closed just before opening this one may
                    // not have been read to its end yet: give that 50 ms. A connection
                    // really held beside this one lives far longer (TLS and a login).
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.fetch_max(now, Ordering::SeqCst);
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        open.fetch_sub(1, Ordering::SeqCst);
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let down = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    });
                    // Closed when the client closes its side.
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                    open.fetch_sub(1, Ordering::SeqCst);
                    drop(sw);
                    let _ = down.await;
                });
            }
        });
    });
    (port, peak)
}

/// Three mailboxes of one batch, moved at once, read one endpoint whose
/// `max_connections` is 2: each move would read with 2 connections (after one to
/// list), yet the server never sees more than 2 at once, and every mailbox syncs.
#[test]
fn a_batch_never_opens_more_than_the_endpoints_max_connections() {
    if skip() {
        return;
    }
    let dv = Dovecot::start();
    let msgs = corpus(150, 83, 0);
    populate(&dv, &msgs);
    let (port, peak) = counting_relay(dv.imaps_port);
    let env = Env::new();
    init_volume(&env);
    let ep = env.path("imap.toml");
    std::fs::write(
        &ep,
        format!(
            "kind = \"imap\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"imaps\"\n\
             ca_file = \"{}\"\nconnections = 2\nmax_connections = 2\n\
             max_concurrent_moves = 3\n",
            dv.ca_pem.display()
        ),
    )
    .unwrap();
    // Three destination mailboxes, all read from Dovecot's one user.
    let csv = env.path("users.csv");
    let pw = dovecot::PASSWORD.replace('"', "\"\"");
    let mut text = "EmailAddress,UserName,Password\n".to_string();
    for who in ["ann", "bob", "cat"] {
        text.push_str(&format!("{who}@example.com,{},\"{pw}\"\n", dovecot::USER));
    }
    std::fs::write(&csv, text).unwrap();
    let o = batch_new(&env, "wan", &csv, &ep, &["--start"]);
    assert!(o.status.success(), "{}\n{}", describe(&o), dv.log());
    let s = batch_status(&env, "wan");
    for i in 0..3 {
        assert_eq!(s["mailboxes"][i]["status"]["state"], "synced", "{s}");
        assert_eq!(
            s["mailboxes"][i]["status"]["items_synced"],
            msgs.len() as u64,
            "{s}"
        );
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&peak),
        "{peak} connections open at once over a max_connections of 2"
    );
}

/// A relay rewrites every RFC822.SIZE Dovecot reports, larger and smaller than the
/// truth (as Exchange's can be): every message still moves byte for byte, none becomes
/// a bad item, and each one whose size was wrong carries a warning that says so.
#[test]
fn rfc822_sizes_that_lie_are_warnings_not_bad_items() {
    if skip() {
        return;
    }
    let dv = Dovecot::start();
    // Small messages, and one of 3 MB that is fetched in pieces.
    let msgs = corpus(40, 84, 3_000_000);
    populate(&dv, &msgs);
    let upstream: std::net::SocketAddr = ([127, 0, 0, 1], dv.imaps_port).into();
    // Off by a little and by a lot, both ways: within the room a small message is asked
    // for with, past it, and past a whole piece.
    for delta in [300, -300, -9_000, 2_000_000, -2_900_000] {
        let liar = SizeLiar::start(upstream, &dv.ca_pem, delta).expect("relay starts");
        let env = Env::new();
        init_volume(&env);
        let url = format!("imaps://{}@{}", dovecot::USER, liar.addr());
        let (code, report, o) = run_move(
            move_command(&env, &url, &dv, &[], false)
                .arg("--source-ca")
                .arg(liar.ca_pem())
                .arg("--password-file")
                .arg(&dv.password_file),
        );
        assert_eq!(code, 0, "delta {delta}: {}", describe(&o));
        assert!(liar.rewritten() > 0, "delta {delta}: nothing was rewritten");
        let report = report.unwrap();
        assert_eq!(
            report["items_moved"],
            msgs.len() as u64,
            "delta {delta}: {report}"
        );
        assert_eq!(report["bad_items"], serde_json::json!([]), "delta {delta}");
        let warned = report["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w.to_string().contains("RFC822.SIZE said"))
            .count();
        assert_eq!(warned, msgs.len(), "delta {delta}: {report}");
        assert_same(
            &source_index(&msgs),
            &export_index(&env, &env.path("export")),
        );
    }
}

/// Pipelined reading over a link with a 3 ms delay each way, killed (-9) at random
/// points with requests in flight on several connections: the rerun ends with every
/// message stored exactly once, and `\Seen` untouched at the source.
#[test]
fn pipelined_reads_over_a_delayed_link_killed_at_random_points_resume_exactly_once() {
    if skip() {
        return;
    }
    let dv = Dovecot::start();
    let msgs = corpus(150, 85, 2_000_000);
    populate(&dv, &msgs);
    let seen = seen_at_source(&dv);
    let upstream: std::net::SocketAddr = ([127, 0, 0, 1], dv.imaps_port).into();
    let relay = DelayRelay::start(upstream, std::time::Duration::from_millis(3)).unwrap();
    let url = format!("imaps://{}@{}", dovecot::USER, relay.addr());
    let env = Env::new();
    init_volume(&env);
    let mut rng = Lcg(85);
    let mut points: Vec<usize> = (0..3)
        .map(|_| 1 + rng.below(msgs.len() as u64 - 2) as usize)
        .collect();
    points.sort();
    let profile = env.path("profile.toml");
    std::fs::write(&profile, "[commit]\nmax_messages = 4\n").unwrap();
    let mut landed_mid_move = 0;
    for p in points {
        let at = move_and_kill(&env, &dv, &url, p, &profile);
        landed_mid_move += usize::from(at.is_some_and(|n| n < msgs.len()));
    }
    let (code, _, o) = move_imap_with(
        &env,
        &url,
        &dv,
        &["--profile", profile.to_str().unwrap()],
        true,
    );
    assert_eq!(code, 0, "{}", describe(&o));
    assert!(
        landed_mid_move > 0,
        "no kill landed before the move had finished"
    );
    assert_same(
        &source_index(&msgs),
        &export_index(&env, &env.path("export")),
    );
    assert_eq!(seen_at_source(&dv), seen);
}
