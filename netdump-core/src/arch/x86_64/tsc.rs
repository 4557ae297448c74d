//! A microsecond clock from the TSC, calibrated once at install against PIT channel 2,
//! so that the crash path needs neither interrupts nor a timer driver.

use super::io::{inb, outb, rdtsc};
use crate::clock::Clock;

/// PIT input clock, Hz.
const PIT_HZ: u64 = 1_193_182;
/// Calibration interval: 10 ms.
const CALIBRATION_TICKS: u64 = PIT_HZ / 100;
/// Bound on polling the PIT output; far beyond 10 ms even under emulation.
const MAX_POLLS: u64 = 200_000_000;
/// Frequency assumed when the PIT does not answer (documented in `calibrate`).
const FALLBACK_HZ: u64 = 1_000_000_000;

/// TSC ticks per microsecond, measured once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TscClock {
    ticks_per_us: u64,
    /// Whether the PIT calibration succeeded (false: the 1 GHz fallback is in use).
    pub calibrated: bool,
}

impl TscClock {
    /// Measures the TSC against PIT channel 2 for 10 ms, with the PC speaker gate.
    /// If the PIT output never rises within a bound, assumes 1 GHz and says so in
    /// `calibrated` (every timeout then scales with the real frequency, and stays bounded).
    ///
    /// Call at install, with interrupts in any state; it touches only ports 0x42, 0x43
    /// and 0x61 (restoring 0x61).
    pub fn calibrate() -> Self {
        // SAFETY: ports 0x42/0x43 (PIT channel 2) and 0x61 (its gate) are the PC's
        // standard timer; channel 2 drives only the speaker, whose output bit we keep off.
        let measured = unsafe {
            let gate = inb(0x61);
            outb(0x61, (gate & !0x02) | 0x01);
            outb(0x43, 0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
            outb(0x42, (CALIBRATION_TICKS & 0xff) as u8);
            outb(0x42, (CALIBRATION_TICKS >> 8) as u8);
            let start = rdtsc();
            let mut polls = 0;
            while inb(0x61) & 0x20 == 0 && polls < MAX_POLLS {
                polls += 1;
            }
            let end = rdtsc();
            outb(0x61, gate);
            (polls < MAX_POLLS).then(|| end.wrapping_sub(start))
        };
        match measured {
            Some(ticks) if ticks >= 10_000 => TscClock { ticks_per_us: (ticks * PIT_HZ / CALIBRATION_TICKS / 1_000_000).max(1), calibrated: true },
            _ => TscClock { ticks_per_us: FALLBACK_HZ / 1_000_000, calibrated: false },
        }
    }

    /// A clock with a known frequency (e.g. from CPUID leaf 0x15 or the hypervisor).
    pub fn with_frequency(hz: u64) -> Self {
        TscClock { ticks_per_us: (hz / 1_000_000).max(1), calibrated: true }
    }

    pub fn ticks_per_us(&self) -> u64 {
        self.ticks_per_us
    }
}

impl Clock for TscClock {
    fn now_us(&self) -> u64 {
        rdtsc() / self.ticks_per_us
    }
}
