//! The 256-byte register record of the REGISTERS section (docs/PROTOCOL.md).

use super::ProtoError;
use super::bytes::{Reader, put_words};

/// Length of one register record on the wire.
pub const REGISTER_RECORD_LEN: usize = 256;

/// The registers of one CPU at the crash site, as x86_64 names them.
///
/// `#[repr(C)]` with the fields in wire order: the arch capture code stores into it by
/// offset (`rax` at 0, `rbx` at 8, …, `flags` at 248).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct RegisterRecord {
    /// General-purpose register `rax` (word 0).
    pub rax: u64,
    /// General-purpose register `rbx` (word 1).
    pub rbx: u64,
    /// General-purpose register `rcx` (word 2).
    pub rcx: u64,
    /// General-purpose register `rdx` (word 3).
    pub rdx: u64,
    /// General-purpose register `rsi` (word 4).
    pub rsi: u64,
    /// General-purpose register `rdi` (word 5).
    pub rdi: u64,
    /// `rbp` (word 6): the frame pointer when the kernel keeps one.
    pub rbp: u64,
    /// `rsp` (word 7): the stack pointer of the captured context.
    pub rsp: u64,
    /// General-purpose register `r8` (word 8).
    pub r8: u64,
    /// General-purpose register `r9` (word 9).
    pub r9: u64,
    /// General-purpose register `r10` (word 10).
    pub r10: u64,
    /// General-purpose register `r11` (word 11).
    pub r11: u64,
    /// General-purpose register `r12` (word 12).
    pub r12: u64,
    /// General-purpose register `r13` (word 13).
    pub r13: u64,
    /// General-purpose register `r14` (word 14).
    pub r14: u64,
    /// General-purpose register `r15` (word 15).
    pub r15: u64,
    /// `rip` (word 16): the instruction pointer of the captured context.
    pub rip: u64,
    /// The flags register `rflags` (word 17).
    pub rflags: u64,
    /// Segment selector `cs`, zero-extended (word 18).
    pub cs: u64,
    /// Segment selector `ss`, zero-extended (word 19).
    pub ss: u64,
    /// Segment selector `ds`, zero-extended (word 20).
    pub ds: u64,
    /// Segment selector `es`, zero-extended (word 21).
    pub es: u64,
    /// Segment selector `fs`, zero-extended (word 22).
    pub fs: u64,
    /// Segment selector `gs`, zero-extended (word 23).
    pub gs: u64,
    /// `IA32_FS_BASE` (MSR 0xC000_0100; word 24).
    pub fs_base: u64,
    /// `IA32_GS_BASE` (MSR 0xC000_0101; word 25).
    pub gs_base: u64,
    /// Control register `cr0` (word 26).
    pub cr0: u64,
    /// `cr2` (word 27): the last page-fault linear address.
    pub cr2: u64,
    /// Control register `cr3` (word 28).
    pub cr3: u64,
    /// Control register `cr4` (word 29).
    pub cr4: u64,
    /// Index of the CPU the record describes (word 30), as the kernel numbers them.
    pub cpu: u64,
    /// Bit 0: the record holds captured values; bit 1: `flags >> 32` is the CPU's APIC
    /// id; bits 8–15: the CPU's [`CpuState`] at the dump (0 on clients that predate it).
    pub flags: u64,
}

/// `RegisterRecord::flags` bit: the record was captured.
pub const REGISTERS_VALID: u64 = 1;
/// `RegisterRecord::flags` bit: bits 32–63 hold the CPU's local APIC id.
pub const REGISTERS_APIC_ID: u64 = 1 << 1;
/// Shift of the [`CpuState`] code in `RegisterRecord::flags` (bits 8–15).
pub const CPU_STATE_SHIFT: u32 = 8;

/// What became of a CPU when the kernel crashed, as the record's `flags` carry it (bits
/// 8–15). A client that does not know states sends 0 ([`CpuState::Unknown`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CpuState {
    /// No state given (a single-CPU client, or one that predates CPU states).
    Unknown = 0,
    /// The CPU that crashed and sends the dump.
    Crashed = 1,
    /// Stopped by the crashing CPU's NMI: the record is its interrupted context.
    Stopped = 2,
    /// Panicked too while another CPU was already dumping: the record is from its own
    /// panic, and it parked itself.
    Panicked = 3,
    /// Did not answer the stop NMI within the bound (halted with NMIs blocked, hung in
    /// firmware): no registers.
    NoAnswer = 4,
    /// The kernel never brought the CPU online (or took it offline): no registers.
    Offline = 5,
}

