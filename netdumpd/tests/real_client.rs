//! The real netdump-core client (install + dump state machines, SACK window) against a
//! real server, over loopback UDP through `netdump_core::host::UdpSocketNic` — with a
//! clean link and with a lossy one. What QEMU tests do with a kernel, in milliseconds.

mod common;

use common::core_reader::Core;
use common::*;
use netdump_core::client::{ClientName, Config, Timeouts};
use netdump_core::host::{SystemClock, UdpSocketNic, guest_net};
use netdump_core::log::ConsoleLog;
use netdump_core::memory::{MemoryError, MemoryMap, MemoryRange, MemorySource};
use netdump_core::nic::{NicError, PolledNic};
use netdump_core::proto::{REGISTERS_VALID, RegisterRecord};
use netdump_core::{CrashBuffers, CrashInfo, DumpError, Netdump};

/// 2 MiB of "RAM" at physical 1 MiB: every 5th page zero, the rest a byte pattern.
struct FakeRam(Vec<u8>);
const RAM_BASE: u64 = 0x10_0000;

impl FakeRam {
    fn new() -> Self {
        let mut v = vec![0u8; 2 << 20];
        for (i, b) in v.iter_mut().enumerate() {
            if (i / 4096) % 5 != 4 {
                *b = ((i * 7 + i / 4096) % 251) as u8 | 1;
            }
        }
        FakeRam(v)
    }
}

impl MemorySource for FakeRam {
    fn read(&self, phys: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        let at = phys.checked_sub(RAM_BASE).ok_or(MemoryError { phys })? as usize;
        out.copy_from_slice(self.0.get(at..at + out.len()).ok_or(MemoryError { phys })?);
        Ok(())
    }
}

/// The kernel's extra state: long enough to need several 4 KiB windows.
fn task_list(out: &mut dyn core::fmt::Write) -> core::fmt::Result {
    for pid in 1..=400 {
        writeln!(out, "pid {pid:4} state {} wchan dump_wait", if pid % 4 == 0 { 'R' } else { 'S' })?;
    }
    Ok(())
}

/// How long the client announces a crash before giving up, in these tests.
const ANNOUNCE_BOUND_US: u64 = 2_000_000;

fn config(server_port: u16) -> Config {
    Config {
        timeouts: Timeouts {
            silence_timeout_us: 3_000_000,
            announce_timeout_us: ANNOUNCE_BOUND_US,
            ..Timeouts::default()
        },
        ..Config::new(guest_net(server_port), ClientName::new("real-client").unwrap())
    }
}

/// A deterministic generator for the loss model.
fn lcg(state: &mut u64) -> u64 {
    *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *state >> 33
}

fn dump_through(nic: UdpSocketNic, server: &TestServer) -> Result<netdump_core::DumpReport, DumpError> {
    dump_compressed(nic, server, true)
}

/// [`dump_through`] with compression on (the default when granted) or off.
fn dump_compressed(
    nic: UdpSocketNic,
    server: &TestServer,
    compress: bool,
) -> Result<netdump_core::DumpReport, DumpError> {
    let ram = FakeRam::new();
    let map = MemoryMap::new(&[MemoryRange { phys_start: RAM_BASE, length: ram.0.len() as u64, virt_start: RAM_BASE }])
        .unwrap();
    let buffers: &'static mut CrashBuffers<64> = Box::leak(Box::new(CrashBuffers::new()));
    let mut rng = CounterRng(0x1234_5678);
    let mut nd = Netdump::install(nic, SystemClock::default(), &mut rng, config(server.addr.port()), buffers, map)
        .expect("install");
    nd.set_extra_state(task_list);
    nd.set_compression(compress);
    assert_eq!(nd.compressing(), compress, "netdumpd grants COMPRESSED");
    let log = ConsoleLog::<4096>::new();
    log.write(b"booted\nabout to crash\n");
    let regs =
        RegisterRecord { rip: 0xffff_8000_0010_2030, rsp: 0x1f_0000, flags: REGISTERS_VALID, ..Default::default() };
    let crash = CrashInfo::panic(0, b"host test panic", &[0x10_2345]);
    let report = nd.dump(&crash, &[regs], &ram, Some(&log));
    if report.is_ok() {
        let dumps = server.dumps();
        let dir = dumps
            .iter()
            .find(|d| d.file_name().unwrap().to_string_lossy().starts_with("real-client-"))
            .expect("dump dir");
        let bytes = std::fs::read(dir.join("vmcore")).expect("vmcore");
        let core = Core::new(&bytes);
        assert_eq!(core.read_virt(RAM_BASE, ram.0.len()), &ram.0[..], "memory differs");
        assert_eq!(std::fs::read(dir.join("log")).unwrap(), b"booted\nabout to crash\n");
        let mut text = String::new();
        task_list(&mut text).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("extra")).unwrap(), text, "extra state differs");
        let info = read_info(dir);
        assert_eq!(info.pointer("/reason/frames"), Some(&serde_json::json!(["0x102345"])));
        assert_eq!(info.pointer("/extra_bytes").and_then(|v| v.as_u64()), Some(text.len() as u64));
    }
    report
}

