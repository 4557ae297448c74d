//! A prepared client (`Netdump::prepare`) stays off the NIC until the crash and then
//! registers and dumps through a real netdumpd; a failed install gives the NIC and the
//! buffers back; and an AArch64 client with 16 KiB pages produces a vmcore that
//! `gdb-multiarch` opens with the planted registers.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use netdump_core::client::{ClientName, Config, Timeouts};
use netdump_core::host::{SystemClock, UdpSocketNic, guest_net};
use netdump_core::memory::{MemoryError, MemoryMap, MemoryRange, MemorySource};
use netdump_core::nic::{NicError, PolledNic};
use netdump_core::proto::{Aarch64Record, CpuRegisters, REGISTERS_VALID, RegisterRecord};
use netdump_core::{CrashBuffers, CrashInfo, DumpError, InstallError, Netdump};

const RAM_BASE: u64 = 0x10_0000;

/// RAM at 1 MiB.
struct Ram(Vec<u8>);

impl MemorySource for Ram {
    fn read(&self, phys: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        let at = phys.checked_sub(RAM_BASE).ok_or(MemoryError { phys })? as usize;
        out.copy_from_slice(self.0.get(at..at + out.len()).ok_or(MemoryError { phys })?);
        Ok(())
    }
}

impl Ram {
    /// `len` bytes, no page all zero, every page different.
    fn new(len: usize) -> Self {
        Ram((0..len).map(|i| ((i / 4096) as u8 | 1) ^ (i as u8).rotate_left(3)).collect())
    }
    fn map(&self) -> MemoryMap {
        MemoryMap::new(&[MemoryRange { phys_start: RAM_BASE, length: self.0.len() as u64, virt_start: RAM_BASE }])
            .unwrap()
    }
}

/// A NIC that counts every call that reaches the device (everything but the station
/// address and the MTU, which a driver keeps in memory).
struct Counted {
    inner: UdpSocketNic,
    device_calls: u64,
}

impl PolledNic for Counted {
    fn mac_address(&self) -> [u8; 6] {
        self.inner.mac_address()
    }
    fn mtu(&self) -> usize {
        self.inner.mtu()
    }
    fn reset(&mut self) -> Result<(), NicError> {
        self.device_calls += 1;
        self.inner.reset()
    }
    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        self.device_calls += 1;
        self.inner.transmit(len, fill)
    }
    fn poll_transmit(&mut self) -> usize {
        self.device_calls += 1;
        self.inner.poll_transmit()
    }
    fn poll_receive(&mut self, handler: &mut dyn FnMut(&[u8])) -> Result<bool, NicError> {
        self.device_calls += 1;
        self.inner.poll_receive(handler)
    }
}

fn config(port: u16, name: &str) -> Config {
    Config {
        timeouts: Timeouts { hello_retry_us: 200_000, hello_attempts: 3, arp_retry_us: 100_000, ..Timeouts::default() },
        ..Config::new(guest_net(port), ClientName::new(name).unwrap())
    }
}

fn leak_buffers() -> &'static mut CrashBuffers<64> {
    Box::leak(Box::new(CrashBuffers::new()))
}

/// The vmcore of the only dump on `server`.
fn only_vmcore(server: &TestServer) -> Vec<u8> {
    let dumps = server.dumps();
    assert_eq!(dumps.len(), 1, "one dump expected: {dumps:?}");
    std::fs::read(dumps[0].join("vmcore")).unwrap()
}

