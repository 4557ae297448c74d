//! Bounded waits timed by PIT channel 0, which needs no calibration: it counts at
//! 1.193182 MHz on every PC and in QEMU.
//!
//! Channel 0 runs as a rate generator (mode 2) over the full 65536-tick period (the
//! 18.2 Hz the firmware sets up too); a wait reads its count with the counter-latch
//! command and adds up how far it moved between reads, so it must read at least once a
//! period (55 ms), which every poll does. Channel 0's gate is wired high, so unlike
//! channel 2 (gated, and read back, through port 0x61, i.e. the PC speaker's logic) it
//! works where port 0x61 does not exist: QEMU's `microvm` has a PIT but no speaker port,
//! which reads 0xff there and ended every channel-2 wait at once. The runtime never
//! enables interrupts, so the IRQ 0 the channel raises is never delivered.
//!
//! Without a PIT (`pit=off`: the count never moves) a wait ends after a fixed number of
//! polls instead, so it is bounded either way.

use x86_64::instructions::port::Port;

/// PIT input clock, Hz.
const PIT_HZ: u64 = 1_193_182;
/// Polls per 65536 ticks (55 ms) of waiting before assuming there is no PIT: a poll is
/// three port accesses, well over 25 ns, on hardware and under TCG alike.
const MAX_POLLS_PER_PERIOD: u64 = 1 << 21;

const CHANNEL_0: u16 = 0x40;
const MODE: u16 = 0x43;
/// Channel 0, low then high byte, mode 2 (rate generator), binary.
const CHANNEL_0_RATE_GENERATOR: u8 = 0b0011_0100;
/// Channel 0, counter latch.
const CHANNEL_0_LATCH: u8 = 0b0000_0000;

fn read_count(mode: &mut Port<u8>, channel: &mut Port<u8>) -> u16 {
    // SAFETY: ports 0x40/0x43 are the PC's standard timer; latching channel 0's count
    // and reading it (low byte, then high) changes nothing but the latch.
    unsafe {
        mode.write(CHANNEL_0_LATCH);
        let low = channel.read();
        let high = channel.read();
        u16::from_le_bytes([low, high])
    }
}

/// Polls `done` until it returns true or about `micros` microseconds have passed;
/// returns its last answer. Reprograms PIT channel 0 (ports 0x40 and 0x43).
pub(super) fn wait_until(micros: u64, mut done: impl FnMut() -> bool) -> bool {
    let target = (micros.saturating_mul(PIT_HZ) / 1_000_000).max(1);
    let max_polls = (target / 0x1_0000 + 1).saturating_mul(MAX_POLLS_PER_PERIOD);
    let mut mode = Port::<u8>::new(MODE);
    let mut channel = Port::<u8>::new(CHANNEL_0);
    // SAFETY: as in `read_count`; a count of 0 is the full 65536-tick period.
    unsafe {
        mode.write(CHANNEL_0_RATE_GENERATOR);
        channel.write(0);
        channel.write(0); // counting starts here
    }
    let mut last = read_count(&mut mode, &mut channel);
    let mut elapsed = 0u64;
    let mut polls = 0u64;
    while elapsed < target && polls < max_polls {
        if done() {
            return true;
        }
        let now = read_count(&mut mode, &mut channel);
        // It counts down and reloads at 0 (mode 2 never shows 0: it reloads at 1).
        elapsed += u64::from(last.wrapping_sub(now));
        last = now;
        polls += 1;
        core::hint::spin_loop();
    }
    done()
}

/// Waits about `micros` microseconds.
pub(super) fn delay(micros: u64) {
    wait_until(micros, || false);
}
