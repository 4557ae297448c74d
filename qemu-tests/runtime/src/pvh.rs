//! PVH boot: the Xen ELF note QEMU looks for, the 32-bit entry that switches to long
//! mode, and the first Rust function.
//!
//! QEMU's `-kernel` loader enters at the address in the `XEN_ELFNOTE_PHYS32_ENTRY` note in
//! 32-bit protected mode with paging off and `%ebx` holding the physical address of an
//! `hvm_start_info` (Xen's `arch-x86/hvm/start_info.h`). The entry code below zeroes
//! `.bss`, identity-maps the first 4 GiB with 2 MiB pages (1 GiB pages are missing on the
//! default `qemu64` CPU), enables PAE, long mode and SSE, loads a temporary GDT and jumps
//! to 64-bit code, which sets up the boot stack and calls [`rust_start`].

use core::arch::global_asm;

use crate::{boot_info, console, exit, gdt, idt, paging, serial, smp, stacks};

/// CR4 bits set before paging: PAE (required by long mode), OSFXSR and OSXMMEXCPT (SSE;
/// the precompiled `core` uses it).
pub(crate) const CR4_SET: u32 = (1 << 5) | (1 << 9) | (1 << 10);
/// CR0 bits set: PE (protected mode), MP (monitor coprocessor), NE (native x87 errors),
/// PG (paging, which activates long mode with EFER.LME).
pub(crate) const CR0_SET: u32 = (1 << 0) | (1 << 1) | (1 << 5) | (1 << 31);
/// CR0 bits kept: everything but EM (x87/SSE emulation, makes SSE raise #UD) and TS
/// (task switched, makes SSE raise #NM).
pub(crate) const CR0_KEEP: u32 = !((1 << 2) | (1 << 3));
/// Page-directory entry flags for a 2 MiB page: present, writable, page size.
const PDE_2MIB: u32 = 0x83;
/// Page-table entry flags for a next-level table: present, writable.
const TABLE_FLAGS: u32 = 0x3;

global_asm!(
    r#"
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4                         /* namesz: "Xen\0" */
    .long 8                         /* descsz: one quadword (QEMU 7.2 reads 8 bytes) */
    .long 18                        /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad pvh_start32
    .balign 4
    .popsection

    .pushsection .rodata.pvh_gdt, "a", @progbits
    .balign 8
pvh_gdt:
    .quad 0
    .quad 0x00af9a000000ffff        /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00cf92000000ffff        /* 0x10: data */
pvh_gdt_end:
    .balign 4
pvh_gdt_pointer:
    .word pvh_gdt_end - pvh_gdt - 1
    .long pvh_gdt
    .popsection

    .pushsection .text.pvh_start32, "ax", @progbits
    .code32
    .globl pvh_start32
    .type pvh_start32, @function
pvh_start32:
    cli
    cld
    movl %ebx, %esi                 /* hvm_start_info, kept in %esi until Rust */

    /* Zero .bss: it holds the page tables and the stacks. */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb

    /* PML4[0] -> PDPT */
    movl ${pdpt}, %eax
    orl ${table_flags}, %eax
    movl %eax, {pml4}

    /* PDPT[0..4] -> the four page directories, one per GiB */
    movl ${pd}, %eax
    orl ${table_flags}, %eax
    xorl %ecx, %ecx
1:  movl %eax, {pdpt}(,%ecx,8)
    addl $4096, %eax
    incl %ecx
    cmpl $4, %ecx
    jne 1b

    /* PD[i] -> 2 MiB page at i * 2 MiB, for 2048 entries (4 GiB) */
    xorl %ecx, %ecx
2:  movl %ecx, %eax
    shll $21, %eax
    orl ${pde_2mib}, %eax
    movl %eax, {pd}(,%ecx,8)
    incl %ecx
    cmpl $2048, %ecx
    jne 2b

    movl %cr4, %eax
    orl ${cr4_set}, %eax
    movl %eax, %cr4

    movl ${pml4}, %eax
    movl %eax, %cr3

    movl $0xc0000080, %ecx          /* IA32_EFER */
    rdmsr
    orl $0x100, %eax                /* LME */
    wrmsr

    movl %cr0, %eax
    andl ${cr0_keep}, %eax
    orl ${cr0_set}, %eax
    movl %eax, %cr0

    lgdt pvh_gdt_pointer
    ljmp $0x08, $pvh_start64
    .size pvh_start32, . - pvh_start32

    .code64
    .type pvh_start64, @function
pvh_start64:
    .cfi_startproc
    .cfi_undefined %rip             /* outermost frame: gdb's backtrace ends here */
    movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    leaq {cpu_stacks}+{boot_stack_top}(%rip), %rsp
    xorl %ebp, %ebp
    movl %esi, %edi                 /* zero-extends: hvm_start_info's physical address */
    call {rust_start}
    ud2
    .cfi_endproc
    .size pvh_start64, . - pvh_start64
    .popsection
"#,
    pml4 = sym paging::PML4,
    pdpt = sym paging::PDPT,
    pd = sym paging::PAGE_DIRECTORIES,
    cpu_stacks = sym stacks::CPU_STACKS,
    boot_stack_top = const stacks::BOOT_STACK_TOP_OFFSET,
    rust_start = sym rust_start,
    table_flags = const TABLE_FLAGS,
    pde_2mib = const PDE_2MIB,
    cr4_set = const CR4_SET,
    cr0_set = const CR0_SET,
    cr0_keep = const CR0_KEEP,
    options(att_syntax)
);

