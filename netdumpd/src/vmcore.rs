//! The vmcore: an ELF64 `ET_CORE` file laid out like Linux kdump's `/proc/vmcore`, so
//! `gdb kernel.elf vmcore` and other core-file tools open it. `e_machine` and the
//! `NT_PRSTATUS` layout follow the machine the CRASH announcement names (x86_64, AArch64).
//!
//! ```text
//! ELF header | program headers: PT_NOTE, PT_LOAD × ranges | notes | pad to 4 KiB | range 0 | range 1 | …
//! ```
//!
//! The notes are one `NT_PRSTATUS` ("CORE") per CPU, the crashing CPU first so that gdb
//! selects its thread, then two "NETDUMP" notes: [`NT_NETDUMP_MESSAGE`] (the panic
//! message) and [`NT_NETDUMP_CRASH`] (reason, vector, error code, fault address).
//!
//! A filtered dump (feature `FILTER`) has a second PT_NOTE, right after the first
//! program header, holding one [`NT_NETDUMP_EXCLUDED`] note: the runs of pages the
//! client's filter left out. Their number is known only at the end, so the note is
//! appended after the last memory segment when the dump ends, and its program header
//! stays `PT_NULL` (ignored by every reader) until then.
//! The layout is fixed when the crash is announced: the file is created at its full size
//! (sparse), each memory page is written at its place as it arrives, pages that are never
//! sent (all-zero pages) stay holes, and a CPU's descriptor is rewritten when its
//! register record arrives.

use netdump_core::arch::x86_64::Exception;
use netdump_core::memory::PageClass;
use netdump_core::proto::{Aarch64Record, CpuState, CrashKind, Machine, MemoryRange, RegisterRecord};

/// `NT_PRSTATUS`: the registers of one thread (here: one CPU).
pub const NT_PRSTATUS: u32 = 1;
/// Owner name of netdump's own notes.
pub const NETDUMP_NOTE_NAME: &str = "NETDUMP";
/// "NETDUMP" note type: the panic message, UTF-8, not NUL-terminated.
pub const NT_NETDUMP_MESSAGE: u32 = 0x4e44_0001;
/// "NETDUMP" note type: the crash reason, 32 bytes little-endian: `kind` u32 (1 panic,
/// 2 CPU exception, 3 requested), `vector` u32, `crashing_cpu` u32, reserved u32,
/// `error_code` u64, `fault_address` u64.
pub const NT_NETDUMP_CRASH: u32 = 0x4e44_0002;

/// "NETDUMP" note type: the page runs a filtered dump left out, little-endian:
/// `version` u32 (1), `page_size` u32, `run_count` u64, then per run (ascending)
/// `start_pfn` u64, `pages` u64, `class` u32 (its makedumpfile `-d` bit: 2 page cache,
/// 4 page cache with private data, 8 user, 16 free), reserved u32. A page in a run reads
/// as zero in the vmcore (a hole) but was not zero: it was not sent.
pub const NT_NETDUMP_EXCLUDED: u32 = 0x4e44_0003;
/// Bytes of the [`NT_NETDUMP_EXCLUDED`] descriptor's header and of each of its runs.
pub const EXCLUDED_HEADER_LEN: usize = 16;
pub const EXCLUDED_RUN_LEN: usize = 24;

/// Size of the x86_64 `struct elf_prstatus`.
pub const PRSTATUS_LEN: usize = 336;
/// Size of the AArch64 `struct elf_prstatus`: the same header, 34 registers
/// (`struct user_pt_regs`), `pr_fpvalid` and padding.
pub const AARCH64_PRSTATUS_LEN: usize = 392;
/// Offset of `pr_reg` in `struct elf_prstatus`.
const PR_REG_OFFSET: usize = 112;
/// Offset of `pr_pid`.
const PR_PID_OFFSET: usize = 32;
/// Offset of `pr_cursig`.
const PR_CURSIG_OFFSET: usize = 12;
/// Offset of `si_signo` in the embedded `elf_siginfo`.
const SI_SIGNO_OFFSET: usize = 0;

/// File offsets of the memory image are aligned to this (and so is every page).
pub const SEGMENT_ALIGN: u64 = 4096;

const ELF_HEADER_LEN: usize = 64;
const PHDR_LEN: usize = 56;
const NOTE_HEADER_LEN: usize = 12;
const ET_CORE: u16 = 4;
const PT_NULL: u32 = 0;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;

const SIGQUIT: u16 = 3;
const SIGILL: u16 = 4;
const SIGTRAP: u16 = 5;
const SIGABRT: u16 = 6;
const SIGBUS: u16 = 7;
const SIGFPE: u16 = 8;
const SIGSEGV: u16 = 11;

/// What the crash announcement says about the crash, for the notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashNote {
    pub kind: CrashKind,
    pub vector: u8,
    pub crashing_cpu: u16,
    pub error_code: u64,
    pub fault_address: u64,
    pub message: String,
    /// The client's architecture: `e_machine` and the `NT_PRSTATUS` layout.
    pub machine: Machine,
}

