//! Register capture at the crash site.

use crate::proto::{REGISTERS_VALID, RegisterRecord};

/// Captures the general registers, `rip`, `rsp`, `rflags` and the segment selectors
/// at the point of the call, for the panic path.
///
/// Always inlined, so `rip`, `rsp` and `rbp` are those of the calling function (the
/// kernel's panic handler): a debugger unwinds from there through the panicking code.
/// Registers the inline assembly itself needs (the record pointer and one scratch
/// register) hold compiler values; at a panic site no other value is meaningful anyway.
/// Control registers are not read here (they need ring 0): see
/// [`read_control_registers`]. For CPU exceptions, build the record from the saved
/// exception frame instead.
#[inline(always)]
pub fn capture_registers(cpu: u64) -> RegisterRecord {
    let mut r = RegisterRecord { cpu, flags: REGISTERS_VALID, ..RegisterRecord::default() };
    let p: *mut RegisterRecord = &mut r;
    // SAFETY: `p` points to a live, exclusive `RegisterRecord` (`#[repr(C)]`, 32 u64 in
    // the order of the stores below, checked by the proto tests). The red zone below
    // rsp is stepped over before `pushfq`, and rsp is restored before the block ends.
    unsafe {
        core::arch::asm!(
            "mov [{p} + 0x00], rax",
            "mov [{p} + 0x08], rbx",
            "mov [{p} + 0x10], rcx",
            "mov [{p} + 0x18], rdx",
            "mov [{p} + 0x20], rsi",
            "mov [{p} + 0x28], rdi",
            "mov [{p} + 0x30], rbp",
            "mov [{p} + 0x38], rsp",
            "mov [{p} + 0x40], r8",
            "mov [{p} + 0x48], r9",
            "mov [{p} + 0x50], r10",
            "mov [{p} + 0x58], r11",
            "mov [{p} + 0x60], r12",
            "mov [{p} + 0x68], r13",
            "mov [{p} + 0x70], r14",
            "mov [{p} + 0x78], r15",
            "lea {t}, [rip]",
            "mov [{p} + 0x80], {t}",
            "sub rsp, 128",
            "pushfq",
            "pop {t}",
            "add rsp, 128",
            "mov [{p} + 0x88], {t}",
            "mov {t:e}, cs",
            "mov [{p} + 0x90], {t}",
            "mov {t:e}, ss",
            "mov [{p} + 0x98], {t}",
            "mov {t:e}, ds",
            "mov [{p} + 0xa0], {t}",
            "mov {t:e}, es",
            "mov [{p} + 0xa8], {t}",
            "mov {t:e}, fs",
            "mov [{p} + 0xb0], {t}",
            "mov {t:e}, gs",
            "mov [{p} + 0xb8], {t}",
            p = in(reg) p,
            t = out(reg) _,
        );
    }
    r
}

/// Fills `ds`, `es`, `fs` and `gs` of a record with the current selectors.
pub(crate) fn read_segment_selectors(r: &mut RegisterRecord) {
    let (ds, es, fs, gs): (u16, u16, u16, u16);
    // SAFETY: reading a segment register has no effect and is allowed at every
    // privilege level.
    unsafe {
        core::arch::asm!("mov {:x}, ds", out(reg) ds, options(nomem, nostack, preserves_flags));
        core::arch::asm!("mov {:x}, es", out(reg) es, options(nomem, nostack, preserves_flags));
        core::arch::asm!("mov {:x}, fs", out(reg) fs, options(nomem, nostack, preserves_flags));
        core::arch::asm!("mov {:x}, gs", out(reg) gs, options(nomem, nostack, preserves_flags));
    }
    (r.ds, r.es, r.fs, r.gs) = (ds.into(), es.into(), fs.into(), gs.into());
}

/// Fills `cr0`, `cr2`, `cr3`, `cr4`, `fs_base` and `gs_base` of a record.
///
/// # Safety
/// Must run in ring 0 (reading control registers and MSRs faults elsewhere).
pub unsafe fn read_control_registers(r: &mut RegisterRecord) {
    let (cr0, cr2, cr3, cr4): (u64, u64, u64, u64);
    // SAFETY: the caller guarantees ring 0; reading control registers has no effect.
    unsafe {
        core::arch::asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack, preserves_flags));
        core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags));
        core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags));
        core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags));
    }
    r.cr0 = cr0;
    r.cr2 = cr2;
    r.cr3 = cr3;
    r.cr4 = cr4;
    // SAFETY: IA32_FS_BASE (0xC0000100) and IA32_GS_BASE (0xC0000101) exist on every
    // x86_64 CPU; RDMSR in ring 0 only reads them.
    unsafe {
        r.fs_base = rdmsr(0xC000_0100);
        r.gs_base = rdmsr(0xC000_0101);
    }
}

/// # Safety
/// Ring 0, and `msr` must exist.
pub(crate) unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: per the function's contract.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (hi as u64) << 32 | lo as u64
}

/// # Safety
/// Ring 0, `msr` must exist, and writing `value` to it must be what the caller intends.
pub(crate) unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: per the function's contract.
    unsafe {
        core::arch::asm!(
            "wrmsr",
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags)
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn capture_in_a_frame() -> (RegisterRecord, u64) {
        let marker = 0u64;
        let r = capture_registers(3);
        (r, &marker as *const u64 as u64)
    }

    #[test]
    fn captures_this_functions_stack_and_code() {
        let (r, local) = capture_in_a_frame();
        let here = capture_in_a_frame as *const () as u64;
        assert!(r.is_valid());
        assert_eq!(r.cpu, 3);
        // rip lies inside the capturing function, rsp just below its locals
        assert!(r.rip >= here && r.rip < here + 4096, "rip {:#x} vs fn {:#x}", r.rip, here);
        assert!(r.rsp <= local && local - r.rsp < 4096, "rsp {:#x} vs local {:#x}", r.rsp, local);
        assert_eq!(r.cs & 3, 3, "host tests run in ring 3");
    }
}
