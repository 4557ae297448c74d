//! The C symbols the precompiled `core` calls and nothing on this target provides:
//! `memcpy`, `memmove`, `memset`, `memcmp`, `bcmp` and `rust_eh_personality`.
//!
//! The bodies are string instructions in inline assembly, so the compiler cannot
//! recognise them as copy/fill/compare loops and turn them back into calls to themselves.
//! The System V ABI guarantees the direction flag is clear on entry to a function (the
//! exception entry clears it too), so `rep movsb`/`rep stosb`/`repe cmpsb` run forwards.

use core::arch::asm;

/// # Safety
/// `src` and `dest` must be valid for `n` bytes and must not overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // `rep movsq` then `rep movsb`, inlined (netdump-core's, shared with its
    // `DirectMapMemory`): assembly, so it never turns back into a call to `memcpy`.
    // SAFETY: the caller guarantees both buffers are valid for `n` bytes and do not
    // overlap; `memmove` also calls this when `dest` is below `src`, an overlap
    // `copy_forward` allows.
    unsafe { netdump_core::arch::x86_64::copy_forward(dest, src, n) };
    dest
}

/// # Safety
/// `src` and `dest` must be valid for `n` bytes; they may overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // `dest` is below `src` or past its end: a forward copy never reads a byte it
        // has already overwritten.
        // SAFETY: as in `memcpy`; forward copying is correct for this overlap.
        return unsafe { memcpy(dest, src, n) };
    }
    // `dest` lies inside `src..src + n`: copy backwards, from the last byte.
    // SAFETY: the caller guarantees both buffers are valid for `n` bytes (n > 0 here, as
    // `dest - src < n`); the direction flag is set for the copy and cleared right after.
    unsafe {
        asm!(
            "std",
            "rep movsb",
            "cld",
            inout("rcx") n => _,
            inout("rdi") dest.add(n - 1) => _,
            inout("rsi") src.add(n - 1) => _,
            options(nostack)
        );
    }
    dest
}

/// # Safety
/// `dest` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dest: *mut u8, value: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees `dest` is valid for `n` bytes; `rep stosb` writes
    // exactly those.
    unsafe {
        asm!(
            "rep stosb",
            inout("rcx") n => _,
            inout("rdi") dest => _,
            in("al") value as u8,
            options(nostack, preserves_flags)
        );
    }
    dest
}

/// # Safety
/// `a` and `b` must be valid for reads of `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    if n == 0 {
        return 0;
    }
    let (after_a, after_b): (*const u8, *const u8);
    // SAFETY: the caller guarantees both buffers are readable for `n` bytes; `repe cmpsb`
    // stops at the first difference or after `n` bytes, one byte past the last compared.
    unsafe {
        asm!(
            "repe cmpsb",
            inout("rcx") n => _,
            inout("rsi") a => after_a,
            inout("rdi") b => after_b,
            options(nostack, readonly)
        );
    }
    // The last pair compared is the first difference, or equal if there was none.
    // SAFETY: at least one pair was compared, so both pointers are one past a byte of
    // their buffer.
    let (last_a, last_b) = unsafe { (*after_a.sub(1), *after_b.sub(1)) };
    i32::from(last_a) - i32::from(last_b)
}

/// # Safety
/// As for [`memcmp`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp; bcmp only needs zero / non-zero.
    unsafe { memcmp(a, b, n) }
}

/// The unwinding personality routine `core`'s unwind tables name. Kernels are built with
/// `panic = "abort"`, so nothing ever unwinds and nothing calls it; if something does,
/// it traps (#UD) into the exception handler instead of doing something undefined.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() -> ! {
    // SAFETY: `ud2` only raises #UD; it touches no memory or register.
    unsafe { asm!("ud2", options(noreturn, nomem, nostack)) }
}