impl CpuState {
    /// Every state, by code.
    pub const ALL: [CpuState; 6] = [
        CpuState::Unknown,
        CpuState::Crashed,
        CpuState::Stopped,
        CpuState::Panicked,
        CpuState::NoAnswer,
        CpuState::Offline,
    ];

    /// The state of a code; `None` for a code this version does not know.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// The state's name in `info.json` and text files: `crashed`, `no_answer`, …
    pub fn name(self) -> &'static str {
        match self {
            CpuState::Unknown => "unknown",
            CpuState::Crashed => "crashed",
            CpuState::Stopped => "stopped",
            CpuState::Panicked => "panicked",
            CpuState::NoAnswer => "no_answer",
            CpuState::Offline => "offline",
        }
    }
}

impl RegisterRecord {
    /// All zero: no registers, no CPU state (for preallocated record arrays).
    pub const EMPTY: Self = Self::from_words([0; 32]);

    /// The 32 words in wire order.
    pub fn to_words(&self) -> [u64; 32] {
        [
            self.rax,
            self.rbx,
            self.rcx,
            self.rdx,
            self.rsi,
            self.rdi,
            self.rbp,
            self.rsp,
            self.r8,
            self.r9,
            self.r10,
            self.r11,
            self.r12,
            self.r13,
            self.r14,
            self.r15,
            self.rip,
            self.rflags,
            self.cs,
            self.ss,
            self.ds,
            self.es,
            self.fs,
            self.gs,
            self.fs_base,
            self.gs_base,
            self.cr0,
            self.cr2,
            self.cr3,
            self.cr4,
            self.cpu,
            self.flags,
        ]
    }

    /// A record from its 32 words in wire order.
    pub const fn from_words(a: [u64; 32]) -> Self {
        let [
            rax,
            rbx,
            rcx,
            rdx,
            rsi,
            rdi,
            rbp,
            rsp,
            r8,
            r9,
            r10,
            r11,
            r12,
            r13,
            r14,
            r15,
            rip,
            rflags,
            cs,
            ss,
            ds,
            es,
            fs,
            gs,
            fs_base,
            gs_base,
            cr0,
            cr2,
            cr3,
            cr4,
            cpu,
            flags,
        ] = a;
        RegisterRecord {
            rax,
            rbx,
            rcx,
            rdx,
            rsi,
            rdi,
            rbp,
            rsp,
            r8,
            r9,
            r10,
            r11,
            r12,
            r13,
            r14,
            r15,
            rip,
            rflags,
            cs,
            ss,
            ds,
            es,
            fs,
            gs,
            fs_base,
            gs_base,
            cr0,
            cr2,
            cr3,
            cr4,
            cpu,
            flags,
        }
    }

    /// Writes the record in wire order: 32 big-endian u64 words.
    pub fn emit(&self, out: &mut [u8; REGISTER_RECORD_LEN]) {
        put_words(&self.to_words(), out);
    }

    /// The record in wire order, as [`emit`](Self::emit) writes it.
    pub fn to_bytes(&self) -> [u8; REGISTER_RECORD_LEN] {
        let mut b = [0; REGISTER_RECORD_LEN];
        self.emit(&mut b);
        b
    }

    /// Reads a record from exactly [`REGISTER_RECORD_LEN`] bytes: fewer is
    /// [`ProtoError::Truncated`], more [`ProtoError::LengthMismatch`].
    pub fn parse(p: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let mut a = [0u64; 32];
        for v in a.iter_mut() {
            *v = r.u64()?;
        }
        r.finish()?;
        Ok(Self::from_words(a))
    }

    /// True if the record holds captured values ([`REGISTERS_VALID`] set in `flags`).
    pub fn is_valid(&self) -> bool {
        self.flags & REGISTERS_VALID != 0
    }

    /// The CPU's local APIC id, when the client sent it ([`REGISTERS_APIC_ID`]).
    pub fn apic_id(&self) -> Option<u32> {
        (self.flags & REGISTERS_APIC_ID != 0).then_some((self.flags >> 32) as u32)
    }

