//! Issue 20, TLS to PostgreSQL and where the database URL comes from: a `mailferry
//! worker` moves a batch over `sslmode=verify-full` to the test cluster of
//! tests/services/services.sh (which speaks TLS and refuses clear text for the role
//! `mailferry_tls`, so a worker of that role can only have used TLS); `batch new` finds
//! the URL through the endpoint's `coordination_db_file`; a URL file others can read is
//! refused; flags beat the environment.

use crate::util::*;
use crate::workers::{fresh_db, sql_i64, start_worker, wait_until_synced, write_private, DbBatch};
use std::time::Duration;

/// The role the test cluster accepts over TLS only (tests/services/services.sh).
const TLS_ROLE: &str = "mailferry_tls";

/// `url` (the test server's, user `mailferry`) as `TLS_ROLE` with verify-full against
/// the test CA.
fn tls_url(url: &str, ca: &str) -> String {
    assert!(url.starts_with("postgres://mailferry@"), "{url}");
    format!(
        "{}?sslmode=verify-full&sslrootcert={ca}",
        url.replacen(
            "postgres://mailferry@",
            &format!("postgres://{TLS_ROLE}@"),
            1
        )
    )
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn issue20_a_worker_moves_a_batch_over_verify_full_tls_and_finds_the_url_in_files() {
    let Some(plain) = fresh_db("tls_worker") else {
        return;
    };
    let Some(ca) = mailferry_coord::db::testing::server_ca() else {
        return;
    };
    // The role exists once per cluster; a superuser so that it can apply the schema.
    block_on(async {
        mailferry_coord::db::testing::client(&plain)
            .await
            .batch_execute(&format!(
                "DO $$ BEGIN CREATE ROLE {TLS_ROLE} LOGIN SUPERUSER; \
                 EXCEPTION WHEN duplicate_object THEN NULL; END $$"
            ))
            .await
            .unwrap();
    });
    let tls = tls_url(&plain, &ca);
    // The cluster really refuses this role in clear text: what proves below that the
    // worker, which connects as it, used TLS.
    let clear = plain.replacen("mailferry@", &format!("{TLS_ROLE}@"), 1);
    let refused = block_on(async {
        let url = mailferry_coord::DbUrl::new(&format!("{clear}?sslmode=disable")).unwrap();
        mailferry_coord::Db::connect(&url)
            .await
            .err()
            .map(|e| e.to_string())
    })
    .expect("the test cluster let mailferry_tls in without TLS (pg_hba of services.sh?)");
    assert!(
        refused.contains("no encryption") || refused.contains("pg_hba"),
        "{refused}"
    );

    // batch new without --db: the endpoint's coordination_db_file names a 0600 file
    // holding the TLS URL.
    let mut b = DbBatch::via_endpoint_key(tls.clone(), 3, 6);
    let mut w = start_worker(b.env.dir.path(), &tls, "tls", 2, 10);
    let o = b.batch(&["start"]);
    assert!(
        o.status.success(),
        "batch start --db (TLS): {}",
        describe(&o)
    );
    wait_until_synced(&b, &[&w], Duration::from_secs(180));

    // While the worker runs: every backend of the role is encrypted, as the server
    // sees it, and the worker has at least one.
    let count = |cond: &str| {
        sql_i64(
            &plain,
            &format!(
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.usename = '{TLS_ROLE}' AND {cond}"
            ),
        )
    };
    assert!(
        count("s.ssl") >= 1,
        "no TLS backend of the worker:\n{}",
        w.log_text()
    );
    assert_eq!(count("NOT s.ssl"), 0);
    assert!(w.child.try_wait().unwrap().is_none(), "{}", w.log_text());
    assert_eq!(w.stop(), Some(0));

    b.stop_serve();
    b.assert_exports_equal_sources();
    b.assert_audit_logs_verify();
    assert_eq!(
        sql_i64(&plain, "SELECT count(*) FROM moves WHERE state = 'synced'"),
        3
    );

    // --db-file: refused while others can read it, used once it is 0600; it beats
    // MAILFERRY_DB (a flag beats the environment), which names nothing reachable.
    let file = b.env.path("status-db.url");
    write_private(&file, &tls);
    let status = |file: &std::path::Path| {
        run(mailferry()
            .args([
                "move",
                "status",
                "--mailbox",
                "user0001@example.com",
                "--json",
            ])
            .arg("--db-file")
            .arg(file)
            .env("MAILFERRY_DB", "postgres://nobody@127.0.0.1:1/nothing")
            .env_remove("MAILFERRY_DB_FILE"))
    };
    let o = status(&file);
    assert!(o.status.success(), "{}", describe(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["state"], "synced");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let o = status(&file);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--db-file") && err.contains("mode 0644") && err.contains("chmod"),
        "{err}"
    );
    assert!(!err.contains("mailferry_tls@"), "the URL is printed: {err}");
    // And from the environment alone (MAILFERRY_DB_FILE), 0600 again.
    write_private(&file, &tls);
    let o = run(mailferry()
        .args(["move", "status", "--mailbox", "user0002@example.com"])
        .env("MAILFERRY_DB_FILE", &file)
        .env_remove("MAILFERRY_DB"));
    assert!(o.status.success(), "{}", describe(&o));
}

#[test]
fn issue20_a_worker_refuses_a_database_whose_certificate_it_cannot_verify() {
    let Some(plain) = fresh_db("tls_wrong_ca") else {
        return;
    };
    if mailferry_coord::db::testing::server_ca().is_none() {
        return;
    }
    let env = Env::new();
    let other = mailferry_core::tls::LocalCa::generate("not the server's CA").unwrap();
    std::fs::write(env.path("other-ca.pem"), other.cert_pem()).unwrap();
    let url = format!(
        "{plain}?sslmode=verify-full&sslrootcert={}",
        env.path("other-ca.pem").display()
    );
    let o = run(mailferry().args(["worker", "--db", &url]));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("sslmode=verify-full")
            && err.contains("127.0.0.1:")
            && err.contains("not issued by a CA in sslrootcert="),
        "{err}"
    );
}
