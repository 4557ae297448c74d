//! Every CPU stopped and in the dump: the crash election, the stop of the other CPUs by
//! NMI, and their register records, without locks, allocation or unbounded waits.
//!
//! A kernel keeps one [`CpuStop`] in a `static` (its `N` per-CPU slots are the
//! preallocated place where stopped CPUs leave their registers) and wires three paths:
//!
//! ```text
//! boot, each CPU:   set_online(index, apic_id)
//! panic/exception:  begin_crash(me) ─ First ──▶ stop_others(NMI, bound) ▶ records() ▶ dump
//!                                   ├ Another ▶ print own message ▶ park_panicked(regs)
//!                                   └ Nested  ▶ (a panic inside the dump: stop)
//! NMI entry:        on_nmi(me, regs) ─ no crash, or this CPU is not to stop ▶ NotMine
//!                                    └ crash in progress ▶ save regs ▶ park (no return)
//! ```
//!
//! The slots are plain atomics: a CPU writes its record word by word, then publishes it
//! with one release store of its state; the crashing CPU reads the state with acquire
//! and only then the words. A CPU that never answers leaves its slot unpublished and is
//! sent as an invalid record with [`CpuState::NoAnswer`].
//!
//! How the NMI is sent and how a CPU parks are the architecture's
//! ([`NmiSender`]; on x86_64 [`crate::arch::x86_64::LocalApic`] and
//! [`crate::arch::x86_64::park_this_cpu`]). docs/PORTING.md shows the wiring.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use crate::clock::{Clock, Deadline};
use crate::proto::{CpuState, REGISTERS_VALID, RegisterRecord};

/// No CPU is crashing.
const NOBODY: u32 = u32::MAX;

// A slot's state. Only the CPU itself moves its slot, except OFFLINE ⇄ ONLINE (boot).
/// Not online (never started, or taken offline).
const OFFLINE: u8 = 0;
/// Online and running.
const ONLINE: u8 = 1;
/// The CPU that won the crash election and dumps.
const CRASHING: u8 = 2;
/// Lost the election: finishing its own panic message before it parks.
const PANICKING: u8 = 3;
/// Answered the stop NMI: record published, parked.
const STOPPED: u8 = 4;
/// Lost the election: record of its own panic published, parked.
const PANICKED: u8 = 5;

/// One CPU's slot: its state, APIC id and register record.
struct CpuSlot {
    state: AtomicU8,
    has_apic_id: AtomicBool,
    apic_id: AtomicU32,
    words: [AtomicU64; 32],
}

impl CpuSlot {
    const fn new() -> Self {
        CpuSlot {
            state: AtomicU8::new(OFFLINE),
            has_apic_id: AtomicBool::new(false),
            apic_id: AtomicU32::new(0),
            words: [const { AtomicU64::new(0) }; 32],
        }
    }

    fn apic_id(&self) -> Option<u32> {
        self.has_apic_id.load(Ordering::Acquire).then(|| self.apic_id.load(Ordering::Relaxed))
    }

    /// Stores `regs` with `state` and publishes them: the release store of the slot's
    /// state is this CPU's last write.
    fn publish(&self, cpu: usize, regs: &RegisterRecord, state: CpuState, slot_state: u8) {
        let mut r = *regs;
        r.cpu = cpu as u64;
        r.flags |= REGISTERS_VALID;
        r.set_state(state);
        if let Some(id) = self.apic_id() {
            r.set_apic_id(id);
        }
        for (slot, word) in self.words.iter().zip(r.to_words()) {
            slot.store(word, Ordering::Relaxed);
        }
        self.state.store(slot_state, Ordering::Release);
    }

    fn record(&self) -> RegisterRecord {
        let mut words = [0u64; 32];
        for (w, slot) in words.iter_mut().zip(&self.words) {
            *w = slot.load(Ordering::Relaxed);
        }
        RegisterRecord::from_words(words)
    }
}

/// What [`CpuStop::begin_crash`] made of this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashRole {
    /// This CPU crashed first: it stops the others and dumps.
    First,
    /// This CPU is already the crashing one: a panic inside its own crash path.
    Nested,
    /// CPU `winner` is already crashing: print this panic's message, then
    /// [`CpuStop::park_panicked`]. Never send packets or take the NIC.
    Another {
        /// The crashing CPU's index.
        winner: usize,
    },
}

