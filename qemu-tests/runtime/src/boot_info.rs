//! What the runtime tells the kernel about the machine: command line, memory map, where
//! the kernel image is, and which RAM pages are not mapped.
//!
//! The command line and memory map are copied out of the loader's memory into the
//! runtime's `.bss` at boot, so a kernel may reuse every RAM range the map reports
//! (outside its own image) without destroying them.

use core::fmt;

use crate::pvh::{HvmMemmapEntry, HvmStartInfo};
use crate::{BootCell, Cmdline, paging, println, stacks};

/// Everything below this physical address is identity-mapped (virtual == physical), except
/// the pages in [`BootInfo::unmapped_pages`]. Above it only RAM is mapped, up to
/// [`HIGH_MAP_LIMIT`].
pub const IDENTITY_MAP_END: u64 = paging::IDENTITY_MAP_END;
/// RAM between [`IDENTITY_MAP_END`] and this physical address is identity-mapped too (in
/// whole 2 MiB pages); RAM above it is not mapped.
pub const HIGH_MAP_LIMIT: u64 = paging::HIGH_MAP_LIMIT;
/// The direct map: virtual `DIRECT_MAP_OFFSET + p` maps physical `p` wherever the
/// identity map maps `p` (Linux x86_64's direct-map base). A kernel that reads RAM
/// through it reports `virt_start = phys + DIRECT_MAP_OFFSET` in its memory map.
pub const DIRECT_MAP_OFFSET: u64 = paging::DIRECT_MAP_OFFSET;

const PAGE_SIZE: u64 = 4096;
/// Longest command line kept; QEMU's own limit for PVH is about the same.
const CMDLINE_CAPACITY: usize = 4096;
/// Most memory-map entries kept (QEMU's q35 reports fewer than ten).
const MEMORY_MAP_CAPACITY: usize = 128;

/// A half-open range of physical addresses, `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRange {
    pub start: u64,
    pub end: u64,
}

impl PhysRange {
    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    pub const fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
}

impl fmt::Display for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#012x}..{:#012x}", self.start, self.end)
    }
}

/// The type of a memory-map entry (the E820 types that `hvm_start_info` uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    /// Type 1: usable RAM.
    Ram,
    /// Type 2.
    Reserved,
    /// Type 3: ACPI tables, reclaimable once read.
    AcpiReclaimable,
    /// Type 4.
    AcpiNvs,
    /// Type 5: defective RAM.
    Unusable,
    /// Type 6.
    Disabled,
    /// Type 7: non-volatile RAM.
    Persistent,
    /// Any other type, as reported.
    Other(u32),
}

impl MemoryKind {
    pub const fn from_raw(kind: u32) -> Self {
        match kind {
            1 => MemoryKind::Ram,
            2 => MemoryKind::Reserved,
            3 => MemoryKind::AcpiReclaimable,
            4 => MemoryKind::AcpiNvs,
            5 => MemoryKind::Unusable,
            6 => MemoryKind::Disabled,
            7 => MemoryKind::Persistent,
            other => MemoryKind::Other(other),
        }
    }

    pub const fn raw(self) -> u32 {
        match self {
            MemoryKind::Ram => 1,
            MemoryKind::Reserved => 2,
            MemoryKind::AcpiReclaimable => 3,
            MemoryKind::AcpiNvs => 4,
            MemoryKind::Unusable => 5,
            MemoryKind::Disabled => 6,
            MemoryKind::Persistent => 7,
            MemoryKind::Other(other) => other,
        }
    }
}

impl fmt::Display for MemoryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryKind::Ram => f.write_str("RAM"),
            MemoryKind::Reserved => f.write_str("reserved"),
            MemoryKind::AcpiReclaimable => f.write_str("ACPI"),
            MemoryKind::AcpiNvs => f.write_str("ACPI NVS"),
            MemoryKind::Unusable => f.write_str("unusable"),
            MemoryKind::Disabled => f.write_str("disabled"),
            MemoryKind::Persistent => f.write_str("persistent"),
            MemoryKind::Other(kind) => write!(f, "type {kind}"),
        }
    }
}

/// One entry of the firmware's memory map, as reported (not page-aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    pub start: u64,
    pub size: u64,
    pub kind: MemoryKind,
}

impl MemoryRegion {
    pub const fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }

    pub const fn is_ram(&self) -> bool {
        matches!(self.kind, MemoryKind::Ram)
    }
}

