//! A microsecond clock from the TSC, calibrated once at install against PIT channel 2
//! (or, on machines without its gate, CPUID's frequency leaves or the CMOS RTC's update
//! cycle), so that the crash path needs neither interrupts nor a timer driver.

use super::io::{cmos_read, inb, outb, rdtsc};
use crate::clock::Clock;

/// PIT input clock, Hz.
const PIT_HZ: u64 = 1_193_182;
/// Calibration interval: 10 ms.
const CALIBRATION_TICKS: u64 = PIT_HZ / 100;
/// Calibration intervals measured at most; the one measured most sharply counts.
const CALIBRATION_RUNS: usize = 50;
/// An interval measured within 0.2% ends the calibration early.
const SHARP_PPM: u64 = 2_000;
/// Bound on polling the PIT output; far beyond 10 ms even under emulation.
const MAX_POLLS: u64 = 200_000_000;
/// Frequency assumed when the PIT does not answer (documented in `calibrate`).
const FALLBACK_HZ: u64 = 1_000_000_000;

/// What the TSC's frequency was taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calibration {
    /// Measured against PIT channel 2 (10 ms intervals, the sharpest kept).
    Pit,
    /// CPUID leaf 0x15: the crystal's frequency times the TSC/crystal ratio.
    CpuidCrystal,
    /// CPUID leaf 0x16: the processor's base frequency (the TSC's on current CPUs).
    CpuidBaseFrequency,
    /// Measured over one second of the CMOS RTC's update cycle.
    RtcSecond,
    /// Given by the kernel ([`TscClock::with_frequency`]).
    Given,
    /// Nothing answered: 1 GHz assumed.
    Assumed,
}

/// TSC ticks per microsecond, measured once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TscClock {
    ticks_per_us: u64,
    /// Whether a calibration succeeded (false: the 1 GHz fallback is in use).
    pub calibrated: bool,
    /// Where the frequency came from.
    pub source: Calibration,
    /// How far off the calibration may be, in parts per million (0 when not measured).
    pub uncertainty_ppm: u64,
}

/// One calibration interval, in TSC ticks: when the PIT count was loaded (between
/// `load_before` and `load_after`) and when its output was seen to rise (after
/// `last_low`, the last poll that still read it low, and before `first_high`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Interval {
    load_before: u64,
    load_after: u64,
    last_low: u64,
    first_high: u64,
}

impl Interval {
    /// The interval's length, from the middle of the load to the middle of the rise.
    fn ticks(&self) -> u64 {
        (self.last_low.wrapping_add(self.first_high) / 2)
            .wrapping_sub(self.load_before.wrapping_add(self.load_after) / 2)
    }

    /// How far off [`ticks`](Self::ticks) can be. A CPU that stopped running while it
    /// loaded the count or between two polls (a descheduled vCPU, an SMI) shows here,
    /// where taking the raw interval would stretch every timeout of the crash path.
    fn uncertainty(&self) -> u64 {
        self.load_after.wrapping_sub(self.load_before).saturating_add(self.first_high.wrapping_sub(self.last_low))
    }

    // Three callers, one division: out of line.
    #[inline(never)]
    fn uncertainty_ppm(&self) -> u64 {
        self.uncertainty().saturating_mul(1_000_000) / self.ticks().max(1)
    }

    /// The interval measured more sharply of `self` and `other` (`self` when they tie).
    fn sharper(self, other: Interval) -> Interval {
        if other.uncertainty() < self.uncertainty() { other } else { self }
    }
}

