//! The UTC calendar: Unix seconds to a calendar date and time and back, for the RTC
//! reader (`arch::x86_64::read_rtc`) and netconsole's syslog timestamps. A leaf module:
//! it needs nothing from the rest of the crate.

/// A UTC calendar time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// The year, 1970 or later (e.g. 2025).
    pub year: u64,
    /// The month, 1..=12.
    pub month: u64,
    /// The day of the month, 1..=31.
    pub day: u64,
    /// The hour, 0..=23.
    pub hour: u64,
    /// The minute, 0..=59.
    pub minute: u64,
    /// The second, 0..=59 (no leap seconds, as in Unix time).
    pub second: u64,
}

/// Seconds since the Unix epoch to the UTC calendar (Howard Hinnant's `civil_from_days`).
pub fn civil(unix_seconds: u64) -> Civil {
    let days = unix_seconds / 86400;
    let secs = unix_seconds % 86400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    Civil { year, month, day, hour: secs / 3600, minute: secs % 3600 / 60, second: secs % 60 }
}

/// Unix seconds of a UTC calendar time (the inverse of [`civil`], for the RTC).
pub fn unix_seconds(t: Civil) -> u64 {
    let y = if t.month <= 2 { t.year - 1 } else { t.year };
    let era = y / 400;
    let yoe = y - era * 400;
    let m = t.month;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + t.day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86400 + t.hour * 3600 + t.minute * 60 + t.second
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-01-02T03:04:05Z
    const T: u64 = 1_767_323_045;

    #[test]
    fn the_calendar_round_trips() {
        let c = civil(T);
        assert_eq!(c, Civil { year: 2026, month: 1, day: 2, hour: 3, minute: 4, second: 5 });
        for s in [0u64, 951_782_400 /* 2000-02-29 */, 4_102_444_799, T] {
            assert_eq!(unix_seconds(civil(s)), s);
        }
        assert_eq!(civil(951_782_400), Civil { year: 2000, month: 2, day: 29, hour: 0, minute: 0, second: 0 });
    }
}