#[test]
fn clean_link_dump_arrives_bit_exact() {
    let dir = TempDir::new("real-clean");
    let server = TestServer::start(dir.path());
    let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 1], 1500, server.addr).unwrap();
    let report = dump_through(nic, &server).expect("dump");
    assert_eq!(report.memory.zero_pages, (0..512u64).filter(|p| p % 5 == 4).count() as u64);
    // Nothing is lost on loopback: a resend can only follow an ACK that a loaded host
    // delayed past the timer, never a loss; a sender that resent as a rule would be far
    // above a tenth of its packets.
    assert!(
        report.retransmissions * 10 < u64::from(report.packets),
        "{} retransmissions of {} packets on a clean link",
        report.retransmissions,
        report.packets
    );
    assert!(report.compressed);
    // Every non-zero page of the pattern shrinks: one block per page.
    assert_eq!(report.memory.lz4_blocks, report.memory.pages_sent);
    assert_eq!(report.memory.lz4_raw_bytes, report.memory.pages_sent * 4096);
}

#[test]
fn compressed_and_uncompressed_dumps_write_the_same_vmcore() {
    let mut cores = vec![];
    let mut wire = vec![];
    for compress in [false, true] {
        let dir = TempDir::new(if compress { "real-lz4-on" } else { "real-lz4-off" });
        let server = TestServer::start(dir.path());
        let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 5], 1500, server.addr).unwrap();
        let report = dump_compressed(nic, &server, compress).expect("dump");
        assert_eq!(report.compressed, compress);
        let dumps = server.dumps();
        let d = dumps.iter().find(|d| d.file_name().unwrap().to_string_lossy().starts_with("real-client-")).unwrap();
        let info = read_info(d);
        assert_eq!(info["compressed"], compress);
        assert_eq!(info["bytes_received"], report.bytes);
        cores.push(std::fs::read(d.join("vmcore")).unwrap());
        wire.push(report.bytes);
    }
    assert_eq!(cores[0], cores[1], "the two vmcores differ");
    assert!(wire[1] * 4 < wire[0], "compressed {} bytes against {} raw", wire[1], wire[0]);
}

#[test]
fn lossy_link_dump_arrives_bit_exact_through_retransmission() {
    let dir = TempDir::new("real-lossy");
    let server = TestServer::start(dir.path());
    let mut nic = UdpSocketNic::new([2, 0, 0, 0, 0, 2], 1500, server.addr).unwrap();
    // Drop 10% of every frame the client sends once it is installed (ARP and HELLO pass).
    let mut state = 42u64;
    let mut frames = 0u64;
    nic.tx_filter = Some(Box::new(move |_frame| {
        frames += 1;
        frames < 4 || !lcg(&mut state).is_multiple_of(10)
    }));
    let report = dump_through(nic, &server).expect("dump through 10% loss");
    assert!(report.retransmissions > 0, "10% loss must cost retransmissions");
}

#[test]
fn silent_server_ends_the_dump_within_its_bound() {
    let dir = TempDir::new("real-silent");
    let server = TestServer::start(dir.path());
    let mut nic = UdpSocketNic::new([2, 0, 0, 0, 0, 3], 1500, server.addr).unwrap();
    // After ARP and HELLO (3 frames), the server hears nothing more.
    let mut frames = 0u64;
    nic.tx_filter = Some(Box::new(move |_| {
        frames += 1;
        frames < 3
    }));
    let started = std::time::Instant::now();
    let err = dump_through(nic, &server).expect_err("no server, no dump");
    assert_eq!(err, DumpError::ServerSilent(netdump_core::client::Phase::Announce));
    // The configured bound holds (generous slack: this checks "gives up", not speed).
    assert!(started.elapsed() < std::time::Duration::from_micros(ANNOUNCE_BOUND_US * 5));
}

/// RAM whose first page holds data and whose other pages are zero and slow to read, like
/// a large idle machine under emulation.
struct SlowZeros {
    pages: u64,
}

