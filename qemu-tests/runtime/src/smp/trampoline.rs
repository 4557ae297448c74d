//! The real-mode trampoline the APs start in, and the 64-bit code it jumps to.
//!
//! A start-up IPI starts an AP in real mode at `vector * 4096` (CS = `vector << 8`, IP =
//! 0), so the trampoline is assembled for a fixed page below 1 MiB ([`TRAMPOLINE_PAGE`])
//! and copied there by [`install`]. It loads its own temporary GDT, goes to 32-bit
//! protected mode, enables PAE and SSE, loads the boot CPU's CR3, sets EFER.LME, turns on
//! paging (clearing CR0.EM/TS as the boot CPU does, and the cache-disable bits INIT sets)
//! and far-jumps to 64-bit code, still in the trampoline page (identity-mapped). There it
//! finds its CPU index by looking its initial APIC id (CPUID leaf 1) up in the
//! parameters' table, takes that CPU's kernel stack from the same table and jumps to
//! `ap_start64` in the kernel image, which calls [`super::ap_rust_start`]`(index)`.
//!
//! Looking the stack up by APIC id (rather than handing out "the next stack") means an AP
//! that starts late, or twice, can only ever run on its own stack.

use core::arch::global_asm;
use core::mem::offset_of;

use super::MAX_CPUS;
use crate::pvh;

/// The page the trampoline runs in: below 0x10000 (test scenarios put memory patterns at
/// 0x10000..0x80000) and above the real-mode IVT and BIOS data area.
pub(super) const TRAMPOLINE_PAGE: u64 = 0x8000;
/// The start-up IPI's vector: the trampoline page's number.
pub(super) const SIPI_VECTOR: u8 = (TRAMPOLINE_PAGE >> 12) as u8;
const _: () = assert!(TRAMPOLINE_PAGE.is_multiple_of(4096) && TRAMPOLINE_PAGE < 0x10000);

/// Offset of [`Params`] in the trampoline page (the code is far shorter).
const PARAMS_OFFSET: u64 = 0x800;
/// The parameters' physical address.
const PARAMS: u64 = TRAMPOLINE_PAGE + PARAMS_OFFSET;

/// What the trampoline reads, at [`PARAMS`]. Written by the boot CPU before it sends a
/// start-up IPI; the same for every AP.
#[repr(C)]
pub(super) struct Params {
    /// The boot CPU's CR3 (below 4 GiB: the trampoline loads 32 bits).
    pub cr3: u64,
    /// EFER bits to set (LME, and NXE if the boot CPU has it); low 32 bits used.
    pub efer: u64,
    /// The address of `ap_start64`.
    pub entry: u64,
    /// Each CPU index's APIC id (`u32::MAX` for none and for the boot CPU).
    pub apic_ids: [u32; MAX_CPUS],
    /// Each CPU index's kernel stack top (0 for none and for the boot CPU).
    pub stack_tops: [u64; MAX_CPUS],
}

const _: () = assert!(PARAMS_OFFSET as usize + core::mem::size_of::<Params>() <= 4096);

