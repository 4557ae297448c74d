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
//! Every vector runs on an IST stack of the CPU it happens on (the IDT is shared, each
//! CPU's TSS points the slots at its own stacks): #DF, #PF and #GP each on their own, the
//! others on a shared one. So a kernel stack overflow (a #PF on the guard page) still
//! reaches the handler, and the red zone of the interrupted code (the precompiled `core`
//! uses one) is not overwritten by the exception frame.
//!
//! Vector 2 (NMI) is the exception: it has an entry of its own (`nmi_entry` below) on
//! its own IST stack that saves the same [`ExceptionFrame`] plus the SSE state, calls
//! the handler registered with [`set_nmi_handler`], and returns to the interrupted code
//! with `iretq`, every register as it was. Without a handler it goes where every other
//! vector goes.

use core::arch::global_asm;
use core::fmt;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use netdump_core::arch::x86_64::{Exception, exception_name};
use x86_64::VirtAddr;
use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;
use x86_64::structures::idt::{Entry, HandlerFunc, InterruptDescriptorTable};

use crate::smp::{self, MAX_CPUS};
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

    .macro pop_register register
    popq \register
    .cfi_adjust_cfa_offset -8
    .cfi_restore \register
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

    /* NMI: returnable. On entry the CPU's rip, cs, rflags, rsp, ss (NMIs are blocked until
       the iretq). Builds the same frame as exception_common (error code 0, vector 2, cr2,
       the general registers), saves the x87/SSE state below it (the handler is Rust code,
       which uses SSE), calls nmi_dispatch, and restores all of it. */
    .balign 16
    .type nmi_entry, @function
nmi_entry:
    .cfi_startproc simple
    .cfi_signal_frame
    .cfi_def_cfa %rsp, 40
    .cfi_offset %rip, -40
    .cfi_offset %rsp, -16
    pushq $0                        /* error code */
    .cfi_adjust_cfa_offset 8
    pushq $2                        /* vector */
    .cfi_adjust_cfa_offset 8
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
    cld                             /* iretq restores the interrupted DF */
    movq %rsp, %rdi                 /* &ExceptionFrame */
    /* The CPU aligned the stack to 16 bytes before its 5 pushes; 18 more leave it at 8
       mod 16, and 520 bytes of FXSAVE area (512, 16-byte aligned) make it 0 again. */
    subq ${fxsave_area}, %rsp
    .cfi_adjust_cfa_offset {fxsave_area}
    fxsave64 (%rsp)
    call {nmi_dispatch}
    fxrstor64 (%rsp)
    addq ${fxsave_area}, %rsp
    .cfi_adjust_cfa_offset -{fxsave_area}
    /* CR2 as on entry, whatever the handler did. */
    movq 120(%rsp), %rax
    movq %cr2, %rcx
    cmpq %rax, %rcx
    je 1f
    movq %rax, %cr2
1:
    pop_register %rax
    pop_register %rbx
    pop_register %rcx
    pop_register %rdx
    pop_register %rsi
    pop_register %rdi
    pop_register %rbp
    pop_register %r8
    pop_register %r9
    pop_register %r10
    pop_register %r11
    pop_register %r12
    pop_register %r13
    pop_register %r14
    pop_register %r15
    addq $24, %rsp                  /* cr2, vector, error code */
    .cfi_adjust_cfa_offset -24
    iretq
    .cfi_endproc
    .size nmi_entry, . - nmi_entry
    .popsection

    .pushsection .rodata.exception_stubs, "a", @progbits
    .balign 8
    .globl netdump_qemu_runtime_exception_stubs
    .hidden netdump_qemu_runtime_exception_stubs
netdump_qemu_runtime_exception_stubs:
    .irp vector, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
    .quad exception_stub_\vector
    .endr
    .globl netdump_qemu_runtime_nmi_entry
    .hidden netdump_qemu_runtime_nmi_entry
netdump_qemu_runtime_nmi_entry:
    .quad nmi_entry
    .popsection
"#,
    dispatch = sym exception_dispatch,
    nmi_dispatch = sym nmi_dispatch,
    error_code_vectors = const ERROR_CODE_VECTORS,
    fxsave_area = const FXSAVE_AREA,
    options(att_syntax)
);

