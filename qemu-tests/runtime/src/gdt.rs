//! The 64-bit GDT and the TSS, whose interrupt stack table gives the exception handlers
//! their own stacks (see [`crate::stacks`]).

use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, FS, GS, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;

use crate::{BootCell, stacks};

/// Interrupt stack table slots (0-based, as `set_stack_index` takes them).
pub(crate) const IST_DOUBLE_FAULT: u16 = 0;
pub(crate) const IST_PAGE_FAULT: u16 = 1;
pub(crate) const IST_GENERAL_PROTECTION: u16 = 2;
pub(crate) const IST_OTHER_EXCEPTION: u16 = 3;

static TSS: BootCell<TaskStateSegment> = BootCell::new(TaskStateSegment::new());
static GDT: BootCell<GlobalDescriptorTable> = BootCell::new(GlobalDescriptorTable::new());

/// Builds and loads the GDT (kernel code, kernel data, TSS) and the TSS, and reloads every
/// segment register. Called once at boot, before the IDT is built.
pub(crate) fn init() {
    // SAFETY: boot is single-threaded and this runs once; nothing else references the TSS
    // yet, and it is never written again after this block.
    let tss: &'static TaskStateSegment = unsafe {
        let tss = &mut *TSS.get();
        let stacks = [
            (IST_DOUBLE_FAULT, stacks::DOUBLE_FAULT_STACK.top()),
            (IST_PAGE_FAULT, stacks::PAGE_FAULT_STACK.top()),
            (IST_GENERAL_PROTECTION, stacks::GENERAL_PROTECTION_STACK.top()),
            (IST_OTHER_EXCEPTION, stacks::OTHER_EXCEPTION_STACK.top()),
        ];
        for (slot, top) in stacks {
            tss.interrupt_stack_table[usize::from(slot)] = VirtAddr::new(top);
        }
        &*tss
    };

    // SAFETY: as above for the GDT, which is not written again after this block.
    let (gdt, code, data, tss_selector) = unsafe {
        let gdt = &mut *GDT.get();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss_selector = gdt.append(Descriptor::tss_segment(tss));
        (&*gdt, code, data, tss_selector)
    };
    gdt.load();

    // SAFETY: the selectors index the GDT just loaded: a 64-bit code segment, a data
    // segment and an available 64-bit TSS; FS and GS stay null (the kernel uses no TLS).
    unsafe {
        CS::set_reg(code);
        SS::set_reg(data);
        DS::set_reg(data);
        ES::set_reg(data);
        FS::set_reg(SegmentSelector(0));
        GS::set_reg(SegmentSelector(0));
        load_tss(tss_selector);
    }
}