global_asm!(
    r#"
    .pushsection .rodata.ap_trampoline, "a", @progbits
    .balign 16
    .globl netdump_qemu_runtime_ap_trampoline
    .hidden netdump_qemu_runtime_ap_trampoline
netdump_qemu_runtime_ap_trampoline:
    .code16
    cli
    cld
    movw %cs, %ax                   /* CS = page >> 4: DS-relative = trampoline-relative */
    movw %ax, %ds
    lgdtl ap_gdt_pointer - netdump_qemu_runtime_ap_trampoline
    movl %cr0, %eax
    orl $1, %eax                    /* PE */
    movl %eax, %cr0
    ljmpl $0x08, ${page} + (ap_protected - netdump_qemu_runtime_ap_trampoline)

    .code32
ap_protected:
    movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movl %cr4, %eax
    orl ${cr4_set}, %eax
    movl %eax, %cr4
    movl {p_cr3}, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx          /* IA32_EFER */
    rdmsr
    orl {p_efer}, %eax
    wrmsr
    movl %cr0, %eax
    andl ${cr0_keep}, %eax
    orl ${cr0_set}, %eax
    movl %eax, %cr0
    ljmp $0x18, ${page} + (ap_long - netdump_qemu_runtime_ap_trampoline)

    .code64
ap_long:
    movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    movl $1, %eax
    cpuid
    shrl $24, %ebx                  /* initial APIC id */
    xorl %ecx, %ecx
1:  cmpl %ebx, {p_apic_ids}(,%rcx,4)
    je 2f
    incl %ecx
    cmpl ${max_cpus}, %ecx
    jne 1b
3:  cli                             /* not a CPU we start: park */
    hlt
    jmp 3b
2:  movq {p_stack_tops}(,%rcx,8), %rsp
    testq %rsp, %rsp
    jz 3b
    movq %rcx, %rdi                 /* the CPU index */
    movq {p_entry}, %rax
    jmpq *%rax

    .balign 8
ap_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff        /* 0x08: 32-bit code */
    .quad 0x00cf92000000ffff        /* 0x10: data */
    .quad 0x00af9a000000ffff        /* 0x18: 64-bit code */
ap_gdt_end:
ap_gdt_pointer:
    .word ap_gdt_end - ap_gdt - 1
    .long {page} + (ap_gdt - netdump_qemu_runtime_ap_trampoline)
    .globl netdump_qemu_runtime_ap_trampoline_end
    .hidden netdump_qemu_runtime_ap_trampoline_end
netdump_qemu_runtime_ap_trampoline_end:
    .popsection

    .pushsection .text.ap_start64, "ax", @progbits
    .type ap_start64, @function
ap_start64:
    .cfi_startproc
    .cfi_undefined %rip             /* outermost frame: gdb's backtrace ends here */
    xorl %ebp, %ebp
    call {ap_rust_start}            /* rdi: the CPU index */
    ud2
    .cfi_endproc
    .size ap_start64, . - ap_start64
    .popsection

    .pushsection .rodata.ap_start64_address, "a", @progbits
    .balign 8
    .globl netdump_qemu_runtime_ap_start64
    .hidden netdump_qemu_runtime_ap_start64
netdump_qemu_runtime_ap_start64:
    .quad ap_start64
    .popsection
"#,
    page = const TRAMPOLINE_PAGE,
    p_cr3 = const PARAMS + offset_of!(Params, cr3) as u64,
    p_efer = const PARAMS + offset_of!(Params, efer) as u64,
    p_entry = const PARAMS + offset_of!(Params, entry) as u64,
    p_apic_ids = const PARAMS + offset_of!(Params, apic_ids) as u64,
    p_stack_tops = const PARAMS + offset_of!(Params, stack_tops) as u64,
    max_cpus = const MAX_CPUS,
    cr4_set = const pvh::CR4_SET,
    cr0_set = const pvh::CR0_SET,
    cr0_keep = const CR0_KEEP,
    ap_rust_start = sym super::ap_rust_start,
    options(att_syntax)
);

/// CR0 bits kept: the boot CPU's mask (clears EM and TS), and CD and NW, which INIT sets
/// (caches off) and the firmware cleared on the boot CPU.
const CR0_KEEP: u32 = pvh::CR0_KEEP & !((1 << 29) | (1 << 30));

unsafe extern "C" {
    /// First byte of the trampoline code (in `.rodata`; it runs only as the copy).
    static netdump_qemu_runtime_ap_trampoline: u8;
    /// One past its last byte.
    static netdump_qemu_runtime_ap_trampoline_end: u8;
    /// The address of `ap_start64`.
    static netdump_qemu_runtime_ap_start64: u64;
}

/// The address of `ap_start64`, for [`Params::entry`].
pub(super) fn ap_start64() -> u64 {
    // SAFETY: immutable data defined in the assembly above.
    unsafe { netdump_qemu_runtime_ap_start64 }
}

/// Copies the trampoline to [`TRAMPOLINE_PAGE`] and writes `params` after it.
///
/// The caller guarantees that the page is RAM the kernel does not use (it is in the
/// memory map's RAM, below the image, and the runtime's documented choice). An AP may
/// still be running in the page from an earlier call (one that timed out): the caller
/// passes the same parameters every time, so the bytes it reads do not change.
pub(super) fn install(params: Params) {
    let start = &raw const netdump_qemu_runtime_ap_trampoline;
    let end = &raw const netdump_qemu_runtime_ap_trampoline_end;
    let len = end as usize - start as usize;
    assert!(len as u64 <= PARAMS_OFFSET, "the AP trampoline overlaps its parameters");
    // SAFETY: `start..end` is the trampoline's code in the kernel image; the destination
    // page is identity-mapped RAM the caller reserved for it, disjoint from the image
    // (which starts at 1 MiB); `len` fits before the parameters (checked above), and
    // `Params` fits in the page (checked at compile time).
    unsafe {
        core::ptr::copy_nonoverlapping(start, TRAMPOLINE_PAGE as *mut u8, len);
        (PARAMS as *mut Params).write_volatile(params);
    }
}
