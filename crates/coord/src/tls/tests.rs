//! The TLS parameters' parsing and policy, and connections to the real test server
//! (`MAILFERRY_TEST_PG`, `MAILFERRY_TEST_PG_CA`).

use super::*;
use crate::db::testing;
use crate::DbUrl;
use std::str::FromStr;

fn policy(url: &str) -> Result<Policy, CoordError> {
    let (rest, mode, root) = split_params(url);
    let config = tokio_postgres::Config::from_str(&rest).unwrap();
    Policy::new(&config, mode.as_deref(), root.as_deref())
}

#[test]
fn tls_parameters_are_taken_out_of_both_forms() {
    let (rest, mode, root) = split_params(
        "postgres://u:p@db.example:5433/x?application_name=a&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
    );
    assert_eq!(rest, "postgres://u:p@db.example:5433/x?application_name=a");
    assert_eq!(mode.as_deref(), Some("verify-full"));
    assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
    let (rest, mode, root) = split_params("postgres://u@h/x?sslmode=require");
    assert_eq!(
        (rest.as_str(), mode.as_deref(), root),
        ("postgres://u@h/x", Some("require"), None)
    );
    let (rest, mode, root) = split_params(
        "host=db.example user=u sslrootcert='/a b/ca.pem' sslmode = verify-ca dbname=x",
    );
    assert_eq!(rest, "host=db.example user=u dbname=x");
    assert_eq!(mode.as_deref(), Some("verify-ca"));
    assert_eq!(root.as_deref(), Some("/a b/ca.pem"));
    tokio_postgres::Config::from_str(&rest).unwrap();
}

#[test]
fn modes_and_their_defaults() {
    // No sslmode: clear only on loopback, verify-full anywhere else.
    assert_eq!(
        policy("postgres://u@127.0.0.1/x").unwrap().mode,
        SslMode::Disable
    );
    assert_eq!(
        policy("postgres://u@localhost/x").unwrap().mode,
        SslMode::Disable
    );
    assert_eq!(
        policy("postgres://u@[::1]/x").unwrap().mode,
        SslMode::Disable
    );
    let p = policy("postgres://u@db.example/x").unwrap();
    assert_eq!(
        (p.mode, p.check()),
        (SslMode::VerifyFull, PgCheck::ChainAndName)
    );
    assert!(p.defaulted);
    let p = policy("postgres://u@127.0.0.1,db.example/x").unwrap();
    assert_eq!(p.mode, SslMode::VerifyFull);
    // A CA named without a mode is used, on loopback too.
    let p = policy("postgres://u@127.0.0.1/x?sslrootcert=ca.pem").unwrap();
    assert_eq!(
        (p.mode, p.check()),
        (SslMode::VerifyFull, PgCheck::ChainAndName)
    );
    // A private CA file: require and verify-ca check the chain only.
    let p = policy("postgres://u@db.example/x?sslmode=require&sslrootcert=ca.pem").unwrap();
    assert_eq!((p.pg_mode(), p.check()), (PgMode::Require, PgCheck::Chain));
    let p = policy("postgres://u@db.example/x?sslmode=verify-ca&sslrootcert=ca.pem").unwrap();
    assert_eq!(p.check(), PgCheck::Chain);
    // The system's roots: the name is always checked.
    for m in ["prefer", "require", "verify-ca"] {
        let p = policy(&format!("postgres://u@db.example/x?sslmode={m}")).unwrap();
        assert_eq!(p.check(), PgCheck::ChainAndName, "{m}");
        let p = policy(&format!(
            "postgres://u@db.example/x?sslmode={m}&sslrootcert=system"
        ))
        .unwrap();
        assert_eq!(p.check(), PgCheck::ChainAndName, "{m}");
    }
    assert_eq!(
        policy("postgres://u@db.example/x?sslmode=prefer&sslrootcert=ca.pem")
            .unwrap()
            .pg_mode(),
        PgMode::Prefer
    );
    assert_eq!(
        policy("postgres://u@db.example/x?sslmode=disable")
            .unwrap()
            .pg_mode(),
        PgMode::Disable
    );
    let e = policy("postgres://u@db.example/x?sslmode=allow")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sslmode=allow") && e.contains("verify-full"),
        "{e}"
    );
    let e = policy("postgres://u@db.example/x?sslmode=disable&sslrootcert=ca.pem")
        .unwrap_err()
        .to_string();
    assert!(e.contains("db.example:5432"), "{e}");
}