/// The bytes of the vmcore's PT_LOAD segment for physical address `phys`.
fn segment(vmcore: &[u8], phys: u64, len: usize) -> &[u8] {
    let u16_at = |at: usize| u16::from_le_bytes(vmcore[at..at + 2].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(vmcore[at..at + 8].try_into().unwrap());
    let (phoff, phnum) = (u64_at(32) as usize, u16_at(56) as usize);
    for i in 0..phnum {
        let ph = phoff + i * 56;
        if u32::from_le_bytes(vmcore[ph..ph + 4].try_into().unwrap()) == 1 && u64_at(ph + 24) == phys {
            let offset = u64_at(ph + 8) as usize;
            return &vmcore[offset..offset + len];
        }
    }
    panic!("no PT_LOAD at {phys:#x}");
}

#[test]
fn a_prepared_client_touches_the_nic_only_at_the_crash_then_registers_and_dumps_bit_exact() {
    let scratch = TempDir::new("deferred");
    let server = TestServer::start(scratch.path());
    let inner = UdpSocketNic::new([2, 0, 0, 0, 0, 0x61], 1500, server.addr).unwrap();
    let nic = Counted { inner, device_calls: 0 };
    let ram = Ram::new(128 * 1024);
    let mut nd = Netdump::prepare(
        nic,
        SystemClock::default(),
        &mut CounterRng(11),
        config(server.addr.port(), "deferred"),
        leak_buffers(),
        ram.map(),
    )
    .expect("prepare needs only entropy");
    assert!(!nd.registered());
    // The kernel runs on: nothing of netdump reached the device, nothing reached the server.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(nd.nic().device_calls, 0, "prepare touched the NIC");
    assert_eq!(nd.nic().inner.frames_sent, 0, "prepare sent a frame");
    assert!(server.dumps().is_empty());

    let regs = RegisterRecord { rip: 0xffff_8000_0010_2030, flags: REGISTERS_VALID, ..Default::default() };
    let report = nd
        .dump(&CrashInfo::panic(0, b"deferred test panic", &[0x10_2345]), &[regs], &ram, None)
        .expect("registered at crash time and verified");
    assert!(nd.registered());
    assert!(nd.nic().device_calls > 0);
    assert_eq!(report.memory.pages_sent, 32);
    let vmcore = only_vmcore(&server);
    assert_eq!(u16::from_le_bytes([vmcore[18], vmcore[19]]), 62, "e_machine EM_X86_64");
    assert!(segment(&vmcore, RAM_BASE, ram.0.len()) == &ram.0[..], "the memory image is not bit-exact");
}

#[test]
fn a_prepared_client_without_a_server_fails_at_the_crash_within_its_bounds() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x62], 1500, port).unwrap();
    let ram = Ram::new(16 * 1024);
    let mut nd = Netdump::prepare(
        nic,
        SystemClock::default(),
        &mut CounterRng(12),
        config(port.port(), "nobody"),
        leak_buffers(),
        ram.map(),
    )
    .unwrap();
    let err = nd.dump(&CrashInfo::panic(0, b"x", &[]), &[RegisterRecord::EMPTY], &ram, None).unwrap_err();
    assert_eq!(err, DumpError::NotRegistered(InstallError::ServerSilent));
    assert_eq!(nd.dump(&CrashInfo::panic(0, b"x", &[]), &[], &ram, None), Err(DumpError::AlreadyDumped));
}

#[test]
fn a_failed_install_gives_back_the_nic_and_buffers_for_a_retry() {
    // Nothing listens on this port: install fails.
    let scratch = TempDir::new("retry");
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x63], 1500, dead).unwrap();
    let ram = Ram::new(64 * 1024);
    let buffers = leak_buffers();
    let buffers_at = buffers as *const CrashBuffers<64>;
    let failure = match Netdump::install(
        nic,
        SystemClock::default(),
        &mut CounterRng(13),
        config(dead.port(), "retry"),
        buffers,
        ram.map(),
    ) {
        Ok(_) => panic!("install succeeded without a server"),
        Err(f) => f,
    };
    assert_eq!(failure.error, InstallError::ServerSilent);
    assert!(failure.nic.frames_sent > 0, "install did try the server");
    assert_eq!(failure.buffers as *const CrashBuffers<64>, buffers_at, "the same buffers come back");

    // Once a server is up, the retry with what came back registers and dumps. The NIC's
    // gateway points at the dead port, so the retry builds the NIC again around the same
    // buffers (its host socket is the only thing that changes).
    let server = TestServer::start(scratch.path());
    let nic = UdpSocketNic::new(failure.nic.mac_address(), failure.nic.mtu(), server.addr).unwrap();
    let mut nd = Netdump::install(
        nic,
        failure.clock,
        &mut CounterRng(14),
        config(server.addr.port(), "retry"),
        failure.buffers,
        ram.map(),
    )
    .expect("the retry registers");
    let regs = RegisterRecord { rip: 0x10_2000, flags: REGISTERS_VALID, ..Default::default() };
    nd.dump(&CrashInfo::panic(0, b"retried", &[0x10_2000]), &[regs], &ram, None).expect("the dump verifies");
    assert!(segment(&only_vmcore(&server), RAM_BASE, ram.0.len()) == &ram.0[..]);
}

