use super::*;
use proptest::prelude::*;

/// The hand-written algorithm this module replaced (H. Hinnant's days_from_civil),
/// kept here as the oracle the crate must agree with.
fn hinnant_days(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[test]
fn day_counts() {
    assert_eq!(days_from_civil(1970, 1, 1), Some(0));
    assert_eq!(days_from_civil(1969, 12, 31), Some(-1));
    assert_eq!(days_from_civil(2000, 2, 29), Some(11_016));
    assert_eq!(days_from_civil(2024, 1, 1), Some(19_723));
    assert_eq!(days_from_civil(0, 1, 1), Some(-719_528));
    assert_eq!(days_from_civil(9999, 12, 31), Some(2_932_896));
    for (y, m, d) in [
        (2024, 2, 30),
        (2023, 2, 29),
        (1900, 2, 29),
        (2024, 4, 31),
        (2024, 0, 1),
        (2024, 13, 1),
        (2024, 1, 0),
        (2024, 1, 32),
        (10_000, 1, 1),
        (-10_000, 1, 1),
        (i64::MAX, 1, 1),
    ] {
        assert_eq!(days_from_civil(y, m, d), None, "{y}-{m}-{d}");
    }
}

#[test]
fn days_past_the_month_end_run_on() {
    assert_eq!(
        days_from_month_start(2024, 2, 31),
        days_from_civil(2024, 3, 2)
    );
    assert_eq!(
        days_from_month_start(2023, 2, 31),
        days_from_civil(2023, 3, 3)
    );
    assert_eq!(
        days_from_month_start(2024, 2, 0),
        days_from_civil(2024, 1, 31)
    );
    assert_eq!(days_from_month_start(2024, 13, 1), None);
}

#[test]
fn civil_fields() {
    let c = Civil::from_unix(951_782_400 + 86_399);
    assert_eq!(
        (c.year, c.month, c.day, c.hour, c.minute, c.second),
        (2000, 2, 29, 23, 59, 59)
    );
    assert_eq!((c.weekday_abbrev(), c.month_abbrev()), ("Tue", "Feb"));
    let c = Civil::from_unix(-1);
    assert_eq!((c.year, c.month, c.day, c.weekday), (1969, 12, 31, 3));
    // Beyond year 9999 the date is clamped, not wrapped.
    let c = Civil::from_unix(i64::MAX);
    assert_eq!((c.year, c.month, c.day, c.hour), (9999, 12, 31, 23));
    assert_eq!(Civil::from_unix(i64::MIN).year, -9999);
}

#[test]
fn month_names_and_offsets() {
    assert_eq!(month_from_abbrev("jan"), Some(1));
    assert_eq!(month_from_abbrev("DEC"), Some(12));
    assert_eq!(month_from_abbrev("Foo"), None);
    assert_eq!(month_from_abbrev("January"), None);
    assert_eq!(hhmm_offset("+0130"), Some((1, 1, 30)));
    assert_eq!(hhmm_offset("-9999"), Some((-1, 99, 99)));
    for bad in ["0130", "+130", "+01300", "+01:3", "", "+", "+ab12"] {
        assert_eq!(hhmm_offset(bad), None, "{bad}");
    }
}

proptest! {
    #[test]
    fn agrees_with_the_replaced_arithmetic(y in -9999i64..=9999, m in 1u32..=12, d in 1u32..=31) {
        let expected = hinnant_days(y, i64::from(m), i64::from(d));
        prop_assert_eq!(days_from_month_start(y, m, d), Some(expected));
        if let Some(days) = days_from_civil(y, m, d) {
            prop_assert_eq!(days, expected);
            let c = Civil::from_unix(days * DAY + 3_723);
            prop_assert_eq!((c.year, c.month, c.day), (y, m, d));
            prop_assert_eq!((c.hour, c.minute, c.second), (1, 2, 3));
            prop_assert_eq!(i64::from(c.weekday), (days + 4).rem_euclid(7));
        }
    }
}
