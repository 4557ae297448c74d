//! A realistic memory image: what a kernel's RAM looks like rather than random words, so
//! that page filtering and compression are measured and tested on something like the
//! real thing, and still regenerable by the harness page for page from a seed.
//!
//! The region is cut into blocks of [`BLOCK_PAGES`] pages; each block holds one kind of
//! [`Content`], chosen by a hash of the seed and the block's index:
//!
//! - kept by every filter (the kernel's own memory): code-like x86-64 instruction streams,
//!   heap-like structures (pointers sharing their high bits, small integers, padding),
//!   console-log text lines, the random pattern, and all-zero pages;
//! - pages the kernel classifies as page cache (file contents), page cache with private
//!   data, user memory or free memory, filled with recognisable data that a filtered dump
//!   must not carry: each of their 64-byte lines starts with a marker
//!   ([`Content::marker`]), so a leak of one is easy to see in a vmcore.
//!
//! `Realistic::fill_page` writes a page; [`Realistic::content`] says what it holds and
//! [`Content::class`] how the kernel classifies it.

use crate::{PAGE, mix};

/// Pages per block of one kind of content.
pub const BLOCK_PAGES: u64 = 4;

/// What a page of the realistic image holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Content {
    /// All zeros (a kernel page never written).
    Zero,
    /// Code-like bytes: functions made of common x86-64 instruction encodings.
    Code,
    /// Heap-like 64-byte structures: list pointers, reference counts, flags, padding.
    Heap,
    /// Console-log text lines.
    Log,
    /// The random pattern (a hash of address and seed in every word).
    Random,
    /// Contents of a cached file: text lines.
    PageCache,
    /// A cached file's page with private (buffer-head like) data.
    PageCachePrivate,
    /// A user process's memory.
    User,
    /// A free page (slab-poison like filling).
    Free,
}

/// How the kernel classifies a page, in makedumpfile's categories (`-d` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    KernelCode,
    KernelData,
    /// makedumpfile `-d` bit 2: cache pages without private data.
    PageCache,
    /// `-d` bit 4: cache pages with private data.
    PageCachePrivate,
    /// `-d` bit 8: user process pages.
    User,
    /// `-d` bit 16: free pages.
    Free,
}

impl Class {
    /// The makedumpfile dump-level bit that excludes the class (0: never excluded).
    pub fn dump_level_bit(self) -> u32 {
        match self {
            Class::KernelCode | Class::KernelData => 0,
            Class::PageCache => 2,
            Class::PageCachePrivate => 4,
            Class::User => 8,
            Class::Free => 16,
        }
    }

    /// Whether a dump with makedumpfile dump level `level` leaves pages of this class out.
    pub fn excluded_at(self, level: u32) -> bool {
        self.dump_level_bit() & level != 0
    }
}

impl Content {
    /// Every kind, in the order of the generator's weights.
    pub const ALL: [Content; 9] = [
        Content::Zero,
        Content::Code,
        Content::Heap,
        Content::Log,
        Content::Random,
        Content::PageCache,
        Content::PageCachePrivate,
        Content::User,
        Content::Free,
    ];

    /// Relative frequency of each kind (sum 64), in [`Self::ALL`] order: about 45% of the
    /// pages are the kernel's own, as on a machine whose page cache and user memory fill
    /// most of RAM.
    const WEIGHTS: [u64; 9] = [3, 6, 12, 5, 6, 12, 4, 9, 7];

    pub fn class(self) -> Class {
        match self {
            Content::Code => Class::KernelCode,
            Content::Zero | Content::Heap | Content::Log | Content::Random => Class::KernelData,
            Content::PageCache => Class::PageCache,
            Content::PageCachePrivate => Class::PageCachePrivate,
            Content::User => Class::User,
            Content::Free => Class::Free,
        }
    }

    /// The 8 bytes each 64-byte line of a page that a filter drops starts with.
    pub fn marker(self) -> Option<&'static [u8; 8]> {
        match self {
            Content::PageCache => Some(b"PGCACHE:"),
            Content::PageCachePrivate => Some(b"PGCPRIV:"),
            Content::User => Some(b"USERMEM:"),
            Content::Free => Some(b"FREEPG:\x6b"),
            _ => None,
        }
    }
}

/// Where the realistic image lives and its seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Realistic {
    pub base: u64,
    pub len: u64,
    pub seed: u64,
}

