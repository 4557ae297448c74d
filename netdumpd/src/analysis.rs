//! Analysis on arrival: where the admin configured the kernel ELF a client runs (per
//! client, or one for all), netdumpd asks gdb in batch mode for the crashing backtrace
//! and writes it to `analysis.txt` in the dump directory; the `finished` hook gets its
//! path to notify people with it.
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
    pub gdb: PathBuf,
    pub timeout: Duration,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            kernel: None,
            kernels: BTreeMap::new(),
            gdb: PathBuf::from("gdb"),
            timeout: Duration::from_secs(120),
        }
    }
}

impl AnalysisConfig {
    pub fn kernel_for(&self, client: &str) -> Option<&Path> {
        self.kernels.get(client).or(self.kernel.as_ref()).map(PathBuf::as_path)
    }

    pub fn enabled(&self) -> bool {
        self.kernel.is_some() || !self.kernels.is_empty()
    }
}

/// Analyses the dump in `dir` (of `client`) when a kernel is configured for it; returns
/// the path of `analysis.txt`, or `None` when there is nothing to analyse with.
pub fn analyse(dir: &Path, client: &str, config: &AnalysisConfig) -> Option<PathBuf> {
    let kernel = config.kernel_for(client)?;
    let text = analysis_text(dir, kernel, config);
    let path = dir.join(ANALYSIS);
    match std::fs::write(&path, text) {
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

/// The `rip` of the first (crashing) CPU in a `registers` file.
pub fn crashing_rip(registers: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(registers).ok()?;
    text.lines().find_map(|l| {
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
        assert_eq!(c.kernel_for("a"), None);
        c.kernel = Some("/k/default".into());
        c.kernels.insert("a".into(), "/k/a".into());
        assert!(c.enabled());
        assert_eq!(c.kernel_for("a"), Some(Path::new("/k/a")));
        assert_eq!(c.kernel_for("b"), Some(Path::new("/k/default")));
    }

    #[test]
    fn the_crashing_rip_is_read_from_the_registers_file() {
        let dir = TestDir::new("analysis-rip");
        let f = dir.path().join(REGISTERS);
        std::fs::write(&f, "cpu 1 (crashing)\n  rax 0x1\n  rip 0xffffffff80200001\ncpu 0\n  rip 0x5\n").unwrap();
        assert_eq!(crashing_rip(&f), Some(0xffff_ffff_8020_0001));
        assert_eq!(crashing_rip(&dir.path().join("none")), None);
    }

    #[test]
    fn no_kernel_configured_means_no_analysis() {
        let dir = TestDir::new("analysis-none");
        assert_eq!(analyse(dir.path(), "a", &AnalysisConfig::default()), None);
        assert!(!dir.path().join(ANALYSIS).exists());
    }
}
