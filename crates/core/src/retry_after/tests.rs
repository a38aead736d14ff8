use super::*;

#[test]
fn seconds_and_dates() {
    assert_eq!(parse("120", 0), Some(Duration::from_secs(120)));
    assert_eq!(parse(" 0 ", 0), Some(Duration::ZERO));
    // 1994-11-06T08:49:37Z is 784111777.
    let date = "Sun, 06 Nov 1994 08:49:37 GMT";
    assert_eq!(parse(date, 784_111_777 - 30), Some(Duration::from_secs(30)));
    assert_eq!(
        parse(date, 784_111_777 + 30),
        Some(Duration::ZERO),
        "a date in the past means now"
    );
    assert_eq!(
        parse("Thu, 29 Feb 2024 00:00:00 GMT", 1_709_164_800),
        Some(Duration::ZERO)
    );
    assert_eq!(parse("soon", 0), None);
    assert_eq!(parse("-5", 0), None);
    assert_eq!(parse("Sun, 06 Foo 1994 08:49:37 GMT", 0), None);
}

#[test]
fn odd_dates_read_as_before() {
    // The weekday is not checked; a day past the month's end runs on (31 Feb 2023 is
    // 3 March); the month's case matters; only GMT is a zone.
    assert_eq!(
        whole_seconds("Xyz, 06 Nov 1994 08:49:37 GMT", 784_111_777),
        Some(0)
    );
    assert_eq!(
        parse("Tue, 31 Feb 2023 00:00:00 GMT", 0),
        parse("Fri, 03 Mar 2023 00:00:00 GMT", 0)
    );
    assert_eq!(
        whole_seconds("Fri, 03 Mar 2023 00:00:00 GMT", 1_677_801_600 - 5),
        Some(5)
    );
    assert_eq!(parse("Sun, 06 nov 1994 08:49:37 GMT", 0), None);
    assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 UTC", 0), None);
    assert_eq!(parse("Sun, 32 Nov 1994 08:49:37 GMT", 0), None);
    assert_eq!(parse("Sun, 06 Nov 1994 24:00:00 GMT", 0), None);
    assert_eq!(
        parse("Sun, 06 Nov 1994 08:49:60 GMT", 784_111_777),
        Some(Duration::from_secs(23))
    );
    assert_eq!(parse("Sun, 06 Nov 1994 08:49 GMT", 0), None);
    assert_eq!(parse("Sun 06 Nov 1994 08:49:37 GMT", 0), None);
}

#[test]
fn whole_seconds_is_what_the_errors_carry() {
    assert_eq!(whole_seconds("7", 0), Some(7));
    assert_eq!(whole_seconds(" 7\t", 0), Some(7));
    assert_eq!(whole_seconds("7.5", 0), None);
    assert_eq!(whole_seconds("", 0), None);
}
