//! CPU exceptions (vectors 0–31): entry stubs, the saved-register frame, and dispatch to
//! the kernel's handler.
//!
//! Stable Rust has no `extern "x86-interrupt"`, so each vector enters through a stub in
//! `global_asm!` that pushes a zero error code if the CPU pushed none, then the vector,
//! and jumps to common code that saves CR2 and every general register and calls
//! [`exception_dispatch`] with a pointer to the resulting [`ExceptionFrame`]. The common
//! code carries DWARF CFI describing the frame, so gdb can backtrace from a handler
//! through the exception into the code that faulted.
//!
//! Every vector runs on an IST stack: #DF, #PF and #GP each on their own, the others on a
//! shared one. So a kernel stack overflow (a #PF on the guard page) still reaches the
//! handler, and the red zone of the interrupted code (the precompiled `core` uses one) is
//! not overwritten by the exception frame.

use core::arch::global_asm;
use core::fmt;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use netdump_core::arch::x86_64::{Exception, exception_name};
use x86_64::VirtAddr;
use x86_64::structures::idt::{Entry, HandlerFunc, InterruptDescriptorTable};

use crate::{BootCell, console, exit, gdt, println};

/// The registers at the time of a CPU exception, as the entry code saved them.
///
/// `rip`, `cs`, `rflags`, `rsp` and `ss` are the interrupted context's (pushed by the CPU;
/// `rsp` is the stack pointer before the exception). `error_code` is 0 for vectors that
/// push none. `cr2` is read on entry to every vector; it is the faulting address for #PF.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExceptionFrame {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub cr2: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// The entry code below hard-codes this layout.
const _: () = {
    assert!(core::mem::offset_of!(ExceptionFrame, cr2) == 15 * 8);
    assert!(core::mem::offset_of!(ExceptionFrame, vector) == 16 * 8);
    assert!(core::mem::offset_of!(ExceptionFrame, rip) == 18 * 8);
    assert!(core::mem::size_of::<ExceptionFrame>() == 23 * 8);
};

impl ExceptionFrame {
    /// The exception's mnemonic and name, e.g. `"#PF page fault"` (netdump-core's
    /// [`exception_name`]), or `"unknown vector"` above 31.
    pub fn vector_name(&self) -> &'static str {
        match u8::try_from(self.vector) {
            Ok(vector) if vector < 32 => exception_name(vector),
            _ => "unknown vector",
        }
    }
}

/// The vectors for which the CPU pushes an error code ([`Exception::pushes_error_code`]),
/// bit `n` for vector `n`: the entry stubs push a zero for the others.
const ERROR_CODE_VECTORS: u32 = {
    let mut mask = 0;
    let mut i = 0;
    while i < Exception::ALL.len() {
        let exception = Exception::ALL[i];
        if exception.pushes_error_code() {
            mask |= 1 << exception.vector();
        }
        i += 1;
    }
    mask
};

impl fmt::Display for ExceptionFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "CPU exception {} ({}), error code {:#x}", self.vector, self.vector_name(), self.error_code)?;
        writeln!(f, "  rip {:#018x}  rsp {:#018x}  rflags {:#010x}", self.rip, self.rsp, self.rflags)?;
        writeln!(f, "  cs  {:#06x}  ss {:#06x}  cr2 {:#018x}", self.cs, self.ss, self.cr2)?;
        let registers = [
            ("rax", self.rax),
            ("rbx", self.rbx),
            ("rcx", self.rcx),
            ("rdx", self.rdx),
            ("rsi", self.rsi),
            ("rdi", self.rdi),
            ("rbp", self.rbp),
            ("r8 ", self.r8),
            ("r9 ", self.r9),
            ("r10", self.r10),
            ("r11", self.r11),
            ("r12", self.r12),
            ("r13", self.r13),
            ("r14", self.r14),
            ("r15", self.r15),
        ];
        for row in registers.chunks(3) {
            f.write_str(" ")?;
            for (name, value) in row {
                write!(f, " {name} {value:#018x}")?;
            }
            f.write_str("\n")?;
        }
        Ok(())
    }
}