/// One CPU's register record, in its machine's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuRecord {
    X86_64(RegisterRecord),
    Aarch64(Aarch64Record),
}

impl CpuRecord {
    /// Parses a record of `machine` from exactly its length of bytes.
    pub fn parse(machine: Machine, bytes: &[u8]) -> Option<Self> {
        match machine {
            Machine::X86_64 => RegisterRecord::parse(bytes).ok().map(CpuRecord::X86_64),
            Machine::Aarch64 => Aarch64Record::parse(bytes).ok().map(CpuRecord::Aarch64),
        }
    }

    fn flags(&self) -> u64 {
        match self {
            CpuRecord::X86_64(r) => r.flags,
            CpuRecord::Aarch64(r) => r.flags,
        }
    }

    /// The CPU index the record names.
    pub fn cpu(&self) -> u64 {
        match self {
            CpuRecord::X86_64(r) => r.cpu,
            CpuRecord::Aarch64(r) => r.cpu,
        }
    }

    /// Whether the record holds captured values.
    pub fn is_valid(&self) -> bool {
        self.flags() & netdump_core::proto::REGISTERS_VALID != 0
    }

    /// The hardware CPU id (x86_64: the local APIC id; AArch64: the MPIDR affinity).
    pub fn apic_id(&self) -> Option<u32> {
        let f = self.flags();
        (f & netdump_core::proto::REGISTERS_APIC_ID != 0).then_some((f >> 32) as u32)
    }

    /// The raw CPU state code.
    pub fn state_code(&self) -> u8 {
        (self.flags() >> netdump_core::proto::CPU_STATE_SHIFT) as u8
    }

    /// The CPU's state at the dump; `None` for an unknown code.
    pub fn state(&self) -> Option<CpuState> {
        CpuState::from_code(self.state_code())
    }

    /// The instruction pointer (`rip`, `pc`).
    pub fn pc(&self) -> u64 {
        match self {
            CpuRecord::X86_64(r) => r.rip,
            CpuRecord::Aarch64(r) => r.pc,
        }
    }

    /// The registers with their names, in wire order.
    pub fn named(&self) -> Vec<(String, u64)> {
        match self {
            CpuRecord::X86_64(r) => {
                const NAMES: [&str; 30] = [
                    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
                    "r14", "r15", "rip", "rflags", "cs", "ss", "ds", "es", "fs", "gs", "fs_base", "gs_base", "cr0",
                    "cr2", "cr3", "cr4",
                ];
                NAMES.iter().zip(r.to_words()).map(|(n, v)| (n.to_string(), v)).collect()
            }
            CpuRecord::Aarch64(r) => {
                let mut v: Vec<(String, u64)> = r.x.iter().enumerate().map(|(i, x)| (format!("x{i}"), *x)).collect();
                v.extend([
                    ("sp".to_string(), r.sp),
                    ("pc".to_string(), r.pc),
                    ("pstate".to_string(), r.pstate),
                    ("esr".to_string(), r.esr),
                    ("far".to_string(), r.far),
                ]);
                v
            }
        }
    }
}

impl CrashNote {
    /// The signal a user-space core of the same fault would carry; gdb prints it as
    /// "Program terminated with signal …".
    pub fn signal(&self) -> u16 {
        match self.kind {
            // The vector is an x86_64 exception vector; other machines' exceptions are
            // reported as a fault.
            CrashKind::Exception if self.machine != Machine::X86_64 => SIGSEGV,
            CrashKind::Panic => SIGABRT,
            CrashKind::Requested => SIGQUIT,
            CrashKind::Exception => match Exception::from_vector(self.vector) {
                Some(
                    Exception::DivideError
                    | Exception::DeviceNotAvailable
                    | Exception::X87FloatingPoint
                    | Exception::SimdFloatingPoint,
                ) => SIGFPE,
                Some(Exception::Debug | Exception::Breakpoint) => SIGTRAP,
                Some(Exception::InvalidOpcode) => SIGILL,
                Some(Exception::AlignmentCheck | Exception::MachineCheck) => SIGBUS,
                _ => SIGSEGV,
            },
        }
    }
}

/// Where each range of memory lives in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    pub range: MemoryRange,
    pub file_offset: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    /// No CPU, or the crashing CPU is not among them.
    BadCpuCount,
    /// The file would be larger than a file offset can express.
    TooLarge,
}

impl std::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayoutError::BadCpuCount => f.write_str("no CPU, or crashing CPU out of range"),
            LayoutError::TooLarge => f.write_str("memory map too large for one file"),
        }
    }
}

impl std::error::Error for LayoutError {}

/// The shape of one vmcore, computed from the crash announcement.
#[derive(Debug, Clone)]
pub struct VmcoreLayout {
    cpu_count: u16,
    crash: CrashNote,
    segments: Vec<LoadSegment>,
    notes_offset: u64,
    notes_len: u64,
    file_len: u64,
    /// A program header is reserved for the exclusion note (a filtered dump).
    exclusion_note: bool,
}

