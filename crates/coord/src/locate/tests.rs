//! Where the URL comes from: precedence, the owner-only rule, the endpoint key. Real
//! files; no database is needed (nothing connects).

use super::*;
use std::os::unix::fs::PermissionsExt;

/// Writes `url` to `dir/name` with `mode`.
fn url_file(dir: &Path, name: &str, url: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{url}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn host_of(s: &DbSources) -> Option<(String, DbOrigin)> {
    s.locate()
        .unwrap()
        .map(|(u, o)| (u.expose_secret().to_string(), o))
}

#[test]
fn the_first_source_given_wins_flag_file_env_env_file_endpoint() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let flag_file = url_file(dir, "flag.url", "postgres://u:pw@127.0.0.2/flagfile", 0o600);
    let env_file = url_file(dir, "env.url", "postgres://u:pw@127.0.0.2/envfile", 0o600);
    url_file(dir, "ep.url", "postgres://u:pw@127.0.0.2/endpoint", 0o600);
    let ep = dir.join("ep.toml");
    std::fs::write(
        &ep,
        "kind = \"maildir\"\nroot = \"/m/{user}\"\ncoordination_db_file = \"ep.url\"\n",
    )
    .unwrap();
    let mut s = DbSources {
        flag: Some(zeroize::Zeroizing::new(
            "postgres://u@127.0.0.2/flag".into(),
        )),
        flag_file: Some(flag_file.clone()),
        env: Some(zeroize::Zeroizing::new("postgres://u@127.0.0.2/env".into())),
        env_file: Some(env_file.clone()),
        endpoint: Some(ep.clone()),
    };
    let expect = |s: &DbSources, db: &str, origin: DbOrigin| {
        let (url, o) = host_of(s).unwrap();
        assert!(url.ends_with(&format!("/{db}")), "{url}");
        assert_eq!(o, origin);
    };
    expect(&s, "flag", DbOrigin::Flag);
    s.flag = None;
    expect(&s, "flagfile", DbOrigin::FlagFile(flag_file));
    s.flag_file = None;
    expect(&s, "env", DbOrigin::Env);
    s.env = None;
    expect(&s, "envfile", DbOrigin::EnvFile(env_file));
    s.env_file = None;
    assert!(!s.given());
    expect(
        &s,
        "endpoint",
        DbOrigin::Endpoint {
            endpoint: ep.clone(),
            // Relative to the endpoint file.
            file: std::path::absolute(dir.join("ep.url")).unwrap(),
        },
    );
    s.endpoint = None;
    assert!(s.locate().unwrap().is_none());
    // An endpoint without the key: no database.
    std::fs::write(&ep, "kind = \"maildir\"\nroot = \"/m/{user}\"\n").unwrap();
    s.endpoint = Some(ep);
    assert!(s.locate().unwrap().is_none());
}

#[test]
fn a_url_file_others_can_read_is_refused_and_later_sources_are_not_read() {
    let d = tempfile::tempdir().unwrap();
    let open = url_file(
        d.path(),
        "open.url",
        "postgres://u:hunter2@127.0.0.2/x",
        0o644,
    );
    let s = DbSources {
        flag_file: Some(open.clone()),
        ..Default::default()
    };
    let e = s.locate().unwrap_err().to_string();
    assert!(
        e.contains("--db-file")
            && e.contains(&open.display().to_string())
            && e.contains("mode 0644")
            && e.contains("chmod"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
    // Group-readable only is refused too, under every name.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o640)).unwrap();
    let s = DbSources {
        env_file: Some(open.clone()),
        ..Default::default()
    };
    assert!(s
        .locate()
        .unwrap_err()
        .to_string()
        .contains("MAILFERRY_DB_FILE"));
    // A source after the first one given is never read.
    let s = DbSources {
        env: Some(zeroize::Zeroizing::new("postgres://u@127.0.0.2/env".into())),
        env_file: Some(open),
        ..Default::default()
    };
    assert_eq!(host_of(&s).unwrap().1, DbOrigin::Env);
}

#[test]
fn a_url_file_holds_one_url_on_one_line() {
    let d = tempfile::tempdir().unwrap();
    for (name, text) in [("empty", ""), ("two", "postgres://u@h/a\npostgres://u@h/b")] {
        let p = url_file(d.path(), name, text, 0o600);
        let s = DbSources {
            flag_file: Some(p),
            ..Default::default()
        };
        let e = s.locate().unwrap_err().to_string();
        assert!(e.contains("one line"), "{e}");
    }
    let s = DbSources {
        flag_file: Some(d.path().join("missing")),
        ..Default::default()
    };
    let e = s.locate().unwrap_err().to_string();
    assert!(e.contains("--db-file") && e.contains("missing"), "{e}");
    // The debug form of the sources shows no URL.
    let s = DbSources {
        flag: Some(zeroize::Zeroizing::new("postgres://u:hunter2@h/x".into())),
        ..Default::default()
    };
    assert!(!format!("{s:?}").contains("hunter2"));
}
