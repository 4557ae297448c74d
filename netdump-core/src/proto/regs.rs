//! The 256-byte register record of the REGISTERS section (docs/PROTOCOL.md).

use super::bytes::{Reader, Writer};
use super::ProtoError;

/// Length of one register record on the wire.
pub const REGISTER_RECORD_LEN: usize = 256;

/// The registers of one CPU at the crash site, as x86_64 names them.
///
/// `#[repr(C)]` with the fields in wire order: the arch capture code stores into it by
/// offset (`rax` at 0, `rbx` at 8, …, `flags` at 248).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct RegisterRecord {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub rsp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
    pub cs: u64,
    pub ss: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cpu: u64,
    /// Bit 0: the record holds captured values.
    pub flags: u64,
}

/// `RegisterRecord::flags` bit: the record was captured.
pub const REGISTERS_VALID: u64 = 1;

impl RegisterRecord {
    fn as_array(&self) -> [u64; 32] {
        [
            self.rax, self.rbx, self.rcx, self.rdx, self.rsi, self.rdi, self.rbp, self.rsp,
            self.r8, self.r9, self.r10, self.r11, self.r12, self.r13, self.r14, self.r15,
            self.rip, self.rflags, self.cs, self.ss, self.ds, self.es, self.fs, self.gs,
            self.fs_base, self.gs_base, self.cr0, self.cr2, self.cr3, self.cr4, self.cpu, self.flags,
        ]
    }

    fn from_array(a: [u64; 32]) -> Self {
        let [rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8, r9, r10, r11, r12, r13, r14, r15, rip, rflags, cs, ss, ds, es, fs, gs, fs_base, gs_base, cr0, cr2, cr3, cr4, cpu, flags] = a;
        RegisterRecord {
            rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8, r9, r10, r11, r12, r13, r14, r15, rip,
            rflags, cs, ss, ds, es, fs, gs, fs_base, gs_base, cr0, cr2, cr3, cr4, cpu, flags,
        }
    }

    pub fn emit(&self, out: &mut [u8; REGISTER_RECORD_LEN]) {
        let mut w = Writer::new(out);
        for v in self.as_array() {
            w.u64(v);
        }
    }

    pub fn to_bytes(&self) -> [u8; REGISTER_RECORD_LEN] {
        let mut b = [0; REGISTER_RECORD_LEN];
        self.emit(&mut b);
        b
    }

    pub fn parse(p: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let mut a = [0u64; 32];
        for v in a.iter_mut() {
            *v = r.u64()?;
        }
        r.finish()?;
        Ok(Self::from_array(a))
    }

    pub fn is_valid(&self) -> bool {
        self.flags & REGISTERS_VALID != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_layout_matches_protocol_table() {
        let r = RegisterRecord { rax: 1, rsp: 8, r15: 16, rip: 17, cr3: 29, flags: REGISTERS_VALID, ..Default::default() };
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
