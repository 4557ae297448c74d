//! Fatal CPU exceptions on purpose, and the handler that dumps them.
//!
//! `scenario=exception fault=divide-error|invalid-opcode|general-protection|page-fault|
//! stack-overflow|double-fault [fault_address=ADDR]`. Each fault function loads values
//! derived from the seed ([`planted`]) into the callee-saved registers rbx and r12–r15,
//! then executes the faulting instruction, so the harness can check that the vmcore's
//! NT_PRSTATUS holds the registers *at the faulting instruction*. The two stack
//! scenarios recurse until the boot stack runs into its guard page: with the runtime's
//! #PF IST stack that is a page fault; with page faults delivered on the interrupted
//! stack (as Linux does) the CPU cannot push the #PF frame and raises a double fault,
//! which runs on its own IST stack.
//!
//! [`on_exception`] is the runtime's exception handler: it turns the saved frame into
//! netdump-core's [`ExceptionRegisters`], adds what the kernel knows (a stack overflow)
//! and dumps.

use core::arch::{asm, global_asm};

use netdump_core::arch::x86_64::{ExceptionCrash, ExceptionRegisters, vector};
use netdump_qemu_runtime::{BootInfo, Cmdline, ExceptionFrame, println};

const PAGE: u64 = 4096;

/// The fault a run raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names, reason = "the architecture's names: #PF page fault, #DF double fault")]
pub enum Fault {
    DivideError,
    InvalidOpcode,
    GeneralProtection,
    /// A write to `fault_address` (unmapped).
    PageFault,
    /// Unbounded recursion into the boot stack's guard page: a #PF on its IST stack.
    StackOverflow,
    /// The same with #PF delivered on the overflowing stack: a #DF.
    DoubleFault,
}

/// Written to when no `fault_address` is given: canonical, far above any RAM, unmapped.
pub const DEFAULT_FAULT_ADDRESS: u64 = 0x0000_4000_0000_0ff8;

impl Fault {
    pub fn from_args(args: &Cmdline<'_>) -> Result<Self, &'static str> {
        Ok(match args.get("fault").ok_or("scenario=exception needs fault=")? {
            "divide-error" => Fault::DivideError,
            "invalid-opcode" => Fault::InvalidOpcode,
            "general-protection" => Fault::GeneralProtection,
            "page-fault" => Fault::PageFault,
            "stack-overflow" => Fault::StackOverflow,
            "double-fault" => Fault::DoubleFault,
            _ => return Err("unknown fault"),
        })
    }
}

/// The values planted in rbx, r12, r13, r14 and r15 before the fault.
pub fn planted(seed: u64) -> [u64; 5] {
    [0xb0b0, 0x1212, 0x1313, 0x1414, 0x1515].map(|tag: u64| tag << 48 | (seed & 0xffff_ffff_ffff))
}

/// The kernel's boot information, for the guard pages and the readable stacks.
static mut BOOT: Option<&'static BootInfo> = None;

/// Registers the exception handler. Called once at boot, before anything can fault.
pub fn init(boot: &'static BootInfo) {
    // SAFETY: single CPU; written once here, before the handler can run.
    unsafe { BOOT = Some(boot) };
    netdump_qemu_runtime::set_exception_handler(on_exception);
}

fn boot() -> Option<&'static BootInfo> {
    // SAFETY: written once in `init`, read-only afterwards.
    unsafe { *(&raw const BOOT) }
}

/// The guard page holding `addr`, if any.
fn guard_page_of(addr: u64) -> Option<u64> {
    let page = addr & !(PAGE - 1);
    boot()?.unmapped_pages.iter().copied().find(|&g| g == page)
}

/// Whether the 16 bytes at `addr` can be read during the crash: inside the kernel image
/// (code, data and every stack) and not in a guard page. For the frame-pointer walk.
pub fn readable(addr: u64) -> bool {
    let Some(boot) = boot() else { return false };
    let image = boot.kernel_image;
    let Some(last) = addr.checked_add(15) else { return false };
    image.contains(addr) && image.contains(last) && guard_page_of(addr).is_none() && guard_page_of(last).is_none()
}

/// Raises `fault`; never returns.
pub fn raise(fault: Fault, seed: u64, fault_address: u64) -> ! {
    let values = planted(seed);
    println!("raising {fault:?}: rbx r12 r13 r14 r15 = {values:#x?}");
    match fault {
        Fault::DivideError => netdump_fault_divide_error(&values),
        Fault::InvalidOpcode => netdump_fault_invalid_opcode(&values),
        Fault::GeneralProtection => netdump_fault_general_protection(&values),
        Fault::PageFault => netdump_fault_page_fault(&values, fault_address),
        Fault::StackOverflow => netdump_fault_stack_overflow(&values),
        Fault::DoubleFault => {
            netdump_qemu_runtime::deliver_page_faults_on_the_interrupted_stack();
            netdump_fault_stack_overflow(&values)
        }
    }
}

