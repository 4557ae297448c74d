//! The SMP scenarios (`scenario=smp smp_case=…`, booted with `-smp 4`): the runtime
//! starts the application processors, each runs a loop of its own with planted registers
//! that counts in [`NETDUMP_SMP_COUNTERS`], and one or two CPUs crash. netdump-core's
//! [`CpuStop`] elects the crashing CPU and stops the others by NMI; the harness then
//! checks through gdb that every CPU is a thread with its own registers and stack, and
//! that each counter in the vmcore is the value its CPU last wrote before it stopped.
//!
//! - `bsp-panic`: the boot CPU first sends each AP a kernel NMI while no crash is in
//!   progress (netdump answers "not mine", the kernel counts it in
//!   [`NETDUMP_SMP_KERNEL_NMIS`] and the AP goes on counting), then panics.
//! - `ap-panic`: AP 2 panics; the boot CPU waits in [`netdump_smp_bsp_wait`].
//! - `double-panic`: APs 1 and 2 panic at once, released by one flag.
//! - `missing-cpu`: AP 3 is parked inside a kernel NMI (NMIs blocked), so it cannot
//!   answer the stop NMI; the boot CPU panics.
//!
//! `stop_target=each` stops the CPUs one NMI each instead of the shorthand.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use netdump_core::arch::x86_64::{LocalApic, park_this_cpu};
use netdump_core::clock::{Clock, Deadline};
use netdump_core::cpus::{CpuStop, NmiSender, StopTarget};
use netdump_qemu_runtime::smp::{self, MAX_CPUS};
use netdump_qemu_runtime::{Cmdline, ExceptionFrame, println};

/// The crash election and every CPU's register slot.
pub static CPUS: CpuStop<MAX_CPUS> = CpuStop::new();

/// Each CPU's loop counter: the harness reads it from the vmcore through gdb.
#[unsafe(no_mangle)]
pub static NETDUMP_SMP_COUNTERS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Kernel NMIs (no crash in progress) each CPU handled and returned from.
#[unsafe(no_mangle)]
pub static NETDUMP_SMP_KERNEL_NMIS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// CPUs whose next kernel NMI parks them inside the handler (NMIs stay blocked).
static PARK_IN_NMI: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Releases the APs that are to panic.
static RELEASE: AtomicBool = AtomicBool::new(false);
/// The panicking APs that reached the panic handler (`double-panic`).
static IN_PANIC: AtomicUsize = AtomicUsize::new(0);
static CASE: AtomicU8 = AtomicU8::new(0);
static SEED: AtomicU64 = AtomicU64::new(0);

/// The AP that panics in `ap-panic`, and the two of `double-panic`.
pub const PANICKING_AP: usize = 2;
pub const DOUBLE_PANIC_APS: [usize; 2] = [1, 2];
/// The AP that cannot answer in `missing-cpu`.
pub const SILENT_AP: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Case {
    BspPanic = 1,
    ApPanic = 2,
    DoublePanic = 3,
    MissingCpu = 4,
}