global_asm!(
    r#"
    .pushsection .text.exception_entry, "ax", @progbits

    /* The operand error_code_vectors is ERROR_CODE_VECTORS: bit n is set if the CPU
       pushes an error code for vector n. */
    .macro exception_stub vector
    .balign 16
exception_stub_\vector:
    .if (({error_code_vectors} >> \vector) & 1) == 0
    pushq $0
    .endif
    pushq $\vector
    jmp exception_common
    .endm

    .irp vector, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
    exception_stub \vector
    .endr

    .macro push_register register
    pushq \register
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset \register, 0
    .endm

    /* On entry: vector, error code, then the CPU's rip, cs, rflags, rsp, ss. The CFA is
       the address above ss; the interrupted rip and rsp are saved in the frame. */
    .balign 16
    .type exception_common, @function
exception_common:
    .cfi_startproc simple
    .cfi_signal_frame
    .cfi_def_cfa %rsp, 56
    .cfi_offset %rip, -40
    .cfi_offset %rsp, -16
    subq $8, %rsp                   /* cr2, filled in below */
    .cfi_adjust_cfa_offset 8
    push_register %r15
    push_register %r14
    push_register %r13
    push_register %r12
    push_register %r11
    push_register %r10
    push_register %r9
    push_register %r8
    push_register %rbp
    push_register %rdi
    push_register %rsi
    push_register %rdx
    push_register %rcx
    push_register %rbx
    push_register %rax
    movq %cr2, %rax
    movq %rax, 120(%rsp)
    cld                             /* the interrupted code may have set DF */
    movq %rsp, %rdi                 /* &ExceptionFrame */
    /* The CPU aligned the stack to 16 bytes before its 5 pushes; 18 more make 23. */
    subq $8, %rsp
    .cfi_adjust_cfa_offset 8
    call {dispatch}
    ud2
    .cfi_endproc
    .size exception_common, . - exception_common
    .popsection

    .pushsection .rodata.exception_stubs, "a", @progbits
    .balign 8
    .globl netdump_qemu_runtime_exception_stubs
    .hidden netdump_qemu_runtime_exception_stubs
netdump_qemu_runtime_exception_stubs:
    .irp vector, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
    .quad exception_stub_\vector
    .endr
    .popsection
"#,
    dispatch = sym exception_dispatch,
    error_code_vectors = const ERROR_CODE_VECTORS,
    options(att_syntax)
);

unsafe extern "C" {
    /// The entry stub of each vector, by vector number (defined above).
    static netdump_qemu_runtime_exception_stubs: [u64; 32];
}

static IDT: BootCell<InterruptDescriptorTable> = BootCell::new(InterruptDescriptorTable::new());

// The IDT is the hardware table: 256 entries of 16 bytes.
const _: () = assert!(core::mem::size_of::<InterruptDescriptorTable>() == 256 * 16);

