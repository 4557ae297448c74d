//! The tests' reader of ELF64 core files. The ELF structure (header, program headers,
//! notes) is parsed by the `object` crate, a maintained reader that shares no code with
//! netdumpd's writer in `src/vmcore.rs`; the x86_64 `elf_prstatus` layout is written out
//! below from the Linux ABI, not taken from the writer. Shared by the unit tests (through
//! `#[path]`) and the integration tests.
#![allow(dead_code)]

use netdump_core::proto::{REGISTERS_VALID, RegisterRecord};
use object::LittleEndian as LE;
use object::elf::{EM_X86_64, ET_CORE, FileHeader64, PT_LOAD, ProgramHeader64};
use object::read::elf::{FileHeader, ProgramHeader};

pub struct Core<'a> {
    pub bytes: &'a [u8],
    headers: &'a [ProgramHeader64<LE>],
}

#[derive(Debug, PartialEq, Eq)]
pub struct Phdr {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

pub struct Note<'a> {
    /// The owner name, without its terminating NUL.
    pub name: &'a [u8],
    pub note_type: u32,
    pub desc: &'a [u8],
}

pub fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

impl<'a> Core<'a> {
    /// Parses an x86_64 little-endian `ET_CORE`; panics (failing the test) otherwise.
    pub fn new(bytes: &'a [u8]) -> Self {
        // Little-endian only: `object` refuses a big-endian file for `LE`.
        let header = FileHeader64::<LE>::parse(bytes).expect("an ELF64 little-endian header");
        assert_eq!(header.e_type(LE), ET_CORE, "ET_CORE");
        assert_eq!(header.e_machine(LE), EM_X86_64, "EM_X86_64");
        let headers = header.program_headers(LE, bytes).expect("program headers");
        Core { bytes, headers }
    }

    pub fn phdrs(&self) -> Vec<Phdr> {
        self.headers
            .iter()
            .map(|p| Phdr {
                p_type: p.p_type(LE).0,
                flags: p.p_flags(LE).0,
                offset: p.p_offset(LE),
                vaddr: p.p_vaddr(LE),
                paddr: p.p_paddr(LE),
                filesz: p.p_filesz(LE),
                memsz: p.p_memsz(LE),
            })
            .collect()
    }

    /// Every note of every PT_NOTE, in file order, through `object`'s note iterator.
    pub fn notes(&self) -> Vec<Note<'a>> {
        let mut notes = Vec::new();
        for ph in self.headers {
            let Some(mut it) = ph.notes(LE, self.bytes).expect("PT_NOTE inside the file") else { continue };
            while let Some(n) = it.next().expect("well-formed note") {
                notes.push(Note { name: n.name(), note_type: n.n_type(LE).0, desc: n.desc() });
            }
        }
        notes
    }

    /// The `len` bytes at an address of the PT_LOAD that `addr` (its `p_vaddr` or
    /// `p_paddr`) places them in.
    fn read_load(&self, address: u64, len: usize, addr: impl Fn(&ProgramHeader64<LE>) -> u64) -> &'a [u8] {
        let (ph, start) = self
            .headers
            .iter()
            .filter(|p| p.p_type(LE) == PT_LOAD)
            .find_map(|p| {
                let start = address.checked_sub(addr(p))?;
                (start + len as u64 <= p.p_filesz(LE)).then_some((p, start as usize))
            })
            .expect("address in a PT_LOAD");
        &ph.data(LE, self.bytes).expect("PT_LOAD inside the file")[start..start + len]
    }

    /// The `len` bytes at virtual address `vaddr`, from the PT_LOAD holding them.
    pub fn read_virt(&self, vaddr: u64, len: usize) -> &'a [u8] {
        self.read_load(vaddr, len, |p| p.p_vaddr(LE))
    }

    /// The `len` bytes at physical address `paddr`, from the PT_LOAD holding them.
    pub fn read_phys(&self, paddr: u64, len: usize) -> &'a [u8] {
        self.read_load(paddr, len, |p| p.p_paddr(LE))
    }
}

// The x86_64 `struct elf_prstatus` (Linux include/uapi/linux/elfcore.h, LP64), written
// out from the ABI, not from netdumpd: `pr_info` (3 × int, 0), `pr_cursig` (short, 12),
// `pr_sigpend` (16), `pr_sighold` (24), `pr_pid` (32), `pr_ppid`, `pr_pgrp`, `pr_sid`,
// four `struct timeval` (48..112), `pr_reg` (112, 27 × u64), `pr_fpvalid` (328), padding
// to 336.

