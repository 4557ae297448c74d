//! Several CPUs: the CPU list from ACPI's MADT, starting the application processors (APs)
//! with INIT-SIPI-SIPI, the running CPU's index, and a returnable NMI entry.
//!
//! At boot the runtime reads the MADT ([`cpus`]) and unmaps the guard pages of every
//! listed CPU's stacks, but starts no AP: a kernel that never calls [`start_aps`] runs on
//! the boot CPU alone, the others halted where the firmware left them. [`start_aps`]
//! starts the ones the kernel asks for, one at a time, through a real-mode trampoline at
//! a fixed page below 1 MiB (see `trampoline.rs`); each AP runs on its own guarded stacks
//! with its own GDT and TSS, loads the shared IDT, and calls the kernel's entry function
//! with interrupts disabled.
//!
//! See the crate's README ("SMP") for the whole story.

mod acpi;
mod apic;
mod pit;
mod trampoline;

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering, fence};

use x86_64::registers::control::Cr3;
use x86_64::registers::model_specific::{Efer, EferFlags};

use crate::idt::{self, ExceptionFrame};
use crate::pvh::HvmStartInfo;
use crate::{BootCell, boot_info, exit, gdt, println, stacks};
use apic::LocalApic;

/// Most CPUs the runtime starts; MADT entries past it are ignored (say so on the console).
pub const MAX_CPUS: usize = 8;

/// One CPU the MADT lists as enabled.
#[derive(Clone, Copy, Debug)]
pub struct Cpu {
    /// Its index in [`cpus`]: 0 for the boot CPU.
    pub index: usize,
    /// Its local APIC id.
    pub apic_id: u32,
}

/// Highest APIC id an xAPIC IPI can address (255 is the broadcast id).
const MAX_XAPIC_ID: u32 = 254;
/// How long [`start_aps`] waits for each AP to check in.
const CHECK_IN_TIMEOUT_US: u64 = 1_000_000;

/// The CPU list, written once by [`init`] at boot (before the kernel runs and before any
/// AP can start), read-only afterwards.
static CPUS: BootCell<[Cpu; MAX_CPUS]> = BootCell::new([Cpu { index: 0, apic_id: 0 }; MAX_CPUS]);
/// How many entries of `CPUS` are valid; 0 until [`init`] runs.
static CPU_COUNT: BootCell<usize> = BootCell::new(0);

/// Each CPU's state, by index.
static STATE: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(NOT_STARTED) }; MAX_CPUS];
/// Not started (the firmware left it halted), or the boot CPU before `init`.
const NOT_STARTED: u8 = 0;
/// The boot CPU sent INIT-SIPI-SIPI and waits for it.
const STARTING: u8 = 1;
/// Checked in: it runs (or is about to run) the kernel's entry function.
const RUNNING: u8 = 2;
/// It did not check in in time; if it still does, it parks instead.
const TIMED_OUT: u8 = 3;

/// The entry function of the current [`start_aps`] call, a `fn(usize) -> !`.
static ENTRY: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
/// Set while [`start_aps`] runs: APs that checked in wait for it to clear before they
/// call the entry function, so that no kernel code runs on an AP while the boot CPU
/// still uses the PIT and the trampoline page.
static HOLD: AtomicBool = AtomicBool::new(false);

/// Builds the CPU list from the MADT. Called once at boot, on the boot CPU, before the
/// guard pages are unmapped (their number depends on the list).
pub(crate) fn init(start_info: &HvmStartInfo) {
    let boot_apic_id = initial_apic_id();
    // SAFETY: this runs once at boot, on the boot CPU alone, before anything reads the
    // list (see `CPUS`).
    let (cpus, count) = unsafe { (&mut *CPUS.get(), &mut *CPU_COUNT.get()) };
    cpus[0] = Cpu { index: 0, apic_id: boot_apic_id };
    let mut len = 1;
    let mut ignored = 0;
    // rsdp_paddr is in every version of hvm_start_info; 0 means none.
    if start_info.rsdp_paddr != 0 {
        acpi::for_each_enabled_cpu(start_info.rsdp_paddr, |apic_id| {
            if cpus[..len].iter().any(|cpu| cpu.apic_id == apic_id) {
                return; // the boot CPU, or listed twice (as xAPIC and x2APIC)
            }
            if len == MAX_CPUS {
                ignored += 1;
                return;
            }
            cpus[len] = Cpu { index: len, apic_id };
            len += 1;
        });
    }
    if ignored > 0 {
        println!("netdump-qemu-runtime: {ignored} more CPUs in the ACPI MADT ignored: at most {MAX_CPUS} are used");
    }
    *count = len;
    STATE[0].store(RUNNING, Ordering::Release);
}

