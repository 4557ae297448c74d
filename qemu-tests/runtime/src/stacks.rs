//! The stacks of every CPU the runtime can run, each with an unmapped guard page below it
//! so that overflowing one page-faults instead of silently overwriting its neighbour.
//!
//! Each CPU (index 0 is the boot CPU, see [`crate::smp`]) has a kernel stack and one
//! stack per interrupt-stack-table slot its TSS uses ([`gdt::IST_SLOTS`]): #DF, #PF, #GP,
//! the other exceptions, and NMIs. A page fault runs on its own IST stack, so even an
//! overflow of a kernel stack reaches the exception handler with a usable stack.
//!
//! All of them are static (in `.bss`, so inside the kernel image), which lets the runtime
//! unmap the guard pages of every CPU the MADT lists before the kernel runs: the list
//! [`BootInfo::unmapped_pages`](crate::BootInfo::unmapped_pages) is then final from the
//! start, whether or not the kernel ever starts the other CPUs.

use crate::smp::MAX_CPUS;
use crate::{BootCell, gdt};

const PAGE_SIZE: usize = 4096;

/// Each CPU's kernel stack: the boot CPU's from boot on, an AP's from its start.
pub(crate) const KERNEL_STACK_SIZE: usize = 256 * 1024;
/// Each exception stack, and each NMI stack. The crash path (netdump's whole dump) runs on
/// one of these.
pub(crate) const EXCEPTION_STACK_SIZE: usize = 128 * 1024;

/// A stack of `SIZE` bytes (a multiple of the page size) above one guard page.
#[repr(C, align(4096))]
pub(crate) struct GuardedStack<const SIZE: usize> {
    guard: BootCell<[u8; PAGE_SIZE]>,
    stack: BootCell<[u8; SIZE]>,
}

impl<const SIZE: usize> GuardedStack<SIZE> {
    const fn new() -> Self {
        assert!(SIZE.is_multiple_of(PAGE_SIZE));
        GuardedStack { guard: BootCell::new([0; PAGE_SIZE]), stack: BootCell::new([0; SIZE]) }
    }

    /// Physical (= virtual) address of the guard page.
    fn guard_page(&self) -> u64 {
        self.guard.get() as u64
    }

    /// The initial stack pointer: one past the highest byte, 16-byte aligned.
    fn top(&self) -> u64 {
        self.stack.get() as u64 + SIZE as u64
    }
}

/// One CPU's stacks. Only the hardware (through RSP and the TSS) and the code running on
/// a stack touch its bytes; the runtime only computes addresses.
#[repr(C)]
pub(crate) struct CpuStacks {
    /// First, so that the boot CPU's stack top is at a constant offset for the PVH entry.
    kernel: GuardedStack<KERNEL_STACK_SIZE>,
    /// Indexed by IST slot (`gdt::IST_*`).
    ist: [GuardedStack<EXCEPTION_STACK_SIZE>; gdt::IST_SLOTS],
}

impl CpuStacks {
    const fn new() -> Self {
        CpuStacks { kernel: GuardedStack::new(), ist: [const { GuardedStack::new() }; gdt::IST_SLOTS] }
    }

    fn guard_pages(&self) -> impl Iterator<Item = u64> + '_ {
        core::iter::once(self.kernel.guard_page()).chain(self.ist.iter().map(GuardedStack::guard_page))
    }
}

/// Every CPU's stacks, by CPU index; entry 0 is the boot CPU's.
pub(crate) static CPU_STACKS: [CpuStacks; MAX_CPUS] = [const { CpuStacks::new() }; MAX_CPUS];
/// Offset of the boot CPU's kernel stack top from `CPU_STACKS`, for the PVH entry code.
pub(crate) const BOOT_STACK_TOP_OFFSET: usize =
    core::mem::offset_of!(CpuStacks, kernel) + PAGE_SIZE + KERNEL_STACK_SIZE;

/// The initial stack pointer of CPU `index`'s kernel stack.
pub(crate) fn kernel_stack_top(index: usize) -> u64 {
    CPU_STACKS[index].kernel.top()
}

/// The initial stack pointer of CPU `index`'s stack for IST slot `slot` (`gdt::IST_*`).
pub(crate) fn ist_stack_top(index: usize, slot: u16) -> u64 {
    CPU_STACKS[index].ist[usize::from(slot)].top()
}

/// Guard pages per CPU: the kernel stack's and one per IST stack.
pub(crate) const GUARD_PAGES_PER_CPU: usize = 1 + gdt::IST_SLOTS;
/// Most guard pages the runtime unmaps (every CPU's).
pub(crate) const MAX_GUARD_PAGES: usize = MAX_CPUS * GUARD_PAGES_PER_CPU;
/// Most 2 MiB pages the guard pages can lie in: all stacks are one contiguous static, and
/// `n` contiguous bytes touch at most `n / 2 MiB + 2` of them.
pub(crate) const MAX_GUARD_LARGE_PAGES: usize = core::mem::size_of::<[CpuStacks; MAX_CPUS]>() / (2 << 20) + 2;

/// The guard pages of the stacks of CPUs `0..cpu_count`, sorted by address.
#[derive(Clone, Copy)]
pub(crate) struct GuardPages {
    pages: [u64; MAX_GUARD_PAGES],
    len: usize,
}

impl GuardPages {
    pub(crate) fn as_slice(&self) -> &[u64] {
        &self.pages[..self.len]
    }
}

/// The guard pages of CPUs `0..cpu_count` (at most [`MAX_CPUS`]), sorted by address.
pub(crate) fn guard_pages(cpu_count: usize) -> GuardPages {
    let mut pages = [0; MAX_GUARD_PAGES];
    let mut len = 0;
    for cpu in &CPU_STACKS[..cpu_count.min(MAX_CPUS)] {
        for page in cpu.guard_pages() {
            pages[len] = page;
            len += 1;
        }
    }
    pages[..len].sort_unstable();
    GuardPages { pages, len }
}