    /// Records the CPU's local APIC id in `flags`.
    pub fn set_apic_id(&mut self, apic_id: u32) {
        self.flags = (self.flags & 0xffff_ffff) | REGISTERS_APIC_ID | (u64::from(apic_id) << 32);
    }

    /// The raw [`CpuState`] code of `flags` (bits 8–15).
    pub fn state_code(&self) -> u8 {
        (self.flags >> CPU_STATE_SHIFT) as u8
    }

    /// The CPU's state at the dump; `None` for a code this version does not know.
    pub fn state(&self) -> Option<CpuState> {
        CpuState::from_code(self.state_code())
    }

    /// Records the CPU's state in `flags`.
    pub fn set_state(&mut self, state: CpuState) {
        self.flags = (self.flags & !(0xff << CPU_STATE_SHIFT)) | (u64::from(state as u8) << CPU_STATE_SHIFT);
    }

    /// An invalid record for CPU `cpu`: no registers, only why (and the APIC id if known).
    pub fn absent(cpu: u64, state: CpuState, apic_id: Option<u32>) -> Self {
        let mut r = RegisterRecord { cpu, ..RegisterRecord::default() };
        r.set_state(state);
        if let Some(id) = apic_id {
            r.set_apic_id(id);
        }
        r
    }
}

/// The architecture of a client, as its ELF `e_machine` value: what the CRASH
/// announcement's `machine` byte carries and the vmcore's `e_machine` becomes. It decides
/// the register record's layout (docs/PROTOCOL.md, "Register records").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Machine {
    /// x86_64 (`EM_X86_64`): [`RegisterRecord`], 256 bytes.
    X86_64 = 62,
    /// AArch64 (`EM_AARCH64`): [`Aarch64Record`], 320 bytes.
    Aarch64 = 183,
}

impl Machine {
    /// The ELF `e_machine` value.
    pub const fn elf_machine(self) -> u16 {
        self as u16
    }

    /// The CRASH `machine` byte: the `e_machine` value (each fits in a byte).
    pub const fn wire(self) -> u8 {
        self as u16 as u8
    }

    /// The machine of a CRASH `machine` byte: 0 (a client from before the field) is
    /// x86_64; `None` for a machine this version does not know.
    pub const fn from_wire(b: u8) -> Option<Self> {
        match b {
            0 | 62 => Some(Machine::X86_64),
            183 => Some(Machine::Aarch64),
            _ => None,
        }
    }

    /// Bytes of one register record of this machine.
    pub const fn record_len(self) -> usize {
        match self {
            Machine::X86_64 => REGISTER_RECORD_LEN,
            Machine::Aarch64 => AARCH64_RECORD_LEN,
        }
    }

    /// The name reports use: `x86_64`, `aarch64`.
    pub const fn name(self) -> &'static str {
        match self {
            Machine::X86_64 => "x86_64",
            Machine::Aarch64 => "aarch64",
        }
    }
}

/// Length of one AArch64 register record on the wire: 40 big-endian u64 words.
pub const AARCH64_RECORD_LEN: usize = 320;
/// The longest register record of any machine.
pub const MAX_RECORD_LEN: usize = AARCH64_RECORD_LEN;

/// The registers of one AArch64 CPU at the crash site (docs/PROTOCOL.md): words 0–30
/// `x0`–`x30`, 31 `sp`, 32 `pc`, 33 `pstate` (Linux's `struct user_pt_regs` order, which
/// the vmcore's `NT_PRSTATUS` takes as it is), 34 `ESR_EL1`, 35 `FAR_EL1`, 36–37
/// reserved (0), 38 the CPU index, 39 `flags` with the bits of [`RegisterRecord::flags`]
/// (bit 0 valid, bit 1 `flags >> 32` is a hardware CPU id — the MPIDR affinity —, bits
/// 8–15 the [`CpuState`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Aarch64Record {
    /// `x0`–`x30` (`x29` the frame pointer, `x30` the link register).
    pub x: [u64; 31],
    /// The stack pointer of the captured context.
    pub sp: u64,
    /// The program counter of the captured context.
    pub pc: u64,
    /// `PSTATE` as `SPSR_EL1` saves it.
    pub pstate: u64,
    /// `ESR_EL1`: the exception syndrome (0 for a panic).
    pub esr: u64,
    /// `FAR_EL1`: the faulting address (0 for a panic).
    pub far: u64,
    /// Index of the CPU the record describes.
    pub cpu: u64,
    /// As [`RegisterRecord::flags`].
    pub flags: u64,
}