impl Realistic {
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr < self.base + self.len
    }

    /// What the page containing `addr` (inside the region) holds.
    pub fn content(&self, addr: u64) -> Content {
        let block = (addr - self.base) / PAGE / BLOCK_PAGES;
        let mut pick = mix(block ^ self.seed.rotate_left(29) ^ 0xb10c) % 64;
        for (kind, weight) in Content::ALL.iter().zip(Content::WEIGHTS) {
            if pick < weight {
                return *kind;
            }
            pick -= weight;
        }
        Content::Random
    }

    /// How the kernel classifies the page containing `addr`.
    pub fn class(&self, addr: u64) -> Class {
        self.content(addr).class()
    }

    /// Pages from the one containing `addr` (inside the region) on, at most `max`, that
    /// share its class: the answer to a per-range classification.
    pub fn class_run(&self, addr: u64, max: u64) -> (Class, u64) {
        let class = self.class(addr);
        let mut page = addr & !(PAGE - 1);
        let mut n = 0;
        while n < max && self.contains(page) && self.class(page) == class {
            // Whole blocks at a time: a block has one kind.
            let block_end = self.base + ((page - self.base) / PAGE / BLOCK_PAGES + 1) * BLOCK_PAGES * PAGE;
            let k = ((block_end - page) / PAGE).min(max - n);
            n += k;
            page += k * PAGE;
        }
        (class, n.max(1))
    }

    /// Writes the page at the page-aligned address `addr` into `out`.
    pub fn fill_page(&self, addr: u64, out: &mut [u8; PAGE as usize]) {
        let mut rng = Rng(mix(addr ^ self.seed.rotate_left(41) ^ 0x9a9e));
        match self.content(addr) {
            Content::Zero => out.fill(0),
            Content::Code => fill_code(&mut rng, out),
            Content::Heap => fill_heap(&mut rng, out),
            Content::Log => fill_log(&mut rng, addr, self.base, out),
            Content::Random => {
                for (i, w) in out.chunks_exact_mut(8).enumerate() {
                    let a = addr + i as u64 * 8;
                    let v = mix(a ^ self.seed.rotate_left(17));
                    w.copy_from_slice(&(if v == 0 { 1 } else { v }).to_le_bytes());
                }
            }
            kind @ (Content::PageCache | Content::PageCachePrivate | Content::User | Content::Free) => {
                fill_marked(&mut rng, kind, out)
            }
        }
    }
}

/// A small deterministic generator (SplitMix64 steps).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Instruction encodings of a compiled kernel's common forms; `R` marks a rel32/imm32
/// filled from the generator, `B` an 8-bit displacement.
const INSNS: &[&[u8]] = &[
    &[0x48, 0x8b, 0x45, 0xf8],                   // mov rax, [rbp-8]
    &[0x48, 0x89, 0xc7],                         // mov rdi, rax
    &[0x48, 0x89, 0xde],                         // mov rsi, rbx
    &[0xe8, b'R', b'R', b'R', b'R'],             // call rel32
    &[0x48, 0x83, 0xc4, 0x08],                   // add rsp, 8
    &[0x85, 0xc0],                               // test eax, eax
    &[0x74, b'B'],                               // je rel8
    &[0x0f, 0x85, b'R', b'R', 0x00, 0x00],       // jne rel32
    &[0x48, 0x8d, 0x3d, b'R', b'R', b'R', 0x00], // lea rdi, [rip+disp32]
    &[0x31, 0xc0],                               // xor eax, eax
    &[0x48, 0x8b, 0x07],                         // mov rax, [rdi]
    &[0x89, 0x45, 0xfc],                         // mov [rbp-4], eax
    &[0xc7, 0x45, 0xf4, b'B', 0x00, 0x00, 0x00], // mov dword [rbp-12], imm32
    &[0x4c, 0x89, 0xe7],                         // mov rdi, r12
    &[0x48, 0x8b, 0x5d, 0xe8],                   // mov rbx, [rbp-24]
    &[0x0f, 0x1f, 0x44, 0x00, 0x00],             // nop dword [rax+rax]
];
const PROLOGUE: &[u8] = &[0x55, 0x48, 0x89, 0xe5, 0x41, 0x57, 0x41, 0x56, 0x53]; // push rbp; mov rbp, rsp; push r15, r14, rbx
const EPILOGUE: &[u8] = &[0x5b, 0x41, 0x5e, 0x41, 0x5f, 0x5d, 0xc3]; // pop rbx, r14, r15, rbp; ret

