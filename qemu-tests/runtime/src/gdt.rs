//! The 64-bit GDT and the TSS of each CPU, whose interrupt stack table gives the
//! exception and NMI handlers that CPU's own stacks (see [`crate::stacks`]).
//!
//! Every CPU has its own GDT (the TSS descriptor's busy bit is per CPU) and TSS; the
//! selectors are the same on all of them. The boot CPU builds and loads its own at boot
//! ([`init`]); an AP's are built by the boot CPU before it starts the AP ([`prepare`]) and
//! loaded by the AP itself ([`load`]).

use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, FS, GS, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;

use crate::smp::MAX_CPUS;
use crate::{BootCell, stacks};

/// Interrupt stack table slots (0-based, as `set_stack_index` takes them).
pub(crate) const IST_DOUBLE_FAULT: u16 = 0;
pub(crate) const IST_PAGE_FAULT: u16 = 1;
pub(crate) const IST_GENERAL_PROTECTION: u16 = 2;
pub(crate) const IST_OTHER_EXCEPTION: u16 = 3;
pub(crate) const IST_NMI: u16 = 4;
/// IST slots in use, each with a stack of its own on every CPU.
pub(crate) const IST_SLOTS: usize = 5;

/// One CPU's descriptor tables.
struct CpuTables {
    tss: TaskStateSegment,
    gdt: GlobalDescriptorTable,
    code: SegmentSelector,
    data: SegmentSelector,
    tss_selector: SegmentSelector,
}

impl CpuTables {
    const fn new() -> Self {
        CpuTables {
            tss: TaskStateSegment::new(),
            gdt: GlobalDescriptorTable::new(),
            code: SegmentSelector(0),
            data: SegmentSelector(0),
            tss_selector: SegmentSelector(0),
        }
    }
}

/// By CPU index. Entry `i` is written only by [`prepare`]`(i)`: for the boot CPU at boot,
/// for an AP by the boot CPU while that AP is not running (before its INIT-SIPI-SIPI);
/// afterwards only read, by the CPU that loads it (and written by that CPU's hardware: the
/// TSS descriptor's busy bit).
static TABLES: BootCell<[CpuTables; MAX_CPUS]> = BootCell::new([const { CpuTables::new() }; MAX_CPUS]);

/// Builds and loads the boot CPU's GDT (kernel code, kernel data, TSS) and TSS, and
/// reloads every segment register. Called once at boot, before the IDT is built.
pub(crate) fn init() {
    prepare(0);
    load(0);
}

/// Builds CPU `index`'s TSS (its IST slots pointing at its own stacks) and GDT.
///
/// The caller guarantees that CPU `index` is not running kernel code (it is the boot CPU
/// at boot, or an AP not started yet or held in INIT) and that no other CPU calls this
/// for the same index at the same time: the boot CPU does it, one AP at a time.
pub(crate) fn prepare(index: usize) {
    // SAFETY: per the caller's guarantee nothing else reads or writes entry `index`
    // (no CPU has it loaded; the other CPUs only touch their own entries), so this is the
    // only reference to it.
    let tables = unsafe { &mut (*TABLES.get())[index] };
    tables.tss = TaskStateSegment::new();
    let slots = [IST_DOUBLE_FAULT, IST_PAGE_FAULT, IST_GENERAL_PROTECTION, IST_OTHER_EXCEPTION, IST_NMI];
    const _: () = assert!(IST_SLOTS == 5);
    for slot in slots {
        tables.tss.interrupt_stack_table[usize::from(slot)] = VirtAddr::new(stacks::ist_stack_top(index, slot));
    }
    tables.gdt = GlobalDescriptorTable::new();
    tables.code = tables.gdt.append(Descriptor::kernel_code_segment());
    tables.data = tables.gdt.append(Descriptor::kernel_data_segment());
    // SAFETY: `TABLES` is a static, so the TSS stays valid at this address for good; the
    // descriptor only records the address, which the CPU uses once `load` runs.
    let tss = unsafe { Descriptor::tss_segment_unchecked(&raw const tables.tss) };
    tables.tss_selector = tables.gdt.append(tss);
}

/// Loads CPU `index`'s GDT and TSS ([`prepare`]d before) on the running CPU, which must be
/// CPU `index`, and reloads every segment register.
pub(crate) fn load(index: usize) {
    // SAFETY: entry `index` was prepared and is no longer written by software (see
    // `TABLES`); the running CPU is the only one that loads it.
    let tables: &'static CpuTables = unsafe { &(*TABLES.get())[index] };
    tables.gdt.load();
    // SAFETY: the selectors index the GDT just loaded: a 64-bit code segment, a data
    // segment and an available 64-bit TSS; FS and GS stay null (the kernel uses no TLS).
    unsafe {
        CS::set_reg(tables.code);
        SS::set_reg(tables.data);
        DS::set_reg(tables.data);
        ES::set_reg(tables.data);
        FS::set_reg(SegmentSelector(0));
        GS::set_reg(SegmentSelector(0));
        load_tss(tables.tss_selector);
    }
}