/// Size of the x86_64 `struct elf_prstatus`.
pub const PRSTATUS_LEN: usize = 336;
/// Offset of `pr_pid`.
pub const PR_PID_OFFSET: usize = 32;
/// Offset of `pr_reg`.
pub const PR_REG_OFFSET: usize = 112;

/// `pr_reg` slot by slot: Linux `struct user_regs_struct` for x86_64, from
/// arch/x86/include/asm/user_64.h (its `bp`, `ax`, `ip`, `flags`, `sp`... are named
/// here as glibc's sys/user.h and gdb name them).
pub const USER_REGS: [&str; 27] = [
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi", "orig_rax",
    "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs",
];

/// `pr_reg[i]` of a PRSTATUS descriptor.
pub fn pr_reg(desc: &[u8], i: usize) -> u64 {
    u64_at(desc, PR_REG_OFFSET + i * 8)
}

/// The register `name` (one of [`USER_REGS`]) of a PRSTATUS descriptor.
pub fn pr_reg_named(desc: &[u8], name: &str) -> u64 {
    let i = USER_REGS.iter().position(|r| *r == name).unwrap_or_else(|| panic!("no register {name}"));
    pr_reg(desc, i)
}

pub fn pr_pid(desc: &[u8]) -> u32 {
    u32_at(desc, PR_PID_OFFSET)
}

/// A captured register record of CPU `cpu` whose every register holds its own value
/// (`k × 0x0101_0101_0101_0100 + cpu`, also for the control registers, which `pr_reg`
/// does not hold), and the value each `pr_reg` slot must then hold, by the
/// [`USER_REGS`] name. The pairs are listed in the record's order, not the ABI's: only
/// [`USER_REGS`] says where each one goes.
pub fn distinct_registers(cpu: u16) -> (RegisterRecord, Vec<(&'static str, u64)>) {
    let c = u64::from(cpu);
    let v = |k: u64| k * 0x0101_0101_0101_0100 + c;
    let record = RegisterRecord {
        rax: v(1),
        rbx: v(2),
        rcx: v(3),
        rdx: v(4),
        rsi: v(5),
        rdi: v(6),
        rbp: v(7),
        rsp: v(8),
        r8: v(9),
        r9: v(10),
        r10: v(11),
        r11: v(12),
        r12: v(13),
        r13: v(14),
        r14: v(15),
        r15: v(16),
        rip: v(17),
        rflags: v(18),
        cs: v(19),
        ss: v(20),
        ds: v(21),
        es: v(22),
        fs: v(23),
        gs: v(24),
        fs_base: v(25),
        gs_base: v(26),
        cr0: v(27),
        cr2: v(28),
        cr3: v(29),
        cr4: v(30),
        cpu: c,
        flags: REGISTERS_VALID,
    };
    let expected = vec![
        ("rax", v(1)),
        ("rbx", v(2)),
        ("rcx", v(3)),
        ("rdx", v(4)),
        ("rsi", v(5)),
        ("rdi", v(6)),
        ("rbp", v(7)),
        ("rsp", v(8)),
        ("r8", v(9)),
        ("r9", v(10)),
        ("r10", v(11)),
        ("r11", v(12)),
        ("r12", v(13)),
        ("r13", v(14)),
        ("r14", v(15)),
        ("r15", v(16)),
        ("rip", v(17)),
        ("eflags", v(18)),
        ("cs", v(19)),
        ("ss", v(20)),
        ("ds", v(21)),
        ("es", v(22)),
        ("fs", v(23)),
        ("gs", v(24)),
        ("fs_base", v(25)),
        ("gs_base", v(26)),
        // Not captured by the client: -1, "not in a system call", as Linux's kdump
        // writes for an interrupted kernel.
        ("orig_rax", u64::MAX),
    ];
    (record, expected)
}

/// Asserts that every `pr_reg` slot of the PRSTATUS descriptor `desc` holds the value
/// `expected` (from [`distinct_registers`]) gives its [`USER_REGS`] name.
pub fn assert_pr_reg_in_abi_order(desc: &[u8], expected: &[(&str, u64)]) {
    assert_eq!(desc.len(), PRSTATUS_LEN, "elf_prstatus size");
    assert_eq!(expected.len(), USER_REGS.len());
    for (i, name) in USER_REGS.iter().enumerate() {
        let want = expected.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no value for {name}")).1;
        assert_eq!(pr_reg(desc, i), want, "pr_reg[{i}] ({name}) at offset {}", PR_REG_OFFSET + i * 8);
    }
}
