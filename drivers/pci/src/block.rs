//! Register blocks: a device's registers inside one BAR, in memory or I/O space, accessed
//! by byte offset with 8-, 16- and 32-bit accesses.
//!
//! A driver written against [`RegisterBlock`] runs on memory-mapped registers
//! ([`MmioBlock`]), on x86 I/O ports ([`PortBlock`]) and on a fake device in host tests.
//! Offsets usually come from the device itself (a capability's offset and length, a
//! multiplier times a queue index), so an access outside the block or not naturally
//! aligned never reaches the bus: reads return all ones, as from an absent device, and
//! writes are dropped.

use core::ptr::NonNull;

use volatile::VolatilePtr;

/// A device's registers, addressed by byte offset from the start of the block.
pub trait RegisterBlock {
    /// Bytes (memory) or ports (I/O) the block spans.
    fn len(&self) -> usize;

    /// True if the block spans nothing (every access misses).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the byte at `offset`; all ones if it lies outside the block.
    fn read_u8(&mut self, offset: usize) -> u8;
    /// Reads the 16-bit register at `offset`; all ones if it lies outside the block or is not
    /// 2-byte aligned.
    fn read_u16(&mut self, offset: usize) -> u16;
    /// Reads the 32-bit register at `offset`; all ones if it lies outside the block or is not
    /// 4-byte aligned.
    fn read_u32(&mut self, offset: usize) -> u32;
    /// Writes the byte at `offset`; dropped if it lies outside the block.
    fn write_u8(&mut self, offset: usize, value: u8);
    /// Writes the 16-bit register at `offset`; dropped if it lies outside the block or is not
    /// 2-byte aligned.
    fn write_u16(&mut self, offset: usize, value: u16);
    /// Writes the 32-bit register at `offset`; dropped if it lies outside the block or is not
    /// 4-byte aligned.
    fn write_u32(&mut self, offset: usize, value: u32);
}

impl<T: RegisterBlock + ?Sized> RegisterBlock for &mut T {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn read_u8(&mut self, offset: usize) -> u8 {
        (**self).read_u8(offset)
    }
    fn read_u16(&mut self, offset: usize) -> u16 {
        (**self).read_u16(offset)
    }
    fn read_u32(&mut self, offset: usize) -> u32 {
        (**self).read_u32(offset)
    }
    fn write_u8(&mut self, offset: usize, value: u8) {
        (**self).write_u8(offset, value)
    }
    fn write_u16(&mut self, offset: usize, value: u16) {
        (**self).write_u16(offset, value)
    }
    fn write_u32(&mut self, offset: usize, value: u32) {
        (**self).write_u32(offset, value)
    }
}

/// Whether a `width`-byte access at `offset` lies inside a block of `len` bytes and is
/// naturally aligned.
fn fits(offset: usize, width: usize, len: usize) -> bool {
    offset.is_multiple_of(width) && offset.checked_add(width).is_some_and(|end| end <= len)
}

/// Memory-mapped registers: part of a memory BAR, mapped into the CPU's address space.
#[derive(Debug)]
pub struct MmioBlock {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the value is the sole user of its register window (see `new`); moving it to
// another thread moves that exclusive use.
unsafe impl Send for MmioBlock {}

impl MmioBlock {
    /// # Safety
    /// The caller guarantees, for as long as the value lives:
    /// - `base..base + len` is mapped as uncacheable device memory (on x86, UC or the
    ///   firmware's MTRR setting for the PCI hole; never write-back) onto registers of the
    ///   device, and does not wrap around;
    /// - `base` is 4-byte aligned (BARs and virtio's structures are);
    /// - nothing else (another driver, another CPU) accesses these registers meanwhile;
    ///   at crash time the OS driver is dead and the other CPUs are stopped.
    pub unsafe fn new(base: NonNull<u8>, len: usize) -> Self {
        MmioBlock { base, len }
    }

    /// The register of type `T` at `offset`, if it fits.
    fn register<T>(&mut self, offset: usize) -> Option<VolatilePtr<'_, T>> {
        if !fits(offset, size_of::<T>(), self.len) {
            return None;
        }
        // SAFETY: `offset + size_of::<T>() <= len`, so the pointer stays in the mapping
        // `new` guarantees (non-null, as `base` is and the mapping does not wrap); it is
        // naturally aligned because `base` is 4-byte aligned and `offset` a multiple of
        // the width; `&mut self` keeps the access exclusive for the pointer's lifetime.
        Some(unsafe { VolatilePtr::new(self.base.add(offset).cast::<T>()) })
    }
}