impl fmt::Display for MemoryRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let range = PhysRange { start: self.start, end: self.end() };
        write!(f, "{range} {}", self.kind)
    }
}

/// What the kernel's entry function receives.
#[derive(Debug)]
pub struct BootInfo {
    /// The command line from QEMU's `-append` (empty without one). Cut at the first byte
    /// that is not UTF-8, and at 4095 bytes.
    pub cmdline: &'static str,
    /// The memory map, in the firmware's order (QEMU's is sorted), without empty entries.
    /// At most 128 entries.
    pub memory_map: &'static [MemoryRegion],
    /// Physical extent of the kernel image, `.bss` and the runtime's stacks included
    /// (`__kernel_start..__kernel_end` in `link.ld`), page-aligned.
    pub kernel_image: PhysRange,
    /// Physical address of the ACPI RSDP, if the loader reported one.
    pub rsdp: Option<u64>,
    /// RAM pages that are deliberately not mapped, sorted: the guard page below each of
    /// the runtime's stacks, for every CPU in [`crate::smp::cpus`] (six per CPU: its
    /// kernel stack and its five IST stacks), whether or not the APs are ever started.
    /// Touching one page-faults; a memory dump must skip them.
    pub unmapped_pages: &'static [u64],
}

impl BootInfo {
    /// The command line as `key=value` pairs.
    pub fn args(&self) -> Cmdline<'static> {
        Cmdline::new(self.cmdline)
    }

    /// Total bytes of RAM in the memory map (type 1 entries).
    pub fn ram_bytes(&self) -> u64 {
        self.memory_map.iter().filter(|r| r.is_ram()).map(|r| r.size).sum()
    }

    /// The RAM a kernel can read through the identity map (and the direct map): each RAM
    /// entry shrunk to whole pages, cut at [`HIGH_MAP_LIMIT`] and split around
    /// [`Self::unmapped_pages`].
    /// Ranges come in memory-map order and are non-empty and page-aligned.
    pub fn mapped_ram(&self) -> MappedRam<'static> {
        MappedRam { regions: self.memory_map, holes: self.unmapped_pages, current: None }
    }
}

/// Iterator returned by [`BootInfo::mapped_ram`].
#[derive(Clone, Debug)]
pub struct MappedRam<'a> {
    regions: &'a [MemoryRegion],
    holes: &'a [u64],
    current: Option<PhysRange>,
}

impl Iterator for MappedRam<'_> {
    type Item = PhysRange;

    fn next(&mut self) -> Option<PhysRange> {
        loop {
            let range = match self.current.take() {
                Some(range) => range,
                None => {
                    let (region, rest) = self.regions.split_first()?;
                    self.regions = rest;
                    if !region.is_ram() {
                        continue;
                    }
                    PhysRange {
                        start: region.start.next_multiple_of(PAGE_SIZE),
                        end: region.end().min(HIGH_MAP_LIMIT) / PAGE_SIZE * PAGE_SIZE,
                    }
                }
            };
            if range.is_empty() {
                continue;
            }
            let first_hole = self.holes.iter().copied().filter(|&hole| range.contains(hole)).min();
            let Some(hole) = first_hole else {
                return Some(range);
            };
            self.current = Some(PhysRange { start: hole + PAGE_SIZE, end: range.end });
            if hole > range.start {
                return Some(PhysRange { start: range.start, end: hole });
            }
        }
    }
}

static BOOT_INFO: BootCell<BootInfo> = BootCell::new(BootInfo {
    cmdline: "",
    memory_map: &[],
    kernel_image: PhysRange { start: 0, end: 0 },
    rsdp: None,
    unmapped_pages: &[],
});
static CMDLINE: BootCell<[u8; CMDLINE_CAPACITY]> = BootCell::new([0; CMDLINE_CAPACITY]);
static MEMORY_MAP: BootCell<[MemoryRegion; MEMORY_MAP_CAPACITY]> =
    BootCell::new([MemoryRegion { start: 0, size: 0, kind: MemoryKind::Reserved }; MEMORY_MAP_CAPACITY]);
static UNMAPPED_PAGES: BootCell<[u64; stacks::MAX_GUARD_PAGES]> = BootCell::new([0; stacks::MAX_GUARD_PAGES]);

unsafe extern "C" {
    /// First byte of the image (`link.ld`).
    static __kernel_start: u8;
    /// First byte after the image, `.bss` included (`link.ld`).
    static __kernel_end: u8;
}