/// What `gdb-multiarch -batch` prints for the vmcore at `path` as an AArch64 core.
fn gdb_multiarch(path: &Path, commands: &[&str]) -> String {
    let mut cmd = Command::new("gdb-multiarch");
    cmd.args(["-nx", "-batch", "-ex", "set architecture aarch64", "-ex"]).arg(format!("core-file {}", path.display()));
    for c in commands {
        cmd.args(["-ex", c]);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("gdb-multiarch must be installed (Debian package gdb-multiarch; .ci/run installs it)");
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn an_aarch64_client_with_16k_pages_gives_a_vmcore_gdb_multiarch_opens_with_its_registers() {
    let scratch = TempDir::new("aarch64");
    let server = TestServer::start(scratch.path());
    let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x64], 1500, server.addr).unwrap();
    // Four 16 KiB pages, the range aligned to 16 KiB.
    let ram = Ram::new(4 * 16 * 1024);
    let mut nd = Netdump::prepare(
        nic,
        SystemClock::default(),
        &mut CounterRng(15),
        config(server.addr.port(), "arm64"),
        leak_buffers(),
        ram.map(),
    )
    .unwrap();
    assert!(nd.set_page_size(16 * 1024));
    let planted = |cpu: u64| {
        let mut x = [0u64; 31];
        for (i, v) in x.iter_mut().enumerate() {
            *v = 0x1000_0000_0000_0000 * (cpu + 1) + 0x100 * i as u64 + 0x11;
        }
        Aarch64Record {
            x,
            sp: 0xffff_0000_0800_3f00 + cpu,
            pc: 0xffff_0000_0810_2468 + 4 * cpu,
            pstate: 0x6000_03c5,
            esr: 0,
            far: 0,
            cpu,
            flags: REGISTERS_VALID,
        }
    };
    let cpus = [planted(0), planted(1)];
    let crash = CrashInfo::panic(1, b"aarch64 test panic", &[0xffff_0000_0810_246c]);
    nd.dump_registers(&crash, CpuRegisters::Aarch64(&cpus), &ram, None).expect("the dump verifies");

    let dump = server.dumps().into_iter().next().expect("a dump");
    let vmcore = std::fs::read(dump.join("vmcore")).unwrap();
    assert_eq!(u16::from_le_bytes([vmcore[18], vmcore[19]]), 183, "e_machine EM_AARCH64");
    assert!(segment(&vmcore, RAM_BASE, ram.0.len()) == &ram.0[..], "the memory image is not bit-exact");
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dump.join("info.json")).unwrap()).unwrap();
    assert_eq!(info["page_size"], 16384, "info.json: {info}");
    assert_eq!(info["machine"], "aarch64", "info.json: {info}");

    // gdb selects the crashing CPU (1): its thread's registers.
    let out = gdb_multiarch(&dump.join("vmcore"), &["info registers", "info threads"]);
    let register = |name: &str| {
        out.lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(name)).then(|| f.next().map(str::to_string)).flatten()
            })
            .unwrap_or_else(|| panic!("gdb-multiarch did not print {name}:\n{out}"))
    };
    let want = cpus[1];
    for (i, x) in want.x.iter().enumerate() {
        assert_eq!(register(&format!("x{i}")), format!("{x:#x}"), "x{i}:\n{out}");
    }
    assert_eq!(register("sp"), format!("{:#x}", want.sp), "{out}");
    assert_eq!(register("pc"), format!("{:#x}", want.pc), "{out}");
    assert_eq!(register("cpsr"), format!("{:#x}", want.pstate), "{out}");
    assert!(out.contains("LWP 1") && out.contains("LWP 2"), "one thread per CPU:\n{out}");
    // Memory through the PT_LOAD's virtual address.
    let word = u64::from_le_bytes(ram.0[0x4008..0x4010].try_into().unwrap());
    let out = gdb_multiarch(&dump.join("vmcore"), &[&format!("x/gx {:#x}", RAM_BASE + 0x4008)]);
    assert!(out.contains(&format!("{word:#018x}")), "gdb-multiarch read {:#x}:\n{out}", RAM_BASE + 0x4008);
}