impl MemorySource for SlowZeros {
    fn read(&self, phys: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        if phys == RAM_BASE {
            out.fill(0x5a);
        } else {
            std::thread::sleep(std::time::Duration::from_micros(200));
            out.fill(0);
        }
        Ok(())
    }
}

/// Dumps `SlowZeros` to a server that gives up on a session after 500 ms without a
/// packet; `keepalive_us` as given.
fn dump_slow_zeros(name: &str, keepalive_us: u64) -> (Result<netdump_core::DumpReport, DumpError>, serde_json::Value) {
    let dir = TempDir::new(name);
    let server = TestServer::start_with(dir.path(), |c| c.session_timeout = std::time::Duration::from_millis(500));
    let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 4], 1500, server.addr).unwrap();
    // 5000 pages at 0.2 ms or more: at least 1 s of scanning, twice the server's limit,
    // in calls of at most 256 pages (the stream's scan budget), each far under it.
    let ram = SlowZeros { pages: 5000 };
    let map = MemoryMap::new(&[MemoryRange { phys_start: RAM_BASE, length: ram.pages * 4096, virt_start: RAM_BASE }])
        .unwrap();
    let buffers: &'static mut CrashBuffers<64> = Box::leak(Box::new(CrashBuffers::new()));
    let mut rng = CounterRng(0x4321);
    let mut cfg = config(server.addr.port());
    cfg.timeouts.keepalive_us = keepalive_us;
    let mut nd = Netdump::install(nic, SystemClock::default(), &mut rng, cfg, buffers, map).expect("install");
    let regs = RegisterRecord { flags: REGISTERS_VALID, ..Default::default() };
    let report = nd.dump(&CrashInfo::panic(0, b"idle machine", &[]), &[regs], &ram, None);
    let dumps = server.dumps();
    let info = read_info(dumps.first().expect("a dump directory"));
    (report, info)
}

#[test]
fn keepalives_carry_a_long_zero_scan_past_the_servers_silence_limit() {
    let (report, info) = dump_slow_zeros("real-keepalive", 50_000);
    report.expect("dump verified");
    assert_eq!(info.pointer("/status").and_then(|v| v.as_str()), Some("complete"));
    // Negative control: without keepalives the same scan looks like a dead client.
    let (report, info) = dump_slow_zeros("real-no-keepalive", u64::MAX);
    assert!(report.is_err(), "the server should have given up during the scan");
    assert_eq!(info.pointer("/status").and_then(|v| v.as_str()), Some("incomplete"));
}

/// [`FakeRam`] whose kernel classifies page `p` (from `RAM_BASE`): user when `p % 7 == 1`,
/// free when `p % 7 == 2`, page cache when `p % 7 == 3`, kernel data otherwise; answered
/// per run.
struct ClassifiedRam(FakeRam);

fn ram_class(page: u64) -> netdump_core::memory::PageClass {
    use netdump_core::memory::PageClass;
    match page % 7 {
        1 => PageClass::User,
        2 => PageClass::Free,
        3 => PageClass::PageCache,
        _ => PageClass::KernelData,
    }
}

impl MemorySource for ClassifiedRam {
    fn read(&self, phys: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        self.0.read(phys, out)
    }
    fn classify(&self, phys: u64, pages: u64) -> (netdump_core::memory::PageClass, u64) {
        let first = (phys - RAM_BASE) / 4096;
        let class = ram_class(first);
        (class, (first..first + pages).take_while(|p| ram_class(*p) == class).count() as u64)
    }
}

