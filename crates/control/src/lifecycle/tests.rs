use super::*;

/// A recorded move whose source and proxy are never reached by these tests.
fn nowhere() -> Invocation {
    Invocation {
        source: "maildir:/nowhere".into(),
        mailbox: "a@example.com".into(),
        destination: Destination::Remote {
            url: "https://127.0.0.1:1".into(),
            ca: "/ca.pem".into(),
            token_file: "/t".into(),
        },
        profile: None,
        password_file: None,
        oauth_token_file: None,
        source_ca: None,
        source_prefix: None,
        source_namespaces: Default::default(),
        source_cert_sha256: None,
        max_bytes_per_second: None,
        max_messages_per_second: None,
        maildir_names: None,
        source_connections: None,
    }
}

#[test]
fn settings_merge_and_schedule() {
    let stored = Settings {
        complete_after: Some("2030-01-01T00:00:00Z".into()),
        bad_item_limit: Some(3),
        ..Settings::default()
    };
    let m = stored.merged(&Settings {
        suspend_when_ready: Some(true),
        ..Settings::default()
    });
    assert_eq!(
        m.complete_after, None,
        "suspend-when-ready clears the schedule"
    );
    assert_eq!(m.bad_item_limit, Some(3));
    let p = Profile::default();
    assert_eq!(
        Schedule::effective(&m, &p),
        Schedule {
            suspend_when_ready: true,
            complete_after: None
        }
    );
    let s = Schedule::effective(&stored, &p);
    assert_eq!(
        s.complete_after,
        Some(parse_rfc3339("2030-01-01T00:00:00Z").unwrap())
    );
}

#[test]
fn times_absolute_and_relative() {
    assert_eq!(parse_time("2025-07-01").unwrap(), "2025-07-01T00:00:00Z");
    let in_2h = parse_rfc3339(&parse_time("+2h").unwrap()).unwrap();
    assert!((in_2h - unix_now() - 7200).abs() <= 2);
    assert!(parse_rfc3339(&parse_time("in 30min").unwrap()).is_ok());
    assert!(parse_time("tomorrowish").is_err());
}

#[test]
fn specs_become_absolute() {
    let s = absolute_spec("maildir:rel/Maildir");
    assert!(
        s.starts_with("maildir:/") && s.ends_with("rel/Maildir"),
        "{s}"
    );
    assert_eq!(absolute_spec("imaps://a@h"), "imaps://a@h");
}

#[test]
fn suspend_and_resume_an_idle_move_and_refuse_passes_while_suspended() {
    let d = tempfile::tempdir().unwrap();
    let inv = nowhere();
    create(d.path(), inv.clone(), Settings::default(), "test").unwrap();
    assert!(create(d.path(), inv, Settings::default(), "test").is_err());
    assert_eq!(
        suspend(d.path(), "test", "").unwrap(),
        SuspendOutcome::Suspended
    );
    let e = precheck(d.path()).unwrap_err();
    assert_eq!(e.exit_code(), 5, "{e}");
    assert!(e.to_string().contains("move resume"), "{e}");
    assert_eq!(resume(d.path(), "test").unwrap(), MoveState::Created);
    precheck(d.path()).unwrap();
    let events: Vec<String> =
        mailferry_audit::read_records(d.path().join(mailferry_agent::state::AUDIT_FILE))
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect();
    assert_eq!(
        events.iter().filter(|e| *e == "move.state").count(),
        3,
        "{events:?}"
    );
    let lc = load(d.path()).unwrap().unwrap();
    let states: Vec<_> = lc.history.iter().map(|t| t.state).collect();
    assert_eq!(
        states,
        [MoveState::Created, MoveState::Suspended, MoveState::Created]
    );
}

#[test]
fn later_passes_keep_the_one_off_throttle_flags() {
    let d = tempfile::tempdir().unwrap();
    let inv = nowhere().with_throttle(&crate::control::ControlArgs {
        dry_run: true,
        max_bytes_per_second: Some(2_500_000),
        max_messages_per_second: Some(0.1),
    });
    create(d.path(), inv, Settings::default(), "test").unwrap();
    // What `move complete` runs with: read back from lifecycle.json.
    let args = recorded_args(d.path()).unwrap();
    let t = &args.profile.throttle;
    assert_eq!(t.max_bytes_per_second.map(|b| b.0), Some(2_500_000));
    assert_eq!(t.max_messages_per_second, Some(0.1));
    // Without flags, the profile's own throttle (none in the default) is used.
    let plain = tempfile::tempdir().unwrap();
    let mut inv2 = load(d.path()).unwrap().unwrap().invocation.unwrap();
    inv2.max_bytes_per_second = None;
    inv2.max_messages_per_second = None;
    create(plain.path(), inv2, Settings::default(), "test").unwrap();
    let args = recorded_args(plain.path()).unwrap();
    assert_eq!(args.profile.throttle.max_bytes_per_second, None);
    assert_eq!(args.profile.throttle.max_messages_per_second, None);
}