fn align_up(v: u64, align: u64) -> Option<u64> {
    v.checked_add(align - 1).map(|v| v & !(align - 1))
}

fn note_len(name: &str, desc_len: usize) -> usize {
    NOTE_HEADER_LEN + (name.len() + 1).next_multiple_of(4) + desc_len.next_multiple_of(4)
}

impl VmcoreLayout {
    /// Lays out a vmcore for `cpu_count` CPUs and the memory `ranges` (none when the
    /// memory image is skipped). Ranges must be sorted and non-overlapping, as the
    /// protocol requires of a CRASH.
    pub fn new(cpu_count: u16, crash: CrashNote, ranges: &[MemoryRange]) -> Result<Self, LayoutError> {
        Self::with_exclusions(cpu_count, crash, ranges, false)
    }

    /// [`new`](Self::new), with a program header reserved for the exclusion note when
    /// `exclusion_note` (the client was granted `FILTER`).
    pub fn with_exclusions(
        cpu_count: u16,
        crash: CrashNote,
        ranges: &[MemoryRange],
        exclusion_note: bool,
    ) -> Result<Self, LayoutError> {
        if cpu_count == 0 || crash.crashing_cpu >= cpu_count {
            return Err(LayoutError::BadCpuCount);
        }
        let headers = ELF_HEADER_LEN + PHDR_LEN * (1 + usize::from(exclusion_note) + ranges.len());
        let notes_len = usize::from(cpu_count) * note_len("CORE", prstatus_len(crash.machine))
            + note_len(NETDUMP_NOTE_NAME, crash.message.len())
            + note_len(NETDUMP_NOTE_NAME, 32);
        let mut offset = align_up((headers + notes_len) as u64, SEGMENT_ALIGN).ok_or(LayoutError::TooLarge)?;
        let mut segments = Vec::with_capacity(ranges.len());
        for range in ranges {
            segments.push(LoadSegment { range: *range, file_offset: offset });
            offset = offset
                .checked_add(range.length)
                .and_then(|end| align_up(end, SEGMENT_ALIGN))
                .filter(|end| *end <= i64::MAX as u64)
                .ok_or(LayoutError::TooLarge)?;
        }
        let file_len = match ranges.last() {
            Some(_) => offset,
            None => (headers + notes_len) as u64,
        };
        Ok(VmcoreLayout {
            cpu_count,
            crash,
            segments,
            notes_offset: headers as u64,
            notes_len: notes_len as u64,
            file_len,
            exclusion_note,
        })
    }

    /// Where the exclusion note's program header is (when reserved) and what to write
    /// there and at the end of the file once the dump ends: `(phdr offset, phdr bytes,
    /// note offset, note bytes)`. `runs` are ascending: first pfn, pages, class.
    pub fn exclusion_note(
        &self,
        page_size: u32,
        runs: impl ExactSizeIterator<Item = (u64, u64, PageClass)>,
    ) -> Option<(u64, Vec<u8>, u64, Vec<u8>)> {
        if !self.exclusion_note {
            return None;
        }
        let mut desc = Vec::with_capacity(EXCLUDED_HEADER_LEN + runs.len() * EXCLUDED_RUN_LEN);
        desc.extend_from_slice(&1u32.to_le_bytes());
        desc.extend_from_slice(&page_size.to_le_bytes());
        desc.extend_from_slice(&(runs.len() as u64).to_le_bytes());
        for (start_pfn, pages, class) in runs {
            desc.extend_from_slice(&start_pfn.to_le_bytes());
            desc.extend_from_slice(&pages.to_le_bytes());
            desc.extend_from_slice(&class.dump_level_bit().to_le_bytes());
            desc.extend_from_slice(&0u32.to_le_bytes());
        }
        let mut note = Vec::with_capacity(note_len(NETDUMP_NOTE_NAME, desc.len()));
        push_note(&mut note, NETDUMP_NOTE_NAME, NT_NETDUMP_EXCLUDED, &desc);
        let at = self.file_len;
        let phdr = program_header(PT_NOTE, 0, at, 0, 0, note.len() as u64, 4);
        Some(((ELF_HEADER_LEN + PHDR_LEN) as u64, phdr.to_vec(), at, note))
    }

    /// The file's full length (most of it sparse until memory arrives).
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    pub fn segments(&self) -> &[LoadSegment] {
        &self.segments
    }

    /// Bytes of memory the file describes.
    pub fn memory_len(&self) -> u64 {
        self.segments.iter().map(|s| s.range.length).sum()
    }

    /// The file offset of `len` bytes of memory at physical address `phys`, if they lie
    /// wholly inside one range.
    pub fn memory_offset(&self, phys: u64, len: u64) -> Option<u64> {
        let i = self.segments.partition_point(|s| s.range.phys_end() <= phys);
        let s = self.segments.get(i)?;
        s.range.contains(phys, len).then(|| s.file_offset + (phys - s.range.phys_start))
    }