impl Aarch64Record {
    /// All zero: no registers.
    pub const EMPTY: Self = Aarch64Record { x: [0; 31], sp: 0, pc: 0, pstate: 0, esr: 0, far: 0, cpu: 0, flags: 0 };

    /// The 40 words in wire order.
    pub fn to_words(&self) -> [u64; 40] {
        let mut w = [0u64; 40];
        w[..31].copy_from_slice(&self.x);
        w[31] = self.sp;
        w[32] = self.pc;
        w[33] = self.pstate;
        w[34] = self.esr;
        w[35] = self.far;
        w[38] = self.cpu;
        w[39] = self.flags;
        w
    }

    /// Writes the record in wire order: 40 big-endian u64 words.
    pub fn emit(&self, out: &mut [u8; AARCH64_RECORD_LEN]) {
        put_words(&self.to_words(), out);
    }

    /// Reads a record from exactly [`AARCH64_RECORD_LEN`] bytes.
    pub fn parse(p: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let mut w = [0u64; 40];
        for v in w.iter_mut() {
            *v = r.u64()?;
        }
        r.finish()?;
        let mut x = [0u64; 31];
        x.copy_from_slice(&w[..31]);
        Ok(Aarch64Record { x, sp: w[31], pc: w[32], pstate: w[33], esr: w[34], far: w[35], cpu: w[38], flags: w[39] })
    }

    /// The `user_pt_regs` of the record: `x0`–`x30`, `sp`, `pc`, `pstate`.
    pub fn user_pt_regs(&self) -> [u64; 34] {
        let mut r = [0u64; 34];
        r[..31].copy_from_slice(&self.x);
        r[31] = self.sp;
        r[32] = self.pc;
        r[33] = self.pstate;
        r
    }
}

/// The register records of a dump, one per CPU, in the crashing kernel's architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuRegisters<'a> {
    /// x86_64 records.
    X86_64(&'a [RegisterRecord]),
    /// AArch64 records.
    Aarch64(&'a [Aarch64Record]),
}

impl<'a> From<&'a [RegisterRecord]> for CpuRegisters<'a> {
    fn from(r: &'a [RegisterRecord]) -> Self {
        CpuRegisters::X86_64(r)
    }
}

impl<'a, const N: usize> From<&'a [RegisterRecord; N]> for CpuRegisters<'a> {
    fn from(r: &'a [RegisterRecord; N]) -> Self {
        CpuRegisters::X86_64(r)
    }
}

impl<'a> From<&'a [Aarch64Record]> for CpuRegisters<'a> {
    fn from(r: &'a [Aarch64Record]) -> Self {
        CpuRegisters::Aarch64(r)
    }
}

