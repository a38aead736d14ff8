use super::*;

fn parse(text: &str) -> Result<Endpoint, String> {
    Endpoint::parse(text, Path::new("/etc/mailferry/ep.toml")).map_err(|e| e.to_string())
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = parse(
        "kind = \"imap\"\nroot = \"/x/{user}\"\ntls = \"plain\"\nport = 0\n\
         master_user = \"m\"\nmax_concurrent_moves = 2\n\
         max_concurrent_incremental_syncs = 3\nbogus = 1\n",
    )
    .unwrap_err();
    for needle in [
        "bogus: unknown key",
        "root: only for file sources",
        "host: missing",
        "tls: \"plain\" is not imaps or starttls",
        "port: 0 is not a TCP port",
        "master_user and master_password_file: give both",
        "max_concurrent_incremental_syncs: 3 is more than max_concurrent_moves (2)",
    ] {
        assert!(e.contains(needle), "{needle}: {e}");
    }
    let e = parse("kind = \"maildir\"\nroot = \"/srv/mail/Maildir\"\nhost = \"h\"\n").unwrap_err();
    assert!(e.contains("has no {user}"), "{e}");
    assert!(e.contains("host: only for kind = \"imap\""), "{e}");
}

#[test]
fn file_and_imap_sources_per_user() {
    let ep = parse("kind = \"maildir\"\nroot = \"mail/{user}/Maildir\"\n").unwrap();
    let (spec, _) = ep.source_for("alice", None);
    assert_eq!(spec, "maildir:/etc/mailferry/mail/alice/Maildir");
    assert!(ep.check_user("../etc").is_some());
    assert!(ep.check_user("a/b").is_some());
    assert_eq!(ep.max_concurrent_moves, 4);

    let ep = parse(
        "kind = \"imap\"\nhost = \"imap.example.com\"\ntls = \"starttls\"\n\
         master_user = \"admin\"\nmaster_password_file = \"m.pw\"\nca_file = \"/ca.pem\"\n",
    )
    .unwrap();
    let (spec, o) = ep.source_for("alice@example.com", None);
    assert_eq!(
        spec,
        "imap://alice%40example.com*admin@imap.example.com:143"
    );
    let parsed = mailferry_agent::source::imap::ServerSpec::parse(&spec).unwrap();
    assert_eq!(parsed.user, "alice@example.com*admin");
    assert_eq!(o.password_file.unwrap(), Path::new("/etc/mailferry/m.pw"));
    assert_eq!(o.source_ca.unwrap(), Path::new("/ca.pem"));
    assert!(!ep.needs_user_password());
    assert!(ep.check_user("a*b").is_some());
}

#[test]
fn cert_sha256_pins_an_imap_endpoint_and_is_checked() {
    let fp = "ab".repeat(32);
    let ep = parse(&format!(
        "kind = \"imap\"\nhost = \"imap.example.com\"\ncert_sha256 = \"{fp}\"\n"
    ))
    .unwrap();
    let (_, o) = ep.source_for("alice", None);
    assert_eq!(
        o.source_cert_sha256.unwrap().to_string(),
        ["AB"; 32].join(":")
    );
    assert!(o.source_ca.is_none());
    let err = parse("kind = \"imap\"\nhost = \"h\"\ncert_sha256 = \"AB:CD\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("cert_sha256:"), "{err}");
    let err = parse(&format!(
        "kind = \"maildir\"\nroot = \"/m/{{user}}\"\ncert_sha256 = \"{fp}\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cert_sha256: only for kind = \"imap\""),
        "{err}"
    );
}

/// issue 18: `connections` and `max_connections` are IMAP keys with ranges; a
/// per-move count over the total is refused; `connections` reaches the source options.
#[test]
fn connections_and_max_connections_issue18() {
    let ep = parse("kind = \"imap\"\nhost = \"h\"\n").unwrap();
    let i = ep.imap.as_ref().unwrap();
    assert_eq!((i.connections, i.max_connections), (None, None));
    assert!(ep.connection_limit().is_none());
    assert_eq!(ep.source_for("alice", None).1.connections, None);

    let ep =
        parse("kind = \"imap\"\nhost = \"h\"\nconnections = 8\nmax_connections = 15\n").unwrap();
    let (_, o) = ep.source_for("alice", None);
    assert_eq!(o.connections, Some(8));
    assert_eq!(ep.connection_limit().map(|l| l.max()), Some(15));
    // Equal is fine: one move may take the whole budget.
    parse("kind = \"imap\"\nhost = \"h\"\nconnections = 2\nmax_connections = 2\n").unwrap();
    // max_connections alone, smaller than the default count, is fine too (cut at run time).
    parse("kind = \"imap\"\nhost = \"h\"\nmax_connections = 1\n").unwrap();

    let e =
        parse("kind = \"imap\"\nhost = \"h\"\nconnections = 0\nmax_connections = 0\nport = 0\n")
            .unwrap_err();
    for needle in [
        "connections: 0 must be between 1 and 64",
        "max_connections: 0 must be between 1 and 10000",
        // Reported with the others, not instead of them.
        "port: 0 is not a TCP port",
    ] {
        assert!(e.contains(needle), "{needle}: {e}");
    }
    let e = parse("kind = \"imap\"\nhost = \"h\"\nconnections = 65\n").unwrap_err();
    assert!(
        e.contains("connections: 65 must be between 1 and 64"),
        "{e}"
    );
    let e =
        parse("kind = \"imap\"\nhost = \"h\"\nconnections = 8\nmax_connections = 4\n").unwrap_err();
    assert!(
        e.contains("connections: 8 is more than max_connections (4)"),
        "{e}"
    );
    let e = parse("kind = \"imap\"\nhost = \"h\"\nconnections = \"4\"\n").unwrap_err();
    assert!(e.contains("connections: expected an integer"), "{e}");
    let e =
        parse("kind = \"maildir\"\nroot = \"/m/{user}\"\nconnections = 4\nmax_connections = 4\n")
            .unwrap_err();
    assert!(e.contains("connections: only for kind = \"imap\""), "{e}");
    assert!(
        e.contains("max_connections: only for kind = \"imap\""),
        "{e}"
    );
}

/// `endpoint test` says how moves will read an IMAP endpoint.
#[test]
fn the_test_report_shows_the_reading_settings() {
    assert_eq!(
        reading_text(Some(8), Some(15)),
        "reading: 8 per move; at most 15 across the moves of a batch run\n"
    );
    assert_eq!(
        reading_text(None, None),
        "reading: the profile's source.connections, else 4, per move; no limit across \
         the moves of a batch run\n"
    );
    assert!(reading_text(None, Some(2)).contains("cut to 2 per move"));
    let r = TestReport {
        endpoint: "/e.toml".into(),
        kind: Kind::Imap,
        user: None,
        source: None,
        certificate: None,
        checks: Vec::new(),
        ok: true,
        connections: Some(3),
        max_connections: None,
    };
    assert!(render_text(&r).contains("reading: 3 per move; no limit"));
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["connections"], 3);
    assert!(json["max_connections"].is_null());
    let file = TestReport {
        kind: Kind::Maildir,
        ..r
    };
    assert!(!render_text(&file).contains("reading:"));
}