/// Copies `bytes` to `out[*at..]` (as far as it fits), placeholders from the generator.
fn put_insn(out: &mut [u8], at: &mut usize, bytes: &[u8], rng: &mut Rng) {
    for &b in bytes {
        if *at == out.len() {
            return;
        }
        // No opcode byte of the table is 'R' (0x52) or 'B' (0x42): they are placeholders.
        out[*at] = if b == b'R' || b == b'B' { rng.next() as u8 } else { b };
        *at += 1;
    }
}

fn fill_code(rng: &mut Rng, out: &mut [u8]) {
    let mut at = 0;
    while at < out.len() {
        put_insn(out, &mut at, PROLOGUE, rng);
        for _ in 0..4 + rng.below(24) {
            let insn = INSNS[rng.below(INSNS.len() as u64) as usize];
            put_insn(out, &mut at, insn, rng);
        }
        put_insn(out, &mut at, EPILOGUE, rng);
        // Functions start 16-byte aligned, padded with int3.
        while at < out.len() && !at.is_multiple_of(16) {
            out[at] = 0xcc;
            at += 1;
        }
    }
}

/// A direct-map pointer into 64 MiB of RAM, 8-byte aligned: the high bits are shared.
fn heap_pointer(rng: &mut Rng) -> u64 {
    0xffff_8880_0000_0000 | (rng.next() & 0x3ff_fff8)
}

fn fill_heap(rng: &mut Rng, out: &mut [u8]) {
    for (i, obj) in out.chunks_exact_mut(64).enumerate() {
        // One object in eight is free (zeroed), never the first: the page is not zero.
        if i > 0 && rng.below(8) == 0 {
            obj.fill(0);
            continue;
        }
        let words = [
            heap_pointer(rng),                          // list next
            heap_pointer(rng),                          // list prev
            (1 + rng.below(16)) | (rng.below(4) << 32), // refcount (u32), flags (u32)
            rng.below(4096),                            // id
            heap_pointer(rng),                          // data pointer
            64 << rng.below(6),                         // size (u32), padding (u32)
            0,                                          // padding
            0xdead_4ead_0000_0000 | rng.below(1 << 16), // lock magic and owner
        ];
        for (w, v) in obj.chunks_exact_mut(8).zip(words) {
            w.copy_from_slice(&v.to_le_bytes());
        }
    }
}

const SUBSYSTEMS: &[&str] = &["e1000", "virtio_net", "ext4", "nvme", "usb 1-1", "pci 0000:00:02.0", "sched", "mm"];
const MESSAGES: &[&str] = &[
    "link is up, 1000 Mbps full duplex",
    "mounted filesystem with ordered data mode",
    "queue depth set to",
    "new high-speed USB device number",
    "BAR 0: assigned [mem 0xfebc0000-0xfebdffff]",
    "task blocked for more than 120 seconds",
    "reclaimed pages from zone Normal:",
    "tx timeout on queue",
];

/// Writes bytes into a page, dropping what does not fit.
struct PageWriter<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl core::fmt::Write for PageWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            if self.at < self.out.len() {
                self.out[self.at] = b;
                self.at += 1;
            }
        }
        Ok(())
    }
}

fn fill_log(rng: &mut Rng, addr: u64, base: u64, out: &mut [u8]) {
    use core::fmt::Write;
    // Time grows with the address, as a log ring fills.
    let mut usecs = (addr - base) / PAGE * 250_000;
    let mut w = PageWriter { out, at: 0 };
    while w.at < w.out.len() {
        usecs += rng.below(20_000);
        let subsystem = SUBSYSTEMS[rng.below(SUBSYSTEMS.len() as u64) as usize];
        let message = MESSAGES[rng.below(MESSAGES.len() as u64) as usize];
        let _ =
            writeln!(w, "[{:5}.{:06}] {subsystem}: {message} {}", usecs / 1_000_000, usecs % 1_000_000, rng.below(512));
    }
}

const WORDS: &[&str] = &["the", "file", "config", "value", "path", "user", "data", "line", "=", "/usr/lib", "true"];