/// The CPUs ACPI's MADT lists as enabled (Processor Local APIC and Processor Local x2APIC
/// entries with the Enabled flag), at most [`MAX_CPUS`]: index 0 is the boot CPU (its APIC
/// id read from the running CPU), the others in MADT order. Parsed at boot from
/// `hvm_start_info.rsdp_paddr` (RSDP → XSDT, or RSDT before ACPI 2.0 → "APIC" table,
/// checksums checked). Without an RSDP or a valid MADT, just the boot CPU.
pub fn cpus() -> &'static [Cpu] {
    // SAFETY: written only by `init`, at boot before the kernel runs; read-only afterwards
    // (see `CPUS`). Before `init` the count is 0.
    let (cpus, count): (&'static [Cpu; MAX_CPUS], usize) = unsafe { (&*CPUS.get(), *CPU_COUNT.get()) };
    &cpus[..count]
}

/// The running CPU's initial APIC id: CPUID leaf 1, EBX bits 31–24. No memory access
/// beyond the stack frame, no lock.
fn initial_apic_id() -> u32 {
    // CPUID leaf 1 exists on every x86_64 CPU.
    let leaf1 = core::arch::x86_64::__cpuid(1);
    leaf1.ebx >> 24
}

/// This CPU's index in [`cpus`] (0 = boot CPU).
///
/// Works in any context, exception and NMI handlers included, and on a CPU whose stack
/// is broken as far as it can be (a small leaf function): it reads the initial APIC id
/// with CPUID (leaf 1, 8 bits, which is all xAPIC mode has) and looks it up in
/// [`cpus`], without locks. A CPU not in the list (impossible for one the runtime runs)
/// gets 0.
pub fn cpu_index() -> usize {
    let apic_id = initial_apic_id();
    cpus().iter().position(|cpu| cpu.apic_id == apic_id).unwrap_or(0)
}

/// Why [`start_aps`] did not start every AP it was asked to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// Called on an AP: only the boot CPU starts APs.
    NotBootCpu,
    /// `which` names an index [`cpus`] does not have.
    NoSuchCpu { index: usize },
    /// The CPU is already running (an earlier call started it).
    AlreadyRunning { index: usize },
    /// Its APIC id does not fit xAPIC's 8-bit destination.
    ApicIdTooLarge { index: usize, apic_id: u32 },
    /// The trampoline page is not usable RAM in the boot memory map.
    TrampolineNotRam { page: u64 },
    /// The running CPU's local APIC is disabled, in x2APIC mode, or not below 4 GiB
    /// (the IA32_APIC_BASE value).
    NoXapic { apic_base: u64 },
    /// The page tables (CR3) lie above 4 GiB, where the 32-bit trampoline cannot load them.
    PageTablesAbove4GiB { cr3: u64 },
    /// The local APIC kept an IPI for this AP pending.
    IpiNotDelivered { index: usize, apic_id: u32 },
    /// This AP did not check in within about a second of its start-up IPIs. It may still
    /// start later; it then parks (halts with interrupts off) instead of running the
    /// entry function, and a later [`start_aps`] may try it again.
    NoCheckIn { index: usize, apic_id: u32 },
}

impl StartError {
    /// The index of the AP the error is about, if it is about one.
    pub fn cpu_index(&self) -> Option<usize> {
        match *self {
            StartError::NoSuchCpu { index }
            | StartError::AlreadyRunning { index }
            | StartError::ApicIdTooLarge { index, .. }
            | StartError::IpiNotDelivered { index, .. }
            | StartError::NoCheckIn { index, .. } => Some(index),
            StartError::NotBootCpu
            | StartError::TrampolineNotRam { .. }
            | StartError::NoXapic { .. }
            | StartError::PageTablesAbove4GiB { .. } => None,
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StartError::NotBootCpu => f.write_str("APs are started from the boot CPU only"),
            StartError::NoSuchCpu { index } => write!(f, "there is no CPU {index} (the MADT lists {})", cpus().len()),
            StartError::AlreadyRunning { index } => write!(f, "CPU {index} is already running"),
            StartError::ApicIdTooLarge { index, apic_id } => {
                write!(f, "CPU {index}: APIC id {apic_id} is beyond xAPIC's reach")
            }
            StartError::TrampolineNotRam { page } => {
                write!(f, "the AP trampoline page {page:#x} is not usable RAM in the memory map")
            }
            StartError::NoXapic { apic_base } => {
                write!(f, "the local APIC is not usable in xAPIC mode (IA32_APIC_BASE {apic_base:#x})")
            }
            StartError::PageTablesAbove4GiB { cr3 } => write!(f, "the page tables (CR3 {cr3:#x}) are above 4 GiB"),
            StartError::IpiNotDelivered { index, apic_id } => {
                write!(f, "CPU {index} (APIC id {apic_id}): the local APIC did not deliver the IPI")
            }
            StartError::NoCheckIn { index, apic_id } => {
                write!(f, "CPU {index} (APIC id {apic_id}) did not check in within a second")
            }
        }
    }
}

