//! Analysis on arrival: where the admin configured the kernel ELF a client runs (per
//! client; else a directory of builds, the one whose GNU build ID the vmcore holds at
//! the note's load address; else one for all), netdumpd asks gdb in batch mode for the
//! crashing backtrace and writes it to `analysis.txt` in the dump directory; the
//! `finished` hook gets its path to notify people with it.
//!
//! With a vmcore, gdb reads the registers and the stack from it (`bt`). Without one (the
//! memory image was skipped) the crashing CPU's `rip` from the `registers` file is looked
//! up in the kernel's symbols (`info symbol`, `info line`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::dumpdir::{INFO, LOG, REGISTERS, VMCORE};
use crate::hooks::{BoundedCommand, ProcessEnd};

pub const ANALYSIS: &str = "analysis.txt";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalysisConfig {
    /// The kernel ELF of every client without an entry in `kernels`.
    pub kernel: Option<PathBuf>,
    /// Kernel ELF per client name.
    pub kernels: BTreeMap<String, PathBuf>,
    /// A directory of kernel builds (ELF files, also one directory down): the one whose
    /// build ID is in the vmcore is used.
    pub builds: Option<PathBuf>,
    pub gdb: PathBuf,
    pub timeout: Duration,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            kernel: None,
            kernels: BTreeMap::new(),
            builds: None,
            gdb: PathBuf::from("gdb"),
            timeout: Duration::from_secs(120),
        }
    }
}

impl AnalysisConfig {
    pub fn enabled(&self) -> bool {
        self.kernel.is_some() || !self.kernels.is_empty() || self.builds.is_some()
    }

    /// The kernel for a dump: the client's own, else the build whose ID the vmcore
    /// holds, else the default.
    pub fn kernel_for_dump(&self, client: &str, dir: &Path) -> Option<PathBuf> {
        if let Some(k) = self.kernels.get(client) {
            return Some(k.clone());
        }
        if let Some(builds) = &self.builds
            && let Some(k) = build_matching(builds, &dir.join(VMCORE))
        {
            return Some(k);
        }
        self.kernel.clone()
    }
}

/// The ELF under `builds` (or one directory down) whose GNU build ID `vmcore` holds.
pub fn build_matching(builds: &Path, vmcore: &Path) -> Option<PathBuf> {
    let core = elf::Core::open(vmcore)?;
    let mut candidates = Vec::new();
    for e in std::fs::read_dir(builds).ok()?.flatten() {
        let path = e.path();
        if path.is_dir() {
            candidates.extend(std::fs::read_dir(&path).into_iter().flatten().flatten().map(|e| e.path()));
        } else {
            candidates.push(path);
        }
    }
    candidates.sort();
    candidates.into_iter().filter(|p| p.is_file()).find(|p| {
        let Ok(bytes) = std::fs::read(p) else { return false };
        let Some((paddr, id)) = elf::build_id(&bytes) else { return false };
        core.read_phys(paddr, id.len()).is_some_and(|in_core| in_core == id)
    })
}

/// What build-ID matching needs of ELF64 little-endian files, read with `object`: the
/// kernel's GNU build-ID note, and the vmcore's memory by physical address (the vmcore
/// is read through a cache of the parts asked for, not whole).
mod elf {
    use std::fs::File;
    use std::path::Path;

    use object::LittleEndian as LE;
    use object::elf::{ELF_NOTE_GNU, FileHeader64, NT_GNU_BUILD_ID, PT_LOAD, ProgramHeader64};
    use object::read::elf::{FileHeader, ProgramHeader};
    use object::read::{ReadCache, ReadRef};

    /// More program headers than this is not a file netdumpd wrote, nor a kernel.
    const MAX_PHNUM: u32 = 4096;

    /// The program headers of an ELF64 little-endian file.
    fn program_headers<'data, R: ReadRef<'data>>(data: R) -> Option<&'data [ProgramHeader64<LE>]> {
        let header = FileHeader64::<LE>::parse(data).ok()?;
        if header.phnum(LE, data).ok()? > MAX_PHNUM {
            return None;
        }
        header.program_headers(LE, data).ok()
    }

    /// The GNU build ID of an ELF file, and the physical address it is loaded at.
    pub fn build_id(elf: &[u8]) -> Option<(u64, Vec<u8>)> {
        for s in program_headers(elf)? {
            let Ok(Some(mut notes)) = s.notes(LE, elf) else { continue };
            let segment = s.data(LE, elf).ok()?;
            while let Ok(Some(note)) = notes.next() {
                if note.n_type(LE) == NT_GNU_BUILD_ID && note.name() == ELF_NOTE_GNU {
                    let at = note.desc().as_ptr() as u64 - segment.as_ptr() as u64;
                    return Some((s.p_paddr(LE) + at, note.desc().to_vec()));
                }
            }
        }
        None
    }

    /// A core file: its PT_LOAD segments, and the file to read memory from.
    pub struct Core {
        loads: Vec<ProgramHeader64<LE>>,
        file: ReadCache<File>,
    }

    impl Core {
        pub fn open(path: &Path) -> Option<Core> {
            let file = ReadCache::new(File::open(path).ok()?);
            let loads = program_headers(&file)?.iter().filter(|p| p.p_type(LE) == PT_LOAD).copied().collect();
            Some(Core { loads, file })
        }

        /// `len` bytes at physical address `paddr`, when one segment holds them.
        pub fn read_phys(&self, paddr: u64, len: usize) -> Option<&[u8]> {
            let s = self
                .loads
                .iter()
                .find(|s| paddr >= s.p_paddr(LE) && paddr + len as u64 <= s.p_paddr(LE) + s.p_filesz(LE))?;
            self.file.read_bytes_at(s.p_offset(LE) + (paddr - s.p_paddr(LE)), len as u64).ok()
        }
    }
}

