//! What the test kernel dumps and how it reads it.
//!
//! - The RAM ranges come from the PVH memory map ([`BootInfo::mapped_ram`]): RAM above
//!   4 GiB included (the runtime maps it), reserved ranges, MMIO and the PCI hole left out.
//! - `direct_map` on the command line: the kernel reads RAM for the dump through the
//!   runtime's higher-half direct map and reports `virt_start = phys + DIRECT_MAP_OFFSET`
//!   for every range, except the kernel image (code, data, stacks), which runs at its
//!   identity addresses and is reported so — as Linux reports its kernel text mapping
//!   beside the direct map. gdb then finds the stack and code at the addresses the
//!   symbols use and the rest of RAM at higher-half addresses.
//! - `extra_pattern=BASE+LEN` (repeatable): pattern regions besides the scenario's main
//!   one (same seed and zero pages), e.g. on both sides of the PCI hole.
//! - `image=realistic`: the main pattern region holds the realistic image instead
//!   ([`Realistic`]: code, heap, log text, page cache, user and free pages, from the same
//!   seed); `image=pattern` (the default) the random pattern.

use netdump_core::arch::x86_64::DirectMapMemory;
use netdump_core::memory::MemoryMap;
use netdump_core::proto::ProtoError;
use netdump_qemu_runtime::{BootInfo, Cmdline, DIRECT_MAP_OFFSET, PhysRange};
use netdump_test_pattern::{PAGE, Pattern, Realistic};

/// Most pattern regions (the main one included).
const MAX_PATTERNS: usize = 4;

/// How the kernel maps the RAM it dumps, and where its patterns are.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub direct_map: bool,
    patterns: [Pattern; MAX_PATTERNS],
    pattern_count: usize,
    /// The realistic image, in the main pattern's place (`image=realistic`).
    pub realistic: Option<Realistic>,
}

/// Set once in `kernel_main`, before the crash; read by the crash path.
static mut LAYOUT: Option<Layout> = None;

impl Layout {
    /// Reads `direct_map` and every `extra_pattern=BASE+LEN` next to the main pattern.
    pub fn from_args(args: &Cmdline<'_>, main: Pattern) -> Result<Self, &'static str> {
        let realistic = match args.get("image").unwrap_or("pattern") {
            "pattern" => None,
            "realistic" => Some(Realistic { base: main.base, len: main.len, seed: main.seed }),
            _ => return Err("image wants pattern or realistic"),
        };
        let mut layout =
            Layout { direct_map: args.has("direct_map"), patterns: [main; MAX_PATTERNS], pattern_count: 1, realistic };
        for (key, value) in args.iter() {
            if key != "extra_pattern" {
                continue;
            }
            let (base, len) = value.and_then(|v| v.split_once('+')).ok_or("extra_pattern wants BASE+LEN")?;
            let base = Cmdline::parse_u64(base).ok_or("extra_pattern: bad base")?;
            let len = Cmdline::parse_u64(len).ok_or("extra_pattern: bad length")?;
            if base % 4096 != 0 || len % 4096 != 0 || len == 0 {
                return Err("extra_pattern must be whole pages");
            }
            let slot = layout.patterns.get_mut(layout.pattern_count).ok_or("too many extra_pattern")?;
            *slot = Pattern { base, len, ..main };
            layout.pattern_count += 1;
        }
        Ok(layout)
    }

    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns[..self.pattern_count]
    }

    /// Where the kernel reads physical address `phys` for the dump.
    fn virt(&self, phys: u64) -> u64 {
        if self.direct_map { phys + DIRECT_MAP_OFFSET } else { phys }
    }

    /// The memory map to announce: one range per mapped RAM range, split around the
    /// kernel image when the direct map is reported (the image keeps its identity
    /// addresses).
    pub fn memory_map(&self, boot: &BootInfo) -> Result<MemoryMap, ProtoError> {
        let image = boot.kernel_image;
        let pieces = boot.mapped_ram().flat_map(move |r| split_around(r, image));
        let virt = |p: u64| if image.contains(p) { p } else { self.virt(p) };
        MemoryMap::from_ram_regions(pieces.map(|r| (r.start, r.len())), virt)
    }

    /// Checks that every pattern lies in one RAM range of `map`, clear of the kernel
    /// image. (RAM below the image held only what the loader passed, which the runtime
    /// copied out at boot.)
    pub fn check(&self, map: &MemoryMap, boot: &BootInfo) -> Result<(), Pattern> {
        let image = boot.kernel_image;
        for p in self.patterns() {
            let in_ram = map.ranges().iter().any(|r| r.contains(p.base, p.len));
            let on_image = p.base < image.end && image.start < p.base + p.len;
            if !in_ram || on_image {
                return Err(*p);
            }
        }
        Ok(())
    }

    /// Writes every pattern (the realistic image in the main one's place when chosen),
    /// through the mapping the dump reads (the direct map or the identity map).
    pub fn fill_patterns(&self) {
        for (i, p) in self.patterns().iter().enumerate() {
            if let (0, Some(image)) = (i, self.realistic) {
                self.fill_realistic(&image);
                continue;
            }
            let mut addr = p.base;
            while addr < p.base + p.len {
                // SAFETY: `check` found the region in free RAM above the kernel image,
                // mapped at `virt` (identity and direct map both cover all mapped RAM),
                // and nothing else uses it.
                unsafe { core::ptr::write_volatile(self.virt(addr) as *mut u64, p.word(addr)) };
                addr += 8;
            }
        }
    }

    fn fill_realistic(&self, image: &Realistic) {
        let mut page = [0u8; PAGE as usize];
        let mut addr = image.base;
        while addr < image.base + image.len {
            image.fill_page(addr, &mut page);
            // SAFETY: as in `fill_patterns`: the region (the main pattern's) is free RAM
            // above the kernel image, mapped at `virt`, used by nothing else; `addr` is
            // page-aligned and the page lies inside the region.
            unsafe { core::ptr::copy_nonoverlapping(page.as_ptr(), self.virt(addr) as *mut u8, page.len()) };
            addr += PAGE;
        }
    }

    /// Keeps the layout for the crash path. Called once, before the crash.
    pub fn install(self) {
        // SAFETY: single CPU; written once here before any crash, only read afterwards.
        unsafe { LAYOUT = Some(self) };
    }
}

/// Reads RAM for the dump the way the installed layout maps it.
pub fn reader() -> DirectMapMemory {
    // SAFETY: written once before the crash (`Layout::install`), read-only now.
    let direct = unsafe { (*(&raw const LAYOUT)).is_some_and(|l| l.direct_map) };
    let offset = if direct { DIRECT_MAP_OFFSET } else { 0 };
    // SAFETY: every RAM range of the memory map is mapped readable at `phys` (the
    // identity map) and at `phys + DIRECT_MAP_OFFSET` (the runtime's direct map).
    unsafe { DirectMapMemory::new(offset) }
}

/// `r` cut at the edges of `image`: up to three pieces, in order.
fn split_around(r: PhysRange, image: PhysRange) -> impl Iterator<Item = PhysRange> {
    let cuts = [r.start, image.start.clamp(r.start, r.end), image.end.clamp(r.start, r.end), r.end];
    (0..3).map(move |i| PhysRange { start: cuts[i], end: cuts[i + 1] }).filter(|p| !p.is_empty())
}