impl RegisterBlock for MmioBlock {
    #[inline]
    fn len(&self) -> usize {
        self.len
    }
    #[inline]
    fn read_u8(&mut self, offset: usize) -> u8 {
        self.register::<u8>(offset).map_or(u8::MAX, |r| r.read())
    }
    #[inline]
    fn read_u16(&mut self, offset: usize) -> u16 {
        self.register::<u16>(offset).map_or(u16::MAX, |r| r.read())
    }
    #[inline]
    fn read_u32(&mut self, offset: usize) -> u32 {
        self.register::<u32>(offset).map_or(u32::MAX, |r| r.read())
    }
    #[inline]
    fn write_u8(&mut self, offset: usize, value: u8) {
        if let Some(r) = self.register::<u8>(offset) {
            r.write(value)
        }
    }
    #[inline]
    fn write_u16(&mut self, offset: usize, value: u16) {
        if let Some(r) = self.register::<u16>(offset) {
            r.write(value)
        }
    }
    #[inline]
    fn write_u32(&mut self, offset: usize, value: u32) {
        if let Some(r) = self.register::<u32>(offset) {
            r.write(value)
        }
    }
}

/// Registers in x86 I/O space: an I/O BAR's ports.
#[cfg(target_arch = "x86_64")]
#[derive(Debug)]
pub struct PortBlock {
    base: u16,
    len: u16,
}

#[cfg(target_arch = "x86_64")]
impl PortBlock {
    /// # Safety
    /// The caller guarantees that ports `base..base + len` belong to the device (an I/O BAR
    /// decodes them, and I/O decode is on whenever the block is used) and that nothing else
    /// accesses them while the value lives.
    pub unsafe fn new(base: u16, len: u16) -> Self {
        PortBlock { base, len }
    }

    fn port(&self, offset: usize, width: usize) -> Option<u16> {
        fits(offset, width, usize::from(self.len)).then(|| self.base.checked_add(offset as u16)).flatten()
    }
}

#[cfg(target_arch = "x86_64")]
macro_rules! port_access {
    ($read:ident, $write:ident, $t:ty) => {
        fn $read(&mut self, offset: usize) -> $t {
            match self.port(offset, size_of::<$t>()) {
                // SAFETY: the port is inside the device's I/O BAR (`new`'s contract, and
                // `port` checked the offset); reading a register is what the driver
                // means to do, and no other code uses these ports meanwhile.
                Some(port) => unsafe { x86_64::instructions::port::Port::<$t>::new(port).read() },
                None => <$t>::MAX,
            }
        }
        fn $write(&mut self, offset: usize, value: $t) {
            if let Some(port) = self.port(offset, size_of::<$t>()) {
                // SAFETY: as for the read; the meaning of the value is the driver's.
                unsafe { x86_64::instructions::port::Port::<$t>::new(port).write(value) }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
impl RegisterBlock for PortBlock {
    fn len(&self) -> usize {
        usize::from(self.len)
    }
    port_access!(read_u8, write_u8, u8);
    port_access!(read_u16, write_u16, u16);
    port_access!(read_u32, write_u32, u32);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16-byte "register window" in host memory, 4-byte aligned.
    fn block(memory: &mut [u32; 4]) -> MmioBlock {
        let base = NonNull::new(memory.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: the window is the test's own array, used only through this block.
        unsafe { MmioBlock::new(base, 16) }
    }

    #[test]
    fn mmio_accesses_every_width_little_endian() {
        let mut memory = [0u32; 4];
        {
            let mut regs = block(&mut memory);
            regs.write_u32(0, 0x1122_3344);
            regs.write_u16(4, 0xAABB);
            regs.write_u8(7, 0xCC);
            assert_eq!(regs.read_u8(0), 0x44);
            assert_eq!(regs.read_u16(2), 0x1122);
            assert_eq!(regs.read_u32(4), 0xCC00_AABB);
            assert_eq!(regs.len(), 16);
        }
        assert_eq!(memory[..2], [0x1122_3344, 0xCC00_AABB]);
    }

    #[test]
    fn mmio_outside_the_block_reads_ones_and_drops_writes() {
        let mut memory = [0u32; 4];
        {
            let mut regs = block(&mut memory);
            assert_eq!(regs.read_u32(16), u32::MAX);
            assert_eq!(regs.read_u16(15), u16::MAX);
            assert_eq!(regs.read_u8(usize::MAX), u8::MAX);
            regs.write_u32(16, 1);
            regs.write_u32(usize::MAX - 1, 1);
        }
        assert_eq!(memory, [0; 4]);
    }

    #[test]
    fn mmio_misaligned_accesses_are_refused() {
        let mut memory = [0u32; 4];
        {
            let mut regs = block(&mut memory);
            regs.write_u32(2, 0xFFFF_FFFF);
            regs.write_u16(1, 0xFFFF);
            assert_eq!(regs.read_u32(1), u32::MAX);
        }
        assert_eq!(memory, [0; 4]);
    }
}
