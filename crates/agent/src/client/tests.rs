//! The retry policy of stream opening, against a small TLS server that refuses on
//! purpose (429/503 with `Retry-After`) a set number of times before it lets through.

use super::*;
use mailferry_core::frame::UPGRADE_TOKEN;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the fault-injecting server answers to connection number `n` (from 0).
type Script = fn(u32) -> String;

/// Starts the server; returns its endpoint and the count of requests it answered.
async fn refusing_server(script: Script) -> (Endpoint, Arc<AtomicU32>) {
    let ca = mailferry_core::tls::LocalCa::generate("test CA").unwrap();
    let id = ca.issue_server(&["127.0.0.1"]).unwrap();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(mailferry_core::tls::server_config(&id).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicU32::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let n = counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => head.extend_from_slice(&b[..k]),
                    }
                }
                let _ = tls.write_all(script(n).as_bytes()).await;
                let _ = tls.flush().await;
                // Hold the connection (an upgraded stream stays open) until the client goes.
                let _ = tls.read(&mut b).await;
            });
        }
    });
    let endpoint = Endpoint::new(
        &format!("https://127.0.0.1:{port}"),
        &[ca.cert_der()],
        SecretBytes::new(b"token".to_vec()),
    )
    .unwrap();
    (endpoint, seen)
}

fn refusal(status: &str, retry_after: &str) -> String {
    let body = r#"{"error":"busy, come back later"}"#;
    format!(
        "HTTP/1.1 {status}\r\nRetry-After: {retry_after}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn upgrade() -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: {UPGRADE_TOKEN}\r\n\r\n"
    )
}

fn policy(attempts: u32) -> BackoffPolicy {
    // Retry-After asks for seconds; the cap keeps the test quick and shows it applies.
    BackoffPolicy {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(30),
        attempts,
    }
}

fn mailbox() -> MailboxAddr {
    MailboxAddr::parse("a@example.com").unwrap()
}

#[tokio::test]
async fn busy_proxy_is_waited_for_and_the_wait_is_reported() {
    let (endpoint, seen) = refusing_server(|n| match n {
        0 => refusal("503 Service Unavailable", "1"),
        1 => refusal("429 Too Many Requests", "Sun, 06 Nov 1994 08:49:37 GMT"),
        2 => refusal("503 Service Unavailable", "soon"),
        _ => upgrade(),
    })
    .await;
    let (_stream, waited) = endpoint
        .open_stream_backoff(&mailbox(), &policy(10))
        .await
        .unwrap();
    assert_eq!(
        seen.load(Ordering::SeqCst),
        4,
        "three refusals, then through"
    );
    assert!(waited > Duration::ZERO, "the stall is reported");
}

#[tokio::test]
async fn busy_proxy_is_given_up_on_after_the_last_attempt() {
    let (endpoint, seen) = refusing_server(|_| refusal("429 Too Many Requests", "1")).await;
    let e = endpoint
        .open_stream_backoff(&mailbox(), &policy(3))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            AgentError::Refused {
                status: 429,
                retry_after: Some(1),
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("busy, come back later"), "{e}");
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn other_refusals_are_not_retried() {
    let (endpoint, seen) = refusing_server(|_| refusal("403 Forbidden", "1")).await;
    let e = endpoint
        .open_stream_backoff(&mailbox(), &policy(10))
        .await
        .err()
        .unwrap();
    assert!(matches!(e, AgentError::Refused { status: 403, .. }), "{e}");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}
