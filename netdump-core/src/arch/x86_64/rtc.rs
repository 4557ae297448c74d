//! The CMOS real-time clock (MC146818 at ports 0x70/0x71): the wall-clock time, for
//! netconsole's syslog timestamps. Read at install, never at crash time.

use super::io::cmos_read as read;
use crate::civil::{Civil, unix_seconds};

/// Status register A, bit 7: an update is in progress (the time registers may be torn).
const UPDATE_IN_PROGRESS: u8 = 0x80;
/// Status register B, bit 2: binary (not BCD); bit 1: 24-hour mode.
const BINARY: u8 = 0x04;
const HOURS_24: u8 = 0x02;

fn snapshot() -> [u8; 7] {
    [read(0x00), read(0x02), read(0x04), read(0x07), read(0x08), read(0x09), read(0x32)]
}

/// Seconds since the Unix epoch by the RTC, which is assumed to keep UTC (QEMU's default,
/// and what Linux expects on servers). `None` when it never settles or reads nonsense.
/// Bounded: at most a few hundred register reads.
pub fn read_rtc() -> Option<u64> {
    for _ in 0..100 {
        // Wait (bounded) for no update in progress, then read twice until stable.
        let mut settled = false;
        for _ in 0..10_000 {
            if read(0x0a) & UPDATE_IN_PROGRESS == 0 {
                settled = true;
                break;
            }
        }
        if !settled {
            return None;
        }
        let a = snapshot();
        if a != snapshot() {
            continue;
        }
        let b = read(0x0b);
        let bcd = |v: u8| if b & BINARY != 0 { v } else { (v & 0x0f) + (v >> 4) * 10 };
        let [sec, min, raw_hour, day, month, year, century] = a;
        let pm = b & HOURS_24 == 0 && raw_hour & 0x80 != 0;
        let mut hour = bcd(raw_hour & 0x7f);
        if b & HOURS_24 == 0 {
            hour %= 12;
            if pm {
                hour += 12;
            }
        }
        let century = match bcd(century) {
            c @ 19..=21 => u64::from(c),
            _ => 20,
        };
        let t = Civil {
            year: century * 100 + u64::from(bcd(year)),
            month: u64::from(bcd(month)),
            day: u64::from(bcd(day)),
            hour: u64::from(hour),
            minute: u64::from(bcd(min)),
            second: u64::from(bcd(sec)),
        };
        let sane = (1..=12).contains(&t.month)
            && (1..=31).contains(&t.day)
            && t.hour < 24
            && t.minute < 60
            && t.second < 61
            && t.year >= 1970;
        return sane.then(|| unix_seconds(t));
    }
    None
}
