use super::*;

fn endpoint(dir: &Path, text: &str) -> Endpoint {
    let p = dir.join("ep.toml");
    std::fs::write(&p, text).unwrap();
    Endpoint::load(&p).unwrap()
}

#[test]
fn exchange_csv_with_bom_quotes_and_extra_columns() {
    let d = tempfile::tempdir().unwrap();
    let ep = endpoint(d.path(), "kind = \"imap\"\nhost = \"imap.example.com\"\n");
    let csv = d.path().join("u.csv");
    // A BOM (Excel), other capitalisation, a quoted password with a comma and a quote,
    // a notes column spanning two lines, a blank line.
    std::fs::write(
        &csv,
        "\u{feff}emailaddress,USERNAME,Notes,Password\n\
         a@example.com,a,\"two\nlines\",\"p,w\"\"1\"\n\
         \n\
         b@,b,,x\n",
    )
    .unwrap();
    let e = read_users(&csv, &ep, &HashSet::new())
        .unwrap_err()
        .to_string();
    // Rows as a spreadsheet numbers them: a cell of two lines is one row, a blank line
    // is a row.
    assert!(e.contains("row 4, EmailAddress"), "{e}");
    assert!(!e.contains("p,w"), "{e}");
    std::fs::write(
        &csv,
        "\u{feff}emailaddress,USERNAME,Notes,Password\n\
         a@example.com,a,\"two\nlines\",\"p,w\"\"1\"\n",
    )
    .unwrap();
    let u = read_users(&csv, &ep, &HashSet::new()).unwrap();
    assert_eq!(u.users.len(), 1);
    assert_eq!(u.users[0].password, PasswordSource::Csv);
    let pw = inline_passwords(&csv).unwrap();
    assert_eq!(pw["a@example.com"].expose(), b"p,w\"1");
}

#[test]
fn file_sources_need_no_password_and_known_addresses_are_set_aside() {
    let d = tempfile::tempdir().unwrap();
    let ep = endpoint(d.path(), "kind = \"maildir\"\nroot = \"/m/{user}\"\n");
    let csv = d.path().join("u.csv");
    std::fs::write(
        &csv,
        "EmailAddress,UserName\na@example.com,a\nB@Example.com,b\n",
    )
    .unwrap();
    let known: HashSet<String> = ["b@example.com".to_string()].into();
    let u = read_users(&csv, &ep, &known).unwrap();
    assert_eq!(u.users.len(), 1);
    assert_eq!(u.users[0].password, PasswordSource::None);
    assert_eq!(u.already, [(3, "b@example.com".to_string())]);
    assert!(check_name("spring-2025").is_ok());
    assert!(check_name("../x").is_err() && check_name(".hidden").is_err());
}

/// issue 18: one batch run makes ONE budget of the endpoint's `max_connections`, and
/// every move's options hold a clone of it: together they never get more permits.
#[test]
fn the_moves_of_a_run_share_one_connection_budget_issue18() {
    use mailferry_agent::source::connections::DEFAULT_CONNECTIONS;
    let d = tempfile::tempdir().unwrap();
    let ep = endpoint(
        d.path(),
        "kind = \"imap\"\nhost = \"h\"\nconnections = 2\nmax_connections = 3\n",
    );
    let profile = Profile::default();
    let reading = SharedReading::new(&ep);
    let mut moves: Vec<SourceOptions> = (0..3)
        .map(|_| {
            let mut o = SourceOptions::default();
            reading.apply(&mut o, &profile);
            o
        })
        .collect();
    assert!(moves.iter().all(|o| o.connections == Some(2)));
    let limits: Vec<_> = moves
        .iter_mut()
        .map(|o| {
            o.connection_limit
                .take()
                .expect("every move gets the budget")
        })
        .collect();
    let held: Vec<_> = limits
        .iter()
        .map(|l| l.try_acquire().expect("three permits for three moves"))
        .collect();
    for l in &limits {
        assert!(
            l.try_acquire().is_none(),
            "a fourth over a shared budget of 3"
        );
    }
    drop(held);
    assert!(limits[2].try_acquire().is_some());
    // Another run (or another endpoint) gets a budget of its own.
    let other = SharedReading::new(&ep);
    let mut o = SourceOptions::default();
    other.apply(&mut o, &profile);
    let _all: Vec<_> = (0..3).map(|_| limits[0].try_acquire().unwrap()).collect();
    assert!(o.connection_limit.unwrap().try_acquire().is_some());

    // Without connections: the recorded count, else the profile's, else the default,
    // cut to the budget.
    let ep = endpoint(
        d.path(),
        "kind = \"imap\"\nhost = \"h\"\nmax_connections = 3\n",
    );
    let reading = SharedReading::new(&ep);
    let count = |recorded: Option<usize>, profile_says: Option<usize>| {
        let mut p = Profile::default();
        p.source.connections = profile_says;
        let mut o = SourceOptions {
            connections: recorded,
            ..Default::default()
        };
        reading.apply(&mut o, &p);
        o.connections
    };
    const { assert!(DEFAULT_CONNECTIONS > 3, "the default is cut here") };
    assert_eq!(count(None, None), Some(3));
    assert_eq!(count(None, Some(2)), Some(2));
    assert_eq!(count(Some(1), Some(2)), Some(1));
    assert_eq!(count(Some(9), None), Some(3));

    // Without max_connections: no budget, and the count is left to the pass (which
    // takes the profile's, else the default: see `SourceOptions::with_profile`).
    let ep = endpoint(d.path(), "kind = \"imap\"\nhost = \"h\"\nconnections = 6\n");
    let mut o = SourceOptions::default();
    SharedReading::new(&ep).apply(&mut o, &profile);
    assert_eq!(
        (o.connections, o.connection_limit.is_none()),
        (Some(6), true)
    );
    let ep = endpoint(d.path(), "kind = \"maildir\"\nroot = \"/m/{user}\"\n");
    let mut o = SourceOptions::default();
    SharedReading::new(&ep).apply(&mut o, &profile);
    assert_eq!((o.connections, o.connection_limit.is_none()), (None, true));
}

/// A batch's mailbox records the endpoint's `connections`, so that `move complete
/// --state mailboxes/ADDRESS` reads with as many outside a batch run.
#[test]
fn a_batch_mailbox_records_the_endpoint_connections_issue18() {
    let d = tempfile::tempdir().unwrap();
    let ep = endpoint(d.path(), "kind = \"imap\"\nhost = \"h\"\nconnections = 5\n");
    let b = Batch {
        version: VERSION,
        name: "b".into(),
        created_at: String::new(),
        endpoint: ep.file.clone(),
        destination: Destination::Remote {
            url: "https://127.0.0.1:1".into(),
            ca: "/ca.pem".into(),
            token_file: "/t".into(),
        },
        profile: None,
        concurrency: None,
        settings: Settings::default(),
        suspended: false,
        users: Vec::new(),
    };
    let u = BatchUser {
        address: "a@example.com".into(),
        user_name: "a".into(),
        csv: "/u.csv".into(),
        row: 2,
        password: PasswordSource::None,
        dir: "mailboxes/a@example.com".into(),
    };
    assert_eq!(user_invocation(&b, &ep, &u).source_connections, Some(5));
}
