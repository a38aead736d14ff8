use super::*;
use proptest::prelude::*;
use serde_json::json;

fn sample(data: Value) -> Record {
    let Value::Object(data) = data else {
        panic!("object")
    };
    Record {
        seq: 2,
        time: "2024-05-01T12:00:00.000Z".into(),
        actor: "agent".into(),
        event: "move.created".into(),
        data,
        prev: crate::ZERO_HASH.into(),
    }
}

#[test]
fn encoding_sorts_data_keys_at_every_depth_and_keeps_record_key_order() {
    let rec = sample(json!({"b": {"z": 1, "a": [{"y": 1, "x": 2}]}, "a": "é\n"}));
    let line = String::from_utf8(rec.encode()).unwrap();
    assert_eq!(
        line,
        r#"{"seq":2,"time":"2024-05-01T12:00:00.000Z","actor":"agent","event":"move.created","data":{"a":"é\n","b":{"a":[{"x":2,"y":1}],"z":1}},"prev":"0000000000000000000000000000000000000000000000000000000000000000"}"#
    );
    assert!(Record::parse(line.as_bytes()).is_ok());
}

#[test]
fn strings_are_escaped_as_documented() {
    // docs/audit-log.md §2.1 promises exactly this escaping.
    let rec = sample(json!({"s": "\u{1}\u{8}\t\n\u{c}\r\u{1f}\u{7f}é\"\\/"}));
    let line = String::from_utf8(rec.encode()).unwrap();
    let expected = concat!(
        r#""data":{"s":"\u0001\b\t\n\f\r\u001f"#,
        "\u{7f}",
        r#"é\"\\/"}"#
    );
    assert!(line.contains(expected), "{line}");
    assert!(Record::parse(line.as_bytes()).is_ok());
}

#[test]
fn non_canonical_lines_are_refused() {
    let line = String::from_utf8(sample(json!({"a": 1, "b": "é"})).encode()).unwrap();
    let variants = [
        line.replace(r#""seq":2,"#, r#""seq": 2,"#),
        line.replace(r#"{"a":1,"b":"é"}"#, r#"{"b":"é","a":1}"#),
        line.replace('é', r"\u00e9"),
        line.replace(r#","prev""#, r#","extra":1,"prev""#),
        line.replace(
            r#""seq":2,"time":"2024-05-01T12:00:00.000Z""#,
            r#""time":"2024-05-01T12:00:00.000Z","seq":2"#,
        ),
        format!("{line} "),
    ];
    for v in variants {
        assert_ne!(v, line);
        assert!(Record::parse(v.as_bytes()).is_err(), "accepted {v}");
    }
}

#[test]
fn times_must_be_utc_with_milliseconds() {
    assert!(check_time("2024-05-01T12:00:00.000Z").is_ok());
    for bad in [
        "2024-05-01T12:00:00Z",
        "2024-05-01T12:00:00.0000Z",
        "2024-05-01T12:00:00.000+00:00",
        "2024-05-01 12:00:00.000Z",
        "2024-02-30T12:00:00.000Z",
        "2024-05-01T23:59:60.000Z",
        "1969-12-31T23:59:59.000Z",
        "",
    ] {
        assert!(check_time(bad).is_err(), "{bad}");
    }
    assert!(format_time(UNIX_EPOCH - Duration::from_secs(1)).is_err());
    assert!(format_time(UNIX_EPOCH + Duration::from_secs(253_402_300_800)).is_err());
}

#[test]
fn new_records_are_checked() {
    assert!(check_new("agent", "move.created", json!({})).is_ok());
    assert!(check_new("", "move.created", json!({})).is_err());
    assert!(check_new("a\nb", "move.created", json!({})).is_err());
    assert!(check_new("agent", "Move", json!({})).is_err());
    assert!(check_new("agent", "1move", json!({})).is_err());
    assert!(check_new("agent", "audit.created", json!({})).is_err());
    assert!(check_new("agent", "move.created", json!([1])).is_err());
    let mut deep = json!(1);
    for _ in 0..MAX_DEPTH {
        deep = json!([deep]);
    }
    assert!(check_new("agent", "move.created", json!({ "d": deep })).is_err());
}

proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Record::parse(&bytes);
    }

    #[test]
    fn check_time_never_panics(s in "\\PC{0,40}") {
        let _ = check_time(&s);
    }

    #[test]
    fn check_time_never_panics_on_near_misses(s in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9+Z]{0,25})?Z?") {
        let _ = check_time(&s);
    }

    #[test]
    fn what_is_appended_parses_back(
        actor in "[a-z][a-z0-9 @.-]{0,20}",
        key in "\\PC{0,8}",
        text in "\\PC{0,40}",
        n in any::<i64>(),
    ) {
        let data = check_new(&actor, "x.y", json!({ key: [text, n] })).unwrap();
        let rec = Record { data, ..sample(json!({})) };
        let line = encode_new(&rec).unwrap();
        prop_assert!(Record::parse(&line).is_ok(), "{}", String::from_utf8_lossy(&line));
    }
}
