//! The QEMU test kernel: fills RAM with a known pattern, installs netdump with whichever
//! supported NIC it finds (e1000, virtio-net legacy or modern; see `nic.rs`), registers
//! with the netdumpd the harness started, and crashes on purpose.
//!
//! The command line (`-append`) selects the scenario; see [`scenario::Scenario`]. The
//! exit code (isa-debug-exit) tells the harness how it ended: [`exit`] lists them.
#![no_std]
#![no_main]
// `&mut *(&raw mut STATIC)` is how edition 2024 borrows a `static mut` (a plain
// `&mut STATIC` is the `static_mut_refs` lint); clippy's `deref_addrof` would undo it.
#![allow(clippy::deref_addrof)]

mod bench;
mod extra_state;
mod faults;
mod memory;
mod netconsole;
mod nic;
mod scenario;
mod smp;

use core::fmt::Write;
use netdump_core::arch::x86_64::{
    CookieRng, DirectMapMemory, LocalApic, StackTrace, TscClock, capture_registers, park_this_cpu,
    read_control_registers,
};
use netdump_core::client::{ClientName, Config};
use netdump_core::clock::Clock;
use netdump_core::cpus::{CrashRole, StopTarget};
use netdump_core::crash_cell::SeizeError;
use netdump_core::log::ConsoleLog;
use netdump_core::memory::{MemoryError, MemorySource, PageClass};
use netdump_core::net::NetConfig;
use netdump_core::proto::RegisterRecord;
use netdump_core::text::TextBuf;
use netdump_core::{CrashBuffers, CrashCell, CrashInfo, Netdump};
use netdump_qemu_runtime::smp::{MAX_CPUS, cpu_index};
use netdump_qemu_runtime::{BootInfo, println, qemu_exit};
use scenario::{Kind, Scenario};

/// Exit codes the harness checks (QEMU exits with `code << 1 | 1`).
pub mod exit {
    pub use netdump_qemu_runtime::{EXIT_FAILURE, EXIT_SUCCESS};
    /// The dump ran and did not end verified.
    pub const DUMP_FAILED: u32 = 0x12;
    /// Install failed (e.g. no server); the kernel stopped.
    pub const INSTALL_FAILED: u32 = 0x13;
    /// A panic inside the dump path: the dump ended, the kernel stopped.
    pub const NESTED_PANIC: u32 = 0x14;
}

type Dumper = Netdump<nic::Counted, TscClock>;

/// The console's last 64 KiB, sent with the dump.
static CONSOLE_LOG: ConsoleLog<65536> = ConsoleLog::new();
/// The installed client; the panic handler seizes it.
static NETDUMP: CrashCell<Dumper> = CrashCell::new();
/// The window's packet copies and the page buffer: preallocated at build time. Room for
/// 256 packets so that `cargo xtask bench` can compare window sizes (`window=`); the
/// default window uses 64.
static mut CRASH_BUFFERS: CrashBuffers<256> = CrashBuffers::new();
/// Set by the scenario for the panic handler.
static mut SCENARIO: Option<Scenario> = None;
/// How the crash path stops the other CPUs, and its bound in microseconds.
static mut STOP_POLICY: (StopTarget, u64) = (StopTarget::AllButSelf, 1_000_000);
/// The register records the dump sends, one per CPU: filled by the crashing CPU only.
static mut CPU_RECORDS: [RegisterRecord; MAX_CPUS] = [RegisterRecord::EMPTY; MAX_CPUS];
/// The calibrated clock, for the crash path's timings before netdump is seized.
static mut CLOCK: Option<TscClock> = None;

netdump_qemu_runtime::entry!(kernel_main);