/// The NMI handler's answer when it returns at all: the NMI is the kernel's own
/// (watchdog, profiler, a crash that is not in progress); handle it as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a returned NMI belongs to the kernel's own NMI users"]
pub struct NotMine;

/// How the crashing CPU addresses the stop NMI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopTarget {
    /// The "all excluding self" shorthand: one IPI reaches every other CPU, including
    /// ones the kernel did not register (they answer too, if they can).
    AllButSelf,
    /// One NMI per online CPU, by APIC id: for kernels that give a CPU list and want no
    /// other CPU disturbed (firmware-owned or isolated ones). CPUs without an APIC id
    /// cannot be addressed and end up [`CpuState::NoAnswer`].
    EachOnline,
}

/// Sends the stop NMIs; on x86_64, [`crate::arch::x86_64::LocalApic`].
pub trait NmiSender {
    /// An NMI to every CPU but the sender.
    fn nmi_all_but_self(&mut self);
    /// An NMI to the CPU with this APIC id.
    fn nmi_to(&mut self, apic_id: u32);
}

/// What [`CpuStop::stop_others`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StopReport {
    /// Other CPUs that were online (or answered) and had to stop.
    pub expected: u32,
    /// CPUs that answered the NMI.
    pub stopped: u32,
    /// CPUs that had panicked themselves and parked.
    pub panicked: u32,
    /// Bit `i`: CPU `i` did not answer within the bound.
    pub missing: u64,
    /// From the first NMI to the last CPU stopped (or to the bound), microseconds.
    pub elapsed_us: u64,
}

/// The crash election and the per-CPU slots for up to `N` CPUs (at most 64).
pub struct CpuStop<const N: usize> {
    crashing: AtomicU32,
    slots: [CpuSlot; N],
}

impl<const N: usize> Default for CpuStop<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> CpuStop<N> {
    /// No CPU online, no crash; usable in a `static`.
    pub const fn new() -> Self {
        assert!(N >= 1 && N <= 64, "CpuStop holds 1 to 64 CPUs");
        CpuStop { crashing: AtomicU32::new(NOBODY), slots: [const { CpuSlot::new() }; N] }
    }

    /// Marks CPU `cpu` online (the boot CPU at install, each other CPU as it starts),
    /// with its local APIC id when known. False if `cpu` is not below `N`.
    pub fn set_online(&self, cpu: usize, apic_id: Option<u32>) -> bool {
        let Some(slot) = self.slots.get(cpu) else { return false };
        if let Some(id) = apic_id {
            slot.apic_id.store(id, Ordering::Relaxed);
        }
        slot.has_apic_id.store(apic_id.is_some(), Ordering::Release);
        let _ = slot.state.compare_exchange(OFFLINE, ONLINE, Ordering::AcqRel, Ordering::Relaxed);
        true
    }

