//! The identity map: virtual == physical for the first 4 GiB, in 2 MiB pages.
//!
//! The PVH entry code fills [`PML4`], [`PDPT`] and [`PAGE_DIRECTORIES`] before paging is
//! on. Once in Rust, [`unmap_guard_pages`] splits each 2 MiB page that holds a stack guard
//! page into 4 KiB pages and leaves the guard page out.

use x86_64::instructions::tlb;

use crate::BootCell;
use crate::stacks::GUARD_PAGE_COUNT;

/// End of the identity map.
pub(crate) const IDENTITY_MAP_END: u64 = 4 << 30;

const ENTRIES: usize = 512;
const PAGE_SIZE: u64 = 4096;
const LARGE_PAGE_SIZE: u64 = 2 << 20;
const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

#[repr(C, align(4096))]
pub(crate) struct PageTable([u64; ENTRIES]);

impl PageTable {
    const fn zeroed() -> Self {
        PageTable([0; ENTRIES])
    }
}

pub(crate) static PML4: BootCell<PageTable> = BootCell::new(PageTable::zeroed());
pub(crate) static PDPT: BootCell<PageTable> = BootCell::new(PageTable::zeroed());
/// Four page directories, one per GiB, contiguous: entry `i` maps the 2 MiB page at
/// `i * 2 MiB`.
#[repr(C, align(4096))]
pub(crate) struct PageDirectories([u64; 4 * ENTRIES]);

pub(crate) static PAGE_DIRECTORIES: BootCell<PageDirectories> =
    BootCell::new(PageDirectories([0; 4 * ENTRIES]));
/// 4 KiB page tables for the 2 MiB pages that hold guard pages (at most one each).
static SPLIT_TABLES: BootCell<[PageTable; GUARD_PAGE_COUNT]> =
    BootCell::new([const { PageTable::zeroed() }; GUARD_PAGE_COUNT]);

/// Unmaps each page in `guard_pages` (page-aligned, below 4 GiB). Called once at boot.
pub(crate) fn unmap_guard_pages(guard_pages: &[u64; GUARD_PAGE_COUNT]) {
    // SAFETY: boot is single-threaded and nothing else holds a reference to the page
    // tables; the CPU walks them, which is why the TLB is flushed below.
    let (directory, split_tables) =
        unsafe { (&mut (*PAGE_DIRECTORIES.get()).0, &mut *SPLIT_TABLES.get()) };
    // The 2 MiB page (its index in `directory`) each split table maps so far.
    let mut split_pages = [usize::MAX; GUARD_PAGE_COUNT];
    let mut tables_used = 0;
    for &page in guard_pages {
        let large_page = (page / LARGE_PAGE_SIZE) as usize;
        let slot = match split_pages[..tables_used]
            .iter()
            .position(|&p| p == large_page)
        {
            Some(slot) => slot,
            None => {
                // Replace the 2 MiB page by a table of 512 4 KiB pages mapping the same
                // memory. There are as many tables as guard pages, so one is free.
                let slot = tables_used;
                tables_used += 1;
                split_pages[slot] = large_page;
                let table = &mut split_tables[slot];
                let base = directory[large_page] & ADDRESS_MASK;
                for (index, entry) in table.0.iter_mut().enumerate() {
                    *entry = (base + index as u64 * PAGE_SIZE) | PRESENT | WRITABLE;
                }
                directory[large_page] = (&raw const *table) as u64 | PRESENT | WRITABLE;
                slot
            }
        };
        split_tables[slot].0[((page % LARGE_PAGE_SIZE) / PAGE_SIZE) as usize] = 0;
    }
    tlb::flush_all();
}
