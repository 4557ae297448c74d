//! Volatile access to DMA memory by byte offset: the driver's only `unsafe` besides the
//! buffer loans in `ring`.
//!
//! Every structure the device shares (DriverShared, the queue descriptor table, the rings)
//! lives in a [`DmaBytes`], and every access to it is a volatile, naturally aligned,
//! little-endian load or store at an offset checked against the region: the device reads
//! and writes this memory concurrently, so the compiler must neither elide, merge nor
//! reorder these accesses among themselves (fences order them against the device). An
//! offset outside the region, or misaligned, never touches memory: reads return 0 and
//! writes are dropped (the offsets are constants and indices reduced modulo the ring size,
//! so this does not happen; the debug assertion says so in tests).

use netdump_pci::DmaRegion;

/// A DMA region the driver accesses field by field.
pub struct DmaBytes {
    region: DmaRegion,
}

impl DmaBytes {
    pub fn new(region: DmaRegion) -> Self {
        DmaBytes { region }
    }

    /// The device's address of byte `offset`.
    pub fn phys_at(&self, offset: usize) -> u64 {
        self.region.phys_addr() + offset as u64
    }

    /// The device's address of the first byte.
    pub fn phys(&self) -> u64 {
        self.region.phys_addr()
    }

    pub fn len(&self) -> usize {
        self.region.len()
    }

    /// Zeroes the whole region. Only while the device does not use it (stopped, or the
    /// region not yet given to it).
    pub fn zero(&mut self) {
        self.region.zero();
    }

    /// The CPU's pointer to `width` bytes at `offset`, if they lie inside the region and
    /// are naturally aligned there (the region's start is at least 8-byte aligned: the
    /// driver carves every region with a larger alignment).
    fn at(&self, offset: usize, width: usize) -> Option<*mut u8> {
        let fits = offset.is_multiple_of(width) && offset.checked_add(width).is_some_and(|end| end <= self.len());
        debug_assert!(fits, "DMA access of {width} bytes at {offset:#x} outside a {:#x}-byte region", self.len());
        fits.then(|| self.region.as_ptr().wrapping_add(offset))
    }

    pub fn read_u8(&self, offset: usize) -> u8 {
        // SAFETY: `at` checked that the byte lies inside the region, which `DmaRegion::new`
        // guarantees is mapped and owned by this driver (and its device); the access is
        // volatile because the device may write the byte at any time.
        self.at(offset, 1).map_or(0, |p| unsafe { p.read_volatile() })
    }

    pub fn read_u32(&self, offset: usize) -> u32 {
        // SAFETY: as in `read_u8`, for 4 bytes that `at` checked are inside the region and
        // 4-byte aligned (the region's start is 8-byte aligned, the offset a multiple of 4).
        self.at(offset, 4).map_or(0, |p| u32::from_le(unsafe { p.cast::<u32>().read_volatile() }))
    }

    pub fn write_u8(&mut self, offset: usize, value: u8) {
        if let Some(p) = self.at(offset, 1) {
            // SAFETY: as in `read_u8`; `&mut self` means no loan of this region's bytes is
            // alive on the CPU side. What the value means to the device is the caller's
            // business (it writes only fields the device does not own at that moment).
            unsafe { p.write_volatile(value) }
        }
    }

    pub fn write_u16(&mut self, offset: usize, value: u16) {
        if let Some(p) = self.at(offset, 2) {
            // SAFETY: as in `write_u8`, for 2 bytes inside the region and 2-byte aligned.
            unsafe { p.cast::<u16>().write_volatile(value.to_le()) }
        }
    }

    pub fn write_u32(&mut self, offset: usize, value: u32) {
        if let Some(p) = self.at(offset, 4) {
            // SAFETY: as in `write_u8`, for 4 bytes inside the region and 4-byte aligned.
            unsafe { p.cast::<u32>().write_volatile(value.to_le()) }
        }
    }

    pub fn write_u64(&mut self, offset: usize, value: u64) {
        if let Some(p) = self.at(offset, 8) {
            // SAFETY: as in `write_u8`, for 8 bytes inside the region and 8-byte aligned.
            unsafe { p.cast::<u64>().write_volatile(value.to_le()) }
        }
    }

    /// `len` bytes at `offset`, for the CPU to build a frame in, if they lie inside the
    /// region.
    ///
    /// # Safety
    /// The device must not read or write these bytes while the slice lives (the caller
    /// owns the buffer under its ring's ownership rules).
    pub unsafe fn bytes_mut(&mut self, offset: usize, len: usize) -> Option<&mut [u8]> {
        let fits = offset.checked_add(len).is_some_and(|end| end <= self.len());
        debug_assert!(fits, "buffer of {len} bytes at {offset:#x} outside a {:#x}-byte region", self.len());
        // SAFETY: the bytes are inside the region (checked), which is mapped, writable and
        // this driver's; `&mut self` excludes any other CPU-side loan of them, and the
        // caller promises the device leaves them alone meanwhile.
        fits.then(|| unsafe { core::slice::from_raw_parts_mut(self.region.as_ptr().add(offset), len) })
    }

    /// `len` bytes at `offset`, for the CPU to read a frame from, if they lie inside the
    /// region.
    ///
    /// # Safety
    /// The device must not write these bytes while the slice lives.
    pub unsafe fn bytes(&self, offset: usize, len: usize) -> Option<&[u8]> {
        let fits = offset.checked_add(len).is_some_and(|end| end <= self.len());
        debug_assert!(fits, "buffer of {len} bytes at {offset:#x} outside a {:#x}-byte region", self.len());
        // SAFETY: as in `bytes_mut`; only shared CPU-side access while the slice lives
        // (writes need `&mut self`).
        fits.then(|| unsafe { core::slice::from_raw_parts(self.region.as_ptr().add(offset), len) })
    }
}
