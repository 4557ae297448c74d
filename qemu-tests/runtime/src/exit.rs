//! Leaving the machine: QEMU's isa-debug-exit device, or halting.
//!
//! QEMU needs `-device isa-debug-exit,iobase=0xf4,iosize=0x04`. Writing `code` to port
//! 0xf4 makes QEMU exit with status `(code << 1) | 1`, so a kernel can never produce
//! status 0 this way; a triple fault with `-no-reboot` exits 0, which is why a harness
//! must accept only its own success status.

use x86_64::instructions::port::Port;

const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Code the test kernels exit with on success: QEMU's status is 33.
pub const EXIT_SUCCESS: u32 = 0x10;
/// Code the runtime exits with on an unhandled exception, a failed boot or
/// [`default_panic`](crate::default_panic): QEMU's status is 35.
pub const EXIT_FAILURE: u32 = 0x11;

/// The status QEMU's process exits with after `qemu_exit(code)`.
pub const fn qemu_exit_status(code: u32) -> u32 {
    (code << 1) | 1
}

/// Exits QEMU through isa-debug-exit; halts forever if the device is missing.
pub fn qemu_exit(code: u32) -> ! {
    // SAFETY: port 0xf4 is isa-debug-exit (or nothing): writing it has no effect on this
    // kernel's memory.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(code) };
    halt_forever()
}

/// Disables interrupts and halts the CPU, for good (halting again whenever it wakes).
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