/// Stack bytes the NMI entry reserves for FXSAVE: the 512-byte area plus 8 that re-align
/// the stack to 16 bytes (see the entry code).
const FXSAVE_AREA: usize = 520;

unsafe extern "C" {
    /// The entry stub of each vector, by vector number (defined above).
    static netdump_qemu_runtime_exception_stubs: [u64; 32];
    /// The address of the NMI entry (defined above).
    static netdump_qemu_runtime_nmi_entry: u64;
}

static IDT: BootCell<InterruptDescriptorTable> = BootCell::new(InterruptDescriptorTable::new());

// The IDT is the hardware table: 256 entries of 16 bytes.
const _: () = assert!(core::mem::size_of::<InterruptDescriptorTable>() == 256 * 16);

/// Points vectors 0–31 at their stubs (vector 2 at the NMI entry), on their IST stacks,
/// and loads the IDT. Called once at boot, after the GDT (the entries take the current
/// code segment).
pub(crate) fn init() {
    // SAFETY: the stub table is immutable data defined in the assembly above.
    let stubs = unsafe { &netdump_qemu_runtime_exception_stubs };
    // `InterruptDescriptorTable` only exposes the architecturally defined vectors as
    // fields; the reserved ones (15, 22–27, 31) get stubs too, through the raw entries.
    let entries = IDT.get().cast::<Entry<HandlerFunc>>();
    for (vector, &stub) in stubs.iter().enumerate() {
        let exception = u8::try_from(vector).ok().and_then(Exception::from_vector);
        let (stub, stack) = match exception {
            Some(Exception::DoubleFault) => (stub, gdt::IST_DOUBLE_FAULT),
            Some(Exception::GeneralProtection) => (stub, gdt::IST_GENERAL_PROTECTION),
            Some(Exception::PageFault) => (stub, gdt::IST_PAGE_FAULT),
            // SAFETY: immutable data defined in the assembly above.
            Some(Exception::NonMaskableInterrupt) => (unsafe { netdump_qemu_runtime_nmi_entry }, gdt::IST_NMI),
            _ => (stub, gdt::IST_OTHER_EXCEPTION),
        };
        // SAFETY: the IDT is `repr(C)`, 256 entries of the same 16-byte `Entry` layout
        // (checked above), so `entries.add(vector)` for vector < 32 is entry `vector`;
        // this runs at boot on the boot CPU alone and the IDT is not loaded yet. The stub
        // is a valid handler for `vector`: it handles the CPU's error code (or its
        // absence) and either never returns or (NMI) returns with `iretq` having restored
        // every register. `stack` is an IST slot every CPU's TSS fills with a stack of
        // that CPU's own.
        unsafe {
            (*entries.add(vector)).set_handler_addr(VirtAddr::new(stub)).set_stack_index(stack);
        }
    }
    load();
}

/// Loads the (shared) IDT on the running CPU: the boot CPU at boot, each AP as it starts.
pub(crate) fn load() {
    let pointer = DescriptorTablePointer {
        limit: (core::mem::size_of::<InterruptDescriptorTable>() - 1) as u16,
        base: VirtAddr::from_ptr(IDT.get()),
    };
    // SAFETY: `IDT` is a static holding a complete table (built by `init` before anything
    // calls this), valid for good; only its address is taken here, no reference.
    unsafe { lidt(&pointer) };
}