/// 64-byte lines, each the kind's marker then words (text) or bytes (free pages).
fn fill_marked(rng: &mut Rng, kind: Content, out: &mut [u8]) {
    let marker = kind.marker().copied().unwrap_or(*b"MARKED: ");
    for line in out.chunks_exact_mut(64) {
        line[..8].copy_from_slice(&marker);
        let body = &mut line[8..];
        if kind == Content::Free {
            body.fill(0x6b);
            body[body.len() - 1] = 0xa5;
            continue;
        }
        let mut at = 0;
        while at < body.len() {
            let word = WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes();
            for &b in word.iter().chain(b" ") {
                if at < body.len() {
                    body[at] = b;
                    at += 1;
                }
            }
        }
        body[body.len() - 1] = b'\n';
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Realistic {
        Realistic { base: 32 << 20, len: 16 << 20, seed: 0x5eed }
    }

    fn page(img: &Realistic, addr: u64) -> [u8; PAGE as usize] {
        let mut p = [0u8; PAGE as usize];
        img.fill_page(addr, &mut p);
        p
    }

    #[test]
    fn every_kind_occurs_in_a_16_mib_image_near_its_weight() {
        let img = image();
        let pages = img.len / PAGE;
        for (kind, weight) in Content::ALL.iter().zip(Content::WEIGHTS) {
            let n = (0..pages).filter(|p| img.content(img.base + p * PAGE) == *kind).count() as u64;
            let expected = pages * weight / 64;
            assert!(n > expected / 2 && n < expected * 2, "{kind:?}: {n} pages, expected about {expected}");
        }
    }

    #[test]
    fn pages_are_deterministic_and_depend_on_the_seed() {
        let img = image();
        let other = Realistic { seed: 1, ..img };
        let a = (0..64).map(|p| img.base + p * PAGE).find(|&a| img.content(a) == Content::Heap).unwrap();
        assert_eq!(page(&img, a), page(&img, a));
        assert_ne!(page(&img, a), page(&other, a));
    }

    #[test]
    fn only_zero_pages_are_zero_and_dropped_pages_carry_their_marker() {
        let img = image();
        for p in 0..1024 {
            let a = img.base + p * PAGE;
            let bytes = page(&img, a);
            let kind = img.content(a);
            assert_eq!(bytes.iter().all(|&b| b == 0), kind == Content::Zero, "{kind:?} at {a:#x}");
            if let Some(marker) = kind.marker() {
                assert!(bytes.chunks_exact(64).all(|l| &l[..8] == marker), "{kind:?} at {a:#x}");
            }
        }
    }

    #[test]
    fn log_pages_are_text_lines_and_heap_pointers_share_high_bits() {
        let img = image();
        let find = |kind| (0..4096).map(|p| img.base + p * PAGE).find(|&a| img.content(a) == kind).unwrap();
        let log = page(&img, find(Content::Log));
        let text = core::str::from_utf8(&log).unwrap();
        assert!(text.starts_with('[') && text.contains("] ") && text.lines().count() > 40);
        let heap = page(&img, find(Content::Heap));
        let next = u64::from_le_bytes(heap[..8].try_into().unwrap());
        assert_eq!(next >> 32, 0xffff_8880);
    }

    #[test]
    fn class_runs_cover_whole_blocks_of_one_class_and_stop_at_max_and_region_end() {
        let img = image();
        let mut addr = img.base;
        while addr < img.base + img.len {
            let (class, n) = img.class_run(addr, 1 << 20);
            for p in 0..n {
                assert_eq!(img.class(addr + p * PAGE), class);
            }
            let next = addr + n * PAGE;
            assert!(next == img.base + img.len || img.class(next) != class, "run at {addr:#x} stopped early");
            addr = next;
        }
        assert_eq!(img.class_run(img.base + PAGE, 2).1, 2.min(img.class_run(img.base + PAGE, 100).1));
        assert_eq!(img.class_run(img.base + img.len - PAGE, 100).1, 1);
    }

    #[test]
    fn dump_level_31_drops_page_cache_user_and_free_and_keeps_the_kernel() {
        assert!(!Class::KernelCode.excluded_at(31) && !Class::KernelData.excluded_at(31));
        for c in [Class::PageCache, Class::PageCachePrivate, Class::User, Class::Free] {
            assert!(c.excluded_at(31));
        }
        assert!(Class::User.excluded_at(8) && !Class::Free.excluded_at(8));
    }
}
