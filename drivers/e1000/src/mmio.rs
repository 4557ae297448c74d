//! The e1000's registers through BAR0: netdump-pci's [`MmioBlock`] over the 128 KiB the
//! BAR decodes. The driver reaches its registers through [`RegisterBlock`] (32-bit
//! accesses only), so that it runs against a fake device in host tests; the `unsafe`
//! volatile access is netdump-pci's.

use core::ptr::NonNull;

use netdump_pci::{MmioBlock, RegisterBlock};

use crate::regs::MMIO_SIZE;

/// The registers through BAR0, mapped into the CPU's address space.
#[derive(Debug)]
pub struct MmioRegisters(MmioBlock);

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
        // SAFETY: the caller's guarantees are `MmioBlock::new`'s for `SIZE` bytes (a BAR
        // mapping does not wrap around the address space).
        MmioRegisters(unsafe { MmioBlock::new(base, MMIO_SIZE) })
    }
}

impl RegisterBlock for MmioRegisters {
    #[inline]
    fn len(&self) -> usize {
        self.0.len()
    }
    #[inline]
    fn read_u8(&mut self, offset: usize) -> u8 {
        self.0.read_u8(offset)
    }
    #[inline]
    fn read_u16(&mut self, offset: usize) -> u16 {
        self.0.read_u16(offset)
    }
    #[inline]
    fn read_u32(&mut self, offset: usize) -> u32 {
        self.0.read_u32(offset)
    }
    #[inline]
    fn write_u8(&mut self, offset: usize, value: u8) {
        self.0.write_u8(offset, value)
    }
    #[inline]
    fn write_u16(&mut self, offset: usize, value: u16) {
        self.0.write_u16(offset, value)
    }
    #[inline]
    fn write_u32(&mut self, offset: usize, value: u32) {
        self.0.write_u32(offset, value)
    }
}
