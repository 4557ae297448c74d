//! Fatal CPU exceptions into the dump: the registers an entry stub saved become the
//! crashing CPU's [`RegisterRecord`] (the faulting instruction's context, not the
//! handler's), and the vector, error code and CR2 become the CRASH announcement's reason.
//!
//! The entry stubs themselves belong to the kernel (they depend on its IDT, stacks and
//! calling conventions): each saves every general register and calls a handler with
//! them, which fills an [`ExceptionRegisters`] and builds an [`ExceptionCrash`]. See
//! docs/PORTING.md, "Wiring your IDT to the crash path".

use core::fmt::Write;

use super::regs::read_segment_selectors;
use super::{Exception, PageFaultErrorCode, StackTrace, exception_name, read_control_registers};
use crate::client::CrashInfo;
use crate::proto::{CrashKind, MAX_TEXT, REGISTERS_VALID, RegisterRecord};
use crate::text::TextBuf;

/// The interrupted context of a CPU exception, as the kernel's entry stub saved it: the
/// general registers at the faulting instruction, the CPU-pushed `rip`, `cs`, `rflags`,
/// `rsp` and `ss`, the vector, the error code (0 for vectors without one) and CR2 as read
/// on entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExceptionRegisters {
    /// `rax` at the faulting instruction, as the entry stub saved it.
    pub rax: u64,
    /// `rbx` at the faulting instruction, as the entry stub saved it.
    pub rbx: u64,
    /// `rcx` at the faulting instruction, as the entry stub saved it.
    pub rcx: u64,
    /// `rdx` at the faulting instruction, as the entry stub saved it.
    pub rdx: u64,
    /// `rsi` at the faulting instruction, as the entry stub saved it.
    pub rsi: u64,
    /// `rdi` at the faulting instruction, as the entry stub saved it.
    pub rdi: u64,
    /// `rbp` at the faulting instruction: where the stack walk starts.
    pub rbp: u64,
    /// `r8` at the faulting instruction, as the entry stub saved it.
    pub r8: u64,
    /// `r9` at the faulting instruction, as the entry stub saved it.
    pub r9: u64,
    /// `r10` at the faulting instruction, as the entry stub saved it.
    pub r10: u64,
    /// `r11` at the faulting instruction, as the entry stub saved it.
    pub r11: u64,
    /// `r12` at the faulting instruction, as the entry stub saved it.
    pub r12: u64,
    /// `r13` at the faulting instruction, as the entry stub saved it.
    pub r13: u64,
    /// `r14` at the faulting instruction, as the entry stub saved it.
    pub r14: u64,
    /// `r15` at the faulting instruction, as the entry stub saved it.
    pub r15: u64,
    /// `rip` the CPU pushed: the faulting instruction (for a fault) or the next one (for a
    /// trap).
    pub rip: u64,
    /// `cs` the CPU pushed, zero-extended.
    pub cs: u64,
    /// `rflags` the CPU pushed.
    pub rflags: u64,
    /// `rsp` the CPU pushed: the interrupted context's stack pointer.
    pub rsp: u64,
    /// `ss` the CPU pushed, zero-extended.
    pub ss: u64,
    /// The exception vector, 0..=31 ([`Exception`]).
    pub vector: u8,
    /// The error code the CPU pushed, or 0 for a vector that pushes none
    /// ([`Exception::pushes_error_code`]).
    pub error_code: u64,
    /// CR2 as read on entry: the faulting linear address of a page fault (vector 14).
    pub cr2: u64,
}

impl ExceptionRegisters {
    /// The record of the faulting context. The data segment selectors, `fs_base`,
    /// `gs_base`, CR0, CR3 and CR4 are read now: exception entry does not change them.
    /// CR2 is the value saved on entry (a later fault would have overwritten the live one).
    ///
    /// # Safety
    /// Ring 0 (control registers and MSRs are read).
    pub unsafe fn to_record(&self, cpu: u64) -> RegisterRecord {
        let mut r = self.saved_record(cpu);
        read_segment_selectors(&mut r);
        // SAFETY: the caller guarantees ring 0.
        unsafe { read_control_registers(&mut r) };
        r.cr2 = self.cr2;
        r
    }