#[test]
fn a_missing_ca_file_names_host_mode_and_file() {
    let p = policy("postgres://u@db.example/x?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
        .unwrap();
    let e = p.connector().err().unwrap().to_string();
    assert!(
        e.contains("db.example:5432")
            && e.contains("sslmode=verify-full")
            && e.contains("/nonexistent/ca.pem"),
        "{e}"
    );
}

// === against the real test server ===

/// `server` with `params` added to its query.
fn with(server: &str, params: &str) -> String {
    let sep = if server.contains('?') { '&' } else { '?' };
    format!("{server}{sep}{params}")
}

/// Whether the connection of `client` is encrypted, as the server sees it.
async fn server_says_ssl(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, CoordError> {
    crate::db::connect_raw(&DbUrl::new(url)?).await
}

/// A CA the test server's certificate does not come from, as a PEM file.
fn other_ca(dir: &std::path::Path) -> String {
    let ca = mailferry_core::tls::LocalCa::generate("not the server's CA").unwrap();
    let p = dir.join("other-ca.pem");
    std::fs::write(&p, ca.cert_pem()).unwrap();
    p.display().to_string()
}

#[tokio::test]
async fn verify_full_with_the_servers_ca_is_encrypted_and_the_loopback_default_is_not() {
    let (Some(server), Some(ca)) = (testing::server(), testing::server_ca()) else {
        return;
    };
    let c = connect(&with(
        &server,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .unwrap();
    assert!(server_says_ssl(&c).await, "verify-full must be encrypted");
    // verify-ca and require with the CA file too.
    for m in ["verify-ca", "require", "prefer"] {
        let c = connect(&with(&server, &format!("sslmode={m}&sslrootcert={ca}")))
            .await
            .unwrap();
        assert!(server_says_ssl(&c).await, "{m}");
    }
    // No sslmode on loopback: clear text, as before TLS was built in.
    assert!(!server_says_ssl(&connect(&server).await.unwrap()).await);
    let c = connect(&with(&server, "sslmode=disable")).await.unwrap();
    assert!(!server_says_ssl(&c).await);
}

#[tokio::test]
async fn a_wrong_ca_is_refused_and_prefer_does_not_fall_back_to_clear_text() {
    let (Some(server), Some(_)) = (testing::server(), testing::server_ca()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wrong = other_ca(dir.path());
    for m in ["verify-full", "verify-ca", "require", "prefer"] {
        let e = connect(&with(&server, &format!("sslmode={m}&sslrootcert={wrong}")))
            .await
            .err()
            .unwrap_or_else(|| panic!("sslmode={m} with another CA connected"));
        let msg = e.to_string();
        assert!(matches!(e, CoordError::Tls { .. }), "{m}: {msg}");
        assert!(
            msg.contains("127.0.0.1:")
                && msg.contains(&format!("sslmode={m}"))
                && msg.contains("not issued by a CA in sslrootcert=")
                && msg.contains(&wrong),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn a_name_the_certificate_does_not_list_is_refused_under_verify_full_only() {
    let (Some(server), Some(ca)) = (testing::server(), testing::server_ca()) else {
        return;
    };
    assert!(server.contains("@127.0.0.1:"), "{server}");
    // The server's address, another name: the certificate lists 127.0.0.1 and localhost.
    let renamed = with(
        &server.replace("@127.0.0.1:", "@db.wrong.example:"),
        "hostaddr=127.0.0.1",
    );
    let e = connect(&with(
        &renamed,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .map(|_| ())
    .expect_err("verify-full accepted a certificate for other names");
    let msg = e.to_string();
    assert!(
        msg.contains("db.wrong.example")
            && msg.contains("sslmode=verify-full")
            && msg.contains("not valid for the host name"),
        "{msg}"
    );
    // verify-ca checks the chain only (against a CA file), so the same server passes.
    let c = connect(&with(
        &renamed,
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    ))
    .await
    .unwrap();
    assert!(server_says_ssl(&c).await);
    // No sslmode, a name that is not loopback: verify-full by default, against the
    // system's roots, which do not hold the test CA.
    let e = connect(&renamed)
        .await
        .map(|_| ())
        .expect_err("default mode must verify");
    let msg = e.to_string();
    assert!(msg.contains("verify-full (the default"), "{msg}");
}

/// A server that does not speak TLS, at the one step that matters: it answers the
/// SSLRequest with `N`, as PostgreSQL with `ssl = off` does, then records what the client
/// sends after that. Returns its address and what it received after the SSLRequest.
async fn plain_only_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut req = [0u8; 8];
        s.read_exact(&mut req).await.unwrap();
        // SSLRequest: length 8, code 80877103.
        assert_eq!(
            req,
            [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f],
            "not an SSLRequest"
        );
        s.write_all(b"N").await.unwrap();
        let mut rest = Vec::new();
        let mut buf = [0u8; 512];
        // Until the client closes, or it has sent its startup message.
        while let Ok(Ok(n)) =
            tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&buf[..n]);
            if rest.windows(5).any(|w| w == b"user\0") {
                break;
            }
        }
        rest
    });
    (addr, task)
}

#[tokio::test]
async fn require_against_a_server_without_tls_fails_before_anything_is_sent_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let ca = other_ca(dir.path());
    let (addr, got) = plain_only_server().await;
    let e = connect(&format!(
        "postgres://mailferry:secret@{addr}/postgres?sslmode=require&sslrootcert={ca}"
    ))
    .await
    .map(|_| ())
    .expect_err("require connected to a server without TLS");
    let msg = e.to_string();
    assert!(
        msg.contains(&addr.to_string())
            && msg.contains("sslmode=require")
            && msg.contains("does not offer TLS"),
        "{msg}"
    );
    assert!(!msg.contains("secret"), "{msg}");
    assert!(
        got.await.unwrap().is_empty(),
        "bytes sent in clear after the refusal"
    );

    // prefer is libpq's: without TLS on offer it continues in clear (the startup
    // message, with the user name, follows). The docs say not to use it off loopback.
    let (addr, got) = plain_only_server().await;
    let url = format!("postgres://mailferry@{addr}/postgres?sslmode=prefer&sslrootcert={ca}");
    let _ = connect(&url).await;
    let sent = got.await.unwrap();
    assert!(sent.windows(9).any(|w| w == b"mailferry"), "{sent:?}");
}