/// Starts the APs whose index bit is set in `which` (bit 0, the boot CPU, is ignored).
///
/// For each, one at a time: INIT (assert, de-assert), 10 ms, a start-up IPI, 200 µs, a
/// second one if the AP has not checked in yet, then up to about a second (PIT-timed)
/// for it to check in. The AP goes from real mode to long mode on the boot CPU's page
/// tables, loads its own GDT and TSS (IST slots on its own guarded stacks), the shared
/// IDT, has SSE enabled as the boot CPU does, interrupts disabled, and runs on its own
/// 256 KiB guarded kernel stack. It calls `entry(index)` once this function returns, so
/// no kernel code runs on an AP while the APs are being started.
///
/// Returns how many APs were started, or the first failure: APs started before it run
/// (and are released when this returns); the ones after it are not tried. Call it from
/// the boot CPU, outside exception and NMI handlers; it uses PIT channel 0 and writes
/// the trampoline page (0x8000) while it runs.
pub fn start_aps(which: u64, entry: fn(usize) -> !) -> Result<usize, StartError> {
    if cpu_index() != 0 {
        return Err(StartError::NotBootCpu);
    }
    let cpus = cpus();
    let requested = || (1..64).filter(move |&index| which & (1 << index) != 0);
    for index in requested() {
        let Some(cpu) = cpus.get(index) else { return Err(StartError::NoSuchCpu { index }) };
        if cpu.apic_id > MAX_XAPIC_ID {
            return Err(StartError::ApicIdTooLarge { index, apic_id: cpu.apic_id });
        }
        if STATE[index].load(Ordering::Acquire) == RUNNING {
            return Err(StartError::AlreadyRunning { index });
        }
    }
    if requested().next().is_none() {
        return Ok(0);
    }

    let page = trampoline::TRAMPOLINE_PAGE;
    let page_is_ram =
        boot_info::get().memory_map.iter().any(|r| r.is_ram() && r.start <= page && page + 4096 <= r.end());
    if !page_is_ram {
        return Err(StartError::TrampolineNotRam { page });
    }
    let apic = LocalApic::current().map_err(|apic_base| StartError::NoXapic { apic_base })?;
    let (frame, _) = Cr3::read_raw();
    let cr3 = frame.start_address().as_u64();
    if cr3 >= 1 << 32 {
        return Err(StartError::PageTablesAbove4GiB { cr3 });
    }
    // Long mode, and no-execute if the boot CPU has it on (its page tables may use it).
    let efer = (Efer::read() & (EferFlags::LONG_MODE_ENABLE | EferFlags::NO_EXECUTE_ENABLE)).bits()
        | EferFlags::LONG_MODE_ENABLE.bits();
    let mut apic_ids = [u32::MAX; MAX_CPUS];
    let mut stack_tops = [0; MAX_CPUS];
    for cpu in &cpus[1..] {
        apic_ids[cpu.index] = cpu.apic_id;
        stack_tops[cpu.index] = stacks::kernel_stack_top(cpu.index);
    }

    ENTRY.store(entry as *mut (), Ordering::Release);
    HOLD.store(true, Ordering::Release);
    // The parameters are the same on every call (nothing they hold changes after boot),
    // so rewriting the page cannot disturb an AP that is still in it from an earlier call.
    trampoline::install(trampoline::Params { cr3, efer, entry: trampoline::ap_start64(), apic_ids, stack_tops });
    let mut started = 0;
    let result = requested()
        .try_for_each(|index| {
            start_one(&apic, cpus[index])?;
            started += 1;
            Ok(())
        })
        .map(|()| started);
    HOLD.store(false, Ordering::Release);
    result
}