    /// The record with what the stub saved: general registers, `rip`, `rflags`, `cs`,
    /// `ss`, CR2; the rest zero.
    fn saved_record(&self, cpu: u64) -> RegisterRecord {
        RegisterRecord {
            rax: self.rax,
            rbx: self.rbx,
            rcx: self.rcx,
            rdx: self.rdx,
            rsi: self.rsi,
            rdi: self.rdi,
            rbp: self.rbp,
            rsp: self.rsp,
            r8: self.r8,
            r9: self.r9,
            r10: self.r10,
            r11: self.r11,
            r12: self.r12,
            r13: self.r13,
            r14: self.r14,
            r15: self.r15,
            rip: self.rip,
            rflags: self.rflags,
            cs: self.cs,
            ss: self.ss,
            cr2: self.cr2,
            cpu,
            flags: REGISTERS_VALID,
            ..RegisterRecord::default()
        }
    }

    /// The crash message: the exception, its error code (spelled out for a page fault)
    /// and `rip`. Nothing that varies between two occurrences of the same bug (the
    /// faulting address, the stack pointer): the crash signature hashes the message, and
    /// the announcement carries CR2 and the registers anyway.
    pub fn describe(&self, out: &mut impl Write) -> core::fmt::Result {
        write!(out, "{}", exception_name(self.vector))?;
        match Exception::from_vector(self.vector) {
            Some(Exception::PageFault) => write!(out, " ({})", PageFaultErrorCode::from_bits_retain(self.error_code))?,
            Some(e) if e.pushes_error_code() => write!(out, ", error code {:#x}", self.error_code)?,
            _ => {}
        }
        write!(out, " at rip {:#x}", self.rip)
    }

    /// The address a page fault reports (CR2); 0 for every other vector, as the CRASH
    /// announcement's `fault_address` requires.
    pub fn fault_address(&self) -> u64 {
        if self.vector == Exception::PageFault.vector() { self.cr2 } else { 0 }
    }
}

/// Everything the dump needs about a fatal exception: the faulting CPU's registers, the
/// reason, a message and the stack's code addresses. Build it first thing in the
/// exception handler, then seize netdump and hand [`info`](Self::info) and
/// [`registers`](Self::registers) to `Netdump::dump`.
pub struct ExceptionCrash {
    registers: RegisterRecord,
    vector: u8,
    error_code: u64,
    fault_address: u64,
    crashing_cpu: u16,
    message: TextBuf<MAX_TEXT>,
    frames: StackTrace,
}

impl ExceptionCrash {
    /// Records the faulting context of `regs` on `cpu`. The message names the exception,
    /// its error code (for a page fault, the kind of access) and `rip`. The stack
    /// trace starts at the faulting `rip` and follows the frame pointers from its `rbp`.
    ///
    /// # Safety
    /// Ring 0, and `readable` must keep the contract of
    /// [`StackTrace::walk_frame_pointers`].
    pub unsafe fn new(regs: &ExceptionRegisters, cpu: u16, readable: impl Fn(u64) -> bool) -> Self {
        // SAFETY: the caller guarantees ring 0.
        let registers = unsafe { regs.to_record(u64::from(cpu)) };
        let mut message = TextBuf::new();
        let _ = regs.describe(&mut message);
        let mut frames = StackTrace::new();
        frames.push(regs.rip);
        // SAFETY: the caller keeps `readable`'s contract.
        unsafe { frames.walk_frame_pointers(regs.rbp, readable) };
        ExceptionCrash {
            registers,
            vector: regs.vector,
            error_code: regs.error_code,
            fault_address: regs.fault_address(),
            crashing_cpu: cpu,
            message,
            frames,
        }
    }

    /// Appends `; <note>` to the message (e.g. what the kernel knows about the faulting
    /// address: "kernel stack overflow"). The message is cut at 256 bytes.
    pub fn add_note(&mut self, note: core::fmt::Arguments<'_>) {
        let _ = write!(self.message, "; {note}");
    }