impl TscClock {
    /// Measures the TSC against PIT channel 2 (10 ms, with the PC speaker gate) until
    /// one interval is measured within 0.2%, at most 50 times (half a second), and keeps
    /// the sharpest. A machine without the gate (port 0x61 reads all ones: QEMU's
    /// microvm, Firecracker) takes CPUID leaf 0x15 or 0x16 where they give a frequency,
    /// else one second of the CMOS RTC's update cycle (up to two seconds at install).
    /// If nothing answers within its bound, assumes 1 GHz and says so in `calibrated`
    /// (every timeout then scales with the real frequency, and stays bounded).
    ///
    /// Call at install, with interrupts in any state; it touches only ports 0x42, 0x43
    /// and 0x61 (restoring 0x61), and reads CMOS register 0x0A.
    pub fn calibrate() -> Self {
        if let Some(clock) = Self::calibrate_with_pit() {
            return clock;
        }
        if let Some((hz, source)) = cpuid_tsc_hz() {
            return TscClock { source, ..Self::with_frequency(hz) };
        }
        if let Some(i) = Self::measure_rtc_second() {
            return TscClock {
                ticks_per_us: (i.ticks() / 1_000_000).max(1),
                calibrated: true,
                source: Calibration::RtcSecond,
                uncertainty_ppm: i.uncertainty_ppm(),
            };
        }
        TscClock {
            ticks_per_us: FALLBACK_HZ / 1_000_000,
            calibrated: false,
            source: Calibration::Assumed,
            uncertainty_ppm: 0,
        }
    }

    fn calibrate_with_pit() -> Option<Self> {
        // SAFETY: reading the PC speaker/gate port has no effect.
        if unsafe { inb(0x61) } == 0xff {
            return None; // no gate: nothing decodes port 0x61
        }
        let mut best: Option<Interval> = None;
        for _ in 0..CALIBRATION_RUNS {
            let Some(i) = Self::measure() else { break };
            let sharpest = best.map_or(i, |b| b.sharper(i));
            best = Some(sharpest);
            if sharpest.uncertainty_ppm() <= SHARP_PPM {
                break;
            }
        }
        match best {
            Some(i) if i.ticks() >= 10_000 => Some(TscClock {
                ticks_per_us: (i.ticks() * PIT_HZ / CALIBRATION_TICKS / 1_000_000).max(1),
                calibrated: true,
                source: Calibration::Pit,
                uncertainty_ppm: i.uncertainty_ppm(),
            }),
            _ => None,
        }
    }

    /// One second of the RTC, in TSC ticks: from one rise of register A's
    /// update-in-progress bit to the next (the RTC raises it once a second, 244 µs
    /// before it updates), or `None` when it never rises within a bound.
    fn measure_rtc_second() -> Option<Interval> {
        let (load_before, load_after) = rtc_update_rise()?;
        let (last_low, first_high) = rtc_update_rise()?;
        Some(Interval { load_before, load_after, last_low, first_high })
    }