/// INIT-SIPI-SIPI for one AP, and the wait for its check-in.
fn start_one(apic: &LocalApic, cpu: Cpu) -> Result<(), StartError> {
    let Cpu { index, apic_id } = cpu;
    let not_delivered = |_| StartError::IpiNotDelivered { index, apic_id };
    // `apic_id` fits in 8 bits: `start_aps` checked it.
    let destination = apic_id as u8;
    // INIT resets the AP wherever it is (halted by the firmware, or parked after an
    // earlier timeout) into wait-for-SIPI; only then are its tables rewritten.
    apic.send(destination, apic::INIT_ASSERT).map_err(not_delivered)?;
    apic.send(destination, apic::INIT_DEASSERT).map_err(not_delivered)?;
    pit::delay(10_000);
    gdt::prepare(index);
    STATE[index].store(STARTING, Ordering::Release);
    let checked_in = || STATE[index].load(Ordering::Acquire) == RUNNING;
    let startup = apic::STARTUP | u32::from(trampoline::SIPI_VECTOR);
    // Everything the AP reads (the trampoline page, its GDT and TSS, ENTRY) is written
    // before the start-up IPI's MMIO write: x86 keeps stores in order, the fence keeps
    // the compiler from moving them past it.
    fence(Ordering::SeqCst);
    apic.send(destination, startup).map_err(not_delivered)?;
    if !pit::wait_until(200, checked_in) {
        // A second start-up IPI, as Intel's sequence has it; ignored by an AP that is
        // already running.
        apic.send(destination, startup).map_err(not_delivered)?;
    }
    if pit::wait_until(CHECK_IN_TIMEOUT_US, checked_in) {
        return Ok(());
    }
    // Too late; if it checks in after all (it fails the same exchange), it parks.
    match STATE[index].compare_exchange(STARTING, TIMED_OUT, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Err(StartError::NoCheckIn { index, apic_id }),
        Err(_) => Ok(()), // it checked in at the last moment
    }
}

/// Where each AP arrives from the trampoline (through `ap_start64`), on its own kernel
/// stack, in long mode on the boot CPU's page tables, with a temporary GDT.
extern "C" fn ap_rust_start(index: usize) -> ! {
    gdt::load(index);
    idt::load();
    if STATE[index].compare_exchange(STARTING, RUNNING, Ordering::AcqRel, Ordering::Acquire).is_err() {
        // The boot CPU gave up on this AP: stay out of the way (INIT can restart it).
        exit::halt_forever();
    }
    while HOLD.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    let entry = ENTRY.load(Ordering::Acquire);
    // SAFETY: `start_aps` stored a `fn(usize) -> !` (cast to a pointer) in ENTRY before
    // it started this AP, and only ever stores such values; function and data pointers
    // have the same representation on x86_64.
    let entry = unsafe { core::mem::transmute::<*mut (), fn(usize) -> !>(entry) };
    entry(index)
}

/// Registers the NMI handler.
///
/// Vector 2 has its own entry (not the fatal exception path), on its own per-CPU IST
/// stack (128 KiB, guarded): it saves every general register into an [`ExceptionFrame`]
/// (vector 2, error code 0, CR2 as read on entry) and the x87/SSE state, calls `handler`
/// with the frame, and when the handler returns restores all of them (and CR2) and
/// returns to the interrupted code with `iretq`, which continues bit-identically. The
/// handler runs with interrupts off and further NMIs blocked until that `iretq`; it may
/// also never return (a crash path parks the CPU inside it, and NMIs then stay blocked
/// on that CPU). The code it interrupted may hold any lock: the handler must not wait
/// for one unboundedly. (The console's lock waits a bounded time and is then taken over,
/// so printing from the handler works, possibly interleaved with the interrupted line.)
///
/// Without a registered handler vector 2 is what it always was: a fatal exception, handed
/// to the [`set_exception_handler`](crate::set_exception_handler) handler, or printed
/// with an exit with [`EXIT_FAILURE`](crate::EXIT_FAILURE).
pub fn set_nmi_handler(handler: fn(&ExceptionFrame)) {
    idt::set_nmi_handler(handler);
}

/// Sends a non-maskable interrupt to CPU `index` (itself included) through the running
/// CPU's local APIC (xAPIC, physical destination). Takes no lock: each CPU has its own
/// local APIC at the same address, so any CPU may call it, also from a crash path — but
/// not from an NMI handler that may have interrupted this same CPU's `send_nmi`.
///
/// Returns false if `index` is not in [`cpus`], the local APIC is not usable in xAPIC
/// mode, or it kept the IPI pending. A CPU that was never started does not run the
/// runtime's NMI entry: do not send it NMIs.
pub fn send_nmi(index: usize) -> bool {
    let Some(cpu) = cpus().get(index) else { return false };
    let Ok(destination) = u8::try_from(cpu.apic_id) else { return false };
    let Ok(apic) = LocalApic::current() else { return false };
    apic.send(destination, apic::NMI).is_ok()
}
