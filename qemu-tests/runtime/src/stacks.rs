//! The boot stack and the exception stacks, each with an unmapped guard page below it so
//! that overflowing one page-faults instead of silently overwriting its neighbour.
//!
//! A page fault runs on its own IST stack, so even an overflow of the boot stack reaches
//! the exception handler with a usable stack.

use crate::BootCell;

const PAGE_SIZE: usize = 4096;

/// The kernel's stack from boot on.
pub(crate) const BOOT_STACK_SIZE: usize = 256 * 1024;
/// Each exception stack. The crash path (netdump's whole dump) runs on one of these.
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
    pub(crate) fn guard_page(&self) -> u64 {
        self.guard.get() as u64
    }

    /// The initial stack pointer: one past the highest byte, 16-byte aligned.
    pub(crate) fn top(&self) -> u64 {
        self.stack.get() as u64 + SIZE as u64
    }
}

pub(crate) static BOOT_STACK: GuardedStack<BOOT_STACK_SIZE> = GuardedStack::new();
/// Offset of the boot stack's top from `BOOT_STACK`, for the entry code.
pub(crate) const BOOT_STACK_TOP_OFFSET: usize = PAGE_SIZE + BOOT_STACK_SIZE;

pub(crate) static DOUBLE_FAULT_STACK: GuardedStack<EXCEPTION_STACK_SIZE> = GuardedStack::new();
pub(crate) static PAGE_FAULT_STACK: GuardedStack<EXCEPTION_STACK_SIZE> = GuardedStack::new();
pub(crate) static GENERAL_PROTECTION_STACK: GuardedStack<EXCEPTION_STACK_SIZE> = GuardedStack::new();
/// Shared by every other exception vector.
pub(crate) static OTHER_EXCEPTION_STACK: GuardedStack<EXCEPTION_STACK_SIZE> = GuardedStack::new();

pub(crate) const GUARD_PAGE_COUNT: usize = 5;

/// Every guard page, sorted by address.
pub(crate) fn guard_pages() -> [u64; GUARD_PAGE_COUNT] {
    let mut pages = [
        BOOT_STACK.guard_page(),
        DOUBLE_FAULT_STACK.guard_page(),
        PAGE_FAULT_STACK.guard_page(),
        GENERAL_PROTECTION_STACK.guard_page(),
        OTHER_EXCEPTION_STACK.guard_page(),
    ];
    pages.sort_unstable();
    pages
}