/// `hvm_start_info.magic`.
const HVM_START_MAGIC: u32 = 0x336e_c578;

/// Xen's `struct hvm_start_info` (version 1 adds the memory map).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct HvmStartInfo {
    pub magic: u32,
    pub version: u32,
    pub flags: u32,
    pub nr_modules: u32,
    pub modlist_paddr: u64,
    pub cmdline_paddr: u64,
    pub rsdp_paddr: u64,
    pub memmap_paddr: u64,
    pub memmap_entries: u32,
    pub reserved: u32,
}

/// Xen's `struct hvm_memmap_table_entry` (an E820 entry).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct HvmMemmapEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
    pub reserved: u32,
}

/// The first Rust code: runs on the boot stack with the identity map, SSE and a flat GDT.
extern "C" fn rust_start(start_info_paddr: u64) -> ! {
    serial::init();
    gdt::init();
    idt::init();

    // SAFETY: QEMU's PVH loader passes the physical address of a valid hvm_start_info in
    // %ebx, which the entry code forwarded unchanged; memory below 4 GiB is identity-mapped.
    let start_info = unsafe { (start_info_paddr as *const HvmStartInfo).read_unaligned() };
    if start_info.magic != HVM_START_MAGIC {
        console::enter_crash_mode();
        crate::println!(
            "netdump-qemu-runtime: no PVH start info at {start_info_paddr:#x} (magic {:#x}); boot with qemu -kernel",
            start_info.magic
        );
        exit::qemu_exit(exit::EXIT_FAILURE);
    }
    // The CPU list decides whose stacks' guard pages are unmapped (and reported).
    smp::init(&start_info);
    let guard_pages = stacks::guard_pages(smp::cpus().len());
    paging::unmap_guard_pages(guard_pages.as_slice());
    let boot = boot_info::init(&start_info, &guard_pages);
    paging::map_high_ram(boot.memory_map.iter().filter(|r| r.is_ram()).map(|r| (r.start, r.end())));
    paging::map_direct_map();

    unsafe extern "Rust" {
        /// Defined by the kernel with [`crate::entry!`].
        fn __netdump_qemu_runtime_kernel_main(boot: &'static boot_info::BootInfo) -> !;
    }
    // SAFETY: `entry!` defines this symbol with exactly this signature; the boot info is
    // complete and never written again.
    unsafe { __netdump_qemu_runtime_kernel_main(boot) }
}
