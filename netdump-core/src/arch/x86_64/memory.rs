//! Physical memory reads through the kernel's own mapping of RAM.

use crate::memory::{MemoryError, MemorySource};

/// Reads physical memory at `virtual = physical + offset` (offset 0 for an identity
/// map, e.g. `0xffff_8880_0000_0000` for a Linux-style direct map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectMapMemory {
    offset: u64,
}

impl DirectMapMemory {
    /// # Safety
    /// Every physical address the dump will read (every page of the announced memory
    /// map) must be mapped readable at `phys + offset` for as long as the value is used.
    pub unsafe fn new(offset: u64) -> Self {
        DirectMapMemory { offset }
    }
}

impl MemorySource for DirectMapMemory {
    fn read(&self, phys: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        let src = phys.checked_add(self.offset).ok_or(MemoryError { phys })?;
        if src.checked_add(out.len() as u64).is_none() {
            return Err(MemoryError { phys });
        }
        // SAFETY: `new`'s contract says this range is mapped and readable, and it does not
        // wrap (checked above). The copy is assembly rather than `ptr::copy` because
        // physical address 0 is a valid RAM page under an identity map, and a Rust read
        // through a null pointer would be undefined behaviour. `out` is a valid, exclusive
        // destination of `out.len()` bytes, so the two ranges do not overlap.
        unsafe { super::copy_forward(out.as_mut_ptr(), src as *const u8, out.len()) };
        Ok(())
    }

    /// In place, through the direct map: no copy, and a page holding data is usually
    /// told by its first word.
    fn is_zero(&self, phys: u64, len: usize) -> Result<bool, MemoryError> {
        let src = phys.checked_add(self.offset).ok_or(MemoryError { phys })?;
        if src.checked_add(len as u64).is_none() {
            return Err(MemoryError { phys });
        }
        // SAFETY: `new`'s contract says this range is mapped and readable, and it does not
        // wrap (checked above); the check is assembly for the same reason as the copy.
        Ok(unsafe { super::is_zero_forward(src as *const u8, len) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_through_the_offset() {
        let data: Vec<u8> = (0..64u8).collect();
        // Treat the vector's address as "physical 0x1000" with the matching offset.
        let offset = data.as_ptr() as u64 - 0x1000;
        // SAFETY: the only address read is inside `data`.
        let mem = unsafe { DirectMapMemory::new(offset) };
        let mut out = [0u8; 16];
        mem.read(0x1000 + 8, &mut out).unwrap();
        assert_eq!(&out[..], &data[8..24]);
        // Lengths that are not a multiple of 8 copy their tail too.
        for len in [1usize, 7, 13, 31] {
            let mut out = vec![0u8; len];
            mem.read(0x1000 + 3, &mut out).unwrap();
            assert_eq!(&out[..], &data[3..3 + len]);
        }
    }

    #[test]
    fn tells_zero_memory_in_place_to_the_last_byte() {
        let mut data = vec![0u8; 4096 + 13];
        let offset = data.as_ptr() as u64 - 0x1000;
        for len in [0usize, 1, 7, 8, 9, 63, 64, 65, 127, 4096, 4096 + 13] {
            // SAFETY: the only addresses read are inside `data`.
            let mem = unsafe { DirectMapMemory::new(data.as_ptr() as u64 - 0x1000) };
            assert_eq!(mem.is_zero(0x1000, len), Ok(true), "{len} zero bytes");
        }
        // A non-zero byte anywhere, words and tail alike, is seen; one past the end is not.
        // Each of a 64-byte step's eight words, the first and last step, the tail.
        for at in [0usize, 5, 8, 23, 31, 32, 47, 56, 63, 64, 100, 4032, 4090, 4095, 4096, 4096 + 12] {
            data[at] = 0x80;
            // SAFETY: as above.
            let mem = unsafe { DirectMapMemory::new(offset) };
            assert_eq!(mem.is_zero(0x1000, data.len()), Ok(false), "byte {at}");
            assert_eq!(mem.is_zero(0x1000, at), Ok(true), "the {at} bytes before it");
            data[at] = 0;
        }
    }
}
