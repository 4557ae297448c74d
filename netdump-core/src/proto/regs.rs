//! The 256-byte register record of the REGISTERS section (docs/PROTOCOL.md).

use super::ProtoError;
use super::bytes::{Reader, Writer};

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
    /// Bit 0: the record holds captured values.
    pub flags: u64,
}

/// `RegisterRecord::flags` bit: the record was captured.
pub const REGISTERS_VALID: u64 = 1;

impl RegisterRecord {
    fn as_array(&self) -> [u64; 32] {
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

    fn from_array(a: [u64; 32]) -> Self {
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
        let mut w = Writer::new(out);
        for v in self.as_array() {
            w.u64(v);
        }
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
        Ok(Self::from_array(a))
    }

    /// True if the record holds captured values ([`REGISTERS_VALID`] set in `flags`).
    pub fn is_valid(&self) -> bool {
        self.flags & REGISTERS_VALID != 0
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
    fn short_record_is_an_error() {
        assert_eq!(RegisterRecord::parse(&[0; 255]), Err(ProtoError::Truncated));
    }
}