    /// The position of a CPU's note among the PRSTATUS notes: the crashing CPU first.
    fn prstatus_slot(&self, cpu: u16) -> u16 {
        let crashing = self.crash.crashing_cpu;
        match cpu.cmp(&crashing) {
            std::cmp::Ordering::Equal => 0,
            std::cmp::Ordering::Less => cpu + 1,
            std::cmp::Ordering::Greater => cpu,
        }
    }

    /// The file offset of CPU `cpu`'s `elf_prstatus` descriptor.
    pub fn prstatus_offset(&self, cpu: u16) -> Option<u64> {
        if cpu >= self.cpu_count {
            return None;
        }
        let slot = u64::from(self.prstatus_slot(cpu));
        let header = (NOTE_HEADER_LEN + "CORE\0".len().next_multiple_of(4)) as u64;
        Some(self.notes_offset + slot * note_len("CORE", self.prstatus_len()) as u64 + header)
    }

    /// Bytes of one `elf_prstatus` descriptor of this vmcore's machine.
    pub fn prstatus_len(&self) -> usize {
        prstatus_len(self.crash.machine)
    }

    /// CPU `cpu`'s `elf_prstatus` descriptor for a record of any machine (see
    /// [`prstatus`](Self::prstatus)); a record of another machine than the vmcore's
    /// leaves the registers zero.
    pub fn prstatus_record(&self, cpu: u16, regs: Option<&CpuRecord>) -> Vec<u8> {
        match (self.crash.machine, regs) {
            (Machine::X86_64, Some(CpuRecord::X86_64(r))) => self.prstatus(cpu, Some(r)).to_vec(),
            (Machine::X86_64, _) => self.prstatus(cpu, None).to_vec(),
            (Machine::Aarch64, r) => {
                let mut d = vec![0u8; AARCH64_PRSTATUS_LEN];
                self.prstatus_header(cpu, &mut d);
                if let Some(CpuRecord::Aarch64(r)) = r.filter(|r| r.is_valid()) {
                    // `struct user_pt_regs`: x0–x30, sp, pc, pstate.
                    for (i, v) in r.user_pt_regs().iter().enumerate() {
                        let at = PR_REG_OFFSET + i * 8;
                        d[at..at + 8].copy_from_slice(&v.to_le_bytes());
                    }
                }
                d
            }
        }
    }

    /// The machine-independent head of `elf_prstatus`: signal and pid.
    fn prstatus_header(&self, cpu: u16, d: &mut [u8]) {
        if cpu == self.crash.crashing_cpu {
            let sig = self.crash.signal();
            d[SI_SIGNO_OFFSET..SI_SIGNO_OFFSET + 4].copy_from_slice(&u32::from(sig).to_le_bytes());
            d[PR_CURSIG_OFFSET..PR_CURSIG_OFFSET + 2].copy_from_slice(&sig.to_le_bytes());
        }
        d[PR_PID_OFFSET..PR_PID_OFFSET + 4].copy_from_slice(&(u32::from(cpu) + 1).to_le_bytes());
    }

    /// CPU `cpu`'s x86_64 `elf_prstatus` descriptor: pid `cpu + 1` (gdb shows one thread
    /// per CPU), the crash signal on the crashing CPU, and the registers when the record
    /// holds captured values (zeros otherwise).
    pub fn prstatus(&self, cpu: u16, regs: Option<&RegisterRecord>) -> [u8; PRSTATUS_LEN] {
        let mut d = [0u8; PRSTATUS_LEN];
        if cpu == self.crash.crashing_cpu {
            let sig = self.crash.signal();
            d[SI_SIGNO_OFFSET..SI_SIGNO_OFFSET + 4].copy_from_slice(&u32::from(sig).to_le_bytes());
            d[PR_CURSIG_OFFSET..PR_CURSIG_OFFSET + 2].copy_from_slice(&sig.to_le_bytes());
        }
        d[PR_PID_OFFSET..PR_PID_OFFSET + 4].copy_from_slice(&(u32::from(cpu) + 1).to_le_bytes());
        if let Some(r) = regs.filter(|r| r.is_valid()) {
            // x86_64 `struct user_regs_struct` order.
            let pr_reg = [
                r.r15,
                r.r14,
                r.r13,
                r.r12,
                r.rbp,
                r.rbx,
                r.r11,
                r.r10,
                r.r9,
                r.r8,
                r.rax,
                r.rcx,
                r.rdx,
                r.rsi,
                r.rdi,
                u64::MAX,
                r.rip,
                r.cs,
                r.rflags,
                r.rsp,
                r.ss,
                r.fs_base,
                r.gs_base,
                r.ds,
                r.es,
                r.fs,
                r.gs,
            ];
            for (i, v) in pr_reg.iter().enumerate() {
                let at = PR_REG_OFFSET + i * 8;
                d[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
        }
        d
    }

    /// The ELF header, program headers and notes (registers still zero): everything
    /// before the first memory segment.
    pub fn headers(&self) -> Vec<u8> {
        let phnum = 1 + usize::from(self.exclusion_note) + self.segments.len();
        let mut out = Vec::with_capacity(self.notes_offset as usize + self.notes_len as usize);

        // ELF header.
        out.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]); // 64-bit, LE, v1, SysV
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&ET_CORE.to_le_bytes());
        out.extend_from_slice(&self.crash.machine.elf_machine().to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes()); // e_version
        out.extend_from_slice(&0u64.to_le_bytes()); // e_entry
        out.extend_from_slice(&(ELF_HEADER_LEN as u64).to_le_bytes()); // e_phoff
        out.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        out.extend_from_slice(&(ELF_HEADER_LEN as u16).to_le_bytes());
        out.extend_from_slice(&(PHDR_LEN as u16).to_le_bytes());
        out.extend_from_slice(&(phnum as u16).to_le_bytes());
        out.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx

