//! Every CPU stopped and in the dump (issue 13): a 4-CPU guest (`-smp 4`) whose
//! application processors each run a loop of their own with planted registers, counting
//! in memory, while one or two CPUs crash. Each scenario is checked on the host through
//! gdb (one thread per CPU, the crashing one first; each CPU's function at the top of its
//! backtrace, its planted registers, its own stack) and the pattern, and each looping
//! CPU's counter in the vmcore must be the value that CPU last wrote before it stopped
//! (memory was read only after every CPU stopped). `info.json` names each CPU's state.
//!
//! - `smp-bsp-panic`: kernel NMIs reach every AP first and return (netdump's "not mine"
//!   path), then the boot CPU panics;
//! - `smp-ap-panic`: AP 2 panics, the boot CPU is stopped in its own wait loop; the stop
//!   NMIs go one per CPU (`stop_target=each`);
//! - `smp-double-panic`: APs 1 and 2 panic at once: one dump, both messages;
//! - `smp-missing-cpu`: AP 3 sits inside an NMI (NMIs blocked) and cannot answer: the
//!   dump goes on after the bound and names it.

use super::common::{self, KernelRun, exit, expect_exit, with_server_log};
use crate::gdb;
use crate::qemu::NicModel;
use crate::suite::{Ctx, Outcome, Scenario};
use crate::vmcore::Vmcore;
use anyhow::{Context, Result, ensure};

const CPUS: usize = 4;
/// How long the crashing CPU waits for the others in these scenarios (`stop_ms=`).
const STOP_MS: u64 = 500;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    BspPanic,
    ApPanic,
    DoublePanic,
    MissingCpu,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::BspPanic => "smp-bsp-panic",
            Case::ApPanic => "smp-ap-panic",
            Case::DoublePanic => "smp-double-panic",
            Case::MissingCpu => "smp-missing-cpu",
        }
    }
    fn kernel_case(self) -> &'static str {
        self.name().trim_start_matches("smp-")
    }
    fn seed(self) -> u64 {
        match self {
            Case::BspPanic => 0x5b5b_0001,
            Case::ApPanic => 0x5b5b_0002,
            Case::DoublePanic => 0x5b5b_0003,
            Case::MissingCpu => 0x5b5b_0004,
        }
    }
}

pub fn scenarios(nic: NicModel) -> Vec<Scenario> {
    [Case::BspPanic, Case::ApPanic, Case::DoublePanic, Case::MissingCpu]
        .into_iter()
        .map(|c| Scenario::new(c.name(), nic, move |ctx| run(ctx, c)))
        .collect()
}