/// Points vectors 0–31 at their stubs, on their IST stacks, and loads the IDT. Called once
/// at boot, after the GDT (the entries take the current code segment).
pub(crate) fn init() {
    // SAFETY: the stub table is immutable data defined in the assembly above.
    let stubs = unsafe { &netdump_qemu_runtime_exception_stubs };
    // `InterruptDescriptorTable` only exposes the architecturally defined vectors as
    // fields; the reserved ones (15, 22–27, 31) get stubs too, through the raw entries.
    let entries = IDT.get().cast::<Entry<HandlerFunc>>();
    for (vector, &stub) in stubs.iter().enumerate() {
        let exception = u8::try_from(vector).ok().and_then(Exception::from_vector);
        let stack = match exception {
            Some(Exception::DoubleFault) => gdt::IST_DOUBLE_FAULT,
            Some(Exception::GeneralProtection) => gdt::IST_GENERAL_PROTECTION,
            Some(Exception::PageFault) => gdt::IST_PAGE_FAULT,
            _ => gdt::IST_OTHER_EXCEPTION,
        };
        // SAFETY: the IDT is `repr(C)`, 256 entries of the same 16-byte `Entry` layout
        // (checked above), so `entries.add(vector)` for vector < 32 is entry `vector`;
        // boot is single-threaded and the IDT is not loaded yet. The stub is a valid
        // handler for `vector`: it handles the CPU's error code (or its absence) and never
        // returns. `stack` is an IST slot the TSS fills with a dedicated stack.
        unsafe {
            (*entries.add(vector)).set_handler_addr(VirtAddr::new(stub)).set_stack_index(stack);
        }
    }
    // SAFETY: the IDT is complete and is never written again.
    unsafe { &*IDT.get() }.load();
}

/// Makes page faults run on the interrupted code's stack instead of their own IST stack,
/// as Linux does. A kernel stack overflow then cannot even push the #PF frame: the CPU
/// raises a double fault, which still runs on its own IST stack — the path a kernel
/// without a #PF IST stack depends on, and the one this switch lets a test take.
///
/// Every exception here is fatal, so the interrupted code's red zone, which the #PF frame
/// may overwrite, is never returned to.
pub fn deliver_page_faults_on_the_interrupted_stack() {
    // SAFETY: the runtime runs one CPU with interrupts off, and this thread is not inside
    // an exception, so nothing reads the IDT entry while it is rewritten; the entry stays
    // a valid gate for the same stub (`set_handler_addr` only clears the IST index).
    // This is the one write to the IDT after boot (see `BootCell`).
    unsafe {
        let stub = netdump_qemu_runtime_exception_stubs[usize::from(Exception::PageFault.vector())];
        (*IDT.get()).page_fault.set_handler_addr(VirtAddr::new(stub));
    }
}

/// The kernel's handler, a `fn(&ExceptionFrame) -> !`, or null for the default.
static HANDLER: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
/// Exceptions being handled; more than one means the handler itself faulted.
static DEPTH: AtomicU32 = AtomicU32::new(0);

/// Registers the function every CPU exception (vectors 0–31) is handed to.
///
/// It runs on an exception stack (128 KiB, guarded) with interrupts off, and must not
/// return. If it faults itself, the runtime prints the second frame and exits QEMU with
/// [`EXIT_FAILURE`](crate::EXIT_FAILURE) instead of calling it again. Without one, the
/// runtime prints the frame and exits with `EXIT_FAILURE`.
pub fn set_exception_handler(handler: fn(&ExceptionFrame) -> !) {
    HANDLER.store(handler as *mut (), Ordering::Release);
}

/// Called by the entry code with the saved frame.
extern "C" fn exception_dispatch(frame: &ExceptionFrame) -> ! {
    console::enter_crash_mode();
    match DEPTH.fetch_add(1, Ordering::AcqRel) {
        0 => {
            let handler = HANDLER.load(Ordering::Acquire);
            if handler.is_null() {
                report_and_exit(frame);
            }
            // SAFETY: the only non-null value ever stored in HANDLER is a
            // `fn(&ExceptionFrame) -> !` cast to a pointer in `set_exception_handler`;
            // function and data pointers have the same representation on x86_64.
            let handler = unsafe { core::mem::transmute::<*mut (), fn(&ExceptionFrame) -> !>(handler) };
            handler(frame)
        }
        1 => {
            println!("\nexception inside the exception handler:");
            report_and_exit(frame)
        }
        // Printing the nested exception faulted too: leave without another word.
        _ => exit::qemu_exit(exit::EXIT_FAILURE),
    }
}

fn report_and_exit(frame: &ExceptionFrame) -> ! {
    println!("\n{frame}");
    exit::qemu_exit(exit::EXIT_FAILURE)
}