/// Copies what the kernel needs out of `hvm_start_info` and returns the boot info, whose
/// `unmapped_pages` are `guard_pages`.
///
/// Called once, by `rust_start`, before the kernel runs.
pub(crate) fn init(start_info: &HvmStartInfo, guard_pages: &stacks::GuardPages) -> &'static BootInfo {
    // SAFETY: boot is single-threaded and this runs once, before the kernel exists; no
    // reference to these statics has been handed out yet.
    let (info, cmdline_buf, map_buf, unmapped_buf) =
        unsafe { (&mut *BOOT_INFO.get(), &mut *CMDLINE.get(), &mut *MEMORY_MAP.get(), &mut *UNMAPPED_PAGES.get()) };

    let cmdline_len = copy_cmdline(start_info.cmdline_paddr, cmdline_buf);
    let cmdline = match core::str::from_utf8(&cmdline_buf[..cmdline_len]) {
        Ok(text) => text,
        Err(error) => {
            println!("netdump-qemu-runtime: command line cut at byte {}: not UTF-8", error.valid_up_to());
            // Cannot fail: the prefix up to `valid_up_to` is valid UTF-8.
            core::str::from_utf8(&cmdline_buf[..error.valid_up_to()]).unwrap_or("")
        }
    };

    let map_len = if start_info.version >= 1 { copy_memory_map(start_info, map_buf) } else { 0 };
    if map_len == 0 {
        println!("netdump-qemu-runtime: the loader reported no memory map");
    }

    let guard_pages = guard_pages.as_slice();
    unmapped_buf[..guard_pages.len()].copy_from_slice(guard_pages);
    *info = BootInfo {
        cmdline,
        memory_map: &map_buf[..map_len],
        kernel_image: PhysRange { start: (&raw const __kernel_start) as u64, end: (&raw const __kernel_end) as u64 },
        rsdp: (start_info.rsdp_paddr != 0).then_some(start_info.rsdp_paddr),
        unmapped_pages: &unmapped_buf[..guard_pages.len()],
    };
    info
}

/// Copies the NUL-terminated command line at `paddr` into `buf`; returns its length.
fn copy_cmdline(paddr: u64, buf: &mut [u8; CMDLINE_CAPACITY]) -> usize {
    if paddr == 0 || paddr >= IDENTITY_MAP_END {
        return 0;
    }
    let mut len = 0;
    while len < CMDLINE_CAPACITY - 1 {
        // SAFETY: the loader put a NUL-terminated string at `paddr`, below 4 GiB and so
        // identity-mapped; we stop at its NUL.
        let byte = unsafe { ((paddr + len as u64) as *const u8).read_volatile() };
        if byte == 0 {
            break;
        }
        buf[len] = byte;
        len += 1;
    }
    len
}

/// Copies the loader's memory map into `buf`; returns the number of entries kept.
fn copy_memory_map(start_info: &HvmStartInfo, buf: &mut [MemoryRegion; MEMORY_MAP_CAPACITY]) -> usize {
    let paddr = start_info.memmap_paddr;
    if paddr == 0 || paddr >= IDENTITY_MAP_END {
        return 0;
    }
    let entries = paddr as *const HvmMemmapEntry;
    let mut kept = 0;
    for index in 0..start_info.memmap_entries as usize {
        // SAFETY: version-1 start info points at `memmap_entries` table entries below
        // 4 GiB (identity-mapped); `index` stays below that count.
        let entry = unsafe { entries.add(index).read_unaligned() };
        // QEMU's microvm appends an empty entry; it describes nothing.
        if entry.size == 0 {
            continue;
        }
        let Some(slot) = buf.get_mut(kept) else {
            println!("netdump-qemu-runtime: memory map too long, keeping {MEMORY_MAP_CAPACITY} entries");
            break;
        };
        *slot = MemoryRegion { start: entry.addr, size: entry.size, kind: MemoryKind::from_raw(entry.kind) };
        kept += 1;
    }
    kept
}

/// The boot information [`init`] built. Only for code that runs after it (the kernel's
/// calls into the runtime): before, it is the empty placeholder.
pub(crate) fn get() -> &'static BootInfo {
    // SAFETY: `BOOT_INFO` is written only by `init`, at boot on the boot CPU before the
    // kernel's entry function (and so any caller of this) runs; read-only afterwards.
    unsafe { &*BOOT_INFO.get() }
}
