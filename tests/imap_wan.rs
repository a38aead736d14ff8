//! The IMAP source as a remote server sees it (issue 18), against the real Dovecot: a
//! server that allows fewer connections than asked, a message far larger than the
//! fetch window among small ones, and (with the bench's delay relay) pipelined reading
//! over a link with a round trip, killed at random points.

use crate::dovecot::{Dovecot, Options};
use crate::imap::{
    assert_same, corpus, export_index, move_imap, populate, seen_at_source, skip, source_index,
};
use crate::util::{describe, init_volume, Env};

/// Dovecot with `mail_max_userip_connections = 2`: the move asks for 4 reading
/// connections, is refused the ones over the limit, goes on with those it got, and moves
/// everything exactly.
#[test]
fn a_server_that_allows_two_connections_gets_two_and_the_move_completes() {
    if skip() {
        return;
    }
    let dv = Dovecot::start_configured(&Options {
        extra_conf: "protocol imap {\n  mail_max_userip_connections = 2\n}\n".into(),
        ..Options::default()
    });
    let msgs = corpus(200, 81, 0);
    populate(&dv, &msgs);
    let env = Env::new();
    init_volume(&env);
    let (code, report, o) = move_imap(&env, &dv, true, &["--source-connections", "4"]);
    assert_eq!(code, 0, "{}\n{}", describe(&o), dv.log());
    assert_eq!(report.unwrap()["items_moved"], msgs.len() as u64);
    assert_same(
        &source_index(&msgs),
        &export_index(&env, &env.path("export")),
    );
    let log = dv.log();
    assert!(
        log.contains("Maximum number of connections"),
        "the server never refused a connection, so the limit was not exercised:\n{log}"
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("reading with fewer"),
        "the refusal was not reported:\n{stderr}"
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