        // Program headers.
        out.extend_from_slice(&program_header(PT_NOTE, 0, self.notes_offset, 0, 0, self.notes_len, 4));
        if self.exclusion_note {
            // Rewritten as a PT_NOTE when the dump ends (`exclusion_note`).
            out.extend_from_slice(&program_header(PT_NULL, 0, 0, 0, 0, 0, 0));
        }
        for s in &self.segments {
            let r = s.range;
            let load = program_header(
                PT_LOAD,
                PF_R | PF_W | PF_X,
                s.file_offset,
                r.virt_start,
                r.phys_start,
                r.length,
                SEGMENT_ALIGN,
            );
            out.extend_from_slice(&load);
        }

        // Notes.
        let mut order: Vec<u16> = (0..self.cpu_count).collect();
        order.sort_by_key(|cpu| self.prstatus_slot(*cpu));
        for cpu in order {
            push_note(&mut out, "CORE", NT_PRSTATUS, &self.prstatus_record(cpu, None));
        }
        push_note(&mut out, NETDUMP_NOTE_NAME, NT_NETDUMP_MESSAGE, self.crash.message.as_bytes());
        let mut crash = Vec::with_capacity(32);
        crash.extend_from_slice(&u32::from(self.crash.kind as u8).to_le_bytes());
        crash.extend_from_slice(&u32::from(self.crash.vector).to_le_bytes());
        crash.extend_from_slice(&u32::from(self.crash.crashing_cpu).to_le_bytes());
        crash.extend_from_slice(&0u32.to_le_bytes());
        crash.extend_from_slice(&self.crash.error_code.to_le_bytes());
        crash.extend_from_slice(&self.crash.fault_address.to_le_bytes());
        push_note(&mut out, NETDUMP_NOTE_NAME, NT_NETDUMP_CRASH, &crash);
        debug_assert_eq!(out.len() as u64, self.notes_offset + self.notes_len);
        out
    }
}

