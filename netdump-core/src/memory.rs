//! What the dump reads: the kernel's RAM ranges and a way to read physical memory.

pub use crate::proto::{ExcludeSet, MemoryRange, PageClass};
use crate::proto::{Field, MAX_RANGES, ProtoError, validate_ranges};

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

    /// The class of the page at `phys` and how many pages from it on (at most `pages`,
    /// at least 1) share that class, so that a kernel answers per range (a run of free
    /// pages, a file's cached pages) rather than per page. The dump asks only with a
    /// non-empty [`ExcludeSet`] in its configuration.
    ///
    /// Runs on the crash path, in the panicking context: it must not allocate, lock or
    /// wait, its work must be bounded, and it must answer the same for a page each time
    /// it is asked during one dump (the dump asks twice: once to report the excluded
    /// ranges, once to walk memory). A page it cannot classify is
    /// [`PageClass::Unknown`] and is sent. A run length of 0 counts as 1, one over `pages`
    /// as `pages`. The default answers `Unknown` for all `pages`: no filtering.
    fn classify(&self, phys: u64, pages: u64) -> (PageClass, u64) {
        let _ = phys;
        (PageClass::Unknown, pages)
    }

    /// Whether the `len` bytes at `phys` are all zero (the dump's zero-page test), an
    /// error where [`read`](Self::read) would fail. The dump asks before it reads a page
    /// (without LZ4 compression) and then reads the page straight into its packets, so
    /// an implementation that checks in place, without a copy, saves reading each page
    /// twice ([`DirectMapMemory`](crate::arch::x86_64::DirectMapMemory) does). The default
    /// reads 256 bytes at a time onto the stack and stops at the first non-zero byte.
    fn is_zero(&self, phys: u64, len: usize) -> Result<bool, MemoryError> {
        let mut chunk = [0u8; 256];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(chunk.len());
            let here = phys.checked_add(at as u64).ok_or(MemoryError { phys })?;
            self.read(here, &mut chunk[..n])?;
            if chunk[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += n;
        }
        Ok(true)
    }
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
                return Err(ProtoError::BadField(Field::RangeCount));
            }
            map.ranges[map.len] = MemoryRange { phys_start: s, length: e - s, virt_start: virt(s) };
            map.len += 1;
        }
        validate_ranges(map.ranges().iter().copied(), page)?;
        Ok(map)
    }

    /// The ranges, sorted by physical address.
    pub fn ranges(&self) -> &[MemoryRange] {
        // `len` never exceeds MAX_RANGES (every constructor checks it); the `min` says
        // so to the optimiser, which otherwise kept a panic path at each inlined call.
        &self.ranges[..self.len.min(MAX_RANGES)]
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
    fn dump_level_31_excludes_every_excludable_class_and_never_the_kernel() {
        let all = ExcludeSet::from_dump_level(31).unwrap();
        assert_eq!(all, ExcludeSet::ALL);
        for class in PageClass::EXCLUDABLE {
            assert!(all.excludes(class), "{class:?}");
        }
        for class in [PageClass::Unknown, PageClass::KernelCode, PageClass::KernelData] {
            assert!(!all.excludes(class), "{class:?}");
        }
        assert_eq!(ExcludeSet::from_dump_level(32), None);
    }

    #[test]
    fn each_dump_level_bit_excludes_its_class_only() {
        let user = ExcludeSet::from_dump_level(8).unwrap();
        assert!(user.excludes(PageClass::User));
        assert!(!user.excludes(PageClass::Free) && !user.excludes(PageClass::PageCache));
        let cache = ExcludeSet::PAGE_CACHE.union(ExcludeSet::PAGE_CACHE_PRIVATE);
        assert_eq!(cache.dump_level(), 6);
        assert!(cache.excludes(PageClass::PageCache) && cache.excludes(PageClass::PageCachePrivate));
        assert!(!cache.excludes(PageClass::User));
        // Zero pages are skipped anyway: level 1 filters nothing more.
        assert!(!ExcludeSet::ZERO.filters() && !ExcludeSet::NONE.filters() && ExcludeSet::FREE.filters());
    }

    #[test]
    fn page_classes_round_trip_through_their_dump_level_bits() {
        for class in PageClass::EXCLUDABLE {
            assert_eq!(PageClass::from_dump_level_bit(class.dump_level_bit()), Some(class));
        }
        for bit in [0, 1, 3, 32] {
            assert_eq!(PageClass::from_dump_level_bit(bit), None);
        }
    }

    #[test]
    fn a_memory_source_without_classification_answers_unknown_for_the_whole_range() {
        struct Plain;
        impl MemorySource for Plain {
            fn read(&self, _: u64, _: &mut [u8]) -> Result<(), MemoryError> {
                Ok(())
            }
        }
        assert_eq!(Plain.classify(0x1000, 17), (PageClass::Unknown, 17));
    }

    #[test]
    fn unsorted_maps_are_rejected() {
        let r = |p| MemoryRange { phys_start: p, length: 0x1000, virt_start: p };
        assert!(MemoryMap::new(&[r(0x2000), r(0x1000)]).is_err());
        assert!(MemoryMap::new(&[r(0x1000), r(0x2000)]).is_ok());
    }
}