#[test]
fn a_filtered_dump_leaves_out_the_excluded_classes_and_the_server_records_them() {
    use netdump_core::memory::{ExcludeSet, PageClass};
    let dir = TempDir::new("real-filtered");
    let server = TestServer::start(dir.path());
    let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 7], 1500, server.addr).unwrap();
    let ram = ClassifiedRam(FakeRam::new());
    let pages = ram.0.0.len() as u64 / 4096;
    let map =
        MemoryMap::new(&[MemoryRange { phys_start: RAM_BASE, length: pages * 4096, virt_start: RAM_BASE }]).unwrap();
    let buffers: &'static mut CrashBuffers<64> = Box::leak(Box::new(CrashBuffers::new()));
    // User and free pages out (makedumpfile -d 24); the page cache stays.
    let config = Config { exclude: ExcludeSet::from_dump_level(24).unwrap(), ..config(server.addr.port()) };
    let mut nd =
        Netdump::install(nic, SystemClock::default(), &mut CounterRng(7), config, buffers, map).expect("install");
    assert_eq!(nd.granted_features() & netdump_core::proto::features::FILTER, netdump_core::proto::features::FILTER);
    let regs = RegisterRecord { rip: 0x1000, flags: REGISTERS_VALID, ..Default::default() };
    let report = nd.dump(&CrashInfo::panic(0, b"filtered", &[]), &[regs], &ram, None).expect("dump");
    let excluded = |class| (0..pages).filter(|p| ram_class(*p) == class).count() as u64;
    let (user, free) = (excluded(PageClass::User), excluded(PageClass::Free));
    assert_eq!(report.memory.excluded_pages, user + free);

    let dumps = server.dumps();
    let dump = dumps.iter().find(|d| d.file_name().unwrap().to_string_lossy().starts_with("real-client-")).unwrap();
    let info = read_info(dump);
    assert_eq!(info["status"], "complete");
    assert_eq!(info["filter"]["excluded_pages"], user + free);
    assert_eq!(info["filter"]["pages_by_class"]["user"], user);
    assert_eq!(info["filter"]["pages_by_class"]["free"], free);
    assert_eq!(info["filter"]["pages_by_class"]["page_cache"], 0);
    let bytes = std::fs::read(dump.join("vmcore")).unwrap();
    let core = Core::new(&bytes);
    for p in 0..pages {
        let got = core.read_phys(RAM_BASE + p * 4096, 4096);
        let want = &ram.0.0[(p * 4096) as usize..][..4096];
        match ram_class(p) {
            PageClass::User | PageClass::Free => {
                assert!(got.iter().all(|b| *b == 0), "excluded page {p} is not a hole")
            }
            _ => assert_eq!(got, want, "kept page {p} differs"),
        }
    }
    let notes = core.notes();
    let note = notes.iter().find(|n| n.note_type == netdumpd::vmcore::NT_NETDUMP_EXCLUDED).expect("exclusion note");
    let runs = u64::from_le_bytes(note.desc[8..16].try_into().unwrap());
    assert_eq!(info["filter"]["runs"], runs);
    let mut noted = 0;
    for i in 0..runs as usize {
        let at = 16 + 24 * i;
        let start = u64::from_le_bytes(note.desc[at..at + 8].try_into().unwrap());
        let n = u64::from_le_bytes(note.desc[at + 8..at + 16].try_into().unwrap());
        let class = u32::from_le_bytes(note.desc[at + 16..at + 20].try_into().unwrap());
        for pfn in start..start + n {
            assert_eq!(ram_class(pfn - RAM_BASE / 4096).dump_level_bit(), class, "pfn {pfn:#x}");
        }
        noted += n;
    }
    assert_eq!(noted, user + free);
}

#[test]
fn a_filter_with_a_server_that_does_not_grant_it_sends_every_page() {
    use netdump_core::memory::ExcludeSet;
    let dir = TempDir::new("real-filter-refused");
    // A server that grants nothing of FILTER: every feature bit cleared from its answers
    // is what a server that predates filtering does (it grants only bits it knows).
    let server = TestServer::start_with(dir.path(), |c| c.page_filtering = false);
    let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 8], 1500, server.addr).unwrap();
    let ram = ClassifiedRam(FakeRam::new());
    let map =
        MemoryMap::new(&[MemoryRange { phys_start: RAM_BASE, length: ram.0.0.len() as u64, virt_start: RAM_BASE }])
            .unwrap();
    let buffers: &'static mut CrashBuffers<64> = Box::leak(Box::new(CrashBuffers::new()));
    let config = Config { exclude: ExcludeSet::ALL, ..config(server.addr.port()) };
    let mut nd =
        Netdump::install(nic, SystemClock::default(), &mut CounterRng(8), config, buffers, map).expect("install");
    assert_eq!(nd.granted_features() & netdump_core::proto::features::FILTER, 0);
    let report =
        nd.dump(&CrashInfo::panic(0, b"unfiltered", &[]), &[RegisterRecord::default()], &ram, None).expect("dump");
    assert_eq!(report.memory.excluded_pages, 0);
    let dumps = server.dumps();
    let dump = dumps.iter().find(|d| d.file_name().unwrap().to_string_lossy().starts_with("real-client-")).unwrap();
    let bytes = std::fs::read(dump.join("vmcore")).unwrap();
    assert_eq!(Core::new(&bytes).read_virt(RAM_BASE, ram.0.0.len()), &ram.0.0[..], "every page arrived");
    assert_eq!(read_info(dump)["filter"], serde_json::Value::Null);
}

/// A NIC whose device, like a real one, sends a deferred frame only at the doorbell
/// (`flush_transmit`) or the next immediate `transmit`; counts how each frame went.
struct DoorbellNic {
    inner: UdpSocketNic,
    queued: Vec<Vec<u8>>,
    immediate: u64,
    deferred: u64,
    doorbells: u64,
}