    /// Marks CPU `cpu` offline (it will not answer an NMI); no effect during a crash.
    pub fn set_offline(&self, cpu: usize) {
        if let Some(slot) = self.slots.get(cpu) {
            let _ = slot.state.compare_exchange(ONLINE, OFFLINE, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// The crash election, first thing in a panic or fatal-exception path on CPU `me`.
    /// Exactly one CPU gets [`CrashRole::First`] for the kernel's life.
    pub fn begin_crash(&self, me: usize) -> CrashRole {
        let me32 = me as u32;
        match self.crashing.compare_exchange(NOBODY, me32, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                if let Some(slot) = self.slots.get(me) {
                    slot.state.store(CRASHING, Ordering::Release);
                }
                CrashRole::First
            }
            Err(winner) if winner == me32 => CrashRole::Nested,
            Err(winner) => {
                if let Some(slot) = self.slots.get(me) {
                    slot.state.store(PANICKING, Ordering::Release);
                }
                CrashRole::Another { winner: winner as usize }
            }
        }
    }

    /// The crashing CPU, once a crash began.
    pub fn crashing_cpu(&self) -> Option<usize> {
        match self.crashing.load(Ordering::Acquire) {
            NOBODY => None,
            cpu => Some(cpu as usize),
        }
    }

    /// Called from the kernel's NMI entry on CPU `me`. When a crash is in progress on
    /// another CPU, stores this CPU's interrupted context (`regs`, called once) as
    /// [`CpuState::Stopped`] and parks with `park`: it does not return and writes no
    /// more memory. Otherwise returns [`NotMine`] at once: the NMI is the kernel's (a
    /// watchdog, a profiler), or this CPU panicked itself and will park on its own.
    pub fn on_nmi(&self, me: usize, regs: impl FnOnce() -> RegisterRecord, park: fn() -> !) -> NotMine {
        let crashing = self.crashing.load(Ordering::Acquire);
        if crashing == NOBODY || crashing == me as u32 {
            return NotMine;
        }
        let Some(slot) = self.slots.get(me) else { park() };
        match slot.state.load(Ordering::Acquire) {
            // Finishing its own panic message; park_panicked follows.
            PANICKING => NotMine,
            // Already parked (a second NMI woke the halt): park again, write nothing.
            STOPPED | PANICKED => park(),
            _ => {
                slot.publish(me, &regs(), CpuState::Stopped, STOPPED);
                park()
            }
        }
    }

    /// For a CPU that got [`CrashRole::Another`]: publishes the registers of its own
    /// panic as [`CpuState::Panicked`] and parks with `park`.
    pub fn park_panicked(&self, me: usize, regs: &RegisterRecord, park: fn() -> !) -> ! {
        if let Some(slot) = self.slots.get(me) {
            slot.publish(me, regs, CpuState::Panicked, PANICKED);
        }
        park()
    }

    /// On the crashing CPU `me`: sends the stop NMI and waits, at most `bound_us` by
    /// `clock`, until every other online CPU has published its registers (answered the
    /// NMI, or parked after its own panic). Returns what stopped and what did not; the
    /// dump goes on either way.
    pub fn stop_others(
        &self,
        me: usize,
        clock: &dyn Clock,
        bound_us: u64,
        target: StopTarget,
        nmi: &mut dyn NmiSender,
    ) -> StopReport {
        let started = clock.now_us();
        match target {
            StopTarget::AllButSelf => nmi.nmi_all_but_self(),
            StopTarget::EachOnline => {
                for (cpu, slot) in self.slots.iter().enumerate() {
                    if cpu != me
                        && slot.state.load(Ordering::Acquire) == ONLINE
                        && let Some(id) = slot.apic_id()
                    {
                        nmi.nmi_to(id);
                    }
                }
            }
        }
        let deadline = Deadline::after(clock, bound_us);
        loop {
            let report = self.tally(me);
            if report.missing == 0 || deadline.passed(clock) {
                return StopReport { elapsed_us: clock.now_us().saturating_sub(started), ..report };
            }
            core::hint::spin_loop();
        }
    }

    fn tally(&self, me: usize) -> StopReport {
        let mut r = StopReport::default();
        for (cpu, slot) in self.slots.iter().enumerate().filter(|(cpu, _)| *cpu != me) {
            match slot.state.load(Ordering::Acquire) {
                OFFLINE => continue,
                STOPPED => r.stopped += 1,
                PANICKED => r.panicked += 1,
                _ => r.missing |= 1 << cpu,
            }
            r.expected += 1;
        }
        r
    }

    /// The register records for the dump, in CPU order, into `out`: `mine` (the
    /// crashing CPU's own, e.g. from [`crate::arch::x86_64::capture_registers`]) at `me`,
    /// the published record of every CPU that stopped or panicked, and an invalid record
    /// saying why ([`CpuState::NoAnswer`], [`CpuState::Offline`]) for the others. The
    /// slice ends after the highest CPU that is or was online (at least `me`).
    pub fn records<'a>(
        &self,
        me: usize,
        mine: &RegisterRecord,
        out: &'a mut [RegisterRecord; N],
    ) -> &'a [RegisterRecord] {
        let mut count = me.min(N - 1) + 1;
        for (cpu, (slot, rec)) in self.slots.iter().zip(out.iter_mut()).enumerate() {
            let state = slot.state.load(Ordering::Acquire);
            *rec = match state {
                _ if cpu == me => {
                    let mut r = *mine;
                    r.cpu = cpu as u64;
                    r.set_state(CpuState::Crashed);
                    if let Some(id) = slot.apic_id() {
                        r.set_apic_id(id);
                    }
                    r
                }
                STOPPED | PANICKED => slot.record(),
                OFFLINE => RegisterRecord::absent(cpu as u64, CpuState::Offline, slot.apic_id()),
                _ => RegisterRecord::absent(cpu as u64, CpuState::NoAnswer, slot.apic_id()),
            };
            if state != OFFLINE {
                count = count.max(cpu + 1);
            }
        }
        &out[..count]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64 as Counter;
    use std::vec::Vec;

    /// A clock that advances 10 µs per reading: waits end without real time passing.
    struct Ticks(Counter);
    impl Clock for Ticks {
        fn now_us(&self) -> u64 {
            self.0.fetch_add(10, Ordering::Relaxed)
        }
    }

    #[derive(Default)]
    struct Sent {
        all: u32,
        to: Vec<u32>,
    }
    impl NmiSender for Sent {
        fn nmi_all_but_self(&mut self) {
            self.all += 1;
        }
        fn nmi_to(&mut self, apic_id: u32) {
            self.to.push(apic_id);
        }
    }

    fn regs(tag: u64) -> RegisterRecord {
        RegisterRecord { rax: tag, rip: 0x1000 + tag, r12: tag << 8, flags: REGISTERS_VALID, ..Default::default() }
    }

    /// Parking unwinds the calling test thread; the test joins it.
    fn park() -> ! {
        panic!("parked")
    }

    #[test]
    fn one_cpu_wins_the_election_and_a_second_panic_on_it_is_nested() {
        let s = CpuStop::<4>::new();
        assert_eq!(s.crashing_cpu(), None);
        assert_eq!(s.begin_crash(2), CrashRole::First);
        assert_eq!(s.begin_crash(2), CrashRole::Nested);
        assert_eq!(s.begin_crash(0), CrashRole::Another { winner: 2 });
        assert_eq!(s.crashing_cpu(), Some(2));
    }

    #[test]
    fn concurrent_panics_elect_exactly_one() {
        for _ in 0..50 {
            let s = Arc::new(CpuStop::<8>::new());
            let firsts: usize = (0..8)
                .map(|cpu| {
                    let s = s.clone();
                    std::thread::spawn(move || s.begin_crash(cpu) == CrashRole::First)
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().unwrap() as usize)
                .sum();
            assert_eq!(firsts, 1);
        }
    }

    #[test]
    fn an_nmi_without_a_crash_is_the_kernels() {
        let s = CpuStop::<4>::new();
        s.set_online(1, Some(1));
        let mut asked = false;
        assert_eq!(
            s.on_nmi(
                1,
                || {
                    asked = true;
                    regs(1)
                },
                park
            ),
            NotMine
        );
        assert!(!asked, "no registers are taken for the kernel's own NMI");
        // The crashing CPU's own NMI (a watchdog during the dump) is the kernel's too.
        assert_eq!(s.begin_crash(0), CrashRole::First);
        assert_eq!(s.on_nmi(0, || regs(0), park), NotMine);
    }

    #[test]
    fn stopped_and_panicked_cpus_are_sent_with_their_registers_and_a_silent_one_is_named() {
        let s = Arc::new(CpuStop::<4>::new());
        for cpu in 0..4 {
            s.set_online(cpu, Some(10 + cpu as u32));
        }
        assert_eq!(s.begin_crash(0), CrashRole::First);
        // CPU 1 answers the NMI.
        let t1 = {
            let s = s.clone();
            std::thread::spawn(move || s.on_nmi(1, || regs(1), park))
        };
        assert!(t1.join().is_err(), "an answering CPU parks");
        // CPU 2 panicked too.
        assert_eq!(s.begin_crash(2), CrashRole::Another { winner: 0 });
        assert_eq!(s.on_nmi(2, || regs(99), park), NotMine, "a CPU finishing its own panic is not taken");
        let t2 = {
            let s = s.clone();
            std::thread::spawn(move || s.park_panicked(2, &regs(2), park))
        };
        assert!(t2.join().is_err());
        // CPU 3 never answers.
        let clock = Ticks(Counter::new(0));
        let mut sent = Sent::default();
        let report = s.stop_others(0, &clock, 5_000, StopTarget::AllButSelf, &mut sent);
        assert_eq!(sent.all, 1);
        assert_eq!((report.expected, report.stopped, report.panicked, report.missing), (3, 1, 1, 1 << 3));
        assert!(report.elapsed_us >= 5_000, "the wait lasted its bound: {}", report.elapsed_us);

        let mut out = [RegisterRecord::default(); 4];
        let recs = s.records(0, &regs(0), &mut out);
        assert_eq!(recs.len(), 4);
        let summary: Vec<_> = recs.iter().map(|r| (r.cpu, r.is_valid(), r.state(), r.apic_id(), r.rax)).collect();
        assert_eq!(
            summary,
            [
                (0, true, Some(CpuState::Crashed), Some(10), 0),
                (1, true, Some(CpuState::Stopped), Some(11), 1),
                (2, true, Some(CpuState::Panicked), Some(12), 2),
                (3, false, Some(CpuState::NoAnswer), Some(13), 0),
            ]
        );
        assert_eq!((recs[1].rip, recs[1].r12), (0x1001, 1 << 8), "the record is the NMI's, word for word");
        assert_eq!(recs[3].rip, 0);
    }

    #[test]
    fn the_wait_ends_as_soon_as_every_cpu_answered() {
        let s = Arc::new(CpuStop::<2>::new());
        s.set_online(0, None);
        s.set_online(1, None);
        assert_eq!(s.begin_crash(1), CrashRole::First);
        let answer = {
            let s = s.clone();
            std::thread::spawn(move || s.on_nmi(0, || regs(0), park))
        };
        assert!(answer.join().is_err());
        let clock = Ticks(Counter::new(0));
        let report = s.stop_others(1, &clock, u64::MAX, StopTarget::AllButSelf, &mut Sent::default());
        assert_eq!((report.expected, report.stopped, report.missing), (1, 1, 0));
        assert!(report.elapsed_us < 1_000, "no wait past the last answer: {}", report.elapsed_us);
    }

    #[test]
    fn each_online_target_addresses_only_online_cpus_with_an_apic_id() {
        let s = CpuStop::<8>::new();
        s.set_online(0, Some(0));
        s.set_online(1, Some(2));
        s.set_online(2, None);
        s.set_online(5, Some(7));
        s.set_online(6, Some(9));
        s.set_offline(6);
        assert_eq!(s.begin_crash(0), CrashRole::First);
        let mut sent = Sent::default();
        let clock = Ticks(Counter::new(0));
        let report = s.stop_others(0, &clock, 100, StopTarget::EachOnline, &mut sent);
        assert_eq!((sent.all, sent.to.as_slice()), (0, &[2, 7][..]));
        assert_eq!(report.missing, 1 << 1 | 1 << 2 | 1 << 5);
        let mut out = [RegisterRecord::default(); 8];
        let recs = s.records(0, &regs(0), &mut out);
        assert_eq!(recs.len(), 6, "up to the highest CPU ever online");
        assert_eq!(recs[3].state(), Some(CpuState::Offline));
        assert_eq!(recs[2].state(), Some(CpuState::NoAnswer));
        assert_eq!(recs[2].apic_id(), None);
    }

    #[test]
    fn a_single_cpu_kernel_sends_one_record() {
        let s = CpuStop::<4>::new();
        assert_eq!(s.begin_crash(0), CrashRole::First);
        let clock = Ticks(Counter::new(0));
        let report = s.stop_others(0, &clock, 1_000_000, StopTarget::AllButSelf, &mut Sent::default());
        assert_eq!(report.expected, 0);
        let mut out = [RegisterRecord::default(); 4];
        let recs = s.records(0, &regs(7), &mut out);
        assert_eq!(recs.len(), 1);
        assert_eq!((recs[0].rax, recs[0].state()), (7, Some(CpuState::Crashed)));
    }

    #[test]
    fn a_parked_cpu_woken_by_a_second_nmi_writes_nothing() {
        let s = Arc::new(CpuStop::<2>::new());
        s.set_online(1, None);
        assert_eq!(s.begin_crash(0), CrashRole::First);
        let first = {
            let s = s.clone();
            std::thread::spawn(move || s.on_nmi(1, || regs(1), park))
        };
        assert!(first.join().is_err());
        let second = {
            let s = s.clone();
            std::thread::spawn(move || s.on_nmi(1, || regs(55), park))
        };
        assert!(second.join().is_err());
        let mut out = [RegisterRecord::default(); 2];
        assert_eq!(s.records(0, &regs(0), &mut out)[1].rax, 1);
    }
}