/// The values the test kernel plants in rbx and r12–r15 of CPU `cpu`'s loop
/// (`smp::planted` in the kernel).
fn planted(seed: u64, cpu: usize) -> [(&'static str, u64); 5] {
    let v = |tag: u64| tag << 48 | (seed & 0xffff_ffff) << 8 | cpu as u64;
    [("rbx", v(0xb0b0)), ("r12", v(0x1212)), ("r13", v(0x1313)), ("r14", v(0x1414)), ("r15", v(0x1515))]
}

/// The loop CPU `cpu` runs and the tag it keeps in rcx (`smp.rs` in the kernel).
fn loop_of(cpu: usize) -> (&'static str, u64) {
    match cpu {
        0 => ("netdump_smp_bsp_wait", 0xd),
        c if c % 3 == 1 => ("netdump_smp_loop_a", 0xa),
        c if c % 3 == 2 => ("netdump_smp_loop_b", 0xb),
        _ => ("netdump_smp_loop_c", 0xc),
    }
}

/// What one gdb thread showed.
#[derive(Debug)]
struct Thread {
    cpu: usize,
    text: String,
    regs: Vec<(String, u64)>,
}

impl Thread {
    fn reg(&self, name: &str) -> Option<u64> {
        self.regs.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
    fn frame0(&self) -> &str {
        self.text.lines().find(|l| l.starts_with("#0")).unwrap_or("")
    }
}

/// Every thread of the vmcore through gdb: `info threads`, then for each thread its
/// backtrace, registers, the instruction at its pc and the word at its rsi.
fn gdb_threads(ctx: &Ctx, vmcore: &std::path::Path) -> Result<(String, Vec<Thread>)> {
    let mut commands = vec!["info threads".to_string()];
    for t in 1..=CPUS {
        commands.push(format!("thread {t}"));
        commands.push("bt 4".into());
        commands.push("info registers rax rbx rcx rsi r12 r13 r14 r15 rip rsp".into());
        commands.push("x/i $pc".into());
        commands.push("x/gx $rsi".into());
    }
    let refs: Vec<&str> = commands.iter().map(|c| c.as_str()).collect();
    let out = gdb::batch(&ctx.artifacts.test_kernel, vmcore, &refs)?;
    ensure!(!out.contains("warning:"), "gdb complains about the vmcore:\n{out}");
    let mut threads = vec![];
    for chunk in out.split("[Switching to thread ").skip(1) {
        // "2 (LWP 1)]" — gdb's pid is the CPU index + 1.
        let lwp = chunk
            .split_once("(LWP ")
            .and_then(|(_, rest)| rest.split_once(')'))
            .and_then(|(pid, _)| pid.trim().parse::<usize>().ok())
            .with_context(|| format!("no LWP in gdb's thread switch:\n{chunk}"))?;
        ensure!(lwp >= 1, "LWP 0 in gdb's output");
        threads.push(Thread { cpu: lwp - 1, text: chunk.to_string(), regs: gdb::registers(chunk) });
    }
    ensure!(threads.len() == CPUS, "gdb switched to {} threads, not {CPUS}:\n{out}", threads.len());
    Ok((out, threads))
}

/// A CPU stopped in its counting loop: its function on top, its planted registers, its
/// tag, and its counter in the vmcore equal to what it last stored — `rax`, or `rax - 1`
/// when the stop came between the increment and the store (gdb shows that store at pc).
fn check_looping_cpu(t: &Thread, seed: u64, caller: &str) -> Result<u64> {
    let (function, tag) = loop_of(t.cpu);
    ensure!(t.frame0().contains(function), "cpu {}: frame #0 is not {function}:\n{}", t.cpu, t.text);
    ensure!(t.text.contains(caller), "cpu {}: its backtrace does not reach {caller}:\n{}", t.cpu, t.text);
    for (name, want) in planted(seed, t.cpu) {
        ensure!(
            t.reg(name) == Some(want),
            "cpu {}: gdb shows {name} = {:x?}, the kernel planted {want:#x}:\n{}",
            t.cpu,
            t.reg(name),
            t.text
        );
    }
    ensure!(t.reg("rcx") == Some(tag), "cpu {}: rcx is {:x?}, its loop's tag is {tag:#x}", t.cpu, t.reg("rcx"));
    let rax = t.reg("rax").context("no rax")?;
    ensure!(rax > 0, "cpu {}: its counter never ran (rax 0)", t.cpu);
    let at_store = t.text.lines().any(|l| l.starts_with("=>") && l.contains("mov") && l.contains("%rax,(%rsi)"));
    let want = if at_store { rax - 1 } else { rax };
    let stored = t
        .text
        .lines()
        .find(|l| l.contains("<NETDUMP_SMP_COUNTERS"))
        .and_then(|l| l.rsplit_once('\t').or_else(|| l.rsplit_once(' ')))
        .and_then(|(_, v)| u64::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok())
        .with_context(|| format!("cpu {}: gdb read no counter at rsi:\n{}", t.cpu, t.text))?;
    ensure!(
        stored == want,
        "cpu {}: the vmcore's counter is {stored}, the CPU last stored {want} (rax {rax}{}): memory changed after the stop",
        t.cpu,
        if at_store { ", stopped before its store" } else { "" }
    );
    Ok(stored)
}

/// The `cpus` entry of `info.json` for CPU `cpu`: its state and whether it has registers.
fn info_cpu(info: &serde_json::Value, cpu: usize) -> Result<(String, bool)> {
    let e = info.pointer(&format!("/cpus/{cpu}")).with_context(|| format!("info.json has no cpus[{cpu}]"))?;
    ensure!(e.pointer("/index").and_then(|v| v.as_u64()) == Some(cpu as u64), "cpus[{cpu}].index is wrong: {e}");
    let state = e.pointer("/state").and_then(|v| v.as_str()).unwrap_or("").to_string();
    let regs = e.pointer("/registers").and_then(|v| v.as_bool()).context("cpus[].registers")?;
    Ok((state, regs))
}

fn run(ctx: &Ctx, case: Case) -> Result<Outcome> {
    let seed = case.seed();
    let mut run = KernelRun::new("smp", common::pattern(seed));
    run.pattern.len = 4 << 20;
    run.cpus = CPUS as u32;
    run.extra = format!("smp_case={} stop_ms={STOP_MS}", case.kernel_case());
    if case == Case::ApPanic {
        run.extra += " stop_target=each";
    }
    let srv = common::start_server(ctx, &[])?;
    let q = run.boot(ctx, srv.port)?;
    with_server_log(srv, |srv| {
        expect_exit(&q, exit::SUCCESS, "the SMP dump should verify")?;
        let dump = common::only_dump(ctx, srv)?;
        let info = common::read_info(&dump)?;
        let crashing = info.pointer("/crashing_cpu").and_then(|v| v.as_u64()).context("crashing_cpu")? as usize;
        let (message, bt_function) = match case {
            Case::BspPanic | Case::MissingCpu => {
                ensure!(crashing == 0, "crashing_cpu is {crashing}, the boot CPU panicked");
                (format!("netdump test panic (seed {seed:#x})"), "netdump_test_crash_site")
            }
            Case::ApPanic => {
                ensure!(crashing == 2, "crashing_cpu is {crashing}, AP 2 panicked");
                (format!("netdump smp panic on cpu 2 (seed {seed:#x})"), "netdump_smp_ap_crash_site")
            }
            Case::DoublePanic => {
                ensure!(crashing == 1 || crashing == 2, "crashing_cpu is {crashing}, APs 1 and 2 panicked");
                (format!("netdump smp panic on cpu {crashing} (seed {seed:#x})"), "netdump_smp_ap_crash_site")
            }
        };
        let (dump, mut outcome) = common::check_complete_dump_in(ctx, dump, &run.pattern, &message, bt_function)?;
        ensure!(info.pointer("/cpu_count").and_then(|v| v.as_u64()) == Some(CPUS as u64), "cpu_count is not {CPUS}");
        let vmcore = dump.join("vmcore");
        let prstatus = Vmcore::open(&vmcore)?.prstatus_registers();
        ensure!(prstatus.len() == CPUS, "{} NT_PRSTATUS notes, not one per CPU", prstatus.len());

        let (gdb_out, threads) = gdb_threads(ctx, &vmcore)?;
        ensure!(
            threads[0].cpu == crashing,
            "gdb's thread 1 is cpu {}, not the crashing cpu {crashing}",
            threads[0].cpu
        );
        let mut cpus_seen: Vec<usize> = threads.iter().map(|t| t.cpu).collect();
        cpus_seen.sort_unstable();
        ensure!(cpus_seen == (0..CPUS).collect::<Vec<_>>(), "gdb's threads are CPUs {cpus_seen:?}");
        let thread = |cpu: usize| threads.iter().find(|t| t.cpu == cpu).expect("every CPU is a thread");

        // Each CPU's state in info.json, and its thread in gdb.
        let mut counted = vec![];
        for cpu in 0..CPUS {
            let (state, has_regs) = info_cpu(&info, cpu)?;
            let t = thread(cpu);
            let (want_state, want_regs) = match case {
                _ if cpu == crashing => ("crashed", true),
                Case::DoublePanic if cpu == 1 || cpu == 2 => ("panicked", true),
                Case::MissingCpu if cpu == 3 => ("no_answer", false),
                _ => ("stopped", true),
            };
            ensure!(
                state == want_state && has_regs == want_regs,
                "info.json: cpu {cpu} is {state} (registers {has_regs}), expected {want_state} ({want_regs})"
            );
            match want_state {
                "crashed" => ensure!(t.text.contains(bt_function), "cpu {cpu}'s backtrace lacks {bt_function}"),
                "panicked" => ensure!(
                    t.text.contains("netdump_smp_ap_crash_site"),
                    "cpu {cpu} panicked but its backtrace does not show its panic:\n{}",
                    t.text
                ),
                "no_answer" => ensure!(
                    t.reg("rip") == Some(0) && t.reg("rsp") == Some(0),
                    "cpu {cpu} did not answer, yet its thread has registers:\n{}",
                    t.text
                ),
                _ => {
                    let caller = if cpu == 0 { "smp::run" } else { "ap_main" };
                    counted.push((cpu, check_looping_cpu(t, seed, caller)?));
                }
            }
        }
        // Every thread with registers has a stack of its own.
        let mut stacks: Vec<u64> = threads.iter().filter_map(|t| t.reg("rsp")).filter(|&s| s != 0).collect();
        stacks.sort_unstable();
        ensure!(stacks.windows(2).all(|w| w[1] - w[0] >= 4096), "two CPUs share a stack: rsp {stacks:#x?}");

        let missing: Vec<u64> = info
            .pointer("/missing_cpus")
            .and_then(|v| v.as_array())
            .context("info.json: missing_cpus")?
            .iter()
            .filter_map(|v| v.as_u64())
            .collect();
        let want_missing: &[u64] = if case == Case::MissingCpu { &[3] } else { &[] };
        ensure!(missing == want_missing, "info.json: missing_cpus is {missing:?}, expected {want_missing:?}");

        let log = std::fs::read_to_string(dump.join("log")).context("read log")?;
        let serial = &q.serial;
        match case {
            Case::BspPanic => {
                ensure!(serial.contains("smp: kernel NMIs returned on every AP"), "the kernel NMIs did not return");
                // gdb resolves a plain C name only in C mode.
                let out = gdb::batch(
                    &ctx.artifacts.test_kernel,
                    &vmcore,
                    &["set language c", "x/4gx &NETDUMP_SMP_KERNEL_NMIS"],
                )?;
                let words: Vec<u64> = out
                    .lines()
                    .filter(|l| l.contains("NETDUMP_SMP_KERNEL_NMIS"))
                    .flat_map(|l| l.split('\t').skip(1).map(str::to_string).collect::<Vec<_>>())
                    .filter_map(|w| u64::from_str_radix(w.trim().trim_start_matches("0x"), 16).ok())
                    .collect();
                ensure!(words == [0, 1, 1, 1], "kernel NMIs handled per CPU: {words:?} (gdb: {out})");
            }
            Case::DoublePanic => {
                for cpu in [1, 2] {
                    let m = format!("netdump smp panic on cpu {cpu} (seed {seed:#x})");
                    ensure!(log.contains(&m), "the dump's console log lacks {m:?}");
                }
            }
            Case::MissingCpu => {
                ensure!(serial.contains("missing 0x8"), "the crashing CPU did not report cpu 3 missing");
                let waited = serial
                    .lines()
                    .find(|l| l.contains("stopped the other CPUs"))
                    .and_then(|l| l.rsplit_once("(wait ")?.1.split(' ').next()?.parse::<u64>().ok())
                    .context("no stop line on the console")?;
                ensure!(waited >= STOP_MS * 1000, "the crash path waited {waited} us, less than its bound");
            }
            Case::ApPanic => {}
        }
        let _ = gdb_out;
        outcome.detail = format!(
            "crashed on cpu {crashing}; {} threads in gdb; counters {counted:?} as last stored; {}",
            threads.len(),
            outcome.detail
        );
        Ok(outcome)
    })
}
