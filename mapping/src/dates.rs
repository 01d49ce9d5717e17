//! Calendar maths for the date-time rule of section 11.2: the text forms a date or an
//! instant may take, Unix times, and RFC 3339 in UTC. Hand-written (days-from-civil is a
//! few lines) so that the mapping needs no date crate.

/// 1900-01-01T00:00:00Z and 2201-01-01T00:00:00Z in Unix milliseconds: numbers must fall
/// in between (years 1900–2200).
pub(crate) const MIN_UNIX_MS: i64 = -2_208_988_800_000;
pub(crate) const END_UNIX_MS: i64 = 7_289_654_400_000;
pub(crate) const MS_PER_DAY: i64 = 86_400_000;

/// A date or instant of one of the 11.2 forms.
#[derive(Debug, PartialEq)]
pub(crate) struct ParsedDateTime {
    /// The instant in UTC.
    pub(crate) unix_ms: i64,
    /// Already RFC 3339 (`T`, seconds, `Z` or an offset): sent unchanged.
    pub(crate) rfc3339: bool,
}

/// `YYYY-MM-DD`, optionally followed by `T`/`t`/space, `hh:mm`, optionally `:ss` and a
/// fraction, optionally `Z`/`z`/`±hh:mm`; a real calendar date and time, or `None`.
pub(crate) fn parse_date_time(s: &str) -> Option<ParsedDateTime> {
    let mut c = Cursor(s.as_bytes());
    let year = c.number(4)?;
    c.expect(b'-')?;
    let month = c.number(2)?;
    c.expect(b'-')?;
    let day = c.number(2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if c.done() {
        let unix_ms = days * MS_PER_DAY;
        return in_range(unix_ms).then_some(ParsedDateTime {
            unix_ms,
            rfc3339: false,
        });
    }
    let separator = c.bump()?;
    if !matches!(separator, b'T' | b't' | b' ') {
        return None;
    }
    let hour = c.number(2)?;
    c.expect(b':')?;
    let minute = c.number(2)?;
    let (mut second, mut millis, mut has_seconds) = (0, 0, false);
    if c.peek() == Some(b':') {
        c.bump();
        second = c.number(2)?;
        has_seconds = true;
        if c.peek() == Some(b'.') {
            c.bump();
            let digits = c.digits();
            if digits.is_empty() {
                return None;
            }
            // Cut (not rounded) to milliseconds.
            for i in 0..3 {
                millis = millis * 10 + digits.get(i).map_or(0, |d| i64::from(d - b'0'));
            }
        }
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let (offset_minutes, zone) = match c.bump() {
        None => (0, None),
        Some(z @ (b'Z' | b'z')) => (0, Some(z)),
        Some(sign @ (b'+' | b'-')) => {
            let hours = c.number(2)?;
            c.expect(b':')?;
            let minutes = c.number(2)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 60 + minutes;
            (if sign == b'-' { -offset } else { offset }, Some(sign))
        }
        Some(_) => return None,
    };
    if !c.done() {
        return None;
    }
    let local_ms = days * MS_PER_DAY + ((hour * 60 + minute) * 60 + second) * 1000 + millis;
    let unix_ms = local_ms - offset_minutes * 60_000;
    // [amended 2026-12-06] A real instant is in the years 1900–2200, as numbers must be.
    if !in_range(unix_ms) {
        return None;
    }
    Some(ParsedDateTime {
        unix_ms,
        rfc3339: separator == b'T' && has_seconds && zone.is_some_and(|z| z != b'z'),
    })
}

/// Whether an instant falls in the years 1900–2200 (section 11.2).
pub(crate) fn in_range(unix_ms: i64) -> bool {
    (MIN_UNIX_MS..END_UNIX_MS).contains(&unix_ms)
}

/// 11.2 [amended 2026-12-06]: an integer from 19000101 to 22001231 that reads as a real
/// calendar date `YYYYMMDD`, as that date's midnight UTC in Unix milliseconds.
pub(crate) fn yyyymmdd(value: i64) -> Option<i64> {
    if !(19_000_101..=22_001_231).contains(&value) {
        return None;
    }
    let (year, month, day) = (value / 10_000, value / 100 % 100, value % 100);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day) * MS_PER_DAY)
}

/// `YYYY-MM-DDThh:mm:ss.sssZ`, or `None` outside years 0–9999.
pub(crate) fn format_unix_ms(unix_ms: i64) -> Option<String> {
    let days = unix_ms.div_euclid(MS_PER_DAY);
    let ms_of_day = unix_ms.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let (seconds, millis) = (ms_of_day / 1000, ms_of_day % 1000);
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    ))
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y.rem_euclid(400);
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A byte cursor over ASCII date text.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn done(&self) -> bool {
        self.0.is_empty()
    }
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }
    fn bump(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }
    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.bump()? == byte).then_some(())
    }
    /// Exactly `width` ASCII digits as a number.
    fn number(&mut self, width: usize) -> Option<i64> {
        let digits = self.0.get(..width)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.0 = &self.0[width..];
        Some(digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    }
    /// The run of ASCII digits that follows (possibly empty).
    fn digits(&mut self) -> &'a [u8] {
        let end = self
            .0
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(self.0.len());
        let (digits, rest) = self.0.split_at(end);
        self.0 = rest;
        digits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yyyymmdd_integers_are_real_dates() {
        assert_eq!(
            yyyymmdd(19_800_920),
            Some(days_from_civil(1980, 9, 20) * MS_PER_DAY)
        );
        assert_eq!(yyyymmdd(19_000_101), Some(MIN_UNIX_MS));
        assert_eq!(yyyymmdd(22_001_231), Some(END_UNIX_MS - MS_PER_DAY));
        for not_a_date in [
            18_991_231, 22_010_101, 19_801_320, 19_800_931, 19_000_229, 20_210_229,
        ] {
            assert_eq!(yyyymmdd(not_a_date), None, "{not_a_date}");
        }
        assert!(yyyymmdd(20_000_229).is_some());
    }

    #[test]
    fn strings_outside_1900_2200_are_not_instants() {
        for outside in [
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "1899-12-31",
            "1900-01-01T00:30:00+01:00",
            "2200-12-31T23:30:00-01:00",
            "2201-01-01",
        ] {
            assert_eq!(parse_date_time(outside), None, "{outside}");
        }
        for inside in [
            "1900-01-01T00:00:00Z",
            "2200-12-31T23:59:59.999Z",
            "1900-01-01T01:30:00+01:00",
        ] {
            assert!(parse_date_time(inside).is_some(), "{inside}");
        }
    }

    #[test]
    fn calendar_math_round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1900, 1, 1) * MS_PER_DAY, MIN_UNIX_MS);
        assert_eq!(days_from_civil(2201, 1, 1) * MS_PER_DAY, END_UNIX_MS);
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=days_in_month(y, m)).contains(&d));
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
