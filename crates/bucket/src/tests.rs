//! Against the real S3-compatible server of the test environment (moto, started by
//! `tests/services/services.sh`; `MAILFERRY_TEST_S3`). Without it these skip with a
//! note, and fail under CI.

use super::*;
use crate::client::PutOutcome;
use bytes::Bytes;

/// The endpoint, or `None` (skip) outside CI.
fn endpoint() -> Option<String> {
    match std::env::var("MAILFERRY_TEST_S3") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "MAILFERRY_TEST_S3 is not set in CI (test.sh starts moto)"
            );
            eprintln!(
                "skipped: MAILFERRY_TEST_S3 is not set (tests/services/services.sh start DIR)"
            );
            None
        }
    }
}

/// Creates bucket `name` with a plain S3 CreateBucket (moto takes it unsigned).
pub(crate) fn create_bucket(endpoint: &str, name: &str) {
    use std::io::{Read, Write};
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(hostport).unwrap();
    write!(s, "PUT /{name} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "create bucket {name}: {resp}"
    );
}

/// Deletes the (empty) bucket `name`.
pub(crate) fn delete_bucket(endpoint: &str, name: &str) {
    use std::io::{Read, Write};
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(hostport).unwrap();
    write!(s, "DELETE /{name} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 204"),
        "delete bucket {name}: {resp}"
    );
}

fn client(endpoint: &str, bucket: &str) -> Arc<Client> {
    let url = S3Url::parse(&format!("s3://{bucket}/v")).unwrap();
    let opts = S3Options {
        endpoint: Some(endpoint.into()),
        ..Default::default()
    };
    Arc::new(Client::new(&url, &opts).unwrap())
}

fn unique(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        lease::now_ms() % 1_000_000_000
    )
}

#[test]
fn conditional_puts_create_once_and_update_only_the_version_read() {
    let Some(ep) = endpoint() else { return };
    let b = unique("mf-cond");
    create_bucket(&ep, &b);
    let c = client(&ep, &b);
    let PutOutcome::Written(e1) = c.put_if("k", Bytes::from_static(b"1"), None).unwrap() else {
        panic!("first create must win")
    };
    assert!(matches!(
        c.put_if("k", Bytes::from_static(b"2"), None).unwrap(),
        PutOutcome::Conflict
    ));
    let e1 = e1
        .or_else(|| c.get("k").unwrap().unwrap().1)
        .expect("an ETag");
    assert!(matches!(
        c.put_if("k", Bytes::from_static(b"3"), Some("\"not-the-etag\""))
            .unwrap(),
        PutOutcome::Conflict
    ));
    assert!(matches!(
        c.put_if("k", Bytes::from_static(b"4"), Some(&e1)).unwrap(),
        PutOutcome::Written(_)
    ));
    // The old version's ETag no longer updates it: a fenced writer cannot write.
    assert!(matches!(
        c.put_if("k", Bytes::from_static(b"5"), Some(&e1)).unwrap(),
        PutOutcome::Conflict
    ));
    assert_eq!(&c.get("k").unwrap().unwrap().0[..], b"4");
    c.remove_object("k").unwrap();
    delete_bucket(&ep, &b);
}

#[test]
fn a_held_lease_keeps_a_second_writer_out_and_an_expired_one_is_taken_over() {
    let Some(ep) = endpoint() else { return };
    let b = unique("mf-lease");
    create_bucket(&ep, &b);
    let c = client(&ep, &b);
    let a = lease::Lease::acquire(&c, "a", Duration::from_secs(2)).unwrap();
    // A renews every 2/3 s: B waits its own lease time plus 5 s, then gives up.
    let err = lease::Lease::acquire(&c, "b", Duration::from_secs(1)).unwrap_err();
    assert!(err.to_string().contains("held by a"), "{err}");
    // A dies without releasing (its renewal stops): B takes over once it expired.
    let a_fenced = a.fenced();
    drop(a);
    let b2 = lease::Lease::acquire(&c, "b", Duration::from_secs(2)).unwrap();
    assert!(!b2.fenced().load(std::sync::atomic::Ordering::SeqCst));
    assert!(!a_fenced.load(std::sync::atomic::Ordering::SeqCst));
    b2.release(&c);
    assert!(
        c.get(manifest::LEASE).unwrap().is_none(),
        "release deletes the lease"
    );
}
