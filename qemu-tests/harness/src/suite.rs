//! The scenario runner: a scenario is a name, a NIC and a function that boots what it
//! needs and checks what arrived. Groups of scenarios live in [`crate::scenarios`].

use crate::qemu::NicModel;
use anyhow::Result;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Where the built artefacts are.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub test_kernel: PathBuf,
    pub conformance_kernel: PathBuf,
    pub netdumpd: PathBuf,
    /// Scratch space for this run (dump directories, serial logs).
    pub work_dir: PathBuf,
}

/// What a scenario's function gets.
pub struct Ctx<'a> {
    pub id: String,
    pub nic: NicModel,
    pub artifacts: &'a Artifacts,
    /// This scenario's own scratch directory (emptied before the run).
    pub dir: PathBuf,
}

type RunFn = dyn Fn(&Ctx) -> Result<Outcome> + Send + Sync;

pub struct Scenario {
    pub name: &'static str,
    pub nic: NicModel,
    /// Part of the default suite (CI); others run with `--all` or a matching filter.
    pub default: bool,
    pub run: Box<RunFn>,
}

impl Scenario {
    pub fn new(
        name: &'static str,
        nic: NicModel,
        run: impl Fn(&Ctx) -> Result<Outcome> + Send + Sync + 'static,
    ) -> Self {
        Scenario { name, nic, default: true, run: Box::new(run) }
    }
    /// Leaves the scenario out of the default suite (long ones).
    pub fn optional(mut self) -> Self {
        self.default = false;
        self
    }
    pub fn id(&self) -> String {
        format!("{}-{}", self.name, self.nic.name())
    }
}

/// What a passing scenario measured, for the summary line.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub detail: String,
    pub bytes: u64,
    pub seconds: f64,
}

/// What happens to a scenario's directory once it has run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepDirs {
    /// Only a failed scenario's directory stays (vmcores, logs, serial output): the whole
    /// suite's would take over a gigabyte of disk.
    Failed,
    /// Every scenario's directory stays.
    All,
}

/// Runs scenarios on `jobs` threads; prints a line per scenario; returns the failures,
/// each with where its files were kept.
pub fn run_all(scenarios: &[Scenario], a: &Artifacts, jobs: usize, keep: KeepDirs) -> Vec<(String, String)> {
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(vec![]);
    println!("{:<28} {:>10} {:>8} {:>9}  result", "scenario", "dumped", "time", "MB/s");
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(s) = scenarios.get(i) else { break };
                    let started = Instant::now();
                    let dir = a.work_dir.join(s.id());
                    let _ = std::fs::remove_dir_all(&dir);
                    let ctx = Ctx { id: s.id(), nic: s.nic, artifacts: a, dir: dir.clone() };
                    let result = std::fs::create_dir_all(&dir).map_err(anyhow::Error::from).and_then(|_| (s.run)(&ctx));
                    match result {
                        Ok(o) => {
                            let secs = if o.seconds > 0.0 { o.seconds } else { started.elapsed().as_secs_f64() };
                            let mbs = if o.bytes > 0 && o.seconds > 0.0 {
                                format!("{:.1}", o.bytes as f64 / o.seconds / 1e6)
                            } else {
                                "-".into()
                            };
                            let dumped = if o.bytes > 0 {
                                format!("{:.1} MiB", o.bytes as f64 / (1 << 20) as f64)
                            } else {
                                "-".into()
                            };
                            println!("{:<28} {:>10} {:>7.1}s {:>9}  PASS  {}", s.id(), dumped, secs, mbs, o.detail);
                            if keep == KeepDirs::Failed {
                                let _ = std::fs::remove_dir_all(&dir);
                            }
                        }
                        Err(e) => {
                            println!(
                                "{:<28} {:>10} {:>7.1}s {:>9}  FAIL",
                                s.id(),
                                "-",
                                started.elapsed().as_secs_f64(),
                                "-"
                            );
                            let why = format!("{e:#}\n(its files: {})", dir.display());
                            failures.lock().unwrap().push((s.id(), why));
                        }
                    }
                }
            });
        }
    });
    failures.into_inner().unwrap()
}
