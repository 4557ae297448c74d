//! The byte copy shared by [`DirectMapMemory`](super::DirectMapMemory) and the QEMU test
//! runtime's `memcpy`, and the zero check the dump makes in place: string instructions in
//! inline assembly.

/// Copies `len` bytes from `src` to `dest`, front to back: eight bytes per `rep movsq`
/// step, then the remaining `len % 8` with `rep movsb`.
///
/// Under emulation (QEMU TCG) each step of a `rep` string instruction costs about the same
/// whatever its width, so this is up to eight times faster there than a byte loop, and no
/// slower on hardware. Being assembly, it is never recognised as a copy loop and turned
/// into a call to `memcpy` (so `memcpy` itself can be built on it), and it reads memory as
/// the CPU sees it: `src` may be address 0, which is RAM under an identity map but a null
/// pointer to Rust.
///
/// # Safety
/// - `src` must be mapped readable for `len` bytes and `dest` writable for `len` bytes,
///   neither range wrapping around the address space;
/// - the ranges must not overlap, except with `dest` below `src` (a forward copy never
///   reads a byte it has already overwritten);
/// - nothing else writes either range during the copy.
#[inline(always)]
pub unsafe fn copy_forward(dest: *mut u8, src: *const u8, len: usize) {
    // SAFETY: the caller guarantees both ranges are valid for `len` bytes and overlap at
    // most in the forward-safe direction; the two string instructions touch exactly those
    // bytes and only the registers declared here. The direction flag is clear on entry to
    // any asm block (Rust's inline-asm rules), so both run forwards.
    unsafe {
        core::arch::asm!(
            "mov {tail}, rcx",
            "shr rcx, 3",
            "rep movsq",
            "mov rcx, {tail}",
            "and rcx, 7",
            "rep movsb",
            tail = out(reg) _,
            inout("rcx") len => _,
            inout("rdi") dest => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags)
        );
    }
}

/// Whether the `len` bytes at `src` are all zero: eight bytes per `repe scasq` step, then
/// the remaining `len % 8` with `repe scasb`, stopping at the first non-zero one (the first
/// word, for most pages that hold data). Reads memory where it is, without a copy, and, as
/// [`copy_forward`], as the CPU sees it (`src` may be address 0).
///
/// # Safety
/// `src` must be mapped readable for `len` bytes, the range not wrapping around the
/// address space.
#[inline(always)]
pub unsafe fn is_zero_forward(src: *const u8, len: usize) -> bool {
    let zero: u8;
    // SAFETY: the caller guarantees the range is readable; the string instructions read
    // only inside it (at most `len / 8` words, then `len % 8` bytes) and write nothing.
    // `test rcx, rcx` sets ZF for an empty count, which `repe` leaves as it is, so an
    // empty range reads as zero. The direction flag is clear on entry (Rust's inline-asm
    // rules), so both run forwards.
    unsafe {
        core::arch::asm!(
            "xor eax, eax",
            "mov {tail}, rcx",
            "shr rcx, 3",
            "test rcx, rcx",
            "repe scasq",
            "jne 2f",
            "mov rcx, {tail}",
            "and rcx, 7",
            "test rcx, rcx",
            "repe scasb",
            "2:",
            "sete {zero}",
            tail = out(reg) _,
            zero = out(reg_byte) zero,
            inout("rcx") len => _,
            inout("rdi") src => _,
            out("rax") _,
            options(nostack, readonly)
        );
    }
    zero != 0
}