    /// The CRASH announcement's reason, message and stack.
    pub fn info(&self) -> CrashInfo<'_> {
        CrashInfo {
            kind: CrashKind::Exception,
            vector: self.vector,
            error_code: self.error_code,
            fault_address: self.fault_address,
            crashing_cpu: self.crashing_cpu,
            message: self.message.as_bytes(),
            frames: self.frames.as_slice(),
        }
    }

    /// The faulting CPU's registers, for the REGISTERS section (NT_PRSTATUS).
    pub fn registers(&self) -> &RegisterRecord {
        &self.registers
    }

    /// The message: the exception's name, error code, `rip` and any [`add_note`](Self::add_note).
    pub fn message(&self) -> &str {
        self.message.as_str()
    }

    /// The crashing stack's code addresses, innermost first: the faulting `rip`, then the
    /// return addresses of the frame-pointer walk.
    pub fn frames(&self) -> &[u64] {
        self.frames.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::vector;

    #[test]
    fn messages_name_the_exception_and_where_it_happened() {
        let mut s = String::new();
        let pf = ExceptionRegisters {
            vector: 14,
            error_code: 2,
            cr2: 0x4000_0000_0ff8,
            rip: 0x10_2345,
            rsp: 0x20_0000,
            ..Default::default()
        };
        pf.describe(&mut s).unwrap();
        assert_eq!(s, "#PF page fault (write, page not present, kernel mode) at rip 0x102345");
        s.clear();
        let gp = ExceptionRegisters { vector: 13, error_code: 0x18, rip: 0x10_0000, rsp: 0x8000, ..Default::default() };
        gp.describe(&mut s).unwrap();
        assert_eq!(s, "#GP general protection fault, error code 0x18 at rip 0x100000");
        s.clear();
        let ud = ExceptionRegisters { vector: 6, rip: 1, rsp: 2, ..Default::default() };
        ud.describe(&mut s).unwrap();
        assert_eq!(s, "#UD invalid opcode at rip 0x1");
        // The vectors the three old tables disagreed on, and a reserved one.
        for (vector, error_code, expected) in [
            (9, 0, "coprocessor segment overrun at rip 0x1"),
            (15, 0, "reserved exception vector at rip 0x1"),
            (28, 0, "#HV hypervisor injection exception at rip 0x1"),
            (29, 0x81, "#VC VMM communication exception, error code 0x81 at rip 0x1"),
            (30, 1, "#SX security exception, error code 0x1 at rip 0x1"),
        ] {
            s.clear();
            ExceptionRegisters { vector, error_code, rip: 1, ..Default::default() }.describe(&mut s).unwrap();
            assert_eq!(s, expected);
        }
    }

    #[test]
    fn every_saved_register_lands_in_its_own_record_field() {
        // Distinct values, so a swapped pair of fields shows.
        let regs = ExceptionRegisters {
            rax: 1,
            rbx: 2,
            rcx: 3,
            rdx: 4,
            rsi: 5,
            rdi: 6,
            rbp: 7,
            r8: 8,
            r9: 9,
            r10: 10,
            r11: 11,
            r12: 12,
            r13: 13,
            r14: 14,
            r15: 15,
            rip: 16,
            cs: 17,
            rflags: 18,
            rsp: 19,
            ss: 20,
            vector: 14,
            error_code: 21,
            cr2: 22,
        };
        let r = regs.saved_record(3);
        let got = [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15,
            r.rip, r.cs, r.rflags, r.rsp, r.ss,
        ];
        assert_eq!(got, core::array::from_fn::<u64, 20, _>(|i| i as u64 + 1));
        assert_eq!((r.cr2, r.cpu, r.is_valid()), (22, 3, true));
    }

    #[test]
    fn only_a_page_fault_has_a_fault_address() {
        let pf = ExceptionRegisters { vector: vector::PAGE_FAULT, cr2: 0xdead_b000, ..Default::default() };
        let gp = ExceptionRegisters { vector: vector::GENERAL_PROTECTION, cr2: 0xdead_b000, ..Default::default() };
        assert_eq!(pf.fault_address(), 0xdead_b000);
        assert_eq!(gp.fault_address(), 0);
    }

    #[test]
    fn names_cover_the_fatal_exceptions() {
        assert_eq!(exception_name(vector::DIVIDE_ERROR), "#DE divide error");
        assert_eq!(exception_name(vector::INVALID_OPCODE), "#UD invalid opcode");
        assert_eq!(exception_name(vector::DOUBLE_FAULT), "#DF double fault");
        assert_eq!(exception_name(15), "reserved exception vector");
    }
}
