//! Calendar arithmetic for UTC timestamps, without a date crate: Howard Hinnant's days-from-civil and civil-from-days
//! (proleptic Gregorian), and RFC 3339 formatting for the audit log (milliseconds) and the log line (microseconds).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of [`civil_from_days`]).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month, day) of a day counted from 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Appends `t` as RFC 3339 in UTC with `digits` (3 or 6) digits of fractional seconds: `2026-11-29T14:14:22.340Z`.
/// Digits are written directly (this runs for every log line; `write!` with seven arguments cost ~2,000
/// instructions).
pub fn push_rfc3339(out: &mut String, t: SystemTime, digits: usize) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(i64::MAX));
    let rem = secs % 86_400;
    let (fraction, digits) =
        if digits >= 6 { (u64::from(since.subsec_micros()), 6) } else { (u64::from(since.subsec_millis()), 3) };
    let year = match u64::try_from(year) {
        Ok(y) if y <= 9999 => y,
        _ => {
            let _ = write!(
                out,
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction:0digits$}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60,
            );
            return;
        }
    };
    let mut buf = [0u8; 27];
    let mut at = 0;
    let mut put = |value: u64, width: usize, then: Option<u8>| {
        let mut v = value;
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        at += width;
        if let Some(sep) = then {
            buf[at] = sep;
            at += 1;
        }
    };
    put(year, 4, Some(b'-'));
    put(month.unsigned_abs(), 2, Some(b'-'));
    put(day.unsigned_abs(), 2, Some(b'T'));
    put(rem / 3600, 2, Some(b':'));
    put(rem % 3600 / 60, 2, Some(b':'));
    put(rem % 60, 2, Some(b'.'));
    put(fraction, digits, Some(b'Z'));
    // Only ASCII digits and separators were written.
    out.push_str(std::str::from_utf8(&buf[..at]).unwrap_or_default());
}

/// `t` as RFC 3339 in UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let mut out = String::with_capacity(24);
    push_rfc3339(&mut out, t, 3);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_round_trip_and_format() {
        for days in [-719_468, -1, 0, 59, 11_016, 20_786, 47_541, 1_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        let at = |secs: u64, micros: u32| UNIX_EPOCH + Duration::new(secs, micros * 1000);
        let micros = |t| {
            let mut s = String::new();
            push_rfc3339(&mut s, t, 6);
            s
        };
        assert_eq!(micros(at(0, 0)), "1970-01-01T00:00:00.000000Z");
        assert_eq!(micros(at(951_782_400, 1)), "2000-02-29T00:00:00.000001Z");
        assert_eq!(micros(at(1_795_962_862, 340_427)), "2026-11-29T14:34:22.340427Z");
        assert_eq!(micros(at(4_107_542_399, 999_999)), "2100-02-28T23:59:59.999999Z");
        assert_eq!(rfc3339(at(1_795_962_862, 340_427)), "2026-11-29T14:34:22.340Z");
    }
}
