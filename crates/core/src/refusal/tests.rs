use super::*;

#[test]
fn seconds_and_dates() {
    assert_eq!(retry_after("120", 0), Some(Duration::from_secs(120)));
    assert_eq!(retry_after(" 0 ", 0), Some(Duration::ZERO));
    // 1994-11-06T08:49:37Z is 784111777.
    let date = "Sun, 06 Nov 1994 08:49:37 GMT";
    assert_eq!(
        retry_after(date, 784_111_777 - 30),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        retry_after(date, 784_111_777 + 30),
        Some(Duration::ZERO),
        "a date in the past means now"
    );
    assert_eq!(
        retry_after("Thu, 29 Feb 2024 00:00:00 GMT", 1_709_164_800),
        Some(Duration::ZERO)
    );
    assert_eq!(retry_after("soon", 0), None);
    assert_eq!(retry_after("-5", 0), None);
    assert_eq!(retry_after("Sun, 06 Foo 1994 08:49:37 GMT", 0), None);
}

#[test]
fn odd_dates_read_as_before() {
    // The weekday is not checked; a day past the month's end runs on (31 Feb 2023 is
    // 3 March); the month's case matters; only GMT is a zone.
    assert_eq!(
        retry_after_secs("Xyz, 06 Nov 1994 08:49:37 GMT", 784_111_777),
        Some(0)
    );
    assert_eq!(
        retry_after("Tue, 31 Feb 2023 00:00:00 GMT", 0),
        retry_after("Fri, 03 Mar 2023 00:00:00 GMT", 0)
    );
    assert_eq!(
        retry_after_secs("Fri, 03 Mar 2023 00:00:00 GMT", 1_677_801_600 - 5),
        Some(5)
    );
    assert_eq!(retry_after("Sun, 06 nov 1994 08:49:37 GMT", 0), None);
    assert_eq!(retry_after("Sun, 06 Nov 1994 08:49:37 UTC", 0), None);
    assert_eq!(retry_after("Sun, 32 Nov 1994 08:49:37 GMT", 0), None);
    assert_eq!(retry_after("Sun, 06 Nov 1994 24:00:00 GMT", 0), None);
    assert_eq!(
        retry_after("Sun, 06 Nov 1994 08:49:60 GMT", 784_111_777),
        Some(Duration::from_secs(23))
    );
    assert_eq!(retry_after("Sun, 06 Nov 1994 08:49 GMT", 0), None);
    assert_eq!(retry_after("Sun 06 Nov 1994 08:49:37 GMT", 0), None);
}

#[test]
fn retry_after_secs_is_what_the_errors_carry() {
    assert_eq!(retry_after_secs("7", 0), Some(7));
    assert_eq!(retry_after_secs(" 7\t", 0), Some(7));
    assert_eq!(retry_after_secs("7.5", 0), None);
    assert_eq!(retry_after_secs("", 0), None);
}

#[test]
fn messages() {
    assert_eq!(message(br#"{"error":"too busy"}"#), "too busy");
    assert_eq!(message(br#"{"error":7}"#), r#"{"error":7}"#);
    assert_eq!(message(b"plain text"), "plain text");
    assert_eq!(message(b""), "");
    assert_eq!(message(b"\xff"), "\u{fffd}");
}

#[tokio::test]
async fn read_collects_status_wait_and_reason() {
    use http_body_util::Full;
    let resp = http::Response::builder()
        .status(503)
        .header(http::header::RETRY_AFTER, "12")
        .body(Full::new(bytes::Bytes::from_static(
            br#"{"error":"store busy"}"#,
        )))
        .unwrap();
    assert_eq!(
        read(resp).await,
        Refused {
            status: 503,
            retry_after: Some(12),
            message: "store busy".into()
        }
    );
    // Over the limit: the body reads as empty, the status still counts.
    let big = vec![b'x'; BODY_LIMIT + 1];
    let resp = http::Response::builder()
        .status(429)
        .body(Full::new(bytes::Bytes::from(big)))
        .unwrap();
    let r = read(resp).await;
    assert_eq!(
        (r.status, r.retry_after, r.message.as_str()),
        (429, None, "")
    );
}
