//! Register access: a trait, so that the driver runs against a fake device in host tests,
//! and its memory-mapped implementation.

use core::ptr::NonNull;

use volatile::VolatilePtr;

use crate::regs::MMIO_SIZE;

/// The device's 32-bit registers, addressed by byte offset (see [`crate::regs`]).
pub trait Registers {
    fn read(&mut self, offset: usize) -> u32;
    fn write(&mut self, offset: usize, value: u32);
}

/// The registers through BAR0, mapped into the CPU's address space.
#[derive(Debug)]
pub struct MmioRegisters {
    base: NonNull<u32>,
}

// SAFETY: the value is the sole user of the register window (see `new`); moving it to
// another thread moves that exclusive use.
unsafe impl Send for MmioRegisters {}

impl MmioRegisters {
    /// Bytes of address space the mapping must cover (the 128 KiB that BAR0 decodes).
    pub const SIZE: usize = MMIO_SIZE;

    /// # Safety
    /// The caller guarantees, for as long as the value lives:
    /// - `base` is the virtual address at which the device's BAR0 is mapped, for
    ///   [`Self::SIZE`] bytes, as uncacheable device memory (on x86, UC or the firmware's
    ///   MTRR setting for the PCI hole; never write-back);
    /// - `base` is 4-byte aligned (BARs are at least 16-byte aligned);
    /// - nothing else (the OS driver, another CPU) accesses the registers meanwhile; at crash
    ///   time the OS driver is dead and the other CPUs are stopped.
    pub unsafe fn new(base: NonNull<u8>) -> Self {
        MmioRegisters { base: base.cast() }
    }

    /// The register at `offset`, clamped into the window and to dword alignment so that a
    /// wrong offset can never reach outside the mapping.
    fn register(&mut self, offset: usize) -> VolatilePtr<'_, u32> {
        debug_assert!(
            offset < MMIO_SIZE && offset.is_multiple_of(4),
            "bad register offset {offset:#x}"
        );
        let index = (offset % MMIO_SIZE) / 4;
        // SAFETY: `index < MMIO_SIZE / 4`, so the pointer stays inside the mapping `new`
        // guarantees; it is aligned; `&mut self` keeps the access exclusive for the
        // returned pointer's lifetime, and the register window belongs to this value.
        unsafe { VolatilePtr::new(NonNull::new_unchecked(self.base.as_ptr().add(index))) }
    }
}

impl Registers for MmioRegisters {
    fn read(&mut self, offset: usize) -> u32 {
        self.register(offset).read()
    }

    fn write(&mut self, offset: usize, value: u32) {
        self.register(offset).write(value)
    }
}
