//! DMA memory handed to a driver by the integrator.

use core::ptr::NonNull;

/// Physically contiguous memory that a driver shares with its device.
///
/// The integrator sets it aside before the crash (a static array, pages from its frame
/// allocator at boot) and hands it to the driver, which carves descriptor rings and packet
/// buffers out of it with [`take`](Self::take). Drivers never allocate.
///
/// A region knows both addresses of its memory: the CPU's (`as_ptr`) and the device's
/// (`phys_addr`). Byte `i` of the region is at `as_ptr() + i` for the CPU and at
/// `phys_addr() + i` for the device.
#[derive(Debug)]
pub struct DmaRegion {
    virt: NonNull<u8>,
    phys: u64,
    len: usize,
}

// SAFETY: a region is exclusive ownership of its memory (see `new`), like a `Box<[u8]>`;
// moving it to another thread moves that ownership.
unsafe impl Send for DmaRegion {}

/// Why a sub-region could not be carved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaError {
    /// Not enough bytes left (after aligning).
    TooSmall {
        /// Bytes asked for, plus the padding to reach the alignment.
        needed: usize,
        /// Bytes the region has left.
        available: usize,
    },
    /// `align` is not a power of two.
    InvalidAlignment {
        /// The alignment asked for.
        align: usize,
    },
    /// The physical and virtual addresses cannot both be aligned to `align`: the mapping
    /// offset is not a multiple of it.
    Misaligned {
        /// The alignment asked for.
        align: usize,
    },
}

impl core::fmt::Display for DmaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DmaError::TooSmall { needed, available } => {
                write!(f, "DMA region too small: {needed} bytes needed, {available} available")
            }
            DmaError::InvalidAlignment { align } => {
                write!(f, "alignment {align} is not a power of two")
            }
            DmaError::Misaligned { align } => {
                write!(f, "virtual and physical addresses cannot both be {align}-byte aligned")
            }
        }
    }
}

impl DmaRegion {
    /// Wraps `len` bytes at virtual address `virt`, seen by devices at physical address
    /// `phys`.
    ///
    /// # Safety
    /// The caller guarantees, for the rest of the program (`'static`):
    /// - `virt..virt + len` is mapped, readable and writable, and does not wrap around;
    /// - the memory is owned by this region alone: no Rust reference, other region, kernel
    ///   subsystem or other device reads or writes it (the driver and its device will);
    /// - it is physically contiguous and the device sees it at `phys`: byte `virt + i` is
    ///   the device's `phys + i` for every `i < len` (an identity map, or any fixed offset;
    ///   no IOMMU remapping other than to exactly these addresses);
    /// - device writes are visible to the CPU and CPU writes to the device without cache
    ///   maintenance (x86 DMA is cache-coherent; elsewhere map it uncached).
    pub unsafe fn new(virt: NonNull<u8>, phys: u64, len: usize) -> Self {
        DmaRegion { virt, phys, len }
    }

