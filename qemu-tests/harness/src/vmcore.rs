//! Reads the vmcore netdumpd wrote: ELF64 `ET_CORE` program headers, `NT_PRSTATUS`
//! notes, and bytes by physical address. The ELF structure is parsed by the `object`
//! crate, a maintained reader independent of netdumpd's writer on purpose: the harness
//! checks the file as another tool sees it. Only the headers and the notes are read when
//! the file is opened; memory is read on demand.

use anyhow::{Context, Result, ensure};
use object::LittleEndian as LE;
use object::elf::{EM_X86_64, ET_CORE, FileHeader64};
use object::read::ReadCache;
use object::read::elf::{FileHeader, ProgramHeader};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const PT_LOAD: u32 = object::elf::PT_LOAD.0;
pub const PT_NOTE: u32 = object::elf::PT_NOTE.0;
pub const NT_PRSTATUS: u32 = object::elf::NT_PRSTATUS.0;

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

/// Offset of `pr_reg` in the x86_64 `struct elf_prstatus`.
const PR_REG_OFFSET: usize = 112;

impl Vmcore {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
        // Reads through `object` see only what they ask for, cached.
        let cache = ReadCache::new(&file);
        let data = &cache;
        let header = FileHeader64::<LE>::parse(data).context("not an ELF64 little-endian file")?;
        ensure!(header.e_type(LE) == ET_CORE, "e_type is not ET_CORE");
        ensure!(header.e_machine(LE) == EM_X86_64, "e_machine is not x86_64");
        let headers = header.program_headers(LE, data).context("program headers")?;
        let segments = headers
            .iter()
            .map(|p| Segment {
                kind: p.p_type(LE).0,
                offset: p.p_offset(LE),
                vaddr: p.p_vaddr(LE),
                paddr: p.p_paddr(LE),
                filesz: p.p_filesz(LE),
                memsz: p.p_memsz(LE),
            })
            .collect();
        let mut notes = vec![];
        for p in headers {
            let Some(mut it) = p.notes(LE, data).context("PT_NOTE")? else {
                continue;
            };
            while let Some(n) = it.next().context("note in PT_NOTE")? {
                notes.push(Note {
                    name: String::from_utf8_lossy(n.name()).into_owned(),
                    kind: n.n_type(LE).0,
                    desc: n.desc().to_vec(),
                });
            }
        }
        drop(cache);
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
            .filter(|n| n.kind == NT_PRSTATUS && n.name == "CORE" && n.desc.len() >= PR_REG_OFFSET + 27 * 8)
            .map(|n| {
                let mut r = [0u64; 27];
                for (i, v) in r.iter_mut().enumerate() {
                    let at = PR_REG_OFFSET + i * 8;
                    *v = u64::from_le_bytes(n.desc[at..at + 8].try_into().unwrap());
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