    /// One 10 ms interval of PIT channel 2, or `None` when its output never rises.
    fn measure() -> Option<Interval> {
        // SAFETY: ports 0x42/0x43 (PIT channel 2) and 0x61 (its gate) are the PC's
        // standard timer; channel 2 drives only the speaker, whose output bit we keep off.
        unsafe {
            let gate = inb(0x61);
            outb(0x61, (gate & !0x02) | 0x01);
            outb(0x43, 0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
            outb(0x42, (CALIBRATION_TICKS & 0xff) as u8);
            let load_before = rdtsc();
            outb(0x42, (CALIBRATION_TICKS >> 8) as u8); // counting starts here
            let load_after = rdtsc();
            let mut last_low = load_after;
            let mut polls = 0;
            let first_high = loop {
                let before_poll = rdtsc();
                if inb(0x61) & 0x20 != 0 {
                    break rdtsc();
                }
                last_low = before_poll;
                polls += 1;
                if polls == MAX_POLLS {
                    outb(0x61, gate);
                    return None;
                }
            };
            outb(0x61, gate);
            Some(Interval { load_before, load_after, last_low, first_high })
        }
    }

    /// A clock with a known frequency (e.g. from the hypervisor).
    pub fn with_frequency(hz: u64) -> Self {
        TscClock {
            ticks_per_us: (hz / 1_000_000).max(1),
            calibrated: true,
            source: Calibration::Given,
            uncertainty_ppm: 0,
        }
    }

    /// TSC ticks per microsecond (at least 1), as calibrated or given.
    pub fn ticks_per_us(&self) -> u64 {
        self.ticks_per_us
    }
}

/// The next rise of the RTC's update-in-progress bit (register A), in TSC ticks: the
/// last poll that read it low and the first that read it high; `None` when it does not
/// rise within [`MAX_POLLS`]. Out of line: [`TscClock::measure_rtc_second`] waits for two.
#[inline(never)]
fn rtc_update_rise() -> Option<(u64, u64)> {
    const UIP: u8 = 0x80;
    let mut last_low = rdtsc();
    let mut was_high = true;
    for _ in 0..MAX_POLLS {
        let before = rdtsc();
        let high = cmos_read(0x0a) & UIP != 0;
        if high && !was_high {
            return Some((last_low, rdtsc()));
        }
        if !high {
            last_low = before;
        }
        was_high = high;
    }
    None
}

/// The TSC's frequency from CPUID: leaf 0x15 (crystal Hz × numerator ÷ denominator) when
/// it names the crystal, else leaf 0x16's base frequency; `None` when neither is there
/// (emulators often leave them zero).
fn cpuid_tsc_hz() -> Option<(u64, Calibration)> {
    // CPUID exists on every x86_64 CPU and only reads identification data.
    let cpuid = |leaf: u32| core::arch::x86_64::__cpuid_count(leaf, 0);
    let max_leaf = cpuid(0).eax;
    if max_leaf >= 0x15 {
        let l = cpuid(0x15);
        let (denominator, numerator, crystal_hz) = (u64::from(l.eax), u64::from(l.ebx), u64::from(l.ecx));
        if denominator != 0 && numerator != 0 && crystal_hz != 0 {
            return Some((crystal_hz * numerator / denominator, Calibration::CpuidCrystal));
        }
    }
    if max_leaf >= 0x16 {
        let base_mhz = u64::from(cpuid(0x16).eax & 0xffff);
        if base_mhz != 0 {
            return Some((base_mhz * 1_000_000, Calibration::CpuidBaseFrequency));
        }
    }
    None
}

impl Clock for TscClock {
    fn now_us(&self) -> u64 {
        rdtsc() / self.ticks_per_us
    }
    #[cfg(feature = "profile")]
    fn now_ns(&self) -> u64 {
        let t = rdtsc();
        (t / self.ticks_per_us) * 1000 + (t % self.ticks_per_us) * 1000 / self.ticks_per_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(load: (u64, u64), rise: (u64, u64)) -> Interval {
        Interval { load_before: load.0, load_after: load.1, last_low: rise.0, first_high: rise.1 }
    }

    #[test]
    fn an_interval_runs_from_the_middle_of_the_load_to_the_middle_of_the_rise() {
        let i = interval((1000, 1100), (25_001_000, 25_001_300));
        assert_eq!(i.ticks(), 25_001_150 - 1050);
        assert_eq!(i.uncertainty(), 100 + 300);
        assert_eq!(i.uncertainty_ppm(), 400 * 1_000_000 / 25_000_100);
    }

    #[test]
    fn a_stall_inside_a_measurement_loses_to_a_sharp_one() {
        // 2.4 GHz: 24 M ticks per 10 ms. The first run was descheduled for 8 ms between
        // two polls and would read 1.8 times the frequency.
        let stalled = interval((0, 50), (24_000_000, 43_200_000));
        let sharp = interval((100_000_000, 100_000_060), (124_000_040, 124_000_100));
        let best = stalled.sharper(sharp);
        assert_eq!(best, sharp);
        assert_eq!(sharp.sharper(stalled), sharp);
        let per_us = best.ticks() * PIT_HZ / CALIBRATION_TICKS / 1_000_000;
        assert!((2395..=2405).contains(&per_us), "{per_us}");
    }
}