impl<'a> CpuRegisters<'a> {
    /// The machine the records belong to.
    pub fn machine(&self) -> Machine {
        match self {
            CpuRegisters::X86_64(_) => Machine::X86_64,
            CpuRegisters::Aarch64(_) => Machine::Aarch64,
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        match self {
            CpuRegisters::X86_64(r) => r.len(),
            CpuRegisters::Aarch64(r) => r.len(),
        }
    }

    /// Whether there is no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `n` records (all of them when there are fewer).
    pub fn first(&self, n: usize) -> Self {
        match *self {
            CpuRegisters::X86_64(r) => CpuRegisters::X86_64(&r[..n.min(r.len())]),
            CpuRegisters::Aarch64(r) => CpuRegisters::Aarch64(&r[..n.min(r.len())]),
        }
    }

    /// Record `i` in wire order at the start of `out`; its length is the machine's
    /// [`record_len`](Machine::record_len).
    pub fn record_bytes(&self, i: usize, out: &mut [u8; MAX_RECORD_LEN]) -> usize {
        match self {
            CpuRegisters::X86_64(r) => {
                put_words(&r[i].to_words(), out);
                REGISTER_RECORD_LEN
            }
            CpuRegisters::Aarch64(r) => {
                put_words(&r[i].to_words(), out);
                AARCH64_RECORD_LEN
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_layout_matches_protocol_table() {
        let r =
            RegisterRecord { rax: 1, rsp: 8, r15: 16, rip: 17, cr3: 29, flags: REGISTERS_VALID, ..Default::default() };
        let b = r.to_bytes();
        let word = |i: usize| u64::from_be_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!((word(0), word(7), word(15), word(16), word(28), word(31)), (1, 8, 16, 17, 29, 1));
        assert_eq!(RegisterRecord::parse(&b).unwrap(), r);
        assert_eq!(core::mem::size_of::<RegisterRecord>(), REGISTER_RECORD_LEN);
        assert_eq!(core::mem::offset_of!(RegisterRecord, rip), 16 * 8);
        assert_eq!(core::mem::offset_of!(RegisterRecord, flags), 31 * 8);
    }

    #[test]
    fn state_and_apic_id_share_flags_with_the_valid_bit() {
        let mut r = RegisterRecord { flags: REGISTERS_VALID, ..Default::default() };
        assert_eq!((r.state(), r.apic_id()), (Some(CpuState::Unknown), None));
        r.set_state(CpuState::Stopped);
        r.set_apic_id(0xfeed_0007);
        assert!(r.is_valid());
        assert_eq!(r.flags, 0xfeed_0007_0000_0203);
        assert_eq!((r.state(), r.apic_id()), (Some(CpuState::Stopped), Some(0xfeed_0007)));
        r.set_state(CpuState::Panicked);
        assert_eq!((r.state(), r.apic_id(), r.is_valid()), (Some(CpuState::Panicked), Some(0xfeed_0007), true));
        let a = RegisterRecord::absent(3, CpuState::NoAnswer, Some(9));
        assert_eq!((a.cpu, a.is_valid(), a.state(), a.apic_id()), (3, false, Some(CpuState::NoAnswer), Some(9)));
        assert_eq!(RegisterRecord { flags: 0x7f << CPU_STATE_SHIFT, ..Default::default() }.state(), None);
        for (code, s) in CpuState::ALL.iter().enumerate() {
            assert_eq!(CpuState::from_code(code as u8), Some(*s));
        }
    }

    #[test]
    fn aarch64_record_layout_matches_protocol_table() {
        let mut x = [0u64; 31];
        for (i, v) in x.iter_mut().enumerate() {
            *v = 0x100 + i as u64;
        }
        let r = Aarch64Record { x, sp: 0x1f, pc: 0x20, pstate: 0x21, esr: 0x22, far: 0x23, cpu: 5, flags: 1 };
        let mut b = [0u8; AARCH64_RECORD_LEN];
        r.emit(&mut b);
        let word = |i: usize| u64::from_be_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!((word(0), word(30), word(31), word(32), word(33)), (0x100, 0x11e, 0x1f, 0x20, 0x21));
        assert_eq!((word(34), word(35), word(36), word(37), word(38), word(39)), (0x22, 0x23, 0, 0, 5, 1));
        assert_eq!(Aarch64Record::parse(&b).unwrap(), r);
        assert_eq!(Aarch64Record::parse(&b[..319]), Err(ProtoError::Truncated));
        let regs = [r];
        let mut out = [0u8; MAX_RECORD_LEN];
        assert_eq!(CpuRegisters::Aarch64(&regs).record_bytes(0, &mut out), AARCH64_RECORD_LEN);
        assert_eq!(out, b);
    }

    #[test]
    fn machine_bytes_old_clients_mean_x86_64() {
        assert_eq!(Machine::from_wire(0), Some(Machine::X86_64));
        assert_eq!(Machine::from_wire(Machine::X86_64.wire()), Some(Machine::X86_64));
        assert_eq!(Machine::from_wire(Machine::Aarch64.wire()), Some(Machine::Aarch64));
        assert_eq!(Machine::from_wire(40), None);
        assert_eq!((Machine::X86_64.elf_machine(), Machine::Aarch64.elf_machine()), (62, 183));
    }

    #[test]
    fn short_record_is_an_error() {
        assert_eq!(RegisterRecord::parse(&[0; 255]), Err(ProtoError::Truncated));
    }
}