/// A `lifecycle.json` written by mailferry before `Destination` replaced
/// `StoredDestination` (issue 19): it loads unchanged, the recorded destination opens
/// the same volume with the same key file, and it is written back byte for byte.
#[test]
fn a_lifecycle_file_of_an_earlier_mailferry_loads_and_writes_back_unchanged_issue19() {
    let old = r#"{
  "version": 1,
  "mailbox": "a@example.com",
  "state": "completed",
  "history": [
    {
      "state": "created",
      "at": "2026-12-04T16:05:17Z",
      "reason": "created",
      "actor": "cli:unknown@vm"
    },
    {
      "state": "completed",
      "at": "2026-12-04T16:05:35Z",
      "reason": "final pass done; the move is complete",
      "actor": "cli:unknown@vm"
    }
  ],
  "settings": {
    "suspend_when_ready": null,
    "complete_after": null,
    "bad_item_limit": null,
    "large_item_limit": null
  },
  "invocation": {
    "source": "maildir:/srv/mail/a/Maildir",
    "mailbox": "a@example.com",
    "destination": {
      "kind": "local",
      "volume": "/srv/vol",
      "credential": "key_file",
      "credential_file": "/srv/vol.key"
    },
    "profile": null
  },
  "approved": [],
  "last_sync_at": "2026-12-04T16:05:35Z"
}"#;
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join(LIFECYCLE_FILE), old).unwrap();
    let lc = load(d.path()).unwrap().expect("a record");
    assert_eq!(lc.state, MoveState::Completed);
    let args = recorded_args(d.path()).unwrap();
    assert_eq!(
        args.destination,
        Destination::Local {
            volume: "/srv/vol".into(),
            credential: mailferry_store::Credential::KeyFile("/srv/vol.key".into()),
            s3: Default::default(),
        }
    );
    assert_eq!(serde_json::to_string_pretty(&lc).unwrap(), old);
}

/// issue 18: `--source-connections` is kept in the record, so `move complete` reads
/// with as many connections; a record without it (every earlier mailferry) still
/// loads, leaves the count to the profile, and is written back without the key.
#[test]
fn later_passes_keep_the_source_connections_issue18() {
    let d = tempfile::tempdir().unwrap();
    let inv = Invocation {
        source_connections: Some(7),
        ..nowhere()
    };
    create(d.path(), inv, Settings::default(), "test").unwrap();
    let text = std::fs::read_to_string(d.path().join(LIFECYCLE_FILE)).unwrap();
    assert!(text.contains("\"source_connections\": 7"), "{text}");
    let args = recorded_args(d.path()).unwrap();
    assert_eq!(args.source_options.connections, Some(7));

    let old = tempfile::tempdir().unwrap();
    create(old.path(), nowhere(), Settings::default(), "test").unwrap();
    let text = std::fs::read_to_string(old.path().join(LIFECYCLE_FILE)).unwrap();
    assert!(!text.contains("source_connections"), "{text}");
    let lc = load(old.path()).unwrap().unwrap();
    assert_eq!(lc.invocation.as_ref().unwrap().source_connections, None);
    assert_eq!(
        recorded_args(old.path())
            .unwrap()
            .source_options
            .connections,
        None
    );
    assert_eq!(serde_json::to_string_pretty(&lc).unwrap(), text);

    // A hand-edited count outside the range is refused with the key named.
    for bad in ["0", "65"] {
        let edited = text.replace(
            "\"profile\": null",
            &format!("\"profile\": null,\n    \"source_connections\": {bad}"),
        );
        assert_ne!(edited, text, "the record has a profile key to edit next to");
        std::fs::write(old.path().join(LIFECYCLE_FILE), &edited).unwrap();
        let e = recorded_args(old.path()).unwrap_err().to_string();
        assert!(e.contains(&format!("source_connections {bad}")), "{e}");
    }
}

/// The profile's `[source]` reading keys reach the source options, below what a flag,
/// an endpoint or the record set (`SourceOptions::with_profile`, used by every pass).
#[test]
fn source_reading_precedence_flag_over_profile_over_default_issue18() {
    let mut p = Profile::default();
    let unset = SourceOptions::default().with_profile(&p);
    assert_eq!((unset.connections, unset.window_bytes), (None, None));
    p.source.connections = Some(6);
    p.source.window_bytes = Some(mailferry_core::profile::ByteSize(1 << 20));
    let from_profile = SourceOptions::default().with_profile(&p);
    assert_eq!(from_profile.connections, Some(6));
    assert_eq!(from_profile.window_bytes, Some(1 << 20));
    let flag = SourceOptions {
        connections: Some(2),
        ..Default::default()
    }
    .with_profile(&p);
    assert_eq!(flag.connections, Some(2));
    assert_eq!(flag.window_bytes, Some(1 << 20));
}

/// mailferry-core checks `source.connections` against its own copy of the agent's
/// limit (core cannot name the agent): the two must be the same number.
#[test]
fn the_profile_and_the_agent_agree_on_the_connection_limit() {
    assert_eq!(
        mailferry_core::profile::MAX_SOURCE_CONNECTIONS,
        mailferry_agent::source::connections::MAX_CONNECTIONS
    );
    let w = mailferry_core::profile::WINDOW_BYTES_RANGE;
    let d = mailferry_agent::source::connections::DEFAULT_WINDOW_BYTES;
    assert!(
        w.contains(&d),
        "the default window is a valid profile value"
    );
}
