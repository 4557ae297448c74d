//! The byte copy shared by [`DirectMapMemory`](super::DirectMapMemory) and the QEMU test
//! runtime's `memcpy`, and the zero check the dump makes in place, in inline assembly.

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

/// Whether the `len` bytes at `src` are all zero: 64 bytes per step (eight loads OR-ed
/// together), then the remaining `len % 64` with `repe scasb`, stopping at the first step
/// that holds a non-zero byte (the first, for most pages that hold data). Reads memory
/// where it is, without a copy, and, as [`copy_forward`], as the CPU sees it (`src` may be
/// address 0).
///
/// The dump calls it on every page it walks, and most of a sparse machine's pages are
/// zero. Under QEMU TCG an unrolled step of eight loads costs about as much as three of
/// `repe scasq`'s eight-byte steps: 0.53 µs per zero page against 0.82 (the test
/// kernel's `costs` mode, docs/PERFORMANCE.md); on hardware `repe scas` is microcoded and
/// slower than plain loads too.
///
/// # Safety
/// `src` must be mapped readable for `len` bytes, the range not wrapping around the
/// address space.
#[inline(always)]
pub unsafe fn is_zero_forward(src: *const u8, len: usize) -> bool {
    let zero: u8;
    // SAFETY: the caller guarantees the range is readable; the loop reads `len / 64`
    // blocks of 64 bytes and `repe scasb` at most `len % 64` bytes after them, all inside
    // the range, and nothing is written. Flags: the loop leaves through `jnz 4f` with ZF
    // clear (a non-zero OR), or after its last block with ZF set by `dec rcx` reaching 0;
    // `and rcx, 63` sets ZF for an empty tail, which `repe scasb` then leaves as it is, and
    // rax is 0 whenever the tail is scanned (all blocks OR-ed to zero, or none was read),
    // so `scasb` compares with a zero `al`. The direction flag is clear on entry (Rust's
    // inline-asm rules), so `scasb` runs forwards.
    unsafe {
        core::arch::asm!(
            "xor eax, eax",
            "mov {tail}, rcx",
            "shr rcx, 6",
            "jz 3f",
            "2:",
            "mov rax, [rdi]",
            "or rax, [rdi + 8]",
            "or rax, [rdi + 16]",
            "or rax, [rdi + 24]",
            "or rax, [rdi + 32]",
            "or rax, [rdi + 40]",
            "or rax, [rdi + 48]",
            "or rax, [rdi + 56]",
            "jnz 4f",
            "add rdi, 64",
            "dec rcx",
            "jnz 2b",
            "3:",
            "mov rcx, {tail}",
            "and rcx, 63",
            "repe scasb",
            "4:",
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
