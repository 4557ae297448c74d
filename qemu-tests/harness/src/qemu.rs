//! Boots a test kernel in QEMU (TCG, q35, PVH `-kernel`) under a timeout.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A NIC configuration a scenario can run on: one line of `qemu-tests/nics/src/table.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NicModel {
    name: &'static str,
    /// The QEMU machine (`q35`, or `microvm` for a NIC without PCI).
    machine: &'static str,
    /// QEMU arguments that add the NIC on netdev `n0`, split at spaces; `romfile=` skips
    /// the iPXE option ROM (faster boot).
    args: &'static str,
}

/// Builds [`NICS`] and a `NicModel::<Variant>` constant per line of the NIC table (the
/// driver column is the test kernels').
macro_rules! nic_table {
    ($($variant:ident = $port:ty : $name:literal, $machine:ident, $device:literal;)*) => {
        /// Every NIC configuration, in the table's order.
        pub const NICS: &[NicModel] = &[$(NicModel::$variant),*];

        #[allow(non_upper_case_globals)]
        impl NicModel {
            $(
                #[doc = concat!("The `", $name, "` configuration.")]
                pub const $variant: NicModel =
                    NicModel { name: $name, machine: stringify!($machine), args: $device };
            )*
        }
    };
}

include!("../../nics/src/table.rs");

impl NicModel {
    pub fn name(self) -> &'static str {
        self.name
    }
    /// The configuration's place in the NIC table (a seed varies with it).
    pub fn index(self) -> usize {
        NICS.iter().position(|n| *n == self).unwrap_or(NICS.len())
    }
    /// The QEMU machine type.
    pub fn machine(self) -> &'static str {
        self.machine
    }
    fn args(self) -> impl Iterator<Item = &'static str> {
        self.args.split_whitespace()
    }
}

pub struct QemuRun<'a> {
    pub kernel: &'a Path,
    pub memory_mib: u32,
    /// CPUs (`-smp`); 1 for the single-CPU scenarios.
    pub cpus: u32,
    pub append: String,
    pub nic: NicModel,
    pub serial_log: PathBuf,
    pub timeout: Duration,
    /// Where QEMU writes every frame of the guest's NIC (`filter-dump`, pcap), if anywhere.
    pub capture: Option<PathBuf>,
}

pub struct QemuOutcome {
    /// The code the kernel wrote to isa-debug-exit, when it exited that way.
    pub exit_code: Option<u32>,
    pub timed_out: bool,
    pub serial: String,
    pub elapsed: Duration,
}

impl QemuRun<'_> {
    pub fn command(&self) -> Command {
        let mut c = Command::new("qemu-system-x86_64");
        c.args(["-machine", self.nic.machine(), "-nodefaults", "-no-reboot", "-display", "none", "-monitor", "none"])
            .args(["-cpu", "max", "-m", &format!("{}M", self.memory_mib)])
            .args(["-smp", &self.cpus.max(1).to_string()])
            // One host thread per guest CPU, so that CPUs of an SMP guest really run
            // at once (two panics at the same moment, a CPU spinning beside the dump).
            .args(["-accel", "tcg,thread=multi"])
            .arg("-serial")
            .arg(format!("file:{}", self.serial_log.display()))
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
            .args(["-netdev", "user,id=n0"])
            .args(self.nic.args());
        if let Some(pcap) = &self.capture {
            c.arg("-object").arg(format!("filter-dump,id=f0,netdev=n0,file={}", pcap.display()));
        }
        c.arg("-kernel").arg(self.kernel).args(["-append", &self.append]);
        c
    }

    pub fn run(&self) -> Result<QemuOutcome> {
        let started = Instant::now();
        // QEMU's complaints go to a file beside the serial log: a pipe nobody reads would
        // block QEMU once 64 KiB of them piled up (slirp logs every frame a NIC without a
        // free receive buffer refuses).
        let stderr = std::fs::File::create(self.serial_log.with_extension("qemu-stderr.log"))
            .context("create QEMU's stderr log")?;
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("start qemu-system-x86_64")?;
        let mut timed_out = false;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break Some(s);
            }
            if started.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                timed_out = true;
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let serial = std::fs::read_to_string(&self.serial_log).unwrap_or_default();
        // isa-debug-exit: QEMU exits with (code << 1) | 1. A triple fault exits 0.
        let exit_code = status.and_then(|s| s.code()).filter(|c| c & 1 == 1 && *c > 1).map(|c| (c as u32) >> 1);
        Ok(QemuOutcome { exit_code, timed_out, serial, elapsed: started.elapsed() })
    }
}