    /// The CPU's address of the first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.virt.as_ptr()
    }

    /// The device's address of the first byte.
    pub fn phys_addr(&self) -> u64 {
        self.phys
    }

    /// Bytes in the region.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if nothing is left to carve.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Carves `len` bytes off the front, starting at the first byte whose physical (and
    /// virtual) address is a multiple of `align`; the padding skipped is lost. `self` keeps
    /// the rest.
    pub fn take(&mut self, len: usize, align: usize) -> Result<DmaRegion, DmaError> {
        if !align.is_power_of_two() {
            return Err(DmaError::InvalidAlignment { align });
        }
        let mask = align as u64 - 1;
        let pad = ((align as u64 - (self.phys & mask)) & mask) as usize;
        if (self.virt.as_ptr() as usize).wrapping_add(pad) & (align - 1) != 0 {
            return Err(DmaError::Misaligned { align });
        }
        let needed = pad.checked_add(len).ok_or(DmaError::TooSmall { needed: usize::MAX, available: self.len })?;
        if needed > self.len {
            return Err(DmaError::TooSmall { needed, available: self.len });
        }
        // SAFETY: `pad + len <= self.len`, so both pointers stay inside (or one past the end
        // of) the region, which `new` guarantees does not wrap; neither is null.
        let (front, rest) = unsafe {
            (
                NonNull::new_unchecked(self.virt.as_ptr().add(pad)),
                NonNull::new_unchecked(self.virt.as_ptr().add(needed)),
            )
        };
        let carved = DmaRegion { virt: front, phys: self.phys + pad as u64, len };
        self.virt = rest;
        self.phys += needed as u64;
        self.len -= needed;
        Ok(carved)
    }

    /// Fills the region with zeros.
    pub fn zero(&mut self) {
        // SAFETY: the region owns `len` writable bytes at `virt` (`new`'s contract) and
        // `&mut self` means the driver is not lending any of it out right now. The device
        // must not be using it either; drivers zero memory only while the device is stopped.
        unsafe { core::ptr::write_bytes(self.virt.as_ptr(), 0, self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A region over a leaked, 4096-aligned heap block, mapped at `phys`.
    fn region(len: usize, virt_offset: usize, phys: u64) -> DmaRegion {
        let layout = std::alloc::Layout::from_size_align(len + virt_offset, 4096).unwrap();
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { std::alloc::alloc_zeroed(layout) };
        let virt = NonNull::new(base.wrapping_add(virt_offset)).unwrap();
        // SAFETY: the block is leaked, so owned by the region for the rest of the test run;
        // no device is involved.
        unsafe { DmaRegion::new(virt, phys, len) }
    }

    #[test]
    fn take_carves_from_the_front() {
        let mut r = region(4096, 0, 0x10_0000);
        let ring = r.take(512, 128).unwrap();
        let bufs = r.take(1024, 2048).unwrap();
        assert_eq!((ring.phys_addr(), ring.len()), (0x10_0000, 512));
        // 0x10_0200 rounds up to 0x10_0800.
        assert_eq!((bufs.phys_addr(), bufs.len()), (0x10_0800, 1024));
        assert_eq!(bufs.as_ptr() as usize - ring.as_ptr() as usize, 0x800);
        assert_eq!((r.phys_addr(), r.len()), (0x10_0C00, 4096 - 0xC00));
    }

    #[test]
    fn take_aligns_physical_address_with_an_offset_mapping() {
        // The CPU sees the memory at a different address, congruent modulo 4096.
        let mut r = region(4096, 16, 0x20_0010);
        let carved = r.take(64, 128).unwrap();
        assert_eq!(carved.phys_addr(), 0x20_0080);
        assert_eq!(carved.as_ptr() as usize % 128, 0);
    }

    #[test]
    fn take_rejects_incongruent_mapping() {
        let mut r = region(4096, 8, 0x20_0000);
        assert_eq!(r.take(64, 16).unwrap_err(), DmaError::Misaligned { align: 16 });
        assert_eq!(r.len(), 4096);
    }

    #[test]
    fn take_rejects_too_large_and_keeps_region() {
        let mut r = region(256, 0, 0x1000);
        r.take(100, 1).unwrap();
        assert_eq!(r.take(150, 128).unwrap_err(), DmaError::TooSmall { needed: 178, available: 156 });
        assert_eq!(r.take(usize::MAX, 1).unwrap_err(), DmaError::TooSmall { needed: usize::MAX, available: 156 });
        assert_eq!(r.len(), 156);
    }

    #[test]
    fn take_rejects_non_power_of_two_alignment() {
        let mut r = region(256, 0, 0x1000);
        assert_eq!(r.take(16, 24).unwrap_err(), DmaError::InvalidAlignment { align: 24 });
    }

    #[test]
    fn zero_clears_the_bytes() {
        let mut r = region(64, 0, 0x1000);
        // SAFETY: the test owns the region's 64 bytes.
        unsafe { core::ptr::write_bytes(r.as_ptr(), 0xAB, 64) };
        r.zero();
        // SAFETY: as above; nothing else writes them.
        let bytes = unsafe { core::slice::from_raw_parts(r.as_ptr(), 64) };
        assert!(bytes.iter().all(|&b| b == 0));
    }
}
