//! Port I/O and time-stamp counter primitives.

/// Reads a byte from an I/O port.
///
/// # Safety
/// The port must be one whose read has no side effect the caller does not intend
/// (here: the PIT and its gate at 0x61). Requires I/O privilege (ring 0).
pub(crate) unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: the caller guarantees the port and privilege; `in` touches no memory.
    unsafe { core::arch::asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes a byte to an I/O port.
///
/// # Safety
/// As [`inb`]: the write must be intended for that device.
pub(crate) unsafe fn outb(port: u16, v: u8) {
    // SAFETY: the caller guarantees the port and privilege; `out` touches no memory.
    unsafe { core::arch::asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags)) };
}

/// The time-stamp counter.
pub(crate) fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the counter (it is available on every x86_64 CPU and at
    // every privilege level unless CR4.TSD is set, which no kernel we support does).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Reads CMOS register `reg` (the MC146818 RTC at ports 0x70/0x71), leaving NMIs enabled
/// (bit 7 of the index clear).
///
/// Callers must not race another user of the CMOS index port: they run at install, when
/// the kernel is single-threaded.
pub(crate) fn cmos_read(reg: u8) -> u8 {
    // SAFETY: selecting a CMOS register and reading it has no effect beyond the read;
    // the kernel runs in ring 0 (I/O privilege).
    unsafe {
        outb(0x70, reg & 0x7f);
        inb(0x71)
    }
}