impl DoorbellNic {
    fn ring(&mut self) {
        for frame in std::mem::take(&mut self.queued) {
            self.inner.transmit(frame.len(), &mut |buf| buf.copy_from_slice(&frame)).expect("loopback send");
        }
    }
}

impl PolledNic for DoorbellNic {
    fn mac_address(&self) -> [u8; 6] {
        self.inner.mac_address()
    }
    fn mtu(&self) -> usize {
        self.inner.mtu()
    }
    fn reset(&mut self) -> Result<(), NicError> {
        self.queued.clear();
        self.inner.reset()
    }
    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        self.ring();
        self.immediate += 1;
        self.inner.transmit(len, fill)
    }
    fn transmit_deferred(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        netdump_core::nic::check_frame_len(len, self.inner.mtu())?;
        let mut frame = vec![0u8; len];
        fill(&mut frame);
        self.queued.push(frame);
        self.deferred += 1;
        Ok(())
    }
    fn flush_transmit(&mut self) {
        if !self.queued.is_empty() {
            self.doorbells += 1;
            self.ring();
        }
    }
    fn poll_transmit(&mut self) -> usize {
        self.inner.poll_transmit()
    }
    fn poll_receive(&mut self, handler: &mut dyn FnMut(&[u8])) -> Result<bool, NicError> {
        self.inner.poll_receive(handler)
    }
}

/// Dumps [`FakeRam`] through a [`DoorbellNic`] with batched doorbells on or off; returns
/// the report and the NIC's counts (immediate, deferred, doorbells) after checking the
/// memory bit for bit.
fn dump_with_doorbells(batched: bool) -> (netdump_core::DumpReport, (u64, u64, u64)) {
    let dir = TempDir::new(if batched { "real-doorbell-batched" } else { "real-doorbell-each" });
    let server = TestServer::start(dir.path());
    let inner = UdpSocketNic::new([2, 0, 0, 0, 0, 7], 1500, server.addr).unwrap();
    let nic = DoorbellNic { inner, queued: vec![], immediate: 0, deferred: 0, doorbells: 0 };
    let ram = FakeRam::new();
    let map = MemoryMap::new(&[MemoryRange { phys_start: RAM_BASE, length: ram.0.len() as u64, virt_start: RAM_BASE }])
        .unwrap();
    let buffers: &'static mut CrashBuffers<64> = Box::leak(Box::new(CrashBuffers::new()));
    let mut rng = CounterRng(0x0d00_4be1);
    let mut nd = Netdump::install(nic, SystemClock::default(), &mut rng, config(server.addr.port()), buffers, map)
        .expect("install");
    nd.set_batched_doorbells(batched);
    nd.set_compression(false);
    // The fixed window: bursts as the ACKs free room, not as the pacing clock allows
    // (how many frames a paced round sends depends on the host's timing).
    nd.set_window_mode(netdump_core::client::WindowMode::Fixed);
    let crash = CrashInfo::panic(0, b"doorbells", &[]);
    let report = nd.dump(&crash, &[], &ram, None).expect("the dump completes: every burst was rung");
    let dumps = server.dumps();
    let dump = dumps.iter().find(|d| d.file_name().unwrap().to_string_lossy().starts_with("real-client-")).unwrap();
    let bytes = std::fs::read(dump.join("vmcore")).unwrap();
    let core = Core::new(&bytes);
    assert_eq!(core.read_virt(RAM_BASE, ram.0.len()), &ram.0[..], "memory differs");
    let nic = nd.nic();
    assert!(nic.queued.is_empty(), "frames left behind the doorbell");
    (report, (nic.immediate, nic.deferred, nic.doorbells))
}

#[test]
fn a_burst_of_data_rings_the_doorbell_once_and_each_frame_can_ring_it_instead() {
    let (report, (immediate, deferred, doorbells)) = dump_with_doorbells(true);
    let data = u64::from(report.packets) + report.retransmissions;
    assert_eq!(deferred, data, "every DATA frame deferred to the burst's doorbell");
    assert!(doorbells > 0 && doorbells * 4 <= deferred, "{doorbells} doorbells for {deferred} DATA frames");
    assert!(immediate > 0, "control messages still go at once");
    let (report, (immediate, deferred, doorbells)) = dump_with_doorbells(false);
    assert_eq!((deferred, doorbells), (0, 0), "doorbell per frame: nothing deferred");
    assert!(immediate >= u64::from(report.packets), "{immediate} frames for {} DATA packets", report.packets);
}
