//! The kernel's extra state, sent after the memory image (the EXTRA section), like the
//! original netdump's SysRq-t task list. The test kernel has no tasks, so it lists
//! made-up ones derived from the run's seed: enough text to need several of the
//! client's 4 KiB windows, with numbered lines and a closing count so the harness can
//! tell that it arrived whole and in order.

use core::fmt::{Result, Write};

/// Lines of the list.
pub const TASKS: u32 = 300;

/// Seed of the run, for the task states (set before the crash).
static SEED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

pub fn set_seed(seed: u64) {
    SEED.store(seed, core::sync::atomic::Ordering::Relaxed);
}

/// The callback given to `Netdump::set_extra_state`. Writes the same text every time.
pub fn write_task_list(out: &mut dyn Write) -> Result {
    let seed = SEED.load(core::sync::atomic::Ordering::Relaxed);
    writeln!(out, "netdump test kernel: task list at the crash (seed {seed:#x})")?;
    for pid in 1..=TASKS {
        let state = match (u64::from(pid) ^ seed) % 3 {
            0 => "R running",
            1 => "S sleeping",
            _ => "D disk wait",
        };
        writeln!(
            out,
            "task {pid:4} {state:<12} cpu 0 wchan {:#010x}",
            u64::from(pid).wrapping_mul(0x9e37_79b9) & 0xffff_ffff
        )?;
    }
    writeln!(out, "{TASKS} tasks")
}
