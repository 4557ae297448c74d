//! Reads the vmcore netdumpd wrote: ELF64 `ET_CORE` program headers, `NT_PRSTATUS`
//! notes, and bytes by physical address. Independent of netdumpd's writer on purpose:
//! the harness checks the file as gdb would see it.

use anyhow::{bail, ensure, Context, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const PT_LOAD: u32 = 1;
pub const PT_NOTE: u32 = 4;
pub const NT_PRSTATUS: u32 = 1;

#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub kind: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

#[derive(Debug, Clone)]
pub struct Note {
    pub name: String,
    pub kind: u32,
    pub desc: Vec<u8>,
}

pub struct Vmcore {
    file: File,
    pub segments: Vec<Segment>,
    pub notes: Vec<Note>,
}

fn u16le(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32le(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64le(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

impl Vmcore {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
        let mut eh = [0u8; 64];
        file.read_exact_at(&mut eh, 0).context("ELF header")?;
        ensure!(&eh[..4] == b"\x7fELF", "not an ELF file");
        ensure!(eh[4] == 2 && eh[5] == 1, "not ELF64 little-endian");
        ensure!(u16le(&eh, 16) == 4, "e_type is not ET_CORE");
        ensure!(u16le(&eh, 18) == 62, "e_machine is not x86_64");
        let phoff = u64le(&eh, 32);
        let phentsize = u16le(&eh, 54) as usize;
        let phnum = u16le(&eh, 56) as usize;
        ensure!(phentsize == 56, "unexpected program header size {phentsize}");
        let mut ph = vec![0u8; phnum * 56];
        file.read_exact_at(&mut ph, phoff).context("program headers")?;
        let segments: Vec<Segment> = ph
            .chunks_exact(56)
            .map(|p| Segment {
                kind: u32le(p, 0),
                offset: u64le(p, 8),
                vaddr: u64le(p, 16),
                paddr: u64le(p, 24),
                filesz: u64le(p, 32),
                memsz: u64le(p, 40),
            })
            .collect();
        let mut notes = vec![];
        for s in segments.iter().filter(|s| s.kind == PT_NOTE) {
            let mut buf = vec![0u8; s.filesz as usize];
            file.read_exact_at(&mut buf, s.offset).context("PT_NOTE")?;
            let mut o = 0;
            while o + 12 <= buf.len() {
                let namesz = u32le(&buf, o) as usize;
                let descsz = u32le(&buf, o + 4) as usize;
                let kind = u32le(&buf, o + 8);
                let name_at = o + 12;
                let desc_at = name_at + namesz.div_ceil(4) * 4;
                let end = desc_at + descsz.div_ceil(4) * 4;
                if end > buf.len() {
                    bail!("note overruns PT_NOTE");
                }
                let name = String::from_utf8_lossy(&buf[name_at..name_at + namesz]).trim_end_matches('\0').to_string();
                notes.push(Note { name, kind, desc: buf[desc_at..desc_at + descsz].to_vec() });
                o = end;
            }
        }
        Ok(Vmcore { file, segments, notes })
    }

    pub fn loads(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().filter(|s| s.kind == PT_LOAD)
    }

    /// Reads `out.len()` bytes at physical address `phys` (which must lie in one PT_LOAD).
    pub fn read_phys(&self, phys: u64, out: &mut [u8]) -> Result<()> {
        let seg = self
            .loads()
            .find(|s| phys >= s.paddr && phys + out.len() as u64 <= s.paddr + s.filesz)
            .with_context(|| format!("no PT_LOAD holds {phys:#x}+{:#x}", out.len()))?;
        self.file.read_exact_at(out, seg.offset + (phys - seg.paddr)).context("read PT_LOAD")
    }

    /// `pr_reg` of the `NT_PRSTATUS` notes, as (name, value) in `user_regs_struct` order.
    pub fn prstatus_registers(&self) -> Vec<[u64; 27]> {
        self.notes
            .iter()
            .filter(|n| n.kind == NT_PRSTATUS && n.name == "CORE" && n.desc.len() >= 112 + 27 * 8)
            .map(|n| {
                let mut r = [0u64; 27];
                for (i, v) in r.iter_mut().enumerate() {
                    *v = u64le(&n.desc, 112 + i * 8);
                }
                r
            })
            .collect()
    }
}

/// Index of `rip` in `pr_reg` (x86_64 `user_regs_struct`).
pub const PR_REG_RIP: usize = 16;
/// Index of `rsp` in `pr_reg`.
pub const PR_REG_RSP: usize = 19;