/// Makes page faults run on the interrupted code's stack instead of their own IST stack,
/// as Linux does. A kernel stack overflow then cannot even push the #PF frame: the CPU
/// raises a double fault, which still runs on its own IST stack — the path a kernel
/// without a #PF IST stack depends on, and the one this switch lets a test take.
///
/// Every exception here is fatal, so the interrupted code's red zone, which the #PF frame
/// may overwrite, is never returned to.
///
/// The IDT is shared: this applies to every CPU.
pub fn deliver_page_faults_on_the_interrupted_stack() {
    let entry = IDT.get().cast::<Entry<HandlerFunc>>().wrapping_add(usize::from(Exception::PageFault.vector()));
    // SAFETY: `entry` is the #PF entry of the IDT (256 16-byte entries, see `init`), a
    // valid `Entry` since boot; reading a copy creates no reference to the static.
    let mut updated = unsafe { entry.read() };
    // SAFETY: the stub table is immutable data defined in the assembly above; the stub
    // is the #PF stub the entry already points at, and the current code segment (which
    // `set_handler_addr` records) is the runtime's kernel code segment on every CPU.
    unsafe {
        let stub = netdump_qemu_runtime_exception_stubs[usize::from(Exception::PageFault.vector())];
        updated.set_handler_addr(VirtAddr::new(stub));
    }
    // Only the IST index (bits 0-2 of the options word, in the entry's first 8 bytes)
    // differs from what the IDT holds: store those 8 bytes at once, so that another CPU's
    // hardware reading the entry meanwhile (a page fault there) sees the old or the new
    // gate for the same stub, never a mix.
    // SAFETY: `updated` is a 16-byte `repr(C)` entry, so its first 8 bytes are readable.
    let first_half = unsafe { (&raw const updated).cast::<u64>().read_unaligned() };
    // SAFETY: the IDT is 16-byte aligned (`InterruptDescriptorTable` is `align(16)`), so
    // the entry's first 8 bytes are an aligned `u64`, valid for good (a static). The only
    // other software access to the IDT after boot is `load`, which takes its address and
    // never reads it; the hardware reads it. This is the one write to the IDT after boot
    // (see `BootCell`).
    unsafe { AtomicU64::from_ptr(entry.cast::<u64>()) }.store(first_half, Ordering::Release);
}

/// The kernel's handler, a `fn(&ExceptionFrame) -> !`, or null for the default.
static HANDLER: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
/// The kernel's NMI handler, a `fn(&ExceptionFrame)`, or null for the default.
static NMI_HANDLER: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
/// Exceptions being handled, per CPU index; more than one means the handler itself
/// faulted on that CPU. (An exception on one CPU says nothing about another's.)
static DEPTH: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// Registers the function every CPU exception (vectors 0–31) is handed to.
///
/// It runs on an exception stack (128 KiB, guarded) with interrupts off, and must not
/// return. If it faults itself, the runtime prints the second frame and exits QEMU with
/// [`EXIT_FAILURE`](crate::EXIT_FAILURE) instead of calling it again. Without one, the
/// runtime prints the frame and exits with `EXIT_FAILURE`.
///
/// Every CPU's exceptions go to it; the nested-fault detection counts per CPU, so an
/// exception on one CPU while another is in the handler reaches the handler too.
/// Vector 2 (NMI) reaches it only while no NMI handler is registered
/// ([`crate::smp::set_nmi_handler`]).
pub fn set_exception_handler(handler: fn(&ExceptionFrame) -> !) {
    HANDLER.store(handler as *mut (), Ordering::Release);
}

/// See [`crate::smp::set_nmi_handler`].
pub(crate) fn set_nmi_handler(handler: fn(&ExceptionFrame)) {
    NMI_HANDLER.store(handler as *mut (), Ordering::Release);
}

/// Called by the NMI entry with the saved frame; returning resumes the interrupted code.
extern "C" fn nmi_dispatch(frame: &ExceptionFrame) {
    let handler = NMI_HANDLER.load(Ordering::Acquire);
    if handler.is_null() {
        // As before NMIs had their own entry: a fatal exception like any other.
        exception_dispatch(frame);
    }
    // SAFETY: the only non-null value ever stored in NMI_HANDLER is a
    // `fn(&ExceptionFrame)` cast to a pointer in `set_nmi_handler`; function and data
    // pointers have the same representation on x86_64.
    let handler = unsafe { core::mem::transmute::<*mut (), fn(&ExceptionFrame)>(handler) };
    handler(frame);
}

/// Called by the entry code with the saved frame.
extern "C" fn exception_dispatch(frame: &ExceptionFrame) -> ! {
    console::enter_crash_mode();
    // `cpu_index` is below MAX_CPUS; `min` keeps the indexing obviously in bounds.
    let depth = &DEPTH[smp::cpu_index().min(MAX_CPUS - 1)];
    match depth.fetch_add(1, Ordering::AcqRel) {
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