/// One ELF64 program header (file and memory size both `size`).
fn program_header(
    p_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    size: u64,
    align: u64,
) -> [u8; PHDR_LEN] {
    let mut out = [0u8; PHDR_LEN];
    out[..4].copy_from_slice(&p_type.to_le_bytes());
    out[4..8].copy_from_slice(&flags.to_le_bytes());
    for (i, v) in [offset, vaddr, paddr, size, size, align].iter().enumerate() {
        out[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// Bytes of `elf_prstatus` on `machine`.
fn prstatus_len(machine: Machine) -> usize {
    match machine {
        Machine::X86_64 => PRSTATUS_LEN,
        Machine::Aarch64 => AARCH64_PRSTATUS_LEN,
    }
}

fn push_note(out: &mut Vec<u8>, name: &str, note_type: u32, desc: &[u8]) {
    out.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&note_type.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(desc);
    out.resize(out.len().next_multiple_of(4), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::core_reader::{
        Core, assert_pr_reg_in_abi_order, distinct_registers, pr_pid, pr_reg, pr_reg_named, u32_at, u64_at,
    };
    use netdump_core::proto::CpuState;

    fn crash(crashing_cpu: u16) -> CrashNote {
        CrashNote {
            kind: CrashKind::Exception,
            vector: 14,
            crashing_cpu,
            error_code: 2,
            fault_address: 0xdead_0000,
            message: "page fault in a test".into(),
            machine: Machine::X86_64,
        }
    }

    fn ranges() -> Vec<MemoryRange> {
        vec![
            MemoryRange { phys_start: 0, length: 0x9f000, virt_start: 0xffff_8000_0000_0000 },
            MemoryRange { phys_start: 0x100000, length: 0x300000, virt_start: 0xffff_8000_0010_0000 },
        ]
    }

    fn sample_regs(cpu: u64) -> RegisterRecord {
        RegisterRecord {
            rax: 0x1000 + cpu,
            rbx: 0x2000 + cpu,
            rcx: 0x3000 + cpu,
            rdx: 0x4000 + cpu,
            rsi: 0x5000 + cpu,
            rdi: 0x6000 + cpu,
            rbp: 0x7000 + cpu,
            rsp: 0xffff_8000_0020_0000 - 0x100 * cpu,
            r8: 8,
            r9: 9,
            r10: 10,
            r11: 11,
            r12: 12,
            r13: 13,
            r14: 14,
            r15: 15,
            rip: 0xffff_ffff_8010_0000 + cpu,
            rflags: 0x246,
            cs: 0x08,
            ss: 0x10,
            ds: 0x18,
            es: 0x20,
            fs: 0x28,
            gs: 0x30,
            fs_base: 0xf5,
            gs_base: 0x65,
            cr0: 0x8005_0033,
            cr2: 0xdead_0000,
            cr3: 0x1000,
            cr4: 0x20,
            cpu,
            flags: 1,
        }
    }

    #[test]
    fn headers_describe_one_note_and_one_load_per_range() {
        let layout = VmcoreLayout::new(2, crash(1), &ranges()).unwrap();
        let bytes = layout.headers();
        let core = Core::new(&bytes);
        let ph = core.phdrs();
        assert_eq!(ph.len(), 3);
        assert_eq!(ph[0].p_type, 4);
        for (p, r) in ph[1..].iter().zip(ranges()) {
            assert_eq!(p.p_type, 1);
            assert_eq!(p.flags, 7);
            assert_eq!((p.paddr, p.vaddr, p.filesz, p.memsz), (r.phys_start, r.virt_start, r.length, r.length));
            assert_eq!(p.offset % 4096, 0);
        }
        assert!(ph[1].offset >= bytes.len() as u64);
        assert_eq!(ph[2].offset, ph[1].offset + 0x9f000);
        assert_eq!(layout.file_len(), ph[2].offset + 0x300000);
        assert_eq!(layout.memory_len(), 0x9f000 + 0x300000);
    }

    #[test]
    fn notes_are_prstatus_per_cpu_crashing_first_then_message_and_reason() {
        let layout = VmcoreLayout::new(3, crash(1), &ranges()).unwrap();
        let bytes = layout.headers();
        let notes = Core::new(&bytes).notes();
        assert_eq!(notes.len(), 5);
        let pids: Vec<u32> = notes[..3].iter().map(|n| pr_pid(n.desc)).collect();
        assert_eq!(pids, [2, 1, 3]);
        for n in &notes[..3] {
            assert_eq!((n.name, n.note_type, n.desc.len()), (&b"CORE"[..], NT_PRSTATUS, PRSTATUS_LEN));
        }
        // SIGSEGV for a page fault, on the crashing CPU only.
        assert_eq!(u16::from_le_bytes([notes[0].desc[12], notes[0].desc[13]]), 11);
        assert_eq!(u16::from_le_bytes([notes[1].desc[12], notes[1].desc[13]]), 0);
        assert_eq!((notes[3].name, notes[3].note_type), (&b"NETDUMP"[..], NT_NETDUMP_MESSAGE));
        assert_eq!(notes[3].desc, b"page fault in a test");
        assert_eq!((notes[4].name, notes[4].note_type), (&b"NETDUMP"[..], NT_NETDUMP_CRASH));
        assert_eq!(u32_at(notes[4].desc, 0), 2);
        assert_eq!(u32_at(notes[4].desc, 4), 14);
        assert_eq!(u32_at(notes[4].desc, 8), 1);
        assert_eq!(u64_at(notes[4].desc, 16), 2);
        assert_eq!(u64_at(notes[4].desc, 24), 0xdead_0000);
    }

    #[test]
    fn prstatus_offsets_point_at_each_cpus_descriptor() {
        let layout = VmcoreLayout::new(3, crash(2), &ranges()).unwrap();
        let bytes = layout.headers();
        for cpu in 0..3 {
            let at = layout.prstatus_offset(cpu).unwrap() as usize;
            assert_eq!(pr_pid(&bytes[at..]), u32::from(cpu) + 1);
        }
        assert_eq!(layout.prstatus_offset(3), None);
    }

    /// Each register lands at its slot of the x86_64 ABI's `pr_reg`, as the tests' reader
    /// writes the ABI out (`core_reader::USER_REGS`, from Linux's `user_regs_struct`), not
    /// as this file orders them: the descriptor is written into a vmcore and read back
    /// through `object`, with a value of its own in every register so that any two
    /// swapped slots fail.
    #[test]
    fn prstatus_puts_each_register_at_its_abi_slot() {
        let layout = VmcoreLayout::new(3, crash(1), &ranges()).unwrap();
        let mut file = layout.headers();
        let mut expected = Vec::new();
        for cpu in 0..3 {
            let (record, want) = distinct_registers(cpu);
            let at = layout.prstatus_offset(cpu).unwrap() as usize;
            file[at..at + PRSTATUS_LEN].copy_from_slice(&layout.prstatus(cpu, Some(&record)));
            expected.push(want);
        }
        let notes = Core::new(&file).notes();
        // The crashing CPU (1) first, then 0 and 2.
        for (note, cpu) in notes[..3].iter().zip([1u16, 0, 2]) {
            assert_eq!((note.name, note.note_type), (&b"CORE"[..], NT_PRSTATUS));
            assert_eq!(pr_pid(note.desc), u32::from(cpu) + 1);
            assert_pr_reg_in_abi_order(note.desc, &expected[usize::from(cpu)]);
            assert!(note.desc[328..].iter().all(|b| *b == 0), "pr_fpvalid and padding");
        }
    }

    /// SMP: CPU 2 crashed, 0 and 1 were stopped, 3 did not answer the stop NMI (its
    /// record is absent). gdb's threads follow the notes: the crashing CPU first, then
    /// the others by index, each with `pr_pid` = index + 1; CPU 3's registers are zero.
    #[test]
    fn a_cpu_that_did_not_answer_keeps_its_note_with_zero_registers() {
        let layout = VmcoreLayout::new(4, crash(2), &ranges()).unwrap();
        let mut file = layout.headers();
        for cpu in 0..4u16 {
            let record = if cpu == 3 {
                RegisterRecord::absent(3, CpuState::NoAnswer, Some(3))
            } else {
                let mut r = sample_regs(u64::from(cpu));
                r.set_state(if cpu == 2 { CpuState::Crashed } else { CpuState::Stopped });
                r.set_apic_id(u32::from(cpu));
                r
            };
            let at = layout.prstatus_offset(cpu).unwrap() as usize;
            file[at..at + PRSTATUS_LEN].copy_from_slice(&layout.prstatus(cpu, Some(&record)));
        }
        let notes = Core::new(&file).notes();
        assert_eq!(notes.len(), 6);
        assert!(notes[..4].iter().all(|n| (n.name, n.note_type) == (&b"CORE"[..], NT_PRSTATUS)));
        let pids: Vec<u32> = notes[..4].iter().map(|n| pr_pid(n.desc)).collect();
        assert_eq!(pids, [3, 1, 2, 4]);
        for (note, cpu) in notes[..3].iter().zip([2u64, 0, 1]) {
            let r = sample_regs(cpu);
            assert_eq!(pr_reg_named(note.desc, "rip"), r.rip, "rip of CPU {cpu}");
            assert_eq!(pr_reg_named(note.desc, "rsp"), r.rsp, "rsp of CPU {cpu}");
            assert_eq!(pr_reg_named(note.desc, "rax"), r.rax, "rax of CPU {cpu}");
        }
        assert!((0..27).all(|i| pr_reg(notes[3].desc, i) == 0), "CPU 3 has no registers");
        // The signal is the crashing CPU's only.
        assert_eq!(u16::from_le_bytes([notes[0].desc[12], notes[0].desc[13]]), 11);
        assert!(notes[1..4].iter().all(|n| n.desc[12..14] == [0, 0]));
    }

    #[test]
    fn invalid_register_record_leaves_registers_zero() {
        let layout = VmcoreLayout::new(1, crash(0), &ranges()).unwrap();
        let r = RegisterRecord { flags: 0, ..sample_regs(0) };
        let d = layout.prstatus(0, Some(&r));
        assert!((0..27).all(|i| pr_reg(&d, i) == 0));
    }

    #[test]
    fn memory_offset_finds_the_range_or_refuses() {
        let layout = VmcoreLayout::new(1, crash(0), &ranges()).unwrap();
        let seg = layout.segments();
        assert_eq!(layout.memory_offset(0, 4096), Some(seg[0].file_offset));
        assert_eq!(layout.memory_offset(0x9e000, 0x1000), Some(seg[0].file_offset + 0x9e000));
        assert_eq!(layout.memory_offset(0x9e000, 0x1001), None, "crosses the end of a range");
        assert_eq!(layout.memory_offset(0x9f000, 1), None, "in the hole between ranges");
        assert_eq!(layout.memory_offset(0x100000, 0x300000), Some(seg[1].file_offset));
        assert_eq!(layout.memory_offset(0x400000, 1), None, "past the last range");
        assert_eq!(layout.memory_offset(u64::MAX, 2), None);
    }

    #[test]
    fn skipped_memory_gives_a_core_with_notes_only() {
        let layout = VmcoreLayout::new(1, crash(0), &[]).unwrap();
        let bytes = layout.headers();
        assert_eq!(layout.file_len(), bytes.len() as u64);
        assert_eq!(Core::new(&bytes).phdrs().len(), 1);
        assert_eq!(layout.memory_offset(0, 1), None);
    }

    #[test]
    fn bad_cpu_counts_are_refused() {
        assert_eq!(VmcoreLayout::new(0, crash(0), &[]).unwrap_err(), LayoutError::BadCpuCount);
        assert_eq!(VmcoreLayout::new(2, crash(2), &[]).unwrap_err(), LayoutError::BadCpuCount);
    }

    #[test]
    fn huge_ranges_are_refused_not_wrapped() {
        let r = [MemoryRange { phys_start: 0, length: !0xfff, virt_start: 0 }];
        assert_eq!(VmcoreLayout::new(1, crash(0), &r).unwrap_err(), LayoutError::TooLarge);
    }

    #[test]
    fn signals_follow_the_crash_kind() {
        let mut c = crash(0);
        assert_eq!(c.signal(), 11);
        c.vector = 0;
        assert_eq!(c.signal(), 8);
        c.vector = 6;
        assert_eq!(c.signal(), 4);
        c.kind = CrashKind::Panic;
        assert_eq!(c.signal(), 6);
        c.kind = CrashKind::Requested;
        assert_eq!(c.signal(), 3);
    }

    /// gdb, when installed, reads the registers of a tiny synthetic core.
    #[test]
    fn gdb_reads_registers_from_a_synthetic_core() {
        let Ok(out) = std::process::Command::new("gdb").arg("--version").output() else {
            eprintln!("gdb not installed; skipping");
            return;
        };
        if !out.status.success() {
            eprintln!("gdb not usable; skipping");
            return;
        }
        let layout = VmcoreLayout::new(2, crash(1), &ranges()).unwrap();
        let mut file = layout.headers();
        file.resize(layout.file_len() as usize, 0);
        for cpu in 0..2 {
            let at = layout.prstatus_offset(cpu).unwrap() as usize;
            file[at..at + PRSTATUS_LEN].copy_from_slice(&layout.prstatus(cpu, Some(&sample_regs(u64::from(cpu)))));
        }
        let word_at = layout.memory_offset(0x100008, 8).unwrap() as usize;
        file[word_at..word_at + 8].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        let dir = std::env::temp_dir().join(format!("netdumpd-gdb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vmcore");
        std::fs::write(&path, &file).unwrap();
        let out = std::process::Command::new("gdb")
            .args([
                "-nx",
                "-batch",
                "-ex",
                "info registers rip",
                "-ex",
                "info threads",
                "-ex",
                "x/gx 0xffff800000100008",
                "-c",
            ])
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).ok();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The crashing CPU (1) is the selected thread.
        assert!(stdout.contains("0xffffffff80100001"), "gdb stdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(stdout.contains("LWP 1") && stdout.contains("LWP 2"), "gdb stdout:\n{stdout}\nstderr:\n{stderr}");
        // Memory is read through p_vaddr.
        assert!(stdout.contains("0x1122334455667788"), "gdb stdout:\n{stdout}\nstderr:\n{stderr}");
    }

    #[test]
    fn a_filtered_dump_gets_its_exclusion_note_in_a_second_pt_note_at_the_end() {
        let plain = VmcoreLayout::new(1, crash(0), &ranges()).unwrap();
        assert_eq!(plain.exclusion_note(4096, std::iter::empty()), None);
        let layout = VmcoreLayout::with_exclusions(1, crash(0), &ranges(), true).unwrap();
        let mut file = layout.headers();
        {
            let core = Core::new(&file);
            let ph = core.phdrs();
            assert_eq!(ph.len(), 4);
            assert_eq!((ph[0].p_type, ph[1].p_type, ph[2].p_type, ph[3].p_type), (PT_NOTE, PT_NULL, PT_LOAD, PT_LOAD));
            assert!(core.notes().iter().all(|n| n.note_type != NT_NETDUMP_EXCLUDED), "no note before the end");
        }
        file.resize(layout.file_len() as usize, 0);
        let runs = [(0x20, 3, PageClass::User), (0x140, 0x10, PageClass::Free)];
        let (ph_at, ph, note_at, note) = layout.exclusion_note(4096, runs.into_iter()).unwrap();
        assert_eq!(note_at, layout.file_len());
        file[ph_at as usize..ph_at as usize + ph.len()].copy_from_slice(&ph);
        file.extend_from_slice(&note);
        let core = Core::new(&file);
        assert_eq!(core.phdrs()[1].p_type, PT_NOTE);
        let notes = core.notes();
        let n = notes.iter().find(|n| n.note_type == NT_NETDUMP_EXCLUDED).expect("the exclusion note");
        assert_eq!(n.name, NETDUMP_NOTE_NAME.as_bytes());
        assert_eq!(n.desc.len(), EXCLUDED_HEADER_LEN + 2 * EXCLUDED_RUN_LEN);
        assert_eq!((u32_at(n.desc, 0), u32_at(n.desc, 4), u64_at(n.desc, 8)), (1, 4096, 2));
        let run = |i: usize| {
            let at = EXCLUDED_HEADER_LEN + i * EXCLUDED_RUN_LEN;
            (u64_at(n.desc, at), u64_at(n.desc, at + 8), u32_at(n.desc, at + 16))
        };
        assert_eq!(run(0), (0x20, 3, 8));
        assert_eq!(run(1), (0x140, 0x10, 16));
        // The memory segments moved by one program header only.
        assert_eq!(layout.segments()[0].file_offset, plain.segments()[0].file_offset);
    }
}
