//! What the dump reads: the kernel's RAM ranges and a way to read physical memory.

pub use crate::proto::MemoryRange;
use crate::proto::{MAX_RANGES, ProtoError, validate_ranges};

/// Size of the pages the dump walks (and the page size it announces).
pub const PAGE_SIZE: usize = 4096;

/// Reading physical memory failed (e.g. the address is not mapped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryError {
    /// The physical address of the read that failed.
    pub phys: u64,
}

/// Reads physical memory for the dump. Implemented by the kernel (or by
/// [`crate::arch::x86_64::DirectMapMemory`] when RAM is mapped at a fixed offset).
pub trait MemorySource {
    /// Fills `out` with the bytes at physical address `phys`.
    fn read(&self, phys: u64, out: &mut [u8]) -> Result<(), MemoryError>;
}

/// The RAM ranges to dump: at most [`MAX_RANGES`], page-aligned, sorted, disjoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryMap {
    ranges: [MemoryRange; MAX_RANGES],
    len: usize,
}

impl MemoryMap {
    /// Builds a map, validating it as the server will.
    pub fn new(ranges: &[MemoryRange]) -> Result<Self, ProtoError> {
        let len = validate_ranges(ranges.iter().copied(), PAGE_SIZE as u64)?;
        let mut map = MemoryMap { ranges: [MemoryRange::default(); MAX_RANGES], len };
        map.ranges[..len].copy_from_slice(ranges);
        Ok(map)
    }

    /// Builds a map from firmware RAM regions of any alignment: each is shrunk to whole
    /// pages, empty ones are dropped, adjacent ones merged, `virt` gives the kernel's
    /// mapping of a physical address. Regions beyond [`MAX_RANGES`] are an error.
    pub fn from_ram_regions(
        regions: impl Iterator<Item = (u64, u64)>,
        virt: impl Fn(u64) -> u64,
    ) -> Result<Self, ProtoError> {
        let page = PAGE_SIZE as u64;
        let mut map = MemoryMap { ranges: [MemoryRange::default(); MAX_RANGES], len: 0 };
        for (start, len) in regions {
            let s = start.div_ceil(page) * page;
            let e = (start.saturating_add(len) / page) * page;
            if e <= s {
                continue;
            }
            if map.len > 0
                && map.ranges[map.len - 1].phys_end() == s
                && virt(s) == map.ranges[map.len - 1].virt_start + map.ranges[map.len - 1].length
            {
                map.ranges[map.len - 1].length += e - s;
                continue;
            }
            if map.len == MAX_RANGES {
                return Err(ProtoError::BadField("range_count"));
            }
            map.ranges[map.len] = MemoryRange { phys_start: s, length: e - s, virt_start: virt(s) };
            map.len += 1;
        }
        validate_ranges(map.ranges().iter().copied(), page)?;
        Ok(map)
    }

    /// The ranges, sorted by physical address.
    pub fn ranges(&self) -> &[MemoryRange] {
        &self.ranges[..self.len]
    }

    /// Bytes of RAM in all ranges: what HELLO declares as the memory size.
    pub fn total_bytes(&self) -> u64 {
        self.ranges().iter().map(|r| r.length).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_regions_are_trimmed_to_pages_and_merged() {
        let map =
            MemoryMap::from_ram_regions([(0, 0x9fc00), (0x100000, 0x100000), (0x200000, 0x7e00123)].into_iter(), |p| p)
                .unwrap();
        assert_eq!(
            map.ranges(),
            &[
                MemoryRange { phys_start: 0, length: 0x9f000, virt_start: 0 },
                MemoryRange { phys_start: 0x100000, length: 0x7f00000, virt_start: 0x100000 },
            ]
        );
    }

    #[test]
    fn unsorted_maps_are_rejected() {
        let r = |p| MemoryRange { phys_start: p, length: 0x1000, virt_start: p };
        assert!(MemoryMap::new(&[r(0x2000), r(0x1000)]).is_err());
        assert!(MemoryMap::new(&[r(0x1000), r(0x2000)]).is_ok());
    }
}