/// Loads the planted values (`values`: `&[u64; 5]`, in rdi) into rbx and r12–r15, then
/// runs the faulting instructions, in one asm block so that nothing the compiler emits
/// runs between the two. The block never returns, so clobbering the callee-saved
/// registers is harmless; `ud2` after an instruction that must fault turns a missing fault
/// into a wrong vector, which the harness reports.
macro_rules! plant_and_fault {
    ($values:expr, [$($fault:literal),+] $(, $($operand:tt)+)?) => {
        asm!(
            "mov rbx, [rdi]", "mov r12, [rdi + 8]", "mov r13, [rdi + 16]", "mov r14, [rdi + 24]", "mov r15, [rdi + 32]",
            $($fault,)+
            "ud2",
            in("rdi") $values, $($($operand)+,)? options(noreturn)
        )
    };
}

#[inline(never)]
fn netdump_fault_divide_error(values: &[u64; 5]) -> ! {
    // SAFETY: reads `values` (40 bytes) and divides by zero.
    unsafe { plant_and_fault!(values, ["xor eax, eax", "xor edx, edx", "xor ecx, ecx", "div rcx"]) }
}

#[inline(never)]
fn netdump_fault_invalid_opcode(values: &[u64; 5]) -> ! {
    // SAFETY: reads `values` and executes an undefined instruction.
    unsafe { plant_and_fault!(values, ["ud2"]) }
}

#[inline(never)]
fn netdump_fault_general_protection(values: &[u64; 5]) -> ! {
    // SAFETY: reads `values` and reads through a non-canonical address, which raises
    // #GP(0) before any memory is touched.
    unsafe { plant_and_fault!(values, ["movabs rax, 0x8000000000000000", "mov rax, [rax]"]) }
}

#[inline(never)]
fn netdump_fault_page_fault(values: &[u64; 5], address: u64) -> ! {
    // SAFETY: reads `values` and writes to `address`, which the harness chooses unmapped
    // (canonical, far above RAM): a not-present #PF, nothing written.
    unsafe { plant_and_fault!(values, ["mov qword ptr [rsi], rdi"], in("rsi") address) }
}

#[inline(never)]
fn netdump_fault_stack_overflow(values: &[u64; 5]) -> ! {
    // SAFETY: reads `values` and recurses until the stack's guard page faults;
    // `netdump_fault_recurse` touches nothing but its own frames.
    unsafe { plant_and_fault!(values, ["call {recurse}"], recurse = sym netdump_fault_recurse) }
}

unsafe extern "C" {
    /// Calls itself with 1 KiB frames until the stack overflows (defined below).
    fn netdump_fault_recurse() -> !;
}

// A frame-pointer function with DWARF CFI, so gdb (and the frame-pointer walk of the
// crash signature) unwinds through the recursion. Each level stores into the bottom of
// its new frame, so the store that first reaches the guard page faults.
global_asm!(
    ".pushsection .text.netdump_fault_recurse, \"ax\", @progbits",
    ".globl netdump_fault_recurse",
    ".type netdump_fault_recurse, @function",
    "netdump_fault_recurse:",
    ".cfi_startproc",
    "push rbp",
    ".cfi_def_cfa_offset 16",
    ".cfi_offset rbp, -16",
    "mov rbp, rsp",
    ".cfi_def_cfa_register rbp",
    "sub rsp, 1008",
    "mov qword ptr [rsp], rbp",
    "call netdump_fault_recurse",
    "ud2",
    ".cfi_endproc",
    ".size netdump_fault_recurse, . - netdump_fault_recurse",
    ".popsection",
);

/// The interrupted context the runtime's entry code saved, as netdump-core takes it.
pub fn exception_registers(frame: &ExceptionFrame) -> ExceptionRegisters {
    ExceptionRegisters {
        rax: frame.rax,
        rbx: frame.rbx,
        rcx: frame.rcx,
        rdx: frame.rdx,
        rsi: frame.rsi,
        rdi: frame.rdi,
        rbp: frame.rbp,
        r8: frame.r8,
        r9: frame.r9,
        r10: frame.r10,
        r11: frame.r11,
        r12: frame.r12,
        r13: frame.r13,
        r14: frame.r14,
        r15: frame.r15,
        rip: frame.rip,
        cs: frame.cs,
        rflags: frame.rflags,
        rsp: frame.rsp,
        ss: frame.ss,
        vector: frame.vector as u8,
        error_code: frame.error_code,
        cr2: frame.cr2,
    }
}

/// The runtime's exception handler: the faulting context into the dump.
fn on_exception(frame: &ExceptionFrame) -> ! {
    let regs = exception_registers(frame);
    let cpu = netdump_qemu_runtime::smp::cpu_index() as u16;
    // SAFETY: ring 0; `readable` admits only mapped, non-guard pages of the image.
    let mut crash = unsafe { ExceptionCrash::new(&regs, cpu, readable) };
    // A fault on a guard page, or a double fault with the stack pointer at one, is a
    // stack overflow.
    let overflow = match regs.vector {
        vector::PAGE_FAULT => guard_page_of(regs.cr2),
        vector::DOUBLE_FAULT => guard_page_of(regs.rsp).or_else(|| guard_page_of(regs.rsp.wrapping_sub(1))),
        _ => None,
    };
    if let Some(guard) = overflow {
        crash.add_note(format_args!("kernel stack overflow into the guard page at {guard:#x}"));
    }
    println!("{frame}");
    println!("exception: {}", crash.message());
    crate::dump_and_exit(&crash.info(), crash.registers(), |_| {})
}