impl Case {
    pub fn parse(args: &Cmdline<'static>) -> Result<Self, &'static str> {
        Ok(match args.get("smp_case").ok_or("smp_case= is required")? {
            "bsp-panic" => Case::BspPanic,
            "ap-panic" => Case::ApPanic,
            "double-panic" => Case::DoublePanic,
            "missing-cpu" => Case::MissingCpu,
            _ => return Err("unknown smp_case"),
        })
    }

    fn load() -> Option<Self> {
        [Case::BspPanic, Case::ApPanic, Case::DoublePanic, Case::MissingCpu]
            .into_iter()
            .find(|c| *c as u8 == CASE.load(Ordering::Acquire))
    }
}

/// How the crash path stops the other CPUs (`stop_target=each|all`), and for how long
/// it waits for them (`stop_ms=`, default 1000).
pub fn stop_policy(args: &Cmdline<'static>) -> (StopTarget, u64) {
    let target = match args.get("stop_target") {
        Some("each") => StopTarget::EachOnline,
        _ => StopTarget::AllButSelf,
    };
    (target, args.get_u64("stop_ms").unwrap_or(1000) * 1000)
}

/// Registers the boot CPU and the NMI handler; every kernel does this, SMP or not.
pub fn init() {
    CPUS.set_online(0, smp::cpus().first().map(|c| c.apic_id));
    smp::set_nmi_handler(on_nmi);
}

/// The values planted in rbx and r12–r15 of CPU `cpu`'s loop.
pub fn planted(seed: u64, cpu: usize) -> [u64; 5] {
    [0xb0b0, 0x1212, 0x1313, 0x1414, 0x1515].map(|tag: u64| tag << 48 | (seed & 0xffff_ffff) << 8 | cpu as u64)
}

/// This CPU's local APIC, for the kernel NMIs the scenarios send before any crash.
fn apic() -> LocalApic {
    // SAFETY: ring 0; the runtime identity-maps the first 4 GiB, which holds the APIC's
    // register page (uncached like every MMIO page of the map).
    unsafe { LocalApic::detect(|phys| phys) }.unwrap_or_else(|| crate::fail(format_args!("the local APIC is disabled")))
}

#[inline(never)]
/// Starts the APs and runs `case` on the boot CPU; ends in a panic (or in a wait that
/// the crashing AP's NMI ends).
pub fn run(case: Case, seed: u64, clock: &dyn Clock) -> ! {
    CASE.store(case as u8, Ordering::Release);
    SEED.store(seed, Ordering::Release);
    let cpus = smp::cpus();
    if cpus.len() < 4 {
        crate::fail(format_args!("the SMP scenarios need 4 CPUs, the MADT lists {}", cpus.len()));
    }
    let aps = (1u64 << cpus.len()) - 2;
    match smp::start_aps(aps, ap_main) {
        Ok(n) => println!("smp: {} CPUs: {n} APs started", cpus.len()),
        Err(e) => crate::fail(format_args!("smp: starting the APs failed: {e:?}")),
    }
    for c in cpus {
        println!("smp: cpu {} apic id {}", c.index, c.apic_id);
    }
    // Every AP counts before anything crashes.
    let counting = (1..cpus.len()).filter(|&cpu| !panics(case, cpu)).count();
    wait_for(clock, "every looping AP to count", || {
        (1..cpus.len()).filter(|&i| NETDUMP_SMP_COUNTERS[i].load(Ordering::Acquire) > 0).count() >= counting
    });
    match case {
        Case::BspPanic => {
            kernel_nmis_return(clock);
            crate::netdump_test_crash_site(seed)
        }
        Case::MissingCpu => {
            PARK_IN_NMI[SILENT_AP].store(true, Ordering::Release);
            apic().nmi_to(cpus[SILENT_AP].apic_id);
            wait_for(clock, "the silent AP to park in its NMI", || {
                NETDUMP_SMP_KERNEL_NMIS[SILENT_AP].load(Ordering::Acquire) == 1
            });
            println!("smp: cpu {SILENT_AP} parked inside an NMI; it cannot answer the stop");
            crate::netdump_test_crash_site(seed)
        }
        Case::ApPanic | Case::DoublePanic => {
            RELEASE.store(true, Ordering::Release);
            netdump_smp_bsp_wait(&planted(seed, 0), &NETDUMP_SMP_COUNTERS[0])
        }
    }
}

/// Sends each AP a kernel NMI (no crash in progress), waits until each handled it, and
/// until each counted on afterwards: the NMI returned to the interrupted loop.
fn kernel_nmis_return(clock: &dyn Clock) {
    let cpus = smp::cpus();
    let mut apic = apic();
    for c in &cpus[1..] {
        apic.nmi_to(c.apic_id);
    }
    wait_for(clock, "every AP to handle its kernel NMI", || {
        (1..cpus.len()).all(|i| NETDUMP_SMP_KERNEL_NMIS[i].load(Ordering::Acquire) == 1)
    });
    let mut after = [0u64; MAX_CPUS];
    for (i, a) in after.iter_mut().enumerate().take(cpus.len()) {
        *a = NETDUMP_SMP_COUNTERS[i].load(Ordering::Acquire);
    }
    wait_for(clock, "every AP to count on after its NMI", || {
        (1..cpus.len()).all(|i| NETDUMP_SMP_COUNTERS[i].load(Ordering::Acquire) > after[i])
    });
    println!("smp: kernel NMIs returned on every AP; each counts on");
}

/// Waits at most 10 s for `done`; a scenario that does not get there fails.
fn wait_for(clock: &dyn Clock, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Deadline::after(clock, 10_000_000);
    while !done() {
        if deadline.passed(clock) {
            crate::fail(format_args!("smp: timed out waiting for {what}"));
        }
        core::hint::spin_loop();
    }
}

/// Called by the panic handler right after the crash election. In `double-panic` the
/// two panicking APs meet here (for at most 2 s) before either goes on, so both are in
/// the panic path at once: released by one flag they may still arrive far apart (the
/// host runs four virtual CPUs on fewer cores and can hold one back for milliseconds),
/// and a CPU that the winner's NMI catches before its own panic began is, rightly,
/// stopped rather than panicked. The scenario is about two CPUs panicking together.
pub fn panic_rendezvous(cpu: usize, clock: Option<&dyn Clock>) {
    if Case::load() != Some(Case::DoublePanic) || !DOUBLE_PANIC_APS.contains(&cpu) {
        return;
    }
    IN_PANIC.fetch_add(1, Ordering::AcqRel);
    let Some(clock) = clock else { return };
    let deadline = Deadline::after(clock, 2_000_000);
    while IN_PANIC.load(Ordering::Acquire) < DOUBLE_PANIC_APS.len() && !deadline.passed(clock) {
        core::hint::spin_loop();
    }
}

/// Whether AP `cpu` panics in `case` (instead of counting).
fn panics(case: Case, cpu: usize) -> bool {
    match case {
        Case::ApPanic => cpu == PANICKING_AP,
        Case::DoublePanic => DOUBLE_PANIC_APS.contains(&cpu),
        _ => false,
    }
}

fn ap_main(cpu: usize) -> ! {
    CPUS.set_online(cpu, smp::cpus().get(cpu).map(|c| c.apic_id));
    let seed = SEED.load(Ordering::Acquire);
    if Case::load().is_some_and(|case| panics(case, cpu)) {
        while !RELEASE.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
        netdump_smp_ap_crash_site(seed, cpu)
    }
    let values = planted(seed, cpu);
    let counter = &NETDUMP_SMP_COUNTERS[cpu];
    match cpu % 3 {
        1 => netdump_smp_loop_a(&values, counter),
        2 => netdump_smp_loop_b(&values, counter),
        _ => netdump_smp_loop_c(&values, counter),
    }
}

/// The AP's panic: a function of its own, for the backtrace.
#[inline(never)]
fn netdump_smp_ap_crash_site(seed: u64, cpu: usize) -> ! {
    panic!("netdump smp panic on cpu {cpu} (seed {seed:#x})");
}

/// A CPU's loop: plants `values` in rbx and r12–r15, a tag in rcx, and counts in rax,
/// storing each value to `counter` (rsi). Never returns; the stop NMI interrupts it.
/// The tag keeps the loops distinct functions (identical ones could be merged, and gdb
/// would name one for all).
macro_rules! counting_loop {
    ($name:ident, $tag:literal) => {
        #[inline(never)]
        fn $name(values: &[u64; 5], counter: &AtomicU64) -> ! {
            // SAFETY: reads `values` (40 bytes) and stores only to `counter`'s 8 bytes,
            // an atomic no one else writes; never returns, so the callee-saved registers
            // it overwrites are never given back.
            unsafe {
                asm!(
                    "mov rbx, [rdi]", "mov r12, [rdi + 8]", "mov r13, [rdi + 16]", "mov r14, [rdi + 24]",
                    "mov r15, [rdi + 32]", concat!("mov ecx, ", $tag), "xor eax, eax",
                    "2:", "inc rax", "mov [rsi], rax", "jmp 2b",
                    in("rdi") values, in("rsi") counter.as_ptr(), options(noreturn)
                )
            }
        }
    };
}

counting_loop!(netdump_smp_loop_a, "0xa");
counting_loop!(netdump_smp_loop_b, "0xb");
counting_loop!(netdump_smp_loop_c, "0xc");
counting_loop!(netdump_smp_bsp_wait, "0xd");

/// The runtime's NMI handler, on every CPU.
fn on_nmi(frame: &ExceptionFrame) {
    let me = smp::cpu_index();
    let _not_mine = CPUS.on_nmi(
        me,
        || {
            let regs = crate::faults::exception_registers(frame);
            // SAFETY: ring 0.
            unsafe { regs.to_record(me as u64) }
        },
        park_this_cpu,
    );
    // The kernel's own NMI: count it, and return to the interrupted code — unless the
    // scenario parks this CPU here, with NMIs blocked until an iret that never comes.
    NETDUMP_SMP_KERNEL_NMIS[me].fetch_add(1, Ordering::AcqRel);
    if PARK_IN_NMI[me].load(Ordering::Acquire) {
        park_this_cpu()
    }
}
