//! Civil dates (proleptic Gregorian calendar, UTC) as the whole-day and Unix-second
//! counts mailferry stores, for the date texts it reads by hand: mbox `From ` lines, IMAP
//! INTERNALDATE, HTTP `Retry-After` dates and profile RFC 3339 values.
//!
//! The calendar arithmetic is the `time` crate's; this module only adapts it to `i64`
//! counts and holds the month and weekday abbreviations those formats share. It does
//! not read the clock and does not parse whole date texts: each format keeps its own
//! reader, with its own leniency, next to the code that meets it.
//!
//! Supported years are those of `time` (-9999..=9999); a day count outside them is
//! refused when read and clamped when formatted.

use time::{Date, Month, OffsetDateTime};

/// Month abbreviations in calendar order, as asctime, IMAP and HTTP dates spell them.
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Weekday abbreviations from Sunday, as asctime and HTTP dates spell them.
pub const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// Seconds in a civil day (leap seconds are not counted, as in Unix time).
pub const DAY: i64 = 86_400;

/// Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

/// The month (1..=12) a three-letter abbreviation names, ignoring ASCII case.
pub fn month_from_abbrev(s: &str) -> Option<u32> {
    MONTHS
        .iter()
        .position(|m| s.eq_ignore_ascii_case(m))
        .map(|i| i as u32 + 1)
}

/// Days since 1970-01-01 of the date `year-month-day`; `None` if there is no such day
/// (31 February, month 13, day 0) or the year is out of range.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> Option<i64> {
    let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date =
        Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok()?;
    Some(i64::from(date.to_julian_day()) - UNIX_EPOCH_JULIAN_DAY)
}

/// Days since 1970-01-01 of day `day` counted from the first of `year-month`, so
/// `31 Feb` runs on into March. This is how the IMAP INTERNALDATE and HTTP-date readers
/// have always read a day past the month's end (they only check `1..=31`); `None` if
/// the month or year is out of range.
pub fn days_from_month_start(year: i64, month: u32, day: u32) -> Option<i64> {
    Some(days_from_civil(year, month, 1)? + i64::from(day) - 1)
}

/// A civil date and time of day in UTC, split into the fields date formats print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    /// Year (-9999..=9999).
    pub year: i64,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of the month, 1..=31.
    pub day: u32,
    /// Hour, 0..=23.
    pub hour: u32,
    /// Minute, 0..=59.
    pub minute: u32,
    /// Second, 0..=59.
    pub second: u32,
    /// Day of the week, 0 = Sunday (an index into [`WEEKDAYS`]).
    pub weekday: u32,
}

impl Civil {
    /// The UTC date and time of Unix seconds `t`, clamped to the supported years.
    pub fn from_unix(t: i64) -> Civil {
        let lo = Date::MIN.midnight().assume_utc().unix_timestamp();
        let hi = Date::MAX.midnight().assume_utc().unix_timestamp() + DAY - 1;
        let at = OffsetDateTime::from_unix_timestamp(t.clamp(lo, hi))
            .expect("clamped to the supported range");
        Civil {
            year: i64::from(at.year()),
            month: u32::from(u8::from(at.month())),
            day: u32::from(at.day()),
            hour: u32::from(at.hour()),
            minute: u32::from(at.minute()),
            second: u32::from(at.second()),
            weekday: u32::from(at.weekday().number_days_from_sunday()),
        }
    }

    /// The three-letter month abbreviation.
    pub fn month_abbrev(&self) -> &'static str {
        MONTHS[self.month as usize - 1]
    }

    /// The three-letter weekday abbreviation.
    pub fn weekday_abbrev(&self) -> &'static str {
        WEEKDAYS[self.weekday as usize]
    }
}

/// A zone offset written `+hhmm` or `-hhmm`, as `(sign, hours, minutes)` with sign ±1;
/// the digits are not range-checked (callers differ on what they accept).
pub fn hhmm_offset(t: &str) -> Option<(i64, i64, i64)> {
    let (sign, digits) = match t.as_bytes().first()? {
        b'+' => (1, &t[1..]),
        b'-' => (-1, &t[1..]),
        _ => return None,
    };
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((sign, digits[..2].parse().ok()?, digits[2..].parse().ok()?))
}

#[cfg(test)]
mod tests;
