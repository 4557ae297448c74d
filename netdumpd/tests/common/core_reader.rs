//! A minimal ELF64 core-file reader for the tests, written from the ELF specification
//! independently of the writer in `src/vmcore.rs`. Shared by the unit tests (through
//! `#[path]`) and the integration tests.
#![allow(dead_code)]

pub struct Core<'a> {
    pub bytes: &'a [u8],
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
    pub fn new(bytes: &'a [u8]) -> Self {
        assert_eq!(&bytes[..4], b"\x7fELF");
        assert_eq!(bytes[4], 2, "ELFCLASS64");
        assert_eq!(bytes[5], 1, "little endian");
        assert_eq!(u16_at(bytes, 16), 4, "ET_CORE");
        assert_eq!(u16_at(bytes, 18), 62, "EM_X86_64");
        Core { bytes }
    }

    pub fn phdrs(&self) -> Vec<Phdr> {
        let phoff = u64_at(self.bytes, 32) as usize;
        let phentsize = u16_at(self.bytes, 54) as usize;
        let phnum = u16_at(self.bytes, 56) as usize;
        (0..phnum)
            .map(|i| {
                let p = phoff + i * phentsize;
                Phdr {
                    p_type: u32_at(self.bytes, p),
                    flags: u32_at(self.bytes, p + 4),
                    offset: u64_at(self.bytes, p + 8),
                    vaddr: u64_at(self.bytes, p + 16),
                    paddr: u64_at(self.bytes, p + 24),
                    filesz: u64_at(self.bytes, p + 32),
                    memsz: u64_at(self.bytes, p + 40),
                }
            })
            .collect()
    }

    pub fn notes(&self) -> Vec<Note<'a>> {
        let mut notes = Vec::new();
        for ph in self.phdrs().into_iter().filter(|p| p.p_type == 4) {
            let seg = &self.bytes[ph.offset as usize..(ph.offset + ph.filesz) as usize];
            let mut at = 0;
            while at < seg.len() {
                let namesz = u32_at(seg, at) as usize;
                let descsz = u32_at(seg, at + 4) as usize;
                let note_type = u32_at(seg, at + 8);
                let name_at = at + 12;
                let desc_at = name_at + namesz.next_multiple_of(4);
                notes.push(Note {
                    name: &seg[name_at..name_at + namesz - 1],
                    note_type,
                    desc: &seg[desc_at..desc_at + descsz],
                });
                at = desc_at + descsz.next_multiple_of(4);
            }
        }
        notes
    }

    /// The `len` bytes at virtual address `vaddr`, from the PT_LOAD holding them.
    pub fn read_virt(&self, vaddr: u64, len: usize) -> &'a [u8] {
        let ph = self
            .phdrs()
            .into_iter()
            .find(|p| p.p_type == 1 && vaddr >= p.vaddr && vaddr + len as u64 <= p.vaddr + p.filesz)
            .expect("address in a PT_LOAD");
        let at = (ph.offset + vaddr - ph.vaddr) as usize;
        &self.bytes[at..at + len]
    }
}

/// `pr_reg[i]` of a PRSTATUS descriptor.
pub fn pr_reg(desc: &[u8], i: usize) -> u64 {
    u64_at(desc, 112 + i * 8)
}

pub fn pr_pid(desc: &[u8]) -> u32 {
    u32_at(desc, 32)
}

impl<'a> Core<'a> {
    /// The `len` bytes at physical address `paddr`, from the PT_LOAD holding them.
    pub fn read_phys(&self, paddr: u64, len: usize) -> &'a [u8] {
        let ph = self
            .phdrs()
            .into_iter()
            .find(|p| p.p_type == 1 && paddr >= p.paddr && paddr + len as u64 <= p.paddr + p.filesz)
            .expect("address in a PT_LOAD");
        let at = (ph.offset + paddr - ph.paddr) as usize;
        &self.bytes[at..at + len]
    }
}