fn kernel_main(boot: &'static BootInfo) -> ! {
    netdump_qemu_runtime::set_console_tee(|bytes| CONSOLE_LOG.write(bytes));
    println!("netdump test kernel: {}", boot.cmdline);
    let scenario = match Scenario::parse(&boot.args()) {
        Ok(s) => s,
        Err(e) => fail(format_args!("bad command line: {e}")),
    };
    faults::init(boot);
    smp::init();
    // SAFETY: written once here, before any crash or AP can read it.
    unsafe { STOP_POLICY = smp::stop_policy(&boot.args()) };
    let layout = memory::Layout::from_args(&boot.args(), scenario.pattern)
        .unwrap_or_else(|e| fail(format_args!("bad command line: {e}")));
    let map = match layout.memory_map(boot) {
        Ok(m) => m,
        Err(e) => fail(format_args!("memory map: {e}")),
    };
    if let Err(p) = layout.check(&map, boot) {
        fail(format_args!("pattern {:#x}+{:#x} is not in free RAM", p.base, p.len));
    }
    layout.fill_patterns();
    if let Some(image) = layout.realistic {
        println!("image: realistic at {:#x}..{:#x} seed {:#x}", image.base, image.base + image.len, image.seed);
    }
    for p in layout.patterns() {
        println!(
            "pattern: {:#x}..{:#x} seed {:#x}, every {}th page zero",
            p.base,
            p.base + p.len,
            p.seed,
            p.zero_every
        );
    }
    for r in map.ranges() {
        println!("ram: {:#x}..{:#x} at virtual {:#x}", r.phys_start, r.phys_end(), r.virt_start);
    }
    layout.install();

    let nic = match nic::bring_up(boot.args(), boot.args().get("checksum_offload") != Some("off")) {
        Ok(n) => n,
        Err(e) => fail(format_args!("NIC: {e}")),
    };
    let clock = TscClock::calibrate();
    // SAFETY: written once here, before any crash or AP can read it.
    unsafe { CLOCK = Some(clock) };
    println!(
        "tsc: {} ticks/us (calibrated: {}, from {:?}, within {} ppm)",
        clock.ticks_per_us(),
        clock.calibrated,
        clock.source,
        clock.uncertainty_ppm
    );
    let nic = nic::Counted(netconsole::without_dump_server(&boot.args(), nic, clock, &scenario));
    // The deferred scenario: the kernel's own driver, a second instance on the same device
    // with DMA memory of its own, owns the NIC from boot; netdump's instance stays idle.
    let own_nic = (scenario.kind == Kind::Deferred).then(|| {
        let mut own = nic::bring_up(boot.args(), boot.args().get("checksum_offload") != Some("off"))
            .unwrap_or_else(|e| fail(format_args!("the kernel's own NIC driver: {e}")));
        if let Err(e) = netdump_core::nic::PolledNic::reset(&mut own) {
            fail(format_args!("the kernel's own NIC driver: {e}"));
        }
        own
    });
    let mac = netdump_core::nic::PolledNic::mac_address(&nic);
    let mut rng = CookieRng::new(u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 15, 0]));
    println!("cookie source: {:?}", rng.source());
    let config = Config {
        net: NetConfig {
            ip: scenario.client_ip,
            prefix_len: 24,
            gateway: Some(scenario.server_ip),
            server_ip: scenario.server_ip,
            server_port: scenario.server_port,
            client_port: netdump_core::proto::CLIENT_PORT,
        },
        name: ClientName::new(scenario.name).unwrap_or_else(|| fail(format_args!("bad client name"))),
        window: scenario.window,
        timeouts: scenario.timeouts,
        exclude: scenario.exclude,
        server_key: scenario.server_key,
        fallbacks: scenario.fallbacks,
    };
    if let Some(key) = config.server_key {
        println!("netdump: encrypting to the server key {key}");
    }
    // SAFETY: taken once, here, before any crash; nothing else refers to it.
    let buffers = unsafe { &mut *(&raw mut CRASH_BUFFERS) };
    let started = clock.now_us();
    let net = config.net;
    let installed = match own_nic {
        Some(_) => Netdump::prepare(nic, clock, &mut rng, config, buffers, map),
        None => Netdump::install(nic, clock, &mut rng, config, buffers, map),
    };
    let dumper = match installed {
        Ok(d) => d,
        Err(e) => {
            let waited_ms = (clock.now_us() - started) / 1000;
            println!("netdump: install failed after {waited_ms} ms: {e:?}");
            qemu_exit(exit::INSTALL_FAILED)
        }
    };
    if dumper.config().server_count() > 1 {
        for i in 0..dumper.config().server_count() {
            if let Some(s) = dumper.config().server(i) {
                let state = if dumper.server_registered(i) { "registered" } else { "not registered" };
                println!("netdump: server {i} {}:{} {state}", s.ip, s.port);
            }
        }
    }
    if dumper.registered() {
        println!("netdump: installed, cookie {:#018x}, server MAC {:?}", dumper.cookie(), dumper.link().peer_mac());
    } else {
        println!(
            "netdump: prepared, cookie {:#018x}; {} device calls, nothing sent before the crash",
            dumper.cookie(),
            nic::device_calls()
        );
    }
    if scenario.exclude.filters() && dumper.registered() {
        let granted = dumper.granted_features() & netdump_core::proto::features::FILTER != 0;
        println!(
            "netdump: filter -d {} {}",
            scenario.exclude.dump_level(),
            if granted { "granted" } else { "not granted" }
        );
    }
    let mut dumper = dumper;
    extra_state::set_seed(scenario.pattern.seed);
    dumper.set_extra_state(extra_state::write_task_list);
    if scenario.batch {
        dumper.set_window_mode(netdump_core::client::WindowMode::Batch);
    } else if scenario.fixed_window {
        dumper.set_window_mode(netdump_core::client::WindowMode::Fixed);
    }
    // `check=crc32`: DATA with CRC-32 even where the server granted XXH64 (the bench's
    // before/after of the cheaper check).
    if boot.args().get("check") == Some("crc32") {
        dumper.set_integrity_check(netdump_core::proto::Check::Crc32);
    }
    // `doorbell=each`: a doorbell per DATA frame instead of per burst (the bench's before).
    if boot.args().get("doorbell") == Some("each") {
        dumper.set_batched_doorbells(false);
        println!("netdump: a doorbell per frame");
    }
    // `inplace=0`: pages loaded into the page buffer, zero-tested there and copied out
    // (the bench's before of reading memory in place).
    if boot.args().get_u64("inplace") == Some(0) {
        dumper.set_read_in_place(false);
        println!("netdump: memory through the page buffer");
    }
    println!("netdump: integrity check {:?}", dumper.integrity_check());
    dumper.set_compression(scenario.compress);
    println!("netdump: compression {}", if dumper.compressing() { "on" } else { "off" });
    netconsole::attach(&boot.args(), &mut dumper, &scenario);
    if NETDUMP.install(dumper).is_err() {
        fail(format_args!("netdump installed twice"));
    }
    // SAFETY: single CPU; written once before the crash, read by the panic handler.
    unsafe { SCENARIO = Some(scenario) };
    netconsole::start_lines(&boot.args());

    println!("console line before the crash: 1");
    println!("console line before the crash: 2");
    match scenario.kind {
        Kind::Takeover => scenario::traffic_until_panic(&NETDUMP, &scenario),
        Kind::Deferred => match own_nic {
            Some(own) => scenario::own_traffic_until_panic(own, net, &clock, &scenario),
            None => fail(format_args!("no NIC driver of the kernel's own")),
        },
        Kind::RawTx => bench::raw_tx(&NETDUMP, &scenario, scenario.frames),
        Kind::Costs => bench::costs(&NETDUMP, &scenario, &memory::reader()),
        Kind::Smp(case) => smp::run(case, scenario.pattern.seed, &clock),
        Kind::Exception => match faults::Fault::from_args(&boot.args()) {
            Ok(fault) => faults::raise(
                fault,
                scenario.pattern.seed,
                boot.args().get_u64("fault_address").unwrap_or(faults::DEFAULT_FAULT_ADDRESS),
            ),
            Err(e) => fail(format_args!("bad command line: {e}")),
        },
        _ => netdump_test_crash_site(scenario.pattern.seed),
    }
}