/// Analyses the dump in `dir` (of `client`) when a kernel is configured for it; returns
/// the path of `analysis.txt`, or `None` when there is nothing to analyse with.
pub fn analyse(dir: &Path, client: &str, config: &AnalysisConfig) -> Option<PathBuf> {
    let kernel = config.kernel_for_dump(client, dir)?;
    let text = analysis_text(dir, &kernel, config);
    let path = dir.join(ANALYSIS);
    match crate::files::write_private(&path, text.as_bytes()) {
        Ok(()) => Some(path),
        Err(e) => {
            tracing::error!(dump = %dir.display(), "cannot write {ANALYSIS}: {e}");
            None
        }
    }
}

fn analysis_text(dir: &Path, kernel: &Path, config: &AnalysisConfig) -> String {
    let info: serde_json::Value =
        std::fs::read(dir.join(INFO)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let field = |p: &str| info.pointer(p).and_then(|v| v.as_str()).unwrap_or("?").to_string();
    let mut t = String::new();
    let _ = writeln!(t, "netdump analysis of {}", dir.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
    let _ = writeln!(t, "client:  {}", field("/client/name"));
    let mut reason = field("/reason/kind");
    if let Some(v) = info.pointer("/reason/vector_name").and_then(|v| v.as_str()) {
        let _ = write!(
            reason,
            " {v} (error code {}, address {})",
            field("/reason/error_code"),
            field("/reason/fault_address")
        );
    }
    let _ = writeln!(t, "reason:  {reason}");
    let _ = writeln!(t, "message: {}", field("/message"));
    let _ = writeln!(t, "status:  {}", field("/status"));
    let _ = writeln!(t, "kernel:  {}", kernel.display());
    let vmcore = dir.join(VMCORE);
    let (what, args): (&str, Vec<String>) = if vmcore.exists() {
        let args = ["-ex", "bt", "-ex", "info registers rip rsp rbp"].map(String::from).into_iter();
        ("backtrace", args.chain([kernel.display().to_string(), vmcore.display().to_string()]).collect())
    } else if let Some(rip) = crashing_rip(&dir.join(REGISTERS)) {
        let a = [format!("info symbol {rip:#x}"), format!("info line *{rip:#x}")];
        let args = a.into_iter().flat_map(|c| ["-ex".to_string(), c]).chain([kernel.display().to_string()]);
        ("crashing instruction (no memory image: no stack to unwind)", args.collect())
    } else {
        let _ = writeln!(t, "\nno vmcore and no registers: nothing to symbolize");
        return t;
    };
    let mut full = vec!["-nx".to_string(), "-batch".to_string()];
    full.extend(args);
    let out = BoundedCommand { program: config.gdb.clone(), args: full, env: vec![], timeout: config.timeout }.run();
    let _ = writeln!(t, "\n{what} (gdb):");
    t.push_str(out.stdout.trim_end());
    t.push('\n');
    if !out.stderr.trim().is_empty() {
        let _ = writeln!(t, "\ngdb said:\n{}", out.stderr.trim_end());
    }
    if out.end != ProcessEnd::Exited(0) {
        let _ = writeln!(t, "\ngdb {}", out.end);
    }
    if let Ok(log) = std::fs::read(dir.join(LOG)) {
        let log = String::from_utf8_lossy(&log);
        let lines: Vec<&str> = log.lines().collect();
        let _ = writeln!(t, "\nlast console lines:");
        for l in &lines[lines.len().saturating_sub(10)..] {
            let _ = writeln!(t, "  {l}");
        }
    }
    t
}

/// The `rip` of the first (crashing) CPU in a `registers` file; `None` when that CPU has
/// no registers (another CPU's `rip` is not the crash site).
pub fn crashing_rip(registers: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(registers).ok()?;
    let mut lines = text.lines();
    lines.next().filter(|l| l.starts_with("cpu "))?;
    lines.take_while(|l| !l.starts_with("cpu ")).find_map(|l| {
        let v = l.trim().strip_prefix("rip")?.trim();
        u64::from_str_radix(v.strip_prefix("0x")?, 16).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    #[test]
    fn the_kernel_is_chosen_per_client_then_the_default() {
        let mut c = AnalysisConfig::default();
        assert!(!c.enabled());
        let nowhere = Path::new("/nonexistent");
        assert_eq!(c.kernel_for_dump("a", nowhere), None);
        c.kernel = Some("/k/default".into());
        c.kernels.insert("a".into(), "/k/a".into());
        assert!(c.enabled());
        assert_eq!(c.kernel_for_dump("a", nowhere).as_deref(), Some(Path::new("/k/a")));
        assert_eq!(c.kernel_for_dump("b", nowhere).as_deref(), Some(Path::new("/k/default")));
    }

    /// A tiny ELF: a PT_NOTE with a GNU build ID loaded at physical `paddr` (ET_EXEC),
    /// or a core with one PT_LOAD of `memory` at physical `paddr` (ET_CORE).
    fn elf(notes_at: Option<(u64, &[u8])>, load: Option<(u64, &[u8])>) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        let (kind, paddr, body) = match (notes_at, load) {
            (Some((paddr, id)), _) => {
                let mut n = Vec::new();
                n.extend(4u32.to_le_bytes());
                n.extend((id.len() as u32).to_le_bytes());
                n.extend(3u32.to_le_bytes());
                n.extend(b"GNU\0");
                n.extend(id);
                (4u32, paddr, n)
            }
            (None, Some((paddr, memory))) => (1u32, paddr, memory.to_vec()),
            _ => unreachable!(),
        };
        let p = 64;
        b[p..p + 4].copy_from_slice(&kind.to_le_bytes());
        b[p + 8..p + 16].copy_from_slice(&120u64.to_le_bytes());
        b[p + 24..p + 32].copy_from_slice(&paddr.to_le_bytes());
        b[p + 32..p + 40].copy_from_slice(&(body.len() as u64).to_le_bytes());
        b.extend(body);
        b
    }

    #[test]
    fn the_build_whose_id_the_vmcore_holds_is_chosen() {
        let dir = TestDir::new("analysis-builds");
        let builds = dir.path().join("builds");
        std::fs::create_dir_all(builds.join("v2")).unwrap();
        let (id1, id2) = ([1u8; 20], [2u8; 20]);
        std::fs::write(builds.join("v1.elf"), elf(Some((0x100010, &id1)), None)).unwrap();
        std::fs::write(builds.join("v2").join("kernel.elf"), elf(Some((0x100010, &id2)), None)).unwrap();
        std::fs::write(builds.join("notes.txt"), b"not an ELF").unwrap();
        // The memory of a kernel of build 2: its note at 0x100010, so the ID at 0x100020.
        let mut memory = vec![0u8; 64];
        memory[32..52].copy_from_slice(&id2);
        let dump = dir.path().join("dump");
        std::fs::create_dir_all(&dump).unwrap();
        std::fs::write(dump.join(VMCORE), elf(None, Some((0x100000, &memory)))).unwrap();
        let c =
            AnalysisConfig { builds: Some(builds.clone()), kernel: Some("/k/default".into()), ..Default::default() };
        assert_eq!(c.kernel_for_dump("any", &dump), Some(builds.join("v2").join("kernel.elf")));
        // A vmcore of another build falls back to the default kernel.
        memory[32..52].copy_from_slice(&[3u8; 20]);
        std::fs::write(dump.join(VMCORE), elf(None, Some((0x100000, &memory)))).unwrap();
        assert_eq!(c.kernel_for_dump("any", &dump), Some(PathBuf::from("/k/default")));
    }

    #[test]
    fn the_crashing_rip_is_read_from_the_registers_file() {
        let dir = TestDir::new("analysis-rip");
        let f = dir.path().join(REGISTERS);
        std::fs::write(&f, "cpu 1 (crashing)\n  rax 0x1\n  rip 0xffffffff80200001\ncpu 0\n  rip 0x5\n").unwrap();
        assert_eq!(crashing_rip(&f), Some(0xffff_ffff_8020_0001));
        std::fs::write(&f, "cpu 1 (apic 1, stopped)\n  rax 0x1\n  rip 0xffffffff80200001\n").unwrap();
        assert_eq!(crashing_rip(&f), Some(0xffff_ffff_8020_0001));
        assert_eq!(crashing_rip(&dir.path().join("none")), None);
    }

    #[test]
    fn a_crashing_cpu_without_registers_has_no_rip_not_another_cpus() {
        let dir = TestDir::new("analysis-rip-absent");
        let f = dir.path().join(REGISTERS);
        std::fs::write(
            &f,
            "cpu 1 (apic 1, crashing): no registers (not_received)\ncpu 0 (apic 0, stopped)\n  rip 0x5\n",
        )
        .unwrap();
        assert_eq!(crashing_rip(&f), None);
    }

    #[test]
    fn no_kernel_configured_means_no_analysis() {
        let dir = TestDir::new("analysis-none");
        assert_eq!(analyse(dir.path(), "a", &AnalysisConfig::default()), None);
        assert!(!dir.path().join(ANALYSIS).exists());
    }
}
