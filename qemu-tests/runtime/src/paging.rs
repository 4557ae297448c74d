//! The identity map: virtual == physical for the first 4 GiB, in 2 MiB pages, and for
//! the RAM above 4 GiB (up to [`HIGH_MAP_LIMIT`]); the same map again at
//! [`DIRECT_MAP_OFFSET`], a Linux-style higher-half direct map.
//!
//! The PVH entry code fills [`PML4`], [`PDPT`] and [`PAGE_DIRECTORIES`] before paging is
//! on. Once in Rust, [`unmap_guard_pages`] splits each 2 MiB page that holds a stack guard
//! page into 4 KiB pages and leaves the guard page out, [`map_high_ram`] maps the RAM
//! the memory map reports above 4 GiB, and [`map_direct_map`] points the higher-half
//! PML4 slot at the same page tables.

use x86_64::instructions::tlb;

use crate::stacks::MAX_GUARD_LARGE_PAGES;
use crate::{BootCell, console, exit, println};

/// End of the identity map the entry code builds (all of it, RAM or not).
pub(crate) const IDENTITY_MAP_END: u64 = 4 << 30;
/// RAM above 4 GiB is identity-mapped up to here (one page directory per GiB from a
/// fixed pool, so the kernel image does not grow with the guest).
pub(crate) const HIGH_MAP_LIMIT: u64 = 16 << 30;
/// Where the direct map starts: virtual `DIRECT_MAP_OFFSET + p` is physical `p` for every
/// identity-mapped `p` (Linux x86_64's `__PAGE_OFFSET` without KASLR). A multiple of
/// 512 GiB, so it is one PML4 entry sharing the identity map's tables.
pub(crate) const DIRECT_MAP_OFFSET: u64 = 0xffff_8880_0000_0000;
const GIB: u64 = 1 << 30;

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

pub(crate) static PAGE_DIRECTORIES: BootCell<PageDirectories> = BootCell::new(PageDirectories([0; 4 * ENTRIES]));
/// Page directories for the GiBs from 4 GiB to [`HIGH_MAP_LIMIT`] that hold RAM.
static HIGH_PAGE_DIRECTORIES: BootCell<[PageTable; HIGH_DIRECTORY_COUNT]> =
    BootCell::new([const { PageTable::zeroed() }; HIGH_DIRECTORY_COUNT]);
const HIGH_DIRECTORY_COUNT: usize = ((HIGH_MAP_LIMIT - IDENTITY_MAP_END) / GIB) as usize;
/// Page-directory entry flags for a 2 MiB page: present, writable, page size.
const LARGE_PAGE: u64 = PRESENT | WRITABLE | (1 << 7);

/// 4 KiB page tables for the 2 MiB pages that hold guard pages (all of them lie in the
/// runtime's stacks, which span at most this many 2 MiB pages).
static SPLIT_TABLES: BootCell<[PageTable; MAX_GUARD_LARGE_PAGES]> =
    BootCell::new([const { PageTable::zeroed() }; MAX_GUARD_LARGE_PAGES]);

/// Unmaps each page in `guard_pages` (page-aligned, below 4 GiB, inside the runtime's
/// stacks). Called once at boot, before any other CPU runs.
pub(crate) fn unmap_guard_pages(guard_pages: &[u64]) {
    // SAFETY: this runs at boot, on the boot CPU, before any AP is started, and nothing
    // else holds a reference to the page tables; the CPU walks them, which is why the TLB
    // is flushed below.
    let (directory, split_tables) = unsafe { (&mut (*PAGE_DIRECTORIES.get()).0, &mut *SPLIT_TABLES.get()) };
    // The 2 MiB page (its index in `directory`) each split table maps so far.
    let mut split_pages = [usize::MAX; MAX_GUARD_LARGE_PAGES];
    let mut tables_used = 0;
    for &page in guard_pages {
        let large_page = (page / LARGE_PAGE_SIZE) as usize;
        let slot = match split_pages[..tables_used].iter().position(|&p| p == large_page) {
            Some(slot) => slot,
            None => {
                // Replace the 2 MiB page by a table of 512 4 KiB pages mapping the same
                // memory. There are enough tables for every 2 MiB page the stacks span.
                let slot = tables_used;
                if slot == MAX_GUARD_LARGE_PAGES {
                    console::enter_crash_mode();
                    println!("netdump-qemu-runtime: guard page {page:#x} is outside the stacks");
                    exit::qemu_exit(exit::EXIT_FAILURE);
                }
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

/// Identity-maps, with 2 MiB pages, every 2 MiB page that holds part of a RAM range in
/// `ram` (physical `start..end`) between 4 GiB and [`HIGH_MAP_LIMIT`]; RAM beyond the
/// limit stays unmapped. Called once at boot, before the kernel runs.
pub(crate) fn map_high_ram(ram: impl Iterator<Item = (u64, u64)>) {
    // SAFETY: boot is single-threaded and nothing else holds a reference to the page
    // tables; the TLB is flushed below.
    let (pdpt, directories) = unsafe { (&mut (*PDPT.get()).0, &mut *HIGH_PAGE_DIRECTORIES.get()) };
    for (start, end) in ram {
        let start = start.max(IDENTITY_MAP_END) / LARGE_PAGE_SIZE * LARGE_PAGE_SIZE;
        let end = end.min(HIGH_MAP_LIMIT);
        let mut page = start;
        while page < end {
            let gib = (page / GIB) as usize;
            let directory = &mut directories[gib - (IDENTITY_MAP_END / GIB) as usize];
            pdpt[gib] = (&raw const *directory) as u64 | PRESENT | WRITABLE;
            directory.0[((page % GIB) / LARGE_PAGE_SIZE) as usize] = page | LARGE_PAGE;
            page += LARGE_PAGE_SIZE;
        }
    }
    tlb::flush_all();
}

/// Makes [`DIRECT_MAP_OFFSET`]` + p` map physical `p` wherever the identity map maps it,
/// by giving the higher-half PML4 slot the identity map's page-directory-pointer table.
/// Called once at boot.
pub(crate) fn map_direct_map() {
    const SLOT: usize = ((DIRECT_MAP_OFFSET >> 39) & 511) as usize;
    const _: () = assert!(DIRECT_MAP_OFFSET.is_multiple_of(512 * GIB));
    // SAFETY: boot is single-threaded and nothing else holds a reference to the PML4;
    // the slot was empty, so no address in use changes its translation.
    let pml4 = unsafe { &mut (*PML4.get()).0 };
    pml4[SLOT] = pml4[0];
    tlb::flush_all();
}