/// The function the harness expects at the top of the backtrace.
#[inline(never)]
fn netdump_test_crash_site(seed: u64) -> ! {
    panic!("netdump test panic (seed {seed:#x})");
}

fn fail(args: core::fmt::Arguments<'_>) -> ! {
    println!("test kernel error: {args}");
    qemu_exit(exit::EXIT_FAILURE)
}

/// Reads RAM as the layout maps it; in the nested-panic scenario it panics at one
/// address, to prove a panic inside the dump ends the dump instead of recursing. With
/// the realistic image it classifies that image's pages as the generator says.
struct TestMemory {
    inner: DirectMapMemory,
    panic_at: Option<u64>,
    image: Option<netdump_test_pattern::Realistic>,
}

impl MemorySource for TestMemory {
    fn read(&self, phys: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        if self.panic_at == Some(phys) {
            panic!("injected panic while reading {phys:#x} for the dump");
        }
        self.inner.read(phys, out)
    }

    fn is_zero(&self, phys: u64, len: usize) -> Result<bool, MemoryError> {
        if self.panic_at == Some(phys) {
            panic!("injected panic while reading {phys:#x} for the dump");
        }
        self.inner.is_zero(phys, len)
    }

    fn classify(&self, phys: u64, pages: u64) -> (PageClass, u64) {
        match &self.image {
            Some(image) => memory::classify(image, phys, pages),
            None => (PageClass::Unknown, pages),
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let me = cpu_index();
    let mut regs = capture_registers(me as u64);
    // SAFETY: the kernel runs in ring 0.
    unsafe { read_control_registers(&mut regs) };
    let panicked_at = now_us();
    netdump_qemu_runtime::console::enter_crash_mode();
    // The election comes first: a CPU that lost it still prints its message (the NMI
    // leaves it alone), then parks; only the winner touches netconsole and the NIC.
    // SAFETY: written once at boot before any crash; read-only afterwards.
    let clock = unsafe { *(&raw const CLOCK) };
    let role = smp::CPUS.begin_crash(me);
    smp::panic_rendezvous(me, clock.as_ref().map(|c| c as &dyn Clock));
    if role == CrashRole::First {
        netconsole::on_panic(info);
    }
    println!("panic: {info}");
    let mut message = TextBuf::<256>::new();
    let _ = write!(message, "{}", info.message());
    let mut frames = StackTrace::new();
    // SAFETY: `faults::readable` admits only mapped, non-guard pages of the kernel image.
    unsafe { frames.walk_frame_pointers(regs.rbp, faults::readable) };
    let crash = CrashInfo::panic(me as u16, message.as_bytes(), frames.as_slice());
    dump_after_election(role, panicked_at, &crash, &regs, |dumper| netconsole::panic_line(dumper, info))
}

/// Microseconds on the calibrated clock (0 before calibration).
fn now_us() -> u64 {
    // SAFETY: written once at boot before any crash; read-only afterwards.
    unsafe { *(&raw const CLOCK) }.map_or(0, |c| c.now_us())
}

/// The crash path of a CPU exception on this CPU (see [`dump_after_election`]).
pub fn dump_and_exit(crash: &CrashInfo<'_>, regs: &RegisterRecord, before: impl FnOnce(&mut Dumper)) -> ! {
    let me = cpu_index();
    let at = now_us();
    dump_after_election(smp::CPUS.begin_crash(me), at, crash, regs, before)
}

/// Dumps `crash` with `regs` as this CPU's registers (a panic's or a CPU exception's)
/// once this CPU won the crash election (`role`): stops every other CPU, seizes netdump
/// (`before` gets it first) and exits QEMU with the outcome. A CPU that lost the
/// election parks with its registers saved; a second crash on the winner stops.
fn dump_after_election(
    role: CrashRole,
    crashed_at_us: u64,
    crash: &CrashInfo<'_>,
    regs: &RegisterRecord,
    before: impl FnOnce(&mut Dumper),
) -> ! {
    let me = cpu_index();
    match role {
        CrashRole::First => {}
        CrashRole::Nested => {
            println!("netdump: panic during the dump; stopping without recursing");
            qemu_exit(exit::NESTED_PANIC)
        }
        CrashRole::Another { winner } => {
            println!("netdump: cpu {me} crashed while cpu {winner} dumps; parking with its registers saved");
            smp::CPUS.park_panicked(me, regs, park_this_cpu)
        }
    }
    // SAFETY: written once at boot (kernel_main); read-only now.
    let (target, bound_us) = unsafe { *(&raw const STOP_POLICY) };
    // SAFETY: ring 0; the runtime identity-maps the APIC's register page.
    let apic = unsafe { LocalApic::detect(|phys| phys) };
    // SAFETY: written once at boot before any crash; read-only afterwards.
    let clock = unsafe { *(&raw const CLOCK) };
    let stop = match (apic, clock) {
        (Some(mut apic), Some(clock)) => Some(smp::CPUS.stop_others(me, &clock, bound_us, target, &mut apic)),
        _ => None,
    };
    if let Some(r) = stop {
        println!(
            "netdump: cpu {me} stopped the other CPUs: {} of {} answered the NMI, {} had panicked, missing {:#x}; {} us after the crash (wait {} us)",
            r.stopped,
            r.expected,
            r.panicked,
            r.missing,
            now_us().saturating_sub(crashed_at_us),
            r.elapsed_us
        );
    }
    // SAFETY: only the CPU that won the election gets here, once.
    let records = smp::CPUS.records(me, regs, unsafe { &mut *(&raw mut CPU_RECORDS) });
    let crash = CrashInfo { crashing_cpu: me as u16, ..*crash };
    let dumper = match NETDUMP.seize() {
        Ok(d) => d,
        Err(SeizeError::AlreadySeized) => {
            println!("netdump: panic during the dump; stopping without recursing");
            qemu_exit(exit::NESTED_PANIC)
        }
        Err(SeizeError::Empty) => {
            println!("netdump: not installed; halting");
            qemu_exit(exit::EXIT_FAILURE)
        }
    };
    // SAFETY: written once before the crash (see kernel_main); read-only now.
    let scenario = unsafe { (*(&raw const SCENARIO)).unwrap_or_else(|| qemu_exit(exit::EXIT_FAILURE)) };
    let memory =
        TestMemory { inner: memory::reader(), panic_at: scenario.panic_while_reading, image: memory::realistic() };
    before(dumper);
    println!("netdump: dumping; {} device calls by netdump's NIC instance before the dump", nic::device_calls());
    let started = dumper.clock().now_us();
    let result = dumper.dump(&crash, records, &memory, Some(&CONSOLE_LOG));
    netconsole::after_dump(dumper);
    for (i, why) in dumper.attempts().iter() {
        println!("netdump: server {i} left: {why}");
    }
    if let Ok(report) = &result
        && dumper.config().server_count() > 1
    {
        let (ip, port) = report.server_addr;
        println!("netdump: dump taken by server {} {ip}:{port}", report.server);
    }
    match result {
        Ok(report) => {
            println!(
                "netdump: dump verified: {} packets, {} bytes, {} pages, {} zero pages skipped, {} pages excluded, {} retransmissions, {} ms (data phase {} us)",
                report.packets,
                report.bytes,
                report.memory.pages_sent,
                report.memory.zero_pages,
                report.memory.excluded_pages,
                report.retransmissions,
                report.elapsed_us / 1000,
                report.stream_us
            );
            let p = &report.profile;
            println!(
                "netdump: send profile: {} rounds, {} idle rounds, idle {} ns, receive {} ns, fill {} ns, transmit {} ns, doorbell {} ns",
                p.rounds, p.idle_rounds, p.idle_ns, p.receive_ns, p.fill_ns, p.transmit_ns, p.doorbell_ns
            );
            println!(
                "netdump: compression {}: {} blocks, {} memory bytes in {} bytes",
                if report.compressed { "on" } else { "off" },
                report.memory.lz4_blocks,
                report.memory.lz4_raw_bytes,
                report.memory.lz4_wire_bytes
            );
            println!(
                "netdump: dropped {} server packets (bad CRC, cookie or type), {} from a wrong address, port or MAC",
                report.rejected, report.link.spoofed
            );
            qemu_exit(exit::EXIT_SUCCESS)
        }
        Err(e) => {
            println!("netdump: dump failed after {} ms: {e}", (dumper.clock().now_us() - started) / 1000);
            qemu_exit(exit::DUMP_FAILED)
        }
    }
}
