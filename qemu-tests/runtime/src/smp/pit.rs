//! Bounded waits timed by PIT channel 2 (the PC speaker's timer, gated through port
//! 0x61), which needs no calibration: it counts at 1.193182 MHz on every PC and in QEMU.
//!
//! Channel 2 counts down once in mode 0 and raises its output (port 0x61 bit 5) at zero;
//! a wait runs it in chunks of at most 65535 ticks (55 ms). Without a PIT (the output
//! never rises) each chunk ends after a fixed number of polls instead, so a wait is
//! bounded either way.

use x86_64::instructions::port::Port;

/// PIT input clock, Hz.
const PIT_HZ: u64 = 1_193_182;
/// Polls per chunk before assuming there is no PIT. A chunk is at most 55 ms and a port
/// read takes well over 25 ns, on hardware and under TCG alike.
const MAX_POLLS_PER_CHUNK: u32 = 1 << 21;

const CHANNEL_2: u16 = 0x42;
const MODE: u16 = 0x43;
const GATE: u16 = 0x61;
/// Port 0x61: bit 0 gates channel 2, bit 1 connects it to the speaker, bit 5 is its output.
const GATE_ON: u8 = 0x01;
const SPEAKER_ON: u8 = 0x02;
const OUTPUT: u8 = 0x20;

/// Polls `done` until it returns true or about `micros` microseconds have passed;
/// returns its last answer. Touches ports 0x42, 0x43 and 0x61 (restoring 0x61).
pub(super) fn wait_until(micros: u64, mut done: impl FnMut() -> bool) -> bool {
    let mut remaining = (micros.saturating_mul(PIT_HZ) / 1_000_000).max(1);
    let mut gate_port = Port::<u8>::new(GATE);
    let mut mode_port = Port::<u8>::new(MODE);
    let mut channel_port = Port::<u8>::new(CHANNEL_2);
    // SAFETY: 0x61 is system control port B; reading it has no side effect.
    let gate = unsafe { gate_port.read() };
    while remaining > 0 {
        let ticks = remaining.min(0xffff);
        remaining -= ticks;
        // SAFETY: ports 0x42/0x43 (PIT channel 2) and 0x61 (its gate) are the PC's
        // standard timer; channel 2 drives only the speaker, whose bit stays off.
        unsafe {
            gate_port.write((gate & !SPEAKER_ON) | GATE_ON);
            mode_port.write(0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
            channel_port.write(ticks as u8);
            channel_port.write((ticks >> 8) as u8); // counting starts here
        }
        for _ in 0..MAX_POLLS_PER_CHUNK {
            if done() {
                // SAFETY: as above; restores port 0x61 as it was.
                unsafe { gate_port.write(gate) };
                return true;
            }
            // SAFETY: reading port 0x61 has no side effect.
            if unsafe { gate_port.read() } & OUTPUT != 0 {
                break;
            }
            core::hint::spin_loop();
        }
    }
    // SAFETY: as above.
    unsafe { gate_port.write(gate) };
    done()
}

/// Waits about `micros` microseconds.
pub(super) fn delay(micros: u64) {
    wait_until(micros, || false);
}
